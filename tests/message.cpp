#include <mqttbroker/detail/intrusive_list.hpp>
#include <mqttbroker/detail/ref_counted.hpp>
#include <mqttbroker/message.hpp>

#include "catch.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

// Messages and the per-thread cache of their blocks (detail::block_pool). Each pool test starts
// with trim(), so what other tests left cached on this thread does not count.

namespace mb = mqttbroker;
namespace codec = mqttbroker::codec;
using mb::message;
using mb::message_ptr;
using pool = mb::detail::block_pool;

namespace {

/// The size class of a message of `topic` and `payload` bytes, no properties.
std::uint8_t class_for(std::size_t topic, std::size_t payload) { return pool::class_of(sizeof(message) + topic + payload); }

message_ptr make(std::size_t payload_size, std::string_view topic = "t/x") {
  return message::make(topic, std::string(payload_size, 'p'), codec::qos::at_most_once, false);
}

}  // namespace

TEST_CASE("message: holds topic, properties and payload in one block", "[message]") {
  // The pool's size class lives in padding: a message header stays as small as before.
  static_assert(sizeof(message) <= 20, "message header grew");
  codec::properties_builder props;
  props.add(codec::property_id::content_type, std::string_view("text/plain"));
  auto m = message::make("a/b", "hello", codec::qos::at_least_once, true, props.view().bytes());
  CHECK(m->topic() == "a/b");
  CHECK(m->payload() == "hello");
  CHECK(m->qos_level() == codec::qos::at_least_once);
  CHECK(m->retain());
  auto ct = m->properties().find(codec::property_id::content_type);
  REQUIRE(ct);
  CHECK(ct->value == "text/plain");
  message_ptr copy = m;
  CHECK(m.use_count() == 2);
}

TEST_CASE("block pool: size classes from 64 B to 32 KiB, each the smallest that fits", "[message][pool]") {
  CHECK(pool::class_of(1) == 0);
  CHECK(pool::class_of(64) == 0);
  CHECK(pool::class_of(65) == 1);
  // Asio's operations with a connection's handler, one held by every idle connection: no round-up.
  CHECK(pool::block_size(pool::class_of(88)) == 88);
  CHECK(pool::block_size(pool::class_of(128)) == 128);
  CHECK(pool::block_size(pool::class_of(177)) == 256);
  CHECK(pool::block_size(pool::class_of(1024)) == 1024);
  CHECK(pool::block_size(pool::class_of(1025)) == 2048);
  CHECK(pool::class_of(pool::max_block) == pool::classes - 1);
  CHECK(pool::class_of(pool::max_block + 1) == pool::unpooled);
  for (std::uint8_t c = 1; c < pool::classes; ++c) CHECK(pool::block_size(c - 1) < pool::block_size(c));
  // The bound: MQTTBROKER_BLOCK_POOL_SMALL_CLASS_BYTES per class of up to 256 B,
  // MQTTBROKER_BLOCK_POOL_CLASS_BYTES per larger one, rounded down to whole blocks.
  for (std::uint8_t c = 0; c < pool::classes; ++c) {
    const auto per_class = static_cast<std::size_t>(pool::block_size(c) <= 256 ? MQTTBROKER_BLOCK_POOL_SMALL_CLASS_BYTES
                                                                               : MQTTBROKER_BLOCK_POOL_CLASS_BYTES);
    CHECK(pool::capacity(c) * pool::block_size(c) <= per_class);
    CHECK(pool::capacity(c) * pool::block_size(c) + pool::block_size(c) > per_class);
  }
  CHECK(pool::capacity(pool::class_of(256)) == MQTTBROKER_BLOCK_POOL_SMALL_CLASS_BYTES / 256);
  CHECK(pool::capacity(pool::class_of(257)) == MQTTBROKER_BLOCK_POOL_CLASS_BYTES / 512);
}

TEST_CASE("message pool: a freed block is reused by the next message of its class", "[message][pool]") {
  pool::trim();
  const std::uint8_t c = class_for(3, 16);
  REQUIRE(c == class_for(3, 30));  // both fit 64 B
  auto m = make(16);
  const void* first = m.get();
  CHECK(pool::cached_blocks(c) == 0);
  m = message_ptr();
  CHECK(pool::cached_blocks(c) == 1);
  CHECK(pool::cached_bytes() == pool::block_size(c));

  auto again = make(30);
  CHECK(static_cast<const void*>(again.get()) == first);
  CHECK(pool::cached_blocks(c) == 0);
  CHECK(again->payload() == std::string(30, 'p'));  // a reused block holds the new contents
  CHECK(again->topic() == "t/x");
}

TEST_CASE("message pool: classes keep their own blocks", "[message][pool]") {
  pool::trim();
  const std::uint8_t small = class_for(3, 16);
  const std::uint8_t large = class_for(3, 1024);
  REQUIRE(small != large);
  auto s = make(16);
  const void* small_block = s.get();
  s = message_ptr();
  REQUIRE(pool::cached_blocks(small) == 1);

  auto l = make(1024);  // no block of its class is cached: a new one, the small block stays
  CHECK(static_cast<const void*>(l.get()) != small_block);
  CHECK(pool::cached_blocks(small) == 1);
  CHECK(pool::cached_blocks(large) == 0);
  const void* large_block = l.get();
  l = message_ptr();
  CHECK(pool::cached_blocks(large) == 1);
  CHECK(pool::cached_bytes() == pool::block_size(small) + pool::block_size(large));

  REQUIRE(class_for(3, 1100) == large);
  auto l2 = make(1100);  // another size of the same class
  CHECK(static_cast<const void*>(l2.get()) == large_block);
  auto s2 = make(1);
  CHECK(static_cast<const void*>(s2.get()) == small_block);
  CHECK(pool::cached_bytes() == 0);
}

TEST_CASE("message pool: messages larger than the largest class bypass the cache", "[message][pool]") {
  pool::trim();
  REQUIRE(class_for(3, 40000) == pool::unpooled);
  auto m = make(40000);
  CHECK(m->payload().size() == 40000);
  m = message_ptr();
  CHECK(pool::cached_bytes() == 0);
  // Just above the largest class too.
  auto edge = make(pool::max_block - sizeof(message) - 3 + 1);
  edge = message_ptr();
  CHECK(pool::cached_bytes() == 0);
  auto fits = make(pool::max_block - sizeof(message) - 3);
  fits = message_ptr();
  CHECK(pool::cached_blocks(pool::classes - 1) == 1);
  pool::trim();
}

TEST_CASE("message pool: a block goes to the cache of the thread that releases it", "[message][pool]") {
  pool::trim();
  const std::uint8_t c = class_for(3, 100);
  auto m = make(100);
  const void* block = m.get();
  std::size_t cached_there = 0;
  bool reused_there = false;
  std::size_t cached_there_after_reuse = 99;
  std::thread t([&, mine = std::move(m)]() mutable {
    mine = message_ptr();  // the last owner lets go on this thread
    cached_there = pool::cached_blocks(c);
    auto again = make(100);
    reused_there = static_cast<const void*>(again.get()) == block;
    cached_there_after_reuse = pool::cached_blocks(c);
    // `again` is released into this thread's cache, which the thread's exit empties (a leak
    // checker would report it otherwise).
  });
  t.join();
  CHECK(cached_there == 1);
  CHECK(reused_there);
  CHECK(cached_there_after_reuse == 0);
  CHECK(pool::cached_blocks(c) == 0);  // nothing came back to the making thread
}

TEST_CASE("message pool: a thread keeps at most capacity() blocks per class", "[message][pool]") {
  pool::trim();
  const std::uint8_t c = class_for(3, 16);
  const std::size_t cap = pool::capacity(c);
  REQUIRE(cap > 0);
  std::vector<message_ptr> held;
  held.reserve(cap + 10);
  for (std::size_t i = 0; i < cap + 10; ++i) held.push_back(make(16));
  held.clear();  // cap + 10 releases: the surplus goes back to operator delete
  CHECK(pool::cached_blocks(c) == cap);
  CHECK(pool::cached_bytes() == cap * pool::block_size(c));
  pool::trim();
  CHECK(pool::cached_bytes() == 0);
}

TEST_CASE("message pool: a release during thread exit, after the cache is gone, frees directly", "[message][pool]") {
  struct holder {
    message_ptr m;
  };
  std::size_t cached = 0;
  std::thread t([&cached] {
    // Built before the cache's reaper, so destroyed after it: its message is released into a
    // retired cache and must go straight to operator delete (ASan and LSan check that).
    static thread_local holder h;
    h.m = make(16);
    make(16);  // a caching release arms the reaper
    cached = pool::cached_blocks(class_for(3, 16));
  });
  t.join();
  CHECK(cached == 1);
}

#if MQTTBROKER_HAS_ASAN
TEST_CASE("message pool: cached and slack memory is poisoned under AddressSanitizer", "[message][pool][asan]") {
  pool::trim();
  auto m = make(16);
  const char* base = reinterpret_cast<const char*>(m.get());
  const std::size_t used = sizeof(message) + 3 + 16;
  CHECK_FALSE(__asan_address_is_poisoned(base + used - 1));
  CHECK(__asan_address_is_poisoned(base + used));  // past the message, inside its 64 B block
  m = message_ptr();
  CHECK(__asan_address_is_poisoned(base));  // use after release is still reported
  auto again = make(16);
  CHECK(reinterpret_cast<const char*>(again.get()) == base);
  CHECK_FALSE(__asan_address_is_poisoned(base));
  CHECK(__asan_address_is_poisoned(base + used));
}
#endif

TEST_CASE("pooled bytes grow with what is appended and give their block back when reset", "[pool]") {
  pool::trim();
  mb::detail::pooled_bytes b;
  CHECK(b.empty());
  std::string expected;
  std::uint8_t chunk[1000];
  for (int i = 0; i < 100; ++i) {  // 100,000 bytes: through every class and past the largest
    for (std::size_t j = 0; j < sizeof chunk; ++j) chunk[j] = static_cast<std::uint8_t>(i + static_cast<int>(j));
    b.append(chunk, sizeof chunk);
    expected.append(reinterpret_cast<const char*>(chunk), sizeof chunk);
  }
  REQUIRE(b.size() == expected.size());
  CHECK(std::string(reinterpret_cast<const char*>(b.data()), b.size()) == expected);
  b.reset();
  CHECK(b.empty());
  CHECK(b.data() == nullptr);
  // Reused: a small buffer after a reset takes a cached block, not the heap.
  const std::size_t cached = pool::cached_bytes();
  CHECK(cached > 0);
  b.append(chunk, sizeof chunk);  // the 1 KiB class, freed when the buffer outgrew it
  CHECK(pool::cached_bytes() < cached);
  b.reset();
}

// ---- detail::ref_ptr and detail::owning_list: how the broker owns connections and sessions

namespace {

/// Counts its destructions, so a test sees exactly when the last reference went.
struct tracked : mb::detail::ref_counted, mb::detail::list_links {
  explicit tracked(int& deaths, int number = 0) : deaths_(deaths), id(number) {}
  ~tracked() { ++deaths_; }
  int& deaths_;
  int id;
};
using tracked_ptr = mb::detail::ref_ptr<tracked>;

}  // namespace

TEST_CASE("ref_ptr: the object lives while any reference does and is deleted with the last", "[detail][ref_ptr]") {
  int deaths = 0;
  tracked_ptr a = tracked_ptr::make(deaths);
  CHECK(a.use_count() == 1);
  {
    tracked_ptr b = a;            // copy
    tracked_ptr c(a.get());       // from the plain pointer, as a connection refers to itself
    CHECK(a.use_count() == 3);
    tracked_ptr d = std::move(b);  // a move adds nothing
    CHECK_FALSE(b);
    CHECK(a.use_count() == 3);
    CHECK(d == a);
  }
  CHECK(a.use_count() == 1);
  CHECK(deaths == 0);
  tracked* raw = a.get();
  tracked* detached = a.detach();  // the reference is now the caller's
  CHECK(detached == raw);
  CHECK_FALSE(a);
  CHECK(deaths == 0);
  tracked_ptr back = tracked_ptr::adopt(detached);
  CHECK(back.use_count() == 1);
  back = nullptr;
  CHECK(deaths == 1);
  tracked_ptr empty;
  CHECK(empty.use_count() == 0);
  empty.reset();  // resetting nothing is harmless
  CHECK(deaths == 1);
}

TEST_CASE("owning_list: holds a reference to each element, in order, and gives it back on erase", "[detail][ref_ptr]") {
  int deaths = 0;
  std::vector<tracked_ptr> keep;
  {
    mb::detail::owning_list<tracked> list;
    for (int i = 0; i < 4; ++i) {
      tracked_ptr p = tracked_ptr::make(deaths, i);
      list.push_back(p);
      CHECK(p.use_count() == 2);  // ours and the list's
      if (i != 3) keep.push_back(std::move(p));
    }
    // Element 3 is held by the list alone.
    CHECK(list.size() == 4);
    std::vector<int> order;
    list.for_each([&](tracked& t) { order.push_back(t.id); });
    CHECK(order == std::vector<int>{0, 1, 2, 3});

    // A middle element, then the head: the links around them close up.
    tracked_ptr out = list.erase(*keep[1]);
    CHECK(out == keep[1]);
    CHECK(keep[1].use_count() == 2);  // ours and `out`
    out.reset();
    list.erase(*keep[0]);
    order.clear();
    list.for_each([&](tracked& t) { order.push_back(t.id); });
    CHECK(order == std::vector<int>{2, 3});
    CHECK(list.size() == 2);
    CHECK(deaths == 0);
  }
  // The list's end drops its references: element 3 had no other.
  CHECK(deaths == 1);
  for (auto& p : keep) CHECK(p.use_count() == 1);
  keep.clear();
  CHECK(deaths == 4);
}
