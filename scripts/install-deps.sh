#!/usr/bin/env bash
# Installs the Debian 12 packages that building, testing, fuzzing, benchmarking and running need.
#   install-deps.sh         everything scripts/test.sh needs
#   install-deps.sh --run   only what building and running the server needs (scripts/run-broker.sh)
# Skips apt entirely when everything is there already. Runs as root, or through sudo otherwise.
set -euo pipefail

# The library: a compiler, CMake, Asio and fmt. The examples: CLI11; the server's --persistence:
# SQLite 3 (mqttbroker::sqlite).
RUN_PACKAGES="g++ cmake make libasio-dev libfmt-dev libcli11-dev libsqlite3-dev"
# Tests, fuzzers and benchmarks; nodejs and npm (Node 18 is enough) for the MQTT.js integration
# tests; chromium, the browser the WebSocket browser test runs headless; libssl-dev for mqttbroker::auth (SCRAM-SHA-256), mqttbroker::tls (the TLS transport), their
# tests and the engine fuzzer; openssl, the command line the TLS tests make their certificates with; curl,
# the scraper of the metrics test; pkgconf
# for the pkg-config test of the install; for
# tests/packaging/: ninja-build and libcurl4-openssl-dev build the vcpkg tool and its ports, and
# Conan (a Python program, unpacked from ../shared/tools/packaging/) runs on Debian's Python modules.
TEST_PACKAGES="python3 catch2 libssl-dev openssl libbenchmark-dev clang libclang-rt-14-dev mosquitto mosquitto-clients
  python3-paho-mqtt nodejs npm chromium pkgconf ninja-build libcurl4-openssl-dev curl
  python3-requests python3-urllib3 python3-yaml python3-jinja2 python3-fasteners python3-distro
  python3-dateutil python3-colorama python3-patch-ng"

case "${1:-}" in
  "") PACKAGES="$RUN_PACKAGES $TEST_PACKAGES" ;;
  --run) PACKAGES="$RUN_PACKAGES" ;;
  *) echo "usage: install-deps.sh [--run]" >&2; exit 2 ;;
esac

# nodejs and npm (the MQTT.js tests) count as there when their commands are: a node from elsewhere,
# such as NodeSource's nodejs, which bundles npm and conflicts with Debian's npm package, serves too.
# So does a chromium command that is no Debian package (CMake looks for chromium and chromium-browser).
command_present() {
  case "$1" in
    nodejs) command -v node >/dev/null 2>&1 ;;
    npm) command -v npm >/dev/null 2>&1 ;;
    chromium) command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 ;;
    *) return 1 ;;
  esac
}

missing=()
for package in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" &&
     ! command_present "$package"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install-deps.sh: missing packages (${missing[*]}) and neither root nor sudo" >&2
  exit 1
fi

echo "== installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
