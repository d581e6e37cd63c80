# Packaging tests, run by ctest as `cmake -DMODE=consumer|subdir -D... -P cmake_package_test.cmake`.
#
#   consumer: cmake --install BUILD_DIR into WORK_DIR/prefix, then configure, build and run
#             tests/cmake_consumer with find_package(mqttbroker CONFIG REQUIRED) against that prefix
#             (and the programs of the components auth, tls, websocket and sqlite where it built
#             them);
#             then build the same program with the plain compiler and the flags of the installed
#             mqttbroker.pc (PKG_CONFIG: the pkg-config program), and run it.
#   subdir:   configure, build and run tests/cmake_subdir, which add_subdirectory()s SOURCE_DIR.
#   With -DWITHOUT_FMT=ON either mode configures its project with CMAKE_DISABLE_FIND_PACKAGE_fmt
#   instead (as on a machine without fmt), and passes only when that configure fails with our
#   message naming fmt and where to get it (libfmt-dev).
#
# Inputs: MODE SOURCE_DIR BUILD_DIR WORK_DIR GENERATOR MAKE_PROGRAM CXX_COMPILER CONFIG
#         PREFIX_PATH ('|'-separated) TOOLCHAIN_FILE EXPECTED_VERSION PKG_CONFIG WITHOUT_FMT
cmake_minimum_required(VERSION 3.16)

foreach(_var MODE SOURCE_DIR BUILD_DIR WORK_DIR GENERATOR EXPECTED_VERSION)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "cmake_package_test.cmake: -D${_var}=... is required")
  endif()
endforeach()
if(NOT CONFIG)
  set(CONFIG Release)
endif()

function(run_step what)
  message(STATUS "[${MODE}] ${what}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "[${MODE}] ${what} failed (${_rc})")
  endif()
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

string(REPLACE "|" ";" _prefix_path "${PREFIX_PATH}")
if(MODE STREQUAL "consumer")
  set(_project "${SOURCE_DIR}/tests/cmake_consumer")
  run_step("install into ${WORK_DIR}/prefix"
    "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix" --config "${CONFIG}")
  list(INSERT _prefix_path 0 "${WORK_DIR}/prefix")
elseif(MODE STREQUAL "subdir")
  set(_project "${SOURCE_DIR}/tests/cmake_subdir")
else()
  message(FATAL_ERROR "cmake_package_test.cmake: unknown MODE '${MODE}'")
endif()

# Settings go through an initial cache file: lists and spaces survive it unharmed.
set(_init "${WORK_DIR}/init.cmake")
file(WRITE "${_init}" "")
foreach(_setting
    "CMAKE_BUILD_TYPE|${CONFIG}"
    "CMAKE_CXX_COMPILER|${CXX_COMPILER}"
    "CMAKE_MAKE_PROGRAM|${MAKE_PROGRAM}"
    "CMAKE_TOOLCHAIN_FILE|${TOOLCHAIN_FILE}"
    "MQTTBROKER_ROOT|${SOURCE_DIR}"
    "MQTTBROKER_EXPECTED_VERSION|${EXPECTED_VERSION}")
  string(FIND "${_setting}" "|" _bar)
  string(SUBSTRING "${_setting}" 0 ${_bar} _name)
  math(EXPR _bar "${_bar} + 1")
  string(SUBSTRING "${_setting}" ${_bar} -1 _value)
  if(NOT _value STREQUAL "")
    file(APPEND "${_init}" "set(${_name} [==[${_value}]==] CACHE STRING \"\")\n")
  endif()
endforeach()
if(_prefix_path)
  file(APPEND "${_init}" "set(CMAKE_PREFIX_PATH [==[${_prefix_path}]==] CACHE STRING \"\")\n")
endif()

if(WITHOUT_FMT)
  # The library needs fmt: where none can be found, the configure must fail and say so, naming the
  # package to install (the installed config's message, or the top-level CMakeLists.txt's).
  file(APPEND "${_init}" "set(CMAKE_DISABLE_FIND_PACKAGE_fmt TRUE CACHE BOOL \"\")\n")
  message(STATUS "[${MODE}] configure ${_project} with fmt disabled: must fail")
  execute_process(
    COMMAND "${CMAKE_COMMAND}" -S "${_project}" -B "${WORK_DIR}/build" -G "${GENERATOR}" -C "${_init}"
    RESULT_VARIABLE _rc OUTPUT_VARIABLE _output ERROR_VARIABLE _output)
  if(_rc EQUAL 0)
    message(FATAL_ERROR "[${MODE}] the configure succeeded with fmt disabled:\n${_output}")
  endif()
  # CMake wraps long messages: compare with the whitespace folded.
  string(REGEX REPLACE "[ \t\r\n]+" " " _folded "${_output}")
  foreach(_expected "mqttbroker needs fmt 8 or later" "libfmt-dev")
    if(NOT _folded MATCHES "${_expected}")
      message(FATAL_ERROR "[${MODE}] the configure failed without fmt, but not with our message "
                          "(no '${_expected}'):\n${_output}")
    endif()
  endforeach()
  message(STATUS "[${MODE}] passed: without fmt the configure failed with our message")
  return()
endif()

run_step("configure ${_project}"
  "${CMAKE_COMMAND}" -S "${_project}" -B "${WORK_DIR}/build" -G "${GENERATOR}" -C "${_init}")
run_step("build" "${CMAKE_COMMAND}" --build "${WORK_DIR}/build" --config "${CONFIG}")

# Single-config generators put a program in the build folder, multi-config ones in a subfolder.
function(find_program_built name out)
  set(${out} "" PARENT_SCOPE)
  foreach(_candidate "${WORK_DIR}/build/${name}" "${WORK_DIR}/build/${CONFIG}/${name}"
                     "${WORK_DIR}/build/${name}.exe" "${WORK_DIR}/build/${CONFIG}/${name}.exe")
    if(EXISTS "${_candidate}" AND NOT IS_DIRECTORY "${_candidate}")
      set(${out} "${_candidate}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
endfunction()
find_program_built(consumer _program)
if(NOT _program)
  message(FATAL_ERROR "[${MODE}] built program 'consumer' not found under ${WORK_DIR}/build")
endif()
run_step("run ${_program}" "${_program}")
# The components' programs, built where the consumer found OpenSSL or SQLite (tests/cmake_consumer).
foreach(_name consumer_auth consumer_tls consumer_ws consumer_sqlite)
  find_program_built(${_name} _program)
  if(_program)
    run_step("run ${_program}" "${_program}")
  endif()
endforeach()

if(MODE STREQUAL "consumer")
  # pkg-config looks in the installed prefix first, so a mqttbroker.pc elsewhere cannot stand in
  # (the includedir check below makes sure). fmt.pc, which mqttbroker.pc requires, comes from
  # pkg-config's own search path (Debian: libfmt-dev's) or a PKG_CONFIG_PATH that was set.
  if(NOT PKG_CONFIG)
    message(FATAL_ERROR "[${MODE}] no pkg-config program (Debian: pkgconf; scripts/install-deps.sh installs it)")
  endif()
  if("$ENV{PKG_CONFIG_PATH}" STREQUAL "")
    set(ENV{PKG_CONFIG_PATH} "${WORK_DIR}/prefix/share/pkgconfig")
  else()
    set(ENV{PKG_CONFIG_PATH} "${WORK_DIR}/prefix/share/pkgconfig:$ENV{PKG_CONFIG_PATH}")
  endif()
  function(pkg_config out)
    execute_process(COMMAND "${PKG_CONFIG}" ${ARGN} mqttbroker RESULT_VARIABLE _rc
                    OUTPUT_VARIABLE _output ERROR_VARIABLE _error OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(NOT _rc EQUAL 0)
      message(FATAL_ERROR "[${MODE}] pkg-config ${ARGN} mqttbroker failed (${_rc}): ${_error}")
    endif()
    set(${out} "${_output}" PARENT_SCOPE)
  endfunction()
  pkg_config(_pc_version --modversion)
  if(NOT _pc_version STREQUAL EXPECTED_VERSION)
    message(FATAL_ERROR "[${MODE}] mqttbroker.pc says version ${_pc_version}, expected ${EXPECTED_VERSION}")
  endif()
  pkg_config(_pc_includedir --variable=includedir)
  file(REAL_PATH "${_pc_includedir}" _pc_includedir)
  file(REAL_PATH "${WORK_DIR}/prefix/include" _prefix_include)
  if(NOT _pc_includedir STREQUAL _prefix_include)
    message(FATAL_ERROR "[${MODE}] mqttbroker.pc's includedir is ${_pc_includedir}, not the prefix's ${_prefix_include}")
  endif()
  # fmt 8 or later is required, and its library comes with mqttbroker's flags.
  pkg_config(_pc_requires --print-requires)
  if(NOT _pc_requires MATCHES "(^|\n)fmt >= 8")
    message(FATAL_ERROR "[${MODE}] mqttbroker.pc does not require fmt >= 8 (it requires: '${_pc_requires}')")
  endif()
  pkg_config(_pc_cflags --cflags)
  pkg_config(_pc_libs --libs)
  if(NOT _pc_libs MATCHES "(^| )-lfmt( |$)")
    message(FATAL_ERROR "[${MODE}] pkg-config --libs mqttbroker lacks fmt's -lfmt: '${_pc_libs}'")
  endif()
  separate_arguments(_pc_cflags UNIX_COMMAND "${_pc_cflags}")
  separate_arguments(_pc_libs UNIX_COMMAND "${_pc_libs}")
  set(_pc_program "${WORK_DIR}/consumer_pkgconfig")
  run_step("build with the compiler and pkg-config's flags"
    "${CXX_COMPILER}" -std=c++17 ${_pc_cflags} -DMQTTBROKER_CONSUMER_SINGLE_HEADER
    "${_project}/main.cpp" "${_project}/single.cpp" -o "${_pc_program}" ${_pc_libs})
  run_step("run ${_pc_program}" "${_pc_program}")
endif()
message(STATUS "[${MODE}] passed")
