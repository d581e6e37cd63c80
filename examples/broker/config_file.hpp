// mqttbroker -c FILE: a reader for Mosquitto's configuration syntax (mosquitto.conf(5)), so an
// existing Mosquitto configuration can be pointed at this server. It only reads: what the lines
// say comes out as plain settings (config_settings), which main.cpp applies to the broker. No
// sockets, no broker: the unit tests (tests/config.cpp) feed it text and files.
//
// The rules, Mosquitto 2.0's where it has them:
// - A line whose first character other than spaces and tabs is '#' is a comment; blank lines are
//   skipped; a trailing carriage return is dropped (files written on Windows).
// - A line is an option name, then its value after one or more spaces. A word value may be
//   followed by a '#' comment; anything else after it is an error (Mosquitto ignores it silently).
//   A path or a cipher list is the rest of the line, spaces inside it kept.
// - `listener PORT [ADDRESS]` starts a listener; the listener options after it are its own.
//   Listener options before the first `listener` line, and `port` and `bind_address` wherever
//   they are, make Mosquitto's default listener (port 1883 unless `port` says otherwise), listed
//   after the others as Mosquitto opens it.
// - Options this server implements are read; options that make no sense for it (a PID file,
//   log destinations, autosave intervals...) are accepted with a warning naming file and line;
//   anything else stops the reading with an error naming file and line. Values are checked more
//   strictly than Mosquitto does ("max_inflight_messages ten" is an error, not 0).
// - `include_dir DIR` reads DIR's files ending in ".conf", ordered by name ignoring case, as
//   Mosquitto 2.0 does, from the main file only (elsewhere it is ignored with a warning).
#ifndef MQTTBROKER_EXAMPLES_BROKER_CONFIG_FILE_HPP
#define MQTTBROKER_EXAMPLES_BROKER_CONFIG_FILE_HPP

#include <mqttbroker/bridge/topics.hpp>

#include <fmt/core.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace mqttbroker_server {

/// Why a configuration file was refused.
enum class config_errc {
  cannot_read = 1,   // the file or an include_dir folder cannot be read
  unknown_option,    // not an option of Mosquitto's
  not_supported,     // Mosquitto's, but not something this server does
  missing_value,     // the option has no value
  invalid_value,     // a value out of range or of the wrong form
  duplicate_value,   // a listener's file or cipher option given twice (Mosquitto refuses it too)
  trailing_words,    // words after a value that takes one
  incomplete_listener,  // a listener's TLS settings do not add up (certfile without keyfile...)
};

inline const std::error_category& config_category() noexcept {
  struct category final : std::error_category {
    const char* name() const noexcept override { return "mqttbroker.config"; }
    std::string message(int e) const override {
      switch (static_cast<config_errc>(e)) {
        case config_errc::cannot_read: return "cannot read the configuration";
        case config_errc::unknown_option: return "unknown option";
        case config_errc::not_supported: return "option not supported";
        case config_errc::missing_value: return "option without a value";
        case config_errc::invalid_value: return "invalid value";
        case config_errc::duplicate_value: return "value given twice";
        case config_errc::trailing_words: return "unexpected words after the value";
        case config_errc::incomplete_listener: return "incomplete listener";
      }
      return "configuration error";
    }
  };
  static const category c;
  return c;
}

inline std::error_code make_error_code(config_errc e) noexcept { return {static_cast<int>(e), config_category()}; }

}  // namespace mqttbroker_server

template <>
struct std::is_error_code_enum<mqttbroker_server::config_errc> : std::true_type {};

namespace mqttbroker_server {

enum class listener_protocol : std::uint8_t { mqtt, websockets };

/// One listener as the file describes it.
struct listener_settings {
  std::string address;  // empty: every IPv4 interface
  std::uint16_t port = 1883;  // 0: a free port the system picks (Mosquitto would want a socket path)
  listener_protocol protocol = listener_protocol::mqtt;
  std::string certfile, keyfile, cafile, capath, crlfile;
  bool require_certificate = false;
  bool use_identity_as_username = false;
  std::string tls_version;  // "tlsv1.2" or "tlsv1.3", the lowest accepted; empty: the default (1.2)
  std::string ciphers;        // TLS 1.2 cipher list
  std::string ciphers_tls13;  // TLS 1.3 ciphersuites
  std::optional<std::size_t> max_connections;  // none: no limit of its own
  // With per_listener_settings true: this listener's own authentication and access control.
  std::optional<std::string> password_file;
  std::optional<std::string> acl_file;
  std::optional<bool> allow_anonymous;
  bool is_default = false;    // Mosquitto's default listener (port, bind_address)
  std::string origin;         // "FILE:LINE" of the line that made it, for messages

  /// certfile and keyfile make it TLS (mqtts, or wss with protocol websockets).
  bool tls() const noexcept { return !certfile.empty(); }
};

/// One bridge: a `connection NAME` line and the bridge lines after it (Mosquitto's defaults).
struct bridge_settings {
  std::string name;
  std::string origin;  // "FILE:LINE" of its connection line
  struct address {
    std::string host;
    std::uint16_t port = 1883;
  };
  std::vector<address> addresses;  // tried in turn
  std::vector<mqttbroker::bridge::topic_route> topics;
  std::string remote_clientid;  // empty: HOSTNAME.NAME
  std::optional<std::string> remote_username, remote_password;
  std::string local_clientid;      // empty: local.REMOTE_CLIENTID
  std::string notification_topic;  // empty: $SYS/broker/connection/REMOTE_CLIENTID/state
  bool cleansession = false;
  std::uint16_t keepalive_interval = 60;
  std::chrono::seconds restart_base{5}, restart_cap{30};  // one value in the file: both the same
  bool mqtt5 = false;  // bridge_protocol_version mqttv50
  bool notifications = true;
  bool notifications_local_only = false;
  bool try_private = true;
  // TLS, on when bridge_cafile or bridge_capath is given (as in Mosquitto).
  std::string cafile, capath, certfile, keyfile;
  bool insecure = false;     // bridge_insecure: the remote's name is not checked
  bool tls13_only = false;   // bridge_tls_version tlsv1.3
  bool tls() const noexcept { return !cafile.empty() || !capath.empty(); }
};

/// What a configuration file sets. A global setting the file does not mention is left empty, so
/// the server keeps its own default or command-line value.
struct config_settings {
  std::optional<std::uint16_t> max_inflight_messages;  // 0 in the file (no limit): 65535
  std::optional<std::size_t> max_queued_messages;       // 0 in the file (no limit): the largest size_t
  std::optional<std::size_t> max_queued_bytes;          // 0: no limit, as in broker_options
  // mqttbroker's own lines (Mosquitto has none of these): admission control.
  std::optional<std::size_t> max_total_queued_bytes;           // all sessions together; 0: no limit
  std::optional<std::size_t> max_connections_per_address;      // 0: no limit
  std::optional<std::uint32_t> max_connection_rate_per_address;  // new connections a second; 0: no limit
  std::optional<std::uint32_t> connection_burst_per_address;
  std::optional<std::uint32_t> max_publish_rate;               // PUBLISH packets a second per client; 0: no limit
  std::optional<std::uint32_t> max_packet_size;         // max_packet_size or message_size_limit; 0: the protocol's largest
  std::optional<std::uint16_t> max_keepalive;
  std::optional<std::chrono::seconds> persistent_client_expiration;
  std::optional<bool> retain_available;
  std::optional<std::chrono::seconds> sys_interval;     // 0: no $SYS updates
  std::optional<bool> queue_qos0_messages;
  std::optional<std::uint8_t> max_qos;                  // 0, 1 or 2
  std::optional<std::uint16_t> max_topic_alias;
  std::optional<bool> persistence;                      // persistence true: the SQLite store (--persistence)
  std::optional<std::string> persistence_location;      // its folder; the working folder by default
  std::optional<std::string> password_file;             // Mosquitto 2.0's format (mosquitto_passwd)
  std::optional<std::string> acl_file;                  // Mosquitto's format: user, topic, pattern lines
  std::optional<std::string> metrics_listener;          // this server's own: [ADDRESS:]PORT for Prometheus
  std::optional<std::string> cluster;                   // this server's own: NATS URLs, comma-separated (--cluster)
  std::optional<std::string> cluster_node;              // this server's own: the node's name (--cluster-node)
  std::optional<int> cluster_replicas;                  // this server's own: 1 to 5 (--cluster-replicas)
  std::optional<bool> cluster_send_asap;                // this server's own (--cluster-send-asap)
  std::optional<bool> cluster_jetstream;                // this server's own (--cluster-jetstream)
  // Logging, as Mosquitto's lines say it; each log_dest and log_type line adds one.
  std::vector<std::string> log_dest;       // "stderr", "stdout", "syslog", "none", or "file PATH"
  std::vector<std::string> log_type;       // error, warning, notice, information, debug, subscribe, unsubscribe, websockets, all, none
  std::optional<bool> log_timestamp;
  std::optional<std::string> log_timestamp_format;  // strftime(3)
  std::optional<bool> connection_messages;
  std::optional<bool> allow_anonymous;                  // CONNECTs without a user name
  /// password_file, acl_file and allow_anonymous are each listener's own (listener_settings).
  bool per_listener_settings = false;

  std::vector<listener_settings> listeners;  // in file order, the default listener (if any) last
  std::vector<bridge_settings> bridges;      // in file order
  std::vector<std::string> warnings;         // "FILE:LINE: ...", one per option accepted and ignored
};

namespace detail {

/// The largest packet MQTT can frame: a 268,435,455-byte remaining length plus its header.
inline constexpr std::uint32_t largest_packet = 268'435'455u + 5u;

inline bool is_blank(char c) noexcept { return c == ' ' || c == '\t'; }

/// Where the first space or tab in `s` is; s.size() when it has none.
inline std::size_t first_blank(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size() && !is_blank(s[i])) ++i;
  return i;
}

inline std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
}

/// An option of Mosquitto's and what to say about it.
struct option_note {
  std::string_view name;
  std::string_view text;
};

/// Options that make no sense for this server: read, and ignored with this explanation.
inline constexpr std::string_view not_needed =
    "not needed: with persistence every change is stored before it is acknowledged, nothing waits for a save";
inline constexpr std::string_view logs_to_stderr = "this server logs to stderr (--log-level sets how much)";
inline constexpr std::string_view log_types[] = {"error", "warning", "notice", "information", "debug", "subscribe",
                                                 "unsubscribe", "websockets", "all", "none"};
inline constexpr option_note ignored_options[] = {
    {"pid_file", "this server writes no PID file (a service manager knows its PID)"},
    {"user", "this server does not change user: start it as the user it should run as"},
    {"persistence_file", "the store is mqttbroker.db in persistence_location"},
    {"autosave_interval", not_needed},
    {"autosave_on_changes", not_needed},
    {"log_facility", "syslog lines go to the daemon facility"},
    {"websockets_log_level", logs_to_stderr},
    {"websockets_headers_size", "no effect here"},
    {"allow_duplicate_messages", "no effect here: a client subscribed through several filters gets one copy"},
    {"auto_id_prefix", "assigned client identifiers start with 'mqttbroker-'"},
    {"check_retain_source", "a retained message is checked against its subscriber's read rights only"},
};

/// Mosquitto options this server does not implement: an error, with a hint (may be empty).
inline constexpr std::string_view no_auth_files =
    "authentication and access control beyond password_file and acl_file are a hooks policy's work here";
inline constexpr std::string_view no_bridges = "bridges here start automatically, not lazily";
inline constexpr option_note unsupported_options[] = {
    {"psk_file", no_auth_files},
    {"psk_hint", "TLS pre-shared keys are not supported"},
    {"auth_plugin", no_auth_files},
    {"auth_plugin_deny_special_chars", no_auth_files},
    {"plugin", no_auth_files},
    {"global_plugin", no_auth_files},
    {"clientid_prefixes", no_auth_files},
    {"use_subject_as_username", "use_identity_as_username is"},
    {"use_username_as_clientid", ""},
    {"mount_point", ""},
    {"http_dir", "the WebSocket listeners serve MQTT only, no files"},
    {"socket_domain", "a listener's address decides between IPv4 and IPv6"},
    {"bind_interface", "give the interface's address to listener or bind_address"},
    {"dhparamfile", "TLS 1.2 uses ECDHE key exchange here"},
    {"tls_engine", ""},
    {"tls_engine_kpass_sha1", ""},
    {"tls_keyform", "keys are read from PEM files"},
    {"upgrade_outgoing_qos", ""},
    {"memory_limit", "the per-session queue limits (max_queued_messages, max_queued_bytes) bound memory"},
    {"max_inflight_bytes", "max_inflight_messages is"},
    {"idle_timeout", no_bridges},
    {"local_cleansession", "a bridge is inside this broker: it has no local session"},
    {"threshold", no_bridges},
};

/// Reads one main file and what it includes into a config_settings; the first error stops it.
class config_reader {
 public:
  config_settings read_file(const std::string& path, std::error_code& ec, std::string& message) {
    main_ = path;
    read_one(path, 0);
    finish();
    ec = ec_;
    message = std::move(message_);
    return std::move(out_);
  }

  config_settings read_text(std::string_view text, const std::string& name, std::error_code& ec, std::string& message) {
    read_lines(text, name, 0);
    finish();
    ec = ec_;
    message = std::move(message_);
    return std::move(out_);
  }

 private:
  /// Where a listener option goes: the listener of the latest `listener` line, else the default.
  listener_settings& current() { return in_listener_ ? out_.listeners.back() : default_listener(); }
  listener_settings& default_listener() {
    if (!default_) {
      default_.emplace();
      default_->is_default = true;
      default_->origin = where_;  // the first line that mentions it
    }
    return *default_;
  }

  bool fail(config_errc e, std::string text) {
    if (!ec_) {
      ec_ = e;
      message_ = fmt::format("{}: {}", where_, text);
    }
    return false;
  }
  void warn(std::string text) { out_.warnings.push_back(fmt::format("{}: {}", where_, text)); }

  bool read_one(const std::string& path, int level) {
    std::error_code type;
    if (std::filesystem::is_directory(path, type)) {
      where_ = path;
      return fail(config_errc::cannot_read, "cannot open: it is a folder");
    }
    errno = 0;
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      const int e = errno;
      where_ = path;
      return fail(config_errc::cannot_read, e != 0 ? fmt::format("cannot open: {}", std::generic_category().message(e))
                                                   : std::string("cannot open"));
    }
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) {
      where_ = path;
      return fail(config_errc::cannot_read, "cannot read");
    }
    return read_lines(text.str(), path, level);
  }

  bool read_lines(std::string_view text, const std::string& name, int level) {
    std::size_t number = 0;
    while (!text.empty() && !ec_) {
      const std::size_t end = text.find('\n');
      std::string_view line = text.substr(0, end);
      text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
      ++number;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      line = trim(line);
      if (line.empty() || line.front() == '#') continue;
      where_ = fmt::format("{}:{}", name, number);
      option(line, level);
    }
    return !ec_;
  }

  // ---- values

  /// The value of a one-word option: its word, with nothing after it but a comment.
  bool word(std::string_view name, std::string_view rest, std::string_view& value) {
    if (rest.empty()) return fail(config_errc::missing_value, fmt::format("'{}' needs a value", name));
    const std::size_t end = first_blank(rest);
    value = rest.substr(0, end);
    const std::string_view after = trim(rest.substr(end));
    if (!after.empty() && after.front() != '#')
      return fail(config_errc::trailing_words, fmt::format("'{}' takes one value; '{}' follows it", name, after));
    return true;
  }

  template <class Int>
  bool integer(std::string_view name, std::string_view rest, long long low, long long high, Int& out) {
    std::string_view v;
    if (!word(name, rest, v)) return false;
    long long n = 0;
    const auto [end, err] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (err != std::errc() || end != v.data() + v.size() || n < low || n > high)
      return fail(config_errc::invalid_value,
                  fmt::format("'{}' must be a whole number from {} to {}, not '{}'", name, low, high, v));
    out = static_cast<Int>(n);
    return true;
  }

  bool boolean(std::string_view name, std::string_view rest, bool& out) {
    std::string_view v;
    if (!word(name, rest, v)) return false;
    if (v == "true" || v == "1") {
      out = true;
    } else if (v == "false" || v == "0") {
      out = false;
    } else {
      return fail(config_errc::invalid_value, fmt::format("'{}' must be true or false, not '{}'", name, v));
    }
    return true;
  }

  /// A path or list: the rest of the line. Given twice for one listener it is an error, as in
  /// Mosquitto, where a second certfile is more likely a mistake than a change of mind.
  bool text_value(std::string_view name, std::string_view rest, std::string& out) {
    if (rest.empty()) return fail(config_errc::missing_value, fmt::format("'{}' needs a value", name));
    if (!out.empty())
      return fail(config_errc::duplicate_value, fmt::format("'{}' is given twice for this listener", name));
    out.assign(rest);
    return true;
  }

  /// Mosquitto's durations: a number and h, d, w, m (30 days) or y (365 days).
  bool duration(std::string_view name, std::string_view rest, std::chrono::seconds& out) {
    std::string_view v;
    if (!word(name, rest, v)) return false;
    std::uint64_t unit = 0;
    switch (v.empty() ? '\0' : v.back()) {
      case 'h': unit = 3600; break;
      case 'd': unit = 86'400; break;
      case 'w': unit = 7 * 86'400; break;
      case 'm': unit = 30 * 86'400; break;
      case 'y': unit = 365 * 86'400; break;
      default: break;
    }
    std::uint64_t n = 0;
    const char* last = v.data() + v.size() - 1;
    const auto [end, err] = unit != 0 ? std::from_chars(v.data(), last, n) : std::from_chars_result{v.data(), std::errc::invalid_argument};
    constexpr std::uint64_t most = std::numeric_limits<std::int64_t>::max() / (365 * 86'400);
    if (err != std::errc() || end != last || n > most)
      return fail(config_errc::invalid_value,
                  fmt::format("'{}' must be a number followed by h, d, w, m or y (hours, days, weeks, months, years), not '{}'",
                              name, v));
    out = std::chrono::seconds(static_cast<std::int64_t>(n * unit));
    return true;
  }

  // ---- options

  void option(std::string_view line, int level) {
    const std::size_t split = first_blank(line);
    const std::string_view name = line.substr(0, split);
    const std::string_view rest = trim(line.substr(split));
    // Each returns whether it knows `name`; a bad value has set ec_ by then.
    if (listener_option(name, rest) || bridge_option(name, rest) || global_option(name, rest, level) ||
        ignored(name, rest))
      return;
    for (const option_note& u : unsupported_options) {
      if (u.name == name) {
        fail(config_errc::not_supported,
             u.text.empty() ? fmt::format("'{}' is not supported by mqttbroker", name)
                            : fmt::format("'{}' is not supported by mqttbroker ({})", name, u.text));
        return;
      }
    }
    if (name.substr(0, 7) == "bridge_")
      fail(config_errc::not_supported, fmt::format("'{}' is not supported by mqttbroker's bridges yet", name));
    else if (name.substr(0, 11) == "plugin_opt_")
      fail(config_errc::not_supported, fmt::format("'{}' is not supported by mqttbroker ({})", name, no_auth_files));
    else
      fail(config_errc::unknown_option, fmt::format("unknown option '{}'", name));
  }

  /// The options of one listener (or, before any `listener` line, of the default one). True when
  /// `name` is one of them.
  bool listener_option(std::string_view name, std::string_view rest) {
    if (name == "listener") {
      new_listener(rest);
      return true;
    }
    // `port` and `bind_address` are the default listener's, wherever they are (Mosquitto 2).
    if (name == "port") {
      integer(name, rest, 0, 65535, default_listener().port);
      return true;
    }
    if (name == "bind_address") {
      std::string_view v;
      if (word(name, rest, v)) default_listener().address.assign(v);
      return true;
    }
    if (name == "protocol") {
      std::string_view v;
      if (!word(name, rest, v)) return true;
      if (v == "mqtt")
        current().protocol = listener_protocol::mqtt;
      else if (v == "websockets")
        current().protocol = listener_protocol::websockets;
      else
        fail(config_errc::invalid_value, fmt::format("'protocol' must be mqtt or websockets, not '{}'", v));
      return true;
    }
    if (name == "max_connections") {
      long long n = 0;
      // Mosquitto takes any negative number as no limit; -1 is what its documentation says.
      if (integer(name, rest, std::numeric_limits<int>::min(), std::numeric_limits<int>::max(), n)) {
        if (n < 0)
          current().max_connections.reset();
        else
          current().max_connections = static_cast<std::size_t>(n);
      }
      return true;
    }
    if (name == "tls_version") {
      std::string_view v;
      if (!word(name, rest, v)) return true;
      if (v != "tlsv1.2" && v != "tlsv1.3") {
        fail(config_errc::invalid_value, fmt::format("'tls_version' must be tlsv1.2 or tlsv1.3 (the lowest accepted), not '{}'", v));
        return true;
      }
      note_tls_option(name);
      text_value(name, v, current().tls_version);
      return true;
    }
    if (name == "require_certificate" || name == "use_identity_as_username") {
      note_tls_option(name);
      boolean(name, rest, name == "require_certificate" ? current().require_certificate : current().use_identity_as_username);
      return true;
    }
    std::string listener_settings::*text = nullptr;
    if (name == "certfile") text = &listener_settings::certfile;
    else if (name == "keyfile") text = &listener_settings::keyfile;
    else if (name == "cafile") text = &listener_settings::cafile;
    else if (name == "capath") text = &listener_settings::capath;
    else if (name == "crlfile") text = &listener_settings::crlfile;
    else if (name == "ciphers") text = &listener_settings::ciphers;
    else if (name == "ciphers_tls1.3") text = &listener_settings::ciphers_tls13;
    if (text == nullptr) return false;
    if (name != "certfile" && name != "keyfile") note_tls_option(name);
    text_value(name, rest, current().*text);
    return true;
  }

  /// The lines of a bridge: `connection NAME` begins one, the others belong to the latest. True
  /// when `name` is one of them.
  bool bridge_option(std::string_view name, std::string_view rest) {
    static constexpr std::string_view names[] = {
        "connection", "address", "addresses", "topic", "remote_clientid", "clientid", "remote_username",
        "remote_password", "local_clientid", "cleansession", "keepalive_interval", "restart_timeout",
        "bridge_protocol_version", "notifications", "notifications_local_only", "notification_topic",
        "try_private", "round_robin", "start_type", "local_username", "local_password", "bridge_cafile",
        "bridge_capath", "bridge_certfile", "bridge_keyfile", "bridge_insecure", "bridge_tls_version"};
    if (std::find(std::begin(names), std::end(names), name) == std::end(names)) return false;
    if (name == "connection") {
      std::string_view v;
      if (!word(name, rest, v)) return true;
      for (const bridge_settings& b : out_.bridges)
        if (b.name == v) {
        fail(config_errc::invalid_value, fmt::format("a connection named '{}' is already configured", v));
        return true;
      }
      out_.bridges.emplace_back();
      out_.bridges.back().name.assign(v);
      out_.bridges.back().origin = where_;
      return true;
    }
    if (out_.bridges.empty()) {
      fail(config_errc::invalid_value, fmt::format("'{}' belongs to a bridge: a 'connection NAME' line must come first", name));
      return true;
    }
    bridge_settings& b = out_.bridges.back();
    if (name == "address" || name == "addresses") {
      if (rest.empty()) {
        fail(config_errc::missing_value, fmt::format("'{}' needs a value", name));
        return true;
      }
      for (std::string_view left = rest; !left.empty();) {
        const std::size_t end = first_blank(left);
        std::string_view one = left.substr(0, end);
        left = trim(left.substr(end));
        bridge_settings::address a;
        const std::size_t colon = one.rfind(':');
        std::string_view host = one;
        if (colon != std::string_view::npos && one.find(':') == colon) {  // HOST:PORT (an IPv6 address has several)
          host = one.substr(0, colon);
          if (!integer(name, one.substr(colon + 1), 1, 65535, a.port)) return true;
        }
        if (host.empty()) {
        fail(config_errc::invalid_value, fmt::format("'{}' has an empty host in '{}'", name, one));
        return true;
      }
        a.host.assign(host);
        b.addresses.push_back(std::move(a));
      }
    } else if (name == "topic") {
      // Words split by blanks, "" for an empty one; no comments ('#' is a pattern here).
      std::vector<std::string> words;
      for (std::string_view left = rest; !left.empty();) {
        const std::size_t end = first_blank(left);
        const std::string_view w = left.substr(0, end);
        words.emplace_back(w == "\"\"" ? std::string_view() : w);
        left = trim(left.substr(end));
      }
      std::string why;
      if (auto r = mqttbroker::bridge::parse_topic_route(words, why))
        b.topics.push_back(std::move(*r));
      else
        fail(config_errc::invalid_value, fmt::format("'topic {}': {}", rest, why));
    } else if (name == "remote_clientid" || name == "clientid" || name == "local_clientid" ||
               name == "notification_topic") {
      std::string_view v;
      if (!word(name, rest, v)) return true;
      (name == "local_clientid" ? b.local_clientid : name == "notification_topic" ? b.notification_topic : b.remote_clientid)
          .assign(v);
      if (name == "clientid") warn("clientid read as remote_clientid (its name since Mosquitto 1.4)");
    } else if (name == "remote_username" || name == "remote_password") {
      if (rest.empty()) {
        fail(config_errc::missing_value, fmt::format("'{}' needs a value", name));
        return true;
      }
      (name == "remote_username" ? b.remote_username : b.remote_password).emplace(rest);  // the rest of the line
    } else if (name == "cleansession" || name == "notifications" || name == "notifications_local_only" ||
               name == "try_private") {
      boolean(name, rest,
              name == "cleansession"              ? b.cleansession
              : name == "notifications"           ? b.notifications
              : name == "notifications_local_only" ? b.notifications_local_only
                                                   : b.try_private);
    } else if (name == "keepalive_interval") {
      integer(name, rest, 5, 65535, b.keepalive_interval);
    } else if (name == "restart_timeout") {
      const std::size_t end = first_blank(rest);
      std::uint32_t base = 0, cap = 0;
      if (!integer(name, rest.substr(0, end), 1, 86'400, base)) return true;
      cap = base;
      const std::string_view second = trim(rest.substr(end));
      if (!second.empty() && second.front() != '#' && !integer(name, second, base, 86'400, cap)) return true;
      b.restart_base = std::chrono::seconds(base);
      b.restart_cap = std::chrono::seconds(cap);
    } else if (name == "bridge_protocol_version") {
      std::string_view v;
      if (!word(name, rest, v)) return true;
      if (v == "mqttv311" || v == "mqttv50")
        b.mqtt5 = v == "mqttv50";
      else
        fail(config_errc::invalid_value, fmt::format("'bridge_protocol_version' must be mqttv311 or mqttv50, not '{}'", v));
    } else if (name == "bridge_cafile" || name == "bridge_capath" || name == "bridge_certfile" ||
               name == "bridge_keyfile") {
      if (rest.empty()) {
        fail(config_errc::missing_value, fmt::format("'{}' needs a value", name));
        return true;
      }
      (name == "bridge_cafile"     ? b.cafile
       : name == "bridge_capath"   ? b.capath
       : name == "bridge_certfile" ? b.certfile
                                   : b.keyfile)
          .assign(rest);  // a path: the rest of the line
    } else if (name == "bridge_insecure") {
      boolean(name, rest, b.insecure);
    } else if (name == "bridge_tls_version") {
      std::string_view v;
      if (!word(name, rest, v)) return true;
      if (v != "tlsv1.2" && v != "tlsv1.3")
        fail(config_errc::invalid_value, fmt::format("'bridge_tls_version' must be tlsv1.2 or tlsv1.3 (the lowest accepted), not '{}'", v));
      b.tls13_only = v == "tlsv1.3";
    } else if (name == "start_type") {
      std::string_view v;
      if (word(name, rest, v) && v != "automatic")
        fail(config_errc::not_supported, fmt::format("'start_type {}' is not supported: bridges here start automatically", v));
    } else if (name == "round_robin") {
      bool rr = false;
      if (boolean(name, rest, rr) && !rr)
        warn("round_robin false read as true: the addresses are tried in turn, with no return to the first while connected");
    } else {  // local_username, local_password
      if (rest.empty()) {
        fail(config_errc::missing_value, fmt::format("'{}' needs a value", name));
        return true;
      }
      warn(fmt::format("{} ignored: a bridge is inside this broker and does not log in to it", name));
    }
    return true;
  }

  /// `listener PORT [ADDRESS]`: the listener being read is complete, a new one begins.
  void new_listener(std::string_view rest) {
    const std::size_t end = first_blank(rest);
    const std::string_view port = rest.substr(0, end);
    std::string_view address = trim(rest.substr(end));
    if (!address.empty() && address.front() == '#') address = {};  // a comment (Mosquitto's rule too)
    const std::size_t blank = first_blank(address);
    if (blank != address.size()) {
      const std::string_view after = trim(address.substr(blank));
      if (after.front() != '#') {
        fail(config_errc::trailing_words, fmt::format("'listener' takes a port and an address; '{}' follows them", after));
        return;
      }
      address = address.substr(0, blank);
    }
    listener_settings l;
    l.origin = where_;
    if (!integer("listener", port, 0, 65535, l.port)) return;
    if (!address.empty() && address.front() == '/') {
      fail(config_errc::not_supported, "listeners on Unix sockets are not supported by mqttbroker");
      return;
    }
    l.address.assign(address);
    if (in_listener_ && !check_tls(out_.listeners.back(), tls_option_)) return;
    tls_option_.clear();
    out_.listeners.push_back(std::move(l));
    in_listener_ = true;
  }

  /// A TLS option of the current listener: kept to name it if the listener turns out not to be TLS.
  void note_tls_option(std::string_view name) {
    std::string& first = in_listener_ ? tls_option_ : default_tls_option_;
    if (first.empty()) first = fmt::format("{} ('{}')", where_, name);
  }

  /// The broker-wide options. True when `name` is one of them.
  bool global_option(std::string_view name, std::string_view rest, int level) {
    config_settings& o = out_;
    if (name == "max_inflight_messages") {
      std::uint16_t n = 0;
      if (integer(name, rest, 0, 65535, n)) o.max_inflight_messages = n == 0 ? std::uint16_t{65535} : n;
    } else if (name == "max_queued_messages") {
      std::size_t n = 0;
      if (integer(name, rest, 0, std::numeric_limits<int>::max(), n))
        o.max_queued_messages = n == 0 ? std::numeric_limits<std::size_t>::max() : n;
    } else if (name == "max_queued_bytes" || name == "max_total_queued_bytes" ||
               name == "max_connections_per_address") {
      std::size_t n = 0;
      if (integer(name, rest, 0, std::numeric_limits<long long>::max(), n))
        (name == "max_queued_bytes"         ? o.max_queued_bytes
         : name == "max_total_queued_bytes" ? o.max_total_queued_bytes
                                            : o.max_connections_per_address) = n;
    } else if (name == "max_connection_rate_per_address" || name == "connection_burst_per_address" ||
               name == "max_publish_rate") {
      std::uint32_t n = 0;
      if (integer(name, rest, 0, std::numeric_limits<std::int32_t>::max(), n))
        (name == "max_publish_rate"                  ? o.max_publish_rate
         : name == "max_connection_rate_per_address" ? o.max_connection_rate_per_address
                                                     : o.connection_burst_per_address) = n;
    } else if (name == "max_packet_size" || name == "message_size_limit") {
      std::uint32_t n = 0;
      if (integer(name, rest, 0, largest_packet, n)) {
        o.max_packet_size = n == 0 ? largest_packet : n;
        if (name == "message_size_limit")
          warn(fmt::format("message_size_limit {0} read as max_packet_size {0}: it counts the whole PUBLISH packet, and "
                           "a larger one closes the connection rather than being dropped", n));
      }
    } else if (name == "max_keepalive") {
      std::uint16_t n = 0;
      if (integer(name, rest, 0, 65535, n)) o.max_keepalive = n;
    } else if (name == "persistent_client_expiration") {
      std::chrono::seconds d{};
      if (duration(name, rest, d)) o.persistent_client_expiration = d;
    } else if (name == "retain_available" || name == "queue_qos0_messages") {
      bool b = false;
      if (boolean(name, rest, b)) (name == "retain_available" ? o.retain_available : o.queue_qos0_messages) = b;
    } else if (name == "persistence") {
      bool b = false;
      if (boolean(name, rest, b)) o.persistence = b;
    } else if (out_.per_listener_settings &&
               (name == "password_file" || name == "acl_file" || name == "allow_anonymous")) {
      // Mosquitto's per_listener_settings true: the current listener's (the default one's before
      // any listener line).
      if (name == "allow_anonymous") {
        bool b = false;
        if (boolean(name, rest, b)) current().allow_anonymous = b;
      } else if (rest.empty()) {
        fail(config_errc::missing_value, fmt::format("'{}' needs a value", name));
      } else {
        (name == "acl_file" ? current().acl_file : current().password_file).emplace(rest);
      }
      auth_lines_ = true;
    } else if (name == "cluster" || name == "cluster_node") {
      if (rest.empty())
        fail(config_errc::missing_value, fmt::format("'{}' needs a value", name));
      else
        (name == "cluster" ? o.cluster : o.cluster_node).emplace(rest);
    } else if (name == "password_file" || name == "acl_file" || name == "metrics_listener") {
      if (name != "metrics_listener") auth_lines_ = true;
      if (rest.empty())
        fail(config_errc::missing_value, fmt::format("'{}' needs a value", name));
      else  // a path or an address: the rest of the line; a later line wins
        (name == "acl_file" ? o.acl_file : name == "metrics_listener" ? o.metrics_listener : o.password_file).emplace(rest);
    } else if (name == "log_dest") {
      log_dest(rest);
    } else if (name == "log_type") {
      std::string_view v;
      if (!word(name, rest, v)) return true;
      if (std::find(std::begin(log_types), std::end(log_types), v) == std::end(log_types))
        fail(config_errc::invalid_value,
             fmt::format("'log_type' must be error, warning, notice, information, debug, subscribe, unsubscribe, "
                         "websockets, all or none, not '{}'",
                         v));
      else
        o.log_type.emplace_back(v);
    } else if (name == "log_timestamp" || name == "connection_messages") {
      bool b = false;
      if (boolean(name, rest, b)) (name == "log_timestamp" ? o.log_timestamp : o.connection_messages) = b;
    } else if (name == "log_timestamp_format") {
      if (rest.empty())
        fail(config_errc::missing_value, "'log_timestamp_format' needs a value");
      else
        o.log_timestamp_format.emplace(rest);  // a strftime format: the rest of the line
    } else if (name == "allow_anonymous") {
      bool b = false;
      if (boolean(name, rest, b)) o.allow_anonymous = b;
      auth_lines_ = true;
    } else if (name == "persistence_location") {
      if (rest.empty())
        fail(config_errc::missing_value, "'persistence_location' needs a value");
      else
        o.persistence_location.emplace(rest);  // a path: the rest of the line; a later line wins
    } else if (name == "sys_interval") {
      std::uint32_t n = 0;
      if (integer(name, rest, 0, std::numeric_limits<std::int32_t>::max(), n)) o.sys_interval = std::chrono::seconds(n);
    } else if (name == "max_qos") {
      std::uint8_t n = 0;
      if (integer(name, rest, 0, 2, n)) o.max_qos = n;
    } else if (name == "cluster_send_asap") {
      bool b = false;
      if (boolean(name, rest, b)) o.cluster_send_asap = b;
    } else if (name == "cluster_jetstream") {
      bool b = false;
      if (boolean(name, rest, b)) o.cluster_jetstream = b;
    } else if (name == "cluster_replicas") {
      int n = 0;
      if (integer(name, rest, 1, 5, n)) o.cluster_replicas = n;
    } else if (name == "max_topic_alias") {
      std::uint16_t n = 0;
      if (integer(name, rest, 0, 65535, n)) o.max_topic_alias = n;
    } else if (name == "include_dir") {
      if (rest.empty()) {
        fail(config_errc::missing_value, "'include_dir' needs a value");
      } else if (level > 0) {
        warn("include_dir ignored: it is read only in the main configuration file, as in Mosquitto");
      } else {
        include_dir(std::string(rest), level);
      }
    } else if (name == "per_listener_settings") {
      bool b = false;
      if (!boolean(name, rest, b)) return true;
      // It decides where the lines after it go, so it comes first, as Mosquitto's manual asks.
      if (b != o.per_listener_settings && (auth_lines_ || !o.listeners.empty() || default_))
        fail(config_errc::invalid_value,
             "'per_listener_settings' must come before the listeners and the password_file, acl_file and "
             "allow_anonymous lines");
      else
        o.per_listener_settings = b;
    } else if (name == "set_tcp_nodelay") {
      bool b = false;
      if (boolean(name, rest, b) && !b) warn("set_tcp_nodelay false ignored: TCP_NODELAY is always set here");
    } else if (name == "allow_zero_length_clientid") {
      bool b = false;
      if (boolean(name, rest, b) && !b)
        fail(config_errc::not_supported,
             "'allow_zero_length_clientid false' is not supported by mqttbroker: a 5.0 client without an "
             "identifier gets one assigned, a 3.1.1 client needs a clean session for it");
    } else {
      return false;
    }
    return true;
  }

  /// `log_dest stderr|stdout|syslog|none|file PATH`; Mosquitto's topic and dlt are not supported.
  void log_dest(std::string_view rest) {
    const std::size_t end = first_blank(rest);
    const std::string_view kind = rest.substr(0, end);
    const std::string_view path = trim(rest.substr(end));
    if (kind == "file") {
      if (path.empty())
        fail(config_errc::missing_value, "'log_dest file' needs a path");
      else
        out_.log_dest.push_back("file " + std::string(path));
      return;
    }
    std::string_view v;
    if (!word("log_dest", rest, v)) return;
    if (v == "stderr" || v == "stdout" || v == "syslog" || v == "none")
      out_.log_dest.emplace_back(v);
    else if (v == "topic" || v == "dlt")
      fail(config_errc::not_supported,
           fmt::format("'log_dest {}' is not supported by mqttbroker (stderr, stdout, syslog and file are)", v));
    else
      fail(config_errc::invalid_value,
           fmt::format("'log_dest' must be stderr, stdout, syslog, none or file PATH, not '{}'", v));
  }

  bool ignored(std::string_view name, std::string_view rest) {
    for (const option_note& i : ignored_options) {
      if (i.name == name) {
        if (rest.empty())
          fail(config_errc::missing_value, fmt::format("'{}' needs a value", name));
        else
          warn(fmt::format("{} ignored: {}", name, i.text));
        return true;
      }
    }
    return false;
  }

  void include_dir(const std::string& dir, int level) {
    namespace fs = std::filesystem;
    std::error_code e;
    std::vector<std::string> files;
    for (fs::directory_iterator it(dir, e), end; !e && it != end; it.increment(e)) {
      const std::string file = it->path().filename().string();
      std::error_code type;
      if (file.size() > 5 && file.compare(file.size() - 5, 5, ".conf") == 0 && it->is_regular_file(type))
        files.push_back(it->path().string());
    }
    if (e) {
      fail(config_errc::cannot_read, fmt::format("cannot read include_dir '{}': {}", dir, e.message()));
      return;
    }
    // Mosquitto 2.0 orders them ignoring case; ties by byte, so the order never depends on the folder.
    std::sort(files.begin(), files.end(), [](const std::string& a, const std::string& b) {
      const auto lower = [](std::string t) {
        for (char& c : t) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return t;
      };
      const std::string la = lower(a), lb = lower(b);
      return la != lb ? la < lb : a < b;
    });
    const std::string here = where_;
    for (const std::string& f : files) {
      std::error_code same;
      if (!main_.empty() && fs::equivalent(f, main_, same)) {
        where_ = here;
        warn(fmt::format("'{}' skipped: it is the main configuration file", f));
        continue;
      }
      if (!read_one(f, level + 1)) return;
    }
    where_ = here;
  }

  /// A listener's TLS settings must add up: certfile with keyfile, and TLS options only with them.
  bool check_tls(const listener_settings& l, const std::string& tls_option) {
    if (l.certfile.empty() != l.keyfile.empty()) {
      where_ = l.origin;
      return fail(config_errc::incomplete_listener,
                  fmt::format("the listener on port {} has a {} without a {}: TLS needs both", l.port,
                              l.certfile.empty() ? "keyfile" : "certfile", l.certfile.empty() ? "certfile" : "keyfile"));
    }
    if (!l.tls() && !tls_option.empty()) {
      where_ = l.origin;
      return fail(config_errc::incomplete_listener,
                  fmt::format("the listener on port {} is not TLS (no certfile and keyfile), yet {} sets a TLS option",
                              l.port, tls_option));
    }
    return true;
  }

  /// Mosquitto makes its default listener only when one of its settings differs from the defaults
  /// (`protocol mqtt` or `max_connections -1` alone make none).
  static bool configured(const listener_settings& l) {
    const listener_settings d;
    return l.port != d.port || !l.address.empty() || l.protocol != d.protocol || l.tls() || !l.keyfile.empty() ||
           !l.cafile.empty() || !l.capath.empty() || !l.crlfile.empty() || !l.ciphers.empty() || !l.ciphers_tls13.empty() ||
           !l.tls_version.empty() || l.require_certificate || l.use_identity_as_username || l.max_connections;
  }

  void finish() {
    if (ec_) return;
    for (const bridge_settings& b : out_.bridges) {
      where_ = b.origin;
      if (b.addresses.empty() || b.topics.empty()) {
        fail(config_errc::invalid_value, fmt::format("the connection '{}' needs an 'address' and at least one 'topic' line",
                                                     b.name));
        return;
      }
      if (b.certfile.empty() != b.keyfile.empty()) {
        fail(config_errc::incomplete_listener, fmt::format("the connection '{}' has a bridge_{} without a bridge_{}", b.name,
                                                           b.certfile.empty() ? "keyfile" : "certfile",
                                                           b.certfile.empty() ? "certfile" : "keyfile"));
        return;
      }
      if (!b.tls() && (!b.certfile.empty() || b.insecure || b.tls13_only)) {
        fail(config_errc::incomplete_listener,
             fmt::format("the connection '{}' sets TLS options without bridge_cafile or bridge_capath, which turn TLS on",
                         b.name));
        return;
      }
    }
    if (in_listener_ && !check_tls(out_.listeners.back(), tls_option_)) return;
    if (default_ && configured(*default_)) {
      if (!check_tls(*default_, default_tls_option_)) return;
      out_.listeners.push_back(std::move(*default_));
    }
  }

  config_settings out_;
  std::optional<listener_settings> default_;
  bool in_listener_ = false;     // a `listener` line was read: listener options are its own
  bool auth_lines_ = false;      // a password_file, acl_file or allow_anonymous line was read
  std::string tls_option_;          // the current listener's first TLS option, "FILE:LINE ('name')"
  std::string default_tls_option_;  // the same for the default listener
  std::string main_;   // the main file's path (none for text)
  std::string where_;  // "FILE:LINE" of the line being read
  std::error_code ec_;
  std::string message_;
};

}  // namespace detail

/// Reads the configuration file `path` and the files its include_dir names. On failure `ec` is
/// set and `message` says where and why ("FILE:LINE: unknown option 'listner'").
inline config_settings read_config_file(const std::string& path, std::error_code& ec, std::string& message) {
  return detail::config_reader().read_file(path, ec, message);
}

/// The same for text in memory, named `name` in messages (an include_dir in it reads files).
inline config_settings parse_config(std::string_view text, const std::string& name, std::error_code& ec,
                                    std::string& message) {
  return detail::config_reader().read_text(text, name, ec, message);
}

}  // namespace mqttbroker_server

#endif  // MQTTBROKER_EXAMPLES_BROKER_CONFIG_FILE_HPP
