#ifndef MQTTBROKER_CODEC_DETAIL_WIRE_HPP
#define MQTTBROKER_CODEC_DETAIL_WIRE_HPP

#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/codec/utf8.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/error.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <system_error>

MQTTBROKER_BEGIN_NAMESPACE
namespace codec {
namespace detail {

/// Bytes a Variable Byte Integer takes on the wire (1..4); values above 268,435,455 do not fit.
constexpr std::size_t varint_size(std::uint32_t v) noexcept {
  return v < 128u ? 1 : v < 16'384u ? 2 : v < 2'097'152u ? 3 : 4;
}

/// Reads the fields of one packet's body; every read checks the bounds first, so a length a
/// client sent can never make it read past the packet.
class reader {
 public:
  reader(const std::uint8_t* data, std::size_t size) noexcept : p_(data), end_(data + size) {}

  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - p_); }
  bool at_end() const noexcept { return p_ == end_; }
  const std::uint8_t* position() const noexcept { return p_; }

  std::error_code u8(std::uint8_t& v) noexcept {
    if (p_ == end_) return codec_errc::truncated;
    v = *p_++;
    return {};
  }
  std::error_code u16(std::uint16_t& v) noexcept {
    if (remaining() < 2) return codec_errc::truncated;
    v = static_cast<std::uint16_t>((p_[0] << 8) | p_[1]);
    p_ += 2;
    return {};
  }
  std::error_code u32(std::uint32_t& v) noexcept {
    if (remaining() < 4) return codec_errc::truncated;
    v = (std::uint32_t{p_[0]} << 24) | (std::uint32_t{p_[1]} << 16) | (std::uint32_t{p_[2]} << 8) |
        std::uint32_t{p_[3]};
    p_ += 4;
    return {};
  }
  /// A Variable Byte Integer of at most 4 bytes in its shortest form [MQTT-1.5.5-1].
  std::error_code varint(std::uint32_t& v) noexcept {
    std::uint32_t value = 0;
    for (unsigned shift = 0; shift < 28; shift += 7) {
      if (p_ == end_) return codec_errc::truncated;
      const std::uint8_t b = *p_++;
      value |= std::uint32_t{b & 0x7Fu} << shift;
      if ((b & 0x80u) == 0) {
        if (b == 0 && shift != 0) return codec_errc::invalid_varint;  // not the shortest form
        v = value;
        return {};
      }
    }
    return codec_errc::invalid_varint;
  }
  /// `n` raw bytes as a view into the packet.
  std::error_code bytes(std::size_t n, std::string_view& v) noexcept {
    if (remaining() < n) return codec_errc::truncated;
    v = std::string_view(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return {};
  }
  /// Two-byte length followed by that many bytes.
  std::error_code binary(std::string_view& v) noexcept {
    std::uint16_t n = 0;
    if (auto ec = u16(n)) return ec;
    return bytes(n, v);
  }
  /// A UTF-8 Encoded String, validated.
  std::error_code utf8(std::string_view& v) noexcept {
    if (auto ec = binary(v)) return ec;
    return validate_utf8(v);
  }
  /// The rest of the packet.
  std::string_view rest() noexcept {
    std::string_view v(reinterpret_cast<const char*>(p_), remaining());
    p_ = end_;
    return v;
  }

 private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
};

/// Writes into a buffer the caller sized with the matching size functions.
class writer {
 public:
  explicit writer(std::uint8_t* out) noexcept : p_(out) {}
  std::uint8_t* position() const noexcept { return p_; }

  void u8(std::uint8_t v) noexcept { *p_++ = v; }
  void u16(std::uint16_t v) noexcept {
    p_[0] = static_cast<std::uint8_t>(v >> 8);
    p_[1] = static_cast<std::uint8_t>(v);
    p_ += 2;
  }
  void u32(std::uint32_t v) noexcept {
    p_[0] = static_cast<std::uint8_t>(v >> 24);
    p_[1] = static_cast<std::uint8_t>(v >> 16);
    p_[2] = static_cast<std::uint8_t>(v >> 8);
    p_[3] = static_cast<std::uint8_t>(v);
    p_ += 4;
  }
  void varint(std::uint32_t v) noexcept {
    do {
      auto b = static_cast<std::uint8_t>(v & 0x7Fu);
      v >>= 7;
      if (v != 0) b = static_cast<std::uint8_t>(b | 0x80u);
      *p_++ = b;
    } while (v != 0);
  }
  void bytes(std::string_view s) noexcept {
    if (!s.empty()) std::memcpy(p_, s.data(), s.size());
    p_ += s.size();
  }
  /// Two-byte length prefix and the bytes (strings and binary data alike).
  void string(std::string_view s) noexcept {
    u16(static_cast<std::uint16_t>(s.size()));
    bytes(s);
  }

 private:
  std::uint8_t* p_;
};

}  // namespace detail
}  // namespace codec
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CODEC_DETAIL_WIRE_HPP
