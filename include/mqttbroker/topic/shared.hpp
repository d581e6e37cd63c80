#ifndef MQTTBROKER_TOPIC_SHARED_HPP
#define MQTTBROKER_TOPIC_SHARED_HPP

#include <mqttbroker/config.hpp>
#include <mqttbroker/error.hpp>
#include <mqttbroker/topic/validate.hpp>

#include <cstddef>
#include <string_view>
#include <system_error>

MQTTBROKER_BEGIN_NAMESPACE
namespace topic {

/// The prefix that marks a Shared Subscription's Topic Filter (5.0 section 4.8.2).
inline constexpr std::string_view share_prefix = "$share/";

/// A subscription's Topic Filter split into its ShareName and the filter that is matched.
/// Both views point into the string given to parse_filter.
struct parsed_filter {
  std::string_view share_name;  ///< the ShareName; empty for a non-shared subscription
  std::string_view filter;      ///< the filter matched against Topic Names (the whole filter if not shared)

  /// True for `$share/{ShareName}/{filter}`.
  constexpr bool is_shared() const noexcept { return !share_name.empty(); }
};

/// True when `filter` starts with `$share/` and so must be parsed as a Shared Subscription.
constexpr bool is_shared_filter(std::string_view filter) noexcept {
  return filter.substr(0, share_prefix.size()) == share_prefix;
}

/// Validates a SUBSCRIBE/UNSUBSCRIBE Topic Filter and splits off a `$share/{ShareName}/` prefix.
///
/// A filter without the prefix is checked by validate_topic_filter and returned unshared. With it,
/// the ShareName must be at least one character [MQTT-4.8.2-1] without `/`, `+` or `#`, and be
/// followed by `/` and a valid non-empty Topic Filter [MQTT-4.8.2-2]. `lim.max_length` applies to
/// the whole string (that is what the client sent), `lim.max_levels` to the inner filter (that is
/// what the trie stores). On error `ec` is protocol_errc::topic_filter_invalid and the result empty.
///
/// 3.1.1 has no shared subscriptions; a broker that accepts `$share/` from 3.1.1 clients too (as
/// Mosquitto and EMQX do) calls this for every version, otherwise validate_topic_filter for 3.1.1.
inline parsed_filter parse_filter(std::string_view filter, const limits& lim, std::error_code& ec) noexcept {
  ec.clear();
  if (!is_shared_filter(filter)) {
    ec = validate_topic_filter(filter, lim);
    if (ec) return {};
    return {{}, filter};
  }
  if (filter.size() > lim.max_length) {
    ec = make_error_code(protocol_errc::topic_filter_invalid);
    return {};
  }
  const std::string_view rest = filter.substr(share_prefix.size());
  const std::size_t end = rest.find_first_of(std::string_view("/+#\0", 4));
  // [MQTT-4.8.2-1] a ShareName of at least one character; [MQTT-4.8.2-2] free of `/`, `+`, `#` (and
  // U+0000 [MQTT-4.7.3-2]) and followed by `/` and a Topic Filter: `$share/g`, `$share//x` and
  // `$share/a+/x` all fail here.
  if (end == 0 || end == std::string_view::npos || rest[end] != '/') {
    ec = make_error_code(protocol_errc::topic_filter_invalid);
    return {};
  }
  const std::string_view inner = rest.substr(end + 1);
  ec = validate_topic_filter(inner, lim);  // rejects the empty filter of `$share/g/`
  if (ec) return {};
  return {rest.substr(0, end), inner};
}

/// parse_filter with the default limits.
inline parsed_filter parse_filter(std::string_view filter, std::error_code& ec) noexcept {
  return parse_filter(filter, limits{}, ec);
}

}  // namespace topic
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_TOPIC_SHARED_HPP
