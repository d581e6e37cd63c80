#ifndef MQTTBROKER_BENCH_JSON_LINE_HPP
#define MQTTBROKER_BENCH_JSON_LINE_HPP

// One JSON object per line, for the bench tools' --json output (bench/compare reads them).

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

namespace bench {

class json_line {
 public:
  json_line& str(const char* k, std::string_view v) {
    key(k);
    s_ += '"';
    for (char c : v) {
      if (c == '"' || c == '\\') s_ += '\\';
      s_ += (static_cast<unsigned char>(c) < 0x20) ? ' ' : c;
    }
    s_ += '"';
    return *this;
  }
  json_line& num(const char* k, double v) {
    key(k);
    s_ += std::isfinite(v) ? fmt::format("{:.3f}", v) : std::string("null");
    return *this;
  }
  json_line& integer(const char* k, std::uint64_t v) {
    key(k);
    s_ += std::to_string(v);
    return *this;
  }
  json_line& integer(const char* k, unsigned v) { return integer(k, std::uint64_t{v}); }
  json_line& integer(const char* k, long v) {
    key(k);
    s_ += std::to_string(v);
    return *this;
  }
  json_line& boolean(const char* k, bool v) {
    key(k);
    s_ += v ? "true" : "false";
    return *this;
  }
  std::string done() const { return s_ + "}"; }

 private:
  void key(const char* k) {
    if (s_.size() > 1) s_ += ',';
    s_ += '"';
    s_ += k;
    s_ += "\":";
  }
  std::string s_ = "{";
};

}  // namespace bench

#endif  // MQTTBROKER_BENCH_JSON_LINE_HPP
