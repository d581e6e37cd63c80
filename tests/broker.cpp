#include <mqttbroker/broker.hpp>

#include <mqttbroker/clock/manual.hpp>
#include <mqttbroker/codec.hpp>
#include <mqttbroker/hooks/acl_file.hpp>
#include <mqttbroker/metrics/http.hpp>
#include <mqttbroker/metrics/prometheus.hpp>
#include <mqttbroker/transport/memory.hpp>

#include "catch.hpp"
#include "rx.hpp"
#include "stream_client.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/strand.hpp>
#include <asio/thread_pool.hpp>
#include <asio/write.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

// Deterministic broker tests: the broker and its clients share one io_context over the memory
// transport, and each step runs ready handlers until none is left (settle()). Nothing waits on a
// clock, so "nothing arrived" is as exact as "this arrived".

namespace mb = mqttbroker;
namespace codec = mqttbroker::codec;
using mb::reason_code;
using mb::transport::memory;
using mb::transport::memory_acceptor;
using mb::transport::memory_stream;
using codec::protocol_version;
using codec::qos;
using test_rx::rx;
using test_rx::to_rx;
using namespace test_rx::packet_types;

namespace {

struct mem_policies : mb::default_policies {
  using transport = mb::transport::memory;
};

using test_client::basic_client;
using test_client::will_spec;
using client = test_client::memory_client;

/// Runs `io` until `ready()`: real sockets need a bounded wait, not a fixed number of polls. Fails
/// the test after 10 s.
template <class Ready>
void run_io_until(asio::io_context& io, Ready ready) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!ready()) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    io.restart();
    io.run_for(std::chrono::milliseconds(2));
  }
}

std::string next_listener_name() {
  static int n = 0;
  return "broker-test-" + std::to_string(++n);
}

/// An io_context, a started broker listening on a memory listener, and its clients.
template <class Policies = mem_policies>
class harness {
 public:
  using broker_type = mb::broker<Policies>;

  using clock_type = typename broker_type::clock_type;

  explicit harness(mb::broker_options o = {}, typename Policies::hooks h = {})
      : broker(io, std::move(o), std::move(h), clock) {
    broker.listen(typename Policies::transport::listen_options(listener));
    broker.start();
  }
  harness(const harness&) = delete;
  harness& operator=(const harness&) = delete;
  ~harness() {
    stop();
    clients_.clear();
    run_until_idle();  // no FAIL here: a destructor must not throw
  }

  /// Runs ready handlers until none is left; a bounded loop, so a livelock fails the test.
  void settle() {
    if (!run_until_idle()) FAIL("the broker did not settle");
  }

  /// Stops the broker; true when async_stop completed its handler.
  bool stop() {
    if (stopped_) return true;
    stopped_ = true;
    bool done = false;
    broker.async_stop([&done](std::error_code ec) { done = !ec; });
    run_until_idle();
    return done;
  }

  bool run_until_idle() {
    for (int i = 0; i < 100'000; ++i) {
      if (io.stopped()) io.restart();
      if (io.poll() == 0) return true;
    }
    return false;
  }

  client& add(protocol_version v = protocol_version::v3_1_1) {
    clients_.push_back(std::make_unique<client>(io, listener, v));
    return *clients_.back();
  }

  /// A client connected as `id`, its CONNACK (code 0) consumed.
  client& connected(const std::string& id, bool clean = true, protocol_version v = protocol_version::v3_1_1,
                    const std::optional<will_spec>& will = std::nullopt) {
    client& c = add(v);
    c.connect(id, clean, will);
    settle();
    const rx ack = c.pop(codec::packet_type::connack);
    REQUIRE(ack.code == 0);
    return c;
  }

  /// SUBSCRIBE and the SUBACK's return codes.
  std::vector<std::uint8_t> subscribe(client& c, const std::string& filter, qos q, std::uint16_t id = 1) {
    c.subscribe(id, filter, q);
    settle();
    const rx ack = c.pop(codec::packet_type::suback);
    CHECK(ack.id == id);  // [MQTT-3.8.4-2]
    return ack.codes;
  }

  /// With clock::manual: moves time forward by `d`, stopping at every timer due on the way and
  /// running what it set off, as real time would (the sweep ticks at each of its periods).
  void advance(typename clock_type::steady_clock::duration d) {
    const auto target = clock.steady_now() + d;
    settle();
    while (auto due = clock.next_expiry()) {
      if (*due > target) break;
      clock.advance_to(*due);
      settle();
    }
    clock.advance_to(target);
    settle();
  }

  asio::io_context io;
  std::string listener = next_listener_name();
  clock_type clock;  // before the broker, which gets a copy (clock::manual copies share their time)
  broker_type broker;

 private:
  std::vector<std::unique_ptr<client>> clients_;
  bool stopped_ = false;
};

}  // namespace

// ---- CONNECT and CONNACK

TEST_CASE("Session Present is 0 for a new or clean session and 1 for a resumed one",
          "[broker][MQTT-3.2.2-1][MQTT-3.2.2-2][MQTT-3.2.2-3]") {
  harness<> h;
  auto connack = [&](bool clean) {
    client& c = h.add();
    c.connect("sp", clean);
    h.settle();
    rx ack = c.pop(CONNACK);
    CHECK(ack.code == 0);
    c.disconnect();
    h.settle();
    CHECK(c.closed());
    return ack.session_present;
  };
  CHECK_FALSE(connack(false));  // clean 0, nothing stored [MQTT-3.2.2-3]
  CHECK(connack(false));        // clean 0, stored [MQTT-3.2.2-2]
  CHECK_FALSE(connack(true));   // clean 1 [MQTT-3.2.2-1]
  CHECK_FALSE(connack(false));  // the clean session ended with its connection
}

TEST_CASE("3.1.1: an empty client identifier needs Clean Session 1", "[broker][MQTT-3.1.3-7][MQTT-3.1.3-8]") {
  harness<> h;
  client& refused = h.add();
  refused.connect("", false);
  h.settle();
  const rx ack = refused.pop(CONNACK);
  CHECK(ack.code == 2);  // Identifier rejected
  CHECK_FALSE(ack.session_present);
  CHECK(refused.closed());

  client& accepted = h.add();
  accepted.connect("", true);
  h.settle();
  CHECK(accepted.pop(CONNACK).code == 0);
  CHECK_FALSE(accepted.closed());
  accepted.send(codec::pingreq{});
  h.settle();
  accepted.pop(PINGRESP);
}

TEST_CASE("5.0: an empty client identifier gets an Assigned Client Identifier", "[broker][v5][MQTT-3.2.2-16]") {
  harness<> h;
  client& c = h.add(protocol_version::v5);
  c.connect("");
  h.settle();
  const rx ack = c.pop(CONNACK);
  CHECK(ack.code == 0);
  CHECK_FALSE(ack.assigned_client_id.empty());
  client& d = h.add(protocol_version::v5);
  d.connect("");
  h.settle();
  const rx ack2 = d.pop(CONNACK);
  CHECK_FALSE(ack2.assigned_client_id.empty());
  CHECK(ack2.assigned_client_id != ack.assigned_client_id);
  CHECK_FALSE(c.closed());  // no takeover between the two

  client& named = h.add(protocol_version::v5);
  named.connect("has-a-name");
  h.settle();
  CHECK(named.pop(CONNACK).assigned_client_id.empty());
}

TEST_CASE("the first packet from the server on a resumed session is CONNACK, even when the old connection's will matches it",
          "[broker][MQTT-3.2.0-1][MQTT-3.1.4-2]") {
  // The old and the new connection's protocol levels: a client may also come back upgraded.
  const auto versions = GENERATE(std::make_pair(protocol_version::v3_1_1, protocol_version::v3_1_1),
                                 std::make_pair(protocol_version::v5, protocol_version::v5),
                                 std::make_pair(protocol_version::v3_1_1, protocol_version::v5));
  INFO("protocol levels " << static_cast<int>(versions.first) << " then " << static_cast<int>(versions.second));
  harness<> h;
  client& first = h.connected("self-will", false, versions.first, will_spec{"self/will", "gone", qos::at_least_once});
  REQUIRE(h.subscribe(first, "self/#", qos::at_least_once) == std::vector<std::uint8_t>{1});
  client& second = h.add(versions.second);
  second.connect("self-will", false);
  h.settle();
  CHECK(first.closed());
  // The will of the taken-over connection reaches the session's new connection once, after the CONNACK.
  std::vector<codec::packet_type> types;
  std::vector<rx> wills;
  while (!second.empty()) {
    rx r = second.pop();
    types.push_back(r.type);
    if (r.type == PUBLISH) wills.push_back(r);
  }
  CHECK_FALSE(second.decode_error());  // everything in the new connection's protocol version
  REQUIRE_FALSE(types.empty());
  CHECK(types.front() == CONNACK);
  REQUIRE(wills.size() == 1);
  CHECK(wills[0].payload == "gone");
  CHECK_FALSE(wills[0].dup);  // a new message for this connection, not a re-send
}

// ---- QoS 0, 1, 2

TEST_CASE("QoS 0, 1 and 2 flow end to end with their acknowledgements",
          "[broker][MQTT-4.3.1-1][MQTT-4.3.2-1][MQTT-4.3.2-2][MQTT-4.3.3-1][MQTT-4.3.3-2]") {
  harness<> h;
  client& sub = h.connected("sub");
  client& pub = h.connected("pub");
  REQUIRE(h.subscribe(sub, "t/#", qos::exactly_once) == std::vector<std::uint8_t>{2});

  SECTION("QoS 0") {
    pub.publish("t/0", "zero");
    h.settle();
    CHECK(pub.empty());  // no acknowledgement at QoS 0
    const rx m = sub.pop(PUBLISH);
    CHECK(m.topic == "t/0");
    CHECK(m.payload == "zero");
    CHECK(m.qos_level == qos::at_most_once);
    CHECK(m.id == 0);
  }
  SECTION("QoS 1") {
    pub.publish("t/1", "one", qos::at_least_once, 7);
    h.settle();
    CHECK(pub.pop(PUBACK).id == 7);
    const rx m = sub.pop(PUBLISH);
    CHECK(m.qos_level == qos::at_least_once);
    CHECK(m.id != 0);  // the broker's own identifier [MQTT-2.3.1-1]
    CHECK_FALSE(m.dup);
    sub.puback(m.id);
    h.settle();
    CHECK(sub.empty());
    CHECK(pub.empty());
  }
  SECTION("QoS 2") {
    pub.publish("t/2", "two", qos::exactly_once, 9);
    h.settle();
    CHECK(pub.pop(PUBREC).id == 9);
    pub.pubrel(9);
    h.settle();
    CHECK(pub.pop(PUBCOMP).id == 9);

    const rx m = sub.pop(PUBLISH);
    CHECK(m.qos_level == qos::exactly_once);
    CHECK(m.payload == "two");
    REQUIRE(m.id != 0);
    sub.pubrec(m.id);
    h.settle();
    CHECK(sub.pop(PUBREL).id == m.id);
    sub.pubcomp(m.id);
    h.settle();
    CHECK(sub.empty());
  }
}

TEST_CASE("delivery QoS is the minimum of the published and the granted QoS", "[broker][MQTT-3.8.4-6]") {
  harness<> h;
  client& s0 = h.connected("s0");
  client& s1 = h.connected("s1");
  client& s2 = h.connected("s2");
  h.subscribe(s0, "q", qos::at_most_once);
  h.subscribe(s1, "q", qos::at_least_once);
  h.subscribe(s2, "q", qos::exactly_once);
  client& pub = h.connected("pub");
  const qos levels[] = {qos::at_most_once, qos::at_least_once, qos::exactly_once};
  std::uint16_t id = 1;
  for (qos q : levels) {
    pub.publish("q", "m", q, q == qos::at_most_once ? 0 : id++);
    if (q == qos::exactly_once) pub.pubrel(static_cast<std::uint16_t>(id - 1));
  }
  h.settle();
  client* subs[] = {&s0, &s1, &s2};
  for (int granted = 0; granted < 3; ++granted) {
    std::vector<rx> got = subs[granted]->publishes();
    REQUIRE(got.size() == 3);
    for (int sent = 0; sent < 3; ++sent) {
      INFO("granted " << granted << ", published " << sent);
      CHECK(static_cast<int>(got[static_cast<std::size_t>(sent)].qos_level) == std::min(granted, sent));
      CHECK((got[static_cast<std::size_t>(sent)].id == 0) == (std::min(granted, sent) == 0));
    }
  }
}

TEST_CASE("QoS 2: a re-sent PUBLISH before PUBREL is acknowledged again but routed once", "[broker][MQTT-4.3.3-2]") {
  harness<> h;
  client& sub = h.connected("sub");
  h.subscribe(sub, "x", qos::at_most_once);
  client& pub = h.connected("pub");
  pub.publish("x", "once", qos::exactly_once, 42);
  h.settle();
  CHECK(pub.pop(PUBREC).id == 42);
  pub.publish("x", "once", qos::exactly_once, 42, false, true);  // DUP=1
  h.settle();
  CHECK(pub.pop(PUBREC).id == 42);  // PUBREC again
  CHECK(sub.publishes().size() == 1);

  pub.pubrel(42);
  h.settle();
  CHECK(pub.pop(PUBCOMP).id == 42);
  pub.pubrel(42);  // repeated PUBREL: PUBCOMP again [MQTT-3.6.4-1]
  h.settle();
  CHECK(pub.pop(PUBCOMP).id == 42);
  CHECK(sub.empty());

  // After PUBCOMP the identifier starts a new publication.
  pub.publish("x", "again", qos::exactly_once, 42);
  h.settle();
  CHECK(pub.pop(PUBREC).id == 42);
  const auto got = sub.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "again");
}

TEST_CASE("overlapping subscriptions deliver one copy at the highest QoS", "[broker][MQTT-3.3.5-1]") {
  harness<> h;
  client& sub = h.connected("sub");
  sub.subscribe(1, {{"a/+", qos::at_most_once}, {"a/#", qos::at_least_once}, {"a/b", qos::at_most_once}});
  h.settle();
  CHECK(sub.pop(SUBACK).codes == std::vector<std::uint8_t>{0, 1, 0});  // [MQTT-3.8.4-4] [MQTT-3.8.4-5]
  h.broker.publish("a/b", "one copy", qos::exactly_once);
  h.settle();
  const auto got = sub.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].qos_level == qos::at_least_once);
}

TEST_CASE("an unsubscribed filter stops delivery", "[broker][MQTT-3.10.4-1][MQTT-3.10.4-4]") {
  harness<> h;
  client& sub = h.connected("sub");
  h.subscribe(sub, "u/#", qos::at_most_once);
  sub.unsubscribe(5, "u/#");
  h.settle();
  CHECK(sub.pop(UNSUBACK).id == 5);
  h.broker.publish("u/x", "gone");
  h.settle();
  CHECK(sub.empty());
}

// ---- retained messages

TEST_CASE("retained messages are stored, replaced, deleted and sent with RETAIN=1 after the SUBACK",
          "[broker][retain][MQTT-3.3.1-5][MQTT-3.3.1-6][MQTT-3.3.1-8][MQTT-3.3.1-10][MQTT-3.3.1-11]") {
  harness<> h;
  client& pub = h.connected("pub");
  pub.publish("r/a", "first", qos::at_most_once, 0, true);
  pub.publish("r/a", "second", qos::at_most_once, 0, true);  // replaces [MQTT-3.3.1-7]
  pub.publish("r/b", "bee", qos::at_most_once, 0, true);
  h.settle();
  REQUIRE(h.broker.retained("r/a"));
  CHECK(h.broker.retained("r/a")->payload() == "second");
  CHECK(h.broker.stats().retained_messages == 2);

  client& sub = h.connected("sub");
  sub.subscribe(1, "r/#", qos::at_most_once);
  h.settle();
  CHECK(sub.pop().type == SUBACK);  // the SUBACK comes first
  std::vector<rx> got = sub.publishes();
  REQUIRE(got.size() == 2);
  std::vector<std::string> payloads{got[0].payload, got[1].payload};
  std::sort(payloads.begin(), payloads.end());
  CHECK(payloads == std::vector<std::string>{"bee", "second"});
  CHECK(got[0].retain);
  CHECK(got[1].retain);

  // An empty retained payload deletes the message, and is delivered normally [MQTT-3.3.1-10].
  pub.publish("r/a", "", qos::at_most_once, 0, true);
  h.settle();
  CHECK_FALSE(h.broker.retained("r/a"));
  got = sub.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload.empty());
  CHECK_FALSE(got[0].retain);  // [MQTT-3.3.1-9]

  client& late = h.connected("late");
  h.subscribe(late, "r/#", qos::at_most_once);
  got = late.publishes();
  REQUIRE(got.size() == 1);  // the empty message was not stored [MQTT-3.3.1-11]
  CHECK(got[0].topic == "r/b");
}

TEST_CASE("RETAIN is 0 on messages delivered to existing subscriptions", "[broker][retain][MQTT-3.3.1-9]") {
  harness<> h;
  client& sub = h.connected("sub");
  h.subscribe(sub, "live", qos::at_least_once);
  client& pub = h.connected("pub");
  pub.publish("live", "retained but live", qos::at_least_once, 3, true);
  h.settle();
  const auto got = sub.publishes();
  REQUIRE(got.size() == 1);
  CHECK_FALSE(got[0].retain);
  CHECK(h.broker.retained("live"));
}

TEST_CASE("a repeated SUBSCRIBE sends the retained messages again", "[broker][retain][MQTT-3.8.4-3]") {
  harness<> h;
  h.broker.publish("rs/t", "kept", qos::at_least_once, true);
  client& sub = h.connected("sub");
  h.subscribe(sub, "rs/+", qos::at_least_once);
  auto got = sub.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].retain);
  sub.puback(got[0].id);
  h.subscribe(sub, "rs/+", qos::at_least_once, 2);
  got = sub.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].retain);
  CHECK(got[0].payload == "kept");
}

TEST_CASE("a retained message goes out at min(stored QoS, granted QoS)", "[broker][retain][MQTT-3.8.4-6]") {
  harness<> h;
  h.broker.publish("rq/two", "2", qos::exactly_once, true);
  h.broker.publish("rq/zero", "0", qos::at_most_once, true);
  client& one = h.connected("one");
  h.subscribe(one, "rq/two", qos::at_least_once);
  auto got = one.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].qos_level == qos::at_least_once);
  CHECK(got[0].id != 0);
  client& two = h.connected("two");
  h.subscribe(two, "rq/zero", qos::exactly_once);
  got = two.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].qos_level == qos::at_most_once);
  CHECK(got[0].retain);
}

// ---- will

TEST_CASE("the will is published when the connection ends without DISCONNECT", "[broker][will][MQTT-3.1.2-8]") {
  harness<> h;
  client& watcher = h.connected("watcher");
  h.subscribe(watcher, "wills/#", qos::at_least_once);
  client& dying = h.connected("dying", true, protocol_version::v3_1_1, will_spec{"wills/dying", "gone", qos::at_least_once});
  dying.close();
  h.settle();
  const auto got = watcher.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].topic == "wills/dying");
  CHECK(got[0].payload == "gone");
  CHECK(got[0].qos_level == qos::at_least_once);
}

TEST_CASE("the will is discarded on DISCONNECT", "[broker][will][MQTT-3.1.2-10][MQTT-3.14.4-3]") {
  harness<> h;
  client& watcher = h.connected("watcher");
  h.subscribe(watcher, "wills/#", qos::at_least_once);
  client& polite = h.connected("polite", true, protocol_version::v3_1_1, will_spec{"wills/polite", "gone"});
  polite.disconnect();
  h.settle();
  CHECK(polite.closed());
  polite.close();
  h.settle();
  CHECK(watcher.empty());
}

TEST_CASE("a retained will is stored when it fires", "[broker][will][retain][MQTT-3.1.2-17]") {
  harness<> h;
  client& dying = h.connected("dying", true, protocol_version::v3_1_1, will_spec{"status/dying", "offline", qos::at_most_once, true});
  dying.close();
  h.settle();
  REQUIRE(h.broker.retained("status/dying"));
  CHECK(h.broker.retained("status/dying")->payload() == "offline");
}

TEST_CASE("the will is published when the server closes the connection for a protocol error", "[broker][will][MQTT-3.1.2-8]") {
  harness<> h;
  client& watcher = h.connected("watcher");
  h.subscribe(watcher, "wills/#", qos::at_most_once);
  client& bad = h.connected("bad", true, protocol_version::v3_1_1, will_spec{"wills/bad", "broke the rules"});
  bad.publish("wild/+", "wildcards are not allowed in a Topic Name");  // [MQTT-3.3.2-2]
  h.settle();
  CHECK(bad.closed());
  const auto got = watcher.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "broke the rules");
}

TEST_CASE("5.0: DISCONNECT 0x04 keeps the will, DISCONNECT 0x00 discards it", "[broker][will][v5][MQTT-3.14.4-3]") {
  harness<> h;
  client& watcher = h.connected("watcher");
  h.subscribe(watcher, "wills/#", qos::at_most_once);
  client& keeps = h.connected("keeps", true, protocol_version::v5, will_spec{"wills/keeps", "as asked"});
  client& drops = h.connected("drops", true, protocol_version::v5, will_spec{"wills/drops", "never"});
  codec::disconnect with_will;
  with_will.reason = reason_code::disconnect_with_will_message;
  keeps.send(with_will);
  drops.disconnect();
  h.settle();
  CHECK(keeps.closed());
  CHECK(drops.closed());
  const auto got = watcher.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "as asked");
}

// ---- persistent sessions

TEST_CASE("a persistent session keeps its subscriptions and queues QoS 1 while offline",
          "[broker][session][MQTT-3.1.2-4][MQTT-3.1.2-5]") {
  harness<> h;
  {
    client& c = h.connected("keeper", false);
    h.subscribe(c, "p/#", qos::at_least_once);
    c.disconnect();
    h.settle();
  }
  for (int i = 0; i < 3; ++i) h.broker.publish("p/x", "m" + std::to_string(i), qos::at_least_once);
  h.broker.publish("p/x", "qos0 is not queued", qos::at_most_once);
  h.settle();
  CHECK(h.broker.stats().sessions == 1);

  client& back = h.add();
  back.connect("keeper", false);
  h.settle();
  CHECK(back.pop(CONNACK).session_present);
  auto got = back.publishes();
  REQUIRE(got.size() == 3);
  for (int i = 0; i < 3; ++i) {
    CHECK(got[static_cast<std::size_t>(i)].payload == "m" + std::to_string(i));
    back.puback(got[static_cast<std::size_t>(i)].id);
  }
  // The subscription is still there.
  h.broker.publish("p/y", "live", qos::at_least_once);
  h.settle();
  got = back.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "live");
}

TEST_CASE("unacknowledged QoS 1 messages are re-sent with DUP=1, in order, on reconnect",
          "[broker][session][MQTT-4.4.0-1][MQTT-4.6.0-1][MQTT-3.3.1-1]") {
  harness<> h;
  client& c = h.connected("resend", false);
  h.subscribe(c, "d", qos::at_least_once);
  for (int i = 0; i < 3; ++i) h.broker.publish("d", std::to_string(i), qos::at_least_once);
  h.settle();
  const auto first = c.publishes();
  REQUIRE(first.size() == 3);
  c.puback(first[0].id);  // only the first is acknowledged
  h.settle();
  c.close();
  h.settle();

  client& back = h.add();
  back.connect("resend", false);
  h.settle();
  CHECK(back.pop(CONNACK).session_present);
  const auto again = back.publishes();
  REQUIRE(again.size() == 2);
  for (std::size_t i = 0; i < 2; ++i) {
    CHECK(again[i].dup);
    CHECK(again[i].id == first[i + 1].id);  // original identifiers
    CHECK(again[i].payload == first[i + 1].payload);
  }
  back.puback(again[0].id);
  back.puback(again[1].id);
  h.settle();
  back.close();
  h.settle();
  client& third = h.add();
  third.connect("resend", false);
  h.settle();
  CHECK(third.pop(CONNACK).session_present);
  CHECK(third.empty());  // nothing left in flight
}

TEST_CASE("a QoS 2 message waiting for PUBCOMP is resumed with PUBREL on reconnect", "[broker][session][MQTT-4.4.0-1]") {
  harness<> h;
  client& c = h.connected("q2", false);
  h.subscribe(c, "d2", qos::exactly_once);
  h.broker.publish("d2", "x", qos::exactly_once);
  h.settle();
  const rx m = c.pop(PUBLISH);
  c.pubrec(m.id);
  h.settle();
  CHECK(c.pop(PUBREL).id == m.id);
  c.close();
  h.settle();
  client& back = h.add();
  back.connect("q2", false);
  h.settle();
  CHECK(back.pop(CONNACK).session_present);
  CHECK(back.pop(PUBREL).id == m.id);
  CHECK(back.empty());
}

TEST_CASE("Clean Session 1 discards the stored session", "[broker][session][MQTT-3.1.2-6]") {
  harness<> h;
  {
    client& c = h.connected("fresh", false);
    h.subscribe(c, "f", qos::at_least_once);
    c.disconnect();
    h.settle();
  }
  h.broker.publish("f", "queued", qos::at_least_once);
  h.settle();
  client& clean = h.add();
  clean.connect("fresh", true);
  h.settle();
  CHECK_FALSE(clean.pop(CONNACK).session_present);
  CHECK(clean.empty());  // the queued message went with the session
  h.broker.publish("f", "after", qos::at_least_once);
  h.settle();
  CHECK(clean.empty());  // and so did the subscription
}

// ---- takeover

TEST_CASE("a second connection with the same client identifier takes the session over",
          "[broker][session][MQTT-3.1.4-2]") {
  harness<> h;
  client& watcher = h.connected("watcher");
  h.subscribe(watcher, "will/#", qos::at_most_once);
  client& first = h.connected("twin", false, protocol_version::v3_1_1, will_spec{"will/twin", "first gone"});
  h.subscribe(first, "news", qos::at_least_once);

  client& second = h.add();
  second.connect("twin", false);
  h.settle();
  CHECK(first.closed());
  const rx ack = second.pop(CONNACK);
  CHECK(ack.code == 0);
  CHECK(ack.session_present);
  // The old connection's end publishes its will, and leaves the session to the new one.
  const auto wills = watcher.publishes();
  REQUIRE(wills.size() == 1);
  CHECK(wills[0].payload == "first gone");
  CHECK(h.broker.stats().sessions == 2);

  h.broker.publish("news", "for the second", qos::at_least_once);
  h.settle();
  const auto got = second.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "for the second");
  second.puback(got[0].id);
  h.settle();
  CHECK_FALSE(second.closed());
}

TEST_CASE("5.0: the taken-over connection gets DISCONNECT 0x8E", "[broker][v5][session][MQTT-3.1.4-3]") {
  harness<> h;
  client& first = h.connected("twin5", true, protocol_version::v5);
  client& second = h.add(protocol_version::v5);
  second.connect("twin5");
  h.settle();
  CHECK(second.pop(CONNACK).code == 0);
  const rx d = first.pop(DISCONNECT);
  CHECK(d.code == static_cast<std::uint8_t>(reason_code::session_taken_over));
  CHECK(first.closed());
  CHECK_FALSE(second.closed());
}

// ---- topics

TEST_CASE("wildcards at the first level do not match $-topics", "[broker][MQTT-4.7.2-1]") {
  harness<> h;
  client& all = h.connected("all");
  all.subscribe(1, {{"#", qos::at_most_once}, {"+/info", qos::at_most_once}});
  h.settle();
  all.pop(SUBACK);
  client& sys = h.connected("sys");
  h.subscribe(sys, "$SYS/#", qos::at_most_once);
  CHECK(h.broker.publish("$SYS/info", "uptime") == 1);
  h.settle();
  CHECK(all.empty());
  CHECK(sys.publishes().size() == 1);
}

TEST_CASE("clients cannot publish to $-topics", "[broker][MQTT-4.7.2-1]") {
  harness<> h;
  client& sys = h.connected("sys");
  h.subscribe(sys, "$SYS/#", qos::at_most_once);
  client& pub = h.connected("pub");
  pub.publish("$SYS/fake", "spoof", qos::at_least_once, 1);
  h.settle();
  CHECK(pub.pop(PUBACK).id == 1);  // 3.1.1 cannot refuse, but nothing is routed
  CHECK(sys.empty());
  CHECK(h.broker.stats().publishes_denied == 1);
  CHECK_FALSE(pub.closed());
  // But for a bridge's state topic, as in Mosquitto; one level, /state, nothing else.
  pub.publish("$SYS/broker/connection/gw-7/state", "1", qos::at_least_once, 2, true);
  pub.publish("$SYS/broker/connection/gw/7/state", "1", qos::at_least_once, 3);
  pub.publish("$SYS/broker/connection/gw-7/stats", "1", qos::at_least_once, 4);
  h.settle();
  CHECK(sys.pop(PUBLISH).topic == "$SYS/broker/connection/gw-7/state");
  CHECK(sys.empty());
  CHECK(h.broker.retained("$SYS/broker/connection/gw-7/state"));
  CHECK(h.broker.stats().publishes_denied == 3);
}

// ---- protocol errors

TEST_CASE("a malformed packet closes only its own connection", "[broker][MQTT-4.8.0-1][MQTT-3.3.1-4]") {
  harness<> h;
  client& good = h.connected("good");
  h.subscribe(good, "ok", qos::at_most_once);
  client& bad = h.connected("bad");
  bad.send_raw(std::string("\x36\x05\x00\x01x\x00\x01", 7));  // PUBLISH with QoS 3
  h.settle();
  CHECK(bad.closed());
  CHECK(bad.empty());  // 3.1.1: no DISCONNECT from the server
  CHECK(h.broker.stats().protocol_errors == 1);
  h.broker.publish("ok", "still here");
  h.settle();
  CHECK(good.publishes().size() == 1);
  CHECK_FALSE(good.closed());
}

TEST_CASE("5.0: a malformed packet gets DISCONNECT 0x81 before the close", "[broker][v5][MQTT-4.13.1-1]") {
  harness<> h;
  client& other = h.connected("other", true, protocol_version::v5);
  client& bad = h.connected("bad5", true, protocol_version::v5);
  bad.send_raw(std::string("\x36\x06\x00\x01x\x00\x01\x00", 8));
  h.settle();
  const rx d = bad.pop(DISCONNECT);
  CHECK(d.code == static_cast<std::uint8_t>(reason_code::malformed_packet));
  CHECK(bad.closed());
  other.send(codec::pingreq{});
  h.settle();
  other.pop(PINGRESP);
}

TEST_CASE("packets split into single bytes are decoded all the same", "[broker]") {
  harness<> h;
  mb::transport::memory::listen_options slow("broker-test-one-byte-reads", {1, 0});
  h.broker.listen(slow);
  client sub(h.io, slow.name, protocol_version::v3_1_1);
  sub.connect("bytewise");
  h.settle();
  CHECK(sub.pop(CONNACK).code == 0);
  sub.subscribe(1, "b", qos::at_least_once);
  h.settle();
  sub.pop(SUBACK);
  h.broker.publish("b", std::string(3000, 'x'), qos::at_least_once);
  h.settle();
  const auto got = sub.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload.size() == 3000);
}

TEST_CASE("5.0: nothing follows the server's DISCONNECT on a connection", "[broker][v5][MQTT-3.14.4-1]") {
  harness<> h;
  client& bad = h.add(protocol_version::v5);
  bad.set_session_expiry(600);
  bad.connect("bad5", false);
  h.settle();
  REQUIRE(bad.pop(CONNACK).code == 0);
  h.subscribe(bad, "news", qos::at_least_once);
  client& pub = h.connected("pub");
  h.settle();
  // The malformed packet and another client's PUBLISH reach the broker in the same turn: the
  // broker has queued DISCONNECT 0x81 and not yet closed when the PUBLISH is routed.
  bad.send_raw(std::string("\x36\x06\x00\x01x\x00\x01\x00", 8));
  pub.publish("news", "too late", qos::at_least_once, 1);
  h.settle();
  CHECK(bad.closed());
  CHECK_FALSE(bad.decode_error());
  REQUIRE_FALSE(bad.empty());
  CHECK(bad.pop(DISCONNECT).code == static_cast<std::uint8_t>(reason_code::malformed_packet));
  CHECK(bad.empty());  // [MQTT-3.14.4-1] no packet after DISCONNECT

  // The session is persistent: the message waits for the client's return.
  client& back = h.add(protocol_version::v5);
  back.set_session_expiry(600);
  back.connect("bad5", false);
  h.settle();
  CHECK(back.pop(CONNACK).session_present);
  const auto got = back.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "too late");
}

TEST_CASE("connections over max_connections are closed at once and counted", "[broker][limits]") {
  mb::broker_options o;
  o.max_connections = 1;
  harness<> h(o);
  client& in = h.connected("in");
  client& out = h.add();
  out.connect("out");
  h.settle();
  CHECK(out.closed());
  CHECK(out.empty());
  CHECK(h.broker.stats().connections_refused == 1);
  CHECK_FALSE(in.closed());
}

TEST_CASE("a listener's connection limit refuses its own extra connections, counted, and frees a place on close",
          "[broker][limits][listener]") {
  harness<> h;
  const std::string second = next_listener_name();
  h.broker.listen<memory>(memory::listen_options(second));
  client& before = h.connected("before");  // counted although no limit was set yet
  CHECK(h.broker.connections(0) == 1);
  h.broker.limit_connections(0, 1);

  client& over = h.add();
  over.connect("over");
  h.settle();
  CHECK(over.closed());
  CHECK(over.empty());
  CHECK(h.broker.stats().connections_refused == 1);
  CHECK_FALSE(before.closed());
  CHECK(h.broker.connections(0) == 1);

  // The other listener has no limit.
  std::vector<std::unique_ptr<client>> others;
  for (int i = 0; i < 3; ++i) {
    others.push_back(std::make_unique<client>(h.io, second, protocol_version::v3_1_1));
    others.back()->connect("other-" + std::to_string(i));
  }
  h.settle();
  for (auto& c : others) CHECK(c->pop(CONNACK).code == 0);
  CHECK(h.broker.connections(1) == 3);
  CHECK(h.broker.stats().connections == 4);

  // A close gives its place back.
  before.disconnect();
  h.settle();
  CHECK(h.broker.connections(0) == 0);
  client& after = h.connected("after");
  CHECK_FALSE(after.closed());
  CHECK(h.broker.connections(0) == 1);

  // 0 refuses everything; unlimited lifts the limit.
  h.broker.limit_connections(1, 0);
  client outside(h.io, second, protocol_version::v3_1_1);
  outside.connect("outside");
  h.settle();
  CHECK(outside.closed());
  h.broker.limit_connections(1, mb::broker<mem_policies>::unlimited);
  client inside(h.io, second, protocol_version::v3_1_1);
  inside.connect("inside");
  h.settle();
  CHECK(inside.pop(CONNACK).code == 0);
  CHECK(h.broker.stats().connections_refused == 2);
  CHECK_THROWS_AS(h.broker.limit_connections(2, 1), std::out_of_range);
}

TEST_CASE("over TCP a listener limited to one connection refuses the second while another listener still accepts",
          "[broker][limits][listener]") {
  using tcp_client = basic_client<asio::ip::tcp::socket>;
  asio::io_context io;
  mb::broker<> b(io);
  b.listen({"127.0.0.1", 0});
  b.listen({"127.0.0.1", 0});
  b.limit_connections(0, 1);
  b.start();
  auto wait_for = [&io](auto ready) { run_io_until(io, ready); };
  auto over_tcp = [&](std::size_t listener, const std::string& id) {
    asio::ip::tcp::socket s(io);
    s.connect({asio::ip::make_address("127.0.0.1"), b.local_port(listener)});
    auto c = std::make_unique<tcp_client>(std::move(s), protocol_version::v3_1_1);
    c->connect(id);
    return c;
  };

  auto first = over_tcp(0, "first");
  wait_for([&] { return first->pending() == 1; });
  CHECK(first->pop(CONNACK).code == 0);
  auto second = over_tcp(0, "second");
  wait_for([&] { return second->closed(); });
  CHECK(second->empty());
  auto elsewhere = over_tcp(1, "elsewhere");
  auto elsewhere_too = over_tcp(1, "elsewhere-too");
  wait_for([&] { return elsewhere->pending() == 1 && elsewhere_too->pending() == 1; });
  CHECK(elsewhere->pop(CONNACK).code == 0);
  CHECK(elsewhere_too->pop(CONNACK).code == 0);
  CHECK(b.stats().connections_refused == 1);
  CHECK(b.connections(0) == 1);
  CHECK(b.connections(1) == 2);

  // The first one leaving lets the next one in.
  first->disconnect();
  wait_for([&] { return b.connections(0) == 0; });
  auto third = over_tcp(0, "third");
  wait_for([&] { return third->pending() == 1; });
  CHECK(third->pop(CONNACK).code == 0);

  bool stopped = false;
  b.async_stop([&](std::error_code ec) { stopped = !ec; });
  wait_for([&] { return stopped; });
}

// ---- in-process API

TEST_CASE("in-process publish reaches clients and in-process handlers see client messages, one shared message",
          "[broker][inprocess]") {
  harness<> h;
  std::vector<mb::message_ptr> seen_a, seen_b;
  h.broker.subscribe("share/#", [&](const mb::message_ptr& m) { seen_a.push_back(m); });
  const auto id_b = h.broker.subscribe("share/+", [&](const mb::message_ptr& m) { seen_b.push_back(m); });

  // Two persistent sessions, offline, each queueing the message.
  for (const char* name : {"q1", "q2"}) {
    client& c = h.connected(name, false);
    h.subscribe(c, "share/#", qos::at_least_once);
    c.disconnect();
    h.settle();
  }
  client& pub = h.connected("pub");
  pub.publish("share/x", "one copy", qos::at_least_once, 1);
  h.settle();
  REQUIRE(seen_a.size() == 1);
  REQUIRE(seen_b.size() == 1);
  CHECK(seen_a[0].get() == seen_b[0].get());
  CHECK(seen_a[0]->payload() == "one copy");
  CHECK(seen_a[0].use_count() == 4);  // two handlers' copies and two session queues; no copy per subscriber

  client& back = h.add();
  back.connect("q1", false);
  h.settle();
  back.pop(CONNACK);
  const auto got = back.publishes();
  REQUIRE(got.size() == 1);
  back.puback(got[0].id);
  h.settle();
  CHECK(seen_a[0].use_count() == 3);

  // The host publishes to a client.
  client& live = h.connected("live");
  h.subscribe(live, "host/+", qos::at_most_once);
  CHECK(h.broker.publish("host/news", "from the host") == 1);
  h.settle();
  const auto news = live.publishes();
  REQUIRE(news.size() == 1);
  CHECK(news[0].payload == "from the host");

  CHECK(h.broker.unsubscribe(id_b));
  CHECK_FALSE(h.broker.unsubscribe(id_b));
  h.broker.publish("share/y", "only a");
  h.settle();
  CHECK(seen_a.size() == 2);
  CHECK(seen_b.size() == 1);
  std::error_code ec;
  CHECK(h.broker.publish("bad/#", "x", qos::at_most_once, false, &ec) == 0);
  CHECK(ec);
}

// ---- hooks

namespace {

struct hook_log {
  std::vector<std::string> connects;
  std::vector<std::pair<std::string, bool>> disconnects;
  std::vector<std::string> subscribes;
  std::vector<std::string> unsubscribes;
  std::vector<std::pair<std::string, reason_code>> refused;
};

struct test_hooks {
  hook_log* seen = nullptr;  // not "log": that is a hook's name

  mb::hooks::auth_result authenticate(const mb::hooks::connect_info& i) {
    if (i.username && *i.username == "wrong") return mb::hooks::auth_result::bad_credentials;
    if (i.client_id == "banned") return mb::hooks::auth_result::not_authorized;
    return mb::hooks::auth_result::accept;
  }
  bool authorize_publish(const mb::hooks::client_info&, const mb::message& m) { return m.topic().rfind("secret/", 0) != 0; }
  bool authorize_subscribe(const mb::hooks::client_info&, std::string_view filter, qos) {
    return filter.rfind("secret/", 0) != 0;
  }
  void intercept(std::string_view, mb::message_ptr& m) {
    if (m->topic() == "drop/me") {
      m = mb::message_ptr();
    } else if (m->topic().rfind("rename/", 0) == 0) {
      m = mb::message::make("renamed/" + std::string(m->topic().substr(7)), m->payload(), m->qos_level(), m->retain());
    }
  }
  void on_connect(const mb::hooks::client_info& c) { seen->connects.emplace_back(c.client_id); }
  void on_disconnect(const mb::hooks::client_info& c, bool graceful) {
    seen->disconnects.emplace_back(std::string(c.client_id), graceful);
  }
  void on_subscribe(const mb::hooks::client_info& c, std::string_view filter, qos) {
    seen->subscribes.push_back(std::string(c.client_id) + ":" + std::string(filter));
  }
  void on_unsubscribe(const mb::hooks::client_info& c, std::string_view filter) {
    seen->unsubscribes.push_back(std::string(c.client_id) + ":" + std::string(filter));
  }
  void on_connect_refused(const mb::hooks::connect_info& i, reason_code why) {
    if (seen) seen->refused.emplace_back(std::string(i.client_id), why);
  }
};

struct hooked_policies : mem_policies {
  using hooks = test_hooks;
};

struct empty_hooks {};
struct empty_hooks_policies : mb::default_policies {
  using hooks = empty_hooks;
};
struct empty_hooks_mem_policies : mem_policies {
  using hooks = empty_hooks;
};

// An absent hook costs nothing: a hooks struct that defines no members leaves the broker as it is.
static_assert(sizeof(mb::broker<>) == sizeof(mb::broker<empty_hooks_policies>));
static_assert(sizeof(mb::broker<mem_policies>) == sizeof(mb::broker<empty_hooks_mem_policies>));
static_assert(!mb::hooks::has_authenticate_v<empty_hooks> && !mb::hooks::has_intercept_v<empty_hooks> &&
              !mb::hooks::has_on_connect_v<empty_hooks>);
static_assert(mb::hooks::has_authenticate_v<test_hooks> && mb::hooks::has_authorize_publish_v<test_hooks> &&
              mb::hooks::has_authorize_subscribe_v<test_hooks> && mb::hooks::has_intercept_v<test_hooks> &&
              mb::hooks::has_on_connect_v<test_hooks> && mb::hooks::has_on_disconnect_v<test_hooks> &&
              mb::hooks::has_on_subscribe_v<test_hooks>);

// Hook names are found apart from signatures: a member named like a hook that cannot be called as
// documented is reported (check_hooks fails to compile), never skipped.
namespace hd = mb::hooks::detail;
struct publish_hook_by_pointer {
  bool authorize_publish(const mb::hooks::client_info&, mb::message_ptr);  // the message as message_ptr
};
struct connect_hook_overloads {
  void on_connect(int);
  void on_connect(const mb::hooks::client_info&, int);
};
struct private_publish_hook {
 private:
  bool authorize_publish(const mb::hooks::client_info&, const mb::message&);
};
struct publish_hook_by_client_id {  // the signature before hooks got a client_info
  bool authorize_publish(std::string_view, const mb::message&);
};
struct authenticate_later {
  void authenticate(const mb::hooks::connect_info&, mb::hooks::auth_reply);
};
struct connect_hook_data_member {
  int on_connect = 0;
};
struct intercept_by_value {
  void intercept(std::string_view, mb::message_ptr);  // could not replace or drop the message
};
struct subscribe_hook_template {
  template <class... Args>
  void on_subscribe(Args&&...);
};
struct redirect_to_string {  // the reference alone, without saying whether the move is for good
  std::optional<std::string> redirect(const mb::hooks::connect_info&);
};
struct inherited_hooks : test_hooks {};
struct final_hooks final {};

static_assert(hd::declares<hd::names_authorize_publish, publish_hook_by_pointer>::value &&
              !hd::accepts_authorize_publish<publish_hook_by_pointer>::value);
static_assert(hd::declares<hd::names_on_connect, connect_hook_overloads>::value &&
              !hd::accepts_on_connect<connect_hook_overloads>::value);
static_assert(hd::declares<hd::names_authorize_publish, private_publish_hook>::value &&
              !hd::accepts_authorize_publish<private_publish_hook>::value);
static_assert(hd::declares<hd::names_on_connect, connect_hook_data_member>::value &&
              !hd::accepts_on_connect<connect_hook_data_member>::value);
static_assert(hd::declares<hd::names_intercept, intercept_by_value>::value && !hd::accepts_intercept<intercept_by_value>::value);
static_assert(hd::declares<hd::names_authorize_publish, publish_hook_by_client_id>::value &&
              !hd::accepts_authorize_publish<publish_hook_by_client_id>::value);
static_assert(hd::declares<hd::names_redirect, redirect_to_string>::value && !hd::accepts_redirect<redirect_to_string>::value);
static_assert(!mb::hooks::has_redirect_v<test_hooks> && !hd::declares<hd::names_redirect, test_hooks>::value);
// The two forms of authenticate: either is a hook, and only hooks that take a client_info make
// connections keep one.
static_assert(mb::hooks::has_authenticate_later_v<authenticate_later> && !mb::hooks::has_authenticate_v<authenticate_later>);
static_assert(mb::hooks::has_authenticate_v<test_hooks> && !mb::hooks::has_authenticate_later_v<test_hooks>);
static_assert(mb::hooks::needs_client_info_v<authenticate_later> && mb::hooks::needs_client_info_v<test_hooks> &&
              !mb::hooks::needs_client_info_v<empty_hooks> && !mb::hooks::needs_client_info_v<mb::hooks::none>);
static_assert(hd::accepts_on_subscribe<subscribe_hook_template>::value && mb::hooks::has_on_subscribe_v<subscribe_hook_template>);
static_assert(mb::hooks::has_authenticate_v<inherited_hooks> && mb::hooks::has_on_subscribe_v<inherited_hooks>);
// Names absent: nothing declared, nothing reported.
static_assert(!hd::declares<hd::names_authenticate, empty_hooks>::value &&
              !hd::declares<hd::names_on_connect, publish_hook_by_pointer>::value);
static_assert(!hd::searchable<final_hooks> && !hd::searchable<int> && hd::searchable<mb::hooks::none>);

// The storage contract: a durable flag known at compile time.
struct durable_as_int {
  static constexpr int durable = 1;
};
struct durable_at_run_time {
  static bool durable;
};
static_assert(mb::storage::detail::check_storage<mb::storage::memory>());
static_assert(!mb::storage::contract::has_durable<durable_as_int> && !mb::storage::contract::has_durable<durable_at_run_time>);
#if MQTTBROKER_HAS_CONCEPTS
static_assert(mb::storage_policy<mb::storage::memory> && !mb::storage_policy<empty_hooks>);
#endif

}  // namespace

TEST_CASE("over TCP a broker runs on an io_context's executor or a strand of one, and refuses others at construction",
          "[broker][executor]") {
  // TCP sockets use the io_context's own executor type (smaller than any_io_executor), so the
  // broker looks for an io_context behind the host's executor.
  asio::io_context io;
  CHECK_NOTHROW(mb::broker<>(io));
  CHECK_NOTHROW(mb::broker<>(asio::any_io_executor(io.get_executor())));
  CHECK_NOTHROW(mb::broker<>(asio::any_io_executor(asio::make_strand(io))));
  asio::thread_pool pool(1);
  CHECK_THROWS_AS(mb::broker<>(asio::any_io_executor(pool.get_executor())), std::invalid_argument);
  // The in-memory transport's streams take any executor.
  CHECK_NOTHROW(mb::broker<mem_policies>(asio::any_io_executor(pool.get_executor())));
  pool.join();
}

TEST_CASE("a broker with an empty hooks struct works (its size is pinned by a static_assert above)", "[broker][hooks]") {
  harness<empty_hooks_mem_policies> h;
  client& c = h.connected("plain");
  h.subscribe(c, "t", qos::at_most_once);
  h.broker.publish("t", "x");
  h.settle();
  CHECK(c.publishes().size() == 1);
}

TEST_CASE("authenticate refusals map to the CONNACK code of the client's version", "[broker][hooks][MQTT-3.2.2-5]") {
  hook_log log;
  harness<hooked_policies> h({}, test_hooks{&log});
  struct expectation {
    protocol_version v;
    const char* id;
    std::optional<std::string_view> user;
    std::uint8_t code;
  };
  const expectation cases[] = {
      {protocol_version::v3_1_1, "someone", std::string_view("wrong"), 4},
      {protocol_version::v3_1_1, "banned", std::nullopt, 5},
      {protocol_version::v5, "someone", std::string_view("wrong"), 0x86},
      {protocol_version::v5, "banned", std::nullopt, 0x87},
  };
  for (const expectation& e : cases) {
    client& c = h.add(e.v);
    c.connect(e.id, true, std::nullopt, e.user);
    h.settle();
    const rx ack = c.pop(CONNACK);
    CHECK(ack.code == e.code);
    CHECK_FALSE(ack.session_present);  // [MQTT-3.2.2-4]
    CHECK(c.closed());
  }
  CHECK(log.connects.empty());
  CHECK(h.broker.stats().sessions == 0);
  h.connected("welcome");
  CHECK(log.connects == std::vector<std::string>{"welcome"});
}

TEST_CASE("authorize_publish and authorize_subscribe refuse; intercept renames or drops", "[broker][hooks]") {
  hook_log log;
  harness<hooked_policies> h({}, test_hooks{&log});
  client& sub = h.connected("sub");
  sub.subscribe(1, {{"secret/#", qos::at_least_once}, {"renamed/#", qos::at_least_once}, {"#", qos::at_least_once}});
  h.settle();
  CHECK(sub.pop(SUBACK).codes == std::vector<std::uint8_t>{0x80, 1, 1});
  CHECK(log.subscribes == std::vector<std::string>{"sub:renamed/#", "sub:#"});

  client& pub = h.connected("pub");
  pub.publish("secret/plans", "no", qos::at_least_once, 1);
  pub.publish("drop/me", "no", qos::at_least_once, 2);
  pub.publish("rename/x", "yes", qos::at_least_once, 3);
  h.settle();
  CHECK(pub.pop(PUBACK).id == 1);
  CHECK(pub.pop(PUBACK).id == 2);
  CHECK(pub.pop(PUBACK).id == 3);
  CHECK(h.broker.stats().publishes_denied == 1);
  const auto got = sub.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].topic == "renamed/x");
  CHECK(got[0].payload == "yes");

  // 5.0 hears the refusal.
  client& pub5 = h.connected("pub5", true, protocol_version::v5);
  pub5.publish("secret/plans", "no", qos::at_least_once, 4);
  h.settle();
  const rx ack = pub5.pop(PUBACK);
  CHECK(ack.code == static_cast<std::uint8_t>(reason_code::not_authorized));
}

TEST_CASE("connect and disconnect events say whether the end was graceful", "[broker][hooks]") {
  hook_log log;
  harness<hooked_policies> h({}, test_hooks{&log});
  client& a = h.connected("a");
  client& b = h.connected("b");
  a.disconnect();
  b.close();
  h.settle();
  CHECK(log.connects == std::vector<std::string>{"a", "b"});
  REQUIRE(log.disconnects.size() == 2);
  CHECK(log.disconnects[0] == std::make_pair(std::string("a"), true));
  CHECK(log.disconnects[1] == std::make_pair(std::string("b"), false));
}

namespace {

/// What a hook saw of a client, copied (the views live for the call only).
struct seen_client {
  std::string hook;
  std::string client_id;
  std::optional<std::string> username;
  protocol_version version;
  std::string peer_address;
  std::uint16_t peer_port;
  std::size_t listener;
  std::string transport;
  std::uint16_t listener_port;
};

struct identity_hooks {
  std::vector<seen_client>* seen = nullptr;
  void note(const char* hook, const mb::hooks::client_info& c) {
    REQUIRE(c.listener != nullptr);
    seen->push_back(seen_client{hook, std::string(c.client_id),
                                c.username ? std::optional<std::string>(std::string(*c.username)) : std::nullopt,
                                c.version, std::string(c.peer_address), c.peer_port, c.listener->index,
                                std::string(c.listener->transport), c.listener->port});
  }
  mb::hooks::auth_result authenticate(const mb::hooks::connect_info& c) {
    note("authenticate", c);
    return c.password && *c.password == "secret" ? mb::hooks::auth_result::accept
                                                  : mb::hooks::auth_result::bad_credentials;
  }
  bool authorize_publish(const mb::hooks::client_info& c, const mb::message&) {
    note("authorize_publish", c);
    return c.username && *c.username == "writer";
  }
  bool authorize_subscribe(const mb::hooks::client_info& c, std::string_view, qos) {
    note("authorize_subscribe", c);
    return true;
  }
  void on_connect(const mb::hooks::client_info& c) { note("on_connect", c); }
  void on_disconnect(const mb::hooks::client_info& c, bool) { note("on_disconnect", c); }
};
struct identity_policies : mb::default_policies {
  using hooks = identity_hooks;
};

}  // namespace

TEST_CASE("hooks see who the client is: username, version, peer address and port, listener and transport",
          "[broker][hooks][transport]") {
  using tcp_client = basic_client<asio::ip::tcp::socket>;
  std::vector<seen_client> seen;
  asio::io_context io;
  mb::broker<identity_policies> b(io, {}, identity_hooks{&seen});
  b.listen({"127.0.0.1", 0});
  const std::string mem_listener = next_listener_name();
  b.listen<memory>(memory::listen_options(mem_listener));
  b.start();
  CHECK(b.listener_info(0).index == 0);
  CHECK(b.listener_info(0).transport == "tcp");
  CHECK(b.listener_info(0).port == b.local_port(0));
  CHECK(b.listener_info(1).transport == "memory");
  auto wait_for = [&io](auto ready) { run_io_until(io, ready); };

  asio::ip::tcp::socket s(io);
  s.connect({asio::ip::make_address("127.0.0.1"), b.local_port(0)});
  const std::uint16_t tcp_port = s.local_endpoint().port();
  tcp_client t(std::move(s), protocol_version::v3_1_1);
  t.set_password("secret");
  t.connect("over-tcp", true, std::nullopt, std::string_view("writer"));
  wait_for([&] { return t.pending() == 1; });
  REQUIRE(t.pop(CONNACK).code == 0);
  t.publish("a", "allowed for writer", qos::at_least_once, 1);
  wait_for([&] { return t.pending() == 1; });
  CHECK(t.pop(PUBACK).id == 1);

  client m(io, mem_listener, protocol_version::v5);
  m.set_password("secret");
  m.connect("over-memory", true, std::nullopt, std::string_view("reader"));
  wait_for([&] { return m.pending() == 1; });
  REQUIRE(m.pop(CONNACK).code == 0);
  m.subscribe(1, "a", qos::at_least_once);
  m.publish("a", "refused for reader", qos::at_least_once, 2);
  wait_for([&] { return m.pending() == 2; });
  CHECK(m.pop(SUBACK).id == 1);
  CHECK(m.pop(PUBACK).code == static_cast<std::uint8_t>(reason_code::not_authorized));
  m.disconnect();
  wait_for([&] { return m.closed(); });

  client wrong(io, mem_listener, protocol_version::v3_1_1);
  wrong.set_password("guess");
  wrong.connect("guesser", true, std::nullopt, std::string_view("writer"));
  wait_for([&] { return wrong.pending() == 1; });
  CHECK(wrong.pop(CONNACK).code == 4);

  std::vector<std::string> order;
  for (const seen_client& c : seen) {
    order.push_back(c.hook + " " + c.client_id);
    CHECK(c.username == std::optional<std::string>(c.client_id == "over-memory" ? "reader" : "writer"));
    if (c.client_id == "over-tcp") {
      CHECK(c.version == protocol_version::v3_1_1);
      CHECK(c.peer_address == "127.0.0.1");
      CHECK(c.peer_port == tcp_port);
      CHECK(c.listener == 0);
      CHECK(c.transport == "tcp");
      CHECK(c.listener_port == b.local_port(0));
    } else {
      CHECK(c.version == (c.client_id == "over-memory" ? protocol_version::v5 : protocol_version::v3_1_1));
      CHECK(c.peer_address.empty());  // the in-memory transport has no addresses
      CHECK(c.peer_port == 0);
      CHECK(c.listener == 1);
      CHECK(c.transport == "memory");
    }
  }
  CHECK(order == std::vector<std::string>{"authenticate over-tcp", "on_connect over-tcp", "authorize_publish over-tcp",
                                          "authenticate over-memory", "on_connect over-memory",
                                          "authorize_subscribe over-memory", "authorize_publish over-memory",
                                          "on_disconnect over-memory", "authenticate guesser"});
  bool stopped = false;
  b.async_stop([&](std::error_code ec) { stopped = !ec; });
  wait_for([&] { return stopped; });
}

TEST_CASE("the host publishes with 5.0 properties; 5.0 and in-process subscribers get them, 3.1.1 ones the payload",
          "[broker][v5][inprocess]") {
  harness<> h;
  client& v5 = h.connected("v5", true, protocol_version::v5);
  client& v3 = h.connected("v3");
  CHECK(h.subscribe(v5, "req/#", qos::at_least_once) == std::vector<std::uint8_t>{1});
  CHECK(h.subscribe(v3, "req/#", qos::at_least_once) == std::vector<std::uint8_t>{1});
  std::vector<std::string> seen;
  h.broker.subscribe("req/#", [&](const mb::message_ptr& m) {
    for (const codec::property& p : m->properties())
      seen.push_back(p.id == codec::property_id::user_property ? std::string(p.key) + "=" + std::string(p.value)
                                                               : std::string(p.value));
  });
  mb::message_properties props;
  props.response_topic = std::string_view("reply/42");
  props.correlation_data = std::string_view("\x01\x02", 2);
  props.user_properties = {{"b", "2"}, {"a", "1"}, {"b", "3"}};  // order and repeats kept
  std::error_code ec;
  CHECK(h.broker.publish("req/x", "ask", qos::at_least_once, false, props, &ec) == 3);
  CHECK_FALSE(ec);
  h.settle();
  const auto got5 = v5.publishes();
  REQUIRE(got5.size() == 1);
  CHECK(got5[0].response_topic == "reply/42");
  CHECK(got5[0].correlation_data == std::string("\x01\x02", 2));
  CHECK(got5[0].user_properties ==
        std::vector<std::pair<std::string, std::string>>{{"b", "2"}, {"a", "1"}, {"b", "3"}});
  const auto got3 = v3.publishes();
  REQUIRE(got3.size() == 1);
  CHECK(got3[0].payload == "ask");
  CHECK(seen == std::vector<std::string>{"reply/42", std::string("\x01\x02", 2), "b=2", "a=1", "b=3"});

  // Refused, and nothing sent: a Response Topic with a wildcard, a user property that is not UTF-8.
  mb::message_properties bad;
  bad.response_topic = std::string_view("reply/+");
  CHECK(h.broker.publish("req/x", "no", qos::at_most_once, false, bad, &ec) == 0);
  CHECK(ec);
  mb::message_properties bad_text;
  bad_text.user_properties = {{"k", "\xff"}};
  ec.clear();
  CHECK(h.broker.publish("req/x", "no", qos::at_most_once, false, bad_text, &ec) == 0);
  CHECK(ec);
  h.settle();
  CHECK(v5.publishes().empty());
  CHECK(seen.size() == 5);
}

// ---- flow control and limits

TEST_CASE("no more than max_inflight messages are unacknowledged; the rest follow acknowledgements in order",
          "[broker][flow][MQTT-4.6.0-6]") {
  mb::broker_options o;
  o.max_inflight = 2;
  harness<> h(o);
  client& slow = h.connected("slow");
  h.subscribe(slow, "f", qos::at_least_once);
  for (int i = 0; i < 5; ++i) h.broker.publish("f", std::to_string(i), qos::at_least_once);
  h.settle();
  std::vector<std::string> order;
  auto take = [&](std::size_t expected) {
    auto got = slow.publishes();
    REQUIRE(got.size() == expected);
    for (const rx& r : got) order.push_back(r.payload);
    return got;
  };
  auto batch = take(2);
  CHECK(batch[0].id != batch[1].id);
  slow.puback(batch[0].id);
  h.settle();
  auto next = take(1);
  slow.puback(batch[1].id);
  slow.puback(next[0].id);
  h.settle();
  auto rest = take(2);
  slow.puback(rest[0].id);
  slow.puback(rest[1].id);
  h.settle();
  take(0);
  CHECK(order == std::vector<std::string>{"0", "1", "2", "3", "4"});
}

TEST_CASE("a full session queue drops messages and counts them", "[broker][flow]") {
  mb::broker_options o;
  o.max_inflight = 1;
  o.max_queued_messages = 2;
  harness<> h(o);
  client& slow = h.connected("slow");
  h.subscribe(slow, "f", qos::at_least_once);
  for (int i = 0; i < 5; ++i) h.broker.publish("f", std::to_string(i), qos::at_least_once);
  h.settle();
  CHECK(h.broker.stats().messages_dropped == 2);  // one in flight, two queued, two dropped
  std::vector<std::string> order;
  for (int i = 0; i < 3; ++i) {
    auto got = slow.publishes();
    REQUIRE(got.size() == 1);
    order.push_back(got[0].payload);
    slow.puback(got[0].id);
    h.settle();
  }
  CHECK(slow.publishes().empty());
  CHECK(order == std::vector<std::string>{"0", "1", "2"});
}

// ---- stopping

TEST_CASE("async_stop completes and 5.0 clients hear DISCONNECT 0x8B", "[broker][stop]") {
  harness<> h;
  client& v5 = h.connected("v5", true, protocol_version::v5);
  client& v3 = h.connected("v3");
  CHECK(h.broker.stats().connections == 2);
  CHECK(h.stop());
  const rx d = v5.pop(DISCONNECT);
  CHECK(d.code == static_cast<std::uint8_t>(reason_code::server_shutting_down));
  CHECK(v5.closed());
  CHECK(v3.closed());
  CHECK(v3.empty());
  CHECK(h.broker.stats().connections == 0);
  // The listener is closed too.
  std::error_code ec;
  memory::connect(h.io.get_executor(), h.listener, ec);
  CHECK(ec == asio::error::connection_refused);
}

TEST_CASE("async_stop with no connections completes", "[broker][stop]") {
  harness<> h;
  CHECK(h.stop());
}

// Last in the file: with the bug it reproduces (a null session dereference) it ends the run.
TEST_CASE("packets still arriving on a taken-over connection are ignored, not applied to the session",
          "[broker][session][MQTT-3.1.4-2][MQTT-3.1.4-3]") {
  const protocol_version v = GENERATE(protocol_version::v3_1_1, protocol_version::v5);
  INFO("protocol level " << static_cast<int>(v));
  harness<> h;
  client& first = h.connected("racer", false, v);
  h.subscribe(first, "r", qos::exactly_once);
  h.broker.publish("r", "in flight", qos::at_least_once);
  h.settle();
  const rx m = first.pop(PUBLISH);

  // The new CONNECT and the old connection's packets reach the broker in the same turn: the
  // takeover comes first, so what follows on the old connection belongs to a closing connection
  // whose session has moved (5.0 still has to write DISCONNECT 0x8E before it closes).
  client& second = h.add(v);
  h.settle();  // accepted and reading
  second.connect("racer", false);
  first.puback(m.id);
  first.publish("r", "late", qos::exactly_once, 5);
  first.send(codec::pingreq{});
  h.settle();
  CHECK(first.closed());
  const rx ack = second.pop(CONNACK);
  CHECK(ack.session_present);
  // The session's message is still unacknowledged, so the new connection gets it again; the old
  // connection's late PUBLISH was not routed.
  const auto got = second.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "in flight");
  CHECK(got[0].dup);
  CHECK(got[0].id == m.id);
  second.puback(m.id);
  second.send(codec::pingreq{});
  h.settle();
  second.pop(PINGRESP);
  CHECK_FALSE(second.closed());
}

TEST_CASE("a wildcard subscription over tens of thousands of retained messages receives every one, paced by the window",
          "[broker][retain][flow][MQTT-3.3.1-6]") {
  harness<> h;
  constexpr int retained = 20'000;
  for (int i = 0; i < retained; ++i)
    h.broker.publish("storm/" + std::to_string(i / 100) + "/" + std::to_string(i), "r", qos::at_least_once, true);
  REQUIRE(h.broker.stats().retained_messages == static_cast<std::size_t>(retained));
  client& sub = h.connected("storm-sub");
  client& other_sub = h.connected("other-sub");
  client& other_pub = h.connected("other-pub");
  h.subscribe(other_sub, "live/#", qos::at_most_once);
  h.subscribe(sub, "storm/#", qos::at_least_once);  // the queue limit (1000) is far below 20,000
  std::set<std::string> topics;
  int rounds = 0;
  int live_seen = 0;
  while (topics.size() < static_cast<std::size_t>(retained)) {
    REQUIRE(++rounds < 10'000);
    auto got = sub.publishes();
    REQUIRE(!got.empty());
    CHECK(got.size() <= 32);  // never more unacknowledged than max_inflight
    for (const rx& r : got) {
      CHECK(r.retain);
      topics.insert(r.topic);
      sub.puback(r.id);
    }
    // Another client is served while the storm is under way.
    if (rounds % 50 == 0) {
      codec::publish p;
      p.topic = "live/x";
      p.payload = "y";
      other_pub.send(p);
    }
    h.settle();
    live_seen += static_cast<int>(other_sub.publishes().size());
  }
  CHECK(topics.size() == static_cast<std::size_t>(retained));
  CHECK(live_seen == rounds / 50);
  CHECK(h.broker.stats().messages_dropped == 0);
}

// ---- publisher pacing (flow control between a fast publisher and a slower subscriber)

namespace {

/// `n` QoS 1 PUBLISH packets to `topic`, payloads "0" to "n-1", encoded back to back.
std::string qos1_burst(const std::string& topic, int n) {
  std::string burst;
  for (int i = 0; i < n; ++i) {
    codec::publish p;
    p.topic = topic;
    const std::string payload = std::to_string(i);
    p.payload = payload;
    p.qos_level = qos::at_least_once;
    p.packet_id = static_cast<std::uint16_t>(i + 1);
    REQUIRE_FALSE(codec::encode(p, protocol_version::v3_1_1, burst));  // appends
  }
  return burst;
}

/// A publisher sends `n` QoS 1 messages at once to a subscriber whose in-flight window is small;
/// the subscriber acknowledges each batch it sees. Returns the payloads in arrival order.
template <class H>
std::vector<std::string> fast_publisher_slow_subscriber(H& h, int n) {
  client& sub = h.connected("sub");
  h.subscribe(sub, "p/t", qos::at_least_once);
  client& pub = h.connected("pub");
  pub.send_raw(qos1_burst("p/t", n));  // one write: the broker reads it all at once
  h.settle();
  std::vector<std::string> got;
  for (int round = 0; round < 10 * n && static_cast<int>(got.size()) < n; ++round) {
    auto batch = sub.publishes();
    if (batch.empty()) break;
    for (const rx& r : batch) {
      got.push_back(r.payload);
      sub.puback(r.id);
    }
    h.settle();
  }
  return got;
}

}  // namespace

TEST_CASE("a publisher is paced while its subscriber is behind: QoS 1 arrives whole and in order, nothing dropped",
          "[broker][flow][pacing][MQTT-4.6.0-6]") {
  mb::broker_options o;
  o.max_inflight = 2;
  o.max_queued_messages = 20;
  o.pacing_queued_messages = 8;
  harness<> h(o);
  const int n = 300;
  const auto got = fast_publisher_slow_subscriber(h, n);
  std::vector<std::string> expected;
  for (int i = 0; i < n; ++i) expected.push_back(std::to_string(i));
  CHECK(got == expected);  // [MQTT-4.6.0-6] in order, none lost, none twice
  const auto st = h.broker.stats();
  CHECK(st.messages_dropped == 0);
  CHECK(st.reader_pauses > 0);
}

TEST_CASE("without pacing the same load overflows the subscriber's queue (what pacing prevents)", "[broker][flow][pacing]") {
  mb::broker_options o;
  o.max_inflight = 2;
  o.max_queued_messages = 20;
  o.pace_publishers = false;
  harness<> h(o);
  const auto got = fast_publisher_slow_subscriber(h, 300);
  const auto st = h.broker.stats();
  CHECK(st.messages_dropped > 0);
  CHECK(got.size() + st.messages_dropped == 300);
  CHECK(st.reader_pauses == 0);
}

TEST_CASE("a subscriber that stops reading does not stall a publisher: after stuck_client_timeout its messages are dropped and counted",
          "[broker][flow][pacing]") {
  mb::broker_options o;
  o.max_inflight = 2;
  o.max_queued_messages = 20;
  o.pacing_queued_messages = 8;
  o.stuck_client_timeout = std::chrono::milliseconds(100);
  harness<> h(o);
  client& stuck = h.connected("stuck");
  h.subscribe(stuck, "p/t", qos::at_least_once);
  client& healthy = h.connected("healthy");
  h.subscribe(healthy, "p/t", qos::at_least_once);
  client& pub = h.connected("pub");
  const int n = 200;
  pub.send_raw(qos1_burst("p/t", n));
  // The healthy subscriber acknowledges everything it gets; the stuck one never does. The
  // sweep (twice a second) resumes a reader paused on the stuck client; the deadline only
  // bounds a failure, the assertions do not depend on timing.
  std::vector<std::string> got;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (static_cast<int>(got.size()) < n && std::chrono::steady_clock::now() < deadline) {
    h.io.run_for(std::chrono::milliseconds(20));
    for (const rx& r : healthy.publishes()) {
      got.push_back(r.payload);
      healthy.puback(r.id);
    }
  }
  h.settle();
  std::vector<std::string> expected;
  for (int i = 0; i < n; ++i) expected.push_back(std::to_string(i));
  CHECK(got == expected);
  const auto st = h.broker.stats();
  CHECK(st.reader_pauses > 0);
  // The stuck client holds two in flight and twenty queued; the rest was dropped for it alone.
  CHECK(st.messages_dropped == static_cast<std::uint64_t>(n - 2 - 20));
  CHECK(stuck.publishes().size() == 2);
}

TEST_CASE("large batches are written whole across many gather writes and short socket writes", "[broker][write]") {
  // Payloads above the inline limit are referenced, two buffers per message, so a batch spans
  // several writes of at most 64 buffers; the server end also takes at most 1000 bytes a write.
  asio::io_context io;
  const std::string listener = next_listener_name();
  mb::broker<mem_policies> b(io);
  mb::transport::memory_stream_limits lim;
  lim.max_write_size = 1000;
  b.listen(memory::listen_options(listener, lim));
  b.start();
  client sub(io, listener, protocol_version::v3_1_1);
  sub.connect("sub");
  for (int i = 0; i < 100; ++i) io.poll();
  io.restart();
  sub.subscribe(1, "w/#", qos::at_most_once);
  for (int i = 0; i < 100; ++i) io.poll();
  io.restart();
  REQUIRE(sub.pop().type == CONNACK);
  REQUIRE(sub.pop().type == SUBACK);
  const int n = 200;
  std::vector<std::string> sent;
  for (int i = 0; i < n; ++i) {
    std::string payload(600 + static_cast<std::size_t>(i % 7) * 100, static_cast<char>('a' + i % 26));
    payload += std::to_string(i);
    sent.push_back(payload);
    b.publish("w/" + std::to_string(i % 3), payload);
  }
  for (int i = 0; i < 100'000 && sub.pending() < static_cast<std::size_t>(n); ++i) {
    if (io.poll() == 0) break;
    io.restart();
  }
  auto got = sub.publishes();
  REQUIRE(got.size() == static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) CHECK(got[static_cast<std::size_t>(i)].payload == sent[static_cast<std::size_t>(i)]);
  bool stopped = false;
  b.async_stop([&](std::error_code) { stopped = true; });
  for (int i = 0; i < 100'000 && !stopped; ++i) {
    if (io.poll() == 0) break;
    io.restart();
  }
  CHECK(stopped);
}

// ---- time under the test's control (clock::manual): deadlines at their exact boundaries

TEST_CASE("clock::manual fires a timer when time reaches its expiry, in expiry order, and cancels as Asio does",
          "[clock]") {
  asio::io_context io;
  mb::clock::manual clk;
  const mb::clock::manual copy = clk;  // copies share one time
  auto a = clk.make_timer(io.get_executor());
  auto b = clk.make_timer(io.get_executor());
  std::vector<std::string> fired;
  // An io_context that ran out of work stays stopped until restarted.
  auto poll = [&io] {
    io.restart();
    io.poll();
  };
  a.expires_after(std::chrono::seconds(2));
  b.expires_after(std::chrono::seconds(1));
  a.async_wait([&](std::error_code ec) { fired.push_back(ec ? "a:" + ec.message() : "a"); });
  b.async_wait([&](std::error_code ec) { fired.push_back(ec ? "b:" + ec.message() : "b"); });
  REQUIRE(clk.next_expiry() == copy.steady_now() + std::chrono::seconds(1));

  clk.advance(std::chrono::milliseconds(999));
  poll();
  CHECK(fired.empty());
  clk.advance(std::chrono::seconds(5));  // both due: earliest expiry first
  poll();
  CHECK(fired == std::vector<std::string>{"b", "a"});
  CHECK_FALSE(clk.next_expiry());

  fired.clear();
  a.expires_after(std::chrono::seconds(1));
  a.async_wait([&](std::error_code ec) { fired.push_back(ec == asio::error::operation_aborted ? "aborted" : "other"); });
  CHECK(a.expires_after(std::chrono::seconds(1)) == 1);  // a new expiry cancels the pending wait
  poll();
  CHECK(fired == std::vector<std::string>{"aborted"});

  fired.clear();
  a.expires_after(std::chrono::seconds(0));
  a.async_wait([&](std::error_code ec) { fired.push_back(ec ? "error" : "at once"); });  // already due
  CHECK(fired.empty());  // posted, never run inside async_wait
  poll();
  CHECK(fired == std::vector<std::string>{"at once"});

  fired.clear();
  {
    auto c = clk.make_timer(io.get_executor());
    c.expires_after(std::chrono::hours(1));
    c.async_wait([&](std::error_code ec) { fired.push_back(ec == asio::error::operation_aborted ? "aborted" : "other"); });
  }  // destroyed with a wait pending
  poll();
  CHECK(fired == std::vector<std::string>{"aborted"});
  CHECK(copy.system_now() - mb::clock::manual().system_now() == std::chrono::seconds(5) + std::chrono::milliseconds(999));
}

namespace {
struct timed_policies : mem_policies {
  using clock = mb::clock::manual;
};
using timed = harness<timed_policies>;

/// A 5.0 client `id` with a will on will/<id> and the given Session Expiry and Will Delay,
/// connected, then gone without DISCONNECT.
void will_dropped(timed& h, const std::string& id, std::uint32_t session_expiry, std::uint32_t will_delay,
                  const std::string& payload) {
  client& c = h.add(protocol_version::v5);
  c.set_session_expiry(session_expiry);
  c.set_will_delay(will_delay);
  c.connect(id, true, will_spec{"will/" + id, payload});
  h.settle();
  REQUIRE(c.pop(CONNACK).code == 0);
  c.close();
}
}  // namespace

TEST_CASE("delayed wills: a later-armed earlier will goes out at its own time, and the next is armed after one fires",
          "[broker][time][will][MQTT-3.1.3-9]") {
  timed h;
  client& watcher = h.connected("watcher");
  CHECK(h.subscribe(watcher, "will/#", qos::at_most_once) == std::vector<std::uint8_t>{0});
  will_dropped(h, "slow", 60, 10, "slow");
  will_dropped(h, "fast", 60, 2, "fast");  // due before the will already armed
  h.advance(std::chrono::milliseconds(1999));
  CHECK(watcher.publishes().empty());
  h.advance(std::chrono::milliseconds(1));
  auto got = watcher.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "fast");
  h.advance(std::chrono::milliseconds(7999));
  CHECK(watcher.publishes().empty());
  h.advance(std::chrono::milliseconds(1));
  got = watcher.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "slow");
}

TEST_CASE("$SYS figures are published every sys_interval, not later", "[broker][time][sys]") {
  mb::broker_options o;
  o.sys_interval = std::chrono::seconds(2);
  timed h(o);
  client& c = h.connected("monitor");
  c.subscribe(1, "$SYS/broker/uptime", qos::at_most_once);
  h.settle();
  c.pop(SUBACK);
  c.publishes();  // a retained figure from the start, if any
  h.advance(std::chrono::milliseconds(1999));
  CHECK(c.publishes().empty());
  h.advance(std::chrono::milliseconds(1));
  CHECK(c.publishes().size() == 1);
  h.advance(std::chrono::seconds(2));
  CHECK(c.publishes().size() == 1);
}

TEST_CASE("$SYS carries Mosquitto's names for the figures a dashboard made for Mosquitto reads", "[broker][sys]") {
  mb::broker_options o;
  o.sys_interval = std::chrono::seconds(1);
  timed h(o);
  client& c = h.connected("monitor");
  client& gone = h.connected("parked", false);  // a persistent session, its client gone
  gone.close();
  c.subscribe(1, "$SYS/broker/#", qos::at_most_once);
  h.settle();
  c.pop(SUBACK);
  c.publishes();
  h.advance(std::chrono::seconds(1));
  std::map<std::string, std::string> figures;
  for (const rx& p : c.publishes()) figures[p.topic] = p.payload;
  for (const char* name : {"version", "uptime", "clients/connected", "clients/active", "clients/disconnected",
                           "clients/inactive", "clients/total", "clients/expired", "messages/received", "messages/sent",
                           "messages/dropped", "publish/messages/received", "publish/messages/sent",
                           "publish/messages/dropped", "retained messages/count", "bytes/received", "bytes/sent",
                           "subscriptions/count", "store/messages/count", "store/messages/bytes", "messages/stored",
                           "load/messages/received/1min", "load/messages/sent/5min", "load/bytes/received/15min",
                           "load/bytes/sent/1min", "load/connections/1min"}) {
    INFO(name);
    CHECK(figures.count(std::string("$SYS/broker/") + name) == 1);
  }
  CHECK(figures["$SYS/broker/clients/connected"] == "1");
  CHECK(figures["$SYS/broker/clients/disconnected"] == "1");
  CHECK(figures["$SYS/broker/clients/total"] == "2");
  CHECK(figures["$SYS/broker/subscriptions/count"] == "1");
  CHECK(std::stoull(figures["$SYS/broker/bytes/received"]) > 0);

  // Load: per minute, averaged. 60 PUBLISH in the next second are 3,600 a minute; after one
  // second the 1-minute average has moved 1 - e^(-1/60) of the way there.
  client& pub = h.connected("pub");
  for (int i = 0; i < 60; ++i) pub.publish("load/x", "m");
  h.settle();
  c.publishes();
  h.advance(std::chrono::seconds(1));
  figures.clear();
  for (const rx& p : c.publishes()) figures[p.topic] = p.payload;
  const double expected = 3600.0 * (1.0 - std::exp(-1.0 / 60.0));
  CHECK(std::stod(figures["$SYS/broker/load/messages/received/1min"]) == Approx(expected).epsilon(0.05));
  CHECK(std::stod(figures["$SYS/broker/load/messages/received/15min"]) < expected / 10);
}

TEST_CASE("Keep Alive: the server closes at exactly 1.5 times the interval of silence, not a tick before",
          "[broker][time][MQTT-3.1.2-24]") {
  const auto v = GENERATE(protocol_version::v3_1_1, protocol_version::v5);
  timed h;
  client& watcher = h.connected("watcher");
  h.subscribe(watcher, "will/#", qos::at_most_once);
  client& c = h.add(v);
  c.set_keep_alive(2);
  c.connect("ka", true, will_spec{"will/ka", "gone"});
  h.settle();
  REQUIRE(c.pop(CONNACK).code == 0);

  // A PINGREQ restarts the count.
  h.advance(std::chrono::milliseconds(2500));
  c.send(codec::pingreq{});
  h.settle();
  c.pop(PINGRESP);
  h.advance(std::chrono::milliseconds(2999));
  CHECK_FALSE(c.closed());
  CHECK(watcher.empty());
  h.advance(std::chrono::milliseconds(1));  // 3 s = 1.5 x 2 s after the PINGREQ
  CHECK(c.closed());
  if (v == protocol_version::v5) CHECK(c.pop(DISCONNECT).code == static_cast<std::uint8_t>(reason_code::keep_alive_timeout));
  CHECK(c.empty());  // 3.1.1 has no DISCONNECT from the server
  CHECK(h.broker.stats().keep_alive_timeouts == 1);
  // Not a DISCONNECT from the client: the will goes out [MQTT-3.1.2-8].
  const auto wills = watcher.publishes();
  REQUIRE(wills.size() == 1);
  CHECK(wills[0].topic == "will/ka");
}

TEST_CASE("Keep Alive 0 means no limit from the client; the server's max_keep_alive applies to 5.0 clients",
          "[broker][time][MQTT-3.1.2-24][MQTT-3.2.2-21]") {
  mb::broker_options o;
  o.max_keep_alive = 4;
  timed h(o);
  client& old = h.add(protocol_version::v3_1_1);
  old.connect("no-limit");  // Keep Alive 0
  client& v5 = h.add(protocol_version::v5);
  v5.connect("imposed");
  h.settle();
  REQUIRE(old.pop(CONNACK).code == 0);
  REQUIRE(v5.pop(CONNACK).code == 0);
  h.advance(std::chrono::milliseconds(5999));
  CHECK_FALSE(v5.closed());
  h.advance(std::chrono::milliseconds(1));  // 1.5 x the Server Keep Alive of 4 s
  CHECK(v5.closed());
  h.advance(std::chrono::hours(1));
  CHECK_FALSE(old.closed());  // 3.1.1 has no Server Keep Alive: 0 stays no limit
}

TEST_CASE("a connection without a complete CONNECT is closed at exactly connect_timeout", "[broker][time]") {
  mb::broker_options o;
  o.connect_timeout = std::chrono::seconds(2);
  timed h(o);
  client& silent = h.add();
  client& partial = h.add();
  partial.send_raw(std::string("\x10\x10\x00\x04MQTT", 8));  // a CONNECT cut short
  h.advance(std::chrono::milliseconds(1999));
  CHECK_FALSE(silent.closed());
  CHECK_FALSE(partial.closed());
  h.advance(std::chrono::milliseconds(1));
  CHECK(silent.closed());
  CHECK(partial.closed());
  CHECK(silent.empty());  // no CONNACK: nothing was asked
  CHECK(h.broker.stats().connect_timeouts == 2);
}

TEST_CASE("5.0 Will Delay: the will goes out when the delay has passed, not before", "[broker][time][will][v5][MQTT-3.1.2-8]") {
  timed h;
  client& watcher = h.connected("watcher");
  h.subscribe(watcher, "will/#", qos::at_most_once);
  will_dropped(h, "delayed", 60, 5, "late");
  h.advance(std::chrono::milliseconds(4999));
  CHECK(watcher.empty());
  h.advance(std::chrono::milliseconds(1));
  const auto wills = watcher.publishes();
  REQUIRE(wills.size() == 1);
  CHECK(wills[0].payload == "late");
  h.advance(std::chrono::minutes(2));  // and only once, the session's end included
  CHECK(watcher.empty());
}

TEST_CASE("5.0 Will Delay: a reconnect within the delay cancels the will", "[broker][time][will][v5][MQTT-3.1.3-9]") {
  timed h;
  client& watcher = h.connected("watcher");
  h.subscribe(watcher, "will/#", qos::at_most_once);
  will_dropped(h, "back", 60, 5, "late");
  h.advance(std::chrono::milliseconds(4999));
  client& again = h.add(protocol_version::v5);
  again.set_session_expiry(60);
  again.connect("back", false);
  h.settle();
  CHECK(again.pop(CONNACK).session_present);
  h.advance(std::chrono::minutes(5));
  CHECK(watcher.empty());
}

TEST_CASE("5.0 Will Delay longer than the session: the will goes out when the session ends",
          "[broker][time][will][v5][MQTT-3.1.2-8]") {
  timed h;
  client& watcher = h.connected("watcher");
  h.subscribe(watcher, "will/#", qos::at_most_once);
  will_dropped(h, "short", 3, 10, "end");
  h.advance(std::chrono::milliseconds(2999));
  CHECK(watcher.empty());
  h.advance(std::chrono::milliseconds(1));
  CHECK(watcher.publishes().size() == 1);
  h.advance(std::chrono::seconds(20));
  CHECK(watcher.empty());
}

TEST_CASE("5.0 Session Expiry: an offline session ends when its interval has passed, not before",
          "[broker][time][session][v5][MQTT-3.1.2-23]") {
  timed h;
  client& c = h.add(protocol_version::v5);
  c.set_session_expiry(10);
  c.connect("expiring", false);
  h.settle();
  REQUIRE(c.pop(CONNACK).code == 0);
  c.disconnect();
  h.settle();
  REQUIRE(c.closed());
  h.advance(std::chrono::milliseconds(9999));
  CHECK(h.broker.stats().sessions == 1);
  h.advance(std::chrono::milliseconds(1));
  CHECK(h.broker.stats().sessions == 0);
  CHECK(h.broker.stats().sessions_expired == 1);
  client& back = h.add(protocol_version::v5);
  back.set_session_expiry(10);
  back.connect("expiring", false);
  h.settle();
  CHECK_FALSE(back.pop(CONNACK).session_present);
}

TEST_CASE("5.0: a DISCONNECT's Session Expiry Interval replaces the CONNECT's", "[broker][time][session][v5]") {
  timed h;
  SECTION("shortened") {
    client& c = h.add(protocol_version::v5);
    c.set_session_expiry(100);
    c.connect("changed", false);
    h.settle();
    REQUIRE(c.pop(CONNACK).code == 0);
    c.disconnect(reason_code::normal_disconnection, 2);
    h.advance(std::chrono::milliseconds(1999));
    CHECK(h.broker.stats().sessions == 1);
    h.advance(std::chrono::milliseconds(1));
    CHECK(h.broker.stats().sessions == 0);
  }
  SECTION("set to 0: the session ends with the connection") {
    client& c = h.add(protocol_version::v5);
    c.set_session_expiry(100);
    c.connect("ended", false);
    h.settle();
    REQUIRE(c.pop(CONNACK).code == 0);
    c.disconnect(reason_code::normal_disconnection, 0);
    h.settle();
    CHECK(h.broker.stats().sessions == 0);
  }
  SECTION("a session that was to end with the connection cannot be extended") {
    client& c = h.add(protocol_version::v5);
    c.connect("cannot", true);  // Session Expiry 0
    h.settle();
    REQUIRE(c.pop(CONNACK).code == 0);
    c.disconnect(reason_code::normal_disconnection, 30);
    h.settle();
    CHECK(c.pop(DISCONNECT).code == static_cast<std::uint8_t>(reason_code::protocol_error));
    CHECK(c.closed());
    CHECK(h.broker.stats().sessions == 0);
  }
}

TEST_CASE("3.1.1: a persistent session is kept for persistent_session_expiry after its client left",
          "[broker][time][session]") {
  mb::broker_options o;
  o.persistent_session_expiry = std::chrono::seconds(5);
  timed h(o);
  client& c = h.connected("kept", false);
  h.subscribe(c, "t", qos::at_least_once);
  c.disconnect();
  h.advance(std::chrono::milliseconds(4999));
  CHECK(h.broker.stats().sessions == 1);
  h.advance(std::chrono::milliseconds(1));
  CHECK(h.broker.stats().sessions == 0);
}

// ---- asynchronous authentication

namespace {

/// An authenticate that asks "elsewhere": it answers through its auth_reply after a timer of the
/// broker's (manual) clock, as a host would after a database or a remote service. The user name
/// says what it answers and after how many milliseconds: "ok:100", "bad:50", "never"; without
/// one it accepts inside the call.
struct async_auth_hooks {
  struct shared {
    mb::clock::manual clock;
    asio::io_context* io = nullptr;
    std::vector<std::string> asked;
    std::vector<mb::hooks::auth_reply> kept;  // "never": held, not answered
    std::vector<std::string> connected;
    std::vector<std::pair<std::string, reason_code>> refused;
  };
  shared* s = nullptr;

  void authenticate(const mb::hooks::connect_info& c, mb::hooks::auth_reply reply) {
    s->asked.emplace_back(c.client_id);
    const std::string user(c.username.value_or(""));
    if (user.empty()) return reply(mb::hooks::auth_result::accept);  // answered inside the call
    if (user == "never") {
      s->kept.push_back(std::move(reply));
      return;
    }
    const auto colon = user.find(':');
    const auto answer = user.substr(0, colon) == "ok" ? mb::hooks::auth_result::accept
                                                      : mb::hooks::auth_result::bad_credentials;
    auto timer = std::make_shared<mb::clock::manual::timer_type>(s->clock.make_timer(s->io->get_executor()));
    timer->expires_after(std::chrono::milliseconds(std::stoi(user.substr(colon + 1))));
    timer->async_wait([timer, reply = std::move(reply), answer](std::error_code ec) mutable {
      if (!ec) reply(answer);
    });
  }
  void on_connect(const mb::hooks::client_info& c) { s->connected.emplace_back(c.client_id); }
  void on_connect_refused(const mb::hooks::connect_info& c, reason_code why) { s->refused.emplace_back(c.client_id, why); }
};
struct async_auth_policies : timed_policies {
  using hooks = async_auth_hooks;
};

/// A harness whose hooks share its clock and io_context.
struct async_auth_harness {
  explicit async_auth_harness(mb::broker_options o = {}) : h(std::move(o), async_auth_hooks{&state}) {}
  async_auth_hooks::shared state;
  harness<async_auth_policies> h;
  // The hooks need the harness's clock and io_context, made after them: set before any CONNECT.
  bool wired = (state.clock = h.clock, state.io = &h.io, true);
};

}  // namespace

TEST_CASE("an asynchronous authenticate answers after a timer while others are served; what followed its CONNECT waits",
          "[broker][hooks]") {
  async_auth_harness a;
  auto& h = a.h;
  client& early = h.add(protocol_version::v5);
  // Sent right behind the CONNECT, in the same read: held until the CONNACK, then handled in order.
  early.cork();
  early.connect("early", true, std::nullopt, std::string_view("ok:100"));
  early.subscribe(1, "news", qos::at_least_once);
  early.publish("news", "own message", qos::at_least_once, 2);
  early.uncork();
  h.settle();
  CHECK(a.state.asked == std::vector<std::string>{"early"});
  CHECK(early.empty());

  // Another client is served meanwhile: it connects, subscribes and hears a message.
  client& other = h.add();
  other.connect("other", true, std::nullopt, std::string_view("ok:10"));
  h.advance(std::chrono::milliseconds(10));
  REQUIRE(other.pop(CONNACK).code == 0);
  CHECK(h.subscribe(other, "news", qos::at_most_once) == std::vector<std::uint8_t>{0});
  h.broker.publish("news", "from the host");
  h.settle();
  CHECK(other.publishes().size() == 1);
  CHECK(early.empty());  // still waiting: no CONNACK, its SUBSCRIBE not handled

  h.advance(std::chrono::milliseconds(89));  // 99 ms after the early CONNECT
  CHECK(early.empty());
  CHECK(a.state.connected == std::vector<std::string>{"other"});
  h.advance(std::chrono::milliseconds(1));
  REQUIRE(early.pending() == 4);
  CHECK(early.pop(CONNACK).code == 0);
  CHECK(early.pop(SUBACK).id == 1);
  // Its own message reaches it through the subscription made just before (No Local is 0).
  rx first = early.pop();
  rx second = early.pop();
  if (first.type == PUBLISH) std::swap(first, second);
  CHECK(first.type == PUBACK);
  CHECK(first.id == 2);
  CHECK(second.type == PUBLISH);
  CHECK(second.payload == "own message");
  CHECK(other.publishes().size() == 1);  // "other" subscribed to news too
  CHECK(a.state.connected == std::vector<std::string>{"other", "early"});
}

TEST_CASE("an asynchronous refusal is the CONNACK of the client's version, and what followed the CONNECT is dropped",
          "[broker][hooks][MQTT-3.1.4-5][MQTT-3.1.4-6][MQTT-3.2.2-5]") {
  async_auth_harness a;
  auto& h = a.h;
  client& listener = h.connected("listener");
  CHECK(h.subscribe(listener, "#", qos::at_most_once) == std::vector<std::uint8_t>{0});
  const protocol_version v = GENERATE(protocol_version::v3_1_1, protocol_version::v5);
  client& refused = h.add(v);
  refused.cork();
  refused.connect("refused", true, std::nullopt, std::string_view("bad:50"));
  refused.publish("leak", "must not be routed");
  refused.uncork();
  h.advance(std::chrono::milliseconds(50));
  const rx ack = refused.pop(CONNACK);
  CHECK(ack.code == (v == protocol_version::v5 ? 0x86 : 4));
  CHECK(refused.closed());
  // 3.1.1 [MQTT-3.1.4-5], 5.0 [MQTT-3.1.4-6]: nothing after a refused CONNECT is acted on.
  CHECK(listener.publishes().empty());
  REQUIRE(a.state.refused.size() == 1);
  CHECK(a.state.refused[0] == std::make_pair(std::string("refused"), reason_code::bad_user_name_or_password));
  CHECK(h.broker.stats().sessions == 1);
}

TEST_CASE("an authentication that never answers ends at the CONNECT timeout; a later answer is ignored",
          "[broker][hooks]") {
  mb::broker_options o;
  o.connect_timeout = std::chrono::seconds(2);
  async_auth_harness a(o);
  auto& h = a.h;
  client& c = h.add(protocol_version::v5);
  c.connect("waits", true, std::nullopt, std::string_view("never"));
  h.advance(std::chrono::milliseconds(1999));
  CHECK(c.empty());
  CHECK_FALSE(c.closed());
  h.advance(std::chrono::milliseconds(1));
  // At the next sweep (it ticks every 500 ms): closed without a word, as any CONNECT timeout.
  h.advance(std::chrono::milliseconds(500));
  CHECK(c.closed());
  CHECK(c.empty());
  CHECK(h.broker.stats().connect_timeouts == 1);
  REQUIRE(a.state.kept.size() == 1);
  a.state.kept[0](mb::hooks::auth_result::accept);  // too late: the client is gone
  h.settle();
  CHECK(a.state.connected.empty());
  CHECK(h.broker.stats().sessions == 0);
  // A reply dropped unanswered leaves its client to the timeout too; nothing else happens.
  client& d = h.add();
  d.connect("dropped", true, std::nullopt, std::string_view("never"));
  h.settle();
  a.state.kept.clear();
  h.advance(std::chrono::milliseconds(2500));
  CHECK(d.closed());
  CHECK(h.broker.stats().connect_timeouts == 2);
}

TEST_CASE("an asynchronous authenticate may answer from another thread", "[broker][hooks][threads]") {
  async_auth_harness a;
  auto& h = a.h;
  client& c = h.add();
  c.connect("from-thread", true, std::nullopt, std::string_view("never"));
  h.settle();
  REQUIRE(a.state.kept.size() == 1);
  std::thread answer([reply = std::move(a.state.kept[0])]() mutable { reply(mb::hooks::auth_result::accept); });
  answer.join();
  h.settle();
  CHECK(c.pop(CONNACK).code == 0);
  CHECK(a.state.connected == std::vector<std::string>{"from-thread"});
}

// ---- several transports in one broker

TEST_CASE("one broker serves a TCP and an in-memory listener from one session table and one router",
          "[broker][transport][MQTT-3.1.4-2][MQTT-4.4.0-1]") {
  using tcp_client = basic_client<asio::ip::tcp::socket>;
  asio::io_context io;
  mb::broker<> b(io);  // TCP by default
  b.listen({"127.0.0.1", 0});
  const std::string mem_listener = next_listener_name();
  b.listen<memory>(memory::listen_options(mem_listener));
  CHECK(b.local_port(1) == 0);  // the memory transport has no ports
  b.start();

  auto wait_for = [&io](auto ready) { run_io_until(io, ready); };
  auto over_tcp = [&] {
    asio::ip::tcp::socket s(io);
    s.connect({asio::ip::make_address("127.0.0.1"), b.local_port(0)});
    return std::make_unique<tcp_client>(std::move(s), protocol_version::v3_1_1);
  };

  auto t = over_tcp();
  t->connect("via-tcp", false);
  wait_for([&] { return t->pending() == 1; });
  REQUIRE(t->pop(CONNACK).code == 0);
  t->subscribe(1, "to-tcp/#", qos::at_least_once);
  wait_for([&] { return t->pending() == 1; });
  t->pop(SUBACK);

  auto m = std::make_unique<client>(io, mem_listener, protocol_version::v5);
  m->set_session_expiry(60);
  m->connect("via-mem", false);
  wait_for([&] { return m->pending() == 1; });
  REQUIRE(m->pop(CONNACK).code == 0);
  m->subscribe(1, "to-mem/#", qos::at_least_once);
  wait_for([&] { return m->pending() == 1; });
  m->pop(SUBACK);
  CHECK(b.stats().connections == 2);

  // Messages cross between the transports both ways.
  m->publish("to-tcp/a", "from memory", qos::at_least_once, 10);
  wait_for([&] { return m->pending() == 1 && t->pending() == 1; });
  CHECK(m->pop(PUBACK).id == 10);
  const rx unacked = t->pop(PUBLISH);  // left unacknowledged: owed again after the takeover
  CHECK(unacked.payload == "from memory");
  t->publish("to-mem/b", "from tcp", qos::at_least_once, 20);
  wait_for([&] { return t->pending() == 1 && m->pending() == 1; });
  CHECK(t->pop(PUBACK).id == 20);
  const rx to_mem = m->pop(PUBLISH);
  CHECK(to_mem.payload == "from tcp");
  m->puback(to_mem.id);

  // A memory client takes over the TCP client's session: same subscriptions, the unacknowledged
  // message again with DUP; the TCP connection is closed.
  auto m2 = std::make_unique<client>(io, mem_listener, protocol_version::v3_1_1);
  m2->connect("via-tcp", false);
  wait_for([&] { return m2->pending() == 2 && t->closed(); });
  CHECK(m2->pop(CONNACK).session_present);
  const rx again = m2->pop(PUBLISH);
  CHECK(again.dup);
  CHECK(again.id == unacked.id);
  CHECK(again.payload == "from memory");
  m2->puback(again.id);

  // A TCP client takes over the memory client's session.
  auto t2 = over_tcp();
  t2->connect("via-mem", false);
  wait_for([&] { return t2->pending() == 1 && m->closed(); });
  CHECK(t2->pop(CONNACK).session_present);
  m2->publish("to-mem/c", "still routed", qos::at_most_once);
  wait_for([&] { return t2->pending() == 1; });
  CHECK(t2->pop(PUBLISH).payload == "still routed");
  CHECK(b.stats().sessions == 2);

  bool stopped = false;
  b.async_stop([&](std::error_code ec) { stopped = !ec; });
  wait_for([&] { return stopped; });
}

// ---- a transport's optional abilities: a handshake before the first read, a graceful shutdown

namespace {

/// What the layered test transports below were asked to do, in order (a repeated event once), and
/// the handshake a test completes by hand. Tests using it run one broker at a time.
struct layer_log {
  std::vector<std::string> events;
  std::function<void(std::error_code)> finish_handshake;
  bool answer_shutdown = true;  // false: the peer never answers, the shutdown waits until the close

  static layer_log& get() {
    static layer_log l;
    return l;
  }
  void note(const std::string& e) {
    if (events.empty() || events.back() != e) events.push_back(e);
  }
};

/// Empties the log at both ends of a test. Declared after the harness, so a handshake the test
/// left pending lets go of its connection while the io_context still exists.
struct layer_log_scope {
  layer_log_scope() { reset(); }
  ~layer_log_scope() { reset(); }
  layer_log_scope(const layer_log_scope&) = delete;
  layer_log_scope& operator=(const layer_log_scope&) = delete;
  static void reset() {
    layer_log& l = layer_log::get();
    l.events.clear();
    l.finish_handshake = nullptr;
    l.answer_shutdown = true;
  }
};

/// `h(ec)` later, on the handler's executor, as an asynchronous operation completes.
template <class Handler>
void complete_later(const asio::any_io_executor& ex, std::shared_ptr<Handler> h, std::error_code ec) {
  asio::post(asio::get_associated_executor(*h, ex), [h, ec] { (*h)(ec); });
}

/// A memory stream under a stand-in for a layer such as TLS: it logs the reads and the close,
/// and closing it aborts a graceful shutdown still waiting, as closing a socket aborts its
/// operations.
class layered_stream {
 public:
  using executor_type = memory_stream::executor_type;
  explicit layered_stream(memory_stream s) : next(std::move(s)) {}

  executor_type get_executor() const { return next.get_executor(); }
  template <class Buffers, class Handler>
  void async_read_some(const Buffers& b, Handler&& h) {
    layer_log::get().note("read");
    next.async_read_some(b, std::forward<Handler>(h));
  }
  template <class Buffers, class Handler>
  void async_write_some(const Buffers& b, Handler&& h) {
    next.async_write_some(b, std::forward<Handler>(h));
  }
  void close(std::error_code& ec) {
    if (next.is_open()) layer_log::get().note("close");
    next.close(ec);
    if (auto abort = std::exchange(abort_shutdown, nullptr)) abort();
  }

  memory_stream next;
  std::function<void()> abort_shutdown;  // set while a shutdown waits for an answer
};

class layered_acceptor {
 public:
  explicit layered_acceptor(memory_acceptor a) : next_(std::move(a)) {}
  template <class Handler>
  void async_accept(const asio::any_io_executor& ex, Handler&& h) {
    next_.async_accept(ex, [h = std::forward<Handler>(h)](std::error_code ec, memory_stream s) mutable {
      h(ec, layered_stream(std::move(s)));
    });
  }
  void close(std::error_code& ec) { next_.close(ec); }
  bool is_open() const { return next_.is_open(); }
  memory_acceptor::endpoint local_endpoint(std::error_code& ec) const { return next_.local_endpoint(ec); }

 private:
  memory_acceptor next_;
};

/// What the layered transports take from the memory transport: listeners by name, so the
/// harness's memory clients connect to them.
struct layered_base {
  using stream_type = layered_stream;
  using acceptor_type = layered_acceptor;
  using listen_options = memory::listen_options;
  static acceptor_type make_acceptor(const asio::any_io_executor& ex, const listen_options& o, std::error_code& ec) {
    return acceptor_type(memory::make_acceptor(ex, o, ec));
  }
  static void prepare(stream_type&) {}
};

/// A handshake that ends when the test calls layer_log::finish_handshake, with its outcome.
struct handshaking : layered_base {
  static constexpr const char* name = "handshaking";
  template <class Handler>
  static void async_handshake(stream_type& s, Handler h) {
    layer_log::get().note("handshake");
    auto held = std::make_shared<Handler>(std::move(h));
    layer_log::get().finish_handshake = [ex = s.get_executor(), held](std::error_code ec) { complete_later(ex, held, ec); };
  }
};

/// A graceful shutdown whose last word is the two bytes of a PINGRESP (which the test client can
/// decode), standing in for TLS close_notify; or, when the peer is not to answer, one that waits
/// until the stream is closed.
struct closing_gracefully : layered_base {
  static constexpr const char* name = "closing-gracefully";
  template <class Handler>
  static void async_shutdown(stream_type& s, Handler h) {
    layer_log::get().note("shutdown");
    auto held = std::make_shared<Handler>(std::move(h));
    if (!layer_log::get().answer_shutdown) {
      s.abort_shutdown = [ex = s.get_executor(), held] { complete_later(ex, held, asio::error::operation_aborted); };
      return;
    }
    static const std::array<std::uint8_t, 2> last_word{0xD0, 0x00};
    asio::async_write(s.next, asio::buffer(last_word), [ex = s.get_executor(), held](std::error_code ec, std::size_t) {
      complete_later(ex, held, ec);
    });
  }
};

struct handshaking_policies : mem_policies {
  using transport = handshaking;
  using clock = mb::clock::manual;
};
struct graceful_policies : mem_policies {
  using transport = closing_gracefully;
  using clock = mb::clock::manual;
};

}  // namespace

TEST_CASE("a transport's handshake completes before the connection reads its first byte", "[broker][transport][handshake]") {
  static_assert(mb::transport::has_async_handshake_v<handshaking> && !mb::transport::has_async_shutdown_v<handshaking>);
  harness<handshaking_policies> h;
  layer_log_scope scope;
  layer_log& log = layer_log::get();
  client& c = h.add();
  c.connect("layered");
  h.settle();
  // Accepted and counted, the handshake under way, and the CONNECT not read.
  CHECK(log.events == std::vector<std::string>{"handshake"});
  CHECK(c.empty());
  CHECK(h.broker.stats().connections == 1);
  REQUIRE(log.finish_handshake);
  log.finish_handshake({});
  h.settle();
  CHECK(log.events == std::vector<std::string>{"handshake", "read"});
  CHECK(c.pop(CONNACK).code == 0);
  CHECK(h.subscribe(c, "after/handshake", qos::at_least_once) == std::vector<std::uint8_t>{1});
  CHECK(h.broker.stats().handshake_failures == 0);
}

TEST_CASE("a failed handshake closes the connection and is counted; nothing sent before it is decoded",
          "[broker][transport][handshake]") {
  harness<handshaking_policies> h;
  layer_log_scope scope;
  layer_log& log = layer_log::get();
  client& c = h.add();
  c.connect("refused-by-the-layer");
  h.settle();
  REQUIRE(log.finish_handshake);
  log.finish_handshake(make_error_code(asio::error::access_denied));
  h.settle();
  CHECK(c.closed());
  CHECK(c.empty());  // no CONNACK
  CHECK(log.events == std::vector<std::string>{"handshake", "close"});
  const auto st = h.broker.stats();
  CHECK(st.handshake_failures == 1);
  CHECK(st.connections == 0);
  CHECK(st.sessions == 0);
  CHECK(st.protocol_errors == 0);
}

TEST_CASE("the CONNECT timeout covers a handshake that does not end", "[broker][transport][handshake][time]") {
  mb::broker_options o;
  o.connect_timeout = std::chrono::seconds(2);
  harness<handshaking_policies> h(o);
  layer_log_scope scope;
  layer_log& log = layer_log::get();
  client& c = h.add();
  c.connect("slow-layer");
  h.advance(std::chrono::milliseconds(1999));
  CHECK_FALSE(c.closed());
  h.advance(std::chrono::milliseconds(1));
  CHECK(c.closed());
  CHECK(log.events == std::vector<std::string>{"handshake", "close"});
  auto st = h.broker.stats();
  CHECK(st.connect_timeouts == 1);
  CHECK(st.handshake_failures == 0);
  CHECK(st.connections == 0);
  // The handshake ending after the close changes nothing.
  REQUIRE(log.finish_handshake);
  log.finish_handshake({});
  h.settle();
  CHECK(log.events == std::vector<std::string>{"handshake", "close"});
}

TEST_CASE("a transport's graceful shutdown runs when the broker closes a connection, before the stream closes",
          "[broker][transport][shutdown]") {
  static_assert(mb::transport::has_async_shutdown_v<closing_gracefully> &&
                !mb::transport::has_async_handshake_v<closing_gracefully>);
  harness<graceful_policies> h;
  layer_log_scope scope;
  layer_log& log = layer_log::get();

  SECTION("after the client's DISCONNECT") {
    client& c = h.connected("polite");
    c.disconnect();
    h.settle();
    CHECK(log.events == std::vector<std::string>{"read", "shutdown", "close"});
    c.pop(PINGRESP);  // the shutdown's last word reached the client before the close
    CHECK(c.closed());
  }
  SECTION("when the broker stops, with a read pending") {
    client& c = h.connected("stopped", true, protocol_version::v5);
    CHECK(h.stop());
    CHECK(log.events == std::vector<std::string>{"read", "shutdown", "close"});
    CHECK(c.pop(DISCONNECT).code == static_cast<std::uint8_t>(reason_code::server_shutting_down));
    c.pop(PINGRESP);
    CHECK(c.closed());
  }
}

TEST_CASE("a graceful shutdown that the peer never answers is cut off after graceful_shutdown_limit, and does not hold up a stop",
          "[broker][transport][shutdown][time]") {
  harness<graceful_policies> h;
  layer_log_scope scope;
  layer_log& log = layer_log::get();
  log.answer_shutdown = false;
  client& c = h.connected("unanswered");
  CHECK(h.stop());  // the engine let go of the connection before its shutdown began
  CHECK(h.broker.stats().connections == 0);
  CHECK(log.events == std::vector<std::string>{"read", "shutdown"});
  CHECK_FALSE(c.closed());
  h.advance(mb::server::graceful_shutdown_limit - std::chrono::milliseconds(1));
  CHECK_FALSE(c.closed());
  h.advance(std::chrono::milliseconds(1));
  CHECK(c.closed());
  CHECK(log.events == std::vector<std::string>{"read", "shutdown", "close"});
}

// ---- what the README claims, each pinned at broker level (memory transport, no clock)

TEST_CASE("5.0 Retain Handling: 0 sends retained messages on every SUBSCRIBE, 1 only for a new subscription, 2 never",
          "[broker][retain][v5][MQTT-3.3.1-9][MQTT-3.3.1-10][MQTT-3.3.1-11]") {
  harness<> h;
  client& pub = h.connected("pub");
  pub.publish("r/1", "kept", qos::at_most_once, 0, true);
  h.settle();
  client& c = h.add(protocol_version::v5);
  c.connect("rh");
  h.settle();
  REQUIRE(c.pop(CONNACK).code == 0);
  auto retained_on = [&](std::uint16_t id, const std::string& filter, codec::retain_handling_option rh) {
    codec::subscribe_options o;
    o.max_qos = qos::at_most_once;
    o.retain_handling = rh;
    c.subscribe(id, filter, o);
    h.settle();
    c.pop(SUBACK);
    const auto got = c.publishes();
    for (const rx& m : got) CHECK(m.retain);
    return got.size();
  };
  using rh = codec::retain_handling_option;
  CHECK(retained_on(1, "r/#", rh::send) == 1);
  CHECK(retained_on(2, "r/#", rh::send) == 1);          // again on a repeated SUBSCRIBE [MQTT-3.3.1-9]
  CHECK(retained_on(3, "r/+", rh::send_if_new) == 1);   // new [MQTT-3.3.1-10]
  CHECK(retained_on(4, "r/+", rh::send_if_new) == 0);   // exists already
  CHECK(retained_on(5, "+/1", rh::dont_send) == 0);   // never [MQTT-3.3.1-11]
}

TEST_CASE("a packet over max_packet_size closes the connection: DISCONNECT 0x95 in 5.0, silently in 3.1.1",
          "[broker][limits][MQTT-3.2.2-15]") {
  mb::broker_options o;
  o.max_packet_size = 128;
  harness<> h(o);
  client& watcher = h.connected("watcher");
  h.subscribe(watcher, "big/#", qos::at_most_once);
  client& v5 = h.add(protocol_version::v5);
  v5.connect("v5");
  h.settle();
  REQUIRE(v5.pop(CONNACK).code == 0);
  client& old = h.connected("old");
  const std::string fits(100, 'x'), too_big(200, 'x');
  v5.publish("big/1", fits);
  h.settle();
  CHECK(watcher.publishes().size() == 1);  // under the limit: routed
  v5.publish("big/2", too_big);
  old.publish("big/3", too_big);
  h.settle();
  CHECK(v5.pop(DISCONNECT).code == static_cast<std::uint8_t>(reason_code::packet_too_large));
  CHECK(v5.closed());
  CHECK(old.empty());
  CHECK(old.closed());
  CHECK(watcher.publishes().empty());
  CHECK(h.broker.stats().protocol_errors == 2);
}

TEST_CASE("shared subscriptions switched off are refused: 0x9E in 5.0, 0x80 in 3.1.1, and CONNACK says so",
          "[broker][v5][shared]") {
  mb::broker_options o;
  o.shared_subscriptions = false;
  harness<> h(o);
  client& old = h.connected("old");
  CHECK(h.subscribe(old, "$share/g/t", qos::at_least_once) == std::vector<std::uint8_t>{0x80});
  client& v5 = h.add(protocol_version::v5);
  v5.connect("v5");
  h.settle();
  CHECK(v5.pop(CONNACK).shared_subscription_available == 0);
  CHECK(h.subscribe(v5, "$share/g/t", qos::at_least_once) ==
        std::vector<std::uint8_t>{static_cast<std::uint8_t>(reason_code::shared_subscriptions_not_supported)});
  client& pub = h.connected("pub");
  pub.publish("t", "nobody");
  h.settle();
  CHECK(old.empty());
  CHECK(v5.empty());
}

TEST_CASE("on_unsubscribe sees each filter that existed; on_connect_refused sees each refusal with its 5.0 reason",
          "[broker][hooks]") {
  hook_log log;
  harness<hooked_policies> h({}, test_hooks{&log});
  client& c = h.connected("u");
  h.subscribe(c, "a", qos::at_most_once);
  c.unsubscribe(2, "a");
  c.unsubscribe(3, "never");
  h.settle();
  CHECK(c.pop(UNSUBACK).id == 2);
  CHECK(c.pop(UNSUBACK).id == 3);
  CHECK(log.unsubscribes == std::vector<std::string>{"u:a"});

  client& wrong = h.add();
  wrong.connect("w", true, std::nullopt, std::string_view("wrong"));
  client& no_id = h.add();
  no_id.connect("", false);  // 3.1.1: an empty identifier needs Clean Session 1
  client& bad_will = h.add();
  bad_will.connect("bw", true, will_spec{"a/+", "x"});  // 3.1.1 has no code: closed without CONNACK
  h.settle();
  CHECK(wrong.pop(CONNACK).code == 4);
  CHECK(no_id.pop(CONNACK).code == 2);
  CHECK(bad_will.empty());
  CHECK(bad_will.closed());
  REQUIRE(log.refused.size() == 3);
  CHECK(log.refused[0] == std::make_pair(std::string("w"), reason_code::bad_user_name_or_password));
  CHECK(log.refused[1] == std::make_pair(std::string(""), reason_code::client_identifier_not_valid));
  CHECK(log.refused[2] == std::make_pair(std::string("bw"), reason_code::topic_name_invalid));
  CHECK(log.connects == std::vector<std::string>{"u"});
}

// ---- shared subscriptions through the broker (memory transport)

namespace {

struct sticky_mem_policies : mem_policies {
  using shared_strategy = mb::router::sticky_by_publisher;
};
struct random_mem_policies : mem_policies {
  using shared_strategy = mb::router::random_member;
};

/// A 5.0 client connected as `id`; its CONNACK (code 0) returned.
template <class H>
rx connect_v5(H& h, client& c, const std::string& id) {
  c.connect(id);
  h.settle();
  const rx ack = c.pop(CONNACK);
  REQUIRE(ack.code == 0);
  return ack;
}

}  // namespace

TEST_CASE("shared subscriptions: 3.1.1 and 5.0 members of one group get 30 messages between them, each once, in turn",
          "[broker][shared][v5][MQTT-4.8.2-3]") {
  harness<> h;
  client& a = h.connected("a");
  client& b = h.add(protocol_version::v5);
  CHECK(connect_v5(h, b, "b").shared_subscription_available == 1);
  client& c = h.connected("c");
  CHECK(h.subscribe(a, "$share/workers/jobs/+", qos::at_least_once) == std::vector<std::uint8_t>{1});
  CHECK(h.subscribe(b, "$share/workers/jobs/+", qos::at_least_once) == std::vector<std::uint8_t>{1});
  CHECK(h.subscribe(c, "$share/workers/jobs/+", qos::at_most_once) == std::vector<std::uint8_t>{0});
  client& pub = h.connected("pub");
  for (int i = 0; i < 30; ++i) pub.publish("jobs/" + std::to_string(i % 3), std::to_string(i), qos::at_least_once, std::uint16_t(i + 1));
  h.settle();
  std::set<std::string> all;
  client* members[] = {&a, &b, &c};
  for (int m = 0; m < 3; ++m) {
    const auto got = members[m]->publishes();
    REQUIRE(got.size() == 10);
    for (std::size_t k = 0; k < got.size(); ++k) {
      CHECK(got[k].payload == std::to_string(3 * int(k) + m));  // round robin, in the order they joined
      CHECK(got[k].qos_level == (m == 2 ? qos::at_most_once : qos::at_least_once));  // each its own grant
      all.insert(got[k].payload);
      if (got[k].qos_level == qos::at_least_once) members[m]->puback(got[k].id);
    }
  }
  CHECK(all.size() == 30);
}

TEST_CASE("shared subscriptions: a member that goes with a QoS 1 message unacknowledged hands it to another member",
          "[broker][shared]") {
  harness<> h;
  client& a = h.connected("a");  // Clean Session: its session ends when it goes
  client& b = h.connected("b");
  h.subscribe(a, "$share/g/t", qos::at_least_once);
  h.subscribe(b, "$share/g/t", qos::at_least_once);
  client& pub = h.connected("pub");
  pub.publish("t", "first", qos::at_least_once, 1);
  h.settle();
  REQUIRE(a.publishes().size() == 1);  // a's turn; it never acknowledges
  a.close();
  h.settle();
  const auto handed = b.publishes();
  REQUIRE(handed.size() == 1);
  CHECK(handed[0].payload == "first");
  CHECK_FALSE(handed[0].dup);
  CHECK(h.broker.stats().shared_groups == 1);
}

TEST_CASE("shared subscriptions: the sticky and random strategies as policies", "[broker][shared]") {
  SECTION("sticky by publisher") {
    harness<sticky_mem_policies> h;
    std::vector<client*> members;
    for (const char* id : {"m0", "m1", "m2"}) {
      members.push_back(&h.connected(id));
      h.subscribe(*members.back(), "$share/g/t", qos::at_most_once);
    }
    std::vector<client*> pubs;
    for (int p = 0; p < 6; ++p) pubs.push_back(&h.connected("p" + std::to_string(p)));
    for (int i = 0; i < 4; ++i)
      for (std::size_t p = 0; p < pubs.size(); ++p) pubs[p]->publish("t", std::to_string(p));
    h.settle();
    std::map<std::string, std::set<std::size_t>> where;
    std::size_t total = 0;
    for (std::size_t m = 0; m < members.size(); ++m)
      for (const rx& r : members[m]->publishes()) {
        where[r.payload].insert(m);
        ++total;
      }
    CHECK(total == 24);
    REQUIRE(where.size() == 6);
    for (const auto& w : where) CHECK(w.second.size() == 1);  // each publisher on one member
  }
  SECTION("random") {
    harness<random_mem_policies> h;
    std::vector<client*> members;
    for (const char* id : {"m0", "m1", "m2"}) {
      members.push_back(&h.connected(id));
      h.subscribe(*members.back(), "$share/g/t", qos::at_most_once);
    }
    client& pub = h.connected("pub");
    for (int i = 0; i < 150; ++i) pub.publish("t", std::to_string(i));
    h.settle();
    std::set<std::string> seen;
    std::size_t total = 0;
    bool in_turn = true;  // what round robin would give: m0 0, 3, 6, ...; m1 1, 4, 7, ...
    for (std::size_t m = 0; m < members.size(); ++m) {
      const auto got = members[m]->publishes();
      CHECK(got.size() >= 20);  // 50 expected
      total += got.size();
      for (std::size_t k = 0; k < got.size(); ++k) {
        seen.insert(got[k].payload);
        if (got[k].payload != std::to_string(3 * k + m)) in_turn = false;
      }
    }
    CHECK(total == 150);
    CHECK(seen.size() == 150);
    CHECK_FALSE(in_turn);
  }
}

// ---- 5.0 features a host may switch off, server redirection, a PUBLISH rate limit

TEST_CASE("wildcards and Subscription Identifiers switched off: CONNACK says 0, SUBACK 0xA2 or 0xA1 (5.0) or 0x80 (3.1.1)",
          "[broker][v5][subscribe][MQTT-3.8.3-2]") {
  mb::broker_options o;
  o.wildcard_subscriptions = false;
  o.subscription_identifiers = false;
  harness<> h(o);
  client& old = h.connected("old");
  CHECK(h.subscribe(old, "w/+", qos::at_least_once) == std::vector<std::uint8_t>{0x80});
  CHECK(h.subscribe(old, "w/x", qos::at_least_once) == std::vector<std::uint8_t>{1});
  client& v5 = h.add(protocol_version::v5);
  v5.connect("v5");
  h.settle();
  const rx ack = v5.pop(CONNACK);
  CHECK(ack.wildcard_subscription_available == 0);
  CHECK(ack.subscription_identifier_available == 0);
  CHECK(h.subscribe(v5, "w/#", qos::at_least_once) ==
        std::vector<std::uint8_t>{static_cast<std::uint8_t>(reason_code::wildcard_subscriptions_not_supported)});
  codec::subscribe s;
  s.packet_id = 2;
  codec::properties_builder props;
  props.add(codec::property_id::subscription_identifier, 1);
  s.properties = props.view();
  s.entries.push_back({"w/x", {qos::at_least_once}});
  v5.send(s);
  h.settle();
  CHECK(v5.pop(SUBACK).codes ==
        std::vector<std::uint8_t>{static_cast<std::uint8_t>(reason_code::subscription_identifiers_not_supported)});
  client& pub = h.connected("pub");
  pub.publish("w/x", "m");
  h.settle();
  CHECK(old.publishes().size() == 1);
  CHECK(v5.empty());
  CHECK_FALSE(v5.closed());
}

namespace {

/// Users "away" go elsewhere for now, "moved" for good; `saw_password` notes a password shown.
struct redirecting_hooks {
  bool* saw_password = nullptr;
  std::optional<mb::hooks::redirection> redirect(const mb::hooks::connect_info& c) {
    if (c.password) *saw_password = true;
    if (c.username == std::optional<std::string_view>("away")) return mb::hooks::redirection{"b.example:1883", false};
    if (c.username == std::optional<std::string_view>("moved")) return mb::hooks::redirection{"c.example:8883", true};
    return std::nullopt;
  }
};
struct redirecting_policies : timed_policies {
  using hooks = redirecting_hooks;
};

}  // namespace

TEST_CASE("server redirection: CONNACK 0x9C or 0x9D from the hook, DISCONNECT from broker::redirect(); 3.1.1 refused or closed",
          "[broker][v5][hooks][redirect][MQTT-3.2.2-6][MQTT-3.2.2-7][MQTT-3.2.2-5][MQTT-4.13.2-1]") {
  bool saw_password = false;
  harness<redirecting_policies> h({}, redirecting_hooks{&saw_password});
  client& five = h.add(protocol_version::v5);
  five.connect("five", true, std::nullopt, std::string_view("away"));
  client& moved = h.add(protocol_version::v5);
  moved.connect("moved", true, std::nullopt, std::string_view("moved"));
  client& old = h.add();
  old.connect("old", true, std::nullopt, std::string_view("moved"));
  h.settle();
  rx ack = five.pop(CONNACK);
  CHECK(ack.code == static_cast<std::uint8_t>(reason_code::use_another_server));
  CHECK(ack.server_reference == std::optional<std::string>("b.example:1883"));
  ack = moved.pop(CONNACK);
  CHECK(ack.code == static_cast<std::uint8_t>(reason_code::server_moved));
  CHECK(ack.server_reference == std::optional<std::string>("c.example:8883"));
  CHECK(old.pop(CONNACK).code == 3);  // Server unavailable
  CHECK(five.closed());
  CHECK(moved.closed());
  CHECK(old.closed());
  CHECK_FALSE(saw_password);  // what redirect() sees is past authentication
  CHECK(h.broker.stats().sessions == 0);

  // The host's call, for clients that are connected.
  client& stays = h.add(protocol_version::v5);
  stays.connect("stays");
  client& goes = h.add(protocol_version::v5);
  goes.connect("goes");
  client& goes_old = h.connected("goes-old");
  h.settle();
  REQUIRE(stays.pop(CONNACK).code == 0);
  REQUIRE(goes.pop(CONNACK).code == 0);
  CHECK(h.broker.redirect("goes", "c.example:8883", true));
  CHECK(h.broker.redirect("goes-old", "c.example:8883"));
  CHECK_FALSE(h.broker.redirect("nobody", "c.example:8883"));
  h.settle();
  const rx d = goes.pop(DISCONNECT);
  CHECK(d.code == static_cast<std::uint8_t>(reason_code::server_moved));
  CHECK(d.server_reference == std::optional<std::string>("c.example:8883"));
  CHECK(goes.empty());
  CHECK(goes.closed());
  CHECK(goes_old.empty());
  CHECK(goes_old.closed());
  CHECK(stays.empty());
  CHECK_FALSE(stays.closed());
  CHECK_FALSE(h.broker.redirect("goes", "c.example:8883"));  // gone now
}

TEST_CASE("broker::disconnect(): DISCONNECT 0x98 to 5.0, a close for 3.1.1; the will goes out, the session stays",
          "[broker][v5][will][MQTT-3.1.2-8][MQTT-4.13.2-1]") {
  harness<> h;
  client& watcher = h.connected("watcher");
  h.subscribe(watcher, "wills/#", qos::at_most_once);
  client& five = h.connected("five", false, protocol_version::v5, will_spec{"wills/five", "five gone"});
  client& old = h.connected("old", false, protocol_version::v3_1_1, will_spec{"wills/old", "old gone"});
  client& stays = h.connected("stays");
  CHECK(h.broker.disconnect("five"));
  CHECK(h.broker.disconnect("old", reason_code::server_busy));  // 3.1.1 hears no reason
  CHECK_FALSE(h.broker.disconnect("nobody"));
  h.settle();
  const rx d = five.pop(DISCONNECT);
  CHECK(d.code == static_cast<std::uint8_t>(reason_code::administrative_action));
  CHECK(five.closed());
  CHECK(old.empty());
  CHECK(old.closed());
  CHECK_FALSE(stays.closed());
  std::vector<std::string> wills;
  for (const rx& p : watcher.publishes()) wills.push_back(p.payload);
  std::sort(wills.begin(), wills.end());
  CHECK(wills == std::vector<std::string>{"five gone", "old gone"});
  CHECK_FALSE(h.broker.disconnect("five"));  // gone now
  // old's persistent session (3.1.1 Clean Session 0) stays for its next connection; five's ends
  // with the connection (5.0 without a Session Expiry Interval).
  CHECK(h.broker.stats().sessions == 3);
  client& back = h.add();
  back.connect("old", false);
  h.settle();
  CHECK(back.pop(CONNACK).session_present);
}

TEST_CASE("max_publish_rate in seconds of the broker's clock: DISCONNECT 0x96 in 5.0, a close in 3.1.1, no PUBACK",
          "[broker][v5][rate][MQTT-4.13.2-1]") {
  mb::broker_options o;
  o.max_publish_rate = 2;
  timed h(o);
  client& watcher = h.connected("watcher");
  h.subscribe(watcher, "rate/#", qos::at_most_once);
  client& five = h.add(protocol_version::v5);
  five.connect("five");
  client& old = h.connected("old");
  h.settle();
  REQUIRE(five.pop(CONNACK).code == 0);
  for (std::uint16_t i = 1; i <= 2; ++i) {
    five.publish("rate/five", "m", qos::at_least_once, i);
    old.publish("rate/old", "m", qos::at_least_once, i);
  }
  h.settle();
  h.advance(std::chrono::seconds(1));  // the next second: two more each
  for (std::uint16_t i = 3; i <= 4; ++i) {
    five.publish("rate/five", "m", qos::at_least_once, i);
    old.publish("rate/old", "m", qos::at_least_once, i);
  }
  h.settle();
  for (client* c : {&five, &old})
    for (std::uint16_t i = 1; i <= 4; ++i) CHECK(c->pop(PUBACK).id == i);
  CHECK(h.broker.stats().rate_limited == 0);
  // A third in the same second, both ways.
  five.publish("rate/five", "over", qos::at_least_once, 5);
  old.publish("rate/old", "over", qos::at_least_once, 5);
  h.settle();
  CHECK(five.pop(DISCONNECT).code == static_cast<std::uint8_t>(reason_code::message_rate_too_high));
  CHECK(five.empty());
  CHECK(five.closed());
  CHECK(old.empty());
  CHECK(old.closed());
  CHECK(watcher.publishes().size() == 8);  // "over" went nowhere
  CHECK(h.broker.stats().rate_limited == 2);
}

// ---- ACL files (hooks/acl_file.hpp)

namespace {

mb::hooks::acl_file acl_of(std::string_view text) {
  std::error_code ec;
  std::size_t line = 0;
  auto f = mb::hooks::acl_file::parse(text, ec, &line);
  INFO("line " << line << ": " << ec.message());
  REQUIRE_FALSE(ec);
  return f;
}

mb::hooks::client_info who(std::string_view id, std::optional<std::string_view> user) {
  mb::hooks::client_info c;
  c.client_id = id;
  c.username = user;
  return c;
}

struct acl_policies : mem_policies {
  using hooks = mb::hooks::acl_hooks;
};

}  // namespace

TEST_CASE("acl_file: Mosquitto's rules for anonymous clients, users and patterns; deny wins", "[acl]") {
  const auto acl = acl_of(
      "# anonymous clients\n"
      "topic read public/#\n"
      "\n"
      "user alice\n"
      "topic readwrite home/#\n"
      "topic deny home/safe/#\n"
      "topic write   logs/alice  \r\n"
      "user bob with spaces\n"
      "topic sensors/+/temp\n"
      "pattern write devices/%c/state\n"
      "pattern read users/%u/#\n"
      "pattern deny users/%u/private\n");
  CHECK(acl.users() == 2);
  CHECK(acl.rules() == 8);
  const auto anon = who("dev1", std::nullopt);
  const auto alice = who("dev2", std::string_view("alice"));
  const auto bob = who("dev3", std::string_view("bob with spaces"));
  const auto carol = who("dev4", std::string_view("carol"));  // no user line: patterns only

  CHECK(acl.may_read(anon, "public/news"));
  CHECK_FALSE(acl.may_publish(anon, "public/news"));
  CHECK_FALSE(acl.may_read(alice, "public/news"));  // the anonymous rules are not alice's
  CHECK(acl.may_publish(alice, "home/kitchen"));
  CHECK(acl.may_read(alice, "home/kitchen"));
  CHECK_FALSE(acl.may_read(alice, "home/safe/code"));  // deny, although readwrite home/# allows
  CHECK_FALSE(acl.may_publish(alice, "home/safe"));
  CHECK(acl.may_publish(alice, "logs/alice"));
  CHECK_FALSE(acl.may_read(alice, "logs/alice"));
  CHECK(acl.may_publish(bob, "sensors/x/temp"));  // access left out: readwrite
  CHECK(acl.may_read(bob, "sensors/x/temp"));

  // Patterns hold for everyone, with their own client identifier and user name.
  CHECK(acl.may_publish(anon, "devices/dev1/state"));
  CHECK_FALSE(acl.may_publish(anon, "devices/dev2/state"));
  CHECK(acl.may_publish(carol, "devices/dev4/state"));
  CHECK(acl.may_read(carol, "users/carol/inbox"));
  CHECK_FALSE(acl.may_read(carol, "users/alice/inbox"));
  CHECK_FALSE(acl.may_read(carol, "users/carol/private"));  // a pattern's deny
  CHECK_FALSE(acl.may_read(anon, "users//inbox"));           // %u never stands for a missing name
  CHECK_FALSE(acl.may_publish(carol, "anything/else"));

  // A wildcard in a client identifier or user name would widen the patterns: denied outright.
  CHECK_FALSE(acl.may_publish(who("#", std::nullopt), "devices/#/state"));
  CHECK_FALSE(acl.may_read(who("dev5", std::string_view("+")), "users/+/inbox"));
}

TEST_CASE("acl_file: a subscription is refused when a deny takes all of it or nothing may be read",
          "[acl]") {
  const auto acl = acl_of(
      "topic readwrite #\n"
      "topic deny test/nosubscribe\n"
      "topic deny secret/#\n"
      "user reader\n"
      "topic read sensors/#\n"
      "topic write commands/#\n");
  const auto anon = who("c", std::nullopt);
  const auto reader = who("r", std::string_view("reader"));
  CHECK(acl.may_subscribe(anon, "test/+"));
  CHECK_FALSE(acl.may_subscribe(anon, "test/nosubscribe"));
  CHECK_FALSE(acl.may_subscribe(anon, "secret/+/x"));
  CHECK(acl.may_subscribe(anon, "#"));  // granted; deliveries from secret/ are held back
  CHECK_FALSE(acl.may_read(anon, "secret/a"));
  CHECK(acl.may_subscribe(reader, "sensors/+/temp"));
  CHECK(acl.may_subscribe(reader, "#"));  // some of it readable
  CHECK_FALSE(acl.may_subscribe(reader, "commands/#"));  // write only
  CHECK_FALSE(acl.may_subscribe(reader, "other/x"));
  CHECK(acl.may_subscribe(reader, "$share/g/sensors/a"));  // judged by its filter
  CHECK_FALSE(acl.may_subscribe(reader, "$share/g/other"));
  // $ topics: a rule starting with a wildcard does not reach them.
  CHECK_FALSE(acl.may_subscribe(anon, "$SYS/#"));
  CHECK_FALSE(acl.may_read(anon, "$SYS/broker/uptime"));
}

TEST_CASE("acl_file: lines it cannot read are errors with their line number", "[acl]") {
  const auto refused = [](std::string_view text) {
    std::error_code ec;
    std::size_t line = 0;
    const auto f = mb::hooks::acl_file::parse(text, ec, &line);
    CHECK(f.rules() == 0);
    return std::make_pair(ec, line);
  };
  using mb::hooks::acl_errc;
  CHECK(refused("topic read a\nuser\n") == std::make_pair(std::error_code(acl_errc::missing_user), std::size_t(2)));
  CHECK(refused("topic readonly a/b\n") == std::make_pair(std::error_code(acl_errc::bad_access), std::size_t(1)));
  CHECK(refused("# c\ntopic read a/#/b\n") == std::make_pair(std::error_code(acl_errc::bad_filter), std::size_t(2)));
  CHECK(refused("\n\nallow a\n") == std::make_pair(std::error_code(acl_errc::unknown_line), std::size_t(3)));
  CHECK(std::string(std::error_code(acl_errc::bad_filter).category().name()) == "mqttbroker.acl");
  std::error_code ec;
  std::string what;
  (void)mb::hooks::acl_file::read("/nonexistent/acl", ec, &what);
  CHECK(ec == acl_errc::unreadable);
  CHECK(what.find("/nonexistent/acl") != std::string::npos);
}

TEST_CASE("acl_hooks: SUBACK refuses a denied filter (0x80 in 3.1.1, 0x87 in 5.0) and PUBLISH a denied topic",
          "[broker][acl]") {
  harness<acl_policies> h({}, mb::hooks::acl_hooks(acl_of("topic readwrite #\ntopic deny test/nosubscribe\n"
                                                            "topic deny readonly/#\ntopic read readonly/#\n")));
  client& c3 = h.connected("c3");
  CHECK(h.subscribe(c3, "test/nosubscribe", qos::at_least_once) == std::vector<std::uint8_t>{0x80});
  client& c5 = h.connected("c5", true, protocol_version::v5);
  CHECK(h.subscribe(c5, "test/nosubscribe", qos::at_least_once) == std::vector<std::uint8_t>{0x87});
  CHECK(h.subscribe(c5, "test/+", qos::at_least_once) == std::vector<std::uint8_t>{1});
  c5.publish("readonly/x", "no", qos::at_least_once, 7);
  h.settle();
  CHECK(c5.pop(PUBACK).code == static_cast<std::uint8_t>(reason_code::not_authorized));
  CHECK(h.broker.stats().publishes_denied == 1);
}

TEST_CASE("acl_hooks: each delivery is checked, live, retained and queued for an offline session", "[broker][acl]") {
  harness<acl_policies> h({}, mb::hooks::acl_hooks(acl_of("user watcher\n"
                                                            "topic read sensors/#\n"
                                                            "topic deny sensors/private/#\n"
                                                            "pattern read inbox/%u\n"
                                                            "user writer\n"
                                                            "topic write #\n")));
  client& writer = h.add();
  writer.connect("w", true, std::nullopt, std::string_view("writer"));
  h.settle();
  REQUIRE(writer.pop(CONNACK).code == 0);
  writer.publish("sensors/private/key", "kept back", qos::at_most_once, 0, true);
  writer.publish("sensors/a", "retained", qos::at_most_once, 0, true);
  h.settle();

  client& watcher = h.add();
  watcher.connect("watch", false, std::nullopt, std::string_view("watcher"));
  h.settle();
  REQUIRE(watcher.pop(CONNACK).code == 0);
  CHECK(h.subscribe(watcher, "#", qos::at_least_once) == std::vector<std::uint8_t>{1});
  auto got = watcher.publishes();
  REQUIRE(got.size() == 1);  // the retained sensors/a, not sensors/private/key
  CHECK(got[0].topic == "sensors/a");
  CHECK(h.broker.stats().deliveries_denied == 1);

  writer.publish("sensors/b", "live", qos::at_least_once, 1);
  writer.publish("sensors/private/b", "no", qos::at_least_once, 2);
  writer.publish("inbox/watcher", "mine", qos::at_least_once, 3);
  writer.publish("inbox/someone", "not mine", qos::at_least_once, 4);
  h.settle();
  got = watcher.publishes();
  REQUIRE(got.size() == 2);
  CHECK(got[0].topic == "sensors/b");
  CHECK(got[1].topic == "inbox/watcher");

  // Offline: queued only what the session's user may read.
  watcher.disconnect();
  h.settle();
  writer.publish("sensors/c", "queued", qos::at_least_once, 5);
  writer.publish("sensors/private/c", "no", qos::at_least_once, 6);
  h.settle();
  client& back = h.add();
  back.connect("watch", false, std::nullopt, std::string_view("watcher"));
  h.settle();
  REQUIRE(back.pop(CONNACK).session_present);
  got = back.publishes();
  // The two unacknowledged ones again [MQTT-4.4.0-1], then the one queued; not sensors/private/c.
  REQUIRE(got.size() == 3);
  CHECK(got[0].topic == "sensors/b");
  CHECK(got[1].topic == "inbox/watcher");
  CHECK(got[2].topic == "sensors/c");
  CHECK(h.broker.stats().deliveries_denied == 4);
}

TEST_CASE("acl_hooks: a new file applies to the next delivery; recheck_subscriptions takes out refused filters",
          "[broker][acl]") {
  mb::hooks::acl_hooks rules(acl_of("topic readwrite #\n"));
  harness<acl_policies> h({}, rules);  // a copy sharing the file with `rules`
  client& sub = h.connected("sub", false, protocol_version::v5);
  CHECK(h.subscribe(sub, "alerts/#", qos::at_least_once) == std::vector<std::uint8_t>{1});
  CHECK(h.subscribe(sub, "news/#", qos::at_least_once) == std::vector<std::uint8_t>{1});
  client& pub = h.connected("pub");
  CHECK(h.broker.recheck_subscriptions() == 0);

  rules.replace(acl_of("topic readwrite news/#\ntopic write alerts/#\n"));
  pub.publish("alerts/fire", "held back", qos::at_least_once, 1);
  pub.publish("news/today", "delivered", qos::at_least_once, 2);
  h.settle();
  auto got = sub.publishes();
  REQUIRE(got.size() == 1);
  CHECK(got[0].topic == "news/today");

  CHECK(h.broker.recheck_subscriptions() == 1);  // alerts/# now reads nothing
  CHECK(h.broker.stats().subscriptions_revoked == 1);
  CHECK_FALSE(sub.closed());  // the client stays
  const auto before = h.broker.stats().deliveries_denied;
  pub.publish("alerts/flood", "no route", qos::at_least_once, 3);
  h.settle();
  CHECK(sub.publishes().empty());
  CHECK(h.broker.stats().deliveries_denied == before);  // not even offered: the route is gone
}

// ---- the host's view of its clients

namespace {
struct listing_policies : timed_policies {
  using hooks = mb::hooks::acl_hooks;  // no file: allows all, and keeps who each client is
};
}  // namespace

TEST_CASE("broker::clients() lists the connected clients with who, where, since when and what they owe",
          "[broker][host]") {
  harness<listing_policies> h;
  h.advance(std::chrono::seconds(10));
  client& alice = h.add(protocol_version::v5);
  alice.connect("alice", false, std::nullopt, std::string_view("alice-user"));
  h.settle();
  REQUIRE(alice.pop(CONNACK).code == 0);
  h.advance(std::chrono::seconds(5));
  client& anon = h.connected("anon", false);
  h.subscribe(anon, "owed/#", qos::at_least_once);
  client& pub = h.connected("pub");
  for (std::uint16_t i = 1; i <= 3; ++i) pub.publish("owed/x", "m", qos::at_least_once, i);
  h.settle();
  client& gone = h.connected("gone", false);
  gone.disconnect();
  h.settle();

  auto list = h.broker.clients();
  std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.client_id < b.client_id; });
  REQUIRE(list.size() == 3);  // "gone" is offline: not listed
  const mb::client_snapshot& a = list[0];
  CHECK(a.client_id == "alice");
  CHECK(a.username == std::optional<std::string>("alice-user"));
  CHECK(a.version == protocol_version::v5);
  CHECK(a.listener == std::optional<std::size_t>(0));
  CHECK_FALSE(a.persistent);  // 5.0 without a Session Expiry Interval
  const mb::client_snapshot& n = list[1];
  CHECK(n.client_id == "anon");
  CHECK_FALSE(n.username);
  CHECK(n.version == protocol_version::v3_1_1);
  CHECK(n.persistent);
  CHECK(n.inflight_messages + n.queued_messages == 3);  // not acknowledged by the test client
  CHECK(n.connected_since - a.connected_since == std::chrono::seconds(5));
  CHECK(h.clock.system_now() - n.connected_since == std::chrono::seconds(0));
}

TEST_CASE("broker::remove_session(): an offline session goes at once, a connected client is disconnected and its "
          "session ends with the connection",
          "[broker][host][MQTT-4.13.2-1]") {
  harness<> h;
  client& offline = h.connected("offline", false);
  h.subscribe(offline, "kept/#", qos::at_least_once);
  offline.disconnect();
  h.settle();
  client& online = h.add(protocol_version::v5);
  online.set_session_expiry(3600);  // would outlive its connection
  online.connect("online", false);
  h.settle();
  REQUIRE(online.pop(CONNACK).code == 0);
  h.subscribe(online, "kept/#", qos::at_least_once);
  CHECK(h.broker.stats().sessions == 2);

  CHECK(h.broker.remove_session("offline"));
  CHECK(h.broker.stats().sessions == 1);
  CHECK(h.broker.remove_session("online"));
  CHECK_FALSE(h.broker.remove_session("nobody"));
  h.settle();
  CHECK(online.pop(DISCONNECT).code == static_cast<std::uint8_t>(reason_code::administrative_action));
  CHECK(online.closed());
  CHECK(h.broker.stats().sessions == 0);

  client& pub = h.connected("pub");
  pub.publish("kept/x", "nobody left", qos::at_least_once, 1);
  h.settle();
  CHECK(pub.pop(PUBACK).id == 1);
  for (const char* id : {"offline", "online"}) {
    client& back = h.add();
    back.connect(id, false);
    h.settle();
    CHECK_FALSE(back.pop(CONNACK).session_present);
    CHECK(back.publishes().empty());
  }
}

TEST_CASE("max_total_queued_bytes bounds all sessions' queues together; the budget is given back as they drain",
          "[broker][limits]") {
  mb::broker_options o;
  o.max_total_queued_bytes = 100;
  harness<> h(o);
  for (const char* id : {"a", "b"}) {
    client& c = h.connected(id, false);
    h.subscribe(c, "q/#", qos::at_least_once);
    c.disconnect();
  }
  h.settle();
  client& pub = h.connected("pub");
  const std::string payload(60, 'x');
  pub.publish("q/1", payload, qos::at_least_once, 1);  // a's queue: 60; b's would make 120
  h.settle();
  auto st = h.broker.stats();
  CHECK(st.queued_bytes == 60);
  CHECK(st.queue_memory_drops == 1);
  CHECK(st.messages_dropped == 1);
  pub.publish("q/2", "small", qos::at_least_once, 2);  // 65 in all, then 70
  h.settle();
  CHECK(h.broker.stats().queued_bytes == 70);

  client& a = h.add();
  a.connect("a", false);
  h.settle();
  REQUIRE(a.pop(CONNACK).session_present);
  CHECK(a.publishes().size() == 2);  // out of the queue, in flight now
  CHECK(h.broker.stats().queued_bytes == 5);  // b's "small" waits still
  CHECK(h.broker.remove_session("b"));
  CHECK(h.broker.stats().queued_bytes == 0);  // a session that goes gives its bytes back
  pub.publish("q/3", payload, qos::at_least_once, 3);
  h.settle();
  CHECK(h.broker.stats().queue_memory_drops == 1);
}

// ---- admission per source address

TEST_CASE("address_admission: connections open per address, and a token bucket for new ones", "[admission]") {
  using mb::server::address_admission;
  using mb::server::address_verdict;
  auto a = std::make_shared<address_admission>(mb::server::address_limits{2, 1.0, 3.0, true});
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  address_admission::ticket t1, t2, t3, t4;
  CHECK(address_admission::admit(a, "192.0.2.1", t0, t1) == address_verdict::admitted);
  CHECK(address_admission::admit(a, "192.0.2.1", t0, t2) == address_verdict::admitted);
  CHECK(address_admission::admit(a, "192.0.2.1", t0, t3) == address_verdict::too_many);
  CHECK_FALSE(t3);
  t1 = address_admission::ticket();  // one closes: its place is free again
  CHECK(address_admission::admit(a, "192.0.2.1", t0, t3) == address_verdict::admitted);  // the third token
  t2 = address_admission::ticket();
  CHECK(address_admission::admit(a, "192.0.2.1", t0, t4) == address_verdict::too_fast);  // the bucket is empty
  CHECK(address_admission::admit(a, "192.0.2.1", t0 + std::chrono::seconds(1), t4) == address_verdict::admitted);
  CHECK(address_admission::admit(a, "198.51.100.7", t0, t1) == address_verdict::admitted);  // each address its own
  for (int i = 0; i < 10; ++i) {  // the host's own programs are not limited
    address_admission::ticket t;
    CHECK(address_admission::admit(a, i % 2 ? "127.0.0.1" : "::1", t0, t) == address_verdict::admitted);
  }
  {  // the rest of 127.0.0.0/8 is counted as any address is
    address_admission::ticket x, y, z;
    CHECK(address_admission::admit(a, "127.0.0.2", t0, x) == address_verdict::admitted);
    CHECK(address_admission::admit(a, "127.0.0.2", t0, y) == address_verdict::admitted);
    CHECK(address_admission::admit(a, "127.0.0.2", t0, z) == address_verdict::too_many);
  }
  // Addresses with nothing open and a full bucket are forgotten as others come: the map stays bounded.
  t1 = address_admission::ticket();
  t3 = address_admission::ticket();
  t4 = address_admission::ticket();
  for (int i = 0; i < 5000; ++i) {
    address_admission::ticket t;
    (void)address_admission::admit(a, "10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256),
                                   t0 + std::chrono::seconds(10 + i), t);
  }
  CHECK(a->tracked() <= 2048);
}

namespace {
struct admission_policies : mb::default_policies {
  using clock = mb::clock::manual;
};
}  // namespace

TEST_CASE("max_connections_per_address and max_connection_rate_per_address close refused connections at accept, "
          "counted",
          "[broker][admission][transport]") {
  using tcp_client = basic_client<asio::ip::tcp::socket>;
  asio::io_context io;
  mb::clock::manual clk;
  mb::broker_options o;
  o.admission_exempts_loopback = false;  // the test's clients are on loopback
  o.max_connections_per_address = 2;
  o.max_connection_rate_per_address = 1;
  o.connection_burst_per_address = 3;
  mb::broker<admission_policies> b(io, o, {}, clk);
  b.listen({"127.0.0.1", 0});
  b.start();
  auto wait_for = [&io](auto ready) { run_io_until(io, ready); };
  auto open = [&] {
    asio::ip::tcp::socket s(io);
    s.connect({asio::ip::make_address("127.0.0.1"), b.local_port(0)});
    return std::make_unique<tcp_client>(std::move(s), protocol_version::v3_1_1);
  };
  auto connected = [&](tcp_client& c, const std::string& id) {
    c.connect(id);
    wait_for([&] { return c.pending() == 1 || c.closed(); });
    return !c.closed() && c.pop(CONNACK).code == 0;
  };
  auto a = open();
  auto c2 = open();
  CHECK(connected(*a, "a"));
  CHECK(connected(*c2, "b"));
  auto third = open();
  wait_for([&] { return third->closed(); });  // closed at accept: two are open from this address
  CHECK(b.stats().refused_per_address == 1);
  a->disconnect();
  wait_for([&] { return a->closed() && b.stats().connections == 1; });
  auto fourth = open();
  CHECK(connected(*fourth, "d"));  // the third token of the burst
  fourth->disconnect();
  wait_for([&] { return fourth->closed() && b.stats().connections == 1; });
  auto fast = open();
  wait_for([&] { return fast->closed(); });  // one open, but no token left
  CHECK(b.stats().refused_rate == 1);
  clk.advance(std::chrono::seconds(1));
  auto later = open();
  CHECK(connected(*later, "e"));
  CHECK(b.stats().refused_per_address == 1);
  CHECK(b.stats().refused_rate == 1);
  bool stopped = false;
  b.async_stop([&](std::error_code ec) { stopped = !ec; });
  wait_for([&] { return stopped; });
}

// ---- metrics (metrics/prometheus.hpp, metrics/http.hpp)

namespace {
/// The value of the sample `name_and_labels` in an exposition, or -1.
double sample(const std::string& text, const std::string& name_and_labels) {
  const std::string key = "\n" + name_and_labels + " ";
  const std::size_t at = ("\n" + text).find(key);
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + key.size() - 1));
}

/// One HTTP exchange with a blocking socket: what came back, whole.
std::string http_exchange(std::uint16_t port, const std::string& request) {
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  s.connect({asio::ip::make_address("127.0.0.1"), port});
  asio::write(s, asio::buffer(request));
  std::string got;
  std::error_code ec;
  char buf[4096];
  for (;;) {
    const std::size_t n = s.read_some(asio::buffer(buf), ec);
    got.append(buf, n);
    if (ec) break;
  }
  return got;
}
}  // namespace

TEST_CASE("write_prometheus: the counters in the text format, moving with the traffic", "[metrics]") {
  harness<> h;
  std::string before;
  mb::metrics::write_prometheus(before, h.broker.stats());
  CHECK(before.find("# TYPE mqttbroker_messages_received_total counter\n") != std::string::npos);
  CHECK(sample(before, "mqttbroker_connections") == 0);
  CHECK(sample(before, "mqttbroker_messages_received_total{qos=\"1\"}") == 0);

  client& sub = h.connected("sub");
  h.subscribe(sub, "m/#", qos::at_least_once);
  client& pub = h.connected("pub");
  pub.publish("m/a", "one", qos::at_least_once, 1);
  pub.publish("m/b", "two", qos::at_most_once);
  h.settle();
  std::string after;
  mb::metrics::write_prometheus(after, h.broker.stats());
  CHECK(sample(after, "mqttbroker_connections") == 2);
  CHECK(sample(after, "mqttbroker_messages_received_total{qos=\"1\"}") == 1);
  CHECK(sample(after, "mqttbroker_messages_received_total{qos=\"0\"}") == 1);
  CHECK(sample(after, "mqttbroker_messages_sent_total{qos=\"1\"}") == 1);
  CHECK(sample(after, "mqttbroker_messages_sent_total{qos=\"0\"}") == 1);
  CHECK(sample(after, "mqttbroker_subscriptions") == 1);
  CHECK(sample(after, "mqttbroker_bytes_received_total") > 0);  // the memory transport's bytes count too
  CHECK(sample(after, "mqttbroker_bytes_sent_total") > 0);
  CHECK(mb::metrics::resident_memory_bytes() > 0);
}

TEST_CASE("http_endpoint: GET and HEAD /metrics, 404 elsewhere, 405 for other methods, 400 for garbage",
          "[metrics][transport]") {
  asio::io_context io;
  int made = 0;
  mb::metrics::http_endpoint ep(io.get_executor(), {asio::ip::make_address("127.0.0.1"), 0}, [&made] {
    ++made;
    return std::string("x_total 1\n");
  });
  auto work = asio::make_work_guard(io);
  std::thread runner([&io] { io.run(); });
  const std::string ok = http_exchange(ep.port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(ok.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(ok.find("Content-Type: text/plain; version=0.0.4") != std::string::npos);
  CHECK(ok.find("\r\n\r\nx_total 1\n") != std::string::npos);
  const std::string head = http_exchange(ep.port(), "HEAD /metrics?x=1 HTTP/1.0\r\n\r\n");
  CHECK(head.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(head.find("Content-Length: 10\r\n") != std::string::npos);
  CHECK(head.find("x_total") == std::string::npos);
  CHECK(http_exchange(ep.port(), "GET / HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404", 0) == 0);
  CHECK(http_exchange(ep.port(), "POST /metrics HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 405", 0) == 0);
  CHECK(http_exchange(ep.port(), "hello\r\n\r\n").rfind("HTTP/1.1 400", 0) == 0);
  // Over 8 KiB without the end of the head: closed without an answer.
  CHECK(http_exchange(ep.port(), "GET /metrics HTTP/1.1\r\nX: " + std::string(9000, 'a')).empty());
  CHECK(ep.scrapes() == 2);
  asio::post(io, [&] { ep.close(); });
  work.reset();
  runner.join();
  CHECK(made == 2);
}

TEST_CASE("write_histogram: cumulative buckets with readable bounds, +Inf, sum and count", "[metrics]") {
  const std::uint32_t bounds[3] = {100, 5000, 50000};
  const std::uint64_t within[3] = {1, 3, 4};
  std::string out;
  mb::metrics::write_histogram(out, "t_seconds", "Test.", bounds, within, 5, 123456.0, 1e-6);
  CHECK(out ==
        "# HELP t_seconds Test.\n# TYPE t_seconds histogram\n"
        "t_seconds_bucket{le=\"0.0001\"} 1\nt_seconds_bucket{le=\"0.005\"} 3\nt_seconds_bucket{le=\"0.05\"} 4\n"
        "t_seconds_bucket{le=\"+Inf\"} 5\nt_seconds_sum 0.123456\nt_seconds_count 5\n");
}

namespace {
struct sometimes_reads {
  bool* on = nullptr;
  int* asked = nullptr;
  bool reads_checked() { return *on; }
  bool authorize_read(const mb::hooks::client_info&, const mb::message&) {
    ++*asked;
    return false;
  }
};
struct sometimes_policies : mem_policies {
  using hooks = sometimes_reads;
};
}  // namespace

TEST_CASE("reads_checked() false skips authorize_read for that delivery", "[broker][hooks][acl]") {
  bool on = false;
  int asked = 0;
  harness<sometimes_policies> h({}, sometimes_reads{&on, &asked});
  client& sub = h.connected("sub");
  h.subscribe(sub, "r/#", qos::at_most_once);
  client& pub = h.connected("pub");
  pub.publish("r/1", "delivered unchecked");
  h.settle();
  CHECK(asked == 0);
  CHECK(sub.publishes().size() == 1);
  on = true;
  pub.publish("r/2", "checked, refused");
  h.settle();
  CHECK(asked == 1);
  CHECK(sub.publishes().empty());
}

namespace {
struct line_log {
  std::vector<std::string>* lines = nullptr;
  void log(mb::log_level, std::string_view m) { lines->emplace_back(m); }
};
struct line_log_policies : mem_policies {
  using hooks = line_log;
};
}  // namespace

TEST_CASE("broker_options::connection_messages false leaves out the lines for clients coming and going",
          "[broker][log]") {
  for (const bool on : {true, false}) {
    std::vector<std::string> lines;
    mb::broker_options o;
    o.connection_messages = on;
    harness<line_log_policies> h(o, line_log{&lines});
    client& c = h.connected("comes-and-goes");
    c.disconnect();
    h.settle();
    client& refused = h.add();
    refused.connect("", false);  // 3.1.1: an empty identifier needs Clean Session 1
    h.settle();
    const auto has = [&](const char* text) {
      return std::any_of(lines.begin(), lines.end(), [&](const std::string& l) { return l.find(text) != std::string::npos; });
    };
    INFO("connection_messages " << on);
    CHECK(has("client 'comes-and-goes' connected (") == on);
    CHECK(has("client 'comes-and-goes' disconnected: DISCONNECT received") == on);
    CHECK(has("refused"));  // other lines stay
  }
}

// ---- the cluster policy, as the broker connects it (cluster/contract.hpp)

namespace {

/// A cluster that keeps what the broker gave it, so a test can play the other nodes.
struct loopback_cluster {
  mb::cluster::inbound in;
  std::vector<mb::message_ptr> published;
  int starts = 0, stops = 0;
  int* stops_seen = nullptr;  // outlives the broker
  std::error_code start(const asio::any_io_executor&, mb::cluster::inbound i) {
    ++starts;
    in = std::move(i);
    return {};
  }
  void stop() {
    if (stops_seen) ++*stops_seen;
  }
  void publish(const mb::message_ptr& m) { published.push_back(m); }
  void interest(std::string_view, bool) {}
};
struct cluster_policies : mem_policies {
  using cluster = loopback_cluster;
};

}  // namespace

TEST_CASE("broker: what the cluster brings back reaches this node's clients on the broker's thread, from any thread",
          "[broker][cluster]") {
  int stops = 0;
  {
    harness<cluster_policies> h;
    h.broker.cluster().stops_seen = &stops;
    REQUIRE_FALSE(h.broker.connect_cluster());
    CHECK(h.broker.cluster().starts == 1);
    client& sub = h.connected("sub");
    h.subscribe(sub, "c/#", qos::at_least_once);
    client& member = h.connected("member");
    h.subscribe(member, "$share/g/c/#", qos::at_least_once);
    client& pub = h.connected("pub");
    pub.publish("c/local", "here", qos::at_most_once, 0);
    h.settle();
    REQUIRE(h.broker.cluster().published.size() == 1);
    CHECK(sub.publishes().size() == 1);
    CHECK(member.publishes().empty());  // the cluster chooses the node of a shared group
    // Another node's messages, handed over on a thread of the cluster's.
    std::thread other([&] {
      h.broker.cluster().in.route(mb::message::make("c/remote", "there", qos::at_least_once, false));
      h.broker.cluster().in.to_group("$share/g/c/#", mb::message::make("c/remote", "one of you", qos::at_least_once, false));
    });
    other.join();
    h.settle();
    const auto got = sub.publishes();
    REQUIRE(got.size() == 1);
    CHECK(got[0].payload == "there");
    const auto shared = member.publishes();
    REQUIRE(shared.size() == 1);
    CHECK(shared[0].payload == "one of you");
    CHECK(h.broker.cluster().published.size() == 1);  // nothing sent back to the cluster
  }
  CHECK(stops == 1);  // the broker's destructor left the cluster
}
