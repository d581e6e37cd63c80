#ifndef MQTTBROKER_CLUSTER_HANDOVER_HPP
#define MQTTBROKER_CLUSTER_HANDOVER_HPP

// A session as it moves between nodes (cluster::session_handover), in bytes: what a cluster policy
// sends when another node takes a client over. Decoding checks every length and count against
// the bytes there are, and that what it rebuilds is valid MQTT (filters, topic names, properties).

#include <mqttbroker/cluster/contract.hpp>
#include <mqttbroker/codec/properties.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/message.hpp>
#include <mqttbroker/topic/shared.hpp>
#include <mqttbroker/topic/validate.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

MQTTBROKER_BEGIN_NAMESPACE
namespace cluster {
namespace detail {

inline void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
inline void put_string(std::string& out, std::string_view s) {
  put_varint(out, s.size());
  out.append(s);
}
/// A varint at `at` in `b`, moving `at` past it; false when `b` ends first or it has more than
/// 64 bits.
inline bool get_varint(std::string_view b, std::size_t& at, std::uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (at >= b.size()) return false;
    const auto c = static_cast<unsigned char>(b[at++]);
    v |= std::uint64_t{c & 0x7Fu} << shift;
    if ((c & 0x80u) == 0) return true;
  }
  return false;
}

}  // namespace detail

/// A session on the wire: format 1; its expiry; its subscriptions (filter, options byte,
/// identifier); the messages owed (flags, packet identifier, the stream sequence when flag 64
/// says so, expiry left, Subscription Identifiers, then the message unless only its PUBREL is
/// owed); the QoS 2 identifiers held.
inline void encode_handover(std::string& out, const session_handover& h) {
  out.push_back('\x01');
  detail::put_varint(out, h.expiry_seconds);
  detail::put_varint(out, h.subscriptions.size());
  for (const auto& sub : h.subscriptions) {
    detail::put_string(out, sub.filter);
    const codec::subscribe_options& o = sub.options;
    out.push_back(static_cast<char>(static_cast<unsigned>(o.max_qos) | (o.no_local ? 4u : 0u) |
                                    (o.retain_as_published ? 8u : 0u) |
                                    (static_cast<unsigned>(o.retain_handling) << 4)));
    detail::put_varint(out, sub.identifier);
  }
  detail::put_varint(out, h.messages.size());
  for (const auto& d : h.messages) {
    out.push_back(static_cast<char>((d.msg ? 1u : 0u) | (static_cast<unsigned>(d.at) << 1) |
                                    (static_cast<unsigned>(d.qos_level) << 3) | (d.retain ? 32u : 0u) |
                                    (d.stream_sequence != 0 ? 64u : 0u)));
    detail::put_varint(out, d.packet_id);
    if (d.stream_sequence != 0) detail::put_varint(out, d.stream_sequence);
    detail::put_varint(out, d.expires_in);
    detail::put_varint(out, d.subscription_ids.size());
    for (std::uint32_t id : d.subscription_ids) detail::put_varint(out, id);
    if (!d.msg) continue;
    out.push_back(static_cast<char>(static_cast<unsigned>(d.msg->qos_level()) | (d.msg->retain() ? 4u : 0u)));
    detail::put_string(out, d.msg->topic());
    detail::put_string(out, d.msg->properties().bytes());
    detail::put_string(out, d.msg->payload());
  }
  detail::put_varint(out, h.received.size());
  for (std::uint16_t id : h.received) detail::put_varint(out, id);
}
/// The session in `b`, or nothing when anything in it is out of bounds or not valid MQTT.
inline std::optional<session_handover> decode_handover(std::string_view b) {
  std::size_t at = 0;
  auto varint = [&](std::uint64_t& v, std::uint64_t max) { return detail::get_varint(b, at, v) && v <= max; };
  auto string = [&](std::string_view& s) {
    std::uint64_t n = 0;
    if (!detail::get_varint(b, at, n) || n > b.size() - at) return false;
    s = b.substr(at, static_cast<std::size_t>(n));
    at += static_cast<std::size_t>(n);
    return true;
  };
  auto byte = [&](unsigned& v) {
    if (at >= b.size()) return false;
    v = static_cast<unsigned char>(b[at++]);
    return true;
  };
  // A count is at most the bytes left: each element takes one at least, so nothing is sized
  // by a number the sender chose.
  auto count = [&](std::uint64_t& n) { return detail::get_varint(b, at, n) && n <= b.size() - at; };
  session_handover h;
  std::uint64_t v = 0, n = 0;
  unsigned flags = 0;
  if (b.empty() || b[0] != '\x01') return std::nullopt;
  at = 1;
  if (!varint(v, 0xFFFFFFFF)) return std::nullopt;
  h.expiry_seconds = static_cast<std::uint32_t>(v);
  if (!count(n)) return std::nullopt;
  for (std::uint64_t i = 0; i < n; ++i) {
    session_handover::subscription sub;
    std::string_view filter;
    std::error_code invalid;
    if (!string(filter) || (topic::parse_filter(filter, invalid), invalid) || !byte(flags) || (flags & 3u) == 3u ||
        (flags >> 4) > 2u || !varint(v, 268435455))
      return std::nullopt;
    sub.filter.assign(filter);
    sub.options.max_qos = static_cast<codec::qos>(flags & 3u);
    sub.options.no_local = (flags & 4u) != 0;
    sub.options.retain_as_published = (flags & 8u) != 0;
    sub.options.retain_handling = static_cast<codec::retain_handling_option>(flags >> 4);
    sub.identifier = static_cast<std::uint32_t>(v);
    h.subscriptions.push_back(std::move(sub));
  }
  if (!count(n)) return std::nullopt;
  for (std::uint64_t i = 0; i < n; ++i) {
    session_handover::delivery d;
    std::uint64_t ids = 0;
    if (!byte(flags) || ((flags >> 1) & 3u) > 2u || ((flags >> 3) & 3u) == 3u || (flags >> 7) != 0) return std::nullopt;
    d.at = static_cast<session_handover::state>((flags >> 1) & 3u);
    d.qos_level = static_cast<codec::qos>((flags >> 3) & 3u);
    d.retain = (flags & 32u) != 0;
    if (!varint(v, 0xFFFF)) return std::nullopt;
    d.packet_id = static_cast<std::uint16_t>(v);
    if ((flags & 64u) != 0 && (!detail::get_varint(b, at, d.stream_sequence) || d.stream_sequence == 0))
      return std::nullopt;
    if (!varint(v, 0xFFFFFFFF)) return std::nullopt;
    d.expires_in = static_cast<std::uint32_t>(v);
    if (!count(ids)) return std::nullopt;
    for (std::uint64_t k = 0; k < ids; ++k) {
      if (!varint(v, 268435455) || v == 0) return std::nullopt;
      d.subscription_ids.push_back(static_cast<std::uint32_t>(v));
    }
    if ((flags & 1u) != 0) {
      std::string_view topic_name, props, payload;
      unsigned mflags = 0;
      codec::properties_view checked;
      if (!byte(mflags) || (mflags & ~7u) != 0 || (mflags & 3u) == 3u || !string(topic_name) ||
          topic::validate_topic_name(topic_name) || !string(props) ||
          codec::properties_view::parse(props, codec::place_of(codec::packet_type::publish), checked) ||
          !string(payload))
        return std::nullopt;
      d.msg = message::make(topic_name, payload, static_cast<codec::qos>(mflags & 3u), (mflags & 4u) != 0, props);
    } else if (d.at != session_handover::state::pubrec_received) {
      return std::nullopt;  // only a PUBREL is owed without its message
    }
    h.messages.push_back(std::move(d));
  }
  if (!count(n)) return std::nullopt;
  for (std::uint64_t i = 0; i < n; ++i) {
    if (!varint(v, 0xFFFF) || v == 0) return std::nullopt;
    h.received.push_back(static_cast<std::uint16_t>(v));
  }
  if (at != b.size()) return std::nullopt;
  return h;
}

}  // namespace cluster
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CLUSTER_HANDOVER_HPP
