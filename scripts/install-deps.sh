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
# Conan (a Python program, unpacked from ../shared/tools/packaging/) runs on Debian's Python modules;
# libnats-dev (nats.c 3.4) and nats-server (2.9, with JetStream) for the cluster policy and its tests.
TEST_PACKAGES="python3 catch2 libssl-dev openssl libbenchmark-dev clang libclang-rt-14-dev mosquitto mosquitto-clients
  python3-paho-mqtt nodejs npm chromium pkgconf ninja-build libcurl4-openssl-dev curl
  python3-requests python3-urllib3 python3-yaml python3-jinja2 python3-fasteners python3-distro
  python3-dateutil python3-colorama python3-patch-ng
  libnats-dev nats-server"

# scripts/cross.sh: Debian's cross toolchains, the target's fmt through multiarch (which brings the
# target's libc, the root qemu-user runs the binaries in), and qemu-user. armhf and arm64 are the
# gateways' machines, i386 a 32-bit x86, s390x a big-endian one.
CROSS_ARCHES="armhf arm64 i386 s390x"
CROSS_PACKAGES="qemu-user"
for arch in $CROSS_ARCHES; do
  CROSS_PACKAGES="$CROSS_PACKAGES crossbuild-essential-$arch libfmt-dev:$arch"
done

case "${1:-}" in
  "") PACKAGES="$RUN_PACKAGES $TEST_PACKAGES $CROSS_PACKAGES" ;;
  --run) PACKAGES="$RUN_PACKAGES" ;;
  --cross) PACKAGES="$RUN_PACKAGES catch2 python3 python3-paho-mqtt mosquitto-clients $CROSS_PACKAGES" ;;
  *) echo "usage: install-deps.sh [--run | --cross]" >&2; exit 2 ;;
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
# The cross packages' architectures, where a missing package is one of theirs.
if [[ " ${missing[*]}" == *:* ]]; then
  for arch in $CROSS_ARCHES; do
    dpkg --print-foreign-architectures | grep -qx "$arch" || "${as_root[@]}" dpkg --add-architecture "$arch"
  done
fi
# A mirror caught mid-sync fails one index (seen here: bookworm-security's armhf and i386 lists);
# try again, then go on with the lists that came: the install below fails if what it needs is
# not in them.
updated=0
for attempt in 1 2 3; do
  if "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q; then
    updated=1
    break
  fi
  echo "install-deps.sh: apt-get update failed (attempt $attempt of 3)" >&2
  sleep $((attempt * 5))
done
[ "$updated" = 1 ] || echo "install-deps.sh: going on with the package lists apt-get update could fetch" >&2
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
