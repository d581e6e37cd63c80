#include <mqttbroker/router/subscriptions.hpp>
#include <mqttbroker/router/retained.hpp>
#include <mqttbroker/router/shared.hpp>

#include "catch.hpp"
#include "topic_model.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

namespace router = mqttbroker::router;
namespace codec = mqttbroker::codec;
using mqttbroker::message;
using mqttbroker::message_ptr;

namespace {

using test_support::brute_match;
using test_support::rng;
using test_support::split_levels;
using test_support::test_seed;

using router_type = router::subscription_router<int>;

router::subscription sub(codec::qos q, std::uint32_t id = 0, bool no_local = false, bool rap = false) {
  router::subscription s;
  s.options.max_qos = q;
  s.options.no_local = no_local;
  s.options.retain_as_published = rap;
  s.identifier = id;
  return s;
}

constexpr auto q0 = codec::qos::at_most_once;
constexpr auto q1 = codec::qos::at_least_once;
constexpr auto q2 = codec::qos::exactly_once;

// One subscriber's delivery, copied out of the callback.
struct got {
  codec::qos qos_level = q0;
  bool retain_as_published = false;
  std::vector<std::uint32_t> identifiers;

  friend bool operator==(const got& a, const got& b) {
    return a.qos_level == b.qos_level && a.retain_as_published == b.retain_as_published &&
           a.identifiers == b.identifiers;
  }
};

// Routes and collects the deliveries. Fails if a subscriber is reported twice: route() merges.
template <class Route>
std::map<int, got> collect(Route&& route) {
  std::map<int, got> out;
  bool once = true;
  route([&](const int& s, const router::delivery& d) {
    got g{d.qos_level, d.retain_as_published, {d.identifiers.begin(), d.identifiers.end()}};
    once = out.emplace(s, std::move(g)).second && once;
  });
  CHECK(once);
  return out;
}

std::map<int, got> route_all(router_type& r, std::string_view topic_name, const int* publisher = nullptr) {
  return collect([&](auto&& f) { r.route(topic_name, publisher, f); });
}

message_ptr msg(std::string_view topic_name, std::string_view payload) {
  return message::make(topic_name, payload, q1, true);
}

std::vector<std::string> matched_topics(const router::retained_store& store, std::string_view filter) {
  std::vector<std::string> out;
  store.match(filter, [&](const message_ptr& m) { out.emplace_back(m->topic()); });
  std::sort(out.begin(), out.end());
  return out;
}

using strings = std::vector<std::string>;

// splitmix64: the same sequence on every standard library (std distributions are not portable).



// The matching rules read straight from the specification, level by level.

std::string join(const strings& levels) {
  std::string s;
  for (std::size_t i = 0; i < levels.size(); ++i) {
    if (i != 0) s += '/';
    s += levels[i];
  }
  return s;
}

// A valid Topic Name: never empty [MQTT-4.7.3-1], so a lone empty level is redrawn.
std::string random_name(rng& r, const strings& alphabet, std::size_t max_levels) {
  for (;;) {
    strings levels(1 + r.below(max_levels));
    for (auto& l : levels) l = alphabet[r.below(alphabet.size())];
    std::string name = join(levels);
    if (!name.empty()) return name;
  }
}

// A valid Topic Filter: non-empty, `+` whole levels, `#` only as the whole last level.
std::string random_filter(rng& r, const strings& alphabet, std::size_t max_levels) {
  for (;;) {
    strings levels(1 + r.below(max_levels));
    for (auto& l : levels) l = r.chance(30) ? "+" : alphabet[r.below(alphabet.size())];
    if (r.chance(30)) levels.back() = "#";
    std::string filter = join(levels);
    if (!filter.empty()) return filter;
  }
}

std::uint64_t printed_seed(const char* what) {
  const std::uint64_t seed = test_seed();
  std::printf("%s seed: %llu (override with MQTTBROKER_SEED)\n", what, static_cast<unsigned long long>(seed));
  return seed;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// subscription_router

TEST_CASE("overlapping subscriptions are delivered once at the highest QoS",
          "[router][MQTT-3.3.5-1][MQTT-3.3.4-2]") {
  router_type r;
  CHECK(r.subscribe("a/#", 1, sub(q0)));
  CHECK(r.subscribe("a/+", 1, sub(q2)));
  CHECK(r.subscribe("a/b", 1, sub(q1)));
  CHECK(r.subscribe("a/b", 2, sub(q1)));
  CHECK(r.size() == 4);

  auto out = route_all(r, "a/b");
  REQUIRE(out.size() == 2);
  CHECK(out[1].qos_level == q2);
  CHECK(out[2].qos_level == q1);

  // Only a/# matches a/b/c, and a/# also matches its parent level a.
  out = route_all(r, "a/b/c");
  REQUIRE(out.size() == 1);
  CHECK(out[1].qos_level == q0);
  CHECK(route_all(r, "a").size() == 1);
  CHECK(route_all(r, "b").empty());
}

TEST_CASE("Subscription Identifiers of all matching subscriptions are merged",
          "[router][MQTT-3.3.4-3][MQTT-3.3.4-4]") {
  router_type r;
  r.subscribe("x/y", 7, sub(q0, 30));
  r.subscribe("x/+", 7, sub(q0, 10));
  r.subscribe("+/y", 7, sub(q1));  // no identifier: contributes none
  r.subscribe("#", 7, sub(q0, 10));  // the same identifier twice is kept twice
  r.subscribe("x/#", 7, sub(q0, 20));
  r.subscribe("+/+", 7, sub(q0, 5));
  r.subscribe("x/y/#", 7, sub(q0, 268435455));  // the largest Variable Byte Integer

  auto out = route_all(r, "x/y");
  REQUIRE(out.size() == 1);
  // Six identifiers: past the inline buffer of four. Ascending, so the order is reproducible.
  CHECK(out[7].identifiers == std::vector<std::uint32_t>{5, 10, 10, 20, 30, 268435455});
  CHECK(out[7].qos_level == q1);

  r.unsubscribe("x/y/#", 7);
  r.unsubscribe("+/+", 7);
  r.unsubscribe("x/#", 7);
  out = route_all(r, "x/y");
  CHECK(out[7].identifiers == std::vector<std::uint32_t>{10, 10, 30});

  // A single match takes the no-sort path; its identifier still travels.
  out = route_all(r, "x/z/w");
  REQUIRE(out.size() == 1);
  CHECK(out[7].identifiers == std::vector<std::uint32_t>{10});
  r.unsubscribe("#", 7);
  CHECK(route_all(r, "x/z/w").empty());
}

TEST_CASE("Retain As Published is set if any matching subscription has it",
          "[router][MQTT-3.3.1-12][MQTT-3.3.1-13]") {
  router_type r;
  r.subscribe("t/#", 1, sub(q0, 0, false, true));
  r.subscribe("t/1", 1, sub(q0));
  r.subscribe("t/1", 2, sub(q0));
  auto out = route_all(r, "t/1");
  CHECK(out[1].retain_as_published);
  CHECK_FALSE(out[2].retain_as_published);
}

TEST_CASE("No Local suppresses only the publisher's own no-local subscriptions", "[router][MQTT-3.8.3-3]") {
  router_type r;
  r.subscribe("chat/#", 1, sub(q2, 11, true));  // no_local
  r.subscribe("chat/room", 1, sub(q1, 12));
  r.subscribe("chat/#", 2, sub(q1, 21, true));  // no_local, and nothing else
  r.subscribe("chat/room", 3, sub(q0));

  const int one = 1;
  const int two = 2;
  const int four = 4;

  SECTION("published by 1: its no-local subscription does not match, its other one does") {
    auto out = route_all(r, "chat/room", &one);
    REQUIRE(out.size() == 3);
    CHECK(out[1] == got{q1, false, {12}});
    CHECK(out[2] == got{q1, false, {21}});
    CHECK(out[3] == got{q0, false, {}});
  }
  SECTION("published by 2: it receives nothing, 1 gets both subscriptions merged") {
    auto out = route_all(r, "chat/room", &two);
    REQUIRE(out.size() == 2);
    CHECK(out[1] == got{q2, false, {11, 12}});
    CHECK(out.count(2) == 0);
  }
  SECTION("published by a non-subscriber or with no publisher: everyone") {
    CHECK(route_all(r, "chat/room", &four).size() == 3);
    CHECK(route_all(r, "chat/room", nullptr).size() == 3);
  }
  SECTION("the single-match path honours No Local too") {
    CHECK(route_all(r, "chat/other/x", &one).size() == 1);  // only 2's chat/#
    CHECK(route_all(r, "chat/other/x", &two).size() == 1);  // only 1's chat/#
    r.unsubscribe("chat/#", 1);
    CHECK(route_all(r, "chat/other/x", &two).empty());
  }
}

TEST_CASE("subscribing to the same filter again replaces the subscription", "[router][MQTT-3.8.4-3]") {
  router_type r;
  CHECK(r.subscribe("a/+", 1, sub(q2, 4)));
  CHECK_FALSE(r.subscribe("a/+", 1, sub(q0, 5, true, true)));
  CHECK(r.size() == 1);
  const router::subscription* s = r.find("a/+", 1);
  REQUIRE(s != nullptr);
  CHECK(*s == sub(q0, 5, true, true));
  CHECK(r.find("a/+", 2) == nullptr);
  CHECK(r.find("a/#", 1) == nullptr);

  auto out = route_all(r, "a/b");
  CHECK(out[1] == got{q0, true, {5}});
}

TEST_CASE("unsubscribe removes exactly the named filter", "[router][MQTT-3.10.4-1]") {
  router_type r;
  r.subscribe("a/+", 1, sub(q1));
  r.subscribe("a/#", 1, sub(q1));
  r.subscribe("a/b", 1, sub(q1));
  r.subscribe("a/+", 2, sub(q1));
  CHECK(r.size() == 4);

  // Character by character: a/b is not a/+, and another subscriber's filter is not ours.
  CHECK_FALSE(r.unsubscribe("a/c", 1));
  CHECK_FALSE(r.unsubscribe("a/+", 3));
  CHECK(r.unsubscribe("a/b", 1));
  CHECK_FALSE(r.unsubscribe("a/b", 1));
  CHECK(r.find("a/+", 1) != nullptr);
  CHECK(route_all(r, "a/b").size() == 2);

  CHECK(r.unsubscribe("a/+", 1));
  CHECK(r.unsubscribe("a/#", 1));
  auto out = route_all(r, "a/b");
  REQUIRE(out.size() == 1);
  CHECK(out.count(2) == 1);

  CHECK(r.unsubscribe("a/+", 2));
  CHECK(r.empty());
  CHECK(r.node_count() == 0);  // pruned
  CHECK(route_all(r, "a/b").empty());
}

TEST_CASE("route reaches many subscribers, each exactly once", "[router][MQTT-3.3.5-1][MQTT-3.3.4-2]") {
  router_type r;
  const int n = 10000;
  for (int i = 0; i < n; ++i) {
    r.subscribe("fan/out", i, sub(q0, 1));
    if (i % 2 == 0) r.subscribe("fan/#", i, sub(q1, 2));
    if (i % 3 == 0) r.subscribe("+/out", i, sub(q2));
  }
  auto out = route_all(r, "fan/out");  // collect() checks that each is reported once
  REQUIRE(out.size() == static_cast<std::size_t>(n));
  for (const auto& [s, g] : out) {
    const codec::qos want = s % 3 == 0 ? q2 : s % 2 == 0 ? q1 : q0;
    REQUIRE(g.qos_level == want);
    REQUIRE(g.identifiers == (s % 2 == 0 ? std::vector<std::uint32_t>{1, 2} : std::vector<std::uint32_t>{1}));
  }
  CHECK(route_all(r, "fan/in").size() == static_cast<std::size_t>(n / 2));
}

TEST_CASE("router: leading wildcards do not match $-topics", "[router][MQTT-4.7.2-1]") {
  router_type r;
  r.subscribe("#", 1, sub(q0));
  r.subscribe("+/info", 2, sub(q0));
  r.subscribe("$SYS/#", 3, sub(q0));
  r.subscribe("$SYS/+", 4, sub(q0));
  auto out = route_all(r, "$SYS/info");
  CHECK(out.count(1) == 0);
  CHECK(out.count(2) == 0);
  CHECK(out.count(3) == 1);
  CHECK(out.count(4) == 1);
  CHECK(route_all(r, "a/info").size() == 2);
  CHECK(route_all(r, "a/$SYS").size() == 1);  // only the first level counts
}

TEST_CASE("a $share/ filter is stored verbatim until shared subscriptions exist", "[router][shared]") {
  router_type r;
  CHECK(r.subscribe("$share/g/a/b", 1, sub(q1)));
  CHECK(r.find("$share/g/a/b", 1) != nullptr);
  CHECK(route_all(r, "a/b").empty());
  CHECK(route_all(r, "$share/g/a/b").size() == 1);
  CHECK(r.unsubscribe("$share/g/a/b", 1));
}

TEST_CASE("for_each lists every subscription", "[router]") {
  router_type r;
  r.subscribe("a/#", 1, sub(q1, 3));
  r.subscribe("a/#", 2, sub(q2));
  r.subscribe("+", 1, sub(q0));
  std::set<std::tuple<std::string, int, std::uint32_t>> seen;
  r.for_each([&](std::string_view f, const int& s, const router::subscription& v) {
    seen.emplace(std::string(f), s, v.identifier);
  });
  CHECK(seen == std::set<std::tuple<std::string, int, std::uint32_t>>{{"+", 1, 0}, {"a/#", 1, 3}, {"a/#", 2, 0}});
  r.clear();
  CHECK(r.empty());
  CHECK(r.node_count() == 0);
}

TEST_CASE("route does not allocate in the steady state", "[router][performance]") {
  // A counting global operator new would count every test in the executable, so this observes the
  // router's buffers instead: route() allocates only when they grow, and they never shrink.
  router_type r;
  for (int i = 0; i < 300; ++i) r.subscribe("s/+", i, sub(q0, 1));
  for (int i = 0; i < 300; i += 7) r.subscribe("s/#", i, sub(q1, 2));
  r.subscribe("s/x", 5, sub(q2, 3));
  r.subscribe("s/+/#", 5, sub(q2, 4));
  r.subscribe("+/x", 5, sub(q2, 5));
  r.subscribe("s/x/#", 5, sub(q2, 6));  // subscriber 5 has six identifiers: the spill buffer
  r.subscribe("t", 1, sub(q0, 1));

  std::size_t calls = 0;
  const auto count = [&](const int&, const router::delivery&) { ++calls; };
  const int one = 1;
  r.route("s/x", nullptr, count);  // warm up with the largest fan-out
  const std::size_t warm = r.scratch_capacity();
  CHECK(warm >= 300 * sizeof(int));
  for (int round = 0; round < 100; ++round) {
    r.route("s/x", nullptr, count);
    r.route("s/y", &one, count);
    r.route("t", nullptr, count);  // the single-match path
    r.route("none", nullptr, count);
  }
  CHECK(calls == 101 * 300 + 100 * 300 + 100);
  CHECK(r.scratch_capacity() == warm);

  // The same for a caller-owned scratch (the const overload for concurrent routing).
  router_type::route_scratch scratch;
  const router_type& cr = r;
  cr.route("s/x", nullptr, scratch, count);
  const std::size_t warm2 = scratch.capacity();
  for (int round = 0; round < 100; ++round) cr.route("s/x", nullptr, scratch, count);
  CHECK(scratch.capacity() == warm2);
}

namespace {

struct router_diff_config {
  const char* name;
  strings alphabet;
  std::size_t levels;
  int subscribers;
  int steps;
};

struct model_entry {
  strings levels;
  router::subscription value;
};

struct router_diff_stats {
  std::size_t merged_few = 0;   // merged deliveries in routes of <= 16 matches (pairwise merge)
  std::size_t merged_many = 0;  // merged deliveries in routes of more matches (hash-table merge)
};

void run_router_differential(const router_diff_config& c, std::uint64_t seed, router_diff_stats& stats) {
  INFO("config " << c.name << ", seed " << seed << " (rerun with MQTTBROKER_SEED=" << seed << ")");
  rng r{seed};
  router_type router;
  router_type::route_scratch scratch;
  std::map<std::pair<std::string, int>, model_entry> model;  // the brute-force reference
  std::vector<std::string> filters;                            // a pool, so filters overlap and repeat
  for (int i = 0; i < 400; ++i) filters.push_back(random_filter(r, c.alphabet, c.levels));

  std::size_t routes = 0;
  std::size_t merged = 0;  // deliveries that merged more than one subscription
  std::size_t delivered = 0;
  for (int step = 0; step < c.steps; ++step) {
    const std::size_t op = r.below(100);
    if (op < 45) {  // subscribe or replace
      const std::string& f = filters[r.below(filters.size())];
      const int s = static_cast<int>(r.below(static_cast<std::size_t>(c.subscribers)));
      const auto qos = static_cast<codec::qos>(r.below(3));
      const auto id = static_cast<std::uint32_t>(r.chance(40) ? 0 : 1 + r.below(6));
      const router::subscription v = sub(qos, id, r.chance(25), r.chance(25));
      const bool fresh = model.count({f, s}) == 0;
      REQUIRE(router.subscribe(f, s, v) == fresh);
      model[{f, s}] = model_entry{split_levels(f), v};
    } else if (op < 65) {  // unsubscribe, mostly something that exists
      if (!model.empty() && r.chance(80)) {
        auto it = model.begin();
        std::advance(it, static_cast<std::ptrdiff_t>(r.below(model.size())));
        REQUIRE(router.unsubscribe(it->first.first, it->first.second));
        model.erase(it);
      } else {
        const std::string& f = filters[r.below(filters.size())];
        const int s = static_cast<int>(r.below(static_cast<std::size_t>(c.subscribers)));
        REQUIRE(router.unsubscribe(f, s) == (model.erase({f, s}) == 1));
      }
    } else {  // route a random name from a random publisher (or none) and compare
      const std::string name = random_name(r, c.alphabet, c.levels + 1);
      const strings name_levels = split_levels(name);
      const int pub_value = static_cast<int>(r.below(static_cast<std::size_t>(c.subscribers)));
      const int* pub = r.chance(70) ? &pub_value : nullptr;
      std::map<int, got> want;
      std::map<int, int> matches_per_subscriber;
      for (const auto& [key, e] : model) {
        if (!brute_match(e.levels, name_levels)) continue;
        if (pub != nullptr && e.value.options.no_local && key.second == *pub) continue;
        got& g = want[key.second];
        g.qos_level = std::max(g.qos_level, e.value.options.max_qos);
        g.retain_as_published = g.retain_as_published || e.value.options.retain_as_published;
        if (e.value.identifier != 0) g.identifiers.push_back(e.value.identifier);
        ++matches_per_subscriber[key.second];
      }
      for (auto& [s, g] : want) std::sort(g.identifiers.begin(), g.identifiers.end());
      INFO("topic " << name << ", publisher " << (pub ? std::to_string(*pub) : std::string("none")));
      const auto have = route_all(router, name, pub);
      REQUIRE(have.size() == want.size());
      REQUIRE(have == want);
      // The const overload with a caller-owned scratch agrees.
      const router_type& cr = router;
      REQUIRE(collect([&](auto&& f) { cr.route(name, pub, scratch, f); }) == want);
      ++routes;
      delivered += want.size();
      std::size_t total = 0;
      std::size_t merged_here = 0;
      for (const auto& m : matches_per_subscriber) {
        total += static_cast<std::size_t>(m.second);
        if (m.second > 1) ++merged_here;
      }
      merged += merged_here;
      (total <= 16 ? stats.merged_few : stats.merged_many) += merged_here;
    }
    REQUIRE(router.size() == model.size());
    if (step % 64 == 0) {  // find agrees with the model
      for (const auto& [key, e] : model) {
        const router::subscription* v = router.find(key.first, key.second);
        REQUIRE(v != nullptr);
        REQUIRE(*v == e.value);
      }
    }
  }
  // The run must have exercised what it claims to: deliveries, and merged ones among them.
  CHECK(delivered > routes);
  CHECK(merged > 0);
  while (!model.empty()) {
    auto it = model.begin();
    REQUIRE(router.unsubscribe(it->first.first, it->first.second));
    model.erase(it);
  }
  CHECK(router.empty());
  CHECK(router.node_count() == 0);
}

}  // namespace

TEST_CASE("route agrees with a brute-force matcher under random subscribes and unsubscribes",
          "[router][differential][MQTT-3.3.4-2][MQTT-3.3.4-3][MQTT-3.8.3-3][MQTT-3.8.4-3][MQTT-4.7.2-1]") {
  const std::uint64_t seed = printed_seed("router differential test");
  strings wide;  // more than 8 literal children per node
  for (int i = 0; i < 20; ++i) wide.push_back("w" + std::to_string(i));
  wide.push_back("");
  wide.push_back("$SYS");
  const std::vector<router_diff_config> configs = {
      // Deep and overlapping filters, empty levels and $-levels, few subscribers: lots of merging.
      {"narrow", {"a", "b", "", "$x"}, 4, 12, 6000},
      // Wide trees.
      {"wide", wide, 3, 50, 4000},
      // Few filters, many subscribers: big subscriber sets and big fan-outs to sort.
      {"crowded", {"a", "$a", ""}, 2, 400, 4000},
  };
  router_diff_stats stats;
  for (std::size_t i = 0; i < configs.size(); ++i) run_router_differential(configs[i], seed + i, stats);
  // Both merge strategies of route() were exercised with real overlaps.
  CHECK(stats.merged_few > 0);
  CHECK(stats.merged_many > 0);
}

namespace {
struct colliding_hash {  // every subscriber in one probe run: the worst case of the merge table
  std::size_t operator()(int) const noexcept { return 42; }
};
}  // namespace

TEST_CASE("route merges correctly even when every subscriber hashes alike", "[router]") {
  router::subscription_router<int, colliding_hash> r;
  for (int i = 0; i < 100; ++i) {
    r.subscribe("c/+", i, sub(q0, 1));
    if (i % 2 == 0) r.subscribe("c/#", i, sub(q1, 2));
  }
  std::map<int, got> out = collect([&](auto&& f) { r.route("c/d", nullptr, f); });
  REQUIRE(out.size() == 100);
  for (const auto& [s, g] : out) {
    REQUIRE(g.qos_level == (s % 2 == 0 ? q1 : q0));
    REQUIRE(g.identifiers == (s % 2 == 0 ? std::vector<std::uint32_t>{1, 2} : std::vector<std::uint32_t>{1}));
  }
}

// ---------------------------------------------------------------------------------------------
// retained_store

TEST_CASE("retained: set stores, replaces and finds by topic", "[router][retained][MQTT-3.3.1-5]") {
  router::retained_store store;
  CHECK(store.empty());
  CHECK_FALSE(store.find("a/b"));

  const message_ptr m1 = msg("a/b", "one");
  store.set(m1);
  CHECK(store.size() == 1);
  CHECK(store.find("a/b") == m1);
  CHECK_FALSE(store.find("a"));  // an inner node holds no message
  CHECK(store.payload_bytes() == 3 + 3);

  const message_ptr m2 = msg("a/b", "second");
  store.set(m2);
  CHECK(store.size() == 1);
  CHECK(store.find("a/b") == m2);
  CHECK(store.payload_bytes() == 3 + 6);
  CHECK(m1.use_count() == 1);  // the replaced message was released

  store.set(msg("a", "p"));
  CHECK(store.size() == 2);
  CHECK(store.payload_bytes() == 9 + 2);
  CHECK(store.find("a")->payload() == "p");
}

TEST_CASE("retained: a zero-length payload deletes and is not stored",
          "[router][retained][MQTT-3.3.1-6][MQTT-3.3.1-7][MQTT-3.3.1-10][MQTT-3.3.1-11]") {
  router::retained_store store;
  store.set(msg("a/b/c", "x"));
  store.set(msg("a/b", "y"));
  CHECK(store.size() == 2);

  store.set(msg("a/b/c", ""));
  CHECK(store.size() == 1);
  CHECK_FALSE(store.find("a/b/c"));
  CHECK(matched_topics(store, "#") == strings{"a/b"});
  CHECK(store.node_count() == 2);  // a, a/b: the leaf c was pruned

  // Deleting what is not there creates nothing.
  store.set(msg("x/y/z", ""));
  CHECK(store.size() == 1);
  CHECK(store.node_count() == 2);

  store.set(msg("a/b", ""));
  CHECK(store.empty());
  CHECK(store.node_count() == 0);
  CHECK(store.payload_bytes() == 0);
}

TEST_CASE("retained: erase, clear and pruning return memory", "[router][retained]") {
  router::retained_store store;
  CHECK_FALSE(store.erase("a"));
  store.set(msg("a", "1"));
  store.set(msg("a/b/c/d", "2"));
  store.set(msg("a/b/x", "3"));
  CHECK(store.node_count() == 5);  // a, b, c, d, x

  CHECK(store.erase("a/b/c/d"));
  CHECK(store.node_count() == 3);  // c and d gone; a/b stays for a/b/x
  CHECK_FALSE(store.erase("a/b/c/d"));
  CHECK_FALSE(store.erase("a/b"));  // a node without a message
  CHECK(store.erase("a"));
  CHECK(store.node_count() == 3);  // a still leads to a/b/x
  CHECK(store.erase("a/b/x"));
  CHECK(store.node_count() == 0);
  CHECK(store.size() == 0);
  CHECK(store.payload_bytes() == 0);

  const message_ptr kept = msg("k/1", "v");
  for (int i = 0; i < 100; ++i) store.set(msg("k/" + std::to_string(i), "v"));
  store.set(kept);
  CHECK(kept.use_count() == 2);
  CHECK(store.size() == 100);
  store.clear();
  CHECK(kept.use_count() == 1);
  CHECK(store.empty());
  CHECK(store.node_count() == 0);
  CHECK(store.payload_bytes() == 0);

  router::retained_store moved(std::move(store));
  moved.set(msg("m", "1"));
  router::retained_store other;
  other = std::move(moved);
  CHECK(other.size() == 1);
  CHECK(moved.empty());  // NOLINT(bugprone-use-after-move): a moved-from store is empty, and usable
  moved.set(msg("n", "1"));
  CHECK(moved.size() == 1);
}

TEST_CASE("retained: match follows the wildcard rules",
          "[router][retained][MQTT-4.7.2-1][MQTT-4.7.3-4]") {
  router::retained_store store;
  for (const char* t : {"sport", "sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking",
                        "sport/golf", "Sport/tennis", "/finance", "a//b", "a/", "$SYS/broker/uptime", "$SYS",
                        "a/$x"})
    store.set(msg(t, "p"));

  // `#` matches the parent level and everything below.
  CHECK(matched_topics(store, "sport/#") == strings{"sport", "sport/golf", "sport/tennis", "sport/tennis/player1",
                                                   "sport/tennis/player1/ranking"});
  CHECK(matched_topics(store, "sport/tennis/player1/#") ==
        strings{"sport/tennis/player1", "sport/tennis/player1/ranking"});
  // `+` matches exactly one level, an empty one included.
  CHECK(matched_topics(store, "sport/+") == strings{"sport/golf", "sport/tennis"});
  CHECK(matched_topics(store, "+/tennis") == strings{"Sport/tennis", "sport/tennis"});  // case-sensitive
  CHECK(matched_topics(store, "+/+") == strings{"/finance", "Sport/tennis", "a/", "a/$x", "sport/golf",
                                               "sport/tennis"});
  CHECK(matched_topics(store, "+") == strings{"sport"});
  CHECK(matched_topics(store, "a/+/b") == strings{"a//b"});
  CHECK(matched_topics(store, "a/+") == strings{"a/", "a/$x"});  // `$` matters at the first level only
  CHECK(matched_topics(store, "/+") == strings{"/finance"});
  CHECK(matched_topics(store, "sport/tennis/+/#") ==
        strings{"sport/tennis/player1", "sport/tennis/player1/ranking"});
  // [MQTT-4.7.2-1] leading wildcards do not reach $-topics; explicit `$` levels do.
  const strings all = matched_topics(store, "#");
  CHECK(all.size() == 10);
  CHECK(std::none_of(all.begin(), all.end(), [](const std::string& t) { return t.front() == '$'; }));
  CHECK(matched_topics(store, "+/broker/+").empty());
  CHECK(matched_topics(store, "$SYS/#") == strings{"$SYS", "$SYS/broker/uptime"});
  CHECK(matched_topics(store, "$SYS/+/uptime") == strings{"$SYS/broker/uptime"});
  CHECK(matched_topics(store, "$SYS") == strings{"$SYS"});
  // Literal levels.
  CHECK(matched_topics(store, "sport/tennis") == strings{"sport/tennis"});
  CHECK(matched_topics(store, "sport/tennis/player2").empty());
  CHECK(matched_topics(store, "nothing/#").empty());

  std::size_t n = 0;
  store.for_each([&](const message_ptr&) { ++n; });
  CHECK(n == store.size());  // for_each includes $-topics
  CHECK(n == 12);
}

namespace {

struct retained_diff_config {
  const char* name;
  strings alphabet;
  std::size_t levels;
  int steps;
};

void run_retained_differential(const retained_diff_config& c, std::uint64_t seed) {
  INFO("config " << c.name << ", seed " << seed << " (rerun with MQTTBROKER_SEED=" << seed << ")");
  rng r{seed};
  router::retained_store store;
  std::map<std::string, message_ptr> model;
  std::size_t model_bytes = 0;
  std::size_t matches = 0;
  std::size_t checks = 0;
  for (int step = 0; step < c.steps; ++step) {
    const std::size_t op = r.below(100);
    if (op < 50) {  // set, replace or delete by empty payload
      const std::string name = random_name(r, c.alphabet, c.levels);
      const std::string payload(r.chance(20) ? 0 : 1 + r.below(8), 'p');
      const message_ptr m = msg(name, payload);
      store.set(m);
      if (auto it = model.find(name); it != model.end()) {
        model_bytes -= name.size() + it->second->payload().size();
        model.erase(it);
      }
      if (!payload.empty()) {
        model.emplace(name, m);
        model_bytes += name.size() + payload.size();
      }
    } else if (op < 65) {  // erase
      const std::string name = random_name(r, c.alphabet, c.levels);
      const auto it = model.find(name);
      const bool had = it != model.end();
      if (had) {
        model_bytes -= name.size() + it->second->payload().size();
        model.erase(it);
      }
      REQUIRE(store.erase(name) == had);
    } else {  // match a random filter
      const std::string filter = random_filter(r, c.alphabet, c.levels);
      const strings filter_levels = split_levels(filter);
      std::vector<const message*> want;
      for (const auto& [name, m] : model)
        if (brute_match(filter_levels, split_levels(name))) want.push_back(m.get());
      std::vector<const message*> have;
      store.match(filter, [&](const message_ptr& m) { have.push_back(m.get()); });
      std::sort(want.begin(), want.end());
      std::sort(have.begin(), have.end());
      INFO("filter " << filter);
      REQUIRE(have == want);
      matches += want.size();
      ++checks;
      const std::string name = random_name(r, c.alphabet, c.levels);
      const auto it = model.find(name);
      REQUIRE(store.find(name) == (it == model.end() ? message_ptr() : it->second));
    }
    REQUIRE(store.size() == model.size());
    REQUIRE(store.payload_bytes() == model_bytes);
  }
  CHECK(matches > checks);  // the filters found something, or the test proves little
  std::size_t n = 0;
  store.for_each([&](const message_ptr& m) {
    ++n;
    REQUIRE(model.count(std::string(m->topic())) == 1);
  });
  CHECK(n == model.size());
  for (const auto& [name, m] : model) REQUIRE(store.erase(name));
  CHECK(store.empty());
  CHECK(store.node_count() == 0);
  CHECK(store.payload_bytes() == 0);
}

}  // namespace

TEST_CASE("retained match agrees with a brute-force matcher under random churn",
          "[router][retained][differential][MQTT-3.3.1-6][MQTT-3.3.1-7][MQTT-4.7.2-1]") {
  const std::uint64_t seed = printed_seed("retained differential test");
  strings wide;
  for (int i = 0; i < 20; ++i) wide.push_back("w" + std::to_string(i));
  wide.push_back("");
  wide.push_back("$SYS");
  const std::vector<retained_diff_config> configs = {
      {"narrow", {"a", "b", "", "$x"}, 4, 8000},
      {"wide", wide, 3, 8000},
  };
  for (std::size_t i = 0; i < configs.size(); ++i) run_retained_differential(configs[i], seed + 100 + i);
}

// ---- shared subscription groups

namespace {

using group_type = router::shared_group<int>;

/// Picks what it is told, to see choose() map a candidate back to its member.
struct fixed_pick {
  std::size_t index = 0;
  std::vector<std::uint64_t> seen;  // the candidates' keys, last call
  std::size_t pick(router::share_choice& c) {
    seen.clear();
    for (std::size_t i = 0; i < c.size(); ++i) seen.push_back(c.key(i));
    return index;
  }
};

}  // namespace

TEST_CASE("shared group: members join in order, a repeated join replaces the options, leave keeps the others' order",
          "[router][shared][MQTT-4.8.2-3]") {
  group_type g;
  CHECK(g.join(1, sub(codec::qos::at_most_once), 11));
  CHECK(g.join(2, sub(codec::qos::at_least_once, 5), 12));
  CHECK(g.join(3, sub(codec::qos::exactly_once), 13));
  CHECK_FALSE(g.join(2, sub(codec::qos::exactly_once, 6), 12));  // replaced, not added
  REQUIRE(g.size() == 3);
  REQUIRE(g.find(2) != nullptr);
  CHECK(g.find(2)->sub == sub(codec::qos::exactly_once, 6));
  CHECK(g.leave(1));
  CHECK_FALSE(g.leave(1));
  CHECK(g.members()[0].subscriber == 2);
  CHECK(g.members()[1].subscriber == 3);
  CHECK(g.leave(2));
  CHECK(g.leave(3));
  CHECK(g.empty());
  router::round_robin rr;
  CHECK(g.choose(rr, "", [](int) { return true; }) == nullptr);
}

TEST_CASE("shared group: the strategy sees the online members only, or every member when none is online",
          "[router][shared]") {
  group_type g;
  for (int s = 1; s <= 4; ++s) g.join(s, sub(codec::qos::at_most_once), std::uint64_t(100 + s));
  fixed_pick f;
  std::set<int> online{2, 4};
  auto is_online = [&](int s) { return online.count(s) != 0; };
  f.index = 1;
  CHECK(g.choose(f, "p", is_online)->subscriber == 4);
  CHECK(f.seen == std::vector<std::uint64_t>{102, 104});
  online.clear();
  f.index = 2;
  CHECK(g.choose(f, "p", is_online)->subscriber == 3);
  CHECK(f.seen.size() == 4);
  f.index = 9;  // out of range: wrapped, still a member
  CHECK(g.choose(f, "p", is_online)->subscriber == 2);
}

TEST_CASE("shared group: round robin takes the online members in turn; larger groups than the inline buffer work alike",
          "[router][shared]") {
  for (int n : {3, int(group_type::inline_candidates) + 7}) {
    group_type g;
    for (int s = 0; s < n; ++s) g.join(s, sub(codec::qos::at_most_once), std::uint64_t(s));
    router::round_robin rr;
    for (int i = 0; i < 2 * n; ++i) CHECK(g.choose(rr, "", [](int) { return true; })->subscriber == i % n);
    // Every other member offline: the rest in turn.
    std::vector<int> got;
    for (int i = 0; i < n; ++i) got.push_back(g.choose(rr, "", [](int s) { return s % 2 == 0; })->subscriber);
    for (int s : got) CHECK(s % 2 == 0);
    CHECK(std::set<int>(got.begin(), got.end()).size() == std::size_t((n + 1) / 2));
  }
}
