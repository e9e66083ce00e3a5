#!/usr/bin/env bash
# Runs every test: the Python suite against the installed fastoptim and, beside it (the suite keeps
# about one of two cores busy, so the two together take about as long as the suite alone), the C++
# tests under ctest, built against the installed package's torch-free kernels (compiled once, by the
# install) and run as programs that link nothing of torch, then the torch-free core built from
# scratch for aarch64 and run under qemu-user (tests/aarch64.sh). The C++ part writes its log to
# build/test-logs/cpp.log, shown after the suite; the run fails when either part fails.
set -euo pipefail
cd "$(dirname "$0")/.."
logs=build/test-logs
mkdir -p "$logs"

cpp_tests() {
  local generator=()
  if command -v ninja >/dev/null; then generator=(-G Ninja); fi
  local prefixes
  prefixes="$(python -c 'import fastoptim; print(fastoptim.cmake_prefix_path)');$(python -m cmeel cmake)"
  cmake -S tests/cpp -B build/tests "${generator[@]}" -DCMAKE_PREFIX_PATH="$prefixes" >/dev/null
  cmake --build build/tests --parallel 2
  ctest --test-dir build/tests --output-on-failure
  bash tests/aarch64.sh
}

(set -euo pipefail; cpp_tests) >"$logs/cpp.log" 2>&1 </dev/null &
cpp=$!
trap 'kill "$cpp" 2>/dev/null || true' EXIT  # (an interrupted suite stops the C++ part too)

failed=()
python -m pytest tests/python -q || failed+=("the Python suite")
wait "$cpp" || failed+=("the C++ tests (build/test-logs/cpp.log)")
echo "---- the C++ tests and aarch64 (build/test-logs/cpp.log) ----"
cat "$logs/cpp.log"
if ((${#failed[@]})); then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
