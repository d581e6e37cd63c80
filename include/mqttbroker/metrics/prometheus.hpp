#ifndef MQTTBROKER_METRICS_PROMETHEUS_HPP
#define MQTTBROKER_METRICS_PROMETHEUS_HPP

// The broker's counters in Prometheus' text exposition format (version 0.0.4), for a host to
// serve (metrics/http.hpp serves it) or push. Std and fmt only.

#include <mqttbroker/config.hpp>
#include <mqttbroker/engine/records.hpp>

#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#if defined(__linux__)
#include <unistd.h>
#endif

MQTTBROKER_BEGIN_NAMESPACE
namespace metrics {

/// Appends one metric family: its HELP and TYPE lines, then a sample per (labels, value); labels
/// are written as given (`qos="1"`), empty for none.
template <class Value>
void write_family(std::string& out, std::string_view name, std::string_view type, std::string_view help,
                  std::initializer_list<std::pair<std::string_view, Value>> samples) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  for (const auto& [labels, value] : samples) {
    if (labels.empty())
      fmt::format_to(std::back_inserter(out), "{} {}\n", name, value);
    else
      fmt::format_to(std::back_inserter(out), "{}{{{}}} {}\n", name, labels, value);
  }
}

/// Appends a histogram: `within[i]` observations at most `bounds[i]` (cumulative, as counted),
/// `count` in all and their `sum`, the bounds and sum in the unit `scale` turns them into
/// (seconds from microseconds: 1e-6).
template <std::size_t N, class Bound>
void write_histogram(std::string& out, std::string_view name, std::string_view help, const Bound (&bounds)[N],
                     const std::uint64_t (&within)[N], std::uint64_t count, double sum, double scale) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  for (std::size_t i = 0; i < N; ++i)
    fmt::format_to(std::back_inserter(out), "{}_bucket{{le=\"{:g}\"}} {}\n", name,
                   static_cast<double>(bounds[i]) * scale, within[i]);
  fmt::format_to(std::back_inserter(out), "{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {:g}\n{}_count {}\n", name, count, name,
                 sum * scale, name, count);
}

/// Appends the broker's counters (broker::stats()) under names starting with `prefix_`.
inline void write_prometheus(std::string& out, const broker_stats& s, std::string_view prefix = "mqttbroker") {
  const auto n = [&](std::string_view suffix) { return fmt::format("{}_{}", prefix, suffix); };
  using u64 = std::uint64_t;
  write_family<u64>(out, n("connections"), "gauge", "Client connections open.", {{"", s.connections}});
  write_family<u64>(out, n("connections_accepted_total"), "counter", "Connections accepted.",
                    {{"", s.connections_accepted}});
  write_family<u64>(out, n("connections_refused_total"), "counter", "Connections and CONNECTs refused, by reason.",
                    {{"reason=\"max_connections\"", s.connections_refused},
                     {"reason=\"per_address\"", s.refused_per_address},
                     {"reason=\"connection_rate\"", s.refused_rate},
                     {"reason=\"handshake\"", s.handshake_failures},
                     {"reason=\"not_authorized\"", s.connects_refused_auth},
                     {"reason=\"connect_invalid\"", s.connects_refused_other}});
  write_family<u64>(out, n("connections_closed_total"), "counter", "Connections the broker closed, by cause.",
                    {{"cause=\"protocol_error\"", s.protocol_errors},
                     {"cause=\"connect_timeout\"", s.connect_timeouts},
                     {"cause=\"keep_alive\"", s.keep_alive_timeouts},
                     {"cause=\"publish_rate\"", s.rate_limited}});
  write_family<u64>(out, n("sessions"), "gauge", "Sessions, connected or not.", {{"", s.sessions}});
  write_family<u64>(out, n("sessions_expired_total"), "counter", "Sessions that expired.", {{"", s.sessions_expired}});
  write_family<u64>(out, n("messages_received_total"), "counter", "PUBLISH received (clients and the host), by QoS.",
                    {{"qos=\"0\"", s.messages_received_qos[0]},
                     {"qos=\"1\"", s.messages_received_qos[1]},
                     {"qos=\"2\"", s.messages_received_qos[2]}});
  write_family<u64>(out, n("messages_sent_total"), "counter", "PUBLISH sent (clients and the host's handlers), by QoS.",
                    {{"qos=\"0\"", s.messages_sent_qos[0]},
                     {"qos=\"1\"", s.messages_sent_qos[1]},
                     {"qos=\"2\"", s.messages_sent_qos[2]}});
  write_family<u64>(out, n("bytes_received_total"), "counter", "MQTT bytes read from client connections.",
                    {{"", s.bytes_received}});
  write_family<u64>(out, n("bytes_sent_total"), "counter", "MQTT bytes written to client connections.",
                    {{"", s.bytes_sent}});
  write_family<u64>(out, n("messages_dropped_total"), "counter", "Messages not delivered, by cause.",
                    {{"cause=\"queue_limit\"", s.messages_dropped - s.queue_memory_drops},
                     {"cause=\"queue_memory\"", s.queue_memory_drops},
                     {"cause=\"expired\"", s.messages_expired},
                     {"cause=\"publish_denied\"", s.publishes_denied},
                     {"cause=\"delivery_denied\"", s.deliveries_denied}});
  write_family<u64>(out, n("queued_messages"), "gauge", "Messages waiting in sessions (not in flight).",
                    {{"", s.queued_messages}});
  write_family<u64>(out, n("queued_bytes"), "gauge", "Payload bytes waiting in sessions.", {{"", s.queued_bytes}});
  write_family<u64>(out, n("retained_messages"), "gauge", "Retained messages.", {{"", s.retained_messages}});
  write_family<u64>(out, n("subscriptions"), "gauge", "Client subscriptions, shared ones included.",
                    {{"", s.subscriptions}});
  write_family<u64>(out, n("reader_pauses_total"), "counter", "Publishers paused for a subscriber behind.",
                    {{"", s.reader_pauses}});
}

/// The process's resident set size in bytes (Linux: /proc/self/statm); 0 where it cannot tell.
inline std::uint64_t resident_memory_bytes() {
#if defined(__linux__)
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long long size = 0, resident = 0;
  const int got = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  if (got != 2) return 0;
  const long page = ::sysconf(_SC_PAGESIZE);
  return resident * static_cast<unsigned long long>(page > 0 ? page : 4096);
#else
  return 0;
#endif
}

}  // namespace metrics
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_METRICS_PROMETHEUS_HPP
