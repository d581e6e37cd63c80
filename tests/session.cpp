#include <mqttbroker/session/state.hpp>

#include "catch.hpp"

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace codec = mqttbroker::codec;
namespace session = mqttbroker::session;
using mqttbroker::message;
using mqttbroker::message_ptr;

namespace {

session::outgoing out(const message_ptr& m, codec::qos q) {
  session::outgoing o;
  o.msg = m;
  o.qos_level = q;
  return o;
}

message_ptr msg(const std::string& payload = "x", codec::qos q = codec::qos::at_least_once) {
  return message::make("t", payload, q, false);
}

}  // namespace

TEST_CASE("QoS 0 to an online client is sent at once and never held in flight", "[session]") {
  session::state s("c");
  auto o = out(msg("a", codec::qos::at_most_once), codec::qos::at_most_once);
  CHECK(s.offer(o, true) == session::admission::send);
  CHECK(o.packet_id == 0);
  CHECK(s.inflight_count() == 0);
}

TEST_CASE("QoS 0 for an offline client is dropped unless queueing is asked for", "[session]") {
  session::state s("c");
  auto o = out(msg("a", codec::qos::at_most_once), codec::qos::at_most_once);
  CHECK(s.offer(o, false) == session::admission::dropped);
  CHECK(s.queued_count() == 0);

  session::limits l;
  l.queue_qos0_offline = true;
  session::state q("c", &l);
  auto o2 = out(msg("a", codec::qos::at_most_once), codec::qos::at_most_once);
  CHECK(q.offer(o2, false) == session::admission::queued);
  CHECK(q.queued_count() == 1);
}

TEST_CASE("QoS 1 is in flight until PUBACK", "[session][MQTT-4.3.2-1]") {
  session::state s("c");
  auto o = out(msg(), codec::qos::at_least_once);
  REQUIRE(s.offer(o, true) == session::admission::send);
  CHECK(o.packet_id != 0);  // never 0 (3.1.1 [MQTT-2.3.1-1])
  CHECK(s.inflight_count() == 1);
  CHECK_FALSE(s.on_puback(static_cast<std::uint16_t>(o.packet_id + 1)));
  CHECK(s.on_puback(o.packet_id));
  CHECK(s.inflight_count() == 0);
  CHECK_FALSE(s.on_puback(o.packet_id));  // a second PUBACK finds nothing
}

TEST_CASE("QoS 2 goes PUBLISH, PUBREC, PUBREL, PUBCOMP and tolerates a repeated PUBREC", "[session][MQTT-4.3.3-1]") {
  session::state s("c");
  auto o = out(msg(), codec::qos::exactly_once);
  REQUIRE(s.offer(o, true) == session::admission::send);
  CHECK_FALSE(s.on_puback(o.packet_id));  // wrong acknowledgement for QoS 2
  CHECK_FALSE(s.on_pubcomp(o.packet_id)); // PUBCOMP before PUBREC completes nothing
  CHECK(s.on_pubrec(o.packet_id));
  CHECK(s.on_pubrec(o.packet_id));        // repeated: PUBREL is sent again
  CHECK(s.inflight_count() == 1);
  CHECK(s.on_pubcomp(o.packet_id));
  CHECK(s.inflight_count() == 0);
}

TEST_CASE("acknowledgements find their message in any order, with PUBCOMPs lagging behind PUBRECs",
          "[session][MQTT-4.3.3-1]") {
  session::state s("c");
  std::vector<std::uint16_t> ids;
  for (int i = 0; i < 20; ++i) {  // the default in-flight window
    auto o = out(msg(), codec::qos::exactly_once);
    REQUIRE(s.offer(o, true) == session::admission::send);
    ids.push_back(o.packet_id);
  }
  auto id = [&](int i) { return ids[static_cast<std::size_t>(i)]; };
  for (int i = 0; i < 15; ++i) CHECK(s.on_pubrec(id(i)));  // in order
  for (int i = 0; i < 5; ++i) CHECK(s.on_pubcomp(id(i)));  // the front leaves
  CHECK(s.on_pubrec(id(15)));  // just after the last one found, with the front gone
  for (int i = 19; i > 15; --i) CHECK(s.on_pubrec(id(i)));  // backwards
  CHECK(s.on_pubrec(id(8)));  // repeated, behind where the scan starts
  for (int i = 12; i >= 5; --i) CHECK(s.on_pubcomp(id(i)));  // from the middle
  CHECK_FALSE(s.on_pubrec(id(0)));  // gone
  CHECK_FALSE(s.on_pubcomp(id(10)));
  CHECK(s.inflight_count() == 7);
  for (int i = 13; i < 20; ++i) CHECK(s.on_pubcomp(id(i)));
  CHECK(s.inflight_count() == 0);
}

TEST_CASE("a full in-flight window queues, and acknowledgements release in order", "[session]") {
  session::limits l;
  l.max_inflight = 2;
  session::state s("c", &l);
  std::vector<session::outgoing> sent;
  for (int i = 0; i < 5; ++i) {
    auto o = out(msg(std::to_string(i)), codec::qos::at_least_once);
    if (s.offer(o, true) == session::admission::send) sent.push_back(o);
  }
  REQUIRE(sent.size() == 2);
  CHECK(s.queued_count() == 3);
  CHECK_FALSE(s.next_ready());  // window still full
  REQUIRE(s.on_puback(sent[0].packet_id));
  auto next = s.next_ready();
  REQUIRE(next);
  CHECK(next->msg->payload() == "2");  // order kept [MQTT-4.6.0-6]
  CHECK_FALSE(s.next_ready());
}

TEST_CASE("a message offered while others wait queues behind them, keeping order", "[session][MQTT-4.6.0-6]") {
  session::limits l;
  l.max_inflight = 1;
  session::state s("c", &l);
  auto a = out(msg("a"), codec::qos::at_least_once);
  auto b = out(msg("b"), codec::qos::at_least_once);
  REQUIRE(s.offer(a, true) == session::admission::send);
  REQUIRE(s.offer(b, true) == session::admission::queued);
  REQUIRE(s.on_puback(a.packet_id));
  auto c = out(msg("c"), codec::qos::at_least_once);
  // b waits in the queue, so c must not overtake it even though the window has room.
  CHECK(s.offer(c, true) == session::admission::queued);
  auto n = s.next_ready();
  REQUIRE(n);
  CHECK(n->msg->payload() == "b");
}

TEST_CASE("packet identifiers wrap past 65535 without reusing one in flight", "[session][MQTT-2.3.1-4]") {
  session::limits l;
  l.max_inflight = 3;
  session::state s("c", &l);
  // Hold identifiers 1 and 2 in flight, then cycle the counter through the whole space.
  auto first = out(msg(), codec::qos::at_least_once);
  auto second = out(msg(), codec::qos::at_least_once);
  REQUIRE(s.offer(first, true) == session::admission::send);
  REQUIRE(s.offer(second, true) == session::admission::send);
  CHECK(first.packet_id == 1);
  CHECK(second.packet_id == 2);
  std::uint16_t last = 0;
  for (int i = 0; i < 65535 + 10; ++i) {
    auto o = out(msg(), codec::qos::at_least_once);
    REQUIRE(s.offer(o, true) == session::admission::send);
    CHECK(o.packet_id != 0);
    CHECK(o.packet_id != first.packet_id);
    CHECK(o.packet_id != second.packet_id);
    last = o.packet_id;
    REQUIRE(s.on_puback(o.packet_id));
  }
  CHECK(last != 0);
  CHECK(s.inflight_count() == 2);
}

TEST_CASE("with every identifier in flight further messages wait instead of being lost", "[session]") {
  session::limits l;
  l.max_inflight = 65535;
  l.max_queued_messages = 10;
  session::state s("c", &l);
  std::set<std::uint16_t> ids;
  for (int i = 0; i < 65535; ++i) {
    auto o = out(msg(), codec::qos::at_least_once);
    REQUIRE(s.offer(o, true) == session::admission::send);
    ids.insert(o.packet_id);
  }
  CHECK(ids.size() == 65535);
  CHECK(ids.count(0) == 0);
  auto extra = out(msg("late"), codec::qos::at_least_once);
  CHECK(s.offer(extra, true) == session::admission::queued);
  CHECK_FALSE(s.next_ready());
  REQUIRE(s.on_puback(1234));
  auto n = s.next_ready();
  REQUIRE(n);
  CHECK(n->msg->payload() == "late");
  CHECK(n->packet_id == 1234);  // the only identifier free
}

TEST_CASE("the queue limit drops new messages", "[session]") {
  session::limits l;
  l.max_inflight = 1;
  l.max_queued_messages = 2;
  session::state s("c", &l);
  int dropped = 0;
  for (int i = 0; i < 6; ++i) {
    auto o = out(msg(std::to_string(i)), codec::qos::at_least_once);
    if (s.offer(o, false) == session::admission::dropped) ++dropped;
  }
  CHECK(s.queued_count() == 2);
  CHECK(dropped == 4);
  auto n = s.next_ready();
  REQUIRE(n);
  CHECK(n->msg->payload() == "0");  // drop_new keeps the oldest
}

TEST_CASE("drop_oldest makes room by evicting the oldest queued message", "[session]") {
  session::limits l;
  l.max_queued_messages = 2;
  l.drop_oldest = true;
  session::state s("c", &l);
  for (int i = 0; i < 4; ++i) {
    auto o = out(msg(std::to_string(i)), codec::qos::at_least_once);
    CHECK(s.offer(o, false) == session::admission::queued);
  }
  CHECK(s.queued_count() == 2);
  auto n = s.next_ready();
  REQUIRE(n);
  CHECK(n->msg->payload() == "2");  // "0" and "1" evicted
  n = s.next_ready();
  REQUIRE(n);
  CHECK(n->msg->payload() == "3");
}

TEST_CASE("the byte limit counts payload bytes", "[session]") {
  session::limits l;
  l.max_queued_bytes = 10;
  session::state s("c", &l);
  auto a = out(msg(std::string(6, 'a')), codec::qos::at_least_once);
  auto b = out(msg(std::string(6, 'b')), codec::qos::at_least_once);
  CHECK(s.offer(a, false) == session::admission::queued);
  CHECK(s.offer(b, false) == session::admission::dropped);
  CHECK(s.queued_bytes() == 6);
  REQUIRE(s.next_ready());
  CHECK(s.queued_bytes() == 0);
}

TEST_CASE("reconnect resends in-flight messages in order with DUP, and PUBREL for released QoS 2",
          "[session][MQTT-4.4.0-1]") {
  session::state s("c");
  auto a = out(msg("a"), codec::qos::at_least_once);
  auto b = out(msg("b"), codec::qos::exactly_once);
  auto c = out(msg("c"), codec::qos::exactly_once);
  REQUIRE(s.offer(a, true) == session::admission::send);
  REQUIRE(s.offer(b, true) == session::admission::send);
  REQUIRE(s.offer(c, true) == session::admission::send);
  REQUIRE(s.on_pubrec(b.packet_id));
  std::vector<std::string> seen;
  s.for_each_inflight([&](const session::inflight_entry& e) {
    if (e.state == session::phase::awaiting_pubcomp) {
      seen.push_back("PUBREL " + std::to_string(e.pub.packet_id));
    } else {
      CHECK(e.pub.dup);  // [MQTT-3.3.1-1] a re-delivery sets DUP
      seen.push_back("PUBLISH " + std::string(e.pub.msg->payload()));
    }
  });
  CHECK(seen == std::vector<std::string>{"PUBLISH a", "PUBREL " + std::to_string(b.packet_id), "PUBLISH c"});
}

TEST_CASE("inbound QoS 2: a re-sent PUBLISH before PUBREL is not routed twice", "[session][MQTT-4.3.3-2]") {
  session::state s("c");
  CHECK(s.on_qos2_publish(7));        // first: route
  CHECK_FALSE(s.on_qos2_publish(7));  // DUP re-send: acknowledge only
  CHECK(s.on_qos2_publish(8));
  CHECK(s.inbound_qos2_count() == 2);
  CHECK(s.on_pubrel(7));
  CHECK_FALSE(s.on_pubrel(7));  // repeated PUBREL: still answered, but nothing held
  CHECK(s.on_qos2_publish(7));  // after release the identifier starts a new message
}

TEST_CASE("subscriptions are remembered by filter and replaced on re-subscribe", "[session][MQTT-3.8.4-3]") {
  session::state s("c");
  session::state::subscription_record r;
  r.options.max_qos = codec::qos::at_least_once;
  CHECK(s.remember_subscription("a/#", r));
  r.options.max_qos = codec::qos::exactly_once;
  CHECK_FALSE(s.remember_subscription("a/#", r));
  REQUIRE(s.subscriptions().size() == 1);
  CHECK(s.subscriptions().at("a/#").options.max_qos == codec::qos::exactly_once);
  CHECK(s.forget_subscription("a/#"));
  CHECK_FALSE(s.forget_subscription("a/#"));
}

TEST_CASE("clear_messages forgets everything in flight and queued", "[session]") {
  session::limits l;
  l.max_inflight = 1;
  session::state s("c", &l);
  auto a = out(msg(), codec::qos::at_least_once);
  auto b = out(msg(), codec::qos::at_least_once);
  REQUIRE(s.offer(a, true) == session::admission::send);
  REQUIRE(s.offer(b, true) == session::admission::queued);
  REQUIRE(s.on_qos2_publish(3));
  s.clear_messages();
  CHECK(s.inflight_count() == 0);
  CHECK(s.queued_count() == 0);
  CHECK(s.queued_bytes() == 0);
  CHECK(s.inbound_qos2_count() == 0);
}
