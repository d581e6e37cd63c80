#ifndef MQTTBROKER_TESTS_MOSQUITTO_PROCESS_HPP
#define MQTTBROKER_TESTS_MOSQUITTO_PROCESS_HPP

// Debian's mosquitto as a peer for the client and bridge tests: on a free loopback port, with
// optional lines of configuration, stopped (SIGTERM: it saves what persistence keeps) and started
// again on the same port.
#include "catch.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace test_support {

class mosquitto_process {
 public:
  /// `extra`: more configuration lines; "%DIR%" in them becomes a folder of this process's own
  /// (for persistence_location), into which `files` (paths) are copied first, readable by all:
  /// certificates there stay readable after mosquitto drops to its own user.
  explicit mosquitto_process(std::string extra = {}, const std::vector<std::string>& files = {}) {
    const char* paths[] = {"/usr/sbin/mosquitto", "/usr/bin/mosquitto"};
    for (const char* p : paths)
      if (::access(p, X_OK) == 0) path_ = p;
    if (path_.empty()) return;
    {
      asio::io_context probe;
      asio::ip::tcp::acceptor a(probe, {asio::ip::make_address("127.0.0.1"), 0});
      port_ = a.local_endpoint().port();
    }
    static int count = 0;
    dir_ = "/tmp/mqttbroker-mosquitto-" + std::to_string(::getpid()) + "-" + std::to_string(++count);
    std::filesystem::create_directories(dir_);
    // Started as root, mosquitto drops to its own user, which must still write its persistence file.
    std::filesystem::permissions(dir_, std::filesystem::perms::all);
    for (const std::string& f : files) {
      const std::filesystem::path to = std::filesystem::path(dir_) / std::filesystem::path(f).filename();
      std::filesystem::copy_file(f, to, std::filesystem::copy_options::overwrite_existing);
      std::filesystem::permissions(to, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
                                           std::filesystem::perms::group_read | std::filesystem::perms::others_read);
    }
    for (std::size_t at; (at = extra.find("%DIR%")) != std::string::npos;) extra.replace(at, 5, dir_ + "/");
    conf_ = dir_ + "/mosquitto.conf";
    std::ofstream(conf_) << "listener " << port_ << " 127.0.0.1\nallow_anonymous true\nlog_dest none\n" << extra;
    start();
  }
  ~mosquitto_process() {
    stop();
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }
  mosquitto_process(const mosquitto_process&) = delete;
  mosquitto_process& operator=(const mosquitto_process&) = delete;

  /// Starts it (again), returning when it accepts connections.
  void start() {
    if (path_.empty() || pid_ > 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execl(path_.c_str(), path_.c_str(), "-c", conf_.c_str(), static_cast<char*>(nullptr));
      std::_Exit(127);
    }
    for (int i = 0; i < 300; ++i) {
      asio::io_context probe;
      asio::ip::tcp::socket s(probe);
      std::error_code ec;
      s.connect({asio::ip::make_address("127.0.0.1"), port_}, ec);
      if (!ec) return;
      ::usleep(10000);
    }
    FAIL("mosquitto did not start");
  }
  /// Stops it as an operator would (SIGTERM) and waits until it is gone.
  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  bool present() const { return !path_.empty(); }
  std::uint16_t port() const { return port_; }

 private:
  std::string path_, dir_, conf_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

/// Whether the test can go on: without Mosquitto it is skipped, visibly, or fails where CI asks
/// for every client (MQTTBROKER_REQUIRE_CLIENTS).
inline bool usable(const mosquitto_process& mosq) {
  if (mosq.present()) return true;
  if (std::getenv("MQTTBROKER_REQUIRE_CLIENTS") != nullptr) FAIL("mosquitto (Debian mosquitto) is not installed");
  WARN("SKIPPED: mosquitto (Debian mosquitto) is not installed");
  return false;
}

}  // namespace test_support

#endif  // MQTTBROKER_TESTS_MOSQUITTO_PROCESS_HPP
