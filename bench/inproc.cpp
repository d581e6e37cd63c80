// bench_inproc: the embedded path of the public API, measured inside one process. No broker
// process and no load generator: the host calls broker.publish() itself.
//
//   a) publish -> N in-process subscribers (broker.subscribe handlers); checks that every handler
//      of one publish gets the same message object (no payload copy per subscriber);
//   b) publish -> N socket subscribers: blocking MQTT 3.1.1 clients on loopback TCP, each on its
//      own thread, counting PUBLISH packets with the project's decoder. The publisher runs on the
//      io_context thread (broker<> is single-threaded) and keeps every subscriber within a window
//      of messages, so the run measures throughput rather than queue growth;
//   c) multi-threaded scaling: K workers posted onto the io_context publish to their own topics,
//      each with in-process subscribers; broker_mt (locking::shared) on 1 and on T threads, and
//      broker<> (locking::none) on 1 thread, medians of --reps runs each.
//
// The table goes to stdout, or to stderr with --json (then stdout carries one JSON line per row).

#include "json_line.hpp"

#include <mqttbroker/broker.hpp>
#include <mqttbroker/codec/decoder.hpp>
#include <mqttbroker/codec/encoder.hpp>
#include <mqttbroker/version.hpp>

#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <fmt/core.h>

#include <pthread.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
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

struct config {
  std::string parts = "abc";
  double duration = 1.0;     // a, b: seconds per measured repetition
  double mt_duration = 1.5;  // c
  double warmup = 0.2;
  unsigned reps = 3;
  std::vector<std::size_t> payloads{16, 1024};
  unsigned subscribers = 8;         // a
  unsigned socket_subscribers = 4;  // b
  unsigned window = 1000;           // b
  unsigned burst = 64;              // b: publishes per posted handler
  unsigned mt_burst = 1024;         // c: the same; large, so posting costs little beside publishing
  unsigned threads = 2;             // c: compared with 1
  unsigned workers = 4;             // c
  unsigned mt_topics = 4;           // c: topics per worker
  unsigned mt_subscribers = 2;      // c: in-process subscribers per topic
  std::size_t mt_payload = 16;
  bool control = false;  // c: also run the harness without the broker
  bool json = false;
};

/// A counter written by one thread at a time and read by another: a relaxed load and store, no
/// locked instruction on the measured path.
void bump(std::atomic<std::uint64_t>& a, std::uint64_t n = 1) noexcept {
  a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

double seconds(steady::duration d) { return std::chrono::duration<double>(d).count(); }

double process_cpu_s() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6; };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

/// CPU time of another thread of this process (the broker's io_context thread).
double thread_cpu_s(std::thread& t) {
  clockid_t cid{};
  if (pthread_getcpuclockid(t.native_handle(), &cid) != 0) return -1;
  timespec ts{};
  if (clock_gettime(cid, &ts) != 0) return -1;
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/// One row of the report: medians over the repetitions.
struct row {
  std::string part, broker;
  unsigned threads = 1, subscribers = 0;
  std::size_t payload = 0;
  std::vector<double> published, delivered, cpu;  // per repetition: msg/s, msg/s, % of one CPU
  double broker_thread_cpu = -1;                  // b: median % of one CPU
  std::string check;
  bool ok = true;
};


// ---------------------------------------------------------------------------------------------
// a) in-process publish -> N in-process subscribers

/// What the handlers of one publish saw: the first handler notes the message, the others compare.
struct share_check {
  const mqttbroker::message* current = nullptr;
  const char* payload = nullptr;
  std::uint64_t deliveries = 0, mismatches = 0;
};

row run_local_fanout(const config& cfg, std::size_t payload_size) {
  asio::io_context io(1);  // never run: publish() delivers to in-process handlers synchronously
  mqttbroker::broker<> b(io);
  share_check chk;
  for (unsigned i = 0; i < cfg.subscribers; ++i) {
    b.subscribe("inproc/a/t", [&chk](const mqttbroker::message_ptr& m) {
      ++chk.deliveries;
      if (chk.current == nullptr) {
        chk.current = m.get();
        chk.payload = m->payload().data();
      } else if (m.get() != chk.current || m->payload().data() != chk.payload) {
        ++chk.mismatches;
      }
    });
  }
  const std::string payload(payload_size, 'x');
  std::uint64_t published = 0;
  // Checks the clock every 256 publishes, so reading it costs nothing measurable.
  auto loop_for = [&](double secs) {
    const auto end = steady::now() + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(secs));
    std::uint64_t n = 0;
    do {
      for (int i = 0; i < 256; ++i) {
        chk.current = nullptr;
        b.publish("inproc/a/t", payload);
      }
      n += 256;
    } while (steady::now() < end);
    published += n;
    return n;
  };

  row r;
  r.part = "a";
  r.broker = "broker<>";
  r.subscribers = cfg.subscribers;
  r.payload = payload_size;
  loop_for(cfg.warmup);
  for (unsigned rep = 0; rep < cfg.reps; ++rep) {
    const double c0 = process_cpu_s();
    const auto t0 = steady::now();
    const std::uint64_t n = loop_for(cfg.duration);
    const double dt = seconds(steady::now() - t0);
    const double c1 = process_cpu_s();
    r.published.push_back(static_cast<double>(n) / dt);
    r.delivered.push_back(static_cast<double>(n) * cfg.subscribers / dt);
    r.cpu.push_back(100.0 * (c1 - c0) / dt);
  }
  const std::uint64_t expected = published * cfg.subscribers;
  r.ok = chk.mismatches == 0 && chk.deliveries == expected;
  r.check = fmt::format("same message object at all {} handlers: {} ({} deliveries, {} mismatches{})", cfg.subscribers,
                        r.ok ? "yes" : "NO", chk.deliveries, chk.mismatches,
                        chk.deliveries == expected ? "" : fmt::format(", expected {} deliveries", expected));
  return r;
}

// ---------------------------------------------------------------------------------------------
// b) in-process publish -> N socket subscribers

/// A blocking MQTT subscriber on its own thread: CONNECT, SUBSCRIBE, then read and count.
struct socket_reader {
  std::thread th;
  std::atomic<std::uint64_t> received{0};  // PUBLISH packets, written by the reader's thread
  std::atomic<int> state{0};               // 0 setting up, 1 subscribed, -1 failed
  std::string error;                       // set before state -1, or before the thread ends
  std::uint64_t wrong_size = 0;            // read after the join
};

/// The publisher, on the io_context thread. It publishes bursts while the slowest subscriber is
/// fewer than `window` messages behind; when blocked it waits for a reader to wake it.
class paced_publisher {
 public:
  paced_publisher(mqttbroker::broker<>& b, asio::io_context& io, std::vector<std::unique_ptr<socket_reader>>& readers,
                  std::string payload, unsigned window, unsigned burst)
      : b_(b), io_(io), timer_(io), readers_(readers), payload_(std::move(payload)), window_(window), burst_(burst) {}

  void start() { asio::post(io_, [this] { step(); }); }
  /// Any thread. Extra steps are harmless once stop_ is set: each ends at once.
  void stop() {
    stop_.store(true);
    asio::post(io_, [this] { step(); });
  }
  bool finished() const noexcept { return done_.load(); }
  std::uint64_t sent() const noexcept { return sent_pub_.load(std::memory_order_relaxed); }
  std::uint64_t drop_pauses() const noexcept { return drop_pauses_.load(std::memory_order_relaxed); }

  /// A reader's thread, after counting: resumes a publisher that waits for the window.
  void wake() {
    if (blocked_.load() && blocked_.exchange(false)) asio::post(io_, [this] { step(); });
  }

 private:
  std::uint64_t room() const noexcept {
    std::uint64_t lowest = std::numeric_limits<std::uint64_t>::max();
    for (const auto& r : readers_) lowest = std::min(lowest, r->received.load(std::memory_order_relaxed));
    const std::uint64_t lag = sent_ > lowest ? sent_ - lowest : 0;
    return lag < window_ ? window_ - lag : 0;
  }

  void step() {
    if (stop_.load()) {
      done_.store(true);
      return;
    }
    // Drops mean a socket's queue limit was reached: the window is too wide for this payload.
    // Back off for a millisecond rather than measure how fast messages can be discarded.
    const std::uint64_t dropped = b_.stats().messages_dropped;
    if (dropped != dropped_) {
      dropped_ = dropped;
      drop_pauses_.store(drop_pauses_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      timer_.expires_after(std::chrono::milliseconds(1));
      timer_.async_wait([this](std::error_code) { step(); });
      return;
    }
    std::uint64_t r = room();
    if (r == 0) {
      // Mark, then look again (a reader counts, then looks at the mark): one of the two sees the
      // other, so no wake-up is lost. If a reader took the mark meanwhile, its posted step goes on.
      blocked_.store(true);
      r = room();
      if (r == 0 || !blocked_.exchange(false)) return;
    }
    const std::uint64_t n = std::min<std::uint64_t>(r, burst_);
    for (std::uint64_t i = 0; i < n; ++i) b_.publish("inproc/b/t", payload_);
    sent_ += n;
    sent_pub_.store(sent_, std::memory_order_relaxed);
    // Yield between bursts so the connections' writes make progress on the same thread.
    asio::post(io_, [this] { step(); });
  }

  mqttbroker::broker<>& b_;
  asio::io_context& io_;
  asio::steady_timer timer_;
  std::vector<std::unique_ptr<socket_reader>>& readers_;
  std::string payload_;
  std::uint64_t window_, burst_;
  std::uint64_t sent_ = 0, dropped_ = 0;  // io thread
  std::atomic<std::uint64_t> sent_pub_{0}, drop_pauses_{0};
  std::atomic<bool> blocked_{false}, stop_{false}, done_{false};
};

void read_loop(socket_reader& r, tcp::endpoint ep, unsigned index, std::size_t payload_size, paced_publisher& pub) {
  constexpr auto v = codec::protocol_version::v3_1_1;
  auto setup_failed = [&r](std::string why) {
    r.error = std::move(why);
    r.state.store(-1);
  };
  asio::io_context cio(1);  // synchronous calls only; the context just owns the socket
  tcp::socket s(cio);
  std::error_code ec;
  s.connect(ep, ec);
  if (ec) return setup_failed("connect: " + ec.message());
  s.set_option(tcp::no_delay(true), ec);
  const std::string client_id = fmt::format("inproc-sub-{}", index);
  std::vector<std::uint8_t> out;
  codec::connect c;
  c.version = v;
  c.client_id = client_id;
  codec::encode(c, v, out);
  asio::write(s, asio::buffer(out), ec);
  if (ec) return setup_failed("write: " + ec.message());

  codec::decoder dec(codec::decoder_options{codec::role::client, codec::max_packet_size, v});
  std::vector<std::uint8_t> buf(256 * 1024);
  std::string err;
  for (;;) {
    const std::size_t n = s.read_some(asio::buffer(buf), ec);
    if (ec) break;  // EOF: the broker stopped
    std::uint64_t got = 0;
    const auto res = dec.feed(buf.data(), n, [&](codec::packet& p) {
      switch (codec::type_of(p)) {
        case codec::packet_type::publish:
          ++got;
          if (std::get_if<codec::publish>(&p)->payload.size() != payload_size) ++r.wrong_size;
          break;
        case codec::packet_type::connack: {
          const auto code = std::get_if<codec::connack>(&p)->code;
          if (code != 0) {
            err = fmt::format("CONNACK code {}", code);
            break;
          }
          codec::subscribe sub;
          sub.packet_id = 1;
          sub.entries.push_back({"inproc/b/t", {}});
          out.clear();
          codec::encode(sub, v, out);
          asio::write(s, asio::buffer(out), ec);
          if (ec) err = "write: " + ec.message();
          break;
        }
        case codec::packet_type::suback: {
          const auto& a = *std::get_if<codec::suback>(&p);
          if (a.reasons.size() != 1 || static_cast<std::uint8_t>(a.reasons[0]) >= 0x80)
            err = "SUBACK refused";
          else
            r.state.store(1);
          break;
        }
        default: err = fmt::format("unexpected {}", codec::to_string(codec::type_of(p))); break;
      }
      return err.empty();
    });
    if (res.ec && err.empty()) err = "decode: " + res.ec.message();
    if (!err.empty()) break;
    if (got != 0) {
      bump(r.received, got);
      pub.wake();
    }
  }
  if (err.empty() && ec && ec != asio::error::eof) err = "read: " + ec.message();
  if (r.state.load() != 1) return setup_failed(err.empty() ? std::string("closed before SUBACK") : err);
  r.error = err;
}

row run_socket_fanout(const config& cfg, std::size_t payload_size) {
  row r;
  r.part = "b";
  r.broker = "broker<>";
  r.subscribers = cfg.socket_subscribers;
  r.payload = payload_size;

  asio::io_context io(1);
  mqttbroker::broker<> b(io);
  b.listen({"127.0.0.1", 0});
  const tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), b.local_port());
  b.start();
  auto guard = asio::make_work_guard(io);
  std::thread io_thread([&io] { io.run(); });

  std::vector<std::unique_ptr<socket_reader>> readers;
  for (unsigned i = 0; i < cfg.socket_subscribers; ++i) readers.push_back(std::make_unique<socket_reader>());
  paced_publisher pub(b, io, readers, std::string(payload_size, 'x'), cfg.window, cfg.burst);
  for (unsigned i = 0; i < cfg.socket_subscribers; ++i) {
    socket_reader* rd = readers[i].get();
    rd->th = std::thread([rd, ep, i, payload_size, &pub] { read_loop(*rd, ep, i, payload_size, pub); });
  }
  auto total_received = [&] {
    std::uint64_t t = 0;
    for (const auto& rd : readers) t += rd->received.load(std::memory_order_relaxed);
    return t;
  };

  const auto setup_deadline = steady::now() + std::chrono::seconds(10);
  auto pending = [&] {
    return std::any_of(readers.begin(), readers.end(), [](const auto& rd) { return rd->state.load() == 0; });
  };
  while (pending() && steady::now() < setup_deadline) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  std::string setup_error;
  for (const auto& rd : readers)
    if (rd->state.load() != 1 && setup_error.empty())
      setup_error = rd->state.load() == 0 ? std::string("no SUBACK within 10 s") : rd->error;

  std::uint64_t lost = 0;
  if (setup_error.empty()) {
    pub.start();
    std::this_thread::sleep_for(std::chrono::duration<double>(cfg.warmup));
    auto sent0 = pub.sent();
    auto recv0 = total_received();
    auto cpu0 = process_cpu_s();
    auto bcpu0 = thread_cpu_s(io_thread);
    auto t0 = steady::now();
    std::vector<double> bcpu;
    for (unsigned rep = 0; rep < cfg.reps; ++rep) {
      std::this_thread::sleep_for(std::chrono::duration<double>(cfg.duration));
      const auto sent1 = pub.sent();
      const auto recv1 = total_received();
      const auto cpu1 = process_cpu_s();
      const auto bcpu1 = thread_cpu_s(io_thread);
      const auto t1 = steady::now();
      const double dt = seconds(t1 - t0);
      r.published.push_back(static_cast<double>(sent1 - sent0) / dt);
      r.delivered.push_back(static_cast<double>(recv1 - recv0) / dt);
      r.cpu.push_back(100.0 * (cpu1 - cpu0) / dt);
      bcpu.push_back(100.0 * (bcpu1 - bcpu0) / dt);
      sent0 = sent1, recv0 = recv1, cpu0 = cpu1, bcpu0 = bcpu1, t0 = t1;
    }
    r.broker_thread_cpu = median(bcpu);
    pub.stop();
    while (!pub.finished()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    // Drain: every message sent reaches every subscriber, unless the broker dropped it.
    const std::uint64_t expected = pub.sent() * cfg.socket_subscribers;
    const auto drain_deadline = steady::now() + std::chrono::seconds(5);
    while (total_received() < expected && steady::now() < drain_deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    lost = expected - std::min(expected, total_received());
  }

  std::atomic<bool> stopped{false};
  b.async_stop([&stopped](std::error_code) { stopped.store(true); });
  const auto stop_deadline = steady::now() + std::chrono::seconds(10);
  while (!stopped.load() && steady::now() < stop_deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  for (auto& rd : readers) rd->th.join();  // the broker closed their connections
  guard.reset();
  io_thread.join();

  std::uint64_t wrong = 0;
  std::string read_error;
  for (const auto& rd : readers) {
    wrong += rd->wrong_size;
    if (read_error.empty() && !rd->error.empty()) read_error = rd->error;
  }
  const std::uint64_t dropped = b.stats().messages_dropped;
  if (!setup_error.empty()) {
    r.ok = false;
    r.check = "FAILED: " + setup_error;
    return r;
  }
  r.ok = lost == 0 && dropped == 0 && wrong == 0 && read_error.empty();
  r.check = fmt::format("sent {}, lost {}, dropped {}, drop pauses {}, wrong size {}{}{}", pub.sent(), lost, dropped,
                        pub.drop_pauses(), wrong, read_error.empty() ? "" : ", error: ", read_error);
  return r;
}

// ---------------------------------------------------------------------------------------------
// c) multi-threaded scaling of in-process publishing

/// One worker's topics and counters, on a cache line of its own so workers on different threads
/// do not share one.
struct alignas(64) mt_worker {
  std::atomic<std::uint64_t> published{0}, delivered{0};
  std::vector<std::string> topics;
  std::size_t next = 0;
};

struct mt_sample {
  double published = 0, delivered = 0, cpu = 0;
};

/// K workers, each a chain of posted handlers: publish a burst round-robin over its own topics,
/// post the next burst. A chain never runs on two threads at once, so its counters need no lock.
template <class Broker>
class mt_load {
 public:
  mt_load(const config& cfg, unsigned threads)
      : cfg_(cfg), threads_(threads), io_(static_cast<int>(threads)), b_(io_), payload_(cfg.mt_payload, 'x') {
    for (unsigned k = 0; k < cfg.workers; ++k) {
      auto w = std::make_unique<mt_worker>();
      for (unsigned t = 0; t < cfg.mt_topics; ++t) {
        w->topics.push_back(fmt::format("mt/w{}/t{}", k, t));
        for (unsigned s = 0; s < cfg.mt_subscribers; ++s)
          b_.subscribe(w->topics.back(), [wp = w.get()](const mqttbroker::message_ptr&) { bump(wp->delivered); });
      }
      workers_.push_back(std::move(w));
    }
  }

  mt_sample run() {
    auto guard = asio::make_work_guard(io_);
    std::vector<std::thread> pool;
    for (unsigned i = 0; i < threads_; ++i) pool.emplace_back([this] { io_.run(); });
    for (auto& w : workers_) asio::post(io_, [this, wp = w.get()] { step(*wp); });
    std::this_thread::sleep_for(std::chrono::duration<double>(cfg_.warmup));
    const auto p0 = total(&mt_worker::published), d0 = total(&mt_worker::delivered);
    const double c0 = process_cpu_s();
    const auto t0 = steady::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(cfg_.mt_duration));
    const auto p1 = total(&mt_worker::published), d1 = total(&mt_worker::delivered);
    const double c1 = process_cpu_s();
    const double dt = seconds(steady::now() - t0);
    stop_.store(true);
    while (finished_.load() < workers_.size()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    guard.reset();
    for (auto& t : pool) t.join();
    return {static_cast<double>(p1 - p0) / dt, static_cast<double>(d1 - d0) / dt, 100.0 * (c1 - c0) / dt};
  }

 private:
  std::uint64_t total(std::atomic<std::uint64_t> mt_worker::*field) const {
    std::uint64_t t = 0;
    for (const auto& w : workers_) t += ((*w).*field).load(std::memory_order_relaxed);
    return t;
  }

  void step(mt_worker& w) {
    if (stop_.load(std::memory_order_relaxed)) {
      finished_.fetch_add(1);
      return;
    }
    for (unsigned i = 0; i < cfg_.mt_burst; ++i) {
      b_.publish(w.topics[w.next], payload_);
      if (++w.next == w.topics.size()) w.next = 0;
    }
    bump(w.published, cfg_.mt_burst);
    asio::post(io_, [this, &w] { step(w); });
  }

  const config& cfg_;
  unsigned threads_;
  asio::io_context io_;
  Broker b_;
  std::string payload_;
  std::vector<std::unique_ptr<mt_worker>> workers_;
  std::atomic<bool> stop_{false};
  std::atomic<std::size_t> finished_{0};
};

/// Control for part c (--control): the same workers and handlers around a stand-in for the broker
/// with no shared writable state (a map from topic to handlers, one message::make per publish),
/// to show what the harness and the io_context scale to by themselves.
class no_broker {
 public:
  explicit no_broker(asio::io_context&) {}
  void subscribe(std::string_view topic, std::function<void(const mqttbroker::message_ptr&)> h) {
    handlers_[std::string(topic)].push_back(std::move(h));
  }
  std::size_t publish(std::string_view topic, std::string_view payload) {
    const auto m = mqttbroker::message::make(topic, payload, codec::qos::at_most_once, false);
    const auto it = handlers_.find(topic);
    if (it == handlers_.end()) return 0;
    for (const auto& h : it->second) h(m);
    return it->second.size();
  }

 private:
  std::map<std::string, std::vector<std::function<void(const mqttbroker::message_ptr&)>>, std::less<>> handlers_;
};

template <class Broker>
mt_sample run_mt_once(const config& cfg, unsigned threads) {
  mt_load<Broker> load(cfg, threads);
  return load.run();
}

std::vector<row> run_scaling(const config& cfg) {
  struct variant {
    const char* name;
    unsigned threads;
    mt_sample (*run)(const config&, unsigned);
  };
  std::vector<variant> vs = {{"broker<>", 1, &run_mt_once<mqttbroker::broker<>>},
                             {"broker_mt", 1, &run_mt_once<mqttbroker::broker_mt>}};
  if (cfg.threads > 1) vs.push_back({"broker_mt", cfg.threads, &run_mt_once<mqttbroker::broker_mt>});
  if (cfg.control) {
    vs.push_back({"control", 1, &run_mt_once<no_broker>});
    if (cfg.threads > 1) vs.push_back({"control", cfg.threads, &run_mt_once<no_broker>});
  }
  std::vector<row> rows(vs.size());
  for (std::size_t i = 0; i < vs.size(); ++i) {
    rows[i].part = "c";
    rows[i].broker = vs[i].name;
    rows[i].threads = vs[i].threads;
    rows[i].subscribers = cfg.mt_subscribers;
    rows[i].payload = cfg.mt_payload;
    rows[i].check = fmt::format("{} workers x {} topics x {} subscribers{}", cfg.workers, cfg.mt_topics, cfg.mt_subscribers,
                                std::string_view(vs[i].name) == "control" ? " (no broker: harness only)" : "");
  }
  // Repetition-major, so a change in the machine's other load affects every variant alike.
  for (unsigned rep = 0; rep < cfg.reps; ++rep) {
    for (std::size_t i = 0; i < vs.size(); ++i) {
      const mt_sample s = vs[i].run(cfg, vs[i].threads);
      rows[i].published.push_back(s.published);
      rows[i].delivered.push_back(s.delivered);
      rows[i].cpu.push_back(s.cpu);
    }
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Report

std::string grouped(double v) {
  std::string s = fmt::format("{:.0f}", v);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<std::size_t>(i), ",");
  return s;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

}  // namespace

int main(int argc, char** argv) {
  config cfg;
  CLI::App app{"bench_inproc: mqttbroker's embedded path (in-process publish and subscribe)"};
  app.add_option("--parts", cfg.parts, "which parts to run: any of a, b, c")->capture_default_str();
  app.add_option("--duration", cfg.duration, "a, b: seconds per measured repetition")->capture_default_str();
  app.add_option("--mt-duration", cfg.mt_duration, "c: seconds per measured run")->capture_default_str();
  app.add_option("--warmup", cfg.warmup, "seconds before measuring")->capture_default_str();
  app.add_option("--reps", cfg.reps, "repetitions; the table shows medians")->capture_default_str()->check(CLI::Range(1u, 100u));
  app.add_option("--payload", cfg.payloads, "a, b: payload sizes in bytes")->capture_default_str();
  app.add_option("--subscribers", cfg.subscribers, "a: in-process subscribers")->capture_default_str()->check(CLI::Range(1u, 100000u));
  app.add_option("--socket-subscribers", cfg.socket_subscribers, "b: TCP subscribers (one thread each)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 256u));
  app.add_option("--window", cfg.window, "b: messages the slowest subscriber may lag behind the publisher")
      ->capture_default_str()
      ->check(CLI::Range(1u, 10'000'000u));
  app.add_option("--burst", cfg.burst, "b: publishes per posted handler (at most the window's room)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 100000u));
  app.add_option("--mt-burst", cfg.mt_burst, "c: publishes per posted handler")->capture_default_str()->check(CLI::Range(1u, 1000000u));
  app.add_option("--threads", cfg.threads, "c: io_context threads for broker_mt, compared with 1")
      ->capture_default_str()
      ->check(CLI::Range(1u, 64u));
  app.add_option("--workers", cfg.workers, "c: publishing workers posted onto the io_context")->capture_default_str()->check(CLI::Range(1u, 1024u));
  app.add_option("--mt-topics", cfg.mt_topics, "c: topics per worker")->capture_default_str()->check(CLI::Range(1u, 100000u));
  app.add_option("--mt-subscribers", cfg.mt_subscribers, "c: in-process subscribers per topic")->capture_default_str()->check(CLI::Range(1u, 10000u));
  app.add_option("--mt-payload", cfg.mt_payload, "c: payload bytes")->capture_default_str();
  app.add_flag("--control", cfg.control, "c: also run the same workers without the broker (harness scaling)");
  app.add_flag("--json", cfg.json, "print one JSON line per row on stdout (the table then goes to stderr)");
  CLI11_PARSE(app, argc, argv);
  if (cfg.parts.empty() || cfg.parts.find_first_not_of("abc") != std::string::npos) {
    fmt::print(stderr, "bench_inproc: --parts takes letters of a, b, c (got '{}')\n", cfg.parts);
    return 1;
  }

  std::FILE* table = cfg.json ? stderr : stdout;
  auto part = [&](char p) { return cfg.parts.find(p) != std::string::npos; };
  fmt::print(table, "bench_inproc: mqttbroker {}.{}.{}, {} CPUs, load average {}; medians of {} repetitions\n\n",
             MQTTBROKER_VERSION_MAJOR, MQTTBROKER_VERSION_MINOR, MQTTBROKER_VERSION_PATCH, std::thread::hardware_concurrency(),
             load_average(), cfg.reps);
  std::fflush(table);

  std::vector<row> rows;
  auto print_row = [&](const row& r) {
    const double pub = median(r.published), del = median(r.delivered), cpu = median(r.cpu);
    const auto [lo, hi] = std::minmax_element(r.delivered.begin(), r.delivered.end());
    std::string cpu_s = fmt::format("{:.0f}", cpu);
    if (r.broker_thread_cpu >= 0) cpu_s += fmt::format(" ({:.0f})", r.broker_thread_cpu);
    fmt::print(table, "| {} | {} | {} | {} | {} | {} | {} | {} | {}–{} | {} |\n", r.part, r.broker, r.threads,
               r.subscribers, r.payload, grouped(pub), grouped(del), cpu_s, r.delivered.empty() ? "–" : grouped(*lo),
               r.delivered.empty() ? "–" : grouped(*hi), r.check);
    std::fflush(table);
    if (cfg.json) {
      json_line j;
      j.str("part", r.part).str("broker", r.broker).integer("threads", r.threads).integer("subscribers", r.subscribers)
          .integer("payload", r.payload).num("published_per_s", pub).num("delivered_per_s", del).num("cpu_pct", cpu);
      if (r.broker_thread_cpu >= 0) j.num("broker_thread_cpu_pct", r.broker_thread_cpu);
      j.integer("reps", r.delivered.size()).boolean("ok", r.ok).str("check", r.check);
      fmt::print("{}\n", j.done());
      std::fflush(stdout);
    }
  };
  fmt::print(table, "| part | broker | threads | subscribers | payload B | published msg/s | delivered msg/s | CPU % | delivered, min–max | check |\n");
  fmt::print(table, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n");

  bool ok = true;
  try {
    if (part('a')) {
      for (std::size_t p : cfg.payloads) {
        rows.push_back(run_local_fanout(cfg, p));
        print_row(rows.back());
      }
    }
    if (part('b')) {
      for (std::size_t p : cfg.payloads) {
        rows.push_back(run_socket_fanout(cfg, p));
        print_row(rows.back());
      }
    }
    std::vector<row> scaling;
    if (part('c')) {
      scaling = run_scaling(cfg);
      for (const row& r : scaling) {
        rows.push_back(r);
        print_row(r);
      }
    }
    for (const row& r : rows) ok = ok && r.ok;

    fmt::print(table, "\nCPU % is the whole process's share of one CPU in the measured window (b: the broker's "
                      "io_context thread in parentheses; the rest is the subscribers' reads).\n");
    // The rows by name and thread count: which ones exist depends on --threads and --control.
    auto find = [&scaling](std::string_view broker, unsigned threads) -> const row* {
      for (const row& r : scaling)
        if (r.broker == broker && r.threads == threads) return &r;
      return nullptr;
    };
    const row* none1 = find("broker<>", 1);
    const row* mt1 = find("broker_mt", 1);
    const row* mtn = cfg.threads > 1 ? find("broker_mt", cfg.threads) : nullptr;
    const row* c1 = find("control", 1);
    const row* cn = cfg.threads > 1 ? find("control", cfg.threads) : nullptr;
    auto ratio = [](const row* a, const row* b) {
      const double d = median(b->delivered);
      return d > 0 ? median(a->delivered) / d : 0.0;
    };
    if (none1 != nullptr && mt1 != nullptr) {
      json_line j;
      const double r_mt1 = ratio(mt1, none1);
      fmt::print(table, "\nmt(1 thread) / none(1 thread): {:.2f} (target >= 0.9: {})\n", r_mt1, r_mt1 >= 0.9 ? "met" : "NOT met");
      j.str("part", "c-ratio").num("mt1_over_none1", r_mt1);
      if (mtn != nullptr) {
        const double r_mtn = ratio(mtn, mt1);
        const double cpu_n = median(mtn->cpu);
        const unsigned usable = std::min(cfg.threads, std::thread::hardware_concurrency());
        fmt::print(table, "mt({} threads) / mt(1 thread): {:.2f} (target >= 1.6: {}); process CPU {:.0f}% against {:.0f}%\n",
                   cfg.threads, r_mtn, r_mtn >= 1.6 ? "met" : "NOT met", cpu_n, median(mt1->cpu));
        // Other work on the machine shows as CPU this run did not get; the ratio then says little.
        if (cpu_n < 90.0 * usable)
          fmt::print(table, "  note: the {}-thread runs got {:.0f}% of a CPU, not {}%: other load on the machine; the ratio is not meaningful\n",
                     cfg.threads, cpu_n, 100 * usable);
        j.integer("threads", cfg.threads).num("mtn_over_mt1", r_mtn);
      }
      if (c1 != nullptr && cn != nullptr) {
        const double r_c = ratio(cn, c1);
        fmt::print(table, "control (no broker): {} threads / 1 thread: {:.2f}\n", cfg.threads, r_c);
        j.num("control_n_over_1", r_c);
      }
      if (cfg.json) fmt::print("{}\n", j.done());
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_inproc: {}\n", e.what());
    return 1;
  }
  return ok ? 0 : 2;
}
