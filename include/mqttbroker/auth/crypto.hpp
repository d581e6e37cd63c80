#ifndef MQTTBROKER_AUTH_CRYPTO_HPP
#define MQTTBROKER_AUTH_CRYPTO_HPP

// What the authentication methods of auth/ share on OpenSSL's libcrypto (CMake target
// mqttbroker::auth): strict base64 and random bytes. Not part of the single header.

#include <mqttbroker/config.hpp>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

MQTTBROKER_BEGIN_NAMESPACE
namespace auth {
namespace detail {

inline const unsigned char* bytes(std::string_view s) noexcept { return reinterpret_cast<const unsigned char*>(s.data()); }

inline std::string base64(std::string_view raw) {
  std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes(raw), static_cast<int>(raw.size()));
  out.resize(n < 0 ? 0 : static_cast<std::size_t>(n));
  return out;
}

/// Strict base64 (RFC 4648, padded, no whitespace): OpenSSL decodes, this checks what it would
/// otherwise let through.
inline std::optional<std::string> unbase64(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::size_t padding = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const bool alphabet = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
    if (c == '=') {
      if (i + 2 < text.size()) return std::nullopt;  // only in the last two places
      ++padding;
    } else if (!alphabet || padding != 0) {
      return std::nullopt;
    }
  }
  std::string out(text.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes(text), static_cast<int>(text.size()));
  if (n < 0 || static_cast<std::size_t>(n) != out.size()) return std::nullopt;
  out.resize(out.size() - padding);
  return out;
}

/// `n` bytes from OpenSSL's generator into `out`; false when it has none to give.
inline bool fill_random(std::size_t n, std::string& out) {
  out.assign(n, '\0');
  return n <= 0x7FFFFFFF && RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) == 1;
}

}  // namespace detail
}  // namespace auth
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_AUTH_CRYPTO_HPP
