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
# (tests/packaging/vcpkg/ports/asio and fmt; Debian: libasio-dev, libfmt-dev). The consumer uses
# fmt without asking for it, so it builds only if the installed package hands fmt on; and the
# dependencies vcpkg recorded for the port must name asio and fmt.
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
copy_consumer
cat > "$WORK/consumer/vcpkg.json" <<MANIFEST
{
  "name": "mqttbroker-packaging-consumer",
  "version": "0",
  "dependencies": [
    "mqttbroker"
  ]
}
MANIFEST
cat > "$WORK/consumer/vcpkg-configuration.json" <<CONFIGURATION
{
  "overlay-ports": [
    "$ROOT/packaging/vcpkg/ports",
    "$ROOT/tests/packaging/vcpkg/ports"
  ]
}
CONFIGURATION

say "manifest-mode consumer: configure with vcpkg's toolchain (installs the port), build, run"
export MQTTBROKER_PORT_SOURCE_DIR="$ROOT"
cmake -S "$WORK/consumer" -B "$WORK/consumer/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$VCPKG_ROOT/scripts/buildsystems/vcpkg.cmake"
cmake --build "$WORK/consumer/build"
# A port that vcpkg's checks complain about is not ready to submit.
if grep -n "post-build check problem" "$WORK/consumer/build/vcpkg-manifest-install.log"; then
  fail "vcpkg's post-build checks found problems in the port (above, and in $WORK/consumer/build/vcpkg-manifest-install.log)"
fi
installed="$WORK/consumer/build/vcpkg_installed"
triplet_dir="$(find "$installed" -mindepth 1 -maxdepth 1 -type d ! -name vcpkg | head -n 1)"
for file in share/mqttbroker/copyright share/mqttbroker/mqttbrokerConfig.cmake lib/pkgconfig/mqttbroker.pc \
            include/mqttbroker/mqttbroker.hpp include/mqttbroker/single/mqttbroker.hpp; do
  [ -f "$triplet_dir/$file" ] || fail "the port did not install $file (in $triplet_dir)"
done
# The stand-ins install nothing, so the consumer would build from the system's Asio and fmt even if
# the port forgot them: what vcpkg recorded as the port's dependencies must name both.
depends="$(awk '/^$/ {p = 0} /^Package: mqttbroker$/ {p = 1} p && /^Depends:/ {sub(/^Depends: */, ""); print}' \
  "$installed/vcpkg/status")"
for dependency in asio fmt; do
  [[ ", $depends," == *", $dependency,"* ]] ||
    fail "vcpkg installed mqttbroker with the dependencies '$depends', without $dependency"
done
grep -q "^Requires: fmt" "$triplet_dir/lib/pkgconfig/mqttbroker.pc" ||
  fail "the port's mqttbroker.pc does not require fmt"
run_consumer "$WORK/consumer/build"
say "passed"
