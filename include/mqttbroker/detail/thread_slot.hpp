#ifndef MQTTBROKER_DETAIL_THREAD_SLOT_HPP
#define MQTTBROKER_DETAIL_THREAD_SLOT_HPP

#include <mqttbroker/config.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>

MQTTBROKER_BEGIN_NAMESPACE
namespace detail {

/// Bytes kept between data that different threads write. 128, not 64: x86's adjacent-line
/// prefetcher pulls lines in pairs, and some ARM cores have 128-byte lines.
inline constexpr std::size_t false_sharing_range = 128;

/// Per-thread slots for striped data (locking::shared's counters and state lock). A thread owns
/// one of `exclusive` slots while it lives, so it may update its stripe without a locked
/// instruction; threads beyond that, or one already exiting, share the last slot and must use
/// read-modify-write operations on it.
struct thread_slot {
  static constexpr std::size_t exclusive = 16;
  static constexpr std::size_t shared = exclusive;  // index of the stripe that threads share
  static constexpr std::size_t count = exclusive + 1;

  /// This thread's slot; claims one on the first call.
  static std::size_t index() noexcept {
    const std::size_t i = current;
    return i != unassigned ? i : claim();
  }

 private:
  static_assert(exclusive <= 32, "the claimed slots are the bits of one 32-bit word");
  static constexpr std::size_t unassigned = ~std::size_t{0};

  // Trivially destructible: it stays readable while the thread's thread_local objects are
  // destroyed, when a destructor may still count or lock.
  static inline thread_local std::size_t current = unassigned;

  static std::atomic<std::uint32_t>& claimed() noexcept {
    static std::atomic<std::uint32_t> bits{0};
    return bits;
  }

  // Gives the slot back when the thread exits, so long-lived hosts that start and end threads do
  // not run out of slots. The next owner's acquire in claim() sees this thread's last writes.
  struct releaser {
    releaser() = default;
    releaser(const releaser&) = delete;
    releaser& operator=(const releaser&) = delete;
    ~releaser() {
      const std::size_t i = current;
      current = shared;
      if (i < exclusive) claimed().fetch_and(~(std::uint32_t{1} << i), std::memory_order_release);
    }
  };

  static std::size_t claim() noexcept {
    auto& bits = claimed();
    std::uint32_t seen = bits.load(std::memory_order_relaxed);
    std::size_t i = shared;
    for (;;) {
      std::size_t free = 0;
      while (free < exclusive && (seen & (std::uint32_t{1} << free)) != 0) ++free;
      if (free == exclusive) break;
      if (bits.compare_exchange_weak(seen, seen | (std::uint32_t{1} << free), std::memory_order_acquire,
                                     std::memory_order_relaxed)) {
        i = free;
        break;
      }
    }
    current = i;
    if (i < exclusive) {
      static thread_local releaser r;
      static_cast<void>(r);
    }
    return i;
  }
};

}  // namespace detail
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_DETAIL_THREAD_SLOT_HPP
