// The installed sqlite component: its header beside the core's, its target bringing SQLite 3. A
// broker opens a store in a new temporary folder and keeps a retained message there; a second
// broker on the same file loads it back.
#include <mqttbroker/mqttbroker.hpp>
#include <mqttbroker/storage/sqlite.hpp>

#include <chrono>
#include <filesystem>
#include <string>
#include <system_error>

namespace {

struct durable_policies : mqttbroker::default_policies {
  using storage = mqttbroker::storage::sqlite;
};

/// Starts a broker on the store `path`, publishes `payload` retained unless it is empty, stops;
/// returns the payload retained at the start, as loaded from the file.
std::string run_broker(const std::filesystem::path& path, const std::string& payload) {
  asio::io_context io;
  mqttbroker::broker<durable_policies> broker(io);
  mqttbroker::storage::sqlite_options store;
  store.path = path.string();
  broker.storage().open(store);
  broker.start();
  const mqttbroker::message_ptr loaded = broker.retained("consumer/sqlite");
  if (!payload.empty()) broker.publish("consumer/sqlite", payload, mqttbroker::codec::qos::at_least_once, true);
  broker.async_stop([](std::error_code) {});
  io.run();
  return loaded ? std::string(loaded->payload()) : std::string();
}

}  // namespace

int main() {
  const auto folder = std::filesystem::temp_directory_path() /
                      ("mqttbroker-consumer-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::filesystem::create_directories(folder);
  const bool empty_at_first = run_broker(folder / "store.db", "kept").empty();
  const bool kept = run_broker(folder / "store.db", "") == "kept";
  std::error_code ignored;
  std::filesystem::remove_all(folder, ignored);
  return empty_at_first && kept ? 0 : 1;
}
