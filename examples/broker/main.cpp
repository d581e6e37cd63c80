// The standalone server. Until the broker core lands (issue 4) it accepts MQTT connections,
// decodes every packet with the codec, answers CONNECT and PINGREQ, and closes a connection that
// sends anything malformed with the reaction the specification requires.
#include <mqttbroker/mqttbroker.hpp>

#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <fmt/core.h>

#include <array>
#include <csignal>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace codec = mqttbroker::codec;

namespace {

int log_level = 2;  // 0 error, 1 warning, 2 info, 3 debug

template <class... Args>
void log(int level, fmt::format_string<Args...> f, Args&&... args) {
  if (level <= log_level) fmt::print(stderr, "{}\n", fmt::format(f, std::forward<Args>(args)...));
}

class connection : public std::enable_shared_from_this<connection> {
 public:
  explicit connection(asio::ip::tcp::socket s) : socket_(std::move(s)) {}

  void start() { read(); }

 private:
  void read() {
    socket_.async_read_some(asio::buffer(buf_), [self = shared_from_this()](std::error_code ec, std::size_t n) {
      if (ec) return;
      self->on_bytes(n);
    });
  }

  void on_bytes(std::size_t n) {
    std::vector<std::uint8_t> out;
    bool close = false;
    auto res = decoder_.feed(buf_.data(), n, [&](codec::packet& p) {
      const auto v = decoder_.version().value_or(codec::protocol_version::v3_1_1);
      if (auto* c = std::get_if<codec::connect>(&p)) {
        log(2, "CONNECT client_id='{}' version={} keep_alive={}", c->client_id, static_cast<int>(c->version),
            c->keep_alive);
        codec::encode(codec::connack{}, v, out);
      } else if (std::holds_alternative<codec::pingreq>(p)) {
        codec::encode(codec::pingresp{}, v, out);
      } else if (std::holds_alternative<codec::disconnect>(p)) {
        close = true;
        return false;
      } else {
        log(3, "{} received", codec::to_string(codec::type_of(p)));
      }
      return true;
    });
    if (res.ec) {
      log(1, "closing connection: {}", res.ec.message());
      reply_to_error(res.ec, out);
      close = true;
    }
    write(std::move(out), close);
  }

  // 5.0 gets a CONNACK or DISCONNECT with the reason code; 3.1.1 a CONNACK return code where it
  // has one, else a plain close.
  void reply_to_error(const std::error_code& ec, std::vector<std::uint8_t>& out) {
    const auto v = decoder_.version();
    if (!v) {
      if (auto rc = mqttbroker::to_connack_return_code(ec)) {
        codec::connack ack;
        ack.code = static_cast<std::uint8_t>(*rc);
        codec::encode(ack, codec::protocol_version::v3_1_1, out);
      }
    } else if (*v == codec::protocol_version::v5) {
      codec::disconnect d;
      d.reason = mqttbroker::to_reason_code(ec);
      codec::encode(d, *v, out);
    }
  }

  void write(std::vector<std::uint8_t> out, bool close) {
    if (out.empty()) {
      if (close) return;  // dropping the last reference closes the socket
      read();
      return;
    }
    auto data = std::make_shared<std::vector<std::uint8_t>>(std::move(out));
    asio::async_write(socket_, asio::buffer(*data),
                      [self = shared_from_this(), data, close](std::error_code ec, std::size_t) {
                        if (!ec && !close) self->read();
                      });
  }

  asio::ip::tcp::socket socket_;
  codec::decoder decoder_;
  std::array<std::uint8_t, 4096> buf_{};
};

void accept(asio::ip::tcp::acceptor& acceptor) {
  acceptor.async_accept([&acceptor](std::error_code ec, asio::ip::tcp::socket s) {
    if (ec) return;
    std::make_shared<connection>(std::move(s))->start();
    accept(acceptor);
  });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mqttbroker: an MQTT 3.1.1/5.0 broker"};
  std::string bind = "0.0.0.0";
  std::uint16_t port = 1883;
  app.add_option("--bind", bind, "address to listen on")->capture_default_str();
  app.add_option("--port", port, "TCP port")->capture_default_str();
  app.add_option("--log-level", log_level, "0 error, 1 warning, 2 info, 3 debug")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    asio::io_context io;
    asio::ip::tcp::endpoint ep(asio::ip::make_address(bind), port);
    asio::ip::tcp::acceptor acceptor(io, ep);
    accept(acceptor);
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](std::error_code, int) {
      log(2, "stopping");
      acceptor.close();
      io.stop();
    });
    log(2, "mqttbroker listening on {}:{}", bind, acceptor.local_endpoint().port());
    io.run();
  } catch (const std::exception& e) {
    log(0, "error: {}", e.what());
    return 1;
  }
  return 0;
}
