#ifndef MQTTBROKER_CODEC_PROPERTIES_HPP
#define MQTTBROKER_CODEC_PROPERTIES_HPP

#include <mqttbroker/codec/detail/wire.hpp>
#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/error.hpp>

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

MQTTBROKER_BEGIN_NAMESPACE
namespace codec {

/// MQTT 5.0 property identifiers (section 2.2.2.2).
enum class property_id : std::uint8_t {
  payload_format_indicator = 0x01,
  message_expiry_interval = 0x02,
  content_type = 0x03,
  response_topic = 0x08,
  correlation_data = 0x09,
  subscription_identifier = 0x0B,
  session_expiry_interval = 0x11,
  assigned_client_identifier = 0x12,
  server_keep_alive = 0x13,
  authentication_method = 0x15,
  authentication_data = 0x16,
  request_problem_information = 0x17,
  will_delay_interval = 0x18,
  request_response_information = 0x19,
  response_information = 0x1A,
  server_reference = 0x1C,
  reason_string = 0x1F,
  receive_maximum = 0x21,
  topic_alias_maximum = 0x22,
  topic_alias = 0x23,
  maximum_qos = 0x24,
  retain_available = 0x25,
  user_property = 0x26,
  maximum_packet_size = 0x27,
  wildcard_subscription_available = 0x28,
  subscription_identifier_available = 0x29,
  shared_subscription_available = 0x2A,
};

enum class property_type : std::uint8_t {
  byte,
  two_byte_integer,
  four_byte_integer,
  variable_byte_integer,
  utf8_string,
  binary_data,
  utf8_string_pair,
};

/// Where a property may appear: a bit per packet type, plus bit 0 for a CONNECT's will properties.
using property_places = std::uint16_t;
inline constexpr property_places will_properties = 1u << 0;
constexpr property_places place_of(packet_type t) noexcept {
  return static_cast<property_places>(1u << static_cast<unsigned>(t));
}

struct property_info {
  property_type type;
  property_places places;  // zero for an unknown identifier
  bool repeatable;         // User Property anywhere, Subscription Identifier in PUBLISH
  const char* name;
};

/// The specification's table of properties; unknown identifiers get places == 0.
constexpr property_info info(property_id id) noexcept {
  constexpr auto P = [](packet_type t) { return place_of(t); };
  using pt = packet_type;
  using ty = property_type;
  switch (id) {
    case property_id::payload_format_indicator:
      return {ty::byte, static_cast<property_places>(P(pt::publish) | will_properties), false, "Payload Format Indicator"};
    case property_id::message_expiry_interval:
      return {ty::four_byte_integer, static_cast<property_places>(P(pt::publish) | will_properties), false, "Message Expiry Interval"};
    case property_id::content_type:
      return {ty::utf8_string, static_cast<property_places>(P(pt::publish) | will_properties), false, "Content Type"};
    case property_id::response_topic:
      return {ty::utf8_string, static_cast<property_places>(P(pt::publish) | will_properties), false, "Response Topic"};
    case property_id::correlation_data:
      return {ty::binary_data, static_cast<property_places>(P(pt::publish) | will_properties), false, "Correlation Data"};
    case property_id::subscription_identifier:
      // Repeatable in PUBLISH (one per matching subscription); at most once in SUBSCRIBE.
      return {ty::variable_byte_integer, static_cast<property_places>(P(pt::publish) | P(pt::subscribe)), true, "Subscription Identifier"};
    case property_id::session_expiry_interval:
      return {ty::four_byte_integer, static_cast<property_places>(P(pt::connect) | P(pt::connack) | P(pt::disconnect)), false, "Session Expiry Interval"};
    case property_id::assigned_client_identifier:
      return {ty::utf8_string, P(pt::connack), false, "Assigned Client Identifier"};
    case property_id::server_keep_alive:
      return {ty::two_byte_integer, P(pt::connack), false, "Server Keep Alive"};
    case property_id::authentication_method:
      return {ty::utf8_string, static_cast<property_places>(P(pt::connect) | P(pt::connack) | P(pt::auth)), false, "Authentication Method"};
    case property_id::authentication_data:
      return {ty::binary_data, static_cast<property_places>(P(pt::connect) | P(pt::connack) | P(pt::auth)), false, "Authentication Data"};
    case property_id::request_problem_information:
      return {ty::byte, P(pt::connect), false, "Request Problem Information"};
    case property_id::will_delay_interval:
      return {ty::four_byte_integer, will_properties, false, "Will Delay Interval"};
    case property_id::request_response_information:
      return {ty::byte, P(pt::connect), false, "Request Response Information"};
    case property_id::response_information:
      return {ty::utf8_string, P(pt::connack), false, "Response Information"};
    case property_id::server_reference:
      return {ty::utf8_string, static_cast<property_places>(P(pt::connack) | P(pt::disconnect)), false, "Server Reference"};
    case property_id::reason_string:
      return {ty::utf8_string,
              static_cast<property_places>(P(pt::connack) | P(pt::puback) | P(pt::pubrec) | P(pt::pubrel) | P(pt::pubcomp) |
                                           P(pt::suback) | P(pt::unsuback) | P(pt::disconnect) | P(pt::auth)),
              false, "Reason String"};
    case property_id::receive_maximum:
      return {ty::two_byte_integer, static_cast<property_places>(P(pt::connect) | P(pt::connack)), false, "Receive Maximum"};
    case property_id::topic_alias_maximum:
      return {ty::two_byte_integer, static_cast<property_places>(P(pt::connect) | P(pt::connack)), false, "Topic Alias Maximum"};
    case property_id::topic_alias:
      return {ty::two_byte_integer, P(pt::publish), false, "Topic Alias"};
    case property_id::maximum_qos:
      return {ty::byte, P(pt::connack), false, "Maximum QoS"};
    case property_id::retain_available:
      return {ty::byte, P(pt::connack), false, "Retain Available"};
    case property_id::user_property:
      return {ty::utf8_string_pair,
              static_cast<property_places>(will_properties | P(pt::connect) | P(pt::connack) | P(pt::publish) | P(pt::puback) |
                                           P(pt::pubrec) | P(pt::pubrel) | P(pt::pubcomp) | P(pt::subscribe) |
                                           P(pt::suback) | P(pt::unsubscribe) | P(pt::unsuback) | P(pt::disconnect) |
                                           P(pt::auth)),
              true, "User Property"};
    case property_id::maximum_packet_size:
      return {ty::four_byte_integer, static_cast<property_places>(P(pt::connect) | P(pt::connack)), false, "Maximum Packet Size"};
    case property_id::wildcard_subscription_available:
      return {ty::byte, P(pt::connack), false, "Wildcard Subscription Available"};
    case property_id::subscription_identifier_available:
      return {ty::byte, P(pt::connack), false, "Subscription Identifier Available"};
    case property_id::shared_subscription_available:
      return {ty::byte, P(pt::connack), false, "Shared Subscription Available"};
  }
  return {ty::byte, 0, false, "Unknown"};
}

/// One decoded property. Integers of every width are in `integer`; strings and binary data in
/// `value`; a User Property has its name in `key` and its value in `value`.
struct property {
  property_id id{};
  std::uint32_t integer = 0;
  std::string_view key;
  std::string_view value;

  friend bool operator==(const property& a, const property& b) noexcept {
    return a.id == b.id && a.integer == b.integer && a.key == b.key && a.value == b.value;
  }
  friend bool operator!=(const property& a, const property& b) noexcept { return !(a == b); }
};

namespace detail {

/// Reads one property whose identifier is already known to be valid for its type.
inline std::error_code read_property_value(reader& r, property_type type, property& p) noexcept {
  switch (type) {
    case property_type::byte: {
      std::uint8_t v = 0;
      if (auto ec = r.u8(v)) return ec;
      p.integer = v;
      return {};
    }
    case property_type::two_byte_integer: {
      std::uint16_t v = 0;
      if (auto ec = r.u16(v)) return ec;
      p.integer = v;
      return {};
    }
    case property_type::four_byte_integer: return r.u32(p.integer);
    case property_type::variable_byte_integer: return r.varint(p.integer);
    case property_type::utf8_string: return r.utf8(p.value);
    case property_type::binary_data: return r.binary(p.value);
    case property_type::utf8_string_pair:
      if (auto ec = r.utf8(p.key)) return ec;
      return r.utf8(p.value);
  }
  return codec_errc::invalid_property_identifier;
}

/// Value rules the specification calls Protocol Errors.
inline std::error_code check_property_value(const property& p) noexcept {
  switch (p.id) {
    case property_id::payload_format_indicator:
    case property_id::request_problem_information:
    case property_id::request_response_information:
    case property_id::maximum_qos:
    case property_id::retain_available:
    case property_id::wildcard_subscription_available:
    case property_id::subscription_identifier_available:
    case property_id::shared_subscription_available:
      if (p.integer > 1) return protocol_errc::invalid_property_value;
      return {};
    case property_id::receive_maximum:  // 5.0 calls a value of 0 for these three a Protocol Error
    case property_id::maximum_packet_size:
    case property_id::subscription_identifier:
      if (p.integer == 0) return protocol_errc::invalid_property_value;
      return {};
    case property_id::topic_alias:
      if (p.integer == 0) return protocol_errc::topic_alias_invalid;  // [MQTT-3.3.2-8]
      return {};
    default: return {};
  }
}

}  // namespace detail

/// The encoded properties of one packet, already validated by the decoder; iterating decodes
/// them again lazily, so a packet's properties cost no allocation. Built with properties_builder
/// for sending.
class properties_view {
 public:
  class iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = property;
    using difference_type = std::ptrdiff_t;
    using pointer = const property*;
    using reference = const property&;

    iterator() = default;
    const property& operator*() const noexcept { return current_; }
    const property* operator->() const noexcept { return &current_; }
    iterator& operator++() noexcept {
      load();
      return *this;
    }
    iterator operator++(int) noexcept {
      iterator t = *this;
      load();
      return t;
    }
    friend bool operator==(const iterator& a, const iterator& b) noexcept { return a.next_ == b.next_ && a.done_ == b.done_; }
    friend bool operator!=(const iterator& a, const iterator& b) noexcept { return !(a == b); }

   private:
    friend class properties_view;
    iterator(const std::uint8_t* p, const std::uint8_t* end) noexcept : next_(p), end_(end) { load(); }
    void load() noexcept {
      if (next_ == end_) {
        done_ = true;
        return;
      }
      detail::reader r(next_, static_cast<std::size_t>(end_ - next_));
      std::uint32_t id = 0;
      current_ = property{};
      // The bytes were validated when decoded or built, so these reads cannot fail; stop anyway
      // if they do rather than read past the end.
      if (r.varint(id) || id > 0xFF) {
        next_ = end_;
        done_ = true;
        return;
      }
      current_.id = static_cast<property_id>(id);
      if (detail::read_property_value(r, info(current_.id).type, current_)) {
        next_ = end_;
        done_ = true;
        return;
      }
      next_ = r.position();
      done_ = false;
    }

    const std::uint8_t* next_ = nullptr;
    const std::uint8_t* end_ = nullptr;
    bool done_ = true;
    property current_{};
  };

  properties_view() = default;

  /// Validates encoded properties (without their length prefix) for packet place `where`.
  static std::error_code parse(std::string_view bytes, property_places where, properties_view& out) noexcept {
    detail::reader r(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    std::uint64_t seen = 0;  // identifiers are below 64, one bit each for the duplicate check
    while (!r.at_end()) {
      std::uint32_t id = 0;
      if (auto ec = r.varint(id)) return ec;
      if (id > 0x3F) return codec_errc::invalid_property_identifier;
      property p;
      p.id = static_cast<property_id>(id);
      const property_info pi = info(p.id);
      // 5.0 §2.2.2.2: an identifier not valid for the packet type is a Malformed Packet.
      if ((pi.places & where) == 0) return codec_errc::invalid_property_identifier;
      if (auto ec = detail::read_property_value(r, pi.type, p)) return ec;
      const std::uint64_t bit = std::uint64_t{1} << id;
      const bool repeatable = pi.repeatable && !(p.id == property_id::subscription_identifier &&
                                                 where == place_of(packet_type::subscribe));
      if ((seen & bit) != 0 && !repeatable) return protocol_errc::duplicate_property;
      seen |= bit;
      if (auto ec = detail::check_property_value(p)) return ec;
    }
    out = properties_view(bytes);
    return {};
  }

  /// Views bytes that already passed parse() or came from a builder (a stored message's copy).
  /// Iteration stays bounded even if they did not; it just stops early.
  static properties_view from_validated(std::string_view bytes) noexcept { return properties_view(bytes); }

  iterator begin() const noexcept {
    const auto* p = reinterpret_cast<const std::uint8_t*>(bytes_.data());
    return iterator(p, p + bytes_.size());
  }
  iterator end() const noexcept {
    const auto* p = reinterpret_cast<const std::uint8_t*>(bytes_.data()) + bytes_.size();
    iterator it;
    it.next_ = p;
    it.end_ = p;
    it.done_ = true;
    return it;
  }
  bool empty() const noexcept { return bytes_.empty(); }
  /// The encoded bytes, without the Property Length prefix.
  std::string_view bytes() const noexcept { return bytes_; }
  /// Size on the wire: Property Length prefix plus the properties.
  std::size_t wire_size() const noexcept {
    return detail::varint_size(static_cast<std::uint32_t>(bytes_.size())) + bytes_.size();
  }

  /// The first property with this identifier.
  std::optional<property> find(property_id id) const noexcept {
    for (const property& p : *this)
      if (p.id == id) return p;
    return std::nullopt;
  }

  friend bool operator==(const properties_view& a, const properties_view& b) noexcept { return a.bytes_ == b.bytes_; }
  friend bool operator!=(const properties_view& a, const properties_view& b) noexcept { return !(a == b); }

 private:
  explicit properties_view(std::string_view bytes) noexcept : bytes_(bytes) {}
  friend class properties_builder;
  std::string_view bytes_;
};

/// Encodes properties for sending. The view it returns points into the builder.
class properties_builder {
 public:
  properties_builder& add(property_id id, std::uint32_t integer) {
    const property_type t = info(id).type;
    put_id(id);
    switch (t) {
      case property_type::byte: buf_.push_back(static_cast<char>(integer & 0xFFu)); break;
      case property_type::two_byte_integer:
        buf_.push_back(static_cast<char>((integer >> 8) & 0xFFu));
        buf_.push_back(static_cast<char>(integer & 0xFFu));
        break;
      case property_type::four_byte_integer:
        for (int shift = 24; shift >= 0; shift -= 8) buf_.push_back(static_cast<char>((integer >> shift) & 0xFFu));
        break;
      case property_type::variable_byte_integer: {
        std::uint8_t tmp[4];
        detail::writer w(tmp);
        w.varint(integer);
        buf_.append(reinterpret_cast<const char*>(tmp), static_cast<std::size_t>(w.position() - tmp));
        break;
      }
      default: break;
    }
    return *this;
  }
  /// A UTF-8 string or binary data property (strings longer than 65,535 bytes are cut).
  properties_builder& add(property_id id, std::string_view value) {
    put_id(id);
    put_string(value);
    return *this;
  }
  properties_builder& add_user_property(std::string_view key, std::string_view value) {
    put_id(property_id::user_property);
    put_string(key);
    put_string(value);
    return *this;
  }
  properties_builder& add(const property& p) {
    switch (info(p.id).type) {
      case property_type::utf8_string:
      case property_type::binary_data: return add(p.id, p.value);
      case property_type::utf8_string_pair: return add_user_property(p.key, p.value);
      default: return add(p.id, p.integer);
    }
  }
  void clear() noexcept { buf_.clear(); }
  bool empty() const noexcept { return buf_.empty(); }

  /// The properties built so far; valid until the builder changes.
  properties_view view() const noexcept { return properties_view(std::string_view(buf_)); }

 private:
  void put_id(property_id id) { buf_.push_back(static_cast<char>(id)); }
  void put_string(std::string_view s) {
    const std::size_t n = s.size() > 0xFFFF ? 0xFFFF : s.size();
    buf_.push_back(static_cast<char>((n >> 8) & 0xFFu));
    buf_.push_back(static_cast<char>(n & 0xFFu));
    buf_.append(s.data(), n);
  }
  std::string buf_;
};

}  // namespace codec
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CODEC_PROPERTIES_HPP
