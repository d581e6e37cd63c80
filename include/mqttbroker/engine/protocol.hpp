#ifndef MQTTBROKER_ENGINE_PROTOCOL_HPP
#define MQTTBROKER_ENGINE_PROTOCOL_HPP

#include <mqttbroker/codec/decoder.hpp>
#include <mqttbroker/codec/encoder.hpp>
#include <mqttbroker/codec/packets.hpp>
#include <mqttbroker/codec/properties.hpp>
#include <mqttbroker/codec/utf8.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/detail/ref_counted.hpp>
#include <mqttbroker/engine/core.hpp>
#include <mqttbroker/engine/link.hpp>
#include <mqttbroker/error.hpp>
#include <mqttbroker/hooks/hooks.hpp>
#include <mqttbroker/log.hpp>
#include <mqttbroker/message.hpp>
#include <mqttbroker/options.hpp>
#include <mqttbroker/router/subscriptions.hpp>
#include <mqttbroker/session/state.hpp>
#include <mqttbroker/topic/shared.hpp>
#include <mqttbroker/topic/validate.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace engine {

/// The protocol engine: everything a server decides, without I/O. It keeps the session registry,
/// the subscriptions and the retained messages, and handles what happens to connections (a
/// decoded packet, a deadline, a write that progressed, a close) at the time it is given. It acts
/// through the links: packets are queued on a link (no call out), and a link's outlet is asked to
/// write once per batch, to close, or to run an event on the link's own thread. Timers are the
/// caller's: it calls sweep_connections() and expire_sessions() periodically and release_wills()
/// at next_will_due() (engine::core).
///
/// `Policies` gives `locking` (the engine's locks and counters) and `hooks`.
template <class Policies>
class protocol : public core<Policies> {
  using base = core<Policies>;

 public:
  using typename base::hooks_type;
  using typename base::link_type;
  using typename base::locking_type;
  using typename base::session_type;
  using typename base::steady_time;
  using typename base::storage_type;

  using base::base;
  using base::pump;

  // ---- connections: called by the server on the link's own executor

  /// A new connection: false when it is over max_connections, or over the limit of the listener
  /// it came through (link::set_listener, limit_listener); counted, and the caller closes it.
  /// Otherwise the engine holds it until on_closed(), and its CONNECT deadline runs from `now`.
  bool open(link_type& l, steady_time now) {
    bool full = false;
    std::optional<std::size_t> listener_limit;  // when that listener's limit refused it
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      listener_count* per = listener_slot(l.listener_slot_);
      full = links_.size() >= opts_.max_connections;
      if (!full && per != nullptr && per->open >= per->limit) {
        full = true;
        listener_limit = per->limit;
      }
      if (full) {
        ++stats_.connections_refused;
      } else {
        ++stats_.connections_accepted;
        links_.push_back(l.self());
        if (per != nullptr) ++per->open;
      }
    }
    if (full) {
      // After the lock: the hook is the host's code.
      if (listener_limit)
        this->log(log_level::warning, "connection refused: listener {}'s max_connections ({}) reached",
                  l.listener_slot_ - 1, *listener_limit);
      else
        this->log(log_level::warning, "connection refused: max_connections ({}) reached", opts_.max_connections);
      return false;
    }
    l.note_progress(now);
    restart_deadline(l, now);
    return true;
  }

  /// At most `n` connections at once through listener `index` (links opened with that
  /// link::set_listener): more are refused as over max_connections, which still counts all of
  /// them. No limit until one is set; a limit below the connections open closes none of them.
  void limit_listener(std::size_t index, std::size_t n) {
    std::lock_guard<mutex_type> lk(state_mutex_);
    listener_slot(static_cast<std::uint32_t>(index + 1))->limit = n;
  }

  /// The connections open through listener `index`.
  std::size_t listener_connections(std::size_t index) const {
    std::shared_lock<mutex_type> lk(state_mutex_);
    return index < listener_counts_.size() ? listener_counts_[index].open : 0;
  }

  /// A decoded packet. False when the link stops taking input after it: it is closing, its
  /// reader is to pause (pause_reader()), or it is paused (an authentication runs).
  bool on_packet(link_type& l, codec::packet& p, steady_time now) {
    if constexpr (base::durable) base::take_recorded();  // what this packet records, and only that
    if constexpr (base::enhanced_auth) {
      // Only an AUTH exchange lets anything through before CONNACK (the decoder and the readers'
      // pause hold everything else back): AUTH goes on with it, DISCONNECT ends it, and anything
      // else is a Protocol Error [MQTT-3.1.2-30].
      if (!l.connected_ && l.auth_) {
        if (p.index() == 14)
          on_auth(l, std::get<codec::auth>(p), now);
        else if (p.index() == 13)
          close_for(l, "DISCONNECT during authentication", reason_code::normal_disconnection, false, true, now);
        else
          violation(l, p.index() == 0 ? protocol_errc::second_connect : protocol_errc::packet_during_authentication, now);
        return !l.is_closing() && !l.paused();
      }
    }
    switch (p.index()) {
      case 0:
        // The decoder refuses a second CONNECT already; the engine holds to it on its own too.
        if (l.connected_) {
          violation(l, protocol_errc::second_connect, now);  // [MQTT-3.1.0-2]
          break;
        }
        on_connect(l, std::get<codec::connect>(p), now);
        break;
      case 2: on_publish(l, std::get<codec::publish>(p), now); break;
      case 3:
        on_puback(l, std::get<codec::puback>(p), now);
        commit_delivered();
        break;
      case 4:
        on_pubrec(l, std::get<codec::pubrec>(p), now);
        commit_delivered();
        break;
      case 5: on_pubrel(l, std::get<codec::pubrel>(p), now); break;
      case 6:
        on_pubcomp(l, std::get<codec::pubcomp>(p), now);
        commit_delivered();
        break;
      case 7: on_subscribe(l, std::get<codec::subscribe>(p), now); break;
      case 9: on_unsubscribe(l, std::get<codec::unsubscribe>(p), now); break;
      case 11: l.send(codec::pingresp{}, now); break;
      case 13: on_disconnect(l, std::get<codec::disconnect>(p), now); break;
      case 14: on_auth(l, std::get<codec::auth>(p), now); break;
      default: violation(l, protocol_errc::unexpected_packet, now); break;
    }
    return !l.is_closing() && !l.pace_pending() && !l.paused();
  }

  /// A client's acknowledgement of a delivery changed what its session owes, and nothing waits
  /// for that change: it still joins the next batch now, not whenever a later packet takes a
  /// ticket, so that it lands in the batch that adds the entry it deletes and neither is written.
  void commit_delivered() {
    if constexpr (base::durable) {
      if (base::take_recorded()) {
        this->storage().commit();
        this->wake_settling();
      }
    }
  }

  /// Packets were decoded from input read at `now`: Keep Alive counts from there.
  void on_packets_read(link_type& l, steady_time now) noexcept { restart_deadline(l, now); }

  /// Input the codec refused, or a packet the engine did: the reaction its version requires, then
  /// close. `decoded_version` is the version the decoder saw in a CONNECT, if it got that far.
  void on_malformed(link_type& l, const std::error_code& ec, codec::protocol_version decoded_version, steady_time now) {
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      ++stats_.protocol_errors;
    }
    const std::string why = ec.message();
    this->log(log_level::warning, "client '{}': {}; closing", l.client_id(), why);
    if (!l.connected_) {
      // Before CONNACK: a CONNACK with the refusal where the version has a code for it
      // [MQTT-3.2.2-5] (3.1.1 return code 1 for an unknown level [MQTT-3.1.2-2]). 5.0 says why
      // in a Reason String, unless the CONNECT asked for none (a CONNECT not parsed asked for
      // nothing: the defaults, problem information and no size limit).
      if (decoded_version == codec::protocol_version::v5) {
        codec::connack ack;
        ack.code = static_cast<std::uint8_t>(to_reason_code(ec));
        codec::properties_builder props;
        add_reason_string(l, ack, props, why, 0);
        l.enqueue(ack, codec::protocol_version::v5, now);
      } else if (auto rc = to_connack_return_code(ec)) {
        codec::connack ack;
        ack.code = static_cast<std::uint8_t>(*rc);
        l.enqueue(ack, codec::protocol_version::v3_1_1, now);
      }
      l.close(reason_code::unspecified_error, false, false, now);
      return;
    }
    // 5.0: DISCONNECT with the reason code [MQTT-4.13.1-1] and what went wrong ("topic alias not
    // set" says more than 0x82); 3.1.1: just close [MQTT-4.8.0-1].
    disconnect(l, to_reason_code(ec), why, now);
  }

  /// After a packet reached a session that is behind: pauses `l`'s reader on it, unless it caught
  /// up meanwhile. True when paused (the caller stops reading until a link_event::resume).
  bool pause_reader(link_type& l) {
    detail::ref_ptr<session_type> target = std::move(l.pace_target_);
    session_guard lk(*this, *target);
    const link_type* c = target->conn.get();
    if (c == nullptr || !behind(*target, *c, l.last_progress(), 1)) return false;
    l.paused_.store(true, std::memory_order_relaxed);
    restart_deadline(l, l.last_progress());  // when `target` will count as stuck
    target->more().paced.push_back(l.self());
    target->has_paced.store(true, std::memory_order_relaxed);
    hot_.pauses.fetch_add(1);
    return true;
  }

  /// A paused reader may go on. False when it was not paused or is closing (nothing to read).
  bool on_resume(link_type& l, steady_time now) noexcept {
    if (!l.paced() || !l.is_open()) return false;
    l.paused_.store(false, std::memory_order_relaxed);
    // The silence was ours, not the client's: Keep Alive counts from now.
    restart_deadline(l, now);
    return !l.is_closing();
  }

  /// The transport took some of what was queued.
  void on_write_progress(link_type& l, steady_time now) {
    l.note_progress(now);
    resume_paced_readers(l, now);
  }

  /// Everything queued has been written: more may move into flight.
  void on_drained(link_type& l, steady_time now) { pump(l, now); }

  /// A newer connection took the session over: this one closes without touching it.
  void take_over(link_type& l, steady_time now) {
    this->log(log_level::notice, "client '{}': taken over by a newer connection", l.client_id());
    l.taken_over_ = true;  // the session stays referenced, for the client identifier, but unused
    disconnect(l, reason_code::session_taken_over, "a newer connection with this Client Identifier took over", now);
  }

  /// Runs what the engine posted to `l` (link::post), now on l's own executor. True when its
  /// reader is to read again (a pause ended).
  bool on_event(link_type& l, link_event e, steady_time now) {
    switch (e) {
      case link_event::pump: pump(l, now); return false;
      case link_event::taken_over: take_over(l, now); return false;
      case link_event::resume: return on_resume(l, now);
      case link_event::check_deadline: return check_deadline(l, now);
      case link_event::shutdown: shut_down(l, now); return false;
      case link_event::committed: this->on_committed(l, now); return false;
      case link_event::authenticated: return on_authenticated(l, now);
      case link_event::auth_step: return on_auth_step(l, now);
      case link_event::redirect: on_redirect(l, now); return false;
      case link_event::kick: on_kick(l, now); return false;
      case link_event::claimed: return on_claimed(l, now);
    }
    return false;
  }

  /// The broker stops: 5.0 clients hear DISCONNECT 0x8B, every connection closes.
  void shut_down(link_type& l, steady_time now) {
    close_for(l, "the server is stopping", reason_code::server_shutting_down, true, true, now);
  }

  /// Sends the connected client `client_id` to another server (5.0 section 4.11): a 5.0 client
  /// gets DISCONNECT 0x9C Use another server, or 0x9D Server moved when `permanent`, with
  /// `server_reference` as its Server Reference; a 3.1.1 client is disconnected. From any thread;
  /// the connection's own thread does it (link_event::redirect). False when no client of that
  /// identifier is connected.
  bool redirect(std::string_view client_id, std::string_view server_reference, bool permanent) {
    return post_to_client(client_id, link_event::redirect, redirects_,
                          hooks::redirection{std::string(server_reference), permanent});
  }

  /// Ends the connection of the connected client `client_id`: a 5.0 client first gets DISCONNECT
  /// with `reason` (0x98 Administrative action, say); a 3.1.1 client's connection just closes.
  /// Its will goes out and a persistent session stays, as for any close the client did not ask
  /// for. From any thread; the connection's own thread does it (link_event::kick). False when no
  /// client of that identifier is connected.
  bool kick(std::string_view client_id, reason_code reason) {
    return post_to_client(client_id, link_event::kick, kicks_, reason);
  }

  /// The connected clients, in no order. From any thread; `to_wall` turns the engine's steady
  /// time into the wall clock's.
  template <class ToWall>
  std::vector<client_snapshot> clients(ToWall to_wall) const {
    std::vector<client_snapshot> out;
    std::lock_guard<mutex_type> lk(state_mutex_);
    out.reserve(links_.size());
    for (const auto& s : sessions_) {
      const session_type& rec = *s.second;
      const link_type* c = rec.conn.get();
      if (c == nullptr) continue;
      client_snapshot x;
      x.client_id = rec.state.client_id();
      if constexpr (session_type::keeps_origin) {
        x.username = rec.owner_username;
        hooks::client_info where;
        c->origin_into(where);
        x.peer_address.assign(where.peer_address);
        x.peer_port = where.peer_port;
      }
      if (c->listener_slot_ != 0) x.listener = c->listener_slot_ - 1;
      x.version = c->version_;
      x.connected_since = to_wall(rec.connected_at);
      x.queued_messages = rec.state.queued_count();
      x.inflight_messages = rec.state.inflight_count();
      x.persistent = base::kept(rec);
      out.push_back(std::move(x));
    }
    return out;
  }

  /// Ends the session of `client_id` as a host decides (an operator's clean-up): an offline
  /// session goes at once with its subscriptions, queued messages and stored state, its delayed
  /// will discarded; a connected client's session ends with its connection, which is closed as
  /// kick() closes it (5.0 DISCONNECT with `reason`), its will going out as for any close the
  /// client did not ask for. False when there is no such session. From any thread.
  bool end_session(std::string_view client_id, reason_code reason, steady_time now) {
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      auto it = sessions_.find(client_id);
      if (it == sessions_.end()) return false;
      session_type& rec = *it->second;
      if (!rec.conn) {
        if (rec.extras) rec.extras->pending_will = message_ptr();
        this->log(log_level::notice, "session '{}' removed by the host", rec.state.client_id());
        this->remove_session(rec, now);
        return true;
      }
      // Ends with the connection, which the kick below closes.
      rec.expiry = std::chrono::duration<std::uint32_t>(0);
    }
    kick(client_id, reason);
    return true;
  }

  /// Asks authorize_subscribe() again about every subscription of every session, as after a
  /// change of the rules behind it (an ACL file read again), and takes out those it now refuses,
  /// as an UNSUBSCRIBE would, with a log line each; MQTT has no packet that tells the client.
  /// Sessions whose client is not known (restored by a store, not connected since) are left as
  /// they are. The hook runs without the lock. From any thread; returns how many were taken out.
  std::size_t recheck_subscriptions() {
    if constexpr (!hooks::has_authorize_subscribe_v<hooks_type> || !session_type::keeps_origin) {
      return 0;
    } else {
      struct entry {
        detail::ref_ptr<session_type> rec;
        session_owner<true> owner;  // copied under the lock: a reconnect may change it meanwhile
        std::string filter;
        codec::qos granted;
      };
      std::vector<entry> all;
      {
        std::lock_guard<mutex_type> lk(state_mutex_);
        for (const auto& s : sessions_) {
          session_type& rec = *s.second;
          if (!rec.owner_known) continue;
          for (const auto& sub : rec.state.subscriptions())
            all.push_back({s.second, rec, sub.first, sub.second.options.max_qos});
        }
      }
      std::vector<const entry*> refused;
      for (const entry& e : all) {
        // The client identifier is fixed for the session's life.
        if (!hooks_.authorize_subscribe(e.owner.owner_info(e.rec->state.client_id()), e.filter, e.granted))
          refused.push_back(&e);
      }
      std::vector<const entry*> removed;
      {
        std::lock_guard<mutex_type> lk(state_mutex_);
        for (const entry* e : refused) {
          session_type& rec = *e->rec;
          if (!rec.state.forget_subscription(e->filter)) continue;  // unsubscribed or ended meanwhile
          this->remove_route(rec, e->filter);
          if (base::kept(rec)) this->record([&](auto& st) { st.erase_subscription(rec.state.client_id(), e->filter); });
          removed.push_back(e);
        }
        stats_.subscriptions_revoked += removed.size();
      }
      for (const entry* e : removed)
        this->log(log_level::notice, "client '{}': subscription to {} taken out: no longer authorized",
                  e->rec->state.client_id(), e->filter);
      return removed.size();
    }
  }

  /// A host's request for the connected client `client_id`: `what` is noted in `pending` for its
  /// link, which is told by `e` (and takes it with take_request()). False when none is connected.
  template <class T>
  bool post_to_client(std::string_view client_id, link_event e, std::vector<std::pair<const link_type*, T>>& pending,
                      T what) {
    detail::ref_ptr<link_type> target;
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      auto it = sessions_.find(client_id);
      if (it == sessions_.end() || !it->second->conn) return false;
      target = it->second->conn;
      pending.emplace_back(target.get(), std::move(what));
    }
    // Posted even with one thread: the caller may be inside this client's own handler.
    target->post(e);
    return true;
  }
  /// What post_to_client() noted for `l`, taken out of `pending`; none when there is nothing.
  template <class T>
  std::optional<T> take_request(std::vector<std::pair<const link_type*, T>>& pending, const link_type& l) {
    std::lock_guard<mutex_type> lk(state_mutex_);
    auto it = std::find_if(pending.begin(), pending.end(), [&](const auto& r) { return r.first == &l; });
    if (it == pending.end()) return std::nullopt;
    std::optional<T> what(std::move(it->second));
    pending.erase(it);
    return what;
  }

  /// The sweep saw `l`'s deadline pass (checked again here, on its own executor). True when a
  /// paused reader is to resume reading.
  bool check_deadline(link_type& l, steady_time now) {
    if (!l.is_open()) return false;
    // Paused for a client that is behind: resume when it counts as stuck. An authentication
    // still running at the CONNECT timeout ends the connection as any CONNECT timeout does.
    if (l.paced()) return l.deadline_passed(now) && on_resume(l, now);
    if (l.is_closing() || !l.deadline_passed(now)) return false;  // moved on since the sweep looked
    if constexpr (base::enhanced_auth) {
      if (const auth_exchange_state* a = l.auth_.get(); a != nullptr && a->running && l.connected_ && now >= a->deadline) {
        // A re-authentication that did not end in time has failed [MQTT-4.12.1-2].
        this->log(log_level::notice, "client '{}': re-authentication not completed within {} ms", l.client_id(),
                  opts_.reauthentication_timeout.count());
        disconnect(l, reason_code::not_authorized, "re-authentication not completed in time", now);
        return false;
      }
    }
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      ++(l.connected_ ? stats_.keep_alive_timeouts : stats_.connect_timeouts);
    }
    if (!l.connected_) {
      this->log(log_level::notice, "connection closed: no CONNECT within {} ms", opts_.connect_timeout.count());
      // No complete CONNECT within the timeout: close without a word.
      close_for(l, "no CONNECT in time", reason_code::maximum_connect_time, false, false, now);
    } else {
      this->log(log_level::notice, "client '{}': Keep Alive timeout", l.client_id());
      // [MQTT-3.1.2-24] nothing within 1.5 times the Keep Alive: disconnect, and the will goes out.
      disconnect(l, reason_code::keep_alive_timeout, "nothing received within the Keep Alive", now);
    }
    return false;
  }

  /// The transport is closed: the session lets go of the connection, a will goes out or waits for
  /// its delay, a session that ends with its connection ends.
  /// `system_now` dates what a durable storage keeps (a delayed will's due time).
  void on_closed(link_type& l, steady_time now, std::chrono::system_clock::time_point system_now) {
    detail::ref_ptr<link_type> self = l.self();
    if constexpr (session_type::keeps_origin) {
      // A claim still running: hand-overs other nodes asked for meanwhile need not wait for it.
      if constexpr (base::claims)
        if (l.pending_connect_ && l.pending_connect_->claim) this->end_claim(l.pending_connect_->client_id, now);
      // An authentication still running answers to no one now.
      l.authenticating_ = false;
      l.pending_connect_.reset();
    }
    // An AUTH step still answering holds this link: let go of it (and the method's state).
    if constexpr (base::enhanced_auth) l.auth_.reset();
    if constexpr (base::durable) {
      // QoS 2 messages held for their commit are the broker's now (their identifiers are taken):
      // routed without waiting, as a resent PUBLISH will not be routed again [MQTT-4.3.3-2].
      if (l.held) {
        typename base::flush_scope batch;  // routings and their marks before a commit boundary
        for (; !l.held->empty(); l.held->pop_front()) {
          held_ack& a = l.held->front();
          if (a.route) this->route_received(std::move(a.route), l.session(), a.packet_id, now);
        }
      }
    }
    message_ptr will = l.extras_ ? std::move(l.extras_->will) : message_ptr();
    const std::chrono::duration<std::uint32_t> will_delay = l.extras_ ? l.extras_->will_delay : std::chrono::duration<std::uint32_t>(0);
    detail::ref_ptr<session_type> rec = std::move(l.session_);
    std::vector<detail::ref_ptr<link_type>> paced;
    if (l.graceful_ || stopping_) will = message_ptr();
    std::function<void()> stopped;
    std::optional<steady_time> will_due;
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      links_.erase(l);
      if (l.listener_slot_ != 0) --listener_counts_[l.listener_slot_ - 1].open;
      // Taken over: marked so, or not yet (under locking::shared the takeover is posted to this
      // link's thread, and the transport may end first) but the session has its new connection.
      const bool taken_over = l.taken_over_ || (rec && rec->conn.get() != &l);
      if (taken_over && will_delay.count() != 0) {
        // [MQTT-3.1.3-9] the session already has its new connection, within any Will Delay.
        will = message_ptr();
      }
      // A connection that lost its session to a takeover leaves the session alone.
      if (rec && rec->conn.get() == &l) {
        // Readers waiting for this client go on: it is gone, and offline queues have limits.
        base::take_paced_readers(*rec, paced);
        rec->conn.reset();
        if (rec->extras) rec->extras->retained_backlog.clear();
        clear_outbox(*rec);
        if (rec->expiry.count() == 0) {
          remove_session(*rec, now);  // the session ends now, so a delayed will goes out now too
        } else {
          rec->expires = now + rec->expiry;
          if constexpr (storage::detail::has_session_offline<typename base::storage_type>::value) {
            // Its expiry runs from now, also across a restart.
            this->record([&](auto& st) { st.session_offline(rec->state.client_id(), system_now); }, false);
          }
          if (will && will_delay.count() != 0) {
            // [MQTT-3.1.2-8] 5.0: after the Will Delay Interval or when the session ends,
            // whichever comes first.
            const auto delay = std::min<std::chrono::seconds>(will_delay, rec->expiry);
            this->record([&](auto& st) { st.save_will(rec->state.client_id(), will, system_now + delay); });
            will_due = delay_will(*rec, std::move(will), now + delay);
          }
        }
      }
      if (stopping_ && links_.empty()) stopped = std::move(stop_done_);
    }
    if (will_due && will_scheduled_) will_scheduled_(*will_due);
    resume_all(paced);
    if (l.connected_ && rec) {
      // Why: the first reason the server gave or the client's DISCONNECT; none of them, the
      // transport ended (the client closed it, or the network failed).
      const std::string_view why = l.extras_ && !l.extras_->close_why.empty()
                                       ? std::string_view(l.extras_->close_why)
                                       : std::string_view("connection closed without DISCONNECT");
      if (opts_.connection_messages)
        this->log(log_level::info, "client '{}' disconnected: {}", rec->state.client_id(), why);
      if constexpr (hooks::has_on_disconnect_v<hooks_type>) {
        hooks::client_info info = l.client_info();
        info.client_id = rec->state.client_id();  // the link has let go of the session
        hooks_.on_disconnect(info, l.graceful_);
      }
    }
    // [MQTT-3.1.2-8] the will goes out when the connection ends without DISCONNECT.
    if (will) publish_message(base::published_will(std::move(will), now), nullptr, now);
    if (stopped) stopped();
  }

 private:
  using typename base::mutex_type;
  using typename base::session_guard;
  using base::hooks_;
  using base::links_;
  using base::opts_;
  using base::sessions_;
  using base::session_limits_;
  using base::state_mutex_;
  using base::stats_;
  using base::hot_;
  using base::router_;
  using base::retained_;
  using base::stop_done_;
  using base::stopping_;
  using base::will_scheduled_;
  using base::behind;
  using base::clear_outbox;
  using base::delay_will;
  using base::drop_session_subscriptions;
  using base::make_client_id;
  using base::publish_message;
  using base::remove_session;
  using base::restart_deadline;
  using base::resume_all;
  using base::resume_paced_readers;
  using base::stored_expiry;
  using base::topic_limits;

  void violation(link_type& l, std::error_code ec, steady_time now) {
    l.mark_closing();  // stop decoding this read
    on_malformed(l, ec, l.version_, now);
  }

  // ---- Reason String (5.0 property 0x1F) on the server's CONNACK refusals and DISCONNECTs

  /// At most this much text: a short diagnostic (an error's message, a reason code's name).
  static constexpr std::size_t max_reason_string = 64;
  /// The largest CONNACK or DISCONNECT whose only property is such a Reason String: fixed header 2
  /// (a remaining length below 128), CONNACK flags 1, reason code 1, property length 1, the
  /// property 3 + the text.
  static constexpr std::uint32_t reason_string_room = 2 + 1 + 1 + 1 + 3 + max_reason_string;

  /// Whether a 5.0 client takes a Reason String, from its CONNECT: kept as one bit on the link
  /// (link::problem_information_), not its Maximum Packet Size, so a refusal before the session
  /// holds that size can use it, and a link taken over does not read its successor's. The rule
  /// is conservative: a client whose limit is below `reason_string_room` gets none, even a short
  /// one that would fit. Request Problem Information 0 means none, also on CONNACK and DISCONNECT
  /// where [MQTT-3.1.2-29] would allow one: the client said it does not want them.
  static bool takes_reason_string(const codec::properties_view& connect_props, std::uint32_t max_packet) {
    const auto asked = connect_props.find(codec::property_id::request_problem_information);
    return (!asked || asked->integer != 0) && (max_packet == 0 || max_packet >= reason_string_room);
  }

  /// Adds the string property `id` = `value` to `p`, a CONNACK or DISCONNECT to a 5.0 client,
  /// through `props`, after any properties `p` has, unless `p` would then be larger than the
  /// client's Maximum Packet Size `max_packet` (0: none): the properties that may be left out
  /// (Reason String, Server Reference) go only where they fit [MQTT-3.2.2-19] [MQTT-3.14.2-3].
  /// What `p` had stays either way.
  template <class Packet>
  static void add_if_it_fits(Packet& p, codec::properties_builder& props, codec::property_id id,
                             std::string_view value, std::uint32_t max_packet) {
    codec::properties_builder with;
    for (const codec::property& pr : p.properties) with.add(pr);  // `p`'s may view into `props`
    with.add(id, value);
    const codec::properties_view before = p.properties;
    p.properties = with.view();
    std::size_t size = 0;
    if (codec::encoded_size(p, codec::protocol_version::v5, size) || (max_packet != 0 && size > max_packet)) {
      p.properties = before;
      return;
    }
    props = std::move(with);
    p.properties = props.view();
  }

  /// Adds `why` (cut to max_reason_string bytes) as Reason String to `p` when the client takes one
  /// (add_if_it_fits; with `max_packet` 0 the rule of takes_reason_string() covers a packet with
  /// no other property).
  template <class Packet>
  static void add_reason_string(const link_type& l, Packet& p, codec::properties_builder& props, std::string_view why,
                                std::uint32_t max_packet) {
    if (!l.problem_information_ || why.empty()) return;
    if (why.size() > max_reason_string) {
      std::size_t n = max_reason_string;
      while (n > 0 && (static_cast<unsigned char>(why[n]) & 0xC0u) == 0x80u) --n;  // not inside a character
      why = why.substr(0, n);
    }
    add_if_it_fits(p, props, codec::property_id::reason_string, why, max_packet);
  }

  /// The server ends a connection: a connected 5.0 client first gets DISCONNECT `reason` with
  /// `props` and `why` as Reason String (add_reason_string); 3.1.1 just closes. Never graceful:
  /// the will goes out.
  void disconnect(link_type& l, reason_code reason, std::string_view why, steady_time now,
                  codec::properties_view props = {}, std::uint32_t max_packet = 0) {
    codec::disconnect d;
    d.reason = reason;
    d.properties = props;
    codec::properties_builder b;
    if (l.connected_ && l.version_ == codec::protocol_version::v5) add_reason_string(l, d, b, why, max_packet);
    close_for(l, why, reason, true, false, now, d.properties);
  }

  /// link::close(), with why it ends for the log line that says it ended (the first reason given
  /// wins: a connection closing on a protocol error may still be stopped before it is gone).
  void close_for(link_type& l, std::string_view why, reason_code reason, bool notify, bool graceful, steady_time now,
                 codec::properties_view props = {}) {
    if (!why.empty() && (!l.extras_ || l.extras_->close_why.empty())) l.more().close_why.assign(why);
    l.close(reason, notify, graceful, now, props);
  }

  // ---- server redirection (5.0 section 4.11)

  /// Adds the Server Reference to `p` (a CONNACK or DISCONNECT to a 5.0 client, its reason set)
  /// through `props`, unless it is empty, no UTF-8 string, or does not fit (add_if_it_fits)
  /// [MQTT-3.1.2-24]: the property is a MAY.
  template <class Packet>
  static void add_server_reference(Packet& p, codec::properties_builder& props, std::string_view reference,
                                   std::uint32_t max_packet) {
    if (reference.empty() || reference.size() > 0xFFFF || codec::validate_utf8(reference)) return;
    add_if_it_fits(p, props, codec::property_id::server_reference, reference, max_packet);
  }

  /// The host's redirect() answered a CONNECT: 5.0 CONNACK 0x9C or 0x9D with the Server
  /// Reference; 3.1.1 has no code for it, and CONNACK 3 (Server unavailable) comes closest.
  void refuse_redirected(link_type& l, const hooks::connect_info& info, const hooks::redirection& to,
                         std::uint32_t max_packet, steady_time now) {
    const reason_code why = to.permanent ? reason_code::server_moved : reason_code::use_another_server;
    codec::properties_builder props;
    if (info.version == codec::protocol_version::v5) {
      codec::connack ack;
      ack.code = static_cast<std::uint8_t>(why);
      add_server_reference(ack, props, to.server_reference, max_packet);
    }
    refuse_connect_code(l, info, why, connack_return_code::server_unavailable, now, {}, props.view(), max_packet);
  }

  /// link_event::redirect: the redirection the host asked for this link, if it is still
  /// connected. Not graceful: the will goes out, as for any close the client did not ask for
  /// [MQTT-3.1.2-8].
  void on_redirect(link_type& l, steady_time now) {
    std::optional<hooks::redirection> to = take_request(redirects_, l);
    if (!to) return;
    if (!l.connected_ || l.is_closing()) return;  // taken over or closed meanwhile
    const reason_code why = to->permanent ? reason_code::server_moved : reason_code::use_another_server;
    this->log(log_level::notice, "client '{}': redirected to '{}' ({})", l.client_id(), to->server_reference,
              to_string(why));
    codec::properties_builder props;
    codec::disconnect d;
    d.reason = why;
    std::uint32_t max_packet = 0;
    if (l.version() == codec::protocol_version::v5) {
      {
        session_guard lk(*this, *l.session());
        max_packet = l.session()->state.client_max_packet_size();
      }
      add_server_reference(d, props, to->server_reference, max_packet);
    }
    disconnect(l, why, to->permanent ? "the server moved" : "use another server for now", now, d.properties, max_packet);
  }

  /// link_event::kick: the host's kick() of this link, if it is still connected.
  void on_kick(link_type& l, steady_time now) {
    const std::optional<reason_code> reason = take_request(kicks_, l);
    if (!reason || !l.connected_ || l.is_closing()) return;  // none, or taken over or closed meanwhile
    this->log(log_level::notice, "client '{}': disconnected by the host ({})", l.client_id(), to_string(*reason));
    disconnect(l, *reason, "disconnected by the server's operator", now);
  }

  // ---- PUBLISH rate

  /// broker_options::max_publish_rate: counts a PUBLISH in the clock's current second. Over the
  /// limit the PUBLISH is not handled and the connection ends: 5.0 DISCONNECT 0x96 (Message rate
  /// too high), 3.1.1 a close. True then.
  bool over_publish_rate(link_type& l, steady_time now) {
    link_extras& x = l.more();
    const std::uint32_t second = clock_seconds(now);
    if (x.rate_second != second) {
      x.rate_second = second;
      x.rate_count = 0;
    }
    if (++x.rate_count <= opts_.max_publish_rate) return false;
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      ++stats_.rate_limited;
    }
    this->log(log_level::notice, "client '{}': more than {} PUBLISH packets in a second; closing", l.client_id(),
              opts_.max_publish_rate);
    disconnect(l, reason_code::message_rate_too_high, "more PUBLISH packets a second than the server takes", now);
    return true;
  }

  // ---- CONNECT

  /// The hooks' view of a CONNECT: the link's origin and the packet's identity.
  static hooks::connect_info connect_info_of(const link_type& l, const codec::connect& cp) {
    hooks::connect_info i;
    static_cast<hooks::client_info&>(i) = l.client_info();
    i.client_id = cp.client_id;
    i.username = l.username_for(cp.username);
    i.password = cp.password;
    i.version = cp.version;
    return i;
  }
  static hooks::connect_info connect_info_of(const link_type& l, const connect_request& r) {
    hooks::connect_info i;
    static_cast<hooks::client_info&>(i) = l.client_info();
    i.client_id = r.client_id;
    if (r.username) i.username = *r.username;
    if (r.password) i.password = *r.password;
    i.version = r.version;
    return i;
  }

  /// Refuses a CONNECT for `e` with the CONNACK code of the client's version, or (3.1.1 without a
  /// code for it) by closing.
  template <class Error>
  void refuse_connect(link_type& l, const hooks::connect_info& info, Error e, steady_time now) {
    const std::error_code ec = e;
    if (info.version == codec::protocol_version::v5)
      return refuse_connect_code(l, info, to_reason_code(ec), connack_return_code::accepted, now, ec.message());
    auto rc = to_connack_return_code(ec);
    if (!rc) return refuse_by_closing(l, info, ec, now);
    refuse_connect_code(l, info, to_reason_code(ec), *rc, now);
  }

  /// 3.1.1 without a CONNACK code for `ec`: the connection just closes.
  void refuse_by_closing(link_type& l, const hooks::connect_info& info, std::error_code ec, steady_time now) {
    notify_refused(info, to_reason_code(ec));
    l.version_ = info.version;
    violation(l, ec, now);
  }

  /// The host's on_connect_refused hook, if any, with the 5.0 reason (also for 3.1.1 clients).
  void notify_refused(const hooks::connect_info& info, reason_code why) {
    (why == reason_code::not_authorized || why == reason_code::bad_user_name_or_password ? this->hot_.refused_auth
                                                                                           : this->hot_.refused_connect)
        .fetch_add(1);
    if (info.peer_address.empty())
      this->log(log_level::notice, "CONNECT of '{}' refused: {} (0x{:02X})", info.client_id, to_string(why),
                static_cast<unsigned>(why));
    else
      this->log(log_level::notice, "CONNECT of '{}' from {}:{} refused: {} (0x{:02X})", info.client_id,
                info.peer_address, info.peer_port, to_string(why), static_cast<unsigned>(why));
    if constexpr (hooks::has_on_connect_refused_v<hooks_type>) {
      hooks_.on_connect_refused(info, why);
    } else {
      (void)info;
      (void)why;
    }
  }

  /// CONNACK with the refusal: `rc5` for 5.0 (and the hook), `rc3` for 3.1.1. 5.0 adds `why`
  /// (the reason code's name when empty) as Reason String to `props` (add_reason_string, with
  /// the CONNECT's Maximum Packet Size `max_packet` when `props` has any).
  void refuse_connect_code(link_type& l, const hooks::connect_info& info, reason_code rc5, connack_return_code rc3,
                           steady_time now, std::string_view why = {}, codec::properties_view props = {},
                           std::uint32_t max_packet = 0) {
    const auto v = info.version;
    notify_refused(info, rc5);
    codec::connack ack;
    ack.code = v == codec::protocol_version::v5 ? static_cast<std::uint8_t>(rc5) : static_cast<std::uint8_t>(rc3);
    ack.properties = props;
    codec::properties_builder b;
    if (v == codec::protocol_version::v5) add_reason_string(l, ack, b, why.empty() ? to_string(rc5) : why, max_packet);
    l.version_ = v;
    l.enqueue(ack, v, now);
    l.close(reason_code::unspecified_error, false, false, now);
  }

  /// authenticate()'s refusal as the CONNACK of the client's version.
  void refuse_authentication(link_type& l, const hooks::connect_info& info, hooks::auth_result r, steady_time now) {
    if (r == hooks::auth_result::bad_credentials)
      return refuse_connect_code(l, info, reason_code::bad_user_name_or_password,
                                 connack_return_code::bad_user_name_or_password, now);
    refuse_connect_code(l, info, reason_code::not_authorized, connack_return_code::not_authorized, now);
  }

  /// A CONNECT: checked, made into a request the packet's buffer may go away under, authenticated
  /// (now, or later by the host's answer), then accepted.
  void on_connect(link_type& l, const codec::connect& cp, steady_time now) {
    const auto v = cp.version;
    const bool v5 = v == codec::protocol_version::v5;
    l.bridge_ = cp.bridge;
    connect_request r;
    // Read first: a refusal below may carry a Reason String, which they decide.
    if (v5) {
      // What the client takes: at most this many unacknowledged QoS 1/2 PUBLISH, none larger than
      // this (the decoder refused 0 for either as a protocol error).
      if (auto p = cp.properties.find(codec::property_id::receive_maximum))
        r.receive_maximum = static_cast<std::uint16_t>(p->integer);
      if (auto p = cp.properties.find(codec::property_id::maximum_packet_size)) r.maximum_packet_size = p->integer;
      if (auto p = cp.properties.find(codec::property_id::topic_alias_maximum))
        r.topic_alias_maximum = static_cast<std::uint16_t>(p->integer);
      if (auto p = cp.properties.find(codec::property_id::request_response_information))
        r.wants_response_information = p->integer == 1;
      l.problem_information_ = takes_reason_string(cp.properties, r.maximum_packet_size);
    }
    r.client_id.assign(cp.client_id);
    if (r.client_id.empty()) {
      // 3.1.1: an empty identifier needs Clean Session 1 [MQTT-3.1.3-7] [MQTT-3.1.3-8];
      // 5.0: the server assigns one and says so [MQTT-3.1.3-6] [MQTT-3.2.2-16].
      if (!v5 && !cp.clean_start)
        return refuse_connect(l, connect_info_of(l, cp), protocol_errc::client_identifier_not_valid, now);
      std::lock_guard<mutex_type> lk(state_mutex_);
      r.client_id = make_client_id();
      r.assigned_id = true;
    }
    if (r.client_id.size() > opts_.max_client_id_length)
      return refuse_connect(l, connect_info_of(l, cp), protocol_errc::client_identifier_not_valid, now);

    // 5.0: an Authentication Method starts an AUTH exchange with the host's authenticate_enhanced;
    // without that hook no method is supported: CONNACK 0x8C and close [MQTT-4.12.0-1].
    std::optional<codec::property> method;
    if (v5) method = cp.properties.find(codec::property_id::authentication_method);
    if constexpr (!base::enhanced_auth) {
      if (method)
        return refuse_connect_code(l, connect_info_of(l, cp), reason_code::bad_authentication_method,
                                   connack_return_code::accepted, now, "no Authentication Method is supported");
    }

    if (cp.will) {
      // A will the server would not accept as a PUBLISH [MQTT-3.2.2-12] [MQTT-3.2.2-13]: 5.0 has
      // a CONNACK code for each, 3.1.1 closes.
      const bool qos_too_high = cp.will->qos_level > opts_.maximum_qos;
      if (qos_too_high || (cp.will->retain && !opts_.retain_available)) {
        if (v5)
          return refuse_connect_code(l, connect_info_of(l, cp),
                                     qos_too_high ? reason_code::qos_not_supported : reason_code::retain_not_supported,
                                     connack_return_code::accepted, now,
                                     qos_too_high ? "Will QoS above the server's Maximum QoS" : "retained Will, and Retain Available is 0");
        return refuse_by_closing(l, connect_info_of(l, cp), protocol_errc::unexpected_packet, now);
      }
      if (auto ec = topic::validate_topic_name(cp.will->topic, topic_limits())) {
        // The Will Topic must be a valid topic name; 5.0 has a CONNACK code for it, 3.1.1 closes.
        if (v5)
          return refuse_connect_code(l, connect_info_of(l, cp), reason_code::topic_name_invalid,
                                     connack_return_code::accepted, now, "invalid Will Topic");
        return refuse_by_closing(l, connect_info_of(l, cp), ec, now);
      }
    }

    r.version = v;
    r.clean_start = cp.clean_start;
    r.keep_alive = cp.keep_alive;
    if constexpr (session_type::keeps_origin) {
      if (auto u = l.username_for(cp.username)) r.username.emplace(*u);
    }
    // Session lifetime: 3.1.1 Clean Session 0 keeps it; 5.0 keeps it for Session Expiry Interval.
    if (v5) {
      if (auto p = cp.properties.find(codec::property_id::session_expiry_interval))
        r.requested_expiry = std::chrono::seconds(p->integer);
    } else if (!cp.clean_start) {
      r.requested_expiry = opts_.persistent_session_expiry.count() == 0 ? std::chrono::seconds(0xFFFFFFFFu)
                                                                       : opts_.persistent_session_expiry;
    }
    // The will, made now so it costs nothing when it fires.
    if (cp.will) {
      r.will = message::make(cp.will->topic, cp.will->payload, cp.will->qos_level, cp.will->retain,
                             base::forwardable_properties(cp.will->properties));
      if (v5) {
        if (auto p = cp.will->properties.find(codec::property_id::will_delay_interval))
          r.will_delay = std::chrono::duration<std::uint32_t>(p->integer);
      }
    }

    if constexpr (base::enhanced_auth) {
      if (method) {
        if (cp.password) r.password.emplace(*cp.password);
        const auto data = cp.properties.find(codec::property_id::authentication_data);
        return start_authentication(l, std::move(r), method->value,
                                    data ? std::optional<std::string_view>(data->value) : std::nullopt, now);
      }
    }
    if constexpr (hooks::has_authenticate_v<hooks_type>) {
      hooks::connect_info info = connect_info_of(l, cp);
      info.client_id = r.client_id;
      const hooks::auth_result answer = hooks_.authenticate(info);
      if (answer != hooks::auth_result::accept) return refuse_authentication(l, info, answer, now);
    } else if constexpr (hooks::has_authenticate_later_v<hooks_type>) {
      if (cp.password) r.password.emplace(*cp.password);
      return authenticate_later(l, std::move(r));
    }
    accept_connect(l, std::move(r), now);
  }

  /// What an asynchronous authenticate answers to: the link, kept until the answer is taken.
  class auth_target final : public hooks::auth_reply::target {
   public:
    explicit auth_target(detail::ref_ptr<link_type> l) noexcept : link_(std::move(l)) {}
    void complete(hooks::auth_result r) override {
      // Any thread: the answer is read on the link's own, after the post.
      link_->auth_answer_.store(static_cast<std::uint8_t>(r), std::memory_order_relaxed);
      link_->post(link_event::authenticated);
    }

   private:
    detail::ref_ptr<link_type> link_;
  };

  /// Hands the CONNECT to the host's asynchronous authenticate. The reader waits: nothing the
  /// client sent after its CONNECT is acted on before the CONNACK, so nothing after a refused one
  /// ever is (3.1.1 [MQTT-3.1.4-5], 5.0 [MQTT-3.1.4-6]); the CONNECT timeout bounds the wait.
  void authenticate_later(link_type& l, connect_request r) {
    if constexpr (hooks::has_authenticate_later_v<hooks_type>) {
      l.pending_connect_ = std::make_unique<connect_request>(std::move(r));
      l.wait_for_authentication(true);
      const hooks::connect_info info = connect_info_of(l, *l.pending_connect_);
      hooks_.authenticate(info, hooks::auth_reply(std::make_shared<auth_target>(l.self())));
    } else {
      (void)l;
      (void)r;
    }
  }

  /// The host's authenticate answered: the CONNECT is accepted or refused now, and an accepted
  /// client's reader goes on with what followed its CONNECT. True when it is to read again.
  bool on_authenticated(link_type& l, steady_time now) {
    if constexpr (hooks::has_authenticate_later_v<hooks_type>) {
      if (!l.authenticating_ || l.is_closing()) return false;  // timed out or stopped meanwhile
      if constexpr (base::durable) base::take_recorded();
      l.wait_for_authentication(false);
      std::unique_ptr<connect_request> r = std::move(l.pending_connect_);
      const auto answer = static_cast<hooks::auth_result>(l.auth_answer_.load(std::memory_order_relaxed));
      if (answer != hooks::auth_result::accept) {
        refuse_authentication(l, connect_info_of(l, *r), answer, now);
        return false;
      }
      r->password.reset();
      accept_connect(l, std::move(*r), now);
      return !l.is_closing();
    } else {
      (void)l;
      (void)now;
      return false;
    }
  }

  // ---- 5.0 enhanced authentication (section 4.12)

  /// What authenticate_enhanced answers a step through: the link, kept until the answer is taken.
  class auth_step_target final : public hooks::auth_step_reply::target {
   public:
    explicit auth_step_target(detail::ref_ptr<link_type> l) noexcept : link_(std::move(l)) {}
    void complete(hooks::auth_step s) override {
      // Any thread: the answer is read on the link's own, after the post.
      answer_ = std::move(s);
      answered_.store(true, std::memory_order_release);
      link_->post(link_event::auth_step);
    }
    bool answered() const noexcept { return answered_.load(std::memory_order_acquire); }
    hooks::auth_step take() noexcept { return std::move(answer_); }

   private:
    detail::ref_ptr<link_type> link_;
    hooks::auth_step answer_;
    std::atomic<bool> answered_{false};
  };

  /// A CONNECT with an Authentication Method: the exchange starts, bounded by the CONNECT timeout
  /// from now, with the CONNECT's Authentication Data as its first step.
  void start_authentication(link_type& l, connect_request r, std::string_view method,
                            std::optional<std::string_view> data, steady_time now) {
    if constexpr (base::enhanced_auth) {
      auto a = std::make_unique<auth_exchange_state>();
      a->max_packet = r.maximum_packet_size;
      a->running = true;
      a->deadline = now + opts_.connect_timeout;
      l.auth_ = std::move(a);
      l.version_ = codec::protocol_version::v5;  // what AUTH and a refusal are encoded in
      l.pending_connect_ = std::make_unique<connect_request>(std::move(r));
      if (method.size() > opts_.max_auth_data_size)
        return fail_authentication(l, reason_code::quota_exceeded, {}, now, "Authentication Method too long");
      l.auth_->method.assign(method);
      authentication_step(l, hooks::auth_stage::connect, data, now);
    } else {
      (void)l;
      (void)r;
      (void)method;
      (void)data;
      (void)now;
    }
  }

  /// A client's AUTH: it goes on with the exchange that waits for it (0x18) or starts a
  /// re-authentication after CONNACK (0x19), with the method of the CONNECT; anything else is a
  /// Protocol Error.
  void on_auth(link_type& l, const codec::auth& p, steady_time now) {
    if constexpr (base::enhanced_auth) {
      auth_exchange_state* a = l.auth_.get();
      // Without a method in the CONNECT there is no exchange to speak of [MQTT-4.12.0-7]; nor
      // while the hook still answers the last step (the reader waits then).
      if (a == nullptr || a->pending) return violation(l, protocol_errc::unexpected_auth, now);
      // 5.0 section 3.15.2.2.2: AUTH carries the method; the CONNECT's [MQTT-4.12.0-5] [MQTT-4.12.1-1].
      const auto method = p.properties.find(codec::property_id::authentication_method);
      if (!method || method->value != a->method) return violation(l, protocol_errc::auth_method_mismatch, now);
      hooks::auth_stage stage;
      if (p.reason == reason_code::continue_authentication && a->running) {
        stage = hooks::auth_stage::continuation;  // [MQTT-4.12.0-3]
      } else if (p.reason == reason_code::re_authenticate && !a->running && l.connected_) {
        stage = hooks::auth_stage::reauthentication;  // 5.0 section 4.12.1
        a->running = true;
        a->steps = 0;
        a->deadline = now + opts_.reauthentication_timeout;
      } else {
        // 0x00 is the server's; 0x18 with no exchange waiting; 0x19 before CONNACK or during one.
        return violation(l, protocol_errc::unexpected_auth, now);
      }
      const auto data = p.properties.find(codec::property_id::authentication_data);
      authentication_step(l, stage, data ? std::optional<std::string_view>(data->value) : std::nullopt, now);
    } else {
      (void)p;
      violation(l, protocol_errc::unexpected_packet, now);  // no exchange is ever offered (section 4.12)
    }
  }

  /// Hands one step to the host's authenticate_enhanced, within the limits; the reader waits for
  /// the answer (on_auth_step).
  void authentication_step(link_type& l, hooks::auth_stage stage, std::optional<std::string_view> data,
                           steady_time now) {
    if constexpr (base::enhanced_auth) {
      auth_exchange_state& a = *l.auth_;
      // Checked before anything is copied or handed on: the data stays a view into the packet.
      if (++a.steps > opts_.max_auth_steps || (data && data->size() > opts_.max_auth_data_size))
        return fail_authentication(l, reason_code::quota_exceeded, {}, now, "authentication steps or data over the limit");
      hooks::auth_exchange x;
      if (l.connected_)
        static_cast<hooks::client_info&>(x.client) = l.client_info();
      else
        x.client = connect_info_of(l, *l.pending_connect_);
      x.stage = stage;
      x.method = a.method;
      x.data = data;
      x.step = a.steps;
      x.state = a.state;
      auto target = std::make_shared<auth_step_target>(l.self());
      a.pending = target;
      l.wait_for_authentication(true);
      restart_deadline(l, now);
      hooks_.authenticate_enhanced(x, hooks::auth_step_reply(std::move(target)));
    } else {
      (void)l;
      (void)stage;
      (void)data;
      (void)now;
    }
  }

  /// authenticate_enhanced answered a step: AUTH 0x18 and the reader goes on, or the exchange
  /// ends in CONNACK (AUTH 0x00 after a re-authentication), or in a refusal. True when the reader
  /// is to read again.
  bool on_auth_step(link_type& l, steady_time now) {
    if constexpr (base::enhanced_auth) {
      auth_exchange_state* a = l.auth_.get();
      if (a == nullptr || !a->pending || l.is_closing()) return false;  // closed, timed out
      auto* target = static_cast<auth_step_target*>(a->pending.get());
      if (!target->answered()) return false;
      hooks::auth_step s = target->take();
      a->pending.reset();
      if constexpr (base::durable) base::take_recorded();
      l.wait_for_authentication(false);
      if (s.state) a->state = std::move(s.state);
      if (s.what == hooks::auth_step::kind::failure) {
        fail_authentication(l, s.reason, std::move(s.data), now);
        return false;
      }
      if (s.what == hooks::auth_step::kind::success && !l.connected_) {
        a->running = false;
        std::unique_ptr<connect_request> r = std::move(l.pending_connect_);
        this->log(log_level::debug, "client '{}' authenticated with {}", r->client_id, a->method);
        r->password.reset();
        accept_connect(l, std::move(*r), now, a, &s.data);
        return !l.is_closing();
      }
      // AUTH 0x18 asking for more [MQTT-4.12.0-2], or 0x00 ending a re-authentication; with the
      // method of the CONNECT [MQTT-4.12.0-5].
      const bool more = s.what == hooks::auth_step::kind::next;
      codec::auth out;
      out.reason = more ? reason_code::continue_authentication : reason_code::success;
      codec::properties_builder props;
      props.add(codec::property_id::authentication_method, a->method);
      if (s.data) props.add(codec::property_id::authentication_data, *s.data);
      out.properties = props.view();
      std::size_t size = 0;
      if (codec::encoded_size(out, codec::protocol_version::v5, size) ||
          (a->max_packet != 0 && size > a->max_packet) || (s.data && s.data->size() > 0xFFFF)) {
        // Larger than the client takes [MQTT-3.1.2-24] or than the field holds: it cannot go on.
        fail_authentication(l, reason_code::packet_too_large, {}, now, "AUTH larger than the client's Maximum Packet Size");
        return false;
      }
      if (!more) {
        a->running = false;
        this->log(log_level::debug, "client '{}' re-authenticated", l.client_id());
      }
      l.send(out, now);
      restart_deadline(l, now);  // Keep Alive counts from now: the wait was ours
      return !l.is_closing();
    } else {
      (void)l;
      (void)now;
      return false;
    }
  }

  /// The exchange failed: before CONNACK a CONNACK with `reason` [MQTT-4.12.0-4] (and `data`,
  /// with the method, when given); after it DISCONNECT with `reason` [MQTT-4.12.1-2]. Then the close.
  void fail_authentication(link_type& l, reason_code reason, std::optional<std::string> data, steady_time now,
                           std::string_view why = {}) {
    if constexpr (base::enhanced_auth) {
      auth_exchange_state& a = *l.auth_;
      a.running = false;
      if (!l.connected_) {
        const auto rc = static_cast<std::uint8_t>(reason);
        if (rc < 0x80 || !codec::detail::reason_code_allowed(codec::packet_type::connack, rc))
          reason = reason_code::not_authorized;
        codec::properties_builder props;
        if (data && data->size() <= 0xFFFF && !a.method.empty()) {
          props.add(codec::property_id::authentication_method, a.method);
          props.add(codec::property_id::authentication_data, *data);
        }
        return refuse_connect_code(l, connect_info_of(l, *l.pending_connect_), reason, connack_return_code::accepted,
                                   now, why, props.view(), a.max_packet);
      }
      const auto rc = static_cast<std::uint8_t>(reason);
      if (rc < 0x80 || !codec::detail::reason_code_allowed(codec::packet_type::disconnect, rc))
        reason = reason_code::not_authorized;
      this->log(log_level::notice, "client '{}': re-authentication failed: {}", l.client_id(), to_string(reason));
      disconnect(l, reason, why.empty() ? to_string(reason) : why, now, {}, a.max_packet);
    } else {
      (void)l;
      (void)reason;
      (void)data;
      (void)now;
    }
  }

  // ---- a cluster that owns client identifiers (cluster/contract.hpp claim())

  /// Asks the cluster to make this node the client's owner before any session is touched. The
  /// reader waits, as for an asynchronous authenticate, and the CONNECT timeout bounds the wait.
  void claim_client(link_type& l, connect_request&& r, const std::optional<std::string>* auth_data) {
    if constexpr (base::claims) {
      if (auth_data != nullptr) r.final_auth_data = *auth_data;
      auto answer = std::make_shared<claim_answer>();
      r.claim = answer;
      const std::string client_id = r.client_id;
      const bool clean_start = r.clean_start;
      l.pending_connect_ = std::make_unique<connect_request>(std::move(r));
      l.wait_for_authentication(true);
      this->begin_claim(client_id);
      this->cluster().claim(client_id, clean_start, [answer, link = l.self()](cluster::claim_result result) {
        // Any thread: read on the link's own, after the post.
        {
          std::lock_guard<std::mutex> lk(answer->mutex);
          answer->result = std::move(result);
        }
        link->post(link_event::claimed);
      });
    } else {
      (void)l;
      (void)r;
      (void)auth_data;
    }
  }

  /// The cluster answered the claim: the session another node handed over is adopted and the
  /// CONNECT accepted, or it is refused (Server unavailable) when this node could not become the
  /// owner. True when the reader is to read again.
  bool on_claimed(link_type& l, steady_time now) {
    if constexpr (base::claims) {
      if (!l.authenticating_ || l.is_closing() || !l.pending_connect_ || !l.pending_connect_->claim) return false;
      if constexpr (base::durable) base::take_recorded();
      l.wait_for_authentication(false);
      std::unique_ptr<connect_request> r = std::move(l.pending_connect_);
      cluster::claim_result result;
      {
        std::lock_guard<std::mutex> lk(r->claim->mutex);
        result = std::move(r->claim->result);
      }
      r->claim.reset();
      const std::string client_id = r->client_id;
      if (result.error) {
        this->log(log_level::warning, "client '{}': the cluster did not make this node its owner: {}", client_id,
                  result.error.message());
        refuse_connect_code(l, connect_info_of(l, *r), reason_code::server_unavailable,
                            connack_return_code::server_unavailable, now);
        this->end_claim(client_id, now);
        return false;
      }
      if (result.session && !r->clean_start) this->adopt_session(client_id, std::move(*result.session), now);
      r->claimed = true;
      const std::optional<std::string> auth_data = std::move(r->final_auth_data);
      const auth_exchange_state* auth = nullptr;
      if constexpr (base::enhanced_auth) auth = l.auth_.get();
      accept_connect(l, std::move(*r), now, auth, auth_data ? &auth_data : nullptr);
      this->end_claim(client_id, now);  // hand-overs asked for meanwhile find it attached
      return !l.is_closing();
    } else {
      (void)l;
      (void)now;
      return false;
    }
  }

  /// An authenticated CONNECT: the session is made, resumed or taken over, and CONNACK goes out
  /// (after an AUTH exchange with its method and final data, `auth` and `auth_data`).
  void accept_connect(link_type& l, connect_request&& r, steady_time now, const auth_exchange_state* auth = nullptr,
                      const std::optional<std::string>* auth_data = nullptr) {
    if constexpr (hooks::has_redirect_v<hooks_type>) {
      // Authenticated, and no session touched yet: the host may still send the client elsewhere
      // (asked once, before a cluster's claim).
      if (!r.claimed) {
        hooks::connect_info info = connect_info_of(l, r);
        info.password.reset();
        if (std::optional<hooks::redirection> to = hooks_.redirect(info))
          return refuse_redirected(l, info, *to, r.maximum_packet_size, now);
      }
    }
    if constexpr (base::claims) {
      if (!r.claimed) return claim_client(l, std::move(r), auth_data);
    }
    const auto v = r.version;
    const bool v5 = v == codec::protocol_version::v5;
    const std::string& client_id = r.client_id;
    std::chrono::seconds expiry = r.requested_expiry;
    if (opts_.persistent_session_expiry.count() != 0 && expiry > opts_.persistent_session_expiry)
      expiry = opts_.persistent_session_expiry;

    detail::ref_ptr<session_type> rec;
    bool session_present = false;
    detail::ref_ptr<link_type> old_conn;
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      auto it = sessions_.find(client_id);
      if (it != sessions_.end()) {
        rec = it->second;
        old_conn = rec->conn;
        if (r.clean_start) {
          drop_session_subscriptions(*rec);
          this->hand_over_shared(*rec, now);  // the old session ends here
          rec->state.clear_messages();
          if (rec->extras) rec->extras->retained_backlog.clear();
          this->record([&](auto& st) { st.erase_session(client_id); });  // and all it owned
        } else {
          session_present = true;
        }
      } else {
        rec = detail::ref_ptr<session_type>::make(client_id, &session_limits_);
        sessions_.emplace(rec->state.client_id(), rec);
      }
      // What was admitted for an earlier connection is in flight and is resent below.
      clear_outbox(*rec);
      if (rec->extras) {
        // [MQTT-3.1.3-9] a new connection to the session within the Will Delay cancels the will.
        if (rec->extras->pending_will && !r.clean_start) this->record([&](auto& st) { st.erase_will(client_id); });
        rec->extras->pending_will = message_ptr();
        ++rec->extras->will_generation;
      }
      // Before the link is the session's: a host listing clients from another thread reads these
      // under this lock.
      l.version_ = v;
      rec->connected_at = now;
      rec->conn = l.self();
      if constexpr (session_type::keeps_origin) {
        // Who the client is now, for deliveries to its session (authorize_read), also offline.
        rec->owner_username = r.username;
        rec->owner_listener = l.listener_;
        rec->owner_version = v;
        rec->owner_known = true;
      }
      rec->state.set_client_limits(r.receive_maximum, r.maximum_packet_size);
      rec->expiry = stored_expiry(expiry);
      if (base::kept(*rec)) this->record([&](auto& st) { st.save_session(client_id, rec->expiry.count()); });
    }
    std::uint16_t keep_alive = r.keep_alive;
    bool server_keep_alive = false;
    if (opts_.max_keep_alive != 0 && (keep_alive == 0 || keep_alive > opts_.max_keep_alive) && v5) {
      keep_alive = opts_.max_keep_alive;
      server_keep_alive = true;
    }
    if (r.will) {
      link_extras& x = l.more();
      x.will = std::move(r.will);
      x.will_delay = r.will_delay;
    }
    // The broker's aliases toward the client: as many as both allow [MQTT-3.3.2-11] (none when the
    // client announced none [MQTT-3.1.2-27]); a new connection starts without any [MQTT-3.3.2-7].
    if (const auto n = std::min(r.topic_alias_maximum, opts_.max_outbound_topic_aliases); n != 0)
      l.more().alias_table().set_outbound_maximum(n);
    if constexpr (session_type::keeps_origin) l.username_ = std::move(r.username);
    // After CONNACK: Keep Alive replaces the CONNECT timeout.
    l.connected_ = true;
    l.session_ = rec;
    l.keep_alive_limit_ = std::chrono::duration<std::uint32_t, std::milli>(
        static_cast<std::uint32_t>(static_cast<double>(keep_alive) * 1000.0 * opts_.keep_alive_multiplier));
    restart_deadline(l, now);

    codec::connack ack;
    ack.session_present = session_present;  // [MQTT-3.2.2-2] [MQTT-3.2.2-3]
    codec::properties_builder props;
    if (v5) {
      props.add(codec::property_id::receive_maximum, opts_.receive_maximum);
      // 5.0 §3.2.2.3.2: a server that keeps the session for less than asked says so.
      if (expiry != r.requested_expiry)
        props.add(codec::property_id::session_expiry_interval, static_cast<std::uint32_t>(expiry.count()));
      props.add(codec::property_id::maximum_packet_size, opts_.max_packet_size);
      props.add(codec::property_id::topic_alias_maximum, opts_.topic_alias_maximum);
      // Absent means QoS 2 and retain available [MQTT-3.2.2-9]: sent only when switched off.
      if (opts_.maximum_qos != codec::qos::exactly_once)
        props.add(codec::property_id::maximum_qos, static_cast<std::uint32_t>(opts_.maximum_qos));
      if (!opts_.retain_available) props.add(codec::property_id::retain_available, 0);
      // Only to a client that asked, and then optional [MQTT-3.1.2-28].
      if (r.wants_response_information && !opts_.response_information.empty())
        props.add(codec::property_id::response_information, opts_.response_information);
      // Said either way, 1 included, as these three have always been.
      props.add(codec::property_id::shared_subscription_available, opts_.shared_subscriptions ? 1 : 0);
      props.add(codec::property_id::wildcard_subscription_available, opts_.wildcard_subscriptions ? 1 : 0);
      props.add(codec::property_id::subscription_identifier_available, opts_.subscription_identifiers ? 1 : 0);
      if (r.assigned_id) props.add(codec::property_id::assigned_client_identifier, client_id);
      if (server_keep_alive) props.add(codec::property_id::server_keep_alive, keep_alive);
      // After an AUTH exchange the CONNECT's method [MQTT-4.12.0-5] and the final data, if any;
      // never a method without one in the CONNECT [MQTT-4.12.0-6].
      if (auth != nullptr) {
        props.add(codec::property_id::authentication_method, auth->method);
        if (auth_data != nullptr && *auth_data) props.add(codec::property_id::authentication_data, **auth_data);
      }
      ack.properties = props.view();
    }
    l.send(ack, now);

    if (!opts_.connection_messages) {
      // The host asked for no line per client connecting and leaving.
    } else if constexpr (session_type::keeps_origin) {
      // Where it came from and who it says it is, when the broker keeps it (a hook takes a client_info).
      const hooks::client_info who = l.client_info();
      this->log(log_level::info, "client '{}' connected (MQTT {}, {} session) from {}:{} on listener {} ({}), {}{}",
                client_id, v5 ? "5.0" : "3.1.1", session_present ? "resumed" : "new",
                who.peer_address.empty() ? std::string_view("-") : who.peer_address, who.peer_port,
                who.listener != nullptr ? who.listener->index : 0,
                who.listener != nullptr ? who.listener->transport : std::string_view("-"),
                who.username ? "username " : "no username", who.username ? *who.username : std::string_view());
    } else {
      this->log(log_level::info, "client '{}' connected (MQTT {}, {} session)", client_id, v5 ? "5.0" : "3.1.1",
                session_present ? "resumed" : "new");
    }
    if constexpr (hooks::has_on_connect_v<hooks_type>) hooks_.on_connect(l.client_info());

    // [MQTT-4.4.0-1] a resumed session resends what was in flight, then what waited.
    if (session_present) {
      std::lock_guard<mutex_type> lk(state_mutex_);
      // Another thread may have taken the session over meanwhile; its connection resends then.
      if (rec->conn.get() == &l) rec->state.discard_unfit_inflight([&](const session::outgoing& gone) {
        // Too large for this connection: as if delivered [MQTT-3.1.2-25].
        hot_.dropped.fetch_add(1);
        if (base::kept(*rec)) this->record([&](auto& st) { st.acknowledge(rec->state.client_id(), gone.packet_id); });
      });
      // What is in flight again may not be durable yet (sent just before this reconnect): gated
      // before it is queued.
      if (rec->conn.get() == &l && base::kept(*rec) && rec->state.inflight_count() != 0) this->gate_writes(l);
      if (rec->conn.get() == &l) rec->state.for_each_inflight([&](const session::inflight_entry& e) {
        if (e.state == session::phase::awaiting_pubcomp) {
          codec::pubrel rel;
          rel.packet_id = e.pub.packet_id;
          l.send(rel, now);
        } else {
          l.send_publish(e.pub, now);
        }
      });
    }
    pump(l, now);

    // [MQTT-3.1.4-2] [MQTT-3.1.4-3] the earlier connection of this client is closed; it no longer
    // owns the session. Only now: its will may match this session, and must follow the CONNACK
    // [MQTT-3.2.0-1], in this connection's version, after the re-sends above.
    if (old_conn) {
      if constexpr (locking_type::thread_safe)
        old_conn->post(link_event::taken_over);  // its own thread closes it
      else
        take_over(*old_conn, now);
    }
  }

  // ---- PUBLISH and the acknowledgements

  /// $SYS/broker/connection/NAME/state, NAME one level.
  static bool is_bridge_state_topic(std::string_view t) noexcept {
    constexpr std::string_view head = "$SYS/broker/connection/", tail = "/state";
    if (t.size() <= head.size() + tail.size() || t.compare(0, head.size(), head) != 0 ||
        t.compare(t.size() - tail.size(), tail.size(), tail) != 0)
      return false;
    const std::string_view name = t.substr(head.size(), t.size() - head.size() - tail.size());
    return name.find('/') == std::string_view::npos;
  }

  void on_publish(link_type& l, codec::publish& p, steady_time now) {
    if (opts_.max_publish_rate != 0 && over_publish_rate(l, now)) return;
    const bool v5 = l.version() == codec::protocol_version::v5;
    if (v5 && !p.properties.empty()) {
      if (auto a = p.properties.find(codec::property_id::topic_alias)) {
        // Every alias from 1 to the Topic Alias Maximum of our CONNACK is taken [MQTT-3.3.2-12];
        // 0 or more is DISCONNECT 0x94 (section 3.3.2.3.4).
        const auto alias = static_cast<std::uint16_t>(a->integer);
        if (alias == 0 || alias > opts_.topic_alias_maximum) return violation(l, protocol_errc::topic_alias_invalid, now);
        topic_aliases& table = l.more().alias_table();
        if (p.topic.empty()) {
          // An alias the client never set on this connection is a Protocol Error.
          p.topic = table.inbound(alias);
          if (p.topic.empty()) return violation(l, protocol_errc::topic_alias_unknown, now);
        } else {
          table.set_inbound(alias, p.topic, opts_.topic_alias_maximum);
        }
      }
    }
    if (auto ec = topic::validate_topic_name(p.topic, topic_limits())) return violation(l, ec, now);  // [MQTT-3.3.2-2]
    // Above the Maximum QoS or retained where Retain Available is 0: what the CONNACK told the
    // client not to send ([MQTT-3.2.2-11] [MQTT-3.2.2-14]); 5.0 DISCONNECT 0x9B or 0x9A.
    if (p.qos_level > opts_.maximum_qos) return violation(l, protocol_errc::qos_not_supported, now);
    if (p.retain && !opts_.retain_available) return violation(l, protocol_errc::retain_not_supported, now);

    // $-topics belong to the server, but for a bridge's state topic, which Mosquitto lets any
    // client publish (its bridges keep their state there, on the remote).
    bool allowed = p.topic.empty() || p.topic.front() != '$' || is_bridge_state_topic(p.topic);
    reason_code refusal = reason_code::not_authorized;
    if (allowed && v5 && !p.properties.empty()) {
      // 5.0: a payload that says it is UTF-8 and is not is refused with 0x99 (section 3.3.2.3.2).
      if (auto f = p.properties.find(codec::property_id::payload_format_indicator); f && f->integer == 1 &&
                                                                                    codec::validate_utf8(p.payload)) {
        if (p.qos_level == codec::qos::at_most_once) return violation(l, protocol_errc::payload_format_invalid, now);
        allowed = false;
        refusal = reason_code::payload_format_invalid;
      }
    }
    message_ptr m;
    if (allowed) {
      m = v5 ? message::make(p.topic, p.payload, p.qos_level, p.retain, base::forwardable_properties(p.properties),
                             base::expiry_of(p.properties, now))
             : message::make(p.topic, p.payload, p.qos_level, p.retain);
      if constexpr (hooks::has_authorize_publish_v<hooks_type>) allowed = hooks_.authorize_publish(l.client_info(), *m);
    }
    if (!allowed) {
      std::lock_guard<mutex_type> lk(state_mutex_);
      ++stats_.publishes_denied;
    }

    switch (p.qos_level) {
      case codec::qos::at_most_once:
        if (allowed) publish_message(std::move(m), l.session(), now, true, &l);
        return;
      case codec::qos::at_least_once: {
        // Kept for its PUBACK (held_ack::settles), with a durable storage only.
        message_ptr settles;
        if constexpr (base::durable && !base::clustered) settles = m;
        std::size_t n = allowed ? publish_message(std::move(m), l.session(), now, true, &l) : 0;
        codec::puback ack;
        ack.packet_id = p.packet_id;
        if (v5)
          ack.reason = !allowed  ? refusal
                       : n == 0  ? reason_code::no_matching_subscribers
                                 : reason_code::success;
        // After the commit of what made the broker responsible (queued for kept sessions), or
        // once those sessions all took the message.
        return acknowledge(l, ack, now, std::move(settles));
      }
      case codec::qos::exactly_once: {
        session_type* rec = l.session();
        bool fresh;
        bool over_limit = false;
        {
          session_guard lk(*this, *rec);
          fresh = rec->state.on_qos2_publish(p.packet_id);
          over_limit = fresh && rec->state.inbound_qos2_count() > opts_.receive_maximum;
          // 5.0: a PUBREC of 0x80 or more ends the exchange; the identifier is free for a new
          // message at once [MQTT-4.3.3-9] (no PUBREL follows).
          if (fresh && !allowed && v5) rec->state.on_pubrel(p.packet_id);
        }
        // 5.0: more unreleased QoS 2 messages than the Receive Maximum we announced (section 3.3.4).
        if (over_limit && v5) return violation(l, protocol_errc::receive_maximum_exceeded, now);
        if constexpr (base::durable) {
          if (fresh && allowed && base::kept(*rec)) {
            // The identifier and the message are durable before the PUBREC and before routing,
            // so a PUBLISH resent after a crash is known and not routed twice.
            this->record([&](auto& st) { st.receive(rec->state.client_id(), p.packet_id, m); });
            held_ack a{0, codec::packet_type::pubrec, p.packet_id, reason_code::success, std::move(m), {}};
            return base::acknowledge(l, std::move(a), now);
          }
        }
        std::size_t n = 0;
        // A re-sent PUBLISH (DUP) before PUBREL is acknowledged again but routed only once [MQTT-4.3.3-2].
        if (fresh && allowed) n = publish_message(std::move(m), rec, now, true, &l);
        codec::pubrec rec_ack;
        rec_ack.packet_id = p.packet_id;
        if (v5)
          rec_ack.reason = !allowed                 ? refusal
                           : (fresh && n == 0)      ? reason_code::no_matching_subscribers
                                                    : reason_code::success;
        return acknowledge(l, rec_ack, now);
      }
    }
  }

  void on_puback(link_type& l, const codec::puback& a, steady_time now) {
    bool done;
    {
      session_guard lk(*this, *l.session());
      done = l.session()->state.on_puback(a.packet_id);
    }
    if (done) record_outgoing(l, [&](auto& st, const std::string& id) { st.acknowledge(id, a.packet_id); });
    pump(l, now);
  }

  void on_pubrec(link_type& l, const codec::pubrec& a, steady_time now) {
    bool known;
    {
      session_guard lk(*this, *l.session());
      known = l.session()->state.on_pubrec(a.packet_id);
    }
    if (static_cast<std::uint8_t>(a.reason) >= 0x80) {
      // 5.0: a PUBREC of 0x80 or more ends the exchange and frees the identifier (§4.3.3).
      bool done;
      {
        session_guard lk(*this, *l.session());
        done = l.session()->state.on_pubcomp(a.packet_id);
      }
      if (done) record_outgoing(l, [&](auto& st, const std::string& id) { st.acknowledge(id, a.packet_id); });
      pump(l, now);  // its slot in the window is free: what waited goes out
      return;
    }
    // PUBREL is owed from now on, also after a restart.
    if (known) record_outgoing(l, [&](auto& st, const std::string& id) { st.pubrec(id, a.packet_id); });
    codec::pubrel rel;
    rel.packet_id = a.packet_id;
    if (!known && l.version() == codec::protocol_version::v5) rel.reason = reason_code::packet_identifier_not_found;
    // The PUBREL leaves once the PUBREC is durable: after a crash the broker then owes PUBREL, not
    // the PUBLISH the client has already completed. Gated before it is queued (which may write).
    if constexpr (base::durable) {
      if (known && l.session() != nullptr && base::kept(*l.session())) this->gate_writes(l);
    }
    l.send(rel, now);
  }

  void on_pubrel(link_type& l, const codec::pubrel& r, steady_time now) {
    bool known;
    {
      session_guard lk(*this, *l.session());
      known = l.session()->state.on_pubrel(r.packet_id);
    }
    // The release is durable before PUBCOMP: after a restart the identifier is free again.
    if (known) record_outgoing(l, [&](auto& st, const std::string& id) { st.release(id, r.packet_id); });
    // A repeated PUBREL gets PUBCOMP again; 5.0 marks an identifier it does not know.
    codec::pubcomp comp;
    comp.packet_id = r.packet_id;
    if (!known && l.version() == codec::protocol_version::v5) comp.reason = reason_code::packet_identifier_not_found;
    acknowledge(l, comp, now);
  }

  void on_pubcomp(link_type& l, const codec::pubcomp& a, steady_time now) {
    bool done;
    {
      session_guard lk(*this, *l.session());
      done = l.session()->state.on_pubcomp(a.packet_id);
    }
    if (done) record_outgoing(l, [&](auto& st, const std::string& id) { st.acknowledge(id, a.packet_id); });
    pump(l, now);
  }

  /// A change to what a kept session owes, for a durable storage (compiled out otherwise).
  template <class F>
  void record_outgoing(link_type& l, F&& f) {
    if constexpr (base::durable) {
      session_type* rec = l.session();
      if (rec != nullptr && base::kept(*rec)) this->record([&](auto& st) { f(st, rec->state.client_id()); });
    } else {
      (void)l;
      (void)f;
    }
  }

  /// An acknowledgement: sent now, or held until what it acknowledges is durable.
  template <class Ack>
  void acknowledge(link_type& l, const Ack& a, steady_time now, message_ptr settles = {}) {
    if constexpr (base::durable)
      base::acknowledge(l, held_ack{0, Ack::type, a.packet_id, a.reason, message_ptr(), {}, std::move(settles)}, now);
    else
      l.send(a, now);
  }

  // ---- SUBSCRIBE, UNSUBSCRIBE, DISCONNECT

  void on_subscribe(link_type& l, const codec::subscribe& s, steady_time now) {
    const bool v5 = l.version() == codec::protocol_version::v5;
    std::uint32_t sub_id = 0;  // the decoder refused 0
    if (v5) {
      if (auto p = s.properties.find(codec::property_id::subscription_identifier)) sub_id = p->integer;
    }
    // A feature CONNACK said is unavailable, asked for anyway: SUBACK refuses the filter (0xA1,
    // 0xA2, 0x9E; 3.1.1 0x80), and the connection stays. 5.0 sections 3.2.2.3.12 to 3.2.2.3.14
    // also allow calling it a Protocol Error (DISCONNECT with that code); section 3.9.3 gives
    // SUBACK the same codes, and refusing one subscription is all that is needed.
    const bool ids_refused = sub_id != 0 && !opts_.subscription_identifiers;
    const topic::limits lim = topic_limits();
    const bool shares = opts_.shared_subscriptions;
    if (v5 && shares) {
      // [MQTT-3.8.3-4] No Local on a shared subscription is a Protocol Error: found before any
      // filter of the packet is applied.
      for (const codec::subscribe_entry& e : s.entries) {
        std::error_code ec;
        if (e.options.no_local && topic::parse_filter(e.filter, lim, ec).is_shared())
          return violation(l, protocol_errc::no_local_on_shared_subscription, now);
      }
    }
    codec::suback ack;
    ack.packet_id = s.packet_id;  // [MQTT-3.8.4-2]
    ack.reasons.reserve(s.entries.size());
    session_type* rec = l.session();
    for (const codec::subscribe_entry& e : s.entries) {
      if (ids_refused) {
        ack.reasons.push_back(reason_code::subscription_identifiers_not_supported);  // each filter
        continue;
      }
      // `$share/{ShareName}/{filter}` [MQTT-4.8.2-1] [MQTT-4.8.2-2], also from 3.1.1 clients (as
      // Mosquitto and EMQX accept it); switched off, it is refused as unsupported.
      std::error_code invalid;
      bool shared = false;
      if (shares)
        shared = topic::parse_filter(e.filter, lim, invalid).is_shared();
      else
        invalid = topic::validate_topic_filter(e.filter, lim);
      if (invalid) {
        ack.reasons.push_back(v5 ? reason_code::topic_filter_invalid : reason_code::unspecified_error);
        continue;
      }
      if (!shares && topic::is_shared_filter(e.filter)) {
        ack.reasons.push_back(v5 ? reason_code::shared_subscriptions_not_supported : reason_code::unspecified_error);
        continue;
      }
      if (!opts_.wildcard_subscriptions && topic::has_wildcards(e.filter)) {
        // 3.1.1 [MQTT-3.8.3-2]: a server without wildcards refuses every filter that has one.
        ack.reasons.push_back(v5 ? reason_code::wildcard_subscriptions_not_supported : reason_code::unspecified_error);
        continue;
      }
      // Granted at most the server's Maximum QoS: the SUBSCRIBE itself is still accepted [MQTT-3.2.2-10].
      codec::subscribe_options options = e.options;
      options.max_qos = std::min(options.max_qos, opts_.maximum_qos);
      if (l.bridge() && !shared) {
        // A bridge (DECISIONS.md; Mosquitto's try_private): what it published is not sent back
        // to it, so two brokers bridged both ways do not loop, and retained messages it forwards
        // stay retained on the far side (5.0's No Local and Retain As Published, for 3.1.1 too).
        options.no_local = true;
        options.retain_as_published = true;
      }
      if constexpr (hooks::has_authorize_subscribe_v<hooks_type>) {
        if (!hooks_.authorize_subscribe(l.client_info(), e.filter, e.options.max_qos)) {
          ack.reasons.push_back(v5 ? reason_code::not_authorized : reason_code::unspecified_error);
          continue;
        }
      }
      {
        std::lock_guard<mutex_type> lk(state_mutex_);
        if (rec->conn.get() != &l) {
          // Taken over by a newer connection on another thread: only the owner may route to it.
          ack.reasons.push_back(reason_code::unspecified_error);
          continue;
        }
        const bool exists = rec->state.subscriptions().count(std::string(e.filter)) != 0;
        if (!exists && rec->state.subscriptions().size() >= opts_.max_subscriptions_per_client) {
          ack.reasons.push_back(v5 ? reason_code::quota_exceeded : reason_code::unspecified_error);
          continue;
        }
        router::subscription sub;
        sub.options = options;
        sub.identifier = sub_id;
        // [MQTT-3.8.4-3] an existing subscription to the same filter is replaced (a shared one:
        // the member's options in its group).
        const bool is_new = this->add_subscription(*rec, e.filter, sub);
        if (base::kept(*rec))
          this->record([&](auto& st) { st.save_subscription(rec->state.client_id(), e.filter, options, sub_id); });
        // The retained messages are taken under the same lock that adds the route: a message
        // published concurrently is then either live or retained for this subscriber, never
        // both [MQTT-4.3.3-2]. They go out after the SUBACK (pump() below), on every subscribe,
        // a repeated one included [MQTT-3.8.4-3]. Only for a non-shared subscription: 5.0 section
        // 3.3.1.3 sends retained messages when a new Non-shared Subscription is made, so a shared
        // one gets none (a 3.1.1 client's shared subscription alike).
        const auto rh = e.options.retain_handling;
        if (!shared && (rh == codec::retain_handling_option::send ||
                        (rh == codec::retain_handling_option::send_if_new && is_new))) {
          const std::uint32_t now_s = clock_seconds(now);
          retained_.match(e.filter, [&](const message_ptr& m) {
            if (m->expired(now_s)) return;  // an expired retained message is no longer served
            if constexpr (hooks::has_authorize_read_v<hooks_type>) {
              if (!this->may_read(*rec, *m)) return;
            }
            session::outgoing o;
            o.msg = m;
            o.qos_level = std::min(m->qos_level(), options.max_qos);
            o.retain = true;  // [MQTT-3.3.1-8]
            if (sub_id != 0) o.subscription_ids.push_back(sub_id);
            rec->more().retained_backlog.push_back(std::move(o));
          });
        }
      }
      const codec::qos granted = options.max_qos;
      ack.reasons.push_back(static_cast<reason_code>(granted));
      if constexpr (hooks::has_on_subscribe_v<hooks_type>) hooks_.on_subscribe(l.client_info(), e.filter, granted);
    }
    if constexpr (base::durable) {
      // After the commit of the subscriptions a kept session records.
      base::acknowledge(l, held_ack{0, codec::packet_type::suback, ack.packet_id, reason_code::success, message_ptr(),
                                    std::move(ack.reasons)},
                        now);
    } else {
      l.send(ack, now);
    }
    pump(l, now);
  }

  void on_unsubscribe(link_type& l, const codec::unsubscribe& u, steady_time now) {
    codec::unsuback ack;
    ack.packet_id = u.packet_id;  // [MQTT-3.10.4-4]
    session_type* rec = l.session();
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      const bool owner = rec->conn.get() == &l;  // see on_subscribe
      for (std::string_view f : u.filters) {
        const bool existed = owner && rec->state.forget_subscription(f);
        if (existed) {
          this->remove_route(*rec, f);  // a shared one leaves its group
          if (base::kept(*rec)) this->record([&](auto& st) { st.erase_subscription(rec->state.client_id(), f); });
        }
        ack.reasons.push_back(existed ? reason_code::success : reason_code::no_subscription_existed);
      }
    }
    if constexpr (hooks::has_on_unsubscribe_v<hooks_type>) {
      // After the lock: hooks never run under it. ack.reasons is in the order of u.filters.
      for (std::size_t i = 0; i < u.filters.size(); ++i)
        if (ack.reasons[i] == reason_code::success) hooks_.on_unsubscribe(l.client_info(), u.filters[i]);
    }
    if constexpr (base::durable) {
      // Not after a commit of its own, but never before a SUBACK held before it.
      base::acknowledge(l, held_ack{0, codec::packet_type::unsuback, ack.packet_id, reason_code::success, message_ptr(),
                                    std::move(ack.reasons)},
                        now);
    } else {
      l.send(ack, now);
    }
  }

  void on_disconnect(link_type& l, const codec::disconnect& d, steady_time now) {
    // [MQTT-3.14.4-3] a DISCONNECT discards the will, unless 5.0 asks for it with 0x04.
    const bool keep_will = d.reason == reason_code::disconnect_with_will_message;
    if (l.version() == codec::protocol_version::v5) {
      if (auto p = d.properties.find(codec::property_id::session_expiry_interval)) {
        session_type* rec = l.session();
        bool extends_ended_session;
        {
          std::lock_guard<mutex_type> lk(state_mutex_);
          // 5.0 section 3.14.2.2.2: a session that was to end with the connection cannot be extended here.
          extends_ended_session = rec->expiry.count() == 0 && p->integer != 0;
          if (!extends_ended_session) {
            rec->expiry = stored_expiry(std::chrono::seconds(p->integer));
            if (base::kept(*rec))
              this->record([&](auto& st) { st.save_session(rec->state.client_id(), rec->expiry.count()); });
          }
        }
        if (extends_ended_session) return violation(l, protocol_errc::invalid_property_value, now);
      }
    }
    if (!keep_will && l.extras_) l.extras_->will = message_ptr();
    close_for(l, keep_will ? "DISCONNECT with Will Message (0x04) received" : "DISCONNECT received",
              reason_code::normal_disconnection, false, !keep_will, now);
  }

  /// A listener's open connections and its limit (limit_listener).
  struct listener_count {
    std::size_t open = 0;
    std::size_t limit = std::numeric_limits<std::size_t>::max();
  };
  /// The count of a link's listener slot (its index + 1), made on first use; null for slot 0.
  /// state_mutex_ held exclusively.
  listener_count* listener_slot(std::uint32_t slot) {
    if (slot == 0) return nullptr;
    if (slot > listener_counts_.size()) listener_counts_.resize(slot);
    return &listener_counts_[slot - 1];
  }

  // Redirections the host asked for (redirect()), until their links take them. state_mutex_.
  std::vector<std::pair<const link_type*, hooks::redirection>> redirects_;
  std::vector<std::pair<const link_type*, reason_code>> kicks_;  // kick(): the links told, and with what
  // By listener index: every link opened with link::set_listener is counted, limited or not, so
  // a limit set later starts from the true figure. state_mutex_.
  std::vector<listener_count> listener_counts_;
};

}  // namespace engine
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_ENGINE_PROTOCOL_HPP
