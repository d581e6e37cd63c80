# Sourced by tests/packaging/conan.sh and vcpkg.sh.
#
# Exit status of those scripts: 0 when their consumer was built and ran; 77 when the tools were
# not found (a skip: scripts/test.sh makes it a failure when CI is set); anything else a failure.
#
# Env:
#   MQTTBROKER_PACKAGING_TOOLS  folder with the offline tools (default: ../shared/tools/packaging
#                               beside the repository; its README says what it holds)
#   MQTTBROKER_PACKAGING_WORK   scratch folder, emptied per script (default: build/packaging)
#   MQTTBROKER_PACKAGING_CACHE  where the vcpkg tool, once built, is kept for later runs
#                               (default: $XDG_CACHE_HOME or ~/.cache, /mqttbroker-packaging)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="${MQTTBROKER_PACKAGING_TOOLS:-$ROOT/../shared/tools/packaging}"
WORK_BASE="${MQTTBROKER_PACKAGING_WORK:-$ROOT/build/packaging}"
CACHE="${MQTTBROKER_PACKAGING_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mqttbroker-packaging}"
SKIP_STATUS=77

say() { printf '[%s] %s\n' "$PACKAGING_NAME" "$*"; }
skip() {
  say "SKIPPED: $*"
  exit "$SKIP_STATUS"
}
fail() {
  say "FAILED: $*" >&2
  exit 1
}

# The version the checkout states (include/mqttbroker/version.hpp).
checkout_version() {
  local header="$ROOT/include/mqttbroker/version.hpp" part parts=()
  for part in MAJOR MINOR PATCH; do
    parts+=("$(sed -n "s/^#define MQTTBROKER_VERSION_$part \+\([0-9]\+\).*/\1/p" "$header")")
  done
  local IFS=.
  echo "${parts[*]}"
}

# A fresh scratch folder for this script: $WORK.
fresh_work() {
  WORK="$WORK_BASE/$PACKAGING_NAME"
  rm -rf "$WORK"
  mkdir -p "$WORK"
}

# Copies the consumer project (tests/packaging/consumer) to $WORK/$1.
copy_consumer() {
  cp -r "$ROOT/tests/packaging/consumer" "$WORK/$1"
}

# Runs a consumer program built under $1 (packaging_consumer, or the one named by $2) and shows
# what it printed.
run_consumer() {
  local program="$1/${2:-packaging_consumer}" output
  [ -x "$program" ] || fail "the consumer program $program was not built"
  output="$("$program")" || fail "the consumer program failed: $output"
  say "$output"
}

# Checks whether the program $1 links each library named after $2 ($2: yes or no): the core target
# must bring no optional part's library (OpenSSL's libssl and libcrypto, SQLite's libsqlite3), each
# component its own (tls libssl, auth and websocket libcrypto, sqlite libsqlite3). Skipped where
# readelf is missing.
check_linked() {
  local program="$1" expected="$2" needed library
  shift 2
  command -v readelf >/dev/null || { say "no readelf: not checking which libraries $program links"; return 0; }
  needed="$(readelf -d "$program" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')"
  for library in "$@"; do
    if grep -q "^$library\.so" <<<"$needed"; then
      [ "$expected" = yes ] || fail "$program links $library, which it must not (mqttbroker::mqttbroker must not bring it)"
    else
      [ "$expected" = no ] || fail "$program does not link $library"
    fi
  done
}
