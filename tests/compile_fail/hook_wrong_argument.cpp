// Must not compile: authorize_publish takes a message_ptr where the broker passes a const message&.
// Before strict detection this hook compiled and was never called: every publish was allowed.
#include <mqttbroker/broker.hpp>

#include <cstddef>
#include <string_view>

namespace compile_fail {

struct hooks_with_wrong_argument {
  bool authorize_publish(const mqttbroker::hooks::client_info&, mqttbroker::message_ptr) { return false; }
};

struct policies : mqttbroker::default_policies {
  using hooks = hooks_with_wrong_argument;
};

}  // namespace compile_fail

std::size_t broker_size() { return sizeof(mqttbroker::broker<compile_fail::policies>); }
