// The server as a node of a cluster on NATS (--cluster): serve() for its two bundles, the only
// file of the server that includes cluster/nats.hpp.
#include "server.hpp"

#include <mqttbroker/cluster/nats.hpp>  // mqttbroker::nats (nats.c)

#include <algorithm>

namespace server {

// The memory bundles as nodes of a cluster on NATS, their persistent sessions' expiry and
// subscriptions kept in the cluster's bucket (a node that is lost, its sessions resume on another).
struct st_cluster_policies : st_policies {
  using cluster = mqttbroker::cluster::nats;
  using storage = mqttbroker::cluster::nats_sessions;
};
struct mt_cluster_policies : mt_policies {
  using cluster = mqttbroker::cluster::nats;
  using storage = mqttbroker::cluster::nats_sessions;
};

template <>
struct storage_setup<mqttbroker::cluster::nats_sessions> {
  static constexpr bool durable = false;
  template <class Broker>
  static bool open(Broker& broker, const persistence_settings&, const cluster_settings& cluster) {
    mqttbroker::cluster::nats_options o;
    o.servers.clear();
    for (std::size_t at = 0; at <= cluster.servers.size();) {
      const std::size_t comma = std::min(cluster.servers.find(',', at), cluster.servers.size());
      if (comma > at) o.servers.push_back(cluster.servers.substr(at, comma - at));
      at = comma + 1;
    }
    o.node = cluster.node;
    o.replicas = cluster.replicas;
    o.send_asap = cluster.send_asap;
    o.jetstream_delivery = cluster.jetstream;
    broker.cluster().configure(std::move(o));
    broker.storage().attach(broker.cluster());
    // Before the io_context runs: the first connection blocks until NATS answers.
    if (const std::error_code ec = broker.connect_cluster()) {
      say(level::error, "cluster: cannot reach NATS at {}: {}", cluster.servers, ec.message());
      return false;
    }
    say(level::info, "cluster: node {} on NATS {}", cluster.node, cluster.servers);
    return true;
  }
  template <class Broker>
  static void scrape(Broker& broker, std::string& out) {
    namespace pm = mqttbroker::metrics;
    const auto c = broker.cluster().statistics();
    using u64 = std::uint64_t;
    pm::write_family<u64>(out, "mqttbroker_cluster_connected", "gauge", "1 while the node is connected to NATS.",
                          {{"", c.connected ? 1 : 0}});
    pm::write_family<u64>(out, "mqttbroker_cluster_messages_sent_total", "counter",
                          "Messages sent to the other nodes; those that could not be (no connection and its "
                          "reconnect buffer full, too large); QoS 1/2 ones sent that JetStream did not store.",
                          {{"result=\"sent\"", c.published},
                           {"result=\"failed\"", c.publish_failed},
                           {"result=\"not_stored\"", c.stream_failed}});
    pm::write_family<u64>(out, "mqttbroker_cluster_messages_received_total", "counter",
                          "Messages from other nodes: handed to the broker, repeats dropped, malformed dropped, "
                          "dropped by NATS's client for a slow node.",
                          {{"result=\"delivered\"", c.received},
                           {"result=\"repeat\"", c.repeats},
                           {"result=\"malformed\"", c.malformed},
                           {"result=\"slow\"", c.dropped}});
    pm::write_family<u64>(out, "mqttbroker_cluster_disconnects_total", "counter", "Connections to NATS lost.",
                          {{"", c.disconnects}});
    pm::write_family<u64>(out, "mqttbroker_cluster_reconnects_total", "counter", "Connections to NATS made again.",
                          {{"", c.reconnects}});
    pm::write_family<u64>(out, "mqttbroker_cluster_retained_total", "counter",
                          "Retained messages written to the cluster's bucket, not written, taken from it.",
                          {{"result=\"stored\"", c.retained_stored},
                           {"result=\"failed\"", c.retained_failed},
                           {"result=\"loaded\"", c.retained_loaded}});
    pm::write_family<u64>(out, "mqttbroker_cluster_claims_total", "counter",
                          "Clients this node became the owner of, and connections refused because it could not.",
                          {{"result=\"owned\"", c.claims}, {"result=\"failed\"", c.claims_failed}});
    pm::write_family<u64>(out, "mqttbroker_cluster_sessions_moved_total", "counter",
                          "Sessions handed over between nodes: taken from another node, given to one, lost "
                          "(the previous owner did not answer in time), and of the lost ones those resumed from "
                          "what the cluster's bucket kept of them and those that had expired meanwhile.",
                          {{"direction=\"taken\"", c.sessions_taken},
                           {"direction=\"given\"", c.sessions_given},
                           {"direction=\"lost\"", c.handovers_lost},
                           {"direction=\"restored\"", c.sessions_restored},
                           {"direction=\"expired\"", c.sessions_expired}});
    pm::write_family<u64>(out, "mqttbroker_cluster_session_writes_total", "counter",
                          "Persistent sessions' expiry and subscriptions written to the cluster's bucket, and "
                          "writes that did not go (JetStream away, or another node owned the client by then).",
                          {{"result=\"written\"", c.session_writes}, {"result=\"failed\"", c.session_writes_failed}});
    pm::write_family<u64>(out, "mqttbroker_cluster_subscriptions", "gauge",
                          "NATS subscriptions the node holds, JetStream consumers' included.",
                          {{"", static_cast<u64>(c.subscriptions)}});
    pm::write_family<u64>(out, "mqttbroker_cluster_consumers_missing", "gauge",
                          "Filters whose JetStream consumers could not be made yet (tried again each second).",
                          {{"", static_cast<u64>(c.consumers_missing)}});
  }
  template <class Broker>
  static void stopped(Broker& broker) {
    const auto c = broker.cluster().statistics();
    say(level::info,
        "cluster: {} messages sent to other nodes ({} not sent, {} not stored), {} received ({} repeats, {} "
        "malformed, {} dropped as slow), {} disconnects, {} reconnects",
        c.published, c.publish_failed, c.stream_failed, c.received, c.repeats, c.malformed, c.dropped,
        c.disconnects, c.reconnects);
  }
};

int serve_clustered(const mqttbroker::broker_options& opts, const logging_hooks& hooks,
                    const std::vector<listener_plan>& plans, unsigned threads, const persistence_settings& store,
                    const cluster_settings& cluster) {
  return serve_bundles<st_cluster_policies, mt_cluster_policies>(opts, hooks, plans, threads, store, cluster);
}

}  // namespace server
