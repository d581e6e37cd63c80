// The installed websocket component, with tls beside it for wss: their headers beside the core's,
// their targets bringing OpenSSL's libcrypto and libssl.
#include <mqttbroker/mqttbroker.hpp>
#include <mqttbroker/transport/websocket.hpp>
#include <mqttbroker/transport/websocket_tls.hpp>

int main() {
  asio::io_context io;
  mqttbroker::broker<> b(io);
  mqttbroker::transport::ws::listen_options o;  // a path without '/': listen() must refuse it
  o.port = 0;
  o.path = "mqtt";
  std::error_code ec;
  b.listen<mqttbroker::transport::ws>(o, ec);
  if (!ec) return 1;
  mqttbroker::transport::wss::listen_options s;  // no certificate: refused as well
  s.port = 0;
  ec.clear();
  b.listen<mqttbroker::transport::wss>(s, ec);
  return ec ? 0 : 1;
}
