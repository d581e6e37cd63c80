#include <mqttbroker/transport/tls.hpp>
#include <mqttbroker/bridge/bridge.hpp>
#include <mqttbroker/broker.hpp>
#include <mqttbroker/client/tls.hpp>
#include <mqttbroker/codec.hpp>

#include "catch.hpp"
#include "loopback.hpp"
#include "mosquitto_process.hpp"

#include <asio/connect.hpp>
#include <asio/io_context.hpp>
#include <asio/read.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl.hpp>
#include <asio/write.hpp>

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <sys/socket.h>
#include <sys/time.h>

// The TLS transport over real loopback connections: the broker and the test's clients share one
// io_context on the test's thread, and every wait has a deadline. The certificates come from
// tests/tls/make-certs.sh, run once into a temporary folder.

namespace mb = mqttbroker;
namespace codec = mqttbroker::codec;
using mb::transport::tls;
using namespace std::chrono_literals;

namespace {

using test_support::certs;
using test_support::run_until;

/// What the hooks saw, shared with the test (the broker keeps a copy of its hooks).
struct seen {
  std::vector<std::optional<std::string>> usernames;  // per on_connect
  std::vector<std::string> identities;                // per on_connect
  std::set<std::string> allowed;                      // usernames authorize_publish lets through
  std::vector<std::string> refused;                   // usernames authorize_publish refused
};
struct recording_hooks {
  std::shared_ptr<seen> s = std::make_shared<seen>();
  void on_connect(const mb::hooks::client_info& c) {
    s->usernames.push_back(c.username ? std::optional<std::string>(std::string(*c.username)) : std::nullopt);
    s->identities.emplace_back(c.certificate_identity);
  }
  bool authorize_publish(const mb::hooks::client_info& c, const mb::message&) {
    const std::string u = c.username ? std::string(*c.username) : std::string("(none)");
    if (s->allowed.count(u) != 0) return true;
    s->refused.push_back(u);
    return false;
  }
};
struct tls_policies : mb::default_policies {
  using transport = tls;
  using hooks = recording_hooks;
};
using tls_broker = mb::broker<tls_policies>;


tls::listen_options server_options(bool mutual = false) {
  tls::listen_options o;
  o.address = "127.0.0.1";
  o.port = 0;
  o.certificate_chain_file = certs()("server-chain.crt");
  o.private_key_file = certs()("server.key");
  if (mutual) {
    o.ca_file = certs()("ca.crt");
    o.require_certificate = true;
  }
  return o;
}

/// A TLS MQTT client on the test's io_context; it verifies the server against the test root CA.
class tls_client {
 public:
  tls_client(asio::io_context& io, std::uint16_t port, const std::string& cert = "")
      : io_(io), ctx_(make_context(cert)), s_(io, ctx_) {
    s_.lowest_layer().connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  }

  /// Complete before the stream is made: an SSL object copies its context's certificate.
  static asio::ssl::context make_context(const std::string& cert) {
    asio::ssl::context ctx(asio::ssl::context::tls_client);
    ctx.load_verify_file(certs()("ca.crt"));
    ctx.set_verify_mode(asio::ssl::verify_peer);
    if (!cert.empty()) {
      ctx.use_certificate_file(certs()(cert + ".crt"), asio::ssl::context::pem);
      ctx.use_private_key_file(certs()(cert + ".key"), asio::ssl::context::pem);
    }
    return ctx;
  }

  /// The client's handshake: its error (none when it completed).
  std::error_code handshake() {
    std::optional<std::error_code> r;
    s_.async_handshake(asio::ssl::stream_base::client, [&](std::error_code ec) { r = ec; });
    if (!run_until(io_, [&] { return r.has_value(); })) return asio::error::timed_out;
    return *r;
  }

  /// The server certificate's subject CN, after the handshake.
  std::string server_identity() {
    X509* cert = SSL_get1_peer_certificate(s_.native_handle());
    std::string id = mb::transport::detail::certificate_identity(cert);
    X509_free(cert);
    return id;
  }

  template <class Packet>
  void send(const Packet& p, codec::protocol_version v = codec::protocol_version::v3_1_1) {
    std::string out;
    REQUIRE_FALSE(codec::encode(p, v, out));
    std::optional<std::error_code> r;
    asio::async_write(s_, asio::buffer(out), [&](std::error_code ec, std::size_t) { r = ec; });
    REQUIRE(run_until(io_, [&] { return r.has_value(); }));
  }

  void connect(const std::string& client_id, std::optional<std::string> username = std::nullopt) {
    codec::connect c;
    c.client_id = client_id;
    c.clean_start = true;
    c.keep_alive = 60;
    if (username) c.username = *username;
    send(c);
  }

  /// The next `n` bytes, or nothing when the connection ends or the deadline passes first.
  std::optional<std::string> read(std::size_t n, std::chrono::milliseconds limit = 10s) {
    std::string buf(n, '\0');
    std::optional<std::error_code> r;
    asio::async_read(s_, asio::buffer(buf), [&](std::error_code ec, std::size_t) { r = ec; });
    if (!run_until(io_, [&] { return r.has_value(); }, limit)) {
      s_.lowest_layer().cancel();
      run_until(io_, [&] { return r.has_value(); });
      return std::nullopt;
    }
    if (*r) return std::nullopt;
    return buf;
  }

  /// CONNACK's return code, or nothing when the connection ended first.
  std::optional<int> connack() {
    auto b = read(4);
    if (!b) return std::nullopt;
    REQUIRE(static_cast<std::uint8_t>((*b)[0]) == 0x20);
    return static_cast<std::uint8_t>((*b)[3]);
  }

  void publish(const std::string& topic, const std::string& payload) {
    codec::publish p;
    p.topic = topic;
    p.payload = payload;
    send(p);
  }

  asio::ssl::stream<asio::ip::tcp::socket>& stream() { return s_; }

 private:
  asio::io_context& io_;
  asio::ssl::context ctx_;
  asio::ssl::stream<asio::ip::tcp::socket> s_;
};

/// A broker with one TLS listener (index 0) on the test's io_context, started; stopped at the end.
struct fixture {
  asio::io_context io;
  recording_hooks hooks;
  std::unique_ptr<tls_broker> broker;
  std::vector<std::string> received;  // payloads published to t/#

  explicit fixture(const tls::listen_options& o, mb::broker_options bo = {}) {
    bo.log_level = mb::log_level::error;
    broker = std::make_unique<tls_broker>(io, bo, hooks);
    broker->listen(o);
    broker->subscribe("t/#", [this](const mb::message_ptr& m) { received.emplace_back(m->payload()); });
    broker->start();
  }
  ~fixture() {
    bool stopped = false;
    broker->async_stop([&](std::error_code) { stopped = true; });
    run_until(io, [&] { return stopped; });
  }
  std::uint16_t port() const { return broker->local_port(0); }
  seen& hooks_saw() { return *hooks.s; }
};

}  // namespace

TEST_CASE("tls: a client verifies the server's chain, connects and publishes over TLS", "[tls]") {
  fixture f(server_options());
  tls_client c(f.io, f.port());
  REQUIRE_FALSE(c.handshake());
  CHECK(c.server_identity() == "mqttbroker test server");
  f.hooks_saw().allowed = {"(none)"};
  c.connect("plain-tls");
  REQUIRE(c.connack() == 0);
  c.publish("t/1", "over tls");
  REQUIRE(run_until(f.io, [&] { return !f.received.empty(); }));
  CHECK(f.received == std::vector<std::string>{"over tls"});
  // Without a client certificate the hooks see no identity.
  REQUIRE(f.hooks_saw().identities.size() == 1);
  CHECK(f.hooks_saw().identities[0].empty());
  CHECK(f.broker->listener_info(0).transport == "tls");
}

// tls_stream::read_some gives all that OpenSSL can decrypt from what it has read ahead. Here 40
// PUBLISH records and a close_notify reach the broker in one TCP segment: every message is read,
// and the close_notify ends the connection only after them.
TEST_CASE("tls: records that arrive together are read in one go, up to a close_notify after them", "[tls]") {
  fixture f(server_options());
  f.hooks_saw().allowed = {"(none)"};
  std::vector<std::string> sent;
  for (int i = 0; i < 40; ++i) sent.push_back("message " + std::to_string(i) + std::string(80, 'x'));
  std::atomic<bool> client_done{false};
  std::string client_error;   // the client thread's, read after the join
  bool broker_closed = false;
  const std::uint16_t port = f.port();
  // A blocking OpenSSL client on its own thread, while this thread runs the broker.
  std::thread client([&] {
    auto fail = [&](const std::string& what) { client_error = what; client_done = true; };
    asio::io_context cio;
    asio::ip::tcp::socket sock(cio);
    sock.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    SSL* ssl = SSL_new(ctx);
    SSL_set_fd(ssl, sock.native_handle());
    std::string out;
    codec::connect c;
    c.client_id = "batched";
    c.clean_start = true;
    char connack[4] = {};
    if (SSL_connect(ssl) != 1 || codec::encode(c, codec::protocol_version::v3_1_1, out) ||
        SSL_write(ssl, out.data(), static_cast<int>(out.size())) <= 0 || SSL_read(ssl, connack, 4) != 4) {
      fail("handshake or CONNECT failed");
    } else {
      // From here the records go to memory, each PUBLISH one record, then the close_notify ...
      BIO* mem = BIO_new(BIO_s_mem());
      SSL_set0_wbio(ssl, mem);
      for (const auto& payload : sent) {
        codec::publish p;
        p.topic = "t/batch";
        p.payload = payload;
        out.clear();
        if (codec::encode(p, codec::protocol_version::v3_1_1, out) ||
            SSL_write(ssl, out.data(), static_cast<int>(out.size())) <= 0)
          client_error = "PUBLISH not encoded";
      }
      SSL_shutdown(ssl);
      // ... and all of it leaves in one write.
      char* bytes = nullptr;
      const long n = BIO_get_mem_data(mem, &bytes);
      std::error_code ec;
      asio::write(sock, asio::buffer(bytes, static_cast<std::size_t>(n)), ec);
      // Then wait (10 s at most) for the broker to close the connection.
      sock.non_blocking(true, ec);
      const auto deadline = std::chrono::steady_clock::now() + 10s;
      char rest[256];
      while (!ec && std::chrono::steady_clock::now() < deadline) {
        sock.read_some(asio::buffer(rest), ec);
        if (ec == asio::error::would_block) {
          ec = {};
          std::this_thread::sleep_for(5ms);
        }
      }
      broker_closed = static_cast<bool>(ec);
      client_done = true;
    }
    SSL_free(ssl);
    SSL_CTX_free(ctx);
  });
  const bool all = run_until(f.io, [&] { return client_done.load() && f.received.size() >= sent.size(); });
  client.join();
  REQUIRE(client_error.empty());
  REQUIRE(all);
  CHECK(f.received == sent);
  CHECK(broker_closed);  // at the close_notify, after the messages
}

// The client's Finished, its CONNECT and a PUBLISH reach the broker in one TCP segment, so
// OpenSSL's read-ahead takes the MQTT records off the socket during the handshake: the broker
// must read them from OpenSSL, not wait for the socket, where nothing more comes.
TEST_CASE("tls: a CONNECT in the same segment as the client's Finished is read at once", "[tls]") {
  fixture f(server_options());
  f.hooks_saw().allowed = {"(none)"};
  std::atomic<bool> client_done{false};
  std::string client_error;  // the client thread's, read after the join
  std::string connack;
  const std::uint16_t port = f.port();
  std::thread client([&] {
    asio::io_context cio;
    asio::ip::tcp::socket sock(cio);
    std::error_code ec;
    sock.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    SSL* ssl = SSL_new(ctx);
    // Both directions through memory, pumped by hand, so the last flight leaves when we say.
    BIO* in = BIO_new(BIO_s_mem());
    BIO* out = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, in, out);
    SSL_set_connect_state(ssl);
    auto send_out = [&] {
      char* bytes = nullptr;
      const long n = BIO_get_mem_data(out, &bytes);
      if (n > 0 && !ec) asio::write(sock, asio::buffer(bytes, static_cast<std::size_t>(n)), ec);
      (void)BIO_reset(out);
    };
    // Blocking reads, 5 s at most each (::recv: asio would wait on past SO_RCVTIMEO, in poll).
    const timeval limit{5, 0};
    setsockopt(sock.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    auto receive_in = [&] {
      char buf[4096];
      const ssize_t n = ::recv(sock.native_handle(), buf, sizeof buf, 0);
      if (n <= 0) ec = asio::error::timed_out;
      else BIO_write(in, buf, static_cast<int>(n));
    };
    int r = 0;
    while (!ec && (r = SSL_do_handshake(ssl)) != 1) {
      if (SSL_get_error(ssl, r) != SSL_ERROR_WANT_READ) break;
      send_out();
      receive_in();
    }
    std::string mqtt;
    codec::connect c;
    c.client_id = "eager";
    c.clean_start = true;
    codec::publish p;
    p.topic = "t/eager";
    p.payload = "right behind the handshake";
    if (r != 1 || ec) {
      client_error = "handshake failed";
    } else if (codec::encode(c, codec::protocol_version::v3_1_1, mqtt) ||
               codec::encode(p, codec::protocol_version::v3_1_1, mqtt) ||
               SSL_write(ssl, mqtt.data(), static_cast<int>(mqtt.size())) <= 0) {
      client_error = "CONNECT not encoded";
    } else {
      send_out();  // Finished, CONNECT and PUBLISH: one write
      // The CONNACK, or the broker's close at its CONNECT timeout if it never read the CONNECT.
      char plain[4];
      int got = 0;
      while (!ec && got < 4) {
        const int n = SSL_read(ssl, plain + got, 4 - got);
        if (n > 0) got += n;
        else if (SSL_get_error(ssl, n) == SSL_ERROR_WANT_READ) receive_in();
        else break;
      }
      connack.assign(plain, static_cast<std::size_t>(got));
    }
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    client_done = true;
  });
  const bool done = run_until(f.io, [&] { return client_done.load() && !f.received.empty(); });
  client.join();
  REQUIRE(client_error.empty());
  REQUIRE(done);
  CHECK(connack == std::string("\x20\x02\x00\x00", 4));
  CHECK(f.received == std::vector<std::string>{"right behind the handshake"});
}

// One session ticket per connection (not OpenSSL's two: an MQTT client holds one connection, and
// each ticket costs the server an encryption at every handshake), and a client that comes back
// with it resumes without a full handshake.
namespace resumption {
int tickets = 0;
SSL_SESSION* last = nullptr;
int on_ticket(SSL*, SSL_SESSION* s) {
  ++tickets;
  if (last != nullptr) SSL_SESSION_free(last);
  last = s;
  return 1;  // kept: freed above or at the end of the test
}
}  // namespace resumption

TEST_CASE("tls: one session ticket per connection, and a client that brings it back resumes", "[tls]") {
  fixture f(server_options());
  resumption::tickets = 0;
  {
    tls_client c(f.io, f.port());
    SSL_CTX* ctx = SSL_get_SSL_CTX(c.stream().native_handle());
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, &resumption::on_ticket);
    REQUIRE_FALSE(c.handshake());
    c.connect("resumer");
    REQUIRE(c.connack() == 0);  // the tickets come before it
    CHECK(SSL_session_reused(c.stream().native_handle()) == 0);
    // Without a clean end OpenSSL would mark the session not resumable when the client goes.
    SSL_set_shutdown(c.stream().native_handle(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  }
  CHECK(resumption::tickets == 1);
  REQUIRE(resumption::last != nullptr);
  tls_client again(f.io, f.port());
  SSL_set_session(again.stream().native_handle(), resumption::last);
  SSL_SESSION_free(resumption::last);
  resumption::last = nullptr;
  REQUIRE_FALSE(again.handshake());
  CHECK(SSL_session_reused(again.stream().native_handle()) == 1);
  again.connect("resumer");
  CHECK(again.connack() == 0);
}

// The stream's readability wait (what the broker reads TLS connections with) on its own: a read
// that fills a small buffer leaves the rest of the record with OpenSSL, the socket is drained
// by read-ahead, and the next wait must still complete.
TEST_CASE("tls: tls_stream's wait completes for what OpenSSL holds after a read that filled its buffer", "[tls]") {
  asio::io_context io;
  std::error_code ec;
  auto creds = mb::transport::make_tls_credentials(server_options(), ec);
  REQUIRE_FALSE(ec);
  asio::ip::tcp::acceptor acceptor(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  mb::transport::tls_stream::socket_type accepted(io);
  tls_client client(io, acceptor.local_endpoint().port());
  acceptor.accept(accepted);
  mb::transport::tls_stream server(std::move(accepted), creds);

  std::optional<std::error_code> server_hs;
  server.async_handshake([&](std::error_code e) { server_hs = e; });
  REQUIRE_FALSE(client.handshake());
  REQUIRE(run_until(io, [&] { return server_hs.has_value(); }));
  REQUIRE_FALSE(*server_hs);

  const std::string record(500, 'r');  // one record, taken off the socket by one read-ahead
  std::optional<std::error_code> written;
  asio::async_write(client.stream(), asio::buffer(record), [&](std::error_code e, std::size_t) { written = e; });
  std::string got;
  char small[100];
  for (int wakes = 0; got.size() < record.size() && wakes < 20; ++wakes) {
    std::optional<std::error_code> woke;
    server.async_wait(asio::socket_base::wait_read, [&](std::error_code e) { woke = e; });
    REQUIRE(run_until(io, [&] { return woke.has_value(); }, 5s));
    REQUIRE_FALSE(*woke);
    const std::size_t n = server.read_some(asio::buffer(small), ec);
    if (ec == asio::error::would_block) continue;
    REQUIRE_FALSE(ec);
    got.append(small, n);
  }
  CHECK(got == record);
  CHECK(written.has_value());
}

TEST_CASE("tls: TLS 1.3 only refuses a TLS 1.2 client", "[tls]") {
  auto o = server_options();
  o.min_version = mb::transport::tls_version::v1_3;
  fixture f(o);
  tls_client c(f.io, f.port());
  SSL_set_max_proto_version(c.stream().native_handle(), TLS1_2_VERSION);
  CHECK(c.handshake());
  CHECK(run_until(f.io, [&] { return f.broker->stats().handshake_failures == 1; }));
}

TEST_CASE("tls: mutual TLS refuses a client without a certificate, with another CA's or an expired one", "[tls]") {
  fixture f(server_options(true));
  const char* cert = GENERATE("", "rogue", "expired");
  INFO("client certificate: " << (*cert ? cert : "none"));
  tls_client c(f.io, f.port(), cert);
  // Under TLS 1.3 the client's side may complete before the server has checked its certificate:
  // then the server's alert ends the connection before any CONNACK.
  if (!c.handshake()) {
    c.connect("refused");
    CHECK_FALSE(c.connack().has_value());
  }
  CHECK(run_until(f.io, [&] { return f.broker->stats().handshake_failures == 1; }));
  CHECK(f.hooks_saw().usernames.empty());

  tls_client good(f.io, f.port(), "alice");
  REQUIRE_FALSE(good.handshake());
  good.connect("alice-1");
  CHECK(good.connack() == 0);
}

TEST_CASE("tls: a certificate revocation list refuses the revoked client certificate; reloads read it again", "[tls]") {
  auto o = server_options(true);
  SECTION("without the list the revoked certificate is still good") {
    fixture f(o);
    tls_client c(f.io, f.port(), "revoked");
    REQUIRE_FALSE(c.handshake());
    c.connect("not-yet-revoked");
    CHECK(c.connack() == 0);
  }
  SECTION("with it, that one is refused and the others are not; a reload reads the list again") {
    // The listener starts with the list from before the revocation, then the file is replaced
    // and the certificates reloaded, as a gateway's SIGHUP does.
    const std::string crl = certs()("crl-under-test.pem");
    std::filesystem::copy_file(certs()("crl-empty.pem"), crl, std::filesystem::copy_options::overwrite_existing);
    o.crl_file = crl;
    fixture f(o);
    {
      tls_client c(f.io, f.port(), "revoked");
      REQUIRE_FALSE(c.handshake());
      c.connect("before-revocation");
      CHECK(c.connack() == 0);
    }
    std::filesystem::copy_file(certs()("crl.pem"), crl, std::filesystem::copy_options::overwrite_existing);
    std::error_code ec;
    f.broker->reload_certificates(0, ec);
    REQUIRE_FALSE(ec);
    {
      tls_client c(f.io, f.port(), "revoked");
      if (!c.handshake()) {
        c.connect("revoked");
        CHECK_FALSE(c.connack().has_value());
      }
      CHECK(run_until(f.io, [&] { return f.broker->stats().handshake_failures == 1; }));
    }
    tls_client good(f.io, f.port(), "alice");
    REQUIRE_FALSE(good.handshake());
    good.connect("alice-crl");
    CHECK(good.connack() == 0);
  }
  SECTION("a list without a CA, or one that cannot be read, is refused by listen()") {
    asio::io_context io;
    tls_broker b(io);
    auto bad = server_options();
    bad.crl_file = certs()("crl.pem");
    std::error_code ec;
    std::string what;
    b.listen<tls>(bad, ec, &what);
    CHECK(ec);
    CHECK(what.find("crlfile needs a CA") != std::string::npos);
    bad = server_options(true);
    bad.crl_file = certs()("no-such-crl.pem");
    b.listen<tls>(bad, ec, &what);
    CHECK(ec);
    CHECK(what.find("no-such-crl.pem") != std::string::npos);
  }
}

TEST_CASE("tls: use_identity_as_username: the certificate's CN is the username the authorization hook sees",
          "[tls]") {
  auto o = server_options(true);
  o.use_identity_as_username = true;
  fixture f(o);
  f.hooks_saw().allowed = {"alice"};
  tls_client a(f.io, f.port(), "alice");
  REQUIRE_FALSE(a.handshake());
  a.connect("a", std::string("mallory"));  // the CONNECT's User Name does not count
  REQUIRE(a.connack() == 0);
  tls_client b(f.io, f.port(), "bob");
  REQUIRE_FALSE(b.handshake());
  b.connect("b", std::string("alice"));
  REQUIRE(b.connack() == 0);
  b.publish("t/b", "from bob");
  a.publish("t/a", "from alice");
  REQUIRE(run_until(f.io, [&] { return !f.received.empty(); }));
  CHECK(f.received == std::vector<std::string>{"from alice"});
  CHECK(f.hooks_saw().refused == std::vector<std::string>{"bob"});
  CHECK(f.hooks_saw().usernames == std::vector<std::optional<std::string>>{std::string("alice"), std::string("bob")});
  CHECK(f.hooks_saw().identities == std::vector<std::string>{"alice", "bob"});
}

TEST_CASE("tls: a certificate without a CN is known by its first DNS name; without the option the CONNECT's "
          "username stays",
          "[tls]") {
  fixture f(server_options(true));
  tls_client c(f.io, f.port(), "san-only");
  REQUIRE_FALSE(c.handshake());
  c.connect("device", std::string("device-user"));
  REQUIRE(c.connack() == 0);
  REQUIRE(f.hooks_saw().identities == std::vector<std::string>{"device-7.example"});
  CHECK(f.hooks_saw().usernames == std::vector<std::optional<std::string>>{std::string("device-user")});
}

TEST_CASE("tls: a handshake that never completes is dropped at the CONNECT timeout; plain MQTT at once", "[tls]") {
  mb::broker_options bo;
  bo.connect_timeout = 1s;
  fixture f(server_options(), bo);
  asio::ip::tcp::socket stalled(f.io);
  stalled.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), f.port()));
  // The start of a ClientHello record, and then nothing.
  const unsigned char hello_start[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
  asio::write(stalled, asio::buffer(hello_start));
  asio::ip::tcp::socket plain(f.io);
  plain.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), f.port()));
  const unsigned char mqtt_connect[] = {0x10, 0x0d, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, 'x'};
  asio::write(plain, asio::buffer(mqtt_connect));

  const auto start = std::chrono::steady_clock::now();
  char byte = 0;
  bool plain_closed = false, stalled_closed = false;
  std::chrono::steady_clock::duration plain_after{}, stalled_after{};
  std::function<void()> read_plain = [&] {
    plain.async_read_some(asio::buffer(&byte, 1), [&](std::error_code ec, std::size_t) {
      if (!ec) return read_plain();  // the TLS alert
      plain_closed = true;
      plain_after = std::chrono::steady_clock::now() - start;
    });
  };
  read_plain();
  stalled.async_read_some(asio::buffer(&byte, 1), [&](std::error_code ec, std::size_t) {
    stalled_closed = static_cast<bool>(ec);
    stalled_after = std::chrono::steady_clock::now() - start;
  });
  REQUIRE(run_until(f.io, [&] { return plain_closed && stalled_closed; }, 5s));
  CHECK(plain_after < 900ms);   // refused by the handshake, not by the timeout
  CHECK(stalled_after >= 900ms);  // the CONNECT timeout (1 s, checked twice a second)
  CHECK(stalled_after < 3s);
  CHECK(f.broker->stats().connect_timeouts == 1);
  CHECK(f.broker->stats().handshake_failures == 1);
}

TEST_CASE("tls: listen() names the file or setting at fault", "[tls]") {
  asio::io_context io;
  tls_broker b(io);
  auto o = server_options();
  o.private_key_file = certs()("missing.key");
  std::error_code ec;
  std::string what;
  b.listen<tls>(o, ec, &what);
  CHECK(ec == std::errc::no_such_file_or_directory);
  CHECK(what.find("missing.key") != std::string::npos);
  try {
    b.listen<tls>(o);
    FAIL("listen() did not throw");
  } catch (const std::system_error& e) {
    CHECK(std::string(e.what()).find("missing.key") != std::string::npos);
  }

  o = server_options();
  o.private_key_file = certs()("alice.key");  // not the certificate's key
  b.listen<tls>(o, ec, &what);
  CHECK(ec);
  CHECK(what.find("alice.key") != std::string::npos);  // OpenSSL says "key values mismatch"

  o = server_options();
  o.use_identity_as_username = true;
  b.listen<tls>(o, ec, &what);
  CHECK(ec == asio::error::invalid_argument);
  CHECK(what.find("require_certificate") != std::string::npos);

  o = server_options();
  o.ciphers = "NO-SUCH-CIPHER";
  b.listen<tls>(o, ec, &what);
  CHECK(ec);
  CHECK(what.find("NO-SUCH-CIPHER") != std::string::npos);
}

TEST_CASE("tls: reload_certificates serves new connections the new certificate and keeps open ones", "[tls]") {
  // The listener's own copies of the files, which the test replaces as a renewal would.
  const auto live = certs().path / "live";
  std::filesystem::create_directories(live);
  const auto copy = [&](const char* from, const char* to) {
    std::filesystem::copy_file(certs()(from), live / to, std::filesystem::copy_options::overwrite_existing);
  };
  copy("server-chain.crt", "chain.crt");
  copy("server.key", "key.pem");
  auto o = server_options();
  o.certificate_chain_file = (live / "chain.crt").string();
  o.private_key_file = (live / "key.pem").string();
  fixture f(o);
  f.hooks_saw().allowed = {"(none)"};

  tls_client before(f.io, f.port());
  REQUIRE_FALSE(before.handshake());
  before.connect("before");
  REQUIRE(before.connack() == 0);
  CHECK(before.server_identity() == "mqttbroker test server");

  copy("server2-chain.crt", "chain.crt");
  copy("server2.key", "key.pem");
  std::error_code ec;
  f.broker->reload_certificates(0, ec);
  REQUIRE_FALSE(ec);

  tls_client after(f.io, f.port());
  REQUIRE_FALSE(after.handshake());
  CHECK(after.server_identity() == "mqttbroker test server 2");
  after.connect("after");
  REQUIRE(after.connack() == 0);
  before.publish("t/x", "still here");  // the open connection was not dropped
  REQUIRE(run_until(f.io, [&] { return !f.received.empty(); }));
  CHECK(f.received == std::vector<std::string>{"still here"});

  // A failed reload keeps what the listener had, and names the file.
  std::filesystem::remove(live / "key.pem");
  std::string what;
  f.broker->reload_certificates(0, ec, &what);
  CHECK(ec == std::errc::no_such_file_or_directory);
  CHECK(what.find("key.pem") != std::string::npos);
  tls_client later(f.io, f.port());
  REQUIRE_FALSE(later.handshake());
  CHECK(later.server_identity() == "mqttbroker test server 2");
}

TEST_CASE("tls: a listener of a transport without certificates has nothing to reload", "[tls]") {
  asio::io_context io;
  mb::broker<> b(io);
  mb::transport::tcp::listen_options o;
  o.address = "127.0.0.1";
  o.port = 0;
  b.listen(o);
  std::error_code ec;
  b.reload_certificates(0, ec);
  CHECK(ec == std::errc::operation_not_supported);
}

namespace {
struct bridge_log {
  std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();
  void log(mb::log_level, std::string_view m) { lines->emplace_back(m); }
};
struct bridge_log_policies : mb::default_policies {
  using hooks = bridge_log;
};
/// What the remote's subscriber got, "topic=payload".
struct remote_events {
  std::vector<std::string> messages;
  int subacks = 0;
  void on_connected(const mb::codec::connack&) {}
  void on_refused(const mb::codec::connack&) {}
  void on_connection_lost(std::error_code) {}
  void on_message(const mb::codec::publish& p) { messages.push_back(std::string(p.topic) + "=" + std::string(p.payload)); }
  void on_published(std::uint64_t, mb::reason_code) {}
  void on_suback(const mb::codec::suback&) { ++subacks; }
  void on_unsuback(const mb::codec::unsuback&) {}
  void on_disconnect(const mb::codec::disconnect&) {}
};
}  // namespace

TEST_CASE("tls: a bridge to Mosquitto over TLS with a client certificate; an untrusted server is refused and retried",
          "[tls][bridge][mosquitto]") {
  const auto& c = test_support::certs();
  // Mosquitto's TLS listener asks for a client certificate signed by the root; beside it a plain
  // listener for the test's own subscriber.
  std::uint16_t tls_port = 0;
  {
    asio::io_context probe;
    asio::ip::tcp::acceptor a(probe, {asio::ip::make_address("127.0.0.1"), 0});
    tls_port = a.local_endpoint().port();
  }
  const std::string tls_lines = "listener " + std::to_string(tls_port) +
                                " 127.0.0.1\ncafile %DIR%ca.crt\ncertfile %DIR%server-chain.crt\nkeyfile %DIR%server.key\n"
                                "require_certificate true\n";
  test_support::mosquitto_process remote(tls_lines, {c("ca.crt"), c("server-chain.crt"), c("server.key")});
  if (!test_support::usable(remote)) return;

  asio::io_context io;
  mb::client::client_options so;
  so.session.client_id = "tls-watch";
  so.addresses.push_back({"127.0.0.1", remote.port()});
  so.reconnect_min = std::chrono::milliseconds(50);
  mb::client::client<remote_events> watcher(io.get_executor(), so, remote_events{});
  watcher.subscribe("cloud/#", mb::codec::qos::at_least_once);
  watcher.start();
  REQUIRE(run_until(io, [&] { return watcher.handler().subacks == 1; }));

  bridge_log logs;
  mb::broker<bridge_log_policies> local(io, {}, logs);
  local.start();
  auto options_for = [&](const std::string& name) {
    mb::bridge::bridge_options o;
    o.name = name;
    o.remote.addresses.push_back({"127.0.0.1", tls_port});
    o.remote.session.client_id = "bridge-" + name;
    o.remote.reconnect_min = std::chrono::milliseconds(50);
    o.remote.reconnect_max = std::chrono::milliseconds(100);
    std::string why;
    o.topics.push_back(*mb::bridge::parse_topic_route({"#", "out", "1", "gw/", "cloud/"}, why));
    return o;
  };
  using tls_bridge = mb::bridge::bridge<mb::broker<bridge_log_policies>, mb::client::tls_connector>;

  SECTION("a client certificate the remote trusts, the remote's certificate checked against its address") {
    mb::client::tls_options t;
    t.ca_file = c("ca.crt");
    t.certificate_file = c("alice.crt");
    t.private_key_file = c("alice.key");
    tls_bridge br(local, options_for("tls-ok"), mb::client::tls_connector(t));
    br.start();
    REQUIRE(run_until(io, [&] { return br.connected(); }));
    local.publish("gw/secure", "over TLS", mb::codec::qos::at_least_once);
    REQUIRE(run_until(io, [&] { return !watcher.handler().messages.empty(); }));
    CHECK(watcher.handler().messages == std::vector<std::string>{"cloud/secure=over TLS"});
    br.stop();
  }
  SECTION("no client certificate: the remote ends the handshake; logged, retried, never connected") {
    mb::client::tls_options t;
    t.ca_file = c("ca.crt");
    tls_bridge br(local, options_for("tls-nocert"), mb::client::tls_connector(t));
    br.start();
    run_until(io, [] { return false; }, std::chrono::milliseconds(600));
    CHECK_FALSE(br.connected());
    const auto n = std::count_if(logs.lines->begin(), logs.lines->end(), [](const std::string& l) {
      return l.find("bridge tls-nocert: cannot connect") != std::string::npos;
    });
    CHECK(n >= 2);
    br.stop();
  }
  SECTION("a remote whose certificate no trusted CA signed is refused") {
    mb::client::tls_options t;
    t.ca_file = c("rogue-ca.crt");
    t.certificate_file = c("alice.crt");
    t.private_key_file = c("alice.key");
    tls_bridge br(local, options_for("tls-rogue"), mb::client::tls_connector(t));
    br.start();
    run_until(io, [] { return false; }, std::chrono::milliseconds(600));
    CHECK_FALSE(br.connected());
    const bool said = std::any_of(logs.lines->begin(), logs.lines->end(), [](const std::string& l) {
      return l.find("bridge tls-rogue: cannot connect: certificate verify failed") != std::string::npos;
    });
    CHECK(said);
    br.stop();
  }
  SECTION("a CA file that cannot be read is an exception naming it") {
    mb::client::tls_options t;
    t.ca_file = "/nonexistent/ca.crt";
    std::string what;
    try {
      mb::client::tls_connector unusable(t);
    } catch (const std::system_error& e) {
      what = e.what();
    }
    CHECK(what.find("/nonexistent/ca.crt") != std::string::npos);
  }
  watcher.stop();
  run_until(io, [] { return false; }, std::chrono::milliseconds(50));
  bool stopped = false;
  local.async_stop([&](std::error_code) { stopped = true; });
  REQUIRE(run_until(io, [&] { return stopped; }));
}
