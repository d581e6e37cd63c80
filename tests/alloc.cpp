// The QoS 0 message path makes no heap allocation per message in steady state. This program
// replaces the global allocation functions with counting ones and counts what the broker's
// io_context thread allocates while it routes thousands of messages over loopback TCP. Only that
// thread counts, and only while armed: the clients, Catch and the set-up allocate freely.
//
// Two layers are counted:
//   - operator new/delete (every variant), replaced here and forwarded to the C heap;
//   - on glibc without a sanitizer, the malloc family too (malloc, aligned_alloc, ...), because
//     Asio takes its handler memory from std::aligned_alloc, which operator new never sees.
// Sanitizers own malloc, so under them only operator new is counted (said at run time).
//
// When something allocates, its distinct call stacks are printed with a count each. For file:line,
// feed the +0x offsets to addr2line, or run the case under gdb with a breakpoint on alloc_test_hit:
//   gdb -batch -ex 'break alloc_test_hit' -ex run -ex bt --args build/.../mqttbroker_alloc_tests '<case>'
#include <mqttbroker/broker.hpp>
#include <mqttbroker/transport/memory.hpp>

#include "blocking_client.hpp"
#include "catch.hpp"

#include <asio.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#if defined(__GLIBC__)
#include <execinfo.h>
#include <malloc.h>
#endif

// Which sanitizer, if any, owns the heap.
#if MQTTBROKER_HAS_ASAN
#define ALLOC_TEST_SANITIZER "AddressSanitizer"
#elif defined(__SANITIZE_THREAD__)
#define ALLOC_TEST_SANITIZER "ThreadSanitizer"
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ALLOC_TEST_SANITIZER "ThreadSanitizer"
#elif __has_feature(memory_sanitizer)
#define ALLOC_TEST_SANITIZER "MemorySanitizer"
#endif
#endif

#if defined(__GLIBC__) && !defined(ALLOC_TEST_SANITIZER)
#define ALLOC_TEST_COUNT_MALLOC 1
#else
#define ALLOC_TEST_COUNT_MALLOC 0
// Why, for the checks that are skipped (they would pass on a count that cannot move).
#if defined(ALLOC_TEST_SANITIZER)
#define ALLOC_TEST_NO_MALLOC_COUNT ALLOC_TEST_SANITIZER " owns malloc, so the malloc family is not counted"
#else
#define ALLOC_TEST_NO_MALLOC_COUNT "the malloc family is only counted on glibc"
#endif
#endif

// ---- counting

namespace {

std::atomic<bool> armed{false};
std::atomic<std::uint64_t> new_calls{0};     // operator new on the io thread while armed
std::atomic<std::uint64_t> malloc_calls{0};  // malloc family called directly (not via operator new)
// Heap bytes the io thread allocated less those it freed while armed, by malloc_usable_size (glibc).
std::atomic<std::int64_t> live_bytes{0};
// Constant-initialised thread_locals of the executable: reading them never allocates.
thread_local bool counted_thread = false;  // set on the broker's io_context thread
thread_local bool in_hook = false;         // a backtrace() under way must not count itself

// The distinct call stacks of counted allocations, with how often each was seen. Written only by
// the io thread while armed, read after it is disarmed.
constexpr int max_traces = 8;
constexpr int max_frames = 40;
struct trace {
  void* frames[max_frames];
  int depth;
  std::uint64_t hits;
};
trace traces[max_traces];
int traces_taken = 0;
std::uint64_t untraced = 0;  // hits on stacks beyond max_traces

}  // namespace

/// Called for every counted allocation: a breakpoint target (see the top of the file).
volatile std::size_t last_counted_size = 0;
extern "C" [[gnu::noinline]] void alloc_test_hit(std::size_t size) { last_counted_size = size; }

namespace {

void note(std::atomic<std::uint64_t>& counter, std::size_t size) noexcept {
  if (!counted_thread || in_hook || !armed.load(std::memory_order_relaxed)) return;
  counter.fetch_add(1, std::memory_order_relaxed);
  in_hook = true;
#if defined(__GLIBC__)
  trace t;
  t.depth = backtrace(t.frames, max_frames);
  t.hits = 1;
  bool known = false;
  for (int i = 0; i < traces_taken && !known; ++i) {
    known = traces[i].depth == t.depth && std::equal(t.frames, t.frames + t.depth, traces[i].frames);
    if (known) ++traces[i].hits;
  }
  if (!known && traces_taken < max_traces)
    traces[traces_taken++] = t;
  else if (!known)
    ++untraced;
#endif
  alloc_test_hit(size);
  in_hook = false;
}

/// Counts a block the io thread got (+1) or gave back (-1) while armed in live_bytes.
void track(void* p, int sign) noexcept {
#if defined(__GLIBC__)
  if (p == nullptr || !counted_thread || in_hook || !armed.load(std::memory_order_relaxed)) return;
  live_bytes.fetch_add(sign * static_cast<std::int64_t>(malloc_usable_size(p)), std::memory_order_relaxed);
#else
  (void)p;
  (void)sign;
#endif
}

void forget_traces() noexcept {
  traces_taken = 0;
  untraced = 0;
}

}  // namespace

#if ALLOC_TEST_COUNT_MALLOC
// glibc's own entry points: the replacements below count, then hand every call to them, so all
// memory still comes from and goes back to glibc's allocator.
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void* __libc_valloc(std::size_t);
void* __libc_pvalloc(std::size_t);
void __libc_free(void*);
}

namespace {
void* heap_alloc(std::size_t n) noexcept { return __libc_malloc(n); }
void* heap_aligned_alloc(std::size_t align, std::size_t n) noexcept { return __libc_memalign(align, n); }
void heap_free(void* p) noexcept {
  track(p, -1);
  __libc_free(p);
}
void* tracked(void* p) noexcept {
  track(p, +1);
  return p;
}
}  // namespace

extern "C" {
void* malloc(std::size_t n) noexcept {
  note(malloc_calls, n);
  return tracked(__libc_malloc(n));
}
void* calloc(std::size_t count, std::size_t n) noexcept {
  note(malloc_calls, count * n);
  return tracked(__libc_calloc(count, n));
}
void* realloc(void* p, std::size_t n) noexcept {
  note(malloc_calls, n);
  track(p, -1);
  return tracked(__libc_realloc(p, n));
}
void* aligned_alloc(std::size_t align, std::size_t n) noexcept {
  note(malloc_calls, n);
  return tracked(__libc_memalign(align, n));
}
void* memalign(std::size_t align, std::size_t n) noexcept {
  note(malloc_calls, n);
  return tracked(__libc_memalign(align, n));
}
int posix_memalign(void** out, std::size_t align, std::size_t n) noexcept {
  note(malloc_calls, n);
  if (align < sizeof(void*) || (align & (align - 1)) != 0) return EINVAL;
  void* p = __libc_memalign(align, n);
  if (p == nullptr) return ENOMEM;
  *out = tracked(p);
  return 0;
}
void* valloc(std::size_t n) noexcept {
  note(malloc_calls, n);
  return tracked(__libc_valloc(n));
}
void* pvalloc(std::size_t n) noexcept {
  note(malloc_calls, n);
  return tracked(__libc_pvalloc(n));
}
void free(void* p) noexcept { heap_free(p); }
}
#else
namespace {
void* heap_alloc(std::size_t n) noexcept { return std::malloc(n); }
void* heap_aligned_alloc(std::size_t align, std::size_t n) noexcept {
  return std::aligned_alloc(align, (n + align - 1) / align * align);  // a multiple of align (C11)
}
void heap_free(void* p) noexcept {
  track(p, -1);
  std::free(p);
}
}  // namespace
#endif

namespace {

void* counted_new(std::size_t n) {
  note(new_calls, n);
  if (void* p = heap_alloc(n == 0 ? 1 : n)) {
    track(p, +1);
    return p;
  }
  throw std::bad_alloc();
}
void* counted_new(std::size_t n, std::align_val_t a) {
  note(new_calls, n);
  const auto align = std::max(static_cast<std::size_t>(a), sizeof(void*));
  if (void* p = heap_aligned_alloc(align, n == 0 ? 1 : n)) {
    track(p, +1);
    return p;
  }
  throw std::bad_alloc();
}

}  // namespace

void* operator new(std::size_t n) { return counted_new(n); }
void* operator new[](std::size_t n) { return counted_new(n); }
void* operator new(std::size_t n, std::align_val_t a) { return counted_new(n, a); }
void* operator new[](std::size_t n, std::align_val_t a) { return counted_new(n, a); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_new(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_new(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return counted_new(n, a);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return counted_new(n, a);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { heap_free(p); }
void operator delete[](void* p) noexcept { heap_free(p); }
void operator delete(void* p, std::size_t) noexcept { heap_free(p); }
void operator delete[](void* p, std::size_t) noexcept { heap_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { heap_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { heap_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { heap_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { heap_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { heap_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { heap_free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { heap_free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { heap_free(p); }

// ---- the scenario

namespace {

namespace codec = mqttbroker::codec;
using test_support::blocking_client;
using clock_type = std::chrono::steady_clock;

constexpr std::size_t small_payload = 16;
constexpr std::size_t large_payload = 1024;
// Messages the publisher may be ahead of the slowest subscriber. It bounds the messages alive in
// the broker, which is what "steady state" means here: without it a subscriber that falls behind
// makes the broker queue (and a bounded cache spill) however good the message path is.
constexpr std::uint64_t window = 64;
constexpr std::uint64_t chunk = 16;  // messages per write of the publisher

struct subscription {
  std::string filter;
  std::uint32_t identifier = 0;  // 5.0 Subscription Identifier; 0 for none
};

struct scenario {
  codec::protocol_version version = codec::protocol_version::v3_1_1;
  std::vector<subscription> subscribers;
  bool user_properties = false;  // 5.0: every other message carries one
  std::uint64_t warm_up = 4000;
  std::uint64_t measured = 20000;
};

struct outcome {
  std::uint64_t new_calls = 0;
  std::uint64_t malloc_calls = 0;
  std::vector<std::uint64_t> received;
  std::vector<std::string> errors;
  std::uint64_t dropped = 0;
  std::size_t cached_bytes = 0;  // the io thread's message cache after the run
};

/// What the subscriber threads report to the publisher: messages received so far, per subscriber.
class progress {
 public:
  explicit progress(std::size_t subscribers) : received_(subscribers, 0) {}

  void update(std::size_t subscriber, std::uint64_t received, std::string error) {
    {
      std::lock_guard<std::mutex> lk(m_);
      received_[subscriber] = received;
      if (!error.empty()) errors_.push_back(std::move(error));
    }
    cv_.notify_all();
  }
  void fail(std::string error) {
    {
      std::lock_guard<std::mutex> lk(m_);
      errors_.push_back(std::move(error));
    }
    cv_.notify_all();
  }

  /// Waits until every subscriber has `n` messages; false on an error or at `deadline`.
  bool wait_all(std::uint64_t n, clock_type::time_point deadline) {
    std::unique_lock<std::mutex> lk(m_);
    return cv_.wait_until(lk, deadline, [&] { return !errors_.empty() || slowest() >= n; }) && errors_.empty();
  }

  std::vector<std::uint64_t> received() {
    std::lock_guard<std::mutex> lk(m_);
    return received_;
  }
  std::vector<std::string> errors() {
    std::lock_guard<std::mutex> lk(m_);
    return errors_;
  }

 private:
  std::uint64_t slowest() const { return *std::min_element(received_.begin(), received_.end()); }

  std::mutex m_;
  std::condition_variable cv_;
  std::vector<std::uint64_t> received_;
  std::vector<std::string> errors_;
};

std::size_t payload_size(std::uint64_t seq) { return seq % 2 == 0 ? small_payload : large_payload; }
char topic_digit(std::uint64_t seq) { return static_cast<char>('0' + seq % 8); }
constexpr std::string_view user_key = "trace-context";
constexpr std::string_view user_value = "00-0123456789abcdef-01";  // longer than any small-string buffer

/// Reads PUBLISH packets until `total` arrived, checking that they come in publishing order with
/// the right topic, size and sequence number: a drop or a duplicate fails the run.
void read_publishes(asio::ip::tcp::socket& s, const scenario& sc, std::size_t index, std::uint64_t total,
                    progress& pr) {
  codec::decoder d(codec::decoder_options{codec::role::client, codec::max_packet_size, sc.version});
  std::vector<std::uint8_t> buf(64 * 1024);
  const std::uint32_t want_id = sc.subscribers[index].identifier;
  std::uint64_t next = 0;
  std::string error;
  while (next < total && error.empty()) {
    std::error_code ec;
    const std::size_t n = s.read_some(asio::buffer(buf), ec);
    if (ec) {
      error = "subscriber " + std::to_string(index) + ": read: " + ec.message();
      break;
    }
    const auto res = d.feed(buf.data(), n, [&](codec::packet& p) {
      const auto* pub = std::get_if<codec::publish>(&p);
      if (pub == nullptr) {
        error = "subscriber " + std::to_string(index) + ": a packet other than PUBLISH";
        return false;
      }
      std::uint64_t seq = ~std::uint64_t{0};
      if (pub->payload.size() >= sizeof seq) std::memcpy(&seq, pub->payload.data(), sizeof seq);
      const std::string topic = std::string("t/") + topic_digit(next);
      bool ok = seq == next && pub->topic == topic && pub->payload.size() == payload_size(next) &&
                pub->qos_level == codec::qos::at_most_once;
      if (ok && sc.version == codec::protocol_version::v5) {
        const bool has_user = static_cast<bool>(pub->properties.find(codec::property_id::user_property));
        ok = has_user == (sc.user_properties && next % 2 == 1);
        auto id = pub->properties.find(codec::property_id::subscription_identifier);
        ok = ok && (want_id == 0 ? !id : (id && id->integer == want_id));
      }
      if (!ok) {
        error = "subscriber " + std::to_string(index) + ": message " + std::to_string(next) +
                " wrong or out of order (got sequence " + std::to_string(seq) + ", topic " + std::string(pub->topic) +
                ", " + std::to_string(pub->payload.size()) + " bytes)";
        return false;
      }
      ++next;
      return true;
    });
    if (res.ec && error.empty()) error = "subscriber " + std::to_string(index) + ": decode: " + res.ec.message();
    pr.update(index, next, error);
  }
}

/// Publishes messages [from, to) in writes of `per_write`, never more than `window` ahead of the
/// slowest subscriber. False on a subscriber error or at `deadline`.
bool publish_range(blocking_client& pub, const scenario& sc, std::uint64_t from, std::uint64_t to,
                   std::uint64_t per_write, progress& pr, clock_type::time_point deadline) {
  std::string out;
  std::string payload(large_payload, 'x');
  codec::properties_builder props;
  props.add_user_property(user_key, user_value);
  for (std::uint64_t seq = from; seq < to;) {
    const std::uint64_t end = std::min(to, seq + per_write);
    if (end > window && !pr.wait_all(end - window, deadline)) return false;
    out.clear();
    for (; seq < end; ++seq) {
      std::memcpy(&payload[0], &seq, sizeof seq);
      const std::string topic = std::string("t/") + topic_digit(seq);
      codec::publish p;
      p.topic = topic;
      p.payload = std::string_view(payload).substr(0, payload_size(seq));
      p.qos_level = codec::qos::at_most_once;
      if (sc.user_properties && seq % 2 == 1) p.properties = props.view();
      if (codec::encode(p, sc.version, out)) return false;
    }
    std::error_code ec;
    asio::write(pub.socket(), asio::buffer(out), ec);
    if (ec) return false;
  }
  return true;
}

/// broker<> on its own io_context thread, the only thread that counts; stopped gracefully on
/// every way out of a scenario, a throwing one included.
class broker_host {
 public:
  explicit broker_host(mqttbroker::broker_options o = options())
      : work_(asio::make_work_guard(io_)), broker_(io_, std::move(o)) {
    mqttbroker::broker<>::listen_options lo;
    lo.address = "127.0.0.1";
    lo.port = 0;
    broker_.listen(lo);
    broker_.start();
    thread_ = std::thread([this] {
      counted_thread = true;
      io_.run();
      counted_thread = false;
    });
  }
  broker_host(const broker_host&) = delete;
  broker_host& operator=(const broker_host&) = delete;
  ~broker_host() {
    std::atomic<bool> stopped{false};
    broker_.async_stop([&](std::error_code) { stopped = true; });
    for (int i = 0; i < 2000 && !stopped; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    // A broker that does not stop is a defect of its own; CHECK, since a destructor must not throw.
    CHECK(stopped);
    work_.reset();
    io_.stop();
    thread_.join();
  }

  std::uint16_t port() const { return broker_.local_port(); }

  /// Runs `f` on the io thread and waits for it: broker<> is single-threaded. An io thread that
  /// does not get to it within 10 s fails the test (whatever the caller wanted to read is unknown).
  template <class F>
  void on_io_thread(F f) {
    // Shared with the handler, which may still run after a timed-out caller has gone: it then
    // finds `abandoned` and leaves the caller's (dead) references alone.
    struct call {
      std::mutex m;
      std::condition_variable cv;
      bool done = false;
      bool abandoned = false;
    };
    auto state = std::make_shared<call>();
    asio::post(io_, [this, state, &f] {
      std::lock_guard<std::mutex> lk(state->m);
      if (state->abandoned) return;
      f(broker_);
      state->done = true;
      state->cv.notify_all();
    });
    std::unique_lock<std::mutex> lk(state->m);
    if (!state->cv.wait_for(lk, std::chrono::seconds(10), [&] { return state->done; })) {
      state->abandoned = true;
      FAIL("the broker's io thread did not run a posted call within 10 s");
    }
  }

 private:
  static mqttbroker::broker_options options() {
    mqttbroker::broker_options o;
    // The periodic $SYS report formats strings by design; it is not the message path.
    o.sys_interval = std::chrono::seconds(0);
    return o;
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  mqttbroker::broker<> broker_;
  std::thread thread_;
};

outcome run(const scenario& sc) {
  broker_host host;
  const std::size_t n_subs = sc.subscribers.size();
  std::vector<std::unique_ptr<blocking_client>> subs;
  for (std::size_t i = 0; i < n_subs; ++i) {
    subs.push_back(std::make_unique<blocking_client>(host.port(), sc.version));
    if (subs.back()->connect("alloc-sub-" + std::to_string(i)) != 0) throw std::runtime_error("CONNECT refused");
    codec::subscribe s;
    s.packet_id = 1;
    s.entries.push_back({sc.subscribers[i].filter, {codec::qos::at_most_once}});
    codec::properties_builder props;
    if (sc.subscribers[i].identifier != 0) {
      props.add(codec::property_id::subscription_identifier, sc.subscribers[i].identifier);
      s.properties = props.view();
    }
    subs.back()->send(s);
    const auto ack = subs.back()->expect<codec::suback>();
    if (ack.reasons.size() != 1 || static_cast<std::uint8_t>(ack.reasons[0]) != 0)
      throw std::runtime_error("SUBSCRIBE refused");
  }
  blocking_client publisher(host.port(), sc.version);
  if (publisher.connect("alloc-pub") != 0) throw std::runtime_error("CONNECT refused");

  const std::uint64_t total = sc.warm_up + sc.measured;
  progress pr(n_subs);
  std::vector<std::thread> readers;
  for (std::size_t i = 0; i < n_subs; ++i)
    readers.emplace_back([&, i] { read_publishes(subs[i]->socket(), sc, i, total, pr); });

  const auto deadline = clock_type::now() + std::chrono::seconds(120);
  bool ok = true;
  // Warm-up: the caches (messages, Asio handlers) and the batch buffers reach their working
  // size. Whole windows in one write at the end push the batches to their largest.
  ok = ok && publish_range(publisher, sc, 0, sc.warm_up - 4 * window, chunk, pr, deadline);
  ok = ok && publish_range(publisher, sc, sc.warm_up - 4 * window, sc.warm_up, window, pr, deadline);
  ok = ok && pr.wait_all(sc.warm_up, deadline);

  outcome out;
  if (ok) {
    forget_traces();
    armed = true;
    ok = publish_range(publisher, sc, sc.warm_up, total, chunk, pr, deadline) && pr.wait_all(total, deadline);
    armed = false;
  }
  out.new_calls = new_calls.exchange(0);
  out.malloc_calls = malloc_calls.exchange(0);
  if (!ok) pr.fail("timed out or failed before every subscriber had every message");

  // Readers blocked on a broken run are woken by shutting their sockets down.
  for (auto& s : subs) {
    std::error_code ignored;
    if (!ok) s->socket().shutdown(asio::socket_base::shutdown_both, ignored);
  }
  for (auto& t : readers) t.join();

  host.on_io_thread([&](mqttbroker::broker<>& b) {
    out.cached_bytes = mqttbroker::detail::block_pool::cached_bytes();
    out.dropped = b.stats().messages_dropped;
  });
  out.received = pr.received();
  out.errors = pr.errors();
  return out;
}

void report(const char* name, const char* test_name, const scenario& sc, const outcome& o) {
  std::printf("%s: %llu messages to %zu subscribers measured; io thread made %llu operator new and %llu malloc-family calls%s\n",
              name, static_cast<unsigned long long>(sc.measured), sc.subscribers.size(),
              static_cast<unsigned long long>(o.new_calls), static_cast<unsigned long long>(o.malloc_calls),
              ALLOC_TEST_COUNT_MALLOC ? "" : " (malloc family not counted here)");
  std::printf("%s: io thread's message cache holds %zu bytes\n", name, o.cached_bytes);
  if (o.new_calls + o.malloc_calls == 0) return;
  std::printf("%s: the message path allocated; the distinct call stacks follow on stderr. For file:line:\n"
              "  addr2line -f -C -i -e <this test> <the +0x offsets>, or\n"
              "  gdb -batch -ex 'break alloc_test_hit' -ex run -ex bt --args <this test> '%s'\n",
              name, test_name);
  std::fflush(stdout);
#if defined(__GLIBC__)
  for (int i = 0; i < traces_taken; ++i) {
    std::fprintf(stderr, "---- %s: call stack %d, %llu allocations\n", name, i + 1,
                 static_cast<unsigned long long>(traces[i].hits));
    backtrace_symbols_fd(traces[i].frames, traces[i].depth, 2);
  }
  if (untraced != 0)
    std::fprintf(stderr, "---- %s: %llu allocations on further stacks\n", name, static_cast<unsigned long long>(untraced));
#endif
}

/// The measured steady state allocated nothing. Where the malloc family is not counted, that half
/// of the check is skipped and says so instead of passing on a count of zero.
void require_no_allocation(const outcome& o) {
  REQUIRE(o.new_calls == 0);
#if ALLOC_TEST_COUNT_MALLOC
  REQUIRE(o.malloc_calls == 0);
#else
  WARN("SKIPPED: malloc_calls == 0 not checked: " ALLOC_TEST_NO_MALLOC_COUNT);
#endif
}

void check_delivery(const scenario& sc, const outcome& o) {
  for (const auto& e : o.errors) UNSCOPED_INFO(e);
  CHECK(o.errors.empty());
  CHECK(o.dropped == 0);
  // Every subscriber counted every message: the counting above measured real traffic.
  for (std::uint64_t r : o.received) CHECK(r == sc.warm_up + sc.measured);
}

/// Things the counting must not miss: backtrace() loads its unwinder on first use, which
/// allocates, so that happens before anything is armed.
void prime() {
#if defined(__GLIBC__)
  void* frames[4];
  backtrace(frames, 4);
#endif
#if defined(ALLOC_TEST_SANITIZER)
  static bool said = false;
  if (!std::exchange(said, true))
    std::printf("alloc tests under %s: only operator new is counted (the sanitizer owns malloc)\n",
                ALLOC_TEST_SANITIZER);
#endif
}

}  // namespace

void* volatile escape = nullptr;

TEST_CASE("alloc: the counting allocator sees the io thread's allocations, and only when armed", "[alloc]") {
  prime();
  std::uint64_t seen_new = 0, seen_malloc = 0, seen_other = 0;
  std::thread t([&] {
    counted_thread = true;
    armed = true;
    auto* p = new std::uint64_t(1);
    void* q = std::malloc(32);
    escape = p;  // keeps the new-expression from being optimised away
    escape = q;
    armed = false;
    seen_new = new_calls.exchange(0);
    seen_malloc = malloc_calls.exchange(0);
    delete p;
    std::free(q);
    counted_thread = false;
  });
  t.join();
  armed = true;
  std::vector<int> not_counted(100);  // this thread is not the io thread
  escape = not_counted.data();
  armed = false;
  seen_other = new_calls.exchange(0) + malloc_calls.exchange(0);
  forget_traces();
  CHECK(seen_new == 1);
#if ALLOC_TEST_COUNT_MALLOC
  CHECK(seen_malloc == 1);
#else
  (void)seen_malloc;
  WARN("SKIPPED: the malloc counter is not checked: " ALLOC_TEST_NO_MALLOC_COUNT);
#endif
  CHECK(seen_other == 0);
}

TEST_CASE("alloc: QoS 0 routing allocates nothing per message in steady state (3.1.1)", "[alloc]") {
  prime();
  scenario sc;
  sc.version = codec::protocol_version::v3_1_1;
  sc.subscribers = {{"t/#"}, {"t/+"}};
  const outcome o = run(sc);
  report("3.1.1", "alloc: QoS 0 routing allocates nothing per message in steady state (3.1.1)", sc, o);
  check_delivery(sc, o);
  require_no_allocation(o);
}

TEST_CASE("alloc: QoS 0 routing allocates nothing per message in steady state (5.0)", "[alloc]") {
  prime();
  scenario sc;
  sc.version = codec::protocol_version::v5;
  sc.subscribers = {{"t/#"}, {"t/+"}};
  const outcome o = run(sc);
  report("5.0", "alloc: QoS 0 routing allocates nothing per message in steady state (5.0)", sc, o);
  check_delivery(sc, o);
  require_no_allocation(o);
}

TEST_CASE("alloc: QoS 0 routing with 5.0 properties and Subscription Identifiers", "[alloc]") {
  prime();
  scenario sc;
  sc.version = codec::protocol_version::v5;
  sc.subscribers = {{"t/#", 7}, {"t/+"}};
  sc.user_properties = true;
  const outcome o = run(sc);
  report("5.0 properties", "alloc: QoS 0 routing with 5.0 properties and Subscription Identifiers", sc, o);
  check_delivery(sc, o);
  require_no_allocation(o);
}

TEST_CASE("alloc: QoS 0 through shared subscription groups allocates nothing per message", "[alloc][shared]") {
  prime();
  scenario sc;
  sc.version = codec::protocol_version::v5;
  // One member per group, so that every subscriber still sees every message in order; the choice
  // of the member, its options and its identifier take the same path as in a larger group.
  sc.subscribers = {{"$share/a/t/#", 7}, {"$share/b/t/+"}, {"t/#"}};
  sc.user_properties = true;
  const outcome o = run(sc);
  report("shared", "alloc: QoS 0 through shared subscription groups allocates nothing per message", sc, o);
  check_delivery(sc, o);
  require_no_allocation(o);
}

// An idle connection's memory is what a broker with many mostly silent clients (sensors, phones)
// pays per client: no read or write buffer, only the connection, its session, its registry entry
// and Asio's per-socket state and pending wait. bench/compare measures the RSS against Mosquitto
// (about 0.7 kB per connection there); this pins the heap budget so that a change that grows it
// shows up here, in bytes, rather than in the next benchmark run.
TEST_CASE("alloc: an idle connection holds under 700 bytes of heap, and no buffer", "[alloc][memory]") {
#if !defined(__GLIBC__) || !defined(__x86_64__)
  SKIP("the budget is for glibc on x86-64 (malloc_usable_size, 64-bit pointers)");
#else
  prime();
  // Both ends are in this process: 2 x 250 descriptors. The first 50 connections warm up what is
  // shared (the thread's caches of write batches and pool blocks); the other 200 are measured.
  constexpr int warm_up = 50;
  constexpr int clients = 200;
  broker_host host;
  asio::io_context io;
  std::vector<asio::ip::tcp::socket> sockets;
  sockets.reserve(warm_up + clients);
  for (int i = 0; i < warm_up + clients; ++i) {
    if (i == warm_up) {
      host.on_io_thread([](mqttbroker::broker<>&) {});  // the warm-up's writes have completed
      live_bytes = 0;
      armed = true;
    }
    sockets.emplace_back(io);
    auto& s = sockets.back();
    s.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), host.port()));
    const std::string id = "idle-" + std::to_string(i);  // short: std::string keeps it inline
    codec::connect c;
    c.client_id = id;
    c.keep_alive = 60;
    std::string out;
    REQUIRE_FALSE(codec::encode(c, codec::protocol_version::v3_1_1, out));
    asio::write(s, asio::buffer(out));
    std::uint8_t connack[4] = {};
    asio::read(s, asio::buffer(connack));
    REQUIRE(connack[0] == 0x20);
    REQUIRE(connack[3] == 0);  // accepted
  }
  std::size_t connections = 0;
  host.on_io_thread([&](mqttbroker::broker<>& b) { connections = b.stats().connections; });
  armed = false;
  const std::int64_t per_connection = live_bytes.exchange(0) / clients;
  std::printf("idle connections: %d held, %lld bytes of heap each (usable sizes)\n", clients,
              static_cast<long long>(per_connection));
  CHECK(connections == static_cast<std::size_t>(warm_up + clients));
  // The counting saw the connections: Asio's socket state and the connection alone exceed this.
  CHECK(per_connection > 300);
  CHECK(per_connection < 700);
  // What the transport's optional abilities add to a plain TCP connection: nothing. (The one
  // pointer to a source address's admission ticket is the broker's, made only for an address it
  // tracks: 216 bytes before it.)
  CHECK(sizeof(mqttbroker::server::connection<mqttbroker::transport::tcp, mqttbroker::broker<>::context>) == 224);
#endif
}

// The same for a transport without a readability wait (the in-memory stream, like TLS or
// WebSocket): the connection reads with async_read_some, so it also holds the block its pending
// read fills (server::min_read_chunk bytes) and that pending read, which waits in the stream's
// waker. It holds no Asio socket state. The pipe between the two ends is made by the client's
// connect, on the client's thread, and is not counted (nor is a socket's buffer in the kernel).
TEST_CASE("alloc: an idle connection without a readability wait holds one small read block", "[alloc][memory]") {
#if !defined(__GLIBC__) || !defined(__x86_64__)
  SKIP("the budget is for glibc on x86-64 (malloc_usable_size, 64-bit pointers)");
#else
  prime();
  struct memory_policies : mqttbroker::default_policies {
    using transport = mqttbroker::transport::memory;
  };
  using mqttbroker::transport::memory;
  constexpr int warm_up = 50;
  constexpr int clients = 200;
  asio::io_context broker_io;
  asio::io_context client_io;
  auto work = asio::make_work_guard(broker_io);
  mqttbroker::broker_options o;
  o.sys_interval = std::chrono::seconds(0);
  mqttbroker::broker<memory_policies> b(broker_io, o);
  b.listen(memory::listen_options("alloc-idle-memory"));
  b.start();
  std::thread io_thread([&] {
    counted_thread = true;
    broker_io.run();
    counted_thread = false;
  });
  auto on_io_thread = [&](auto f) {
    std::atomic<bool> done{false};
    asio::post(broker_io, [&] {
      f();
      done = true;
    });
    while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  std::vector<mqttbroker::transport::memory_stream> streams;
  streams.reserve(warm_up + clients);
  for (int i = 0; i < warm_up + clients; ++i) {
    if (i == warm_up) {
      on_io_thread([] {});  // the warm-up's writes have completed
      live_bytes = 0;
      armed = true;
    }
    streams.push_back(memory::connect(client_io.get_executor(), "alloc-idle-memory"));
    auto& s = streams.back();
    codec::connect c;
    const std::string id = "idle-" + std::to_string(i);  // the packet's view needs it alive
    c.client_id = id;
    c.keep_alive = 60;
    std::string out;
    REQUIRE_FALSE(codec::encode(c, codec::protocol_version::v3_1_1, out));
    std::uint8_t connack[4] = {};
    std::error_code write_ec, read_ec;
    asio::async_write(s, asio::buffer(out), [&](std::error_code ec, std::size_t) { write_ec = ec; });
    asio::async_read(s, asio::buffer(connack), [&](std::error_code ec, std::size_t) { read_ec = ec; });
    client_io.restart();
    client_io.run();  // until the CONNACK is in
    REQUIRE_FALSE(write_ec);
    REQUIRE_FALSE(read_ec);
    REQUIRE(connack[0] == 0x20);
    REQUIRE(connack[3] == 0);
  }
  std::size_t connections = 0;
  on_io_thread([&] { connections = b.stats().connections; });
  armed = false;
  const std::int64_t per_connection = live_bytes.exchange(0) / clients;
  std::printf("idle connections without a readability wait: %d held, %lld bytes of heap each (usable sizes)\n",
              clients, static_cast<long long>(per_connection));
  CHECK(connections == static_cast<std::size_t>(warm_up + clients));
  CHECK(per_connection > static_cast<std::int64_t>(mqttbroker::server::min_read_chunk));
  CHECK(per_connection < 950);  // 887 when written: 264 more than over TCP, the read block
  std::atomic<bool> stopped{false};
  b.async_stop([&](std::error_code) { stopped = true; });
  for (int i = 0; i < 2000 && !stopped; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  work.reset();
  broker_io.stop();
  io_thread.join();
#endif
}

namespace {

/// How one connection of the leak test behaves (the kinds of integration test_limits' rounds, plus
/// a well-behaved session, so that sessions and subscriptions come and go too).
enum class conduct {
  partial_connect,  // part of a CONNECT, then the client closes
  garbage,          // random bytes: closed as malformed, or by the client
  half_publish,     // CONNECT, then 4 KiB of a PUBLISH that announces 200 KiB
  silent,           // nothing at all
  subscriber,       // CONNECT, SUBSCRIBE, a QoS 1 PUBLISH to itself, PUBACK, gone without DISCONNECT
  timed_out,        // part of a CONNECT, closed by the broker's connect timeout
};
constexpr std::size_t conducts = 6;

[[maybe_unused]] std::string connect_bytes(const std::string& id, codec::protocol_version v) {
  codec::connect c;
  c.version = v;
  c.client_id = id;
  c.keep_alive = 0;
  std::string out;
  if (codec::encode(c, v, out)) throw std::runtime_error("encode CONNECT");
  return out;
}

/// Reads exactly `n` bytes within `timeout`; false when the peer closed or the time ran out.
[[maybe_unused]] bool read_exactly(asio::io_context& io, asio::ip::tcp::socket& s, std::uint8_t* out, std::size_t n,
                  std::chrono::milliseconds timeout) {
  std::error_code result = asio::error::timed_out;
  asio::async_read(s, asio::buffer(out, n), [&](std::error_code ec, std::size_t) { result = ec; });
  io.restart();
  io.run_for(timeout);
  if (!io.stopped()) {
    s.cancel();
    io.restart();
    io.run();
  }
  return !result;
}

/// Waits until the peer closes `s` (discarding what it sends) within `timeout`.
[[maybe_unused]] bool wait_closed(asio::io_context& io, asio::ip::tcp::socket& s, std::chrono::milliseconds timeout) {
  const auto deadline = clock_type::now() + timeout;
  std::uint8_t sink[512];
  while (clock_type::now() < deadline) {
    bool done = false;
    std::error_code result;
    s.async_read_some(asio::buffer(sink), [&](std::error_code ec, std::size_t) {
      result = ec;
      done = true;
    });
    io.restart();
    io.run_for(deadline - clock_type::now());
    if (!done) {
      s.cancel();
      io.restart();
      io.run();
      return false;
    }
    if (result) return true;
  }
  return false;
}

}  // namespace

// integration/test_limits.py runs rounds of misbehaving connections against the server and allows
// its RSS some MiB of slack; here the same kinds of connection are counted on the broker's own heap
// (the counter of the idle-connection test), per connection, so that a leak of even one small block
// per connection fails.
TEST_CASE("alloc: connections that misbehave and go leave no heap behind", "[alloc][memory][leak]") {
#if !defined(__GLIBC__)
  MQTTBROKER_SKIP("the heap counter needs glibc's malloc_usable_size");
#else
  prime();
  constexpr std::size_t per_round = 120;  // 20 of each kind; both ends in this process: 240 descriptors
  constexpr int warm_up_rounds = 2;
  constexpr int measured_rounds = 3;
  mqttbroker::broker_options o;
  o.sys_interval = std::chrono::seconds(0);
  o.connect_timeout = std::chrono::milliseconds(200);
  broker_host host(o);
  const auto seed = static_cast<std::uint32_t>(std::random_device{}());
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  asio::io_context io;
  const auto endpoint = asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), host.port());

  auto stats = [&] {
    mqttbroker::broker_stats st;
    host.on_io_thread([&](mqttbroker::broker<>& b) { st = b.stats(); });
    return st;
  };
  auto round = [&](int r) {
    std::vector<asio::ip::tcp::socket> socks;
    socks.reserve(per_round);
    for (std::size_t i = 0; i < per_round; ++i) {
      const auto kind = static_cast<conduct>(i % conducts);
      const auto v = i % 2 == 0 ? codec::protocol_version::v3_1_1 : codec::protocol_version::v5;
      socks.emplace_back(io);
      auto& s = socks.back();
      s.connect(endpoint);
      const std::string id = "leak-" + std::to_string(i);  // the same ids every round
      std::string out;
      switch (kind) {
        case conduct::partial_connect:
        case conduct::timed_out: {
          const std::string full = connect_bytes(id, v);
          out = full.substr(0, std::uniform_int_distribution<std::size_t>(1, full.size() - 1)(rng));
          break;
        }
        case conduct::garbage: {
          out.resize(std::uniform_int_distribution<std::size_t>(1, 511)(rng));
          for (char& c : out) c = static_cast<char>(rng());
          break;
        }
        case conduct::half_publish:
        case conduct::subscriber: {
          asio::write(s, asio::buffer(connect_bytes(id, v)));
          std::uint8_t connack[3];
          REQUIRE(read_exactly(io, s, connack, sizeof connack, std::chrono::seconds(10)));
          REQUIRE(connack[0] == 0x20);
          std::vector<std::uint8_t> rest(connack[1] - 1);  // the CONNACK after its first 3 bytes
          REQUIRE(read_exactly(io, s, rest.data(), rest.size(), std::chrono::seconds(10)));
          REQUIRE(rest[0] == 0);  // accepted
          if (kind == conduct::half_publish) {
            // Remaining Length 200 KiB; the topic, packet id and 4 KiB of the payload follow.
            out = std::string("\x32\x80\xc0\x0c", 4) + std::string("\x00\x03" "big" "\x00\x01", 7) +
                  std::string(4096, 'x');
          } else {
            const std::string filter = "leak/" + std::to_string(i) + "/#";
            const std::string topic = "leak/" + std::to_string(i) + "/t";
            codec::subscribe sub;
            sub.packet_id = 1;
            sub.entries.push_back({filter, {codec::qos::at_least_once}});
            codec::publish pub;
            pub.topic = topic;
            pub.payload = "m";
            pub.qos_level = codec::qos::at_least_once;
            pub.packet_id = 2;
            REQUIRE_FALSE(codec::encode(sub, v, out));
            REQUIRE_FALSE(codec::encode(pub, v, out));
          }
          break;
        }
        case conduct::silent:
          break;
      }
      if (!out.empty()) {
        std::error_code ignored;  // garbage may be refused before it is all written
        asio::write(s, asio::buffer(out), ignored);
      }
    }
    // The subscribers get SUBACK, PUBACK and their own message, whatever the order of the last two,
    // and acknowledge it: then the broker holds each of them as a whole session.
    for (std::size_t i = 0; i < per_round; ++i) {
      if (static_cast<conduct>(i % conducts) != conduct::subscriber) continue;
      {
        const auto v = i % 2 == 0 ? codec::protocol_version::v3_1_1 : codec::protocol_version::v5;
        codec::decoder d(codec::decoder_options{codec::role::client, codec::max_packet_size, v});
        int suback = 0, puback = 0, delivered = 0;
        std::uint16_t delivered_id = 0;
        std::uint8_t buf[1024];
        const auto deadline = clock_type::now() + std::chrono::seconds(10);
        while (suback + puback + delivered < 3) {
          REQUIRE(clock_type::now() < deadline);
          std::error_code ec;
          std::size_t n = 0;
          socks[i].async_read_some(asio::buffer(buf), [&](std::error_code e, std::size_t k) {
            ec = e;
            n = k;
          });
          io.restart();
          io.run_for(deadline - clock_type::now());
          if (!io.stopped()) {
            socks[i].cancel();
            io.restart();
            io.run();
          }
          REQUIRE(n > 0);
          REQUIRE_FALSE(d.feed(buf, n, [&](codec::packet& p) {
                           if (std::holds_alternative<codec::suback>(p)) ++suback;
                           if (std::holds_alternative<codec::puback>(p)) ++puback;
                           if (auto* m = std::get_if<codec::publish>(&p)) {
                             ++delivered;
                             delivered_id = m->packet_id;
                           }
                         }).ec);
        }
        REQUIRE(suback == 1);
        REQUIRE(puback == 1);
        REQUIRE(delivered == 1);
        codec::puback ack;
        ack.packet_id = delivered_id;
        std::string out;
        REQUIRE_FALSE(codec::encode(ack, v, out));
        asio::write(socks[i], asio::buffer(out));
      }
    }
    for (std::size_t i = 0; i < per_round; ++i)
      if (static_cast<conduct>(i % conducts) == conduct::timed_out)
        REQUIRE(wait_closed(io, socks[i], std::chrono::seconds(10)));  // by the connect timeout
    for (auto& s : socks) {
      std::error_code ignored;
      s.close(ignored);
    }
    // Closed on the broker's side too: no connection and no session left (all were clean).
    const auto deadline = clock_type::now() + std::chrono::seconds(10);
    mqttbroker::broker_stats st = stats();
    while ((st.connections != 0 || st.sessions != 0) && clock_type::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      st = stats();
    }
    INFO("round " << r);
    REQUIRE(st.connections == 0);
    REQUIRE(st.sessions == 0);
    host.on_io_thread([](mqttbroker::broker<>&) {});  // handlers queued behind the last close
  };

  for (int r = 0; r < warm_up_rounds; ++r) round(r);
  const auto before = stats();
  live_bytes = 0;
  armed = true;
  for (int r = warm_up_rounds; r < warm_up_rounds + measured_rounds; ++r) round(r);
  armed = false;
  const auto after = stats();
  const std::int64_t leaked = live_bytes.exchange(0);
  constexpr int measured = measured_rounds * static_cast<int>(per_round);
  std::printf("misbehaving connections: %d measured, heap %+lld bytes in all (%+.2f bytes per connection); "
              "%llu closed by the connect timeout, %llu for protocol errors%s\n",
              measured, static_cast<long long>(leaked), static_cast<double>(leaked) / measured,
              static_cast<unsigned long long>(after.connect_timeouts - before.connect_timeouts),
              static_cast<unsigned long long>(after.protocol_errors - before.protocol_errors),
              ALLOC_TEST_COUNT_MALLOC ? "" : " (operator new only: the malloc family is not counted here)");
  // The counting saw the rounds: every connection was accepted, and the broker closed some itself.
  CHECK(after.connections_accepted - before.connections_accepted == static_cast<std::uint64_t>(measured));
  CHECK(after.connect_timeouts - before.connect_timeouts >= static_cast<std::uint64_t>(measured) / conducts);
  // Measured: -1 to -2 bytes per connection over 360 (a little that the warm-up left is freed).
  // One leaked block, 24 bytes at the least, in any one kind of connection fails this.
  CHECK(leaked <= measured);
#endif
}
