#!/usr/bin/env bash
# The torch-free core (kernels, edge front end and its example) cross-compiled for aarch64 with
# Debian's g++-aarch64-linux-gnu and its tests run under qemu-user, NEON kernels included.
# `tests/aarch64.sh build` only builds, `tests/aarch64.sh test` only runs the built tests (tests/run.sh
# builds while the Python suite runs); with no argument it does both.
# Installs the two packages with apt-get when they are missing and this runs as root (CI does);
# elsewhere it says what to install and stops without failing.
set -euo pipefail
cd "$(dirname "$0")/.."
phase="${1:-all}"
if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  if [ "$(id -u)" = 0 ] && [ "$phase" != test ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++-aarch64-linux-gnu qemu-user >/dev/null
  else
    echo "aarch64: not run (needs g++-aarch64-linux-gnu and qemu-user: sudo apt-get install g++-aarch64-linux-gnu qemu-user)"
    exit 0
  fi
fi
if [ "$phase" != test ]; then
  generator=()
  if command -v ninja >/dev/null; then generator=(-G Ninja); fi
  cmake -S . -B build/aarch64 "${generator[@]}" -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
    -DFASTOPTIM_WITH_TORCH=OFF -DFASTOPTIM_WITH_CUDA=OFF >/dev/null
  cmake --build build/aarch64 --parallel 2
fi
if [ "$phase" != build ]; then
  # (under emulation: a smaller large size, one full reduction block and a ragged one;
  # FASTOPTIM_TEST_FULL=1 runs every configuration in every storage variant)
  FASTOPTIM_TEST_LARGE=8219 ctest --test-dir build/aarch64 --output-on-failure
fi
