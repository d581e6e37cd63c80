#ifndef MQTTBROKER_ROUTER_SUBSCRIPTIONS_HPP
#define MQTTBROKER_ROUTER_SUBSCRIPTIONS_HPP

#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/topic/trie.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace router {

/// What the router keeps for one (Topic Filter, subscriber) pair.
struct subscription {
  codec::subscribe_options options;  ///< max_qos, no_local, retain_as_published, retain_handling
  std::uint32_t identifier = 0;      ///< 5.0 Subscription Identifier; 0 means none (1..268435455 are valid)

  friend bool operator==(const subscription& a, const subscription& b) noexcept {
    return a.options == b.options && a.identifier == b.identifier;
  }
  friend bool operator!=(const subscription& a, const subscription& b) noexcept { return !(a == b); }
};

/// The Subscription Identifiers of one delivery: up to `inline_capacity` held inline, more in a
/// heap buffer whose capacity clear() keeps, so a reused list stops allocating once warm.
class subscription_identifiers {
 public:
  using value_type = std::uint32_t;
  using const_iterator = const std::uint32_t*;
  static constexpr std::size_t inline_capacity = 4;

  const std::uint32_t* data() const noexcept { return size_ <= inline_capacity ? inline_ : spill_.data(); }
  const_iterator begin() const noexcept { return data(); }
  const_iterator end() const noexcept { return data() + size_; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  std::uint32_t operator[](std::size_t i) const noexcept { return data()[i]; }

  /// Appends `id`. Strong guarantee: on bad_alloc the list is unchanged.
  void push_back(std::uint32_t id) {
    if (size_ < inline_capacity) {
      inline_[size_++] = id;
      return;
    }
    if (size_ == inline_capacity) {
      spill_.clear();  // keeps the capacity of earlier spills
      spill_.insert(spill_.end(), inline_, inline_ + inline_capacity);
    }
    spill_.push_back(id);
    ++size_;
  }

  /// Empties the list, keeping any heap capacity for reuse.
  void clear() noexcept {
    size_ = 0;
    spill_.clear();
  }

  /// Ascending order, so a delivery's identifiers do not depend on hash-table order.
  void sort() noexcept {
    std::uint32_t* p = size_ <= inline_capacity ? inline_ : spill_.data();
    std::sort(p, p + size_);
  }

  /// Elements this list holds without allocating (a diagnostic for tests).
  std::size_t capacity() const noexcept { return std::max(inline_capacity, spill_.capacity()); }

  friend bool operator==(const subscription_identifiers& a, const subscription_identifiers& b) noexcept {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }
  friend bool operator!=(const subscription_identifiers& a, const subscription_identifiers& b) noexcept {
    return !(a == b);
  }

 private:
  std::uint32_t inline_[inline_capacity] = {};
  std::vector<std::uint32_t> spill_;  // used once size_ > inline_capacity; holds all the elements then
  std::size_t size_ = 0;
};

/// One subscriber's share of one published message: all of its matching subscriptions merged.
struct delivery {
  /// The highest Maximum QoS among the matching subscriptions: 3.1.1 [MQTT-3.3.5-1], 5.0
  /// [MQTT-3.3.4-2]. The broker sends min(this, the message's QoS) [MQTT-3.8.4-8].
  codec::qos qos_level = codec::qos::at_most_once;
  /// True if any matching subscription has Retain As Published (5.0 [MQTT-3.3.1-12], [MQTT-3.3.1-13]).
  bool retain_as_published = false;
  /// One entry per matching subscription that has an identifier, ascending, duplicates kept: a
  /// single PUBLISH carries them all, in any order (5.0 [MQTT-3.3.4-3], [MQTT-3.3.4-4]).
  subscription_identifiers identifiers;

  void clear() noexcept {
    qos_level = codec::qos::at_most_once;
    retain_as_published = false;
    identifiers.clear();
  }
};

/// Merges one more matching subscription of a subscriber into its delivery; once all are in,
/// sort `d.identifiers` when there are several.
inline void merge_into(delivery& d, const subscription& sub) {
  // [MQTT-3.3.5-1] (3.1.1), [MQTT-3.3.4-2] (5.0): the maximum QoS of all matching subscriptions.
  if (sub.options.max_qos > d.qos_level) d.qos_level = sub.options.max_qos;
  d.retain_as_published = d.retain_as_published || sub.options.retain_as_published;
  // [MQTT-3.3.4-3] every matching subscription's identifier travels with the single copy.
  if (sub.identifier != 0) d.identifiers.push_back(sub.identifier);
}

/// The subscriptions of all sessions, and the fan-out of a published Topic Name to them.
///
/// Subscriber is a small copyable handle (a pointer or an integer session id), equality-comparable
/// and hashable with Hash. Filters reach the router validated (topic::validate_topic_filter or
/// topic::parse_filter); the router rejects nothing.
///
/// route() reports each subscriber at most once per message, however many of its filters match
/// (`a/#` and `a/+` both match `a/b`): 5.0 section 3.3.4 lets the server send one copy carrying the
/// highest QoS and every Subscription Identifier, and one copy per message is what a client expects.
///
/// Costs (L levels in a filter or topic, M matching subscriptions, V trie nodes visited; see
/// topic::subscription_trie for V):
/// - subscribe, unsubscribe, find: O(L) expected, independent of the number of subscriptions.
/// - route: O(V + M) to collect the matches. M == 1 (the common case) is reported directly. Up to
///   16 matches are merged by comparing pairs, O(M^2) with a tiny constant; more through a
///   scratch hash table, O(M) expected. Subscribers are reported in the order of their first
///   match as the trie finds them: unspecified, but fixed for a given history of subscribes.
/// - allocation: route() allocates only while its scratch grows to the widest fan-out seen so far
///   (scratch_capacity() observes this), never in the steady state.
///
/// Shared Subscriptions (`$share/{ShareName}/{filter}`, 5.0 section 4.8.2) are the caller's: it
/// subscribes each group (router/shared.hpp) as one Subscriber at the group's inner filter, so a
/// group matches at the cost of one subscription and, being a subscriber of its own, is never
/// merged with its members' own deliveries (a client with both kinds gets two copies, each at its
/// own subscription's QoS [MQTT-4.8.2-3]). The caller picks the member when route() reports the
/// group. No Local on a shared subscription is a Protocol Error [MQTT-3.8.3-4] the caller rejects.
///
/// Not thread-safe: the broker's locking policy guards it. subscribe/unsubscribe need exclusive
/// access; the route() overload taking a route_scratch is const and may run under a shared lock
/// with one scratch per thread.
template <class Subscriber, class Hash = std::hash<Subscriber>>
class subscription_router {
 public:
  using subscriber_type = Subscriber;
  using size_type = std::size_t;

  /// The reusable buffers of route(). One per thread when routing under a shared lock.
  class route_scratch {
   public:
    /// Bytes held for reuse (a diagnostic: unchanged by a route() no wider than those before).
    std::size_t capacity() const noexcept {
      return matches_.capacity() * sizeof(match) + table_.capacity() * sizeof(std::uint32_t) +
             delivery_.identifiers.capacity() * sizeof(std::uint32_t);
    }

   private:
    friend class subscription_router;
    static constexpr std::uint32_t none = ~std::uint32_t{0};
    struct match {
      Subscriber subscriber;
      const subscription* sub;  // into the trie; valid while the router is not modified
      std::uint32_t next;       // the subscriber's next match (a chain from its first), or none
      bool first;               // this is the subscriber's first match
    };
    std::vector<match> matches_;
    std::vector<std::uint32_t> table_;  // open addressing: subscriber -> 1 + index of its first match
    delivery delivery_;
  };

  subscription_router() = default;
  subscription_router(const subscription_router&) = delete;
  subscription_router& operator=(const subscription_router&) = delete;
  subscription_router(subscription_router&&) noexcept = default;
  subscription_router& operator=(subscription_router&&) noexcept = default;
  ~subscription_router() = default;

  /// Adds the subscription of `s` to `filter`. True if new; false if `s` already had `filter` and
  /// that subscription was replaced by `sub` [MQTT-3.8.4-3].
  bool subscribe(std::string_view filter, const Subscriber& s, const subscription& sub) {
    return trie_.insert(filter, s, sub);
  }

  /// Removes the subscription of `s` whose filter equals `filter` character by character
  /// [MQTT-3.10.4-1]. True if it existed.
  bool unsubscribe(std::string_view filter, const Subscriber& s) { return trie_.erase(filter, s); }

  /// The subscription of `s` to exactly `filter`, or nullptr. Invalidated by any modification.
  const subscription* find(std::string_view filter, const Subscriber& s) const { return trie_.find(filter, s); }

  /// Calls f(const Subscriber&, const delivery&) once per subscriber with at least one subscription
  /// matching `topic` (a valid Topic Name), its matching subscriptions merged. If `publisher` is not
  /// null, a subscription of *publisher with No Local set does not match [MQTT-3.8.3-3]; its other
  /// subscriptions still do. The delivery is valid during the call only; f must not modify the
  /// router. Uses the router's own scratch, hence not const.
  template <class F>
  void route(std::string_view topic, const Subscriber* publisher, F&& f) {
    route(topic, publisher, scratch_, std::forward<F>(f));
  }

  /// route() with caller-owned buffers, so that threads may route concurrently.
  template <class F>
  void route(std::string_view topic, const Subscriber* publisher, route_scratch& scratch, F&& f) const {
    auto& matches = scratch.matches_;
    matches.clear();  // keeps the capacity: no allocation once the widest fan-out has been seen
    trie_.match(topic, [&](const Subscriber& s, const subscription& sub) {
      // [MQTT-3.8.3-3] No Local: not back to the publishing client, through this subscription.
      if (publisher != nullptr && sub.options.no_local && s == *publisher) return;
      matches.push_back({s, &sub, route_scratch::none, true});
    });
    if (matches.empty()) return;
    if (matches.size() == 1) {  // the common case: nothing to merge
      emit(scratch, 0, f);
      return;
    }
    // Overlapping subscriptions of one subscriber come from different trie nodes, so they are not
    // adjacent. Chain each subscriber's matches from its first one: by pairwise comparison while
    // few, else through a hash table of first matches (O(M) expected, where sorting would cost
    // O(M log M) and dominate a wide fan-out).
    const std::size_t m = matches.size();
    if (m <= pairwise_max) {
      for (std::size_t i = 1; i < m; ++i) {
        for (std::size_t j = 0; j < i; ++j) {
          if (matches[j].first && matches[j].subscriber == matches[i].subscriber) {
            link(matches, j, i);
            break;
          }
        }
      }
    } else {
      // Load factor <= 1/2. assign() reuses the capacity; zeroing costs O(M), like the match.
      unsigned shift = 64;
      std::size_t cap = 1;
      while (cap < 2 * m) {
        cap <<= 1;
        --shift;
      }
      auto& table = scratch.table_;
      table.assign(cap, 0);
      for (std::size_t i = 0; i < m; ++i) {
        // Fibonacci hashing: the top bits of h * 2^64/phi, good even if Hash is the identity.
        const auto h = static_cast<std::uint64_t>(Hash{}(matches[i].subscriber)) * 0x9E3779B97F4A7C15ull;
        for (auto k = static_cast<std::size_t>(h >> shift);; k = (k + 1) & (cap - 1)) {
          if (table[k] == 0) {
            table[k] = static_cast<std::uint32_t>(i + 1);
            break;
          }
          const std::size_t j = table[k] - 1;
          if (matches[j].subscriber == matches[i].subscriber) {
            link(matches, j, i);
            break;
          }
        }
      }
    }
    for (std::size_t i = 0; i < m; ++i)
      if (matches[i].first) emit(scratch, i, f);
  }

  /// Calls f(std::string_view filter, const Subscriber&, const subscription&) for every
  /// subscription, e.g. to persist them. The filter view is valid during the call only.
  template <class F>
  void for_each(F&& f) const {
    trie_.for_each(f);
  }

  /// The number of (filter, subscriber) pairs.
  size_type size() const noexcept { return trie_.size(); }
  bool empty() const noexcept { return trie_.empty(); }

  /// Trie nodes in use: a diagnostic for memory (0 once every subscription is gone).
  size_type node_count() const noexcept { return trie_.node_count(); }

  /// Bytes route()'s own scratch holds for reuse: unchanged by a route() no wider than earlier ones.
  std::size_t scratch_capacity() const noexcept { return scratch_.capacity(); }

  /// Removes every subscription.
  void clear() noexcept { trie_.clear(); }

 private:
  using match = typename route_scratch::match;

  // Up to this many matches, duplicates are found by comparing pairs: no table to clear.
  static constexpr std::size_t pairwise_max = 16;

  // Appends match i to the chain of the subscriber whose first match is j.
  static void link(std::vector<match>& matches, std::size_t j, std::size_t i) noexcept {
    matches[i].first = false;
    matches[i].next = matches[j].next;  // order within a chain is irrelevant: identifiers are sorted
    matches[j].next = static_cast<std::uint32_t>(i);
  }

  // Merges the chain starting at `first` into one delivery and reports it.
  template <class F>
  static void emit(route_scratch& scratch, std::size_t first, F& f) {
    delivery& d = scratch.delivery_;
    d.clear();
    const auto& matches = scratch.matches_;
    for (std::size_t i = first; i != route_scratch::none; i = matches[i].next) merge_into(d, *matches[i].sub);
    if (d.identifiers.size() > 1) d.identifiers.sort();
    f(static_cast<const Subscriber&>(matches[first].subscriber), static_cast<const delivery&>(d));
  }

  topic::subscription_trie<Subscriber, subscription, Hash> trie_;
  route_scratch scratch_;
};

}  // namespace router
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_ROUTER_SUBSCRIPTIONS_HPP
