#ifndef MQTTBROKER_AUTH_PASSWORD_FILE_HPP
#define MQTTBROKER_AUTH_PASSWORD_FILE_HPP

// Password files in Mosquitto 2.0's format, so that files made by `mosquitto_passwd` work
// unchanged, and a hooks policy that authenticates CONNECTs against one. Optional: it needs
// OpenSSL's libcrypto (CMake target mqttbroker::auth) and is not part of the single header.
//
// One user per line, "user:hash", the hash either
//   $7$ITERATIONS$SALT$HASH   PBKDF2-HMAC-SHA512 of the password (what mosquitto_passwd writes)
//   $6$SALT$HASH              SHA-512 of the password followed by the salt (Mosquitto 1.x)
// with SALT and HASH in base64. Blank lines and lines starting with '#' are skipped.

#include <mqttbroker/auth/crypto.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/hooks/hooks.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <unordered_map>
#include <utility>

MQTTBROKER_BEGIN_NAMESPACE
namespace auth {

/// Why a password file was refused or an entry could not be made.
enum class password_errc {
  unreadable = 1,  // the file cannot be read
  malformed,       // a line that is not "user:hash" with a hash of a known form
  duplicate_user,  // a user on two lines
  bad_user,        // an empty user name, or one with ':' or a control character
  crypto_failure,  // an OpenSSL call failed
};

/// The category of password_errc: "mqttbroker.password".
inline const std::error_category& password_category() noexcept {
  class category final : public std::error_category {
   public:
    const char* name() const noexcept override { return "mqttbroker.password"; }
    std::string message(int ev) const override {
      switch (static_cast<password_errc>(ev)) {
        case password_errc::unreadable: return "cannot be read";
        case password_errc::malformed: return "not a line of a password file";
        case password_errc::duplicate_user: return "a user named twice";
        case password_errc::bad_user: return "not a valid user name";
        case password_errc::crypto_failure: return "OpenSSL call failed";
      }
      return "unknown password file error";
    }
  };
  static const category instance;
  return instance;
}
inline std::error_code make_error_code(password_errc e) noexcept { return {static_cast<int>(e), password_category()}; }

}  // namespace auth
MQTTBROKER_END_NAMESPACE

namespace std {
template <>
struct is_error_code_enum<::mqttbroker::auth::password_errc> : true_type {};
}  // namespace std

MQTTBROKER_BEGIN_NAMESPACE
namespace auth {

/// The users and password hashes of a password file; never the passwords.
class password_file {
 public:
  /// The iterations mosquitto_passwd 2.0 uses, and so entry()'s default.
  static constexpr unsigned default_iterations = 101;
  /// The most iterations an entry may ask for: a line cannot make each check arbitrarily slow.
  static constexpr unsigned max_iterations = 10'000'000;

  password_file() = default;

  /// Parses a file's text. On an error `ec` is set, `line` (when given) is the 1-based line, and
  /// the result is empty.
  static password_file parse(std::string_view text, std::error_code& ec, std::size_t* line = nullptr) {
    ec.clear();
    password_file f;
    std::size_t number = 0;
    while (!text.empty()) {
      ++number;
      const std::size_t end = text.find('\n');
      std::string_view l = text.substr(0, end);
      text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
      while (!l.empty() && (l.back() == '\r' || l.back() == ' ' || l.back() == '\t')) l.remove_suffix(1);
      if (l.empty() || l.front() == '#') continue;
      const std::size_t colon = l.find(':');
      std::error_code line_ec;
      if (colon == std::string_view::npos) {
        line_ec = password_errc::malformed;
      } else if (!valid_user(l.substr(0, colon))) {
        line_ec = password_errc::bad_user;
      } else if (auto e = parse_hash(l.substr(colon + 1))) {
        if (!f.users_.emplace(std::string(l.substr(0, colon)), std::move(*e)).second) line_ec = password_errc::duplicate_user;
      } else {
        line_ec = password_errc::malformed;
      }
      if (line_ec) {
        ec = line_ec;
        if (line != nullptr) *line = number;
        return {};
      }
    }
    return f;
  }

  /// Reads and parses the file at `path`; on an error `ec` is set and `what` (when given) names
  /// the file, the line and the reason.
  static password_file read(const std::string& path, std::error_code& ec, std::string* what = nullptr) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      ec = password_errc::unreadable;
      if (what != nullptr) *what = "mqttbroker: password file '" + path + "' cannot be read";
      return {};
    }
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::size_t line = 0;
    password_file f = parse(text, ec, &line);
    if (ec && what != nullptr)
      *what = "mqttbroker: password file '" + path + "', line " + std::to_string(line) + ": " + ec.message();
    return f;
  }
  /// The same, throwing std::system_error (configuration time).
  static password_file read(const std::string& path) {
    std::error_code ec;
    std::string what;
    password_file f = read(path, ec, &what);
    if (ec) throw std::system_error(ec, what);
    return f;
  }

  /// Whether `password` is `user`'s. The hashes are compared in constant time, and an unknown
  /// user costs the same derivation as a known one, so timing tells neither.
  bool check(std::string_view user, std::string_view password) const {
    const auto it = users_.find(std::string(user));
    const entry& e = it != users_.end() ? it->second : decoy();
    std::string derived;
    if (!derive(e, password, derived) || derived.size() != e.hash.size()) return false;
    const bool same = CRYPTO_memcmp(derived.data(), e.hash.data(), derived.size()) == 0;
    return same && it != users_.end();
  }
  bool contains(std::string_view user) const { return users_.count(std::string(user)) != 0; }
  std::size_t size() const noexcept { return users_.size(); }

  /// A line for `user` in the format mosquitto_passwd writes ("user:$7$101$salt$hash"), with a
  /// fresh random salt of 12 bytes.
  static std::string make_line(std::string_view user, std::string_view password, std::error_code& ec,
                               unsigned iterations = default_iterations) {
    ec.clear();
    if (!valid_user(user)) {
      ec = password_errc::bad_user;
      return {};
    }
    entry e;
    e.iterations = iterations;
    std::string derived;
    if (iterations == 0 || iterations > max_iterations || !detail::fill_random(12, e.salt) ||
        !derive(e, password, derived)) {
      ec = password_errc::crypto_failure;
      return {};
    }
    return std::string(user) + ":$7$" + std::to_string(iterations) + "$" + detail::base64(e.salt) + "$" +
           detail::base64(derived);
  }

 private:
  struct entry {
    bool pbkdf2 = true;  // $7$; false: $6$
    unsigned iterations = 0;
    std::string salt;
    std::string hash;
  };

  static bool valid_user(std::string_view user) noexcept {
    if (user.empty()) return false;
    for (char c : user)
      if (c == ':' || static_cast<unsigned char>(c) < 0x20 || c == 0x7F) return false;
    return true;
  }

  /// "$7$iterations$salt$hash" or "$6$salt$hash".
  static std::optional<entry> parse_hash(std::string_view h) {
    entry e;
    std::string_view fields[4];
    std::size_t n = 0;
    if (h.size() < 3 || h[0] != '$' || h[2] != '$') return std::nullopt;
    e.pbkdf2 = h[1] == '7';
    if (!e.pbkdf2 && h[1] != '6') return std::nullopt;
    h.remove_prefix(3);
    while (n < 4) {
      const std::size_t d = h.find('$');
      fields[n++] = h.substr(0, d);
      if (d == std::string_view::npos) break;
      h.remove_prefix(d + 1);
    }
    const std::size_t want = e.pbkdf2 ? 3 : 2;
    if (n != want) return std::nullopt;
    std::size_t at = 0;
    if (e.pbkdf2) {
      const std::string_view it = fields[at++];
      if (it.empty() || it.size() > 9) return std::nullopt;
      for (char c : it) {
        if (c < '0' || c > '9') return std::nullopt;
        e.iterations = e.iterations * 10 + static_cast<unsigned>(c - '0');
      }
      if (e.iterations == 0 || e.iterations > max_iterations) return std::nullopt;
    }
    auto salt = detail::unbase64(fields[at++]);
    auto hash = detail::unbase64(fields[at]);
    if (!salt || !hash || salt->empty() || hash->size() != SHA512_DIGEST_LENGTH) return std::nullopt;
    e.salt = std::move(*salt);
    e.hash = std::move(*hash);
    return e;
  }

  static bool derive(const entry& e, std::string_view password, std::string& out) {
    out.assign(SHA512_DIGEST_LENGTH, '\0');
    auto* o = reinterpret_cast<unsigned char*>(out.data());
    if (password.size() > 0x7FFFFFFF || e.salt.size() > 0x7FFFFFFF) return false;
    if (e.pbkdf2)
      return PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), detail::bytes(e.salt),
                               static_cast<int>(e.salt.size()), static_cast<int>(e.iterations), EVP_sha512(),
                               SHA512_DIGEST_LENGTH, o) == 1;
    std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> c(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    unsigned int n = 0;
    return c && EVP_DigestInit_ex(c.get(), EVP_sha512(), nullptr) == 1 &&
           EVP_DigestUpdate(c.get(), password.data(), password.size()) == 1 &&
           EVP_DigestUpdate(c.get(), e.salt.data(), e.salt.size()) == 1 && EVP_DigestFinal_ex(c.get(), o, &n) == 1 &&
           n == SHA512_DIGEST_LENGTH;
  }

  /// What an unknown user is checked against: mosquitto_passwd's cost, never a match.
  static const entry& decoy() {
    static const entry e = [] {
      entry d;
      d.iterations = default_iterations;
      d.salt.assign(12, '\x5A');
      d.hash.assign(SHA512_DIGEST_LENGTH, '\0');
      return d;
    }();
    return e;
  }

  std::unordered_map<std::string, entry> users_;
};

/// A hooks policy (hooks/hooks.hpp) that authenticates CONNECTs against a password file, as
/// Mosquitto 2.0's password_file and allow_anonymous do: a user whose password checks is
/// accepted; a CONNECT without a user name only with `allow_anonymous`. Every refusal (a wrong or
/// missing password, an unknown user, anonymous) is "not authorized", 3.1.1 return code 5 and 5.0
/// 0x87, as Mosquitto answers, so a client cannot tell an unknown user from a wrong password
/// (3.1.1's code 4 and 5.0's 0x86 say the data is malformed, which it is not). Derive from it to
/// combine it with hooks of your own. replace() swaps the file while the broker runs (a reload on
/// SIGHUP); connections already accepted stay.
class password_hooks {
 public:
  password_hooks() = default;
  explicit password_hooks(password_file f, bool allow_anonymous = false) { replace(std::move(f), allow_anonymous); }

  /// From any thread, on any copy (copies share the file, so a host keeps one beside the
  /// broker's): the CONNECTs that come after it are checked against `f`.
  void replace(password_file f, bool allow_anonymous) {
    auto next = std::make_shared<const password_file>(std::move(f));
    std::lock_guard<std::mutex> lk(s_->mutex);
    s_->file = std::move(next);
    s_->allow_anonymous = allow_anonymous;
  }

  hooks::auth_result authenticate(const hooks::connect_info& c) const {
    std::shared_ptr<const password_file> f;
    bool anonymous_ok;
    {
      std::lock_guard<std::mutex> lk(s_->mutex);
      f = s_->file;
      anonymous_ok = s_->allow_anonymous;
    }
    if (!c.username) return anonymous_ok ? hooks::auth_result::accept : hooks::auth_result::not_authorized;
    const bool ok = f && c.password && f->check(*c.username, *c.password);
    return ok ? hooks::auth_result::accept : hooks::auth_result::not_authorized;
  }

 private:
  struct state {
    std::mutex mutex;
    std::shared_ptr<const password_file> file;  // none: every user is refused
    bool allow_anonymous = false;
  };
  std::shared_ptr<state> s_ = std::make_shared<state>();
};

}  // namespace auth
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_AUTH_PASSWORD_FILE_HPP
