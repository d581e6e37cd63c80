// Must not compile: on_connect as it was before the hooks got a client_info (the client identifier
// alone). A hook written for that signature must be reported, not silently never called.
#include <mqttbroker/broker.hpp>

#include <cstddef>
#include <string_view>

namespace compile_fail {

struct hooks_with_old_signature {
  void on_connect(std::string_view) {}
};

struct policies : mqttbroker::default_policies {
  using hooks = hooks_with_old_signature;
};

}  // namespace compile_fail

std::size_t broker_size() { return sizeof(mqttbroker::broker<compile_fail::policies>); }
