// What both consumer programs share: a broker on the program's io_context, an in-process
// subscriber to packaging/#, a raw TCP client of one of the broker's listeners and a deadline of
// ten seconds. The program adds its listeners, calls start(), drives the client, hands the CONNACK
// it read to connack(), and calls io.run(); finish() ends everything (the client, the deadline,
// the broker) once the CONNACK and the message both arrived, or at the first failure.
#ifndef MQTTBROKER_PACKAGING_CONSUMER_LOOPBACK_HPP
#define MQTTBROKER_PACKAGING_CONSUMER_LOOPBACK_HPP

#include <mqttbroker/mqttbroker.hpp>

#include <asio.hpp>

#include <chrono>
#include <cstddef>
#include <string>
#include <system_error>

struct loopback {
  asio::io_context io;
  mqttbroker::broker<> broker{io};
  asio::ip::tcp::socket client{io};
  asio::steady_timer deadline{io, std::chrono::seconds(10)};
  std::string received;  // what the subscriber got
  bool accepted = false;  // the CONNACK accepted the client
  bool finished = false;

  void start() {
    broker.subscribe("packaging/#", [this](const mqttbroker::message_ptr& m) {
      received.assign(m->payload());
      if (accepted) asio::post(io, [this] { finish(); });
    });
    broker.start();
    deadline.async_wait([this](std::error_code ec) {
      if (!ec) finish();
    });
  }

  /// Listener `index` on the loopback address.
  asio::ip::tcp::endpoint server(std::size_t index) const {
    return {asio::ip::make_address("127.0.0.1"), broker.local_port(index)};
  }

  void connack(bool accepting) {
    accepted = accepting;
    if (!accepted || !received.empty()) finish();
  }

  void finish() {
    if (finished) return;
    finished = true;
    deadline.cancel();
    std::error_code ignored;
    client.close(ignored);
    broker.async_stop([](std::error_code) {});
  }
};

#endif  // MQTTBROKER_PACKAGING_CONSUMER_LOOPBACK_HPP
