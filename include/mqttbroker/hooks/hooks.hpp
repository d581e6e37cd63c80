#ifndef MQTTBROKER_HOOKS_HOOKS_HPP
#define MQTTBROKER_HOOKS_HOOKS_HPP

#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/error.hpp>
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
///   void on_unsubscribe(std::string_view client_id, std::string_view filter);  // one that existed
///   void on_connect_refused(const connect_info&, reason_code);  // the 5.0 code, also for 3.1.1
/// Each is detected on its own; an absent one compiles to nothing and its arguments are never
/// built. A member with one of these names that cannot be called so, or returns another type, is a
/// compile error, not a hook silently skipped. The policy must be a non-final class. In-process
/// publishes pass an empty client_id. Hooks run on the broker's handlers and must not block.
struct none {};

namespace detail {

/// Whether H can be searched for hook names: the name probes below derive from it.
template <class H>
inline constexpr bool searchable = std::is_class_v<H> && !std::is_final_v<H>;

/// Whether a name probe `Names` finds the name in H; false for an H it cannot search.
template <template <class, class> class Names, class H, bool = searchable<H>>
struct declares : std::bool_constant<Names<H, void>::value> {};
template <template <class, class> class Names, class H>
struct declares<Names, H, false> : std::false_type {};

/// Detection of one hook, by name and by signature apart:
/// - names_<hook><H>: H declares a member of that name, of any kind (overloads, templates, data
///   members, inherited or private ones too). A class deriving from H and from a probe that
///   declares the name finds it ambiguous exactly when H declares it as well. H must be a class
///   that can be derived from (`searchable`).
/// - accepts_<hook><H>: a call with the documented arguments compiles on an H& and returns exactly
///   the documented type, and `extra` holds.
/// - <hook>_hook<H>::value: the broker calls the hook. A declared name that is not accepted fails
///   to compile here, naming the hook and its signature.
#define MQTTBROKER_HOOK(hook, result, extra, signature, ...)                                                        \
  struct hook##_probe {                                                                                             \
    void hook();                                                                                                    \
  };                                                                                                                \
  template <class H>                                                                                                \
  struct hook##_probed : H, hook##_probe {};                                                                        \
  template <class H, class = void>                                                                                  \
  struct names_##hook : std::true_type {};                                                                          \
  template <class H>                                                                                                \
  struct names_##hook<H, std::void_t<decltype(&hook##_probed<H>::hook)>> : std::false_type {};                      \
  template <class H, class = void>                                                                                  \
  struct accepts_##hook : std::false_type {};                                                                       \
  template <class H>                                                                                                \
  struct accepts_##hook<H, std::enable_if_t<std::is_same_v<decltype(std::declval<H&>().hook(__VA_ARGS__)), result>>> \
      : std::bool_constant<(extra)> {};                                                                             \
  template <class H>                                                                                                \
  struct hook##_hook {                                                                                              \
    static constexpr bool value = accepts_##hook<H>::value;                                                         \
    static_assert(value || !declares<names_##hook, H>::value,                                                       \
                  "mqttbroker: hook " #hook " has the wrong signature; expected " signature);                       \
  };

/// An intercept that takes its message by value or const reference could not replace or drop it.
template <class H, class = void>
struct intercept_takes_copy : std::false_type {};
template <class H>
struct intercept_takes_copy<H, std::void_t<decltype(std::declval<H&>().intercept(std::declval<std::string_view>(),
                                                                                 std::declval<message_ptr>()))>>
    : std::true_type {};

MQTTBROKER_HOOK(authenticate, auth_result, true, "auth_result authenticate(const hooks::connect_info&)",
                std::declval<const connect_info&>())
MQTTBROKER_HOOK(authorize_publish, bool, true,
                "bool authorize_publish(std::string_view client_id, const message&)",
                std::declval<std::string_view>(), std::declval<const message&>())
MQTTBROKER_HOOK(authorize_subscribe, bool, true,
                "bool authorize_subscribe(std::string_view client_id, std::string_view filter, codec::qos)",
                std::declval<std::string_view>(), std::declval<std::string_view>(), std::declval<codec::qos>())
MQTTBROKER_HOOK(intercept, void, !intercept_takes_copy<H>::value,
                "void intercept(std::string_view client_id, message_ptr&), the message by non-const reference",
                std::declval<std::string_view>(), std::declval<message_ptr&>())
MQTTBROKER_HOOK(on_connect, void, true, "void on_connect(std::string_view client_id)",
                std::declval<std::string_view>())
MQTTBROKER_HOOK(on_disconnect, void, true, "void on_disconnect(std::string_view client_id, bool graceful)",
                std::declval<std::string_view>(), std::declval<bool>())
MQTTBROKER_HOOK(on_subscribe, void, true,
                "void on_subscribe(std::string_view client_id, std::string_view filter, codec::qos granted)",
                std::declval<std::string_view>(), std::declval<std::string_view>(), std::declval<codec::qos>())
MQTTBROKER_HOOK(on_unsubscribe, void, true, "void on_unsubscribe(std::string_view client_id, std::string_view filter)",
                std::declval<std::string_view>(), std::declval<std::string_view>())
MQTTBROKER_HOOK(on_connect_refused, void, true,
                "void on_connect_refused(const hooks::connect_info&, reason_code)",
                std::declval<const connect_info&>(), std::declval<reason_code>())
#undef MQTTBROKER_HOOK

/// True, or a static_assert for each hook whose name is declared with another signature.
template <class H>
constexpr bool check_hooks() {
  static_assert(searchable<H>,
                "mqttbroker: the hooks policy must be a non-final class (its hooks are found by deriving from it)");
  // Instantiating each hook's trait is what checks it.
  constexpr bool found[] = {authenticate_hook<H>::value,        authorize_publish_hook<H>::value,
                            authorize_subscribe_hook<H>::value, intercept_hook<H>::value,
                            on_connect_hook<H>::value,          on_disconnect_hook<H>::value,
                            on_subscribe_hook<H>::value,        on_unsubscribe_hook<H>::value,
                            on_connect_refused_hook<H>::value};
  return sizeof(found) != 0;
}

}  // namespace detail

template <class H>
inline constexpr bool has_authenticate_v = detail::authenticate_hook<H>::value;
template <class H>
inline constexpr bool has_authorize_publish_v = detail::authorize_publish_hook<H>::value;
template <class H>
inline constexpr bool has_authorize_subscribe_v = detail::authorize_subscribe_hook<H>::value;
template <class H>
inline constexpr bool has_intercept_v = detail::intercept_hook<H>::value;
template <class H>
inline constexpr bool has_on_connect_v = detail::on_connect_hook<H>::value;
template <class H>
inline constexpr bool has_on_disconnect_v = detail::on_disconnect_hook<H>::value;
template <class H>
inline constexpr bool has_on_subscribe_v = detail::on_subscribe_hook<H>::value;
template <class H>
inline constexpr bool has_on_unsubscribe_v = detail::on_unsubscribe_hook<H>::value;
template <class H>
inline constexpr bool has_on_connect_refused_v = detail::on_connect_refused_hook<H>::value;

}  // namespace hooks
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_HOOKS_HOOKS_HPP
