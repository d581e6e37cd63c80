#ifndef MQTTBROKER_TRANSPORT_MEMORY_HPP
#define MQTTBROKER_TRANSPORT_MEMORY_HPP

#include <mqttbroker/config.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_allocator.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace transport {

/// Per-end limits of an in-memory stream, so tests can force short reads and short writes.
struct memory_stream_limits {
  std::size_t max_read_size = 0;   // bytes one async_read_some delivers at most; 0: no limit
  std::size_t max_write_size = 0;  // bytes one async_write_some accepts at most; 0: no limit
};

class memory_stream;
class memory_acceptor;
struct memory;

namespace detail {

// An operation that cannot complete yet waits on its owner's waker: an Asio timer that never
// expires and is cancelled to wake the waiter. Asio then gives the wait what a socket gives its
// pending operation: it counts as work, runs on the handler's executor with its allocator, and is
// destroyed with its execution context if nothing wakes it (a handler that owns its stream would
// otherwise keep both alive for ever). The waiter re-checks its condition when woken.
using memory_waker = asio::steady_timer;

inline memory_waker make_waker(const asio::any_io_executor& ex) {
  return memory_waker(ex, memory_waker::time_point::max());
}

/// A completion with its arguments, for asio::post.
template <class Handler, class... Args>
struct memory_completion {
  Handler handler;
  std::tuple<Args...> args;
  void operator()() { std::apply(std::move(handler), std::move(args)); }
};

/// Completes `handler(args...)` later on its associated executor (`io_ex` by default), never
/// inside the initiating call.
template <class Handler, class... Args>
void memory_post(const asio::any_io_executor& io_ex, Handler handler, Args... args) {
  auto ex = asio::get_associated_executor(handler, io_ex);
  asio::post(ex, memory_completion<Handler, Args...>{std::move(handler), std::tuple<Args...>(std::move(args)...)});
}

/// A handler's own executor, if it has one (a strand it is bound to).
struct no_executor {};
template <class Handler>
inline constexpr bool has_own_executor_v =
    !std::is_same_v<asio::associated_executor_t<Handler, no_executor>, no_executor>;

/// A waiting operation's handler part: it runs where the user's handler asked to and with its
/// allocator; a handler without an executor of its own runs on the waker's, the stream's.
template <class Handler, bool = has_own_executor_v<Handler>>
struct memory_wait_base {
  Handler handler;
  using allocator_type = asio::associated_allocator_t<Handler>;
  allocator_type get_allocator() const noexcept { return asio::get_associated_allocator(handler); }
};
template <class Handler>
struct memory_wait_base<Handler, true> : memory_wait_base<Handler, false> {
  using executor_type = asio::associated_executor_t<Handler>;
  executor_type get_executor() const noexcept { return asio::get_associated_executor(this->handler); }
};

/// One direction's receiving end: what it has yet to read and what its owner did to it.
struct memory_end {
  std::vector<std::uint8_t> inbox;
  std::size_t head = 0;                // first unread byte of inbox
  std::optional<memory_waker> waker;   // on the end's executor, made when its stream is
  memory_stream_limits limits;
  bool reading = false;
  bool closed = false;

  std::size_t available() const noexcept { return inbox.size() - head; }

  void consume(std::size_t n) {
    head += n;
    if (head == inbox.size()) {
      inbox.clear();
      head = 0;
    } else if (head >= 4096 && head * 2 >= inbox.size()) {  // a slow reader: drop what it has read
      inbox.erase(inbox.begin(), inbox.begin() + static_cast<std::ptrdiff_t>(head));
      head = 0;
    }
  }

  void wake_reader() {
    if (reading) waker->cancel();
  }
};

/// Two connected ends. One mutex for both, so each end may run on its own thread.
struct memory_pipe {
  std::mutex mutex;
  memory_end ends[2];

  /// Closes end `side`: its read is aborted, the peer's reads EOF once it has read what is buffered.
  void close(int side) {
    std::lock_guard<std::mutex> lk(mutex);
    memory_end& me = ends[side];
    me.closed = true;
    me.inbox.clear();
    me.head = 0;
    me.wake_reader();
    ends[1 - side].wake_reader();
  }
};

/// A listener's shared state: connections not yet accepted, and the wait of a pending accept.
struct memory_listener {
  memory_listener(const asio::any_io_executor& ex, std::string n, memory_stream_limits l)
      : name(std::move(n)), server_limits(l), waker(make_waker(ex)) {}
  std::mutex mutex;
  std::string name;
  memory_stream_limits server_limits;
  std::deque<std::shared_ptr<memory_pipe>> backlog;
  memory_waker waker;
  bool accepting = false;
  bool open = true;
};

/// Listeners by name, so a test can connect to a broker's listener it cannot reach directly.
struct memory_registry {
  std::mutex mutex;
  std::unordered_map<std::string, std::weak_ptr<memory_listener>> by_name;

  static memory_registry& instance() {
    static memory_registry r;
    return r;
  }
};

}  // namespace detail

/// One end of an in-process byte stream, an Asio AsyncReadStream and AsyncWriteStream: bytes
/// written on one end are read on the other, in order. Closing an end aborts its pending read;
/// the peer reads EOF after what was buffered, and its writes fail with broken_pipe. Writes never
/// wait (the buffer is unbounded) and take every byte unless max_write_size limits them. Every
/// completion runs later on the handler's executor, never inside the initiating call. Like a
/// socket, a stream must not outlive its execution context.
class memory_stream {
 public:
  using executor_type = asio::any_io_executor;

  /// An unconnected stream (is_open() is false).
  explicit memory_stream(const executor_type& ex) : ex_(ex) {}

  memory_stream(memory_stream&& o) noexcept : ex_(std::move(o.ex_)), pipe_(std::move(o.pipe_)), side_(o.side_) {}
  memory_stream& operator=(memory_stream&& o) noexcept {
    if (this != &o) {
      std::error_code ignored;
      close(ignored);
      ex_ = std::move(o.ex_);
      pipe_ = std::move(o.pipe_);
      side_ = o.side_;
    }
    return *this;
  }
  memory_stream(const memory_stream&) = delete;
  memory_stream& operator=(const memory_stream&) = delete;
  ~memory_stream() {
    std::error_code ignored;
    close(ignored);
  }

  executor_type get_executor() const noexcept { return ex_; }

  /// True until close(); a moved-from stream is closed.
  bool is_open() const noexcept { return pipe_ != nullptr; }

  /// Reads some bytes: void(std::error_code, std::size_t). One read at a time.
  template <class MutableBufferSequence, class ReadToken>
  auto async_read_some(const MutableBufferSequence& buffers, ReadToken&& token) {
    return asio::async_initiate<ReadToken, void(std::error_code, std::size_t)>(
        [this](auto handler, const MutableBufferSequence& b) { start_read(std::move(handler), b); }, token, buffers);
  }

  /// Writes some bytes (all of them unless max_write_size says otherwise): void(std::error_code, std::size_t).
  template <class ConstBufferSequence, class WriteToken>
  auto async_write_some(const ConstBufferSequence& buffers, WriteToken&& token) {
    return asio::async_initiate<WriteToken, void(std::error_code, std::size_t)>(
        [this](auto handler, const ConstBufferSequence& b) { start_write(std::move(handler), b); }, token, buffers);
  }

  /// Closes this end: its pending read completes with operation_aborted, the peer reads EOF.
  void close(std::error_code& ec) {
    ec = {};
    if (std::shared_ptr<detail::memory_pipe> p = std::move(pipe_)) p->close(side_);
  }

 private:
  friend class memory_acceptor;
  friend struct memory;

  memory_stream(const executor_type& ex, std::shared_ptr<detail::memory_pipe> p, int side)
      : ex_(ex), pipe_(std::move(p)), side_(side) {
    std::lock_guard<std::mutex> lk(pipe_->mutex);
    pipe_->ends[side_].waker.emplace(detail::make_waker(ex_));
  }

  /// A read that found nothing to take: it waits for a write or a close, then takes what is there.
  template <class Buffers, class Handler>
  struct read_op : detail::memory_wait_base<Handler> {
    std::shared_ptr<detail::memory_pipe> pipe;
    int side;
    Buffers buffers;

    void operator()(std::error_code) {
      std::error_code ec;
      std::size_t n = 0;
      {
        std::lock_guard<std::mutex> lk(pipe->mutex);
        detail::memory_end& me = pipe->ends[side];
        if (!take(*pipe, side, buffers, ec, n)) {
          me.waker->async_wait(std::move(*this));  // woken with nothing to take: wait again
          return;
        }
        me.reading = false;
      }
      std::move(this->handler)(ec, n);
    }
  };

  /// Completes a read now if it can: bytes buffered, EOF, or its own end closed. Mutex held.
  template <class Buffers>
  static bool take(detail::memory_pipe& p, int side, const Buffers& buffers, std::error_code& ec, std::size_t& n) {
    detail::memory_end& me = p.ends[side];
    if (me.closed) {
      ec = asio::error::operation_aborted;
    } else if (me.available() != 0) {
      std::size_t max = me.available();
      if (me.limits.max_read_size != 0) max = std::min(max, me.limits.max_read_size);
      n = asio::buffer_copy(buffers, asio::buffer(me.inbox.data() + me.head, max));
      me.consume(n);
    } else if (p.ends[1 - side].closed) {
      ec = asio::error::eof;
    } else if (asio::buffer_size(buffers) != 0) {
      return false;
    }
    return true;
  }

  template <class Handler, class Buffers>
  void start_read(Handler handler, const Buffers& buffers) {
    std::error_code ec = asio::error::bad_descriptor;
    std::size_t n = 0;
    if (pipe_) {
      std::lock_guard<std::mutex> lk(pipe_->mutex);
      detail::memory_end& me = pipe_->ends[side_];
      if (me.reading) {
        ec = asio::error::already_started;
      } else if (ec = {}; !take(*pipe_, side_, buffers, ec, n)) {
        me.reading = true;
        me.waker->async_wait(read_op<Buffers, Handler>{{std::move(handler)}, pipe_, side_, buffers});
        return;
      }
    }
    detail::memory_post(ex_, std::move(handler), ec, n);
  }

  template <class Handler, class Buffers>
  void start_write(Handler handler, const Buffers& buffers) {
    std::error_code ec = asio::error::bad_descriptor;
    std::size_t n = 0;
    if (pipe_) {
      std::lock_guard<std::mutex> lk(pipe_->mutex);
      const detail::memory_end& me = pipe_->ends[side_];
      detail::memory_end& peer = pipe_->ends[1 - side_];
      if (peer.closed) {
        ec = asio::error::broken_pipe;
      } else {
        ec = {};
        n = asio::buffer_size(buffers);
        if (me.limits.max_write_size != 0) n = std::min(n, me.limits.max_write_size);
        const std::size_t old = peer.inbox.size();
        peer.inbox.resize(old + n);
        asio::buffer_copy(asio::buffer(peer.inbox.data() + old, n), buffers, n);
        if (n != 0) peer.wake_reader();
      }
    }
    detail::memory_post(ex_, std::move(handler), ec, n);
  }

  executor_type ex_;
  std::shared_ptr<detail::memory_pipe> pipe_;  // null once closed
  int side_ = 0;
};

/// A listener for memory_stream connections, found by name (memory::connect). Accepts in order
/// of connection; a connection made before async_accept waits in the backlog with what its client
/// wrote meanwhile.
class memory_acceptor {
 public:
  using executor_type = asio::any_io_executor;

  /// What local_endpoint() reports: the listener's name; port() is always 0.
  struct endpoint {
    std::string name;
    std::uint16_t port() const noexcept { return 0; }
  };

  /// A closed acceptor.
  explicit memory_acceptor(const executor_type& ex) : ex_(ex) {}
  memory_acceptor(memory_acceptor&& o) noexcept = default;
  memory_acceptor& operator=(memory_acceptor&& o) noexcept {
    if (this != &o) {
      std::error_code ignored;
      close(ignored);
      ex_ = std::move(o.ex_);
      state_ = std::move(o.state_);
    }
    return *this;
  }
  memory_acceptor(const memory_acceptor&) = delete;
  memory_acceptor& operator=(const memory_acceptor&) = delete;
  ~memory_acceptor() {
    std::error_code ignored;
    close(ignored);
  }

  executor_type get_executor() const noexcept { return ex_; }
  bool is_open() const noexcept { return state_ != nullptr; }

  endpoint local_endpoint(std::error_code& ec) const {
    ec = {};
    if (!state_) {
      ec = asio::error::bad_descriptor;
      return {};
    }
    return {state_->name};
  }

  /// Accepts the next connection; its stream runs on `stream_ex`: void(std::error_code, memory_stream).
  template <class AcceptToken>
  auto async_accept(const asio::any_io_executor& stream_ex, AcceptToken&& token) {
    return asio::async_initiate<AcceptToken, void(std::error_code, memory_stream)>(
        [this](auto handler, const asio::any_io_executor& sx) { start_accept(std::move(handler), sx); }, token,
        stream_ex);
  }
  /// Accepts the next connection onto this acceptor's executor.
  template <class AcceptToken>
  auto async_accept(AcceptToken&& token) {
    return async_accept(ex_, std::forward<AcceptToken>(token));
  }

  /// Stops listening: a pending accept completes with operation_aborted, connections not yet
  /// accepted are closed (their clients read EOF), and the name is free again.
  void close(std::error_code& ec) {
    ec = {};
    std::shared_ptr<detail::memory_listener> st = std::move(state_);
    if (!st) return;
    {
      auto& reg = detail::memory_registry::instance();
      std::lock_guard<std::mutex> lk(reg.mutex);
      auto it = reg.by_name.find(st->name);
      if (it != reg.by_name.end() && it->second.lock() == st) reg.by_name.erase(it);
    }
    std::deque<std::shared_ptr<detail::memory_pipe>> backlog;
    {
      std::lock_guard<std::mutex> lk(st->mutex);
      st->open = false;
      backlog.swap(st->backlog);
      if (st->accepting) st->waker.cancel();
    }
    for (auto& p : backlog) p->close(1);
  }

 private:
  friend struct memory;

  memory_acceptor(const executor_type& ex, std::shared_ptr<detail::memory_listener> st)
      : ex_(ex), state_(std::move(st)) {}

  /// An accept that found no connection: it waits for one, or for the close.
  template <class Handler>
  struct accept_op : detail::memory_wait_base<Handler> {
    std::shared_ptr<detail::memory_listener> state;
    asio::any_io_executor stream_ex;

    void operator()(std::error_code) {
      std::error_code ec;
      std::shared_ptr<detail::memory_pipe> p;
      {
        std::lock_guard<std::mutex> lk(state->mutex);
        if (!take(*state, ec, p)) {
          state->waker.async_wait(std::move(*this));
          return;
        }
        state->accepting = false;
      }
      std::move(this->handler)(ec, p ? memory_stream(stream_ex, std::move(p), 1) : memory_stream(stream_ex));
    }
  };

  /// Completes an accept now if it can: a connection waits, or the acceptor closed. Mutex held.
  static bool take(detail::memory_listener& st, std::error_code& ec, std::shared_ptr<detail::memory_pipe>& p) {
    if (!st.open) {
      ec = asio::error::operation_aborted;
      return true;
    }
    if (st.backlog.empty()) return false;
    p = std::move(st.backlog.front());
    st.backlog.pop_front();
    return true;
  }

  template <class Handler>
  void start_accept(Handler handler, const asio::any_io_executor& stream_ex) {
    std::error_code ec = asio::error::bad_descriptor;
    std::shared_ptr<detail::memory_pipe> p;
    if (state_) {
      std::lock_guard<std::mutex> lk(state_->mutex);
      if (state_->accepting) {
        ec = asio::error::already_started;
      } else if (ec = {}; !take(*state_, ec, p)) {
        state_->accepting = true;
        state_->waker.async_wait(accept_op<Handler>{{std::move(handler)}, state_, stream_ex});
        return;
      }
    }
    detail::memory_post(ex_, std::move(handler), ec, p ? memory_stream(stream_ex, std::move(p), 1) : memory_stream(stream_ex));
  }

  executor_type ex_;
  std::shared_ptr<detail::memory_listener> state_;  // null once closed
};

/// In-process transport for deterministic tests: `struct p : default_policies { using transport =
/// transport::memory; };`, then memory::connect(ex, name) gives a client stream to the listener.
/// It has no readability wait, so the broker reads it on its generic path (async_read_some).
struct memory {
  static constexpr const char* name = "memory";
  using stream_type = memory_stream;
  using acceptor_type = memory_acceptor;
  using stream_limits = memory_stream_limits;

  struct listen_options {
    listen_options() = default;
    listen_options(std::string n, memory_stream_limits server = {}) : name(std::move(n)), server_limits(server) {}

    std::string name = "memory";         // what connect() finds the listener by; unique among open ones
    memory_stream_limits server_limits;  // applied to the broker's end of each accepted stream
  };

  /// A listener registered under `o.name`; address_in_use while another open one has that name.
  static acceptor_type make_acceptor(const asio::any_io_executor& ex, const listen_options& o, std::error_code& ec) {
    ec = {};
    auto st = std::make_shared<detail::memory_listener>(ex, o.name, o.server_limits);
    auto& reg = detail::memory_registry::instance();
    std::lock_guard<std::mutex> lk(reg.mutex);
    auto& slot = reg.by_name[o.name];
    if (!slot.expired()) {
      ec = asio::error::address_in_use;
      return acceptor_type(ex);
    }
    slot = st;
    return acceptor_type(ex, std::move(st));
  }

  /// Nothing to tune: there is no Nagle here.
  static void prepare(stream_type&) noexcept {}

  /// A client stream on `ex` connected to the listener named `listener`; connection_refused when
  /// there is none.
  static stream_type connect(const asio::any_io_executor& ex, const std::string& listener, std::error_code& ec,
                             memory_stream_limits client = {}) {
    ec = asio::error::connection_refused;
    std::shared_ptr<detail::memory_listener> st;
    {
      auto& reg = detail::memory_registry::instance();
      std::lock_guard<std::mutex> lk(reg.mutex);
      auto it = reg.by_name.find(listener);
      if (it != reg.by_name.end()) st = it->second.lock();
    }
    if (!st) return stream_type(ex);
    auto p = std::make_shared<detail::memory_pipe>();
    p->ends[0].limits = client;
    stream_type s(ex, p, 0);
    std::lock_guard<std::mutex> lk(st->mutex);
    if (!st->open) return stream_type(ex);  // `s` closes: nobody reads its end
    ec = {};
    p->ends[1].limits = st->server_limits;
    st->backlog.push_back(std::move(p));
    if (st->accepting) st->waker.cancel();
    return s;
  }
  static stream_type connect(const asio::any_io_executor& ex, const std::string& listener = "memory",
                             memory_stream_limits client = {}) {
    std::error_code ec;
    stream_type s = connect(ex, listener, ec, client);
    if (ec) throw std::system_error(ec, "mqttbroker: memory connect to '" + listener + "'");
    return s;
  }

  /// Two connected streams without a listener, on `a` and `b`.
  static std::pair<stream_type, stream_type> make_pair(const asio::any_io_executor& a, const asio::any_io_executor& b,
                                                       memory_stream_limits la = {}, memory_stream_limits lb = {}) {
    auto p = std::make_shared<detail::memory_pipe>();
    p->ends[0].limits = la;
    p->ends[1].limits = lb;
    stream_type first(a, p, 0);
    stream_type second(b, std::move(p), 1);
    return {std::move(first), std::move(second)};
  }
};

}  // namespace transport
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_TRANSPORT_MEMORY_HPP
