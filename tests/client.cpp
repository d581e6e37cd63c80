// The client side: client::session against a scripted server (no I/O, deterministic), then
// client::client over loopback TCP against this broker and against Mosquitto.
#include <mqttbroker/bridge/topics.hpp>
#include <mqttbroker/broker.hpp>
#include <mqttbroker/client/client.hpp>
#include <mqttbroker/client/session.hpp>

#include "catch.hpp"
#include "loopback.hpp"
#include "mosquitto_process.hpp"

#include <asio.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace mb = mqttbroker;
namespace codec = mqttbroker::codec;
using mb::client::session;
using mb::client::session_options;
using mb::client::session_state;

namespace {

using clock_type = std::chrono::steady_clock;

/// What a session reported, in order.
struct recorder {
  std::vector<std::string> events;
  std::vector<std::string> messages;  // topic=payload
  std::vector<std::string> user_properties;
  void on_connack(const codec::connack& c) { events.push_back("connack " + std::to_string(c.code)); }
  void on_message(const codec::publish& p) {
    messages.push_back(std::string(p.topic) + "=" + std::string(p.payload));
    for (const auto& prop : p.properties)
      if (prop.id == codec::property_id::user_property)
        user_properties.push_back(std::string(prop.key) + ":" + std::string(prop.value));
  }
  void on_published(std::uint64_t t, mb::reason_code r) {
    events.push_back("published " + std::to_string(t) + " " + std::to_string(static_cast<int>(r)));
  }
  void on_suback(const codec::suback& s) { events.push_back("suback " + std::to_string(s.packet_id)); }
  void on_unsuback(const codec::unsuback& u) { events.push_back("unsuback " + std::to_string(u.packet_id)); }
  void on_disconnect(const codec::disconnect& d) {
    events.push_back("disconnect " + std::to_string(static_cast<int>(d.reason)));
  }
};

/// A decoded packet that owns its bytes.
struct owned {
  std::string bytes;
  codec::packet packet;
};

/// The packets a session wrote since the last call (decoded as a server reads them).
std::vector<owned> written(session<recorder>& s) {
  std::vector<owned> out;
  const std::string bytes = std::move(s.output());
  // A server's decoder learns the version from CONNECT, and refuses a CONNECT once it knows it.
  std::optional<codec::protocol_version> known;
  if (bytes.empty() || static_cast<std::uint8_t>(bytes[0]) != 0x10) known = s.options().version;
  codec::decoder d(codec::decoder_options{codec::role::server, codec::max_packet_size, known});
  s.output().clear();
  const auto res = d.feed(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), [&](codec::packet& p) {
    owned o;
    (void)codec::encode(p, s.options().version, o.bytes);
    out.push_back(std::move(o));
  });
  REQUIRE_FALSE(res.ec);
  for (owned& o : out)
    REQUIRE_FALSE(codec::decode_packet(o.bytes, s.options().version, codec::role::server, o.packet));
  return out;
}

template <class Packet>
void server_sends(session<recorder>& s, const Packet& p, clock_type::time_point now = clock_type::now()) {
  std::string bytes;
  REQUIRE_FALSE(codec::encode(p, s.options().version, bytes));
  REQUIRE_FALSE(s.feed(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), now));
}

codec::connack accepted(bool session_present) {
  codec::connack c;
  c.session_present = session_present;
  return c;
}

session_options persistent(codec::protocol_version v = codec::protocol_version::v3_1_1) {
  session_options o;
  o.version = v;
  o.client_id = "bridge-1";
  o.clean_start = false;
  o.session_expiry = 3600;
  return o;
}

std::uint64_t publish(session<recorder>& s, std::string_view topic, std::string_view payload, codec::qos q) {
  return s.publish(mb::message::make(topic, payload, q, false), q, false);
}

}  // namespace

TEST_CASE("client session: CONNECT carries what the options say, in 3.1.1 and 5.0, with the bridge bit",
          "[client]") {
  for (const auto v : {codec::protocol_version::v3_1_1, codec::protocol_version::v5}) {
    session_options o = persistent(v);
    o.keep_alive = 30;
    o.username = "u";
    o.password = "p";
    o.last_will = mb::client::will{"dev/1/status", "offline", codec::qos::at_least_once, true, {}};
    session<recorder> s(o, recorder{});
    REQUIRE_FALSE(s.start(clock_type::now()));
    const std::string raw = s.output();
    auto out = written(s);
    REQUIRE(out.size() == 1);
    const auto& c = std::get<codec::connect>(out[0].packet);
    CHECK(c.version == v);
    CHECK_FALSE(c.clean_start);
    CHECK(c.keep_alive == 30);
    CHECK(c.client_id == "bridge-1");
    REQUIRE(c.will);
    CHECK(c.will->topic == "dev/1/status");
    CHECK(c.will->retain);
    CHECK(c.username == std::optional<std::string_view>("u"));
    if (v == codec::protocol_version::v5) {
      const auto expiry = c.properties.find(codec::property_id::session_expiry_interval);
      REQUIRE(expiry);
      CHECK(expiry->integer == 3600);
    }
    // Mosquitto's bridges set the level's high bit (try_private): 0x84 or 0x85 after "MQTT".
    o.bridge = true;
    session<recorder> b(o, recorder{});
    REQUIRE_FALSE(b.start(clock_type::now()));
    const std::string with_bit = b.output();
    const std::size_t level_at = with_bit.find("MQTT") + 4;
    CHECK(static_cast<std::uint8_t>(with_bit[level_at]) == (static_cast<unsigned>(v) | 0x80u));
    CHECK(static_cast<std::uint8_t>(raw[level_at]) == static_cast<unsigned>(v));
  }
}

TEST_CASE("client session: messages wait for the CONNACK, then go in order within the window", "[client]") {
  session_options o = persistent();
  o.max_inflight = 2;
  session<recorder> s(o, recorder{});
  REQUIRE_FALSE(s.start(clock_type::now()));
  (void)written(s);
  const auto t1 = publish(s, "a", "1", codec::qos::at_least_once);
  const auto t2 = publish(s, "a", "2", codec::qos::exactly_once);
  const auto t3 = publish(s, "a", "3", codec::qos::at_least_once);
  CHECK(written(s).empty());  // not connected yet
  server_sends(s, accepted(false));
  auto out = written(s);
  REQUIRE(out.size() == 2);  // the window holds two
  CHECK(std::get<codec::publish>(out[0].packet).payload == "1");
  CHECK(std::get<codec::publish>(out[1].packet).payload == "2");
  const std::uint16_t id1 = std::get<codec::publish>(out[0].packet).packet_id;
  const std::uint16_t id2 = std::get<codec::publish>(out[1].packet).packet_id;
  CHECK(id1 != id2);  // [MQTT-2.2.1-3] distinct while in flight
  codec::puback a;
  a.packet_id = id1;
  server_sends(s, a);
  out = written(s);
  REQUIRE(out.size() == 1);
  CHECK(std::get<codec::publish>(out[0].packet).payload == "3");
  // QoS 2: PUBREC is answered with PUBREL [MQTT-4.3.3-3], PUBCOMP completes.
  codec::pubrec rec;
  rec.packet_id = id2;
  server_sends(s, rec);
  out = written(s);
  REQUIRE(out.size() == 1);
  CHECK(std::get<codec::pubrel>(out[0].packet).packet_id == id2);
  codec::pubcomp comp;
  comp.packet_id = id2;
  server_sends(s, comp);
  CHECK(s.stats().acknowledged == 2);
  const auto& ev = s.handler().events;
  REQUIRE(ev.size() == 3);
  CHECK(ev[0] == "connack 0");
  CHECK(ev[1] == "published " + std::to_string(t1) + " 0");
  CHECK(ev[2] == "published " + std::to_string(t2) + " 0");
  (void)t3;
}

TEST_CASE("client session: after a lost connection the unacknowledged go again with DUP to a server that kept "
          "the session, as new messages to one that did not",
          "[client][MQTT-4.4.0-1]") {
  for (const bool present : {true, false}) {
    session<recorder> s(persistent(), recorder{});
    REQUIRE_FALSE(s.start(clock_type::now()));
    server_sends(s, accepted(false));
    (void)written(s);
    publish(s, "a", "1", codec::qos::at_least_once);
    const auto t2 = publish(s, "a", "2", codec::qos::exactly_once);
    publish(s, "a", "3", codec::qos::exactly_once);
    auto first = written(s);
    REQUIRE(first.size() == 3);
    codec::pubrec rec;  // message 2 reached the server; its PUBCOMP is lost with the connection
    rec.packet_id = std::get<codec::publish>(first[1].packet).packet_id;
    server_sends(s, rec);
    (void)written(s);
    s.lost();
    publish(s, "a", "4", codec::qos::at_least_once);  // while away: waits
    REQUIRE_FALSE(s.start(clock_type::now()));
    (void)written(s);  // CONNECT
    server_sends(s, accepted(present));
    auto again = written(s);
    std::vector<std::string> what;
    for (const owned& o : again) {
      if (const auto* p = std::get_if<codec::publish>(&o.packet))
        what.push_back(std::string(p->payload) + (p->dup ? "+dup" : ""));
      else if (std::holds_alternative<codec::pubrel>(o.packet))
        what.push_back("pubrel");
    }
    if (present) {
      // [MQTT-4.4.0-1] resent in their order, the PUBLISHes with DUP, the PUBREL for message 2.
      CHECK(what == std::vector<std::string>{"1+dup", "pubrel", "3+dup", "4"});
      CHECK(std::get<codec::publish>(again[0].packet).packet_id == std::get<codec::publish>(first[0].packet).packet_id);
      CHECK(s.handler().events.back() == "connack 0");
    } else {
      // The server forgot everything: what it had not received goes again as new messages (the
      // bridge loses nothing); message 2, which it had, is complete.
      CHECK(what == std::vector<std::string>{"1", "3", "4"});
      CHECK(s.handler().events.back() == "published " + std::to_string(t2) + " 0");
      CHECK(s.stats().acknowledged == 1);  // message 2, done
    }
    CHECK(s.stats().resent == (present ? 2u : 0u));
  }
}

TEST_CASE("client session: an incoming QoS 2 message is delivered once however often the server resends it",
          "[client][MQTT-4.3.3-10]") {
  session<recorder> s(persistent(codec::protocol_version::v5), recorder{});
  REQUIRE_FALSE(s.start(clock_type::now()));
  server_sends(s, accepted(false));
  (void)written(s);
  codec::publish p;
  p.topic = "t";
  p.payload = "once";
  p.qos_level = codec::qos::exactly_once;
  p.packet_id = 7;
  codec::properties_builder props;
  props.add_user_property("origin", "plant-2");
  p.properties = props.view();
  server_sends(s, p);
  p.dup = true;
  server_sends(s, p);  // resent before our PUBREC reached it
  auto out = written(s);
  REQUIRE(out.size() == 2);
  CHECK(std::get<codec::pubrec>(out[0].packet).packet_id == 7);
  CHECK(std::get<codec::pubrec>(out[1].packet).packet_id == 7);
  CHECK(s.handler().messages == std::vector<std::string>{"t=once"});
  CHECK(s.handler().user_properties == std::vector<std::string>{"origin:plant-2"});  // 5.0 properties reach the host
  CHECK(s.stats().duplicates == 1);
  codec::pubrel rel;
  rel.packet_id = 7;
  server_sends(s, rel);
  out = written(s);
  REQUIRE(out.size() == 1);
  CHECK(std::get<codec::pubcomp>(out[0].packet).packet_id == 7);
  // The id is free again: a new message with it is a new message.
  p.dup = false;
  p.payload = "again";
  server_sends(s, p);
  CHECK(s.handler().messages.size() == 2);
}

TEST_CASE("client session: keep-alive sends PINGREQ when idle and gives up on a silent server",
          "[client][MQTT-3.1.2-23]") {
  session_options o = persistent();
  o.keep_alive = 10;
  session<recorder> s(o, recorder{});
  const auto t0 = clock_type::now();
  REQUIRE_FALSE(s.start(t0));
  server_sends(s, accepted(false), t0);
  (void)written(s);
  REQUIRE_FALSE(s.tick(t0 + std::chrono::seconds(9)));
  CHECK(written(s).empty());
  REQUIRE_FALSE(s.tick(t0 + std::chrono::seconds(10)));
  auto out = written(s);
  REQUIRE(out.size() == 1);
  CHECK(std::holds_alternative<codec::pingreq>(out[0].packet));
  CHECK(s.next_tick() == t0 + std::chrono::seconds(15));
  CHECK_FALSE(s.tick(t0 + std::chrono::seconds(14)));
  CHECK(s.tick(t0 + std::chrono::seconds(15)) == std::make_error_code(std::errc::timed_out));
  // A PINGRESP in time keeps the connection.
  session<recorder> alive(o, recorder{});
  REQUIRE_FALSE(alive.start(t0));
  server_sends(alive, accepted(false), t0);
  REQUIRE_FALSE(alive.tick(t0 + std::chrono::seconds(10)));
  server_sends(alive, codec::pingresp{}, t0 + std::chrono::seconds(11));
  CHECK_FALSE(alive.tick(t0 + std::chrono::seconds(15)));
}

TEST_CASE("client session: a full queue refuses, a refused CONNACK leaves the session disconnected", "[client]") {
  session_options o = persistent(codec::protocol_version::v5);
  o.max_queued = 2;
  session<recorder> s(o, recorder{});
  CHECK(publish(s, "a", "1", codec::qos::at_least_once) != 0);
  CHECK(publish(s, "a", "2", codec::qos::at_least_once) != 0);
  CHECK(publish(s, "a", "3", codec::qos::at_least_once) == 0);
  CHECK(s.stats().refused == 1);
  REQUIRE_FALSE(s.start(clock_type::now()));
  codec::connack no;
  no.code = static_cast<std::uint8_t>(mb::reason_code::not_authorized);
  server_sends(s, no);
  CHECK(s.state() == session_state::disconnected);
  CHECK(s.handler().events == std::vector<std::string>{"connack 135"});
  CHECK(s.queued() == 2);  // still owed
}

TEST_CASE("client session: a 5.0 server's Maximum QoS and Retain Available bind what is sent",
          "[client][MQTT-3.2.2-11][MQTT-3.2.2-14]") {
  for (const int max_qos : {0, 1}) {
    session<recorder> s(persistent(codec::protocol_version::v5), recorder{});
    REQUIRE_FALSE(s.start(clock_type::now()));
    (void)written(s);
    const auto ticket = s.publish(mb::message::make("r", "x", codec::qos::exactly_once, true), codec::qos::exactly_once, true);
    codec::connack c;
    codec::properties_builder props;
    props.add(codec::property_id::maximum_qos, static_cast<std::uint32_t>(max_qos));
    props.add(codec::property_id::retain_available, 0u);
    c.properties = props.view();
    server_sends(s, c);
    auto out = written(s);
    REQUIRE(out.size() == 1);
    const auto& p = std::get<codec::publish>(out[0].packet);
    CHECK(static_cast<int>(p.qos_level) == max_qos);
    CHECK_FALSE(p.retain);
    if (max_qos == 0) {
      // Nothing will acknowledge it: reported as done once written.
      CHECK(s.handler().events.back() == "published " + std::to_string(ticket) + " 0");
      CHECK(s.inflight() == 0);
    } else {
      CHECK(s.inflight() == 1);
    }
  }
}

namespace {
/// A recorder that keeps each deferred message's ticket.
struct ticket_recorder : recorder {
  session<ticket_recorder>* self = nullptr;
  std::vector<std::uint64_t> tickets;
  void on_message(const codec::publish& p) {
    recorder::on_message(p);
    tickets.push_back(self->delivery_ticket());
  }
};

std::vector<std::string> acks_written(session<ticket_recorder>& s) {
  std::vector<std::string> out;
  const std::string bytes = std::move(s.output());
  s.output().clear();
  codec::decoder d(codec::decoder_options{codec::role::server, codec::max_packet_size, s.options().version});
  const auto res = d.feed(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), [&](codec::packet& p) {
    if (auto* a = std::get_if<codec::puback>(&p)) out.push_back("PUBACK " + std::to_string(a->packet_id));
    if (auto* r = std::get_if<codec::pubrec>(&p)) out.push_back("PUBREC " + std::to_string(r->packet_id));
    if (auto* c = std::get_if<codec::pubcomp>(&p)) out.push_back("PUBCOMP " + std::to_string(c->packet_id));
  });
  REQUIRE_FALSE(res.ec);
  return out;
}

void feed_packet(session<ticket_recorder>& s, const codec::publish& p) {
  std::string bytes;
  REQUIRE_FALSE(codec::encode(p, s.options().version, bytes));
  REQUIRE_FALSE(s.feed(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), clock_type::now()));
}

codec::publish incoming(std::uint16_t id, codec::qos q, bool dup = false) {
  codec::publish p;
  p.topic = "in";
  p.payload = "m";
  p.packet_id = id;
  p.qos_level = q;
  p.dup = dup;
  return p;
}
}  // namespace

TEST_CASE("client session: deferred acknowledgements go when the host gives them, in the order the messages came",
          "[client][MQTT-4.6.0-2][MQTT-4.6.0-3]") {
  session_options o = persistent();
  o.deferred_acks = true;
  session<ticket_recorder> s(o, ticket_recorder{});
  s.handler().self = &s;
  auto connect = [&](bool present) {
    REQUIRE_FALSE(s.start(clock_type::now()));
    s.output().clear();
    std::string bytes;
    REQUIRE_FALSE(codec::encode(accepted(present), s.options().version, bytes));
    REQUIRE_FALSE(s.feed(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), clock_type::now()));
  };
  connect(false);
  feed_packet(s, incoming(1, codec::qos::at_least_once));
  feed_packet(s, incoming(2, codec::qos::exactly_once));
  feed_packet(s, incoming(3, codec::qos::at_least_once));
  CHECK(acks_written(s).empty());  // nothing until the host says so
  REQUIRE(s.handler().tickets.size() == 3);
  CHECK(s.unacknowledged() == 3);
  s.acknowledge(s.handler().tickets[2]);  // the third first: it waits for the two before it
  s.acknowledge(s.handler().tickets[1]);
  CHECK(acks_written(s).empty());
  // A resend of the QoS 2 one before its PUBREC went: neither reported again nor answered out of turn.
  feed_packet(s, incoming(2, codec::qos::exactly_once, true));
  CHECK(acks_written(s).empty());
  CHECK(s.handler().messages.size() == 3);
  s.acknowledge(s.handler().tickets[0]);
  CHECK(acks_written(s) == std::vector<std::string>{"PUBACK 1", "PUBREC 2", "PUBACK 3"});
  CHECK(s.unacknowledged() == 0);

  // Across a lost connection: the QoS 1 message comes again and is reported again; the QoS 2
  // one is not, and its acknowledgement, given while the connection was down, goes at the reconnect.
  feed_packet(s, incoming(4, codec::qos::at_least_once));
  feed_packet(s, incoming(5, codec::qos::exactly_once));
  REQUIRE(s.handler().tickets.size() == 5);
  s.lost();
  s.acknowledge(s.handler().tickets[3]);  // a ticket of the lost connection: ignored
  s.acknowledge(s.handler().tickets[4]);
  connect(true);
  CHECK(acks_written(s) == std::vector<std::string>{"PUBREC 5"});
  feed_packet(s, incoming(4, codec::qos::at_least_once, true));
  feed_packet(s, incoming(5, codec::qos::exactly_once, true));
  CHECK(s.handler().messages.size() == 6);  // 4 again, 5 not
  CHECK(acks_written(s) == std::vector<std::string>{"PUBREC 5"});
  s.acknowledge(s.handler().tickets[5]);
  CHECK(acks_written(s) == std::vector<std::string>{"PUBACK 4"});
}

TEST_CASE("client session: a Topic Alias from the server, which it was not allowed, and a packet over the client's "
          "maximum are errors; 5.0 CONNECT announces the maximum", "[client][malformed]") {
  session_options o = persistent(codec::protocol_version::v5);
  o.max_packet_size = 200;
  {
    session<recorder> s(o, recorder{});
    REQUIRE_FALSE(s.start(clock_type::now()));
    auto out = written(s);
    REQUIRE(out.size() == 1);
    const auto& c = std::get<codec::connect>(out[0].packet);
    const auto m = c.properties.find(codec::property_id::maximum_packet_size);
    REQUIRE(m);
    CHECK(m->integer == 200);
    server_sends(s, accepted(false));
    // A Topic Alias: this client announced no Topic Alias Maximum (0).
    codec::properties_builder b;
    b.add(codec::property_id::topic_alias, 1u);
    codec::publish p;
    p.topic = "t";
    p.payload = "x";
    p.properties = b.view();
    std::string bytes;
    REQUIRE_FALSE(codec::encode(p, codec::protocol_version::v5, bytes));
    CHECK(s.feed(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), clock_type::now()) ==
          mb::protocol_errc::topic_alias_invalid);
    CHECK(s.handler().messages.empty());
  }
  {
    session<recorder> s(o, recorder{});
    REQUIRE_FALSE(s.start(clock_type::now()));
    (void)written(s);
    server_sends(s, accepted(false));
    codec::publish small, big;
    small.topic = big.topic = "t";
    const std::string fits(150, 's'), too_big(300, 'b');
    small.payload = fits;
    big.payload = too_big;
    server_sends(s, small);
    std::string bytes;
    REQUIRE_FALSE(codec::encode(big, codec::protocol_version::v5, bytes));
    CHECK(s.feed(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), clock_type::now()) ==
          mb::codec_errc::packet_too_large);
    CHECK(s.handler().messages.size() == 1);
  }
}

TEST_CASE("client session: what no server may send is an error for the driver to close on", "[client][malformed]") {
  const std::vector<std::string> bad = {
      std::string("\x00\x00", 2),                   // packet type 0, which is reserved
      std::string("\x82\x05\x00\x01\x00\x01x", 7),  // SUBSCRIBE, which only clients send
      std::string("\x20\x02\x00", 3) + std::string("\x00\x20\x02\x00\x00", 5),  // a second CONNACK
      std::string("\x30\xFF\xFF\xFF\xFF\x7F", 6),       // a Remaining Length over four bytes
  };
  for (const std::string& bytes : bad) {
    session<recorder> s(persistent(), recorder{});
    REQUIRE_FALSE(s.start(clock_type::now()));
    (void)written(s);
    CHECK(s.feed(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), clock_type::now()));
    CHECK(s.handler().messages.empty());
  }
}

// ---- over TCP ------------------------------------------------------------------------------------

namespace {

using test_support::run_until;

struct tcp_events {
  int connected = 0;
  int lost = 0;
  std::vector<std::string> messages;
  std::vector<std::string> user_properties;
  std::vector<std::uint64_t> published;
  int subacks = 0;
  int retained = 0;
  void on_connected(const codec::connack&) { ++connected; }
  void on_refused(const codec::connack&) {}
  void on_connection_lost(std::error_code) { ++lost; }
  void on_message(const codec::publish& p) {
    messages.push_back(std::string(p.topic) + "=" + std::string(p.payload));
    if (p.retain) ++retained;
    for (const auto& prop : p.properties)
      if (prop.id == codec::property_id::user_property)
        user_properties.push_back(std::string(prop.key) + ":" + std::string(prop.value));
  }
  void on_published(std::uint64_t t, mb::reason_code) { published.push_back(t); }
  void on_suback(const codec::suback&) { ++subacks; }
  void on_unsuback(const codec::unsuback&) {}
  void on_disconnect(const codec::disconnect&) {}
};

mb::client::client_options tcp_options(std::uint16_t port, codec::protocol_version v, std::string id) {
  mb::client::client_options o;
  o.session.version = v;
  o.session.client_id = std::move(id);
  o.session.clean_start = false;
  o.session.session_expiry = 600;
  o.addresses.push_back({"127.0.0.1", port});
  o.reconnect_min = std::chrono::milliseconds(50);
  o.reconnect_max = std::chrono::milliseconds(200);
  return o;
}

/// QoS 0, 1 and 2 to itself through the server at `port`, then the same again after the server
/// ended the connection; 5.0 user properties must arrive.
void round_trip(asio::io_context& io, std::uint16_t port, codec::protocol_version v, const std::string& id,
                const std::function<void()>& drop_connection) {
  mb::client::client<tcp_events> c(io.get_executor(), tcp_options(port, v, id), tcp_events{});
  c.start();
  REQUIRE(run_until(io, [&] { return c.handler().connected == 1; }));
  c.subscribe("rt/" + id + "/#", codec::qos::exactly_once);
  REQUIRE(run_until(io, [&] { return c.handler().subacks == 1; }));
  codec::properties_builder props;
  props.add_user_property("k", "v");
  const std::string props_bytes(props.view().bytes());
  for (const auto q : {codec::qos::at_most_once, codec::qos::at_least_once, codec::qos::exactly_once})
    c.publish("rt/" + id + "/" + std::to_string(static_cast<int>(q)), "m" + std::to_string(static_cast<int>(q)), q,
              false, v == codec::protocol_version::v5 ? std::string_view(props_bytes) : std::string_view());
  REQUIRE(run_until(io, [&] { return c.handler().messages.size() == 3 && c.handler().published.size() == 2; }));
  CHECK(c.handler().messages ==
        std::vector<std::string>{"rt/" + id + "/0=m0", "rt/" + id + "/1=m1", "rt/" + id + "/2=m2"});
  if (v == codec::protocol_version::v5) CHECK(c.handler().user_properties.size() == 3);
  // The connection goes; messages published meanwhile wait, and the session (kept by the server)
  // still holds the subscription after the reconnect.
  drop_connection();
  REQUIRE(run_until(io, [&] { return c.handler().lost == 1; }));
  c.publish("rt/" + id + "/1", "while-away", codec::qos::at_least_once);
  REQUIRE(run_until(io, [&] { return c.handler().connected == 2; }));
  REQUIRE(run_until(io, [&] { return c.handler().messages.size() == 4; }));
  CHECK(c.handler().messages.back() == "rt/" + id + "/1=while-away");
  CHECK(c.attempts() >= 2);
  c.stop();
  run_until(io, [] { return false; }, std::chrono::milliseconds(50));
}

}  // namespace

TEST_CASE("client over TCP against this broker: QoS 0/1/2, 5.0 properties, a reconnect that keeps the session",
          "[client][transport]") {
  for (const auto v : {codec::protocol_version::v3_1_1, codec::protocol_version::v5}) {
    asio::io_context io;
    mb::broker<> b(io, {});
    b.listen({"127.0.0.1", 0});
    b.start();
    const std::string id = v == codec::protocol_version::v5 ? "c5" : "c4";
    round_trip(io, b.local_port(), v, id, [&] { CHECK(b.disconnect(id)); });
    bool stopped = false;
    b.async_stop([&](std::error_code) { stopped = true; });
    REQUIRE(run_until(io, [&] { return stopped; }));
  }
}

namespace {

using test_support::mosquitto_process;
using test_support::usable;

}  // namespace

TEST_CASE("client over TCP against Mosquitto: QoS 0/1/2, 5.0 properties, a reconnect that keeps the session",
          "[client][transport][mosquitto]") {
  mosquitto_process mosq;
  if (!usable(mosq)) return;
  for (const auto v : {codec::protocol_version::v3_1_1, codec::protocol_version::v5}) {
    asio::io_context io;
    const std::string id = v == codec::protocol_version::v5 ? "m5" : "m4";
    // Mosquitto ends the older connection when the same client id connects again [MQTT-3.1.4-3].
    round_trip(io, mosq.port(), v, id, [&] {
      mb::client::client_options o = tcp_options(mosq.port(), v, id);
      o.reconnect = false;
      auto taker = std::make_shared<mb::client::client<tcp_events>>(io.get_executor(), o, tcp_events{});
      taker->start();
      REQUIRE(run_until(io, [&] { return taker->handler().connected == 1; }));
      taker->stop();
      run_until(io, [] { return false; }, std::chrono::milliseconds(20));
    });
  }
}

TEST_CASE("client over TCP: subscriptions stand, made again on each connection whose server kept no session",
          "[client][transport]") {
  asio::io_context io;
  mb::broker<> b(io, {});
  b.listen({"127.0.0.1", 0});
  b.start();
  mb::client::client_options o = tcp_options(b.local_port(), codec::protocol_version::v5, "fresh");
  o.session.clean_start = true;  // the broker forgets the session with each connection
  o.session.session_expiry = 0;
  mb::client::client<tcp_events> c(io.get_executor(), o, tcp_events{});
  CHECK(c.subscribe("standing/#", codec::qos::at_least_once) == 0);  // not connected: not sent now
  c.start();
  REQUIRE(run_until(io, [&] { return c.handler().connected == 1 && c.handler().subacks == 1; }));
  c.publish("standing/1", "first", codec::qos::at_least_once);
  REQUIRE(run_until(io, [&] { return c.handler().messages.size() == 1; }));
  CHECK(b.disconnect("fresh"));
  REQUIRE(run_until(io, [&] { return c.handler().connected == 2 && c.handler().subacks == 2; }));
  c.publish("standing/2", "second", codec::qos::at_least_once);
  REQUIRE(run_until(io, [&] { return c.handler().messages.size() == 2; }));
  CHECK(c.handler().messages.back() == "standing/2=second");
  c.unsubscribe({"standing/#"});
  c.stop();
  bool stopped = false;
  b.async_stop([&](std::error_code) { stopped = true; });
  REQUIRE(run_until(io, [&] { return stopped; }));
}

namespace {

/// A bridge-bit client and a plain one on the server at `port`, both subscribed to loop/#: the
/// bridge does not get back what it published, the plain client gets everything, and a retained
/// message reaches the bridge still marked retained.
void bridge_bit_checks(asio::io_context& io, std::uint16_t port, codec::protocol_version v, const std::string& tag) {
  mb::client::client_options bo = tcp_options(port, v, "bridge-" + tag);
  bo.session.bridge = true;
  bo.session.clean_start = true;
  mb::client::client<tcp_events> bridge(io.get_executor(), bo, tcp_events{});
  mb::client::client_options po = tcp_options(port, v, "plain-" + tag);
  po.session.clean_start = true;
  mb::client::client<tcp_events> plain(io.get_executor(), po, tcp_events{});
  bridge.subscribe("loop-" + tag + "/#", codec::qos::at_least_once);
  plain.subscribe("loop-" + tag + "/#", codec::qos::at_least_once);
  bridge.start();
  plain.start();
  REQUIRE(run_until(io, [&] { return bridge.handler().subacks == 1 && plain.handler().subacks == 1; }));
  bridge.publish("loop-" + tag + "/from-bridge", "1", codec::qos::at_least_once);
  plain.publish("loop-" + tag + "/from-plain", "2", codec::qos::at_least_once, true);
  REQUIRE(run_until(io, [&] { return plain.handler().messages.size() == 2 && bridge.handler().messages.size() == 1; }));
  // Long enough for an echo to arrive, were one coming.
  run_until(io, [] { return false; }, std::chrono::milliseconds(200));
  CHECK(bridge.handler().messages == std::vector<std::string>{"loop-" + tag + "/from-plain=2"});
  CHECK(bridge.handler().retained == 1);  // forwarded live, and still retained for the far side
  CHECK(plain.handler().retained == 0);   // a plain subscriber's live copy is not [MQTT-3.3.1-9]
  plain.publish("loop-" + tag + "/from-plain", "", codec::qos::at_least_once, true);  // clears it
  REQUIRE(run_until(io, [&] { return plain.handler().published.size() == 2; }));
  bridge.stop();
  plain.stop();
  run_until(io, [] { return false; }, std::chrono::milliseconds(50));
}

}  // namespace

TEST_CASE("a client with the bridge bit (try_private) gets no echo of its own messages and keeps the retain flag",
          "[client][bridge][transport]") {
  asio::io_context io;
  mb::broker<> b(io, {});
  b.listen({"127.0.0.1", 0});
  b.start();
  bridge_bit_checks(io, b.local_port(), codec::protocol_version::v3_1_1, "ours4");
  bridge_bit_checks(io, b.local_port(), codec::protocol_version::v5, "ours5");
  bool stopped = false;
  b.async_stop([&](std::error_code) { stopped = true; });
  REQUIRE(run_until(io, [&] { return stopped; }));
}

TEST_CASE("the bridge bit means the same to Mosquitto", "[client][bridge][transport][mosquitto]") {
  mosquitto_process mosq;
  if (!usable(mosq)) return;
  asio::io_context io;
  bridge_bit_checks(io, mosq.port(), codec::protocol_version::v3_1_1, "mosq4");
}

TEST_CASE("bridge topic lines as Mosquitto reads them: direction, QoS, prefixes swapped on the way", "[bridge]") {
  std::string why;
  using words = std::vector<std::string>;
  auto r = mb::bridge::parse_topic_route(words{"sensors/#", "out", "1", "", "gw7/"}, why);
  REQUIRE(r);
  CHECK(r->carries_out());
  CHECK_FALSE(r->carries_in());
  CHECK(r->qos_level == codec::qos::at_least_once);
  CHECK(r->local_filter() == "sensors/#");
  CHECK(r->remote_filter() == "gw7/sensors/#");
  CHECK(r->to_remote("sensors/t1") == "gw7/sensors/t1");
  r = mb::bridge::parse_topic_route(words{"cmd/+", "in", "2", "local/", "cloud/gw7/"}, why);
  REQUIRE(r);
  CHECK(r->carries_in());
  CHECK(r->remote_filter() == "cloud/gw7/cmd/+");
  CHECK(r->to_local("cloud/gw7/cmd/reboot") == "local/cmd/reboot");
  r = mb::bridge::parse_topic_route(words{"#"}, why);  // Mosquitto's defaults: out, QoS 0
  REQUIRE(r);
  CHECK(r->dir == mb::bridge::direction::out);
  CHECK(r->qos_level == codec::qos::at_most_once);
  r = mb::bridge::parse_topic_route(words{"", "both", "0", "here/status", "there/status"}, why);
  REQUIRE(r);  // an empty pattern: the prefixes name one topic
  CHECK(r->to_remote("here/status") == "there/status");
  CHECK(r->to_local("there/status") == "here/status");
  // Refused, each with its reason.
  const std::vector<words> wrong = {{},
                                    {"a/#", "sideways"},
                                    {"a/#", "out", "3"},
                                    {"a/#", "out", "1", "only-local/"},
                                    {"a/#", "out", "1", "x/+/", "y/"},
                                    {"", "out", "1", "x/", ""},
                                    {"a/#/b"},
                                    {"a", "out", "0", "", "", "extra"}};
  for (const words& w : wrong) {
    why.clear();
    CHECK_FALSE(mb::bridge::parse_topic_route(w, why));
    CHECK_FALSE(why.empty());
  }
}
