// Must not compile: redirect returns the server reference alone where the broker expects
// std::optional<hooks::redirection>.
#include <mqttbroker/broker.hpp>

#include <cstddef>
#include <string>

namespace compile_fail {

struct hooks_with_wrong_redirect {
  std::string redirect(const mqttbroker::hooks::connect_info&) { return "elsewhere:1883"; }
};

struct policies : mqttbroker::default_policies {
  using hooks = hooks_with_wrong_redirect;
};

}  // namespace compile_fail

std::size_t broker_size() { return sizeof(mqttbroker::broker<compile_fail::policies>); }
