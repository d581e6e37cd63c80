#ifndef MQTTBROKER_LOCKING_SHARED_HPP
#define MQTTBROKER_LOCKING_SHARED_HPP

#include <mqttbroker/config.hpp>
#include <mqttbroker/detail/thread_slot.hpp>

// The one Asio header in locking/ (scripts/check_layers.py allows no other): what keeps one
// connection's handlers from running at once on several threads is this policy's to say, and with
// Asio that is a strand. locking/none.hpp and locking/traits.hpp need no Asio, so the sans-I/O
// layers can name a locking policy's contract, and run on locking::none, without it.
#include <asio/strand.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>

MQTTBROKER_BEGIN_NAMESPACE
namespace locking {

/// A reader/writer lock for data read on every message and written rarely (the broker's
/// subscriptions and sessions). A reader touches only its own thread's stripe and the writer flag,
/// which stays shared in every reader's cache while no writer comes; a writer raises the flag and
/// waits for every stripe to drain. std::shared_mutex instead bounces one reader count between
/// all reading cores, twice per lock. Not recursive, neither shared nor exclusive; meets the
/// standard's SharedMutex requirements otherwise.
class big_reader_mutex {
 public:
  big_reader_mutex() = default;
  big_reader_mutex(const big_reader_mutex&) = delete;
  big_reader_mutex& operator=(const big_reader_mutex&) = delete;

  void lock() {
    writers_.lock();
    // The store and the loads in drained() are seq_cst, as are a reader's increment and its look
    // at the flag (Dekker): either the reader sees the flag, or this writer sees its count.
    writer_.store(true, std::memory_order_seq_cst);
    for (unsigned spins = 0; !drained(); ++spins) pause(spins);
  }
  bool try_lock() {
    if (!writers_.try_lock()) return false;
    writer_.store(true, std::memory_order_seq_cst);
    if (drained()) return true;
    unlock();
    return false;
  }
  void unlock() {
    writer_.store(false, std::memory_order_seq_cst);
    writers_.unlock();
  }

  void lock_shared() {
    const std::size_t i = ::mqttbroker::detail::thread_slot::index();
    if (enter(i)) return;
    leave(i);
    // A writer holds or waits for the lock: queue behind it on the writers' mutex. While this
    // thread holds that mutex no writer can raise the flag, so the count taken here stands, and
    // a reader waits for at most the writers queued before it: neither side starves.
    std::lock_guard<std::mutex> wait_for_writer(writers_);
    stripes_[i].readers.fetch_add(1, std::memory_order_seq_cst);
  }
  bool try_lock_shared() {
    const std::size_t i = ::mqttbroker::detail::thread_slot::index();
    if (enter(i)) return true;
    leave(i);
    return false;
  }
  void unlock_shared() noexcept { leave(::mqttbroker::detail::thread_slot::index()); }

 private:
  /// Counts this thread in; true when no writer holds or waits for the lock.
  bool enter(std::size_t i) noexcept {
    stripes_[i].readers.fetch_add(1, std::memory_order_seq_cst);
    return !writer_.load(std::memory_order_seq_cst);
  }

  /// Counts this thread out. Release: a writer that sees the count drop sees the reads done.
  void leave(std::size_t i) noexcept {
    auto& n = stripes_[i].readers;
    if (i < ::mqttbroker::detail::thread_slot::exclusive)
      n.store(n.load(std::memory_order_relaxed) - 1, std::memory_order_release);  // only this thread writes it
    else
      n.fetch_sub(1, std::memory_order_release);
  }

  bool drained() const noexcept {
    for (const stripe& s : stripes_)
      if (s.readers.load(std::memory_order_seq_cst) != 0) return false;
    return true;
  }

  /// A writer waits for readers that are inside a short critical section: spin briefly, then
  /// give the CPU to them (there may be fewer cores than threads).
  static void pause(unsigned spins) noexcept {
    if (spins >= 64) std::this_thread::yield();
  }

  struct alignas(::mqttbroker::detail::false_sharing_range) stripe {
    std::atomic<std::uint32_t> readers{0};
  };
  stripe stripes_[::mqttbroker::detail::thread_slot::count];
  alignas(::mqttbroker::detail::false_sharing_range) std::atomic<bool> writer_{false};  // read by every reader
  std::mutex writers_;                                                 // one writer at a time
};

/// A statistics counter that threads add to without sharing a cache line: one stripe per thread
/// slot, summed on load(). Only add and load: the sum is not a single atomic value.
template <class T>
class striped_counter {
 public:
  striped_counter() = default;
  striped_counter(const striped_counter&) = delete;
  striped_counter& operator=(const striped_counter&) = delete;

  void fetch_add(T d, std::memory_order = std::memory_order_relaxed) noexcept {
    const std::size_t i = ::mqttbroker::detail::thread_slot::index();
    auto& v = stripes_[i].value;
    if (i < ::mqttbroker::detail::thread_slot::exclusive)
      v.store(static_cast<T>(v.load(std::memory_order_relaxed) + d), std::memory_order_relaxed);  // only this thread writes it
    else
      v.fetch_add(d, std::memory_order_relaxed);
  }
  T load(std::memory_order = std::memory_order_relaxed) const noexcept {
    T sum{};
    for (const stripe& s : stripes_) sum = static_cast<T>(sum + s.value.load(std::memory_order_relaxed));
    return sum;
  }

 private:
  struct alignas(::mqttbroker::detail::false_sharing_range) stripe {
    std::atomic<T> value{};
  };
  stripe stripes_[::mqttbroker::detail::thread_slot::count];
};

/// For a host that runs the io_context on several threads: shared state sits behind a
/// reader-biased lock (subscriptions are read on every publish and written rarely), each
/// connection's handlers run on a strand of their own, and statistics are counted per thread.
struct shared {
  static constexpr bool thread_safe = true;
  using mutex_type = big_reader_mutex;
  /// One per session: a plain mutex, as a striped one per session would cost kilobytes each.
  using session_mutex_type = std::mutex;
  template <class T>
  using counter_type = striped_counter<T>;

  /// Each connection's handlers, and the broker's own control work, run on a strand of their own.
  template <class Executor>
  using strand_type = asio::strand<Executor>;
  template <class Executor>
  static strand_type<Executor> make_strand(const Executor& ex) { return asio::make_strand(ex); }
};

}  // namespace locking
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_LOCKING_SHARED_HPP
