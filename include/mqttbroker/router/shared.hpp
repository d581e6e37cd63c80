#ifndef MQTTBROKER_ROUTER_SHARED_HPP
#define MQTTBROKER_ROUTER_SHARED_HPP

#include <mqttbroker/config.hpp>
#include <mqttbroker/router/subscriptions.hpp>
#include <mqttbroker/topic/trie.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace router {

/// The members one message of a Shared Subscription may go to, as a strategy sees them: the
/// group's online members, or all of them when none is online (5.0 section 4.8.2 leaves the choice
/// to the server). A strategy returns the index of one candidate, below size().
class share_choice {
 public:
  struct candidate {
    std::uint64_t key;    // the member's stable key (a hash of its client identifier)
    std::uint32_t index;  // its place in the group
  };

  /// A group's turn counter. Atomic under a multi-threaded locking policy: publishers on several
  /// threads choose under the router's shared lock, so the counter is the only thing they write.
  class turns {
   public:
    explicit turns(bool thread_safe) noexcept : thread_safe_(thread_safe) {}
    std::uint64_t next() noexcept {
      if (thread_safe_) return n_.fetch_add(1, std::memory_order_relaxed);
      // One thread: a plain increment, no locked instruction.
      const std::uint64_t v = n_.load(std::memory_order_relaxed);
      n_.store(v + 1, std::memory_order_relaxed);
      return v;
    }

   private:
    std::atomic<std::uint64_t> n_{0};
    bool thread_safe_;
  };

  share_choice(const candidate* c, std::size_t n, std::string_view publisher, turns& t) noexcept
      : c_(c), n_(n), publisher_(publisher), turns_(t) {}

  /// Candidates to choose from: at least 1.
  std::size_t size() const noexcept { return n_; }
  /// Candidate i's key: the same for one member as long as it stays, whatever else joins or leaves.
  std::uint64_t key(std::size_t i) const noexcept { return c_[i].key; }
  /// The publishing client's identifier; empty for the host's own publish and for a message handed
  /// over from a member whose session ended.
  std::string_view publisher() const noexcept { return publisher_; }
  /// A well-mixed 64-bit hash of publisher().
  std::uint64_t publisher_key() const noexcept { return topic::detail::level_hash(publisher_); }
  /// The group's next turn: 0, 1, 2, ... over the group's life, one per call.
  std::uint64_t next_turn() noexcept { return turns_.next(); }

 private:
  const candidate* c_;
  std::size_t n_;
  std::string_view publisher_;
  turns& turns_;
};

/// Shared-subscription strategies: a class with `std::size_t pick(share_choice&)`, safe to call from
/// several threads at once under broker_mt. A policy bundle names one as `shared_strategy`.
///
/// Round robin, the default: members take turns in the order they joined, skipping those offline.
struct round_robin {
  std::size_t pick(share_choice& c) const noexcept { return static_cast<std::size_t>(c.next_turn() % c.size()); }
};

/// Random: each message to a candidate drawn uniformly, from a per-thread generator (splitmix64)
/// seeded from `seed` and the order in which threads first pick, so a single-threaded run repeats.
struct random_member {
  static constexpr std::uint64_t seed = 0x6D71747462726B72ull;
  std::size_t pick(share_choice& c) const noexcept {
    static std::atomic<std::uint64_t> threads{0};
    thread_local std::uint64_t state = seed + threads.fetch_add(1, std::memory_order_relaxed) * 0x9E3779B97F4A7C15ull;
    state += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<std::size_t>(z % c.size());
  }
};

/// Sticky by publisher: rendezvous hashing of (publisher, member). One publisher's messages all go
/// to the same member while that member stays in the group and online; when it leaves or goes
/// offline, only the publishers it had move (each to one other member), and they come back when it
/// returns. A member that joins takes over the publishers for which it ranks first (about 1/n of
/// them). No state per publisher: the choice costs O(candidates).
struct sticky_by_publisher {
  std::size_t pick(share_choice& c) const noexcept {
    const std::uint64_t p = c.publisher_key();
    std::size_t best = 0;
    std::uint64_t best_score = score(p, c.key(0));
    for (std::size_t i = 1; i < c.size(); ++i) {
      const std::uint64_t s = score(p, c.key(i));
      if (s > best_score) {
        best_score = s;
        best = i;
      }
    }
    return best;
  }

 private:
  // murmur3's fmix64 of the pair: every bit of both keys moves the score.
  static std::uint64_t score(std::uint64_t publisher, std::uint64_t member) noexcept {
    std::uint64_t h = publisher ^ (member * 0x9E3779B97F4A7C15ull);
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return h;
  }
};

/// One Shared Subscription `$share/{ShareName}/{filter}`: its members, each with its own
/// subscription options [MQTT-4.8.2-3], in the order they joined, and the group's turn counter.
///
/// Members join and leave under the router's exclusive lock; choose() runs under its shared lock
/// (it writes only the turn counter). Joining and leaving cost O(members); choose() costs
/// O(members) plus the strategy, without allocating for groups up to `inline_candidates` members
/// (larger ones reuse a per-thread buffer).
template <class Subscriber, bool ThreadSafe = false>
class shared_group {
 public:
  struct member {
    Subscriber subscriber;
    subscription sub;   // the member's own options and Subscription Identifier
    std::uint64_t key;  // see share_choice::key
  };
  static constexpr std::size_t inline_candidates = 32;

  shared_group() noexcept : turns_(ThreadSafe) {}
  shared_group(const shared_group&) = delete;
  shared_group& operator=(const shared_group&) = delete;

  /// Adds `s` or, when it is a member already, replaces its subscription. True when it is new.
  bool join(const Subscriber& s, const subscription& sub, std::uint64_t key) {
    for (member& m : members_) {
      if (m.subscriber == s) {
        m.sub = sub;
        return false;
      }
    }
    members_.push_back({s, sub, key});
    return true;
  }

  /// Removes `s`, keeping the others' order. True when it was a member.
  bool leave(const Subscriber& s) noexcept {
    for (auto it = members_.begin(); it != members_.end(); ++it) {
      if (it->subscriber == s) {
        members_.erase(it);
        return true;
      }
    }
    return false;
  }

  const member* find(const Subscriber& s) const noexcept {
    for (const member& m : members_)
      if (m.subscriber == s) return &m;
    return nullptr;
  }

  bool empty() const noexcept { return members_.empty(); }
  std::size_t size() const noexcept { return members_.size(); }
  const std::vector<member>& members() const noexcept { return members_; }

  /// The member one message goes to, or nullptr for an empty group. `strategy` chooses among the
  /// members for which `online(const Subscriber&)` is true; only when none is, among all of them
  /// (the message then waits in the chosen member's session). `publisher` is the publishing
  /// client's identifier (empty if none).
  template <class Strategy, class Online>
  const member* choose(Strategy& strategy, std::string_view publisher, Online&& online) const {
    const std::size_t n = members_.size();
    if (n == 0) return nullptr;
    share_choice::candidate local[inline_candidates];
    share_choice::candidate* c = local;
    if (n > inline_candidates) {
      thread_local std::vector<share_choice::candidate> wide;  // grows to the largest group seen
      wide.resize(n);
      c = wide.data();
    }
    std::size_t k = 0;
    for (std::size_t i = 0; i < n; ++i)
      if (online(static_cast<const Subscriber&>(members_[i].subscriber))) c[k++] = {members_[i].key, static_cast<std::uint32_t>(i)};
    if (k == 0) {
      for (std::size_t i = 0; i < n; ++i) c[i] = {members_[i].key, static_cast<std::uint32_t>(i)};
      k = n;
    }
    share_choice choice(c, k, publisher, turns_);
    std::size_t i = strategy.pick(choice);
    if (i >= k) i %= k;  // a host's strategy out of range still picks a member
    return &members_[c[i].index];
  }

 private:
  std::vector<member> members_;
  mutable share_choice::turns turns_;
};

}  // namespace router
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_ROUTER_SHARED_HPP
