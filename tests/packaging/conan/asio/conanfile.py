import os
import re

from conan import ConanFile
from conan.tools.files import copy, load


class AsioStandIn(ConanFile):
    """Stands in for ConanCenter's asio in tests/packaging/conan.sh, which runs offline: it packages
    the Asio headers of this machine (MQTTBROKER_ASIO_INCLUDE_DIR, default /usr/include: Debian's
    libasio-dev) and describes them as ConanCenter's recipe does (asio::asio, ASIO_STANDALONE)."""

    name = "asio"
    description = "Test-only stand-in: the system's standalone Asio headers"
    license = "BSL-1.0"
    package_type = "header-library"
    python_requires = "mqttbroker-standin/1.0"
    python_requires_extend = "mqttbroker-standin.SystemPackage"

    def package_id(self):
        self.info.clear()

    def package(self):
        include = self._folder("MQTTBROKER_ASIO_INCLUDE_DIR", "/usr/include")
        header = load(self, os.path.join(include, "asio", "version.hpp"))
        number = int(re.search(r"#define ASIO_VERSION (\d+)", header).group(1))
        found = "{}.{}.{}".format(number // 100000, number // 100 % 1000, number % 100)
        self._expect_version(found, include, "Asio")
        destination = os.path.join(self.package_folder, "include")
        copy(self, "asio.hpp", include, destination)
        copy(self, "asio/*", include, destination)

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "asio")
        self.cpp_info.set_property("cmake_target_name", "asio::asio")
        self.cpp_info.defines = ["ASIO_STANDALONE"]
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        if self.settings.os in ("Linux", "FreeBSD"):
            self.cpp_info.system_libs = ["pthread"]
