#ifndef MQTTBROKER_TRANSPORT_TLS_HPP
#define MQTTBROKER_TRANSPORT_TLS_HPP

// TLS over TCP (MQTT's port 8883) on OpenSSL, with asio::ssl's context and error category. The
// one transport header that includes OpenSSL: it is behind the CMake target mqttbroker::tls, and
// nothing else of the library includes it, so a program on plain TCP neither includes nor links
// OpenSSL.

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
#include <asio/post.hpp>
#include <asio/socket_base.hpp>
#include <asio/ssl/context.hpp>
#include <asio/ssl/error.hpp>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <sys/socket.h>
#include <sys/types.h>

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
  // A client asking to renegotiate (TLS 1.2) makes the server do a handshake's work again: refused.
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  // One TLS 1.3 session ticket per handshake, not OpenSSL's two (meant for browsers opening
  // connections in parallel): an MQTT client holds one connection and resumes with one ticket,
  // and each ticket is an encryption the server pays at every handshake (6% of its instructions).
  SSL_CTX_set_num_tickets(ctx, 1);
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

namespace detail {

/// One buffer per thread into which a write of several buffers is gathered before it is
/// encrypted, and into which a shutdown drains what the peer still sends.
inline unsigned char* tls_thread_buffer() {
  static thread_local std::unique_ptr<unsigned char[]> buf(new unsigned char[16 * 1024]);
  return buf.get();
}

/// What a failed SSL call means as an error code: the peer's close_notify is eof, a TCP end
/// without one stream_truncated, a socket error its errno, OpenSSL's queued error otherwise.
/// `saved_errno` is errno right after the call.
inline std::error_code ssl_call_error(int ssl_error, int saved_errno) {
  switch (ssl_error) {
    case SSL_ERROR_ZERO_RETURN:
      ERR_clear_error();
      return asio::error::eof;
    case SSL_ERROR_SYSCALL:
      if (ERR_peek_error() == 0) {
        if (saved_errno != 0) return std::error_code(saved_errno, std::system_category());
        return asio::ssl::error::stream_truncated;
      }
      break;
    default:
      break;
  }
  if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
    ERR_clear_error();
    return asio::ssl::error::stream_truncated;
  }
  return take_ssl_error(asio::error::connection_aborted);
}

/// OpenSSL's I/O on a connection's socket: send and recv on the descriptor, as its own socket BIO
/// does, but with MSG_NOSIGNAL: a peer gone mid-write is an EPIPE error for this connection, not
/// a SIGPIPE for the host's process (a library does not get to ignore signals for its host).
/// The BIO's data: the descriptor, shifted left by one, and in bit 0 whether the last recv came
/// back short (the socket had no more), so a read can stop without a recv that would find nothing.
inline int socket_bio_fd(BIO* b) { return static_cast<int>(reinterpret_cast<std::intptr_t>(BIO_get_data(b)) >> 1); }
inline void socket_bio_set(BIO* b, int fd, bool drained) {
  BIO_set_data(b, reinterpret_cast<void*>((static_cast<std::intptr_t>(fd) << 1) | (drained ? 1 : 0)));
}
inline bool socket_bio_drained(BIO* b) { return (reinterpret_cast<std::intptr_t>(BIO_get_data(b)) & 1) != 0; }

inline int socket_bio_write(BIO* b, const char* data, int size) {
  const int fd = socket_bio_fd(b);
  BIO_clear_retry_flags(b);
  int flags = 0;
#ifdef MSG_NOSIGNAL
  flags = MSG_NOSIGNAL;
#endif
  ssize_t n = 0;
  do n = ::send(fd, data, static_cast<std::size_t>(size), flags);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_write(b);
  return static_cast<int>(n);
}
inline int socket_bio_read(BIO* b, char* data, int size) {
  const int fd = socket_bio_fd(b);
  BIO_clear_retry_flags(b);
  ssize_t n = 0;
  do n = ::recv(fd, data, static_cast<std::size_t>(size), 0);
  while (n < 0 && errno == EINTR);
  const int saved_errno = errno;
  const bool would_block = n < 0 && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK);
  if (would_block) BIO_set_retry_read(b);
  socket_bio_set(b, fd, would_block || (n >= 0 && n < size));
  errno = saved_errno;
  return static_cast<int>(n);
}
inline long socket_bio_ctrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }
inline int socket_bio_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}
/// The method, made once for the process (OpenSSL keeps no list of them: nothing to free).
inline const BIO_METHOD* socket_bio_method() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "mqttbroker socket");
    if (m != nullptr) {
      BIO_meth_set_write(m, &socket_bio_write);
      BIO_meth_set_read(m, &socket_bio_read);
      BIO_meth_set_ctrl(m, &socket_bio_ctrl);
      BIO_meth_set_create(m, &socket_bio_create);
    }
    return m;
  }();
  return method;
}

}  // namespace detail

/// One TLS connection: OpenSSL reading and writing the TCP socket itself (a socket BIO on the
/// non-blocking descriptor, detail::socket_bio_method), as Mosquitto does. Against
/// asio::ssl::stream, which puts a pair of memory BIOs and two buffers of its own between OpenSSL
/// and the socket, this saves a copy each
/// way and about 50 KB per connection: with SSL_MODE_RELEASE_BUFFERS an idle connection holds
/// only OpenSSL's SSL object. It offers a readability wait, so the broker reads TLS connections
/// as it reads TCP ones: into the thread's buffer, after the socket (or OpenSSL's read-ahead)
/// has bytes.
///
/// Operations run on the caller's executor (the connection's strand), never two at once on the
/// same direction; a read and a write may interleave, as OpenSSL allows on one SSL object.
class tls_stream {
 public:
  using socket_type = asio::basic_stream_socket<asio::ip::tcp, asio::io_context::executor_type>;
  using executor_type = socket_type::executor_type;
  using lowest_layer_type = socket_type;

  /// The most one write encrypts: a TLS record's plaintext, so a write is one record.
  static constexpr std::size_t gather_limit = 16 * 1024;

  tls_stream(socket_type s, std::shared_ptr<detail::tls_credentials> c) : credentials_(std::move(c)), socket_(std::move(s)) {
    if (!socket_.is_open() || !credentials_) return;  // a failed accept: nothing to set up
    std::error_code ec;
    // OpenSSL reads and writes the descriptor itself, and must get EAGAIN rather than block.
    socket_.native_non_blocking(true, ec);
    SSL* ssl = ec ? nullptr : SSL_new(credentials_->context.native_handle());
    if (ssl == nullptr) return;  // the handshake then fails
    ssl_.reset(ssl);
    const BIO_METHOD* method = detail::socket_bio_method();
    BIO* bio = method != nullptr ? BIO_new(method) : nullptr;
    if (bio == nullptr) {
      ssl_.reset();
      return;
    }
    detail::socket_bio_set(bio, static_cast<int>(socket_.native_handle()), false);
    SSL_set_bio(ssl, bio, bio);  // the SSL object owns it from here
    SSL_set_accept_state(ssl);
    // A write returns once a record is out (the connection continues from there), and repeats
    // after a wait from a gather buffer that may be another thread's.
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // Read as much as the socket has, not a record header then its body: a system call per
    // socket read, not two per record.
    SSL_set_read_ahead(ssl, 1);
    ERR_clear_error();
  }

  executor_type get_executor() noexcept { return socket_.get_executor(); }
  lowest_layer_type& lowest_layer() noexcept { return socket_; }
  const lowest_layer_type& lowest_layer() const noexcept { return socket_; }
  /// OpenSSL's SSL object; null when the accept failed or OpenSSL could not make one.
  SSL* native_handle() const noexcept { return ssl_.get(); }
  /// Whether the listener had use_identity_as_username when this connection was accepted.
  bool identity_as_username() const noexcept { return credentials_ && credentials_->identity_as_username; }

  /// Reads, without blocking, all the plaintext OpenSSL can give into `b`: would_block when it
  /// has none yet. An error met after some bytes is kept and reported by the next call, which
  /// async_wait lets come at once.
  std::size_t read_some(const asio::mutable_buffer& b, std::error_code& ec) {
    ec = {};
    if (deferred_) {
      ec = deferred_;
      return 0;
    }
    if (!ssl_) {
      ec = asio::error::bad_descriptor;
      return 0;
    }
    auto* p = static_cast<unsigned char*>(b.data());
    std::size_t total = 0;
    read_wants_write_ = false;
    more_buffered_ = false;
    while (total < b.size()) {
      std::size_t got = 0;
      ERR_clear_error();
      errno = 0;
      const int r = SSL_read_ex(ssl_.get(), p + total, b.size() - total, &got);
      if (r == 1) {
        total += got;
        // OpenSSL holds nothing more and its last recv was short: another SSL_read would only
        // find the socket empty (a recv for EAGAIN). Stop here, as a TCP read stops at a short read.
        if (SSL_has_pending(ssl_.get()) != 1 && detail::socket_bio_drained(SSL_get_rbio(ssl_.get()))) return total;
        continue;
      }
      const int saved_errno = errno;
      const int e = SSL_get_error(ssl_.get(), r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        // WANT_WRITE: the record read asked for an answer (a TLS 1.3 KeyUpdate) that the socket
        // would not take yet; the next wait is for writability.
        read_wants_write_ = e == SSL_ERROR_WANT_WRITE;
        if (total == 0) ec = asio::error::would_block;
        return total;
      }
      const std::error_code err = detail::ssl_call_error(e, saved_errno);
      if (total == 0) {
        ec = err;
        return 0;
      }
      deferred_ = err;
      return total;
    }
    // Full before OpenSSL said it would block: it may hold more, which no socket wait announces.
    more_buffered_ = true;
    return total;
  }

  /// Completes when read_some has something to give: what OpenSSL still held when the last read
  /// filled its buffer, an error kept from the last read, or a readable socket. (Not
  /// SSL_has_pending: it is true for part of a record too, on which a read would block.)
  template <class WaitHandler>
  void async_wait(asio::socket_base::wait_type w, WaitHandler&& handler) {
    if (w == asio::socket_base::wait_read && (deferred_ || more_buffered_)) {
      return detail::post_completion(socket_.get_executor(), std::forward<WaitHandler>(handler), std::error_code());
    }
    if (w == asio::socket_base::wait_read && read_wants_write_) w = asio::socket_base::wait_write;
    socket_.async_wait(w, std::forward<WaitHandler>(handler));
  }

  /// Reads into the front of `buffers`: void(std::error_code, std::size_t). For a layer above
  /// (WebSocket); the broker itself reads through async_wait and read_some.
  template <class MutableBufferSequence, class ReadToken>
  auto async_read_some(const MutableBufferSequence& buffers, ReadToken&& token) {
    auto it = asio::buffer_sequence_begin(buffers);
    const auto end = asio::buffer_sequence_end(buffers);
    while (it != end && asio::mutable_buffer(*it).size() == 0) ++it;
    const asio::mutable_buffer first = it != end ? asio::mutable_buffer(*it) : asio::mutable_buffer();
    return asio::async_initiate<ReadToken, void(std::error_code, std::size_t)>(
        [this](auto handler, asio::mutable_buffer b) {
          using op = read_op<std::decay_t<decltype(handler)>>;
          op{this, b, std::move(handler)}.start();
        },
        token, first);
  }

  /// Writes from the front of `buffers`, one record: one buffer as it is, several copied together
  /// (up to gather_limit). void(std::error_code, std::size_t).
  template <class ConstBufferSequence, class WriteToken>
  auto async_write_some(const ConstBufferSequence& buffers, WriteToken&& token) {
    return asio::async_initiate<WriteToken, void(std::error_code, std::size_t)>(
        [this](auto handler, const ConstBufferSequence& bs) {
          using op = write_op<ConstBufferSequence, std::decay_t<decltype(handler)>>;
          op{this, bs, std::move(handler)}.start();
        },
        token, buffers);
  }

  /// The server side of the handshake: void(std::error_code). The client speaks first, so it
  /// starts by waiting for its hello.
  template <class Handler>
  void async_handshake(Handler&& handler) {
    using op = handshake_op<std::decay_t<Handler>>;
    op o{this, std::forward<Handler>(handler)};
    if (!ssl_) return o.complete_later(asio::error::bad_descriptor);
    o.wait(asio::socket_base::wait_read);
  }

  /// Sends close_notify and waits for the peer's, dropping what it still sends meanwhile:
  /// void(std::error_code).
  template <class Handler>
  void async_shutdown(Handler&& handler) {
    using op = shutdown_op<std::decay_t<Handler>>;
    op o{this, std::forward<Handler>(handler)};
    if (!ssl_) return o.complete_later(asio::error::bad_descriptor);
    o.step(true);
  }

  /// Closes the socket; a pending operation completes with operation_aborted.
  void close(std::error_code& ec) { socket_.close(ec); }
  /// Shuts the socket down (no close_notify: that is async_shutdown).
  void shutdown(asio::socket_base::shutdown_type what, std::error_code& ec) { socket_.shutdown(what, ec); }

 private:
  struct ssl_free {
    void operator()(SSL* s) const noexcept { SSL_free(s); }
  };

  /// What the composed operations below share: the stream, the caller's handler, and the
  /// handler's executor and allocator for their intermediate waits.
  template <class Handler>
  struct op_base {
    tls_stream* stream;
    Handler handler;

    using executor_type = asio::associated_executor_t<Handler, tls_stream::executor_type>;
    executor_type get_executor() const noexcept { return asio::get_associated_executor(handler, stream->socket_.get_executor()); }
    using allocator_type = asio::associated_allocator_t<Handler>;
    allocator_type get_allocator() const noexcept { return asio::get_associated_allocator(handler); }

    /// Completes from inside the initiating call: through the executor, never inline.
    template <class... Args>
    void complete_later(Args... args) {
      detail::post_completion(stream->socket_.get_executor(), std::move(handler), args...);
    }
  };

  /// An SSL call's result for the operations below: done, or wait for the socket, or failed.
  enum class step_result : std::uint8_t { done, want_read, want_write, failed };
  step_result classify(int r, std::error_code& ec) {
    if (r == 1) return step_result::done;
    const int saved_errno = errno;
    const int e = SSL_get_error(ssl_.get(), r);
    if (e == SSL_ERROR_WANT_READ) return step_result::want_read;
    if (e == SSL_ERROR_WANT_WRITE) return step_result::want_write;
    ec = detail::ssl_call_error(e, saved_errno);
    return step_result::failed;
  }

  template <class Handler>
  struct read_op : op_base<Handler> {
    asio::mutable_buffer b;
    read_op(tls_stream* st, asio::mutable_buffer buf, Handler h) : op_base<Handler>{st, std::move(h)}, b(buf) {}

    void start() {
      std::error_code ec;
      const std::size_t n = this->stream->read_some(b, ec);
      if (ec == asio::error::would_block) return wait();
      this->complete_later(ec, n);
    }
    void wait() {
      tls_stream* s = this->stream;
      s->async_wait(asio::socket_base::wait_read, std::move(*this));
    }
    void operator()(std::error_code ec) {
      std::size_t n = 0;
      if (!ec) n = this->stream->read_some(b, ec);
      if (ec == asio::error::would_block) return wait();
      std::move(this->handler)(ec, n);
    }
  };

  template <class Buffers, class Handler>
  struct write_op : op_base<Handler> {
    Buffers buffers;
    write_op(tls_stream* st, const Buffers& bs, Handler h) : op_base<Handler>{st, std::move(h)}, buffers(bs) {}

    void start() { step(std::error_code(), true); }
    void operator()(std::error_code ec) { step(ec, false); }
    /// `first`: inside the initiating call, where the completion must go through the executor.
    void step(std::error_code ec, bool first) {
      std::size_t n = 0;
      if (!ec) {
        switch (attempt(ec, n)) {
          case step_result::want_read: return wait(asio::socket_base::wait_read);
          case step_result::want_write: return wait(asio::socket_base::wait_write);
          default: break;
        }
      }
      if (first) return this->complete_later(ec, n);
      std::move(this->handler)(ec, n);
    }
    void wait(asio::socket_base::wait_type w) {
      tls_stream* s = this->stream;
      s->socket_.async_wait(w, std::move(*this));
    }
    /// One SSL_write of the front of the buffers. Repeated after a wait with the same bytes, as
    /// OpenSSL requires: the caller keeps its buffers until the completion, so gathering them
    /// again gives the same bytes (at a buffer that may have moved, which the mode allows).
    step_result attempt(std::error_code& ec, std::size_t& n) {
      tls_stream* s = this->stream;
      if (!s->ssl_) {
        ec = asio::error::bad_descriptor;
        return step_result::failed;
      }
      auto it = asio::buffer_sequence_begin(buffers);
      const auto end = asio::buffer_sequence_end(buffers);
      while (it != end && asio::const_buffer(*it).size() == 0) ++it;
      if (it == end) return step_result::done;  // nothing to write: 0 bytes
      asio::const_buffer data(*it);
      if (std::next(it) != end && data.size() < gather_limit) {
        unsigned char* g = detail::tls_thread_buffer();
        data = asio::const_buffer(g, asio::buffer_copy(asio::buffer(g, gather_limit), buffers));
      } else if (data.size() > gather_limit) {
        data = asio::const_buffer(data.data(), gather_limit);
      }
      ERR_clear_error();
      errno = 0;
      return s->classify(SSL_write_ex(s->ssl_.get(), data.data(), data.size(), &n), ec);
    }
  };

  template <class Handler>
  struct handshake_op : op_base<Handler> {
    handshake_op(tls_stream* st, Handler h) : op_base<Handler>{st, std::move(h)} {}

    void wait(asio::socket_base::wait_type w) {
      tls_stream* s = this->stream;
      s->socket_.async_wait(w, std::move(*this));
    }
    void operator()(std::error_code ec) {
      if (!ec) {
        ERR_clear_error();
        errno = 0;
        switch (this->stream->classify(SSL_do_handshake(this->stream->ssl_.get()), ec)) {
          case step_result::want_read: return wait(asio::socket_base::wait_read);
          case step_result::want_write: return wait(asio::socket_base::wait_write);
          default: break;
        }
        // The client's first records often come with its Finished, and read-ahead has taken
        // them off the socket already: the first wait must not wait for the socket.
        if (!ec) this->stream->more_buffered_ = SSL_has_pending(this->stream->ssl_.get()) == 1;
      }
      std::move(this->handler)(ec);
    }
  };

  template <class Handler>
  struct shutdown_op : op_base<Handler> {
    bool sent = false;  // our close_notify is out
    shutdown_op(tls_stream* st, Handler h) : op_base<Handler>{st, std::move(h)} {}

    void operator()(std::error_code ec) {
      if (ec) return std::move(this->handler)(ec);
      step(false);
    }
    /// Our close_notify (SSL_shutdown, repeated until it is out), then reads until the peer's
    /// arrives, dropping application data. `first`: inside the initiating call.
    void step(bool first) {
      tls_stream* s = this->stream;
      SSL* ssl = s->ssl_.get();
      std::error_code ec;
      step_result r = step_result::failed;
      for (;;) {
        ERR_clear_error();
        errno = 0;
        if (!sent) {
          const int done = SSL_shutdown(ssl);
          if (done >= 0) sent = true;
          r = done == 1 ? step_result::done : done == 0 ? step_result::want_read : s->classify(done, ec);
          if (done == 0) continue;  // the peer's may be here already
          break;
        }
        std::size_t got = 0;
        r = s->classify(SSL_read_ex(ssl, detail::tls_thread_buffer(), gather_limit, &got), ec);
        if (r == step_result::done) continue;  // application data after ours: dropped
        if (ec == asio::error::eof) {
          r = step_result::done;  // the peer's close_notify
          ec = {};
        }
        break;
      }
      switch (r) {
        case step_result::want_read: return s->socket_.async_wait(asio::socket_base::wait_read, std::move(*this));
        case step_result::want_write: return s->socket_.async_wait(asio::socket_base::wait_write, std::move(*this));
        default:
          if (first) return this->complete_later(ec);
          return std::move(this->handler)(ec);
      }
    }
  };

  std::shared_ptr<detail::tls_credentials> credentials_;  // before ssl_: it outlives the SSL object
  socket_type socket_;
  std::unique_ptr<SSL, ssl_free> ssl_;
  std::error_code deferred_;       // an error read_some met after delivering bytes
  bool read_wants_write_ = false;  // the last read waits for the socket to take an answer
  bool more_buffered_ = false;     // the last read filled its buffer: OpenSSL may hold more
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
    s.async_handshake(std::forward<Handler>(h));
  }

  /// close_notify, and the peer's: void(std::error_code).
  template <class Handler>
  static void async_shutdown(stream_type& s, Handler&& h) {
    s.async_shutdown(std::forward<Handler>(h));
  }

  /// The client certificate's identity after the handshake (detail::certificate_identity: the
  /// subject CN, else the first DNS or email SAN), and whether it is the username.
  static peer_certificate peer_certificate_of(stream_type& s) {
    peer_certificate p;
    SSL* ssl = s.native_handle();
    if (ssl == nullptr) return p;
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
