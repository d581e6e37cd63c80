#ifndef MQTTBROKER_HOOKS_ACL_FILE_HPP
#define MQTTBROKER_HOOKS_ACL_FILE_HPP

// Access control lists in Mosquitto's acl_file format, and a hooks policy that enforces one on
// publish, on subscribe and on every delivery. The format, one rule per line:
//   user NAME                            the rules after it, up to the next user line, are NAME's
//   topic [read|write|readwrite|deny] F  a rule for the current user (before any user line: for
//                                        clients without a user name); readwrite when left out
//   pattern [read|write|readwrite|deny] F  a rule for every client, where a level that is
//                                        exactly %c or %u stands for its client identifier or
//                                        user name (a %u rule never applies to a client without one)
// Blank lines and lines starting with '#' are skipped; any other line is an error.

#include <mqttbroker/config.hpp>
#include <mqttbroker/hooks/hooks.hpp>
#include <mqttbroker/message.hpp>
#include <mqttbroker/topic/match.hpp>
#include <mqttbroker/topic/shared.hpp>
#include <mqttbroker/topic/validate.hpp>

#include <atomic>
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
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace hooks {

/// Why an ACL file was refused.
enum class acl_errc {
  unreadable = 1,  // the file cannot be read
  unknown_line,    // a line that is not user, topic or pattern
  bad_access,      // an access that is not read, write, readwrite or deny
  bad_filter,      // a topic that is not a valid topic filter
  missing_user,    // a user line without a name
};

/// The category of acl_errc: "mqttbroker.acl".
inline const std::error_category& acl_category() noexcept {
  class category final : public std::error_category {
   public:
    const char* name() const noexcept override { return "mqttbroker.acl"; }
    std::string message(int ev) const override {
      switch (static_cast<acl_errc>(ev)) {
        case acl_errc::unreadable: return "cannot be read";
        case acl_errc::unknown_line: return "not a user, topic or pattern line";
        case acl_errc::bad_access: return "an access other than read, write, readwrite or deny";
        case acl_errc::bad_filter: return "not a valid topic filter";
        case acl_errc::missing_user: return "a user line without a name";
      }
      return "unknown ACL file error";
    }
  };
  static const category instance;
  return instance;
}
inline std::error_code make_error_code(acl_errc e) noexcept { return {static_cast<int>(e), acl_category()}; }

}  // namespace hooks
MQTTBROKER_END_NAMESPACE

namespace std {
template <>
struct is_error_code_enum<::mqttbroker::hooks::acl_errc> : true_type {};
}  // namespace std

MQTTBROKER_BEGIN_NAMESPACE
namespace hooks {

/// The rules of an ACL file. A client may do what one of its rules (its user's, or the anonymous
/// ones without a user name) or a pattern allows, unless a deny rule of either kind forbids it:
/// deny wins wherever it is written (Mosquitto checks a user's denials before the patterns' allows,
/// but lets a user's allow beat a pattern's deny; here no allow beats a deny). Without any rule
/// that allows it, nothing is allowed.
class acl_file {
 public:
  enum class access : std::uint8_t { deny = 0, read = 1, write = 2, readwrite = 3 };

  acl_file() = default;

  /// Parses a file's text. On an error `ec` is set, `line` (when given) is the 1-based line, and
  /// the result is empty.
  static acl_file parse(std::string_view text, std::error_code& ec, std::size_t* line = nullptr) {
    ec.clear();
    acl_file f;
    std::vector<rule>* current = &f.anonymous_;
    std::size_t number = 0;
    while (!text.empty()) {
      ++number;
      const std::size_t end = text.find('\n');
      std::string_view l = trim(text.substr(0, end));
      text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
      if (l.empty() || l.front() == '#') continue;
      const std::string_view word = l.substr(0, l.find_first_of(" \t"));
      const std::string_view rest = trim(l.substr(word.size()));
      std::error_code line_ec;
      if (word == "user") {
        if (rest.empty())
          line_ec = acl_errc::missing_user;
        else
          current = &f.users_[std::string(rest)];
      } else if (word == "topic" || word == "pattern") {
        // "topic F" alone is readwrite; otherwise the first word is the access and F the rest.
        const std::size_t gap = rest.find_first_of(" \t");
        std::string_view filter = rest;
        access a = access::readwrite;
        if (gap != std::string_view::npos) {
          const std::string_view name = rest.substr(0, gap);
          filter = trim(rest.substr(gap));
          if (name == "read") a = access::read;
          else if (name == "write") a = access::write;
          else if (name == "readwrite") a = access::readwrite;
          else if (name == "deny") a = access::deny;
          else line_ec = acl_errc::bad_access;
        }
        if (!line_ec && topic::validate_topic_filter(filter)) line_ec = acl_errc::bad_filter;
        if (!line_ec) {
          rule r{std::string(filter), a, false, false};
          if (word == "pattern") {
            r.uses_client_id = has_level(filter, "%c");
            r.uses_username = has_level(filter, "%u");
            f.patterns_.push_back(std::move(r));
          } else {
            current->push_back(std::move(r));
          }
        }
      } else {
        line_ec = acl_errc::unknown_line;
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
  static acl_file read(const std::string& path, std::error_code& ec, std::string* what = nullptr) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      ec = acl_errc::unreadable;
      if (what != nullptr) *what = "mqttbroker: ACL file '" + path + "' cannot be read";
      return {};
    }
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::size_t line = 0;
    acl_file f = parse(text, ec, &line);
    if (ec && what != nullptr)
      *what = "mqttbroker: ACL file '" + path + "', line " + std::to_string(line) + ": " + ec.message();
    return f;
  }
  /// The same, throwing std::system_error (configuration time).
  static acl_file read(const std::string& path) {
    std::error_code ec;
    std::string what;
    acl_file f = read(path, ec, &what);
    if (ec) throw std::system_error(ec, what);
    return f;
  }

  /// Whether `c` may publish to the Topic Name `name`.
  bool may_publish(const client_info& c, std::string_view name) const { return allowed(c, name, op::publish); }
  /// Whether a message published to `name` may go to `c` (its subscription matched).
  bool may_read(const client_info& c, std::string_view name) const { return allowed(c, name, op::read); }
  /// Whether `c` may subscribe to `filter` (`$share/G/F` is judged by F): refused when a deny rule
  /// covers all of it, or when no rule lets it read any name it matches. A filter that is allowed
  /// in part (`#` beside `topic read sensors/#`) is granted, and may_read() keeps back what it
  /// may not read, as Mosquitto does.
  bool may_subscribe(const client_info& c, std::string_view filter) const {
    if (topic::is_shared_filter(filter)) {
      std::error_code ec;
      const topic::parsed_filter p = topic::parse_filter(filter, ec);
      if (ec) return false;
      filter = p.filter;
    }
    return allowed(c, filter, op::subscribe);
  }

  /// Users named on user lines.
  std::size_t users() const noexcept { return users_.size(); }
  /// Rules of every kind.
  std::size_t rules() const noexcept {
    std::size_t n = anonymous_.size() + patterns_.size();
    for (const auto& u : users_) n += u.second.size();
    return n;
  }

 private:
  struct rule {
    std::string filter;
    access rights;
    bool uses_client_id;  // patterns: a level that is exactly %c
    bool uses_username;   // patterns: a level that is exactly %u
  };
  enum class op : std::uint8_t { publish, read, subscribe };

  static std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    return s;
  }
  static bool has_level(std::string_view filter, std::string_view level) {
    topic::detail::level_cursor c(filter);
    while (!c.done())
      if (c.next() == level) return true;
    return false;
  }

  /// Whether rule filter `f` bears on `x` (a name, or a filter for op::subscribe): a deny rule
  /// when it takes all of a subscription, an allow when it gives some of it.
  static bool hits(std::string_view f, std::string_view x, op o, bool deny) noexcept {
    if (o != op::subscribe) return topic::matches(f, x);
    return deny ? topic::covers(f, x) : topic::intersects(f, x);
  }

  /// A pattern's filter for `c`: its %c and %u levels replaced, in `out`.
  static std::string_view substitute(const rule& r, const client_info& c, std::string& out) {
    out.clear();
    topic::detail::level_cursor levels(r.filter);
    bool first = true;
    while (!levels.done()) {
      const std::string_view l = levels.next();
      if (!first) out.push_back('/');
      first = false;
      if (l == "%c" && r.uses_client_id) out.append(c.client_id);
      else if (l == "%u" && r.uses_username) out.append(*c.username);
      else out.append(l);
    }
    return out;
  }

  bool allowed(const client_info& c, std::string_view x, op o) const {
    const std::vector<rule>* own = &anonymous_;
    if (c.username) {
      const auto it = users_.find(std::string(*c.username));
      own = it != users_.end() ? &it->second : nullptr;
    }
    const access need = o == op::publish ? access::write : access::read;
    const auto gives = [need](const rule& r) {
      return (static_cast<std::uint8_t>(r.rights) & static_cast<std::uint8_t>(need)) != 0;
    };
    // A client identifier or user name with a wildcard would turn a pattern into a wider filter
    // than its author meant: such a client gets nothing from patterns, and is denied outright
    // while there are any (as Mosquitto does).
    if (!patterns_.empty() && (has_wildcard(c.client_id) || (c.username && has_wildcard(*c.username)))) return false;
    // One buffer per thread: deliveries check patterns without allocating once it has grown.
    static thread_local std::string scratch;
    for (int pass = 0; pass < 2; ++pass) {  // denials first, everywhere, then allows
      const bool deny = pass == 0;
      if (own != nullptr) {
        for (const rule& r : *own)
          if ((r.rights == access::deny) == deny && (deny || gives(r)) && hits(r.filter, x, o, deny)) return !deny;
      }
      for (const rule& r : patterns_) {
        if ((r.rights == access::deny) != deny || (!deny && !gives(r))) continue;
        if (r.uses_username && !c.username) continue;
        if (hits(substitute(r, c, scratch), x, o, deny)) return !deny;
      }
    }
    return false;
  }
  static bool has_wildcard(std::string_view s) noexcept { return s.find_first_of("+#") != std::string_view::npos; }

  std::vector<rule> anonymous_;  // before the first user line: clients without a user name
  std::unordered_map<std::string, std::vector<rule>> users_;
  std::vector<rule> patterns_;
};

/// A hooks policy (hooks/hooks.hpp) that enforces an ACL file: authorize_publish (a refused
/// PUBLISH gets PUBACK/PUBREC 0x87 in 5.0 and is dropped in 3.1.1), authorize_subscribe (SUBACK
/// 0x87 in 5.0, 0x80 in 3.1.1) and authorize_read (a message the subscriber may not read is not
/// given to it). Without a file every client may do everything. Derive from it, beside
/// auth::password_hooks or hooks of your own, to combine them. replace() swaps the file while the
/// broker runs (a reload on SIGHUP): publishes and deliveries after it follow the new rules at
/// once; subscriptions made before it stay until broker::recheck_subscriptions() takes out those
/// the new rules refuse.
class acl_hooks {
 public:
  acl_hooks() = default;
  explicit acl_hooks(acl_file f) { replace(std::move(f)); }

  /// From any thread, on any copy (copies share the file).
  void replace(acl_file f) {
    auto next = std::make_shared<const acl_file>(std::move(f));
    std::lock_guard<std::mutex> lk(s_->mutex);
    s_->file = std::move(next);
    s_->has_file.store(true, std::memory_order_relaxed);
  }
  /// Whether there is a file: without one deliveries are not checked at all (nothing is built
  /// for them), which is what a broker whose ACL is optional wants to pay when it has none.
  bool reads_checked() const noexcept { return s_->has_file.load(std::memory_order_relaxed); }
  /// The file in force; null when none was given.
  std::shared_ptr<const acl_file> file() const {
    std::lock_guard<std::mutex> lk(s_->mutex);
    return s_->file;
  }

  bool authorize_publish(const client_info& c, const message& m) const {
    const auto f = file();
    return !f || f->may_publish(c, m.topic());
  }
  bool authorize_subscribe(const client_info& c, std::string_view filter, codec::qos) const {
    const auto f = file();
    return !f || f->may_subscribe(c, filter);
  }
  bool authorize_read(const client_info& c, const message& m) const {
    const auto f = file();
    return !f || f->may_read(c, m.topic());
  }

 private:
  struct state {
    std::mutex mutex;
    std::shared_ptr<const acl_file> file;
    std::atomic<bool> has_file{false};
  };
  std::shared_ptr<state> s_ = std::make_shared<state>();
};

}  // namespace hooks
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_HOOKS_ACL_FILE_HPP
