#ifndef MQTTBROKER_CLIENT_SESSION_HPP
#define MQTTBROKER_CLIENT_SESSION_HPP

// The client side of MQTT 3.1.1 and 5.0 without I/O: what a client sends, and how it answers what
// a server sends. A driver (client/client.hpp on Asio, or a test) feeds it the bytes that arrive
// and the time, and writes out what it appends to output(). The bridge is built on it; so can a
// host that needs a client of its own.
//
// Outgoing QoS 1 and 2 messages are queued (bounded) while the connection is down or the window
// of unacknowledged messages is full, and sent again with DUP after a reconnect, so a persistent
// session loses none. Incoming QoS 2 messages are delivered once: a PUBLISH resent before its
// PUBREL is acknowledged again, not delivered again [MQTT-4.3.3-10].

#include <mqttbroker/codec/decoder.hpp>
#include <mqttbroker/codec/encoder.hpp>
#include <mqttbroker/codec/packets.hpp>
#include <mqttbroker/codec/properties.hpp>
#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/error.hpp>
#include <mqttbroker/message.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace client {

/// The Will a client leaves with the server: published if the connection ends without DISCONNECT.
struct will {
  std::string topic;
  std::string payload;
  codec::qos qos_level = codec::qos::at_most_once;
  bool retain = false;
  std::string properties;  // 5.0: encoded Will Properties (codec::properties_builder)
};

struct session_options {
  codec::protocol_version version = codec::protocol_version::v3_1_1;
  std::string client_id;
  /// Clean Session (3.1.1) or Clean Start (5.0). false with session_expiry > 0 (5.0) keeps the
  /// server's session across reconnects: what a bridge that must lose nothing wants.
  bool clean_start = true;
  std::uint16_t keep_alive = 60;  // seconds; 0: none
  std::optional<std::string> username;
  std::optional<std::string> password;
  std::optional<will> last_will;
  std::uint32_t session_expiry = 0;  // 5.0: seconds; 0xFFFFFFFF: never expires
  /// QoS 1 and 2 messages sent and not yet acknowledged, at most (a 5.0 server's Receive Maximum
  /// lowers it).
  std::uint16_t max_inflight = 32;
  /// Messages waiting to be sent, at most: publish() refuses more.
  std::size_t max_queued = 100000;
  /// The protocol level with its high bit set (0x84, 0x85), as Mosquitto's bridges announce
  /// themselves (`try_private`): a server that knows it treats the connection as a bridge.
  bool bridge = false;
  /// More 5.0 CONNECT properties (encoded), besides Session Expiry Interval, Receive Maximum and
  /// Maximum Packet Size.
  std::string connect_properties;
  /// The largest packet accepted from the server (a larger one is an error the driver closes on),
  /// announced to a 5.0 server as Maximum Packet Size so that it never sends one.
  std::uint32_t max_packet_size = 1024 * 1024;
  /// QoS 1 and 2 messages from the server are acknowledged (PUBACK, PUBREC) only when the host
  /// calls acknowledge() with the message's delivery_ticket(): a bridge acknowledges what its
  /// other side has taken, so that the server keeps a message until then. The acknowledgements go
  /// out in the order the messages came [MQTT-4.6.0-2] [MQTT-4.6.0-3].
  bool deferred_acks = false;
};

enum class session_state : std::uint8_t { disconnected, connecting, connected };

/// A session's counters.
struct session_stats {
  std::uint64_t published = 0;     // PUBLISH packets sent (first sends and resends)
  std::uint64_t resent = 0;        // of them, sent again after a reconnect (DUP)
  std::uint64_t acknowledged = 0;  // QoS 1 and 2 messages the server completed
  std::uint64_t received = 0;      // application messages delivered to the handler
  std::uint64_t duplicates = 0;    // QoS 2 PUBLISHes resent by the server, acknowledged again only
  std::uint64_t refused = 0;       // publish() calls refused: queue full
};

/// The events a session reports. `Handler` has these members (a struct of no-ops is a valid one):
///   void on_connack(const codec::connack&)       every CONNACK, accepted or refused
///   void on_message(const codec::publish&)       an application message, once; views valid for the call
///   void on_published(std::uint64_t ticket, reason_code)  a QoS 1/2 publish completed
///   void on_suback(const codec::suback&)
///   void on_unsuback(const codec::unsuback&)
///   void on_disconnect(const codec::disconnect&) a 5.0 server's DISCONNECT
/// A handler may call publish(), subscribe() and unsubscribe() from any of them.
template <class Handler>
class session {
 public:
  using clock = std::chrono::steady_clock;

  session(session_options o, Handler h)
      : opts_(std::move(o)), handler_(std::move(h)), decoder_(decoder_options_for(opts_)) {}

  const session_options& options() const noexcept { return opts_; }
  session_options& options() noexcept { return opts_; }  // takes effect at the next start()
  Handler& handler() noexcept { return handler_; }
  session_state state() const noexcept { return state_; }
  const session_stats& stats() const noexcept { return stats_; }

  /// Bytes to write to the server; the driver takes them (clear or swap) once written.
  std::string& output() noexcept { return out_; }

  /// A new connection is up: appends CONNECT. Whatever the last connection left half read goes.
  std::error_code start(clock::time_point now) {
    decoder_ = codec::decoder(decoder_options_for(opts_));
    out_.clear();
    ping_sent_ = false;
    last_sent_ = now;
    last_received_ = now;
    state_ = session_state::connecting;
    codec::connect c;
    c.version = opts_.version;
    c.clean_start = opts_.clean_start;
    c.keep_alive = opts_.keep_alive;
    c.client_id = opts_.client_id;
    std::string props;  // the view below points into it until encode() below has run
    if (v5()) {
      codec::properties_builder b;
      if (opts_.session_expiry != 0) b.add(codec::property_id::session_expiry_interval, opts_.session_expiry);
      b.add(codec::property_id::receive_maximum, 65535);
      if (opts_.max_packet_size < codec::max_packet_size)
        b.add(codec::property_id::maximum_packet_size, opts_.max_packet_size);
      props = std::string(b.view().bytes()) + opts_.connect_properties;
      c.properties = codec::properties_view::from_validated(props);
    }
    if (opts_.last_will) {
      codec::will_message w;
      w.topic = opts_.last_will->topic;
      w.payload = opts_.last_will->payload;
      w.qos_level = opts_.last_will->qos_level;
      w.retain = opts_.last_will->retain;
      if (v5()) w.properties = codec::properties_view::from_validated(opts_.last_will->properties);
      c.will = w;
    }
    if (opts_.username) c.username = *opts_.username;
    if (opts_.password) c.password = *opts_.password;
    c.bridge = opts_.bridge;
    if (auto ec = codec::encode(c, opts_.version, out_)) {
      state_ = session_state::disconnected;
      return ec;
    }
    return {};
  }

  /// The connection is gone (closed, failed, timed out). Sent messages stay owed: they go again
  /// with DUP on the next connection whose server kept the session, as new ones otherwise.
  void lost() noexcept {
    state_ = session_state::disconnected;
    out_.clear();
    // A QoS 1 message not acknowledged will come again (DUP) and be reported again; a QoS 2 one
    // will not be reported twice, so its acknowledgement still stands when the host gives it.
    unacked_.erase(std::remove_if(unacked_.begin(), unacked_.end(),
                                  [](const inbound& e) { return e.q == codec::qos::at_least_once; }),
                   unacked_.end());
  }

  /// With deferred_acks: the ticket of the QoS 1 or 2 message on_message() is reporting (0
  /// otherwise), for acknowledge().
  std::uint64_t delivery_ticket() const noexcept { return delivering_; }
  /// With deferred_acks: the host has taken the message of `ticket`; its PUBACK or PUBREC goes
  /// once every earlier one's has. A ticket of a connection since lost (QoS 1) or of a session
  /// the server no longer has is ignored.
  void acknowledge(std::uint64_t ticket) {
    for (inbound& e : unacked_) {
      if (e.ticket == ticket) {
        e.done = true;
        break;
      }
    }
    flush_acks();
  }
  /// Messages reported and not yet acknowledged by the host.
  std::size_t unacknowledged() const noexcept { return unacked_.size(); }

  /// Decodes what arrived. An error means the server broke the protocol: close the connection.
  std::error_code feed(const std::uint8_t* data, std::size_t n, clock::time_point now) {
    last_received_ = now;
    std::error_code failed;
    const auto res = decoder_.feed(data, n, [&](codec::packet& p) {
      failed = on_packet(p);
      return !failed && state_ != session_state::disconnected;
    });
    if (failed) return failed;
    return res.ec;
  }

  /// Keep-alive: appends PINGREQ when nothing was sent for keep_alive seconds; returns
  /// errc::timed_out when the server has been silent for 1.5 times that after a PINGREQ.
  std::error_code tick(clock::time_point now) {
    if (state_ == session_state::disconnected || opts_.keep_alive == 0) return {};
    const auto ka = std::chrono::seconds(opts_.keep_alive);
    if (ping_sent_ && now - last_received_ >= ka + ka / 2) return std::make_error_code(std::errc::timed_out);
    if (state_ == session_state::connected && !ping_sent_ && now - last_sent_ >= ka) {
      append(codec::pingreq{});
      ping_sent_ = true;
      last_sent_ = now;
    } else if (state_ == session_state::connecting && now - last_received_ >= ka + ka / 2) {
      return std::make_error_code(std::errc::timed_out);  // no CONNACK
    }
    return {};
  }
  /// When tick() next has something to do (for the driver's timer).
  clock::time_point next_tick() const noexcept {
    const auto ka = std::chrono::seconds(opts_.keep_alive == 0 ? 3600 : opts_.keep_alive);
    if (ping_sent_ || state_ != session_state::connected) return last_received_ + ka + ka / 2;
    return last_sent_ + ka;
  }
  /// The driver wrote something: the keep-alive counts from here.
  void sent(clock::time_point now) noexcept { last_sent_ = now; }

  /// Queues `m` for sending at `q` (its own QoS is not used: a bridge forwards at the route's).
  /// Returns a ticket that on_published() reports for QoS 1 and 2, or 0 when the queue is full.
  std::uint64_t publish(message_ptr m, codec::qos q, bool retain) {
    if (queued_.size() >= opts_.max_queued) {
      ++stats_.refused;
      return 0;
    }
    const std::uint64_t ticket = ++last_ticket_;
    queued_.push_back(outgoing{std::move(m), ticket, 0, q, retain, false, stage::queued, false});
    pump();
    return ticket;
  }

  /// Sends SUBSCRIBE (only while connected: a reconnect that finds no session subscribes again,
  /// which the driver does on on_connack). Returns its packet identifier, 0 when not connected.
  std::uint16_t subscribe(const std::vector<codec::subscribe_entry>& entries,
                          codec::properties_view properties = {}) {
    if (state_ != session_state::connected) return 0;
    codec::subscribe s;
    s.packet_id = take_id();
    s.entries = entries;
    s.properties = properties;
    pending_acks_.push_back(s.packet_id);
    append(s);
    return s.packet_id;
  }
  std::uint16_t unsubscribe(const std::vector<std::string_view>& filters) {
    if (state_ != session_state::connected) return 0;
    codec::unsubscribe u;
    u.packet_id = take_id();
    u.filters = filters;
    pending_acks_.push_back(u.packet_id);
    append(u);
    return u.packet_id;
  }
  /// Appends DISCONNECT: the server drops the Will. The driver closes once it is written.
  void disconnect(reason_code reason = reason_code::normal_disconnection) {
    if (state_ == session_state::disconnected) return;
    codec::disconnect d;
    d.reason = reason;
    append(d);
    state_ = session_state::disconnected;
  }

  /// Messages waiting (not yet sent) and in flight (sent, not completed).
  std::size_t queued() const noexcept { return queued_.size(); }
  std::size_t inflight() const noexcept { return inflight_.size(); }

 private:
  enum class stage : std::uint8_t { queued, publish_sent, pubrec_received };
  struct outgoing {
    message_ptr msg;
    std::uint64_t ticket;
    std::uint16_t packet_id;
    codec::qos q;
    bool retain;
    bool dup;
    stage at;
    bool downgraded = false;  // asked for QoS 1/2, sent at QoS 0: reported when written
  };

  static codec::decoder_options decoder_options_for(const session_options& o) {
    codec::decoder_options d;
    d.side = codec::role::client;
    d.version = o.version;
    d.max_packet_size = std::min(o.max_packet_size, codec::max_packet_size);
    return d;
  }
  bool v5() const noexcept { return opts_.version == codec::protocol_version::v5; }

  template <class Packet>
  void append(const Packet& p) {
    // Packets the session builds are valid by construction; a topic longer than 65,535 bytes
    // cannot be one (the broker never routes one), so an error here is dropped with the packet.
    (void)codec::encode(p, opts_.version, out_);
  }

  bool id_in_use(std::uint16_t id) const noexcept {
    for (const outgoing& o : inflight_)
      if (o.packet_id == id) return true;
    return std::find(pending_acks_.begin(), pending_acks_.end(), id) != pending_acks_.end();
  }
  std::uint16_t take_id() noexcept {
    // At most max_inflight + pending acknowledgements are in use: a free one is near.
    do {
      next_id_ = static_cast<std::uint16_t>(next_id_ == 0xFFFF ? 1 : next_id_ + 1);
    } while (id_in_use(next_id_));
    return next_id_;
  }

  std::size_t window() const noexcept {
    return std::min<std::size_t>(opts_.max_inflight == 0 ? 1 : opts_.max_inflight, server_receive_max_);
  }

  void send_publish(const outgoing& o) {
    codec::publish p;
    p.topic = o.msg->topic();
    p.payload = o.msg->payload();
    p.qos_level = o.q;
    p.retain = o.retain;
    p.dup = o.dup;
    p.packet_id = o.packet_id;
    if (v5()) p.properties = o.msg->properties();
    append(p);
    ++stats_.published;
  }

  // Moves queued messages into flight while the window allows (QoS 0 straight out).
  void pump() {
    if (state_ != session_state::connected) return;
    while (!queued_.empty()) {
      outgoing& o = queued_.front();
      // A 5.0 server's Maximum QoS and Retain Available bind what is sent [MQTT-3.2.2-11]
      // [MQTT-3.2.2-14]: sent at most at its QoS (on_published reports a downgraded QoS 1/2
      // message to QoS 0 when it is written), without the retain flag where it has none.
      if (o.q > server_max_qos_) {
        o.downgraded = o.downgraded || o.q != codec::qos::at_most_once;
        o.q = server_max_qos_;
      }
      if (!server_retain_) o.retain = false;
      if (o.q != codec::qos::at_most_once && inflight_.size() >= window()) break;
      if (o.q == codec::qos::at_most_once) {
        send_publish(o);
        const std::uint64_t ticket = o.ticket;
        const bool downgraded = o.downgraded;
        queued_.pop_front();
        if (downgraded) handler_.on_published(ticket, reason_code::success);
        continue;
      }
      o.packet_id = take_id();
      o.at = stage::publish_sent;
      send_publish(o);
      inflight_.push_back(std::move(o));
      queued_.pop_front();
    }
  }

  std::error_code on_packet(codec::packet& p) {
    switch (codec::type_of(p)) {
      case codec::packet_type::connack: return on_connack(std::get<codec::connack>(p));
      case codec::packet_type::publish: return on_publish(std::get<codec::publish>(p));
      case codec::packet_type::puback: return completed(std::get<codec::puback>(p).packet_id, std::get<codec::puback>(p).reason, false);
      case codec::packet_type::pubrec: return on_pubrec(std::get<codec::pubrec>(p));
      case codec::packet_type::pubcomp: return completed(std::get<codec::pubcomp>(p).packet_id, std::get<codec::pubcomp>(p).reason, true);
      case codec::packet_type::pubrel: return on_pubrel(std::get<codec::pubrel>(p));
      case codec::packet_type::suback: {
        auto& s = std::get<codec::suback>(p);
        release_ack(s.packet_id);
        handler_.on_suback(s);
        return {};
      }
      case codec::packet_type::unsuback: {
        auto& u = std::get<codec::unsuback>(p);
        release_ack(u.packet_id);
        handler_.on_unsuback(u);
        return {};
      }
      case codec::packet_type::pingresp: ping_sent_ = false; return {};
      case codec::packet_type::disconnect:
        state_ = session_state::disconnected;
        handler_.on_disconnect(std::get<codec::disconnect>(p));
        return {};
      default: return protocol_errc::unexpected_packet;
    }
  }

  std::error_code on_connack(const codec::connack& c) {
    if (state_ != session_state::connecting) return protocol_errc::unexpected_packet;
    if (c.code != 0) {
      state_ = session_state::disconnected;
      handler_.on_connack(c);
      return {};
    }
    state_ = session_state::connected;
    server_receive_max_ = 65535;
    server_max_qos_ = codec::qos::exactly_once;
    server_retain_ = true;
    if (v5()) {
      if (auto rm = c.properties.find(codec::property_id::receive_maximum)) server_receive_max_ = rm->integer;
      if (auto mq = c.properties.find(codec::property_id::maximum_qos))
        server_max_qos_ = mq->integer == 0 ? codec::qos::at_most_once : codec::qos::at_least_once;
      if (auto ra = c.properties.find(codec::property_id::retain_available)) server_retain_ = ra->integer != 0;
    }
    if (!c.session_present) {
      // The server has no session: its QoS 2 receipts are gone, and so are ours.
      incoming_qos2_.clear();
      pending_acks_.clear();
      unacked_.clear();
    }
    flush_acks();  // QoS 2 receipts the host gave while the connection was down
    // What was in flight goes first, in its order: with DUP to a server that kept the session
    // [MQTT-4.4.0-1]; as new messages to one that did not (the bridge loses nothing), except a
    // QoS 2 message whose PUBREC came: that server had it, so only the PUBREL is owed, and a
    // server without the session has nothing to release.
    std::deque<outgoing> again;
    again.swap(inflight_);
    std::deque<outgoing> as_new;
    std::vector<std::uint64_t> released;
    for (outgoing& o : again) {
      if (o.at == stage::pubrec_received) {
        if (!c.session_present) {
          released.push_back(o.ticket);
          continue;
        }
        inflight_.push_back(std::move(o));
        codec::pubrel r;
        r.packet_id = inflight_.back().packet_id;
        append(r);
      } else if (c.session_present) {
        o.dup = true;
        inflight_.push_back(std::move(o));
        send_publish(inflight_.back());
        ++stats_.resent;
      } else {
        o.dup = false;
        o.at = stage::queued;
        as_new.push_back(std::move(o));
      }
    }
    queued_.insert(queued_.begin(), std::make_move_iterator(as_new.begin()), std::make_move_iterator(as_new.end()));
    handler_.on_connack(c);
    for (const std::uint64_t t : released) {
      ++stats_.acknowledged;  // the server had it (PUBREC); its session, and the PUBREL owed, are gone
      handler_.on_published(t, reason_code::success);
    }
    pump();
    return {};
  }

  /// Records a message whose acknowledgement waits for the host, and reports it.
  void deliver_deferred(const codec::publish& p) {
    ++stats_.received;
    unacked_.push_back(inbound{++last_inbound_, p.packet_id, p.qos_level, false});
    delivering_ = last_inbound_;
    handler_.on_message(p);
    delivering_ = 0;
  }

  /// Sends the acknowledgements the host has given, oldest first, up to the first it has not.
  void flush_acks() {
    if (state_ != session_state::connected) return;
    while (!unacked_.empty() && unacked_.front().done) {
      const inbound e = unacked_.front();
      unacked_.pop_front();
      if (e.q == codec::qos::at_least_once) {
        codec::puback a;
        a.packet_id = e.packet_id;
        append(a);
      } else {
        codec::pubrec r;
        r.packet_id = e.packet_id;
        append(r);
      }
    }
  }

  std::error_code on_publish(const codec::publish& p) {
    if (state_ != session_state::connected) return protocol_errc::unexpected_packet;
    // This client's CONNECT allows no Topic Alias (its maximum is 0): one from the server is above
    // it, a Protocol Error (5.0 section 3.3.2.3.4), and a PUBLISH must then name its topic.
    if (v5() && !p.properties.empty() && p.properties.find(codec::property_id::topic_alias))
      return protocol_errc::topic_alias_invalid;
    if (p.topic.empty()) return protocol_errc::topic_alias_unknown;
    switch (p.qos_level) {
      case codec::qos::at_most_once:
        ++stats_.received;
        handler_.on_message(p);
        return {};
      case codec::qos::at_least_once: {
        if (opts_.deferred_acks) {
          deliver_deferred(p);
          return {};
        }
        ++stats_.received;
        handler_.on_message(p);
        codec::puback a;
        a.packet_id = p.packet_id;
        append(a);
        return {};
      }
      default: {
        if (std::find(incoming_qos2_.begin(), incoming_qos2_.end(), p.packet_id) == incoming_qos2_.end()) {
          incoming_qos2_.push_back(p.packet_id);
          if (opts_.deferred_acks) {
            deliver_deferred(p);
            return {};
          }
          ++stats_.received;
          handler_.on_message(p);
        } else {
          ++stats_.duplicates;
          // A resend of one whose PUBREC has not gone yet: it goes in its turn (flush_acks).
          if (std::any_of(unacked_.begin(), unacked_.end(), [&](const inbound& e) { return e.packet_id == p.packet_id; }))
            return {};
        }
        codec::pubrec r;
        r.packet_id = p.packet_id;
        append(r);
        return {};
      }
    }
  }

  std::error_code on_pubrel(const codec::pubrel& r) {
    incoming_qos2_.erase(std::remove(incoming_qos2_.begin(), incoming_qos2_.end(), r.packet_id), incoming_qos2_.end());
    codec::pubcomp c;
    c.packet_id = r.packet_id;
    append(c);  // also for an id we no longer know: the server must be able to finish [MQTT-4.3.3-11]
    return {};
  }

  std::error_code on_pubrec(const codec::pubrec& r) {
    for (outgoing& o : inflight_) {
      if (o.packet_id != r.packet_id || o.q != codec::qos::exactly_once) continue;
      if (static_cast<std::uint8_t>(r.reason) >= 0x80) return completed(r.packet_id, r.reason, false);
      o.at = stage::pubrec_received;
      codec::pubrel rel;
      rel.packet_id = r.packet_id;
      append(rel);
      return {};
    }
    return {};  // a PUBREC for nothing we sent: ignored, as after a resend both may arrive
  }

  // A QoS 1 PUBACK, a QoS 2 PUBCOMP (or a refusing PUBREC): the message is done.
  std::error_code completed(std::uint16_t id, reason_code reason, bool pubcomp) {
    for (auto it = inflight_.begin(); it != inflight_.end(); ++it) {
      if (it->packet_id != id) continue;
      if (pubcomp != (it->q == codec::qos::exactly_once && it->at == stage::pubrec_received) &&
          static_cast<std::uint8_t>(reason) < 0x80)
        return {};  // not the acknowledgement this message waits for
      const std::uint64_t ticket = it->ticket;
      inflight_.erase(it);
      ++stats_.acknowledged;
      handler_.on_published(ticket, reason);
      pump();
      return {};
    }
    return {};
  }

  void release_ack(std::uint16_t id) {
    pending_acks_.erase(std::remove(pending_acks_.begin(), pending_acks_.end(), id), pending_acks_.end());
  }

  session_options opts_;
  Handler handler_;
  codec::decoder decoder_;
  std::string out_;
  session_state state_ = session_state::disconnected;
  std::deque<outgoing> queued_;
  std::deque<outgoing> inflight_;
  std::vector<std::uint16_t> incoming_qos2_;  // received, PUBREC sent, PUBREL not yet
  std::vector<std::uint16_t> pending_acks_;   // SUBSCRIBE and UNSUBSCRIBE ids awaiting their ack
  struct inbound {
    std::uint64_t ticket;
    std::uint16_t packet_id;
    codec::qos q;
    bool done;  // the host acknowledged it
  };
  std::deque<inbound> unacked_;  // deferred_acks: reported, acknowledgement not yet sent
  std::uint64_t last_inbound_ = 0;
  std::uint64_t delivering_ = 0;
  std::uint64_t last_ticket_ = 0;
  std::uint16_t next_id_ = 0;
  std::uint32_t server_receive_max_ = 65535;
  codec::qos server_max_qos_ = codec::qos::exactly_once;  // a 5.0 server's Maximum QoS
  bool server_retain_ = true;                             // and its Retain Available
  bool ping_sent_ = false;
  clock::time_point last_sent_{};
  clock::time_point last_received_{};
  session_stats stats_;
};

}  // namespace client
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CLIENT_SESSION_HPP
