#include <mqttbroker/error.hpp>

#include "catch.hpp"

#include <cstdint>
#include <string>
#include <system_error>

using mqttbroker::codec_errc;
using mqttbroker::connack_return_code;
using mqttbroker::protocol_errc;
using mqttbroker::reason_code;

TEST_CASE("error categories are named after their family", "[error]") {
  CHECK(std::string(mqttbroker::codec_category().name()) == "mqttbroker.codec");
  CHECK(std::string(mqttbroker::protocol_category().name()) == "mqttbroker.protocol");
  CHECK(mqttbroker::codec_category() != mqttbroker::protocol_category());
}

TEST_CASE("make_error_code keeps value and category", "[error]") {
  const std::error_code ec = mqttbroker::make_error_code(codec_errc::truncated);
  CHECK(ec.value() == static_cast<int>(codec_errc::truncated));
  CHECK(ec.category() == mqttbroker::codec_category());
  CHECK(ec.message() == "field runs past the end of the packet");

  // is_error_code_enum lets the enums convert implicitly and compare with error codes.
  const std::error_code pc = protocol_errc::second_connect;
  CHECK(pc.category() == mqttbroker::protocol_category());
  CHECK(pc == protocol_errc::second_connect);
  CHECK(pc != make_error_code(codec_errc::truncated));
}

TEST_CASE("every codec and protocol error has its own message", "[error]") {
  for (int v = static_cast<int>(codec_errc::reserved_packet_type);
       v <= static_cast<int>(codec_errc::field_too_long); ++v) {  // the last enumerator
    INFO("codec_errc " << v);
    CHECK(mqttbroker::codec_category().message(v) != "unknown codec error");
  }
  for (int v = static_cast<int>(protocol_errc::first_packet_not_connect);
       v <= static_cast<int>(protocol_errc::no_local_on_shared_subscription); ++v) {  // the last enumerator
    INFO("protocol_errc " << v);
    CHECK(mqttbroker::protocol_category().message(v) != "unknown protocol error");
  }
  CHECK(mqttbroker::codec_category().message(0) == "unknown codec error");
}

TEST_CASE("reason codes carry the 5.0 wire values and names", "[error]") {
  CHECK(static_cast<std::uint8_t>(reason_code::malformed_packet) == 0x81);
  CHECK(static_cast<std::uint8_t>(reason_code::quota_exceeded) == 0x97);
  CHECK(static_cast<std::uint8_t>(reason_code::wildcard_subscriptions_not_supported) == 0xA2);
  CHECK(std::string(mqttbroker::to_string(reason_code::malformed_packet)) == "Malformed Packet");
  // Shared values print the first name of the table.
  CHECK(std::string(mqttbroker::to_string(reason_code::normal_disconnection)) == "Success");
}

TEST_CASE("to_reason_code maps errors to the reason a 5.0 server sends", "[error]") {
  CHECK(mqttbroker::to_reason_code(std::error_code{}) == reason_code::success);
  CHECK(mqttbroker::to_reason_code(codec_errc::truncated) == reason_code::malformed_packet);
  CHECK(mqttbroker::to_reason_code(codec_errc::invalid_qos) == reason_code::malformed_packet);
  CHECK(mqttbroker::to_reason_code(codec_errc::packet_too_large) == reason_code::packet_too_large);
  CHECK(mqttbroker::to_reason_code(protocol_errc::second_connect) == reason_code::protocol_error);
  CHECK(mqttbroker::to_reason_code(protocol_errc::unsupported_protocol_version) ==
        reason_code::unsupported_protocol_version);
  CHECK(mqttbroker::to_reason_code(protocol_errc::invalid_protocol_name) ==
        reason_code::unsupported_protocol_version);
  CHECK(mqttbroker::to_reason_code(protocol_errc::client_identifier_not_valid) ==
        reason_code::client_identifier_not_valid);
  CHECK(mqttbroker::to_reason_code(protocol_errc::topic_alias_invalid) == reason_code::topic_alias_invalid);
  CHECK(mqttbroker::to_reason_code(std::make_error_code(std::errc::io_error)) ==
        reason_code::unspecified_error);
}

TEST_CASE("to_connack_return_code maps only what 3.1.1 can say", "[error][MQTT-3.2.2-6]") {
  CHECK(mqttbroker::to_connack_return_code(protocol_errc::unsupported_protocol_version) ==
        connack_return_code::unacceptable_protocol_version);
  CHECK(mqttbroker::to_connack_return_code(protocol_errc::invalid_protocol_name) ==
        connack_return_code::unacceptable_protocol_version);
  CHECK(mqttbroker::to_connack_return_code(protocol_errc::client_identifier_not_valid) ==
        connack_return_code::identifier_rejected);
  // No 3.1.1 return code exists for these: the server closes the connection without a CONNACK.
  CHECK_FALSE(mqttbroker::to_connack_return_code(protocol_errc::second_connect).has_value());
  CHECK_FALSE(mqttbroker::to_connack_return_code(codec_errc::truncated).has_value());
  CHECK_FALSE(mqttbroker::to_connack_return_code(std::make_error_code(std::errc::io_error)).has_value());
}
