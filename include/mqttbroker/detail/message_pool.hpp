#ifndef MQTTBROKER_DETAIL_MESSAGE_POOL_HPP
#define MQTTBROKER_DETAIL_MESSAGE_POOL_HPP

#include <mqttbroker/config.hpp>

#include <cstddef>
#include <cstdint>
#include <new>

#if MQTTBROKER_HAS_ASAN
#include <sanitizer/asan_interface.h>
#endif

/// Bytes of freed message blocks each thread keeps per size class (8 classes, so 1 MiB per thread
/// by default). 0 turns the cache off: every message goes to operator new/delete, which suits
/// heap checkers that cannot see into a cache (Valgrind).
#ifndef MQTTBROKER_MESSAGE_POOL_CLASS_BYTES
#define MQTTBROKER_MESSAGE_POOL_CLASS_BYTES (128 * 1024)
#endif

MQTTBROKER_BEGIN_NAMESPACE
namespace detail {

/// The memory of messages: a per-thread cache of freed blocks in power-of-two size classes, so
/// that the steady state of a message path makes no heap allocation. A block freed on any thread
/// goes to that thread's cache (messages cross threads with a multi-threaded host), so a thread
/// that makes messages which other threads release keeps allocating, while those threads' caches
/// fill up to their bound. Each cache is emptied when its thread exits. Nothing is shared between
/// threads or brokers.
class message_pool {
 public:
  static constexpr std::size_t min_block = 64;
  static constexpr std::uint8_t classes = 8;  // 64 B .. 8 KiB
  static constexpr std::size_t max_block = min_block << (classes - 1);
  /// The class of blocks that bypass the cache (larger than max_block).
  static constexpr std::uint8_t unpooled = 0xFF;

  static constexpr std::size_t block_size(std::uint8_t c) noexcept { return min_block << c; }

  /// The smallest class holding `bytes`, or `unpooled`.
  static constexpr std::uint8_t class_of(std::size_t bytes) noexcept {
    if (bytes > max_block) return unpooled;
    std::uint8_t c = 0;
    while (block_size(c) < bytes) ++c;  // at most 7 steps
    return c;
  }

  /// Blocks of class `c` a thread keeps at most.
  static constexpr std::size_t capacity(std::uint8_t c) noexcept {
    return static_cast<std::size_t>(MQTTBROKER_MESSAGE_POOL_CLASS_BYTES) / block_size(c);
  }

  /// At least `bytes` of memory aligned for any fundamental type; `c` receives the class to give
  /// back to deallocate(). Throws std::bad_alloc like operator new.
  static void* allocate(std::size_t bytes, std::uint8_t& c) {
    c = class_of(bytes);
    if (c == unpooled) return ::operator new(bytes);
    thread_cache& t = local();
    if (free_block* b = t.head[c]) {
      unpoison(b, bytes < sizeof(free_block) ? sizeof(free_block) : bytes);
      t.head[c] = b->next;
      --t.count[c];
      return b;
    }
    void* p = ::operator new(block_size(c));
    // The block's slack past `bytes` stays out of bounds under AddressSanitizer.
    poison(static_cast<char*>(p) + bytes, block_size(c) - bytes);
    return p;
  }

  /// Returns memory from allocate(bytes, c) on any thread.
  static void deallocate(void* p, std::size_t bytes, std::uint8_t c) noexcept {
    if (c == unpooled) return release_memory(p, bytes);
    thread_cache& t = local();
    if (t.retired || t.count[c] >= capacity(c)) return free_block_memory(p, c);
    if (!t.reaper_armed) {
      t.reaper_armed = true;
      arm_reaper();
    }
    auto* b = ::new (p) free_block{t.head[c]};
    t.head[c] = b;
    ++t.count[c];
    // A message used after its release now reads poisoned memory, as it would after delete.
    poison(p, block_size(c));
  }

  /// Blocks of class `c` cached on this thread.
  static std::size_t cached_blocks(std::uint8_t c) noexcept { return local().count[c]; }

  /// Bytes cached on this thread.
  static std::size_t cached_bytes() noexcept {
    std::size_t n = 0;
    for (std::uint8_t c = 0; c < classes; ++c) n += local().count[c] * block_size(c);
    return n;
  }

  /// Frees every block cached on this thread.
  static void trim() noexcept {
    thread_cache& t = local();
    for (std::uint8_t c = 0; c < classes; ++c) {
      while (free_block* b = t.head[c]) {
        unpoison(b, sizeof(free_block));
        t.head[c] = b->next;
        free_block_memory(b, c);
      }
      t.count[c] = 0;
    }
  }

 private:
  struct free_block {
    free_block* next;
  };
  static_assert(min_block >= sizeof(free_block), "a cached block holds the list link");

  // Trivially destructible and zero-initialised, so it needs no guard and stays usable while the
  // thread's other thread_local objects are destroyed (a message released by one of them then
  // goes straight to operator delete).
  struct thread_cache {
    free_block* head[classes];
    std::size_t count[classes];
    bool reaper_armed;
    bool retired;
  };

  static thread_cache& local() noexcept {
    static thread_local thread_cache t{};
    return t;
  }

  // Its destructor empties the cache when the thread exits (leak checkers and Valgrind then see
  // every block freed). Registered on the first caching release only, so threads that never
  // release a message pay nothing.
  struct reaper {
    reaper() = default;
    reaper(const reaper&) = delete;
    reaper& operator=(const reaper&) = delete;
    ~reaper() {
      local().retired = true;
      trim();
    }
  };
  static void arm_reaper() noexcept {
    static thread_local reaper r;
    static_cast<void>(r);
  }

  static void free_block_memory(void* p, std::uint8_t c) noexcept {
    unpoison(p, block_size(c));  // ASan must see the whole block as allocated memory being freed
    release_memory(p, block_size(c));
  }

  static void release_memory(void* p, [[maybe_unused]] std::size_t n) noexcept {
#if defined(__cpp_sized_deallocation)
    ::operator delete(p, n);  // saves the heap a size lookup
#else
    ::operator delete(p);  // Clang before 19 leaves sized deallocation off unless asked
#endif
  }

#if MQTTBROKER_HAS_ASAN
  static void poison(void* p, std::size_t n) noexcept { ASAN_POISON_MEMORY_REGION(p, n); }
  static void unpoison(void* p, std::size_t n) noexcept { ASAN_UNPOISON_MEMORY_REGION(p, n); }
#else
  static void poison(void*, std::size_t) noexcept {}
  static void unpoison(void*, std::size_t) noexcept {}
#endif
};

}  // namespace detail
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_DETAIL_MESSAGE_POOL_HPP
