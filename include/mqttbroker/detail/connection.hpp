#ifndef MQTTBROKER_DETAIL_CONNECTION_HPP
#define MQTTBROKER_DETAIL_CONNECTION_HPP

#include <mqttbroker/codec/decoder.hpp>
#include <mqttbroker/codec/encoder.hpp>
#include <mqttbroker/codec/packets.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/detail/block_pool.hpp>
#include <mqttbroker/detail/intrusive_list.hpp>
#include <mqttbroker/detail/ref_counted.hpp>
#include <mqttbroker/error.hpp>
#include <mqttbroker/message.hpp>
#include <mqttbroker/session/state.hpp>

#include <asio/bind_allocator.hpp>
#include <asio/bind_executor.hpp>
#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>
#include <asio/socket_base.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace detail {

/// Bytes of a batch: a run in the batch's arena, or a payload that stays in its message.
struct write_segment {
  std::size_t offset;
  std::size_t size;
  message_ptr payload;  // set: the bytes are this message's payload, not the arena's
};

/// A batch of packets written with one gather write. Headers, and payloads small enough that
/// copying beats another iovec and a reference count, go into the arena back to back, so a burst
/// of small messages is one buffer; a larger payload is referenced where it is.
struct write_batch {
  /// Payloads up to this size are copied next to their header.
  static constexpr std::size_t inline_payload_limit = 512;

  std::vector<std::uint8_t> arena;
  std::vector<write_segment> segments;
  std::vector<asio::const_buffer> iov;  // built when the batch starts writing
  std::size_t bytes = 0;
  std::size_t sent_buffers = 0;  // iov entries the socket has taken whole

  bool empty() const noexcept { return segments.empty(); }

  void clear() noexcept {
    arena.clear();
    segments.clear();
    iov.clear();
    bytes = 0;
    sent_buffers = 0;
  }

  /// Encodes a whole packet into the arena.
  template <class Packet>
  void add(const Packet& p, codec::protocol_version v) {
    std::size_t size = 0;
    if (codec::encoded_size(p, v, size)) return;  // our own packets always fit; nothing to send otherwise
    std::size_t written = 0;
    codec::encode(p, v, extend(size), size, written);
    bytes += size;
  }

  /// Encodes a PUBLISH's header, then copies or references its payload.
  bool add_publish(const codec::publish& p, codec::protocol_version v, const message_ptr& m) {
    std::size_t size = 0;
    if (codec::publish_header_size(p, v, size)) return false;
    const std::size_t payload = p.payload.size();
    const bool inline_payload = payload <= inline_payload_limit;
    std::uint8_t* out = extend(inline_payload ? size + payload : size);
    std::size_t written = 0;
    codec::encode_publish_header(p, v, out, size, written);
    if (inline_payload) {
      if (payload != 0) std::memcpy(out + size, p.payload.data(), payload);
    } else {
      segments.push_back({0, payload, m});
    }
    bytes += size + payload;
    return true;
  }

  /// The gather list, in order.
  void build_iov() {
    iov.clear();
    sent_buffers = 0;
    for (const write_segment& s : segments) {
      if (s.payload)
        iov.emplace_back(s.payload->payload().data(), s.size);
      else
        iov.emplace_back(arena.data() + s.offset, s.size);
    }
  }

  /// Keeps a pooled batch from pinning the memory of one large burst.
  void trim() {
    constexpr std::size_t keep = 64 * 1024;
    if (arena.capacity() > keep) std::vector<std::uint8_t>().swap(arena);
    if (segments.capacity() > keep / sizeof(write_segment)) std::vector<write_segment>().swap(segments);
    if (iov.capacity() > keep / sizeof(asio::const_buffer)) std::vector<asio::const_buffer>().swap(iov);
  }

 private:
  /// `n` more arena bytes, joined to the last arena segment when adjacent.
  std::uint8_t* extend(std::size_t n) {
    const std::size_t off = arena.size();
    arena.resize(off + n);
    if (!segments.empty() && !segments.back().payload && segments.back().offset + segments.back().size == off)
      segments.back().size += n;
    else
      segments.push_back({off, n, message_ptr()});
    return arena.data() + off;
  }
};

/// Write batches kept per thread between bursts: a connection holds one only while it has
/// something to send, so an idle connection costs no write memory, and a busy one allocates none.
class write_batch_pool {
 public:
  static std::unique_ptr<write_batch> acquire() {
    auto& free = local();
    if (free.items.empty()) return std::make_unique<write_batch>();
    std::unique_ptr<write_batch> b = std::move(free.items.back());
    free.items.pop_back();
    return b;
  }
  static void release(std::unique_ptr<write_batch> b) {
    if (!b) return;
    b->clear();
    auto& free = local();
    if (free.items.size() >= max_cached) return;  // freed here
    b->trim();
    free.items.push_back(std::move(b));
  }

 private:
  static constexpr std::size_t max_cached = 64;  // with trim(): at most 4 MiB of arenas kept per thread
  struct cache {
    std::vector<std::unique_ptr<write_batch>> items;
  };
  static cache& local() {
    static thread_local cache c;
    return c;
  }
};

/// A pointer range as an Asio buffer sequence, so a write can start anywhere in a batch.
struct const_buffer_range {
  using value_type = asio::const_buffer;
  using const_iterator = const asio::const_buffer*;
  const asio::const_buffer* first;
  const asio::const_buffer* last;
  const_iterator begin() const noexcept { return first; }
  const_iterator end() const noexcept { return last; }
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
  Strand handler_executor(Stream&) const { return strand_; }
  template <class Handler>
  auto on_strand(Handler h) const { return asio::bind_executor(strand_, std::move(h)); }

 private:
  Strand strand_;
};
template <class Strand, class Executor>
class connection_strand<Strand, Executor, true> {
 protected:
  explicit connection_strand(const Executor&) noexcept {}
  template <class Stream>
  static Executor handler_executor(Stream& s) { return s.get_executor(); }
  template <class Handler>
  static Handler on_strand(Handler h) { return h; }
};

/// One client connection: waits for its socket to be readable, reads into a buffer shared by
/// the thread's connections, decodes, hands packets to the broker, and writes what the broker
/// queues in batches. Kept alive by its pending operations. Between packets it holds no read
/// buffer and no write buffer: only a split packet's bytes, or a paused reader's unread input,
/// stay with the connection.
template <class Broker>
class connection : public list_links,
                   public ref_counted,
                   private connection_strand<typename Broker::locking_type::template strand_type<
                                                 typename Broker::stream_type::executor_type>,
                                             typename Broker::stream_type::executor_type> {
 public:
  using stream_type = typename Broker::stream_type;
  using stream_executor = typename stream_type::executor_type;
  /// The locking policy's strand for the stream's executor, where this connection's handlers run.
  using executor_type = typename Broker::locking_type::template strand_type<stream_executor>;
  using clock = std::chrono::steady_clock;
  using session_record = typename Broker::session_record;

  connection(Broker& b, stream_type s)
      : connection_strand<executor_type, stream_executor>(Broker::locking_type::make_strand(s.get_executor())),
        broker_(b),
        stream_(std::move(s)),
        decoder_(codec::decoder_options{codec::role::server, b.options().max_packet_size, std::nullopt}),
        taken_over_(false),
        connected_(false),
        write_in_flight_(false),
        flush_deferred_(false),
        closing_(false),
        closed_(false),
        graceful_(false) {}

  /// A reference to this connection, which its pending operations and the broker's lists hold.
  ref_ptr<connection> self() noexcept { return ref_ptr<connection>(this); }

  executor_type get_executor() { return this->handler_executor(stream_); }

  void start() {
    const auto now = clock::now();
    note_progress(now);
    restart_deadline(now);
    read();
  }

  /// Defers the writes a handler queues to its end, so that everything one read produces (for
  /// every connection it reaches on this thread) leaves in one write per connection, not the
  /// first packet alone. Nested scopes flush at the outermost.
  class flush_scope {
   public:
    flush_scope() noexcept { ++pending().depth; }
    flush_scope(const flush_scope&) = delete;
    flush_scope& operator=(const flush_scope&) = delete;
    ~flush_scope() {
      auto& p = pending();
      if (--p.depth != 0) return;
      // A flush may complete synchronously on some transports and queue more: index, not iterate.
      for (std::size_t i = 0; i < p.connections.size(); ++i) {
        ref_ptr<connection> c = std::move(p.connections[i]);
        c->flush_deferred_ = false;
        c->flush();
      }
      p.connections.clear();
    }
  };

  // ---- called by the broker, on this connection's executor

  codec::protocol_version version() const noexcept { return version_; }
  /// The session this connection serves; none before CONNACK and after a takeover.
  session_record* session() const noexcept { return taken_over_ ? nullptr : session_.get(); }
  /// Empty before CONNACK.
  const std::string& client_id() const noexcept {
    static const std::string none;
    return session_ ? session_->state.client_id() : none;
  }
  bool is_open() const noexcept { return !closed_; }

  /// Queues a PUBLISH for this client; it goes out with the batch.
  void send_publish(const session::outgoing& o) {
    // Closing: a DISCONNECT may be queued, and nothing follows it [MQTT-3.14.4-1]. A QoS 1/2
    // message stays in flight in the session and is re-sent on reconnect.
    if (closed_ || closing_) return;
    codec::publish p;
    p.topic = o.msg->topic();
    p.payload = o.msg->payload();
    p.qos_level = o.qos_level;
    p.retain = o.retain;
    p.dup = o.dup;
    p.packet_id = o.packet_id;
    if (version_ == codec::protocol_version::v5) {
      if (!o.subscription_ids.empty() || !o.msg->properties().empty()) {
        static thread_local codec::properties_builder props;
        props.clear();
        for (const codec::property& pr : o.msg->properties()) props.add(pr);
        for (std::uint32_t id : o.subscription_ids) props.add(codec::property_id::subscription_identifier, id);
        p.properties = props.view();
      }
    }
    write_batch& q = queue();
    const std::size_t before = q.bytes;
    if (!q.add_publish(p, version_, o.msg)) return;
    note_queued(q.bytes - before);
    request_flush();
  }

  /// Bytes queued or being written and not yet taken by the socket. Readable from any thread
  /// (a publisher's, to drop QoS 0 for a client that stopped reading); written only here.
  std::size_t backlog_bytes() const noexcept { return unsent_.load(std::memory_order_relaxed); }

  /// When this client last read something we wrote or sent us bytes (any thread may ask): a
  /// connection with a backlog and no progress for a while has stopped reading.
  clock::time_point last_progress() const noexcept {
    return clock::time_point(clock::duration(last_progress_.load(std::memory_order_relaxed)));
  }

  template <class Packet>
  void send(const Packet& p) {
    if (closed_ || closing_) return;
    enqueue(p, version_);
    request_flush();
  }

  /// Ends the connection. A 5.0 client first gets a DISCONNECT with `reason` when `notify`.
  void close(reason_code reason, bool notify, bool graceful) {
    if (closed_) return;
    if (notify && connected_ && version_ == codec::protocol_version::v5) {
      codec::disconnect d;
      d.reason = reason;
      enqueue(d, version_);
    }
    closing_ = true;
    graceful_ = graceful_ || graceful;
    if (!write_in_flight_) {
      if (queued_ && !queued_->empty()) {
        flush();
        return;  // the write's completion finishes the close
      }
      finish_close();
    }
  }

  /// The session moved to a new connection: close this one without touching the session.
  void taken_over() {
    taken_over_ = true;  // the session stays referenced, for the client identifier, but unused
    close(reason_code::session_taken_over, true, false);
  }

 private:
  friend Broker;

  /// The most one read takes. A paused reader keeps what it has not decoded, so this also bounds
  /// the memory a paused connection holds.
  static constexpr std::size_t read_chunk = 16 * 1024;
  /// Reads per readiness before the connection yields to others on its thread.
  static constexpr int reads_per_wake = 4;
  /// The most buffers one gather write passes to the socket (Asio's own cap per call is 64).
  static constexpr std::size_t max_write_buffers = 64;

  /// A completion handler for this connection's operations: its memory from the thread's pool,
  /// and on the connection's strand.
  template <class Handler>
  auto bind_handler(Handler h) {
    return this->on_strand(asio::bind_allocator(pooled_allocator<void>(), std::move(h)));
  }

  struct flush_list {
    int depth = 0;
    std::vector<ref_ptr<connection>> connections;
  };
  static flush_list& pending() {
    static thread_local flush_list p;
    return p;
  }

  static std::uint8_t* read_buffer() {
    // One per thread: connections of a thread read and decode one after another.
    static thread_local std::unique_ptr<std::uint8_t[]> buf(new std::uint8_t[read_chunk]);
    return buf.get();
  }

  void read() {
    if (closing_ || closed_ || paused_.load(std::memory_order_relaxed)) return;
    stream_.async_wait(asio::socket_base::wait_read, bind_handler([self = self()](std::error_code ec) {
                         self->on_readable(ec);
                       }));
  }

  void on_readable(std::error_code ec) {
    if (closed_) return;
    if (ec) {
      closing_ = true;
      finish_close();  // socket error
      return;
    }
    // Closing (taken over, refused, stopping): what still arrives is not acted on; a taken-over
    // connection has no session any more. The pending write's completion finishes the close.
    if (closing_) return;
    flush_scope scope;
    std::uint8_t* buf = read_buffer();
    for (int round = 0; round < reads_per_wake; ++round) {
      const std::size_t n = stream_.read_some(asio::buffer(buf, read_chunk), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) break;
      if (ec) {
        closing_ = true;
        finish_close();  // EOF without DISCONNECT, or a socket error: an ungraceful end
        return;
      }
      if (!take_input(buf, n)) return;
      if (n < read_chunk) break;  // the socket is drained
    }
    read();
  }

  /// Decodes and handles `n` bytes. False when the connection stopped reading: it is closing,
  /// or paused, with what it did not decode kept in unread_.
  bool take_input(const std::uint8_t* data, std::size_t n) {
    const auto now = clock::now();  // once per read, not per packet
    note_progress(now);
    pooled_bytes held;  // the rest of the input, when a pause did not happen after all
    for (;;) {
      bool got_packet = false;
      const auto res = decoder_.feed(data, n, [this, &got_packet](codec::packet& p) {
        got_packet = true;
        broker_.handle_packet(*this, p);
        return !closing_ && !pace_target_;
      });
      if (res.ec) {
        on_protocol_violation(res.ec);
        return false;
      }
      if (closing_ || closed_) return false;
      if (res.consumed < n) unread_.append(data + res.consumed, n - res.consumed);
      if (got_packet) restart_deadline(now);
      if (!pace_target_) return true;
      if (broker_.pause_reader(*this)) return false;
      // The subscriber caught up meanwhile (another thread drained it): decode the rest now,
      // before anything newer from the socket.
      if (unread_.empty()) return true;
      held = std::move(unread_);
      data = held.data();
      n = held.size();
    }
  }

  /// Reads again after a pause: first what was read and not decoded, then the socket. Called
  /// on this connection's executor.
  void resume() {
    if (!paused_.load(std::memory_order_relaxed) || closed_) return;
    paused_.store(false, std::memory_order_relaxed);
    // The silence was ours, not the client's: Keep Alive counts from now.
    restart_deadline(clock::now());
    if (closing_) return;
    flush_scope scope;
    if (!unread_.empty()) {
      pooled_bytes input = std::move(unread_);
      if (!take_input(input.data(), input.size())) return;
    }
    read();
  }

  /// A packet the codec or the broker refused: the reaction its version requires, then close.
  void on_protocol_violation(const std::error_code& ec) {
    broker_.count_protocol_error();
    if (!connected_) {
      // Before CONNACK: a CONNACK with the refusal where the version has a code for it
      // [MQTT-3.2.2-5] (3.1.1 return code 1 for an unknown level [MQTT-3.1.2-2]).
      const auto v = decoder_.version();
      if (v == codec::protocol_version::v5) {
        codec::connack ack;
        ack.code = static_cast<std::uint8_t>(to_reason_code(ec));
        enqueue(ack, codec::protocol_version::v5);
      } else if (auto rc = to_connack_return_code(ec)) {
        codec::connack ack;
        ack.code = static_cast<std::uint8_t>(*rc);
        enqueue(ack, codec::protocol_version::v3_1_1);
      }
      close(reason_code::unspecified_error, false, false);
      return;
    }
    // 5.0: DISCONNECT with the reason code [MQTT-4.13.1-1]; 3.1.1: just close [MQTT-4.8.0-1].
    close(to_reason_code(ec), true, false);
  }

  write_batch& queue() {
    if (!queued_) queued_ = write_batch_pool::acquire();
    return *queued_;
  }

  /// Queues a packet without starting a write (the caller flushes or closes).
  template <class Packet>
  void enqueue(const Packet& p, codec::protocol_version v) {
    write_batch& q = queue();
    const std::size_t before = q.bytes;
    q.add(p, v);
    note_queued(q.bytes - before);
  }

  void note_queued(std::size_t n) noexcept {
    const std::size_t before = unsent_.load(std::memory_order_relaxed);
    // Work for a client that had none: it cannot have been stuck while it had nothing to do.
    if (before == 0) note_progress(clock::now());
    unsent_.store(before + n, std::memory_order_relaxed);
  }

  void note_progress(clock::time_point t) noexcept {
    last_progress_.store(t.time_since_epoch().count(), std::memory_order_relaxed);
  }

  void request_flush() {
    auto& p = pending();
    if (p.depth == 0) return flush();
    if (flush_deferred_) return;
    flush_deferred_ = true;
    p.connections.push_back(self());
  }

  void flush() {
    if (write_in_flight_ || closed_ || !queued_ || queued_->empty()) return;
    writing_ = std::move(queued_);  // the previous batch went back to the pool when it completed
    writing_->build_iov();
    write_some();
  }

  void write_some() {
    write_in_flight_ = true;
    const auto& iov = writing_->iov;
    const std::size_t first = writing_->sent_buffers;
    const std::size_t end = std::min(iov.size(), first + max_write_buffers);
    stream_.async_write_some(const_buffer_range{iov.data() + first, iov.data() + end},
                             bind_handler([self = self()](std::error_code ec, std::size_t n) {
                               self->on_written(ec, n);
                             }));
  }

  void on_written(std::error_code ec, std::size_t n) {
    write_in_flight_ = false;
    unsent_.store(unsent_.load(std::memory_order_relaxed) - n, std::memory_order_relaxed);
    if (closed_) return;
    if (ec) {
      closing_ = true;
      finish_close();
      return;
    }
    note_progress(clock::now());
    flush_scope scope;
    auto& iov = writing_->iov;
    std::size_t& done = writing_->sent_buffers;
    while (n != 0) {
      asio::const_buffer& b = iov[done];
      if (n >= b.size()) {
        n -= b.size();
        ++done;
      } else {
        b += n;
        n = 0;
      }
    }
    if (done < iov.size()) {
      write_some();
      broker_.on_write_progress(*this);
      return;
    }
    // The batch is out: its payload references go now, and its buffers back to the pool.
    write_batch_pool::release(std::move(writing_));
    broker_.on_write_progress(*this);
    if (queued_ && !queued_->empty()) return flush();
    broker_.on_connection_drained(*this);
    if (queued_ && !queued_->empty()) return flush();
    write_batch_pool::release(std::move(queued_));
    if (closing_) finish_close();
  }

  void finish_close() {
    if (closed_) return;
    closed_ = true;
    unread_.reset();
    // The broker lets go of the session first: a client that sees the close and reconnects at
    // once must find a clean session already gone.
    broker_.on_connection_closed(*this, graceful_);
    std::error_code ignored;
    stream_.shutdown(asio::socket_base::shutdown_both, ignored);
    stream_.close(ignored);
  }

  // ---- deadlines, checked by the broker's sweep (no timer per connection)

  using deadline_rep = clock::duration::rep;
  static constexpr deadline_rep no_deadline = std::numeric_limits<deadline_rep>::max();

  /// Sets the one deadline the sweep watches, counted from `from`: the accept, the last packet,
  /// the read that paused, or the end of a pause. Before CONNACK it is the CONNECT timeout (no packet comes before the
  /// CONNECT); after, 1.5 times Keep Alive. While paused Keep Alive does not run: the deadline is
  /// when the client this reader waits for counts as stuck, and the reader goes on regardless.
  void restart_deadline(clock::time_point from) noexcept {
    deadline_rep d = no_deadline;
    if (paused_.load(std::memory_order_relaxed))
      d = (from + broker_.options().stuck_client_timeout).time_since_epoch().count();
    else if (!connected_)
      d = (from + broker_.options().connect_timeout).time_since_epoch().count();
    else if (keep_alive_limit_.count() != 0)
      d = (from + keep_alive_limit_).time_since_epoch().count();
    deadline_.store(d, std::memory_order_relaxed);
  }

  /// Any thread: whether the sweep should have this connection look at its deadline.
  bool deadline_passed(clock::time_point now) const noexcept {
    return now.time_since_epoch().count() >= deadline_.load(std::memory_order_relaxed);
  }

  /// On this connection's executor, when the sweep saw the deadline pass.
  void check_deadline() {
    if (closed_) return;
    const auto now = clock::now();
    if (paused_.load(std::memory_order_relaxed)) {
      if (deadline_passed(now)) resume();
      return;
    }
    if (closing_) return;
    if (!deadline_passed(now)) return;  // moved on since the sweep looked
    if (!connected_) {
      // No complete CONNECT within the timeout: close without a word.
      broker_.count_connect_timeout();
      close(reason_code::maximum_connect_time, false, false);
      return;
    }
    // [MQTT-3.1.2-24] nothing within 1.5 times the Keep Alive: disconnect, and the will goes out.
    broker_.count_keep_alive_timeout();
    close(reason_code::keep_alive_timeout, true, false);
  }

  /// After CONNACK: Keep Alive replaces the CONNECT timeout.
  void on_connected(codec::protocol_version v, ref_ptr<session_record> s, std::chrono::milliseconds keep_alive_limit) {
    connected_ = true;
    version_ = v;
    session_ = std::move(s);
    keep_alive_limit_ = std::chrono::duration_cast<decltype(keep_alive_limit_)>(keep_alive_limit);
    restart_deadline(clock::now());
  }

  // First: it fills the padding after the base classes (20 bytes).
  std::chrono::duration<std::uint32_t, std::milli> keep_alive_limit_{0};  // at most 1.5 x 65535 s
  Broker& broker_;
  stream_type stream_;
  codec::decoder decoder_;
  std::unique_ptr<write_batch> queued_;   // packets waiting for the write in flight
  std::unique_ptr<write_batch> writing_;  // the batch being written
  pooled_bytes unread_;                   // read while pausing, not yet decoded
  std::atomic<std::size_t> unsent_{0};    // bytes in queued_ and writing_ not yet written
  std::atomic<deadline_rep> last_progress_{0};
  std::atomic<deadline_rep> deadline_{no_deadline};
  // Shared with the broker's registry: a record the registry dropped (its session ended, or was
  // taken over and ended) stays valid here until this connection lets go of it.
  ref_ptr<session_record> session_;
  // Publisher pacing: a session this connection's messages went to while its client was behind.
  // The broker sets it while routing; after the packet, the connection pauses on it.
  ref_ptr<session_record> pace_target_;
  message_ptr will_;  // published if the connection ends without DISCONNECT
  std::chrono::duration<std::uint32_t> will_delay_{0};  // 5.0 Will Delay Interval
  codec::protocol_version version_ = codec::protocol_version::v3_1_1;
  std::atomic<bool> paused_{false};  // read by other threads
  // Only this connection's executor touches these, so they can share a byte (a broker keeps one
  // connection per client); set in the constructor, as C++17 has no initialisers for bit-fields.
  bool taken_over_ : 1;
  bool connected_ : 1;
  bool write_in_flight_ : 1;
  bool flush_deferred_ : 1;
  bool closing_ : 1;
  bool closed_ : 1;
  bool graceful_ : 1;  // DISCONNECT received: no will
};

}  // namespace detail
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_DETAIL_CONNECTION_HPP
