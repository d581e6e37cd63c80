#ifndef MQTTBROKER_METRICS_HTTP_HPP
#define MQTTBROKER_METRICS_HTTP_HPP

// A scrape endpoint: answers `GET /metrics` over HTTP/1.1 with what the host's callback returns
// (write_prometheus() and the host's own lines, say), on a strand of the host's executor (so the
// host may run its io_context on several threads). Deliberately small:
// one request per connection, which a Prometheus scrape is; anything else gets 400, 404 or 405.
// Bounded: requests of at most 8 KiB that arrive within 5 s, at most 16 connections at once.

#include <mqttbroker/config.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/dispatch.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/streambuf.hpp>
#include <asio/write.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

MQTTBROKER_BEGIN_NAMESPACE
namespace metrics {

class http_endpoint {
 public:
  /// The body of a scrape, made on the endpoint's strand for each GET /metrics.
  using body_source = std::function<std::string()>;

  static constexpr std::size_t max_request = 8 * 1024;
  static constexpr std::chrono::seconds request_timeout{5};
  static constexpr int max_open = 16;

  /// Listens on `at` (port 0: any); throws std::system_error when it cannot.
  http_endpoint(asio::any_io_executor ex, const asio::ip::tcp::endpoint& at, body_source body)
      : s_(std::make_shared<state>(std::move(ex), std::move(body))) {
    s_->acceptor.open(at.protocol());
    s_->acceptor.set_option(asio::socket_base::reuse_address(true));
    s_->acceptor.bind(at);
    s_->acceptor.listen();
    accept(s_);
  }
  http_endpoint(const http_endpoint&) = delete;
  http_endpoint& operator=(const http_endpoint&) = delete;
  ~http_endpoint() { close(); }

  std::uint16_t port() const {
    std::error_code ec;
    return s_->acceptor.local_endpoint(ec).port();
  }
  /// Stops accepting, from any thread; a request still being read is answered 503, without
  /// calling the body source again (so what it reads may go once this returns).
  void close() {
    s_->closed.store(true);
    // The acceptor belongs to the strand: its handlers may be running on another thread now.
    asio::dispatch(s_->ex, [s = s_] {
      std::error_code ignored;
      s->acceptor.close(ignored);
    });
  }
  /// Scrapes answered (200) so far.
  std::uint64_t scrapes() const noexcept { return s_->scrapes.load(); }

 private:
  struct state {
    state(const asio::any_io_executor& e, body_source b)
        : ex(asio::make_strand(e)), acceptor(ex), body(std::move(b)) {}
    asio::strand<asio::any_io_executor> ex;  // every handler of the endpoint runs here
    asio::ip::tcp::acceptor acceptor;
    body_source body;
    int open = 0;  // on the strand
    std::atomic<bool> closed{false};
    std::atomic<std::uint64_t> scrapes{0};
  };

  struct exchange {
    exchange(asio::ip::tcp::socket sock, const asio::strand<asio::any_io_executor>& ex)
        : socket(std::move(sock)), timer(ex), request(max_request) {}
    asio::ip::tcp::socket socket;
    asio::steady_timer timer;
    asio::streambuf request;
    std::string response;
  };

  static void accept(const std::shared_ptr<state>& s) {
    s->acceptor.async_accept(asio::any_io_executor(s->ex), [s](std::error_code ec, asio::ip::tcp::socket sock) {
      if (ec) {
        if (s->acceptor.is_open()) accept(s);
        return;
      }
      if (s->open < max_open) serve(s, std::make_shared<exchange>(std::move(sock), s->ex));
      accept(s);
    });
  }

  static void serve(const std::shared_ptr<state>& s, const std::shared_ptr<exchange>& x) {
    ++s->open;
    x->timer.expires_after(request_timeout);
    x->timer.async_wait([x](std::error_code ec) {
      if (ec) return;
      std::error_code ignored;
      x->socket.close(ignored);
    });
    asio::async_read_until(x->socket, x->request, "\r\n\r\n", [s, x](std::error_code ec, std::size_t) {
      if (ec) return done(s, x);
      x->response = answer(*s, std::string_view(static_cast<const char*>(x->request.data().data()), x->request.size()));
      asio::async_write(x->socket, asio::buffer(x->response), [s, x](std::error_code, std::size_t) { done(s, x); });
    });
  }

  static void done(const std::shared_ptr<state>& s, const std::shared_ptr<exchange>& x) {
    --s->open;
    x->timer.cancel();
    std::error_code ignored;
    x->socket.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    x->socket.close(ignored);
  }

  static std::string reply(std::string_view status, std::string_view type, std::string_view body, bool head = false,
                           std::string_view extra_header = {}) {
    std::string r;
    r.reserve(body.size() + 160);
    r.append("HTTP/1.1 ").append(status).append("\r\nContent-Type: ").append(type);
    if (!extra_header.empty()) r.append("\r\n").append(extra_header);
    r.append("\r\nContent-Length: ").append(std::to_string(body.size())).append("\r\nConnection: close\r\n\r\n");
    if (!head) r.append(body);
    return r;
  }

  /// The answer to a request's head (request line and headers).
  static std::string answer(state& s, std::string_view head) {
    const std::size_t line_end = head.find("\r\n");
    const std::string_view line = head.substr(0, line_end);
    const std::size_t sp1 = line.find(' ');
    const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.substr(sp2 + 1).rfind("HTTP/1.", 0) != 0)
      return reply("400 Bad Request", "text/plain", "bad request\n");
    const std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    target = target.substr(0, target.find('?'));  // scrapers may add parameters; none is used
    if (target != "/metrics") return reply("404 Not Found", "text/plain", "only /metrics is served here\n");
    if (method != "GET" && method != "HEAD")
      return reply("405 Method Not Allowed", "text/plain", "GET only\n", false, "Allow: GET, HEAD");
    if (s.closed.load()) return reply("503 Service Unavailable", "text/plain", "stopping\n");
    ++s.scrapes;
    return reply("200 OK", "text/plain; version=0.0.4; charset=utf-8", s.body(), method == "HEAD");
  }

  std::shared_ptr<state> s_;
};

}  // namespace metrics
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_METRICS_HTTP_HPP
