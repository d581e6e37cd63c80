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
    # with_openssl: the parts on OpenSSL, each a component with a CMake target of its own (as in
    # the library's own CMake config): mqttbroker::auth (SCRAM-SHA-256, libcrypto), mqttbroker::tls
    # (the TLS transport, libssl) and mqttbroker::websocket (MQTT over WebSocket, libcrypto for the
    # handshake's SHA-1; wss takes it with tls). One option rather than tls/auth/websocket ones:
    # the three need the one dependency and nothing else, so separate options would be three
    # switches for one requirement, and three answers to "which OpenSSL" that must agree; the
    # library's CMake build likewise makes all three wherever it finds OpenSSL. The headers are
    # packaged either way (header-only: nothing to build), so the option changes only what the
    # package requires and which components it declares: ConanCenter's way for a header-only
    # library with an optional dependency (an option with_<dependency>, off by default, and the
    # requirement when on), and the name vcpkg's port uses for the same choice (feature openssl).
    # with_sqlite: the durable storage, the component mqttbroker::sqlite on SQLite 3. An option of
    # its own: another dependency, wanted by other programs than the OpenSSL parts (a broker that
    # keeps its sessions across restarts need not speak TLS). Named for the component and vcpkg's
    # feature sqlite; off by default, as memory is the default storage.
    options = {"with_openssl": [True, False], "with_sqlite": [True, False]}
    default_options = {"with_openssl": False, "with_sqlite": False}
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
        if self.options.with_openssl:
            # The headers build with OpenSSL 1.1.1 and 3 (tls.hpp asks which); 3.0 is Debian 12's,
            # the one tested.
            self.requires("openssl/[>=1.1 <4]")
        if self.options.with_sqlite:
            # storage/sqlite.hpp upserts (ON CONFLICT ... DO UPDATE), which came with SQLite 3.24;
            # 3.40 is Debian 12's, the one tested.
            self.requires("sqlite3/[>=3.24 <4]")

    def package_id(self):
        # One package whatever the settings and the options: the same headers.
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
        # The targets are the library's own CMake config's: mqttbroker::mqttbroker is the core
        # (Asio, fmt, threads; never OpenSSL or SQLite), and each optional part is a component of
        # its own that adds what it needs. CMakeDeps also makes a target for the package as a
        # whole, which links every component; it cannot be mqttbroker::mqttbroker (the core would
        # then link the optional parts), so it is mqttbroker::all, which the CMake config does not
        # have.
        self.cpp_info.set_property("cmake_target_name", "mqttbroker::all")
        core = self.cpp_info.components["core"]
        core.set_property("cmake_target_name", "mqttbroker::mqttbroker")
        # mqttbroker.pc, as `cmake --install` writes it; PkgConfigDeps then writes no .pc of the
        # whole package under the same name (a component's comes first).
        core.set_property("pkg_config_name", "mqttbroker")
        core.requires = ["asio::asio", "fmt::fmt"]
        core.bindirs = []
        core.libdirs = []
        if self.settings.os in ("Linux", "FreeBSD"):
            core.system_libs.append("pthread")
        parts = []
        if self.options.with_openssl:
            parts += [("auth", "openssl::crypto"), ("tls", "openssl::ssl"), ("websocket", "openssl::crypto")]
        if self.options.with_sqlite:
            # ConanCenter's sqlite3 is one target, SQLite::SQLite3, as CMake's FindSQLite3 names it.
            parts.append(("sqlite", "sqlite3::sqlite3"))
        for part, dependency in parts:
            component = self.cpp_info.components[part]
            component.set_property("cmake_target_name", "mqttbroker::" + part)
            component.set_property("pkg_config_name", "mqttbroker-" + part)
            component.requires = ["core", dependency]
            component.bindirs = []
            component.libdirs = []
