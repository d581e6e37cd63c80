import os

from conan import ConanFile
from conan.tools.build import can_run
from conan.tools.cmake import CMake, CMakeToolchain, cmake_layout


class TestPackageConan(ConanFile):
    settings = "os", "arch", "compiler", "build_type"
    generators = "CMakeDeps"

    # The optional parts are tried too where the package was made with them: option, CMake switch,
    # program.
    _parts = (("with_openssl", "TEST_OPENSSL_PARTS", "test_package_openssl"),
              ("with_sqlite", "TEST_SQLITE_PART", "test_package_sqlite"))

    def requirements(self):
        self.requires(self.tested_reference_str)

    def layout(self):
        cmake_layout(self)

    def _made_with(self, option):
        return bool(self.dependencies["mqttbroker"].options.get_safe(option))

    def generate(self):
        toolchain = CMakeToolchain(self)
        for option, switch, _ in self._parts:
            toolchain.cache_variables[switch] = self._made_with(option)
        toolchain.generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure()
        cmake.build()

    def test(self):
        if can_run(self):
            self.run(os.path.join(self.cpp.build.bindir, "test_package"), env="conanrun")
            for option, _, program in self._parts:
                if self._made_with(option):
                    self.run(os.path.join(self.cpp.build.bindir, program), env="conanrun")
