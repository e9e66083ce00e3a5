#!/usr/bin/env bash
# Runs every test: the Python suite against the installed fastoptim; then the C++ tests under ctest,
# built against the installed package's torch-free kernels (compiled once, by the install) and run
# as programs that link nothing of torch; then the torch-free core built from scratch for aarch64
# and run under qemu-user (tests/aarch64.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest tests/python -q
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
prefixes="$(python -c 'import fastoptim; print(fastoptim.cmake_prefix_path)');$(python -m cmeel cmake)"
cmake -S tests/cpp -B build/tests "${generator[@]}" -DCMAKE_PREFIX_PATH="$prefixes" >/dev/null
cmake --build build/tests --parallel 2
ctest --test-dir build/tests --output-on-failure
bash tests/aarch64.sh
