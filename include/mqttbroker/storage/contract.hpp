#ifndef MQTTBROKER_STORAGE_CONTRACT_HPP
#define MQTTBROKER_STORAGE_CONTRACT_HPP

#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/message.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

MQTTBROKER_BEGIN_NAMESPACE
namespace storage {

/// Where an outgoing QoS 1/2 message of a session stands, as a durable store keeps it (the
/// states of DECISIONS.md "QoS 2 out"): queued, sent (PUBLISH owed again with DUP after a
/// restart), PUBREC received (PUBREL owed), completed (gone from the store).
enum class outgoing_state : std::uint8_t { queued, sent, pubrec_received };

/// How one session receives a message beyond the message itself, which a resend after a restart
/// must repeat: the QoS granted, the RETAIN flag as first sent ([MQTT-3.3.1-8], 3.1.1
/// [MQTT-3.3.1-9], 5.0 Retain As Published [MQTT-3.3.1-12]) and the 5.0 Subscription Identifiers
/// of the matching subscriptions [MQTT-3.3.4-3]. The identifiers are borrowed for the call.
struct delivery {
  codec::qos qos_level = codec::qos::at_most_once;
  bool retain = false;
  const std::uint32_t* subscription_ids = nullptr;
  std::size_t subscription_id_count = 0;
};

/// What a durable store gives back at start, through the broker's loader (load()):
///   void session(std::string_view client_id, std::uint32_t expiry_seconds);   // expiry runs from now
///   void session(std::string_view client_id, std::uint32_t expiry_seconds, std::chrono::seconds left);
///       // `left` of it remains (the store counts from the wall-clock time the session went
///       // offline); 0: it expired while the broker was down, and ends at start, will and all
///   void subscription(std::string_view client_id, std::string_view filter, codec::subscribe_options, std::uint32_t identifier);
///   void retained(message_ptr);
///   void outgoing(std::string_view client_id, std::uint16_t packet_id, message_ptr, codec::qos, outgoing_state);
///   void outgoing(std::string_view client_id, std::uint16_t packet_id, message_ptr, const delivery&, outgoing_state);
///       // the same with the RETAIN flag and Subscription Identifiers it was first sent with
///   void inbound(std::string_view client_id, std::uint16_t packet_id);   // QoS 2 received, not yet released
///   void inbound(std::string_view client_id, std::uint16_t packet_id, message_ptr unrouted);
///       // the same, for a message committed but not yet routed (no routed() record): the broker
///       // routes it after the load, so an acknowledged QoS 2 message survives a crash there too
///   void will(std::string_view client_id, message_ptr, std::chrono::system_clock::time_point due);
///   std::chrono::system_clock::time_point system_now() const;   // the broker's wall clock at the load
///   std::uint32_t expiry_second(std::chrono::system_clock::time_point);  // a Message Expiry as
///       // the broker clock's second for message::make (the store keeps wall-clock expiry)
/// Sessions come before what belongs to them; outgoing messages of a session in their order.
///
/// The storage policy. `static constexpr bool durable`: when false (storage::memory) the engine
/// makes no call at all, compiled out. When true, the engine calls, on any thread that serves
/// connections (the storage serialises them itself under a multi-threaded locking policy):
///   void save_session(std::string_view client_id, std::uint32_t expiry_seconds);   // created, or its expiry changed
///   void erase_session(std::string_view client_id);                                // and everything below it
///   void save_subscription(std::string_view client_id, std::string_view filter, codec::subscribe_options, std::uint32_t identifier);
///   void erase_subscription(std::string_view client_id, std::string_view filter);
///   void save_retained(const message_ptr&);           // replaces the topic's
///   void erase_retained(std::string_view topic);
///   void enqueue(std::string_view client_id, const message_ptr&, codec::qos);  // waits for the session
///   void send(std::string_view client_id, std::uint16_t packet_id, const message_ptr&, codec::qos);  // queued -> in flight
///       // or, either or both instead, taking what a resend must repeat (a store that keeps it):
///   void enqueue(std::string_view client_id, const message_ptr&, const delivery&);
///   void send(std::string_view client_id, std::uint16_t packet_id, const message_ptr&, const delivery&);
///   void pubrec(std::string_view client_id, std::uint16_t packet_id);          // QoS 2 out: PUBREL owed
///   void acknowledge(std::string_view client_id, std::uint16_t packet_id);     // PUBACK or PUBCOMP: gone
///   void drop(std::string_view client_id, const message_ptr&);                 // a queued message the limits dropped
///   void clear_messages(std::string_view client_id);                           // Clean Start on a kept session
///   void receive(std::string_view client_id, std::uint16_t packet_id, const message_ptr&);  // QoS 2 in, before PUBREC
///   void release(std::string_view client_id, std::uint16_t packet_id);         // PUBREL: before PUBCOMP
///   void save_will(std::string_view client_id, const message_ptr&, std::chrono::system_clock::time_point due);
///   void erase_will(std::string_view client_id);
///   std::uint64_t commit();   // makes durable everything recorded so far; returns its ticket
///   template <class Loader> void load(Loader&);
/// Optional, each used when present (detected alone, as hooks are):
///   void routed(std::string_view client_id, std::uint16_t packet_id);  // a received QoS 2 message
///       // went to its subscribers: only its identifier is kept from now on (recorded after the
///       // routing's own changes, so a commit that holds it holds them)
///   void session_moved(std::string_view client_id);   // instead of erase_session when another
///       // node of a cluster took the session over (cluster/contract.hpp claim()): it goes on there
///   void session_offline(std::string_view client_id, std::chrono::system_clock::time_point since);
///       // a kept session lost its connection: its expiry runs from `since` (save_session, at
///       // CONNECT, means it is online again)
///   void on_commit_failed(std::function<void(std::uint64_t first, std::uint64_t last, std::error_code)>);
///       // tickets first..last are not durable (a full disk): their acknowledgements are refused
///       // (5.0 PUBACK/PUBREC 0x97; otherwise the connection closes), never sent as successes
///   std::uint64_t begin_atomic(); void end_atomic(std::uint64_t token);   // what is recorded
///       // between them (a routing and its `routed` mark) is made durable in one piece, whatever
///       // commit() other threads call meanwhile
///   bool hold(); void let_go();   // with single-threaded locking: the broker's one thread
///       // makes every call from hold() to let_go() (a read's or an event's), so the store may
///       // lock once for them all; hold() says whether it did (else it locks per call)
///   void close();   // the broker's destructor calls it, after it let go of the handlers: a store
///       // that reports from a thread of its own finishes with it here, before the broker is gone
/// A message reaches the store as the one shared message_ptr that every receiving session refers
/// to, so a store keeps one copy of it and counts the references (DECISIONS.md "One copy").
///
/// Acknowledge after commit: a PUBACK, PUBREC, PUBCOMP or SUBACK whose change was recorded waits
/// for commit()'s ticket to be reported durable (the broker's storage_committed(ticket)), and
/// the acknowledgements of one connection leave in the order of its packets [MQTT-4.6.0-2]. A
/// store does the work of commit() off the connections' threads (DECISIONS.md "Threads") and
/// reports completion, from any thread, to the handler the broker gives it:
///   void on_commit(std::function<void(std::uint64_t ticket)>);
/// Changes that no acknowledgement waits for (retained messages, expiry, wills) are made durable
/// by the next commit or on the store's own schedule. QoS 0 messages never reach the store.
namespace detail {

/// `static constexpr bool durable`: a bool known at compile time, as the engine compiles the
/// store's calls in or out on it (`if constexpr`).
template <class T, class = void>
struct has_durable : std::false_type {};
template <class T>
struct has_durable<T, std::enable_if_t<std::is_same_v<std::remove_cv_t<decltype(T::durable)>, bool>,
                                       std::void_t<std::bool_constant<T::durable>>>> : std::true_type {};

template <class T, class = void>
struct is_durable : std::false_type {};
template <class T>
struct is_durable<T, std::enable_if_t<has_durable<T>::value && T::durable>> : std::true_type {};

template <class T>
T& lvalue() noexcept;

using id = std::string_view;
using sys_time = std::chrono::system_clock::time_point;

#define MQTTBROKER_STORAGE_CALL(trait, call)                                 \
  template <class T, class = void>                                         \
  struct trait : std::false_type {};                                       \
  template <class T>                                                       \
  struct trait<T, std::void_t<decltype(lvalue<T>().call)>> : std::true_type {};

MQTTBROKER_STORAGE_CALL(has_save_session, save_session(id(), std::uint32_t()))
MQTTBROKER_STORAGE_CALL(has_erase_session, erase_session(id()))
MQTTBROKER_STORAGE_CALL(has_save_subscription, save_subscription(id(), id(), codec::subscribe_options(), std::uint32_t()))
MQTTBROKER_STORAGE_CALL(has_erase_subscription, erase_subscription(id(), id()))
MQTTBROKER_STORAGE_CALL(has_save_retained, save_retained(lvalue<const message_ptr>()))
MQTTBROKER_STORAGE_CALL(has_erase_retained, erase_retained(id()))
MQTTBROKER_STORAGE_CALL(has_enqueue, enqueue(id(), lvalue<const message_ptr>(), codec::qos()))
MQTTBROKER_STORAGE_CALL(has_send, send(id(), std::uint16_t(), lvalue<const message_ptr>(), codec::qos()))
MQTTBROKER_STORAGE_CALL(has_enqueue_delivery, enqueue(id(), lvalue<const message_ptr>(), lvalue<const delivery>()))
MQTTBROKER_STORAGE_CALL(has_send_delivery,
                        send(id(), std::uint16_t(), lvalue<const message_ptr>(), lvalue<const delivery>()))
MQTTBROKER_STORAGE_CALL(has_pubrec, pubrec(id(), std::uint16_t()))
MQTTBROKER_STORAGE_CALL(has_acknowledge, acknowledge(id(), std::uint16_t()))
MQTTBROKER_STORAGE_CALL(has_drop, drop(id(), lvalue<const message_ptr>()))
MQTTBROKER_STORAGE_CALL(has_clear_messages, clear_messages(id()))
MQTTBROKER_STORAGE_CALL(has_receive, receive(id(), std::uint16_t(), lvalue<const message_ptr>()))
MQTTBROKER_STORAGE_CALL(has_release, release(id(), std::uint16_t()))
MQTTBROKER_STORAGE_CALL(has_save_will, save_will(id(), lvalue<const message_ptr>(), sys_time()))
MQTTBROKER_STORAGE_CALL(has_erase_will, erase_will(id()))
MQTTBROKER_STORAGE_CALL(has_commit, commit())
MQTTBROKER_STORAGE_CALL(has_close, close())
MQTTBROKER_STORAGE_CALL(has_atomic, end_atomic(lvalue<T>().begin_atomic()))
MQTTBROKER_STORAGE_CALL(has_routed, routed(id(), std::uint16_t()))
MQTTBROKER_STORAGE_CALL(has_session_offline, session_offline(id(), sys_time()))
MQTTBROKER_STORAGE_CALL(has_session_moved, session_moved(id()))
MQTTBROKER_STORAGE_CALL(has_hold, hold() && (lvalue<T>().let_go(), true))
MQTTBROKER_STORAGE_CALL(has_on_commit_failed,
                        on_commit_failed(std::function<void(std::uint64_t, std::uint64_t, std::error_code)>()))

#undef MQTTBROKER_STORAGE_CALL

}  // namespace detail

/// What the broker asks of a storage policy (the list above).
namespace contract {
MQTTBROKER_REQUIREMENT(has_durable, detail::has_durable<T>::value);
}  // namespace contract

namespace detail {

/// True, or a static_assert naming what is missing.
template <class T>
constexpr bool check_storage() {
  static_assert(contract::has_durable<T>, "mqttbroker: the storage has no static constexpr bool durable");
  if constexpr (is_durable<T>::value) {
    static_assert(has_save_session<T>::value, "mqttbroker: the durable storage has no save_session(client_id, expiry)");
    static_assert(has_erase_session<T>::value, "mqttbroker: the durable storage has no erase_session(client_id)");
    static_assert(has_save_subscription<T>::value,
                  "mqttbroker: the durable storage has no save_subscription(client_id, filter, options, identifier)");
    static_assert(has_erase_subscription<T>::value,
                  "mqttbroker: the durable storage has no erase_subscription(client_id, filter)");
    static_assert(has_save_retained<T>::value, "mqttbroker: the durable storage has no save_retained(message)");
    static_assert(has_erase_retained<T>::value, "mqttbroker: the durable storage has no erase_retained(topic)");
    static_assert(has_enqueue<T>::value || has_enqueue_delivery<T>::value,
                  "mqttbroker: the durable storage has no enqueue(client_id, message, qos or delivery)");
    static_assert(has_send<T>::value || has_send_delivery<T>::value,
                  "mqttbroker: the durable storage has no send(client_id, packet_id, message, qos or delivery)");
    static_assert(has_pubrec<T>::value, "mqttbroker: the durable storage has no pubrec(client_id, packet_id)");
    static_assert(has_acknowledge<T>::value, "mqttbroker: the durable storage has no acknowledge(client_id, packet_id)");
    static_assert(has_drop<T>::value, "mqttbroker: the durable storage has no drop(client_id, message)");
    static_assert(has_clear_messages<T>::value, "mqttbroker: the durable storage has no clear_messages(client_id)");
    static_assert(has_receive<T>::value, "mqttbroker: the durable storage has no receive(client_id, packet_id, message)");
    static_assert(has_release<T>::value, "mqttbroker: the durable storage has no release(client_id, packet_id)");
    static_assert(has_save_will<T>::value, "mqttbroker: the durable storage has no save_will(client_id, message, due)");
    static_assert(has_erase_will<T>::value, "mqttbroker: the durable storage has no erase_will(client_id)");
    static_assert(has_commit<T>::value, "mqttbroker: the durable storage has no commit()");
  }
  return true;
}

}  // namespace detail
}  // namespace storage

#if MQTTBROKER_HAS_CONCEPTS
/// A storage policy: every requirement of storage::contract.
template <class T>
concept storage_policy = storage::contract::has_durable<T>;
#endif

MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_STORAGE_CONTRACT_HPP
