#ifndef MQTTBROKER_TRANSPORT_WEBSOCKET_HPP
#define MQTTBROKER_TRANSPORT_WEBSOCKET_HPP

// MQTT over WebSocket (MQTT 5.0 §6, 3.1.1 §6; RFC 6455), as a transport around another one:
// transport::ws is WebSocket over TCP; transport/websocket_tls.hpp adds wss, over TLS. Behind the
// CMake target mqttbroker::websocket (libcrypto, for the handshake's SHA-1); nothing else of the
// library includes it.
//
// Why a framing of our own (transport/websocket/frame.hpp, handshake.hpp) rather than a library:
// Beast needs Boost.Asio and this library is on standalone Asio; websocketpp's last release (0.8.2,
// 2020) predates the Asio this builds with and brings its own HTTP stack and a copy per message. A
// broker needs the server side of binary messages only: a frame parser that unmasks in place into
// the connection's own read block (no copy, no allocation per message, memory flat whatever length
// a frame claims), a header gathered in front of each write batch, and a strict upgrade request
// parser. Both parsers are sans-I/O, unit-tested and fuzzed (tests/fuzz/websocket_fuzz.cpp).

#include <mqttbroker/config.hpp>
#include <mqttbroker/transport/tcp.hpp>
#include <mqttbroker/transport/traits.hpp>
#include <mqttbroker/transport/websocket/frame.hpp>
#include <mqttbroker/transport/websocket/handshake.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_allocator.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/bind_allocator.hpp>
#include <asio/bind_executor.hpp>
#include <asio/buffer.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>
#include <asio/socket_base.hpp>
#include <asio/write.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace transport {
namespace detail {

/// A listener's WebSocket settings, shared by the streams it accepts.
struct websocket_settings {
  websocket::upgrade_options upgrade;
  std::uint64_t max_message_size = 0;
};

/// One buffer in front of a buffer sequence, as one sequence: a frame header gathered with the
/// payload it announces, so header and payload leave in one write.
template <class Sequence>
class prefixed_buffers {
  using inner_iterator = decltype(asio::buffer_sequence_begin(std::declval<const Sequence&>()));

 public:
  using value_type = asio::const_buffer;
  class const_iterator {
   public:
    using iterator_category = std::bidirectional_iterator_tag;
    using value_type = asio::const_buffer;
    using difference_type = std::ptrdiff_t;
    using pointer = const asio::const_buffer*;
    using reference = asio::const_buffer;
    const_iterator() = default;
    const_iterator(asio::const_buffer prefix, bool at_prefix, inner_iterator it)
        : prefix_(prefix), at_prefix_(at_prefix), it_(it) {}
    asio::const_buffer operator*() const { return at_prefix_ ? prefix_ : asio::const_buffer(*it_); }
    const_iterator& operator++() {
      if (at_prefix_)
        at_prefix_ = false;
      else
        ++it_;
      return *this;
    }
    const_iterator operator++(int) {
      auto old = *this;
      ++*this;
      return old;
    }
    // Only ever called on an iterator past the prefix: the prefix is the first element.
    const_iterator& operator--() {
      if (it_ == first_)
        at_prefix_ = true;
      else
        --it_;
      return *this;
    }
    const_iterator operator--(int) {
      auto old = *this;
      --*this;
      return old;
    }
    friend bool operator==(const const_iterator& a, const const_iterator& b) {
      return a.at_prefix_ == b.at_prefix_ && (a.at_prefix_ || a.it_ == b.it_);
    }
    friend bool operator!=(const const_iterator& a, const const_iterator& b) { return !(a == b); }

   private:
    friend class prefixed_buffers;
    asio::const_buffer prefix_;
    bool at_prefix_ = false;
    inner_iterator it_{};
    inner_iterator first_{};
  };

  /// At most `limit` buffers of `rest`, behind a prefix set with set_prefix().
  prefixed_buffers(const Sequence& rest, std::size_t limit) : rest_(rest), limit_(limit) {}
  void set_prefix(asio::const_buffer prefix) noexcept { prefix_ = prefix; }
  const_iterator begin() const { return make(true, asio::buffer_sequence_begin(rest_)); }
  const_iterator end() const {
    auto it = asio::buffer_sequence_begin(rest_);
    const auto last = asio::buffer_sequence_end(rest_);
    for (std::size_t n = 0; n < limit_ && it != last; ++n) ++it;
    return make(false, it);
  }
  /// The bytes of the buffers after the prefix.
  std::size_t rest_size() const {
    std::size_t total = 0;
    for (auto it = ++begin(), last = end(); it != last; ++it) total += (*it).size();
    return total;
  }

 private:
  const_iterator make(bool at_prefix, inner_iterator it) const {
    const_iterator i(prefix_, at_prefix, it);
    i.first_ = asio::buffer_sequence_begin(rest_);
    return i;
  }
  asio::const_buffer prefix_;
  Sequence rest_;
  std::size_t limit_;
};

/// An operation parked until the stream's writer is free, then resumed as it was.
struct parked_operation {
  virtual ~parked_operation() = default;
  virtual void resume() = 0;
};
template <class Self>
struct parked : parked_operation {
  explicit parked(Self&& s) : self(std::move(s)) {}
  void resume() override { self(); }
  Self self;
};

}  // namespace detail

/// A WebSocket connection's server side over `NextLayer` (a TCP socket, a TLS stream): reads hand
/// on the binary messages' payload, the MQTT byte stream; each write goes out as one binary
/// message. Answers pings itself. The upgrade and the closing handshake are started by the
/// transport (websocket_transport::async_handshake, async_shutdown).
///
/// Reads unmask in place in the caller's buffer and compact the payload to its front, so a
/// connection holds about 300 bytes of framing state, whatever a frame claims. Over a next layer
/// with a readability wait (TCP, TLS) the broker reads it as it reads TCP: async_wait, then
/// read_some into the thread's buffer, so an idle connection holds no read block.
/// Writes and the pongs the reader owes share the next layer: one at a time, the other parked.
template <class NextLayer>
class websocket_stream {
 public:
  using next_layer_type = NextLayer;
  using executor_type = typename NextLayer::executor_type;
  using lowest_layer_type = typename NextLayer::lowest_layer_type;

  websocket_stream(NextLayer next, std::shared_ptr<const detail::websocket_settings> settings)
      : next_(std::move(next)), settings_(std::move(settings)), parser_(settings_->max_message_size) {}

  executor_type get_executor() noexcept { return next_.get_executor(); }
  next_layer_type& next_layer() noexcept { return next_; }
  lowest_layer_type& lowest_layer() noexcept { return next_.lowest_layer(); }
  const lowest_layer_type& lowest_layer() const noexcept { return next_.lowest_layer(); }

  /// Reads MQTT bytes into the first buffer of `buffers`: void(std::error_code, std::size_t). A
  /// close frame from the client ends the stream with asio::error::eof; a frame that breaks RFC
  /// 6455 with a websocket_errc (and the closing handshake then says why, close_code_for()).
  template <class MutableBufferSequence, class ReadToken>
  auto async_read_some(const MutableBufferSequence& buffers, ReadToken&& token) {
    const asio::mutable_buffer first = *asio::buffer_sequence_begin(buffers);
    return asio::async_compose<ReadToken, void(std::error_code, std::size_t)>(read_op{this, first}, token,
                                                                              get_executor());
  }

  /// Writes `buffers` as one binary message: void(std::error_code, std::size_t), the size being
  /// the payload's: all of it, or the first 63 buffers' of a longer sequence.
  template <class ConstBufferSequence, class WriteToken>
  auto async_write_some(const ConstBufferSequence& buffers, WriteToken&& token) {
    return asio::async_compose<WriteToken, void(std::error_code, std::size_t)>(
        write_op<ConstBufferSequence>{this, buffers}, token, get_executor());
  }

  /// With a next layer that waits for readability (a TCP socket, the TLS stream) this stream does
  /// too, and the broker reads WebSocket connections as it reads TCP ones: into the thread's
  /// buffer, once readable. Completes at once when read_some has something without the socket:
  /// bytes that came behind the upgrade request, or an error or close already parsed. A pong owed
  /// for a ping that read_some met is written first, unless a write is in flight (its pong then
  /// follows that write): this wait's handler keeps the connection, so the pong is owned by it.
  template <class WaitHandler, class N = NextLayer,
            std::enable_if_t<detail::stream_waits_for_readability<N>::value, int> = 0>
  void async_wait(asio::socket_base::wait_type w, WaitHandler&& handler) {
    if (w == asio::socket_base::wait_read && pong_owed_ && !write_busy_) {
      write_busy_ = true;
      const auto ex = asio::get_associated_executor(handler, get_executor());
      const auto alloc = asio::get_associated_allocator(handler);
      asio::async_write(next_, take_pong(),
                        asio::bind_executor(ex, asio::bind_allocator(alloc, [this, w, h = std::forward<WaitHandler>(handler)](
                                                                                std::error_code ec, std::size_t) mutable {
                          release_writer();
                          if (ec) return std::move(h)(ec);
                          async_wait(w, std::move(h));
                        })));
      return;
    }
    if (w == asio::socket_base::wait_read && (!pending_input_.empty() || parser_.error() || parser_.closed()))
      return detail::post_completion(get_executor(), std::forward<WaitHandler>(handler), std::error_code());
    next_.async_wait(w, std::forward<WaitHandler>(handler));
  }

  /// Reads MQTT bytes into `b` without blocking: would_block when the next layer has none, and 0
  /// bytes when what it read was frame headers or control frames only (the caller waits again).
  /// An error or a close found after some payload is reported by the next call (and async_wait
  /// lets it come at once).
  template <class N = NextLayer, std::enable_if_t<detail::stream_waits_for_readability<N>::value, int> = 0>
  std::size_t read_some(const asio::mutable_buffer& b, std::error_code& ec) {
    ec = {};
    if (parser_.error() || parser_.closed()) {
      ec = parser_.error() ? parser_.error() : std::error_code(asio::error::eof);
      return 0;
    }
    auto* data = static_cast<std::uint8_t*>(b.data());
    std::size_t n = 0;
    if (!pending_input_.empty()) {
      n = take_pending_input(data, b.size());
    } else {
      n = next_.read_some(b, ec);
      if (ec) return 0;
    }
    return unframe(data, n);
  }

  /// The server's side of the opening handshake, after the next layer's own: reads the upgrade
  /// request (bounded by upgrade_options::max_request_size), answers it: void(std::error_code).
  template <class Token>
  auto async_accept_upgrade(Token&& token) {
    return asio::async_compose<Token, void(std::error_code)>(upgrade_op{this}, token, get_executor());
  }

  /// Sends the close frame (1000, or the status a refused frame called for): void(std::error_code).
  template <class Token>
  auto async_send_close(Token&& token) {
    return asio::async_compose<Token, void(std::error_code)>(close_op{this}, token, get_executor());
  }

  /// Closes the socket; pending operations complete with operation_aborted.
  void close(std::error_code& ec) { next_.lowest_layer().close(ec); }
  void shutdown(asio::socket_base::shutdown_type what, std::error_code& ec) { next_.lowest_layer().shutdown(what, ec); }

  /// The largest message accepted (the parser's limit).
  std::uint64_t max_message_size() const noexcept { return settings_->max_message_size; }

 private:
  /// The most buffers one gather write (writev) takes in Asio (its max_iov_len, the least IOV_MAX).
  static constexpr std::size_t max_gather = 64;

  enum class step : std::uint8_t { start, reading, ponging, writing, draining, done };

  /// Takes the writer, or parks `self` until it is free: true when `self` may write now.
  template <class Self>
  bool claim_writer(Self& self) {
    if (!write_busy_) {
      write_busy_ = true;
      return true;
    }
    parked_ = std::make_unique<detail::parked<Self>>(std::move(self));
    return false;
  }
  void release_writer() {
    write_busy_ = false;
    if (parked_) {
      auto p = std::move(parked_);
      p->resume();
    }
  }
  /// The pong owed, moved to the frame being written.
  asio::const_buffer take_pong() {
    auto& c = *control_;
    c.out = c.pong;
    pong_owed_ = false;
    return asio::buffer(c.out.bytes.data(), c.out.size);
  }

  void on_control(const websocket::control_frame& f) {
    if (f.op == websocket::opcode::ping) {
      // A newer ping's pong replaces an unsent one (§5.5.3).
      control_frames().pong = websocket::make_pong(f.payload);
      pong_owed_ = true;
    }
    // A pong needs nothing; a close ends reading (the parser stops), and the close frame that
    // answers it goes out with the transport's shutdown.
  }

  /// Bytes that came with the upgrade request (frames the client sent without waiting), moved to
  /// `data`: at most `size`.
  std::size_t take_pending_input(std::uint8_t* data, std::size_t size) {
    const std::size_t n = std::min(size, pending_input_.size());
    std::memcpy(data, pending_input_.data(), n);
    pending_input_.erase(0, n);
    if (pending_input_.empty()) std::string().swap(pending_input_);
    return n;
  }

  /// Parses `n` bytes read into `data`: unmasks the payload in place and moves it to the front,
  /// behind the frame headers already seen; notes control frames. The payload's size.
  std::size_t unframe(std::uint8_t* data, std::size_t n) {
    std::size_t out = 0;
    const auto r = parser_.feed(
        data, n,
        [&](std::uint8_t* p, std::size_t k) {
          if (p != data + out) std::memmove(data + out, p, k);
          out += k;
        },
        [&](const websocket::control_frame& f) { on_control(f); });
    if (r.ec) close_code_ = websocket::close_code_for(r.ec);
    return out;
  }

  struct read_op {
    websocket_stream* s;
    asio::mutable_buffer buf;
    std::size_t delivered = 0;
    step at = step::start;

    template <class Self>
    void operator()(Self& self, std::error_code ec = {}, std::size_t n = 0) {
      switch (at) {
        case step::start:
          if (!s->pending_input_.empty())
            return parse(self, s->take_pending_input(static_cast<std::uint8_t*>(buf.data()), buf.size()));
          return read_more(self);
        case step::reading:
          if (ec) return self.complete(ec, 0);
          return parse(self, n);
        case step::ponging:
          s->release_writer();
          if (ec) return self.complete(ec, 0);
          return deliver_or_read(self);
        case step::done:
          return self.complete(s->parser_.error() ? s->parser_.error() : std::error_code(asio::error::eof), 0);
        default: return;
      }
    }

    template <class Self>
    void read_more(Self& self) {
      if (s->parser_.error() || s->parser_.closed() || buf.size() == 0) {
        at = step::done;
        return asio::post(std::move(self));  // never complete inside the initiating call
      }
      at = step::reading;
      s->next_.async_read_some(buf, std::move(self));
    }

    template <class Self>
    void parse(Self& self, std::size_t n) {
      delivered = s->unframe(static_cast<std::uint8_t*>(buf.data()), n);
      if (s->pong_owed_ && !s->parser_.error() && !s->write_busy_) {
        s->write_busy_ = true;
        at = step::ponging;
        return asio::async_write(s->next_, s->take_pong(), std::move(self));
      }
      // A pong owed while a write is in flight goes out when that write completes (write_op).
      deliver_or_read(self);
    }

    template <class Self>
    void deliver_or_read(Self& self) {
      if (delivered > 0) return self.complete(std::error_code(), delivered);  // the error, if any, comes next read
      read_more(self);
    }
  };

  template <class Buffers>
  struct write_op {
    websocket_stream* s;
    Buffers buffers;
    std::size_t size = 0;
    websocket::frame_header header{};
    step at = step::start;

    template <class Self>
    void operator()(Self& self, std::error_code ec = {}, std::size_t = 0) {
      switch (at) {
        case step::start:
          if (!s->claim_writer(self)) return;  // resumed here when the pong in flight is out
          {
            // One frame of as many buffers as fit in one gather write with its header (a write
            // of more is split by the system: a second, small, send per frame).
            detail::prefixed_buffers<Buffers> frame(buffers, max_gather - 1);
            size = frame.rest_size();
            header = websocket::make_binary_header(size);
            frame.set_prefix(asio::buffer(header.bytes.data(), header.size));
            at = step::writing;
            return asio::async_write(s->next_, frame, std::move(self));
          }
        case step::writing:
        case step::ponging:
          // The reader may have seen a ping meanwhile: its pong follows before the writer is free.
          if (!ec && s->pong_owed_) {
            at = step::ponging;
            return asio::async_write(s->next_, s->take_pong(), std::move(self));
          }
          s->release_writer();
          return self.complete(ec, ec ? 0 : size);
        default: return;
      }
    }
  };

  struct close_op {
    websocket_stream* s;
    step at = step::start;

    template <class Self>
    void operator()(Self& self, std::error_code ec = {}, std::size_t = 0) {
      switch (at) {
        case step::start: {
          if (!s->claim_writer(self)) return;
          auto& out = s->control_frames().out;
          out = websocket::make_close(s->close_code_);
          at = step::writing;
          return asio::async_write(s->next_, asio::buffer(out.bytes.data(), out.size), std::move(self));
        }
        case step::writing:
          s->release_writer();
          return self.complete(ec);
        default: return;
      }
    }
  };

  struct upgrade_op {
    websocket_stream* s;
    websocket::upgrade_answer answer{};
    std::size_t searched = 0;
    step at = step::start;

    template <class Self>
    void operator()(Self& self, std::error_code ec = {}, std::size_t n = 0) {
      auto& in = s->pending_input_;
      const auto& o = s->settings_->upgrade;
      switch (at) {
        case step::start: return read_more(self);
        case step::reading: {
          in.resize(in.size() - read_room_ + n);
          if (ec) return self.complete(ec);
          const std::size_t end = websocket::find_request_end(in, searched);
          searched = in.size();
          if (end != 0) {
            answer = websocket::answer_upgrade(std::string_view(in).substr(0, end), o);
            in.erase(0, end);  // what follows is the client's first frames
          } else if (!websocket::could_be_get(in)) {
            answer = websocket::refusal(websocket_errc::upgrade_malformed);
          } else if (in.size() >= o.max_request_size) {
            answer = websocket::refusal(websocket_errc::upgrade_too_large);
          } else {
            return read_more(self);
          }
          if (answer.ec || in.empty()) std::string().swap(in);
          at = step::writing;
          return asio::async_write(s->next_, asio::buffer(answer.response), std::move(self));
        }
        case step::writing:
          if (ec || !answer.ec) return self.complete(ec);
          // Refused: end our side and read what the client still sends, so that closing with
          // unread input (a reset) does not destroy the response before the client reads it.
          s->next_.lowest_layer().shutdown(asio::socket_base::shutdown_send, ec);
          in.resize(1024);
          return drain(self);
        case step::draining:
          drained_ += n;
          if (ec || drained_ >= max_drain) {
            std::string().swap(in);
            return self.complete(answer.ec);
          }
          return drain(self);
        default: return;
      }
    }

    /// Reads and drops the rest of a refused client's input: up to max_drain bytes, and never past
    /// the CONNECT deadline, when the connection closes the stream.
    static constexpr std::size_t max_drain = 64 * 1024;
    template <class Self>
    void drain(Self& self) {
      at = step::draining;
      s->next_.async_read_some(asio::buffer(s->pending_input_), std::move(self));
    }
    std::size_t drained_ = 0;

    template <class Self>
    void read_more(Self& self) {
      auto& in = s->pending_input_;
      const std::size_t max = s->settings_->upgrade.max_request_size;
      // Up to 1 KiB at a time, never past the limit: a browser's request is a few hundred bytes.
      // Called only while the request is under the limit, so there is room for a byte at least.
      read_room_ = std::min<std::size_t>(1024, max - in.size());
      const std::size_t old = in.size();
      in.resize(old + read_room_);
      at = step::reading;
      s->next_.async_read_some(asio::buffer(&in[old], read_room_), std::move(self));
    }
    std::size_t read_room_ = 0;
  };

  NextLayer next_;
  std::shared_ptr<const detail::websocket_settings> settings_;
  websocket::frame_parser parser_;
  std::string pending_input_;  // the upgrade request while it arrives, then the bytes after it
  std::unique_ptr<detail::parked_operation> parked_;
  /// The control frames a connection writes, made at its first ping or its close: most
  /// connections see neither until they end, and these are 272 of their bytes.
  struct control_buffers {
    websocket::control_frame_bytes out;   // the control frame being written
    websocket::control_frame_bytes pong;  // the pong owed
  };
  control_buffers& control_frames() {
    if (!control_) control_ = std::make_unique<control_buffers>();
    return *control_;
  }
  std::unique_ptr<control_buffers> control_;
  std::uint16_t close_code_ = websocket::close_code::normal;
  bool pong_owed_ = false;
  bool write_busy_ = false;
};

/// WebSocket over `Inner` (transport::tcp, transport::tls): its listener, its handshake (the inner
/// one, then the upgrade) and its graceful end (the close frame, then the inner one). Served on a
/// path (default /mqtt) with the subprotocol `mqtt`.
template <class Inner>
struct websocket_transport {
  static constexpr const char* name = std::string_view(Inner::name) == "tcp"   ? "ws"
                                      : std::string_view(Inner::name) == "tls" ? "wss"
                                                                               : "websocket";
  using inner_transport = Inner;
  using stream_type = websocket_stream<typename Inner::stream_type>;

  /// The inner transport's options (address, port, certificates) and the WebSocket ones.
  struct listen_options : Inner::listen_options {
    listen_options() { this->port = std::string_view(Inner::name) == "tls" ? 8081 : 8080; }
    std::string path = "/mqtt";                // empty: every path
    std::vector<std::string> allowed_origins;  // empty: every origin
    bool allow_missing_origin = true;          // a client that sends no Origin (not a browser)
    std::size_t max_request_size = 8 * 1024;   // the upgrade request's line and headers
    /// The largest message; 0 (and anything larger) means the broker's maximum packet size.
    std::uint64_t max_message_size = 0;
  };

  class acceptor_type {
   public:
    using executor_type = asio::any_io_executor;
    using inner_acceptor = typename Inner::acceptor_type;

    explicit acceptor_type(const executor_type& ex) : inner_(ex) {}

    executor_type get_executor() noexcept { return inner_.get_executor(); }
    bool is_open() const noexcept { return inner_.is_open(); }
    void close(std::error_code& ec) { inner_.close(ec); }
    auto local_endpoint(std::error_code& ec) const { return inner_.local_endpoint(ec); }

    /// Accepts the next connection onto `stream_ex`: void(std::error_code, stream_type). The
    /// handshakes are not part of it (websocket_transport::async_handshake).
    template <class AcceptToken>
    auto async_accept(const typename stream_type::executor_type& stream_ex, AcceptToken&& token) {
      return asio::async_initiate<AcceptToken, void(std::error_code, stream_type)>(
          [this](auto handler, const typename stream_type::executor_type& sx) {
            const auto hx = asio::get_associated_executor(handler, inner_.get_executor());
            inner_.async_accept(sx, asio::bind_executor(hx, [h = std::move(handler), settings = settings_](
                                                              std::error_code ec, typename Inner::stream_type s) mutable {
                                  std::move(h)(ec, stream_type(std::move(s), std::move(settings)));
                                }));
          },
          token, stream_ex);
    }

    /// The broker's maximum packet size, which bounds a message (unless the listener set less).
    /// Called once, before the first accept.
    void limit_message_size(std::uint64_t max_packet_size) {
      auto& m = settings_->max_message_size;
      if (m == 0 || m > max_packet_size) m = max_packet_size;
    }

    /// The inner transport's reload (TLS certificates), when it has one.
    void reload(std::error_code& ec, std::string* what = nullptr) {
      if constexpr (acceptor_has_reload_v<Inner>) {
        inner_.reload(ec, what);
      } else {
        ec = std::make_error_code(std::errc::operation_not_supported);
        if (what != nullptr) *what = std::string("the ") + name + " transport has no certificates to reload";
      }
    }

   private:
    friend struct websocket_transport;
    inner_acceptor inner_;
    std::shared_ptr<detail::websocket_settings> settings_;
  };

  /// Checks the WebSocket options, then makes the inner listener. `what` names what is at fault.
  static acceptor_type make_acceptor(const asio::any_io_executor& ex, const listen_options& o, std::error_code& ec,
                                     std::string* what) {
    acceptor_type a(ex);
    ec = {};
    if (!o.path.empty() && o.path.front() != '/') {
      ec = std::make_error_code(std::errc::invalid_argument);
      if (what != nullptr) *what = "WebSocket path '" + o.path + "' does not start with '/'";
      return a;
    }
    if (o.max_request_size < 256) {
      ec = std::make_error_code(std::errc::invalid_argument);
      if (what != nullptr) *what = "WebSocket max_request_size under 256 bytes: no browser's request fits";
      return a;
    }
    auto settings = std::make_shared<detail::websocket_settings>();
    settings->upgrade.path = o.path;
    settings->upgrade.allowed_origins = o.allowed_origins;
    settings->upgrade.allow_missing_origin = o.allow_missing_origin;
    settings->upgrade.max_request_size = o.max_request_size;
    settings->max_message_size = o.max_message_size;
    a.settings_ = std::move(settings);
    const auto& inner_options = static_cast<const typename Inner::listen_options&>(o);
    if constexpr (has_make_acceptor_what_v<Inner>) {
      a.inner_ = Inner::make_acceptor(ex, inner_options, ec, what);
    } else {
      a.inner_ = Inner::make_acceptor(ex, inner_options, ec);
      if (ec && what != nullptr)
        *what = std::string(name) + " listener on " + o.address + ":" + std::to_string(o.port) + ": " + ec.message();
    }
    if (!ec && a.settings_->max_message_size == 0) a.settings_->max_message_size = ~std::uint64_t{0} >> 1;
    return a;
  }
  static acceptor_type make_acceptor(const asio::any_io_executor& ex, const listen_options& o, std::error_code& ec) {
    return make_acceptor(ex, o, ec, nullptr);
  }

  static void prepare(stream_type& s) { Inner::prepare(s.next_layer()); }

  /// The inner handshake (TLS), then the upgrade: void(std::error_code).
  template <class Handler>
  static void async_handshake(stream_type& s, Handler&& h) {
    asio::async_compose<Handler, void(std::error_code)>(
        [&s, at = 0](auto& self, std::error_code ec = {}) mutable {
          if (at == 0) {
            at = 1;
            if constexpr (has_async_handshake_v<Inner>) return Inner::async_handshake(s.next_layer(), std::move(self));
            else ec = {};
          }
          if (at == 1) {
            if (ec) return self.complete(ec);
            at = 2;
            return s.async_accept_upgrade(std::move(self));
          }
          self.complete(ec);
        },
        h, s.get_executor());
  }

  /// The close frame, then the inner graceful end (TLS close_notify): void(std::error_code).
  template <class Handler>
  static void async_shutdown(stream_type& s, Handler&& h) {
    asio::async_compose<Handler, void(std::error_code)>(
        [&s, at = 0](auto& self, std::error_code ec = {}) mutable {
          if (at == 0) {
            at = 1;
            return s.async_send_close(std::move(self));
          }
          if (at == 1 && !ec) {
            at = 2;
            if constexpr (has_async_shutdown_v<Inner>) {
              return Inner::async_shutdown(s.next_layer(), std::move(self));
            } else {
              s.shutdown(asio::socket_base::shutdown_send, ec);  // the TCP end of our bytes
            }
          }
          self.complete(ec);
        },
        h, s.get_executor());
  }

  /// The client certificate's identity, when the inner transport has one (wss).
  template <class I = Inner, std::enable_if_t<has_peer_certificate_v<I>, int> = 0>
  static peer_certificate peer_certificate_of(stream_type& s) {
    return I::peer_certificate_of(s.next_layer());
  }
};

/// WebSocket over TCP: `ws://host:8080/mqtt`.
using ws = websocket_transport<tcp>;

}  // namespace transport
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_TRANSPORT_WEBSOCKET_HPP
