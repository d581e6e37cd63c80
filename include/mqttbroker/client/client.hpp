#ifndef MQTTBROKER_CLIENT_CLIENT_HPP
#define MQTTBROKER_CLIENT_CLIENT_HPP

// An MQTT client on the host's Asio executor: client::session (the protocol, without I/O) over a
// TCP connection, with keep-alive, and reconnection to a list of addresses tried in turn with
// exponential backoff and jitter. Messages published while the server is unreachable wait in the
// session's bounded queue and go out after the reconnect; a persistent session (clean_start false)
// loses no QoS 1 or 2 message across outages.
//
// The handler gets the session's events (client/session.hpp) but on_connack, and these:
//   void on_connected(const codec::connack&)   a CONNACK that accepted the connection
//   void on_refused(const codec::connack&)     a CONNACK that refused it (a retry follows)
//   void on_connection_lost(std::error_code)   refused, failed or closed; a reconnect follows
//                                              unless stop() was called
// client::callbacks is a handler of std::function members for hosts that prefer lambdas.
//
// The connection is the Connector's: tcp_connector (here), tls_connector (client/tls.hpp, with
// OpenSSL) or another. A Connector has stream_type, make_stream(executor), async_connect(stream
// (a shared_ptr, kept until the attempt ends), address, void(std::error_code) handler) and
// close(stream).

#include <mqttbroker/client/session.hpp>
#include <mqttbroker/config.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/connect.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace client {

/// A server to connect to.
struct address {
  std::string host;
  std::uint16_t port = 1883;
};

struct client_options {
  session_options session;
  std::vector<address> addresses;  // tried in turn, one per attempt
  /// Backoff between attempts: starts at reconnect_min, doubles up to reconnect_max, each wait
  /// drawn uniformly from its upper half (jitter), so bridges restarted together spread out.
  std::chrono::milliseconds reconnect_min{500};
  std::chrono::milliseconds reconnect_max{30000};
  bool reconnect = true;
  std::chrono::milliseconds connect_timeout{10000};  // TCP connect and CONNACK
};

/// A handler of std::function members; empty members are skipped.
struct callbacks {
  std::function<void(const codec::connack&)> connected;
  std::function<void(std::error_code)> connection_lost;
  std::function<void(const codec::publish&)> message;
  std::function<void(std::uint64_t, reason_code)> published;
  std::function<void(const codec::suback&)> subscribed;
  std::function<void(const codec::unsuback&)> unsubscribed;
  std::function<void(const codec::connack&)> refused;  // a CONNACK that refused

  void on_connected(const codec::connack& c) { if (connected) connected(c); }
  void on_connection_lost(std::error_code ec) { if (connection_lost) connection_lost(ec); }
  void on_message(const codec::publish& p) { if (message) message(p); }
  void on_published(std::uint64_t t, reason_code r) { if (published) published(t, r); }
  void on_suback(const codec::suback& s) { if (subscribed) subscribed(s); }
  void on_unsuback(const codec::unsuback& u) { if (unsubscribed) unsubscribed(u); }
  void on_refused(const codec::connack& c) { if (refused) refused(c); }
  void on_disconnect(const codec::disconnect&) {}
};

namespace detail {
/// Resolves `a` and connects `socket` (the lowest layer of `owner`, which the operation keeps
/// alive) to the first address that answers, with TCP_NODELAY; then `h(error_code)`.
template <class Stream, class Handler>
void tcp_dial(const std::shared_ptr<Stream>& owner, asio::ip::tcp::socket& socket, const address& a, Handler&& h) {
  auto resolver = std::make_shared<asio::ip::tcp::resolver>(socket.get_executor());
  resolver->async_resolve(
      a.host, std::to_string(a.port),
      [owner, &socket, resolver, h = std::forward<Handler>(h)](std::error_code ec,
                                                               asio::ip::tcp::resolver::results_type r) mutable {
        if (ec) return h(ec);
        asio::async_connect(socket, r, [owner, &socket, h = std::move(h)](std::error_code e, const auto&) mutable {
          if (!e) {
            std::error_code ignored;
            socket.set_option(asio::ip::tcp::no_delay(true), ignored);
          }
          h(e);
        });
      });
}
}  // namespace detail

/// Plain TCP.
struct tcp_connector {
  using stream_type = asio::ip::tcp::socket;
  stream_type make_stream(const asio::any_io_executor& ex) const { return stream_type(ex); }
  template <class Handler>
  void async_connect(const std::shared_ptr<stream_type>& s, const address& a, Handler&& h) const {
    detail::tcp_dial(s, *s, a, std::forward<Handler>(h));
  }
  static void close(stream_type& s) noexcept {
    std::error_code ignored;
    s.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    s.close(ignored);
  }
};

template <class Handler = callbacks, class Connector = tcp_connector>
class client {
 public:
  using clock = std::chrono::steady_clock;

  client(const asio::any_io_executor& ex, client_options o, Handler h, Connector c = Connector())
      : s_(std::make_shared<state>(ex, std::move(o), std::move(h), std::move(c))) {
    s_->self = s_;
  }
  client(const client&) = delete;
  client& operator=(const client&) = delete;
  ~client() { stop(); }

  /// Connects (and reconnects after each loss, as the options say). Call on the executor.
  void start() {
    s_->stopped = false;
    s_->attempt_now();
  }
  /// Sends DISCONNECT when connected, closes, stops reconnecting. Call on the executor.
  void stop() {
    if (s_->stopped) return;
    s_->stopped = true;
    s_->timer.cancel();
    s_->reconnect_timer.cancel();
    if (s_->sess.state() == session_state::connected) {
      s_->sess.disconnect();
      s_->flush();  // closes once written
    } else {
      s_->close();
    }
  }

  /// Queues a message (see session::publish); sent at once when connected. 0: queue full.
  std::uint64_t publish(message_ptr m, codec::qos q, bool retain) {
    const std::uint64_t t = s_->sess.publish(std::move(m), q, retain);
    s_->flush();
    return t;
  }
  std::uint64_t publish(std::string_view topic, std::string_view payload, codec::qos q, bool retain = false,
                        std::string_view properties = {}) {
    return publish(message::make(topic, payload, q, retain, properties), q, retain);
  }
  /// Subscribes now if connected, and again after every reconnect whose server kept no session:
  /// the filters stand until unsubscribe(). Returns the SUBSCRIBE's packet id, 0 when not sent now.
  std::uint16_t subscribe(const std::vector<codec::subscribe_entry>& entries, codec::properties_view props = {}) {
    for (const codec::subscribe_entry& e : entries) {
      auto it = std::find_if(s_->standing.begin(), s_->standing.end(),
                             [&](const standing_filter& f) { return f.filter == e.filter; });
      if (it == s_->standing.end()) {
        s_->standing.push_back(standing_filter{std::string(e.filter), e.options});
      } else {
        it->options = e.options;
      }
    }
    const std::uint16_t id = s_->sess.subscribe(entries, props);
    s_->flush();
    return id;
  }
  std::uint16_t subscribe(std::string_view filter, codec::qos q) {
    codec::subscribe_entry e;
    e.filter = filter;
    e.options.max_qos = q;
    return subscribe(std::vector<codec::subscribe_entry>{e});
  }
  std::uint16_t unsubscribe(const std::vector<std::string_view>& filters) {
    for (const std::string_view f : filters)
      s_->standing.erase(std::remove_if(s_->standing.begin(), s_->standing.end(),
                                        [&](const standing_filter& x) { return x.filter == f; }),
                         s_->standing.end());
    const std::uint16_t id = s_->sess.unsubscribe(filters);
    s_->flush();
    return id;
  }

  /// With session_options::deferred_acks: the ticket of the message being reported to
  /// on_message(), and its acknowledgement, given when the host has taken it (see session).
  std::uint64_t delivery_ticket() const noexcept { return s_->sess.delivery_ticket(); }
  void acknowledge(std::uint64_t ticket) {
    s_->sess.acknowledge(ticket);
    s_->flush();
  }

  bool connected() const noexcept { return s_->sess.state() == session_state::connected; }
  const session_stats& stats() const noexcept { return s_->sess.stats(); }
  std::size_t queued() const noexcept { return s_->sess.queued(); }
  std::size_t inflight() const noexcept { return s_->sess.inflight(); }
  /// Connection attempts made, and the address the last one went to.
  std::uint64_t attempts() const noexcept { return s_->attempts; }
  Handler& handler() noexcept { return s_->user; }
  client_options& options() noexcept { return s_->opts; }

 private:
  struct state;
  struct standing_filter {
    std::string filter;
    codec::subscribe_options options;
  };

  // The session's handler: the host's, plus what the driver must know.
  struct relay {
    state* s;
    void on_connack(const codec::connack& c) {
      if (c.code == 0) {
        s->backoff = s->opts.reconnect_min;
        if (!c.session_present && !s->standing.empty()) {
          std::vector<codec::subscribe_entry> all;
          all.reserve(s->standing.size());
          for (const standing_filter& f : s->standing) all.push_back(codec::subscribe_entry{f.filter, f.options});
          s->sess.subscribe(all);
        }
        s->user.on_connected(c);
      } else {
        s->user.on_refused(c);
      }
    }
    void on_message(const codec::publish& p) { s->user.on_message(p); }
    void on_published(std::uint64_t t, reason_code r) { s->user.on_published(t, r); }
    void on_suback(const codec::suback& a) { s->user.on_suback(a); }
    void on_unsuback(const codec::unsuback& a) { s->user.on_unsuback(a); }
    void on_disconnect(const codec::disconnect& d) { s->user.on_disconnect(d); }
  };

  struct state {
    using stream_type = typename Connector::stream_type;

    state(const asio::any_io_executor& ex, client_options o, Handler h, Connector c)
        : opts(std::move(o)),
          user(std::move(h)),
          sess(opts.session, relay{this}),
          connector(std::move(c)),
          executor(ex),
          timer(ex),
          reconnect_timer(ex),
          backoff(opts.reconnect_min),
          rng(std::random_device{}()) {}

    client_options opts;
    Handler user;
    session<relay> sess;
    Connector connector;
    asio::any_io_executor executor;
    // A new one for each attempt (a TLS stream is not reusable); operations on it keep it alive,
    // so a late completion of an attempt given up finds its own stream, not the next one.
    std::shared_ptr<stream_type> stream;
    asio::steady_timer timer;            // keep-alive and connect timeout
    asio::steady_timer reconnect_timer;  // backoff
    std::weak_ptr<state> self;
    std::vector<standing_filter> standing;  // what subscribe() asked for, sent again to a new session
    std::string writing;  // the bytes of the write under way
    std::vector<std::uint8_t> reading = std::vector<std::uint8_t>(16 * 1024);
    std::chrono::milliseconds backoff;
    std::minstd_rand rng;
    std::uint64_t attempts = 0;
    std::uint64_t generation = 0;  // one per connection: completions of an older one are ignored
    std::size_t next_address = 0;
    bool stopped = true;
    bool open = false;
    bool write_pending = false;

    void attempt_now() {
      if (stopped || opts.addresses.empty()) return;
      const address& a = opts.addresses[next_address % opts.addresses.size()];
      ++next_address;
      ++attempts;
      const std::uint64_t gen = ++generation;
      auto keep = self.lock();
      stream = std::make_shared<stream_type>(connector.make_stream(executor));
      connector.async_connect(stream, a, [this, keep, gen](std::error_code ec) {
        if (gen != generation || stopped) return;
        if (ec) return failed(ec);
        connected_socket();
      });
      timer.expires_after(opts.connect_timeout);
      timer.async_wait([this, keep, gen](std::error_code ec) {
        if (ec || gen != generation || stopped) return;
        if (sess.state() != session_state::connected) failed(std::make_error_code(std::errc::timed_out));
      });
    }

    void connected_socket() {
      open = true;
      if (auto ec = sess.start(clock::now())) return failed(ec);
      read();
      flush();
    }

    void read() {
      auto keep = self.lock();
      const std::uint64_t gen = generation;
      stream->async_read_some(asio::buffer(reading), [this, keep, gen, s = stream](std::error_code ec, std::size_t n) {
        if (gen != generation || !open) return;
        if (ec) return failed(ec);
        const bool was_connected = sess.state() == session_state::connected;
        if (auto e = sess.feed(reading.data(), n, clock::now())) return failed(e);
        if (sess.state() == session_state::disconnected) {
          // Refused, or the server's DISCONNECT: what the session answered goes, then the end.
          return failed(std::make_error_code(std::errc::connection_refused));
        }
        if (!was_connected && sess.state() == session_state::connected) arm_keep_alive();
        flush();
        read();
      });
    }

    void arm_keep_alive() {
      auto keep = self.lock();
      const std::uint64_t gen = generation;
      timer.expires_at(sess.next_tick());
      timer.async_wait([this, keep, gen](std::error_code ec) {
        if (ec || gen != generation || !open) return;
        if (auto e = sess.tick(clock::now())) return failed(e);
        flush();
        arm_keep_alive();
      });
    }

    void flush() {
      if (!open || write_pending || sess.output().empty()) {
        if (open && !write_pending && stopped && sess.state() == session_state::disconnected) close();
        return;
      }
      write_pending = true;
      writing.clear();
      writing.swap(sess.output());
      auto keep = self.lock();
      const std::uint64_t gen = generation;
      asio::async_write(*stream, asio::buffer(writing), [this, keep, gen, s = stream](std::error_code ec, std::size_t) {
        write_pending = false;
        if (gen != generation || !open) return;
        if (ec) return failed(ec);
        sess.sent(clock::now());
        flush();
      });
    }

    void close() {
      open = false;
      if (stream) Connector::close(*stream);  // a pending connect ends with an error, ignored by its generation
      timer.cancel();
    }

    void failed(std::error_code ec) {
      ++generation;  // completions still queued for this connection are ignored
      close();
      sess.lost();
      user.on_connection_lost(ec);
      if (stopped || !opts.reconnect) return;
      // Full jitter over the upper half: between backoff/2 and backoff.
      const auto half = backoff.count() / 2;
      std::uniform_int_distribution<long long> pick(half, backoff.count() > half ? backoff.count() : half);
      const std::chrono::milliseconds wait(pick(rng));
      backoff = std::min(backoff * 2, opts.reconnect_max);
      auto keep = self.lock();
      reconnect_timer.expires_after(wait);
      reconnect_timer.async_wait([this, keep](std::error_code e) {
        if (e || stopped) return;
        attempt_now();
      });
    }
  };

  std::shared_ptr<state> s_;
};

}  // namespace client
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CLIENT_CLIENT_HPP
