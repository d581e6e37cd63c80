#ifndef MQTTBROKER_AUTH_SCRAM_HPP
#define MQTTBROKER_AUTH_SCRAM_HPP

// SCRAM-SHA-256 (RFC 7677, the SCRAM of RFC 5802 with SHA-256) as a 5.0 enhanced authentication
// method, server side. Optional: it needs OpenSSL's libcrypto (CMake target mqttbroker::auth) and
// is not part of the single header; no core header includes it.
//
// Channel binding is not supported: a client that asks for it ("p=" in its GS2 header) is refused
// with "e=channel-binding-not-supported". SASLprep (RFC 4013) is the identity on printable ASCII,
// which is all this implementation takes: user names and passwords must be printable ASCII (0x20
// to 0x7E); anything else is refused ("e=invalid-username-encoding", or an error from
// derive_scram_credentials()) rather than prepared wrongly.

#include <mqttbroker/auth/crypto.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/error.hpp>
#include <mqttbroker/hooks/hooks.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

MQTTBROKER_BEGIN_NAMESPACE
namespace auth {

/// Why a SCRAM step or a credential derivation failed. The first ones are RFC 5802's
/// server-error-values, told to the client as "e=<name>".
enum class scram_errc {
  invalid_encoding = 1,           // a message that does not parse
  extensions_not_supported,       // a mandatory extension ("m=")
  invalid_proof,                  // the client's proof is wrong (or the user unknown)
  channel_bindings_dont_match,    // "c=" is not the GS2 header of the first message
  channel_binding_not_supported,  // the client asked for channel binding ("p=")
  invalid_username_encoding,      // a user name that is not printable ASCII, or a bad "=" escape
  other_error,                    // the nonce echoed wrongly, another user, an authorisation identity
  invalid_password,               // derive_scram_credentials: not printable ASCII
  crypto_failure,                 // an OpenSSL call failed
};

/// The category of scram_errc: "mqttbroker.scram".
inline const std::error_category& scram_category() noexcept {
  class category final : public std::error_category {
   public:
    const char* name() const noexcept override { return "mqttbroker.scram"; }
    std::string message(int ev) const override {
      switch (static_cast<scram_errc>(ev)) {
        case scram_errc::invalid_encoding: return "invalid-encoding";
        case scram_errc::extensions_not_supported: return "extensions-not-supported";
        case scram_errc::invalid_proof: return "invalid-proof";
        case scram_errc::channel_bindings_dont_match: return "channel-bindings-dont-match";
        case scram_errc::channel_binding_not_supported: return "channel-binding-not-supported";
        case scram_errc::invalid_username_encoding: return "invalid-username-encoding";
        case scram_errc::other_error: return "other-error";
        case scram_errc::invalid_password: return "password is not printable ASCII";
        case scram_errc::crypto_failure: return "OpenSSL call failed";
      }
      return "unknown SCRAM error";
    }
  };
  static const category instance;
  return instance;
}
inline std::error_code make_error_code(scram_errc e) noexcept { return {static_cast<int>(e), scram_category()}; }

}  // namespace auth
MQTTBROKER_END_NAMESPACE

namespace std {
template <>
struct is_error_code_enum<::mqttbroker::auth::scram_errc> : true_type {};
}  // namespace std

MQTTBROKER_BEGIN_NAMESPACE
namespace auth {

/// What a server keeps of a SCRAM-SHA-256 user (RFC 5802 section 3): never the password.
struct scram_credentials {
  std::string salt;  // raw bytes
  std::uint32_t iterations = 4096;
  std::array<unsigned char, 32> stored_key{};  // SHA-256(HMAC(SaltedPassword, "Client Key"))
  std::array<unsigned char, 32> server_key{};  // HMAC(SaltedPassword, "Server Key")
};

namespace detail {

using digest = std::array<unsigned char, 32>;

inline bool printable_ascii(std::string_view s) noexcept {
  for (char c : s)
    if (c < 0x20 || c > 0x7E) return false;
  return true;
}

inline std::string_view view(const digest& d) noexcept { return {reinterpret_cast<const char*>(d.data()), d.size()}; }

inline std::error_code hmac(std::string_view key, std::string_view data, digest& out) noexcept {
  unsigned int n = 0;
  if (key.size() > 0x7FFFFFFF ||
      HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), bytes(data), data.size(), out.data(), &n) == nullptr ||
      n != out.size())
    return scram_errc::crypto_failure;
  return {};
}

inline std::error_code sha256(std::string_view data, digest& out) noexcept {
  if (SHA256(bytes(data), data.size(), out.data()) == nullptr) return scram_errc::crypto_failure;
  return {};
}

inline std::error_code random_bytes(std::size_t n, std::string& out) {
  if (!fill_random(n, out)) return scram_errc::crypto_failure;
  return {};
}

/// A SCRAM message's attributes, "a=value" separated by ','.
class attributes {
 public:
  explicit attributes(std::string_view s) noexcept : rest_(s) {}
  /// The next attribute's name and value; false at the end or on a malformed one.
  bool next(char& name, std::string_view& value) noexcept {
    if (done_) return false;
    const std::size_t comma = rest_.find(',');
    const std::string_view a = rest_.substr(0, comma);
    if (comma == std::string_view::npos) {
      done_ = true;
    } else {
      rest_.remove_prefix(comma + 1);
    }
    if (a.size() < 2 || a[1] != '=') return bad();
    name = a[0];
    value = a.substr(2);
    return true;
  }
  bool at_end() const noexcept { return done_; }
  bool malformed() const noexcept { return malformed_; }

 private:
  bool bad() noexcept {
    malformed_ = true;
    done_ = true;
    return false;
  }
  std::string_view rest_;
  bool done_ = false;
  bool malformed_ = false;
};

/// RFC 5802 saslname: "=2C" is ',', "=3D" is '='; any other '=' is an error.
inline std::optional<std::string> decode_saslname(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '=') {
      out.push_back(s[i]);
      continue;
    }
    const std::string_view esc = s.substr(i + 1, 2);
    if (esc == "2C")
      out.push_back(',');
    else if (esc == "3D")
      out.push_back('=');
    else
      return std::nullopt;
    i += 2;
  }
  return out;
}

/// A nonce's characters: printable ASCII but ','.
inline bool valid_nonce(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (char c : s)
    if (c < 0x21 || c > 0x7E || c == ',') return false;
  return true;
}

}  // namespace detail

/// RFC 5802 section 3 from a password: SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, i),
/// StoredKey = SHA-256(HMAC(SaltedPassword, "Client Key")), ServerKey = HMAC(SaltedPassword,
/// "Server Key"). For hosts that keep passwords; `password` must be printable ASCII.
inline std::error_code derive_scram_credentials(std::string_view password, std::string_view salt,
                                                std::uint32_t iterations, scram_credentials& out) {
  if (!detail::printable_ascii(password)) return scram_errc::invalid_password;
  if (iterations == 0 || iterations > 0x7FFFFFFF || salt.size() > 0x7FFFFFFF || password.size() > 0x7FFFFFFF)
    return scram_errc::crypto_failure;
  detail::digest salted{};
  if (PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), detail::bytes(salt),
                        static_cast<int>(salt.size()), static_cast<int>(iterations), EVP_sha256(),
                        static_cast<int>(salted.size()), salted.data()) != 1)
    return scram_errc::crypto_failure;
  detail::digest client_key{};
  if (auto ec = detail::hmac(detail::view(salted), "Client Key", client_key)) return ec;
  if (auto ec = detail::sha256(detail::view(client_key), out.stored_key)) return ec;
  if (auto ec = detail::hmac(detail::view(salted), "Server Key", out.server_key)) return ec;
  OPENSSL_cleanse(salted.data(), salted.size());
  OPENSSL_cleanse(client_key.data(), client_key.size());
  out.salt.assign(salt);
  out.iterations = iterations;
  return {};
}

/// The same with a fresh random salt of 16 bytes.
inline std::error_code make_scram_credentials(std::string_view password, scram_credentials& out,
                                              std::uint32_t iterations = 4096) {
  std::string salt;
  if (auto ec = detail::random_bytes(16, salt)) return ec;
  return derive_scram_credentials(password, salt, iterations, out);
}

struct scram_options {
  /// The iteration count an unknown user is told, with a salt made up for it, so that whether a
  /// user exists shows only as the same invalid-proof a wrong password gets (RFC 5802 section 9).
  std::uint32_t unknown_user_iterations = 4096;
  /// A CONNECT's User Name, when it has one, must be the user SCRAM authenticates, and a
  /// re-authentication must authenticate the same user: the hooks that authorise by user name see
  /// the one proven. Refused with 0x87 otherwise.
  bool require_same_user = true;
  /// The server's part of the nonce; by default 24 characters of base64 from 18 random bytes.
  /// A test seam: a fixed nonce makes the server's messages those of a known exchange.
  std::function<std::string()> server_nonce;
};

/// What the authenticator keeps on a connection between steps (hooks::auth_state).
struct scram_state : hooks::auth_state {
  std::string user;  // the user authenticated last on this connection; empty before
  // The exchange under way, between the server-first and the client-final messages.
  bool awaiting_final = false;
  bool known_user = false;
  std::string candidate;  // the user this exchange is about
  std::string gs2_header, client_first_bare, server_first, nonce;
  scram_credentials credentials;
};

/// The SCRAM-SHA-256 server. `Lookup` is called as
///   std::optional<scram_credentials> lookup(std::string_view user)
/// on the broker's handlers (several threads under broker_mt): it must be quick and thread-safe;
/// a host whose credentials are remote calls step() from its own thread instead (see scram_hooks).
template <class Lookup>
class scram_sha256 {
 public:
  static constexpr std::string_view method = "SCRAM-SHA-256";

  /// Throws std::system_error when OpenSSL cannot supply the random secret that made-up salts are
  /// derived from.
  explicit scram_sha256(Lookup lookup, scram_options options = {})
      : lookup_(std::move(lookup)), options_(std::move(options)) {
    if (auto ec = detail::random_bytes(32, secret_)) throw std::system_error(ec, "mqttbroker: SCRAM secret");
  }

  /// One step of the exchange: the client-first message (CONNECT or AUTH 0x19) gets the
  /// server-first in AUTH 0x18; the client-final message gets the server-final with the success,
  /// or a refusal: 0x86 for a wrong proof (a wrong password, or a user that does not exist: the
  /// client cannot tell them apart), 0x87 for every other failure, 0x8C for another method.
  hooks::auth_step step(const hooks::auth_exchange& x) const {
    if (x.method != method) return hooks::auth_step::failure(reason_code::bad_authentication_method);
    const auto* kept = dynamic_cast<const scram_state*>(x.state.get());
    if (x.stage == hooks::auth_stage::continuation) {
      if (kept == nullptr || !kept->awaiting_final) return refuse(scram_errc::other_error);
      return client_final(x, *kept);
    }
    return client_first(x, kept);
  }

  /// The errors of step() as hooks::auth_step refusals, with "e=<name>" as their data.
  static hooks::auth_step refuse(std::error_code ec) {
    const reason_code why = ec == scram_errc::invalid_proof ? reason_code::bad_user_name_or_password
                                                            : reason_code::not_authorized;
    std::string name = ec.category() == scram_category() && ec != scram_errc::invalid_password &&
                               ec != scram_errc::crypto_failure
                           ? ec.message()
                           : std::string("other-error");
    return hooks::auth_step::failure(why, "e=" + name);
  }

 private:
  hooks::auth_step client_first(const hooks::auth_exchange& x, const scram_state* kept) const {
    if (!x.data) return refuse(scram_errc::invalid_encoding);
    const std::string_view msg = *x.data;
    // gs2-header: the channel binding flag, an optional authorisation identity, then the bare message.
    auto state = std::make_shared<scram_state>();
    const std::size_t first_comma = msg.find(',');
    if (first_comma == std::string_view::npos) return refuse(scram_errc::invalid_encoding);
    const std::string_view flag = msg.substr(0, first_comma);
    if (flag.size() >= 2 && flag.substr(0, 2) == "p=") return refuse(scram_errc::channel_binding_not_supported);
    if (flag != "n" && flag != "y") return refuse(scram_errc::invalid_encoding);
    const std::size_t second_comma = msg.find(',', first_comma + 1);
    if (second_comma == std::string_view::npos) return refuse(scram_errc::invalid_encoding);
    const std::string_view authzid = msg.substr(first_comma + 1, second_comma - first_comma - 1);
    if (!authzid.empty() && authzid.substr(0, 2) != "a=") return refuse(scram_errc::invalid_encoding);
    const std::string_view bare = msg.substr(second_comma + 1);

    detail::attributes attrs(bare);
    char name = 0;
    std::string_view value;
    if (!attrs.next(name, value)) return refuse(scram_errc::invalid_encoding);
    if (name == 'm') return refuse(scram_errc::extensions_not_supported);
    if (name != 'n') return refuse(scram_errc::invalid_encoding);
    const auto user = detail::decode_saslname(value);
    if (!user || user->empty() || !detail::printable_ascii(*user)) return refuse(scram_errc::invalid_username_encoding);
    if (!attrs.next(name, value) || name != 'r' || !detail::valid_nonce(value)) return refuse(scram_errc::invalid_encoding);
    const std::string_view client_nonce = value;
    while (attrs.next(name, value)) {
      // Optional extensions after the nonce are ignored (RFC 5802 section 5.1).
    }
    if (attrs.malformed()) return refuse(scram_errc::invalid_encoding);
    if (!authzid.empty()) {
      // An authorisation identity other than the user is not something this server grants.
      const auto az = detail::decode_saslname(authzid.substr(2));
      if (!az || *az != *user) return refuse(scram_errc::other_error);
    }
    if (options_.require_same_user) {
      if (x.client.username && *x.client.username != *user) return refuse(scram_errc::other_error);
      if (kept != nullptr && !kept->user.empty() && kept->user != *user) return refuse(scram_errc::other_error);
    }

    std::string server_nonce = options_.server_nonce ? options_.server_nonce() : std::string();
    if (!options_.server_nonce) {
      std::string raw;
      if (auto ec = detail::random_bytes(18, raw)) return refuse(ec);
      server_nonce = detail::base64(raw);
    }
    if (!detail::valid_nonce(server_nonce)) return refuse(scram_errc::other_error);

    if (auto found = lookup_(std::string_view(*user)); found && found->iterations != 0) {
      state->credentials = std::move(*found);
      state->known_user = true;
    } else {
      // A salt made up from the user name and a secret: the same each time for that name.
      detail::digest fake{};
      if (auto ec = detail::hmac(secret_, *user, fake)) return refuse(ec);
      state->credentials.salt.assign(reinterpret_cast<const char*>(fake.data()), 16);
      state->credentials.iterations = options_.unknown_user_iterations;
    }
    if (kept != nullptr) state->user = kept->user;
    state->awaiting_final = true;
    state->candidate = *user;
    state->gs2_header.assign(msg.substr(0, second_comma + 1));
    state->client_first_bare.assign(bare);
    state->nonce.assign(client_nonce);
    state->nonce += server_nonce;
    state->server_first = "r=" + state->nonce + ",s=" + detail::base64(state->credentials.salt) +
                          ",i=" + std::to_string(state->credentials.iterations);
    std::string reply = state->server_first;
    return hooks::auth_step::next(std::move(reply), std::move(state));
  }

  hooks::auth_step client_final(const hooks::auth_exchange& x, const scram_state& s) const {
    if (!x.data) return refuse(scram_errc::invalid_encoding);
    const std::string_view msg = *x.data;
    const std::size_t proof_at = msg.rfind(",p=");
    if (proof_at == std::string_view::npos) return refuse(scram_errc::invalid_encoding);
    const std::string_view without_proof = msg.substr(0, proof_at);
    detail::attributes attrs(without_proof);
    char name = 0;
    std::string_view value;
    if (!attrs.next(name, value) || name != 'c') return refuse(scram_errc::invalid_encoding);
    const auto binding = detail::unbase64(value);
    if (!binding) return refuse(scram_errc::invalid_encoding);
    // Without channel binding "c=" carries the GS2 header alone, as sent first.
    if (*binding != s.gs2_header) return refuse(scram_errc::channel_bindings_dont_match);
    if (!attrs.next(name, value) || name != 'r') return refuse(scram_errc::invalid_encoding);
    if (value != s.nonce) return refuse(scram_errc::other_error);
    while (attrs.next(name, value)) {
    }
    if (attrs.malformed()) return refuse(scram_errc::invalid_encoding);
    const auto proof = detail::unbase64(msg.substr(proof_at + 3));
    if (!proof || proof->size() != 32) return refuse(scram_errc::invalid_encoding);

    // AuthMessage = client-first-bare "," server-first "," client-final-without-proof.
    std::string auth_message = s.client_first_bare;
    auth_message += ',';
    auth_message += s.server_first;
    auth_message += ',';
    auth_message += without_proof;
    const scram_credentials& c = s.credentials;
    detail::digest signature{}, client_key{}, stored{};
    const std::string_view stored_key(reinterpret_cast<const char*>(c.stored_key.data()), c.stored_key.size());
    if (auto ec = detail::hmac(stored_key, auth_message, signature)) return refuse(ec);
    for (std::size_t i = 0; i < client_key.size(); ++i)
      client_key[i] = static_cast<unsigned char>(static_cast<unsigned char>((*proof)[i]) ^ signature[i]);
    if (auto ec = detail::sha256(detail::view(client_key), stored)) return refuse(ec);
    OPENSSL_cleanse(client_key.data(), client_key.size());
    const bool match = CRYPTO_memcmp(stored.data(), c.stored_key.data(), stored.size()) == 0;
    if (!match || !s.known_user) return refuse(scram_errc::invalid_proof);

    detail::digest server_signature{};
    const std::string_view server_key(reinterpret_cast<const char*>(c.server_key.data()), c.server_key.size());
    if (auto ec = detail::hmac(server_key, auth_message, server_signature)) return refuse(ec);
    auto done = std::make_shared<scram_state>();
    done->user = s.candidate;
    return hooks::auth_step::success("v=" + detail::base64(detail::view(server_signature)), std::move(done));
  }

  Lookup lookup_;
  scram_options options_;
  std::string secret_;  // random, for the salts of users that do not exist
};

/// A hooks policy offering SCRAM-SHA-256, ready to use or to derive from (add authorisation hooks
/// beside it). Other Authentication Methods are refused with CONNACK 0x8C [MQTT-4.12.0-1]; a
/// CONNECT without one goes to authenticate(), if the derived policy defines it.
template <class Lookup>
struct scram_hooks {
  explicit scram_hooks(Lookup lookup, scram_options options = {}) : scram(std::move(lookup), std::move(options)) {}

  void authenticate_enhanced(const hooks::auth_exchange& x, hooks::auth_step_reply reply) { reply(scram.step(x)); }

  scram_sha256<Lookup> scram;
};

}  // namespace auth
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_AUTH_SCRAM_HPP
