#ifndef MQTTBROKER_ENGINE_LINK_HPP
#define MQTTBROKER_ENGINE_LINK_HPP

#include <mqttbroker/cluster/contract.hpp>
#include <mqttbroker/codec/packets.hpp>
#include <mqttbroker/codec/properties.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/detail/fifo.hpp>
#include <mqttbroker/detail/intrusive_list.hpp>
#include <mqttbroker/detail/ref_counted.hpp>
#include <mqttbroker/engine/write_batch.hpp>
#include <mqttbroker/error.hpp>
#include <mqttbroker/hooks/hooks.hpp>
#include <mqttbroker/message.hpp>
#include <mqttbroker/session/state.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace engine {

/// The broker clock's whole second: what message expiry counts in (message::expires_at).
inline std::uint32_t clock_seconds(std::chrono::steady_clock::time_point t) noexcept {
  return static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count());
}

template <class Policies>
class core;
template <class Policies>
class protocol;

/// What the engine asks a link's own executor to run later (link::post): work that belongs to
/// the thread owning the connection, or that must not run inside the caller's handler.
enum class link_event : std::uint8_t {
  pump,            // move the session's admitted and queued messages into the connection
  taken_over,      // a newer connection took the session: close this one
  resume,          // a paused reader may read again
  check_deadline,  // the sweep saw the deadline pass
  shutdown,        // the broker stops: DISCONNECT (5.0) and close
  committed,       // the storage made changes durable: held acknowledgements may go
  authenticated,   // an asynchronous authenticate answered
  auth_step,       // authenticate_enhanced answered a step of an AUTH exchange
  redirect,        // the host sends this client to another server (protocol::redirect)
  kick,            // the host ends this client's connection (protocol::kick)
  claimed,         // the cluster answered the claim of this client (cluster/contract.hpp)
};

/// 5.0 Topic Aliases of one connection, both ways; they never outlive it [MQTT-3.3.2-7].
class topic_aliases {
 public:
  // ---- from the client: it sets alias -> topic, up to the broker's Topic Alias Maximum

  /// The topic the client set for `alias` (1..maximum), or empty when it set none.
  std::string_view inbound(std::uint16_t alias) const noexcept {
    return alias <= inbound_.size() ? std::string_view(inbound_[alias - 1]) : std::string_view();
  }
  void set_inbound(std::uint16_t alias, std::string_view topic, std::uint16_t maximum) {
    if (inbound_.size() < alias) inbound_.resize(maximum);
    inbound_[alias - 1].assign(topic);
  }

  // ---- to the client: the broker picks aliases, up to the client's Topic Alias Maximum

  void set_outbound_maximum(std::uint16_t n) { outbound_max_ = n; }
  bool outbound_enabled() const noexcept { return outbound_max_ != 0; }

  /// The alias for `topic`, and whether the client already knows it (then the PUBLISH may leave
  /// the topic out). A topic without one takes a free alias, or the least recently used one.
  std::pair<std::uint16_t, bool> outbound(std::string_view topic) {
    ++tick_;
    if (auto it = by_topic_.find(topic); it != by_topic_.end()) {
      used_[it->second - 1] = tick_;
      return {it->second, true};
    }
    // Reserved once, so the strings the map's keys view never move.
    if (topics_.capacity() < outbound_max_) {
      topics_.reserve(outbound_max_);
      used_.reserve(outbound_max_);
    }
    std::uint16_t alias;
    if (topics_.size() < outbound_max_) {
      topics_.emplace_back();
      used_.push_back(0);
      alias = static_cast<std::uint16_t>(topics_.size());
    } else {
      alias = static_cast<std::uint16_t>(std::min_element(used_.begin(), used_.end()) - used_.begin() + 1);
      by_topic_.erase(topics_[alias - 1]);
    }
    topics_[alias - 1].assign(topic);
    used_[alias - 1] = tick_;
    by_topic_.emplace(topics_[alias - 1], alias);
    return {alias, false};
  }

 private:
  std::vector<std::string> inbound_;  // alias - 1 -> topic
  std::uint16_t outbound_max_ = 0;
  std::vector<std::string> topics_;   // alias - 1 -> topic
  std::vector<std::uint64_t> used_;   // alias - 1 -> when last sent (least recently used goes)
  std::unordered_map<std::string_view, std::uint16_t> by_topic_;
  std::uint64_t tick_ = 0;
};

/// What few connections need, made on first use: a will, topic aliases (these apart again: a
/// will is common, and its connection should not carry alias tables it does not use), the count
/// of a rate limit.
struct link_extras {
  message_ptr will;  // published if the connection ends without DISCONNECT
  std::chrono::duration<std::uint32_t> will_delay{0};  // 5.0 Will Delay Interval
  // broker_options::max_publish_rate: PUBLISH packets counted in the clock's second `rate_second`.
  std::uint32_t rate_second = 0;
  std::uint32_t rate_count = 0;
  std::unique_ptr<topic_aliases> aliases;
  std::string close_why;  // why the connection ends, for the log line that says it ended (the first reason)

  topic_aliases& alias_table() {
    if (!aliases) aliases = std::make_unique<topic_aliases>();
    return *aliases;
  }
};

/// What the cluster answered a claim (cluster::claim_reply), from any thread; read on the link's.
struct claim_answer {
  std::mutex mutex;
  cluster::claim_result result;
};

/// A CONNECT the engine accepted as valid, owned: it outlives the packet's buffer while an
/// asynchronous authentication runs.
struct connect_request {
  std::string client_id;  // assigned by the broker when the client sent none
  std::optional<std::string> username;
  std::optional<std::string> password;  // kept only while an asynchronous authentication runs
  codec::protocol_version version = codec::protocol_version::v3_1_1;
  bool clean_start = true;
  bool assigned_id = false;
  std::uint16_t keep_alive = 0;
  std::uint16_t receive_maximum = 0xFFFF;  // 5.0: the client's; 65535 when absent and for 3.1.1
  std::uint32_t maximum_packet_size = 0;   // 5.0: the client's; 0 when absent (no limit)
  std::uint16_t topic_alias_maximum = 0;   // 5.0: the client's; 0 when absent
  bool wants_response_information = false;  // 5.0 Request Response Information 1
  std::chrono::seconds requested_expiry{0};  // what the client asked for (Clean Session 0: the broker's)
  message_ptr will;
  std::chrono::duration<std::uint32_t> will_delay{0};
  // A cluster that owns client identifiers (cluster/contract.hpp claim()): the claim's answer
  // while it runs, whether this node owns the client now, and an AUTH exchange's final data kept
  // for the CONNACK meanwhile.
  std::shared_ptr<claim_answer> claim;
  bool claimed = false;
  std::optional<std::string> final_auth_data;
};

/// Who a link's client is, for hooks that take a client_info (hooks::needs_client_info_v), and
/// its CONNECT while an asynchronous authentication runs. Without such hooks an empty base: a
/// connection is not one byte larger.
template <bool Keep>
struct link_origin {
  std::optional<std::string> username_;
  std::string peer_address_;
  std::uint16_t peer_port_ = 0;
  const hooks::listener_info* listener_ = nullptr;
  std::string certificate_identity_;   // the client certificate's (TLS), after the handshake
  bool identity_is_username_ = false;  // it replaces the CONNECT's User Name
  std::unique_ptr<connect_request> pending_connect_;
  std::atomic<std::uint8_t> auth_answer_{0};  // set by the host's auth_reply, on any thread
};
template <>
struct link_origin<false> {};

/// A connection's 5.0 enhanced authentication (section 4.12): made when its CONNECT names an
/// Authentication Method, kept until it closes (a re-authentication uses the same method).
struct auth_exchange_state {
  std::string method;
  std::shared_ptr<hooks::auth_state> state;  // the method's own, from the hook's latest answer
  std::shared_ptr<hooks::auth_step_reply::target> pending;  // the step the hook is answering
  std::chrono::steady_clock::time_point deadline{};  // when the running exchange must have ended
  std::uint32_t steps = 0;        // client packets in the running exchange
  std::uint32_t max_packet = 0;   // the client's Maximum Packet Size (0: none)
  bool running = false;           // an exchange runs: before CONNACK, or a re-authentication
};

/// Where a link keeps its AUTH exchange, for a hooks policy with authenticate_enhanced; an empty
/// base otherwise.
template <bool Enhanced>
struct link_auth {
  std::unique_ptr<auth_exchange_state> auth_;
};
template <>
struct link_auth<false> {};

/// An acknowledgement held until the storage commit its change went into is durable
/// (acknowledge after commit). `route`: a QoS 2 message routed only then, before its PUBREC.
struct held_ack {
  std::uint64_t ticket;  // the commit to wait for; 0 waits only for those before it
  codec::packet_type type;
  std::uint16_t packet_id;
  reason_code reason;
  message_ptr route;
  std::vector<reason_code> reasons;  // SUBACK
  // A QoS 1 PUBACK: what made the broker responsible is this message, kept for sessions; once
  // no session and no store holds it (all took it), nothing is owed and the PUBACK need not
  // wait for the commit (settled_early).
  message_ptr settles = {};
};

/// A link's held acknowledgements, with a durable storage only: an empty base otherwise, so a
/// connection of a broker without durable storage is not one byte larger (C++17 has no
/// [[no_unique_address]]).
template <bool Durable>
struct held_acks {
  std::unique_ptr<detail::fifo<held_ack>> held;
  std::uint64_t write_gate = 0;  // the commit the queued packets wait for (0: none)
  // In the core's list of links to tell of the next commit (the core's state_mutex_): once, however
  // many of its acknowledgements wait, so that a commit posts one event per waiting link.
  bool awaiting_commit = false;
  // Likewise in its list of links whose first held acknowledgement may be settled early
  // (held_ack::settles): told when a session completes a stored delivery.
  bool awaiting_settle = false;
};
template <>
struct held_acks<false> {};

/// One client connection as the protocol engine sees it: the protocol state (version, session,
/// will, Keep Alive, deadline, pacing) and the packets queued for the client, without the
/// transport. The server's connection derives from it and implements the outlet: the four
/// virtual calls by which the engine acts on the transport, each made once per write batch or
/// per connection event, never per message. `Session` is the engine's session record.
template <class Session>
class link : public detail::list_links,
             public detail::ref_counted,
             protected held_acks<Session::durable>,
             protected link_origin<Session::keeps_origin>,
             protected link_auth<Session::enhanced_auth> {
 public:
  using steady_time = std::chrono::steady_clock::time_point;
  using deadline_rep = steady_time::duration::rep;
  /// Whether it keeps who its client is, for hooks that take a client_info.
  static constexpr bool keeps_origin = Session::keeps_origin;
  static constexpr deadline_rep no_deadline = std::numeric_limits<deadline_rep>::max();

  link() noexcept
      : taken_over_(false),
        connected_(false),
        flush_deferred_(false),
        closing_(false),
        closed_(false),
        graceful_(false),
        write_in_flight_(false),
        disconnect_queued_(false),
        authenticating_(false),
        problem_information_(true),
        bridge_(false) {}
  link(const link&) = delete;
  link& operator=(const link&) = delete;
  virtual ~link() = default;

  // ---- the outlet, implemented by the server

  /// Writes what is queued, unless a write is in flight (its completion writes the rest).
  virtual void start_write() = 0;
  /// The link is closing: close the transport once what is queued has been written.
  virtual void finish() = 0;
  /// Runs `e` on this link's own executor, after the caller's handler.
  virtual void post(link_event e) = 0;

  // ---- state

  /// A reference to this link, which its pending operations and the registry hold.
  detail::ref_ptr<link> self() noexcept { return detail::ref_ptr<link>(this); }

  codec::protocol_version version() const noexcept { return version_; }
  /// Whether the client announced itself as a bridge (the protocol level's high bit).
  bool bridge() const noexcept { return bridge_; }
  /// The session this connection serves; none before CONNACK and after a takeover.
  Session* session() const noexcept { return taken_over_ ? nullptr : session_.get(); }
  /// Empty before CONNACK.
  const std::string& client_id() const noexcept {
    static const std::string none;
    return session_ ? session_->state.client_id() : none;
  }
  bool connected() const noexcept { return connected_; }
  bool is_open() const noexcept { return !closed_; }
  bool is_closing() const noexcept { return closing_ || closed_; }
  bool paused() const noexcept { return paused_.load(std::memory_order_relaxed); }
  /// Paused for publisher pacing (a subscriber is behind), not waiting for an authentication.
  bool paced() const noexcept { return paused() && !authenticating_; }
  /// A session this connection's messages went to while its client was behind: the reader pauses
  /// on it after the packet.
  bool pace_pending() const noexcept { return static_cast<bool>(pace_target_); }

  /// Where the client came from, for the hooks (the server sets it before the engine opens the
  /// link); nothing is kept when no hook takes a client_info.
  void set_origin(const hooks::listener_info* listener, std::string_view peer_address, std::uint16_t peer_port) {
    if constexpr (Session::keeps_origin) {
      this->listener_ = listener;
      this->peer_address_.assign(peer_address);
      this->peer_port_ = peer_port;
    } else {
      (void)listener;
      (void)peer_address;
      (void)peer_port;
    }
  }

  /// The listener that accepted this connection (its index in the broker), so the engine counts
  /// it against that listener's connection limit (protocol::limit_listener) until it closes. Set
  /// before protocol::open(); a link opened without one counts only against max_connections.
  void set_listener(std::size_t index) noexcept { listener_slot_ = static_cast<std::uint32_t>(index + 1); }

  /// The client certificate's identity, from the transport after its handshake; with
  /// `as_username` it is the username the hooks see, whatever the CONNECT says. Nothing is kept
  /// when no hook takes a client_info.
  void set_certificate_identity(std::string_view identity, bool as_username) {
    if constexpr (Session::keeps_origin) {
      this->certificate_identity_.assign(identity);
      this->identity_is_username_ = as_username;
    } else {
      (void)identity;
      (void)as_username;
    }
  }

  /// The username the hooks see for a CONNECT that sent `sent`: the certificate's identity when
  /// the listener says so (use_identity_as_username), else `sent`.
  std::optional<std::string_view> username_for(std::optional<std::string_view> sent) const noexcept {
    if constexpr (Session::keeps_origin) {
      if (this->identity_is_username_) return std::string_view(this->certificate_identity_);
    }
    return sent;
  }

  /// The client as the hooks see it (after CONNACK: its identifier and username).
  hooks::client_info client_info() const {
    hooks::client_info i;
    i.client_id = client_id();
    i.version = version_;
    if constexpr (Session::keeps_origin) {
      if (this->username_) i.username = *this->username_;
    }
    origin_into(i);
    return i;
  }
  /// Where the client came from (peer, listener, certificate identity) into `i`: what does not
  /// change once the client has connected, so another thread delivering to its session may read it.
  void origin_into(hooks::client_info& i) const noexcept {
    if constexpr (Session::keeps_origin) {
      i.peer_address = this->peer_address_;
      i.peer_port = this->peer_port_;
      i.listener = this->listener_;
      i.certificate_identity = this->certificate_identity_;
    } else {
      (void)i;
    }
  }

  /// Bytes queued or being written and not yet taken by the transport. Readable from any thread
  /// (a publisher's, to drop QoS 0 for a client that stopped reading); written by the owner.
  std::size_t backlog_bytes() const noexcept { return unsent_.load(std::memory_order_relaxed); }

  /// When this client last read something we wrote or sent us bytes (any thread may ask): a
  /// connection with a backlog and no progress for a while has stopped reading.
  steady_time last_progress() const noexcept {
    return steady_time(steady_time::duration(last_progress_.load(std::memory_order_relaxed)));
  }
  void note_progress(steady_time t) noexcept {
    last_progress_.store(t.time_since_epoch().count(), std::memory_order_relaxed);
  }

  /// Any thread: whether the sweep should have this link look at its deadline.
  bool deadline_passed(steady_time now) const noexcept {
    return now.time_since_epoch().count() >= deadline_.load(std::memory_order_relaxed);
  }
  void set_deadline(deadline_rep d) noexcept { deadline_.store(d, std::memory_order_relaxed); }

  // ---- packets to the client

  /// Queues a PUBLISH; it goes out with the batch.
  void send_publish(const session::outgoing& o, steady_time now) {
    // Closing: a DISCONNECT may be queued, and nothing follows it [MQTT-3.14.4-1]. A QoS 1/2
    // message stays in flight in the session and is re-sent on reconnect.
    if (closed_ || closing_) return;
    codec::publish p;
    p.topic = o.msg->topic();
    p.payload = o.msg->payload();
    p.qos_level = o.qos_level;
    p.retain = o.retain;
    p.dup = o.dup;
    p.packet_id = o.packet_id;
    if (version_ == codec::protocol_version::v5) {
      std::pair<std::uint16_t, bool> alias{0, false};  // an alias, and whether the client knows it
      if (extras_ && extras_->aliases && extras_->aliases->outbound_enabled())
        alias = extras_->aliases->outbound(p.topic);
      if (alias.first != 0 || !o.subscription_ids.empty() || !o.msg->properties().empty()) {
        static thread_local codec::properties_builder props;
        props.clear();
        for (const codec::property& pr : o.msg->properties()) {
          if (pr.id == codec::property_id::message_expiry_interval && o.msg->expires_at() != 0) {
            // What is left of it: the interval less the time the message waited here [MQTT-3.3.2-6].
            const std::uint32_t at = clock_seconds(now);
            props.add(pr.id, o.msg->expires_at() > at ? o.msg->expires_at() - at : std::uint32_t{0});
          } else {
            props.add(pr);
          }
        }
        for (std::uint32_t id : o.subscription_ids) props.add(codec::property_id::subscription_identifier, id);
        if (alias.first != 0) {
          props.add(codec::property_id::topic_alias, alias.first);
          if (alias.second) p.topic = std::string_view();  // the alias stands for it
        }
        p.properties = props.view();
      }
    }
    write_batch& q = queue();
    const std::size_t before = q.bytes;
    if (!q.add_publish(p, version_, o.msg)) return;
    note_queued(q.bytes - before, now);
    request_flush();
  }

  template <class Packet>
  void send(const Packet& p, steady_time now) {
    if (closed_ || closing_) return;
    enqueue(p, version_, now);
    request_flush();
  }

  /// Queues a packet without starting a write (the caller flushes or closes).
  template <class Packet>
  void enqueue(const Packet& p, codec::protocol_version v, steady_time now) {
    write_batch& q = queue();
    const std::size_t before = q.bytes;
    q.add(p, v);
    note_queued(q.bytes - before, now);
  }

  /// Ends the connection. A 5.0 client first gets a DISCONNECT with `reason` (and `props`) when
  /// `notify`.
  void close(reason_code reason, bool notify, bool graceful, steady_time now, codec::properties_view props = {}) {
    if (closed_) return;
    // One DISCONNECT at most: a connection already closing (a protocol error, say) may still be
    // taken over or stopped before its write completes, and nothing follows a DISCONNECT
    // [MQTT-3.14.4-1].
    if (notify && connected_ && version_ == codec::protocol_version::v5 && !disconnect_queued_) {
      codec::disconnect d;
      d.reason = reason;
      d.properties = props;
      enqueue(d, version_, now);
      disconnect_queued_ = true;
    }
    closing_ = true;
    graceful_ = graceful_ || graceful;
    finish();
  }

  /// Defers the writes a handler queues to its end, so that everything one read produces (for
  /// every connection it reaches on this thread) leaves in one write per connection, not the
  /// first packet alone. Nested scopes flush at the outermost.
  class flush_scope {
   public:
    flush_scope() noexcept { ++pending().depth; }
    flush_scope(const flush_scope&) = delete;
    flush_scope& operator=(const flush_scope&) = delete;
    ~flush_scope() {
      auto& p = pending();
      if (--p.depth != 0) return;
      // A write may complete synchronously on some transports and queue more: index, not iterate.
      for (std::size_t i = 0; i < p.links.size(); ++i) {
        detail::ref_ptr<link> l = std::move(p.links[i]);
        l->flush_deferred_ = false;
        l->start_write();
      }
      p.links.clear();
      if (p.held_storage != nullptr) p.let_go(std::exchange(p.held_storage, nullptr));
    }
  };

  // ---- for the server's writer

  /// The packets queued so far, for the writer to take; null when there are none.
  std::unique_ptr<write_batch> take_queued() noexcept {
    if (!queued_ || queued_->empty()) return nullptr;
    return std::move(queued_);
  }
  bool has_queued() const noexcept { return queued_ && !queued_->empty(); }
  /// The writer passed `n` more bytes to the transport.
  void note_written(std::size_t n) noexcept { unsent_.store(unsent_.load(std::memory_order_relaxed) - n, std::memory_order_relaxed); }
  /// Nothing more to write: the empty queue goes back to the pool.
  void release_queue() noexcept { write_batch_pool::release(std::move(queued_)); }
  /// The transport is closed. True the first time.
  bool mark_closed() noexcept {
    if (closed_) return false;
    closed_ = true;
    closing_ = true;
    return true;
  }
  void mark_closing() noexcept { closing_ = true; }

 protected:
  struct flush_list {
    int depth = 0;
    std::vector<detail::ref_ptr<link>> links;
    // A storage this thread holds for the scope (core::hold_storage), let go at its end.
    void* held_storage = nullptr;
    void (*let_go)(void*) = nullptr;
  };
  static flush_list& pending() {
    static thread_local flush_list p;
    return p;
  }

  /// The server's writer: whether a write is in flight (a bit here, beside the engine's flags).
  bool write_in_flight() const noexcept { return write_in_flight_; }
  void set_write_in_flight(bool b) noexcept { write_in_flight_ = b; }

 private:
  template <class>
  friend class core;  // the engine keeps the protocol state below
  template <class>
  friend class protocol;

  write_batch& queue() {
    if (!queued_) queued_ = write_batch_pool::acquire();
    return *queued_;
  }
  link_extras& more() {
    if (!extras_) extras_ = std::make_unique<link_extras>();
    return *extras_;
  }
  /// The reader waits while the host's authentication has the CONNECT or an AUTH step, and goes
  /// on when it answered.
  void wait_for_authentication(bool waiting) noexcept {
    authenticating_ = waiting;
    paused_.store(waiting, std::memory_order_relaxed);
  }

  void note_queued(std::size_t n, steady_time now) noexcept {
    const std::size_t before = unsent_.load(std::memory_order_relaxed);
    // Work for a client that had none: it cannot have been stuck while it had nothing to do.
    if (before == 0) note_progress(now);
    unsent_.store(before + n, std::memory_order_relaxed);
  }

  void request_flush() {
    auto& p = pending();
    if (p.depth == 0) return start_write();
    if (flush_deferred_) return;
    flush_deferred_ = true;
    p.links.push_back(self());
  }

  // First: it fills the padding after the base classes.
  std::chrono::duration<std::uint32_t, std::milli> keep_alive_limit_{0};  // at most 1.5 x 65535 s
  std::unique_ptr<write_batch> queued_;  // packets waiting for the write in flight
  std::atomic<std::size_t> unsent_{0};   // bytes queued or being written, not yet written
  std::atomic<deadline_rep> last_progress_{0};
  std::atomic<deadline_rep> deadline_{no_deadline};
  // Shared with the engine's registry: a record the registry dropped (its session ended, or was
  // taken over and ended) stays valid here until this link lets go of it.
  detail::ref_ptr<Session> session_;
  detail::ref_ptr<Session> pace_target_;
  std::unique_ptr<link_extras> extras_;
  codec::protocol_version version_ = codec::protocol_version::v3_1_1;
  std::atomic<bool> paused_{false};  // read by other threads
  // Only this link's executor touches these, so they share a byte (a broker keeps one link per
  // client); set in the constructor, as C++17 has no initialisers for bit-fields.
  bool taken_over_ : 1;
  bool connected_ : 1;
  bool flush_deferred_ : 1;
  bool closing_ : 1;
  bool closed_ : 1;
  bool graceful_ : 1;  // DISCONNECT received: no will
  bool write_in_flight_ : 1;
  bool disconnect_queued_ : 1;  // the server's DISCONNECT is queued: nothing more is sent
  bool authenticating_ : 1;     // an authenticate hook has the CONNECT or an AUTH step; the reader waits
  // 5.0: the client takes a Reason String on CONNACK and DISCONNECT (protocol::takes_reason_string):
  // it did not send Request Problem Information 0, and its Maximum Packet Size leaves room. True
  // until its CONNECT says otherwise: the spec's defaults (1, no limit).
  bool problem_information_ : 1;
  bool bridge_ : 1;  // its CONNECT had Mosquitto's bridge bit: its subscriptions are No Local
  // After the flags, in what would be the object's tail padding: a TCP connection stays as large
  // as it was. 0: not counted for a listener; otherwise the listener's index + 1.
  std::uint32_t listener_slot_ = 0;
};

}  // namespace engine
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_ENGINE_LINK_HPP
