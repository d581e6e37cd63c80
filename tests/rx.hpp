#ifndef MQTTBROKER_TESTS_RX_HPP
#define MQTTBROKER_TESTS_RX_HPP

// What a test client received, copied out of the decoder's views: shared by the broker tests (over
// the memory transport) and the engine tests (no transport at all).
#include <mqttbroker/codec.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace test_rx {

namespace codec = ::mqttbroker::codec;
using ::mqttbroker::reason_code;
using codec::qos;

/// A received packet, copied out of the decoder's views.
struct rx {
  codec::packet_type type{};
  std::uint16_t id = 0;
  std::uint8_t code = 0;  // CONNACK code, acknowledgement or DISCONNECT reason
  bool session_present = false;
  std::vector<std::uint8_t> codes;  // SUBACK, UNSUBACK
  std::string topic, payload;
  qos qos_level = qos::at_most_once;
  bool retain = false, dup = false;
  std::string assigned_client_id;
  int shared_subscription_available = -1;   // CONNACK: the property's value, -1 when absent
  int wildcard_subscription_available = -1;     // CONNACK: the same
  int subscription_identifier_available = -1;   // CONNACK: the same
  std::optional<std::string> server_reference;  // CONNACK and DISCONNECT, 5.0
  std::optional<std::string> reason_string;     // CONNACK and DISCONNECT, 5.0
  std::vector<std::uint32_t> subscription_ids;  // 5.0 PUBLISH, in the order sent
  std::optional<std::uint32_t> maximum_qos, retain_available;  // CONNACK, 5.0
  std::string response_information;                            // CONNACK, 5.0
  std::optional<std::uint32_t> session_expiry;                 // CONNACK, 5.0
  std::optional<std::uint32_t> message_expiry;  // PUBLISH, 5.0
  std::optional<std::uint32_t> topic_alias;     // PUBLISH, 5.0
  std::string response_topic, correlation_data;  // PUBLISH, 5.0
  std::vector<std::pair<std::string, std::string>> user_properties;  // PUBLISH, 5.0, in order
  std::optional<std::string> auth_method, auth_data;  // CONNACK and AUTH, 5.0
};

/// The Authentication Method and Data of a CONNACK or AUTH, if present.
inline void read_auth_properties(const codec::properties_view& props, rx& r) {
  if (auto m = props.find(codec::property_id::authentication_method)) r.auth_method = std::string(m->value);
  if (auto d = props.find(codec::property_id::authentication_data)) r.auth_data = std::string(d->value);
}

inline rx to_rx(const codec::packet& p) {
  rx r;
  r.type = codec::type_of(p);
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, codec::connack>) {
          r.session_present = x.session_present;
          r.code = x.code;
          if (auto a = x.properties.find(codec::property_id::assigned_client_identifier))
            r.assigned_client_id = std::string(a->value);
          if (auto q = x.properties.find(codec::property_id::maximum_qos)) r.maximum_qos = q->integer;
          if (auto e = x.properties.find(codec::property_id::session_expiry_interval)) r.session_expiry = e->integer;
          if (auto a = x.properties.find(codec::property_id::retain_available)) r.retain_available = a->integer;
          if (auto i = x.properties.find(codec::property_id::response_information))
            r.response_information = std::string(i->value);
          if (auto a = x.properties.find(codec::property_id::shared_subscription_available))
            r.shared_subscription_available = static_cast<int>(a->integer);
          if (auto a = x.properties.find(codec::property_id::wildcard_subscription_available))
            r.wildcard_subscription_available = static_cast<int>(a->integer);
          if (auto a = x.properties.find(codec::property_id::subscription_identifier_available))
            r.subscription_identifier_available = static_cast<int>(a->integer);
          if (auto s = x.properties.find(codec::property_id::server_reference)) r.server_reference = std::string(s->value);
          if (auto s = x.properties.find(codec::property_id::reason_string)) r.reason_string = std::string(s->value);
          read_auth_properties(x.properties, r);
        } else if constexpr (std::is_same_v<T, codec::publish>) {
          r.topic = std::string(x.topic);
          r.payload = std::string(x.payload);
          r.qos_level = x.qos_level;
          r.retain = x.retain;
          r.dup = x.dup;
          r.id = x.packet_id;
          if (auto e = x.properties.find(codec::property_id::message_expiry_interval)) r.message_expiry = e->integer;
          if (auto a = x.properties.find(codec::property_id::topic_alias)) r.topic_alias = a->integer;
          for (const codec::property& pr : x.properties) {
            if (pr.id == codec::property_id::response_topic) r.response_topic = std::string(pr.value);
            if (pr.id == codec::property_id::correlation_data) r.correlation_data = std::string(pr.value);
            if (pr.id == codec::property_id::user_property)
              r.user_properties.emplace_back(std::string(pr.key), std::string(pr.value));
            if (pr.id == codec::property_id::subscription_identifier) r.subscription_ids.push_back(pr.integer);
          }
        } else if constexpr (std::is_same_v<T, codec::puback> || std::is_same_v<T, codec::pubrec> ||
                             std::is_same_v<T, codec::pubrel> || std::is_same_v<T, codec::pubcomp>) {
          r.id = x.packet_id;
          r.code = static_cast<std::uint8_t>(x.reason);
        } else if constexpr (std::is_same_v<T, codec::suback> || std::is_same_v<T, codec::unsuback>) {
          r.id = x.packet_id;
          for (reason_code c : x.reasons) r.codes.push_back(static_cast<std::uint8_t>(c));
        } else if constexpr (std::is_same_v<T, codec::disconnect>) {
          r.code = static_cast<std::uint8_t>(x.reason);
          if (auto s = x.properties.find(codec::property_id::server_reference)) r.server_reference = std::string(s->value);
          if (auto s = x.properties.find(codec::property_id::reason_string)) r.reason_string = std::string(s->value);
        } else if constexpr (std::is_same_v<T, codec::auth>) {
          r.code = static_cast<std::uint8_t>(x.reason);
          read_auth_properties(x.properties, r);
        }
      },
      p);
  return r;
}

/// Short names for the packet types the tests expect.
namespace packet_types {
constexpr auto CONNACK = codec::packet_type::connack;
constexpr auto PUBLISH = codec::packet_type::publish;
constexpr auto PUBACK = codec::packet_type::puback;
constexpr auto PUBREC = codec::packet_type::pubrec;
constexpr auto PUBREL = codec::packet_type::pubrel;
constexpr auto PUBCOMP = codec::packet_type::pubcomp;
constexpr auto SUBACK = codec::packet_type::suback;
constexpr auto UNSUBACK = codec::packet_type::unsuback;
constexpr auto PINGRESP = codec::packet_type::pingresp;
constexpr auto DISCONNECT = codec::packet_type::disconnect;
constexpr auto AUTH = codec::packet_type::auth;
}  // namespace packet_types

}  // namespace test_rx

#endif  // MQTTBROKER_TESTS_RX_HPP
