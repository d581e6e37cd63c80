import os
import re

from conan import ConanFile
from conan.tools.files import copy, load


class SQLite3StandIn(ConanFile):
    """Stands in for ConanCenter's sqlite3 in tests/packaging/conan.sh, which runs offline: it packages
    the SQLite 3 of this machine, header and shared library (Debian's libsqlite3-dev: sqlite3.h in
    MQTTBROKER_SQLITE3_INCLUDE_DIR, default /usr/include; libsqlite3.so in
    MQTTBROKER_SQLITE3_LIB_DIR, which conan.sh asks the compiler for), and describes them as
    ConanCenter's recipe does: find_package(SQLite3) in config or module mode, target
    SQLite::SQLite3 (CMake's FindSQLite3 name), pkg-config sqlite3. A shared library, as Debian
    ships (ConanCenter's default is static)."""

    name = "sqlite3"
    description = "Test-only stand-in: the system's SQLite 3, header and shared library"
    license = "Unlicense"
    package_type = "shared-library"
    python_requires = "mqttbroker-standin/1.0"
    python_requires_extend = "mqttbroker-standin.SystemPackage"

    def package(self):
        include = self._folder("MQTTBROKER_SQLITE3_INCLUDE_DIR", "/usr/include", ["sqlite3.h"], "libsqlite3-dev")
        libdir = self._folder("MQTTBROKER_SQLITE3_LIB_DIR", holding=["libsqlite3.so"], debian="libsqlite3-dev")
        found = re.search(r'#define SQLITE_VERSION\s+"([^"]+)"', load(self, os.path.join(include, "sqlite3.h")))
        found = found.group(1) if found else "(no SQLITE_VERSION)"
        self._expect_version(found, include, "SQLite")
        copy(self, "sqlite3*.h", include, os.path.join(self.package_folder, "include"))
        self._copy_libraries(libdir, "libsqlite3.so*")

    def package_info(self):
        self.cpp_info.set_property("cmake_find_mode", "both")
        self.cpp_info.set_property("cmake_file_name", "SQLite3")
        self.cpp_info.set_property("cmake_target_name", "SQLite::SQLite3")
        self.cpp_info.set_property("pkg_config_name", "sqlite3")
        self.cpp_info.libs = ["sqlite3"]
        self.cpp_info.bindirs = []
        if self.settings.os in ("Linux", "FreeBSD"):
            self.cpp_info.system_libs = ["dl", "m", "pthread"]
