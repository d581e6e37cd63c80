# Findasio: standalone Asio as the target asio::asio.
#
# 1. An asio CMake package config wins (vcpkg and Conan ship one that defines asio::asio).
# 2. Otherwise the header asio.hpp (Debian's libasio-dev ships no config) is wrapped in an
#    INTERFACE IMPORTED target that defines ASIO_STANDALONE and ASIO_NO_DEPRECATED and links Threads.
#
# Sets asio_FOUND, asio_VERSION and, for the header fallback, asio_INCLUDE_DIR.
# Installed beside mqttbrokerConfig.cmake, which puts its folder on CMAKE_MODULE_PATH.

if(TARGET asio::asio)
  set(asio_FOUND TRUE)
  return()
endif()

find_package(asio CONFIG QUIET)
if(asio_FOUND AND TARGET asio::asio)
  if(NOT asio_FIND_QUIETLY)
    message(STATUS "Found asio: ${asio_DIR} (found version \"${asio_VERSION}\")")
  endif()
  return()
endif()
set(asio_FOUND FALSE)

find_path(asio_INCLUDE_DIR NAMES asio.hpp DOC "Folder holding standalone Asio's asio.hpp")
mark_as_advanced(asio_INCLUDE_DIR)

if(asio_INCLUDE_DIR AND EXISTS "${asio_INCLUDE_DIR}/asio/version.hpp")
  file(STRINGS "${asio_INCLUDE_DIR}/asio/version.hpp" _asio_version_line
       REGEX "^#define ASIO_VERSION [0-9]+")
  if(_asio_version_line MATCHES "ASIO_VERSION ([0-9]+)")
    # ASIO_VERSION is major * 100000 + minor * 100 + patch.
    math(EXPR _asio_major "${CMAKE_MATCH_1} / 100000")
    math(EXPR _asio_minor "${CMAKE_MATCH_1} / 100 % 1000")
    math(EXPR _asio_patch "${CMAKE_MATCH_1} % 100")
    set(asio_VERSION "${_asio_major}.${_asio_minor}.${_asio_patch}")
  endif()
  unset(_asio_version_line)
  unset(_asio_major)
  unset(_asio_minor)
  unset(_asio_patch)
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(asio
  REQUIRED_VARS asio_INCLUDE_DIR
  VERSION_VAR asio_VERSION)

if(asio_FOUND AND NOT TARGET asio::asio)
  if(NOT TARGET Threads::Threads)
    set(THREADS_PREFER_PTHREAD_FLAG ON)
    find_package(Threads QUIET)
  endif()
  add_library(asio::asio INTERFACE IMPORTED)
  set_target_properties(asio::asio PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${asio_INCLUDE_DIR}"
    INTERFACE_COMPILE_DEFINITIONS "ASIO_STANDALONE;ASIO_NO_DEPRECATED")
  if(TARGET Threads::Threads)
    set_property(TARGET asio::asio APPEND PROPERTY INTERFACE_LINK_LIBRARIES Threads::Threads)
  endif()
endif()
