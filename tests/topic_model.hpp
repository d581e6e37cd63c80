#ifndef MQTTBROKER_TESTS_TOPIC_MODEL_HPP
#define MQTTBROKER_TESTS_TOPIC_MODEL_HPP

// The reference side of the randomized tests of the trie and the router: a seeded generator and
// a topic matcher written straight from the specification's text, sharing nothing with the code
// under test.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace test_support {

/// splitmix64: small, fast, and the same sequence on every platform for a printed seed.
struct rng {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }
  bool chance(unsigned percent) { return below(100) < percent; }
};

/// The seed of a randomized test: MQTTBROKER_SEED when set, else a fixed default.
inline std::uint64_t test_seed() {
  if (const char* s = std::getenv("MQTTBROKER_SEED")) return std::strtoull(s, nullptr, 0);
  return 0x5EED2024ull;
}

using strings = std::vector<std::string>;

/// The parts of `s` between the separators; empty parts kept.
inline strings split_on(std::string_view s, char separator) {
  strings out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t at = s.find(separator, start);
    out.emplace_back(s.substr(start, at == std::string_view::npos ? std::string_view::npos : at - start));
    if (at == std::string_view::npos) return out;
    start = at + 1;
  }
}
/// A topic or filter's levels; empty levels kept.
inline strings split_levels(std::string_view s) { return split_on(s, '/'); }

/// The matching rules read straight from the specification, level by level.
inline bool brute_match(const strings& filter, const strings& name) {
  // [MQTT-4.7.2-1] a filter starting with a wildcard does not match a name starting with `$`.
  if (!name.front().empty() && name.front().front() == '$' && (filter.front() == "+" || filter.front() == "#"))
    return false;
  for (std::size_t i = 0; i < filter.size(); ++i) {
    if (filter[i] == "#") return true;  // this level and below, the parent level included [MQTT-4.7.1-2]
    if (i >= name.size()) return false;
    if (filter[i] != "+" && filter[i] != name[i]) return false;
  }
  return filter.size() == name.size();
}

}  // namespace test_support

#endif  // MQTTBROKER_TESTS_TOPIC_MODEL_HPP
