#ifndef MQTTBROKER_TRANSPORT_MEMORY_HPP
#define MQTTBROKER_TRANSPORT_MEMORY_HPP

#include <mqttbroker/config.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/execution/context.hpp>
#include <asio/execution/outstanding_work.hpp>
#include <asio/execution_context.hpp>
#include <asio/post.hpp>
#include <asio/prefer.hpp>
#include <asio/query.hpp>
#include <asio/socket_base.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
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

namespace detail {

template <class Handler>
class memory_accept_op_impl;

/// A completion and its arguments, posted as one nullary function.
template <class Handler, class... Args>
struct memory_completion {
  Handler handler;
  std::tuple<Args...> args;
  void operator()() { std::apply(std::move(handler), std::move(args)); }
};

/// Invokes `handler(args...)` as if by asio::post to its associated executor (`io_ex` by default):
/// never inside the initiating function.
template <class Handler, class... Args>
void memory_post(const asio::any_io_executor& io_ex, Handler handler, Args... args) {
  auto ex = asio::get_associated_executor(handler, io_ex);
  asio::post(ex, memory_completion<Handler, Args...>{std::move(handler), std::tuple<Args...>(std::move(args)...)});
}

/// A pending async_read_some with its handler type erased (handlers may be move-only).
class memory_read_op {
 public:
  memory_read_op() = default;
  memory_read_op(const memory_read_op&) = delete;
  memory_read_op& operator=(const memory_read_op&) = delete;
  virtual ~memory_read_op() = default;
  /// Copies up to `n` bytes into the operation's buffers; returns how many it took.
  virtual std::size_t fill(const std::uint8_t* data, std::size_t n) = 0;
  /// Posts the completion and frees the operation.
  virtual void complete(std::error_code ec, std::size_t n) = 0;
};

template <class Buffers, class Handler>
class memory_read_op_impl final : public memory_read_op {
 public:
  memory_read_op_impl(const Buffers& b, Handler&& h, const asio::any_io_executor& io_ex)
      : buffers_(b),
        handler_(std::move(h)),
        io_ex_(io_ex),
        work_(asio::prefer(io_ex, asio::execution::outstanding_work.tracked)) {}

  std::size_t fill(const std::uint8_t* data, std::size_t n) override {
    return asio::buffer_copy(buffers_, asio::buffer(data, n));
  }

  void complete(std::error_code ec, std::size_t n) override {
    // Post before releasing the work, so the io_context never looks idle in between.
    memory_post(io_ex_, std::move(handler_), ec, n);
    delete this;
  }

 private:
  Buffers buffers_;
  Handler handler_;
  asio::any_io_executor io_ex_;
  asio::any_io_executor work_;  // outstanding work while the read is pending, as a socket's would be
};

/// One direction's receiver: the bytes it has yet to read and what its owner did to it.
struct memory_pipe_end {
  std::vector<std::uint8_t> inbox;
  std::size_t head = 0;  // first unread byte of inbox
  memory_read_op* reader = nullptr;
  memory_stream_limits limits;
  bool closed = false;        // close() on this end
  bool send_shut = false;     // shutdown(send): the peer reads EOF after what is buffered
  bool receive_shut = false;  // shutdown(receive): this end reads EOF

  std::size_t available() const noexcept { return inbox.size() - head; }

  std::size_t read_limit() const noexcept {
    const std::size_t a = available();
    return limits.max_read_size != 0 && limits.max_read_size < a ? limits.max_read_size : a;
  }

  void consumed(std::size_t n) {
    head += n;
    if (head == inbox.size()) {
      inbox.clear();
      head = 0;
    } else if (head >= 4096 && head * 2 >= inbox.size()) {
      inbox.erase(inbox.begin(), inbox.begin() + static_cast<std::ptrdiff_t>(head));
      head = 0;
    }
  }
};

/// Two connected ends, like a socket pair. The mutex guards both ends, so each end may be used
/// from its own thread (a multi-threaded broker).
struct memory_pipe {
  std::mutex mutex;
  memory_pipe_end ends[2];
};

/// What closing an end releases: its own pending read (aborted) and the peer's (EOF).
struct memory_close_result {
  memory_read_op* own = nullptr;
  memory_read_op* peer = nullptr;

  void complete() {
    if (own) own->complete(asio::error::operation_aborted, 0);
    if (peer) peer->complete(asio::error::eof, 0);
  }
};

/// Closes end `side` of `p`. The caller completes the result outside the lock.
inline memory_close_result memory_close_end(memory_pipe& p, int side) {
  memory_close_result r;
  std::lock_guard<std::mutex> lk(p.mutex);
  memory_pipe_end& me = p.ends[side];
  memory_pipe_end& peer = p.ends[1 - side];
  me.closed = true;
  me.inbox.clear();
  me.head = 0;
  r.own = std::exchange(me.reader, nullptr);
  // A pending read on the peer has nothing buffered (a write would have completed it): EOF now.
  if (peer.reader != nullptr && peer.available() == 0) r.peer = std::exchange(peer.reader, nullptr);
  return r;
}

/// A pending async_accept with its handler type erased.
class memory_accept_op {
 public:
  memory_accept_op() = default;
  memory_accept_op(const memory_accept_op&) = delete;
  memory_accept_op& operator=(const memory_accept_op&) = delete;
  virtual ~memory_accept_op() = default;
  /// Posts the completion with a stream on end 1 of `p` (or an unopened stream when `p` is null)
  /// and frees the operation.
  virtual void complete(std::error_code ec, std::shared_ptr<memory_pipe> p) = 0;
};

/// A listener's shared state: connections waiting for async_accept, and the pending accept.
struct memory_acceptor_state {
  std::mutex mutex;
  bool open = true;
  std::string name;
  memory_stream_limits server_limits;
  std::deque<std::shared_ptr<memory_pipe>> backlog;  // connected, not yet accepted
  memory_accept_op* pending = nullptr;
};

/// Listeners by name, so a test can connect to a broker's listener it cannot reach directly.
struct memory_registry {
  std::mutex mutex;
  std::unordered_map<std::string, std::weak_ptr<memory_acceptor_state>> by_name;

  static memory_registry& instance() {
    static memory_registry r;
    return r;
  }
};

/// Per execution context: when the context shuts down, pending operations are destroyed without
/// being invoked, as Asio does with a socket's. Their handlers often own the stream they wait on
/// (a connection's shared_ptr), a cycle only this breaks.
class memory_service final : public asio::execution_context::service {
 public:
  using key_type = memory_service;
  static inline asio::execution_context::id id;  // for builds with ASIO_NO_TYPEID

  explicit memory_service(asio::execution_context& ctx) : asio::execution_context::service(ctx) {}

  static memory_service& of(const asio::any_io_executor& ex) {
    return asio::use_service<memory_service>(asio::query(ex, asio::execution::context));
  }

  void add(const std::shared_ptr<memory_pipe>& p, int side) {
    std::lock_guard<std::mutex> lk(mutex_);
    prune();
    ends_.push_back({p, side});
  }
  void add(const std::shared_ptr<memory_acceptor_state>& a) {
    std::lock_guard<std::mutex> lk(mutex_);
    prune();
    acceptors_.push_back(a);
  }

 private:
  struct end_ref {
    std::weak_ptr<memory_pipe> pipe;
    int side;
  };

  /// Forgets dead entries once the lists have doubled since the last pruning. mutex_ held.
  void prune() {
    if (ends_.size() + acceptors_.size() < 2 * kept_ + 64) return;
    ends_.erase(std::remove_if(ends_.begin(), ends_.end(), [](const end_ref& e) { return e.pipe.expired(); }),
                ends_.end());
    acceptors_.erase(std::remove_if(acceptors_.begin(), acceptors_.end(),
                                    [](const std::weak_ptr<memory_acceptor_state>& a) { return a.expired(); }),
                     acceptors_.end());
    kept_ = ends_.size() + acceptors_.size();
  }

  void shutdown() override {
    std::vector<end_ref> ends;
    std::vector<std::weak_ptr<memory_acceptor_state>> acceptors;
    {
      std::lock_guard<std::mutex> lk(mutex_);
      ends.swap(ends_);
      acceptors.swap(acceptors_);
    }
    // Each operation is taken out under its owner's lock and destroyed outside it: destroying a
    // handler may destroy streams, whose close() takes the same locks.
    for (const end_ref& e : ends) {
      if (auto p = e.pipe.lock()) {
        memory_read_op* op;
        {
          std::lock_guard<std::mutex> lk(p->mutex);
          op = std::exchange(p->ends[e.side].reader, nullptr);
        }
        delete op;
      }
    }
    for (const auto& w : acceptors) {
      if (auto a = w.lock()) {
        memory_accept_op* op;
        {
          std::lock_guard<std::mutex> lk(a->mutex);
          op = std::exchange(a->pending, nullptr);
        }
        delete op;
      }
    }
  }

  std::mutex mutex_;
  std::vector<end_ref> ends_;
  std::vector<std::weak_ptr<memory_acceptor_state>> acceptors_;
  std::size_t kept_ = 0;
};

}  // namespace detail

/// One end of an in-process byte stream: an Asio AsyncReadStream and AsyncWriteStream that
/// behaves like a connected TCP socket. Bytes written on one end are read on the other in order;
/// closing an end makes the other read EOF once it has read what was buffered, and makes its
/// writes fail with broken_pipe; close() aborts this end's pending read. Writes never wait (the
/// buffer is unbounded) and complete with every byte unless max_write_size limits them. Every
/// completion is posted to the handler's associated executor, never run inside the initiating call.
class memory_stream {
 public:
  using executor_type = asio::any_io_executor;
  using lowest_layer_type = memory_stream;

  /// An unconnected stream (is_open() is false).
  explicit memory_stream(const executor_type& ex) : ex_(ex) {}

  memory_stream(memory_stream&& o) noexcept
      : ex_(std::move(o.ex_)), pipe_(std::move(o.pipe_)), side_(o.side_) {}
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
  lowest_layer_type& lowest_layer() noexcept { return *this; }

  /// True until close(); a moved-from stream is closed.
  bool is_open() const noexcept { return pipe_ != nullptr; }

  /// Bytes this end can read without waiting.
  std::size_t available() const {
    if (!pipe_) return 0;
    std::lock_guard<std::mutex> lk(pipe_->mutex);
    return pipe_->ends[side_].available();
  }

  /// Reads some bytes: void(std::error_code, std::size_t).
  template <class MutableBufferSequence, class ReadToken>
  auto async_read_some(const MutableBufferSequence& buffers, ReadToken&& token) {
    return asio::async_initiate<ReadToken, void(std::error_code, std::size_t)>(initiate_read{this}, token, buffers);
  }

  /// Waits until a read would not block (bytes buffered, EOF or an error): void(std::error_code).
  /// Only wait_read is supported; a stream's writes never wait.
  template <class WaitToken>
  auto async_wait(asio::socket_base::wait_type w, WaitToken&& token) {
    return asio::async_initiate<WaitToken, void(std::error_code)>(initiate_wait{this}, token, w);
  }

  /// Reads what is buffered without waiting: would_block when nothing is, eof after the peer's
  /// close or shutdown(send).
  template <class MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers, std::error_code& ec) {
    ec = {};
    if (!pipe_) {
      ec = make_error(asio::error::bad_descriptor);
      return 0;
    }
    std::lock_guard<std::mutex> lk(pipe_->mutex);
    detail::memory_pipe_end& me = pipe_->ends[side_];
    const detail::memory_pipe_end& peer = pipe_->ends[1 - side_];
    if (me.receive_shut) {
      ec = asio::error::eof;
      return 0;
    }
    if (me.available() != 0) {
      const std::size_t n = asio::buffer_copy(buffers, asio::buffer(me.inbox.data() + me.head, me.read_limit()));
      me.consumed(n);
      return n;
    }
    if (peer.closed || peer.send_shut)
      ec = asio::error::eof;
    else
      ec = make_error(asio::error::would_block);
    return 0;
  }

  /// Writes some bytes (all of them unless max_write_size says otherwise): void(std::error_code, std::size_t).
  template <class ConstBufferSequence, class WriteToken>
  auto async_write_some(const ConstBufferSequence& buffers, WriteToken&& token) {
    return asio::async_initiate<WriteToken, void(std::error_code, std::size_t)>(initiate_write{this}, token, buffers);
  }

  /// shutdown(send): the peer reads EOF after the buffered bytes and this end's writes fail;
  /// shutdown(receive): this end reads EOF.
  void shutdown(asio::socket_base::shutdown_type what, std::error_code& ec) {
    ec = {};
    if (!pipe_) {
      ec = asio::error::bad_descriptor;
      return;
    }
    detail::memory_read_op* own = nullptr;   // this end's read: EOF after shutdown(receive)
    detail::memory_read_op* peers = nullptr; // the peer's read: EOF after shutdown(send)
    {
      std::lock_guard<std::mutex> lk(pipe_->mutex);
      detail::memory_pipe_end& me = pipe_->ends[side_];
      detail::memory_pipe_end& peer = pipe_->ends[1 - side_];
      if (what != asio::socket_base::shutdown_send) {
        me.receive_shut = true;
        own = std::exchange(me.reader, nullptr);
      }
      if (what != asio::socket_base::shutdown_receive) {
        me.send_shut = true;
        if (peer.reader != nullptr && peer.available() == 0) peers = std::exchange(peer.reader, nullptr);
      }
    }
    if (own) own->complete(asio::error::eof, 0);
    if (peers) peers->complete(asio::error::eof, 0);
  }

  /// Closes this end: its pending read completes with operation_aborted, the peer reads EOF.
  void close(std::error_code& ec) {
    ec = {};
    if (!pipe_) return;
    std::shared_ptr<detail::memory_pipe> p = std::move(pipe_);  // is_open() is false from here
    detail::memory_close_result r = detail::memory_close_end(*p, side_);
    r.complete();
  }

 private:
  friend class memory_acceptor;
  friend struct memory;
  template <class Handler>
  friend class detail::memory_accept_op_impl;

  memory_stream(const executor_type& ex, std::shared_ptr<detail::memory_pipe> p, int side)
      : ex_(ex), pipe_(std::move(p)), side_(side) {
    detail::memory_service::of(ex_).add(pipe_, side_);
  }

  struct initiate_read {
    memory_stream* self;
    template <class Handler, class Buffers>
    void operator()(Handler&& handler, const Buffers& buffers) const {
      self->start_read(std::decay_t<Handler>(std::forward<Handler>(handler)), buffers);
    }
  };
  struct initiate_wait {
    memory_stream* self;
    template <class Handler>
    void operator()(Handler&& handler, asio::socket_base::wait_type w) const {
      self->start_wait(std::decay_t<Handler>(std::forward<Handler>(handler)), w);
    }
  };
  /// A wait is a read into no buffer: woken like a read, it takes no bytes.
  template <class Handler>
  struct wait_completion {
    Handler handler;
    void operator()(std::error_code ec, std::size_t) { handler(ec); }
  };
  struct initiate_write {
    memory_stream* self;
    template <class Handler, class Buffers>
    void operator()(Handler&& handler, const Buffers& buffers) const {
      self->start_write(std::decay_t<Handler>(std::forward<Handler>(handler)), buffers);
    }
  };

  template <class Handler, class Buffers>
  void start_read(Handler handler, const Buffers& buffers) {
    if (!pipe_) return detail::memory_post(ex_, std::move(handler), make_error(asio::error::bad_descriptor), std::size_t{0});
    if (asio::buffer_size(buffers) == 0) return detail::memory_post(ex_, std::move(handler), std::error_code(), std::size_t{0});
    auto op = std::make_unique<detail::memory_read_op_impl<Buffers, Handler>>(buffers, std::move(handler), ex_);
    std::error_code ec;
    std::size_t n = 0;
    {
      std::lock_guard<std::mutex> lk(pipe_->mutex);
      detail::memory_pipe_end& me = pipe_->ends[side_];
      const detail::memory_pipe_end& peer = pipe_->ends[1 - side_];
      if (me.reader != nullptr) {
        ec = asio::error::already_started;  // one read at a time, as on any stream
      } else if (me.receive_shut) {
        ec = asio::error::eof;
      } else if (me.available() != 0) {
        n = op->fill(me.inbox.data() + me.head, me.read_limit());
        me.consumed(n);
      } else if (peer.closed || peer.send_shut) {
        ec = asio::error::eof;
      } else {
        me.reader = op.release();  // completed by a write, a close or a shutdown
        return;
      }
    }
    op.release()->complete(ec, n);
  }

  template <class Handler>
  void start_wait(Handler handler, asio::socket_base::wait_type w) {
    using completion = wait_completion<Handler>;
    if (!pipe_) return detail::memory_post(ex_, std::move(handler), make_error(asio::error::bad_descriptor));
    if (w != asio::socket_base::wait_read)
      return detail::memory_post(ex_, std::move(handler), make_error(asio::error::operation_not_supported));
    auto op = std::make_unique<detail::memory_read_op_impl<asio::mutable_buffer, completion>>(
        asio::mutable_buffer(), completion{std::move(handler)}, ex_);
    std::error_code ec;
    {
      std::lock_guard<std::mutex> lk(pipe_->mutex);
      detail::memory_pipe_end& me = pipe_->ends[side_];
      const detail::memory_pipe_end& peer = pipe_->ends[1 - side_];
      if (me.reader != nullptr) {
        ec = asio::error::already_started;
      } else if (!(me.receive_shut || me.available() != 0 || peer.closed || peer.send_shut)) {
        me.reader = op.release();
        return;
      }
    }
    op.release()->complete(ec, 0);
  }

  template <class Handler, class Buffers>
  void start_write(Handler handler, const Buffers& buffers) {
    if (!pipe_) return detail::memory_post(ex_, std::move(handler), make_error(asio::error::bad_descriptor), std::size_t{0});
    const std::size_t total = asio::buffer_size(buffers);
    std::error_code ec;
    std::size_t n = 0;
    detail::memory_read_op* woken = nullptr;
    std::size_t woken_n = 0;
    if (total != 0) {
      std::lock_guard<std::mutex> lk(pipe_->mutex);
      const detail::memory_pipe_end& me = pipe_->ends[side_];
      detail::memory_pipe_end& peer = pipe_->ends[1 - side_];
      if (me.send_shut || peer.closed) {
        ec = asio::error::broken_pipe;
      } else {
        n = me.limits.max_write_size != 0 && me.limits.max_write_size < total ? me.limits.max_write_size : total;
        const std::size_t old = peer.inbox.size();
        peer.inbox.resize(old + n);
        asio::buffer_copy(asio::buffer(peer.inbox.data() + old, n), buffers, n);
        if (peer.reader != nullptr && !peer.receive_shut) {
          woken_n = peer.reader->fill(peer.inbox.data() + peer.head, peer.read_limit());
          peer.consumed(woken_n);
          woken = std::exchange(peer.reader, nullptr);
        }
      }
    }
    if (woken) woken->complete(std::error_code(), woken_n);
    detail::memory_post(ex_, std::move(handler), ec, n);
  }

  static std::error_code make_error(asio::error::basic_errors e) { return asio::error::make_error_code(e); }

  executor_type ex_;
  std::shared_ptr<detail::memory_pipe> pipe_;  // null once closed
  int side_ = 0;
};

namespace detail {

template <class Handler>
class memory_accept_op_impl final : public memory_accept_op {
 public:
  memory_accept_op_impl(Handler&& h, const asio::any_io_executor& stream_ex, const asio::any_io_executor& io_ex)
      : handler_(std::move(h)),
        stream_ex_(stream_ex),
        io_ex_(io_ex),
        work_(asio::prefer(io_ex, asio::execution::outstanding_work.tracked)) {}

  void complete(std::error_code ec, std::shared_ptr<memory_pipe> p) override {
    memory_stream s = p ? memory_stream(stream_ex_, std::move(p), 1) : memory_stream(stream_ex_);
    memory_post(io_ex_, std::move(handler_), ec, std::move(s));
    delete this;
  }

 private:
  Handler handler_;
  asio::any_io_executor stream_ex_;
  asio::any_io_executor io_ex_;
  asio::any_io_executor work_;
};

}  // namespace detail

/// A listener for memory_stream connections, found by name (memory::connect) or used directly
/// (connect()). Accepts in order of connection; a connection made before async_accept waits.
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

  memory_acceptor(memory_acceptor&& o) noexcept : ex_(std::move(o.ex_)), state_(std::move(o.state_)) {}
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
    return asio::async_initiate<AcceptToken, void(std::error_code, memory_stream)>(initiate_accept{this}, token,
                                                                                   stream_ex);
  }
  /// Accepts the next connection onto this acceptor's executor.
  template <class AcceptToken>
  auto async_accept(AcceptToken&& token) {
    return async_accept(ex_, std::forward<AcceptToken>(token));
  }

  /// Connects a client whose end runs on `ex`; the peer goes to the pending or next async_accept.
  /// connection_refused once the acceptor is closed.
  memory_stream connect(const asio::any_io_executor& ex, std::error_code& ec, memory_stream_limits client = {}) {
    return connect_to(state_, ex, ec, client);
  }
  memory_stream connect(const asio::any_io_executor& ex, memory_stream_limits client = {}) {
    std::error_code ec;
    memory_stream s = connect(ex, ec, client);
    if (ec) throw std::system_error(ec, "mqttbroker: memory connect");
    return s;
  }

  /// Stops listening: a pending accept completes with operation_aborted, connections not yet
  /// accepted are closed (their clients read EOF), the name is free again.
  void close(std::error_code& ec) {
    ec = {};
    if (!state_) return;
    std::shared_ptr<detail::memory_acceptor_state> st = std::move(state_);
    {
      auto& reg = detail::memory_registry::instance();
      std::lock_guard<std::mutex> lk(reg.mutex);
      auto it = reg.by_name.find(st->name);
      if (it != reg.by_name.end() && it->second.lock() == st) reg.by_name.erase(it);
    }
    detail::memory_accept_op* op;
    std::deque<std::shared_ptr<detail::memory_pipe>> backlog;
    {
      std::lock_guard<std::mutex> lk(st->mutex);
      st->open = false;
      op = std::exchange(st->pending, nullptr);
      backlog.swap(st->backlog);
    }
    if (op) op->complete(asio::error::operation_aborted, nullptr);
    for (auto& p : backlog) detail::memory_close_end(*p, 1).complete();
  }

 private:
  friend struct memory;

  memory_acceptor(const executor_type& ex, std::shared_ptr<detail::memory_acceptor_state> st)
      : ex_(ex), state_(std::move(st)) {
    detail::memory_service::of(ex_).add(state_);
  }

  struct initiate_accept {
    memory_acceptor* self;
    template <class Handler>
    void operator()(Handler&& handler, const asio::any_io_executor& stream_ex) const {
      self->start_accept(std::decay_t<Handler>(std::forward<Handler>(handler)), stream_ex);
    }
  };

  template <class Handler>
  void start_accept(Handler handler, const asio::any_io_executor& stream_ex) {
    if (!state_) {
      return detail::memory_post(ex_, std::move(handler), asio::error::make_error_code(asio::error::bad_descriptor),
                                 memory_stream(stream_ex));
    }
    auto op = std::make_unique<detail::memory_accept_op_impl<Handler>>(std::move(handler), stream_ex, ex_);
    std::error_code ec;
    std::shared_ptr<detail::memory_pipe> p;
    {
      std::lock_guard<std::mutex> lk(state_->mutex);
      if (state_->pending != nullptr) {
        ec = asio::error::already_started;
      } else if (!state_->backlog.empty()) {
        p = std::move(state_->backlog.front());
        state_->backlog.pop_front();
      } else {
        state_->pending = op.release();
        return;
      }
    }
    op.release()->complete(ec, std::move(p));
  }

  static memory_stream connect_to(const std::shared_ptr<detail::memory_acceptor_state>& st,
                                  const asio::any_io_executor& ex, std::error_code& ec, memory_stream_limits client) {
    ec = {};
    if (!st) {
      ec = asio::error::connection_refused;
      return memory_stream(ex);
    }
    auto p = std::make_shared<detail::memory_pipe>();
    p->ends[0].limits = client;
    detail::memory_accept_op* op = nullptr;
    {
      std::lock_guard<std::mutex> lk(st->mutex);
      if (!st->open) {
        ec = asio::error::connection_refused;
        return memory_stream(ex);
      }
      p->ends[1].limits = st->server_limits;
      op = std::exchange(st->pending, nullptr);
      if (op == nullptr) st->backlog.push_back(p);
    }
    memory_stream s(ex, p, 0);
    if (op) op->complete(std::error_code(), std::move(p));
    return s;
  }

  executor_type ex_;
  std::shared_ptr<detail::memory_acceptor_state> state_;  // null once closed
};

/// In-process transport for deterministic tests: `struct p : default_policies { using transport =
/// transport::memory; };`, then memory::connect(ex, name) gives a client stream to the listener.
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
    auto st = std::make_shared<detail::memory_acceptor_state>();
    st->name = o.name;
    st->server_limits = o.server_limits;
    {
      auto& reg = detail::memory_registry::instance();
      std::lock_guard<std::mutex> lk(reg.mutex);
      auto& slot = reg.by_name[o.name];
      if (!slot.expired()) {
        ec = asio::error::address_in_use;
        return acceptor_type(ex);
      }
      slot = st;
    }
    return acceptor_type(ex, std::move(st));
  }

  /// Nothing to tune: there is no Nagle here.
  static void prepare(stream_type&) noexcept {}

  /// A client stream on `ex` connected to the listener named `listener`; connection_refused when
  /// there is none.
  static stream_type connect(const asio::any_io_executor& ex, const std::string& listener, std::error_code& ec,
                             memory_stream_limits client = {}) {
    std::shared_ptr<detail::memory_acceptor_state> st;
    {
      auto& reg = detail::memory_registry::instance();
      std::lock_guard<std::mutex> lk(reg.mutex);
      auto it = reg.by_name.find(listener);
      if (it != reg.by_name.end()) st = it->second.lock();
    }
    return acceptor_type::connect_to(st, ex, ec, client);
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
