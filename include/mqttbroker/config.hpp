#ifndef MQTTBROKER_CONFIG_HPP
#define MQTTBROKER_CONFIG_HPP

#include <mqttbroker/version.hpp>

#if defined(_MSVC_LANG)
#define MQTTBROKER_CPLUSPLUS _MSVC_LANG
#else
#define MQTTBROKER_CPLUSPLUS __cplusplus
#endif

#if MQTTBROKER_CPLUSPLUS < 201703L
#error "mqttbroker requires C++17 or later"
#endif

// Concept checks are extra diagnostics on C++20; the same traits back static_asserts on C++17.
#if MQTTBROKER_CPLUSPLUS >= 202002L && defined(__cpp_concepts) && __cpp_concepts >= 201907L
#define MQTTBROKER_HAS_CONCEPTS 1
#else
#define MQTTBROKER_HAS_CONCEPTS 0
#endif

// One requirement of a policy contract (transport/traits.hpp, storage/contract.hpp,
// locking/traits.hpp), named after what it asks of the policy `T`. On C++20 it is a concept, so a
// static_assert on it that fails also notes which trait was false; on C++17 a bool constant. The
// expression must be SFINAE-safe (a detection trait's ::value), as a C++17 constant cannot fail softly.
#if MQTTBROKER_HAS_CONCEPTS
#define MQTTBROKER_REQUIREMENT(name, ...) \
  template <class T>                      \
  concept name = (__VA_ARGS__)
#else
#define MQTTBROKER_REQUIREMENT(name, ...) \
  template <class T>                      \
  inline constexpr bool name = (__VA_ARGS__)
#endif

// Empty policy members (hooks, locking::none) take no space where the compiler allows it.
#if defined(_MSC_VER) && MQTTBROKER_CPLUSPLUS >= 202002L
#define MQTTBROKER_NO_UNIQUE_ADDRESS [[msvc::no_unique_address]]
#elif defined(__has_cpp_attribute)
#if __has_cpp_attribute(no_unique_address) && MQTTBROKER_CPLUSPLUS >= 202002L
#define MQTTBROKER_NO_UNIQUE_ADDRESS [[no_unique_address]]
#endif
#endif
#ifndef MQTTBROKER_NO_UNIQUE_ADDRESS
#define MQTTBROKER_NO_UNIQUE_ADDRESS
#endif

// A versioned inline namespace lets two embedded copies of different versions link into one program.
#define MQTTBROKER_ABI_CONCAT_(a, b, c) v##a##_##b##_##c
#define MQTTBROKER_ABI_CONCAT(a, b, c) MQTTBROKER_ABI_CONCAT_(a, b, c)
#define MQTTBROKER_ABI_NAMESPACE \
  MQTTBROKER_ABI_CONCAT(MQTTBROKER_VERSION_MAJOR, MQTTBROKER_VERSION_MINOR, MQTTBROKER_VERSION_PATCH)

#define MQTTBROKER_BEGIN_NAMESPACE \
  namespace mqttbroker {           \
  inline namespace MQTTBROKER_ABI_NAMESPACE {
#define MQTTBROKER_END_NAMESPACE \
  }                              \
  }

// AddressSanitizer: GCC says __SANITIZE_ADDRESS__, Clang __has_feature. Memory we cache instead of
// freeing is poisoned under it, so a use after release is still reported.
#if defined(__SANITIZE_ADDRESS__)
#define MQTTBROKER_HAS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MQTTBROKER_HAS_ASAN 1
#endif
#endif
#ifndef MQTTBROKER_HAS_ASAN
#define MQTTBROKER_HAS_ASAN 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MQTTBROKER_LIKELY(x) __builtin_expect(!!(x), 1)
#define MQTTBROKER_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define MQTTBROKER_LIKELY(x) (x)
#define MQTTBROKER_UNLIKELY(x) (x)
#endif

#endif  // MQTTBROKER_CONFIG_HPP
