# Stands in for vcpkg's openssl port in tests/packaging/vcpkg.sh, which runs offline: it installs
# nothing, and find_package(OpenSSL) (CMake's FindOpenSSL, in mqttbroker's build and in its
# installed config) then finds the system's headers and libraries (Debian: libssl-dev), as a user's
# build with vcpkg's own openssl would find that one. The system's must be the series this port's
# version names (Debian 12: 3.0); its patch release may differ.
set(_opensslv "/usr/include/openssl/opensslv.h")
if(NOT EXISTS "${_opensslv}")
  message(FATAL_ERROR "the stand-in openssl port needs the system's OpenSSL in /usr/include (Debian: libssl-dev)")
endif()
file(STRINGS "${_opensslv}" _text REGEX "define OPENSSL_VERSION_TEXT")
string(REGEX MATCH "OpenSSL ([0-9]+\\.[0-9]+)\\." _match "${_text}")
set(_system "${CMAKE_MATCH_1}")
string(REGEX MATCH "^[0-9]+\\.[0-9]+" _series "${VERSION}")
if(NOT _system STREQUAL _series)
  message(FATAL_ERROR "the system's OpenSSL is '${_system}' (${_opensslv}), not ${_series}, which the stand-in openssl port names")
endif()
set(VCPKG_POLICY_EMPTY_PACKAGE enabled)
