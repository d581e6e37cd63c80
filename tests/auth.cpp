#include <mqttbroker/auth/password_file.hpp>
#include <mqttbroker/auth/scram.hpp>

#include <mqttbroker/broker.hpp>
#include <mqttbroker/codec.hpp>
#include <mqttbroker/transport/memory.hpp>

#include "catch.hpp"
#include "rx.hpp"
#include "scram_client.hpp"
#include "stream_client.hpp"

#include <asio/io_context.hpp>
#include <asio/write.hpp>

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

// SCRAM-SHA-256 (include/mqttbroker/auth/scram.hpp): the server alone against RFC 7677's example
// and broken messages, then whole exchanges through a broker over the memory transport with the
// tests' own client side (scram_client.hpp).

namespace mb = mqttbroker;
namespace codec = mqttbroker::codec;
namespace hooks = mqttbroker::hooks;
using codec::protocol_version;
using mb::reason_code;
using mb::auth::scram_credentials;
using mb::auth::scram_errc;
using test_rx::rx;
using namespace test_rx::packet_types;

namespace {

// RFC 7677 section 3: user "user", password "pencil", and the nonces and salt of its example.
constexpr std::string_view rfc_client_first = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
constexpr std::string_view rfc_server_nonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
constexpr std::string_view rfc_server_first =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
constexpr std::string_view rfc_client_final =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
constexpr std::string_view rfc_server_final = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
constexpr std::string_view rfc_salt_base64 = "W22ZaJ0SNY7soEsUEjb6gQ==";

/// The users a test knows, shared by copies of the lookup.
struct user_table {
  std::shared_ptr<std::map<std::string, scram_credentials, std::less<>>> users =
      std::make_shared<std::map<std::string, scram_credentials, std::less<>>>();
  std::optional<scram_credentials> operator()(std::string_view user) const {
    auto it = users->find(user);
    if (it == users->end()) return std::nullopt;
    return it->second;
  }
  void add(const std::string& user, std::string_view password, std::string_view salt = {}) {
    scram_credentials c;
    const std::error_code ec = salt.empty() ? mb::auth::make_scram_credentials(password, c)
                                            : mb::auth::derive_scram_credentials(password, salt, 4096, c);
    REQUIRE_FALSE(ec);
    (*users)[user] = c;
  }
};

/// A SCRAM server whose nonce is RFC 7677's, and whose only user is RFC 7677's.
mb::auth::scram_sha256<user_table> rfc_server() {
  user_table t;
  t.add("user", "pencil", test_scram::from_base64(rfc_salt_base64));
  mb::auth::scram_options o;
  o.server_nonce = [] { return std::string(rfc_server_nonce); };
  return mb::auth::scram_sha256<user_table>(t, o);
}

hooks::auth_exchange exchange(hooks::auth_stage stage, std::string_view data,
                              std::shared_ptr<hooks::auth_state> state = nullptr) {
  hooks::auth_exchange x;
  x.stage = stage;
  x.method = "SCRAM-SHA-256";
  x.data = data;
  x.state = std::move(state);
  return x;
}

std::string text(const std::optional<std::string>& s) { return s.value_or("(none)"); }

}  // namespace

TEST_CASE("scram: credentials derived from a password are RFC 7677's StoredKey and ServerKey", "[scram]") {
  scram_credentials c;
  REQUIRE_FALSE(mb::auth::derive_scram_credentials("pencil", test_scram::from_base64(rfc_salt_base64), 4096, c));
  CHECK(test_scram::to_base64(c.stored_key.data(), c.stored_key.size()) == "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=");
  CHECK(test_scram::to_base64(c.server_key.data(), c.server_key.size()) == "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=");
  CHECK(c.iterations == 4096);
  // A random salt each time: two derivations of one password differ.
  scram_credentials a, b;
  REQUIRE_FALSE(mb::auth::make_scram_credentials("pencil", a));
  REQUIRE_FALSE(mb::auth::make_scram_credentials("pencil", b));
  CHECK(a.salt.size() == 16);
  CHECK(a.salt != b.salt);
  CHECK(a.stored_key != b.stored_key);
  // Passwords must be printable ASCII (SASLprep is not implemented beyond that).
  CHECK(mb::auth::derive_scram_credentials("p\xC3\xA9ncil", "salt", 4096, c) == scram_errc::invalid_password);
  CHECK(mb::auth::derive_scram_credentials("tab\there", "salt", 4096, c) == scram_errc::invalid_password);
  CHECK(mb::auth::derive_scram_credentials("pencil", "salt", 0, c) == scram_errc::crypto_failure);
  CHECK(std::error_code(scram_errc::invalid_proof).message() == "invalid-proof");
  CHECK(std::string(std::error_code(scram_errc::invalid_proof).category().name()) == "mqttbroker.scram");
}

TEST_CASE("scram: given RFC 7677's nonce the server sends exactly its server-first and server-final", "[scram]") {
  auto server = rfc_server();
  const hooks::auth_step first = server.step(exchange(hooks::auth_stage::connect, rfc_client_first));
  REQUIRE(first.what == hooks::auth_step::kind::next);
  CHECK(text(first.data) == rfc_server_first);
  REQUIRE(first.state);
  const hooks::auth_step last = server.step(exchange(hooks::auth_stage::continuation, rfc_client_final, first.state));
  REQUIRE(last.what == hooks::auth_step::kind::success);
  CHECK(text(last.data) == rfc_server_final);
  // The same from a re-authentication's AUTH 0x19.
  const hooks::auth_step again = server.step(exchange(hooks::auth_stage::reauthentication, rfc_client_first, last.state));
  CHECK(text(again.data) == rfc_server_first);

  // The tests' client, given the RFC's nonce, writes the RFC's messages and accepts its server's.
  test_scram::client client("user", "pencil", "rOprNGfwEbeRWgbNEkqO");
  CHECK(client.first() == rfc_client_first);
  CHECK(client.final(rfc_server_first) == rfc_client_final);
  CHECK(client.verify(rfc_server_final));
  CHECK_FALSE(client.verify("v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
}

TEST_CASE("scram: wrong proofs, unknown users and broken messages are refused with RFC 5802's error names",
          "[scram]") {
  auto server = rfc_server();
  auto first_step = [&](std::string_view client_first) {
    return server.step(exchange(hooks::auth_stage::connect, client_first));
  };
  auto refused = [](const hooks::auth_step& s, reason_code why, std::string_view e) {
    CHECK(s.what == hooks::auth_step::kind::failure);
    CHECK(s.reason == why);
    CHECK(text(s.data) == "e=" + std::string(e));
  };

  SECTION("a wrong password: 0x86 with invalid-proof") {
    test_scram::client wrong("user", "pen", "rOprNGfwEbeRWgbNEkqO");
    const auto first = first_step(wrong.first());
    const std::string final = wrong.final(*first.data);
    REQUIRE_FALSE(final.empty());
    refused(server.step(exchange(hooks::auth_stage::continuation, final, first.state)),
            reason_code::bad_user_name_or_password, "invalid-proof");
  }
  SECTION("an unknown user gets a made-up salt, steady for its name, then the same invalid-proof") {
    const auto a = first_step("n,,n=nobody,r=abc");
    const auto b = first_step("n,,n=nobody,r=abc");
    const auto c = first_step("n,,n=someone,r=abc");
    REQUIRE(a.what == hooks::auth_step::kind::next);
    CHECK(text(a.data) == text(b.data));
    CHECK(text(a.data) != text(c.data));
    CHECK(text(a.data).find(",i=4096") != std::string::npos);
    test_scram::client guess("nobody", "pencil", "abc");
    guess.first();
    refused(server.step(exchange(hooks::auth_stage::continuation, guess.final(*a.data), a.state)),
            reason_code::bad_user_name_or_password, "invalid-proof");
  }
  SECTION("the server-first names the user's own salt and iteration count; an unknown user's are the options'") {
    user_table t;
    scram_credentials c;
    REQUIRE_FALSE(mb::auth::derive_scram_credentials("secret", "NaCl", 1000, c));
    (*t.users)["few"] = c;
    mb::auth::scram_options o;
    o.unknown_user_iterations = 2048;
    o.server_nonce = [] { return std::string("srv"); };
    mb::auth::scram_sha256<user_table> few(t, o);
    const auto first = few.step(exchange(hooks::auth_stage::connect, "n,,n=few,r=cli"));
    CHECK(text(first.data) == "r=clisrv,s=" + test_scram::to_base64("NaCl") + ",i=1000");
    test_scram::client client("few", "secret", "cli");
    client.first();
    const auto last = few.step(exchange(hooks::auth_stage::continuation, client.final(*first.data), first.state));
    REQUIRE(last.what == hooks::auth_step::kind::success);
    CHECK(client.verify(*last.data));
    const auto unknown = few.step(exchange(hooks::auth_stage::connect, "n,,n=many,r=cli"));
    CHECK(text(unknown.data).substr(text(unknown.data).size() - 7) == ",i=2048");
  }
  SECTION("the client-first message") {
    refused(first_step("p=tls-unique,,n=user,r=abc"), reason_code::not_authorized, "channel-binding-not-supported");
    refused(first_step("n,,m=ext,n=user,r=abc"), reason_code::not_authorized, "extensions-not-supported");
    refused(first_step("n,,n=us=ZZer,r=abc"), reason_code::not_authorized, "invalid-username-encoding");
    refused(first_step("n,,n=us\xC3\xA9r,r=abc"), reason_code::not_authorized, "invalid-username-encoding");
    refused(first_step("n,,n=,r=abc"), reason_code::not_authorized, "invalid-username-encoding");
    refused(first_step("x,,n=user,r=abc"), reason_code::not_authorized, "invalid-encoding");
    refused(first_step("n,,r=abc,n=user"), reason_code::not_authorized, "invalid-encoding");
    refused(first_step("n,,n=user"), reason_code::not_authorized, "invalid-encoding");
    refused(first_step("n,,n=user,r="), reason_code::not_authorized, "invalid-encoding");
    refused(first_step("n,a=admin,n=user,r=abc"), reason_code::not_authorized, "other-error");
  }
  SECTION("accepted variants: the y flag, an authorisation identity that is the user, an escaped name") {
    CHECK(first_step("y,,n=user,r=abc").what == hooks::auth_step::kind::next);
    CHECK(first_step("n,a=user,n=user,r=abc").what == hooks::auth_step::kind::next);
    CHECK(first_step("n,,n=a=2Cb=3Dc,r=abc,x=ignored").what == hooks::auth_step::kind::next);
  }
  SECTION("the client-final message") {
    const auto first = first_step(rfc_client_first);
    auto final_step = [&](std::string_view client_final) {
      return server.step(exchange(hooks::auth_stage::continuation, client_final, first.state));
    };
    const std::string nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const std::string proof = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    refused(final_step("c=eSws,r=" + nonce + "," + proof), reason_code::not_authorized, "channel-bindings-dont-match");
    refused(final_step("c=biws,r=rOprNGfwEbeRWgbNEkqO," + proof), reason_code::not_authorized, "other-error");
    refused(final_step("c=biws,r=" + nonce + ",p=not base64"), reason_code::not_authorized, "invalid-encoding");
    refused(final_step("c=biws,r=" + nonce + ",p=AAAA"), reason_code::not_authorized, "invalid-encoding");
    refused(final_step("c=biws,r=" + nonce), reason_code::not_authorized, "invalid-encoding");
    refused(final_step("r=" + nonce + ",c=biws," + proof), reason_code::not_authorized, "invalid-encoding");
    // A continuation without the state of a first message has nothing to go on.
    refused(server.step(exchange(hooks::auth_stage::continuation, rfc_client_final)), reason_code::not_authorized,
            "other-error");
    // And the right one still passes after all that.
    CHECK(final_step(rfc_client_final).what == hooks::auth_step::kind::success);
  }
  SECTION("another method is not this one: 0x8C [MQTT-4.12.0-1]") {
    hooks::auth_exchange x = exchange(hooks::auth_stage::connect, rfc_client_first);
    x.method = "SCRAM-SHA-1";
    const auto s = server.step(x);
    CHECK(s.what == hooks::auth_step::kind::failure);
    CHECK(s.reason == reason_code::bad_authentication_method);
  }
  SECTION("the user is the one the CONNECT's User Name and an earlier authentication named") {
    hooks::auth_exchange x = exchange(hooks::auth_stage::connect, rfc_client_first);
    x.client.username = std::string_view("someone-else");
    refused(server.step(x), reason_code::not_authorized, "other-error");
    x.client.username = std::string_view("user");
    CHECK(server.step(x).what == hooks::auth_step::kind::next);
    auto before = std::make_shared<mb::auth::scram_state>();
    before->user = "someone-else";
    refused(server.step(exchange(hooks::auth_stage::reauthentication, rfc_client_first, before)),
            reason_code::not_authorized, "other-error");
  }
}

// ---- whole exchanges through a broker

namespace {

/// A hooks policy built on scram_hooks, with a hook of its own beside it.
struct scram_broker_hooks : mb::auth::scram_hooks<user_table> {
  scram_broker_hooks(user_table t, std::vector<std::string>* c) : scram_hooks(std::move(t)), connected(c) {}
  void on_connect(const hooks::client_info& c) { connected->emplace_back(c.client_id); }
  std::vector<std::string>* connected;
};
struct scram_policies : mb::default_policies {
  using transport = mb::transport::memory;
  using hooks = scram_broker_hooks;
};

std::string next_listener() {
  static int n = 0;
  return "scram-test-" + std::to_string(++n);
}

/// A 5.0 client over the memory transport; what it receives is decoded into rx records.
class mem_client {
 public:
  mem_client(asio::io_context& io, const std::string& listener)
      : s_(std::make_shared<state>(mb::transport::memory::connect(io.get_executor(), listener))) {
    read(s_);
  }
  ~mem_client() {
    std::error_code ignored;
    s_->stream.close(ignored);
  }
  template <class Packet>
  void send(const Packet& p) {
    auto bytes = std::make_shared<std::string>();
    REQUIRE_FALSE(codec::encode(p, protocol_version::v5, *bytes));
    asio::async_write(s_->stream, asio::buffer(*bytes), [bytes](std::error_code, std::size_t) {});
  }
  /// CONNECT naming `method`, with the client-first message as its Authentication Data.
  void connect(const std::string& id, std::string_view method, std::string_view data) {
    codec::connect c;
    c.version = protocol_version::v5;
    c.client_id = id;
    codec::properties_builder props;
    props.add(codec::property_id::authentication_method, method);
    props.add(codec::property_id::authentication_data, data);
    c.properties = props.view();
    send(c);
  }
  void auth(reason_code reason, std::string_view data) {
    codec::auth a;
    a.reason = reason;
    codec::properties_builder props;
    props.add(codec::property_id::authentication_method, std::string_view("SCRAM-SHA-256"));
    props.add(codec::property_id::authentication_data, data);
    a.properties = props.view();
    send(a);
  }
  rx pop(codec::packet_type t) {
    REQUIRE_FALSE(s_->inbox.empty());
    rx r = std::move(s_->inbox.front());
    s_->inbox.pop_front();
    INFO("expected " << codec::to_string(t) << ", got " << codec::to_string(r.type));
    REQUIRE(r.type == t);
    return r;
  }
  bool empty() const { return s_->inbox.empty(); }
  bool closed() const { return s_->closed; }

 private:
  struct state {
    explicit state(mb::transport::memory_stream s)
        : stream(std::move(s)), decoder(codec::decoder_options{codec::role::client, codec::max_packet_size, protocol_version::v5}) {}
    mb::transport::memory_stream stream;
    codec::decoder decoder;
    std::array<std::uint8_t, 256> buffer{};
    std::deque<rx> inbox;
    bool closed = false;
  };
  static void read(const std::shared_ptr<state>& s) {
    s->stream.async_read_some(asio::buffer(s->buffer), [s](std::error_code ec, std::size_t n) {
      if (ec) {
        s->closed = true;
        return;
      }
      const auto res = s->decoder.feed(s->buffer.data(), n, [&](codec::packet& p) { s->inbox.push_back(test_rx::to_rx(p)); });
      if (res.ec) {
        s->closed = true;
        return;
      }
      read(s);
    });
  }
  std::shared_ptr<state> s_;
};

/// A broker offering SCRAM-SHA-256 to users "user" (password "pencil") and "other" ("secret").
struct scram_broker {
  scram_broker() : broker(io, {}, make_hooks(table, &connected)) {
    broker.listen(mb::transport::memory::listen_options(listener));
    broker.start();
  }
  ~scram_broker() {
    broker.async_stop([](std::error_code) {});
    settle();
  }
  static scram_broker_hooks make_hooks(user_table& t, std::vector<std::string>* connected) {
    t.add("user", "pencil");
    t.add("other", "secret");
    return scram_broker_hooks(t, connected);
  }
  void settle() {
    for (int i = 0; i < 100'000; ++i) {
      if (io.stopped()) io.restart();
      if (io.poll() == 0) return;
    }
    FAIL("the broker did not settle");
  }
  std::unique_ptr<mem_client> client() { return std::make_unique<mem_client>(io, listener); }

  /// The client's SCRAM exchange as far as the CONNACK; returns it.
  rx authenticate(mem_client& c, const std::string& id, test_scram::client& scram) {
    c.connect(id, "SCRAM-SHA-256", scram.first());
    settle();
    const rx server_first = c.pop(AUTH);
    CHECK(server_first.code == 0x18);
    CHECK(server_first.auth_method == std::optional<std::string>("SCRAM-SHA-256"));
    const std::string final = scram.final(server_first.auth_data.value_or(""));
    REQUIRE_FALSE(final.empty());
    c.auth(reason_code::continue_authentication, final);
    settle();
    return c.pop(CONNACK);
  }

  asio::io_context io;
  user_table table;
  std::vector<std::string> connected;
  std::string listener = next_listener();
  mb::broker<scram_policies> broker;
};

}  // namespace

TEST_CASE("scram through the broker: the right password connects, and the client verifies the server",
          "[scram][broker][MQTT-4.12.0-2][MQTT-4.12.0-5]") {
  scram_broker b;
  auto c = b.client();
  test_scram::client scram("user", "pencil", "fyko+d2lbbFgONRv9qkxdawL");
  const rx ack = b.authenticate(*c, "scram-1", scram);
  CHECK(ack.code == 0);
  CHECK(ack.auth_method == std::optional<std::string>("SCRAM-SHA-256"));
  REQUIRE(ack.auth_data);
  CHECK(scram.verify(*ack.auth_data));
  CHECK(b.connected == std::vector<std::string>{"scram-1"});
  c->send(codec::pingreq{});
  b.settle();
  c->pop(PINGRESP);
  CHECK(b.broker.stats().sessions == 1);
}

TEST_CASE("scram through the broker: a wrong password or an unknown user is refused with CONNACK 0x86 and e=invalid-proof",
          "[scram][broker][MQTT-4.12.0-4]") {
  scram_broker b;
  const std::pair<std::string, std::string> tries[] = {{"user", "pen"}, {"other", "pencil"}, {"nobody", "pencil"}};
  for (const auto& t : tries) {
    INFO(t.first << " / " << t.second);
    auto c = b.client();
    test_scram::client scram(t.first, t.second, "abcdefgh");
    const rx ack = b.authenticate(*c, "refused", scram);
    CHECK(ack.code == 0x86);
    CHECK(ack.auth_data == std::optional<std::string>("e=invalid-proof"));
    CHECK(c->closed());
  }
  CHECK(b.connected.empty());
  CHECK(b.broker.stats().sessions == 0);
}

TEST_CASE("scram through the broker: a method other than SCRAM-SHA-256 is refused with CONNACK 0x8C",
          "[scram][broker][MQTT-4.12.0-1]") {
  scram_broker b;
  auto c = b.client();
  c->connect("sha1", "SCRAM-SHA-1", "n,,n=user,r=abc");
  b.settle();
  CHECK(c->pop(CONNACK).code == 0x8C);
  CHECK(c->closed());
}

TEST_CASE("scram through the broker: re-authentication with AUTH 0x19 succeeds with AUTH 0x00; a wrong password or another user ends the connection",
          "[scram][broker][MQTT-4.12.1-2][MQTT-3.15.2-1]") {
  scram_broker b;
  auto c = b.client();
  test_scram::client first("user", "pencil", "nonce-one");
  REQUIRE(b.authenticate(*c, "re", first).code == 0);

  test_scram::client again("user", "pencil", "nonce-two");
  c->auth(reason_code::re_authenticate, again.first());
  b.settle();
  const rx server_first = c->pop(AUTH);
  CHECK(server_first.code == 0x18);
  c->auth(reason_code::continue_authentication, again.final(server_first.auth_data.value_or("")));
  b.settle();
  const rx done = c->pop(AUTH);
  CHECK(done.code == 0x00);
  CHECK(done.auth_method == std::optional<std::string>("SCRAM-SHA-256"));
  CHECK(again.verify(done.auth_data.value_or("")));
  CHECK_FALSE(c->closed());

  SECTION("a wrong password: DISCONNECT 0x87 (DISCONNECT has no 0x86)") {
    test_scram::client wrong("user", "wrong", "nonce-three");
    c->auth(reason_code::re_authenticate, wrong.first());
    b.settle();
    const rx sf = c->pop(AUTH);
    c->auth(reason_code::continue_authentication, wrong.final(sf.auth_data.value_or("")));
    b.settle();
    CHECK(c->pop(DISCONNECT).code == 0x87);
    CHECK(c->closed());
  }
  SECTION("another user, even with the right password: DISCONNECT 0x87") {
    test_scram::client other("other", "secret", "nonce-four");
    c->auth(reason_code::re_authenticate, other.first());
    b.settle();
    CHECK(c->pop(DISCONNECT).code == 0x87);
    CHECK(c->closed());
  }
}

// ---- password files (include/mqttbroker/auth/password_file.hpp)

namespace {

using mb::auth::password_errc;
using mb::auth::password_file;

/// Made by Debian 12's mosquitto_passwd (2.0.11): `-c -b`, `-b`, `-H sha512 -b` and
/// `-H sha512-pbkdf2 -I 1000 -b` with the passwords "s3cret", "pässwörd", "old-style" and "".
constexpr std::string_view mosquitto_passwd_file =
    "alice:$7$101$/AsMFioPix1arFHh$woePButMFGrourNXKnEqvWh1Py9FkmlSihHfcXOKuL1EImR0jhr0EaBU7QtO43VO71Y/1LhM8kE5V3TBe59zVA==\n"
    "bob smith:$7$101$omoiurTJjExe/+2d$qCIPFAJOAHh3xX8t9BR7xXmk0wj6OcczisE1yeyF9sUQHXK+/98o/XyDyWkuJNH8M+vppk5LhVw0x1Sq2R7o2g==\n"
    "carol:$6$detRhvjXBRNHQWKR$ImXtZb02AlabqjVawIGzvFItie+wEgb/egfkMRgGBFGZaI9YWXMl7Fulo1KobsWHHO/ci5w0MnRA1IS4wDtaUw==\n"
    "dave:$7$1000$hrveL1t63Z0BXA3Z$gHc25bKILxkO5AZohvgLdyNJdj1HAsFp3pFv/S6GfsfNWslaqMVff3hcBkACzF1BD2OdIc7uRg280wKN423HiQ==\n";

password_file parsed(std::string_view text) {
  std::error_code ec;
  std::size_t line = 0;
  password_file f = password_file::parse(text, ec, &line);
  INFO("line " << line << ": " << ec.message());
  REQUIRE_FALSE(ec);
  return f;
}

}  // namespace

TEST_CASE("password file: mosquitto_passwd's entries, PBKDF2-SHA512 ($7$) and SHA-512 ($6$), check", "[password]") {
  const password_file f = parsed(mosquitto_passwd_file);
  CHECK(f.size() == 4);
  CHECK(f.check("alice", "s3cret"));
  CHECK(f.check("bob smith", "p\xC3\xA4ssw\xC3\xB6rd"));
  CHECK(f.check("carol", "old-style"));
  CHECK(f.check("dave", ""));
  CHECK_FALSE(f.check("alice", "s3cret "));
  CHECK_FALSE(f.check("alice", "S3cret"));
  CHECK_FALSE(f.check("alice", ""));
  CHECK_FALSE(f.check("carol", "old-styl"));
  CHECK_FALSE(f.check("dave", "x"));
  CHECK_FALSE(f.check("Alice", "s3cret"));
  CHECK_FALSE(f.check("nobody", "s3cret"));
  CHECK(f.contains("bob smith"));
  CHECK_FALSE(f.contains("bob"));
}

TEST_CASE("password file: comments, blank lines and CRLF are read; a broken line is refused with its number", "[password]") {
  const password_file f = parsed(
      "# made by hand\r\n\r\n"
      "alice:$7$101$/AsMFioPix1arFHh$woePButMFGrourNXKnEqvWh1Py9FkmlSihHfcXOKuL1EImR0jhr0EaBU7QtO43VO71Y/1LhM8kE5V3TBe59zVA==\r\n");
  CHECK(f.check("alice", "s3cret"));

  const std::string good =
      "$7$101$/AsMFioPix1arFHh$woePButMFGrourNXKnEqvWh1Py9FkmlSihHfcXOKuL1EImR0jhr0EaBU7QtO43VO71Y/1LhM8kE5V3TBe59zVA==";
  const struct {
    std::string line;
    password_errc why;
  } broken[] = {
      {"alice", password_errc::malformed},                 // no hash
      {"alice:s3cret", password_errc::malformed},          // a password in plain text
      {":" + good, password_errc::bad_user},               // no user
      {"al\x01ice:" + good, password_errc::bad_user},       // a control character
      {"alice:$5$abcd$abcd", password_errc::malformed},    // another crypt(3) method
      {"alice:$7$0$/AsMFioPix1arFHh$" + good.substr(good.rfind('$') + 1), password_errc::malformed},  // 0 iterations
      {"alice:$7$99999999$/AsMFioPix1arFHh$" + good.substr(good.rfind('$') + 1), password_errc::malformed},  // too many
      {"alice:$7$101$not base64!$" + good.substr(good.rfind('$') + 1), password_errc::malformed},
      {"alice:$7$101$/AsMFioPix1arFHh$AAAA", password_errc::malformed},  // a hash of 3 bytes
      {"alice:$7$101$/AsMFioPix1arFHh", password_errc::malformed},       // no hash field
      {"alice:$6$a$b$c", password_errc::malformed},                       // a field too many
  };
  for (const auto& b : broken) {
    INFO(b.line);
    std::error_code ec;
    std::size_t line = 0;
    const password_file f2 = password_file::parse("# first\nbob:" + good + "\n" + b.line + "\n", ec, &line);
    CHECK(ec == b.why);
    CHECK(line == 3);
    CHECK(f2.size() == 0);  // nothing of a refused file is kept
  }
  std::error_code ec;
  std::size_t line = 0;
  password_file::parse("alice:" + good + "\nalice:" + good + "\n", ec, &line);
  CHECK(ec == password_errc::duplicate_user);
  CHECK(line == 2);
  std::string what;
  password_file::read("/nonexistent/mqttbroker-passwords", ec, &what);
  CHECK(ec == password_errc::unreadable);
  CHECK(what.find("/nonexistent/mqttbroker-passwords") != std::string::npos);
}

TEST_CASE("password file: make_line writes what mosquitto_passwd writes, with a fresh salt", "[password]") {
  std::error_code ec;
  const std::string a = password_file::make_line("erin", "hunter2", ec);
  REQUIRE_FALSE(ec);
  const std::string b = password_file::make_line("erin", "hunter2", ec);
  CHECK(a.rfind("erin:$7$101$", 0) == 0);
  CHECK(a.size() == b.size());
  CHECK(a != b);  // salted
  // "$7$101$" + base64 of 12 bytes (16 characters) + "$" + base64 of 64 bytes (88)
  CHECK(a.size() == std::string("erin:$7$101$").size() + 16 + 1 + 88);
  const password_file f = parsed(a + "\n");
  CHECK(f.check("erin", "hunter2"));
  CHECK_FALSE(f.check("erin", "hunter3"));
  password_file::make_line("a:b", "x", ec);
  CHECK(ec == password_errc::bad_user);
}

namespace {

struct password_policies : mb::default_policies {
  using transport = mb::transport::memory;
  using hooks = mb::auth::password_hooks;
};

/// A broker whose CONNECTs are checked against mosquitto_passwd_file.
struct password_broker {
  explicit password_broker(bool allow_anonymous)
      : checks(parsed(mosquitto_passwd_file), allow_anonymous), broker(io, {}, checks) {
    broker.listen(mb::transport::memory::listen_options(listener));
    broker.start();
  }
  ~password_broker() {
    broker.async_stop([](std::error_code) {});
    settle();
  }
  void settle() {
    for (int i = 0; i < 100'000; ++i) {
      if (io.stopped()) io.restart();
      if (io.poll() == 0) return;
    }
    FAIL("the broker did not settle");
  }
  /// The CONNACK code a CONNECT as `user` (none: anonymous) with `password` gets.
  std::uint8_t connack(protocol_version v, std::optional<std::string> user, const std::string& password = "") {
    test_client::memory_client c(io, listener, v);
    c.set_password(password);
    c.connect("pw-client", true, std::nullopt, user ? std::optional<std::string_view>(*user) : std::nullopt);
    settle();
    return c.pop(CONNACK).code;
  }

  asio::io_context io;
  std::string listener = next_listener();
  mb::auth::password_hooks checks;  // shares its file with the broker's copy
  mb::broker<password_policies> broker;
};

}  // namespace

TEST_CASE("password file through the broker: the right password connects; anything else is not authorized, as Mosquitto answers",
          "[password][broker][MQTT-3.1.4-2]") {
  password_broker b(false);
  for (const auto v : {protocol_version::v3_1_1, protocol_version::v5}) {
    INFO("protocol version " << static_cast<int>(v));
    const std::uint8_t refused = v == protocol_version::v5 ? 0x87 : 5;
    CHECK(b.connack(v, "alice", "s3cret") == 0);
    CHECK(b.connack(v, "carol", "old-style") == 0);
    CHECK(b.connack(v, "alice", "wrong") == refused);
    CHECK(b.connack(v, "nobody", "s3cret") == refused);
    CHECK(b.connack(v, std::nullopt) == refused);  // anonymous, not allowed
  }
}

TEST_CASE("password file through the broker: allow_anonymous admits a CONNECT without a user name, never a wrong password; "
          "replace() takes a new file for later CONNECTs",
          "[password][broker]") {
  password_broker b(true);
  CHECK(b.connack(protocol_version::v5, std::nullopt) == 0);
  CHECK(b.connack(protocol_version::v5, "alice", "wrong") == 0x87);
  std::error_code ec;
  const std::string erin = password_file::make_line("erin", "hunter2", ec);
  REQUIRE_FALSE(ec);
  b.checks.replace(parsed(erin + "\n"), false);
  CHECK(b.connack(protocol_version::v3_1_1, "erin", "hunter2") == 0);
  CHECK(b.connack(protocol_version::v3_1_1, "alice", "s3cret") == 5);
  CHECK(b.connack(protocol_version::v3_1_1, std::nullopt) == 5);
}
