#!/usr/bin/env bash
# The project's one test command (README, .ci/run): installs what is missing, then
#   1. checks that single_include/ matches include/ (scripts/amalgamate.py --check)
#   2. build/ci:   Debug, -Werror, everything built, ctest
#   3. build/cxx20: C++20, only the compile_fail tests (the policy concepts' diagnostics)
#   4. build/asan: AddressSanitizer + UBSan (any report fails), ctest
#   5. build/tsan: ThreadSanitizer, the multi-threaded locking policy's tests
#   6. build/fuzz: clang + libFuzzer, fuzz_decoder and fuzz_engine for FUZZ_SECONDS each (default 60)
# Stops at the first failing step. Env: JOBS (default 2), FUZZ_SECONDS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS="${JOBS:-2}"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
step() { printf '\n==== %s\n' "$*"; }

step "dependencies"
bash scripts/install-deps.sh

step "1/6 single header is up to date (scripts/amalgamate.py --check)"
python3 scripts/amalgamate.py --check

step "2/6 build/ci: Debug, warnings as errors"
cmake -S . -B build/ci -DCMAKE_BUILD_TYPE=Debug -DMQTTBROKER_WERROR=ON \
  -DMQTTBROKER_BUILD_TESTS=ON -DMQTTBROKER_BUILD_EXAMPLES=ON -DMQTTBROKER_BUILD_BENCH=ON \
  -DMQTTBROKER_INSTALL=ON -DMQTTBROKER_SANITIZE= -DMQTTBROKER_BUILD_FUZZ=OFF
cmake --build build/ci -j "$JOBS"
ctest --test-dir build/ci --output-on-failure -j "$JOBS"

step "3/6 build/cxx20: C++20, policy misuse fails with the concepts' diagnostics"
# Builds nothing but the compile_fail cases, which their tests build one by one.
cmake -S . -B build/cxx20 -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_STANDARD=20 -DMQTTBROKER_WERROR=ON \
  -DMQTTBROKER_BUILD_TESTS=ON -DMQTTBROKER_BUILD_EXAMPLES=OFF -DMQTTBROKER_BUILD_BENCH=OFF \
  -DMQTTBROKER_INSTALL=OFF -DMQTTBROKER_SANITIZE= -DMQTTBROKER_BUILD_FUZZ=OFF
ctest --test-dir build/cxx20 --output-on-failure --no-tests=error -L compile_fail

step "4/6 build/asan: AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DMQTTBROKER_WERROR=ON \
  -DMQTTBROKER_SANITIZE=address,undefined -DMQTTBROKER_HEADER_CHECK=OFF \
  -DMQTTBROKER_BUILD_TESTS=ON -DMQTTBROKER_BUILD_EXAMPLES=OFF -DMQTTBROKER_BUILD_BENCH=OFF \
  -DMQTTBROKER_INSTALL=OFF -DMQTTBROKER_BUILD_FUZZ=OFF
cmake --build build/asan -j "$JOBS"
# The package and compile_fail tests only configure and build; build/ci ran them.
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
  ctest --test-dir build/asan --output-on-failure -j "$JOBS" -LE "package|compile_fail"

step "5/6 build/tsan: ThreadSanitizer on the multi-threaded locking policy"
cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=Debug -DMQTTBROKER_WERROR=ON \
  -DMQTTBROKER_SANITIZE=thread -DMQTTBROKER_HEADER_CHECK=OFF \
  -DMQTTBROKER_BUILD_TESTS=ON -DMQTTBROKER_BUILD_EXAMPLES=OFF -DMQTTBROKER_BUILD_BENCH=OFF \
  -DMQTTBROKER_INSTALL=OFF -DMQTTBROKER_BUILD_FUZZ=OFF
cmake --build build/tsan -j "$JOBS" --target mqttbroker_mt_tests
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  ctest --test-dir build/tsan --output-on-failure -L threads

step "6/6 build/fuzz: libFuzzer, the decoder then the protocol engine, ${FUZZ_SECONDS} s each"
cmake -S . -B build/fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMQTTBROKER_WERROR=ON \
  -DMQTTBROKER_BUILD_FUZZ=ON -DMQTTBROKER_BUILD_TESTS=OFF -DMQTTBROKER_BUILD_EXAMPLES=OFF \
  -DMQTTBROKER_BUILD_BENCH=OFF -DMQTTBROKER_INSTALL=OFF -DMQTTBROKER_SANITIZE=
cmake --build build/fuzz -j "$JOBS" --target fuzz_decoder fuzz_engine
# New inputs go to the first folder (build/); the committed seeds are read only.
mkdir -p build/fuzz/corpus/decoder build/fuzz/corpus/engine
build/fuzz/tests/fuzz/fuzz_decoder -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 \
  -artifact_prefix=build/fuzz/ -print_final_stats=1 build/fuzz/corpus/decoder tests/fuzz/corpus
# The engine's inputs are programs of client steps (tests/fuzz/engine_fuzz.cpp); it grows its own corpus.
build/fuzz/tests/fuzz/fuzz_engine -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 \
  -artifact_prefix=build/fuzz/ -print_final_stats=1 build/fuzz/corpus/engine

step "all steps passed"
