#ifndef MQTTBROKER_ENGINE_RECORDS_HPP
#define MQTTBROKER_ENGINE_RECORDS_HPP

#include <mqttbroker/config.hpp>
#include <mqttbroker/detail/fifo.hpp>
#include <mqttbroker/detail/ref_counted.hpp>
#include <mqttbroker/engine/link.hpp>
#include <mqttbroker/locking/traits.hpp>
#include <mqttbroker/message.hpp>
#include <mqttbroker/router/shared.hpp>
#include <mqttbroker/session/state.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE

/// Counters a host reads for metrics and tests.
struct broker_stats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_refused = 0;  // over max_connections
  std::uint64_t refused_per_address = 0;  // over max_connections_per_address; counted by the broker
  std::uint64_t refused_rate = 0;         // over max_connection_rate_per_address; counted by the broker
  std::uint64_t connects_refused_auth = 0;   // CONNACK 4/5, 0x86/0x87: authentication refused the CONNECT
  std::uint64_t connects_refused_other = 0;  // CONNECTs refused for anything else (version, identifier, ...)
  std::uint64_t protocol_errors = 0;      // connections closed for malformed or forbidden packets
  std::uint64_t connect_timeouts = 0;
  std::uint64_t keep_alive_timeouts = 0;
  std::uint64_t rate_limited = 0;         // connections closed for sending over max_publish_rate
  std::uint64_t messages_received = 0;    // PUBLISH from clients and in-process
  std::uint64_t messages_sent = 0;        // PUBLISH to clients and in-process subscribers
  std::uint64_t messages_received_qos[3] = {};  // the same by QoS: as published
  std::uint64_t messages_sent_qos[3] = {};      // as sent (in-process: as published)
  std::uint64_t bytes_received = 0;       // MQTT bytes read from clients' connections; counted by the broker
  std::uint64_t bytes_sent = 0;           // MQTT bytes written to them; counted by the broker
  std::uint64_t messages_dropped = 0;     // refused by a session's queue limits, a slow socket or a client's
                                          // Maximum Packet Size
  std::uint64_t messages_expired = 0;     // 5.0: their Message Expiry Interval ended before they were sent
  std::uint64_t publishes_denied = 0;     // to $-topics or refused by authorize_publish
  std::uint64_t deliveries_denied = 0;    // messages authorize_read kept from a subscriber
  std::uint64_t subscriptions_revoked = 0;  // taken out by recheck_subscriptions()
  std::uint64_t queue_memory_drops = 0;   // dropped at broker_options::max_total_queued_bytes
  std::size_t queued_bytes = 0;           // payload bytes waiting in all sessions
  std::size_t queued_messages = 0;        // messages waiting in all sessions (not in flight)
  std::size_t subscriptions = 0;          // clients' subscriptions, shared ones included
  std::uint64_t sessions_expired = 0;
  std::uint64_t reader_pauses = 0;        // publishers paused because a subscriber was behind
  std::uint64_t handshake_failures = 0;   // transport handshakes (TLS, WebSocket) that failed; counted by the broker
  std::size_t connections = 0;
  std::size_t sessions = 0;
  std::size_t retained_messages = 0;
  std::size_t shared_groups = 0;          // shared subscription groups; each goes with its last member
};

/// One connected client, as broker::clients() lists it.
struct client_snapshot {
  std::string client_id;
  // Who and where: with hooks that take a client_info (the broker keeps them then); else empty.
  std::optional<std::string> username;
  std::string peer_address;
  std::uint16_t peer_port = 0;
  std::optional<std::size_t> listener;  // the index of the listener it came in on, if any
  codec::protocol_version version = codec::protocol_version::v3_1_1;
  std::chrono::system_clock::time_point connected_since{};
  std::size_t queued_messages = 0;    // waiting in its session to be sent
  std::size_t inflight_messages = 0;  // sent and not yet acknowledged
  bool persistent = false;            // the session outlives the connection
};

namespace engine {

enum class subscriber_kind : std::uint8_t { client, local, shared, feed };

/// What the router stores per subscription: a client's session, an in-process handler, or the
/// group of a shared subscription.
struct subscriber {
  subscriber_kind kind = subscriber_kind::client;
};

/// An in-process subscription's handler: gets every matching message.
using local_handler = std::function<void(const message_ptr&)>;

struct local_subscriber : subscriber {
  // Shared so that a handler unsubscribed while a delivery to it is pending stays alive.
  std::shared_ptr<const local_handler> handler;
  std::vector<std::string> filters;  // one for broker::subscribe(); a participant's several
};

/// A Shared Subscription's group, which the router stores as one subscriber at the node of the
/// group's filter: matching it costs what matching one ordinary subscription costs, and the router
/// never merges it with its members' own subscriptions (a member with both gets two copies,
/// 5.0 section 4.8.2). Keyed by its whole filter, ShareName included.
template <class Session, bool ThreadSafe>
struct shared_subscriber : subscriber {
  shared_subscriber(std::string_view whole, std::size_t filter_at, std::uint32_t number)
      : whole_filter(whole), filter_offset(filter_at), id(number) {
    kind = subscriber_kind::shared;
  }
  /// The filter matched against Topic Names (what follows `$share/{ShareName}/`).
  std::string_view filter() const noexcept { return std::string_view(whole_filter).substr(filter_offset); }

  std::string whole_filter;   // `$share/{ShareName}/{filter}`: the key, as members subscribed
  std::size_t filter_offset;  // where filter() starts in it
  std::uint32_t id;           // what its deliveries carry (session::outgoing::share_group)
  router::shared_group<Session*, ThreadSafe> group;
};

/// A session's subscriptions that a cluster feeds (cluster/contract.hpp feeds_sessions()), held
/// in the router apart from its others: routing gives them QoS 0 messages only.
struct feed_subscriber : subscriber {
  feed_subscriber() noexcept { kind = subscriber_kind::feed; }
  void* owner = nullptr;  // the session
};

/// What few sessions need, made on first use: an idle session does without it.
template <class Link>
struct session_extras {
  feed_subscriber feed;  // with a cluster that feeds sessions
  detail::fifo<session::outgoing> retained_backlog;  // retained messages paced by flow control
  // 5.0 Will Delay Interval: a will waiting for its delay, the session's end, or a reconnect.
  message_ptr pending_will;
  std::uint64_t will_generation = 0;
  // Publisher pacing: links that stopped reading because this session's client was behind;
  // resumed when it catches up, leaves, or is found stuck.
  std::vector<detail::ref_ptr<Link>> paced;
};

/// locking::shared: what publishers on other threads admitted for the connection's own thread.
struct strand_outbox {
  std::vector<session::outgoing> items;
  std::size_t bytes = 0;
  bool pump_scheduled = false;
};
struct no_outbox {};

/// Who a session's client was when it last connected, for hooks that take a client_info: what
/// authorize_read and recheck_subscriptions() see of a session also while its client is offline.
/// An empty base otherwise.
template <bool Keep>
struct session_owner {
  std::optional<std::string> owner_username;
  const hooks::listener_info* owner_listener = nullptr;  // the broker's, alive as long as it is
  codec::protocol_version owner_version = codec::protocol_version::v3_1_1;
  bool owner_known = false;  // false for a session a store restored, until its client connects

  /// The client as the hooks see it, from what this keeps (no peer address: it may be offline).
  hooks::client_info owner_info(std::string_view client_id) const {
    hooks::client_info who;
    who.client_id = client_id;
    if (owner_username) who.username = *owner_username;
    who.version = owner_version;
    who.listener = owner_listener;
    return who;
  }
};
template <>
struct session_owner<false> {};

/// A client session as the engine keeps it: the MQTT state plus where it is connected.
/// `Durable`: the storage policy keeps sessions (its links then hold acknowledgements back).
/// `KeepsOrigin`: links keep who their client is, for the hooks (engine::link_origin).
/// `EnhancedAuth`: links can run 5.0 AUTH exchanges (engine::link_auth).
template <class Locking, bool Durable = false, bool KeepsOrigin = false, bool EnhancedAuth = false>
struct session_record : subscriber, detail::ref_counted, session_owner<KeepsOrigin> {
  static constexpr bool durable = Durable;
  static constexpr bool keeps_origin = KeepsOrigin;
  static constexpr bool enhanced_auth = EnhancedAuth;
  using link_type = link<session_record>;
  using steady_time = std::chrono::steady_clock::time_point;  // as link::steady_time (link is incomplete here)
  using session_mutex_type = locking::session_mutex_t<Locking>;

  session_record(std::string id, const session::limits* l) : state(std::move(id), l) {}
  session::state state;
  detail::ref_ptr<link_type> conn;  // the live connection, if any
  steady_time expires{};            // when persistent and offline
  steady_time connected_at{};       // when its client connected, while it is
  std::chrono::duration<std::uint32_t> expiry{0};  // 0 ends with the connection; 0xFFFFFFFF: never
  std::atomic<bool> has_paced{false};  // read without the lock on every write completion
  // With locking::shared, publishers holding the state lock shared meet here; every other
  // change to the session holds the state lock exclusively.
  MQTTBROKER_NO_UNIQUE_ADDRESS mutable session_mutex_type mutex;
  MQTTBROKER_NO_UNIQUE_ADDRESS std::conditional_t<Locking::thread_safe, strand_outbox, no_outbox> outbox;
  // Made under `mutex` or the exclusive state lock; read under either.
  std::unique_ptr<session_extras<link_type>> extras;

  session_extras<link_type>& more() {
    if (!extras) extras = std::make_unique<session_extras<link_type>>();
    return *extras;
  }
  bool has_retained_backlog() const noexcept { return extras && !extras->retained_backlog.empty(); }
};

}  // namespace engine
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_ENGINE_RECORDS_HPP
