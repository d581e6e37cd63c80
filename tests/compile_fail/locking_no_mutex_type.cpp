// Must not compile: a locking policy with everything but mutex_type.
#include <mqttbroker/broker.hpp>

#include <cstddef>

namespace compile_fail {

struct locking_without_mutex {
  static constexpr bool thread_safe = false;
  template <class T>
  using counter_type = mqttbroker::locking::none::counter_type<T>;
  template <class Executor>
  using strand_type = Executor;
  template <class Executor>
  static Executor make_strand(const Executor& ex) { return ex; }
};

struct policies : mqttbroker::default_policies {
  using locking = locking_without_mutex;
};

}  // namespace compile_fail

std::size_t broker_size() { return sizeof(mqttbroker::broker<compile_fail::policies>); }
