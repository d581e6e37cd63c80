#ifndef MQTTBROKER_SERVER_ADMISSION_HPP
#define MQTTBROKER_SERVER_ADMISSION_HPP

// Admission per source address: how many connections one address holds open, and how fast it
// opens new ones (a token bucket), decided at accept, before a connection costs anything more.

#include <mqttbroker/config.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

MQTTBROKER_BEGIN_NAMESPACE
namespace server {

/// What admit() decided.
enum class address_verdict : std::uint8_t {
  admitted,
  too_many,  // the address holds max_per_address connections already
  too_fast,  // the address opened connections faster than rate (beyond burst)
};

/// The limits, per source address; 0 turns one off.
struct address_limits {
  std::size_t max_per_address = 0;
  double rate = 0;   // new connections per second, on average
  double burst = 0;  // new connections at once after a quiet while (at least 1 when rate is set)
  bool exempt_loopback = true;  // 127.0.0.1 and ::1: the host's own programs
};

/// Whether `address` (as text) is the host's own: 127.0.0.1 or ::1. The rest of 127.0.0.0/8 is
/// limited like any address, so that tests can give clients addresses of their own.
inline bool is_loopback_address(std::string_view a) noexcept {
  return a == "127.0.0.1" || a == "::1" || a == "::ffff:127.0.0.1";
}

/// The open connections and recent connection rate of each source address. Thread-safe: accepts
/// and closes may come from several threads.
class address_admission {
  struct entry {
    std::size_t open = 0;
    double tokens = 0;
    std::chrono::steady_clock::time_point refilled{};
  };
  using map_type = std::unordered_map<std::string, entry>;

 public:
  /// An admitted connection's place in its address's count, given back when it is destroyed.
  class ticket {
   public:
    ticket() noexcept = default;
    ticket(ticket&& o) noexcept : owner_(std::move(o.owner_)), entry_(std::exchange(o.entry_, nullptr)) {}
    ticket& operator=(ticket&& o) noexcept {
      if (this != &o) {
        release();
        owner_ = std::move(o.owner_);
        entry_ = std::exchange(o.entry_, nullptr);
      }
      return *this;
    }
    ~ticket() { release(); }
    explicit operator bool() const noexcept { return owner_ != nullptr; }

   private:
    friend class address_admission;
    ticket(std::shared_ptr<address_admission> owner, entry* e) noexcept : owner_(std::move(owner)), entry_(e) {}
    void release() noexcept {
      if (owner_) owner_->release(*entry_);
      owner_.reset();
      entry_ = nullptr;
    }
    std::shared_ptr<address_admission> owner_;
    // Its address's entry: a map node, which stays where it is while it counts this ticket
    // (prune() takes only entries with nothing open).
    entry* entry_ = nullptr;
  };

  explicit address_admission(address_limits l) : limits_(l) {
    if (limits_.rate > 0) limits_.burst = std::max(limits_.burst, 1.0);
  }

  const address_limits& limits() const noexcept { return limits_; }
  /// Whether any limit is on: without one admit() need not be called.
  bool active() const noexcept { return limits_.max_per_address != 0 || limits_.rate > 0; }

  /// Decides a new connection from `address` at `now`; an admitted one gets `t`, which holds its
  /// place until destroyed. `self` is this object's owner (the ticket keeps it alive).
  static address_verdict admit(const std::shared_ptr<address_admission>& self, std::string_view address,
                               std::chrono::steady_clock::time_point now, ticket& t) {
    address_admission& a = *self;
    if (address.empty() || (a.limits_.exempt_loopback && is_loopback_address(address))) return address_verdict::admitted;
    std::lock_guard<std::mutex> lk(a.mutex_);
    if (a.by_address_.size() >= a.prune_at_) a.prune(now);
    auto [it, fresh] = a.by_address_.try_emplace(std::string(address));
    entry& e = it->second;
    if (fresh) {
      e.tokens = a.limits_.burst;
      e.refilled = now;
    }
    if (a.limits_.max_per_address != 0 && e.open >= a.limits_.max_per_address) return address_verdict::too_many;
    if (a.limits_.rate > 0) {
      a.refill(e, now);
      if (e.tokens < 1.0) return address_verdict::too_fast;
      e.tokens -= 1.0;
    }
    ++e.open;
    t = ticket(self, &e);
    return address_verdict::admitted;
  }

  /// Addresses it keeps now (open connections, or a bucket still refilling).
  std::size_t tracked() const {
    std::lock_guard<std::mutex> lk(mutex_);
    return by_address_.size();
  }

 private:
  void refill(entry& e, std::chrono::steady_clock::time_point now) const noexcept {
    const double seconds = std::chrono::duration<double>(now - e.refilled).count();
    if (seconds > 0) e.tokens = std::min(limits_.burst, e.tokens + seconds * limits_.rate);
    e.refilled = now;
  }

  void release(entry& e) noexcept {
    std::lock_guard<std::mutex> lk(mutex_);
    --e.open;
  }

  /// Forgets the addresses with nothing open whose bucket is full again: the map holds the
  /// addresses that are connected or were busy lately, not every address ever seen.
  void prune(std::chrono::steady_clock::time_point now) {
    for (auto it = by_address_.begin(); it != by_address_.end();) {
      entry& e = it->second;
      if (e.open == 0) refill(e, now);
      if (e.open == 0 && (limits_.rate <= 0 || e.tokens >= limits_.burst))
        it = by_address_.erase(it);
      else
        ++it;
    }
    prune_at_ = std::max<std::size_t>(1024, 2 * by_address_.size());
  }

  address_limits limits_;
  mutable std::mutex mutex_;
  map_type by_address_;
  std::size_t prune_at_ = 1024;
};

}  // namespace server
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_SERVER_ADMISSION_HPP
