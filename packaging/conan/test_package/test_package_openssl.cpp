// The components on OpenSSL (with_openssl=True): their headers compile and their targets link
// OpenSSL. websocket: the handshake's accept key for RFC 6455's example, hashed by libcrypto; tls:
// a listener without a certificate, refused after libssl was asked; auth: SCRAM-SHA-256
// credentials derived by libcrypto.
#include <mqttbroker/mqttbroker.hpp>
#include <mqttbroker/auth/scram.hpp>
#include <mqttbroker/transport/tls.hpp>
#include <mqttbroker/transport/websocket.hpp>

#include <cstdio>
#include <system_error>

int main() {
  namespace transport = mqttbroker::transport;
  const bool accept_key =
      transport::websocket::accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

  asio::io_context io;
  mqttbroker::broker<> broker(io);
  transport::tls::listen_options tls;  // no certificate
  tls.port = 0;
  std::error_code ec;
  broker.listen<transport::tls>(tls, ec);
  const bool tls_refused = static_cast<bool>(ec);

  mqttbroker::auth::scram_credentials credentials;
  const bool derived = !mqttbroker::auth::derive_scram_credentials("pencil", "salt", 4096, credentials);

  std::printf("websocket accept key %s, tls listener without certificate %s, scram credentials %s\n",
              accept_key ? "right" : "WRONG", tls_refused ? "refused" : "NOT REFUSED",
              derived ? "derived" : "NOT DERIVED");
  return accept_key && tls_refused && derived ? 0 : 1;
}
