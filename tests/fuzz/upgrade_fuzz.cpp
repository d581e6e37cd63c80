// libFuzzer target for the WebSocket upgrade request parser (transport/websocket/handshake.hpp).
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
//     -Iinclude tests/fuzz/upgrade_fuzz.cpp -lcrypto -o /tmp/fuzz_upgrade && /tmp/fuzz_upgrade -max_total_time=60
//
// Input: one control byte, then the bytes a client sends. The control byte picks the chunk sizes
// and a small or default request limit. The bytes arrive in chunks as the stream reads them: the
// end of the request is searched incrementally (it must agree with one search of everything), the
// early refusal of what cannot be a GET applies, and the request is judged. Invariants, trapped on:
// every answer is a whole HTTP/1.1 response; 101 exactly when there is no error, and then with the
// Sec-WebSocket-Accept of the request's one key; a request over the limit is 431.
#include <mqttbroker/transport/websocket/handshake.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "splitter.hpp"

namespace {

namespace ws = mqttbroker::transport::websocket;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "upgrade_fuzz: %s\n", what);
  __builtin_trap();
}

void check_response(const ws::upgrade_answer& a, std::string_view request) {
  const std::string& r = a.response;
  if (r.compare(0, 9, "HTTP/1.1 ") != 0) fail("response without a status line");
  if (r.size() < 4 || r.compare(r.size() - 4, 4, "\r\n\r\n") != 0) fail("response without its blank line");
  const bool switching = r.compare(9, 3, "101") == 0;
  if (switching == static_cast<bool>(a.ec)) fail("101 and the error disagree");
  if (!switching) return;
  // The key the parser accepted is the request's: find it again, naively.
  std::string lower(request);
  for (auto& c : lower) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  const std::size_t at = lower.find("\r\nsec-websocket-key:");
  if (at == std::string::npos) fail("101 without a key in the request");
  std::string_view key = request.substr(at + 20);
  key = key.substr(0, key.find("\r\n"));
  while (!key.empty() && (key.front() == ' ' || key.front() == '\t')) key.remove_prefix(1);
  while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.remove_suffix(1);
  if (r.find("\r\nSec-WebSocket-Accept: " + ws::accept_key(key) + "\r\n") == std::string::npos)
    fail("101 with another key's accept value");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t control = data[0];
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  ws::upgrade_options o;
  if ((control & 0x80u) != 0) o.max_request_size = 256 + (control & 0x7Fu);
  if ((control & 0x40u) != 0) o.allowed_origins = {"https://a.example"};
  if ((control & 0x20u) != 0) o.path.clear();

  // As the stream reads: chunks appended, the end searched from where the last search stopped.
  fuzz::splitter split(control, 64);
  std::string buffered;
  std::size_t searched = 0, end = 0, pos = 0;
  bool refused_early = false;
  while (pos < input.size() && end == 0 && buffered.size() < o.max_request_size) {
    const std::size_t room = o.max_request_size - buffered.size();
    std::size_t n = split.next(input.size() - pos);
    if (n > room) n = room;
    buffered.append(input.substr(pos, n));
    pos += n;
    end = ws::find_request_end(buffered, searched);
    searched = buffered.size();
    if (end == 0 && !ws::could_be_get(buffered)) {
      refused_early = true;
      break;
    }
  }
  if (end != ws::find_request_end(buffered)) fail("the incremental search disagrees with one search");
  if (end != 0) {
    const std::string_view request = std::string_view(buffered).substr(0, end);
    const auto a = ws::answer_upgrade(request, o);
    check_response(a, request);
    if (request.size() > o.max_request_size && a.ec != mqttbroker::websocket_errc::upgrade_too_large)
      fail("a request over the limit not refused with 431");
  } else if (refused_early) {
    check_response(ws::refusal(mqttbroker::websocket_errc::upgrade_malformed), {});
  }
  return 0;
}
