#include <mqttbroker/storage/sqlite.hpp>
#include <mqttbroker/bridge/bridge.hpp>

#include <mqttbroker/broker.hpp>
#include <mqttbroker/clock/manual.hpp>
#include <mqttbroker/codec.hpp>
#include <mqttbroker/transport/memory.hpp>

#include "catch.hpp"
#include "rx.hpp"
#include "stream_client.hpp"

#include <asio/io_context.hpp>
#include <asio/write.hpp>

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

// storage::sqlite through the library's API: brokers on the memory transport, each stopped and
// made again on the same file (a restart), with clients that encode and decode with the
// project's codec. Time is clock::manual's, given to the store as well, so expiry and wills are
// exact; commits run on the store's own thread (or, where a test holds them, on an io_context
// the test runs), so waits are bounded loops, never sleeps that a result depends on.

namespace mb = mqttbroker;
namespace codec = mqttbroker::codec;
namespace fs = std::filesystem;
using codec::protocol_version;
using codec::qos;
using mb::reason_code;
using test_rx::rx;
using namespace test_rx::packet_types;

namespace {

struct store_policies : mb::default_policies {
  using transport = mb::transport::memory;
  using storage = mb::storage::sqlite;
  using clock = mb::clock::manual;
};
using broker_type = mb::broker<store_policies>;

/// A temporary folder, removed with its files.
struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "mqttbroker-sqlite-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

using client = test_client::memory_client;

std::string next_listener() {
  static int n = 0;
  return "sqlite-test-" + std::to_string(++n);
}

/// One broker on a store file, made and remade (restart()) on the same io_context and clock.
/// Commits run on the store's own thread unless `held` is set: then on `commits`, an io_context
/// the test runs when it lets them go.
class node {
 public:
  explicit node(std::string path, mb::storage::sqlite_options extra = {}, bool held = false)
      : path_(std::move(path)), extra_(std::move(extra)), held_(held) {
    start();
  }
  ~node() { stop(); }
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  /// The broker stops (the store writes what it holds and closes) and a new one loads the file.
  void restart(std::chrono::seconds down = std::chrono::seconds(0)) {
    stop();
    clock.advance(down);
    start();
  }

  client& add(protocol_version v = protocol_version::v3_1_1) {
    clients_.push_back(std::make_unique<client>(io, listener_, v));
    return *clients_.back();
  }
  /// A client connected as `id`; Session Present is returned.
  client& connected(const std::string& id, bool clean, protocol_version v = protocol_version::v3_1_1,
                    std::optional<std::uint32_t> expiry = std::nullopt, bool* present = nullptr) {
    client& c = add(v);
    if (expiry) c.set_session_expiry(*expiry);
    c.connect(id, clean);
    wait_for([&] { return c.pending() != 0; });
    const rx ack = c.pop(CONNACK);
    REQUIRE(ack.code == 0);
    if (present != nullptr) *present = ack.session_present;
    return c;
  }
  void subscribe(client& c, const std::string& filter, qos q) {
    c.subscribe(1, filter, q);
    wait_for([&] { return c.pending() != 0; });
    c.pop(SUBACK);
  }

  /// Runs the broker's handlers (and, when they are held, not the commits) until `done()`;
  /// 10 s at most.
  template <class Done>
  void wait_for(Done done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      if (held_ && !hold_commits) {
        commits.restart();
        commits.poll();
      }
      io.restart();
      io.poll();
      if (done()) return;
      REQUIRE(std::chrono::steady_clock::now() < deadline);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  /// Lets the commits wait for now have run and their acknowledgements go out.
  void settle() {
    for (int i = 0; i < 50; ++i) {
      if (held_ && !hold_commits) {
        commits.restart();
        commits.poll();
      }
      io.restart();
      io.poll();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  /// With commits held: the broker's handlers run, the store's commits do not.
  void run_broker_only() {
    for (int i = 0; i < 50; ++i) {
      io.restart();
      io.poll();
    }
  }
  /// With commits held: the commits waiting run (and report).
  void run_commits() {
    commits.restart();
    commits.poll();
  }
  /// Moves the manual clock, running the timers due on the way.
  void advance(std::chrono::seconds d) {
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

  /// The in-memory listener's name (a new one at each start).
  const std::string& listener() const noexcept { return listener_; }

  asio::io_context io;
  asio::io_context commits;  // the store's executor while commits are held
  bool hold_commits = false;  // with a held node: waits do not run `commits`
  mb::clock::manual clock;
  std::unique_ptr<broker_type> broker;

 private:
  void start() {
    listener_ = next_listener();
    broker = std::make_unique<broker_type>(io, mb::broker_options{}, mb::hooks::none{}, clock);
    mb::storage::sqlite_options o = extra_;
    o.path = path_;
    mb::clock::manual clk = clock;
    o.clock = [clk] { return clk.system_now(); };
    if (held_) o.executor = [this](std::function<void()> f) { asio::post(commits, std::move(f)); };
    broker->storage().open(std::move(o));
    broker->listen(mb::transport::memory::listen_options(listener_));
    broker->start();
  }
  void stop() {
    if (!broker) return;
    bool done = false;
    broker->async_stop([&](std::error_code) { done = true; });
    for (int i = 0; i < 10'000 && !done; ++i) {
      io.restart();
      io.poll();
      if (held_) {
        commits.restart();
        commits.poll();
      }
    }
    clients_.clear();
    io.restart();
    io.poll();
    broker.reset();  // the store commits what it holds and closes the file
    if (held_) {
      commits.restart();
      commits.poll();  // jobs of the closed store find nothing to do
    }
  }

  std::string path_;
  mb::storage::sqlite_options extra_;
  bool held_;
  std::string listener_;
  std::vector<std::unique_ptr<client>> clients_;
};

/// Publishes `payload` at QoS 1 or 2 from `pub` and completes the exchange; the PUBACK or PUBREC
/// reason code.
std::uint8_t publish_acked(node& n, client& pub, const std::string& topic, const std::string& payload, qos q,
                           std::uint16_t id) {
  pub.publish(topic, payload, q, id);
  n.wait_for([&] { return pub.pending() != 0 || pub.closed(); });
  if (pub.closed()) return 0xFF;
  const rx ack = pub.pop(q == qos::at_least_once ? PUBACK : PUBREC);
  REQUIRE(ack.id == id);
  if (q == qos::exactly_once && ack.code < 0x80) {
    pub.ack<codec::pubrel>(id);
    n.wait_for([&] { return pub.pending() != 0; });
    REQUIRE(pub.pop(PUBCOMP).id == id);
  }
  return ack.code;
}

}  // namespace

// ---- restarts

TEST_CASE("sqlite: a persistent session, its subscription and its queued QoS 1 and QoS 2 messages survive a restart, in order",
          "[sqlite][MQTT-4.1.0-1][MQTT-4.6.0-2]") {
  temp_dir dir;
  node n(dir.file("store.db"));
  {
    client& sub = n.connected("sub", false);
    n.subscribe(sub, "t/#", qos::exactly_once);
    sub.close();
    client& pub = n.connected("pub", true);
    for (std::uint16_t i = 1; i <= 6; ++i)
      REQUIRE(publish_acked(n, pub, "t/" + std::to_string(i), "m" + std::to_string(i),
                            i % 2 == 0 ? qos::exactly_once : qos::at_least_once, i) == 0);
  }
  n.restart();
  bool present = false;
  client& sub = n.connected("sub", false, protocol_version::v3_1_1, std::nullopt, &present);
  CHECK(present);  // [MQTT-4.1.0-1] the session outlived the process
  n.wait_for([&] { return sub.pending() >= 6; });
  for (int i = 1; i <= 6; ++i) {
    const rx p = sub.pop(PUBLISH);
    CHECK(p.topic == "t/" + std::to_string(i));
    CHECK(p.payload == "m" + std::to_string(i));
    CHECK(p.qos_level == (i % 2 == 0 ? qos::exactly_once : qos::at_least_once));
  }
  // The subscription came back too: a new message reaches the session.
  client& pub = n.connected("pub2", true);
  REQUIRE(publish_acked(n, pub, "t/new", "n", qos::at_least_once, 1) == 0);
  n.wait_for([&] { return sub.pending() != 0; });
  CHECK(sub.pop(PUBLISH).topic == "t/new");
}

TEST_CASE("sqlite: a QoS 1 message in flight is sent again with DUP after a restart, with its packet identifier",
          "[sqlite][MQTT-4.4.0-1]") {
  temp_dir dir;
  node n(dir.file("store.db"));
  std::uint16_t first_id = 0;
  {
    client& sub = n.connected("sub", false);
    n.subscribe(sub, "t", qos::at_least_once);
    client& pub = n.connected("pub", true);
    REQUIRE(publish_acked(n, pub, "t", "once", qos::at_least_once, 9) == 0);
    n.wait_for([&] { return sub.pending() != 0; });
    const rx p = sub.pop(PUBLISH);
    CHECK_FALSE(p.dup);
    first_id = p.id;  // never acknowledged
  }
  n.restart();
  client& sub = n.connected("sub", false);
  n.wait_for([&] { return sub.pending() != 0; });
  const rx again = sub.pop(PUBLISH);
  CHECK(again.dup);
  CHECK(again.id == first_id);
  CHECK(again.payload == "once");
  sub.ack<codec::puback>(again.id);
  // Acknowledged now: a further restart sends nothing.
  n.settle();
  n.restart();
  client& last = n.connected("sub", false);
  n.settle();
  CHECK(last.pending() == 0);
}

TEST_CASE("sqlite: after PUBREC a restart resends PUBREL, not the PUBLISH", "[sqlite][MQTT-4.4.0-1][MQTT-4.3.3-1]") {
  temp_dir dir;
  node n(dir.file("store.db"));
  std::uint16_t id = 0;
  {
    client& sub = n.connected("sub", false);
    n.subscribe(sub, "t", qos::exactly_once);
    client& pub = n.connected("pub", true);
    REQUIRE(publish_acked(n, pub, "t", "two", qos::exactly_once, 3) == 0);
    n.wait_for([&] { return sub.pending() != 0; });
    id = sub.pop(PUBLISH).id;
    sub.ack<codec::pubrec>(id);
    n.wait_for([&] { return sub.pending() != 0; });
    CHECK(sub.pop(PUBREL).id == id);
    n.settle();  // the PUBREC's state is committed; PUBCOMP never comes
  }
  n.restart();
  client& sub = n.connected("sub", false);
  n.wait_for([&] { return sub.pending() != 0; });
  const rx r = sub.pop(PUBREL);
  CHECK(r.id == id);
  sub.ack<codec::pubcomp>(id);
  n.settle();
  CHECK(sub.pending() == 0);
}

TEST_CASE("sqlite: a QoS 2 PUBLISH sent again after a restart is acknowledged but not delivered twice",
          "[sqlite][MQTT-4.3.3-2]") {
  temp_dir dir;
  node n(dir.file("store.db"));
  {
    client& sub = n.connected("sub", false);
    n.subscribe(sub, "t", qos::at_least_once);
    client& pub = n.connected("pub", false);
    pub.publish("t", "exactly", qos::exactly_once, 21);
    n.wait_for([&] { return pub.pending() != 0; });
    CHECK(pub.pop(PUBREC).id == 21);  // PUBREL never sent before the restart
    n.wait_for([&] { return sub.pending() != 0; });
    CHECK(sub.pop(PUBLISH).payload == "exactly");
  }
  n.restart();
  client& sub = n.connected("sub", false);
  n.settle();
  while (sub.pending() != 0) sub.ack<codec::puback>(sub.pop(PUBLISH).id);  // the earlier copy, in flight
  client& pub = n.connected("pub", false);
  pub.publish("t", "exactly", qos::exactly_once, 21, false, true);  // DUP
  n.wait_for([&] { return pub.pending() != 0; });
  CHECK(pub.pop(PUBREC).id == 21);
  pub.ack<codec::pubrel>(21);
  n.wait_for([&] { return pub.pending() != 0; });
  CHECK(pub.pop(PUBCOMP).id == 21);
  n.settle();
  CHECK(sub.pending() == 0);  // not routed a second time
}

TEST_CASE("sqlite: a QoS 2 message durable but not yet routed when the broker stopped is routed after the restart, once",
          "[sqlite][MQTT-4.3.3-2]") {
  temp_dir dir;
  const std::string path = dir.file("store.db");
  {
    // What a crash leaves between the commit of the PUBLISH and its routing: the session of the
    // publisher and of a subscriber, and the received message not marked routed.
    mb::storage::sqlite st;
    mb::storage::sqlite_options options;
    options.path = path;
    st.open(options);
    codec::subscribe_options o;
    o.max_qos = qos::exactly_once;
    st.save_session("pub", 600);
    st.save_session("sub", 600);
    st.save_subscription("sub", "t", o, 0);
    st.receive("pub", 4, mb::message::make("t", "held", qos::exactly_once, false));
    st.commit();
    st.close();
  }
  node n(path);
  client& sub = n.connected("sub", false);
  n.wait_for([&] { return sub.pending() != 0; });
  const rx p = sub.pop(PUBLISH);
  CHECK(p.payload == "held");
  CHECK(p.qos_level == qos::exactly_once);
  // The publisher's identifier is still held: its resent PUBLISH is not routed again.
  client& pub = n.connected("pub", false);
  pub.publish("t", "held", qos::exactly_once, 4, false, true);  // DUP
  n.wait_for([&] { return pub.pending() != 0; });
  CHECK(pub.pop(PUBREC).id == 4);
  n.settle();
  n.restart();
  client& again = n.connected("sub", false);
  n.settle();
  // Only the copy in flight comes back (DUP), no second routing.
  std::size_t copies = 0;
  while (again.pending() != 0) {
    const rx r = again.pop(PUBLISH);
    CHECK(r.dup);
    ++copies;
  }
  CHECK(copies == 1);
}

TEST_CASE("sqlite: retained messages survive a restart with their 5.0 properties", "[sqlite][MQTT-3.3.1-5]") {
  temp_dir dir;
  node n(dir.file("store.db"));
  mb::message_properties props;
  props.content_type = std::string_view("text/plain");
  props.user_properties.emplace_back("k", "v");
  props.response_topic = std::string_view("reply/here");
  n.broker->publish("r/a", "kept", qos::at_least_once, true, props);
  n.broker->publish("r/b", "gone", qos::at_most_once, true);
  n.broker->publish("r/b", "", qos::at_most_once, true);  // deleted [MQTT-3.3.1-10]
  n.restart();
  const mb::message_ptr m = n.broker->retained("r/a");
  REQUIRE(m);
  CHECK(m->payload() == "kept");
  CHECK_FALSE(n.broker->retained("r/b"));
  client& sub = n.connected("s", true, protocol_version::v5);
  n.subscribe(sub, "r/#", qos::at_least_once);
  n.wait_for([&] { return sub.pending() != 0; });
  const rx p = sub.pop(PUBLISH);
  CHECK(p.retain);
  CHECK(p.qos_level == qos::at_least_once);
  CHECK(p.response_topic == "reply/here");
  REQUIRE(p.user_properties.size() == 1);
  CHECK(p.user_properties[0] == std::make_pair(std::string("k"), std::string("v")));
}

TEST_CASE("sqlite: a delayed will is published after a restart when its delay has run out",
          "[sqlite][MQTT-3.1.2-8]") {
  temp_dir dir;
  node n(dir.file("store.db"));
  {
    client& c = n.add(protocol_version::v5);
    c.set_session_expiry(600);
    c.set_will_delay(30);
    c.connect("c", false, test_client::will_spec{"will/c", "gone"});
    n.wait_for([&] { return c.pending() != 0; });
    c.pop(CONNACK);
    c.close();  // no DISCONNECT: the will waits for its delay
    n.settle();
  }
  n.restart(std::chrono::seconds(10));  // down for 10 s: 20 s of the delay are left
  std::vector<std::string> seen;
  n.broker->subscribe("will/#", [&](const mb::message_ptr& m) { seen.emplace_back(m->payload()); });
  n.advance(std::chrono::seconds(19));
  CHECK(seen.empty());
  n.advance(std::chrono::seconds(2));
  CHECK(seen == std::vector<std::string>{"gone"});
  // Published, so gone from the store: no second will after another restart.
  n.restart(std::chrono::seconds(100));
  seen.clear();
  n.broker->subscribe("will/#", [&](const mb::message_ptr& m) { seen.emplace_back(m->payload()); });
  n.advance(std::chrono::seconds(60));
  CHECK(seen.empty());
}

TEST_CASE("sqlite: a session that expired while the broker was down is gone; one within its expiry is kept",
          "[sqlite][MQTT-3.1.2-23]") {
  temp_dir dir;
  node n(dir.file("store.db"));
  {
    client& a = n.connected("short", false, protocol_version::v5, 30);
    n.subscribe(a, "t", qos::at_least_once);
    a.close();
    client& b = n.connected("long", false, protocol_version::v5, 3600);
    n.subscribe(b, "t", qos::at_least_once);
    b.close();
    n.settle();
  }
  n.restart(std::chrono::seconds(60));  // 30 s ran out while down
  bool present = true;
  n.connected("short", false, protocol_version::v5, 30, &present);
  CHECK_FALSE(present);
  n.connected("long", false, protocol_version::v5, 3600, &present);
  CHECK(present);
}

TEST_CASE("sqlite: a clock behind the last save expires nothing, and what it dates is not stored as old",
          "[sqlite][MQTT-3.1.2-23]") {
  temp_dir dir;
  node n(dir.file("store.db"));
  const auto set = n.clock.system_now();
  {
    client& a = n.connected("a", false, protocol_version::v5, 30);
    a.close();
    n.settle();
  }
  // A board without a real-time clock: it boots in 1970, long before the store's last save.
  n.clock.set_system_time(std::chrono::system_clock::time_point(std::chrono::hours(24)));
  n.restart();
  bool present = false;
  {
    client& a = n.connected("a", false, protocol_version::v5, 30, &present);
    CHECK(present);  // 56 years behind: not a reason to expire anything
    a.close();  // offline "since 1970" by this clock
    n.settle();
  }
  // The clock is set right (10 s after the first run's time): the session went offline then, not
  // in 1970, so 20 s of its expiry are left.
  n.clock.set_system_time(set + std::chrono::seconds(10));
  n.restart();
  n.connected("a", false, protocol_version::v5, 30, &present);
  CHECK(present);
}

TEST_CASE("sqlite: a PUBACK waits for the commit of the message queued for a persistent session",
          "[sqlite][MQTT-4.3.2-2]") {
  temp_dir dir;
  node n(dir.file("store.db"), {}, true);
  client& sub = n.connected("sub", false);
  n.subscribe(sub, "t", qos::at_least_once);
  sub.close();
  client& pub = n.connected("pub", true);
  n.settle();
  n.hold_commits = true;
  pub.publish("t", "m", qos::at_least_once, 5);
  n.run_broker_only();
  CHECK(pub.pending() == 0);  // not before the message is durable
  n.run_commits();  // the commit runs and reports
  n.wait_for([&] { return pub.pending() != 0; });
  CHECK(pub.pop(PUBACK).id == 5);
}

TEST_CASE("sqlite: a PUBACK that one persistent subscriber's acknowledgement does not settle still waits for the commit",
          "[sqlite][MQTT-4.3.2-2]") {
  temp_dir dir;
  node n(dir.file("store.db"), {}, true);
  client& away = n.connected("away", false);
  n.subscribe(away, "t", qos::at_least_once);
  away.close();
  client& sub = n.connected("sub", false);
  n.subscribe(sub, "t", qos::at_least_once);
  client& pub = n.connected("pub", true);
  n.settle();
  n.hold_commits = true;
  pub.publish("t", "m", qos::at_least_once, 6);
  n.run_broker_only();
  const rx d = sub.pop(PUBLISH);
  sub.ack<codec::puback>(d.id);
  n.run_broker_only();
  CHECK(pub.pending() == 0);  // still queued for "away", and not yet durable
  n.run_commits();
  n.wait_for([&] { return pub.pending() != 0; });
  CHECK(pub.pop(PUBACK).id == 6);
  n.hold_commits = false;
  n.restart();
  client& back = n.connected("away", false);
  n.wait_for([&] { return back.pending() != 0; });
  CHECK(back.pop(PUBLISH).payload == "m");
}

// ---- failures: each refuses clearly and changes nothing it should not

TEST_CASE("sqlite: a second open of a store in use fails with 'locked' and names the file", "[sqlite]") {
  temp_dir dir;
  const std::string path = dir.file("store.db");
  node n(path);
  mb::storage::sqlite second;
  mb::storage::sqlite_options o;
  o.path = path;
  std::error_code ec;
  std::string what;
  second.open(o, ec, &what);
  CHECK(ec == mb::storage_errc::locked);
  CHECK(ec.category().name() == std::string("mqttbroker.storage"));
  CHECK(what.find(path) != std::string::npos);
  CHECK_FALSE(second.is_open());
  try {
    second.open(o);
    FAIL("open() of a locked store did not throw");
  } catch (const std::system_error& e) {
    CHECK(e.code() == mb::storage_errc::locked);
  }
  // The first broker goes on storing.
  client& sub = n.connected("sub", false);
  n.subscribe(sub, "t", qos::at_least_once);
}

TEST_CASE("sqlite: a file that is not a store is refused and left as it was", "[sqlite]") {
  temp_dir dir;
  mb::storage::sqlite_options o;
  SECTION("not SQLite at all") {
    o.path = dir.file("notes.txt");
    std::ofstream(o.path, std::ios::binary) << std::string(8192, 'x') << "not a database\n";
  }
  SECTION("another program's SQLite database") {
    o.path = dir.file("other.db");
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(o.path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES(1);", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  const std::string before = read_all(o.path);
  mb::storage::sqlite st;
  std::error_code ec;
  st.open(o, ec);
  CHECK(ec == mb::storage_errc::not_a_database);
  CHECK(read_all(o.path) == before);
  CHECK_FALSE(fs::exists(o.path + "-wal"));
}

TEST_CASE("sqlite: a store with a newer schema version is refused and left as it was", "[sqlite]") {
  temp_dir dir;
  mb::storage::sqlite_options o;
  o.path = dir.file("store.db");
  {
    mb::storage::sqlite st(o);
    st.save_session("kept", 60);
    st.commit();
  }
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(o.path.c_str(), &db) == SQLITE_OK);
    const std::string newer = "PRAGMA journal_mode=DELETE; UPDATE schema_version SET version=" +
                              std::to_string(mb::storage::sqlite::schema_version + 1) + ";";
    REQUIRE(sqlite3_exec(db, newer.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  const std::string before = read_all(o.path);
  mb::storage::sqlite st;
  try {
    st.open(o);
    FAIL("a newer schema was opened");
  } catch (const std::system_error& e) {
    CHECK(e.code() == mb::storage_errc::newer_schema);
    CHECK(std::string(e.what()).find("schema version " + std::to_string(mb::storage::sqlite::schema_version + 1)) !=
          std::string::npos);
  }
  CHECK(read_all(o.path) == before);
}

TEST_CASE("sqlite: a damaged store is refused and left as it was", "[sqlite]") {
  temp_dir dir;
  mb::storage::sqlite_options o;
  o.path = dir.file("store.db");
  {
    mb::storage::sqlite st(o);
    for (int i = 0; i < 200; ++i) st.save_session("client-" + std::to_string(i), 60);
    st.commit();
  }
  {
    sqlite3* db = nullptr;  // one file, no WAL beside it, before it is damaged
    REQUIRE(sqlite3_open(o.path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "PRAGMA journal_mode=DELETE;", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  std::string bytes = read_all(o.path);
  REQUIRE(bytes.size() > 3 * 4096);
  for (std::size_t i = 4096 + 16; i < 3 * 4096; i += 7) bytes[i] = '\x5A';  // pages 2 and 3
  std::ofstream(o.path, std::ios::binary | std::ios::trunc) << bytes;
  mb::storage::sqlite st;
  std::error_code ec;
  st.open(o, ec);
  CHECK((ec == mb::storage_errc::corrupt || ec == mb::storage_errc::not_a_database));
  CHECK(read_all(o.path) == bytes);
}

TEST_CASE("sqlite: a full store refuses what it cannot keep: 5.0 PUBACK 0x97, 3.1.1 closes; nothing refused is kept",
          "[sqlite][MQTT-4.3.2-2]") {
  temp_dir dir;
  mb::storage::sqlite_options limit;
  limit.max_bytes = 96 * 1024;  // PRAGMA max_page_count: SQLITE_FULL without a full disk
  node n(dir.file("store.db"), limit);
  {
    client& sub = n.connected("sub", false);
    n.subscribe(sub, "t", qos::at_least_once);
    sub.close();
  }
  client& pub = n.connected("pub5", true, protocol_version::v5);
  const std::string payload(6000, 'p');
  std::vector<std::string> accepted;
  std::uint8_t refused = 0;
  for (std::uint16_t id = 1; id <= 60 && refused == 0; ++id) {
    const std::string body = std::to_string(id) + payload;
    const std::uint8_t code = publish_acked(n, pub, "t", body, qos::at_least_once, id);
    if (code == 0)
      accepted.push_back(body);
    else
      refused = code;
  }
  CHECK(refused == 0x97);  // Quota exceeded
  CHECK_FALSE(accepted.empty());
  CHECK(n.broker->storage().last_error() == mb::storage_errc::full);
  // 3.1.1 has no negative PUBACK: the connection ends.
  client& old = n.connected("pub3", true);
  old.publish("t", "x" + payload, qos::at_least_once, 1);
  n.wait_for([&] { return old.closed() || old.pending() != 0; });
  CHECK(old.closed());
  CHECK(old.pending() == 0);
  // Every message acknowledged as stored is there after a restart, in order.
  n.restart();
  client& sub = n.connected("sub", false);
  n.wait_for([&] { return sub.pending() >= accepted.size(); });
  for (const std::string& body : accepted) {
    const rx p = sub.pop(PUBLISH);
    CHECK(p.payload.size() == body.size());
    CHECK(p.payload == body);
    sub.ack<codec::puback>(p.id);
  }
  n.settle();
  CHECK(sub.pending() == 0);  // the refused ones are not stored
}

TEST_CASE("sqlite: a QoS 2 PUBLISH to a persistent session, and the PUBREL after its PUBREC, leave only once their state is durable",
          "[sqlite][MQTT-4.3.3-1][MQTT-4.4.0-1]") {
  temp_dir dir;
  node n(dir.file("store.db"), {}, true);
  client& sub = n.connected("sub", false);
  n.subscribe(sub, "t", qos::exactly_once);
  client& pub = n.connected("pub", true);
  n.settle();
  n.hold_commits = true;
  pub.publish("t", "x", qos::exactly_once, 2);
  n.run_broker_only();
  // Sent before its record were durable, a crash would send it again under another identifier.
  CHECK(sub.pending() == 0);
  n.run_commits();
  n.wait_for([&] { return sub.pending() != 0; });
  const rx p = sub.pop(PUBLISH);
  sub.ack<codec::pubrec>(p.id);
  n.run_broker_only();
  CHECK(sub.pending() == 0);  // PUBREL owed only once the PUBREC is stored
  n.run_commits();
  n.wait_for([&] { return sub.pending() != 0; });
  CHECK(sub.pop(PUBREL).id == p.id);
}

namespace {
/// A store on its own thread whose commits a test waits for.
struct waited_store {
  mb::storage::sqlite st;
  std::mutex m;
  std::condition_variable cv;
  std::uint64_t durable = 0;
  explicit waited_store(const mb::storage::sqlite_options& o) : st(o) {
    st.on_commit([this](std::uint64_t t) {
      std::lock_guard<std::mutex> lk(m);
      durable = t;
      cv.notify_all();
    });
  }
  void commit_and_wait() {
    const std::uint64_t t = st.commit();
    std::unique_lock<std::mutex> lk(m);
    REQUIRE(cv.wait_for(lk, std::chrono::seconds(10), [&] { return durable >= t; }));
  }
};
}  // namespace

TEST_CASE("sqlite: the file gives back what a drained queue took: incremental vacuum and WAL checkpoints", "[sqlite]") {
  temp_dir dir;
  mb::storage::sqlite_options o;
  o.path = dir.file("store.db");
  waited_store w(o);
  auto& st = w.st;
  auto commit_and_wait = [&] { w.commit_and_wait(); };
  auto size = [&] {
    std::error_code ignored;
    const auto wal = fs::file_size(o.path + "-wal", ignored);
    return fs::file_size(o.path) + (ignored ? 0 : wal);
  };
  st.save_session("s", 600);
  const std::string payload(4000, 'q');
  for (int i = 0; i < 2000; ++i) st.enqueue("s", mb::message::make("t", payload, qos::at_least_once, false), qos::at_least_once);
  commit_and_wait();
  const auto full = size();
  CHECK(full > 8'000'000);  // 2,000 messages of 4,000 bytes, queued
  // The queue goes (a Clean Start): each message with its last reference. Then the store runs on,
  // and its upkeep gives the pages back.
  st.clear_messages("s");
  for (int i = 0; i < 130; ++i) {
    st.save_subscription("s", "f/" + std::to_string(i), {}, 0);
    commit_and_wait();
  }
  CHECK(size() < full / 4);
}

TEST_CASE("sqlite: Message Expiry runs on while the broker is down", "[sqlite][MQTT-3.3.2-5][MQTT-3.3.2-6]") {
  temp_dir dir;
  node n(dir.file("store.db"));
  {
    client& sub = n.connected("sub", false, protocol_version::v5, 3600);
    n.subscribe(sub, "e/#", qos::at_least_once);
    sub.close();
    n.settle();
  }
  mb::message_properties props;
  props.message_expiry = 60;
  n.broker->publish("e/long", "l", qos::at_least_once, false, props);
  props.message_expiry = 10;
  n.broker->publish("e/short", "s", qos::at_least_once, false, props);
  n.restart(std::chrono::seconds(30));  // the short one expires while the broker is down
  client& sub = n.connected("sub", false, protocol_version::v5, 3600);
  n.wait_for([&] { return sub.pending() != 0; });
  n.settle();
  REQUIRE(sub.pending() == 1);
  const rx p = sub.pop(PUBLISH);
  CHECK(p.topic == "e/long");
  REQUIRE(p.message_expiry);
  CHECK(*p.message_expiry <= 30);  // what is left of it [MQTT-3.3.2-6]
  CHECK(*p.message_expiry >= 29);
}

TEST_CASE("sqlite: a persistent publisher's QoS 2 message, routed once its commit is reported, leaves for a persistent subscriber only after the next",
          "[sqlite][MQTT-4.3.3-1]") {
  temp_dir dir;
  node n(dir.file("store.db"), {}, true);
  client& sub = n.connected("sub", false);
  n.subscribe(sub, "t", qos::exactly_once);
  client& pub = n.connected("pub", false);
  n.settle();
  n.hold_commits = true;
  pub.publish("t", "y", qos::exactly_once, 3);
  n.run_broker_only();
  CHECK(pub.pending() == 0);  // PUBREC after the identifier and the message are durable
  n.run_commits();            // they are: the message is routed, outside any read of the subscriber's
  n.run_broker_only();
  CHECK(pub.pending() == 1);
  CHECK(sub.pending() == 0);  // its PUBLISH waits for the commit of its own record
  n.run_commits();
  n.wait_for([&] { return sub.pending() != 0; });
  CHECK(sub.pop(PUBLISH).payload == "y");
}

TEST_CASE("sqlite: a QoS 1 delivery acknowledged before its commit is not written, nor waited for; one acknowledged after is",
          "[sqlite][MQTT-4.3.2-2]") {
  temp_dir dir;
  node n(dir.file("store.db"), {}, true);
  client& sub = n.connected("sub", false);
  n.subscribe(sub, "t", qos::at_least_once);
  client& pub = n.connected("pub", true);
  n.settle();
  auto& store = n.broker->storage();
  n.hold_commits = true;
  n.run_commits();
  const mb::storage::sqlite_statistics before = store.statistics();

  // Delivered and acknowledged while its commit waits: the batch adds the message and the
  // subscriber's entry and deletes both, so it writes none of the four changes. The publisher's
  // PUBACK does not wait for that commit: the one session the broker was responsible to has the
  // message, so nothing is owed.
  pub.publish("t", "one", qos::at_least_once, 1);
  n.run_broker_only();
  CHECK(pub.pending() == 0);  // owed to the subscriber: the PUBACK waits
  rx d = sub.pop(PUBLISH);
  CHECK(d.payload == "one");
  sub.ack<codec::puback>(d.id);
  n.run_broker_only();
  REQUIRE(pub.pending() == 1);
  CHECK(pub.pop(PUBACK).id == 1);
  n.run_commits();
  const mb::storage::sqlite_statistics first = store.statistics();
  CHECK(first.changes_undone - before.changes_undone == 4);
  CHECK(first.changes_written == before.changes_written);

  // Acknowledged after its commit: the message and the entry are written, then deleted.
  pub.publish("t", "two", qos::at_least_once, 2);
  n.run_broker_only();
  CHECK(pub.pending() == 0);  // [MQTT-4.3.2-2] the PUBACK after the broker is responsible: committed
  n.run_commits();
  n.wait_for([&] { return pub.pending() != 0; });
  CHECK(pub.pop(PUBACK).id == 2);
  d = sub.pop(PUBLISH);
  CHECK(d.payload == "two");
  sub.ack<codec::puback>(d.id);
  n.run_broker_only();
  n.run_commits();
  const mb::storage::sqlite_statistics second = store.statistics();
  CHECK(second.changes_undone == first.changes_undone);
  CHECK(second.changes_written - first.changes_written == 4);

  // Nothing is owed after a restart: the undone changes left no row behind.
  n.hold_commits = false;
  n.restart();
  client& back = n.connected("sub", false);
  n.settle();
  CHECK(back.pending() == 0);
}

// ---- schema versions

namespace {

/// Runs `sql` on the file at `path` (no store open on it); false when SQLite refuses it.
bool exec_on(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  bool ok = sqlite3_open(path.c_str(), &db) == SQLITE_OK &&
            sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK;
  sqlite3_close(db);
  return ok;
}
/// The first column of the first row of `sql` on the file at `path` (-1: no row, or refused).
std::int64_t count_on(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  sqlite3_stmt* st = nullptr;
  std::int64_t v = -1;
  if (sqlite3_open(path.c_str(), &db) == SQLITE_OK && sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}
/// The schema version the file at `path` reports.
std::int64_t schema_version_of(const std::string& path) { return count_on(path, "SELECT max(version) FROM schema_version"); }

/// A store as version 1 of storage::sqlite wrote it. Its schema is written out here, not taken
/// from the header's migration steps, so the test needs no older build and an edit of step 0 -> 1
/// cannot change what the test calls version 1: a persistent session "sub" subscribed to "t/#" at QoS 2 that owes
/// a QoS 1 PUBLISH in flight (packet identifier 5), a PUBREL (6) and a queued QoS 2 message; a
/// received QoS 2 identifier (9) of "pub"; a retained message.
const char* const schema_1_store =
    "PRAGMA application_id=1297171028;"  // "MQBT"
    "CREATE TABLE schema_version(version INTEGER NOT NULL);"
    "INSERT INTO schema_version VALUES(1);"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
    "INSERT INTO meta VALUES('saved_at', 0);"
    "CREATE TABLE sessions(client_id TEXT PRIMARY KEY, expiry INTEGER NOT NULL, offline_since INTEGER) WITHOUT ROWID;"
    "CREATE TABLE subscriptions(client_id TEXT NOT NULL, filter TEXT NOT NULL, options INTEGER NOT NULL,"
    " identifier INTEGER NOT NULL, PRIMARY KEY(client_id, filter)) WITHOUT ROWID;"
    "CREATE TABLE messages(id INTEGER PRIMARY KEY, topic BLOB NOT NULL, payload BLOB NOT NULL,"
    " properties BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, expires INTEGER NOT NULL);"
    "CREATE TABLE outgoing(client_id TEXT NOT NULL, seq INTEGER NOT NULL, message_id INTEGER,"
    " qos INTEGER NOT NULL, state INTEGER NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY(client_id, seq))"
    " WITHOUT ROWID;"
    "CREATE TABLE inbound(client_id TEXT NOT NULL, packet_id INTEGER NOT NULL, message_id INTEGER,"
    " PRIMARY KEY(client_id, packet_id)) WITHOUT ROWID;"
    "CREATE TABLE retained(topic BLOB PRIMARY KEY, payload BLOB NOT NULL, properties BLOB NOT NULL,"
    " qos INTEGER NOT NULL, expires INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE wills(client_id TEXT PRIMARY KEY, topic BLOB NOT NULL, payload BLOB NOT NULL,"
    " properties BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, due INTEGER NOT NULL) WITHOUT ROWID;"
    // expiry 0xFFFFFFFF: never; subscription options 2: QoS 2
    "INSERT INTO sessions VALUES('sub', 4294967295, NULL), ('pub', 4294967295, NULL);"
    "INSERT INTO subscriptions VALUES('sub', 't/#', 2, 0);"
    "INSERT INTO messages VALUES(1, CAST('t/flight' AS BLOB), CAST('in flight' AS BLOB), x'', 1, 0, 0),"
    " (2, CAST('t/queued' AS BLOB), CAST('queued' AS BLOB), x'', 2, 0, 0);"
    // states: 0 queued, 1 sent, 2 PUBREC received (no message)
    "INSERT INTO outgoing VALUES('sub', 1, 1, 1, 1, 5), ('sub', 2, NULL, 2, 2, 6), ('sub', 3, 2, 2, 0, 0);"
    "INSERT INTO inbound VALUES('pub', 9, NULL);"
    "INSERT INTO retained VALUES(CAST('r' AS BLOB), CAST('kept' AS BLOB), x'', 1, 0);";

}  // namespace

TEST_CASE("sqlite: a store of schema version 1 is migrated to version 3 and keeps its sessions, subscriptions and messages",
          "[sqlite][MQTT-4.1.0-1][MQTT-4.4.0-1]") {
  temp_dir dir;
  const std::string path = dir.file("store.db");
  REQUIRE(exec_on(path, schema_1_store));
  REQUIRE(schema_version_of(path) == 1);
  {
    node n(path);
    bool present = false;
    client& sub = n.connected("sub", false, protocol_version::v3_1_1, std::nullopt, &present);
    CHECK(present);  // [MQTT-4.1.0-1]
    n.wait_for([&] { return sub.pending() >= 3; });
    // [MQTT-4.4.0-1] what was in flight goes again in its order: the PUBLISH with DUP, the
    // PUBREL; then the queued message.
    const rx again = sub.pop(PUBLISH);
    CHECK(again.dup);
    CHECK(again.id == 5);
    CHECK(again.payload == "in flight");
    CHECK_FALSE(again.retain);  // version 1 kept no RETAIN flag: sent as version 1 sent it
    CHECK(sub.pop(PUBREL).id == 6);
    const rx queued = sub.pop(PUBLISH);
    CHECK(queued.payload == "queued");
    CHECK(queued.qos_level == qos::exactly_once);
    // The subscription and the retained message came through.
    client& pub = n.connected("pub", false);
    REQUIRE(publish_acked(n, pub, "t/new", "n", qos::at_least_once, 1) == 0);
    n.wait_for([&] { return sub.pending() != 0; });
    CHECK(sub.pop(PUBLISH).topic == "t/new");
    // "pub"'s received QoS 2 identifier 9 is still held: a PUBLISH resent with it is not routed.
    pub.publish("t/dup", "resent", qos::exactly_once, 9, false, true);  // DUP
    n.wait_for([&] { return pub.pending() != 0; });
    CHECK(pub.pop(PUBREC).id == 9);
    client& late = n.connected("late", true);
    n.subscribe(late, "r", qos::at_least_once);
    n.wait_for([&] { return late.pending() != 0; });
    CHECK(late.pop(PUBLISH).payload == "kept");
    n.settle();
    CHECK(sub.pending() == 0);
  }
  CHECK(schema_version_of(path) == mb::storage::sqlite::schema_version);
  CHECK(mb::storage::sqlite::schema_version == 3);
  // Version 3 keeps messages and deliveries in the journal: the old rows became its first
  // segment, and their tables are left empty.
  CHECK(exec_on(path, "SELECT retain, subscription_ids FROM outgoing"));
  CHECK(count_on(path, "SELECT count(*) FROM outgoing") == 0);
  CHECK(count_on(path, "SELECT count(*) FROM messages") == 0);
}

TEST_CASE("sqlite: a message resent after a restart carries the Subscription Identifiers and RETAIN flag of its first send",
          "[sqlite][MQTT-3.3.4-3][MQTT-3.3.1-12][MQTT-3.3.1-8][MQTT-4.4.0-1]") {
  temp_dir dir;
  node n(dir.file("store.db"));
  // The retained message the subscription sends: the SUBACK waits for the subscription's commit,
  // so either may come first.
  auto subscribe = [&](client& c, std::uint16_t id, const std::string& filter, std::uint32_t identifier) {
    codec::subscribe s;
    s.packet_id = id;
    codec::properties_builder props;
    props.add(codec::property_id::subscription_identifier, identifier);
    s.properties = props.view();
    codec::subscribe_entry e;
    e.filter = filter;
    e.options.max_qos = qos::at_least_once;
    e.options.retain_as_published = true;
    s.entries.push_back(e);
    c.send(s);
    n.wait_for([&] { return c.pending() >= 2; });
    rx a = c.pop();
    rx b = c.pop();
    if (a.type == SUBACK) std::swap(a, b);
    CHECK(b.type == SUBACK);
    CHECK(a.type == PUBLISH);
    return a;
  };
  auto retained_publish = [&](client& pub, const std::string& topic, const std::string& payload, std::uint16_t id) {
    pub.publish(topic, payload, qos::at_least_once, id, true);
    n.wait_for([&] { return pub.pending() != 0; });
    REQUIRE(pub.pop(PUBACK).id == id);
  };
  using ids = std::vector<std::uint32_t>;
  client* pub = &n.connected("pub", true, protocol_version::v5);
  retained_publish(*pub, "t/old", "before", 1);  // retained before the subscriptions
  std::uint16_t in_flight = 0;
  {
    client& sub = n.connected("sub", false, protocol_version::v5, 3600u);
    // Overlapping subscriptions: one PUBLISH carries both identifiers [MQTT-3.3.4-3]; 300 takes
    // two bytes as a Variable Byte Integer.
    const rx on_subscribe = subscribe(sub, 1, "t/#", 7);  // the retained message: RETAIN 1 [MQTT-3.3.1-8]
    CHECK(on_subscribe.retain);
    CHECK(on_subscribe.subscription_ids == ids{7});
    CHECK(subscribe(sub, 2, "t/+", 300).subscription_ids == ids{300});
    retained_publish(*pub, "t/live", "live", 2);
    n.wait_for([&] { return sub.pending() != 0; });
    const rx first = sub.pop(PUBLISH);
    CHECK(first.retain);  // Retain As Published [MQTT-3.3.1-12]
    CHECK(first.subscription_ids == ids{7, 300});
    in_flight = first.id;
    sub.close();  // none acknowledged
  }
  // Offline: this one waits in the queue.
  retained_publish(*pub, "t/queued", "queued", 3);
  n.settle();
  n.restart();
  client& sub = n.connected("sub", false, protocol_version::v5, 3600u);
  n.wait_for([&] { return sub.pending() >= 4; });
  std::vector<rx> got;
  while (sub.pending() != 0) got.push_back(sub.pop(PUBLISH));
  REQUIRE(got.size() == 4);
  // The two retained deliveries on subscribe, the live message, then the queued one: each as first sent.
  CHECK(got[0].payload == "before");
  CHECK(got[0].subscription_ids == ids{7});
  CHECK(got[1].subscription_ids == ids{300});
  CHECK(got[2].payload == "live");
  CHECK(got[2].id == in_flight);
  CHECK(got[3].payload == "queued");
  CHECK(got[3].subscription_ids == ids{7, 300});
  for (const rx& r : got) {
    INFO(r.payload);
    CHECK(r.retain);
    CHECK(r.dup == (r.payload != "queued"));
  }
  CHECK(got[2].subscription_ids == ids{7, 300});
}

// ---- undone changes across batches

namespace {

/// What a store's load() gives back of its outgoing entries (the rest is counted, not kept).
struct outgoing_seen {
  std::string client_id;
  std::uint16_t packet_id;
  bool has_message;
  mb::storage::outgoing_state state;
  mb::message_ptr message;  // one object per message row the load found
};
struct capture_loader {
  std::vector<outgoing_seen> outgoing_entries;
  std::size_t sessions = 0;
  void session(std::string_view, std::uint32_t, std::chrono::seconds) { ++sessions; }
  void subscription(std::string_view, std::string_view, codec::subscribe_options, std::uint32_t) {}
  void retained(mb::message_ptr) {}
  void outgoing(std::string_view id, std::uint16_t packet_id, mb::message_ptr m, const mb::storage::delivery&,
                mb::storage::outgoing_state s) {
    outgoing_entries.push_back({std::string(id), packet_id, static_cast<bool>(m), s, m});
  }
  std::vector<std::uint16_t> inbound_ids;
  void inbound(std::string_view, std::uint16_t packet_id, mb::message_ptr) { inbound_ids.push_back(packet_id); }
  void will(std::string_view, mb::message_ptr, std::chrono::system_clock::time_point) {}
  std::chrono::system_clock::time_point system_now() const { return std::chrono::system_clock::now(); }
  std::uint32_t expiry_second(std::chrono::system_clock::time_point) const { return 0; }
};

/// What a crash right now would leave: the store's file and its WAL, copied while it is open
/// (between batches), then loaded by a store of its own.
capture_loader load_crash_copy(const std::string& path, const std::string& copy) {
  fs::copy_file(path, copy, fs::copy_options::overwrite_existing);
  if (fs::exists(path + "-wal")) fs::copy_file(path + "-wal", copy + "-wal", fs::copy_options::overwrite_existing);
  mb::storage::sqlite_options o;
  o.path = copy;
  mb::storage::sqlite st(o);
  capture_loader l;
  st.load(l);
  return l;
}

/// A store in a folder of its own whose batches run only when the test says (run_batches()), on
/// the calling thread.
struct held_store {
  temp_dir dir;
  const std::string path = dir.file("store.db");
  asio::io_context jobs;
  mb::storage::sqlite st;
  held_store() {
    mb::storage::sqlite_options o;
    o.path = path;
    o.executor = [this](std::function<void()> f) { asio::post(jobs, std::move(f)); };
    st.open(std::move(o));
  }
  void run_batches() {
    jobs.run();
    jobs.restart();
  }
  /// Persistent sessions that never expire.
  void save_sessions(std::initializer_list<const char*> client_ids) {
    for (const char* id : client_ids) st.save_session(id, 0xFFFFFFFFu);
  }
};

}  // namespace

TEST_CASE("sqlite: a QoS 2 delivery whose PUBREC comes before its commit keeps its message until the PUBREC is durable",
          "[sqlite][MQTT-4.3.3-1]") {
  // The PUBREC's change waits for a later ticket than the PUBLISH's; were the message row undone
  // with it, the batch of the PUBLISH's ticket would write an entry naming a message the file
  // never had, and a crash after it would lose the PUBREL owed (the load drops such entries).
  held_store h;
  auto& st = h.st;
  st.save_session("sub", 0xFFFFFFFFu);
  st.send("sub", 7, mb::message::make("t", "two", qos::exactly_once, false), qos::exactly_once);
  st.commit();
  st.pubrec("sub", 7);  // recorded, its ticket not yet given
  h.run_batches();      // the batch of the first ticket only

  capture_loader first = load_crash_copy(h.path, h.dir.file("crash-1.db"));
  REQUIRE(first.outgoing_entries.size() == 1);
  CHECK(first.outgoing_entries[0].packet_id == 7);
  CHECK(first.outgoing_entries[0].has_message);  // the PUBLISH is owed again, with DUP
  CHECK(first.outgoing_entries[0].state == mb::storage::outgoing_state::sent);

  st.commit();
  h.run_batches();
  capture_loader second = load_crash_copy(h.path, h.dir.file("crash-2.db"));
  REQUIRE(second.outgoing_entries.size() == 1);
  CHECK_FALSE(second.outgoing_entries[0].has_message);  // only the PUBREL is owed
  CHECK(second.outgoing_entries[0].state == mb::storage::outgoing_state::pubrec_received);
  st.close();
}

TEST_CASE("sqlite: an entry acknowledged before the worker takes it is not written, across tickets; its message stays for "
          "another session that still owes it",
          "[sqlite][MQTT-4.3.2-2]") {
  held_store h;
  auto& st = h.st;
  h.save_sessions({"a", "b"});
  st.commit();
  h.run_batches();
  const mb::storage::sqlite_statistics before = st.statistics();

  const mb::message_ptr m = mb::message::make("t", "shared", qos::at_least_once, false);
  st.send("a", 1, m, qos::at_least_once);
  st.send("b", 1, m, qos::at_least_once);
  st.commit();               // the PUBLISH's ticket, given
  st.acknowledge("a", 1);    // a's PUBACK, in a later ticket, before the worker ran
  st.commit();
  h.run_batches();
  const mb::storage::sqlite_statistics after = st.statistics();
  // a's entry: its addition and deletion; the message and b's entry are written.
  CHECK(after.changes_undone - before.changes_undone == 2);
  CHECK(after.changes_written - before.changes_written == 2);

  capture_loader crash = load_crash_copy(h.path, h.dir.file("crash.db"));
  REQUIRE(crash.outgoing_entries.size() == 1);
  CHECK(crash.outgoing_entries[0].client_id == "b");
  CHECK(crash.outgoing_entries[0].has_message);
  st.close();
}

TEST_CASE("sqlite: entries whose packet identifiers share a run of the store's table are each found, ended and loaded",
          "[sqlite][MQTT-4.3.2-2][MQTT-4.3.3-1]") {
  // The store keeps a session's entries by packet identifier in a table where identifiers that
  // hash alike lie in a run: a lookup must walk past the others, and ending one must keep those
  // after it reachable. 600 in flight each way, their identifiers scattered (as after many
  // acknowledgements out of order), make many such runs; consecutive ones would hash apart.
  held_store h;
  auto& st = h.st;
  h.save_sessions({"c"});
  std::vector<std::uint16_t> ids;
  std::vector<bool> taken(65536, false);
  std::uint32_t x = 12345;
  while (ids.size() < 600) {
    x = x * 1103515245u + 12345u;
    const auto id = static_cast<std::uint16_t>(x >> 16);
    if (id != 0 && !taken[id]) {
      taken[id] = true;
      ids.push_back(id);
    }
  }
  for (std::uint16_t id : ids) {
    st.send("c", id, mb::message::make("out/" + std::to_string(id), "o", qos::at_least_once, false), qos::at_least_once);
    st.receive("c", id, mb::message::make("in/" + std::to_string(id), "i", qos::exactly_once, false));
  }
  st.commit();
  h.run_batches();
  // Every third one ended, in an order that is neither the sending one nor its reverse.
  std::vector<std::uint16_t> ended, kept;
  for (std::size_t k = 0; k < ids.size(); ++k) (k % 3 == 1 ? ended : kept).push_back(ids[(k * 7) % ids.size()]);
  for (std::uint16_t id : ended) {
    st.acknowledge("c", id);
    st.release("c", id);
  }
  st.commit();
  h.run_batches();

  capture_loader crash = load_crash_copy(h.path, h.dir.file("crash.db"));
  std::vector<std::uint16_t> out;
  for (const auto& e : crash.outgoing_entries) out.push_back(e.packet_id);
  std::sort(out.begin(), out.end());
  std::sort(crash.inbound_ids.begin(), crash.inbound_ids.end());
  std::sort(kept.begin(), kept.end());
  CHECK(out == kept);
  CHECK(crash.inbound_ids == kept);
  st.close();
}

TEST_CASE("sqlite: a message the store still holds is found again after many others ended around it: one row, "
          "however many sessions take it",
          "[sqlite]") {
  // The store finds a message's row by the message's address, in a table where rows whose
  // addresses hash alike lie in a run; a row that ends must not cut the run. Were a row lost
  // to a lookup, the second session's send would write the message again as a row of its own.
  held_store h;
  h.save_sessions({"a", "b"});
  std::vector<mb::message_ptr> sent;
  for (int i = 0; i < 600; ++i) {
    sent.push_back(mb::message::make("t/" + std::to_string(i), "x", qos::at_least_once, false));
    h.st.send("a", static_cast<std::uint16_t>(i + 1), sent.back(), qos::at_least_once);
  }
  h.st.commit();
  h.run_batches();
  std::vector<std::uint16_t> kept;
  for (std::size_t k = 0; k < sent.size(); ++k) {
    const auto i = static_cast<std::uint16_t>((k * 7) % sent.size());
    if (k % 2 == 0) {
      h.st.acknowledge("a", static_cast<std::uint16_t>(i + 1));  // its message ends with it
    } else {
      kept.push_back(static_cast<std::uint16_t>(i + 1));
    }
  }
  for (std::uint16_t id : kept) h.st.send("b", id, sent[id - 1u], qos::at_least_once);
  h.st.commit();
  h.run_batches();

  capture_loader crash = load_crash_copy(h.path, h.dir.file("crash.db"));
  std::map<std::uint16_t, mb::message_ptr> of_a, of_b;
  for (const auto& e : crash.outgoing_entries) (e.client_id == "a" ? of_a : of_b)[e.packet_id] = e.message;
  REQUIRE(of_a.size() == kept.size());
  REQUIRE(of_b.size() == kept.size());
  std::size_t shared = 0;
  for (std::uint16_t id : kept) shared += of_a[id] && of_a[id].get() == of_b[id].get() ? 1u : 0u;
  CHECK(shared == kept.size());
  h.st.close();
}

namespace {
/// What the remote's subscriber got: payloads in order.
struct remote_subscriber_events {
  std::vector<std::string> payloads;
  int subacks = 0;
  void on_connected(const codec::connack&) {}
  void on_refused(const codec::connack&) {}
  void on_connection_lost(std::error_code) {}
  void on_message(const codec::publish& p) { payloads.emplace_back(p.payload); }
  void on_published(std::uint64_t, reason_code) {}
  void on_suback(const codec::suback&) { ++subacks; }
  void on_unsuback(const codec::unsuback&) {}
  void on_disconnect(const codec::disconnect&) {}
};
}  // namespace

TEST_CASE("sqlite: a bridge's local session keeps what waits for an unreachable remote across a restart of its broker",
          "[sqlite][bridge]") {
  temp_dir dir;
  node n(dir.file("store.db"));
  std::uint16_t port = 0;  // the remote's, not listening yet
  {
    asio::ip::tcp::acceptor a(n.io, {asio::ip::make_address("127.0.0.1"), 0});
    port = a.local_endpoint().port();
  }
  auto options = [&] {
    mb::bridge::bridge_options o;
    o.name = "up";
    o.remote.addresses.push_back({"127.0.0.1", port});
    o.remote.session.client_id = "gw-up";
    o.remote.session.clean_start = false;
    o.remote.reconnect_min = std::chrono::milliseconds(20);
    o.remote.reconnect_max = std::chrono::milliseconds(50);
    o.local_listener = n.listener();
    o.local_clientid = "bridge-up";
    o.notifications = false;
    std::string why;
    o.topics.push_back(*mb::bridge::parse_topic_route({"q/#", "out", "1"}, why));
    return o;
  };
  using bridge_type = mb::bridge::bridge<broker_type>;
  auto br = std::make_unique<bridge_type>(*n.broker, options());
  br->start();
  n.wait_for([&] { return n.broker->stats().subscriptions == 1; });  // the local session's filter
  constexpr int before = 40;
  for (int i = 0; i < before; ++i) n.broker->publish("q/seq", std::to_string(i), qos::at_least_once);
  n.settle();
  CHECK_FALSE(br->connected());
  br->stop();
  n.settle();
  br.reset();
  n.restart();  // what the local session was owed is in the store, and only there

  // The remote comes up, with a subscriber, then the bridge again.
  mb::broker<> remote(n.io);
  remote.listen({"127.0.0.1", port});
  remote.start();
  // Stopped before it goes, also when a REQUIRE below ends the test early: its connections
  // would otherwise outlive it on n.io.
  struct stop_on_exit {
    mb::broker<>& b;
    asio::io_context& io;
    ~stop_on_exit() {
      bool stopped = false;
      b.async_stop([&](std::error_code) { stopped = true; });
      for (int i = 0; i < 10'000 && !stopped; ++i) {
        io.restart();
        io.poll();
      }
    }
  } remote_stopper{remote, n.io};
  mb::client::client_options so;
  so.session.client_id = "remote-sub";
  so.addresses.push_back({"127.0.0.1", port});
  mb::client::client<remote_subscriber_events> sub(n.io.get_executor(), so, remote_subscriber_events{});
  sub.subscribe("q/#", qos::at_least_once);
  sub.start();
  n.wait_for([&] { return sub.handler().subacks == 1; });
  br = std::make_unique<bridge_type>(*n.broker, options());  // on the restarted broker's listener
  br->start();
  n.wait_for([&] { return sub.handler().payloads.size() >= static_cast<std::size_t>(before); });
  for (int i = before; i < before + 5; ++i) n.broker->publish("q/seq", std::to_string(i), qos::at_least_once);
  n.wait_for([&] { return sub.handler().payloads.size() >= static_cast<std::size_t>(before + 5); });
  n.settle();
  std::vector<std::string> expected;
  for (int i = 0; i < before + 5; ++i) expected.push_back(std::to_string(i));
  CHECK(sub.handler().payloads == expected);  // each once, in order
  CHECK(br->stats().dropped == 0);
  sub.stop();
  br->stop();
  n.settle();
}

TEST_CASE("sqlite: an entry that stays does not keep the journal's later segments: they go, it is written again, and it "
          "survives a restart",
          "[sqlite]") {
  temp_dir dir;
  mb::storage::sqlite_options o;
  o.path = dir.file("store.db");
  o.journal_compact_bytes = 64 * 1024;
  capture_loader after;
  {
    waited_store w(o);
    auto& st = w.st;
    auto commit_and_wait = [&] { w.commit_and_wait(); };
    // A session that stays away owes one message, recorded in the first segment.
    st.save_session("away", 0xFFFFFFFFu);
    st.enqueue("away", mb::message::make("kept", "owed", qos::at_least_once, false), qos::at_least_once);
    st.save_session("busy", 0xFFFFFFFFu);
    commit_and_wait();
    // Then 3 MB of messages come and go, each written and then ended by its acknowledgement.
    const std::string payload(1000, 'b');
    for (int i = 0; i < 3000; ++i) {
      const auto id = static_cast<std::uint16_t>(i % 1000 + 1);
      st.send("busy", id, mb::message::make("t", payload, qos::at_least_once, false), qos::at_least_once);
      commit_and_wait();
      st.acknowledge("busy", id);
    }
    commit_and_wait();
    CHECK(st.statistics().compactions > 0);
    // What the journal holds stays within a small multiple of the bound, not the 3 MB written.
    const std::string copy = dir.file("copy.db");
    fs::copy_file(o.path, copy);
    if (fs::exists(o.path + "-wal")) fs::copy_file(o.path + "-wal", copy + "-wal");
    const std::int64_t journal = count_on(copy, "SELECT coalesce(sum(length(records)), 0) FROM journal");
    CHECK(journal >= 0);
    CHECK(journal < 4 * 64 * 1024);
  }
  mb::storage::sqlite st(o);
  st.load(after);
  REQUIRE(after.outgoing_entries.size() == 1);
  CHECK(after.outgoing_entries[0].client_id == "away");
  CHECK(after.outgoing_entries[0].has_message);
  CHECK(after.outgoing_entries[0].state == mb::storage::outgoing_state::queued);
}

TEST_CASE("sqlite: a tombstone stays while an older segment holds the entry it ended, so a restart does not bring the "
          "entry back",
          "[sqlite][MQTT-4.3.2-2]") {
  held_store h;
  auto& st = h.st;
  st.save_session("s", 0xFFFFFFFFu);
  st.send("s", 1, mb::message::make("t", "stays", qos::at_least_once, false), qos::at_least_once);
  st.send("s", 2, mb::message::make("t", "acknowledged", qos::at_least_once, false), qos::at_least_once);
  st.commit();
  h.run_batches();  // one segment holds both deliveries
  st.acknowledge("s", 2);
  st.commit();
  h.run_batches();  // the next holds packet 2's tombstones
  for (int i = 0; i < 3; ++i) {  // later batches, each a chance to delete segments no longer needed
    st.save_subscription("s", "f/" + std::to_string(i), {}, 0);
    st.commit();
    h.run_batches();
  }
  capture_loader l = load_crash_copy(h.path, h.dir.file("crash.db"));
  REQUIRE(l.outgoing_entries.size() == 1);
  CHECK(l.outgoing_entries[0].packet_id == 1);
  CHECK(l.outgoing_entries[0].has_message);
  st.close();
}

TEST_CASE("sqlite: a damaged journal segment is read up to the damage: no crash, the records before it load, the log "
          "says where",
          "[sqlite]") {
  temp_dir dir;
  mb::storage::sqlite_options o;
  o.path = dir.file("store.db");
  {
    waited_store w(o);
    w.st.save_session("s", 0xFFFFFFFFu);
    w.st.enqueue("s", mb::message::make("t", "first", qos::at_least_once, false), qos::at_least_once);
    w.commit_and_wait();  // segment 1
    w.st.enqueue("s", mb::message::make("t", "second", qos::at_least_once, false), qos::at_least_once);
    w.commit_and_wait();  // segment 2
  }
  // Segment 2's records become a message put that claims a topic of 2^63 bytes: its length is
  // checked against what is left, never allocated.
  REQUIRE(exec_on(o.path, "UPDATE journal SET records = x'1001010100FFFFFFFFFFFFFFFF7F' WHERE segment = "
                          "(SELECT max(segment) FROM journal)"));
  std::vector<std::string> log;
  o.log = [&](std::string_view line) { log.emplace_back(line); };
  mb::storage::sqlite st(o);
  capture_loader l;
  st.load(l);
  REQUIRE(l.outgoing_entries.size() == 1);
  CHECK(l.outgoing_entries[0].has_message);
  REQUIRE(log.size() == 1);
  CHECK(log[0].find("damaged") != std::string::npos);
}
