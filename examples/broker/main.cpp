// mqttbroker: the standalone server. It is a host like any other: it owns main(), the io_context
// and the threads, and runs mqttbroker::broker on them.
#include <mqttbroker/mqttbroker.hpp>
#if MQTTBROKER_EXAMPLE_TLS
#include <mqttbroker/transport/tls.hpp>  // built with mqttbroker::tls (OpenSSL) when CMake found it
#endif
#if MQTTBROKER_EXAMPLE_WEBSOCKET
#include <mqttbroker/transport/websocket_tls.hpp>  // mqttbroker::websocket and mqttbroker::tls
#endif

#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <fmt/core.h>

#include <csignal>
#include <functional>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using level = mqttbroker::log_level;
level log_level = level::info;

void print(level l, std::string_view message) { fmt::print(stderr, "[{}] {}\n", mqttbroker::to_string(l), message); }

template <class... Args>
void say(level l, fmt::format_string<Args...> f, Args&&... args) {
  if (l > log_level) return;
  print(l, fmt::format(f, std::forward<Args>(args)...));
}

/// The broker's own log messages (refused connections, protocol errors, timeouts, connections at
/// info), and where each client came from and what it subscribed to at debug; the broker calls
/// these only because they exist. With --redirect, every authenticated client is sent to that
/// server instead (a server being retired, say).
struct logging_hooks {
  std::string redirect_to;  // empty: no redirection
  bool redirect_permanent = false;
  std::set<std::string, std::less<>> publishers;  // --allow-publish: empty lets everyone publish

  /// A minimal rule to show who a client is (with --use-identity-as-username: its certificate):
  /// only the named usernames may publish.
  bool authorize_publish(const mqttbroker::hooks::client_info& c, const mqttbroker::message& m) {
    if (publishers.empty()) return true;
    if (c.username && publishers.count(*c.username) != 0) return true;
    say(level::notice, "{} (username {}) may not publish to {}", c.client_id, c.username ? *c.username : "none",
        m.topic());
    return false;
  }

  void log(level l, std::string_view message) { print(l, message); }
  std::optional<mqttbroker::hooks::redirection> redirect(const mqttbroker::hooks::connect_info&) {
    if (redirect_to.empty()) return std::nullopt;
    return mqttbroker::hooks::redirection{redirect_to, redirect_permanent};
  }
  void on_connect(const mqttbroker::hooks::client_info& c) {
    say(level::debug, "{} is {}:{} on listener {} ({}), username {}, certificate {}", c.client_id, c.peer_address,
        c.peer_port, c.listener ? c.listener->index : 0, c.listener ? c.listener->transport : "none",
        c.username ? *c.username : "none", c.certificate_identity.empty() ? "none" : c.certificate_identity);
  }
  void on_subscribe(const mqttbroker::hooks::client_info& c, std::string_view filter, mqttbroker::codec::qos q) {
    say(level::debug, "{} subscribed to {} at QoS {}", c.client_id, filter, static_cast<int>(q));
  }
};

struct st_policies : mqttbroker::default_policies {
  using hooks = logging_hooks;
};
struct mt_policies : mqttbroker::default_policies {
  using locking = mqttbroker::locking::shared;
  using hooks = logging_hooks;
};

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

template <class Broker>
int serve(const mqttbroker::broker_options& opts, const logging_hooks& hooks, const std::string& bind,
          std::uint16_t port, unsigned threads, const tls_settings& tls, const ws_settings& ws) {
  asio::io_context io(static_cast<int>(threads));
  Broker broker(io, opts, hooks);
  typename Broker::listen_options lo;
  lo.address = bind;
  lo.port = port;
  std::error_code ec;
  broker.listen(lo, ec);
  if (ec) {
    say(level::error, "cannot listen on {}:{}: {}", bind, port, ec.message());
    return 1;
  }
  std::vector<std::size_t> tls_listeners;  // their indexes: what SIGHUP reloads
#if MQTTBROKER_EXAMPLE_TLS
  mqttbroker::transport::tls::listen_options to;
  to.address = bind;
  to.port = tls.port;
  to.certificate_chain_file = tls.certfile;
  to.private_key_file = tls.keyfile;
  to.ca_file = tls.cafile;
  to.ca_path = tls.capath;
  to.crl_file = tls.crlfile;
  to.require_certificate = tls.require_certificate;
  to.use_identity_as_username = tls.identity_as_username;
  to.min_version = tls.version == "tlsv1.3" ? mqttbroker::transport::tls_version::v1_3
                                            : mqttbroker::transport::tls_version::v1_2;
  to.ciphers = tls.ciphers;
  to.ciphersuites = tls.ciphersuites;
  if (!tls.certfile.empty()) {
    std::string what;
    broker.template listen<mqttbroker::transport::tls>(to, ec, &what);
    if (ec) {
      say(level::error, "cannot listen with TLS on {}:{}: {}", bind, tls.port, what);
      return 1;
    }
    tls_listeners.push_back(broker.listener_count() - 1);
    say(level::info, "TLS listening on {}:{}", bind, broker.local_port(tls_listeners.back()));
  }
#else
  if (!tls.certfile.empty()) {
    say(level::error, "this mqttbroker was built without TLS (OpenSSL was not found)");
    return 1;
  }
#endif
#if MQTTBROKER_EXAMPLE_WEBSOCKET
  // Listen options of ws or wss: the inner transport's, then the WebSocket ones.
  auto with_ws = [&](auto o, std::uint16_t ws_port) {
    o.port = ws_port;
    o.path = ws.path;
    o.allowed_origins = ws.origins;
    return o;
  };
  if (ws.port != 0) {
    std::string what;
    broker.template listen<mqttbroker::transport::ws>(with_ws(mqttbroker::transport::ws::listen_options{}, ws.port), ec,
                                                      &what);
    if (ec) {
      say(level::error, "cannot listen with WebSocket on {}:{}: {}", bind, ws.port, what);
      return 1;
    }
    say(level::info, "WebSocket listening on ws://{}:{}{}", bind, broker.local_port(broker.listener_count() - 1), ws.path);
  }
  if (ws.tls_port != 0) {
    if (tls.certfile.empty()) {
      say(level::error, "--wss-port needs --certfile and --keyfile");
      return 1;
    }
    mqttbroker::transport::wss::listen_options wo;
    static_cast<mqttbroker::transport::tls::listen_options&>(wo) = to;
    wo.address = bind;
    std::string what;
    broker.template listen<mqttbroker::transport::wss>(with_ws(wo, ws.tls_port), ec, &what);
    if (ec) {
      say(level::error, "cannot listen with WebSocket over TLS on {}:{}: {}", bind, ws.tls_port, what);
      return 1;
    }
    tls_listeners.push_back(broker.listener_count() - 1);
    say(level::info, "WebSocket listening on wss://{}:{}{}", bind, broker.local_port(tls_listeners.back()), ws.path);
  }
#else
  if (ws.port != 0 || ws.tls_port != 0) {
    say(level::error, "this mqttbroker was built without WebSocket (OpenSSL was not found)");
    return 1;
  }
#endif
  broker.start();
  // SIGHUP reads the TLS certificates and keys again; open connections keep theirs.
  asio::signal_set hangups(io, SIGHUP);
  std::function<void()> on_hangup = [&] {
    hangups.async_wait([&](std::error_code e, int) {
      if (e) return;
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
    broker.async_stop([&](std::error_code) {
      const auto s = broker.stats();
      say(level::info, "stopped: {} connections accepted, {} messages received, {} sent, {} dropped",
          s.connections_accepted, s.messages_received, s.messages_sent, s.messages_dropped);
      io.stop();
    });
  });

  say(level::info, "mqttbroker {}.{}.{} listening on {}:{} ({} thread{})", MQTTBROKER_VERSION_MAJOR,
      MQTTBROKER_VERSION_MINOR, MQTTBROKER_VERSION_PATCH, bind, broker.local_port(), threads, threads == 1 ? "" : "s");

  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : pool) t.join();
  return 0;
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

  app.add_option("--bind", bind, "address to listen on")->capture_default_str();
  app.add_option("--port", port, "TCP port")->capture_default_str();
  app.add_option("--threads", threads, "threads running the io_context")->capture_default_str()->check(CLI::Range(1u, 256u));
  app.add_option("--log-level", level_name, "error, warning, notice, info or debug")
      ->capture_default_str()
      ->check(CLI::IsMember({"error", "warning", "notice", "info", "debug"}));
  app.add_option("--max-connections", opts.max_connections, "connections at once")->capture_default_str();
  app.add_option("--max-packet-size", opts.max_packet_size, "largest packet accepted, bytes")->capture_default_str();
  app.add_option("--max-inflight", opts.max_inflight, "unacknowledged QoS 1/2 messages per client")->capture_default_str();
  app.add_option("--max-queued-messages", opts.max_queued_messages, "messages waiting per session")->capture_default_str();
  app.add_option("--max-queued-bytes", opts.max_queued_bytes, "payload bytes waiting per session (0: no limit)")
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
  app.add_option("--session-expiry", session_expiry_s, "seconds an offline persistent session is kept (0: forever)")
      ->capture_default_str();
  app.add_option("--sys-interval", sys_interval_s, "seconds between $SYS/broker/... updates (0: none)")
      ->capture_default_str();
  app.add_option("--max-publish-rate", opts.max_publish_rate,
                 "PUBLISH packets a client may send per second; over it: disconnected (0: no limit)")
      ->capture_default_str();
  app.add_option("--wildcard-subscriptions", opts.wildcard_subscriptions,
                 "5.0 Wildcard Subscription Available; false refuses filters with + or # (true/false)")
      ->capture_default_str();
  app.add_option("--subscription-identifiers", opts.subscription_identifiers,
                 "5.0 Subscription Identifiers Available; false refuses SUBSCRIBEs that carry one (true/false)")
      ->capture_default_str();
  app.add_option("--redirect", hooks.redirect_to,
                 "send every authenticated client to this server (5.0 Server Reference; 3.1.1 is refused)");
  app.add_flag("--redirect-permanent", hooks.redirect_permanent,
               "with --redirect: Server moved (0x9D) instead of Use another server (0x9C)");
  std::vector<std::string> publishers;
  app.add_option("--allow-publish", publishers,
                 "only clients with this username may publish (repeat for more; default: everyone)");
  // TLS, beside the plain listener; the names are Mosquitto's options.
  tls_settings tls;
  app.add_option("--tls-port", tls.port, "TLS port (with --certfile)")->capture_default_str();
  app.add_option("--certfile", tls.certfile,
                 "PEM certificate chain (server certificate, then intermediates): turns the TLS listener on");
  app.add_option("--keyfile", tls.keyfile, "PEM private key of --certfile");
  app.add_option("--cafile", tls.cafile, "PEM CA certificates that sign client certificates");
  app.add_option("--capath", tls.capath, "folder of hashed CA certificates (openssl rehash)");
  app.add_option("--crlfile", tls.crlfile, "PEM revocation lists of client certificates (read again on SIGHUP)");
  app.add_flag("--require-certificate", tls.require_certificate, "refuse TLS clients without a valid certificate");
  app.add_flag("--use-identity-as-username", tls.identity_as_username,
               "the client certificate's CN (else first DNS/email SAN) is the username; needs --require-certificate");
  app.add_option("--tls-version", tls.version, "lowest TLS version accepted")
      ->capture_default_str()
      ->check(CLI::IsMember({"tlsv1.2", "tlsv1.3"}));
  app.add_option("--ciphers", tls.ciphers, "TLS 1.2 cipher list (OpenSSL syntax)");
  app.add_option("--ciphers-tls1.3", tls.ciphersuites, "TLS 1.3 ciphersuites (OpenSSL syntax)");
  // WebSocket (MQTT over RFC 6455, subprotocol mqtt), for browsers.
  ws_settings ws;
  app.add_option("--ws-port", ws.port, "WebSocket port (ws://); 0: none")->capture_default_str();
  app.add_option("--wss-port", ws.tls_port, "WebSocket over TLS port (wss://, with --certfile); 0: none")
      ->capture_default_str();
  app.add_option("--ws-path", ws.path, "the path WebSocket clients upgrade on (empty: any)")->capture_default_str();
  app.add_option("--ws-origin", ws.origins,
                 "an Origin browsers may connect from, e.g. https://app.example (repeat for more; default: any)");
  app.set_version_flag("--version", fmt::format("mqttbroker {}.{}.{}", MQTTBROKER_VERSION_MAJOR,
                                                MQTTBROKER_VERSION_MINOR, MQTTBROKER_VERSION_PATCH));
  CLI11_PARSE(app, argc, argv);

  log_level = level_name == "error" ? level::error : level_name == "warning" ? level::warning
              : level_name == "notice" ? level::notice : level_name == "debug" ? level::debug : level::info;
  opts.log_level = log_level;
  opts.connect_timeout = std::chrono::milliseconds(connect_timeout_ms);
  opts.persistent_session_expiry = std::chrono::seconds(session_expiry_s);
  opts.sys_interval = std::chrono::seconds(sys_interval_s);
  opts.stuck_client_timeout = std::chrono::milliseconds(stuck_ms);
  hooks.publishers.insert(publishers.begin(), publishers.end());

  try {
    if (threads == 1) return serve<mqttbroker::broker<st_policies>>(opts, hooks, bind, port, threads, tls, ws);
    return serve<mqttbroker::broker<mt_policies>>(opts, hooks, bind, port, threads, tls, ws);
  } catch (const std::exception& e) {
    say(level::error, "{}", e.what());
    return 1;
  }
}
