#!/usr/bin/env bash
# The torch-free core and edge ctest under AddressSanitizer and UndefinedBehaviorSanitizer, in
# build/sanitize: any memory error or undefined behaviour fails the run. Not part of tests/run.sh
# (the kernels test runs several times slower under the sanitizers); run it after changing the
# core, the drivers or the edge front end:   bash tests/sanitize.sh   (-R edge: the edge tests alone)
set -euo pipefail
cd "$(dirname "$0")/.."
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
# (OpenMP off: libgomp's thread pool is not instrumented and its allocations confuse LeakSanitizer)
cmake -S . -B build/sanitize "${generator[@]}" -DFASTOPTIM_WITH_TORCH=OFF -DFASTOPTIM_WITH_OPENMP=OFF -DFASTOPTIM_WITH_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" >/dev/null
cmake --build build/sanitize --parallel "$(nproc)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build/sanitize --output-on-failure "$@"
