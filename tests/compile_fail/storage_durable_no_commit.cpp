// Must not compile: a durable storage that records changes but cannot commit them, so no
// acknowledgement could ever wait for durability.
#include <mqttbroker/broker.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace compile_fail {

struct storage_without_commit {
  static constexpr bool durable = true;
  void save_session(std::string_view, std::uint32_t) {}
  void erase_session(std::string_view) {}
  void save_subscription(std::string_view, std::string_view, mqttbroker::codec::subscribe_options, std::uint32_t) {}
  void erase_subscription(std::string_view, std::string_view) {}
  void save_retained(const mqttbroker::message_ptr&) {}
  void erase_retained(std::string_view) {}
  void enqueue(std::string_view, const mqttbroker::message_ptr&, mqttbroker::codec::qos) {}
  void send(std::string_view, std::uint16_t, const mqttbroker::message_ptr&, mqttbroker::codec::qos) {}
  void pubrec(std::string_view, std::uint16_t) {}
  void acknowledge(std::string_view, std::uint16_t) {}
  void drop(std::string_view, const mqttbroker::message_ptr&) {}
  void clear_messages(std::string_view) {}
  void receive(std::string_view, std::uint16_t, const mqttbroker::message_ptr&) {}
  void release(std::string_view, std::uint16_t) {}
  void save_will(std::string_view, const mqttbroker::message_ptr&, std::chrono::system_clock::time_point) {}
  void erase_will(std::string_view) {}
};

struct policies : mqttbroker::default_policies {
  using storage = storage_without_commit;
};

}  // namespace compile_fail

std::size_t broker_size() { return sizeof(mqttbroker::broker<compile_fail::policies>); }
