#include <mqttbroker/transport/websocket/frame.hpp>
#include <mqttbroker/transport/websocket/handshake.hpp>
#include <mqttbroker/transport/websocket_tls.hpp>
#include <mqttbroker/broker.hpp>
#include <mqttbroker/codec.hpp>

#include "catch.hpp"
#include "loopback.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/ssl.hpp>
#include <asio/write.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
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
  for (std::size_t chunk : {1u, 2u, 3u, 7u, 19u, 125u, 1000u, 4096u}) {
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

// ---- the opening handshake (RFC 6455 §4.2), sans-I/O

namespace {

/// A browser-like upgrade request; `extra` lines (each ending in \r\n) go before the blank line.
std::string upgrade_request(const std::string& extra = "", const std::string& target = "/mqtt",
                            const std::string& key = "dGhlIHNhbXBsZSBub25jZQ==") {
  return "GET " + target + " HTTP/1.1\r\nHost: broker.example:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
         "Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n" + extra +
         "\r\n";
}

/// The request with one header line replaced (or removed, for an empty replacement).
std::string with_line(const std::string& request, const std::string& old_line, const std::string& new_line) {
  std::string r = request;
  const auto at = r.find(old_line + "\r\n");
  REQUIRE(at != std::string::npos);
  r.replace(at, old_line.size() + 2, new_line.empty() ? "" : new_line + "\r\n");
  return r;
}

std::string status_line(const std::string& response) { return response.substr(0, response.find("\r\n")); }

}  // namespace

TEST_CASE("websocket upgrade: Sec-WebSocket-Accept is base64(SHA-1(key + GUID)) (RFC 6455 §1.3 example)",
          "[websocket]") {
  CHECK(ws::accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST_CASE("websocket upgrade: a valid request gets 101 with the accept key and subprotocol mqtt [MQTT-6.0.0-4]",
          "[websocket]") {
  const ws::upgrade_options o;
  auto a = ws::answer_upgrade(upgrade_request(), o);
  REQUIRE_FALSE(a.ec);
  CHECK(status_line(a.response) == "HTTP/1.1 101 Switching Protocols");
  CHECK(a.response.find("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != std::string::npos);
  CHECK(a.response.find("\r\nSec-WebSocket-Protocol: mqtt\r\n") != std::string::npos);
  CHECK(a.response.find("\r\nUpgrade: websocket\r\n") != std::string::npos);
  CHECK(a.response.size() >= 4);
  CHECK(a.response.substr(a.response.size() - 4) == "\r\n\r\n");

  // Names are case-insensitive, lists are lists, and a query string does not change the path.
  std::string r = "get /mqtt?client=1 HTTP/1.1\r\n";
  r = upgrade_request("", "/mqtt?client=1");
  r = with_line(r, "Connection: Upgrade", "connection: keep-alive, Upgrade");
  r = with_line(r, "Upgrade: websocket", "UPGRADE: WebSocket");
  r = with_line(r, "Sec-WebSocket-Protocol: mqtt", "sec-websocket-protocol: wamp");
  r = with_line(r, "Host: broker.example:8080", "Host: b\r\nSec-WebSocket-Protocol: mqttv3.1 , mqtt");
  a = ws::answer_upgrade(r, o);
  REQUIRE_FALSE(a.ec);
  CHECK(a.response.find("\r\nSec-WebSocket-Protocol: mqtt\r\n") != std::string::npos);

  // MQTT 3.1's subprotocol name is chosen when it is the only one offered; none offered: no header.
  a = ws::answer_upgrade(with_line(upgrade_request(), "Sec-WebSocket-Protocol: mqtt", "Sec-WebSocket-Protocol: mqttv3.1"), o);
  REQUIRE_FALSE(a.ec);
  CHECK(a.response.find("\r\nSec-WebSocket-Protocol: mqttv3.1\r\n") != std::string::npos);
  a = ws::answer_upgrade(with_line(upgrade_request(), "Sec-WebSocket-Protocol: mqtt", ""), o);
  REQUIRE_FALSE(a.ec);
  CHECK(a.response.find("Sec-WebSocket-Protocol") == std::string::npos);

  // An empty path option accepts any path.
  ws::upgrade_options any;
  any.path.clear();
  CHECK_FALSE(ws::answer_upgrade(upgrade_request("", "/"), any).ec);
  CHECK_FALSE(ws::answer_upgrade(upgrade_request("", "/ws/x"), any).ec);
}

TEST_CASE("websocket upgrade: each bad request gets its own status and error", "[websocket]") {
  const ws::upgrade_options o;
  const std::string good = upgrade_request();
  struct bad {
    std::string request;
    websocket_errc e;
    std::string status;
  };
  std::string folded = good;
  folded.insert(folded.find("Upgrade:"), "X-Long: a\r\n b\r\n");
  std::string post = good;
  post.replace(0, 3, "POST");
  const std::vector<bad> cases{
      {post, websocket_errc::upgrade_not_get, "HTTP/1.1 405 Method Not Allowed"},
      {with_line(good, "Upgrade: websocket", ""), websocket_errc::upgrade_not_websocket, "HTTP/1.1 426 Upgrade Required"},
      {with_line(good, "Connection: Upgrade", "Connection: keep-alive"), websocket_errc::upgrade_not_websocket,
       "HTTP/1.1 426 Upgrade Required"},
      {with_line(good, "Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"), websocket_errc::upgrade_unsupported_version,
       "HTTP/1.1 426 Upgrade Required"},
      {upgrade_request("", "/mqtt", "c2hvcnQ="), websocket_errc::upgrade_bad_key, "HTTP/1.1 400 Bad Request"},
      {upgrade_request("", "/mqtt", "dGhlIHNhbXBsZSBub25jZQ=!"), websocket_errc::upgrade_bad_key, "HTTP/1.1 400 Bad Request"},
      {upgrade_request("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"), websocket_errc::upgrade_bad_key,
       "HTTP/1.1 400 Bad Request"},
      {upgrade_request("", "/other"), websocket_errc::upgrade_wrong_path, "HTTP/1.1 404 Not Found"},
      {with_line(good, "Sec-WebSocket-Protocol: mqtt", "Sec-WebSocket-Protocol: wamp, graphql-ws"),
       websocket_errc::upgrade_no_mqtt_subprotocol, "HTTP/1.1 400 Bad Request"},
      {with_line(good, "Host: broker.example:8080", ""), websocket_errc::upgrade_malformed, "HTTP/1.1 400 Bad Request"},
      {"GET /mqtt HTTP/1.0\r\n" + good.substr(good.find("\r\n") + 2), websocket_errc::upgrade_malformed,
       "HTTP/1.1 400 Bad Request"},
      {folded, websocket_errc::upgrade_malformed, "HTTP/1.1 400 Bad Request"},
      {upgrade_request("X-Bad: a\x01z\r\n"), websocket_errc::upgrade_malformed, "HTTP/1.1 400 Bad Request"},
      {upgrade_request("Bad Name: x\r\n"), websocket_errc::upgrade_malformed, "HTTP/1.1 400 Bad Request"},
      {upgrade_request("", "mqtt"), websocket_errc::upgrade_malformed, "HTTP/1.1 400 Bad Request"},
      {good + "GET / HTTP/1.1\r\n\r\n", websocket_errc::upgrade_malformed, "HTTP/1.1 400 Bad Request"},
      {upgrade_request("X-Filler: " + std::string(9000, 'a') + "\r\n"), websocket_errc::upgrade_too_large,
       "HTTP/1.1 431 Request Header Fields Too Large"},
  };
  for (const auto& c : cases) {
    INFO(c.request.substr(0, 200));
    const auto a = ws::answer_upgrade(c.request, o);
    CHECK(a.ec == c.e);
    CHECK(status_line(a.response) == c.status);
    CHECK(a.response.find("\r\nConnection: close\r\n") != std::string::npos);
    CHECK(a.response.find("Sec-WebSocket-Accept") == std::string::npos);
  }
  // 426 names the version we speak (§4.4).
  CHECK(ws::answer_upgrade(cases[3].request, o).response.find("\r\nSec-WebSocket-Version: 13\r\n") != std::string::npos);
}

TEST_CASE("websocket upgrade: the Origin check", "[websocket]") {
  ws::upgrade_options o;
  o.allowed_origins = {"https://app.example"};
  CHECK_FALSE(ws::answer_upgrade(upgrade_request("Origin: https://APP.example\r\n"), o).ec);
  const auto refused = ws::answer_upgrade(upgrade_request("Origin: https://evil.example\r\n"), o);
  CHECK(refused.ec == websocket_errc::upgrade_origin_refused);
  CHECK(status_line(refused.response) == "HTTP/1.1 403 Forbidden");
  // Without Origin (not a browser): allowed unless the listener says otherwise.
  CHECK_FALSE(ws::answer_upgrade(upgrade_request(), o).ec);
  o.allow_missing_origin = false;
  CHECK(ws::answer_upgrade(upgrade_request(), o).ec == websocket_errc::upgrade_origin_refused);
  // No list: every origin.
  CHECK_FALSE(ws::answer_upgrade(upgrade_request("Origin: https://evil.example\r\n"), ws::upgrade_options{}).ec);
}

TEST_CASE("websocket upgrade: the request's end is found across chunks; only GET can start one", "[websocket]") {
  const std::string r = upgrade_request() + "tail";
  std::size_t searched = 0, end = 0;
  for (std::size_t n = 1; n <= r.size() && end == 0; ++n) {
    end = ws::find_request_end(std::string_view(r).substr(0, n), searched);
    searched = n;
  }
  CHECK(end == r.size() - 4);
  CHECK(ws::could_be_get(""));
  CHECK(ws::could_be_get("GE"));
  CHECK(ws::could_be_get("GET /"));
  CHECK_FALSE(ws::could_be_get("\x10\x0c"));  // an MQTT CONNECT
  CHECK_FALSE(ws::could_be_get("\x16\x03\x01"));  // a TLS ClientHello
  CHECK_FALSE(ws::could_be_get("GETX"));
}

// Both read as TCP does (a readability wait, then the thread's buffer), so the cases below run
// the broker's WebSocket reads through websocket_stream::async_wait and read_some.
static_assert(mqttbroker::transport::has_readability_wait_v<mqttbroker::transport::ws>);
static_assert(mqttbroker::transport::has_readability_wait_v<mqttbroker::transport::wss>);

// ---- ws:// and wss:// through a broker, over loopback. The broker and the test's clients share
// one io_context on the test's thread; every wait has a deadline.

namespace {

namespace mb = mqttbroker;
namespace codec = mqttbroker::codec;
using namespace std::chrono_literals;
using test_support::certs;
using test_support::run_until;

/// A frame as the server sent it.
struct server_frame {
  std::uint8_t first = 0;  // FIN, RSV and opcode
  std::string payload;
  std::uint8_t op() const { return first & 0x0F; }
  std::uint16_t close_code() const {
    if (payload.size() < 2) return 0;
    return static_cast<std::uint16_t>((static_cast<unsigned>(static_cast<std::uint8_t>(payload[0])) << 8) |
                                      static_cast<std::uint8_t>(payload[1]));
  }
};

std::string as_string(const bytes& b) { return std::string(b.begin(), b.end()); }

template <class Packet>
std::string encoded(const Packet& p, codec::protocol_version v = codec::protocol_version::v3_1_1) {
  std::string out;
  REQUIRE_FALSE(codec::encode(p, v, out));
  return out;
}

std::string connect_packet(const std::string& id, codec::protocol_version v = codec::protocol_version::v3_1_1) {
  codec::connect c;
  c.version = v;
  c.client_id = id;
  c.clean_start = true;
  c.keep_alive = 60;
  return encoded(c, v);
}
std::string subscribe_packet(const std::string& filter, std::uint16_t id = 1) {
  codec::subscribe s;
  s.packet_id = id;
  s.entries.push_back(codec::subscribe_entry{filter, codec::subscribe_options{}});
  return encoded(s);
}
std::string publish_packet(const std::string& topic, const std::string& payload) {
  codec::publish p;
  p.topic = topic;
  p.payload = payload;
  return encoded(p);
}
const std::string connack_ok("\x20\x02\x00\x00", 4);
const std::string suback_q0("\x90\x03\x00\x01\x00", 5);

/// A WebSocket client over `Stream` (a TCP socket, or a TLS stream over one), raw enough to send
/// what a real client never would.
template <class Stream>
class ws_client {
 public:
  ws_client(asio::io_context& io, Stream s) : io_(io), s_(std::forward<Stream>(s)) {}

  Stream& stream() { return s_; }

  void write_raw(const std::string& b) {
    std::optional<std::error_code> r;
    asio::async_write(s_, asio::buffer(b), [&](std::error_code ec, std::size_t) { r = ec; });
    REQUIRE(run_until(io_, [&] { return r.has_value(); }));
    REQUIRE_FALSE(*r);
  }

  /// Reads more into the input; false at the end of the stream (or an error) or the deadline.
  bool read_more(std::chrono::milliseconds limit = 10s) {
    char buf[4096];
    std::optional<std::error_code> r;
    std::size_t got = 0;
    s_.async_read_some(asio::buffer(buf), [&](std::error_code ec, std::size_t n) {
      r = ec;
      got = n;
    });
    if (!run_until(io_, [&] { return r.has_value(); }, limit)) {
      s_.lowest_layer().cancel();
      run_until(io_, [&] { return r.has_value(); });
      timed_out_ = true;
      return false;
    }
    in_.append(buf, got);
    if (*r) ended_ = true;
    return !*r;
  }

  /// Sends the upgrade request and returns the response's head (through its blank line).
  std::string upgrade(const std::string& request = upgrade_request()) {
    write_raw(request);
    return response_head();
  }
  std::string response_head() {
    std::size_t end;
    while ((end = in_.find("\r\n\r\n")) == std::string::npos)
      if (!read_more()) return in_;
    std::string head = in_.substr(0, end + 4);
    in_.erase(0, end + 4);
    return head;
  }

  /// One masked binary frame (FIN) carrying `payload`.
  void send_binary(const std::string& payload) { write_raw(as_string(client_frame(0x82, payload))); }

  /// The next frame, or nothing when the stream ended or the deadline passed first.
  std::optional<server_frame> read_frame(std::chrono::milliseconds limit = 10s) {
    for (;;) {
      if (auto f = take_frame()) return f;
      if (!read_more(limit)) return take_frame();
    }
  }

  /// The next MQTT bytes from binary frames: exactly `n` of them, or nothing.
  std::optional<std::string> read_mqtt(std::size_t n) {
    while (mqtt_.size() < n) {
      auto f = read_frame();
      if (!f) return std::nullopt;
      if (f->op() != 0x2 && f->op() != 0x0) return std::nullopt;
      mqtt_ += f->payload;
    }
    std::string out = mqtt_.substr(0, n);
    mqtt_.erase(0, n);
    return out;
  }

  /// Whether the server closed the connection (EOF) within the deadline; frames before it are
  /// kept in frames_seen (unless `frames` is false: the input is then left as it came, an HTTP
  /// response).
  bool ends_within(std::chrono::milliseconds limit, bool frames = true) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!ended_) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left <= 0ms) return false;
      if (!read_more(left) && timed_out_) return false;
    }
    while (frames)
      if (auto f = take_frame())
        frames_seen.push_back(*f);
      else
        break;
    return true;
  }
  std::vector<server_frame> frames_seen;
  std::string& input() { return in_; }

 private:
  std::optional<server_frame> take_frame() {
    if (in_.size() < 2) return std::nullopt;
    const auto b1 = static_cast<std::uint8_t>(in_[1]);
    REQUIRE((b1 & 0x80) == 0);  // server frames are never masked (§5.1)
    std::size_t header = 2;
    std::uint64_t n = b1 & 0x7F;
    if (n == 126) {
      if (in_.size() < 4) return std::nullopt;
      n = (std::uint64_t{static_cast<std::uint8_t>(in_[2])} << 8) | static_cast<std::uint8_t>(in_[3]);
      header = 4;
    } else if (n == 127) {
      if (in_.size() < 10) return std::nullopt;
      n = 0;
      for (std::size_t i = 2; i < 10; ++i) n = (n << 8) | static_cast<std::uint8_t>(in_[i]);
      header = 10;
    }
    if (in_.size() < header + n) return std::nullopt;
    server_frame f{static_cast<std::uint8_t>(in_[0]), in_.substr(header, n)};
    in_.erase(0, header + n);
    return f;
  }

  asio::io_context& io_;
  Stream s_;
  std::string in_, mqtt_;
  bool ended_ = false, timed_out_ = false;
};

using tcp_socket = asio::ip::tcp::socket;
using tls_socket = asio::ssl::stream<asio::ip::tcp::socket>;

tcp_socket connected(asio::io_context& io, std::uint16_t port) {
  tcp_socket s(io);
  s.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  s.set_option(asio::ip::tcp::no_delay(true));
  return s;
}

/// A broker with a TCP listener (index 0) and a ws listener (index 1) on the test's io_context.
struct ws_fixture {
  asio::io_context io;
  std::unique_ptr<mb::broker<>> broker;
  std::vector<std::string> received;  // payloads published to t/#

  explicit ws_fixture(mb::transport::ws::listen_options wo = {}, mb::broker_options bo = {}) {
    bo.log_level = mb::log_level::error;
    broker = std::make_unique<mb::broker<>>(io, bo);
    mb::transport::tcp::listen_options to;
    to.address = "127.0.0.1";
    to.port = 0;
    broker->listen(to);
    wo.address = "127.0.0.1";
    wo.port = 0;
    broker->listen<mb::transport::ws>(wo);
    broker->subscribe("t/#", [this](const mb::message_ptr& m) { received.emplace_back(m->payload()); });
    broker->start();
  }
  ~ws_fixture() {
    bool stopped = false;
    broker->async_stop([&](std::error_code) { stopped = true; });
    run_until(io, [&] { return stopped; });
  }
  std::uint16_t tcp_port() const { return broker->local_port(0); }
  std::uint16_t ws_port() const { return broker->local_port(1); }
  ws_client<tcp_socket> client() { return ws_client<tcp_socket>(io, connected(io, ws_port())); }
  /// A client upgraded and connected as `id`.
  ws_client<tcp_socket> mqtt_client(const std::string& id) {
    auto c = client();
    REQUIRE(status_line(c.upgrade()) == "HTTP/1.1 101 Switching Protocols");
    c.send_binary(connect_packet(id));
    REQUIRE(c.read_mqtt(4) == connack_ok);
    return c;
  }
};

}  // namespace

TEST_CASE("websocket: MQTT over ws:// to and from a TCP client of the same broker", "[websocket]") {
  ws_fixture f;
  CHECK(f.broker->listener_info(1).transport == "ws");
  auto c = f.client();
  const std::string head = c.upgrade();
  CHECK(status_line(head) == "HTTP/1.1 101 Switching Protocols");
  CHECK(head.find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != std::string::npos);
  CHECK(head.find("Sec-WebSocket-Protocol: mqtt") != std::string::npos);
  c.send_binary(connect_packet("ws-1"));
  auto first = c.read_frame();
  REQUIRE(first);
  CHECK(first->first == 0x82);  // the server's data go in binary frames [MQTT-6.0.0-1]
  CHECK(first->payload == connack_ok);
  c.send_binary(subscribe_packet("w/#"));
  REQUIRE(c.read_mqtt(5) == suback_q0);

  // From TCP to the WebSocket subscriber, a payload long enough for the 16-bit length form.
  const std::string big(300, 'x');
  {
    ws_client<tcp_socket> plain(f.io, connected(f.io, f.tcp_port()));
    plain.write_raw(connect_packet("tcp-1"));
    // The TCP client's bytes are not frames: read the CONNACK raw.
    while (plain.input().size() < 4) REQUIRE(plain.read_more());
    CHECK(plain.input().substr(0, 4) == connack_ok);
    plain.write_raw(publish_packet("w/1", big));
  }
  const std::string expected = publish_packet("w/1", big);
  auto got = c.read_mqtt(expected.size());
  REQUIRE(got);
  CHECK(*got == expected);

  // From the WebSocket client to the broker.
  c.send_binary(publish_packet("t/ws", "from ws"));
  REQUIRE(run_until(f.io, [&] { return !f.received.empty(); }));
  CHECK(f.received == std::vector<std::string>{"from ws"});
}

TEST_CASE("websocket: packets split across frames and several packets in one frame [MQTT-6.0.0-2]", "[websocket]") {
  ws_fixture f;
  auto c = f.client();
  REQUIRE(status_line(c.upgrade()) == "HTTP/1.1 101 Switching Protocols");
  // CONNECT in a fragmented message of three frames, a ping between the fragments.
  const std::string connect = connect_packet("split");
  c.write_raw(as_string(client_frame(0x02, connect.substr(0, 3))));
  c.write_raw(as_string(client_frame(0x89, "hi")));
  c.write_raw(as_string(client_frame(0x00, connect.substr(3, 5))));
  c.write_raw(as_string(client_frame(0x80, connect.substr(8))));
  auto pong = c.read_frame();
  REQUIRE(pong);
  CHECK(pong->first == 0x8A);
  CHECK(pong->payload == "hi");
  REQUIRE(c.read_mqtt(4) == connack_ok);
  // SUBSCRIBE split over two messages, then three PUBLISHes and a PINGREQ in one frame.
  const std::string sub = subscribe_packet("t/#");
  c.send_binary(sub.substr(0, 4));
  c.send_binary(sub.substr(4));
  REQUIRE(c.read_mqtt(5) == suback_q0);
  c.send_binary(publish_packet("t/1", "a") + publish_packet("t/2", "b") + publish_packet("t/3", "c") +
                std::string("\xC0\x00", 2));
  REQUIRE(run_until(f.io, [&] { return f.received.size() == 3; }));
  CHECK(f.received == std::vector<std::string>{"a", "b", "c"});
  // Our own three come back (subscribed to t/#), then the PINGRESP.
  const std::string back = publish_packet("t/1", "a") + publish_packet("t/2", "b") + publish_packet("t/3", "c");
  CHECK(c.read_mqtt(back.size()) == back);
  CHECK(c.read_mqtt(2) == std::string("\xD0\x00", 2));
}

TEST_CASE("websocket: a batch of many messages reaches a ws subscriber whole and in order", "[websocket]") {
  ws_fixture f;
  auto c = f.mqtt_client("sub");
  c.send_binary(subscribe_packet("m/#"));
  REQUIRE(c.read_mqtt(5) == suback_q0);
  std::string expected;
  for (int i = 0; i < 500; ++i) {
    const std::string payload = std::to_string(i) + std::string(static_cast<std::size_t>(i % 40), '.');
    f.broker->publish("m/" + std::to_string(i % 7), payload);
    expected += publish_packet("m/" + std::to_string(i % 7), payload);
  }
  auto got = c.read_mqtt(expected.size());
  REQUIRE(got);
  CHECK(*got == expected);
}

TEST_CASE("websocket: the client's close frame is answered and the connection ends; the will goes out",
          "[websocket]") {
  ws_fixture f;
  auto c = f.client();
  REQUIRE(status_line(c.upgrade()) == "HTTP/1.1 101 Switching Protocols");
  codec::connect with_will;
  with_will.client_id = "closing";
  with_will.clean_start = true;
  with_will.keep_alive = 60;
  with_will.will = codec::will_message{"t/will", "gone", codec::qos::at_most_once, false, {}};
  c.send_binary(encoded(with_will));
  REQUIRE(c.read_mqtt(4) == connack_ok);
  c.write_raw(as_string(client_frame(0x88, std::string("\x03\xE8", 2) + "bye")));
  REQUIRE(c.ends_within(5s));
  REQUIRE(c.frames_seen.size() == 1);
  CHECK(c.frames_seen[0].first == 0x88);
  CHECK(c.frames_seen[0].close_code() == 1000);
  // A close frame is not an MQTT DISCONNECT: the will is published [MQTT-3.1.2-8].
  REQUIRE(run_until(f.io, [&] { return !f.received.empty(); }));
  CHECK(f.received == std::vector<std::string>{"gone"});
}

TEST_CASE("websocket: broken frames are closed with the status RFC 6455 asks; other clients go on", "[websocket]") {
  mb::broker_options bo;
  bo.max_packet_size = 4096;
  ws_fixture f({}, bo);
  auto bystander = f.mqtt_client("bystander");
  bystander.send_binary(subscribe_packet("t/#"));
  REQUIRE(bystander.read_mqtt(5) == suback_q0);

  struct hostile {
    const char* what;
    std::string bytes;  // sent after CONNECT
    std::uint16_t code;
  };
  // A frame header claiming 2^62 bytes; nothing of it follows.
  std::string huge = "\x82\xFF";
  huge += std::string("\x40\x00\x00\x00\x00\x00\x00\x00", 8) + "abcd";
  std::string over_limit = as_string(client_frame(0x82, std::string(5000, 'x')));
  const std::vector<hostile> cases{
      {"unmasked frame (§5.1)", as_string(client_frame(0x82, publish_packet("t/x", "y"), 0, 0, false)), 1002},
      {"a gigabyte frame", huge, 1009},
      {"a message over the broker's packet limit", over_limit, 1009},
      {"a text frame [MQTT-6.0.0-1]", as_string(client_frame(0x81, "hello")), 1003},
      {"reserved bits", as_string(client_frame(0xC2, "x")), 1002},
      {"unknown opcode", as_string(client_frame(0x83, "x")), 1002},
  };
  for (const auto& h : cases) {
    INFO(h.what);
    auto c = f.mqtt_client("hostile");
    c.write_raw(h.bytes);
    REQUIRE(c.ends_within(5s));
    REQUIRE_FALSE(c.frames_seen.empty());
    CHECK(c.frames_seen.back().first == 0x88);
    CHECK(c.frames_seen.back().close_code() == h.code);
  }
  // The bystander still gets what is published.
  f.broker->publish("t/after", "still here");
  const std::string expected = publish_packet("t/after", "still here");
  CHECK(bystander.read_mqtt(expected.size()) == expected);
}

TEST_CASE("websocket: refused upgrades get their HTTP status and a close; garbage is refused at once",
          "[websocket]") {
  mb::transport::ws::listen_options wo;
  wo.allowed_origins = {"https://app.example"};
  mb::broker_options bo;
  bo.connect_timeout = std::chrono::milliseconds(60'000);  // only an answer ends these before the test does
  ws_fixture f(wo, bo);
  struct refused {
    std::string request;
    std::string status;
  };
  const std::vector<refused> cases{
      {upgrade_request("", "/elsewhere"), "HTTP/1.1 404 Not Found"},
      {upgrade_request("Origin: https://evil.example\r\n"), "HTTP/1.1 403 Forbidden"},
      {std::string("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", 14), "HTTP/1.1 400 Bad Request"},  // MQTT, not HTTP
      {std::string("\x16\x03\x01\x00\xa5\x01\x00\x00", 8), "HTTP/1.1 400 Bad Request"},                  // a ClientHello
      {"GET /mqtt HTTP/1.1\r\nX-Filler: " + std::string(20000, 'a'), "HTTP/1.1 431 Request Header Fields Too Large"},
  };
  for (const auto& r : cases) {
    INFO(r.status);
    auto c = f.client();
    c.write_raw(r.request);
    REQUIRE(c.ends_within(5s, false));
    CHECK(status_line(c.input()) == r.status);
  }
}

TEST_CASE("websocket: an upgrade that never completes is dropped at the CONNECT timeout", "[websocket]") {
  mb::broker_options bo;
  bo.connect_timeout = std::chrono::milliseconds(300);
  ws_fixture f({}, bo);
  auto c = f.client();
  c.write_raw("GET /mqtt HTTP/1.1\r\nHost: x\r\n");  // and nothing more
  REQUIRE(c.ends_within(5s, false));
  CHECK(c.input().empty());  // no answer: the request never ended
}

TEST_CASE("websocket: a 5.0 client gets DISCONNECT then the close frame when the broker stops", "[websocket]") {
  auto f = std::make_unique<ws_fixture>();
  auto c = f->client();
  REQUIRE(status_line(c.upgrade()) == "HTTP/1.1 101 Switching Protocols");
  c.send_binary(connect_packet("v5", codec::protocol_version::v5));
  auto connack = c.read_frame();
  REQUIRE(connack);
  CHECK(static_cast<std::uint8_t>(connack->payload[0]) == 0x20);
  bool stopped = false;
  f->broker->async_stop([&](std::error_code) { stopped = true; });
  REQUIRE(run_until(f->io, [&] { return stopped; }));
  REQUIRE(c.ends_within(5s));
  REQUIRE(c.frames_seen.size() == 2);
  CHECK(c.frames_seen[0].first == 0x82);
  REQUIRE_FALSE(c.frames_seen[0].payload.empty());
  CHECK(static_cast<std::uint8_t>(c.frames_seen[0].payload[0]) == 0xE0);  // DISCONNECT
  CHECK(static_cast<std::uint8_t>(c.frames_seen[0].payload[2]) == 0x8B);  // Server shutting down
  CHECK(c.frames_seen[1].first == 0x88);
  CHECK(c.frames_seen[1].close_code() == 1000);
}

TEST_CASE("websocket: listen() refuses a path without '/' and names it", "[websocket]") {
  asio::io_context io;
  mb::broker<> b(io);
  mb::transport::ws::listen_options wo;
  wo.address = "127.0.0.1";
  wo.port = 0;
  wo.path = "mqtt";
  std::error_code ec;
  std::string what;
  b.listen<mb::transport::ws>(wo, ec, &what);
  CHECK(ec);
  CHECK(what.find("'mqtt'") != std::string::npos);
}

TEST_CASE("websocket: wss:// carries MQTT over TLS, and the client certificate's identity", "[websocket]") {
  asio::io_context io;
  struct identity_hooks {
    std::shared_ptr<std::vector<std::string>> names = std::make_shared<std::vector<std::string>>();
    void on_connect(const mb::hooks::client_info& c) {
      names->push_back(c.username ? std::string(*c.username) : std::string("(none)"));
    }
  };
  struct policies : mb::default_policies {
    using hooks = identity_hooks;
  };
  identity_hooks hooks;
  mb::broker_options bo;
  bo.log_level = mb::log_level::error;
  mb::broker<policies> b(io, bo, hooks);
  mb::transport::wss::listen_options wo;
  wo.address = "127.0.0.1";
  wo.port = 0;
  wo.certificate_chain_file = certs()("server-chain.crt");
  wo.private_key_file = certs()("server.key");
  wo.ca_file = certs()("ca.crt");
  wo.require_certificate = true;
  wo.use_identity_as_username = true;
  b.listen<mb::transport::wss>(wo);
  b.start();
  CHECK(b.listener_info(0).transport == "wss");

  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.load_verify_file(certs()("ca.crt"));
  ctx.set_verify_mode(asio::ssl::verify_peer);
  ctx.use_certificate_file(certs()("alice.crt"), asio::ssl::context::pem);
  ctx.use_private_key_file(certs()("alice.key"), asio::ssl::context::pem);
  tls_socket s(io, ctx);
  s.lowest_layer().connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), b.local_port(0)));
  std::optional<std::error_code> hs;
  s.async_handshake(asio::ssl::stream_base::client, [&](std::error_code ec) { hs = ec; });
  REQUIRE(run_until(io, [&] { return hs.has_value(); }));
  REQUIRE_FALSE(*hs);
  {
    ws_client<tls_socket&> c(io, s);
    REQUIRE(status_line(c.upgrade()) == "HTTP/1.1 101 Switching Protocols");
    c.send_binary(connect_packet("over-wss"));
    REQUIRE(c.read_mqtt(4) == connack_ok);
    c.send_binary(subscribe_packet("s/#"));
    REQUIRE(c.read_mqtt(5) == suback_q0);
    b.publish("s/1", "secure");
    const std::string expected = publish_packet("s/1", "secure");
    CHECK(c.read_mqtt(expected.size()) == expected);
  }
  REQUIRE(hooks.names->size() == 1);
  CHECK((*hooks.names)[0] == "alice");
  bool stopped = false;
  b.async_stop([&](std::error_code) { stopped = true; });
  run_until(io, [&] { return stopped; });
}

TEST_CASE("websocket: frames sent right behind the upgrade request are read", "[websocket]") {
  ws_fixture f;
  auto c = f.client();
  // One write: the request, then CONNECT and SUBSCRIBE without waiting for the 101.
  c.write_raw(upgrade_request() + as_string(client_frame(0x82, connect_packet("eager"))) +
              as_string(client_frame(0x82, subscribe_packet("t/#"))));
  REQUIRE(status_line(c.response_head()) == "HTTP/1.1 101 Switching Protocols");
  REQUIRE(c.read_mqtt(4) == connack_ok);
  CHECK(c.read_mqtt(5) == suback_q0);
}
