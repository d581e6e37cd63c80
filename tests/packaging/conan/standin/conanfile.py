import os

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.files import copy


class SystemPackage:
    """What the stand-in recipes beside this folder share (python_requires_extend): each packages a
    dependency as this machine has it, from folders that conan.sh names in environment variables,
    as the version it is created with and no other."""

    settings = "os", "arch", "compiler", "build_type"
    no_copy_source = True

    def _folder(self, variable, default="", holding=(), debian=""):
        """The folder the environment variable names (or `default`), which must hold the files
        `holding`, from the Debian package `debian`."""
        folder = os.environ.get(variable, default)
        for name in holding:
            if not folder or not os.path.exists(os.path.join(folder, name)):
                raise ConanInvalidConfiguration(
                    "{} ('{}') holds no {} (Debian: {})".format(variable, folder, name, debian))
        return folder

    def _expect_version(self, found, where, what):
        if found != str(self.version):
            raise ConanInvalidConfiguration("{} holds {} {}, not {}".format(where, what, found, self.version))

    def _copy_libraries(self, libdir, *patterns):
        # libx.so -> libx.so.N -> libx.so.N.M: copy() keeps the relative links.
        for pattern in patterns:
            copy(self, pattern, libdir, os.path.join(self.package_folder, "lib"), keep_path=False)


class StandInBase(ConanFile):
    name = "mqttbroker-standin"
    version = "1.0"
    description = "Test-only: what tests/packaging/conan's stand-in recipes share"
    license = "BSL-1.0"
    package_type = "python-require"
