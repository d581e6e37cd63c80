# Stands in for vcpkg's asio port in tests/packaging/vcpkg.sh, which runs offline: it installs
# nothing, and mqttbroker's config (its Findasio.cmake) then finds the system's Asio headers
# (Debian: libasio-dev), as it does wherever no asio CMake config is installed.
if(NOT EXISTS "/usr/include/asio.hpp")
  message(FATAL_ERROR "the stand-in asio port needs the system's Asio in /usr/include (Debian: libasio-dev)")
endif()
set(VCPKG_POLICY_EMPTY_PACKAGE enabled)
