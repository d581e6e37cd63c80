#ifndef MQTTBROKER_LOCKING_NONE_HPP
#define MQTTBROKER_LOCKING_NONE_HPP

#include <mqttbroker/config.hpp>

#include <cstdint>

MQTTBROKER_BEGIN_NAMESPACE
namespace locking {

/// For a host that runs the io_context on one thread: locks compile to nothing and handlers need
/// no strand. spdlog's null_mutex in broker form.
struct none {
  static constexpr bool thread_safe = false;

  /// Handlers on one thread never run at once: a connection's strand is its executor itself, which
  /// a connection then does not store.
  template <class Executor>
  using strand_type = Executor;
  template <class Executor>
  static Executor make_strand(const Executor& ex) { return ex; }

  struct mutex_type {
    void lock() noexcept {}
    void unlock() noexcept {}
    bool try_lock() noexcept { return true; }
    void lock_shared() noexcept {}
    void unlock_shared() noexcept {}
    bool try_lock_shared() noexcept { return true; }
  };
  using session_mutex_type = mutex_type;

  /// A plain integer in the shape of std::atomic for the calls the broker makes.
  template <class T>
  struct counter_type {
    T value{};
    T load(int = 0) const noexcept { return value; }
    void store(T v, int = 0) noexcept { value = v; }
    T fetch_add(T d, int = 0) noexcept {
      T old = value;
      value = static_cast<T>(value + d);
      return old;
    }
    T fetch_sub(T d, int = 0) noexcept {
      T old = value;
      value = static_cast<T>(value - d);
      return old;
    }
  };
};

}  // namespace locking
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_LOCKING_NONE_HPP
