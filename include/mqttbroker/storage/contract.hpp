#ifndef MQTTBROKER_STORAGE_CONTRACT_HPP
#define MQTTBROKER_STORAGE_CONTRACT_HPP

#include <mqttbroker/config.hpp>

#include <type_traits>

MQTTBROKER_BEGIN_NAMESPACE
namespace storage {
namespace detail {

/// `static constexpr bool durable`: a bool known at compile time, as the broker compiles
/// snapshots in or out on it (`if constexpr`).
template <class T, class = void>
struct has_durable : std::false_type {};
template <class T>
struct has_durable<T, std::enable_if_t<std::is_same_v<std::remove_cv_t<decltype(T::durable)>, bool>,
                                       std::void_t<std::bool_constant<T::durable>>>> : std::true_type {};

}  // namespace detail

/// What the broker asks of a storage policy (STYLE.md §3). So far only whether it is durable; the
/// operations of a durable backend join when the protocol engine emits them.
namespace contract {
MQTTBROKER_REQUIREMENT(has_durable, detail::has_durable<T>::value);
}  // namespace contract

namespace detail {

/// True, or a static_assert naming what is missing.
template <class T>
constexpr bool check_storage() {
  static_assert(contract::has_durable<T>, "mqttbroker: the storage has no static constexpr bool durable");
  return true;
}

}  // namespace detail
}  // namespace storage

#if MQTTBROKER_HAS_CONCEPTS
/// A storage policy: every requirement of storage::contract.
template <class T>
concept storage_policy = storage::contract::has_durable<T>;
#endif

MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_STORAGE_CONTRACT_HPP
