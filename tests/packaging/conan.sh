#!/usr/bin/env bash
# The Conan 2 recipe (packaging/conan/), tried offline: `conan create` builds the package from this
# checkout and its test_package/; then a separate consumer (tests/packaging/consumer with a
# conanfile.txt: CMakeDeps, CMakeToolchain, cmake_layout) is installed, configured with the preset
# Conan wrote, built and run. Then both again with the option with_openssl=True: the test package
# and the consumer also use the components on OpenSSL (mqttbroker::auth, tls, websocket), and the
# consumer's core program must still link no OpenSSL. Then both again with with_sqlite=True: the
# test package and the consumer also use the component sqlite (mqttbroker::sqlite, the durable
# storage), and the core program must link no SQLite. Exit 0 only when every program ran; 77 when
# Conan is not found. Where the system has no SQLite to stand in for sqlite3 (below), the sqlite
# runs are skipped, saying so, and the script fails instead when CI is set.
#
# Conan is the runtime in $MQTTBROKER_PACKAGING_TOOLS (common.sh), run by Debian's Python 3 with its
# modules (scripts/install-deps.sh); CONAN_PYTHON names another interpreter. ConanCenter cannot be
# reached, so the library's two dependencies come from stand-in recipes that package the system's
# copies: Asio's headers (tests/packaging/conan/asio), fmt's headers and shared library
# (tests/packaging/conan/fmt), OpenSSL's headers and shared libraries (tests/packaging/conan/openssl)
# and SQLite's header and shared library (tests/packaging/conan/sqlite3; Debian: libasio-dev,
# libfmt-dev, libssl-dev, libsqlite3-dev), on what they share (tests/packaging/conan/standin, a
# python_requires). Everything goes under build/packaging/conan, its Conan home included.
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
# The folder of the lib$1.so the compiler links by default (Debian: /usr/lib/<multiarch>), or $2
# where given; empty where the compiler finds none.
compiler_libdir() {
  [ -z "${2:-}" ] || { echo "$2"; return; }
  local found
  found="$("${CXX:-c++}" -print-file-name="lib$1.so")"
  case "$found" in
    /*) (cd "$(dirname "$found")" && pwd -P) ;;
  esac
}

say "the stand-ins' shared part"
conan export "$ROOT/tests/packaging/conan/standin"

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
fmt_libdir="$(compiler_libdir fmt "${MQTTBROKER_FMT_LIB_DIR:-}")"
[ -n "$fmt_libdir" ] || fail "${CXX:-c++} finds no libfmt.so (Debian: libfmt-dev); or set MQTTBROKER_FMT_LIB_DIR"

say "the stand-in fmt/$fmt_version (the system's headers and $fmt_libdir/libfmt.so)"
MQTTBROKER_FMT_INCLUDE_DIR="$fmt_include" MQTTBROKER_FMT_LIB_DIR="$fmt_libdir" \
  conan create "$ROOT/tests/packaging/conan/fmt" --version "$fmt_version"

openssl_include="${MQTTBROKER_OPENSSL_INCLUDE_DIR:-/usr/include}"
openssl_version="$(sed -n 's|^# *define OPENSSL_VERSION_TEXT *"OpenSSL \([^ "]*\).*|\1|p' \
  "$openssl_include/openssl/opensslv.h" 2>/dev/null || true)"
[ -n "$openssl_version" ] || fail "no OpenSSL headers in $openssl_include (Debian: libssl-dev)"
openssl_libdir="$(compiler_libdir ssl "${MQTTBROKER_OPENSSL_LIB_DIR:-}")"
[ -n "$openssl_libdir" ] || fail "${CXX:-c++} finds no libssl.so (Debian: libssl-dev); or set MQTTBROKER_OPENSSL_LIB_DIR"
# Where the architecture's opensslconf.h is (Debian: /usr/include/<multiarch>).
openssl_arch_include="${MQTTBROKER_OPENSSL_ARCH_INCLUDE_DIR:-}"
if [ -z "$openssl_arch_include" ] && [ ! -f "$openssl_include/openssl/opensslconf.h" ]; then
  openssl_arch_include="$openssl_include/$(basename "$openssl_libdir")"
fi

say "the stand-in openssl/$openssl_version (the system's headers, $openssl_libdir/libssl.so and libcrypto.so)"
MQTTBROKER_OPENSSL_INCLUDE_DIR="$openssl_include" MQTTBROKER_OPENSSL_ARCH_INCLUDE_DIR="$openssl_arch_include" \
  MQTTBROKER_OPENSSL_LIB_DIR="$openssl_libdir" conan create "$ROOT/tests/packaging/conan/openssl" --version "$openssl_version"

# SQLite is optional here: without it the sqlite runs below are skipped (sqlite_skipped says why).
sqlite_include="${MQTTBROKER_SQLITE3_INCLUDE_DIR:-/usr/include}"
sqlite_version="$(sed -n 's|^#define SQLITE_VERSION *"\([^"]*\)".*|\1|p' "$sqlite_include/sqlite3.h" 2>/dev/null || true)"
sqlite_libdir="$(compiler_libdir sqlite3 "${MQTTBROKER_SQLITE3_LIB_DIR:-}")"
sqlite_skipped=""
if [ -z "$sqlite_version" ] || [ -z "$sqlite_libdir" ]; then
  sqlite_skipped="no SQLite 3 header in $sqlite_include or libsqlite3.so for ${CXX:-c++} (Debian: libsqlite3-dev) to stand in for ConanCenter's sqlite3"
  [ -z "${CI:-}" ] || fail "$sqlite_skipped, and CI is set"
  say "SKIPPED: the sqlite runs: $sqlite_skipped"
else
  say "the stand-in sqlite3/$sqlite_version (the system's sqlite3.h and $sqlite_libdir/libsqlite3.so)"
  MQTTBROKER_SQLITE3_INCLUDE_DIR="$sqlite_include" MQTTBROKER_SQLITE3_LIB_DIR="$sqlite_libdir" \
    conan create "$ROOT/tests/packaging/conan/sqlite3" --version "$sqlite_version"
fi

# conan create of the recipe with its test_package, and the options given (-o ...). A header-only
# package has one binary, whatever the settings and options: the package id of no information.
# Sets package (its folder).
create_package() {
  # The test package builds in its own folder (these two are in .gitignore): start it afresh.
  rm -rf "$ROOT/packaging/conan/test_package/build" "$ROOT/packaging/conan/test_package/CMakeUserPresets.json"
  conan create "$ROOT/packaging/conan" "$@" --build=missing
  rm -rf "$ROOT/packaging/conan/test_package/build" "$ROOT/packaging/conan/test_package/CMakeUserPresets.json"
  package="$(conan cache path "mqttbroker/$version:da39a3ee5e6b4b0d3255bfef95601890afd80709" 2>/dev/null)" ||
    fail "with the options '$*', no package mqttbroker/$version with the settings-free package id (version.hpp states $version)"
}

say "conan create packaging/conan (mqttbroker/$version), with its test_package"
create_package
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
check_linked "$WORK/consumer/build/Release/packaging_consumer" no libssl libcrypto libsqlite3
# Without the options the package declares no optional component, and requires neither OpenSSL nor
# SQLite.
for part in auth tls websocket sqlite; do
  ! grep -rq "mqttbroker::$part" "$WORK/consumer/build/Release/generators" ||
    fail "without with_openssl and with_sqlite, CMakeDeps still made mqttbroker::$part"
done
for config in OpenSSLConfig SQLite3Config; do
  [ ! -e "$WORK/consumer/build/Release/generators/$config.cmake" ] ||
    fail "without with_openssl and with_sqlite, the package still required what $config.cmake finds"
done

say "conan create packaging/conan -o mqttbroker/*:with_openssl=True: the test_package tries the OpenSSL components"
create_package -o "mqttbroker/*:with_openssl=True"

say "the consumer with mqttbroker/*:with_openssl=True and the programs on auth, tls and websocket"
build_consumer consumer-openssl "mqttbroker/*:with_openssl=True" -DMQTTBROKER_CONSUMER_OPENSSL=ON
run_consumer "$WORK/consumer-openssl/build/Release"
run_consumer "$WORK/consumer-openssl/build/Release" packaging_consumer_openssl
# The core target stays without OpenSSL where the package has it; the components bring it.
check_linked "$WORK/consumer-openssl/build/Release/packaging_consumer" no libssl libcrypto
check_linked "$WORK/consumer-openssl/build/Release/packaging_consumer_openssl" yes libssl libcrypto
# PkgConfigDeps: mqttbroker.pc ($1's) is the core, as `cmake --install` writes it, requiring none
# of the libraries after $2 ('a|b' for grep); each part has its own .pc, which requires its
# library: the pairs "name library" after it.
check_pkgconfig() {
  local generators="$WORK/$1/build/Release/generators" pc name needs
  ! grep -q "^Requires:.*\($2\)" "$generators/mqttbroker.pc" ||
    fail "PkgConfigDeps' mqttbroker.pc requires one of $2: $(grep '^Requires:' "$generators/mqttbroker.pc")"
  shift 2
  for pc in "$@"; do
    read -r name needs <<<"$pc"
    grep -q "^Requires:.*\b$needs\b" "$generators/$name.pc" || fail "PkgConfigDeps' $name.pc does not require $needs"
  done
}
check_pkgconfig consumer-openssl 'libssl\|libcrypto\|openssl' \
  "mqttbroker-auth libcrypto" "mqttbroker-tls libssl" "mqttbroker-websocket libcrypto"

if [ -n "$sqlite_skipped" ]; then
  say "passed, without the sqlite runs (SKIPPED: $sqlite_skipped)"
  exit 0
fi

say "conan create packaging/conan -o mqttbroker/*:with_sqlite=True: the test_package tries the sqlite component"
create_package -o "mqttbroker/*:with_sqlite=True"

say "the consumer with mqttbroker/*:with_sqlite=True and the program on sqlite"
build_consumer consumer-sqlite "mqttbroker/*:with_sqlite=True" -DMQTTBROKER_CONSUMER_SQLITE=ON
run_consumer "$WORK/consumer-sqlite/build/Release"
run_consumer "$WORK/consumer-sqlite/build/Release" packaging_consumer_sqlite
# The core target stays without SQLite where the package has it; the component brings it.
check_linked "$WORK/consumer-sqlite/build/Release/packaging_consumer" no libsqlite3
check_linked "$WORK/consumer-sqlite/build/Release/packaging_consumer_sqlite" yes libsqlite3
check_pkgconfig consumer-sqlite sqlite3 "mqttbroker-sqlite sqlite3"
say "passed"
