// Must not compile: authenticate in both forms, answering now and answering later. The broker
// could call only one of them, and which one would be a guess.
#include <mqttbroker/broker.hpp>

#include <cstddef>

namespace compile_fail {

struct hooks_with_both_forms {
  mqttbroker::hooks::auth_result authenticate(const mqttbroker::hooks::connect_info&) {
    return mqttbroker::hooks::auth_result::accept;
  }
  void authenticate(const mqttbroker::hooks::connect_info&, mqttbroker::hooks::auth_reply reply) {
    reply(mqttbroker::hooks::auth_result::not_authorized);
  }
};

struct policies : mqttbroker::default_policies {
  using hooks = hooks_with_both_forms;
};

}  // namespace compile_fail

std::size_t broker_size() { return sizeof(mqttbroker::broker<compile_fail::policies>); }
