#ifndef MQTTBROKER_TRANSPORT_TRAITS_HPP
#define MQTTBROKER_TRANSPORT_TRAITS_HPP

#include <mqttbroker/config.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_allocator.hpp>
#include <asio/associated_executor.hpp>
#include <asio/bind_allocator.hpp>
#include <asio/bind_executor.hpp>
#include <asio/buffer.hpp>
#include <asio/post.hpp>
#include <asio/socket_base.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

MQTTBROKER_BEGIN_NAMESPACE
namespace transport {
namespace detail {

// Completion handlers of the shapes the broker passes, for detection only: never called.
struct io_handler_archetype {
  void operator()(std::error_code, std::size_t) {}
};
struct wait_handler_archetype {
  void operator()(std::error_code) {}
};
template <class Stream>
struct accept_handler_archetype {
  void operator()(std::error_code, Stream) {}
};

template <class T>
using stream_t = typename T::stream_type;
template <class T>
using acceptor_t = typename T::acceptor_type;
/// A gather write, as a connection makes it: several buffers at once.
using gather_buffers = std::array<asio::const_buffer, 2>;

// One detection trait per member the broker uses; each is false, never an error, when the member
// or anything it needs is missing. One limit: a member with a deduced return type (`auto`, as Asio
// style async functions often have) is instantiated to learn it, so an error inside its body (an
// acceptor whose streams are not the transport's stream_type) is a hard error there.

template <class T, class = void>
struct has_name : std::false_type {};
template <class T>
struct has_name<T, std::enable_if_t<std::is_convertible_v<decltype(T::name), std::string_view>>> : std::true_type {};

template <class T, class = void>
struct has_stream_type : std::false_type {};
template <class T>
struct has_stream_type<T, std::void_t<stream_t<T>>> : std::true_type {};

template <class T, class = void>
struct stream_has_executor_type : std::false_type {};
template <class T>
struct stream_has_executor_type<T, std::void_t<typename stream_t<T>::executor_type>> : std::true_type {};

template <class T, class = void>
struct stream_has_get_executor : std::false_type {};
template <class T>
struct stream_has_get_executor<T, std::void_t<decltype(std::declval<stream_t<T>&>().get_executor())>>
    : std::true_type {};

template <class T, class = void>
struct stream_has_async_read_some : std::false_type {};
template <class T>
struct stream_has_async_read_some<T, std::void_t<decltype(std::declval<stream_t<T>&>().async_read_some(
                                         std::declval<const asio::mutable_buffer&>(), io_handler_archetype{}))>>
    : std::true_type {};

template <class T, class = void>
struct stream_has_async_write_some : std::false_type {};
template <class T>
struct stream_has_async_write_some<T, std::void_t<decltype(std::declval<stream_t<T>&>().async_write_some(
                                          std::declval<const gather_buffers&>(), io_handler_archetype{}))>>
    : std::true_type {};

template <class T, class = void>
struct stream_has_close : std::false_type {};
template <class T>
struct stream_has_close<T, std::void_t<decltype(std::declval<stream_t<T>&>().close(std::declval<std::error_code&>()))>>
    : std::true_type {};

template <class T, class = void>
struct has_acceptor_type : std::false_type {};
template <class T>
struct has_acceptor_type<T, std::void_t<acceptor_t<T>>> : std::true_type {};

/// The broker accepts onto its connections' executor: async_accept(executor, handler(ec, stream)).
template <class T, class = void>
struct acceptor_has_async_accept : std::false_type {};
template <class T>
struct acceptor_has_async_accept<T, std::void_t<decltype(std::declval<acceptor_t<T>&>().async_accept(
                                        std::declval<const typename stream_t<T>::executor_type&>(),
                                        accept_handler_archetype<stream_t<T>>{}))>> : std::true_type {};

template <class T, class = void>
struct acceptor_has_close : std::false_type {};
template <class T>
struct acceptor_has_close<T, std::void_t<decltype(std::declval<acceptor_t<T>&>().close(std::declval<std::error_code&>()))>>
    : std::true_type {};

template <class T, class = void>
struct acceptor_has_is_open : std::false_type {};
template <class T>
struct acceptor_has_is_open<T, std::enable_if_t<std::is_convertible_v<decltype(std::declval<const acceptor_t<T>&>().is_open()), bool>>>
    : std::true_type {};

/// local_endpoint(ec).port(): the broker reports the bound port (port 0 picks one).
template <class T, class = void>
struct acceptor_has_local_endpoint : std::false_type {};
template <class T>
struct acceptor_has_local_endpoint<
    T, std::void_t<decltype(std::declval<const acceptor_t<T>&>().local_endpoint(std::declval<std::error_code&>()).port())>>
    : std::true_type {};

template <class T, class = void>
struct has_listen_options : std::false_type {};
template <class T>
struct has_listen_options<T, std::void_t<typename T::listen_options>> : std::true_type {};

template <class T, class = void>
struct has_make_acceptor : std::false_type {};
template <class T>
struct has_make_acceptor<
    T, std::enable_if_t<std::is_constructible_v<acceptor_t<T>, decltype(T::make_acceptor(
                                                                   std::declval<const asio::any_io_executor&>(),
                                                                   std::declval<const typename T::listen_options&>(),
                                                                   std::declval<std::error_code&>()))>>>
    : std::true_type {};

template <class T, class = void>
struct has_prepare : std::false_type {};
template <class T>
struct has_prepare<T, std::void_t<decltype(T::prepare(std::declval<stream_t<T>&>()))>> : std::true_type {};

// Optional abilities. A handshake and a graceful shutdown are the transport's static functions on
// its stream, not the stream's own members: only the transport knows their arguments (a TLS
// stream's server role, a WebSocket's upgrade), and the broker passes none.

template <class T, class = void>
struct has_async_handshake : std::false_type {};
template <class T>
struct has_async_handshake<T, std::void_t<decltype(T::async_handshake(std::declval<stream_t<T>&>(),
                                                                      wait_handler_archetype{}))>> : std::true_type {};

template <class T, class = void>
struct has_async_shutdown : std::false_type {};
template <class T>
struct has_async_shutdown<T, std::void_t<decltype(T::async_shutdown(std::declval<stream_t<T>&>(),
                                                                    wait_handler_archetype{}))>> : std::true_type {};

/// A socket's shutdown(shutdown_both, ec): closing runs it before close(ec), so the peer sees the
/// end of our bytes at once even while another handle to the socket stays open.
template <class Stream, class = void>
struct stream_has_shutdown : std::false_type {};
template <class Stream>
struct stream_has_shutdown<Stream, std::void_t<decltype(std::declval<Stream&>().shutdown(
                                       asio::socket_base::shutdown_both, std::declval<std::error_code&>()))>>
    : std::true_type {};

/// Runs `h(args...)` later through `io_ex`, on the handler's own executor and with its allocator:
/// how an operation completes from inside its initiating call.
template <class Executor, class Handler, class... Args>
void post_completion(const Executor& io_ex, Handler h, Args... args) {
  const auto ex = asio::get_associated_executor(h, io_ex);
  const auto alloc = asio::get_associated_allocator(h);
  asio::post(io_ex, asio::bind_executor(ex, asio::bind_allocator(alloc, [h = std::move(h), args...]() mutable {
                                          std::move(h)(args...);
                                        })));
}

/// A stream's readability wait and non-blocking read (a socket, the TLS stream, a WebSocket stream
/// over either): the connection then reads into a per-thread buffer, so an idle connection holds
/// none.
template <class Stream, class = void>
struct stream_waits_for_readability : std::false_type {};
template <class Stream>
struct stream_waits_for_readability<
    Stream, std::enable_if_t<std::is_convertible_v<decltype(std::declval<Stream&>().read_some(
                                                       std::declval<const asio::mutable_buffer&>(),
                                                       std::declval<std::error_code&>())),
                                                   std::size_t>,
                             std::void_t<decltype(std::declval<Stream&>().async_wait(
                                 asio::socket_base::wait_read, wait_handler_archetype{}))>>> : std::true_type {};
template <class T, class = void>
struct has_readability_wait : std::false_type {};
template <class T>
struct has_readability_wait<T, std::void_t<stream_t<T>>> : stream_waits_for_readability<stream_t<T>> {};

/// A remote endpoint with an IP address: the stream's own (a socket) or its lowest layer's (a TLS
/// stream over a socket).
template <class Stream, class = void>
struct stream_has_remote_endpoint : std::false_type {};
template <class Stream>
struct stream_has_remote_endpoint<Stream, std::void_t<decltype(std::declval<const Stream&>()
                                                                   .remote_endpoint(std::declval<std::error_code&>())
                                                                   .address()
                                                                   .to_string())>> : std::true_type {};
/// A client certificate's identity after the handshake: T::peer_certificate_of(stream&).
template <class T, class = void>
struct has_peer_certificate : std::false_type {};
template <class T>
struct has_peer_certificate<T, std::void_t<decltype(T::peer_certificate_of(std::declval<stream_t<T>&>()))>>
    : std::true_type {};

/// make_acceptor(ex, options, ec, std::string* what): `what` names the file or setting at fault.
template <class T, class = void>
struct has_make_acceptor_what : std::false_type {};
template <class T>
struct has_make_acceptor_what<
    T, std::enable_if_t<std::is_constructible_v<acceptor_t<T>, decltype(T::make_acceptor(
                                                                   std::declval<const asio::any_io_executor&>(),
                                                                   std::declval<const typename T::listen_options&>(),
                                                                   std::declval<std::error_code&>(),
                                                                   std::declval<std::string*>()))>>>
    : std::true_type {};

/// An acceptor that reads its credentials again: reload(ec, std::string* what).
template <class T, class = void>
struct acceptor_has_reload : std::false_type {};
template <class T>
struct acceptor_has_reload<T, std::void_t<decltype(std::declval<acceptor_t<T>&>().reload(
                                  std::declval<std::error_code&>(), std::declval<std::string*>()))>> : std::true_type {};

/// An acceptor whose streams bound their messages by the broker's packet limit:
/// limit_message_size(std::uint64_t max_packet_size), called once before the first accept.
template <class T, class = void>
struct acceptor_has_limit_message_size : std::false_type {};
template <class T>
struct acceptor_has_limit_message_size<T, std::void_t<decltype(std::declval<acceptor_t<T>&>().limit_message_size(
                                              std::declval<std::uint64_t>()))>> : std::true_type {};

template <class Stream, class = void>
struct lowest_layer_has_remote_endpoint : std::false_type {};
template <class Stream>
struct lowest_layer_has_remote_endpoint<
    Stream, std::void_t<decltype(std::declval<Stream&>().lowest_layer().remote_endpoint(std::declval<std::error_code&>()))>>
    : stream_has_remote_endpoint<std::remove_reference_t<decltype(std::declval<Stream&>().lowest_layer())>> {};

}  // namespace detail

/// Where a stream's peer is, for the hooks: its IP address as text and its port, from the
/// stream's remote_endpoint() or its lowest layer's; empty for a stream without one (the
/// in-memory transport) or when the socket can no longer tell.
struct peer_endpoint {
  std::string address;
  std::uint16_t port = 0;
};
template <class Stream>
peer_endpoint peer_of(Stream& s) {
  peer_endpoint p;
  std::error_code ec;
  if constexpr (detail::stream_has_remote_endpoint<Stream>::value) {
    const auto ep = s.remote_endpoint(ec);
    if (!ec) p = peer_endpoint{ep.address().to_string(), ep.port()};
  } else if constexpr (detail::lowest_layer_has_remote_endpoint<Stream>::value) {
    const auto ep = s.lowest_layer().remote_endpoint(ec);
    if (!ec) p = peer_endpoint{ep.address().to_string(), ep.port()};
  } else {
    (void)s;
  }
  return p;
}

/// A client certificate as the hooks see it (hooks::client_info::certificate_identity).
struct peer_certificate {
  std::string identity;               // empty without a certificate, or one without an identity
  bool identity_is_username = false;  // the listener's use_identity_as_username
};

/// What the broker asks of a transport policy (STYLE.md §3), one requirement each, so that a
/// failed check names the missing member.
namespace contract {
MQTTBROKER_REQUIREMENT(has_name, detail::has_name<T>::value);
MQTTBROKER_REQUIREMENT(has_stream_type, detail::has_stream_type<T>::value);
MQTTBROKER_REQUIREMENT(stream_has_executor_type, detail::stream_has_executor_type<T>::value);
MQTTBROKER_REQUIREMENT(stream_has_get_executor, detail::stream_has_get_executor<T>::value);
MQTTBROKER_REQUIREMENT(stream_has_async_read_some, detail::stream_has_async_read_some<T>::value);
MQTTBROKER_REQUIREMENT(stream_has_async_write_some, detail::stream_has_async_write_some<T>::value);
MQTTBROKER_REQUIREMENT(stream_has_close, detail::stream_has_close<T>::value);
MQTTBROKER_REQUIREMENT(has_acceptor_type, detail::has_acceptor_type<T>::value);
MQTTBROKER_REQUIREMENT(acceptor_has_async_accept, detail::acceptor_has_async_accept<T>::value);
MQTTBROKER_REQUIREMENT(acceptor_has_close, detail::acceptor_has_close<T>::value);
MQTTBROKER_REQUIREMENT(acceptor_has_is_open, detail::acceptor_has_is_open<T>::value);
MQTTBROKER_REQUIREMENT(acceptor_has_local_endpoint, detail::acceptor_has_local_endpoint<T>::value);
MQTTBROKER_REQUIREMENT(has_listen_options, detail::has_listen_options<T>::value);
MQTTBROKER_REQUIREMENT(has_make_acceptor, detail::has_make_acceptor<T>::value);
MQTTBROKER_REQUIREMENT(has_prepare, detail::has_prepare<T>::value);
}  // namespace contract

/// Optional abilities, used when present (server/connection.hpp):
/// - `static void async_handshake(stream_type&, Handler)`, Handler void(std::error_code): run once
///   after accept, before the connection reads its first byte (TLS, WebSocket upgrade). A failure
///   closes the stream and counts in broker_stats::handshake_failures; the CONNECT timeout, which
///   starts at accept, bounds it.
/// - `static void async_shutdown(stream_type&, Handler)`: a graceful end (TLS close_notify,
///   WebSocket close frame), run once when the broker closes a connection whose handshake (if any)
///   completed and which has no write in flight; a read may still be pending. The stream is closed
///   when it completes, or after server::graceful_shutdown_limit if it has not.
/// - a readability wait (`async_wait(wait_read, h)` plus a non-blocking `read_some(buffers, ec)`,
///   would_block when it has nothing): the connection waits, then reads into a per-thread buffer,
///   so an idle connection holds no read buffer. The wait completes when read_some has something
///   to give, which for a layered stream may already be held above the socket (TLS records read
///   ahead, bytes behind a WebSocket upgrade). Without it the connection reads with
///   async_read_some into a small pooled block of its own.
template <class T>
inline constexpr bool has_async_handshake_v = detail::has_async_handshake<T>::value;
template <class T>
inline constexpr bool has_async_shutdown_v = detail::has_async_shutdown<T>::value;
template <class T>
inline constexpr bool has_readability_wait_v = detail::has_readability_wait<T>::value;
/// - `static peer_certificate peer_certificate_of(stream_type&)`: the client certificate's
///   identity, asked once after the handshake when the hooks take a client_info (TLS).
template <class T>
inline constexpr bool has_peer_certificate_v = detail::has_peer_certificate<T>::value;
/// - `static acceptor_type make_acceptor(ex, options, ec, std::string* what)`: listen()'s message
///   then names the file or setting at fault.
template <class T>
inline constexpr bool has_make_acceptor_what_v = detail::has_make_acceptor_what<T>::value;
/// - `acceptor_type::reload(ec, std::string* what)`: broker::reload_certificates() reads the
///   listener's credentials again for the connections it accepts from then on.
template <class T>
inline constexpr bool acceptor_has_reload_v = detail::acceptor_has_reload<T>::value;
/// - `acceptor_type::limit_message_size(std::uint64_t)`: the broker passes its maximum packet
///   size once, before accepting (WebSocket bounds a message by it).
template <class T>
inline constexpr bool acceptor_has_limit_message_size_v = detail::acceptor_has_limit_message_size<T>::value;

namespace detail {

/// True, or one static_assert per missing member, the first one first; members of a missing
/// stream_type or acceptor_type are not reported again.
template <class T>
constexpr bool check_transport() {
  static_assert(contract::has_name<T>, "mqttbroker: the transport has no name (static constexpr const char* name)");
  static_assert(contract::has_stream_type<T>, "mqttbroker: the transport has no stream_type");
  static_assert(contract::has_acceptor_type<T>, "mqttbroker: the transport has no acceptor_type");
  static_assert(contract::has_listen_options<T>, "mqttbroker: the transport has no listen_options");
  if constexpr (contract::has_stream_type<T>) {
    static_assert(contract::stream_has_executor_type<T>, "mqttbroker: the transport's stream_type has no executor_type");
    static_assert(contract::stream_has_get_executor<T>, "mqttbroker: the transport's stream_type has no get_executor()");
    static_assert(contract::stream_has_async_read_some<T>,
                  "mqttbroker: the transport's stream_type has no async_read_some(buffer, handler(error_code, size_t))");
    static_assert(contract::stream_has_async_write_some<T>,
                  "mqttbroker: the transport's stream_type has no gather async_write_some(buffers, handler(error_code, size_t))");
    static_assert(contract::stream_has_close<T>, "mqttbroker: the transport's stream_type has no close(std::error_code&)");
    static_assert(contract::has_prepare<T>, "mqttbroker: the transport has no static prepare(stream_type&)");
  }
  if constexpr (contract::has_acceptor_type<T>) {
    if constexpr (contract::has_stream_type<T> && contract::stream_has_executor_type<T>) {
      static_assert(contract::acceptor_has_async_accept<T>,
                    "mqttbroker: the transport's acceptor_type has no async_accept(executor, handler(error_code, stream_type))");
    }
    static_assert(contract::acceptor_has_close<T>, "mqttbroker: the transport's acceptor_type has no close(std::error_code&)");
    static_assert(contract::acceptor_has_is_open<T>, "mqttbroker: the transport's acceptor_type has no is_open()");
    static_assert(contract::acceptor_has_local_endpoint<T>,
                  "mqttbroker: the transport's acceptor_type has no local_endpoint(std::error_code&) with a port()");
    if constexpr (contract::has_listen_options<T>) {
      static_assert(contract::has_make_acceptor<T>,
                    "mqttbroker: the transport has no static make_acceptor(executor, const listen_options&, "
                    "std::error_code&) returning its acceptor_type");
    }
  }
  return true;
}

}  // namespace detail
}  // namespace transport

#if MQTTBROKER_HAS_CONCEPTS
/// A transport policy: every requirement of transport::contract.
template <class T>
concept transport_policy =
    transport::contract::has_name<T> && transport::contract::has_stream_type<T> &&
    transport::contract::stream_has_executor_type<T> && transport::contract::stream_has_get_executor<T> &&
    transport::contract::stream_has_async_read_some<T> && transport::contract::stream_has_async_write_some<T> &&
    transport::contract::stream_has_close<T> && transport::contract::has_acceptor_type<T> &&
    transport::contract::acceptor_has_async_accept<T> && transport::contract::acceptor_has_close<T> &&
    transport::contract::acceptor_has_is_open<T> && transport::contract::acceptor_has_local_endpoint<T> &&
    transport::contract::has_listen_options<T> && transport::contract::has_make_acceptor<T> &&
    transport::contract::has_prepare<T>;
#endif

MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_TRANSPORT_TRAITS_HPP
