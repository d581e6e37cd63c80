// The server on the SQLite store (--persistence): serve() for its two bundles. The only file of the
// server that includes storage/sqlite.hpp, so that the build with crash points recompiles it alone.
#include "server.hpp"

#include <mqttbroker/storage/sqlite.hpp>  // mqttbroker::sqlite (SQLite 3)

namespace server {

// The memory bundles on the SQLite store, which commits on a thread of its own.
struct st_store_policies : st_policies {
  using storage = mqttbroker::storage::sqlite;
};
struct mt_store_policies : mt_policies {
  using storage = mqttbroker::storage::sqlite;
};

template <>
struct storage_setup<mqttbroker::storage::sqlite> {
  static constexpr bool durable = true;
  template <class Broker>
  static bool open(Broker& broker, const persistence_settings& store, const cluster_settings&) {
    // Before the listeners: a store that cannot be opened (in use, not a store, newer) stops the
    // start with its reason, and start() loads what it kept.
    mqttbroker::storage::sqlite_options o;
    o.path = store.file();
    o.synchronous = store.synchronous == "normal" ? mqttbroker::storage::sqlite_sync::normal
                                                  : mqttbroker::storage::sqlite_sync::full;
    o.max_bytes = store.max_bytes;
    o.log = [](std::string_view text) { say(level::warning, "{}", text); };
    broker.storage().open(std::move(o));
    say(level::info, "persistence: {} (synchronous {})", store.file(), store.synchronous);
    return true;
  }
  template <class Broker>
  static void scrape(Broker& broker, std::string& out) {
    namespace pm = mqttbroker::metrics;
    const auto w = broker.storage().statistics();
    pm::write_family<std::uint64_t>(out, "mqttbroker_storage_commits_total", "counter",
                                    "Batches the durable store took.", {{"", w.commits}});
    pm::write_family<std::uint64_t>(out, "mqttbroker_storage_changes_written_total", "counter",
                                    "Row changes the durable store wrote.", {{"", w.changes_written}});
    pm::write_histogram(out, "mqttbroker_storage_transaction_seconds",
                        "Durable store transactions, BEGIN to a durable COMMIT.",
                        mqttbroker::storage::commit_latency_bounds, w.transactions_within, w.transactions,
                        static_cast<double>(w.transaction_time.count()), 1e-6);
  }
  template <class Broker>
  static void stopped(Broker& broker) {
    const auto w = broker.storage().statistics();
    say(level::info, "storage: {} commits, {} changes written, {} undone in their own batch", w.commits,
        w.changes_written, w.changes_undone);
  }
};

int serve_on_sqlite(const mqttbroker::broker_options& opts, const logging_hooks& hooks,
                    const std::vector<listener_plan>& plans, unsigned threads, const persistence_settings& store,
                    const cluster_settings& cluster) {
  return serve_bundles<st_store_policies, mt_store_policies>(opts, hooks, plans, threads, store, cluster);
}

}  // namespace server
