import os
import re

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.files import copy, get, load
from conan.tools.layout import basic_layout

required_conan_version = ">=2.0"


class MqttbrokerConan(ConanFile):
    name = "mqttbroker"
    description = "Header-only C++17 MQTT 3.1.1 and 5.0 broker library on standalone Asio"
    license = "BSL-1.0"
    topics = ("mqtt", "broker", "iot", "asio", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    no_copy_source = True

    # In this repository the recipe packages the checkout it lives in: export_sources() copies the
    # headers and the licence, set_version() reads include/mqttbroker/version.hpp. A copy for
    # ConanCenter drops both and lists the release archive in conandata.yml, which source() then
    # fetches (README, "Packages").

    @property
    def _checkout(self):
        return os.path.join(self.recipe_folder, os.pardir, os.pardir)

    def set_version(self):
        if self.version:
            return
        header = load(self, os.path.join(self._checkout, "include", "mqttbroker", "version.hpp"))
        parts = dict(re.findall(r"#define MQTTBROKER_VERSION_(MAJOR|MINOR|PATCH) +(\d+)", header))
        self.version = "{}.{}.{}".format(parts["MAJOR"], parts["MINOR"], parts["PATCH"])

    def export_sources(self):
        # Into src/, the source folder of basic_layout(src_folder="src"), as source() would fetch.
        src = os.path.join(self.export_sources_folder, "src")
        copy(self, "LICENSE", self._checkout, src)
        copy(self, "*.hpp", os.path.join(self._checkout, "include"), os.path.join(src, "include"))
        copy(self, "mqttbroker.hpp", os.path.join(self._checkout, "single_include", "mqttbroker"),
             os.path.join(src, "single_include", "mqttbroker"))

    def layout(self):
        basic_layout(self, src_folder="src")

    def requirements(self):
        # What the headers use: standalone Asio (1.22 is Debian 12's, the oldest tested) and fmt,
        # which formats the library's log messages for the log hook: 8 or later; 9.1 is
        # Debian 12's, the one tested. A header-library hands both on to its consumers, headers and
        # libraries (Conan's default traits for it), so fmt's library is linked where ours is used.
        self.requires("asio/[>=1.22.1 <2]")
        self.requires("fmt/[>=8 <13]")

    def package_id(self):
        self.info.clear()

    def validate(self):
        check_min_cppstd(self, 17)

    def source(self):
        sources = (self.conan_data or {}).get("sources", {})
        if self.version in sources:
            get(self, **sources[self.version], strip_root=True)

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        copy(self, "*.hpp", os.path.join(self.source_folder, "include"), os.path.join(self.package_folder, "include"))
        # The single header, where `cmake --install` puts it: <mqttbroker/single/mqttbroker.hpp>.
        copy(self, "mqttbroker.hpp", os.path.join(self.source_folder, "single_include", "mqttbroker"),
             os.path.join(self.package_folder, "include", "mqttbroker", "single"))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "mqttbroker")
        self.cpp_info.set_property("cmake_target_name", "mqttbroker::mqttbroker")
        self.cpp_info.set_property("pkg_config_name", "mqttbroker")
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        if self.settings.os in ("Linux", "FreeBSD"):
            self.cpp_info.system_libs.append("pthread")
