#ifndef MQTTBROKER_TESTS_CODEC_SUPPORT_HPP
#define MQTTBROKER_TESTS_CODEC_SUPPORT_HPP

// Test support for the codec, shared by tests/codec*.cpp and tests/fuzz/decoder_fuzz.cpp, so it uses
// no Catch: field-by-field packet comparison (diff() names the first field that differs, "" when all
// agree), the reason codes each packet type defines, and small byte helpers.
#include <mqttbroker/codec.hpp>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace codec_test {

namespace mc = ::mqttbroker::codec;

/// "10 0F 00 04 ..." (long inputs are cut, with their size noted).
inline std::string hex(std::string_view s, std::size_t limit = 96) {
  static const char digits[] = "0123456789ABCDEF";
  std::string out;
  const std::size_t n = s.size() < limit ? s.size() : limit;
  for (std::size_t i = 0; i < n; ++i) {
    if (i != 0) out += ' ';
    const auto c = static_cast<unsigned char>(s[i]);
    out += digits[c >> 4];
    out += digits[c & 15u];
  }
  if (n < s.size()) out += " ... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

/// Bytes from a list of values 0..255 and character literals: wire({0x10, 0x04, 'M', 'Q'}).
inline std::string wire(std::initializer_list<int> bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (int b : bytes) out += static_cast<char>(static_cast<unsigned char>(b));
  return out;
}

/// The 5.0 reason codes each packet type defines, written out from the tables of chapter 3 (not
/// taken from the codec, so the codec's table is checked against them).
inline const std::vector<std::uint8_t>& spec_reason_codes(mc::packet_type t) {
  static const std::vector<std::uint8_t> connack = {  // 3.2.2.2
      0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
      0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F};
  static const std::vector<std::uint8_t> puback = {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99};  // 3.4.2.1, 3.5.2.1
  static const std::vector<std::uint8_t> pubrel = {0x00, 0x92};  // 3.6.2.1, 3.7.2.1
  static const std::vector<std::uint8_t> suback = {0x00, 0x01, 0x02, 0x80, 0x83, 0x87,
                                                   0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2};  // 3.9.3
  static const std::vector<std::uint8_t> unsuback = {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91};  // 3.11.3
  static const std::vector<std::uint8_t> disconnect = {  // 3.14.2.1
      0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
      0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2};
  static const std::vector<std::uint8_t> auth = {0x00, 0x18, 0x19};  // 3.15.2.1
  static const std::vector<std::uint8_t> none;
  switch (t) {
    case mc::packet_type::connack: return connack;
    case mc::packet_type::puback:
    case mc::packet_type::pubrec: return puback;
    case mc::packet_type::pubrel:
    case mc::packet_type::pubcomp: return pubrel;
    case mc::packet_type::suback: return suback;
    case mc::packet_type::unsuback: return unsuback;
    case mc::packet_type::disconnect: return disconnect;
    case mc::packet_type::auth: return auth;
    default: return none;
  }
}

/// Collects the first difference.
class differ {
 public:
  const std::string& result() const noexcept { return first_; }

  void bytes(const char* name, std::string_view a, std::string_view b) {
    if (a != b) note(std::string(name) + ": [" + hex(a) + "] != [" + hex(b) + "]");
  }
  template <class T>
  void num(const char* name, T a, T b) {
    if (a != b) {
      note(std::string(name) + ": " + std::to_string(static_cast<unsigned long long>(a)) +
           " != " + std::to_string(static_cast<unsigned long long>(b)));
    }
  }
  void props(const char* name, const mc::properties_view& a, const mc::properties_view& b) {
    bytes(name, a.bytes(), b.bytes());
  }

 private:
  void note(std::string what) {
    if (first_.empty()) first_ = std::move(what);
  }
  std::string first_;
};

inline void diff_into(differ& d, const mc::connect& a, const mc::connect& b) {
  d.num("connect.version", a.version, b.version);
  d.num("connect.clean_start", a.clean_start, b.clean_start);
  d.num("connect.keep_alive", a.keep_alive, b.keep_alive);
  d.props("connect.properties", a.properties, b.properties);
  d.bytes("connect.client_id", a.client_id, b.client_id);
  d.num("connect.has_will", a.will.has_value(), b.will.has_value());
  if (a.will && b.will) {
    d.bytes("will.topic", a.will->topic, b.will->topic);
    d.bytes("will.payload", a.will->payload, b.will->payload);
    d.num("will.qos", a.will->qos_level, b.will->qos_level);
    d.num("will.retain", a.will->retain, b.will->retain);
    d.props("will.properties", a.will->properties, b.will->properties);
  }
  d.num("connect.has_username", a.username.has_value(), b.username.has_value());
  if (a.username && b.username) d.bytes("connect.username", *a.username, *b.username);
  d.num("connect.has_password", a.password.has_value(), b.password.has_value());
  if (a.password && b.password) d.bytes("connect.password", *a.password, *b.password);
}

inline void diff_into(differ& d, const mc::connack& a, const mc::connack& b) {
  d.num("connack.session_present", a.session_present, b.session_present);
  d.num("connack.code", a.code, b.code);
  d.props("connack.properties", a.properties, b.properties);
}

inline void diff_into(differ& d, const mc::publish& a, const mc::publish& b) {
  d.bytes("publish.topic", a.topic, b.topic);
  d.bytes("publish.payload", a.payload, b.payload);
  d.num("publish.qos", a.qos_level, b.qos_level);
  d.num("publish.retain", a.retain, b.retain);
  d.num("publish.dup", a.dup, b.dup);
  d.num("publish.packet_id", a.packet_id, b.packet_id);
  d.props("publish.properties", a.properties, b.properties);
}

template <mc::packet_type T>
void diff_into(differ& d, const mc::basic_ack<T>& a, const mc::basic_ack<T>& b) {
  d.num("ack.packet_id", a.packet_id, b.packet_id);
  d.num("ack.reason", a.reason, b.reason);
  d.props("ack.properties", a.properties, b.properties);
}

inline void diff_into(differ& d, const mc::subscribe& a, const mc::subscribe& b) {
  d.num("subscribe.packet_id", a.packet_id, b.packet_id);
  d.props("subscribe.properties", a.properties, b.properties);
  d.num("subscribe.entries", a.entries.size(), b.entries.size());
  for (std::size_t i = 0; i < a.entries.size() && i < b.entries.size(); ++i) {
    const auto& x = a.entries[i];
    const auto& y = b.entries[i];
    d.bytes("subscribe.filter", x.filter, y.filter);
    d.num("subscribe.max_qos", x.options.max_qos, y.options.max_qos);
    d.num("subscribe.no_local", x.options.no_local, y.options.no_local);
    d.num("subscribe.retain_as_published", x.options.retain_as_published, y.options.retain_as_published);
    d.num("subscribe.retain_handling", x.options.retain_handling, y.options.retain_handling);
  }
}

inline void diff_into(differ& d, const mc::suback& a, const mc::suback& b) {
  d.num("suback.packet_id", a.packet_id, b.packet_id);
  d.props("suback.properties", a.properties, b.properties);
  d.num("suback.reasons", a.reasons.size(), b.reasons.size());
  for (std::size_t i = 0; i < a.reasons.size() && i < b.reasons.size(); ++i)
    d.num("suback.reason", a.reasons[i], b.reasons[i]);
}

inline void diff_into(differ& d, const mc::unsubscribe& a, const mc::unsubscribe& b) {
  d.num("unsubscribe.packet_id", a.packet_id, b.packet_id);
  d.props("unsubscribe.properties", a.properties, b.properties);
  d.num("unsubscribe.filters", a.filters.size(), b.filters.size());
  for (std::size_t i = 0; i < a.filters.size() && i < b.filters.size(); ++i)
    d.bytes("unsubscribe.filter", a.filters[i], b.filters[i]);
}

inline void diff_into(differ& d, const mc::unsuback& a, const mc::unsuback& b) {
  d.num("unsuback.packet_id", a.packet_id, b.packet_id);
  d.props("unsuback.properties", a.properties, b.properties);
  d.num("unsuback.reasons", a.reasons.size(), b.reasons.size());
  for (std::size_t i = 0; i < a.reasons.size() && i < b.reasons.size(); ++i)
    d.num("unsuback.reason", a.reasons[i], b.reasons[i]);
}

inline void diff_into(differ&, const mc::pingreq&, const mc::pingreq&) {}
inline void diff_into(differ&, const mc::pingresp&, const mc::pingresp&) {}

inline void diff_into(differ& d, const mc::disconnect& a, const mc::disconnect& b) {
  d.num("disconnect.reason", a.reason, b.reason);
  d.props("disconnect.properties", a.properties, b.properties);
}

inline void diff_into(differ& d, const mc::auth& a, const mc::auth& b) {
  d.num("auth.reason", a.reason, b.reason);
  d.props("auth.properties", a.properties, b.properties);
}

/// The first difference between two packets, "" when they are equal field by field.
inline std::string diff(const mc::packet& a, const mc::packet& b) {
  if (a.index() != b.index())
    return std::string("type: ") + mc::to_string(mc::type_of(a)) + " != " + mc::to_string(mc::type_of(b));
  differ d;
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        diff_into(d, x, std::get<T>(b));
      },
      a);
  return d.result();
}

/// What decoding `encode(p, v)` must give back: encoding for 3.1/3.1.1 leaves out properties,
/// reason codes and the 5.0 subscription options, and a QoS 0 PUBLISH carries no packet id.
inline mc::packet expected_after_encoding(mc::packet p, mc::protocol_version v) {
  const bool v5 = v == mc::protocol_version::v5;
  std::visit(
      [&](auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, mc::connect>) {
          if (x.version != mc::protocol_version::v5) {  // a CONNECT is encoded in its own version
            x.properties = {};
            if (x.will) x.will->properties = {};
          }
        } else if constexpr (std::is_same_v<T, mc::publish>) {
          if (x.qos_level == mc::qos::at_most_once) x.packet_id = 0;
          if (!v5) x.properties = {};
        } else if constexpr (std::is_same_v<T, mc::subscribe>) {
          if (!v5) {
            x.properties = {};
            for (auto& e : x.entries) {
              e.options.no_local = false;
              e.options.retain_as_published = false;
              e.options.retain_handling = mc::retain_handling_option::send;
            }
          }
        } else if constexpr (std::is_same_v<T, mc::unsuback>) {
          if (!v5) {
            x.properties = {};
            x.reasons.clear();
          }
        } else if constexpr (std::is_same_v<T, mc::connack> || std::is_same_v<T, mc::suback> ||
                             std::is_same_v<T, mc::unsubscribe>) {
          if (!v5) x.properties = {};
        } else if constexpr (std::is_same_v<T, mc::pingreq> || std::is_same_v<T, mc::pingresp>) {
        } else {  // acks, DISCONNECT, AUTH
          if (!v5) {
            x.reason = mqttbroker::reason_code::success;
            x.properties = {};
          }
        }
      },
      p);
  return p;
}

/// Re-encodes every property of `view` with properties_builder and compares the bytes: the lazy
/// iterator and the builder must agree. Returns "" when they do.
inline std::string properties_rebuild_diff(const mc::properties_view& view) {
  mc::properties_builder b;
  for (const mc::property& p : view) b.add(p);
  if (b.view().bytes() == view.bytes()) return {};
  return "properties rebuilt as [" + hex(b.view().bytes()) + "] from [" + hex(view.bytes()) + "]";
}

/// properties_rebuild_diff() for every property block of a packet.
inline std::string packet_properties_rebuild_diff(const mc::packet& p) {
  std::string out;
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (!std::is_same_v<T, mc::pingreq> && !std::is_same_v<T, mc::pingresp>) {
          out = properties_rebuild_diff(x.properties);
          if constexpr (std::is_same_v<T, mc::connect>) {
            if (out.empty() && x.will) out = properties_rebuild_diff(x.will->properties);
          }
        }
      },
      p);
  return out;
}

}  // namespace codec_test

#endif  // MQTTBROKER_TESTS_CODEC_SUPPORT_HPP
