#ifndef MQTTBROKER_DETAIL_BYTE_POOL_HPP
#define MQTTBROKER_DETAIL_BYTE_POOL_HPP

#include <mqttbroker/config.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <utility>

#if MQTTBROKER_HAS_ASAN
#include <sanitizer/asan_interface.h>
#endif

MQTTBROKER_BEGIN_NAMESPACE
namespace detail {

/// Per-thread caches of byte blocks in a few fixed sizes, for buffers that come and go with
/// traffic (a split packet's bytes, a paused reader's unread input). Blocks of one size are
/// reused instead of returned to malloc, so thousands of connections holding such buffers for
/// a moment neither fragment the heap nor pay malloc per packet. A block freed on another thread
/// joins that thread's cache; each cache is bounded, the surplus goes back to the heap.
class byte_pool {
 public:
  // 208: an Asio wait operation with a connection's handler is 200 bytes; a block per idle
  // connection is held all the time, so it must not round up far.
  static constexpr std::size_t class_count = 6;
  static constexpr std::size_t class_sizes[class_count] = {128, 208, 320, 1024, 4096, 16384};
  static constexpr std::size_t cache_bytes_per_class = 256 * 1024;

  /// A block of at least `n` bytes; `capacity` gets its real size (to pass back to release()).
  static std::uint8_t* acquire(std::size_t n, std::size_t& capacity) {
    const std::size_t c = class_of(n);
    if (c == class_count) {
      capacity = n;
      return static_cast<std::uint8_t*>(::operator new(n));
    }
    capacity = class_sizes[c];
    cache& k = local();
    if (node* head = k.heads[c]) {
#if MQTTBROKER_HAS_ASAN
      ASAN_UNPOISON_MEMORY_REGION(head, capacity);
#endif
      k.heads[c] = head->next;
      --k.counts[c];
      return reinterpret_cast<std::uint8_t*>(head);
    }
    return static_cast<std::uint8_t*>(::operator new(capacity));
  }

  /// What acquire(n) returns as its capacity.
  static std::size_t capacity_for(std::size_t n) noexcept {
    const std::size_t c = class_of(n);
    return c == class_count ? n : class_sizes[c];
  }

  static void release(std::uint8_t* p, std::size_t capacity) noexcept {
    if (p == nullptr) return;
    const std::size_t c = class_of(capacity);
    if (c == class_count || class_sizes[c] != capacity) {
      ::operator delete(p);
      return;
    }
    cache& k = local();
    if (k.dead || k.counts[c] * capacity >= cache_bytes_per_class) {
      ::operator delete(p);
      return;
    }
    node* n = new (p) node{k.heads[c]};
    k.heads[c] = n;
    ++k.counts[c];
#if MQTTBROKER_HAS_ASAN
    // A cached block is not in use: touching it is a use after free.
    ASAN_POISON_MEMORY_REGION(p, capacity);
#endif
  }

 private:
  struct node {
    node* next;
  };

  struct cache {
    node* heads[class_count] = {};
    std::size_t counts[class_count] = {};
    bool dead = false;
    cache() = default;
    cache(const cache&) = delete;
    cache& operator=(const cache&) = delete;
    ~cache() {
      dead = true;  // blocks released during later thread-exit destructors go to the heap
      for (std::size_t c = 0; c < class_count; ++c) {
        while (node* n = heads[c]) {
#if MQTTBROKER_HAS_ASAN
          ASAN_UNPOISON_MEMORY_REGION(n, class_sizes[c]);
#endif
          heads[c] = n->next;
          ::operator delete(n);
        }
      }
    }
  };

  static std::size_t class_of(std::size_t n) noexcept {
    for (std::size_t c = 0; c < class_count; ++c)
      if (n <= class_sizes[c]) return c;
    return class_count;
  }

  static cache& local() {
    static thread_local cache k;
    return k;
  }
};

/// An allocator over byte_pool for the memory of asynchronous operations: a connection's wait
/// and write come and go once per read and per batch, and Asio's own per-thread cache holds only
/// two, too few when one read reaches many connections.
template <class T>
struct pooled_allocator {
  using value_type = T;
  pooled_allocator() noexcept = default;
  template <class U>
  pooled_allocator(const pooled_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    std::size_t capacity = 0;
    return reinterpret_cast<T*>(byte_pool::acquire(n * sizeof(T), capacity));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    byte_pool::release(reinterpret_cast<std::uint8_t*>(p), byte_pool::capacity_for(n * sizeof(T)));
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

/// A growable byte buffer whose storage comes from byte_pool and goes back to it when reset, so
/// an idle owner holds no memory at all.
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
  bool empty() const noexcept { return size_ == 0; }

  /// Appends `n` bytes; the storage grows with what arrives, never ahead of it.
  void append(const std::uint8_t* p, std::size_t n) {
    if (n == 0) return;
    if (size_ + n > capacity_) grow(size_ + n);
    std::memcpy(data_ + size_, p, n);
    size_ += n;
  }

  /// Drops the first `n` bytes.
  void consume(std::size_t n) noexcept {
    if (n >= size_) {
      reset();
      return;
    }
    std::memmove(data_, data_ + n, size_ - n);
    size_ -= n;
  }

  /// Empties the buffer and gives its block back.
  void reset() noexcept {
    byte_pool::release(data_, capacity_);
    data_ = nullptr;
    size_ = 0;
    capacity_ = 0;
  }

 private:
  void grow(std::size_t need) {
    // Doubling above the largest class keeps a large packet's arrival linear.
    std::size_t want = need;
    if (capacity_ >= byte_pool::class_sizes[byte_pool::class_count - 1] && want < capacity_ * 2) want = capacity_ * 2;
    std::size_t cap = 0;
    std::uint8_t* p = byte_pool::acquire(want, cap);
    if (size_ != 0) std::memcpy(p, data_, size_);
    byte_pool::release(data_, capacity_);
    data_ = p;
    capacity_ = cap;
  }

  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

}  // namespace detail
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_DETAIL_BYTE_POOL_HPP
