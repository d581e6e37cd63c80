import os

from conan import ConanFile
from conan.tools.build import can_run
from conan.tools.cmake import CMake, CMakeToolchain, cmake_layout


class TestPackageConan(ConanFile):
    settings = "os", "arch", "compiler", "build_type"
    generators = "CMakeDeps"

    def requirements(self):
        self.requires(self.tested_reference_str)

    def layout(self):
        cmake_layout(self)

    def generate(self):
        # The OpenSSL parts are tried too where the package was made with them (with_openssl).
        toolchain = CMakeToolchain(self)
        toolchain.cache_variables["TEST_OPENSSL_PARTS"] = bool(self.dependencies["mqttbroker"].options.with_openssl)
        toolchain.generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure()
        cmake.build()

    def test(self):
        if can_run(self):
            self.run(os.path.join(self.cpp.build.bindir, "test_package"), env="conanrun")
            if self.dependencies["mqttbroker"].options.with_openssl:
                self.run(os.path.join(self.cpp.build.bindir, "test_package_openssl"), env="conanrun")
