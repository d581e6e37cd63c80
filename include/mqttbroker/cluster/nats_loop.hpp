#ifndef MQTTBROKER_CLUSTER_NATS_LOOP_HPP
#define MQTTBROKER_CLUSTER_NATS_LOOP_HPP

// nats.c's connections driven by an Asio executor (its "external event loop": attach, read,
// write and detach callbacks, as its libuv and libevent adapters do), so that a connection's
// socket I/O runs on the broker's io_context and not on threads of nats.c's own.
//
// What nats.c still runs on threads of its own with an external loop: the delivery of
// subscription messages (a thread per subscription, or its shared delivery pool), its timers
// (ping, reconnect attempts), and the first connect and reconnects (blocking socket connects).
// So the callbacks below come from any thread; each posts to the connection's strand, where all
// of its state lives. Nothing here blocks, and no blocking nats.c call may be made on the
// executor's threads (natsConnection_Connect, _Flush, synchronous requests, JetStream's
// synchronous calls): a host makes them before running the executor or on a worker.

#include <mqttbroker/config.hpp>

#include <asio/dispatch.hpp>
#include <asio/post.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/strand.hpp>

#include <nats/nats.h>

#include <memory>
#include <mutex>
#include <system_error>
#include <utility>

MQTTBROKER_BEGIN_NAMESPACE
namespace cluster {

/// An external event loop for nats.c on an Asio executor. Install it in a connection's options
/// (install()) before connecting; it must outlive the connections made with those options.
class nats_event_loop {
 public:
  explicit nats_event_loop(asio::any_io_executor ex) : ex_(std::move(ex)) {}
  nats_event_loop(const nats_event_loop&) = delete;
  nats_event_loop& operator=(const nats_event_loop&) = delete;

  natsStatus install(natsOptions* opts) { return natsOptions_SetEventLoop(opts, this, &attach, &read, &write, &detach); }

 private:
  /// One connection's socket: watched for reading and writing while nats.c asks, on a strand.
  struct watcher : std::enable_shared_from_this<watcher> {
    asio::strand<asio::any_io_executor> strand;
    asio::posix::stream_descriptor socket;
    natsConnection* nc;
    std::shared_ptr<watcher> self;  // kept from attach to detach
    bool reading = false, writing = false;
    bool read_waiting = false, write_waiting = false;
    bool closed = false;
    // Which socket a wait was for: after a reconnect the old socket's waits finish (cancelled)
    // after the new socket's are due, and must leave the new one's state alone.
    unsigned generation = 0;
    // nats.c closes the socket on the thread that called natsConnection_Close, right after it
    // stopped reads there; a wait armed meanwhile on the strand would register the descriptor
    // with epoll as it closes (ThreadSanitizer). Arming and that stop take this lock, so the
    // close comes after an arm or no arm comes.
    std::mutex arm_mutex;
    bool closing = false;  // arm_mutex: reads were stopped from another thread, the socket goes

    watcher(const asio::any_io_executor& ex, natsConnection* c)
        : strand(asio::make_strand(ex)), socket(strand), nc(c) {}

    void watch(natsSock fd) {
      stop_watching();  // the old socket, if any: nats.c owns and closes its sockets
      {
        std::lock_guard<std::mutex> lk(arm_mutex);
        closing = false;  // a new socket
      }
      std::error_code ignored;
      socket.assign(fd, ignored);
      reading = true;  // attached means read: nats.c asks for reads only after it stopped them
      wait(true);
      if (writing) wait(false);
    }
    /// Waits for the socket to be readable (`read`) or writable, then has nats.c read or
    /// write, for as long as nats.c asks.
    void wait(bool read) {
      bool& waiting = read ? read_waiting : write_waiting;
      if (waiting || closed || !socket.is_open()) return;
      std::lock_guard<std::mutex> lk(arm_mutex);
      if (closing) return;
      waiting = true;
      const auto what = read ? asio::posix::stream_descriptor::wait_read : asio::posix::stream_descriptor::wait_write;
      socket.async_wait(what, [me = shared_from_this(), read, g = generation](std::error_code ec) {
        if (g != me->generation) return;  // for a socket nats.c has left since
        (read ? me->read_waiting : me->write_waiting) = false;
        if (ec || me->closed || !(read ? me->reading : me->writing)) return;
        if (read)
          natsConnection_ProcessReadEvent(me->nc);
        else
          natsConnection_ProcessWriteEvent(me->nc);
        me->wait(read);
      });
    }
    /// Lets go of the descriptor (never closing it: nats.c does) and of the waits on it: when
    /// nats.c stopped reading from inside its event (a lost connection: it closes the socket next
    /// and reconnects on a new one), while the number is still this socket's; and before a new
    /// socket is watched.
    void stop_watching() {
      if (socket.is_open()) (void)socket.release();  // cancels the waits
      ++generation;
      read_waiting = write_waiting = false;
    }
    void close() {
      closed = true;
      if (socket.is_open()) {
        std::error_code ignored;
        socket.cancel(ignored);
        (void)socket.release();
      }
    }
  };

  static natsStatus attach(void** user, void* loop, natsConnection* nc, natsSock fd) {
    auto* self = static_cast<nats_event_loop*>(loop);
    watcher* w = static_cast<watcher*>(*user);
    if (w == nullptr) {  // a first connect; otherwise a reconnect, on a new socket
      auto made = std::make_shared<watcher>(self->ex_, nc);
      made->self = made;
      w = made.get();
      *user = w;
    }
    asio::post(w->strand, [me = w->shared_from_this(), fd] { me->watch(fd); });
    return NATS_OK;
  }
  // dispatch: called from inside natsConnection_Process*Event (on the strand) they take effect
  // at once, before nats.c closes the socket and before the handler that called it waits again.
  // Called from another thread (natsConnection_Close), the socket may be closed by the time the
  // strand runs it: then only the flags change, and detach lets the descriptor go.
  static natsStatus read(void* user, bool add) {
    auto* w = static_cast<watcher*>(user);
    const bool socket_still_open = w->strand.running_in_this_thread();
    if (!add && !socket_still_open) {
      std::lock_guard<std::mutex> lk(w->arm_mutex);
      w->closing = true;  // before nats.c closes the socket, which it does when this returns
    }
    asio::dispatch(w->strand, [me = w->shared_from_this(), add, socket_still_open] {
      me->reading = add;
      if (add)
        me->wait(true);
      else if (socket_still_open)
        me->stop_watching();
    });
    return NATS_OK;
  }
  static natsStatus write(void* user, bool add) {
    auto* w = static_cast<watcher*>(user);
    asio::dispatch(w->strand, [me = w->shared_from_this(), add] {
      me->writing = add;
      if (add) me->wait(false);
    });
    return NATS_OK;
  }
  static natsStatus detach(void* user) {
    auto* w = static_cast<watcher*>(user);
    asio::post(w->strand, [me = std::move(w->self)] { me->close(); });
    return NATS_OK;
  }

  asio::any_io_executor ex_;
};

}  // namespace cluster
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CLUSTER_NATS_LOOP_HPP
