// Uses the packaged library for real: a broker listening on a loopback port the system picks, a
// raw TCP client that sends CONNECT and a QoS 0 PUBLISH, and an in-process subscriber that must
// receive it. Exits 0 only when the CONNACK accepted the client and the message arrived.
// The report line is formatted with fmt, which this program gets from mqttbroker's package alone
// (the library depends on fmt for its log messages): a package that did not hand fmt's headers and
// library on fails to build it.
#include "loopback.hpp"

#include <mqttbroker/mqttbroker.hpp>

#include <asio.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <string>

int main() {
  loopback run;
  run.broker.listen({"127.0.0.1", 0});
  run.start();

  // MQTT 3.1.1 CONNECT (clean session, Keep Alive 30 s, client id "c"), then PUBLISH QoS 0 of
  // "over tcp" to packaging/tcp; a client may send before its CONNACK arrives.
  static const unsigned char packets[] = {
      0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 30, 0, 1, 'c',
      0x30, 23, 0, 13, 'p', 'a', 'c', 'k', 'a', 'g', 'i', 'n', 'g', '/', 't', 'c', 'p',
      'o', 'v', 'e', 'r', ' ', 't', 'c', 'p'};
  // CONNACK: type 2, remaining length 2, no session present, return code 0 (accepted).
  run.exchange(0, asio::buffer(packets), {0x20, 2, 0, 0});
  run.io.run();

  const std::string report = fmt::format(
      "mqttbroker {}.{}.{} from the package, with fmt {}.{}.{}: CONNACK {}, in-process subscriber got '{}'",
      MQTTBROKER_VERSION_MAJOR, MQTTBROKER_VERSION_MINOR, MQTTBROKER_VERSION_PATCH, FMT_VERSION / 10000,
      FMT_VERSION / 100 % 100, FMT_VERSION % 100, run.accepted ? "accepted" : "missing or refused", run.received);
  std::puts(report.c_str());
  return run.accepted && run.received == "over tcp" ? 0 : 1;
}
