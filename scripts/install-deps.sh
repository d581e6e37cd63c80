#!/usr/bin/env bash
# Installs the Debian 12 packages that building, testing, fuzzing, benchmarking and running need.
# Skips apt entirely when everything is there already. Runs as root, or through sudo otherwise.
set -euo pipefail

PACKAGES="g++ cmake make python3 libasio-dev libfmt-dev catch2 libbenchmark-dev clang libclang-rt-14-dev mosquitto mosquitto-clients python3-paho-mqtt libcli11-dev"

missing=()
for package in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
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
