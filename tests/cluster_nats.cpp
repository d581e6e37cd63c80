// cluster::nats against a real nats-server on loopback: brokers in this process, each a node,
// their NATS I/O on one io_context (cluster::nats_event_loop). Needs nats-server (Debian
// nats-server); without it the cases say so and pass, unless CI is set.

#include <mqttbroker/broker.hpp>
#include <mqttbroker/cluster/nats.hpp>
#include <mqttbroker/transport/memory.hpp>

#include "catch.hpp"
#include "rx.hpp"
#include "stream_client.hpp"

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace mb = mqttbroker;
using mb::codec::qos;

namespace {

struct node_policies : mb::default_policies {
  using transport = mb::transport::memory;
  using cluster = mb::cluster::nats;
};
using node = mb::broker<node_policies>;
/// A node whose persistent sessions' expiry and subscriptions the cluster keeps.
struct keeping_policies : node_policies {
  using storage = mb::cluster::nats_sessions;
};
using keeping_node = mb::broker<keeping_policies>;

std::string nats_server_program() {
  for (const char* p : {"/usr/bin/nats-server", "/usr/sbin/nats-server", "/usr/local/bin/nats-server"})
    if (::access(p, X_OK) == 0) return p;
  return {};
}

std::uint16_t free_port() {
  asio::io_context io;
  asio::ip::tcp::acceptor a(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

/// nats-server on a loopback port, for the test's life.
class nats_server {
 public:
  explicit nats_server(const std::string& program) : port_(free_port()) {
    const std::string port = std::to_string(port_);
    char folder[] = "/tmp/mqttbroker-nats-XXXXXX";  // JetStream's store (retained messages)
    REQUIRE(::mkdtemp(folder) != nullptr);
    store_ = folder;
    pid_ = ::fork();
    if (pid_ == 0) {
      // Its log is of no use here: quiet.
      if (int null = ::open("/dev/null", O_WRONLY); null >= 0) {
        ::dup2(null, 1);
        ::dup2(null, 2);
      }
      ::execl(program.c_str(), program.c_str(), "-a", "127.0.0.1", "-p", port.c_str(), "-js", "-sd", store_.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // Ready when it accepts.
    for (int i = 0; i < 200; ++i) {
      asio::io_context io;
      asio::ip::tcp::socket s(io);
      std::error_code ec;
      s.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ec);
      if (!ec) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    FAIL("nats-server did not listen on port " << port_);
  }
  ~nats_server() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    std::error_code ignored;
    std::filesystem::remove_all(store_, ignored);
  }
  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }

 private:
  std::uint16_t port_;
  std::string store_;
  pid_t pid_ = -1;
};

/// An io_context on a thread of its own, and a way to run something there and wait for it.
class loop {
 public:
  loop() : guard_(asio::make_work_guard(io)), thread_([this] { io.run(); }) {}
  ~loop() {
    guard_.reset();
    io.stop();
    thread_.join();
  }
  template <class F>
  auto run(F f) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto done = task.get_future();
    asio::post(io, [&task] { task(); });
    return done.get();
  }
  asio::io_context io;

 private:
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::thread thread_;
};

/// Messages an in-process subscriber got, from any thread.
struct inbox {
  std::mutex mutex;
  std::vector<mb::message_ptr> got;
  mb::engine::local_handler handler() {
    return [this](const mb::message_ptr& m) {
      std::lock_guard<std::mutex> lk(mutex);
      got.push_back(m);
    };
  }
  std::size_t size() {
    std::lock_guard<std::mutex> lk(mutex);
    return got.size();
  }
  /// Waits (bounded) until `n` arrived.
  bool wait_for(std::size_t n) {
    for (int i = 0; i < 400 && size() < n; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return size() >= n;
  }
};

bool have_nats_server() {
  if (!nats_server_program().empty()) return true;
  if (std::getenv("CI") != nullptr) FAIL("nats-server is not installed (Debian nats-server)");
  WARN("nats-server is not installed (Debian nats-server): skipped");
  return false;
}

/// Brokers as nodes of one cluster on `url`, started and connected.
template <class Node>
struct basic_cluster_of_nodes {
  basic_cluster_of_nodes(loop& l, const std::string& url, std::initializer_list<const char*> names,
                         const mb::broker_options& options = {},
                         const std::function<void(mb::cluster::nats_options&)>& configure = {})
      : l_(l) {
    for (const char* name : names) {
      auto b = std::make_unique<Node>(l.io, options);
      mb::cluster::nats_options o;
      o.servers = {url};
      o.node = name;
      o.prefix = "test";
      if (configure) configure(o);
      b->cluster().configure(o);
      if constexpr (std::is_same_v<typename Node::engine_type::storage_type, mb::cluster::nats_sessions>)
        b->storage().attach(b->cluster());
      // Connect blocks until nats-server answers: on this thread, not the io_context's.
      REQUIRE_FALSE(b->connect_cluster());
      static int count = 0;
      listeners.push_back(std::string("cluster-node-") + name + "-" + std::to_string(++count));
      l.run([&] {
        b->listen(mb::transport::memory::listen_options(listeners.back()));
        b->start();
        return 0;
      });
      nodes.push_back(std::move(b));
    }
  }
  ~basic_cluster_of_nodes() {
    for (std::size_t i = 0; i < nodes.size(); ++i) stop(i);
  }
  /// Node i stops and leaves its cluster (the broker's destructor, off the io thread).
  void stop(std::size_t i) {
    auto& b = nodes.at(i);
    if (!b) return;
    std::promise<void> stopped;
    auto done = stopped.get_future();
    asio::post(l_.io, [&] { b->async_stop([&](std::error_code) { stopped.set_value(); }); });
    done.wait();
    b.reset();
  }
  Node& operator[](std::size_t i) { return *nodes.at(i); }
  std::vector<std::unique_ptr<Node>> nodes;
  std::vector<std::string> listeners;  // each node's memory listener

 private:
  loop& l_;
};

using cluster_of_nodes = basic_cluster_of_nodes<node>;

/// An MQTT client of one node (over its memory listener), driven on the loop's thread.
class session_client {
 public:
  session_client(loop& l, const std::string& listener, const std::string& id, bool clean = true) : l_(l) {
    l_.run([&] {
      c_ = std::make_unique<test_client::memory_client>(l_.io, listener, mb::codec::protocol_version::v3_1_1);
      c_->connect(id, clean);
      return 0;
    });
    connack = next();
    REQUIRE(connack.type == mb::codec::packet_type::connack);
  }
  test_rx::rx connack;
  ~session_client() {
    l_.run([&] {
      c_.reset();
      return 0;
    });
  }
  void subscribe(const std::string& filter, qos q) {
    l_.run([&] {
      c_->subscribe(1, filter, q);
      return 0;
    });
    REQUIRE(next().type == mb::codec::packet_type::suback);
  }
  void publish(const std::string& topic, const std::string& payload, qos q, std::uint16_t id) {
    l_.run([&] {
      c_->publish(topic, payload, q, id);
      return 0;
    });
  }
  void unsubscribe(const std::string& filter) {
    l_.run([&] {
      c_->unsubscribe(2, filter);
      return 0;
    });
    REQUIRE(next().type == mb::codec::packet_type::unsuback);
  }
  /// The next packet the node sent, waited for (bounded).
  test_rx::rx next() {
    for (int i = 0; i < 500; ++i) {
      if (auto r = l_.run([&]() -> std::optional<test_rx::rx> {
            if (c_->empty()) return std::nullopt;
            return c_->pop();
          }))
        return *r;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL("no packet from the node within 5 s");
    return {};
  }
  std::size_t pending() {
    return l_.run([&] { return c_->pending(); });
  }
  void puback(std::uint16_t id) {
    l_.run([&] {
      c_->puback(id);
      return 0;
    });
  }
  /// Whether the node closed the connection, waited for (bounded).
  bool closed_by_node() {
    for (int i = 0; i < 500; ++i) {
      if (l_.run([&] { return c_->closed(); })) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

 private:
  loop& l_;
  std::unique_ptr<test_client::memory_client> c_;
};

/// A subscription reaches nats-server on the subscribing node's connection, a publish on the
/// publisher's: a round trip on the subscriber's makes the server know it before the test publishes.
template <class Node>
void settle_interest(Node& subscriber) { REQUIRE_FALSE(subscriber.cluster().flush(std::chrono::seconds(5))); }

}  // namespace

TEST_CASE("cluster::nats: a message published on one node reaches the subscribers of the others, by their filters",
          "[cluster][nats]") {
  if (!have_nats_server()) return;
  nats_server server(nats_server_program());
  loop l;
  cluster_of_nodes c(l, server.url(), {"a", "b", "c"});
  inbox on_b, on_c, elsewhere;
  l.run([&] { return c[1].subscribe("s/+/x", on_b.handler(), qos::exactly_once); });
  l.run([&] { return c[2].subscribe("s/#", on_c.handler(), qos::at_least_once); });
  l.run([&] { return c[2].subscribe("other/#", elsewhere.handler(), qos::at_most_once); });
  settle_interest(c[1]);
  settle_interest(c[2]);
  l.run([&] { return c[0].publish("s/1/x", "q2", qos::exactly_once, false); });
  l.run([&] { return c[0].publish("s/2/y", "q1", qos::at_least_once, false); });
  l.run([&] { return c[0].publish("s", "parent of #", qos::at_most_once, false); });  // [MQTT-4.7.1-2]
  REQUIRE(on_b.wait_for(1));
  REQUIRE(on_c.wait_for(3));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // nothing more comes
  REQUIRE(on_b.size() == 1);
  CHECK(on_b.got[0]->topic() == "s/1/x");
  CHECK(on_b.got[0]->payload() == "q2");
  CHECK(on_b.got[0]->qos_level() == qos::exactly_once);
  REQUIRE(on_c.size() == 3);
  // QoS 0 crosses on core NATS, QoS 1 and 2 through JetStream: no order between them (the order
  // kept is per topic and QoS [MQTT-4.6.0-6]).
  std::vector<std::string> topics;
  for (const auto& m : on_c.got) topics.emplace_back(m->topic());
  std::sort(topics.begin(), topics.end());
  CHECK(topics == std::vector<std::string>{"s", "s/1/x", "s/2/y"});
  CHECK(elsewhere.size() == 0);
  const auto sa = l.run([&] { return c[0].cluster().statistics(); });
  CHECK(sa.published == 3);
  CHECK(sa.received == 0);  // no echo: its own messages never come back
  const auto sc = l.run([&] { return c[2].cluster().statistics(); });
  CHECK(sc.received == 3);
  CHECK(sc.malformed == 0);
}

TEST_CASE("cluster::nats: a node whose filters overlap gets a message once, and so do its subscribers",
          "[cluster][nats]") {
  if (!have_nats_server()) return;
  nats_server server(nats_server_program());
  loop l;
  cluster_of_nodes c(l, server.url(), {"a", "b"});
  inbox wide, narrow;
  l.run([&] { return c[1].subscribe("d/#", wide.handler(), qos::at_most_once); });
  l.run([&] { return c[1].subscribe("d/x", narrow.handler(), qos::at_most_once); });
  settle_interest(c[1]);
  for (int i = 0; i < 50; ++i) l.run([&] { return c[0].publish("d/x", std::to_string(i), qos::at_most_once, false); });
  REQUIRE(wide.wait_for(50));
  REQUIRE(narrow.wait_for(50));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(wide.size() == 50);
  CHECK(narrow.size() == 50);
  for (std::size_t i = 0; i < 50; ++i) CHECK(wide.got[i]->payload() == std::to_string(i));  // in order
  const auto sb = l.run([&] { return c[1].cluster().statistics(); });
  CHECK(sb.received == 50);
  CHECK(sb.repeats == 50);  // each came twice, through both filters
}

TEST_CASE("cluster::nats: QoS 1 and 2 cross through JetStream: once per node, a node's own not back, repeats dropped",
          "[cluster][nats]") {
  if (!have_nats_server()) return;
  nats_server server(nats_server_program());
  loop l;
  cluster_of_nodes c(l, server.url(), {"a", "b"});
  inbox here, wide, narrow;
  // Node a's own subscriber: its JetStream consumer brings a's messages back, which a drops (its
  // subscriber has them from a's own routing).
  l.run([&] { return c[0].subscribe("j/#", here.handler(), qos::exactly_once); });
  l.run([&] { return c[1].subscribe("j/#", wide.handler(), qos::exactly_once); });
  l.run([&] { return c[1].subscribe("j/x", narrow.handler(), qos::at_least_once); });
  settle_interest(c[0]);
  settle_interest(c[1]);
  // A consumer per subject: "j/#" is two ("j" and "j.>"), "j/x" one; a's one filter, two.
  CHECK(l.run([&] { return c[1].cluster().statistics().subscriptions; }) == 3 + 3);
  CHECK(l.run([&] { return c[0].cluster().statistics().subscriptions; }) == 2 + 2);
  for (int i = 0; i < 40; ++i) {
    l.run([&] { return c[0].publish("j/x", std::to_string(i), i % 2 ? qos::exactly_once : qos::at_least_once, false); });
    // Numbers of a's that b never sees (no node wants them): the repeat window has gaps to clear.
    for (int k = 0; k < i * 5; ++k) l.run([&] { return c[0].publish("zz", "", qos::at_most_once, false); });
  }
  REQUIRE(wide.wait_for(40));
  REQUIRE(narrow.wait_for(40));
  REQUIRE(here.wait_for(40));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // nothing more comes
  CHECK(here.size() == 40);
  CHECK(wide.size() == 40);
  CHECK(narrow.size() == 40);
  for (std::size_t i = 0; i < 40; ++i) {
    CHECK(wide.got[i]->payload() == std::to_string(i));  // in order [MQTT-4.6.0-6]
    CHECK(wide.got[i]->qos_level() == (i % 2 ? qos::exactly_once : qos::at_least_once));
  }
  const auto sa = l.run([&] { return c[0].cluster().statistics(); });
  CHECK(sa.published == 40 + 5 * (39 * 40 / 2));
  CHECK(sa.stream_failed == 0);
  CHECK(sa.received == 0);  // its own, through its consumer, dropped
  const auto sb = l.run([&] { return c[1].cluster().statistics(); });
  CHECK(sb.received == 40);
  CHECK(sb.repeats == 40);  // each came twice, through both filters' consumers
  CHECK(sb.consumers_missing == 0);
}

/// The consumers JetStream holds on the stream of QoS 1/2 messages (prefix "test"), asked with a
/// connection of the test's own; -1 when it cannot tell.
std::int64_t stream_consumers(const std::string& url) {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  jsStreamInfo* si = nullptr;
  std::int64_t n = -1;
  if (natsConnection_ConnectTo(&nc, url.c_str()) == NATS_OK && natsConnection_JetStream(&js, nc, nullptr) == NATS_OK &&
      js_GetStreamInfo(&si, js, "test_messages", nullptr, nullptr) == NATS_OK)
    n = static_cast<std::int64_t>(si->State.Consumers);
  if (si != nullptr) jsStreamInfo_Destroy(si);
  if (js != nullptr) jsCtx_Destroy(js);
  if (nc != nullptr) natsConnection_Destroy(nc);
  return n;
}

TEST_CASE("cluster::nats: JetStream deletes the consumers of a node gone after consumer_inactive, not before",
          "[cluster][nats]") {
  if (!have_nats_server()) return;
  nats_server server(nats_server_program());
  loop l;
  {
    cluster_of_nodes c(l, server.url(), {"a"}, {},
                       [](mb::cluster::nats_options& o) { o.consumer_inactive = std::chrono::seconds(2); });
    inbox got;
    l.run([&] { return c[0].subscribe("k/#", got.handler(), qos::at_least_once); });
    settle_interest(c[0]);
    CHECK(stream_consumers(server.url()) == 2);  // "k" and "k.>"
  }  // the node stops as one killed would: its consumers stay on the server
  CHECK(stream_consumers(server.url()) == 2);
  std::int64_t left = 2;
  for (int i = 0; i < 100 && left != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    left = stream_consumers(server.url());
  }
  CHECK(left == 0);
}

TEST_CASE("cluster::nats: a consumer JetStream lost while the node is connected is made again, and messages flow",
          "[cluster][nats]") {
  if (!have_nats_server()) return;
  nats_server server(nats_server_program());
  loop l;
  cluster_of_nodes c(l, server.url(), {"a", "b"}, {},
                     [](mb::cluster::nats_options& o) { o.consumer_heartbeat = std::chrono::milliseconds(300); });
  inbox got;
  l.run([&] { return c[1].subscribe("h/x", got.handler(), qos::at_least_once); });
  settle_interest(c[1]);
  REQUIRE(stream_consumers(server.url()) == 1);
  // An operator (or JetStream, after a long cut) deletes it.
  {
    natsConnection* nc = nullptr;
    jsCtx* js = nullptr;
    jsConsumerInfoList* list = nullptr;
    REQUIRE(natsConnection_ConnectTo(&nc, server.url().c_str()) == NATS_OK);
    REQUIRE(natsConnection_JetStream(&js, nc, nullptr) == NATS_OK);
    REQUIRE(js_Consumers(&list, js, "test_messages", nullptr, nullptr) == NATS_OK);
    REQUIRE(list->Count == 1);
    CHECK(js_DeleteConsumer(js, "test_messages", list->List[0]->Name, nullptr, nullptr) == NATS_OK);
    jsConsumerInfoList_Destroy(list);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
  }
  CHECK(stream_consumers(server.url()) == 0);
  std::uint64_t remade = 0;
  for (int i = 0; i < 150 && remade == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    remade = l.run([&] { return c[1].cluster().statistics().consumers_remade; });
  }
  CHECK(remade == 1);
  settle_interest(c[1]);
  CHECK(stream_consumers(server.url()) == 1);
  l.run([&] { return c[0].publish("h/x", "after", qos::at_least_once, false); });
  REQUIRE(got.wait_for(1));
  CHECK(got.got[0]->payload() == "after");
}

TEST_CASE("cluster::nats: a node that loses its last subscriber to a filter stops getting its messages",
          "[cluster][nats]") {
  if (!have_nats_server()) return;
  nats_server server(nats_server_program());
  loop l;
  cluster_of_nodes c(l, server.url(), {"a", "b"});
  inbox got;
  const auto id = l.run([&] { return c[1].subscribe("u/+", got.handler(), qos::at_most_once); });
  settle_interest(c[1]);
  l.run([&] { return c[0].publish("u/1", "wanted", qos::at_most_once, false); });
  REQUIRE(got.wait_for(1));
  l.run([&] { return c[1].unsubscribe(id); });
  settle_interest(c[1]);  // its JetStream consumer is deleted on a thread of the node's
  CHECK(l.run([&] { return c[1].cluster().statistics().subscriptions; }) == 0);
  l.run([&] { return c[0].publish("u/2", "not wanted", qos::at_most_once, false); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(l.run([&] { return c[1].cluster().statistics().received; }) == 1);
}

TEST_CASE("cluster::nats: a retained message set on one node is seen at the others, cleared too, and by a later node",
          "[cluster][nats][MQTT-3.3.1-6]") {
  if (!have_nats_server()) return;
  nats_server server(nats_server_program());
  loop l;
  cluster_of_nodes c(l, server.url(), {"a", "b"});
  l.run([&] { return c[0].publish("r/kept", "on a", qos::at_least_once, true); });
  l.run([&] { return c[0].publish("r/gone", "soon cleared", qos::at_most_once, true); });
  // The bucket is written from a thread of node a's and mirrored on b by another: a subscription
  // on b made before the mirror has it would get nothing, so the test waits for b's count.
  auto loaded = [&](node& n) { return l.run([&] { return n.cluster().statistics().retained_loaded; }); };
  for (int i = 0; i < 500 && loaded(c[1]) < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(loaded(c[1]) >= 2);
  session_client on_b(l, c.listeners[1], "on-b");
  on_b.subscribe("r/#", qos::at_least_once);
  std::vector<std::string> topics;
  for (int i = 0; i < 2; ++i) {
    const auto p = on_b.next();
    REQUIRE(p.type == mb::codec::packet_type::publish);
    CHECK(p.retain);  // [MQTT-3.3.1-8]
    topics.push_back(p.topic);
  }
  std::sort(topics.begin(), topics.end());
  CHECK(topics == std::vector<std::string>{"r/gone", "r/kept"});
  // Cleared on a [MQTT-3.3.1-10]: b forgets it too.
  const auto before = loaded(c[1]);
  l.run([&] { return c[0].publish("r/gone", "", qos::at_most_once, true); });
  for (int i = 0; i < 500 && loaded(c[1]) < before + 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(loaded(c[1]) == before + 1);
  session_client late_on_b(l, c.listeners[1], "late-on-b");
  late_on_b.subscribe("r/+", qos::at_least_once);
  const auto kept = late_on_b.next();
  CHECK(kept.topic == "r/kept");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(late_on_b.pending() == 0);
  // A node started now loads what the bucket holds before it serves anyone.
  cluster_of_nodes later(l, server.url(), {"c"});
  session_client on_c(l, later.listeners[0], "on-c");
  on_c.subscribe("r/#", qos::at_least_once);
  const auto got = on_c.next();
  CHECK(got.topic == "r/kept");
  CHECK(got.payload == "on a");
  CHECK(got.qos_level == qos::at_least_once);
  CHECK(got.retain);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(on_c.pending() == 0);
  const auto sa = l.run([&] { return c[0].cluster().statistics(); });
  CHECK(sa.retained_stored == 3);
  CHECK(sa.retained_failed == 0);
}

TEST_CASE("cluster::nats: a client moving to another node takes its session and queued messages; its old connection closes",
          "[cluster][nats][MQTT-3.1.2-4][MQTT-3.1.4-2][MQTT-3.2.2-2]") {
  if (!have_nats_server()) return;
  nats_server server(nats_server_program());
  loop l;
  cluster_of_nodes c(l, server.url(), {"a", "c"});
  {
    session_client s(l, c.listeners[0], "mover", false);  // 3.1.1 Clean Session 0
    CHECK_FALSE(s.connack.session_present);
    s.subscribe("q/#", qos::at_least_once);
  }  // gone without DISCONNECT: the session waits on a
  l.run([&] { return c[0].publish("q/1", "one", qos::at_least_once, false); });
  l.run([&] { return c[0].publish("q/2", "two", qos::at_least_once, false); });
  {
    session_client moved(l, c.listeners[1], "mover", false);
    CHECK(moved.connack.session_present);  // [MQTT-3.2.2-3]
    const test_rx::rx first = moved.next();
    const test_rx::rx second = moved.next();
    CHECK(first.topic == "q/1");
    CHECK(first.payload == "one");
    CHECK(second.topic == "q/2");
    moved.puback(first.id);
    moved.puback(second.id);
    // Its subscription came along: a message published on a now reaches it on c.
    settle_interest(c[1]);
    l.run([&] { return c[0].publish("q/3", "three", qos::at_least_once, false); });
    const test_rx::rx third = moved.next();
    CHECK(third.topic == "q/3");
    moved.puback(third.id);

    // Connected on c, it connects on a again: the connection on c is closed [MQTT-3.1.4-3], and
    // what was in flight on c comes along.
    l.run([&] { return c[1].publish("q/4", "four", qos::at_least_once, false); });
    CHECK(moved.next().topic == "q/4");  // not acknowledged
    session_client back(l, c.listeners[0], "mover", false);
    CHECK(back.connack.session_present);
    CHECK(moved.closed_by_node());
    const test_rx::rx again = back.next();
    CHECK(again.topic == "q/4");
    CHECK(again.dup);  // [MQTT-4.4.0-1] sent before, so sent again with DUP
  }
  const auto sa = l.run([&] { return c[0].cluster().statistics(); });
  const auto sc = l.run([&] { return c[1].cluster().statistics(); });
  CHECK(sa.sessions_given == 1);
  CHECK(sa.sessions_taken == 1);
  CHECK(sc.sessions_given == 1);
  CHECK(sc.sessions_taken == 1);
  CHECK(sa.handovers_lost == 0);
  CHECK(sc.handovers_lost == 0);
  CHECK(sa.claims_failed + sc.claims_failed == 0);
}

TEST_CASE("cluster::nats: a client identifier too long for a key of the owners' bucket is refused, and the node goes on",
          "[cluster][nats]") {
  if (!have_nats_server()) return;
  nats_server server(nats_server_program());
  loop l;
  mb::broker_options o;
  o.max_client_id_length = 65535;  // the host allows what MQTT allows
  cluster_of_nodes c(l, server.url(), {"a"}, o);
  {
    // 3.1.1: CONNACK 3, Server unavailable. A subject that long would make NATS close the
    // node's connection (its line limit).
    session_client too_long(l, c.listeners[0], std::string(4000, 'x'));
    CHECK(too_long.connack.code == 3);
  }
  session_client fine(l, c.listeners[0], std::string(1000, 'y'));
  CHECK(fine.connack.code == 0);
  const auto st = l.run([&] { return c[0].cluster().statistics(); });
  CHECK(st.claims_failed == 1);
  CHECK(st.claims == 1);
  CHECK(st.connected);
}

TEST_CASE("cluster::nats_sessions: a persistent session whose node is gone resumes on another, its subscriptions in place",
          "[cluster][nats][MQTT-3.1.2-4][MQTT-3.2.2-3]") {
  if (!have_nats_server()) return;
  nats_server server(nats_server_program());
  loop l;
  // A consumer bound on another node may find JetStream sent its first message where no one
  // listened yet: it comes again after ack_wait.
  auto quick = [](mb::cluster::nats_options& o) { o.ack_wait = std::chrono::milliseconds(1000); };
  basic_cluster_of_nodes<keeping_node> c(l, server.url(), {"a", "c"}, {}, quick);
  {
    session_client s(l, c.listeners[0], "keeper", false);  // 3.1.1 Clean Session 0
    s.subscribe("k/#", qos::at_least_once);
    s.subscribe("gone/#", qos::at_least_once);
    s.subscribe("z/+", qos::at_most_once);
    s.unsubscribe("gone/#");
    // A QoS 1 message to a fed subscription comes through the session's own consumer.
    settle_interest(c[0]);
    l.run([&] { return c[0].publish("k/0", "zero", qos::at_least_once, false); });
    const test_rx::rx got = s.next();
    CHECK(got.topic == "k/0");
    s.puback(got.id);
  }
  {
    session_client passer(l, c.listeners[0], "passer");  // Clean Session 1: nothing kept
    passer.subscribe("p/#", qos::at_least_once);
  }
  REQUIRE_FALSE(c[0].cluster().flush(std::chrono::seconds(5)));  // the entries are written
  const auto sa = l.run([&] { return c[0].cluster().statistics(); });
  CHECK(sa.session_writes >= 1);
  CHECK(sa.session_writes_failed == 0);
  CHECK(sa.sessions_known == 1);  // "passer" is forgotten with its session

  c.stop(0);  // node a is gone, and the session it had with it
  {
    session_client back(l, c.listeners[1], "keeper", false);
    CHECK(back.connack.session_present);  // [MQTT-3.2.2-3] resumed from its entry
    settle_interest(c[1]);
    l.run([&] { return c[1].publish("gone/1", "unsubscribed", qos::at_least_once, false); });
    l.run([&] { return c[1].publish("k/1", "one", qos::at_least_once, false); });
    l.run([&] { return c[1].publish("z/1", "zero", qos::at_least_once, false); });
    // Through the two ways (the session's consumer, the node's routing): in either order.
    std::map<std::string, test_rx::rx> got;
    for (int i = 0; i < 2; ++i) {
      const test_rx::rx r = back.next();
      got[r.topic] = r;
      if (r.qos_level != qos::at_most_once) back.puback(r.id);
    }
    REQUIRE(got.count("k/1") == 1);
    CHECK(got["k/1"].qos_level == qos::at_least_once);
    REQUIRE(got.count("z/1") == 1);
    CHECK(got["z/1"].qos_level == qos::at_most_once);  // the subscription's QoS came along
  }
  const auto sc = l.run([&] { return c[1].cluster().statistics(); });
  CHECK(sc.handovers_lost == 1);
  CHECK(sc.sessions_restored == 1);
  CHECK(sc.sessions_taken == 0);
  CHECK(sc.session_messages_held == 0);  // k/1 acknowledged by the client, so to JetStream
  CHECK(sc.session_messages_done >= 1);
  {
    session_client ended(l, c.listeners[1], "keeper", true);  // Clean Session 1: the session ends
    CHECK_FALSE(ended.connack.session_present);
  }
  REQUIRE_FALSE(c[1].cluster().flush(std::chrono::seconds(5)));
  CHECK(l.run([&] { return c[1].cluster().statistics(); }).sessions_known == 0);
  // Written as ended: a node that takes "keeper" over from c finds nothing to resume.
  basic_cluster_of_nodes<keeping_node> later(l, server.url(), {"d"});
  c.stop(1);
  session_client fresh(l, later.listeners[0], "keeper", false);
  CHECK_FALSE(fresh.connack.session_present);
  CHECK(l.run([&] { return later[0].cluster().statistics(); }).sessions_restored == 0);
}

TEST_CASE("cluster::nats_sessions: what a lost node held for a kept session, and what came meanwhile, reaches it on the next",
          "[cluster][nats][MQTT-4.3.2-2][MQTT-4.4.0-1]") {
  if (!have_nats_server()) return;
  nats_server server(nats_server_program());
  loop l;
  auto quick = [](mb::cluster::nats_options& o) { o.ack_wait = std::chrono::milliseconds(1000); };
  basic_cluster_of_nodes<keeping_node> c(l, server.url(), {"a", "b", "c"}, {}, quick);
  {
    session_client s(l, c.listeners[1], "held", false);  // 3.1.1 Clean Session 0, on b
    s.subscribe("h/#", qos::at_least_once);
    settle_interest(c[1]);
    l.run([&] { return c[0].publish("h/1", "in flight", qos::at_least_once, false); });
    CHECK(s.next().topic == "h/1");  // never acknowledged
  }  // gone: what comes now waits on b
  l.run([&] { return c[0].publish("h/2", "queued", qos::at_least_once, false); });
  l.run([&] { return c[0].publish("h/3", "queued", qos::exactly_once, false); });
  for (int i = 0; i < 400 && l.run([&] { return c[1].cluster().statistics(); }).session_messages_held < 3; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(l.run([&] { return c[1].cluster().statistics(); }).session_messages_held == 3);
  c.stop(1);  // b is lost with the three
  l.run([&] { return c[0].publish("h/4", "while no node had it", qos::at_least_once, false); });

  session_client back(l, c.listeners[2], "held", false);
  CHECK(back.connack.session_present);
  std::map<std::string, int> got;
  for (int i = 0; i < 4; ++i) {
    const test_rx::rx r = back.next();
    ++got[r.topic];
    if (r.qos_level == qos::at_least_once) back.puback(r.id);
    if (r.qos_level == qos::exactly_once) CHECK(r.topic == "h/3");  // its QoS kept [MQTT-3.8.4-8]
  }
  CHECK(got == std::map<std::string, int>{{"h/1", 1}, {"h/2", 1}, {"h/3", 1}, {"h/4", 1}});
  const auto sc = l.run([&] { return c[2].cluster().statistics(); });
  CHECK(sc.sessions_restored == 1);
}

TEST_CASE("cluster::nats_sessions: a PUBACK waits for JetStream: a QoS 1 message it did not keep is not acknowledged",
          "[cluster][nats][MQTT-4.3.2-2]") {
  if (!have_nats_server()) return;
  nats_server server(nats_server_program());
  loop l;
  auto quick = [](mb::cluster::nats_options& o) { o.ack_wait = std::chrono::milliseconds(1000); };
  basic_cluster_of_nodes<keeping_node> c(l, server.url(), {"a"}, {}, quick);
  session_client pub(l, c.listeners[0], "pub");
  l.run([&] {
    return c[0].publish("kept/1", "before", qos::at_least_once, false);  // the stream works
  });
  pub.publish("kept/2", "kept", qos::at_least_once, 1);
  const test_rx::rx ack = pub.next();
  CHECK(ack.type == mb::codec::packet_type::puback);
  CHECK(ack.id == 1);
  {
    // JetStream loses the stream: a publish to it gets an error for an answer.
    natsConnection* nc = nullptr;
    jsCtx* js = nullptr;
    REQUIRE(natsConnection_ConnectTo(&nc, server.url().c_str()) == NATS_OK);
    REQUIRE(natsConnection_JetStream(&js, nc, nullptr) == NATS_OK);
    CHECK(js_DeleteStream(js, "test_messages", nullptr, nullptr) == NATS_OK);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
  }
  pub.publish("kept/3", "not kept", qos::at_least_once, 2);
  // 3.1.1 has no reason code for it: the connection closes, and the client sends it again.
  CHECK(pub.closed_by_node());
  CHECK(l.run([&] { return c[0].cluster().statistics(); }).stream_failed >= 1);
}

TEST_CASE("cluster::nats_sessions: a session whose client left longer ago than its expiry is not resumed after its node is lost",
          "[cluster][nats][MQTT-3.1.2-23]") {
  if (!have_nats_server()) return;
  nats_server server(nats_server_program());
  loop l;
  mb::broker_options o;
  o.persistent_session_expiry = std::chrono::seconds(1);  // 3.1.1 Clean Session 0 sessions
  basic_cluster_of_nodes<keeping_node> c(l, server.url(), {"a", "c"}, o);
  {
    session_client s(l, c.listeners[0], "brief", false);
    s.subscribe("b/#", qos::at_least_once);
  }  // gone: its expiry runs from now
  REQUIRE_FALSE(c[0].cluster().flush(std::chrono::seconds(5)));
  c.stop(0);  // before it could end the session itself
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  session_client back(l, c.listeners[1], "brief", false);
  CHECK_FALSE(back.connack.session_present);  // [MQTT-3.2.2-2] it ended while no node had it
  const auto sc = l.run([&] { return c[1].cluster().statistics(); });
  CHECK(sc.sessions_expired == 1);
  CHECK(sc.sessions_restored == 0);
}
