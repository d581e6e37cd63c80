#ifndef MQTTBROKER_HOOKS_HOOKS_HPP
#define MQTTBROKER_HOOKS_HOOKS_HPP

#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/message.hpp>

#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>

MQTTBROKER_BEGIN_NAMESPACE
namespace hooks {

/// What authenticate() sees of a CONNECT.
struct connect_info {
  std::string_view client_id;
  std::optional<std::string_view> username;
  std::optional<std::string_view> password;
  codec::protocol_version version;
};

/// authenticate()'s answer; each refusal maps to the CONNACK code of the client's version.
enum class auth_result {
  accept,
  bad_credentials,  // 3.1.1 return code 4, 5.0 0x86
  not_authorized,   // 3.1.1 return code 5, 5.0 0x87
};

/// No hooks: every check passes and nothing is observed. A hooks policy defines only the members
/// it needs, any of:
///   auth_result authenticate(const connect_info&);
///   bool authorize_publish(std::string_view client_id, const message&);
///   bool authorize_subscribe(std::string_view client_id, std::string_view filter, codec::qos);
///   void intercept(std::string_view client_id, message_ptr&);  // replace, or reset to drop
///   void on_connect(std::string_view client_id);
///   void on_disconnect(std::string_view client_id, bool graceful);
///   void on_subscribe(std::string_view client_id, std::string_view filter, codec::qos granted);
/// Each is detected on its own; an absent one compiles to nothing and its arguments are never
/// built. In-process publishes pass an empty client_id. Hooks run on the broker's handlers and
/// must not block.
struct none {};

namespace detail {

template <class H, class = void>
struct has_authenticate : std::false_type {};
template <class H>
struct has_authenticate<H, std::void_t<decltype(std::declval<H&>().authenticate(std::declval<const connect_info&>()))>>
    : std::true_type {};

template <class H, class = void>
struct has_authorize_publish : std::false_type {};
template <class H>
struct has_authorize_publish<H, std::void_t<decltype(std::declval<H&>().authorize_publish(
                                    std::declval<std::string_view>(), std::declval<const message&>()))>>
    : std::true_type {};

template <class H, class = void>
struct has_authorize_subscribe : std::false_type {};
template <class H>
struct has_authorize_subscribe<H, std::void_t<decltype(std::declval<H&>().authorize_subscribe(
                                      std::declval<std::string_view>(), std::declval<std::string_view>(),
                                      std::declval<codec::qos>()))>> : std::true_type {};

template <class H, class = void>
struct has_intercept : std::false_type {};
template <class H>
struct has_intercept<H, std::void_t<decltype(std::declval<H&>().intercept(std::declval<std::string_view>(),
                                                                          std::declval<message_ptr&>()))>>
    : std::true_type {};

template <class H, class = void>
struct has_on_connect : std::false_type {};
template <class H>
struct has_on_connect<H, std::void_t<decltype(std::declval<H&>().on_connect(std::declval<std::string_view>()))>>
    : std::true_type {};

template <class H, class = void>
struct has_on_disconnect : std::false_type {};
template <class H>
struct has_on_disconnect<H, std::void_t<decltype(std::declval<H&>().on_disconnect(std::declval<std::string_view>(),
                                                                                  std::declval<bool>()))>>
    : std::true_type {};

template <class H, class = void>
struct has_on_subscribe : std::false_type {};
template <class H>
struct has_on_subscribe<H, std::void_t<decltype(std::declval<H&>().on_subscribe(
                               std::declval<std::string_view>(), std::declval<std::string_view>(),
                               std::declval<codec::qos>()))>> : std::true_type {};

}  // namespace detail

template <class H>
inline constexpr bool has_authenticate_v = detail::has_authenticate<H>::value;
template <class H>
inline constexpr bool has_authorize_publish_v = detail::has_authorize_publish<H>::value;
template <class H>
inline constexpr bool has_authorize_subscribe_v = detail::has_authorize_subscribe<H>::value;
template <class H>
inline constexpr bool has_intercept_v = detail::has_intercept<H>::value;
template <class H>
inline constexpr bool has_on_connect_v = detail::has_on_connect<H>::value;
template <class H>
inline constexpr bool has_on_disconnect_v = detail::has_on_disconnect<H>::value;
template <class H>
inline constexpr bool has_on_subscribe_v = detail::has_on_subscribe<H>::value;

}  // namespace hooks
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_HOOKS_HOOKS_HPP
