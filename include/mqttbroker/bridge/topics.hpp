#ifndef MQTTBROKER_BRIDGE_TOPICS_HPP
#define MQTTBROKER_BRIDGE_TOPICS_HPP

// Which topics a bridge carries, and how their names change on the way: Mosquitto's bridge `topic`
// line, `topic PATTERN [[[out | in | both] QOS] LOCAL_PREFIX REMOTE_PREFIX]`. A message on the
// local topic LOCAL_PREFIX + T, with T matching PATTERN, goes out as REMOTE_PREFIX + T, and the
// other way for `in`. An empty PATTERN (written "") with both prefixes carries the one topic the
// prefixes name.

#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/topic/validate.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace bridge {

enum class direction : std::uint8_t { out, in, both };

struct topic_route {
  std::string pattern;
  direction dir = direction::out;
  codec::qos qos_level = codec::qos::at_most_once;
  std::string local_prefix;
  std::string remote_prefix;

  bool carries_out() const noexcept { return dir != direction::in; }
  bool carries_in() const noexcept { return dir != direction::out; }
  /// What the bridge subscribes to on each side.
  std::string local_filter() const { return local_prefix + pattern; }
  std::string remote_filter() const { return remote_prefix + pattern; }

  /// The remote name of a local topic this route matched (its local prefix replaced).
  std::string to_remote(std::string_view local_topic) const {
    std::string out;
    to_remote(local_topic, out);
    return out;
  }
  /// The local name of a remote topic this route matched.
  std::string to_local(std::string_view remote_topic) const {
    std::string out;
    to_local(remote_topic, out);
    return out;
  }
  /// The same into `out`, whose capacity a caller keeps between messages.
  void to_remote(std::string_view local_topic, std::string& out) const {
    swap_prefix(local_topic, local_prefix, remote_prefix, out);
  }
  void to_local(std::string_view remote_topic, std::string& out) const {
    swap_prefix(remote_topic, remote_prefix, local_prefix, out);
  }

 private:
  static void swap_prefix(std::string_view topic, std::string_view from, std::string_view to, std::string& out) {
    // The route's filter begins with `from`, so a topic it matched does too.
    out.assign(to);
    out.append(topic.substr(topic.compare(0, from.size(), from) == 0 ? from.size() : 0));
  }
};

/// Reads the words after `topic` on a bridge's `topic` line (the caller has split the line and
/// turned "" into an empty word). Empty optional, with `why` said, when the line is wrong.
inline std::optional<topic_route> parse_topic_route(const std::vector<std::string>& words, std::string& why) {
  topic_route r;
  if (words.empty() || words.size() > 5) {
    why = "topic takes a pattern, then optionally a direction, a QoS and two prefixes";
    return std::nullopt;
  }
  r.pattern = words[0];
  if (words.size() >= 2) {
    if (words[1] == "out") {
      r.dir = direction::out;
    } else if (words[1] == "in") {
      r.dir = direction::in;
    } else if (words[1] == "both") {
      r.dir = direction::both;
    } else {
      why = "the direction must be out, in or both, not '" + words[1] + "'";
      return std::nullopt;
    }
  }
  if (words.size() >= 3) {
    if (words[2] != "0" && words[2] != "1" && words[2] != "2") {
      why = "the QoS must be 0, 1 or 2, not '" + words[2] + "'";
      return std::nullopt;
    }
    r.qos_level = static_cast<codec::qos>(words[2][0] - '0');
  }
  if (words.size() == 4) {
    why = "a local prefix needs a remote prefix after it (\"\" for none)";
    return std::nullopt;
  }
  if (words.size() == 5) {
    r.local_prefix = words[3];
    r.remote_prefix = words[4];
  }
  for (const std::string* prefix : {&r.local_prefix, &r.remote_prefix}) {
    if (prefix->find_first_of("+#") != std::string::npos) {
      why = "a prefix may not hold a wildcard: '" + *prefix + "'";
      return std::nullopt;
    }
  }
  if (r.pattern.empty() && (r.local_prefix.empty() || r.remote_prefix.empty())) {
    why = "an empty pattern needs both prefixes, which then name the topic";
    return std::nullopt;
  }
  for (const std::string& filter : {r.local_filter(), r.remote_filter()}) {
    if (topic::validate_topic_filter(filter)) {
      why = "'" + filter + "' is not a valid topic filter";
      return std::nullopt;
    }
  }
  return r;
}

}  // namespace bridge
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_BRIDGE_TOPICS_HPP
