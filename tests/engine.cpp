#include <mqttbroker/engine/protocol.hpp>

#include <mqttbroker/codec.hpp>
#include <mqttbroker/hooks/hooks.hpp>
#include <mqttbroker/locking/none.hpp>
#include <mqttbroker/locking/shared.hpp>

#include "catch.hpp"
#include "rx.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

// The protocol engine alone: no sockets, no io_context, no threads, no clock. Each fake link
// records what the engine queued for it and the events it asked to run on the link's thread; the
// test gives every input its time, so deadlines are checked to the nanosecond.

namespace mb = mqttbroker;
namespace codec = mqttbroker::codec;
using codec::protocol_version;
using codec::qos;
using mb::reason_code;
using test_rx::rx;
using namespace test_rx::packet_types;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

namespace {

struct plain_policies {
  using locking = mb::locking::none;
  using hooks = mb::hooks::none;
};

/// The user names a CONNECT may carry: "bad" has bad credentials, "banned" is not authorised.
struct auth_hooks {
  mb::hooks::auth_result authenticate(const mb::hooks::connect_info& info) {
    if (info.username && *info.username == "bad") return mb::hooks::auth_result::bad_credentials;
    if (info.username && *info.username == "banned") return mb::hooks::auth_result::not_authorized;
    return mb::hooks::auth_result::accept;
  }
};
struct auth_policies : plain_policies {
  using hooks = auth_hooks;
};

/// What a test CONNECT asks for: hello("id").keep_alive(10).session_expiry(60)...
struct hello {
  explicit hello(std::string client_id, bool clean_start = true) : id(std::move(client_id)), clean(clean_start) {}
  hello& keep_alive(std::uint16_t s) {
    keep_alive_s = s;
    return *this;
  }
  hello& session_expiry(std::uint32_t s) {
    expiry = s;
    return *this;
  }
  hello& will(std::string topic, std::optional<std::uint32_t> delay = std::nullopt) {
    will_topic = std::move(topic);
    will_delay = delay;
    return *this;
  }
  hello& will_expiry(std::uint32_t seconds, bool retained) {
    will_expiry_s = seconds;
    will_retain = retained;
    return *this;
  }
  hello& receive_maximum(std::uint16_t n) {
    receive_max = n;
    return *this;
  }
  hello& maximum_packet_size(std::uint32_t n) {
    max_packet = n;
    return *this;
  }
  hello& user(std::string name) {
    username = std::move(name);
    return *this;
  }
  hello& request_problem_information(std::uint32_t v) {
    problem_info = v;
    return *this;
  }
  std::string id;
  bool clean;
  std::uint16_t keep_alive_s = 0;
  std::optional<std::uint32_t> expiry;  // 5.0
  std::optional<std::string> will_topic;
  std::optional<std::uint32_t> will_delay;  // 5.0
  std::optional<std::string> username;
  std::optional<std::uint32_t> will_expiry_s;  // 5.0: the will's Message Expiry Interval
  bool will_retain = false;
  std::optional<std::uint16_t> receive_max;  // 5.0
  std::optional<std::uint32_t> max_packet;   // 5.0
  std::optional<std::uint32_t> problem_info;  // 5.0 Request Problem Information
};

std::uint8_t code(reason_code r) { return static_cast<std::uint8_t>(r); }

/// An engine, the time, and fake links.
template <class Policies = plain_policies>
class world {
 public:
  using engine_type = mb::engine::protocol<Policies>;
  using steady_time = typename engine_type::steady_time;

  class fake_link final : public engine_type::link_type {
   public:
    fake_link(world& w, protocol_version v)
        : w_(w), decoder_(codec::decoder_options{codec::role::client, codec::max_packet_size, v}) {}

    void start_write() override {
      auto batch = this->take_queued();
      if (!batch) return;
      batch->build_runs();
      for (const auto& r : batch->runs) bytes_.append(reinterpret_cast<const char*>(r.data), r.size);
      this->note_written(batch->bytes);
      mb::engine::write_batch_pool::release(std::move(batch));
    }
    void finish() override {
      start_write();
      if (hold_close) return;  // as a transport whose write is still in flight
      if (this->mark_closed()) w_.engine.on_closed(*this, w_.now, w_.system_now);
    }

    bool hold_close = false;
    void post(mb::engine::link_event e) override { events.push_back(e); }

    /// Every packet the engine sent since the last call.
    std::deque<rx> received() {
      std::deque<rx> out;
      const auto res = decoder_.feed(reinterpret_cast<const std::uint8_t*>(bytes_.data()), bytes_.size(),
                                     [&](codec::packet& p) { out.push_back(test_rx::to_rx(p)); });
      REQUIRE_FALSE(res.ec);
      bytes_.clear();
      return out;
    }
    /// The one packet sent since the last look, which must be of type `t`.
    rx only(codec::packet_type t) {
      auto all = received();
      REQUIRE(all.size() == 1);
      INFO("got " << codec::to_string(all.front().type));
      REQUIRE(all.front().type == t);
      return all.front();
    }

    std::vector<mb::engine::link_event> events;

   private:
    world& w_;
    codec::decoder decoder_;
    std::string bytes_;
  };

  explicit world(mb::broker_options o = {}, typename Policies::hooks h = {}) : engine(std::move(o), std::move(h)) {}
  ~world() {
    // Links refer to the world; close what is still open so the engine lets go of them.
    for (auto& l : links_)
      if (l->is_open()) l->finish();
  }

  /// A new connection, opened at the current time.
  fake_link& open(protocol_version v = protocol_version::v3_1_1) {
    links_.push_back(mb::detail::ref_ptr<fake_link>::make(*this, v));
    REQUIRE(engine.open(*links_.back(), now));
    return *links_.back();
  }

  /// Hands a client's packet to the engine at the current time.
  /// `run_events`: false leaves what the engine posted to links' threads pending, as another
  /// thread that has not run yet would.
  template <class Packet>
  void feed(fake_link& l, Packet packet, bool run = true) {
    codec::packet p(std::move(packet));
    engine.on_packet(l, p, now);
    if (l.is_open()) engine.on_packets_read(l, now);  // as the server does after each read
    if (run) run_events();
  }

  void connect(fake_link& l, const hello& h, protocol_version v, bool run = true) {
    codec::connect c;
    c.version = v;
    c.client_id = h.id;
    c.clean_start = h.clean;
    c.keep_alive = h.keep_alive_s;
    codec::properties_builder props, will_props;
    if (h.expiry) props.add(codec::property_id::session_expiry_interval, *h.expiry);
    if (h.receive_max) props.add(codec::property_id::receive_maximum, *h.receive_max);
    if (h.max_packet) props.add(codec::property_id::maximum_packet_size, *h.max_packet);
    if (h.problem_info) props.add(codec::property_id::request_problem_information, *h.problem_info);
    c.properties = props.view();
    if (h.will_topic) {
      codec::will_message w;
      w.topic = *h.will_topic;
      w.payload = "will";
      if (h.will_delay) will_props.add(codec::property_id::will_delay_interval, *h.will_delay);
      if (h.will_expiry_s) will_props.add(codec::property_id::message_expiry_interval, *h.will_expiry_s);
      w.retain = h.will_retain;
      w.properties = will_props.view();
      c.will = w;
    }
    if (h.username) c.username = *h.username;
    feed(l, c, run);
  }

  /// A connection for `h`, its CONNACK read.
  fake_link& connected(const hello& h, protocol_version v = protocol_version::v3_1_1) {
    fake_link& l = open(v);
    connect(l, h, v);
    const rx ack = l.only(CONNACK);
    REQUIRE(ack.code == 0);
    return l;
  }

  /// A SUBSCRIBE to `filter`; what comes back is the test's to read.
  void send_subscribe(fake_link& l, const std::string& filter, qos q, std::uint16_t id = 1) {
    codec::subscribe s;
    s.packet_id = id;
    codec::subscribe_entry e;
    e.filter = filter;
    e.options.max_qos = q;
    s.entries.push_back(e);
    feed(l, s);
  }

  void subscribe(fake_link& l, const std::string& filter, qos q, std::uint16_t id = 1) {
    send_subscribe(l, filter, q, id);
    if constexpr (engine_type::durable) {
      // A kept session's SUBACK waits for the commit of its subscription: let it be durable.
      engine.storage_committed(engine.storage().tickets);
      run_events();
    }
    CHECK(l.only(SUBACK).codes == std::vector<std::uint8_t>{static_cast<std::uint8_t>(q)});
  }

  void publish(fake_link& l, const std::string& topic, qos q, std::uint16_t id, bool dup = false) {
    codec::publish p;
    p.topic = topic;
    p.payload = "m";
    p.qos_level = q;
    p.packet_id = id;
    p.dup = dup;
    feed(l, p);
  }

  template <class Ack>
  void ack(fake_link& l, std::uint16_t id) {
    Ack a;
    a.packet_id = id;
    feed(l, a);
  }

  /// The transport of `l` ended without DISCONNECT.
  void drop(fake_link& l) {
    REQUIRE(l.mark_closed());
    engine.on_closed(l, now, system_now);
    run_events();
  }

  /// Moves time on by `d` and lets the timers the broker would run do their work at that time:
  /// deadlines, session expiry, delayed wills.
  void advance(nanoseconds d) {
    now += d;
    system_now += std::chrono::duration_cast<std::chrono::system_clock::duration>(d);
    engine.sweep_connections(now);
    engine.expire_sessions(now);
    if (auto due = engine.next_will_due(); due && *due <= now) engine.release_wills(now);
    run_events();
  }

  /// Runs what the engine asked links to do on their own threads.
  void run_events() {
    for (bool more = true; more;) {
      more = false;
      for (std::size_t i = 0; i < links_.size(); ++i) {
        fake_link& l = *links_[i];
        auto events = std::move(l.events);
        l.events.clear();
        for (auto e : events) {
          more = true;
          engine.on_event(l, e, now);
        }
      }
    }
  }

  engine_type engine;
  steady_time now = steady_time(std::chrono::hours(1));
  std::chrono::system_clock::time_point system_now = std::chrono::system_clock::time_point(seconds(1767225600));

 private:
  std::vector<mb::detail::ref_ptr<fake_link>> links_;
};

}  // namespace

// ---- CONNACK and DISCONNECT reasons

TEST_CASE("engine: CONNECT refusals get the CONNACK code of the client's version, then the close",
          "[engine][MQTT-3.2.2-5][MQTT-3.1.3-8][MQTT-3.1.4-1]") {
  world<auth_policies> w;
  struct refusal {
    protocol_version v;
    hello h;
    std::uint8_t connack;
  };
  const std::string long_id(300, 'x');
  const refusal cases[] = {
      {protocol_version::v3_1_1, hello("", false), 2},  // empty identifier without Clean Session [MQTT-3.1.3-8]
      {protocol_version::v3_1_1, hello(long_id), 2},
      {protocol_version::v5, hello(long_id), code(reason_code::client_identifier_not_valid)},
      {protocol_version::v5, hello("w").will("a/+"), code(reason_code::topic_name_invalid)},
      {protocol_version::v3_1_1, hello("u").user("bad"), 4},
      {protocol_version::v5, hello("u").user("bad"),
       code(reason_code::bad_user_name_or_password)},
      {protocol_version::v3_1_1, hello("u").user("banned"), 5},
      {protocol_version::v5, hello("u").user("banned"),
       code(reason_code::not_authorized)},
  };
  for (const refusal& r : cases) {
    auto& l = w.open(r.v);
    w.connect(l, r.h, r.v);
    CHECK(l.only(CONNACK).code == r.connack);
    CHECK_FALSE(l.is_open());
  }
  CHECK(w.engine.stats().sessions == 0);
  CHECK(w.engine.stats().connections == 0);

  SECTION("3.1.1 has no code for an invalid Will Topic: the connection closes without CONNACK") {
    auto& l = w.open();
    w.connect(l, hello("w").will("a/#"), protocol_version::v3_1_1);
    CHECK(l.received().empty());
    CHECK_FALSE(l.is_open());
  }
  SECTION("input the decoder refused before CONNACK: CONNACK with its code where the version has one") {
    auto& old = w.open(protocol_version::v3_1_1);
    w.engine.on_malformed(old, mb::make_error_code(mb::protocol_errc::unsupported_protocol_version),
                          protocol_version::v3_1_1, w.now);
    CHECK(old.only(CONNACK).code == 1);  // [MQTT-3.1.2-2]
    auto& v5 = w.open(protocol_version::v5);
    w.engine.on_malformed(v5, mb::make_error_code(mb::codec_errc::truncated), protocol_version::v5, w.now);
    CHECK(v5.only(CONNACK).code == code(reason_code::malformed_packet));
    CHECK_FALSE(v5.is_open());
    CHECK(w.engine.stats().protocol_errors == 2);
  }
}

TEST_CASE("engine: every DISCONNECT reason the server sends a 5.0 client", "[engine][v5][MQTT-4.13.1-1]") {
  world<> w;
  const auto v5 = protocol_version::v5;
  SECTION("Keep Alive timeout 0x8D") {
    auto& l = w.connected(hello("ka").keep_alive(10), v5);
    w.advance(seconds(15));
    CHECK(l.only(DISCONNECT).code == code(reason_code::keep_alive_timeout));
    CHECK_FALSE(l.is_open());
  }
  SECTION("Session taken over 0x8E") {
    auto& first = w.connected(hello("same"), v5);
    auto& second = w.connected(hello("same"), v5);
    CHECK(first.only(DISCONNECT).code == code(reason_code::session_taken_over));
    CHECK_FALSE(first.is_open());
    CHECK(second.is_open());
  }
  SECTION("Server shutting down 0x8B") {
    auto& l = w.connected(hello("s"), v5);
    bool stopped = false;
    w.engine.stop([&] { stopped = true; });
    w.run_events();
    CHECK(l.only(DISCONNECT).code == code(reason_code::server_shutting_down));
    CHECK(stopped);
  }
  SECTION("Topic Alias invalid 0x94: above the Topic Alias Maximum of the CONNACK (5.0 section 3.3.2.3.4)") {
    auto& l = w.connected(hello("ta"), v5);
    codec::publish p;
    p.topic = "t";
    codec::properties_builder props;
    props.add(codec::property_id::topic_alias, w.engine.options().topic_alias_maximum + 1);
    p.properties = props.view();
    w.feed(l, p);
    CHECK(l.only(DISCONNECT).code == code(reason_code::topic_alias_invalid));
  }
  SECTION("Receive Maximum exceeded 0x93 (5.0 section 3.3.4)") {
    mb::broker_options o;
    o.receive_maximum = 2;
    world<> small(o);
    auto& l = small.connected(hello("rm"), v5);
    small.publish(l, "t", qos::exactly_once, 1);
    small.publish(l, "t", qos::exactly_once, 2);
    CHECK(l.received().size() == 2);  // two PUBRECs
    small.publish(l, "t", qos::exactly_once, 3);
    CHECK(l.only(DISCONNECT).code == code(reason_code::receive_maximum_exceeded));
  }
  SECTION("Protocol Error 0x82: AUTH without enhanced authentication (5.0 section 4.12)") {
    auto& l = w.connected(hello("auth"), v5);
    w.feed(l, codec::auth{});
    CHECK(l.only(DISCONNECT).code == code(reason_code::protocol_error));
  }
  SECTION("Protocol Error 0x82: a DISCONNECT extending a session that ended with its connection (5.0 section 3.14.2.2.2)") {
    auto& l = w.connected(hello("ext"), v5);
    codec::disconnect d;
    codec::properties_builder props;
    props.add(codec::property_id::session_expiry_interval, 60);
    d.properties = props.view();
    w.feed(l, d);
    CHECK(l.only(DISCONNECT).code == code(reason_code::protocol_error));
    CHECK(w.engine.stats().sessions == 0);
  }
  SECTION("Malformed Packet 0x81 for input the decoder refused") {
    auto& l = w.connected(hello("bad"), v5);
    w.engine.on_malformed(l, mb::make_error_code(mb::codec_errc::truncated), v5, w.now);
    CHECK(l.only(DISCONNECT).code == code(reason_code::malformed_packet));
  }
  SECTION("a 3.1.1 client gets no DISCONNECT: the connection just closes [MQTT-4.8.0-1]") {
    auto& l = w.connected(hello("old").keep_alive(10));
    w.advance(seconds(15));
    CHECK(l.received().empty());
    CHECK_FALSE(l.is_open());
  }
}

// ---- deadlines, at their exact boundaries

TEST_CASE("engine: Keep Alive closes at exactly 1.5 times the interval after the last packet",
          "[engine][time][MQTT-3.1.2-24]") {
  world<> w;
  auto& l = w.connected(hello("ka").keep_alive(10));
  w.advance(seconds(9));
  w.feed(l, codec::pingreq{});
  CHECK(l.received().size() == 1);  // PINGRESP
  w.advance(seconds(15) - nanoseconds(1));
  CHECK(l.is_open());
  w.advance(nanoseconds(1));
  CHECK_FALSE(l.is_open());
  CHECK(w.engine.stats().keep_alive_timeouts == 1);
}

TEST_CASE("engine: the CONNECT timeout counts from the accept", "[engine][time]") {
  mb::broker_options o;
  o.connect_timeout = seconds(3);
  world<> w(o);
  auto& l = w.open();
  w.advance(seconds(3) - nanoseconds(1));
  CHECK(l.is_open());
  w.advance(nanoseconds(1));
  CHECK_FALSE(l.is_open());
  CHECK(l.received().empty());
  CHECK(w.engine.stats().connect_timeouts == 1);
}

/// An authenticate that answers later: the test holds the replies and answers them.
struct later_hooks {
  std::vector<mb::hooks::auth_reply>* replies = nullptr;
  std::vector<std::string>* seen = nullptr;
  void authenticate(const mb::hooks::connect_info& info, mb::hooks::auth_reply reply) {
    seen->push_back(std::string(info.client_id) + " " + std::string(info.username.value_or("-")) + " " +
                    std::string(info.password.value_or("-")));
    replies->push_back(std::move(reply));
  }
};
struct later_policies : plain_policies {
  using hooks = later_hooks;
};

TEST_CASE("engine: an asynchronous authenticate stops the reader after the CONNECT; its answer decides, then it reads on",
          "[engine][hooks]") {
  mb::broker_options o;
  o.connect_timeout = seconds(3);
  std::vector<mb::hooks::auth_reply> replies;
  std::vector<std::string> seen;
  world<later_policies> w(o, later_hooks{&replies, &seen});

  // Accepted: nothing goes out and the reader stops until the answer.
  auto& a = w.open(protocol_version::v5);
  codec::connect c;
  c.version = protocol_version::v5;
  c.client_id = "a";
  c.username = std::string_view("user");
  c.password = std::string_view("pw");
  codec::packet p(c);
  CHECK_FALSE(w.engine.on_packet(a, p, w.now));  // the decoder stops after the CONNECT
  CHECK(a.paused());
  CHECK(seen == std::vector<std::string>{"a user pw"});
  w.advance(seconds(2));
  CHECK(a.received().empty());
  REQUIRE(replies.size() == 1);
  replies[0](mb::hooks::auth_result::accept);
  CHECK_FALSE(replies[0]);  // answered once
  REQUIRE(a.events == std::vector<mb::engine::link_event>{mb::engine::link_event::authenticated});
  a.events.clear();
  CHECK(w.engine.on_event(a, mb::engine::link_event::authenticated, w.now));  // read on
  CHECK_FALSE(a.paused());
  CHECK(a.only(CONNACK).code == 0);
  CHECK(w.engine.stats().sessions == 1);
  w.advance(seconds(5));  // Keep Alive 0: the CONNECT timeout no longer applies
  CHECK(a.is_open());

  // Refused: the CONNACK with the code, and the close.
  auto& b = w.open(protocol_version::v3_1_1);
  w.connect(b, hello("b").user("x"), protocol_version::v3_1_1);
  REQUIRE(replies.size() == 2);
  replies[1](mb::hooks::auth_result::not_authorized);
  w.run_events();
  CHECK(b.only(CONNACK).code == 5);
  CHECK_FALSE(b.is_open());

  // Unanswered: closed at the CONNECT timeout, exactly; a late answer does nothing.
  auto& d = w.open(protocol_version::v5);
  w.connect(d, hello("d"), protocol_version::v5);
  w.advance(seconds(3) - nanoseconds(1));
  CHECK(d.is_open());
  w.advance(nanoseconds(1));
  CHECK_FALSE(d.is_open());
  CHECK(d.received().empty());
  CHECK(w.engine.stats().connect_timeouts == 1);
  REQUIRE(replies.size() == 3);
  replies[2](mb::hooks::auth_result::accept);
  w.run_events();
  CHECK(d.received().empty());
  CHECK(w.engine.stats().sessions == 1);
}

// ---- takeover, wills, expiry
// ---- takeover, wills, expiry

TEST_CASE("engine: a second CONNECT with the same identifier takes the session over with its messages",
          "[engine][session][MQTT-3.1.4-2][MQTT-3.2.2-2]") {
  world<> w;
  auto& sub = w.connected(hello("sub", false));
  w.subscribe(sub, "t", qos::at_least_once);
  auto& pub = w.connected(hello("pub"));
  w.publish(pub, "t", qos::at_least_once, 7);
  CHECK(pub.only(PUBACK).id == 7);
  const rx first = sub.only(PUBLISH);
  CHECK_FALSE(first.dup);

  auto& again = w.open();
  w.connect(again, hello("sub", false), protocol_version::v3_1_1);
  CHECK_FALSE(sub.is_open());
  auto got = again.received();
  REQUIRE(got.size() == 2);
  CHECK(got[0].type == CONNACK);
  CHECK(got[0].session_present);
  CHECK(got[1].type == PUBLISH);  // re-sent, DUP set, same identifier [MQTT-4.4.0-1]
  CHECK(got[1].dup);
  CHECK(got[1].id == first.id);
  CHECK(w.engine.stats().sessions == 2);
}

TEST_CASE("engine: the will goes out at once without a delay, after the Will Delay with one, and not after a reconnect",
          "[engine][will][MQTT-3.1.2-8][MQTT-3.1.3-9]") {
  world<> w;
  auto& watcher = w.connected(hello("watcher"));
  w.subscribe(watcher, "will/#", qos::at_most_once);
  SECTION("no delay") {
    auto& l = w.connected(hello("now").will("will/now"));
    w.drop(l);
    CHECK(watcher.only(PUBLISH).topic == "will/now");
  }
  SECTION("a DISCONNECT discards it [MQTT-3.1.2-10]") {
    auto& l = w.connected(hello("polite").will("will/polite"));
    w.feed(l, codec::disconnect{});
    CHECK_FALSE(l.is_open());
    CHECK(watcher.received().empty());
  }
  SECTION("Will Delay") {
    auto& l = w.connected(hello("late").session_expiry(60).will("will/late", 5), protocol_version::v5);
    w.drop(l);
    REQUIRE(w.engine.next_will_due() == w.now + seconds(5));
    w.advance(seconds(5) - nanoseconds(1));
    CHECK(watcher.received().empty());
    w.advance(nanoseconds(1));
    CHECK(watcher.only(PUBLISH).topic == "will/late");
  }
  SECTION("a reconnect within the Will Delay cancels it") {
    auto& l = w.connected(hello("back").session_expiry(60).will("will/back", 5), protocol_version::v5);
    w.drop(l);
    w.advance(seconds(4));
    w.connected(hello("back", false).session_expiry(60), protocol_version::v5);
    w.advance(seconds(60));
    CHECK(watcher.received().empty());
  }
  SECTION("a Will Delay longer than the session: the will goes out when the session ends") {
    auto& l = w.connected(hello("brief").session_expiry(2).will("will/brief", 30), protocol_version::v5);
    w.drop(l);
    w.advance(seconds(2) - nanoseconds(1));
    CHECK(watcher.received().empty());
    w.advance(nanoseconds(1));
    CHECK(watcher.only(PUBLISH).topic == "will/brief");
    w.advance(seconds(60));
    CHECK(watcher.received().empty());
  }
}

TEST_CASE("engine: a delayed will cancelled by a reconnect does not release the next connection's will early",
          "[engine][will][MQTT-3.1.3-9]") {
  world<> w;
  auto& watcher = w.connected(hello("watcher"));
  w.subscribe(watcher, "will/#", qos::at_most_once);
  auto& first = w.connected(hello("x").session_expiry(60).will("will/x", 10), protocol_version::v5);
  w.drop(first);  // its will is due at 10 s
  w.advance(seconds(1));
  auto& second = w.open(protocol_version::v5);
  w.connect(second, hello("x", false).session_expiry(60).will("will/x", 10), protocol_version::v5);
  second.received();
  w.advance(seconds(1));
  w.drop(second);  // this will is due at 12 s
  w.advance(seconds(8));  // 10 s: the first will's time, which the reconnect cancelled
  CHECK(watcher.received().empty());
  w.advance(seconds(2) - nanoseconds(1));
  CHECK(watcher.received().empty());
  w.advance(nanoseconds(1));
  CHECK(watcher.only(PUBLISH).topic == "will/x");
}

TEST_CASE("engine: an offline session expires at exactly its Session Expiry Interval", "[engine][session][MQTT-3.1.2-23]") {
  world<> w;
  auto& l = w.connected(hello("s", false).session_expiry(30), protocol_version::v5);
  w.subscribe(l, "t", qos::at_least_once);
  w.feed(l, codec::disconnect{});
  w.advance(seconds(30) - nanoseconds(1));
  CHECK(w.engine.stats().sessions == 1);
  w.advance(nanoseconds(1));
  CHECK(w.engine.stats().sessions == 0);
  CHECK(w.engine.stats().sessions_expired == 1);
  auto& pub = w.connected(hello("p"));
  w.publish(pub, "t", qos::at_most_once, 0);
  CHECK(w.engine.stats().messages_sent == 0);  // its subscription went with it
}

// ---- QoS 1 and 2, both ways

TEST_CASE("engine: QoS 2 from a client is routed once and released by PUBREL; a resent PUBLISH is acknowledged again",
          "[engine][qos][MQTT-4.3.3-2]") {
  world<> w;
  auto& sub = w.connected(hello("sub"));
  w.subscribe(sub, "t", qos::exactly_once);
  auto& pub = w.connected(hello("pub", false));
  w.publish(pub, "t", qos::exactly_once, 5);
  CHECK(pub.only(PUBREC).id == 5);
  w.publish(pub, "t", qos::exactly_once, 5, true);  // DUP before PUBREL
  CHECK(pub.only(PUBREC).id == 5);
  const auto delivered = sub.received();
  REQUIRE(delivered.size() == 1);  // once
  w.ack<codec::pubrel>(pub, 5);
  CHECK(pub.only(PUBCOMP).id == 5);
  w.publish(pub, "t", qos::exactly_once, 5);  // the identifier is free again: a new message
  CHECK(pub.only(PUBREC).id == 5);
  CHECK(sub.received().size() == 1);
}

TEST_CASE("engine: 5.0, without an authenticate_enhanced hook a CONNECT with an Authentication Method is refused with 0x8C",
          "[engine][v5][auth][MQTT-4.12.0-1]") {
  world<> w;
  auto& l = w.open(protocol_version::v5);
  codec::connect c;
  c.version = protocol_version::v5;
  c.client_id = "scram";
  codec::properties_builder props;
  props.add(codec::property_id::authentication_method, std::string_view("SCRAM-SHA-1"));
  c.properties = props.view();
  w.feed(l, c);
  CHECK(l.only(CONNACK).code == code(reason_code::bad_authentication_method));
  CHECK_FALSE(l.is_open());
  CHECK(w.engine.stats().sessions == 0);
}

// ---- 5.0 enhanced authentication (section 4.12): the AUTH exchange driven by a hook

namespace {

/// What authenticate_enhanced saw of each step; the replies wait for the test to answer them.
struct auth_record {
  struct seen {
    mb::hooks::auth_stage stage;
    std::string method;
    std::optional<std::string> data;
    std::uint32_t step;
    std::string client_id, username, password;
    std::string state;  // the auth_state the step came with, by its tag; empty for none
  };
  std::vector<seen> steps;
  std::vector<mb::hooks::auth_step_reply> replies;
  std::vector<std::pair<std::string, reason_code>> refused;
};

/// An auth_state a test can recognise.
struct tagged_state : mb::hooks::auth_state {
  explicit tagged_state(std::string t) : tag(std::move(t)) {}
  std::string tag;
};
std::shared_ptr<mb::hooks::auth_state> tagged(std::string t) { return std::make_shared<tagged_state>(std::move(t)); }

struct enhanced_hooks {
  auth_record* rec = nullptr;
  void authenticate_enhanced(const mb::hooks::auth_exchange& x, mb::hooks::auth_step_reply reply) {
    auth_record::seen s{x.stage,
                        std::string(x.method),
                        x.data ? std::optional<std::string>(std::string(*x.data)) : std::nullopt,
                        x.step,
                        std::string(x.client.client_id),
                        std::string(x.client.username.value_or("-")),
                        std::string(x.client.password.value_or("-")),
                        x.state ? static_cast<const tagged_state&>(*x.state).tag : std::string()};
    rec->steps.push_back(std::move(s));
    rec->replies.push_back(std::move(reply));
  }
  void on_connect_refused(const mb::hooks::connect_info& c, reason_code why) {
    rec->refused.emplace_back(std::string(c.client_id), why);
  }
};
struct enhanced_policies : plain_policies {
  using hooks = enhanced_hooks;
};
using auth_world = world<enhanced_policies>;

/// A 5.0 CONNECT as "id" (user "u", password "pw") naming `method`, with `data` if given.
void connect_with_method(auth_world& w, auth_world::fake_link& l, std::string_view id, std::string_view method,
                         std::optional<std::string_view> data, std::optional<std::uint32_t> max_packet = std::nullopt) {
  codec::connect c;
  c.version = protocol_version::v5;
  c.client_id = id;
  c.username = std::string_view("u");
  c.password = std::string_view("pw");
  codec::properties_builder props;
  props.add(codec::property_id::authentication_method, method);
  if (data) props.add(codec::property_id::authentication_data, *data);
  if (max_packet) props.add(codec::property_id::maximum_packet_size, *max_packet);
  c.properties = props.view();
  w.feed(l, c);
}

/// A client's AUTH with `reason`, `method` (none when empty) and `data` if given.
void send_auth(auth_world& w, auth_world::fake_link& l, reason_code reason, std::string_view method,
               std::optional<std::string_view> data = std::nullopt) {
  codec::auth a;
  a.reason = reason;
  codec::properties_builder props;
  if (!method.empty()) props.add(codec::property_id::authentication_method, method);
  if (data) props.add(codec::property_id::authentication_data, *data);
  a.properties = props.view();
  w.feed(l, a);
}

/// Answers the hook's latest step and runs what the answer posted.
void answer(auth_world& w, auth_record& rec, mb::hooks::auth_step s) {
  REQUIRE_FALSE(rec.replies.empty());
  auto reply = std::move(rec.replies.back());
  rec.replies.pop_back();
  REQUIRE(reply);
  reply(std::move(s));
  w.run_events();
}

/// A connection authenticated in one step with method "M", its CONNACK read.
auth_world::fake_link& authenticated(auth_world& w, auth_record& rec, std::string_view id) {
  auto& l = w.open(protocol_version::v5);
  connect_with_method(w, l, id, "M", std::string_view("hello"));
  answer(w, rec, mb::hooks::auth_step::success(std::nullopt, tagged("first")));
  REQUIRE(l.only(CONNACK).code == 0);
  return l;
}

}  // namespace

TEST_CASE("engine: 5.0 enhanced authentication step by step: CONNECT with a method, AUTH 0x18 both ways, CONNACK with the method and final data",
          "[engine][v5][auth][MQTT-4.12.0-2][MQTT-4.12.0-5][MQTT-3.15.2-1]") {
  auth_record rec;
  auth_world w({}, enhanced_hooks{&rec});
  auto& l = w.open(protocol_version::v5);

  // The CONNECT goes to the hook; nothing is sent and the reader waits until it answers.
  connect_with_method(w, l, "a", "TEST", std::string_view("client-first"));
  CHECK(l.paused());
  CHECK(l.received().empty());
  REQUIRE(rec.steps.size() == 1);
  CHECK(rec.steps[0].stage == mb::hooks::auth_stage::connect);
  CHECK(rec.steps[0].method == "TEST");
  CHECK(rec.steps[0].data == std::optional<std::string>("client-first"));
  CHECK(rec.steps[0].step == 1);
  CHECK(rec.steps[0].client_id == "a");
  CHECK(rec.steps[0].username == "u");
  CHECK(rec.steps[0].password == "pw");
  CHECK(rec.steps[0].state.empty());
  CHECK(w.engine.stats().sessions == 0);

  // More is needed: AUTH 0x18 with the CONNECT's method [MQTT-4.12.0-2] [MQTT-4.12.0-5].
  answer(w, rec, mb::hooks::auth_step::next("server-first", tagged("after-first")));
  CHECK_FALSE(l.paused());
  const rx challenge = l.only(AUTH);
  CHECK(challenge.code == code(reason_code::continue_authentication));
  CHECK(challenge.auth_method == std::optional<std::string>("TEST"));
  CHECK(challenge.auth_data == std::optional<std::string>("server-first"));

  // The client's AUTH 0x18 is the next step, with the state the first answer left.
  send_auth(w, l, reason_code::continue_authentication, "TEST", std::string_view("client-final"));
  REQUIRE(rec.steps.size() == 2);
  CHECK(rec.steps[1].stage == mb::hooks::auth_stage::continuation);
  CHECK(rec.steps[1].data == std::optional<std::string>("client-final"));
  CHECK(rec.steps[1].step == 2);
  CHECK(rec.steps[1].password == "pw");  // still the CONNECT's: no CONNACK yet
  CHECK(rec.steps[1].state == "after-first");
  CHECK(l.received().empty());

  // Success: CONNACK 0x00 with the method and the final data; the session exists from now on.
  answer(w, rec, mb::hooks::auth_step::success(std::string("server-final")));
  const rx ack = l.only(CONNACK);
  CHECK(ack.code == 0);
  CHECK(ack.auth_method == std::optional<std::string>("TEST"));
  CHECK(ack.auth_data == std::optional<std::string>("server-final"));
  CHECK(w.engine.stats().sessions == 1);
  w.feed(l, codec::pingreq{});
  CHECK(l.only(PINGRESP).type == PINGRESP);

  SECTION("a success without data sends the method alone") {
    auto& b = w.open(protocol_version::v5);
    connect_with_method(w, b, "b", "TEST", std::nullopt);
    REQUIRE(rec.steps.size() == 3);
    CHECK_FALSE(rec.steps[2].data);
    answer(w, rec, mb::hooks::auth_step::success());
    const rx b_ack = b.only(CONNACK);
    CHECK(b_ack.code == 0);
    CHECK(b_ack.auth_method == std::optional<std::string>("TEST"));
    CHECK_FALSE(b_ack.auth_data);
  }
}

TEST_CASE("engine: 5.0 enhanced authentication refused at any step: the CONNACK code the hook gives, then the close",
          "[engine][v5][auth][MQTT-4.12.0-1][MQTT-4.12.0-4]") {
  auth_record rec;
  auth_world w({}, enhanced_hooks{&rec});
  struct refusal {
    reason_code given;
    std::uint8_t sent;
    bool second_step;
  };
  const refusal cases[] = {
      {reason_code::bad_authentication_method, 0x8C, false},  // a method the host does not support [MQTT-4.12.0-1]
      {reason_code::bad_user_name_or_password, 0x86, true},
      {reason_code::not_authorized, 0x87, true},
      {reason_code::banned, 0x8A, false},
      {reason_code::session_taken_over, 0x87, false},  // not a CONNACK code: Not authorized instead
      {reason_code::no_matching_subscribers, 0x87, true},  // not a refusal at all: the same
  };
  int n = 0;
  for (const refusal& r : cases) {
    INFO("reason " << int(code(r.given)));
    auto& l = w.open(protocol_version::v5);
    const std::string id = "c" + std::to_string(n++);
    connect_with_method(w, l, id, "M", std::string_view("one"));
    if (r.second_step) {
      answer(w, rec, mb::hooks::auth_step::next("two"));
      CHECK(l.only(AUTH).code == code(reason_code::continue_authentication));
      send_auth(w, l, reason_code::continue_authentication, "M", std::string_view("three"));
    }
    answer(w, rec, mb::hooks::auth_step::failure(r.given, std::string("e=why")));
    const rx ack = l.only(CONNACK);
    CHECK(ack.code == r.sent);
    // The data goes with the refusal, and with it the method it belongs to.
    CHECK(ack.auth_method == std::optional<std::string>("M"));
    CHECK(ack.auth_data == std::optional<std::string>("e=why"));
    CHECK_FALSE(l.is_open());
    REQUIRE_FALSE(rec.refused.empty());
    CHECK(rec.refused.back() == std::make_pair(id, static_cast<reason_code>(r.sent)));
  }
  CHECK(w.engine.stats().sessions == 0);
  CHECK(w.engine.stats().connections == 0);

  SECTION("a refusal without data carries no Authentication properties") {
    auto& l = w.open(protocol_version::v5);
    connect_with_method(w, l, "plain", "M", std::nullopt);
    answer(w, rec, mb::hooks::auth_step::failure(reason_code::not_authorized));
    const rx ack = l.only(CONNACK);
    CHECK(ack.code == 0x87);
    CHECK_FALSE(ack.auth_method);
    CHECK_FALSE(ack.auth_data);
  }
}

TEST_CASE("engine: 5.0 without an Authentication Method in the CONNECT there is no AUTH: none sent, none taken",
          "[engine][v5][auth][MQTT-4.12.0-6][MQTT-4.12.0-7]") {
  auth_record rec;
  auth_world w({}, enhanced_hooks{&rec});
  auto& l = w.open(protocol_version::v5);
  w.connect(l, hello("plain"), protocol_version::v5);
  const rx ack = l.only(CONNACK);
  CHECK(ack.code == 0);
  CHECK_FALSE(ack.auth_method);  // [MQTT-4.12.0-6]
  CHECK(rec.steps.empty());
  // The server's reaction to a client breaking [MQTT-4.12.0-7]: a Protocol Error.
  send_auth(w, l, reason_code::re_authenticate, "M");
  CHECK(l.only(DISCONNECT).code == code(reason_code::protocol_error));
  CHECK_FALSE(l.is_open());
  CHECK(rec.steps.empty());
}

TEST_CASE("engine: 5.0 AUTH out of place is a Protocol Error: another or no method, the wrong reason, other packets before CONNACK",
          "[engine][v5][auth][MQTT-4.12.0-5][MQTT-3.1.2-30][MQTT-4.13.1-1]") {
  auth_record rec;
  auth_world w({}, enhanced_hooks{&rec});
  const auto protocol_error = code(reason_code::protocol_error);
  // Before CONNACK, the exchange waiting for the client's AUTH 0x18.
  auto waiting = [&](const std::string& id) -> auth_world::fake_link& {
    auto& l = w.open(protocol_version::v5);
    connect_with_method(w, l, id, "M", std::string_view("one"));
    answer(w, rec, mb::hooks::auth_step::next("two"));
    REQUIRE(l.only(AUTH).code == code(reason_code::continue_authentication));
    return l;
  };
  SECTION("before CONNACK: another method, no method, AUTH 0x19 or 0x00: CONNACK 0x82") {
    const std::pair<reason_code, std::string_view> bad[] = {
        {reason_code::continue_authentication, "OTHER"},  // [MQTT-4.12.0-5]
        {reason_code::continue_authentication, ""},       // 5.0 section 3.15.2.2.2: the method is required
        {reason_code::re_authenticate, "M"},              // nothing to re-authenticate yet
        {reason_code::success, "M"},                      // the server's code
    };
    for (const auto& b : bad) {
      auto& l = waiting("x");
      send_auth(w, l, b.first, b.second, std::string_view("three"));
      CHECK(l.only(CONNACK).code == protocol_error);
      CHECK_FALSE(l.is_open());
    }
    CHECK(rec.steps.size() == 4);  // only the CONNECTs reached the hook
  }
  SECTION("before CONNACK: a PUBLISH or SUBSCRIBE is not acted on, CONNACK 0x82 [MQTT-3.1.2-30]") {
    auto& listener = w.connected(hello("listener"), protocol_version::v5);
    w.subscribe(listener, "#", qos::at_most_once);
    auto& l = waiting("early");
    codec::publish p;
    p.topic = "t";
    p.payload = "must not be routed";
    w.feed(l, p);
    CHECK(l.only(CONNACK).code == protocol_error);
    CHECK_FALSE(l.is_open());
    CHECK(listener.received().empty());
    auto& s = waiting("sub");
    codec::subscribe sub;
    sub.packet_id = 1;
    sub.entries.push_back({"#", {}});
    w.feed(s, sub);
    CHECK(s.only(CONNACK).code == protocol_error);
    CHECK(w.engine.stats().sessions == 1);  // the listener's
  }
  SECTION("before CONNACK: DISCONNECT ends the exchange quietly") {
    auto& l = waiting("leaves");
    w.feed(l, codec::disconnect{});
    CHECK(l.received().empty());
    CHECK_FALSE(l.is_open());
    CHECK(w.engine.stats().sessions == 0);
  }
  SECTION("after CONNACK: AUTH 0x18 with no exchange, 0x00, or another method: DISCONNECT 0x82") {
    const std::pair<reason_code, std::string_view> bad[] = {
        {reason_code::continue_authentication, "M"},  // no exchange waits for it
        {reason_code::success, "M"},
        {reason_code::re_authenticate, "OTHER"},  // [MQTT-4.12.1-1] the method of the CONNECT
        {reason_code::re_authenticate, ""},
    };
    for (const auto& b : bad) {
      auto& l = authenticated(w, rec, "after");
      send_auth(w, l, b.first, b.second);
      CHECK(l.only(DISCONNECT).code == protocol_error);
      CHECK_FALSE(l.is_open());
    }
    CHECK(rec.steps.size() == 4);  // only the CONNECTs reached the hook
  }
  SECTION("a re-authentication waiting for the client: AUTH 0x19 again is out of place") {
    auto& l = authenticated(w, rec, "twice");
    send_auth(w, l, reason_code::re_authenticate, "M");
    answer(w, rec, mb::hooks::auth_step::next("more"));
    CHECK(l.only(AUTH).code == code(reason_code::continue_authentication));
    send_auth(w, l, reason_code::re_authenticate, "M");
    CHECK(l.only(DISCONNECT).code == protocol_error);
  }
}

TEST_CASE("engine: 5.0 re-authentication: AUTH 0x19, AUTH 0x18 both ways, AUTH 0x00; other packets flow between steps",
          "[engine][v5][auth][MQTT-4.12.0-2][MQTT-4.12.0-5][MQTT-3.15.2-1]") {
  auth_record rec;
  auth_world w({}, enhanced_hooks{&rec});
  auto& l = authenticated(w, rec, "re");
  send_auth(w, l, reason_code::re_authenticate, "M", std::string_view("again"));
  REQUIRE(rec.steps.size() == 2);
  CHECK(rec.steps[1].stage == mb::hooks::auth_stage::reauthentication);
  CHECK(rec.steps[1].step == 1);
  CHECK(rec.steps[1].client_id == "re");
  CHECK(rec.steps[1].username == "u");
  CHECK(rec.steps[1].password == "-");  // the CONNECT's password is gone after CONNACK
  CHECK(rec.steps[1].state == "first");  // what the first exchange's answer left
  CHECK(l.paused());

  answer(w, rec, mb::hooks::auth_step::next("challenge"));
  const rx challenge = l.only(AUTH);
  CHECK(challenge.code == code(reason_code::continue_authentication));
  CHECK(challenge.auth_method == std::optional<std::string>("M"));
  CHECK(challenge.auth_data == std::optional<std::string>("challenge"));
  // Between steps the connection goes on under the earlier authentication (5.0 section 4.12.1).
  w.subscribe(l, "t", qos::at_least_once);
  w.publish(l, "t", qos::at_most_once, 0);
  CHECK(l.only(PUBLISH).topic == "t");

  send_auth(w, l, reason_code::continue_authentication, "M", std::string_view("response"));
  REQUIRE(rec.steps.size() == 3);
  CHECK(rec.steps[2].stage == mb::hooks::auth_stage::continuation);
  CHECK(rec.steps[2].step == 2);
  answer(w, rec, mb::hooks::auth_step::success(std::string("done"), tagged("second")));
  const rx done = l.only(AUTH);
  CHECK(done.code == code(reason_code::success));
  CHECK(done.auth_method == std::optional<std::string>("M"));
  CHECK(done.auth_data == std::optional<std::string>("done"));
  CHECK(l.is_open());
  CHECK_FALSE(l.paused());

  // And again: a new exchange, counted from step 1, with the latest state.
  send_auth(w, l, reason_code::re_authenticate, "M");
  REQUIRE(rec.steps.size() == 4);
  CHECK(rec.steps[3].step == 1);
  CHECK_FALSE(rec.steps[3].data);
  CHECK(rec.steps[3].state == "second");
  answer(w, rec, mb::hooks::auth_step::success());
  CHECK(l.only(AUTH).code == code(reason_code::success));
}

TEST_CASE("engine: 5.0 a failed re-authentication ends with DISCONNECT and its reason, then the close",
          "[engine][v5][auth][MQTT-4.12.1-2]") {
  auth_record rec;
  auth_world w({}, enhanced_hooks{&rec});
  struct refusal {
    reason_code given;
    std::uint8_t sent;
  };
  // 0x86 and 0x8C are CONNACK codes only: DISCONNECT says Not authorized instead.
  const refusal cases[] = {{reason_code::not_authorized, 0x87},
                           {reason_code::administrative_action, 0x98},
                           {reason_code::bad_user_name_or_password, 0x87},
                           {reason_code::bad_authentication_method, 0x87}};
  for (const refusal& r : cases) {
    INFO("reason " << int(code(r.given)));
    auto& l = authenticated(w, rec, "re");
    send_auth(w, l, reason_code::re_authenticate, "M", std::string_view("again"));
    answer(w, rec, mb::hooks::auth_step::failure(r.given, std::string("ignored")));
    CHECK(l.only(DISCONNECT).code == r.sent);
    CHECK_FALSE(l.is_open());
  }
}

TEST_CASE("engine: 5.0 an AUTH exchange is bounded: the CONNECT timeout before CONNACK, reauthentication_timeout after",
          "[engine][v5][auth][time]") {
  mb::broker_options o;
  o.connect_timeout = seconds(4);
  o.reauthentication_timeout = seconds(2);
  auth_record rec;
  auth_world w(o, enhanced_hooks{&rec});

  SECTION("before CONNACK the exchange ends at connect_timeout after the CONNECT; AUTH packets do not move it") {
    w.advance(seconds(1));  // the limit counts from the CONNECT, not the accept
    auto& l = w.open(protocol_version::v5);
    w.advance(seconds(1));
    connect_with_method(w, l, "slow", "M", std::string_view("one"));
    w.advance(seconds(1));
    answer(w, rec, mb::hooks::auth_step::next("two"));
    CHECK(l.only(AUTH).code == code(reason_code::continue_authentication));
    w.advance(seconds(1));
    send_auth(w, l, reason_code::continue_authentication, "M", std::string_view("three"));
    answer(w, rec, mb::hooks::auth_step::next("four"));
    CHECK(l.only(AUTH).code == code(reason_code::continue_authentication));
    w.advance(seconds(2) - nanoseconds(1));
    CHECK(l.is_open());
    w.advance(nanoseconds(1));
    CHECK_FALSE(l.is_open());
    CHECK(l.received().empty());  // closed without a word, as any CONNECT timeout
    CHECK(w.engine.stats().connect_timeouts == 1);
  }
  SECTION("before CONNACK a hook that never answers: closed at the limit; a late answer does nothing") {
    auto& l = w.open(protocol_version::v5);
    connect_with_method(w, l, "never", "M", std::nullopt);
    w.advance(seconds(4) - nanoseconds(1));
    CHECK(l.is_open());
    w.advance(nanoseconds(1));
    CHECK_FALSE(l.is_open());
    answer(w, rec, mb::hooks::auth_step::success());
    CHECK(l.received().empty());
    CHECK(w.engine.stats().sessions == 0);
  }
  SECTION("a re-authentication ends at reauthentication_timeout after its AUTH 0x19 with DISCONNECT 0x87") {
    auto& l = authenticated(w, rec, "re");
    w.advance(seconds(10));  // no Keep Alive: connected for as long as it likes
    send_auth(w, l, reason_code::re_authenticate, "M");
    answer(w, rec, mb::hooks::auth_step::next("more"));
    CHECK(l.only(AUTH).code == code(reason_code::continue_authentication));
    w.feed(l, codec::pingreq{});  // other packets do not move the limit either
    CHECK(l.only(PINGRESP).type == PINGRESP);
    w.advance(seconds(2) - nanoseconds(1));
    CHECK(l.is_open());
    w.advance(nanoseconds(1));
    CHECK(l.only(DISCONNECT).code == code(reason_code::not_authorized));
    CHECK_FALSE(l.is_open());
  }
  SECTION("while the hook answers a re-authentication step Keep Alive stands still; the limit does not") {
    auto& l = w.open(protocol_version::v5);
    codec::connect c;
    c.version = protocol_version::v5;
    c.client_id = "ka";
    c.keep_alive = 1;  // 1.5 s of silence closes it
    codec::properties_builder props;
    props.add(codec::property_id::authentication_method, std::string_view("M"));
    c.properties = props.view();
    w.feed(l, c);
    answer(w, rec, mb::hooks::auth_step::success());
    REQUIRE(l.only(CONNACK).code == 0);
    send_auth(w, l, reason_code::re_authenticate, "M");
    w.advance(milliseconds(1900));  // past Keep Alive: the wait is ours
    CHECK(l.is_open());
    answer(w, rec, mb::hooks::auth_step::success());
    CHECK(l.only(AUTH).code == code(reason_code::success));
    w.advance(milliseconds(1499));  // Keep Alive counts from the answer
    CHECK(l.is_open());
    w.advance(milliseconds(1));
    CHECK(l.only(DISCONNECT).code == code(reason_code::keep_alive_timeout));
  }
}

TEST_CASE("engine: 5.0 an AUTH exchange is bounded in steps and data: CONNACK or DISCONNECT 0x97",
          "[engine][v5][auth][limits]") {
  mb::broker_options o;
  o.max_auth_steps = 3;
  o.max_auth_data_size = 16;
  auth_record rec;
  auth_world w(o, enhanced_hooks{&rec});
  const auto quota = code(reason_code::quota_exceeded);
  SECTION("the fourth packet of an exchange, before CONNACK") {
    auto& l = w.open(protocol_version::v5);
    connect_with_method(w, l, "steps", "M", std::string_view("1"));
    for (int i = 2; i <= 4; ++i) {
      answer(w, rec, mb::hooks::auth_step::next("more"));
      CHECK(l.only(AUTH).code == code(reason_code::continue_authentication));
      send_auth(w, l, reason_code::continue_authentication, "M", std::string_view("n"));
    }
    CHECK(rec.steps.size() == 3);
    CHECK(l.only(CONNACK).code == quota);
    CHECK_FALSE(l.is_open());
  }
  SECTION("each re-authentication counts afresh; its fourth packet is DISCONNECT 0x97") {
    auto& l = authenticated(w, rec, "re");
    for (int round = 0; round < 2; ++round) {
      send_auth(w, l, reason_code::re_authenticate, "M");
      answer(w, rec, mb::hooks::auth_step::next("more"));
      CHECK(l.only(AUTH).type == AUTH);
      send_auth(w, l, reason_code::continue_authentication, "M");
      answer(w, rec, mb::hooks::auth_step::next("more"));
      CHECK(l.only(AUTH).type == AUTH);
      send_auth(w, l, reason_code::continue_authentication, "M");
      if (round == 0) {
        answer(w, rec, mb::hooks::auth_step::success());
        CHECK(l.only(AUTH).code == 0);
      }
    }
    answer(w, rec, mb::hooks::auth_step::next("more"));
    CHECK(l.only(AUTH).type == AUTH);
    send_auth(w, l, reason_code::continue_authentication, "M");
    CHECK(l.only(DISCONNECT).code == quota);
  }
  SECTION("data or a method longer than max_auth_data_size never reaches the hook") {
    auto& l = w.open(protocol_version::v5);
    connect_with_method(w, l, "fits", "M", std::string_view(std::string(16, 'd')));
    CHECK(rec.steps.size() == 1);
    answer(w, rec, mb::hooks::auth_step::next("more"));
    CHECK(l.only(AUTH).type == AUTH);
    const std::string too_long(17, 'd');
    send_auth(w, l, reason_code::continue_authentication, "M", std::string_view(too_long));
    CHECK(rec.steps.size() == 1);
    CHECK(l.only(CONNACK).code == quota);
    auto& m = w.open(protocol_version::v5);
    connect_with_method(w, m, "long-method", too_long, std::nullopt);
    CHECK(rec.steps.size() == 1);
    CHECK(m.only(CONNACK).code == quota);
  }
  SECTION("an AUTH larger than the client's Maximum Packet Size is not sent: CONNACK 0x95 [MQTT-3.1.2-24]") {
    auto& l = w.open(protocol_version::v5);
    connect_with_method(w, l, "small", "M", std::nullopt, 32);
    answer(w, rec, mb::hooks::auth_step::next(std::string(40, 's')));
    CHECK(l.only(CONNACK).code == code(reason_code::packet_too_large));
  }
}

TEST_CASE("engine: 5.0 an AUTH step may be answered from another thread", "[engine][v5][auth][threads]") {
  auth_record rec;
  auth_world w({}, enhanced_hooks{&rec});
  auto& l = w.open(protocol_version::v5);
  connect_with_method(w, l, "t", "M", std::string_view("x"));
  REQUIRE(rec.replies.size() == 1);
  std::thread other([reply = std::move(rec.replies[0])]() mutable {
    reply(mb::hooks::auth_step::success(std::string("from another thread")));
  });
  other.join();
  CHECK(l.events == std::vector<mb::engine::link_event>{mb::engine::link_event::auth_step});
  w.run_events();
  const rx ack = l.only(CONNACK);
  CHECK(ack.code == 0);
  CHECK(ack.auth_data == std::optional<std::string>("from another thread"));
}

TEST_CASE("engine: 5.0, never more unacknowledged QoS 1 and 2 PUBLISH to a client than its Receive Maximum",
          "[engine][flow][v5][MQTT-3.3.4-9]") {
  mb::broker_options o;
  o.max_inflight = 32;
  world<> w(o);
  auto& sub = w.connected(hello("sub").receive_maximum(2).session_expiry(60), protocol_version::v5);
  w.subscribe(sub, "t", qos::exactly_once);
  auto& pub = w.connected(hello("pub"));
  for (std::uint16_t i = 1; i <= 5; ++i) w.publish(pub, "t", i % 2 ? qos::at_least_once : qos::exactly_once, i);
  pub.received();
  auto first = sub.received();
  REQUIRE(first.size() == 2);  // the rest wait, in order
  w.ack<codec::puback>(sub, first[0].id);
  auto third = sub.received();
  REQUIRE(third.size() == 1);
  CHECK(third[0].qos_level == qos::at_least_once);
  CHECK(sub.received().empty());
  // A QoS 2 message counts until its PUBCOMP, not its PUBREC.
  w.ack<codec::pubrec>(sub, first[1].id);
  CHECK(sub.only(PUBREL).id == first[1].id);
  w.ack<codec::pubcomp>(sub, first[1].id);
  CHECK(sub.received().size() == 1);

  // Reconnecting with a larger Receive Maximum widens the window for the same session.
  w.drop(sub);
  auto& again = w.open(protocol_version::v5);
  w.connect(again, hello("sub", false).receive_maximum(10).session_expiry(60), protocol_version::v5);
  auto resent = again.received();
  REQUIRE(resent.size() == 4);  // CONNACK, the two in flight again (DUP), then the last one
  CHECK(resent[0].type == CONNACK);
  CHECK(resent[1].dup);
  CHECK(resent[2].dup);
  CHECK_FALSE(resent[3].dup);
  CHECK(w.engine.stats().messages_dropped == 0);
}

TEST_CASE("engine: 5.0, a PUBLISH larger than a client's Maximum Packet Size is dropped for that client alone",
          "[engine][flow][v5][MQTT-3.1.2-24][MQTT-3.1.2-25]") {
  world<> w;
  auto& small = w.connected(hello("small").maximum_packet_size(64).session_expiry(60), protocol_version::v5);
  w.subscribe(small, "t/#", qos::at_least_once);
  auto& big = w.connected(hello("big"), protocol_version::v5);
  w.subscribe(big, "t/#", qos::at_least_once);
  auto& pub = w.connected(hello("pub"));
  auto send = [&](const std::string& topic, std::size_t payload, qos q, std::uint16_t id) {
    codec::publish p;
    p.topic = topic;
    const std::string body(payload, 'x');
    p.payload = body;
    p.qos_level = q;
    p.packet_id = id;
    w.feed(pub, p);
    pub.received();
  };
  // A QoS 1 PUBLISH to "t/a" with a subscription-free 5.0 header: 1 + 1 + (2 + 3) + 2 + 1 + payload.
  send("t/a", 54, qos::at_least_once, 1);  // 64 bytes: fits exactly
  CHECK(small.only(PUBLISH).payload.size() == 54);
  CHECK(big.only(PUBLISH).payload.size() == 54);
  send("t/a", 55, qos::at_least_once, 2);  // 65 bytes
  CHECK(small.received().empty());
  CHECK(big.only(PUBLISH).payload.size() == 55);
  send("t/a", 500, qos::at_most_once, 0);
  CHECK(small.received().empty());
  CHECK(big.only(PUBLISH).payload.size() == 500);
  CHECK(w.engine.stats().messages_dropped == 2);

  // Queued while offline, then too large for the next connection's limit: dropped as the queue
  // drains, the smaller one behind it delivered.
  w.drop(small);
  send("t/b", 40, qos::at_least_once, 3);
  send("t/b", 10, qos::at_least_once, 4);
  big.received();
  auto& back = w.open(protocol_version::v5);
  w.connect(back, hello("small", false).maximum_packet_size(40).session_expiry(60), protocol_version::v5);
  auto got = back.received();
  std::vector<std::size_t> sizes;
  for (const rx& r : got)
    if (r.type == PUBLISH) sizes.push_back(r.payload.size());
  CHECK(sizes == std::vector<std::size_t>{10});  // the 54-byte one in flight and the 40-byte one dropped
  CHECK(w.engine.stats().messages_dropped == 4);
}

namespace {
/// A 5.0 PUBLISH with a Message Expiry Interval.
codec::publish expiring(const std::string& topic, std::uint32_t seconds, qos q, std::uint16_t id, bool retain,
                        codec::properties_builder& props) {
  props.clear();
  props.add(codec::property_id::message_expiry_interval, seconds);
  codec::publish p;
  p.topic = topic;
  p.payload = "m";
  p.qos_level = q;
  p.packet_id = id;
  p.retain = retain;
  p.properties = props.view();
  return p;
}
}  // namespace

TEST_CASE("engine: 5.0, a queued message expires at its Message Expiry Interval; a subscriber gets what is left of it",
          "[engine][time][v5][MQTT-3.3.2-5][MQTT-3.3.2-6]") {
  world<> w;
  auto& sub = w.connected(hello("sub").session_expiry(600), protocol_version::v5);
  w.subscribe(sub, "t", qos::at_least_once);
  auto& sub3 = w.connected(hello("sub3", false));  // 3.1.1: the message expires for it too
  w.subscribe(sub3, "t", qos::at_least_once);
  w.drop(sub);
  w.drop(sub3);
  auto& pub = w.connected(hello("pub"), protocol_version::v5);
  codec::properties_builder props;
  w.feed(pub, expiring("t", 3, qos::at_least_once, 1, false, props));
  w.feed(pub, expiring("t", 10, qos::at_least_once, 2, false, props));
  pub.received();

  w.advance(seconds(2));
  auto& back = w.open(protocol_version::v5);
  w.connect(back, hello("sub", false).session_expiry(600), protocol_version::v5);
  auto got = back.received();
  REQUIRE(got.size() == 3);
  CHECK(got[1].message_expiry == std::optional<std::uint32_t>(1));  // 3 s less the 2 it waited
  CHECK(got[2].message_expiry == std::optional<std::uint32_t>(8));

  w.advance(seconds(1));  // 3 s after the PUBLISH: the first one is gone for the 3.1.1 session
  auto& back3 = w.open();
  w.connect(back3, hello("sub3", false), protocol_version::v3_1_1);
  got = back3.received();
  REQUIRE(got.size() == 2);
  CHECK(got[1].type == PUBLISH);
  CHECK(w.engine.stats().messages_expired == 1);
}

TEST_CASE("engine: 5.0, a will's Message Expiry Interval counts from its publication, after the Will Delay",
          "[engine][time][v5][will][MQTT-3.3.2-5]") {
  world<> w;
  auto& l = w.connected(hello("w").session_expiry(60).will("will/w", 5).will_expiry(10, true), protocol_version::v5);
  w.drop(l);
  w.advance(seconds(5));  // published now, retained
  w.advance(seconds(9));  // 1 s of its 10 left
  codec::subscribe s;
  s.packet_id = 1;
  s.entries.push_back({"will/#", {qos::at_most_once}});
  auto& a = w.connected(hello("a"), protocol_version::v5);
  w.feed(a, s);
  auto got = a.received();
  REQUIRE(got.size() == 2);
  CHECK(got[1].topic == "will/w");
  CHECK(got[1].message_expiry == std::optional<std::uint32_t>(1));
  w.advance(seconds(1));
  auto& b = w.connected(hello("b"), protocol_version::v5);
  w.feed(b, s);
  CHECK(b.only(SUBACK).codes == std::vector<std::uint8_t>{0});
}

TEST_CASE("engine: 5.0, an expired retained message is no longer served", "[engine][time][v5][retained][MQTT-3.3.2-5]") {
  world<> w;
  auto& pub = w.connected(hello("pub"), protocol_version::v5);
  codec::properties_builder props;
  w.feed(pub, expiring("r", 5, qos::at_most_once, 0, true, props));
  w.advance(seconds(5) - nanoseconds(1));
  auto& early = w.connected(hello("early"), protocol_version::v5);
  codec::subscribe s;
  s.packet_id = 1;
  s.entries.push_back({"r", {qos::at_most_once}});
  w.feed(early, s);
  auto got = early.received();
  REQUIRE(got.size() == 2);
  CHECK(got[1].retain);
  CHECK(got[1].message_expiry == std::optional<std::uint32_t>(1));
  w.advance(nanoseconds(1));
  auto& late = w.connected(hello("late"), protocol_version::v5);
  w.feed(late, s);
  CHECK(late.only(SUBACK).codes == std::vector<std::uint8_t>{0});
}

TEST_CASE("engine: 5.0, topic aliases from a client: set, used, replaced, per connection; 0 and unknown ones end it",
          "[engine][v5][alias][MQTT-3.3.2-12][MQTT-3.3.2-7]") {
  mb::broker_options o;
  o.topic_alias_maximum = 3;
  world<> w(o);
  auto& sub = w.connected(hello("sub"));
  w.subscribe(sub, "#", qos::at_most_once);
  auto publish = [&](auto& l, std::string topic, std::uint16_t alias) {
    codec::publish p;
    p.topic = topic;
    p.payload = "m";
    codec::properties_builder props;
    props.add(codec::property_id::topic_alias, alias);
    p.properties = props.view();
    w.feed(l, p);
  };
  auto& pub = w.connected(hello("pub"), protocol_version::v5);
  publish(pub, "a/1", 1);
  publish(pub, "a/3", 3);  // every alias up to the maximum is taken
  publish(pub, "", 1);
  publish(pub, "", 3);
  publish(pub, "a/2", 1);  // a new topic for alias 1
  publish(pub, "", 1);
  std::vector<std::string> topics;
  for (const rx& r : sub.received()) topics.push_back(r.topic);
  CHECK(topics == std::vector<std::string>{"a/1", "a/3", "a/1", "a/3", "a/2", "a/2"});
  CHECK(pub.is_open());

  // A new connection of the same client starts without the old mappings [MQTT-3.3.2-7].
  w.drop(pub);
  auto& again = w.connected(hello("pub"), protocol_version::v5);
  publish(again, "", 1);
  CHECK(again.only(DISCONNECT).code == code(reason_code::protocol_error));
  CHECK(sub.received().empty());

  auto& zero = w.connected(hello("zero"), protocol_version::v5);
  publish(zero, "a/0", 0);
  CHECK(zero.only(DISCONNECT).code == code(reason_code::topic_alias_invalid));
}

TEST_CASE("engine: 5.0, topic aliases to a client: within its Topic Alias Maximum, the least recently used replaced",
          "[engine][v5][alias][MQTT-3.3.2-11][MQTT-3.1.2-26][MQTT-3.1.2-27][MQTT-3.3.2-8]") {
  world<> w;
  auto connect = [&](const std::string& id, std::optional<std::uint16_t> alias_max) -> world<>::fake_link& {
    auto& l = w.open(protocol_version::v5);
    codec::connect c;
    c.version = protocol_version::v5;
    c.client_id = id;
    codec::properties_builder props;
    if (alias_max) props.add(codec::property_id::topic_alias_maximum, *alias_max);
    c.properties = props.view();
    w.feed(l, c);
    CHECK(l.only(CONNACK).code == 0);
    return l;
  };
  auto& two = connect("two", 2);
  auto& none = connect("none", std::nullopt);
  w.subscribe(two, "t/#", qos::at_most_once);
  w.subscribe(none, "t/#", qos::at_most_once);
  auto& pub = w.connected(hello("pub"));
  for (const char* t : {"t/a", "t/b", "t/a", "t/c", "t/a", "t/b"}) w.publish(pub, t, qos::at_most_once, 0);

  // What the client sees, decoded with its own alias table as a client keeps it.
  std::map<std::uint32_t, std::string> table;
  std::vector<std::string> seen, wire;
  for (const rx& r : two.received()) {
    REQUIRE(r.topic_alias);
    CHECK(*r.topic_alias >= 1);  // never 0 [MQTT-3.3.2-8]
    CHECK(*r.topic_alias <= 2);  // never above the client's maximum [MQTT-3.3.2-11]
    if (!r.topic.empty()) table[*r.topic_alias] = r.topic;
    wire.push_back(r.topic.empty() ? "=" + std::to_string(*r.topic_alias) : r.topic);
    seen.push_back(table[*r.topic_alias]);
  }
  CHECK(seen == std::vector<std::string>{"t/a", "t/b", "t/a", "t/c", "t/a", "t/b"});
  // t/c takes alias 2 from t/b (t/a was sent after t/b); t/b then takes alias 2 back from t/c,
  // by then the least recently used.
  CHECK(wire == std::vector<std::string>{"t/a", "t/b", "=1", "t/c", "=1", "t/b"});
  for (const rx& r : none.received()) {
    CHECK_FALSE(r.topic_alias);  // none for a client that announced none [MQTT-3.1.2-27]
    CHECK_FALSE(r.topic.empty());
  }
}

TEST_CASE("engine: 5.0, a payload said to be UTF-8 that is not: PUBACK or PUBREC 0x99, at QoS 0 DISCONNECT 0x99",
          "[engine][v5]") {
  world<> w;
  auto& sub = w.connected(hello("sub"));
  w.subscribe(sub, "#", qos::exactly_once);
  auto& pub = w.connected(hello("pub"), protocol_version::v5);
  auto send = [&](std::string payload, qos q, std::uint16_t id) {
    codec::properties_builder props;
    props.add(codec::property_id::payload_format_indicator, 1);
    codec::publish p;
    p.topic = "t";
    p.payload = payload;
    p.qos_level = q;
    p.packet_id = id;
    p.properties = props.view();
    w.feed(pub, p);
  };
  send("caf\xc3\xa9", qos::at_least_once, 1);  // well-formed UTF-8
  CHECK(pub.only(PUBACK).code == 0);
  CHECK(sub.only(PUBLISH).payload == "caf\xc3\xa9");
  send("\xc3\x28", qos::at_least_once, 2);
  CHECK(pub.only(PUBACK).code == code(reason_code::payload_format_invalid));
  send("\xff", qos::exactly_once, 3);
  CHECK(pub.only(PUBREC).code == code(reason_code::payload_format_invalid));
  CHECK(sub.received().empty());
  send("\xff", qos::at_most_once, 0);
  CHECK(pub.only(DISCONNECT).code == code(reason_code::payload_format_invalid));
  CHECK_FALSE(pub.is_open());
}

TEST_CASE("engine: a server without QoS 2 or retained messages says so in CONNACK and holds clients to it",
          "[engine][v5][MQTT-3.2.2-9][MQTT-3.2.2-10][MQTT-3.2.2-12][MQTT-3.2.2-13][MQTT-3.1.2-28]") {
  mb::broker_options o;
  o.maximum_qos = qos::at_least_once;
  o.retain_available = false;
  o.response_information = "responses/";
  world<> w(o);
  // A CONNECT with a will of QoS `wq` and `retain`, or none; the CONNACK (or nothing, for a close).
  auto connect = [&](protocol_version v, const std::string& id, std::optional<qos> wq, bool retain,
                     bool ask_response) -> std::deque<rx> {
    auto& l = w.open(v);
    codec::connect c;
    c.version = v;
    c.client_id = id;
    codec::properties_builder props;
    if (ask_response) props.add(codec::property_id::request_response_information, 1);
    c.properties = props.view();
    if (wq) {
      codec::will_message wm;
      wm.topic = "will";
      wm.payload = "w";
      wm.qos_level = *wq;
      wm.retain = retain;
      c.will = wm;
    }
    w.feed(l, c);
    return l.received();
  };
  auto asked = connect(protocol_version::v5, "asked", std::nullopt, false, true);
  REQUIRE(asked.size() == 1);
  CHECK(asked[0].code == 0);
  CHECK(asked[0].maximum_qos == std::optional<std::uint32_t>(1));
  CHECK(asked[0].retain_available == std::optional<std::uint32_t>(0));
  CHECK(asked[0].response_information == "responses/");
  auto quiet = connect(protocol_version::v5, "quiet", std::nullopt, false, false);
  REQUIRE(quiet.size() == 1);
  CHECK(quiet[0].response_information.empty());  // not asked for [MQTT-3.1.2-28]

  // Wills above what the server takes are refused: 0x9B for QoS, 0x9A for retain; 3.1.1 closes.
  auto wq = connect(protocol_version::v5, "wq", qos::exactly_once, false, false);
  REQUIRE(wq.size() == 1);
  CHECK(wq[0].code == code(reason_code::qos_not_supported));
  auto wr = connect(protocol_version::v5, "wr", qos::at_most_once, true, false);
  REQUIRE(wr.size() == 1);
  CHECK(wr[0].code == code(reason_code::retain_not_supported));
  CHECK(connect(protocol_version::v3_1_1, "w3", qos::exactly_once, false, false).empty());
  CHECK(w.engine.stats().sessions == 2);

  // A SUBSCRIBE for QoS 2 is accepted and granted the maximum [MQTT-3.2.2-10].
  auto& s2 = w.connected(hello("s2"), protocol_version::v5);
  codec::subscribe sub;
  sub.packet_id = 1;
  sub.entries.push_back({"q/#", {qos::exactly_once}});
  w.feed(s2, sub);
  CHECK(s2.only(SUBACK).codes == std::vector<std::uint8_t>{1});

  // PUBLISH above the maximum: DISCONNECT 0x9B; retained: 0x9A.
  auto& p1 = w.connected(hello("p1"), protocol_version::v5);
  w.publish(p1, "t", qos::exactly_once, 1);
  CHECK(p1.only(DISCONNECT).code == code(reason_code::qos_not_supported));
  auto& p2 = w.connected(hello("p2"), protocol_version::v5);
  codec::publish r;
  r.topic = "t";
  r.retain = true;
  w.feed(p2, r);
  CHECK(p2.only(DISCONNECT).code == code(reason_code::retain_not_supported));
}

namespace {
struct log_hooks {
  std::vector<std::pair<mb::log_level, std::string>>* lines = nullptr;
  void log(mb::log_level level, std::string_view message) { lines->emplace_back(level, std::string(message)); }
};
struct log_policies : plain_policies {
  using hooks = log_hooks;
};
}  // namespace

TEST_CASE("engine: the log hook gets the broker's messages, formatted, up to options().log_level", "[engine][hooks][log]") {
  std::vector<std::pair<mb::log_level, std::string>> lines;
  mb::broker_options o;
  o.log_level = mb::log_level::info;
  world<log_policies> w(o, log_hooks{&lines});
  auto& good = w.connected(hello("good"));
  auto& bad = w.connected(hello("bad"));
  w.feed(bad, codec::connect{});  // a second CONNECT [MQTT-3.1.0-2]
  auto& refused = w.open(protocol_version::v5);
  w.connect(refused, hello(std::string(300, 'x')), protocol_version::v5);
  w.feed(good, codec::disconnect{});
  std::vector<std::string> text;
  for (const auto& [level, line] : lines) text.push_back(std::string(mb::to_string(level)) + ": " + line);
  CHECK(text == std::vector<std::string>{
                    "info: client 'good' connected (MQTT 3.1.1, new session)",
                    "info: client 'bad' connected (MQTT 3.1.1, new session)",
                    "warning: client 'bad': " + std::error_code(mb::protocol_errc::second_connect).message() + "; closing",
                    "info: client 'bad' disconnected: " + std::error_code(mb::protocol_errc::second_connect).message(),
                    "notice: CONNECT of '" + std::string(300, 'x') + "' refused: Client Identifier not valid (0x85)",
                    "info: client 'good' disconnected: DISCONNECT received",
                });

  // Less verbose: nothing below the level reaches the hook.
  lines.clear();
  mb::broker_options quiet;
  quiet.log_level = mb::log_level::warning;
  world<log_policies> q(quiet, log_hooks{&lines});
  q.connected(hello("a"));
  CHECK(lines.empty());
}

TEST_CASE("engine: the log says why each connection ended", "[engine][hooks][log]") {
  std::vector<std::pair<mb::log_level, std::string>> lines;
  mb::broker_options o;
  o.log_level = mb::log_level::info;
  world<log_policies> w(o, log_hooks{&lines});
  const auto v5 = protocol_version::v5;
  w.connected(hello("idle").keep_alive(10), v5);
  auto& first = w.connected(hello("twice"));
  w.connected(hello("twice"));
  auto& gone = w.connected(hello("gone"));
  auto& willing = w.connected(hello("willing"), v5);
  w.advance(seconds(15));  // idle's Keep Alive runs out; the others are still within theirs
  w.drop(gone);
  codec::disconnect with_will;
  with_will.reason = reason_code::disconnect_with_will_message;
  w.feed(willing, with_will);
  (void)first;
  std::vector<std::string> ended;
  for (const auto& [level, line] : lines)
    if (line.find("disconnected") != std::string::npos) ended.push_back(line);
  CHECK(ended == std::vector<std::string>{
                     "client 'twice' disconnected: a newer connection with this Client Identifier took over",
                     "client 'idle' disconnected: nothing received within the Keep Alive",
                     "client 'gone' disconnected: connection closed without DISCONNECT",
                     "client 'willing' disconnected: DISCONNECT with Will Message (0x04) received",
                 });
}

TEST_CASE("engine: 5.0 acknowledgement reasons: PUBACK 0x10 without subscribers, PUBREL 0x92 for an unknown PUBREC",
          "[engine][v5][qos]") {
  world<> w;
  auto& pub = w.connected(hello("pub"), protocol_version::v5);
  w.publish(pub, "t", qos::at_least_once, 1);
  CHECK(pub.only(PUBACK).code == code(reason_code::no_matching_subscribers));
  auto& sub = w.connected(hello("sub"));
  w.subscribe(sub, "t", qos::at_most_once);
  w.publish(pub, "t", qos::at_least_once, 2);
  CHECK(pub.only(PUBACK).code == 0);
  w.ack<codec::pubrec>(pub, 77);  // nothing in flight with that identifier
  CHECK(pub.only(PUBREL).code == code(reason_code::packet_identifier_not_found));
}

TEST_CASE("engine: 5.0, a PUBREC of 0x80 or more ends the QoS 2 exchange and frees its slot", "[engine][v5][qos]") {
  mb::broker_options o;
  o.max_inflight = 1;
  world<> w(o);
  auto& sub = w.connected(hello("sub"), protocol_version::v5);
  w.subscribe(sub, "t", qos::exactly_once);
  auto& pub = w.connected(hello("pub"));
  w.publish(pub, "t", qos::exactly_once, 1);
  w.publish(pub, "t", qos::exactly_once, 2);
  pub.received();
  const rx first = sub.only(PUBLISH);
  codec::pubrec refuse;
  refuse.packet_id = first.id;
  refuse.reason = reason_code::unspecified_error;  // 0x80, the lowest error
  w.feed(sub, refuse);
  auto next = sub.received();  // no PUBREL; the waiting message takes the freed slot
  REQUIRE(next.size() == 1);
  CHECK(next[0].type == PUBLISH);
}

TEST_CASE("engine: max_subscriptions_per_client and max_retained_messages hold at exactly their value",
          "[engine][limits]") {
  mb::broker_options o;
  o.max_subscriptions_per_client = 2;
  o.max_retained_messages = 2;
  world<> w(o);
  auto& c5 = w.connected(hello("c5"), protocol_version::v5);
  auto sub = [&](auto& l, const std::string& filter, std::uint16_t id) {
    codec::subscribe s;
    s.packet_id = id;
    s.entries.push_back({filter, {qos::at_most_once}});
    w.feed(l, s);
    return l.only(SUBACK).codes;
  };
  CHECK(sub(c5, "a", 1) == std::vector<std::uint8_t>{0});
  CHECK(sub(c5, "b", 2) == std::vector<std::uint8_t>{0});
  CHECK(sub(c5, "c", 3) == std::vector<std::uint8_t>{code(reason_code::quota_exceeded)});
  CHECK(sub(c5, "a", 4) == std::vector<std::uint8_t>{0});  // replacing one held is not a new one
  auto& c3 = w.connected(hello("c3"));
  sub(c3, "a", 1);
  sub(c3, "b", 2);
  CHECK(sub(c3, "c", 3) == std::vector<std::uint8_t>{0x80});

  auto& pub = w.connected(hello("pub"));
  auto retain = [&](const std::string& topic, const std::string& payload) {
    codec::publish p;
    p.topic = topic;
    p.payload = payload;
    p.retain = true;
    w.feed(pub, p);
  };
  retain("r/1", "1");
  retain("r/2", "2");
  retain("r/3", "3");   // a third topic: not stored
  retain("r/1", "1b");  // replacing a stored one still works
  CHECK(w.engine.stats().retained_messages == 2);
  CHECK_FALSE(w.engine.retained("r/3"));
  CHECK(w.engine.retained("r/1")->payload() == "1b");
}

TEST_CASE("engine: 5.0, a Session Expiry Interval above persistent_session_expiry is capped and CONNACK says so",
          "[engine][v5][session]") {
  mb::broker_options o;
  o.persistent_session_expiry = seconds(100);
  world<> w(o);
  auto& l = w.open(protocol_version::v5);
  w.connect(l, hello("long").session_expiry(1000), protocol_version::v5);
  const rx ack = l.only(CONNACK);
  CHECK(ack.session_expiry == std::optional<std::uint32_t>(100));
  w.drop(l);
  w.advance(seconds(100) - nanoseconds(1));
  CHECK(w.engine.stats().sessions == 1);
  w.advance(nanoseconds(1));
  CHECK(w.engine.stats().sessions == 0);
}

TEST_CASE("engine: 5.0, a QoS 2 PUBLISH refused with PUBREC 0x87 frees its identifier for the next message",
          "[engine][qos][v5][MQTT-4.3.3-9]") {
  world<> w;
  auto& sub = w.connected(hello("sub"));
  w.subscribe(sub, "t", qos::exactly_once);
  auto& pub = w.connected(hello("pub"), protocol_version::v5);
  w.publish(pub, "$refused", qos::exactly_once, 7);  // $-topics belong to the server
  CHECK(pub.only(PUBREC).code == code(reason_code::not_authorized));
  w.publish(pub, "t", qos::exactly_once, 7);  // a new message, not a resend
  CHECK(pub.only(PUBREC).code == 0);
  CHECK(sub.only(PUBLISH).topic == "t");
}

TEST_CASE("engine: QoS 1 and 2 to a client resume after a reconnect: PUBLISH with DUP, or PUBREL after PUBREC",
          "[engine][qos][session][MQTT-4.4.0-1]") {
  world<> w;
  auto& sub = w.connected(hello("sub", false));
  w.subscribe(sub, "q/#", qos::exactly_once);
  auto& pub = w.connected(hello("pub"));
  w.publish(pub, "q/1", qos::at_least_once, 1);
  w.publish(pub, "q/2", qos::exactly_once, 2);
  w.publish(pub, "q/3", qos::exactly_once, 3);
  auto out = sub.received();
  REQUIRE(out.size() == 3);
  // The client received q/3 and sent PUBREC: the broker owes PUBREL; then the client vanishes.
  w.ack<codec::pubrec>(sub, out[2].id);
  CHECK(sub.only(PUBREL).id == out[2].id);
  w.drop(sub);

  auto& back = w.open();
  w.connect(back, hello("sub", false), protocol_version::v3_1_1);
  auto resent = back.received();
  REQUIRE(resent.size() == 4);
  CHECK(resent[0].type == CONNACK);
  CHECK(resent[1].type == PUBLISH);
  CHECK(resent[1].topic == "q/1");
  CHECK(resent[1].dup);
  CHECK(resent[2].type == PUBLISH);
  CHECK(resent[2].topic == "q/2");
  CHECK(resent[2].dup);
  CHECK(resent[3].type == PUBREL);
  CHECK(resent[3].id == out[2].id);
  w.ack<codec::puback>(back, resent[1].id);
  w.ack<codec::pubrec>(back, resent[2].id);
  CHECK(back.only(PUBREL).id == resent[2].id);
  w.ack<codec::pubcomp>(back, resent[2].id);
  w.ack<codec::pubcomp>(back, resent[3].id);
  CHECK(back.received().empty());
  // Nothing is owed any more: a further reconnect resends nothing.
  w.drop(back);
  auto& last = w.open();
  w.connect(last, hello("sub", false), protocol_version::v3_1_1);
  auto final_packets = last.received();
  REQUIRE(final_packets.size() == 1);
  CHECK(final_packets[0].type == CONNACK);
}

// ---- the storage contract: what a durable storage is told, and acknowledge after commit

namespace {

/// A durable storage that writes each call down as a line, and commits only when the test says.
struct recording_storage {
  static constexpr bool durable = true;

  void save_session(std::string_view id, std::uint32_t expiry) { log("save_session " + std::string(id) + " " + std::to_string(expiry)); }
  void erase_session(std::string_view id) { log("erase_session " + std::string(id)); }
  void save_subscription(std::string_view id, std::string_view filter, codec::subscribe_options o, std::uint32_t sub_id) {
    log("save_subscription " + std::string(id) + " " + std::string(filter) + " q" + std::to_string(int(o.max_qos)) + " " +
        std::to_string(sub_id));
  }
  void erase_subscription(std::string_view id, std::string_view filter) {
    log("erase_subscription " + std::string(id) + " " + std::string(filter));
  }
  void save_retained(const mb::message_ptr& m) { log("save_retained " + std::string(m->topic())); }
  void erase_retained(std::string_view topic) { log("erase_retained " + std::string(topic)); }
  void enqueue(std::string_view id, const mb::message_ptr& m, qos q) {
    log("enqueue " + std::string(id) + " " + std::string(m->topic()) + " q" + std::to_string(int(q)));
  }
  void send(std::string_view id, std::uint16_t packet_id, const mb::message_ptr& m, qos q) {
    log("send " + std::string(id) + " " + std::to_string(packet_id) + " " + std::string(m->topic()) + " q" +
        std::to_string(int(q)));
  }
  void pubrec(std::string_view id, std::uint16_t packet_id) { log("pubrec " + std::string(id) + " " + std::to_string(packet_id)); }
  void acknowledge(std::string_view id, std::uint16_t packet_id) {
    log("acknowledge " + std::string(id) + " " + std::to_string(packet_id));
  }
  void drop(std::string_view id, const mb::message_ptr& m) { log("drop " + std::string(id) + " " + std::string(m->topic())); }
  void clear_messages(std::string_view id) { log("clear_messages " + std::string(id)); }
  void receive(std::string_view id, std::uint16_t packet_id, const mb::message_ptr& m) {
    log("receive " + std::string(id) + " " + std::to_string(packet_id) + " " + std::string(m->topic()));
  }
  void release(std::string_view id, std::uint16_t packet_id) { log("release " + std::string(id) + " " + std::to_string(packet_id)); }
  void save_will(std::string_view id, const mb::message_ptr& m, std::chrono::system_clock::time_point) {
    log("save_will " + std::string(id) + " " + std::string(m->topic()));
  }
  void erase_will(std::string_view id) { log("erase_will " + std::string(id)); }
  std::uint64_t commit() {
    log("commit " + std::to_string(++tickets));
    return tickets;
  }
  void on_commit(std::function<void(std::uint64_t)>) {}

  /// What a restart gives back: a kept session "kept" subscribed to "t/#" at QoS 2, owing one
  /// queued QoS 1 message, one sent QoS 1 message (id 7) and a PUBREL (id 8), holding received
  /// QoS 2 identifier 9; a retained message on "r".
  template <class Loader>
  void load(Loader& l) {
    log("load");
    if (!restart) return;
    codec::subscribe_options o;
    o.max_qos = qos::exactly_once;
    l.session("kept", 300);
    l.subscription("kept", "t/#", o, 0);
    l.outgoing("kept", 7, mb::message::make("t/sent", "s", qos::at_least_once, false), qos::at_least_once,
               mb::storage::outgoing_state::sent);
    l.outgoing("kept", 8, mb::message::make("t/two", "2", qos::exactly_once, false), qos::exactly_once,
               mb::storage::outgoing_state::pubrec_received);
    l.outgoing("kept", 0, mb::message::make("t/queued", "q", qos::at_least_once, false), qos::at_least_once,
               mb::storage::outgoing_state::queued);
    l.inbound("kept", 9);
    l.retained(mb::message::make("r", "kept", qos::at_most_once, true));
  }

  void log(std::string line) { calls.push_back(std::move(line)); }
  /// The calls since the last look.
  std::vector<std::string> take() { return std::exchange(calls, {}); }

  std::vector<std::string> calls;
  std::uint64_t tickets = 0;
  bool restart = false;
};

struct durable_policies : plain_policies {
  using storage = recording_storage;
};
using durable_world = world<durable_policies>;
using lines = std::vector<std::string>;

}  // namespace

TEST_CASE("storage: a contract-complete durable storage passes the checks, and storage::memory needs none",
          "[engine][storage]") {
  STATIC_REQUIRE(mb::storage::detail::check_storage<recording_storage>());
  STATIC_REQUIRE(mb::engine::protocol<durable_policies>::durable);
  STATIC_REQUIRE_FALSE(mb::engine::protocol<plain_policies>::durable);
}

TEST_CASE("storage: QoS 1 to a kept session is recorded and the PUBACK waits for its commit; forwarding does not",
          "[engine][storage][qos]") {
  durable_world w;
  auto& sub = w.connected(hello("sub", false));
  w.subscribe(sub, "t", qos::at_least_once);
  auto& pub = w.connected(hello("pub"));
  w.engine.storage().take();

  w.publish(pub, "t", qos::at_least_once, 3);
  CHECK(w.engine.storage().take() == lines{"send sub 1 t q1", "commit 2"});
  CHECK(pub.received().empty());            // not acknowledged before the commit
  CHECK(sub.only(PUBLISH).topic == "t");   // at-least-once tolerates a resend: forwarded already
  w.engine.storage_committed(1);
  w.run_events();
  CHECK(pub.received().empty());  // an earlier commit does not release it
  w.engine.storage_committed(2);
  w.run_events();
  CHECK(pub.only(PUBACK).id == 3);

  // The deletion takes a ticket of its own, so it joins the next batch at once.
  w.ack<codec::puback>(sub, 1);
  CHECK(w.engine.storage().take() == lines{"acknowledge sub 1", "commit 3"});
}

TEST_CASE("storage: acknowledgements leave in the order of the PUBLISHes, one that needs no commit behind one that does",
          "[engine][storage][MQTT-4.6.0-2]") {
  durable_world w;
  auto& sub = w.connected(hello("sub", false));
  w.subscribe(sub, "kept/#", qos::at_least_once);
  auto& pub = w.connected(hello("pub"));
  w.engine.storage().take();

  w.publish(pub, "kept/1", qos::at_least_once, 1);  // recorded: waits for commit 2
  w.publish(pub, "nobody", qos::at_least_once, 2);  // nothing recorded, but behind the first
  CHECK(w.engine.storage().take() == lines{"send sub 1 kept/1 q1", "commit 2"});
  CHECK(pub.received().empty());
  w.engine.storage_committed(2);
  w.run_events();
  auto acks = pub.received();
  REQUIRE(acks.size() == 2);
  CHECK(acks[0].id == 1);
  CHECK(acks[1].id == 2);
  // With nothing held, an acknowledgement that needs no commit goes at once.
  w.publish(pub, "nobody", qos::at_least_once, 3);
  CHECK(pub.only(PUBACK).id == 3);
}

TEST_CASE("storage: QoS 2 from a kept session is durable before the PUBREC and before it is routed; PUBCOMP after the release is",
          "[engine][storage][qos][MQTT-4.3.3-2]") {
  durable_world w;
  auto& sub = w.connected(hello("sub"));  // not kept: nothing of its own is stored
  w.subscribe(sub, "t", qos::at_most_once);
  auto& pub = w.connected(hello("pub", false).session_expiry(60), protocol_version::v5);
  w.engine.storage().take();

  w.publish(pub, "t", qos::exactly_once, 5);
  CHECK(w.engine.storage().take() == lines{"receive pub 5 t", "commit 1"});
  CHECK(pub.received().empty());
  CHECK(sub.received().empty());  // not routed before the commit
  w.engine.storage_committed(1);
  w.run_events();
  CHECK(sub.only(PUBLISH).topic == "t");
  CHECK(pub.only(PUBREC).code == 0);

  w.ack<codec::pubrel>(pub, 5);
  CHECK(w.engine.storage().take() == lines{"release pub 5", "commit 2"});
  CHECK(pub.received().empty());
  w.engine.storage_committed(2);
  w.run_events();
  CHECK(pub.only(PUBCOMP).id == 5);
}

TEST_CASE("storage: QoS 2 to a kept session: sent, PUBREC received, completed", "[engine][storage][qos]") {
  durable_world w;
  auto& sub = w.connected(hello("sub", false));
  w.subscribe(sub, "t", qos::exactly_once);
  auto& pub = w.connected(hello("pub"));
  w.engine.storage().take();

  w.publish(pub, "t", qos::at_most_once, 0);  // QoS 0 never reaches the storage
  CHECK(w.engine.storage().take().empty());
  sub.received();
  w.publish(pub, "t", qos::exactly_once, 1);
  CHECK(w.engine.storage().take() == lines{"send sub 1 t q2", "commit 2"});
  const rx out = sub.only(PUBLISH);
  w.ack<codec::pubrec>(sub, out.id);
  CHECK(w.engine.storage().take() == lines{"pubrec sub 1", "commit 3"});
  CHECK(sub.only(PUBREL).id == out.id);
  w.ack<codec::pubcomp>(sub, out.id);
  CHECK(w.engine.storage().take() == lines{"acknowledge sub 1", "commit 4"});
}

TEST_CASE("storage: SUBSCRIBE of a kept session: recorded, SUBACK after the commit; UNSUBACK never overtakes it",
          "[engine][storage]") {
  durable_world w;
  auto& l = w.connected(hello("s", false));
  CHECK(w.engine.storage().take() == lines{"save_session s 604800"});  // 3.1.1 Clean Session 0: the broker's default
  w.send_subscribe(l, "a/+", qos::at_least_once, 4);
  codec::unsubscribe u;
  u.packet_id = 5;
  u.filters.push_back("other");
  w.feed(l, u);
  CHECK(w.engine.storage().take() == lines{"save_subscription s a/+ q1 0", "commit 1"});
  CHECK(l.received().empty());
  w.engine.storage_committed(1);
  w.run_events();
  auto acks = l.received();
  REQUIRE(acks.size() == 2);
  CHECK(acks[0].type == SUBACK);
  CHECK(acks[1].type == UNSUBACK);
}

TEST_CASE("storage: retained messages are stored whatever their QoS and no acknowledgement waits for them",
          "[engine][storage][retain]") {
  durable_world w;
  auto& pub = w.connected(hello("pub"));
  w.engine.storage().take();
  codec::publish p;
  p.topic = "r";
  p.payload = "v";
  p.qos_level = qos::at_least_once;
  p.packet_id = 1;
  p.retain = true;
  w.feed(pub, p);
  CHECK(w.engine.storage().take() == lines{"save_retained r"});
  CHECK(pub.only(PUBACK).id == 1);
  p.payload = "";  // deletes it [MQTT-3.3.1-10]
  p.qos_level = qos::at_most_once;
  w.feed(pub, p);
  CHECK(w.engine.storage().take() == lines{"erase_retained r"});
}

TEST_CASE("storage: a kept session's disconnect, delayed will and expiry", "[engine][storage][session][will]") {
  durable_world w;
  auto& l = w.connected(hello("k", false).session_expiry(30).will("will/k", 10), protocol_version::v5);
  CHECK(w.engine.storage().take() == lines{"save_session k 30"});
  w.drop(l);
  CHECK(w.engine.storage().take() == lines{"save_will k will/k"});
  w.advance(seconds(10));
  CHECK(w.engine.storage().take() == lines{"erase_will k"});
  w.advance(seconds(20));
  CHECK(w.engine.storage().take() == lines{"erase_session k"});
}

TEST_CASE("storage: what a restart loads is served again: session, subscription, owed messages, QoS 2 ids, retained",
          "[engine][storage][session][MQTT-4.4.0-1]") {
  durable_world w;
  w.engine.storage().restart = true;
  w.engine.load(w.now, w.system_now);
  CHECK(w.engine.stats().sessions == 1);
  CHECK(w.engine.stats().retained_messages == 1);

  auto& back = w.open();
  w.connect(back, hello("kept", false), protocol_version::v3_1_1);
  auto got = back.received();
  REQUIRE(got.size() == 4);
  CHECK(got[0].type == CONNACK);
  CHECK(got[0].session_present);
  CHECK(got[1].type == PUBLISH);  // in flight: again, with DUP
  CHECK(got[1].id == 7);
  CHECK(got[1].dup);
  CHECK(got[2].type == PUBREL);  // PUBREC was stored: PUBREL, not PUBLISH
  CHECK(got[2].id == 8);
  CHECK(got[3].type == PUBLISH);  // the queued one, after those in flight
  CHECK(got[3].topic == "t/queued");
  CHECK(got[3].id != 7);
  CHECK(got[3].id != 8);

  // Its subscription routes again, and the QoS 2 identifier it held is still held.
  auto& pub = w.connected(hello("pub"));
  w.publish(pub, "t/new", qos::at_most_once, 0);
  CHECK(back.only(PUBLISH).topic == "t/new");
  w.publish(back, "t/again", qos::exactly_once, 9, true);  // resent after the restart: not routed twice
  CHECK(back.received().size() == 1);                       // its PUBREC only
}

TEST_CASE("engine: a connection already closing sends no second DISCONNECT when it is then taken over",
          "[engine][v5][MQTT-3.14.4-1]") {
  // Found by the engine fuzzer: a protocol error queued DISCONNECT 0x81, the write was still in
  // flight, and a takeover queued DISCONNECT 0x8E behind it.
  world<> w;
  auto& first = w.connected(hello("x"), protocol_version::v5);
  first.hold_close = true;
  w.engine.on_malformed(first, mb::make_error_code(mb::codec_errc::truncated), protocol_version::v5, w.now);
  CHECK(first.only(DISCONNECT).code == code(reason_code::malformed_packet));
  CHECK(first.is_open());  // closing, its write not done
  auto& second = w.connected(hello("x", false), protocol_version::v5);
  CHECK(first.received().empty());
  w.engine.stop([] {});
  w.run_events();
  CHECK(first.received().empty());
  first.hold_close = false;
  first.finish();
  CHECK_FALSE(first.is_open());
  CHECK(second.only(DISCONNECT).code == code(reason_code::server_shutting_down));
}

namespace {
struct threaded_policies : plain_policies {
  using locking = mb::locking::shared;
};
}  // namespace

TEST_CASE("engine, several threads: a connection that ends before its posted takeover ran still counts as taken over",
          "[engine][will][threads][MQTT-3.1.3-9]") {
  // Found by the integration tests under the sanitizers: the new CONNECT took the session and
  // posted the takeover to the old connection's thread, the old transport ended first, and its
  // delayed will went out at once.
  world<threaded_policies> w;
  auto& watcher = w.connected(hello("watcher"));
  w.subscribe(watcher, "will/#", qos::at_most_once);
  auto& old = w.connected(hello("wd").session_expiry(60).will("will/wd", 5), protocol_version::v5);
  auto& again = w.open(protocol_version::v5);
  w.connect(again, hello("wd", false).session_expiry(60), protocol_version::v5, false);
  REQUIRE(old.events.size() == 1);  // the takeover, not yet run on its thread
  w.drop(old);                      // the old transport ends first
  w.advance(seconds(60));
  CHECK(watcher.received().empty());
  CHECK(again.only(CONNACK).session_present);
}

TEST_CASE("storage: a QoS 2 message held for its commit is routed when its connection ends first, once",
          "[engine][storage][qos][MQTT-4.3.3-2]") {
  durable_world w;
  auto& sub = w.connected(hello("sub"));
  w.subscribe(sub, "t", qos::at_most_once);
  auto& pub = w.connected(hello("pub", false).session_expiry(60), protocol_version::v5);
  w.publish(pub, "t", qos::exactly_once, 5);
  CHECK(sub.received().empty());  // held for the commit
  w.drop(pub);
  CHECK(sub.only(PUBLISH).topic == "t");  // not lost with the connection
  auto& again = w.connected(hello("pub", false).session_expiry(60), protocol_version::v5);
  w.publish(again, "t", qos::exactly_once, 5, true);  // the client resends: known, not routed again
  w.engine.storage_committed(w.engine.storage().tickets);
  w.run_events();
  CHECK(sub.received().empty());
  CHECK(again.only(PUBREC).id == 5);
}

TEST_CASE("storage: an acknowledgement queued behind held ones that are already durable goes out once, in order",
          "[engine][storage][MQTT-4.6.0-2]") {
  durable_world w;
  auto& sub = w.connected(hello("sub", false));
  w.subscribe(sub, "kept/#", qos::at_least_once);
  auto& pub = w.connected(hello("pub"));
  w.publish(pub, "kept/1", qos::at_least_once, 1);  // held for its commit
  CHECK(pub.received().empty());
  // The commit is reported, but the link's event has not run yet when the next PUBLISH comes.
  w.engine.storage_committed(w.engine.storage().tickets);
  w.publish(pub, "nobody", qos::at_least_once, 2);
  auto acks = pub.received();
  REQUIRE(acks.size() == 2);
  CHECK(acks[0].id == 1);
  CHECK(acks[1].id == 2);
  w.run_events();
  CHECK(pub.received().empty());
}

// ---- shared subscriptions (5.0 section 4.8.2; 3.1.1 clients too)

namespace {

codec::subscribe_options at(qos q) {
  codec::subscribe_options o;
  o.max_qos = q;
  return o;
}

/// SUBSCRIBE with one filter, its options and (5.0) a Subscription Identifier: the SUBACK's codes.
template <class W>
std::vector<std::uint8_t> subscribe_to(W& w, typename W::fake_link& l, const std::string& filter,
                                       codec::subscribe_options o, std::uint32_t sub_id = 0) {
  codec::subscribe s;
  s.packet_id = 9;
  codec::properties_builder props;
  if (sub_id != 0) {
    props.add(codec::property_id::subscription_identifier, sub_id);
    s.properties = props.view();
  }
  codec::subscribe_entry e;
  e.filter = filter;
  e.options = o;
  s.entries.push_back(e);
  w.feed(l, s);
  return l.only(SUBACK).codes;
}

/// A PUBLISH whose payload tells the messages apart.
template <class W>
void send(W& w, typename W::fake_link& l, const std::string& topic, const std::string& payload,
          qos q = qos::at_most_once, std::uint16_t id = 0, bool retain = false) {
  codec::publish p;
  p.topic = topic;
  p.payload = payload;
  p.qos_level = q;
  p.packet_id = id;
  p.retain = retain;
  w.feed(l, p);
}

/// The payloads of what `l` received since the last look, all of which must be PUBLISHes.
template <class Link>
std::vector<std::string> payloads(Link& l) {
  std::vector<std::string> out;
  for (const rx& r : l.received()) {
    INFO("got " << codec::to_string(r.type));
    CHECK(r.type == PUBLISH);
    out.push_back(r.payload);
  }
  return out;
}

using strings = std::vector<std::string>;
using codes = std::vector<std::uint8_t>;

}  // namespace

TEST_CASE("engine: shared subscription, round robin: each message goes to exactly one member, the members in turn",
          "[engine][shared]") {
  world<> w;
  auto& a = w.connected(hello("a"));
  auto& b = w.connected(hello("b"));
  auto& c = w.connected(hello("c"));
  for (auto* m : {&a, &b, &c}) w.subscribe(*m, "$share/g/t", qos::at_most_once);
  CHECK(w.engine.stats().shared_groups == 1);
  auto& pub = w.connected(hello("pub"));
  for (int i = 0; i < 9; ++i) send(w, pub, "t", std::to_string(i));
  CHECK(payloads(a) == strings{"0", "3", "6"});
  CHECK(payloads(b) == strings{"1", "4", "7"});
  CHECK(payloads(c) == strings{"2", "5", "8"});
  send(w, pub, "other", "x");  // the group's filter only
  CHECK(a.received().empty());
}

TEST_CASE("engine: two groups on one filter each get every message once; ordinary subscribers get theirs beside them",
          "[engine][shared]") {
  world<> w;
  auto& a = w.connected(hello("a"));
  auto& b = w.connected(hello("b"));
  auto& c = w.connected(hello("c"));
  auto& d = w.connected(hello("d"));
  auto& plain = w.connected(hello("plain"));
  w.subscribe(a, "$share/one/s/+", qos::at_most_once);
  w.subscribe(b, "$share/one/s/+", qos::at_most_once);
  w.subscribe(c, "$share/two/s/+", qos::at_most_once);
  w.subscribe(d, "$share/two/s/+", qos::at_most_once);
  w.subscribe(plain, "s/+", qos::at_most_once);
  // A member with an ordinary subscription of its own gets that copy as well (5.0 section 4.8.2).
  w.subscribe(a, "s/#", qos::at_most_once);
  CHECK(w.engine.stats().shared_groups == 2);
  auto& pub = w.connected(hello("pub"));
  for (int i = 0; i < 4; ++i) send(w, pub, "s/x", std::to_string(i));
  const strings all{"0", "1", "2", "3"};
  const strings got_a = payloads(a);
  strings one = payloads(b);
  // a's own subscription gives it every message; its group's turns give it some a second time.
  CHECK(got_a.size() == 6);
  for (const std::string& p : all) {
    const auto copies = std::count(got_a.begin(), got_a.end(), p);
    CHECK(copies >= 1);
    if (copies == 2) one.push_back(p);
  }
  std::sort(one.begin(), one.end());
  CHECK(one == all);  // group "one": each message once, between a and b
  strings two = payloads(c);
  for (const std::string& p : payloads(d)) two.push_back(p);
  std::sort(two.begin(), two.end());
  CHECK(two == all);  // group "two" as well
  CHECK(payloads(plain) == all);
}

TEST_CASE("engine: a group spans versions and each member gets its own granted QoS and Subscription Identifier",
          "[engine][shared][v5][MQTT-4.8.2-3][MQTT-3.3.4-3]") {
  world<> w;
  auto& old = w.connected(hello("old"));                             // 3.1.1, QoS 0 granted
  auto& v5 = w.connected(hello("new"), protocol_version::v5);        // 5.0, QoS 1 granted, identifier 7
  CHECK(subscribe_to(w, old, "$share/g/q/#", at(qos::at_most_once)) == codes{0});
  CHECK(subscribe_to(w, v5, "$share/g/q/#", at(qos::at_least_once), 7) == codes{1});
  auto& pub = w.connected(hello("pub"), protocol_version::v5);
  for (std::uint16_t i = 1; i <= 4; ++i) {
    send(w, pub, "q/" + std::to_string(i), "m", qos::exactly_once, i);
    pub.received();  // PUBREC
    w.ack<codec::pubrel>(pub, i);
    pub.received();  // PUBCOMP
  }
  const auto to_old = old.received();
  const auto to_new = v5.received();
  REQUIRE(to_old.size() == 2);
  REQUIRE(to_new.size() == 2);
  for (const rx& r : to_old) {
    CHECK(r.qos_level == qos::at_most_once);  // [MQTT-4.8.2-3] min(QoS 2, granted 0)
    CHECK(r.subscription_ids.empty());
  }
  for (const rx& r : to_new) {
    CHECK(r.qos_level == qos::at_least_once);  // min(QoS 2, granted 1)
    CHECK(r.subscription_ids == std::vector<std::uint32_t>{7});
  }
  CHECK(to_old[0].topic == "q/1");
  CHECK(to_new[0].topic == "q/2");
}

TEST_CASE("engine: a shared subscription gets no retained messages when it is made (5.0 section 3.3.1.3), live ones as usual",
          "[engine][shared][retain]") {
  world<> w;
  auto& pub = w.connected(hello("pub"));
  send(w, pub, "r/1", "kept", qos::at_most_once, 0, true);
  auto& member = w.connected(hello("m"), protocol_version::v5);
  auto& plain = w.connected(hello("p"), protocol_version::v5);
  codec::subscribe_options o = at(qos::at_least_once);
  o.retain_handling = codec::retain_handling_option::send;
  CHECK(subscribe_to(w, member, "$share/g/r/#", o) == codes{1});  // only the SUBACK
  CHECK(member.received().empty());
  codec::subscribe s;
  s.packet_id = 1;
  s.entries.push_back({"r/#", o});
  w.feed(plain, s);
  const auto got = plain.received();  // an ordinary subscription does get it
  REQUIRE(got.size() == 2);
  CHECK(got[0].type == SUBACK);
  CHECK(got[1].payload == "kept");
  CHECK(subscribe_to(w, member, "$share/g/r/#", o) == codes{1});  // nor when repeated
  CHECK(member.received().empty());
  send(w, pub, "r/2", "live", qos::at_most_once, 0, true);
  const rx live = member.only(PUBLISH);
  CHECK(live.payload == "live");
  CHECK_FALSE(live.retain);  // Retain As Published 0 [MQTT-3.3.1-12]
}

TEST_CASE("engine: UNSUBSCRIBE leaves the group; a group without members goes",
          "[engine][shared]") {
  world<> w;
  auto& a = w.connected(hello("a"));
  auto& b = w.connected(hello("b"), protocol_version::v5);
  w.subscribe(a, "$share/g/t", qos::at_most_once);
  w.subscribe(b, "$share/g/t", qos::at_most_once);
  auto& pub = w.connected(hello("pub"), protocol_version::v5);
  codec::unsubscribe u;
  u.packet_id = 3;
  u.filters.push_back("$share/g/t");
  w.feed(a, u);
  CHECK(a.only(UNSUBACK).id == 3);
  for (int i = 0; i < 3; ++i) send(w, pub, "t", std::to_string(i));
  CHECK(a.received().empty());
  CHECK(payloads(b) == strings{"0", "1", "2"});
  CHECK(w.engine.stats().shared_groups == 1);
  u.filters = {"$share/other/t", "$share/g/t"};
  w.feed(b, u);
  CHECK(b.only(UNSUBACK).codes == codes{code(reason_code::no_subscription_existed), 0});
  CHECK(w.engine.stats().shared_groups == 0);
  send(w, pub, "t", "nobody", qos::at_least_once, 1);
  CHECK(pub.only(PUBACK).code == code(reason_code::no_matching_subscribers));
}

TEST_CASE("engine: a member whose session ends hands its queued and QoS 1 messages in flight to another member; QoS 2 in flight goes to no one",
          "[engine][shared][qos][MQTT-4.8.2-5]") {
  mb::broker_options o;
  o.max_inflight = 2;
  world<> w(o);
  auto& a = w.connected(hello("a"));  // Clean Session: its session ends with the connection
  auto& b = w.connected(hello("b"));
  w.subscribe(a, "$share/g/t", qos::exactly_once);
  w.subscribe(b, "$share/g/t", qos::exactly_once);
  auto& pub = w.connected(hello("pub"));
  // In turn: q1 and q2 to a (in flight), x to b, then y to a, queued behind a's full window.
  send(w, pub, "t", "q1", qos::at_least_once, 1);
  send(w, pub, "t", "x", qos::at_least_once, 2);
  send(w, pub, "t", "q2", qos::exactly_once, 3);
  send(w, pub, "t", "z", qos::at_least_once, 4);
  send(w, pub, "t", "y", qos::at_least_once, 5);
  pub.received();
  CHECK(payloads(a) == strings{"q1", "q2"});
  CHECK(payloads(b) == strings{"x", "z"});
  w.ack<codec::puback>(b, 1);
  w.ack<codec::puback>(b, 2);
  w.drop(a);
  const auto handed = b.received();
  REQUIRE(handed.size() == 2);  // q1 (in flight, QoS 1) and y (never sent); not q2 [MQTT-4.8.2-5]
  CHECK(handed[0].payload == "q1");
  CHECK_FALSE(handed[0].dup);  // a first delivery for b
  CHECK(handed[0].qos_level == qos::at_least_once);
  CHECK(handed[1].payload == "y");
  CHECK(w.engine.stats().shared_groups == 1);

  SECTION("with no member left, nothing is handed over") {
    w.drop(b);
    CHECK(w.engine.stats().shared_groups == 0);
    CHECK(w.engine.stats().sessions == 1);  // the publisher's
  }
}

TEST_CASE("engine: a message handed over from a member whose session ended is not sent once its Message Expiry Interval has passed",
          "[engine][shared][v5][MQTT-3.3.2-5]") {
  world<> w;
  auto& a = w.connected(hello("a"), protocol_version::v5);
  auto& b = w.connected(hello("b"), protocol_version::v5);
  w.subscribe(a, "$share/g/t", qos::at_least_once);
  w.subscribe(b, "$share/g/t", qos::at_least_once);
  auto& pub = w.connected(hello("pub"), protocol_version::v5);
  codec::properties_builder expiry;
  expiry.add(codec::property_id::message_expiry_interval, 2);
  codec::publish p;
  p.topic = "t";
  p.payload = "short-lived";
  p.qos_level = qos::at_least_once;
  p.packet_id = 1;
  p.properties = expiry.view();
  w.feed(pub, p);               // a's turn
  send(w, pub, "t", "b's", qos::at_least_once, 2);
  send(w, pub, "t", "lasting", qos::at_least_once, 3);  // a's again, no expiry
  pub.received();
  CHECK(payloads(a) == strings{"short-lived", "lasting"});
  w.ack<codec::puback>(b, b.only(PUBLISH).id);
  w.advance(seconds(3));
  w.drop(a);  // its session ends with both unacknowledged
  CHECK(payloads(b) == strings{"lasting"});
}

TEST_CASE("engine: a persistent member that is offline keeps what it had and is skipped for new messages; at expiry the rest is handed over",
          "[engine][shared][session][v5][MQTT-4.8.2-4]") {
  world<> w;
  auto& a = w.connected(hello("a", false).session_expiry(10), protocol_version::v5);
  auto& b = w.connected(hello("b"));
  w.subscribe(a, "$share/g/t", qos::exactly_once);
  w.subscribe(b, "$share/g/t", qos::exactly_once);
  auto& pub = w.connected(hello("pub"));
  send(w, pub, "t", "two", qos::exactly_once, 1);  // a's turn
  send(w, pub, "t", "one", qos::at_least_once, 2);  // b's
  send(w, pub, "t", "one-more", qos::at_least_once, 3);  // a's
  pub.received();
  CHECK(payloads(a) == strings{"two", "one-more"});
  b.received();
  w.drop(a);
  CHECK(b.received().empty());  // merely disconnected: a's session keeps them
  for (int i = 0; i < 3; ++i) send(w, pub, "t", "new" + std::to_string(i));
  CHECK(payloads(b) == strings{"new0", "new1", "new2"});  // the offline member is skipped

  SECTION("reconnected, it completes the QoS 2 delivery it had begun") {
    auto& back = w.open(protocol_version::v5);
    w.connect(back, hello("a", false).session_expiry(10), protocol_version::v5);
    const auto got = back.received();
    REQUIRE(got.size() == 3);
    CHECK(got[0].type == CONNACK);
    CHECK(got[1].payload == "two");
    CHECK(got[1].dup);
    CHECK(got[2].payload == "one-more");
    w.ack<codec::pubrec>(back, got[1].id);
    CHECK(back.only(PUBREL).id == got[1].id);
    CHECK(b.received().empty());
  }
  SECTION("its session expires: the QoS 1 message goes to b, the QoS 2 one to no one") {
    w.advance(seconds(10));
    CHECK(w.engine.stats().sessions == 2);
    const rx handed = b.only(PUBLISH);
    CHECK(handed.payload == "one-more");
  }
}

TEST_CASE("engine: with every member offline a message waits in one member's session, in turn",
          "[engine][shared][session]") {
  world<> w;
  auto& a = w.connected(hello("a", false));
  auto& b = w.connected(hello("b", false));
  w.subscribe(a, "$share/g/t", qos::at_least_once);
  w.subscribe(b, "$share/g/t", qos::at_least_once);
  w.drop(a);
  w.drop(b);
  auto& pub = w.connected(hello("pub"));
  for (std::uint16_t i = 1; i <= 4; ++i) send(w, pub, "t", std::to_string(i), qos::at_least_once, i);
  auto& a2 = w.open();
  w.connect(a2, hello("a", false), protocol_version::v3_1_1);
  CHECK(a2.received().size() == 3);  // CONNACK, "1", "3"
  auto& b2 = w.open();
  w.connect(b2, hello("b", false), protocol_version::v3_1_1);
  const auto got_b = b2.received();
  REQUIRE(got_b.size() == 3);
  CHECK(got_b[1].payload == "2");
  CHECK(got_b[2].payload == "4");
}

TEST_CASE("engine: malformed shared filters are refused per filter: 0x8F in 5.0, 0x80 in 3.1.1",
          "[engine][shared][MQTT-4.8.2-1][MQTT-4.8.2-2]") {
  world<> w;
  const std::vector<std::string> bad{"$share/g", "$share//t", "$share/a+/t", "$share/a#/t", "$share/g/", "$share/g/a/#/b",
                                     "$share/a/b+"};
  const std::vector<std::string> good{"$share/g/#", "$share/g/+/x", "$share/$g/t"};
  for (auto v : {protocol_version::v3_1_1, protocol_version::v5}) {
    auto& l = w.connected(hello(v == protocol_version::v5 ? "five" : "three"), v);
    codec::subscribe s;
    s.packet_id = 2;
    for (const auto& f : bad) {
      codec::subscribe_entry e;
      e.filter = f;
      s.entries.push_back(e);
    }
    for (const auto& f : good) {
      codec::subscribe_entry e;
      e.filter = f;
      e.options.max_qos = qos::at_least_once;
      s.entries.push_back(e);
    }
    w.feed(l, s);
    const std::uint8_t refused = v == protocol_version::v5 ? code(reason_code::topic_filter_invalid) : 0x80;
    codes expected(bad.size(), refused);
    expected.insert(expected.end(), good.size(), 1);
    CHECK(l.only(SUBACK).codes == expected);
  }
  CHECK(w.engine.stats().shared_groups == good.size());
}

TEST_CASE("engine: 5.0, No Local on a shared subscription is a Protocol Error: DISCONNECT 0x82, nothing subscribed",
          "[engine][shared][v5][MQTT-3.8.3-4]") {
  world<> w;
  auto& l = w.connected(hello("nl"), protocol_version::v5);
  codec::subscribe s;
  s.packet_id = 1;
  codec::subscribe_entry plain;
  plain.filter = "p";
  codec::subscribe_entry shared;
  shared.filter = "$share/g/t";
  shared.options.no_local = true;
  s.entries = {plain, shared};
  w.feed(l, s);
  CHECK(l.only(DISCONNECT).code == code(reason_code::protocol_error));
  CHECK_FALSE(l.is_open());
  CHECK(w.engine.stats().shared_groups == 0);
  // No Local on an ordinary filter, or on a malformed `$share/` one (0x8F), is no such error.
  auto& ok = w.connected(hello("ok"), protocol_version::v5);
  codec::subscribe_options o;
  o.no_local = true;
  CHECK(subscribe_to(w, ok, "t", o) == codes{0});
  CHECK(subscribe_to(w, ok, "$share/g", o) == codes{code(reason_code::topic_filter_invalid)});
  CHECK(ok.is_open());
}

TEST_CASE("engine: shared subscriptions switched off: CONNACK says 0 and SUBSCRIBE gets 0x9E (5.0) or 0x80 (3.1.1)",
          "[engine][shared][v5]") {
  {
    world<> on;
    auto& l = on.open(protocol_version::v5);
    on.connect(l, hello("x"), protocol_version::v5);
    CHECK(l.only(CONNACK).shared_subscription_available == 1);
  }
  mb::broker_options o;
  o.shared_subscriptions = false;
  world<> w(o);
  auto& v5 = w.open(protocol_version::v5);
  w.connect(v5, hello("five"), protocol_version::v5);
  CHECK(v5.only(CONNACK).shared_subscription_available == 0);
  CHECK(subscribe_to(w, v5, "$share/g/t", at(qos::at_least_once)) ==
        codes{code(reason_code::shared_subscriptions_not_supported)});
  auto& old = w.connected(hello("three"));
  CHECK(subscribe_to(w, old, "$share/g/t", at(qos::at_least_once)) == codes{0x80});
  CHECK(w.engine.stats().shared_groups == 0);
}

TEST_CASE("engine: a PUBACK or PUBREC of 0x80 or more from a member ends the message there; it is not handed to another member",
          "[engine][shared][v5][MQTT-4.8.2-6]") {
  world<> w;
  auto& a = w.connected(hello("a"), protocol_version::v5);
  auto& b = w.connected(hello("b"), protocol_version::v5);
  auto& c = w.connected(hello("c"), protocol_version::v5);
  for (auto* m : {&a, &b, &c}) w.subscribe(*m, "$share/g/t", qos::exactly_once);
  auto& pub = w.connected(hello("pub"));
  send(w, pub, "t", "refused-1", qos::at_least_once, 1);
  send(w, pub, "t", "refused-2", qos::exactly_once, 2);
  send(w, pub, "t", "taken", qos::at_least_once, 3);
  const rx one = a.only(PUBLISH);
  codec::puback no1;
  no1.packet_id = one.id;
  no1.reason = reason_code::unspecified_error;
  w.feed(a, no1);
  const rx two = b.only(PUBLISH);
  codec::pubrec no2;
  no2.packet_id = two.id;
  no2.reason = reason_code::implementation_specific_error;
  w.feed(b, no2);
  CHECK(b.received().empty());  // the exchange ends: no PUBREL
  w.ack<codec::puback>(c, c.only(PUBLISH).id);
  w.drop(a);  // their sessions end: nothing of theirs is left to hand over
  w.drop(b);
  CHECK(c.received().empty());
}

namespace {

struct sticky_policies : plain_policies {
  using shared_strategy = mb::router::sticky_by_publisher;
};
struct random_policies : plain_policies {
  using shared_strategy = mb::router::random_member;
};

}  // namespace

TEST_CASE("engine: sticky by publisher: one publisher's messages go to one member while it stays; only its publishers move",
          "[engine][shared]") {
  world<sticky_policies> w;
  std::vector<world<sticky_policies>::fake_link*> members;
  for (const char* id : {"m0", "m1", "m2", "m3"}) {
    members.push_back(&w.connected(hello(id)));
    w.subscribe(*members.back(), "$share/g/t", qos::at_most_once);
  }
  std::vector<world<sticky_policies>::fake_link*> pubs;
  for (int p = 0; p < 12; ++p) pubs.push_back(&w.connected(hello("pub" + std::to_string(p))));
  // Which member each publisher's messages reach; every message exactly once.
  auto round = [&](int messages) {
    for (int i = 0; i < messages; ++i)
      for (std::size_t p = 0; p < pubs.size(); ++p) send(w, *pubs[p], "t", std::to_string(p));
    std::vector<int> where(pubs.size(), -1);
    std::size_t total = 0;
    for (std::size_t m = 0; m < members.size(); ++m) {
      for (const std::string& p : payloads(*members[m])) {
        ++total;
        const int& seen = where[std::stoul(p)];
        INFO("publisher " << p);
        CHECK((seen == -1 || seen == int(m)));
        where[std::stoul(p)] = int(m);
      }
    }
    CHECK(total == pubs.size() * std::size_t(messages));
    return where;
  };
  const std::vector<int> before = round(5);
  CHECK(std::set<int>(before.begin(), before.end()).size() > 1);  // not all on one member
  // The member of publisher 0 leaves: only the publishers it had move.
  const int gone = before[0];
  codec::unsubscribe u;
  u.packet_id = 4;
  u.filters.push_back("$share/g/t");
  w.feed(*members[std::size_t(gone)], u);
  members[std::size_t(gone)]->received();
  const std::vector<int> after = round(5);
  for (std::size_t p = 0; p < pubs.size(); ++p) {
    INFO("publisher " << p);
    if (before[p] == gone)
      CHECK(after[p] != gone);
    else
      CHECK(after[p] == before[p]);
  }
  // It comes back: its publishers return to it, as their ranking is unchanged.
  w.subscribe(*members[std::size_t(gone)], "$share/g/t", qos::at_most_once);
  CHECK(round(3) == before);
}

TEST_CASE("engine: random strategy: each message to one member, spread over all of them", "[engine][shared]") {
  world<random_policies> w;
  std::vector<world<random_policies>::fake_link*> members;
  for (const char* id : {"a", "b", "c"}) {
    members.push_back(&w.connected(hello(id)));
    w.subscribe(*members.back(), "$share/g/t", qos::at_most_once);
  }
  auto& pub = w.connected(hello("pub"));
  const int n = 300;
  for (int i = 0; i < n; ++i) send(w, pub, "t", std::to_string(i));
  std::set<std::string> seen;
  std::size_t total = 0;
  bool in_turn = true;  // round robin would give a, b, c, a, ... exactly
  for (std::size_t m = 0; m < members.size(); ++m) {
    const strings got = payloads(*members[m]);
    total += got.size();
    CHECK(got.size() >= 50);  // 100 expected; far below that is not uniform
    for (std::size_t k = 0; k < got.size(); ++k) {
      seen.insert(got[k]);
      if (got[k] != std::to_string(3 * k + m)) in_turn = false;
    }
  }
  CHECK(total == std::size_t(n));
  CHECK(seen.size() == std::size_t(n));
  CHECK_FALSE(in_turn);
}

namespace {

/// A durable storage whose restart gives back two kept sessions that are members of one group.
struct shared_restart_storage : recording_storage {
  template <class Loader>
  void load(Loader& l) {
    codec::subscribe_options o;
    o.max_qos = qos::at_least_once;
    for (const char* id : {"m1", "m2"}) {
      l.session(id, 300);
      l.subscription(id, "$share/g/t", o, 0);
    }
  }
};
struct shared_restart_policies : plain_policies {
  using storage = shared_restart_storage;
};

}  // namespace

TEST_CASE("storage: a shared subscription is recorded by its whole filter, and a restart rebuilds its group",
          "[engine][storage][shared]") {
  {
    durable_world w;
    auto& l = w.connected(hello("s", false));
    w.engine.storage().take();
    w.subscribe(l, "$share/g/t", qos::at_least_once);
    CHECK(w.engine.storage().take() == lines{"save_subscription s $share/g/t q1 0", "commit 1"});
    codec::unsubscribe u;
    u.packet_id = 2;
    u.filters.push_back("$share/g/t");
    w.feed(l, u);
    CHECK(w.engine.storage().take() == lines{"erase_subscription s $share/g/t", "commit 2"});
  }
  world<shared_restart_policies> w;
  w.engine.load(w.now, w.system_now);
  CHECK(w.engine.stats().shared_groups == 1);
  auto& pub = w.connected(hello("pub"));
  for (std::uint16_t i = 1; i <= 2; ++i) send(w, pub, "t", std::to_string(i), qos::at_least_once, i);
  for (const char* id : {"m1", "m2"}) {
    auto& l = w.open();
    w.connect(l, hello(id, false), protocol_version::v3_1_1);
    const auto got = l.received();
    REQUIRE(got.size() == 2);  // CONNACK and one of the two messages each
    CHECK(got[1].type == PUBLISH);
  }
}

// ---- 5.0 features a host may switch off, server redirection, a PUBLISH rate limit

TEST_CASE("engine: wildcards and Subscription Identifiers switched off: CONNACK says 0, SUBACK 0xA2 or 0xA1 (5.0) or 0x80 (3.1.1)",
          "[engine][v5][subscribe][MQTT-3.8.3-2][MQTT-3.9.3-1]") {
  {
    world<> on;
    auto& l = on.open(protocol_version::v5);
    on.connect(l, hello("x"), protocol_version::v5);
    const rx ack = l.only(CONNACK);
    CHECK(ack.wildcard_subscription_available == 1);
    CHECK(ack.subscription_identifier_available == 1);
    CHECK(subscribe_to(on, l, "a/+", at(qos::at_most_once), 7) == codes{0});
  }
  mb::broker_options o;
  o.wildcard_subscriptions = false;
  o.subscription_identifiers = false;
  world<> w(o);
  auto& v5 = w.open(protocol_version::v5);
  w.connect(v5, hello("five"), protocol_version::v5);
  const rx ack = v5.only(CONNACK);
  CHECK(ack.wildcard_subscription_available == 0);
  CHECK(ack.subscription_identifier_available == 0);
  CHECK(ack.shared_subscription_available == 1);

  const auto no_wildcard = code(reason_code::wildcard_subscriptions_not_supported);
  codec::subscribe s;
  s.packet_id = 3;
  for (const char* f : {"a/+", "plain/topic", "a/#", "$share/g/x/#", "$share/g/exact", "a/+/b/#"})
    s.entries.push_back({f, {qos::at_least_once}});
  w.feed(v5, s);
  CHECK(v5.only(SUBACK).codes == codes{no_wildcard, 1, no_wildcard, no_wildcard, 1, no_wildcard});
  CHECK(v5.is_open());  // refused in SUBACK, not with DISCONNECT

  // A Subscription Identifier refuses every filter of its SUBSCRIBE, wildcards or not.
  codec::subscribe with_id;
  with_id.packet_id = 4;
  codec::properties_builder props;
  props.add(codec::property_id::subscription_identifier, 5);
  with_id.properties = props.view();
  with_id.entries.push_back({"id/plain", {qos::at_least_once}});
  with_id.entries.push_back({"id/+", {qos::at_least_once}});
  w.feed(v5, with_id);
  const auto no_ids = code(reason_code::subscription_identifiers_not_supported);
  CHECK(v5.only(SUBACK).codes == codes{no_ids, no_ids});
  CHECK(v5.is_open());

  auto& old = w.connected(hello("three"));
  CHECK(subscribe_to(w, old, "a/+", at(qos::at_least_once)) == codes{0x80});  // 3.1.1 [MQTT-3.8.3-2]
  CHECK(subscribe_to(w, old, "a/#", at(qos::at_least_once)) == codes{0x80});
  CHECK(subscribe_to(w, old, "a/b", at(qos::at_least_once)) == codes{1});

  // Nothing refused was subscribed: only the exact filters get messages.
  auto& pub = w.connected(hello("pub"));
  for (const char* t : {"a/b", "a/x", "plain/topic", "id/plain", "x/y"}) send(w, pub, t, t);
  CHECK(payloads(old) == strings{"a/b"});
  CHECK(payloads(v5) == strings{"plain/topic"});

  // Each switch alone: identifiers refused, wildcards taken.
  mb::broker_options ids_only;
  ids_only.subscription_identifiers = false;
  world<> i(ids_only);
  auto& c = i.connected(hello("c"), protocol_version::v5);
  CHECK(subscribe_to(i, c, "a/+", at(qos::at_most_once)) == codes{0});
  CHECK(subscribe_to(i, c, "a/b", at(qos::at_most_once), 9) == codes{no_ids});
}

namespace {

/// Authenticated users "away" are sent elsewhere for now, "moved" for good; authenticate (from
/// auth_hooks) refuses "bad" first. `asked` gets the client identifier of each CONNECT asked about.
struct redirect_hooks : auth_hooks {
  std::vector<std::string>* asked = nullptr;
  std::optional<mb::hooks::redirection> redirect(const mb::hooks::connect_info& c) {
    asked->push_back(std::string(c.client_id));
    if (c.username && *c.username == "away") return mb::hooks::redirection{"b.example:1883", false};
    if (c.username && *c.username == "moved") return mb::hooks::redirection{"c.example:1883 d.example:1883", true};
    return std::nullopt;
  }
};
struct redirect_policies : plain_policies {
  using hooks = redirect_hooks;
};

}  // namespace

TEST_CASE("engine: the redirect hook refuses an authenticated CONNECT: CONNACK 0x9C or 0x9D with Server Reference, 3 in 3.1.1",
          "[engine][hooks][redirect][v5][MQTT-3.2.2-4][MQTT-3.2.2-5][MQTT-3.2.2-6][MQTT-3.2.2-7][MQTT-3.1.2-24]") {
  static_assert(mb::hooks::has_redirect_v<redirect_hooks> && mb::hooks::needs_client_info_v<redirect_hooks> &&
                !mb::hooks::has_redirect_v<auth_hooks>);
  std::vector<std::string> asked;
  world<redirect_policies> w({}, redirect_hooks{{}, &asked});
  // A kept session with a message queued, and a live connection: neither may change.
  auto& kept = w.connected(hello("kept", false));
  w.subscribe(kept, "t", qos::at_least_once);
  w.drop(kept);
  auto& live = w.connected(hello("live"), protocol_version::v5);
  auto& pub = w.connected(hello("pub"));
  send(w, pub, "t", "queued", qos::at_least_once, 1);
  pub.received();
  asked.clear();

  struct attempt {
    const char* id;
    const char* user;
    protocol_version v;
    std::uint8_t connack;
    std::optional<std::string> reference;
  };
  const attempt cases[] = {
      {"kept", "away", protocol_version::v5, code(reason_code::use_another_server), "b.example:1883"},
      {"live", "moved", protocol_version::v5, code(reason_code::server_moved), "c.example:1883 d.example:1883"},
      {"kept", "away", protocol_version::v3_1_1, 3, std::nullopt},  // Server unavailable
      {"x", "bad", protocol_version::v5, code(reason_code::bad_user_name_or_password), std::nullopt},
  };
  for (const attempt& a : cases) {
    auto& l = w.open(a.v);
    w.connect(l, hello(a.id).user(a.user), a.v);  // Clean Start 1: it would have ended "kept"
    const rx ack = l.only(CONNACK);
    CHECK(ack.code == a.connack);
    CHECK_FALSE(ack.session_present);
    CHECK(ack.server_reference == a.reference);
    CHECK_FALSE(l.is_open());
  }
  // Asked after authentication, so never for the refused "x".
  CHECK(asked == std::vector<std::string>{"kept", "live", "kept"});
  CHECK(live.is_open());
  CHECK(live.received().empty());  // not taken over
  CHECK(w.engine.stats().sessions == 3);
  auto& back = w.open();
  w.connect(back, hello("kept", false), protocol_version::v3_1_1);
  auto got = back.received();
  REQUIRE(got.size() == 2);
  CHECK(got[0].session_present);
  CHECK(got[1].payload == "queued");

  // The Server Reference only where the client's Maximum Packet Size takes the CONNACK: 22 bytes
  // (fixed header 2, flags and reason 2, property length 1, the property 3 + 14).
  for (const std::uint32_t max : {22u, 21u}) {
    auto& l = w.open(protocol_version::v5);
    w.connect(l, hello("small").user("away").maximum_packet_size(max), protocol_version::v5);
    const rx ack = l.only(CONNACK);
    CHECK(ack.code == code(reason_code::use_another_server));
    CHECK(ack.server_reference.has_value() == (max == 22));
  }
}

TEST_CASE("engine: redirect() of a connected client: DISCONNECT 0x9C or 0x9D with Server Reference, a close in 3.1.1",
          "[engine][redirect][v5][MQTT-3.14.2-1][MQTT-4.13.2-1][MQTT-3.1.2-8][MQTT-3.1.2-24]") {
  world<> w;
  auto& watcher = w.connected(hello("watcher"));
  w.subscribe(watcher, "will/#", qos::at_most_once);
  auto& five = w.connected(hello("five").will("will/five"), protocol_version::v5);
  CHECK(w.engine.redirect("five", "b.example:1883", false));
  CHECK(five.received().empty());  // not inside the caller: on the link's own thread
  CHECK(five.is_open());
  w.run_events();
  const rx d = five.only(DISCONNECT);
  CHECK(d.code == code(reason_code::use_another_server));
  CHECK(d.server_reference == std::optional<std::string>("b.example:1883"));
  CHECK_FALSE(five.is_open());
  CHECK(payloads(watcher) == strings{"will"});  // a close the client did not ask for

  auto& moved = w.connected(hello("moved"), protocol_version::v5);
  CHECK(w.engine.redirect("moved", "c.example:1883", true));
  w.run_events();
  CHECK(moved.only(DISCONNECT).code == code(reason_code::server_moved));

  auto& old = w.connected(hello("old").will("will/old"));
  CHECK(w.engine.redirect("old", "b.example:1883", true));
  w.run_events();
  CHECK(old.received().empty());  // 3.1.1 has no DISCONNECT from the server
  CHECK_FALSE(old.is_open());
  CHECK(payloads(watcher) == strings{"will"});

  CHECK_FALSE(w.engine.redirect("nobody", "b.example:1883", false));
  CHECK_FALSE(w.engine.redirect("old", "b.example:1883", false));  // gone with its connection
  auto& offline = w.connected(hello("offline", false));
  w.drop(offline);
  CHECK_FALSE(w.engine.redirect("offline", "b.example:1883", false));  // a session, not connected

  // Within the client's Maximum Packet Size, or without the Server Reference: 21 bytes with it
  // (fixed header 2, reason 1, property length 1, the property 3 + 14).
  for (const std::uint32_t max : {21u, 20u}) {
    auto& l = w.connected(hello("small").maximum_packet_size(max), protocol_version::v5);
    CHECK(w.engine.redirect("small", "b.example:1883", false));
    w.run_events();
    const rx dis = l.only(DISCONNECT);
    CHECK(dis.code == code(reason_code::use_another_server));
    CHECK(dis.server_reference.has_value() == (max == 21));
  }

  // Taken over before its thread got to it: the redirection was for the old connection only.
  auto& first = w.connected(hello("twice"), protocol_version::v5);
  CHECK(w.engine.redirect("twice", "b.example:1883", false));
  auto& second = w.connected(hello("twice"), protocol_version::v5);
  CHECK(first.only(DISCONNECT).code == code(reason_code::session_taken_over));
  CHECK(second.is_open());
  CHECK(second.received().empty());
}

TEST_CASE("engine: max_publish_rate per second of the clock: the PUBLISH over it gets DISCONNECT 0x96, a close in 3.1.1",
          "[engine][rate][v5][MQTT-3.14.2-1][MQTT-4.13.2-1]") {
  std::vector<std::pair<mb::log_level, std::string>> lines;
  mb::broker_options o;
  o.max_publish_rate = 3;
  world<log_policies> w(o, log_hooks{&lines});
  auto& sub = w.connected(hello("sub"));
  w.subscribe(sub, "r/#", qos::at_most_once);
  auto& five = w.connected(hello("five").will("r/will"), protocol_version::v5);
  // w.now is on a whole second: two at its start, the third 999 ms later, three in the next second.
  send(w, five, "r/t", "1");
  send(w, five, "r/t", "2");
  w.advance(milliseconds(999));
  send(w, five, "r/t", "3");
  w.advance(milliseconds(1));
  for (const char* p : {"4", "5", "6"}) send(w, five, "r/t", p);
  CHECK(five.received().empty());
  CHECK(w.engine.stats().rate_limited == 0);
  send(w, five, "r/t", "7");  // the fourth in this second
  CHECK(five.only(DISCONNECT).code == code(reason_code::message_rate_too_high));
  CHECK_FALSE(five.is_open());
  CHECK(payloads(sub) == strings{"1", "2", "3", "4", "5", "6", "will"});
  CHECK(w.engine.stats().rate_limited == 1);
  CHECK(w.engine.stats().protocol_errors == 0);
  CHECK(std::count(lines.begin(), lines.end(),
                   std::make_pair(mb::log_level::notice,
                                  std::string("client 'five': more than 3 PUBLISH packets in a second; closing"))) == 1);

  auto& old = w.connected(hello("old"));
  for (std::uint16_t i = 1; i <= 3; ++i) send(w, old, "r/q", "q", qos::at_least_once, i);
  CHECK(old.received().size() == 3);  // PUBACKs
  send(w, old, "r/q", "over", qos::at_least_once, 4);
  CHECK(old.received().empty());  // no PUBACK: not handled; 3.1.1 has no DISCONNECT from the server
  CHECK_FALSE(old.is_open());
  CHECK(payloads(sub) == strings{"q", "q", "q"});
  CHECK(w.engine.stats().rate_limited == 2);

  // 0: no limit.
  world<> unlimited;
  auto& fast = unlimited.connected(hello("fast"));
  for (int i = 0; i < 1000; ++i) send(unlimited, fast, "r/t", "m");
  CHECK(fast.is_open());
  CHECK(unlimited.engine.stats().rate_limited == 0);
}

// ---- 5.0 Reason String on the server's CONNACK refusals and DISCONNECTs

namespace {

/// An error whose message is longer than a Reason String may be: 70 bytes, a two-byte character
/// (U+00E9) at bytes 63 and 64, where the cut falls.
const std::error_category& wordy_category() noexcept {
  class category final : public std::error_category {
   public:
    const char* name() const noexcept override { return "test.wordy"; }
    std::string message(int) const override { return std::string(63, 'a') + "\xC3\xA9" + "bcdef"; }
  };
  static const category instance;
  return instance;
}

/// A PUBLISH with Topic Alias `alias` and no topic: one the client never set is a Protocol Error.
codec::publish aliased_publish(std::uint16_t alias, codec::properties_builder& props) {
  codec::publish p;
  p.payload = "m";
  props.add(codec::property_id::topic_alias, alias);
  p.properties = props.view();
  return p;
}

}  // namespace

TEST_CASE("engine: a refusing 5.0 CONNACK says why in a Reason String, none after Request Problem Information 0 [MQTT-3.1.2-29]",
          "[engine][v5][reason-string][MQTT-3.1.2-29][MQTT-3.2.2-5]") {
  world<auth_policies> w;
  const auto v5 = protocol_version::v5;
  struct refusal {
    hello h;
    std::uint8_t connack;
    const char* why;
  };
  const std::string long_id(300, 'x');
  const refusal cases[] = {
      {hello(long_id), code(reason_code::client_identifier_not_valid), "client identifier not valid"},
      {hello("w").will("a/+"), code(reason_code::topic_name_invalid), "invalid Will Topic"},
      {hello("u").user("bad"), code(reason_code::bad_user_name_or_password), "Bad User Name or Password"},
      {hello("u").user("banned"), code(reason_code::not_authorized), "Not authorized"},
  };
  for (const refusal& r : cases) {
    for (const std::optional<std::uint32_t> asked : {std::optional<std::uint32_t>(), std::optional<std::uint32_t>(1),
                                                     std::optional<std::uint32_t>(0)}) {
      INFO(r.why << ", Request Problem Information " << (asked ? std::to_string(*asked) : "absent"));
      hello h = r.h;
      if (asked) h.request_problem_information(*asked);
      auto& l = w.open(v5);
      w.connect(l, h, v5);
      const rx ack = l.only(CONNACK);
      CHECK(ack.code == r.connack);
      // Absent means 1; 0 is honoured on CONNACK too, where the specification would allow one.
      CHECK(ack.reason_string == (asked == 0u ? std::nullopt : std::optional<std::string>(r.why)));
      CHECK_FALSE(l.is_open());
    }
  }

  // Input the decoder refused before the CONNECT was whole: the defaults, a Reason String.
  auto& early = w.open(v5);
  w.engine.on_malformed(early, mb::make_error_code(mb::codec_errc::invalid_utf8), v5, w.now);
  const rx ack = early.only(CONNACK);
  CHECK(ack.code == code(reason_code::malformed_packet));
  CHECK(ack.reason_string == std::optional<std::string>("ill-formed UTF-8 string"));

  // 3.1.1 unchanged: a CONNACK has no properties.
  auto& old = w.open();
  w.connect(old, hello(long_id), protocol_version::v3_1_1);
  const rx old_ack = old.only(CONNACK);
  CHECK(old_ack.code == 2);
  CHECK_FALSE(old_ack.reason_string);
}

TEST_CASE("engine: the server's DISCONNECT to a 5.0 client names the problem in a Reason String, none after Request Problem Information 0 [MQTT-3.1.2-29]",
          "[engine][v5][reason-string][MQTT-3.1.2-29][MQTT-4.13.1-1]") {
  mb::broker_options o;
  o.max_publish_rate = 1;
  world<> w(o);
  const auto v5 = protocol_version::v5;
  for (const std::optional<std::uint32_t> asked : {std::optional<std::uint32_t>(), std::optional<std::uint32_t>(0)}) {
    INFO("Request Problem Information " << (asked ? "0" : "absent"));
    auto with = [&](hello h) -> hello {
      if (asked) h.request_problem_information(*asked);
      return h;
    };
    auto said = [&](const char* why) { return asked ? std::nullopt : std::optional<std::string>(why); };

    auto& alias = w.connected(with(hello("alias")), v5);
    codec::properties_builder props;
    w.feed(alias, aliased_publish(1, props));
    rx d = alias.only(DISCONNECT);
    CHECK(d.code == code(reason_code::protocol_error));  // says less than the Reason String
    CHECK(d.reason_string == said("topic alias not set"));

    auto& bad = w.connected(with(hello("bad")), v5);
    w.engine.on_malformed(bad, mb::make_error_code(mb::codec_errc::truncated), v5, w.now);
    d = bad.only(DISCONNECT);
    CHECK(d.code == code(reason_code::malformed_packet));
    CHECK(d.reason_string == said("field runs past the end of the packet"));

    auto& first = w.connected(with(hello("same")), v5);
    auto& second = w.connected(with(hello("same")), v5);
    d = first.only(DISCONNECT);
    CHECK(d.code == code(reason_code::session_taken_over));
    CHECK(d.reason_string == said("a newer connection with this Client Identifier took over"));
    w.drop(second);

    auto& fast = w.connected(with(hello("fast")), v5);
    send(w, fast, "r/t", "1");
    send(w, fast, "r/t", "2");
    d = fast.only(DISCONNECT);
    CHECK(d.code == code(reason_code::message_rate_too_high));
    CHECK(d.reason_string == said("more PUBLISH packets a second than the server takes"));

    auto& idle = w.connected(with(hello("idle").keep_alive(10)), v5);
    w.advance(seconds(15));
    d = idle.only(DISCONNECT);
    CHECK(d.code == code(reason_code::keep_alive_timeout));
    CHECK(d.reason_string == said("nothing received within the Keep Alive"));
  }

  // 3.1.1: the same protocol error just closes [MQTT-4.8.0-1].
  auto& old = w.connected(hello("old"));
  w.feed(old, codec::auth{});
  CHECK(old.received().empty());
  CHECK_FALSE(old.is_open());
}

TEST_CASE("engine: no Reason String where it would make the CONNACK or DISCONNECT larger than the client's Maximum Packet Size, which still goes out [MQTT-3.2.2-19] [MQTT-3.14.2-3]",
          "[engine][v5][reason-string][MQTT-3.2.2-19][MQTT-3.14.2-3]") {
  const auto v5 = protocol_version::v5;
  // The longest Reason String, 64 bytes, cut before the character it would split: 63 of them.
  const std::error_code wordy(1, wordy_category());
  const std::optional<std::string> cut(std::string(63, 'a'));
  SECTION("CONNACK: 71 bytes at most with the longest, 72 taken") {
    world<auth_policies> w;
    for (const std::uint32_t max : {72u, 71u, 20u}) {
      INFO("Maximum Packet Size " << max);
      auto& l = w.open(v5);
      w.connect(l, hello(std::string(300, 'x')).maximum_packet_size(max), v5);
      rx ack = l.only(CONNACK);
      CHECK(ack.code == code(reason_code::client_identifier_not_valid));
      CHECK(ack.reason_string.has_value() == (max == 72));
      CHECK_FALSE(l.is_open());
    }
    // What the cut leaves of a longer text.
    auto& l = w.open(v5);
    w.engine.on_malformed(l, wordy, v5, w.now);
    const rx ack = l.only(CONNACK);
    CHECK(ack.code == code(reason_code::unspecified_error));
    CHECK(ack.reason_string == cut);
  }
  SECTION("DISCONNECT: the same rule, for the life of the connection") {
    world<> w;
    for (const std::uint32_t max : {72u, 71u, 20u}) {
      INFO("Maximum Packet Size " << max);
      auto& l = w.connected(hello("small").maximum_packet_size(max), v5);
      codec::properties_builder props;
      w.feed(l, aliased_publish(1, props));
      const rx d = l.only(DISCONNECT);
      CHECK(d.code == code(reason_code::protocol_error));
      CHECK(d.reason_string.has_value() == (max == 72));
    }
    auto& l = w.connected(hello("wordy").maximum_packet_size(72), v5);
    w.engine.on_malformed(l, wordy, v5, w.now);
    const rx d = l.only(DISCONNECT);
    CHECK(d.code == code(reason_code::unspecified_error));
    CHECK(d.reason_string == cut);
  }
  SECTION("with a Server Reference: it stays, the Reason String goes where both do not fit") {
    world<> w;
    const std::string reference = "a-server-with-a-rather-long-name.example.com:1883";  // 49 bytes: 52 as property
    // DISCONNECT: 2 + 1 + 1 + 52 = 56 bytes, 85 with "use another server for now" (3 + 26).
    for (const std::uint32_t max : {0u, 85u, 84u}) {
      INFO("Maximum Packet Size " << max);
      hello h("away");
      if (max != 0) h.maximum_packet_size(max);
      auto& l = w.connected(h, v5);
      CHECK(w.engine.redirect("away", reference, false));
      w.run_events();
      const rx d = l.only(DISCONNECT);
      CHECK(d.code == code(reason_code::use_another_server));
      CHECK(d.server_reference == std::optional<std::string>(reference));
      CHECK(d.reason_string == (max == 84 ? std::nullopt : std::optional<std::string>("use another server for now")));
    }
  }
}

// ---- the cluster policy (cluster/contract.hpp)

namespace {

/// A cluster that records what the engine tells it.
struct recording_cluster {
  std::vector<std::pair<std::string, bool>> interest_calls;
  std::vector<mb::message_ptr> published;
  void publish(const mb::message_ptr& m) { published.push_back(m); }
  void interest(std::string_view filter, bool present) { interest_calls.emplace_back(std::string(filter), present); }
};
struct clustered_policies : plain_policies {
  using cluster = recording_cluster;
};
static_assert(!mb::engine::core<plain_policies>::clustered, "cluster::none compiles to nothing");
static_assert(mb::engine::core<clustered_policies>::clustered);

using interest_list = std::vector<std::pair<std::string, bool>>;

}  // namespace

TEST_CASE("engine: a cluster hears of a filter's first subscription and its last, shared groups as one filter each",
          "[engine][cluster]") {
  world<clustered_policies> w;
  auto& calls = w.engine.cluster().interest_calls;
  auto& a = w.connected(hello("a"));
  auto& b = w.connected(hello("b"));
  w.subscribe(a, "x/+", qos::at_least_once);
  w.subscribe(b, "x/+", qos::at_most_once);
  w.subscribe(a, "x/+", qos::exactly_once);  // a replacement [MQTT-3.8.4-3]: no new interest
  w.subscribe(a, "$share/g/y", qos::at_least_once);
  w.subscribe(b, "$share/g/y", qos::at_least_once);
  CHECK(calls == interest_list{{"x/+", true}, {"$share/g/y", true}});
  calls.clear();
  codec::unsubscribe u;
  u.packet_id = 9;
  u.filters.emplace_back("x/+");
  w.feed(a, u);
  CHECK(a.only(UNSUBACK).id == 9);
  CHECK(calls.empty());  // b still has it
  w.drop(b);             // a clean session ends: its subscriptions go
  CHECK(calls == interest_list{{"x/+", false}});
  calls.clear();
  w.drop(a);
  CHECK(calls == interest_list{{"$share/g/y", false}});
  // In-process subscribers are this node's too.
  calls.clear();
  const auto id = w.engine.subscribe("z/#", [](const mb::message_ptr&) {}, qos::at_most_once);
  w.engine.unsubscribe(id);
  CHECK(calls == interest_list{{"z/#", true}, {"z/#", false}});
}

TEST_CASE("engine: a cluster gets each message that enters on this node once, and none it brought or of $SYS",
          "[engine][cluster]") {
  world<clustered_policies> w;
  auto& published = w.engine.cluster().published;
  auto& sub = w.connected(hello("sub"));
  w.subscribe(sub, "t/#", qos::at_least_once);
  auto& pub = w.connected(hello("pub"));
  w.publish(pub, "t/1", qos::at_least_once, 1);
  CHECK(pub.only(PUBACK).id == 1);
  CHECK(sub.only(PUBLISH).topic == "t/1");
  REQUIRE(published.size() == 1);
  CHECK(published[0]->topic() == "t/1");
  CHECK(published[0]->qos_level() == qos::at_least_once);
  w.engine.publish("t/host", "h", qos::at_most_once, false, nullptr, w.now);
  CHECK(sub.only(PUBLISH).topic == "t/host");
  CHECK(published.size() == 2);
  w.engine.publish("$SYS/broker/x", "h", qos::at_most_once, false, nullptr, w.now);
  CHECK(published.size() == 2);
  SECTION("a message from another node reaches this node's subscribers and goes no further") {
    CHECK(w.engine.route_from_cluster(mb::message::make("t/2", "remote", qos::exactly_once, false), w.now) == 1);
    w.run_events();
    const rx got = sub.only(PUBLISH);
    CHECK(got.topic == "t/2");
    CHECK(got.qos_level == qos::at_least_once);  // min(message, granted) [MQTT-3.8.4-6]
    CHECK(published.size() == 2);
  }
  SECTION("a retained message from another node is delivered but not kept here (the cluster keeps those)") {
    w.engine.route_from_cluster(mb::message::make("t/r", "remote", qos::at_most_once, true), w.now);
    w.run_events();
    CHECK(sub.only(PUBLISH).retain == false);  // [MQTT-3.3.1-9] to an established subscription
    auto& late = w.connected(hello("late"));
    w.subscribe(late, "t/r", qos::at_most_once);
    CHECK(late.received().empty());
  }
}

TEST_CASE("engine: in a cluster a shared group gets only what the cluster chose this node for, one member each",
          "[engine][cluster]") {
  world<clustered_policies> w;
  auto& m1 = w.connected(hello("m1"));
  auto& m2 = w.connected(hello("m2"));
  w.subscribe(m1, "$share/g/s", qos::at_least_once);
  w.subscribe(m2, "$share/g/s", qos::at_least_once);
  auto& pub = w.connected(hello("pub"));
  w.publish(pub, "s", qos::at_most_once, 0);
  // The cluster's queue group picks the node, possibly another one: nothing here yet.
  CHECK(m1.received().empty());
  CHECK(m2.received().empty());
  CHECK(w.engine.cluster().published.size() == 1);
  CHECK(w.engine.deliver_to_group("$share/g/s", w.engine.cluster().published[0], w.now));
  w.run_events();
  CHECK(m1.received().size() + m2.received().size() == 1);
  CHECK_FALSE(w.engine.deliver_to_group("$share/other/s", w.engine.cluster().published[0], w.now));
}

TEST_CASE("engine: the cluster's retained messages go into this node's retained store, cleared by an empty one",
          "[engine][cluster][MQTT-3.3.1-6][MQTT-3.3.1-10]") {
  world<clustered_policies> w;
  auto& live = w.connected(hello("live"));
  w.subscribe(live, "k/#", qos::at_least_once);
  w.engine.retained_from_cluster(mb::message::make("k/1", "kept", qos::at_least_once, true), w.now);
  w.run_events();
  CHECK(live.received().empty());  // kept, not routed: it reached the subscribers as it went by
  auto& later = w.connected(hello("later"));
  w.send_subscribe(later, "k/#", qos::at_least_once);
  const auto got = later.received();
  REQUIRE(got.size() == 2);
  CHECK(got[0].type == SUBACK);
  CHECK(got[1].type == PUBLISH);
  CHECK(got[1].topic == "k/1");
  CHECK(got[1].payload == "kept");
  CHECK(got[1].retain);  // [MQTT-3.3.1-8]
  w.engine.retained_from_cluster(mb::message::make("k/1", "", qos::at_most_once, true), w.now);
  auto& last = w.connected(hello("last"));
  w.subscribe(last, "k/#", qos::at_least_once);
  CHECK(last.received().empty());
  CHECK(w.engine.cluster().published.empty());  // nothing went back to the cluster
}

// ---- a cluster that owns client identifiers (cluster/contract.hpp claim())

namespace {

using handover_done = std::function<void(std::optional<mb::cluster::session_handover>)>;

/// Who owns each client identifier, as a cluster that owns them keeps it; the nodes' hand_over.
struct owner_directory {
  std::map<std::string, int> owner;
  std::vector<std::function<void(const std::string&, bool, handover_done)>> hand_over;
  bool unavailable = false;      // claims fail
  bool hold = false;             // claims wait in `held` until the test answers them
  std::vector<std::function<void()>> held;
};

/// A claim takes the identifier and asks its previous owner for the session.
struct claiming_cluster : recording_cluster {
  owner_directory* dir = nullptr;
  int me = 0;
  void claim(std::string_view client_id, bool clean_start, mb::cluster::claim_reply reply) {
    auto run = [this, id = std::string(client_id), clean_start, reply]() {
      if (dir->unavailable) return reply({std::make_error_code(std::errc::timed_out), std::nullopt});
      const auto it = dir->owner.find(id);
      const int previous = it == dir->owner.end() ? -1 : it->second;
      dir->owner[id] = me;
      if (previous < 0 || previous == me) return reply({});
      dir->hand_over[static_cast<std::size_t>(previous)](
          id, clean_start, [reply](std::optional<mb::cluster::session_handover> h) { reply({{}, std::move(h)}); });
    };
    if (dir->hold)
      dir->held.push_back(run);
    else
      run();
  }
};
struct claiming_policies : plain_policies {
  using cluster = claiming_cluster;
};
static_assert(mb::engine::core<claiming_policies>::claims);
static_assert(!mb::engine::core<clustered_policies>::claims, "a cluster without claim() owns no client identifiers");

/// Two nodes of one cluster, a and c.
template <class Policies = claiming_policies>
struct basic_two_nodes {
  owner_directory dir;
  world<Policies> a, c;
  basic_two_nodes() {
    a.engine.cluster().dir = &dir;
    a.engine.cluster().me = 0;
    c.engine.cluster().dir = &dir;
    c.engine.cluster().me = 1;
    dir.hand_over.push_back([this](const std::string& id, bool discard, handover_done done) {
      a.engine.hand_over_to_cluster(id, discard, std::move(done), a.now);
      a.run_events();
    });
    dir.hand_over.push_back([this](const std::string& id, bool discard, handover_done done) {
      c.engine.hand_over_to_cluster(id, discard, std::move(done), c.now);
      c.run_events();
    });
  }
};
using two_nodes = basic_two_nodes<>;

}  // namespace

TEST_CASE("engine: a client that connects to another node takes its session there: subscriptions, messages in "
          "flight and queued, QoS 2 identifiers",
          "[engine][cluster][MQTT-3.1.2-4][MQTT-4.4.0-1][MQTT-3.2.2-3]") {
  two_nodes n;
  auto& s = n.a.connected(hello("s", false).session_expiry(300), protocol_version::v5);
  n.a.subscribe(s, "q/#", qos::exactly_once);
  auto& pub = n.a.connected(hello("pub"), protocol_version::v5);
  n.a.publish(pub, "q/1", qos::at_least_once, 1);
  CHECK(pub.only(PUBACK).id == 1);
  const rx first = s.only(PUBLISH);  // in flight: s never acknowledges it here
  CHECK(first.topic == "q/1");
  n.a.publish(s, "q/in", qos::exactly_once, 7);  // s's own QoS 2 PUBLISH, PUBREL not yet sent
  {
    const auto got = s.received();
    REQUIRE(got.size() == 2);  // its PUBREC, and the message itself back (q/# matches)
  }
  n.a.drop(s);
  n.a.publish(pub, "q/2", qos::at_least_once, 2);
  CHECK(pub.only(PUBACK).id == 2);
  n.a.engine.cluster().interest_calls.clear();

  auto& again = n.c.open(protocol_version::v5);
  n.c.connect(again, hello("s", false).session_expiry(300), protocol_version::v5);
  const auto got = again.received();
  REQUIRE(got.size() == 4);
  CHECK(got[0].type == CONNACK);
  CHECK(got[0].code == 0);
  CHECK(got[0].session_present);  // [MQTT-3.2.2-3]
  // [MQTT-4.4.0-1] what was in flight again first, with DUP, then the queued messages in order.
  std::vector<std::pair<std::string, bool>> publishes;
  for (std::size_t i = 1; i < got.size(); ++i)
    if (got[i].type == PUBLISH) publishes.emplace_back(got[i].topic, got[i].dup);
  REQUIRE(publishes.size() == 3);
  CHECK(publishes[0] == std::make_pair(std::string("q/1"), true));
  CHECK(publishes[1] == std::make_pair(std::string("q/in"), true));
  CHECK(publishes[2] == std::make_pair(std::string("q/2"), false));
  CHECK(n.dir.owner["s"] == 1);
  // The subscription is on c now, and gone from a (the cluster heard of both).
  CHECK(n.a.engine.cluster().interest_calls == interest_list{{"q/#", false}});
  CHECK(n.c.engine.cluster().interest_calls == interest_list{{"q/#", true}});
  auto& pub_c = n.c.connected(hello("pub-c"), protocol_version::v5);
  n.c.publish(pub_c, "q/4", qos::at_most_once, 0);
  CHECK(again.only(PUBLISH).topic == "q/4");
  // The QoS 2 identifier came along: a PUBREL for it is answered PUBCOMP 0, not 0x92.
  n.c.ack<codec::pubrel>(again, 7);
  const rx comp = again.only(PUBCOMP);
  CHECK(comp.id == 7);
  CHECK(comp.code == 0);
  // Nothing is left on a: a message there reaches no one.
  n.a.publish(pub, "q/5", qos::at_least_once, 3);
  CHECK(pub.only(PUBACK).code == code(reason_code::no_matching_subscribers));
}

TEST_CASE("engine: a client connected on one node that connects on another: the first connection gets "
          "DISCONNECT 0x8E; with Clean Start its session is not carried over",
          "[engine][cluster][MQTT-3.1.4-3][MQTT-3.2.2-2]") {
  two_nodes n;
  auto& s = n.a.connected(hello("s", false).session_expiry(300), protocol_version::v5);
  n.a.subscribe(s, "q/#", qos::at_least_once);
  auto& pub = n.a.connected(hello("pub"), protocol_version::v5);
  n.a.publish(pub, "q/1", qos::at_least_once, 1);
  CHECK(s.only(PUBLISH).topic == "q/1");
  pub.received();

  SECTION("resumed") {
    auto& again = n.c.open(protocol_version::v5);
    n.c.connect(again, hello("s", false).session_expiry(300), protocol_version::v5);
    const rx off = s.only(DISCONNECT);
    CHECK(off.code == code(reason_code::session_taken_over));
    CHECK(s.is_closing());
    const auto got = again.received();
    REQUIRE(got.size() == 2);
    CHECK(got[0].session_present);
    CHECK(got[1].topic == "q/1");
    CHECK(got[1].dup);
  }
  SECTION("clean start") {
    auto& again = n.c.open(protocol_version::v5);
    n.c.connect(again, hello("s", true).session_expiry(300), protocol_version::v5);
    CHECK(s.only(DISCONNECT).code == code(reason_code::session_taken_over));
    const rx ack = again.only(CONNACK);
    CHECK_FALSE(ack.session_present);  // [MQTT-3.2.2-2]
    CHECK(n.c.engine.cluster().interest_calls.empty());
    n.a.publish(pub, "q/2", qos::at_least_once, 2);
    CHECK(pub.only(PUBACK).code == code(reason_code::no_matching_subscribers));
  }
}

TEST_CASE("engine: a CONNECT the cluster cannot claim is refused with Server unavailable", "[engine][cluster]") {
  two_nodes n;
  n.dir.unavailable = true;
  auto& v5 = n.a.open(protocol_version::v5);
  n.a.connect(v5, hello("x"), protocol_version::v5);
  CHECK(v5.only(CONNACK).code == code(reason_code::server_unavailable));
  CHECK(v5.is_closing());
  auto& v3 = n.a.open(protocol_version::v3_1_1);
  n.a.connect(v3, hello("y"), protocol_version::v3_1_1);
  CHECK(v3.only(CONNACK).code == 3);  // 3.1.1: Server unavailable
  CHECK(v3.is_closing());
}

TEST_CASE("engine: a hand-over asked while this node's own claim of the client runs waits for its connection, "
          "which the later claim then takes over",
          "[engine][cluster][MQTT-3.1.4-3]") {
  two_nodes n;
  n.dir.hold = true;
  auto& s = n.a.open(protocol_version::v5);
  n.a.connect(s, hello("s", false).session_expiry(300), protocol_version::v5);
  CHECK(s.received().empty());  // the CONNACK waits for the claim
  std::optional<mb::cluster::session_handover> handed;
  bool answered = false;
  n.a.engine.hand_over_to_cluster("s", false, [&](std::optional<mb::cluster::session_handover> h) {
    handed = std::move(h);
    answered = true;
  }, n.a.now);
  CHECK_FALSE(answered);
  REQUIRE(n.dir.held.size() == 1);
  n.dir.held[0]();  // a's claim answers: s connects, and then the waiting hand-over runs
  n.a.run_events();
  const auto got = s.received();
  REQUIRE(got.size() == 2);
  CHECK(got[0].type == CONNACK);
  CHECK(got[1].type == DISCONNECT);
  CHECK(got[1].code == code(reason_code::session_taken_over));
  CHECK(answered);
  REQUIRE(handed);
  CHECK(handed->expiry_seconds == 300);
}

namespace {
struct claiming_durable_policies : plain_policies {
  using cluster = claiming_cluster;
  using storage = recording_storage;
};
}  // namespace

TEST_CASE("engine: on durable storage a session handed to another node is erased here and stored there",
          "[engine][cluster][storage]") {
  basic_two_nodes<claiming_durable_policies> n;
  auto& s = n.a.connected(hello("s", false));  // 3.1.1 Clean Session 0
  n.a.subscribe(s, "q/#", qos::exactly_once);
  n.a.drop(s);
  n.a.engine.publish("q/1", "m", qos::at_least_once, false, nullptr, n.a.now);
  n.a.engine.storage().take();
  n.c.engine.storage().take();

  auto& again = n.c.open();
  n.c.connect(again, hello("s", false), protocol_version::v3_1_1);
  const lines on_a = n.a.engine.storage().take();
  CHECK(std::find(on_a.begin(), on_a.end(), "erase_session s") != on_a.end());
  const lines on_c = n.c.engine.storage().take();
  std::string all;
  for (const auto& line : on_c) all += line + "; ";
  for (const char* want : {"save_subscription s q/# q2 0", "enqueue s q/1 q1", "save_session s 604800"}) {
    INFO(want << " in " << all);
    CHECK(std::find(on_c.begin(), on_c.end(), want) != on_c.end());
  }
  n.c.engine.storage_committed(n.c.engine.storage().tickets);
  n.c.run_events();
  const auto got = again.received();
  REQUIRE(got.size() == 2);
  CHECK(got[0].type == CONNACK);
  CHECK(got[0].session_present);
  CHECK(got[1].topic == "q/1");
}
