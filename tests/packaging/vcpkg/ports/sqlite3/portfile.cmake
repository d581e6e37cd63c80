# Stands in for vcpkg's sqlite3 port in tests/packaging/vcpkg.sh, which runs offline: it installs
# nothing, and find_package(SQLite3) (CMake's FindSQLite3, in mqttbroker's build and in its
# installed config) then finds the system's header and library (Debian: libsqlite3-dev), as a
# user's build finds vcpkg's own sqlite3 in the installed tree. vcpkg.sh skips its sqlite consumer
# where the system has none.
if(NOT EXISTS "/usr/include/sqlite3.h")
  message(FATAL_ERROR "the stand-in sqlite3 port needs the system's SQLite 3 in /usr/include (Debian: libsqlite3-dev)")
endif()
set(VCPKG_POLICY_EMPTY_PACKAGE enabled)
