#ifndef MQTTBROKER_TESTS_CATCH_HPP
#define MQTTBROKER_TESTS_CATCH_HPP

// One spelling for Catch2 v2 (Debian's catch2 2.13) and v3. CMake defines MQTTBROKER_CATCH2_V2 or
// MQTTBROKER_CATCH2_V3 from the Catch2 it found; without CMake, the header that exists decides.
#if defined(MQTTBROKER_CATCH2_V3)
#include <catch2/catch_all.hpp>
#elif defined(MQTTBROKER_CATCH2_V2)
#include <catch2/catch.hpp>
#elif defined(__has_include)
#if __has_include(<catch2/catch_all.hpp>)
#define MQTTBROKER_CATCH2_V3 1
#include <catch2/catch_all.hpp>
#else
#define MQTTBROKER_CATCH2_V2 1
#include <catch2/catch.hpp>
#endif
#else
#define MQTTBROKER_CATCH2_V2 1
#include <catch2/catch.hpp>
#endif

// MQTTBROKER_SKIP(message): the test case stops here and says why. Catch2 from 3.3 counts it as
// skipped; older ones have no skipped state, so the reason is a warning (printed even when the run
// passes) and the case returns before any assertion it could not make.
#if defined(CATCH_VERSION_MAJOR) && (CATCH_VERSION_MAJOR > 3 || (CATCH_VERSION_MAJOR == 3 && CATCH_VERSION_MINOR >= 3))
#define MQTTBROKER_SKIP(...) SKIP("SKIPPED: " << __VA_ARGS__)
#else
#define MQTTBROKER_SKIP(...)              \
  do {                                    \
    WARN("SKIPPED: " << __VA_ARGS__);     \
    return;                               \
  } while (false)
#endif

#endif  // MQTTBROKER_TESTS_CATCH_HPP
