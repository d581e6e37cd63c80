// mqttbroker: the standalone server. It is a host like any other: it owns main(), the io_context
// and the threads, and runs mqttbroker::broker on them.
#include "server.hpp"

#include <CLI/CLI.hpp>

namespace {

using namespace server;

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
    if (!cluster.servers.empty()) return serve_clustered(opts, hooks, plans, threads, store, cluster);
#endif
#if MQTTBROKER_EXAMPLE_SQLITE
    if (!store.folder.empty()) return serve_on_sqlite(opts, hooks, plans, threads, store, cluster);
#endif
    return serve_in_memory(opts, hooks, plans, threads, store, cluster);
  } catch (const std::exception& e) {
    say(level::error, "{}", e.what());
    return 1;
  }
}
