#!/usr/bin/env bash
# Runs every test: the Python suite against the installed fastoptim; then the C++ tests under ctest,
# built against the installed package's torch-free kernels (compiled once, by the install) and run
# as programs that link nothing of torch; then the torch-free core built from scratch for aarch64
# and run under qemu-user (tests/aarch64.sh).
#
# The two C++ builds run while the Python suite does, at the lowest priority, on the part of the two
# cores the suite leaves idle; the suite's OpenMP threads sleep instead of spinning when they wait
# (OMP_WAIT_POLICY=PASSIVE), which leaves that part larger. Only the builds overlap: the C++ tests
# run after the suite, since OpenMP steps that share cores wait on each other's threads.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/test-logs
build_log=build/test-logs/cpp-build.log
build_cpp() {
  local generator=() prefixes
  if command -v ninja >/dev/null; then generator=(-G Ninja); fi
  prefixes="$(python -c 'import fastoptim; print(fastoptim.cmake_prefix_path)');$(python -m cmeel cmake)"
  cmake -S tests/cpp -B build/tests "${generator[@]}" -DCMAKE_PREFIX_PATH="$prefixes" >/dev/null
  cmake --build build/tests --parallel 2
  bash tests/aarch64.sh build
}
export -f build_cpp
setsid nice -n 19 bash -c 'set -euo pipefail; build_cpp' > "$build_log" 2>&1 &
builds=$!
trap 'kill -- -$builds 2>/dev/null || true' EXIT
OMP_WAIT_POLICY=PASSIVE python -m pytest tests/python -q
if ! wait $builds; then
  cat "$build_log"
  echo "the C++ builds failed (log above: $build_log)"
  exit 1
fi
trap - EXIT
ctest --test-dir build/tests --output-on-failure
bash tests/aarch64.sh test
