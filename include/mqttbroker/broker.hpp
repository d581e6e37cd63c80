#ifndef MQTTBROKER_BROKER_HPP
#define MQTTBROKER_BROKER_HPP

#include <mqttbroker/clock/system.hpp>
#include <mqttbroker/cluster/contract.hpp>
#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/detail/heap.hpp>
#include <mqttbroker/detail/ref_counted.hpp>
#include <mqttbroker/engine/protocol.hpp>
#include <mqttbroker/error.hpp>
#include <mqttbroker/hooks/hooks.hpp>
#include <mqttbroker/locking/none.hpp>
#include <mqttbroker/locking/shared.hpp>
#include <mqttbroker/locking/traits.hpp>
#include <mqttbroker/message.hpp>
#include <mqttbroker/options.hpp>
#include <mqttbroker/server/admission.hpp>
#include <mqttbroker/server/connection.hpp>
#include <mqttbroker/storage/contract.hpp>
#include <mqttbroker/storage/memory.hpp>
#include <mqttbroker/transport/tcp.hpp>
#include <mqttbroker/transport/traits.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/dispatch.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/strand.hpp>
#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE

namespace detail {
/// A policy bundle's clock: its `clock`, else the system clock (bundles written before there was
/// a clock policy).
template <class Policies, class = void>
struct clock_of {
  using type = ::mqttbroker::clock::system;
};
template <class Policies>
struct clock_of<Policies, std::void_t<typename Policies::clock>> {
  using type = typename Policies::clock;
};
}  // namespace detail

/// broker<> is TCP, memory storage, no locking (one io_context thread) and no hooks. Override one
/// by deriving: `struct my_policies : default_policies { using locking = locking::shared; };`
struct default_policies {
  using transport = transport::tcp;
  using storage = storage::memory;
  using locking = locking::none;
  using hooks = hooks::none;
  using clock = ::mqttbroker::clock::system;
};

/// The broker: the protocol engine (engine::protocol) bound to listeners, timers and the host's
/// executor. It carries out on Asio what the engine decides; the protocol itself lives there.
template <class Policies = default_policies>
class broker {
  // Each policy meets its contract, or the first error names what is missing.
  static_assert(transport::detail::check_transport<typename Policies::transport>());
  static_assert(storage::detail::check_storage<typename Policies::storage>());
  static_assert(locking::detail::check_locking<typename Policies::locking, asio::any_io_executor>());
  static_assert(hooks::detail::check_hooks<typename Policies::hooks>());

 public:
  using policies = Policies;
  using transport_type = typename Policies::transport;
  using locking_type = typename Policies::locking;
  using hooks_type = typename Policies::hooks;
  /// The clock policy (Policies::clock, else clock::system): deadlines and timers read it.
  using clock_type = typename detail::clock_of<Policies>::type;
  using time_point = typename clock_type::steady_time;
  using timer_type = typename clock_type::timer_type;
  using engine_type = engine::protocol<Policies>;
  using listen_options = typename transport_type::listen_options;
  using local_handler = engine::local_handler;
  using local_subscription_id = typename engine_type::local_subscription_id;

  broker(asio::io_context& io, broker_options opts = {}, hooks_type hooks = {}, clock_type clk = {})
      : broker(io.get_executor(), std::move(opts), std::move(hooks), std::move(clk), &io) {}
  /// On the host's executor. Over TCP it must be an io_context's executor or a strand of one
  /// (std::invalid_argument otherwise, and always when Asio is built without RTTI: construct
  /// from the io_context then).
  broker(asio::any_io_executor ex, broker_options opts = {}, hooks_type hooks = {}, clock_type clk = {})
      : broker(std::move(ex), std::move(opts), std::move(hooks), std::move(clk), nullptr) {}

 private:
  broker(asio::any_io_executor ex, broker_options opts, hooks_type hooks, clock_type clk, asio::io_context* io)
      : io_(io),
        ex_(std::move(ex)),
        control_ex_(locking_type::make_strand(ex_)),
        ctx_(std::move(opts), std::move(hooks), std::move(clk)),
        sweep_timer_(ctx_.clock.make_timer(control_ex_)),
        will_timer_(ctx_.clock.make_timer(control_ex_)) {
    (void)stream_executor_of<transport_type>(ex_);  // the default transport refuses a wrong executor now
    ctx_.engine_.on_will_scheduled([this](time_point due) {
      asio::post(control_ex_, [this, due] { arm_will_timer(due); });
    });
    if constexpr (engine_type::durable) {
      // A commit is durable (reported on the storage's own thread): its acknowledgements may go.
      ctx_.engine_.storage().on_commit([this](std::uint64_t ticket) {
        on_storage_thread([this, ticket] { ctx_.engine_.storage_committed(ticket); });
      });
      if constexpr (storage::detail::has_on_commit_failed<typename engine_type::storage_type>::value) {
        ctx_.engine_.storage().on_commit_failed([this](std::uint64_t first, std::uint64_t last, std::error_code ec) {
          on_storage_thread([this, first, last, ec] { ctx_.engine_.storage_commit_failed(first, last, ec); });
        });
      }
    }
  }

  /// What the cluster brought, waiting for the engine: queued by the cluster's threads, handed
  /// over in batches by one drain at a time on the broker's executor. One post per batch, not
  /// per message; one drain at a time keeps the order they came in [MQTT-4.6.0-6] on several
  /// threads too.
  struct cluster_inbox {
    enum class kind : unsigned char { route, group, retained, session };
    struct input {
      kind what;
      std::string group;  // kind::group; kind::session: the client identifier
      message_ptr m;
    };
    std::mutex mutex;
    std::vector<input> queued;    // mutex
    bool drain_posted = false;    // mutex
    std::vector<input> draining;  // the running drain's
  };

  /// From any thread.
  void to_engine(typename cluster_inbox::kind what, std::string_view group, message_ptr m) {
    cluster_inbox& box = *cluster_inbox_;
    {
      std::lock_guard<std::mutex> lk(box.mutex);
      box.queued.push_back({what, std::string(group), std::move(m)});
      if (box.drain_posted) return;
      box.drain_posted = true;
    }
    post_drain();
  }
  void post_drain() {
    asio::post(ex_, [this, alive = std::weak_ptr<void>(alive_)] {
      if (const auto held = alive.lock()) drain_cluster_inbox();
    });
  }
  /// Gives the engine what was queued when it began; posts itself again when more came since, so
  /// that a busy cluster does not keep other work on the executor waiting.
  void drain_cluster_inbox() {
    cluster_inbox& box = *cluster_inbox_;
    {
      std::lock_guard<std::mutex> lk(box.mutex);
      box.draining.swap(box.queued);
    }
    const time_point t = now();
    for (auto& in : box.draining) {
      switch (in.what) {
        case cluster_inbox::kind::route: ctx_.engine_.route_from_cluster(std::move(in.m), t); break;
        case cluster_inbox::kind::group: ctx_.engine_.deliver_to_group(in.group, std::move(in.m), t); break;
        case cluster_inbox::kind::retained: ctx_.engine_.retained_from_cluster(std::move(in.m), t); break;
        case cluster_inbox::kind::session:
          if constexpr (engine_type::session_feeds) {
            const message_ptr m = in.m;
            if (!ctx_.engine_.deliver_to_session(in.group, std::move(in.m), t)) ctx_.engine_.cluster().not_delivered(m);
          }
          break;
      }
    }
    box.draining.clear();
    {
      std::lock_guard<std::mutex> lk(box.mutex);
      if (box.queued.empty()) {
        box.drain_posted = false;
        return;
      }
    }
    post_drain();
  }

  /// Runs a storage report: at once where the engine's state has real locks; otherwise on the
  /// broker's executor, the only thread that may touch it (in order: one executor, FIFO). A
  /// report still queued when the broker is destroyed is dropped.
  template <class F>
  void on_storage_thread(F&& f) {
    if constexpr (locking_type::thread_safe) {
      f();
    } else {
      asio::post(control_ex_, [alive = std::weak_ptr<void>(alive_), f = std::forward<F>(f)]() mutable {
        if (alive.lock()) f();
      });
    }
  }

 public:
  broker(const broker&) = delete;
  broker& operator=(const broker&) = delete;
  ~broker() {
    // Connections refer to the broker; a host must stop it (and run the io_context until the stop
    // completes) before destroying it. Sessions hold no connection references past that.
    if constexpr (engine_type::clustered) {
      ctx_.engine_.cluster().stop();  // no message from other nodes after this
      alive_.reset();
    }
    if constexpr (engine_type::durable) {
      // A store reporting from its own thread must not reach the engine while it is destroyed.
      using storage_type = typename engine_type::storage_type;
      ctx_.engine_.storage().on_commit(std::function<void(std::uint64_t)>());
      if constexpr (storage::detail::has_on_commit_failed<storage_type>::value)
        ctx_.engine_.storage().on_commit_failed(std::function<void(std::uint64_t, std::uint64_t, std::error_code)>());
      if constexpr (storage::detail::has_close<storage_type>::value) ctx_.engine_.storage().close();
      alive_.reset();
    }
  }

  const broker_options& options() const noexcept { return ctx_.engine_.options(); }
  /// The storage policy's object (Policies::storage): a host opens or configures a durable one
  /// before start(), which loads what it kept.
  typename engine_type::storage_type& storage() noexcept { return ctx_.engine_.storage(); }
  asio::any_io_executor get_executor() const { return ex_; }

  /// The cluster policy's object (Policies::cluster, cluster/contract.hpp): a host configures it
  /// before connect_cluster().
  typename engine_type::cluster_type& cluster() noexcept { return ctx_.engine_.cluster(); }

  /// Joins the cluster (Policies::cluster): what other nodes send comes back to the engine on
  /// the broker's executor. May block until the first connection, as the policy says: call it
  /// before the io_context runs, or off its threads. An error if the cluster cannot start.
  std::error_code connect_cluster() {
    static_assert(engine_type::clustered, "mqttbroker: connect_cluster() needs Policies::cluster");
    if (!cluster_inbox_) cluster_inbox_ = std::make_unique<cluster_inbox>();
    using kind = typename cluster_inbox::kind;
    cluster::inbound in;
    in.route = [this](message_ptr m) { to_engine(kind::route, {}, std::move(m)); };
    in.to_group = [this](std::string_view group_filter, message_ptr m) {
      to_engine(kind::group, group_filter, std::move(m));
    };
    in.retained = [this](message_ptr m) { to_engine(kind::retained, {}, std::move(m)); };
    if constexpr (engine_type::session_feeds)
      in.to_session = [this](std::string client_id, message_ptr m) { to_engine(kind::session, client_id, std::move(m)); };
    if constexpr (engine_type::claims) {
      in.hand_over = [this](std::string client_id, bool discard, typename engine_type::handover_done done) {
        asio::post(ex_, [this, alive = std::weak_ptr<void>(alive_), client_id = std::move(client_id), discard,
                         done = std::move(done)]() mutable {
          if (const auto held = alive.lock())
            ctx_.engine_.hand_over_to_cluster(client_id, discard, std::move(done), now());
          else
            done(std::nullopt);  // the broker is gone: nothing here to hand over
        });
      };
    }
    return ctx_.engine_.cluster().start(ex_, std::move(in));
  }

  /// Adds a listener of the default transport; throws std::system_error when the address cannot
  /// be bound.
  void listen(const listen_options& o) { listen<transport_type>(o); }
  void listen(const listen_options& o, std::error_code& ec) { listen<transport_type>(o, ec); }

  /// Adds a listener of `Transport`: one broker serves several transports (TCP, TLS, WebSocket,
  /// in-memory) from one session table. Throws std::system_error when it cannot listen, and
  /// std::invalid_argument when the transport cannot run on the broker's executor.
  template <class Transport>
  void listen(const typename Transport::listen_options& o) {
    std::error_code ec;
    std::string what;
    listen<Transport>(o, ec, &what);
    if (ec) throw std::system_error(ec, what.empty() ? std::string("mqttbroker: listen") : "mqttbroker: listen: " + what);
  }
  /// The same without exceptions; `what`, if given, names the file or setting at fault where the
  /// transport can tell (TLS: "TLS private key file '...': ...").
  template <class Transport>
  void listen(const typename Transport::listen_options& o, std::error_code& ec, std::string* what = nullptr) {
    // Listeners, the sweep and stopping share one executor (a strand with locking::shared).
    auto l = std::make_unique<listener<Transport>>(*this, stream_executor_of<Transport>(ex_), o, listeners_.size(), ec,
                                                   what);
    if (ec) return;
    listeners_.push_back(std::move(l));
    if (started_) listeners_.back()->accept_next();
  }

  /// Reads listener `index`'s certificates and keys again from its files (TLS): the connections
  /// it accepts from then on use them, open ones keep theirs, so certificates are renewed without
  /// dropping a client. On failure the listener keeps what it had, `ec` says why and `what` (if
  /// given) names the file; operation_not_supported for a transport without credentials. From
  /// any thread.
  void reload_certificates(std::size_t index, std::error_code& ec, std::string* what = nullptr) {
    listeners_.at(index)->reload(ec, what);
  }
  /// The same; throws std::system_error naming the file.
  void reload_certificates(std::size_t index) {
    std::error_code ec;
    std::string what;
    reload_certificates(index, ec, &what);
    if (ec) throw std::system_error(ec, "mqttbroker: reload: " + what);
  }

  /// How many listeners listen() added; the next one gets this index.
  std::size_t listener_count() const noexcept { return listeners_.size(); }

  /// What limit_connections() takes for no limit, as every listener starts.
  static constexpr std::size_t unlimited = std::numeric_limits<std::size_t>::max();

  /// At most `n` connections at once through listener `index` (Mosquitto's per-listener
  /// max_connections); broker_options::max_connections still caps all listeners together. More
  /// are closed right after accept and counted in broker_stats::connections_refused; a limit
  /// below the connections open closes none of them. Counting is done where the engine counts
  /// connections anyway, so a listener without a limit costs nothing more. From any thread;
  /// std::out_of_range for an unknown index.
  void limit_connections(std::size_t index, std::size_t n) {
    (void)listeners_.at(index);
    ctx_.engine_.limit_listener(index, n);
  }
  /// The connections open through listener `index` now.
  std::size_t connections(std::size_t index) const {
    (void)listeners_.at(index);
    return ctx_.engine_.listener_connections(index);
  }

  /// The port a listener is bound to (for port 0); 0 for a transport without ports.
  std::uint16_t local_port(std::size_t index = 0) const { return listeners_.at(index)->info().port; }
  /// What the hooks' client_info says of a listener: its index, transport and port.
  const hooks::listener_info& listener_info(std::size_t index) const { return listeners_.at(index)->info(); }

  /// Starts accepting on every listener.
  void start() {
    if (started_) return;
    started_ = true;
    ctx_.engine_.restart();
    started_at_ = now();
    note_sweep_now(started_at_);
    if (!loaded_) {
      loaded_ = true;
      ctx_.engine_.load(started_at_, ctx_.system_now());
      // Sessions that expired while the broker was down end before anyone can resume them.
      if constexpr (engine_type::durable) ctx_.engine_.expire_sessions(started_at_);
      if (auto due = ctx_.engine_.next_will_due()) asio::post(control_ex_, [this, d = *due] { arm_will_timer(d); });
    }
    for (auto& l : listeners_) l->accept_next();
    arm_sweep();
  }

  /// Stops: closes the listeners, sends 5.0 clients DISCONNECT (Server shutting down), lets the
  /// queued bytes go out, closes every connection and completes `token` when all are gone.
  template <class CompletionToken>
  auto async_stop(CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(std::error_code)>(
        [this](auto handler) {
          asio::post(control_ex_, [this, h = std::move(handler)]() mutable { do_stop(std::move(h)); });
        },
        token);
  }

  // ---- the in-process API

  /// Publishes from the host. The payload is copied once into a message that every subscriber,
  /// socket or in-process, shares. Returns the number of subscribers it went to, or an error for
  /// an invalid topic.
  std::size_t publish(std::string_view topic_name, std::string_view payload, codec::qos q = codec::qos::at_most_once,
                      bool retain = false, std::error_code* error = nullptr) {
    // The sweep's time, not a clock read per publish (a tenth of a host publish's cost): it only
    // dates when an idle subscriber got work, for the stuck-client test, which counts in seconds.
    return ctx_.engine_.publish(topic_name, payload, q, retain, error, sweep_now());
  }

  /// The same with 5.0 properties (a Response Topic and Correlation Data for a request, a Message
  /// Expiry Interval, User Properties...): 5.0 subscribers get them, in-process ones see them in
  /// message::properties(). An error for a Response Topic with wildcards, a string that is not
  /// UTF-8 or a field over 65,535 bytes.
  std::size_t publish(std::string_view topic_name, std::string_view payload, codec::qos q, bool retain,
                      const message_properties& props, std::error_code* error = nullptr) {
    return ctx_.engine_.publish(topic_name, payload, q, retain, props, error, sweep_now());
  }

  /// Subscribes the host to `filter`; `handler` runs for each matching message on the thread that
  /// routes it (one io_context thread with locking::none).
  local_subscription_id subscribe(std::string_view filter, local_handler handler, codec::qos q = codec::qos::exactly_once) {
    return ctx_.engine_.subscribe(filter, std::move(handler), q);
  }

  /// Ends an in-process subscription or participant; true when it existed.
  bool unsubscribe(local_subscription_id id) { return ctx_.engine_.unsubscribe(id); }

  /// An in-process participant (what a bridge is to this broker): filters added with
  /// subscribe(id, ...), messages published with publish_as(id, ...), which its own No Local
  /// filters do not get back. `handler` gets each matching message once, on the thread that
  /// routes it. unsubscribe(id) ends it.
  local_subscription_id attach(local_handler handler) { return ctx_.engine_.attach(std::move(handler)); }
  /// Gives participant `id` a filter with MQTT's subscription options (Maximum QoS, No Local);
  /// an error for an invalid or shared filter.
  std::error_code subscribe(local_subscription_id id, std::string_view filter, codec::subscribe_options o) {
    return ctx_.engine_.subscribe_as(id, filter, o);
  }
  /// Publishes as participant `id` with 5.0 properties as a PUBLISH carries them (a bridge passes
  /// on what its remote sent: user properties, Response Topic, Message Expiry... all kept but
  /// Topic Alias and Subscription Identifiers). Returns the number of subscribers it went to.
  std::size_t publish_as(local_subscription_id id, std::string_view topic_name, std::string_view payload, codec::qos q,
                         bool retain, codec::properties_view properties = {}, std::error_code* error = nullptr) {
    return ctx_.engine_.publish_as(id, topic_name, payload, q, retain, properties, error, sweep_now());
  }

  /// Sends the connected client `client_id` to another server (MQTT 5.0 section 4.11): a 5.0
  /// client gets DISCONNECT 0x9C (Use another server), or 0x9D (Server moved) when `permanent`,
  /// with `server_reference` as its Server Reference; a 3.1.1 client's connection is closed. Its
  /// will goes out as for any close it did not ask for. From any thread (broker_mt) or the
  /// io_context's (broker<>); done on the connection's own thread after this returns. False when
  /// no client with that identifier is connected.
  bool redirect(std::string_view client_id, std::string_view server_reference, bool permanent = false) {
    return ctx_.engine_.redirect(client_id, server_reference, permanent);
  }

  /// Ends the connection of the connected client `client_id`, as an operator would: a 5.0 client
  /// gets DISCONNECT with `reason` (0x98 Administrative action unless said otherwise) first, a
  /// 3.1.1 client's connection just closes. Its will goes out, and a persistent session stays
  /// for its next connection. From any thread (broker_mt) or the io_context's (broker<>); done
  /// on the connection's own thread after this returns. False when no client with that
  /// identifier is connected.
  bool disconnect(std::string_view client_id, reason_code reason = reason_code::administrative_action) {
    return ctx_.engine_.kick(client_id, reason);
  }

  /// The connected clients: identifier, protocol version, listener, connected since (the wall
  /// clock), messages queued and in flight, and, where the broker keeps them (a hook takes a
  /// client_info), user name and address. A snapshot, from any thread.
  std::vector<client_snapshot> clients() const {
    const auto steady = ctx_.clock.steady_now();
    const auto wall = ctx_.clock.system_now();
    return ctx_.engine_.clients([&](time_point t) {
      return std::chrono::time_point_cast<std::chrono::system_clock::duration>(wall - (steady - t));
    });
  }

  /// Removes the session of `client_id`, connected or not, as an operator's clean-up: an offline
  /// session goes at once (subscriptions, queued messages, its stored state; a delayed will is
  /// discarded); a connected client is disconnected as by disconnect(client_id, reason) and its
  /// session ends with the connection (its will goes out, as for any close it did not ask for).
  /// From any thread; false when there is no such session.
  bool remove_session(std::string_view client_id, reason_code reason = reason_code::administrative_action) {
    return ctx_.engine_.end_session(client_id, reason, now());
  }

  /// Asks the hooks' authorize_subscribe() again about every session's subscriptions and takes
  /// out those it now refuses (after the rules behind it changed: an ACL file read again), with a
  /// log line each; the clients are not told (MQTT has no packet for it) and keep their
  /// connections. Deliveries follow authorize_read() at once without this; it ends the routes
  /// that would only carry refused messages. From any thread. Returns how many it took out.
  std::size_t recheck_subscriptions() { return ctx_.engine_.recheck_subscriptions(); }

  /// A line to the hooks' log() (nothing when the hooks have none, or `level` is above
  /// options().log_level): for components beside the broker, such as bridges.
  template <class... Args>
  void log(log_level level, fmt::format_string<Args...> format, Args&&... args) {
    ctx_.engine_.log(level, format, std::forward<Args>(args)...);
  }

  broker_stats stats() const {
    broker_stats s = ctx_.engine_.stats();
    s.handshake_failures = ctx_.handshake_failures.load();
    s.refused_per_address = ctx_.refused_per_address.load();
    s.refused_rate = ctx_.refused_rate.load();
    s.bytes_received = ctx_.bytes_received.load();
    s.bytes_sent = ctx_.bytes_sent.load();
    return s;
  }

  /// The retained message for a topic, if any.
  message_ptr retained(std::string_view topic_name) const { return ctx_.engine_.retained(topic_name); }

  /// What every connection of this broker shares: the engine, the clock, and the transport's
  /// counters that the engine does not see.
  struct context {
    using engine_type = broker::engine_type;
    using locking_type = broker::locking_type;
    using timer_type = broker::timer_type;
    context(broker_options o, hooks_type h, clock_type c) : engine_(std::move(o), std::move(h)), clock(std::move(c)) {}
    engine_type& engine() noexcept { return engine_; }
    time_point now() const noexcept { return clock.steady_now(); }
    typename clock_type::system_time system_now() const noexcept { return clock.system_now(); }
    timer_type make_timer(const asio::any_io_executor& ex) const { return clock.make_timer(ex); }
    void note_handshake_failure() noexcept { handshake_failures.fetch_add(1); }
    void note_bytes_received(std::size_t n) noexcept { bytes_received.fetch_add(n); }
    void note_bytes_sent(std::size_t n) noexcept { bytes_sent.fetch_add(n); }
    engine_type engine_;
    MQTTBROKER_NO_UNIQUE_ADDRESS clock_type clock;
    typename locking_type::template counter_type<std::uint64_t> handshake_failures{};
    typename locking_type::template counter_type<std::uint64_t> refused_per_address{}, refused_rate{};
    typename locking_type::template counter_type<std::uint64_t> bytes_received{}, bytes_sent{};
  };

 private:
  time_point now() const noexcept { return ctx_.now(); }
  /// The time of the last sweep (at most sweep_interval old), for the hot in-process path.
  time_point sweep_now() const noexcept {
    return time_point(typename time_point::duration(sweep_now_.load(std::memory_order_relaxed)));
  }
  void note_sweep_now(time_point t) noexcept { sweep_now_.store(t.time_since_epoch().count(), std::memory_order_relaxed); }

  /// A listener of any transport, as the broker keeps it.
  struct listener_base {
    virtual ~listener_base() = default;
    virtual void accept_next() = 0;
    virtual void close() = 0;
    virtual const hooks::listener_info& info() const = 0;
    virtual void reload(std::error_code& ec, std::string* what) = 0;
  };

  template <class Transport>
  class listener final : public listener_base {
   public:
    using stream_type = typename Transport::stream_type;
    using stream_executor = typename stream_type::executor_type;
    using connection_type = server::connection<Transport, context>;

    listener(broker& b, stream_executor ex, const typename Transport::listen_options& o, std::size_t index,
             std::error_code& ec, std::string* what)
        : b_(b), stream_ex_(std::move(ex)), acceptor_(make_acceptor(b.control_ex_, o, ec, what)) {
      info_.index = index;
      info_.transport = Transport::name;
      if (!ec) {
        std::error_code ignored;
        info_.port = acceptor_.local_endpoint(ignored).port();
        if constexpr (transport::acceptor_has_limit_message_size_v<Transport>)
          acceptor_.limit_message_size(b.ctx_.engine_.options().max_packet_size);
      }
    }

    void accept_next() override {
      acceptor_.async_accept(stream_ex_, [this](std::error_code ec, stream_type s) {
        if (ec) {
          if (!b_.ctx_.engine_.stopping() && acceptor_.is_open()) accept_next();
          return;
        }
        on_accept(std::move(s));
        if (!b_.ctx_.engine_.stopping()) accept_next();
      });
    }
    void close() override {
      std::error_code ignored;
      acceptor_.close(ignored);
    }
    const hooks::listener_info& info() const override { return info_; }
    void reload(std::error_code& ec, std::string* what) override {
      if constexpr (transport::acceptor_has_reload_v<Transport>) {
        acceptor_.reload(ec, what);
      } else {
        ec = std::make_error_code(std::errc::operation_not_supported);
        if (what != nullptr) *what = std::string("the ") + Transport::name + " transport has no certificates to reload";
      }
    }

   private:
    static typename Transport::acceptor_type make_acceptor(const asio::any_io_executor& ex,
                                                           const typename Transport::listen_options& o,
                                                           std::error_code& ec, std::string* what) {
      if constexpr (transport::has_make_acceptor_what_v<Transport>) {
        return Transport::make_acceptor(ex, o, ec, what);
      } else {
        (void)what;
        return Transport::make_acceptor(ex, o, ec);
      }
    }

    void on_accept(stream_type s) {
      Transport::prepare(s);
      auto c = detail::ref_ptr<connection_type>::make(b_.ctx_, std::move(s));
      if constexpr (engine_type::session_type::keeps_origin) {
        const transport::peer_endpoint peer = c->peer();
        c->set_origin(&info_, peer.address, peer.port);
      }
      c->set_listener(info_.index);
      if (b_.admission_->active() && !b_.admit(*c)) {
        c->refuse();
        return;
      }
      if (!b_.ctx_.engine_.open(*c, b_.now())) {
        c->refuse();
        return;
      }
      asio::dispatch(c->get_executor(), [c] { c->start(); });
    }

    broker& b_;
    stream_executor stream_ex_;
    typename Transport::acceptor_type acceptor_;
    hooks::listener_info info_;
  };

  /// Admission per source address (broker_options::max_connections_per_address and the rate);
  /// false when `c` is refused, counted and logged (at most a line a second, saying how many
  /// were refused since the last).
  template <class Connection>
  bool admit(Connection& c) {
    const transport::peer_endpoint peer = c.peer();
    server::address_admission::ticket t;
    const auto v = server::address_admission::admit(admission_, peer.address, now(), t);
    if (v == server::address_verdict::admitted) {
      if (t) c.hold_admission(std::move(t));
      return true;
    }
    const bool too_many = v == server::address_verdict::too_many;
    (too_many ? ctx_.refused_per_address : ctx_.refused_rate).fetch_add(1);
    const std::uint64_t n = refusals_unlogged_.fetch_add(1) + 1;
    const auto at = now().time_since_epoch().count();
    auto last = last_refusal_logged_.load(std::memory_order_relaxed);
    if (at - last >= std::chrono::duration_cast<typename time_point::duration>(std::chrono::seconds(1)).count() &&
        last_refusal_logged_.compare_exchange_strong(last, at)) {
      refusals_unlogged_.fetch_sub(n);
      const auto& o = ctx_.engine_.options();
      if (too_many)
        ctx_.engine_.log(log_level::warning, "connection from {} refused: it has max_connections_per_address ({}) open{}",
                         peer.address, o.max_connections_per_address,
                         n > 1 ? fmt::format(" ({} refusals since the last line)", n) : std::string());
      else
        ctx_.engine_.log(log_level::warning,
                         "connection from {} refused: over max_connection_rate_per_address ({}/s, bursts of {}){}",
                         peer.address, o.max_connection_rate_per_address, o.connection_burst_per_address,
                         n > 1 ? fmt::format(" ({} refusals since the last line)", n) : std::string());
    }
    return false;
  }

  /// The executor a transport's streams use, from the host's: a TCP socket is smaller on the
  /// io_context's own executor type than on any_io_executor. Throws for an executor of another
  /// kind of context.
  template <class Transport>
  typename Transport::stream_type::executor_type stream_executor_of(const asio::any_io_executor& ex) const {
    using stream_executor = typename Transport::stream_type::executor_type;
    if constexpr (std::is_same_v<stream_executor, asio::any_io_executor>) {
      return ex;
    } else {
      if constexpr (std::is_same_v<stream_executor, asio::io_context::executor_type>) {
        if (io_ != nullptr) return io_->get_executor();  // built from the io_context: no RTTI needed
      }
      // target<T>() does not check the type in every Asio version: compare the type first.
#if !defined(ASIO_NO_TYPEID)
      if (ex.target_type() == typeid(stream_executor)) return *ex.target<stream_executor>();
      using strand_type = asio::strand<stream_executor>;
      if (ex.target_type() == typeid(strand_type)) return ex.target<strand_type>()->get_inner_executor();
#endif
      throw std::invalid_argument("mqttbroker: the transport needs an asio::io_context's executor");
    }
  }

  // ---- timers: the sweep and the delayed wills, on control_ex_

  /// Twice a second: connection deadlines (CONNECT timeout, Keep Alive) are met within half a
  /// second, with one timer for the broker rather than one per connection.
  static constexpr std::chrono::milliseconds sweep_interval{500};

  void arm_sweep() {
    sweep_timer_.expires_after(sweep_interval);
    sweep_timer_.async_wait([this](std::error_code ec) {
      if (ec || ctx_.engine_.stopping()) return;
      const time_point t = now();
      note_sweep_now(t);
      ctx_.engine_.sweep_connections(t);
      ctx_.engine_.flush_storage();  // what no acknowledgement waits for (compiled out for memory)
      if (sweep_ticks_ % 4 == 3) {
        // Memory a burst freed goes back to the system, once the burst is over: trimming during
        // one would hand back pages the traffic faults in again.
        const std::uint64_t received = ctx_.engine_.messages_received();
        const bool quiet = received - received_at_trim_check_ < quiet_messages;
        received_at_trim_check_ = received;
        std::size_t free_in_heap = 0;
        // This thread's caches go too (with one io_context thread, all of them); other threads
        // keep theirs, which are bounded.
        if (quiet && heap_.check(options().heap_trim_threshold, free_in_heap, [] {
              detail::block_pool::trim();
              engine::write_batch_pool::shrink();
            }))
          ctx_.engine_.log(log_level::debug, "heap trimmed: {} KiB were free in it", free_in_heap / 1024);
      }
      if (++sweep_ticks_ % 2 == 0) {
        ctx_.engine_.expire_sessions(t);
        const auto sys = options().sys_interval.count();
        if (sys != 0 && ++seconds_since_sys_ >= sys) {
          seconds_since_sys_ = 0;
          ctx_.engine_.publish_sys(std::chrono::duration_cast<std::chrono::seconds>(t - started_at_), t, stats());
        }
      }
      arm_sweep();
    });
  }

  /// The engine has a delayed will due at `due`: the timer waits for the earliest.
  void arm_will_timer(time_point due) {
    if (ctx_.engine_.stopping() || (will_armed_ && will_due_ <= due)) return;
    will_armed_ = true;
    will_due_ = due;
    will_timer_.expires_after(due - now());  // a new expiry cancels the earlier wait
    will_timer_.async_wait([this](std::error_code ec) {
      if (ec) return;  // cancelled, or replaced by an earlier will
      will_armed_ = false;
      ctx_.engine_.release_wills(now());
      if (auto next = ctx_.engine_.next_will_due()) arm_will_timer(*next);
    });
  }

  // ---- stopping

  template <class Handler>
  void do_stop(Handler h) {
    started_ = false;
    sweep_timer_.cancel();
    will_timer_.cancel();  // pending timers would keep the host's io_context busy after the stop
    will_armed_ = false;
    for (auto& l : listeners_) l->close();
    ctx_.engine_.stop([this, h = std::move(h)]() mutable {
      asio::post(ex_, [h = std::move(h)]() mutable { h(std::error_code()); });
    });
  }

  asio::io_context* io_;  // when built from an io_context
  asio::any_io_executor ex_;
  asio::any_io_executor control_ex_;  // the locking policy's strand (locking::shared: an asio::strand)
  std::unique_ptr<cluster_inbox> cluster_inbox_;  // from connect_cluster()
  std::shared_ptr<void> alive_ = std::make_shared<char>();  // what storage reports queued on control_ex_ check
  context ctx_;
  // Per source address, from ctx_'s options; shared with the tickets of the connections it admits.
  std::shared_ptr<server::address_admission> admission_ = std::make_shared<server::address_admission>(
      server::address_limits{ctx_.engine_.options().max_connections_per_address,
                             ctx_.engine_.options().max_connection_rate_per_address,
                             ctx_.engine_.options().connection_burst_per_address,
                             ctx_.engine_.options().admission_exempts_loopback});
  std::atomic<std::uint64_t> refusals_unlogged_{0};
  std::atomic<typename time_point::rep> last_refusal_logged_{std::numeric_limits<typename time_point::rep>::min() / 2};
  std::vector<std::unique_ptr<listener_base>> listeners_;
  timer_type sweep_timer_;
  timer_type will_timer_;
  time_point will_due_{};               // control_ex_
  bool will_armed_ = false;             // control_ex_
  bool started_ = false;                // control_ex_
  bool loaded_ = false;                 // control_ex_: the storage was read, once
  time_point started_at_{};             // control_ex_
  std::int64_t seconds_since_sys_ = 0;  // control_ex_
  detail::heap_trimmer heap_;            // control_ex_
  std::uint64_t received_at_trim_check_ = 0;  // control_ex_
  static constexpr std::uint64_t quiet_messages = 1000;  // per trim check (2 s): the traffic is quiet
  std::uint64_t sweep_ticks_ = 0;       // control_ex_
  // sweep_now(): read by host publishes on any thread.
  std::atomic<typename time_point::duration::rep> sweep_now_{0};
};

/// The broker for a host that runs its io_context on several threads.
struct mt_policies : default_policies {
  using locking = ::mqttbroker::locking::shared;
};
using broker_mt = broker<mt_policies>;

MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_BROKER_HPP
