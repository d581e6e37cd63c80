#ifndef MQTTBROKER_TESTS_BLOCKING_CLIENT_HPP
#define MQTTBROKER_TESTS_BLOCKING_CLIENT_HPP

// A small synchronous MQTT client over TCP for tests: it encodes with the project's codec and
// reads with a deadline, so a test never waits forever.
#include <mqttbroker/codec.hpp>

#include <asio.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace test_support {

namespace codec = mqttbroker::codec;

/// A decoded packet that owns its bytes (the codec's views point into `*bytes`, which a move
/// leaves where it is).
struct owned_packet {
  std::unique_ptr<std::string> bytes;
  codec::packet packet;
};

class blocking_client {
 public:
  blocking_client(std::uint16_t port, codec::protocol_version v = codec::protocol_version::v3_1_1)
      : socket_(io_), version_(v),
        decoder_(codec::decoder_options{codec::role::client, codec::max_packet_size, v}) {
    socket_.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    socket_.set_option(asio::ip::tcp::no_delay(true));
  }

  template <class Packet>
  void send(const Packet& p) {
    std::string out;
    if (auto ec = codec::encode(p, version_, out)) throw std::runtime_error("encode: " + ec.message());
    asio::write(socket_, asio::buffer(out));
  }

  /// CONNECT and the CONNACK's return code. `properties` are 5.0's (codec::properties_builder::view()).
  std::uint8_t connect(const std::string& client_id, bool clean = true, std::uint16_t keep_alive = 60,
                       codec::properties_view properties = {}) {
    codec::connect c;
    c.version = version_;
    c.client_id = client_id;
    c.clean_start = clean;
    c.keep_alive = keep_alive;
    c.properties = properties;
    send(c);
    auto p = expect<codec::connack>();
    return p.code;
  }

  /// The next packet, or nothing when `timeout` passes first or the peer closed (then closed()).
  std::optional<owned_packet> read(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (ready_.empty()) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return std::nullopt;
      std::error_code ec;
      std::size_t n = 0;
      socket_.async_read_some(asio::buffer(buf_), [&](std::error_code e, std::size_t k) {
        ec = e;
        n = k;
      });
      io_.restart();
      io_.run_for(deadline - now);
      if (!io_.stopped()) {
        socket_.cancel();
        io_.restart();
        io_.run();
        if (n == 0) return std::nullopt;
      }
      if (ec && n == 0) {
        closed_ = true;  // end of stream or reset: told apart from a timeout
        return std::nullopt;
      }
      auto res = decoder_.feed(buf_.data(), n, [&](codec::packet& p) {
        // The views in `p` die with this call: keep an encoded copy and decode that instead.
        owned_packet op;
        op.bytes = std::make_unique<std::string>();
        codec::encode(p, version_, *op.bytes);
        codec::decode_packet(*op.bytes, version_, codec::role::client, op.packet);
        ready_.push_back(std::move(op));
      });
      if (res.ec) throw std::runtime_error("decode: " + res.ec.message());
    }
    owned_packet p = std::move(ready_.front());
    ready_.pop_front();
    return p;
  }

  template <class Packet>
  Packet expect(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto p = read(timeout);
    if (!p) throw std::runtime_error("timed out waiting for a packet");
    if (!std::holds_alternative<Packet>(p->packet)) throw std::runtime_error("unexpected packet type");
    last_ = std::move(*p);
    return std::get<Packet>(last_.packet);
  }

  bool closed_by_peer(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      std::error_code ec;
      bool done = false;
      socket_.async_read_some(asio::buffer(buf_), [&](std::error_code e, std::size_t) {
        ec = e;
        done = true;
      });
      io_.restart();
      io_.run_for(deadline - std::chrono::steady_clock::now());
      if (!done) {
        socket_.cancel();
        io_.restart();
        io_.run();
        return false;
      }
      if (ec) return true;
    }
  }

  /// Whether a read found the connection closed by the peer.
  bool closed() const { return closed_; }

  asio::ip::tcp::socket& socket() { return socket_; }

 private:
  asio::io_context io_;
  asio::ip::tcp::socket socket_;
  codec::protocol_version version_;
  codec::decoder decoder_;
  std::array<std::uint8_t, 65536> buf_{};
  std::deque<owned_packet> ready_;
  owned_packet last_;
  bool closed_ = false;
};

}  // namespace test_support

#endif  // MQTTBROKER_TESTS_BLOCKING_CLIENT_HPP
