#ifndef MQTTBROKER_CODEC_UTF8_HPP
#define MQTTBROKER_CODEC_UTF8_HPP

#include <mqttbroker/config.hpp>
#include <mqttbroker/error.hpp>

#include <cstdint>
#include <cstring>
#include <string_view>
#include <system_error>

MQTTBROKER_BEGIN_NAMESPACE
namespace codec {

/// Checks an MQTT UTF-8 Encoded String: well-formed per RFC 3629 (no overlong forms, no surrogates,
/// nothing above U+10FFFF) [MQTT-1.5.4-1] and no U+0000 [MQTT-1.5.4-2]. Other control characters
/// and non-characters are accepted: the specification only allows, not requires, refusing them.
inline std::error_code validate_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* const end = p + s.size();
  while (p != end) {
    // Topics are mostly ASCII: test eight bytes at a time for any high bit or zero byte.
    while (end - p >= 8) {
      std::uint64_t w;
      std::memcpy(&w, p, 8);
      const std::uint64_t has_zero = (w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL;
      if ((w & 0x8080808080808080ULL) != 0 || has_zero != 0) break;
      p += 8;
    }
    if (p == end) break;
    const unsigned char c = *p;
    if (c < 0x80) {
      if (c == 0) return codec_errc::utf8_null_character;
      ++p;
      continue;
    }
    std::size_t len;
    std::uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0Fu;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07u;
    } else {
      return codec_errc::invalid_utf8;  // continuation byte first, C0/C1 overlong lead, or F5..FF
    }
    if (static_cast<std::size_t>(end - p) < len) return codec_errc::invalid_utf8;
    for (std::size_t i = 1; i < len; ++i) {
      const unsigned char cc = p[i];
      if ((cc & 0xC0u) != 0x80u) return codec_errc::invalid_utf8;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return codec_errc::invalid_utf8;  // overlong or out of range
    if (cp >= 0xD800 && cp <= 0xDFFF) return codec_errc::invalid_utf8;  // surrogates [MQTT-1.5.4-1]
    p += len;
  }
  return {};
}

}  // namespace codec
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CODEC_UTF8_HPP
