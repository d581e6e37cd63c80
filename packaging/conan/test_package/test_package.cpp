// The package's headers compile and work: a broker on the program's io_context hands a message
// published in-process to an in-process subscriber.
#include <mqttbroker/mqttbroker.hpp>

#include <asio.hpp>

#include <cstdio>
#include <string>

int main() {
  asio::io_context io;
  mqttbroker::broker<> broker(io);
  std::string got;
  broker.subscribe("test/#", [&](const mqttbroker::message_ptr& m) { got.assign(m->payload()); });
  broker.start();
  broker.publish("test/package", "hello");
  broker.async_stop([](std::error_code) {});
  io.run();
  std::printf("mqttbroker %d.%d.%d: %s\n", MQTTBROKER_VERSION_MAJOR, MQTTBROKER_VERSION_MINOR,
              MQTTBROKER_VERSION_PATCH, got.empty() ? "nothing delivered" : got.c_str());
  return got == "hello" ? 0 : 1;
}
