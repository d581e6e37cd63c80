#include <mqttbroker/mqttbroker.hpp>

// The package links no fmt, so no header of the library may include it (fmt's headers define
// FMT_VERSION, whichever of them comes in).
#ifdef FMT_VERSION
#error "a header of mqttbroker includes fmt, but the package does not depend on fmt"
#endif

#include <cstdio>
#include <system_error>

#ifdef MQTTBROKER_CONSUMER_SINGLE_HEADER
int single_header_version();  // single.cpp
#endif

int main() {
  const std::error_code ec = mqttbroker::protocol_errc::second_connect;
  if (mqttbroker::to_reason_code(ec) != mqttbroker::reason_code::protocol_error) {
    std::puts("FAILED: to_reason_code");
    return 1;
  }
#ifdef MQTTBROKER_CONSUMER_SINGLE_HEADER
  if (single_header_version() != MQTTBROKER_VERSION) {
    std::printf("FAILED: the single header is version %d, the headers %d\n", single_header_version(),
                MQTTBROKER_VERSION);
    return 1;
  }
#endif
  std::printf("mqttbroker %d.%d.%d usable\n", MQTTBROKER_VERSION_MAJOR, MQTTBROKER_VERSION_MINOR,
              MQTTBROKER_VERSION_PATCH);
  return 0;
}
