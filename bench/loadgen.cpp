// loadgen: an MQTT load generator for comparing brokers (issue 5). It drives any MQTT 3.1.1/5.0
// broker over TCP, TLS with --tls, or WebSocket with --ws, and reports throughput, end-to-end latency, loss, duplication
// and reordering; bench/compare runs it against mqttbroker and Mosquitto side by side.
//
// It must cost less CPU than the broker it loads, so the hot path does no heap allocation:
// publishers copy a pre-encoded PUBLISH header and patch the packet identifier, batch many
// packets into one write, subscribers read in large chunks, decode with the project's incremental
// decoder in place, and count into fixed arrays (a log-linear histogram, a sequence bitmap per
// stream). Each payload carries a run tag, the publisher id, a sequence number and the send time
// (ns, steady_clock; publishers and subscribers share the clock because they share the process).
//
// Exit code: 0 when the run is good, 2 when it FAILED (a QoS 1/2 message lost or duplicated, a
// retained message missing at QoS 1/2, nothing delivered), 1 when it could not run (no broker,
// refused connections, bad arguments). --json prints the results as one line on stdout; the
// human summary goes to stderr.

// Asio keeps the memory of finished asynchronous operations in a per-thread cache of 2 blocks by
// default; with a read and a write outstanding on every connection that misses and allocates.
// A larger cache makes the steady state allocation-free. (Before any Asio header.)
#ifndef ASIO_RECYCLING_ALLOCATOR_CACHE_SIZE
#define ASIO_RECYCLING_ALLOCATOR_CACHE_SIZE 32
#endif

#include "json_line.hpp"

#include <mqttbroker/codec/decoder.hpp>
#include <mqttbroker/codec/encoder.hpp>

#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <fmt/core.h>

#if LOADGEN_TLS
#include <asio/ssl.hpp>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#endif

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

using bench::json_line;

namespace codec = mqttbroker::codec;
using steady = std::chrono::steady_clock;
using tcp = asio::ip::tcp;

std::uint64_t now_ns() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now().time_since_epoch()).count());
}

steady::time_point to_time_point(std::uint64_t ns) {
  return steady::time_point(std::chrono::duration_cast<steady::duration>(std::chrono::nanoseconds(ns)));
}

void sleep_until_ns(std::uint64_t ns) { std::this_thread::sleep_until(to_time_point(ns)); }

/// Bytes at the start of every payload: run tag (2), publisher id (2), sequence number (4), send
/// time in ns (8). The tag tells this run's messages from a previous run's still in the broker.
constexpr std::size_t stamp_bytes = 16;

/// Counters written by one thread and polled by the main thread: a relaxed load and store, which
/// compiles to a plain increment (no locked instruction on the hot path).
void bump(std::atomic<std::uint64_t>& a, std::uint64_t n = 1) noexcept {
  a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------------------
// Measurement structures: fixed size, allocated once.

/// A log-linear (HDR-style) histogram of nanosecond values: exact below 256, then 128 sub-buckets
/// per power of two, so a reported value is within 0.8% of the true one. 58 KiB, no allocation
/// after construction.
class histogram {
 public:
  static constexpr unsigned sub_bits = 7;
  static constexpr std::size_t sub = std::size_t{1} << sub_bits;
  static constexpr std::size_t buckets = 2 * sub + (64 - sub_bits - 1) * sub;

  histogram() : counts_(buckets, 0) {}

  void record(std::uint64_t v) noexcept {
    ++counts_[index(v)];
    ++total_;
    if (v > max_) max_ = v;
  }
  void merge(const histogram& o) noexcept {
    for (std::size_t i = 0; i < buckets; ++i) counts_[i] += o.counts_[i];
    total_ += o.total_;
    max_ = std::max(max_, o.max_);
  }
  std::uint64_t count() const noexcept { return total_; }
  std::uint64_t max() const noexcept { return max_; }
  /// The value at percentile `p` (0..100), 0 when empty.
  std::uint64_t percentile(double p) const noexcept {
    if (total_ == 0) return 0;
    auto target = static_cast<std::uint64_t>(std::ceil(p / 100.0 * static_cast<double>(total_)));
    if (target == 0) target = 1;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < buckets; ++i) {
      seen += counts_[i];
      if (seen >= target) return std::min(value_at(i), max_);
    }
    return max_;
  }

 private:
  static std::size_t index(std::uint64_t v) noexcept {
    if (v < 2 * sub) return static_cast<std::size_t>(v);
    const unsigned msb = 63u - static_cast<unsigned>(__builtin_clzll(v));
    const unsigned shift = msb - sub_bits;  // >= 1
    return 2 * sub + (shift - 1) * sub + static_cast<std::size_t>((v >> shift) - sub);
  }
  /// The middle of bucket `i`.
  static std::uint64_t value_at(std::size_t i) noexcept {
    if (i < 2 * sub) return i;
    const std::size_t k = i - 2 * sub;
    const auto shift = static_cast<unsigned>(k / sub + 1);
    const std::uint64_t top = k % sub + sub;
    return (top << shift) + ((std::uint64_t{1} << shift) >> 1);
  }

  std::vector<std::uint64_t> counts_;
  std::uint64_t total_ = 0;
  std::uint64_t max_ = 0;
};

/// Arrivals of one publisher's sequence numbers at one subscriber. A ring of 8,192 bits behind the
/// highest number seen tells a duplicate from a late (reordered) arrival; an arrival further back
/// than that is counted as `late` and as new (it cannot be told from a duplicate).
struct stream_track {
  static constexpr std::uint32_t window = 8192;
  std::uint32_t highest = 0;
  bool any = false;
  std::uint64_t unique = 0, duplicates = 0, reordered = 0, late = 0;
  std::array<std::uint64_t, window / 64> bits{};

  bool test(std::uint32_t s) const noexcept { return ((bits[(s % window) / 64] >> (s % 64)) & 1u) != 0; }
  void set(std::uint32_t s) noexcept { bits[(s % window) / 64] |= std::uint64_t{1} << (s % 64); }
  void reset(std::uint32_t s) noexcept { bits[(s % window) / 64] &= ~(std::uint64_t{1} << (s % 64)); }

  /// Records `seq`; true when it had not been seen.
  bool on(std::uint32_t seq) noexcept {
    if (!any || seq > highest) {
      const std::uint32_t from = any ? highest + 1 : seq;
      if (seq - from >= window) {
        bits.fill(0);
      } else {
        for (std::uint32_t s = from; s != seq + 1; ++s) reset(s);
      }
      any = true;
      highest = seq;
      set(seq);
      ++unique;
      return true;
    }
    if (highest - seq >= window) {
      ++late;
      ++reordered;
      ++unique;
      return true;
    }
    if (test(seq)) {
      ++duplicates;
      return false;
    }
    set(seq);
    ++unique;
    ++reordered;
    return true;
  }
};

/// A growable byte buffer that keeps its storage: after the first few batches it never allocates.
class byte_buffer {
 public:
  std::uint8_t* prepare(std::size_t n) {
    if (size_ + n > data_.size()) data_.resize(std::max(data_.size() * 2, size_ + n));
    return data_.data() + size_;
  }
  void commit(std::size_t n) noexcept { size_ += n; }
  void append(const void* p, std::size_t n) {
    std::memcpy(prepare(n), p, n);
    commit(n);
  }
  void reserve(std::size_t n) {
    if (data_.size() < n) data_.resize(n);
  }
  const std::uint8_t* data() const noexcept { return data_.data(); }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  void clear() noexcept { size_ = 0; }
  void swap(byte_buffer& o) noexcept {
    data_.swap(o.data_);
    std::swap(size_, o.size_);
  }

 private:
  std::vector<std::uint8_t> data_;
  std::size_t size_ = 0;
};

/// Encodes a packet of ours (setup or acknowledgement) at the end of `out`.
template <class Packet>
void append_packet(byte_buffer& out, const Packet& p, codec::protocol_version v) {
  std::size_t size = 0;
  if (codec::encoded_size(p, v, size)) return;  // our own packets always fit
  std::size_t written = 0;
  codec::encode(p, v, out.prepare(size), size, written);
  out.commit(written);
}

/// MQTT topic matching (4.7): '+' is one level, '#' the rest including the parent level; a leading
/// wildcard does not match a $-topic. Used at setup to know how many deliveries each message owes.
bool topic_matches(std::string_view filter, std::string_view topic) {
  if (!topic.empty() && topic[0] == '$' && !filter.empty() && (filter[0] == '+' || filter[0] == '#')) return false;
  std::size_t fi = 0, ti = 0;
  for (;;) {
    const std::size_t fe = filter.find('/', fi);
    const std::string_view fl = filter.substr(fi, fe == std::string_view::npos ? std::string_view::npos : fe - fi);
    if (fl == "#") return true;
    const std::size_t te = topic.find('/', ti);
    const std::string_view tl = topic.substr(ti, te == std::string_view::npos ? std::string_view::npos : te - ti);
    if (fl != "+" && fl != tl) return false;
    if (fe == std::string_view::npos) return te == std::string_view::npos;
    if (te == std::string_view::npos) return filter.substr(fe + 1) == "#";
    fi = fe + 1;
    ti = te + 1;
  }
}

// ---------------------------------------------------------------------------------------------
// /proc readers for the broker under test.

/// A "Key:   123 kB" field of /proc/<pid>/status, in KiB; -1 when absent.
long proc_status_kb(int pid, const char* key) {
  if (pid <= 0) return -1;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  const std::size_t klen = std::strlen(key);
  while (std::getline(in, line)) {
    if (line.compare(0, klen, key) == 0 && line.size() > klen && line[klen] == ':') {
      return std::strtol(line.c_str() + klen + 1, nullptr, 10);
    }
  }
  return -1;
}

/// utime + stime of a process in seconds; -1 when unreadable.
double proc_cpu_seconds(int pid) {
  if (pid <= 0) return -1;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t rp = all.rfind(')');
  if (rp == std::string::npos) return -1;
  std::istringstream fields(all.substr(rp + 2));
  std::string f;
  double ticks = 0;
  // After the command: state is field 3; utime and stime are fields 14 and 15.
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i >= 14) ticks += std::strtod(f.c_str(), nullptr);
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double self_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6; };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

// ---------------------------------------------------------------------------------------------
// Configuration and shared run state.

struct config {
  std::string host = "127.0.0.1";
  std::uint16_t port = 1883;
  std::string scenario = "fanin";
  int qos = 0;
  std::size_t payload = 16;
  int publishers = -1;
  int subscribers = -1;
  double duration = 5;
  double warmup = 1;
  double drain = 2;
  unsigned inflight = 64;
  double rate = 0;
  unsigned connections = 1000;
  unsigned concurrency = 50;
  unsigned retained = 10000;
  unsigned subscriptions_per_connection = 0;  // idle: filters each connection subscribes to
  bool json = false;
  unsigned threads = 1;
  int broker_pid = 0;
  std::vector<int> more_broker_pids;  // --broker-pid given again: their CPU is added (a bridge's two brokers)
  std::uint16_t sub_port = 0;         // subscribers connect here when set (the far side of a bridge)
  int protocol = 4;
  unsigned topic_alias_maximum = 0;  // 5.0 subscribers: Topic Alias Maximum in CONNECT
  bool publish_properties = false;   // 5.0 publishers: properties on every PUBLISH
  bool persistent = false;           // sessions the broker keeps (CleanSession 0)
  std::size_t batch = 64 * 1024;
  unsigned e2e_window = 0;
  std::string label;
  bool tls = false;                  // every client over TLS
  bool ws = false;                   // every client over WebSocket (ws://, path --ws-path)
  std::string ws_path = "/mqtt";
  std::string cafile;                // TLS: verify the broker's certificate and name against this CA
  std::string tls_version = "auto";  // TLS: auto (what both sides agree on), 1.2 or 1.3
};

/// The CPU seconds of every --broker-pid together; -1 when one cannot be read.
double brokers_cpu_seconds(const config& cfg) {
  double total = proc_cpu_seconds(cfg.broker_pid);
  for (int pid : cfg.more_broker_pids) {
    const double t = proc_cpu_seconds(pid);
    if (total < 0 || t < 0) return -1;
    total += t;
  }
  return total;
}

struct run_state {
  explicit run_state(const config& c) : cfg(c) {}
  const config& cfg;
  codec::protocol_version version = codec::protocol_version::v3_1_1;
  codec::qos q = codec::qos::at_most_once;
  tcp::endpoint endpoint;
  tcp::endpoint sub_endpoint;  // --sub-port
  std::string id_prefix;
  std::uint16_t tag = 1;
  std::vector<char> padding;  // the bytes after the stamp; their content does not matter
  std::vector<std::string> topics;  // publisher id -> its topic; checked when aliases are on
  // Set by the main thread before publishing starts (the post that starts it orders the writes).
  std::uint64_t t_start = 0, t_measure = 0, t_stop = 0;
  std::atomic<int> ready{0}, failed{0};
  // Retained storm: from SUBSCRIBE to the last retained message; background messages *sent* in
  // between are the ones the storm can delay.
  std::atomic<std::uint64_t> storm_from{std::numeric_limits<std::uint64_t>::max()};
  std::atomic<std::uint64_t> storm_to{std::numeric_limits<std::uint64_t>::max()};
  std::atomic<bool> closing{false};
#if LOADGEN_TLS
  std::unique_ptr<asio::ssl::context> tls;  // the clients' context, with --tls
  std::string sni;                          // the server name sent, when --host is a name
#endif
};

/// One io_context thread and what its clients count. Plain counters are read only after join.
struct worker {
  asio::io_context io{1};
  histogram lat;        // end-to-end latency of messages received in the measurement window
  histogram lat_storm;  // of background messages sent while the retained storm was arriving
  std::uint64_t delivered_window = 0, delivered_bytes_window = 0, delivered_total = 0;
  std::uint64_t published_window = 0;
  std::atomic<std::uint64_t> unique_total{0};
  std::uint64_t unexpected = 0, malformed = 0, foreign = 0, errors = 0;
  std::uint64_t aliased = 0;  // PUBLISH that arrived with a Topic Alias and no topic name
  std::string first_error;
  // connect-storm / idle
  std::uint64_t conn_ok = 0, conn_failed = 0, idle_dropped = 0;
  std::uint64_t subscriptions = 0;  // idle: filters acknowledged by SUBACK
  std::atomic<std::uint64_t> conn_done{0};
  std::uint64_t last_done_ns = 0;
  // TLS: what the first handshake on this thread negotiated (the broker chooses for every client
  // alike, so one is enough), and how many handshakes disagreed with it.
  std::string tls_version, tls_cipher, tls_group;
  std::uint64_t tls_mismatches = 0;

  void error(std::string what) {
    ++errors;
    if (first_error.empty()) first_error = std::move(what);
  }
};

// ---------------------------------------------------------------------------------------------
// Transports. Clients are templates on one of these, so the plain TCP path is the same code as
// before TLS existed: no virtual call, no branch per packet.

/// Plain TCP: the stream is the socket, and nothing happens between connect and CONNECT.
struct plain_net {
  using stream = tcp::socket;
  static stream make(asio::io_context& io, run_state&) { return stream(io); }
  static tcp::socket& socket(stream& s) noexcept { return s; }
  template <class Handler>
  static void handshake(stream&, run_state&, worker&, Handler&& h) {
    std::forward<Handler>(h)(std::error_code());
  }
  template <class Handler>
  static void read_some(stream& s, asio::mutable_buffer b, Handler&& h) {
    s.async_read_some(b, std::forward<Handler>(h));
  }
};

#if LOADGEN_TLS
/// What a handshake negotiated, in OpenSSL's names; the group is the key exchange's.
void note_tls(worker& w, SSL* ssl) {
  const char* version = SSL_get_version(ssl);
  const char* cipher = SSL_get_cipher_name(ssl);
  const int nid = static_cast<int>(SSL_get_negotiated_group(ssl));
  const char* group = nid > 0 ? OBJ_nid2sn(nid) : nullptr;
  if (group == nullptr) group = "?";
  if (w.tls_version.empty()) {
    w.tls_version = version;
    w.tls_cipher = cipher;
    w.tls_group = group;
  } else if (w.tls_version != version || w.tls_cipher != cipher || w.tls_group != group) {
    ++w.tls_mismatches;
  }
}

/// TLS over TCP with asio::ssl: connect, handshake, then MQTT as on TCP. Each connection makes a
/// full handshake (no session is resumed), as a device connecting for the first time does.
struct tls_net {
  using stream = asio::ssl::stream<tcp::socket>;
  static stream make(asio::io_context& io, run_state& rs) { return stream(io, *rs.tls); }
  static tcp::socket& socket(stream& s) noexcept { return s.next_layer(); }
  template <class Handler>
  static void handshake(stream& s, run_state& rs, worker& w, Handler&& h) {
    if (!rs.sni.empty()) SSL_set_tlsext_host_name(s.native_handle(), rs.sni.c_str());
    if (!rs.cfg.cafile.empty()) s.set_verify_callback(asio::ssl::host_name_verification(rs.cfg.host));
    s.async_handshake(asio::ssl::stream_base::client,
                      [&s, &w, h = std::forward<Handler>(h)](std::error_code ec) mutable {
                        if (!ec) note_tls(w, s.native_handle());
                        std::move(h)(ec);
                      });
  }
  /// asio's TLS read completes with one record; the records OpenSSL already holds are added, so a
  /// subscriber decodes (and acknowledges) a socket read at a time, as on TCP.
  template <class Handler>
  static void read_some(stream& s, asio::mutable_buffer b, Handler&& h) {
    s.async_read_some(b, [ssl = s.native_handle(), b, h = std::forward<Handler>(h)](std::error_code ec, std::size_t n) mutable {
      while (!ec && n > 0 && n < b.size()) {
        std::size_t more = 0;
        if (SSL_read_ex(ssl, static_cast<std::uint8_t*>(b.data()) + n, b.size() - n, &more) != 1) {
          ERR_clear_error();
          break;
        }
        n += more;
      }
      std::move(h)(ec, n);
    });
  }
};
#endif

/// MQTT over WebSocket, client side, for --ws: the upgrade, then every write is one binary frame
/// and every read has the server's frame headers taken out in place. The mask key is zero, so the
/// payload goes out as it is and the loadgen spends no CPU on masking; the broker unmasks all the
/// same (the mask bit is set, as RFC 6455 requires of a client).
class ws_stream {
 public:
  using executor_type = tcp::socket::executor_type;
  using lowest_layer_type = tcp::socket;

  ws_stream(asio::io_context& io, std::string host, std::string path)
      : s_(io), host_(std::move(host)), path_(std::move(path)) {}

  executor_type get_executor() noexcept { return s_.get_executor(); }
  tcp::socket& socket() noexcept { return s_; }

  /// Sends the upgrade request and reads the answer: void(std::error_code).
  template <class Handler>
  void async_upgrade(Handler&& h) {
    request_ = "GET " + path_ + " HTTP/1.1\r\nHost: " + host_ +
               "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: bG9hZGdlbiBrZXkgMTIzNA==\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";
    asio::async_write(s_, asio::buffer(request_), [this, h = std::forward<Handler>(h)](std::error_code ec, std::size_t) mutable {
      if (ec) return h(ec);
      read_answer(std::move(h));
    });
  }

  /// One binary frame of all of `buffers` (the loadgen writes one buffer at a time).
  template <class ConstBuffers, class Handler>
  void async_write_some(const ConstBuffers& buffers, Handler&& h) {
    const asio::const_buffer payload = *asio::buffer_sequence_begin(buffers);
    make_header(payload.size());
    const std::array<asio::const_buffer, 2> out{asio::buffer(header_.data(), header_size_), payload};
    asio::async_write(s_, out, [h = std::forward<Handler>(h), n = payload.size()](std::error_code ec, std::size_t) mutable {
      h(ec, ec ? 0 : n);
    });
  }
  template <class ConstBuffers>
  std::size_t write_some(const ConstBuffers& buffers, std::error_code& ec) {
    const asio::const_buffer payload = *asio::buffer_sequence_begin(buffers);
    make_header(payload.size());
    const std::array<asio::const_buffer, 2> out{asio::buffer(header_.data(), header_size_), payload};
    asio::write(s_, out, ec);
    return ec ? 0 : payload.size();
  }

  /// Reads MQTT bytes into `b`: frame headers are removed in place; a read of headers only reads
  /// again.
  template <class Handler>
  void async_read_some(asio::mutable_buffer b, Handler&& h) {
    if (!leftover_.empty()) {
      const std::size_t n = std::min(b.size(), leftover_.size());
      std::memcpy(b.data(), leftover_.data(), n);
      leftover_.erase(0, n);
      const std::size_t out = strip(static_cast<std::uint8_t*>(b.data()), n);
      if (out > 0) {
        asio::post(s_.get_executor(), [h = std::forward<Handler>(h), out]() mutable { h(std::error_code(), out); });
        return;
      }
    }
    s_.async_read_some(b, [this, b, h = std::forward<Handler>(h)](std::error_code ec, std::size_t n) mutable {
      if (ec) return h(ec, std::size_t{0});
      if (closed_) return h(std::error_code(asio::error::eof), std::size_t{0});
      const std::size_t out = strip(static_cast<std::uint8_t*>(b.data()), n);
      if (out == 0) return async_read_some(b, std::move(h));
      h(ec, out);
    });
  }

 private:
  template <class Handler>
  void read_answer(Handler&& h) {
    const std::size_t old = answer_.size();
    answer_.resize(old + 512);
    s_.async_read_some(asio::buffer(&answer_[old], 512), [this, old, h = std::forward<Handler>(h)](std::error_code ec, std::size_t n) mutable {
      answer_.resize(old + n);
      if (ec) return h(ec);
      const auto end = answer_.find("\r\n\r\n");
      if (end == std::string::npos) {
        if (answer_.size() > 8192) return h(std::error_code(asio::error::message_size));
        return read_answer(std::move(h));
      }
      if (answer_.compare(0, 12, "HTTP/1.1 101") != 0) return h(std::error_code(asio::error::connection_refused));
      leftover_ = answer_.substr(end + 4);  // frames the broker sent right behind its answer
      std::string().swap(answer_);
      h(std::error_code());
    });
  }

  void make_header(std::size_t n) {
    header_[0] = 0x82;  // FIN, binary
    std::size_t i = 2;
    if (n < 126) {
      header_[1] = static_cast<std::uint8_t>(0x80u | n);
    } else if (n <= 0xFFFF) {
      header_[1] = 0x80u | 126u;
      header_[2] = static_cast<std::uint8_t>(n >> 8);
      header_[3] = static_cast<std::uint8_t>(n);
      i = 4;
    } else {
      header_[1] = 0x80u | 127u;
      for (int k = 0; k < 8; ++k) header_[2 + static_cast<std::size_t>(k)] = static_cast<std::uint8_t>(std::uint64_t{n} >> (56 - 8 * k));
      i = 10;
    }
    for (int k = 0; k < 4; ++k) header_[i++] = 0;  // the mask key
    header_size_ = i;
  }

  /// Removes the server's frame headers from `d[0, n)`, keeping the binary payload at the front;
  /// other frames' payload (a ping, a close) is dropped, a close ends the stream. The payload left.
  std::size_t strip(std::uint8_t* d, std::size_t n) {
    std::size_t out = 0;
    for (std::size_t i = 0; i < n;) {
      if (remaining_ == 0 && hdr_len_ < hdr_need_) {
        hdr_[hdr_len_++] = d[i++];
        if (hdr_len_ == 2) {
          const std::uint8_t len7 = hdr_[1] & 0x7Fu;
          hdr_need_ = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
        }
        if (hdr_len_ == hdr_need_) {
          const std::uint8_t len7 = hdr_[1] & 0x7Fu;
          std::uint64_t len = len7;
          if (len7 == 126) len = (std::uint64_t{hdr_[2]} << 8) | hdr_[3];
          if (len7 == 127) {
            len = 0;
            for (std::size_t k = 2; k < 10; ++k) len = (len << 8) | hdr_[k];
          }
          const std::uint8_t op = hdr_[0] & 0x0Fu;
          data_frame_ = op == 0x2 || op == 0x0;
          if (op == 0x8) closed_ = true;
          remaining_ = len;
          hdr_len_ = 0;
          hdr_need_ = 2;
        }
        continue;
      }
      const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, n - i));
      if (data_frame_ && out != i) std::memmove(d + out, d + i, take);
      if (data_frame_) out += take;
      i += take;
      remaining_ -= take;
    }
    return out;
  }

  tcp::socket s_;
  std::string host_, path_, request_, answer_, leftover_;
  std::array<std::uint8_t, 14> header_{};
  std::size_t header_size_ = 0;
  std::array<std::uint8_t, 10> hdr_{};
  std::size_t hdr_len_ = 0, hdr_need_ = 2;
  std::uint64_t remaining_ = 0;
  bool data_frame_ = false, closed_ = false;
};

/// WebSocket over TCP (--ws): connect, upgrade, then MQTT in binary frames.
struct ws_net {
  using stream = ws_stream;
  static stream make(asio::io_context& io, run_state& rs) { return stream(io, rs.cfg.host, rs.cfg.ws_path); }
  static tcp::socket& socket(stream& s) noexcept { return s.socket(); }
  template <class Handler>
  static void handshake(stream& s, run_state&, worker&, Handler&& h) {
    s.async_upgrade(std::forward<Handler>(h));
  }
  template <class Handler>
  static void read_some(stream& s, asio::mutable_buffer b, Handler&& h) {
    s.async_read_some(b, std::forward<Handler>(h));
  }
};

// ---------------------------------------------------------------------------------------------
// A client of the traffic scenarios.

template <class Net>
class client {
 public:
  enum class kind { publisher, subscriber, retained_publisher, storm_subscriber };

  client(worker& w, run_state& rs, kind k, std::uint32_t id, std::string client_id, std::size_t read_size)
      : w_(w),
        rs_(rs),
        kind_(k),
        id_(id),
        client_id_(std::move(client_id)),
        sock_(Net::make(w.io, rs)),
        timer_(w.io),
        dec_(codec::decoder_options{codec::role::client, codec::max_packet_size, rs.version}),
        rbuf_size_(read_size),
        rbuf_(new std::uint8_t[read_size]) {
    out_.reserve(rs.cfg.batch + 4096);
    sending_.reserve(rs.cfg.batch + 4096);
    if (is_publisher()) pid_state_.assign(65536, 0);
  }

  // ---- setup, on the worker's thread

  void set_topic(std::string t) { topic_ = std::move(t); }
  void set_filter(std::string f) { filter_ = std::move(f); }
  const std::string& topic() const noexcept { return topic_; }
  const std::string& filter() const noexcept { return filter_; }
  worker& owner() noexcept { return w_; }

  /// Subscribers: which publishers' streams to expect (id -> track).
  void expect_publishers(const std::vector<std::uint32_t>& ids, std::size_t publisher_count) {
    slot_of_.assign(publisher_count, -1);
    tracks_.assign(ids.size(), stream_track{});
    for (std::size_t i = 0; i < ids.size(); ++i) slot_of_[ids[i]] = static_cast<std::int32_t>(i);
    expected_ids_ = ids;
  }
  const std::vector<std::uint32_t>& expected_ids() const noexcept { return expected_ids_; }
  const std::vector<stream_track>& tracks() const noexcept { return tracks_; }

  void connect(std::function<void(bool)> done) {
    on_ready_ = std::move(done);
    const tcp::endpoint& to = kind_ == kind::subscriber && rs_.cfg.sub_port != 0 ? rs_.sub_endpoint : rs_.endpoint;
    Net::socket(sock_).async_connect(to, [this](std::error_code ec) {
      if (ec) {
        fail("connect: " + ec.message());
        return;
      }
      std::error_code ignored;
      Net::socket(sock_).set_option(tcp::no_delay(true), ignored);
      Net::handshake(sock_, rs_, w_, [this](std::error_code hec) {
        if (hec) {
          fail("handshake (TLS or WebSocket upgrade): " + hec.message());
          return;
        }
        send_connect();
      });
    });
  }

 private:
  /// Connected (and through the TLS handshake): CONNECT, then read.
  void send_connect() {
    if (dead_) return;
    codec::connect c;
    c.version = rs_.version;
    // --persistent: sessions the broker keeps (and a durable one stores): 3.1.1 CleanSession 0,
    // 5.0 Clean Start 0 with a Session Expiry Interval. The client ids are new each run.
    c.clean_start = !rs_.cfg.persistent;
    c.keep_alive = 0;
    c.client_id = client_id_;
    codec::properties_builder props;
    if (rs_.cfg.persistent && rs_.version == codec::protocol_version::v5)
      props.add(codec::property_id::session_expiry_interval, std::uint32_t{3600});
    if (kind_ == kind::subscriber && rs_.cfg.topic_alias_maximum > 0) {
      props.add(codec::property_id::topic_alias_maximum, rs_.cfg.topic_alias_maximum);
      aliases_.assign(rs_.cfg.topic_alias_maximum + 1u, std::string());
    }
    if (!props.empty()) c.properties = props.view();
    append_packet(out_, c, rs_.version);
    flush();
    read();
  }

 public:

  /// Publishers: start at rs_.t_start (the main thread posts this once every client is ready).
  void start_publishing() {
    publishing_ = true;
    const std::size_t header = publish_template();
    msg_size_ = header + rs_.cfg.payload;
    max_batch_msgs_ = std::max<std::uint64_t>(1, rs_.cfg.batch / msg_size_);
    timer_.expires_at(to_time_point(rs_.t_start));
    timer_.async_wait([this](std::error_code ec) {
      if (ec || dead_) return;
      if (rate_per_pub_ > 0) {
        on_rate_timer();
      } else {
        fill();
        flush();
      }
    });
  }
  void set_rate(double per_publisher) noexcept { rate_per_pub_ = per_publisher; }

  /// The retained publisher: stores `count` retained messages, then reports through `done`.
  void start_retained(std::uint32_t count, std::function<void()> done) {
    ret_count_ = count;
    ret_done_cb_ = std::move(done);
    ret_active_ = true;
    fill_retained();
    flush();
  }

  /// The storm subscriber: subscribes to the retained topics now.
  void subscribe_now(std::uint32_t retained_count, std::uint32_t retained_publisher_id) {
    ret_count_ = retained_count;
    ret_pub_id_ = retained_publisher_id;
    ret_bits_.assign((retained_count + 63) / 64, 0);
    t_sub_ = now_ns();
    rs_.storm_from.store(t_sub_, std::memory_order_relaxed);
    send_subscribe();
    flush();
  }

  /// Ends the connection politely (DISCONNECT when no write is pending).
  void shutdown() {
    if (dead_) return;
    dead_ = true;
    std::error_code ec;
    timer_.cancel();
    if (!writing_) {
      const std::uint8_t disconnect[2] = {0xE0, 0x00};
      asio::write(sock_, asio::buffer(disconnect), ec);
    }
    Net::socket(sock_).shutdown(tcp::socket::shutdown_both, ec);
    Net::socket(sock_).close(ec);
  }

  // ---- results, read after the worker threads are joined (or as relaxed atomics)

  std::uint64_t sent() const noexcept { return sent_.load(std::memory_order_relaxed); }
  std::uint64_t inflight() const noexcept { return inflight_now_.load(std::memory_order_relaxed); }
  bool retained_done() const noexcept { return ret_finished_.load(std::memory_order_acquire); }
  std::uint64_t retained_unique() const noexcept { return ret_unique_; }
  std::uint64_t storm_started_ns() const noexcept { return t_sub_; }
  std::uint64_t storm_done_ns() const noexcept { return t_done_; }
  bool is_publisher() const noexcept { return kind_ == kind::publisher || kind_ == kind::retained_publisher; }

 private:
  // ---- I/O

  void read() {
    Net::read_some(sock_, asio::buffer(rbuf_.get(), rbuf_size_),
                   [this](std::error_code ec, std::size_t n) { on_read(ec, n); });
  }

  void on_read(std::error_code ec, std::size_t n) {
    if (dead_) return;
    if (ec) {
      fail(ec == asio::error::eof ? std::string("broker closed the connection") : "read: " + ec.message());
      return;
    }
    now_ = now_ns();
    const auto res = dec_.feed(rbuf_.get(), n, [this](codec::packet& p) { return on_packet(p); });
    if (dead_) return;
    if (res.ec) {
      fail("decode: " + res.ec.message());
      return;
    }
    if (kind_ == kind::publisher) fill();
    if (kind_ == kind::retained_publisher) fill_retained();
    flush();
    if (rs_.cfg.e2e_window > 0 && kind_ == kind::subscriber) wake_feeders();
    read();
  }

  void flush() {
    if (writing_ || out_.empty() || dead_) return;
    out_.swap(sending_);
    out_.clear();
    writing_ = true;
    asio::async_write(sock_, asio::buffer(sending_.data(), sending_.size()),
                      [this](std::error_code ec, std::size_t) { on_written(ec); });
  }

  void on_written(std::error_code ec) {
    writing_ = false;
    sending_.clear();
    if (dead_) return;
    if (ec) {
      fail("write: " + ec.message());
      return;
    }
    if (kind_ == kind::publisher) fill();
    if (kind_ == kind::retained_publisher) fill_retained();
    flush();
  }

  void fail(std::string what) {
    if (dead_) return;
    dead_ = true;
    publishing_ = false;
    std::error_code ignored;
    timer_.cancel();
    Net::socket(sock_).close(ignored);
    if (rs_.closing.load(std::memory_order_relaxed)) return;
    w_.error(fmt::format("{}: {}", client_id_, what));
    if (!ready_) {
      ready_ = true;
      if (on_ready_) on_ready_(false);
    }
  }

  void became_ready() {
    if (ready_) return;
    ready_ = true;
    if (on_ready_) on_ready_(true);
  }

  // ---- packets

  bool on_packet(codec::packet& p) {
    switch (codec::type_of(p)) {
      case codec::packet_type::publish: on_publish(*std::get_if<codec::publish>(&p)); return true;
      case codec::packet_type::puback: on_ack(std::get_if<codec::puback>(&p)->packet_id); return true;
      case codec::packet_type::pubcomp: on_ack(std::get_if<codec::pubcomp>(&p)->packet_id); return true;
      case codec::packet_type::pubrec: {
        const std::uint16_t id = std::get_if<codec::pubrec>(&p)->packet_id;
        if (pid_state_.empty() || pid_state_[id] != 1) ++w_.unexpected;
        else pid_state_[id] = 2;
        codec::pubrel rel;
        rel.packet_id = id;
        append_packet(out_, rel, rs_.version);
        return true;
      }
      case codec::packet_type::pubrel: {
        codec::pubcomp comp;
        comp.packet_id = std::get_if<codec::pubrel>(&p)->packet_id;
        append_packet(out_, comp, rs_.version);
        return true;
      }
      case codec::packet_type::connack: {
        const auto& ack = *std::get_if<codec::connack>(&p);
        if (ack.code != 0) {
          fail(fmt::format("CONNACK refused with code {}", ack.code));
          return false;
        }
        if (kind_ == kind::subscriber) {
          send_subscribe();
        } else {
          became_ready();
        }
        return true;
      }
      case codec::packet_type::suback: {
        const auto& ack = *std::get_if<codec::suback>(&p);
        for (auto rc : ack.reasons) {
          if (static_cast<std::uint8_t>(rc) >= 0x80) {
            fail(fmt::format("SUBACK refused {} with code {}", filter_, static_cast<unsigned>(rc)));
            return false;
          }
          if (static_cast<std::uint8_t>(rc) != static_cast<std::uint8_t>(rs_.q))
            w_.error(fmt::format("{}: SUBACK granted QoS {} for {}", client_id_, static_cast<unsigned>(rc), filter_));
        }
        became_ready();
        return true;
      }
      case codec::packet_type::pingresp:
        if (kind_ == kind::retained_publisher && ret_active_ && ret_next_ == ret_count_) finish_retained();
        return true;
      case codec::packet_type::disconnect:
        fail(fmt::format("broker sent DISCONNECT, reason 0x{:02x}",
                         static_cast<unsigned>(std::get_if<codec::disconnect>(&p)->reason)));
        return false;
      default: fail(fmt::format("unexpected {}", codec::to_string(codec::type_of(p)))); return false;
    }
  }

  void send_subscribe() {
    codec::subscribe s;
    s.packet_id = 1;
    codec::subscribe_entry e;
    e.filter = kind_ == kind::storm_subscriber ? std::string_view("ret/#") : std::string_view(filter_);
    e.options.max_qos = rs_.q;
    s.entries.push_back(e);
    append_packet(out_, s, rs_.version);
  }

  void on_publish(const codec::publish& p) {
    if (p.qos_level == codec::qos::at_least_once) {
      codec::puback a;
      a.packet_id = p.packet_id;
      append_packet(out_, a, rs_.version);
    } else if (p.qos_level == codec::qos::exactly_once) {
      codec::pubrec a;
      a.packet_id = p.packet_id;
      append_packet(out_, a, rs_.version);
    }
    if (p.payload.size() < stamp_bytes) {
      ++w_.malformed;
      return;
    }
    std::uint16_t tag = 0, pub = 0;
    std::uint32_t seq = 0;
    std::uint64_t sent_at = 0;
    std::memcpy(&tag, p.payload.data(), 2);
    std::memcpy(&pub, p.payload.data() + 2, 2);
    std::memcpy(&seq, p.payload.data() + 4, 4);
    std::memcpy(&sent_at, p.payload.data() + 8, 8);
    if (tag != rs_.tag) {
      ++w_.foreign;
      return;
    }
    // A client resolves the broker's Topic Aliases (5.0 section 3.3.2.3.4), so the bench pays for
    // that and checks that every message arrives under its publisher's topic.
    if ((!aliases_.empty() && !resolves_to(p, pub)) || (rs_.cfg.publish_properties && p.properties.empty())) {
      ++w_.malformed;
      return;
    }

    if (kind_ == kind::storm_subscriber) {
      if (pub != ret_pub_id_ || seq >= ret_count_) {
        ++w_.unexpected;
        return;
      }
      std::uint64_t& word = ret_bits_[seq / 64];
      const std::uint64_t bit = std::uint64_t{1} << (seq % 64);
      if ((word & bit) != 0) {
        ++ret_duplicates_;
        return;
      }
      word |= bit;
      if (++ret_unique_ == ret_count_) {
        t_done_ = now_;
        rs_.storm_to.store(t_done_, std::memory_order_relaxed);
        ret_finished_.store(true, std::memory_order_release);
      }
      return;
    }

    const std::int32_t slot = pub < slot_of_.size() ? slot_of_[pub] : -1;
    if (slot < 0) {
      ++w_.unexpected;
      return;
    }
    ++w_.delivered_total;
    if (tracks_[static_cast<std::size_t>(slot)].on(seq)) {
      bump(w_.unique_total);
      if (rs_.cfg.e2e_window > 0) feeders_[static_cast<std::size_t>(slot)]->note_delivery();
    }
    if (now_ >= rs_.t_measure && now_ < rs_.t_stop) {
      ++w_.delivered_window;
      w_.delivered_bytes_window += p.payload.size();
      w_.lat.record(now_ > sent_at ? now_ - sent_at : 0);
    }
    if (sent_at >= rs_.storm_from.load(std::memory_order_relaxed) && sent_at <= rs_.storm_to.load(std::memory_order_relaxed))
      w_.lat_storm.record(now_ > sent_at ? now_ - sent_at : 0);
  }

  bool resolves_to(const codec::publish& p, std::uint16_t pub) {
    std::uint32_t alias = 0;
    for (const codec::property& prop : p.properties)
      if (prop.id == codec::property_id::topic_alias) alias = prop.integer;
    std::string_view topic = p.topic;
    if (alias != 0) {
      if (alias >= aliases_.size()) return false;
      if (topic.empty()) {
        topic = aliases_[alias];
        ++w_.aliased;
      } else {
        aliases_[alias].assign(topic);
      }
    }
    return pub < rs_.topics.size() && topic == rs_.topics[pub];
  }

  void on_ack(std::uint16_t id) {
    if (pid_state_.empty() || pid_state_[id] == 0) {
      ++w_.unexpected;
      return;
    }
    pid_state_[id] = 0;
    --inflight_;
    inflight_now_.store(inflight_, std::memory_order_relaxed);
    if (kind_ == kind::retained_publisher && ret_active_ && ret_next_ == ret_count_ && inflight_ == 0)
      finish_retained();
  }

  std::uint16_t take_packet_id() noexcept {
    for (;;) {
      if (++next_pid_ == 0) next_pid_ = 1;
      if (pid_state_[next_pid_] == 0) {
        pid_state_[next_pid_] = 1;
        return next_pid_;
      }
    }
  }

  // ---- publishing

  /// Encodes this publisher's PUBLISH header once; each message copies it and patches the packet
  /// identifier. Returns the header's size.
  std::size_t publish_template() {
    codec::publish p;
    p.topic = topic_;
    p.qos_level = rs_.q;
    p.packet_id = rs_.q == codec::qos::at_most_once ? 0 : 1;
    p.payload = std::string_view(rs_.padding.data(), rs_.cfg.payload);
    if (rs_.cfg.publish_properties) {
      // What a 5.0 request/telemetry message typically carries.
      props_.add(codec::property_id::message_expiry_interval, 3600)
          .add(codec::property_id::content_type, "application/octet-stream")
          .add_user_property("source", topic_);
      p.properties = props_.view();
    }
    std::size_t size = 0;
    if (auto ec = codec::publish_header_size(p, rs_.version, size)) throw std::runtime_error("topic: " + ec.message());
    header_.resize(size);
    std::size_t written = 0;
    codec::encode_publish_header(p, rs_.version, header_.data(), size, written);
    // The packet identifier follows the topic; in 5.0 the properties come after it.
    pid_offset_ = size - 2 - (rs_.version == codec::protocol_version::v5 ? p.properties.wire_size() : 0);
    return size;
  }

  void write_stamp(std::uint8_t* payload, std::uint32_t seq, std::uint64_t t) noexcept {
    const auto pub = static_cast<std::uint16_t>(id_);
    std::memcpy(payload, &rs_.tag, 2);
    std::memcpy(payload + 2, &pub, 2);
    std::memcpy(payload + 4, &seq, 4);
    std::memcpy(payload + 8, &t, 8);
    if (rs_.cfg.payload > stamp_bytes) std::memcpy(payload + stamp_bytes, rs_.padding.data(), rs_.cfg.payload - stamp_bytes);
  }

  /// Appends what may be sent now: the rate's due messages, within the in-flight window and one batch.
  /// Called only when no write is pending, so the stamp is close to the time the bytes leave.
  void fill() {
    if (!publishing_ || writing_) return;
    const std::uint64_t now = now_ns();
    if (now >= rs_.t_stop) {
      publishing_ = false;
      timer_.cancel();
      return;
    }
    std::uint64_t allowance = max_batch_msgs_;
    if (rate_per_pub_ > 0) {
      const auto due = static_cast<std::uint64_t>(static_cast<double>(now - rs_.t_start) * rate_per_pub_ * 1e-9) + 1;
      allowance = std::min(allowance, due > seq_ ? due - seq_ : 0);
    }
    const bool acked = rs_.q != codec::qos::at_most_once;
    if (acked) {
      const std::uint64_t window = rs_.cfg.inflight;
      allowance = std::min<std::uint64_t>(allowance, inflight_ < window ? window - inflight_ : 0);
    }
    if (rs_.cfg.e2e_window > 0 && allowance > 0) allowance = std::min(allowance, e2e_room());
    if (allowance == 0) return;
    const std::size_t hsize = header_.size();
    std::uint8_t* d = out_.prepare(static_cast<std::size_t>(allowance) * msg_size_);
    for (std::uint64_t i = 0; i < allowance; ++i) {
      std::memcpy(d, header_.data(), hsize);
      if (acked) {
        const std::uint16_t id = take_packet_id();
        d[pid_offset_] = static_cast<std::uint8_t>(id >> 8);
        d[pid_offset_ + 1] = static_cast<std::uint8_t>(id & 0xFF);
      }
      write_stamp(d + hsize, seq_++, now);
      d += msg_size_;
    }
    out_.commit(static_cast<std::size_t>(allowance) * msg_size_);
    if (acked) {
      inflight_ += static_cast<std::uint32_t>(allowance);
      inflight_now_.store(inflight_, std::memory_order_relaxed);
    }
    sent_.store(seq_, std::memory_order_relaxed);
    if (now >= rs_.t_measure) w_.published_window += allowance;
  }

  /// Messages that may be sent within the end-to-end window: sent minus fully delivered (the
  /// deliveries counted by the subscribers divided by K) must stay below it. With no room the
  /// publisher marks itself blocked and a subscriber's next delivery wakes it.
  std::uint64_t e2e_room() noexcept {
    auto room = [this] {
      const std::uint64_t done = e2e_received_.load() / k_;
      const std::uint64_t outstanding = seq_ > done ? seq_ - done : 0;
      return outstanding < rs_.cfg.e2e_window ? rs_.cfg.e2e_window - outstanding : 0;
    };
    std::uint64_t r = room();
    if (r == 0) {
      // Mark, then look again (a subscriber on another thread counts, then looks at the mark):
      // one of the two sees the other, so no wake-up is lost.
      e2e_blocked_.store(true);
      r = room();
      if (r != 0) e2e_blocked_.store(false);
    }
    return r;
  }

 public:
  void set_e2e_k(std::uint64_t k) noexcept { k_ = k == 0 ? 1 : k; }
  void set_feeders(std::vector<client*> f) { feeders_ = std::move(f); }
  /// A subscriber received one of this publisher's messages for the first time.
  void note_delivery() noexcept {
    if (rs_.cfg.threads > 1)
      e2e_received_.fetch_add(1);
    else
      bump(e2e_received_);
  }
  /// Subscribers, after a read: wake the publishers that wait for the end-to-end window.
  void wake_feeders() {
    for (client* p : feeders_) {
      if (!p->e2e_blocked_.load() || !p->e2e_blocked_.exchange(false)) continue;
      if (&p->w_ == &w_)
        p->poke();
      else
        asio::post(p->w_.io, [p] { p->poke(); });
    }
  }
  void poke() {
    if (dead_ || !publishing_ || writing_) return;  // a pending write's completion fills anyway
    fill();
    flush();
  }

 private:
  void on_rate_timer() {
    if (!publishing_ || dead_) return;
    if (!writing_) {
      fill();
      flush();
    }
    if (!publishing_) return;
    // The next message is due at t_start + seq/rate; wake at most every 100 µs (bursts beyond).
    const auto next_due = rs_.t_start + static_cast<std::uint64_t>(static_cast<double>(seq_) / rate_per_pub_ * 1e9);
    timer_.expires_at(to_time_point(std::max(next_due, now_ns() + 100'000)));
    timer_.async_wait([this](std::error_code ec) {
      if (!ec) on_rate_timer();
    });
  }

  void fill_retained() {
    if (!ret_active_ || writing_) return;
    const std::uint64_t now = now_ns();
    const bool acked = rs_.q != codec::qos::at_most_once;
    while (ret_next_ < ret_count_ && (!acked || inflight_ < rs_.cfg.inflight) && out_.size() < rs_.cfg.batch) {
      char topic[32];
      const int n = std::snprintf(topic, sizeof topic, "ret/%u", ret_next_);
      codec::publish p;
      p.topic = std::string_view(topic, static_cast<std::size_t>(n));
      p.qos_level = rs_.q;
      p.retain = true;
      p.packet_id = acked ? take_packet_id() : 0;
      p.payload = std::string_view(rs_.padding.data(), rs_.cfg.payload);
      std::size_t hsize = 0;
      codec::publish_header_size(p, rs_.version, hsize);
      std::uint8_t* d = out_.prepare(hsize + rs_.cfg.payload);
      std::size_t written = 0;
      codec::encode_publish_header(p, rs_.version, d, hsize, written);
      write_stamp(d + hsize, ret_next_, now);
      out_.commit(hsize + rs_.cfg.payload);
      ++ret_next_;
      if (acked) ++inflight_;
    }
    if (ret_next_ == ret_count_ && !acked && !ping_sent_) {
      // QoS 0 has no acknowledgement: a PINGRESP after the last PUBLISH shows the broker read them all.
      append_packet(out_, codec::pingreq{}, rs_.version);
      ping_sent_ = true;
    }
  }

  void finish_retained() {
    ret_active_ = false;
    if (ret_done_cb_) ret_done_cb_();
  }

  worker& w_;
  run_state& rs_;
  kind kind_;
  std::uint32_t id_;
  std::string client_id_;
  std::string topic_, filter_;
  typename Net::stream sock_;
  asio::steady_timer timer_;
  codec::decoder dec_;
  std::size_t rbuf_size_;
  std::unique_ptr<std::uint8_t[]> rbuf_;
  byte_buffer out_, sending_;
  std::function<void(bool)> on_ready_;
  bool ready_ = false, dead_ = false, writing_ = false;
  std::uint64_t now_ = 0;  // time of the read being decoded

  // publisher
  bool publishing_ = false;
  double rate_per_pub_ = 0;
  std::vector<std::uint8_t> header_;
  codec::properties_builder props_;   // publishers: the template's properties
  std::vector<std::string> aliases_;  // subscribers with Topic Alias Maximum: alias -> topic
  std::size_t pid_offset_ = 0, msg_size_ = 0;
  std::uint64_t max_batch_msgs_ = 1;
  std::uint32_t seq_ = 0;
  std::uint32_t inflight_ = 0;
  std::uint16_t next_pid_ = 0;
  std::vector<std::uint8_t> pid_state_;  // 0 free, 1 PUBLISH sent, 2 PUBREL sent
  std::atomic<std::uint64_t> sent_{0};
  std::atomic<std::uint64_t> inflight_now_{0};
  std::uint64_t k_ = 1;                              // deliveries each message owes
  std::atomic<std::uint64_t> e2e_received_{0};       // deliveries counted by subscribers
  std::atomic<bool> e2e_blocked_{false};
  std::vector<client*> feeders_;                     // subscriber: its publishers, by track slot

  // subscriber
  std::vector<std::int32_t> slot_of_;
  std::vector<stream_track> tracks_;
  std::vector<std::uint32_t> expected_ids_;

  // retained storm
  bool ret_active_ = false, ping_sent_ = false;
  std::uint32_t ret_count_ = 0, ret_next_ = 0, ret_pub_id_ = 0;
  std::function<void()> ret_done_cb_;
  std::vector<std::uint64_t> ret_bits_;
  std::uint64_t ret_unique_ = 0, ret_duplicates_ = 0;
  std::uint64_t t_sub_ = 0, t_done_ = 0;
  std::atomic<bool> ret_finished_{false};

 public:
  std::uint64_t retained_duplicates() const noexcept { return ret_duplicates_; }
};

// ---------------------------------------------------------------------------------------------
// Connect storm and idle connections: lanes of sequential connection attempts.

template <class Net>
class conn_lane {
  using stream = typename Net::stream;

 public:
  /// `subs`: filters each kept connection subscribes to after its CONNACK (idle); the attempt
  /// ends with the SUBACK then, so the broker holds every subscription when its RSS is read.
  conn_lane(worker& w, run_state& rs, std::atomic<unsigned>& next, unsigned total, bool keep, unsigned subs)
      : w_(w), rs_(rs), next_(next), total_(total), keep_(keep), subs_(keep ? subs : 0), timer_(w.io) {}

  void start() { attempt(); }

  /// Idle: closes what it kept.
  void close_all() {
    std::error_code ec;
    const std::uint8_t disconnect[2] = {0xE0, 0x00};
    for (auto& s : kept_) {
      asio::write(*s, asio::buffer(disconnect), ec);
      Net::socket(*s).close(ec);
    }
    if (sock_) Net::socket(*sock_).close(ec);
    timer_.cancel();
  }

 private:
  void attempt() {
    const unsigned i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i >= total_) return;
    const unsigned g = ++gen_;
    t0_ = now_ns();
    dec_ = codec::decoder(codec::decoder_options{codec::role::client, codec::max_packet_size, rs_.version});
    // A new stream per attempt (a TLS connection cannot be reused). The attempt's handlers hold
    // it, so a completion of an earlier attempt that is still queued finds its own stream alive.
    sock_.reset(new stream(Net::make(w_.io, rs_)));
    timer_.expires_after(std::chrono::seconds(10));
    timer_.async_wait([this, g](std::error_code ec) {
      if (!ec && g == gen_) finish(g, false, subs_ == 0 ? "no CONNACK within 10 s" : "no CONNACK and SUBACK within 10 s");
    });
    index_ = i;
    const int n = std::snprintf(client_id_, sizeof client_id_, "%sc%u", rs_.id_prefix.c_str(), i);
    Net::socket(*sock_).async_connect(rs_.endpoint, [this, g, n, s = sock_](std::error_code ec) {
      if (g != gen_) return;
      if (ec) {
        finish(g, false, "connect: " + ec.message());
        return;
      }
      std::error_code ignored;
      Net::socket(*s).set_option(tcp::no_delay(true), ignored);
      Net::handshake(*s, rs_, w_, [this, g, n, s](std::error_code hec) {
        if (g != gen_) return;
        if (hec) {
          finish(g, false, "handshake (TLS or WebSocket upgrade): " + hec.message());
          return;
        }
        codec::connect c;
        c.version = rs_.version;
        c.keep_alive = 0;
        c.client_id = std::string_view(client_id_, static_cast<std::size_t>(n));
        wbuf_.clear();
        append_packet(wbuf_, c, rs_.version);
        asio::async_write(*s, asio::buffer(wbuf_.data(), wbuf_.size()), [this, g, s](std::error_code wec, std::size_t) {
          if (g == gen_ && wec) finish(g, false, "write: " + wec.message());
        });
        read(g);
      });
    });
  }

  void read(unsigned g) {
    sock_->async_read_some(asio::buffer(rbuf_), [this, g, s = sock_](std::error_code ec, std::size_t n) {
      if (g != gen_) return;
      if (ec) {
        finish(g, false, "read: " + ec.message());
        return;
      }
      bool done = false;
      std::string refused;
      const auto res = dec_.feed(rbuf_.data(), n, [&](codec::packet& p) {
        if (const auto* a = std::get_if<codec::connack>(&p)) {
          if (a->code != 0) {
            refused = fmt::format("CONNACK code {}", a->code);
            return false;
          }
          // CONNECT -> CONNACK, also when subscriptions follow.
          w_.lat.record(now_ns() - t0_);
          if (subs_ == 0) {
            done = true;
            return false;
          }
          subscribe(g);
        } else if (const auto* sa = std::get_if<codec::suback>(&p)) {
          for (auto rc : sa->reasons) {
            if (static_cast<std::uint8_t>(rc) >= 0x80) {
              refused = fmt::format("SUBACK code 0x{:02x}", static_cast<unsigned>(rc));
              return false;
            }
          }
          if (sa->reasons.size() != subs_) {
            refused = fmt::format("SUBACK with {} codes for {} filters", sa->reasons.size(), subs_);
            return false;
          }
          w_.subscriptions += subs_;
          done = true;
          return false;
        }
        return true;  // anything else before the CONNACK or SUBACK is ignored
      });
      if (res.ec) {
        finish(g, false, "decode: " + res.ec.message());
      } else if (!refused.empty()) {
        finish(g, false, refused);
      } else if (done) {
        finish(g, true, "");
      } else {
        read(g);
      }
    });
  }

  void finish(unsigned g, bool ok, const std::string& why) {
    if (g != gen_) return;
    ++gen_;  // late completions of this attempt are ignored
    timer_.cancel();
    const std::uint64_t t = now_ns();
    std::error_code ec;
    if (ok) {
      ++w_.conn_ok;
      if (keep_) {
        kept_.push_back(std::move(sock_));
        watch(kept_.back());
      } else {
        const std::uint8_t disconnect[2] = {0xE0, 0x00};
        asio::write(*sock_, asio::buffer(disconnect), ec);
        Net::socket(*sock_).close(ec);
      }
    } else {
      ++w_.conn_failed;
      w_.error(why);
      Net::socket(*sock_).close(ec);
    }
    sock_.reset();
    w_.last_done_ns = t;
    bump(w_.conn_done);
    attempt();
  }

  /// Idle with subscriptions: one SUBSCRIBE with `subs_` filters, "idle/<connection>/<j>", distinct
  /// across the whole run, so each adds its own subscription (and trie leaf) to the broker.
  void subscribe(unsigned g) {
    filters_.clear();
    codec::subscribe sub;
    sub.packet_id = 1;
    for (unsigned j = 0; j < subs_; ++j) filters_.push_back(fmt::format("idle/{}/{}", index_, j));
    for (const auto& f : filters_) {
      codec::subscribe_entry e;
      e.filter = f;
      e.options.max_qos = rs_.q;
      sub.entries.push_back(e);
    }
    // Its own buffer: the CONNECT's write completion may still be queued (its bytes are sent, the
    // CONNACK proves it), and it must not find its buffer reused.
    sbuf_.clear();
    append_packet(sbuf_, sub, rs_.version);
    asio::async_write(*sock_, asio::buffer(sbuf_.data(), sbuf_.size()), [this, g, s = sock_](std::error_code wec, std::size_t) {
      if (g == gen_ && wec) finish(g, false, "write: " + wec.message());
    });
  }

  /// An idle connection reads nothing; a completed read means the broker closed it.
  void watch(const std::shared_ptr<stream>& s) {
    s->async_read_some(asio::buffer(junk_), [this, s](std::error_code ec, std::size_t) {
      if (!rs_.closing.load(std::memory_order_relaxed)) {
        ++w_.idle_dropped;
        if (ec) w_.error("idle connection ended: " + ec.message());
      }
    });
  }

  worker& w_;
  run_state& rs_;
  std::atomic<unsigned>& next_;
  unsigned total_;
  bool keep_;
  unsigned subs_;
  unsigned index_ = 0;  // of the connection being made
  std::shared_ptr<stream> sock_;  // the attempt's
  asio::steady_timer timer_;
  codec::decoder dec_;
  unsigned gen_ = 0;
  std::uint64_t t0_ = 0;
  char client_id_[96] = {};
  byte_buffer wbuf_, sbuf_;
  std::vector<std::string> filters_;
  std::array<std::uint8_t, 256> rbuf_{};
  std::array<std::uint8_t, 16> junk_{};
  std::vector<std::shared_ptr<stream>> kept_;
};

// ---------------------------------------------------------------------------------------------
// Results.


struct window_cpu {
  double self_start = 0, self_end = 0, broker_start = -1, broker_end = -1;
  double seconds = 0;
  double self_pct() const { return seconds > 0 ? 100.0 * (self_end - self_start) / seconds : 0; }
  double broker_pct() const {
    return seconds > 0 && broker_start >= 0 && broker_end >= 0 ? 100.0 * (broker_end - broker_start) / seconds : -1;
  }
};

struct runner {
  explicit runner(const config& c) : cfg(c), rs(c) {}

  const config& cfg;
  run_state rs;
  std::vector<std::unique_ptr<worker>> workers;
  std::vector<std::thread> threads;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;

  void start_workers() {
    const unsigned n = std::max(1u, cfg.threads);
    for (unsigned i = 0; i < n; ++i) workers.push_back(std::make_unique<worker>());
    for (auto& w : workers) {
      guards.push_back(asio::make_work_guard(w->io));
      threads.emplace_back([&io = w->io] { io.run(); });
    }
  }
  void stop_workers() {
    for (auto& g : guards) g.reset();
    for (auto& w : workers) w->io.stop();
    for (auto& t : threads) t.join();
    threads.clear();
  }
  /// Runs `f` on every worker's thread and waits until each has run it.
  template <class F>
  void on_each_worker(F f) {
    std::atomic<std::size_t> done{0};
    for (auto& w : workers) {
      worker* wp = w.get();
      asio::post(w->io, [wp, &f, &done] {
        f(*wp);
        done.fetch_add(1);
      });
    }
    while (done.load() < workers.size()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::string first_error() const {
    for (const auto& w : workers)
      if (!w->first_error.empty()) return w->first_error;
    return {};
  }
  std::uint64_t errors() const {
    std::uint64_t e = 0;
    for (const auto& w : workers) e += w->errors;
    return e;
  }
};

double us(std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; }

// ---------------------------------------------------------------------------------------------
// Traffic scenarios: fanin, fanout, pairs, wildcard, shared, retained-storm.

template <class Net>
int run_traffic(runner& r, json_line& out) {
  using client_t = client<Net>;
  const config& cfg = r.cfg;
  run_state& rs = r.rs;
  const std::string& sc = cfg.scenario;
  const bool storm = sc == "retained-storm";
  // One shared subscription group: every message goes to exactly one of its members, so loss and
  // duplication are counted over the group, not per member.
  const bool shared = sc == "shared";

  // Topology: publisher topics and subscriber filters.
  int pubs = cfg.publishers, subs = cfg.subscribers;
  std::vector<std::string> topics, filters;
  if (sc == "fanin") {
    if (pubs < 0) pubs = 8;
    if (subs < 0) subs = 1;
    for (int p = 0; p < pubs; ++p) topics.push_back(fmt::format("in/{}", p));
    for (int s = 0; s < subs; ++s) filters.push_back("in/+");
  } else if (sc == "fanout") {
    if (pubs < 0) pubs = 1;
    if (subs < 0) subs = 8;
    for (int p = 0; p < pubs; ++p) topics.push_back("out/t");
    for (int s = 0; s < subs; ++s) filters.push_back("out/t");
  } else if (sc == "pairs" || storm) {
    if (pubs < 0) pubs = storm ? 4 : 8;
    subs = pubs;
    const char* prefix = storm ? "bg" : "pair";
    for (int p = 0; p < pubs; ++p) topics.push_back(fmt::format("{}/{}", prefix, p));
    for (int s = 0; s < subs; ++s) filters.push_back(fmt::format("{}/{}", prefix, s));
  } else if (shared) {
    if (pubs < 0) pubs = 8;
    if (subs < 0) subs = 10;
    for (int p = 0; p < pubs; ++p) topics.push_back(fmt::format("sh/{}", p));
    for (int s = 0; s < subs; ++s) filters.push_back("$share/bench/sh/+");
  } else {  // wildcard
    if (pubs < 0) pubs = 8;
    if (subs < 0) subs = 8;
    // Publisher p in group p % 4. Even subscribers take one group ("wc/gJ/+/t"), odd ones every
    // message through one of three wildcard shapes; with a multiple of 8 subscribers every message
    // matches the same number K of subscriptions.
    constexpr int groups = 4;
    for (int p = 0; p < pubs; ++p) topics.push_back(fmt::format("wc/g{}/d{}/t", p % groups, p));
    static const char* const all[] = {"wc/#", "+/+/+/t", "wc/+/+/#"};
    for (int s = 0; s < subs; ++s)
      filters.push_back(s % 2 == 0 ? fmt::format("wc/g{}/+/t", (s / 2) % groups) : std::string(all[(s / 2) % 3]));
  }
  if (pubs <= 0 || subs <= 0 || pubs > 65000) {
    fmt::print(stderr, "loadgen: need 1 to 65000 publishers and at least one subscriber\n");
    return 1;
  }
  rs.topics = topics;

  // Expected deliveries: which subscribers each publisher's messages reach.
  std::vector<std::vector<std::uint32_t>> matched(static_cast<std::size_t>(subs));
  std::vector<std::uint64_t> k_of(static_cast<std::size_t>(pubs), 0);
  for (std::size_t s = 0; s < filters.size(); ++s) {
    // A member may get any message its group's filter (after `$share/{name}/`) matches.
    std::string_view f = filters[s];
    if (shared) f = f.substr(f.find('/', std::string_view("$share/").size()) + 1);
    for (std::size_t p = 0; p < topics.size(); ++p)
      if (topic_matches(f, topics[p])) {
        matched[s].push_back(static_cast<std::uint32_t>(p));
        ++k_of[p];
      }
  }
  if (shared) std::fill(k_of.begin(), k_of.end(), std::uint64_t{1});  // one member per message
  const auto [kmin_it, kmax_it] = std::minmax_element(k_of.begin(), k_of.end());
  const std::uint64_t kmin = *kmin_it, kmax = *kmax_it;
  double ksum = 0;
  for (auto k : k_of) ksum += static_cast<double>(k);
  const double kmean = ksum / static_cast<double>(pubs);

  const std::size_t clients_total = static_cast<std::size_t>(pubs + subs + (storm ? 2 : 0));
  const std::size_t read_size = std::clamp<std::size_t>((std::size_t{32} << 20) / clients_total, 16 * 1024, 256 * 1024);

  r.start_workers();
  std::vector<std::unique_ptr<client_t>> publishers, subscribers;
  std::unique_ptr<client_t> ret_pub, storm_sub;
  const std::size_t nw = r.workers.size();
  for (int p = 0; p < pubs; ++p) {
    auto c = std::make_unique<client_t>(*r.workers[static_cast<std::size_t>(p) % nw], rs, client_t::kind::publisher,
                                      static_cast<std::uint32_t>(p), fmt::format("{}p{}", rs.id_prefix, p), read_size);
    c->set_topic(topics[static_cast<std::size_t>(p)]);
    if (cfg.rate > 0) c->set_rate(cfg.rate / pubs);
    c->set_e2e_k(k_of[static_cast<std::size_t>(p)]);
    publishers.push_back(std::move(c));
  }
  for (int s = 0; s < subs; ++s) {
    auto c = std::make_unique<client_t>(*r.workers[static_cast<std::size_t>(s + 1) % nw], rs, client_t::kind::subscriber,
                                      0, fmt::format("{}s{}", rs.id_prefix, s), read_size);
    c->set_filter(filters[static_cast<std::size_t>(s)]);
    c->expect_publishers(matched[static_cast<std::size_t>(s)], static_cast<std::size_t>(pubs));
    std::vector<client_t*> feeders;
    for (std::uint32_t id : matched[static_cast<std::size_t>(s)]) feeders.push_back(publishers[id].get());
    c->set_feeders(std::move(feeders));
    subscribers.push_back(std::move(c));
  }
  if (storm) {
    ret_pub = std::make_unique<client_t>(*r.workers[0], rs, client_t::kind::retained_publisher,
                                       static_cast<std::uint32_t>(pubs), rs.id_prefix + "retpub", read_size);
    storm_sub = std::make_unique<client_t>(*r.workers[nw > 1 ? 1 : 0], rs, client_t::kind::storm_subscriber, 0,
                                         rs.id_prefix + "storm", 256 * 1024);
  }

  // Connect everything, at most `concurrency` at a time. `launch` lives until the workers are
  // joined, which happens before this function returns on every path.
  std::vector<client_t*> all;
  for (auto& c : subscribers) all.push_back(c.get());
  for (auto& c : publishers) all.push_back(c.get());
  if (ret_pub) all.push_back(ret_pub.get());
  if (storm_sub) all.push_back(storm_sub.get());
  std::atomic<std::size_t> next_connect{0};
  std::function<void()> launch = [&all, &next_connect, &launch, &rs]() {
    const std::size_t i = next_connect.fetch_add(1);
    if (i >= all.size()) return;
    client_t* c = all[i];
    // The client's handlers run on its own worker, so the connection starts there.
    asio::post(c->owner().io, [c, &launch, &rs] {
      c->connect([&launch, &rs](bool ok) {
        (ok ? rs.ready : rs.failed).fetch_add(1);
        launch();
      });
    });
  };
  auto shutdown_all = [&] {
    rs.closing = true;
    r.on_each_worker([&](worker& w) {
      for (auto* c : all)
        if (&c->owner() == &w) c->shutdown();
    });
    r.stop_workers();
  };
  {
    const std::size_t first = std::min<std::size_t>(all.size(), std::max(1u, cfg.concurrency));
    for (std::size_t i = 0; i < first; ++i) launch();
    const auto deadline = steady::now() + std::chrono::seconds(60);
    while (static_cast<std::size_t>(rs.ready.load() + rs.failed.load()) < all.size() && steady::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (rs.failed.load() > 0 || static_cast<std::size_t>(rs.ready.load()) < all.size()) {
      const std::size_t ready = static_cast<std::size_t>(rs.ready.load());
      shutdown_all();
      const std::string err = r.first_error();
      fmt::print(stderr, "loadgen: {} of {} clients failed to connect and subscribe{}{}\n", all.size() - ready,
                 all.size(), err.empty() ? "" : ": ", err);
      return 1;
    }
  }

  // Retained storm: store the retained messages first.
  double store_seconds = 0;
  if (storm) {
    std::atomic<bool> stored{false};
    const std::uint64_t t0 = now_ns();
    asio::post(ret_pub->owner().io, [&] { ret_pub->start_retained(cfg.retained, [&] { stored.store(true); }); });
    const auto deadline = steady::now() + std::chrono::seconds(300);
    while (!stored.load() && steady::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (!stored.load()) {
      fmt::print(stderr, "loadgen: storing {} retained messages did not finish{}{}\n", cfg.retained,
                 r.first_error().empty() ? "" : ": ", r.first_error());
      shutdown_all();
      return 1;
    }
    store_seconds = static_cast<double>(now_ns() - t0) * 1e-9;
  }

  // The plan: start together, warm up, measure, stop, drain.
  rs.t_start = now_ns() + 20'000'000;
  rs.t_measure = rs.t_start + static_cast<std::uint64_t>(cfg.warmup * 1e9);
  rs.t_stop = rs.t_measure + static_cast<std::uint64_t>(cfg.duration * 1e9);
  for (auto& p : publishers) {
    client_t* c = p.get();
    asio::post(c->owner().io, [c] { c->start_publishing(); });
  }
  window_cpu cpu;
  sleep_until_ns(rs.t_measure);
  cpu.self_start = self_cpu_seconds();
  cpu.broker_start = brokers_cpu_seconds(cfg);
  if (storm) {
    client_t* c = storm_sub.get();
    const std::uint32_t rc = cfg.retained, rp = static_cast<std::uint32_t>(pubs);
    asio::post(c->owner().io, [c, rc, rp] { c->subscribe_now(rc, rp); });
  }
  sleep_until_ns(rs.t_stop);
  cpu.self_end = self_cpu_seconds();
  cpu.broker_end = brokers_cpu_seconds(cfg);
  cpu.seconds = static_cast<double>(rs.t_stop - rs.t_measure) * 1e-9;

  // Drain: until every sent message reached every matching subscriber, every QoS 1/2 publish is
  // acknowledged and the storm is complete, or the drain time is up.
  auto expected_now = [&] {
    std::uint64_t e = 0;
    for (std::size_t p = 0; p < publishers.size(); ++p) e += publishers[p]->sent() * k_of[p];
    return e;
  };
  auto complete = [&] {
    std::uint64_t got = 0, infl = 0;
    for (auto& w : r.workers) got += w->unique_total.load(std::memory_order_relaxed);
    for (auto& p : publishers) infl += p->inflight();
    return got >= expected_now() && infl == 0 && (!storm || storm_sub->retained_done());
  };
  const std::uint64_t drain_end = rs.t_stop + static_cast<std::uint64_t>(cfg.drain * 1e9);
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  while (!complete() && now_ns() < drain_end) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const bool drained = complete();

  shutdown_all();

  // ---- results (all threads joined)
  histogram lat, lat_storm;
  std::uint64_t delivered_window = 0, bytes_window = 0, published_window = 0, delivered_total = 0;
  std::uint64_t unexpected = 0, malformed = 0, foreign = 0, aliased = 0;
  for (auto& w : r.workers) {
    lat.merge(w->lat);
    lat_storm.merge(w->lat_storm);
    delivered_window += w->delivered_window;
    bytes_window += w->delivered_bytes_window;
    published_window += w->published_window;
    delivered_total += w->delivered_total;
    unexpected += w->unexpected;
    malformed += w->malformed;
    foreign += w->foreign;
    aliased += w->aliased;
  }
  std::uint64_t sent_total = 0, expected = 0, lost = 0, dup = 0, reordered = 0, late = 0;
  for (std::size_t p = 0; p < publishers.size(); ++p) sent_total += publishers[p]->sent();
  // Shared: a publisher's messages are spread over the members, so each member's track has gaps;
  // over the group the numbers seen must add up to what was sent (more: a message went to two).
  std::vector<std::uint64_t> group_unique(shared ? publishers.size() : 0, 0);
  for (auto& s : subscribers) {
    const auto& ids = s->expected_ids();
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const auto& t = s->tracks()[i];
      dup += t.duplicates;
      reordered += t.reordered;
      late += t.late;
      if (shared) {
        group_unique[ids[i]] += t.unique;
        continue;
      }
      const std::uint64_t sent = publishers[ids[i]]->sent();
      expected += sent;
      if (t.unique < sent) lost += sent - t.unique;
    }
  }
  for (std::size_t p = 0; p < group_unique.size(); ++p) {
    const std::uint64_t sent = publishers[p]->sent();
    expected += sent;
    if (group_unique[p] < sent)
      lost += sent - group_unique[p];
    else
      dup += group_unique[p] - sent;
  }
  const double secs = cfg.duration;
  const bool acked = rs.q != codec::qos::at_most_once;
  std::string why;
  if (delivered_total == 0) why = "nothing was delivered";
  if (acked && lost > 0)
    why = fmt::format("{} messages lost at QoS {}{}", lost, cfg.qos,
                      drained ? "" : fmt::format(" (not delivered within the {} s drain)", cfg.drain));
  if (acked && dup > 0) why += fmt::format("{}{} duplicates at QoS {}", why.empty() ? "" : ", ", dup, cfg.qos);
  std::uint64_t ret_got = 0;
  double storm_ms = -1;
  if (storm) {
    ret_got = storm_sub->retained_unique();
    if (storm_sub->retained_done()) storm_ms = static_cast<double>(storm_sub->storm_done_ns() - storm_sub->storm_started_ns()) * 1e-6;
    if (ret_got < cfg.retained && acked)
      why += fmt::format("{}{} of {} retained messages missing", why.empty() ? "" : ", ", cfg.retained - ret_got, cfg.retained);
  }
  const bool failed = !why.empty();

  out.integer("publishers", static_cast<std::uint64_t>(pubs))
      .integer("subscribers", static_cast<std::uint64_t>(subs))
      .integer("k_min", kmin)
      .integer("k_max", kmax)
      .num("k_mean", kmean)
      .num("published_per_s", static_cast<double>(published_window) / secs)
      .num("delivered_per_s", static_cast<double>(delivered_window) / secs)
      .num("mb_per_s", static_cast<double>(bytes_window) / secs / 1e6)
      .num("lat_p50_us", us(lat.percentile(50)))
      .num("lat_p99_us", us(lat.percentile(99)))
      .num("lat_p999_us", us(lat.percentile(99.9)))
      .num("lat_max_us", us(lat.max()))
      .integer("sent", sent_total)
      .integer("expected", expected)
      .integer("delivered_total", delivered_total)
      .integer("lost", lost)
      .integer("duplicates", dup)
      .integer("reordered", reordered)
      .integer("late", late)
      .integer("unexpected", unexpected)
      .integer("malformed", malformed)
      .integer("foreign", foreign)
      .integer("aliased", aliased)
      .boolean("drained", drained);
  if (storm) {
    out.integer("retained", std::uint64_t{cfg.retained})
        .integer("retained_received", ret_got)
        .integer("retained_duplicates", storm_sub->retained_duplicates())
        .num("retained_store_s", store_seconds)
        .num("retained_ms", storm_ms)
        .num("storm_bg_p99_us", us(lat_storm.percentile(99)))
        .num("storm_bg_max_us", us(lat_storm.max()));
  }
  out.num("loadgen_cpu_pct", cpu.self_pct()).num("broker_cpu_pct", cpu.broker_pct());
  out.integer("errors", r.errors()).str("first_error", r.first_error());
  out.boolean("failed", failed).str("verdict", failed ? why : "ok");

  // Human summary.
  fmt::print(stderr, "{} qos {} payload {} B: {} publisher(s), {} subscriber(s)", sc, cfg.qos, cfg.payload, pubs, subs);
  if (kmin == kmax)
    fmt::print(stderr, ", each message matches K = {} subscription(s)\n", kmin);
  else
    fmt::print(stderr, ", K per message {}..{} (mean {:.2f})\n", kmin, kmax, kmean);
  fmt::print(stderr, "  published {:.0f} msg/s, delivered {:.0f} msg/s, {:.2f} MB/s over {:.1f} s (after {:.1f} s warm-up)\n",
             static_cast<double>(published_window) / secs, static_cast<double>(delivered_window) / secs,
             static_cast<double>(bytes_window) / secs / 1e6, secs, cfg.warmup);
  fmt::print(stderr, "  latency µs: p50 {:.1f}  p99 {:.1f}  p99.9 {:.1f}  max {:.1f}  ({} samples)\n",
             us(lat.percentile(50)), us(lat.percentile(99)), us(lat.percentile(99.9)), us(lat.max()), lat.count());
  fmt::print(stderr, "  whole run: sent {}, deliveries expected {}, lost {}, duplicated {}, reordered {} (late {}), unexpected {}{}{}\n",
             sent_total, expected, lost, dup, reordered, late, unexpected,
             foreign ? fmt::format(", from an earlier run {}", foreign) : std::string(),
             drained ? "" : " [drain timed out]");
  if (storm)
    fmt::print(stderr, "  retained storm: {} stored in {:.2f} s; subscriber got {} of {} in {:.1f} ms; background sent during storm p99 {:.1f} µs max {:.1f} µs\n",
               cfg.retained, store_seconds, ret_got, cfg.retained, storm_ms, us(lat_storm.percentile(99)), us(lat_storm.max()));
  fmt::print(stderr, "  cpu in window: loadgen {:.0f}%", cpu.self_pct());
  if (cpu.broker_pct() >= 0) fmt::print(stderr, ", broker {:.0f}%", cpu.broker_pct());
  fmt::print(stderr, "\n");
  if (r.errors() > 0) fmt::print(stderr, "  {} error(s), first: {}\n", r.errors(), r.first_error());
  fmt::print(stderr, "  {}\n", failed ? "FAILED: " + why : std::string("ok"));
  return failed ? 2 : 0;
}

// ---------------------------------------------------------------------------------------------
// connect-storm and idle.

template <class Net>
int run_connections(runner& r, json_line& out) {
  const config& cfg = r.cfg;
  run_state& rs = r.rs;
  const bool idle = cfg.scenario == "idle";
  const unsigned total = cfg.connections;
  const unsigned lanes_n = std::max(1u, std::min(cfg.concurrency, total));
  const long rss_before = proc_status_kb(cfg.broker_pid, "VmRSS");

  r.start_workers();
  std::atomic<unsigned> next{0};
  std::vector<std::unique_ptr<conn_lane<Net>>> lanes;
  for (unsigned i = 0; i < lanes_n; ++i)
    lanes.push_back(std::make_unique<conn_lane<Net>>(*r.workers[i % r.workers.size()], rs, next, total, idle,
                                                cfg.subscriptions_per_connection));
  const std::uint64_t t0 = now_ns();
  const double self_cpu_start = self_cpu_seconds();
  for (unsigned i = 0; i < lanes_n; ++i) {
    conn_lane<Net>* l = lanes[i].get();
    asio::post(r.workers[i % r.workers.size()]->io, [l] { l->start(); });
  }
  auto done = [&] {
    std::uint64_t d = 0;
    for (auto& w : r.workers) d += w->conn_done.load(std::memory_order_relaxed);
    return d;
  };
  const auto deadline = steady::now() + std::chrono::seconds(300);
  while (done() < total && steady::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  // Attempts still running are cut off: this thread reads the counters only after the join.
  // The loadgen's own CPU while connecting: at 100% of its core it, not the broker, sets the rate.
  const double connect_wall = static_cast<double>(now_ns() - t0) * 1e-9;
  const double self_cpu_pct = connect_wall > 0 ? 100.0 * (self_cpu_seconds() - self_cpu_start) / connect_wall : 0;

  long rss_after = -1;
  if (idle) {
    // Hold the connections: the broker settles (warm-up), then stays idle for the duration.
    std::this_thread::sleep_for(std::chrono::duration<double>(cfg.warmup + cfg.duration));
    rss_after = proc_status_kb(cfg.broker_pid, "VmRSS");
  }
  rs.closing = true;
  r.on_each_worker([&](worker& w) {
    for (std::size_t i = 0; i < lanes.size(); ++i)
      if (r.workers[i % r.workers.size()].get() == &w) lanes[i]->close_all();
  });
  r.stop_workers();

  histogram lat;
  std::uint64_t ok = 0, failed_n = 0, dropped = 0, last = t0, subscriptions = 0;
  for (auto& w : r.workers) {
    lat.merge(w->lat);
    ok += w->conn_ok;
    subscriptions += w->subscriptions;
    failed_n += w->conn_failed;
    dropped += w->idle_dropped;
    last = std::max(last, w->last_done_ns);
  }
  const double elapsed = static_cast<double>(last - t0) * 1e-9;
  const double rate = elapsed > 0 ? static_cast<double>(ok) / elapsed : 0;
  const std::uint64_t missing = total - std::min<std::uint64_t>(total, ok + failed_n);
  std::string why;
  if (ok == 0) why = "no connection succeeded";
  const bool failed = !why.empty();

  out.integer("connections", static_cast<std::uint64_t>(total))
      .integer("concurrency", static_cast<std::uint64_t>(lanes_n))
      .integer("connected", ok)
      .integer("connect_failures", failed_n + missing)
      .num("connect_seconds", elapsed)
      .num("connections_per_s", rate)
      .num("connect_p50_us", us(lat.percentile(50)))
      .num("connect_p99_us", us(lat.percentile(99)))
      .num("connect_max_us", us(lat.max()))
      .num("loadgen_cpu_pct", self_cpu_pct);
  if (idle) {
    const double per_conn = rss_before >= 0 && rss_after >= 0 && ok > 0
                                ? static_cast<double>(rss_after - rss_before) * 1024.0 / static_cast<double>(ok)
                                : -1;
    // With subscriptions, per_conn includes them; bench/compare separates the two parts with the
    // figure of a run without subscriptions.
    out.integer("rss_before_kb", rss_before)
        .integer("rss_after_kb", rss_after)
        .num("rss_per_connection_bytes", per_conn)
        .integer("subscriptions_per_connection", std::uint64_t{cfg.subscriptions_per_connection})
        .integer("subscriptions", subscriptions)
        .integer("idle_dropped", dropped);
    fmt::print(stderr, "idle: {} of {} connected in {:.2f} s ({:.0f}/s){}; broker RSS {} -> {} KiB: {:.0f} bytes per connection; {} dropped while idle\n",
               ok, total, elapsed, rate,
               cfg.subscriptions_per_connection == 0
                   ? std::string()
                   : fmt::format(", {} subscriptions ({} each)", subscriptions, cfg.subscriptions_per_connection),
               rss_before, rss_after, per_conn, dropped);
  } else {
    fmt::print(stderr, "connect-storm: {} of {} connections ({} in flight) in {:.2f} s: {:.0f} connections/s, {} failed; CONNECT->CONNACK µs p50 {:.0f} p99 {:.0f} max {:.0f}; loadgen CPU {:.0f}%\n",
               ok, total, lanes_n, elapsed, rate, failed_n + missing, us(lat.percentile(50)), us(lat.percentile(99)),
               us(lat.max()), self_cpu_pct);
  }
  out.integer("errors", r.errors()).str("first_error", r.first_error());
  out.boolean("failed", failed).str("verdict", failed ? why : "ok");
  if (r.errors() > 0) fmt::print(stderr, "  {} error(s), first: {}\n", r.errors(), r.first_error());
  fmt::print(stderr, "  {}\n", failed ? "FAILED: " + why : std::string("ok"));
  return failed ? 1 : 0;  // no connection at all: the broker is not there (an error, not a finding)
}

#if LOADGEN_TLS
/// The clients' TLS context: TLS 1.2 or later (or exactly --tls-version), OpenSSL's default
/// ciphers and groups; the broker's certificate is checked only with --cafile.
std::unique_ptr<asio::ssl::context> make_tls_context(const config& cfg) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_compression);
  SSL_CTX* native = ctx->native_handle();
  const long lowest = cfg.tls_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION;
  const long highest = cfg.tls_version == "1.2" ? TLS1_2_VERSION : cfg.tls_version == "1.3" ? TLS1_3_VERSION : 0;
  SSL_CTX_set_min_proto_version(native, lowest);
  SSL_CTX_set_max_proto_version(native, highest);
  // No session is kept for resumption: every connection makes a full handshake.
  SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
  if (cfg.cafile.empty()) {
    ctx->set_verify_mode(asio::ssl::verify_none);
  } else {
    ctx->load_verify_file(cfg.cafile);
    ctx->set_verify_mode(asio::ssl::verify_peer);
  }
  return ctx;
}
#endif

/// TLS: what was negotiated, for the JSON line and the summary (bench/compare checks that both
/// brokers negotiated the same).
void report_tls(runner& r, json_line& out) {
  std::string version, cipher, group;
  std::uint64_t mismatches = 0;
  for (const auto& w : r.workers) {
    mismatches += w->tls_mismatches;
    if (w->tls_version.empty()) continue;
    if (version.empty()) {
      version = w->tls_version;
      cipher = w->tls_cipher;
      group = w->tls_group;
    } else if (version != w->tls_version || cipher != w->tls_cipher || group != w->tls_group) {
      ++mismatches;
    }
  }
  out.boolean("tls", true).str("tls_version", version).str("tls_cipher", cipher).str("tls_group", group)
      .integer("tls_mismatches", mismatches);
  fmt::print(stderr, "  TLS: {} {} {}{}\n", version.empty() ? "no handshake completed" : version, cipher, group,
             mismatches ? fmt::format(" ({} handshakes negotiated something else)", mismatches) : std::string());
}

void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

int main(int argc, char** argv) {
  config cfg;
  CLI::App app{"loadgen: MQTT load generator (mqttbroker bench, issue 5)"};
  app.add_option("--host", cfg.host, "broker address")->capture_default_str();
  app.add_option("--port", cfg.port, "broker port")->capture_default_str();
  app.add_option("--scenario", cfg.scenario, "fanin, fanout, pairs, wildcard, shared, retained-storm, connect-storm or idle")
      ->capture_default_str()
      ->check(CLI::IsMember({"fanin", "fanout", "pairs", "wildcard", "shared", "retained-storm", "connect-storm", "idle"}));
  app.add_option("--qos", cfg.qos, "QoS of publications and subscriptions")->capture_default_str()->check(CLI::Range(0, 2));
  app.add_option("--payload", cfg.payload, "payload bytes (at least 16: run tag, publisher id, sequence, send time)")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{16}, std::size_t{100'000'000}));
  app.add_option("--publishers", cfg.publishers,
                 "publishers (default: fanin 8, fanout 1, pairs 8, wildcard 8, shared 8, retained-storm 4 background pairs)");
  app.add_option("--subscribers", cfg.subscribers, "subscribers (default: fanin 1, fanout 8, wildcard 8, shared 10 in one group; pairs: one per publisher)");
  app.add_option("--duration", cfg.duration, "measured seconds (idle: seconds held after settling)")->capture_default_str();
  app.add_option("--warmup", cfg.warmup, "seconds of traffic before measuring (idle: settle time)")->capture_default_str();
  app.add_option("--drain", cfg.drain, "seconds at most to wait for stragglers after publishing stops")->capture_default_str();
  app.add_option("--inflight", cfg.inflight, "unacknowledged QoS 1/2 publishes per publisher")
      ->capture_default_str()
      ->check(CLI::Range(1u, 65000u));
  app.add_option("--rate", cfg.rate, "target total messages/s over all publishers, 0 = as fast as possible")->capture_default_str();
  app.add_option("--connections", cfg.connections, "connections (connect-storm, idle)")->capture_default_str();
  app.add_option("--concurrency", cfg.concurrency, "connection attempts in flight")->capture_default_str()->check(CLI::Range(1u, 100000u));
  app.add_option("--retained", cfg.retained, "retained messages stored before the storm (retained-storm)")->capture_default_str();
  app.add_option("--subscriptions-per-connection", cfg.subscriptions_per_connection,
                 "idle: distinct topic filters each connection subscribes to after connecting (memory per subscription)")
      ->capture_default_str()
      ->check(CLI::Range(0u, 10000u));
  app.add_option("--threads", cfg.threads, "io_context threads")->capture_default_str()->check(CLI::Range(1u, 64u));
  std::vector<int> broker_pids;
  app.add_option("--broker-pid", broker_pids,
                 "broker process for RSS and CPU readings from /proc; again for a second one whose CPU is added")
      ->take_all();
  app.add_option("--sub-port", cfg.sub_port, "subscribers connect to this port (the far broker of a bridge)");
  app.add_option("--protocol", cfg.protocol, "MQTT protocol level: 4 (3.1.1) or 5")->capture_default_str()->check(CLI::IsMember({4, 5}));
  app.add_option("--topic-alias-maximum", cfg.topic_alias_maximum,
                 "5.0 subscribers announce this Topic Alias Maximum and resolve the broker's aliases")
      ->capture_default_str()
      ->check(CLI::Range(0u, 65535u));
  app.add_flag("--publish-properties", cfg.publish_properties,
               "5.0 publishers send Message Expiry, Content Type and a User Property on every PUBLISH");
  app.add_option("--batch", cfg.batch, "bytes a publisher puts in one write")->capture_default_str()->check(CLI::Range(std::size_t{64}, std::size_t{1} << 26));
  app.add_option("--e2e-window", cfg.e2e_window,
                 "closed loop: messages per publisher sent but not yet received by every matching subscriber "
                 "(0 = open loop, the publishers do not wait for the subscribers)")
      ->capture_default_str();
  app.add_option("--label", cfg.label, "free text copied into the JSON result (e.g. the broker's name)");
  app.add_flag("--persistent", cfg.persistent,
               "persistent sessions (3.1.1 CleanSession 0; 5.0 Clean Start 0, Session Expiry 3600 s): what a durable store keeps");
  app.add_flag("--json", cfg.json, "print one JSON line with the results on stdout");
  app.add_flag("--ws", cfg.ws, "connect over WebSocket (ws://HOST:PORT/--ws-path, subprotocol mqtt)");
  app.add_option("--ws-path", cfg.ws_path, "with --ws: the path of the upgrade")->capture_default_str();
  app.add_flag("--tls", cfg.tls, "connect with TLS (no certificate check unless --cafile); every connection a full handshake");
  app.add_option("--cafile", cfg.cafile, "with --tls: verify the broker's certificate against these CAs (PEM) and its name against --host");
  app.add_option("--tls-version", cfg.tls_version, "with --tls: the TLS version to use; auto lets the broker choose")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "1.2", "1.3"}));
  CLI11_PARSE(app, argc, argv);
  if (!broker_pids.empty()) {
    cfg.broker_pid = broker_pids.front();
    cfg.more_broker_pids.assign(broker_pids.begin() + 1, broker_pids.end());
  }
  if (cfg.ws && cfg.tls) {
    fmt::print(stderr, "loadgen: --ws is WebSocket over TCP; with --tls (wss) it is not built yet\n");
    return 1;
  }
  if (!cfg.tls && (!cfg.cafile.empty() || cfg.tls_version != "auto")) {
    fmt::print(stderr, "loadgen: --cafile and --tls-version need --tls\n");
    return 1;
  }
#if !LOADGEN_TLS
  if (cfg.tls) {
    fmt::print(stderr, "loadgen: this loadgen was built without OpenSSL, so without --tls\n");
    return 1;
  }
#endif
  if ((cfg.topic_alias_maximum > 0 || cfg.publish_properties) && cfg.protocol != 5) {
    fmt::print(stderr, "loadgen: --topic-alias-maximum and --publish-properties need --protocol 5\n");
    return 1;
  }
  if (cfg.subscriptions_per_connection > 0 && cfg.scenario != "idle") {
    fmt::print(stderr, "loadgen: --subscriptions-per-connection applies to the idle scenario only\n");
    return 1;
  }

  raise_fd_limit();
  runner r(cfg);
  run_state& rs = r.rs;
  rs.version = cfg.protocol == 5 ? codec::protocol_version::v5 : codec::protocol_version::v3_1_1;
  rs.q = static_cast<codec::qos>(cfg.qos);
  rs.padding.assign(std::max<std::size_t>(cfg.payload, stamp_bytes), 'x');
  rs.id_prefix = fmt::format("lg{}-", getpid());
  rs.tag = static_cast<std::uint16_t>((static_cast<std::uint64_t>(getpid()) * 40503u ^ now_ns()) | 1u);
  try {
    asio::io_context resolve_io;
    tcp::resolver resolver(resolve_io);
    auto results = resolver.resolve(cfg.host, std::to_string(cfg.port));
    rs.endpoint = *results.begin();
    rs.sub_endpoint = tcp::endpoint(rs.endpoint.address(), cfg.sub_port);
  } catch (const std::exception& e) {
    fmt::print(stderr, "loadgen: cannot resolve {}: {}\n", cfg.host, e.what());
    return 1;
  }

#if LOADGEN_TLS
  if (cfg.tls) {
    try {
      rs.tls = make_tls_context(cfg);
    } catch (const std::exception& e) {
      fmt::print(stderr, "loadgen: TLS: {}\n", e.what());
      return 1;
    }
    std::error_code not_ip;
    asio::ip::make_address(cfg.host, not_ip);
    if (not_ip) rs.sni = cfg.host;  // SNI carries names only
  }
#endif

  json_line out;
  out.str("scenario", cfg.scenario).str("label", cfg.label).integer("qos", static_cast<std::uint64_t>(cfg.qos))
      .integer("payload", static_cast<std::uint64_t>(cfg.payload)).integer("protocol", static_cast<std::uint64_t>(cfg.protocol))
      .num("duration_s", cfg.duration).num("rate", cfg.rate).integer("inflight", std::uint64_t{cfg.inflight})
      .integer("threads", std::uint64_t{cfg.threads}).integer("e2e_window", std::uint64_t{cfg.e2e_window})
      .boolean("persistent", cfg.persistent);
  const double cpu0 = self_cpu_seconds();
  const auto wall0 = steady::now();
  int rc = 1;
  try {
    const bool connections = cfg.scenario == "connect-storm" || cfg.scenario == "idle";
#if LOADGEN_TLS
    if (cfg.tls)
      rc = connections ? run_connections<tls_net>(r, out) : run_traffic<tls_net>(r, out);
    else
#endif
    if (cfg.ws)
      rc = connections ? run_connections<ws_net>(r, out) : run_traffic<ws_net>(r, out);
    else
      rc = connections ? run_connections<plain_net>(r, out) : run_traffic<plain_net>(r, out);
  } catch (const std::exception& e) {
    fmt::print(stderr, "loadgen: {}\n", e.what());
    return 1;
  }
  if (cfg.tls) report_tls(r, out);
  out.num("loadgen_cpu_s", self_cpu_seconds() - cpu0)
      .num("wall_s", std::chrono::duration<double>(steady::now() - wall0).count())
      .integer("exit_code", static_cast<std::uint64_t>(rc));
  if (cfg.json) fmt::print("{}\n", out.done());
  return rc;
}
