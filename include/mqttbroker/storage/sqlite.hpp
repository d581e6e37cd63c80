#ifndef MQTTBROKER_STORAGE_SQLITE_HPP
#define MQTTBROKER_STORAGE_SQLITE_HPP

#include <mqttbroker/codec/properties.hpp>
#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/detail/block_pool.hpp>
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
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
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
  std::uint64_t changes_written = 0;  ///< changes written in them: rows and journal records
  /// Changes not written because a later one in the same batch undid them: an entry added and
  /// deleted there, as a QoS 1 delivery acknowledged before its commit is.
  std::uint64_t changes_undone = 0;
  /// Transactions written (commits that had changes left) and the time they took, from BEGIN to
  /// a durable COMMIT: in all, and how many took at most each of commit_latency_bounds.
  std::uint64_t transactions = 0;
  std::chrono::microseconds transaction_time{0};
  std::uint64_t transactions_within[8] = {};
  /// Times the journal's older live records were written again so that its older segments could
  /// go (sqlite_options::journal_compact_bytes).
  std::uint64_t compactions = 0;
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
  /// The journal (messages and deliveries) may hold this many bytes, and up to twice what is
  /// still live in it, before its older live records are written again so that the segments
  /// holding them can go: a few entries that stay for long (a session that stays away) do not
  /// keep everything written after them.
  std::uint64_t journal_compact_bytes = 8u << 20;
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
/// its ticket to the broker's on_commit handler.
///
/// Sessions, subscriptions, retained messages and wills are rows. Messages and what refers to them
/// (each session's queued and in-flight deliveries, received QoS 2 identifiers) change several
/// times per message, so a batch writes their changes as records into one blob, a journal
/// segment: an entry's latest record holds its whole state, a tombstone ends it, and a load reads
/// the segments in order. Every entry of every session refers to one message record, which goes
/// with its last reference. A segment is deleted once none of its records is still the latest of
/// a live entry (and no older segment needs its tombstones); entries that stay long are written
/// again now and then (journal_compact_bytes), so the file stays near what is live.
///
/// Default-constructed it is closed: open() before the broker starts. Exceptions come only from
/// open(); afterwards failures are error codes (storage_errc) reported with the tickets.
class sqlite {
 public:
  static constexpr bool durable = true;
  /// The schema this version writes; a file with a newer one is refused, an older one migrated.
  static constexpr int schema_version = 3;

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
    s_->record(op_kind::save_session, client_id, [&](row_change& o) { o.b = expiry_seconds; });
  }
  void session_offline(std::string_view client_id, std::chrono::system_clock::time_point since) {
    s_->record(op_kind::session_offline, client_id, [&](row_change& o) {
      o.time = s_->stamp(since);
      s_->seen_ms = std::max(s_->seen_ms, o.time);
    });
  }
  void erase_session(std::string_view client_id) { s_->erase_session(client_id); }
  void save_subscription(std::string_view client_id, std::string_view filter, codec::subscribe_options options,
                         std::uint32_t identifier) {
    s_->record(op_kind::save_subscription, client_id, [&](row_change& o) {
      o.text.assign(filter);
      o.b = identifier;
      o.c = pack(options);
    });
  }
  void erase_subscription(std::string_view client_id, std::string_view filter) {
    s_->record(op_kind::erase_subscription, client_id, [&](row_change& o) { o.text.assign(filter); });
  }
  void save_retained(const message_ptr& m) {
    s_->record(op_kind::save_retained, m->topic(), [&](row_change& o) {
      o.msg = m;
      o.time = s_->message_expiry(*m);
    });
  }
  void erase_retained(std::string_view topic) { s_->record(op_kind::erase_retained, topic, [](row_change&) {}); }
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
    s_->record(op_kind::save_will, client_id, [&](row_change& o) {
      o.msg = m;
      o.time = s_->stamp(due);
    });
  }
  void erase_will(std::string_view client_id) { s_->record(op_kind::erase_will, client_id, [](row_change&) {}); }

  std::uint64_t commit() { return s_->commit(); }
  /// For a broker on one thread: the calls until let_go() are made by this thread alone, and the
  /// store locks once for them all (false: it does not, and locks per call as before).
  bool hold() { return s_->hold(); }
  void let_go() { s_->let_go(); }
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
    shared::recording_lock lk(*s_);
    return s_->last_error;
  }
  sqlite_statistics statistics() const {
    shared::recording_lock lk(*s_);
    return s_->stats;
  }

 private:
  /// The changes the engine's calls become. Sessions, subscriptions, retained messages and wills
  /// change seldom and are written as rows. Messages and the entries that refer to them (queued
  /// and in-flight deliveries, received QoS 2 identifiers) change several times per message: they
  /// are written as records in the batch's journal segment, one blob per commit, and a segment is
  /// deleted once nothing in it is still needed (see `segment`).
  enum class op_kind : std::uint8_t {
    save_session,
    session_offline,
    erase_session,
    save_subscription,
    erase_subscription,
    save_retained,
    erase_retained,
    save_will,
    erase_will,
    // journal records; the values are the records' first byte in the file
    message_put = 16,
    message_delete,
    outgoing_put,
    outgoing_delete,
    inbound_put,
    inbound_delete,
  };
  static constexpr std::size_t row_kinds = 9;
  static constexpr bool journaled(op_kind k) noexcept { return k >= op_kind::message_put; }
  /// A record that ends an entry (a tombstone): needed only while an older segment holds the entry.
  static constexpr bool ends_entry(op_kind k) noexcept {
    return k == op_kind::message_delete || k == op_kind::outgoing_delete || k == op_kind::inbound_delete;
  }

  /// A row change's fields, as the worker writes them: `key` the client identifier, or the topic
  /// for a retained message; the others as the kind needs them. Rows change seldom, so they
  /// live apart from the journal's records, which come several per message.
  struct row_change {
    std::string key;
    std::string text;       // filter
    std::int64_t b = 0;     // expiry, identifier
    std::int64_t time = 0;  // wall-clock milliseconds: offline since, due, message expiry (0: none)
    std::uint32_t c = 0;    // subscription options
    message_ptr msg;
  };

  /// One change: a row change, or a journal record. A record is encoded at `off` in the
  /// recording buffer, or (`deferred`) kept as the fields below and encoded only when the worker
  /// takes it: most puts are undone before that (a QoS 1 delivery acknowledged within the batch's
  /// wait), and then they cost no encoding at all.
  struct op {
    /// An encoded journal record's bytes in its buffer.
    struct encoded {
      std::size_t off;
      std::size_t len;
    };
    /// A deferred put's fields. The session's key and the message stay while the op waits: an
    /// entry that ends undoes its waiting records, and a message that goes settles its own first.
    struct put_fields {
      union {
        const std::string* client;  // outgoing_put, inbound_put: the key in `clients`
        const message* msg;         // message_put
      };
      std::int64_t id;      // message_put: its id; outgoing_put, inbound_put: their message's (0: none)
      std::int64_t number;  // message_put: its expiry; outgoing_put: the entry's seq
    };
    op_kind kind;
    bool undone = false;    // a later change made it unneeded before the worker took it: not written
    bool deferred = false;  // a put not yet encoded: `put` holds its fields, else `at` its bytes
    std::uint8_t flags = 0;         // outgoing_put: qos | state << 2 | retain << 4
    std::uint16_t packet_id = 0;    // outgoing_put, inbound_put
    std::uint64_t ticket;   // the commit() it belongs to
    std::uint64_t seq = 0;  // its place among all changes recorded
    /// A journal record: the entry's record it replaces or ends, already taken by the worker
    /// (0: none). Each entry has one record that counts: its latest.
    std::uint64_t prev = 0;
    // One of these, by kind: 56 bytes an op rather than 88, as tens of thousands wait per batch.
    union {
      encoded at;        // a journal record, encoded
      put_fields put;    // a journal record, deferred
      row_change* row;   // a row change, owned by `row_owners` (or the taken batch's)
    };
  };
  static_assert(std::is_trivially_destructible_v<op>);

  static delivery with_qos(codec::qos q) noexcept {
    delivery d;
    d.qos_level = q;
    return d;
  }
  /// Subscription Identifiers as an outgoing entry keeps them: decimal, space-separated ("" none).
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

  // ---- the journal's record format: a kind byte, the record's seq, then its fields as LEB128
  // integers and length-prefixed byte strings:
  //   message_put     id, qos | retain << 2, expires (wall-clock ms, 0 none), topic, payload, properties
  //   message_delete  id
  //   outgoing_put    client id, entry seq, message id (0 none), qos | state << 2 | retain << 4,
  //                   packet id, Subscription Identifiers (decimal, space-separated)
  //   outgoing_delete entry seq
  //   inbound_put     client id, packet id, message id (0: routed)
  //   inbound_delete  client id, packet id
  // A put carries the entry's whole state, so that the latest record of an entry is all a load
  // needs of it.

  /// Writes a record's fields into room made for them beforehand (append_fields): a byte string
  /// append per field (a call and a capacity check each) cost more than the rest of the encoding.
  struct field_writer {
    char* p;
    void byte(std::uint8_t v) noexcept { *p++ = static_cast<char>(v); }
    void varint(std::uint64_t v) noexcept {
      while (v >= 0x80) {
        *p++ = static_cast<char>((v & 0x7F) | 0x80);
        v >>= 7;
      }
      *p++ = static_cast<char>(v);
    }
    void bytes(std::string_view s) noexcept {
      varint(s.size());
      if (!s.empty()) std::memcpy(p, s.data(), s.size());
      p += s.size();
    }
  };
  static constexpr std::size_t max_varint = 10;
  /// Appends to `b` what `write` writes through a field_writer, in at most `room` bytes.
  template <class F>
  static void append_fields(std::string& b, std::size_t room, F&& write) {
    const std::size_t at = b.size();
    b.resize(at + room);
    field_writer w{&b[at]};
    write(w);
    b.resize(static_cast<std::size_t>(w.p - b.data()));
  }
  static void put_varint(std::string& b, std::uint64_t v) {
    char bytes[max_varint];  // one append, not one per byte
    field_writer w{bytes};
    w.varint(v);
    b.append(bytes, static_cast<std::size_t>(w.p - bytes));
  }
  static void put_bytes(std::string& b, std::string_view s) {
    put_varint(b, s.size());
    b.append(s.data(), s.size());
  }
  /// Reads records; `ok` turns false, for good, at the first byte that does not fit the format.
  struct record_reader {
    const unsigned char* p;
    const unsigned char* end;
    bool ok = true;
    bool done() const noexcept { return !ok || p == end; }
    std::uint8_t byte() noexcept {
      if (p == end) {
        ok = false;
        return 0;
      }
      return *p++;
    }
    std::uint64_t varint() noexcept {
      std::uint64_t v = 0;
      for (unsigned shift = 0; shift < 64; shift += 7) {
        const std::uint8_t c = byte();
        if (!ok) return 0;
        v |= std::uint64_t{c & 0x7Fu} << shift;
        if ((c & 0x80) == 0) return v;
      }
      ok = false;
      return 0;
    }
    std::string_view bytes() noexcept {
      const std::uint64_t n = varint();
      if (!ok || n > static_cast<std::uint64_t>(end - p)) {
        ok = false;
        return {};
      }
      const std::string_view s(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
      p += n;
      return s;
    }
  };

  /// A prepared statement, finalized with its owner.
  struct statement {
    sqlite3_stmt* st = nullptr;
    statement() = default;
    statement(const statement&) = delete;
    statement& operator=(const statement&) = delete;
    ~statement() { sqlite3_finalize(st); }
  };

  /// Freed message rows, kept for the next ones: a message in flight takes and gives back one,
  /// which from the heap cost more than the rest of its recording. It holds at most what the
  /// message table held at its peak, until the store goes; used under `mutex`, as the table is.
  class node_cache {
   public:
    node_cache() = default;
    node_cache(const node_cache&) = delete;
    node_cache& operator=(const node_cache&) = delete;
    ~node_cache() {
      for (std::size_t i = 0; i < kinds; ++i)
        while (free_node* n = heads_[i]) {
          unpoison(n, sizes_[i]);
          heads_[i] = n->next;
          ::operator delete(n);
        }
    }
    void* take(std::size_t bytes) {
      for (std::size_t i = 0; i < kinds; ++i)
        if (sizes_[i] == bytes && heads_[i] != nullptr) {
          free_node* n = heads_[i];
          unpoison(n, bytes);
          heads_[i] = n->next;
          return n;
        }
      return ::operator new(bytes < sizeof(free_node) ? sizeof(free_node) : bytes);
    }
    void give(void* p, std::size_t bytes) noexcept {
      for (std::size_t i = 0; i < kinds; ++i) {
        if (sizes_[i] == 0) sizes_[i] = bytes;  // the node sizes are few and known after first use
        if (sizes_[i] == bytes) {
          heads_[i] = ::new (p) free_node{heads_[i]};
          poison(p, bytes);  // a node used after it was freed is reported under ASan, as with the heap
          return;
        }
      }
      ::operator delete(p);
    }

   private:
    struct free_node {
      free_node* next;
    };
    static constexpr std::size_t kinds = 4;
    free_node* heads_[kinds] = {};
    std::size_t sizes_[kinds] = {};
    static void poison(void* p, std::size_t n) noexcept { ::mqttbroker::detail::poison_memory(p, n); }
    static void unpoison(void* p, std::size_t n) noexcept { ::mqttbroker::detail::unpoison_memory(p, n); }
  };
  /// A message, one per message however many sessions refer to it.
  struct message_row {
    std::int64_t id;
    std::uint32_t refs;
    message_ptr keep;         // the address stays this message's while it is a key
    std::int64_t expires;     // wall-clock end of its Message Expiry (0: none)
    std::uint64_t last_op = 0;  // the seq of its latest record
    bool named = false;         // see unref()
  };
  /// A queued or in-flight delivery of a session, with all that its record holds.
  struct outgoing_entry {
    std::int64_t seq;
    message_row* message;  // nullptr once PUBREC came (only the identifier is kept)
    std::uint64_t last_op = 0;
    std::uint16_t packet_id = 0;
    std::uint8_t qos = 0;
    std::uint8_t state = 0;  // outgoing_state
    bool retain = false;
    std::string ids;  // its Subscription Identifiers, as identifiers_text writes them
  };
  struct inbound_entry {
    message_row* message = nullptr;  // the unrouted message (nullptr: routed)
    std::uint64_t last_op = 0;
  };
  /// A session's entries by packet identifier, in no order (a load orders by entry seq): open
  /// addressing on a power-of-two table, the entries in the slots, with Robin Hood insertion
  /// (along a run, entries lie in the order of their homes). Identifiers come in sequence and
  /// are their own hash: a window of them takes consecutive slots, each at its home, so a lookup,
  /// an insertion and an erase each touch a slot or two, in order. One entry comes and goes per
  /// message in flight; a node-based map cost a division and a node per entry. Entries move on
  /// insertion and erase: no pointer to one is kept across calls.
  template <class Entry>
  class packet_table {
   public:
    Entry* find(std::uint16_t id) noexcept {
      if (count_ == 0) return nullptr;
      for (std::size_t i = id & mask_, d = 0;; i = (i + 1) & mask_, ++d) {
        slot& s = slots_[i];
        // Past an entry nearer its home than `id` would be, `id` is not in the run.
        if (!s.used || distance(i) < d) return nullptr;
        if (s.id == id) return &s.entry;
      }
    }
    /// Adds the entry of `id`, which the table does not hold.
    Entry& emplace(std::uint16_t id, Entry&& e) {
      if ((count_ + 1) * 2 > slots_.size()) resize(std::max<std::size_t>(slots_.size() * 2, 8));
      ++count_;
      return place(id, std::move(e));
    }
    /// The entry of `id`, added empty if the table does not hold it.
    Entry& operator[](std::uint16_t id) {
      if (Entry* e = find(id)) return *e;
      return emplace(id, Entry{});
    }
    /// Removes the entry of `id`, which the table holds: the entries after it in its run move
    /// back one slot, up to one at its home.
    void erase(std::uint16_t id) noexcept {
      std::size_t i = id & mask_;
      while (slots_[i].id != id || !slots_[i].used) i = (i + 1) & mask_;
      for (std::size_t j = (i + 1) & mask_; slots_[j].used && distance(j) != 0; j = (j + 1) & mask_) {
        slots_[i] = std::move(slots_[j]);
        i = j;
      }
      slots_[i] = slot{};
      --count_;
    }
    template <class F>
    void for_each(F&& f) {
      for (slot& s : slots_)
        if (s.used) f(s.id, s.entry);
    }

   private:
    struct slot {
      std::uint16_t id = 0;
      bool used = false;
      Entry entry{};
    };
    /// How far slot i's entry lies from its home.
    std::size_t distance(std::size_t i) const noexcept { return (i - (slots_[i].id & mask_)) & mask_; }
    /// Robin Hood: an entry further from its home takes the slot of one nearer to its own, which
    /// moves on. Returns where `id`'s entry went.
    Entry& place(std::uint16_t id, Entry&& e) {
      slot moving;
      moving.id = id;
      moving.used = true;
      moving.entry = std::move(e);
      Entry* placed = nullptr;
      for (std::size_t i = id & mask_, d = 0;; i = (i + 1) & mask_, ++d) {
        slot& s = slots_[i];
        if (!s.used) {
          s = std::move(moving);
          return placed != nullptr ? *placed : s.entry;
        }
        if (const std::size_t there = distance(i); there < d) {
          std::swap(s, moving);
          if (placed == nullptr) placed = &s.entry;
          d = there;
        }
      }
    }
    void resize(std::size_t n) {
      std::vector<slot> old(n);
      old.swap(slots_);
      mask_ = n - 1;
      for (slot& s : old)
        if (s.used) place(s.id, std::move(s.entry));
    }
    std::vector<slot> slots_;
    std::size_t count_ = 0;
    std::size_t mask_ = 0;
  };
  struct client_rows {
    const std::string* key = nullptr;  // its client identifier, the map's key: deferred records name it
    std::deque<outgoing_entry> queued;
    packet_table<outgoing_entry> inflight;
    packet_table<inbound_entry> inbound;
  };

  /// The message rows by the message's address: open addressing on a power-of-two table with
  /// linear probing. A row's address stays while it is in the table (entries point to it); the
  /// rows come from the store's node_cache. A node-based hash map cost a division and a walk of
  /// its bucket per lookup and per erase, a tenth of a recorded delivery's time. Each slot holds
  /// its row's key as well: a probe or an erase's shift reads no row.
  class message_table {
   public:
    explicit message_table(node_cache* nodes) : nodes_(nodes) {}
    message_table(const message_table&) = delete;
    message_table& operator=(const message_table&) = delete;
    ~message_table() { clear(); }

    message_row* find(const message* m) const noexcept {
      if (count_ == 0) return nullptr;
      for (std::size_t i = slot(m);; i = (i + 1) & mask_) {
        const entry& e = slots_[i];
        if (e.row == nullptr || e.key == m) return e.row;
      }
    }
    /// Adds the row of a message not in the table.
    message_row& insert(message_row&& row) {
      if ((count_ + 1) * 2 > slots_.size()) resize(std::max<std::size_t>(slots_.size() * 2, 64));
      auto* r = ::new (nodes_->take(sizeof(message_row))) message_row(std::move(row));
      place({r->keep.get(), r});
      ++count_;
      return *r;
    }
    /// Removes `r`, a row in the table (backward shift: no tombstones, probes stay short).
    void erase(message_row* r) noexcept {
      std::size_t i = slot(r->keep.get());
      while (slots_[i].row != r) i = (i + 1) & mask_;
      for (std::size_t j = (i + 1) & mask_; slots_[j].row != nullptr; j = (j + 1) & mask_) {
        // slots_[j] may move back to the hole at i unless its home lies cyclically in (i, j].
        const std::size_t home = slot(slots_[j].key);
        if (((j - home) & mask_) >= ((j - i) & mask_)) {
          slots_[i] = slots_[j];
          i = j;
        }
      }
      slots_[i] = entry{};
      --count_;
      drop(r);
    }
    template <class F>
    void for_each(F&& f) {
      for (const entry& e : slots_)
        if (e.row != nullptr) f(*e.row);
    }
    void clear() noexcept {
      for (entry& e : slots_)
        if (e.row != nullptr) drop(std::exchange(e, entry{}).row);
      count_ = 0;
    }

   private:
    struct entry {
      const message* key = nullptr;
      message_row* row = nullptr;  // nullptr: the slot is free
    };
    std::size_t slot(const message* m) const noexcept {
      // Fibonacci hashing of the address: its low bits are the allocator's alignment.
      return static_cast<std::size_t>((reinterpret_cast<std::uintptr_t>(m) * 0x9E3779B97F4A7C15ull) >> shift_) & mask_;
    }
    void place(entry e) noexcept {
      std::size_t i = slot(e.key);
      while (slots_[i].row != nullptr) i = (i + 1) & mask_;
      slots_[i] = e;
    }
    void resize(std::size_t n) {
      std::vector<entry> old(n);
      old.swap(slots_);
      mask_ = n - 1;
      shift_ = 64;
      for (std::size_t k = n; k > 1; k >>= 1) --shift_;
      for (const entry& e : old)
        if (e.row != nullptr) place(e);
    }
    void drop(message_row* r) noexcept {
      r->~message_row();
      nodes_->give(r, sizeof(message_row));
    }
    node_cache* nodes_;
    std::vector<entry> slots_;
    std::size_t count_ = 0;
    std::size_t mask_ = 0;
    unsigned shift_ = 64;
  };

  /// A journal segment: the records one commit wrote. `live` counts those that are still their
  /// entry's latest record; `ends` the tombstones. A segment goes when no record in it is live
  /// and either it is the oldest left (its tombstones end entries of segments already gone) or it
  /// holds no tombstone: a load then finds every entry's latest record and no stale one.
  struct segment {
    std::int64_t id;
    std::uint64_t first_seq, last_seq;  // the batch's seqs, undone changes included
    std::size_t bytes = 0;
    std::size_t records = 0;
    std::size_t live = 0;
    std::size_t ends = 0;
    bool puts = true;  // false: only its tombstones fit on a full disk; no put of its range exists
  };

  /// Everything, shared with the jobs a host's executor may still hold after close().
  struct shared : std::enable_shared_from_this<shared> {
    // ---- under `mutex`: what the engine records
    mutable std::mutex mutex;
    std::condition_variable wake;
    std::vector<op> pending;
    std::deque<std::unique_ptr<row_change>> row_owners;  // the row changes of `pending`, in order
    std::string records;           // the pending journal records' bytes (op::off, op::len)
    std::string kept_bytes;        // the spare buffer they move to when a batch is taken
    std::uint64_t issued = 0;      // the last ticket commit() gave
    bool recorded = false;         // a change since that ticket
    bool stopping = false;
    bool job_posted = false;       // executor mode: a commit job is on its way
    std::error_code last_error;
    sqlite_statistics stats;
    std::function<void(std::uint64_t)> committed_handler;
    std::function<void(std::uint64_t, std::uint64_t, std::error_code)> failed_handler;
    node_cache nodes;  // before the message table that uses it, so that it goes after it
    std::unordered_map<std::string, client_rows> clients;
    /// The session looked up last: a stream of deliveries to one session finds it without hashing.
    struct client_cache {
      const std::string* id = nullptr;
      client_rows* rows = nullptr;
    } last_client;
    message_table messages{&nodes};  // one row per message
    std::int64_t next_seq = 0;
    std::int64_t next_message = 0;
    std::int64_t floor_ms = 0;     // the last save when the file was loaded: no time stored is older
    std::int64_t seen_ms = 0;      // the latest time recorded: the save time is never earlier
    std::uint64_t recorded_count = 0;    // changes recorded so far
    std::multiset<std::uint64_t> spans;  // open begin_atomic() spans: the first change each holds
    std::uint64_t copying_until = 0;     // a compaction's copies, up to this seq, not yet written

    // Lock order: report_mutex, db_mutex, mutex. The handlers run under report_mutex alone: they
    // take the broker's locks, and the broker calls load() (db_mutex) holding them.
    // ---- under `report_mutex`: one batch at a time, from its write to its report
    std::mutex report_mutex;
    std::vector<op> taken;    // the batch being written
    std::vector<std::unique_ptr<row_change>> taken_rows;  // its row changes
    /// Of its journal records written (not undone), in order: what account() needs.
    struct taken_record {
      std::uint64_t prev;
      bool end;
    };
    std::vector<taken_record> taken_records;
    std::size_t taken_live = 0;  // its changes not undone
    std::string taken_bytes;  // its journal records
    std::string ends_blob;    // the tombstones alone, when only they fit (a full disk)
    std::string_view segment_bytes;  // what the batch's segment holds: taken_bytes or ends_blob
    double last_written_share = 0;  // adapt_window: the last large batch's share written
    bool window_grew = false;       // and whether the window grew after it
    std::uint32_t grow_pause = 0;   // large batches to go before the window may grow again
    // ---- under `db_mutex`: the connection and the journal's segments
    std::mutex db_mutex;
    sqlite3* db = nullptr;
    statement statements[row_kinds];
    statement saved_at, insert_segment, delete_segment;
    std::deque<segment> segments;      // in the file, oldest first
    std::vector<std::int64_t> to_drop;  // segments no longer needed, deleted with the next write
    std::int64_t last_segment = 0;
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
          // 2 -> 3: messages, deliveries and received QoS 2 identifiers move into the journal (a
          // row per change cost more than the rest of the broker's work per message); their rows
          // become one segment (legacy_to_journal) and the old tables stay, empty.
          "CREATE TABLE journal(segment INTEGER PRIMARY KEY, first_seq INTEGER NOT NULL,"
          " last_seq INTEGER NOT NULL, records BLOB NOT NULL);",
      };
      static_assert(sizeof steps / sizeof steps[0] == schema_version, "one migration step per schema version");
      if (exec("BEGIN IMMEDIATE") != SQLITE_OK) return false;
      bool ok = true;
      for (std::int64_t v = from; ok && v < schema_version; ++v) ok = exec(steps[v]) == SQLITE_OK;
      if (ok && from != 0 && from < 3) ok = legacy_to_journal();
      const std::string mark = "DELETE FROM schema_version; INSERT INTO schema_version VALUES(" +
                               std::to_string(schema_version) + "); PRAGMA application_id=" +
                               std::to_string(application_id) + ";";
      ok = ok && exec(mark.c_str()) == SQLITE_OK && exec("COMMIT") == SQLITE_OK;
      if (!ok) exec("ROLLBACK");
      return ok;
    }

    /// Schema 2 -> 3: the rows of messages, outgoing and inbound become the journal's first
    /// segment, in the records a version-3 store writes; the rows go.
    bool legacy_to_journal() {
      std::string b;
      std::uint64_t seq = 0;
      auto rows = [&](const char* sql, auto&& each) {
        sqlite3_stmt* st = nullptr;
        if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) return false;
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) each(st);
        sqlite3_finalize(st);
        return rc == SQLITE_DONE;
      };
      auto text = [](sqlite3_stmt* st, int i) {
        const void* p = sqlite3_column_blob(st, i);
        return std::string_view(static_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(st, i)));
      };
      auto head = [&](op_kind k) {
        b.push_back(static_cast<char>(k));
        put_varint(b, ++seq);
      };
      const bool ok =
          rows("SELECT id, topic, payload, properties, qos, retain, expires FROM messages",
               [&](sqlite3_stmt* st) {
                 head(op_kind::message_put);
                 put_varint(b, static_cast<std::uint64_t>(sqlite3_column_int64(st, 0)));
                 b.push_back(static_cast<char>((sqlite3_column_int(st, 4) & 3) | (sqlite3_column_int(st, 5) != 0 ? 4 : 0)));
                 put_varint(b, static_cast<std::uint64_t>(std::max<std::int64_t>(sqlite3_column_int64(st, 6), 0)));
                 put_bytes(b, text(st, 1));
                 put_bytes(b, text(st, 2));
                 put_bytes(b, text(st, 3));
               }) &&
          rows("SELECT client_id, seq, message_id, qos, state, packet_id, retain, subscription_ids FROM outgoing"
               " ORDER BY client_id, seq",
               [&](sqlite3_stmt* st) {
                 head(op_kind::outgoing_put);
                 put_bytes(b, text(st, 0));
                 put_varint(b, static_cast<std::uint64_t>(sqlite3_column_int64(st, 1)));
                 put_varint(b, static_cast<std::uint64_t>(sqlite3_column_int64(st, 2)));  // NULL reads 0
                 b.push_back(static_cast<char>((sqlite3_column_int(st, 3) & 3) | ((sqlite3_column_int(st, 4) & 3) << 2) |
                                               (sqlite3_column_int(st, 6) != 0 ? 16 : 0)));
                 put_varint(b, static_cast<std::uint64_t>(sqlite3_column_int(st, 5) & 0xFFFF));
                 put_bytes(b, text(st, 7));
               }) &&
          rows("SELECT client_id, packet_id, message_id FROM inbound", [&](sqlite3_stmt* st) {
            head(op_kind::inbound_put);
            put_bytes(b, text(st, 0));
            put_varint(b, static_cast<std::uint64_t>(sqlite3_column_int(st, 1) & 0xFFFF));
            put_varint(b, static_cast<std::uint64_t>(sqlite3_column_int64(st, 2)));
          });
      if (!ok) return false;
      if (seq == 0) return true;
      sqlite3_stmt* st = nullptr;
      int rc = sqlite3_prepare_v2(db, "INSERT INTO journal VALUES(1, 1, ?1, ?2)", -1, &st, nullptr);
      if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, static_cast<sqlite3_int64>(seq));
        bind_blob(st, 2, b);
        rc = step(st);
      }
      sqlite3_finalize(st);
      return rc == SQLITE_OK && exec("DELETE FROM messages; DELETE FROM outgoing; DELETE FROM inbound;") == SQLITE_OK;
    }

    bool prepare() {
      static const char* const sql[row_kinds] = {
          // save_session: online again (its expiry does not run)
          "INSERT INTO sessions VALUES(?1, ?2, NULL) ON CONFLICT(client_id) DO UPDATE SET expiry=?2, "
          "offline_since=NULL",
          "UPDATE sessions SET offline_since=?2 WHERE client_id=?1",
          // erase_session: its subscriptions and will go with it (its entries by their tombstones)
          "DELETE FROM sessions WHERE client_id=?1",
          "INSERT OR REPLACE INTO subscriptions VALUES(?1, ?2, ?3, ?4)",
          "DELETE FROM subscriptions WHERE client_id=?1 AND filter=?2",
          "INSERT OR REPLACE INTO retained VALUES(?1, ?2, ?3, ?4, ?5)",
          "DELETE FROM retained WHERE topic=?1",
          "INSERT OR REPLACE INTO wills VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
          "DELETE FROM wills WHERE client_id=?1",
      };
      for (std::size_t i = 0; i < row_kinds; ++i)
        if (sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &statements[i].st, nullptr) != SQLITE_OK)
          return false;
      return sqlite3_prepare_v3(db, "UPDATE meta SET value=max(value, ?1) WHERE key='saved_at'", -1,
                                SQLITE_PREPARE_PERSISTENT, &saved_at.st, nullptr) == SQLITE_OK &&
             sqlite3_prepare_v3(db, "INSERT INTO journal VALUES(?1, ?2, ?3, ?4)", -1, SQLITE_PREPARE_PERSISTENT,
                                &insert_segment.st, nullptr) == SQLITE_OK &&
             sqlite3_prepare_v3(db, "DELETE FROM journal WHERE segment=?1", -1, SQLITE_PREPARE_PERSISTENT,
                                &delete_segment.st, nullptr) == SQLITE_OK;
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
      for (statement* s : {&saved_at, &insert_segment, &delete_segment}) {
        sqlite3_finalize(s->st);
        s->st = nullptr;
      }
      sqlite3_close_v2(db);
      db = nullptr;
      clients.clear();
      last_client = {};
      messages.clear();
      pending.clear();
      row_owners.clear();
      records.clear();
      segments.clear();
      to_drop.clear();
    }

    // ---- recording: the engine's threads, `mutex` held inside

    /// The store this thread holds `mutex` of across a scope of calls (hold()), if any.
    static const shared*& holder() noexcept {
      static thread_local const shared* h = nullptr;
      return h;
    }
    /// `mutex` for one call from the engine, unless this thread holds it already (hold()).
    class recording_lock {
     public:
      explicit recording_lock(const shared& s) : lk_(s.mutex, std::defer_lock) {
        if (holder() != &s) lk_.lock();
      }
      void unlock() {
        if (lk_.owns_lock()) lk_.unlock();
      }

     private:
      std::unique_lock<std::mutex> lk_;
    };
    /// The engine's one thread takes `mutex` once for all the calls of a read or an event (the
    /// worker, the only other thread that takes it, waits at most that long): each call then
    /// costs no lock of its own. Not with a host's executor, whose job could run inline and
    /// take `mutex` again.
    bool hold() {
      if (opts.executor || holder() != nullptr) return false;
      mutex.lock();
      holder() = this;
      return true;
    }
    void let_go() {
      holder() = nullptr;
      mutex.unlock();
    }

    template <class F>
    void record(op_kind k, std::string_view key, F&& fill) {
      recording_lock lk(*this);
      fill(push_row(k, key));
    }
    /// Records a row change of `key`. Its fields are owned in the order of the ops (so that a
    /// batch taken from the front of `pending` takes the front of `row_owners`): ops stay
    /// trivially destructible, and a batch of thousands of journal records is let go without a
    /// pass. `mutex` held.
    row_change& push_row(op_kind k, std::string_view key) {
      op& o = push(k, prev_none);
      o.row = row_owners.emplace_back(std::make_unique<row_change>()).get();
      o.row->key.assign(key);
      return *o.row;
    }
    static constexpr std::uint64_t prev_none = 0;
    op& push(op_kind k, std::uint64_t prev) {
      op& o = pending.emplace_back();
      o.kind = k;
      o.ticket = issued + 1;
      o.seq = ++recorded_count;
      o.prev = prev;
      recorded = true;
      return o;
    }
    /// Records a journal record: its kind and seq, then what `fields` appends.
    template <class F>
    std::uint64_t push_record(op_kind k, std::uint64_t prev, F&& fields) {
      op& o = push(k, prev);
      const std::size_t off = records.size();
      records.push_back(static_cast<char>(k));
      put_varint(records, o.seq);
      fields(records);
      o.at = {off, records.size() - off};
      return o.seq;
    }

    /// A session's entries (nullptr: none, unless `make`). `mutex` held.
    client_rows* rows_of(std::string_view client_id, bool make) {
      if (last_client.id != nullptr && *last_client.id == client_id) return last_client.rows;
      auto it = make ? clients.try_emplace(std::string(client_id)).first : clients.find(std::string(client_id));
      if (it == clients.end()) return nullptr;
      it->second.key = &it->first;
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
    /// An entry's next record replaces its latest. A latest record of the same ticket, still
    /// waiting, is undone: the new one carries the whole state and the same commit writes it. One
    /// of an earlier ticket stays, as that ticket's commit must hold the entry as it was then.
    /// Returns the record the new one replaces (0: none).
    std::uint64_t supersede(std::uint64_t last) {
      op* o = pending_op(last);
      if (o == nullptr || o->ticket != issued + 1) return last;
      o->undone = true;
      ++stats.changes_undone;
      return o->prev;
    }
    /// An entry ends: its records still waiting are undone whatever their ticket (an entry that
    /// ended owes nothing, so no commit needs them), and a tombstone is recorded if a taken record
    /// of it remains for a load to find. True when none remains: no record written names what
    /// the entry referred to. `fields` encodes the tombstone.
    template <class F>
    bool end_entry(op_kind tombstone, std::uint64_t last, F&& fields) {
      std::uint64_t prev = last;
      while (op* o = pending_op(prev)) {
        o->undone = true;
        ++stats.changes_undone;
        prev = o->prev;
      }
      if (prev == 0) {
        ++stats.changes_undone;  // the tombstone not recorded either
        return true;
      }
      push_record(tombstone, prev, fields);
      return false;
    }

    void put_message(message_row& r) {
      op& o = push(op_kind::message_put, supersede(r.last_op));
      o.deferred = true;
      o.put.msg = r.keep.get();
      o.put.id = r.id;
      o.put.number = r.expires;
      r.last_op = o.seq;
    }
    void put_outgoing(const std::string& client_id, outgoing_entry& e) {
      const std::uint64_t prev = supersede(e.last_op);
      const auto flags = static_cast<std::uint8_t>((e.qos & 3) | ((e.state & 3) << 2) | (e.retain ? 16 : 0));
      const std::int64_t message_id = e.message != nullptr ? e.message->id : 0;
      if (!e.ids.empty()) {  // Subscription Identifiers: encoded now rather than kept per op
        e.last_op = push_record(op_kind::outgoing_put, prev, [&](std::string& b) {
          append_fields(b, outgoing_room(client_id, e.ids), [&](field_writer& w) {
            write_outgoing(w, client_id, e.seq, message_id, flags, e.packet_id, e.ids);
          });
        });
        return;
      }
      op& o = push(op_kind::outgoing_put, prev);
      o.deferred = true;
      o.put.client = &client_id;
      o.put.number = e.seq;
      o.put.id = message_id;
      o.flags = flags;
      o.packet_id = e.packet_id;
      e.last_op = o.seq;
    }
    void put_inbound(const std::string& client_id, std::uint16_t packet_id, inbound_entry& e) {
      op& o = push(op_kind::inbound_put, supersede(e.last_op));
      o.deferred = true;
      o.put.client = &client_id;
      o.packet_id = packet_id;
      o.put.id = e.message != nullptr ? e.message->id : 0;
      e.last_op = o.seq;
    }
    /// An outgoing_put's fields after its kind and seq; at most outgoing_room() bytes.
    static void write_outgoing(field_writer& w, std::string_view client_id, std::int64_t entry_seq,
                               std::int64_t message_id, std::uint8_t flags, std::uint16_t packet_id,
                               std::string_view ids) {
      w.bytes(client_id);
      w.varint(static_cast<std::uint64_t>(entry_seq));
      w.varint(static_cast<std::uint64_t>(message_id));
      w.byte(flags);
      w.varint(packet_id);
      w.bytes(ids);
    }
    static std::size_t outgoing_room(std::string_view client_id, std::string_view ids) noexcept {
      return 5 * max_varint + 1 + client_id.size() + ids.size();
    }
    /// A deferred put's record, appended to `b`; it is encoded from then on.
    static void encode(op& o, std::string& b) {
      // `at` takes the place of `put` only once the record is written.
      const op::put_fields f = o.put;
      const std::size_t off = b.size();
      std::size_t room = 1 + max_varint;  // kind, seq
      switch (o.kind) {
        case op_kind::message_put:
          room += 6 * max_varint + 1 + f.msg->topic().size() + f.msg->payload().size() +
                  f.msg->properties().bytes().size();
          break;
        case op_kind::outgoing_put: room += outgoing_room(*f.client, {}); break;
        case op_kind::inbound_put: room += 3 * max_varint + f.client->size(); break;
        default: break;
      }
      append_fields(b, room, [&](field_writer& w) {
        w.byte(static_cast<std::uint8_t>(o.kind));
        w.varint(o.seq);
        switch (o.kind) {
          case op_kind::message_put: {
            const message& m = *f.msg;
            w.varint(static_cast<std::uint64_t>(f.id));
            w.byte(static_cast<std::uint8_t>(static_cast<unsigned>(m.qos_level()) | (m.retain() ? 4u : 0u)));
            w.varint(static_cast<std::uint64_t>(f.number));
            w.bytes(m.topic());
            w.bytes(m.payload());
            w.bytes(m.properties().bytes());
            break;
          }
          case op_kind::outgoing_put: write_outgoing(w, *f.client, f.number, f.id, o.flags, o.packet_id, {}); break;
          case op_kind::inbound_put:
            w.bytes(*f.client);
            w.varint(o.packet_id);
            w.varint(static_cast<std::uint64_t>(f.id));
            break;
          default: break;
        }
      });
      o.at = {off, b.size() - off};
      o.deferred = false;
    }
    /// Encodes the deferred records among an entry's waiting ones, from its latest back, before
    /// what they point to goes.
    void settle(std::uint64_t last) {
      for (op* o = pending_op(last); o != nullptr; o = pending_op(o->prev))
        if (o->deferred && !o->undone) encode(*o, records);
    }

    /// The message's row, recorded when it is new here, with one reference more. `mutex` held.
    message_row* ref(const message_ptr& m) {
      if (message_row* known = messages.find(m.get())) {
        ++known->refs;
        return known;
      }
      message_row& r = messages.insert(message_row{++next_message, 1, m, message_expiry(*m)});
      put_message(r);
      return &r;
    }
    /// One reference less; the message ends with the last. `unnamed`: the reference ended with
    /// every record of its entry undone. Otherwise a record naming the message may be written,
    /// so its own record must be too, and a tombstone ends it, or a load would find an entry
    /// whose message the file never had. `mutex` held.
    void unref(message_row* r, bool unnamed = false) {
      if (r == nullptr) return;
      if (!unnamed) r->named = true;
      if (--r->refs != 0) return;
      const std::int64_t id = r->id;
      auto fields = [&](std::string& b) { put_varint(b, static_cast<std::uint64_t>(id)); };
      if (r->named) {
        settle(r->last_op);  // its put may still wait, and the message is about to go
        push_record(op_kind::message_delete, r->last_op, fields);
      } else {
        end_entry(op_kind::message_delete, r->last_op, fields);
      }
      messages.erase(r);
    }
    message_row* row_of(const message_ptr& m) { return messages.find(m.get()); }
    /// An outgoing entry ends (acknowledged, dropped, cleared), then its message reference.
    void remove_outgoing(const outgoing_entry& e) {
      const std::int64_t seq = e.seq;
      unref(e.message, end_entry(op_kind::outgoing_delete, e.last_op,
                                 [&](std::string& b) { put_varint(b, static_cast<std::uint64_t>(seq)); }));
    }
    void remove_inbound(std::string_view client_id, std::uint16_t packet_id, const inbound_entry& e) {
      unref(e.message, end_entry(op_kind::inbound_delete, e.last_op, [&](std::string& b) {
              put_bytes(b, client_id);
              put_varint(b, packet_id);
            }));
    }

    void enqueue(std::string_view client_id, const message_ptr& m, const delivery& d) {
      recording_lock lk(*this);
      message_row* r = ref(m);
      client_rows& c = *rows_of(client_id, true);
      outgoing_entry& e = c.queued.emplace_back();
      e.seq = ++next_seq;
      e.message = r;
      e.qos = static_cast<std::uint8_t>(d.qos_level);
      e.state = static_cast<std::uint8_t>(outgoing_state::queued);
      e.retain = d.retain;
      e.ids = identifiers_text(d);
      put_outgoing(*c.key, e);
    }
    void send(std::string_view client_id, std::uint16_t packet_id, const message_ptr& m, const delivery& d) {
      recording_lock lk(*this);
      client_rows& c = *rows_of(client_id, true);
      // The queued entry of this message moves into flight, keeping its place in the order.
      message_row* const known = c.queued.empty() ? nullptr : row_of(m);
      auto it = known == nullptr ? c.queued.end()
                                 : std::find_if(c.queued.begin(), c.queued.end(),
                                                [&](const outgoing_entry& e) { return e.message == known; });
      const bool was_queued = it != c.queued.end();
      outgoing_entry moved;
      if (was_queued) {
        moved = std::move(*it);
        c.queued.erase(it);
      } else {
        moved.seq = ++next_seq;
        moved.message = ref(m);
        moved.retain = d.retain;
        moved.ids = identifiers_text(d);
      }
      if (outgoing_entry* old = c.inflight.find(packet_id)) {  // not expected: replaced
        const outgoing_entry gone = std::move(*old);
        c.inflight.erase(packet_id);
        remove_outgoing(gone);
      }
      outgoing_entry& e = c.inflight.emplace(packet_id, std::move(moved));
      // A queued entry keeps the RETAIN flag and identifiers it was queued with: the same delivery.
      e.packet_id = packet_id;
      e.qos = static_cast<std::uint8_t>(d.qos_level);
      e.state = static_cast<std::uint8_t>(outgoing_state::sent);
      put_outgoing(*c.key, e);
    }
    void pubrec(std::string_view client_id, std::uint16_t packet_id) {
      recording_lock lk(*this);
      client_rows* c = rows_of(client_id, false);
      if (c == nullptr) return;
      outgoing_entry* const found = c->inflight.find(packet_id);
      if (found == nullptr) return;
      outgoing_entry& e = *found;
      // Delivered: only the identifier is owed (PUBREL), so the message may go.
      message_row* const m = std::exchange(e.message, nullptr);
      e.qos = static_cast<std::uint8_t>(codec::qos::exactly_once);
      e.state = static_cast<std::uint8_t>(outgoing_state::pubrec_received);
      e.ids.clear();
      put_outgoing(*c->key, e);
      unref(m);
    }
    void acknowledge(std::string_view client_id, std::uint16_t packet_id) {
      recording_lock lk(*this);
      client_rows* c = rows_of(client_id, false);
      if (c == nullptr) return;
      outgoing_entry* const found = c->inflight.find(packet_id);
      if (found == nullptr) return;
      const outgoing_entry e = std::move(*found);
      c->inflight.erase(packet_id);
      remove_outgoing(e);
    }
    void drop(std::string_view client_id, const message_ptr& m) {
      recording_lock lk(*this);
      client_rows* c = rows_of(client_id, false);
      message_row* const r = row_of(m);
      if (c == nullptr || r == nullptr) return;
      auto& q = c->queued;
      auto it = std::find_if(q.begin(), q.end(), [&](const outgoing_entry& e) { return e.message == r; });
      if (it == q.end()) return;
      const outgoing_entry e = std::move(*it);
      q.erase(it);
      remove_outgoing(e);
    }
    /// Ends a session's entries, each with its tombstone (or its waiting record undone); with
    /// `erase`, the session's row, subscriptions and will go too.
    void forget_client(std::string_view client_id, bool erase) {
      recording_lock lk(*this);
      if (erase) push_row(op_kind::erase_session, client_id);
      client_rows* c = rows_of(client_id, false);
      if (c == nullptr) return;
      for (const auto& e : c->queued) remove_outgoing(e);
      c->inflight.for_each([&](std::uint16_t, const outgoing_entry& e) { remove_outgoing(e); });
      c->inbound.for_each([&](std::uint16_t id, const inbound_entry& e) { remove_inbound(client_id, id, e); });
      forget_rows(client_id);
    }
    void clear_messages(std::string_view client_id) { forget_client(client_id, false); }
    void erase_session(std::string_view client_id) { forget_client(client_id, true); }
    void receive(std::string_view client_id, std::uint16_t packet_id, const message_ptr& m) {
      recording_lock lk(*this);
      message_row* r = ref(m);
      client_rows& c = *rows_of(client_id, true);
      inbound_entry& e = c.inbound[packet_id];
      message_row* const old = std::exchange(e.message, r);
      put_inbound(*c.key, packet_id, e);
      unref(old);
    }
    void routed(std::string_view client_id, std::uint16_t packet_id) {
      recording_lock lk(*this);
      client_rows* c = rows_of(client_id, false);
      if (c == nullptr) return;
      inbound_entry* const found = c->inbound.find(packet_id);
      if (found == nullptr || found->message == nullptr) return;
      message_row* const m = std::exchange(found->message, nullptr);
      put_inbound(*c->key, packet_id, *found);
      unref(m);
    }
    void release(std::string_view client_id, std::uint16_t packet_id) {
      recording_lock lk(*this);
      client_rows* c = rows_of(client_id, false);
      if (c == nullptr) return;
      inbound_entry* const found = c->inbound.find(packet_id);
      if (found == nullptr) return;
      const inbound_entry e = *found;
      c->inbound.erase(packet_id);
      remove_inbound(client_id, packet_id, e);
    }
    std::uint64_t commit() {
      recording_lock lk(*this);
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
    /// `mutex`; it is released, unless this thread holds it for a scope (hold()): the worker then
    /// takes the batch once the scope lets it go.
    void kick(recording_lock& lk) {
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
      recording_lock lk(*this);
      const std::uint64_t first = recorded_count + 1;
      spans.insert(first);
      return first;
    }
    void end_atomic(std::uint64_t first) {
      recording_lock lk(*this);
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
    /// The loaded window follows what waiting buys. While much of a large batch is still written
    /// (its deliveries not yet acknowledged) it grows, up to a bound that keeps a publisher's
    /// acknowledgement timely, as long as each step lets more be undone; a step after which as
    /// much is written is taken back (QoS 2: its records wait for commits, not for the wait, which
    /// then only delays the acknowledgements). While almost nothing is written it shrinks, as a
    /// shorter wait acknowledges the publishers sooner. Called by the batch's writer.
    void adapt_window(std::size_t changes, std::size_t written) {
      if (changes < loaded_batch) return;
      const double share = static_cast<double>(written) / static_cast<double>(changes);
      std::uint32_t w = loaded_window_us.load(std::memory_order_relaxed);
      if (share > 0.25) {
        if (window_grew && share > last_written_share * 0.9) {
          // Waiting longer bought nothing: back, and no new try for a while.
          w = std::max<std::uint32_t>(w - 1000, min_loaded_window_us);
          window_grew = false;
          grow_pause = grow_pause_batches;
        } else if (grow_pause != 0) {
          --grow_pause;
        } else {
          window_grew = w < max_loaded_window_us;
          w = std::min<std::uint32_t>(w + 1000, max_loaded_window_us);
        }
      } else {
        window_grew = false;
        if (share < 0.05) w = std::max<std::uint32_t>(w - 250, min_loaded_window_us);
      }
      last_written_share = share;
      loaded_window_us.store(w, std::memory_order_relaxed);
    }
    static constexpr std::size_t loaded_batch = 1024;
    static constexpr std::uint32_t min_loaded_window_us = 250;
    static constexpr std::uint32_t grow_pause_batches = 16;
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
        // The taken records' bytes, in order: the deferred ones encoded now, while what they
        // point to is still there; those still waiting keep theirs, moved to a buffer of their own.
        // One pass over the batch also counts what the write and account() need.
        taken_bytes.clear();
        taken_records.clear();
        taken_live = 0;
        std::size_t rows = 0;
        for (op& o : batch) {
          if (!journaled(o.kind)) ++rows;
          if (o.undone) continue;
          ++taken_live;
          if (!journaled(o.kind)) continue;
          taken_records.push_back({o.prev, ends_entry(o.kind)});
          if (o.deferred) {
            encode(o, taken_bytes);
          } else {
            const std::size_t at = taken_bytes.size();
            taken_bytes.append(records, o.at.off, o.at.len);
            o.at.off = at;
          }
        }
        // The row changes of the taken ops are the first of `row_owners` (both in recording order).
        for (; rows != 0; --rows) {
          taken_rows.push_back(std::move(row_owners.front()));
          row_owners.pop_front();
        }
        kept_bytes.clear();
        for (op& o : pending) {
          if (o.undone || o.deferred || !journaled(o.kind)) continue;
          const std::size_t at = kept_bytes.size();
          kept_bytes.append(records, o.at.off, o.at.len);
          o.at.off = at;
        }
        records.swap(kept_bytes);
      }
      if (batch.empty()) return;
      last_batch_size.store(batch.size(), std::memory_order_relaxed);
      const std::size_t left = taken_live;
      const bool nothing_left = left == 0 && to_drop.empty();
      adapt_window(batch.size(), left);
      std::uint64_t first_failed = 0;
      std::error_code ec;
      journal_write journal = journal_write::none;
      std::size_t written = 0;
      const auto began = std::chrono::steady_clock::now();
      int rc = nothing_left ? SQLITE_OK : write(batch, false, first_failed, journal, written);
      if ((rc & 0xFF) == SQLITE_FULL) {
        // Full: each row change alone and the journal's tombstones apart from its puts, so that
        // deletions (which free pages) still go in and only what does not fit fails, with the
        // tickets from the first of it on.
        exec("ROLLBACK");
        first_failed = 0;
        rc = write(batch, true, first_failed, journal, written);
      }
      if (rc != SQLITE_OK) {
        exec("ROLLBACK");
        first_failed = batch.front().ticket;
        journal = journal_write::none;
        written = 0;
        ec = to_error(rc);
      }
      // A compaction's copies are taken, written or not: a later one may start (copies a full
      // disk refused are made again then).
      if (copying_until != 0 && batch.back().seq >= copying_until) copying_until = 0;
      if (rc == SQLITE_OK) {
        if (first_failed != 0) ec = storage_errc::full;
        to_drop.clear();  // deleted in this transaction
        account(batch, journal);
        collect();
      }
      {
        std::lock_guard<std::mutex> lk(mutex);
        if (ec) last_error = ec;
        ++stats.commits;
        stats.changes_written += written;
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
      if (rc == SQLITE_OK) compact();
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
      taken_rows.clear();
      taken_bytes.clear();
    }

    enum class journal_write : std::uint8_t { none, all, ends_only };

    /// The batch's journal records as `segment_bytes` (only the tombstones with `ends_only`); how many.
    std::size_t gather(const std::vector<op>& batch, bool ends_only) {
      std::size_t n = 0;
      if (!ends_only) {
        // taken_bytes holds exactly these records, in order (commit_batch).
        segment_bytes = taken_bytes;
        return taken_records.size();
      }
      ends_blob.clear();
      for (const op& o : batch) {
        if (o.undone || !ends_entry(o.kind)) continue;
        ends_blob.append(taken_bytes, o.at.off, o.at.len);
        ++n;
      }
      segment_bytes = ends_blob;
      return n;
    }
    int insert_blob(const std::vector<op>& batch) {
      sqlite3_stmt* st = insert_segment.st;
      sqlite3_bind_int64(st, 1, last_segment + 1);
      sqlite3_bind_int64(st, 2, static_cast<sqlite3_int64>(batch.front().seq));
      sqlite3_bind_int64(st, 3, static_cast<sqlite3_int64>(batch.back().seq));
      bind_blob(st, 4, segment_bytes);
      return step(st);
    }

    /// Writes `batch` in one transaction: the segments no longer needed deleted first, the row
    /// changes, the journal records as one new segment. With `each`, every row change and the
    /// journal in a savepoint of its own: what does not fit (SQLITE_FULL) is left out and the
    /// first ticket it held noted in `first_failed`; of the journal, the tombstones alone are
    /// tried then. `written` counts the changes written.
    int write(std::vector<op>& batch, bool each, std::uint64_t& first_failed, journal_write& journal,
              std::size_t& written) {
      journal = journal_write::none;
      written = 0;
      auto fails = [&](const op& o) {
        if (first_failed == 0 || o.ticket < first_failed) first_failed = o.ticket;
      };
      int rc = exec("BEGIN IMMEDIATE");
      if (rc != SQLITE_OK) return rc;
      // Space first: on a full disk the pages of the segments that go make room for the new one.
      rc = delete_dropped();
      if (rc != SQLITE_OK) return rc;
      // Row changes are few: a batch of journal records alone skips the pass.
      for (op& o : batch) {
        if (taken_live == taken_records.size()) break;
        if (o.undone || journaled(o.kind)) continue;
        if (each) exec("SAVEPOINT one");
        rc = apply(o);
        if (each) {
          if (rc != SQLITE_OK && (rc & 0xFF) != SQLITE_FULL) return rc;
          if (rc != SQLITE_OK) {
            exec("ROLLBACK TO one");
            fails(o);
          } else {
            ++written;
          }
          exec("RELEASE one");
          rc = SQLITE_OK;
        } else if (rc != SQLITE_OK) {
          return rc;
        } else {
          ++written;
        }
        // Inside the transaction, between this change and the next statement: nothing of the
        // batch may be on the disk after a crash here, and nothing of it was acknowledged.
        MQTTBROKER_CRASH_POINT("sqlite.in_transaction");
      }
      if (std::size_t n = gather(batch, false); n != 0) {
        if (each) exec("SAVEPOINT one");
        rc = insert_blob(batch);
        if (rc == SQLITE_OK) {
          journal = journal_write::all;
          written += n;
        } else if (!each || (rc & 0xFF) != SQLITE_FULL) {
          return rc;
        } else {
          exec("ROLLBACK TO one");
          for (const op& o : batch)
            if (!o.undone && journaled(o.kind) && !ends_entry(o.kind)) fails(o);
          n = gather(batch, true);
          rc = n == 0 ? SQLITE_OK : insert_blob(batch);
          if (rc == SQLITE_OK && n != 0) {
            journal = journal_write::ends_only;
            written += n;
          } else if (rc != SQLITE_OK) {
            if ((rc & 0xFF) != SQLITE_FULL) return rc;
            exec("ROLLBACK TO one");
            for (const op& o : batch)
              if (!o.undone && journaled(o.kind)) fails(o);
          }
        }
        if (each) exec("RELEASE one");
        rc = SQLITE_OK;
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
        journal = journal_write::none;
        written = 0;
        return SQLITE_OK;
      }
      return rc;
    }

    // ---- the journal's segments: the worker, `db_mutex` held

    /// The segment that holds the record `seq`, if it is in the file.
    segment* segment_of(std::uint64_t seq) {
      if (seq == 0) return nullptr;
      auto it = std::partition_point(segments.begin(), segments.end(),
                                     [&](const segment& s) { return s.last_seq < seq; });
      if (it == segments.end() || it->first_seq > seq || !it->puts) return nullptr;
      return &*it;
    }
    /// A written batch's segment: its records counted, and each record it replaces or ends no
    /// longer live where it is.
    void account(const std::vector<op>& batch, journal_write journal) {
      if (journal == journal_write::none) return;
      segment s{last_segment + 1, batch.front().seq, batch.back().seq};
      s.bytes = segment_bytes.size();
      s.puts = journal == journal_write::all;
      for (const taken_record& o : taken_records) {
        const bool end = o.end;
        if (!end && !s.puts) continue;
        ++s.records;
        if (end)
          ++s.ends;
        else
          ++s.live;
        if (o.prev >= s.first_seq) {
          // Replaced in this batch (a record of an earlier ticket): counted above, if written.
          if (s.puts && s.live != 0) --s.live;
        } else if (segment* p = segment_of(o.prev); p != nullptr && p->live != 0) {
          --p->live;
        }
      }
      ++last_segment;
      segments.push_back(s);
    }
    /// Deletes the segments in `to_drop`, inside the caller's transaction.
    int delete_dropped() {
      for (std::int64_t id : to_drop) {
        sqlite3_bind_int64(delete_segment.st, 1, id);
        if (const int rc = step(delete_segment.st); rc != SQLITE_OK) return rc;
      }
      return SQLITE_OK;
    }
    /// The segments nothing needs any more, to be deleted with the next write.
    void collect() {
      while (!segments.empty() && segments.front().live == 0) {
        to_drop.push_back(segments.front().id);
        segments.pop_front();
      }
      for (auto it = segments.begin(); it != segments.end();) {
        if (it->live == 0 && it->ends == 0) {
          to_drop.push_back(it->id);
          it = segments.erase(it);
        } else {
          ++it;
        }
      }
    }
    /// A few long-lived entries (a message queued for a session that stays away) keep the oldest
    /// segments and everything after them. Once the journal holds more than journal_compact_bytes
    /// and twice what is live, the live records of its older half are recorded again, as any
    /// change is, so that those segments go after the next commit: the file stays within a small
    /// multiple of what is live, for a cost per byte kept, not per message.
    void compact() {
      if (copying_until != 0 || segments.size() < 2) return;
      std::uint64_t total = 0;
      double live = 0;
      for (const segment& s : segments) {
        total += s.bytes;
        if (s.records != 0) live += static_cast<double>(s.bytes) * static_cast<double>(s.live) / static_cast<double>(s.records);
      }
      if (total < opts.journal_compact_bytes || static_cast<double>(total) < 2 * live) return;
      std::uint64_t sum = 0, boundary = 0;
      for (const segment& s : segments) {
        sum += s.bytes;
        boundary = s.last_seq;
        if (sum * 2 >= total) break;
      }
      std::unique_lock<std::mutex> lk(mutex);
      if (stopping) return;  // close() writes one last batch, not copies
      const std::uint64_t before = recorded_count;
      auto old = [&](std::uint64_t last) { return last != 0 && last <= boundary && pending_op(last) == nullptr; };
      messages.for_each([&](message_row& m) {
        if (old(m.last_op)) put_message(m);
      });
      for (auto& [id, c] : clients) {
        for (auto& e : c.queued)
          if (old(e.last_op)) put_outgoing(id, e);
        c.inflight.for_each([&](std::uint16_t, outgoing_entry& e) {
          if (old(e.last_op)) put_outgoing(id, e);
        });
        c.inbound.for_each([&](std::uint16_t packet_id, inbound_entry& e) {
          if (old(e.last_op)) put_inbound(id, packet_id, e);
        });
      }
      if (recorded_count == before) return;
      copying_until = recorded_count;
      ++stats.compactions;
      // The copies need no packet's commit(): a ticket of their own makes them committable.
      if (recorded) {
        ++issued;
        recorded = false;
      }
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
      sqlite3_bind_blob64(st, i, s.empty() ? "" : s.data(), s.size(), SQLITE_STATIC);
    }
    static void bind_message(sqlite3_stmt* st, int first, const message& m) {
      bind_blob(st, first, m.topic());
      bind_blob(st, first + 1, m.payload());
      bind_blob(st, first + 2, m.properties().bytes());
      sqlite3_bind_int(st, first + 3, static_cast<int>(m.qos_level()));
    }

    int apply(const op& change) {
      sqlite3_stmt* st = statements[static_cast<std::size_t>(change.kind)].st;
      const row_change& o = *change.row;
      switch (change.kind) {
        case op_kind::save_session:
          bind_text(st, 1, o.key);
          sqlite3_bind_int64(st, 2, o.b);
          break;
        case op_kind::session_offline:
          bind_text(st, 1, o.key);
          sqlite3_bind_int64(st, 2, o.time);
          break;
        case op_kind::erase_session: {
          // Its subscriptions and will: one statement each.
          for (const char* sql : {"DELETE FROM subscriptions WHERE client_id=?1", "DELETE FROM wills WHERE client_id=?1"}) {
            sqlite3_stmt* d = nullptr;
            int rc = sqlite3_prepare_v2(db, sql, -1, &d, nullptr);
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
        case op_kind::save_will:
          bind_text(st, 1, o.key);
          bind_message(st, 2, *o.msg);
          sqlite3_bind_int(st, 6, o.msg->retain() ? 1 : 0);
          sqlite3_bind_int64(st, 7, o.time);
          break;
        case op_kind::erase_will: bind_text(st, 1, o.key); break;
        default: return SQLITE_MISUSE;  // journal records are not rows
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
           "DELETE FROM wills WHERE client_id NOT IN (SELECT client_id FROM sessions);"
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
        clients.try_emplace(std::string(text(st, 0)));
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

      // The journal, oldest segment first: an entry's latest record holds its state; a tombstone
      // ends it. What the records point into stays here until the load is done.
      struct message_record {
        std::string_view topic, payload, properties;
        std::uint8_t flags;
        std::int64_t expires;
        std::uint64_t seq;
        std::size_t segment;
      };
      struct outgoing_record {
        std::string_view client_id;
        std::int64_t message;
        std::uint8_t flags;
        std::uint16_t packet_id;
        std::string_view ids;
        std::uint64_t seq;
        std::size_t segment;
      };
      struct inbound_record {
        std::int64_t message;
        std::uint64_t seq;
        std::size_t segment;
      };
      std::deque<std::string> blobs;
      std::unordered_map<std::int64_t, message_record> message_records;
      std::map<std::int64_t, outgoing_record> outgoing_records;  // by entry seq
      std::map<std::pair<std::string_view, std::uint16_t>, inbound_record> inbound_records;
      segments.clear();
      rows("SELECT segment, first_seq, last_seq, records FROM journal ORDER BY segment", [&](sqlite3_stmt* st) {
        segment s{sqlite3_column_int64(st, 0), static_cast<std::uint64_t>(sqlite3_column_int64(st, 1)),
                  static_cast<std::uint64_t>(sqlite3_column_int64(st, 2))};
        const std::string& b = blobs.emplace_back(text(st, 3));
        s.bytes = b.size();
        const std::size_t index = segments.size();
        record_reader r{reinterpret_cast<const unsigned char*>(b.data()),
                        reinterpret_cast<const unsigned char*>(b.data()) + b.size()};
        while (!r.done()) {
          const auto kind = static_cast<op_kind>(r.byte());
          const std::uint64_t seq = r.varint();
          switch (kind) {
            case op_kind::message_put: {
              const auto id = static_cast<std::int64_t>(r.varint());
              message_record m{};
              m.flags = r.byte();
              m.expires = static_cast<std::int64_t>(r.varint());
              m.topic = r.bytes();
              m.payload = r.bytes();
              m.properties = r.bytes();
              m.seq = seq;
              m.segment = index;
              if (r.ok) message_records[id] = m;
              next_message = std::max(next_message, id);
              break;
            }
            case op_kind::message_delete:
              if (const auto id = static_cast<std::int64_t>(r.varint()); r.ok) {
                message_records.erase(id);
                next_message = std::max(next_message, id);
              }
              ++s.ends;
              break;
            case op_kind::outgoing_put: {
              outgoing_record o{};
              o.client_id = r.bytes();
              const auto entry = static_cast<std::int64_t>(r.varint());
              o.message = static_cast<std::int64_t>(r.varint());
              o.flags = r.byte();
              o.packet_id = static_cast<std::uint16_t>(r.varint());
              o.ids = r.bytes();
              o.seq = seq;
              o.segment = index;
              if (r.ok) outgoing_records[entry] = o;
              next_seq = std::max(next_seq, entry);
              break;
            }
            case op_kind::outgoing_delete:
              if (const auto entry = static_cast<std::int64_t>(r.varint()); r.ok) {
                outgoing_records.erase(entry);
                next_seq = std::max(next_seq, entry);
              }
              ++s.ends;
              break;
            case op_kind::inbound_put: {
              const std::string_view client_id = r.bytes();
              const auto packet_id = static_cast<std::uint16_t>(r.varint());
              const auto m = static_cast<std::int64_t>(r.varint());
              if (r.ok) inbound_records[{client_id, packet_id}] = inbound_record{m, seq, index};
              break;
            }
            case op_kind::inbound_delete: {
              const std::string_view client_id = r.bytes();
              const auto packet_id = static_cast<std::uint16_t>(r.varint());
              if (r.ok) inbound_records.erase({client_id, packet_id});
              ++s.ends;
              break;
            }
            default: r.ok = false;
          }
          if (r.ok) ++s.records;
        }
        if (!r.ok)
          note("storage: journal segment " + std::to_string(s.id) + " is damaged at byte " +
               std::to_string(reinterpret_cast<const char*>(r.p) - b.data()) + ": its later records are left out");
        recorded_count = std::max(recorded_count, s.last_seq);
        last_segment = std::max(last_segment, s.id);
        segments.push_back(s);
      });

      // The messages that loaded entries refer to, each made once; what no entry refers to
      // (its last reference ended by a change a full disk refused) is left behind.
      std::unordered_map<std::int64_t, message_row*> by_id;
      auto message_of = [&](std::int64_t id) -> message_row* {
        if (id == 0) return nullptr;
        if (auto it = by_id.find(id); it != by_id.end()) {
          ++it->second->refs;
          return it->second;
        }
        const auto it = message_records.find(id);
        if (it == message_records.end()) return nullptr;
        const message_record& m = it->second;
        message_ptr p = message::make(m.topic, m.payload, static_cast<codec::qos>(m.flags & 3), (m.flags & 4) != 0,
                                      m.properties, expiry_of(m.expires));
        message_row& r = messages.insert(message_row{id, 1, p, m.expires, m.seq, true});
        ++segments[m.segment].live;
        by_id.emplace(id, &r);
        return &r;
      };
      // Each session's entries in their order.
      std::vector<std::pair<std::int64_t, const outgoing_record*>> ordered;
      ordered.reserve(outgoing_records.size());
      for (const auto& [entry, o] : outgoing_records) ordered.emplace_back(entry, &o);
      std::stable_sort(ordered.begin(), ordered.end(),
                       [](const auto& a, const auto& b) { return a.second->client_id < b.second->client_id; });
      for (const auto& [entry, o] : ordered) {
        auto c = clients.find(std::string(o->client_id));
        if (c == clients.end()) continue;
        const auto state = static_cast<outgoing_state>((o->flags >> 2) & 3);
        message_row* const row = message_of(o->message);
        if (row == nullptr && state != outgoing_state::pubrec_received) continue;
        outgoing_entry e;
        e.seq = entry;
        e.message = row;
        e.last_op = o->seq;
        e.packet_id = o->packet_id;
        e.qos = static_cast<std::uint8_t>(o->flags & 3);
        e.state = static_cast<std::uint8_t>(state);
        e.retain = (o->flags & 16) != 0;
        e.ids.assign(o->ids);
        ++segments[o->segment].live;
        const std::vector<std::uint32_t> ids = identifiers_of(o->ids);
        delivery d;
        d.qos_level = static_cast<codec::qos>(e.qos);
        d.retain = e.retain;
        d.subscription_ids = ids.data();
        d.subscription_id_count = ids.size();
        message_ptr m = row != nullptr ? row->keep : message_ptr();
        const std::uint16_t packet_id = e.packet_id;
        if (state == outgoing_state::queued)
          c->second.queued.push_back(std::move(e));
        else if (c->second.inflight.find(packet_id) == nullptr)  // one entry per identifier, as written
          c->second.inflight.emplace(packet_id, std::move(e));
        l.outgoing(c->first, packet_id, std::move(m), d, state);
      }
      for (const auto& [key, in] : inbound_records) {
        auto c = clients.find(std::string(key.first));
        if (c == clients.end()) continue;
        message_row* const row = message_of(in.message);
        c->second.inbound[key.second] = inbound_entry{row, in.seq};
        ++segments[in.segment].live;
        l.inbound(c->first, key.second, row != nullptr ? row->keep : message_ptr());
      }
      rows("SELECT client_id, topic, payload, properties, qos, retain, due FROM wills", [&](sqlite3_stmt* st) {
        l.will(text(st, 0),
               message::make(text(st, 1), text(st, 2), static_cast<codec::qos>(sqlite3_column_int(st, 4)),
                             sqlite3_column_int(st, 5) != 0, text(st, 3)),
               in_broker_time(sqlite3_column_int64(st, 6)));
      });
      // What no loaded entry needs goes now, so that the next start reads less.
      collect();
      if (!to_drop.empty() && exec("BEGIN IMMEDIATE") == SQLITE_OK) {
        if (delete_dropped() == SQLITE_OK && exec("COMMIT") == SQLITE_OK)
          to_drop.clear();
        else
          exec("ROLLBACK");
      }
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
