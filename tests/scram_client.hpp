#ifndef MQTTBROKER_TESTS_SCRAM_CLIENT_HPP
#define MQTTBROKER_TESTS_SCRAM_CLIENT_HPP

// The client side of SCRAM-SHA-256 (RFC 5802 with SHA-256, RFC 7677) for the tests, written
// against OpenSSL directly and apart from include/mqttbroker/auth/scram.hpp, so that the
// broker's server side is checked against a second reading of the RFC, not against itself.
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace test_scram {

using digest = std::array<unsigned char, SHA256_DIGEST_LENGTH>;

inline std::string to_base64(const unsigned char* p, std::size_t n) {
  std::string out(4 * ((n + 2) / 3) + 1, '\0');
  const int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(&out[0]), p, static_cast<int>(n));
  out.resize(static_cast<std::size_t>(len));
  return out;
}
inline std::string to_base64(std::string_view s) {
  return to_base64(reinterpret_cast<const unsigned char*>(s.data()), s.size());
}
inline std::string from_base64(std::string_view s) {
  std::string out(s.size() / 4 * 3, '\0');
  const int len = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(&out[0]),
                                  reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  if (len < 0) return {};
  std::size_t n = static_cast<std::size_t>(len);
  for (std::size_t i = s.size(); i > 0 && s[i - 1] == '='; --i) --n;  // the decoder counts padding as bytes
  out.resize(n);
  return out;
}

inline digest hmac_sha256(std::string_view key, std::string_view data) {
  digest out{};
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), out.data(), &n);
  return out;
}
inline std::string_view as_view(const digest& d) { return {reinterpret_cast<const char*>(d.data()), d.size()}; }

/// One client exchange: first() is the client-first message, final() answers the server-first,
/// verify() checks the server-final.
class client {
 public:
  client(std::string user, std::string password, std::string nonce)
      : user_(std::move(user)), password_(std::move(password)), nonce_(std::move(nonce)) {}

  std::string first() {
    std::string name;
    for (char c : user_) {
      if (c == ',')
        name += "=2C";
      else if (c == '=')
        name += "=3D";
      else
        name += c;
    }
    bare_ = "n=" + name + ",r=" + nonce_;
    return "n,," + bare_;
  }

  /// The client-final message for `server_first`; empty when it does not parse or does not echo
  /// this client's nonce.
  std::string final(std::string_view server_first) {
    const auto r = attribute(server_first, 'r'), s = attribute(server_first, 's'), i = attribute(server_first, 'i');
    if (!r || !s || !i || r->compare(0, nonce_.size(), nonce_) != 0) return {};
    const std::string salt = from_base64(*s);
    digest salted{};
    PKCS5_PBKDF2_HMAC(password_.data(), static_cast<int>(password_.size()),
                      reinterpret_cast<const unsigned char*>(salt.data()), static_cast<int>(salt.size()), std::stoi(*i),
                      EVP_sha256(), static_cast<int>(salted.size()), salted.data());
    const digest client_key = hmac_sha256(as_view(salted), "Client Key");
    digest stored_key{};
    SHA256(client_key.data(), client_key.size(), stored_key.data());
    server_key_ = hmac_sha256(as_view(salted), "Server Key");
    const std::string without_proof = "c=" + to_base64("n,,") + ",r=" + *r;
    auth_message_ = bare_ + "," + std::string(server_first) + "," + without_proof;
    const digest signature = hmac_sha256(as_view(stored_key), auth_message_);
    digest proof{};
    for (std::size_t k = 0; k < proof.size(); ++k) proof[k] = static_cast<unsigned char>(client_key[k] ^ signature[k]);
    return without_proof + ",p=" + to_base64(proof.data(), proof.size());
  }

  /// Whether `server_final` proves that the server knows this user's ServerKey.
  bool verify(std::string_view server_final) const {
    const auto v = attribute(server_final, 'v');
    if (!v) return false;
    const digest expected = hmac_sha256(as_view(server_key_), auth_message_);
    return *v == to_base64(expected.data(), expected.size());
  }

 private:
  static std::optional<std::string> attribute(std::string_view msg, char name) {
    std::size_t at = 0;
    while (at <= msg.size()) {
      const std::size_t comma = std::min(msg.find(',', at), msg.size());
      const std::string_view a = msg.substr(at, comma - at);
      if (a.size() >= 2 && a[0] == name && a[1] == '=') return std::string(a.substr(2));
      at = comma + 1;
    }
    return std::nullopt;
  }

  std::string user_, password_, nonce_;
  std::string bare_, auth_message_;
  digest server_key_{};
};

}  // namespace test_scram

#endif  // MQTTBROKER_TESTS_SCRAM_CLIENT_HPP
