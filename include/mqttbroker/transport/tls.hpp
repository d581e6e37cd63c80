#ifndef MQTTBROKER_TRANSPORT_TLS_HPP
#define MQTTBROKER_TRANSPORT_TLS_HPP

// TLS over TCP (MQTT's port 8883) on asio::ssl and OpenSSL. The one transport header that includes
// OpenSSL: it is behind the CMake target mqttbroker::tls, and nothing else of the library includes
// it, so a program on plain TCP neither includes nor links OpenSSL.

#include <mqttbroker/config.hpp>
#include <mqttbroker/transport/traits.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_allocator.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/bind_allocator.hpp>
#include <asio/bind_executor.hpp>
#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/address.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/socket_base.hpp>
#include <asio/ssl/context.hpp>
#include <asio/ssl/error.hpp>
#include <asio/ssl/stream.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <utility>

MQTTBROKER_BEGIN_NAMESPACE
namespace transport {

/// The lowest TLS version a listener accepts.
enum class tls_version : std::uint8_t { v1_2, v1_3 };

/// What a TLS listener is made of. The files are read by listen() and again by each reload.
struct tls_listen_options {
  std::string address = "0.0.0.0";
  std::uint16_t port = 8883;  // 0 picks a free port (tests)
  int backlog = asio::socket_base::max_listen_connections;
  std::string certificate_chain_file;  // PEM: the server's certificate, then its intermediates
  std::string private_key_file;        // PEM, unencrypted
  std::string ca_file;                 // PEM: the CAs that sign client certificates
  std::string ca_path;                 // a folder of CA files named by hash (`openssl rehash`)
  /// PEM: certificate revocation lists of the client certificates' CAs (Mosquitto's crlfile). A
  /// client certificate they revoke is refused at the handshake; a reload reads them again.
  std::string crl_file;
  /// Refuse a client without a certificate signed by ca_file/ca_path. Without it a certificate a
  /// client offers is still verified (when a CA is set) and refused when it does not verify.
  bool require_certificate = false;
  /// The client certificate's identity (peer_certificate::identity) is the username the hooks
  /// see; the CONNECT's own User Name is ignored. Needs require_certificate.
  bool use_identity_as_username = false;
  tls_version min_version = tls_version::v1_2;
  std::string ciphers;       // TLS 1.2 cipher list, OpenSSL syntax; empty: OpenSSL's default
  std::string ciphersuites;  // TLS 1.3 ciphersuites, OpenSSL syntax; empty: OpenSSL's default
};

namespace detail {

/// One SSL context made from a listener's files, and the listener setting its connections need.
/// Shared by the connections accepted while it was current: a reload makes a new one, and the
/// old one lives as long as its last connection.
struct tls_credentials {
  explicit tls_credentials(bool as_username)
      : context(asio::ssl::context::tls_server), identity_as_username(as_username) {}
  asio::ssl::context context;
  bool identity_as_username;
};

/// The certificate's identity: the subject's first Common Name, else the first DNS name or email
/// address among its Subject Alternative Names; empty when it has none of them.
inline std::string certificate_identity(X509* cert) {
  std::string out;
  if (cert == nullptr) return out;
  if (X509_NAME* subject = X509_get_subject_name(cert)) {
    const int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (i >= 0) {
      unsigned char* utf8 = nullptr;
      const int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)));
      if (n > 0) out.assign(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(n));
      OPENSSL_free(utf8);
      if (!out.empty()) return out;
    }
  }
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names) && out.empty(); ++i) {
    const GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
    if (g->type == GEN_DNS || g->type == GEN_EMAIL) {
      const ASN1_IA5STRING* s = g->type == GEN_DNS ? g->d.dNSName : g->d.rfc822Name;
      out.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), static_cast<std::size_t>(ASN1_STRING_length(s)));
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

/// With use_identity_as_username a client certificate without an identity would connect with
/// no username at all: it fails verification instead, so the client is refused at the handshake.
inline int verify_with_identity(int preverified, X509_STORE_CTX* store) {
  if (preverified == 0) return 0;
  if (X509_STORE_CTX_get_error_depth(store) != 0) return 1;
  if (certificate_identity(X509_STORE_CTX_get_current_cert(store)).empty()) {
    X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  return 1;
}

/// OpenSSL's oldest queued error as an asio::ssl error code (cleared), or `fallback` when it
/// queued none.
inline std::error_code take_ssl_error(std::error_code fallback) {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return fallback;
  return std::error_code(static_cast<int>(e), asio::error::get_ssl_category());
}

/// Whether `path` can be opened for reading; the errno as an error code when not. OpenSSL's own
/// error for a missing file is vague ("system lib"), and a host wants to hear which file it was.
inline std::error_code check_readable(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return std::error_code(errno != 0 ? errno : ENOENT, std::generic_category());
  std::fclose(f);
  return {};
}

}  // namespace detail

/// Builds a listener's SSL context from its files and settings: what listen() and a reload do.
/// On failure `ec` is set and `what` (if given) names the file or setting at fault.
inline std::shared_ptr<detail::tls_credentials> make_tls_credentials(const tls_listen_options& o, std::error_code& ec,
                                                                      std::string* what = nullptr) {
  ec = {};
  auto fail = [&](std::error_code e, std::string text) -> std::shared_ptr<detail::tls_credentials> {
    ec = e;
    if (what != nullptr) *what = std::move(text) + ": " + e.message();
    return nullptr;
  };
  if (o.certificate_chain_file.empty())
    return fail(asio::error::invalid_argument, "TLS needs a certificate chain file (certfile)");
  if (o.private_key_file.empty()) return fail(asio::error::invalid_argument, "TLS needs a private key file (keyfile)");
  if (o.require_certificate && o.ca_file.empty() && o.ca_path.empty())
    return fail(asio::error::invalid_argument, "require_certificate needs a CA file or CA folder (cafile, capath)");
  if (o.use_identity_as_username && !o.require_certificate)
    return fail(asio::error::invalid_argument, "use_identity_as_username needs require_certificate");

  auto c = std::make_shared<detail::tls_credentials>(o.use_identity_as_username);
  SSL_CTX* ctx = c->context.native_handle();
  ERR_clear_error();
  c->context.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                         asio::ssl::context::no_sslv3 | asio::ssl::context::no_compression);
  // An idle connection gives its record buffers back to OpenSSL: idle clients are the common case.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_set_min_proto_version(ctx, o.min_version == tls_version::v1_3 ? TLS1_3_VERSION : TLS1_2_VERSION) != 1)
    return fail(detail::take_ssl_error(asio::error::invalid_argument), "TLS minimum version");

  if (auto e = detail::check_readable(o.certificate_chain_file))
    return fail(e, "TLS certificate chain file '" + o.certificate_chain_file + "'");
  c->context.use_certificate_chain_file(o.certificate_chain_file, ec);
  if (ec) return fail(ec, "TLS certificate chain file '" + o.certificate_chain_file + "'");
  if (auto e = detail::check_readable(o.private_key_file))
    return fail(e, "TLS private key file '" + o.private_key_file + "'");
  c->context.use_private_key_file(o.private_key_file, asio::ssl::context::pem, ec);
  if (ec) return fail(ec, "TLS private key file '" + o.private_key_file + "'");
  if (SSL_CTX_check_private_key(ctx) != 1)
    return fail(detail::take_ssl_error(asio::error::invalid_argument),
                "TLS private key file '" + o.private_key_file + "' does not match the certificate");

  if (!o.ca_file.empty()) {
    if (auto e = detail::check_readable(o.ca_file)) return fail(e, "TLS CA file '" + o.ca_file + "'");
    c->context.load_verify_file(o.ca_file, ec);
    if (ec) return fail(ec, "TLS CA file '" + o.ca_file + "'");
    // The CertificateRequest names these CAs, so a client with several certificates picks the right one.
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(o.ca_file.c_str())) SSL_CTX_set_client_CA_list(ctx, names);
  }
  if (!o.ca_path.empty()) {
    c->context.add_verify_path(o.ca_path, ec);
    if (ec) return fail(ec, "TLS CA folder '" + o.ca_path + "'");
  }
  if (!o.crl_file.empty()) {
    if (o.ca_file.empty() && o.ca_path.empty())
      return fail(asio::error::invalid_argument, "crlfile needs a CA file or CA folder (cafile, capath)");
    if (auto e = detail::check_readable(o.crl_file)) return fail(e, "TLS CRL file '" + o.crl_file + "'");
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    X509_LOOKUP* lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
    if (lookup == nullptr || X509_load_crl_file(lookup, o.crl_file.c_str(), X509_FILETYPE_PEM) < 1)
      return fail(detail::take_ssl_error(asio::error::invalid_argument), "TLS CRL file '" + o.crl_file + "'");
    // The client certificate itself is checked against its issuer's list, as Mosquitto does; the
    // CAs above it need none.
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
  }
  if (!o.ciphers.empty() && SSL_CTX_set_cipher_list(ctx, o.ciphers.c_str()) != 1)
    return fail(detail::take_ssl_error(asio::error::invalid_argument), "TLS cipher list '" + o.ciphers + "'");
  if (!o.ciphersuites.empty() && SSL_CTX_set_ciphersuites(ctx, o.ciphersuites.c_str()) != 1)
    return fail(detail::take_ssl_error(asio::error::invalid_argument), "TLS 1.3 ciphersuites '" + o.ciphersuites + "'");

  int mode = SSL_VERIFY_NONE;
  if (!o.ca_file.empty() || !o.ca_path.empty()) mode = SSL_VERIFY_PEER;
  if (o.require_certificate) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  // OpenSSL's own callback slot, not asio's set_verify_callback: that one keeps state in the
  // asio::ssl::context, which must then outlive every stream made from it.
  SSL_CTX_set_verify(ctx, mode, o.use_identity_as_username ? &detail::verify_with_identity : nullptr);
  // Resumed sessions need an id context once client certificates are verified.
  static constexpr unsigned char session_id_context[] = "mqttbroker";
  SSL_CTX_set_session_id_context(ctx, session_id_context, sizeof(session_id_context) - 1);
  ERR_clear_error();
  return c;
}

/// One TLS connection: an asio::ssl::stream over a TCP socket, with the SSL context it was made
/// from, kept alive by it. It gathers a write of several buffers into one TLS record (asio's TLS
/// stream writes only the first buffer of a sequence per call: a record, and a system call, per
/// MQTT packet part otherwise).
class tls_stream {
 public:
  using socket_type = asio::basic_stream_socket<asio::ip::tcp, asio::io_context::executor_type>;
  using executor_type = socket_type::executor_type;
  using lowest_layer_type = socket_type::lowest_layer_type;
  using ssl_stream_type = asio::ssl::stream<socket_type>;

  /// The most one write gathers: a TLS record's plaintext.
  static constexpr std::size_t gather_limit = 16 * 1024;

  tls_stream(socket_type s, std::shared_ptr<detail::tls_credentials> c)
      : credentials_(std::move(c)), ssl_(std::move(s), credentials_->context) {}

  executor_type get_executor() noexcept { return ssl_.get_executor(); }
  lowest_layer_type& lowest_layer() noexcept { return ssl_.lowest_layer(); }
  const lowest_layer_type& lowest_layer() const noexcept { return ssl_.lowest_layer(); }
  /// The asio::ssl stream, for what this class does not forward.
  ssl_stream_type& ssl() noexcept { return ssl_; }
  /// Whether the listener had use_identity_as_username when this connection was accepted.
  bool identity_as_username() const noexcept { return credentials_->identity_as_username; }

  /// Reads into the front of `buffers`. Once asio's TLS stream has delivered a record, whatever
  /// OpenSSL can decrypt from ciphertext it already holds is added before the completion
  /// (read_buffered): a socket read of several records is then one completion, as on TCP, not a
  /// decode and a flush of acknowledgements per record.
  template <class MutableBufferSequence, class ReadToken>
  auto async_read_some(const MutableBufferSequence& buffers, ReadToken&& token) {
    auto it = asio::buffer_sequence_begin(buffers);
    const auto end = asio::buffer_sequence_end(buffers);
    while (it != end && asio::mutable_buffer(*it).size() == 0) ++it;
    const asio::mutable_buffer first = it != end ? asio::mutable_buffer(*it) : asio::mutable_buffer();
    return asio::async_initiate<ReadToken, void(std::error_code, std::size_t)>(
        [this](auto handler, asio::mutable_buffer b) {
          // The caller's executor and allocator carry over to the wrapper.
          const auto ex = asio::get_associated_executor(handler, ssl_.get_executor());
          const auto alloc = asio::get_associated_allocator(handler);
          SSL* ssl = ssl_.native_handle();
          ssl_.async_read_some(b, asio::bind_executor(ex, asio::bind_allocator(alloc, [ssl, b, h = std::move(handler)](
                                                                                       std::error_code ec, std::size_t n) mutable {
                                 if (!ec && n > 0 && n < b.size())
                                   n += read_buffered(ssl, static_cast<unsigned char*>(b.data()) + n, b.size() - n);
                                 std::move(h)(ec, n);
                               })));
        },
        token, first);
  }

  /// Writes from the front of `buffers`: one buffer as it is, several copied together (up to
  /// gather_limit) so that they go out as one record.
  template <class ConstBufferSequence, class WriteToken>
  auto async_write_some(const ConstBufferSequence& buffers, WriteToken&& token) {
    auto it = asio::buffer_sequence_begin(buffers);
    const auto end = asio::buffer_sequence_end(buffers);
    while (it != end && asio::const_buffer(*it).size() == 0) ++it;
    asio::const_buffer first = it != end ? asio::const_buffer(*it) : asio::const_buffer();
    const bool alone = it == end || std::next(it) == end || first.size() >= gather_limit;
    if (alone) return ssl_.async_write_some(first, std::forward<WriteToken>(token));
    if (!gather_) gather_.reset(new unsigned char[gather_limit]);
    const std::size_t n = asio::buffer_copy(asio::buffer(gather_.get(), gather_limit), buffers);
    return ssl_.async_write_some(asio::const_buffer(gather_.get(), n), std::forward<WriteToken>(token));
  }

  /// Closes the socket; a pending operation completes with operation_aborted.
  void close(std::error_code& ec) { ssl_.lowest_layer().close(ec); }
  /// Shuts the socket down (no close_notify: that is tls::async_shutdown).
  void shutdown(asio::socket_base::shutdown_type what, std::error_code& ec) { ssl_.lowest_layer().shutdown(what, ec); }

 private:
  /// Plaintext that OpenSSL gives from what it holds already (whole records in asio's memory BIO),
  /// at most `size` bytes; no socket I/O. It stops at the first record it cannot complete or
  /// decrypt: an error (a bad record, close_notify) is found again, and reported, by the next
  /// read through asio. Output a record asks for (a TLS 1.3 KeyUpdate's answer) stays in the BIO
  /// and goes out with the connection's next write.
  static std::size_t read_buffered(SSL* ssl, unsigned char* p, std::size_t size) {
    std::size_t total = 0;
    while (total < size) {
      std::size_t got = 0;
      if (SSL_read_ex(ssl, p + total, size - total, &got) != 1) {
        ERR_clear_error();
        break;
      }
      total += got;
    }
    return total;
  }

  std::shared_ptr<detail::tls_credentials> credentials_;  // before ssl_: it outlives the SSL object
  ssl_stream_type ssl_;
  std::unique_ptr<unsigned char[]> gather_;  // made by the first write of several buffers
};

namespace detail {
/// A listener's options and its current credentials; reloads replace the credentials while the
/// acceptor hands them to new connections, possibly on another thread.
class tls_source {
 public:
  tls_source(tls_listen_options o, std::shared_ptr<tls_credentials> c) : options_(std::move(o)), current_(std::move(c)) {}

  std::shared_ptr<tls_credentials> current() const {
    std::lock_guard<std::mutex> lk(mutex_);
    return current_;
  }

  void reload(std::error_code& ec, std::string* what) {
    // The files are read outside the lock: accepting goes on meanwhile with the old ones.
    auto fresh = make_tls_credentials(options_, ec, what);
    if (ec) return;
    std::lock_guard<std::mutex> lk(mutex_);
    current_ = std::move(fresh);
  }

 private:
  const tls_listen_options options_;
  mutable std::mutex mutex_;
  std::shared_ptr<tls_credentials> current_;
};
}  // namespace detail

/// A TCP acceptor whose connections come out as tls_streams on the listener's current credentials.
class tls_acceptor {
 public:
  using executor_type = asio::any_io_executor;
  using endpoint_type = asio::ip::tcp::endpoint;

  explicit tls_acceptor(const executor_type& ex) : acceptor_(ex) {}

  executor_type get_executor() noexcept { return acceptor_.get_executor(); }
  bool is_open() const noexcept { return acceptor_.is_open(); }
  void close(std::error_code& ec) { acceptor_.close(ec); }
  endpoint_type local_endpoint(std::error_code& ec) const { return acceptor_.local_endpoint(ec); }

  /// Accepts the next connection onto `stream_ex`: void(std::error_code, tls_stream). The
  /// handshake is not part of it (tls::async_handshake, which the broker runs on the connection).
  template <class AcceptToken>
  auto async_accept(const tls_stream::executor_type& stream_ex, AcceptToken&& token) {
    return asio::async_initiate<AcceptToken, void(std::error_code, tls_stream)>(
        [this](auto handler, const tls_stream::executor_type& sx) {
          const auto hx = asio::get_associated_executor(handler, acceptor_.get_executor());
          acceptor_.async_accept(sx, asio::bind_executor(hx, [h = std::move(handler), src = source_](
                                                                std::error_code ec, tls_stream::socket_type s) mutable {
                                   std::move(h)(ec, tls_stream(std::move(s), src->current()));
                                 }));
        },
        token, stream_ex);
  }

  /// Reads the listener's files again: connections accepted from now on use them, open ones keep
  /// theirs. On failure nothing changes, `ec` says why and `what` (if given) names the file.
  void reload(std::error_code& ec, std::string* what = nullptr) {
    if (!source_) {
      ec = asio::error::bad_descriptor;
      return;
    }
    source_->reload(ec, what);
  }

 private:
  friend struct tls;
  asio::ip::tcp::acceptor acceptor_;
  std::shared_ptr<detail::tls_source> source_;
};

/// TLS over TCP: MQTT's port 8883 (MQTT 5.0 section 5.4.9, 3.1.1 section 5: informative). A
/// broker serves it beside other transports with listen<transport::tls>(options). The handshake
/// runs on the connection before its first read, within broker_options::connect_timeout.
struct tls {
  static constexpr const char* name = "tls";
  using stream_type = tls_stream;
  using acceptor_type = tls_acceptor;
  using listen_options = tls_listen_options;

  /// Reads the files, then binds. `what`, if given, names the file or setting at fault.
  static acceptor_type make_acceptor(const asio::any_io_executor& ex, const listen_options& o, std::error_code& ec,
                                     std::string* what) {
    acceptor_type a(ex);
    auto creds = make_tls_credentials(o, ec, what);
    if (ec) return a;
    a.source_ = std::make_shared<detail::tls_source>(o, std::move(creds));
    auto& acc = a.acceptor_;
    const auto addr = asio::ip::make_address(o.address, ec);
    if (!ec) {
      const asio::ip::tcp::endpoint ep(addr, o.port);
      acc.open(ep.protocol(), ec);
      // A restarted broker must be able to bind while old connections sit in TIME_WAIT.
      if (!ec) acc.set_option(asio::socket_base::reuse_address(true), ec);
      if (!ec) acc.bind(ep, ec);
      if (!ec) acc.listen(o.backlog, ec);
    }
    if (ec && what != nullptr) *what = "TLS listener on " + o.address + ":" + std::to_string(o.port) + ": " + ec.message();
    return a;
  }
  static acceptor_type make_acceptor(const asio::any_io_executor& ex, const listen_options& o, std::error_code& ec) {
    return make_acceptor(ex, o, ec, nullptr);
  }

  /// No Nagle: the broker batches its writes itself (and a write of several buffers is one record).
  static void prepare(stream_type& s) {
    std::error_code ignored;
    s.lowest_layer().set_option(asio::ip::tcp::no_delay(true), ignored);
  }

  /// The server side of the handshake: void(std::error_code).
  template <class Handler>
  static void async_handshake(stream_type& s, Handler&& h) {
    s.ssl().async_handshake(asio::ssl::stream_base::server, std::forward<Handler>(h));
  }

  /// close_notify, and the peer's: void(std::error_code).
  template <class Handler>
  static void async_shutdown(stream_type& s, Handler&& h) {
    s.ssl().async_shutdown(std::forward<Handler>(h));
  }

  /// The client certificate's identity after the handshake (detail::certificate_identity: the
  /// subject CN, else the first DNS or email SAN), and whether it is the username.
  static peer_certificate peer_certificate_of(stream_type& s) {
    peer_certificate p;
    SSL* ssl = s.ssl().native_handle();
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    X509* cert = SSL_get1_peer_certificate(ssl);
#else
    X509* cert = SSL_get_peer_certificate(ssl);
#endif
    if (cert != nullptr) {
      p.identity = detail::certificate_identity(cert);
      X509_free(cert);
    }
    p.identity_is_username = s.identity_as_username();
    return p;
  }
};

}  // namespace transport
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_TRANSPORT_TLS_HPP
