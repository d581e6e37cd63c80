#!/usr/bin/env bash
# The vcpkg port (packaging/vcpkg/ports/mqttbroker), tried offline: a manifest-mode consumer
# (tests/packaging/consumer with a vcpkg.json and a vcpkg-configuration.json naming the overlay
# ports) is configured with vcpkg's toolchain file, which installs the port from this checkout;
# then it is built and run. Exit 0 only when the consumer ran; 77 when the vcpkg sources are not
# found.
#
# The vcpkg tool is built from the sources in $MQTTBROKER_PACKAGING_TOOLS (common.sh) once, about
# three to five minutes on two cores, and kept in $MQTTBROKER_PACKAGING_CACHE for later runs. Every
# download is blocked (x-block-origin), so a port that would fetch something fails. The port takes
# its sources from this checkout through MQTTBROKER_PORT_SOURCE_DIR; the library's two dependencies
# come from stand-in ports that install nothing and leave the system's copies where they are
# (tests/packaging/vcpkg/ports/asio, fmt, openssl and sqlite3; Debian: libasio-dev, libfmt-dev,
# libssl-dev, libsqlite3-dev). The consumer uses fmt without asking for it, so it builds only if the
# installed package hands fmt on; and the dependencies vcpkg recorded for the port must name asio
# and fmt. Installed without features, the package must claim no component on OpenSSL or SQLite
# (though the system has both); then a second consumer asks for mqttbroker[openssl] and builds and
# runs a program on the components auth, tls and websocket, and vcpkg must have recorded openssl
# for that feature; a third likewise for mqttbroker[sqlite], the component sqlite and sqlite3.
# Where the system has no SQLite for the stand-in sqlite3 port, the third is skipped, saying so
# (a failure when CI is set).
PACKAGING_NAME=vcpkg
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tool_src="$TOOLS/vcpkg-tool-src.tgz"
root_tgz="$TOOLS/vcpkg-root.tgz"
[ -f "$tool_src" ] && [ -f "$root_tgz" ] || skip "no vcpkg-tool-src.tgz and vcpkg-root.tgz in $TOOLS"

fresh_work

# The tool, keyed by its sources, so new sources build a new one.
key="$(sha256sum "$tool_src" | cut -c1-16)"
tool="$CACHE/vcpkg-$key/vcpkg"
if [ ! -x "$tool" ]; then
  say "building the vcpkg tool (once; kept in $CACHE)"
  src="$WORK/tool-src"
  mkdir -p "$src"
  tar -xzf "$tool_src" -C "$src"
  cmake -S "$src/vcpkg-tool" -B "$WORK/tool-build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DVCPKG_DEVELOPMENT_WARNINGS=OFF -DVCPKG_LIBCURL_DLSYM=OFF -DFETCHCONTENT_FULLY_DISCONNECTED=ON \
    -DFETCHCONTENT_SOURCE_DIR_FMT="$src/fmt" -DFETCHCONTENT_SOURCE_DIR_CMAKERC="$src/cmrc" >/dev/null
  cmake --build "$WORK/tool-build" -j "${JOBS:-2}" --target vcpkg >/dev/null
  mkdir -p "$(dirname "$tool")"
  cp "$WORK/tool-build/vcpkg" "$tool.partial"
  mv "$tool.partial" "$tool"
  rm -rf "$src" "$WORK/tool-build"
fi

export VCPKG_ROOT="$WORK/root"
mkdir -p "$VCPKG_ROOT"
tar -xzf "$root_tgz" -C "$VCPKG_ROOT"
cp "$tool" "$VCPKG_ROOT/vcpkg"
export VCPKG_FORCE_SYSTEM_BINARIES=1 VCPKG_DISABLE_METRICS=1 VCPKG_BINARY_SOURCES=clear \
       X_VCPKG_ASSET_SOURCES='clear;x-block-origin' VCPKG_DOWNLOADS="$WORK/downloads"
mkdir -p "$VCPKG_DOWNLOADS"
say "$("$VCPKG_ROOT/vcpkg" version | head -n 1)"

version="$(checkout_version)"
export MQTTBROKER_PORT_SOURCE_DIR="$ROOT"

# A manifest-mode consumer in $WORK/$1 whose manifest depends on $2 (a JSON value: "mqttbroker",
# or an object naming features), configured with vcpkg's toolchain file (which installs the port)
# and the further CMake arguments given, then built. Sets consumer_build and triplet_dir (the
# installed triplet's folder).
build_consumer() {
  local name="$1" folder="$WORK/$1" dependency="$2"
  shift 2
  copy_consumer "$name"
  cat > "$folder/vcpkg.json" <<MANIFEST
{
  "name": "mqttbroker-packaging-consumer",
  "version": "0",
  "dependencies": [
    $dependency
  ]
}
MANIFEST
  cat > "$folder/vcpkg-configuration.json" <<CONFIGURATION
{
  "overlay-ports": [
    "$ROOT/packaging/vcpkg/ports",
    "$ROOT/tests/packaging/vcpkg/ports"
  ]
}
CONFIGURATION
  consumer_build="$folder/build"
  cmake -S "$folder" -B "$consumer_build" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_TOOLCHAIN_FILE="$VCPKG_ROOT/scripts/buildsystems/vcpkg.cmake" "$@"
  cmake --build "$consumer_build"
  # A port that vcpkg's checks complain about is not ready to submit.
  if grep -n "post-build check problem" "$consumer_build/vcpkg-manifest-install.log"; then
    fail "vcpkg's post-build checks found problems in the port (above, and in $consumer_build/vcpkg-manifest-install.log)"
  fi
  triplet_dir="$(find "$consumer_build/vcpkg_installed" -mindepth 1 -maxdepth 1 -type d ! -name vcpkg | head -n 1)"
}

# What vcpkg recorded as the dependencies of mqttbroker (no argument) or of its feature $1, from
# the status file of the consumer just built.
recorded_depends() {
  awk -v feature="${1:-}" '
    /^$/ { if (p && f == feature) print d; p = 0; f = ""; d = "" }
    /^Package: mqttbroker$/ { p = 1 }
    /^Feature: / { f = $2 }
    /^Depends:/ { d = $0; sub(/^Depends: */, "", d) }
    END { if (p && f == feature) print d }' "$consumer_build/vcpkg_installed/vcpkg/status"
}

say "manifest-mode consumer: configure with vcpkg's toolchain (installs the port), build, run"
build_consumer consumer '"mqttbroker"'
for file in share/mqttbroker/copyright share/mqttbroker/mqttbrokerConfig.cmake lib/pkgconfig/mqttbroker.pc \
            include/mqttbroker/mqttbroker.hpp include/mqttbroker/single/mqttbroker.hpp; do
  [ -f "$triplet_dir/$file" ] || fail "the port did not install $file (in $triplet_dir)"
done
# The stand-ins install nothing, so the consumer would build from the system's Asio and fmt even if
# the port forgot them: what vcpkg recorded as the port's dependencies must name both.
depends="$(recorded_depends)"
for dependency in asio fmt; do
  [[ ", $depends," == *", $dependency,"* ]] ||
    fail "vcpkg installed mqttbroker with the dependencies '$depends', without $dependency"
done
for dependency in openssl sqlite3; do
  [[ ", $depends," != *", $dependency,"* ]] || fail "without features, vcpkg installed mqttbroker on $dependency"
done
grep -q "^Requires: fmt" "$triplet_dir/lib/pkgconfig/mqttbroker.pc" ||
  fail "the port's mqttbroker.pc does not require fmt"
# Without features the system's OpenSSL and SQLite must not have been used: no component's export
# file.
for part in Auth Tls Websocket Sqlite; do
  [ ! -e "$triplet_dir/share/mqttbroker/mqttbroker${part}Targets.cmake" ] ||
    fail "without features, the port installed mqttbroker${part}Targets.cmake"
done
run_consumer "$consumer_build"
check_linked "$consumer_build/packaging_consumer" no libssl libcrypto libsqlite3

# A consumer of mqttbroker[$1], a feature on the port $2: it builds packaging_consumer_$1 too
# (-D$3=ON), which must link the libraries $4 ('a b') that the core program must not; the port
# must have installed the export files of the components after that (mqttbroker<Name>Targets.cmake)
# and vcpkg recorded $2 as the feature's dependency.
feature_consumer() {
  local feature="$1" port="$2" switch="$3" libraries part parts
  read -ra libraries <<<"$4"
  shift 4
  parts="$*"
  say "a consumer of mqttbroker[$feature]: the components ${parts,,}"
  build_consumer "consumer-$feature" "{ \"name\": \"mqttbroker\", \"features\": [ \"$feature\" ] }" "-D$switch=ON"
  for part in "$@"; do
    [ -f "$triplet_dir/share/mqttbroker/mqttbroker${part}Targets.cmake" ] ||
      fail "with the feature $feature, the port did not install mqttbroker${part}Targets.cmake"
  done
  depends="$(recorded_depends "$feature")"
  [[ ", $depends," == *", $port,"* ]] ||
    fail "vcpkg installed mqttbroker[$feature] with the feature's dependencies '$depends', without $port"
  run_consumer "$consumer_build"
  run_consumer "$consumer_build" "packaging_consumer_$feature"
  check_linked "$consumer_build/packaging_consumer" no "${libraries[@]}"
  check_linked "$consumer_build/packaging_consumer_$feature" yes "${libraries[@]}"
}

feature_consumer openssl openssl MQTTBROKER_CONSUMER_OPENSSL "libssl libcrypto" Auth Tls Websocket

# The stand-in sqlite3 port leaves the system's SQLite where it is: without one, that part is
# skipped.
if [ ! -f /usr/include/sqlite3.h ] || [[ "$("${CXX:-c++}" -print-file-name=libsqlite3.so)" != /* ]]; then
  reason="no SQLite 3 in /usr/include or libsqlite3.so for ${CXX:-c++} (Debian: libsqlite3-dev) for the stand-in sqlite3 port"
  [ -z "${CI:-}" ] || fail "$reason, and CI is set"
  say "passed, without the consumer of mqttbroker[sqlite] (SKIPPED: $reason)"
  exit 0
fi
feature_consumer sqlite sqlite3 MQTTBROKER_CONSUMER_SQLITE libsqlite3 Sqlite
say "passed"
