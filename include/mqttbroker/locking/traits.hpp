#ifndef MQTTBROKER_LOCKING_TRAITS_HPP
#define MQTTBROKER_LOCKING_TRAITS_HPP

#include <mqttbroker/config.hpp>

#include <cstdint>
#include <type_traits>
#include <utility>

MQTTBROKER_BEGIN_NAMESPACE
namespace locking {

/// A locking policy's per-session lock: its session_mutex_type, else its mutex_type (a policy
/// written before sessions had a lock type of their own).
template <class Locking, class = void>
struct session_mutex_of {
  using type = typename Locking::mutex_type;
};
template <class Locking>
struct session_mutex_of<Locking, std::void_t<typename Locking::session_mutex_type>> {
  using type = typename Locking::session_mutex_type;
};
template <class Locking>
using session_mutex_t = typename session_mutex_of<Locking>::type;

namespace detail {

template <class T, class = void>
struct has_thread_safe : std::false_type {};
template <class T>
struct has_thread_safe<T, std::enable_if_t<std::is_same_v<std::remove_cv_t<decltype(T::thread_safe)>, bool>,
                                           std::void_t<std::bool_constant<T::thread_safe>>>> : std::true_type {};

template <class T, class = void>
struct has_mutex_type : std::false_type {};
template <class T>
struct has_mutex_type<T, std::void_t<typename T::mutex_type>> : std::true_type {};

/// lock() and unlock(): std::lock_guard, for every change.
template <class M, class = void>
struct locks : std::false_type {};
template <class M>
struct locks<M, std::void_t<decltype(std::declval<M&>().lock()), decltype(std::declval<M&>().unlock())>>
    : std::true_type {};

/// lock_shared() and unlock_shared(): std::shared_lock, for routing, which only reads.
template <class M, class = void>
struct locks_shared : std::false_type {};
template <class M>
struct locks_shared<M, std::void_t<decltype(std::declval<M&>().lock_shared()),
                                   decltype(std::declval<M&>().unlock_shared())>> : std::true_type {};

template <class T, class = void>
struct mutex_locks : std::false_type {};
template <class T>
struct mutex_locks<T, std::enable_if_t<locks<typename T::mutex_type>::value>> : std::true_type {};

template <class T, class = void>
struct mutex_locks_shared : std::false_type {};
template <class T>
struct mutex_locks_shared<T, std::enable_if_t<locks_shared<typename T::mutex_type>::value>> : std::true_type {};

/// counter_type<T>: value-initialised, fetch_add(n) from several threads, load() for statistics.
template <class T, class = void>
struct has_counter_type : std::false_type {};
template <class T>
struct has_counter_type<
    T, std::enable_if_t<std::is_default_constructible_v<typename T::template counter_type<std::uint64_t>> &&
                            std::is_convertible_v<decltype(std::declval<const typename T::template counter_type<
                                                               std::uint64_t>&>()
                                                               .load()),
                                                  std::uint64_t>,
                        std::void_t<decltype(std::declval<typename T::template counter_type<std::uint64_t>&>()
                                                 .fetch_add(std::uint64_t{1}))>>> : std::true_type {};

/// The optional session_mutex_type locks exclusively; absent, mutex_type serves.
template <class T, class = void>
struct session_mutex_locks : std::true_type {};
template <class T>
struct session_mutex_locks<T, std::void_t<typename T::session_mutex_type>>
    : locks<typename T::session_mutex_type> {};

/// strand_type<Executor> and make_strand(executor): where handlers that must not run at once
/// (one connection's) run. Asked with the broker's executor types, which this header cannot name.
template <class T, class Executor, class = void>
struct has_strand : std::false_type {};
template <class T, class Executor>
struct has_strand<T, Executor,
                  std::enable_if_t<std::is_convertible_v<decltype(T::make_strand(std::declval<const Executor&>())),
                                                         typename T::template strand_type<Executor>>>>
    : std::true_type {};

}  // namespace detail

/// What the broker asks of a locking policy (STYLE.md §3), one requirement each.
namespace contract {
MQTTBROKER_REQUIREMENT(has_thread_safe, detail::has_thread_safe<T>::value);
MQTTBROKER_REQUIREMENT(has_mutex_type, detail::has_mutex_type<T>::value);
MQTTBROKER_REQUIREMENT(mutex_locks, detail::mutex_locks<T>::value);
MQTTBROKER_REQUIREMENT(mutex_locks_shared, detail::mutex_locks_shared<T>::value);
MQTTBROKER_REQUIREMENT(has_counter_type, detail::has_counter_type<T>::value);
MQTTBROKER_REQUIREMENT(session_mutex_locks, detail::session_mutex_locks<T>::value);
#if MQTTBROKER_HAS_CONCEPTS
template <class T, class Executor>
concept has_strand_for = detail::has_strand<T, Executor>::value;
#else
template <class T, class Executor>
inline constexpr bool has_strand_for = detail::has_strand<T, Executor>::value;
#endif
}  // namespace contract

namespace detail {

/// True, or one static_assert per missing member; the strand is checked for each of `Executors`.
template <class T, class... Executors>
constexpr bool check_locking() {
  static_assert(contract::has_thread_safe<T>, "mqttbroker: the locking policy has no static constexpr bool thread_safe");
  static_assert(contract::has_mutex_type<T>, "mqttbroker: the locking policy has no mutex_type");
  if constexpr (contract::has_mutex_type<T>) {
    static_assert(contract::mutex_locks<T>, "mqttbroker: the locking policy's mutex_type has no lock() and unlock()");
    static_assert(contract::mutex_locks_shared<T>,
                  "mqttbroker: the locking policy's mutex_type has no lock_shared() and unlock_shared()");
  }
  static_assert(contract::has_counter_type<T>,
                "mqttbroker: the locking policy has no counter_type<T> with fetch_add(T) and a const load()");
  static_assert(contract::session_mutex_locks<T>,
                "mqttbroker: the locking policy's session_mutex_type has no lock() and unlock()");
  static_assert((contract::has_strand_for<T, Executors> && ...),
                "mqttbroker: the locking policy has no strand_type<Executor> and static make_strand(const Executor&)");
  return true;
}

}  // namespace detail
}  // namespace locking

#if MQTTBROKER_HAS_CONCEPTS
/// A locking policy: every requirement of locking::contract, the strand for each of `Executors`
/// (none: the parts that need no executor type).
template <class T, class... Executors>
concept locking_policy = locking::contract::has_thread_safe<T> && locking::contract::has_mutex_type<T> &&
                         locking::contract::mutex_locks<T> && locking::contract::mutex_locks_shared<T> &&
                         locking::contract::has_counter_type<T> && locking::contract::session_mutex_locks<T> &&
                         (locking::contract::has_strand_for<T, Executors> && ...);
#endif

MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_LOCKING_TRAITS_HPP
