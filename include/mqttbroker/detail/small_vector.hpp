#ifndef MQTTBROKER_DETAIL_SMALL_VECTOR_HPP
#define MQTTBROKER_DETAIL_SMALL_VECTOR_HPP

#include <mqttbroker/config.hpp>

#include <cstddef>
#include <type_traits>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace detail {

/// A vector of trivially copyable values that keeps up to N of them inline: the usual message
/// carries no Subscription Identifier or one, and must not allocate per subscriber for it.
template <class T, std::size_t N>
class small_vector {
  static_assert(std::is_trivially_copyable_v<T>, "small_vector holds plain values");

 public:
  using value_type = T;
  using const_iterator = const T*;

  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }
  const T* begin() const noexcept { return size_ <= N ? inline_ : heap_.data(); }
  const T* end() const noexcept { return begin() + size_; }
  const T& operator[](std::size_t i) const noexcept { return begin()[i]; }

  void push_back(const T& v) {
    if (size_ < N) {
      inline_[size_++] = v;
      return;
    }
    if (size_ == N) heap_.assign(inline_, inline_ + N);  // from here on, all in heap_
    heap_.push_back(v);
    ++size_;
  }

  void clear() noexcept {
    size_ = 0;
    heap_.clear();
  }

 private:
  T inline_[N] = {};
  std::size_t size_ = 0;
  std::vector<T> heap_;
};

}  // namespace detail
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_DETAIL_SMALL_VECTOR_HPP
