// Uses the package's parts on OpenSSL for real. websocket: a broker listening on ws:// (a loopback
// port the system picks), which a raw TCP client upgrades (the accept key it checks is libcrypto's
// SHA-1) and then sends CONNECT and a QoS 0 PUBLISH in one masked binary frame; the CONNACK must
// come back in a frame and an in-process subscriber must get the message. tls: a TLS and a wss
// listener without a certificate must be refused (libssl was asked). auth: SCRAM-SHA-256
// credentials are derived (libcrypto's PBKDF2). Exits 0 only when all of that happened.
#include "loopback.hpp"

#include <mqttbroker/mqttbroker.hpp>
#include <mqttbroker/auth/scram.hpp>
#include <mqttbroker/transport/tls.hpp>
#include <mqttbroker/transport/websocket.hpp>
#include <mqttbroker/transport/websocket_tls.hpp>

#include <asio.hpp>
#include <fmt/format.h>

#include <array>
#include <cstdio>
#include <string>
#include <system_error>

namespace transport = mqttbroker::transport;

int main() {
  loopback run;
  transport::ws::listen_options ws;  // path /mqtt
  ws.address = "127.0.0.1";
  ws.port = 0;
  run.broker.listen<transport::ws>(ws);

  std::error_code tls_ec;
  transport::tls::listen_options tls;
  tls.port = 0;
  run.broker.listen<transport::tls>(tls, tls_ec);
  std::error_code wss_ec;
  transport::wss::listen_options wss;
  wss.port = 0;
  run.broker.listen<transport::wss>(wss, wss_ec);

  mqttbroker::auth::scram_credentials credentials;
  const std::error_code scram_ec = mqttbroker::auth::derive_scram_credentials("pencil", "salt", 4096, credentials);

  run.start();

  // RFC 6455's example key, whose accept key the RFC gives.
  static const std::string upgrade =
      "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
      "Sec-WebSocket-Protocol: mqtt\r\n\r\n";
  // MQTT 3.1.1 CONNECT (clean session, Keep Alive 30 s, client id "w"), then PUBLISH QoS 0 of
  // "over websocket" to packaging/ws: 45 bytes, one binary frame (FIN, opcode 2) masked with
  // 1, 2, 3, 4, as a client's frames must be.
  static const unsigned char packets[] = {
      0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 30, 0, 1, 'w',
      0x30, 28, 0, 12, 'p', 'a', 'c', 'k', 'a', 'g', 'i', 'n', 'g', '/', 'w', 's',
      'o', 'v', 'e', 'r', ' ', 'w', 'e', 'b', 's', 'o', 'c', 'k', 'e', 't'};
  static const unsigned char mask[] = {1, 2, 3, 4};
  std::array<unsigned char, 2 + 4 + sizeof packets> frame{};
  frame[0] = 0x82;
  static_assert(sizeof packets < 126, "one byte of payload length");
  frame[1] = static_cast<unsigned char>(0x80 | sizeof packets);
  for (std::size_t i = 0; i < 4; ++i) frame[2 + i] = mask[i];
  for (std::size_t i = 0; i < sizeof packets; ++i) frame[6 + i] = static_cast<unsigned char>(packets[i] ^ mask[i % 4]);

  std::string response;
  std::array<unsigned char, 6> connack{};
  bool upgraded = false;
  run.client.async_connect(run.server(0), [&](std::error_code ec) {
    if (ec) return run.finish();
    asio::async_write(run.client, asio::buffer(upgrade), [&](std::error_code wec, std::size_t) {
      if (wec) return run.finish();
      asio::async_read_until(run.client, asio::dynamic_buffer(response), "\r\n\r\n", [&](std::error_code rec, std::size_t n) {
        // 101, and the accept key of RFC 6455's example; the server sends nothing more before the
        // CONNECT, so the response is all there is.
        upgraded = !rec && n == response.size() && response.rfind("HTTP/1.1 101 ", 0) == 0 &&
                   response.find("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != std::string::npos;
        if (!upgraded) return run.finish();
        asio::async_write(run.client, asio::buffer(frame), [&](std::error_code fwec, std::size_t) {
          if (fwec) return run.finish();
          asio::async_read(run.client, asio::buffer(connack), [&](std::error_code crec, std::size_t) {
            // A binary frame of 4 bytes, unmasked: CONNACK accepting the client.
            run.connack(!crec && connack == std::array<unsigned char, 6>{0x82, 4, 0x20, 2, 0, 0});
          });
        });
      });
    });
  });
  run.io.run();

  const std::string report = fmt::format(
      "mqttbroker {}.{}.{} from the package, on OpenSSL: ws upgrade {}, CONNACK {}, in-process subscriber got "
      "'{}'; tls and wss listeners without a certificate {}; SCRAM-SHA-256 credentials {}",
      MQTTBROKER_VERSION_MAJOR, MQTTBROKER_VERSION_MINOR, MQTTBROKER_VERSION_PATCH,
      upgraded ? "accepted" : "missing or refused", run.accepted ? "accepted" : "missing or refused", run.received,
      tls_ec && wss_ec ? "refused" : "NOT REFUSED", scram_ec ? "NOT DERIVED: " + scram_ec.message() : "derived");
  std::puts(report.c_str());
  return upgraded && run.accepted && run.received == "over websocket" && tls_ec && wss_ec && !scram_ec ? 0 : 1;
}
