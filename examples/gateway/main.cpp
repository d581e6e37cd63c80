// A small protocol gateway: UDP datagrams "topic payload" become MQTT publishes, and MQTT
// messages on --forward filters go back out as UDP datagrams "topic payload" to --peer.
// The intercept hook is the transform point: here it drops client messages to gateway/internal/.
#include <mqttbroker/mqttbroker.hpp>

#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <fmt/core.h>

#include <array>
#include <csignal>
#include <string>
#include <vector>

namespace {

/// Drops messages whose topic the gateway reserves for itself; everything else passes.
struct gateway_hooks {
  void intercept(std::string_view client_id, mqttbroker::message_ptr& m) {
    if (!client_id.empty() && m->topic().rfind("gateway/internal/", 0) == 0) m = mqttbroker::message_ptr();
  }
};
struct policies : mqttbroker::default_policies {
  using hooks = gateway_hooks;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"UDP <-> MQTT gateway on an embedded broker"};
  std::uint16_t mqtt_port = 1883, udp_port = 5683;
  std::string peer = "127.0.0.1:5684";
  std::vector<std::string> forward{"to-udp/#"};
  app.add_option("--mqtt-port", mqtt_port, "MQTT listener port")->capture_default_str();
  app.add_option("--udp-port", udp_port, "UDP port for incoming lines")->capture_default_str();
  app.add_option("--peer", peer, "host:port that forwarded messages are sent to")->capture_default_str();
  app.add_option("--forward", forward, "MQTT filters forwarded to the peer")->capture_default_str();
  app.set_version_flag("--version", fmt::format("mqttbroker_gateway {}.{}.{}", MQTTBROKER_VERSION_MAJOR,
                                                MQTTBROKER_VERSION_MINOR, MQTTBROKER_VERSION_PATCH));
  CLI11_PARSE(app, argc, argv);

  asio::io_context io;
  mqttbroker::broker<policies> broker(io);
  broker.listen({"127.0.0.1", mqtt_port});

  asio::ip::udp::socket udp(io, asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), udp_port));
  const auto colon = peer.rfind(':');
  const asio::ip::udp::endpoint peer_ep(asio::ip::make_address(peer.substr(0, colon)),
                                        static_cast<std::uint16_t>(std::stoi(peer.substr(colon + 1))));

  for (const auto& f : forward) {
    broker.subscribe(f, [&](const mqttbroker::message_ptr& m) {
      auto line = std::make_shared<std::string>(fmt::format("{} {}", m->topic(), m->payload()));
      udp.async_send_to(asio::buffer(*line), peer_ep, [line](std::error_code, std::size_t) {});
    });
  }

  std::array<char, 65536> buf{};
  asio::ip::udp::endpoint from;
  std::function<void()> receive = [&] {
    udp.async_receive_from(asio::buffer(buf), from, [&](std::error_code ec, std::size_t n) {
      if (ec) return;
      const std::string_view line(buf.data(), n);
      const auto space = line.find(' ');
      const auto topic = line.substr(0, space);
      const auto payload = space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
      std::error_code perr;
      broker.publish(topic, payload, mqttbroker::codec::qos::at_least_once, false, &perr);
      if (perr) fmt::print(stderr, "refused line for topic '{}': {}\n", topic, perr.message());
      receive();
    });
  };
  receive();
  broker.start();
  fmt::print("gateway: MQTT on 127.0.0.1:{}, UDP in on {}, out to {}\n", broker.local_port(), udp_port, peer);

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](std::error_code, int) {
    udp.close();
    broker.async_stop([&](std::error_code) { io.stop(); });
  });
  io.run();
}
