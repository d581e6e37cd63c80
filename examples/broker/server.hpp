// The standalone server's parts that every broker it can run shares: logging, access rules, the
// hooks, listeners, bridges, metrics and serve<Broker>(). main.cpp parses the command line and the
// configuration file; each serve_*.cpp instantiates serve() for one storage, so that the largest
// instantiations compile apart (in parallel, and the crash-point build recompiles only the SQLite one).
#pragma once

#include <mqttbroker/mqttbroker.hpp>
#if MQTTBROKER_EXAMPLE_TLS
#include <mqttbroker/client/tls.hpp>     // TLS bridges
#include <mqttbroker/transport/tls.hpp>  // built with mqttbroker::tls (OpenSSL) when CMake found it
#endif
#if MQTTBROKER_EXAMPLE_WEBSOCKET
#include <mqttbroker/transport/websocket_tls.hpp>  // mqttbroker::websocket and mqttbroker::tls
#endif
#if MQTTBROKER_EXAMPLE_PASSWORDS
#include <mqttbroker/auth/password_file.hpp>  // mqttbroker::auth (OpenSSL's libcrypto): --password-file
#endif

#include "config_file.hpp"

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

namespace server {

using level = mqttbroker::log_level;
inline level log_level = level::info;

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
inline log_output output;

inline void print(level l, std::string_view message) {
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

/// What serve() does for a storage beyond what the memory bundles need: nothing, here. The
/// storage's own file specialises it (serve_sqlite.cpp, serve_cluster.cpp), so that only that file
/// includes the storage's header.
template <class Storage>
struct storage_setup {
  /// Bridges' local sides are sessions of the broker, so that what waits for a remote is stored.
  static constexpr bool durable = false;
  /// Before the listeners: false (with the reason said) stops the start.
  template <class Broker>
  static bool open(Broker&, const persistence_settings&, const cluster_settings&) {
    return true;
  }
  /// The storage's lines of the metrics' scrape.
  template <class Broker>
  static void scrape(Broker&, std::string&) {}
  /// The storage's line when the broker has stopped.
  template <class Broker>
  static void stopped(Broker&) {}
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
inline std::string_view transport_of(const cfg::listener_settings& s) {
  if (s.protocol == cfg::listener_protocol::websockets) return s.tls() ? "wss" : "ws";
  return s.tls() ? "tls" : "tcp";
}

/// The address to bind: an IP address as it is; a host name (Mosquitto takes `listener 1883
/// localhost`) as its first IPv4 address, else its first address.
inline std::string bind_address(asio::io_context& io, const std::string& host, std::error_code& ec) {
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
inline mqttbroker::transport::tls::listen_options tls_options(const cfg::listener_settings& s) {
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
inline void mute(log_output& o) {
  o.to_stderr = o.to_stdout = o.to_syslog = false;
  if (o.file != nullptr) std::fclose(o.file);
  o.file = nullptr;
}

/// The configuration file's logging lines. False (with the reason printed) when a log file cannot
/// be opened.
inline bool apply_logging(const cfg::config_settings& file, bool level_flag_given, std::string& level_name,
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
inline std::string password_path;
inline std::string acl_path;
/// --metrics / metrics_listener: where to serve Prometheus' scrapes ([ADDRESS:]PORT); empty: nowhere.
inline std::string metrics_at;
/// The configuration file's bridges (`connection` sections).
inline std::vector<cfg::bridge_settings> bridge_lines;

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
inline mqttbroker::bridge::bridge_options bridge_options_of(const cfg::bridge_settings& b, const mqttbroker::broker_options& o) {
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
  storage_setup<typename Broker::engine_type::storage_type>::scrape(broker, out);
  pm::write_family<std::uint64_t>(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
                                  {{"", pm::resident_memory_bytes()}});
  return out;
}

/// "[ADDRESS:]PORT", an IPv6 address in brackets; false when it is not one.
inline bool parse_host_port(const std::string& text, std::string& address, std::uint16_t& port) {
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
inline bool reload(access_rules& r) {
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
inline bool load(access_rules& r) {
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
  using setup = storage_setup<typename Broker::engine_type::storage_type>;
  if (!setup::open(broker, store, cluster)) return 1;
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
  if constexpr (setup::durable) {
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
      setup::stopped(broker);
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

/// serve() on the single-threaded bundle, or with several threads on the one with locks.
template <class Single, class Shared>
int serve_bundles(const mqttbroker::broker_options& opts, const logging_hooks& hooks,
                  const std::vector<listener_plan>& plans, unsigned threads, const persistence_settings& store,
                  const cluster_settings& cluster) {
  if (threads == 1) return serve<mqttbroker::broker<Single>>(opts, hooks, plans, threads, store, cluster);
  return serve<mqttbroker::broker<Shared>>(opts, hooks, plans, threads, store, cluster);
}

/// serve() for each storage, each in a file of its own (serve_*.cpp); the SQLite one exists with
/// MQTTBROKER_EXAMPLE_SQLITE, the cluster's with MQTTBROKER_EXAMPLE_NATS.
int serve_in_memory(const mqttbroker::broker_options& opts, const logging_hooks& hooks,
                    const std::vector<listener_plan>& plans, unsigned threads, const persistence_settings& store,
                    const cluster_settings& cluster);
int serve_on_sqlite(const mqttbroker::broker_options& opts, const logging_hooks& hooks,
                    const std::vector<listener_plan>& plans, unsigned threads, const persistence_settings& store,
                    const cluster_settings& cluster);
int serve_clustered(const mqttbroker::broker_options& opts, const logging_hooks& hooks,
                    const std::vector<listener_plan>& plans, unsigned threads, const persistence_settings& store,
                    const cluster_settings& cluster);

}  // namespace server
