// libFuzzer target for the protocol engine (DECISIONS.md "Fuzz the engine"): the input is a
// program of steps for four clients, whose packets are built from the input's bytes (valid
// packets in arbitrary orders: the decoder has its own fuzzer), with time steps, dropped
// transports and refused input between them. What the engine sends each client is decoded and
// checked, and any broken invariant traps:
//   - every byte the engine writes decodes as packets of the client's version;
//   - nothing is written to a connection after it closed;
//   - the first packet on a connection is CONNACK [MQTT-3.2.0-1], and nothing follows the
//     server's DISCONNECT [MQTT-3.14.4-1];
//   - a packet identifier is not reused while its QoS 1/2 message is in flight [MQTT-2.2.1-3];
//   - a QoS 2 message from a client is routed at most once per identifier until PUBREL [MQTT-4.3.3-2];
//   - the engine counts exactly the connections that are open;
//   - 5.0 enhanced authentication, against the SCRAM-SHA-256 hooks with one fixed user: AUTH goes
//     only to clients whose CONNECT named a method, with that method [MQTT-4.12.0-5]
//     [MQTT-4.12.0-6], reason 0x18, or 0x00 after CONNACK; a successful CONNACK names the method;
//     and a client is authenticated (CONNACK 0x00, AUTH 0x00) only right after it sent the proof
//     of the right password, with a server signature that the client verifies;
//   - topic aliases: every alias the engine sends is within the Topic Alias Maximum the client
//     announced on this connection [MQTT-3.3.2-11], an empty topic comes only with an alias the
//     engine set earlier on the same connection, and what it resolves to is a topic that was
//     published; an inbound alias of 0 or above the broker's maximum ends the connection with
//     DISCONNECT 0x94, an empty topic with an alias the client never set with 0x82.
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude tests/fuzz/engine_fuzz.cpp -o /tmp/fe -lcrypto
//   mkdir -p /tmp/fe-corpus && /tmp/fe -max_total_time=60 /tmp/fe-corpus
#include <mqttbroker/auth/scram.hpp>
#include <mqttbroker/codec.hpp>
#include <mqttbroker/engine/protocol.hpp>
#include <mqttbroker/hooks/hooks.hpp>
#include <mqttbroker/locking/none.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../scram_client.hpp"

namespace {

namespace mb = mqttbroker;
namespace mc = mqttbroker::codec;

[[noreturn]] void fail(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "engine_fuzz: %s %s\n", what, detail.c_str());
  __builtin_trap();
}

/// The one user SCRAM knows: "user", password "pencil", at one iteration (fuzzing wants speed).
struct fixed_user {
  std::optional<mb::auth::scram_credentials> operator()(std::string_view user) const {
    if (user != "user") return std::nullopt;
    static const mb::auth::scram_credentials c = [] {
      mb::auth::scram_credentials out;
      if (mb::auth::derive_scram_credentials("pencil", "fuzz-salt", 1, out)) fail("derive_scram_credentials");
      return out;
    }();
    return c;
  }
};
using fuzz_hooks = mb::auth::scram_hooks<fixed_user>;

struct policies {
  using locking = mb::locking::none;
  using hooks = fuzz_hooks;
};
using engine_type = mb::engine::protocol<policies>;
using steady_time = engine_type::steady_time;

/// Reads the program; past its end every read is 0, so any input is a program.
class reader {
 public:
  reader(const std::uint8_t* d, std::size_t n) : d_(d), n_(n) {}
  bool done() const { return i_ >= n_; }
  std::uint8_t byte() { return i_ < n_ ? d_[i_++] : 0; }
  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v[byte() % v.size()];
  }

 private:
  const std::uint8_t* d_;
  std::size_t n_;
  std::size_t i_ = 0;
};

const std::vector<std::string> client_ids = {"c0", "c1", "c2", ""};
const std::vector<std::string> topics = {"a", "a/b", "a/b/c", "x", "$SYS/x"};
const std::vector<std::string> filters = {"a", "a/+", "a/#", "#", "+/b", "x", "$SYS/#", "$share/g/a"};
const std::vector<std::string> methods = {"SCRAM-SHA-256", "SCRAM-SHA-256", "SCRAM-SHA-1"};
const std::vector<std::string> auth_methods = {"SCRAM-SHA-256", "SCRAM-SHA-256", "SCRAM-SHA-256", "OTHER", ""};
const std::vector<std::pair<std::string, std::string>> logins = {
    {"user", "pencil"}, {"user", "pencil"}, {"user", "wrong"}, {"nobody", "pencil"}};

struct world;

constexpr std::uint16_t broker_alias_maximum = 3;

/// A client's connection as the engine sees it, checking what the engine writes to it.
class fake_link final : public engine_type::link_type {
 public:
  explicit fake_link(mc::protocol_version v)
      : version_(v), decoder_(mc::decoder_options{mc::role::client, mc::max_packet_size, v}) {}

  void start_write() override;
  void finish() override;
  void post(mb::engine::link_event e) override { events.push_back(e); }

  std::vector<mb::engine::link_event> events;
  mc::protocol_version client_version() const { return version_; }

  /// A new SCRAM exchange: its client-first message.
  std::string scram_first(const std::pair<std::string, std::string>& login, std::string nonce) {
    scram_ = std::make_unique<test_scram::client>(login.first, login.second, std::move(nonce));
    scram_right_ = login.first == "user" && login.second == "pencil";
    server_first_.clear();
    proof_right_ = false;
    return scram_->first();
  }
  /// The client-final message for the server-first last received (empty without one).
  std::string scram_final() {
    proof_right_ = false;
    if (!scram_ || server_first_.empty()) return {};
    std::string m = scram_->final(server_first_);
    proof_right_ = scram_right_ && !m.empty();
    return m;
  }
  /// Anything else sent in an AUTH: no proof.
  void no_proof() { proof_right_ = false; }

 private:
  void check(mc::packet& p);
  void check_authenticated(const mc::properties_view& props);

  mc::protocol_version version_;
  mc::decoder decoder_;
  bool got_connack_ = false;
  bool got_disconnect_ = false;
  std::unique_ptr<test_scram::client> scram_;  // the exchange under way
  bool scram_right_ = false;                    // ... with the right user and password
  bool proof_right_ = false;                    // the last AUTH data was the right password's proof
  std::string server_first_;                    // the data of the last AUTH 0x18

 public:
  std::set<std::uint16_t> in_flight_;    // identifiers of QoS 1/2 PUBLISHes not yet completed
  std::set<std::uint16_t> qos2_routed_;  // QoS 2 from this client routed and not yet released
  bool connect_sent_ = false;            // the decoder lets one CONNECT through, first
  bool draining_ = false;                // closing: the transport closes at the next drain()
  std::optional<std::string> method_;    // the CONNECT's Authentication Method
  std::uint16_t alias_maximum_ = 0;      // the Topic Alias Maximum of the CONNECT
  std::map<std::uint16_t, std::string> outbound_aliases_;  // set by the engine's PUBLISHes
  std::map<std::uint16_t, std::string> inbound_aliases_;   // set by this client's PUBLISHes
  std::optional<mb::reason_code> disconnect_reason_;       // of the server's DISCONNECT
};

struct world {
  engine_type engine{make_options(), make_hooks()};
  steady_time now = steady_time(std::chrono::hours(1));
  std::chrono::system_clock::time_point system_now{};
  std::array<mb::detail::ref_ptr<fake_link>, 4> links;
  std::size_t open_links = 0;

  static mb::broker_options make_options() {
    mb::broker_options o;
    o.max_inflight = 3;  // small windows and queues reach their limits quickly
    o.max_queued_messages = 5;
    o.receive_maximum = 4;
    o.max_subscriptions_per_client = 4;
    o.connect_timeout = std::chrono::seconds(5);
    o.max_keep_alive = 10;
    o.persistent_session_expiry = std::chrono::seconds(60);
    o.max_auth_steps = 4;
    o.max_auth_data_size = 200;
    o.reauthentication_timeout = std::chrono::seconds(3);
    o.topic_alias_maximum = broker_alias_maximum;
    o.max_outbound_topic_aliases = 3;
    return o;
  }
  static fuzz_hooks make_hooks() {
    mb::auth::scram_options o;
    o.unknown_user_iterations = 1;
    // The broker's nonces from a counter: the same input, the same run.
    o.server_nonce = [n = std::make_shared<int>(0)] { return "srv" + std::to_string(++*n); };
    return fuzz_hooks(fixed_user{}, o);
  }

  void open(std::size_t i, mc::protocol_version v) {
    close(i);
    links[i] = mb::detail::ref_ptr<fake_link>::make(v);
    if (!engine.open(*links[i], now)) fail("open refused");
    ++open_links;
  }
  void close(std::size_t i) {
    if (links[i] && links[i]->is_open()) {
      links[i]->mark_closed();
      --open_links;
      engine.on_closed(*links[i], now, system_now);
    }
  }

  template <class Packet>
  void feed(std::size_t i, Packet packet) {
    fake_link& l = *links[i];
    // A closing connection's input is not read, nor a paused one's (an AUTH step, pacing).
    if (!l.is_open() || l.is_closing() || l.paused()) return;
    mc::packet p(std::move(packet));
    engine.on_packet(l, p, now);
    if (l.is_open()) engine.on_packets_read(l, now);
    if (l.pace_pending() && engine.pause_reader(l)) {
      // Paused: the server stops reading; resumed by a link_event.
    }
    run_events();
  }

  void run_events() {
    for (int round = 0; round < 1000; ++round) {
      bool more = false;
      for (auto& lp : links) {
        if (!lp) continue;
        fake_link& l = *lp;
        auto events = std::move(l.events);
        l.events.clear();
        for (auto e : events) {
          more = true;
          engine.on_event(l, e, now);
        }
      }
      if (!more) return;
    }
    fail("events never settle");
  }

  void advance(std::chrono::milliseconds d) {
    now += d;
    system_now += d;
    engine.sweep_connections(now);
    engine.expire_sessions(now);
    if (auto due = engine.next_will_due(); due && *due <= now) engine.release_wills(now);
    run_events();
  }

  void drain();

  void check_counts() {
    if (engine.stats().connections != open_links) fail("connection count", std::to_string(engine.stats().connections));
  }
};

void fake_link::start_write() {
  auto batch = take_queued();
  if (!batch) return;
  if (!is_open()) fail("write after close");
  batch->build_runs();
  std::string bytes;
  for (const auto& r : batch->runs) bytes.append(reinterpret_cast<const char*>(r.data), r.size);
  note_written(batch->bytes);
  mb::engine::write_batch_pool::release(std::move(batch));
  const auto res = decoder_.feed(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(),
                                 [&](mc::packet& p) { check(p); });
  if (res.ec) fail("the engine wrote bytes that do not decode:", res.ec.message());
}

/// A success: only right after the proof of the right password, and the server proves itself.
void fake_link::check_authenticated(const mc::properties_view& props) {
  if (!proof_right_) fail("authenticated without the right password's proof");
  const auto d = props.find(mc::property_id::authentication_data);
  if (!d || !scram_->verify(d->value)) fail("a server-final that does not verify");
  proof_right_ = false;
}

void fake_link::finish() {
  // As a real transport with a write in flight: the close completes later (world::drain()), and
  // until then the link is closing, which is where packets must stop.
  start_write();
  draining_ = true;
}

void world::drain() {
  for (auto& lp : links) {
    if (!lp || !lp->draining_) continue;
    lp->draining_ = false;
    if (lp->mark_closed()) {
      --open_links;
      engine.on_closed(*lp, now, system_now);
    }
  }
  run_events();
}

void fake_link::check(mc::packet& p) {
  const auto t = mc::type_of(p);
  if (got_disconnect_) fail("a packet after the server's DISCONNECT");
  // Before CONNACK only an AUTH exchange, for a client that named a method.
  if (!got_connack_ && t != mc::packet_type::connack && !(t == mc::packet_type::auth && method_))
    fail("first packet is not CONNACK:", mc::to_string(t));
  if (t == mc::packet_type::connack) {
    if (got_connack_) fail("a second CONNACK");
    got_connack_ = true;
    const auto& ack = std::get<mc::connack>(p);
    const auto m = ack.properties.find(mc::property_id::authentication_method);
    if (!method_ && m) fail("an Authentication Method in CONNACK for a CONNECT without one");
    if (method_ && ack.code == 0) {
      if (!m || m->value != *method_) fail("a successful CONNACK without the CONNECT's method");
      check_authenticated(ack.properties);
    }
  } else if (t == mc::packet_type::auth) {
    const auto& a = std::get<mc::auth>(p);
    if (!method_) fail("AUTH to a client that named no method");
    const auto m = a.properties.find(mc::property_id::authentication_method);
    if (!m || m->value != *method_) fail("AUTH without the CONNECT's method");
    if (a.reason == mb::reason_code::continue_authentication) {
      const auto d = a.properties.find(mc::property_id::authentication_data);
      server_first_ = d ? std::string(d->value) : std::string();
    } else if (a.reason == mb::reason_code::success) {
      if (!got_connack_) fail("AUTH 0x00 before CONNACK");
      check_authenticated(a.properties);
    } else {
      fail("AUTH with reason", std::to_string(static_cast<int>(a.reason)));
    }
  } else if (t == mc::packet_type::disconnect) {
    got_disconnect_ = true;
    disconnect_reason_ = std::get<mc::disconnect>(p).reason;
  } else if (t == mc::packet_type::publish) {
    const auto& pub = std::get<mc::publish>(p);
    std::string topic(pub.topic);
    if (const auto a = pub.properties.find(mc::property_id::topic_alias)) {
      if (a->integer == 0 || a->integer > alias_maximum_)
        fail("a Topic Alias outside the client's maximum:", std::to_string(a->integer));
      std::string& known = outbound_aliases_[static_cast<std::uint16_t>(a->integer)];
      if (topic.empty()) {
        if (known.empty()) fail("an alias the engine never set on this connection:", std::to_string(a->integer));
        topic = known;
      } else {
        known = topic;
      }
    }
    if (std::find(topics.begin(), topics.end(), topic) == topics.end()) fail("a PUBLISH on a topic nobody used:", topic);
    if (pub.qos_level != mc::qos::at_most_once) {
      const bool busy = !in_flight_.insert(pub.packet_id).second;
      if (busy && !pub.dup) fail("packet identifier reused while in flight:", std::to_string(pub.packet_id));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  reader in(data, size);
  world w;
  for (std::size_t i = 0; i < w.links.size(); ++i) w.open(i, mc::protocol_version::v5);
  int steps = 0;
  while (!in.done() && ++steps < 400) {
    const std::uint8_t op = in.byte();
    const std::size_t c = in.byte() % w.links.size();
    fake_link* l = w.links[c].get();
    const auto v = l->client_version();
    switch (op % 16) {
      case 0: {  // a new transport in this slot
        w.open(c, in.byte() & 1 ? mc::protocol_version::v5 : mc::protocol_version::v3_1_1);
        break;
      }
      case 1: {  // CONNECT
        if (l->connect_sent_) {
          // The decoder refuses a second CONNECT [MQTT-3.1.0-2] before the engine sees it.
          if (l->is_open() && !l->is_closing())
            w.engine.on_malformed(*l, mb::make_error_code(mb::protocol_errc::second_connect), v, w.now);
          w.run_events();
          break;
        }
        l->connect_sent_ = true;
        const std::uint8_t f = in.byte();
        mc::connect cp;
        cp.version = v;
        cp.client_id = in.pick(client_ids);
        cp.clean_start = f & 1;
        cp.keep_alive = static_cast<std::uint16_t>((f >> 1) & 7);
        mc::properties_builder props, will_props;
        if (v == mc::protocol_version::v5 && (f & 16))
          props.add(mc::property_id::session_expiry_interval, (f & 32) ? 0xFFFFFFFFu : std::uint32_t(in.byte() % 20));
        if (v == mc::protocol_version::v5) {
          // Enhanced authentication: a method, and a SCRAM client-first message or no data.
          const std::uint8_t g = in.byte();
          if (g & 4) {
            l->alias_maximum_ = static_cast<std::uint16_t>((g >> 3) % 4);
            props.add(mc::property_id::topic_alias_maximum, l->alias_maximum_);
          }
          if (g & 1) {
            l->method_ = in.pick(methods);
            props.add(mc::property_id::authentication_method, *l->method_);
            if (g & 2)
              props.add(mc::property_id::authentication_data,
                        l->scram_first(in.pick(logins), "c" + std::to_string(in.byte())));
          }
        }
        cp.properties = props.view();
        if (f & 64) {
          mc::will_message wm;
          wm.topic = in.pick(topics);
          wm.payload = "will";
          wm.qos_level = static_cast<mc::qos>(in.byte() % 3);
          wm.retain = f & 128;
          if (v == mc::protocol_version::v5 && (f & 8)) {
            will_props.add(mc::property_id::will_delay_interval, std::uint32_t(in.byte() % 5));
            wm.properties = will_props.view();
          }
          cp.will = wm;
        }
        w.feed(c, cp);
        break;
      }
      case 2: {  // PUBLISH
        if (!l->connected()) break;
        const std::uint8_t f = in.byte();
        mc::publish p;
        p.topic = in.pick(topics);
        p.payload = "m";
        p.qos_level = static_cast<mc::qos>(f % 3);
        p.retain = f & 4;
        p.dup = p.qos_level != mc::qos::at_most_once && (f & 8);
        if (p.qos_level != mc::qos::at_most_once) p.packet_id = static_cast<std::uint16_t>(1 + in.byte() % 6);
        if (f & 16) p.payload = "";  // clears a retained message
        // 5.0: a Topic Alias, valid or not, with the topic or instead of it.
        mc::properties_builder props;
        std::optional<mb::reason_code> must_end;
        const bool read = l->is_open() && !l->is_closing() && !l->paused();  // as feed() decides
        if (read && v == mc::protocol_version::v5 && (f & 32)) {
          const std::uint8_t h = in.byte();
          const auto alias = static_cast<std::uint16_t>(h % (broker_alias_maximum + 2));
          props.add(mc::property_id::topic_alias, alias);
          p.properties = props.view();
          if (h & 8) p.topic = "";
          if (alias == 0 || alias > broker_alias_maximum) {
            must_end = mb::reason_code::topic_alias_invalid;
          } else if (p.topic.empty()) {
            const auto known = l->inbound_aliases_.find(alias);
            if (known == l->inbound_aliases_.end()) must_end = mb::reason_code::protocol_error;
          } else {
            l->inbound_aliases_[alias] = std::string(p.topic);
          }
        }
        const auto before = w.engine.stats().messages_received;
        w.feed(c, p);
        if (must_end && l->is_open() && !l->is_closing()) fail("a wrong Topic Alias left the connection open");
        if (must_end && l->disconnect_reason_ != must_end)
          fail("a wrong Topic Alias without its DISCONNECT reason, expected", std::to_string(static_cast<int>(*must_end)));
        // Within one connection (its session cannot end or change under it): counted as received
        // means routed. A connection the packet closed may have sent its will instead.
        if (p.qos_level == mc::qos::exactly_once && l->is_open() && w.engine.stats().messages_received != before) {
          if (!l->qos2_routed_.insert(p.packet_id).second)
            fail("a QoS 2 message routed twice before PUBREL, id", std::to_string(p.packet_id));
        }
        break;
      }
      case 3: {  // SUBSCRIBE
        if (!l->connected()) break;
        mc::subscribe s;
        s.packet_id = static_cast<std::uint16_t>(1 + in.byte() % 100);
        mc::subscribe_entry e;
        e.filter = in.pick(filters);
        const std::uint8_t f = in.byte();
        e.options.max_qos = static_cast<mc::qos>(f % 3);
        if (v == mc::protocol_version::v5) {
          e.options.no_local = f & 4;
          e.options.retain_as_published = f & 8;
          e.options.retain_handling = static_cast<mc::retain_handling_option>((f >> 4) % 3);
        }
        s.entries.push_back(e);
        w.feed(c, s);
        break;
      }
      case 4: {  // UNSUBSCRIBE
        if (!l->connected()) break;
        mc::unsubscribe u;
        u.packet_id = static_cast<std::uint16_t>(1 + in.byte() % 100);
        u.filters.push_back(in.pick(filters));
        w.feed(c, u);
        break;
      }
      case 5:
      case 6: {  // PUBACK or PUBCOMP for an identifier: completes what the client had in flight
        if (!l->connected()) break;
        const auto id = static_cast<std::uint16_t>(1 + in.byte() % 8);
        if (op % 16 == 5) {
          mc::puback a;
          a.packet_id = id;
          w.feed(c, a);
        } else {
          mc::pubcomp a;
          a.packet_id = id;
          w.feed(c, a);
        }
        l->in_flight_.erase(id);  // if it was complete, the id may be used again
        break;
      }
      case 7: {  // PUBREC
        if (!l->connected()) break;
        mc::pubrec a;
        a.packet_id = static_cast<std::uint16_t>(1 + in.byte() % 8);
        if (v == mc::protocol_version::v5 && (in.byte() & 1)) {
          a.reason = mb::reason_code::unspecified_error;  // ends the exchange
          l->in_flight_.erase(a.packet_id);
        }
        w.feed(c, a);
        break;
      }
      case 8: {  // PUBREL: releases a QoS 2 identifier of this client
        if (!l->connected()) break;
        mc::pubrel r;
        r.packet_id = static_cast<std::uint16_t>(1 + in.byte() % 6);
        w.feed(c, r);
        l->qos2_routed_.erase(r.packet_id);
        break;
      }
      case 9:  // PINGREQ; during an AUTH exchange before CONNACK, a Protocol Error
        if (l->connected() || (l->connect_sent_ && (in.byte() & 1))) w.feed(c, mc::pingreq{});
        break;
      case 10: {  // DISCONNECT, also during an AUTH exchange before CONNACK
        if (!l->connected() && !(l->connect_sent_ && l->method_)) break;
        mc::disconnect d;
        mc::properties_builder props;
        const std::uint8_t f = in.byte();
        if (v == mc::protocol_version::v5) {
          if (f & 1) d.reason = mb::reason_code::disconnect_with_will_message;
          if (f & 2) {
            props.add(mc::property_id::session_expiry_interval, std::uint32_t(f >> 2));
            d.properties = props.view();
          }
        }
        w.feed(c, d);
        break;
      }
      case 11:  // time passes
        w.advance(std::chrono::milliseconds(100 * (1 + in.byte())));
        break;
      case 12:  // the transport ends without DISCONNECT
        w.close(c);
        w.run_events();
        break;
      case 14:
      case 15: {  // AUTH (5.0 only, after the CONNECT): on with the exchange, a re-authentication, or out of place
        if (v != mc::protocol_version::v5 || !l->connect_sent_) break;
        const std::uint8_t f = in.byte();
        const mb::reason_code reasons[] = {mb::reason_code::continue_authentication,
                                           mb::reason_code::continue_authentication, mb::reason_code::re_authenticate,
                                           mb::reason_code::success};
        mc::auth a;
        a.reason = reasons[f % 4];
        mc::properties_builder props;
        const std::string& method = in.pick(auth_methods);
        if (!method.empty()) props.add(mc::property_id::authentication_method, method);
        std::string bytes;
        switch ((f >> 2) % 4) {
          case 0: bytes = l->scram_final(); break;
          case 1: bytes = l->scram_first(in.pick(logins), "c" + std::to_string(in.byte())); break;
          case 2:
            l->no_proof();
            for (int n = in.byte() % 16; n > 0; --n) bytes.push_back(static_cast<char>(in.byte()));
            break;
          default: l->no_proof(); break;
        }
        if ((f >> 2) % 4 != 3) props.add(mc::property_id::authentication_data, bytes);
        a.properties = props.view();
        w.feed(c, a);
        break;
      }
      case 13:  // input the decoder refused
        if (l->is_open() && !l->is_closing()) {
          w.engine.on_malformed(*l, mb::make_error_code(mb::codec_errc::truncated), v, w.now);
          w.run_events();
        }
        break;
    }
    if (op & 0x80) w.drain();  // the transport finished writing: closing links close
    w.check_counts();
  }
  w.drain();
  bool stopped = false;
  w.engine.stop([&] { stopped = true; });
  w.run_events();
  w.drain();
  if (!stopped) fail("stop did not complete");
  w.check_counts();
  return 0;
}
