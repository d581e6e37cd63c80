#ifndef MQTTBROKER_CLIENT_TLS_HPP
#define MQTTBROKER_CLIENT_TLS_HPP

// TLS for client::client (and so for bridges): a Connector over asio::ssl and OpenSSL (target
// mqttbroker::tls). The server's certificate is verified against a CA file or folder and its name
// (DNS name or IP address in its subjectAltName) against the host connected to; a client
// certificate and key are offered when given. Mosquitto's bridge_cafile, bridge_capath,
// bridge_certfile, bridge_keyfile, bridge_insecure and bridge_tls_version map onto tls_options.

#include <mqttbroker/client/client.hpp>
#include <mqttbroker/config.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/ip/address.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl.hpp>
#include <openssl/ssl.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

MQTTBROKER_BEGIN_NAMESPACE
namespace client {

struct tls_options {
  std::string ca_file;           // PEM; with ca_path empty too, the system's default CAs
  std::string ca_path;           // a folder of hashed CA certificates
  std::string certificate_file;  // the client's chain (PEM), when the server asks for one
  std::string private_key_file;
  /// No check of the server's name against its certificate (bridge_insecure): for tests only.
  bool insecure = false;
  bool tls13_only = false;  // bridge_tls_version tlsv1.3; otherwise 1.2 or later
};

class tls_connector {
 public:
  using stream_type = asio::ssl::stream<asio::ip::tcp::socket>;

  /// Reads the files now: throws std::system_error naming the one that cannot be used.
  explicit tls_connector(const tls_options& o)
      : ctx_(std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client)), insecure_(o.insecure) {
    auto check = [](std::error_code ec, const std::string& what) {
      if (ec) throw std::system_error(ec, "mqttbroker: TLS client: " + what);
    };
    std::error_code ec;
    ctx_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_compression);
    if (SSL_CTX_set_min_proto_version(ctx_->native_handle(), o.tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION) != 1)
      throw std::runtime_error("mqttbroker: TLS client: cannot set the lowest TLS version");
    if (!o.ca_file.empty()) {
      ctx_->load_verify_file(o.ca_file, ec);
      check(ec, "CA file '" + o.ca_file + "'");
    }
    if (!o.ca_path.empty()) {
      ctx_->add_verify_path(o.ca_path, ec);
      check(ec, "CA folder '" + o.ca_path + "'");
    }
    if (o.ca_file.empty() && o.ca_path.empty()) {
      ctx_->set_default_verify_paths(ec);
      check(ec, "the system's CA certificates");
    }
    if (!o.certificate_file.empty()) {
      ctx_->use_certificate_chain_file(o.certificate_file, ec);
      check(ec, "certificate file '" + o.certificate_file + "'");
      ctx_->use_private_key_file(o.private_key_file, asio::ssl::context::pem, ec);
      check(ec, "key file '" + o.private_key_file + "'");
    }
    ctx_->set_verify_mode(asio::ssl::verify_peer);
  }

  stream_type make_stream(const asio::any_io_executor& ex) const { return stream_type(ex, *ctx_); }

  /// TCP, then the TLS handshake.
  template <class Handler>
  void async_connect(const std::shared_ptr<stream_type>& s, const address& a, Handler&& h) const {
    detail::tcp_dial(s, s->next_layer(), a,
                     [s, host = a.host, insecure = insecure_, h = std::forward<Handler>(h)](std::error_code ec) mutable {
                       if (ec) return h(ec);
                       // SNI for a name (never for an address literal, RFC 6066), and the name or
                       // address the certificate must carry.
                       std::error_code not_an_address;
                       (void)asio::ip::make_address(host, not_an_address);
                       if (not_an_address) SSL_set_tlsext_host_name(s->native_handle(), host.c_str());
                       if (!insecure) s->set_verify_callback(asio::ssl::host_name_verification(host));
                       s->async_handshake(asio::ssl::stream_base::client,
                                          [s, h = std::move(h)](std::error_code e) mutable { h(e); });
                     });
  }
  /// No close_notify: the peer sees the TCP close, as after a DISCONNECT it expects one.
  static void close(stream_type& s) noexcept { tcp_connector::close(s.next_layer()); }

 private:
  std::shared_ptr<asio::ssl::context> ctx_;  // shared by every stream made from it
  bool insecure_;
};

}  // namespace client
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CLIENT_TLS_HPP
