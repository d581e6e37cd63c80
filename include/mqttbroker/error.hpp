#ifndef MQTTBROKER_ERROR_HPP
#define MQTTBROKER_ERROR_HPP

#include <mqttbroker/config.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>

MQTTBROKER_BEGIN_NAMESPACE

/// MQTT 5.0 reason codes (section 2.4). Several names share a value, as in the specification.
enum class reason_code : std::uint8_t {
  success = 0x00,
  normal_disconnection = 0x00,
  granted_qos_0 = 0x00,
  granted_qos_1 = 0x01,
  granted_qos_2 = 0x02,
  disconnect_with_will_message = 0x04,
  no_matching_subscribers = 0x10,
  no_subscription_existed = 0x11,
  continue_authentication = 0x18,
  re_authenticate = 0x19,
  unspecified_error = 0x80,
  malformed_packet = 0x81,
  protocol_error = 0x82,
  implementation_specific_error = 0x83,
  unsupported_protocol_version = 0x84,
  client_identifier_not_valid = 0x85,
  bad_user_name_or_password = 0x86,
  not_authorized = 0x87,
  server_unavailable = 0x88,
  server_busy = 0x89,
  banned = 0x8A,
  server_shutting_down = 0x8B,
  bad_authentication_method = 0x8C,
  keep_alive_timeout = 0x8D,
  session_taken_over = 0x8E,
  topic_filter_invalid = 0x8F,
  topic_name_invalid = 0x90,
  packet_identifier_in_use = 0x91,
  packet_identifier_not_found = 0x92,
  receive_maximum_exceeded = 0x93,
  topic_alias_invalid = 0x94,
  packet_too_large = 0x95,
  message_rate_too_high = 0x96,
  quota_exceeded = 0x97,
  administrative_action = 0x98,
  payload_format_invalid = 0x99,
  retain_not_supported = 0x9A,
  qos_not_supported = 0x9B,
  use_another_server = 0x9C,
  server_moved = 0x9D,
  shared_subscriptions_not_supported = 0x9E,
  connection_rate_exceeded = 0x9F,
  maximum_connect_time = 0xA0,
  subscription_identifiers_not_supported = 0xA1,
  wildcard_subscriptions_not_supported = 0xA2,
};

/// The specification's name of a reason code ("Malformed Packet"); the first name for shared values.
inline const char* to_string(reason_code rc) noexcept {
  switch (rc) {
    case reason_code::success: return "Success";
    case reason_code::granted_qos_1: return "Granted QoS 1";
    case reason_code::granted_qos_2: return "Granted QoS 2";
    case reason_code::disconnect_with_will_message: return "Disconnect with Will Message";
    case reason_code::no_matching_subscribers: return "No matching subscribers";
    case reason_code::no_subscription_existed: return "No subscription existed";
    case reason_code::continue_authentication: return "Continue authentication";
    case reason_code::re_authenticate: return "Re-authenticate";
    case reason_code::unspecified_error: return "Unspecified error";
    case reason_code::malformed_packet: return "Malformed Packet";
    case reason_code::protocol_error: return "Protocol Error";
    case reason_code::implementation_specific_error: return "Implementation specific error";
    case reason_code::unsupported_protocol_version: return "Unsupported Protocol Version";
    case reason_code::client_identifier_not_valid: return "Client Identifier not valid";
    case reason_code::bad_user_name_or_password: return "Bad User Name or Password";
    case reason_code::not_authorized: return "Not authorized";
    case reason_code::server_unavailable: return "Server unavailable";
    case reason_code::server_busy: return "Server busy";
    case reason_code::banned: return "Banned";
    case reason_code::server_shutting_down: return "Server shutting down";
    case reason_code::bad_authentication_method: return "Bad authentication method";
    case reason_code::keep_alive_timeout: return "Keep Alive timeout";
    case reason_code::session_taken_over: return "Session taken over";
    case reason_code::topic_filter_invalid: return "Topic Filter invalid";
    case reason_code::topic_name_invalid: return "Topic Name invalid";
    case reason_code::packet_identifier_in_use: return "Packet Identifier in use";
    case reason_code::packet_identifier_not_found: return "Packet Identifier not found";
    case reason_code::receive_maximum_exceeded: return "Receive Maximum exceeded";
    case reason_code::topic_alias_invalid: return "Topic Alias invalid";
    case reason_code::packet_too_large: return "Packet too large";
    case reason_code::message_rate_too_high: return "Message rate too high";
    case reason_code::quota_exceeded: return "Quota exceeded";
    case reason_code::administrative_action: return "Administrative action";
    case reason_code::payload_format_invalid: return "Payload format invalid";
    case reason_code::retain_not_supported: return "Retain not supported";
    case reason_code::qos_not_supported: return "QoS not supported";
    case reason_code::use_another_server: return "Use another server";
    case reason_code::server_moved: return "Server moved";
    case reason_code::shared_subscriptions_not_supported: return "Shared Subscriptions not supported";
    case reason_code::connection_rate_exceeded: return "Connection rate exceeded";
    case reason_code::maximum_connect_time: return "Maximum connect time";
    case reason_code::subscription_identifiers_not_supported: return "Subscription Identifiers not supported";
    case reason_code::wildcard_subscriptions_not_supported: return "Wildcard Subscriptions not supported";
  }
  return "Unknown reason code";
}

/// MQTT 3.1.1 CONNACK return codes (section 3.2.2.3).
enum class connack_return_code : std::uint8_t {
  accepted = 0,
  unacceptable_protocol_version = 1,
  identifier_rejected = 2,
  server_unavailable = 3,
  bad_user_name_or_password = 4,
  not_authorized = 5,
};

inline const char* to_string(connack_return_code rc) noexcept {
  switch (rc) {
    case connack_return_code::accepted: return "Connection Accepted";
    case connack_return_code::unacceptable_protocol_version: return "unacceptable protocol version";
    case connack_return_code::identifier_rejected: return "identifier rejected";
    case connack_return_code::server_unavailable: return "server unavailable";
    case connack_return_code::bad_user_name_or_password: return "bad user name or password";
    case connack_return_code::not_authorized: return "not authorized";
  }
  return "unknown return code";
}

/// Malformed packets: the bytes do not form a valid packet (5.0 reason 0x81, or 0x95 when too large).
enum class codec_errc {
  reserved_packet_type = 1,      // type 0 or 15, or AUTH before 5.0
  invalid_fixed_header_flags,    // [MQTT-2.1.3-1]
  remaining_length_too_long,     // more than 4 bytes of Variable Byte Integer [MQTT-1.5.5]
  packet_too_large,              // above the configured maximum packet size
  truncated,                     // a field runs past the end of the packet
  trailing_bytes,                // bytes left over after the last field
  invalid_utf8,                  // [MQTT-1.5.4-1]
  utf8_null_character,           // [MQTT-1.5.4-2]
  invalid_qos,                   // QoS 3 [MQTT-3.3.1-4]
  invalid_connect_flags,         // reserved bit, or will QoS/retain without will flag [MQTT-3.1.2-3]
  invalid_connack_flags,         // reserved Connect Acknowledge Flags bits set
  invalid_property_identifier,   // unknown, or not allowed in this packet [MQTT-2.2.2]
  invalid_reason_code,           // a reason code the packet type does not define
  invalid_subscription_options,  // reserved bits set in SUBSCRIBE options [MQTT-3.8.3-5]
  invalid_varint,                // a non-minimal or overlong Variable Byte Integer field
  field_too_long,                // encoding: a string or binary field over 65,535 bytes
};

/// Protocol errors: a well-formed packet the protocol forbids here (5.0 reason 0x82 and kin).
enum class protocol_errc {
  first_packet_not_connect = 1,    // [MQTT-3.1.0-1]
  second_connect,                  // [MQTT-3.1.0-2]
  unexpected_packet,               // a packet this side must never receive
  unsupported_protocol_version,    // [MQTT-3.1.2-2]
  invalid_protocol_name,           // [MQTT-3.1.2-1]
  password_without_username,       // 3.1.1 [MQTT-3.1.2-22]
  zero_packet_identifier,          // [MQTT-2.2.1-3]
  duplicate_property,              // a property allowed at most once appears twice
  invalid_property_value,          // e.g. Receive Maximum 0, Payload Format Indicator 2
  no_topic_filters,                // SUBSCRIBE/UNSUBSCRIBE without payload [MQTT-3.8.3-3]
  invalid_retain_handling,         // Retain Handling 3
  invalid_subscription_qos,        // SUBSCRIBE Maximum QoS 3 (5.0 calls it a Protocol Error)
  client_identifier_not_valid,     // empty id with clean session 0 in 3.1.1 [MQTT-3.1.3-8]
  topic_name_invalid,              // wildcards or empty topic name in PUBLISH
  topic_filter_invalid,
  topic_alias_invalid,             // 0 or above the negotiated maximum
  auth_method_missing,             // Authentication Data without Authentication Method
  receive_maximum_exceeded,        // more unacknowledged QoS 2 PUBLISH than the Receive Maximum
  topic_alias_unknown,             // an alias the sender never set on this connection
  payload_format_invalid,          // 5.0: Payload Format Indicator 1 on a payload that is not UTF-8
  qos_not_supported,               // a PUBLISH above the Maximum QoS the server announced
  retain_not_supported,            // a retained PUBLISH where the server announced Retain Available 0
  auth_method_mismatch,            // 5.0: AUTH without the Authentication Method of the CONNECT [MQTT-4.12.0-5]
  unexpected_auth,                 // 5.0: AUTH with no exchange to continue or start, or with the wrong reason
  packet_during_authentication,    // 5.0: a packet other than AUTH or DISCONNECT before the CONNACK of an exchange
  no_local_on_shared_subscription,  // 5.0 No Local 1 on a $share/ filter [MQTT-3.8.3-4]
};

/// A durable storage that cannot open its file or keep a change (storage::sqlite).
enum class storage_errc {
  cannot_open = 1,      // the file or its folder cannot be opened or made
  locked,               // another process (a second broker) holds the store
  not_a_database,       // the file is not a store: not SQLite, or another program's database
  corrupt,              // the file is damaged
  newer_schema,         // made by a newer version of this library: not read, not changed
  full,                 // the disk or the store's size limit is full: the change is not durable
  io_error,             // reading or writing failed
  closed,               // the store is not open
};

/// The category of codec_errc values: "mqttbroker.codec".
inline const std::error_category& codec_category() noexcept {
  class category final : public std::error_category {
   public:
    const char* name() const noexcept override { return "mqttbroker.codec"; }
    std::string message(int ev) const override {
      switch (static_cast<codec_errc>(ev)) {
        case codec_errc::reserved_packet_type: return "reserved or unknown packet type";
        case codec_errc::invalid_fixed_header_flags: return "invalid fixed header flags";
        case codec_errc::remaining_length_too_long: return "remaining length longer than 4 bytes";
        case codec_errc::packet_too_large: return "packet larger than the maximum packet size";
        case codec_errc::truncated: return "field runs past the end of the packet";
        case codec_errc::trailing_bytes: return "unexpected bytes after the last field";
        case codec_errc::invalid_utf8: return "ill-formed UTF-8 string";
        case codec_errc::utf8_null_character: return "UTF-8 string contains U+0000";
        case codec_errc::invalid_qos: return "QoS 3 is not a valid QoS";
        case codec_errc::invalid_connect_flags: return "invalid CONNECT flags";
        case codec_errc::invalid_connack_flags: return "invalid CONNACK flags";
        case codec_errc::invalid_property_identifier: return "property not valid in this packet";
        case codec_errc::invalid_reason_code: return "reason code not valid in this packet";
        case codec_errc::invalid_subscription_options: return "reserved subscription option bits set";
        case codec_errc::invalid_varint: return "invalid variable byte integer";
        case codec_errc::field_too_long: return "string or binary field longer than 65535 bytes";
      }
      return "unknown codec error";
    }
  };
  static const category instance;
  return instance;
}

/// The category of protocol_errc values: "mqttbroker.protocol".
inline const std::error_category& protocol_category() noexcept {
  class category final : public std::error_category {
   public:
    const char* name() const noexcept override { return "mqttbroker.protocol"; }
    std::string message(int ev) const override {
      switch (static_cast<protocol_errc>(ev)) {
        case protocol_errc::first_packet_not_connect: return "first packet is not CONNECT";
        case protocol_errc::second_connect: return "second CONNECT on a connection";
        case protocol_errc::unexpected_packet: return "packet not allowed in this direction";
        case protocol_errc::unsupported_protocol_version: return "unsupported protocol version";
        case protocol_errc::invalid_protocol_name: return "invalid protocol name";
        case protocol_errc::password_without_username: return "password without user name";
        case protocol_errc::zero_packet_identifier: return "packet identifier 0";
        case protocol_errc::duplicate_property: return "property included more than once";
        case protocol_errc::invalid_property_value: return "invalid property value";
        case protocol_errc::no_topic_filters: return "no topic filters";
        case protocol_errc::invalid_retain_handling: return "retain handling 3";
        case protocol_errc::invalid_subscription_qos: return "subscription QoS 3";
        case protocol_errc::client_identifier_not_valid: return "client identifier not valid";
        case protocol_errc::topic_name_invalid: return "topic name invalid";
        case protocol_errc::topic_filter_invalid: return "topic filter invalid";
        case protocol_errc::topic_alias_invalid: return "topic alias invalid";
        case protocol_errc::topic_alias_unknown: return "topic alias not set";
        case protocol_errc::payload_format_invalid: return "payload is not the UTF-8 it says it is";
        case protocol_errc::qos_not_supported: return "QoS above the server's maximum";
        case protocol_errc::retain_not_supported: return "retain not available";
        case protocol_errc::auth_method_missing: return "authentication data without method";
        case protocol_errc::receive_maximum_exceeded: return "receive maximum exceeded";
        case protocol_errc::auth_method_mismatch: return "AUTH without the connection's authentication method";
        case protocol_errc::unexpected_auth: return "AUTH outside an authentication exchange";
        case protocol_errc::packet_during_authentication: return "packet other than AUTH before CONNACK";
        case protocol_errc::no_local_on_shared_subscription: return "No Local on a shared subscription";
      }
      return "unknown protocol error";
    }
  };
  static const category instance;
  return instance;
}

/// The category of storage_errc values: "mqttbroker.storage".
inline const std::error_category& storage_category() noexcept {
  class category final : public std::error_category {
   public:
    const char* name() const noexcept override { return "mqttbroker.storage"; }
    std::string message(int ev) const override {
      switch (static_cast<storage_errc>(ev)) {
        case storage_errc::cannot_open: return "the store cannot be opened";
        case storage_errc::locked: return "the store is in use by another process";
        case storage_errc::not_a_database: return "the file is not a store of this library";
        case storage_errc::corrupt: return "the store is damaged";
        case storage_errc::newer_schema: return "the store was made by a newer version";
        case storage_errc::full: return "the store is full";
        case storage_errc::io_error: return "the store could not be read or written";
        case storage_errc::closed: return "the store is not open";
      }
      return "unknown storage error";
    }
  };
  static const category instance;
  return instance;
}

inline std::error_code make_error_code(codec_errc e) noexcept {
  return {static_cast<int>(e), codec_category()};
}
inline std::error_code make_error_code(protocol_errc e) noexcept {
  return {static_cast<int>(e), protocol_category()};
}
inline std::error_code make_error_code(storage_errc e) noexcept {
  return {static_cast<int>(e), storage_category()};
}

/// The reason code a 5.0 receiver sends (in DISCONNECT or CONNACK) for an error of ours.
inline reason_code to_reason_code(const std::error_code& ec) noexcept {
  if (!ec) return reason_code::success;
  if (ec.category() == codec_category()) {
    return static_cast<codec_errc>(ec.value()) == codec_errc::packet_too_large
               ? reason_code::packet_too_large
               : reason_code::malformed_packet;
  }
  if (ec.category() == protocol_category()) {
    switch (static_cast<protocol_errc>(ec.value())) {
      case protocol_errc::unsupported_protocol_version:
      case protocol_errc::invalid_protocol_name: return reason_code::unsupported_protocol_version;
      case protocol_errc::client_identifier_not_valid: return reason_code::client_identifier_not_valid;
      case protocol_errc::topic_name_invalid: return reason_code::topic_name_invalid;
      case protocol_errc::topic_filter_invalid: return reason_code::topic_filter_invalid;
      case protocol_errc::topic_alias_invalid: return reason_code::topic_alias_invalid;
      case protocol_errc::receive_maximum_exceeded: return reason_code::receive_maximum_exceeded;
      case protocol_errc::payload_format_invalid: return reason_code::payload_format_invalid;
      case protocol_errc::qos_not_supported: return reason_code::qos_not_supported;
      case protocol_errc::retain_not_supported: return reason_code::retain_not_supported;
      default: return reason_code::protocol_error;
    }
  }
  return reason_code::unspecified_error;
}

/// The 3.1.1 CONNACK return code for an error found in a CONNECT; empty when 3.1.1 has none and
/// the server closes the connection without a CONNACK.
inline std::optional<connack_return_code> to_connack_return_code(const std::error_code& ec) noexcept {
  if (ec.category() == protocol_category()) {
    switch (static_cast<protocol_errc>(ec.value())) {
      case protocol_errc::unsupported_protocol_version:
      case protocol_errc::invalid_protocol_name: return connack_return_code::unacceptable_protocol_version;
      case protocol_errc::client_identifier_not_valid: return connack_return_code::identifier_rejected;
      default: break;
    }
  }
  return std::nullopt;
}

MQTTBROKER_END_NAMESPACE

namespace std {
template <>
struct is_error_code_enum<::mqttbroker::codec_errc> : true_type {};
template <>
struct is_error_code_enum<::mqttbroker::protocol_errc> : true_type {};
template <>
struct is_error_code_enum<::mqttbroker::storage_errc> : true_type {};
}  // namespace std

#endif  // MQTTBROKER_ERROR_HPP
