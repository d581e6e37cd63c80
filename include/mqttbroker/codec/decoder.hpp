#ifndef MQTTBROKER_CODEC_DECODER_HPP
#define MQTTBROKER_CODEC_DECODER_HPP

#include <mqttbroker/codec/detail/wire.hpp>
#include <mqttbroker/codec/packets.hpp>
#include <mqttbroker/codec/properties.hpp>
#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/detail/block_pool.hpp>
#include <mqttbroker/error.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

MQTTBROKER_BEGIN_NAMESPACE
namespace codec {

/// The first byte and Remaining Length of a packet.
struct fixed_header {
  packet_type type{};
  std::uint8_t flags = 0;
  std::uint32_t remaining_length = 0;
};

namespace detail {

constexpr bool is_v5(protocol_version v) noexcept { return v == protocol_version::v5; }

/// Whether a 5.0 reason code is defined for a packet type (the tables of chapter 3).
inline bool reason_code_allowed(packet_type t, std::uint8_t rc) noexcept {
  switch (t) {
    case packet_type::connack:
      return rc == 0x00 || (rc >= 0x80 && rc <= 0x8A) || rc == 0x8C || rc == 0x90 || rc == 0x95 || rc == 0x97 ||
             (rc >= 0x99 && rc <= 0x9D) || rc == 0x9F;
    case packet_type::puback:
    case packet_type::pubrec:
      return rc == 0x00 || rc == 0x10 || rc == 0x80 || rc == 0x83 || rc == 0x87 || rc == 0x90 || rc == 0x91 ||
             rc == 0x97 || rc == 0x99;
    case packet_type::pubrel:
    case packet_type::pubcomp: return rc == 0x00 || rc == 0x92;
    case packet_type::suback:
      return rc <= 0x02 || rc == 0x80 || rc == 0x83 || rc == 0x87 || rc == 0x8F || rc == 0x91 || rc == 0x97 ||
             rc == 0x9E || rc == 0xA1 || rc == 0xA2;
    case packet_type::unsuback:
      return rc == 0x00 || rc == 0x11 || rc == 0x80 || rc == 0x83 || rc == 0x87 || rc == 0x8F || rc == 0x91;
    case packet_type::disconnect:
      return rc == 0x00 || rc == 0x04 || (rc >= 0x80 && rc <= 0x83) || rc == 0x87 || rc == 0x89 || rc == 0x8B ||
             (rc >= 0x8D && rc <= 0x90) || (rc >= 0x93 && rc <= 0xA2);
    case packet_type::auth: return rc == 0x00 || rc == 0x18 || rc == 0x19;
    default: return false;
  }
}

/// Whether `side` may receive packets of type `t`.
constexpr bool direction_allowed(packet_type t, role side) noexcept {
  switch (t) {
    case packet_type::connect:
    case packet_type::subscribe:
    case packet_type::unsubscribe:
    case packet_type::pingreq: return side == role::server;
    case packet_type::connack:
    case packet_type::suback:
    case packet_type::unsuback:
    case packet_type::pingresp: return side == role::client;
    default: return true;
  }
}

/// Fixed header flag rules [MQTT-2.1.3-1]; PUBLISH carries DUP, QoS and RETAIN instead.
inline std::error_code check_flags(packet_type t, std::uint8_t flags) noexcept {
  switch (t) {
    case packet_type::publish: {
      const auto q = static_cast<std::uint8_t>((flags >> 1) & 3u);
      if (q == 3) return codec_errc::invalid_qos;  // [MQTT-3.3.1-4]
      if (q == 0 && (flags & 0x08u) != 0) return codec_errc::invalid_fixed_header_flags;  // [MQTT-3.3.1-2]
      return {};
    }
    case packet_type::pubrel:
    case packet_type::subscribe:
    case packet_type::unsubscribe:
      // [MQTT-3.6.1-1] [MQTT-3.8.1-1] [MQTT-3.10.1-1]
      return flags == 0x02 ? std::error_code{} : make_error_code(codec_errc::invalid_fixed_header_flags);
    default: return flags == 0 ? std::error_code{} : make_error_code(codec_errc::invalid_fixed_header_flags);
  }
}

/// A Property Length and the properties after it, validated for `where`.
inline std::error_code read_properties(reader& r, property_places where, properties_view& out) noexcept {
  std::uint32_t len = 0;
  if (auto ec = r.varint(len)) return ec;
  std::string_view bytes;
  if (auto ec = r.bytes(len, bytes)) return ec;
  return properties_view::parse(bytes, where, out);
}

inline std::error_code read_packet_id(reader& r, std::uint16_t& id) noexcept {
  if (auto ec = r.u16(id)) return ec;
  // [MQTT-2.2.1-3]; acknowledgements echo a PUBLISH's identifier, which is never 0 either.
  if (id == 0) return protocol_errc::zero_packet_identifier;
  return {};
}

inline std::error_code end_of_packet(const reader& r) noexcept {
  return r.at_end() ? std::error_code{} : make_error_code(codec_errc::trailing_bytes);
}

inline std::error_code decode_connect(reader& r, connect& c) noexcept {
  std::string_view name;
  if (auto ec = r.binary(name)) return ec;
  std::uint8_t level = 0;
  if (auto ec = r.u8(level)) return ec;
  // [MQTT-3.1.2-1] the name goes with the level: "MQIsdp" for 3.1, "MQTT" for 3.1.1 and 5.0.
  if (name != "MQTT" && name != "MQIsdp") return protocol_errc::invalid_protocol_name;
  // Mosquitto's bridges set the level's high bit (try_private); the level is the rest.
  c.bridge = (level & 0x80u) != 0;
  level = static_cast<std::uint8_t>(level & 0x7Fu);
  if (name == "MQIsdp" ? level != 3 : (level != 4 && level != 5))
    return protocol_errc::unsupported_protocol_version;  // [MQTT-3.1.2-2]
  c.version = static_cast<protocol_version>(level);
  const bool v5 = is_v5(c.version);

  std::uint8_t flags = 0;
  if (auto ec = r.u8(flags)) return ec;
  if ((flags & 0x01u) != 0) return codec_errc::invalid_connect_flags;  // [MQTT-3.1.2-3]
  c.clean_start = (flags & 0x02u) != 0;
  const bool will = (flags & 0x04u) != 0;
  const auto will_qos = static_cast<std::uint8_t>((flags >> 3) & 3u);
  const bool will_retain = (flags & 0x20u) != 0;
  const bool has_password = (flags & 0x40u) != 0;
  const bool has_username = (flags & 0x80u) != 0;
  if (!will && (will_qos != 0 || will_retain))
    return codec_errc::invalid_connect_flags;  // [MQTT-3.1.2-11] [MQTT-3.1.2-13] [MQTT-3.1.2-15]
  if (will_qos == 3) return codec_errc::invalid_qos;  // [MQTT-3.1.2-12]
  if (!v5 && has_password && !has_username)
    return protocol_errc::password_without_username;  // 3.1.1 [MQTT-3.1.2-22]
  if (auto ec = r.u16(c.keep_alive)) return ec;
  if (v5) {
    if (auto ec = read_properties(r, place_of(packet_type::connect), c.properties)) return ec;
    // 5.0 §3.1.2.11.10: Authentication Data without Authentication Method is a Protocol Error.
    bool method = false, data = false;
    for (const property& p : c.properties) {
      method = method || p.id == property_id::authentication_method;
      data = data || p.id == property_id::authentication_data;
    }
    if (data && !method) return protocol_errc::auth_method_missing;
  }
  if (auto ec = r.utf8(c.client_id)) return ec;  // [MQTT-3.1.3-4]
  if (will) {
    will_message w;
    w.qos_level = static_cast<qos>(will_qos);
    w.retain = will_retain;
    if (v5) {
      if (auto ec = read_properties(r, will_properties, w.properties)) return ec;
    }
    if (auto ec = r.utf8(w.topic)) return ec;
    if (auto ec = r.binary(w.payload)) return ec;
    c.will = w;
  }
  if (has_username) {
    std::string_view u;
    if (auto ec = r.utf8(u)) return ec;  // [MQTT-3.1.3-11]
    c.username = u;
  }
  if (has_password) {
    std::string_view p;
    if (auto ec = r.binary(p)) return ec;
    c.password = p;
  }
  return end_of_packet(r);
}

inline std::error_code decode_connack(reader& r, protocol_version v, connack& c) noexcept {
  std::uint8_t flags = 0;
  if (auto ec = r.u8(flags)) return ec;
  if ((flags & 0xFEu) != 0) return codec_errc::invalid_connack_flags;  // [MQTT-3.2.2-1]
  c.session_present = (flags & 0x01u) != 0;
  if (auto ec = r.u8(c.code)) return ec;
  if (is_v5(v)) {
    if (!reason_code_allowed(packet_type::connack, c.code)) return codec_errc::invalid_reason_code;
    if (auto ec = read_properties(r, place_of(packet_type::connack), c.properties)) return ec;
  } else if (c.code > 5) {
    return codec_errc::invalid_reason_code;
  }
  return end_of_packet(r);
}

inline std::error_code decode_publish(reader& r, std::uint8_t flags, protocol_version v, publish& p) noexcept {
  p.dup = (flags & 0x08u) != 0;
  p.qos_level = static_cast<qos>((flags >> 1) & 3u);
  p.retain = (flags & 0x01u) != 0;
  if (auto ec = r.utf8(p.topic)) return ec;
  if (p.qos_level != qos::at_most_once) {
    if (auto ec = read_packet_id(r, p.packet_id)) return ec;
  }
  if (is_v5(v)) {
    if (auto ec = read_properties(r, place_of(packet_type::publish), p.properties)) return ec;
  }
  p.payload = r.rest();
  return {};
}

template <packet_type T>
std::error_code decode_ack(reader& r, protocol_version v, basic_ack<T>& a) noexcept {
  if (auto ec = read_packet_id(r, a.packet_id)) return ec;
  // 5.0 allows leaving out the Reason Code (Success) and then the Property Length (none).
  if (is_v5(v) && !r.at_end()) {
    std::uint8_t rc = 0;
    if (auto ec = r.u8(rc)) return ec;
    if (!reason_code_allowed(T, rc)) return codec_errc::invalid_reason_code;
    a.reason = static_cast<reason_code>(rc);
    if (!r.at_end()) {
      if (auto ec = read_properties(r, place_of(T), a.properties)) return ec;
    }
  }
  return end_of_packet(r);
}

inline std::error_code decode_subscribe(reader& r, protocol_version v, subscribe& s) noexcept {
  const bool v5 = is_v5(v);
  if (auto ec = read_packet_id(r, s.packet_id)) return ec;
  if (v5) {
    if (auto ec = read_properties(r, place_of(packet_type::subscribe), s.properties)) return ec;
  }
  // [MQTT-3.8.3-2] 5.0 / [MQTT-3.8.3-3] 3.1.1: at least one filter.
  if (r.at_end()) return protocol_errc::no_topic_filters;
  s.entries.clear();
  while (!r.at_end()) {
    subscribe_entry e;
    if (auto ec = r.utf8(e.filter)) return ec;  // [MQTT-3.8.3-1]
    std::uint8_t o = 0;
    if (auto ec = r.u8(o)) return ec;
    const auto q = static_cast<std::uint8_t>(o & 3u);
    if (v5) {
      if ((o & 0xC0u) != 0) return codec_errc::invalid_subscription_options;  // [MQTT-3.8.3-5]
      if (q == 3) return protocol_errc::invalid_subscription_qos;
      const auto rh = static_cast<std::uint8_t>((o >> 4) & 3u);
      if (rh == 3) return protocol_errc::invalid_retain_handling;
      e.options.no_local = (o & 0x04u) != 0;
      e.options.retain_as_published = (o & 0x08u) != 0;
      e.options.retain_handling = static_cast<retain_handling_option>(rh);
    } else {
      if ((o & 0xFCu) != 0) return codec_errc::invalid_subscription_options;  // [MQTT-3-8.3-4]
      if (q == 3) return codec_errc::invalid_qos;                             // [MQTT-3-8.3-4]
    }
    e.options.max_qos = static_cast<qos>(q);
    s.entries.push_back(e);
  }
  return {};
}

inline std::error_code decode_suback(reader& r, protocol_version v, suback& s) noexcept {
  const bool v5 = is_v5(v);
  if (auto ec = read_packet_id(r, s.packet_id)) return ec;
  if (v5) {
    if (auto ec = read_properties(r, place_of(packet_type::suback), s.properties)) return ec;
  }
  if (r.at_end()) return codec_errc::truncated;  // one code per filter, and there was at least one
  s.reasons.clear();
  while (!r.at_end()) {
    std::uint8_t rc = 0;
    if (auto ec = r.u8(rc)) return ec;
    const bool ok = v5 ? reason_code_allowed(packet_type::suback, rc) : (rc <= 2 || rc == 0x80);  // [MQTT-3.9.3-2]
    if (!ok) return codec_errc::invalid_reason_code;
    s.reasons.push_back(static_cast<reason_code>(rc));
  }
  return {};
}

inline std::error_code decode_unsubscribe(reader& r, protocol_version v, unsubscribe& u) noexcept {
  if (auto ec = read_packet_id(r, u.packet_id)) return ec;
  if (is_v5(v)) {
    if (auto ec = read_properties(r, place_of(packet_type::unsubscribe), u.properties)) return ec;
  }
  if (r.at_end()) return protocol_errc::no_topic_filters;  // [MQTT-3.10.3-2]
  u.filters.clear();
  while (!r.at_end()) {
    std::string_view f;
    if (auto ec = r.utf8(f)) return ec;  // [MQTT-3.10.3-1]
    u.filters.push_back(f);
  }
  return {};
}

inline std::error_code decode_unsuback(reader& r, protocol_version v, unsuback& u) noexcept {
  if (auto ec = read_packet_id(r, u.packet_id)) return ec;
  u.reasons.clear();
  if (!is_v5(v)) return end_of_packet(r);
  if (auto ec = read_properties(r, place_of(packet_type::unsuback), u.properties)) return ec;
  if (r.at_end()) return codec_errc::truncated;
  while (!r.at_end()) {
    std::uint8_t rc = 0;
    if (auto ec = r.u8(rc)) return ec;
    if (!reason_code_allowed(packet_type::unsuback, rc)) return codec_errc::invalid_reason_code;
    u.reasons.push_back(static_cast<reason_code>(rc));
  }
  return {};
}

/// DISCONNECT and AUTH: an optional Reason Code, then optional properties (5.0 only).
template <class Packet>
std::error_code decode_reason_and_properties(reader& r, protocol_version v, packet_type t, Packet& p) noexcept {
  if (!is_v5(v) || r.at_end()) return end_of_packet(r);
  std::uint8_t rc = 0;
  if (auto ec = r.u8(rc)) return ec;
  if (!reason_code_allowed(t, rc)) return codec_errc::invalid_reason_code;
  p.reason = static_cast<reason_code>(rc);
  if (!r.at_end()) {
    if (auto ec = read_properties(r, place_of(t), p.properties)) return ec;
  }
  return end_of_packet(r);
}

}  // namespace detail

/// Checks a packet type and its flags as soon as the first byte arrives.
inline std::error_code check_first_byte(std::uint8_t first, protocol_version v, role side) noexcept {
  const auto t = static_cast<std::uint8_t>(first >> 4);
  if (t == 0 || (t == 15 && v != protocol_version::v5)) return codec_errc::reserved_packet_type;
  const auto type = static_cast<packet_type>(t);
  if (!detail::direction_allowed(type, side)) return protocol_errc::unexpected_packet;
  // 3.1.1 Table 2.1: DISCONNECT goes from Client to Server only; 5.0 lets the Server send it too.
  if (type == packet_type::disconnect && side == role::client && v != protocol_version::v5)
    return protocol_errc::unexpected_packet;
  return detail::check_flags(type, static_cast<std::uint8_t>(first & 0x0Fu));
}

/// Decodes the body of one packet whose fixed header was checked with check_first_byte.
/// The packet's views point into `body`. A CONNECT's own protocol level overrides `v`.
inline std::error_code decode_body(const fixed_header& h, const std::uint8_t* body, protocol_version v, packet& out) {
  detail::reader r(body, h.remaining_length);
  switch (h.type) {
    case packet_type::connect: return detail::decode_connect(r, out.emplace<connect>());
    case packet_type::connack: return detail::decode_connack(r, v, out.emplace<connack>());
    case packet_type::publish: return detail::decode_publish(r, h.flags, v, out.emplace<publish>());
    case packet_type::puback: return detail::decode_ack(r, v, out.emplace<puback>());
    case packet_type::pubrec: return detail::decode_ack(r, v, out.emplace<pubrec>());
    case packet_type::pubrel: return detail::decode_ack(r, v, out.emplace<pubrel>());
    case packet_type::pubcomp: return detail::decode_ack(r, v, out.emplace<pubcomp>());
    case packet_type::subscribe: return detail::decode_subscribe(r, v, out.emplace<subscribe>());
    case packet_type::suback: return detail::decode_suback(r, v, out.emplace<suback>());
    case packet_type::unsubscribe: return detail::decode_unsubscribe(r, v, out.emplace<unsubscribe>());
    case packet_type::unsuback: return detail::decode_unsuback(r, v, out.emplace<unsuback>());
    case packet_type::pingreq: out.emplace<pingreq>(); return detail::end_of_packet(r);
    case packet_type::pingresp: out.emplace<pingresp>(); return detail::end_of_packet(r);
    case packet_type::disconnect:
      return detail::decode_reason_and_properties(r, v, packet_type::disconnect, out.emplace<disconnect>());
    case packet_type::auth: return detail::decode_reason_and_properties(r, v, packet_type::auth, out.emplace<auth>());
  }
  return codec_errc::reserved_packet_type;
}

struct decoder_options {
  role side = role::server;
  /// Largest whole packet accepted (fixed header included), checked before any byte of the body
  /// is buffered: 5.0's Maximum Packet Size.
  std::uint32_t max_packet_size = codec::max_packet_size;
  /// The version when known in advance (a client knows what it sent); a server learns it from CONNECT.
  std::optional<protocol_version> version;
};

/// An incremental decoder: bytes arrive in fragments of any size; each complete packet is handed
/// to a callback. A packet that lies whole inside the fragment is decoded in place (its views
/// point into the caller's bytes); only a packet split across fragments is copied, into a buffer
/// that grows with the bytes that actually arrived, never with a length the peer claimed.
class decoder {
 public:
  struct result {
    std::size_t consumed = 0;  // bytes used; less than given only when the callback asked to stop
    std::error_code ec;        // first error; the decoder refuses more input after one
  };

  explicit decoder(decoder_options o = {}) : opts_(o), version_(o.version) {}

  /// The protocol version in force: given, or learnt from CONNECT.
  std::optional<protocol_version> version() const noexcept { return version_; }
  void set_version(protocol_version v) noexcept { version_ = v; }
  const decoder_options& options() const noexcept { return opts_; }
  void set_max_packet_size(std::uint32_t n) noexcept { opts_.max_packet_size = n; }

  /// Bytes held for a packet not yet complete (for memory accounting).
  std::size_t buffered() const noexcept { return partial_.size(); }
  /// Whether a packet is partly received.
  bool mid_packet() const noexcept { return state_ != state::first_byte; }
  std::error_code error() const noexcept { return failed_.get(); }

  /// Decodes what `data` completes. `on_packet(packet&)` may return void, or bool where false
  /// stops decoding after that packet (the caller pauses, then feeds the rest later). Views in
  /// the packet stay valid only during the call.
  template <class OnPacket>
  result feed(const std::uint8_t* data, std::size_t size, OnPacket&& on_packet) {
    result res;
    if (failed_) {
      res.ec = failed_.get();
      return res;
    }
    std::size_t pos = 0;
    // Per call, not per decoder: an idle connection's decoder stays a few dozen bytes.
    packet pk;
    while (pos < size) {
      switch (state_) {
        case state::first_byte: {
          const std::uint8_t b = data[pos++];
          if (auto ec = on_first_byte(b)) return fail(res, pos, ec);
          break;
        }
        case state::length: {
          const std::uint8_t b = data[pos++];
          if (auto ec = on_length_byte(b)) return fail(res, pos, ec);
          if (state_ == state::body && header_.remaining_length == 0) {
            bool go = true;
            if (auto ec = dispatch(nullptr, pk, go, on_packet)) return fail(res, pos, ec);
            if (!go) {
              res.consumed = pos;
              return res;
            }
          }
          break;
        }
        case state::body: {
          const std::size_t need = header_.remaining_length - partial_.size();
          const std::size_t avail = size - pos;
          bool go = true;
          if (partial_.empty() && avail >= need) {
            // The whole body is here: decode in place, no copy.
            const std::uint8_t* body = data + pos;
            pos += need;
            if (auto ec = dispatch(body, pk, go, on_packet)) return fail(res, pos, ec);
          } else {
            const std::size_t take = avail < need ? avail : need;
            partial_.append(data + pos, take);
            pos += take;
            if (partial_.size() < header_.remaining_length) break;
            std::error_code ec = dispatch(partial_.data(), pk, go, on_packet);
            release_partial();
            if (ec) return fail(res, pos, ec);
          }
          if (!go) {
            res.consumed = pos;
            return res;
          }
          break;
        }
      }
    }
    res.consumed = pos;
    return res;
  }

 private:
  enum class state : std::uint8_t { first_byte, length, body };

  std::error_code on_first_byte(std::uint8_t b) noexcept {
    const auto t = static_cast<packet_type>(b >> 4);
    if (opts_.side == role::server) {
      // Refuse before buffering anything: [MQTT-3.1.0-1] CONNECT first, [MQTT-3.1.0-2] only once.
      if (!version_ && t != packet_type::connect) return protocol_errc::first_packet_not_connect;
      if (version_ && t == packet_type::connect) return protocol_errc::second_connect;
    }
    // Before CONNECT the version is unknown; AUTH cannot come first anyway.
    if (auto ec = check_first_byte(b, version_.value_or(protocol_version::v5), opts_.side)) return ec;
    header_.type = t;
    header_.flags = static_cast<std::uint8_t>(b & 0x0Fu);
    header_.remaining_length = 0;
    length_bytes_ = 0;
    state_ = state::length;
    return {};
  }

  std::error_code on_length_byte(std::uint8_t b) noexcept {
    header_.remaining_length |= std::uint32_t{b & 0x7Fu} << (7u * length_bytes_);
    ++length_bytes_;
    if ((b & 0x80u) != 0) {
      if (length_bytes_ == 4) return codec_errc::remaining_length_too_long;  // [MQTT-1.5.5]
      return {};
    }
    // 5.0 requires the shortest form [MQTT-1.5.5-1]; 3.1.1 does not say so, and is let through.
    if (b == 0 && length_bytes_ > 1 && version_ == protocol_version::v5) return codec_errc::invalid_varint;
    const std::uint64_t total = 1u + length_bytes_ + std::uint64_t{header_.remaining_length};
    if (total > opts_.max_packet_size) return codec_errc::packet_too_large;
    state_ = state::body;
    return {};
  }

  template <class OnPacket>
  std::error_code dispatch(const std::uint8_t* body, packet& out, bool& go, OnPacket& on_packet) {
    state_ = state::first_byte;
    if (auto ec = decode_body(header_, body, version_.value_or(protocol_version::v3_1_1), out)) return ec;
    if (header_.type == packet_type::connect) version_ = std::get<connect>(out).version;
    if constexpr (std::is_same_v<decltype(on_packet(out)), bool>) {
      go = on_packet(out);
    } else {
      on_packet(out);
      go = true;
    }
    return {};
  }

  // The block goes back to its pool at once: a connection between packets holds no buffer.
  void release_partial() noexcept { partial_.reset(); }

  result& fail(result& res, std::size_t pos, std::error_code ec) noexcept {
    failed_.set(ec);
    res.consumed = pos;
    res.ec = ec;
    return res;
  }

  /// The first error in two bytes rather than a std::error_code's sixteen (a broker keeps a
  /// decoder per connection): the decoder fails only with codec_errc and protocol_errc values.
  class stored_error {
   public:
    explicit operator bool() const noexcept { return kind_ != 0; }
    void set(const std::error_code& ec) noexcept {
      kind_ = ec.category() == protocol_category() ? 2 : 1;
      value_ = static_cast<std::uint8_t>(ec.value());
    }
    std::error_code get() const noexcept {
      if (kind_ == 0) return {};
      if (kind_ == 2) return make_error_code(static_cast<protocol_errc>(value_));
      return make_error_code(static_cast<codec_errc>(value_));
    }

   private:
    std::uint8_t kind_ = 0;  // 0 none, 1 codec_errc, 2 protocol_errc
    std::uint8_t value_ = 0;
  };

  decoder_options opts_;
  std::optional<protocol_version> version_;
  state state_ = state::first_byte;
  std::uint8_t length_bytes_ = 0;
  stored_error failed_;
  fixed_header header_;
  ::mqttbroker::detail::pooled_bytes partial_;
};

/// Decodes exactly one whole packet held in `bytes` (tests, tools, the fuzzer).
inline std::error_code decode_packet(std::string_view bytes, protocol_version v, role side, packet& out) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
  if (bytes.empty()) return codec_errc::truncated;
  if (auto ec = check_first_byte(p[0], v, side)) return ec;
  // Remaining Length, with the same rules as decoder: at most 4 bytes, shortest form in 5.0.
  std::uint32_t len = 0;
  std::size_t i = 1;
  for (unsigned n = 0;; ++n) {
    if (n == 4) return codec_errc::remaining_length_too_long;
    if (i == bytes.size()) return codec_errc::truncated;
    const std::uint8_t b = p[i++];
    len |= std::uint32_t{b & 0x7Fu} << (7u * n);
    if ((b & 0x80u) == 0) {
      if (b == 0 && n > 0 && v == protocol_version::v5) return codec_errc::invalid_varint;
      break;
    }
  }
  if (bytes.size() - i < len) return codec_errc::truncated;
  if (bytes.size() - i > len) return codec_errc::trailing_bytes;
  fixed_header h{static_cast<packet_type>(p[0] >> 4), static_cast<std::uint8_t>(p[0] & 0x0Fu), len};
  return decode_body(h, p + i, v, out);
}

}  // namespace codec
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CODEC_DECODER_HPP
