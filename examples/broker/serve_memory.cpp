// The server on memory storage, its default: serve() for the two bundles.
#include "server.hpp"

namespace server {

int serve_in_memory(const mqttbroker::broker_options& opts, const logging_hooks& hooks,
                    const std::vector<listener_plan>& plans, unsigned threads, const persistence_settings& store,
                    const cluster_settings& cluster) {
  return serve_bundles<st_policies, mt_policies>(opts, hooks, plans, threads, store, cluster);
}

}  // namespace server
