#!/usr/bin/env bash
# The library on the machines gateways are: cross builds with Debian's cross toolchains
# (cmake/toolchains/), each with warnings as errors, run under qemu-user.
#   armhf, arm64: the unit tests and the example server built; the unit tests run under qemu; the
#                 armhf server also answers the retained-message integration module under qemu
#   i386:         the same built, the unit tests run natively (an x86-64 kernel runs i386 code)
#   s390x:        big-endian: the codec's and the topic trie's tests only (MQTTBROKER_UNIT_TESTS)
# Usage: scripts/cross.sh [ARCH...]   (default: armhf arm64 i386 s390x)
# Needs scripts/install-deps.sh --cross (scripts/test.sh installs everything). Env: JOBS (2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS="${JOBS:-2}"
arches=("$@")
[ ${#arches[@]} -eq 0 ] && arches=(armhf arm64 i386 s390x)

# The files of the big-endian check: everything that reads or writes bytes of the wire, and the
# trie and retained store, which hash topic levels word at a time.
big_endian_tests="error.cpp;codec.cpp;codec_malformed.cpp;message.cpp;topic.cpp;router.cpp"

emulator_of() {
  case "$1" in
    armhf) echo qemu-arm ;;
    arm64) echo qemu-aarch64 ;;
    s390x) echo qemu-s390x ;;
    i386) echo "" ;;
    *) echo "cross.sh: unknown architecture '$1' (armhf, arm64, i386, s390x)" >&2; exit 2 ;;
  esac
}

for arch in "${arches[@]}"; do
  emulator="$(emulator_of "$arch")"
  dir="build/cross-$arch"
  start=$SECONDS
  echo "== $arch: configure and build ($dir)"
  extra=()
  targets=(mqttbroker_tests mqttbroker_server)
  if [ "$arch" = s390x ]; then
    extra=(-DMQTTBROKER_UNIT_TESTS="$big_endian_tests" -DMQTTBROKER_BUILD_EXAMPLES=OFF)
    targets=(mqttbroker_tests)
  fi
  # -O1 without debug information, assertions on: quicker to compile than -O2 with -g, and several
  # times quicker under the emulator than -O0.
  cmake -S . -B "$dir" -DCMAKE_TOOLCHAIN_FILE="cmake/toolchains/$arch.cmake" \
    -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-O1 -DMQTTBROKER_WERROR=ON \
    -DMQTTBROKER_HEADER_CHECK=OFF -DMQTTBROKER_BUILD_TESTS=ON -DMQTTBROKER_BUILD_EXAMPLES=ON \
    -DMQTTBROKER_BUILD_BENCH=OFF -DMQTTBROKER_INSTALL=OFF -DMQTTBROKER_BUILD_FUZZ=OFF \
    -DMQTTBROKER_SANITIZE= "${extra[@]}" >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
  cmake --build "$dir" -j "$JOBS" --target "${targets[@]}"
  built=$((SECONDS - start))

  echo "== $arch: unit tests${emulator:+ under $emulator}"
  readelf -h "$dir/tests/mqttbroker_tests" | grep -E 'Class|Data|Machine'
  # Catch's own summary says how many ran; a crash or a failed assertion fails the script.
  $emulator "$dir/tests/mqttbroker_tests"

  if [ "$arch" = armhf ]; then
    echo "== armhf: the server under qemu-arm against the retained-message integration module"
    # The harness starts MQTTBROKER_SERVER with its arguments: this wrapper puts qemu in front, and
    # exec hands it the signals the harness sends.
    wrapper="$dir/mqttbroker-under-qemu"
    printf '#!/bin/sh\nexec qemu-arm "%s" "$@"\n' "$PWD/$dir/examples/mqttbroker" >"$wrapper"
    chmod +x "$wrapper"
    # Debian's python3, which has python3-paho-mqtt.
    MQTTBROKER_SERVER="$PWD/$wrapper" /usr/bin/python3 -B tests/integration/test_retained.py
  fi
  echo "== $arch: passed (built in ${built} s, all in $((SECONDS - start)) s)"
done
