// Must compile, warnings as errors: every policy of the bundle custom, and every hook present in
// one of the shapes the detection accepts (const, static, noexcept, a template). It proves that
// the other cases fail for their own reason, not because anything custom fails.
#include <mqttbroker/broker.hpp>
#include <mqttbroker/transport/memory.hpp>

#include <asio/io_context.hpp>
#include <asio/strand.hpp>

#include <atomic>
#include <shared_mutex>
#include <string_view>

namespace compile_ok {

struct transport : mqttbroker::transport::memory {
  static constexpr const char* name = "custom";
};

struct storage {
  static constexpr bool durable = false;
};

struct locking {
  static constexpr bool thread_safe = true;
  using mutex_type = std::shared_mutex;
  template <class T>
  using counter_type = std::atomic<T>;
  template <class Executor>
  using strand_type = asio::strand<Executor>;
  template <class Executor>
  static strand_type<Executor> make_strand(const Executor& ex) { return asio::make_strand(ex); }
};

struct hooks {
  mqttbroker::hooks::auth_result authenticate(const mqttbroker::hooks::connect_info&) const {
    return mqttbroker::hooks::auth_result::accept;
  }
  bool authorize_publish(const mqttbroker::hooks::client_info&, const mqttbroker::message&) { return true; }
  template <class Qos>
  bool authorize_subscribe(const mqttbroker::hooks::client_info&, std::string_view, Qos) const {
    return true;
  }
  void intercept(std::string_view, mqttbroker::message_ptr&) {}
  static void on_connect(const mqttbroker::hooks::client_info&) {}
  void on_disconnect(mqttbroker::hooks::client_info, bool) noexcept {}  // by value works too
  void on_subscribe(const mqttbroker::hooks::client_info&, std::string_view, mqttbroker::codec::qos) {}
};

struct policies {
  using transport = compile_ok::transport;
  using storage = compile_ok::storage;
  using locking = compile_ok::locking;
  using hooks = compile_ok::hooks;
};

namespace mh = mqttbroker::hooks;
static_assert(mh::has_authenticate_v<hooks> && mh::has_authorize_publish_v<hooks> &&
              mh::has_authorize_subscribe_v<hooks> && mh::has_intercept_v<hooks> && mh::has_on_connect_v<hooks> &&
              mh::has_on_disconnect_v<hooks> && mh::has_on_subscribe_v<hooks>);
#if MQTTBROKER_HAS_CONCEPTS
static_assert(mqttbroker::transport_policy<transport> && mqttbroker::storage_policy<storage> &&
              mqttbroker::locking_policy<locking, asio::any_io_executor>);
#endif

}  // namespace compile_ok

// Instantiates the whole broker: listening and starting reach accepting, connections, every packet
// handler and so every hook call.
void run_custom_broker(asio::io_context& io) {
  mqttbroker::broker<compile_ok::policies> b(io);
  b.listen(compile_ok::transport::listen_options("custom"));
  b.start();
  b.async_stop([](std::error_code) {});
}
