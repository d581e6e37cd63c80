# Builds one compile_fail case and checks the outcome; run by ctest (tests/compile_fail/CMakeLists.txt).
#   BUILD_DIR, TARGET, CONFIG  the build tree and the OBJECT target of the case
#   COMPILES                   ON: the case must compile; otherwise it must fail
#   EXPECT_COUNT, EXPECT_<i>   regexes (CMake's) the output must match, i = 1..EXPECT_COUNT; the
#                              first must match the first error. Match compiler quotes with `.`.
foreach(var BUILD_DIR TARGET)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check.cmake: ${var} not set")
  endif()
endforeach()

set(config_args "")
if(CONFIG)
  set(config_args --config "${CONFIG}")
endif()
execute_process(
  COMMAND "${CMAKE_COMMAND}" --build "${BUILD_DIR}" --target "${TARGET}" ${config_args}
  RESULT_VARIABLE result
  OUTPUT_VARIABLE output
  ERROR_VARIABLE output)

if(COMPILES)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "${TARGET} must compile, but did not:\n${output}")
  endif()
  message(STATUS "${TARGET} compiled, as it must")
  return()
endif()

if(result EQUAL 0)
  message(FATAL_ERROR "${TARGET} compiled, but must not:\n${output}")
endif()
if(NOT EXPECT_COUNT GREATER 0)
  message(FATAL_ERROR "check.cmake: no EXPECT_1 for ${TARGET}, which must fail")
endif()
set(failed "")
foreach(i RANGE 1 ${EXPECT_COUNT})
  if(NOT output MATCHES "${EXPECT_${i}}")
    string(APPEND failed "\n  not found: ${EXPECT_${i}}")
  endif()
endforeach()
# The first error is the one a user reads: it must be ours.
string(REGEX MATCH "[^\n]*error: [^\n]*" first_error "${output}")
if(NOT first_error MATCHES "${EXPECT_1}")
  string(APPEND failed "\n  the first error does not match ${EXPECT_1}:\n  ${first_error}")
endif()
if(failed)
  message(FATAL_ERROR "${TARGET} failed to compile, but not as expected:${failed}\n\nOutput:\n${output}")
endif()
message(STATUS "${TARGET} failed to compile as expected; first error:\n${first_error}")
