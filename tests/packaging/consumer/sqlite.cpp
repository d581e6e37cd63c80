// Uses the package's sqlite component for real: a broker on the durable storage, its store in a
// new temporary folder, listening on a loopback port the system picks; a raw TCP client sends
// CONNECT and a retained QoS 1 PUBLISH, which the broker acknowledges (PUBACK) and an in-process
// subscriber receives. A second broker on the same file must then hold the retained message, as
// loaded from SQLite. Exits 0 only when all of that happened.
#include "loopback.hpp"

#include <mqttbroker/mqttbroker.hpp>
#include <mqttbroker/storage/sqlite.hpp>

#include <asio.hpp>
#include <fmt/format.h>
#include <sqlite3.h>

#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <system_error>

namespace {

struct durable_policies : mqttbroker::default_policies {
  using storage = mqttbroker::storage::sqlite;
};

void open_store(mqttbroker::broker<durable_policies>& broker, const std::filesystem::path& file) {
  mqttbroker::storage::sqlite_options store;
  store.path = file.string();
  broker.storage().open(store);  // throws std::system_error naming the file and the reason
}

}  // namespace

int main() {
  namespace fs = std::filesystem;
  const fs::path folder = fs::temp_directory_path() / fmt::format("mqttbroker-packaging-{:08x}", std::random_device{}());
  fs::create_directories(folder);
  const fs::path file = folder / "broker.db";

  basic_loopback<durable_policies> run;
  open_store(run.broker, file);
  run.broker.listen({"127.0.0.1", 0});
  run.start();

  // MQTT 3.1.1 CONNECT (clean session, Keep Alive 30 s, client id "s"), then PUBLISH QoS 1,
  // retained, packet identifier 1, of "kept" to packaging/sqlite.
  static const unsigned char packets[] = {
      0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 30, 0, 1, 's',
      0x33, 24, 0, 16, 'p', 'a', 'c', 'k', 'a', 'g', 'i', 'n', 'g', '/', 's', 'q', 'l', 'i', 't', 'e',
      0, 1, 'k', 'e', 'p', 't'};
  // CONNACK accepting the client, then PUBACK of packet identifier 1.
  run.exchange(0, asio::buffer(packets), {0x20, 2, 0, 0, 0x40, 2, 0, 1});
  run.io.run();
  run.broker.storage().close();  // the file is held (locked) until then

  // A restart: the retained message comes back from the file.
  std::string reloaded;
  {
    asio::io_context io;
    mqttbroker::broker<durable_policies> broker(io);
    open_store(broker, file);
    broker.start();
    if (const mqttbroker::message_ptr m = broker.retained("packaging/sqlite")) reloaded.assign(m->payload());
    broker.async_stop([](std::error_code) {});
    io.run();
  }
  std::error_code ignored;
  fs::remove_all(folder, ignored);

  const std::string report = fmt::format(
      "mqttbroker {}.{}.{} from the package, on SQLite {}: CONNACK and PUBACK {}, in-process subscriber got '{}', "
      "retained after a restart '{}'",
      MQTTBROKER_VERSION_MAJOR, MQTTBROKER_VERSION_MINOR, MQTTBROKER_VERSION_PATCH, sqlite3_libversion(),
      run.accepted ? "received" : "missing or refused", run.received, reloaded);
  std::puts(report.c_str());
  return run.accepted && run.received == "kept" && reloaded == "kept" ? 0 : 1;
}
