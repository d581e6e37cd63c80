#ifndef MQTTBROKER_CODEC_ENCODER_HPP
#define MQTTBROKER_CODEC_ENCODER_HPP

#include <mqttbroker/codec/detail/wire.hpp>
#include <mqttbroker/codec/packets.hpp>
#include <mqttbroker/codec/properties.hpp>
#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/error.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <system_error>
#include <variant>

MQTTBROKER_BEGIN_NAMESPACE
namespace codec {
namespace detail {

// Each packet type has a size function (the Remaining Length it needs, or an error when a field
// cannot be encoded) and a write function that trusts that size. Encoding for 3.1.1 leaves out
// what 3.1.1 lacks: properties, reason codes, AUTH.

/// Accumulates a Remaining Length, remembering whether a field was too long.
struct size_acc {
  std::size_t n = 0;
  bool too_long = false;
  void fixed(std::size_t k) noexcept { n += k; }
  void string(std::string_view s) noexcept {
    if (s.size() > 0xFFFF) too_long = true;
    n += 2 + s.size();
  }
  void props(protocol_version v, const properties_view& p) noexcept {
    if (v == protocol_version::v5) n += p.wire_size();
  }
};

inline void write_props(writer& w, protocol_version v, const properties_view& p) noexcept {
  if (v != protocol_version::v5) return;
  w.varint(static_cast<std::uint32_t>(p.bytes().size()));
  w.bytes(p.bytes());
}

inline std::uint8_t first_byte(packet_type t, std::uint8_t flags) noexcept {
  return static_cast<std::uint8_t>((static_cast<unsigned>(t) << 4) | flags);
}

// CONNECT
inline std::error_code body_size(const connect& c, protocol_version, size_acc& s) noexcept {
  const protocol_version v = c.version;  // a CONNECT is encoded in its own version
  if (v != protocol_version::v5 && c.password && !c.username) return protocol_errc::password_without_username;
  s.string(v == protocol_version::v3_1 ? "MQIsdp" : "MQTT");
  s.fixed(1 + 1 + 2);  // level, flags, keep alive
  s.props(v, c.properties);
  s.string(c.client_id);
  if (c.will) {
    s.props(v, c.will->properties);
    s.string(c.will->topic);
    s.string(c.will->payload);
  }
  if (c.username) s.string(*c.username);
  if (c.password) s.string(*c.password);
  return {};
}
inline std::uint8_t flags_of(const connect&) noexcept { return 0; }
inline void write_body(writer& w, const connect& c, protocol_version) noexcept {
  const protocol_version v = c.version;
  w.string(v == protocol_version::v3_1 ? "MQIsdp" : "MQTT");
  w.u8(static_cast<std::uint8_t>(static_cast<unsigned>(v) | (c.bridge ? 0x80u : 0u)));
  unsigned f = 0;
  if (c.clean_start) f |= 0x02u;
  if (c.will) {
    f |= 0x04u | (static_cast<unsigned>(c.will->qos_level) << 3);
    if (c.will->retain) f |= 0x20u;
  }
  if (c.password) f |= 0x40u;
  if (c.username) f |= 0x80u;
  w.u8(static_cast<std::uint8_t>(f));
  w.u16(c.keep_alive);
  write_props(w, v, c.properties);
  w.string(c.client_id);
  if (c.will) {
    write_props(w, v, c.will->properties);
    w.string(c.will->topic);
    w.string(c.will->payload);
  }
  if (c.username) w.string(*c.username);
  if (c.password) w.string(*c.password);
}

// CONNACK
inline std::error_code body_size(const connack& c, protocol_version v, size_acc& s) noexcept {
  s.fixed(2);
  s.props(v, c.properties);
  return {};
}
inline std::uint8_t flags_of(const connack&) noexcept { return 0; }
inline void write_body(writer& w, const connack& c, protocol_version v) noexcept {
  w.u8(c.session_present ? 1 : 0);
  w.u8(c.code);
  write_props(w, v, c.properties);
}

// PUBLISH: the payload is counted but written separately, so it can be sent from where it is.
inline std::error_code body_size(const publish& p, protocol_version v, size_acc& s) noexcept {
  s.string(p.topic);
  if (p.qos_level != qos::at_most_once) s.fixed(2);
  s.props(v, p.properties);
  s.fixed(p.payload.size());
  return {};
}
inline std::uint8_t flags_of(const publish& p) noexcept {
  unsigned f = static_cast<unsigned>(p.qos_level) << 1;
  if (p.dup) f |= 0x08u;
  if (p.retain) f |= 0x01u;
  return static_cast<std::uint8_t>(f);
}
inline void write_publish_header_body(writer& w, const publish& p, protocol_version v) noexcept {
  w.string(p.topic);
  if (p.qos_level != qos::at_most_once) w.u16(p.packet_id);
  write_props(w, v, p.properties);
}
inline void write_body(writer& w, const publish& p, protocol_version v) noexcept {
  write_publish_header_body(w, p, v);
  w.bytes(p.payload);
}

// PUBACK, PUBREC, PUBREL, PUBCOMP: 5.0 leaves out a Success code and empty properties.
template <packet_type T>
std::error_code body_size(const basic_ack<T>& a, protocol_version v, size_acc& s) noexcept {
  s.fixed(2);
  if (v == protocol_version::v5) {
    if (!a.properties.empty())
      s.fixed(1 + a.properties.wire_size());
    else if (a.reason != reason_code::success)
      s.fixed(1);
  }
  return {};
}
template <packet_type T>
std::uint8_t flags_of(const basic_ack<T>&) noexcept {
  return T == packet_type::pubrel ? 0x02 : 0x00;  // [MQTT-3.6.1-1]
}
template <packet_type T>
void write_body(writer& w, const basic_ack<T>& a, protocol_version v) noexcept {
  w.u16(a.packet_id);
  if (v != protocol_version::v5) return;
  if (!a.properties.empty()) {
    w.u8(static_cast<std::uint8_t>(a.reason));
    write_props(w, v, a.properties);
  } else if (a.reason != reason_code::success) {
    w.u8(static_cast<std::uint8_t>(a.reason));
  }
}

// SUBSCRIBE
inline std::error_code body_size(const subscribe& p, protocol_version v, size_acc& s) noexcept {
  s.fixed(2);
  s.props(v, p.properties);
  for (const auto& e : p.entries) {
    s.string(e.filter);
    s.fixed(1);
  }
  return {};
}
inline std::uint8_t flags_of(const subscribe&) noexcept { return 0x02; }  // [MQTT-3.8.1-1]
inline void write_body(writer& w, const subscribe& p, protocol_version v) noexcept {
  w.u16(p.packet_id);
  write_props(w, v, p.properties);
  for (const auto& e : p.entries) {
    w.string(e.filter);
    unsigned o = static_cast<unsigned>(e.options.max_qos);
    if (v == protocol_version::v5) {
      if (e.options.no_local) o |= 0x04u;
      if (e.options.retain_as_published) o |= 0x08u;
      o |= static_cast<unsigned>(e.options.retain_handling) << 4;
    }
    w.u8(static_cast<std::uint8_t>(o));
  }
}

// SUBACK
inline std::error_code body_size(const suback& p, protocol_version v, size_acc& s) noexcept {
  s.fixed(2 + p.reasons.size());
  s.props(v, p.properties);
  return {};
}
inline std::uint8_t flags_of(const suback&) noexcept { return 0; }
inline void write_body(writer& w, const suback& p, protocol_version v) noexcept {
  w.u16(p.packet_id);
  write_props(w, v, p.properties);
  for (reason_code rc : p.reasons) w.u8(static_cast<std::uint8_t>(rc));
}

// UNSUBSCRIBE
inline std::error_code body_size(const unsubscribe& p, protocol_version v, size_acc& s) noexcept {
  s.fixed(2);
  s.props(v, p.properties);
  for (std::string_view f : p.filters) s.string(f);
  return {};
}
inline std::uint8_t flags_of(const unsubscribe&) noexcept { return 0x02; }  // [MQTT-3.10.1-1]
inline void write_body(writer& w, const unsubscribe& p, protocol_version v) noexcept {
  w.u16(p.packet_id);
  write_props(w, v, p.properties);
  for (std::string_view f : p.filters) w.string(f);
}

// UNSUBACK: 3.1.1 has only the packet identifier.
inline std::error_code body_size(const unsuback& p, protocol_version v, size_acc& s) noexcept {
  s.fixed(2);
  if (v == protocol_version::v5) {
    s.props(v, p.properties);
    s.fixed(p.reasons.size());
  }
  return {};
}
inline std::uint8_t flags_of(const unsuback&) noexcept { return 0; }
inline void write_body(writer& w, const unsuback& p, protocol_version v) noexcept {
  w.u16(p.packet_id);
  if (v != protocol_version::v5) return;
  write_props(w, v, p.properties);
  for (reason_code rc : p.reasons) w.u8(static_cast<std::uint8_t>(rc));
}

// PINGREQ, PINGRESP
inline std::error_code body_size(const pingreq&, protocol_version, size_acc&) noexcept { return {}; }
inline std::error_code body_size(const pingresp&, protocol_version, size_acc&) noexcept { return {}; }
inline std::uint8_t flags_of(const pingreq&) noexcept { return 0; }
inline std::uint8_t flags_of(const pingresp&) noexcept { return 0; }
inline void write_body(writer&, const pingreq&, protocol_version) noexcept {}
inline void write_body(writer&, const pingresp&, protocol_version) noexcept {}

// DISCONNECT and AUTH: 5.0 leaves out a 0x00 code with no properties, then empty properties.
template <class P>
std::error_code reason_props_size(const P& p, protocol_version v, size_acc& s) noexcept {
  if (v != protocol_version::v5) return {};
  if (!p.properties.empty())
    s.fixed(1 + p.properties.wire_size());
  else if (p.reason != reason_code::success)
    s.fixed(1);
  return {};
}
template <class P>
void write_reason_props(writer& w, const P& p, protocol_version v) noexcept {
  if (v != protocol_version::v5) return;
  if (!p.properties.empty()) {
    w.u8(static_cast<std::uint8_t>(p.reason));
    write_props(w, v, p.properties);
  } else if (p.reason != reason_code::success) {
    w.u8(static_cast<std::uint8_t>(p.reason));
  }
}
inline std::error_code body_size(const disconnect& p, protocol_version v, size_acc& s) noexcept {
  return reason_props_size(p, v, s);
}
inline std::uint8_t flags_of(const disconnect&) noexcept { return 0; }
inline void write_body(writer& w, const disconnect& p, protocol_version v) noexcept { write_reason_props(w, p, v); }

inline std::error_code body_size(const auth& p, protocol_version v, size_acc& s) noexcept {
  if (v != protocol_version::v5) return codec_errc::reserved_packet_type;  // AUTH is 5.0 only
  return reason_props_size(p, v, s);
}
inline std::uint8_t flags_of(const auth&) noexcept { return 0; }
inline void write_body(writer& w, const auth& p, protocol_version v) noexcept { write_reason_props(w, p, v); }

template <class P>
std::error_code remaining_length(const P& p, protocol_version v, std::uint32_t& out) noexcept {
  size_acc s;
  if (auto ec = body_size(p, v, s)) return ec;
  if (s.too_long) return codec_errc::field_too_long;
  if (s.n > max_remaining_length) return codec_errc::packet_too_large;
  out = static_cast<std::uint32_t>(s.n);
  return {};
}

}  // namespace detail

/// Bytes `p` takes on the wire in version `v`; fails when a field cannot be encoded.
template <class Packet>
std::error_code encoded_size(const Packet& p, protocol_version v, std::size_t& size) noexcept {
  std::uint32_t rl = 0;
  if (auto ec = detail::remaining_length(p, v, rl)) return ec;
  size = 1 + detail::varint_size(rl) + rl;
  return {};
}
inline std::error_code encoded_size(const packet& p, protocol_version v, std::size_t& size) noexcept {
  return std::visit([&](const auto& x) { return encoded_size(x, v, size); }, p);
}

/// Encodes `p` into `out` (at least encoded_size() bytes); `written` gets the bytes used.
template <class Packet>
std::error_code encode(const Packet& p, protocol_version v, std::uint8_t* out, std::size_t capacity,
                       std::size_t& written) noexcept {
  std::uint32_t rl = 0;
  if (auto ec = detail::remaining_length(p, v, rl)) return ec;
  const std::size_t total = 1 + detail::varint_size(rl) + rl;
  if (total > capacity) return codec_errc::packet_too_large;
  detail::writer w(out);
  w.u8(detail::first_byte(type_of(p), detail::flags_of(p)));
  w.varint(rl);
  detail::write_body(w, p, v);
  written = total;
  return {};
}
inline std::error_code encode(const packet& p, protocol_version v, std::uint8_t* out, std::size_t capacity,
                              std::size_t& written) noexcept {
  return std::visit([&](const auto& x) { return encode(x, v, out, capacity, written); }, p);
}

/// Appends the encoded packet to a byte container (std::string, std::vector<std::uint8_t>, ...).
template <class Packet, class Container>
std::error_code encode(const Packet& p, protocol_version v, Container& out) {
  std::size_t size = 0;
  if (auto ec = encoded_size(p, v, size)) return ec;
  const std::size_t old = out.size();
  out.resize(old + size);
  std::size_t written = 0;
  auto* dst = reinterpret_cast<std::uint8_t*>(&out[0]) + old;
  return encode(p, v, dst, size, written);
}

/// Bytes of a PUBLISH before its payload: fixed header, topic, packet identifier, properties.
inline std::error_code publish_header_size(const publish& p, protocol_version v, std::size_t& size) noexcept {
  std::size_t total = 0;
  if (auto ec = encoded_size(p, v, total)) return ec;
  size = total - p.payload.size();
  return {};
}

/// Writes a PUBLISH up to its payload into `out`, so the payload can follow in a gather write from
/// wherever it is stored: one stored payload serves every subscriber.
inline std::error_code encode_publish_header(const publish& p, protocol_version v, std::uint8_t* out,
                                             std::size_t capacity, std::size_t& written) noexcept {
  std::uint32_t rl = 0;
  if (auto ec = detail::remaining_length(p, v, rl)) return ec;
  const std::size_t header = 1 + detail::varint_size(rl) + rl - p.payload.size();
  if (header > capacity) return codec_errc::packet_too_large;
  detail::writer w(out);
  w.u8(detail::first_byte(packet_type::publish, detail::flags_of(p)));
  w.varint(rl);
  detail::write_publish_header_body(w, p, v);
  written = header;
  return {};
}

}  // namespace codec
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CODEC_ENCODER_HPP
