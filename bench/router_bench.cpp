// Router micro-benchmarks: route() over a fleet of subscriptions, fan-out of one topic, retained match.
//
//   g++ -O2 -std=c++17 -Iinclude bench/router_bench.cpp -lbenchmark -lpthread -o bench_router
//   ./bench_router
//
// The fleet is the one of trie_bench.cpp, so route() can be compared with the bare trie match:
// "site/{i%100}/device/{i}/temp" for each device i (subscriber i), and per site s a monitor
// (subscriber 10^9 + s) on "site/{s}/device/+/temp"; the monitors of sites 0-9 also hold
// "site/{s}/#", so a device topic there matches the monitor twice and route() merges the two.
// Allocations are counted by replacing operator new in this binary (never in the test binary,
// where it would count every test).

#include <mqttbroker/router/retained.hpp>
#include <mqttbroker/router/subscriptions.hpp>

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <vector>

// ---------------------------------------------------------------------------------------------
// Allocation counting (the ordinary forms only: nothing here is over-aligned). Relaxed atomics;
// the benchmarks run on one thread.

namespace {
std::atomic<std::size_t> g_allocs{0};

void* counted_alloc(std::size_t n) {
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) throw std::bad_alloc();
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return p;
}
}  // namespace

void* operator new(std::size_t n) { return counted_alloc(n); }
void* operator new[](std::size_t n) { return counted_alloc(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(n);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

namespace router = mqttbroker::router;
namespace codec = mqttbroker::codec;
using router_type = router::subscription_router<std::uint64_t>;

constexpr std::uint64_t monitor_base = 1'000'000'000;

router::subscription sub(codec::qos q, std::uint32_t id = 0) {
  router::subscription s;
  s.options.max_qos = q;
  s.identifier = id;
  return s;
}

std::string_view device_topic(char (&buf)[96], std::uint64_t i, const char* leaf = "temp") {
  const int n = std::snprintf(buf, sizeof buf, "site/%u/device/%llu/%s", static_cast<unsigned>(i % 100),
                              static_cast<unsigned long long>(i), leaf);
  return {buf, static_cast<std::size_t>(n)};
}

constexpr std::size_t wildcard_subscriptions = 112;

// The 112 wildcard subscriptions of trie_bench.cpp, held by per-site monitors.
void add_wildcards(router_type& r) {
  char buf[96];
  for (unsigned s = 0; s < 100; ++s) {
    const int n = std::snprintf(buf, sizeof buf, "site/%u/device/+/temp", s);
    r.subscribe(std::string_view(buf, static_cast<std::size_t>(n)), monitor_base + s, sub(codec::qos::at_least_once, 1));
  }
  for (unsigned s = 0; s < 10; ++s) {
    const int n = std::snprintf(buf, sizeof buf, "site/%u/#", s);
    r.subscribe(std::string_view(buf, static_cast<std::size_t>(n)), monitor_base + s, sub(codec::qos::exactly_once, 2));
  }
  r.subscribe("+/+/device/+/alarm", monitor_base + 500, sub(codec::qos::at_least_once));
  r.subscribe("$SYS/#", monitor_base + 501, sub(codec::qos::at_most_once));
}

// Built once per size and kept: the 1M router takes a while to build.
router_type& get_fleet(std::size_t n) {
  static std::map<std::size_t, std::unique_ptr<router_type>> cache;
  auto& slot = cache[n];
  if (slot) return *slot;
  slot = std::make_unique<router_type>();
  char buf[96];
  for (std::uint64_t i = 0; i < n - wildcard_subscriptions; ++i)
    slot->subscribe(device_topic(buf, i), i, sub(codec::qos::at_least_once));
  add_wildcards(*slot);
  return *slot;
}

// Random device topics (the device exists), preformatted so the timed loop only routes.
std::vector<std::string> random_topics(std::size_t devices, const char* leaf, std::size_t count = 4096) {
  std::vector<std::string> out;
  out.reserve(count);
  std::uint64_t x = 0x2545F4914F6CDD1Dull;
  char buf[96];
  for (std::size_t i = 0; i < count; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out.emplace_back(device_topic(buf, x % devices, leaf));
  }
  return out;
}

struct sink {
  std::size_t deliveries = 0;
  std::size_t qos_sum = 0;
  void operator()(const std::uint64_t&, const router::delivery& d) {
    ++deliveries;
    qos_sum += static_cast<std::size_t>(d.qos_level) + d.identifiers.size();
  }
};

// Heap allocations per route() after one warm-up pass, outside the timing loop (which allocates
// for its own bookkeeping). Expected 0: the steady state allocates nothing.
double allocs_per_route(router_type& r, const std::vector<std::string>& topics) {
  sink s;
  for (const auto& t : topics) r.route(t, nullptr, s);  // warm the scratch
  const std::size_t allocs0 = g_allocs.load();
  for (const auto& t : topics) r.route(t, nullptr, s);
  return static_cast<double>(g_allocs.load() - allocs0) / static_cast<double>(topics.size());
}

void route_loop(benchmark::State& state, const char* leaf) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  router_type& r = get_fleet(n);
  const std::vector<std::string> topics = random_topics(n - wildcard_subscriptions, leaf);
  state.counters["allocs_per_route"] = allocs_per_route(r, topics);
  sink s;
  std::size_t i = 0;
  for (auto _ : state) r.route(topics[i++ & 4095], nullptr, s);
  state.counters["deliveries"] = static_cast<double>(s.deliveries) / static_cast<double>(state.iterations());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));  // items/s = routes/s
  benchmark::DoNotOptimize(s.qos_sum);
}

// A device topic: its device (1 match) and its site's monitor (1 match; 2, merged, for sites 0-9).
void BM_route(benchmark::State& state) { route_loop(state, "temp"); }

// A topic mostly only "+/+/device/+/alarm" matches (one match, reported directly); in sites 0-9
// "site/{s}/#" matches too.
void BM_route_alarm(benchmark::State& state) { route_loop(state, "alarm"); }

// One topic, N subscribers on the same filter: the merge path at its widest.
void BM_fanout(benchmark::State& state) {
  const std::uint64_t n = static_cast<std::uint64_t>(state.range(0));
  router_type r;
  // Subscriber handles spread like pointers, not 0..n-1, so sorting sees no presorted input.
  for (std::uint64_t k = 0; k < n; ++k) r.subscribe("fan/out", k * 0x9E3779B97F4A7C15ull, sub(codec::qos::at_least_once));
  const std::vector<std::string> topics{"fan/out"};
  state.counters["allocs_per_route"] = allocs_per_route(r, topics);
  sink s;
  for (auto _ : state) r.route("fan/out", nullptr, s);
  state.counters["deliveries"] = static_cast<double>(s.deliveries) / static_cast<double>(state.iterations());
  state.SetItemsProcessed(static_cast<std::int64_t>(s.deliveries));  // items/s = deliveries/s
}

// As BM_fanout, but every subscriber also holds "fan/#": 2N matches merged into N deliveries.
void BM_fanout_overlap(benchmark::State& state) {
  const std::uint64_t n = static_cast<std::uint64_t>(state.range(0));
  router_type r;
  for (std::uint64_t k = 0; k < n; ++k) {
    r.subscribe("fan/out", k * 0x9E3779B97F4A7C15ull, sub(codec::qos::at_least_once, 1));
    r.subscribe("fan/#", k * 0x9E3779B97F4A7C15ull, sub(codec::qos::exactly_once, 2));
  }
  const std::vector<std::string> topics{"fan/out"};
  state.counters["allocs_per_route"] = allocs_per_route(r, topics);
  sink s;
  for (auto _ : state) r.route("fan/out", nullptr, s);
  state.counters["deliveries"] = static_cast<double>(s.deliveries) / static_cast<double>(state.iterations());
  state.SetItemsProcessed(static_cast<std::int64_t>(s.deliveries));
}

// ---------------------------------------------------------------------------------------------
// Retained messages

router::retained_store& get_retained(std::size_t n) {
  static std::map<std::size_t, std::unique_ptr<router::retained_store>> cache;
  auto& slot = cache[n];
  if (slot) return *slot;
  slot = std::make_unique<router::retained_store>();
  char buf[96];
  for (std::uint64_t i = 0; i < n; ++i)
    slot->set(mqttbroker::message::make(device_topic(buf, i), "21.5", codec::qos::at_least_once, true));
  return *slot;
}

void retained_match_loop(benchmark::State& state, std::string_view filter) {
  const router::retained_store& store = get_retained(static_cast<std::size_t>(state.range(0)));
  std::size_t matched = 0;
  const auto count = [&](const mqttbroker::message_ptr& m) { if (!m->payload().empty()) ++matched; };
  for (auto _ : state) store.match(filter, count);
  state.counters["matches"] = static_cast<double>(matched) / static_cast<double>(state.iterations());
  state.SetItemsProcessed(static_cast<std::int64_t>(matched));  // items/s = messages reported/s
}

// A new subscriber to "#" on a broker with N retained messages: every one is reported.
void BM_retained_match_all(benchmark::State& state) { retained_match_loop(state, "#"); }
// One site's devices: a literal level prunes the tree to 1/100th.
void BM_retained_match_site(benchmark::State& state) { retained_match_loop(state, "site/42/device/+/temp"); }
// One topic.
void BM_retained_match_one(benchmark::State& state) { retained_match_loop(state, "site/42/device/4242/temp"); }

// Replacing the retained message of an existing topic (a retained PUBLISH on the hot path).
void BM_retained_replace(benchmark::State& state) {
  router::retained_store& store = get_retained(static_cast<std::size_t>(state.range(0)));
  std::vector<mqttbroker::message_ptr> msgs;
  char buf[96];
  std::uint64_t x = 0x2545F4914F6CDD1Dull;
  for (std::size_t i = 0; i < 4096; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    msgs.push_back(mqttbroker::message::make(device_topic(buf, x % static_cast<std::uint64_t>(state.range(0))),
                                             "22.0", codec::qos::at_least_once, true));
  }
  std::size_t i = 0;
  for (auto _ : state) store.set(msgs[i++ & 4095]);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

}  // namespace

BENCHMARK(BM_route)->Arg(10'000)->Arg(100'000)->Arg(1'000'000);
BENCHMARK(BM_route_alarm)->Arg(10'000)->Arg(100'000)->Arg(1'000'000);
BENCHMARK(BM_fanout)->Arg(1)->Arg(100)->Arg(10'000);
BENCHMARK(BM_fanout_overlap)->Arg(1)->Arg(100)->Arg(10'000);
BENCHMARK(BM_retained_match_all)->Arg(100'000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_retained_match_site)->Arg(100'000);
BENCHMARK(BM_retained_match_one)->Arg(100'000);
BENCHMARK(BM_retained_replace)->Arg(100'000);

BENCHMARK_MAIN();
