// The cluster's mapping of MQTT topics and filters to NATS subjects (cluster/subjects.hpp), alone:
// fixed cases, then random names and filters, whose NATS matching must agree with the trie's. And
// a session's bytes as it moves between nodes (cluster/handover.hpp), whole and damaged.
#include <mqttbroker/cluster/handover.hpp>
#include <mqttbroker/cluster/subjects.hpp>
#include <mqttbroker/topic/trie.hpp>
#include <mqttbroker/topic/validate.hpp>

#include "catch.hpp"
#include "topic_model.hpp"

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace cluster = mqttbroker::cluster;
namespace topic = mqttbroker::topic;
using test_support::rng;

namespace {

/// NATS subject matching as NATS documents it, written here from that text: tokens split on
/// `.`; `*` matches one token, `>` (last only) one or more.
bool nats_matches(std::string_view pattern, std::string_view subject) {
  const test_support::strings p = test_support::split_on(pattern, '.');
  const test_support::strings s = test_support::split_on(subject, '.');
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (p[i] == ">") return s.size() > i;
    if (i >= s.size()) return false;
    if (p[i] != "*" && p[i] != s[i]) return false;
  }
  return p.size() == s.size();
}

/// What NATS requires of a subject a message is published on: tokens that are not empty, no
/// whitespace, no wildcard token.
bool valid_literal_subject(std::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.' || s.find("..") != std::string_view::npos) return false;
  for (const char c : s)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7F || c == '*' || c == '>') return false;
  return true;
}

std::vector<std::string> subjects_of(const cluster::subject_map& map, std::string_view filter) {
  std::vector<std::string> out;
  for (const std::string& s : map.subjects(filter)) out.push_back(s);
  return out;
}

/// A level from an alphabet with every byte the mapping treats specially, empty levels included.
std::string random_level(rng& r) {
  static const std::string_view pieces[] = {"a", "b", "ab", ".", "*", ">", "%", "%2E", " ", "\t", "$", "x.y",
                                            "\xC3\xA9", "\x7F", "%%", "A", "0", "-", "_", "~"};
  std::string level;
  const std::size_t n = r.below(4);  // 0: an empty level
  for (std::size_t i = 0; i < n; ++i) level += pieces[r.below(sizeof pieces / sizeof pieces[0])];
  return level;
}
std::string random_name(rng& r) {
  std::string name;
  const std::size_t levels = 1 + r.below(4);
  for (std::size_t i = 0; i < levels; ++i) {
    if (i != 0) name += '/';
    std::string level = random_level(r);
    if (i == 0 && r.chance(15)) level.insert(0, "$");
    name += level;
  }
  return name;
}
/// A filter built from a name's levels, some turned into `+`, perhaps ended by `#`.
std::string random_filter(rng& r, const std::string& name) {
  const test_support::strings levels = test_support::split_levels(name);
  std::string f;
  const std::size_t keep = r.chance(30) ? r.below(levels.size() + 1) : levels.size();
  for (std::size_t i = 0; i < keep; ++i) {
    if (i != 0) f += '/';
    f += r.chance(25) ? std::string("+") : levels[i];
  }
  if (keep < levels.size() || r.chance(20)) f += f.empty() ? "#" : "/#";
  return f;
}

}  // namespace

TEST_CASE("cluster subjects: names become one token per level, under n or d, with reserved bytes escaped", "[cluster]") {
  const cluster::subject_map map;
  CHECK(map.subject("a/b") == "mqtt.n.a.b");
  CHECK(map.subject("a//b") == "mqtt.n.a.%.b");  // an empty level is the token `%`
  CHECK(map.subject("/") == "mqtt.n.%.%");
  CHECK(map.subject("a.b/c*/>/%/x y") == "mqtt.n.a%2Eb.c%2A.%3E.%25.x%20y");
  // [MQTT-4.7.2-1] names beginning with `$` live apart, where no leading wildcard reaches.
  CHECK(map.subject("$SYS/broker/load") == "mqtt.d.$SYS.broker.load");
  CHECK(map.subject("a/$b") == "mqtt.n.a.$b");
  CHECK(cluster::subject_map("site1.mqtt").subject("t") == "site1.mqtt.n.t");
}

TEST_CASE("cluster subjects: filters become NATS wildcards, a trailing # also its parent level", "[cluster][MQTT-4.7.1-2]") {
  const cluster::subject_map map;
  using v = std::vector<std::string>;
  CHECK(subjects_of(map, "a/+/c") == v{"mqtt.n.a.*.c"});
  CHECK(subjects_of(map, "a/#") == v{"mqtt.n.a", "mqtt.n.a.>"});
  CHECK(subjects_of(map, "+/#") == v{"mqtt.n.*", "mqtt.n.*.>"});
  CHECK(subjects_of(map, "#") == v{"mqtt.n.>"});
  CHECK(subjects_of(map, "+") == v{"mqtt.n.*"});
  CHECK(subjects_of(map, "$SYS/#") == v{"mqtt.d.$SYS", "mqtt.d.$SYS.>"});
  CHECK(subjects_of(map, "a//#") == v{"mqtt.n.a.%", "mqtt.n.a.%.>"});
  CHECK(subjects_of(map, "a.b/*") == v{"mqtt.n.a%2Eb.%2A"});  // literal levels, not wildcards
  CHECK(map.queue_group("g 1") == "mqtt.g%201");
}

TEST_CASE("cluster subjects: a subject maps back to its name; subjects no name maps to are refused", "[cluster]") {
  const cluster::subject_map map;
  CHECK(map.topic("mqtt.n.a.%.b") == std::optional<std::string>("a//b"));
  CHECK(map.topic("mqtt.d.$SYS.x") == std::optional<std::string>("$SYS/x"));
  CHECK(map.topic("mqtt.n.a%2Eb") == std::optional<std::string>("a.b"));
  CHECK_FALSE(map.topic("other.n.a"));
  CHECK_FALSE(map.topic("mqtt.x.a"));
  CHECK_FALSE(map.topic("mqtt.n"));
  CHECK_FALSE(map.topic("mqtt.n."));
  CHECK_FALSE(map.topic("mqtt.n.a..b"));   // an empty token
  CHECK_FALSE(map.topic("mqtt.n.*"));      // a wildcard
  CHECK_FALSE(map.topic("mqtt.n.a%2"));    // a cut escape
  CHECK_FALSE(map.topic("mqtt.n.a%zz"));   // not hex
  CHECK_FALSE(map.topic("mqtt.n.a%41"));   // `A` needs no escape: one spelling per name
  CHECK_FALSE(map.topic("mqtt.n.$SYS"));   // a `$` name under n
  CHECK_FALSE(map.topic("mqtt.d.SYS"));    // a plain name under d
}

TEST_CASE("cluster subjects: on random names and filters, NATS matching of the subjects agrees with the trie",
          "[cluster][MQTT-4.7.1-2][MQTT-4.7.2-1]") {
  const std::uint64_t seed = test_support::test_seed();
  std::printf("cluster subjects seed: %llu (override with MQTTBROKER_SEED)\n", static_cast<unsigned long long>(seed));
  rng r{seed};
  const cluster::subject_map map("c1.mqtt");
  std::vector<std::string> names;
  for (int i = 0; i < 300; ++i) {
    std::string n = random_name(r);
    if (topic::validate_topic_name(n)) continue;  // an error: not a name
    names.push_back(std::move(n));
  }
  REQUIRE(names.size() > 200);
  // Every name: a valid subject to publish on, and back to the same name.
  for (const std::string& n : names) {
    const std::string s = map.subject(n);
    INFO("name '" << n << "' subject '" << s << "'");
    CHECK(valid_literal_subject(s));
    CHECK(map.topic(s) == std::optional<std::string>(n));
  }
  // Filters made from the names (and from other names), in a trie; each name's matches through
  // the trie and through NATS matching of the filters' subjects must be the same set.
  topic::subscription_trie<int, std::string> trie;
  std::vector<std::string> filters;
  for (int i = 0; i < 150; ++i) {
    std::string f = random_filter(r, names[r.below(names.size())]);
    if (topic::validate_topic_filter(f)) continue;
    if (trie.insert(f, static_cast<int>(filters.size()), f)) filters.push_back(std::move(f));
  }
  REQUIRE(filters.size() > 100);
  std::size_t matched = 0;
  for (const std::string& n : names) {
    std::vector<bool> by_trie(filters.size(), false);
    trie.match(n, [&](const int& key, const std::string&) { by_trie[static_cast<std::size_t>(key)] = true; });
    const std::string s = map.subject(n);
    for (std::size_t i = 0; i < filters.size(); ++i) {
      std::size_t hits = 0;
      for (const std::string& pattern : map.subjects(filters[i])) hits += nats_matches(pattern, s) ? 1u : 0u;
      INFO("filter '" << filters[i] << "' name '" << n << "' subject '" << s << "'");
      CHECK(hits == (by_trie[i] ? 1u : 0u));  // once when it matches: the subjects never overlap
      matched += hits;
    }
  }
  CHECK(matched > 100);  // the random sets meet often enough to mean something
}

namespace {

cluster::session_handover sample_session() {
  namespace codec = mqttbroker::codec;
  cluster::session_handover h;
  h.expiry_seconds = 3600;
  cluster::session_handover::subscription a;
  a.filter = "q/#";
  a.options.max_qos = codec::qos::exactly_once;
  a.options.no_local = true;
  a.options.retain_as_published = true;
  a.options.retain_handling = codec::retain_handling_option::send_if_new;
  a.identifier = 268435455;
  h.subscriptions.push_back(a);
  cluster::session_handover::subscription shared;
  shared.filter = "$share/g/jobs/+";
  shared.options.max_qos = codec::qos::at_least_once;
  h.subscriptions.push_back(shared);
  mqttbroker::codec::properties_builder props;
  props.add(codec::property_id::content_type, "text/plain");
  cluster::session_handover::delivery sent;
  sent.msg = mqttbroker::message::make("q/1", "one", codec::qos::exactly_once, true, props.view().bytes());
  sent.expires_in = 42;
  sent.qos_level = codec::qos::at_least_once;
  sent.retain = true;
  sent.subscription_ids = {7, 9};
  sent.packet_id = 65535;
  sent.at = cluster::session_handover::state::sent;
  h.messages.push_back(sent);
  cluster::session_handover::delivery released;  // PUBREC came: only its PUBREL is owed
  released.qos_level = codec::qos::exactly_once;
  released.packet_id = 3;
  released.at = cluster::session_handover::state::pubrec_received;
  h.messages.push_back(released);
  cluster::session_handover::delivery queued;
  queued.msg = mqttbroker::message::make("q/2", std::string(300, 'x'), codec::qos::at_least_once, false);
  queued.qos_level = codec::qos::at_least_once;
  h.messages.push_back(queued);
  h.received = {1, 500, 65535};
  return h;
}

}  // namespace

TEST_CASE("cluster hand-over: a session's bytes give it back whole", "[cluster]") {
  const cluster::session_handover h = sample_session();
  std::string bytes;
  cluster::encode_handover(bytes, h);
  const auto back = cluster::decode_handover(bytes);
  REQUIRE(back);
  CHECK(back->expiry_seconds == 3600);
  REQUIRE(back->subscriptions.size() == 2);
  CHECK(back->subscriptions[0].filter == "q/#");
  CHECK(back->subscriptions[0].options == h.subscriptions[0].options);
  CHECK(back->subscriptions[0].identifier == 268435455);
  CHECK(back->subscriptions[1].filter == "$share/g/jobs/+");
  CHECK(back->subscriptions[1].options == h.subscriptions[1].options);
  REQUIRE(back->messages.size() == 3);
  const auto& sent = back->messages[0];
  REQUIRE(sent.msg);
  CHECK(sent.msg->topic() == "q/1");
  CHECK(sent.msg->payload() == "one");
  CHECK(sent.msg->qos_level() == mqttbroker::codec::qos::exactly_once);
  CHECK(sent.msg->retain());
  CHECK(sent.msg->properties().bytes() == h.messages[0].msg->properties().bytes());
  CHECK(sent.expires_in == 42);
  CHECK(sent.qos_level == mqttbroker::codec::qos::at_least_once);
  CHECK(sent.retain);
  CHECK(sent.subscription_ids == std::vector<std::uint32_t>{7, 9});
  CHECK(sent.packet_id == 65535);
  CHECK(sent.at == cluster::session_handover::state::sent);
  CHECK_FALSE(back->messages[1].msg);
  CHECK(back->messages[1].at == cluster::session_handover::state::pubrec_received);
  CHECK(back->messages[1].packet_id == 3);
  REQUIRE(back->messages[2].msg);
  CHECK(back->messages[2].msg->payload() == std::string(300, 'x'));
  CHECK(back->messages[2].at == cluster::session_handover::state::queued);
  CHECK(back->received == std::vector<std::uint16_t>{1, 500, 65535});
}

TEST_CASE("cluster hand-over: cut short, lengthened or with a byte changed, the bytes give nothing or a valid session",
          "[cluster]") {
  std::string bytes;
  cluster::encode_handover(bytes, sample_session());
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    INFO("cut to " << n << " bytes");
    CHECK_FALSE(cluster::decode_handover(std::string_view(bytes).substr(0, n)));
  }
  CHECK_FALSE(cluster::decode_handover(bytes + '\0'));  // trailing bytes
  // Any single byte changed: refused, or decoded into what a node can take (valid names, filters
  // and properties, checked here through what the decoder promises).
  std::size_t refused = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    for (unsigned v : {0x00u, 0x01u, 0x03u, 0x7Fu, 0x80u, 0xFFu}) {
      std::string damaged = bytes;
      damaged[i] = static_cast<char>(v);
      const auto h = cluster::decode_handover(damaged);
      if (!h) {
        ++refused;
        continue;
      }
      for (const auto& sub : h->subscriptions) {
        std::error_code ec;
        (void)mqttbroker::topic::parse_filter(sub.filter, ec);
        CHECK_FALSE(ec);
      }
      for (const auto& d : h->messages) {
        CHECK(static_cast<unsigned>(d.qos_level) <= 2);
        if (d.msg) CHECK_FALSE(mqttbroker::topic::validate_topic_name(d.msg->topic()));
      }
    }
  }
  CHECK(refused > 0);
  // A count far beyond the bytes there are is refused.
  std::string huge = "\x01\x00";
  mqttbroker::cluster::detail::put_varint(huge, std::uint64_t{1} << 40);
  CHECK_FALSE(cluster::decode_handover(huge));
}
