// Must not compile: a storage policy without `static constexpr bool durable`.
#include <mqttbroker/broker.hpp>

#include <cstddef>

namespace compile_fail {

struct storage_without_durable {
  static constexpr int version = 1;
};

struct policies : mqttbroker::default_policies {
  using storage = storage_without_durable;
};

}  // namespace compile_fail

std::size_t broker_size() { return sizeof(mqttbroker::broker<compile_fail::policies>); }
