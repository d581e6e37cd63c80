#ifndef MQTTBROKER_CLUSTER_SUBJECTS_HPP
#define MQTTBROKER_CLUSTER_SUBJECTS_HPP

// MQTT Topic Names and Topic Filters as NATS subjects, for a cluster of brokers that route to each
// other over NATS (issue "Past one machine"). No NATS header: the mapping is text, tested alone
// against the trie's matching.
//
// A Topic Name becomes PREFIX.ROOT.L1.L2..., one token per level:
//   ROOT is `n` for names whose first level does not begin with `$`, `d` for those that do, so
//   that a filter beginning with a wildcard (which must not match `$` names [MQTT-4.7.2-1])
//   becomes a subject under `n` and cannot match them;
//   a level is copied byte for byte, except that the bytes NATS reserves or splits on (`.`, `*`,
//   `>`, whitespace and other control bytes, DEL) and the escape byte `%` itself become `%XX`
//   (two upper-case hex digits), and an empty level becomes the token `%` alone, which no escape
//   produces (NATS has no empty token).
// A Topic Filter becomes the subjects a NATS subscription needs: `+` is the token `*`; a
// trailing `#` is `>` (one or more levels) plus the subject of its parent level, as `#` also
// matches the parent [MQTT-4.7.1-2]; a filter that is `#` alone is `PREFIX.n.>`. The two subjects
// of one filter never match the same subject (they differ in their number of tokens), so a
// message is delivered once however the subscription was split.

#include <mqttbroker/config.hpp>
#include <mqttbroker/topic/validate.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

MQTTBROKER_BEGIN_NAMESPACE
namespace cluster {

/// The subjects of one Topic Filter: one, or two for a trailing `#` below a parent level.
struct filter_subjects {
  std::string subject[2];
  std::size_t count = 0;
  const std::string* begin() const noexcept { return subject; }
  const std::string* end() const noexcept { return subject + count; }
};

/// Maps Topic Names and Filters to and from NATS subjects under a prefix of the host's choice
/// (one or more NATS tokens, no wildcard: "mqtt", "site1.mqtt"), so that several clusters or
/// other programs can share a NATS system.
class subject_map {
 public:
  explicit subject_map(std::string prefix = "mqtt") : prefix_(std::move(prefix)) {}

  const std::string& prefix() const noexcept { return prefix_; }

  /// Appends the subject of the (valid) Topic Name `topic` to `out`.
  void append_subject(std::string& out, std::string_view topic) const {
    out += prefix_;
    out += topic::is_dollar_topic(topic) ? ".d" : ".n";
    topic::detail::level_cursor levels(topic);
    while (!levels.done()) {
      out += '.';
      append_token(out, levels.next());
    }
  }
  std::string subject(std::string_view topic) const {
    std::string s;
    s.reserve(prefix_.size() + topic.size() + 8);
    append_subject(s, topic);
    return s;
  }

  /// The subjects a NATS subscription needs for the (valid, not shared) Topic Filter `filter`.
  filter_subjects subjects(std::string_view filter) const {
    filter_subjects out;
    std::string& s = out.subject[0];
    s = prefix_;
    s += topic::is_dollar_topic(filter) ? ".d" : ".n";
    topic::detail::level_cursor levels(filter);
    bool parent = false;  // a level before the `#`, whose own subject matches too
    while (!levels.done()) {
      const std::string_view level = levels.next();
      if (level == "#") {
        if (parent) {
          out.subject[1] = s;
          out.count = 2;
        } else {
          out.count = 1;
        }
        out.subject[out.count - 1] += ".>";
        return out;
      }
      s += '.';
      if (level == "+")
        s += '*';
      else
        append_token(s, level);
      parent = true;
    }
    out.count = 1;
    return out;
  }

  /// The Topic Name of a subject under this prefix; nullopt for a subject that no Topic Name
  /// maps to (another prefix, a wildcard, a malformed escape, a `$` level under `n`).
  std::optional<std::string> topic(std::string_view subject) const {
    // PREFIX . ROOT . at least one token
    const std::size_t p = prefix_.size();
    if (subject.size() < p + 4 || subject.substr(0, p) != prefix_ || subject[p] != '.' || subject[p + 2] != '.')
      return std::nullopt;
    const char root = subject[p + 1];
    if (root != 'n' && root != 'd') return std::nullopt;
    std::string name;
    std::string_view rest = subject.substr(p + 3);
    for (bool first = true;; first = false) {
      const std::size_t dot = rest.find('.');
      const std::string_view token = rest.substr(0, dot);
      if (!first) name += '/';
      if (!append_level(name, token)) return std::nullopt;
      if (dot == std::string_view::npos) break;
      rest.remove_prefix(dot + 1);
    }
    if ((root == 'd') != topic::is_dollar_topic(name)) return std::nullopt;
    return name;
  }

  /// A NATS queue group for the shared subscription group `share_name` ($share/NAME/...): one
  /// member of the whole cluster gets each message. The prefix keeps clusters apart.
  std::string queue_group(std::string_view share_name) const {
    std::string q = prefix_;
    q += '.';
    append_token(q, share_name);
    return q;
  }

 private:
  static constexpr bool escaped(unsigned char c) noexcept {
    return c <= 0x20 || c == 0x7F || c == '.' || c == '*' || c == '>' || c == '%';
  }
  static void append_token(std::string& out, std::string_view level) {
    if (level.empty()) {
      out += '%';
      return;
    }
    static constexpr char hex[] = "0123456789ABCDEF";
    // Runs that need no escape are appended whole: on every published message's way out.
    std::size_t run = 0;
    for (std::size_t i = 0; i < level.size(); ++i) {
      const auto c = static_cast<unsigned char>(level[i]);
      if (!escaped(c)) continue;
      out.append(level.data() + run, i - run);
      const char esc[3] = {'%', hex[c >> 4], hex[c & 0xF]};
      out.append(esc, 3);
      run = i + 1;
    }
    out.append(level.data() + run, level.size() - run);
  }
  static int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  /// Appends the level a token stands for; false when no level maps to it.
  static bool append_level(std::string& out, std::string_view token) {
    if (token == "%") return true;  // the empty level
    if (token.empty()) return false;
    for (std::size_t i = 0; i < token.size(); ++i) {
      const auto c = static_cast<unsigned char>(token[i]);
      if (c != '%') {
        if (escaped(c)) return false;  // a wildcard or a byte NATS would not carry
        out += token[i];
        continue;
      }
      if (i + 2 >= token.size()) return false;
      const int hi = hex_value(token[i + 1]), lo = hex_value(token[i + 2]);
      if (hi < 0 || lo < 0) return false;
      const auto byte = static_cast<unsigned char>(hi * 16 + lo);
      if (!escaped(byte)) return false;  // one spelling per level: only what must be escaped is
      out += static_cast<char>(byte);
      i += 2;
    }
    return true;
  }

  std::string prefix_;
};

}  // namespace cluster
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CLUSTER_SUBJECTS_HPP
