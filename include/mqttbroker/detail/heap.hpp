#ifndef MQTTBROKER_DETAIL_HEAP_HPP
#define MQTTBROKER_DETAIL_HEAP_HPP

// Handing freed heap memory back to the system, where the C library keeps it (glibc's arenas
// keep what a burst freed until something trims them). A no-op elsewhere.

#include <mqttbroker/config.hpp>

#include <cstddef>

#if defined(__GLIBC__) && defined(__GLIBC_MINOR__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#include <malloc.h>
#define MQTTBROKER_HEAP_TRIM 1
#else
#define MQTTBROKER_HEAP_TRIM 0
#endif

MQTTBROKER_BEGIN_NAMESPACE
namespace detail {

/// Trims the heap when it holds `threshold` more free bytes than it did after the last trim.
/// Not thread-safe: one caller (the broker's sweep).
class heap_trimmer {
 public:
  /// Whether this call trimmed (the free bytes it saw are in `seen`); `before_trim()` runs first
  /// when it does (the caller's caches let go of what they keep).
  template <class BeforeTrim>
  bool check(std::size_t threshold, std::size_t& seen, BeforeTrim&& before_trim) noexcept {
    seen = 0;
#if MQTTBROKER_HEAP_TRIM
    if (threshold == 0) return false;
    seen = free_bytes();
    if (seen < floor_ + threshold) {
      if (seen < floor_) floor_ = seen;  // in use again: the next burst counts from here
      return false;
    }
    before_trim();
    ::malloc_trim(0);
    // The chunks stay free in the heap's lists (their pages went back): the next trim waits for
    // as much again to be freed.
    floor_ = free_bytes();
    return true;
#else
    (void)threshold;
    (void)before_trim;
    return false;
#endif
  }

  /// The free bytes the heap holds (what a trim could give back at most); 0 where unknown.
  static std::size_t free_bytes() noexcept {
#if MQTTBROKER_HEAP_TRIM
    const struct mallinfo2 mi = ::mallinfo2();
    return mi.fordblks;
#else
    return 0;
#endif
  }

 private:
  std::size_t floor_ = 0;  // free bytes after the last trim
};

}  // namespace detail
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_DETAIL_HEAP_HPP
