#ifndef MQTTBROKER_TESTS_LOOPBACK_HPP
#define MQTTBROKER_TESTS_LOOPBACK_HPP

// For tests whose broker and clients share one io_context on the test's thread over loopback
// (TLS, WebSocket): a bounded run loop, and test certificates made once per run by
// tests/tls/make-certs.sh (its path is MQTTBROKER_MAKE_CERTS, set by tests/CMakeLists.txt).
#include <asio/io_context.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <system_error>

namespace test_support {

/// Runs `io` until `done()` or the deadline; whether `done()` came true.
inline bool run_until(asio::io_context& io, const std::function<bool()>& done,
                      std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    io.restart();
    io.run_one_for(std::chrono::milliseconds(20));
  }
  return true;
}

#ifdef MQTTBROKER_MAKE_CERTS
/// The folder make-certs.sh filled, once per run; removed at exit.
struct cert_dir {
  std::filesystem::path path;
  cert_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "mqttbroker-certs-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
    const std::string cmd = std::string("sh '") + MQTTBROKER_MAKE_CERTS + "' '" + path.string() + "' >/dev/null";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("make-certs.sh failed: " + cmd);
  }
  ~cert_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  cert_dir(const cert_dir&) = delete;
  cert_dir& operator=(const cert_dir&) = delete;
  std::string operator()(const std::string& name) const { return (path / name).string(); }
};
inline const cert_dir& certs() {
  static cert_dir d;
  return d;
}
#endif

}  // namespace test_support

#endif  // MQTTBROKER_TESTS_LOOPBACK_HPP
