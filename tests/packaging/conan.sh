#!/usr/bin/env bash
# The Conan 2 recipe (packaging/conan/), tried offline: `conan create` builds the package from this
# checkout and its test_package/; then a separate consumer (tests/packaging/consumer with a
# conanfile.txt: CMakeDeps, CMakeToolchain, cmake_layout) is installed, configured with the preset
# Conan wrote, built and run. Exit 0 only when both programs ran; 77 when Conan is not found.
#
# Conan is the runtime in $MQTTBROKER_PACKAGING_TOOLS (common.sh), run by Debian's Python 3 with its
# modules (scripts/install-deps.sh); CONAN_PYTHON names another interpreter. ConanCenter cannot be
# reached, so the library's two dependencies come from stand-in recipes that package the system's
# copies: Asio's headers (tests/packaging/conan/asio) and fmt's headers and shared library
# (tests/packaging/conan/fmt; Debian: libasio-dev, libfmt-dev). Everything goes under
# build/packaging/conan, its Conan home included.
PACKAGING_NAME=conan
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

runtime="$(ls "$TOOLS"/conan-*-runtime.tgz 2>/dev/null | sort | tail -n 1 || true)"
[ -n "$runtime" ] || skip "no conan-*-runtime.tgz in $TOOLS"
python="${CONAN_PYTHON:-/usr/bin/python3}"
"$python" -c "import requests, urllib3, yaml, jinja2, fasteners, distro, dateutil, colorama, patch_ng" 2>/dev/null ||
  fail "$python lacks Conan's Python modules: run scripts/install-deps.sh"

fresh_work
mkdir -p "$WORK/conan-src"
tar -xzf "$runtime" -C "$WORK/conan-src"
export CONAN_HOME="$WORK/home" PYTHONPATH="$WORK/conan-src"
conan() { "$python" -m conans.conan "$@"; }
say "$(conan --version)"
conan profile detect --force >/dev/null
conan remote disable conancenter >/dev/null

version="$(checkout_version)"
asio_include="${MQTTBROKER_ASIO_INCLUDE_DIR:-/usr/include}"
asio_version="$(sed -n 's|^#define ASIO_VERSION \([0-9]\+\).*|\1|p' "$asio_include/asio/version.hpp" 2>/dev/null || true)"
[ -n "$asio_version" ] || fail "no Asio headers in $asio_include (Debian: libasio-dev)"
asio_version="$((asio_version / 100000)).$((asio_version / 100 % 1000)).$((asio_version % 100))"

say "the stand-in asio/$asio_version (the system's headers)"
MQTTBROKER_ASIO_INCLUDE_DIR="$asio_include" conan create "$ROOT/tests/packaging/conan/asio" --version "$asio_version"

fmt_include="${MQTTBROKER_FMT_INCLUDE_DIR:-/usr/include}"
fmt_version="$(sed -n 's|^#define FMT_VERSION \([0-9]\+\).*|\1|p' "$fmt_include/fmt/core.h" 2>/dev/null || true)"
[ -n "$fmt_version" ] || fail "no fmt headers in $fmt_include (Debian: libfmt-dev)"
fmt_version="$((fmt_version / 10000)).$((fmt_version / 100 % 100)).$((fmt_version % 100))"
# The folder of the libfmt.so the compiler links by default (Debian: /usr/lib/<multiarch>).
fmt_lib="$("${CXX:-c++}" -print-file-name=libfmt.so)"
case "$fmt_lib" in
  /*) fmt_libdir="${MQTTBROKER_FMT_LIB_DIR:-$(cd "$(dirname "$fmt_lib")" && pwd -P)}" ;;
  *) fmt_libdir="${MQTTBROKER_FMT_LIB_DIR:-}" ;;
esac
[ -n "$fmt_libdir" ] || fail "${CXX:-c++} finds no libfmt.so (Debian: libfmt-dev); or set MQTTBROKER_FMT_LIB_DIR"

say "the stand-in fmt/$fmt_version (the system's headers and $fmt_libdir/libfmt.so)"
MQTTBROKER_FMT_INCLUDE_DIR="$fmt_include" MQTTBROKER_FMT_LIB_DIR="$fmt_libdir" \
  conan create "$ROOT/tests/packaging/conan/fmt" --version "$fmt_version"

say "conan create packaging/conan (mqttbroker/$version), with its test_package"
# The test package builds in its own folder (these two are in .gitignore): start it afresh.
rm -rf "$ROOT/packaging/conan/test_package/build" "$ROOT/packaging/conan/test_package/CMakeUserPresets.json"
conan create "$ROOT/packaging/conan" --build=missing
# A header-only package has one binary, whatever the settings: the package id of no information.
package="$(conan cache path "mqttbroker/$version:da39a3ee5e6b4b0d3255bfef95601890afd80709" 2>/dev/null)" ||
  fail "no package mqttbroker/$version with the settings-free package id (version.hpp states $version)"
for file in licenses/LICENSE include/mqttbroker/mqttbroker.hpp include/mqttbroker/single/mqttbroker.hpp; do
  [ -f "$package/$file" ] || fail "the package lacks $file"
done

say "a separate consumer: conanfile.txt with CMakeDeps and CMakeToolchain"
copy_consumer
cat > "$WORK/consumer/conanfile.txt" <<CONANFILE
[requires]
mqttbroker/$version

[generators]
CMakeDeps
CMakeToolchain

[layout]
cmake_layout
CONANFILE
conan install "$WORK/consumer" --build=never
(
  cd "$WORK/consumer"
  cmake --preset conan-release
  cmake --build --preset conan-release
)
run_consumer "$WORK/consumer/build/Release"
say "passed"
