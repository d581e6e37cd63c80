// libFuzzer target for the WebSocket frame parser (transport/websocket/frame.hpp).
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
//     -Iinclude tests/fuzz/websocket_fuzz.cpp -o /tmp/fuzz_ws && /tmp/fuzz_ws -max_total_time=60
//
// Input: one control byte, then a byte stream. The control byte picks the chunk sizes (whole,
// byte by byte, or pseudo-random) and a small or large message limit. The stream goes through both
// feed overloads (unmasking in place, appending); they must agree. Invariants, trapped on: never
// more payload out than bytes in, never more consumed than given, a stop only for an error or a
// close, errors sticky, no message over the limit, control payloads of at most 125 bytes.
#include <mqttbroker/transport/websocket/frame.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <system_error>
#include <vector>

#include "splitter.hpp"

namespace {

namespace ws = mqttbroker::transport::websocket;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "websocket_fuzz: %s\n", what);
  __builtin_trap();
}


struct outcome {
  std::string data;
  std::string controls;  // op byte and payload of each control frame, concatenated
  std::error_code ec;
  std::size_t consumed = 0;
  bool closed = false;
};

template <bool InPlace>
outcome run(const std::uint8_t* input, std::size_t size, std::uint8_t control, std::uint64_t limit) {
  std::vector<std::uint8_t> buf(input, input + size);  // in place: the parser writes into it
  ws::frame_parser p(limit);
  outcome o;
  fuzz::splitter split(control, 64);
  auto on_control = [&](const ws::control_frame& f) {
    if (f.payload.size() > 125) fail("control payload over 125 bytes");
    if (f.op != ws::opcode::ping && f.op != ws::opcode::pong && f.op != ws::opcode::close) fail("not a control op");
    o.controls += static_cast<char>(f.op);
    o.controls.append(f.payload.data(), f.payload.size());
  };
  std::size_t pos = 0;
  while (pos < size) {
    const std::size_t n = split.next(size - pos);
    ws::frame_parser::result r;
    if constexpr (InPlace) {
      r = p.feed(buf.data() + pos, n, [&](std::uint8_t* d, std::size_t k) {
        if (d < buf.data() + pos || d + k > buf.data() + pos + n) fail("in-place payload outside the chunk");
        o.data.append(reinterpret_cast<const char*>(d), k);
      }, on_control);
    } else {
      r = p.feed_into(buf.data() + pos, n, o.data, on_control);
    }
    if (r.consumed > n) fail("consumed more than given");
    pos += r.consumed;
    if (o.data.size() > pos) fail("more payload than input");
    if (r.ec) {
      if (r.ec != p.error()) fail("error() differs from the result");
      const auto again = p.feed_into(buf.data(), size, o.data, on_control);
      if (again.ec != r.ec || again.consumed != 0) fail("error not sticky");
      o.ec = r.ec;
      break;
    }
    if (p.closed()) {
      o.closed = true;
      break;
    }
    if (r.consumed != n) fail("stopped without an error or a close");
  }
  o.consumed = pos;
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t control = data[0];
  ++data;
  --size;
  // A limit small enough to be hit by short inputs, or the size a broker would use.
  const std::uint64_t limit = (control & 0x80u) != 0 ? (control & 0x7Fu) : (std::uint64_t{1} << 28);
  const outcome a = run<true>(data, size, control, limit);
  const outcome b = run<false>(data, size, control, limit);
  if (a.data != b.data || a.controls != b.controls || a.ec != b.ec || a.consumed != b.consumed || a.closed != b.closed)
    fail("the two feed overloads disagree");
  // Chunking must not matter: the whole input at once gives the same result.
  const outcome whole = run<false>(data, size, 0, limit);
  if (whole.data != a.data || whole.controls != a.controls || whole.ec != a.ec || whole.consumed != a.consumed)
    fail("chunking changes the result");
  return 0;
}
