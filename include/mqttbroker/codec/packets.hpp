#ifndef MQTTBROKER_CODEC_PACKETS_HPP
#define MQTTBROKER_CODEC_PACKETS_HPP

#include <mqttbroker/codec/properties.hpp>
#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/error.hpp>

#include <cstdint>
#include <optional>
#include <string_view>
#include <variant>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace codec {

// Packets hold views: a decoded packet points into the bytes it was decoded from, and a packet to
// encode points into the caller's storage. Fields a protocol version lacks are ignored when
// encoding for it and left at their defaults when decoding it.

struct will_message {
  std::string_view topic;
  binary_view payload;
  qos qos_level = qos::at_most_once;
  bool retain = false;
  properties_view properties;  // 5.0
};

struct connect {
  protocol_version version = protocol_version::v3_1_1;
  bool clean_start = true;  // Clean Session in 3.1.1
  std::uint16_t keep_alive = 0;
  properties_view properties;  // 5.0
  std::string_view client_id;
  std::optional<will_message> will;
  std::optional<std::string_view> username;
  std::optional<binary_view> password;
  /// The protocol level's high bit (0x83, 0x84, 0x85), which Mosquitto's bridges set
  /// (`try_private`): the server may treat the connection as a bridge. Not in the specification.
  bool bridge = false;
};

struct connack {
  bool session_present = false;
  /// A reason_code in 5.0; a connack_return_code in 3.1.1.
  std::uint8_t code = 0;
  properties_view properties;  // 5.0

  reason_code reason() const noexcept { return static_cast<reason_code>(code); }
  connack_return_code return_code() const noexcept { return static_cast<connack_return_code>(code); }
};

struct publish {
  std::string_view topic;
  binary_view payload;
  qos qos_level = qos::at_most_once;
  bool retain = false;
  bool dup = false;
  std::uint16_t packet_id = 0;  // only with QoS 1 and 2
  properties_view properties;   // 5.0
};

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape; the tag keeps them distinct types.
template <packet_type Type>
struct basic_ack {
  static constexpr packet_type type = Type;
  std::uint16_t packet_id = 0;
  reason_code reason = reason_code::success;  // 5.0
  properties_view properties;                 // 5.0
};
using puback = basic_ack<packet_type::puback>;
using pubrec = basic_ack<packet_type::pubrec>;
using pubrel = basic_ack<packet_type::pubrel>;
using pubcomp = basic_ack<packet_type::pubcomp>;

struct subscribe_entry {
  std::string_view filter;
  subscribe_options options;
};

struct subscribe {
  std::uint16_t packet_id = 0;
  properties_view properties;  // 5.0
  std::vector<subscribe_entry> entries;
};

struct suback {
  std::uint16_t packet_id = 0;
  properties_view properties;  // 5.0
  /// One per filter. 3.1.1 return codes 0, 1, 2 and 0x80 have the same values as these names.
  std::vector<reason_code> reasons;
};

struct unsubscribe {
  std::uint16_t packet_id = 0;
  properties_view properties;  // 5.0
  std::vector<std::string_view> filters;
};

struct unsuback {
  std::uint16_t packet_id = 0;
  properties_view properties;  // 5.0
  std::vector<reason_code> reasons;  // 5.0; empty in 3.1.1
};

struct pingreq {};
struct pingresp {};

struct disconnect {
  reason_code reason = reason_code::normal_disconnection;  // 5.0
  properties_view properties;                              // 5.0
};

struct auth {
  reason_code reason = reason_code::success;
  properties_view properties;
};

/// Any control packet. The alternative's index is its packet_type minus one.
using packet = std::variant<connect, connack, publish, puback, pubrec, pubrel, pubcomp, subscribe, suback,
                            unsubscribe, unsuback, pingreq, pingresp, disconnect, auth>;

constexpr packet_type type_of(const connect&) noexcept { return packet_type::connect; }
constexpr packet_type type_of(const connack&) noexcept { return packet_type::connack; }
constexpr packet_type type_of(const publish&) noexcept { return packet_type::publish; }
template <packet_type T>
constexpr packet_type type_of(const basic_ack<T>&) noexcept { return T; }
constexpr packet_type type_of(const subscribe&) noexcept { return packet_type::subscribe; }
constexpr packet_type type_of(const suback&) noexcept { return packet_type::suback; }
constexpr packet_type type_of(const unsubscribe&) noexcept { return packet_type::unsubscribe; }
constexpr packet_type type_of(const unsuback&) noexcept { return packet_type::unsuback; }
constexpr packet_type type_of(const pingreq&) noexcept { return packet_type::pingreq; }
constexpr packet_type type_of(const pingresp&) noexcept { return packet_type::pingresp; }
constexpr packet_type type_of(const disconnect&) noexcept { return packet_type::disconnect; }
constexpr packet_type type_of(const auth&) noexcept { return packet_type::auth; }
inline packet_type type_of(const packet& p) noexcept { return static_cast<packet_type>(p.index() + 1); }

}  // namespace codec
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CODEC_PACKETS_HPP
