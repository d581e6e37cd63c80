#ifndef MQTTBROKER_STORAGE_SQLITE_HPP
#define MQTTBROKER_STORAGE_SQLITE_HPP

#include <mqttbroker/codec/properties.hpp>
#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/error.hpp>
#include <mqttbroker/message.hpp>
#include <mqttbroker/storage/contract.hpp>

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(MQTTBROKER_CRASH_POINTS)
#include <csignal>
#include <cstdlib>
#endif

MQTTBROKER_BEGIN_NAMESPACE
namespace storage {

// Crash points: named places in the storage path where a test build (MQTTBROKER_CRASH_POINTS
// defined) can die, so that a kill test hits each window between a commit and its
// acknowledgements every run rather than by chance (DECISIONS.md "Testing it"). Without the
// define they expand to nothing: no code, no symbol.
#if defined(MQTTBROKER_CRASH_POINTS)
namespace detail {
/// Dies by SIGKILL, as in a real crash (nothing flushed, no handler run), when the environment's
/// MQTTBROKER_CRASH_AT names this point: "name" for its first hit, "name:N" for its Nth. The
/// variable is read once, at the first point reached. The thread that reached it stalls 100 ms
/// first, as on a slow disk, while the other threads run on: whatever they would send in that
/// window (an acknowledgement reported too early) is sent before the kill, every run.
inline void crash_point(const char* name) noexcept {
  struct armed_point {
    std::string name;
    unsigned long long at = 1;
    std::atomic<unsigned long long> hits{0};
    armed_point() {
      const char* v = std::getenv("MQTTBROKER_CRASH_AT");
      if (v == nullptr) return;
      name = v;
      if (const auto colon = name.rfind(':'); colon != std::string::npos) {
        at = std::strtoull(name.c_str() + colon + 1, nullptr, 10);
        name.resize(colon);
      }
    }
  };
  static armed_point armed;
  if (armed.name.empty() || armed.name != name) return;
  if (armed.hits.fetch_add(1) + 1 != armed.at) return;
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
#if defined(SIGKILL)
  std::raise(SIGKILL);
#endif
  std::abort();  // no SIGKILL (Windows): as abrupt, short of the signal
}
}  // namespace detail
#define MQTTBROKER_CRASH_POINT(name) detail::crash_point(name)
#else
#define MQTTBROKER_CRASH_POINT(name) ((void)0)
#endif

/// What a commit waits for on the disk (SQLite's PRAGMA synchronous, in WAL mode).
enum class sqlite_sync : std::uint8_t {
  full,    // every commit is on the disk before its acknowledgements go: survives power loss
  normal,  // commits reach the OS at once and the disk at checkpoints: survives a killed process
};

/// What a store has written since it was opened.
struct sqlite_statistics {
  std::uint64_t commits = 0;          ///< batches taken (each one transaction, or none: see below)
  std::uint64_t changes_written = 0;  ///< row changes written in them
  /// Changes not written because a later one in the same batch undid them: an entry added and
  /// deleted there, as a QoS 1 delivery acknowledged before its commit is.
  std::uint64_t changes_undone = 0;
  /// Transactions written (commits that had changes left) and the time they took, from BEGIN to
  /// a durable COMMIT: in all, and how many took at most each of commit_latency_bounds.
  std::uint64_t transactions = 0;
  std::chrono::microseconds transaction_time{0};
  std::uint64_t transactions_within[8] = {};
};

/// The upper bounds of sqlite_statistics::transactions_within, in microseconds.
inline constexpr std::uint32_t commit_latency_bounds[8] = {100, 500, 1000, 5000, 10000, 50000, 100000, 500000};

/// How storage::sqlite opens its file and commits.
struct sqlite_options {
  std::string path;                               ///< the database file; made when missing
  sqlite_sync synchronous = sqlite_sync::full;
  /// How long a commit waits to gather more changes after the first one asks for it (0: it
  /// starts at once, and changes that arrive during a commit go into the next one anyway).
  std::chrono::microseconds group_commit_window{0};
  /// The file's size limit in bytes (0: none). Past it changes fail as a full disk does: the
  /// acknowledgements that wait for them are refused.
  std::uint64_t max_bytes = 0;
  /// Runs the commits: empty, the store starts a thread of its own; otherwise a function that
  /// runs its argument later on a thread that may block (a host's storage executor).
  std::function<void(std::function<void()>)> executor;
  /// The wall clock that dates what is stored (session expiry, wills, message expiry); the
  /// broker's clock policy's system time belongs here when it is not the system's.
  std::function<std::chrono::system_clock::time_point()> clock;
  /// Where the store reports what a host should know (a clock behind the last save, vacuums).
  std::function<void(std::string_view)> log;
};

/// A durable storage policy on SQLite 3 (storage/contract.hpp), in WAL mode, one file per broker,
/// taken with an exclusive lock. The engine's calls are recorded in memory under a mutex; commit()
/// hands them to a worker, which writes each batch in one transaction (group commit) and reports
/// its ticket to the broker's on_commit handler. Every queued or in-flight entry of every session
/// refers to one message row, which goes with its last reference.
///
/// Default-constructed it is closed: open() before the broker starts. Exceptions come only from
/// open(); afterwards failures are error codes (storage_errc) reported with the tickets.
class sqlite {
 public:
  static constexpr bool durable = true;
  /// The schema this version writes; a file with a newer one is refused, an older one migrated.
  static constexpr int schema_version = 2;

  sqlite() : s_(std::make_shared<shared>()) {}
  explicit sqlite(sqlite_options o) : sqlite() { open(std::move(o)); }
  sqlite(const sqlite&) = delete;
  sqlite& operator=(const sqlite&) = delete;
  ~sqlite() { close(); }

  /// Opens (or makes) the file; throws std::system_error (a storage_errc) naming the file and
  /// the reason. A file that is not a store, is damaged, has a newer schema or is held by
  /// another process is left as it was.
  void open(sqlite_options o) {
    std::error_code ec;
    std::string what;
    open(std::move(o), ec, &what);
    if (ec) throw std::system_error(ec, what);
  }
  void open(sqlite_options o, std::error_code& ec, std::string* what = nullptr) { s_->open(std::move(o), ec, what); }

  /// Commits what is recorded, stops the worker and closes the file. The broker must be stopped.
  void close() { s_->close(); }
  bool is_open() const { return s_->is_open(); }

  // ---- the storage contract (storage/contract.hpp): from any thread, serialised here

  void save_session(std::string_view client_id, std::uint32_t expiry_seconds) {
    s_->record(op_kind::save_session, client_id, [&](op& o) { o.b = expiry_seconds; });
  }
  void session_offline(std::string_view client_id, std::chrono::system_clock::time_point since) {
    s_->record(op_kind::session_offline, client_id, [&](op& o) {
      o.time = s_->stamp(since);
      s_->seen_ms = std::max(s_->seen_ms, o.time);
    });
  }
  void erase_session(std::string_view client_id) { s_->erase_session(client_id); }
  void save_subscription(std::string_view client_id, std::string_view filter, codec::subscribe_options options,
                         std::uint32_t identifier) {
    s_->record(op_kind::save_subscription, client_id, [&](op& o) {
      o.text.assign(filter);
      o.b = identifier;
      o.c = pack(options);
    });
  }
  void erase_subscription(std::string_view client_id, std::string_view filter) {
    s_->record(op_kind::erase_subscription, client_id, [&](op& o) { o.text.assign(filter); });
  }
  void save_retained(const message_ptr& m) {
    s_->record(op_kind::save_retained, m->topic(), [&](op& o) {
      o.msg = m;
      o.time = s_->message_expiry(*m);
    });
  }
  void erase_retained(std::string_view topic) { s_->record(op_kind::erase_retained, topic, [](op&) {}); }
  /// With what a resend after a restart repeats: the RETAIN flag and Subscription Identifiers.
  void enqueue(std::string_view client_id, const message_ptr& m, const delivery& d) { s_->enqueue(client_id, m, d); }
  void send(std::string_view client_id, std::uint16_t packet_id, const message_ptr& m, const delivery& d) {
    s_->send(client_id, packet_id, m, d);
  }
  void enqueue(std::string_view client_id, const message_ptr& m, codec::qos q) { enqueue(client_id, m, with_qos(q)); }
  void send(std::string_view client_id, std::uint16_t packet_id, const message_ptr& m, codec::qos q) {
    send(client_id, packet_id, m, with_qos(q));
  }
  void pubrec(std::string_view client_id, std::uint16_t packet_id) { s_->pubrec(client_id, packet_id); }
  void acknowledge(std::string_view client_id, std::uint16_t packet_id) { s_->acknowledge(client_id, packet_id); }
  void drop(std::string_view client_id, const message_ptr& m) { s_->drop(client_id, m); }
  void clear_messages(std::string_view client_id) { s_->clear_messages(client_id); }
  void receive(std::string_view client_id, std::uint16_t packet_id, const message_ptr& m) {
    s_->receive(client_id, packet_id, m);
  }
  void routed(std::string_view client_id, std::uint16_t packet_id) { s_->routed(client_id, packet_id); }
  void release(std::string_view client_id, std::uint16_t packet_id) { s_->release(client_id, packet_id); }
  void save_will(std::string_view client_id, const message_ptr& m, std::chrono::system_clock::time_point due) {
    s_->record(op_kind::save_will, client_id, [&](op& o) {
      o.msg = m;
      o.time = s_->stamp(due);
    });
  }
  void erase_will(std::string_view client_id) { s_->record(op_kind::erase_will, client_id, [](op&) {}); }

  std::uint64_t commit() { return s_->commit(); }
  /// The changes recorded from here to end_atomic() go into one transaction, whatever commit()
  /// other threads call meanwhile (a QoS 2 message's routing and its `routed` mark).
  std::uint64_t begin_atomic() { return s_->begin_atomic(); }
  void end_atomic(std::uint64_t token) { s_->end_atomic(token); }
  /// Replacing a handler waits for a report in progress, so that once an empty one is set (the
  /// broker's destructor) no report reaches the old one.
  void on_commit(std::function<void(std::uint64_t)> f) {
    std::lock_guard<std::mutex> rl(s_->report_mutex);
    std::lock_guard<std::mutex> lk(s_->mutex);
    s_->committed_handler = std::move(f);
  }
  void on_commit_failed(std::function<void(std::uint64_t, std::uint64_t, std::error_code)> f) {
    std::lock_guard<std::mutex> rl(s_->report_mutex);
    std::lock_guard<std::mutex> lk(s_->mutex);
    s_->failed_handler = std::move(f);
  }

  template <class Loader>
  void load(Loader& l) {
    s_->load(l);
  }

  /// The last error the worker met (storage_errc), for a host that polls.
  std::error_code last_error() const {
    std::lock_guard<std::mutex> lk(s_->mutex);
    return s_->last_error;
  }
  sqlite_statistics statistics() const {
    std::lock_guard<std::mutex> lk(s_->mutex);
    return s_->stats;
  }

 private:
  enum class op_kind : std::uint8_t {
    save_session,
    session_offline,
    erase_session,
    save_subscription,
    erase_subscription,
    save_retained,
    erase_retained,
    insert_message,
    delete_message,
    add_outgoing,
    update_outgoing,
    delete_outgoing,
    clear_messages,
    add_inbound,
    inbound_routed,
    delete_inbound,
    save_will,
    erase_will,
  };
  static constexpr std::size_t op_kinds = 18;

  /// One change as the worker writes it: `key` is the client identifier (the topic for a
  /// retained message); the other fields as the kind needs them.
  struct op {
    op_kind kind;
    std::uint64_t ticket;  // the commit() it belongs to
    std::uint64_t seq = 0;  // its place among all changes recorded
    std::string key;
    std::string text;        // filter; an outgoing row's Subscription Identifiers
    std::int64_t a = 0;      // message id, or seq
    std::int64_t b = 0;      // expiry, identifier, packet id
    std::int64_t time = 0;   // wall-clock milliseconds: offline since, due, message expiry (0: none)
    std::uint32_t c = 0;     // subscription options, qos
    std::uint32_t state = 0;  // outgoing_state
    bool retain = false;      // outgoing: the RETAIN flag as sent (text: its Subscription Identifiers)
    std::int64_t ref = 0;    // a message id referred to (0: none)
    std::uint64_t prev = 0;  // outgoing: the entry's change before this one (its seq; 0: none)
    message_ptr msg;
    bool undone = false;     // a later change undid it before the worker took it: not written
  };

  static delivery with_qos(codec::qos q) noexcept {
    delivery d;
    d.qos_level = q;
    return d;
  }
  /// Subscription Identifiers as an outgoing row keeps them: decimal, space-separated ("" none).
  static std::string identifiers_text(const delivery& d) {
    std::string t;
    for (std::size_t i = 0; i < d.subscription_id_count; ++i) {
      if (i != 0) t += ' ';
      t += std::to_string(d.subscription_ids[i]);
    }
    return t;
  }
  static std::vector<std::uint32_t> identifiers_of(std::string_view t) {
    std::vector<std::uint32_t> ids;
    std::uint64_t v = 0;
    bool digits = false;
    for (char ch : t) {
      if (ch >= '0' && ch <= '9') {
        v = std::min<std::uint64_t>(v * 10 + static_cast<std::uint64_t>(ch - '0'), 0xFFFFFFFFu);
        digits = true;
      } else if (digits) {
        ids.push_back(static_cast<std::uint32_t>(v));
        v = 0;
        digits = false;
      }
    }
    if (digits) ids.push_back(static_cast<std::uint32_t>(v));
    return ids;
  }

  static std::uint32_t pack(const codec::subscribe_options& o) noexcept {
    return static_cast<std::uint32_t>(o.max_qos) | (o.no_local ? 4u : 0u) | (o.retain_as_published ? 8u : 0u) |
           (static_cast<std::uint32_t>(o.retain_handling) << 4);
  }
  static codec::subscribe_options unpack(std::int64_t v) noexcept {
    codec::subscribe_options o;
    o.max_qos = static_cast<codec::qos>(v & 3);
    o.no_local = (v & 4) != 0;
    o.retain_as_published = (v & 8) != 0;
    o.retain_handling = static_cast<codec::retain_handling_option>((v >> 4) & 3);
    return o;
  }
  static std::int64_t to_ms(std::chrono::system_clock::time_point t) noexcept {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  }
  static std::chrono::system_clock::time_point from_ms(std::int64_t ms) noexcept {
    return std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::milliseconds(ms)));
  }

  static std::error_code to_error(int rc) noexcept {
    switch (rc & 0xFF) {
      case SQLITE_BUSY:
      case SQLITE_LOCKED: return storage_errc::locked;
      case SQLITE_NOTADB: return storage_errc::not_a_database;
      case SQLITE_CORRUPT: return storage_errc::corrupt;
      case SQLITE_FULL: return storage_errc::full;
      case SQLITE_CANTOPEN:
      case SQLITE_PERM:
      case SQLITE_READONLY: return storage_errc::cannot_open;
      default: return storage_errc::io_error;
    }
  }

  /// A prepared statement, finalized with its owner.
  struct statement {
    sqlite3_stmt* st = nullptr;
    statement() = default;
    statement(const statement&) = delete;
    statement& operator=(const statement&) = delete;
    ~statement() { sqlite3_finalize(st); }
  };

  /// A message row, one per message however many sessions refer to it.
  struct message_row {
    std::int64_t id;
    std::uint32_t refs;
    message_ptr keep;  // the address stays this message's while it is a key
    /// The seq of its insertion, while that may still wait for the worker (0: written or loaded).
    std::uint64_t insert_op = 0;
    /// A reference to it ended with a row that names it recorded: its deletion must be written,
    /// not its insertion undone, or that row would name a message the file never had.
    bool named = false;
  };
  /// What a session's entries refer to, mirrored in memory so that every change is one exact
  /// row write: the queue in order, the messages in flight and the received QoS 2 identifiers.
  struct outgoing_entry {
    std::int64_t seq;
    message_row* message;     // nullptr once PUBREC came (only the identifier is kept)
    std::uint64_t last_op = 0;  // the seq of its latest change (0: none since the load)
  };
  struct client_rows {
    std::deque<outgoing_entry> queued;
    std::map<std::uint16_t, outgoing_entry> inflight;
    std::map<std::uint16_t, message_row*> inbound;  // packet id -> unrouted message (nullptr: routed)
  };

  /// Everything, shared with the jobs a host's executor may still hold after close().
  struct shared : std::enable_shared_from_this<shared> {
    // ---- under `mutex`: what the engine records
    mutable std::mutex mutex;
    std::condition_variable wake;
    std::vector<op> pending;
    std::uint64_t issued = 0;      // the last ticket commit() gave
    bool recorded = false;         // a change since that ticket
    bool stopping = false;
    bool job_posted = false;       // executor mode: a commit job is on its way
    std::error_code last_error;
    sqlite_statistics stats;
    std::function<void(std::uint64_t)> committed_handler;
    std::function<void(std::uint64_t, std::uint64_t, std::error_code)> failed_handler;
    std::unordered_map<std::string, client_rows> clients;
    /// The session looked up last: a stream of deliveries to one session finds it without hashing.
    struct client_cache {
      const std::string* id = nullptr;
      client_rows* rows = nullptr;
    } last_client;
    std::unordered_map<const message*, message_row> messages;  // nodes: a row's address is stable
    std::int64_t next_seq = 0;
    std::int64_t next_message = 0;
    std::int64_t floor_ms = 0;     // the last save when the file was loaded: no time stored is older
    std::int64_t seen_ms = 0;      // the latest time recorded: the save time is never earlier
    std::uint64_t recorded_count = 0;    // changes recorded so far
    std::multiset<std::uint64_t> spans;  // open begin_atomic() spans: the first change each holds

    // Lock order: report_mutex, db_mutex, mutex. The handlers run under report_mutex alone: they
    // take the broker's locks, and the broker calls load() (db_mutex) holding them.
    // ---- under `report_mutex`: one batch at a time, from its write to its report
    std::mutex report_mutex;
    std::vector<op> taken;  // the batch being written
    // ---- under `db_mutex`: the connection
    std::mutex db_mutex;
    sqlite3* db = nullptr;
    statement statements[op_kinds];
    statement saved_at;
    std::uint64_t commits = 0;
    std::atomic<std::size_t> last_batch_size{0};  // changes the last batch took (gather_window)
    std::atomic<std::uint32_t> loaded_window_us{min_loaded_window_us};  // adapt_window

    sqlite_options opts;
    std::thread worker;
    bool open_ = false;  // `mutex`

    ~shared() {
      if (db != nullptr) sqlite3_close_v2(db);
    }

    bool is_open() const {
      std::lock_guard<std::mutex> lk(mutex);
      return open_;
    }

    std::chrono::system_clock::time_point wall_now() const {
      return opts.clock ? opts.clock() : std::chrono::system_clock::now();
    }
    /// A time to store: while the clock is behind the last save (a board without a real-time
    /// clock that booted in 1970), it is moved forward by the difference, so nothing stored
    /// looks older than it is once the clock jumps (DECISIONS.md "Clocks that jump").
    std::int64_t stamp(std::chrono::system_clock::time_point t) const {
      const std::int64_t behind = floor_ms - to_ms(wall_now());
      return to_ms(t) + std::max<std::int64_t>(behind, 0);
    }
    /// The wall-clock end of a message's Message Expiry Interval, counted from now (0: none).
    std::int64_t message_expiry(const message& m) const {
      if (m.expires_at() == 0) return 0;
      const auto p = m.properties().find(codec::property_id::message_expiry_interval);
      if (!p) return 0;
      return stamp(wall_now()) + std::int64_t{p->integer} * 1000;
    }
    void note(std::string_view text) const {
      if (opts.log) opts.log(text);
    }

    // ---- opening

    void fail(std::error_code& ec, std::string* what, std::error_code code, const std::string& why) {
      ec = code;
      if (what != nullptr) *what = "mqttbroker: storage '" + opts.path + "' (" + why + ")";
      if (db != nullptr) {
        sqlite3_close_v2(db);
        db = nullptr;
      }
    }
    int exec(const char* sql) { return sqlite3_exec(db, sql, nullptr, nullptr, nullptr); }
    /// The first column of the first row of `sql` as an integer; `rc` says whether it ran.
    std::int64_t scalar(const char* sql, int& rc) {
      sqlite3_stmt* st = nullptr;
      rc = sqlite3_prepare_v2(db, sql, -1, &st, nullptr);
      std::int64_t v = 0;
      if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
          v = sqlite3_column_int64(st, 0);
          rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
          rc = SQLITE_OK;
        }
      }
      sqlite3_finalize(st);
      return v;
    }

    void open(sqlite_options o, std::error_code& ec, std::string* what) {
      ec.clear();
      std::lock_guard<std::mutex> dl(db_mutex);
      {
        std::lock_guard<std::mutex> lk(mutex);
        if (open_) return fail(ec, what, storage_errc::cannot_open, "already open");
      }
      opts = std::move(o);
      // The file is made only when missing: an existing one is read before anything is written.
      int rc = sqlite3_open_v2(opts.path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                               nullptr);
      if (rc != SQLITE_OK) return fail(ec, what, storage_errc::cannot_open, sqlite3_errstr(rc));
      sqlite3_extended_result_codes(db, 1);
      // One owner: a second broker on the same file fails here, not later.
      exec("PRAGMA locking_mode=EXCLUSIVE");
      const std::int64_t app = scalar("PRAGMA application_id", rc);
      if (rc != SQLITE_OK) return refuse(ec, what, rc);
      const std::int64_t pages = scalar("PRAGMA page_count", rc);
      if (rc != SQLITE_OK) return refuse(ec, what, rc);
      if (pages != 0 && app != application_id)
        return fail(ec, what, storage_errc::not_a_database, "not a store of mqttbroker (another program's database)");
      if (pages != 0) {
        // Checked before anything is written: a damaged or newer file stays as it is.
        sqlite3_stmt* st = nullptr;
        rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &st, nullptr);
        std::string verdict;
        if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
          verdict = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
        else
          rc = sqlite3_errcode(db);
        sqlite3_finalize(st);
        if (rc != SQLITE_OK) return refuse(ec, what, rc);
        if (verdict != "ok") return fail(ec, what, storage_errc::corrupt, "damaged: " + verdict);
        const std::int64_t version = scalar("SELECT max(version) FROM schema_version", rc);
        if (rc != SQLITE_OK) return refuse(ec, what, rc);
        if (version > schema_version)
          return fail(ec, what, storage_errc::newer_schema,
                      "schema version " + std::to_string(version) + " is newer than this broker's (" +
                          std::to_string(schema_version) + ")");
        if (version < schema_version && !migrate(version)) return refuse(ec, what, sqlite3_errcode(db));
      } else {
        // New: incremental vacuum is chosen before the first table, the one time it can be.
        if (exec("PRAGMA auto_vacuum=INCREMENTAL") != SQLITE_OK || !migrate(0))
          return refuse(ec, what, sqlite3_errcode(db));
      }
      rc = exec("PRAGMA journal_mode=WAL");
      if (rc == SQLITE_OK)
        rc = exec(opts.synchronous == sqlite_sync::full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
      // The WAL file shrinks back after checkpoints instead of keeping its largest size.
      if (rc == SQLITE_OK) rc = exec("PRAGMA journal_size_limit=4194304");
      if (rc == SQLITE_OK && opts.max_bytes != 0) {
        const std::int64_t page = scalar("PRAGMA page_size", rc);
        const std::string limit =
            "PRAGMA max_page_count=" + std::to_string(std::max<std::uint64_t>(opts.max_bytes / std::uint64_t(page), 1));
        if (rc == SQLITE_OK) rc = exec(limit.c_str());
      }
      if (rc != SQLITE_OK) return refuse(ec, what, rc);
      if (!prepare()) return refuse(ec, what, sqlite3_errcode(db));
      std::lock_guard<std::mutex> lk(mutex);
      open_ = true;
      stopping = false;
      if (!opts.executor) worker = std::thread([this] { run_worker(); });
    }

    void refuse(std::error_code& ec, std::string* what, int rc) {
      std::string why = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
      const std::error_code code = to_error(rc);
      if (code == storage_errc::locked) why = "another broker?";
      fail(ec, what, code, why);
    }

    /// Brings the schema from `from` to schema_version, one step per version, in one transaction.
    bool migrate(std::int64_t from) {
      static const char* const steps[] = {
          // 0 -> 1
          "CREATE TABLE schema_version(version INTEGER NOT NULL);"
          "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
          "INSERT INTO meta VALUES('saved_at', 0);"
          "CREATE TABLE sessions(client_id TEXT PRIMARY KEY, expiry INTEGER NOT NULL, offline_since INTEGER)"
          " WITHOUT ROWID;"
          "CREATE TABLE subscriptions(client_id TEXT NOT NULL, filter TEXT NOT NULL, options INTEGER NOT NULL,"
          " identifier INTEGER NOT NULL, PRIMARY KEY(client_id, filter)) WITHOUT ROWID;"
          "CREATE TABLE messages(id INTEGER PRIMARY KEY, topic BLOB NOT NULL, payload BLOB NOT NULL,"
          " properties BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, expires INTEGER NOT NULL);"
          "CREATE TABLE outgoing(client_id TEXT NOT NULL, seq INTEGER NOT NULL, message_id INTEGER,"
          " qos INTEGER NOT NULL, state INTEGER NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY(client_id, seq))"
          " WITHOUT ROWID;"
          "CREATE TABLE inbound(client_id TEXT NOT NULL, packet_id INTEGER NOT NULL, message_id INTEGER,"
          " PRIMARY KEY(client_id, packet_id)) WITHOUT ROWID;"
          "CREATE TABLE retained(topic BLOB PRIMARY KEY, payload BLOB NOT NULL, properties BLOB NOT NULL,"
          " qos INTEGER NOT NULL, expires INTEGER NOT NULL) WITHOUT ROWID;"
          "CREATE TABLE wills(client_id TEXT PRIMARY KEY, topic BLOB NOT NULL, payload BLOB NOT NULL,"
          " properties BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, due INTEGER NOT NULL)"
          " WITHOUT ROWID;",
          // 1 -> 2: what a resend after a restart repeats of the first send, per session (the
          // message row is shared): the RETAIN flag as sent and the 5.0 Subscription Identifiers.
          // Rows of version 1 never kept them; they resend as version 1 did (RETAIN 0, none).
          "ALTER TABLE outgoing ADD COLUMN retain INTEGER NOT NULL DEFAULT 0;"
          "ALTER TABLE outgoing ADD COLUMN subscription_ids TEXT NOT NULL DEFAULT '';",
      };
      static_assert(sizeof steps / sizeof steps[0] == schema_version, "one migration step per schema version");
      if (exec("BEGIN IMMEDIATE") != SQLITE_OK) return false;
      bool ok = true;
      for (std::int64_t v = from; ok && v < schema_version; ++v) ok = exec(steps[v]) == SQLITE_OK;
      const std::string mark = "DELETE FROM schema_version; INSERT INTO schema_version VALUES(" +
                               std::to_string(schema_version) + "); PRAGMA application_id=" +
                               std::to_string(application_id) + ";";
      ok = ok && exec(mark.c_str()) == SQLITE_OK && exec("COMMIT") == SQLITE_OK;
      if (!ok) exec("ROLLBACK");
      return ok;
    }

    bool prepare() {
      static const char* const sql[op_kinds] = {
          // save_session: online again (its expiry does not run)
          "INSERT INTO sessions VALUES(?1, ?2, NULL) ON CONFLICT(client_id) DO UPDATE SET expiry=?2, "
          "offline_since=NULL",
          "UPDATE sessions SET offline_since=?2 WHERE client_id=?1",
          // erase_session: what it owned goes with it
          "DELETE FROM sessions WHERE client_id=?1",
          "INSERT OR REPLACE INTO subscriptions VALUES(?1, ?2, ?3, ?4)",
          "DELETE FROM subscriptions WHERE client_id=?1 AND filter=?2",
          "INSERT OR REPLACE INTO retained VALUES(?1, ?2, ?3, ?4, ?5)",
          "DELETE FROM retained WHERE topic=?1",
          "INSERT OR REPLACE INTO messages VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
          "DELETE FROM messages WHERE id=?1",
          "INSERT OR REPLACE INTO outgoing VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
          "UPDATE outgoing SET message_id=?3, state=?5, packet_id=?6 WHERE client_id=?1 AND seq=?2",
          "DELETE FROM outgoing WHERE client_id=?1 AND seq=?2",
          "DELETE FROM outgoing WHERE client_id=?1",
          "INSERT OR REPLACE INTO inbound VALUES(?1, ?2, ?3)",
          "UPDATE inbound SET message_id=NULL WHERE client_id=?1 AND packet_id=?2",
          "DELETE FROM inbound WHERE client_id=?1 AND packet_id=?2",
          "INSERT OR REPLACE INTO wills VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
          "DELETE FROM wills WHERE client_id=?1",
      };
      for (std::size_t i = 0; i < op_kinds; ++i)
        if (sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &statements[i].st, nullptr) != SQLITE_OK)
          return false;
      return sqlite3_prepare_v3(db, "UPDATE meta SET value=max(value, ?1) WHERE key='saved_at'", -1,
                                SQLITE_PREPARE_PERSISTENT, &saved_at.st, nullptr) == SQLITE_OK;
    }

    void close() {
      {
        std::lock_guard<std::mutex> lk(mutex);
        if (!open_) return;
        if (recorded) {
          ++issued;
          recorded = false;
        }
        stopping = true;
      }
      wake.notify_all();
      if (worker.joinable()) worker.join();
      // Whatever is left (executor mode, or what came during the worker's last batch) is
      // written here, on the caller's thread.
      commit_batch();
      std::lock_guard<std::mutex> dl(db_mutex);
      std::lock_guard<std::mutex> lk(mutex);
      open_ = false;
      for (auto& s : statements) {
        sqlite3_finalize(s.st);
        s.st = nullptr;
      }
      sqlite3_finalize(saved_at.st);
      saved_at.st = nullptr;
      sqlite3_close_v2(db);
      db = nullptr;
      clients.clear();
      last_client = {};
      messages.clear();
      pending.clear();
    }

    // ---- recording: the engine's threads, `mutex` held inside

    template <class F>
    void record(op_kind k, std::string_view key, F&& fill) {
      std::lock_guard<std::mutex> lk(mutex);
      push(k, key, fill);
    }
    template <class F>
    op& push(op_kind k, std::string_view key, F&& fill) {
      op& o = pending.emplace_back();
      o.kind = k;
      o.ticket = issued + 1;
      o.seq = ++recorded_count;
      o.key.assign(key);
      fill(o);
      recorded = true;
      return o;
    }

    /// A session's entries (nullptr: none, unless `make`). `mutex` held.
    client_rows* rows_of(std::string_view client_id, bool make) {
      if (last_client.id != nullptr && *last_client.id == client_id) return last_client.rows;
      auto it = make ? clients.try_emplace(std::string(client_id)).first : clients.find(std::string(client_id));
      if (it == clients.end()) return nullptr;
      last_client = {&it->first, &it->second};
      return &it->second;
    }
    void forget_rows(std::string_view client_id) {
      last_client = {};
      clients.erase(std::string(client_id));
    }

    /// The change `seq` while it waits for the worker, else nullptr. `pending` holds the changes
    /// from its first seq on without a gap: the worker takes a prefix.
    op* pending_op(std::uint64_t seq) {
      if (seq == 0 || pending.empty() || seq < pending.front().seq) return nullptr;
      return &pending[static_cast<std::size_t>(seq - pending.front().seq)];
    }

    /// The message's row, recorded when it is new here, with one reference more. `mutex` held.
    message_row* ref(const message_ptr& m) {
      auto it = messages.find(m.get());
      if (it != messages.end()) {
        ++it->second.refs;
        return &it->second;
      }
      const std::int64_t id = ++next_message;
      message_row& r = messages.emplace(m.get(), message_row{id, 1, m}).first->second;
      r.insert_op = push(op_kind::insert_message, {}, [&](op& o) {
                      o.a = id;
                      o.msg = m;
                      o.time = message_expiry(*m);
                    }).seq;
      return &r;
    }
    /// One reference less; the row goes with the last: its insertion undone while it still waits
    /// and nothing recorded names it (`undone`: this reference's own changes were undone), else
    /// deleted. `mutex` held.
    void unref(message_row* r, bool undone = false) {
      if (r == nullptr) return;
      if (!undone) r->named = true;
      if (--r->refs != 0) return;
      op* insert = r->named ? nullptr : pending_op(r->insert_op);
      if (insert != nullptr && insert->kind == op_kind::insert_message) {
        insert->undone = true;
        insert->msg = message_ptr();
        stats.changes_undone += 2;  // the insertion and the deletion not recorded
      } else {
        const std::int64_t id = r->id;
        push(op_kind::delete_message, {}, [&](op& o) { o.a = id; });
      }
      messages.erase(r->keep.get());
    }
    message_row* row_of(const message_ptr& m) {
      auto it = messages.find(m.get());
      return it == messages.end() ? nullptr : &it->second;
    }
    /// Records a change of an outgoing entry, chained to the entry's previous one.
    template <class F>
    void push_outgoing(op_kind k, std::string_view client_id, outgoing_entry& e, F&& fill) {
      const std::uint64_t prev = k == op_kind::add_outgoing ? 0 : e.last_op;
      e.last_op = push(k, client_id, [&](op& o) {
                    o.prev = prev;
                    fill(o);
                  }).seq;
    }
    /// An entry leaves (acknowledged, dropped, cleared): when every change of it since its addition
    /// still waits for the worker, they are all undone, so none is written (a QoS 1 delivery
    /// acknowledged before its commit: at high rates most of them), and true. Otherwise false:
    /// the caller records the deletion. The end state is the same; seqs are never reused.
    bool undo(const outgoing_entry& e) {
      std::uint64_t changes = 0;
      for (std::uint64_t s = e.last_op;;) {
        const op* o = pending_op(s);
        if (o == nullptr) return false;  // taken, or loaded: rows to delete
        ++changes;
        if (o->kind == op_kind::add_outgoing) break;
        s = o->prev;
      }
      for (std::uint64_t s = e.last_op; s != 0;) {
        op* o = pending_op(s);
        o->undone = true;
        o->msg = message_ptr();
        s = o->kind == op_kind::add_outgoing ? 0 : o->prev;
      }
      stats.changes_undone += changes + 1;  // and the deletion not recorded
      return true;
    }
    /// Removes an entry's rows: undone, or a deletion recorded; then its message reference.
    void remove_outgoing(std::string_view client_id, const outgoing_entry& e) {
      const bool undone = undo(e);
      if (!undone) push(op_kind::delete_outgoing, client_id, [&](op& o) { o.a = e.seq; });
      unref(e.message, undone);
    }

    void enqueue(std::string_view client_id, const message_ptr& m, const delivery& d) {
      std::lock_guard<std::mutex> lk(mutex);
      message_row* r = ref(m);
      auto& q = rows_of(client_id, true)->queued;
      q.push_back({++next_seq, r});
      push_outgoing(op_kind::add_outgoing, client_id, q.back(), [&](op& o) {
        o.a = q.back().seq;
        o.ref = r->id;
        o.c = static_cast<std::uint32_t>(d.qos_level);
        o.state = static_cast<std::uint32_t>(outgoing_state::queued);
        o.retain = d.retain;
        o.text = identifiers_text(d);
      });
    }
    void send(std::string_view client_id, std::uint16_t packet_id, const message_ptr& m, const delivery& d) {
      std::lock_guard<std::mutex> lk(mutex);
      client_rows& c = *rows_of(client_id, true);
      // The queued entry of this message moves into flight, keeping its place in the order.
      message_row* const known = row_of(m);
      auto it = known == nullptr ? c.queued.end()
                                 : std::find_if(c.queued.begin(), c.queued.end(),
                                                [&](const outgoing_entry& e) { return e.message == known; });
      const bool was_queued = it != c.queued.end();
      const outgoing_entry moved = was_queued ? *it : outgoing_entry{++next_seq, ref(m)};
      if (was_queued) c.queued.erase(it);
      if (auto old = c.inflight.find(packet_id); old != c.inflight.end()) {  // not expected: replaced
        const outgoing_entry gone = old->second;
        c.inflight.erase(old);
        remove_outgoing(client_id, gone);
      }
      outgoing_entry& e = c.inflight.emplace(packet_id, moved).first->second;
      // A queued row keeps the RETAIN flag and identifiers it was queued with: the same delivery.
      push_outgoing(was_queued ? op_kind::update_outgoing : op_kind::add_outgoing, client_id, e, [&](op& o) {
        o.a = e.seq;
        o.ref = e.message->id;
        o.b = packet_id;
        o.c = static_cast<std::uint32_t>(d.qos_level);
        o.state = static_cast<std::uint32_t>(outgoing_state::sent);
        o.retain = d.retain;
        o.text = identifiers_text(d);
      });
    }
    void pubrec(std::string_view client_id, std::uint16_t packet_id) {
      std::lock_guard<std::mutex> lk(mutex);
      client_rows* c = rows_of(client_id, false);
      if (c == nullptr) return;
      auto it = c->inflight.find(packet_id);
      if (it == c->inflight.end()) return;
      outgoing_entry& e = it->second;
      // Delivered: only the identifier is owed (PUBREL), so the message may go.
      push_outgoing(op_kind::update_outgoing, client_id, e, [&](op& o) {
        o.a = e.seq;
        o.b = packet_id;
        o.c = static_cast<std::uint32_t>(codec::qos::exactly_once);
        o.state = static_cast<std::uint32_t>(outgoing_state::pubrec_received);
      });
      unref(std::exchange(e.message, nullptr));
    }
    void acknowledge(std::string_view client_id, std::uint16_t packet_id) {
      std::lock_guard<std::mutex> lk(mutex);
      client_rows* c = rows_of(client_id, false);
      if (c == nullptr) return;
      auto it = c->inflight.find(packet_id);
      if (it == c->inflight.end()) return;
      const outgoing_entry e = it->second;
      c->inflight.erase(it);
      remove_outgoing(client_id, e);
    }
    void drop(std::string_view client_id, const message_ptr& m) {
      std::lock_guard<std::mutex> lk(mutex);
      client_rows* c = rows_of(client_id, false);
      message_row* const r = row_of(m);
      if (c == nullptr || r == nullptr) return;
      auto& q = c->queued;
      auto it = std::find_if(q.begin(), q.end(), [&](const outgoing_entry& e) { return e.message == r; });
      if (it == q.end()) return;
      const outgoing_entry e = *it;
      q.erase(it);
      remove_outgoing(client_id, e);
    }
    /// Forgets a session's entries in memory and records `k` (which deletes their rows).
    void forget_client(std::string_view client_id, op_kind k) {
      std::lock_guard<std::mutex> lk(mutex);
      client_rows* c = rows_of(client_id, false);
      push(k, client_id, [](op&) {});
      if (c == nullptr) return;
      // `k` deletes whatever rows were written; the changes still waiting are undone first, so
      // that no message row is left out that a written entry names.
      for (const auto& e : c->queued) unref(e.message, undo(e));
      for (const auto& e : c->inflight) unref(e.second.message, undo(e.second));
      for (const auto& e : c->inbound) unref(e.second);
      forget_rows(client_id);
    }
    void clear_messages(std::string_view client_id) { forget_client(client_id, op_kind::clear_messages); }
    void erase_session(std::string_view client_id) { forget_client(client_id, op_kind::erase_session); }
    void receive(std::string_view client_id, std::uint16_t packet_id, const message_ptr& m) {
      std::lock_guard<std::mutex> lk(mutex);
      message_row* r = ref(m);
      auto& in = rows_of(client_id, true)->inbound;
      if (auto old = in.find(packet_id); old != in.end()) unref(std::exchange(old->second, nullptr));
      in[packet_id] = r;
      push(op_kind::add_inbound, client_id, [&](op& o) {
        o.b = packet_id;
        o.ref = r->id;
      });
    }
    void routed(std::string_view client_id, std::uint16_t packet_id) {
      std::lock_guard<std::mutex> lk(mutex);
      client_rows* c = rows_of(client_id, false);
      if (c == nullptr) return;
      auto it = c->inbound.find(packet_id);
      if (it == c->inbound.end() || it->second == nullptr) return;
      push(op_kind::inbound_routed, client_id, [&](op& o) { o.b = packet_id; });
      unref(std::exchange(it->second, nullptr));
    }
    void release(std::string_view client_id, std::uint16_t packet_id) {
      std::lock_guard<std::mutex> lk(mutex);
      client_rows* c = rows_of(client_id, false);
      if (c == nullptr) return;
      auto it = c->inbound.find(packet_id);
      if (it == c->inbound.end()) return;
      message_row* const r = it->second;
      c->inbound.erase(it);
      push(op_kind::delete_inbound, client_id, [&](op& o) { o.b = packet_id; });
      unref(r);
    }

    std::uint64_t commit() {
      std::unique_lock<std::mutex> lk(mutex);
      if (!recorded) return issued;  // nothing new: durable with the tickets before it
      // No clock read here (once per packet): the batch's write stamps its save time.
      ++issued;
      recorded = false;
      const std::uint64_t ticket = issued;
      kick(lk);
      return ticket;
    }

    // ---- the worker

    /// Whether a batch can be taken: a change with a ticket given, not inside an open span.
    bool committable() const {
      return !pending.empty() && pending.front().ticket <= issued &&
             (spans.empty() || pending.front().seq < *spans.begin());
    }
    /// Has the worker (or a job on the host's executor) take what is committable. `lk` holds
    /// `mutex`; it is released.
    void kick(std::unique_lock<std::mutex>& lk) {
      if (!open_ || stopping || !committable()) return;
      if (opts.executor) {
        if (job_posted) return;
        job_posted = true;
        auto executor = opts.executor;
        lk.unlock();
        executor([self = shared_from_this()] { self->run_job(); });
        return;
      }
      lk.unlock();
      wake.notify_one();
    }
    std::uint64_t begin_atomic() {
      std::lock_guard<std::mutex> lk(mutex);
      const std::uint64_t first = recorded_count + 1;
      spans.insert(first);
      return first;
    }
    void end_atomic(std::uint64_t first) {
      std::unique_lock<std::mutex> lk(mutex);
      auto it = spans.find(first);
      if (it != spans.end()) spans.erase(it);
      // Another thread's commit() during the span put a ticket boundary inside it: a ticket now
      // puts the whole span on the same side of the next batch's end.
      if (recorded) {
        ++issued;
        recorded = false;
      }
      kick(lk);
    }

    void run_worker() {
      std::unique_lock<std::mutex> lk(mutex);
      for (;;) {
        wake.wait(lk, [&] { return stopping || committable(); });
        if (stopping) return;  // close() writes what is left
        const auto window = gather_window();
        if (window.count() != 0) {
          lk.unlock();
          std::this_thread::sleep_for(window);
          lk.lock();
        }
        lk.unlock();
        commit_batch();
        lk.lock();
      }
    }
    /// How long a batch waits to gather more: the configured window, and under load (the last
    /// batch was large) at least the loaded window. A loaded broker's acknowledgements wait for a
    /// flush anyway; the wait makes the batches larger, so fewer flushes, and lets deliveries be
    /// acknowledged before the worker takes them, so that they are never written (undo()).
    std::chrono::microseconds gather_window() const {
      if (last_batch_size < loaded_batch) return opts.group_commit_window;
      return std::max(opts.group_commit_window, std::chrono::microseconds(loaded_window_us.load(std::memory_order_relaxed)));
    }
    /// The loaded window follows the acknowledgements: while much of a large batch is still
    /// written (its deliveries not yet acknowledged) it grows, up to a bound that keeps a
    /// publisher's acknowledgement timely; while almost nothing is, it shrinks back, as a shorter
    /// wait acknowledges the publishers sooner. Called by the batch's writer.
    void adapt_window(std::size_t changes, std::size_t written) {
      if (changes < loaded_batch) return;
      std::uint32_t w = loaded_window_us.load(std::memory_order_relaxed);
      if (written * 4 > changes)
        w = std::min<std::uint32_t>(w + 1000, max_loaded_window_us);
      else if (written * 20 < changes)
        w = std::max<std::uint32_t>(w - 250, min_loaded_window_us);
      loaded_window_us.store(w, std::memory_order_relaxed);
    }
    static constexpr std::size_t loaded_batch = 1024;
    static constexpr std::uint32_t min_loaded_window_us = 1000;
    static constexpr std::uint32_t max_loaded_window_us = 8000;

    void run_job() {
      if (const auto window = gather_window(); window.count() != 0) std::this_thread::sleep_for(window);
      for (;;) {
        {
          std::lock_guard<std::mutex> lk(mutex);
          if (!open_ || !committable()) {
            job_posted = false;
            return;
          }
        }
        commit_batch();
      }
    }

    /// Takes every change up to the last ticket given and writes it in one transaction; reports
    /// the tickets. One batch at a time (report_mutex), so reports come in ticket order.
    void commit_batch() {
      std::lock_guard<std::mutex> rl(report_mutex);
      std::unique_lock<std::mutex> dl(db_mutex);
      std::vector<op>& batch = taken;  // empty, with the storage of an earlier batch
      std::uint64_t last;
      {
        std::lock_guard<std::mutex> lk(mutex);
        if (db == nullptr) return;
        last = issued;
        // The changes of the ticket not yet given stay: they belong to a packet still being
        // handled; so do those from the start of an open span (begin_atomic) on, and the tickets
        // reported durable stop before the first change left.
        const std::uint64_t span = spans.empty() ? ~std::uint64_t{0} : *spans.begin();
        // Tickets and seqs only grow along `pending`: its end is found by halving.
        const auto end = std::partition_point(pending.begin(), pending.end(),
                                              [&](const op& o) { return o.ticket <= last && o.seq < span; });
        if (end != pending.end()) last = std::min(last, end->ticket - 1);
        // Taken whole, the rest (a packet's changes, an open span) moved back: O(what stays).
        const auto taken_count = static_cast<std::size_t>(end - pending.begin());
        batch.swap(pending);
        for (auto it = batch.begin() + static_cast<std::ptrdiff_t>(taken_count); it != batch.end(); ++it)
          pending.push_back(std::move(*it));
        batch.resize(taken_count);
      }
      if (batch.empty()) return;
      last_batch_size.store(batch.size(), std::memory_order_relaxed);
      const std::size_t left = static_cast<std::size_t>(
          std::count_if(batch.begin(), batch.end(), [](const op& o) { return !o.undone; }));
      const bool nothing_left = left == 0;
      adapt_window(batch.size(), left);
      std::uint64_t first_failed = 0;
      std::error_code ec;
      const auto began = std::chrono::steady_clock::now();
      int rc = nothing_left ? SQLITE_OK : write(batch, false, first_failed);
      if ((rc & 0xFF) == SQLITE_FULL) {
        // Full: each change alone, so that deletions (which free pages) still go in and only the
        // changes that do not fit fail, with the tickets from the first of them on.
        exec("ROLLBACK");
        first_failed = 0;
        rc = write(batch, true, first_failed);
      }
      if (rc != SQLITE_OK) {
        exec("ROLLBACK");
        first_failed = batch.front().ticket;
        ec = to_error(rc);
      } else if (first_failed != 0) {
        ec = storage_errc::full;
      }
      {
        std::lock_guard<std::mutex> lk(mutex);
        if (ec) last_error = ec;
        ++stats.commits;
        if (rc == SQLITE_OK) stats.changes_written += left;
        if (!nothing_left) {
          const auto took =
              std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - began);
          ++stats.transactions;
          stats.transaction_time += took;
          for (std::size_t i = 0; i < 8; ++i)
            if (took.count() <= commit_latency_bounds[i]) ++stats.transactions_within[i];
        }
      }
      ++commits;
      if (rc == SQLITE_OK && commits % 64 == 0) reclaim();
      dl.unlock();
      std::function<void(std::uint64_t)> done;
      std::function<void(std::uint64_t, std::uint64_t, std::error_code)> failed;
      {
        std::lock_guard<std::mutex> lk(mutex);
        done = committed_handler;
        failed = failed_handler;
      }
      // Committed, not yet reported: the batch is on the disk and none of its acknowledgements left.
      MQTTBROKER_CRASH_POINT("sqlite.committed");
      // Failures first: the broker must know them before it looks at the tickets as settled.
      if (first_failed != 0 && failed) failed(first_failed, last, ec);
      if (done) done(last);
      // Reported: the acknowledgements are on their way to the clients, some sent, some not.
      MQTTBROKER_CRASH_POINT("sqlite.reported");
      batch.clear();
    }

    /// Writes `batch` in one transaction; with `each`, every change in a savepoint of its own,
    /// one that does not fit (SQLITE_FULL) left out and its ticket noted in `first_failed`.
    int write(std::vector<op>& batch, bool each, std::uint64_t& first_failed) {
      int rc = exec("BEGIN IMMEDIATE");
      if (rc != SQLITE_OK) return rc;
      for (op& o : batch) {
        if (o.undone) continue;
        if (each) exec("SAVEPOINT one");
        rc = apply(o);
        if (each) {
          if (rc != SQLITE_OK && (rc & 0xFF) != SQLITE_FULL) return rc;
          if (rc != SQLITE_OK) {
            exec("ROLLBACK TO one");
            if (first_failed == 0 || o.ticket < first_failed) first_failed = o.ticket;
          }
          exec("RELEASE one");
          rc = SQLITE_OK;
        } else if (rc != SQLITE_OK) {
          return rc;
        }
        // Inside the transaction, between this change and the next statement: nothing of the
        // batch may be on the disk after a crash here, and nothing of it was acknowledged.
        MQTTBROKER_CRASH_POINT("sqlite.in_transaction");
      }
      std::int64_t saved;
      {
        std::lock_guard<std::mutex> lk(mutex);
        saved = std::max(seen_ms, stamp(wall_now()));
      }
      sqlite3_bind_int64(saved_at.st, 1, saved);
      rc = step(saved_at.st);
      if (rc != SQLITE_OK && !each) return rc;
      rc = exec("COMMIT");
      if (rc != SQLITE_OK && each) {
        // Not even the commit fits: nothing of the batch went in.
        first_failed = batch.front().ticket;
        exec("ROLLBACK");
        return SQLITE_OK;
      }
      return rc;
    }

    /// Runs a statement whose parameters are all bound, then unbinds them: the text and blobs
    /// are bound without a copy (SQLITE_STATIC), their owner alive only for the step.
    static int step(sqlite3_stmt* st) {
      int rc = sqlite3_step(st);
      sqlite3_reset(st);
      sqlite3_clear_bindings(st);
      return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
    }
    static void bind_text(sqlite3_stmt* st, int i, std::string_view s) {
      sqlite3_bind_text(st, i, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
    }
    static void bind_blob(sqlite3_stmt* st, int i, std::string_view s) {
      // A zero-length blob, not NULL, for an empty payload.
      sqlite3_bind_blob(st, i, s.empty() ? "" : s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
    }
    static void bind_message(sqlite3_stmt* st, int first, const message& m) {
      bind_blob(st, first, m.topic());
      bind_blob(st, first + 1, m.payload());
      bind_blob(st, first + 2, m.properties().bytes());
      sqlite3_bind_int(st, first + 3, static_cast<int>(m.qos_level()));
    }

    int apply(const op& o) {
      sqlite3_stmt* st = statements[static_cast<std::size_t>(o.kind)].st;
      switch (o.kind) {
        case op_kind::save_session:
          bind_text(st, 1, o.key);
          sqlite3_bind_int64(st, 2, o.b);
          break;
        case op_kind::session_offline:
          bind_text(st, 1, o.key);
          sqlite3_bind_int64(st, 2, o.time);
          break;
        case op_kind::erase_session: {
          // Everything the session owned: one statement per table.
          static const char* const tables[] = {"subscriptions", "outgoing", "inbound", "wills"};
          for (const char* t : tables) {
            const std::string sql = std::string("DELETE FROM ") + t + " WHERE client_id=?1";
            sqlite3_stmt* d = nullptr;
            int rc = sqlite3_prepare_v2(db, sql.c_str(), -1, &d, nullptr);
            if (rc == SQLITE_OK) {
              bind_text(d, 1, o.key);
              rc = step(d);
            }
            sqlite3_finalize(d);
            if (rc != SQLITE_OK) return rc;
          }
          bind_text(st, 1, o.key);
          break;
        }
        case op_kind::save_subscription:
          bind_text(st, 1, o.key);
          bind_text(st, 2, o.text);
          sqlite3_bind_int64(st, 3, o.c);
          sqlite3_bind_int64(st, 4, o.b);
          break;
        case op_kind::erase_subscription:
          bind_text(st, 1, o.key);
          bind_text(st, 2, o.text);
          break;
        case op_kind::save_retained:
          bind_message(st, 1, *o.msg);
          sqlite3_bind_int64(st, 5, o.time);
          break;
        case op_kind::erase_retained: bind_blob(st, 1, o.key); break;
        case op_kind::insert_message:
          sqlite3_bind_int64(st, 1, o.a);
          bind_message(st, 2, *o.msg);
          sqlite3_bind_int(st, 6, o.msg->retain() ? 1 : 0);
          sqlite3_bind_int64(st, 7, o.time);
          break;
        case op_kind::delete_message: sqlite3_bind_int64(st, 1, o.a); break;
        case op_kind::add_outgoing:
        case op_kind::update_outgoing:
          if (o.kind == op_kind::add_outgoing) {
            sqlite3_bind_int(st, 7, o.retain ? 1 : 0);
            bind_text(st, 8, o.text);
          }
          bind_text(st, 1, o.key);
          sqlite3_bind_int64(st, 2, o.a);
          if (o.ref != 0)
            sqlite3_bind_int64(st, 3, o.ref);
          else
            sqlite3_bind_null(st, 3);
          sqlite3_bind_int64(st, 4, o.c);
          sqlite3_bind_int64(st, 5, o.state);
          sqlite3_bind_int64(st, 6, o.b);
          break;
        case op_kind::delete_outgoing:
          bind_text(st, 1, o.key);
          sqlite3_bind_int64(st, 2, o.a);
          break;
        case op_kind::clear_messages: {
          bind_text(st, 1, o.key);
          const int rc = step(st);
          if (rc != SQLITE_OK) return rc;
          sqlite3_stmt* d = nullptr;
          int rc2 = sqlite3_prepare_v2(db, "DELETE FROM inbound WHERE client_id=?1", -1, &d, nullptr);
          if (rc2 == SQLITE_OK) {
            bind_text(d, 1, o.key);
            rc2 = step(d);
          }
          sqlite3_finalize(d);
          return rc2;
        }
        case op_kind::add_inbound:
          bind_text(st, 1, o.key);
          sqlite3_bind_int64(st, 2, o.b);
          sqlite3_bind_int64(st, 3, o.ref);
          break;
        case op_kind::inbound_routed:
        case op_kind::delete_inbound:
          bind_text(st, 1, o.key);
          sqlite3_bind_int64(st, 2, o.b);
          break;
        case op_kind::save_will:
          bind_text(st, 1, o.key);
          bind_message(st, 2, *o.msg);
          sqlite3_bind_int(st, 6, o.msg->retain() ? 1 : 0);
          sqlite3_bind_int64(st, 7, o.time);
          break;
        case op_kind::erase_will: bind_text(st, 1, o.key); break;
      }
      return step(st);
    }

    /// Gives freed pages back to the file system and keeps the WAL short, so that a store whose
    /// messages come and go does not keep its largest size.
    void reclaim() {
      int rc = SQLITE_OK;
      const std::int64_t free_pages = scalar("PRAGMA freelist_count", rc);
      if (rc == SQLITE_OK && free_pages > 256) exec("PRAGMA incremental_vacuum");
      exec("PRAGMA wal_checkpoint(TRUNCATE)");
    }

    // ---- loading

    template <class Loader>
    void load(Loader& l) {
      std::lock_guard<std::mutex> dl(db_mutex);
      std::lock_guard<std::mutex> lk(mutex);
      if (db == nullptr) return;
      // Rows that lost their owner (a change refused by a full disk) are dropped first.
      exec("BEGIN IMMEDIATE;"
           "DELETE FROM subscriptions WHERE client_id NOT IN (SELECT client_id FROM sessions);"
           "DELETE FROM outgoing WHERE client_id NOT IN (SELECT client_id FROM sessions)"
           " OR (message_id IS NULL AND state<>2) OR (message_id IS NOT NULL AND message_id NOT IN (SELECT id FROM messages));"
           "DELETE FROM inbound WHERE client_id NOT IN (SELECT client_id FROM sessions);"
           "UPDATE inbound SET message_id=NULL WHERE message_id NOT IN (SELECT id FROM messages);"
           "DELETE FROM wills WHERE client_id NOT IN (SELECT client_id FROM sessions);"
           "DELETE FROM messages WHERE id NOT IN (SELECT message_id FROM outgoing WHERE message_id IS NOT NULL"
           " UNION SELECT message_id FROM inbound WHERE message_id IS NOT NULL);"
           "COMMIT;");
      int rc = SQLITE_OK;
      const std::int64_t saved = scalar("SELECT value FROM meta WHERE key='saved_at'", rc);
      const std::int64_t now_ms = to_ms(l.system_now());
      floor_ms = saved;
      // DECISIONS.md "Clocks that jump": a clock behind the last save has not run since; the
      // time between the save and now counts as nothing, and nothing expires for it.
      const std::int64_t effective = std::max(now_ms, saved);
      if (now_ms < saved)
        note("storage: the clock (" + std::to_string(now_ms / 1000) + ") is behind the last save (" +
             std::to_string(saved / 1000) + "): expiry counts from the save time until the clock passes it");
      auto in_broker_time = [&](std::int64_t ms) { return from_ms(ms - effective + now_ms); };
      auto text = [](sqlite3_stmt* st, int i) {
        const void* p = sqlite3_column_blob(st, i);
        return std::string_view(static_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(st, i)));
      };
      auto rows = [&](const char* sql, auto&& each) {
        sqlite3_stmt* st = nullptr;
        if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) return;
        while (sqlite3_step(st) == SQLITE_ROW) each(st);
        sqlite3_finalize(st);
      };
      auto expiry_of = [&](std::int64_t wall) -> std::uint32_t {
        return wall == 0 ? 0 : l.expiry_second(in_broker_time(wall));
      };

      rows("SELECT client_id, expiry, offline_since FROM sessions", [&](sqlite3_stmt* st) {
        const auto expiry = static_cast<std::uint32_t>(sqlite3_column_int64(st, 1));
        // Online when the broker stopped: its expiry runs from the last save.
        const std::int64_t since = sqlite3_column_type(st, 2) == SQLITE_NULL ? saved : sqlite3_column_int64(st, 2);
        std::int64_t left = expiry;
        if (expiry != 0xFFFFFFFFu) left = std::int64_t{expiry} - std::max<std::int64_t>(effective - since, 0) / 1000;
        clients.emplace(std::string(text(st, 0)), client_rows{});
        l.session(text(st, 0), expiry, std::chrono::seconds(std::max<std::int64_t>(left, 0)));
      });
      rows("SELECT client_id, filter, options, identifier FROM subscriptions", [&](sqlite3_stmt* st) {
        l.subscription(text(st, 0), text(st, 1), unpack(sqlite3_column_int64(st, 2)),
                       static_cast<std::uint32_t>(sqlite3_column_int64(st, 3)));
      });
      rows("SELECT topic, payload, properties, qos, expires FROM retained", [&](sqlite3_stmt* st) {
        l.retained(message::make(text(st, 0), text(st, 1), static_cast<codec::qos>(sqlite3_column_int(st, 3)), true,
                                 text(st, 2), expiry_of(sqlite3_column_int64(st, 4))));
      });
      std::unordered_map<std::int64_t, message_row*> by_id;
      rows("SELECT id, topic, payload, properties, qos, retain, expires FROM messages", [&](sqlite3_stmt* st) {
        const std::int64_t id = sqlite3_column_int64(st, 0);
        message_ptr m = message::make(text(st, 1), text(st, 2), static_cast<codec::qos>(sqlite3_column_int(st, 4)),
                                      sqlite3_column_int(st, 5) != 0, text(st, 3), expiry_of(sqlite3_column_int64(st, 6)));
        message_row& r = messages.emplace(m.get(), message_row{id, 0, m}).first->second;
        next_message = std::max(next_message, id);
        by_id.emplace(id, &r);
      });
      auto message_of = [&](sqlite3_stmt* st, int i) -> std::pair<message_row*, message_ptr> {
        if (sqlite3_column_type(st, i) == SQLITE_NULL) return {nullptr, message_ptr()};
        auto it = by_id.find(sqlite3_column_int64(st, i));
        if (it == by_id.end()) return {nullptr, message_ptr()};
        ++it->second->refs;
        return {it->second, it->second->keep};
      };
      rows("SELECT client_id, seq, message_id, qos, state, packet_id, retain, subscription_ids FROM outgoing"
           " ORDER BY client_id, seq",
           [&](sqlite3_stmt* st) {
             auto c = clients.find(std::string(text(st, 0)));
             if (c == clients.end()) return;
             const std::int64_t seq = sqlite3_column_int64(st, 1);
             next_seq = std::max(next_seq, seq);
             auto [row, m] = message_of(st, 2);
             const auto state = static_cast<outgoing_state>(sqlite3_column_int(st, 4));
             const auto packet_id = static_cast<std::uint16_t>(sqlite3_column_int(st, 5));
             if (state == outgoing_state::queued)
               c->second.queued.push_back({seq, row});
             else
               c->second.inflight.emplace(packet_id, outgoing_entry{seq, row});
             const std::vector<std::uint32_t> ids = identifiers_of(text(st, 7));
             delivery d;
             d.qos_level = static_cast<codec::qos>(sqlite3_column_int(st, 3));
             d.retain = sqlite3_column_int(st, 6) != 0;
             d.subscription_ids = ids.data();
             d.subscription_id_count = ids.size();
             l.outgoing(c->first, packet_id, std::move(m), d, state);
           });
      rows("SELECT client_id, packet_id, message_id FROM inbound", [&](sqlite3_stmt* st) {
        auto c = clients.find(std::string(text(st, 0)));
        if (c == clients.end()) return;
        auto [row, m] = message_of(st, 2);
        const auto packet_id = static_cast<std::uint16_t>(sqlite3_column_int(st, 1));
        c->second.inbound.emplace(packet_id, row);
        l.inbound(c->first, packet_id, std::move(m));
      });
      rows("SELECT client_id, topic, payload, properties, qos, retain, due FROM wills", [&](sqlite3_stmt* st) {
        l.will(text(st, 0),
               message::make(text(st, 1), text(st, 2), static_cast<codec::qos>(sqlite3_column_int(st, 4)),
                             sqlite3_column_int(st, 5) != 0, text(st, 3)),
               in_broker_time(sqlite3_column_int64(st, 6)));
      });
      // Loaded, the orphans' cleanup committed, before the broker routes what was left unrouted
      // and serves anyone: the next start must find the same.
      MQTTBROKER_CRASH_POINT("sqlite.loaded");
    }
  };

  std::shared_ptr<shared> s_;
  static constexpr std::int64_t application_id = 0x4D514254;  // "MQBT": this library's stores
};

#undef MQTTBROKER_CRASH_POINT

}  // namespace storage
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_STORAGE_SQLITE_HPP
