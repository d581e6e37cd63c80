// Must not compile: the transport's stream has everything the broker uses but async_read_some.
#include <mqttbroker/broker.hpp>

#include <asio/any_io_executor.hpp>

#include <cstddef>
#include <cstdint>
#include <system_error>

namespace compile_fail {

struct stream_without_read {
  using executor_type = asio::any_io_executor;
  executor_type get_executor();
  template <class ConstBufferSequence, class Handler>
  void async_write_some(const ConstBufferSequence&, Handler&&);
  void close(std::error_code&);
};

struct acceptor {
  struct endpoint {
    std::uint16_t port() const;
  };
  template <class Executor, class Handler>
  void async_accept(const Executor&, Handler&&);
  void close(std::error_code&);
  bool is_open() const;
  endpoint local_endpoint(std::error_code&) const;
};

struct transport_without_read {
  static constexpr const char* name = "no-read";
  using stream_type = stream_without_read;
  using acceptor_type = acceptor;
  struct listen_options {};
  static acceptor_type make_acceptor(const asio::any_io_executor&, const listen_options&, std::error_code&);
  static void prepare(stream_type&);
};

struct policies : mqttbroker::default_policies {
  using transport = transport_without_read;
};

}  // namespace compile_fail

std::size_t broker_size() { return sizeof(mqttbroker::broker<compile_fail::policies>); }
