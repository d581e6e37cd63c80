// Subscription trie micro-benchmarks: match, insert, erase, churn and memory per subscription.
//
//   g++ -O2 -std=c++17 -Iinclude bench/trie_bench.cpp -lbenchmark -lpthread -o bench_trie
//   ./bench_trie
//
// Subscriptions look like a fleet: "site/{i%100}/device/{i}/temp" for each i, plus a fixed set of
// wildcard filters (one "site/{s}/device/+/temp" per site, "site/{s}/#" for ten sites,
// "+/+/device/+/alarm", "$SYS/#"), so the number of matches per topic stays the same at every
// size and only the subscription count changes. Topics are picked at random so the large tries
// miss the cache as a broker's would. Memory is measured by counting operator new in this binary.

#include <mqttbroker/topic/trie.hpp>

#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
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

#if defined(__GLIBC__)
#include <malloc.h>
#endif

// Allocation counting. Only the ordinary (non-aligned) forms: the trie allocates nothing
// over-aligned. Counters are relaxed atomics; the benchmarks run on one thread.

namespace {
std::atomic<std::size_t> g_allocs{0};
std::atomic<std::size_t> g_frees{0};
std::atomic<std::ptrdiff_t> g_live_bytes{0};
constexpr std::size_t header = alignof(std::max_align_t);  // keeps the caller's alignment

void* counted_alloc(std::size_t n) {
  void* p = std::malloc(n + header);
  if (p == nullptr) throw std::bad_alloc();
  *static_cast<std::size_t*>(p) = n;
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  g_live_bytes.fetch_add(static_cast<std::ptrdiff_t>(n), std::memory_order_relaxed);
  return static_cast<char*>(p) + header;
}

void counted_free(void* p) noexcept {
  if (p == nullptr) return;
  void* base = static_cast<char*>(p) - header;
  g_frees.fetch_add(1, std::memory_order_relaxed);
  g_live_bytes.fetch_sub(static_cast<std::ptrdiff_t>(*static_cast<std::size_t*>(base)),
                         std::memory_order_relaxed);
  std::free(base);
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
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_free(p); }

namespace {

// What a broker might keep per subscription: options and a subscription identifier.
struct sub_options {
  std::uint8_t qos = 1;
  bool no_local = false;
  bool retain_as_published = false;
  std::uint8_t retain_handling = 0;
  std::uint32_t subscription_id = 0;
};

using trie_type = mqttbroker::topic::subscription_trie<std::uint64_t, sub_options>;

std::size_t heap_in_use() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  return mallinfo2().uordblks;  // includes malloc's own chunk overhead
#else
  return 0;
#endif
}

std::string_view device_filter(char (&buf)[96], std::uint64_t i, const char* leaf = "temp") {
  const int n = std::snprintf(buf, sizeof buf, "site/%u/device/%llu/%s", static_cast<unsigned>(i % 100),
                              static_cast<unsigned long long>(i), leaf);
  return {buf, static_cast<std::size_t>(n)};
}

void add_wildcards(trie_type& trie) {
  char buf[96];
  std::uint64_t key = 1'000'000'000;
  for (unsigned s = 0; s < 100; ++s) {
    const int n = std::snprintf(buf, sizeof buf, "site/%u/device/+/temp", s);
    trie.insert(std::string_view(buf, static_cast<std::size_t>(n)), key++, sub_options{});
  }
  for (unsigned s = 0; s < 10; ++s) {
    const int n = std::snprintf(buf, sizeof buf, "site/%u/#", s);
    trie.insert(std::string_view(buf, static_cast<std::size_t>(n)), key++, sub_options{});
  }
  trie.insert("+/+/device/+/alarm", key++, sub_options{});
  trie.insert("$SYS/#", key++, sub_options{});
}

struct fleet {
  trie_type trie;
  std::size_t subscriptions = 0;
  double bytes_per_sub = 0;   // requested from operator new
  double allocs_per_sub = 0;  // live allocations
  double heap_per_sub = 0;    // malloc's view, chunk overhead included (glibc only)
  double nodes_per_sub = 0;
};

// Built once per size and kept: the 1M trie takes a while to build.
fleet& get_fleet(std::size_t n) {
  static std::map<std::size_t, std::unique_ptr<fleet>> cache;
  auto& slot = cache[n];
  if (slot) return *slot;
  slot = std::make_unique<fleet>();
  fleet& f = *slot;
  const std::ptrdiff_t bytes0 = g_live_bytes.load();
  const std::size_t live0 = g_allocs.load() - g_frees.load();
  const std::size_t heap0 = heap_in_use();
  char buf[96];
  const std::size_t exact = n - 112;  // the wildcard set below holds 112
  for (std::uint64_t i = 0; i < exact; ++i) f.trie.insert(device_filter(buf, i), i, sub_options{});
  add_wildcards(f.trie);
  f.subscriptions = f.trie.size();
  const double count = static_cast<double>(f.subscriptions);
  f.bytes_per_sub = static_cast<double>(g_live_bytes.load() - bytes0) / count;
  f.allocs_per_sub = static_cast<double>(g_allocs.load() - g_frees.load() - live0) / count;
  f.heap_per_sub = static_cast<double>(heap_in_use() - heap0) / count;
  f.nodes_per_sub = static_cast<double>(f.trie.node_count()) / count;
  return f;
}

// Random device topics (the exact subscriber exists), preformatted so the loop only matches.
std::vector<std::string> random_topics(std::size_t n, const char* leaf, std::size_t count = 4096) {
  std::vector<std::string> out;
  out.reserve(count);
  std::uint64_t x = 0x2545F4914F6CDD1Dull;
  char buf[96];
  for (std::size_t i = 0; i < count; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out.emplace_back(device_filter(buf, x % (n - 112), leaf));
  }
  return out;
}

void match_loop(benchmark::State& state, const char* leaf) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  const fleet& f = get_fleet(n);
  const std::vector<std::string> topics = random_topics(n, leaf);
  std::size_t matched = 0;
  const auto count = [&](const std::uint64_t&, const sub_options& o) { matched += o.qos; };
  // Heap allocations by match itself, counted outside the timing loop (which allocates for its
  // own bookkeeping): expected 0.
  const std::size_t allocs0 = g_allocs.load();
  for (const auto& t : topics) f.trie.match(t, count);
  state.counters["allocs_per_match"] =
      static_cast<double>(g_allocs.load() - allocs0) / static_cast<double>(topics.size());
  matched = 0;
  std::size_t i = 0;
  for (auto _ : state) f.trie.match(topics[i++ & 4095], count);
  state.counters["matches"] = static_cast<double>(matched) / static_cast<double>(state.iterations());
  benchmark::DoNotOptimize(matched);
}

// A device topic: its own subscription, its site's `+` filter, `site/{s}/#` for s < 10.
void BM_match(benchmark::State& state) { match_loop(state, "temp"); }

// A topic only wildcards match ("alarm"): the cost of the `+` paths.
void BM_match_alarm(benchmark::State& state) { match_loop(state, "alarm"); }

// A topic nobody subscribed to at its leaf.
void BM_match_miss(benchmark::State& state) { match_loop(state, "humidity"); }

void BM_memory(benchmark::State& state) {
  const fleet& f = get_fleet(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(f.trie.size());
  state.counters["bytes_per_sub"] = f.bytes_per_sub;
  state.counters["heap_per_sub"] = f.heap_per_sub;
  state.counters["allocs_per_sub"] = f.allocs_per_sub;
  state.counters["nodes_per_sub"] = f.nodes_per_sub;
}

// Building a trie of N device subscriptions from empty, per insert.
void BM_insert(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  char buf[96];
  double total_ns = 0;
  for (auto _ : state) {
    trie_type trie;
    const auto t0 = std::chrono::steady_clock::now();
    for (std::uint64_t i = 0; i < n; ++i) trie.insert(device_filter(buf, i), i, sub_options{});
    const auto t1 = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(t1 - t0).count();
    state.SetIterationTime(seconds);
    total_ns += seconds * 1e9;
  }
  state.counters["ns_per_insert"] =
      total_ns / (static_cast<double>(n) * static_cast<double>(state.iterations()));
}

// Erasing N device subscriptions until the trie is empty, per erase.
void BM_erase(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  char buf[96];
  double total_ns = 0;
  for (auto _ : state) {
    trie_type trie;
    for (std::uint64_t i = 0; i < n; ++i) trie.insert(device_filter(buf, i), i, sub_options{});
    const auto t0 = std::chrono::steady_clock::now();
    for (std::uint64_t i = 0; i < n; ++i) trie.erase(device_filter(buf, i), i);
    const auto t1 = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(t1 - t0).count();
    state.SetIterationTime(seconds);
    total_ns += seconds * 1e9;
  }
  state.counters["ns_per_erase"] =
      total_ns / (static_cast<double>(n) * static_cast<double>(state.iterations()));
}

// Subscribe then unsubscribe a new device on a trie of N: each creates and frees two nodes.
void BM_churn(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  fleet& f = get_fleet(n);
  char buf[96];
  std::uint64_t id = 5'000'000'000ull;
  const std::size_t nodes0 = f.trie.node_count();
  for (auto _ : state) {
    const std::string_view filter = device_filter(buf, id);
    f.trie.insert(filter, id, sub_options{});
    f.trie.erase(filter, id);
    ++id;
  }
  if (f.trie.node_count() != nodes0) state.SkipWithError("churn left nodes behind");
}

// One filter with N subscribers: subscribe and unsubscribe one more.
void BM_crowded_filter_churn(benchmark::State& state) {
  const std::uint64_t n = static_cast<std::uint64_t>(state.range(0));
  trie_type trie;
  for (std::uint64_t k = 0; k < n; ++k) trie.insert("news/headlines", k, sub_options{});
  std::uint64_t k = n;
  for (auto _ : state) {
    trie.insert("news/headlines", k, sub_options{});
    trie.erase("news/headlines", k);
    ++k;
  }
}

// Cost against topic depth: a trie of 10k filters "l/l/.../l/{i}" of D levels, matching one.
void BM_match_depth(benchmark::State& state) {
  const std::size_t depth = static_cast<std::size_t>(state.range(0));
  std::string prefix;
  for (std::size_t d = 1; d < depth; ++d) prefix += "level/";
  trie_type trie;
  for (std::uint64_t i = 0; i < 10'000; ++i) trie.insert(prefix + std::to_string(i), i, sub_options{});
  trie.insert(prefix + "+", 99'999, sub_options{});
  const std::string topic_name = prefix + "4242";
  std::size_t matched = 0;
  for (auto _ : state) trie.match(topic_name, [&](const std::uint64_t&, const sub_options&) { ++matched; });
  state.counters["matches"] = static_cast<double>(matched) / static_cast<double>(state.iterations());
}

}  // namespace

BENCHMARK(BM_match)->Arg(1'000)->Arg(10'000)->Arg(100'000)->Arg(1'000'000);
BENCHMARK(BM_match_alarm)->Arg(1'000)->Arg(10'000)->Arg(100'000)->Arg(1'000'000);
BENCHMARK(BM_match_miss)->Arg(1'000)->Arg(10'000)->Arg(100'000)->Arg(1'000'000);
BENCHMARK(BM_memory)->Arg(1'000)->Arg(10'000)->Arg(100'000)->Arg(1'000'000)->Iterations(1);
BENCHMARK(BM_insert)->Arg(1'000)->Arg(10'000)->Arg(100'000)->Arg(1'000'000)->UseManualTime()->Unit(
    benchmark::kMillisecond);
BENCHMARK(BM_erase)->Arg(1'000)->Arg(10'000)->Arg(100'000)->Arg(1'000'000)->UseManualTime()->Unit(
    benchmark::kMillisecond);
BENCHMARK(BM_churn)->Arg(1'000)->Arg(1'000'000);
BENCHMARK(BM_crowded_filter_churn)->Arg(1)->Arg(100'000);
BENCHMARK(BM_match_depth)->Arg(2)->Arg(8)->Arg(32)->Arg(128);

BENCHMARK_MAIN();
