#ifndef MQTTBROKER_CLUSTER_NATS_HPP
#define MQTTBROKER_CLUSTER_NATS_HPP

// cluster::nats: several brokers act as one over NATS (nats.c; CMake target mqttbroker::nats).
// A cluster policy (cluster/contract.hpp): `struct my_policies : default_policies { using cluster
// = cluster::nats; };`, then broker.cluster().configure(...) and broker.connect_cluster().
//
// Each message that enters on this node goes out once, on the subject of its topic
// (cluster::subject_map); each node subscribes to the subjects of its own clients' filters, so
// NATS carries a message only to nodes that want it. Two connections: `routes` (no echo: a
// node never gets its own messages back) publishes and holds the plain subscriptions; `groups`
// holds a queue subscription per shared group, so that one member of the whole cluster, this
// node's included, gets each message. A node subscribed to overlapping filters ("a/#" and
// "a/b") gets a message once per matching subscription: each message carries its origin's name,
// a number for the origin's run and a sequence number, and repeats are dropped.
//
// Client identifiers are owned by one node at a time (claim(), cluster/contract.hpp): a
// JetStream key-value bucket `{prefix}_sessions` maps each to its node, changed by
// compare-and-set. A node that takes a client over asks the previous owner, on the subject
// `{prefix}.own.{node}`, for the session; the owner closes the connection (0x8E) and answers
// with the session in one or more messages.
//
// QoS 0 crosses on NATS's core delivery: at most once, and a message in flight between nodes when
// a connection breaks is lost (counted). QoS 1 and 2 cross through a JetStream stream
// (`{prefix}_messages`, on the subjects `{prefix}.q.…`), from which each node reads through a
// consumer per subject of its filters (a shared group's consumer is the group's, on every node):
// a node acknowledges a message to JetStream once the broker has it, so one that a broken
// connection or a restarted NATS server kept from the node comes again (at least once; the
// repeats that the sequence numbers can tell apart are dropped). The stream keeps a message only
// while some consumer still needs it, and not past `message_max_age` nor `stream_max_bytes`.
// With the storage policy cluster::nats_sessions (at the end of this header), persistent
// sessions outlive their node: their expiry and subscriptions are kept in their owners' entries,
// their QoS 1/2 subscriptions read through JetStream consumers of the session's own, and a
// publisher's PUBACK waits until JetStream has the message.
// I/O runs on the broker's executor (cluster::nats_event_loop); nats.c's own threads are its
// timers, its connects, one shared message delivery thread (global message delivery), and the
// reader and flusher of the connection that holds the buckets and the consumers.

#include <mqttbroker/cluster/contract.hpp>
#include <mqttbroker/cluster/handover.hpp>
#include <mqttbroker/cluster/nats_loop.hpp>
#include <mqttbroker/cluster/subjects.hpp>
#include <mqttbroker/codec/properties.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/message.hpp>
#include <mqttbroker/topic/shared.hpp>
#include <mqttbroker/topic/validate.hpp>

#include <asio/any_io_executor.hpp>

#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace cluster {

/// nats.c's natsStatus as a std::error_code.
inline const std::error_category& nats_category() noexcept {
  struct category final : std::error_category {
    const char* name() const noexcept override { return "mqttbroker.nats"; }
    std::string message(int v) const override { return natsStatus_GetText(static_cast<natsStatus>(v)); }
  };
  static const category c;
  return c;
}
inline std::error_code make_nats_error(natsStatus s) noexcept {
  return s == NATS_OK ? std::error_code() : std::error_code(static_cast<int>(s), nats_category());
}

struct nats_options {
  /// NATS servers, "nats://host:port"; nats.c tries them in turn and reconnects to any.
  std::vector<std::string> servers{"nats://127.0.0.1:4222"};
  /// This node's name in the cluster, unique within it (its messages' origin).
  std::string node = "node";
  /// The subjects' prefix: clusters sharing a NATS system keep apart by it.
  std::string prefix = "mqtt";
  /// Messages a subscription may hold before nats.c drops them (a slow node; counted).
  int max_pending_messages = 65536;
  std::chrono::milliseconds reconnect_wait{250};
  /// Retained messages in a JetStream key-value bucket (`{prefix}_retained`, dots as `_`), which
  /// every node mirrors into its own retained store: a retained message set on one node is seen
  /// on subscribe at any other, and outlives the nodes. Needs JetStream on the NATS servers
  /// (nats-server -js).
  bool retained = true;
  /// The bucket's copies across NATS servers (JetStream replicas; 3 for a three-server cluster).
  int replicas = 1;
  /// How long start() waits for JetStream to be ready (a new NATS cluster elects its leader).
  std::chrono::milliseconds jetstream_wait{15000};
  /// Client identifiers owned by one node at a time, in the bucket `{prefix}_sessions` (needs
  /// JetStream): a client that connects to another node takes its session there.
  bool own_clients = true;
  /// How long a claim waits for the previous owner's session; past it (a node that is gone) the
  /// client gets a new session.
  std::chrono::milliseconds handover_wait{2000};
  /// The largest session a node takes over (bytes as sent); a larger one is not taken (counted).
  std::size_t max_handover_bytes = std::size_t{256} << 20;
  /// Threads that run claims (each waits on JetStream's round trips); one client's claims run
  /// one at a time, in order.
  int claim_threads = 4;
  /// QoS 1 and 2 between nodes through JetStream (the stream `{prefix}_messages`, needs
  /// nats-server -js). false: on NATS's core delivery like QoS 0, at most once between nodes.
  bool jetstream_delivery = true;
  /// How long the stream keeps a message that a consumer has not acknowledged, and the bytes it
  /// keeps at most (the oldest go first past it).
  std::chrono::seconds message_max_age{3600};
  std::int64_t stream_max_bytes = std::int64_t{1} << 30;
  /// How long JetStream waits for a node's acknowledgement before it sends a message again.
  std::chrono::milliseconds ack_wait{5000};
  /// How long JetStream keeps the consumers of a node that went away (killed, or cut off) before
  /// it deletes them and what only they still needed.
  std::chrono::seconds consumer_inactive{120};
  /// How often JetStream tells a node's idle consumers that it is there. When nats.c misses that
  /// while the node is connected, and JetStream no longer has the consumer (it deleted it while
  /// the node was cut off longer than consumer_inactive, or an operator did), it is made again.
  /// A shared group's consumer has none (JetStream has no heartbeats for queue groups): it is
  /// made again only when the group's filter comes again.
  std::chrono::milliseconds consumer_heartbeat{5000};
  /// With nats_sessions: a kept session's QoS 1/2 messages each node holds for it at most
  /// (JetStream keeps the rest until it has room).
  int session_max_pending = 1024;
  /// Latency against CPU. false: nats.c's flusher thread gathers what is published for 1 ms
  /// before it writes, so at a low rate every message waits up to a millisecond, and many go in
  /// one write. true (nats.c's SendAsap): each write event of the executor writes what the
  /// handler before it published, and there is no flusher thread. bench/cluster at 20,000 msg/s:
  /// the hop adds 0.30 ms at the median instead of 0.84, for 1.7 times the CPU per message.
  bool send_asap = false;
};

/// What went through the cluster, since start().
struct nats_statistics {
  std::uint64_t published = 0;       // messages sent to the other nodes
  std::uint64_t publish_failed = 0;  // not sent: no connection and its reconnect buffer full, too large
  std::uint64_t stream_failed = 0;   // QoS 1/2 sent, but JetStream did not store it (no stream, full)
  std::uint64_t received = 0;        // messages from other nodes handed to the broker
  std::uint64_t repeats = 0;         // the same message again through another of this node's filters
  std::uint64_t malformed = 0;       // not a message of ours (another program on the subjects)
  std::uint64_t dropped = 0;         // dropped by nats.c for a slow node (a subscription's pending limit)
  std::uint64_t disconnects = 0, reconnects = 0;
  std::uint64_t retained_stored = 0;   // retained messages (and clearings) written to the bucket
  std::uint64_t retained_failed = 0;   // not written (JetStream unavailable, a topic too long for a key)
  std::uint64_t retained_loaded = 0;   // bucket entries taken into this node's retained store
  std::uint64_t claims = 0;           // clients this node took ownership of
  std::uint64_t claims_failed = 0;    // connections refused: the bucket could not be changed
  std::uint64_t sessions_taken = 0;   // sessions another node handed to this one
  std::uint64_t sessions_given = 0;   // sessions this node handed to another
  std::uint64_t handovers_lost = 0;   // a previous owner that did not answer in time (or too large)
  std::uint64_t sessions_restored = 0;  // of those, sessions resumed from what their owner's entry kept
  std::uint64_t sessions_expired = 0;   // not resumed: their client had left longer than their expiry ago
  std::uint64_t session_writes = 0;          // persistent sessions' states written to their owners' entries
  std::uint64_t session_writes_failed = 0;   // not written (JetStream away; another node owned it by then)
  std::size_t sessions_known = 0;  // clients this node owns whose entry it writes (nats_sessions)
  std::uint64_t session_messages_done = 0;     // fed to sessions here and acknowledged to JetStream
  std::uint64_t session_messages_repeated = 0;  // sent again by JetStream, not delivered again
  std::size_t session_messages_held = 0;       // fed to sessions here, not done with yet
  std::size_t subscriptions = 0;  // NATS subscriptions held, JetStream consumers' included
  std::size_t consumers_missing = 0;  // JetStream consumers wanted but not made yet (tried again)
  std::uint64_t consumers_remade = 0;  // consumers JetStream had lost, made again
  bool connected = false;         // both of the routing connections are up now
};

class nats {
 public:
  nats() = default;
  explicit nats(nats_options o) { configure(std::move(o)); }
  nats(const nats&) = delete;
  nats& operator=(const nats&) = delete;
  ~nats() { stop(); }

  /// Before start().
  void configure(nats_options o) { st_->opts = std::move(o); }
  const nats_options& options() const noexcept { return st_->opts; }

  /// Connects both connections (blocking until connected, or failing: call it before the
  /// io_context runs, or off its threads) and subscribes to the filters the broker already has.
  std::error_code start(asio::any_io_executor ex, inbound in) { return st_->start(std::move(ex), std::move(in)); }
  /// Leaves the cluster; no call to the inbound handlers once it returns.
  void stop() { st_->stop(); }
  /// Waits until the NATS servers have what this node sent so far (its subscriptions, its
  /// JetStream consumers and what it writes to the buckets too): a round trip on each connection. Blocking: never on the
  /// io_context's threads.
  std::error_code flush(std::chrono::milliseconds timeout) { return st_->flush(timeout); }

  // ---- the cluster contract

  /// True when the message went to JetStream (QoS 1/2): with a nats_sessions store, its
  /// publisher's acknowledgement waits until JetStream has it (the store's commits).
  bool publish(const message_ptr& m) { return st_->publish(*m); }
  void interest(std::string_view filter, bool present) { st_->interest(filter, present); }
  void claim(std::string_view client_id, bool clean_start, claim_reply reply) {
    st_->claim(client_id, clean_start, std::move(reply));
  }

  /// Whether kept sessions' QoS 1/2 subscriptions are fed through their own JetStream consumers:
  /// with a nats_sessions store attached, JetStream delivery and client ownership on.
  bool feeds_sessions() const noexcept { return st_->feeds_sessions(); }
  void not_delivered(const message_ptr& m) { st_->fed_finished(m.get(), true); }

  nats_statistics statistics() const { return st_->statistics(); }

 private:
  friend class nats_sessions;
  /// Everything nats.c's callbacks reach: it lives as long as the object.
  struct state {
    nats_options opts;
    subject_map map{"mqtt"};
    std::unique_ptr<nats_event_loop> loop;
    natsOptions* nopts_routes = nullptr;
    natsOptions* nopts_groups = nullptr;
    natsOptions* nopts_bucket = nullptr;
    natsConnection* routes = nullptr;
    natsConnection* groups = nullptr;
    natsConnection* bucket = nullptr;
    std::atomic<natsConnection*> publishing{nullptr};  // `routes` once started: publish() reads it
    // QoS 1/2 between nodes (opts.jetstream_delivery): published through `js_routes` (on
    // `routes`, without waiting for JetStream's answers, which come on nats.c's delivery thread),
    // read through consumers on `bucket` that `consumer_thread` makes and deletes (their calls
    // block), in the order the filters came and went.
    subject_map stream_map{"mqtt.q"};
    std::string stream_name;
    jsCtx* js_routes = nullptr;
    std::atomic<jsCtx*> streaming{nullptr};  // `js_routes` once started: publish() reads it
    jsPubOptions stream_publish{};           // with the wait for JetStream's answer
    std::atomic<std::int64_t> stream_pending{0};      // published, JetStream's answer not yet in
    // Commits of a nats_sessions store: ticket N is done once JetStream answered the first N
    // publishes (it answers in the order they went).
    std::mutex stream_tickets_mutex;  // what follows
    std::uint64_t stream_sent = 0, stream_answered_count = 0;
    std::function<void(std::uint64_t)> committed_handler;
    std::function<void(std::uint64_t, std::uint64_t, std::error_code)> commit_failed_handler;
    std::thread consumer_thread;
    struct consumer_change {
      std::string filter;
      bool present;
      natsSubscription* lost = nullptr;  // instead: this consumer's heartbeats stopped
      // A session's consumers instead (feeds): made or bound (present), deleted, or let go of
      // for another node to bind (`unbind`); all of the client's when `filter` is empty.
      std::string client{};
      bool unbind = false;
    };
    std::mutex consumers_mutex;  // what follows
    std::condition_variable consumers_ready, consumers_idle;
    std::deque<consumer_change> consumer_changes;
    bool consumers_busy = false, consumers_stopping = false;
    std::size_t consumers_missing = 0;
    // consumer_thread's: each filter's consumers, and filters whose consumers could not be made.
    std::map<std::string, std::vector<natsSubscription*>, std::less<>> consumers;
    std::vector<std::string> missing;
    std::uint64_t next_consumer = 0;
    std::atomic<std::uint64_t> consumers_remade{0};
    std::atomic<std::size_t> consumer_count{0};  // subscriptions in `consumers`
    // Kept sessions' own consumers (nats_sessions feeds them): consumer_thread's, per client and
    // filter; those that could not be made or bound yet (another node still bound) are retried.
    std::map<std::pair<std::string, std::string>, std::vector<natsSubscription*>> session_consumers;
    std::vector<std::pair<std::string, std::string>> session_missing;
    std::map<natsSubscription*, std::string> session_of;  // mutex: a session consumer's client
    // The messages those brought that a session of this node holds, acknowledged to JetStream
    // once the session is done with them (acknowledged by its client, dropped, ended). A
    // redelivery of one is not delivered again. feed_mutex.
    struct fed_message {
      natsMsg* msg;  // its latest delivery: what acknowledges it
      std::string client;
      std::uint64_t sequence;  // in the stream
    };
    std::mutex feed_mutex;
    std::map<const message*, fed_message> fed;
    std::map<std::pair<std::string, std::uint64_t>, const message*> fed_by_sequence;  // nullptr: handed over with its session
    std::map<std::pair<std::string, std::uint16_t>, const message*> fed_in_flight;    // by packet identifier
    // A session handed to another node: its messages' sequences, for the hand-over (answer_handover).
    std::map<std::string, std::map<const message*, std::uint64_t>, std::less<>> fed_moving;
    std::atomic<std::uint64_t> fed_acknowledged{0}, fed_repeats{0};
    // The retained messages' bucket, on a connection of its own: written by `writer` (nats.c's
    // key-value calls block), mirrored by `watcher`, both threads of ours. That connection's I/O is
    // nats.c's own (two threads), not the io_context's: its calls wait for replies, start()'s
    // too, which come before the host runs the io_context.
    jsCtx* js = nullptr;
    kvStore* kv = nullptr;
    kvWatcher* watch = nullptr;
    std::thread writer, watcher;
    std::mutex writes_mutex;  // what follows
    std::condition_variable writes_ready;
    std::deque<std::pair<std::string, std::string>> writes;  // key, envelope (empty: delete)
    bool writing = false;                   // writes_mutex: `writer` is at one of them
    std::condition_variable writes_idle;    // with writes_mutex: nothing left to write (flush())
    bool writer_stopping = false;
    inbound in;
    std::uint64_t incarnation = 0;
    std::atomic<std::uint64_t> next_seq{0};

    std::mutex mutex;  // what follows
    std::condition_variable idle;
    int running = 0;       // callbacks inside the inbound handlers
    // nats.c calls back on threads of its own, also after a close: a subscription until its
    // completion callback, a connection until its closed callback. The state goes after both.
    int live_subscriptions = 0, live_connections = 0;
    bool started = false;  // start() succeeded and stop() has not run
    bool stopped = false;
    /// This node's filters and their NATS subscriptions (none while not started).
    std::map<std::string, std::vector<natsSubscription*>, std::less<>> filters;
    /// A queue subscription's shared group filter.
    std::map<natsSubscription*, std::string> group_of;
    /// Per origin (name and run): the highest sequence number seen and which of the ones below
    /// it, within the window, were.
    struct seen_window {
      // A message JetStream sends again (its acknowledgement lost with a connection) is told
      // from a new one while fewer than this many of its origin's came since.
      static constexpr std::size_t size = 65536;
      std::uint64_t incarnation = 0;
      std::uint64_t high = 0;
      std::array<std::uint64_t, size / 64> words{};  // a ring: sequence number s is bit s % size
      bool test(std::uint64_t s) const noexcept { return ((words[index(s) / 64] >> (index(s) % 64)) & 1u) != 0; }
      void set(std::uint64_t s) noexcept { words[index(s) / 64] |= std::uint64_t{1} << (index(s) % 64); }
      /// Clears the bits of [from, to), fewer than `size` numbers: a word at a time, as a node
      /// that wants few of an origin's topics sees long gaps.
      void clear(std::uint64_t from, std::uint64_t to) noexcept {
        while (from < to) {
          const std::size_t i = index(from), in_word = i % 64;
          const std::uint64_t n = std::min<std::uint64_t>(64 - in_word, to - from);
          const std::uint64_t mask = n == 64 ? ~std::uint64_t{0} : ((std::uint64_t{1} << n) - 1) << in_word;
          words[i / 64] &= ~mask;
          from += n;
        }
      }
      static std::size_t index(std::uint64_t s) noexcept { return static_cast<std::size_t>(s % size); }
    };
    std::map<std::string, seen_window, std::less<>> seen;
    std::uint64_t dropped_before = 0;  // mutex: by nats.c, on subscriptions since gone

    // The owners' bucket and the claims, run one at a time by `claimer` (the bucket's calls
    // block); hand-over requests come on `owner_sub` (nats.c's delivery thread).
    kvStore* owners = nullptr;
    natsSubscription* owner_sub = nullptr;
    std::vector<std::thread> claimers;
    struct claim_request {
      std::string client_id;
      bool clean_start;
      claim_reply reply;
    };
    std::shared_ptr<bool> alive_token = std::make_shared<bool>(true);  // hand-overs answered after stop()
    std::condition_variable claims_ready;  // with writes_mutex
    std::deque<claim_request> claims;      // writes_mutex
    std::vector<std::string> claiming;     // writes_mutex: clients whose claim a claimer runs
    bool claimer_stopping = false;         // writes_mutex

    // Persistent sessions' states in their owners' entries, so that a node that takes a client
    // over from a node that is gone resumes its session (nats_sessions reports the changes). An
    // entry: the owner's name, `\0`, its run (16 hex digits), then the session (expiry and
    // subscriptions, as encode_handover writes them) or nothing for one that ends with its
    // connection. `writer` writes them by compare-and-set on the revision this node last wrote,
    // so a node that lost the client to another never overwrites the new owner's entry.
    struct kept_session {
      std::uint64_t revision = 0;  // of the entry, as this node's claim or last write left it
      bool has_state = false;      // the entry holds a session: clearing it takes a write
      bool queued = false;         // in `dirty`
      bool ended = false;          // erase_session: cleared, then forgotten
      std::uint32_t expiry = 0;
      std::int64_t offline_since = 0;  // Unix time its client left (0: connected)
      std::map<std::string, session_handover::subscription, std::less<>> subscriptions;
    };
    std::mutex kept_mutex;  // what follows
    std::map<std::string, kept_session, std::less<>> kept;
    std::deque<std::string> dirty;  // writes_mutex: clients whose entries to write, in the order they changed
    std::atomic<bool> keeps_sessions{false};  // a nats_sessions store reports to this cluster

    std::atomic<std::uint64_t> published{0}, publish_failed{0}, stream_failed{0}, received{0}, repeats{0}, malformed{0},
        disconnects{0}, reconnects{0}, retained_stored{0}, retained_failed{0}, retained_loaded{0}, claimed{0},
        claims_failed{0}, sessions_taken{0}, sessions_given{0}, handovers_lost{0}, sessions_restored{0}, sessions_expired{0},
        session_writes{0}, session_writes_failed{0};

    ~state() { close(); }

    /// A call into the inbound handlers ended (stop() waits until none is running).
    void leave() {
      std::lock_guard<std::mutex> lk(mutex);
      if (--running == 0) idle.notify_all();
    }

    std::error_code start(asio::any_io_executor ex, inbound i) {
      {
        std::lock_guard<std::mutex> lk(mutex);
        if (started || routes != nullptr) return std::make_error_code(std::errc::already_connected);
      }
      // Connecting blocks: without the lock, which the engine's interest() takes.
      map = subject_map(opts.prefix);
      in = std::move(i);
      incarnation = std::random_device{}();
      incarnation = (incarnation << 32) ^ std::random_device{}();
      loop = std::make_unique<nats_event_loop>(std::move(ex));
      std::error_code ec = make_options(nopts_routes, true, true);
      if (!ec) ec = make_options(nopts_groups, false, true);
      if (!ec && needs_bucket()) ec = make_options(nopts_bucket, false, false);
      for (auto c : {std::make_pair(&routes, nopts_routes), std::make_pair(&groups, nopts_groups),
                     std::make_pair(&bucket, nopts_bucket)}) {
        if (ec || c.second == nullptr) continue;
        ec = make_nats_error(natsConnection_Connect(c.first, c.second));
        if (!ec) {
          std::lock_guard<std::mutex> lk(mutex);
          ++live_connections;
        }
      }
      if (!ec && needs_bucket()) ec = open_bucket();
      if (ec) {
        close();
        return ec;
      }
      std::lock_guard<std::mutex> lk(mutex);
      started = true;
      stopped = false;
      for (auto& f : filters) subscribe(f.first, f.second);
      publishing.store(routes, std::memory_order_release);
      if (js_routes != nullptr) {
        streaming.store(js_routes, std::memory_order_release);
        std::lock_guard<std::mutex> ck(consumers_mutex);
        for (auto& f : filters) consumer_changes.push_back({f.first, true});
        consumers_ready.notify_one();
      }
      return {};
    }
    bool needs_bucket() const { return opts.retained || opts.own_clients || opts.jetstream_delivery; }

    std::error_code make_options(natsOptions*& o, bool no_echo, bool on_the_executor) {
      if (auto ec = make_nats_error(natsOptions_Create(&o))) return ec;
      std::vector<const char*> urls;
      for (const auto& s : opts.servers) urls.push_back(s.c_str());
      natsStatus s = natsOptions_SetServers(o, urls.data(), static_cast<int>(urls.size()));
      const std::string name = opts.node + (no_echo ? "/routes" : on_the_executor ? "/groups" : "/retained");
      if (s == NATS_OK) s = natsOptions_SetName(o, name.c_str());
      if (s == NATS_OK) s = natsOptions_SetNoEcho(o, no_echo);
      if (s == NATS_OK) s = natsOptions_UseGlobalMessageDelivery(o, true);
      if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);  // a node never gives its cluster up
      if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, opts.reconnect_wait.count());
      if (s == NATS_OK) s = natsOptions_SetMaxPendingMsgs(o, opts.max_pending_messages);
      if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(o, &on_disconnected, this);
      if (s == NATS_OK) s = natsOptions_SetReconnectedCB(o, &on_reconnected, this);
      if (s == NATS_OK) s = natsOptions_SetErrorHandler(o, &on_error, this);
      if (s == NATS_OK) s = natsOptions_SetClosedCB(o, &on_closed, this);
      if (s == NATS_OK && on_the_executor) s = loop->install(o);
      if (s == NATS_OK && on_the_executor && opts.send_asap) s = natsOptions_SetSendAsap(o, true);
      return make_nats_error(s);
    }

    void stop() {
      {
        std::unique_lock<std::mutex> lk(mutex);
        stopped = true;
        idle.wait(lk, [&] { return running == 0; });
      }
      close();
    }
    void close() {
      publishing.store(nullptr, std::memory_order_release);
      streaming.store(nullptr, std::memory_order_release);
      // Cut off from NATS, the bucket's connection is closed first: stopping the retained
      // bucket's watcher and the consumers would each wait for an answer that cannot come (5 s).
      if (bucket != nullptr && natsConnection_Status(bucket) != NATS_CONN_STATUS_CONNECTED) natsConnection_Close(bucket);
      close_bucket();
      std::map<std::string, std::vector<natsSubscription*>, std::less<>> subs;
      {
        std::lock_guard<std::mutex> lk(mutex);
        started = false;
        for (auto& f : filters) subs[f.first].swap(f.second);
        group_of.clear();
      }
      for (auto& f : subs)
        for (natsSubscription* s : f.second) natsSubscription_Destroy(s);
      for (natsConnection* c : {routes, groups, bucket})
        if (c != nullptr) natsConnection_Close(c);
      {
        // Bounded: a nats.c that never called back would otherwise hang the host's exit.
        std::unique_lock<std::mutex> lk(mutex);
        idle.wait_for(lk, std::chrono::seconds(10), [&] { return live_subscriptions == 0 && live_connections == 0; });
      }
      {
        // What sessions here held: not acknowledged, so JetStream sends it to their next node.
        std::lock_guard<std::mutex> fk(feed_mutex);
        for (auto& f : fed) natsMsg_Destroy(f.second.msg);
        fed.clear();
        fed_by_sequence.clear();
        fed_in_flight.clear();
        fed_moving.clear();
      }
      for (natsConnection** c : {&routes, &groups, &bucket}) {
        if (*c != nullptr) natsConnection_Destroy(*c);
        *c = nullptr;
      }
      for (natsOptions** o : {&nopts_routes, &nopts_groups, &nopts_bucket}) {
        if (*o != nullptr) natsOptions_Destroy(*o);
        *o = nullptr;
      }
    }

    std::error_code flush(std::chrono::milliseconds timeout) {
      if (consumer_thread.joinable()) {
        std::unique_lock<std::mutex> lk(consumers_mutex);
        if (!consumers_idle.wait_for(lk, timeout, [&] { return consumer_changes.empty() && !consumers_busy; }))
          return make_nats_error(NATS_TIMEOUT);
        if (consumers_missing != 0) return make_nats_error(NATS_NOT_FOUND);
      }
      for (natsConnection* c : {routes, groups}) {
        if (c == nullptr) return std::make_error_code(std::errc::not_connected);
        if (auto ec = make_nats_error(natsConnection_FlushTimeout(c, timeout.count()))) return ec;
      }
      if (bucket != nullptr) {
        if (auto ec = make_nats_error(natsConnection_FlushTimeout(bucket, timeout.count()))) return ec;
      }
      if (writer.joinable()) {
        std::unique_lock<std::mutex> lk(writes_mutex);
        if (!writes_idle.wait_for(lk, timeout, [&] { return writes.empty() && dirty.empty() && !writing; }))
          return make_nats_error(NATS_TIMEOUT);
      }
      return {};
    }

    // ---- out

    bool publish(const message& m) {
      natsConnection* const c = publishing.load(std::memory_order_acquire);
      if (c == nullptr) return false;  // not started: a node alone
      thread_local std::string subject, body;
      subject.clear();
      map.append_subject(subject, m.topic());
      body.clear();
      encode(body, m);
      natsStatus s = NATS_OK;
      jsCtx* const stream = m.qos_level() != codec::qos::at_most_once ? streaming.load(std::memory_order_acquire) : nullptr;
      if (stream != nullptr) {
        subject.clear();
        stream_map.append_subject(subject, m.topic());
        // Never waits: past max_pending_messages answers outstanding (JetStream away), refused.
        // An answer that does not come within ack_wait counts as a failure (on_stream_ack).
        if (stream_pending.fetch_add(1, std::memory_order_relaxed) >= opts.max_pending_messages) {
          s = NATS_INSUFFICIENT_BUFFER;
        } else {
          // Counted before it goes, under the lock its answer's count takes: the tickets of the
          // commits (nats_sessions) are these counts, and answers come in the order sent.
          std::lock_guard<std::mutex> lk(stream_tickets_mutex);
          s = js_PublishAsync(stream, subject.c_str(), body.data(), static_cast<int>(body.size()), &stream_publish);
          if (s == NATS_OK) ++stream_sent;
        }
        if (s != NATS_OK) stream_pending.fetch_sub(1, std::memory_order_relaxed);
      } else {
        s = natsConnection_Publish(c, subject.c_str(), body.data(), static_cast<int>(body.size()));
      }
      (s == NATS_OK ? published : publish_failed).fetch_add(1, std::memory_order_relaxed);
      if (m.retain() && kv != nullptr) {
        std::lock_guard<std::mutex> lk(writes_mutex);
        writes.emplace_back(bucket_key(m.topic()), m.payload().empty() ? std::string() : body);
        writes_ready.notify_one();
      }
      return stream != nullptr && s == NATS_OK;
    }

    // ---- retained messages in the bucket

    /// The bucket `{prefix}_{what}` (dots as `_`), made by this node or another.
    std::error_code key_value(kvStore*& out, const char* what) {
      std::string name = opts.prefix + "_" + what;
      for (char& c : name)
        if (c == '.') c = '_';
      kvConfig cfg;
      kvConfig_Init(&cfg);
      cfg.Bucket = name.c_str();
      cfg.History = 1;
      cfg.Replicas = opts.replicas;
      // A new NATS cluster has no JetStream leader for a moment: asked again until it has.
      const auto deadline = std::chrono::steady_clock::now() + opts.jetstream_wait;
      for (;;) {
        natsStatus s = js_CreateKeyValue(&out, js, &cfg);
        if (s != NATS_OK) s = js_KeyValue(&out, js, name.c_str());  // made by another node, otherwise
        if (s == NATS_OK) return {};
        if (std::chrono::steady_clock::now() > deadline) return make_nats_error(s);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    std::error_code open_bucket() {
      std::error_code ec = make_nats_error(natsConnection_JetStream(&js, bucket, nullptr));
      if (ec) return ec;
      if (opts.jetstream_delivery && (ec = open_stream())) return ec;
      if (opts.own_clients) {
        if ((ec = key_value(owners, "sessions"))) return ec;
        const std::string subject = owner_subject(opts.node);
        if ((ec = make_nats_error(natsConnection_Subscribe(&owner_sub, bucket, subject.c_str(), &on_handover_request, this))))
          return ec;
        if (natsSubscription_SetOnCompleteCB(owner_sub, &on_subscription_done, this) == NATS_OK) {
          std::lock_guard<std::mutex> lk(mutex);
          ++live_subscriptions;
        }
        // Answered before a claim of this node's can ask another: the subscription is on the server.
        if ((ec = make_nats_error(natsConnection_FlushTimeout(bucket, opts.jetstream_wait.count())))) return ec;
        for (int i = 0; i < std::max(opts.claim_threads, 1); ++i) claimers.emplace_back([this] { run_claims(); });
        writer = std::thread([this] { write_bucket(); });  // sessions' entries (and retained messages)
      }
      if (!opts.retained) return {};
      if ((ec = key_value(kv, "retained"))) return ec;
      if ((ec = make_nats_error(kvStore_WatchAll(&watch, kv, nullptr)))) return ec;
      if (!writer.joinable()) writer = std::thread([this] { write_bucket(); });
      // The bucket's entries now, then its changes: mirrored before start() returns, so the node
      // serves none of its subscribers without them.
      std::promise<void> loaded;
      auto done = loaded.get_future();
      watcher = std::thread([this, &loaded] { mirror_bucket(&loaded); });
      done.wait();
      return {};
    }
    // ---- QoS 1/2 through JetStream

    /// The stream of QoS 1/2 messages, made by this node or another, and the context that
    /// publishes to it; then the thread that makes the consumers.
    std::error_code open_stream() {
      stream_map = subject_map(opts.prefix + ".q");
      stream_name = opts.prefix + "_messages";
      for (char& c : stream_name)
        if (c == '.') c = '_';
      const std::string subjects = opts.prefix + ".q.>";
      const char* subject_list[] = {subjects.c_str()};
      jsStreamConfig cfg;
      jsStreamConfig_Init(&cfg);
      cfg.Name = stream_name.c_str();
      cfg.Subjects = subject_list;
      cfg.SubjectsLen = 1;
      cfg.Retention = js_InterestPolicy;  // kept while a consumer needs it, no longer
      cfg.MaxAge = std::chrono::duration_cast<std::chrono::nanoseconds>(opts.message_max_age).count();
      cfg.MaxBytes = opts.stream_max_bytes;
      cfg.Storage = js_FileStorage;
      cfg.Replicas = opts.replicas;
      const auto deadline = std::chrono::steady_clock::now() + opts.jetstream_wait;
      for (;;) {
        jsStreamInfo* info = nullptr;
        natsStatus s = js_AddStream(&info, js, &cfg, nullptr, nullptr);
        if (s != NATS_OK) s = js_GetStreamInfo(&info, js, stream_name.c_str(), nullptr, nullptr);  // another node's
        if (info != nullptr) jsStreamInfo_Destroy(info);
        if (s == NATS_OK) break;
        if (std::chrono::steady_clock::now() > deadline) return make_nats_error(s);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      jsOptions jo;
      jsOptions_Init(&jo);
      // publish() bounds what is outstanding itself: nats.c must never make it wait.
      jo.PublishAsync.MaxPending = static_cast<int64_t>(opts.max_pending_messages) * 2;
      jo.PublishAsync.AckHandler = &on_stream_ack;
      jo.PublishAsync.AckHandlerClosure = this;
      jsPubOptions_Init(&stream_publish);
      stream_publish.MaxWait = opts.ack_wait.count();
      jsCtx* ctx = nullptr;
      if (auto ec = make_nats_error(natsConnection_JetStream(&ctx, routes, &jo))) return ec;
      {
        std::lock_guard<std::mutex> lk(mutex);  // interest() looks at it
        js_routes = ctx;
      }
      {
        std::lock_guard<std::mutex> lk(consumers_mutex);
        consumer_changes.clear();  // of an earlier start
        consumers_stopping = false;
      }
      consumer_thread = std::thread([this] { run_consumers(); });
      return {};
    }
    /// JetStream's answer to a publish (nats.c's delivery thread).
    static void on_stream_ack(jsCtx*, natsMsg* msg, jsPubAck*, jsPubAckErr* error, void* closure) {
      auto* st = static_cast<state*>(closure);
      st->stream_pending.fetch_sub(1, std::memory_order_relaxed);
      if (error != nullptr) st->stream_failed.fetch_add(1, std::memory_order_relaxed);
      natsMsg_Destroy(msg);
      st->stream_answered(error != nullptr);
    }
    /// JetStream answered one more publish: the commits up to it are done (nats_sessions), or
    /// failed with it. On nats.c's delivery thread.
    void stream_answered(bool failed) {
      std::uint64_t ticket = 0;
      std::function<void(std::uint64_t)> done;
      std::function<void(std::uint64_t, std::uint64_t, std::error_code)> refused;
      {
        std::lock_guard<std::mutex> lk(stream_tickets_mutex);
        ticket = ++stream_answered_count;
        done = committed_handler;
        if (failed) refused = commit_failed_handler;
      }
      if (!done && !refused) return;
      {
        std::lock_guard<std::mutex> lk(mutex);
        if (stopped || !started) return;  // stop() waits for the reports under way
        ++running;
      }
      if (refused) refused(ticket, ticket, make_nats_error(NATS_ERR));
      if (done) done(ticket);
      leave();
    }
    /// The ticket of a commit (nats_sessions::commit()): the publishes JetStream has not answered
    /// yet, 0 when none is outstanding.
    std::uint64_t stream_ticket() {
      std::lock_guard<std::mutex> lk(stream_tickets_mutex);
      return stream_sent == stream_answered_count ? 0 : stream_sent;
    }

    /// From interest() (mutex held): the consumers of `filter` made or deleted, in order.
    void change_consumers(const std::string& filter, bool present) {
      std::lock_guard<std::mutex> lk(consumers_mutex);
      consumer_changes.push_back({filter, present});
      consumers_ready.notify_one();
    }
    void run_consumers() {
      std::unique_lock<std::mutex> lk(consumers_mutex);
      auto retried = std::chrono::steady_clock::now();
      for (;;) {
        // Consumers that could not be made (JetStream away) are tried again each second.
        consumers_ready.wait_for(lk, std::chrono::seconds(1),
                                 [&] { return consumers_stopping || !consumer_changes.empty(); });
        if (consumers_stopping) break;
        std::deque<consumer_change> changes;
        changes.swap(consumer_changes);
        consumers_busy = true;
        lk.unlock();
        for (auto& c : changes) {
          if (c.lost != nullptr) {
            remake_if_gone(c.lost);
            continue;
          }
          if (!c.client.empty()) {
            change_session_consumers(c);
            continue;
          }
          missing.erase(std::remove(missing.begin(), missing.end(), c.filter), missing.end());
          if (c.present) {
            make_consumers(c.filter);
          } else {
            const auto it = consumers.find(c.filter);
            if (it == consumers.end()) continue;
            consumer_count.fetch_sub(it->second.size(), std::memory_order_relaxed);
            drop_consumers(it->first, it->second, true);
            consumers.erase(it);
          }
        }
        if ((!missing.empty() || !session_missing.empty()) &&
            std::chrono::steady_clock::now() - retried >= std::chrono::seconds(1)) {
          retried = std::chrono::steady_clock::now();
          std::vector<std::string> again;
          again.swap(missing);
          for (auto& f : again) make_consumers(f);
          std::vector<std::pair<std::string, std::string>> sessions_again;
          sessions_again.swap(session_missing);
          for (auto& f : sessions_again) make_session_consumers(f.first, f.second);
        }
        lk.lock();
        consumers_busy = false;
        consumers_missing = missing.size() + session_missing.size();
        if (consumer_changes.empty()) consumers_idle.notify_all();
      }
      lk.unlock();
      for (auto& f : consumers) drop_consumers(f.first, f.second, false);
      consumers.clear();
      // A session's consumers stay in JetStream: the next node (or run) that has it binds them.
      for (auto& f : session_consumers) drop_session_consumers(f.second);
      session_consumers.clear();
      consumer_count.store(0, std::memory_order_relaxed);
    }
    /// A durable push consumer `name` of the stream, from the messages that come next on: each
    /// message acknowledged on its own (with AckAll, one acknowledgement also covered messages
    /// before it that a reconnect had left undelivered, and they were never sent again: the
    /// cut-off integration test lost 4 of 20 that way).
    void durable_options(jsSubOptions& so, const std::string& name) const {
      jsSubOptions_Init(&so);
      so.Stream = stream_name.c_str();
      so.ManualAck = true;
      so.Config.Durable = name.c_str();
      so.Config.DeliverPolicy = js_DeliverNew;
      so.Config.AckPolicy = js_AckExplicit;
    }
    /// A consumer per subject of `filter`, pushing to this node: the group's, bound by every
    /// member node, for a shared filter; this node's own otherwise. On consumer_thread.
    void make_consumers(const std::string& filter) {
      if (consumers.count(filter) != 0) return;
      const topic::parsed_filter parts = split_share(filter);
      if (parts.filter.empty()) return;
      const bool shared = parts.is_shared();
      const std::string queue = shared ? map.queue_group(parts.share_name) : std::string();
      std::vector<natsSubscription*> made;
      for (const std::string& subject : stream_map.subjects(parts.filter)) {
        // Consumer names: letters, digits, `-` and `_`. A group's is the same on every node.
        const std::string name = shared ? "g" + hex(std::hash<std::string>()(queue + ' ' + subject)) +
                                              hex(std::hash<std::string>()(subject + ' ' + queue))
                                        : "n" + hex(incarnation) + "_" + std::to_string(++next_consumer);
        jsSubOptions so;
        durable_options(so, name);
        so.Config.AckWait = std::chrono::duration_cast<std::chrono::nanoseconds>(opts.ack_wait).count();
        so.Config.MaxAckPending = opts.max_pending_messages;
        so.Config.InactiveThreshold =
            std::chrono::duration_cast<std::chrono::nanoseconds>(opts.consumer_inactive).count();
        // Not for a group's: JetStream has no heartbeats for a queue group's consumer.
        if (!shared)
          so.Config.Heartbeat = std::chrono::duration_cast<std::chrono::nanoseconds>(opts.consumer_heartbeat).count();
        if (shared) so.Queue = queue.c_str();
        natsSubscription* sub = nullptr;
        const natsStatus st = js_Subscribe(&sub, js, subject.c_str(), &on_stream_message, this, nullptr, &so, nullptr);
        if (st != NATS_OK) {
          drop_consumers(filter, made, !shared);
          missing.push_back(filter);
          return;
        }
        natsSubscription_SetPendingLimits(sub, opts.max_pending_messages, -1);
        if (natsSubscription_SetOnCompleteCB(sub, &on_subscription_done, this) == NATS_OK) {
          std::lock_guard<std::mutex> lk(mutex);
          ++live_subscriptions;
        }
        made.push_back(sub);
      }
      std::lock_guard<std::mutex> lk(mutex);
      if (shared)
        for (natsSubscription* sub : made) group_of.emplace(sub, filter);
      consumer_count.fetch_add(made.size(), std::memory_order_relaxed);
      consumers.emplace(filter, std::move(made));
    }
    /// Ends this node's reading of `subs`. `remove`: this node's own consumers are deleted (a
    /// group's stays for its other members; JetStream deletes it once none is left, as it does
    /// the consumers of a node that stops). On consumer_thread.
    void drop_consumers(const std::string& filter, std::vector<natsSubscription*>& subs, bool remove) {
      const bool shared = topic::is_shared_filter(filter);
      {
        std::lock_guard<std::mutex> lk(mutex);
        for (natsSubscription* sub : subs) group_of.erase(sub);
      }
      for (natsSubscription* sub : subs) {
        if (remove && !shared) natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
      }
      subs.clear();
    }
    /// nats.c missed the heartbeats of `sub` (its thread): looked at on consumer_thread.
    void consumer_silent(natsSubscription* sub) {
      std::lock_guard<std::mutex> lk(consumers_mutex);
      if (consumers_stopping) return;
      consumer_changes.push_back({std::string(), true, sub});
      consumers_ready.notify_one();
    }
    /// Makes the consumers of the filter `sub` reads again, if `sub` is still one of them and
    /// JetStream says its consumer is gone. Cut off from NATS (heartbeats stop then too), nothing
    /// is done: the consumer keeps what it holds for the node until the node is back. On
    /// consumer_thread.
    void remake_if_gone(natsSubscription* sub) {
      const auto it = std::find_if(consumers.begin(), consumers.end(), [&](const auto& f) {
        return std::find(f.second.begin(), f.second.end(), sub) != f.second.end();
      });
      if (it == consumers.end() || natsConnection_Status(bucket) != NATS_CONN_STATUS_CONNECTED) return;
      jsConsumerInfo* info = nullptr;
      jsErrCode code = static_cast<jsErrCode>(0);
      const natsStatus s = natsSubscription_GetConsumerInfo(&info, sub, nullptr, &code);
      if (info != nullptr) jsConsumerInfo_Destroy(info);
      if (s == NATS_OK || code != JSConsumerNotFoundErr) return;
      const std::string filter = it->first;
      consumer_count.fetch_sub(it->second.size(), std::memory_order_relaxed);
      drop_consumers(it->first, it->second, false);
      consumers.erase(it);
      make_consumers(filter);
      consumers_remade.fetch_add(1, std::memory_order_relaxed);
    }
    static std::string hex(std::uint64_t v) {
      static constexpr char digits[] = "0123456789abcdef";
      std::string out(16, '0');
      for (int i = 15; i >= 0; --i, v >>= 4) out[static_cast<std::size_t>(i)] = digits[v & 0xF];
      return out;
    }
    /// A message from a consumer (nats.c's delivery thread): handed to the broker, then
    /// acknowledged, so that one the node never had comes again.
    static void on_stream_message(natsConnection*, natsSubscription* sub, natsMsg* msg, void* closure) {
      auto* st = static_cast<state*>(closure);
      if (st->take(sub, msg, path::stream)) natsMsg_Ack(msg, nullptr);
      natsMsg_Destroy(msg);
    }


    // ---- kept sessions fed through consumers of their own (nats_sessions)

    bool feeds_sessions() const noexcept {
      return keeps_sessions.load(std::memory_order_relaxed) && opts.jetstream_delivery && opts.own_clients;
    }
    /// Whether a kept session's subscription is fed (the engine's rule, engine::core::fed()).
    static bool fed_filter(std::string_view filter, const codec::subscribe_options& o) noexcept {
      return o.max_qos != codec::qos::at_most_once && !o.no_local && !topic::is_shared_filter(filter);
    }
    /// From the store, under the engine's lock: a session's consumers to make, delete or let go.
    void session_consumers_change(std::string_view client, std::string_view filter, bool present, bool unbind = false) {
      if (!feeds_sessions()) return;
      std::lock_guard<std::mutex> lk(consumers_mutex);
      if (consumers_stopping) return;
      consumer_change c{std::string(filter), present};
      c.client.assign(client);
      c.unbind = unbind;
      consumer_changes.push_back(std::move(c));
      consumers_ready.notify_one();
    }
    /// A stable name (FNV-1a, both ways round) for the consumer of `client` on `subject`: the
    /// same on every node, which binds it when the session is there.
    static std::string session_consumer_name(std::string_view client, std::string_view subject) {
      auto fnv = [](std::string_view a, std::string_view b) {
        std::uint64_t h = 0xcbf29ce484222325ull;
        for (std::string_view part : {a, std::string_view("\n", 1), b})
          for (const char c : part) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
        return h;
      };
      return "s" + hex(fnv(client, subject)) + hex(fnv(subject, client));
    }
    /// On consumer_thread.
    void change_session_consumers(const consumer_change& c) {
      std::vector<std::string> wanted;
      if (!c.filter.empty()) {
        wanted.push_back(c.filter);
      } else {
        for (const auto& f : session_consumers)
          if (f.first.first == c.client) wanted.push_back(f.first.second);
        for (const auto& f : session_missing)
          if (f.first == c.client) wanted.push_back(f.second);
      }
      for (const std::string& filter : wanted) {
        const auto key = std::make_pair(c.client, filter);
        session_missing.erase(std::remove(session_missing.begin(), session_missing.end(), key), session_missing.end());
        if (c.present) {
          make_session_consumers(c.client, filter);
          continue;
        }
        const auto it = session_consumers.find(key);
        if (it != session_consumers.end()) {
          consumer_count.fetch_sub(it->second.size(), std::memory_order_relaxed);
          drop_session_consumers(it->second);
          session_consumers.erase(it);
        }
        if (c.unbind) continue;
        for (const std::string& subject : stream_map.subjects(filter)) {
          const std::string name = session_consumer_name(c.client, subject);
          js_DeleteConsumer(js, stream_name.c_str(), name.c_str(), nullptr, nullptr);
        }
      }
    }
    /// Makes, or binds when it is there already (made by another node, or an earlier run), the
    /// consumer of each subject of `filter` for `client`'s session. On consumer_thread.
    void make_session_consumers(const std::string& client, const std::string& filter) {
      auto key = std::make_pair(client, filter);
      if (session_consumers.count(key) != 0) return;
      // Kept as long as the session may come back, within reason (30 days).
      std::chrono::seconds inactive = opts.consumer_inactive;
      {
        std::lock_guard<std::mutex> lk(kept_mutex);
        if (const auto it = kept.find(client); it != kept.end())
          inactive = std::max(inactive, std::min<std::chrono::seconds>(std::chrono::seconds(it->second.expiry),
                                                                       std::chrono::hours(24 * 30)));
      }
      // JetStream sends a message again past ack_wait, then every 30 s: a message a session
      // holds for an offline client comes back seldom, one its lost node held soon.
      std::int64_t backoff[] = {std::chrono::duration_cast<std::chrono::nanoseconds>(opts.ack_wait).count(),
                                std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::seconds(30)).count()};
      std::vector<natsSubscription*> made;
      for (const std::string& subject : stream_map.subjects(filter)) {
        const std::string name = session_consumer_name(client, subject);
        jsSubOptions so;
        durable_options(so, name);
        so.Config.BackOff = backoff;
        so.Config.BackOffLen = 2;
        // Past the back-off steps JetStream wants a bound (unlimited is refused): at 30 s apart,
        // about 1,000 years.
        so.Config.MaxDeliver = std::int64_t{1} << 30;
        so.Config.MaxAckPending = opts.session_max_pending;
        so.Config.InactiveThreshold = std::chrono::duration_cast<std::chrono::nanoseconds>(inactive).count();
        natsSubscription* sub = nullptr;
        if (js_Subscribe(&sub, js, subject.c_str(), &on_session_message, this, nullptr, &so, nullptr) != NATS_OK) {
          drop_session_consumers(made);
          session_missing.push_back(std::move(key));  // another node still bound to it, or JetStream away
          return;
        }
        natsSubscription_SetPendingLimits(sub, opts.max_pending_messages, -1);
        {
          std::lock_guard<std::mutex> lk(mutex);
          session_of.emplace(sub, client);
          if (natsSubscription_SetOnCompleteCB(sub, &on_subscription_done, this) == NATS_OK) ++live_subscriptions;
        }
        made.push_back(sub);
      }
      consumer_count.fetch_add(made.size(), std::memory_order_relaxed);
      session_consumers.emplace(std::move(key), std::move(made));
    }
    /// Lets go of `subs` (JetStream keeps their consumers). On consumer_thread.
    void drop_session_consumers(std::vector<natsSubscription*>& subs) {
      {
        std::lock_guard<std::mutex> lk(mutex);
        for (natsSubscription* sub : subs) session_of.erase(sub);
      }
      for (natsSubscription* sub : subs) natsSubscription_Destroy(sub);
      subs.clear();
    }

    /// A message from a session's consumer (nats.c's delivery thread): to the session, held
    /// until the session is done with it. A repeat of one it holds is not delivered again.
    static void on_session_message(natsConnection*, natsSubscription* sub, natsMsg* msg, void* closure) {
      static_cast<state*>(closure)->take_fed(sub, msg);
    }
    void take_fed(natsSubscription* sub, natsMsg* msg) {
      std::uint64_t sequence = 0;
      jsMsgMetaData* meta = nullptr;
      if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
        sequence = meta->Sequence.Stream;
        jsMsgMetaData_Destroy(meta);
      }
      std::string client;
      {
        std::lock_guard<std::mutex> lk(mutex);
        const auto it = session_of.find(sub);
        if (stopped || !started || it == session_of.end()) {
          natsMsg_Destroy(msg);  // sent again to whoever has the session next
          return;
        }
        client = it->second;
      }
      {
        std::lock_guard<std::mutex> fk(feed_mutex);
        const auto held = fed_by_sequence.find({client, sequence});
        if (held != fed_by_sequence.end()) {
          fed_repeats.fetch_add(1, std::memory_order_relaxed);
          if (held->second == nullptr) {  // handed over with its session, which has it
            natsMsg_Ack(msg, nullptr);
            natsMsg_Destroy(msg);
            fed_by_sequence.erase(held);
            return;
          }
          fed_message& f = fed.at(held->second);
          natsMsg_Destroy(f.msg);
          f.msg = msg;  // acknowledged through its latest delivery
          return;
        }
      }
      message_ptr m;
      {
        std::lock_guard<std::mutex> lk(mutex);
        if (stopped || !started) {
          natsMsg_Destroy(msg);
          return;
        }
        m = decode(std::string_view(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg))), false);
        if (m) ++running;
      }
      if (!m) {  // never deliverable: not kept for ever
        natsMsg_Ack(msg, nullptr);
        natsMsg_Destroy(msg);
        return;
      }
      {
        std::lock_guard<std::mutex> fk(feed_mutex);
        // An entry left at this address belonged to a message that is gone: done with.
        if (const auto old = fed.find(m.get()); old != fed.end()) finish_locked(old, true);
        fed.emplace(m.get(), fed_message{msg, client, sequence});
        fed_by_sequence[{client, sequence}] = m.get();
      }
      received.fetch_add(1, std::memory_order_relaxed);
      in.to_session(std::move(client), std::move(m));
      leave();
    }
    /// Done with a fed message: acknowledged to JetStream (`ack`), or let go (sent again to the
    /// session's next node). feed_mutex held.
    void finish_locked(std::map<const message*, fed_message>::iterator it, bool ack) {
      if (ack) {
        natsMsg_Ack(it->second.msg, nullptr);
        fed_acknowledged.fetch_add(1, std::memory_order_relaxed);
      }
      natsMsg_Destroy(it->second.msg);
      fed_by_sequence.erase({it->second.client, it->second.sequence});
      fed.erase(it);
    }
    void fed_finished(const message* m, bool ack) {
      std::lock_guard<std::mutex> fk(feed_mutex);
      if (const auto it = fed.find(m); it != fed.end()) finish_locked(it, ack);
    }
    // The store's calls (nats_sessions), under the engine's lock.
    void fed_sent(std::string_view client, std::uint16_t packet_id, const message* m) {
      std::lock_guard<std::mutex> fk(feed_mutex);
      if (fed.count(m) != 0) fed_in_flight[{std::string(client), packet_id}] = m;
    }
    void fed_acknowledged_by_client(std::string_view client, std::uint16_t packet_id) {
      std::lock_guard<std::mutex> fk(feed_mutex);
      const auto it = fed_in_flight.find({std::string(client), packet_id});
      if (it == fed_in_flight.end()) return;
      if (const auto f = fed.find(it->second); f != fed.end()) finish_locked(f, true);
      fed_in_flight.erase(it);
    }
    /// All that `client`'s session holds: acknowledged (the session ended, or dropped what it
    /// had), or moving with the session to another node (`moving`).
    void fed_session_done(std::string_view client, bool moving) {
      std::lock_guard<std::mutex> fk(feed_mutex);
      std::map<const message*, std::uint64_t> seqs;
      for (auto it = fed.begin(); it != fed.end();) {
        const auto next = std::next(it);
        if (it->second.client == client) {
          if (moving) seqs.emplace(it->first, it->second.sequence);
          finish_locked(it, !moving);
        }
        it = next;
      }
      for (auto it = fed_in_flight.begin(); it != fed_in_flight.end();)
        it = it->first.first == client ? fed_in_flight.erase(it) : std::next(it);
      for (auto it = fed_by_sequence.begin(); it != fed_by_sequence.end();)
        it = it->first.first == client ? fed_by_sequence.erase(it) : std::next(it);
      if (moving) {
        fed_moving[std::string(client)] = std::move(seqs);
      } else if (const auto m = fed_moving.find(client); m != fed_moving.end()) {
        fed_moving.erase(m);
      }
    }

    void close_bucket() {
      {
        std::lock_guard<std::mutex> lk(consumers_mutex);
        consumers_stopping = true;
        consumers_ready.notify_all();
      }
      if (consumer_thread.joinable()) consumer_thread.join();
      jsCtx* ctx = nullptr;
      {
        std::lock_guard<std::mutex> lk(mutex);
        ctx = std::exchange(js_routes, nullptr);
      }
      if (ctx != nullptr) jsCtx_Destroy(ctx);
      {
        std::lock_guard<std::mutex> lk(writes_mutex);
        writer_stopping = true;  // what is queued is still written
        claimer_stopping = true;  // claims still queued are refused
        writes_ready.notify_all();
        claims_ready.notify_all();
      }
      if (writer.joinable()) writer.join();
      for (std::thread& t : claimers) t.join();
      claimers.clear();
      if (owner_sub != nullptr) {
        natsSubscription_Unsubscribe(owner_sub);
        natsSubscription_Destroy(owner_sub);
        owner_sub = nullptr;
      }
      if (owners != nullptr) kvStore_Destroy(owners);
      owners = nullptr;
      if (watch != nullptr) kvWatcher_Stop(watch);
      if (watcher.joinable()) watcher.join();
      if (watch != nullptr) kvWatcher_Destroy(watch);
      watch = nullptr;
      if (kv != nullptr) kvStore_Destroy(kv);
      kv = nullptr;
      if (js != nullptr) jsCtx_Destroy(js);
      js = nullptr;
    }
    void write_bucket() {
      std::unique_lock<std::mutex> lk(writes_mutex);
      for (;;) {
        writing = false;
        if (writes.empty() && dirty.empty()) writes_idle.notify_all();
        writes_ready.wait(lk, [&] { return writer_stopping || !writes.empty() || !dirty.empty(); });
        writing = true;
        if (!dirty.empty()) {
          const std::string client = std::move(dirty.front());
          dirty.pop_front();
          lk.unlock();
          write_session(client);
          lk.lock();
          continue;
        }
        if (writes.empty()) {
          writing = false;
          writes_idle.notify_all();
          return;
        }
        auto w = std::move(writes.front());
        writes.pop_front();
        lk.unlock();
        const natsStatus s = w.second.empty()
                                 ? kvStore_Delete(kv, w.first.c_str())
                                 : kvStore_Put(nullptr, kv, w.first.c_str(), w.second.data(), static_cast<int>(w.second.size()));
        (s == NATS_OK ? retained_stored : retained_failed).fetch_add(1, std::memory_order_relaxed);
        lk.lock();
      }
    }
    void mirror_bucket(std::promise<void>* loaded) {
      for (;;) {
        kvEntry* e = nullptr;
        const natsStatus s = kvWatcher_Next(&e, watch, 1000);
        if (s == NATS_TIMEOUT) continue;
        if (s != NATS_OK) break;  // stopped (close_bucket) or the connection closed
        if (e == nullptr) {  // the initial values are all in
          if (loaded != nullptr) loaded->set_value();
          loaded = nullptr;
          continue;
        }
        message_ptr m;
        if (kvEntry_Operation(e) == kvOp_Put) {
          std::lock_guard<std::mutex> lk(mutex);
          m = decode(std::string_view(static_cast<const char*>(kvEntry_Value(e)),
                                      static_cast<std::size_t>(kvEntry_ValueLen(e))),
                     false);
        } else if (auto topic = topic_of_key(kvEntry_Key(e))) {  // deleted or purged: none any more
          m = message::make(*topic, {}, codec::qos::at_most_once, true);
        }
        kvEntry_Destroy(e);
        if (!m) continue;
        {
          std::lock_guard<std::mutex> lk(mutex);
          if (stopped) continue;
          ++running;
        }
        if (in.retained) in.retained(std::move(m));
        retained_loaded.fetch_add(1, std::memory_order_relaxed);  // counted once handed on
        leave();
      }
      if (loaded != nullptr) loaded->set_value();
    }

    /// A bucket key for a topic: base64url without padding (keys allow letters, digits, `-`, `_`,
    /// `=`, `/` and `.`; a topic may hold anything).
    static std::string bucket_key(std::string_view topic) {
      static constexpr char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
      std::string out;
      std::uint32_t acc = 0;
      int bits = 0;
      for (const char c : topic) {
        acc = (acc << 8) | static_cast<unsigned char>(c);
        bits += 8;
        while (bits >= 6) {
          bits -= 6;
          out.push_back(digits[(acc >> bits) & 0x3F]);
        }
      }
      if (bits > 0) out.push_back(digits[(acc << (6 - bits)) & 0x3F]);
      return out;
    }
    /// The topic of a bucket key; nothing for a key that is not one of ours.
    static std::optional<std::string> topic_of_key(const char* key) {
      std::string out;
      std::uint32_t acc = 0;
      int bits = 0;
      for (const char* p = key; p != nullptr && *p != '\0'; ++p) {
        const char c = *p;
        int v = c >= 'A' && c <= 'Z'   ? c - 'A'
                : c >= 'a' && c <= 'z' ? c - 'a' + 26
                : c >= '0' && c <= '9' ? c - '0' + 52
                : c == '-'             ? 62
                : c == '_'             ? 63
                                       : -1;
        if (v < 0) return std::nullopt;
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
          bits -= 8;
          out.push_back(static_cast<char>((acc >> bits) & 0xFF));
        }
      }
      if (out.empty() || topic::validate_topic_name(out)) return std::nullopt;
      return out;
    }

    /// A message on the wire: format 1, flags (QoS, RETAIN), origin name, origin run, sequence,
    /// topic, 5.0 properties, then the payload. Lengths and numbers as varints.
    void encode(std::string& out, const message& m) {
      out.push_back('\x01');
      out.push_back(static_cast<char>(static_cast<unsigned>(m.qos_level()) | (m.retain() ? 4u : 0u)));
      detail::put_string(out, opts.node);
      detail::put_varint(out, incarnation);
      detail::put_varint(out, next_seq.fetch_add(1, std::memory_order_relaxed) + 1);
      detail::put_string(out, m.topic());
      detail::put_string(out, m.properties().bytes());
      out.append(m.payload());
    }
    // ---- client identifiers and their sessions (claim())

    static constexpr std::size_t max_client_key_bytes = 2048;  // 1,536 bytes of client identifier

    /// Where a node hears that another takes one of its clients over.
    std::string owner_subject(std::string_view node) const { return opts.prefix + ".own." + bucket_key(node); }

    void claim(std::string_view client_id, bool clean_start, claim_reply reply) {
      {
        std::lock_guard<std::mutex> lk(writes_mutex);
        if (owners != nullptr && !claimer_stopping) {
          claims.push_back({std::string(client_id), clean_start, std::move(reply)});
          claims_ready.notify_one();
          return;
        }
      }
      // Not started, or not owning clients: a node alone owns its clients.
      if (!opts.own_clients || !started_now()) return reply({});
      reply({std::make_error_code(std::errc::not_connected), std::nullopt});
    }
    bool started_now() {
      std::lock_guard<std::mutex> lk(mutex);
      return started && !stopped;
    }

    void run_claims() {
      std::unique_lock<std::mutex> lk(writes_mutex);
      for (;;) {
        // The oldest claim of a client no other claimer has: one client's claims keep their order.
        auto next = claims.end();
        claims_ready.wait(lk, [&] {
          if (claimer_stopping) return true;
          next = std::find_if(claims.begin(), claims.end(), [&](const claim_request& c) {
            return std::find(claiming.begin(), claiming.end(), c.client_id) == claiming.end();
          });
          return next != claims.end();
        });
        if (claimer_stopping) {
          std::deque<claim_request> left;
          left.swap(claims);
          lk.unlock();
          for (auto& c : left) c.reply({std::make_error_code(std::errc::operation_canceled), std::nullopt});
          return;
        }
        claim_request c = std::move(*next);
        claims.erase(next);
        claiming.push_back(c.client_id);
        lk.unlock();
        c.reply(take_ownership(c.client_id, c.clean_start));
        lk.lock();
        claiming.erase(std::find(claiming.begin(), claiming.end(), c.client_id));
        claims_ready.notify_all();  // a claim of the same client may go now
      }
    }

    /// Makes this node the owner of `client_id` in the bucket (compare-and-set on the entry's
    /// revision, so that of two nodes claiming at once one wins and the other asks it next), then
    /// asks the previous owner for the session. On `claimer`.
    claim_result take_ownership(const std::string& client_id, bool clean_start) {
      const std::string key = bucket_key(client_id);
      // A key is part of a subject, and NATS closes a connection whose line is too long (4 KiB by
      // default): client identifiers past max_client_key_bytes are refused (the broker's own
      // limit, max_client_id_length, is 256 by default).
      if (key.size() > max_client_key_bytes) {
        claims_failed.fetch_add(1, std::memory_order_relaxed);
        return {std::make_error_code(std::errc::filename_too_long), std::nullopt};
      }
      const auto deadline = std::chrono::steady_clock::now() + opts.jetstream_wait;
      for (;;) {
        // NATS unreachable: refused now, as waiting would outlast the client's patience; a
        // JetStream without a leader yet (connected, no answer) is asked again until the deadline.
        if (natsConnection_Status(bucket) != NATS_CONN_STATUS_CONNECTED) {
          claims_failed.fetch_add(1, std::memory_order_relaxed);
          return {make_nats_error(NATS_CONNECTION_DISCONNECTED), std::nullopt};
        }
        kvEntry* e = nullptr;
        natsStatus s = kvStore_Get(&e, owners, key.c_str());
        std::string previous;
        std::uint64_t revision = 0;
        if (s == NATS_OK) {
          previous.assign(static_cast<const char*>(kvEntry_Value(e)), static_cast<std::size_t>(kvEntry_ValueLen(e)));
          revision = kvEntry_Revision(e);
          kvEntry_Destroy(e);
        }
        const owner_entry was = parse_owner(previous);
        if (s == NATS_OK && was.node == opts.node && was.run == incarnation) {
          own(client_id, revision, !was.state.empty());
          claimed.fetch_add(1, std::memory_order_relaxed);
          return {};  // this node's already
        }
        if (s == NATS_OK || s == NATS_NOT_FOUND) {
          // The session is not carried into the new entry: the broker's adoption of it writes it.
          const std::string value = owner_value();
          std::uint64_t written = 0;
          s = s == NATS_NOT_FOUND ? kvStore_Create(&written, owners, key.c_str(), value.data(), static_cast<int>(value.size()))
                                  : kvStore_Update(&written, owners, key.c_str(), value.data(),
                                                   static_cast<int>(value.size()), revision);
          if (s == NATS_OK) {
            own(client_id, written, false);
            claimed.fetch_add(1, std::memory_order_relaxed);
            if (previous.empty()) return {};
            // This node's earlier run (killed, restarted): no one to ask, what the entry kept.
            if (was.node == opts.node) return {{}, clean_start ? std::nullopt : restore(client_id, was)};
            bool answered = false;
            auto session = ask_for_session(std::string(was.node), client_id, clean_start, answered);
            if (session) {
              // What the session brings along, JetStream sends here again: not delivered twice.
              std::lock_guard<std::mutex> fk(feed_mutex);
              for (const auto& d : session->messages)
                if (d.stream_sequence != 0) fed_by_sequence[{client_id, d.stream_sequence}] = nullptr;
            }
            // A node that is gone: what its entry kept of the session, if anything.
            if (!session && !answered && !clean_start) session = restore(client_id, was);
            return {{}, std::move(session)};
          }
          // Another node changed the entry first: looked at again.
        }
        if (std::chrono::steady_clock::now() > deadline) {
          claims_failed.fetch_add(1, std::memory_order_relaxed);
          return {make_nats_error(s == NATS_OK ? NATS_TIMEOUT : s), std::nullopt};
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }

    /// The session of `client_id` from its previous owner, in as many messages as it takes;
    /// nothing when it has none, is gone or does not answer in time. On `claimer`.
    std::optional<session_handover> ask_for_session(const std::string& node, const std::string& client_id,
                                                    bool clean_start, bool& answered) {
      natsInbox* inbox = nullptr;
      natsSubscription* sub = nullptr;
      std::optional<session_handover> out;
      std::string request;
      request.push_back(clean_start ? '\x01' : '\x00');
      request.append(client_id);
      const std::string subject = owner_subject(node);
      const auto deadline = std::chrono::steady_clock::now() + opts.handover_wait;
      bool lost = true;
      if (natsInbox_Create(&inbox) == NATS_OK && natsConnection_SubscribeSync(&sub, bucket, inbox) == NATS_OK &&
          natsConnection_PublishRequest(bucket, subject.c_str(), inbox, request.data(), static_cast<int>(request.size())) == NATS_OK) {
        std::string whole;
        std::uint64_t expected = 0, next = 0;
        for (;;) {
          const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
          natsMsg* m = nullptr;
          const natsStatus s = left.count() > 0 ? natsSubscription_NextMsg(&m, sub, left.count()) : NATS_TIMEOUT;
          if (s == NATS_NO_RESPONDERS) {  // the node is gone: so is what it had
            break;
          }
          if (s != NATS_OK) break;
          const std::string_view part(natsMsg_GetData(m), static_cast<std::size_t>(natsMsg_GetDataLength(m)));
          std::size_t at = 0;
          std::uint64_t index = 0, total = 0;
          const bool ok = detail::get_varint(part, at, index) && detail::get_varint(part, at, total);
          bool done = false;
          if (!ok || total == 0) {  // the owner had no session to give
            lost = false;
            done = true;
          } else if (index == next && (expected == 0 || total == expected) &&
                     whole.size() + (part.size() - at) <= opts.max_handover_bytes) {
            expected = total;
            whole.append(part.substr(at));
            if (++next == expected) {
              out = cluster::decode_handover(whole);
              lost = !out;
              done = true;
            }
          } else {
            done = true;  // out of order or too large: not taken
          }
          natsMsg_Destroy(m);
          if (done) break;
        }
      }
      if (sub != nullptr) natsSubscription_Destroy(sub);
      if (inbox != nullptr) natsInbox_Destroy(inbox);
      if (out) sessions_taken.fetch_add(1, std::memory_order_relaxed);
      if (lost && !clean_start) handovers_lost.fetch_add(1, std::memory_order_relaxed);
      answered = !lost;
      return out;
    }

    // ---- persistent sessions in their owners' entries (nats_sessions)

    /// This node's owners' entry value: its name, its run, no session.
    std::string owner_value() const {
      std::string v = opts.node;
      v.push_back('\0');
      v += hex(incarnation);
      return v;
    }
    struct owner_entry {
      std::string_view node;
      std::uint64_t run = 0;
      std::uint64_t offline_since = 0;  // its client left at this Unix time (0: connected)
      std::string_view state;  // the session it keeps, encode_handover's bytes; empty: none
    };
    /// The number hex() wrote; false for anything else.
    static bool parse_hex(std::string_view digits, std::uint64_t& out) noexcept {
      out = 0;
      for (const char c : digits) {
        const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return false;
        out = (out << 4) | static_cast<std::uint64_t>(d);
      }
      return true;
    }
    static owner_entry parse_owner(std::string_view v) {
      owner_entry e;
      const std::size_t nul = v.find('\0');
      e.node = v.substr(0, nul);
      if (nul == std::string_view::npos || v.size() < nul + 17) return e;
      if (!parse_hex(v.substr(nul + 1, 16), e.run)) return {e.node, 0, 0, {}};
      e.state = v.substr(nul + 17);
      if (e.state.size() >= 17 && e.state[0] == '@') {
        if (!parse_hex(e.state.substr(1, 16), e.offline_since)) return {e.node, e.run, 0, {}};
        e.state = e.state.substr(17);
      }
      return e;
    }
    /// The session an entry kept (its subscriptions and expiry; the messages it was owed went
    /// with its node), or nothing.
    std::optional<session_handover> restore(const std::string& client_id, const owner_entry& was) {
      if (was.state.empty()) return std::nullopt;
      auto h = cluster::decode_handover(was.state);
      if (!h) return std::nullopt;
      const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count();
      if (was.offline_since != 0 && h->expiry_seconds != 0xFFFFFFFF &&
          now - static_cast<std::int64_t>(was.offline_since) >= static_cast<std::int64_t>(h->expiry_seconds)) {
        // Its client left longer ago than its Session Expiry Interval: it ended meanwhile, and
        // its consumers with it.
        sessions_expired.fetch_add(1, std::memory_order_relaxed);
        for (const auto& sub : h->subscriptions)
          if (fed_filter(sub.filter, sub.options)) session_consumers_change(client_id, sub.filter, false);
        return std::nullopt;
      }
      sessions_restored.fetch_add(1, std::memory_order_relaxed);
      return h;
    }
    /// This node owns `client_id`'s entry at `revision`: the changes to its session are written
    /// there from now on (a session this node still has, written again into its new entry).
    void own(const std::string& client_id, std::uint64_t revision, bool has_state) {
      if (!keeps_sessions.load(std::memory_order_relaxed)) return;
      bool queue = false;
      {
        std::lock_guard<std::mutex> lk(kept_mutex);
        kept_session& e = kept[client_id];
        e.revision = revision;
        e.has_state = has_state;
        if (!e.ended && (e.expiry != 0 || !e.subscriptions.empty()) && !e.queued) queue = e.queued = true;
      }
      if (queue) queue_session_write(client_id);
    }
    void queue_session_write(std::string_view client_id) {
      std::lock_guard<std::mutex> lk(writes_mutex);
      dirty.emplace_back(client_id);
      writes_ready.notify_one();
    }
    /// A persistent session of this node changed (nats_sessions, on the engine's threads, its
    /// lock held: quick): `f` changes the copy its entry is written from. `ends`: the session
    /// ended (nothing to write for a client whose entry holds none).
    template <class F>
    void session_changed(std::string_view client_id, bool ends, F&& f) {
      if (!opts.own_clients) return;
      bool queue = false;
      {
        std::lock_guard<std::mutex> lk(kept_mutex);
        auto it = kept.find(client_id);
        if (it == kept.end()) {
          if (ends) return;
          // Its entry's revision not known here (forgotten with an end): the writer looks.
          it = kept.emplace(std::string(client_id), kept_session{}).first;
        }
        kept_session& e = it->second;
        f(e);
        if (ends && !e.has_state && !e.queued && e.revision != 0) {
          kept.erase(it);
          return;
        }
        if (!e.queued) queue = e.queued = true;
      }
      if (queue) queue_session_write(client_id);
    }
    /// Whose `key`'s entry is now: nothing when JetStream does not answer.
    struct entry_now {
      std::uint64_t revision = 0;
      bool mine = false, has_state = false;
    };
    std::optional<entry_now> look_up_entry(const std::string& key) {
      kvEntry* got = nullptr;
      if (kvStore_Get(&got, owners, key.c_str()) != NATS_OK) return std::nullopt;
      const owner_entry was = parse_owner(
          std::string_view(static_cast<const char*>(kvEntry_Value(got)), static_cast<std::size_t>(kvEntry_ValueLen(got))));
      entry_now out{kvEntry_Revision(got), was.node == opts.node && was.run == incarnation, !was.state.empty()};
      kvEntry_Destroy(got);
      return out;
    }
    /// Writes `client_id`'s entry as this node has its session now. On `writer`.
    void write_session(const std::string& client_id) {
      const std::string key = bucket_key(client_id);
      std::string value = owner_value();
      std::uint64_t revision = 0;
      bool ended = false;
      {
        std::lock_guard<std::mutex> lk(kept_mutex);
        const auto it = kept.find(client_id);
        if (it == kept.end()) return;
        kept_session& e = it->second;
        e.queued = false;
        revision = e.revision;
        ended = e.ended;
        if (!ended) {
          if (e.offline_since != 0) {
            value.push_back('@');
            value += hex(static_cast<std::uint64_t>(e.offline_since));
          }
          session_handover h;
          h.expiry_seconds = e.expiry;
          for (const auto& sub : e.subscriptions) h.subscriptions.push_back(sub.second);
          cluster::encode_handover(value, h);
        }
      }
      std::optional<entry_now> now;
      if (revision == 0 && owners != nullptr) {
        now = look_up_entry(key);
        if (now && now->mine) revision = now->revision;
      }
      std::uint64_t written = 0;
      natsStatus s = NATS_NOT_FOUND;
      if (revision != 0)
        s = kvStore_Update(&written, owners, key.c_str(), value.data(), static_cast<int>(value.size()), revision);
      (s == NATS_OK ? session_writes : session_writes_failed).fetch_add(1, std::memory_order_relaxed);
      // Not written: the entry as it is now says whose the client is.
      if (s != NATS_OK && revision != 0 && owners != nullptr) now = look_up_entry(key);
      bool again = false;
      {
        std::lock_guard<std::mutex> lk(kept_mutex);
        const auto it = kept.find(client_id);
        if (it == kept.end()) return;
        kept_session& e = it->second;
        if (s == NATS_OK) {
          e.revision = written;
          e.has_state = !ended;
          if (e.ended && !e.queued) kept.erase(it);
        } else if (now && !now->mine) {
          // Another node's client now: it asks this one for the session, which ends here then.
          if (!e.queued) kept.erase(it);
        } else if (now && now->revision != revision) {
          e.revision = now->revision;  // changed by a claim of this node's meanwhile: written again
          e.has_state = now->has_state;
          if (!e.queued) again = e.queued = true;
        } else if (!e.queued && e.revision == 0) {
          kept.erase(it);  // JetStream away, and the entry's revision never known: given up
        }
        // Otherwise JetStream is away or refused the value: the entry keeps what it had until
        // the session changes again.
      }
      if (again) queue_session_write(client_id);
    }

    /// Another node takes one of this node's clients: the broker closes the connection and gives
    /// the session, which goes back in parts of at most the server's payload size (published
    /// without waiting: the answer comes from the broker's executor). On nats.c's delivery thread.
    static void on_handover_request(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
      auto* st = static_cast<state*>(closure);
      const char* reply = natsMsg_GetReply(msg);
      const std::string_view b(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
      if (reply != nullptr && b.size() >= 2) st->hand_over(b[0] != 0, std::string(b.substr(1)), reply);
      natsMsg_Destroy(msg);
    }
    void hand_over(bool discard, std::string client_id, std::string reply) {
      {
        std::lock_guard<std::mutex> lk(mutex);
        if (stopped || !started || !in.hand_over) return;
        ++running;
      }
      // `done` may run after stop(): it answers only while the connection is there.
      std::weak_ptr<bool> alive = alive_token;
      const std::string client = client_id;
      in.hand_over(std::move(client_id), discard, [this, alive, client, reply = std::move(reply)](std::optional<session_handover> h) {
        const auto held = alive.lock();
        if (!held) return;
        {
          std::lock_guard<std::mutex> lk(mutex);
          if (stopped || !started) return;
          ++running;
        }
        answer_handover(reply, client, h);
        leave();
      });
      leave();
    }
    void answer_handover(const std::string& reply, const std::string& client, std::optional<session_handover>& h) {
      {
        // The stream's sequence of each message a consumer of the session brought: the next
        // node does not deliver it again when JetStream sends it there.
        std::lock_guard<std::mutex> fk(feed_mutex);
        if (const auto moving = fed_moving.find(client); moving != fed_moving.end()) {
          if (h)
            for (auto& d : h->messages)
              if (const auto it = moving->second.find(d.msg.get()); d.msg && it != moving->second.end())
                d.stream_sequence = it->second;
          fed_moving.erase(moving);
        }
      }
      std::string body;
      if (h) cluster::encode_handover(body, *h);
      if (h) sessions_given.fetch_add(1, std::memory_order_relaxed);  // counted before the taker can look
      const std::size_t room = static_cast<std::size_t>(std::max<int64_t>(natsConnection_GetMaxPayload(bucket), 1024)) - 32;
      const std::size_t parts = body.empty() ? 1 : (body.size() + room - 1) / room;
      std::string part;
      for (std::size_t i = 0; i < parts; ++i) {
        part.clear();
        detail::put_varint(part, i);
        detail::put_varint(part, body.empty() ? 0 : parts);  // 0: no session
        if (!body.empty()) part.append(body, i * room, room);
        natsConnection_Publish(bucket, reply.c_str(), part.data(), static_cast<int>(part.size()));
      }
    }

    // ---- interest

    void interest(std::string_view filter, bool present) {
      std::lock_guard<std::mutex> lk(mutex);
      if (present) {
        auto it = filters.emplace(std::string(filter), std::vector<natsSubscription*>()).first;
        if (started) subscribe(it->first, it->second);
        if (started && js_routes != nullptr) change_consumers(it->first, true);
      } else {
        const auto it = filters.find(filter);
        if (it == filters.end()) return;
        if (started && js_routes != nullptr) change_consumers(it->first, false);
        for (natsSubscription* s : it->second) {
          group_of.erase(s);
          int64_t d = 0;  // kept: the counter must not go back when a subscription goes
          if (natsSubscription_GetDropped(s, &d) == NATS_OK && d > 0) dropped_before += static_cast<std::uint64_t>(d);
          // Unsubscribe, not destroy: a delivery in progress still holds it; nats.c frees it
          // with its last reference.
          natsSubscription_Unsubscribe(s);
          natsSubscription_Destroy(s);
        }
        filters.erase(it);
      }
    }
    /// `$share/{ShareName}/{filter}` split; any other filter unshared. The engine gives valid
    /// filters (checked against its own limits), so this only splits; an empty filter for a
    /// shared one without its `/`.
    static topic::parsed_filter split_share(std::string_view filter) noexcept {
      if (!topic::is_shared_filter(filter)) return {{}, filter};
      const std::string_view rest = filter.substr(topic::share_prefix.size());
      const std::size_t slash = rest.find('/');
      if (slash == std::string_view::npos) return {};
      return {rest.substr(0, slash), rest.substr(slash + 1)};
    }
    /// NATS subscriptions for `filter`. mutex held.
    void subscribe(const std::string& filter, std::vector<natsSubscription*>& subs) {
      const topic::parsed_filter parts = split_share(filter);
      if (parts.filter.empty()) return;
      const bool shared = parts.is_shared();
      const std::string queue = shared ? map.queue_group(parts.share_name) : std::string();
      for (const std::string& subject : map.subjects(parts.filter)) {
        natsSubscription* s = nullptr;
        const natsStatus st = shared ? natsConnection_QueueSubscribe(&s, groups, subject.c_str(), queue.c_str(),
                                                                     &on_group_message, this)
                                     : natsConnection_Subscribe(&s, routes, subject.c_str(), &on_message, this);
        if (st != NATS_OK) continue;  // the connection is closed: stop() is near
        natsSubscription_SetPendingLimits(s, opts.max_pending_messages, -1);
        if (natsSubscription_SetOnCompleteCB(s, &on_subscription_done, this) == NATS_OK) ++live_subscriptions;
        subs.push_back(s);
        if (shared) group_of.emplace(s, filter);
      }
    }

    // ---- in, on nats.c's delivery thread

    /// Where a message came from: a plain subscription, a shared group's queue subscription, or a
    /// JetStream consumer (this node's, or a group's).
    enum class path { plain, group, stream };
    static void on_message(natsConnection*, natsSubscription* sub, natsMsg* msg, void* closure) {
      static_cast<state*>(closure)->take(sub, msg, path::plain);
      natsMsg_Destroy(msg);
    }
    static void on_group_message(natsConnection*, natsSubscription* sub, natsMsg* msg, void* closure) {
      static_cast<state*>(closure)->take(sub, msg, path::group);
      natsMsg_Destroy(msg);
    }

    /// Decodes a message and hands it on: to the group of `sub` if it is a group's, else to the
    /// node. A consumer also brings this node's own messages back: dropped, but for a group
    /// (whose chosen member may be here). False when the node is stopping and did not take it
    /// (JetStream sends it again, to another member for a group); a repeat or a malformed message
    /// counts as taken.
    bool take(natsSubscription* sub, natsMsg* msg, path from) {
      std::string group;
      message_ptr m;
      {
        std::lock_guard<std::mutex> lk(mutex);
        if (stopped || !started) return false;
        const auto it = group_of.find(sub);
        if (it != group_of.end()) {
          group = it->second;
        } else if (from == path::group) {
          return false;  // the group went
        }
        const bool plain = group.empty();
        m = decode(std::string_view(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg))),
                   plain, plain && from == path::stream);
        if (!m) return true;
        ++running;
      }
      received.fetch_add(1, std::memory_order_relaxed);
      if (!group.empty())
        in.to_group(group, std::move(m));
      else
        in.route(std::move(m));
      leave();
      return true;
    }

    /// The message in `b`, or nothing for one that is malformed, (`dedupe`) a repeat or
    /// (`not_own`) this node's own. mutex held.
    message_ptr decode(std::string_view b, bool dedupe, bool not_own = false) {
      std::size_t at = 0;
      auto varint = [&](std::uint64_t& v) { return detail::get_varint(b, at, v); };
      auto string = [&](std::string_view& s) {
        std::uint64_t n = 0;
        if (!varint(n) || n > b.size() - at) return false;
        s = b.substr(at, static_cast<std::size_t>(n));
        at += static_cast<std::size_t>(n);
        return true;
      };
      std::string_view origin, topic, props;
      std::uint64_t run = 0, seq = 0;
      if (b.size() < 2 || b[0] != '\x01' || (static_cast<unsigned char>(b[1]) & ~7u) != 0 ||
          (static_cast<unsigned char>(b[1]) & 3u) == 3u) {
        malformed.fetch_add(1, std::memory_order_relaxed);
        return {};
      }
      const auto flags = static_cast<unsigned char>(b[1]);
      at = 2;
      codec::properties_view checked;
      if (!string(origin) || !varint(run) || !varint(seq) || !string(topic) || !string(props) ||
          topic::validate_topic_name(topic) ||
          codec::properties_view::parse(props, codec::place_of(codec::packet_type::publish), checked)) {
        malformed.fetch_add(1, std::memory_order_relaxed);
        return {};
      }
      if (not_own && origin == opts.node && run == incarnation) return {};
      if (dedupe && repeated(origin, run, seq)) {
        repeats.fetch_add(1, std::memory_order_relaxed);
        return {};
      }
      return message::make(topic, b.substr(at), static_cast<codec::qos>(flags & 3u), (flags & 4u) != 0, props);
    }

    /// Whether (origin, run, seq) came already. A number older than the window counts as new:
    /// with one delivery thread a repeat follows its first copy closely. mutex held.
    bool repeated(std::string_view origin, std::uint64_t run, std::uint64_t seq) {
      auto it = seen.find(origin);
      if (it == seen.end()) it = seen.emplace(std::string(origin), seen_window{}).first;
      seen_window& w = it->second;
      constexpr std::uint64_t n = seen_window::size;
      if (w.incarnation != run) {  // a new run of that node: start again
        w = seen_window{};
        w.incarnation = run;
      }
      // A bit is valid while its number is within n of the highest seen.
      if (seq > w.high) {
        if (seq - w.high >= n)
          w.words.fill(0);
        else
          w.clear(w.high + 1, seq);  // skipped: not seen
        w.set(seq);
        w.high = seq;
        return false;
      }
      if (w.high - seq >= n) return false;
      if (w.test(seq)) return true;
      w.set(seq);
      return false;
    }

    // ---- connection events, on nats.c's threads

    static void on_disconnected(natsConnection*, void* closure) {
      static_cast<state*>(closure)->disconnects.fetch_add(1, std::memory_order_relaxed);
    }
    static void on_reconnected(natsConnection*, void* closure) {
      static_cast<state*>(closure)->reconnects.fetch_add(1, std::memory_order_relaxed);
    }
    static void on_closed(natsConnection*, void* closure) {
      auto* st = static_cast<state*>(closure);
      st->gone(st->live_connections);
    }
    static void on_subscription_done(void* closure) {
      auto* st = static_cast<state*>(closure);
      st->gone(st->live_subscriptions);
    }
    void gone(int& count) {
      std::lock_guard<std::mutex> lk(mutex);
      if (--count == 0) idle.notify_all();
    }
    static void on_error(natsConnection*, natsSubscription* sub, natsStatus s, void* closure) {
      // Slow consumers are counted from the subscriptions themselves (statistics()).
      if (s == NATS_MISSED_HEARTBEAT && sub != nullptr) static_cast<state*>(closure)->consumer_silent(sub);
    }

    nats_statistics statistics() {
      nats_statistics s;
      s.published = published.load();
      s.publish_failed = publish_failed.load();
      s.stream_failed = stream_failed.load();
      s.consumers_remade = consumers_remade.load();
      s.subscriptions = consumer_count.load(std::memory_order_relaxed);
      {
        std::lock_guard<std::mutex> ck(consumers_mutex);
        s.consumers_missing = consumers_missing;
      }
      s.received = received.load();
      s.repeats = repeats.load();
      s.malformed = malformed.load();
      s.disconnects = disconnects.load();
      s.reconnects = reconnects.load();
      s.retained_stored = retained_stored.load();
      s.retained_failed = retained_failed.load();
      s.retained_loaded = retained_loaded.load();
      s.claims = claimed.load();
      s.claims_failed = claims_failed.load();
      s.sessions_taken = sessions_taken.load();
      s.sessions_given = sessions_given.load();
      s.handovers_lost = handovers_lost.load();
      s.sessions_restored = sessions_restored.load();
      s.sessions_expired = sessions_expired.load();
      s.session_messages_done = fed_acknowledged.load();
      s.session_messages_repeated = fed_repeats.load();
      {
        std::lock_guard<std::mutex> fk(feed_mutex);
        s.session_messages_held = fed.size();
      }
      s.session_writes = session_writes.load();
      s.session_writes_failed = session_writes_failed.load();
      {
        std::lock_guard<std::mutex> kk(kept_mutex);
        s.sessions_known = kept.size();
      }
      std::lock_guard<std::mutex> lk(mutex);
      s.connected = started && routes != nullptr && groups != nullptr &&
                    natsConnection_Status(routes) == NATS_CONN_STATUS_CONNECTED &&
                    natsConnection_Status(groups) == NATS_CONN_STATUS_CONNECTED;
      s.dropped = dropped_before;
      for (const auto& f : filters) {
        s.subscriptions += f.second.size();
        for (natsSubscription* sub : f.second) {
          int64_t d = 0;
          if (natsSubscription_GetDropped(sub, &d) == NATS_OK && d > 0) s.dropped += static_cast<std::uint64_t>(d);
        }
      }
      return s;
    }
  };

  std::shared_ptr<state> st_ = std::make_shared<state>();
};

/// The storage policy that goes with cluster::nats (`using storage = cluster::nats_sessions;`):
/// persistent sessions outlive their node. attach() it to the cluster before
/// broker::connect_cluster().
///
/// - A kept session's expiry and subscriptions are written to its client's owners' entry
///   (nats_options::own_clients), so that a node that takes the client over from a node that is
///   gone (killed, cut off) resumes the session: Session Present, its subscriptions in place.
///   Written behind: no acknowledgement waits for the bucket, so a subscription made a moment
///   before its node is lost may be missing from the session.
/// - With JetStream delivery on, its subscriptions with Maximum QoS 1 or 2 (not shared, not No
///   Local) are fed through JetStream consumers of the session's own, which outlive the node: a
///   node acknowledges a message to JetStream only once the session is done with it (PUBACK,
///   PUBREC, dropped by the session's limits, the session ended). What a lost node held for the
///   session, and what came while no node had it, JetStream sends to the node that resumes it:
///   at least once at QoS 1 and 2 (a QoS 2 message the lost node had sent but not seen PUBREC
///   for may come twice).
class nats_sessions {
 public:
  static constexpr bool durable = true;

  void attach(nats& c) {
    st_ = c.st_;
    st_->keeps_sessions.store(true, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lk(st_->stream_tickets_mutex);
    st_->committed_handler = committed_;
    st_->commit_failed_handler = failed_;
  }

  void save_session(std::string_view client_id, std::uint32_t expiry_seconds) {
    change(client_id, false, [&](auto& e) {
      e.ended = false;
      e.expiry = expiry_seconds;
      e.offline_since = 0;  // at CONNECT: its client is here
    });
  }
  /// Its client left: a node that resumes it later counts its expiry from then.
  void session_offline(std::string_view client_id, std::chrono::system_clock::time_point since) {
    change(client_id, false, [&](auto& e) {
      e.offline_since = std::max<std::int64_t>(
          1, std::chrono::duration_cast<std::chrono::seconds>(since.time_since_epoch()).count());
    });
  }
  void erase_session(std::string_view client_id) {
    if (!st_) return;
    change(client_id, true, [](auto& e) {
      e.ended = true;
      e.expiry = 0;
      e.subscriptions.clear();
    });
    st_->session_consumers_change(client_id, {}, false);
    st_->fed_session_done(client_id, false);
  }
  /// Another node took the session over: it goes on there, with what JetStream still holds for
  /// it; this node lets go of its consumers and forgets its entry.
  void session_moved(std::string_view client_id) {
    if (!st_) return;
    {
      std::lock_guard<std::mutex> lk(st_->kept_mutex);
      if (const auto it = st_->kept.find(client_id); it != st_->kept.end()) st_->kept.erase(it);
    }
    st_->session_consumers_change(client_id, {}, false, true);
    st_->fed_session_done(client_id, true);
  }
  void save_subscription(std::string_view client_id, std::string_view filter, codec::subscribe_options options,
                         std::uint32_t identifier) {
    if (!st_) return;
    bool was_fed = false;
    change(client_id, false, [&](auto& e) {
      e.ended = false;
      auto& sub = e.subscriptions[std::string(filter)];
      was_fed = !sub.filter.empty() && nats::state::fed_filter(filter, sub.options);
      sub.filter.assign(filter);
      sub.options = options;
      sub.identifier = identifier;
    });
    const bool fed = nats::state::fed_filter(filter, options);
    if (fed || was_fed) st_->session_consumers_change(client_id, filter, fed);
  }
  void erase_subscription(std::string_view client_id, std::string_view filter) {
    if (!st_) return;
    bool was_fed = false;
    change(client_id, false, [&](auto& e) {
      if (const auto it = e.subscriptions.find(filter); it != e.subscriptions.end()) {
        was_fed = nats::state::fed_filter(filter, it->second.options);
        e.subscriptions.erase(it);
      }
    });
    if (was_fed) st_->session_consumers_change(client_id, filter, false);
  }

  // What becomes of the messages a session's consumers brought.
  void send(std::string_view client_id, std::uint16_t packet_id, const message_ptr& m, codec::qos) {
    if (st_) st_->fed_sent(client_id, packet_id, m.get());
  }
  void pubrec(std::string_view client_id, std::uint16_t packet_id) {
    if (st_) st_->fed_acknowledged_by_client(client_id, packet_id);  // received: not sent again
  }
  void acknowledge(std::string_view client_id, std::uint16_t packet_id) {
    if (st_) st_->fed_acknowledged_by_client(client_id, packet_id);
  }
  void drop(std::string_view, const message_ptr& m) {
    if (st_) st_->fed_finished(m.get(), true);
  }
  void clear_messages(std::string_view client_id) {
    if (st_) st_->fed_session_done(client_id, false);
  }

  // What the cluster keeps elsewhere (retained messages: their bucket) or not at all (wills,
  // QoS 2 messages received and not yet released).
  void save_retained(const message_ptr&) {}
  void erase_retained(std::string_view) {}
  void enqueue(std::string_view, const message_ptr&, codec::qos) {}
  void receive(std::string_view, std::uint16_t, const message_ptr&) {}
  void release(std::string_view, std::uint16_t) {}
  void save_will(std::string_view, const message_ptr&, std::chrono::system_clock::time_point) {}
  void erase_will(std::string_view) {}
  /// What an acknowledgement waits for: JetStream's answers to the QoS 1/2 messages this node
  /// published so far (0: none outstanding). A publisher's PUBACK, or its PUBREC, goes once
  /// JetStream has the message; one JetStream refused is refused (5.0 0x80; 3.1.1: the
  /// connection closes).
  std::uint64_t commit() { return st_ ? st_->stream_ticket() : 0; }
  /// The broker gives its handlers before attach(): kept here until then.
  void on_commit(std::function<void(std::uint64_t)> f) {
    committed_ = std::move(f);
    if (!st_) return;
    std::lock_guard<std::mutex> lk(st_->stream_tickets_mutex);
    st_->committed_handler = committed_;
  }
  void on_commit_failed(std::function<void(std::uint64_t, std::uint64_t, std::error_code)> f) {
    failed_ = std::move(f);
    if (!st_) return;
    std::lock_guard<std::mutex> lk(st_->stream_tickets_mutex);
    st_->commit_failed_handler = failed_;
  }
  /// Nothing at start: a session comes back when its client connects (claim()).
  template <class Loader>
  void load(Loader&) {}

 private:
  template <class F>
  void change(std::string_view client_id, bool ends, F&& f) {
    if (st_) st_->session_changed(client_id, ends, std::forward<F>(f));
  }
  std::shared_ptr<nats::state> st_;
  std::function<void(std::uint64_t)> committed_;
  std::function<void(std::uint64_t, std::uint64_t, std::error_code)> failed_;
};

}  // namespace cluster
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CLUSTER_NATS_HPP
