#include <mqttbroker/topic/validate.hpp>
#include <mqttbroker/topic/match.hpp>
#include <mqttbroker/topic/shared.hpp>
#include <mqttbroker/topic/trie.hpp>

#include "catch.hpp"
#include "topic_model.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

namespace topic = mqttbroker::topic;
using mqttbroker::protocol_errc;

namespace {

using test_support::brute_match;
using test_support::rng;
using test_support::split_levels;
using test_support::test_seed;

std::string repeat_levels(std::size_t levels) {  // "a/a/.../a"
  std::string s = "a";
  for (std::size_t i = 1; i < levels; ++i) s += "/a";
  return s;
}

struct validity_case {
  std::string text;
  bool valid;
};

using trie_type = topic::subscription_trie<int, int>;

// (key, value) pairs reported by match, sorted, so results compare as multisets.
std::vector<std::pair<int, int>> matches(const trie_type& trie, std::string_view topic_name) {
  std::vector<std::pair<int, int>> out;
  trie.match(topic_name, [&](const int& k, const int& v) { out.emplace_back(k, v); });
  std::sort(out.begin(), out.end());
  return out;
}

bool matched_by(std::string_view filter, std::string_view topic_name) {
  trie_type trie;
  trie.insert(filter, 1, 1);
  return !matches(trie, topic_name).empty();
}

std::vector<std::tuple<std::string, int, int>> all_subscriptions(const trie_type& trie) {
  std::vector<std::tuple<std::string, int, int>> out;
  trie.for_each(
      [&](std::string_view f, const int& k, const int& v) { out.emplace_back(std::string(f), k, v); });
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("topic names: validity table", "[topic][validate][MQTT-4.7.3-1][MQTT-4.7.3-2][MQTT-3.3.2-2]") {
  const std::vector<validity_case> cases = {
      {"a", true},
      {"sport/tennis/player1", true},
      {"/", true},  // two empty levels
      {"//", true},
      {"/finance", true},
      {"finance/", true},
      {"a//b", true},
      {" ", true},
      {"$SYS/broker/load", true},
      {"Sport/Tennis", true},
      {"\xC3\xBC/\xE2\x82\xAC", true},  // UTF-8 is the codec's check; multi-byte levels pass
      {"", false},                      // [MQTT-4.7.3-1]
      {"+", false},                     // [MQTT-3.3.2-2] no wildcards in names
      {"#", false},
      {"a/+", false},
      {"a/#", false},
      {"a+b", false},
      {"sport/tennis#", false},
      {std::string("a\0b", 3), false},  // [MQTT-4.7.3-2]
      {std::string(1, '\0'), false},
      {std::string(65535, 'a'), true},  // [MQTT-4.7.3-3] the longest encodable name
      {std::string(65536, 'a'), false},
      {repeat_levels(128), true},  // the default level limit
      {repeat_levels(129), false},
      {std::string(127, '/'), true},  // 128 empty levels
      {std::string(128, '/'), false},
  };
  for (const auto& c : cases) {
    INFO("name \"" << c.text.substr(0, 40) << "\" (" << c.text.size() << " bytes)");
    const std::error_code ec = topic::validate_topic_name(c.text);
    CHECK(!ec == c.valid);
    if (ec) CHECK(ec == protocol_errc::topic_name_invalid);
  }
}

TEST_CASE("topic filters: validity table",
          "[topic][validate][MQTT-4.7.1-2][MQTT-4.7.1-3][MQTT-4.7.3-1][MQTT-4.7.3-2]") {
  const std::vector<validity_case> cases = {
      {"a", true},
      {"#", true},
      {"+", true},
      {"+/+", true},
      {"/+", true},
      {"+/", true},
      {"a/#", true},
      {"a/+/#", true},
      {"+/tennis/#", true},
      {"sport/+/player1", true},
      {"/#", true},
      {"//", true},
      {"a//b", true},
      {"a/", true},
      {"$SYS/#", true},
      {"$share", true},  // a plain filter; `$share/` parsing lives in parse_filter
      {"", false},       // [MQTT-4.7.3-1]
      {"a/b#", false},   // [MQTT-4.7.1-2] `#` is a whole level
      {"a/#/b", false},  // [MQTT-4.7.1-2] `#` is the last level
      {"#/", false},
      {"##", false},
      {"#a", false},
      {"a#", false},
      {"sport/tennis#", false},
      {"+a", false},  // [MQTT-4.7.1-3] `+` is a whole level
      {"a+", false},
      {"a/++", false},
      {"sport+", false},
      {"+#", false},
      {"a/+b/c", false},
      {std::string("a/\0", 3), false},  // [MQTT-4.7.3-2]
      {std::string(65535, 'a'), true},
      {std::string(65536, 'a'), false},
      {std::string(65534, 'a') + "/#", false},
      {repeat_levels(127) + "/#", true},
      {repeat_levels(128) + "/#", false},
      {std::string(127, '/'), true},
      {std::string(128, '/'), false},
  };
  for (const auto& c : cases) {
    INFO("filter \"" << c.text.substr(0, 40) << "\" (" << c.text.size() << " bytes)");
    const std::error_code ec = topic::validate_topic_filter(c.text);
    CHECK(!ec == c.valid);
    if (ec) CHECK(ec == protocol_errc::topic_filter_invalid);
  }
}

TEST_CASE("validation errors map to the 5.0 reason codes", "[topic][validate]") {
  CHECK(mqttbroker::to_reason_code(topic::validate_topic_name("a/+")) ==
        mqttbroker::reason_code::topic_name_invalid);
  CHECK(mqttbroker::to_reason_code(topic::validate_topic_filter("a/#/b")) ==
        mqttbroker::reason_code::topic_filter_invalid);
}

TEST_CASE("validation honours custom limits", "[topic][validate]") {
  const topic::limits lim{5, 2};
  CHECK_FALSE(topic::validate_topic_name("a/b", lim));
  CHECK_FALSE(topic::validate_topic_name("abcde", lim));
  CHECK(topic::validate_topic_name("abcdef", lim) == protocol_errc::topic_name_invalid);
  CHECK(topic::validate_topic_name("a/b/c", lim) == protocol_errc::topic_name_invalid);
  CHECK(topic::validate_topic_name("a//", lim) == protocol_errc::topic_name_invalid);
  CHECK_FALSE(topic::validate_topic_filter("+/#", lim));
  CHECK(topic::validate_topic_filter("+/+/#", lim) == protocol_errc::topic_filter_invalid);
  CHECK(topic::validate_topic_filter("abcd/#", lim) == protocol_errc::topic_filter_invalid);
  const topic::limits none{65535, 0};
  CHECK(topic::validate_topic_name("a", none) == protocol_errc::topic_name_invalid);
  CHECK(topic::validate_topic_filter("a", none) == protocol_errc::topic_filter_invalid);
}

TEST_CASE("dollar topics and wildcard detection", "[topic][validate][MQTT-4.7.2-1]") {
  CHECK(topic::is_dollar_topic("$SYS/broker"));
  CHECK(topic::is_dollar_topic("$"));
  CHECK_FALSE(topic::is_dollar_topic("a/$SYS"));
  CHECK_FALSE(topic::is_dollar_topic(""));
  CHECK(topic::has_wildcards("a/+"));
  CHECK(topic::has_wildcards("#"));
  CHECK_FALSE(topic::has_wildcards("a/b"));
}

TEST_CASE("$share filters split into ShareName and filter", "[topic][shared][MQTT-4.8.2-1][MQTT-4.8.2-2]") {
  struct split_case {
    std::string text;
    std::string share_name;
    std::string filter;
  };
  const std::vector<split_case> cases = {
      {"$share/g/a/b", "g", "a/b"},
      {"$share/consumer1/sport/tennis/+", "consumer1", "sport/tennis/+"},
      {"$share/g/#", "g", "#"},
      {"$share/g/+", "g", "+"},
      {"$share/g//", "g", "/"},
      {"$share/g/$SYS/#", "g", "$SYS/#"},
      {"$share/$g/x", "$g", "x"},
      {"a/b", "", "a/b"},        // not shared
      {"$share", "", "$share"},  // no `/`: a plain filter
      {"$shared/x", "", "$shared/x"},
      {"$SHARE/g/x", "", "$SHARE/g/x"},  // the prefix is case-sensitive
      {"#", "", "#"},
  };
  for (const auto& c : cases) {
    INFO("filter " << c.text);
    std::error_code ec = make_error_code(protocol_errc::unexpected_packet);  // must be cleared
    const topic::parsed_filter p = topic::parse_filter(c.text, ec);
    REQUIRE_FALSE(ec);
    CHECK(p.share_name == c.share_name);
    CHECK(p.filter == c.filter);
    CHECK(p.is_shared() == !c.share_name.empty());
    CHECK(topic::is_shared_filter(c.text) == p.is_shared());
    // The views point into the caller's string, so the router can keep them as long as it.
    if (p.is_shared()) CHECK(p.filter.data() + p.filter.size() == c.text.data() + c.text.size());
  }
}

TEST_CASE("malformed $share filters are rejected", "[topic][shared][MQTT-4.8.2-1][MQTT-4.8.2-2]") {
  const std::vector<std::string> bad = {
      "$share/",      // no ShareName [MQTT-4.8.2-1]
      "$share//x",    // empty ShareName [MQTT-4.8.2-1]
      "$share/g",     // no `/` and filter after the ShareName [MQTT-4.8.2-2]
      "$share/g/",    // an empty filter
      "$share/a+/x",  // `+` in the ShareName
      "$share/+/x",
      "$share/#/x",
      "$share/#",
      "$share/a#",
      "$share/g/a#",  // the inner filter must be valid
      "$share/g/a/#/b",
      "$share/g/+x",
      std::string("$share/a\0b/x", 13),
      std::string("$share/g/a\0", 11),
      "",
      "a/#/b",  // plain filters are validated too
  };
  for (const auto& text : bad) {
    INFO("filter " << text);
    std::error_code ec;
    const topic::parsed_filter p = topic::parse_filter(text, ec);
    CHECK(ec == protocol_errc::topic_filter_invalid);
    CHECK(p.share_name.empty());
    CHECK(p.filter.empty());
  }
}

TEST_CASE("$share limits: length of the whole string, levels of the inner filter", "[topic][shared]") {
  const topic::limits lim{20, 2};
  std::error_code ec;
  CHECK(topic::parse_filter("$share/g/a/b", lim, ec).filter == "a/b");
  CHECK_FALSE(ec);
  topic::parse_filter("$share/g/a/b/c", lim, ec);
  CHECK(ec == protocol_errc::topic_filter_invalid);
  topic::parse_filter("$share/group123456/ab", lim, ec);  // 21 bytes
  CHECK(ec == protocol_errc::topic_filter_invalid);
  CHECK(topic::parse_filter("$share/group1234/ab", lim, ec).share_name == "group1234");
  CHECK_FALSE(ec);
}

TEST_CASE("trie insert, find, erase and size", "[topic][trie]") {
  trie_type trie;
  CHECK(trie.empty());
  CHECK(trie.insert("a/b", 1, 10));        // new
  CHECK_FALSE(trie.insert("a/b", 1, 11));  // replaced [MQTT-3.8.4-3]
  CHECK(trie.insert("a/b", 2, 20));
  CHECK(trie.insert("a/#", 1, 30));
  CHECK(trie.insert("a/+", 1, 40));
  CHECK(trie.size() == 4);
  REQUIRE(trie.find("a/b", 1) != nullptr);
  CHECK(*trie.find("a/b", 1) == 11);
  CHECK(*trie.find("a/#", 1) == 30);
  CHECK(*trie.find("a/+", 1) == 40);
  CHECK(trie.find("a/b", 3) == nullptr);
  CHECK(trie.find("a", 1) == nullptr);
  CHECK(trie.find("a/b/c", 1) == nullptr);
  CHECK(trie.find("a/#/b", 1) == nullptr);  // invalid filters find nothing

  CHECK_FALSE(trie.erase("a/b", 3));
  CHECK_FALSE(trie.erase("a", 1));
  CHECK_FALSE(trie.erase("x/y", 1));
  CHECK_FALSE(trie.erase("a/#/b", 1));
  CHECK(trie.erase("a/b", 1));
  CHECK_FALSE(trie.erase("a/b", 1));
  CHECK(trie.size() == 3);
  CHECK(matches(trie, "a/b") == std::vector<std::pair<int, int>>{{1, 30}, {1, 40}, {2, 20}});
  CHECK(trie.erase("a/#", 1));
  CHECK(trie.erase("a/+", 1));
  CHECK(trie.erase("a/b", 2));
  CHECK(trie.empty());
  CHECK(trie.node_count() == 0);
}

TEST_CASE("trie erase frees the nodes it no longer needs", "[topic][trie]") {
  trie_type trie;
  trie.insert("a/b/c/d", 1, 1);
  CHECK(trie.node_count() == 4);
  trie.insert("a/b", 1, 2);
  trie.insert("a/+/c/#", 1, 3);
  trie.insert("#", 1, 4);
  CHECK(trie.node_count() == 6);  // a, a/b, a/b/c, a/b/c/d, a/+, a/+/c
  CHECK(trie.erase("a/b/c/d", 1));
  CHECK(trie.node_count() == 4);  // a/b stays: it has a subscriber
  CHECK(trie.erase("a/+/c/#", 1));
  CHECK(trie.node_count() == 2);
  CHECK(trie.erase("a/b", 1));
  CHECK(trie.node_count() == 0);  // the root's `#` needs no node
  CHECK(trie.erase("#", 1));
  CHECK(trie.node_count() == 0);
  CHECK(trie.empty());
}

TEST_CASE("trie memory does not grow under subscribe/unsubscribe churn", "[topic][trie]") {
  trie_type trie;
  trie.insert("keep/me", 0, 0);
  const std::size_t base = trie.node_count();
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < 200; ++i)
      trie.insert("site/" + std::to_string(i % 7) + "/dev/" + std::to_string(round * 1000 + i) + "/+/#", i,
                  i);
    for (int i = 0; i < 200; ++i)
      CHECK(trie.erase("site/" + std::to_string(i % 7) + "/dev/" + std::to_string(round * 1000 + i) + "/+/#",
                       i));
    REQUIRE(trie.node_count() == base);
  }
  CHECK(trie.size() == 1);
}

TEST_CASE("trie handles wide fan-out (hashed children) and shrinks back", "[topic][trie]") {
  trie_type trie;
  const int n = 5000;
  for (int i = 0; i < n; ++i) REQUIRE(trie.insert("dev/" + std::to_string(i) + "/t", i, i));
  CHECK(trie.node_count() == 1 + 2 * static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    REQUIRE(matches(trie, "dev/" + std::to_string(i) + "/t") == std::vector<std::pair<int, int>>{{i, i}});
  CHECK(matches(trie, "dev/5000/t").empty());
  CHECK(matches(trie, "dev/1").empty());
  // Erase in an order unrelated to insertion so backward-shift deletion meets varied runs.
  for (int i = 0; i < n; ++i) {
    const int victim = (i * 7919) % n;
    REQUIRE(trie.erase("dev/" + std::to_string(victim) + "/t", victim));
    if (i % 500 == 0 || n - i < 12) {
      for (int j = i + 1; j < n; ++j) {
        const int alive = (j * 7919) % n;
        REQUIRE(matches(trie, "dev/" + std::to_string(alive) + "/t") ==
                std::vector<std::pair<int, int>>{{alive, alive}});
      }
    }
  }
  CHECK(trie.empty());
  CHECK(trie.node_count() == 0);
}

TEST_CASE("trie handles many subscribers on one filter", "[topic][trie]") {
  trie_type trie;
  const int n = 20000;
  for (int k = 0; k < n; ++k) REQUIRE(trie.insert("hot/topic", k, k));
  CHECK_FALSE(trie.insert("hot/topic", 42, -42));
  std::size_t count = 0;
  long long sum = 0;
  trie.match("hot/topic", [&](const int&, const int& v) {
    ++count;
    sum += v;
  });
  CHECK(count == static_cast<std::size_t>(n));
  CHECK(sum == static_cast<long long>(n) * (n - 1) / 2 - 84);
  for (int k = n - 1; k >= 3; --k) REQUIRE(trie.erase("hot/topic", k));  // down to the packed form
  CHECK(matches(trie, "hot/topic") == std::vector<std::pair<int, int>>{{0, 0}, {1, 1}, {2, 2}});
  CHECK_FALSE(trie.erase("hot/topic", 42));
  for (int k = 0; k < 3; ++k) REQUIRE(trie.erase("hot/topic", k));
  CHECK(trie.node_count() == 0);
}

TEST_CASE("trie works with non-trivial keys and values", "[topic][trie]") {
  topic::subscription_trie<std::string, std::string> trie;
  for (int i = 0; i < 30; ++i)
    trie.insert("a/+", "client-with-a-long-identifier-" + std::to_string(i), std::string(40, 'v'));
  trie.insert("a/b", "c", "short");
  std::size_t count = 0;
  trie.match("a/b", [&](const std::string&, const std::string&) { ++count; });
  CHECK(count == 31);
  for (int i = 0; i < 28; ++i) CHECK(trie.erase("a/+", "client-with-a-long-identifier-" + std::to_string(i)));
  REQUIRE(trie.find("a/+", "client-with-a-long-identifier-29") != nullptr);
  CHECK(*trie.find("a/+", "client-with-a-long-identifier-29") == std::string(40, 'v'));
  CHECK(trie.size() == 3);
}

namespace {
struct throwing_value {
  static inline bool armed = false;
  int v = 0;
  explicit throwing_value(int x) : v(x) {}
  throwing_value(const throwing_value& o) : v(o.v) {
    if (armed) throw std::runtime_error("copy");
  }
  throwing_value& operator=(const throwing_value&) = default;
};
}  // namespace

TEST_CASE("trie insert that throws leaves no nodes behind", "[topic][trie]") {
  topic::subscription_trie<int, throwing_value> trie;
  const throwing_value v(1);
  for (int k = 0; k < 8; ++k) trie.insert("x/y", k, v);
  const std::size_t nodes = trie.node_count();
  throwing_value::armed = true;
  CHECK_THROWS(trie.insert("a/b/c", 1, v));  // new nodes, then the copy throws
  CHECK_THROWS(trie.insert("x/y/#", 1, v));
  CHECK_THROWS(trie.insert("x/y", 8, v));  // the 9th subscriber moves the set to a hash map
  throwing_value::armed = false;
  CHECK(trie.node_count() == nodes);
  CHECK(trie.size() == 8);
  std::size_t count = 0;
  trie.match("x/y", [&](const int&, const throwing_value&) { ++count; });
  CHECK(count == 8);
  CHECK(trie.insert("x/y", 8, v));
}

TEST_CASE("trie clear and move", "[topic][trie]") {
  trie_type a;
  a.insert("a/#", 1, 1);
  a.insert("b", 2, 2);
  trie_type b(std::move(a));
  CHECK(b.size() == 2);
  CHECK(a.size() == 0);  // NOLINT(bugprone-use-after-move): a moved-from trie is empty and usable
  CHECK(a.node_count() == 0);
  CHECK(matches(a, "b").empty());
  a.insert("c", 3, 3);
  CHECK(matches(a, "c").size() == 1);
  a = std::move(b);
  CHECK(matches(a, "a/x").size() == 1);
  CHECK(matches(a, "c").empty());
  a.clear();
  CHECK(a.empty());
  CHECK(a.node_count() == 0);
  CHECK(matches(a, "b").empty());
  a.insert("b", 2, 2);
  CHECK(matches(a, "b").size() == 1);
}

TEST_CASE("for_each reports every subscription with its filter", "[topic][trie]") {
  trie_type trie;
  const std::vector<std::string> filters = {"#",     "+",   "/", "//",     "a/",  "/#",  "+/#",
                                            "a/+/b", "a/b", "a", "$SYS/#", "+/+", "a//#"};
  int k = 0;
  for (const auto& f : filters) {
    trie.insert(f, k, k);
    ++k;
  }
  trie.insert("a/b", 100, 100);
  std::vector<std::tuple<std::string, int, int>> expected;
  for (k = 0; k < static_cast<int>(filters.size()); ++k)
    expected.emplace_back(filters[static_cast<std::size_t>(k)], k, k);
  expected.emplace_back("a/b", 100, 100);
  std::sort(expected.begin(), expected.end());
  CHECK(all_subscriptions(trie) == expected);
}

TEST_CASE("exact filters match exactly and case-sensitively", "[topic][trie][MQTT-4.7.3-4]") {
  CHECK(matched_by("sport/tennis", "sport/tennis"));
  CHECK_FALSE(matched_by("sport/tennis", "Sport/tennis"));
  CHECK_FALSE(matched_by("sport/tennis", "sport/tennis/"));
  CHECK_FALSE(matched_by("sport/tennis", "sport"));
  CHECK_FALSE(matched_by("sport", "sport/tennis"));
  CHECK_FALSE(matched_by("sport/tennis", "sport/tenni"));
  CHECK_FALSE(matched_by("ACCOUNTS", "Accounts"));
  CHECK(matched_by("/", "/"));
  CHECK_FALSE(matched_by("/", "//"));
  CHECK(matched_by("a//b", "a//b"));
  CHECK_FALSE(matched_by("a//b", "a/b"));
  CHECK(matched_by("a b", "a b"));
  CHECK_FALSE(matched_by("a b", "a"));
}

TEST_CASE("# matches the parent level and everything below", "[topic][trie][MQTT-4.7.1-2]") {
  CHECK(matched_by("sport/#", "sport"));  // the parent level too
  CHECK(matched_by("sport/#", "sport/"));
  CHECK(matched_by("sport/#", "sport/tennis"));
  CHECK(matched_by("sport/#", "sport/tennis/player1/ranking"));
  CHECK_FALSE(matched_by("sport/#", "sports"));
  CHECK_FALSE(matched_by("sport/#", "Sport"));
  CHECK(matched_by("sport/tennis/player1/#", "sport/tennis/player1"));
  CHECK(matched_by("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon"));
  CHECK_FALSE(matched_by("sport/tennis/#", "sport"));
  CHECK(matched_by("#", "a"));
  CHECK(matched_by("#", "/"));
  CHECK(matched_by("#", "a/b/c"));
  CHECK(matched_by("/#", "/"));
  CHECK(matched_by("/#", "/a"));
  CHECK_FALSE(matched_by("/#", "a"));
  CHECK(matched_by("+/#", "a"));
  CHECK(matched_by("+/#", "a/b"));
  CHECK(matched_by("a//#", "a/"));
  CHECK(matched_by("a//#", "a//x"));
  CHECK_FALSE(matched_by("a//#", "a"));
}

TEST_CASE("+ matches exactly one level, an empty one included", "[topic][trie][MQTT-4.7.1-3]") {
  CHECK(matched_by("sport/tennis/+", "sport/tennis/player1"));
  CHECK(matched_by("sport/tennis/+", "sport/tennis/"));  // empty level
  CHECK_FALSE(matched_by("sport/tennis/+", "sport/tennis/player1/ranking"));
  CHECK_FALSE(matched_by("sport/tennis/+", "sport/tennis"));
  CHECK(matched_by("sport/+", "sport/"));
  CHECK_FALSE(matched_by("sport/+", "sport"));
  CHECK(matched_by("+", "a"));
  CHECK_FALSE(matched_by("+", "/finance"));
  CHECK(matched_by("+/+", "/finance"));
  CHECK(matched_by("/+", "/finance"));
  CHECK(matched_by("+/+", "/"));
  CHECK(matched_by("+/tennis/#", "sport/tennis"));
  CHECK(matched_by("sport/+/player1", "sport/tennis/player1"));
  CHECK(matched_by("+/+/+", "//"));
  CHECK_FALSE(matched_by("+/+/+", "/"));
}

TEST_CASE("leading wildcard does not match $ topics", "[topic][trie][MQTT-4.7.2-1]") {
  CHECK_FALSE(matched_by("#", "$SYS/broker/load"));
  CHECK_FALSE(matched_by("#", "$SYS"));
  CHECK_FALSE(matched_by("#", "$"));
  CHECK_FALSE(matched_by("+/monitor/Clients", "$SYS/monitor/Clients"));
  CHECK_FALSE(matched_by("+", "$SYS"));
  CHECK_FALSE(matched_by("+/#", "$SYS/x"));
  CHECK(matched_by("$SYS/#", "$SYS/monitor/Clients"));
  CHECK(matched_by("$SYS/#", "$SYS"));
  CHECK(matched_by("$SYS/monitor/+", "$SYS/monitor/Clients"));
  CHECK(matched_by("$SYS/+/Clients", "$SYS/monitor/Clients"));
  CHECK(matched_by("$", "$"));
  // Only the first level is special.
  CHECK(matched_by("a/+", "a/$SYS"));
  CHECK(matched_by("a/#", "a/$SYS/x"));
  CHECK(matched_by("#", "a/$"));
}

TEST_CASE("overlapping subscriptions are each reported", "[topic][trie]") {
  trie_type trie;
  trie.insert("a/b", 1, 1);
  trie.insert("a/+", 1, 2);
  trie.insert("a/#", 1, 3);
  trie.insert("#", 1, 4);
  trie.insert("+/b", 2, 5);
  trie.insert("+/+", 3, 6);
  trie.insert("a/b/#", 4, 7);
  trie.insert("a/b/+", 5, 8);  // not a match: one level too many
  trie.insert("a/c", 6, 9);
  CHECK(matches(trie, "a/b") ==
        std::vector<std::pair<int, int>>{{1, 1}, {1, 2}, {1, 3}, {1, 4}, {2, 5}, {3, 6}, {4, 7}});
  CHECK(matches(trie, "$a/b").empty());
}

namespace {

// splitmix64: the same sequence on every standard library (std distributions are not portable).



// Straight from the specification's text, level by level.

struct diff_config {
  const char* name;
  std::vector<std::string> alphabet;  // literal levels
  std::size_t max_levels;
  std::size_t keys;
  int ops;
};

std::string random_filter(rng& r, const diff_config& c) {
  for (;;) {
    const std::size_t levels = 1 + r.below(c.max_levels);
    std::string f;
    for (std::size_t i = 0; i < levels; ++i) {
      if (i) f += '/';
      if (i + 1 == levels && r.chance(15)) {
        f += '#';
      } else if (r.chance(20)) {
        f += '+';
      } else {
        f += c.alphabet[r.below(c.alphabet.size())];
      }
    }
    if (!f.empty()) return f;  // one empty level is the empty filter [MQTT-4.7.3-1]
  }
}

std::string random_topic(rng& r, const diff_config& c) {
  for (;;) {
    const std::size_t levels = 1 + r.below(c.max_levels + 1);
    std::string t;
    for (std::size_t i = 0; i < levels; ++i) {
      if (i) t += '/';
      t += c.alphabet[r.below(c.alphabet.size())];
    }
    if (!t.empty()) return t;
  }
}

void run_differential(const diff_config& c, std::uint64_t seed) {
  INFO("config " << c.name << ", seed " << seed << " (rerun with MQTTBROKER_SEED=" << seed << ")");
  rng r{seed};
  trie_type trie;
  struct entry {
    int value;
    std::vector<std::string> levels;
  };
  std::map<std::pair<std::string, int>, entry> model;
  std::vector<std::pair<std::string, int>> live;  // the model's keys, for picking one at random
  int next_value = 0;
  std::size_t match_checks = 0;
  std::size_t nonempty_matches = 0;

  const auto erase_live = [&](std::size_t i) {
    const auto victim = live[i];
    INFO("erase " << victim.first << " key " << victim.second);
    REQUIRE(trie.erase(victim.first, victim.second));
    model.erase(victim);
    live[i] = live.back();
    live.pop_back();
  };

  for (int op = 0; op < c.ops; ++op) {
    const std::size_t dice = r.below(100);
    if (dice < 40) {
      const std::string f = random_filter(r, c);
      REQUIRE_FALSE(topic::validate_topic_filter(f));
      const int key = static_cast<int>(r.below(c.keys));
      const int value = ++next_value;
      const auto id = std::make_pair(f, key);
      const bool fresh = model.find(id) == model.end();
      INFO("insert " << f << " key " << key);
      REQUIRE(trie.insert(f, key, value) == fresh);
      if (fresh) live.push_back(id);
      model[id] = entry{value, split_levels(f)};
    } else if (dice < 70) {
      if (!live.empty() && r.chance(80)) {
        erase_live(r.below(live.size()));
      } else {
        const std::string f = random_filter(r, c);
        const int key = static_cast<int>(r.below(c.keys));
        const auto id = std::make_pair(f, key);
        const auto it = std::find(live.begin(), live.end(), id);
        if (it != live.end()) {
          erase_live(static_cast<std::size_t>(it - live.begin()));
        } else {
          INFO("erase absent " << f << " key " << key);
          REQUIRE_FALSE(trie.erase(f, key));
        }
      }
    } else {
      const std::string t = random_topic(r, c);
      REQUIRE_FALSE(topic::validate_topic_name(t));
      const auto name = split_levels(t);
      std::vector<std::pair<int, int>> expected;
      for (const auto& [id, e] : model)
        if (brute_match(e.levels, name)) expected.emplace_back(id.second, e.value);
      std::sort(expected.begin(), expected.end());
      INFO("match " << t);
      REQUIRE(matches(trie, t) == expected);
      ++match_checks;
      if (!expected.empty()) ++nonempty_matches;
    }
    if (op % 1000 == 999) {
      REQUIRE(trie.size() == model.size());
      std::vector<std::tuple<std::string, int, int>> expected;
      for (const auto& [id, e] : model) expected.emplace_back(id.first, id.second, e.value);
      REQUIRE(all_subscriptions(trie) == expected);  // model is ordered like the sorted result
      for (const auto& [id, e] : model) {
        const int* v = trie.find(id.first, id.second);
        REQUIRE(v != nullptr);
        REQUIRE(*v == e.value);
      }
    }
  }
  // Enough of the checks must have found something, or the test proves little.
  CHECK(nonempty_matches * 4 > match_checks);
  while (!live.empty()) erase_live(r.below(live.size()));
  CHECK(trie.empty());
  CHECK(trie.node_count() == 0);
}

}  // namespace

TEST_CASE("trie agrees with a brute-force matcher under random inserts and erases",
          "[topic][trie][differential][MQTT-4.7.1-2][MQTT-4.7.1-3][MQTT-4.7.2-1]") {
  const std::uint64_t seed = test_seed();
  std::printf("topic differential test seed: %llu (override with MQTTBROKER_SEED)\n",
              static_cast<unsigned long long>(seed));
  std::vector<std::string> wide;  // more than 8 literal children per node: the hashed layout
  for (int i = 0; i < 22; ++i) wide.push_back("w" + std::to_string(i));
  wide.push_back("");
  wide.push_back("$SYS");
  const std::vector<diff_config> configs = {
      // Deep and overlapping: empty levels, `$` levels, every wildcard position.
      {"narrow", {"a", "b", "", "$x"}, 4, 4, 12000},
      // Wide fan-out: child tables grow past the packed form and shrink back.
      {"wide", wide, 3, 3, 12000},
      // Few filters, many subscribers each: subscriber sets switch to hash maps and back.
      {"crowded", {"a", "$a", ""}, 2, 40, 12000},
  };
  for (std::size_t i = 0; i < configs.size(); ++i) run_differential(configs[i], seed + i);
}

namespace {

/// Every name of up to `depth` levels over `levels`: a universe in which each filter of fewer
/// levels has witnesses for all it matches (a level no filter names stands in for any other).
std::vector<std::string> all_names(const std::vector<std::string>& levels, std::size_t depth) {
  std::vector<std::string> out, last{""};
  for (std::size_t d = 1; d <= depth; ++d) {
    std::vector<std::string> next;
    for (const auto& prefix : last)
      for (const auto& l : levels) next.push_back(d == 1 ? l : prefix + "/" + l);
    out.insert(out.end(), next.begin(), next.end());
    last = std::move(next);
  }
  return out;
}

std::string random_filter(rng& r, const std::vector<std::string>& levels, std::size_t max_depth) {
  const std::size_t depth = 1 + r.below(max_depth);
  std::string f;
  for (std::size_t i = 0; i < depth; ++i) {
    if (i != 0) f += '/';
    if (i + 1 == depth && r.chance(20)) {
      f += '#';
    } else if (r.chance(30)) {
      f += '+';
    } else {
      f += levels[r.below(levels.size())];
    }
  }
  return f;
}

}  // namespace

TEST_CASE("matches, covers and intersects agree with the specification's matching over every name",
          "[topic][match][differential][MQTT-4.7.1-2][MQTT-4.7.1-3][MQTT-4.7.2-1]") {
  const std::uint64_t seed = test_seed();
  rng r{seed};
  const std::vector<std::string> filter_levels{"a", "b", "", "$s"};
  // "z" appears in no filter: the witness that `+` matches more than the literals around it.
  const std::vector<std::string> universe = all_names({"a", "b", "", "$s", "z"}, 4);
  for (int round = 0; round < 400; ++round) {
    const std::string x = random_filter(r, filter_levels, 3);
    const std::string y = random_filter(r, filter_levels, 3);
    bool x_within_y = true, y_within_x = true, common = false;
    for (const std::string& name : universe) {
      const bool mx = brute_match(split_levels(x), split_levels(name));
      const bool my = brute_match(split_levels(y), split_levels(name));
      REQUIRE(topic::matches(x, name) == mx);
      x_within_y = x_within_y && (!mx || my);
      y_within_x = y_within_x && (!my || mx);
      common = common || (mx && my);
    }
    INFO("seed " << seed << ", round " << round << ": " << x << " and " << y);
    CHECK(topic::covers(y, x) == x_within_y);
    CHECK(topic::covers(x, y) == y_within_x);
    CHECK(topic::intersects(x, y) == common);
    CHECK(topic::intersects(y, x) == common);
  }
}

TEST_CASE("covers and intersects: the cases an ACL meets", "[topic][match][MQTT-4.7.2-1]") {
  CHECK(topic::covers("sensors/#", "sensors/+/temp"));
  CHECK(topic::covers("sensors/#", "sensors"));  // "#" takes the parent level too
  CHECK_FALSE(topic::covers("sensors/#", "#"));
  CHECK(topic::covers("+/x", "a/x"));
  CHECK_FALSE(topic::covers("a/x", "+/x"));
  CHECK_FALSE(topic::covers("#", "$SYS/broker/uptime"));  // wildcards do not reach $ names
  CHECK(topic::covers("$SYS/#", "$SYS/broker/+"));
  CHECK(topic::intersects("#", "sensors/a"));
  CHECK(topic::intersects("a/+/c", "+/b/#"));
  CHECK_FALSE(topic::intersects("a/b", "a/c"));
  CHECK_FALSE(topic::intersects("+/x", "$SYS/x"));
  CHECK(topic::intersects("a/#", "a"));
  CHECK_FALSE(topic::intersects("a/+", "a"));
}
