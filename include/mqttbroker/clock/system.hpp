#ifndef MQTTBROKER_CLOCK_SYSTEM_HPP
#define MQTTBROKER_CLOCK_SYSTEM_HPP

#include <mqttbroker/config.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/steady_timer.hpp>

#include <chrono>

MQTTBROKER_BEGIN_NAMESPACE
namespace clock {

/// The clock policy: where the broker reads the time and how it waits for it. A clock policy is
/// a small copyable value the broker keeps, and provides
///   steady_time steady_now() const;   // deadlines: Keep Alive, CONNECT timeout, Will Delay, expiry
///   system_time system_now() const;   // what is stored across a restart (durable storage)
///   timer_type make_timer(const asio::any_io_executor&) const;
/// where timer_type has expires_after(duration), async_wait(void(std::error_code)) and cancel()
/// as asio::steady_timer does. Replacing it (clock::manual) puts time under a test's control.
struct system {
  using steady_clock = std::chrono::steady_clock;
  using steady_time = steady_clock::time_point;
  using system_time = std::chrono::system_clock::time_point;
  using timer_type = asio::steady_timer;

  steady_time steady_now() const noexcept { return steady_clock::now(); }
  system_time system_now() const noexcept { return std::chrono::system_clock::now(); }
  timer_type make_timer(const asio::any_io_executor& ex) const { return timer_type(ex); }
};

}  // namespace clock
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CLOCK_SYSTEM_HPP
