#ifndef MQTTBROKER_BRIDGE_BRIDGE_HPP
#define MQTTBROKER_BRIDGE_BRIDGE_HPP

// A bridge: this broker's connection to another one (a gateway's broker to the cloud's), as
// Mosquitto's `connection` sections make. It is a participant of the local broker (a set of
// in-process filters, and publishes of its own) and a client of the remote one:
//   out   a local message matching an `out` route's local filter is published to the remote under
//         the route's remote name, at the lower of its QoS and the route's;
//   in    the bridge subscribes on the remote to each `in` route's remote filter and publishes
//         what arrives locally under the local name, properties included (5.0).
// No loops: the bridge's local filters are No Local, so what it publishes locally never goes back
// out; on the remote its filters are No Local too (5.0), or the remote knows the connection as a
// bridge from the CONNECT's bridge bit (3.1.1 with try_private, as Mosquitto and this broker do).
// No loss: with a persistent remote session (clean_start false) QoS 1 and 2 messages wait in a
// bounded queue while the remote is unreachable, and are resent (DUP) or sent in order when it
// is back; QoS 0 messages are dropped while it is away, as Mosquitto does, and counted.
// With bridge_options::local_listener the local side is instead a persistent session of the
// local broker, over its in-memory listener (Mosquitto's model): what waits for the remote is
// then the broker's to keep (durably, with a durable storage), and a message leaves it only once
// the remote has acknowledged it; a message from the remote is acknowledged there only once the
// local broker has taken it (after its commit).

#include <mqttbroker/bridge/topics.hpp>
#include <mqttbroker/client/client.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/log.hpp>
#include <mqttbroker/message.hpp>
#include <mqttbroker/topic/match.hpp>
#include <mqttbroker/transport/memory.hpp>

#include <asio/dispatch.hpp>
#include <asio/ip/host_name.hpp>
#include <asio/strand.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace bridge {

struct bridge_options {
  /// The connection's name (Mosquitto's `connection NAME`): in log lines, and the default
  /// remote client identifier's suffix.
  std::string name;
  /// The remote: its addresses (tried in turn), the session (client identifier, credentials,
  /// protocol version, clean start, keep-alive, the bridge bit) and the reconnect backoff.
  client::client_options remote;
  std::vector<topic_route> topics;
  /// A retained "1" or "0" on notification_topic, locally and on the remote (a will carries the
  /// "0" there when the connection breaks): who watches can tell whether the bridge is up.
  bool notifications = true;
  bool notifications_local_only = false;
  /// Default: $SYS/broker/connection/<remote client identifier>/state, as Mosquitto's.
  std::string notification_topic;
  /// How the bridge's side is named in the local broker's log lines (Mosquitto's local_clientid),
  /// and its session's client identifier there with local_listener.
  std::string local_clientid;
  /// The name of an in-memory listener of the local broker (broker.listen<transport::memory>):
  /// the bridge's local side is then a persistent session there (see above). Empty: an
  /// in-process participant, faster, with what waits for the remote in the bridge's memory.
  std::string local_listener;
};

/// client::client's Connector for the local broker's in-memory listener (transport::memory): the
/// address's host is the listener's name.
struct memory_connector {
  using stream_type = transport::memory_stream;
  stream_type make_stream(const asio::any_io_executor& ex) const { return stream_type(ex); }
  template <class Handler>
  void async_connect(const std::shared_ptr<stream_type>& s, const client::address& a, Handler&& h) const {
    std::error_code ec;
    *s = transport::memory::connect(s->get_executor(), a.host, ec);
    asio::post(s->get_executor(), [s, ec, h = std::forward<Handler>(h)]() mutable { h(ec); });
  }
  static void close(stream_type& s) noexcept {
    std::error_code ignored;
    s.close(ignored);
  }
};

/// What a bridge counted.
struct bridge_stats {
  std::uint64_t sent = 0;      // local messages handed to the remote's session (queued or written)
  std::uint64_t received = 0;  // remote messages published locally
  std::uint64_t dropped = 0;   // local messages not forwarded: QoS 0 while away, or the queue full
  std::uint64_t connects = 0;  // connections the remote accepted
};

/// A bridge on `Broker` (any mqttbroker::broker<...>), running on the broker's executor (a strand
/// of it with a multi-threaded locking policy), reaching the remote through `Connector`
/// (client::tcp_connector, or client::tls_connector from client/tls.hpp). Start it after the
/// broker; stop it before.
template <class Broker, class Connector = client::tcp_connector>
class bridge {
 public:
  using participant_id = typename Broker::local_subscription_id;

  bridge(Broker& b, bridge_options o, Connector c = Connector())
      : s_(std::make_shared<state>(b, std::move(o), std::move(c))) {
    s_->self = s_;
  }
  bridge(const bridge&) = delete;
  bridge& operator=(const bridge&) = delete;
  ~bridge() { stop(); }

  /// Subscribes locally, connects to the remote (and reconnects after each loss).
  void start() {
    auto s = s_;
    asio::dispatch(s->strand, [s] { s->start(); });
  }
  /// Says "0" on the notification topic, disconnects, leaves the local broker.
  void stop() {
    auto s = s_;
    if (s->stopping.exchange(true)) return;
    asio::dispatch(s->strand, [s] { s->stop(); });
  }

  bool connected() const noexcept { return s_->up.load(); }
  bridge_stats stats() const noexcept {
    bridge_stats r;
    r.sent = s_->sent.load();
    r.received = s_->received.load();
    r.dropped = s_->dropped.load();
    r.connects = s_->connects.load();
    return r;
  }
  const bridge_options& options() const noexcept { return s_->opts; }

 private:
  struct state;

  // The client's handler: the remote's events, run on the strand.
  struct remote_events {
    std::weak_ptr<state> w;
    void on_connected(const codec::connack& c) {
      if (auto s = w.lock()) s->connected(c);
    }
    void on_refused(const codec::connack& c) {
      if (auto s = w.lock()) s->refused(c);
    }
    void on_connection_lost(std::error_code ec) {
      if (auto s = w.lock()) s->lost(ec);
    }
    void on_message(const codec::publish& p) {
      if (auto s = w.lock()) s->inbound(p);
    }
    void on_published(std::uint64_t ticket, reason_code) {
      if (auto s = w.lock()) s->remote_done(ticket);
    }
    void on_suback(const codec::suback& a) {
      if (auto s = w.lock()) s->subscribed(a);
    }
    void on_unsuback(const codec::unsuback&) {}
    void on_disconnect(const codec::disconnect& d) {
      if (auto s = w.lock())
        s->broker.log(log_level::notice, "bridge {}: the remote disconnected it: {}", s->opts.name, to_string(d.reason));
    }
  };

  // The local session's handler (local_listener): the local broker's events, on the strand.
  struct local_events {
    std::weak_ptr<state> w;
    void on_connected(const codec::connack&) {}
    void on_refused(const codec::connack& c) {
      if (auto s = w.lock())
        s->broker.log(log_level::error, "bridge {}: the local broker refused its session: {}", s->opts.name,
                      to_string(c.reason()));
    }
    void on_connection_lost(std::error_code) {}
    void on_message(const codec::publish& p) {
      if (auto s = w.lock()) s->outbound_from_session(p);
    }
    void on_published(std::uint64_t ticket, reason_code) {
      if (auto s = w.lock()) s->local_done(ticket);
    }
    void on_suback(const codec::suback&) {}
    void on_unsuback(const codec::unsuback&) {}
    void on_disconnect(const codec::disconnect&) {}
  };

  struct state {
    state(Broker& b, bridge_options o, Connector c)
        : broker(b),
          opts(prepared(std::move(o))),
          connector(std::move(c)),
          strand(Broker::locking_type::make_strand(b.get_executor())) {
      for (const topic_route& r : opts.topics) filters.push_back(route_filters{r.local_filter(), r.remote_filter()});
    }

    Broker& broker;
    bridge_options opts;
    /// Each route's two filters, made once: matching a message allocates nothing.
    struct route_filters {
      std::string local, remote;
    };
    std::vector<route_filters> filters;
    std::string renamed;  // the strand's buffer for a topic with its prefix swapped
    Connector connector;
    asio::any_io_executor strand;
    std::weak_ptr<state> self;
    std::unique_ptr<client::client<remote_events, Connector>> remote;
    std::unique_ptr<client::client<local_events, memory_connector>> local;  // with local_listener
    // Acknowledgements owed across the two sessions (local_listener): a remote publish's ticket
    // to the local message's delivery ticket, and a local publish's to the remote message's.
    std::unordered_map<std::uint64_t, std::uint64_t> owed_local, owed_remote;
    participant_id id{};
    bool attached = false;
    std::atomic<bool> up{false};
    std::atomic<bool> stopping{false};
    std::atomic<std::uint64_t> sent{0}, received{0}, dropped{0}, connects{0};

    /// Mosquitto's defaults where the options leave them open.
    static bridge_options prepared(bridge_options o) {
      client::session_options& so = o.remote.session;
      // With a local session, a message from the remote is acknowledged once the local broker has it.
      if (!o.local_listener.empty()) so.deferred_acks = true;
      // Mosquitto's default: this host's name, so gateways sharing a configuration do not take
      // over each other's sessions on the remote.
      if (so.client_id.empty()) {
        std::error_code ec;
        std::string host = asio::ip::host_name(ec);
        so.client_id = (ec || host.empty() ? std::string("bridge") : host) + "." + o.name;
      }
      // A 5.0 session ends with its connection unless it has an expiry: a bridge that asked to
      // keep it means for it to outlast outages.
      if (so.version == codec::protocol_version::v5 && !so.clean_start && so.session_expiry == 0)
        so.session_expiry = 0xFFFFFFFF;
      // The bridge bit is for 3.1.1 remotes (try_private): Mosquitto closes a 5.0 CONNECT that
      // carries it, and 5.0 says No Local on each subscription instead.
      if (so.version == codec::protocol_version::v5) so.bridge = false;
      if (o.notification_topic.empty()) o.notification_topic = "$SYS/broker/connection/" + so.client_id + "/state";
      if (o.local_clientid.empty()) o.local_clientid = "local." + so.client_id;
      if (o.notifications && !o.notifications_local_only && !so.last_will) {
        // The remote says "0" for us when the connection breaks without DISCONNECT.
        client::will w;
        w.topic = o.notification_topic;
        w.payload = "0";
        w.qos_level = codec::qos::at_least_once;
        w.retain = true;
        so.last_will = std::move(w);
      }
      return o;
    }

    void start() {
      if (stopping.load()) return;
      std::weak_ptr<state> w = self;
      id = broker.attach([w](const message_ptr& m) {
        if (auto s = w.lock()) {
          // The routing thread; the remote's session lives on the strand (inline when it is this one).
          asio::dispatch(s->strand, [s, m] { s->outbound(m); });
        }
      });
      attached = true;
      if (opts.local_listener.empty()) {
        for (std::size_t i = 0; i < opts.topics.size(); ++i) {
          if (!opts.topics[i].carries_out()) continue;
          codec::subscribe_options so;
          so.max_qos = opts.topics[i].qos_level;
          so.no_local = true;  // what the bridge itself publishes here does not go back
          if (auto ec = broker.subscribe(id, filters[i].local, so))
            broker.log(log_level::error, "bridge {}: local filter '{}' refused: {}", opts.name, filters[i].local,
                       ec.message());
        }
      } else {
        start_local_session();
      }
      notify_locally("0");
      remote = std::make_unique<client::client<remote_events, Connector>>(strand, opts.remote, remote_events{self},
                                                                          connector);
      for (std::size_t i = 0; i < opts.topics.size(); ++i) {
        if (!opts.topics[i].carries_in()) continue;
        codec::subscribe_entry e;
        e.filter = filters[i].remote;
        e.options.max_qos = opts.topics[i].qos_level;
        // 5.0: our own messages do not come back, and retained ones keep their flag (3.1.1
        // remotes do both for a connection with the bridge bit).
        e.options.no_local = true;
        e.options.retain_as_published = true;
        remote->subscribe(std::vector<codec::subscribe_entry>{e});  // standing: sent on every new session
      }
      broker.log(log_level::info, "bridge {}: connecting to {}:{} as {}", opts.name,
                 opts.remote.addresses.empty() ? std::string("(no address)") : opts.remote.addresses.front().host,
                 opts.remote.addresses.empty() ? 0 : opts.remote.addresses.front().port,
                 opts.remote.session.client_id);
      remote->start();
    }

    /// The local side as a session of the local broker: 5.0 (No Local), kept for ever, its
    /// acknowledgements given when the remote has the message.
    void start_local_session() {
      client::client_options lo;
      lo.addresses.push_back(client::address{opts.local_listener, 0});
      lo.reconnect_min = std::chrono::milliseconds(20);
      lo.reconnect_max = std::chrono::milliseconds(1000);
      client::session_options& ls = lo.session;
      ls.version = codec::protocol_version::v5;
      ls.client_id = opts.local_clientid;
      ls.clean_start = false;
      ls.session_expiry = 0xFFFFFFFF;
      ls.keep_alive = 0;  // in memory: nothing to watch
      ls.deferred_acks = true;
      ls.max_queued = opts.remote.session.max_queued;
      ls.max_packet_size = opts.remote.session.max_packet_size;
      local = std::make_unique<client::client<local_events, memory_connector>>(strand, std::move(lo), local_events{self});
      std::vector<codec::subscribe_entry> entries;
      for (std::size_t i = 0; i < opts.topics.size(); ++i) {
        if (!opts.topics[i].carries_out()) continue;
        codec::subscribe_entry e;
        e.filter = filters[i].local;
        e.options.max_qos = opts.topics[i].qos_level;
        e.options.no_local = true;             // what the bridge publishes here does not go back
        e.options.retain_as_published = true;  // a retained message stays retained on the remote
        e.options.retain_handling = codec::retain_handling_option::dont_send;  // what is retained here stays
        entries.push_back(e);
      }
      if (!entries.empty()) local->subscribe(entries);  // standing: made again for a new session
      local->start();
    }

    /// The first `out` route whose local filter matches topic `name` (Mosquitto's rule), or none.
    const topic_route* out_route(std::string_view name) const noexcept {
      for (std::size_t i = 0; i < opts.topics.size(); ++i)
        if (opts.topics[i].carries_out() && topic::matches(filters[i].local, name)) return &opts.topics[i];
      return nullptr;
    }

    /// A message of the local session: to the remote; its acknowledgement waits for the remote's.
    void outbound_from_session(const codec::publish& p) {
      const std::uint64_t local_ticket = local->delivery_ticket();
      const topic_route* route = out_route(p.topic);
      if (route == nullptr || !remote) {  // nothing to forward it by: taken, so the broker moves on
        if (local_ticket != 0) local->acknowledge(local_ticket);
        return;
      }
      const codec::qos q = std::min(p.qos_level, route->qos_level);
      if (q == codec::qos::at_most_once && !up.load()) {  // as in the participant's path
        dropped.fetch_add(1, std::memory_order_relaxed);
        if (local_ticket != 0) local->acknowledge(local_ticket);
        return;
      }
      route->to_remote(p.topic, renamed);
      const std::uint64_t ticket =
          remote->publish(message::make(renamed, p.payload, q, p.retain, p.properties.bytes()), q, p.retain);
      (ticket != 0 ? sent : dropped).fetch_add(1, std::memory_order_relaxed);
      if (local_ticket == 0) return;
      if (ticket == 0 || q == codec::qos::at_most_once) {
        local->acknowledge(local_ticket);  // refused (queue full, counted) or nothing will confirm it
      } else {
        owed_local.emplace(ticket, local_ticket);
      }
    }
    /// The remote acknowledged a message: the local session's acknowledgement of it goes.
    void remote_done(std::uint64_t ticket) {
      auto it = owed_local.find(ticket);
      if (it == owed_local.end() || !local) return;
      local->acknowledge(it->second);
      owed_local.erase(it);
    }
    /// The local broker took a message from the remote: the remote's acknowledgement of it goes.
    void local_done(std::uint64_t ticket) {
      auto it = owed_remote.find(ticket);
      if (it == owed_remote.end() || !remote) return;
      remote->acknowledge(it->second);
      owed_remote.erase(it);
    }

    void stop() {
      if (local) local->stop();
      if (attached) {
        broker.unsubscribe(id);
        attached = false;
      }
      if (remote) {
        if (up.load() && opts.notifications && !opts.notifications_local_only)
          remote->publish(opts.notification_topic, "0", codec::qos::at_least_once, true);
        remote->stop();
      }
      if (up.exchange(false) || remote) notify_locally("0");
    }

    // ---- out: local messages to the remote

    void outbound(const message_ptr& m) {
      if (stopping.load() || !remote) return;
      const topic_route* route = out_route(m->topic());
      if (route == nullptr) return;  // a filter since changed
      const codec::qos q = std::min(m->qos_level(), route->qos_level);
      if (q == codec::qos::at_most_once && !up.load()) {
        dropped.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      std::uint64_t ticket;
      if (route->local_prefix == route->remote_prefix) {
        ticket = remote->publish(m, q, m->retain());  // the same message, not a copy
      } else {
        route->to_remote(m->topic(), renamed);
        ticket = remote->publish(message::make(renamed, m->payload(), q, m->retain(), m->properties().bytes()), q,
                                 m->retain());
      }
      (ticket != 0 ? sent : dropped).fetch_add(1, std::memory_order_relaxed);
    }

    // ---- in: remote messages to the local broker

    void inbound(const codec::publish& p) {
      const std::uint64_t remote_ticket = local ? remote->delivery_ticket() : 0;
      for (std::size_t i = 0; i < opts.topics.size(); ++i) {
        const topic_route& r = opts.topics[i];
        if (!r.carries_in() || !topic::matches(filters[i].remote, p.topic)) continue;
        r.to_local(p.topic, renamed);
        if (local) {
          // Through the local session: the remote's acknowledgement waits for the local broker's.
          const std::uint64_t ticket = local->publish(
              message::make(renamed, p.payload, p.qos_level, p.retain, p.properties.bytes()), p.qos_level, p.retain);
          if (ticket != 0) received.fetch_add(1, std::memory_order_relaxed);
          if (remote_ticket == 0) return;
          if (ticket == 0 || p.qos_level == codec::qos::at_most_once) {
            remote->acknowledge(remote_ticket);
          } else {
            owed_remote.emplace(ticket, remote_ticket);
          }
          return;
        }
        std::error_code ec;
        broker.publish_as(id, renamed, p.payload, p.qos_level, p.retain, p.properties, &ec);
        if (ec) {
          broker.log(log_level::warning, "bridge {}: message on '{}' not published locally: {}", opts.name, p.topic,
                     ec.message());
          return;
        }
        received.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      if (remote_ticket != 0) remote->acknowledge(remote_ticket);  // no route: nothing to wait for
    }

    // ---- the remote's connection

    void connected(const codec::connack& c) {
      up.store(true);
      connects.fetch_add(1, std::memory_order_relaxed);
      broker.log(log_level::notice, "bridge {}: connected to the remote{}", opts.name,
                 c.session_present ? " (its session kept)" : "");
      if (opts.notifications) {
        if (!opts.notifications_local_only)
          remote->publish(opts.notification_topic, "1", codec::qos::at_least_once, true);
        notify_locally("1");
      }
    }
    void refused(const codec::connack& c) {
      const bool v5 = opts.remote.session.version == codec::protocol_version::v5;
      broker.log(log_level::warning, "bridge {}: the remote refused the connection: {}", opts.name,
                 v5 ? to_string(c.reason()) : to_string(c.return_code()));
    }
    void lost(std::error_code ec) {
      const bool was_up = up.exchange(false);
      if (stopping.load()) return;
      broker.log(was_up ? log_level::notice : log_level::info, "bridge {}: {}: {}; retrying", opts.name,
                 was_up ? "connection lost" : "cannot connect", ec.message());
      if (was_up) notify_locally("0");
    }
    void subscribed(const codec::suback& a) {
      for (const reason_code r : a.reasons)
        if (static_cast<std::uint8_t>(r) >= 0x80)
          broker.log(log_level::warning, "bridge {}: the remote refused a subscription: {}", opts.name, to_string(r));
    }

    void notify_locally(std::string_view state_text) {
      if (!opts.notifications) return;
      broker.publish_as(id, opts.notification_topic, state_text, codec::qos::at_least_once, true);
    }
  };

  std::shared_ptr<state> s_;
};

}  // namespace bridge
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_BRIDGE_BRIDGE_HPP
