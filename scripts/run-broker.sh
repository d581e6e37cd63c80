#!/usr/bin/env bash
# The README's run command: builds the standalone server (examples/broker, the program
# `mqttbroker`) in Release and runs it with the arguments given, passed on unchanged; its own
# defaults apply to what they leave out (0.0.0.0, port 1883, memory storage). `--help` lists the
# flags, `--version` prints the version.
#
# Only the server target is built, and the build folder is configured once (cmake --build
# reconfigures by itself when a CMakeLists.txt changes), so a start with a current build takes
# about a second. Build output goes to stderr, so stdout is the program's alone.
# Env: MQTTBROKER_BUILD_DIR (default build/release), JOBS (default 2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh --run >&2

build="${MQTTBROKER_BUILD_DIR:-build/release}"
if ! grep -qx 'MQTTBROKER_BUILD_EXAMPLES:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMQTTBROKER_BUILD_EXAMPLES=ON \
    -DMQTTBROKER_BUILD_TESTS=OFF -DMQTTBROKER_BUILD_BENCH=OFF -DMQTTBROKER_BUILD_FUZZ=OFF \
    -DMQTTBROKER_SANITIZE= >&2
fi
cmake --build "$build" --target mqttbroker_server -j "${JOBS:-2}" >&2

program="$build/examples/mqttbroker"
if [ ! -x "$program" ]; then
  echo "run-broker.sh: $program was not built" >&2
  exit 1
fi
exec "$program" "$@"
