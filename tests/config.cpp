// The example server's configuration file reader (examples/broker/config_file.hpp): Mosquitto's
// syntax in, plain settings out, no sockets. Files for include_dir go to a temporary folder.
#include "config_file.hpp"

#include "catch.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <system_error>
#include <vector>

#include <unistd.h>

namespace fs = std::filesystem;
using mqttbroker_server::config_errc;
using mqttbroker_server::config_settings;
using mqttbroker_server::listener_protocol;

namespace {

/// Text parsed as "test.conf"; the test fails if it does not load.
config_settings load(const std::string& text) {
  std::error_code ec;
  std::string message;
  config_settings c = mqttbroker_server::parse_config(text, "test.conf", ec, message);
  INFO(message);
  REQUIRE_FALSE(ec);
  REQUIRE(message.empty());
  return c;
}

/// What refusing `text` says; the test fails if it loads.
struct refusal {
  std::error_code ec;
  std::string message;
};
refusal refuse(const std::string& text) {
  refusal r;
  mqttbroker_server::parse_config(text, "test.conf", r.ec, r.message);
  REQUIRE(r.ec);
  return r;
}

/// A folder of its own under the system's temporary folder, removed at the end of the test.
class temp_dir {
 public:
  temp_dir() {
    static int n = 0;
    path_ = fs::temp_directory_path() / ("mqttbroker-config-test-" + std::to_string(::getpid()) + "-" + std::to_string(++n));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  std::string write(const std::string& name, const std::string& text) const {
    const fs::path p = path_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }
  std::string path(const std::string& name = "") const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

}  // namespace

TEST_CASE("config: Debian's stock mosquitto.conf loads, each option it cannot use warned about with its line", "[config]") {
  temp_dir d;
  d.write("conf.d/README", "Any files placed in this directory that have a .conf ending will be loaded\n");
  // /etc/mosquitto/mosquitto.conf as Debian ships it, its include_dir pointed at the folder above.
  const std::string main = d.write("mosquitto.conf",
                                   "# Place your local configuration in /etc/mosquitto/conf.d/\n"
                                   "#\n"
                                   "# A full description of the configuration file is at\n"
                                   "# /usr/share/doc/mosquitto/examples/mosquitto.conf.example\n"
                                   "\n"
                                   "pid_file /run/mosquitto/mosquitto.pid\n"
                                   "\n"
                                   "persistence true\n"
                                   "persistence_location /var/lib/mosquitto/\n"
                                   "\n"
                                   "log_dest file /var/log/mosquitto/mosquitto.log\n"
                                   "\n"
                                   "include_dir " + d.path("conf.d") + "\n");
  std::error_code ec;
  std::string message;
  const config_settings c = mqttbroker_server::read_config_file(main, ec, message);
  INFO(message);
  REQUIRE_FALSE(ec);
  CHECK(c.listeners.empty());  // the server's own listener then (--bind, --port)
  REQUIRE(c.warnings.size() == 1);
  CHECK(c.warnings[0].rfind(main + ":6: pid_file ignored", 0) == 0);
  CHECK(c.log_dest == std::vector<std::string>{"file /var/log/mosquitto/mosquitto.log"});
  CHECK(c.persistence == std::optional<bool>(true));  // the SQLite store, as Mosquitto's file asks
  CHECK(c.persistence_location == std::optional<std::string>("/var/lib/mosquitto/"));
  CHECK_FALSE(c.max_inflight_messages);  // nothing else set
}

TEST_CASE("config: each listener line starts a block; the TLS, protocol and limit lines after it are its own", "[config]") {
  const config_settings c = load(
      "listener 1883\n"
      "max_connections 10\n"
      "listener 8883 127.0.0.1\n"
      "certfile /etc/tls/server chain.pem\n"  // a path is the rest of the line, spaces kept
      "keyfile /etc/tls/server.key\n"
      "cafile /etc/tls/ca.pem\n"
      "capath /etc/tls/cas\n"
      "crlfile /etc/tls/revoked.pem\n"
      "require_certificate true\n"
      "use_identity_as_username true\n"
      "tls_version tlsv1.3\n"
      "ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256\n"
      "ciphers_tls1.3 TLS_AES_128_GCM_SHA256\n"
      "max_connections -1\n"
      "listener 8080 ::1\n"
      "protocol websockets\n"
      "max_connections 0\n");
  REQUIRE(c.listeners.size() == 3);
  const auto& plain = c.listeners[0];
  CHECK(plain.port == 1883);
  CHECK(plain.address.empty());
  CHECK(plain.protocol == listener_protocol::mqtt);
  CHECK_FALSE(plain.tls());
  CHECK(plain.max_connections == std::size_t{10});
  CHECK(plain.origin == "test.conf:1");
  CHECK_FALSE(plain.is_default);

  const auto& tls = c.listeners[1];
  CHECK(tls.port == 8883);
  CHECK(tls.address == "127.0.0.1");
  CHECK(tls.tls());
  CHECK(tls.certfile == "/etc/tls/server chain.pem");
  CHECK(tls.keyfile == "/etc/tls/server.key");
  CHECK(tls.cafile == "/etc/tls/ca.pem");
  CHECK(tls.capath == "/etc/tls/cas");
  CHECK(tls.crlfile == "/etc/tls/revoked.pem");
  CHECK(tls.require_certificate);
  CHECK(tls.use_identity_as_username);
  CHECK(tls.tls_version == "tlsv1.3");
  CHECK(tls.ciphers == "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256");
  CHECK(tls.ciphers_tls13 == "TLS_AES_128_GCM_SHA256");
  CHECK_FALSE(tls.max_connections);  // -1: no limit
  CHECK(tls.origin == "test.conf:3");

  const auto& ws = c.listeners[2];
  CHECK(ws.port == 8080);
  CHECK(ws.address == "::1");
  CHECK(ws.protocol == listener_protocol::websockets);
  CHECK_FALSE(ws.tls());
  CHECK(ws.max_connections == std::size_t{0});
  CHECK(c.warnings.empty());
}

TEST_CASE("config: port and bind_address make Mosquitto's default listener, wherever they are, opened last", "[config]") {
  SECTION("port after a listener block still belongs to the default listener") {
    const config_settings c = load("listener 1884\nport 1885\nbind_address 127.0.0.1\n");
    REQUIRE(c.listeners.size() == 2);
    CHECK(c.listeners[0].port == 1884);
    CHECK(c.listeners[0].address.empty());
    CHECK(c.listeners[1].is_default);
    CHECK(c.listeners[1].port == 1885);
    CHECK(c.listeners[1].address == "127.0.0.1");
    CHECK(c.listeners[1].origin == "test.conf:2");
  }
  SECTION("listener settings before the first listener line make it, on port 1883") {
    const config_settings c = load("max_connections 5\nlistener 1884\n");
    REQUIRE(c.listeners.size() == 2);
    CHECK(c.listeners[0].port == 1884);
    CHECK_FALSE(c.listeners[0].max_connections);
    CHECK(c.listeners[1].is_default);
    CHECK(c.listeners[1].port == 1883);
    CHECK(c.listeners[1].max_connections == std::size_t{5});
  }
  SECTION("a TLS default listener") {
    const config_settings c = load("port 8883\ncertfile /c.pem\nkeyfile /k.pem\n");
    REQUIRE(c.listeners.size() == 1);
    CHECK(c.listeners[0].tls());
    CHECK(c.listeners[0].port == 8883);
  }
  SECTION("settings that say what the defaults say make none, as in Mosquitto") {
    CHECK(load("protocol mqtt\nmax_connections -1\nrequire_certificate false\n").listeners.empty());
  }
}

TEST_CASE("config: the broker-wide options Mosquitto shares with this server", "[config]") {
  const config_settings c = load(
      "max_inflight_messages 40\n"
      "max_queued_messages 500\n"
      "max_queued_bytes 1048576\n"
      "max_packet_size 65536\n"
      "max_keepalive 300\n"
      "persistent_client_expiration 2w\n"
      "retain_available false\n"
      "sys_interval 0\n"
      "queue_qos0_messages true\n"
      "max_qos 1\n"
      "max_topic_alias 4\n");
  CHECK(c.max_inflight_messages == std::uint16_t{40});
  CHECK(c.max_queued_messages == std::size_t{500});
  CHECK(c.max_queued_bytes == std::size_t{1048576});
  CHECK(c.max_packet_size == std::uint32_t{65536});
  CHECK(c.max_keepalive == std::uint16_t{300});
  CHECK(c.persistent_client_expiration == std::chrono::seconds(14 * 86400));
  CHECK(c.retain_available == false);
  CHECK(c.sys_interval == std::chrono::seconds(0));
  CHECK(c.queue_qos0_messages == true);
  CHECK(c.max_qos == std::uint8_t{1});
  CHECK(c.max_topic_alias == std::uint16_t{4});
  CHECK(c.warnings.empty());
  CHECK(c.listeners.empty());

  // This server's own cluster lines.
  const config_settings cl =
      load("cluster nats://127.0.0.1:4222\ncluster_node a\ncluster_replicas 3\ncluster_send_asap true\ncluster_jetstream false\n");
  CHECK(cl.cluster == std::optional<std::string>("nats://127.0.0.1:4222"));
  CHECK(cl.cluster_node == std::optional<std::string>("a"));
  CHECK(cl.cluster_replicas == std::optional<int>(3));
  CHECK(cl.cluster_send_asap == std::optional<bool>(true));
  CHECK(cl.cluster_jetstream == std::optional<bool>(false));
  CHECK(cl.warnings.empty());
  CHECK_FALSE(load("max_qos 1\n").cluster_send_asap);

  // Mosquitto's 0 means no limit for these.
  const config_settings z = load("max_inflight_messages 0\nmax_queued_messages 0\nmax_packet_size 0\n");
  CHECK(z.max_inflight_messages == std::uint16_t{65535});
  CHECK(z.max_queued_messages == std::numeric_limits<std::size_t>::max());
  CHECK(z.max_packet_size == std::uint32_t{268'435'460});

  // The last of a repeated option wins; message_size_limit is read as the packet limit, warned.
  const config_settings m = load("max_inflight_messages 5\nmax_inflight_messages 6\nmessage_size_limit 1000\n");
  CHECK(m.max_inflight_messages == std::uint16_t{6});
  CHECK(m.max_packet_size == std::uint32_t{1000});
  REQUIRE(m.warnings.size() == 1);
  CHECK(m.warnings[0].rfind("test.conf:3: message_size_limit 1000 read as max_packet_size 1000", 0) == 0);
}

TEST_CASE("config: persistent_client_expiration takes Mosquitto's units", "[config]") {
  using std::chrono::seconds;
  CHECK(load("persistent_client_expiration 3h\n").persistent_client_expiration == seconds(3 * 3600));
  CHECK(load("persistent_client_expiration 1d\n").persistent_client_expiration == seconds(86400));
  CHECK(load("persistent_client_expiration 2m\n").persistent_client_expiration == seconds(60 * 86400));
  CHECK(load("persistent_client_expiration 1y\n").persistent_client_expiration == seconds(365 * 86400));
  for (const char* bad : {"10", "10s", "h", "-1d", "1.5d", "d1"}) {
    INFO(bad);
    CHECK(refuse(std::string("persistent_client_expiration ") + bad + "\n").ec == config_errc::invalid_value);
  }
}

TEST_CASE("config: options that make no sense here are accepted with a warning naming file, line and option", "[config]") {
  const config_settings c = load(
      "user mosquitto\n"
      "autosave_interval 1800\n"
      "autosave_on_changes false\n"
      "persistence_file mosquitto.db\n"
      "log_facility 5\n"
      "websockets_log_level 255\n"
      "per_listener_settings false\n"
      "# per_listener_settings true is read (below)\n"
      "set_tcp_nodelay true\n"
      "set_tcp_nodelay false\n"
      "allow_zero_length_clientid true\n");
  REQUIRE(c.warnings.size() == 7);
  CHECK(c.warnings[0].rfind("test.conf:1: user ignored: ", 0) == 0);
  CHECK(c.warnings[1].rfind("test.conf:2: autosave_interval ignored: ", 0) == 0);
  CHECK(c.warnings[2].rfind("test.conf:3: autosave_on_changes ignored: ", 0) == 0);
  CHECK(c.warnings[3].rfind("test.conf:4: persistence_file ignored: ", 0) == 0);
  CHECK(c.warnings[4].rfind("test.conf:5: log_facility ignored: ", 0) == 0);
  CHECK(c.warnings[5].rfind("test.conf:6: websockets_log_level ignored: ", 0) == 0);
  // The false ones say what the server does anyway, as does set_tcp_nodelay true: no warning.
  CHECK(c.warnings[6].rfind("test.conf:10: set_tcp_nodelay false ignored", 0) == 0);
}

TEST_CASE("config: per_listener_settings true makes password_file, acl_file and allow_anonymous each listener's",
          "[config]") {
  const config_settings c = load(
      "per_listener_settings true\n"
      "listener 1883\n"
      "password_file /etc/mosquitto/passwd\n"
      "listener 1884 127.0.0.1\n"
      "allow_anonymous true\n"
      "acl_file /etc/mosquitto/acl\n");
  CHECK(c.per_listener_settings);
  REQUIRE(c.listeners.size() == 2);
  CHECK(c.listeners[0].password_file == std::optional<std::string>("/etc/mosquitto/passwd"));
  CHECK_FALSE(c.listeners[0].acl_file);
  CHECK_FALSE(c.listeners[0].allow_anonymous);
  CHECK(c.listeners[1].allow_anonymous == std::optional<bool>(true));
  CHECK(c.listeners[1].acl_file == std::optional<std::string>("/etc/mosquitto/acl"));
  CHECK_FALSE(c.password_file);  // none of the broker's own
  CHECK_FALSE(c.acl_file);
  // It decides where those lines go: it must come before them and before the listeners.
  CHECK(refuse("listener 1883\nper_listener_settings true\n").ec == config_errc::invalid_value);
  CHECK(refuse("password_file /x\nper_listener_settings true\n").ec == config_errc::invalid_value);
}

TEST_CASE("config: an unknown option is an error naming file and line; the first error stops the reading", "[config]") {
  const refusal r = refuse("# a comment\n\nlistener 1883\n  \nlistner 1884\nbogus 1\n");
  CHECK(r.ec == config_errc::unknown_option);
  CHECK(r.message == "test.conf:5: unknown option 'listner'");
}

TEST_CASE("config: Mosquitto options this server does not implement are errors that say so", "[config]") {
  struct expectation {
    const char* line;
    const char* message;
  };
  for (const expectation& e : {
           expectation{"psk_file /etc/mosquitto/psk", "test.conf:1: 'psk_file' is not supported by mqttbroker"},
           expectation{"http_dir /var/www", "test.conf:1: 'http_dir' is not supported by mqttbroker"},
           expectation{"idle_timeout 60", "test.conf:1: 'idle_timeout' is not supported by mqttbroker (bridges here start automatically, not lazily)"},
           expectation{"bridge_outgoing_retain false", "test.conf:1: 'bridge_outgoing_retain' is not supported by mqttbroker's bridges yet"},
           expectation{"plugin_opt_db /x", "test.conf:1: 'plugin_opt_db' is not supported by mqttbroker"},
           expectation{"listener 0 /run/mqtt.sock", "test.conf:1: listeners on Unix sockets are not supported by mqttbroker"},
           expectation{"allow_zero_length_clientid false", "test.conf:1: 'allow_zero_length_clientid false' is not supported"},
       }) {
    INFO(e.line);
    const refusal r = refuse(std::string(e.line) + "\n");
    CHECK(r.ec == config_errc::not_supported);
    CHECK(r.message.rfind(e.message, 0) == 0);
  }
}

TEST_CASE("config: bridges: a connection line and the lines after it, with Mosquitto's defaults", "[config][bridge]") {
  const config_settings c = load(
      "listener 1883\n"
      "connection cloud\n"
      "address broker.example.com:8883 10.0.0.2\n"
      "topic # out 1 gw/ site7/\n"
      "topic cmd/# in 2\n"
      "topic \"\" both 0 here/one there/one\n"
      "remote_clientid gw-7\n"
      "remote_username gateway seven\n"
      "remote_password s3cret\n"
      "cleansession true\n"
      "keepalive_interval 30\n"
      "restart_timeout 2 60\n"
      "bridge_protocol_version mqttv50\n"
      "notifications false\n"
      "try_private false\n"
      "bridge_cafile /etc/ssl/ca dir/ca.pem\n"
      "bridge_certfile /etc/gw/cert.pem\n"
      "bridge_keyfile /etc/gw/key.pem\n"
      "bridge_tls_version tlsv1.3\n"
      "connection second\n"
      "address 127.0.0.1\n"
      "topic a/# out\n"
      "restart_timeout 7\n"
      "max_queued_messages 50\n");  // a broker-wide line after a bridge is still broker-wide
  REQUIRE(c.bridges.size() == 2);
  const auto& b = c.bridges[0];
  CHECK(b.name == "cloud");
  CHECK(b.origin == "test.conf:2");
  REQUIRE(b.addresses.size() == 2);
  CHECK(b.addresses[0].host == "broker.example.com");
  CHECK(b.addresses[0].port == 8883);
  CHECK(b.addresses[1].host == "10.0.0.2");
  CHECK(b.addresses[1].port == 1883);
  REQUIRE(b.topics.size() == 3);
  CHECK(b.topics[0].local_filter() == "gw/#");
  CHECK(b.topics[0].remote_filter() == "site7/#");
  CHECK(b.topics[0].qos_level == mqttbroker::codec::qos::at_least_once);
  CHECK(b.topics[1].dir == mqttbroker::bridge::direction::in);
  CHECK(b.topics[1].qos_level == mqttbroker::codec::qos::exactly_once);
  CHECK(b.topics[2].local_filter() == "here/one");
  CHECK(b.topics[2].remote_filter() == "there/one");
  CHECK(b.remote_clientid == "gw-7");
  CHECK(b.remote_username == std::optional<std::string>("gateway seven"));
  CHECK(b.remote_password == std::optional<std::string>("s3cret"));
  CHECK(b.cleansession);
  CHECK(b.keepalive_interval == 30);
  CHECK(b.restart_base == std::chrono::seconds(2));
  CHECK(b.restart_cap == std::chrono::seconds(60));
  CHECK(b.mqtt5);
  CHECK_FALSE(b.notifications);
  CHECK_FALSE(b.try_private);
  CHECK(b.tls());
  CHECK(b.cafile == "/etc/ssl/ca dir/ca.pem");
  CHECK(b.certfile == "/etc/gw/cert.pem");
  CHECK(b.keyfile == "/etc/gw/key.pem");
  CHECK(b.tls13_only);
  CHECK_FALSE(b.insecure);
  const auto& d = c.bridges[1];  // the defaults
  CHECK_FALSE(d.cleansession);
  CHECK(d.keepalive_interval == 60);
  CHECK(d.restart_base == std::chrono::seconds(7));
  CHECK(d.restart_cap == std::chrono::seconds(7));
  CHECK_FALSE(d.mqtt5);
  CHECK(d.notifications);
  CHECK(d.try_private);
  CHECK_FALSE(d.tls());
  CHECK(d.topics[0].qos_level == mqttbroker::codec::qos::at_most_once);
  CHECK(c.max_queued_messages == std::optional<std::size_t>(50));

  struct expectation {
    const char* text;
    const char* message;
  };
  for (const expectation& e : {
           expectation{"address 10.0.0.1\n", "test.conf:1: 'address' belongs to a bridge: a 'connection NAME' line must come first"},
           expectation{"connection a\naddress h\ntopic # sideways\n", "test.conf:3: 'topic # sideways': the direction must be out, in or both, not 'sideways'"},
           expectation{"connection a\naddress h\ntopic # out 3\n", "test.conf:3: 'topic # out 3': the QoS must be 0, 1 or 2, not '3'"},
           expectation{"connection a\naddress h:99999\n", "test.conf:2: 'address' must be a whole number from 1 to 65535, not '99999'"},
           expectation{"connection a\naddress h\nbridge_protocol_version mqttv31\n", "test.conf:3: 'bridge_protocol_version' must be mqttv311 or mqttv50, not 'mqttv31'"},
           expectation{"connection a\naddress h\n", "test.conf:1: the connection 'a' needs an 'address' and at least one 'topic' line"},
           expectation{"connection a\naddress h\ntopic #\nconnection a\n", "test.conf:4: a connection named 'a' is already configured"},
           expectation{"connection a\naddress h\ntopic #\nstart_type lazy\n", "test.conf:4: 'start_type lazy' is not supported: bridges here start automatically"},
           expectation{"connection a\naddress h\ntopic #\nbridge_certfile /c.pem\nbridge_cafile /ca.pem\n", "test.conf:1: the connection 'a' has a bridge_certfile without a bridge_keyfile"},
           expectation{"connection a\naddress h\ntopic #\nbridge_insecure true\n", "test.conf:1: the connection 'a' sets TLS options without bridge_cafile or bridge_capath, which turn TLS on"},
           expectation{"connection a\naddress h\ntopic #\nbridge_tls_version tlsv1.1\n", "test.conf:4: 'bridge_tls_version' must be tlsv1.2 or tlsv1.3 (the lowest accepted), not 'tlsv1.1'"},
       }) {
    INFO(e.text);
    CHECK(refuse(e.text).message == e.message);
  }
}

TEST_CASE("config: values are checked: numbers, ranges, booleans, choices, missing and extra words", "[config]") {
  struct expectation {
    const char* text;
    config_errc ec;
    const char* message;
  };
  for (const expectation& e : {
           expectation{"max_inflight_messages ten\n", config_errc::invalid_value,
                       "test.conf:1: 'max_inflight_messages' must be a whole number from 0 to 65535, not 'ten'"},
           expectation{"max_inflight_messages 10abc\n", config_errc::invalid_value, "test.conf:1: 'max_inflight_messages'"},
           expectation{"max_inflight_messages 65536\n", config_errc::invalid_value, "test.conf:1: 'max_inflight_messages'"},
           expectation{"max_qos 3\n", config_errc::invalid_value, "test.conf:1: 'max_qos' must be a whole number from 0 to 2"},
           expectation{"listener 70000\n", config_errc::invalid_value, "test.conf:1: 'listener' must be a whole number"},
           expectation{"listener -1\n", config_errc::invalid_value, "test.conf:1: 'listener'"},
           expectation{"retain_available yes\n", config_errc::invalid_value,
                       "test.conf:1: 'retain_available' must be true or false, not 'yes'"},
           expectation{"listener 1\nprotocol mqtts\n", config_errc::invalid_value,
                       "test.conf:2: 'protocol' must be mqtt or websockets, not 'mqtts'"},
           expectation{"listener 1\ntls_version tlsv1.1\n", config_errc::invalid_value, "test.conf:2: 'tls_version' must be"},
           expectation{"max_keepalive\n", config_errc::missing_value, "test.conf:1: 'max_keepalive' needs a value"},
           expectation{"listener\n", config_errc::missing_value, "test.conf:1: 'listener' needs a value"},
           expectation{"listener 1\ncertfile\n", config_errc::missing_value, "test.conf:2: 'certfile' needs a value"},
           expectation{"pid_file\n", config_errc::missing_value, "test.conf:1: 'pid_file' needs a value"},
           expectation{"retain_available true false\n", config_errc::trailing_words,
                       "test.conf:1: 'retain_available' takes one value; 'false' follows it"},
           expectation{"listener 1883 127.0.0.1 extra\n", config_errc::trailing_words, "test.conf:1: 'listener' takes a port"},
       }) {
    INFO(e.text);
    const refusal r = refuse(e.text);
    CHECK(r.ec == e.ec);
    CHECK(r.message.rfind(e.message, 0) == 0);
  }
}

TEST_CASE("config: a listener's TLS lines must add up", "[config]") {
  SECTION("a file option given twice, as Mosquitto refuses it") {
    const refusal r = refuse("listener 8883\ncertfile /a\ncertfile /b\n");
    CHECK(r.ec == config_errc::duplicate_value);
    CHECK(r.message == "test.conf:3: 'certfile' is given twice for this listener");
  }
  SECTION("the same file for two listeners is fine") {
    CHECK(load("listener 1\ncertfile /a\nkeyfile /k\nlistener 2\ncertfile /a\nkeyfile /k\n").listeners.size() == 2);
  }
  SECTION("certfile without keyfile, named at the listener line, when the next listener starts") {
    const refusal r = refuse("listener 8883\ncertfile /a\nlistener 1883\n");
    CHECK(r.ec == config_errc::incomplete_listener);
    CHECK(r.message == "test.conf:1: the listener on port 8883 has a certfile without a keyfile: TLS needs both");
  }
  SECTION("keyfile without certfile at the end of the file") {
    const refusal r = refuse("listener 1883\nlistener 8883\nkeyfile /k\n");
    CHECK(r.message == "test.conf:2: the listener on port 8883 has a keyfile without a certfile: TLS needs both");
  }
  SECTION("a TLS option on a plain listener") {
    const refusal r = refuse("listener 1883\nrequire_certificate true\ncafile /ca\n");
    CHECK(r.ec == config_errc::incomplete_listener);
    CHECK(r.message ==
          "test.conf:1: the listener on port 1883 is not TLS (no certfile and keyfile), yet test.conf:2 "
          "('require_certificate') sets a TLS option");
  }
  SECTION("the same on the default listener") {
    const refusal r = refuse("cafile /ca\nlistener 1883\n");
    CHECK(r.message.rfind("test.conf:1: the listener on port 1883 is not TLS", 0) == 0);
  }
}

TEST_CASE("config: whitespace and comments", "[config]") {
  const config_settings c = load(
      "   # an indented comment\n"
      "\t\n"
      "listener  1883   # a comment after a value\r\n"
      "\tmax_connections\t7 # tabs separate too\n"
      "  listener 1884 127.0.0.1 # and after the address\n"
      "certfile   /path/with two spaces.pem   \n"
      "keyfile /k.pem\r\n"
      "max_inflight_messages 9 #\n");
  REQUIRE(c.listeners.size() == 2);
  CHECK(c.listeners[0].port == 1883);
  CHECK(c.listeners[0].max_connections == std::size_t{7});
  CHECK(c.listeners[1].address == "127.0.0.1");
  CHECK(c.listeners[1].certfile == "/path/with two spaces.pem");  // leading and trailing blanks go
  CHECK(c.listeners[1].keyfile == "/k.pem");
  CHECK(c.max_inflight_messages == std::uint16_t{9});
  CHECK(load("").listeners.empty());
  CHECK(load("listener 1883").listeners.size() == 1);  // no newline at the end
}

TEST_CASE("config: include_dir reads DIR/*.conf ordered by name ignoring case; errors name the included file", "[config]") {
  temp_dir d;
  d.write("conf.d/B.conf", "listener 2002\n");  // after a.conf: case is ignored (byte order would put it first)
  d.write("conf.d/a.conf", "listener 2001\n");
  d.write("conf.d/c.conf", "# only a comment\n\nlistener 2003\nmax_connections 3\n");
  d.write("conf.d/d.txt", "listener 9999\n");     // not .conf
  d.write("conf.d/.conf", "listener 9998\n");     // no name before .conf
  d.write("conf.d/sub.conf/x.conf", "listener 9997\n");  // a folder, not read
  const std::string main = d.write("main.conf", "listener 2000\ninclude_dir " + d.path("conf.d") + "\nlistener 2004\n");
  std::error_code ec;
  std::string message;
  const config_settings c = mqttbroker_server::read_config_file(main, ec, message);
  INFO(message);
  REQUIRE_FALSE(ec);
  REQUIRE(c.listeners.size() == 5);
  CHECK(c.listeners[0].port == 2000);
  CHECK(c.listeners[1].port == 2001);
  CHECK(c.listeners[2].port == 2002);
  CHECK(c.listeners[3].port == 2003);
  CHECK(c.listeners[3].max_connections == std::size_t{3});
  CHECK(c.listeners[3].origin == d.path("conf.d/c.conf") + ":3");
  CHECK(c.listeners[4].port == 2004);

  SECTION("an error in an included file names that file and its line") {
    d.write("conf.d/e.conf", "\nlistner 1\n");
    mqttbroker_server::read_config_file(main, ec, message);
    CHECK(ec == config_errc::unknown_option);
    CHECK(message == d.path("conf.d/e.conf") + ":2: unknown option 'listner'");
  }
  SECTION("a folder that cannot be read names the main file's line") {
    const std::string missing = d.write("missing.conf", "\ninclude_dir " + d.path("nowhere") + "\n");
    mqttbroker_server::read_config_file(missing, ec, message);
    CHECK(ec == config_errc::cannot_read);
    CHECK(message.rfind(missing + ":2: cannot read include_dir '" + d.path("nowhere") + "'", 0) == 0);
  }
  SECTION("include_dir in an included file is ignored with a warning, as Mosquitto ignores it") {
    d.write("conf.d/f.conf", "include_dir " + d.path("conf.d") + "\n");
    const config_settings again = mqttbroker_server::read_config_file(main, ec, message);
    REQUIRE_FALSE(ec);
    CHECK(again.listeners.size() == 5);
    REQUIRE(again.warnings.size() == 1);
    CHECK(again.warnings[0].rfind(d.path("conf.d/f.conf") + ":1: include_dir ignored", 0) == 0);
  }
  SECTION("the main file inside its own include_dir is not read twice") {
    const std::string inside = d.write("conf.d/main.conf", "include_dir " + d.path("conf.d") + "\n");
    const config_settings self = mqttbroker_server::read_config_file(inside, ec, message);
    REQUIRE_FALSE(ec);
    CHECK(self.listeners.size() == 3);
    REQUIRE(self.warnings.size() == 1);
    CHECK(self.warnings[0].find("it is the main configuration file") != std::string::npos);
  }
}

TEST_CASE("config: a file that cannot be opened is an error naming it", "[config]") {
  temp_dir d;
  std::error_code ec;
  std::string message;
  mqttbroker_server::read_config_file(d.path("absent.conf"), ec, message);
  CHECK(ec == config_errc::cannot_read);
  CHECK(message == d.path("absent.conf") + ": cannot open: No such file or directory");
  CHECK(ec.category().name() == std::string("mqttbroker.config"));
  mqttbroker_server::read_config_file(d.path(), ec, message);
  CHECK(ec == config_errc::cannot_read);
  CHECK(message == d.path() + ": cannot open: it is a folder");
}

TEST_CASE("config: the README's example file loads as the README says", "[config]") {
  std::ifstream in(MQTTBROKER_README);
  REQUIRE(in);
  std::string line, block;
  bool seen_heading = false, inside = false;
  while (std::getline(in, line)) {
    if (!seen_heading) {
      seen_heading = line == "### A Mosquitto configuration file";
    } else if (!inside) {
      inside = line == "```";
    } else if (line == "```") {
      break;
    } else {
      block += line + "\n";
    }
  }
  REQUIRE_FALSE(block.empty());
  const config_settings c = load(block);
  REQUIRE(c.listeners.size() == 3);
  CHECK(c.listeners[0].port == 1883);
  CHECK(c.listeners[0].max_connections == std::size_t{100});
  CHECK(c.listeners[1].tls());
  CHECK(c.listeners[1].crlfile == "/etc/mqtt/devices-ca.crl");
  CHECK(c.listeners[2].protocol == listener_protocol::websockets);
  CHECK(c.max_inflight_messages == std::uint16_t{40});
  CHECK(c.persistent_client_expiration == std::chrono::seconds(14 * 86400));
}

TEST_CASE("config: password_file and acl_file are the rest of the line, allow_anonymous a boolean; a later line wins",
          "[config]") {
  const config_settings c = load(
      "password_file /etc/mosquitto/pass words\n"
      "acl_file /etc/mosquitto/acl one\n"
      "allow_anonymous false\n"
      "password_file /etc/mosquitto/passwd # not a comment: part of the path, as in Mosquitto\n"
      "acl_file /etc/mosquitto/acl\n");
  CHECK(c.password_file == std::optional<std::string>("/etc/mosquitto/passwd # not a comment: part of the path, as in Mosquitto"));
  CHECK(c.acl_file == std::optional<std::string>("/etc/mosquitto/acl"));
  CHECK(refuse("acl_file\n").ec == config_errc::missing_value);
  CHECK(c.allow_anonymous == std::optional<bool>(false));
  CHECK_FALSE(load("max_qos 1\n").password_file);
  CHECK_FALSE(load("max_qos 1\n").allow_anonymous);
  CHECK(refuse("password_file\n").ec == config_errc::missing_value);
  CHECK(refuse("allow_anonymous perhaps\n").ec == config_errc::invalid_value);
}

TEST_CASE("config: the logging lines: log_dest and log_type add up, a file is the rest of the line, topic and dlt are refused",
          "[config]") {
  const config_settings c = load(
      "log_dest stderr\n"
      "log_dest file /var/log/mqtt broker.log\n"
      "log_dest syslog\n"
      "log_type error\n"
      "log_type information\n"
      "log_type subscribe\n"
      "log_timestamp true\n"
      "log_timestamp_format %Y-%m-%dT%H:%M:%S\n"
      "connection_messages false\n");
  CHECK(c.log_dest == std::vector<std::string>{"stderr", "file /var/log/mqtt broker.log", "syslog"});
  CHECK(c.log_type == std::vector<std::string>{"error", "information", "subscribe"});
  CHECK(c.log_timestamp == std::optional<bool>(true));
  CHECK(c.log_timestamp_format == std::optional<std::string>("%Y-%m-%dT%H:%M:%S"));
  CHECK(c.connection_messages == std::optional<bool>(false));
  CHECK(c.warnings.empty());
  CHECK(refuse("log_dest topic\n").ec == config_errc::not_supported);
  CHECK(refuse("log_dest dlt\n").ec == config_errc::not_supported);
  CHECK(refuse("log_dest printer\n").ec == config_errc::invalid_value);
  CHECK(refuse("log_dest file\n").ec == config_errc::missing_value);
  CHECK(refuse("log_type chatty\n").ec == config_errc::invalid_value);
  CHECK(refuse("connection_messages maybe\n").ec == config_errc::invalid_value);
}

TEST_CASE("config: the admission lines of this server's own are integers, checked", "[config]") {
  const config_settings c = load(
      "max_total_queued_bytes 67108864\n"
      "max_connections_per_address 50\n"
      "max_connection_rate_per_address 5\n"
      "connection_burst_per_address 20\n"
      "max_publish_rate 1000\n");
  CHECK(c.max_total_queued_bytes == std::optional<std::size_t>(67108864));
  CHECK(c.max_connections_per_address == std::optional<std::size_t>(50));
  CHECK(c.max_connection_rate_per_address == std::optional<std::uint32_t>(5));
  CHECK(c.connection_burst_per_address == std::optional<std::uint32_t>(20));
  CHECK(c.max_publish_rate == std::optional<std::uint32_t>(1000));
  CHECK(refuse("max_connections_per_address -1\n").ec == config_errc::invalid_value);
  CHECK(refuse("max_publish_rate lots\n").ec == config_errc::invalid_value);
}
