import os
import re

from conan import ConanFile
from conan.tools.files import copy, load


class FmtStandIn(ConanFile):
    """Stands in for ConanCenter's fmt in tests/packaging/conan.sh, which runs offline: it packages
    the fmt of this machine, headers and compiled library (Debian's libfmt-dev: the headers in
    MQTTBROKER_FMT_INCLUDE_DIR, default /usr/include, and libfmt.so in MQTTBROKER_FMT_LIB_DIR, which
    conan.sh asks the compiler for), and describes them as ConanCenter's recipe does with its
    default header_only=False: target fmt::fmt, library "fmt".

    A compiled library rather than FMT_HEADER_ONLY, because that is what consumers of the real
    recipe get by default, and what the CMake config and pkg-config tests link (Debian's fmt::fmt
    and fmt.pc are the shared library): a package that forgot to hand fmt's library on to its
    consumers then fails to link here too, where a header-only fmt would hide it. Debian ships
    fmt as a shared library only, hence shared-library (ConanCenter's default is static)."""

    name = "fmt"
    description = "Test-only stand-in: the system's fmt, headers and shared library"
    license = "MIT"
    package_type = "shared-library"
    python_requires = "mqttbroker-standin/1.0"
    python_requires_extend = "mqttbroker-standin.SystemPackage"

    def package(self):
        include = self._folder("MQTTBROKER_FMT_INCLUDE_DIR", "/usr/include")
        libdir = self._folder("MQTTBROKER_FMT_LIB_DIR", holding=["libfmt.so"], debian="libfmt-dev")
        header = load(self, os.path.join(include, "fmt", "core.h"))
        number = int(re.search(r"#define FMT_VERSION (\d+)", header).group(1))
        found = "{}.{}.{}".format(number // 10000, number // 100 % 100, number % 100)
        self._expect_version(found, include, "fmt")
        copy(self, "fmt/*.h", include, os.path.join(self.package_folder, "include"))
        self._copy_libraries(libdir, "libfmt.so*")

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "fmt")
        self.cpp_info.set_property("cmake_target_name", "fmt::fmt")
        self.cpp_info.set_property("pkg_config_name", "fmt")
        self.cpp_info.libs = ["fmt"]
        self.cpp_info.defines = ["FMT_SHARED"]  # as Debian's fmt::fmt and ConanCenter's shared fmt
        self.cpp_info.bindirs = []
        if self.settings.os in ("Linux", "FreeBSD"):
            self.cpp_info.system_libs = ["m"]
