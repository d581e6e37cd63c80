// The component on SQLite 3 (with_sqlite=True): its header compiles and its target links SQLite.
// The durable storage makes its file in a new temporary folder, opens it and closes it.
#include <mqttbroker/mqttbroker.hpp>
#include <mqttbroker/storage/sqlite.hpp>

#include <sqlite3.h>

#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <system_error>

int main() {
  namespace fs = std::filesystem;
  const fs::path folder = fs::temp_directory_path() / ("mqttbroker-test-package-" + std::to_string(std::random_device{}()));
  fs::create_directories(folder);
  mqttbroker::storage::sqlite_options options;
  options.path = (folder / "store.db").string();
  bool opened = false;
  {
    mqttbroker::storage::sqlite store(options);  // throws std::system_error where it cannot
    opened = store.is_open();
    store.close();
  }
  const bool made = fs::is_regular_file(options.path);
  std::error_code ignored;
  fs::remove_all(folder, ignored);
  std::printf("sqlite store %s with SQLite %s\n", opened && made ? "made and opened" : "NOT MADE", sqlite3_libversion());
  return opened && made ? 0 : 1;
}
