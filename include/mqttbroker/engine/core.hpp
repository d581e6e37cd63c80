#ifndef MQTTBROKER_ENGINE_CORE_HPP
#define MQTTBROKER_ENGINE_CORE_HPP

#include <mqttbroker/codec/packets.hpp>
#include <mqttbroker/codec/properties.hpp>
#include <mqttbroker/codec/utf8.hpp>
#include <mqttbroker/cluster/contract.hpp>
#include <mqttbroker/log.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/detail/intrusive_list.hpp>
#include <mqttbroker/detail/ref_counted.hpp>
#include <mqttbroker/engine/link.hpp>
#include <mqttbroker/engine/records.hpp>
#include <mqttbroker/error.hpp>
#include <mqttbroker/hooks/hooks.hpp>
#include <mqttbroker/message.hpp>
#include <mqttbroker/options.hpp>
#include <mqttbroker/router/retained.hpp>
#include <mqttbroker/router/shared.hpp>
#include <mqttbroker/router/subscriptions.hpp>
#include <mqttbroker/session/state.hpp>
#include <mqttbroker/storage/contract.hpp>
#include <mqttbroker/storage/memory.hpp>
#include <mqttbroker/topic/match.hpp>
#include <mqttbroker/topic/shared.hpp>
#include <mqttbroker/topic/validate.hpp>
#include <mqttbroker/version.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace engine {

/// A policy bundle's storage: its `storage`, else storage::memory.
template <class Policies, class = void>
struct storage_of {
  using type = ::mqttbroker::storage::memory;
};
template <class Policies>
struct storage_of<Policies, std::void_t<typename Policies::storage>> {
  using type = typename Policies::storage;
};

/// A policy bundle's cluster: its `cluster`, else cluster::none (cluster/contract.hpp).
template <class Policies, class = void>
struct cluster_of {
  using type = ::mqttbroker::cluster::none;
};
template <class Policies>
struct cluster_of<Policies, std::void_t<typename Policies::cluster>> {
  using type = typename Policies::cluster;
};

/// A policy bundle's strategy for shared subscriptions: its `shared_strategy`, else round robin.
template <class Policies, class = void>
struct shared_strategy_of {
  using type = router::round_robin;
};
template <class Policies>
struct shared_strategy_of<Policies, std::void_t<typename Policies::shared_strategy>> {
  using type = typename Policies::shared_strategy;
};

/// Whether S has `std::size_t pick(router::share_choice&)`, what a shared strategy needs.
template <class S, class = void>
struct is_shared_strategy : std::false_type {};
template <class S>
struct is_shared_strategy<
    S, std::enable_if_t<std::is_convertible_v<decltype(std::declval<S&>().pick(std::declval<router::share_choice&>())),
                                              std::size_t>>> : std::true_type {};

/// What the protocol engine keeps and how messages move: the session registry, the subscriptions
/// and the retained messages, routing to sessions and in-process handlers, publisher pacing, the
/// timers' work (deadlines, expiry, delayed wills, $SYS) and stopping. engine::protocol builds the
/// MQTT decisions on it; the host's in-process API reaches it directly.
///
/// `Policies` gives `locking` (the engine's locks and counters), `hooks` and, optionally,
/// `storage` (storage::memory when absent) and `cluster` (cluster::none when absent).
template <class Policies>
class core {
 public:
  using locking_type = typename Policies::locking;
  using hooks_type = typename Policies::hooks;
  using storage_type = typename storage_of<Policies>::type;
  /// Whether the storage keeps sessions: without, every call to it is compiled out.
  static constexpr bool durable = storage::detail::is_durable<storage_type>::value;
  using cluster_type = typename cluster_of<Policies>::type;
  /// Whether this node is one of several: without, every call to the cluster is compiled out.
  static constexpr bool clustered = ::mqttbroker::cluster::detail::is_enabled<cluster_type>::value;
  /// Whether clients may authenticate with AUTH exchanges (5.0 section 4.12).
  static constexpr bool enhanced_auth = hooks::has_authenticate_enhanced_v<hooks_type>;
  /// Whether the cluster owns client identifiers: a CONNECT then waits for its claim (the link
  /// keeps the CONNECT meanwhile, as for an asynchronous authenticate).
  static constexpr bool claims = clustered && ::mqttbroker::cluster::detail::has_claim<cluster_type>::value;
  /// Whether the cluster may feed kept sessions' QoS 1/2 subscriptions (cluster/contract.hpp).
  static constexpr bool session_feeds =
      clustered && ::mqttbroker::cluster::detail::has_session_feed<cluster_type>::value;
  using session_type =
      session_record<locking_type, durable, hooks::needs_client_info_v<hooks_type> || claims, enhanced_auth>;
  /// How a shared subscription's group picks the member for a message (Policies::shared_strategy).
  using shared_strategy_type = typename shared_strategy_of<Policies>::type;
  static_assert(is_shared_strategy<shared_strategy_type>::value,
                "mqttbroker: Policies::shared_strategy needs std::size_t pick(mqttbroker::router::share_choice&)");
  using group_type = shared_subscriber<session_type, locking_type::thread_safe>;
  using link_type = link<session_type>;
  using steady_time = typename link_type::steady_time;
  using flush_scope = typename link_type::flush_scope;
  enum class local_subscription_id : std::uint64_t {};

  /// Throws std::invalid_argument for options no broker can run with.
  explicit core(broker_options opts, hooks_type hooks = {}) : opts_(std::move(opts)), hooks_(std::move(hooks)) {
    if (opts_.max_inflight == 0 || opts_.receive_maximum == 0)
      throw std::invalid_argument("mqttbroker: max_inflight and receive_maximum must be at least 1");
    // Pacing has to start well before the queue limits drop anything.
    pacing_bytes_ = opts_.pacing_backlog_bytes;
    if (opts_.max_queued_bytes != 0) pacing_bytes_ = std::min(pacing_bytes_, opts_.max_queued_bytes / 2);
    pacing_messages_ = std::min(opts_.pacing_queued_messages, opts_.max_queued_messages / 2);
    session_limits_ = make_session_limits(opts_);
    if (opts_.max_total_queued_bytes != 0) {
      queue_budget_.max_bytes = opts_.max_total_queued_bytes;
      queue_budget_.threads = locking_type::thread_safe;
      session_limits_.budget = &queue_budget_;
    }
  }
  core(const core&) = delete;
  core& operator=(const core&) = delete;

  const broker_options& options() const noexcept { return opts_; }

  /// A message for the host's log hook, formatted with fmt, and only when there is such a hook and
  /// `level` is within options().log_level: otherwise this compiles to nothing or returns at once.
  /// The hook may be called from any of the broker's threads (locking::shared).
  template <class... Args>
  void log(log_level level, fmt::format_string<Args...> format, Args&&... args) {
    if constexpr (hooks::has_log_v<hooks_type>) {
      if (level > opts_.log_level) return;
      const std::string text = fmt::format(format, std::forward<Args>(args)...);
      hooks_.log(level, text);
    } else {
      (void)level;
      (void)format;
      ((void)args, ...);
    }
  }
  /// The storage policy's object: a host opens or configures it before the broker starts.
  storage_type& storage() noexcept { return storage_; }
  /// The cluster policy's object: a host configures and connects it (cluster/contract.hpp).
  cluster_type& cluster() noexcept { return cluster_; }

  /// A message another node of the cluster published, at `now`: to this node's subscribers but
  /// shared groups (deliver_to_group() feeds those), neither published to the cluster again nor
  /// kept as this node's retained message. The number of subscribers it went to.
  std::size_t route_from_cluster(message_ptr m, steady_time now) {
    return publish_message(arrived(std::move(m), now), nullptr, now, true, nullptr, nullptr, true);
  }
  /// A message the cluster chose this node for, for its shared group `group_filter`
  /// (`$share/{ShareName}/{filter}`): to one member, picked by the node's strategy. False when
  /// the node has no such group (its last member just left).
  bool deliver_to_group(std::string_view group_filter, message_ptr m, steady_time now) {
    std::shared_lock<mutex_type> lk(state_mutex_);
    const auto it = groups_.find(group_filter);
    if (it == groups_.end()) return false;
    m = arrived(std::move(m), now);
    hot_.received[qos_index(m->qos_level())].fetch_add(1);
    deliver_shared(*it->second, m, nullptr, nullptr, now);
    return true;
  }
  /// A message the cluster fed to the session of `client_id` (cluster/contract.hpp
  /// feeds_sessions()): to it alone, through its fed subscriptions that match. False when it has
  /// none (the session ended, or the subscription went).
  bool deliver_to_session(std::string_view client_id, message_ptr m, steady_time now) {
    if constexpr (session_feeds) {
      std::shared_lock<mutex_type> lk(state_mutex_);
      const auto it = sessions_.find(client_id);
      if (it == sessions_.end()) return false;
      session_type& rec = *it->second;
      router::delivery d;
      bool matched = false;
      for (const auto& sub : rec.state.subscriptions()) {
        if (topic::is_shared_filter(sub.first) || !fed(rec, sub.second.options) ||
            !topic::matches(sub.first, m->topic()))
          continue;
        matched = true;
        router::merge_into(d, router::subscription{sub.second.options, sub.second.identifier});
      }
      if (!matched) return false;
      if (d.identifiers.size() > 1) d.identifiers.sort();
      // Not taken (refused by authorize_read, dropped by the session's limits): done with.
      return deliver(&rec, arrived(std::move(m), now), d, nullptr, now);
    } else {
      (void)client_id;
      (void)m;
      (void)now;
      return false;
    }
  }
  /// The cluster's retained message for its topic, as the cluster keeps it for every node (set,
  /// or with an empty payload cleared): into this node's retained store, for the subscriptions
  /// that come; not routed (the message itself reached the subscribers as it went by).
  void retained_from_cluster(message_ptr m, steady_time now) {
    m = arrived(std::move(m), now);
    std::lock_guard<mutex_type> lk(state_mutex_);
    if (retained_fits(*m)) retained_.set(std::move(m));
  }
  // ---- a cluster that owns client identifiers (cluster/contract.hpp claim())

  using handover_done = std::function<void(std::optional<::mqttbroker::cluster::session_handover>)>;

  /// Another node claimed `client_id`: its connection here closes as taken over (0x8E) and its
  /// session leaves this node, handed to `done` unless `discard` (or it ends with no session
  /// kept). While a connection of this client here waits for its own claim, the hand-over waits
  /// for that connection to be attached (end_claim()): the later claim wins, and one node at a
  /// time has the client. From any thread.
  void hand_over_to_cluster(const std::string& client_id, bool discard, handover_done done, steady_time now) {
    if constexpr (claims) {
      std::optional<::mqttbroker::cluster::session_handover> out;
      detail::ref_ptr<link_type> old;
      std::vector<detail::ref_ptr<link_type>> paced;
      {
        std::lock_guard<mutex_type> lk(state_mutex_);
        if (auto c = claiming_.find(client_id); c != claiming_.end()) {
          c->second.deferred.push_back({discard, std::move(done)});
          return;
        }
        const auto it = sessions_.find(client_id);
        if (it != sessions_.end()) {
          const detail::ref_ptr<session_type> rec = it->second;
          // The connection leaves the session alone when it closes (on_closed: taken over).
          old = std::move(rec->conn);
          take_paced_readers(*rec, paced);  // they go on: this client is leaving this node
          clear_outbox(*rec);
          if (!discard && kept(*rec)) out = export_session(*rec, now);
          // Moved, what it owes goes with it; ended, its shared messages go to other members.
          remove_session(*rec, now, !out);
          rec->state.clear_messages();
          if (rec->extras) {
            // [MQTT-3.1.3-9] the client connected again (elsewhere) within the Will Delay.
            rec->extras->pending_will = message_ptr();
            ++rec->extras->will_generation;
            rec->extras->retained_backlog.clear();
          }
        }
      }
      if (old) old->post(link_event::taken_over);
      resume_all(paced);
      done(std::move(out));
    } else {
      (void)client_id;
      (void)discard;
      (void)done;
      (void)now;
    }
  }

  /// A connection of `client_id` asks the cluster for it: hand-overs wait until end_claim().
  void begin_claim(const std::string& client_id) {
    std::lock_guard<mutex_type> lk(state_mutex_);
    ++claiming_[client_id].count;
  }
  /// That connection is attached to its session, refused or closed: the hand-overs that waited run.
  void end_claim(const std::string& client_id, steady_time now) {
    std::vector<deferred_handover> waiting;
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      const auto it = claiming_.find(client_id);
      if (it == claiming_.end() || --it->second.count != 0) return;
      waiting.swap(it->second.deferred);
      claiming_.erase(it);
    }
    for (auto& d : waiting) hand_over_to_cluster(client_id, d.discard, std::move(d.done), now);
  }

  /// The session another node handed over becomes this node's, in place of any it had here.
  void adopt_session(const std::string& client_id, ::mqttbroker::cluster::session_handover&& h, steady_time now) {
    using handed = ::mqttbroker::cluster::session_handover;
    std::lock_guard<mutex_type> lk(state_mutex_);
    if (const auto it = sessions_.find(client_id); it != sessions_.end()) {
      if (it->second->conn) return;  // connected here meanwhile: that session stands
      remove_session(*it->second, now);
    }
    auto rec = detail::ref_ptr<session_type>::make(client_id, &session_limits_);
    rec->expiry = stored_expiry(std::chrono::seconds(h.expiry_seconds));
    sessions_.emplace(rec->state.client_id(), rec);
    for (const auto& sub : h.subscriptions) {
      router::subscription s;
      s.options = sub.options;
      s.identifier = sub.identifier;
      add_subscription(*rec, sub.filter, s);
      record([&](auto& st) { st.save_subscription(client_id, sub.filter, sub.options, sub.identifier); }, false);
    }
    const std::uint32_t now_s = clock_seconds(now);
    for (auto& d : h.messages) {
      session::outgoing o;
      if (d.msg && d.expires_in != 0) {
        // Its expiry on this node's clock: what was left when the old owner let it go.
        const message& m = *d.msg;
        o.msg = message::make(m.topic(), m.payload(), m.qos_level(), m.retain(), m.properties().bytes(),
                              static_cast<std::uint32_t>(std::min<std::uint64_t>(std::uint64_t{now_s} + d.expires_in, 0xFFFFFFFF)));
      } else {
        o.msg = std::move(d.msg);
      }
      o.qos_level = d.qos_level;
      o.retain = d.retain;
      for (std::uint32_t id : d.subscription_ids) o.subscription_ids.push_back(id);
      o.packet_id = d.packet_id;
      if (d.at == handed::state::queued) {
        if (!o.msg) continue;
        record([&](auto& st) { store_enqueue(st, client_id, o.msg, delivery_of(o)); }, false);
        rec->state.offer(o, false);
      } else {
        const bool pubrec = d.at == handed::state::pubrec_received;
        if (!pubrec && !o.msg) continue;
        if constexpr (durable) {
          if (!o.msg) o.msg = message::make({}, {}, codec::qos::exactly_once, false);
          record([&](auto& st) { store_send(st, client_id, o.packet_id, o.msg, delivery_of(o)); }, false);
          if (pubrec) record([&](auto& st) { st.pubrec(client_id, o.packet_id); }, false);
        }
        rec->state.restore_inflight(std::move(o), pubrec);
      }
    }
    for (std::uint16_t id : h.received) {
      rec->state.on_qos2_publish(id);
      record(
          [&](auto& st) {
            // Routed by the old owner: only the identifier is owed (its PUBREL).
            st.receive(client_id, id, message::make({}, {}, codec::qos::exactly_once, false));
            if constexpr (storage::detail::has_routed<storage_type>::value) st.routed(client_id, id);
          },
          false);
    }
    if (kept(*rec)) record([&](auto& st) { st.save_session(client_id, rec->expiry.count()); }, false);
  }

  /// Whether `m` may go into the retained store: a clearing, a replacement, or one more within
  /// max_retained_messages. state_mutex_ held.
  bool retained_fits(const message& m) const {
    return m.payload().empty() || retained_.size() < opts_.max_retained_messages || retained_.find(m.topic());
  }
  /// A message from another node, its Message Expiry Interval (which travels in its properties)
  /// counted on this node's clock from its arrival: the hop's time is not taken off.
  static message_ptr arrived(message_ptr m, steady_time now) {
    if (m->expires_at() != 0 || m->properties().empty()) return m;
    const std::uint32_t at = expiry_of(m->properties(), now);
    if (at == 0) return m;
    return message::make(m->topic(), m->payload(), m->qos_level(), m->retain(), m->properties().bytes(), at);
  }

  /// Rebuilds, from a durable storage, the sessions (offline, their expiry counted from `now`),
  /// their subscriptions, queued and in-flight messages, received QoS 2 identifiers and delayed
  /// wills, and the retained messages. Before the listeners start; nothing for storage::memory.
  void load(steady_time now, std::chrono::system_clock::time_point system_now) {
    if constexpr (durable) {
      loader ld{*this, now, system_now};
      {
        std::lock_guard<mutex_type> lk(state_mutex_);
        storage_.load(ld);
      }
      // QoS 2 messages that were durable but not yet routed when the broker stopped: their
      // publishers were told PUBREC, so they go out now, once (their identifiers stay held).
      // One scope: the routing and its `routed` marks are recorded before any commit boundary.
      flush_scope batch;
      for (auto& u : ld.unrouted_) route_received(std::move(u.msg), u.from.get(), u.packet_id, now);
    } else {
      (void)now;
      (void)system_now;
    }
  }

  /// What storage::load() calls, one record at a time (storage/contract.hpp). state_mutex_ held.
  class loader {
   public:
    loader(core& e, steady_time now, std::chrono::system_clock::time_point system_now)
        : e_(e), now_(now), system_now_(system_now) {}

    void session(std::string_view client_id, std::uint32_t expiry_seconds) {
      session(client_id, expiry_seconds, std::chrono::seconds(expiry_seconds));
    }
    /// `left`: what remains of the expiry, counted by the store from its wall-clock times; 0
    /// ends the session at start (the broker's first expire_sessions()).
    void session(std::string_view client_id, std::uint32_t expiry_seconds, std::chrono::seconds left) {
      auto rec = detail::ref_ptr<session_type>::make(std::string(client_id), &e_.session_limits_);
      rec->expiry = std::chrono::duration<std::uint32_t>(expiry_seconds);
      left = std::clamp(left, std::chrono::seconds(0), std::chrono::seconds(expiry_seconds));
      rec->expires = now_ + left;
      e_.sessions_.emplace(rec->state.client_id(), rec);
    }
    std::chrono::system_clock::time_point system_now() const noexcept { return system_now_; }
    /// A wall-clock Message Expiry as message::make takes it: the broker clock's second (1 at
    /// least, so one that passed while the broker was down is expired, not endless).
    std::uint32_t expiry_second(std::chrono::system_clock::time_point at) const noexcept {
      const auto left = std::chrono::duration_cast<std::chrono::seconds>(at - system_now_).count();
      const std::int64_t second = std::int64_t{clock_seconds(now_)} + std::max<std::int64_t>(left, 0);
      return static_cast<std::uint32_t>(std::clamp<std::int64_t>(second, 1, 0xFFFFFFFF));
    }
    void subscription(std::string_view client_id, std::string_view filter, codec::subscribe_options options,
                      std::uint32_t identifier) {
      session_type* rec = find(client_id);
      if (rec == nullptr) return;
      router::subscription sub;
      sub.options = options;
      sub.identifier = identifier;
      e_.add_subscription(*rec, filter, sub);  // a `$share/` filter rebuilds its group
    }
    void retained(message_ptr m) { e_.retained_.set(std::move(m)); }
    void outgoing(std::string_view client_id, std::uint16_t packet_id, message_ptr m, codec::qos q,
                  storage::outgoing_state state) {
      storage::delivery d;
      d.qos_level = q;
      outgoing(client_id, packet_id, std::move(m), d, state);
    }
    /// With what its first send carried: a resend repeats its RETAIN flag and Subscription
    /// Identifiers [MQTT-3.3.4-3].
    void outgoing(std::string_view client_id, std::uint16_t packet_id, message_ptr m, const storage::delivery& d,
                  storage::outgoing_state state) {
      session_type* rec = find(client_id);
      if (rec == nullptr) return;
      session::outgoing o;
      o.msg = std::move(m);
      o.qos_level = d.qos_level;
      o.retain = d.retain;
      for (std::size_t i = 0; i < d.subscription_id_count; ++i) o.subscription_ids.push_back(d.subscription_ids[i]);
      o.packet_id = packet_id;
      if (state == storage::outgoing_state::queued)
        rec->state.offer(o, false);
      else
        rec->state.restore_inflight(std::move(o), state == storage::outgoing_state::pubrec_received);
    }
    void inbound(std::string_view client_id, std::uint16_t packet_id) {
      if (session_type* rec = find(client_id)) rec->state.on_qos2_publish(packet_id);
    }
    /// A QoS 2 message that was durable before its PUBREC but not routed: routed after the load.
    void inbound(std::string_view client_id, std::uint16_t packet_id, message_ptr unrouted) {
      session_type* rec = find(client_id);
      if (rec == nullptr) return;
      rec->state.on_qos2_publish(packet_id);
      if (unrouted) unrouted_.push_back({detail::ref_ptr<session_type>(rec), packet_id, std::move(unrouted)});
    }
    void will(std::string_view client_id, message_ptr m, std::chrono::system_clock::time_point due) {
      session_type* rec = find(client_id);
      if (rec == nullptr) return;
      // Due by the stored date; one already past (the broker was down) goes out at the first chance.
      const auto left = std::max(due - system_now_, std::chrono::system_clock::duration::zero());
      e_.delay_will(*rec, std::move(m), now_ + std::chrono::duration_cast<typename steady_time::duration>(left));
    }

   private:
    session_type* find(std::string_view client_id) {
      auto it = e_.sessions_.find(client_id);
      return it == e_.sessions_.end() ? nullptr : it->second.get();
    }
    core& e_;
    steady_time now_;
    std::chrono::system_clock::time_point system_now_;

   public:
    struct unrouted_message {
      detail::ref_ptr<session_type> from;
      std::uint16_t packet_id;
      message_ptr msg;
    };
    std::vector<unrouted_message> unrouted_;  // routed by load() once the state lock is let go
  };

  /// link_event::committed, on the link's executor: its held acknowledgements whose commits are
  /// durable go out, in order, and writes held for a commit (gate_writes) go too.
  void on_committed(link_type& l, steady_time now) {
    release_acks(l, now);
    if constexpr (durable) l.start_write();
  }

  /// Whether the server may write what `l` has queued: not while a packet in it depends on a
  /// change not yet durable (gate_writes); `l` is told when it is (link_event::committed). On
  /// l's executor, once per write batch.
  bool writes_may_go(link_type& l) {
    if constexpr (durable) {
      if (l.write_gate == 0) return true;
      // The ticket is taken only now, when the handler that queued is done with its changes: a
      // commit boundary inside a routing would let a crash keep half of it (gate_writes).
      if (l.write_gate == gate_pending) l.write_gate = storage_.commit();
      std::lock_guard<mutex_type> lk(state_mutex_);
      if (l.write_gate <= committed_) {
        l.write_gate = 0;
        return true;
      }
      await_commit(l);
      return false;
    } else {
      (void)l;
      return true;
    }
  }

  /// `l` is told of the next commit (link_event::committed). state_mutex_ held.
  void await_commit(link_type& l) {
    if (l.awaiting_commit) return;
    l.awaiting_commit = true;
    holding_.push_back(l.self());
  }

  /// `l` is told when a session next completes a stored delivery (wake_settling). state_mutex_ held.
  void await_settle(link_type& l) {
    if (l.awaiting_settle) return;
    l.awaiting_settle = true;
    settling_.push_back(l.self());
  }

  /// A session completed a stored delivery (PUBACK, PUBCOMP): the links whose first held PUBACK
  /// waits for its message to be taken by all look again (settled_early), as that may have been
  /// the last. Once per waiting link, whatever number of deliveries completes before it looks.
  void wake_settling() {
    if constexpr (durable && !clustered) {
      std::vector<detail::ref_ptr<link_type>> ready;
      {
        std::lock_guard<mutex_type> lk(state_mutex_);
        if (settling_.empty()) return;
        ready.swap(settling_);
        for (auto& l : ready) l->awaiting_settle = false;
      }
      for (auto& l : ready) l->post(link_event::committed);
    }
  }

  /// A commit's ticket is durable (the storage's on_commit handler, brought to any thread): the
  /// links holding acknowledgements behind it are asked to send them (link_event::committed).
  void storage_committed(std::uint64_t ticket) {
    if constexpr (durable) {
      std::vector<detail::ref_ptr<link_type>> ready;
      {
        std::lock_guard<mutex_type> lk(state_mutex_);
        if (ticket > committed_) committed_ = ticket;
        ready.swap(holding_);
        for (auto& l : ready) l->awaiting_commit = false;
      }
      for (auto& l : ready) l->post(link_event::committed);
    } else {
      (void)ticket;
    }
  }

  /// Tickets `first`..`last` will never be durable (the storage's on_commit_failed, from any
  /// thread): the acknowledgements waiting for them are refused, not sent (release_acks). A
  /// storage_committed() for `last` or later follows and lets them be looked at.
  void storage_commit_failed(std::uint64_t first, std::uint64_t last, std::error_code ec) {
    if constexpr (durable) {
      {
        std::lock_guard<mutex_type> lk(state_mutex_);
        // Failures in a row (a disk that stays full) join into one range.
        if (!failed_.empty() && failed_.back().second + 1 >= first)
          failed_.back().second = std::max(failed_.back().second, last);
        else
          failed_.emplace_back(first, last);
        // Links look at their held acknowledgements within one post of each report: old ranges
        // are long settled.
        if (failed_.size() > max_failed_ranges) failed_.erase(failed_.begin());
      }
      log(log_level::error, "storage: commits {} to {} failed: {}", first, last, ec.message());
    } else {
      (void)first;
      (void)last;
      (void)ec;
    }
  }

  /// Makes durable, on the storage's schedule, what no acknowledgement waits for (retained
  /// messages, expiry, wills): the broker's sweep calls it between packets, never in the middle
  /// of one packet's changes.
  void flush_storage() {
    if constexpr (durable) storage_.commit();
  }

  /// Called with the time of the earliest delayed will whenever it moves earlier: the caller
  /// arms a timer and calls release_wills() then.
  void on_will_scheduled(std::function<void(steady_time)> f) { will_scheduled_ = std::move(f); }

  // ---- the in-process API

  /// A message from the host, at `now`: the number of subscribers it went to.
  std::size_t publish(std::string_view topic_name, std::string_view payload, codec::qos q, bool retain,
                      std::error_code* error, steady_time now) {
    if (auto ec = topic::validate_topic_name(topic_name, topic_limits())) {
      if (error) *error = ec;
      return 0;
    }
    return publish_message(message::make(topic_name, payload, q, retain), nullptr, now);
  }
  /// The same with 5.0 properties; an error (and no message) for a Response Topic that is not a
  /// topic name, a string that is not UTF-8 or a field over 65,535 bytes.
  std::size_t publish(std::string_view topic_name, std::string_view payload, codec::qos q, bool retain,
                      const message_properties& props, std::error_code* error, steady_time now) {
    auto fail = [&](std::error_code ec) {
      if (error) *error = ec;
      return std::size_t{0};
    };
    if (auto ec = topic::validate_topic_name(topic_name, topic_limits())) return fail(ec);
    auto text = [](std::string_view s) -> std::error_code {
      if (s.size() > 0xFFFF) return codec_errc::field_too_long;
      return codec::validate_utf8(s);
    };
    codec::properties_builder b;
    if (props.payload_is_utf8) {
      if (*props.payload_is_utf8) {
        if (auto ec = codec::validate_utf8(payload)) return fail(ec);
      }
      b.add(codec::property_id::payload_format_indicator, *props.payload_is_utf8 ? 1u : 0u);
    }
    if (props.message_expiry) b.add(codec::property_id::message_expiry_interval, *props.message_expiry);
    if (props.content_type) {
      if (auto ec = text(*props.content_type)) return fail(ec);
      b.add(codec::property_id::content_type, *props.content_type);
    }
    if (props.response_topic) {
      if (auto ec = topic::validate_topic_name(*props.response_topic, topic_limits())) return fail(ec);
      b.add(codec::property_id::response_topic, *props.response_topic);
    }
    if (props.correlation_data) {
      if (props.correlation_data->size() > 0xFFFF) return fail(codec_errc::field_too_long);
      b.add(codec::property_id::correlation_data, *props.correlation_data);
    }
    for (const auto& kv : props.user_properties) {
      if (auto ec = text(kv.first)) return fail(ec);
      if (auto ec = text(kv.second)) return fail(ec);
      b.add_user_property(kv.first, kv.second);
    }
    const codec::properties_view v = b.view();
    return publish_message(message::make(topic_name, payload, q, retain, v.bytes(), expiry_of(v, now)), nullptr, now);
  }

  local_subscription_id subscribe(std::string_view filter, local_handler handler, codec::qos q) {
    if (auto ec = topic::validate_topic_filter(filter, topic_limits())) throw std::system_error(ec, "mqttbroker: subscribe");
    auto sub = std::make_unique<local_subscriber>();
    sub->kind = subscriber_kind::local;
    sub->handler = std::make_shared<const local_handler>(std::move(handler));
    sub->filters.emplace_back(filter);
    std::lock_guard<mutex_type> lk(state_mutex_);
    const auto id = static_cast<local_subscription_id>(++next_local_id_);
    router::subscription s;
    s.options.max_qos = q;
    route_subscribe(filter, sub.get(), s);
    local_subs_.emplace(static_cast<std::uint64_t>(id), std::move(sub));
    return id;
  }

  /// An in-process participant without filters yet: subscribe_as() gives it some, publish_as()
  /// routes messages as its own, so that its No Local filters skip them (a bridge's loop
  /// prevention). Its handler gets each matching message once, however many of its filters match.
  local_subscription_id attach(local_handler handler) {
    auto sub = std::make_unique<local_subscriber>();
    sub->kind = subscriber_kind::local;
    sub->handler = std::make_shared<const local_handler>(std::move(handler));
    std::lock_guard<mutex_type> lk(state_mutex_);
    const auto id = static_cast<local_subscription_id>(++next_local_id_);
    local_subs_.emplace(static_cast<std::uint64_t>(id), std::move(sub));
    return id;
  }

  /// Adds (or changes the options of) one of participant `id`'s filters. Errors: an invalid
  /// filter, a shared one (participants take every message), an unknown participant.
  std::error_code subscribe_as(local_subscription_id id, std::string_view filter, codec::subscribe_options o) {
    if (auto ec = topic::validate_topic_filter(filter, topic_limits())) return ec;
    if (topic::is_shared_filter(filter)) return std::make_error_code(std::errc::not_supported);
    std::lock_guard<mutex_type> lk(state_mutex_);
    auto it = local_subs_.find(static_cast<std::uint64_t>(id));
    if (it == local_subs_.end()) return std::make_error_code(std::errc::invalid_argument);
    local_subscriber& sub = *it->second;
    if (std::find(sub.filters.begin(), sub.filters.end(), filter) == sub.filters.end()) sub.filters.emplace_back(filter);
    router::subscription s;
    s.options = o;
    route_subscribe(filter, &sub, s);
    return {};
  }

  /// A message from participant `id`: its No Local filters do not get it back. `properties` are
  /// 5.0 properties as a PUBLISH carried them (already validated by the decoder); Topic Alias and
  /// Subscription Identifiers are dropped, a Message Expiry Interval counts from `now`.
  std::size_t publish_as(local_subscription_id id, std::string_view topic_name, std::string_view payload,
                         codec::qos q, bool retain, codec::properties_view properties, std::error_code* error,
                         steady_time now) {
    if (auto ec = topic::validate_topic_name(topic_name, topic_limits())) {
      if (error) *error = ec;
      return 0;
    }
    const subscriber* self = nullptr;
    {
      std::shared_lock<mutex_type> lk(state_mutex_);
      auto it = local_subs_.find(static_cast<std::uint64_t>(id));
      if (it != local_subs_.end()) self = it->second.get();  // compared, never dereferenced
    }
    message_ptr m = properties.empty()
                        ? message::make(topic_name, payload, q, retain)
                        : message::make(topic_name, payload, q, retain, forwardable_properties(properties),
                                        expiry_of(properties, now));
    return publish_message(std::move(m), nullptr, now, true, nullptr, self);
  }

  /// Ends an in-process subscription or participant, with all its filters.
  bool unsubscribe(local_subscription_id id) {
    std::lock_guard<mutex_type> lk(state_mutex_);
    auto it = local_subs_.find(static_cast<std::uint64_t>(id));
    if (it == local_subs_.end()) return false;
    for (const std::string& f : it->second->filters) route_unsubscribe(f, it->second.get());
    local_subs_.erase(it);
    return true;
  }

  /// Messages received so far, all QoS: cheap, for a host that watches the traffic's pace.
  std::uint64_t messages_received() const noexcept {
    return hot_.received[0].load() + hot_.received[1].load() + hot_.received[2].load();
  }

  broker_stats stats() const {
    // Shared: it only reads, and a host may poll it while publishers route.
    std::shared_lock<mutex_type> lk(state_mutex_);
    broker_stats s = stats_;
    for (std::size_t q = 0; q < 3; ++q) {
      s.messages_received_qos[q] = hot_.received[q].load();
      s.messages_sent_qos[q] = hot_.sent[q].load();
      s.messages_received += s.messages_received_qos[q];
      s.messages_sent += s.messages_sent_qos[q];
    }
    s.messages_dropped = hot_.dropped.load();
    s.messages_expired = hot_.expired.load();
    s.reader_pauses = hot_.pauses.load();
    s.deliveries_denied = hot_.denied.load();
    s.connects_refused_auth = hot_.refused_auth.load();
    s.connects_refused_other = hot_.refused_connect.load();
    s.queue_memory_drops = queue_budget_.refused.load(std::memory_order_relaxed);
    // With a total limit, the count the limit is checked against; without one, the sum below.
    const bool budgeted = session_limits_.budget != nullptr;
    if (budgeted) s.queued_bytes = queue_budget_.bytes.load(std::memory_order_relaxed);
    s.connections = links_.size();
    s.sessions = sessions_.size();
    for (const auto& e : sessions_) {
      // A session's queue changes under its own lock while publishers hold the state lock shared.
      std::lock_guard<session_mutex_type> own(e.second->mutex);
      s.subscriptions += e.second->state.subscriptions().size();
      s.queued_messages += e.second->state.queued_count();
      if (!budgeted) s.queued_bytes += e.second->state.queued_bytes();
    }
    s.retained_messages = retained_.size();
    s.shared_groups = groups_.size();
    return s;
  }

  message_ptr retained(std::string_view topic_name) const {
    std::lock_guard<mutex_type> lk(state_mutex_);
    return retained_.find(topic_name);
  }

  // ---- time: called by the broker's timers

  /// Every connection whose deadline passed is asked to check it on its own executor (the
  /// CONNECT timeout, Keep Alive, or a paused reader's wait for a stuck subscriber).
  void sweep_connections(steady_time now) {
    std::vector<detail::ref_ptr<link_type>> due;
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      links_.for_each([&](link_type& c) {
        if (c.deadline_passed(now)) due.push_back(c.self());
      });
    }
    for (auto& c : due) c->post(link_event::check_deadline);
  }

  /// Ends the offline sessions whose expiry has passed; their delayed wills go out.
  void expire_sessions(steady_time now) {
    std::vector<message_ptr> due_wills;
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      for (auto it = sessions_.begin(); it != sessions_.end();) {
        session_type& r = *it->second;
        if (!r.conn && r.expires <= now && r.expiry.count() != 0xFFFFFFFF) {
          if (r.extras && r.extras->pending_will) due_wills.push_back(std::move(r.extras->pending_will));  // the session ends
          drop_session_subscriptions(r);
          hand_over_shared(r, now);
          record([&](auto& st) { st.erase_session(r.state.client_id()); });
          log(log_level::debug, "session '{}' expired", r.state.client_id());
          it = sessions_.erase(it);
          ++stats_.sessions_expired;
        } else {
          ++it;
        }
      }
    }
    for (auto& w : due_wills) publish_message(published_will(std::move(w), now), nullptr, now);
    report_queue_budget(now);
  }

  /// A log line, at most every 10 s, while max_total_queued_bytes drops messages.
  void report_queue_budget(steady_time now) {
    const std::uint64_t refused = queue_budget_.refused.load(std::memory_order_relaxed);
    if (refused == budget_reported_ || now - budget_reported_at_ < std::chrono::seconds(10)) return;
    log(log_level::warning, "{} messages dropped: all sessions' queues hold {} bytes, max_total_queued_bytes is {}",
        refused - budget_reported_, queue_budget_.bytes.load(std::memory_order_relaxed), queue_budget_.max_bytes);
    budget_reported_ = refused;
    budget_reported_at_ = now;
  }

  /// When the earliest delayed will is due, if any.
  std::optional<steady_time> next_will_due() const {
    std::lock_guard<mutex_type> lk(state_mutex_);
    if (will_queue_.empty()) return std::nullopt;
    return will_queue_.begin()->first;
  }

  /// Publishes the delayed wills due at `now` whose sessions are still waiting for them.
  void release_wills(steady_time now) {
    std::vector<message_ptr> due;
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      while (!will_queue_.empty() && will_queue_.begin()->first <= now) {
        // Not a structured binding: C++17 lambdas (record's) cannot capture one.
        const std::string& id = will_queue_.begin()->second.first;
        const std::uint64_t generation = will_queue_.begin()->second.second;
        auto it = sessions_.find(id);
        if (it != sessions_.end() && it->second->extras && it->second->extras->will_generation == generation &&
            it->second->extras->pending_will) {
          due.push_back(std::move(it->second->extras->pending_will));
          record([&](auto& st) { st.erase_will(id); });
        }
        will_queue_.erase(will_queue_.begin());
      }
    }
    if (stopping_) return;
    for (auto& w : due) publish_message(published_will(std::move(w), now), nullptr, now);
  }

  /// Mosquitto's familiar $SYS/broker/... figures, retained, so a monitor sees them at once.
  /// Only filters that name $SYS see them [MQTT-4.7.2-1].
  /// `st`: the broker's figures (stats(), with what the broker counts itself: bytes).
  void publish_sys(std::chrono::seconds uptime, steady_time now, const broker_stats& st) {
    update_loads(st, now);
    const std::pair<const char*, std::string> figures[] = {
        {"$SYS/broker/version",
         "mqttbroker " + std::to_string(MQTTBROKER_VERSION_MAJOR) + "." + std::to_string(MQTTBROKER_VERSION_MINOR) + "." +
             std::to_string(MQTTBROKER_VERSION_PATCH)},
        {"$SYS/broker/uptime", std::to_string(uptime.count()) + " seconds"},
        {"$SYS/broker/clients/connected", std::to_string(st.connections)},
        {"$SYS/broker/clients/active", std::to_string(st.connections)},  // Mosquitto's older name
        // Sessions without a connection: persistent ones waiting for their client.
        {"$SYS/broker/clients/disconnected", std::to_string(st.sessions - std::min(st.sessions, st.connections))},
        {"$SYS/broker/clients/inactive", std::to_string(st.sessions - std::min(st.sessions, st.connections))},
        {"$SYS/broker/clients/total", std::to_string(st.sessions)},
        {"$SYS/broker/clients/expired", std::to_string(st.sessions_expired)},
        {"$SYS/broker/messages/received", std::to_string(st.messages_received)},
        {"$SYS/broker/messages/sent", std::to_string(st.messages_sent)},
        {"$SYS/broker/messages/dropped", std::to_string(st.messages_dropped)},
        // PUBLISH packets: what this broker's messages/ figures count too (Mosquitto's count all packets).
        {"$SYS/broker/publish/messages/received", std::to_string(st.messages_received)},
        {"$SYS/broker/publish/messages/sent", std::to_string(st.messages_sent)},
        {"$SYS/broker/publish/messages/dropped", std::to_string(st.messages_dropped)},
        {"$SYS/broker/retained messages/count", std::to_string(st.retained_messages)},
        {"$SYS/broker/bytes/received", std::to_string(st.bytes_received)},
        {"$SYS/broker/bytes/sent", std::to_string(st.bytes_sent)},
        {"$SYS/broker/subscriptions/count", std::to_string(st.subscriptions)},
        // Messages waiting in sessions (Mosquitto's store also counts retained ones; retained
        // messages/count has those).
        {"$SYS/broker/store/messages/count", std::to_string(st.queued_messages)},
        {"$SYS/broker/store/messages/bytes", std::to_string(st.queued_bytes)},
        {"$SYS/broker/messages/stored", std::to_string(st.queued_messages)},
    };
    for (const auto& f : figures)
      publish_message(message::make(f.first, f.second, codec::qos::at_most_once, true), nullptr, now, false);
    // Mosquitto's load figures: per minute, averaged over 1, 5 and 15 minutes.
    static constexpr const char* spans[3] = {"1min", "5min", "15min"};
    for (const load_figure& l : loads_)
      for (std::size_t i = 0; i < 3; ++i)
        publish_message(message::make(fmt::format("$SYS/broker/load/{}/{}", l.name, spans[i]),
                                      fmt::format("{:.2f}", l.average[i]), codec::qos::at_most_once, true),
                        nullptr, now, false);
  }

 private:
  /// One of Mosquitto's load figures: a counter's rate per minute, averaged exponentially over
  /// 1, 5 and 15 minutes, as a Unix load average is.
  struct load_figure {
    const char* name;
    std::uint64_t broker_stats::*counter;
    std::uint64_t last = 0;
    double average[3] = {0, 0, 0};
  };
  void update_loads(const broker_stats& st, steady_time now) {
    const double seconds = loads_at_ == steady_time{} ? 0.0 : std::chrono::duration<double>(now - loads_at_).count();
    loads_at_ = now;
    static constexpr double spans_s[3] = {60.0, 300.0, 900.0};
    for (load_figure& l : loads_) {
      const std::uint64_t value = st.*l.counter;
      if (seconds > 0) {
        const double per_minute = static_cast<double>(value - l.last) * 60.0 / seconds;
        for (std::size_t i = 0; i < 3; ++i) {
          const double keep = std::exp(-seconds / spans_s[i]);
          l.average[i] = per_minute + keep * (l.average[i] - per_minute);
        }
      }
      l.last = value;
    }
  }
  load_figure loads_[5] = {{"messages/received", &broker_stats::messages_received},
                           {"messages/sent", &broker_stats::messages_sent},
                           {"bytes/received", &broker_stats::bytes_received},
                           {"bytes/sent", &broker_stats::bytes_sent},
                           {"connections", &broker_stats::connections_accepted}};
  steady_time loads_at_{};  // the last publish_sys (the broker's control executor only)

 public:

  // ---- stopping

  bool stopping() const noexcept { return stopping_.load(); }

  /// Every connection is asked to shut down; `done` runs once the last has closed (at once when
  /// there are none). Delayed wills are dropped.
  void stop(std::function<void()> done) {
    stopping_ = true;
    std::vector<detail::ref_ptr<link_type>> links;
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      will_queue_.clear();
      if (!links_.empty()) {
        stop_done_ = std::move(done);
        links_.for_each([&](link_type& c) { links.push_back(c.self()); });
      }
    }
    if (links.empty()) {
      if (done) done();
      return;
    }
    for (auto& c : links) c->post(link_event::shutdown);
  }

  /// Accepting again after a stop.
  void restart() noexcept { stopping_ = false; }

  /// Moves queued and retained messages into flight as the window and the transport allow.
  void pump(link_type& l, steady_time now) {
    flush_scope batch;  // one write for all it sends
    fill(l, now);
    resume_paced_readers(l, now);
  }

 protected:
  using mutex_type = typename locking_type::mutex_type;
  using session_mutex_type = typename session_type::session_mutex_type;

  /// When a message with these 5.0 properties, received at `now`, expires: 0 without a Message
  /// Expiry Interval.
  static std::uint32_t expiry_of(const codec::properties_view& props, steady_time now) noexcept {
    if (props.empty()) return 0;
    const auto p = props.find(codec::property_id::message_expiry_interval);
    if (!p) return 0;
    const std::uint64_t at = std::uint64_t{engine::clock_seconds(now)} + p->integer;
    return static_cast<std::uint32_t>(std::min<std::uint64_t>(std::max<std::uint64_t>(at, 1), 0xFFFFFFFFu));
  }

  /// 5.0 properties that travel with a message to its receivers: all but Topic Alias and
  /// Subscription Identifiers, which belong to one connection, and the will's own Will Delay.
  /// The view is valid until the next call on this thread (the caller copies it into a message).
  static std::string_view forwardable_properties(const codec::properties_view& in) {
    auto stays = [](const codec::property& p) {
      return p.id != codec::property_id::topic_alias && p.id != codec::property_id::subscription_identifier &&
             p.id != codec::property_id::will_delay_interval;
    };
    bool all_stay = true;
    for (const codec::property& p : in) all_stay = all_stay && stays(p);
    if (all_stay) return in.bytes();  // the usual case: forwarded as they came, no rebuild
    static thread_local codec::properties_builder b;
    b.clear();
    for (const codec::property& p : in)
      if (stays(p)) b.add(p);
    return b.view().bytes();
  }

  /// A will as it is published at `now`: its Message Expiry Interval counts from now, not from the
  /// CONNECT that carried it.
  static message_ptr published_will(message_ptr will, steady_time now) {
    const std::uint32_t expires = expiry_of(will->properties(), now);
    if (expires == 0) return will;
    return message::make(will->topic(), will->payload(), will->qos_level(), will->retain(),
                         will->properties().bytes(), expires);
  }

  topic::limits topic_limits() const noexcept {
    topic::limits lim;
    lim.max_levels = opts_.max_topic_levels;
    return lim;
  }

  /// Sets the one deadline the sweep watches, counted from `from`: the accept, the last packet,
  /// the read that paused, or the end of a pause. Before CONNACK it is the CONNECT timeout (no
  /// packet comes before the CONNECT), also while an authentication runs; after, 1.5 times Keep
  /// Alive. While paused for pacing Keep Alive does not run: the deadline is when the client the
  /// reader waits for counts as stuck.
  void restart_deadline(link_type& l, steady_time from) noexcept {
    typename link_type::deadline_rep d = link_type::no_deadline;
    if (l.paced())
      d = (from + opts_.stuck_client_timeout).time_since_epoch().count();
    else if (!l.connected_)
      d = (from + opts_.connect_timeout).time_since_epoch().count();
    else if (l.keep_alive_limit_.count() != 0)
      d = (from + l.keep_alive_limit_).time_since_epoch().count();
    if constexpr (enhanced_auth) {
      // An AUTH exchange has a limit of its own, which later packets do not move: before CONNACK
      // it replaces the CONNECT timeout; after, Keep Alive runs beside it, except while the hook
      // answers a step (that silence is ours).
      if (const auth_exchange_state* a = l.auth_.get(); a != nullptr && a->running) {
        const auto limit = a->deadline.time_since_epoch().count();
        d = (!l.connected_ || l.authenticating_) ? limit : std::min(d, limit);
      }
    }
    l.set_deadline(d);
  }

  /// A session's own traffic (acknowledgements, its queue moving): the state lock shared, so
  /// publishers on other threads go on routing, and the session's lock, which they take to
  /// deliver to it. Anything that changes routes or sessions takes the state lock exclusively.
  struct session_guard {
    session_guard(core& e, session_type& r) : state(e.state_mutex_), own(r.mutex) {}
    std::shared_lock<mutex_type> state;
    std::lock_guard<session_mutex_type> own;
  };

  // ---- routing

  /// Routes `m` to every matching subscriber; `from` is the publishing session (No Local), and
  /// `reader` the link it came from, paced when a subscriber is behind; `participant`, the
  /// in-process one that published it (No Local too); `remote`, a message from another node of
  /// the cluster (route_from_cluster()).
  std::size_t publish_message(message_ptr m, session_type* from, steady_time now, bool count = true,
                              link_type* reader = nullptr, const subscriber* participant = nullptr,
                              bool remote = false) {
    if constexpr (hooks::has_intercept_v<hooks_type>) {
      // The node it entered on intercepted it already.
      if (!remote) hooks_.intercept(from ? std::string_view(from->state.client_id()) : std::string_view(), m);
      if (!m) return 0;
    }
    if (count) hot_.received[qos_index(m->qos_level())].fetch_add(1);
    std::size_t n = 0;
    // In-process handlers run after routing, outside the lock: a handler may publish or
    // subscribe again without re-entering the router mid-route. Their list is one vector per
    // thread, kept between publishes so that none allocates: a publish from inside a handler
    // appends past this call's part and takes its own part off again before it returns.
    static thread_local std::vector<std::shared_ptr<const local_handler>> local;
    const std::size_t first = local.size();
    struct pop_on_exit {
      std::vector<std::shared_ptr<const local_handler>>& list;
      std::size_t keep;
      ~pop_on_exit() { list.resize(keep); }
    } pop{local, first};
    const subscriber* publisher = participant != nullptr ? participant : from;
    auto on_match = [&](const subscriber* s, const router::delivery& d) {
      ++n;
      if (s->kind == subscriber_kind::local) {
        local.push_back(static_cast<const local_subscriber*>(s)->handler);  // counted below, at once
      } else if (s->kind == subscriber_kind::shared) {
        // In a cluster, the cluster picks the node for a shared group (deliver_to_group()).
        if constexpr (clustered) {
          --n;
          return;
        }
        deliver_shared(*static_cast<const group_type*>(s), m, from, reader, now);
      } else if (session_feeds && s->kind == subscriber_kind::feed) {
        // QoS 1/2 come through the cluster's feed (deliver_to_session()), this one too.
        if (m->qos_level() != codec::qos::at_most_once) return;
        deliver(static_cast<session_type*>(static_cast<const feed_subscriber*>(s)->owner), m, d, reader, now);
      } else {
        deliver(static_cast<session_type*>(const_cast<subscriber*>(s)), m, d, reader, now);
      }
    };
    if (m->retain() || !locking_type::thread_safe) {
      // A retained message is stored and routed in one exclusive section, the one on_subscribe
      // takes for its route and its retained snapshot: a subscriber gets it once, live or retained.
      std::lock_guard<mutex_type> lk(state_mutex_);
      if (m->retain() && !remote) {
        // [MQTT-3.3.1-5] store, or with an empty payload delete [MQTT-3.3.1-10], the retained message.
        if (retained_fits(*m)) {
          retained_.set(m);
          // Stored whatever its QoS; no acknowledgement waits for it.
          if (m->payload().empty())
            record([&](auto& st) { st.erase_retained(m->topic()); }, false);
          else
            record([&](auto& st) { st.save_retained(m); }, false);
        }
      }
      router_.route(m->topic(), publisher ? &publisher : nullptr, on_match);
    } else {
      // Routing only reads the subscriptions: publishers on several threads route at once, each
      // with its own scratch buffers, and meet only on a receiving session's own lock.
      static thread_local typename router_type::route_scratch scratch;
      std::shared_lock<mutex_type> lk(state_mutex_);
      router_.route(m->topic(), publisher ? &publisher : nullptr, scratch, on_match);
    }
    const std::size_t end = local.size();
    if (end != first) hot_.sent[qos_index(m->qos_level())].fetch_add(end - first);
    // By index and through the handler object itself: a nested publish may reallocate the
    // vector, but the shared_ptr keeps the handler where it is until `pop` runs.
    for (std::size_t i = first; i < end; ++i) {
      const local_handler& h = *local[i];
      h(m);
    }
    if constexpr (clustered) {
      if (!remote && !::mqttbroker::cluster::node_local_topic(m->topic())) {
        if constexpr (durable && std::is_same_v<decltype(cluster_.publish(m)), bool>) {
          if (cluster_.publish(m)) cluster_pending_here() = true;
        } else {
          cluster_.publish(m);
        }
      }
    }
    return n;
  }

  /// What a resend of `o` after a restart must repeat (storage::delivery), its identifiers borrowed.
  static storage::delivery delivery_of(const session::outgoing& o) noexcept {
    return storage::delivery{o.qos_level, o.retain, o.subscription_ids.begin(), o.subscription_ids.size()};
  }
  /// A message recorded as in flight, or queued, in the store's own form of the call.
  template <class Store>
  static void store_send(Store& st, std::string_view client_id, std::uint16_t packet_id, const message_ptr& m,
                         const storage::delivery& d) {
    if constexpr (storage::detail::has_send_delivery<Store>::value)
      st.send(client_id, packet_id, m, d);
    else
      st.send(client_id, packet_id, m, d.qos_level);
  }
  template <class Store>
  static void store_enqueue(Store& st, std::string_view client_id, const message_ptr& m, const storage::delivery& d) {
    if constexpr (storage::detail::has_enqueue_delivery<Store>::value)
      st.enqueue(client_id, m, d);
    else
      st.enqueue(client_id, m, d.qos_level);
  }

  /// authorize_read()'s answer for giving `m` to `rec`, whose lock (or the exclusive state lock)
  /// is held: the session's client as it last connected, also while it is offline. A session
  /// restored by a store whose client has not connected since is not checked: its user is unknown.
  /// A refusal is counted (deliveries_denied).
  bool may_read(const session_type& rec, const message& m) {
    if constexpr (session_type::keeps_origin) {
      if constexpr (hooks::has_reads_checked_v<hooks_type>) {
        if (!hooks_.reads_checked()) return true;
      }
      if (!rec.owner_known) return true;
      hooks::client_info who = rec.owner_info(rec.state.client_id());
      if (const link_type* c = rec.conn.get()) c->origin_into(who);
      if (hooks_.authorize_read(who, m)) return true;
      hot_.denied.fetch_add(1);
      return false;
    } else {
      (void)rec;
      (void)m;
      return true;
    }
  }

  /// Offers `m` to a client session. state_mutex_ held, shared or exclusive; the session's own
  /// lock serialises publishers that reach the same session from several threads.
  /// `share_group`: the group it comes through, if any. False when the session did not take it
  /// (not authorised to read it, or dropped by its limits).
  bool deliver(session_type* rec, const message_ptr& m, const router::delivery& d, link_type* reader, steady_time now,
               std::uint32_t share_group = 0) {
    std::lock_guard<session_mutex_type> session_lock(rec->mutex);
    session::outgoing o;
    o.msg = m;
    o.share_group = share_group;
    o.qos_level = std::min(m->qos_level(), d.qos_level);  // [MQTT-3.8.4-8] min(publish, granted)
    o.retain = d.retain_as_published && m->retain();  // 3.1.1 [MQTT-3.3.1-9]; 5.0 Retain As Published [MQTT-3.3.1-12]
    for (std::uint32_t id : d.identifiers) o.subscription_ids.push_back(id);
    link_type* c = rec->conn.get();
    if constexpr (hooks::has_authorize_read_v<hooks_type>) {
      if (!may_read(*rec, *m)) return false;
    }
    // A client that stopped reading loses QoS 0 messages, not everyone's memory.
    if (o.qos_level == codec::qos::at_most_once && c != nullptr && opts_.max_queued_bytes != 0 &&
        c->backlog_bytes() + outbox_bytes(*rec) > opts_.max_queued_bytes) {
      hot_.dropped.fetch_add(1);
      return false;
    }
    admission adm;
    if constexpr (durable) {
      // offer() moves `o` into the queue: what the store keeps is taken from `m` and `d`.
      const storage::delivery kept_as{o.qos_level, o.retain, d.identifiers.data(), d.identifiers.size()};
      adm = rec->state.offer(o, c != nullptr, [&](const session::outgoing& gone) {
        if (gone.qos_level != codec::qos::at_most_once && kept(*rec))
          record([&](auto& st) { st.drop(rec->state.client_id(), gone.msg); });
      });
      if (kept_as.qos_level != codec::qos::at_most_once && kept(*rec) && adm != admission::dropped) {
        if (adm == admission::send)
          record([&](auto& st) { store_send(st, rec->state.client_id(), o.packet_id, m, kept_as); });
        else
          record([&](auto& st) { store_enqueue(st, rec->state.client_id(), m, kept_as); });
      }
    } else {
      adm = rec->state.offer(o, c != nullptr);
    }
    if (adm == admission::dropped) {
      hot_.dropped.fetch_add(1);
      return false;
    }
    if (adm == admission::send) {
      hot_.sent[qos_index(o.qos_level)].fetch_add(1);
      send_to(rec, o, now);
    }
    if (reader != nullptr && !reader->pace_target_ && c != nullptr && c != reader &&
        behind(*rec, *c, reader->last_progress(), 1)) {
      // The reader stops after this packet (see on_packet's result) and waits for this client.
      reader->pace_target_ = detail::ref_ptr<session_type>(rec);
    }
    return true;
  }

  /// Offers `m` to the one member of a shared subscription's group that the strategy picks, with
  /// that member's own options: its granted QoS [MQTT-4.8.2-3], Retain As Published and
  /// Subscription Identifier. Members online come first; an offline member gets it (queued in its
  /// session) only when none is online. `from` is the publishing session, if any. state_mutex_
  /// held, shared or exclusive (which keeps every member's `conn` as it is).
  void deliver_shared(const group_type& g, const message_ptr& m, const session_type* from, link_type* reader,
                      steady_time now) {
    const auto* chosen = g.group.choose(share_strategy_,
                                        from ? std::string_view(from->state.client_id()) : std::string_view(),
                                        [](session_type* member) { return member->conn.get() != nullptr; });
    if (chosen == nullptr) return;
    router::delivery d;
    d.qos_level = chosen->sub.options.max_qos;
    d.retain_as_published = chosen->sub.options.retain_as_published;
    if (chosen->sub.identifier != 0) d.identifiers.push_back(chosen->sub.identifier);
    deliver(chosen->subscriber, m, d, reader, now, g.id);
  }

  /// A session ends (not merely disconnects): what it still owes that came through a shared
  /// subscription goes to another member of that group, as 5.0 section 4.8.2 recommends for QoS 1:
  /// the queued messages (never sent) and the QoS 1 messages in flight. A QoS 2 message whose
  /// PUBLISH went out stays with the ended session and is lost with it: it must go to no other
  /// client [MQTT-4.8.2-5]. A group that went with its last member takes nothing. Called after the
  /// session left its groups. state_mutex_ held exclusively.
  void hand_over_shared(session_type& rec, steady_time now) {
    if (groups_by_id_.empty()) return;
    const std::uint32_t now_s = clock_seconds(now);
    rec.state.for_each_owed([&](const session::outgoing& o, const session::phase* sent) {
      if (o.share_group == 0 || !o.msg) return;
      if (sent != nullptr && *sent != session::phase::awaiting_puback) return;  // [MQTT-4.8.2-5]
      if (o.msg->expired(now_s)) {  // [MQTT-3.3.2-5] its Message Expiry Interval has passed
        hot_.expired.fetch_add(1);
        return;
      }
      const auto it = groups_by_id_.find(o.share_group);
      if (it != groups_by_id_.end()) deliver_shared(*it->second, o.msg, nullptr, nullptr, now);
    });
  }

  /// Adds `rec`'s subscription to `filter` (validated): to the router, or for `$share/...` to its
  /// group, made on first use; the session remembers it either way. True when it is new.
  /// state_mutex_ held exclusively.
  bool add_subscription(session_type& rec, std::string_view filter, const router::subscription& sub) {
    bool is_new = false;
    if (topic::is_shared_filter(filter)) {
      is_new = join_group(rec, filter, sub);
    } else if constexpr (session_feeds) {
      // The session's fed subscriptions are the router's under its feed: a replacement that
      // changes which it is moves it.
      const bool feed = fed(rec, sub.options);
      const subscriber* to = feed ? static_cast<const subscriber*>(&feed_of(rec)) : static_cast<const subscriber*>(&rec);
      const subscriber* other = feed ? static_cast<const subscriber*>(&rec)
                                     : (rec.extras ? static_cast<const subscriber*>(&rec.extras->feed) : nullptr);
      const bool moved = other != nullptr && route_unsubscribe(filter, other);
      is_new = route_subscribe(filter, to, sub) && !moved;
    } else {
      is_new = route_subscribe(filter, static_cast<subscriber*>(&rec), sub);
    }
    rec.state.remember_subscription(filter, {sub.options, sub.identifier});
    return is_new;
  }
  /// Whether a subscription of `rec` with `options` (not shared) is fed by the cluster.
  bool fed(const session_type& rec, const codec::subscribe_options& options) const noexcept {
    if constexpr (session_feeds) {
      return options.max_qos != codec::qos::at_most_once && !options.no_local && kept(rec) && cluster_.feeds_sessions();
    } else {
      (void)rec;
      (void)options;
      return false;
    }
  }
  const feed_subscriber& feed_of(session_type& rec) {
    feed_subscriber& f = rec.more().feed;
    f.owner = &rec;
    return f;
  }

  /// Takes `rec`'s subscription to `filter` out of the router, or out of its group, which goes
  /// with its last member. The session's own record of it is the caller's. state_mutex_ held
  /// exclusively.
  void remove_route(session_type& rec, std::string_view filter) {
    if (topic::is_shared_filter(filter)) {
      const auto it = groups_.find(filter);
      if (it != groups_.end()) {
        group_type& g = *it->second;
        g.group.leave(&rec);
        if (g.group.empty()) drop_group(it);
        return;
      }
    }
    if (route_unsubscribe(filter, static_cast<subscriber*>(&rec))) return;
    if constexpr (session_feeds) {
      if (rec.extras) route_unsubscribe(filter, static_cast<subscriber*>(&rec.extras->feed));
    }
  }

  /// The router's subscribe and unsubscribe for a subscriber of this node (a session, an
  /// in-process one), with the cluster told of the filters that come and go.
  bool route_subscribe(std::string_view filter, const subscriber* s, const router::subscription& sub) {
    const bool is_new = router_.subscribe(filter, s, sub);
    if (is_new) note_interest(filter, true);
    return is_new;
  }
  bool route_unsubscribe(std::string_view filter, const subscriber* s) {
    const bool was = router_.unsubscribe(filter, s);
    if (was) note_interest(filter, false);
    return was;
  }
  /// Counts this node's subscriptions per filter; the cluster hears of a filter's first and its
  /// last. state_mutex_ held exclusively.
  void note_interest(std::string_view filter, bool added) {
    if constexpr (clustered) {
      if (added) {
        auto it = interest_.find(filter);
        if (it == interest_.end()) it = interest_.emplace(std::string(filter), 0).first;
        if (it->second++ == 0) cluster_.interest(filter, true);
      } else {
        const auto it = interest_.find(filter);
        if (it == interest_.end()) return;
        if (--it->second == 0) {
          interest_.erase(it);
          cluster_.interest(filter, false);
        }
      }
    } else {
      (void)filter;
      (void)added;
    }
  }

  /// Whether a connected session's client is more than the pacing thresholds behind (divided by
  /// `divisor`: 2 for the low-water mark) and still moving. rec->mutex held.
  bool behind(const session_type& rec, const link_type& c, steady_time now, std::size_t divisor) const {
    if (!opts_.pace_publishers) return false;
    const std::size_t backlog = c.backlog_bytes() + outbox_bytes(rec);
    if (backlog <= pacing_bytes_ / divisor && rec.state.queued_count() <= pacing_messages_ / divisor) return false;
    // A client that has neither read nor sent anything for a while is stuck, not slow: pausing
    // everyone for it would let one client stall the others.
    return now - c.last_progress() < opts_.stuck_client_timeout;
  }

  /// A write to `l` completed or its session's queue moved: resumes the readers paced on it once
  /// it is half-way back under the thresholds. On l's executor.
  void resume_paced_readers(link_type& l, steady_time now) {
    session_type* rec = l.session();
    if (rec == nullptr || !rec->has_paced.load(std::memory_order_relaxed)) return;
    std::vector<detail::ref_ptr<link_type>> wake;
    {
      session_guard lk(*this, *rec);
      if (rec->conn.get() == &l && behind(*rec, l, now, 2)) return;
      wake.swap(rec->more().paced);
      rec->has_paced.store(false, std::memory_order_relaxed);
    }
    resume_all(wake);
  }

  static void resume_all(std::vector<detail::ref_ptr<link_type>>& readers) {
    for (auto& r : readers) r->post(link_event::resume);
    readers.clear();
  }

  /// Payload bytes admitted for the connection's thread and not yet taken by it. state_mutex_ held.
  static std::size_t outbox_bytes(const session_type& rec) noexcept {
    if constexpr (locking_type::thread_safe)
      return rec.outbox.bytes;
    else
      return 0;
  }

  static void clear_outbox(session_type& rec) noexcept {
    if constexpr (locking_type::thread_safe) {
      rec.outbox.items.clear();
      rec.outbox.bytes = 0;
      rec.outbox.pump_scheduled = false;
    }
  }

  /// What was just recorded must be durable before `l` writes again: a QoS 2 PUBLISH whose
  /// `send` (else, after a crash, it would go again under another packet identifier and the client
  /// would take it twice), a PUBREL whose PUBREC (else the PUBLISH would go again after the client
  /// completed it). On l's executor.
  void gate_writes(link_type& l) {
    if constexpr (durable) {
      l.write_gate = gate_pending;  // its ticket comes with the write (writes_may_go)
    } else {
      (void)l;
    }
  }
  static constexpr std::uint64_t gate_pending = ~std::uint64_t{0};

  /// Queues `o` on `l`; a QoS 2 one to a kept session waits for its record (gate_writes). On l's
  /// executor.
  void send_durable(link_type& l, const session_type& rec, const session::outgoing& o, steady_time now) {
    // Gated first: queueing may write at once outside a flush_scope.
    if (o.qos_level == codec::qos::exactly_once && kept(rec)) gate_writes(l);
    l.send_publish(o, now);
  }

  /// Hands an admitted PUBLISH to the session's connection. state_mutex_ held.
  void send_to(session_type* rec, session::outgoing& o, steady_time now) {
    if constexpr (locking_type::thread_safe) {
      // Another thread owns the connection: leave the message in the session's outbox and have
      // the connection's own thread pump it. Everything admitted goes out through the outbox, in
      // admission order, so a message admitted later on the connection's own thread (pump())
      // can never overtake one admitted earlier here [MQTT-4.6.0-2].
      (void)now;
      rec->outbox.bytes += o.msg->payload().size();
      rec->outbox.items.push_back(std::move(o));
      if (!rec->outbox.pump_scheduled) {
        rec->outbox.pump_scheduled = true;
        rec->conn->post(link_event::pump);
      }
    } else {
      send_durable(*rec->conn, *rec, o, now);
    }
  }

  void fill(link_type& l, steady_time now) {
    session_type* rec = l.session();
    if (rec == nullptr || !l.is_open()) return;
    session_guard lk(*this, *rec);
    if (rec->conn.get() != &l) return;  // taken over since the pump was posted
    if constexpr (locking_type::thread_safe) {
      for (const session::outgoing& o : rec->outbox.items) send_durable(l, *rec, o, now);
      clear_outbox(*rec);
    }
    const std::uint32_t now_s = clock_seconds(now);
    auto discarded = [&](const session::outgoing& gone, session::discard why) {
      (why == session::discard::expired ? hot_.expired : hot_.dropped).fetch_add(1);
      if (gone.qos_level != codec::qos::at_most_once && kept(*rec))
        record([&](auto& st) { st.drop(rec->state.client_id(), gone.msg); });
    };
    while (auto o = rec->state.next_ready(now_s, discarded)) {
      hot_.sent[qos_index(o->qos_level)].fetch_add(1);
      if (o->qos_level != codec::qos::at_most_once && kept(*rec))
        record([&](auto& st) { store_send(st, rec->state.client_id(), o->packet_id, o->msg, delivery_of(*o)); });
      send_durable(l, *rec, *o, now);
    }
    // Retained messages go out while the transport keeps up and the window has room; the rest
    // wait for acknowledgements or for the write to drain (on_drained).
    while (rec->has_retained_backlog() && l.backlog_bytes() < write_pacing_bytes) {
      auto& backlog = rec->extras->retained_backlog;
      if (backlog.front().qos_level != codec::qos::at_most_once &&
          rec->state.inflight_count() >= rec->state.send_window())
        break;
      session::outgoing o = std::move(backlog.front());
      backlog.pop_front();
      if (o.msg->expired(now_s)) {  // expired while it waited for the window [MQTT-3.3.2-5]
        hot_.expired.fetch_add(1);
        continue;
      }
      const auto adm = rec->state.offer(o, true);
      if (adm == admission::dropped) hot_.dropped.fetch_add(1);  // too large for this client
      if (adm == admission::send) {
        hot_.sent[qos_index(o.qos_level)].fetch_add(1);
        if (o.qos_level != codec::qos::at_most_once && kept(*rec))
          record([&](auto& st) { store_send(st, rec->state.client_id(), o.packet_id, o.msg, delivery_of(o)); });
        send_durable(l, *rec, o, now);
      }
    }
  }

  // ---- sessions

  /// Holds a will until `due`; a reconnect or the session's end comes first to cancel or publish
  /// it. Returns `due` when it is now the earliest delayed will. state_mutex_ held.
  std::optional<steady_time> delay_will(session_type& rec, message_ptr will, steady_time due) {
    auto& x = rec.more();
    x.pending_will = std::move(will);
    const std::uint64_t generation = ++x.will_generation;
    const bool earliest = will_queue_.empty() || due < will_queue_.begin()->first;
    will_queue_.emplace(due, std::make_pair(rec.state.client_id(), generation));
    if (earliest) return due;
    return std::nullopt;
  }

  /// What a resumed session needs on another node (hand_over_to_cluster). state_mutex_ held.
  ::mqttbroker::cluster::session_handover export_session(const session_type& rec, steady_time now) const {
    using handed = ::mqttbroker::cluster::session_handover;
    handed h;
    h.expiry_seconds = rec.expiry.count();
    for (const auto& [filter, sub] : rec.state.subscriptions()) h.subscriptions.push_back({filter, sub.options, sub.identifier});
    const std::uint32_t now_s = clock_seconds(now);
    rec.state.for_each_owed([&](const session::outgoing& o, const session::phase* p) {
      handed::delivery d;
      if (p == nullptr && (!o.msg || o.msg->expired(now_s))) return;  // [MQTT-3.3.2-5] not sent, expired
      d.msg = o.msg;
      if (o.msg && o.msg->expires_at() != 0) d.expires_in = o.msg->expired(now_s) ? 1 : o.msg->expires_at() - now_s;
      d.qos_level = o.qos_level;
      d.retain = o.retain;
      d.subscription_ids.assign(o.subscription_ids.begin(), o.subscription_ids.end());
      d.packet_id = o.packet_id;
      d.at = p == nullptr ? handed::state::queued
                          : *p == session::phase::awaiting_pubcomp ? handed::state::pubrec_received : handed::state::sent;
      h.messages.push_back(std::move(d));
    });
    rec.state.for_each_received([&](std::uint16_t id) { h.received.push_back(id); });
    return h;
  }

  /// Removes a session and its subscriptions; what it owes through shared subscriptions goes to
  /// other members unless `shared_to_others` is false (the session moves to another node).
  /// state_mutex_ held.
  void remove_session(session_type& rec, steady_time now, bool shared_to_others = true) {
    drop_session_subscriptions(rec);
    if (shared_to_others) hand_over_shared(rec, now);
    record([&](auto& st) {
      // Handed to another node (hand_over_to_cluster): it goes on there, and the store that can
      // tell keeps what it holds for it there.
      if constexpr (storage::detail::has_session_moved<storage_type>::value) {
        if (!shared_to_others) return st.session_moved(rec.state.client_id());
      }
      st.erase_session(rec.state.client_id());
    });
    sessions_.erase(rec.state.client_id());
  }

  /// Moves the readers paced behind `rec` into `out`, to be resumed once no lock is held: its
  /// client is gone from this session. state_mutex_ held.
  static void take_paced_readers(session_type& rec, std::vector<detail::ref_ptr<link_type>>& out) {
    std::lock_guard<typename session_type::session_mutex_type> session_lock(rec.mutex);
    if (rec.extras) out.swap(rec.extras->paced);
    rec.has_paced.store(false, std::memory_order_relaxed);
  }

  // ---- the storage

  using admission = session::admission;

  /// Whether a session outlives its connection, so that the storage keeps what it owes.
  static bool kept(const session_type& rec) noexcept { return rec.expiry.count() != 0; }

  /// Hands a change to a durable storage (compiled out otherwise) and notes, for the packet being
  /// handled on this thread, that its acknowledgement has a change to wait for (unless
  /// `acknowledged` is false: a retained message, which no acknowledgement waits for).
  template <class F>
  void record(F&& f, bool acknowledged = true) {
    if constexpr (durable) {
      hold_storage();
      f(storage_);
      if (acknowledged) recorded_here() = true;
    } else {
      (void)f;
      (void)acknowledged;
    }
  }
  /// With one thread (locking::none) and a store that can be held, the store is locked once per
  /// flush scope (a read's packets, an event) rather than once per call; the scope lets it go
  /// after its writes. Outside a scope (a host's own call), or on a second broker's store on the
  /// same thread, each call locks as before.
  static constexpr bool holds_storage =
      durable && !locking_type::thread_safe && ::mqttbroker::storage::detail::has_hold<storage_type>::value;
  void hold_storage() {
    if constexpr (holds_storage) {
      auto& p = link_type::pending();
      if (p.depth == 0 || p.held_storage != nullptr || !storage_.hold()) return;
      p.held_storage = &storage_;
      p.let_go = [](void* s) { static_cast<storage_type*>(s)->let_go(); };
    }
  }
  /// Whether record() was called on this thread since the flag was last taken.
  static bool& recorded_here() noexcept {
    static thread_local bool recorded = false;
    return recorded;
  }
  static bool take_recorded() noexcept {
    bool recorded = std::exchange(recorded_here(), false);
    if constexpr (clustered) recorded = take_cluster_pending() || recorded;
    return recorded;
  }
  /// Whether this thread's routing since the flag was last taken gave the cluster a message it
  /// keeps and reports kept through the storage's commits (a cluster whose publish() says so,
  /// with a durable storage): its acknowledgement waits for that commit, so that a message
  /// acknowledged to its publisher is not lost with this node.
  static bool& cluster_pending_here() noexcept {
    static thread_local bool pending = false;
    return pending;
  }
  static bool take_cluster_pending() noexcept { return std::exchange(cluster_pending_here(), false); }

  /// Sends `a` to `l` now, or holds it until the commit of what was recorded for it (and until
  /// the acknowledgements held before it go) [MQTT-4.6.0-2]. On l's executor.
  void acknowledge(link_type& l, held_ack a, steady_time now) {
    if constexpr (durable) {
      const bool recorded = take_recorded();
      auto& q = l.held;
      if (recorded) a.ticket = storage_.commit();
      // Queued when it waits for a commit or behind acknowledgements that do; then the queue
      // sends it, in its turn, and it is not sent here as well.
      if (recorded || (q && !q->empty())) {
        if (!q) q = std::make_unique<detail::fifo<held_ack>>();
        q->push_back(std::move(a));
        release_acks(l, now);
        return;
      }
    }
    send_ack(l, a, now);
  }

  /// Sends the held acknowledgements whose commits are durable, in order. On l's executor.
  void release_acks(link_type& l, steady_time now) {
    if constexpr (durable) {
      auto& q = l.held;
      for (;;) {
        bool failed = false;
        {
          std::lock_guard<mutex_type> lk(state_mutex_);
          if (!q || q->empty()) return;
          if (q->front().ticket <= committed_) {
            failed = commit_failed(q->front().ticket);
          } else if (!settled_early(q->front())) {
            await_commit(l);
            if (q->front().settles) await_settle(l);
            return;
          }
        }
        if (!failed && q->front().route) {
          held_ack& f = q->front();
          // QoS 2 in: routed only now that its identifier and the message are durable.
          const std::size_t n = route_received(std::exchange(f.route, message_ptr()), l.session(), f.packet_id, now);
          if (n == 0 && l.version() == codec::protocol_version::v5 && f.reason == reason_code::success)
            f.reason = reason_code::no_matching_subscribers;
          if constexpr (clustered) {
            // The cluster keeps it now: the PUBREC waits for that too (cluster_pending_here()).
            if (take_cluster_pending()) {
              f.ticket = storage_.commit();
              continue;
            }
          }
        }
        held_ack a = std::move(q->front());
        q->pop_front();
        if (failed) {
          refuse_ack(l, std::move(a), now);
          if (l.is_closing()) return;  // what it still holds is settled when it closes
          continue;
        }
        send_ack(l, a, now);
      }
    } else {
      (void)l;
      (void)now;
    }
  }

  /// Whether a QoS 1 PUBACK owes nothing to its commit: the one message it made the broker
  /// responsible for is held by no session and no store any more (the acknowledgement's own
  /// reference is the last), as every kept session that took it has completed it. Its records
  /// may not be durable yet; a crash then delivers it again, which QoS 1 allows.
  static bool settled_early(const held_ack& a) noexcept {
    if (!a.settles || a.settles.use_count() != 1) return false;
    // The last holder let go on another thread: what it recorded happened before.
    std::atomic_thread_fence(std::memory_order_acquire);
    return true;
  }

  /// Whether `ticket` is in a range the storage reported failed. state_mutex_ held.
  bool commit_failed(std::uint64_t ticket) const noexcept {
    if (ticket == 0) return false;  // it waited only for those before it
    for (const auto& r : failed_)
      if (ticket >= r.first && ticket <= r.second) return true;
    return false;
  }

  /// An acknowledgement whose change could not be made durable: nothing that was not stored is
  /// acknowledged as stored. A 5.0 PUBACK or PUBREC says Quota exceeded (0x97) and the client
  /// may send again; 3.1.1 has no negative acknowledgement and a SUBACK, UNSUBACK or PUBCOMP
  /// none that fits, so the connection ends (5.0: DISCONNECT 0x97) and the client sends again
  /// after it reconnects. On l's executor.
  void refuse_ack(link_type& l, held_ack a, steady_time now) {
    if (a.route) {
      // QoS 2 in: not accepted, so not routed, and its identifier is free for the PUBLISH the
      // client sends again (5.0 [MQTT-4.3.3-9]; 3.1.1 resends it after reconnecting).
      if (session_type* rec = l.session()) {
        {
          session_guard lk(*this, *rec);
          rec->state.on_pubrel(a.packet_id);
        }
        if (kept(*rec)) record([&](auto& st) { st.release(rec->state.client_id(), a.packet_id); }, false);
      }
      a.route = message_ptr();
    }
    log(log_level::warning, "client '{}': packet {} not acknowledged: not kept (a full storage, a cluster's stream away)",
        l.client_id(), a.packet_id);
    if (l.version() == codec::protocol_version::v5 &&
        (a.type == codec::packet_type::puback || a.type == codec::packet_type::pubrec)) {
      a.reason = reason_code::quota_exceeded;
      return send_ack(l, a, now);
    }
    l.close(reason_code::quota_exceeded, true, false, now);
  }

  /// Routes a received QoS 2 message whose identifier and message are durable, then notes it
  /// routed; a storage that can makes the two durable in one piece, so that a crash never keeps
  /// half a routing and then routes the message again.
  std::size_t route_received(message_ptr m, session_type* from, std::uint16_t packet_id, steady_time now) {
    if constexpr (storage::detail::has_atomic<storage_type>::value) {
      struct span {
        storage_type& st;
        std::uint64_t token;
        ~span() { st.end_atomic(token); }
      } whole{storage_, storage_.begin_atomic()};
      const std::size_t n = publish_message(std::move(m), from, now, true, nullptr);
      if (from != nullptr) note_routed(*from, packet_id);
      return n;
    } else {
      const std::size_t n = publish_message(std::move(m), from, now, true, nullptr);
      if (from != nullptr) note_routed(*from, packet_id);
      return n;
    }
  }

  /// A received QoS 2 message went to its subscribers: a storage that keeps unrouted messages
  /// keeps only the identifier from now on. After the routing's own changes were recorded.
  void note_routed(session_type& rec, std::uint16_t packet_id) {
    if constexpr (durable) {
      if constexpr (storage::detail::has_routed<storage_type>::value) {
        if (kept(rec)) record([&](auto& st) { st.routed(rec.state.client_id(), packet_id); }, false);
      } else {
        (void)rec;
        (void)packet_id;
      }
    } else {
      (void)rec;
      (void)packet_id;
    }
  }

  void send_ack(link_type& l, const held_ack& a, steady_time now) {
    switch (a.type) {
      case codec::packet_type::puback: return l.send(codec::puback{a.packet_id, a.reason, {}}, now);
      case codec::packet_type::pubrec: return l.send(codec::pubrec{a.packet_id, a.reason, {}}, now);
      case codec::packet_type::pubcomp: return l.send(codec::pubcomp{a.packet_id, a.reason, {}}, now);
      case codec::packet_type::suback: {
        codec::suback ack;
        ack.packet_id = a.packet_id;
        ack.reasons = a.reasons;
        return l.send(ack, now);
      }
      case codec::packet_type::unsuback: {
        codec::unsuback ack;
        ack.packet_id = a.packet_id;
        ack.reasons = a.reasons;
        return l.send(ack, now);
      }
      default: return;
    }
  }

  void drop_session_subscriptions(session_type& rec) {
    for (const auto& s : rec.state.subscriptions()) remove_route(rec, s.first);
    rec.state.clear_subscriptions();
  }

  /// `rec` joins the group of `filter` (`$share/{ShareName}/{filter}`), made now if it has no
  /// members yet. True when `rec` is a new member. state_mutex_ held exclusively.
  bool join_group(session_type& rec, std::string_view filter, const router::subscription& sub) {
    auto it = groups_.find(filter);
    if (it == groups_.end()) {
      std::error_code ec;
      const topic::parsed_filter p = topic::parse_filter(filter, topic_limits(), ec);
      // Callers validated it; one that is not shared after all is an ordinary literal filter.
      if (ec || !p.is_shared()) return route_subscribe(filter, static_cast<subscriber*>(&rec), sub);
      std::uint32_t id = next_group_id_;
      do {
        ++id;
      } while (id == 0 || groups_by_id_.count(id) != 0);  // unique even after the counter wraps
      auto g = std::make_unique<group_type>(filter, static_cast<std::size_t>(p.filter.data() - filter.data()), id);
      // The group's own entry: the router's options do not apply to it, its members' do.
      router_.subscribe(g->filter(), static_cast<subscriber*>(g.get()), router::subscription{});
      try {
        groups_by_id_.emplace(id, g.get());
        it = groups_.emplace(std::string_view(g->whole_filter), std::move(g)).first;
        note_interest(it->first, true);
      } catch (...) {
        groups_by_id_.erase(id);
        if (g) router_.unsubscribe(g->filter(), static_cast<subscriber*>(g.get()));
        throw;
      }
      next_group_id_ = id;
    }
    group_type& g = *it->second;
    try {
      return g.group.join(&rec, sub, topic::detail::level_hash(rec.state.client_id()));
    } catch (...) {
      if (g.group.empty()) drop_group(it);
      throw;
    }
  }

  template <class It>
  void drop_group(It it) {
    group_type& g = *it->second;
    note_interest(g.whole_filter, false);
    router_.unsubscribe(g.filter(), static_cast<subscriber*>(&g));
    groups_by_id_.erase(g.id);
    groups_.erase(it);
  }

  /// The options' session limits, one copy that every session refers to.
  static session::limits make_session_limits(const broker_options& o) {
    session::limits l;
    l.max_inflight = o.max_inflight;
    l.max_queued_messages = o.max_queued_messages;
    l.max_queued_bytes = o.max_queued_bytes;
    l.drop_oldest = o.queue_overflow == overflow_policy::drop_oldest;
    l.queue_qos0_offline = o.queue_qos0_offline;
    return l;
  }

  /// Session Expiry as a session keeps it: 32 bits, as in 5.0, where 0xFFFFFFFF means never.
  static std::chrono::duration<std::uint32_t> stored_expiry(std::chrono::seconds s) noexcept {
    return std::chrono::duration<std::uint32_t>(static_cast<std::uint32_t>(std::min<std::int64_t>(s.count(), 0xFFFFFFFF)));
  }

  /// A client identifier no session uses. state_mutex_ held.
  std::string make_client_id() {
    for (;;) {
      std::string id = client_id_prefix_ + std::to_string(++next_client_number_);
      if (sessions_.find(id) == sessions_.end()) return id;  // a client may have chosen it already
    }
  }

  static constexpr std::size_t write_pacing_bytes = 64 * 1024;
  using router_type = router::subscription_router<const subscriber*>;

  broker_options opts_;
  std::size_t pacing_bytes_ = 0;  // pacing thresholds, below the queue limits
  std::size_t pacing_messages_ = 0;
  session::queue_budget queue_budget_;  // before the limits and sessions, which refer to it
  std::uint64_t budget_reported_ = 0;  // report_queue_budget(), on the sweep's thread only
  steady_time budget_reported_at_{};
  session::limits session_limits_;      // before the sessions, which refer to it
  MQTTBROKER_NO_UNIQUE_ADDRESS hooks_type hooks_;
  MQTTBROKER_NO_UNIQUE_ADDRESS storage_type storage_;
  MQTTBROKER_NO_UNIQUE_ADDRESS cluster_type cluster_;
  // state_mutex_: this node's subscriptions per filter, while clustered (note_interest()).
  std::map<std::string, std::size_t, std::less<>> interest_;
  // state_mutex_, with a cluster that owns client identifiers: clients whose connections here wait
  // for their claims, and the hand-overs other nodes asked for meanwhile (end_claim()).
  struct deferred_handover {
    bool discard;
    handover_done done;
  };
  struct pending_claim {
    std::size_t count = 0;
    std::vector<deferred_handover> deferred;
  };
  std::unordered_map<std::string, pending_claim> claiming_;
  std::uint64_t committed_ = 0;                    // state_mutex_: the latest durable ticket
  std::vector<detail::ref_ptr<link_type>> holding_;  // state_mutex_: links waiting for a commit
  std::vector<detail::ref_ptr<link_type>> settling_;  // state_mutex_: and for a delivery's end (wake_settling)
  // state_mutex_: tickets the storage could not make durable, as ranges (storage_commit_failed)
  std::vector<std::pair<std::uint64_t, std::uint64_t>> failed_;
  static constexpr std::size_t max_failed_ranges = 256;
  MQTTBROKER_NO_UNIQUE_ADDRESS mutable mutex_type state_mutex_;
  // Every open link until it closes, and every session by client identifier (the key views the
  // record's own copy of it): an element each, no node or key copy per client.
  detail::owning_list<link_type> links_;
  std::unordered_map<std::string_view, detail::ref_ptr<session_type>> sessions_;
  std::unordered_map<std::uint64_t, std::unique_ptr<local_subscriber>> local_subs_;
  router_type router_;
  // Shared subscription groups: by whole filter (the key views the group's own copy) and by the
  // number their deliveries carry. A group is in the router while it has members.
  std::unordered_map<std::string_view, std::unique_ptr<group_type>> groups_;
  std::unordered_map<std::uint32_t, group_type*> groups_by_id_;
  std::uint32_t next_group_id_ = 0;
  MQTTBROKER_NO_UNIQUE_ADDRESS shared_strategy_type share_strategy_;
  router::retained_store retained_;
  // Delayed wills by due time: (client identifier, the session's will generation then). An entry
  // whose generation moved on (a reconnect, a newer will) is skipped when it comes due.
  std::multimap<steady_time, std::pair<std::string, std::uint64_t>> will_queue_;
  std::function<void(steady_time)> will_scheduled_;
  std::function<void()> stop_done_;  // state_mutex_
  broker_stats stats_;               // state_mutex_, but for the counters below
  /// Counted on the routing path, which may hold the state lock only shared.
  struct hot_counters {
    using counter = typename locking_type::template counter_type<std::uint64_t>;
    counter received[3]{}, sent[3]{};  // by QoS
    counter dropped{}, pauses{}, expired{}, denied{};
    counter refused_auth{}, refused_connect{};  // CONNECTs refused: by authentication, for anything else
  } hot_;
  static constexpr std::size_t qos_index(codec::qos q) noexcept { return static_cast<std::size_t>(q); }  // 0 to 2: validated
  std::uint64_t next_local_id_ = 0;
  std::uint64_t next_client_number_ = 0;  // state_mutex_
  // Assigned identifiers begin with a number of this broker's run: unique across the nodes of a
  // cluster, where one would otherwise take over another node's client of the same number.
  std::string client_id_prefix_ = fmt::format("mqttbroker-{:08x}-", std::random_device{}());
  std::atomic<bool> stopping_{false};     // read by links on any thread
};

}  // namespace engine
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_ENGINE_CORE_HPP
