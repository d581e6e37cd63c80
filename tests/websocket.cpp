#include <mqttbroker/transport/websocket/frame.hpp>

#include "catch.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

namespace ws = mqttbroker::transport::websocket;
using mqttbroker::websocket_errc;

using bytes = std::vector<std::uint8_t>;

/// A client frame (masked, §5.3), with the length form chosen: 0 shortest, else 7, 16 or 64 bits.
bytes client_frame(std::uint8_t first, const std::string& payload, std::uint32_t mask = 0x37FA213Du,
                   int length_bits = 0, bool masked = true) {
  const std::uint64_t n = payload.size();
  if (length_bits == 0) length_bits = n < 126 ? 7 : n <= 0xFFFF ? 16 : 64;
  bytes out{first};
  const std::uint8_t m = masked ? 0x80u : 0u;
  if (length_bits == 7) {
    out.push_back(static_cast<std::uint8_t>(m | n));
  } else if (length_bits == 16) {
    out.push_back(m | 126u);
    out.push_back(static_cast<std::uint8_t>(n >> 8));
    out.push_back(static_cast<std::uint8_t>(n));
  } else {
    out.push_back(m | 127u);
    for (int i = 7; i >= 0; --i) out.push_back(static_cast<std::uint8_t>(n >> (8 * i)));
  }
  const std::uint8_t key[4] = {static_cast<std::uint8_t>(mask >> 24), static_cast<std::uint8_t>(mask >> 16),
                               static_cast<std::uint8_t>(mask >> 8), static_cast<std::uint8_t>(mask)};
  if (masked) out.insert(out.end(), key, key + 4);
  for (std::size_t i = 0; i < payload.size(); ++i)
    out.push_back(static_cast<std::uint8_t>(payload[i] ^ (masked ? key[i % 4] : 0)));
  return out;
}

bytes binary(const std::string& p, std::uint32_t mask = 0x37FA213Du) { return client_frame(0x82, p, mask); }

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 31 + 7) & 0xFF);
  return s;
}

struct collected {
  std::string data;
  std::vector<ws::control_frame> controls;  // views copied into `strings`
  std::vector<std::string> payloads;
  ws::frame_parser::result last;
};

/// Feeds `in` in chunks of `chunk` bytes (0: at once) through the appending overload.
collected run(const bytes& in, std::size_t chunk = 0, std::uint64_t max = 1u << 20) {
  ws::frame_parser p(max);
  collected c;
  auto on_control = [&](const ws::control_frame& f) {
    c.controls.push_back(f);
    c.payloads.emplace_back(f.payload);
  };
  std::size_t pos = 0;
  while (pos < in.size()) {
    const std::size_t n = chunk == 0 ? in.size() - pos : std::min(chunk, in.size() - pos);
    c.last = p.feed_into(in.data() + pos, n, c.data, on_control);
    pos += c.last.consumed;
    if (c.last.ec || p.closed()) break;
  }
  return c;
}

std::error_code error_of(const bytes& in) { return run(in).last.ec; }

}  // namespace

TEST_CASE("websocket: binary frames round trip at the length boundaries", "[websocket]") {
  for (std::size_t n : {0u, 1u, 125u, 126u, 127u, 65535u, 65536u, 70000u}) {
    CAPTURE(n);
    const std::string payload = pattern(n);
    const bytes frame = binary(payload);
    // Header size: 2 + mask, +2 from 126 bytes, +8 from 65536 bytes (minimal forms).
    CHECK(frame.size() == n + 6 + (n >= 126 ? 2 : 0) + (n > 65535 ? 6 : 0));
    const collected c = run(frame);
    CHECK_FALSE(c.last.ec);
    CHECK(c.last.consumed == frame.size());
    CHECK(c.data == payload);

    // The server's header for the same length is the client's without mask bit and key.
    const ws::frame_header h = ws::make_binary_header(n);
    const std::size_t client_header = frame.size() - n;
    REQUIRE(h.size == client_header - 4);
    CHECK(h.bytes[0] == 0x82);
    CHECK(h.bytes[1] == (frame[1] & 0x7Fu));
    for (std::size_t i = 2; i < h.size; ++i) CHECK(h.bytes[i] == frame[i]);
  }
}

TEST_CASE("websocket: payload is unmasked with the frame's key, in place too", "[websocket]") {
  const std::string payload = "\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c";
  for (std::uint32_t mask : {0u, 0xFFFFFFFFu, 0x01020304u, 0xA5C3E1F0u}) {
    CAPTURE(mask);
    bytes frame = binary(payload, mask);
    if (mask != 0) CHECK(std::string(frame.begin() + 6, frame.end()) != payload);
    CHECK(run(frame).data == payload);

    ws::frame_parser p(1024);
    std::string got;
    const auto r = p.feed(
        frame.data(), frame.size(),
        [&](std::uint8_t* d, std::size_t n) {
          // Points into the caller's buffer: nothing copied.
          CHECK(d >= frame.data());
          CHECK(d + n <= frame.data() + frame.size());
          got.append(reinterpret_cast<const char*>(d), n);
        },
        [](const ws::control_frame&) { FAIL("no control frame"); });
    CHECK_FALSE(r.ec);
    CHECK(got == payload);
  }
}

TEST_CASE("websocket: byte-by-byte feeding equals one chunk", "[websocket]") {
  bytes in = binary(pattern(300), 0x11223344u);
  const bytes ping = client_frame(0x89, "hi", 0x55667788u);
  in.insert(in.end(), ping.begin(), ping.end());
  const bytes more = binary(pattern(70000), 0x99AABBCCu);
  in.insert(in.end(), more.begin(), more.end());
  const collected whole = run(in);
  REQUIRE_FALSE(whole.last.ec);
  for (std::size_t chunk : {1u, 2u, 3u, 7u, 125u, 4096u}) {
    CAPTURE(chunk);
    const collected c = run(in, chunk);
    CHECK_FALSE(c.last.ec);
    CHECK(c.data == whole.data);
    CHECK(c.payloads == whole.payloads);
  }
  CHECK(whole.data == pattern(300) + pattern(70000));
  CHECK(whole.payloads == std::vector<std::string>{"hi"});
}

TEST_CASE("websocket: a fragmented message with a ping in between", "[websocket]") {
  bytes in = client_frame(0x02, "abc");   // binary, no FIN
  auto add = [&](const bytes& b) { in.insert(in.end(), b.begin(), b.end()); };
  add(client_frame(0x89, "ping-1"));      // ping between fragments: allowed (§5.4)
  add(client_frame(0x00, "def"));         // continuation, no FIN
  add(client_frame(0x8A, ""));            // an unsolicited pong
  add(client_frame(0x80, "ghi"));         // continuation, FIN
  add(binary("next"));                    // a new message after the end
  ws::frame_parser p(1024);
  std::string data;
  std::vector<std::string> pings;
  std::vector<bool> mid;
  std::size_t pongs = 0;
  const auto r = p.feed_into(in.data(), in.size(), data, [&](const ws::control_frame& f) {
    if (f.op == ws::opcode::ping) pings.emplace_back(f.payload);
    if (f.op == ws::opcode::pong) ++pongs;
    mid.push_back(p.mid_message());
  });
  CHECK_FALSE(r.ec);
  CHECK(r.consumed == in.size());
  CHECK(data == "abcdefghinext");
  CHECK(pings == std::vector<std::string>{"ping-1"});
  CHECK(pongs == 1);
  CHECK(mid == std::vector<bool>{true, true});
  CHECK_FALSE(p.mid_message());

  // The answer to the ping echoes its payload, unmasked.
  const ws::control_frame_bytes pong = ws::make_pong("ping-1");
  CHECK(pong.view() == std::string_view("\x8A\x06ping-1", 8));
}

TEST_CASE("websocket: close frames report code and reason and stop the parser", "[websocket]") {
  bytes in = client_frame(0x88, std::string("\x03\xE8") + "bye");
  const bytes after = binary("ignored");
  in.insert(in.end(), after.begin(), after.end());
  const collected c = run(in);
  CHECK_FALSE(c.last.ec);
  CHECK(c.last.consumed == in.size() - after.size());
  REQUIRE(c.controls.size() == 1);
  CHECK(c.controls[0].op == ws::opcode::close);
  CHECK(c.controls[0].code == 1000);
  CHECK(c.payloads[0].substr(2) == "bye");
  CHECK(c.data.empty());

  const collected empty = run(client_frame(0x88, ""));
  REQUIRE(empty.controls.size() == 1);
  CHECK(empty.controls[0].code == ws::close_code::no_status);

  CHECK(error_of(client_frame(0x88, "\x03")) == websocket_errc::invalid_close_payload);
  for (int code : {999, 1004, 1005, 1006, 1015, 1016, 2999, 5000}) {
    CAPTURE(code);
    const std::string payload{static_cast<char>(code >> 8), static_cast<char>(code & 0xFF)};
    CHECK(error_of(client_frame(0x88, payload)) == websocket_errc::invalid_close_payload);
  }
  for (int code : {1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999}) {
    CAPTURE(code);
    const std::string payload{static_cast<char>(code >> 8), static_cast<char>(code & 0xFF)};
    CHECK_FALSE(error_of(client_frame(0x88, payload)));
  }
}

TEST_CASE("websocket: each protocol violation is its own error", "[websocket]") {
  CHECK(error_of(client_frame(0xC2, "x")) == websocket_errc::reserved_bits_set);  // RSV1
  CHECK(error_of(client_frame(0xA2, "x")) == websocket_errc::reserved_bits_set);  // RSV2
  CHECK(error_of(client_frame(0x92, "x")) == websocket_errc::reserved_bits_set);  // RSV3
  for (int op : {3, 4, 5, 6, 7, 11, 12, 13, 14, 15}) {
    CAPTURE(op);
    CHECK(error_of(client_frame(static_cast<std::uint8_t>(0x80 | op), "x")) == websocket_errc::unknown_opcode);
  }
  CHECK(error_of(client_frame(0x82, "x", 0, 0, false)) == websocket_errc::unmasked_frame);
  CHECK(error_of(client_frame(0x82, "x", 1, 16)) == websocket_errc::non_minimal_length);
  CHECK(error_of(client_frame(0x82, pattern(125), 1, 16)) == websocket_errc::non_minimal_length);
  CHECK_FALSE(error_of(client_frame(0x82, pattern(126), 1, 16)));
  CHECK(error_of(client_frame(0x82, "x", 1, 64)) == websocket_errc::non_minimal_length);
  CHECK(error_of(client_frame(0x82, pattern(65535), 1, 64)) == websocket_errc::non_minimal_length);
  CHECK_FALSE(error_of(client_frame(0x82, pattern(65536), 1, 64)));
  CHECK(error_of(bytes{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1}) == websocket_errc::length_top_bit_set);
  CHECK(error_of(client_frame(0x89, pattern(126))) == websocket_errc::control_frame_too_long);
  CHECK_FALSE(error_of(client_frame(0x89, pattern(125))));
  CHECK(error_of(client_frame(0x09, "x")) == websocket_errc::fragmented_control_frame);
  CHECK(error_of(client_frame(0x80, "x")) == websocket_errc::unexpected_continuation);
  CHECK(error_of(client_frame(0x81, "text")) == websocket_errc::text_frame);
  bytes two = client_frame(0x02, "a");
  const bytes again = binary("b");
  two.insert(two.end(), again.begin(), again.end());
  CHECK(error_of(two) == websocket_errc::expected_continuation);
}

TEST_CASE("websocket: errors are sticky and map to close codes", "[websocket]") {
  ws::frame_parser p(1024);
  const bytes bad = client_frame(0xC2, "x");
  std::string out;
  auto ignore = [](const ws::control_frame&) {};
  const auto r = p.feed_into(bad.data(), bad.size(), out, ignore);
  REQUIRE(r.ec == websocket_errc::reserved_bits_set);
  CHECK(r.consumed == 2);  // refused at the first two bytes
  const bytes good = binary("fine");
  const auto r2 = p.feed_into(good.data(), good.size(), out, ignore);
  CHECK(r2.ec == websocket_errc::reserved_bits_set);
  CHECK(r2.consumed == 0);
  CHECK(p.error() == websocket_errc::reserved_bits_set);
  CHECK(out.empty());

  CHECK(ws::close_code_for(websocket_errc::message_too_big) == 1009);
  CHECK(ws::close_code_for(websocket_errc::text_frame) == 1003);
  CHECK(ws::close_code_for(websocket_errc::unmasked_frame) == 1002);
  CHECK(ws::close_code_for(websocket_errc::length_top_bit_set) == 1002);
  CHECK(ws::close_code_for(std::make_error_code(std::errc::io_error)) == 1011);
  CHECK(std::string(mqttbroker::websocket_category().name()) == "mqttbroker.websocket");
  for (int e = 1; e <= static_cast<int>(websocket_errc::invalid_close_payload); ++e)
    CHECK(mqttbroker::websocket_category().message(e) != "unknown WebSocket error");
}

TEST_CASE("websocket: the size bound refuses frames and messages before allocating", "[websocket]") {
  // A frame claiming 2^62 bytes: refused at its header; the output was never sized by it.
  bytes huge{0x82, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 'x'};
  ws::frame_parser p(1u << 20);
  std::string out;
  const auto r = p.feed_into(huge.data(), huge.size(), out, [](const ws::control_frame&) {});
  CHECK(r.ec == websocket_errc::message_too_big);
  CHECK(r.consumed == 10);  // refused at the length, before the mask key
  CHECK(out.capacity() < 64);  // the small-string buffer: nothing allocated

  // The limit itself passes; one more byte does not.
  CHECK_FALSE(run(binary(pattern(1000)), 0, 1000).last.ec);
  CHECK(run(binary(pattern(1001)), 0, 1000).last.ec == websocket_errc::message_too_big);
  // A message counts all its fragments.
  bytes frags = client_frame(0x02, pattern(600));
  const bytes last = client_frame(0x80, pattern(401));
  frags.insert(frags.end(), last.begin(), last.end());
  const collected c = run(frags, 0, 1000);
  CHECK(c.last.ec == websocket_errc::message_too_big);
  CHECK(c.data.size() == 600);
  // ... and a finished message does not count against the next one.
  bytes two = binary(pattern(1000));
  const bytes second = binary(pattern(1000));
  two.insert(two.end(), second.begin(), second.end());
  CHECK(run(two, 0, 1000).data.size() == 2000);
}

TEST_CASE("websocket: server frames: headers, pong and close", "[websocket]") {
  CHECK(ws::make_binary_header(0).view() == std::string_view("\x82\x00", 2));
  CHECK(ws::make_binary_header(125).view() == std::string_view("\x82\x7D", 2));
  CHECK(ws::make_binary_header(126).view() == std::string_view("\x82\x7E\x00\x7E", 4));
  CHECK(ws::make_binary_header(65535).view() == std::string_view("\x82\x7E\xFF\xFF", 4));
  CHECK(ws::make_binary_header(65536).view() == std::string_view("\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00", 10));
  CHECK(ws::make_close(1002).view() == std::string_view("\x88\x02\x03\xEA", 4));
  CHECK(ws::make_close(1009, "too big").view() == std::string_view("\x88\x09\x03\xF1too big", 11));
  CHECK(ws::make_close(1000, std::string(200, 'r')).size == 127);  // reason cut to fit 125 bytes
  CHECK(ws::make_pong("").view() == std::string_view("\x8A\x00", 2));
  CHECK(ws::make_pong(std::string(200, 'p')).size == 127);
}
