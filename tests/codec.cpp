// The codec against the MQTT 3.1.1 and 5.0 specifications: random round trips of every packet
// type, byte-exact vectors worked out from the specifications, encoder specifics and the
// incremental decoder. Malformed and forbidden input is in codec_malformed.cpp.
#include <mqttbroker/codec.hpp>

#include "catch.hpp"
#include "codec_support.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <initializer_list>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

namespace {

namespace mc = mqttbroker::codec;
using codec_test::diff;
using codec_test::hex;
using codec_test::wire;
using mc::packet_type;
using mc::property_id;
using mc::protocol_version;
using mc::qos;
using mc::role;
using mqttbroker::codec_errc;
using mqttbroker::protocol_errc;
using mqttbroker::reason_code;

std::string describe(const std::error_code& ec) {
  if (!ec) return "success";
  return std::string(ec.category().name()) + ": " + ec.message();
}

std::string_view view_of(const std::vector<std::uint8_t>& v, std::size_t n) {
  return {reinterpret_cast<const char*>(v.data()), n};
}

const std::uint8_t* bytes_of(const std::string& s) { return reinterpret_cast<const std::uint8_t*>(s.data()); }

template <class Packet>
std::string encoded(const Packet& p, protocol_version v) {
  std::string out;
  const std::error_code ec = mc::encode(p, v, out);
  INFO("encode: " << describe(ec));
  REQUIRE_FALSE(ec);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Randomness: a fixed default seed, overridable with MQTTBROKER_SEED, printed once. The ranges
// are computed here, not with <random> distributions, so a seed means the same on every library.

std::uint64_t test_seed() {
  static const std::uint64_t seed = [] {
    std::uint64_t s = 20240611;
    if (const char* e = std::getenv("MQTTBROKER_SEED")) s = std::strtoull(e, nullptr, 0);
    std::cout << "codec tests: MQTTBROKER_SEED=" << s << '\n';
    return s;
  }();
  return seed;
}

class rng {
 public:
  explicit rng(std::uint64_t seed) : gen_(seed) {}
  /// 0 .. n-1 (0 when n is 0).
  std::uint32_t below(std::uint64_t n) { return n == 0 ? 0 : static_cast<std::uint32_t>(gen_() % n); }
  std::uint32_t between(std::uint32_t lo, std::uint32_t hi) {
    return lo + below(std::uint64_t{hi} - lo + 1);
  }
  bool chance(unsigned percent) { return below(100) < percent; }

 private:
  std::mt19937_64 gen_;
};

/// Owns the strings and properties a random packet's views point into.
struct arena {
  std::deque<std::string> strings;
  std::deque<mc::properties_builder> builders;

  std::string_view keep(std::string s) {
    strings.push_back(std::move(s));
    return strings.back();
  }
  mc::properties_builder& builder() { return builders.emplace_back(); }
};

void push_byte(std::string& s, std::uint32_t b) { s += static_cast<char>(static_cast<unsigned char>(b & 0xFFu)); }

void append_utf8(std::string& s, std::uint32_t cp) {
  if (cp < 0x80) {
    push_byte(s, cp);
  } else if (cp < 0x800) {
    push_byte(s, 0xC0u | (cp >> 6));
    push_byte(s, 0x80u | (cp & 0x3Fu));
  } else if (cp < 0x10000) {
    push_byte(s, 0xE0u | (cp >> 12));
    push_byte(s, 0x80u | ((cp >> 6) & 0x3Fu));
    push_byte(s, 0x80u | (cp & 0x3Fu));
  } else {
    push_byte(s, 0xF0u | (cp >> 18));
    push_byte(s, 0x80u | ((cp >> 12) & 0x3Fu));
    push_byte(s, 0x80u | ((cp >> 6) & 0x3Fu));
    push_byte(s, 0x80u | (cp & 0x3Fu));
  }
}

/// Any Unicode scalar value but U+0000: ASCII mostly, and 2-, 3- and 4-byte forms.
std::uint32_t random_code_point(rng& r) {
  switch (r.below(10)) {
    case 0: return r.between(0x80, 0x7FF);
    case 1: {
      const std::uint32_t cp = r.between(0x800, 0xF7FF);  // skip the surrogates D800..DFFF
      return cp >= 0xD800 ? cp + 0x800 : cp;
    }
    case 2: return r.between(0x10000, 0x10FFFF);
    default: return r.between(1, 0x7F);
  }
}

/// A UTF-8 string of at most 65,535 bytes, usually short, sometimes empty, sometimes large.
std::string random_utf8(rng& r, bool may_be_large = true) {
  const std::uint32_t k = r.below(100);
  const std::uint32_t n = k < 10 ? 0 : k < 85 ? r.below(20) : (k < 98 || !may_be_large) ? r.below(300) : r.below(16'000);
  std::string s;
  for (std::uint32_t i = 0; i < n; ++i) append_utf8(s, random_code_point(r));
  return s;
}

std::string random_binary(rng& r, std::uint32_t max) {
  std::string s;
  const std::uint32_t n = r.below(std::uint64_t{max} + 1);
  s.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) push_byte(s, r.below(256));
  return s;
}

/// Empty, small, medium and now and then larger than 64 KiB (a 3-byte Remaining Length).
std::string random_payload(rng& r) {
  const std::uint32_t k = r.below(100);
  const std::uint32_t n = k < 10 ? 0 : k < 85 ? r.below(200) : k < 98 ? r.between(100, 20'000) : r.between(65'536, 200'000);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(static_cast<unsigned char>(r.below(256)));
  return s;
}

template <class T>
void shuffle(std::vector<T>& v, rng& r) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[r.below(i)]);
}

void add_random_property(rng& r, mc::properties_builder& b, property_id id) {
  switch (mc::info(id).type) {
    case mc::property_type::byte: b.add(id, r.below(2)); break;  // every Byte property is 0 or 1
    case mc::property_type::two_byte_integer: {
      const bool nonzero = id == property_id::receive_maximum || id == property_id::topic_alias;
      b.add(id, r.between(nonzero ? 1 : 0, 0xFFFF));
      break;
    }
    case mc::property_type::four_byte_integer:
      b.add(id, r.between(id == property_id::maximum_packet_size ? 1 : 0, 0xFFFF'FFFFu));
      break;
    case mc::property_type::variable_byte_integer:  // Subscription Identifier 1..268,435,455
      b.add(id, r.chance(50) ? r.between(1, 127) : r.between(1, mc::max_remaining_length));
      break;
    case mc::property_type::utf8_string: b.add(id, random_utf8(r, false)); break;
    case mc::property_type::binary_data: b.add(id, random_binary(r, 40)); break;
    case mc::property_type::utf8_string_pair: b.add_user_property(random_utf8(r, false), random_utf8(r, false)); break;
  }
}

/// Random properties valid in `where`: each allowed property or none, repeatable ones repeated,
/// in random order, with values the specification allows.
mc::properties_view random_properties(rng& r, arena& a, mc::property_places where) {
  std::vector<property_id> ids;
  bool method = false, data = false;
  for (unsigned id = 1; id < 0x40; ++id) {
    const auto pid = static_cast<property_id>(id);
    if ((mc::info(pid).places & where) == 0 || !r.chance(25)) continue;
    ids.push_back(pid);
    method = method || pid == property_id::authentication_method;
    data = data || pid == property_id::authentication_data;
    const bool repeatable = pid == property_id::user_property ||
                            (pid == property_id::subscription_identifier && where == mc::place_of(packet_type::publish));
    if (repeatable)
      for (auto n = r.below(4); n > 0; --n) ids.push_back(pid);
  }
  // 5.0 §3.1.2.11.10: Authentication Data without Authentication Method is a Protocol Error.
  if (data && !method && where == mc::place_of(packet_type::connect)) ids.push_back(property_id::authentication_method);
  shuffle(ids, r);
  auto& b = a.builder();
  for (property_id id : ids) add_random_property(r, b, id);
  return b.view();
}

std::uint16_t random_packet_id(rng& r) { return static_cast<std::uint16_t>(r.between(1, 0xFFFF)); }

reason_code random_reason(rng& r, packet_type t) {
  const auto& codes = codec_test::spec_reason_codes(t);
  return r.chance(30) ? reason_code::success : static_cast<reason_code>(codes[r.below(codes.size())]);
}

std::vector<reason_code> random_reasons(rng& r, packet_type t, protocol_version v, std::size_t n) {
  static const std::vector<std::uint8_t> suback_3_1_1 = {0x00, 0x01, 0x02, 0x80};  // [MQTT-3.9.3-2]
  const auto& codes = v == protocol_version::v5 ? codec_test::spec_reason_codes(t) : suback_3_1_1;
  std::vector<reason_code> out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(static_cast<reason_code>(codes[r.below(codes.size())]));
  return out;
}

template <packet_type T>
mc::packet random_ack(rng& r, arena& a) {
  mc::basic_ack<T> p;
  p.packet_id = random_packet_id(r);
  p.reason = random_reason(r, T);
  if (r.chance(40)) p.properties = random_properties(r, a, mc::place_of(T));
  return p;
}

/// A random packet of type `t` to encode in version `v`. 5.0-only fields (properties, reason
/// codes, subscription options) are filled for 3.1.1 too: encoding must leave them out.
mc::packet random_packet(packet_type t, protocol_version v, rng& r, arena& a) {
  const bool v5 = v == protocol_version::v5;
  const auto props = [&](mc::property_places where) {
    return r.chance(70) ? random_properties(r, a, where) : mc::properties_view{};
  };
  switch (t) {
    case packet_type::connect: {
      mc::connect p;
      p.version = v;
      p.clean_start = r.chance(50);
      p.keep_alive = static_cast<std::uint16_t>(r.below(0x10000));
      p.properties = props(mc::place_of(packet_type::connect));
      p.client_id = a.keep(random_utf8(r));
      if (r.chance(50)) {
        mc::will_message w;
        w.topic = a.keep(random_utf8(r));
        w.payload = a.keep(random_binary(r, r.chance(5) ? 0xFFFF : 100));
        w.qos_level = static_cast<qos>(r.below(3));
        w.retain = r.chance(50);
        w.properties = props(mc::will_properties);
        p.will = w;
      }
      if (r.chance(50)) p.username = a.keep(random_utf8(r));
      // [MQTT-3.1.2-22] 3.1.1 allows a password only with a user name; 5.0 allows it alone.
      if ((v5 || p.username) && r.chance(50)) p.password = a.keep(random_binary(r, 64));
      return p;
    }
    case packet_type::connack: {
      mc::connack p;
      p.session_present = r.chance(50);
      p.code = v5 ? static_cast<std::uint8_t>(random_reason(r, t)) : static_cast<std::uint8_t>(r.below(6));
      p.properties = props(mc::place_of(t));
      return p;
    }
    case packet_type::publish: {
      mc::publish p;
      p.topic = a.keep(random_utf8(r));
      p.qos_level = static_cast<qos>(r.below(3));
      p.retain = r.chance(50);
      if (p.qos_level != qos::at_most_once) {
        p.packet_id = random_packet_id(r);
        p.dup = r.chance(30);  // [MQTT-3.3.1-2] never with QoS 0
      }
      p.properties = props(mc::place_of(t));
      p.payload = a.keep(random_payload(r));
      return p;
    }
    case packet_type::puback: return random_ack<packet_type::puback>(r, a);
    case packet_type::pubrec: return random_ack<packet_type::pubrec>(r, a);
    case packet_type::pubrel: return random_ack<packet_type::pubrel>(r, a);
    case packet_type::pubcomp: return random_ack<packet_type::pubcomp>(r, a);
    case packet_type::subscribe: {
      mc::subscribe p;
      p.packet_id = random_packet_id(r);
      p.properties = props(mc::place_of(t));
      for (auto n = 1 + r.below(8); n > 0; --n) {
        mc::subscribe_entry e;
        e.filter = a.keep(random_utf8(r, false));
        e.options.max_qos = static_cast<qos>(r.below(3));
        e.options.no_local = r.chance(50);
        e.options.retain_as_published = r.chance(50);
        e.options.retain_handling = static_cast<mc::retain_handling_option>(r.below(3));
        p.entries.push_back(e);
      }
      return p;
    }
    case packet_type::suback: {
      mc::suback p;
      p.packet_id = random_packet_id(r);
      p.properties = props(mc::place_of(t));
      p.reasons = random_reasons(r, t, v, 1 + r.below(8));
      return p;
    }
    case packet_type::unsubscribe: {
      mc::unsubscribe p;
      p.packet_id = random_packet_id(r);
      p.properties = props(mc::place_of(t));
      for (auto n = 1 + r.below(8); n > 0; --n) p.filters.push_back(a.keep(random_utf8(r, false)));
      return p;
    }
    case packet_type::unsuback: {
      mc::unsuback p;
      p.packet_id = random_packet_id(r);
      p.properties = props(mc::place_of(t));
      p.reasons = random_reasons(r, t, protocol_version::v5, 1 + r.below(8));
      return p;
    }
    case packet_type::pingreq: return mc::pingreq{};
    case packet_type::pingresp: return mc::pingresp{};
    case packet_type::disconnect: {
      mc::disconnect p;
      p.reason = random_reason(r, t);
      if (r.chance(40)) p.properties = random_properties(r, a, mc::place_of(t));
      return p;
    }
    case packet_type::auth: {
      mc::auth p;
      p.reason = random_reason(r, t);
      if (r.chance(60)) p.properties = random_properties(r, a, mc::place_of(t));
      return p;
    }
  }
  return mc::pingreq{};
}

/// The side that receives packets of type `t` (either side, for those both send).
role receiver(packet_type t, protocol_version v, rng& r) {
  switch (t) {
    case packet_type::connect:
    case packet_type::subscribe:
    case packet_type::unsubscribe:
    case packet_type::pingreq: return role::server;
    case packet_type::connack:
    case packet_type::suback:
    case packet_type::unsuback:
    case packet_type::pingresp: return role::client;
    case packet_type::disconnect:  // 3.1.1 Table 2.1: DISCONNECT is Client to Server only
      if (v != protocol_version::v5) return role::server;
      return r.chance(50) ? role::server : role::client;
    default: return r.chance(50) ? role::server : role::client;
  }
}

/// A small CONNECT in version `v`, which a server-side decoder must see first.
std::string connect_bytes(protocol_version v) {
  mc::connect c;
  c.version = v;
  c.client_id = "prefix";
  return encoded(c, v);
}

/// Feeds `copies` times `bytes` (behind a CONNECT for a server) to a decoder, in random fragments
/// or byte by byte, and compares every packet with `want`. Returns the first problem, or "".
std::string feed_incrementally(const std::string& bytes, const mc::packet& want, protocol_version v, role side,
                               rng& r, bool byte_by_byte, std::size_t& decoded) {
  mc::decoder_options o;
  o.side = side;
  std::string stream;
  std::size_t skip = 0;
  const bool is_connect = std::holds_alternative<mc::connect>(want);
  if (side == role::client) {
    o.version = v;
  } else if (!is_connect) {
    stream = connect_bytes(v);
    skip = 1;
  }
  const std::size_t copies = (side == role::server && is_connect) ? 1 : 1 + r.below(3);
  for (std::size_t i = 0; i < copies; ++i) stream += bytes;

  mc::decoder d(o);
  std::size_t seen = 0;
  std::string problem;
  const auto on_packet = [&](mc::packet& q) {
    if (seen++ < skip) return;
    if (problem.empty()) problem = diff(want, q);
  };
  const char* how = byte_by_byte ? "byte by byte: " : "fragments: ";
  std::size_t pos = 0;
  while (pos < stream.size()) {
    std::size_t n = byte_by_byte ? 1 : r.chance(50) ? 1 + r.below(8) : 1 + r.below(stream.size());
    n = std::min(n, stream.size() - pos);
    const auto res = d.feed(bytes_of(stream) + pos, n, on_packet);
    if (res.ec) return how + describe(res.ec) + " at offset " + std::to_string(pos);
    if (res.consumed != n) return how + std::string("consumed ") + std::to_string(res.consumed);
    pos += n;
  }
  if (!problem.empty()) return how + problem;
  if (seen != skip + copies) return how + std::to_string(seen - skip) + " packets for " + std::to_string(copies);
  if (d.mid_packet() || d.buffered() != 0) return how + std::string("decoder left mid-packet");
  if (d.version() != v) return how + std::string("decoder version not learnt");
  decoded += copies;
  return {};
}

/// Encodes `p` for `v` every way there is, decodes it every way there is and compares. Returns
/// the first problem, or "".
std::string round_trip_once(const mc::packet& p, protocol_version v, role side, rng& r, std::size_t& decoded) {
  const mc::packet want = codec_test::expected_after_encoding(p, v);
  std::string bytes;
  if (auto ec = mc::encode(p, v, bytes)) return "encode: " + describe(ec);
  std::size_t size = 0;
  if (auto ec = mc::encoded_size(p, v, size)) return "encoded_size: " + describe(ec);
  if (size != bytes.size()) return "encoded_size " + std::to_string(size) + " for " + std::to_string(bytes.size());
  {
    std::vector<std::uint8_t> buf(size + 3);
    std::size_t written = 0;
    if (auto ec = mc::encode(p, v, buf.data(), buf.size(), written)) return "encode(pointer): " + describe(ec);
    if (view_of(buf, written) != bytes) return "encode(pointer) wrote other bytes";
  }
  mc::packet got;
  if (auto ec = mc::decode_packet(bytes, v, side, got)) return "decode_packet: " + describe(ec) + " [" + hex(bytes) + "]";
  if (auto d = diff(want, got); !d.empty()) return "decode_packet: " + d + " [" + hex(bytes) + "]";
  if (auto d = codec_test::packet_properties_rebuild_diff(got); !d.empty()) return d;
  ++decoded;
  for (bool byte_by_byte : {false, true}) {
    if (auto d = feed_incrementally(bytes, want, v, side, r, byte_by_byte, decoded); !d.empty())
      return d + " [" + hex(bytes) + "]";
  }
  return {};
}

void run_round_trips(packet_type t, std::initializer_list<protocol_version> versions, int iterations = 300) {
  const std::uint64_t seed = test_seed();
  for (protocol_version v : versions) {
    rng r(seed ^ (std::uint64_t{static_cast<std::uint8_t>(t)} << 32) ^ static_cast<std::uint8_t>(v));
    int failures = 0;
    std::size_t decoded = 0;
    for (int i = 0; i < iterations && failures < 3; ++i) {
      arena a;
      const mc::packet p = random_packet(t, v, r, a);
      const role side = receiver(t, v, r);
      const std::string problem = round_trip_once(p, v, side, r, decoded);
      if (!problem.empty()) {
        ++failures;
        FAIL_CHECK(mc::to_string(t) << " version " << static_cast<int>(v) << " iteration " << i
                                    << " (MQTTBROKER_SEED=" << seed << "): " << problem);
      }
    }
    CHECK(failures == 0);
    CHECK(decoded >= static_cast<std::size_t>(iterations) * 3);  // decode_packet, fragments, byte by byte
  }
}

constexpr auto v3_1 = protocol_version::v3_1;
constexpr auto v3_1_1 = protocol_version::v3_1_1;
constexpr auto v5 = protocol_version::v5;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Round trips

TEST_CASE("CONNECT round trips in 3.1, 3.1.1 and 5.0", "[codec][round-trip][MQTT-3.1.2-1][MQTT-3.1.2-2]") {
  run_round_trips(packet_type::connect, {v3_1, v3_1_1, v5});
}
TEST_CASE("CONNACK round trips", "[codec][round-trip]") { run_round_trips(packet_type::connack, {v3_1_1, v5}); }
TEST_CASE("PUBLISH round trips", "[codec][round-trip]") { run_round_trips(packet_type::publish, {v3_1_1, v5}); }
TEST_CASE("PUBACK round trips", "[codec][round-trip]") { run_round_trips(packet_type::puback, {v3_1_1, v5}); }
TEST_CASE("PUBREC round trips", "[codec][round-trip]") { run_round_trips(packet_type::pubrec, {v3_1_1, v5}); }
TEST_CASE("PUBREL round trips", "[codec][round-trip][MQTT-3.6.1-1]") {
  run_round_trips(packet_type::pubrel, {v3_1_1, v5});
}
TEST_CASE("PUBCOMP round trips", "[codec][round-trip]") { run_round_trips(packet_type::pubcomp, {v3_1_1, v5}); }
TEST_CASE("SUBSCRIBE round trips", "[codec][round-trip][MQTT-3.8.1-1]") {
  run_round_trips(packet_type::subscribe, {v3_1_1, v5});
}
TEST_CASE("SUBACK round trips", "[codec][round-trip]") { run_round_trips(packet_type::suback, {v3_1_1, v5}); }
TEST_CASE("UNSUBSCRIBE round trips", "[codec][round-trip][MQTT-3.10.1-1]") {
  run_round_trips(packet_type::unsubscribe, {v3_1_1, v5});
}
TEST_CASE("UNSUBACK round trips", "[codec][round-trip]") { run_round_trips(packet_type::unsuback, {v3_1_1, v5}); }
TEST_CASE("PINGREQ round trips", "[codec][round-trip]") { run_round_trips(packet_type::pingreq, {v3_1_1, v5}, 50); }
TEST_CASE("PINGRESP round trips", "[codec][round-trip]") { run_round_trips(packet_type::pingresp, {v3_1_1, v5}, 50); }
TEST_CASE("DISCONNECT round trips", "[codec][round-trip]") {
  run_round_trips(packet_type::disconnect, {v3_1_1, v5});
}
TEST_CASE("AUTH round trips in 5.0", "[codec][round-trip]") { run_round_trips(packet_type::auth, {v5}); }

// ---------------------------------------------------------------------------------------------
// Byte-exact vectors, worked out by hand from the specifications' figures. Each is decoded from
// the bytes (whole, and byte by byte through the incremental decoder) and, when it is the form
// the encoder writes, encoded back to the same bytes.

namespace {

/// Decodes `bytes` both ways and compares with `want`.
void check_decodes(const std::string& bytes, protocol_version v, role side, const mc::packet& want) {
  INFO("bytes: " << hex(bytes));
  mc::packet got;
  const std::error_code ec = mc::decode_packet(bytes, v, side, got);
  REQUIRE(describe(ec) == "success");
  CHECK(diff(want, got) == "");

  mc::decoder_options o;
  o.side = side;
  std::string stream;
  if (side == role::client)
    o.version = v;
  else if (!std::holds_alternative<mc::connect>(want))
    stream = connect_bytes(v);
  const std::size_t skip = stream.empty() ? 0 : 1;
  stream += bytes;
  mc::decoder d(o);
  std::size_t seen = 0;
  std::string problem = "no packet";
  for (std::size_t i = 0; i < stream.size(); ++i) {
    const auto res = d.feed(bytes_of(stream) + i, 1, [&](mc::packet& q) {
      if (seen++ == skip) problem = diff(want, q);
    });
    REQUIRE(describe(res.ec) == "success");
  }
  CHECK(seen == skip + 1);
  CHECK(problem == "");
}

/// check_decodes(), and encoding `p` gives exactly `bytes`.
void check_vector(const mc::packet& p, protocol_version v, role side, const std::string& bytes) {
  std::string out;
  const std::error_code ec = mc::encode(p, v, out);
  REQUIRE(describe(ec) == "success");
  CHECK(hex(out) == hex(bytes));
  check_decodes(bytes, v, side, p);
}

}  // namespace

TEST_CASE("CONNECT 3.1.1 vectors", "[codec][vector][MQTT-3.1.2-1][MQTT-3.1.2-2]") {
  SECTION("minimal: clean session, keep alive 60, client id \"abc\"") {
    mc::connect c;
    c.version = v3_1_1;
    c.clean_start = true;
    c.keep_alive = 60;
    c.client_id = "abc";
    check_vector(c, v3_1_1, role::server,
                 wire({0x10, 0x0F,                     // CONNECT, Remaining Length 15
                       0x00, 0x04, 'M', 'Q', 'T', 'T',  // Protocol Name (3.1.2.1)
                       0x04,                           // Protocol Level 4
                       0x02,                           // Connect Flags: Clean Session
                       0x00, 0x3C,                     // Keep Alive 60
                       0x00, 0x03, 'a', 'b', 'c'}));   // Client Identifier
  }
  SECTION("every field: will QoS 1 retained, user name, binary password") {
    mc::connect c;
    c.version = v3_1_1;
    c.clean_start = true;
    c.keep_alive = 10;
    c.client_id = "c1";
    mc::will_message w;
    w.topic = "w/t";
    w.payload = "bye";
    w.qos_level = qos::at_least_once;
    w.retain = true;
    c.will = w;
    c.username = "u";
    c.password = std::string_view("\x00\xFF", 2);
    check_vector(c, v3_1_1, role::server,
                 wire({0x10, 0x1F,                     // CONNECT, Remaining Length 31
                       0x00, 0x04, 'M', 'Q', 'T', 'T',  // Protocol Name
                       0x04,                           // Protocol Level 4
                       0xEE,                           // User Name 80 | Password 40 | Will Retain 20 |
                                                       // Will QoS 1 08 | Will Flag 04 | Clean Session 02
                       0x00, 0x0A,                     // Keep Alive 10
                       0x00, 0x02, 'c', '1',           // Client Identifier
                       0x00, 0x03, 'w', '/', 't',      // Will Topic
                       0x00, 0x03, 'b', 'y', 'e',      // Will Message
                       0x00, 0x01, 'u',                // User Name
                       0x00, 0x02, 0x00, 0xFF}));      // Password (binary)
  }
}

TEST_CASE("CONNECT 3.1 \"MQIsdp\" level 3 vector", "[codec][vector][MQTT-3.1.2-1]") {
  mc::connect c;
  c.version = v3_1;
  c.clean_start = false;
  c.keep_alive = 60;
  c.client_id = "abc";
  check_vector(c, v3_1_1, role::server,
               wire({0x10, 0x11,                                // CONNECT, Remaining Length 17
                     0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p',  // MQTT 3.1 Protocol Name
                     0x03,                                      // Protocol Version 3
                     0x00,                                      // no flags
                     0x00, 0x3C,                                // Keep Alive 60
                     0x00, 0x03, 'a', 'b', 'c'}));              // Client Identifier
  // A server learns 3.1 from it, and then handles the connection as 3.1.1.
  mc::decoder d;
  const std::string bytes = encoded(c, v3_1);
  CHECK_FALSE(d.feed(bytes_of(bytes), bytes.size(), [](mc::packet&) {}).ec);
  CHECK(d.version() == v3_1);
}

TEST_CASE("CONNECT 5.0 vectors", "[codec][vector][MQTT-3.1.2-1]") {
  SECTION("Session Expiry Interval property") {
    mc::properties_builder b;
    b.add(property_id::session_expiry_interval, 120);
    mc::connect c;
    c.version = v5;
    c.keep_alive = 60;
    c.properties = b.view();
    c.client_id = "abc";
    check_vector(c, v5, role::server,
                 wire({0x10, 0x15,                     // CONNECT, Remaining Length 21
                       0x00, 0x04, 'M', 'Q', 'T', 'T',  // Protocol Name
                       0x05,                           // Protocol Version 5
                       0x02,                           // Clean Start
                       0x00, 0x3C,                     // Keep Alive 60
                       0x05,                           // Property Length 5
                       0x11, 0x00, 0x00, 0x00, 0x78,   // Session Expiry Interval 120
                       0x00, 0x03, 'a', 'b', 'c'}));   // Client Identifier
  }
  SECTION("will properties, empty client id, user name and password") {
    mc::properties_builder props;
    props.add(property_id::receive_maximum, 10).add_user_property("k", "v");
    mc::properties_builder will_props;
    will_props.add(property_id::will_delay_interval, 5).add(property_id::payload_format_indicator, 1);
    mc::connect c;
    c.version = v5;
    c.clean_start = false;
    c.keep_alive = 0;
    c.properties = props.view();
    c.client_id = "";
    mc::will_message w;
    w.topic = "t";
    w.payload = "p";
    w.qos_level = qos::exactly_once;
    w.properties = will_props.view();
    c.will = w;
    c.username = "u";
    c.password = "pw";
    check_vector(c, v5, role::server,
                 wire({0x10, 0x2C,                                // CONNECT, Remaining Length 44
                       0x00, 0x04, 'M', 'Q', 'T', 'T',             // Protocol Name
                       0x05,                                      // Protocol Version 5
                       0xD4,                                      // User Name 80 | Password 40 |
                                                                  // Will QoS 2 10 | Will Flag 04
                       0x00, 0x00,                                // Keep Alive 0
                       0x0A,                                      // Property Length 10
                       0x21, 0x00, 0x0A,                          // Receive Maximum 10
                       0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v',    // User Property k=v
                       0x00, 0x00,                                // Client Identifier ""
                       0x07,                                      // Will Property Length 7
                       0x18, 0x00, 0x00, 0x00, 0x05,              // Will Delay Interval 5
                       0x01, 0x01,                                // Payload Format Indicator 1
                       0x00, 0x01, 't',                           // Will Topic
                       0x00, 0x01, 'p',                           // Will Payload
                       0x00, 0x01, 'u',                           // User Name
                       0x00, 0x02, 'p', 'w'}));                   // Password
  }
  SECTION("5.0 allows a password without a user name (3.1.2.9)") {
    mc::connect c;
    c.version = v5;
    c.client_id = "a";
    c.password = "x";
    check_vector(c, v5, role::server,
                 wire({0x10, 0x11, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05,  // Remaining Length 17
                       0x42,                        // Password 40 | Clean Start 02
                       0x00, 0x00, 0x00,            // Keep Alive 0, Property Length 0
                       0x00, 0x01, 'a',             // Client Identifier
                       0x00, 0x01, 'x'}));          // Password
  }
}

TEST_CASE("CONNACK vectors", "[codec][vector][MQTT-3.2.2-1]") {
  SECTION("3.1.1 session present, accepted") {
    mc::connack c;
    c.session_present = true;
    check_vector(c, v3_1_1, role::client, wire({0x20, 0x02, 0x01, 0x00}));
  }
  SECTION("3.1.1 return code 5, not authorized") {
    mc::connack c;
    c.code = static_cast<std::uint8_t>(mqttbroker::connack_return_code::not_authorized);
    check_vector(c, v3_1_1, role::client, wire({0x20, 0x02, 0x00, 0x05}));
  }
  SECTION("5.0 success without properties: the Property Length is still there") {
    mc::connack c;
    check_vector(c, v5, role::client, wire({0x20, 0x03, 0x00, 0x00, 0x00}));
  }
  SECTION("5.0 with Topic Alias Maximum and Assigned Client Identifier") {
    mc::properties_builder b;
    b.add(property_id::topic_alias_maximum, 5).add(property_id::assigned_client_identifier, "id");
    mc::connack c;
    c.session_present = true;
    c.properties = b.view();
    check_vector(c, v5, role::client,
                 wire({0x20, 0x0B,                     // CONNACK, Remaining Length 11
                       0x01,                           // Session Present
                       0x00,                           // Reason Code Success
                       0x08,                           // Property Length 8
                       0x22, 0x00, 0x05,               // Topic Alias Maximum 5
                       0x12, 0x00, 0x02, 'i', 'd'}));  // Assigned Client Identifier "id"
  }
  SECTION("5.0 reason 0x84 Unsupported Protocol Version") {
    mc::connack c;
    c.code = static_cast<std::uint8_t>(reason_code::unsupported_protocol_version);
    check_vector(c, v5, role::client, wire({0x20, 0x03, 0x00, 0x84, 0x00}));
  }
}

TEST_CASE("PUBLISH vectors", "[codec][vector][MQTT-3.3.1-2][MQTT-3.3.2-2]") {
  SECTION("3.1.1 QoS 0: no packet identifier") {
    mc::publish p;
    p.topic = "a/b";
    p.payload = "hi";
    check_vector(p, v3_1_1, role::server, wire({0x30, 0x07, 0x00, 0x03, 'a', '/', 'b', 'h', 'i'}));
  }
  SECTION("3.1.1 QoS 1, DUP and RETAIN") {
    mc::publish p;
    p.topic = "a/b";
    p.payload = "hi";
    p.qos_level = qos::at_least_once;
    p.dup = true;
    p.retain = true;
    p.packet_id = 10;
    check_vector(p, v3_1_1, role::client,
                 wire({0x3B,                         // PUBLISH | DUP 08 | QoS 1 02 | RETAIN 01
                       0x09,                         // Remaining Length 9
                       0x00, 0x03, 'a', '/', 'b',    // Topic Name
                       0x00, 0x0A,                   // Packet Identifier 10
                       'h', 'i'}));                  // Payload
  }
  SECTION("3.1.1 QoS 2 with an empty payload") {
    mc::publish p;
    p.topic = "a/b";
    p.qos_level = qos::exactly_once;
    p.packet_id = 0x1234;
    check_vector(p, v3_1_1, role::server, wire({0x34, 0x07, 0x00, 0x03, 'a', '/', 'b', 0x12, 0x34}));
  }
  SECTION("5.0 QoS 0 without properties: Property Length 0") {
    mc::publish p;
    p.topic = "a/b";
    p.payload = "hi";
    check_vector(p, v5, role::server, wire({0x30, 0x08, 0x00, 0x03, 'a', '/', 'b', 0x00, 'h', 'i'}));
  }
  SECTION("5.0 QoS 1 with Payload Format Indicator") {
    mc::properties_builder b;
    b.add(property_id::payload_format_indicator, 1);
    mc::publish p;
    p.topic = "a/b";
    p.payload = "hi";
    p.qos_level = qos::at_least_once;
    p.packet_id = 10;
    p.properties = b.view();
    check_vector(p, v5, role::server,
                 wire({0x32, 0x0C,                  // PUBLISH QoS 1, Remaining Length 12
                       0x00, 0x03, 'a', '/', 'b',   // Topic Name
                       0x00, 0x0A,                  // Packet Identifier 10
                       0x02, 0x01, 0x01,            // Property Length 2, Payload Format Indicator 1
                       'h', 'i'}));                 // Payload
  }
  SECTION("5.0 server to client: two Subscription Identifiers, a Topic Alias and an empty topic") {
    mc::properties_builder b;
    b.add(property_id::subscription_identifier, 1)
        .add(property_id::subscription_identifier, 128)
        .add(property_id::topic_alias, 3);
    mc::publish p;
    p.topic = "";
    p.payload = "x";
    p.properties = b.view();
    check_vector(p, v5, role::client,
                 wire({0x30, 0x0C,                  // PUBLISH QoS 0, Remaining Length 12
                       0x00, 0x00,                  // Topic Name "" (the alias stands for it)
                       0x08,                        // Property Length 8
                       0x0B, 0x01,                  // Subscription Identifier 1
                       0x0B, 0x80, 0x01,            // Subscription Identifier 128 (2-byte varint)
                       0x23, 0x00, 0x03,            // Topic Alias 3
                       'x'}));                      // Payload
  }
}

TEST_CASE("PUBACK, PUBREC, PUBREL and PUBCOMP vectors", "[codec][vector][MQTT-3.6.1-1]") {
  SECTION("3.1.1: the packet identifier only") {
    mc::puback a;
    a.packet_id = 10;
    check_vector(a, v3_1_1, role::client, wire({0x40, 0x02, 0x00, 0x0A}));
    mc::pubrec b;
    b.packet_id = 10;
    check_vector(b, v3_1_1, role::server, wire({0x50, 0x02, 0x00, 0x0A}));
    mc::pubrel c;  // fixed header flags 0010 [MQTT-3.6.1-1]
    c.packet_id = 10;
    check_vector(c, v3_1_1, role::client, wire({0x62, 0x02, 0x00, 0x0A}));
    mc::pubcomp d;
    d.packet_id = 0xFFFF;
    check_vector(d, v3_1_1, role::server, wire({0x70, 0x02, 0xFF, 0xFF}));
  }
  SECTION("5.0 short form: success and no properties leave Remaining Length 2 (3.4.2.1)") {
    mc::puback a;
    a.packet_id = 10;
    check_vector(a, v5, role::client, wire({0x40, 0x02, 0x00, 0x0A}));
    mc::pubcomp d;
    d.packet_id = 10;
    check_vector(d, v5, role::client, wire({0x70, 0x02, 0x00, 0x0A}));
  }
  SECTION("5.0 reason code without properties: Remaining Length 3, no Property Length (3.4.2.2)") {
    mc::puback a;
    a.packet_id = 10;
    a.reason = reason_code::no_matching_subscribers;
    check_vector(a, v5, role::client, wire({0x40, 0x03, 0x00, 0x0A, 0x10}));
    mc::pubrec b;
    b.packet_id = 10;
    b.reason = reason_code::quota_exceeded;
    check_vector(b, v5, role::server, wire({0x50, 0x03, 0x00, 0x0A, 0x97}));
    mc::pubrel c;
    c.packet_id = 10;
    c.reason = reason_code::packet_identifier_not_found;
    check_vector(c, v5, role::server, wire({0x62, 0x03, 0x00, 0x0A, 0x92}));
  }
  SECTION("5.0 reason code and a Reason String") {
    mc::properties_builder b;
    b.add(property_id::reason_string, "x");
    mc::puback a;
    a.packet_id = 10;
    a.reason = reason_code::unspecified_error;
    a.properties = b.view();
    check_vector(a, v5, role::server,
                 wire({0x40, 0x08,          // PUBACK, Remaining Length 8
                       0x00, 0x0A,          // Packet Identifier 10
                       0x80,                // Reason Code Unspecified error
                       0x04,                // Property Length 4
                       0x1F, 0x00, 0x01, 'x'}));  // Reason String "x"
  }
  SECTION("5.0 long forms of success decode like the short one") {
    mc::puback a;
    a.packet_id = 10;
    check_decodes(wire({0x40, 0x03, 0x00, 0x0A, 0x00}), v5, role::client, a);        // Reason Code only
    check_decodes(wire({0x40, 0x04, 0x00, 0x0A, 0x00, 0x00}), v5, role::client, a);  // and Property Length 0
  }
}

TEST_CASE("SUBSCRIBE vectors", "[codec][vector][MQTT-3.8.1-1]") {
  SECTION("3.1.1: the specification's example, two filters") {
    mc::subscribe s;
    s.packet_id = 10;
    s.entries.push_back({"a/b", {qos::at_least_once}});
    s.entries.push_back({"c/d", {qos::exactly_once}});
    check_vector(s, v3_1_1, role::server,
                 wire({0x82, 0x0E,                       // SUBSCRIBE (flags 0010), Remaining Length 14
                       0x00, 0x0A,                       // Packet Identifier 10
                       0x00, 0x03, 'a', '/', 'b', 0x01,  // "a/b" Requested QoS 1
                       0x00, 0x03, 'c', '/', 'd', 0x02}));  // "c/d" Requested QoS 2
  }
  SECTION("5.0: Subscription Identifier and every option bit") {
    mc::properties_builder b;
    b.add(property_id::subscription_identifier, 5);
    mc::subscribe s;
    s.packet_id = 10;
    s.properties = b.view();
    mc::subscribe_options o;
    o.max_qos = qos::at_least_once;
    o.no_local = true;
    o.retain_as_published = true;
    o.retain_handling = mc::retain_handling_option::dont_send;
    s.entries.push_back({"a/b", o});
    s.entries.push_back({"#", {}});
    check_vector(s, v5, role::server,
                 wire({0x82, 0x0F,                  // SUBSCRIBE, Remaining Length 15
                       0x00, 0x0A,                  // Packet Identifier 10
                       0x02, 0x0B, 0x05,            // Property Length 2, Subscription Identifier 5
                       0x00, 0x03, 'a', '/', 'b',   // "a/b"
                       0x2D,                        // Retain Handling 2 (20) | RAP 08 | NL 04 | QoS 1
                       0x00, 0x01, '#', 0x00}));    // "#" QoS 0
  }
}

TEST_CASE("SUBACK vectors", "[codec][vector][MQTT-3.9.3-2]") {
  SECTION("3.1.1: return codes 0, 1, 2 and 0x80 Failure") {
    mc::suback s;
    s.packet_id = 10;
    s.reasons = {reason_code::granted_qos_0, reason_code::granted_qos_1, reason_code::granted_qos_2,
                 reason_code::unspecified_error};
    check_vector(s, v3_1_1, role::client, wire({0x90, 0x06, 0x00, 0x0A, 0x00, 0x01, 0x02, 0x80}));
  }
  SECTION("5.0: Property Length, then a reason code per filter") {
    mc::suback s;
    s.packet_id = 10;
    s.reasons = {reason_code::granted_qos_1, reason_code::unspecified_error,
                 reason_code::subscription_identifiers_not_supported};
    check_vector(s, v5, role::client, wire({0x90, 0x06, 0x00, 0x0A, 0x00, 0x01, 0x80, 0xA1}));
  }
}

TEST_CASE("UNSUBSCRIBE vectors", "[codec][vector][MQTT-3.10.1-1]") {
  SECTION("3.1.1: two filters") {
    mc::unsubscribe u;
    u.packet_id = 10;
    u.filters = {"a/b", "c/d"};
    check_vector(u, v3_1_1, role::server,
                 wire({0xA2, 0x0C,                   // UNSUBSCRIBE (flags 0010), Remaining Length 12
                       0x00, 0x0A,                   // Packet Identifier 10
                       0x00, 0x03, 'a', '/', 'b',    // "a/b"
                       0x00, 0x03, 'c', '/', 'd'}));  // "c/d"
  }
  SECTION("5.0: a User Property") {
    mc::properties_builder b;
    b.add_user_property("a", "b");
    mc::unsubscribe u;
    u.packet_id = 10;
    u.properties = b.view();
    u.filters = {"x"};
    check_vector(u, v5, role::server,
                 wire({0xA2, 0x0D, 0x00, 0x0A,
                       0x07, 0x26, 0x00, 0x01, 'a', 0x00, 0x01, 'b',  // Property Length 7, User Property
                       0x00, 0x01, 'x'}));
  }
}

TEST_CASE("UNSUBACK vectors", "[codec][vector]") {
  SECTION("3.1.1: the packet identifier only") {
    mc::unsuback u;
    u.packet_id = 10;
    check_vector(u, v3_1_1, role::client, wire({0xB0, 0x02, 0x00, 0x0A}));
  }
  SECTION("5.0: Property Length, then a reason code per filter") {
    mc::unsuback u;
    u.packet_id = 10;
    u.reasons = {reason_code::success, reason_code::no_subscription_existed};
    check_vector(u, v5, role::client, wire({0xB0, 0x05, 0x00, 0x0A, 0x00, 0x00, 0x11}));
  }
}

TEST_CASE("PINGREQ and PINGRESP vectors", "[codec][vector]") {
  for (protocol_version v : {v3_1_1, v5}) {
    check_vector(mc::pingreq{}, v, role::server, wire({0xC0, 0x00}));
    check_vector(mc::pingresp{}, v, role::client, wire({0xD0, 0x00}));
  }
}

TEST_CASE("DISCONNECT vectors", "[codec][vector]") {
  SECTION("3.1.1 and 5.0 normal disconnection: Remaining Length 0 (3.14.2.1)") {
    check_vector(mc::disconnect{}, v3_1_1, role::server, wire({0xE0, 0x00}));
    check_vector(mc::disconnect{}, v5, role::server, wire({0xE0, 0x00}));
    check_vector(mc::disconnect{}, v5, role::client, wire({0xE0, 0x00}));
  }
  SECTION("5.0 reason code alone: Remaining Length 1, no Property Length") {
    mc::disconnect d;
    d.reason = reason_code::disconnect_with_will_message;
    check_vector(d, v5, role::server, wire({0xE0, 0x01, 0x04}));
  }
  SECTION("5.0 reason code and Server Reference") {
    mc::properties_builder b;
    b.add(property_id::server_reference, "s");
    mc::disconnect d;
    d.reason = reason_code::server_shutting_down;
    d.properties = b.view();
    check_vector(d, v5, role::client, wire({0xE0, 0x06, 0x8B, 0x04, 0x1C, 0x00, 0x01, 's'}));
  }
  SECTION("5.0 explicit success with Property Length 0 decodes as normal disconnection") {
    check_decodes(wire({0xE0, 0x02, 0x00, 0x00}), v5, role::server, mc::disconnect{});
  }
}

TEST_CASE("AUTH vectors", "[codec][vector]") {
  SECTION("Remaining Length 0 means Success and no properties (3.15.2.1)") {
    check_vector(mc::auth{}, v5, role::server, wire({0xF0, 0x00}));
    check_vector(mc::auth{}, v5, role::client, wire({0xF0, 0x00}));
  }
  SECTION("Continue authentication with method and data") {
    mc::properties_builder b;
    b.add(property_id::authentication_method, "SCRAM").add(property_id::authentication_data, std::string_view("\x01\x02", 2));
    mc::auth a;
    a.reason = reason_code::continue_authentication;
    a.properties = b.view();
    check_vector(a, v5, role::client,
                 wire({0xF0, 0x0F,                                       // AUTH, Remaining Length 15
                       0x18,                                             // Continue authentication
                       0x0D,                                             // Property Length 13
                       0x15, 0x00, 0x05, 'S', 'C', 'R', 'A', 'M',        // Authentication Method
                       0x16, 0x00, 0x02, 0x01, 0x02}));                  // Authentication Data
  }
}

TEST_CASE("properties are encoded with the data types of 2.2.2.2", "[codec][vector][properties]") {
  mc::properties_builder b;
  b.add(property_id::payload_format_indicator, 1)                  // Byte
      .add(property_id::topic_alias, 0x1234)                         // Two Byte Integer
      .add(property_id::message_expiry_interval, 0x01020304)         // Four Byte Integer
      .add(property_id::subscription_identifier, 268'435'455)        // Variable Byte Integer
      .add(property_id::content_type, "ab")                          // UTF-8 Encoded String
      .add(property_id::correlation_data, std::string_view("\x00\xFF", 2))  // Binary Data
      .add_user_property("k", "v");                                  // UTF-8 String Pair
  CHECK(hex(b.view().bytes()) == hex(wire({0x01, 0x01,                          //
                                           0x23, 0x12, 0x34,                    //
                                           0x02, 0x01, 0x02, 0x03, 0x04,        //
                                           0x0B, 0xFF, 0xFF, 0xFF, 0x7F,        //
                                           0x03, 0x00, 0x02, 'a', 'b',          //
                                           0x09, 0x00, 0x02, 0x00, 0xFF,        //
                                           0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v'})));
  CHECK(b.view().wire_size() == 1 + b.view().bytes().size());

  // The lazy iterator gives back each one with its value in the right member.
  std::vector<mc::property> got(b.view().begin(), b.view().end());
  REQUIRE(got.size() == 7);
  CHECK(got[0].id == property_id::payload_format_indicator);
  CHECK(got[0].integer == 1);
  CHECK(got[1].integer == 0x1234);
  CHECK(got[2].integer == 0x01020304);
  CHECK(got[3].integer == 268'435'455);
  CHECK(got[4].value == "ab");
  CHECK(got[5].value == std::string_view("\x00\xFF", 2));
  CHECK(got[6].key == "k");
  CHECK(got[6].value == "v");
  CHECK(b.view().find(property_id::content_type)->value == "ab");
  CHECK_FALSE(b.view().find(property_id::response_topic).has_value());
  CHECK(codec_test::properties_rebuild_diff(b.view()) == "");

  // A decoded packet's properties iterate the same way, from the packet's bytes.
  mc::properties_view parsed;
  CHECK_FALSE(mc::properties_view::parse(b.view().bytes(), mc::place_of(packet_type::publish), parsed));
  CHECK(std::distance(parsed.begin(), parsed.end()) == 7);
  CHECK(mc::properties_view{}.begin() == mc::properties_view{}.end());
  CHECK(mc::properties_view{}.wire_size() == 1);  // Property Length 0
}

// ---------------------------------------------------------------------------------------------
// Encoder specifics

TEST_CASE("encode_publish_header followed by the payload is the whole PUBLISH", "[codec][encoder]") {
  mc::properties_builder b;
  b.add(property_id::message_expiry_interval, 60).add_user_property("k", "v");
  for (protocol_version v : {v3_1_1, v5}) {
    for (unsigned q = 0; q < 3; ++q) {
      for (std::size_t size : {0u, 1u, 100u, 113u, 114u, 127u, 128u, 200u, 16'370u, 16'384u, 70'000u, 2'097'152u}) {
        INFO("version " << static_cast<int>(v) << " QoS " << q << " payload " << size);
        std::string payload(size, '\0');
        for (std::size_t i = 0; i < size; ++i) payload[i] = static_cast<char>(i * 7u);
        mc::publish p;
        p.topic = "t/x";
        p.qos_level = static_cast<qos>(q);
        p.packet_id = q != 0 ? 7 : 0;
        p.properties = b.view();
        p.payload = payload;
        const std::string whole = encoded(p, v);

        std::size_t header_size = 0;
        REQUIRE_FALSE(mc::publish_header_size(p, v, header_size));
        CHECK(header_size + size == whole.size());
        std::vector<std::uint8_t> head(header_size);
        std::size_t written = 0;
        REQUIRE_FALSE(mc::encode_publish_header(p, v, head.data(), head.size(), written));
        CHECK(written == header_size);
        CHECK((std::string(view_of(head, written)) + payload == whole));
        // A buffer one byte short is refused, not overrun.
        written = 12345;
        CHECK(mc::encode_publish_header(p, v, head.data(), header_size - 1, written) == codec_errc::packet_too_large);
        CHECK(written == 12345);
      }
    }
  }
}

TEST_CASE("Remaining Length takes 1 to 4 bytes at the boundaries of 1.5.5", "[codec][encoder][MQTT-1.5.5-1]") {
  // A 3.1.1 QoS 0 PUBLISH to "t": Remaining Length = 3 + payload size.
  const std::pair<std::uint32_t, std::string> cases[] = {
      {127, wire({0x30, 0x7F})},
      {128, wire({0x30, 0x80, 0x01})},
      {16'383, wire({0x30, 0xFF, 0x7F})},
      {16'384, wire({0x30, 0x80, 0x80, 0x01})},
      {2'097'151, wire({0x30, 0xFF, 0xFF, 0x7F})},
      {2'097'152, wire({0x30, 0x80, 0x80, 0x80, 0x01})},
  };
  for (const auto& [rl, header] : cases) {
    INFO("Remaining Length " << rl);
    const std::string payload(rl - 3, 'p');
    mc::publish p;
    p.topic = "t";
    p.payload = payload;
    const std::string bytes = encoded(p, v3_1_1);
    CHECK(hex(bytes.substr(0, header.size() + 3)) == hex(header + wire({0x00, 0x01, 't'})));
    CHECK(bytes.size() == header.size() + rl);
    mc::packet got;
    REQUIRE(describe(mc::decode_packet(bytes, v3_1_1, role::server, got)) == "success");
    CHECK(std::get<mc::publish>(got).payload.size() == payload.size());
  }
  // The largest, 268,435,455 = FF FF FF 7F: the decoder accepts the header and waits for the body.
  mc::decoder d({role::client, mc::max_packet_size, v5});
  const std::string header = wire({0x30, 0xFF, 0xFF, 0xFF, 0x7F});
  const auto res = d.feed(bytes_of(header), header.size(), [](mc::packet&) {});
  CHECK(describe(res.ec) == "success");
  CHECK(res.consumed == 5);
  CHECK(d.mid_packet());
  CHECK(d.buffered() == 0);
}

TEST_CASE("encoding for 3.1.1 leaves out properties, reason codes and 5.0 options", "[codec][encoder]") {
  mc::properties_builder b;
  b.add(property_id::reason_string, "why").add_user_property("k", "v");
  mc::properties_builder pub;
  pub.add(property_id::message_expiry_interval, 9);

  mc::puback puback;
  puback.packet_id = 10;
  puback.reason = reason_code::quota_exceeded;
  puback.properties = b.view();
  CHECK(hex(encoded(puback, v3_1_1)) == hex(wire({0x40, 0x02, 0x00, 0x0A})));
  mc::pubrel pubrel;
  pubrel.packet_id = 10;
  pubrel.reason = reason_code::packet_identifier_not_found;
  CHECK(hex(encoded(pubrel, v3_1_1)) == hex(wire({0x62, 0x02, 0x00, 0x0A})));

  mc::connack connack;
  connack.properties = b.view();
  CHECK(hex(encoded(connack, v3_1_1)) == hex(wire({0x20, 0x02, 0x00, 0x00})));

  mc::publish publish;
  publish.topic = "t";
  publish.payload = "p";
  publish.properties = pub.view();
  CHECK(hex(encoded(publish, v3_1_1)) == hex(wire({0x30, 0x04, 0x00, 0x01, 't', 'p'})));

  mc::subscribe subscribe;
  subscribe.packet_id = 10;
  subscribe.properties = b.view();
  mc::subscribe_options o;
  o.max_qos = qos::at_least_once;
  o.no_local = true;
  o.retain_as_published = true;
  o.retain_handling = mc::retain_handling_option::dont_send;
  subscribe.entries.push_back({"a", o});
  // [MQTT-3-8.3-4] bits 2-7 of the 3.1.1 options byte are reserved: only the QoS is written.
  CHECK(hex(encoded(subscribe, v3_1_1)) == hex(wire({0x82, 0x06, 0x00, 0x0A, 0x00, 0x01, 'a', 0x01})));

  mc::suback suback;
  suback.packet_id = 10;
  suback.properties = b.view();
  suback.reasons = {reason_code::granted_qos_1};
  CHECK(hex(encoded(suback, v3_1_1)) == hex(wire({0x90, 0x03, 0x00, 0x0A, 0x01})));

  mc::unsubscribe unsubscribe;
  unsubscribe.packet_id = 10;
  unsubscribe.properties = b.view();
  unsubscribe.filters = {"a"};
  CHECK(hex(encoded(unsubscribe, v3_1_1)) == hex(wire({0xA2, 0x05, 0x00, 0x0A, 0x00, 0x01, 'a'})));

  mc::unsuback unsuback;
  unsuback.packet_id = 10;
  unsuback.properties = b.view();
  unsuback.reasons = {reason_code::no_subscription_existed};
  CHECK(hex(encoded(unsuback, v3_1_1)) == hex(wire({0xB0, 0x02, 0x00, 0x0A})));

  mc::disconnect disconnect;
  disconnect.reason = reason_code::server_shutting_down;
  disconnect.properties = b.view();
  CHECK(hex(encoded(disconnect, v3_1_1)) == hex(wire({0xE0, 0x00})));

  // A CONNECT is written in its own version, whatever version the call names.
  mc::properties_builder cp;
  cp.add(property_id::receive_maximum, 5);
  mc::properties_builder wp;
  wp.add(property_id::will_delay_interval, 5);
  mc::connect connect;
  connect.version = v3_1_1;
  connect.client_id = "c";
  connect.properties = cp.view();
  connect.will = mc::will_message{"t", "p", qos::at_most_once, false, wp.view()};
  const std::string plain = wire({0x10, 0x13, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x06, 0x00, 0x00,
                                  0x00, 0x01, 'c', 0x00, 0x01, 't', 0x00, 0x01, 'p'});
  CHECK(hex(encoded(connect, v3_1_1)) == hex(plain));
  CHECK(hex(encoded(connect, v5)) == hex(plain));
}

TEST_CASE("AUTH cannot be encoded before 5.0", "[codec][encoder]") {
  mc::auth a;
  a.reason = reason_code::continue_authentication;
  for (protocol_version v : {v3_1, v3_1_1}) {
    std::string out;
    CHECK(mc::encode(a, v, out) == codec_errc::reserved_packet_type);
    CHECK(out.empty());
    std::size_t size = 0;
    CHECK(mc::encoded_size(mc::packet{a}, v, size) == codec_errc::reserved_packet_type);
    std::uint8_t buf[16];
    std::size_t written = 0;
    CHECK(mc::encode(mc::packet{a}, v, buf, sizeof buf, written) == codec_errc::reserved_packet_type);
  }
}

TEST_CASE("a field longer than 65,535 bytes cannot be encoded", "[codec][encoder][MQTT-1.5.4-1]") {
  const std::string max(65'535, 'a');
  const std::string over(65'536, 'a');
  SECTION("PUBLISH topic") {
    mc::publish p;
    p.topic = over;
    std::string out;
    CHECK(mc::encode(p, v5, out) == codec_errc::field_too_long);
    CHECK(out.empty());
    std::size_t size = 0;
    CHECK(mc::encoded_size(p, v5, size) == codec_errc::field_too_long);
    CHECK(mc::publish_header_size(p, v5, size) == codec_errc::field_too_long);
    std::vector<std::uint8_t> buf(70'000);
    std::size_t written = 0;
    CHECK(mc::encode_publish_header(p, v5, buf.data(), buf.size(), written) == codec_errc::field_too_long);
    CHECK(mc::encode(p, v5, buf.data(), buf.size(), written) == codec_errc::field_too_long);

    p.topic = max;  // the largest that fits, and it decodes back
    const std::string bytes = encoded(p, v3_1_1);
    mc::packet got;
    REQUIRE_FALSE(mc::decode_packet(bytes, v3_1_1, role::server, got));
    CHECK(std::get<mc::publish>(got).topic.size() == 65'535);
  }
  SECTION("CONNECT fields") {
    const auto fails = [&](const mc::connect& c) {
      std::string out;
      return mc::encode(c, v5, out) == codec_errc::field_too_long;
    };
    mc::connect c;
    c.version = v5;
    c.client_id = over;
    CHECK(fails(c));
    c.client_id = max;
    CHECK_FALSE(fails(c));
    c.will = mc::will_message{over, "p", qos::at_most_once, false, {}};
    CHECK(fails(c));
    c.will = mc::will_message{"t", over, qos::at_most_once, false, {}};
    CHECK(fails(c));
    c.will.reset();
    c.username = over;
    CHECK(fails(c));
    c.username = "u";
    c.password = over;
    CHECK(fails(c));
  }
  SECTION("SUBSCRIBE and UNSUBSCRIBE filters") {
    mc::subscribe s;
    s.packet_id = 1;
    s.entries.push_back({"ok", {}});
    s.entries.push_back({over, {}});
    std::string out;
    CHECK(mc::encode(s, v3_1_1, out) == codec_errc::field_too_long);
    mc::unsubscribe u;
    u.packet_id = 1;
    u.filters = {over};
    CHECK(mc::encode(u, v5, out) == codec_errc::field_too_long);
    CHECK(out.empty());
  }
  SECTION("properties_builder cuts a longer string to 65,535 bytes, as documented") {
    mc::properties_builder b;
    b.add(property_id::content_type, over);
    CHECK(b.view().bytes().size() == 1 + 2 + 65'535);
    CHECK(b.view().find(property_id::content_type)->value.size() == 65'535);
  }
}

TEST_CASE("encoding refuses what the encoder must not write", "[codec][encoder][MQTT-3.1.2-22]") {
  mc::connect c;
  c.client_id = "c";
  c.password = "secret";
  for (protocol_version v : {v3_1, v3_1_1}) {
    c.version = v;
    std::string out;
    CHECK(mc::encode(c, v, out) == protocol_errc::password_without_username);
  }
  std::uint8_t small[3];
  std::size_t written = 99;
  CHECK(mc::encode(mc::puback{}, v3_1_1, small, sizeof small, written) == codec_errc::packet_too_large);
  CHECK(written == 99);
  CHECK_FALSE(mc::encode(mc::pingreq{}, v3_1_1, small, 2, written));
  CHECK(written == 2);
}

TEST_CASE("encode appends to a container", "[codec][encoder]") {
  std::vector<std::uint8_t> out{0xAA};
  REQUIRE_FALSE(mc::encode(mc::pingreq{}, v3_1_1, out));
  REQUIRE_FALSE(mc::encode(mc::packet{mc::pingresp{}}, v5, out));
  CHECK(out == std::vector<std::uint8_t>{0xAA, 0xC0, 0x00, 0xD0, 0x00});
}

// ---------------------------------------------------------------------------------------------
// The incremental decoder

namespace {

/// A 5.0 client-to-server stream: packets, their bytes back to back, and where each one ends.
struct sample_stream {
  std::vector<mc::packet> packets;
  std::string bytes;
  std::vector<std::size_t> ends;
  mc::properties_builder connect_props, publish_props, subscribe_props, auth_props, pubrel_props;
  std::string payload;

  explicit sample_stream(std::size_t payload_size = 200) : payload(payload_size, 'x') {
    connect_props.add(property_id::session_expiry_interval, 30).add(property_id::receive_maximum, 20);
    publish_props.add(property_id::topic_alias, 1).add_user_property("k", "v");
    subscribe_props.add(property_id::subscription_identifier, 77);
    auth_props.add(property_id::authentication_method, "PLAIN");
    pubrel_props.add(property_id::reason_string, "gone");

    mc::connect c;
    c.version = v5;
    c.client_id = "dev";
    c.properties = connect_props.view();
    add(c);
    mc::publish p;
    p.topic = "a/b";
    p.qos_level = qos::at_least_once;
    p.packet_id = 1;
    p.properties = publish_props.view();
    p.payload = payload;
    add(p);
    mc::subscribe s;
    s.packet_id = 2;
    s.properties = subscribe_props.view();
    s.entries.push_back({"a/#", {qos::exactly_once}});
    s.entries.push_back({"b", {}});
    add(s);
    add(mc::pingreq{});
    mc::auth a;
    a.reason = reason_code::re_authenticate;
    a.properties = auth_props.view();
    add(a);
    mc::puback ack;
    ack.packet_id = 3;
    add(ack);
    mc::unsubscribe u;
    u.packet_id = 4;
    u.filters = {"a/#"};
    add(u);
    mc::pubrel rel;
    rel.packet_id = 5;
    rel.reason = reason_code::packet_identifier_not_found;
    rel.properties = pubrel_props.view();
    add(rel);
    add(mc::disconnect{});
  }
  sample_stream(const sample_stream&) = delete;
  sample_stream& operator=(const sample_stream&) = delete;

  /// Index of the PUBLISH, whose payload shows where views point.
  static constexpr std::size_t publish_index = 1;
  std::size_t begin_of(std::size_t i) const { return i == 0 ? 0 : ends[i - 1]; }

 private:
  template <class P>
  void add(const P& p) {
    packets.emplace_back(p);
    bytes += encoded(p, v5);
    ends.push_back(bytes.size());
  }
};

/// Counts packets and compares each with the stream's.
struct checker {
  explicit checker(const sample_stream& stream) : s(stream) {}
  const sample_stream& s;
  std::size_t next = 0;
  std::string problem;
  const char* payload_data = nullptr;  // where the PUBLISH's payload view pointed

  void operator()(mc::packet& p) {
    if (next >= s.packets.size()) {
      problem = "too many packets";
      return;
    }
    if (problem.empty()) problem = diff(s.packets[next], p);
    if (next == sample_stream::publish_index) payload_data = std::get<mc::publish>(p).payload.data();
    ++next;
  }
};

}  // namespace

TEST_CASE("decoder: several packets in one buffer", "[codec][decoder]") {
  const sample_stream s;
  mc::decoder d;  // server role, version learnt from the CONNECT
  checker c(s);
  const auto res = d.feed(bytes_of(s.bytes), s.bytes.size(), std::ref(c));
  CHECK(describe(res.ec) == "success");
  CHECK(res.consumed == s.bytes.size());
  CHECK(c.problem == "");
  CHECK(c.next == s.packets.size());
  CHECK(d.version() == v5);
  CHECK_FALSE(d.mid_packet());
  // A packet that lies whole in the fragment is decoded in place: its views point into it.
  const char* base = s.bytes.data();
  CHECK((c.payload_data >= base && c.payload_data < base + s.bytes.size()));
}

TEST_CASE("decoder: packets split at every position", "[codec][decoder]") {
  const sample_stream s;
  const std::size_t n = s.bytes.size();
  const char* base = s.bytes.data();
  const std::size_t pub_end = s.ends[sample_stream::publish_index];
  // The PUBLISH's body starts after its first byte and a 2-byte Remaining Length.
  const std::size_t body_begin = s.begin_of(sample_stream::publish_index) + 3;
  std::size_t failures = 0;
  for (std::size_t i = 0; i <= n && failures < 3; ++i) {
    mc::decoder d;
    checker c(s);
    const auto a = d.feed(bytes_of(s.bytes), i, std::ref(c));
    const auto b = d.feed(bytes_of(s.bytes) + i, n - i, std::ref(c));
    // The PUBLISH is copied only when the split falls inside its body; otherwise (even when it
    // falls inside the fixed header) the body arrives whole and is decoded in place.
    const bool split_inside = i > body_begin && i < pub_end;
    const bool in_place = c.payload_data >= base && c.payload_data < base + n;
    if (a.ec || b.ec || a.consumed != i || b.consumed != n - i || !c.problem.empty() ||
        c.next != s.packets.size() || d.mid_packet() || d.buffered() != 0 || in_place == split_inside) {
      ++failures;
      FAIL_CHECK("split at " << i << ": " << describe(a.ec) << " / " << describe(b.ec) << ", " << c.next
                             << " packets, " << c.problem << (in_place == split_inside ? " (copy/in-place wrong)" : ""));
    }
  }
  // Three fragments: every pair of split points close together, and a spread of others.
  rng r(test_seed());
  for (std::size_t k = 0; k < 20'000 && failures < 3; ++k) {
    std::size_t i = r.below(n + 1);
    std::size_t j = k < 10'000 ? std::min(n, i + r.below(24)) : r.below(n + 1);
    if (j < i) std::swap(i, j);
    mc::decoder d;
    checker c(s);
    const auto a = d.feed(bytes_of(s.bytes), i, std::ref(c));
    const auto b = d.feed(bytes_of(s.bytes) + i, j - i, std::ref(c));
    const auto e = d.feed(bytes_of(s.bytes) + j, n - j, std::ref(c));
    if (a.ec || b.ec || e.ec || a.consumed + b.consumed + e.consumed != n || !c.problem.empty() ||
        c.next != s.packets.size()) {
      ++failures;
      FAIL_CHECK("split at " << i << " and " << j << ": " << c.problem);
    }
  }
  CHECK(failures == 0);
}

TEST_CASE("decoder: a callback returning false stops after that packet", "[codec][decoder]") {
  const sample_stream s;
  const std::size_t n = s.bytes.size();
  for (std::size_t stop = 0; stop < s.packets.size(); ++stop) {
    // Feed everything at once, then at a split inside the packet that stops (the copied path),
    // and for the zero-length PINGREQ and DISCONNECT, just after their header (no body at all).
    for (std::size_t split : {std::size_t{0}, s.begin_of(stop) + 1, s.ends[stop] - 1}) {
      INFO("stop after packet " << stop << ", first fragment " << split << " bytes");
      mc::decoder d;
      checker c(s);
      std::size_t calls = 0;
      const auto cb = [&](mc::packet& p) {
        c(p);
        return calls++ != stop;
      };
      std::size_t pos = 0;
      if (split != 0) {
        const auto first = d.feed(bytes_of(s.bytes), split, cb);
        REQUIRE_FALSE(first.ec);
        REQUIRE(first.consumed == split);  // the stopping packet is not complete yet
        pos = split;
      }
      const auto res = d.feed(bytes_of(s.bytes) + pos, n - pos, cb);
      CHECK_FALSE(res.ec);
      CHECK(pos + res.consumed == s.ends[stop]);
      CHECK(c.next == stop + 1);
      CHECK_FALSE(d.mid_packet());
      // Feeding the rest goes on with the next packet.
      const std::size_t at = pos + res.consumed;
      const auto rest = d.feed(bytes_of(s.bytes) + at, n - at, [&](mc::packet& p) { c(p); });
      CHECK_FALSE(rest.ec);
      CHECK(rest.consumed == n - at);
      CHECK(c.next == s.packets.size());
      CHECK(c.problem == "");
    }
  }
}

TEST_CASE("decoder: a server refuses a first packet other than CONNECT at its first byte",
          "[codec][decoder][MQTT-3.1.0-1]") {
  for (unsigned b = 0; b < 256; ++b) {
    if ((b >> 4) == 1) continue;
    INFO("first byte " << b);
    mc::decoder d;
    // The byte comes with a body; nothing past it is taken.
    const std::string bytes = wire({static_cast<int>(b), 0x02, 0x00, 0x01, 0x00});
    const auto res = d.feed(bytes_of(bytes), bytes.size(), [](mc::packet&) { FAIL("no packet expected"); });
    CHECK(res.ec == protocol_errc::first_packet_not_connect);
    CHECK(res.consumed == 1);
    CHECK(d.buffered() == 0);
    CHECK(mqttbroker::to_reason_code(res.ec) == reason_code::protocol_error);
  }
}

TEST_CASE("decoder: a second CONNECT is a protocol error", "[codec][decoder][MQTT-3.1.0-2]") {
  for (protocol_version v : {v3_1, v3_1_1, v5}) {
    const std::string connect = connect_bytes(v);
    const std::string twice = connect + connect;
    mc::decoder d;
    std::size_t packets = 0;
    const auto res = d.feed(bytes_of(twice), twice.size(), [&](mc::packet&) { ++packets; });
    CHECK(res.ec == protocol_errc::second_connect);
    CHECK(res.consumed == connect.size() + 1);  // refused at the second CONNECT's first byte
    CHECK(packets == 1);
    CHECK(mqttbroker::to_reason_code(res.ec) == reason_code::protocol_error);
  }
}

TEST_CASE("decoder: a server learns the protocol version from CONNECT", "[codec][decoder][MQTT-3.1.2-2]") {
  const auto feed = [](mc::decoder& d, const std::string& bytes, std::size_t& packets) {
    return d.feed(bytes_of(bytes), bytes.size(), [&](mc::packet&) { ++packets; });
  };
  std::size_t packets = 0;
  SECTION("3.1.1: bodies have no properties, AUTH is a reserved type, long lengths pass") {
    mc::decoder d;
    CHECK_FALSE(d.version().has_value());
    REQUIRE_FALSE(feed(d, connect_bytes(v3_1_1), packets).ec);
    CHECK(d.version() == v3_1_1);
    // The byte after the topic is payload in 3.1.1 (it would be a Property Length in 5.0).
    const std::string pub = wire({0x30, 0x05, 0x00, 0x01, 't', 0x00, 'p'});
    std::string payload;
    d.feed(bytes_of(pub), pub.size(), [&](mc::packet& p) { payload = std::get<mc::publish>(p).payload; });
    CHECK(payload == std::string_view("\x00p", 2));
    // 3.1.1 does not require the shortest Remaining Length: PINGREQ with length 80 00 passes.
    REQUIRE_FALSE(feed(d, wire({0xC0, 0x80, 0x00}), packets).ec);
    CHECK(packets == 2);
    CHECK(feed(d, wire({0xF0, 0x00}), packets).ec == codec_errc::reserved_packet_type);
  }
  SECTION("5.0: AUTH is accepted, non-minimal lengths are refused [MQTT-1.5.5-1]") {
    mc::decoder d;
    REQUIRE_FALSE(feed(d, connect_bytes(v5), packets).ec);
    CHECK(d.version() == v5);
    REQUIRE_FALSE(feed(d, wire({0xF0, 0x00}), packets).ec);
    CHECK(packets == 2);
    CHECK(feed(d, wire({0xC0, 0x80, 0x00}), packets).ec == codec_errc::invalid_varint);
  }
  SECTION("3.1 (MQIsdp) is handled as 3.1.1") {
    mc::decoder d;
    REQUIRE_FALSE(feed(d, connect_bytes(v3_1), packets).ec);
    CHECK(d.version() == v3_1);
    CHECK(feed(d, wire({0xF0, 0x00}), packets).ec == codec_errc::reserved_packet_type);
  }
}

TEST_CASE("decoder: the maximum packet size is enforced from the fixed header alone",
          "[codec][decoder][MQTT-3.2.2-15]") {
  SECTION("a header announcing a huge body fails before any body byte is buffered") {
    mc::decoder d({role::client, 64, v5});
    const std::string bytes = wire({0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, 't'});
    std::size_t pos = 0;
    mc::decoder::result res;
    while (pos < bytes.size() && !res.ec) {  // byte by byte: buffered() never moves
      res = d.feed(bytes_of(bytes) + pos, 1, [](mc::packet&) {});
      pos += res.consumed;
      CHECK(d.buffered() == 0);
    }
    CHECK(res.ec == codec_errc::packet_too_large);
    CHECK(pos == 5);  // at the last Remaining Length byte
    CHECK(mqttbroker::to_reason_code(res.ec) == reason_code::packet_too_large);

    mc::decoder whole({role::client, 64, v5});
    const auto r2 = whole.feed(bytes_of(bytes), bytes.size(), [](mc::packet&) {});
    CHECK(r2.ec == codec_errc::packet_too_large);
    CHECK(r2.consumed == 5);
    CHECK(whole.buffered() == 0);
  }
  SECTION("the limit counts the whole packet, fixed header included") {
    // 3.1.1 PUBLISH to "t": 2 header bytes + 3 + payload.
    for (std::size_t payload : {59u, 60u}) {
      mc::publish p;
      p.topic = "t";
      const std::string data(payload, 'd');
      p.payload = data;
      const std::string bytes = encoded(p, v3_1_1);
      mc::decoder d({role::client, 64, v3_1_1});
      std::size_t packets = 0;
      const auto res = d.feed(bytes_of(bytes), bytes.size(), [&](mc::packet&) { ++packets; });
      if (bytes.size() <= 64) {
        CHECK_FALSE(res.ec);
        CHECK(packets == 1);
      } else {
        CHECK(res.ec == codec_errc::packet_too_large);
        CHECK(res.consumed == 2);
      }
    }
  }
  SECTION("a server applies it to the CONNECT too") {
    mc::decoder d({role::server, 100, std::nullopt});
    const std::string bytes = wire({0x10, 0xFF, 0x7F});  // Remaining Length 16,383
    const auto res = d.feed(bytes_of(bytes), bytes.size(), [](mc::packet&) {});
    CHECK(res.ec == codec_errc::packet_too_large);
    CHECK(d.buffered() == 0);
  }
  SECTION("set_max_packet_size applies from the next packet") {
    mc::decoder d({role::client, mc::max_packet_size, v5});
    d.set_max_packet_size(3);
    const std::string ok = wire({0xD0, 0x00});
    CHECK_FALSE(d.feed(bytes_of(ok), ok.size(), [](mc::packet&) {}).ec);
    const std::string big = wire({0x40, 0x02});
    CHECK(d.feed(bytes_of(big), big.size(), [](mc::packet&) {}).ec == codec_errc::packet_too_large);
  }
}

TEST_CASE("decoder: a trickled body never makes buffered() exceed what was sent", "[codec][decoder]") {
  mc::publish p;
  p.topic = "big";
  const std::string payload(10'000, 'z');
  p.payload = payload;
  p.qos_level = qos::at_least_once;
  p.packet_id = 9;
  const std::string bytes = encoded(p, v5);
  const std::size_t header = 1 + 2;  // first byte, 2-byte Remaining Length
  mc::decoder d({role::client, mc::max_packet_size, v5});
  std::size_t packets = 0;
  std::size_t worst = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const auto res = d.feed(bytes_of(bytes) + i, 1, [&](mc::packet& q) {
      ++packets;
      CHECK(diff(mc::packet{p}, q) == "");
    });
    REQUIRE_FALSE(res.ec);
    const std::size_t body_sent = i + 1 > header ? i + 1 - header : 0;
    if (i + 1 < bytes.size()) {
      CHECK(d.mid_packet());
      if (d.buffered() != body_sent) worst = std::max(worst, d.buffered());
    }
  }
  CHECK(worst == 0);  // buffered() was exactly the body bytes sent, every time
  CHECK(packets == 1);
  CHECK(d.buffered() == 0);
  CHECK_FALSE(d.mid_packet());
}

TEST_CASE("decoder: after an error every feed returns the same error", "[codec][decoder]") {
  mc::decoder d({role::client, mc::max_packet_size, v3_1_1});
  const std::string bad = wire({0x36, 0x00});  // PUBLISH QoS 3 [MQTT-3.3.1-4]
  const auto res = d.feed(bytes_of(bad), bad.size(), [](mc::packet&) {});
  CHECK(res.ec == codec_errc::invalid_qos);
  CHECK(res.consumed == 1);
  CHECK(d.error() == codec_errc::invalid_qos);
  const std::string good = wire({0xD0, 0x00});
  for (int i = 0; i < 3; ++i) {
    const auto again = d.feed(bytes_of(good), good.size(), [](mc::packet&) { FAIL("no packet after an error"); });
    CHECK(again.ec == codec_errc::invalid_qos);
    CHECK(again.consumed == 0);
  }
  CHECK(d.feed(nullptr, 0, [](mc::packet&) {}).ec == codec_errc::invalid_qos);
}

TEST_CASE("decoder: an empty feed is a no-op", "[codec][decoder]") {
  mc::decoder d;
  const auto res = d.feed(nullptr, 0, [](mc::packet&) {});
  CHECK_FALSE(res.ec);
  CHECK(res.consumed == 0);
  CHECK_FALSE(d.mid_packet());
  CHECK(d.options().side == role::server);
}
