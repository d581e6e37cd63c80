#!/usr/bin/env bash
# The project's one test command (README, .ci/run): installs what is missing, then
#   1. checks that single_include/ matches include/ (scripts/amalgamate.py --check) and that the
#      normative-statement matrix tests/conformance.json names only tests that exist and every
#      MQTT-x.y.z-n id the sources cite (scripts/check_conformance.py)
#   2. build/ci:   Debug, -Werror, everything built, ctest (unit, package and integration tests)
#   3. packages:   the Conan recipe and the vcpkg port, each built from this checkout and used by a
#                  consumer that is built and run (tests/packaging/conan.sh, vcpkg.sh), offline,
#                  with the tools from ../shared/tools/packaging (or MQTTBROKER_PACKAGING_TOOLS);
#                  without them it skips, visibly, and fails when CI is set
#   4. build/cxx20: C++20, only the compile_fail tests (the policy concepts' diagnostics)
#   5. build/asan: AddressSanitizer + UBSan (any report fails), the unit tests and the integration
#                  tests against the sanitized server on one thread and the examples (their stderr
#                  is checked too); the modules on two threads run in steps 2 and 6
#   6. build/tsan: ThreadSanitizer, the tests labelled "threads": the multi-threaded locking
#                  policy's tests and the integration tests of the server on two threads
#   7. build/fuzz: clang + libFuzzer, fuzz_decoder and fuzz_engine for FUZZ_SECONDS each (default 60),
#      fuzz_websocket and fuzz_upgrade for half that
#   8. build/cross-*: scripts/cross.sh: armhf, arm64 and i386 builds of the unit tests and the
#      server, the unit tests under qemu-user (i386 natively), the armhf server under qemu against
#      the retained-message integration module; the codec and trie tests on big-endian s390x
# Every ctest call fails when it selects no test (--no-tests=error), and each prints how many ran;
# the integration modules' own counts (with the reason of every skip) follow each run of them.
# Stops at the first failing step; the time of each step is printed at the end.
# Env: JOBS (default 2), FUZZ_SECONDS. CI (set by CI systems): a missing client (paho-mqtt,
# mosquitto-clients) fails the tests instead of skipping them (MQTTBROKER_REQUIRE_CLIENTS=1), and
# so do missing Conan and vcpkg tools.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS="${JOBS:-2}"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
if [ -n "${CI:-}" ]; then
  export MQTTBROKER_REQUIRE_CLIENTS=1
fi

step_names=()
step_seconds=()
step_name=""
step_start=$SECONDS
end_step() {
  if [ -n "$step_name" ]; then
    step_names+=("$step_name")
    step_seconds+=($((SECONDS - step_start)))
  fi
}
step() {
  end_step
  step_name="$1"
  step_start=$SECONDS
  printf '\n==== %s\n' "$*"
}

# The time of each step, also when one fails (then the failing step is the last listed), and what
# was skipped.
finished=0
skipped=()
print_times() {
  end_step
  step_name=""
  if [ "$finished" = 1 ]; then
    printf '\n==== all steps passed\n'
  else
    printf '\n==== FAILED in step: %s\n' "${step_names[${#step_names[@]}-1]:-before the first step}"
  fi
  local total=0 i
  for i in "${!step_names[@]}"; do
    printf '%5d s  %s\n' "${step_seconds[$i]}" "${step_names[$i]}"
    total=$((total + step_seconds[i]))
  done
  printf '%5d s  in all\n' "$total"
  for i in "${!skipped[@]}"; do
    printf 'SKIPPED: %s\n' "${skipped[$i]}"
  done
}
trap print_times EXIT

# A label or selection that matches nothing is an error, not a pass.
run_ctest() { ctest --no-tests=error --output-on-failure "$@"; }

# Runs ctest in build dir $1 (further ctest arguments follow), then prints what each integration
# module it ran counted; fails when fewer modules reported than it selected.
run_with_integration() {
  local dir="$1"
  shift
  local results="$dir/tests/integration/results"
  local modules
  # By name: a fixture ctest adds (mqttjs_npm_ci, the MQTT.js install) is no module.
  modules="$(ctest --test-dir "$dir" -N "$@" -L integration | grep -c ': integration_' || true)"
  rm -rf "$results"
  run_ctest --test-dir "$dir" "$@"
  echo "-- integration modules in $dir:"
  python3 tests/integration/summary.py "$results" --expect "${modules:-1}"
}

ASAN_ENV=(ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
          UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
TSAN_ENV=(TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1")

step "dependencies"
bash scripts/install-deps.sh

step "1/8 single header is up to date, conformance matrix consistent (amalgamate.py --check, check_conformance.py)"
python3 scripts/amalgamate.py --check
python3 scripts/check_conformance.py

step "2/8 build/ci: Debug, warnings as errors"
cmake -S . -B build/ci -DCMAKE_BUILD_TYPE=Debug -DMQTTBROKER_WERROR=ON \
  -DMQTTBROKER_BUILD_TESTS=ON -DMQTTBROKER_BUILD_EXAMPLES=ON -DMQTTBROKER_BUILD_BENCH=ON \
  -DMQTTBROKER_INSTALL=ON -DMQTTBROKER_SANITIZE= -DMQTTBROKER_BUILD_FUZZ=OFF
cmake --build build/ci -j "$JOBS"
run_with_integration build/ci -j "$JOBS"

step "3/8 packages: the Conan recipe and the vcpkg port, built from this checkout and consumed, offline"
# Each script exits 77 when its tools are not there: a failure in CI, a visible skip elsewhere.
for manager in conan vcpkg; do
  status=0
  bash "tests/packaging/$manager.sh" || status=$?
  if [ "$status" = 77 ]; then
    if [ -n "${CI:-}" ]; then
      echo "FAILED: tests/packaging/$manager.sh found no $manager tools, and CI is set"
      exit 1
    fi
    echo "SKIPPED: tests/packaging/$manager.sh: no $manager tools (see the line above)"
    skipped+=("tests/packaging/$manager.sh (no $manager tools)")
  elif [ "$status" != 0 ]; then
    echo "FAILED: tests/packaging/$manager.sh (status $status)"
    exit 1
  fi
done

step "4/8 build/cxx20: C++20, policy misuse fails with the concepts' diagnostics"
# Builds nothing but the compile_fail cases, which their tests build one by one.
cmake -S . -B build/cxx20 -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_STANDARD=20 -DMQTTBROKER_WERROR=ON \
  -DMQTTBROKER_BUILD_TESTS=ON -DMQTTBROKER_BUILD_EXAMPLES=OFF -DMQTTBROKER_BUILD_BENCH=OFF \
  -DMQTTBROKER_INSTALL=OFF -DMQTTBROKER_SANITIZE= -DMQTTBROKER_BUILD_FUZZ=OFF
run_ctest --test-dir build/cxx20 -L compile_fail

step "5/8 build/asan: AddressSanitizer + UndefinedBehaviorSanitizer, unit and integration tests"
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DMQTTBROKER_WERROR=ON \
  -DMQTTBROKER_SANITIZE=address,undefined -DMQTTBROKER_HEADER_CHECK=OFF \
  -DMQTTBROKER_BUILD_TESTS=ON -DMQTTBROKER_BUILD_EXAMPLES=ON -DMQTTBROKER_BUILD_BENCH=OFF \
  -DMQTTBROKER_INSTALL=OFF -DMQTTBROKER_BUILD_FUZZ=OFF
cmake --build build/asan -j "$JOBS"
# The package, compile_fail and readme tests only configure and build (the README's snippets are
# compiled, not run): build/ci ran them, and sanitizers find nothing in a build. The sanitizer
# options reach the server and the examples through the harness, which also fails a test whose
# program printed a sanitizer report.
(
  export "${ASAN_ENV[@]}"
  run_ctest --test-dir build/asan -j "$JOBS" -LE "package|integration|compile_fail|readme"
  # The server on one thread: the modules on two threads (<module>_mt) run in build/ci and under
  # ThreadSanitizer (step 6), and here they would double this step's time for the same code.
  run_with_integration build/asan -j "$JOBS" -L integration -E '_mt$'
)

step "6/8 build/tsan: ThreadSanitizer, the multi-threaded tests and the server on two threads"
cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=Debug -DMQTTBROKER_WERROR=ON \
  -DMQTTBROKER_SANITIZE=thread -DMQTTBROKER_HEADER_CHECK=OFF \
  -DMQTTBROKER_BUILD_TESTS=ON -DMQTTBROKER_BUILD_EXAMPLES=ON -DMQTTBROKER_BUILD_BENCH=OFF \
  -DMQTTBROKER_INSTALL=OFF -DMQTTBROKER_BUILD_FUZZ=OFF
tsan_targets=(mqttbroker_mt_tests mqttbroker_server)
# The SQLite store's tests and the server with its crash points too, where it is built (a thread
# of its own reports to the broker).
# (The list is read whole: `grep -q` would stop reading, and the build tool's broken pipe fails the
# pipeline under pipefail.)
tsan_help=$(cmake --build build/tsan --target help)
if [[ "$tsan_help" == *mqttbroker_sqlite_tests* ]]; then
  tsan_targets+=(mqttbroker_sqlite_tests mqttbroker_server_crashpoints)
fi
# The password file writer, which integration_config_mt runs, where OpenSSL made it.
if [[ "$tsan_help" == *mqttbroker_passwd* ]]; then
  tsan_targets+=(mqttbroker_passwd)
fi
# The cluster's tests, where nats.c made mqttbroker::nats (its threads deliver to the brokers).
if [[ "$tsan_help" == *mqttbroker_cluster_tests* ]]; then
  tsan_targets+=(mqttbroker_cluster_tests)
fi
cmake --build build/tsan -j "$JOBS" --target "${tsan_targets[@]}"
(
  export "${TSAN_ENV[@]}"
  run_ctest --test-dir build/tsan -j "$JOBS" -L threads -LE integration
  run_with_integration build/tsan -j "$JOBS" -L threads -L integration  # both labels: the _mt modules
)

step "7/8 build/fuzz: libFuzzer, the decoder and the protocol engine ${FUZZ_SECONDS} s each, the WebSocket frame and upgrade parsers half that"
cmake -S . -B build/fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMQTTBROKER_WERROR=ON \
  -DMQTTBROKER_BUILD_FUZZ=ON -DMQTTBROKER_BUILD_TESTS=OFF -DMQTTBROKER_BUILD_EXAMPLES=OFF \
  -DMQTTBROKER_BUILD_BENCH=OFF -DMQTTBROKER_INSTALL=OFF -DMQTTBROKER_SANITIZE=
cmake --build build/fuzz -j "$JOBS" --target fuzz_decoder fuzz_engine fuzz_websocket fuzz_upgrade
# New inputs go to the first folder (build/); the committed seeds are read only.
mkdir -p build/fuzz/corpus/decoder build/fuzz/corpus/engine
build/fuzz/tests/fuzz/fuzz_decoder -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 \
  -artifact_prefix=build/fuzz/ -print_final_stats=1 build/fuzz/corpus/decoder tests/fuzz/corpus
# The engine's inputs are programs of client steps (tests/fuzz/engine_fuzz.cpp); it grows its own corpus.
build/fuzz/tests/fuzz/fuzz_engine -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 \
  -artifact_prefix=build/fuzz/ -print_final_stats=1 build/fuzz/corpus/engine
# The WebSocket frame and upgrade parsers, half as long each: small state machines.
mkdir -p build/fuzz/corpus/websocket build/fuzz/corpus/upgrade
build/fuzz/tests/fuzz/fuzz_websocket -max_total_time="$((FUZZ_SECONDS / 2))" -rss_limit_mb=2048 \
  -artifact_prefix=build/fuzz/ -print_final_stats=1 build/fuzz/corpus/websocket tests/fuzz/corpus-websocket
build/fuzz/tests/fuzz/fuzz_upgrade -max_total_time="$((FUZZ_SECONDS / 2))" -rss_limit_mb=2048 \
  -artifact_prefix=build/fuzz/ -print_final_stats=1 build/fuzz/corpus/upgrade tests/fuzz/corpus-upgrade

step "8/8 build/cross-*: armhf, arm64, i386 and big-endian s390x builds, their tests under qemu-user"
JOBS="$JOBS" bash scripts/cross.sh

finished=1
