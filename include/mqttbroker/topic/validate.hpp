#ifndef MQTTBROKER_TOPIC_VALIDATE_HPP
#define MQTTBROKER_TOPIC_VALIDATE_HPP

#include <mqttbroker/config.hpp>
#include <mqttbroker/error.hpp>

#include <cstddef>
#include <string_view>
#include <system_error>

MQTTBROKER_BEGIN_NAMESPACE
namespace topic {

/// Bounds on topic names and filters beyond the specification's own, checked before any allocation.
///
/// Names and filters encode to at most 65535 bytes [MQTT-4.7.3-3]; the level limit bounds the
/// depth of the subscription trie and so the recursion of its match. EMQX defaults to 128 levels
/// (`mqtt.max_topic_levels`); Mosquitto hard-codes 200 separators (TOPIC_HIERARCHY_LIMIT, added
/// for CVE-2019-11779, a stack exhaustion by a filter of ~65000 `/`).
struct limits {
  std::size_t max_length = 65535;  ///< bytes of the UTF-8 encoding
  std::size_t max_levels = 128;    ///< levels, i.e. the number of `/` plus one; 0 rejects everything
};

/// True when `s` starts with `$`: such names are for server use (`$SYS/...`) and leading
/// wildcards do not match them [MQTT-4.7.2-1].
constexpr bool is_dollar_topic(std::string_view s) noexcept { return !s.empty() && s.front() == '$'; }

/// True when a (valid) filter contains a `+` or `#` level.
constexpr bool has_wildcards(std::string_view filter) noexcept {
  return filter.find_first_of("+#") != std::string_view::npos;
}

/// Checks a Topic Name from PUBLISH or a Will: non-empty [MQTT-4.7.3-1], no wildcards
/// [MQTT-3.3.2-2], no U+0000 [MQTT-4.7.3-2], within `lim`. Returns protocol_errc::topic_name_invalid.
///
/// UTF-8 well-formedness is the codec's check [MQTT-1.5.4-1]; it is not repeated here. In well-formed
/// UTF-8 the byte 0x00 only encodes U+0000, so a byte scan suffices. A 5.0 PUBLISH with an empty
/// name and a Topic Alias is resolved to the aliased name before it gets here.
inline std::error_code validate_topic_name(std::string_view name, const limits& lim = {}) noexcept {
  // Length first: O(1), and bounds the scan below.
  if (name.empty() || name.size() > lim.max_length || lim.max_levels == 0)
    return make_error_code(protocol_errc::topic_name_invalid);
  std::size_t levels = 1;
  for (const char c : name) {
    switch (c) {
      case '/':
        if (++levels > lim.max_levels) return make_error_code(protocol_errc::topic_name_invalid);
        break;
      case '+':
      case '#':
      case '\0':
        return make_error_code(protocol_errc::topic_name_invalid);
      default:
        break;
    }
  }
  return {};
}

/// Checks a Topic Filter from SUBSCRIBE or UNSUBSCRIBE (a plain one; see shared.hpp for `$share/`):
/// non-empty [MQTT-4.7.3-1], `+` fills a whole level [MQTT-4.7.1-3], `#` is the whole last level
/// [MQTT-4.7.1-2], no U+0000 [MQTT-4.7.3-2], within `lim`. Empty levels (`a//b`, `/a`, `a/`) are
/// valid. Returns protocol_errc::topic_filter_invalid. UTF-8 is assumed well-formed, as above.
inline std::error_code validate_topic_filter(std::string_view filter, const limits& lim = {}) noexcept {
  const std::size_t n = filter.size();
  if (n == 0 || n > lim.max_length || lim.max_levels == 0)
    return make_error_code(protocol_errc::topic_filter_invalid);
  std::size_t levels = 1;
  std::size_t level_start = 0;
  for (std::size_t i = 0; i < n; ++i) {
    switch (filter[i]) {
      case '/':
        if (++levels > lim.max_levels) return make_error_code(protocol_errc::topic_filter_invalid);
        level_start = i + 1;
        break;
      case '+':
        // [MQTT-4.7.1-3] the single-level wildcard must occupy an entire level.
        if (i != level_start || (i + 1 != n && filter[i + 1] != '/'))
          return make_error_code(protocol_errc::topic_filter_invalid);
        break;
      case '#':
        // [MQTT-4.7.1-2] the multi-level wildcard must be the whole last level.
        if (i != level_start || i + 1 != n) return make_error_code(protocol_errc::topic_filter_invalid);
        break;
      case '\0':
        return make_error_code(protocol_errc::topic_filter_invalid);
      default:
        break;
    }
  }
  return {};
}

namespace detail {

/// Splits a topic or filter into levels without allocating. `a/` has the levels "a" and "".
class level_cursor {
 public:
  explicit constexpr level_cursor(std::string_view s) noexcept : rest_(s) {}

  /// True once every level has been taken.
  constexpr bool done() const noexcept { return done_; }

  /// Takes the next level. Precondition: !done().
  constexpr std::string_view next() noexcept {
    // A plain loop: levels are short, and a call to memchr per level cost more than the scan.
    const char* const first = rest_.data();
    const std::size_t n = rest_.size();
    std::size_t i = 0;
    while (i != n && first[i] != '/') ++i;
    const std::string_view level(first, i);
    if (i == n) {
      done_ = true;
      rest_ = {};
    } else {
      rest_ = std::string_view(first + i + 1, n - i - 1);
    }
    return level;
  }

  /// The text after the levels taken so far.
  constexpr std::string_view rest() const noexcept { return rest_; }

 private:
  std::string_view rest_;
  bool done_ = false;
};

}  // namespace detail
}  // namespace topic
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_TOPIC_VALIDATE_HPP
