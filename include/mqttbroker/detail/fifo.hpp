#ifndef MQTTBROKER_DETAIL_FIFO_HPP
#define MQTTBROKER_DETAIL_FIFO_HPP

#include <mqttbroker/config.hpp>

#include <cstddef>
#include <iterator>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace detail {

/// A first-in first-out queue over one vector. Unlike std::deque (which allocates on
/// construction in libstdc++), an empty fifo holds no memory, and that matters per session when
/// a broker keeps thousands of idle ones. Popping the front is amortised O(1): the consumed
/// prefix is dropped once it is half the vector.
template <class T>
class fifo {
 public:
  using value_type = T;
  using iterator = typename std::vector<T>::iterator;
  using const_iterator = typename std::vector<T>::const_iterator;

  bool empty() const noexcept { return head_ == items_.size(); }
  std::size_t size() const noexcept { return items_.size() - head_; }

  T& front() noexcept { return items_[head_]; }
  const T& front() const noexcept { return items_[head_]; }

  iterator begin() noexcept { return items_.begin() + static_cast<std::ptrdiff_t>(head_); }
  iterator end() noexcept { return items_.end(); }
  const_iterator begin() const noexcept { return items_.begin() + static_cast<std::ptrdiff_t>(head_); }
  const_iterator end() const noexcept { return items_.end(); }

  void push_back(const T& v) { items_.push_back(v); }
  void push_back(T&& v) { items_.push_back(std::move(v)); }

  void pop_front() {
    items_[head_] = T();  // release what the element owns now, not at the next compaction
    ++head_;
    if (head_ == items_.size()) {
      items_.clear();
      head_ = 0;
    } else if (head_ >= 32 && head_ * 2 >= items_.size()) {
      items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }

  /// Removes one element anywhere (an acknowledgement out of order); the front is O(1).
  void erase(iterator it) {
    if (it == begin()) {
      pop_front();
      return;
    }
    items_.erase(it);
  }

  void clear() noexcept {
    items_.clear();
    head_ = 0;
  }

 private:
  std::vector<T> items_;
  std::size_t head_ = 0;
};

}  // namespace detail
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_DETAIL_FIFO_HPP
