#ifndef MQTTBROKER_CLUSTER_CONTRACT_HPP
#define MQTTBROKER_CLUSTER_CONTRACT_HPP

// The cluster policy: what the engine tells a cluster about this node, so that several brokers
// act as one. `Policies::cluster` chooses it; cluster::none (the default) is one broker alone,
// and the engine compiles every call to it out.
//
// An enabled cluster C has:
//
//   void publish(const message_ptr& m);
//     A message that entered the broker on this node (from a client, the host or a will), once
//     it is routed here. Not called for messages the cluster itself brought (route_from_cluster,
//     deliver_to_group) nor for `$SYS/` topics, which are each node's own. From any of the
//     broker's threads; it must neither block nor call back into the engine. It may return
//     bool instead: true when the cluster keeps the message and says when through the (durable)
//     storage's commits; the acknowledgement to its publisher then waits for the next commit.
//
//   void interest(std::string_view filter, bool present);
//     This node's first subscription to `filter` came (present) or its last went. A shared
//     group is one filter, `$share/{ShareName}/{filter}`. Called with the engine's state lock
//     held: the same rules, and quick.
//
// and, for broker<Policies> to connect it (broker::connect_cluster()):
//
//   std::error_code start(asio::any_io_executor ex, cluster::inbound in);
//     Joins the cluster, its I/O on `ex` (the broker's executor). What the cluster brings back it
//     hands to `in`, from any thread. May block until the first connection (call it before the
//     io_context runs, or off its threads).
//   void stop();
//     Leaves the cluster; once it returns, `in` is not called again. The broker's destructor
//     calls it.
//
// The broker gives what comes back to the engine (engine::core) as inputs on its own threads:
// route_from_cluster(m, now) routes to this node's subscribers (not to shared groups, not kept as
// retained, and not published again); deliver_to_group(group_filter, m, now) gives a message to
// one member of this node's shared group, which the cluster chose for it;
// retained_from_cluster(m, now) keeps the cluster's retained message for the node's new
// subscriptions. With a cluster, shared groups are fed only that way: the cluster picks the node
// (NATS's queue groups), the node its member.
//
// A cluster may also own client identifiers, so that one node at a time holds a client's session
// ([MQTT-3.1.4-3] across nodes). It then has
//
//   void claim(std::string_view client_id, bool clean_start, cluster::claim_reply reply);
//     A client connects here: make this node its owner. The node that owned it closes its
//     connection (0x8E) and hands its session over, unless `clean_start` (it discards it then).
//     `reply` once, from any thread: the session taken over, none, or an error (the CONNECT is
//     refused, Server unavailable). The client's reader waits for it.
//
// and its inbound::hand_over is called when another node claims a client of this one.
//
// A cluster may also feed persistent sessions from queues of its own, so that what a session
// is owed outlives its node (cluster::nats with cluster::nats_sessions). It then has
//
//   bool feeds_sessions() const noexcept;
//     Whether it does, from start() on. Then a kept session's (nonzero expiry) subscriptions
//     with Maximum QoS 1 or 2, neither shared nor No Local, get only QoS 0 messages from the
//     routing: their QoS 1 and 2 messages, this node's own publications included, come through
//     inbound::to_session. The cluster learns of those subscriptions, and of what becomes of each
//     message it brought (sent, acknowledged, dropped), through the storage policy's calls.
//   void not_delivered(const message_ptr& m);
//     A message to_session brought that the session did not take (it ended, or has no such
//     subscription any more).

#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/message.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace cluster {

/// One broker alone: no cluster.
struct none {};

/// A client's session as it moves from one node to another: what a resumed session needs.
struct session_handover {
  std::uint32_t expiry_seconds = 0;  // its Session Expiry Interval (3.1.1 Clean Session 0: the broker's)
  struct subscription {
    std::string filter;  // `$share/{ShareName}/{filter}` for a shared one
    codec::subscribe_options options;
    std::uint32_t identifier = 0;  // 5.0 Subscription Identifier (0: none)
  };
  std::vector<subscription> subscriptions;
  enum class state : std::uint8_t { queued, sent, pubrec_received };
  /// A message owed to the client: those in flight first, then the queued ones, each in order.
  struct delivery {
    message_ptr msg;              // its expiry not set: `expires_in` says what is left
    std::uint32_t expires_in = 0;  // seconds of its Message Expiry Interval left (0: none)
    codec::qos qos_level = codec::qos::at_most_once;
    bool retain = false;
    std::vector<std::uint32_t> subscription_ids;
    std::uint16_t packet_id = 0;  // in flight: its identifier
    state at = state::queued;
    std::uint64_t stream_sequence = 0;  // the cluster's own reference to it (0: none)
  };
  std::vector<delivery> messages;
  std::vector<std::uint16_t> received;  // QoS 2 identifiers received, their PUBREL not yet
};

/// What claim() answers: the session the old owner handed over, if any, or why the claim failed.
struct claim_result {
  std::error_code error;
  std::optional<session_handover> session;
};
using claim_reply = std::function<void(claim_result)>;

/// Where a cluster delivers what other nodes send this one; each callable from any thread.
struct inbound {
  /// A message another node published: for this node's subscribers.
  std::function<void(message_ptr)> route;
  /// A message for this node's shared group `group_filter` (`$share/{ShareName}/{filter}`).
  std::function<void(std::string_view group_filter, message_ptr)> to_group;
  /// The cluster's retained message for its topic (an empty payload: none any more), for this
  /// node's retained store; optional for a cluster that keeps no retained messages.
  std::function<void(message_ptr)> retained;
  /// Another node claimed `client_id` (a cluster that owns client identifiers): its connection
  /// here closes (0x8E) and its session leaves this node; `done` gets the session (nothing with
  /// `discard`, the new connection's Clean Start, or when this node has none), once.
  std::function<void(std::string client_id, bool discard, std::function<void(std::optional<session_handover>)> done)>
      hand_over;
  /// A message for the session of `client_id` (a cluster that feeds sessions), through its fed
  /// subscriptions that match.
  std::function<void(std::string client_id, message_ptr)> to_session;
};

namespace detail {
/// Whether C is an enabled cluster policy (it has publish()); cluster::none is not.
template <class C, class = void>
struct is_enabled : std::false_type {};
template <class C>
struct is_enabled<C, std::void_t<decltype(std::declval<C&>().publish(std::declval<const message_ptr&>())),
                                 decltype(std::declval<C&>().interest(std::string_view(), true))>>
    : std::true_type {};

/// Whether C can feed sessions (it has feeds_sessions()).
template <class C, class = void>
struct has_session_feed : std::false_type {};
template <class C>
struct has_session_feed<C, std::void_t<decltype(std::declval<const C&>().feeds_sessions()),
                                       decltype(std::declval<C&>().not_delivered(std::declval<const message_ptr&>()))>>
    : std::true_type {};

/// Whether C owns client identifiers (it has claim()).
template <class C, class = void>
struct has_claim : std::false_type {};
template <class C>
struct has_claim<C, std::void_t<decltype(std::declval<C&>().claim(std::string_view(), true, claim_reply()))>>
    : std::true_type {};
}  // namespace detail

/// Whether a topic stays on its node: `$SYS/` describes one broker.
constexpr bool node_local_topic(std::string_view topic) noexcept { return topic.substr(0, 5) == "$SYS/"; }

}  // namespace cluster
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CLUSTER_CONTRACT_HPP
