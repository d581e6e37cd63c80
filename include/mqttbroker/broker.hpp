#ifndef MQTTBROKER_BROKER_HPP
#define MQTTBROKER_BROKER_HPP

#include <mqttbroker/codec/packets.hpp>
#include <mqttbroker/codec/properties.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/detail/connection.hpp>
#include <mqttbroker/detail/fifo.hpp>
#include <mqttbroker/detail/intrusive_list.hpp>
#include <mqttbroker/detail/ref_counted.hpp>
#include <mqttbroker/error.hpp>
#include <mqttbroker/hooks/hooks.hpp>
#include <mqttbroker/locking/none.hpp>
#include <mqttbroker/locking/shared.hpp>
#include <mqttbroker/locking/traits.hpp>
#include <mqttbroker/message.hpp>
#include <mqttbroker/options.hpp>
#include <mqttbroker/router/retained.hpp>
#include <mqttbroker/router/subscriptions.hpp>
#include <mqttbroker/session/state.hpp>
#include <mqttbroker/storage/contract.hpp>
#include <mqttbroker/storage/memory.hpp>
#include <mqttbroker/topic/shared.hpp>
#include <mqttbroker/topic/validate.hpp>
#include <mqttbroker/transport/tcp.hpp>
#include <mqttbroker/transport/traits.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/dispatch.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE

/// broker<> is TCP, memory storage, no locking (one io_context thread) and no hooks. Override one
/// by deriving: `struct my_policies : default_policies { using locking = locking::shared; };`
struct default_policies {
  using transport = transport::tcp;
  using storage = storage::memory;
  using locking = locking::none;
  using hooks = hooks::none;
};

/// Counters a host reads for metrics and tests.
struct broker_stats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_refused = 0;  // over max_connections
  std::uint64_t protocol_errors = 0;      // connections closed for malformed or forbidden packets
  std::uint64_t connect_timeouts = 0;
  std::uint64_t keep_alive_timeouts = 0;
  std::uint64_t messages_received = 0;    // PUBLISH from clients and in-process
  std::uint64_t messages_sent = 0;        // PUBLISH to clients and in-process subscribers
  std::uint64_t messages_dropped = 0;     // refused by a session's queue limits or a slow socket
  std::uint64_t publishes_denied = 0;     // to $-topics or refused by authorize_publish
  std::uint64_t sessions_expired = 0;
  std::uint64_t reader_pauses = 0;        // publishers paused because a subscriber was behind
  std::size_t connections = 0;
  std::size_t sessions = 0;
  std::size_t retained_messages = 0;
};

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
  using storage_type = typename Policies::storage;
  using locking_type = typename Policies::locking;
  using hooks_type = typename Policies::hooks;
  using stream_type = typename transport_type::stream_type;
  using stream_executor_type = typename stream_type::executor_type;
  using acceptor_type = typename transport_type::acceptor_type;
  using listen_options = typename transport_type::listen_options;
  using connection_type = detail::connection<broker>;
  using clock = std::chrono::steady_clock;

  /// An in-process subscription's handler: gets every matching message.
  using local_handler = std::function<void(const message_ptr&)>;
  /// Names an in-process subscription for unsubscribe().
  enum class local_subscription_id : std::uint64_t {};

  broker(asio::io_context& io, broker_options opts = {}, hooks_type hooks = {})
      : broker(io.get_executor(), stream_executor_type(io.get_executor()), std::move(opts), std::move(hooks)) {}
  /// On the host's executor. Over TCP it must be an io_context's executor or a strand of one
  /// (std::invalid_argument otherwise, and always when Asio is built without RTTI: construct
  /// from the io_context then).
  broker(asio::any_io_executor ex, broker_options opts = {}, hooks_type hooks = {})
      : broker(ex, stream_executor_of(ex), std::move(opts), std::move(hooks)) {}

 private:
  broker(asio::any_io_executor ex, stream_executor_type stream_ex, broker_options opts, hooks_type hooks)
      : ex_(std::move(ex)),
        stream_ex_(std::move(stream_ex)),
        control_ex_(locking_type::make_strand(ex_)),
        opts_(std::move(opts)),
        hooks_(std::move(hooks)),
        sweep_timer_(control_ex_) {
    if (opts_.max_inflight == 0 || opts_.receive_maximum == 0)
      throw std::invalid_argument("mqttbroker: max_inflight and receive_maximum must be at least 1");
    // Pacing has to start well before the queue limits drop anything.
    pacing_bytes_ = opts_.pacing_backlog_bytes;
    if (opts_.max_queued_bytes != 0) pacing_bytes_ = std::min(pacing_bytes_, opts_.max_queued_bytes / 2);
    pacing_messages_ = std::min(opts_.pacing_queued_messages, opts_.max_queued_messages / 2);
    session_limits_ = make_session_limits(opts_);
  }

 public:
  broker(const broker&) = delete;
  broker& operator=(const broker&) = delete;
  ~broker() {
    // Connections refer to the broker; a host must stop it (and run the io_context until the stop
    // completes) before destroying it. Sessions hold no connection references past that.
  }

  const broker_options& options() const noexcept { return opts_; }
  asio::any_io_executor get_executor() const { return ex_; }

  /// Adds a listener; throws std::system_error when the address cannot be bound.
  void listen(const listen_options& o) {
    std::error_code ec;
    listen(o, ec);
    if (ec) throw std::system_error(ec, "mqttbroker: listen");
  }
  void listen(const listen_options& o, std::error_code& ec) {
    // Listeners, the expiry sweep and stopping share one strand, so they never race.
    auto a = std::make_unique<acceptor_type>(transport_type::make_acceptor(control_ex_, o, ec));
    if (ec) return;
    acceptors_.push_back(std::move(a));
    if (started_) accept(*acceptors_.back());
  }
  /// The port a listener is bound to (for port 0).
  std::uint16_t local_port(std::size_t listener = 0) const {
    std::error_code ec;
    return acceptors_.at(listener)->local_endpoint(ec).port();
  }

  /// Starts accepting on every listener.
  void start() {
    if (started_) return;
    started_ = true;
    stopping_ = false;
    started_at_ = clock::now();
    for (auto& a : acceptors_) accept(*a);
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
    topic::limits lim;
    lim.max_levels = opts_.max_topic_levels;
    if (auto ec = topic::validate_topic_name(topic_name, lim)) {
      if (error) *error = ec;
      return 0;
    }
    auto m = message::make(topic_name, payload, q, retain);
    return publish_message(std::move(m), nullptr);
  }

  /// Subscribes the host to `filter`; `handler` runs for each matching message on the thread that
  /// routes it (one io_context thread with locking::none).
  local_subscription_id subscribe(std::string_view filter, local_handler handler, codec::qos q = codec::qos::exactly_once) {
    topic::limits lim;
    lim.max_levels = opts_.max_topic_levels;
    if (auto ec = topic::validate_topic_filter(filter, lim)) throw std::system_error(ec, "mqttbroker: subscribe");
    auto sub = std::make_unique<local_subscriber>();
    sub->kind = subscriber_kind::local;
    sub->handler = std::make_shared<const local_handler>(std::move(handler));
    sub->filter = std::string(filter);
    std::lock_guard<mutex_type> lk(state_mutex_);
    const auto id = static_cast<local_subscription_id>(++next_local_id_);
    router::subscription s;
    s.options.max_qos = q;
    router_.subscribe(filter, sub.get(), s);
    local_subs_.emplace(static_cast<std::uint64_t>(id), std::move(sub));
    return id;
  }

  /// Ends an in-process subscription; true when it existed.
  bool unsubscribe(local_subscription_id id) {
    std::lock_guard<mutex_type> lk(state_mutex_);
    auto it = local_subs_.find(static_cast<std::uint64_t>(id));
    if (it == local_subs_.end()) return false;
    router_.unsubscribe(it->second->filter, it->second.get());
    local_subs_.erase(it);
    return true;
  }

  broker_stats stats() const {
    // Shared: it only reads, and a host may poll it while publishers route.
    std::shared_lock<mutex_type> lk(state_mutex_);
    broker_stats s = stats_;
    s.messages_received = hot_.received.load();
    s.messages_sent = hot_.sent.load();
    s.messages_dropped = hot_.dropped.load();
    s.reader_pauses = hot_.pauses.load();
    s.connections = connections_.size();
    s.sessions = sessions_.size();
    s.retained_messages = retained_.size();
    return s;
  }

  /// The retained message for a topic, if any.
  message_ptr retained(std::string_view topic_name) const {
    std::lock_guard<mutex_type> lk(state_mutex_);
    return retained_.find(topic_name);
  }

 private:
  friend connection_type;
  using mutex_type = typename locking_type::mutex_type;
  using session_mutex_type = locking::session_mutex_t<locking_type>;

  enum class subscriber_kind : std::uint8_t { client, local };

  /// What the router stores per subscription: a client's session or an in-process handler.
  struct subscriber {
    subscriber_kind kind = subscriber_kind::client;
  };
  struct local_subscriber : subscriber {
    // Shared so that a handler unsubscribed while a delivery to it is pending stays alive.
    std::shared_ptr<const local_handler> handler;
    std::string filter;
  };

 public:
  /// What few sessions need, made on first use: an idle session does without it.
  struct session_extras {
    detail::fifo<session::outgoing> retained_backlog;  // retained messages paced by flow control
    // 5.0 Will Delay Interval: a will waiting for its delay, the session's end, or a reconnect.
    message_ptr pending_will;
    std::uint64_t will_generation = 0;
    std::unique_ptr<asio::steady_timer> will_timer;
    // Publisher pacing: connections that stopped reading because this session's client was
    // behind; resumed when it catches up, leaves, or is found stuck.
    std::vector<detail::ref_ptr<connection_type>> paced;
  };

  /// locking::shared: what publishers on other threads admitted for the connection's strand.
  struct strand_outbox {
    std::vector<session::outgoing> items;
    std::size_t bytes = 0;
    bool pump_scheduled = false;
  };
  struct no_outbox {};

  /// A client session as the broker keeps it: the MQTT state plus where it is connected.
  struct session_record : subscriber, detail::ref_counted {
    session_record(std::string id, const session::limits* l) : state(std::move(id), l) {}
    session::state state;
    detail::ref_ptr<connection_type> conn;  // the live connection, if any
    clock::time_point expires{};                 // when persistent and offline
    std::chrono::duration<std::uint32_t> expiry{0};  // 0 ends with the connection; 0xFFFFFFFF: never
    std::atomic<bool> has_paced{false};  // read without the lock on every write completion
    // With locking::shared, publishers holding the state lock shared meet here; every other
    // change to the session holds the state lock exclusively.
    MQTTBROKER_NO_UNIQUE_ADDRESS mutable session_mutex_type mutex;
    MQTTBROKER_NO_UNIQUE_ADDRESS std::conditional_t<locking_type::thread_safe, strand_outbox, no_outbox> outbox;
    // Made under `mutex` or the exclusive state lock; read under either.
    std::unique_ptr<session_extras> extras;

    session_extras& more() {
      if (!extras) extras = std::make_unique<session_extras>();
      return *extras;
    }
    bool has_retained_backlog() const noexcept { return extras && !extras->retained_backlog.empty(); }
  };

 private:
  // ---- accepting

  void accept(acceptor_type& a) {
    a.async_accept(stream_ex_, [this, &a](std::error_code ec, stream_type s) {
      if (ec) {
        if (!stopping_ && a.is_open()) accept(a);
        return;
      }
      on_accept(std::move(s));
      if (!stopping_) accept(a);
    });
  }

  /// The executor connections' sockets use, behind the host's: a TCP socket is smaller on the
  /// io_context's own executor type than on any_io_executor. Throws for an executor of another
  /// kind of context.
  static stream_executor_type stream_executor_of(const asio::any_io_executor& ex) {
    if constexpr (std::is_same_v<stream_executor_type, asio::any_io_executor>) {
      return ex;
    } else {
      // target<T>() does not check the type in every Asio version: compare the type first.
#if !defined(ASIO_NO_TYPEID)
      if (ex.target_type() == typeid(stream_executor_type)) return *ex.target<stream_executor_type>();
      using strand_type = asio::strand<stream_executor_type>;
      if (ex.target_type() == typeid(strand_type)) return ex.target<strand_type>()->get_inner_executor();
#endif
      throw std::invalid_argument("mqttbroker: the transport needs an asio::io_context's executor");
    }
  }

  void on_accept(stream_type s) {
    detail::ref_ptr<connection_type> c;
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      if (connections_.size() >= opts_.max_connections) {
        ++stats_.connections_refused;
        std::error_code ignored;
        s.close(ignored);
        return;
      }
      ++stats_.connections_accepted;
      transport_type::prepare(s);
      c = detail::ref_ptr<connection_type>::make(*this, std::move(s));
      connections_.push_back(c);
    }
    asio::dispatch(c->get_executor(), [c] { c->start(); });
  }

  // ---- packets from a connection (on its executor)

  void handle_packet(connection_type& c, codec::packet& p) {
    switch (p.index()) {
      case 0: return on_connect(c, std::get<codec::connect>(p));
      case 2: return on_publish(c, std::get<codec::publish>(p));
      case 3: return on_puback(c, std::get<codec::puback>(p));
      case 4: return on_pubrec(c, std::get<codec::pubrec>(p));
      case 5: return on_pubrel(c, std::get<codec::pubrel>(p));
      case 6: return on_pubcomp(c, std::get<codec::pubcomp>(p));
      case 7: return on_subscribe(c, std::get<codec::subscribe>(p));
      case 9: return on_unsubscribe(c, std::get<codec::unsubscribe>(p));
      case 11: return c.send(codec::pingresp{});
      case 13: return on_disconnect(c, std::get<codec::disconnect>(p));
      case 14:
        // Enhanced authentication is not offered, so any AUTH is out of place [MQTT-4.12.0-1].
        return violation(c, protocol_errc::unexpected_packet);
      default: return violation(c, protocol_errc::unexpected_packet);
    }
  }

  void violation(connection_type& c, std::error_code ec) {
    c.closing_ = true;  // stop decoding this read
    c.on_protocol_violation(ec);
  }

  /// Refuses a CONNECT for `e` with the CONNACK code of the client's version, or (3.1.1 without a
  /// code for it) by closing.
  template <class Error>
  void refuse_connect(connection_type& c, codec::protocol_version v, Error e) {
    const std::error_code ec = e;
    if (v == codec::protocol_version::v5)
      return refuse_connect_code(c, v, to_reason_code(ec), connack_return_code::accepted);
    auto rc = to_connack_return_code(ec);
    if (!rc) return violation(c, ec);
    refuse_connect_code(c, v, reason_code::unspecified_error, *rc);
  }

  void refuse_connect_code(connection_type& c, codec::protocol_version v, reason_code rc5, connack_return_code rc3) {
    codec::connack ack;
    ack.code = v == codec::protocol_version::v5 ? static_cast<std::uint8_t>(rc5) : static_cast<std::uint8_t>(rc3);
    c.version_ = v;
    c.enqueue(ack, v);
    c.closing_ = true;
    c.close(reason_code::unspecified_error, false, false);
  }

  void on_connect(connection_type& c, const codec::connect& cp) {
    const auto v = cp.version;
    const bool v5 = v == codec::protocol_version::v5;
    std::string client_id(cp.client_id);
    bool assigned = false;
    if (client_id.empty()) {
      // 3.1.1: an empty identifier needs Clean Session 1 [MQTT-3.1.3-7] [MQTT-3.1.3-8];
      // 5.0: the server assigns one and says so [MQTT-3.1.3-6] [MQTT-3.2.2-16].
      if (!v5 && !cp.clean_start) return refuse_connect(c, v, protocol_errc::client_identifier_not_valid);
      std::lock_guard<mutex_type> lk(state_mutex_);
      client_id = make_client_id();
      assigned = true;
    }
    if (client_id.size() > opts_.max_client_id_length)
      return refuse_connect(c, v, protocol_errc::client_identifier_not_valid);

    topic::limits lim;
    lim.max_levels = opts_.max_topic_levels;
    if (cp.will) {
      if (auto ec = topic::validate_topic_name(cp.will->topic, lim)) {
        // The Will Topic must be a valid topic name; 5.0 has a CONNACK code for it, 3.1.1 closes.
        if (v5) return refuse_connect_code(c, v, reason_code::topic_name_invalid, connack_return_code::accepted);
        return violation(c, ec);
      }
    }

    if constexpr (hooks::has_authenticate_v<hooks_type>) {
      hooks::connect_info info{client_id, cp.username, cp.password, v};
      switch (hooks_.authenticate(info)) {
        case hooks::auth_result::accept: break;
        case hooks::auth_result::bad_credentials:
          return refuse_connect_code(c, v, reason_code::bad_user_name_or_password,
                                     connack_return_code::bad_user_name_or_password);
        case hooks::auth_result::not_authorized:
          return refuse_connect_code(c, v, reason_code::not_authorized, connack_return_code::not_authorized);
      }
    }

    // Session lifetime: 3.1.1 Clean Session 0 keeps it; 5.0 keeps it for Session Expiry Interval.
    std::chrono::seconds expiry{0};
    if (v5) {
      if (auto p = cp.properties.find(codec::property_id::session_expiry_interval)) expiry = std::chrono::seconds(p->integer);
    } else if (!cp.clean_start) {
      expiry = opts_.persistent_session_expiry.count() == 0 ? std::chrono::seconds(0xFFFFFFFFu)
                                                             : opts_.persistent_session_expiry;
    }
    const std::chrono::seconds requested_expiry = expiry;
    if (opts_.persistent_session_expiry.count() != 0 && expiry > opts_.persistent_session_expiry)
      expiry = opts_.persistent_session_expiry;

    // The will, made now so it costs nothing when it fires.
    message_ptr will;
    if (cp.will) {
      will = message::make(cp.will->topic, cp.will->payload, cp.will->qos_level, cp.will->retain,
                           forwardable_properties(cp.will->properties));
    }

    detail::ref_ptr<session_record> rec;
    bool session_present = false;
    detail::ref_ptr<connection_type> old_conn;
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      auto it = sessions_.find(client_id);
      if (it != sessions_.end()) {
        rec = it->second;
        old_conn = rec->conn;
        if (cp.clean_start) {
          drop_session_subscriptions(*rec);
          rec->state.clear_messages();
          if (rec->extras) rec->extras->retained_backlog.clear();
        } else {
          session_present = true;
        }
      } else {
        rec = detail::ref_ptr<session_record>::make(client_id, &session_limits_);
        sessions_.emplace(rec->state.client_id(), rec);
      }
      // What was admitted for an earlier connection is in flight and is resent below.
      clear_outbox(*rec);
      if (rec->extras) {
        // [MQTT-3.1.3-9] a new connection to the session within the Will Delay cancels the will.
        session_extras& x = *rec->extras;
        x.pending_will = message_ptr();
        ++x.will_generation;
        if (x.will_timer) x.will_timer->cancel();
      }
      rec->conn = c.self();
      rec->expiry = stored_expiry(expiry);
    }
    std::uint16_t keep_alive = cp.keep_alive;
    bool server_keep_alive = false;
    if (opts_.max_keep_alive != 0 && (keep_alive == 0 || keep_alive > opts_.max_keep_alive) && v5) {
      keep_alive = opts_.max_keep_alive;
      server_keep_alive = true;
    }
    const auto limit = std::chrono::milliseconds(
        static_cast<std::int64_t>(static_cast<double>(keep_alive) * 1000.0 * opts_.keep_alive_multiplier));
    c.will_ = std::move(will);
    c.will_delay_ = {};
    if (v5 && cp.will) {
      if (auto p = cp.will->properties.find(codec::property_id::will_delay_interval))
        c.will_delay_ = std::chrono::duration<std::uint32_t>(p->integer);
    }
    c.on_connected(v, rec, limit);

    codec::connack ack;
    ack.session_present = session_present;  // [MQTT-3.2.2-2] [MQTT-3.2.2-3]
    codec::properties_builder props;
    if (v5) {
      props.add(codec::property_id::receive_maximum, opts_.receive_maximum);
      // 5.0 §3.2.2.3.2: a server that keeps the session for less than asked says so.
      if (expiry != requested_expiry)
        props.add(codec::property_id::session_expiry_interval, static_cast<std::uint32_t>(expiry.count()));
      props.add(codec::property_id::maximum_packet_size, opts_.max_packet_size);
      props.add(codec::property_id::topic_alias_maximum, 0);
      props.add(codec::property_id::shared_subscription_available, 0);
      if (assigned) props.add(codec::property_id::assigned_client_identifier, client_id);
      if (server_keep_alive) props.add(codec::property_id::server_keep_alive, keep_alive);
      ack.properties = props.view();
    }
    c.send(ack);

    if constexpr (hooks::has_on_connect_v<hooks_type>) hooks_.on_connect(client_id);

    // [MQTT-4.4.0-1] a resumed session resends what was in flight, then what waited.
    if (session_present) {
      std::lock_guard<mutex_type> lk(state_mutex_);
      // Another thread may have taken the session over meanwhile; its connection resends then.
      if (rec->conn.get() == &c) rec->state.for_each_inflight([&](const session::inflight_entry& e) {
        if (e.state == session::phase::awaiting_pubcomp) {
          codec::pubrel rel;
          rel.packet_id = e.pub.packet_id;
          c.send(rel);
        } else {
          c.send_publish(e.pub);
        }
      });
    }
    pump(c);

    // [MQTT-3.1.4-2] [MQTT-3.1.4-3] the earlier connection of this client is closed; it no longer
    // owns the session. Only now: its will may match this session, and must follow the CONNACK
    // [MQTT-3.2.0-1], in this connection's version, after the re-sends above.
    if (old_conn) {
      if constexpr (locking_type::thread_safe) {
        auto ex = old_conn->get_executor();
        asio::post(ex, [old_conn] { old_conn->taken_over(); });
      } else {
        old_conn->taken_over();
      }
    }
  }

  /// 5.0 properties that travel with a message to its receivers: all but Topic Alias and
  /// Subscription Identifiers, which belong to one connection, and the will's own Will Delay.
  /// The view is valid until the next call on this thread (the caller copies it into a message).
  static std::string_view forwardable_properties(const codec::properties_view& in) {
    auto stays = [](const codec::property& p) {
      return p.id != codec::property_id::topic_alias && p.id != codec::property_id::subscription_identifier &&
             p.id != codec::property_id::will_delay_interval;
    };
    bool all_stay = true;
    for (const codec::property& p : in) all_stay = all_stay && stays(p);
    if (all_stay) return in.bytes();  // the usual case: forwarded as they came, no rebuild
    static thread_local codec::properties_builder b;
    b.clear();
    for (const codec::property& p : in)
      if (stays(p)) b.add(p);
    return b.view().bytes();
  }

  void on_publish(connection_type& c, const codec::publish& p) {
    const bool v5 = c.version() == codec::protocol_version::v5;
    if (v5 && p.properties.find(codec::property_id::topic_alias)) {
      // Topic Alias Maximum is 0 in our CONNACK, so any alias is invalid [MQTT-3.3.2-9].
      return violation(c, protocol_errc::topic_alias_invalid);
    }
    topic::limits lim;
    lim.max_levels = opts_.max_topic_levels;
    if (auto ec = topic::validate_topic_name(p.topic, lim)) return violation(c, ec);  // [MQTT-3.3.2-2]

    bool allowed = p.topic.empty() || p.topic.front() != '$';  // $-topics belong to the server
    message_ptr m;
    if (allowed) {
      m = message::make(p.topic, p.payload, p.qos_level, p.retain, v5 ? forwardable_properties(p.properties) : std::string_view());
      if constexpr (hooks::has_authorize_publish_v<hooks_type>) allowed = hooks_.authorize_publish(c.client_id(), *m);
    }
    if (!allowed) {
      std::lock_guard<mutex_type> lk(state_mutex_);
      ++stats_.publishes_denied;
    }

    switch (p.qos_level) {
      case codec::qos::at_most_once:
        if (allowed) publish_message(std::move(m), c.session(), true, &c);
        return;
      case codec::qos::at_least_once: {
        std::size_t n = allowed ? publish_message(std::move(m), c.session(), true, &c) : 0;
        codec::puback ack;
        ack.packet_id = p.packet_id;
        if (v5)
          ack.reason = !allowed  ? reason_code::not_authorized
                       : n == 0  ? reason_code::no_matching_subscribers
                                 : reason_code::success;
        return c.send(ack);
      }
      case codec::qos::exactly_once: {
        session_record* rec = c.session();
        bool fresh;
        bool over_limit = false;
        {
          session_guard lk(*this, *rec);
          fresh = rec->state.on_qos2_publish(p.packet_id);
          over_limit = fresh && rec->state.inbound_qos2_count() > opts_.receive_maximum;
        }
        // 5.0: more unreleased QoS 2 messages than the Receive Maximum we announced [MQTT-3.3.4-9].
        if (over_limit && v5) return violation(c, protocol_errc::receive_maximum_exceeded);
        std::size_t n = 0;
        // A re-sent PUBLISH (DUP) before PUBREL is acknowledged again but routed only once [MQTT-4.3.3-2].
        if (fresh && allowed) n = publish_message(std::move(m), rec, true, &c);
        codec::pubrec rec_ack;
        rec_ack.packet_id = p.packet_id;
        if (v5)
          rec_ack.reason = !allowed                 ? reason_code::not_authorized
                           : (fresh && n == 0)      ? reason_code::no_matching_subscribers
                                                    : reason_code::success;
        return c.send(rec_ack);
      }
    }
  }

  /// A session's own traffic (acknowledgements, its queue moving): the state lock shared, so
  /// publishers on other threads go on routing, and the session's lock, which they take to
  /// deliver to it. Anything that changes routes or sessions takes the state lock exclusively.
  struct session_guard {
    session_guard(broker& b, session_record& r) : state(b.state_mutex_), own(r.mutex) {}
    std::shared_lock<mutex_type> state;
    std::lock_guard<session_mutex_type> own;
  };

  void on_puback(connection_type& c, const codec::puback& a) {
    {
      session_guard lk(*this, *c.session());
      c.session()->state.on_puback(a.packet_id);
    }
    pump(c);
  }

  void on_pubrec(connection_type& c, const codec::pubrec& a) {
    bool known;
    {
      session_guard lk(*this, *c.session());
      known = c.session()->state.on_pubrec(a.packet_id);
    }
    if (static_cast<std::uint8_t>(a.reason) >= 0x80) {
      // 5.0: a PUBREC of 0x80 or more ends the exchange and frees the identifier (§4.3.3).
      session_guard lk(*this, *c.session());
      c.session()->state.on_pubcomp(a.packet_id);
      return;
    }
    codec::pubrel rel;
    rel.packet_id = a.packet_id;
    if (!known && c.version() == codec::protocol_version::v5) rel.reason = reason_code::packet_identifier_not_found;
    c.send(rel);
  }

  void on_pubrel(connection_type& c, const codec::pubrel& r) {
    bool known;
    {
      session_guard lk(*this, *c.session());
      known = c.session()->state.on_pubrel(r.packet_id);
    }
    // A repeated PUBREL gets PUBCOMP again; 5.0 marks an identifier it does not know.
    codec::pubcomp comp;
    comp.packet_id = r.packet_id;
    if (!known && c.version() == codec::protocol_version::v5) comp.reason = reason_code::packet_identifier_not_found;
    c.send(comp);
  }

  void on_pubcomp(connection_type& c, const codec::pubcomp& a) {
    {
      session_guard lk(*this, *c.session());
      c.session()->state.on_pubcomp(a.packet_id);
    }
    pump(c);
  }

  void on_subscribe(connection_type& c, const codec::subscribe& s) {
    const bool v5 = c.version() == codec::protocol_version::v5;
    std::uint32_t sub_id = 0;
    if (v5) {
      if (auto p = s.properties.find(codec::property_id::subscription_identifier)) sub_id = p->integer;
    }
    topic::limits lim;
    lim.max_levels = opts_.max_topic_levels;
    codec::suback ack;
    ack.packet_id = s.packet_id;  // [MQTT-3.8.4-2]
    ack.reasons.reserve(s.entries.size());
    session_record* rec = c.session();
    for (const codec::subscribe_entry& e : s.entries) {
      if (topic::validate_topic_filter(e.filter, lim)) {
        ack.reasons.push_back(v5 ? reason_code::topic_filter_invalid : reason_code::unspecified_error);
        continue;
      }
      if (topic::is_shared_filter(e.filter)) {
        // Shared subscriptions come with the 5.0 issue; refuse them plainly until then.
        ack.reasons.push_back(v5 ? reason_code::shared_subscriptions_not_supported : reason_code::unspecified_error);
        continue;
      }
      if constexpr (hooks::has_authorize_subscribe_v<hooks_type>) {
        if (!hooks_.authorize_subscribe(c.client_id(), e.filter, e.options.max_qos)) {
          ack.reasons.push_back(v5 ? reason_code::not_authorized : reason_code::unspecified_error);
          continue;
        }
      }
      {
        std::lock_guard<mutex_type> lk(state_mutex_);
        if (rec->conn.get() != &c) {
          // Taken over by a newer connection on another thread: only the owner may route to it.
          ack.reasons.push_back(reason_code::unspecified_error);
          continue;
        }
        const bool exists = rec->state.subscriptions().count(std::string(e.filter)) != 0;
        if (!exists && rec->state.subscriptions().size() >= opts_.max_subscriptions_per_client) {
          ack.reasons.push_back(v5 ? reason_code::quota_exceeded : reason_code::unspecified_error);
          continue;
        }
        router::subscription sub;
        sub.options = e.options;
        sub.identifier = sub_id;
        // [MQTT-3.8.4-3] an existing subscription to the same filter is replaced.
        const bool is_new = router_.subscribe(e.filter, static_cast<subscriber*>(rec), sub);
        rec->state.remember_subscription(e.filter, {e.options, sub_id});
        // The retained messages are taken under the same lock that adds the route: a message
        // published concurrently is then either live or retained for this subscriber, never
        // both [MQTT-4.3.3-2]. They go out after the SUBACK (pump() below), on every subscribe,
        // a repeated one included [MQTT-3.8.4-3].
        const auto rh = e.options.retain_handling;
        if (rh == codec::retain_handling_option::send || (rh == codec::retain_handling_option::send_if_new && is_new)) {
          retained_.match(e.filter, [&](const message_ptr& m) {
            session::outgoing o;
            o.msg = m;
            o.qos_level = std::min(m->qos_level(), e.options.max_qos);
            o.retain = true;  // [MQTT-3.3.1-8]
            if (sub_id != 0) o.subscription_ids.push_back(sub_id);
            rec->more().retained_backlog.push_back(std::move(o));
          });
        }
      }
      const codec::qos granted = e.options.max_qos;  // all three QoS levels are supported
      ack.reasons.push_back(static_cast<reason_code>(granted));
      if constexpr (hooks::has_on_subscribe_v<hooks_type>) hooks_.on_subscribe(c.client_id(), e.filter, granted);
    }
    c.send(ack);
    pump(c);
  }

  void on_unsubscribe(connection_type& c, const codec::unsubscribe& u) {
    codec::unsuback ack;
    ack.packet_id = u.packet_id;  // [MQTT-3.10.4-4]
    session_record* rec = c.session();
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      const bool owner = rec->conn.get() == &c;  // see on_subscribe
      for (std::string_view f : u.filters) {
        const bool existed = owner && rec->state.forget_subscription(f);
        if (existed) router_.unsubscribe(f, static_cast<subscriber*>(rec));
        ack.reasons.push_back(existed ? reason_code::success : reason_code::no_subscription_existed);
      }
    }
    c.send(ack);
  }

  void on_disconnect(connection_type& c, const codec::disconnect& d) {
    // [MQTT-3.14.4-3] a DISCONNECT discards the will, unless 5.0 asks for it with 0x04.
    const bool keep_will = d.reason == reason_code::disconnect_with_will_message;
    if (c.version() == codec::protocol_version::v5) {
      if (auto p = d.properties.find(codec::property_id::session_expiry_interval)) {
        session_record* rec = c.session();
        bool extends_ended_session;
        {
          std::lock_guard<mutex_type> lk(state_mutex_);
          // [MQTT-3.14.2-2] a session that was to end with the connection cannot be extended here.
          extends_ended_session = rec->expiry.count() == 0 && p->integer != 0;
          if (!extends_ended_session) rec->expiry = stored_expiry(std::chrono::seconds(p->integer));
        }
        if (extends_ended_session) return violation(c, protocol_errc::invalid_property_value);
      }
    }
    if (!keep_will) c.will_ = message_ptr();
    c.close(reason_code::normal_disconnection, false, !keep_will);
  }

  // ---- routing

  /// Routes `m` to every matching subscriber; `from` is the publishing session (No Local), and
  /// `reader` the connection it came from, paced when a subscriber is behind.
  std::size_t publish_message(message_ptr m, session_record* from, bool count = true, connection_type* reader = nullptr) {
    if constexpr (hooks::has_intercept_v<hooks_type>) {
      hooks_.intercept(from ? std::string_view(from->state.client_id()) : std::string_view(), m);
      if (!m) return 0;
    }
    if (count) hot_.received.fetch_add(1);
    std::size_t n = 0;
    // In-process handlers run after routing, outside the lock: a handler may publish or
    // subscribe again without re-entering the router mid-route. Their list is one vector per
    // thread, kept between publishes so that none allocates: a publish from inside a handler
    // appends past this call's part and takes its own part off again before it returns.
    static thread_local std::vector<std::shared_ptr<const local_handler>> local;
    const std::size_t first = local.size();
    struct pop_on_exit {
      std::vector<std::shared_ptr<const local_handler>>& list;
      std::size_t keep;
      ~pop_on_exit() { list.resize(keep); }
    } pop{local, first};
    const subscriber* publisher = from;
    auto on_match = [&](const subscriber* s, const router::delivery& d) {
      ++n;
      if (s->kind == subscriber_kind::local) {
        local.push_back(static_cast<const local_subscriber*>(s)->handler);  // counted below, at once
      } else {
        deliver(static_cast<session_record*>(const_cast<subscriber*>(s)), m, d, reader);
      }
    };
    if (m->retain() || !locking_type::thread_safe) {
      // A retained message is stored and routed in one exclusive section, the one on_subscribe
      // takes for its route and its retained snapshot: a subscriber gets it once, live or retained.
      std::lock_guard<mutex_type> lk(state_mutex_);
      if (m->retain()) {
        // [MQTT-3.3.1-5] store, or with an empty payload delete [MQTT-3.3.1-10], the retained message.
        if (m->payload().empty() || retained_.size() < opts_.max_retained_messages || retained_.find(m->topic()))
          retained_.set(m);
      }
      router_.route(m->topic(), publisher ? &publisher : nullptr, on_match);
    } else {
      // Routing only reads the subscriptions: publishers on several threads route at once, each
      // with its own scratch buffers, and meet only on a receiving session's own lock.
      static thread_local typename router_type::route_scratch scratch;
      std::shared_lock<mutex_type> lk(state_mutex_);
      router_.route(m->topic(), publisher ? &publisher : nullptr, scratch, on_match);
    }
    const std::size_t end = local.size();
    if (end != first) hot_.sent.fetch_add(end - first);
    // By index and through the handler object itself: a nested publish may reallocate the
    // vector, but the shared_ptr keeps the handler where it is until `pop` runs.
    for (std::size_t i = first; i < end; ++i) {
      const local_handler& h = *local[i];
      h(m);
    }
    return n;
  }

  /// Offers `m` to a client session. state_mutex_ held, shared or exclusive; the session's own
  /// lock serialises publishers that reach the same session from several threads.
  void deliver(session_record* rec, const message_ptr& m, const router::delivery& d, connection_type* reader) {
    std::lock_guard<session_mutex_type> session_lock(rec->mutex);
    session::outgoing o;
    o.msg = m;
    o.qos_level = std::min(m->qos_level(), d.qos_level);  // [MQTT-3.8.4-8] min(publish, granted)
    o.retain = d.retain_as_published && m->retain();  // 3.1.1 [MQTT-3.3.1-9]; 5.0 Retain As Published [MQTT-3.3.1-12]
    for (std::uint32_t id : d.identifiers) o.subscription_ids.push_back(id);
    connection_type* c = rec->conn.get();
    // A client that stopped reading loses QoS 0 messages, not everyone's memory.
    if (o.qos_level == codec::qos::at_most_once && c != nullptr && opts_.max_queued_bytes != 0 &&
        c->backlog_bytes() + outbox_bytes(*rec) > opts_.max_queued_bytes) {
      hot_.dropped.fetch_add(1);
      return;
    }
    const auto adm = rec->state.offer(o, c != nullptr);
    if (adm == session::admission::dropped) {
      hot_.dropped.fetch_add(1);
      return;
    }
    if (adm == session::admission::send) {
      hot_.sent.fetch_add(1);
      send_to(rec, o);
    }
    if (reader != nullptr && !reader->pace_target_ && c != nullptr && c != reader &&
        behind(*rec, *c, reader->last_progress(), 1)) {
      // The reader stops after this packet (see connection::take_input) and waits for this client.
      reader->pace_target_ = detail::ref_ptr<session_record>(rec);
    }
  }

  /// Whether a connected session's client is more than the pacing thresholds behind (divided by
  /// `divisor`: 2 for the low-water mark) and still moving. rec->mutex held.
  bool behind(const session_record& rec, const connection_type& c, clock::time_point now, std::size_t divisor) const {
    if (!opts_.pace_publishers) return false;
    const std::size_t backlog = c.backlog_bytes() + outbox_bytes(rec);
    if (backlog <= pacing_bytes_ / divisor && rec.state.queued_count() <= pacing_messages_ / divisor) return false;
    // A client that has neither read nor sent anything for a while is stuck, not slow: pausing
    // everyone for it would let one client stall the others.
    return now - c.last_progress() < opts_.stuck_client_timeout;
  }

  /// After a packet reached a session that is behind: pauses `reader` on it, unless it caught up
  /// meanwhile. True when paused. On the reader's executor.
  bool pause_reader(connection_type& reader) {
    detail::ref_ptr<session_record> target = std::move(reader.pace_target_);
    session_guard lk(*this, *target);
    const connection_type* c = target->conn.get();
    if (c == nullptr || !behind(*target, *c, reader.last_progress(), 1)) return false;
    reader.paused_.store(true, std::memory_order_relaxed);
    reader.restart_deadline(reader.last_progress());  // when `target` will count as stuck
    target->more().paced.push_back(reader.self());
    target->has_paced.store(true, std::memory_order_relaxed);
    hot_.pauses.fetch_add(1);
    return true;
  }

  /// A write to `c` completed or its session's queue moved: resumes the readers paced on it once
  /// it is half-way back under the thresholds. On c's executor.
  void on_write_progress(connection_type& c) {
    session_record* rec = c.session();
    if (rec == nullptr || !rec->has_paced.load(std::memory_order_relaxed)) return;
    std::vector<detail::ref_ptr<connection_type>> wake;
    {
      session_guard lk(*this, *rec);
      if (rec->conn.get() == &c && behind(*rec, c, clock::now(), 2)) return;
      wake.swap(rec->more().paced);
      rec->has_paced.store(false, std::memory_order_relaxed);
    }
    resume_all(wake);
  }

  static void resume_all(std::vector<detail::ref_ptr<connection_type>>& readers) {
    for (auto& r : readers) {
      auto ex = r->get_executor();
      asio::post(ex, [r = std::move(r)] { r->resume(); });
    }
    readers.clear();
  }

  /// Payload bytes admitted for the connection's strand and not yet taken by it. state_mutex_ held.
  static std::size_t outbox_bytes(const session_record& rec) noexcept {
    if constexpr (locking_type::thread_safe)
      return rec.outbox.bytes;
    else
      return 0;
  }

  static void clear_outbox(session_record& rec) noexcept {
    if constexpr (locking_type::thread_safe) {
      rec.outbox.items.clear();
      rec.outbox.bytes = 0;
      rec.outbox.pump_scheduled = false;
    }
  }

  /// Hands an admitted PUBLISH to the session's connection. state_mutex_ held.
  void send_to(session_record* rec, session::outgoing& o) {
    if constexpr (locking_type::thread_safe) {
      // Another thread owns the connection: leave the message in the session's outbox and have
      // the connection's strand pump it. Everything admitted goes out through the outbox, in
      // admission order, so a message admitted later on the connection's own strand (pump())
      // can never overtake one admitted earlier here [MQTT-4.6.0-2].
      rec->outbox.bytes += o.msg->payload().size();
      rec->outbox.items.push_back(std::move(o));
      if (!rec->outbox.pump_scheduled) {
        rec->outbox.pump_scheduled = true;
        auto owner = rec->conn;
        asio::post(owner->get_executor(), [this, owner] { pump(*owner); });
      }
    } else {
      rec->conn->send_publish(o);
    }
  }

  /// Moves queued and retained messages into flight as the window and the socket allow.
  void pump(connection_type& c) {
    typename connection_type::flush_scope batch;  // one write for all it sends
    fill(c);
    on_write_progress(c);
  }

  void fill(connection_type& c) {
    session_record* rec = c.session();
    if (rec == nullptr || !c.is_open()) return;
    session_guard lk(*this, *rec);
    if (rec->conn.get() != &c) return;  // taken over since the pump was posted
    if constexpr (locking_type::thread_safe) {
      for (const session::outgoing& o : rec->outbox.items) c.send_publish(o);
      clear_outbox(*rec);
    }
    while (auto o = rec->state.next_ready()) {
      hot_.sent.fetch_add(1);
      c.send_publish(*o);
    }
    // Retained messages go out while the socket keeps up and the window has room; the rest wait
    // for acknowledgements or for the write to drain (on_connection_drained).
    while (rec->has_retained_backlog() && c.backlog_bytes() < write_pacing_bytes) {
      auto& backlog = rec->extras->retained_backlog;
      if (backlog.front().qos_level != codec::qos::at_most_once &&
          rec->state.inflight_count() >= rec->state.session_limits().max_inflight)
        break;
      session::outgoing o = std::move(backlog.front());
      backlog.pop_front();
      const auto adm = rec->state.offer(o, true);
      if (adm == session::admission::send) {
        hot_.sent.fetch_add(1);
        c.send_publish(o);
      }
    }
  }

  void on_connection_drained(connection_type& c) { pump(c); }

  void on_connection_closed(connection_type& c, bool graceful) {
    detail::ref_ptr<connection_type> self = c.self();
    message_ptr will = std::move(c.will_);
    detail::ref_ptr<session_record> rec = std::move(c.session_);
    std::vector<detail::ref_ptr<connection_type>> paced;
    if (graceful || stopping_) will = message_ptr();
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      connections_.erase(c);
      if (c.taken_over_ && c.will_delay_.count() != 0) {
        // [MQTT-3.1.3-9] the session already has its new connection, within any Will Delay.
        will = message_ptr();
      }
      // A connection that lost its session to a takeover leaves the session alone.
      if (rec && rec->conn.get() == &c) {
        {
          // Readers waiting for this client go on: it is gone, and offline queues have limits.
          std::lock_guard<session_mutex_type> session_lock(rec->mutex);
          if (rec->extras) paced.swap(rec->extras->paced);
          rec->has_paced.store(false, std::memory_order_relaxed);
        }
        rec->conn.reset();
        if (rec->extras) rec->extras->retained_backlog.clear();
        clear_outbox(*rec);
        if (rec->expiry.count() == 0) {
          remove_session(*rec);  // the session ends now, so a delayed will goes out now too
        } else {
          rec->expires = clock::now() + rec->expiry;
          if (will && c.will_delay_.count() != 0) {
            // [MQTT-3.1.2-8] 5.0: after the Will Delay Interval or when the session ends,
            // whichever comes first.
            delay_will(*rec, std::move(will), std::min<std::chrono::seconds>(c.will_delay_, rec->expiry));
          }
        }
      }
      if (stopping_ && connections_.empty()) complete_stop();
    }
    resume_all(paced);
    if (c.connected_ && rec) {
      if constexpr (hooks::has_on_disconnect_v<hooks_type>) hooks_.on_disconnect(rec->state.client_id(), graceful);
    }
    // [MQTT-3.1.2-8] the will goes out when the connection ends without DISCONNECT.
    if (will) publish_message(std::move(will), nullptr);
  }

  /// Holds a will until `delay` passes; a reconnect or the session's end comes first to cancel
  /// or publish it. state_mutex_ held.
  void delay_will(session_record& rec, message_ptr will, std::chrono::seconds delay) {
    session_extras& x = rec.more();
    x.pending_will = std::move(will);
    const std::uint64_t generation = ++x.will_generation;
    if (!x.will_timer) x.will_timer = std::make_unique<asio::steady_timer>(control_ex_);
    x.will_timer->expires_after(delay);
    x.will_timer->async_wait([this, id = rec.state.client_id(), generation](std::error_code ec) {
      if (ec) return;  // cancelled, or the session is gone with its timer
      message_ptr due;
      {
        std::lock_guard<mutex_type> lk(state_mutex_);
        auto it = sessions_.find(id);
        if (it == sessions_.end() || !it->second->extras || it->second->extras->will_generation != generation) return;
        due = std::move(it->second->extras->pending_will);
      }
      if (due && !stopping_) publish_message(std::move(due), nullptr);
    });
  }

  /// Removes a session and its subscriptions. state_mutex_ held.
  void remove_session(session_record& rec) {
    drop_session_subscriptions(rec);
    sessions_.erase(rec.state.client_id());
  }

  void drop_session_subscriptions(session_record& rec) {
    for (const auto& s : rec.state.subscriptions()) router_.unsubscribe(s.first, static_cast<subscriber*>(&rec));
    rec.state.clear_subscriptions();
  }

  /// The options' session limits, one copy that every session refers to.
  static session::limits make_session_limits(const broker_options& o) {
    session::limits l;
    l.max_inflight = o.max_inflight;
    l.max_queued_messages = o.max_queued_messages;
    l.max_queued_bytes = o.max_queued_bytes;
    l.drop_oldest = o.queue_overflow == overflow_policy::drop_oldest;
    l.queue_qos0_offline = o.queue_qos0_offline;
    return l;
  }

  /// Session Expiry as a session keeps it: 32 bits, as in 5.0, where 0xFFFFFFFF means never.
  static std::chrono::duration<std::uint32_t> stored_expiry(std::chrono::seconds s) noexcept {
    return std::chrono::duration<std::uint32_t>(static_cast<std::uint32_t>(std::min<std::int64_t>(s.count(), 0xFFFFFFFF)));
  }

  /// A client identifier no session uses. state_mutex_ held.
  std::string make_client_id() {
    for (;;) {
      std::string id = "mqttbroker-" + std::to_string(++next_client_number_);
      if (sessions_.find(id) == sessions_.end()) return id;  // a client may have chosen it already
    }
  }

  // ---- the sweep: connection deadlines, stuck pauses, session expiry, $SYS

  /// Twice a second: connection deadlines (CONNECT timeout, Keep Alive) are met within half a
  /// second, with one timer for the broker rather than one per connection.
  static constexpr std::chrono::milliseconds sweep_interval{500};

  void arm_sweep() {
    sweep_timer_.expires_after(sweep_interval);
    sweep_timer_.async_wait([this](std::error_code ec) {
      if (ec || stopping_) return;
      sweep_connections();
      if (++sweep_ticks_ % 2 == 0) {
        sweep_expired_sessions();
        if (opts_.sys_interval.count() != 0 && ++seconds_since_sys_ >= opts_.sys_interval.count()) {
          seconds_since_sys_ = 0;
          publish_sys();
        }
      }
      arm_sweep();
    });
  }

  /// Mosquitto's familiar $SYS/broker/... figures, retained, so a monitor sees them at once.
  /// Only filters that name $SYS see them [MQTT-4.7.2-1].
  void publish_sys() {
    const broker_stats st = stats();
    const auto uptime = std::chrono::duration_cast<std::chrono::seconds>(clock::now() - started_at_).count();
    const std::pair<const char*, std::string> figures[] = {
        {"$SYS/broker/version",
         "mqttbroker " + std::to_string(MQTTBROKER_VERSION_MAJOR) + "." + std::to_string(MQTTBROKER_VERSION_MINOR) + "." +
             std::to_string(MQTTBROKER_VERSION_PATCH)},
        {"$SYS/broker/uptime", std::to_string(uptime) + " seconds"},
        {"$SYS/broker/clients/connected", std::to_string(st.connections)},
        {"$SYS/broker/clients/total", std::to_string(st.sessions)},
        {"$SYS/broker/messages/received", std::to_string(st.messages_received)},
        {"$SYS/broker/messages/sent", std::to_string(st.messages_sent)},
        {"$SYS/broker/messages/dropped", std::to_string(st.messages_dropped)},
        {"$SYS/broker/retained messages/count", std::to_string(st.retained_messages)},
    };
    for (const auto& f : figures)
      publish_message(message::make(f.first, f.second, codec::qos::at_most_once, true), nullptr, false);
  }

  /// Connections past their deadline check it on their own executor: the CONNECT timeout, Keep
  /// Alive, or a paused reader's wait for a subscriber that turned out to be stuck.
  void sweep_connections() {
    const auto now = clock::now();
    std::vector<detail::ref_ptr<connection_type>> due;
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      connections_.for_each([&](connection_type& c) {
        if (c.deadline_passed(now)) due.push_back(c.self());
      });
    }
    for (auto& c : due) {
      auto ex = c->get_executor();
      asio::post(ex, [c = std::move(c)] { c->check_deadline(); });
    }
  }

  void sweep_expired_sessions() {
    const auto now = clock::now();
    std::vector<message_ptr> due_wills;
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      expire_sessions(now, due_wills);
    }
    for (auto& w : due_wills) publish_message(std::move(w), nullptr);
  }

  /// state_mutex_ held.
  void expire_sessions(clock::time_point now, std::vector<message_ptr>& due_wills) {
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      session_record& r = *it->second;
      if (!r.conn && r.expires <= now && r.expiry.count() != 0xFFFFFFFF) {
        if (r.extras && r.extras->pending_will)
          due_wills.push_back(std::move(r.extras->pending_will));  // the session ends
        drop_session_subscriptions(r);
        it = sessions_.erase(it);
        ++stats_.sessions_expired;
      } else {
        ++it;
      }
    }
  }

  // ---- stopping

  template <class Handler>
  void do_stop(Handler h) {
    stopping_ = true;
    started_ = false;
    std::error_code ignored;
    sweep_timer_.cancel();
    for (auto& a : acceptors_) a->close(ignored);
    std::vector<detail::ref_ptr<connection_type>> conns;
    {
      std::lock_guard<mutex_type> lk(state_mutex_);
      stop_handler_ = [h = std::move(h)]() mutable { h(std::error_code()); };
      // Pending timers would keep the host's io_context busy after the stop.
      for (auto& entry : sessions_)
        if (entry.second->extras && entry.second->extras->will_timer) entry.second->extras->will_timer->cancel();
      if (connections_.empty()) {
        complete_stop();
        return;
      }
      connections_.for_each([&](connection_type& c) { conns.push_back(c.self()); });
    }
    for (auto& c : conns)
      asio::dispatch(c->get_executor(), [c] { c->close(reason_code::server_shutting_down, true, true); });
  }

  /// state_mutex_ held.
  void complete_stop() {
    if (!stop_handler_) return;
    auto h = std::move(stop_handler_);
    stop_handler_ = nullptr;
    asio::post(ex_, std::move(h));
  }

  void count_protocol_error() {
    std::lock_guard<mutex_type> lk(state_mutex_);
    ++stats_.protocol_errors;
  }
  void count_connect_timeout() {
    std::lock_guard<mutex_type> lk(state_mutex_);
    ++stats_.connect_timeouts;
  }
  void count_keep_alive_timeout() {
    std::lock_guard<mutex_type> lk(state_mutex_);
    ++stats_.keep_alive_timeouts;
  }

  static constexpr std::size_t write_pacing_bytes = 64 * 1024;

  asio::any_io_executor ex_;
  stream_executor_type stream_ex_;
  asio::any_io_executor control_ex_;  // the locking policy's strand (locking::shared: an asio::strand)
  broker_options opts_;
  std::size_t pacing_bytes_ = 0;     // pacing thresholds, below the queue limits
  std::size_t pacing_messages_ = 0;
  session::limits session_limits_;  // before the sessions, which refer to it
  MQTTBROKER_NO_UNIQUE_ADDRESS hooks_type hooks_;
  MQTTBROKER_NO_UNIQUE_ADDRESS mutable mutex_type state_mutex_;
  std::vector<std::unique_ptr<acceptor_type>> acceptors_;
  // Every accepted connection until it closes, and every session by client identifier (the key
  // views the record's own copy of it): an element each, no node or key copy per client.
  detail::owning_list<connection_type> connections_;
  std::unordered_map<std::string_view, detail::ref_ptr<session_record>> sessions_;
  std::unordered_map<std::uint64_t, std::unique_ptr<local_subscriber>> local_subs_;
  using router_type = router::subscription_router<const subscriber*>;
  router_type router_;
  router::retained_store retained_;
  asio::steady_timer sweep_timer_;
  std::function<void()> stop_handler_;
  broker_stats stats_;  // state_mutex_, but for the three counters below
  /// Counted on the routing path, which may hold the state lock only shared.
  struct hot_counters {
    typename locking_type::template counter_type<std::uint64_t> received{}, sent{}, dropped{}, pauses{};
  } hot_;
  std::uint64_t next_local_id_ = 0;
  std::uint64_t next_client_number_ = 0;  // state_mutex_
  bool started_ = false;                  // control_ex_
  clock::time_point started_at_{};        // control_ex_
  std::int64_t seconds_since_sys_ = 0;    // control_ex_
  std::uint64_t sweep_ticks_ = 0;         // control_ex_
  std::atomic<bool> stopping_{false};     // read by connections on any thread
};

/// The broker for a host that runs its io_context on several threads.
struct mt_policies : default_policies {
  using locking = ::mqttbroker::locking::shared;
};
using broker_mt = broker<mt_policies>;

MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_BROKER_HPP
