#include <mqttbroker/transport/memory.hpp>

#include <mqttbroker/transport/tcp.hpp>
#include <mqttbroker/transport/traits.hpp>

#include "catch.hpp"

#include <asio/bind_executor.hpp>
#include <asio/io_context.hpp>
#include <asio/strand.hpp>
#include <asio/use_future.hpp>
#include <asio/write.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace {

using mqttbroker::transport::memory;
using mqttbroker::transport::memory_stream;
using mqttbroker::transport::memory_stream_limits;

/// Runs ready handlers until none is left (the pipes never wait on time).
std::size_t settle(asio::io_context& io) {
  std::size_t total = 0;
  for (int i = 0; i < 10'000; ++i) {
    if (io.stopped()) io.restart();
    const std::size_t n = io.poll();
    if (n == 0) return total;
    total += n;
  }
  FAIL("the io_context did not settle");
  return total;
}

/// The outcome of one asynchronous operation.
struct result {
  bool done = false;
  std::error_code ec;
  std::size_t n = 0;
};

auto record(result& r) {
  return [&r](std::error_code ec, std::size_t n) {
    r.done = true;
    r.ec = ec;
    r.n = n;
  };
}

/// Writes `s` with asio::async_write and runs until it completes.
void write_all(asio::io_context& io, memory_stream& s, const std::string& data) {
  result r;
  asio::async_write(s, asio::buffer(data), record(r));
  settle(io);
  REQUIRE(r.done);
  REQUIRE_FALSE(r.ec);
  REQUIRE(r.n == data.size());
}

/// One async_read_some into a buffer of `size` bytes.
std::string read_some(asio::io_context& io, memory_stream& s, std::size_t size, std::error_code& ec) {
  std::string buf(size, '\0');
  result r;
  s.async_read_some(asio::buffer(&buf[0], buf.size()), record(r));
  settle(io);
  REQUIRE(r.done);
  ec = r.ec;
  buf.resize(r.n);
  return buf;
}

std::string read_some(asio::io_context& io, memory_stream& s, std::size_t size = 256) {
  std::error_code ec;
  std::string out = read_some(io, s, size, ec);
  REQUIRE_FALSE(ec);
  return out;
}

}  // namespace

TEST_CASE("memory streams carry bytes in order in both directions", "[transport][memory]") {
  asio::io_context io;
  auto [a, b] = memory::make_pair(io.get_executor(), io.get_executor());
  CHECK(a.is_open());
  CHECK(b.is_open());
  write_all(io, a, "one ");
  write_all(io, a, "two ");
  write_all(io, a, "three");
  write_all(io, b, "back");
  CHECK(read_some(io, b) == "one two three");
  CHECK(read_some(io, a) == "back");
}

TEST_CASE("a read waits for data and completes when the peer writes", "[transport][memory]") {
  asio::io_context io;
  auto [a, b] = memory::make_pair(io.get_executor(), io.get_executor());
  std::array<char, 16> buf{};
  result r;
  b.async_read_some(asio::buffer(buf), record(r));
  settle(io);
  CHECK_FALSE(r.done);
  write_all(io, a, "ping");
  REQUIRE(r.done);
  CHECK_FALSE(r.ec);
  CHECK(std::string(buf.data(), r.n) == "ping");
}

TEST_CASE("reads smaller than the buffered bytes return them in pieces", "[transport][memory]") {
  asio::io_context io;
  auto [a, b] = memory::make_pair(io.get_executor(), io.get_executor());
  write_all(io, a, "abcdefgh");
  CHECK(read_some(io, b, 3) == "abc");
  CHECK(read_some(io, b, 3) == "def");
  CHECK(read_some(io, b, 3) == "gh");

  SECTION("max_read_size limits each read of that end") {
    auto [c, d] = memory::make_pair(io.get_executor(), io.get_executor(), {}, memory_stream_limits{1, 0});
    write_all(io, c, "xyz");
    CHECK(read_some(io, d) == "x");
    CHECK(read_some(io, d) == "y");
    CHECK(read_some(io, d) == "z");
  }
}

TEST_CASE("a gather write sends every buffer, in order, in one write", "[transport][memory]") {
  asio::io_context io;
  auto [a, b] = memory::make_pair(io.get_executor(), io.get_executor());
  const std::string h1 = "head1|", p1 = "payload1|", h2 = "head2|";
  std::vector<asio::const_buffer> buffers{asio::buffer(h1), asio::buffer(p1), asio::buffer(h2)};
  result r;
  a.async_write_some(buffers, record(r));
  settle(io);
  REQUIRE(r.done);
  CHECK(r.n == h1.size() + p1.size() + h2.size());
  CHECK(read_some(io, b) == "head1|payload1|head2|");

  SECTION("with short writes, asio::async_write still delivers everything") {
    auto [c, d] = memory::make_pair(io.get_executor(), io.get_executor(), memory_stream_limits{0, 4}, {});
    result w;
    c.async_write_some(buffers, record(w));
    settle(io);
    CHECK(w.n == 4);  // one short write
    CHECK(read_some(io, d) == "head");
    result all;
    asio::async_write(c, buffers, record(all));
    settle(io);
    REQUIRE(all.done);
    CHECK_FALSE(all.ec);
    CHECK(all.n == h1.size() + p1.size() + h2.size());
    CHECK(read_some(io, d) == "head1|payload1|head2|");
  }
}

TEST_CASE("completions never run inside the initiating call", "[transport][memory]") {
  asio::io_context io;
  auto [a, b] = memory::make_pair(io.get_executor(), io.get_executor());
  result w, r;
  std::array<char, 8> buf{};
  const std::string x = "x";
  a.async_write_some(asio::buffer(x), record(w));
  b.async_read_some(asio::buffer(buf), record(r));  // data is there: completes, but later
  CHECK_FALSE(w.done);
  CHECK_FALSE(r.done);
  settle(io);
  CHECK(w.done);
  CHECK(r.done);
  CHECK(r.n == 1);

  result closed;
  a.close(w.ec);
  a.async_read_some(asio::buffer(buf), record(closed));
  CHECK_FALSE(closed.done);
  settle(io);
  CHECK(closed.ec == asio::error::bad_descriptor);
}

TEST_CASE("closing one end gives the other EOF after the buffered bytes", "[transport][memory]") {
  asio::io_context io;
  auto [a, b] = memory::make_pair(io.get_executor(), io.get_executor());
  write_all(io, a, "last words");
  std::error_code ec;
  a.close(ec);
  CHECK_FALSE(ec);
  CHECK_FALSE(a.is_open());
  CHECK(read_some(io, b, 4) == "last");
  CHECK(read_some(io, b) == " words");
  std::string rest = read_some(io, b, 16, ec);
  CHECK(ec == asio::error::eof);
  CHECK(rest.empty());

  SECTION("a read already waiting gets EOF at the close") {
    auto [c, d] = memory::make_pair(io.get_executor(), io.get_executor());
    std::array<char, 8> buf{};
    result r;
    d.async_read_some(asio::buffer(buf), record(r));
    settle(io);
    CHECK_FALSE(r.done);
    c.close(ec);
    settle(io);
    REQUIRE(r.done);
    CHECK(r.ec == asio::error::eof);
  }
}

TEST_CASE("writing to a closed peer fails with broken_pipe", "[transport][memory]") {
  asio::io_context io;
  auto [a, b] = memory::make_pair(io.get_executor(), io.get_executor());
  std::error_code ec;
  b.close(ec);
  result r;
  const std::string data = "lost";
  asio::async_write(a, asio::buffer(data), record(r));
  settle(io);
  REQUIRE(r.done);
  CHECK(r.ec == asio::error::broken_pipe);
}

TEST_CASE("close() aborts the end's own pending read; a closed end refuses everything", "[transport][memory]") {
  asio::io_context io;
  auto [a, b] = memory::make_pair(io.get_executor(), io.get_executor());
  std::array<char, 8> buf{};
  result r;
  a.async_read_some(asio::buffer(buf), record(r));
  settle(io);
  std::error_code ec;
  a.close(ec);
  CHECK_FALSE(ec);
  settle(io);
  REQUIRE(r.done);
  CHECK(r.ec == asio::error::operation_aborted);

  result w;
  const std::string x = "x";
  a.async_write_some(asio::buffer(x), record(w));
  settle(io);
  CHECK(w.ec == asio::error::bad_descriptor);
  a.close(ec);  // closing twice is harmless
  CHECK_FALSE(ec);
  result again;
  a.async_read_some(asio::buffer(buf), record(again));
  settle(io);
  CHECK(again.ec == asio::error::bad_descriptor);

  // The stream's destructor closes it too: the peer reads EOF.
  result eof;
  b.async_read_some(asio::buffer(buf), record(eof));
  settle(io);
  CHECK(eof.ec == asio::error::eof);
}

TEST_CASE("handlers may be move-only and run on their associated executor", "[transport][memory]") {
  asio::io_context io;
  auto strand = asio::make_strand(io.get_executor());
  auto [a, b] = memory::make_pair(io.get_executor(), strand);
  CHECK(b.get_executor() == asio::any_io_executor(strand));
  auto owned = std::make_unique<int>(7);
  int seen = 0;
  bool on_strand = false;
  std::array<char, 8> buf{};
  b.async_read_some(asio::buffer(buf), [p = std::move(owned), &seen, &on_strand, strand](std::error_code, std::size_t) {
    seen = *p;
    on_strand = strand.running_in_this_thread();
  });
  bool bound_on_strand = false;
  const std::string x = "x";
  a.async_write_some(asio::buffer(x),
                     asio::bind_executor(strand, [&bound_on_strand, strand](std::error_code, std::size_t) {
                       bound_on_strand = strand.running_in_this_thread();
                     }));
  settle(io);
  CHECK(seen == 7);
  CHECK(on_strand);        // no associated executor: the stream's own, a strand here
  CHECK(bound_on_strand);  // bound: the handler's

  // A read that has to wait runs on the executor its handler is bound to as well.
  bool waited_on_strand = false;
  std::array<char, 8> buf_a{};
  a.async_read_some(asio::buffer(buf_a), asio::bind_executor(strand, [&waited_on_strand, strand](std::error_code, std::size_t) {
                      waited_on_strand = strand.running_in_this_thread();
                    }));
  settle(io);
  CHECK_FALSE(waited_on_strand);
  const std::string y = "y";
  b.async_write_some(asio::buffer(y), [](std::error_code, std::size_t) {});
  settle(io);
  CHECK(waited_on_strand);
}

TEST_CASE("completion tokens other than callbacks work", "[transport][memory]") {
  asio::io_context io;
  auto [a, b] = memory::make_pair(io.get_executor(), io.get_executor());
  const std::string data = "future";
  std::future<std::size_t> written = a.async_write_some(asio::buffer(data), asio::use_future);
  std::array<char, 16> buf{};
  std::future<std::size_t> read = b.async_read_some(asio::buffer(buf), asio::use_future);
  settle(io);
  CHECK(written.get() == data.size());
  CHECK(read.get() == data.size());
  std::error_code ec;
  a.close(ec);
  std::future<std::size_t> eof = b.async_read_some(asio::buffer(buf), asio::use_future);
  settle(io);
  CHECK_THROWS_AS(eof.get(), std::system_error);
}

TEST_CASE("an acceptor hands each connection to async_accept, in order, on the given executor", "[transport][memory]") {
  asio::io_context io;
  auto strand = asio::make_strand(io.get_executor());
  std::error_code ec;
  auto acceptor = memory::make_acceptor(io.get_executor(), memory::listen_options("transport-test-accept"), ec);
  REQUIRE_FALSE(ec);
  CHECK(acceptor.is_open());
  CHECK(acceptor.local_endpoint(ec).port() == 0);

  std::vector<memory_stream> accepted;
  auto on_accept = [&](std::error_code e, memory_stream s) {
    REQUIRE_FALSE(e);
    accepted.push_back(std::move(s));
  };

  // A pending accept gets the next connection.
  acceptor.async_accept(strand, on_accept);
  settle(io);
  CHECK(accepted.empty());
  memory_stream c1 = memory::connect(io.get_executor(), "transport-test-accept");
  CHECK(accepted.empty());  // posted, not inline
  settle(io);
  REQUIRE(accepted.size() == 1);
  CHECK(accepted[0].get_executor() == asio::any_io_executor(strand));

  // Connections made before async_accept wait, and keep what their clients wrote meanwhile.
  memory_stream c2 = memory::connect(io.get_executor(), "transport-test-accept");
  memory_stream c3 = memory::connect(io.get_executor(), "transport-test-accept");
  write_all(io, c2, "two");
  write_all(io, c3, "three");
  acceptor.async_accept(io.get_executor(), on_accept);
  settle(io);
  acceptor.async_accept(io.get_executor(), on_accept);
  settle(io);
  REQUIRE(accepted.size() == 3);
  CHECK(read_some(io, accepted[1]) == "two");
  CHECK(read_some(io, accepted[2]) == "three");
  write_all(io, accepted[0], "hello one");
  CHECK(read_some(io, c1) == "hello one");
}

TEST_CASE("closing an acceptor aborts its accept, refuses connections and frees its name", "[transport][memory]") {
  asio::io_context io;
  std::error_code ec;
  auto acceptor = memory::make_acceptor(io.get_executor(), memory::listen_options("transport-test-close"), ec);
  REQUIRE_FALSE(ec);
  auto twin = memory::make_acceptor(io.get_executor(), memory::listen_options("transport-test-close"), ec);
  CHECK(ec == asio::error::address_in_use);
  CHECK_FALSE(twin.is_open());

  // A connection in the backlog is served first; the next accept waits and is aborted by close().
  memory_stream waiting = memory::connect(io.get_executor(), "transport-test-close");
  bool first = false;
  acceptor.async_accept([&](std::error_code e, memory_stream s) { first = !e && s.is_open(); });
  bool aborted = false;
  acceptor.async_accept([&](std::error_code e, memory_stream s) {
    aborted = e == asio::error::operation_aborted && !s.is_open();
  });
  settle(io);
  CHECK(first);
  CHECK_FALSE(aborted);
  acceptor.close(ec);
  CHECK_FALSE(ec);
  CHECK_FALSE(acceptor.is_open());
  settle(io);
  CHECK(aborted);

  memory::connect(io.get_executor(), "transport-test-close", ec);
  CHECK(ec == asio::error::connection_refused);
  memory::connect(io.get_executor(), "no-such-listener", ec);
  CHECK(ec == asio::error::connection_refused);
  auto again = memory::make_acceptor(io.get_executor(), memory::listen_options("transport-test-close"), ec);
  CHECK_FALSE(ec);
  CHECK(again.is_open());
}

TEST_CASE("connections still in the backlog are closed with the acceptor", "[transport][memory]") {
  asio::io_context io;
  std::error_code ec;
  auto acceptor = memory::make_acceptor(io.get_executor(), memory::listen_options("transport-test-backlog"), ec);
  REQUIRE_FALSE(ec);
  memory_stream c = memory::connect(io.get_executor(), "transport-test-backlog");
  acceptor.close(ec);
  read_some(io, c, 8, ec);
  CHECK(ec == asio::error::eof);
}

TEST_CASE("destroying the io_context frees pending operations whose handlers own their stream", "[transport][memory]") {
  std::weak_ptr<memory_stream> watch;
  {
    asio::io_context io;
    auto pair = memory::make_pair(io.get_executor(), io.get_executor());
    auto b = std::make_shared<memory_stream>(std::move(pair.second));
    watch = b;
    auto buf = std::make_shared<std::array<char, 8>>();
    b->async_read_some(asio::buffer(*buf), [b, buf](std::error_code, std::size_t) {});  // a cycle
    settle(io);
    b.reset();
    CHECK_FALSE(watch.expired());  // only the pending read keeps it
  }
  CHECK(watch.expired());  // LeakSanitizer would also say so
}

TEST_CASE("two threads stream through one pipe", "[transport][memory]") {
  asio::io_context io_a, io_b;
  auto pair = memory::make_pair(io_a.get_executor(), io_b.get_executor(), memory_stream_limits{0, 1000}, {});
  memory_stream& a = pair.first;  // named references: lambdas cannot capture structured bindings in C++17
  memory_stream& b = pair.second;
  std::string sent(100'000, '\0');
  for (std::size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<char>('a' + i % 26);
  std::string received;
  std::array<char, 777> buf{};
  std::function<void(std::error_code, std::size_t)> on_read = [&](std::error_code ec, std::size_t n) {
    received.append(buf.data(), n);
    if (!ec) b.async_read_some(asio::buffer(buf), on_read);
  };
  b.async_read_some(asio::buffer(buf), on_read);
  std::error_code write_ec;
  asio::async_write(a, asio::buffer(sent), [&](std::error_code ec, std::size_t) {
    write_ec = ec;
    std::error_code ignored;
    a.close(ignored);
  });
  std::thread ta([&] { io_a.run(); });
  std::thread tb([&] { io_b.run(); });  // returns at EOF: the read was the only work
  ta.join();
  tb.join();
  CHECK_FALSE(write_ec);
  CHECK(received == sent);
}

// ---- the transport contract (transport/traits.hpp)

namespace contract_test {

/// A stream with what every transport needs and nothing more (declared only: never called).
struct minimal_stream {
  using executor_type = asio::any_io_executor;
  executor_type get_executor();
  template <class MutableBufferSequence, class Handler>
  void async_read_some(const MutableBufferSequence&, Handler&&);
  template <class ConstBufferSequence, class Handler>
  void async_write_some(const ConstBufferSequence&, Handler&&);
  void close(std::error_code&);
};

/// An acceptor with what every transport needs (declared only).
struct minimal_acceptor {
  struct endpoint {
    std::uint16_t port() const;
  };
  template <class Executor, class Handler>
  void async_accept(const Executor&, Handler&&);
  void close(std::error_code&);
  bool is_open() const;
  endpoint local_endpoint(std::error_code&) const;
};

/// The in-memory transport, with a layer's handshake and graceful shutdown added (a TLS-like stack).
struct layered : memory {
  template <class Handler>
  static void async_handshake(stream_type&, Handler&&);
  template <class Handler>
  static void async_shutdown(stream_type&, Handler&&);
};

/// A transport whose stream cannot read.
struct write_only : memory {
  struct stream_type {
    using executor_type = asio::any_io_executor;
    executor_type get_executor();
    template <class ConstBufferSequence, class Handler>
    void async_write_some(const ConstBufferSequence&, Handler&&);
    void close(std::error_code&);
  };
  using acceptor_type = minimal_acceptor;
  static acceptor_type make_acceptor(const asio::any_io_executor&, const listen_options&, std::error_code&);
  static void prepare(stream_type&);
};

struct minimal {
  static constexpr const char* name = "minimal";
  using stream_type = minimal_stream;
  using acceptor_type = minimal_acceptor;
  struct listen_options {};
  static acceptor_type make_acceptor(const asio::any_io_executor&, const listen_options&, std::error_code&);
  static void prepare(stream_type&);
};

}  // namespace contract_test

TEST_CASE("tcp and memory meet the transport contract; its requirements and optional abilities are detected one by one",
          "[transport][contract]") {
  namespace mt = mqttbroker::transport;
  namespace req = mqttbroker::transport::contract;
  static_assert(mt::detail::check_transport<mt::tcp>() && mt::detail::check_transport<memory>());
#if MQTTBROKER_HAS_CONCEPTS
  static_assert(mqttbroker::transport_policy<mt::tcp> && mqttbroker::transport_policy<memory>);
  static_assert(!mqttbroker::transport_policy<contract_test::write_only> && !mqttbroker::transport_policy<int>);
#endif
  // Plain sockets can wait for readability; the in-memory stream is read with async_read_some only.
  CHECK(mt::has_readability_wait_v<mt::tcp>);
  CHECK_FALSE(mt::has_readability_wait_v<memory>);
  CHECK_FALSE(mt::has_readability_wait_v<contract_test::minimal>);
  CHECK_FALSE((mt::has_async_handshake_v<mt::tcp> || mt::has_async_shutdown_v<mt::tcp>));
  CHECK_FALSE((mt::has_async_handshake_v<memory> || mt::has_async_shutdown_v<memory>));
  CHECK((mt::has_async_handshake_v<contract_test::layered> && mt::has_async_shutdown_v<contract_test::layered>));
  CHECK_FALSE(mt::has_readability_wait_v<contract_test::layered>);

  // A stream with only the required members is enough; one without async_read_some is not, and
  // that is the only requirement it misses.
  CHECK(mt::detail::check_transport<contract_test::minimal>());
  CHECK_FALSE(req::stream_has_async_read_some<contract_test::write_only>);
  CHECK((req::has_stream_type<contract_test::write_only> && req::stream_has_async_write_some<contract_test::write_only> &&
         req::stream_has_close<contract_test::write_only> && req::has_prepare<contract_test::write_only>));
  // Not a transport at all: every requirement false, none an error.
  CHECK_FALSE((req::has_name<int> || req::has_stream_type<int> || req::stream_has_async_read_some<int> ||
               req::has_acceptor_type<int> || req::acceptor_has_async_accept<int> || req::has_make_acceptor<int>));
}
