#ifndef MQTTBROKER_LOG_HPP
#define MQTTBROKER_LOG_HPP

#include <mqttbroker/config.hpp>

#include <cstdint>

MQTTBROKER_BEGIN_NAMESPACE

/// How much a log message matters, most severe first (syslog's order).
enum class log_level : std::uint8_t {
  error,    // the broker cannot do what it should (a listener failed, a storage error)
  warning,  // a client misbehaved (protocol errors, refused handshakes), limits were hit
  notice,   // refused connections, timeouts, takeovers
  info,     // connections and disconnections
  debug,    // subscriptions, session expiry, the rest
};

inline const char* to_string(log_level l) noexcept {
  switch (l) {
    case log_level::error: return "error";
    case log_level::warning: return "warning";
    case log_level::notice: return "notice";
    case log_level::info: return "info";
    case log_level::debug: return "debug";
  }
  return "?";
}

MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_LOG_HPP
