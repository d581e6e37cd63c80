#ifndef MQTTBROKER_HOOKS_HOOKS_HPP
#define MQTTBROKER_HOOKS_HOOKS_HPP

#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/config.hpp>
#include <mqttbroker/error.hpp>
#include <mqttbroker/log.hpp>
#include <mqttbroker/message.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

MQTTBROKER_BEGIN_NAMESPACE
namespace hooks {

/// The listener a connection came in on, as the broker keeps it for as long as it runs.
struct listener_info {
  std::size_t index = 0;       // in the order of broker::listen() calls, from 0
  std::string_view transport;  // the transport's name: "tcp", "memory", ...
  std::uint16_t port = 0;      // the bound port; 0 for a transport without ports
};

/// Who a client is, as the hooks see it. The views are valid for the call only: a hook copies
/// what it keeps.
struct client_info {
  std::string_view client_id;  // empty for the broker's own and the host's in-process messages
  std::optional<std::string_view> username;
  codec::protocol_version version = codec::protocol_version::v3_1_1;
  std::string_view peer_address;  // as text ("192.0.2.7", "::1"); empty when the transport has none
  std::uint16_t peer_port = 0;
  const listener_info* listener = nullptr;  // null where no listener is involved
  /// The verified client certificate's identity (TLS): its subject CN, else its first DNS or email
  /// Subject Alternative Name; empty without a client certificate or on a transport without one.
  std::string_view certificate_identity;
};

/// What authenticate() and on_connect_refused() see of a CONNECT: the client and its password.
/// The client identifier is the one the broker assigned when the client sent none.
struct connect_info : client_info {
  std::optional<std::string_view> password;
};

/// authenticate()'s answer; each refusal maps to the CONNACK code of the client's version.
enum class auth_result {
  accept,
  bad_credentials,  // 3.1.1 return code 4, 5.0 0x86
  not_authorized,   // 3.1.1 return code 5, 5.0 0x87
};

/// redirect()'s answer: where the client is to go instead (5.0 section 4.11).
struct redirection {
  /// The Server Reference sent to 5.0 clients ("host:port", or several separated by spaces, as
  /// the host's clients understand it); left out when empty, not UTF-8, or too large for the
  /// client's Maximum Packet Size.
  std::string server_reference;
  /// false: 0x9C Use another server (for now); true: 0x9D Server moved (for good).
  bool permanent = false;
};

/// A completion a hook answers through, once (calls after the first do nothing), from any
/// thread. A reply destroyed without an answer leaves its client to the exchange's time limit.
template <class Answer>
class basic_reply {
 public:
  /// What a reply answers to: the broker's pending CONNECT or AUTH step.
  class target {
   public:
    virtual ~target() = default;
    virtual void complete(Answer a) = 0;
  };

  basic_reply() noexcept = default;
  explicit basic_reply(std::shared_ptr<target> t) noexcept : target_(std::move(t)) {}

  /// Answers; calls after the first do nothing.
  void operator()(Answer a) {
    if (auto t = std::move(target_)) t->complete(std::move(a));
  }
  /// Whether it still has to answer.
  explicit operator bool() const noexcept { return static_cast<bool>(target_); }

 private:
  std::shared_ptr<target> target_;
};

/// The completion an asynchronous authenticate() answers through, once, from any thread, at any
/// time within the broker's CONNECT timeout (after it the client is gone and the answer is
/// ignored). Until it answers, the broker reads nothing more from that client and serves all
/// others. A reply destroyed without an answer leaves the client to the CONNECT timeout. Answer or
/// drop every reply before the broker is destroyed.
using auth_reply = basic_reply<auth_result>;

// ---- 5.0 enhanced authentication (section 4.12)

/// Where an enhanced authentication stands when authenticate_enhanced() is asked.
enum class auth_stage : std::uint8_t {
  connect,           // the CONNECT that named an Authentication Method
  continuation,      // the client's AUTH 0x18, answering the broker's AUTH 0x18
  reauthentication,  // the client's AUTH 0x19 after CONNACK: a new exchange on the same connection
};

/// What a method keeps between steps on one connection (a nonce, the messages so far, who
/// authenticated): derive from it. The broker keeps the latest one an answer gave until the
/// connection closes and hands it to every later step, re-authentications included.
struct auth_state {
  virtual ~auth_state() = default;
};

/// One step of an enhanced authentication as authenticate_enhanced() sees it. The views are
/// valid for the call only: a hook that answers later copies what it needs.
struct auth_exchange {
  connect_info client;  // at the CONNECT and its continuations with the password; after CONNACK without
  auth_stage stage = auth_stage::connect;
  std::string_view method;               // the Authentication Method, the same on every step [MQTT-4.12.0-5]
  std::optional<std::string_view> data;  // the Authentication Data the client sent, if any
  std::uint32_t step = 1;                // 1 for the packet that starts an exchange, then 2, 3, ...
  std::shared_ptr<auth_state> state;     // what an earlier answer left on this connection; null at first
};

/// authenticate_enhanced()'s answer to one step.
struct auth_step {
  enum class kind : std::uint8_t {
    next,     // AUTH 0x18 with `data`; the client answers with AUTH 0x18
    success,  // CONNACK 0x00, after a re-authentication AUTH 0x00; `data` goes with it
    failure,  // CONNACK `reason`, after a re-authentication DISCONNECT `reason`; then the close
  };
  kind what = kind::failure;
  reason_code reason = reason_code::not_authorized;
  std::optional<std::string> data;    // the broker's Authentication Data, if any
  std::shared_ptr<auth_state> state;  // when set, replaces what the connection keeps

  /// More is needed: `data` goes to the client in AUTH 0x18 [MQTT-4.12.0-2].
  static auth_step next(std::string data, std::shared_ptr<auth_state> s = nullptr) {
    return {kind::next, reason_code::continue_authentication, std::move(data), std::move(s)};
  }
  /// Authenticated, with `data` as the final Authentication Data if given.
  static auth_step success(std::optional<std::string> data = std::nullopt, std::shared_ptr<auth_state> s = nullptr) {
    return {kind::success, reason_code::success, std::move(data), std::move(s)};
  }
  /// Refused with `reason`: 0x86 (bad credentials), 0x87 (not authorized), 0x8C (a method this
  /// host does not support [MQTT-4.12.0-1]), ... A code CONNACK (or, after CONNACK, DISCONNECT)
  /// cannot carry becomes 0x87. `data` goes with a refused CONNECT (a SCRAM "e=" message, say);
  /// DISCONNECT has no place for it.
  static auth_step failure(reason_code reason, std::optional<std::string> data = std::nullopt) {
    return {kind::failure, reason, std::move(data), nullptr};
  }
};

/// The completion authenticate_enhanced() answers each step through: once, from any thread, at
/// any time within the exchange's limit (before CONNACK the CONNECT timeout, after it
/// broker_options::reauthentication_timeout; after it the client is gone, or the answer is
/// ignored). Until it answers, the broker reads nothing more from that client and serves all
/// others. Answer or drop every reply before the broker is destroyed.
using auth_step_reply = basic_reply<auth_step>;

/// No hooks: every check passes and nothing is observed. A hooks policy defines only the members
/// it needs, any of:
///   auth_result authenticate(const connect_info&);                // answers at once, or
///   void authenticate(const connect_info&, auth_reply);           // answers later (not both)
///   bool authorize_publish(const client_info&, const message&);
///   bool authorize_subscribe(const client_info&, std::string_view filter, codec::qos);
///   bool authorize_read(const client_info& subscriber, const message&);  // each delivery
///   bool reads_checked();  // with authorize_read: false skips it (and building its arguments)
///   void intercept(std::string_view client_id, message_ptr&);  // replace, or reset to drop
///   void on_connect(const client_info&);
///   void on_disconnect(const client_info&, bool graceful);
///   void on_subscribe(const client_info&, std::string_view filter, codec::qos granted);
///   void on_unsubscribe(const client_info&, std::string_view filter);  // one that existed
///   void on_connect_refused(const connect_info&, reason_code);  // the 5.0 code, also for 3.1.1
///   void log(log_level, std::string_view message);  // up to broker_options::log_level
///   void authenticate_enhanced(const auth_exchange&, auth_step_reply);  // 5.0 AUTH exchanges
///   std::optional<redirection> redirect(const connect_info&);  // after authentication
/// Each is detected on its own; an absent one compiles to nothing and its arguments are never
/// built, and a broker whose hooks take no client_info keeps none per connection. A member with
/// one of these names that cannot be called so, or returns another type, is a compile error, not a
/// hook silently skipped. The policy must be a non-final class. intercept() sees the publisher's
/// client identifier only, as it also runs for wills and in-process publishes (an empty
/// client_id), after the connection they came from may be gone. Hooks run on the broker's
/// handlers and must not block: an authentication that asks a database or a remote service takes
/// the auth_reply form. authorize_read() sees every message the broker is about to give a client
/// session, live, queued for an offline session or retained at a SUBSCRIBE; a refusal drops it
/// for that session alone (counted in broker_stats::deliveries_denied). It sees the session's
/// client identifier, username and protocol version also while the client is offline; for a
/// session restored by a durable store whose client has not connected since, the username is not
/// known, and such deliveries are not checked until the client connects again. reads_checked(),
/// when defined, is asked first on each delivery: false skips authorize_read there, for hooks
/// that check reads only when configured to (an ACL that may be absent). A CONNECT with an Authentication Method goes to authenticate_enhanced()
/// alone (without it, it is refused with CONNACK 0x8C), one without to authenticate(). redirect()
/// sees every CONNECT that authentication accepted (without its password), before the session is
/// touched: an answer refuses it with CONNACK 0x9C or 0x9D and its Server Reference (5.0) or
/// CONNACK 3, Server unavailable (3.1.1).
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

/// authenticate in its two forms: either one, not both.
template <class H, class = void>
struct answers_later : std::false_type {};
template <class H>
struct answers_later<H, std::enable_if_t<std::is_same_v<
                            decltype(std::declval<H&>().authenticate(std::declval<const connect_info&>(),
                                                                     std::declval<auth_reply>())),
                            void>>> : std::true_type {};
template <class H, class = void>
struct answers_now : std::false_type {};
template <class H>
struct answers_now<H, std::enable_if_t<std::is_same_v<
                          decltype(std::declval<H&>().authenticate(std::declval<const connect_info&>())),
                          auth_result>>> : std::true_type {};
/// The asynchronous authenticate: authenticate_hook's other form.
template <class H>
struct authenticate_later_hook {
  static constexpr bool value = answers_later<H>::value && !answers_now<H>::value;
};

/// Detection of one hook, by name and by signature apart:
/// - names_<hook><H>: H declares a member of that name, of any kind (overloads, templates, data
///   members, inherited or private ones too). A class deriving from H and from a probe that
///   declares the name finds it ambiguous exactly when H declares it as well. H must be a class
///   that can be derived from (`searchable`).
/// - accepts_<hook><H>: a call with the documented arguments compiles on an H& and returns exactly
///   the documented type, and `extra` holds.
/// - <hook>_hook<H>::value: the broker calls the hook. A declared name that is not accepted fails
///   to compile here, naming the hook and its signature, unless `other_form` (a second accepted
///   form, found by its own trait) holds.
#define MQTTBROKER_HOOK(hook, result, extra, other_form, signature, ...)                                                        \
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
    static_assert(value || (other_form) || !declares<names_##hook, H>::value,                                    \
                  "mqttbroker: hook " #hook " has the wrong signature; expected " signature);                       \
  };

/// An intercept that takes its message by value or const reference could not replace or drop it.
template <class H, class = void>
struct intercept_takes_copy : std::false_type {};
template <class H>
struct intercept_takes_copy<H, std::void_t<decltype(std::declval<H&>().intercept(std::declval<std::string_view>(),
                                                                                 std::declval<message_ptr>()))>>
    : std::true_type {};

MQTTBROKER_HOOK(authenticate, auth_result, !answers_later<H>::value, authenticate_later_hook<H>::value,
                "auth_result authenticate(const hooks::connect_info&) or "
                "void authenticate(const hooks::connect_info&, hooks::auth_reply), not both",
                std::declval<const connect_info&>())
MQTTBROKER_HOOK(authorize_publish, bool, true, false,
                "bool authorize_publish(const hooks::client_info&, const message&)",
                std::declval<const client_info&>(), std::declval<const message&>())
MQTTBROKER_HOOK(authorize_subscribe, bool, true, false,
                "bool authorize_subscribe(const hooks::client_info&, std::string_view filter, codec::qos)",
                std::declval<const client_info&>(), std::declval<std::string_view>(), std::declval<codec::qos>())
MQTTBROKER_HOOK(authorize_read, bool, true, false,
                "bool authorize_read(const hooks::client_info& subscriber, const message&)",
                std::declval<const client_info&>(), std::declval<const message&>())
MQTTBROKER_HOOK(intercept, void, !intercept_takes_copy<H>::value, false,
                "void intercept(std::string_view client_id, message_ptr&), the message by non-const reference",
                std::declval<std::string_view>(), std::declval<message_ptr&>())
MQTTBROKER_HOOK(on_connect, void, true, false, "void on_connect(const hooks::client_info&)",
                std::declval<const client_info&>())
MQTTBROKER_HOOK(on_disconnect, void, true, false, "void on_disconnect(const hooks::client_info&, bool graceful)",
                std::declval<const client_info&>(), std::declval<bool>())
MQTTBROKER_HOOK(on_subscribe, void, true, false,
                "void on_subscribe(const hooks::client_info&, std::string_view filter, codec::qos granted)",
                std::declval<const client_info&>(), std::declval<std::string_view>(), std::declval<codec::qos>())
MQTTBROKER_HOOK(on_unsubscribe, void, true, false, "void on_unsubscribe(const hooks::client_info&, std::string_view filter)",
                std::declval<const client_info&>(), std::declval<std::string_view>())
MQTTBROKER_HOOK(on_connect_refused, void, true, false,
                "void on_connect_refused(const hooks::connect_info&, reason_code)",
                std::declval<const connect_info&>(), std::declval<reason_code>())
MQTTBROKER_HOOK(log, void, true, false, "void log(log_level, std::string_view message)",
                std::declval<log_level>(), std::declval<std::string_view>())
MQTTBROKER_HOOK(authenticate_enhanced, void, true, false,
                "void authenticate_enhanced(const hooks::auth_exchange&, hooks::auth_step_reply)",
                std::declval<const auth_exchange&>(), std::declval<auth_step_reply>())
MQTTBROKER_HOOK(redirect, std::optional<redirection>, true, false,
                "std::optional<hooks::redirection> redirect(const hooks::connect_info&)",
                std::declval<const connect_info&>())
#undef MQTTBROKER_HOOK

/// reads_checked(), authorize_read's companion: a member callable without arguments on an H&
/// that returns exactly bool. (Written out: the macro above needs at least one argument.)
template <class H, class = void>
struct reads_checked_hook : std::false_type {};
template <class H>
struct reads_checked_hook<H, std::enable_if_t<std::is_same_v<decltype(std::declval<H&>().reads_checked()), bool>>>
    : std::true_type {};

/// True, or a static_assert for each hook whose name is declared with another signature.
template <class H>
constexpr bool check_hooks() {
  static_assert(searchable<H>,
                "mqttbroker: the hooks policy must be a non-final class (its hooks are found by deriving from it)");
  // Instantiating each hook's trait is what checks it.
  constexpr bool found[] = {authenticate_hook<H>::value,        authorize_publish_hook<H>::value,
                            authorize_subscribe_hook<H>::value, authorize_read_hook<H>::value,
                            reads_checked_hook<H>::value,
                            intercept_hook<H>::value,
                            on_connect_hook<H>::value,          on_disconnect_hook<H>::value,
                            on_subscribe_hook<H>::value,        on_unsubscribe_hook<H>::value,
                            on_connect_refused_hook<H>::value,  log_hook<H>::value,
                            authenticate_enhanced_hook<H>::value, redirect_hook<H>::value};
  return sizeof(found) != 0;
}

}  // namespace detail

/// Whether a connection keeps who its client is (username, peer, listener): for every hook but
/// intercept, which takes the client identifier alone.
template <class H>
inline constexpr bool needs_client_info_v =
    detail::authenticate_hook<H>::value || detail::authenticate_later_hook<H>::value ||
    detail::authorize_publish_hook<H>::value || detail::authorize_subscribe_hook<H>::value ||
    detail::authorize_read_hook<H>::value || detail::on_connect_hook<H>::value ||
    detail::on_disconnect_hook<H>::value || detail::on_subscribe_hook<H>::value ||
    detail::on_unsubscribe_hook<H>::value || detail::on_connect_refused_hook<H>::value ||
    detail::authenticate_enhanced_hook<H>::value || detail::redirect_hook<H>::value;

template <class H>
inline constexpr bool has_authenticate_v = detail::authenticate_hook<H>::value;
template <class H>
inline constexpr bool has_authenticate_later_v = detail::authenticate_later_hook<H>::value;
template <class H>
inline constexpr bool has_authorize_publish_v = detail::authorize_publish_hook<H>::value;
template <class H>
inline constexpr bool has_authorize_subscribe_v = detail::authorize_subscribe_hook<H>::value;
template <class H>
inline constexpr bool has_authorize_read_v = detail::authorize_read_hook<H>::value;
template <class H>
inline constexpr bool has_reads_checked_v = detail::reads_checked_hook<H>::value;
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
template <class H>
inline constexpr bool has_log_v = detail::log_hook<H>::value;
template <class H>
inline constexpr bool has_authenticate_enhanced_v = detail::authenticate_enhanced_hook<H>::value;
template <class H>
inline constexpr bool has_redirect_v = detail::redirect_hook<H>::value;

}  // namespace hooks
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_HOOKS_HOOKS_HPP
