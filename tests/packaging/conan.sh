#!/usr/bin/env bash
# The Conan 2 recipe (packaging/conan/), tried offline: `conan create` builds the package from this
# checkout and its test_package/; then a separate consumer (tests/packaging/consumer with a
# conanfile.txt: CMakeDeps, CMakeToolchain, cmake_layout) is installed, configured with the preset
# Conan wrote, built and run. Then both again with the option with_openssl=True: the test package
# and the consumer also use the components on OpenSSL (mqttbroker::auth, tls, websocket), and the
# consumer's core program must still link no OpenSSL. Exit 0 only when every program ran; 77 when
# Conan is not found.
#
# Conan is the runtime in $MQTTBROKER_PACKAGING_TOOLS (common.sh), run by Debian's Python 3 with its
# modules (scripts/install-deps.sh); CONAN_PYTHON names another interpreter. ConanCenter cannot be
# reached, so the library's two dependencies come from stand-in recipes that package the system's
# copies: Asio's headers (tests/packaging/conan/asio), fmt's headers and shared library
# (tests/packaging/conan/fmt) and OpenSSL's headers and shared libraries (tests/packaging/conan/openssl;
# Debian: libasio-dev, libfmt-dev, libssl-dev). Everything goes under build/packaging/conan, its
# Conan home included.
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

openssl_include="${MQTTBROKER_OPENSSL_INCLUDE_DIR:-/usr/include}"
openssl_version="$(sed -n 's|^# *define OPENSSL_VERSION_TEXT *"OpenSSL \([^ "]*\).*|\1|p' \
  "$openssl_include/openssl/opensslv.h" 2>/dev/null || true)"
[ -n "$openssl_version" ] || fail "no OpenSSL headers in $openssl_include (Debian: libssl-dev)"
# The folder of the libssl.so the compiler links by default (Debian: /usr/lib/<multiarch>), and
# where the architecture's opensslconf.h is (Debian: /usr/include/<multiarch>).
openssl_lib="$("${CXX:-c++}" -print-file-name=libssl.so)"
case "$openssl_lib" in
  /*) openssl_libdir="${MQTTBROKER_OPENSSL_LIB_DIR:-$(cd "$(dirname "$openssl_lib")" && pwd -P)}" ;;
  *) openssl_libdir="${MQTTBROKER_OPENSSL_LIB_DIR:-}" ;;
esac
[ -n "$openssl_libdir" ] || fail "${CXX:-c++} finds no libssl.so (Debian: libssl-dev); or set MQTTBROKER_OPENSSL_LIB_DIR"
openssl_arch_include="${MQTTBROKER_OPENSSL_ARCH_INCLUDE_DIR:-}"
if [ -z "$openssl_arch_include" ] && [ ! -f "$openssl_include/openssl/opensslconf.h" ]; then
  openssl_arch_include="$openssl_include/$(basename "$openssl_libdir")"
fi

say "the stand-in openssl/$openssl_version (the system's headers, $openssl_libdir/libssl.so and libcrypto.so)"
MQTTBROKER_OPENSSL_INCLUDE_DIR="$openssl_include" MQTTBROKER_OPENSSL_ARCH_INCLUDE_DIR="$openssl_arch_include" \
  MQTTBROKER_OPENSSL_LIB_DIR="$openssl_libdir" conan create "$ROOT/tests/packaging/conan/openssl" --version "$openssl_version"

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

# A separate consumer: conanfile.txt with CMakeDeps and CMakeToolchain, and the given lines of
# [options]; extra arguments go to its CMake configure. Built in $WORK/$1.
build_consumer() {
  local name="$1" folder="$WORK/$1" options="$2"
  shift 2
  copy_consumer "$name"
  cat > "$folder/conanfile.txt" <<CONANFILE
[requires]
mqttbroker/$version

[options]
$options

[generators]
CMakeDeps
CMakeToolchain
PkgConfigDeps

[layout]
cmake_layout
CONANFILE
  conan install "$folder" --build=never
  (
    cd "$folder"
    cmake --preset conan-release "$@"
    cmake --build --preset conan-release
  )
}

say "a separate consumer: conanfile.txt with CMakeDeps and CMakeToolchain"
build_consumer consumer ""
run_consumer "$WORK/consumer/build/Release"
check_openssl_linked "$WORK/consumer/build/Release/packaging_consumer" no
# Without the option the package declares no component on OpenSSL, and requires no OpenSSL.
for part in auth tls websocket; do
  ! grep -rq "mqttbroker::$part" "$WORK/consumer/build/Release/generators" ||
    fail "without with_openssl, CMakeDeps still made mqttbroker::$part"
done
[ ! -e "$WORK/consumer/build/Release/generators/OpenSSLConfig.cmake" ] ||
  fail "without with_openssl, the package still required openssl"

say "conan create packaging/conan -o mqttbroker/*:with_openssl=True: the test_package tries the OpenSSL components"
rm -rf "$ROOT/packaging/conan/test_package/build" "$ROOT/packaging/conan/test_package/CMakeUserPresets.json"
conan create "$ROOT/packaging/conan" -o "mqttbroker/*:with_openssl=True" --build=missing
rm -rf "$ROOT/packaging/conan/test_package/build" "$ROOT/packaging/conan/test_package/CMakeUserPresets.json"
conan cache path "mqttbroker/$version:da39a3ee5e6b4b0d3255bfef95601890afd80709" >/dev/null 2>&1 ||
  fail "with with_openssl=True, no package with the settings-free package id"

say "the consumer with mqttbroker/*:with_openssl=True and the programs on auth, tls and websocket"
build_consumer consumer-openssl "mqttbroker/*:with_openssl=True" -DMQTTBROKER_CONSUMER_OPENSSL=ON
run_consumer "$WORK/consumer-openssl/build/Release"
run_consumer "$WORK/consumer-openssl/build/Release" packaging_consumer_openssl
# The core target stays without OpenSSL where the package has it; the components bring it.
check_openssl_linked "$WORK/consumer-openssl/build/Release/packaging_consumer" no
check_openssl_linked "$WORK/consumer-openssl/build/Release/packaging_consumer_openssl" yes
# PkgConfigDeps: mqttbroker.pc is the core, as `cmake --install` writes it; each part has its own.
generators="$WORK/consumer-openssl/build/Release/generators"
! grep -q "^Requires:.*\(libssl\|libcrypto\|openssl\)" "$generators/mqttbroker.pc" ||
  fail "PkgConfigDeps' mqttbroker.pc requires OpenSSL: $(grep '^Requires:' "$generators/mqttbroker.pc")"
for pc in "mqttbroker-auth libcrypto" "mqttbroker-tls libssl" "mqttbroker-websocket libcrypto"; do
  read -r name needs <<<"$pc"
  grep -q "^Requires:.*\b$needs\b" "$generators/$name.pc" || fail "PkgConfigDeps' $name.pc does not require $needs"
done
say "passed"
