#!/usr/bin/env bash
# Runs every test: the Python suite against the installed fastoptim; the C++ tests under ctest,
# built against the installed package's torch-free kernels (compiled once, by the install) and run
# as programs that link nothing of torch; the torch-free core built from scratch for aarch64 and
# run under qemu-user (tests/aarch64.sh).
#
# Two cores are kept busy: beside the Python suite, at the lowest priority, one chain builds the
# x86 C++ tests, then builds the aarch64 core and runs its tests under qemu; when the suite ends,
# the x86 C++ tests run while that chain finishes. Every OpenMP thread sleeps instead of spinning
# when it waits (OMP_WAIT_POLICY=PASSIVE): with programs sharing the cores, a spinning thread takes
# the time the thread it waits for needs.
#
# Without a visible GPU the CUDA kernels are only compile-checked (FASTOPTIM_CUDA_COMPILE_ONLY);
# FASTOPTIM_TEST_FULL=1 builds their test program too (and runs every configuration of the sweeps).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE
logs=build/test-logs
mkdir -p "$logs"
rm -f "$logs/x86-built"
cuda_compile_only=ON
if [ "${FASTOPTIM_TEST_FULL:-0}" = 1 ] || nvidia-smi -L >/dev/null 2>&1; then cuda_compile_only=OFF; fi
export cuda_compile_only logs
beside_the_suite() {
  local generator=() prefixes
  if command -v ninja >/dev/null; then generator=(-G Ninja); fi
  prefixes="$(python -c 'import fastoptim; print(fastoptim.cmake_prefix_path)');$(python -m cmeel cmake)"
  cmake -S tests/cpp -B build/tests "${generator[@]}" -DCMAKE_PREFIX_PATH="$prefixes" \
    -DFASTOPTIM_CUDA_COMPILE_ONLY="$cuda_compile_only" >/dev/null
  cmake --build build/tests --parallel 2
  touch "$logs/x86-built"
  bash tests/aarch64.sh
}
export -f beside_the_suite
setsid nice -n 19 bash -c 'set -euo pipefail; beside_the_suite' > "$logs/beside-the-suite.log" 2>&1 &
beside=$!
trap 'kill -- -$beside 2>/dev/null || true' EXIT
python -m pytest tests/python -q
while [ ! -e "$logs/x86-built" ] && kill -0 $beside 2>/dev/null; do sleep 1; done
if [ ! -e "$logs/x86-built" ]; then
  cat "$logs/beside-the-suite.log"
  echo "the x86 C++ build failed (log above: $logs/beside-the-suite.log)"
  exit 1
fi
ctest --test-dir build/tests --output-on-failure
status=0
wait $beside || status=$?
trap - EXIT
echo "---- aarch64 (build and qemu tests, beside the suite: $logs/beside-the-suite.log)"
if grep -q '^Test project' "$logs/beside-the-suite.log"; then
  sed -n '/^Test project/,$p' "$logs/beside-the-suite.log"
else
  tail -n 3 "$logs/beside-the-suite.log"
fi
if [ $status != 0 ]; then
  cat "$logs/beside-the-suite.log"
  echo "the aarch64 build or tests failed (log above)"
  exit 1
fi
