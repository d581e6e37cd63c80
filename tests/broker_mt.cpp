// The multi-threaded locking policy: the host runs the io_context on several threads while
// clients publish and subscribe over TCP at once. Built and run under ThreadSanitizer in CI.
#include <mqttbroker/broker.hpp>

#include "blocking_client.hpp"
#include "catch.hpp"

#include <asio.hpp>

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace codec = mqttbroker::codec;
using test_support::blocking_client;

namespace {

/// A broker_mt on its own io_context run by `threads` threads, stopped gracefully at the end.
class mt_fixture {
 public:
  explicit mt_fixture(unsigned threads, mqttbroker::broker_options o = options())
      : work_(asio::make_work_guard(io_)), broker_(io_, o) {
    mqttbroker::broker_mt::listen_options lo;
    lo.address = "127.0.0.1";
    lo.port = 0;
    broker_.listen(lo);
    broker_.start();
    for (unsigned i = 0; i < threads; ++i) pool_.emplace_back([this] { io_.run(); });
  }
  ~mt_fixture() {
    std::atomic<bool> stopped{false};
    broker_.async_stop([&](std::error_code) { stopped = true; });
    for (int i = 0; i < 1000 && !stopped; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    work_.reset();
    io_.stop();
    for (auto& t : pool_) t.join();
  }
  std::uint16_t port() const { return broker_.local_port(); }
  static mqttbroker::broker_options options() {
    mqttbroker::broker_options o;
    o.max_queued_messages = 100'000;  // these tests check delivery, not the overflow policy
    return o;
  }
  mqttbroker::broker_mt& broker() { return broker_; }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  mqttbroker::broker_mt broker_;
  std::vector<std::thread> pool_;
};

}  // namespace

TEST_CASE("multi-threaded broker delivers every QoS 1 message once and in order per publisher", "[broker_mt][MQTT-4.6.0-2]") {
  mt_fixture f(2);
  constexpr int publishers = 4;
  constexpr int per_publisher = 300;
  constexpr int subscribers = 2;

  std::vector<std::unique_ptr<blocking_client>> subs;
  for (int i = 0; i < subscribers; ++i) {
    subs.push_back(std::make_unique<blocking_client>(f.port()));
    REQUIRE(subs.back()->connect("sub-" + std::to_string(i)) == 0);
    codec::subscribe s;
    s.packet_id = 1;
    s.entries.push_back({"mt/#", {codec::qos::at_least_once}});
    subs.back()->send(s);
    auto ack = subs.back()->expect<codec::suback>();
    REQUIRE(ack.reasons.size() == 1);
    REQUIRE(ack.reasons[0] == mqttbroker::reason_code::granted_qos_1);
  }

  // In-process subscriber on the host's side, fed from io_context threads.
  std::atomic<int> local_count{0};
  f.broker().subscribe("mt/#", [&](const mqttbroker::message_ptr&) { ++local_count; });

  std::atomic<int> failures{0};
  std::vector<std::thread> pubs;
  for (int p = 0; p < publishers; ++p) {
    pubs.emplace_back([&, p] {
      try {
        blocking_client c(f.port());
        if (c.connect("pub-" + std::to_string(p)) != 0) ++failures;
        for (int i = 0; i < per_publisher; ++i) {
          codec::publish m;
          const std::string topic = "mt/" + std::to_string(p);  // the packet only views it
          m.topic = topic;
          const std::string payload = std::to_string(i);
          m.payload = payload;
          m.qos_level = codec::qos::at_least_once;
          m.packet_id = static_cast<std::uint16_t>(i + 1);
          c.send(m);
          auto ack = c.expect<codec::puback>();
          if (ack.packet_id != m.packet_id) ++failures;
        }
        c.send(codec::disconnect{});
      } catch (...) {
        ++failures;
      }
    });
  }
  // Host-side publishes from a thread that is not an io_context thread.
  std::thread host([&] {
    for (int i = 0; i < 100; ++i) f.broker().publish("other/host", "x", codec::qos::at_most_once);
  });

  for (auto& sub : subs) {
    std::map<std::string, int> next;  // publisher topic -> next sequence number expected
    int received = 0;
    while (received < publishers * per_publisher) {
      auto p = sub->read(std::chrono::seconds(20));
      REQUIRE(p);
      auto* m = std::get_if<codec::publish>(&p->packet);
      REQUIRE(m != nullptr);
      const std::string topic(m->topic);
      CHECK(std::to_string(next[topic]) == std::string(m->payload));  // order per publisher
      ++next[topic];
      ++received;
      codec::puback ack;
      ack.packet_id = m->packet_id;
      sub->send(ack);
    }
    for (const auto& [topic, n] : next) CHECK(n == per_publisher);
    // Nothing more: each message came exactly once.
    CHECK_FALSE(sub->read(std::chrono::milliseconds(200)));
  }
  for (auto& t : pubs) t.join();
  host.join();
  CHECK(failures == 0);
  CHECK(local_count == publishers * per_publisher);
}

TEST_CASE("multi-threaded broker survives concurrent connects, takeovers and subscription churn", "[broker_mt]") {
  mt_fixture f(2);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      try {
        for (int i = 0; i < 100; ++i) {
          // Two threads share client ids, so sessions are taken over while in use.
          blocking_client c(f.port());
          if (c.connect("churn-" + std::to_string((t % 2) * 100 + i % 5), i % 2 == 0) != 0) ++failures;
          codec::subscribe s;
          s.packet_id = 1;
          const std::string filter = "churn/" + std::to_string(i % 3) + "/#";  // packets only view strings
          const std::string topic = "churn/" + std::to_string(i % 3) + "/x";
          s.entries.push_back({filter, {codec::qos::exactly_once}});
          c.send(s);
          codec::unsubscribe u;
          u.packet_id = 2;
          u.filters.push_back(s.entries[0].filter);
          codec::publish m;
          m.topic = topic;
          m.payload = "y";
          m.qos_level = codec::qos::at_most_once;
          c.send(m);
          c.send(u);
          if (i % 4 == 0) c.send(codec::disconnect{});
          // A taken-over connection is closed by the broker; either way the client moves on.
        }
      } catch (...) {
        // A connection closed by a takeover makes reads fail; that is expected here.
      }
    });
  }
  for (auto& t : threads) t.join();
  // The broker still serves a fresh client after the churn.
  blocking_client c(f.port());
  CHECK(c.connect("after-churn") == 0);
  c.send(codec::pingreq{});
  c.expect<codec::pingresp>();
  CHECK(failures == 0);
}

namespace {

/// In-process handlers that publish again from inside a handler (on the same thread), on top of
/// the outer publish's own handlers: every handler of every level runs once per message.
template <class Broker>
void check_nested_local_publishes(Broker& b, unsigned publishers, int per_publisher) {
  std::atomic<int> outer_a{0}, outer_b{0}, inner{0}, innermost{0};
  b.subscribe("nest/+/out", [&](const mqttbroker::message_ptr& m) {
    ++outer_a;
    // Two levels deep, and with more handlers than the outer publish, so the per-thread list
    // grows (and may move) while the outer publish is still walking its part of it.
    const std::string t = std::string(m->topic().substr(0, m->topic().size() - 3)) + "in";
    b.publish(t, "i");
  });
  b.subscribe("nest/+/out", [&](const mqttbroker::message_ptr&) { ++outer_b; });
  for (int i = 0; i < 8; ++i) {
    b.subscribe("nest/+/in", [&, i](const mqttbroker::message_ptr& m) {
      ++inner;
      if (i == 0) b.publish(std::string(m->topic().substr(0, m->topic().size() - 2)) + "deep", "d");
    });
  }
  b.subscribe("nest/+/deep", [&](const mqttbroker::message_ptr&) { ++innermost; });

  std::vector<std::thread> ts;
  for (unsigned p = 0; p < publishers; ++p) {
    ts.emplace_back([&b, p, per_publisher] {
      const std::string topic = "nest/" + std::to_string(p) + "/out";
      for (int i = 0; i < per_publisher; ++i) b.publish(topic, "o");
    });
  }
  for (auto& t : ts) t.join();
  const int total = static_cast<int>(publishers) * per_publisher;
  CHECK(outer_a == total);
  CHECK(outer_b == total);
  CHECK(inner == 8 * total);
  CHECK(innermost == total);
  CHECK(b.stats().messages_received == static_cast<std::uint64_t>(3 * total));
  CHECK(b.stats().messages_sent == static_cast<std::uint64_t>(2 * total + 8 * total + total));
}

}  // namespace

TEST_CASE("in-process handlers may publish again; nested publishes keep the outer handler list", "[broker_mt][inprocess]") {
  SECTION("broker<>, one thread") {
    asio::io_context io(1);
    mqttbroker::broker<> b(io);
    check_nested_local_publishes(b, 1, 500);
  }
  SECTION("broker_mt, publishers on several threads at once") {
    mt_fixture f(2);
    check_nested_local_publishes(f.broker(), 3, 500);
  }
}

TEST_CASE("multi-threaded broker: pipelined publishers paced by a slow subscriber keep order and lose nothing",
          "[broker_mt][pacing][MQTT-4.6.0-2]") {
  // Pausing a publisher races with its subscriber draining on another thread: a pause that finds
  // the subscriber caught up must go on with the rest of the read before newer bytes. Small
  // thresholds make publishers pause and resume thousands of times.
  mqttbroker::broker_options o = mt_fixture::options();
  o.max_inflight = 4;
  o.pacing_queued_messages = 8;
  mt_fixture f(2, o);
  constexpr int publishers = 4;
  constexpr int per_publisher = 5000;
  constexpr int burst = 500;

  blocking_client sub(f.port());
  REQUIRE(sub.connect("paced-sub") == 0);
  codec::subscribe s;
  s.packet_id = 1;
  s.entries.push_back({"pace/#", {codec::qos::at_least_once}});
  sub.send(s);
  REQUIRE(sub.expect<codec::suback>().reasons.size() == 1);

  std::atomic<int> failures{0};
  std::vector<std::thread> pubs;
  for (int p = 0; p < publishers; ++p) {
    pubs.emplace_back([&, p] {
      try {
        blocking_client c(f.port());
        if (c.connect("paced-pub-" + std::to_string(p)) != 0) ++failures;
        const std::string topic = "pace/" + std::to_string(p);
        for (int first = 0; first < per_publisher; first += burst) {
          std::string bytes;  // a burst in one write: the broker reads many packets at once
          for (int i = first; i < first + burst; ++i) {
            codec::publish m;
            m.topic = topic;
            const std::string payload = std::to_string(i);
            m.payload = payload;
            m.qos_level = codec::qos::at_least_once;
            m.packet_id = static_cast<std::uint16_t>(i % 60000 + 1);
            if (codec::encode(m, codec::protocol_version::v3_1_1, bytes)) ++failures;
          }
          asio::write(c.socket(), asio::buffer(bytes));
        }
        // Every PUBACK, in order: the connection was never closed under us.
        for (int i = 0; i < per_publisher; ++i) {
          auto ack = c.expect<codec::puback>();
          if (ack.packet_id != static_cast<std::uint16_t>(i % 60000 + 1)) ++failures;
        }
      } catch (...) {
        ++failures;
      }
    });
  }

  std::map<std::string, int> next;
  int received = 0;
  int out_of_order = 0;
  while (received < publishers * per_publisher) {
    auto p = sub.read(std::chrono::seconds(20));
    REQUIRE(p);
    auto* m = std::get_if<codec::publish>(&p->packet);
    REQUIRE(m != nullptr);
    const std::string topic(m->topic);
    if (std::to_string(next[topic]) != std::string(m->payload)) ++out_of_order;
    ++next[topic];
    ++received;
    codec::puback ack;
    ack.packet_id = m->packet_id;
    sub.send(ack);
  }
  for (auto& t : pubs) t.join();
  CHECK(out_of_order == 0);
  for (const auto& [topic, n] : next) CHECK(n == per_publisher);
  CHECK(failures == 0);
  const auto st = f.broker().stats();
  CHECK(st.messages_dropped == 0);
  CHECK(st.reader_pauses > 0);
}
