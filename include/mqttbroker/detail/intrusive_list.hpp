#ifndef MQTTBROKER_DETAIL_INTRUSIVE_LIST_HPP
#define MQTTBROKER_DETAIL_INTRUSIVE_LIST_HPP

#include <mqttbroker/config.hpp>
#include <mqttbroker/detail/ref_counted.hpp>

#include <cstddef>

MQTTBROKER_BEGIN_NAMESPACE
namespace detail {

/// The links an element of an owning_list carries: two pointers, where a node-based container
/// would allocate a node per element.
class list_links {
  template <class>
  friend class owning_list;
  list_links* prev_ = nullptr;
  list_links* next_ = nullptr;
};

/// A doubly linked list of ref_counted elements that derive from list_links, holding a reference
/// to each, as a container of ref_ptr would. An element is in at most one list at a time.
template <class T>
class owning_list {
 public:
  owning_list() noexcept = default;
  owning_list(const owning_list&) = delete;
  owning_list& operator=(const owning_list&) = delete;
  ~owning_list() { clear(); }

  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }

  void push_back(ref_ptr<T> p) {
    list_links* n = p.detach();
    n->prev_ = tail_;
    n->next_ = nullptr;
    if (tail_ != nullptr)
      tail_->next_ = n;
    else
      head_ = n;
    tail_ = n;
    ++size_;
  }

  /// Takes `e` out of the list and returns the list's reference to it.
  ref_ptr<T> erase(T& e) noexcept {
    list_links* n = &e;
    (n->prev_ != nullptr ? n->prev_->next_ : head_) = n->next_;
    (n->next_ != nullptr ? n->next_->prev_ : tail_) = n->prev_;
    n->prev_ = n->next_ = nullptr;
    --size_;
    return ref_ptr<T>::adopt(&e);
  }

  /// `f(T&)` for each element, in insertion order; `f` must not change the list.
  template <class F>
  void for_each(F&& f) const {
    for (list_links* n = head_; n != nullptr; n = n->next_) f(*static_cast<T*>(n));
  }

  void clear() noexcept {
    while (head_ != nullptr) erase(*static_cast<T*>(head_));
  }

 private:
  list_links* head_ = nullptr;
  list_links* tail_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace detail
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_DETAIL_INTRUSIVE_LIST_HPP
