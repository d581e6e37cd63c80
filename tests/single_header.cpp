// Compiled against single_include/ only (CMake gives it no include/): proves the generated header
// stands alone.
#include <mqttbroker/mqttbroker.hpp>

#ifndef MQTTBROKER_SINGLE_HEADER
#error "this test must include single_include/mqttbroker/mqttbroker.hpp, not include/"
#endif

#include "catch.hpp"

#include <string>
#include <system_error>

TEST_CASE("single header: version matches the project version", "[single_header]") {
  CHECK(MQTTBROKER_VERSION_MAJOR == MQTTBROKER_EXPECTED_VERSION_MAJOR);
  CHECK(MQTTBROKER_VERSION_MINOR == MQTTBROKER_EXPECTED_VERSION_MINOR);
  CHECK(MQTTBROKER_VERSION_PATCH == MQTTBROKER_EXPECTED_VERSION_PATCH);
}

TEST_CASE("single header: errors map to reason codes", "[single_header]") {
  const std::error_code ec = mqttbroker::codec_errc::packet_too_large;
  CHECK(std::string(ec.category().name()) == "mqttbroker.codec");
  CHECK(mqttbroker::to_reason_code(ec) == mqttbroker::reason_code::packet_too_large);
  CHECK(mqttbroker::to_connack_return_code(mqttbroker::protocol_errc::client_identifier_not_valid) ==
        mqttbroker::connack_return_code::identifier_rejected);
}
