// Must not compile: authorize_subscribe takes the filter as std::string& (a const is missing, and
// the type differs), which the broker's std::string_view cannot bind to. Before strict detection
// this hook compiled and was never called: every subscription was allowed.
#include <mqttbroker/broker.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace compile_fail {

struct hooks_with_missing_const {
  bool authorize_subscribe(const mqttbroker::hooks::client_info&, std::string&, mqttbroker::codec::qos) { return false; }
};

struct policies : mqttbroker::default_policies {
  using hooks = hooks_with_missing_const;
};

}  // namespace compile_fail

std::size_t broker_size() { return sizeof(mqttbroker::broker<compile_fail::policies>); }
