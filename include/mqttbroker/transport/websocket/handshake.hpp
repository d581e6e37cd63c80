#ifndef MQTTBROKER_TRANSPORT_WEBSOCKET_HANDSHAKE_HPP
#define MQTTBROKER_TRANSPORT_WEBSOCKET_HANDSHAKE_HPP

// The server side of WebSocket's opening handshake (RFC 6455 §4.2), sans-I/O: the client's HTTP
// upgrade request in, the HTTP response to write out. No Asio: unit-tested and fuzzed alone. The
// one hash the handshake needs (SHA-1 for Sec-WebSocket-Accept) comes from OpenSSL's libcrypto,
// which is why the WebSocket transport has a CMake target of its own (mqttbroker::websocket).

#include <mqttbroker/config.hpp>
#include <mqttbroker/transport/websocket/frame.hpp>

#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace transport {
namespace websocket {

/// What a listener accepts in an upgrade request.
struct upgrade_options {
  /// The request target's path (before any `?`) that upgrades; empty accepts every path.
  std::string path = "/mqtt";
  /// Origins a browser may connect from (`https://app.example`), compared without regard to case;
  /// empty allows every origin. A request without Origin (not a browser) passes when
  /// allow_missing_origin.
  std::vector<std::string> allowed_origins;
  bool allow_missing_origin = true;
  /// The most bytes of request (line and headers) read before answering 431.
  std::size_t max_request_size = 8 * 1024;
};

/// Where the request in `buffered` ends (just past its blank line), or 0 while it has not ended.
/// `from` is how much of `buffered` an earlier call searched, so each byte is looked at about once.
inline std::size_t find_request_end(std::string_view buffered, std::size_t from = 0) noexcept {
  const std::size_t start = from >= 3 ? from - 3 : 0;
  const std::size_t at = buffered.find("\r\n\r\n", start);
  return at == std::string_view::npos ? 0 : at + 4;
}

/// Whether `buffered` can still become an upgrade request: it starts as "GET " does. A client
/// that sends MQTT or TLS bytes to a WebSocket port is answered at once, not at its deadline.
inline bool could_be_get(std::string_view buffered) noexcept {
  constexpr std::string_view get = "GET ";
  const std::size_t n = buffered.size() < get.size() ? buffered.size() : get.size();
  return buffered.substr(0, n) == get.substr(0, n);
}

/// Sec-WebSocket-Accept for a client's Sec-WebSocket-Key: base64(SHA-1(key + the RFC's GUID)).
inline std::string accept_key(std::string_view client_key) {
  constexpr std::string_view guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string input;
  input.reserve(client_key.size() + guid.size());
  input.append(client_key).append(guid);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_size = 0;
  if (EVP_Digest(input.data(), input.size(), digest, &digest_size, EVP_sha1(), nullptr) != 1) return {};
  unsigned char encoded[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
  const int n = EVP_EncodeBlock(encoded, digest, static_cast<int>(digest_size));
  return std::string(reinterpret_cast<const char*>(encoded), n > 0 ? static_cast<std::size_t>(n) : 0);
}

/// The outcome of an upgrade request: `ec` empty for a 101; `response` the whole HTTP response
/// (status line, headers, blank line) either way.
struct upgrade_answer {
  std::error_code ec;
  std::string response;
};

namespace detail {

constexpr char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

inline bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

inline std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

/// Whether the comma-separated list `value` holds `token` (case-insensitive), as Connection and
/// Sec-WebSocket-Protocol carry theirs.
inline bool list_has(std::string_view value, std::string_view token) noexcept {
  while (!value.empty()) {
    const std::size_t comma = value.find(',');
    if (iequals(trim(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

// RFC 7230 §3.2.6: a header name is a token.
constexpr bool token_char(char c) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

/// A header value holds no control characters but tab (RFC 7230 §3.2: field-content).
inline bool valid_value(std::string_view v) noexcept {
  for (const char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7F) return false;
  }
  return true;
}

/// A Sec-WebSocket-Key is 16 bytes in base64: 22 characters of the alphabet and "==" (§4.2.1).
inline bool valid_key(std::string_view k) noexcept {
  if (k.size() != 24 || k.substr(22) != "==") return false;
  for (std::size_t i = 0; i < 22; ++i) {
    const char c = k[i];
    const bool b64 = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
    if (!b64) return false;
  }
  return true;
}

}  // namespace detail

/// The HTTP error response for a refused upgrade: its status follows `e`, then the connection closes.
inline upgrade_answer refusal(websocket_errc e) {
  upgrade_answer a;
  a.ec = e;
  std::string_view status = "400 Bad Request";
  std::string_view extra;
  switch (e) {
    case websocket_errc::upgrade_not_get:
      status = "405 Method Not Allowed";
      extra = "Allow: GET\r\n";
      break;
    case websocket_errc::upgrade_not_websocket:
      status = "426 Upgrade Required";
      extra = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n";
      break;
    case websocket_errc::upgrade_unsupported_version:
      status = "426 Upgrade Required";
      extra = "Sec-WebSocket-Version: 13\r\n";  // the version we speak (§4.4)
      break;
    case websocket_errc::upgrade_wrong_path: status = "404 Not Found"; break;
    case websocket_errc::upgrade_origin_refused: status = "403 Forbidden"; break;
    case websocket_errc::upgrade_too_large: status = "431 Request Header Fields Too Large"; break;
    default: break;
  }
  a.response.append("HTTP/1.1 ").append(status).append("\r\n").append(extra);
  a.response.append("Connection: close\r\nContent-Length: 0\r\n\r\n");
  return a;
}

/// Judges one complete upgrade request (through its blank line, as find_request_end found it) and
/// makes the response: 101 with Sec-WebSocket-Accept and Sec-WebSocket-Protocol: mqtt, or an
/// error status with the reason in `ec`.
///
/// Subprotocols: `mqtt` is chosen when offered [MQTT-6.0.0-4]; `mqttv3.1` (MQTT 3.1's name, still
/// sent by old browser clients) when only it is; a request offering others only is refused. A
/// request offering none is accepted without the header, as other brokers do for tools that omit it.
inline upgrade_answer answer_upgrade(std::string_view request, const upgrade_options& o) {
  if (request.size() > o.max_request_size) return refusal(websocket_errc::upgrade_too_large);
  // Request line: GET SP request-target SP HTTP/1.1
  const std::size_t line_end = request.find("\r\n");
  if (line_end == std::string_view::npos) return refusal(websocket_errc::upgrade_malformed);
  const std::string_view line = request.substr(0, line_end);
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return refusal(websocket_errc::upgrade_malformed);
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  // HTTP/1.1 or a later 1.x (§4.1); 1.0 has no Upgrade.
  if (version.size() != 8 || version.substr(0, 7) != "HTTP/1." || version[7] < '1' || version[7] > '9')
    return refusal(websocket_errc::upgrade_malformed);
  if (target.empty() || target.front() != '/' || !detail::valid_value(target))
    return refusal(websocket_errc::upgrade_malformed);

  bool upgrade = false, connection_upgrade = false, host = false, has_origin = false, has_protocol = false;
  bool offers_mqtt = false, offers_mqttv31 = false;
  std::string_view key, ws_version, origin;
  int keys = 0;
  std::string_view rest = request.substr(line_end + 2);
  for (;;) {
    const std::size_t end = rest.find("\r\n");
    if (end == std::string_view::npos) return refusal(websocket_errc::upgrade_malformed);
    const std::string_view h = rest.substr(0, end);
    rest.remove_prefix(end + 2);
    if (h.empty()) break;  // the blank line
    const std::size_t colon = h.find(':');
    // No name, a name with spaces or other non-token bytes (obsolete line folding among them).
    if (colon == std::string_view::npos || colon == 0) return refusal(websocket_errc::upgrade_malformed);
    const std::string_view name = h.substr(0, colon);
    for (const char c : name)
      if (!detail::token_char(c)) return refusal(websocket_errc::upgrade_malformed);
    const std::string_view value = detail::trim(h.substr(colon + 1));
    if (!detail::valid_value(value)) return refusal(websocket_errc::upgrade_malformed);
    using detail::iequals;
    if (iequals(name, "Host")) {
      host = true;
    } else if (iequals(name, "Upgrade")) {
      upgrade = upgrade || detail::list_has(value, "websocket");
    } else if (iequals(name, "Connection")) {
      connection_upgrade = connection_upgrade || detail::list_has(value, "upgrade");
    } else if (iequals(name, "Sec-WebSocket-Key")) {
      key = value;
      ++keys;
    } else if (iequals(name, "Sec-WebSocket-Version")) {
      ws_version = value;
    } else if (iequals(name, "Origin")) {
      has_origin = true;
      origin = value;
    } else if (iequals(name, "Sec-WebSocket-Protocol")) {
      // May come as several headers; each is a list.
      has_protocol = true;
      offers_mqtt = offers_mqtt || detail::list_has(value, "mqtt");
      offers_mqttv31 = offers_mqttv31 || detail::list_has(value, "mqttv3.1");
    }
  }
  if (!rest.empty()) return refusal(websocket_errc::upgrade_malformed);  // the caller passes one request
  if (method != "GET") return refusal(websocket_errc::upgrade_not_get);
  if (!host) return refusal(websocket_errc::upgrade_malformed);  // HTTP/1.1 requires Host
  if (!upgrade || !connection_upgrade) return refusal(websocket_errc::upgrade_not_websocket);
  if (ws_version != "13") return refusal(websocket_errc::upgrade_unsupported_version);
  if (keys != 1 || !detail::valid_key(key)) return refusal(websocket_errc::upgrade_bad_key);
  if (!o.path.empty()) {
    const std::size_t q = target.find('?');
    if (target.substr(0, q) != o.path) return refusal(websocket_errc::upgrade_wrong_path);
  }
  if (!o.allowed_origins.empty()) {
    bool allowed = !has_origin && o.allow_missing_origin;
    for (const auto& a : o.allowed_origins) allowed = allowed || (has_origin && detail::iequals(origin, a));
    if (!allowed) return refusal(websocket_errc::upgrade_origin_refused);
  }
  std::string_view subprotocol;
  if (offers_mqtt) {
    subprotocol = "mqtt";
  } else if (offers_mqttv31) {
    subprotocol = "mqttv3.1";
  } else if (has_protocol) {
    return refusal(websocket_errc::upgrade_no_mqtt_subprotocol);
  }
  upgrade_answer a;
  const std::string accept = accept_key(key);
  if (accept.empty()) return refusal(websocket_errc::upgrade_malformed);  // libcrypto failed: nothing to answer with
  a.response.reserve(160);
  a.response.append("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
  a.response.append("Sec-WebSocket-Accept: ").append(accept).append("\r\n");
  if (!subprotocol.empty()) a.response.append("Sec-WebSocket-Protocol: ").append(subprotocol).append("\r\n");
  a.response.append("\r\n");
  return a;
}

}  // namespace websocket
}  // namespace transport
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_TRANSPORT_WEBSOCKET_HANDSHAKE_HPP
