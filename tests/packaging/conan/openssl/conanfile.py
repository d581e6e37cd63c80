import os
import re

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.files import copy, load


class OpenSSLStandIn(ConanFile):
    """Stands in for ConanCenter's openssl in tests/packaging/conan.sh, which runs offline: it packages
    the OpenSSL of this machine, headers and shared libraries (Debian's libssl-dev: the headers in
    MQTTBROKER_OPENSSL_INCLUDE_DIR, default /usr/include, plus the architecture's opensslconf.h and
    configuration.h from MQTTBROKER_OPENSSL_ARCH_INCLUDE_DIR, /usr/include/<multiarch>; libssl.so and
    libcrypto.so in MQTTBROKER_OPENSSL_LIB_DIR, which conan.sh asks the compiler for), and describes
    them as ConanCenter's recipe does: find_package(OpenSSL) in config or module mode, components
    crypto (OpenSSL::Crypto, libcrypto) and ssl (OpenSSL::SSL, libssl, on crypto). Shared libraries,
    as the only OpenSSL a Debian program links by default (ConanCenter's default is static)."""

    name = "openssl"
    description = "Test-only stand-in: the system's OpenSSL, headers and shared libraries"
    license = "Apache-2.0"
    package_type = "shared-library"
    python_requires = "mqttbroker-standin/1.0"
    python_requires_extend = "mqttbroker-standin.SystemPackage"

    def package(self):
        include = self._folder("MQTTBROKER_OPENSSL_INCLUDE_DIR", "/usr/include")
        arch_include = self._folder("MQTTBROKER_OPENSSL_ARCH_INCLUDE_DIR")
        libdir = self._folder("MQTTBROKER_OPENSSL_LIB_DIR", holding=["libssl.so", "libcrypto.so"], debian="libssl-dev")
        # "OpenSSL 3.0.19 27 Jan 2026", "OpenSSL 1.1.1w  11 Sep 2023": the version is the second word.
        header = load(self, os.path.join(include, "openssl", "opensslv.h"))
        found = re.search(r'#\s*define OPENSSL_VERSION_TEXT\s+"OpenSSL (\S+)', header)
        found = found.group(1) if found else "(no OPENSSL_VERSION_TEXT)"
        self._expect_version(found, include, "OpenSSL")
        destination = os.path.join(self.package_folder, "include")
        copy(self, "openssl/*.h", include, destination)
        if arch_include:
            copy(self, "openssl/*.h", arch_include, destination)
        if not os.path.exists(os.path.join(destination, "openssl", "opensslconf.h")):
            raise ConanInvalidConfiguration(
                "no openssl/opensslconf.h in {} or {} (Debian: /usr/include/<multiarch>)".format(include, arch_include))
        self._copy_libraries(libdir, "libssl.so*", "libcrypto.so*")

    def package_info(self):
        self.cpp_info.set_property("cmake_find_mode", "both")
        self.cpp_info.set_property("cmake_file_name", "OpenSSL")
        self.cpp_info.set_property("cmake_additional_variables_prefixes", ["OPENSSL"])
        self.cpp_info.set_property("pkg_config_name", "openssl")

        crypto = self.cpp_info.components["crypto"]
        crypto.set_property("cmake_target_name", "OpenSSL::Crypto")
        crypto.set_property("pkg_config_name", "libcrypto")
        crypto.libs = ["crypto"]
        crypto.bindirs = []
        if self.settings.os in ("Linux", "FreeBSD"):
            crypto.system_libs = ["dl", "pthread", "rt"]

        ssl = self.cpp_info.components["ssl"]
        ssl.set_property("cmake_target_name", "OpenSSL::SSL")
        ssl.set_property("pkg_config_name", "libssl")
        ssl.libs = ["ssl"]
        ssl.requires = ["crypto"]
        ssl.bindirs = []
