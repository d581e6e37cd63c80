#!/usr/bin/env bash
# The README's run command: builds examples/broker in Release and runs it on port 1883.
# Extra arguments go to the broker: scripts/run-broker.sh --verbose
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh

if [ ! -f examples/CMakeLists.txt ] || [ ! -d examples/broker ]; then
  echo "run-broker.sh: examples/broker/ does not exist yet: there is no broker program to run" >&2
  exit 1
fi

cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DMQTTBROKER_BUILD_EXAMPLES=ON \
  -DMQTTBROKER_BUILD_TESTS=OFF -DMQTTBROKER_BUILD_BENCH=OFF -DMQTTBROKER_BUILD_FUZZ=OFF \
  -DMQTTBROKER_SANITIZE=
cmake --build build/release -j "${JOBS:-2}"

program=""
for candidate in build/release/examples/broker/mqttbroker build/release/examples/mqttbroker; do
  if [ -x "$candidate" ] && [ ! -d "$candidate" ]; then
    program="$candidate"
    break
  fi
done
if [ -z "$program" ]; then
  echo "run-broker.sh: no broker program built (examples/ must produce an executable named mqttbroker)" >&2
  exit 1
fi
exec "$program" --port 1883 "$@"
