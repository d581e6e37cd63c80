// main() for the Catch2 test executables. Catch2 v3 links Catch2::Catch2WithMain instead, so under
// v3 this file compiles to nothing; under v2 it holds Catch's runner, compiled once and shared.
#if defined(MQTTBROKER_CATCH2_V3)
#elif !defined(MQTTBROKER_CATCH2_V2) && defined(__has_include)
#if !__has_include(<catch2/catch_all.hpp>)
#define CATCH_CONFIG_MAIN
#include "catch.hpp"
#endif
#else
#define CATCH_CONFIG_MAIN
#include "catch.hpp"
#endif
