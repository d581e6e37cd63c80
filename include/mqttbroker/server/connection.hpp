#ifndef MQTTBROKER_SERVER_CONNECTION_HPP
#define MQTTBROKER_SERVER_CONNECTION_HPP

#include <mqttbroker/codec/decoder.hpp>
#include <mqttbroker/codec/packets.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/detail/block_pool.hpp>
#include <mqttbroker/detail/ref_counted.hpp>
#include <mqttbroker/engine/link.hpp>
#include <mqttbroker/engine/write_batch.hpp>
#include <mqttbroker/log.hpp>
#include <mqttbroker/server/admission.hpp>
#include <mqttbroker/transport/traits.hpp>

#include <asio/bind_allocator.hpp>
#include <asio/bind_executor.hpp>
#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>
#include <asio/socket_base.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <system_error>
#include <type_traits>
#include <utility>

MQTTBROKER_BEGIN_NAMESPACE
namespace server {

/// A range of a write batch's runs as an Asio buffer sequence, so a write can start anywhere in
/// a batch; each run becomes an asio::const_buffer as the transport walks the range.
class run_range {
 public:
  class const_iterator {
   public:
    using iterator_category = std::bidirectional_iterator_tag;
    using value_type = asio::const_buffer;
    using difference_type = std::ptrdiff_t;
    using pointer = const asio::const_buffer*;
    using reference = asio::const_buffer;
    const_iterator() noexcept = default;
    explicit const_iterator(const engine::byte_run* p) noexcept : p_(p) {}
    asio::const_buffer operator*() const noexcept { return asio::const_buffer(p_->data, p_->size); }
    const_iterator& operator++() noexcept {
      ++p_;
      return *this;
    }
    const_iterator operator++(int) noexcept { return const_iterator(p_++); }
    const_iterator& operator--() noexcept {
      --p_;
      return *this;
    }
    const_iterator operator--(int) noexcept { return const_iterator(p_--); }
    friend bool operator==(const_iterator a, const_iterator b) noexcept { return a.p_ == b.p_; }
    friend bool operator!=(const_iterator a, const_iterator b) noexcept { return a.p_ != b.p_; }

   private:
    const engine::byte_run* p_ = nullptr;
  };
  using value_type = asio::const_buffer;

  run_range(const engine::byte_run* first, const engine::byte_run* last) noexcept : first_(first), last_(last) {}
  const_iterator begin() const noexcept { return const_iterator(first_); }
  const_iterator end() const noexcept { return const_iterator(last_); }

 private:
  const engine::byte_run* first_;
  const engine::byte_run* last_;
};

/// Where a connection's handlers run: its locking policy's strand for the stream's executor. When
/// that strand is the executor itself (locking::none) there is nothing to hold, and this is an empty
/// base: C++17 has no [[no_unique_address]], and an empty member would still take 8 bytes per
/// connection. Nor is a handler bound to it then, so a pending operation is no larger either.
template <class Strand, class Executor, bool = std::is_same_v<Strand, Executor>>
class connection_strand {
 protected:
  explicit connection_strand(Strand s) : strand_(std::move(s)) {}
  template <class Stream>
  Strand handler_executor(Stream&) const {
    return strand_;
  }
  template <class Handler>
  auto on_strand(Handler h) const {
    return asio::bind_executor(strand_, std::move(h));
  }

 private:
  Strand strand_;
};
template <class Strand, class Executor>
class connection_strand<Strand, Executor, true> {
 protected:
  explicit connection_strand(const Executor&) noexcept {}
  template <class Stream>
  static Executor handler_executor(Stream& s) {
    return s.get_executor();
  }
  template <class Handler>
  static Handler on_strand(Handler h) {
    return h;
  }
};

/// The most one read takes. A paused reader keeps what it has not decoded, so this also bounds
/// the memory a paused connection holds.
inline constexpr std::size_t read_chunk = 16 * 1024;

/// One buffer per thread for every connection whose transport waits for readability: the
/// connections of a thread read and decode one after another.
inline std::uint8_t* thread_read_buffer() {
  static thread_local std::unique_ptr<std::uint8_t[]> buf(new std::uint8_t[read_chunk]);
  return buf.get();
}

/// The first read of a stream without a readability wait. A pending async_read_some needs its
/// buffer for as long as it waits, so an idle connection on such a stream holds one block of
/// this size; each read that fills its block doubles the next (up to read_chunk), and one that
/// takes at most half makes it the smallest block from this size up that holds twice that read
/// (a quiet client's small packets: this size again).
inline constexpr std::size_t min_read_chunk = 256;

/// How long a transport's graceful shutdown (TLS close_notify, WebSocket close frame) may take
/// before the stream is closed anyway: a peer that never answers must not keep a connection, nor
/// a host waiting for its io_context to run out of work after a stop.
inline constexpr std::chrono::milliseconds graceful_shutdown_limit{1000};

/// What a connection keeps for its transport's handshake: whether it completed. Nothing for a
/// transport without one (an empty base, as the TCP connection's size is what idle clients pay).
template <bool HasHandshake>
class handshake_state {
 protected:
  static constexpr bool handshake_done() noexcept { return true; }
  static void set_handshake_done() noexcept {}
};
template <>
class handshake_state<true> {
 protected:
  bool handshake_done() const noexcept { return done_; }
  void set_handshake_done() noexcept { done_ = true; }

 private:
  bool done_ = false;
};

/// One client connection on a transport's stream: reads, decodes, hands packets to the protocol
/// engine, and writes what the engine queued on its link in batches. Kept alive by its pending
/// operations and the engine's registry. How it reads depends on what the transport can do
/// (transport/traits.hpp):
/// - with a readability wait (plain TCP) it waits until the stream is readable and reads into the
///   thread's buffer, so between packets it holds no read buffer at all;
/// - without one (TLS, WebSocket, the in-memory stream) it reads with async_read_some into a
///   pooled block of its own, min_read_chunk bytes while the client is quiet.
/// It holds no write buffer between batches; a split packet's bytes, or a paused reader's unread
/// input, stay with it. A transport's handshake runs before the first read, its graceful shutdown
/// at the close.
///
/// `Context` gives `engine_type`, `locking_type`, `engine()`, `now()` and `system_now()`: the
/// broker's shared parts; with a handshake also `note_handshake_failure()`, with a graceful
/// shutdown `make_timer(ex)`.
template <class Transport, class Context>
class connection final
    : public Context::engine_type::link_type,
      private connection_strand<
          typename Context::locking_type::template strand_type<typename Transport::stream_type::executor_type>,
          typename Transport::stream_type::executor_type>,
      private handshake_state<transport::has_async_handshake_v<Transport>> {
 public:
  using stream_type = typename Transport::stream_type;
  using stream_executor = typename stream_type::executor_type;
  using engine_type = typename Context::engine_type;
  using link_type = typename engine_type::link_type;
  using flush_scope = typename link_type::flush_scope;
  /// The locking policy's strand for the stream's executor, where this connection's handlers run.
  using executor_type = typename Context::locking_type::template strand_type<stream_executor>;

  connection(Context& ctx, stream_type s)
      : connection_strand<executor_type, stream_executor>(Context::locking_type::make_strand(s.get_executor())),
        ctx_(ctx),
        stream_(std::move(s)),
        decoder_(codec::decoder_options{codec::role::server, ctx.engine().options().max_packet_size, std::nullopt}) {}

  executor_type get_executor() { return this->handler_executor(stream_); }

  /// Starts the transport's handshake, if it has one, then reading; the engine has opened the
  /// link, so its CONNECT timeout runs from before the handshake.
  void start() {
    if constexpr (has_handshake) {
      Transport::async_handshake(stream_, bind_handler([self = detail::ref_ptr<connection>(this)](std::error_code ec) {
                                   self->on_handshake(ec);
                                 }));
    } else {
      read();
    }
  }

  /// Where the client is connected from, if the transport can tell.
  transport::peer_endpoint peer() { return transport::peer_of(stream_); }

  /// Holds the connection's place in its source address's count until it is destroyed.
  void hold_admission(server::address_admission::ticket t) {
    admission_ = std::make_unique<server::address_admission::ticket>(std::move(t));
  }

  /// Closes a stream the engine refused (over max_connections).
  void refuse() {
    std::error_code ignored;
    stream_.close(ignored);
  }

  // ---- the outlet (engine::link)

  void start_write() override {
    if (this->write_in_flight() || !this->is_open() || !this->handshake_done()) return;
    // A packet queued depends on a change not yet durable: written after its commit (a closing
    // connection writes what it has).
    if (!this->is_closing() && !engine().writes_may_go(*this)) return;
    writing_ = this->take_queued();
    if (!writing_) return;
    writing_->build_runs();
    write_some();
  }

  void finish() override {
    if (this->write_in_flight()) return;  // the write's completion finishes the close
    // Before the handshake completed nothing can be written: the queue is dropped.
    if (this->has_queued() && this->handshake_done()) return start_write();
    finish_close();
  }

  void post(engine::link_event e) override {
    // Its memory from the thread's pool: a durable store's commit posts one to every connection
    // with acknowledgements waiting, and Asio's own cache keeps two blocks per thread.
    asio::post(get_executor(), asio::bind_allocator(detail::pooled_allocator<void>(),
                                                    [self = detail::ref_ptr<connection>(this), e] { self->on_event(e); }));
  }

 private:
  static constexpr bool waits_for_readability = transport::has_readability_wait_v<Transport>;
  static constexpr bool has_handshake = transport::has_async_handshake_v<Transport>;
  static constexpr bool has_graceful_shutdown = transport::has_async_shutdown_v<Transport>;
  /// Whether the context counts the bytes read and written (the broker's does).
  template <class C, class = void>
  struct context_counts_bytes : std::false_type {};
  template <class C>
  struct context_counts_bytes<C, std::void_t<decltype(std::declval<C&>().note_bytes_received(std::size_t{}))>>
      : std::true_type {};
  static constexpr bool counts_bytes = context_counts_bytes<Context>::value;

  /// Reads per readiness before the connection yields to others on its thread.
  static constexpr int reads_per_wake = 4;
  /// The most buffers one gather write passes to the transport (Asio's own cap per call is 64).
  static constexpr std::size_t max_write_buffers = 64;

  engine_type& engine() noexcept { return ctx_.engine(); }

  /// A completion handler for this connection's operations: its memory from the thread's pool,
  /// and on the connection's strand.
  template <class Handler>
  auto bind_handler(Handler h) {
    return this->on_strand(asio::bind_allocator(detail::pooled_allocator<void>(), std::move(h)));
  }

  void on_event(engine::link_event e) {
    // What an event sends leaves at its end, in one write: a QoS 2 message routed once its commit
    // is reported is recorded whole (with its `routed` mark) before a write takes a ticket.
    flush_scope scope;
    if (engine().on_event(*this, e, ctx_.now())) continue_reading();
  }

  void on_handshake(std::error_code ec) {
    if (!this->is_open()) return;  // closed meanwhile: the CONNECT timeout, a stop
    if (ec) {
      ctx_.note_handshake_failure();
      engine().log(log_level::warning, "transport handshake failed: {}", ec.message());
      finish_close();
      return;
    }
    this->set_handshake_done();
    if constexpr (transport::has_peer_certificate_v<Transport> && link_type::keeps_origin) {
      // Once, before the CONNECT is read: the hooks see the certificate from the first one on.
      const transport::peer_certificate pc = Transport::peer_certificate_of(stream_);
      this->set_certificate_identity(pc.identity, pc.identity_is_username);
    }
    read();
  }

  void read() {
    if (this->is_closing() || this->paused()) return;
    if constexpr (waits_for_readability) {
      stream_.async_wait(asio::socket_base::wait_read, bind_handler([self = detail::ref_ptr<connection>(this)](std::error_code ec) {
                           self->on_readable(ec);
                         }));
    } else {
      // Not paused, so everything read before was decoded: unread_ is empty, and its block (kept
      // from the last read) takes this one.
      if (unread_.capacity() == 0) unread_.reserve(min_read_chunk);
      stream_.async_read_some(asio::buffer(unread_.data(), unread_.capacity()),
                              bind_handler([self = detail::ref_ptr<connection>(this)](std::error_code ec, std::size_t n) {
                                self->on_read(ec, n);
                              }));
    }
  }

  /// A read into unread_'s block completed (no readability wait).
  void on_read(std::error_code ec, std::size_t n) {
    if (!this->is_open()) {
      unread_.reset();  // nothing reads into it any more
      return;
    }
    if (ec) {
      finish_close();  // EOF without DISCONNECT, or a transport error: an ungraceful end
      unread_.reset();
      return;
    }
    // Closing: what still arrives is not acted on (as in on_readable).
    if (this->is_closing()) {
      unread_.reset();
      return;
    }
    flush_scope scope;
    if constexpr (counts_bytes) ctx_.note_bytes_received(n);
    const std::size_t block = unread_.capacity();
    unread_.commit(n);
    detail::pooled_bytes input = std::move(unread_);
    // Paused or closing: unread_ holds what the pause left, and input's block goes back.
    if (!take_input(input.data(), input.size())) return;
    // All decoded: the block takes the next read, larger while reads fill it, and when a read
    // takes at most half of it, twice that read (a client that keeps sending this much is read
    // in one completion; a quiet one is back at min_read_chunk).
    input.clear();
    if (n == block && block < read_chunk) {
      input.reset();
      input.reserve(block * 2);
    } else if (n <= block / 2 && block > min_read_chunk) {
      std::size_t fit = min_read_chunk;
      while (fit < 2 * n) fit *= 2;
      if (fit < block) {
        input.reset();
        input.reserve(fit);
      }
    }
    unread_ = std::move(input);
    read();
  }

  void on_readable(std::error_code ec) {
    if (!this->is_open()) return;
    if (ec) {
      finish_close();  // transport error
      return;
    }
    // Closing (taken over, refused, stopping): what still arrives is not acted on; a taken-over
    // connection has no session any more. The pending write's completion finishes the close.
    if (this->is_closing()) return;
    flush_scope scope;
    std::uint8_t* buf = thread_read_buffer();
    for (int round = 0; round < reads_per_wake; ++round) {
      const std::size_t n = stream_.read_some(asio::buffer(buf, read_chunk), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) break;
      if (ec) {
        finish_close();  // EOF without DISCONNECT, or a transport error: an ungraceful end
        return;
      }
      if constexpr (counts_bytes) ctx_.note_bytes_received(n);
      if (!take_input(buf, n)) return;
      if (n < read_chunk) break;  // the stream is drained
    }
    read();
  }

  /// Decodes and hands over `n` bytes. False when the connection stopped reading: it is closing,
  /// or paused, with what it did not decode kept in unread_.
  bool take_input(const std::uint8_t* data, std::size_t n) {
    const auto now = ctx_.now();  // once per read, not per packet
    this->note_progress(now);
    detail::pooled_bytes rest;  // the rest of the input, when a pause did not happen after all
    for (;;) {
      bool got_packet = false;
      const auto res = decoder_.feed(data, n, [this, &got_packet, now](codec::packet& p) {
        got_packet = true;
        return engine().on_packet(*this, p, now);
      });
      if (res.ec) {
        engine().on_malformed(*this, res.ec, decoder_.version().value_or(codec::protocol_version::v3_1_1), now);
        return false;
      }
      if (this->is_closing()) return false;
      if (res.consumed < n) unread_.append(data + res.consumed, n - res.consumed);
      if (got_packet) engine().on_packets_read(*this, now);
      // The engine holds the rest back (an authentication runs): a link_event resumes it.
      if (this->paused()) return false;
      if (!this->pace_pending()) return true;
      if (engine().pause_reader(*this)) return false;
      // The subscriber caught up meanwhile (another thread drained it): decode the rest now,
      // before anything newer from the stream.
      if (unread_.empty()) return true;
      rest = std::move(unread_);
      data = rest.data();
      n = rest.size();
    }
  }

  /// Reads again after a pause: first what was read and not decoded, then the stream.
  void continue_reading() {
    flush_scope scope;
    if (!unread_.empty()) {
      detail::pooled_bytes input = std::move(unread_);
      if (!take_input(input.data(), input.size())) return;
    }
    read();
  }

  void write_some() {
    this->set_write_in_flight(true);
    const auto& runs = writing_->runs;
    const std::size_t first = writing_->sent_runs;
    const std::size_t end = std::min(runs.size(), first + max_write_buffers);
    stream_.async_write_some(run_range(runs.data() + first, runs.data() + end),
                             bind_handler([self = detail::ref_ptr<connection>(this)](std::error_code ec, std::size_t n) {
                               self->on_written(ec, n);
                             }));
  }

  void on_written(std::error_code ec, std::size_t n) {
    this->set_write_in_flight(false);
    this->note_written(n);
    if constexpr (counts_bytes) ctx_.note_bytes_sent(n);
    if (!this->is_open()) return;
    if (ec) {
      finish_close();
      return;
    }
    const auto now = ctx_.now();
    flush_scope scope;
    if (!writing_->consume(n)) {
      write_some();
      engine().on_write_progress(*this, now);
      return;
    }
    // The batch is out: its payload references go now, and its buffers back to the pool.
    engine::write_batch_pool::release(std::move(writing_));
    engine().on_write_progress(*this, now);
    if (this->has_queued()) return start_write();
    engine().on_drained(*this, now);
    if (this->has_queued()) return start_write();
    this->release_queue();
    if (this->is_closing()) finish_close();
  }

  void finish_close() {
    const bool was_paused = this->paused();
    if (!this->mark_closed()) return;
    // Without a readability wait a pending read may still fill unread_'s block: its completion
    // gives the block back. A paused reader has no read pending.
    if (waits_for_readability || was_paused) unread_.reset();
    // The engine lets go of the session first: a client that sees the close and reconnects at
    // once must find a clean session already gone.
    engine().on_closed(*this, ctx_.now(), ctx_.system_now());
    if constexpr (has_graceful_shutdown) {
      // Not before the layer is up, nor beside a write (the shutdown writes too).
      if (this->handshake_done() && !this->write_in_flight()) return shut_down_gracefully();
    }
    close_stream();
  }

  void close_stream() {
    std::error_code ignored;
    if constexpr (transport::detail::stream_has_shutdown<stream_type>::value)
      stream_.shutdown(asio::socket_base::shutdown_both, ignored);
    stream_.close(ignored);
  }

  /// The transport's graceful end, bounded by graceful_shutdown_limit: whichever comes first, its
  /// completion or the timer, closes the stream (closing aborts a shutdown still pending). Neither
  /// handler touches the broker, which may be gone once its stop has completed.
  void shut_down_gracefully() {
    struct bound {
      typename Context::timer_type timer;
      bool done = false;
    };
    auto b = std::make_shared<bound>(bound{ctx_.make_timer(get_executor()), false});
    b->timer.expires_after(graceful_shutdown_limit);
    b->timer.async_wait(bind_handler([self = detail::ref_ptr<connection>(this), b](std::error_code ec) {
      if (!ec && !b->done) self->close_stream();  // the peer did not answer in time
    }));
    Transport::async_shutdown(stream_, bind_handler([self = detail::ref_ptr<connection>(this), b](std::error_code) {
                                b->done = true;
                                b->timer.cancel();
                                self->close_stream();
                              }));
  }

  Context& ctx_;
  stream_type stream_;
  codec::decoder decoder_;
  std::unique_ptr<engine::write_batch> writing_;  // the batch being written
  // Read while pausing and not yet decoded; without a readability wait also the block that the
  // pending read fills.
  detail::pooled_bytes unread_;
  // Its source address's count (max_connections_per_address); none for an address not tracked.
  std::unique_ptr<server::address_admission::ticket> admission_;
};

}  // namespace server
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_SERVER_CONNECTION_HPP
