#ifndef MQTTBROKER_ROUTER_RETAINED_HPP
#define MQTTBROKER_ROUTER_RETAINED_HPP

#include <mqttbroker/config.hpp>
#include <mqttbroker/message.hpp>
#include <mqttbroker/topic/trie.hpp>
#include <mqttbroker/topic/validate.hpp>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

MQTTBROKER_BEGIN_NAMESPACE
namespace router {

/// The last retained message of each Topic Name, in a tree of topic levels, so that a subscribing
/// filter visits only the branches its literal levels allow instead of scanning every topic.
///
/// Costs, for a topic or filter of L levels:
/// - set, erase, find: O(L) expected, independent of the number of stored topics.
/// - match: O(nodes visited + messages reported). A literal level follows one child; `+` visits
///   every child of that node; `#` visits the whole subtree below it.
/// - memory: erase frees every node left without a message or children, so churn of short-lived
///   topics does not grow the tree; node_count() observes it.
///
/// Topic Names come validated (topic::validate_topic_name), so a message's depth is bounded by
/// topic::limits::max_levels, which bounds the recursion of match, for_each and destruction.
///
/// Not thread-safe: the broker's locking policy guards it (the const members only read, so they
/// may run concurrently under a shared lock).
class retained_store {
 public:
  using size_type = std::size_t;

  retained_store() noexcept = default;
  retained_store(const retained_store&) = delete;
  retained_store& operator=(const retained_store&) = delete;
  retained_store(retained_store&& o) noexcept
      : root_(std::move(o.root_)),
        size_(std::exchange(o.size_, 0)),
        nodes_(std::exchange(o.nodes_, 0)),
        bytes_(std::exchange(o.bytes_, 0)) {}
  retained_store& operator=(retained_store&& o) noexcept {
    root_ = std::move(o.root_);
    size_ = std::exchange(o.size_, 0);
    nodes_ = std::exchange(o.nodes_, 0);
    bytes_ = std::exchange(o.bytes_, 0);
    return *this;
  }
  ~retained_store() = default;

  /// Stores `m` as the retained message of m->topic(), replacing any earlier one [MQTT-3.3.1-5]
  /// (both versions). A zero-length payload instead removes the
  /// topic's retained message and is not itself stored: 5.0 [MQTT-3.3.1-6], [MQTT-3.3.1-7];
  /// 3.1.1 [MQTT-3.3.1-10], [MQTT-3.3.1-11]. Strong guarantee.
  void set(message_ptr m) {
    if (!m) return;
    const std::string_view topic = m->topic();
    if (m->payload().empty()) {
      erase(topic);
      return;
    }
    if (!root_) root_ = std::make_unique<node>(std::string_view{}, nullptr);
    node* n = root_.get();
    try {
      topic::detail::level_cursor cur(topic);
      while (!cur.done()) n = topic::detail::find_or_add_child(*n, cur.next(), nodes_);
    } catch (...) {
      prune(n);  // drop the nodes this call created
      throw;
    }
    if (n->msg) {
      bytes_ -= weight(*n->msg);
    } else {
      ++size_;
    }
    bytes_ += weight(*m);
    n->msg = std::move(m);
  }

  /// Removes the retained message of `topic`. True if there was one.
  bool erase(std::string_view topic) noexcept {
    node* n = const_cast<node*>(find_node(topic));
    if (n == nullptr || !n->msg) return false;
    bytes_ -= weight(*n->msg);
    --size_;
    n->msg = message_ptr();
    prune(n);
    return true;
  }

  /// The retained message of `topic`, or null.
  message_ptr find(std::string_view topic) const noexcept {
    const node* n = find_node(topic);
    return n == nullptr ? message_ptr() : n->msg;
  }

  /// Calls f(const message_ptr&) for each stored message whose Topic Name matches `filter` (a
  /// valid Topic Filter, without a `$share/{ShareName}/` prefix). `+` matches exactly one level, an
  /// empty one included; `#` matches its parent level and everything below (section 4.7.1.2); a
  /// filter whose first level is `+` or `#` matches no Topic Name starting with `$`
  /// [MQTT-4.7.2-1]. Order: depth first; a node's own message before its descendants'; siblings in
  /// hash-table order, which is fixed for a given sequence of set/erase but otherwise unspecified.
  /// f must not modify the store.
  template <class F>
  void match(std::string_view filter, F&& f) const {
    if (!root_ || filter.empty()) return;
    match_node(*root_, topic::detail::level_cursor(filter), true, f);
  }

  /// Calls f(const message_ptr&) for every stored message (for persistence), in the order of match("#")
  /// with `$`-topics included. f must not modify the store.
  template <class F>
  void for_each(F&& f) const {
    if (root_) subtree(*root_, false, f);
  }

  /// The number of stored messages (topics with a retained message).
  size_type size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

  /// Sum of topic and payload sizes of the stored messages: for limits and metrics.
  std::size_t payload_bytes() const noexcept { return bytes_; }

  /// Tree nodes below the root: a diagnostic for memory (0 when empty).
  size_type node_count() const noexcept { return nodes_; }

  /// Removes every message and frees every node.
  void clear() noexcept {
    root_.reset();
    size_ = 0;
    nodes_ = 0;
    bytes_ = 0;
  }

 private:
  struct node {
    node(std::string_view l, node* p) : level(l), parent(p) {}
    std::string level;                          // owned; child_table finds children by it
    node* parent;                               // for pruning upwards on erase
    topic::detail::child_table<node> children;  // owned, looked up by level without allocating
    message_ptr msg;                            // the retained message of the topic ending here
  };

  static std::size_t weight(const message& m) noexcept { return m.topic().size() + m.payload().size(); }

  const node* find_node(std::string_view topic) const noexcept {
    const node* n = root_.get();
    topic::detail::level_cursor cur(topic);
    while (n != nullptr && !cur.done()) {
      const std::string_view level = cur.next();
      n = n->children.find(level, topic::detail::level_hash(level));
    }
    return n == root_.get() ? nullptr : n;  // the root holds no message (an empty topic is invalid)
  }

  // Frees `n` and its ancestors while they hold neither a message nor children.
  void prune(node* n) noexcept {
    while (n != root_.get() && !n->msg && n->children.empty()) {
      node* p = n->parent;
      p->children.erase(topic::detail::level_hash(n->level), n);
      --nodes_;
      n = p;
    }
  }

  // `cur` holds the filter levels below `n`; `at_root` is true only for the root.
  template <class F>
  static void match_node(const node& n, topic::detail::level_cursor cur, bool at_root, F& f) {
    if (cur.done()) {
      if (n.msg) f(n.msg);
      return;
    }
    const std::string_view level = cur.next();
    if (level == "#" && cur.done()) {
      // `#` also matches the parent level: "sport/#" matches "sport" (section 4.7.1.2). The
      // root has no message, so "#" alone matches only what lies below it.
      if (n.msg) f(n.msg);
      subtree(n, at_root, f);
    } else if (level == "+") {
      n.children.for_each([&](const node& c) {
        // [MQTT-4.7.2-1] a leading wildcard must not match $-topics.
        if (at_root && is_dollar(c.level)) return;
        match_node(c, cur, false, f);
      });
    } else if (const node* c = n.children.find(level, topic::detail::level_hash(level))) {
      match_node(*c, cur, false, f);
    }
  }

  // Reports every message strictly below `n`, skipping first levels starting with `$` if asked.
  template <class F>
  static void subtree(const node& n, bool skip_dollar, F& f) {
    n.children.for_each([&](const node& c) {
      if (skip_dollar && is_dollar(c.level)) return;  // [MQTT-4.7.2-1]
      if (c.msg) f(c.msg);
      subtree(c, false, f);
    });
  }

  static bool is_dollar(std::string_view level) noexcept { return !level.empty() && level.front() == '$'; }

  std::unique_ptr<node> root_;  // created on first set, so a moved-from store is empty, not broken
  size_type size_ = 0;
  size_type nodes_ = 0;
  std::size_t bytes_ = 0;
};

}  // namespace router
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_ROUTER_RETAINED_HPP
