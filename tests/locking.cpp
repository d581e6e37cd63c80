// The locking policies' own types under real threads: locking::shared's reader-biased state lock
// and striped counters. Part of mqttbroker_mt_tests, so CI also runs it under ThreadSanitizer,
// which reports any access the lock fails to order (the guarded data below is plain, not atomic).
#include <mqttbroker/detail/ref_counted.hpp>
#include <mqttbroker/locking/shared.hpp>
#include <mqttbroker/locking/none.hpp>
#include <mqttbroker/locking/traits.hpp>

#include "catch.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/strand.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace mb = mqttbroker;
using mb::locking::big_reader_mutex;

namespace {

/// Data a big_reader_mutex guards: two plain integers a writer keeps equal.
struct guarded {
  big_reader_mutex mutex;
  std::uint64_t a = 0, b = 0;
};

/// Runs `n` threads of `body(thread_index)` and joins them.
template <class Body>
void run_threads(unsigned n, Body body) {
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < n; ++t) ts.emplace_back([&body, t] { body(t); });
  for (auto& t : ts) t.join();
}

}  // namespace

TEST_CASE("big_reader_mutex: writers exclude readers and each other", "[locking][threads]") {
  guarded g;
  std::atomic<std::uint64_t> torn{0}, writes{0};
  constexpr unsigned threads = 4;  // more than the CI machine's cores: holders get preempted
  constexpr int iterations = 20'000;
  run_threads(threads, [&](unsigned t) {
    for (int i = 0; i < iterations; ++i) {
      if ((i + static_cast<int>(t)) % 16 == 0) {
        std::lock_guard<big_reader_mutex> lk(g.mutex);
        if (g.a != g.b) ++torn;
        ++g.a;
        ++g.b;
        ++writes;
      } else {
        std::shared_lock<big_reader_mutex> lk(g.mutex);
        if (g.a != g.b) ++torn;
      }
    }
  });
  CHECK(torn.load() == 0);
  CHECK(g.a == writes.load());
  CHECK(g.b == writes.load());
}

TEST_CASE("big_reader_mutex: try_lock and try_lock_shared fail while the other side holds it", "[locking]") {
  big_reader_mutex m;
  m.lock_shared();
  CHECK_FALSE(m.try_lock());
  CHECK(m.try_lock_shared());  // readers share
  m.unlock_shared();
  m.unlock_shared();
  REQUIRE(m.try_lock());
  CHECK_FALSE(m.try_lock_shared());
  CHECK_FALSE(m.try_lock());
  m.unlock();
  CHECK(m.try_lock_shared());
  m.unlock_shared();

  // The same from another thread, whose stripe differs from this one's.
  m.lock();
  bool got = true;
  std::thread([&] { got = m.try_lock_shared(); }).join();
  CHECK_FALSE(got);
  m.unlock();
  std::thread([&] {
    got = m.try_lock_shared();
    if (got) m.unlock_shared();
  }).join();
  CHECK(got);
}

TEST_CASE("big_reader_mutex: a writer gets in while readers keep coming, and readers behind it follow", "[locking][threads]") {
  guarded g;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> reads{0}, torn{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&] {
      // Back to back, so some reader holds the lock at almost every instant.
      while (!stop.load(std::memory_order_relaxed)) {
        std::shared_lock<big_reader_mutex> lk(g.mutex);
        if (g.a != g.b) ++torn;
        ++reads;
      }
    });
  }
  while (reads.load() < 1000) std::this_thread::yield();
  // A liveness bound, not a timing: a starved writer would wait for as long as readers come, so
  // the readers stop at the deadline and the writer then finishes, late, and fails the check.
  std::atomic<bool> writer_done{false};
  std::thread writer([&] {
    for (int w = 0; w < 200; ++w) {
      std::lock_guard<big_reader_mutex> lk(g.mutex);
      ++g.a;
      ++g.b;
    }
    writer_done = true;
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!writer_done && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const bool writer_got_in = writer_done;
  // Readers go on after the writers: they are not starved either.
  bool readers_went_on = false;
  if (writer_got_in) {
    const std::uint64_t after_writers = reads.load();
    while (!readers_went_on && std::chrono::steady_clock::now() < deadline)
      readers_went_on = reads.load() >= after_writers + 1000;
  }
  stop = true;
  for (auto& t : readers) t.join();
  writer.join();
  CHECK(writer_got_in);
  CHECK(readers_went_on);
  CHECK(torn.load() == 0);
  CHECK(g.a == 200);
}

TEST_CASE("big_reader_mutex: a reader that waited for a writer sees its writes", "[locking][threads]") {
  guarded g;
  std::atomic<bool> reader_started{false};
  std::uint64_t seen = 0;
  std::unique_lock<big_reader_mutex> writer(g.mutex);
  std::thread reader([&] {
    reader_started = true;
    std::shared_lock<big_reader_mutex> lk(g.mutex);  // blocks until the writer is done
    seen = g.a;
  });
  while (!reader_started) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let the reader reach the lock
  g.a = 42;
  g.b = 42;
  writer.unlock();
  reader.join();
  CHECK(seen == 42);
}

TEST_CASE("striped_counter: additions from many threads all count", "[locking][threads]") {
  mb::locking::shared::counter_type<std::uint64_t> c;
  // More threads than exclusive slots, so some share the last stripe and use its atomic add.
  constexpr unsigned threads = mb::detail::thread_slot::exclusive + 4;
  constexpr std::uint64_t per_thread = 10'000;
  std::atomic<unsigned> running{0};
  run_threads(threads, [&](unsigned) {
    ++running;
    while (running.load() < threads) std::this_thread::yield();  // all alive at once
    for (std::uint64_t i = 0; i < per_thread; ++i) c.fetch_add(1);
  });
  CHECK(c.load() == threads * per_thread);
}

TEST_CASE("thread slots are given back when threads end", "[locking][threads]") {
  // Many threads one after another: each finds an exclusive slot, as the ones before returned theirs.
  mb::locking::shared::counter_type<std::uint64_t> c;
  std::size_t on_shared = 0;
  for (int t = 0; t < 3 * static_cast<int>(mb::detail::thread_slot::exclusive); ++t) {
    std::thread([&] {
      if (mb::detail::thread_slot::index() == mb::detail::thread_slot::shared) ++on_shared;
      c.fetch_add(2);
    }).join();
  }
  CHECK(on_shared == 0);
  CHECK(c.load() == 6 * mb::detail::thread_slot::exclusive);
}

TEST_CASE("locking::none counts with a plain integer and locks nothing", "[locking]") {
  mb::locking::none::counter_type<std::uint64_t> c;
  c.fetch_add(3);
  CHECK(c.load() == 3);
  static_assert(sizeof(mb::locking::none::counter_type<std::uint64_t>) == sizeof(std::uint64_t));
  static_assert(std::is_empty_v<mb::locking::none::mutex_type> && std::is_empty_v<mb::locking::none::session_mutex_type>);
}

namespace {

/// An object whose fields the last reference's owner reads in its destructor: under
/// ThreadSanitizer, a count that did not order the other threads' writes before the delete shows.
struct shared_object : mb::detail::ref_counted {
  explicit shared_object(std::atomic<int>& deaths) : deaths_(deaths) {}
  ~shared_object() {
    std::uint64_t sum = 0;
    for (std::uint64_t v : touched) sum += v;
    if (sum == expected) deaths_.fetch_add(1);
  }
  std::atomic<int>& deaths_;
  std::uint64_t touched[4] = {};
  std::uint64_t expected = 0;
};

}  // namespace

TEST_CASE("ref_ptr: references copied and dropped on several threads delete the object once, last", "[locking][threads]") {
  constexpr unsigned threads = 4;
  constexpr int rounds = 200;
  for (int r = 0; r < rounds; ++r) {
    std::atomic<int> deaths{0};
    auto obj = mb::detail::ref_ptr<shared_object>::make(deaths);
    obj->expected = threads * 100;
    std::vector<mb::detail::ref_ptr<shared_object>> refs(threads, obj);
    obj.reset();  // the threads' references are now the only ones
    run_threads(threads, [&](unsigned t) {
      mb::detail::ref_ptr<shared_object> mine = std::move(refs[t]);
      for (int i = 0; i < 100; ++i) {
        mb::detail::ref_ptr<shared_object> copy = mine;  // count up and down under contention
        ++copy->touched[t];  // each thread its own slot, written before its last release
      }
    });
    REQUIRE(deaths.load() == 1);
  }
}

// ---- the locking contract (locking/traits.hpp)

namespace {

/// A policy written before sessions had a lock of their own: its mutex_type serves sessions too.
struct without_session_mutex {
  static constexpr bool thread_safe = true;
  using mutex_type = std::shared_mutex;
  template <class T>
  using counter_type = std::atomic<T>;
  template <class Executor>
  using strand_type = asio::strand<Executor>;
  template <class Executor>
  static strand_type<Executor> make_strand(const Executor& ex) { return asio::make_strand(ex); }
};

/// Only exclusive locking: routing's shared lock has nothing to call.
struct exclusive_only : without_session_mutex {
  using mutex_type = std::mutex;
};

/// The thread-safety flag as a run-time value, which `if constexpr` cannot read.
struct flag_at_run_time : without_session_mutex {
  static bool thread_safe;
};

/// No strand of its own.
struct no_strand {
  static constexpr bool thread_safe = false;
  using mutex_type = mb::locking::none::mutex_type;
  template <class T>
  using counter_type = mb::locking::none::counter_type<T>;
};

}  // namespace

TEST_CASE("none and shared meet the locking contract, and each says what a strand is", "[locking][contract]") {
  using io_executor = asio::io_context::executor_type;
  namespace req = mb::locking::contract;
  static_assert(mb::locking::detail::check_locking<mb::locking::none, asio::any_io_executor, io_executor>());
  static_assert(mb::locking::detail::check_locking<mb::locking::shared, asio::any_io_executor, io_executor>());
  static_assert(mb::locking::detail::check_locking<without_session_mutex, io_executor>());
#if MQTTBROKER_HAS_CONCEPTS
  static_assert(mb::locking_policy<mb::locking::none, io_executor> && mb::locking_policy<mb::locking::shared, io_executor>);
  static_assert(mb::locking_policy<no_strand> && !mb::locking_policy<no_strand, io_executor>);
#endif
  // One thread: the strand is the executor itself. Several: an asio::strand over it.
  static_assert(std::is_same_v<mb::locking::none::strand_type<io_executor>, io_executor>);
  static_assert(std::is_same_v<mb::locking::shared::strand_type<io_executor>, asio::strand<io_executor>>);
  static_assert(std::is_same_v<mb::locking::session_mutex_t<mb::locking::shared>, std::mutex>);
  static_assert(std::is_same_v<mb::locking::session_mutex_t<without_session_mutex>, std::shared_mutex>);

  CHECK_FALSE(req::mutex_locks_shared<exclusive_only>);
  CHECK(req::mutex_locks<exclusive_only>);
  CHECK_FALSE(req::has_thread_safe<flag_at_run_time>);
  CHECK_FALSE(req::has_strand_for<no_strand, io_executor>);
  CHECK((req::has_mutex_type<no_strand> && req::has_counter_type<no_strand> && req::session_mutex_locks<no_strand>));
  CHECK_FALSE((req::has_thread_safe<int> || req::has_mutex_type<int> || req::has_counter_type<int>));

  asio::io_context io;
  CHECK(mb::locking::none::make_strand(io.get_executor()) == io.get_executor());
  auto strand = mb::locking::shared::make_strand(io.get_executor());
  CHECK(strand.get_inner_executor() == io.get_executor());
  bool ran_on_strand = false;
  asio::post(strand, [&] { ran_on_strand = strand.running_in_this_thread(); });
  io.run();
  CHECK(ran_on_strand);
}
