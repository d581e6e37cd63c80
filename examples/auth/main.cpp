// Authentication and authorization through the hooks policy. Users are checked by a "directory"
// that answers later on a thread of its own, as a database or a remote identity service would, so
// the broker's thread never waits; each user may publish and subscribe only under its own topics.
// Run: mqttbroker_auth --port 1883, then
//   mosquitto_sub -u dashboard -P dashboard-pw -t 'sensors/#' -v
//   mosquitto_pub -u sensor-1 -P sensor-1-pw -t sensors/sensor-1/temp -m 21.5   (delivered)
//   mosquitto_pub -u sensor-1 -P sensor-1-pw -t sensors/sensor-2/temp -m 99     (refused)
//   mosquitto_pub -u sensor-1 -P wrong -t sensors/sensor-1/temp -m 0             (bad credentials)
// The passwords are in plain text to keep the example short; a real directory keeps salted hashes.
#include <mqttbroker/mqttbroker.hpp>

#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <fmt/core.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

namespace {

namespace hooks = mqttbroker::hooks;

/// The users, on a thread pool of their own: lookups answer through the auth_reply, from there.
class directory {
 public:
  directory() : users_{{"sensor-1", "sensor-1-pw"}, {"sensor-2", "sensor-2-pw"}, {"dashboard", "dashboard-pw"}} {}

  void check(std::optional<std::string> user, std::optional<std::string> password, hooks::auth_reply reply) {
    asio::post(pool_, [this, user = std::move(user), password = std::move(password), reply = std::move(reply)]() mutable {
      // A remote lookup takes a while; the broker serves everyone else meanwhile.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (!user) return reply(hooks::auth_result::not_authorized);  // anonymous clients are not let in
      const auto it = users_.find(*user);
      const bool ok = it != users_.end() && password && *password == it->second;
      reply(ok ? hooks::auth_result::accept : hooks::auth_result::bad_credentials);
    });
  }
  void stop() { pool_.join(); }

 private:
  const std::map<std::string, std::string, std::less<>> users_;  // read-only once built: no lock
  asio::thread_pool pool_{1};
};

/// The hooks policy: only the members it defines are called; the others cost nothing.
struct access_hooks {
  directory* users = nullptr;

  // Answers later: the connect_info's views live only for this call, so copy what the lookup needs.
  void authenticate(const hooks::connect_info& c, hooks::auth_reply reply) {
    users->check(c.username ? std::optional<std::string>(*c.username) : std::nullopt,
                 c.password ? std::optional<std::string>(*c.password) : std::nullopt, std::move(reply));
  }

  // sensor-N publishes under sensors/sensor-N/ only; the dashboard publishes nothing.
  bool authorize_publish(const hooks::client_info& c, const mqttbroker::message& m) {
    return c.username && c.username->rfind("sensor-", 0) == 0 && under(m.topic(), "sensors/" + std::string(*c.username) + "/");
  }
  // The dashboard reads every sensor; a sensor reads only its own commands.
  bool authorize_subscribe(const hooks::client_info& c, std::string_view filter, mqttbroker::codec::qos) {
    if (c.username && *c.username == "dashboard") return under(filter, "sensors/");
    return c.username && under(filter, "commands/" + std::string(*c.username) + "/");
  }

  void on_connect(const hooks::client_info& c) {
    fmt::print("{} connected as {} from {}:{} on listener {} ({})\n", c.client_id, c.username.value_or("-"),
               c.peer_address, c.peer_port, c.listener ? c.listener->index : 0, c.listener ? c.listener->transport : "");
  }
  void on_connect_refused(const hooks::connect_info& c, mqttbroker::reason_code why) {
    fmt::print("refused {} (user {}) from {}: {}\n", c.client_id, c.username.value_or("-"), c.peer_address,
               mqttbroker::to_string(why));
  }

  static bool under(std::string_view topic, std::string_view prefix) { return topic.substr(0, prefix.size()) == prefix; }
};

struct access_policies : mqttbroker::default_policies {
  using hooks = access_hooks;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mqttbroker_auth: a broker whose users are checked by an asynchronous directory"};
  std::uint16_t port = 1883;
  app.add_option("--port", port, "MQTT port on 127.0.0.1 (0: any free port)")->capture_default_str();
  app.set_version_flag("--version", fmt::format("mqttbroker_auth {}.{}.{}", MQTTBROKER_VERSION_MAJOR,
                                                MQTTBROKER_VERSION_MINOR, MQTTBROKER_VERSION_PATCH));
  CLI11_PARSE(app, argc, argv);

  directory users;  // outlives the broker: every lookup answers before the broker goes
  asio::io_context io;
  mqttbroker::broker<access_policies> broker(io, {}, access_hooks{&users});
  broker.listen({"127.0.0.1", port});
  broker.start();
  fmt::print("broker with access control on 127.0.0.1:{}\n", broker.local_port());

  // Every auth_reply must be answered or dropped before the broker goes: the directory finishes its
  // lookups once the broker has stopped, and io.run() returns when their answers have been handled.
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](std::error_code, int) { broker.async_stop([&](std::error_code) { users.stop(); }); });
  io.run();
}
