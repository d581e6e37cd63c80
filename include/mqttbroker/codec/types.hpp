#ifndef MQTTBROKER_CODEC_TYPES_HPP
#define MQTTBROKER_CODEC_TYPES_HPP

#include <mqttbroker/config.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

MQTTBROKER_BEGIN_NAMESPACE
namespace codec {

/// The protocol level byte of CONNECT.
enum class protocol_version : std::uint8_t {
  v3_1 = 3,    // "MQIsdp"; accepted as Mosquitto does, handled like 3.1.1
  v3_1_1 = 4,
  v5 = 5,
};

/// Control packet types (the high nibble of the first byte).
enum class packet_type : std::uint8_t {
  connect = 1,
  connack = 2,
  publish = 3,
  puback = 4,
  pubrec = 5,
  pubrel = 6,
  pubcomp = 7,
  subscribe = 8,
  suback = 9,
  unsubscribe = 10,
  unsuback = 11,
  pingreq = 12,
  pingresp = 13,
  disconnect = 14,
  auth = 15,
};

inline const char* to_string(packet_type t) noexcept {
  switch (t) {
    case packet_type::connect: return "CONNECT";
    case packet_type::connack: return "CONNACK";
    case packet_type::publish: return "PUBLISH";
    case packet_type::puback: return "PUBACK";
    case packet_type::pubrec: return "PUBREC";
    case packet_type::pubrel: return "PUBREL";
    case packet_type::pubcomp: return "PUBCOMP";
    case packet_type::subscribe: return "SUBSCRIBE";
    case packet_type::suback: return "SUBACK";
    case packet_type::unsubscribe: return "UNSUBSCRIBE";
    case packet_type::unsuback: return "UNSUBACK";
    case packet_type::pingreq: return "PINGREQ";
    case packet_type::pingresp: return "PINGRESP";
    case packet_type::disconnect: return "DISCONNECT";
    case packet_type::auth: return "AUTH";
  }
  return "UNKNOWN";
}

enum class qos : std::uint8_t {
  at_most_once = 0,
  at_least_once = 1,
  exactly_once = 2,
};

enum class retain_handling_option : std::uint8_t {
  send = 0,          // send retained messages at subscribe
  send_if_new = 1,   // only if the subscription did not exist
  dont_send = 2,
};

struct subscribe_options {
  qos max_qos = qos::at_most_once;
  bool no_local = false;                                   // 5.0
  bool retain_as_published = false;                        // 5.0
  retain_handling_option retain_handling = retain_handling_option::send;  // 5.0

  friend bool operator==(const subscribe_options& a, const subscribe_options& b) noexcept {
    return a.max_qos == b.max_qos && a.no_local == b.no_local && a.retain_as_published == b.retain_as_published &&
           a.retain_handling == b.retain_handling;
  }
  friend bool operator!=(const subscribe_options& a, const subscribe_options& b) noexcept { return !(a == b); }
};

/// Which end of the connection decodes: a server accepts only client-to-server packets.
enum class role : std::uint8_t { server, client };

/// Binary data and payloads are byte strings; a view never owns its bytes.
using binary_view = std::string_view;

/// Largest Remaining Length a 4-byte Variable Byte Integer can hold [MQTT-1.5.5].
inline constexpr std::uint32_t max_remaining_length = 268'435'455;
/// Largest whole packet: fixed header byte + 4 length bytes + max_remaining_length.
inline constexpr std::uint32_t max_packet_size = max_remaining_length + 5;

}  // namespace codec
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CODEC_TYPES_HPP
