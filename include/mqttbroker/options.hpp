#ifndef MQTTBROKER_OPTIONS_HPP
#define MQTTBROKER_OPTIONS_HPP

#include <mqttbroker/config.hpp>
#include <mqttbroker/log.hpp>

#include <mqttbroker/codec/types.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

MQTTBROKER_BEGIN_NAMESPACE

/// What a session does when its queue of undelivered messages is full.
enum class overflow_policy : std::uint8_t {
  drop_new,     // refuse the arriving message (Mosquitto's behaviour); counted
  drop_oldest,  // make room by dropping the oldest queued message; counted
};

/// Broker limits. Each default is what a public-facing broker can live with; hosts raise them.
struct broker_options {
  /// Connections accepted at once; more are closed right after accept.
  std::size_t max_connections = 100'000;
  /// Per source address, decided at accept (a refused connection is closed before it costs
  /// anything more, counted in broker_stats and logged): connections open at once, and new
  /// connections per second on average with bursts of connection_burst_per_address after a quiet
  /// while. 0 turns one off. 127.0.0.1 and ::1 (the host's own programs) are exempt unless
  /// admission_exempts_loopback is false; a transport without addresses is never limited.
  std::size_t max_connections_per_address = 1000;
  double max_connection_rate_per_address = 20;
  double connection_burst_per_address = 100;
  bool admission_exempts_loopback = true;
  /// Largest packet accepted from a client, fixed header included (5.0 Maximum Packet Size).
  std::uint32_t max_packet_size = 1024 * 1024;
  /// QoS 1 and 2 messages sent to a client and not yet acknowledged (Mosquitto: max_inflight_messages 20).
  std::uint16_t max_inflight = 32;
  /// QoS 1 and 2 messages received from a client and not yet released (5.0 Receive Maximum sent to clients).
  std::uint16_t receive_maximum = 1024;
  /// Messages waiting per session beyond the in-flight window (Mosquitto: max_queued_messages 1000).
  std::size_t max_queued_messages = 1000;
  /// Payload bytes waiting per session; 0 means no byte limit.
  std::size_t max_queued_bytes = 16 * 1024 * 1024;
  /// Payload bytes waiting in all sessions together, so that many offline or slow sessions cannot
  /// take the host's memory between them; 0: no limit. Past it a message that would wait is
  /// dropped (counted in broker_stats::messages_dropped and queue_memory_drops, and logged).
  std::size_t max_total_queued_bytes = 256 * 1024 * 1024;
  overflow_policy queue_overflow = overflow_policy::drop_new;
  /// Publisher pacing: a client whose messages reach a subscriber that is behind (more than
  /// pacing_backlog_bytes not yet written to it, or more than pacing_queued_messages waiting in
  /// its session) stops being read until that subscriber has caught up by half. The queue limits
  /// above then only bite for clients that stop reading: one whose socket and acknowledgements
  /// have not moved for stuck_client_timeout no longer holds publishers back, and loses QoS 0
  /// and queue overflow instead (counted in messages_dropped).
  bool pace_publishers = true;
  std::size_t pacing_backlog_bytes = 256 * 1024;
  std::size_t pacing_queued_messages = 256;
  std::chrono::milliseconds stuck_client_timeout{2'000};
  /// Whether QoS 0 messages are queued for offline persistent sessions (Mosquitto: queue_qos0_messages false).
  bool queue_qos0_offline = false;
  /// Shared subscriptions (`$share/{ShareName}/{filter}`, 5.0 section 4.8.2, and the same for 3.1.1
  /// clients as Mosquitto and EMQX offer them). When false, CONNACK says Shared Subscription
  /// Available 0 and such a SUBSCRIBE is refused (5.0 reason 0x9E, 3.1.1 0x80).
  bool shared_subscriptions = true;
  /// Wildcard Subscriptions (`+` and `#` in a client's filter). When false, CONNACK says Wildcard
  /// Subscription Available 0 and such a filter is refused (5.0 reason 0xA2, 3.1.1 0x80). The
  /// host's in-process subscribe() is not limited.
  bool wildcard_subscriptions = true;
  /// 5.0 Subscription Identifiers. When false, CONNACK says Subscription Identifiers Available 0
  /// and every filter of a SUBSCRIBE that carries one is refused with 0xA1.
  bool subscription_identifiers = true;
  /// PUBLISH packets a client may send per second, counted in whole seconds of the broker's
  /// clock; 0: no limit. The one over it ends the connection (not handled): 5.0 DISCONNECT 0x96
  /// (Message rate too high), 3.1.1 a close; counted in broker_stats::rate_limited. The will, if
  /// any, goes out as for any close the client did not ask for.
  std::uint32_t max_publish_rate = 0;
  /// Subscriptions one client may hold.
  std::size_t max_subscriptions_per_client = 10'000;
  /// Levels in a topic name or filter.
  std::size_t max_topic_levels = 128;
  /// Time from accept to a complete CONNECT.
  std::chrono::milliseconds connect_timeout{10'000};
  /// A client that sends nothing for keep_alive * this is disconnected [MQTT-3.1.2-24].
  double keep_alive_multiplier = 1.5;
  /// Keep Alive imposed when a client asks for 0 (no limit) or more; 0 leaves the client's value.
  std::uint16_t max_keep_alive = 0;
  /// How long a persistent session whose client left is kept (Mosquitto: persistent_client_expiration);
  /// zero keeps it until the broker stops.
  std::chrono::seconds persistent_session_expiry{std::chrono::hours(24 * 7)};
  /// Retained messages kept in all; new topics are refused past it (replacing stays allowed).
  std::size_t max_retained_messages = 1'000'000;
  /// Memory given back: once traffic is quiet (fewer than 1,000 messages in 2 s) and the C
  /// library's heap holds this many more free bytes than after the last trim (a burst that
  /// ended: queues drained, connections gone), the broker returns them to the system, with its
  /// thread's caches (glibc's malloc_trim; checked every 2 s on the broker's executor). It trims
  /// the process's whole heap, the host's part included; 0 leaves the heap alone.
  std::size_t heap_trim_threshold = 1024 * 1024;
  /// How often $SYS/broker/... statistics are published (Mosquitto: sys_interval 10); 0 disables.
  std::chrono::seconds sys_interval{10};
  /// 5.0: Topic Aliases a client may set toward the broker, announced as Topic Alias Maximum in
  /// CONNACK (Mosquitto: max_topic_alias 10); 0 refuses every alias.
  std::uint16_t topic_alias_maximum = 10;
  /// 5.0: Topic Aliases the broker uses toward a client, at most the client's own Topic Alias
  /// Maximum; when all are taken the least recently used one is given to the new topic. 0: none.
  std::uint16_t max_outbound_topic_aliases = 10;
  /// The highest QoS clients may publish with (5.0 Maximum QoS in CONNACK); subscriptions are
  /// granted at most this. A PUBLISH or will above it: 5.0 DISCONNECT or CONNACK 0x9B, 3.1.1 close.
  codec::qos maximum_qos = codec::qos::exactly_once;
  /// Whether clients may publish retained messages (5.0 Retain Available); false: a retained
  /// PUBLISH or will gets 5.0 DISCONNECT or CONNACK 0x9A, 3.1.1 a close.
  bool retain_available = true;
  /// 5.0: what a client that sets Request Response Information gets as Response Information in
  /// CONNACK (the basis of its response topics); empty: nothing is sent.
  std::string response_information;
  /// The least severe log message the hooks' log() gets; nothing more verbose is even formatted.
  mqttbroker::log_level log_level = mqttbroker::log_level::info;
  /// The info lines for each client connecting and leaving (Mosquitto: connection_messages).
  bool connection_messages = true;
  /// Longest client identifier accepted.
  std::size_t max_client_id_length = 256;
  /// 5.0 enhanced authentication (with an authenticate_enhanced hook): the most packets a client
  /// sends in one exchange (the CONNECT or AUTH 0x19 that starts it included), and the longest
  /// Authentication Method and Data taken from it. Past either the exchange fails with 0x97
  /// (Quota exceeded), in CONNACK or, after it, DISCONNECT. Before CONNACK the whole exchange must
  /// end within connect_timeout of the CONNECT; a re-authentication within this limit of its AUTH
  /// 0x19, or the connection closes with DISCONNECT 0x87.
  std::uint32_t max_auth_steps = 10;
  std::size_t max_auth_data_size = 4096;
  std::chrono::milliseconds reauthentication_timeout{10'000};
};

MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_OPTIONS_HPP
