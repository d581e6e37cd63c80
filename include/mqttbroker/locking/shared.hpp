#ifndef MQTTBROKER_LOCKING_SHARED_HPP
#define MQTTBROKER_LOCKING_SHARED_HPP

#include <mqttbroker/config.hpp>

#include <atomic>
#include <shared_mutex>

MQTTBROKER_BEGIN_NAMESPACE
namespace locking {

/// For a host that runs the io_context on several threads: shared state sits behind a
/// reader/writer lock (subscriptions are read on every publish and written rarely) and each
/// connection's handlers run on a strand of their own.
struct shared {
  static constexpr bool thread_safe = true;
  using mutex_type = std::shared_mutex;
  template <class T>
  using counter_type = std::atomic<T>;
};

}  // namespace locking
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_LOCKING_SHARED_HPP
