#ifndef MQTTBROKER_SESSION_STATE_HPP
#define MQTTBROKER_SESSION_STATE_HPP

#include <mqttbroker/codec/detail/wire.hpp>
#include <mqttbroker/codec/packets.hpp>
#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/detail/fifo.hpp>
#include <mqttbroker/detail/small_vector.hpp>
#include <mqttbroker/message.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace session {

/// One PUBLISH owed to this client. The message is shared with every other receiver.
struct outgoing {
  message_ptr msg;
  codec::qos qos_level = codec::qos::at_most_once;  // min(message QoS, granted QoS)
  bool retain = false;                              // the RETAIN flag as sent [MQTT-3.3.1-9]
  bool dup = false;
  std::uint16_t packet_id = 0;
  detail::small_vector<std::uint32_t, 2> subscription_ids;  // 5.0; two fit without allocating
  // The shared subscription group it came through (the engine's number; 0: none), so that it can
  // go to another member of that group when this session ends before delivering it.
  std::uint32_t share_group = 0;
};

/// The bytes `o` takes as a 5.0 PUBLISH, fixed header included: its properties with one
/// Subscription Identifier property per identifier, as link::send_publish() encodes it.
inline std::size_t wire_size_v5(const outgoing& o) noexcept {
  std::size_t props = o.msg->properties().bytes().size();
  for (std::uint32_t id : o.subscription_ids) props += 1 + codec::detail::varint_size(id);
  const std::size_t body = 2 + o.msg->topic().size() + (o.qos_level == codec::qos::at_most_once ? 0 : 2) +
                           codec::detail::varint_size(static_cast<std::uint32_t>(props)) + props +
                           o.msg->payload().size();
  return 1 + codec::detail::varint_size(static_cast<std::uint32_t>(body)) + body;
}

/// Where an outgoing QoS 1/2 message stands.
enum class phase : std::uint8_t {
  awaiting_puback,   // QoS 1 sent
  awaiting_pubrec,   // QoS 2 sent
  awaiting_pubcomp,  // QoS 2: PUBREC received, PUBREL sent
};

struct inflight_entry {
  outgoing pub;
  phase state;
};

/// The payload bytes queued in all the sessions of a broker together, against a limit: the
/// owner's (the engine's), shared through their limits.
struct queue_budget {
  std::size_t max_bytes = 0;
  /// Sessions change it from several threads (locking::shared): read-modify-writes then, plain
  /// loads and stores otherwise (a locked add per queued message costs a few per cent).
  bool threads = true;
  std::atomic<std::size_t> bytes{0};
  std::atomic<std::uint64_t> refused{0};  // messages dropped because of it
};

struct limits {
  std::uint16_t max_inflight = 32;
  std::size_t max_queued_messages = 1000;
  std::size_t max_queued_bytes = 0;  // 0: no byte limit
  bool drop_oldest = false;          // overflow policy: false drops the arriving message
  bool queue_qos0_offline = false;
  /// All sessions together; null: no limit. Past it a message that would wait in a queue is
  /// dropped (QoS 0 and 1/2 alike).
  queue_budget* budget = nullptr;
};

/// Why next_ready() dropped a queued message without sending it.
enum class discard : std::uint8_t {
  too_large,  // over the connected client's Maximum Packet Size [MQTT-3.1.2-25]
  expired,    // its Message Expiry Interval ended while it waited [MQTT-3.3.2-5]
};

/// What offer() did with a message.
enum class admission : std::uint8_t {
  send,     // send now: the outgoing was given a packet identifier (QoS > 0) and is in flight
  queued,   // waits for a free slot in the in-flight window, or for the client to come back
  dropped,  // refused by the limits
};

/// The MQTT state of one client's session, without I/O: which QoS 1/2 messages are in flight in
/// each direction, the queue of messages not yet sent, and the packet identifiers in use. The
/// broker feeds it packets and acts on what it returns; a session outlives its connections.
///
/// A broker keeps one per client, most of them idle or at QoS 0, so what only QoS 1/2 traffic or
/// subscriptions need is made on first use, and the limits are the broker's, shared by all its
/// sessions: an idle session is 56 bytes.
class state {
 public:
  /// `l` must outlive the state; by default the defaults of `limits`.
  explicit state(std::string client_id, const limits* l = &default_limits())
      : client_id_(std::move(client_id)), limits_(l) {}
  state(const state&) = delete;
  state& operator=(const state&) = delete;
  ~state() {
    if (traffic_) count_queued(-static_cast<std::ptrdiff_t>(traffic_->queued_bytes));
  }

  const std::string& client_id() const noexcept { return client_id_; }
  const limits& session_limits() const noexcept { return *limits_; }

  // ---- outgoing (broker to client)

  /// A message for this client. While `online` and the in-flight window has room (and nothing
  /// waits before it) it is admitted for sending now and `o` gets its packet identifier;
  /// otherwise it is moved into the queue, or dropped.
  admission offer(outgoing& o, bool online) {
    return offer(o, online, [](const outgoing&) {});
  }
  /// The same; `on_evict(const outgoing&)` sees each queued message that drop_oldest evicts to
  /// make room (a durable store forgets them too).
  template <class OnEvict>
  admission offer(outgoing& o, bool online, OnEvict&& on_evict) {
    // Too large for the connected client: dropped for it alone [MQTT-3.1.2-25]. Offline, the
    // next connection's limit decides (next_ready()).
    if (online && !fits(o)) return admission::dropped;
    if (o.qos_level == codec::qos::at_most_once) {
      if (online) return admission::send;  // QoS 0 is never in flight and never waits behind QoS 1/2
      if (!limits_->queue_qos0_offline) return admission::dropped;
      return enqueue(std::move(o), on_evict);
    }
    traffic& t = flows();
    if (online && t.queue.empty() && t.inflight.size() < window(t)) {
      admit(t, o);
      t.inflight.push_back({o, first_phase(o.qos_level)});
      return admission::send;
    }
    return enqueue(std::move(o), on_evict);
  }

  /// A message that was in flight when a durable store saved it, back in flight with its packet
  /// identifier (a restart): `pubrec_received` when the client's PUBREC was stored (PUBREL owed).
  void restore_inflight(outgoing o, bool pubrec_received) {
    traffic& t = flows();
    if (!t.in_use.empty()) mark(t, o.packet_id, true);
    const phase p = pubrec_received ? phase::awaiting_pubcomp : first_phase(o.qos_level);
    if (pubrec_received) o.msg = message_ptr();  // as on_pubrec(): only the identifier is kept
    t.inflight.push_back({std::move(o), p});
  }

  /// The oldest queued message that may be sent now, admitted into flight, or nothing.
  /// The broker calls this after acknowledgements and on reconnect until it returns nothing.
  std::optional<outgoing> next_ready() {
    return next_ready(0, [](const outgoing&, discard) {});
  }
  /// The same at second `now` of the broker's clock (message::expired); `on_discard(const
  /// outgoing&, discard)` sees each queued message dropped without being sent: expired, or too
  /// large for the connected client.
  template <class OnDiscard>
  std::optional<outgoing> next_ready(std::uint32_t now, OnDiscard&& on_discard) {
    if (!traffic_) return std::nullopt;
    traffic& t = *traffic_;
    while (!t.queue.empty()) {
      const outgoing& front = t.queue.front();
      const bool expired = front.msg->expired(now);
      if (!expired && fits(front)) break;
      unqueue_bytes(t, front.msg->payload().size());
      on_discard(front, expired ? discard::expired : discard::too_large);
      t.queue.pop_front();
    }
    if (t.queue.empty()) return std::nullopt;
    if (t.queue.front().qos_level != codec::qos::at_most_once && t.inflight.size() >= window(t)) return std::nullopt;
    outgoing o = std::move(t.queue.front());
    t.queue.pop_front();
    unqueue_bytes(t, o.msg->payload().size());
    if (o.qos_level != codec::qos::at_most_once) {
      admit(t, o);
      t.inflight.push_back({o, first_phase(o.qos_level)});
    }
    return o;
  }

  /// PUBACK: true when it completed a QoS 1 message [MQTT-4.3.2].
  bool on_puback(std::uint16_t id) noexcept { return complete(id, phase::awaiting_puback); }

  /// PUBREC: true when the identifier is a QoS 2 message awaiting PUBREC or PUBCOMP; the broker
  /// answers PUBREL either way, a repeated PUBREC included [MQTT-4.3.3].
  bool on_pubrec(std::uint16_t id) noexcept {
    inflight_entry* e = find(id);
    if (e == nullptr || e->state == phase::awaiting_puback) return false;
    e->state = phase::awaiting_pubcomp;
    e->pub.msg = message_ptr();  // delivered: from here on only the identifier is kept
    return true;
  }

  /// PUBCOMP: true when it completed a QoS 2 message.
  bool on_pubcomp(std::uint16_t id) noexcept { return complete(id, phase::awaiting_pubcomp); }

  /// On reconnect with the session kept: every message in flight again, in order, as PUBLISH with
  /// DUP set or as PUBREL [MQTT-4.4.0-1]. `f(const inflight_entry&)`.
  template <class F>
  void for_each_inflight(F&& f) {
    if (!traffic_) return;
    for (inflight_entry& e : traffic_->inflight) {
      if (e.state != phase::awaiting_pubcomp) e.pub.dup = true;
      f(static_cast<const inflight_entry&>(e));
    }
  }

  /// Calls f(const outgoing&, const phase*) for every message owed to the client, changing
  /// nothing: those in flight with their phase, then the queued ones with nullptr, each in order.
  template <class F>
  void for_each_owed(F&& f) const {
    if (!traffic_) return;
    for (const inflight_entry& e : traffic_->inflight) f(e.pub, &e.state);
    for (const outgoing& o : traffic_->queue) f(o, static_cast<const phase*>(nullptr));
  }

  std::size_t inflight_count() const noexcept { return traffic_ ? traffic_->inflight.size() : 0; }

  /// 5.0: what the connected client takes, set at each CONNECT (3.1.1: 65535 and 0).
  /// - Its Receive Maximum narrows the in-flight window below the broker's max_inflight
  ///   [MQTT-3.3.4-9]. A resumed session's messages in flight beyond it stay in flight (they are
  ///   re-sent), and no new one is admitted until the count is below it again.
  /// - Its Maximum Packet Size (0: none): a PUBLISH larger is dropped for this client alone
  ///   [MQTT-3.1.2-25].
  /// Nothing is kept for a client that narrows neither (an idle session stays small).
  void set_client_limits(std::uint16_t receive_maximum, std::uint32_t maximum_packet_size) {
    if (receive_maximum >= limits_->max_inflight && maximum_packet_size == 0 && !traffic_) return;
    traffic& t = flows();
    t.send_window = receive_maximum;
    t.max_packet_size = maximum_packet_size;
  }
  /// The connected client's Maximum Packet Size; 0: none.
  std::uint32_t client_max_packet_size() const noexcept { return traffic_ ? traffic_->max_packet_size : 0; }
  /// Whether `o` may go to the connected client as one PUBLISH (its Maximum Packet Size).
  bool fits(const outgoing& o) const noexcept {
    return !traffic_ || traffic_->max_packet_size == 0 || wire_size_v5(o) <= traffic_->max_packet_size;
  }
  /// A resumed session's messages in flight that the new connection's Maximum Packet Size does
  /// not take: dropped as if delivered [MQTT-3.1.2-25], each seen by `on_discard(const outgoing&)`.
  template <class OnDiscard>
  void discard_unfit_inflight(OnDiscard&& on_discard) {
    if (!traffic_ || traffic_->max_packet_size == 0) return;
    traffic& t = *traffic_;
    // Rare (a reconnect with a smaller limit): a restart after each removal is simple enough.
    for (bool removed = true; removed;) {
      removed = false;
      for (auto it = t.inflight.begin(); it != t.inflight.end(); ++it) {
        // After PUBREC only the identifier is left: a PUBREL always fits.
        if (it->state == phase::awaiting_pubcomp || fits(it->pub)) continue;
        on_discard(static_cast<const outgoing&>(it->pub));
        mark(t, it->pub.packet_id, false);
        t.inflight.erase(it);
        removed = true;
        break;
      }
    }
  }
  /// How many QoS 1/2 messages may be in flight to the client now.
  std::size_t send_window() const noexcept { return traffic_ ? window(*traffic_) : limits_->max_inflight; }
  std::size_t queued_count() const noexcept { return traffic_ ? traffic_->queue.size() : 0; }
  std::size_t queued_bytes() const noexcept { return traffic_ ? traffic_->queued_bytes : 0; }

  /// Forgets every message in flight and queued (clean start, session end).
  void clear_messages() noexcept {
    if (!traffic_) return;
    traffic& t = *traffic_;
    t.inflight.clear();
    std::fill(t.in_use.begin(), t.in_use.end(), std::uint64_t{0});
    t.queue.clear();
    unqueue_bytes(t, t.queued_bytes);
    t.inbound_qos2.clear();
  }

  // ---- incoming QoS 2 (client to broker)

  /// A QoS 2 PUBLISH arrived: true when the identifier is new and the message must be routed;
  /// false for a re-sent PUBLISH before PUBREL, which is acknowledged again but not routed twice
  /// [MQTT-4.3.3-2] (method B of the specification: the identifier is kept until PUBREL).
  bool on_qos2_publish(std::uint16_t id) {
    std::vector<std::uint16_t>& held = flows().inbound_qos2;
    auto it = std::lower_bound(held.begin(), held.end(), id);
    if (it != held.end() && *it == id) return false;
    held.insert(it, id);
    return true;
  }
  /// PUBREL: releases the identifier; false when it was not held (5.0 answers 0x92 then).
  bool on_pubrel(std::uint16_t id) noexcept {
    if (!traffic_) return false;
    std::vector<std::uint16_t>& held = traffic_->inbound_qos2;
    auto it = std::lower_bound(held.begin(), held.end(), id);
    if (it == held.end() || *it != id) return false;
    held.erase(it);
    return true;
  }
  std::size_t inbound_qos2_count() const noexcept { return traffic_ ? traffic_->inbound_qos2.size() : 0; }
  /// The QoS 2 identifiers held until their PUBREL, in order.
  template <class F>
  void for_each_received(F&& f) const {
    if (!traffic_) return;
    for (std::uint16_t id : traffic_->inbound_qos2) f(id);
  }

  // ---- subscriptions, as the session remembers them for removal and persistence

  struct subscription_record {
    codec::subscribe_options options;
    std::uint32_t identifier = 0;
  };
  using subscription_map = std::unordered_map<std::string, subscription_record>;
  /// True when new, false when it replaced one with the same filter.
  bool remember_subscription(std::string_view filter, const subscription_record& r) {
    if (!subscriptions_) subscriptions_ = std::make_unique<subscription_map>();
    auto [it, inserted] = subscriptions_->try_emplace(std::string(filter), r);
    if (!inserted) it->second = r;
    return inserted;
  }
  bool forget_subscription(std::string_view filter) {
    return subscriptions_ && subscriptions_->erase(std::string(filter)) != 0;
  }
  const subscription_map& subscriptions() const noexcept {
    static const subscription_map none;
    return subscriptions_ ? *subscriptions_ : none;
  }
  void clear_subscriptions() noexcept { subscriptions_.reset(); }

 private:
  static phase first_phase(codec::qos q) noexcept {
    return q == codec::qos::at_least_once ? phase::awaiting_puback : phase::awaiting_pubrec;
  }

  static const limits& default_limits() noexcept {
    static const limits defaults;
    return defaults;
  }

  /// What QoS 1/2 traffic and queueing need: made on first use, kept for the session's life.
  struct traffic {
    detail::fifo<inflight_entry> inflight;
    detail::fifo<outgoing> queue;
    std::size_t queued_bytes = 0;
    std::uint16_t next_id = 0;
    std::size_t find_hint = 0;  // where find() starts: just after its last hit
    std::vector<std::uint64_t> in_use;  // identifiers in flight, with a window above small_window
    std::vector<std::uint16_t> inbound_qos2;  // sorted
    std::uint16_t send_window = 0xFFFF;       // the client's Receive Maximum
    std::uint32_t max_packet_size = 0;        // the client's Maximum Packet Size; 0: none
  };

  std::size_t window(const traffic& t) const noexcept {
    return std::min<std::size_t>(limits_->max_inflight, t.send_window);
  }

  void unqueue_bytes(traffic& t, std::size_t bytes) noexcept {
    t.queued_bytes -= bytes;
    count_queued(-static_cast<std::ptrdiff_t>(bytes));
  }
  /// The total over all sessions, where there is a limit on it.
  void count_queued(std::ptrdiff_t delta) noexcept {
    queue_budget* b = limits_->budget;
    if (b == nullptr || delta == 0) return;
    if (b->threads)
      b->bytes.fetch_add(static_cast<std::size_t>(delta), std::memory_order_relaxed);
    else
      b->bytes.store(b->bytes.load(std::memory_order_relaxed) + static_cast<std::size_t>(delta),
                     std::memory_order_relaxed);
  }

  traffic& flows() {
    if (!traffic_) traffic_ = std::make_unique<traffic>();
    return *traffic_;
  }

  template <class OnEvict>
  admission enqueue(outgoing&& o, OnEvict& on_evict) {
    traffic& t = flows();
    const limits& l = *limits_;
    const std::size_t bytes = o.msg->payload().size();
    auto over = [&] {
      return t.queue.size() >= l.max_queued_messages ||
             (l.max_queued_bytes != 0 && t.queued_bytes + bytes > l.max_queued_bytes);
    };
    // All sessions together: the arriving message is dropped, whatever the overflow policy (the
    // bytes over it are other sessions', which this one's evictions would not free).
    if (l.budget != nullptr && l.budget->bytes.load(std::memory_order_relaxed) + bytes > l.budget->max_bytes) {
      l.budget->refused.fetch_add(1, std::memory_order_relaxed);  // rare: a locked add is fine
      return admission::dropped;
    }
    if (over()) {
      if (!l.drop_oldest || t.queue.empty()) return admission::dropped;
      while (!t.queue.empty() && over()) {
        unqueue_bytes(t, t.queue.front().msg->payload().size());
        on_evict(static_cast<const outgoing&>(t.queue.front()));
        t.queue.pop_front();
      }
      if (l.max_queued_bytes != 0 && bytes > l.max_queued_bytes) return admission::dropped;
    }
    t.queued_bytes += bytes;
    count_queued(static_cast<std::ptrdiff_t>(bytes));
    t.queue.push_back(std::move(o));
    return admission::queued;
  }

  /// Gives `o` the next packet identifier not in flight. Identifiers cycle through 1..65535 and
  /// skip any still in flight after a wrap [MQTT-2.2.1-3]; the window is far below 65535, so
  /// one is always free.
  void admit(traffic& t, outgoing& o) {
    // A small window is searched directly; a large one keeps a bitmap (8 KiB, made on first use)
    // so that finding a free identifier never costs a scan of thousands of entries.
    const bool use_bitmap = limits_->max_inflight > small_window;
    if (use_bitmap && t.in_use.empty()) {
      t.in_use.assign(65536 / 64, 0);
      for (const inflight_entry& e : t.inflight) mark(t, e.pub.packet_id, true);
    }
    for (;;) {
      t.next_id = static_cast<std::uint16_t>(t.next_id == 0xFFFF ? 1 : t.next_id + 1);
      if (use_bitmap ? !marked(t, t.next_id) : find(t.next_id) == nullptr) break;
    }
    if (use_bitmap) mark(t, t.next_id, true);
    o.packet_id = t.next_id;
    o.dup = false;
  }

  static bool marked(const traffic& t, std::uint16_t id) noexcept { return (t.in_use[id >> 6] >> (id & 63u)) & 1u; }
  static void mark(traffic& t, std::uint16_t id, bool on) noexcept {
    if (t.in_use.empty()) return;
    const std::uint64_t bit = std::uint64_t{1} << (id & 63u);
    if (on)
      t.in_use[id >> 6] |= bit;
    else
      t.in_use[id >> 6] &= ~bit;
  }

  /// The entry in flight with identifier `id`. Acknowledgements mostly come in order, so the
  /// scan starts just after the last entry found and wraps: a PUBREC finds its entry at once even
  /// behind thousands awaiting their PUBCOMP (a durable store holds each PUBREL for a commit).
  inflight_entry* find(std::uint16_t id) noexcept {
    if (!traffic_) return nullptr;
    traffic& t = *traffic_;
    const std::size_t n = t.inflight.size();
    const std::size_t start = t.find_hint < n ? t.find_hint : 0;
    auto first = t.inflight.begin();
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = start + k < n ? start + k : start + k - n;
      if (first[static_cast<std::ptrdiff_t>(i)].pub.packet_id == id) {
        t.find_hint = i + 1;
        return &first[static_cast<std::ptrdiff_t>(i)];
      }
    }
    return nullptr;
  }

  bool complete(std::uint16_t id, phase expected) noexcept {
    if (!traffic_) return false;
    traffic& t = *traffic_;
    for (auto it = t.inflight.begin(); it != t.inflight.end(); ++it) {
      if (it->pub.packet_id == id) {
        if (it->state != expected) return false;
        mark(t, id, false);
        // The entries after it move one place forward: so does the hint if it pointed past it.
        if (static_cast<std::size_t>(it - t.inflight.begin()) < t.find_hint) --t.find_hint;
        t.inflight.erase(it);
        return true;
      }
    }
    return false;
  }

  static constexpr std::uint16_t small_window = 64;
  std::string client_id_;
  const limits* limits_;
  std::unique_ptr<traffic> traffic_;
  std::unique_ptr<subscription_map> subscriptions_;
};

}  // namespace session
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_SESSION_STATE_HPP
