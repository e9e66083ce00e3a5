#!/usr/bin/env bash
# Runs every test: the Python suite against the installed fastoptim, then the torch-free core
# (built with nothing but a compiler and Eigen) under ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest tests/python -q
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
cmake -S . -B build/core "${generator[@]}" -DFASTOPTIM_WITH_TORCH=OFF >/dev/null
cmake --build build/core --parallel 2
ctest --test-dir build/core --output-on-failure
bash tests/aarch64.sh
