// The multi-threaded locking policy: the host runs the io_context on several threads while
// clients publish and subscribe over TCP at once. Built and run under ThreadSanitizer in CI.
#include <mqttbroker/broker.hpp>
#include <mqttbroker/metrics/http.hpp>

#include "blocking_client.hpp"
#include "catch.hpp"

#include <asio.hpp>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <variant>
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
    CHECK(stopped);  // a broker that does not stop fails the test (a destructor must not throw)
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

/// A client connected as `id` and subscribed to `filter` at QoS 1 (the SUBACK checked).
std::unique_ptr<blocking_client> subscribed(std::uint16_t port, const std::string& id, const std::string& filter) {
  auto c = std::make_unique<blocking_client>(port);
  REQUIRE(c->connect(id) == 0);
  codec::subscribe s;
  s.packet_id = 1;
  s.entries.push_back({filter, {codec::qos::at_least_once}});
  c->send(s);
  auto ack = c->expect<codec::suback>();
  REQUIRE(ack.reasons.size() == 1);
  REQUIRE(ack.reasons[0] == mqttbroker::reason_code::granted_qos_1);
  return c;
}

/// On a thread of its own: connects as `id` and publishes "0".."n-1" to `topic` at QoS 1, each
/// PUBACK awaited, then disconnects. What goes wrong is counted in `failures` (Catch's assertions
/// are for the main thread).
void publish_numbered(std::uint16_t port, const std::string& id, const std::string& topic, int n,
                      std::atomic<int>& failures) {
  try {
    blocking_client c(port);
    if (c.connect(id) != 0) ++failures;
    for (int i = 0; i < n; ++i) {
      codec::publish m;
      m.topic = topic;  // the packet only views it
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
}

}  // namespace

TEST_CASE("multi-threaded broker delivers every QoS 1 message once and in order per publisher", "[broker_mt][MQTT-4.6.0-6]") {
  mt_fixture f(2);
  constexpr int publishers = 4;
  constexpr int per_publisher = 300;
  constexpr int subscribers = 2;

  std::vector<std::unique_ptr<blocking_client>> subs;
  for (int i = 0; i < subscribers; ++i) subs.push_back(subscribed(f.port(), "sub-" + std::to_string(i), "mt/#"));

  // In-process subscriber on the host's side, fed from io_context threads.
  std::atomic<int> local_count{0};
  f.broker().subscribe("mt/#", [&](const mqttbroker::message_ptr&) { ++local_count; });

  std::atomic<int> failures{0};
  std::vector<std::thread> pubs;
  for (int p = 0; p < publishers; ++p) {
    pubs.emplace_back(
        [&, p] { publish_numbered(f.port(), "pub-" + std::to_string(p), "mt/" + std::to_string(p), per_publisher, failures); });
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

TEST_CASE("multi-threaded broker: a listener's connection limit holds while clients connect and leave on many threads",
          "[broker_mt][limits][listener]") {
  mt_fixture f(2);
  mqttbroker::broker_mt::listen_options lo;
  lo.address = "127.0.0.1";
  lo.port = 0;
  f.broker().listen(lo);  // listener 1, added after start
  constexpr std::size_t limit = 3;
  f.broker().limit_connections(1, limit);
  const std::uint16_t port = f.broker().local_port(1);

  // Each thread connects and leaves again and again; a client counts itself from its CONNACK to
  // before its DISCONNECT, a span inside the one the broker counts, so the clients' own count
  // can never pass the limit.
  constexpr int threads = 6;
  constexpr int rounds = 25;
  std::atomic<int> inside{0};
  std::atomic<int> most{0};
  std::atomic<int> admitted{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int r = 0; r < rounds; ++r) {
        bool in = false;
        try {
          blocking_client c(port);
          in = c.connect("limited-" + std::to_string(t)) == 0;
          if (in) {
            const int now = ++inside;
            for (int m = most.load(); now > m && !most.compare_exchange_weak(m, now);) {
            }
            ++admitted;
            --inside;
            c.send(codec::disconnect{});
            c.closed_by_peer();
          }
        } catch (const std::exception&) {
          in = false;  // closed before CONNACK: refused
        }
        if (!in) ++refused;
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK(most.load() <= static_cast<int>(limit));
  CHECK(admitted + refused == threads * rounds);
  CHECK(admitted > 0);
  // Every close was counted: the listener is empty again, and takes `limit` clients at once.
  for (int i = 0; i < 1000 && f.broker().connections(1) != 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(f.broker().connections(1) == 0);
  std::vector<std::unique_ptr<blocking_client>> full;
  for (std::size_t i = 0; i < limit; ++i) {
    full.push_back(std::make_unique<blocking_client>(port));
    CHECK(full.back()->connect("full-" + std::to_string(i)) == 0);
  }
  bool over_refused = false;
  try {
    blocking_client over(port);
    codec::connect c;
    c.client_id = "over";
    over.send(c);
    over_refused = over.closed_by_peer();
  } catch (const std::exception&) {
    over_refused = true;  // closed before the CONNECT was written
  }
  CHECK(over_refused);
  CHECK(f.broker().stats().connections_refused == static_cast<std::uint64_t>(refused.load()) + 1);
}

namespace {

/// What one churn thread saw; checked on the main thread (Catch's assertions are not thread-safe).
struct churn_tally {
  int completed = 0;         // connections that got every acknowledgement
  int taken_over = 0;        // connections the broker closed for a takeover before that
  int publishes_acked = 0;   // PUBACKs received
  int publishes_unknown = 0; // PUBLISHes sent on connections closed before their PUBACK came
  std::vector<std::string> errors;
};

/// One connection of the churn: CONNECT, then SUBSCRIBE, a QoS 1 PUBLISH that matches it and
/// UNSUBSCRIBE in one write; reads SUBACK, PUBACK and UNSUBACK in that order, and the message
/// itself after the SUBACK, between PUBLISHes that other connections (or this session's offline
/// queue) bring.
///
/// A takeover by the thread that shares the client id may end it at any point after the CONNACK:
/// the broker closes it, in 5.0 with DISCONNECT 0x8E first [MQTT-3.1.4-3]. Until that close is
/// carried out, the old connection, having no session, is refused (SUBACK 0x80, UNSUBACK 0x11);
/// a refusal must be followed by that close. Anything else is an error.
void churn_connection(std::uint16_t port, codec::protocol_version v, const std::string& id, bool clean, int k,
                      bool disconnect, const std::string& payload, churn_tally& tally) {
  const bool v5 = v == codec::protocol_version::v5;
  blocking_client c(port, v);
  codec::properties_builder props;
  if (v5 && !clean) props.add(codec::property_id::session_expiry_interval, std::uint32_t{0xFFFFFFFF});  // kept, as in 3.1.1
  const auto code = c.connect(id, clean, 60, props.view());
  if (code != 0) {
    tally.errors.push_back(id + ": CONNACK " + std::to_string(code));
    return;
  }
  // Writes may find the connection closed by a takeover: then the reads below find out why.
  auto write = [&](const auto& packet) {
    std::string bytes;
    if (codec::encode(packet, v, bytes)) throw std::runtime_error("encode");
    std::error_code ignored;
    asio::write(c.socket(), asio::buffer(bytes), ignored);
  };
  const std::string filter = "churn/" + std::to_string(k) + "/#";
  const std::string topic = "churn/" + std::to_string(k) + "/x";
  std::string out;
  codec::subscribe s;
  s.packet_id = 1;
  s.entries.push_back({filter, {codec::qos::exactly_once}});
  codec::publish m;
  m.topic = topic;
  m.payload = payload;
  m.qos_level = codec::qos::at_least_once;
  m.packet_id = 2;
  codec::unsubscribe u;
  u.packet_id = 3;
  u.filters.push_back(filter);
  if (codec::encode(s, v, out) || codec::encode(m, v, out) || codec::encode(u, v, out))
    throw std::runtime_error("encode");
  std::error_code ignored;
  asio::write(c.socket(), asio::buffer(out), ignored);

  bool suback = false, puback = false, unsuback = false, own = false;
  bool refused = false;        // an acknowledgement only a connection that lost its session gets
  bool told_taken_over = false;
  auto fail = [&](const std::string& what) { tally.errors.push_back(id + " (" + payload + "): " + what); };
  // Until every acknowledgement and the own message are in, or the connection is closed.
  while (!(suback && puback && unsuback && own && !refused)) {
    auto p = c.read(std::chrono::seconds(10));
    if (!p) {
      if (!c.closed()) return fail(refused ? "refused, and not closed within 10 s" : "no packet within 10 s");
      if (v5 && !told_taken_over) return fail("closed without DISCONNECT 0x8E");
      ++tally.taken_over;
      if (!puback) ++tally.publishes_unknown;
      return;
    }
    if (told_taken_over) return fail("a packet after DISCONNECT");
    if (auto* pub = std::get_if<codec::publish>(&p->packet)) {
      // Any churn topic: other connections' messages, and what this session kept while away.
      if (pub->topic.substr(0, 6) != "churn/") return fail("PUBLISH to " + std::string(pub->topic));
      if (pub->qos_level == codec::qos::at_least_once) {
        codec::puback a;
        a.packet_id = pub->packet_id;
        write(a);
      } else if (pub->qos_level != codec::qos::at_most_once) {
        return fail("PUBLISH at QoS 2");
      }
      if (pub->topic == topic && std::string(pub->payload) == payload) {
        // Matched while subscribed, it may come after the UNSUBACK [MQTT-3.10.4-3].
        if (!suback || own) return fail("own message out of place");
        own = true;
      }
    } else if (auto* sa = std::get_if<codec::suback>(&p->packet)) {
      if (suback || sa->packet_id != 1 || sa->reasons.size() != 1) return fail("unexpected SUBACK");
      suback = true;
      if (sa->reasons[0] == mqttbroker::reason_code::unspecified_error) {
        refused = true;
      } else if (sa->reasons[0] != mqttbroker::reason_code::granted_qos_2) {
        return fail("SUBACK " + std::to_string(static_cast<int>(sa->reasons[0])));
      }
    } else if (auto* pa = std::get_if<codec::puback>(&p->packet)) {
      // In order: one connection's packets are handled in the order sent [MQTT-4.6.0-2].
      if (!suback || puback || pa->packet_id != 2) return fail("unexpected PUBACK");
      puback = true;
      ++tally.publishes_acked;
    } else if (auto* ua = std::get_if<codec::unsuback>(&p->packet)) {
      if (!puback || unsuback || ua->packet_id != 3) return fail("unexpected UNSUBACK");
      unsuback = true;
      if (v5) {
        if (ua->reasons.size() != 1) return fail("UNSUBACK without a reason");
        if (ua->reasons[0] == mqttbroker::reason_code::no_subscription_existed) {
          refused = true;
        } else if (ua->reasons[0] != mqttbroker::reason_code::success) {
          return fail("UNSUBACK " + std::to_string(static_cast<int>(ua->reasons[0])));
        }
      }
    } else if (auto* d = std::get_if<codec::disconnect>(&p->packet)) {
      if (!v5 || d->reason != mqttbroker::reason_code::session_taken_over)
        return fail("DISCONNECT " + std::to_string(static_cast<int>(d->reason)));
      told_taken_over = true;
    } else {
      return fail("unexpected packet");
    }
  }
  ++tally.completed;
  if (disconnect) {
    write(codec::disconnect{});
    // The broker closes after DISCONNECT; a takeover may have come first, with its DISCONNECT.
    for (;;) {
      auto p = c.read(std::chrono::seconds(10));
      if (!p) {
        if (!c.closed()) fail("still open 10 s after DISCONNECT");
        return;
      }
      if (!std::holds_alternative<codec::publish>(p->packet) && !std::holds_alternative<codec::disconnect>(p->packet))
        return fail("unexpected packet after DISCONNECT");
    }
  }
}

/// `c`, whose client id a later connection took: the broker closes it, in 5.0 with DISCONNECT
/// 0x8E first [MQTT-3.1.4-3]; messages may come before.
void expect_taken_over(blocking_client& c, codec::protocol_version v, const std::string& id, churn_tally& tally) {
  bool told = false;
  for (;;) {
    auto p = c.read(std::chrono::seconds(10));
    if (!p) {
      if (!c.closed()) tally.errors.push_back(id + ": taken over, and still open after 10 s");
      else if (v == codec::protocol_version::v5 && !told)
        tally.errors.push_back(id + ": taken over, closed without DISCONNECT 0x8E");
      return;
    }
    auto* d = std::get_if<codec::disconnect>(&p->packet);
    if (told || (!d && !std::holds_alternative<codec::publish>(p->packet)) ||
        (d && (v != codec::protocol_version::v5 || d->reason != mqttbroker::reason_code::session_taken_over))) {
      tally.errors.push_back(id + ": taken over, unexpected packet");
      return;
    }
    told = d != nullptr;
  }
}

}  // namespace

TEST_CASE("multi-threaded broker survives concurrent connects, takeovers and subscription churn", "[broker_mt][MQTT-3.1.4-3]") {
  mqttbroker::broker_options o = mt_fixture::options();
  o.sys_interval = std::chrono::seconds(0);  // the counters below are the clients' alone
  mt_fixture f(2, o);
  constexpr int threads = 4;
  constexpr int per_thread = 100;
  constexpr int ids = 5;
  std::vector<churn_tally> tallies(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      // Threads t and t + 2 share client ids, one in 3.1.1 and one in 5.0, so sessions are taken
      // over while in use, across versions.
      const auto v = t < 2 ? codec::protocol_version::v3_1_1 : codec::protocol_version::v5;
      for (int i = 0; i < per_thread; ++i) {
        const std::string id = "churn-" + std::to_string((t % 2) * 100 + i % ids);
        auto& tally = tallies[static_cast<std::size_t>(t)];
        try {
          // Every tenth a takeover for certain, whatever the other thread does: an earlier
          // connection with the same id is still open when the churn connection comes.
          std::optional<blocking_client> earlier;
          if (i % 10 == 9) {
            earlier.emplace(f.port(), v);
            if (earlier->connect(id, i % 2 == 0) != 0) tally.errors.push_back(id + ": CONNACK refused");
          }
          churn_connection(f.port(), v, id, i % 2 == 0, i % 3, i % 4 == 0, std::to_string(t) + "-" + std::to_string(i),
                           tally);
          if (earlier) expect_taken_over(*earlier, v, id, tally);
        } catch (const std::exception& e) {
          tally.errors.push_back(id + ": " + e.what());
        }
      }
    });
  }
  for (auto& t : pool) t.join();

  churn_tally all;
  for (const auto& t : tallies) {
    all.completed += t.completed;
    all.taken_over += t.taken_over;
    all.publishes_acked += t.publishes_acked;
    all.publishes_unknown += t.publishes_unknown;
    for (const auto& e : t.errors) all.errors.push_back(e);
  }
  std::printf("churn: %d connections completed, %d taken over (%d of them 5.0); %d PUBACKs, %d PUBLISHes cut off\n",
              all.completed, all.taken_over, tallies[2].taken_over + tallies[3].taken_over, all.publishes_acked,
              all.publishes_unknown);
  for (const auto& e : all.errors) UNSCOPED_INFO(e);
  CHECK(all.errors.empty());
  CHECK(all.completed + all.taken_over == threads * per_thread);

  // The broker's side, once it has seen every client go (bounded wait).
  auto st = f.broker().stats();
  for (int i = 0; i < 2000 && st.connections != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    st = f.broker().stats();
  }
  CHECK(st.connections == 0);
  CHECK(st.connections_accepted == static_cast<std::uint64_t>(threads * (per_thread + per_thread / 10)));
  CHECK(st.protocol_errors == 0);
  // Every acknowledged PUBLISH counted; one cut off by a takeover may or may not have been read.
  CHECK(st.messages_received >= static_cast<std::uint64_t>(all.publishes_acked));
  CHECK(st.messages_received <= static_cast<std::uint64_t>(all.publishes_acked + all.publishes_unknown));
  // Each id's last CONNECT (i = 95..99 on both threads that use it; at 99 the earlier connection
  // has the same flag) decides whether its session stays: Clean Session 0 for ids 0, 2 and 4, so
  // 3 sessions per pair of threads.
  CHECK(st.sessions == 6);

  // The broker still serves a fresh client after the churn.
  blocking_client c(f.port());
  CHECK(c.connect("after-churn") == 0);
  c.send(codec::pingreq{});
  c.expect<codec::pingresp>();
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
          "[broker_mt][pacing][MQTT-4.6.0-6]") {
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

namespace {

/// An authentication service with a thread of its own: it answers each request a little later,
/// in order, as a remote service would, while the broker's threads go on serving.
class auth_service {
 public:
  auth_service() : worker_([this] { run(); }) {}
  auth_service(const auth_service&) = delete;
  auth_service& operator=(const auth_service&) = delete;
  ~auth_service() {
    {
      std::lock_guard<std::mutex> lk(mutex_);
      done_ = true;
    }
    wake_.notify_all();
    worker_.join();
  }
  void ask(std::string client_id, mqttbroker::hooks::auth_reply reply) {
    {
      std::lock_guard<std::mutex> lk(mutex_);
      requests_.emplace_back(std::move(client_id), std::move(reply));
    }
    wake_.notify_one();
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lk(mutex_);
    for (;;) {
      wake_.wait(lk, [this] { return done_ || !requests_.empty(); });
      if (requests_.empty()) return;
      auto [id, reply] = std::move(requests_.front());
      requests_.pop_front();
      lk.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      reply(id.rfind("ok-", 0) == 0 ? mqttbroker::hooks::auth_result::accept
                                    : mqttbroker::hooks::auth_result::not_authorized);
      lk.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::pair<std::string, mqttbroker::hooks::auth_reply>> requests_;
  bool done_ = false;
  std::thread worker_;  // last: it starts once the rest is built
};

struct service_hooks {
  auth_service* service = nullptr;
  void authenticate(const mqttbroker::hooks::connect_info& c, mqttbroker::hooks::auth_reply reply) {
    service->ask(std::string(c.client_id), std::move(reply));
  }
};
struct service_policies : mqttbroker::default_policies {
  using locking = mqttbroker::locking::shared;
  using hooks = service_hooks;
};

}  // namespace

TEST_CASE("multi-threaded broker: an asynchronous authenticate answered from another thread, clients in parallel",
          "[broker_mt][hooks]") {
  auth_service service;  // outlives the broker; every request is answered before the clients finish
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  mqttbroker::broker<service_policies> b(io, {}, service_hooks{&service});
  b.listen({"127.0.0.1", 0});
  b.start();
  std::vector<std::thread> pool;
  for (int i = 0; i < 2; ++i) pool.emplace_back([&io] { io.run(); });

  constexpr int clients = 16;
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      try {
        const bool ok = i % 2 == 0;
        blocking_client c(b.local_port());
        const std::uint8_t code = c.connect((ok ? "ok-" : "no-") + std::to_string(i));
        if (code != (ok ? 0 : 5)) ++wrong;
        if (!ok) {
          if (!c.closed_by_peer()) ++wrong;
          return;
        }
        codec::publish m;
        m.topic = "auth/x";
        m.payload = "after the CONNACK";
        m.qos_level = codec::qos::at_least_once;
        m.packet_id = 1;
        c.send(m);
        if (c.expect<codec::puback>().packet_id != 1) ++wrong;
      } catch (...) {
        ++wrong;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(wrong == 0);
  CHECK(b.stats().messages_received == clients / 2);

  std::atomic<bool> stopped{false};
  b.async_stop([&](std::error_code) { stopped = true; });
  for (int i = 0; i < 1000 && !stopped; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(stopped);
  work.reset();
  io.stop();
  for (auto& t : pool) t.join();
}

TEST_CASE("multi-threaded broker: a shared group's members get each message of concurrent publishers once",
          "[broker_mt][shared]") {
  mt_fixture f(2);
  constexpr int publishers = 4;
  constexpr int per_publisher = 200;
  constexpr int members = 3;
  constexpr int total = publishers * per_publisher;

  std::vector<std::unique_ptr<blocking_client>> subs;
  for (int i = 0; i < members; ++i) subs.push_back(subscribed(f.port(), "member-" + std::to_string(i), "$share/g/mt/#"));

  // Each member reads on its own thread until all messages are in; the tallies are checked here.
  std::atomic<int> received{0};
  std::atomic<int> failures{0};
  std::vector<std::vector<std::string>> got(members);
  std::vector<std::thread> readers;
  for (int i = 0; i < members; ++i) {
    readers.emplace_back([&, i] {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      try {
        while (received < total && std::chrono::steady_clock::now() < deadline) {
          auto p = subs[std::size_t(i)]->read(std::chrono::milliseconds(100));
          if (!p) continue;
          auto* m = std::get_if<codec::publish>(&p->packet);
          if (m == nullptr) {
            ++failures;
            continue;
          }
          got[std::size_t(i)].push_back(std::string(m->topic) + " " + std::string(m->payload));
          codec::puback ack;
          ack.packet_id = m->packet_id;
          subs[std::size_t(i)]->send(ack);
          ++received;
        }
      } catch (...) {
        ++failures;
      }
    });
  }
  std::vector<std::thread> pubs;
  for (int p = 0; p < publishers; ++p) {
    pubs.emplace_back(
        [&, p] { publish_numbered(f.port(), "shared-pub-" + std::to_string(p), "mt/" + std::to_string(p), per_publisher, failures); });
  }
  for (auto& t : pubs) t.join();
  for (auto& t : readers) t.join();
  CHECK(failures == 0);
  std::set<std::string> all;
  std::size_t count = 0;
  for (const auto& g : got) {
    CHECK(g.size() > 0);  // round robin: every member has its turns
    count += g.size();
    all.insert(g.begin(), g.end());
  }
  CHECK(count == std::size_t(total));  // once each
  CHECK(all.size() == std::size_t(total));
  for (auto& s : subs) CHECK_FALSE(s->read(std::chrono::milliseconds(200)));  // nothing more
}

TEST_CASE("multi-threaded broker: redirect() from a host thread while another host thread publishes to the clients",
          "[broker_mt][redirect]") {
  mt_fixture f(2);
  constexpr int clients = 8;
  std::vector<std::unique_ptr<blocking_client>> cs;
  for (int i = 0; i < clients; ++i) {
    // Even ones 5.0 (DISCONNECT 0x9C, then the close), odd ones 3.1.1 (the close alone).
    const auto v = i % 2 == 0 ? codec::protocol_version::v5 : codec::protocol_version::v3_1_1;
    cs.push_back(std::make_unique<blocking_client>(f.port(), v));
    REQUIRE(cs.back()->connect("r-" + std::to_string(i)) == 0);
    codec::subscribe s;
    s.packet_id = 1;
    s.entries.push_back({"r/#", {codec::qos::at_most_once}});
    cs.back()->send(s);
    cs.back()->expect<codec::suback>();
  }
  std::atomic<bool> done{false};
  std::thread publisher([&] {
    while (!done) {
      f.broker().publish("r/x", "p");
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  });
  std::atomic<int> wrong{0};
  std::thread host([&] {
    for (int i = 0; i < clients; ++i)
      if (!f.broker().redirect("r-" + std::to_string(i), "b.example:1883")) ++wrong;
  });
  host.join();
  for (int i = 0; i < clients; ++i) {
    blocking_client& c = *cs[static_cast<std::size_t>(i)];
    bool disconnect = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      auto p = c.read();
      if (!p) break;  // closed (or a timeout: then not closed)
      if (std::chrono::steady_clock::now() > deadline) {
        ++wrong;  // still open, messages still coming
        break;
      }
      if (disconnect) ++wrong;  // nothing follows a DISCONNECT [MQTT-3.14.4-1]
      if (auto* d = std::get_if<codec::disconnect>(&p->packet)) {
        const auto ref = d->properties.find(codec::property_id::server_reference);
        if (d->reason != mqttbroker::reason_code::use_another_server || !ref || ref->value != "b.example:1883") ++wrong;
        disconnect = true;
      } else if (!std::holds_alternative<codec::publish>(p->packet)) {
        ++wrong;
      }
    }
    CHECK(c.closed());
    CHECK(disconnect == (i % 2 == 0));
  }
  done = true;
  publisher.join();
  CHECK(wrong == 0);
  for (int i = 0; i < clients; ++i) CHECK_FALSE(f.broker().redirect("r-" + std::to_string(i), "b.example:1883"));
}

namespace {
/// One HTTP exchange on loopback: what came back before the server closed ("" when refused).
std::string scrape_once(std::uint16_t port) {
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  std::error_code ec;
  s.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  if (ec) return {};
  const std::string request = "GET /metrics HTTP/1.1\r\n\r\n";
  asio::write(s, asio::buffer(request), ec);
  std::string got;
  char buf[1024];
  while (!ec) {
    const std::size_t n = s.read_some(asio::buffer(buf), ec);
    got.append(buf, n);
  }
  return got;
}
}  // namespace

TEST_CASE("http_endpoint on an io_context of three threads: scrapes in parallel, close() from a host thread",
          "[broker_mt][metrics]") {
  asio::io_context io;
  int made = 0;  // plain: the body source runs on the endpoint's strand, one scrape at a time
  mqttbroker::metrics::http_endpoint ep(io.get_executor(), {asio::ip::make_address("127.0.0.1"), 0}, [&made] {
    ++made;
    return std::string("x_total 1\n");
  });
  const std::uint16_t port = ep.port();
  auto work = asio::make_work_guard(io);
  std::vector<std::thread> runners;
  for (int i = 0; i < 3; ++i) runners.emplace_back([&io] { io.run(); });
  std::atomic<int> answered{0}, wrong{0};
  std::vector<std::thread> scrapers;
  for (int t = 0; t < 4; ++t)
    scrapers.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        const std::string got = scrape_once(port);
        if (got.rfind("HTTP/1.1 200 OK\r\n", 0) == 0 && got.find("\r\n\r\nx_total 1\n") != std::string::npos)
          ++answered;
        else if (!got.empty() && got.rfind("HTTP/1.1 503", 0) != 0)
          ++wrong;  // refused or 503 only once closed
      }
    });
  // Close while the scrapers are at it, from this thread, not one of the io_context's.
  while (answered.load() < 20) std::this_thread::yield();
  ep.close();
  for (auto& t : scrapers) t.join();
  CHECK(wrong == 0);
  CHECK(answered >= 20);
  // Once the close has run on the strand, connections are refused.
  std::string after = "x";
  for (int i = 0; i < 100 && !after.empty(); ++i) {
    after = scrape_once(port);
    if (!after.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(after.empty());
  work.reset();
  for (auto& t : runners) t.join();
  CHECK(made == static_cast<int>(ep.scrapes()));
  CHECK(ep.scrapes() >= 20);
}
