// The installed tls component: its header beside the core's, its target bringing OpenSSL's libssl.
#include <mqttbroker/mqttbroker.hpp>
#include <mqttbroker/transport/tls.hpp>

int main() {
  asio::io_context io;
  mqttbroker::broker<> b(io);
  mqttbroker::transport::tls::listen_options o;  // no certificate: listen() must refuse it
  o.port = 0;
  std::error_code ec;
  b.listen<mqttbroker::transport::tls>(o, ec);
  return ec ? 0 : 1;
}
