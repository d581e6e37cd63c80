#ifndef MQTTBROKER_TOPIC_TRIE_HPP
#define MQTTBROKER_TOPIC_TRIE_HPP

#include <mqttbroker/config.hpp>
#include <mqttbroker/topic/validate.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace topic {
namespace detail {

/// A hash of one topic level, well mixed in every bit (tables index by its low bits).
///
/// Inline and word-at-a-time: std::hash<std::string_view> is an out-of-line call that took a third
/// of the match time. Not keyed, so not a defence against chosen collisions (nor is std::hash).
inline std::uint64_t level_hash(std::string_view level) noexcept {
  constexpr std::uint64_t k1 = 0x9E3779B97F4A7C15ull;
  constexpr std::uint64_t k2 = 0xFF51AFD7ED558CCDull;
  const auto* p = reinterpret_cast<const unsigned char*>(level.data());
  std::size_t n = level.size();
  std::uint64_t h = k1 ^ static_cast<std::uint64_t>(n);
  for (; n >= 8; n -= 8, p += 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * k2;
    h ^= h >> 32;
  }
  std::uint64_t w = 0;
  for (std::size_t i = 0; i < n; ++i) w |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  // murmur3's fmix64 finaliser spreads every input bit over the low bits the table uses.
  h = (h ^ w) * k1;
  h ^= h >> 33;
  h *= k2;
  h ^= h >> 33;
  return h;
}

/// The literal children of a trie node, owned, found by level without allocating.
///
/// Most nodes have one child, a few have thousands (`device/{id}`), so the table has two layouts:
/// up to `dense_max` children it is a packed array scanned by cached hash (at most two cache lines,
/// no pointer chase until a hash agrees); beyond that an open-addressing table with linear probing
/// at load factor <= 1/2. std::unordered_map would cost a heap node per child and, before C++20,
/// a std::string to look a level up. A slot keeps the level's hash, so a mismatch never touches
/// the child and a rehash never rehashes strings. Node must have a `std::string level` member.
/// The table takes 16 bytes in its node, plus 16 per packed child or 32 to 64 per hashed one.
template <class Node>
class child_table {
 public:
  child_table() noexcept = default;
  child_table(const child_table&) = delete;
  child_table& operator=(const child_table&) = delete;
  ~child_table() {
    for (std::size_t i = 0; i < cap_; ++i) delete slots_[i].node;
    delete[] slots_;
  }

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

  /// The child for `level`, whose level_hash is `h`, or nullptr.
  Node* find(std::string_view level, std::uint64_t h) const noexcept {
    if (!hashed()) {
      for (std::size_t i = 0; i < size_; ++i)
        if (slots_[i].hash == h && slots_[i].node->level == level) return slots_[i].node;
      return nullptr;
    }
    for (std::size_t i = home(h);; i = (i + 1) & (cap_ - 1)) {
      const slot& s = slots_[i];
      if (s.node == nullptr) return nullptr;
      if (s.hash == h && s.node->level == level) return s.node;
    }
  }

  /// Adopts `n`, whose level (hash `h`) is not present. On bad_alloc `n` stays with the caller.
  void insert(std::uint64_t h, std::unique_ptr<Node>&& n) {
    std::uint32_t grow_to = 0;
    if (!hashed()) {
      // 1, 2, 4, 8 packed slots, then a table of 32 holding the 9th child at load 9/32.
      if (size_ == cap_) grow_to = cap_ == 0 ? 1 : cap_ == dense_max ? table_min : cap_ * 2;
    } else if ((size_ + 1) * 2 > cap_) {
      grow_to = cap_ * 2;
    }
    if (grow_to != 0) relayout(allocate(grow_to), grow_to);
    place({h, n.release()});
    ++size_;
  }

  /// Removes and deletes the child `n` (hash `h`). Shrinks when sparse, if memory allows.
  void erase(std::uint64_t h, Node* n) noexcept {
    if (!hashed()) {
      std::size_t i = 0;
      while (slots_[i].node != n) ++i;
      slots_[i] = slots_[size_ - 1];
      slots_[size_ - 1] = slot{};
      --size_;
    } else {
      std::size_t i = home(h);
      while (slots_[i].node != n) i = (i + 1) & (cap_ - 1);
      backward_shift(i);
      --size_;
    }
    delete n;
    // Shrink so that subscribe/unsubscribe churn leaves no oversized tables behind.
    if (size_ == 0) {
      delete[] slots_;
      slots_ = nullptr;
      cap_ = 0;
    } else if (hashed() ? size_ <= dense_max / 2 : size_ * 4 <= cap_) {
      shrink_to(hashed() ? dense_max : cap_ / 2);
    } else if (hashed() && cap_ > table_min && size_ * 8 <= cap_) {
      shrink_to(cap_ / 2);
    }
  }

  /// Calls f(const Node&) for every child, in no particular order.
  template <class F>
  void for_each(F&& f) const {
    for (std::size_t i = 0; i < cap_; ++i)
      if (slots_[i].node != nullptr) f(*slots_[i].node);
  }

 private:
  struct slot {
    std::uint64_t hash;
    Node* node;
  };

  static constexpr std::uint32_t dense_max = 8;
  static constexpr std::uint32_t table_min = 32;

  bool hashed() const noexcept { return cap_ > dense_max; }

  std::size_t home(std::uint64_t h) const noexcept { return static_cast<std::size_t>(h & (cap_ - 1)); }

  static slot* allocate(std::size_t n) { return new slot[n](); }

  void shrink_to(std::uint32_t cap) noexcept {
    if (slot* fresh = new (std::nothrow) slot[cap]()) relayout(fresh, cap);
  }

  // Moves every slot into `fresh` (zeroed, `cap` slots), packed or hashed according to `cap`.
  void relayout(slot* fresh, std::uint32_t cap) noexcept {
    slot* old = slots_;
    const std::uint32_t old_cap = cap_;
    slots_ = fresh;
    cap_ = cap;
    std::size_t packed = 0;
    for (std::size_t i = 0; i < old_cap; ++i) {
      if (old[i].node == nullptr) continue;
      if (hashed()) {
        place(old[i]);
      } else {
        slots_[packed++] = old[i];
      }
    }
    delete[] old;
  }

  void place(slot s) noexcept {
    if (!hashed()) {
      slots_[size_] = s;
      return;
    }
    std::size_t i = home(s.hash);
    while (slots_[i].node != nullptr) i = (i + 1) & (cap_ - 1);
    slots_[i] = s;
  }

  // Linear-probing deletion without tombstones (Knuth 6.4, Algorithm R): pull back each later
  // slot of the run whose home does not lie cyclically in (hole, slot].
  void backward_shift(std::size_t hole) noexcept {
    const std::size_t mask = cap_ - 1;
    slots_[hole] = slot{};
    for (std::size_t j = (hole + 1) & mask; slots_[j].node != nullptr; j = (j + 1) & mask) {
      const std::size_t k = home(slots_[j].hash);
      const bool stays = hole <= j ? (hole < k && k <= j) : (hole < k || k <= j);
      if (stays) continue;
      slots_[hole] = slots_[j];
      slots_[j] = slot{};
      hole = j;
    }
  }

  // 32-bit counts keep the table at 16 bytes per node; 2^31 children of one node is out of reach
  // (each child holds a distinct level of a filter some client subscribed to).
  slot* slots_ = nullptr;
  std::uint32_t cap_ = 0;
  std::uint32_t size_ = 0;
};

/// The child of `n` for the literal `level`, made as Node(level, &n) and counted in `nodes` when
/// there is none: for both trees of topic levels, the subscription trie and the retained store.
/// On bad_alloc nothing is made or counted.
template <class Node>
Node* find_or_add_child(Node& n, std::string_view level, std::size_t& nodes) {
  const std::uint64_t h = level_hash(level);
  if (Node* c = n.children.find(level, h)) return c;
  auto c = std::make_unique<Node>(level, &n);
  Node* raw = c.get();
  n.children.insert(h, std::move(c));
  ++nodes;
  return raw;
}

/// The subscriptions that share one filter, keyed by subscriber. A packed vector while small (most
/// filters have one subscriber), an unordered_map once past `small_max`, so a filter with 100k
/// subscribers still inserts and erases in O(1). Key and Value must be copyable.
template <class Key, class Value, class Hash, class KeyEqual>
class subscriber_set {
 public:
  std::size_t size() const noexcept { return large_ ? large_->size() : small_.size(); }
  bool empty() const noexcept { return size() == 0; }

  const Value* find(const Key& k) const {
    if (large_) {
      const auto it = large_->find(k);
      return it == large_->end() ? nullptr : &it->second;
    }
    for (const auto& e : small_)
      if (KeyEqual{}(e.first, k)) return &e.second;
    return nullptr;
  }

  /// Inserts or replaces; true when `k` was new.
  template <class V>
  bool assign(const Key& k, V&& v) {
    if (large_) {
      const auto r = large_->try_emplace(k, std::forward<V>(v));
      if (!r.second) r.first->second = std::forward<V>(v);
      return r.second;
    }
    for (auto& e : small_) {
      if (KeyEqual{}(e.first, k)) {
        e.second = std::forward<V>(v);
        return false;
      }
    }
    if (small_.size() < small_max) {
      small_.emplace_back(k, std::forward<V>(v));
      return true;
    }
    // Copies, not moves: if an allocation throws half-way, the vector is still whole.
    auto m = std::make_unique<map_type>();
    m->reserve(small_max * 2);
    for (const auto& e : small_) m->emplace(e.first, e.second);
    m->try_emplace(k, std::forward<V>(v));
    large_ = std::move(m);
    std::vector<entry>().swap(small_);
    return true;
  }

  /// True when `k` was present.
  bool erase(const Key& k) {
    if (large_) {
      if (large_->erase(k) == 0) return false;
      if (large_->empty()) {
        large_.reset();
      } else if (large_->size() <= small_max / 2) {
        shrink();  // drop the bucket array a once-popular filter left behind
      }
      return true;
    }
    for (std::size_t i = 0; i < small_.size(); ++i) {
      if (!KeyEqual{}(small_[i].first, k)) continue;
      if (i + 1 != small_.size()) small_[i] = std::move(small_.back());
      small_.pop_back();
      if (small_.empty()) std::vector<entry>().swap(small_);
      return true;
    }
    return false;
  }

  /// Calls f(const Key&, const Value&) for each subscriber.
  template <class F>
  void for_each(F& f) const {
    if (large_) {
      for (const auto& kv : *large_) f(kv.first, kv.second);
    } else {
      for (const auto& e : small_) f(e.first, e.second);
    }
  }

 private:
  using entry = std::pair<Key, Value>;
  using map_type = std::unordered_map<Key, Value, Hash, KeyEqual>;
  static constexpr std::size_t small_max = 8;

  void shrink() noexcept {
    try {
      std::vector<entry> v;
      v.reserve(large_->size());
      for (const auto& kv : *large_) v.emplace_back(kv.first, kv.second);
      small_ = std::move(v);
      large_.reset();
    } catch (...) {
      // Keep the map: it is correct, only larger than needed.
    }
  }

  std::vector<entry> small_;
  std::unique_ptr<map_type> large_;  // when set, small_ is empty
};

}  // namespace detail

/// Subscriptions keyed by (Topic Filter, Key), matched against Topic Names.
///
/// Key identifies a subscriber (e.g. a session id) and Value is what the broker keeps per
/// subscription (e.g. options, subscription identifier). A filter is a path of levels from the root;
/// each node keeps literal children in a hash table, `+` and `#` apart, and its own subscribers.
///
/// Costs, for a filter or topic of L levels:
/// - insert, erase, find: O(L) expected, independent of the number of subscriptions.
/// - match: O(V + M), V the nodes visited, M the subscriptions reported. V <= L + 1 per path the
///   topic can take; there are more paths only through `+` nodes, so V is bounded by the filters'
///   shapes, not their number. No heap allocation. Recursion depth <= the deepest filter's levels,
///   which limits::max_levels bounds when callers validate.
/// - memory: freed as subscriptions go; an erase removes every node left without subscriptions
///   or children, so subscribe/unsubscribe churn does not grow the trie.
///
/// Filters are expected valid (validate_topic_filter or parse_filter); an invalid one is stored by
/// its literal levels and matches no valid Topic Name. Matching implements [MQTT-4.7.1-2] (`#`
/// matches its parent level), `+` matching any one level including an empty one, [MQTT-4.7.2-1]
/// (a topic starting with `$` is not matched by a filter starting with `+` or `#`) and exact,
/// case-sensitive comparison per level without normalisation [MQTT-4.7.3-4]. A subscriber whose overlapping
/// filters match one topic is reported once per filter; merging is the router's choice (5.0 section 3.3.4).
///
/// Not thread-safe: the router's locking policy guards it (many readers may match concurrently,
/// since match is const and touches no mutable state). Hash and KeyEqual are default-constructed.
template <class Key, class Value, class Hash = std::hash<Key>, class KeyEqual = std::equal_to<Key>>
class subscription_trie {
 public:
  using key_type = Key;
  using value_type = Value;
  using size_type = std::size_t;

  subscription_trie() noexcept = default;
  subscription_trie(const subscription_trie&) = delete;
  subscription_trie& operator=(const subscription_trie&) = delete;
  subscription_trie(subscription_trie&& o) noexcept
      : root_(std::move(o.root_)), size_(std::exchange(o.size_, 0)), nodes_(std::exchange(o.nodes_, 0)) {}
  subscription_trie& operator=(subscription_trie&& o) noexcept {
    root_ = std::move(o.root_);
    size_ = std::exchange(o.size_, 0);
    nodes_ = std::exchange(o.nodes_, 0);
    return *this;
  }
  ~subscription_trie() = default;

  /// Adds the subscription (filter, key), or replaces its value. True when it was new [MQTT-3.8.4-3].
  /// If it throws (bad_alloc, or a throwing copy of Key or Value), no subscription is added and the
  /// nodes it created are freed; a value being replaced may be left partly assigned.
  template <class V>
  bool insert(std::string_view filter, const Key& key, V&& value) {
    if (!root_) root_ = std::make_unique<node>(std::string_view{}, nullptr);
    node* n = root_.get();
    try {
      detail::level_cursor cur(filter);
      bool multi = false;
      while (!cur.done()) {
        const std::string_view level = cur.next();
        if (level == "#" && cur.done()) {
          multi = true;
        } else {
          n = level == "+" ? plus_child(*n) : detail::find_or_add_child(*n, level, nodes_);
        }
      }
      set_type* s = &n->subs;
      if (multi) {
        if (!n->multi) n->multi = std::make_unique<set_type>();
        s = n->multi.get();
      }
      const bool added = s->assign(key, std::forward<V>(value));
      if (added) ++size_;
      return added;
    } catch (...) {
      prune(n);  // drop the nodes this call created
      throw;
    }
  }

  /// Removes the subscription (filter, key). True when it existed.
  bool erase(std::string_view filter, const Key& key) {
    bool multi = false;
    node* n = const_cast<node*>(find_node(filter, multi));
    if (n == nullptr) return false;
    set_type* s = multi ? n->multi.get() : &n->subs;
    if (s == nullptr || !s->erase(key)) return false;
    --size_;
    prune(n);
    return true;
  }

  /// The value of the subscription (filter, key), or nullptr. Invalidated by insert and erase.
  const Value* find(std::string_view filter, const Key& key) const {
    bool multi = false;
    const node* n = find_node(filter, multi);
    if (n == nullptr) return nullptr;
    const set_type* s = multi ? n->multi.get() : &n->subs;
    return s == nullptr ? nullptr : s->find(key);
  }

  /// Calls f(const Key&, const Value&) for each subscription whose filter matches `topic`, a
  /// valid Topic Name. f must not modify the trie.
  template <class F>
  void match(std::string_view topic, F&& f) const {
    if (!root_ || topic.empty()) return;
    match_node(*root_, detail::level_cursor(topic), is_dollar_topic(topic), f);
  }

  /// Calls f(std::string_view filter, const Key&, const Value&) for every subscription, e.g. to
  /// persist them. The filter view is valid during the call only. f must not modify the trie.
  template <class F>
  void for_each(F&& f) const {
    if (!root_) return;
    std::string path;
    for_each_node(*root_, path, true, f);
  }

  /// The number of (filter, key) subscriptions.
  size_type size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

  /// The number of nodes below the root: a diagnostic for memory use (0 when empty).
  size_type node_count() const noexcept { return nodes_; }

  /// Removes every subscription and frees all nodes.
  void clear() noexcept {
    root_.reset();
    size_ = 0;
    nodes_ = 0;
  }

 private:
  using set_type = detail::subscriber_set<Key, Value, Hash, KeyEqual>;

  struct node {
    node(std::string_view l, node* p) : level(l), parent(p) {}
    std::string level;                   // owned; child_table finds children by it
    node* parent;                        // for pruning upwards on erase
    detail::child_table<node> children;  // literal levels
    std::unique_ptr<node> plus;          // the `+` child
    std::unique_ptr<set_type> multi;     // subscribers of "<this>/#" ("#" at the root)
    set_type subs;                       // subscribers of the filter ending here

    bool unused() const noexcept { return subs.empty() && !multi && !plus && children.empty(); }
  };

  node* plus_child(node& n) {
    if (!n.plus) {
      n.plus = std::make_unique<node>(std::string_view("+"), &n);
      ++nodes_;
    }
    return n.plus.get();
  }

  // The node a filter ends at (`multi` set for a trailing `#`), or nullptr; never creates nodes.
  const node* find_node(std::string_view filter, bool& multi) const noexcept {
    const node* n = root_.get();
    detail::level_cursor cur(filter);
    while (n != nullptr && !cur.done()) {
      const std::string_view level = cur.next();
      if (level == "#" && cur.done()) {
        multi = true;
      } else {
        n = level == "+" ? n->plus.get() : n->children.find(level, detail::level_hash(level));
      }
    }
    return n;
  }

  // Frees `n` and its ancestors while they hold nothing.
  void prune(node* n) noexcept {
    if (n->multi && n->multi->empty()) n->multi.reset();
    while (n != root_.get() && n->unused()) {
      node* p = n->parent;
      if (p->plus.get() == n) {
        p->plus.reset();
      } else {
        p->children.erase(detail::level_hash(n->level), n);
      }
      --nodes_;
      n = p;
    }
  }

  // `cur` holds the topic levels below `n`; `root_dollar` is set only at the root for a $-topic.
  template <class F>
  static void match_node(const node& n, detail::level_cursor cur, bool root_dollar, F& f) {
    // [MQTT-4.7.1-2] `#` matches the parent level too: "sport/#" matches "sport".
    // [MQTT-4.7.2-1] a leading wildcard must not match $-topics.
    if (n.multi && !root_dollar) n.multi->for_each(f);
    if (cur.done()) {
      n.subs.for_each(f);
      return;
    }
    const std::string_view level = cur.next();
    if (!n.children.empty()) {
      if (const node* c = n.children.find(level, detail::level_hash(level))) match_node(*c, cur, false, f);
    }
    // `+` matches exactly one level, an empty one included.
    if (n.plus && !root_dollar) match_node(*n.plus, cur, false, f);
  }

  template <class F>
  static void for_each_node(const node& n, std::string& path, bool is_root, F& f) {
    const auto emit = [&](const Key& k, const Value& v) { f(std::string_view(path), k, v); };
    n.subs.for_each(emit);
    const auto descend = [&](std::string_view level, auto&& then) {
      const std::size_t mark = path.size();
      if (!is_root) path += '/';
      path += level;
      then();
      path.resize(mark);
    };
    if (n.multi) descend("#", [&] { n.multi->for_each(emit); });
    n.children.for_each([&](const node& c) { descend(c.level, [&] { for_each_node(c, path, false, f); }); });
    if (n.plus) descend("+", [&] { for_each_node(*n.plus, path, false, f); });
  }

  std::unique_ptr<node> root_;  // created on first insert, so a moved-from trie is empty, not broken
  size_type size_ = 0;
  size_type nodes_ = 0;
};

}  // namespace topic
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_TOPIC_TRIE_HPP
