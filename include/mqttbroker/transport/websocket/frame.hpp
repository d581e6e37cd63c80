#ifndef MQTTBROKER_TRANSPORT_WEBSOCKET_FRAME_HPP
#define MQTTBROKER_TRANSPORT_WEBSOCKET_FRAME_HPP

// WebSocket framing (RFC 6455 §5), server side, sans-I/O: bytes in, MQTT bytes and control frames
// out; and the few frames a server writes. No Asio, no OpenSSL: the handshake and the stream
// wrapper live elsewhere, so this part is unit-tested and fuzzed alone.

#include <mqttbroker/config.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

MQTTBROKER_BEGIN_NAMESPACE

/// Frames a WebSocket server must refuse; each maps to the close status it answers with.
enum class websocket_errc {
  reserved_bits_set = 1,     // RSV1-3 without a negotiated extension (§5.2)
  unknown_opcode,            // opcodes 3-7 and 11-15 (§5.2)
  unmasked_frame,            // a client frame without the mask bit (§5.1)
  non_minimal_length,        // a 16/64-bit length that fits the shorter form (§5.2)
  length_top_bit_set,        // a 64-bit length with its most significant bit set (§5.2)
  control_frame_too_long,    // a ping/pong/close payload over 125 bytes (§5.5)
  fragmented_control_frame,  // a control frame without FIN (§5.5)
  unexpected_continuation,   // a continuation frame with no message open (§5.4)
  expected_continuation,     // a new data frame while a message is still open (§5.4)
  text_frame,                // MQTT over WebSocket is binary only [MQTT-6.0.0-1]
  message_too_big,           // a frame or message over the configured maximum
  invalid_close_payload,     // a 1-byte close payload or a status code not allowed on the wire (§7.4)
  // The opening handshake (RFC 6455 §4.2), each answered with an HTTP status before the close.
  upgrade_malformed,          // not an HTTP/1.1 request, or a malformed line: 400
  upgrade_not_get,            // a method other than GET: 405
  upgrade_not_websocket,      // no `Upgrade: websocket` / `Connection: Upgrade`: 426
  upgrade_bad_key,            // Sec-WebSocket-Key missing, repeated, or not 16 bytes of base64: 400
  upgrade_unsupported_version,  // Sec-WebSocket-Version other than 13: 426
  upgrade_wrong_path,         // not the listener's path: 404
  upgrade_origin_refused,     // an Origin outside the listener's list: 403
  upgrade_no_mqtt_subprotocol,  // Sec-WebSocket-Protocol offered without `mqtt` [MQTT-6.0.0-3]: 400
  upgrade_too_large,          // the request is over the listener's limit: 431
};

/// The category of websocket_errc values: "mqttbroker.websocket".
inline const std::error_category& websocket_category() noexcept {
  class category final : public std::error_category {
   public:
    const char* name() const noexcept override { return "mqttbroker.websocket"; }
    std::string message(int ev) const override {
      switch (static_cast<websocket_errc>(ev)) {
        case websocket_errc::reserved_bits_set: return "reserved bits set in a WebSocket frame";
        case websocket_errc::unknown_opcode: return "unknown WebSocket opcode";
        case websocket_errc::unmasked_frame: return "client WebSocket frame not masked";
        case websocket_errc::non_minimal_length: return "WebSocket payload length not minimally encoded";
        case websocket_errc::length_top_bit_set: return "WebSocket 64-bit payload length with the top bit set";
        case websocket_errc::control_frame_too_long: return "WebSocket control frame over 125 bytes";
        case websocket_errc::fragmented_control_frame: return "fragmented WebSocket control frame";
        case websocket_errc::unexpected_continuation: return "WebSocket continuation frame without a message";
        case websocket_errc::expected_continuation: return "new WebSocket message before the last one ended";
        case websocket_errc::text_frame: return "WebSocket text frame (MQTT needs binary)";
        case websocket_errc::message_too_big: return "WebSocket message too big";
        case websocket_errc::invalid_close_payload: return "invalid WebSocket close payload";
        case websocket_errc::upgrade_malformed: return "malformed WebSocket upgrade request";
        case websocket_errc::upgrade_not_get: return "WebSocket upgrade request not a GET";
        case websocket_errc::upgrade_not_websocket: return "HTTP request without a WebSocket upgrade";
        case websocket_errc::upgrade_bad_key: return "missing or invalid Sec-WebSocket-Key";
        case websocket_errc::upgrade_unsupported_version: return "unsupported Sec-WebSocket-Version (13 needed)";
        case websocket_errc::upgrade_wrong_path: return "WebSocket upgrade on an unknown path";
        case websocket_errc::upgrade_origin_refused: return "WebSocket Origin not allowed";
        case websocket_errc::upgrade_no_mqtt_subprotocol: return "WebSocket subprotocols offered without mqtt";
        case websocket_errc::upgrade_too_large: return "WebSocket upgrade request too large";
      }
      return "unknown WebSocket error";
    }
  };
  static const category instance;
  return instance;
}

inline std::error_code make_error_code(websocket_errc e) noexcept { return {static_cast<int>(e), websocket_category()}; }

MQTTBROKER_END_NAMESPACE

namespace std {
template <>
struct is_error_code_enum<::mqttbroker::websocket_errc> : true_type {};
}  // namespace std

MQTTBROKER_BEGIN_NAMESPACE
namespace transport {
namespace websocket {

enum class opcode : std::uint8_t { continuation = 0x0, text = 0x1, binary = 0x2, close = 0x8, ping = 0x9, pong = 0xA };

/// Close status codes (§7.4.1) the server sends.
namespace close_code {
constexpr std::uint16_t normal = 1000;
constexpr std::uint16_t protocol_error = 1002;
constexpr std::uint16_t unsupported_data = 1003;
constexpr std::uint16_t no_status = 1005;  // reported for a close frame without payload; never sent
constexpr std::uint16_t message_too_big = 1009;
constexpr std::uint16_t internal_error = 1011;
}  // namespace close_code

/// The status code to close with after `ec`: 1009 for size, 1003 for text, 1002 for the rest.
inline std::uint16_t close_code_for(const std::error_code& ec) noexcept {
  if (ec.category() != websocket_category()) return close_code::internal_error;
  switch (static_cast<websocket_errc>(ec.value())) {
    case websocket_errc::message_too_big: return close_code::message_too_big;
    case websocket_errc::text_frame: return close_code::unsupported_data;
    default: return close_code::protocol_error;
  }
}

/// Whether a peer may send `code` in a close frame (§7.4.1, §7.4.2, IANA registry): 1004-1006 and
/// 1015 are reserved for local use, 1016-2999 for future protocol revisions.
constexpr bool close_code_allowed(std::uint16_t code) noexcept {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

/// A ping, pong or close frame, its payload unmasked. The views point into the parser and are valid
/// during the callback only.
struct control_frame {
  opcode op{};
  std::string_view payload;  // all of it (ping: what the pong echoes)
  std::uint16_t code = 0;    // close only: the status, close_code::no_status when absent
  std::string_view reason;   // close only: after the status
};

/// An incremental server-side frame parser. Feed it what arrives, in chunks of any size; it hands on
/// the binary message payload (the MQTT byte stream: frame and message boundaries carry no meaning
/// for MQTT) and reports control frames. It allocates nothing: payload is unmasked in the caller's
/// buffer or appended to the caller's container, control payloads (<= 125 bytes) sit in the parser.
/// Errors are sticky. After a close frame it stops; closed() says so, and the caller answers it.
class frame_parser {
 public:
  struct result {
    std::size_t consumed = 0;
    std::error_code ec;
  };

  /// `max_message_size`: the largest message (sum of its frames) accepted; the broker's packet limit.
  explicit frame_parser(std::uint64_t max_message_size) noexcept : max_message_(max_message_size) {}

  /// Unmasks payload in place in `data` and calls on_data(std::uint8_t* p, std::size_t n) with it,
  /// so no byte is copied; on_control(const control_frame&) for ping, pong and close.
  template <class OnData, class OnControl>
  result feed(std::uint8_t* data, std::size_t size, OnData&& on_data, OnControl&& on_control) {
    return feed_impl(data, size,
                     [&](const std::uint8_t* src, std::size_t n) {
                       // src is data + k: the caller's mutable buffer, so writing through it is fine.
                       auto* p = const_cast<std::uint8_t*>(src);
                       unmask(src, p, n);
                       on_data(p, n);
                     },
                     on_control);
  }

  /// Appends the unmasked payload to `out` (a std::string or std::vector of bytes). `out` grows by at
  /// most `size`: a length the peer announces never sizes an allocation.
  template <class Container, class OnControl>
  result feed_into(const std::uint8_t* data, std::size_t size, Container& out, OnControl&& on_control) {
    return feed_impl(data, size,
                     [&](const std::uint8_t* src, std::size_t n) {
                       const std::size_t old = out.size();
                       out.resize(old + n);
                       unmask(src, reinterpret_cast<std::uint8_t*>(&out[0]) + old, n);
                     },
                     on_control);
  }

  std::error_code error() const noexcept { return ec_; }
  /// A close frame was received; nothing after it is read.
  bool closed() const noexcept { return closed_; }
  /// Inside a fragmented message (a frame without FIN seen, its last frame not yet).
  bool mid_message() const noexcept { return in_message_; }

 private:
  enum class state : std::uint8_t { header, payload };

  template <class Deliver, class OnControl>
  result feed_impl(const std::uint8_t* data, std::size_t size, Deliver&& deliver, OnControl&& on_control) {
    result r;
    if (ec_) {
      r.ec = ec_;
      return r;
    }
    std::size_t pos = 0;
    while (pos < size && !closed_) {
      if (state_ == state::header) {
        header_[header_len_++] = data[pos++];
        if (header_len_ == 2) {
          if (auto ec = check_first_two()) return fail(r, pos, ec);
        }
        // The length is judged as soon as it is complete, before the mask key arrives.
        if (header_len_ >= 2 && header_len_ == 2 + length_bytes()) {
          if (auto ec = read_length()) return fail(r, pos, ec);
        }
        if (header_len_ >= 2 && header_len_ == header_needed()) {
          finish_header();
          if (remaining_ == 0) {
            if (auto ec = complete_frame(on_control)) return fail(r, pos, ec);
          }
        }
        continue;
      }
      // Payload: take what is here, up to the end of the frame.
      const std::uint64_t avail = size - pos;
      const auto n = static_cast<std::size_t>(remaining_ < avail ? remaining_ : avail);
      if (is_control()) {
        unmask(data + pos, control_.data() + control_len_, n);
        control_len_ += n;
      } else {
        deliver(data + pos, n);
      }
      pos += n;
      remaining_ -= n;
      if (remaining_ == 0) {
        if (auto ec = complete_frame(on_control)) return fail(r, pos, ec);
      }
    }
    r.consumed = pos;
    return r;
  }

  result fail(result& r, std::size_t pos, std::error_code ec) noexcept {
    ec_ = ec;
    r.consumed = pos;
    r.ec = ec;
    return r;
  }

  opcode op() const noexcept { return static_cast<opcode>(header_[0] & 0x0Fu); }
  bool fin() const noexcept { return (header_[0] & 0x80u) != 0; }
  bool is_control() const noexcept { return (header_[0] & 0x08u) != 0; }
  std::uint8_t len7() const noexcept { return header_[1] & 0x7Fu; }

  std::size_t length_bytes() const noexcept { return len7() == 126 ? 2 : len7() == 127 ? 8 : 0; }
  std::size_t header_needed() const noexcept {
    return 2 + length_bytes() + 4;  // every client frame has the 4-byte mask (checked at byte 2)
  }

  // What the first two bytes alone decide, before any length is read.
  std::error_code check_first_two() const noexcept {
    if ((header_[0] & 0x70u) != 0) return websocket_errc::reserved_bits_set;  // no extensions negotiated
    switch (op()) {
      case opcode::continuation:
        if (!in_message_) return websocket_errc::unexpected_continuation;
        break;
      case opcode::text: return websocket_errc::text_frame;  // refuse before reading a byte of it
      case opcode::binary:
        if (in_message_) return websocket_errc::expected_continuation;
        break;
      case opcode::close:
      case opcode::ping:
      case opcode::pong:
        if (!fin()) return websocket_errc::fragmented_control_frame;
        if (len7() > 125) return websocket_errc::control_frame_too_long;
        break;
      default: return websocket_errc::unknown_opcode;
    }
    if ((header_[1] & 0x80u) == 0) return websocket_errc::unmasked_frame;  // §5.1
    return {};
  }

  std::error_code read_length() noexcept {
    std::uint64_t len = len7();
    if (len == 126) {
      len = (std::uint64_t{header_[2]} << 8) | header_[3];
      if (len < 126) return websocket_errc::non_minimal_length;
    } else if (len == 127) {
      len = 0;
      for (std::size_t i = 2; i < 10; ++i) len = (len << 8) | header_[i];
      if ((len >> 63) != 0) return websocket_errc::length_top_bit_set;
      if (len <= 0xFFFF) return websocket_errc::non_minimal_length;
    }
    // The bound, before anything is sized by `len`: this frame added to the message so far.
    if (!is_control() && len > max_message_ - message_size_) return websocket_errc::message_too_big;
    remaining_ = len;
    return {};
  }

  void finish_header() noexcept {
    const std::size_t at = 2 + length_bytes();
    for (std::size_t i = 0; i < 4; ++i) mask_[i] = header_[at + i];
    mask_phase_ = 0;
    control_len_ = 0;
    state_ = state::payload;
    if (!is_control()) {
      message_size_ += remaining_;
      in_message_ = true;
    }
  }

  template <class OnControl>
  std::error_code complete_frame(OnControl& on_control) {
    state_ = state::header;
    header_len_ = 0;
    if (!is_control()) {
      if (fin()) {
        in_message_ = false;
        message_size_ = 0;
      }
      return {};
    }
    control_frame f;
    f.op = op();
    f.payload = std::string_view(reinterpret_cast<const char*>(control_.data()), control_len_);
    if (f.op == opcode::close) {
      f.code = close_code::no_status;
      if (control_len_ == 1) return websocket_errc::invalid_close_payload;
      if (control_len_ >= 2) {
        f.code = static_cast<std::uint16_t>((control_[0] << 8) | control_[1]);
        if (!close_code_allowed(f.code)) return websocket_errc::invalid_close_payload;
        f.reason = f.payload.substr(2);
      }
      closed_ = true;  // before the callback: it may look at closed()
    }
    on_control(static_cast<const control_frame&>(f));
    return {};
  }

  void unmask(const std::uint8_t* src, std::uint8_t* dst, std::size_t n) noexcept {
    std::size_t i = 0;
    if (n >= 16) {
      // Eight bytes at a time with the key turned to the current phase; eight is a whole number
      // of keys, so the phase is the same after. (memcpy: src and dst may be the same and unaligned.)
      std::uint8_t turned[8];
      for (unsigned k = 0; k < 8; ++k) turned[k] = mask_[(mask_phase_ + k) & 3u];
      std::uint64_t key;
      std::memcpy(&key, turned, 8);
      for (; i + 8 <= n; i += 8) {
        std::uint64_t word;
        std::memcpy(&word, src + i, 8);
        word ^= key;
        std::memcpy(dst + i, &word, 8);
      }
    }
    for (; i < n; ++i) {
      dst[i] = static_cast<std::uint8_t>(src[i] ^ mask_[mask_phase_]);
      mask_phase_ = (mask_phase_ + 1) & 3u;
    }
  }

  std::uint64_t max_message_;
  std::uint64_t message_size_ = 0;  // payload of the open message so far, this frame included
  std::uint64_t remaining_ = 0;     // payload bytes of the current frame still to come
  std::error_code ec_;
  std::array<std::uint8_t, 14> header_{};
  std::size_t header_len_ = 0;
  std::array<std::uint8_t, 4> mask_{};
  unsigned mask_phase_ = 0;
  std::array<std::uint8_t, 125> control_{};
  std::size_t control_len_ = 0;
  state state_ = state::header;
  bool in_message_ = false;
  bool closed_ = false;
};

/// A frame header a server writes: unmasked (§5.1), so at most 10 bytes.
struct frame_header {
  std::array<std::uint8_t, 10> bytes{};
  std::size_t size = 0;
  std::string_view view() const noexcept { return {reinterpret_cast<const char*>(bytes.data()), size}; }
};

/// The header of a final frame of `op` carrying `n` payload bytes, with the shortest length form.
inline frame_header make_frame_header(opcode op, std::uint64_t n) noexcept {
  frame_header h;
  h.bytes[0] = static_cast<std::uint8_t>(0x80u | static_cast<std::uint8_t>(op));
  if (n < 126) {
    h.bytes[1] = static_cast<std::uint8_t>(n);
    h.size = 2;
  } else if (n <= 0xFFFF) {
    h.bytes[1] = 126;
    h.bytes[2] = static_cast<std::uint8_t>(n >> 8);
    h.bytes[3] = static_cast<std::uint8_t>(n);
    h.size = 4;
  } else {
    h.bytes[1] = 127;
    for (std::size_t i = 0; i < 8; ++i) h.bytes[2 + i] = static_cast<std::uint8_t>(n >> (56 - 8 * i));
    h.size = 10;
  }
  return h;
}

/// The header of one binary message of `n` bytes: written before the payload, which is not copied.
inline frame_header make_binary_header(std::uint64_t n) noexcept { return make_frame_header(opcode::binary, n); }

/// A whole control frame: header and payload (at most 125 bytes).
struct control_frame_bytes {
  std::array<std::uint8_t, 127> bytes{};
  std::size_t size = 0;
  std::string_view view() const noexcept { return {reinterpret_cast<const char*>(bytes.data()), size}; }
};

/// The pong answering a ping: its payload echoed (§5.5.3). Longer payloads cannot come from a valid
/// ping, and are cut at 125 bytes.
inline control_frame_bytes make_pong(std::string_view ping_payload) noexcept {
  control_frame_bytes f;
  const std::size_t n = ping_payload.size() < 125 ? ping_payload.size() : 125;
  f.bytes[0] = 0x80u | static_cast<std::uint8_t>(opcode::pong);
  f.bytes[1] = static_cast<std::uint8_t>(n);
  for (std::size_t i = 0; i < n; ++i) f.bytes[2 + i] = static_cast<std::uint8_t>(ping_payload[i]);
  f.size = 2 + n;
  return f;
}

/// A close frame with `code` and a reason cut at 123 bytes (the 125-byte control limit).
inline control_frame_bytes make_close(std::uint16_t code, std::string_view reason = {}) noexcept {
  control_frame_bytes f;
  const std::size_t n = reason.size() < 123 ? reason.size() : 123;
  f.bytes[0] = 0x80u | static_cast<std::uint8_t>(opcode::close);
  f.bytes[1] = static_cast<std::uint8_t>(2 + n);
  f.bytes[2] = static_cast<std::uint8_t>(code >> 8);
  f.bytes[3] = static_cast<std::uint8_t>(code);
  for (std::size_t i = 0; i < n; ++i) f.bytes[4 + i] = static_cast<std::uint8_t>(reason[i]);
  f.size = 4 + n;
  return f;
}

}  // namespace websocket
}  // namespace transport
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_TRANSPORT_WEBSOCKET_FRAME_HPP
