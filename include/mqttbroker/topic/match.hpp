#ifndef MQTTBROKER_TOPIC_MATCH_HPP
#define MQTTBROKER_TOPIC_MATCH_HPP

// One filter against one name, and one filter against another, without the trie: for rules that
// are few and checked one by one (an ACL file's), not for routing, which the trie does.

#include <mqttbroker/config.hpp>
#include <mqttbroker/topic/validate.hpp>

#include <string_view>

MQTTBROKER_BEGIN_NAMESPACE
namespace topic {

namespace detail {

/// The next level of `c` in `out`; false when none is left.
constexpr bool take_level(level_cursor& c, std::string_view& out) noexcept {
  if (c.done()) return false;
  out = c.next();
  return true;
}

constexpr bool starts_with_wildcard(std::string_view f) noexcept {
  return !f.empty() && (f.front() == '+' || f.front() == '#');
}

}  // namespace detail

/// Whether the Topic Name `name` matches the (valid) filter `filter`: `+` one level, `#` the
/// parent level and everything below it [MQTT-4.7.1-2], neither at the first level of a name
/// beginning with `$` [MQTT-4.7.2-1].
constexpr bool matches(std::string_view filter, std::string_view name) noexcept {
  if (is_dollar_topic(name) && detail::starts_with_wildcard(filter)) return false;
  detail::level_cursor f(filter), n(name);
  std::string_view fl, nl;
  while (detail::take_level(f, fl)) {
    if (fl == "#") return true;
    if (!detail::take_level(n, nl)) return false;
    if (fl != "+" && fl != nl) return false;
  }
  return !detail::take_level(n, nl);
}

/// Whether every name the filter `narrow` matches is matched by the filter `wide` as well.
constexpr bool covers(std::string_view wide, std::string_view narrow) noexcept {
  if (is_dollar_topic(narrow) && detail::starts_with_wildcard(wide)) return false;
  detail::level_cursor w(wide), n(narrow);
  std::string_view wl, nl;
  for (bool first = true; detail::take_level(w, wl); first = false) {
    if (wl == "#") return true;
    if (!detail::take_level(n, nl)) return false;  // names shorter than `wide` allows
    if (nl == "#") {
      // Names of any depth below, and the parent unless at the first level: only `#`, or at
      // the first level `+/#`, takes them all.
      return first && wl == "+" && w.rest() == "#" && !w.done();
    }
    if (wl == "+") continue;
    if (nl == "+" || nl != wl) return false;
  }
  return !detail::take_level(n, nl);
}

/// Whether some name is matched by both filters.
constexpr bool intersects(std::string_view a, std::string_view b) noexcept {
  if ((is_dollar_topic(a) && detail::starts_with_wildcard(b)) || (is_dollar_topic(b) && detail::starts_with_wildcard(a)))
    return false;
  detail::level_cursor x(a), y(b);
  std::string_view xl, yl;
  for (;;) {
    const bool hx = detail::take_level(x, xl), hy = detail::take_level(y, yl);
    if (!hx && !hy) return true;
    if ((hx && xl == "#") || (hy && yl == "#")) return true;  // "a/#" also matches "a"
    if (!hx || !hy) return false;
    if (xl != "+" && yl != "+" && xl != yl) return false;
  }
}

}  // namespace topic
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_TOPIC_MATCH_HPP
