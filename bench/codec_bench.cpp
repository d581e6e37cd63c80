// Codec micro-benchmarks: the incremental decoder over buffers of PUBLISH packets, the PUBLISH
// header encoder, and PUBACK encoding.
//
//   g++ -O2 -std=c++17 -Iinclude bench/codec_bench.cpp -lbenchmark -lpthread -o bench_codec
//   ./bench_codec
//
// Decoding benchmarks feed a buffer holding `packets_per_buffer` packets to one server-side decoder
// (it saw a CONNECT first, as a broker's does); "per_packet" is the time per decoded packet and
// bytes_per_second counts wire bytes. "_mss" feeds the same bytes in 1,460-byte fragments (one
// TCP segment each), so packets that straddle two segments take the copying path. Encoding
// benchmarks write one packet per iteration into a reused buffer.

#include <mqttbroker/codec.hpp>

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

namespace mc = mqttbroker::codec;
using mc::protocol_version;

constexpr std::size_t packets_per_buffer = 256;

std::string encode_or_die(const mc::packet& p, protocol_version v) {
  std::string out;
  if (mc::encode(p, v, out)) std::abort();
  return out;
}

/// A CONNECT for `v`, to put a server-side decoder into that version.
std::string connect_bytes(protocol_version v) {
  mc::connect c;
  c.version = v;
  c.client_id = "bench";
  return encode_or_die(c, v);
}

struct publish_stream {
  std::string payload;
  mc::properties_builder props;
  std::string bytes;

  publish_stream(protocol_version v, std::size_t payload_size, mc::qos q, bool with_properties)
      : payload(payload_size, 'p') {
    if (with_properties) {
      props.add(mc::property_id::payload_format_indicator, 1).add(mc::property_id::message_expiry_interval, 3600);
    }
    for (std::size_t i = 0; i < packets_per_buffer; ++i) {
      mc::publish p;
      p.topic = "site/12/device/3456/temperature";
      p.qos_level = q;
      if (q != mc::qos::at_most_once) p.packet_id = static_cast<std::uint16_t>(1 + i);
      p.properties = props.view();
      p.payload = payload;
      bytes += encode_or_die(p, v);
    }
  }
};

void decode_publish(benchmark::State& state, protocol_version v, bool with_properties, std::size_t fragment) {
  const auto payload_size = static_cast<std::size_t>(state.range(0));
  const auto q = static_cast<mc::qos>(state.range(1));
  const publish_stream s(v, payload_size, q, with_properties);
  const auto* data = reinterpret_cast<const std::uint8_t*>(s.bytes.data());

  mc::decoder d;  // server role, like a broker reading its clients
  const std::string connect = connect_bytes(v);
  if (d.feed(reinterpret_cast<const std::uint8_t*>(connect.data()), connect.size(), [](mc::packet&) {}).ec)
    std::abort();

  std::size_t decoded = 0;
  std::size_t payload_bytes = 0;
  for (auto _ : state) {
    for (std::size_t pos = 0; pos < s.bytes.size(); pos += fragment) {
      const std::size_t n = s.bytes.size() - pos < fragment ? s.bytes.size() - pos : fragment;
      const auto res = d.feed(data + pos, n, [&](mc::packet& p) {
        payload_bytes += std::get<mc::publish>(p).payload.size();
        ++decoded;
      });
      if (res.ec) state.SkipWithError("decode failed");
    }
  }
  benchmark::DoNotOptimize(payload_bytes);
  if (decoded != static_cast<std::size_t>(state.iterations()) * packets_per_buffer) state.SkipWithError("lost packets");
  state.SetItemsProcessed(static_cast<std::int64_t>(decoded));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(s.bytes.size()));
  state.counters["per_packet"] =
      benchmark::Counter(static_cast<double>(decoded), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["wire_bytes"] = static_cast<double>(s.bytes.size() / packets_per_buffer);
}

void BM_decode_publish_v311(benchmark::State& state) {
  decode_publish(state, protocol_version::v3_1_1, false, ~std::size_t{0});
}
void BM_decode_publish_v311_mss(benchmark::State& state) {
  decode_publish(state, protocol_version::v3_1_1, false, 1460);
}
void BM_decode_publish_v5_properties(benchmark::State& state) {
  decode_publish(state, protocol_version::v5, true, ~std::size_t{0});
}

void BM_encode_publish_header(benchmark::State& state) {
  const auto v = static_cast<protocol_version>(state.range(0));
  const auto q = static_cast<mc::qos>(state.range(1));
  const std::string payload(1024, 'p');
  mc::properties_builder props;
  props.add(mc::property_id::message_expiry_interval, 3600);
  mc::publish p;
  p.topic = "site/12/device/3456/temperature";
  p.qos_level = q;
  p.properties = props.view();
  p.payload = payload;
  std::uint8_t buf[256];
  std::size_t written = 0;
  std::uint16_t id = 0;
  for (auto _ : state) {
    if (q != mc::qos::at_most_once) p.packet_id = static_cast<std::uint16_t>(++id == 0 ? ++id : id);
    if (mc::encode_publish_header(p, v, buf, sizeof buf, written)) state.SkipWithError("encode failed");
    benchmark::DoNotOptimize(buf);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(written));
  state.counters["header_bytes"] = static_cast<double>(written);
}

void BM_encode_puback(benchmark::State& state) {
  const auto v = static_cast<protocol_version>(state.range(0));
  mc::puback a;
  a.reason = state.range(1) != 0 ? mqttbroker::reason_code::no_matching_subscribers : mqttbroker::reason_code::success;
  std::uint8_t buf[16];
  std::size_t written = 0;
  std::uint16_t id = 0;
  for (auto _ : state) {
    a.packet_id = static_cast<std::uint16_t>(++id == 0 ? ++id : id);
    if (mc::encode(a, v, buf, sizeof buf, written)) state.SkipWithError("encode failed");
    benchmark::DoNotOptimize(buf);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(written));
}

}  // namespace

// Arguments: payload bytes, QoS.
BENCHMARK(BM_decode_publish_v311)->ArgNames({"payload", "qos"})->ArgsProduct({{16, 1024}, {0, 1}});
BENCHMARK(BM_decode_publish_v311_mss)->ArgNames({"payload", "qos"})->Args({1024, 1});
BENCHMARK(BM_decode_publish_v5_properties)->ArgNames({"payload", "qos"})->Args({16, 1})->Args({1024, 1});
// Arguments: protocol level (4 = 3.1.1, 5 = 5.0), QoS.
BENCHMARK(BM_encode_publish_header)->ArgNames({"version", "qos"})->ArgsProduct({{4, 5}, {0, 1}});
// Arguments: protocol level, whether a reason code is sent (5.0 only).
BENCHMARK(BM_encode_puback)->ArgNames({"version", "reason"})->Args({4, 0})->Args({5, 0})->Args({5, 1});

BENCHMARK_MAIN();
