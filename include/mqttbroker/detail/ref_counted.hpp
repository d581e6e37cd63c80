#ifndef MQTTBROKER_DETAIL_REF_COUNTED_HPP
#define MQTTBROKER_DETAIL_REF_COUNTED_HPP

#include <mqttbroker/config.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

MQTTBROKER_BEGIN_NAMESPACE
namespace detail {

/// A reference count kept inside the object. The broker keeps a connection and a session per
/// client, and std::shared_ptr would add a control block and an enable_shared_from_this to
/// each (32 bytes), and make every pointer to them two words. Thread-safe, as shared_ptr is.
class ref_counted {
 public:
  ref_counted() noexcept = default;
  ref_counted(const ref_counted&) = delete;
  ref_counted& operator=(const ref_counted&) = delete;

 protected:
  ~ref_counted() = default;

 private:
  template <class>
  friend class ref_ptr;
  mutable std::atomic<std::uint32_t> refs_{0};
};

/// Shared ownership of a ref_counted T, which it deletes with the last reference. A reference can
/// be made from a plain `this`, which is what enable_shared_from_this is for with shared_ptr.
template <class T>
class ref_ptr {
 public:
  ref_ptr() noexcept = default;
  ref_ptr(std::nullptr_t) noexcept {}  // NOLINT: a null pointer converts, as for shared_ptr
  explicit ref_ptr(T* p) noexcept : p_(p) {
    if (p_ != nullptr) acquire(p_);
  }
  ref_ptr(const ref_ptr& o) noexcept : p_(o.p_) {
    if (p_ != nullptr) acquire(p_);
  }
  ref_ptr(ref_ptr&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  ref_ptr& operator=(const ref_ptr& o) noexcept {
    ref_ptr(o).swap(*this);
    return *this;
  }
  ref_ptr& operator=(ref_ptr&& o) noexcept {
    ref_ptr(std::move(o)).swap(*this);
    return *this;
  }
  ~ref_ptr() {
    if (p_ != nullptr) release(p_);
  }

  template <class... Args>
  static ref_ptr make(Args&&... args) {
    return ref_ptr(new T(std::forward<Args>(args)...));
  }

  /// Takes over a reference that detach() gave up.
  static ref_ptr adopt(T* p) noexcept {
    ref_ptr r;
    r.p_ = p;
    return r;
  }
  /// Gives up this reference without dropping it: the caller now owns it (see adopt()).
  T* detach() noexcept { return std::exchange(p_, nullptr); }

  T* get() const noexcept { return p_; }
  T& operator*() const noexcept { return *p_; }
  T* operator->() const noexcept { return p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }

  void reset() noexcept { ref_ptr().swap(*this); }
  void swap(ref_ptr& o) noexcept { std::swap(p_, o.p_); }

  /// References held to the object, for tests.
  std::uint32_t use_count() const noexcept { return p_ != nullptr ? count(p_).load(std::memory_order_relaxed) : 0; }

  friend bool operator==(const ref_ptr& a, const ref_ptr& b) noexcept { return a.p_ == b.p_; }
  friend bool operator!=(const ref_ptr& a, const ref_ptr& b) noexcept { return a.p_ != b.p_; }

 private:
  static std::atomic<std::uint32_t>& count(const T* p) noexcept { return static_cast<const ref_counted*>(p)->refs_; }
  static void acquire(const T* p) noexcept { count(p).fetch_add(1, std::memory_order_relaxed); }
  static void release(const T* p) noexcept {
    if (count(p).fetch_sub(1, std::memory_order_acq_rel) == 1) delete p;
  }

  T* p_ = nullptr;
};

}  // namespace detail
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_DETAIL_REF_COUNTED_HPP
