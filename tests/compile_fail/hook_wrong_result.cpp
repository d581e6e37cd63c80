// Must not compile: authenticate returns bool where the broker expects hooks::auth_result.
#include <mqttbroker/broker.hpp>

#include <cstddef>

namespace compile_fail {

struct hooks_with_wrong_result {
  bool authenticate(const mqttbroker::hooks::connect_info&) { return true; }
};

struct policies : mqttbroker::default_policies {
  using hooks = hooks_with_wrong_result;
};

}  // namespace compile_fail

std::size_t broker_size() { return sizeof(mqttbroker::broker<compile_fail::policies>); }
