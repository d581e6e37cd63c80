// Malformed and forbidden input, case by case from the MQTT 3.1.1 and 5.0 specifications. Each
// case checks the exact error, from decode_packet and from the incremental decoder, and the wire
// mapping: to_reason_code() (0x81 Malformed Packet, 0x82 Protocol Error, 0x84 Unsupported
// Protocol Version, 0x95 Packet too large, ...) and, for CONNECT, to_connack_return_code().
#include <mqttbroker/codec.hpp>

#include "catch.hpp"
#include "codec_support.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

namespace mc = mqttbroker::codec;
using codec_test::hex;
using codec_test::wire;
using mc::packet_type;
using mc::protocol_version;
using mc::role;
using mqttbroker::codec_errc;
using mqttbroker::connack_return_code;
using mqttbroker::protocol_errc;
using mqttbroker::reason_code;

constexpr auto v3_1 = protocol_version::v3_1;
constexpr auto v3_1_1 = protocol_version::v3_1_1;
constexpr auto v5 = protocol_version::v5;
constexpr auto server = role::server;
constexpr auto client = role::client;

constexpr auto malformed = reason_code::malformed_packet;
constexpr auto protocol_error = reason_code::protocol_error;

std::string describe(const std::error_code& ec) {
  if (!ec) return "success";
  return std::string(ec.category().name()) + ": " + ec.message();
}

const std::uint8_t* bytes_of(const std::string& s) { return reinterpret_cast<const std::uint8_t*>(s.data()); }

// Byte builders for hand-made packets.
std::string byte(int b) { return wire({b}); }
std::string u16(unsigned v) { return wire({static_cast<int>((v >> 8) & 0xFF), static_cast<int>(v & 0xFF)}); }
std::string u32(std::uint32_t v) { return u16(v >> 16) + u16(v & 0xFFFF); }
std::string varint(std::uint32_t v) {
  std::string out;
  do {
    auto b = static_cast<int>(v & 0x7F);
    v >>= 7;
    if (v != 0) b |= 0x80;
    out += byte(b);
  } while (v != 0);
  return out;
}
/// A UTF-8 string or binary field: two-byte length and the bytes.
std::string str(std::string_view s) { return u16(static_cast<unsigned>(s.size())) + std::string(s); }
/// A property block: Property Length and the properties.
std::string props(const std::string& p) { return varint(static_cast<std::uint32_t>(p.size())) + p; }
/// A packet: first byte, shortest Remaining Length, body.
std::string pkt(int first, const std::string& body) {
  return byte(first) + varint(static_cast<std::uint32_t>(body.size())) + body;
}

std::string connect_v5(int flags, const std::string& properties, const std::string& payload) {
  return pkt(0x10, str("MQTT") + byte(5) + byte(flags) + u16(60) + props(properties) + payload);
}
std::string connect_v311(int flags, const std::string& payload) {
  return pkt(0x10, str("MQTT") + byte(4) + byte(flags) + u16(60) + payload);
}
std::string connect_for(protocol_version v) {
  return v == v5 ? connect_v5(0x02, "", str("prefix")) : connect_v311(0x02, str("prefix"));
}

/// Runs `bytes` through decode_packet and through an incremental decoder (behind a CONNECT for
/// a server, unless it is one) and expects `want` from both; checks the wire mapping too.
void expect_error(const std::string& bytes, protocol_version v, role side, std::error_code want, reason_code rc,
                  std::optional<connack_return_code> connack = std::nullopt) {
  INFO("bytes: " << hex(bytes) << "  version " << static_cast<int>(v) << (side == server ? " server" : " client"));
  mc::packet p;
  CHECK(describe(mc::decode_packet(bytes, v, side, p)) == describe(want));
  CHECK(static_cast<int>(mqttbroker::to_reason_code(want)) == static_cast<int>(rc));
  const bool is_connect = !bytes.empty() && (static_cast<unsigned char>(bytes[0]) >> 4) == 1;
  if (is_connect) {
    const auto got = mqttbroker::to_connack_return_code(want);
    CHECK(got.has_value() == connack.has_value());
    if (got && connack) CHECK(static_cast<int>(*got) == static_cast<int>(*connack));
  }

  for (bool byte_by_byte : {false, true}) {
    INFO((byte_by_byte ? "decoder, byte by byte" : "decoder, one buffer"));
    mc::decoder_options o;
    o.side = side;
    if (side == client) o.version = v;
    mc::decoder d(o);
    if (side == server && !is_connect) {
      const std::string c = connect_for(v);
      REQUIRE_FALSE(d.feed(bytes_of(c), c.size(), [](mc::packet&) {}).ec);
    }
    std::error_code ec;
    if (byte_by_byte) {
      for (std::size_t i = 0; i < bytes.size() && !ec; ++i) ec = d.feed(bytes_of(bytes) + i, 1, [](mc::packet&) {}).ec;
    } else {
      ec = d.feed(bytes_of(bytes), bytes.size(), [](mc::packet&) {}).ec;
    }
    CHECK(describe(ec) == describe(want));
    if (want) {  // the decoder refuses any more input after an error
      const auto again = d.feed(bytes_of(bytes), bytes.size(), [](mc::packet&) {});
      CHECK(describe(again.ec) == describe(want));
      CHECK(again.consumed == 0);
    }
  }
}

/// `bytes` decodes without error, whole and through the decoder.
void expect_ok(const std::string& bytes, protocol_version v, role side) {
  expect_error(bytes, v, side, {}, reason_code::success, std::nullopt);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Fixed header

TEST_CASE("packet types 0 and, before 5.0, 15 are reserved", "[codec][malformed]") {
  for (protocol_version v : {v3_1_1, v5}) {
    for (role side : {server, client}) {
      expect_error(wire({0x00, 0x00}), v, side, codec_errc::reserved_packet_type, malformed);
    }
  }
  // 15 is AUTH in 5.0 only.
  for (role side : {server, client}) {
    expect_error(wire({0xF0, 0x00}), v3_1_1, side, codec_errc::reserved_packet_type, malformed);
    expect_error(wire({0xF0, 0x00}), v3_1, side, codec_errc::reserved_packet_type, malformed);
    expect_ok(wire({0xF0, 0x00}), v5, side);
  }
}

TEST_CASE("PUBREL, SUBSCRIBE and UNSUBSCRIBE fixed header flags must be 0010",
          "[codec][malformed][MQTT-2.1.3-1][MQTT-3.6.1-1][MQTT-3.8.1-1][MQTT-3.10.1-1]") {
  const std::pair<int, role> types[] = {{0x60, server}, {0x60, client}, {0x80, server}, {0xA0, server}};
  for (const auto& [type, side] : types) {
    for (int flags = 0; flags < 16; ++flags) {
      if (flags == 2) continue;
      for (protocol_version v : {v3_1_1, v5}) {
        expect_error(wire({type | flags, 0x02, 0x00, 0x01}), v, side, codec_errc::invalid_fixed_header_flags, malformed);
      }
    }
  }
}

TEST_CASE("other packets' fixed header flags must be 0000", "[codec][malformed][MQTT-2.1.3-1]") {
  const std::pair<int, role> types[] = {{0x10, server}, {0x20, client}, {0x40, server}, {0x50, client},
                                        {0x70, server}, {0x90, client}, {0xB0, client}, {0xC0, server},
                                        {0xD0, client}, {0xE0, server}, {0xF0, server}, {0xF0, client}};
  for (const auto& [type, side] : types) {
    for (int flags = 1; flags < 16; ++flags) {
      for (protocol_version v : {v3_1_1, v5}) {
        if (type == 0xF0 && v != v5) continue;
        expect_error(wire({type | flags, 0x00}), v, side, codec_errc::invalid_fixed_header_flags, malformed);
      }
    }
  }
}

TEST_CASE("PUBLISH with QoS 3 is malformed", "[codec][malformed][MQTT-3.3.1-4]") {
  for (int first : {0x36, 0x37, 0x3E, 0x3F}) {  // with and without DUP and RETAIN
    for (protocol_version v : {v3_1_1, v5})
      for (role side : {server, client})
        expect_error(pkt(first, str("t") + u16(1) + (v == v5 ? byte(0) : "")), v, side, codec_errc::invalid_qos,
                     malformed);
  }
}

TEST_CASE("PUBLISH with DUP and QoS 0 is malformed", "[codec][malformed][MQTT-3.3.1-2]") {
  for (int first : {0x38, 0x39})
    for (protocol_version v : {v3_1_1, v5})
      expect_error(pkt(first, str("t") + (v == v5 ? byte(0) : "")), v, server,
                   codec_errc::invalid_fixed_header_flags, malformed);
  expect_ok(pkt(0x3A, str("t") + u16(1)), v3_1_1, server);  // DUP with QoS 1 is fine
}

TEST_CASE("a Remaining Length of more than four bytes is malformed", "[codec][malformed][MQTT-1.5.5-1]") {
  for (protocol_version v : {v3_1_1, v5}) {
    expect_error(wire({0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}), v, server, codec_errc::remaining_length_too_long,
                 malformed);
    expect_error(wire({0xC0, 0x80, 0x80, 0x80, 0x80, 0x00}), v, server, codec_errc::remaining_length_too_long,
                 malformed);
    // The decoder stops at the fifth byte, before a body could arrive.
    mc::decoder d({client, mc::max_packet_size, v});
    const std::string bytes = wire({0x30, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00});
    const auto res = d.feed(bytes_of(bytes), bytes.size(), [](mc::packet&) {});
    CHECK(res.ec == codec_errc::remaining_length_too_long);
    CHECK(res.consumed == 5);
  }
}

TEST_CASE("5.0 Variable Byte Integers must use the fewest bytes", "[codec][malformed][MQTT-1.5.5-1]") {
  SECTION("Remaining Length") {
    expect_error(wire({0xC0, 0x80, 0x00}), v5, server, codec_errc::invalid_varint, malformed);
    expect_error(wire({0x40, 0x82, 0x00, 0x00, 0x01}), v5, server, codec_errc::invalid_varint, malformed);
    expect_error(wire({0xE0, 0x80, 0x80, 0x00}), v5, client, codec_errc::invalid_varint, malformed);
    // 3.1.1 has no such rule: the same bytes decode.
    expect_ok(wire({0xC0, 0x80, 0x00}), v3_1_1, server);
    expect_ok(wire({0x40, 0x82, 0x00, 0x00, 0x01}), v3_1_1, server);
  }
  SECTION("Property Length") {
    expect_error(pkt(0x30, str("t") + wire({0x80, 0x00})), v5, server, codec_errc::invalid_varint, malformed);
    expect_error(pkt(0x20, wire({0x00, 0x00, 0x80, 0x80, 0x00})), v5, client, codec_errc::invalid_varint, malformed);
  }
  SECTION("property identifier and Subscription Identifier value") {
    expect_error(pkt(0x30, str("t") + props(wire({0x81, 0x00, 0x01}))), v5, server, codec_errc::invalid_varint,
                 malformed);
    expect_error(pkt(0x30, str("t") + props(wire({0x0B, 0x81, 0x00}))), v5, client, codec_errc::invalid_varint,
                 malformed);
    expect_error(pkt(0x30, str("t") + props(wire({0x0B, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}))), v5, client,
                 codec_errc::invalid_varint, malformed);
  }
}

// ---------------------------------------------------------------------------------------------
// Lengths

TEST_CASE("a field running past the end of the packet is malformed", "[codec][malformed]") {
  SECTION("strings, packet identifiers, reason codes") {
    for (protocol_version v : {v3_1_1, v5}) {
      expect_error(wire({0x30, 0x01, 0x00}), v, server, codec_errc::truncated, malformed);              // half a length
      expect_error(wire({0x30, 0x03, 0x00, 0x05, 'a'}), v, server, codec_errc::truncated, malformed);  // 5 announced
      expect_error(pkt(0x32, str("a/b")), v, server, codec_errc::truncated, malformed);  // QoS 1 without id
      expect_error(pkt(0x32, str("a/b") + byte(0)), v, server, codec_errc::truncated, malformed);
      expect_error(wire({0x40, 0x01, 0x00}), v, server, codec_errc::truncated, malformed);
      expect_error(wire({0x20, 0x01, 0x00}), v, client, codec_errc::truncated, malformed);
      expect_error(wire({0x82, 0x01, 0x00}), v, server, codec_errc::truncated, malformed);
      expect_error(wire({0xB0, 0x00}), v, client, codec_errc::truncated, malformed);
      expect_error(wire({0x10, 0x00}), v, server, codec_errc::truncated, malformed);
    }
  }
  SECTION("properties: a Property Length past the packet, a value past the Property Length") {
    expect_error(pkt(0x30, str("t") + wire({0x05, 0x01, 0x01})), v5, server, codec_errc::truncated, malformed);
    expect_error(pkt(0x30, str("t") + wire({0x02, 0x02, 0x00, 0x00, 0x00, 0x00})), v5, server, codec_errc::truncated,
                 malformed);  // Message Expiry Interval cut after 1 of 4 bytes; the rest is payload
    expect_error(pkt(0x30, str("t") + props(wire({0x26, 0x00, 0x01, 'k'}))), v5, server, codec_errc::truncated,
                 malformed);  // User Property without its value
    expect_error(pkt(0x30, str("t") + props(wire({0x03, 0x00, 0x04, 'a'}))), v5, server, codec_errc::truncated,
                 malformed);
    expect_error(pkt(0x20, wire({0x00, 0x00})), v5, client, codec_errc::truncated, malformed);  // no Property Length
    expect_error(pkt(0x82, u16(1)), v5, server, codec_errc::truncated, malformed);
  }
  SECTION("every proper prefix of a CONNECT body is truncated") {
    const std::string full5 = connect_v5(0xF6, wire({0x21, 0x00, 0x0A}),
                                         str("c") + props(wire({0x01, 0x01})) + str("w") + str("p") + str("u") + str("pw"));
    const std::string full311 = connect_v311(0xEE, str("c") + str("w") + str("p") + str("u") + str("pw"));
    for (const auto& [full, v] : {std::pair{full5, v5}, std::pair{full311, v3_1_1}}) {
      expect_ok(full, v, server);
      const std::string body = full.substr(2);  // Remaining Length < 128
      for (std::size_t n = 0; n < body.size(); ++n)
        expect_error(pkt(0x10, body.substr(0, n)), v, server, codec_errc::truncated, malformed);
    }
  }
  SECTION("every proper prefix of a 5.0 PUBLISH before its payload, and of a 5.0 CONNACK") {
    const std::string pub = str("a/b") + u16(7) + props(wire({0x02, 0x00, 0x00, 0x00, 0x09}));
    for (std::size_t n = 0; n < pub.size(); ++n)
      expect_error(pkt(0x32, pub.substr(0, n)), v5, server, codec_errc::truncated, malformed);
    const std::string ack = wire({0x00, 0x00}) + props(wire({0x13, 0x00, 0x05}));
    for (std::size_t n = 0; n < ack.size(); ++n)
      expect_error(pkt(0x20, ack.substr(0, n)), v5, client, codec_errc::truncated, malformed);
  }
}

TEST_CASE("bytes after the last field are malformed", "[codec][malformed]") {
  for (protocol_version v : {v3_1_1, v5}) {
    expect_error(wire({0xC0, 0x01, 0x00}), v, server, codec_errc::trailing_bytes, malformed);
    expect_error(wire({0xD0, 0x01, 0x00}), v, client, codec_errc::trailing_bytes, malformed);
    expect_error(pkt(0x10, str("MQTT") + byte(v == v5 ? 5 : 4) + byte(2) + u16(0) + (v == v5 ? byte(0) : "") +
                               str("c") + byte(0)),
                 v, server, codec_errc::trailing_bytes, malformed);
  }
  // 3.1.1 packets have no room for 5.0's optional fields.
  expect_error(wire({0x40, 0x03, 0x00, 0x0A, 0x00}), v3_1_1, server, codec_errc::trailing_bytes, malformed);
  expect_error(wire({0x62, 0x03, 0x00, 0x0A, 0x00}), v3_1_1, server, codec_errc::trailing_bytes, malformed);
  expect_error(wire({0x20, 0x03, 0x00, 0x00, 0x00}), v3_1_1, client, codec_errc::trailing_bytes, malformed);
  expect_error(wire({0xB0, 0x03, 0x00, 0x0A, 0x00}), v3_1_1, client, codec_errc::trailing_bytes, malformed);
  expect_error(wire({0xE0, 0x01, 0x00}), v3_1_1, server, codec_errc::trailing_bytes, malformed);
  // 5.0: bytes after the properties.
  expect_error(wire({0x20, 0x04, 0x00, 0x00, 0x00, 0x00}), v5, client, codec_errc::trailing_bytes, malformed);
  expect_error(wire({0x40, 0x05, 0x00, 0x0A, 0x00, 0x00, 0x00}), v5, client, codec_errc::trailing_bytes, malformed);
  expect_error(wire({0xE0, 0x03, 0x00, 0x00, 0x00}), v5, server, codec_errc::trailing_bytes, malformed);
  expect_error(wire({0xF0, 0x03, 0x00, 0x00, 0x00}), v5, server, codec_errc::trailing_bytes, malformed);
  // decode_packet takes exactly one packet: bytes after the Remaining Length are refused.
  mc::packet p;
  CHECK(mc::decode_packet(wire({0xC0, 0x00, 0x00}), v3_1_1, server, p) == codec_errc::trailing_bytes);
  CHECK(mc::decode_packet(wire({0x30, 0x04, 0x00, 0x01, 't'}), v3_1_1, server, p) == codec_errc::truncated);
  CHECK(mc::decode_packet("", v3_1_1, server, p) == codec_errc::truncated);
  CHECK(mc::decode_packet(wire({0x30}), v3_1_1, server, p) == codec_errc::truncated);
}

// ---------------------------------------------------------------------------------------------
// UTF-8 Encoded Strings

namespace {

const std::vector<std::string>& ill_formed_utf8() {
  static const std::vector<std::string> cases = {
      wire({0xC0, 0x80}),                    // overlong U+0000
      wire({0xC0, 0xAF}),                    // overlong '/'
      wire({0xC1, 0xBF}),                    // overlong U+007F
      wire({0xE0, 0x80, 0xAF}),              // overlong 3-byte '/'
      wire({0xE0, 0x9F, 0xBF}),              // overlong U+07FF
      wire({0xF0, 0x80, 0x80, 0xAF}),        // overlong 4-byte '/'
      wire({0xF0, 0x8F, 0xBF, 0xBF}),        // overlong U+FFFF
      wire({0xED, 0xA0, 0x80}),              // U+D800, a surrogate half
      wire({0xED, 0xBF, 0xBF}),              // U+DFFF
      wire({0xED, 0xA0, 0xBD, 0xED, 0xB2, 0xA9}),  // a UTF-16 surrogate pair spelt in UTF-8 (CESU-8)
      wire({0xF8, 0x88, 0x80, 0x80, 0x80}),  // 5-byte form
      wire({0xFC, 0x84, 0x80, 0x80, 0x80, 0x80}),  // 6-byte form
      wire({0x80}),                          // lone continuation byte
      wire({0xBF}),
      wire({'a', 0x80, 'b'}),
      wire({0xE2, 0x82}),                    // truncated 3-byte sequence (the Euro sign E2 82 AC)
      wire({0xF0, 0x9F, 0x98}),              // truncated 4-byte sequence
      wire({0xC3}),                          // truncated 2-byte sequence
      wire({0xC3, 0x28}),                    // bad continuation
      wire({0xE2, 0x28, 0xA1}),
      wire({0xE2, 0x82, 0x28}),
      wire({0xF4, 0x90, 0x80, 0x80}),        // U+110000, above U+10FFFF
      wire({0xF5, 0x80, 0x80, 0x80}),
      wire({0xF7, 0xBF, 0xBF, 0xBF}),
      wire({0xFE}),
      wire({0xFF}),
  };
  return cases;
}

const std::vector<std::string>& well_formed_utf8() {
  static const std::vector<std::string> cases = {
      "",
      "a/b",
      wire({0x01}),                    // control characters are allowed, not required to be refused
      wire({0x7F}),
      wire({0xC2, 0x80}),              // U+0080
      wire({0xC2, 0x9F}),              // U+009F
      wire({0xDF, 0xBF}),              // U+07FF
      wire({0xE0, 0xA0, 0x80}),        // U+0800
      wire({0xED, 0x9F, 0xBF}),        // U+D7FF, just below the surrogates
      wire({0xEE, 0x80, 0x80}),        // U+E000, just above
      wire({0xEF, 0xBB, 0xBF}),        // U+FEFF, the BOM [MQTT-1.5.4-3]
      wire({0xEF, 0xBF, 0xBF}),        // U+FFFF, a non-character
      wire({0xF0, 0x90, 0x80, 0x80}),  // U+10000
      wire({0xF4, 0x8F, 0xBF, 0xBF}),  // U+10FFFF
      wire({0xE2, 0x82, 0xAC, 'x', 0xF0, 0x9F, 0x98, 0x80}),
  };
  return cases;
}

}  // namespace

TEST_CASE("validate_utf8 refuses ill-formed UTF-8 at any position", "[codec][malformed][utf8][MQTT-1.5.4-1]") {
  for (const std::string& bad : ill_formed_utf8()) {
    // At every offset after 0..17 ASCII bytes and before a tail, so the 8-byte ASCII fast path
    // meets it at every alignment.
    for (std::size_t lead = 0; lead < 18; ++lead) {
      for (const char* tail : {"", "abcdefghij"}) {
        const std::string s = std::string(lead, 'x') + bad + tail;
        INFO(hex(s));
        CHECK(mc::validate_utf8(s) == codec_errc::invalid_utf8);
      }
    }
  }
  for (const std::string& good : well_formed_utf8()) {
    for (std::size_t lead = 0; lead < 18; ++lead) {
      const std::string s = std::string(lead, 'x') + good + "0123456789";
      INFO(hex(s));
      CHECK_FALSE(mc::validate_utf8(s));
    }
  }
}

TEST_CASE("validate_utf8 refuses U+0000 at any position", "[codec][malformed][utf8][MQTT-1.5.4-2]") {
  for (std::size_t len = 1; len < 40; ++len) {
    for (std::size_t at = 0; at < len; ++at) {
      std::string s(len, 'a');
      s[at] = '\0';
      INFO(hex(s));
      CHECK(mc::validate_utf8(s) == codec_errc::utf8_null_character);
    }
  }
  // Bytes whose SWAR zero test could misfire (0x01, 0x80 neighbours) are not taken for U+0000.
  CHECK_FALSE(mc::validate_utf8(wire({0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01})));
  CHECK_FALSE(mc::validate_utf8(wire({0x7F, 0x01, 0x7F, 0x01, 0x7F, 0x01, 0x7F, 0x01, 0xC2, 0x80})));
}

TEST_CASE("every UTF-8 Encoded String field is validated", "[codec][malformed][utf8][MQTT-1.5.4-1][MQTT-1.5.4-2]"
          "[MQTT-3.1.3-4][MQTT-3.3.2-1][MQTT-3.8.3-1][MQTT-3.10.3-1]") {
  const std::string surrogate = wire({0xED, 0xA0, 0x80});
  const std::string nul = std::string("a\0b", 3);
  for (const auto& [bad, want] : {std::pair<std::string, codec_errc>{surrogate, codec_errc::invalid_utf8},
                                  std::pair<std::string, codec_errc>{nul, codec_errc::utf8_null_character}}) {
    const std::error_code ec = want;
    // CONNECT: client id, will topic, user name (the password is binary and may hold anything).
    expect_error(connect_v311(0x02, str(bad)), v3_1_1, server, ec, malformed);
    expect_error(connect_v5(0x02, "", str(bad)), v5, server, ec, malformed);
    expect_error(connect_v311(0x06, str("c") + str(bad) + str("p")), v3_1_1, server, ec, malformed);
    expect_error(connect_v311(0x82, str("c") + str(bad)), v3_1_1, server, ec, malformed);
    expect_ok(connect_v311(0xC2, str("c") + str("u") + str(bad)), v3_1_1, server);
    // PUBLISH topic; SUBSCRIBE and UNSUBSCRIBE filters.
    expect_error(pkt(0x30, str(bad)), v3_1_1, server, ec, malformed);
    expect_error(pkt(0x30, str(bad) + byte(0)), v5, client, ec, malformed);
    expect_error(pkt(0x82, u16(1) + str("ok") + byte(0) + str(bad) + byte(0)), v3_1_1, server, ec, malformed);
    expect_error(pkt(0xA2, u16(1) + byte(0) + str(bad)), v5, server, ec, malformed);
    // String properties, both halves of a User Property, and will properties.
    expect_error(pkt(0x30, str("t") + props(byte(0x03) + str(bad))), v5, server, ec, malformed);  // Content Type
    expect_error(pkt(0x30, str("t") + props(byte(0x08) + str(bad))), v5, server, ec, malformed);  // Response Topic
    expect_error(pkt(0x30, str("t") + props(byte(0x26) + str(bad) + str("v"))), v5, server, ec, malformed);
    expect_error(pkt(0x30, str("t") + props(byte(0x26) + str("k") + str(bad))), v5, server, ec, malformed);
    expect_error(pkt(0x40, u16(1) + byte(0x80) + props(byte(0x1F) + str(bad))), v5, server, ec, malformed);
    expect_error(pkt(0x20, u16(0) + props(byte(0x12) + str(bad))), v5, client, ec, malformed);
    expect_error(pkt(0xF0, byte(0x18) + props(byte(0x15) + str(bad))), v5, client, ec, malformed);
    expect_error(connect_v5(0x06, "", str("c") + props(byte(0x03) + str(bad)) + str("t") + str("p")), v5, server, ec,
                 malformed);
    // Binary Data may hold anything: Correlation Data and the payload.
    expect_ok(pkt(0x30, str("t") + props(byte(0x09) + str(bad)) + bad), v5, server);
  }
  // The BOM is kept, not skipped [MQTT-1.5.4-3].
  const std::string bom = pkt(0x30, str(wire({0xEF, 0xBB, 0xBF, 't'})));  // the packet's views point into it
  mc::packet p;
  REQUIRE_FALSE(mc::decode_packet(bom, v3_1_1, server, p));
  CHECK(std::get<mc::publish>(p).topic == wire({0xEF, 0xBB, 0xBF, 't'}));
}

// ---------------------------------------------------------------------------------------------
// Packet identifiers

TEST_CASE("packet identifier 0 is a protocol error", "[codec][protocol-error][MQTT-2.2.1-3]") {
  for (protocol_version v : {v3_1_1, v5}) {
    const std::string p = v == v5 ? byte(0) : "";  // an empty property block in 5.0
    const std::error_code ec = protocol_errc::zero_packet_identifier;
    expect_error(pkt(0x32, str("t") + u16(0) + p), v, server, ec, protocol_error);
    expect_error(pkt(0x34, str("t") + u16(0) + p), v, client, ec, protocol_error);
    expect_error(pkt(0x82, u16(0) + p + str("f") + byte(0)), v, server, ec, protocol_error);
    expect_error(pkt(0xA2, u16(0) + p + str("f")), v, server, ec, protocol_error);
    expect_error(pkt(0x40, u16(0)), v, server, ec, protocol_error);
    expect_error(pkt(0x50, u16(0)), v, client, ec, protocol_error);
    expect_error(pkt(0x62, u16(0)), v, server, ec, protocol_error);
    expect_error(pkt(0x70, u16(0)), v, client, ec, protocol_error);
    expect_error(pkt(0x90, u16(0) + p + byte(0)), v, client, ec, protocol_error);
    expect_error(pkt(0xB0, u16(0) + (v == v5 ? p + byte(0) : "")), v, client, ec, protocol_error);
    // A QoS 0 PUBLISH has no packet identifier: these two bytes are payload.
    expect_ok(pkt(0x30, str("t") + p + u16(0)), v, server);
  }
}

// ---------------------------------------------------------------------------------------------
// CONNECT

TEST_CASE("CONNECT with a protocol name other than MQTT or MQIsdp", "[codec][protocol-error][MQTT-3.1.2-1]") {
  const std::error_code ec = protocol_errc::invalid_protocol_name;
  const auto rc = reason_code::unsupported_protocol_version;
  const auto crc = connack_return_code::unacceptable_protocol_version;
  for (const char* name : {"MQTX", "mqtt", "MQT", "MQTTT", "", "MQIsdP"}) {
    expect_error(pkt(0x10, str(name) + byte(4) + byte(2) + u16(0) + str("c")), v3_1_1, server, ec, rc, crc);
    expect_error(pkt(0x10, str(name) + byte(5) + byte(2) + u16(0) + byte(0) + str("c")), v5, server, ec, rc, crc);
  }
}

TEST_CASE("CONNECT with an unsupported protocol level", "[codec][protocol-error][MQTT-3.1.2-2]") {
  const std::error_code ec = protocol_errc::unsupported_protocol_version;
  const auto rc = reason_code::unsupported_protocol_version;
  const auto crc = connack_return_code::unacceptable_protocol_version;
  // 0x83 to 0x85 are the levels with Mosquitto's bridge bit (DECISIONS.md: accepted); the bit
  // does not make another level valid.
  for (int level : {0, 1, 2, 3, 6, 7, 0x80, 0x83, 0x86, 0xFF})
    expect_error(pkt(0x10, str("MQTT") + byte(level) + byte(2) + u16(0) + str("c")), v3_1_1, server, ec, rc, crc);
  for (int level : {0, 4, 5, 6, 0x84})  // "MQIsdp" goes with level 3 only
    expect_error(pkt(0x10, str("MQIsdp") + byte(level) + byte(2) + u16(0) + str("c")), v3_1_1, server, ec, rc, crc);
  expect_ok(pkt(0x10, str("MQIsdp") + byte(3) + byte(2) + u16(0) + str("c")), v3_1_1, server);
}

TEST_CASE("CONNECT with Mosquitto's bridge bit: the level is the low seven bits, the packet says bridge",
          "[codec][bridge]") {
  struct level_case {
    const char* name;
    int level;
    protocol_version version;
    std::string rest;
  };
  const level_case cases[] = {{"MQIsdp", 0x83, protocol_version::v3_1, ""},
                              {"MQTT", 0x84, protocol_version::v3_1_1, ""},
                              {"MQTT", 0x85, protocol_version::v5, byte(0)}};
  for (const level_case& k : cases) {
    const std::string bytes = pkt(0x10, str(k.name) + byte(k.level) + byte(2) + u16(0) + k.rest + str("c"));
    mc::packet p;
    REQUIRE_FALSE(mc::decode_packet(bytes, k.version, server, p));
    const auto& c = std::get<mc::connect>(p);
    CHECK(c.bridge);
    CHECK(c.version == k.version);
    // Encoded again, the bit stays.
    std::string again;
    REQUIRE_FALSE(mc::encode(c, k.version, again));
    CHECK(again == bytes);
  }
  mc::packet plain;
  REQUIRE_FALSE(mc::decode_packet(pkt(0x10, str("MQTT") + byte(4) + byte(2) + u16(0) + str("c")), v3_1_1, server, plain));
  CHECK_FALSE(std::get<mc::connect>(plain).bridge);
}

TEST_CASE("CONNECT with the reserved flag set is malformed", "[codec][malformed][MQTT-3.1.2-3]") {
  for (int flags : {0x01, 0x03, 0xFF}) {
    expect_error(connect_v311(flags, str("c")), v3_1_1, server, codec_errc::invalid_connect_flags, malformed);
    expect_error(connect_v5(flags, "", str("c")), v5, server, codec_errc::invalid_connect_flags, malformed);
  }
}

TEST_CASE("CONNECT with Will QoS 3 is malformed", "[codec][malformed][MQTT-3.1.2-12][MQTT-3.1.2-14]") {
  // 5.0 [MQTT-3.1.2-12] "A value of 3 (0x03) is a Malformed Packet"; 3.1.1 [MQTT-3.1.2-14].
  const std::string will = str("t") + str("p");
  expect_error(connect_v311(0x1E, str("c") + will), v3_1_1, server, codec_errc::invalid_qos, malformed);
  expect_error(connect_v5(0x1E, "", str("c") + byte(0) + will), v5, server, codec_errc::invalid_qos, malformed);
}

TEST_CASE("CONNECT with Will QoS or Will Retain but no Will Flag is malformed",
          "[codec][malformed][MQTT-3.1.2-11][MQTT-3.1.2-13][MQTT-3.1.2-15]") {
  // 5.0 [MQTT-3.1.2-11] Will QoS 0 and [MQTT-3.1.2-13] Will Retain 0 without the Will Flag;
  // 3.1.1 numbers them [MQTT-3.1.2-13] and [MQTT-3.1.2-15].
  for (int flags : {0x0A, 0x12, 0x1A, 0x22, 0x3A}) {
    expect_error(connect_v311(flags, str("c")), v3_1_1, server, codec_errc::invalid_connect_flags, malformed);
    expect_error(connect_v5(flags, "", str("c")), v5, server, codec_errc::invalid_connect_flags, malformed);
  }
}

TEST_CASE("3.1.1 CONNECT with a password but no user name", "[codec][protocol-error][MQTT-3.1.2-22]") {
  expect_error(connect_v311(0x42, str("c") + str("pw")), v3_1_1, server, protocol_errc::password_without_username,
               protocol_error);
  expect_error(pkt(0x10, str("MQIsdp") + byte(3) + byte(0x42) + u16(0) + str("c") + str("pw")), v3_1, server,
               protocol_errc::password_without_username, protocol_error);
  // 5.0 allows it (3.1.2.9).
  expect_ok(connect_v5(0x42, "", str("c") + str("pw")), v5, server);
}

TEST_CASE("5.0 CONNECT with Authentication Data but no Authentication Method", "[codec][protocol-error]") {
  // 5.0 §3.1.2.11.10: "It is a Protocol Error to include Authentication Data if there is no
  // Authentication Method."
  expect_error(connect_v5(0x02, byte(0x16) + str("data"), str("c")), v5, server, protocol_errc::auth_method_missing,
               protocol_error);
  expect_ok(connect_v5(0x02, byte(0x16) + str("data") + byte(0x15) + str("SCRAM"), str("c")), v5, server);
  expect_ok(connect_v5(0x02, byte(0x15) + str("SCRAM"), str("c")), v5, server);
}

TEST_CASE("CONNECT properties and will properties are distinct sets", "[codec][malformed]") {
  // Topic Alias is a PUBLISH property; Will Delay Interval belongs to the will properties only.
  expect_error(connect_v5(0x02, byte(0x23) + u16(1), str("c")), v5, server, codec_errc::invalid_property_identifier,
               malformed);
  expect_error(connect_v5(0x02, byte(0x18) + u32(5), str("c")), v5, server, codec_errc::invalid_property_identifier,
               malformed);
  expect_ok(connect_v5(0x06, "", str("c") + props(byte(0x18) + u32(5)) + str("t") + str("p")), v5, server);
  expect_error(connect_v5(0x06, "", str("c") + props(byte(0x11) + u32(5)) + str("t") + str("p")), v5, server,
               codec_errc::invalid_property_identifier, malformed);  // Session Expiry is not a will property
}

// ---------------------------------------------------------------------------------------------
// Properties

namespace {

/// The property table of 5.0 §2.2.2.2, written out here: identifier, where it may appear.
const std::map<int, std::set<std::string>>& spec_property_places() {
  static const std::map<int, std::set<std::string>> table = {
      {0x01, {"PUBLISH", "Will"}},
      {0x02, {"PUBLISH", "Will"}},
      {0x03, {"PUBLISH", "Will"}},
      {0x08, {"PUBLISH", "Will"}},
      {0x09, {"PUBLISH", "Will"}},
      {0x0B, {"PUBLISH", "SUBSCRIBE"}},
      {0x11, {"CONNECT", "CONNACK", "DISCONNECT"}},
      {0x12, {"CONNACK"}},
      {0x13, {"CONNACK"}},
      {0x15, {"CONNECT", "CONNACK", "AUTH"}},
      {0x16, {"CONNECT", "CONNACK", "AUTH"}},
      {0x17, {"CONNECT"}},
      {0x18, {"Will"}},
      {0x19, {"CONNECT"}},
      {0x1A, {"CONNACK"}},
      {0x1C, {"CONNACK", "DISCONNECT"}},
      {0x1F, {"CONNACK", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBACK", "UNSUBACK", "DISCONNECT", "AUTH"}},
      {0x21, {"CONNECT", "CONNACK"}},
      {0x22, {"CONNECT", "CONNACK"}},
      {0x23, {"PUBLISH"}},
      {0x24, {"CONNACK"}},
      {0x25, {"CONNACK"}},
      {0x26, {"CONNECT", "CONNACK", "PUBLISH", "Will", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBSCRIBE", "SUBACK",
              "UNSUBSCRIBE", "UNSUBACK", "DISCONNECT", "AUTH"}},
      {0x27, {"CONNECT", "CONNACK"}},
      {0x28, {"CONNACK"}},
      {0x29, {"CONNACK"}},
      {0x2A, {"CONNACK"}},
  };
  return table;
}

/// One property with a valid value, by its data type in 2.2.2.2.
std::string valid_property(int id) {
  switch (id) {
    case 0x02: case 0x11: case 0x18: case 0x27: return byte(id) + u32(1);  // Four Byte Integer
    case 0x13: case 0x21: case 0x22: case 0x23: return byte(id) + u16(1);  // Two Byte Integer
    case 0x0B: return byte(id) + varint(1);                                // Variable Byte Integer
    case 0x03: case 0x08: case 0x12: case 0x15: case 0x1A: case 0x1C: case 0x1F: return byte(id) + str("x");
    case 0x09: case 0x16: return byte(id) + str(wire({0x00, 0xFF}));      // Binary Data
    case 0x26: return byte(id) + str("k") + str("v");                      // UTF-8 String Pair
    default: return byte(id) + byte(1);                                     // Byte (and unknown ones)
  }
}

struct carrier {
  const char* place;
  role side;
  std::string (*make)(const std::string& properties);
};

/// A 5.0 packet of each kind that has properties, holding `p` as its property block.
const std::vector<carrier>& carriers() {
  static const std::vector<carrier> all = {
      {"CONNECT", server, [](const std::string& p) { return connect_v5(0x02, p, str("c")); }},
      {"Will", server, [](const std::string& p) { return connect_v5(0x06, "", str("c") + props(p) + str("t") + str("m")); }},
      {"CONNACK", client, [](const std::string& p) { return pkt(0x20, u16(0) + props(p)); }},
      {"PUBLISH", server, [](const std::string& p) { return pkt(0x30, str("t") + props(p) + "x"); }},
      {"PUBACK", server, [](const std::string& p) { return pkt(0x40, u16(1) + byte(0) + props(p)); }},
      {"PUBREC", client, [](const std::string& p) { return pkt(0x50, u16(1) + byte(0) + props(p)); }},
      {"PUBREL", server, [](const std::string& p) { return pkt(0x62, u16(1) + byte(0) + props(p)); }},
      {"PUBCOMP", client, [](const std::string& p) { return pkt(0x70, u16(1) + byte(0) + props(p)); }},
      {"SUBSCRIBE", server, [](const std::string& p) { return pkt(0x82, u16(1) + props(p) + str("f") + byte(0)); }},
      {"SUBACK", client, [](const std::string& p) { return pkt(0x90, u16(1) + props(p) + byte(0)); }},
      {"UNSUBSCRIBE", server, [](const std::string& p) { return pkt(0xA2, u16(1) + props(p) + str("f")); }},
      {"UNSUBACK", client, [](const std::string& p) { return pkt(0xB0, u16(1) + props(p) + byte(0)); }},
      {"DISCONNECT", server, [](const std::string& p) { return pkt(0xE0, byte(0) + props(p)); }},
      {"AUTH", client, [](const std::string& p) { return pkt(0xF0, byte(0) + props(p)); }},
  };
  return all;
}

}  // namespace

TEST_CASE("a property is allowed exactly where the 5.0 property table says", "[codec][malformed][properties]") {
  // 5.0 §2.2.2.2: "A Control Packet which contains an Identifier which is not valid for its packet
  // type, or contains a value not of the specified data type, is a Malformed Packet."
  const auto& table = spec_property_places();
  for (int id = 0; id < 0x40; ++id) {
    const auto row = table.find(id);
    for (const carrier& c : carriers()) {
      INFO("property " << id << " in " << c.place);
      const bool allowed = row != table.end() && row->second.count(c.place) != 0;
      const std::string bytes = c.make(valid_property(id));
      mc::packet p;
      const std::error_code ec = mc::decode_packet(bytes, v5, c.side, p);
      if (!allowed) {
        CHECK(ec == codec_errc::invalid_property_identifier);
      } else if (id == 0x16 && std::string(c.place) == "CONNECT") {
        CHECK(ec == protocol_errc::auth_method_missing);  // allowed, but needs a method
      } else {
        CHECK(describe(ec) == "success");
      }
    }
  }
  // And the codec's own table agrees, identifier by identifier.
  for (int id = 0; id < 256; ++id) {
    const auto row = table.find(id);
    const mc::property_info pi = mc::info(static_cast<mc::property_id>(id));
    INFO("property " << id << " " << pi.name);
    CHECK((row == table.end()) == (pi.places == 0));
  }
}

TEST_CASE("unknown property identifiers are malformed", "[codec][malformed][properties]") {
  for (const std::string& id : {byte(0x00), byte(0x04), byte(0x10), byte(0x2B), byte(0x3F), byte(0x40), byte(0x7F),
                                wire({0x80, 0x01}), wire({0xFF, 0x7F})}) {
    expect_error(pkt(0x30, str("t") + props(id + byte(1))), v5, server, codec_errc::invalid_property_identifier,
                 malformed);
    expect_error(pkt(0x20, u16(0) + props(id + byte(1))), v5, client, codec_errc::invalid_property_identifier,
                 malformed);
  }
}

TEST_CASE("a property allowed once appears twice: protocol error", "[codec][protocol-error][properties]") {
  // "It is a Protocol Error to include <property> more than once" (3.1.2.11, 3.2.2.3, 3.3.2.3, ...).
  const std::error_code dup = protocol_errc::duplicate_property;
  expect_error(pkt(0x30, str("t") + props(byte(0x02) + u32(1) + byte(0x02) + u32(2))), v5, server, dup, protocol_error);
  expect_error(pkt(0x30, str("t") + props(byte(0x23) + u16(1) + byte(0x01) + byte(0) + byte(0x23) + u16(1))), v5,
               server, dup, protocol_error);
  expect_error(connect_v5(0x02, byte(0x21) + u16(1) + byte(0x21) + u16(1), str("c")), v5, server, dup, protocol_error);
  expect_error(connect_v5(0x06, "", str("c") + props(byte(0x03) + str("a") + byte(0x03) + str("b")) + str("t") + str("p")),
               v5, server, dup, protocol_error);
  expect_error(pkt(0x20, u16(0) + props(byte(0x24) + byte(0) + byte(0x24) + byte(1))), v5, client, dup,
               protocol_error);
  expect_error(pkt(0x40, u16(1) + byte(0) + props(byte(0x1F) + str("a") + byte(0x1F) + str("b"))), v5, server, dup,
               protocol_error);
  expect_error(pkt(0xF0, byte(0x18) + props(byte(0x15) + str("a") + byte(0x15) + str("a"))), v5, client, dup,
               protocol_error);
}

TEST_CASE("User Property may repeat anywhere", "[codec][properties]") {
  const std::string three = byte(0x26) + str("k") + str("1") + byte(0x26) + str("k") + str("2") + byte(0x26) + str("a") + str("3");
  for (const carrier& c : carriers()) {
    INFO(c.place);
    expect_ok(c.make(three), v5, c.side);
  }
}

TEST_CASE("Subscription Identifier: twice in PUBLISH is fine, twice in SUBSCRIBE is a protocol error",
          "[codec][properties][protocol-error]") {
  // 3.3.2.3.8: a PUBLISH carries one per matching subscription; 3.8.2.1.2: "It is a Protocol
  // Error to include the Subscription Identifier more than once" in SUBSCRIBE.
  expect_ok(pkt(0x30, str("t") + props(byte(0x0B) + varint(1) + byte(0x0B) + varint(300))), v5, client);
  expect_error(pkt(0x82, u16(1) + props(byte(0x0B) + varint(1) + byte(0x0B) + varint(2)) + str("f") + byte(0)), v5,
               server, protocol_errc::duplicate_property, protocol_error);
}

TEST_CASE("property values the specification forbids are protocol errors", "[codec][protocol-error][properties]") {
  const std::error_code bad = protocol_errc::invalid_property_value;
  SECTION("Subscription Identifier 0 (3.8.2.1.2)") {
    expect_error(pkt(0x82, u16(1) + props(byte(0x0B) + varint(0)) + str("f") + byte(0)), v5, server, bad,
                 protocol_error);
    expect_error(pkt(0x30, str("t") + props(byte(0x0B) + varint(0))), v5, client, bad, protocol_error);
  }
  SECTION("Receive Maximum 0 and Maximum Packet Size 0 (3.1.2.11.3, 3.1.2.11.4, 3.2.2.3.3, 3.2.2.3.6)") {
    expect_error(connect_v5(0x02, byte(0x21) + u16(0), str("c")), v5, server, bad, protocol_error);
    expect_error(connect_v5(0x02, byte(0x27) + u32(0), str("c")), v5, server, bad, protocol_error);
    expect_error(pkt(0x20, u16(0) + props(byte(0x21) + u16(0))), v5, client, bad, protocol_error);
    expect_error(pkt(0x20, u16(0) + props(byte(0x27) + u32(0))), v5, client, bad, protocol_error);
  }
  SECTION("Topic Alias 0 is Topic Alias invalid, 0x94") {
    expect_error(pkt(0x30, str("t") + props(byte(0x23) + u16(0))), v5, server, protocol_errc::topic_alias_invalid,
                 reason_code::topic_alias_invalid);
  }
  SECTION("Byte properties that are 0 or 1") {
    // Payload Format Indicator 2 (in PUBLISH and in the will properties).
    expect_error(pkt(0x30, str("t") + props(byte(0x01) + byte(2))), v5, server, bad, protocol_error);
    expect_error(connect_v5(0x06, "", str("c") + props(byte(0x01) + byte(2)) + str("t") + str("p")), v5, server, bad,
                 protocol_error);
    // Request Problem / Response Information (3.1.2.11.7, 3.1.2.11.6).
    expect_error(connect_v5(0x02, byte(0x17) + byte(2), str("c")), v5, server, bad, protocol_error);
    expect_error(connect_v5(0x02, byte(0x19) + byte(2), str("c")), v5, server, bad, protocol_error);
    // Maximum QoS, Retain Available, Wildcard / Subscription Identifier / Shared Subscription Available.
    for (int id : {0x24, 0x25, 0x28, 0x29, 0x2A}) {
      expect_error(pkt(0x20, u16(0) + props(byte(id) + byte(2))), v5, client, bad, protocol_error);
      expect_ok(pkt(0x20, u16(0) + props(byte(id) + byte(1))), v5, client);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// SUBSCRIBE and UNSUBSCRIBE

TEST_CASE("SUBSCRIBE and UNSUBSCRIBE without a topic filter", "[codec][protocol-error][MQTT-3.8.3-2][MQTT-3.8.3-3]"
          "[MQTT-3.10.3-2]") {
  const std::error_code ec = protocol_errc::no_topic_filters;
  expect_error(pkt(0x82, u16(1)), v3_1_1, server, ec, protocol_error);
  expect_error(pkt(0x82, u16(1) + byte(0)), v5, server, ec, protocol_error);
  expect_error(pkt(0x82, u16(1) + props(byte(0x0B) + varint(3))), v5, server, ec, protocol_error);
  expect_error(pkt(0xA2, u16(1)), v3_1_1, server, ec, protocol_error);
  expect_error(pkt(0xA2, u16(1) + byte(0)), v5, server, ec, protocol_error);
}

TEST_CASE("3.1.1 SUBSCRIBE options: reserved bits 2-7 and QoS 3 are malformed", "[codec][malformed][MQTT-3-8.3-4]") {
  for (int bit = 2; bit < 8; ++bit) {
    expect_error(pkt(0x82, u16(1) + str("f") + byte(1 << bit)), v3_1_1, server,
                 codec_errc::invalid_subscription_options, malformed);
    // Also in a later entry.
    expect_error(pkt(0x82, u16(1) + str("a") + byte(1) + str("f") + byte((1 << bit) | 2)), v3_1_1, server,
                 codec_errc::invalid_subscription_options, malformed);
  }
  expect_error(pkt(0x82, u16(1) + str("f") + byte(3)), v3_1_1, server, codec_errc::invalid_qos, malformed);
  expect_error(pkt(0x82, u16(1) + str("f")), v3_1_1, server, codec_errc::truncated, malformed);  // no options byte
}

TEST_CASE("5.0 SUBSCRIBE options", "[codec][MQTT-3.8.3-5]") {
  SECTION("reserved bits 6 and 7 are malformed") {
    for (int o : {0x40, 0x80, 0xC0, 0x41})
      expect_error(pkt(0x82, u16(1) + byte(0) + str("f") + byte(o)), v5, server, codec_errc::invalid_subscription_options,
                   malformed);
  }
  SECTION("QoS 3 is a protocol error (3.8.3.1)") {
    expect_error(pkt(0x82, u16(1) + byte(0) + str("f") + byte(3)), v5, server, protocol_errc::invalid_subscription_qos,
                 protocol_error);
  }
  SECTION("Retain Handling 3 is a protocol error (3.8.3.1)") {
    expect_error(pkt(0x82, u16(1) + byte(0) + str("f") + byte(0x30)), v5, server,
                 protocol_errc::invalid_retain_handling, protocol_error);
  }
  SECTION("No Local, Retain As Published and Retain Handling 0-2 are fine") {
    for (int o : {0x04, 0x08, 0x10, 0x20, 0x2E})
      expect_ok(pkt(0x82, u16(1) + byte(0) + str("f") + byte(o)), v5, server);
  }
}

// ---------------------------------------------------------------------------------------------
// Reason codes and acknowledgements

TEST_CASE("5.0 reason codes are accepted exactly where chapter 3 defines them", "[codec][malformed][reason-codes]") {
  struct kind {
    packet_type type;
    role side;
    std::string (*make)(int rc);
  };
  const kind kinds[] = {
      {packet_type::connack, client, [](int rc) { return pkt(0x20, byte(0) + byte(rc) + byte(0)); }},
      {packet_type::puback, server, [](int rc) { return pkt(0x40, u16(1) + byte(rc)); }},
      {packet_type::pubrec, client, [](int rc) { return pkt(0x50, u16(1) + byte(rc)); }},
      {packet_type::pubrel, server, [](int rc) { return pkt(0x62, u16(1) + byte(rc) + byte(0)); }},
      {packet_type::pubcomp, client, [](int rc) { return pkt(0x70, u16(1) + byte(rc)); }},
      {packet_type::suback, client, [](int rc) { return pkt(0x90, u16(1) + byte(0) + byte(0) + byte(rc)); }},
      {packet_type::unsuback, client, [](int rc) { return pkt(0xB0, u16(1) + byte(0) + byte(rc)); }},
      {packet_type::disconnect, server, [](int rc) { return pkt(0xE0, byte(rc)); }},
      {packet_type::auth, client, [](int rc) { return pkt(0xF0, byte(rc) + byte(0)); }},
  };
  for (const kind& k : kinds) {
    const auto& defined = codec_test::spec_reason_codes(k.type);
    for (int rc = 0; rc < 256; ++rc) {
      INFO(mc::to_string(k.type) << " reason code " << rc);
      const bool ok = std::find(defined.begin(), defined.end(), rc) != defined.end();
      mc::packet p;
      const std::error_code ec = mc::decode_packet(k.make(rc), v5, k.side, p);
      if (ok)
        CHECK(describe(ec) == "success");
      else
        CHECK(ec == codec_errc::invalid_reason_code);
    }
  }
  // Examples through both decoders, with the mapping: PUBREL 0x80, PUBACK 0x92, AUTH 0x01.
  expect_error(pkt(0x62, u16(1) + byte(0x80)), v5, server, codec_errc::invalid_reason_code, malformed);
  expect_error(pkt(0x40, u16(1) + byte(0x92)), v5, server, codec_errc::invalid_reason_code, malformed);
  expect_error(pkt(0xF0, byte(0x01)), v5, server, codec_errc::invalid_reason_code, malformed);
  expect_error(pkt(0x20, byte(0) + byte(0x8B) + byte(0)), v5, client, codec_errc::invalid_reason_code, malformed);
}

TEST_CASE("3.1.1 CONNACK and SUBACK return codes", "[codec][malformed][MQTT-3.9.3-2]") {
  for (int rc = 0; rc < 256; ++rc) {
    INFO("return code " << rc);
    mc::packet p;
    const std::error_code connack = mc::decode_packet(pkt(0x20, byte(0) + byte(rc)), v3_1_1, client, p);
    CHECK((rc <= 5 ? !connack : connack == codec_errc::invalid_reason_code));  // 3.2.2.3: 6-255 reserved
    const std::error_code suback = mc::decode_packet(pkt(0x90, u16(1) + byte(rc)), v3_1_1, client, p);
    const bool ok = rc <= 2 || rc == 0x80;  // [MQTT-3.9.3-2]
    CHECK((ok ? !suback : suback == codec_errc::invalid_reason_code));
  }
}

TEST_CASE("CONNACK reserved acknowledge flags are malformed", "[codec][malformed][MQTT-3.2.2-1]") {
  for (int flags : {0x02, 0x80, 0xFE, 0xFF}) {
    expect_error(pkt(0x20, byte(flags) + byte(0)), v3_1_1, client, codec_errc::invalid_connack_flags, malformed);
    expect_error(pkt(0x20, byte(flags) + byte(0) + byte(0)), v5, client, codec_errc::invalid_connack_flags, malformed);
  }
}

TEST_CASE("SUBACK and 5.0 UNSUBACK need a code per filter, so at least one", "[codec][malformed]") {
  expect_error(pkt(0x90, u16(1)), v3_1_1, client, codec_errc::truncated, malformed);
  expect_error(pkt(0x90, u16(1) + byte(0)), v5, client, codec_errc::truncated, malformed);
  expect_error(pkt(0xB0, u16(1) + byte(0)), v5, client, codec_errc::truncated, malformed);
}

// ---------------------------------------------------------------------------------------------
// Direction

TEST_CASE("a packet sent in the wrong direction is a protocol error", "[codec][protocol-error]") {
  const std::error_code ec = protocol_errc::unexpected_packet;
  for (protocol_version v : {v3_1_1, v5}) {
    const std::string p = v == v5 ? byte(0) : "";
    // Server to client only: CONNACK, SUBACK, UNSUBACK, PINGRESP.
    expect_error(pkt(0x20, byte(0) + byte(0) + p), v, server, ec, protocol_error);
    expect_error(pkt(0x90, u16(1) + p + byte(0)), v, server, ec, protocol_error);
    expect_error(pkt(0xB0, u16(1) + (v == v5 ? p + byte(0) : "")), v, server, ec, protocol_error);
    expect_error(wire({0xD0, 0x00}), v, server, ec, protocol_error);
    // Client to server only: CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ.
    expect_error(connect_for(v), v, client, ec, protocol_error);
    expect_error(pkt(0x82, u16(1) + p + str("f") + byte(0)), v, client, ec, protocol_error);
    expect_error(pkt(0xA2, u16(1) + p + str("f")), v, client, ec, protocol_error);
    expect_error(wire({0xC0, 0x00}), v, client, ec, protocol_error);
  }
  // 3.1.1 Table 2.1: DISCONNECT is Client to Server; 5.0 lets the Server send it (3.14).
  expect_error(wire({0xE0, 0x00}), v3_1_1, client, ec, protocol_error);
  expect_ok(wire({0xE0, 0x00}), v3_1_1, server);
  expect_ok(wire({0xE0, 0x00}), v5, client);
  // The decoder refuses at the first byte.
  mc::decoder d({client, mc::max_packet_size, v5});
  const std::string ping = wire({0xC0, 0x00});
  const auto res = d.feed(bytes_of(ping), ping.size(), [](mc::packet&) {});
  CHECK(res.ec == protocol_errc::unexpected_packet);
  CHECK(res.consumed == 1);
}

// ---------------------------------------------------------------------------------------------
// The wire mapping as a whole

TEST_CASE("every codec error maps to Malformed Packet, but for Packet too large", "[codec][malformed]") {
  for (int e = static_cast<int>(codec_errc::reserved_packet_type); e <= static_cast<int>(codec_errc::field_too_long);
       ++e) {
    const std::error_code ec = static_cast<codec_errc>(e);
    INFO(ec.message());
    CHECK(mqttbroker::to_reason_code(ec) ==
          (e == static_cast<int>(codec_errc::packet_too_large) ? reason_code::packet_too_large : malformed));
    CHECK_FALSE(mqttbroker::to_connack_return_code(ec).has_value());  // 3.1.1 closes without CONNACK
  }
}
