#ifndef MQTTBROKER_DETAIL_CONNECTION_HPP
#define MQTTBROKER_DETAIL_CONNECTION_HPP

#include <mqttbroker/codec/decoder.hpp>
#include <mqttbroker/codec/encoder.hpp>
#include <mqttbroker/codec/packets.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/error.hpp>
#include <mqttbroker/message.hpp>
#include <mqttbroker/session/state.hpp>

#include <asio/bind_executor.hpp>
#include <asio/buffer.hpp>
#include <asio/post.hpp>
#include <asio/socket_base.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace detail {

/// One packet waiting to be written: its encoded header in the connection's header arena, and
/// for a PUBLISH the message whose payload follows it on the wire.
struct pending_packet {
  std::size_t header_offset;
  std::size_t header_size;
  message_ptr payload;  // empty for packets without one
};

/// The bytes and messages of a batch of packets, written with one gather write.
struct write_batch {
  std::vector<std::uint8_t> headers;
  std::vector<pending_packet> packets;
  std::size_t bytes = 0;

  void clear() noexcept {
    headers.clear();
    packets.clear();
    bytes = 0;
  }
  bool empty() const noexcept { return packets.empty(); }

  /// Encodes a whole packet into the header arena.
  template <class Packet>
  void add(const Packet& p, codec::protocol_version v) {
    std::size_t size = 0;
    if (codec::encoded_size(p, v, size)) return;  // our own packets always fit; nothing to send otherwise
    const std::size_t off = headers.size();
    headers.resize(off + size);
    std::size_t written = 0;
    codec::encode(p, v, headers.data() + off, size, written);
    packets.push_back({off, written, message_ptr()});
    bytes += written;
  }

  /// Encodes a PUBLISH's header; the payload stays in the message.
  bool add_publish(const codec::publish& p, codec::protocol_version v, const message_ptr& m) {
    std::size_t size = 0;
    if (codec::publish_header_size(p, v, size)) return false;
    const std::size_t off = headers.size();
    headers.resize(off + size);
    std::size_t written = 0;
    codec::encode_publish_header(p, v, headers.data() + off, size, written);
    packets.push_back({off, written, m});
    bytes += written + p.payload.size();
    return true;
  }
};

/// One client connection: reads and decodes packets, hands them to the broker, and writes what
/// the broker queues in batches, one gather write at a time. Kept alive by its pending handlers.
template <class Broker>
class connection : public std::enable_shared_from_this<connection<Broker>> {
 public:
  using stream_type = typename Broker::stream_type;
  using clock = std::chrono::steady_clock;
  using session_record = typename Broker::session_record;

  connection(Broker& b, stream_type s)
      : broker_(b),
        stream_(std::move(s)),
        timer_(stream_.get_executor()),
        decoder_(codec::decoder_options{codec::role::server, b.options().max_packet_size, std::nullopt}) {}

  auto get_executor() { return stream_.get_executor(); }

  void start() {
    last_packet_ = clock::now();
    arm_timer(broker_.options().connect_timeout);
    read();
  }

  // ---- called by the broker, on this connection's executor

  codec::protocol_version version() const noexcept { return version_; }
  session_record* session() const noexcept { return session_.get(); }
  const std::string& client_id() const noexcept { return client_id_; }
  bool is_open() const noexcept { return !closed_; }

  /// Queues a PUBLISH for this client and starts a write if none is in flight.
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
    codec::properties_builder& props = props_scratch_;
    if (version_ == codec::protocol_version::v5) {
      if (!o.subscription_ids.empty() || !o.msg->properties().empty()) {
        props.clear();
        for (const codec::property& pr : o.msg->properties()) props.add(pr);
        for (std::uint32_t id : o.subscription_ids) props.add(codec::property_id::subscription_identifier, id);
        p.properties = props.view();
      }
    }
    const std::size_t before = queued_.bytes;
    if (!queued_.add_publish(p, version_, o.msg)) return;
    note_queued(queued_.bytes - before);
    flush();
  }

  /// Bytes queued or being written and not yet taken by the socket. Readable from any thread
  /// (a publisher's, to drop QoS 0 for a client that stopped reading); written only here.
  std::size_t backlog_bytes() const noexcept { return unsent_.load(std::memory_order_relaxed); }

  template <class Packet>
  void send(const Packet& p) {
    if (closed_ || closing_) return;
    enqueue(p, version_);
    flush();
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
      if (!queued_.empty()) {
        flush();
        return;  // the write's completion finishes the close
      }
      finish_close();
    }
  }

  /// The session moved to a new connection: close this one without touching the session.
  void taken_over() {
    taken_over_ = true;
    session_ = nullptr;
    close(reason_code::session_taken_over, true, false);
  }

 private:
  friend Broker;

  void read() {
    if (closing_ || closed_) return;
    if (!read_buffer_) read_buffer_ = std::make_unique<std::uint8_t[]>(read_buffer_size);
    stream_.async_read_some(asio::buffer(read_buffer_.get(), read_buffer_size),
                            [self = this->shared_from_this()](std::error_code ec, std::size_t n) {
                              self->on_read(ec, n);
                            });
  }

  void on_read(std::error_code ec, std::size_t n) {
    if (closed_) return;
    if (ec) {
      closing_ = true;
      finish_close();  // socket error or EOF without DISCONNECT: an ungraceful end
      return;
    }
    // Closing (taken over, refused, stopping): what still arrives is not acted on; a taken-over
    // connection has no session any more. The pending write's completion finishes the close.
    if (closing_) return;
    const auto res = decoder_.feed(read_buffer_.get(), n, [this](codec::packet& p) {
      last_packet_ = clock::now();
      broker_.handle_packet(*this, p);
      return !closing_;
    });
    if (res.ec) {
      on_protocol_violation(res.ec);
      return;
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

  /// Queues a packet without starting a write (the caller flushes or closes).
  template <class Packet>
  void enqueue(const Packet& p, codec::protocol_version v) {
    const std::size_t before = queued_.bytes;
    queued_.add(p, v);
    note_queued(queued_.bytes - before);
  }

  void note_queued(std::size_t n) noexcept {
    unsent_.store(unsent_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

  void flush() {
    if (write_in_flight_ || queued_.empty() || closed_) return;
    std::swap(queued_, writing_);
    buffers_.clear();
    for (const pending_packet& pk : writing_.packets) {
      buffers_.emplace_back(writing_.headers.data() + pk.header_offset, pk.header_size);
      if (pk.payload && !pk.payload->payload().empty())
        buffers_.emplace_back(pk.payload->payload().data(), pk.payload->payload().size());
    }
    write_in_flight_ = true;
    asio::async_write(stream_, buffers_, [self = this->shared_from_this()](std::error_code ec, std::size_t) {
      self->on_written(ec);
    });
  }

  void on_written(std::error_code ec) {
    write_in_flight_ = false;
    unsent_.store(unsent_.load(std::memory_order_relaxed) - writing_.bytes, std::memory_order_relaxed);
    writing_.clear();
    if (closed_) return;
    if (ec) {
      closing_ = true;
      finish_close();
      return;
    }
    if (!queued_.empty()) {
      flush();
      return;
    }
    broker_.on_connection_drained(*this);
    if (!queued_.empty()) {
      flush();
      return;
    }
    if (closing_) finish_close();
  }

  void finish_close() {
    if (closed_) return;
    closed_ = true;
    timer_.cancel();
    // The broker lets go of the session first: a client that sees the close and reconnects at
    // once must find a clean session already gone.
    broker_.on_connection_closed(*this, graceful_);
    std::error_code ignored;
    stream_.shutdown(asio::socket_base::shutdown_both, ignored);
    stream_.close(ignored);
  }

  void arm_timer(std::chrono::milliseconds after) {
    timer_.expires_at(last_packet_ + after);
    timer_.async_wait([self = this->shared_from_this()](std::error_code ec) {
      if (!ec) self->on_timer();
    });
  }

  void on_timer() {
    if (closed_) return;
    if (!connected_) {
      // No complete CONNECT within the timeout: close without a word.
      broker_.count_connect_timeout();
      close(reason_code::maximum_connect_time, false, false);
      return;
    }
    if (keep_alive_limit_.count() == 0) return;
    const auto deadline = last_packet_ + keep_alive_limit_;
    if (clock::now() >= deadline) {
      // [MQTT-3.1.2-24] nothing within 1.5 times the Keep Alive: disconnect, and the will goes out.
      close(reason_code::keep_alive_timeout, true, false);
      return;
    }
    arm_timer(keep_alive_limit_);
  }

  /// After CONNACK: the keep-alive timer replaces the CONNECT timeout.
  void on_connected(codec::protocol_version v, std::string client_id, std::shared_ptr<session_record> s,
                    std::chrono::milliseconds keep_alive_limit) {
    connected_ = true;
    version_ = v;
    client_id_ = std::move(client_id);
    session_ = std::move(s);
    keep_alive_limit_ = keep_alive_limit;
    timer_.cancel();
    if (keep_alive_limit_.count() != 0) arm_timer(keep_alive_limit_);
  }

  static constexpr std::size_t read_buffer_size = 4 * 1024;

  Broker& broker_;
  stream_type stream_;
  asio::steady_timer timer_;
  codec::decoder decoder_;
  std::unique_ptr<std::uint8_t[]> read_buffer_;
  write_batch queued_;
  write_batch writing_;
  std::vector<asio::const_buffer> buffers_;
  std::atomic<std::size_t> unsent_{0};  // queued_.bytes + writing_.bytes
  codec::properties_builder props_scratch_;
  clock::time_point last_packet_{};
  std::chrono::milliseconds keep_alive_limit_{0};
  codec::protocol_version version_ = codec::protocol_version::v3_1_1;
  std::string client_id_;
  // Shared with the broker's registry: a record the registry dropped (its session ended, or was
  // taken over and ended) stays valid here until this connection lets go of it.
  std::shared_ptr<session_record> session_;
  message_ptr will_;  // published if the connection ends without DISCONNECT
  std::chrono::seconds will_delay_{0};  // 5.0 Will Delay Interval
  bool taken_over_ = false;
  bool connected_ = false;
  bool write_in_flight_ = false;
  bool closing_ = false;
  bool closed_ = false;
  bool graceful_ = false;  // DISCONNECT received: no will
};

}  // namespace detail
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_DETAIL_CONNECTION_HPP
