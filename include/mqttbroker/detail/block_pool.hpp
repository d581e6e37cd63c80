#ifndef MQTTBROKER_DETAIL_BLOCK_POOL_HPP
#define MQTTBROKER_DETAIL_BLOCK_POOL_HPP

#include <mqttbroker/config.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>
#include <utility>

#if MQTTBROKER_HAS_ASAN
#include <sanitizer/asan_interface.h>
#endif

/// Bytes of freed blocks each thread keeps per size class above 256 B (7 classes). 0 turns the
/// cache off: every block goes to operator new/delete, which suits heap checkers that cannot see
/// into a cache (Valgrind).
#ifndef MQTTBROKER_BLOCK_POOL_CLASS_BYTES
#define MQTTBROKER_BLOCK_POOL_CLASS_BYTES (128 * 1024)
#endif
/// The same for the 5 classes of up to 256 B: small messages and Asio's operations. A durable
/// store keeps thousands of them alive until its commit, which then frees them at once; with the
/// larger bound the next thousands come from the cache, not from malloc. By default 8 times the
/// above, so at most 5.9 MiB per thread in all (0 when the cache is off).
#ifndef MQTTBROKER_BLOCK_POOL_SMALL_CLASS_BYTES
#define MQTTBROKER_BLOCK_POOL_SMALL_CLASS_BYTES (8 * (MQTTBROKER_BLOCK_POOL_CLASS_BYTES))
#endif

MQTTBROKER_BEGIN_NAMESPACE
namespace detail {

/// Memory a cache keeps instead of freeing: out of bounds under AddressSanitizer until it is
/// handed out again, so that a use after release is still reported (no-ops otherwise).
#if MQTTBROKER_HAS_ASAN
inline void poison_memory(void* p, std::size_t n) noexcept { ASAN_POISON_MEMORY_REGION(p, n); }
inline void unpoison_memory(void* p, std::size_t n) noexcept { ASAN_UNPOISON_MEMORY_REGION(p, n); }
#else
inline void poison_memory(void*, std::size_t) noexcept {}
inline void unpoison_memory(void*, std::size_t) noexcept {}
#endif

/// Memory that comes and goes with traffic: messages, a connection's pending wait and write, a
/// split packet's bytes. A per-thread cache of freed blocks in a few size classes, so that the
/// steady state of the message path makes no heap allocation and thousands of connections taking
/// and returning such blocks do not fragment the heap. A block freed on any thread goes to that
/// thread's cache (messages cross threads with a multi-threaded host), so a thread that makes
/// messages which other threads release keeps allocating, while those threads' caches fill up to
/// their bound. Each cache is emptied when its thread exits. Nothing is shared between threads or
/// brokers.
class block_pool {
 public:
  /// Powers of two, and the size of Asio's wait operation with a connection's handler, which every
  /// idle connection holds one of: 88 bytes (128 on a strand, with locking::shared).
  static constexpr std::size_t sizes[] = {64, 88, 128, 176, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768};
  static constexpr std::uint8_t classes = sizeof(sizes) / sizeof(sizes[0]);
  static constexpr std::size_t min_block = sizes[0];
  static constexpr std::size_t max_block = sizes[classes - 1];
  /// The class of blocks that bypass the cache (larger than max_block).
  static constexpr std::uint8_t unpooled = 0xFF;

  static constexpr std::size_t block_size(std::uint8_t c) noexcept { return sizes[c]; }

  /// The smallest class holding `bytes`, or `unpooled`.
  static constexpr std::uint8_t class_of(std::size_t bytes) noexcept {
    if (bytes > max_block) return unpooled;
    std::uint8_t c = 0;
    while (block_size(c) < bytes) ++c;  // at most 10 steps
    return c;
  }

  /// The largest block of the classes bounded by MQTTBROKER_BLOCK_POOL_SMALL_CLASS_BYTES.
  static constexpr std::size_t small_block = 256;
  /// Bytes of blocks of class `c` a thread keeps at most (before rounding down to whole blocks).
  static constexpr std::size_t class_bytes(std::uint8_t c) noexcept {
    return block_size(c) <= small_block ? static_cast<std::size_t>(MQTTBROKER_BLOCK_POOL_SMALL_CLASS_BYTES)
                                        : static_cast<std::size_t>(MQTTBROKER_BLOCK_POOL_CLASS_BYTES);
  }
  /// Blocks of class `c` a thread keeps at most.
  static constexpr std::size_t capacity(std::uint8_t c) noexcept { return class_bytes(c) / block_size(c); }

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

  static void poison(void* p, std::size_t n) noexcept { poison_memory(p, n); }
  static void unpoison(void* p, std::size_t n) noexcept { unpoison_memory(p, n); }
};


/// An allocator over block_pool for the memory of asynchronous operations: a connection's wait
/// and write come and go once per read and per batch, and Asio's own per-thread cache holds only
/// two blocks, too few when one read reaches many connections.
template <class T>
struct pooled_allocator {
  using value_type = T;
  pooled_allocator() noexcept = default;
  template <class U>
  pooled_allocator(const pooled_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    std::uint8_t c = 0;
    return static_cast<T*>(block_pool::allocate(n * sizeof(T), c));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    block_pool::deallocate(p, n * sizeof(T), block_pool::class_of(n * sizeof(T)));
  }
  template <class U>
  friend bool operator==(const pooled_allocator&, const pooled_allocator<U>&) noexcept {
    return true;
  }
  template <class U>
  friend bool operator!=(const pooled_allocator&, const pooled_allocator<U>&) noexcept {
    return false;
  }
};

/// A growable byte buffer in block_pool blocks, given back when reset: an idle owner (a
/// connection between packets) holds no memory at all.
class pooled_bytes {
 public:
  pooled_bytes() noexcept = default;
  pooled_bytes(const pooled_bytes&) = delete;
  pooled_bytes& operator=(const pooled_bytes&) = delete;
  pooled_bytes(pooled_bytes&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), capacity_(std::exchange(o.capacity_, 0)) {}
  pooled_bytes& operator=(pooled_bytes&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      capacity_ = std::exchange(o.capacity_, 0);
    }
    return *this;
  }
  ~pooled_bytes() { reset(); }

  const std::uint8_t* data() const noexcept { return data_; }
  std::uint8_t* data() noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  bool empty() const noexcept { return size_ == 0; }

  /// Room for at least `n` bytes in all, keeping what is held.
  void reserve(std::size_t n) {
    if (n > max_size) throw std::length_error("pooled_bytes: more than 4 GiB");
    if (n > capacity_) grow(n);
  }
  /// Counts `n` bytes written past size() (into the reserved room) as held.
  void commit(std::size_t n) noexcept { size_ += static_cast<std::uint32_t>(std::min<std::size_t>(n, capacity_ - size_)); }
  /// Empties the buffer and keeps its block.
  void clear() noexcept { size_ = 0; }

  /// Appends `n` bytes; the storage grows with what arrives, never ahead of it.
  void append(const std::uint8_t* p, std::size_t n) {
    if (n == 0) return;
    if (n > max_size - size_) throw std::length_error("pooled_bytes: more than 4 GiB");
    if (size_ + n > capacity_) grow(size_ + n);
    std::memcpy(data_ + size_, p, n);
    size_ += static_cast<std::uint32_t>(n);
  }

  /// Empties the buffer and gives its block back.
  void reset() noexcept {
    reset_storage();
    data_ = nullptr;
    size_ = 0;
    capacity_ = 0;
  }

 private:
  static constexpr std::size_t max_size = 0xFFFFFFFFu;

  void grow(std::size_t need) {
    // Doubling past the largest class keeps a large packet's arrival linear; still bounded by
    // what arrived, never by a length the peer claimed.
    std::size_t want = need;
    if (need > block_pool::max_block && want < std::size_t{capacity_} * 2) want = std::min(std::size_t{capacity_} * 2, max_size);
    const std::uint8_t c = block_pool::class_of(want);
    const std::size_t cap = c == block_pool::unpooled ? want : block_pool::block_size(c);
    std::uint8_t got = 0;
    auto* p = static_cast<std::uint8_t*>(block_pool::allocate(cap, got));
    if (size_ != 0) std::memcpy(p, data_, size_);
    reset_storage();
    data_ = p;
    capacity_ = static_cast<std::uint32_t>(cap);
  }
  void reset_storage() noexcept {
    if (data_ != nullptr) block_pool::deallocate(data_, capacity_, block_pool::class_of(capacity_));
  }

  // 32-bit: a buffer holds at most one packet (256 MiB), and a connection keeps two of them.
  std::uint8_t* data_ = nullptr;
  std::uint32_t size_ = 0;
  std::uint32_t capacity_ = 0;
};

}  // namespace detail
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_DETAIL_BLOCK_POOL_HPP
