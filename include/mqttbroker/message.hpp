#ifndef MQTTBROKER_MESSAGE_HPP
#define MQTTBROKER_MESSAGE_HPP

#include <mqttbroker/codec/properties.hpp>
#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/detail/block_pool.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE

class message_ptr;

/// The 5.0 properties a host's own message carries (broker::publish): 5.0 subscribers get them,
/// in-process subscribers see them in message::properties(), 3.1.1 subscribers get the payload
/// alone. Views: valid for the call.
struct message_properties {
  std::optional<std::uint32_t> message_expiry;  // seconds (Message Expiry Interval)
  std::optional<bool> payload_is_utf8;          // Payload Format Indicator
  std::optional<std::string_view> content_type;
  std::optional<std::string_view> response_topic;    // a topic name: no wildcards
  std::optional<std::string_view> correlation_data;  // binary
  std::vector<std::pair<std::string_view, std::string_view>> user_properties;  // order and repeats kept
};

/// An application message as the broker routes it: immutable once made, reference counted, with
/// topic, properties and payload in one allocation. Every subscriber's outgoing PUBLISH refers to
/// the same message, so a payload is stored once however many receive it. The allocation comes
/// from detail::block_pool, so a steady stream of messages reuses freed blocks.
class message {
 public:
  message(const message&) = delete;
  message& operator=(const message&) = delete;

  /// A new message holding copies of `topic`, `payload` and the encoded 5.0 `properties` that
  /// travel with it (already validated; Topic Alias and Subscription Identifiers removed).
  /// `expires_at`: the broker clock's second (engine::clock_seconds) at which a 5.0 Message
  /// Expiry Interval ends; 0 when it has none.
  static message_ptr make(std::string_view topic, std::string_view payload, codec::qos q, bool retain,
                          std::string_view properties = {}, std::uint32_t expires_at = 0);

  std::string_view topic() const noexcept { return {bytes(), topic_size_}; }
  std::string_view payload() const noexcept { return {bytes() + topic_size_ + properties_size_, payload_size_}; }
  codec::properties_view properties() const noexcept {
    return codec::properties_view::from_validated({bytes() + topic_size_, properties_size_});
  }
  codec::qos qos_level() const noexcept { return qos_; }
  bool retain() const noexcept { return retain_; }
  /// When its Message Expiry Interval ends (0: never), in the broker clock's whole seconds.
  std::uint32_t expires_at() const noexcept {
    if (!has_expiry_) return 0;
    std::uint32_t t;
    std::memcpy(&t, bytes() + topic_size_ + properties_size_ + payload_size_, sizeof t);
    return t;
  }
  /// Whether it has expired at second `now` of the broker's clock [MQTT-3.3.2-5].
  bool expired(std::uint32_t now) const noexcept {
    if (!has_expiry_) return false;
    return now >= expires_at();
  }

 private:
  friend class message_ptr;
  message(std::uint32_t t, std::uint32_t pr, std::uint32_t pl, codec::qos q, bool r, std::uint8_t block,
          bool has_expiry) noexcept
      : topic_size_(t),
        properties_size_(pr),
        payload_size_(pl),
        qos_(q),
        retain_(r),
        block_class_(block),
        has_expiry_(has_expiry) {}

  const char* bytes() const noexcept { return reinterpret_cast<const char*>(this + 1); }
  char* bytes() noexcept { return reinterpret_cast<char*>(this + 1); }

  void add_ref() const noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  std::size_t block_bytes() const noexcept {
    return sizeof(message) + std::size_t{topic_size_} + properties_size_ + payload_size_ +
           (has_expiry_ ? sizeof(std::uint32_t) : 0);
  }

  void release() const noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      const std::size_t bytes = block_bytes();
      const std::uint8_t block = block_class_;
      this->~message();
      // Into the releasing thread's cache: the acq_rel above orders every earlier use before it.
      detail::block_pool::deallocate(const_cast<message*>(this), bytes, block);
    }
  }

  // Atomic so that a multi-threaded host can share messages across threads; uncontended it is a
  // single locked add on the delivery path.
  mutable std::atomic<std::uint32_t> refs_{0};
  std::uint32_t topic_size_;
  std::uint32_t properties_size_;
  std::uint32_t payload_size_;
  codec::qos qos_;
  bool retain_;
  std::uint8_t block_class_;  // block_pool size class
  // The expiry second follows the payload, only in the messages that have one; with this flag
  // the header stays 20 bytes.
  bool has_expiry_;
};

/// Shared ownership of a message (an intrusive count: one allocation per message, no control block).
class message_ptr {
 public:
  message_ptr() noexcept = default;
  message_ptr(const message_ptr& o) noexcept : p_(o.p_) {
    if (p_) p_->add_ref();
  }
  message_ptr(message_ptr&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  message_ptr& operator=(message_ptr o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~message_ptr() {
    if (p_) p_->release();
  }

  const message* get() const noexcept { return p_; }
  const message& operator*() const noexcept { return *p_; }
  const message* operator->() const noexcept { return p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }
  /// Owners of this message (for tests and accounting).
  std::uint32_t use_count() const noexcept { return p_ ? p_->refs_.load(std::memory_order_relaxed) : 0; }

  friend bool operator==(const message_ptr& a, const message_ptr& b) noexcept { return a.p_ == b.p_; }
  friend bool operator!=(const message_ptr& a, const message_ptr& b) noexcept { return a.p_ != b.p_; }

 private:
  friend class message;
  explicit message_ptr(const message* p) noexcept : p_(p) { p_->add_ref(); }
  const message* p_ = nullptr;
};

inline message_ptr message::make(std::string_view topic, std::string_view payload, codec::qos q, bool retain,
                                 std::string_view properties, std::uint32_t expires_at) {
  const bool has_expiry = expires_at != 0;
  const std::size_t n = topic.size() + properties.size() + payload.size() + (has_expiry ? sizeof expires_at : 0);
  std::uint8_t block = 0;
  void* raw = detail::block_pool::allocate(sizeof(message) + n, block);
  auto* m = new (raw) message(static_cast<std::uint32_t>(topic.size()), static_cast<std::uint32_t>(properties.size()),
                              static_cast<std::uint32_t>(payload.size()), q, retain, block, has_expiry);
  char* out = m->bytes();
  if (!topic.empty()) std::memcpy(out, topic.data(), topic.size());
  if (!properties.empty()) std::memcpy(out + topic.size(), properties.data(), properties.size());
  if (!payload.empty()) std::memcpy(out + topic.size() + properties.size(), payload.data(), payload.size());
  if (has_expiry) std::memcpy(out + topic.size() + properties.size() + payload.size(), &expires_at, sizeof expires_at);
  return message_ptr(m);
}

MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_MESSAGE_HPP
