#!/usr/bin/env bash
# Runs every test: the Python suite against the installed fastoptim; the C++ tests under ctest,
# built against the installed package's torch-free kernels (compiled once, by the install) and run
# as programs that link nothing of torch; the torch-free core built from scratch for aarch64 and
# run under qemu-user (tests/aarch64.sh).
#
# Two cores are kept busy: beside the Python suite, at the lowest priority, one chain builds the
# x86 C++ tests and runs them, then builds the aarch64 core and runs its tests under qemu; its
# output is printed when the suite ends and the chain is done. Every OpenMP thread sleeps instead of
# spinning when it waits (OMP_WAIT_POLICY=PASSIVE): with programs sharing the cores, a spinning
# thread takes the time the thread it waits for needs.
#
# Without a visible GPU the CUDA kernels are only compile-checked (FASTOPTIM_CUDA_COMPILE_ONLY);
# FASTOPTIM_TEST_FULL=1 builds their test program too (and runs every configuration of the sweeps).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE
logs=build/test-logs
mkdir -p "$logs"
cuda_compile_only=ON
if [ "${FASTOPTIM_TEST_FULL:-0}" = 1 ] || nvidia-smi -L >/dev/null 2>&1; then cuda_compile_only=OFF; fi
export cuda_compile_only
beside_the_suite() {
  local generator=() prefixes x86=0
  if command -v ninja >/dev/null; then generator=(-G Ninja); fi
  prefixes="$(python -c 'import fastoptim; print(fastoptim.cmake_prefix_path)');$(python -m cmeel cmake)"
  cmake -S tests/cpp -B build/tests "${generator[@]}" -DCMAKE_PREFIX_PATH="$prefixes" \
    -DFASTOPTIM_CUDA_COMPILE_ONLY="$cuda_compile_only" >/dev/null
  cmake --build build/tests --parallel 2
  ctest --test-dir build/tests --output-on-failure || x86=$?
  bash tests/aarch64.sh
  return $x86
}
export -f beside_the_suite
setsid nice -n 19 bash -c 'set -euo pipefail; beside_the_suite' > "$logs/cpp.log" 2>&1 &
beside=$!
trap 'kill -- -$beside 2>/dev/null || true' EXIT
python -m pytest tests/python -q
status=0
wait $beside || status=$?
trap - EXIT
echo "---- the C++ tests, x86 then aarch64 under qemu (built and run beside the suite: $logs/cpp.log)"
sed -n -e '/^Test project/,/^Total Test time/p' -e '/^aarch64: not run/p' "$logs/cpp.log"
if [ $status != 0 ]; then
  cat "$logs/cpp.log"
  echo "the C++ builds or tests failed (log above: $logs/cpp.log)"
  exit 1
fi
