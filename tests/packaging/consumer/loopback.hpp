// What the consumer programs share: a broker on the program's io_context, an in-process
// subscriber to packaging/#, a raw TCP client of one of the broker's listeners and a deadline of
// ten seconds. The program adds its listeners, calls start(), drives the client (exchange(), or
// its own steps), hands whether the CONNACK it read accepted it to connack(), and calls io.run();
// finish() ends everything (the client, the deadline, the broker) once the CONNACK and the message
// both arrived, or at the first failure. The broker's
// policies are the defaults unless a program names others (the sqlite program's storage).
#ifndef MQTTBROKER_PACKAGING_CONSUMER_LOOPBACK_HPP
#define MQTTBROKER_PACKAGING_CONSUMER_LOOPBACK_HPP

#include <mqttbroker/mqttbroker.hpp>

#include <asio.hpp>

#include <chrono>
#include <cstddef>
#include <string>
#include <system_error>
#include <vector>

template <class Policies = mqttbroker::default_policies>
struct basic_loopback {
  asio::io_context io;
  mqttbroker::broker<Policies> broker{io};
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

  /// Connects the client to listener `index`, writes `request`, reads as many bytes as `expected`
  /// holds, and counts the client accepted when they are those.
  void exchange(std::size_t index, asio::const_buffer request, std::vector<unsigned char> expected) {
    client.async_connect(server(index), [this, request, expected = std::move(expected)](std::error_code ec) mutable {
      if (ec) return finish();
      asio::async_write(client, request, [this, expected = std::move(expected)](std::error_code wec, std::size_t) mutable {
        if (wec) return finish();
        reply_.assign(expected.size(), 0);
        asio::async_read(client, asio::buffer(reply_), [this, expected = std::move(expected)](std::error_code rec, std::size_t) {
          connack(!rec && reply_ == expected);
        });
      });
    });
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

 private:
  std::vector<unsigned char> reply_;  // what exchange() read
};

using loopback = basic_loopback<>;

#endif  // MQTTBROKER_PACKAGING_CONSUMER_LOOPBACK_HPP
