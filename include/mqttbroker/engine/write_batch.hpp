#ifndef MQTTBROKER_ENGINE_WRITE_BATCH_HPP
#define MQTTBROKER_ENGINE_WRITE_BATCH_HPP

#include <mqttbroker/codec/encoder.hpp>
#include <mqttbroker/codec/packets.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/message.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace engine {

/// Bytes of a batch: a run in the batch's arena, or a payload that stays in its message.
struct write_segment {
  std::size_t offset;
  std::size_t size;
  message_ptr payload;  // set: the bytes are this message's payload, not the arena's
};

/// One contiguous run of bytes to write; the server turns a list of them into a gather write.
struct byte_run {
  const std::uint8_t* data;
  std::size_t size;
};

/// Packets encoded for one connection and written with one gather write. Headers, and payloads
/// small enough that copying beats another iovec and a reference count, go into the arena back to
/// back, so a burst of small messages is one buffer; a larger payload is referenced where it is.
struct write_batch {
  /// Payloads up to this size are copied next to their header.
  static constexpr std::size_t inline_payload_limit = 512;

  std::vector<std::uint8_t> arena;
  std::vector<write_segment> segments;
  std::vector<byte_run> runs;  // built when the batch starts writing
  std::size_t bytes = 0;
  std::size_t sent_runs = 0;  // runs the transport has taken whole

  bool empty() const noexcept { return segments.empty(); }

  void clear() noexcept {
    arena.clear();
    segments.clear();
    runs.clear();
    bytes = 0;
    sent_runs = 0;
  }

  /// Encodes a whole packet into the arena.
  template <class Packet>
  void add(const Packet& p, codec::protocol_version v) {
    std::size_t size = 0;
    if (codec::encoded_size(p, v, size)) return;  // our own packets always fit; nothing to send otherwise
    std::size_t written = 0;
    codec::encode(p, v, extend(size), size, written);
    bytes += size;
  }

  /// Encodes a PUBLISH's header, then copies or references its payload.
  bool add_publish(const codec::publish& p, codec::protocol_version v, const message_ptr& m) {
    std::size_t size = 0;
    if (codec::publish_header_size(p, v, size)) return false;
    const std::size_t payload = p.payload.size();
    const bool inline_payload = payload <= inline_payload_limit;
    std::uint8_t* out = extend(inline_payload ? size + payload : size);
    std::size_t written = 0;
    codec::encode_publish_header(p, v, out, size, written);
    if (inline_payload) {
      if (payload != 0) std::memcpy(out + size, p.payload.data(), payload);
    } else {
      segments.push_back({0, payload, m});
    }
    bytes += size + payload;
    return true;
  }

  /// The gather list, in order.
  void build_runs() {
    runs.clear();
    sent_runs = 0;
    for (const write_segment& s : segments) {
      if (s.payload)
        runs.push_back({reinterpret_cast<const std::uint8_t*>(s.payload->payload().data()), s.size});
      else
        runs.push_back({arena.data() + s.offset, s.size});
    }
  }

  /// Marks `n` more bytes as written. True when the whole batch is out.
  bool consume(std::size_t n) noexcept {
    while (n != 0) {
      byte_run& r = runs[sent_runs];
      if (n >= r.size) {
        n -= r.size;
        ++sent_runs;
      } else {
        r.data += n;
        r.size -= n;
        n = 0;
      }
    }
    return sent_runs == runs.size();
  }

  /// Keeps a pooled batch from pinning the memory of one large burst.
  void trim() {
    constexpr std::size_t keep = 64 * 1024;
    if (arena.capacity() > keep) std::vector<std::uint8_t>().swap(arena);
    if (segments.capacity() > keep / sizeof(write_segment)) std::vector<write_segment>().swap(segments);
    if (runs.capacity() > keep / sizeof(byte_run)) std::vector<byte_run>().swap(runs);
  }

 private:
  /// `n` more arena bytes, joined to the last arena segment when adjacent.
  std::uint8_t* extend(std::size_t n) {
    const std::size_t off = arena.size();
    arena.resize(off + n);
    if (!segments.empty() && !segments.back().payload && segments.back().offset + segments.back().size == off)
      segments.back().size += n;
    else
      segments.push_back({off, n, message_ptr()});
    return arena.data() + off;
  }
};

/// Write batches kept per thread between bursts: a connection holds one only while it has
/// something to send, so an idle connection costs no write memory, and a busy one allocates none.
class write_batch_pool {
 public:
  static std::unique_ptr<write_batch> acquire() {
    auto& free = local();
    if (free.items.empty()) return std::make_unique<write_batch>();
    std::unique_ptr<write_batch> b = std::move(free.items.back());
    free.items.pop_back();
    return b;
  }
  static void release(std::unique_ptr<write_batch> b) {
    if (!b) return;
    b->clear();
    auto& free = local();
    if (free.items.size() >= max_cached) return;  // freed here
    b->trim();
    free.items.push_back(std::move(b));
  }

  /// Frees the batches kept on this thread (after a burst, before the heap is trimmed).
  static void shrink() noexcept { local().items.clear(); }

 private:
  static constexpr std::size_t max_cached = 64;  // with trim(): at most 4 MiB of arenas kept per thread
  struct cache {
    std::vector<std::unique_ptr<write_batch>> items;
  };
  static cache& local() {
    static thread_local cache c;
    return c;
  }
};

}  // namespace engine
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_ENGINE_WRITE_BATCH_HPP
