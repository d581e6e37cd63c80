#ifndef MQTTBROKER_TESTS_STREAM_CLIENT_HPP
#define MQTTBROKER_TESTS_STREAM_CLIENT_HPP

// An asynchronous MQTT test client over any Asio stream (the memory transport's, a TCP socket),
// driven by the test's own io_context: shared by the broker tests and the SQLite store's tests.
// It encodes with the project's codec and decodes what the broker sends into rx records.
#include <mqttbroker/codec.hpp>
#include <mqttbroker/transport/memory.hpp>

#include "catch.hpp"
#include "rx.hpp"

#include <asio/buffer.hpp>
#include <asio/io_context.hpp>
#include <asio/write.hpp>

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace test_client {

namespace codec = ::mqttbroker::codec;
using ::mqttbroker::reason_code;
using codec::protocol_version;
using codec::qos;
using test_rx::rx;
using test_rx::to_rx;

struct will_spec {
  std::string topic, payload;
  qos qos_level = qos::at_most_once;
  bool retain = false;
};

/// A test client over a stream (the memory transport's, or a TCP socket): encodes with the
/// project's codec, decodes what the broker sends into rx records. Its handlers own its state, so it may go away with operations pending.
template <class Stream>
class basic_client {
 public:
  basic_client(Stream stream, protocol_version v) : s_(std::make_shared<state>(std::move(stream), v)) { read(s_); }
  basic_client(const basic_client&) = delete;
  basic_client& operator=(const basic_client&) = delete;
  ~basic_client() { close(); }

  protocol_version version() const { return s_->version; }

  void send_raw(std::string bytes) {
    if (corked_) {
      corked_->append(bytes);
      return;
    }
    s_->out.push_back(std::move(bytes));
    if (!s_->writing) write_next(s_);
  }
  /// Until uncork(), packets are collected and then written at once: the broker reads them
  /// together.
  void cork() { corked_.emplace(); }
  void uncork() {
    std::string bytes = std::move(*corked_);
    corked_.reset();
    send_raw(std::move(bytes));
  }
  template <class Packet>
  void send(const Packet& p) {
    std::string bytes;
    REQUIRE_FALSE(codec::encode(p, s_->version, bytes));
    send_raw(std::move(bytes));
  }

  void connect(const std::string& id, bool clean = true, const std::optional<will_spec>& will = std::nullopt,
               std::optional<std::string_view> username = std::nullopt) {
    codec::connect c;
    c.version = s_->version;
    c.client_id = id;
    c.clean_start = clean;
    c.keep_alive = keep_alive_;
    codec::properties_builder will_props;
    if (will) {
      codec::will_message w;
      w.topic = will->topic;
      w.payload = will->payload;
      w.qos_level = will->qos_level;
      w.retain = will->retain;
      if (will_delay_) {
        will_props.add(codec::property_id::will_delay_interval, *will_delay_);
        w.properties = will_props.view();
      }
      c.will = w;
    }
    if (username) {
      c.username = *username;
      c.password = std::string_view(password_);
    }
    codec::properties_builder props;
    if (session_expiry_) {
      props.add(codec::property_id::session_expiry_interval, *session_expiry_);
      c.properties = props.view();
    }
    send(c);
  }

  /// 5.0: the Session Expiry Interval the next connect() asks for (a 5.0 session outlives its
  /// connection only with one).
  void set_session_expiry(std::uint32_t seconds) { session_expiry_ = seconds; }
  /// The password a connect() with a user name sends ("secret" by default).
  void set_password(std::string p) { password_ = std::move(p); }
  /// The Keep Alive the next connect() asks for (0, no limit, by default).
  void set_keep_alive(std::uint16_t seconds) { keep_alive_ = seconds; }
  /// 5.0: the Will Delay Interval of the next connect()'s will.
  void set_will_delay(std::uint32_t seconds) { will_delay_ = seconds; }

  /// 5.0: DISCONNECT with a reason and, when given, a new Session Expiry Interval.
  void disconnect(reason_code reason, std::optional<std::uint32_t> session_expiry = std::nullopt) {
    codec::disconnect d;
    d.reason = reason;
    codec::properties_builder props;
    if (session_expiry) {
      props.add(codec::property_id::session_expiry_interval, *session_expiry);
      d.properties = props.view();
    }
    send(d);
  }

  void subscribe(std::uint16_t id, std::vector<std::pair<std::string, qos>> filters) {
    codec::subscribe s;
    s.packet_id = id;
    for (const auto& f : filters) {
      codec::subscribe_entry e;
      e.filter = f.first;
      e.options.max_qos = f.second;
      s.entries.push_back(e);
    }
    send(s);
  }
  void subscribe(std::uint16_t id, const std::string& filter, qos q) { subscribe(id, {{filter, q}}); }
  /// One filter with all its options (5.0: No Local, Retain As Published, Retain Handling).
  void subscribe(std::uint16_t id, const std::string& filter, const codec::subscribe_options& o) {
    codec::subscribe s;
    s.packet_id = id;
    codec::subscribe_entry e;
    e.filter = filter;
    e.options = o;
    s.entries.push_back(e);
    send(s);
  }

  void unsubscribe(std::uint16_t id, const std::string& filter) {
    codec::unsubscribe u;
    u.packet_id = id;
    u.filters.push_back(filter);
    send(u);
  }

  void publish(const std::string& topic, const std::string& payload, qos q = qos::at_most_once, std::uint16_t id = 0,
               bool retain = false, bool dup = false) {
    codec::publish p;
    p.topic = topic;
    p.payload = payload;
    p.qos_level = q;
    p.packet_id = id;
    p.retain = retain;
    p.dup = dup;
    send(p);
  }

  template <class Ack>
  void ack(std::uint16_t id) {
    Ack a;
    a.packet_id = id;
    send(a);
  }
  void puback(std::uint16_t id) { ack<codec::puback>(id); }
  void pubrec(std::uint16_t id) { ack<codec::pubrec>(id); }
  void pubrel(std::uint16_t id) { ack<codec::pubrel>(id); }
  void pubcomp(std::uint16_t id) { ack<codec::pubcomp>(id); }
  void disconnect() { send(codec::disconnect{}); }

  /// Drops the connection without DISCONNECT.
  void close() {
    std::error_code ignored;
    s_->stream.close(ignored);
  }

  /// Whether the broker closed the connection (EOF) or it was closed here.
  bool closed() const { return s_->closed; }
  std::error_code decode_error() const { return s_->decode_ec; }

  std::size_t pending() const { return s_->inbox.size(); }
  bool empty() const { return s_->inbox.empty(); }

  /// The oldest packet not yet looked at.
  rx pop() {
    REQUIRE_FALSE(s_->inbox.empty());
    rx r = std::move(s_->inbox.front());
    s_->inbox.pop_front();
    return r;
  }
  rx pop(codec::packet_type t) {
    rx r = pop();
    INFO("expected " << codec::to_string(t) << ", got " << codec::to_string(r.type));
    REQUIRE(r.type == t);
    return r;
  }
  /// Every PUBLISH received so far (other packets stay).
  std::vector<rx> publishes() {
    std::vector<rx> out;
    std::deque<rx> rest;
    for (rx& r : s_->inbox) {
      if (r.type == codec::packet_type::publish)
        out.push_back(std::move(r));
      else
        rest.push_back(std::move(r));
    }
    s_->inbox.swap(rest);
    return out;
  }

 private:
  struct state {
    state(Stream s, protocol_version v)
        : stream(std::move(s)), version(v), decoder(codec::decoder_options{codec::role::client, codec::max_packet_size, v}) {}
    Stream stream;
    protocol_version version;
    codec::decoder decoder;
    std::array<std::uint8_t, 512> buffer{};  // small on purpose: packets arrive split across reads
    std::deque<std::string> out;
    bool writing = false;
    std::deque<rx> inbox;
    bool closed = false;
    std::error_code decode_ec;
  };

  static void read(const std::shared_ptr<state>& s) {
    s->stream.async_read_some(asio::buffer(s->buffer), [s](std::error_code ec, std::size_t n) {
      if (ec) {
        s->closed = true;
        return;
      }
      const auto res = s->decoder.feed(s->buffer.data(), n, [&](codec::packet& p) { s->inbox.push_back(to_rx(p)); });
      if (res.ec) {
        s->decode_ec = res.ec;
        s->closed = true;
        return;
      }
      read(s);
    });
  }

  static void write_next(const std::shared_ptr<state>& s) {
    if (s->out.empty()) {
      s->writing = false;
      return;
    }
    s->writing = true;
    asio::async_write(s->stream, asio::buffer(s->out.front()), [s](std::error_code ec, std::size_t) {
      s->out.pop_front();
      if (ec) s->out.clear();
      write_next(s);
    });
  }

  std::shared_ptr<state> s_;
  std::optional<std::uint32_t> session_expiry_;
  std::optional<std::uint32_t> will_delay_;
  std::uint16_t keep_alive_ = 0;
  std::string password_ = "secret";
  std::optional<std::string> corked_;
};

/// A test client over the memory transport, connected to `listener`.
class memory_client : public basic_client<::mqttbroker::transport::memory_stream> {
 public:
  memory_client(asio::io_context& io, const std::string& listener, protocol_version v)
      : basic_client(::mqttbroker::transport::memory::connect(io.get_executor(), listener), v) {}
};

}  // namespace test_client

#endif  // MQTTBROKER_TESTS_STREAM_CLIENT_HPP
