# Stands in for vcpkg's fmt port in tests/packaging/vcpkg.sh, which runs offline: it installs
# nothing, and mqttbroker's config (its find_package(fmt 8)) then finds the system's fmt CMake
# config, and the consumer links the system's libfmt (Debian: libfmt-dev), as a user's build with
# vcpkg's own fmt would find and link that one.
if(NOT EXISTS "/usr/include/fmt/format.h")
  message(FATAL_ERROR "the stand-in fmt port needs the system's fmt in /usr/include (Debian: libfmt-dev)")
endif()
set(VCPKG_POLICY_EMPTY_PACKAGE enabled)
