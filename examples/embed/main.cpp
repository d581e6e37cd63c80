// A host program that runs the broker beside its own work on one io_context: it publishes a
// heartbeat every second, answers "ping" messages from socket clients in-process, and keeps
// doing its own timer work. Run: mqttbroker_embed --port 1883, then
// mosquitto_sub -t 'host/#' -v, and mosquitto_pub -t cmd/ping -m hi
#include <mqttbroker/mqttbroker.hpp>

#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <fmt/core.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <functional>
#include <string>

int main(int argc, char** argv) {
  // The arguments are parsed before anything starts, so --help and --version only print.
  CLI::App app{"mqttbroker_embed: a host program running the broker beside its own work"};
  std::uint16_t port = 1883;
  app.add_option("--port", port, "MQTT port on 127.0.0.1 (0: any free port)")->capture_default_str();
  app.set_version_flag("--version", fmt::format("mqttbroker_embed {}.{}.{}", MQTTBROKER_VERSION_MAJOR,
                                                MQTTBROKER_VERSION_MINOR, MQTTBROKER_VERSION_PATCH));
  CLI11_PARSE(app, argc, argv);

  asio::io_context io;  // the host's own, run by the host's thread

  mqttbroker::broker<> broker(io);
  broker.listen({"127.0.0.1", port});

  // In-process subscriber: sees what socket clients publish, and answers in-process.
  broker.subscribe("cmd/#", [&](const mqttbroker::message_ptr& m) {
    fmt::print("host got {} '{}'\n", m->topic(), m->payload());
    broker.publish("host/reply", fmt::format("pong: {}", m->payload()), mqttbroker::codec::qos::at_least_once);
  });
  broker.start();
  fmt::print("embedded broker on 127.0.0.1:{}\n", broker.local_port());

  // The host's own work, on the same io_context.
  int beats = 0;
  asio::steady_timer heartbeat(io);
  std::function<void()> beat = [&] {
    heartbeat.expires_after(std::chrono::seconds(1));
    heartbeat.async_wait([&](std::error_code ec) {
      if (ec) return;
      broker.publish("host/heartbeat", std::to_string(++beats), mqttbroker::codec::qos::at_most_once, true);
      beat();
    });
  };
  beat();

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](std::error_code, int) {
    heartbeat.cancel();
    broker.async_stop([&](std::error_code) { io.stop(); });
  });
  io.run();
}
