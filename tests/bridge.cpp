// Bridges (bridge/bridge.hpp): this broker connected to Debian's Mosquitto and to another of its
// own, over loopback TCP, with real clients on both sides.
#include <mqttbroker/bridge/bridge.hpp>
#include <mqttbroker/broker.hpp>
#include <mqttbroker/client/client.hpp>

#include "catch.hpp"
#include "loopback.hpp"
#include "mosquitto_process.hpp"

#include <asio.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mb = mqttbroker;
namespace codec = mqttbroker::codec;
using test_support::mosquitto_process;
using test_support::run_until;
using test_support::usable;

namespace {

/// One message as a test client got it.
struct got {
  std::string topic, payload;
  int qos = 0;
  bool retain = false;
  std::vector<std::string> user_properties;  // key:value
};

struct events {
  int connected = 0;
  int subacks = 0;
  std::vector<got> messages;
  void on_connected(const codec::connack&) { ++connected; }
  void on_refused(const codec::connack&) {}
  void on_connection_lost(std::error_code) {}
  void on_message(const codec::publish& p) {
    got g{std::string(p.topic), std::string(p.payload), static_cast<int>(p.qos_level), p.retain, {}};
    for (const auto& prop : p.properties)
      if (prop.id == codec::property_id::user_property)
        g.user_properties.push_back(std::string(prop.key) + ":" + std::string(prop.value));
    messages.push_back(std::move(g));
  }
  void on_published(std::uint64_t, mb::reason_code) {}
  void on_suback(const codec::suback&) { ++subacks; }
  void on_unsuback(const codec::unsuback&) {}
  void on_disconnect(const codec::disconnect&) {}

  std::size_t count(const std::string& topic) const {
    return static_cast<std::size_t>(
        std::count_if(messages.begin(), messages.end(), [&](const got& g) { return g.topic == topic; }));
  }
  const got* find(const std::string& topic) const {
    for (const got& g : messages)
      if (g.topic == topic) return &g;
    return nullptr;
  }
};

using test_client = mb::client::client<events>;

mb::client::client_options client_options(std::uint16_t port, codec::protocol_version v, std::string id,
                                          bool persistent = false) {
  mb::client::client_options o;
  o.session.version = v;
  o.session.client_id = std::move(id);
  o.session.clean_start = !persistent;
  o.session.session_expiry = persistent ? 600 : 0;
  o.addresses.push_back({"127.0.0.1", port});
  o.reconnect_min = std::chrono::milliseconds(50);
  o.reconnect_max = std::chrono::milliseconds(200);
  return o;
}

/// A client connected and subscribed to `filter`, on `io`.
std::unique_ptr<test_client> subscriber(asio::io_context& io, std::uint16_t port, codec::protocol_version v,
                                        const std::string& id, const std::string& filter,
                                        codec::qos q = codec::qos::exactly_once, bool persistent = false) {
  auto c = std::make_unique<test_client>(io.get_executor(), client_options(port, v, id, persistent), events{});
  c->subscribe(filter, q);
  c->start();
  REQUIRE(run_until(io, [&] { return c->handler().connected >= 1 && c->handler().subacks >= 1; }));
  return c;
}

mb::bridge::topic_route route(const std::vector<std::string>& words) {
  std::string why;
  auto r = mb::bridge::parse_topic_route(words, why);
  INFO(why);
  REQUIRE(r);
  return *r;
}

mb::bridge::bridge_options bridge_to(std::uint16_t port, codec::protocol_version v, const std::string& name) {
  mb::bridge::bridge_options o;
  o.name = name;
  o.remote = client_options(port, v, "bridge-" + name, true);
  o.remote.session.bridge = true;  // try_private
  return o;
}

struct line_log {
  std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();
  void log(mb::log_level, std::string_view m) { lines->emplace_back(m); }
};
struct logged_policies : mb::default_policies {
  using hooks = line_log;
};

template <class Broker>
void stop_broker(asio::io_context& io, Broker& b) {
  bool stopped = false;
  b.async_stop([&](std::error_code) { stopped = true; });
  REQUIRE(run_until(io, [&] { return stopped; }));
}

}  // namespace

TEST_CASE("bridge to Mosquitto: topics out and in with prefixes, QoS 0/1/2, notifications, 5.0 user properties",
          "[bridge][mosquitto]") {
  mosquitto_process mosq;
  if (!usable(mosq)) return;
  for (const auto v : {codec::protocol_version::v3_1_1, codec::protocol_version::v5}) {
    const std::string tag = v == codec::protocol_version::v5 ? "5" : "4";
    INFO("bridge protocol " << (v == codec::protocol_version::v5 ? "5.0" : "3.1.1"));
    asio::io_context io;
    mb::broker<> local(io, {});
    local.listen({"127.0.0.1", 0});
    local.start();

    mb::bridge::bridge_options o = bridge_to(mosq.port(), v, "up" + tag);
    o.topics.push_back(route({"#", "out", "2", "gw" + tag + "/", "cloud" + tag + "/gw/"}));
    o.topics.push_back(route({"#", "in", "1", "gw" + tag + "/cmd/", "cloud" + tag + "/cmd/"}));
    // Everything the remote's subscriber publishes is in-route; the out-route covers gw<tag>/cmd/
    // too, so a command would loop back out if the bridge's local filter were not No Local.
    auto remote = subscriber(io, mosq.port(), codec::protocol_version::v5, "remote" + tag, "cloud" + tag + "/#");
    auto watcher = subscriber(io, mosq.port(), codec::protocol_version::v5, "watch" + tag, "$SYS/broker/connection/#");
    auto device = subscriber(io, local.local_port(), codec::protocol_version::v5, "device" + tag, "#");

    mb::bridge::bridge<mb::broker<>> br(local, o);
    br.start();
    // The bridge says "1" on the remote after its SUBSCRIBE: once seen, the in-route is in place.
    const std::string state_topic = "$SYS/broker/connection/bridge-up" + tag + "/state";
    REQUIRE(run_until(io, [&] {
      const auto& m = watcher->handler().messages;
      return !m.empty() && m.back().topic == state_topic && m.back().payload == "1";
    }));
    CHECK(br.connected());
    // ... and locally, retained too.
    REQUIRE(local.retained(state_topic));
    CHECK(std::string(local.retained(state_topic)->payload()) == "1");

    // Out: each QoS, the prefix swapped, 5.0 user properties kept over a 5.0 bridge.
    codec::properties_builder props;
    props.add_user_property("origin", "device");
    const std::string property_bytes(props.view().bytes());
    for (int q = 0; q <= 2; ++q)
      device->publish("gw" + tag + "/t/" + std::to_string(q), "v" + std::to_string(q), static_cast<codec::qos>(q),
                      false, property_bytes);
    REQUIRE(run_until(io, [&] { return remote->handler().messages.size() >= 3; }));
    for (int q = 0; q <= 2; ++q) {
      const got* g = remote->handler().find("cloud" + tag + "/gw/t/" + std::to_string(q));
      REQUIRE(g != nullptr);
      CHECK(g->payload == "v" + std::to_string(q));
      CHECK(g->qos == q);
      if (v == codec::protocol_version::v5) CHECK(g->user_properties == std::vector<std::string>{"origin:device"});
    }
    // A retained message stays retained on the remote.
    device->publish("gw" + tag + "/kept", "r", codec::qos::at_least_once, true);
    REQUIRE(run_until(io, [&] { return remote->handler().find("cloud" + tag + "/gw/kept") != nullptr; }));
    // A subscriber that comes later gets it, and the bridge's "1", as retained messages.
    auto late = subscriber(io, mosq.port(), codec::protocol_version::v5, "late" + tag, "cloud" + tag + "/gw/kept");
    auto late_watcher = subscriber(io, mosq.port(), codec::protocol_version::v5, "late-watch" + tag, state_topic);
    REQUIRE(run_until(io, [&] {
      return !late->handler().messages.empty() && !late_watcher->handler().messages.empty();
    }));
    CHECK(late->handler().messages.front().retain);
    CHECK(late_watcher->handler().messages.front().retain);
    CHECK(late_watcher->handler().messages.front().payload == "1");

    // In: the remote's command reaches the device under the local name, at the route's QoS.
    codec::properties_builder cmd_props;
    cmd_props.add_user_property("reply", "soon");
    remote->publish("cloud" + tag + "/cmd/reboot", "now", codec::qos::exactly_once, false,
                    std::string(cmd_props.view().bytes()));
    REQUIRE(run_until(io, [&] { return device->handler().find("gw" + tag + "/cmd/reboot") != nullptr; }));
    const got* cmd = device->handler().find("gw" + tag + "/cmd/reboot");
    CHECK(cmd->payload == "now");
    CHECK(cmd->qos == 1);  // the in-route's QoS bounds it
    if (v == codec::protocol_version::v5) CHECK(cmd->user_properties == std::vector<std::string>{"reply:soon"});
    // Nothing came back out: the command did not return to the remote as cloud<tag>/gw/cmd/reboot.
    run_until(io, [] { return false; }, std::chrono::milliseconds(300));
    CHECK(remote->handler().count("cloud" + tag + "/gw/cmd/reboot") == 0);
    CHECK(device->handler().count("gw" + tag + "/cmd/reboot") == 1);
    CHECK(br.stats().received == 1);
    CHECK(br.stats().sent == 4);

    // Stopping says "0" on both sides.
    br.stop();
    REQUIRE(run_until(io, [&] {
      const auto& m = watcher->handler().messages;
      return !m.empty() && m.back().topic == state_topic && m.back().payload == "0";
    }));
    CHECK(std::string(local.retained(state_topic)->payload()) == "0");
    for (auto* c : {remote.get(), watcher.get(), device.get(), late.get(), late_watcher.get()}) c->stop();
    stop_broker(io, local);
  }
}

TEST_CASE("two of this broker's own bridged with both: every message once on each side, no loops", "[bridge]") {
  for (const bool local_session : {false, true})
  for (const auto v : {codec::protocol_version::v3_1_1, codec::protocol_version::v5}) {
    const std::string tag = std::string(v == codec::protocol_version::v5 ? "5" : "4") + (local_session ? "s" : "");
    INFO("bridge protocol " << (v == codec::protocol_version::v5 ? "5.0" : "3.1.1")
                            << (local_session ? ", the local side a session" : ", the local side in-process"));
    asio::io_context io;
    mb::broker<> a(io, {}), b(io, {});
    a.listen({"127.0.0.1", 0});
    b.listen({"127.0.0.1", 0});
    if (local_session) a.listen<mb::transport::memory>(mb::transport::memory::listen_options("bridges-" + tag));
    a.start();
    b.start();
    mb::bridge::bridge_options o = bridge_to(b.local_port(), v, "ab" + tag);
    if (local_session) o.local_listener = "bridges-" + tag;
    o.topics.push_back(route({"loop/#", "both", "1"}));
    mb::bridge::bridge<mb::broker<>> br(a, o);
    br.start();
    // The state topic is the one $SYS topic a client may publish, as in Mosquitto: once it is
    // "1" on the remote, the bridge's subscription there is in place.
    const std::string state = "$SYS/broker/connection/bridge-ab" + tag + "/state";
    REQUIRE(run_until(io, [&] {
      return br.connected() && b.retained(state) && b.retained(state)->payload() == "1" &&
             (!local_session || a.stats().subscriptions == 1);
    }));
    auto on_a = subscriber(io, a.local_port(), v, "on-a" + tag, "loop/#", codec::qos::at_least_once);
    auto on_b = subscriber(io, b.local_port(), v, "on-b" + tag, "loop/#", codec::qos::exactly_once);

    on_a->publish("loop/from-a", "x", codec::qos::exactly_once);
    on_b->publish("loop/from-b", "y", codec::qos::at_least_once);
    b.publish("loop/from-b-host", "z", codec::qos::at_most_once);
    REQUIRE(run_until(io, [&] {
      return on_a->handler().messages.size() >= 3 && on_b->handler().messages.size() >= 3;
    }));
    // Long enough for a loop to show: a round trip over loopback takes well under a millisecond.
    run_until(io, [] { return false; }, std::chrono::milliseconds(300));
    for (auto* c : {on_a.get(), on_b.get()}) {
      CHECK(c->handler().messages.size() == 3);
      CHECK(c->handler().count("loop/from-a") == 1);
      CHECK(c->handler().count("loop/from-b") == 1);
      CHECK(c->handler().count("loop/from-b-host") == 1);
    }
    CHECK(on_b->handler().find("loop/from-a")->qos == 1);  // the route's QoS bounds it
    CHECK(br.stats().sent == 1);
    CHECK(br.stats().received == 2);
    on_a->stop();
    on_b->stop();
    br.stop();
    run_until(io, [] { return false; }, std::chrono::milliseconds(50));
    stop_broker(io, a);
    stop_broker(io, b);
  }
}

TEST_CASE("bridge across the remote's outage: QoS 1 and 2 published meanwhile arrive after it, in order, QoS 2 once",
          "[bridge][mosquitto]") {
  // The remote keeps its sessions across a restart (persistence), as a cloud broker does.
  mosquitto_process mosq("persistence true\npersistence_location %DIR%\nautosave_interval 0\n");
  if (!usable(mosq)) return;
  asio::io_context io;
  mb::broker<> local(io, {});
  local.start();
  mb::bridge::bridge_options o = bridge_to(mosq.port(), codec::protocol_version::v3_1_1, "outage");
  o.topics.push_back(route({"#", "out", "1", "q1/", "cloud/q1/"}));
  o.topics.push_back(route({"#", "out", "2", "q2/", "cloud/q2/"}));
  mb::bridge::bridge<mb::broker<>> br(local, o);
  br.start();
  REQUIRE(run_until(io, [&] { return br.connected(); }));
  auto remote = subscriber(io, mosq.port(), codec::protocol_version::v5, "outage-remote", "cloud/#",
                           codec::qos::exactly_once, true);

  constexpr int total = 90;
  int next = 0;
  auto publish_some = [&](int until, std::chrono::milliseconds spread) {
    const auto step = spread / (until - next);
    for (; next < until; ++next) {
      local.publish("q1/seq", std::to_string(next), codec::qos::at_least_once);
      local.publish("q2/seq", std::to_string(next), codec::qos::exactly_once);
      run_until(io, [] { return false; }, step);
    }
  };
  publish_some(30, std::chrono::milliseconds(300));
  mosq.stop();  // SIGTERM: Mosquitto saves its sessions and goes
  publish_some(60, std::chrono::milliseconds(1500));
  CHECK_FALSE(br.connected());
  mosq.start();
  publish_some(total, std::chrono::milliseconds(300));

  auto sequence = [&](const std::string& topic) {
    std::vector<int> s;
    for (const got& g : remote->handler().messages)
      if (g.topic == topic) s.push_back(std::stoi(g.payload));
    return s;
  };
  const bool all_arrived = run_until(io, [&] {
    return sequence("cloud/q2/seq").size() >= static_cast<std::size_t>(total) &&
           sequence("cloud/q1/seq").size() >= static_cast<std::size_t>(total);
  }, std::chrono::seconds(20));
  INFO("QoS 1 received: " << sequence("cloud/q1/seq").size() << ", QoS 2: " << sequence("cloud/q2/seq").size()
       << "; bridge connects " << br.stats().connects << ", sent " << br.stats().sent << ", remote connects "
       << remote->handler().connected);
  if (!all_arrived)
    for (int n : sequence("cloud/q1/seq")) UNSCOPED_INFO(n);
  REQUIRE(all_arrived);
  run_until(io, [] { return false; }, std::chrono::milliseconds(200));
  std::vector<int> expected(total);
  for (int i = 0; i < total; ++i) expected[static_cast<std::size_t>(i)] = i;
  CHECK(sequence("cloud/q2/seq") == expected);  // exactly once, in order
  // QoS 1 is at least once: a message the remote took just before it went, whose PUBACK never
  // came, is sent again (DUP). Every one arrives, and they arrive in order.
  std::vector<int> first_seen;
  for (int n : sequence("cloud/q1/seq"))
    if (std::find(first_seen.begin(), first_seen.end(), n) == first_seen.end()) first_seen.push_back(n);
  CHECK(first_seen == expected);
  const std::size_t repeats = sequence("cloud/q1/seq").size() - first_seen.size();
  INFO("QoS 1 messages received twice: " << repeats);
  CHECK(repeats <= 32);  // at most the in-flight window
  CHECK(br.stats().connects >= 2);
  CHECK(br.stats().dropped == 0);
  remote->stop();
  br.stop();
  run_until(io, [] { return false; }, std::chrono::milliseconds(50));
  stop_broker(io, local);
}

TEST_CASE("bridge: a remote that refuses the login, or goes away mid-handshake, is logged and retried",
          "[bridge][mosquitto]") {
  SECTION("refused login") {
    mosquitto_process mosq("allow_anonymous false\n");
    if (!usable(mosq)) return;
    asio::io_context io;
    line_log logs;
    mb::broker<logged_policies> local(io, {}, logs);
    local.start();
    mb::bridge::bridge_options o = bridge_to(mosq.port(), codec::protocol_version::v3_1_1, "refused");
    o.remote.session.username = "nobody";
    o.topics.push_back(route({"x/#", "out", "1"}));
    mb::bridge::bridge<mb::broker<logged_policies>> br(local, o);
    br.start();
    auto refusals = [&] {
      return std::count_if(logs.lines->begin(), logs.lines->end(), [](const std::string& l) {
        return l.find("bridge refused: the remote refused the connection: not authorized") != std::string::npos;
      });
    };
    REQUIRE(run_until(io, [&] { return refusals() >= 3; }));
    CHECK_FALSE(br.connected());
    CHECK(br.stats().connects == 0);
    local.publish("x/1", "kept", codec::qos::at_least_once);  // queued for when the login works
    CHECK(run_until(io, [&] { return br.stats().sent == 1; }));
    br.stop();
    run_until(io, [] { return false; }, std::chrono::milliseconds(50));
    stop_broker(io, local);
  }
  SECTION("closed mid-handshake") {
    asio::io_context io;
    // A server that reads a few bytes of the CONNECT and closes.
    asio::ip::tcp::acceptor rude(io, {asio::ip::make_address("127.0.0.1"), 0});
    int accepted = 0;
    std::function<void()> accept_next = [&] {
      auto sock = std::make_shared<asio::ip::tcp::socket>(io);
      rude.async_accept(*sock, [&, sock](std::error_code ec) {
        if (ec) return;
        ++accepted;
        auto buf = std::make_shared<std::array<char, 4>>();
        asio::async_read(*sock, asio::buffer(*buf), [sock, buf](std::error_code, std::size_t) { sock->close(); });
        accept_next();
      });
    };
    accept_next();
    line_log logs;
    mb::broker<logged_policies> local(io, {}, logs);
    local.start();
    mb::bridge::bridge_options o = bridge_to(rude.local_endpoint().port(), codec::protocol_version::v5, "rude");
    o.topics.push_back(route({"x/#", "out", "1"}));
    mb::bridge::bridge<mb::broker<logged_policies>> br(local, o);
    br.start();
    REQUIRE(run_until(io, [&] { return accepted >= 3; }));
    CHECK_FALSE(br.connected());
    const bool logged = std::any_of(logs.lines->begin(), logs.lines->end(), [](const std::string& l) {
      return l.find("bridge rude: cannot connect") != std::string::npos;
    });
    CHECK(logged);
    br.stop();
    rude.close();
    run_until(io, [] { return false; }, std::chrono::milliseconds(50));
    stop_broker(io, local);
  }
}
