// mqttbroker: the standalone server. It is a host like any other: it owns main(), the io_context
// and the threads, and runs mqttbroker::broker on them.
#include <mqttbroker/mqttbroker.hpp>
#if MQTTBROKER_EXAMPLE_TLS
#include <mqttbroker/client/tls.hpp>     // TLS bridges
#include <mqttbroker/transport/tls.hpp>  // built with mqttbroker::tls (OpenSSL) when CMake found it
#endif
#if MQTTBROKER_EXAMPLE_WEBSOCKET
#include <mqttbroker/transport/websocket_tls.hpp>  // mqttbroker::websocket and mqttbroker::tls
#endif
#if MQTTBROKER_EXAMPLE_SQLITE
#include <mqttbroker/storage/sqlite.hpp>  // mqttbroker::sqlite (SQLite 3): --persistence
#endif
#if MQTTBROKER_EXAMPLE_NATS
#include <mqttbroker/cluster/nats.hpp>  // mqttbroker::nats (nats.c): --cluster
#endif
#if MQTTBROKER_EXAMPLE_PASSWORDS
#include <mqttbroker/auth/password_file.hpp>  // mqttbroker::auth (OpenSSL's libcrypto): --password-file
#endif

#include "config_file.hpp"

#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <fmt/core.h>

#include <syslog.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <ctime>
#include <functional>
#include <cstdint>
#include <memory>
#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

using level = mqttbroker::log_level;
level log_level = level::info;

/// Where log lines go and how they look: stderr, plain, unless the configuration file's
/// log_dest, log_timestamp and log_timestamp_format say otherwise (Mosquitto's lines).
struct log_output {
  bool to_stderr = true;
  bool to_stdout = false;
  bool to_syslog = false;
  std::FILE* file = nullptr;  // log_dest file PATH, appended to
  bool timestamp = false;
  std::string timestamp_format;  // strftime(3); empty: seconds since the epoch, as Mosquitto writes them
  bool connection_messages = true;  // the broker's lines for clients connecting and leaving
  bool subscriptions = false;       // log_type subscribe/unsubscribe: those lines whatever the level
};
log_output output;

void print(level l, std::string_view message) {
  std::string stamp;
  if (output.timestamp) {
    const std::time_t now = std::time(nullptr);
    if (output.timestamp_format.empty()) {
      stamp = fmt::format("{}: ", static_cast<long long>(now));
    } else {
      std::tm local{};
      localtime_r(&now, &local);
      char text[128];
      const std::size_t n = std::strftime(text, sizeof text, output.timestamp_format.c_str(), &local);
      stamp = std::string(text, n) + ": ";
    }
  }
  // One write per destination and line, so lines from several threads do not interleave.
  const std::string line = fmt::format("{}[{}] {}\n", stamp, mqttbroker::to_string(l), message);
  if (output.to_stderr) std::fputs(line.c_str(), stderr);
  if (output.to_stdout) {
    std::fputs(line.c_str(), stdout);
    std::fflush(stdout);
  }
  if (output.file != nullptr) {
    std::fputs(line.c_str(), output.file);
    std::fflush(output.file);
  }
  if (output.to_syslog) {
    const int priority = l == level::error ? LOG_ERR : l == level::warning ? LOG_WARNING
                         : l == level::notice ? LOG_NOTICE : l == level::info ? LOG_INFO : LOG_DEBUG;
    syslog(priority, "%.*s", static_cast<int>(message.size()), message.data());
  }
}

template <class... Args>
void say(level l, fmt::format_string<Args...> f, Args&&... args) {
  if (l > log_level) return;
  print(l, fmt::format(f, std::forward<Args>(args)...));
}

/// Who may connect and what they may do: the broker's password_file, acl_file and
/// allow_anonymous, or one listener's with per_listener_settings true. Copies share the files'
/// contents, so SIGHUP's reload through the server's copy reaches the broker's.
struct access_rules {
  std::string where;          // "" for the broker's, "listener N" for a listener's: for log lines
  std::string password_path;  // what SIGHUP reads again
  std::string acl_path;
  bool allow_anonymous = true;
#if MQTTBROKER_EXAMPLE_PASSWORDS
  std::optional<mqttbroker::auth::password_hooks> passwords;  // none: every client may connect
#endif
  std::optional<mqttbroker::hooks::acl_hooks> acl;  // none: every client may do everything
};

/// The broker's own log messages (refused connections, protocol errors, timeouts, connections at
/// info), and where each client came from and what it subscribed to at debug; the broker calls
/// these only because they exist. With --redirect, every authenticated client is sent to that
/// server instead (a server being retired, say).
struct logging_hooks {
  std::string redirect_to;  // empty: no redirection
  bool redirect_permanent = false;
  std::set<std::string, std::less<>> publishers;  // --allow-publish: empty lets everyone publish

  /// --password-file, --allow-anonymous, --acl-file; with per_listener_settings true a
  /// listener's own, by listener index (none: the broker's, as for the command line's listeners).
  access_rules global;
  std::vector<std::optional<access_rules>> per_listener;

  /// The server's own bridges, whose local sessions come through the in-memory listener (with
  /// persistence): not checked against the files' rules, as a bridge is part of the server.
  static bool own_bridge(const mqttbroker::hooks::client_info& c) {
    return c.listener != nullptr && std::string_view(c.listener->transport) == mqttbroker::transport::memory::name;
  }

  const access_rules& rules_for(const mqttbroker::hooks::client_info& c) const {
    if (c.listener != nullptr && c.listener->index < per_listener.size() && per_listener[c.listener->index])
      return *per_listener[c.listener->index];
    return global;
  }
  template <class F>
  void for_each_rules(F&& f) {
    f(global);
    for (auto& r : per_listener)
      if (r) f(*r);
  }

#if MQTTBROKER_EXAMPLE_PASSWORDS
  /// A refused login is answered this much later, on `timers`, so that guessing is slow; the
  /// client's reader waits meanwhile, other clients do not.
  std::chrono::milliseconds refusal_delay{1000};
  asio::any_io_executor timers;

  void authenticate(const mqttbroker::hooks::connect_info& c, mqttbroker::hooks::auth_reply reply) {
    const access_rules& r = rules_for(c);
    if (!r.passwords || own_bridge(c)) return reply(mqttbroker::hooks::auth_result::accept);
    const auto answer = r.passwords->authenticate(c);
    if (answer == mqttbroker::hooks::auth_result::accept) return reply(answer);
    say(level::notice, "login refused: client {} from {}:{}, {}", c.client_id, c.peer_address, c.peer_port,
        c.username ? fmt::format("username {}", *c.username) : std::string("no username (allow_anonymous is false)"));
    auto timer = std::make_shared<asio::steady_timer>(timers, refusal_delay);
    timer->async_wait([timer, reply = std::move(reply), answer](std::error_code) mutable { reply(answer); });
  }
#endif

  bool authorize_subscribe(const mqttbroker::hooks::client_info& c, std::string_view filter, mqttbroker::codec::qos q) {
    const access_rules& r = rules_for(c);
    if (!r.acl || own_bridge(c) || r.acl->authorize_subscribe(c, filter, q)) return true;
    say(level::notice, "{} (username {}) may not subscribe to {}: the ACL file refuses it", c.client_id,
        c.username ? *c.username : "none", filter);
    return false;
  }
  bool authorize_read(const mqttbroker::hooks::client_info& c, const mqttbroker::message& m) {
    const access_rules& r = rules_for(c);
    return !r.acl || own_bridge(c) || r.acl->authorize_read(c, m);
  }
  /// Without an ACL file deliveries are not checked: the broker skips authorize_read.
  bool reads_checked() const noexcept { return any_acl; }
  bool any_acl = false;  // set once the rules are read

  /// --acl-file, and a minimal rule to show who a client is (with --use-identity-as-username:
  /// its certificate): only the named usernames may publish.
  bool authorize_publish(const mqttbroker::hooks::client_info& c, const mqttbroker::message& m) {
    if (own_bridge(c)) return true;
    if (const access_rules& r = rules_for(c); r.acl && !r.acl->authorize_publish(c, m)) {
      say(level::notice, "{} (username {}) may not publish to {}: the ACL file refuses it", c.client_id,
          c.username ? *c.username : "none", m.topic());
      return false;
    }
    if (publishers.empty()) return true;
    if (c.username && publishers.count(*c.username) != 0) return true;
    say(level::notice, "{} (username {}) may not publish to {}", c.client_id, c.username ? *c.username : "none",
        m.topic());
    return false;
  }

  void log(level l, std::string_view message) { print(l, message); }
  std::optional<mqttbroker::hooks::redirection> redirect(const mqttbroker::hooks::connect_info& c) {
    if (redirect_to.empty() || own_bridge(c)) return std::nullopt;
    return mqttbroker::hooks::redirection{redirect_to, redirect_permanent};
  }
  void on_connect(const mqttbroker::hooks::client_info& c) {
    say(level::debug, "{} is {}:{} on listener {} ({}), username {}, certificate {}", c.client_id, c.peer_address,
        c.peer_port, c.listener ? c.listener->index : 0, c.listener ? c.listener->transport : "none",
        c.username ? *c.username : "none", c.certificate_identity.empty() ? "none" : c.certificate_identity);
  }
  void on_subscribe(const mqttbroker::hooks::client_info& c, std::string_view filter, mqttbroker::codec::qos q) {
    if (output.subscriptions)
      print(level::info, fmt::format("{} subscribed to {} at QoS {}", c.client_id, filter, static_cast<int>(q)));
    else
      say(level::debug, "{} subscribed to {} at QoS {}", c.client_id, filter, static_cast<int>(q));
  }
  void on_unsubscribe(const mqttbroker::hooks::client_info& c, std::string_view filter) {
    if (output.subscriptions) print(level::info, fmt::format("{} unsubscribed from {}", c.client_id, filter));
  }
};

struct st_policies : mqttbroker::default_policies {
  using hooks = logging_hooks;
};
struct mt_policies : mqttbroker::default_policies {
  using locking = mqttbroker::locking::shared;
  using hooks = logging_hooks;
};

#if MQTTBROKER_EXAMPLE_SQLITE
// --persistence: the same bundles on the SQLite store, which commits on a thread of its own.
struct st_store_policies : st_policies {
  using storage = mqttbroker::storage::sqlite;
};
struct mt_store_policies : mt_policies {
  using storage = mqttbroker::storage::sqlite;
};
#endif

#if MQTTBROKER_EXAMPLE_NATS
// --cluster: the memory bundles as nodes of a cluster on NATS, their persistent sessions' expiry
// and subscriptions kept in the cluster's bucket (a node that is lost, its sessions resume on
// another).
struct st_cluster_policies : st_policies {
  using cluster = mqttbroker::cluster::nats;
  using storage = mqttbroker::cluster::nats_sessions;
};
struct mt_cluster_policies : mt_policies {
  using cluster = mqttbroker::cluster::nats;
  using storage = mqttbroker::cluster::nats_sessions;
};
#endif

/// Whether Broker stores on SQLite (--persistence): its options, metrics and log lines.
template <class Broker>
constexpr bool on_sqlite() {
#if MQTTBROKER_EXAMPLE_SQLITE
  return std::is_same_v<typename Broker::engine_type::storage_type, mqttbroker::storage::sqlite>;
#else
  return false;
#endif
}

/// --cluster and --cluster-node: NATS servers (comma-separated URLs; empty: a broker alone) and
/// this node's name in the cluster.
struct cluster_settings {
  std::string servers;
  std::string node;
  int replicas = 1;  // the retained messages' bucket's copies (JetStream replicas)
  bool send_asap = false;  // nats_options::send_asap
  bool jetstream = true;   // nats_options::jetstream_delivery
};

/// --persistence and its settings; an empty folder keeps everything in memory.
struct persistence_settings {
  std::string folder;
  std::string synchronous = "full";
  std::uint64_t max_bytes = 0;
  std::string file() const { return folder.empty() ? std::string() : folder + "/mqttbroker.db"; }
};

namespace cfg = mqttbroker_server;

/// The TLS listener's settings (--certfile and the rest); none without --certfile.
struct tls_settings {
  std::string certfile, keyfile, cafile, capath, crlfile, version = "tlsv1.2", ciphers, ciphersuites;
  std::uint16_t port = 8883;
  bool require_certificate = false;
  bool identity_as_username = false;
};

/// The WebSocket listeners (--ws-port, --wss-port); wss uses the TLS settings' certificates.
struct ws_settings {
  std::uint16_t port = 0;      // 0: no ws listener
  std::uint16_t tls_port = 0;  // 0: no wss listener
  std::string path = "/mqtt";
  std::vector<std::string> origins;
};

/// One listener to open: a configuration file's, or one the command line's flags describe (then
/// its origin is empty).
struct listener_plan {
  cfg::listener_settings s;
  std::string ws_path;  // WebSocket: the path clients upgrade on; empty: any
  std::vector<std::string> ws_origins;
};

/// The transport's name, as the broker's listener_info says it.
std::string_view transport_of(const cfg::listener_settings& s) {
  if (s.protocol == cfg::listener_protocol::websockets) return s.tls() ? "wss" : "ws";
  return s.tls() ? "tls" : "tcp";
}

/// The address to bind: an IP address as it is; a host name (Mosquitto takes `listener 1883
/// localhost`) as its first IPv4 address, else its first address.
std::string bind_address(asio::io_context& io, const std::string& host, std::error_code& ec) {
  ec = {};
  (void)asio::ip::make_address(host, ec);
  if (!ec) return host;
  asio::ip::tcp::resolver resolver(io);
  const auto found = resolver.resolve(host, "", ec);
  if (ec || found.empty()) {
    if (!ec) ec = asio::error::host_not_found;
    return host;
  }
  for (const auto& r : found)
    if (r.endpoint().address().is_v4()) return r.endpoint().address().to_string();
  return found.begin()->endpoint().address().to_string();
}

#if MQTTBROKER_EXAMPLE_TLS
mqttbroker::transport::tls::listen_options tls_options(const cfg::listener_settings& s) {
  mqttbroker::transport::tls::listen_options to;
  to.address = s.address;
  to.port = s.port;
  to.certificate_chain_file = s.certfile;
  to.private_key_file = s.keyfile;
  to.ca_file = s.cafile;
  to.ca_path = s.capath;
  to.crl_file = s.crlfile;
  to.require_certificate = s.require_certificate;
  to.use_identity_as_username = s.use_identity_as_username;
  to.min_version = s.tls_version == "tlsv1.3" ? mqttbroker::transport::tls_version::v1_3
                                              : mqttbroker::transport::tls_version::v1_2;
  to.ciphers = s.ciphers;
  to.ciphersuites = s.ciphers_tls13;
  return to;
}
#endif

/// What opening the listeners leaves for later: the lines that announce them once the server can
/// stop gracefully, the first one's address, and the listeners with certificates (SIGHUP reloads them).
struct opened {
  std::vector<std::string> announce;
  std::string first_address;
  std::vector<std::size_t> tls_listeners;
};

/// Adds `p`'s listener to `broker`. On failure says why (naming the file's line for a file's
/// listener) and returns false.
template <class Broker>
bool open_listener(Broker& broker, asio::io_context& io, const listener_plan& p, opened& out) {
  const cfg::listener_settings& s = p.s;
  const std::string where = s.origin.empty() ? std::string() : fmt::format(" ({})", s.origin);
  std::error_code ec;
  const std::string address = bind_address(io, s.address, ec);
  if (ec) {
    say(level::error, "cannot listen on {}:{}{}: {}", s.address, s.port, where, ec.message());
    return false;
  }
  const std::string_view transport = transport_of(s);
  std::string what;
  if (transport == "tcp") {
    typename Broker::listen_options lo;
    lo.address = address;
    lo.port = s.port;
    broker.listen(lo, ec);
    what = ec.message();
  } else {
#if MQTTBROKER_EXAMPLE_TLS
    auto to = tls_options(s);
    to.address = address;
    if (transport == "tls") {
      broker.template listen<mqttbroker::transport::tls>(to, ec, &what);
    } else {
#if MQTTBROKER_EXAMPLE_WEBSOCKET
      // The inner transport's options, then the WebSocket ones.
      auto with_ws = [&](auto o) {
        o.address = address;
        o.port = s.port;
        o.path = p.ws_path;
        o.allowed_origins = p.ws_origins;
        return o;
      };
      if (transport == "ws") {
        broker.template listen<mqttbroker::transport::ws>(with_ws(mqttbroker::transport::ws::listen_options{}), ec, &what);
      } else {
        mqttbroker::transport::wss::listen_options wo;
        static_cast<mqttbroker::transport::tls::listen_options&>(wo) = to;
        broker.template listen<mqttbroker::transport::wss>(with_ws(wo), ec, &what);
      }
#else
      say(level::error, "protocol websockets{}: this mqttbroker was built without WebSocket (OpenSSL was not found)", where);
      return false;
#endif
    }
#else
    say(level::error, "{} listener{}: this mqttbroker was built without TLS (OpenSSL was not found)", transport, where);
    return false;
#endif
  }
  if (ec) {
    say(level::error, "cannot listen ({}) on {}:{}{}: {}", transport, address, s.port, where, what.empty() ? ec.message() : what);
    return false;
  }
  const std::size_t index = broker.listener_count() - 1;
  if (s.max_connections) broker.limit_connections(index, *s.max_connections);
  if (s.tls()) out.tls_listeners.push_back(index);
  if (index == 0) out.first_address = address;
  const std::uint16_t bound = broker.local_port(index);
  const std::string path = s.protocol == cfg::listener_protocol::websockets
                               ? fmt::format(" path {}", p.ws_path.empty() ? "(any)" : p.ws_path)
                               : std::string();
  const std::string limit = s.max_connections ? fmt::format(", at most {} connections", *s.max_connections) : std::string();
  std::vector<std::string>& announce = out.announce;
  if (!s.origin.empty())
    announce.push_back(fmt::format("listener {}{}: {} on {}:{}{}{}", index, where, transport, address, bound, path, limit));
  else if (transport == "tls")
    announce.push_back(fmt::format("TLS listening on {}:{}", address, bound));
  else if (transport != "tcp")
    announce.push_back(fmt::format("WebSocket listening on {}://{}:{}{}", transport, address, bound, p.ws_path));
  return true;
}

/// No line goes anywhere (log_dest none, log_type none).
void mute(log_output& o) {
  o.to_stderr = o.to_stdout = o.to_syslog = false;
  if (o.file != nullptr) std::fclose(o.file);
  o.file = nullptr;
}

/// The configuration file's logging lines. False (with the reason printed) when a log file cannot
/// be opened.
bool apply_logging(const cfg::config_settings& file, bool level_flag_given, std::string& level_name,
                   std::vector<std::string>& warnings) {
  if (!file.log_dest.empty()) {
    log_output o;
    o.to_stderr = false;
    bool none = false;
    for (const std::string& d : file.log_dest) {
      if (d == "stderr") {
        o.to_stderr = true;
      } else if (d == "stdout") {
        o.to_stdout = true;
      } else if (d == "syslog") {
        o.to_syslog = true;
      } else if (d == "none") {
        none = true;  // Mosquitto: no logs at all, whatever else is named
      } else if (d.rfind("file ", 0) == 0) {
        const std::string path = d.substr(5);
        if (o.file == nullptr) o.file = std::fopen(path.c_str(), "a");
        if (o.file == nullptr) {
          fmt::print(stderr, "mqttbroker: log_dest file {}: cannot open it for appending\n", path);
          return false;
        }
      }
    }
    if (none) mute(o);
    if (o.to_syslog) openlog("mqttbroker", LOG_PID, LOG_DAEMON);
    output.to_stderr = o.to_stderr;
    output.to_stdout = o.to_stdout;
    output.to_syslog = o.to_syslog;
    output.file = o.file;
  }
  if (!file.log_type.empty() && !level_flag_given) {
    // The most verbose level named (Mosquitto's "information" is info); errors always show.
    static constexpr std::pair<std::string_view, std::string_view> levels[] = {
        {"warning", "warning"}, {"notice", "notice"}, {"information", "info"}, {"debug", "debug"}, {"all", "debug"}};
    level_name = "error";
    int rank = 0;
    for (const std::string& t : file.log_type) {
      for (int i = 0; i < 5; ++i)
        if (t == levels[i].first && i + 1 > rank) {
          rank = i + 1;
          level_name = levels[i].second;
        }
      if (t == "subscribe" || t == "unsubscribe" || t == "all") output.subscriptions = true;
      if (t == "none") mute(output);
      if (t == "websockets") warnings.push_back("log_type websockets ignored: the WebSocket listeners log through the broker's levels");
    }
  }
  if (file.log_timestamp_format) output.timestamp_format = *file.log_timestamp_format;
  output.timestamp = file.log_timestamp.value_or(file.log_timestamp_format.has_value());
  if (file.connection_messages) output.connection_messages = *file.connection_messages;
  return true;
}

/// --password-file, --allow-anonymous and --acl-file, before the file's lines are added.
std::string password_path;
std::string acl_path;
/// --metrics / metrics_listener: where to serve Prometheus' scrapes ([ADDRESS:]PORT); empty: nowhere.
std::string metrics_at;
/// The configuration file's bridges (`connection` sections).
std::vector<cfg::bridge_settings> bridge_lines;

/// The bridges the server runs, plain or TLS, in one list.
struct running_bridge {
  virtual ~running_bridge() = default;
  virtual void start() = 0;
  virtual void stop() = 0;
};
template <class Broker, class Connector>
struct bridge_of final : running_bridge {
  bridge_of(Broker& b, mqttbroker::bridge::bridge_options o, Connector c) : bridge(b, std::move(o), std::move(c)) {}
  void start() override { bridge.start(); }
  void stop() override { bridge.stop(); }
  mqttbroker::bridge::bridge<Broker, Connector> bridge;
};

/// A bridge's library options from its lines: Mosquitto's meaning of each.
mqttbroker::bridge::bridge_options bridge_options_of(const cfg::bridge_settings& b, const mqttbroker::broker_options& o) {
  mqttbroker::bridge::bridge_options out;
  out.name = b.name;
  out.topics = b.topics;
  out.notifications = b.notifications;
  out.notifications_local_only = b.notifications_local_only;
  out.notification_topic = b.notification_topic;
  out.local_clientid = b.local_clientid;
  for (const cfg::bridge_settings::address& a : b.addresses) out.remote.addresses.push_back({a.host, a.port});
  out.remote.reconnect_min = b.restart_base;
  out.remote.reconnect_max = b.restart_cap;
  mqttbroker::client::session_options& s = out.remote.session;
  s.version = b.mqtt5 ? mqttbroker::codec::protocol_version::v5 : mqttbroker::codec::protocol_version::v3_1_1;
  s.client_id = b.remote_clientid;
  s.clean_start = b.cleansession;
  s.keep_alive = b.keepalive_interval;
  s.username = b.remote_username;
  s.password = b.remote_password;
  s.bridge = b.try_private;
  // What waits for the remote is bounded as a client's queue here is.
  s.max_queued = o.max_queued_messages;
  s.max_inflight = o.max_inflight;
  s.max_packet_size = o.max_packet_size;  // what the remote may send us: what a client may
  return out;
}

/// The scrape: the broker's counters, the store's when it has one, and the process's memory.
template <class Broker>
std::string scrape(Broker& broker) {
  namespace pm = mqttbroker::metrics;
  std::string out;
  pm::write_prometheus(out, broker.stats());
#if MQTTBROKER_EXAMPLE_SQLITE
  if constexpr (on_sqlite<Broker>()) {
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
#endif
#if MQTTBROKER_EXAMPLE_NATS
  if constexpr (Broker::engine_type::clustered) {
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
#endif
  pm::write_family<std::uint64_t>(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
                                  {{"", pm::resident_memory_bytes()}});
  return out;
}

/// "[ADDRESS:]PORT", an IPv6 address in brackets; false when it is not one.
bool parse_host_port(const std::string& text, std::string& address, std::uint16_t& port) {
  std::string p = text;
  address = "0.0.0.0";
  if (const auto colon = text.rfind(':'); colon != std::string::npos) {
    address = text.substr(0, colon);
    p = text.substr(colon + 1);
    if (address.size() >= 2 && address.front() == '[' && address.back() == ']') address = address.substr(1, address.size() - 2);
  }
  if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos) return false;
  const unsigned long n = std::stoul(p);
  if (n > 65535) return false;
  port = static_cast<std::uint16_t>(n);
  std::error_code ec;
  (void)asio::ip::make_address(address, ec);
  return !ec;
}

/// SIGHUP: reads the password and ACL files of `r` again; a file that cannot be read leaves what
/// was read before. True when an ACL changed.
bool reload(access_rules& r) {
  const std::string who = r.where.empty() ? std::string() : " (" + r.where + ")";
#if MQTTBROKER_EXAMPLE_PASSWORDS
  if (r.passwords && !r.password_path.empty()) {
    std::error_code pec;
    std::string what;
    auto f = mqttbroker::auth::password_file::read(r.password_path, pec, &what);
    if (pec) {
      say(level::error, "SIGHUP: {}; the users read before stay", what);
    } else {
      say(level::info, "SIGHUP: password file {}{} read again: {} users", r.password_path, who, f.size());
      r.passwords->replace(std::move(f), r.allow_anonymous);
    }
  }
#endif
  if (!r.acl || r.acl_path.empty()) return false;
  std::error_code ec;
  std::string what;
  auto f = mqttbroker::hooks::acl_file::read(r.acl_path, ec, &what);
  if (ec) {
    say(level::error, "SIGHUP: {}; the rules read before stay", what);
    return false;
  }
  say(level::info, "SIGHUP: ACL file {}{} read again: {} rules", r.acl_path, who, f.rules());
  r.acl->replace(std::move(f));
  return true;
}

/// Reads `r`'s files at start; false (with the reason on stderr) when one cannot be used.
bool load(access_rules& r) {
  const std::string who = r.where.empty() ? std::string() : " (" + r.where + ")";
#if MQTTBROKER_EXAMPLE_PASSWORDS
  if (!r.password_path.empty() || !r.allow_anonymous) {
    std::error_code pec;
    std::string what;
    mqttbroker::auth::password_file users;
    if (!r.password_path.empty()) users = mqttbroker::auth::password_file::read(r.password_path, pec, &what);
    if (pec) {
      fmt::print(stderr, "{}\n", what);
      return false;
    }
    say(level::info, "passwords{}: {} ({} users), anonymous clients {}", who,
        r.password_path.empty() ? "none" : r.password_path, users.size(), r.allow_anonymous ? "allowed" : "refused");
    r.passwords.emplace(std::move(users), r.allow_anonymous);
  }
#else
  if (!r.password_path.empty() || !r.allow_anonymous) {
    fmt::print(stderr, "mqttbroker: password_file and allow_anonymous false need a build with OpenSSL\n");
    return false;
  }
#endif
  if (!r.acl_path.empty()) {
    std::error_code aec;
    std::string what;
    auto rules = mqttbroker::hooks::acl_file::read(r.acl_path, aec, &what);
    if (aec) {
      fmt::print(stderr, "{}\n", what);
      return false;
    }
    say(level::info, "access control{}: {} ({} rules, {} users)", who, r.acl_path, rules.rules(), rules.users());
    r.acl.emplace(std::move(rules));
  }
  return true;
}

template <class Broker>
int serve(const mqttbroker::broker_options& opts, const logging_hooks& hooks, const std::vector<listener_plan>& plans,
          unsigned threads, const persistence_settings& store, const cluster_settings& cluster) {
  asio::io_context io(static_cast<int>(threads));
  logging_hooks with_timers = hooks;
#if MQTTBROKER_EXAMPLE_PASSWORDS
  with_timers.timers = io.get_executor();
#endif
  Broker broker(io, opts, with_timers);
#if MQTTBROKER_EXAMPLE_SQLITE
  if constexpr (on_sqlite<Broker>()) {
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
  } else {
    (void)store;
  }
#else
  (void)store;  // built without SQLite: memory storage only
#endif
#if MQTTBROKER_EXAMPLE_NATS
  if constexpr (Broker::engine_type::clustered) {
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
      return 1;
    }
    say(level::info, "cluster: node {} on NATS {}", cluster.node, cluster.servers);
  } else {
    (void)cluster;
  }
#else
  (void)cluster;  // built without nats.c: a broker alone
#endif
  opened listeners;
  for (const listener_plan& p : plans)
    if (!open_listener(broker, io, p, listeners)) return 1;
  const std::vector<std::size_t>& tls_listeners = listeners.tls_listeners;
  // Prometheus' scrapes, on the broker's io_context.
  std::optional<mqttbroker::metrics::http_endpoint> metrics;
  if (!metrics_at.empty()) {
    std::string address;
    std::uint16_t port = 0;
    (void)parse_host_port(metrics_at, address, port);  // checked at start
    try {
      metrics.emplace(io.get_executor(), asio::ip::tcp::endpoint(asio::ip::make_address(address), port),
                      [&broker] { return scrape(broker); });
    } catch (const std::system_error& e) {
      say(level::error, "cannot serve metrics on {}: {}", metrics_at, e.what());
      return 1;
    }
    say(level::info, "metrics on http://{}:{}/metrics", address, metrics->port());
  }
  broker.start();
  std::vector<std::unique_ptr<running_bridge>> bridges;
  // With persistence a bridge's local side is a session of the broker (over an in-memory
  // listener), so that what waits for its remote is in the store and survives a restart.
  std::string bridges_listener;
  if constexpr (on_sqlite<Broker>()) {
    if (!bridge_lines.empty()) {
      bridges_listener = "mqttbroker-bridges";
      broker.template listen<mqttbroker::transport::memory>(mqttbroker::transport::memory::listen_options(bridges_listener));
    }
  }
  auto bridge_options = [&](const cfg::bridge_settings& b) {
    mqttbroker::bridge::bridge_options o = bridge_options_of(b, opts);
    o.local_listener = bridges_listener;
    return o;
  };
  for (const cfg::bridge_settings& b : bridge_lines) {
    if (b.tls()) {
#if MQTTBROKER_EXAMPLE_TLS
      mqttbroker::client::tls_options t;
      t.ca_file = b.cafile;
      t.ca_path = b.capath;
      t.certificate_file = b.certfile;
      t.private_key_file = b.keyfile;
      t.insecure = b.insecure;
      t.tls13_only = b.tls13_only;
      try {
        bridges.push_back(std::make_unique<bridge_of<Broker, mqttbroker::client::tls_connector>>(
            broker, bridge_options(b), mqttbroker::client::tls_connector(t)));
      } catch (const std::exception& e) {
        say(level::error, "connection {} ({}): {}", b.name, b.origin, e.what());
        return 1;
      }
#else
      say(level::error, "connection {} ({}): TLS bridges need a server built with OpenSSL", b.name, b.origin);
      return 1;
#endif
    } else {
      bridges.push_back(std::make_unique<bridge_of<Broker, mqttbroker::client::tcp_connector>>(
          broker, bridge_options(b), mqttbroker::client::tcp_connector()));
    }
    bridges.back()->start();
  }
  // SIGHUP reads the TLS certificates and keys again; open connections keep theirs.
  asio::signal_set hangups(io, SIGHUP);
  std::function<void()> on_hangup = [&] {
    hangups.async_wait([&](std::error_code e, int) {
      if (e) return;
      // Copies share the files' contents: reloading through these reaches the broker's hooks.
      bool acl_changed = false;
      with_timers.for_each_rules([&](access_rules& r) { acl_changed = reload(r) || acl_changed; });
      if (acl_changed) {
        const std::size_t revoked = broker.recheck_subscriptions();
        say(level::info, "SIGHUP: {} subscriptions no longer allowed taken out", revoked);
      }
      if (tls_listeners.empty()) say(level::info, "SIGHUP: no TLS listener, nothing to reload");
      for (const std::size_t index : tls_listeners) {
        std::error_code rec;
        std::string what;
        broker.reload_certificates(index, rec, &what);
        if (rec)
          say(level::error, "SIGHUP: TLS certificates of listener {} not reloaded, the old ones stay: {}", index, what);
        else
          say(level::info, "SIGHUP: TLS certificates of listener {} reloaded", index);
      }
      on_hangup();
    });
  };
  on_hangup();
  // SIGINT/SIGTERM are handled before the "listening" line announces the server as ready, so a
  // stop requested right after it is graceful too.
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](std::error_code, int sig) {
    say(level::info, "signal {}: stopping", sig);
    hangups.cancel();
    if (metrics) metrics->close();
    for (auto& b : bridges) b->stop();  // their "0" and DISCONNECT go out before the broker stops
    broker.async_stop([&](std::error_code) {
      const auto s = broker.stats();
      say(level::info, "stopped: {} connections accepted, {} messages received, {} sent, {} dropped",
          s.connections_accepted, s.messages_received, s.messages_sent, s.messages_dropped);
      if constexpr (on_sqlite<Broker>()) {
        const auto w = broker.storage().statistics();
        say(level::info, "storage: {} commits, {} changes written, {} undone in their own batch", w.commits,
            w.changes_written, w.changes_undone);
      }
#if MQTTBROKER_EXAMPLE_NATS
      if constexpr (Broker::engine_type::clustered) {
        const auto c = broker.cluster().statistics();
        say(level::info,
            "cluster: {} messages sent to other nodes ({} not sent, {} not stored), {} received ({} repeats, {} "
            "malformed, {} dropped as slow), {} disconnects, {} reconnects",
            c.published, c.publish_failed, c.stream_failed, c.received, c.repeats, c.malformed, c.dropped,
            c.disconnects, c.reconnects);
      }
#endif
      io.stop();
    });
  });

  // Every listener's line, then the first one's with the version: scripts and tests take that last
  // line as the sign that the server is ready, its port as the server's.
  for (const std::string& line : listeners.announce) say(level::info, "{}", line);
  say(level::info, "mqttbroker {}.{}.{} listening on {}:{} ({} thread{})", MQTTBROKER_VERSION_MAJOR,
      MQTTBROKER_VERSION_MINOR, MQTTBROKER_VERSION_PATCH, listeners.first_address, broker.local_port(), threads,
      threads == 1 ? "" : "s");

  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : pool) t.join();
  return 0;
}

/// What the command line's listener flags describe: the plain listener, and TLS, ws and wss
/// where their flags ask for them.
std::vector<listener_plan> command_line_listeners(bool plain, const std::string& bind, std::uint16_t port,
                                                  const tls_settings& tls, const ws_settings& ws) {
  cfg::listener_settings tls_part;  // what TLS and wss share
  tls_part.certfile = tls.certfile;
  tls_part.keyfile = tls.keyfile;
  tls_part.cafile = tls.cafile;
  tls_part.capath = tls.capath;
  tls_part.crlfile = tls.crlfile;
  tls_part.require_certificate = tls.require_certificate;
  tls_part.use_identity_as_username = tls.identity_as_username;
  tls_part.tls_version = tls.version;
  tls_part.ciphers = tls.ciphers;
  tls_part.ciphers_tls13 = tls.ciphersuites;
  tls_part.address = bind;
  std::vector<listener_plan> out;
  auto add = [&](cfg::listener_settings s, std::uint16_t p, bool websocket) {
    s.port = p;
    s.address = bind;
    if (websocket) s.protocol = cfg::listener_protocol::websockets;
    out.push_back({std::move(s), ws.path, ws.origins});
  };
  if (plain) add({}, port, false);
  if (!tls.certfile.empty()) add(tls_part, tls.port, false);
  if (ws.port != 0) add({}, ws.port, true);
  if (ws.tls_port != 0) add(tls_part, ws.tls_port, true);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mqttbroker: an MQTT 3.1.1 and 5.0 broker"};
  std::string bind = "0.0.0.0";
  std::uint16_t port = 1883;
  unsigned threads = 1;
  std::string level_name = "info";
  mqttbroker::broker_options opts;
  logging_hooks hooks;
  unsigned connect_timeout_ms = static_cast<unsigned>(opts.connect_timeout.count());
  std::uint64_t session_expiry_s = static_cast<std::uint64_t>(opts.persistent_session_expiry.count());
  unsigned sys_interval_s = static_cast<unsigned>(opts.sys_interval.count());
  unsigned stuck_ms = static_cast<unsigned>(opts.stuck_client_timeout.count());

  persistence_settings store;
#if MQTTBROKER_EXAMPLE_SQLITE
  app.add_option("--persistence", store.folder,
                 "keep sessions, subscriptions, owed and retained messages in DIR/mqttbroker.db (SQLite), "
                 "acknowledging only what is stored [persistence true, persistence_location DIR]");
  app.add_option("--persistence-sync", store.synchronous,
                 "full: every commit on the disk before its acknowledgement (survives power loss); normal: "
                 "survives the process being killed, fewer disk flushes")
      ->capture_default_str()
      ->check(CLI::IsMember({"full", "normal"}));
  app.add_option("--persistence-max-bytes", store.max_bytes,
                 "the store's size limit (0: none); past it, publishes that need storing are refused (5.0 0x97)")
      ->capture_default_str();
#endif
  std::string config_file;
  app.add_option("-c,--config-file", config_file,
                 "a configuration file in Mosquitto's syntax (see below); a flag given here wins over its line");
  app.add_option("--bind", bind, "address to listen on [bind_address]")->capture_default_str();
  app.add_option("--port", port, "TCP port [port]")->capture_default_str();
  app.add_option("--threads", threads, "threads running the io_context")->capture_default_str()->check(CLI::Range(1u, 256u));
  app.add_option("--log-level", level_name, "error, warning, notice, info or debug")
      ->capture_default_str()
      ->check(CLI::IsMember({"error", "warning", "notice", "info", "debug"}));
  app.add_option("--max-connections", opts.max_connections, "connections at once, all listeners together")->capture_default_str();
  app.add_option("--max-packet-size", opts.max_packet_size, "largest packet accepted, bytes [max_packet_size]")->capture_default_str();
  app.add_option("--max-inflight", opts.max_inflight, "unacknowledged QoS 1/2 messages per client [max_inflight_messages]")->capture_default_str();
  app.add_option("--max-queued-messages", opts.max_queued_messages, "messages waiting per session [max_queued_messages]")->capture_default_str();
  app.add_option("--max-queued-bytes", opts.max_queued_bytes, "payload bytes waiting per session (0: no limit) [max_queued_bytes]")
      ->capture_default_str();
  app.add_option("--pace-publishers", opts.pace_publishers,
                 "stop reading a publisher while a subscriber it feeds is behind (true/false)")
      ->capture_default_str();
  app.add_option("--pacing-backlog-bytes", opts.pacing_backlog_bytes, "unwritten bytes that make a subscriber behind")
      ->capture_default_str();
  app.add_option("--pacing-queued-messages", opts.pacing_queued_messages,
                 "waiting messages that make a subscriber behind")
      ->capture_default_str();
  app.add_option("--stuck-client-timeout-ms", stuck_ms, "a client behind without progress this long is stuck")
      ->capture_default_str();
  app.add_option("--max-subscriptions", opts.max_subscriptions_per_client, "subscriptions per client")->capture_default_str();
  app.add_option("--max-topic-levels", opts.max_topic_levels, "levels in a topic")->capture_default_str();
  app.add_option("--connect-timeout-ms", connect_timeout_ms, "time allowed from accept to CONNECT")->capture_default_str();
  app.add_option("--keep-alive-multiplier", opts.keep_alive_multiplier, "idle limit as a multiple of Keep Alive")
      ->capture_default_str();
  app.add_option("--session-expiry", session_expiry_s, "seconds an offline persistent session is kept (0: forever) [persistent_client_expiration]")
      ->capture_default_str();
  app.add_option("--sys-interval", sys_interval_s, "seconds between $SYS/broker/... updates (0: none) [sys_interval]")
      ->capture_default_str();
  app.add_option("--max-publish-rate", opts.max_publish_rate,
                 "PUBLISH packets a client may send per second; over it: disconnected, 5.0 DISCONNECT 0x96 "
                 "(0: no limit) [max_publish_rate]")
      ->capture_default_str();
  app.add_option("--max-total-queued-bytes", opts.max_total_queued_bytes,
                 "payload bytes waiting in all sessions together; past it messages that would wait are dropped "
                 "(0: no limit) [max_total_queued_bytes]")
      ->capture_default_str();
  app.add_option("--max-connections-per-address", opts.max_connections_per_address,
                 "connections one source address may hold open; 127.0.0.1 and ::1 are exempt (0: no limit) "
                 "[max_connections_per_address]")
      ->capture_default_str();
  app.add_option("--max-connection-rate-per-address", opts.max_connection_rate_per_address,
                 "new connections a second one source address may open, on average; 127.0.0.1 and ::1 are exempt "
                 "(0: no limit) [max_connection_rate_per_address]")
      ->capture_default_str();
  app.add_option("--connection-burst-per-address", opts.connection_burst_per_address,
                 "new connections one source address may open at once after a quiet while "
                 "[connection_burst_per_address]")
      ->capture_default_str();
  app.add_option("--wildcard-subscriptions", opts.wildcard_subscriptions,
                 "5.0 Wildcard Subscription Available; false refuses filters with + or # (true/false)")
      ->capture_default_str();
  app.add_option("--subscription-identifiers", opts.subscription_identifiers,
                 "5.0 Subscription Identifiers Available; false refuses SUBSCRIBEs that carry one (true/false)")
      ->capture_default_str();
  app.add_option("--max-keepalive", opts.max_keep_alive,
                 "Keep Alive imposed on 5.0 clients asking for more or for none (0: the client's) [max_keepalive]")
      ->capture_default_str();
  app.add_option("--retain-available", opts.retain_available,
                 "5.0 Retain Available; false refuses retained PUBLISHes and wills (true/false) [retain_available]")
      ->capture_default_str();
  app.add_option("--queue-qos0-messages", opts.queue_qos0_offline,
                 "queue QoS 0 messages for offline persistent sessions (true/false) [queue_qos0_messages]")
      ->capture_default_str();
  unsigned max_qos = static_cast<unsigned>(opts.maximum_qos);
  app.add_option("--max-qos", max_qos, "highest QoS clients may publish with and be granted [max_qos]")
      ->capture_default_str()
      ->check(CLI::Range(0u, 2u));
  app.add_option("--max-topic-alias", opts.topic_alias_maximum, "5.0 Topic Alias Maximum toward the broker [max_topic_alias]")
      ->capture_default_str();
  app.add_option("--redirect", hooks.redirect_to,
                 "send every authenticated client to this server (5.0 Server Reference; 3.1.1 is refused)");
  app.add_flag("--redirect-permanent", hooks.redirect_permanent,
               "with --redirect: Server moved (0x9D) instead of Use another server (0x9C)");
  std::optional<bool> anonymous_flag;
#if MQTTBROKER_EXAMPLE_PASSWORDS
  app.add_option("--password-file", password_path,
                 "users and password hashes in Mosquitto 2.0's format (mosquitto_passwd); read again on SIGHUP "
                 "[password_file]");
  app.add_option("--allow-anonymous", anonymous_flag,
                 "let clients without a user name connect (true/false; default: false with a password file, "
                 "else true) [allow_anonymous]");
#endif
  cluster_settings cluster;
  app.add_option("--cluster", cluster.servers,
                 "join a cluster: other brokers on the same NATS servers (nats://HOST:PORT[,...]) act with this one "
                 "as one broker [cluster]");
  app.add_option("--cluster-node", cluster.node,
                 "this node's name in the cluster, unique in it (default: HOST-PID) [cluster_node]");
  app.add_option("--cluster-replicas", cluster.replicas,
                 "copies the NATS servers keep of the cluster's retained messages (JetStream replicas; "
                 "3 for a three-server NATS cluster) [cluster_replicas]")
      ->check(CLI::Range(1, 5));
  app.add_option("--cluster-send-asap", cluster.send_asap,
                 "true: what goes to NATS is written at once, not gathered for a millisecond (lower latency "
                 "between nodes at a low rate, more CPU per message) [cluster_send_asap]");
  app.add_option("--cluster-jetstream", cluster.jetstream,
                 "QoS 1 and 2 between nodes through JetStream (default true: a message kept from a node "
                 "comes when it is back); false: on core NATS like QoS 0, at most once between nodes, "
                 "faster [cluster_jetstream]");
  app.add_option("--metrics", metrics_at,
                 "serve Prometheus' text format on http://[ADDRESS:]PORT/metrics (ADDRESS 0.0.0.0 when left out; "
                 "[::1]:9100 for IPv6) [metrics_listener]");
  app.add_option("--acl-file", acl_path,
                 "access control lists in Mosquitto's format (user, topic, pattern lines), checked on publish, "
                 "subscribe and delivery; read again on SIGHUP [acl_file]");
  std::vector<std::string> publishers;
  app.add_option("--allow-publish", publishers,
                 "only clients with this username may publish (repeat for more; default: everyone)");
  // TLS, beside the plain listener; the names are Mosquitto's options.
  tls_settings tls;
  app.add_option("--tls-port", tls.port, "TLS port (with --certfile) [listener, with certfile]")->capture_default_str();
  app.add_option("--certfile", tls.certfile,
                 "PEM certificate chain (server certificate, then intermediates): turns the TLS listener on [certfile]");
  app.add_option("--keyfile", tls.keyfile, "PEM private key of --certfile [keyfile]");
  app.add_option("--cafile", tls.cafile, "PEM CA certificates that sign client certificates [cafile]");
  app.add_option("--capath", tls.capath, "folder of hashed CA certificates (openssl rehash) [capath]");
  app.add_option("--crlfile", tls.crlfile, "PEM revocation lists of client certificates (read again on SIGHUP) [crlfile]");
  app.add_flag("--require-certificate", tls.require_certificate, "refuse TLS clients without a valid certificate [require_certificate]");
  app.add_flag("--use-identity-as-username", tls.identity_as_username,
               "the client certificate's CN (else first DNS/email SAN) is the username; needs --require-certificate "
               "[use_identity_as_username]");
  app.add_option("--tls-version", tls.version, "lowest TLS version accepted [tls_version]")
      ->capture_default_str()
      ->check(CLI::IsMember({"tlsv1.2", "tlsv1.3"}));
  app.add_option("--ciphers", tls.ciphers, "TLS 1.2 cipher list (OpenSSL syntax) [ciphers]");
  app.add_option("--ciphers-tls1.3", tls.ciphersuites, "TLS 1.3 ciphersuites (OpenSSL syntax) [ciphers_tls1.3]");
  // WebSocket (MQTT over RFC 6455, subprotocol mqtt), for browsers.
  ws_settings ws;
  app.add_option("--ws-port", ws.port, "WebSocket port (ws://); 0: none [listener, with protocol websockets]")->capture_default_str();
  app.add_option("--wss-port", ws.tls_port, "WebSocket over TLS port (wss://, with --certfile); 0: none [the same, with certfile]")
      ->capture_default_str();
  app.add_option("--ws-path", ws.path, "the path WebSocket clients upgrade on (empty: any; a file's WebSocket listeners take any unless this is given)")->capture_default_str();
  app.add_option("--ws-origin", ws.origins,
                 "an Origin browsers may connect from, e.g. https://app.example (repeat for more; default: any)");
  app.set_version_flag("--version", fmt::format("mqttbroker {}.{}.{}", MQTTBROKER_VERSION_MAJOR,
                                                MQTTBROKER_VERSION_MINOR, MQTTBROKER_VERSION_PATCH));
  app.footer(
      "Configuration file (-c): Mosquitto's syntax. A flag's [line] above is its line in the file.\n"
      "  Listeners: 'listener PORT [ADDRESS]' starts one; after it protocol mqtt|websockets, certfile, keyfile\n"
      "  (both: TLS, or wss), cafile, capath, crlfile, require_certificate, use_identity_as_username,\n"
      "  tls_version, ciphers, ciphers_tls1.3 and max_connections N (this listener's; -1: no limit; no flag)\n"
      "  are its own. port and bind_address, and those lines before the first listener, make Mosquitto's\n"
      "  default listener. Without listeners in the file the flags' are used; with them, a listener flag\n"
      "  given here (--port, --certfile, --ws-port, --wss-port) adds its listener beside the file's.\n"
      "  Broker-wide lines: those named above, and message_size_limit (read as max_packet_size), include_dir.\n"
      "  max_total_queued_bytes, max_connections_per_address, max_connection_rate_per_address,\n"
      "  connection_burst_per_address and max_publish_rate are this server's own (admission control),\n"
      "  and metrics_listener [ADDRESS:]PORT is --metrics; cluster URLS, cluster_node NAME,\n"
      "  cluster_replicas N, cluster_send_asap BOOL and cluster_jetstream BOOL are --cluster,\n"
      "  --cluster-node, --cluster-replicas, --cluster-send-asap and --cluster-jetstream.\n"
      "  persistence true and persistence_location DIR are --persistence DIR.\n"
      "  password_file, acl_file and allow_anonymous are --password-file, --acl-file and --allow-anonymous.\n"
      "  log_dest (stderr, stdout, syslog, file PATH, none), log_type, log_timestamp[_format] and\n"
      "  connection_messages are read as Mosquitto reads them.\n"
      "  Lines that make no sense here (pid_file, user, persistence_file, autosave_*, log_facility...)\n"
      "  are warned about and ignored; anything else is an error naming the file and line (exit status 1).");
  CLI11_PARSE(app, argc, argv);
  const auto given = [&app](const char* flag) { return app.count(flag) != 0; };

  // The file's settings, where no flag says otherwise.
  std::vector<listener_plan> plans;
  std::vector<std::string> warnings;
  bool per_listener_settings = false;
  bool file_listeners = false;
  if (!config_file.empty()) {
    std::error_code ec;
    std::string message;
    const cfg::config_settings file = cfg::read_config_file(config_file, ec, message);
    if (ec) {
      fmt::print(stderr, "mqttbroker: {}\n", message);
      return 1;
    }
    warnings = file.warnings;
    const auto take = [&](const char* flag, const auto& value, auto& target) {
      using target_type = std::remove_reference_t<decltype(target)>;
      if (value && !given(flag)) target = static_cast<target_type>(*value);
    };
    take("--max-inflight", file.max_inflight_messages, opts.max_inflight);
    take("--max-queued-messages", file.max_queued_messages, opts.max_queued_messages);
    take("--max-queued-bytes", file.max_queued_bytes, opts.max_queued_bytes);
    take("--max-total-queued-bytes", file.max_total_queued_bytes, opts.max_total_queued_bytes);
    take("--max-connections-per-address", file.max_connections_per_address, opts.max_connections_per_address);
    take("--max-connection-rate-per-address", file.max_connection_rate_per_address,
         opts.max_connection_rate_per_address);
    take("--connection-burst-per-address", file.connection_burst_per_address, opts.connection_burst_per_address);
    take("--max-publish-rate", file.max_publish_rate, opts.max_publish_rate);
    take("--max-packet-size", file.max_packet_size, opts.max_packet_size);
    take("--max-keepalive", file.max_keepalive, opts.max_keep_alive);
    take("--retain-available", file.retain_available, opts.retain_available);
    take("--queue-qos0-messages", file.queue_qos0_messages, opts.queue_qos0_offline);
    take("--max-qos", file.max_qos, max_qos);
    take("--max-topic-alias", file.max_topic_alias, opts.topic_alias_maximum);
    if (file.persistent_client_expiration && !given("--session-expiry"))
      session_expiry_s = static_cast<std::uint64_t>(file.persistent_client_expiration->count());
    if (file.sys_interval && !given("--sys-interval")) sys_interval_s = static_cast<unsigned>(file.sys_interval->count());
    if (file.password_file && !given("--password-file")) password_path = *file.password_file;
    if (file.acl_file && !given("--acl-file")) acl_path = *file.acl_file;
    if (file.metrics_listener && !given("--metrics")) metrics_at = *file.metrics_listener;
    if (file.cluster && !given("--cluster")) cluster.servers = *file.cluster;
    if (file.cluster_node && !given("--cluster-node")) cluster.node = *file.cluster_node;
    if (file.cluster_replicas && !given("--cluster-replicas")) cluster.replicas = *file.cluster_replicas;
    if (file.cluster_send_asap && !given("--cluster-send-asap")) cluster.send_asap = *file.cluster_send_asap;
    if (file.cluster_jetstream && !given("--cluster-jetstream")) cluster.jetstream = *file.cluster_jetstream;
    if (!apply_logging(file, given("--log-level"), level_name, warnings)) return 1;
    if (file.allow_anonymous && !given("--allow-anonymous")) anonymous_flag = file.allow_anonymous;
    per_listener_settings = file.per_listener_settings;
    if (file.persistence.value_or(false) && !given("--persistence")) {
#if MQTTBROKER_EXAMPLE_SQLITE
      // Mosquitto's default folder is the working one.
      std::string folder = file.persistence_location.value_or(".");
      while (folder.size() > 1 && folder.back() == '/') folder.pop_back();
      store.folder = folder;
#else
      warnings.push_back(fmt::format("{}: persistence true ignored: this server was built without SQLite",
                                     config_file));
#endif
    }
    for (const cfg::listener_settings& l : file.listeners) {
      listener_plan p{l, given("--ws-path") ? ws.path : std::string(), ws.origins};  // Mosquitto answers on any path
      if (p.s.address.empty()) p.s.address = "0.0.0.0";
      plans.push_back(std::move(p));
    }
    file_listeners = !file.listeners.empty();
    bridge_lines = file.bridges;
  }
  if (ws.tls_port != 0 && tls.certfile.empty()) {
    fmt::print(stderr, "mqttbroker: --wss-port needs --certfile and --keyfile\n");
    return 1;
  }
  for (listener_plan& p : command_line_listeners(!file_listeners || given("--port"), bind, port, tls, ws))
    plans.push_back(std::move(p));

  log_level = level_name == "error" ? level::error : level_name == "warning" ? level::warning
              : level_name == "notice" ? level::notice : level_name == "debug" ? level::debug : level::info;
  opts.log_level = log_level;
  opts.connection_messages = output.connection_messages;
  opts.connect_timeout = std::chrono::milliseconds(connect_timeout_ms);
  opts.persistent_session_expiry = std::chrono::seconds(session_expiry_s);
  opts.sys_interval = std::chrono::seconds(sys_interval_s);
  opts.stuck_client_timeout = std::chrono::milliseconds(stuck_ms);
  opts.maximum_qos = static_cast<mqttbroker::codec::qos>(max_qos);
  hooks.publishers.insert(publishers.begin(), publishers.end());
  if (!metrics_at.empty()) {
    std::string address;
    std::uint16_t metrics_port = 0;
    if (!parse_host_port(metrics_at, address, metrics_port)) {
      fmt::print(stderr, "mqttbroker: --metrics / metrics_listener: '{}' is not [ADDRESS:]PORT\n", metrics_at);
      return 1;
    }
  }
  // Mosquitto 2.0's rule: anonymous clients are refused once there is a password file, unless
  // allow_anonymous says otherwise; without one, allow_anonymous false refuses everyone.
  hooks.global.password_path = password_path;
  hooks.global.acl_path = acl_path;
  hooks.global.allow_anonymous = anonymous_flag.value_or(password_path.empty());
  if (!load(hooks.global)) return 1;
  if (per_listener_settings) {
    // Each listener of the file with its own lines; the command line's listeners keep the broker's.
    hooks.per_listener.resize(plans.size());
    for (std::size_t i = 0; i < plans.size(); ++i) {
      const cfg::listener_settings& l = plans[i].s;
      if (l.origin.empty()) continue;
      access_rules r;
      r.where = fmt::format("listener {}", i);
      r.password_path = l.password_file.value_or("");
      r.acl_path = l.acl_file.value_or("");
      r.allow_anonymous = l.allow_anonymous.value_or(r.password_path.empty());
      if (!load(r)) return 1;
      hooks.per_listener[i] = std::move(r);
    }
  }
  hooks.for_each_rules([&](access_rules& r) { hooks.any_acl = hooks.any_acl || r.acl.has_value(); });
  for (const std::string& w : warnings) say(level::warning, "{}", w);

  if (!cluster.servers.empty()) {
#if MQTTBROKER_EXAMPLE_NATS
    if (!store.folder.empty()) {
      // The cluster keeps its nodes' shared state in NATS; a node's own store beside it is not
      // supported (yet).
      fmt::print(stderr, "mqttbroker: --cluster and --persistence cannot be combined\n");
      return 1;
    }
    if (cluster.node.empty()) {
      char host[256] = {};
      if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "node");
      cluster.node = fmt::format("{}-{}", host, ::getpid());
    }
#else
    fmt::print(stderr, "mqttbroker: --cluster needs a server built with nats.c (Debian libnats-dev)\n");
    return 1;
#endif
  }

  try {
#if MQTTBROKER_EXAMPLE_NATS
    if (!cluster.servers.empty()) {
      if (threads == 1) return serve<mqttbroker::broker<st_cluster_policies>>(opts, hooks, plans, threads, store, cluster);
      return serve<mqttbroker::broker<mt_cluster_policies>>(opts, hooks, plans, threads, store, cluster);
    }
#endif
#if MQTTBROKER_EXAMPLE_SQLITE
    if (!store.folder.empty()) {
      if (threads == 1)
        return serve<mqttbroker::broker<st_store_policies>>(opts, hooks, plans, threads, store, cluster);
      return serve<mqttbroker::broker<mt_store_policies>>(opts, hooks, plans, threads, store, cluster);
    }
#endif
    if (threads == 1) return serve<mqttbroker::broker<st_policies>>(opts, hooks, plans, threads, store, cluster);
    return serve<mqttbroker::broker<mt_policies>>(opts, hooks, plans, threads, store, cluster);
  } catch (const std::exception& e) {
    say(level::error, "{}", e.what());
    return 1;
  }
}
