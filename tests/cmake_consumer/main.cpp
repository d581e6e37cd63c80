#include <mqttbroker/mqttbroker.hpp>

// The package depends on fmt (the library formats its log messages with it) and hands it on: this
// program asks its build for mqttbroker alone (the CMake target, or pkg-config's flags), yet it
// includes fmt and calls fmt::format, whose body is in fmt's library (unless fmt is header-only).
// A package that dropped fmt fails here, to compile or to link.
#include <fmt/format.h>

#if FMT_VERSION < 80000
#error "mqttbroker needs fmt 8 or later, but its package let an older fmt through"
#endif

#include <cstdio>
#include <string>
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
  const std::string line =
      fmt::format("mqttbroker {}.{}.{} usable, with fmt {}.{}.{}", MQTTBROKER_VERSION_MAJOR,
                  MQTTBROKER_VERSION_MINOR, MQTTBROKER_VERSION_PATCH, FMT_VERSION / 10000,
                  FMT_VERSION / 100 % 100, FMT_VERSION % 100);
  std::puts(line.c_str());
  return 0;
}
