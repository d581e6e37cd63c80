#include <mqttbroker/mqttbroker.hpp>

#include <cstdio>
#include <system_error>

int main() {
  const std::error_code ec = mqttbroker::protocol_errc::second_connect;
  if (mqttbroker::to_reason_code(ec) != mqttbroker::reason_code::protocol_error) {
    std::puts("FAILED: to_reason_code");
    return 1;
  }
  std::printf("mqttbroker %d.%d.%d usable\n", MQTTBROKER_VERSION_MAJOR, MQTTBROKER_VERSION_MINOR,
              MQTTBROKER_VERSION_PATCH);
  return 0;
}
