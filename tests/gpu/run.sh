#!/usr/bin/env bash
# The GPU check (issue 18), one prepared script for a machine with an NVIDIA GPU, nvcc and cmake
# (the lent H200: torch 2.11+cu130, nvcc 13, no network). From the repository root:
#
#     bash tests/gpu/run.sh [OUT]        # logs and results go to OUT (default: $OUT, else build/gpu-out)
#
# Eigen comes from the system if CMake finds it, else from the cmeel-eigen wheel carried in .whl/
# (here: pip download --no-deps cmeel-eigen -d .whl; .whl/ is git-ignored through .git/info/exclude).
# It builds the torch-free core with the CUDA kernels for sm_90 and runs every ctest: the CUDA
# kernels against the CPU kernels for every rule and dtype over 20 steps, and a CUDA-graph replay
# against eager steps. Ends well inside 8 minutes on 16 cores.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-${OUT:-build/gpu-out}}
mkdir -p "$out"
: >"$out/summary.txt"
status=0

# step NAME COMMAND...: runs COMMAND into NAME.log, notes its exit status, shows the log's end
step() {
  local name=$1 start=$SECONDS rc
  shift
  echo "== $name: $*"
  "$@" >"$out/$name.log" 2>&1
  rc=$?
  echo "$name: exit $rc in $((SECONDS - start)) s" | tee -a "$out/summary.txt"
  tail -n 15 "$out/$name.log"
  [ "$rc" = 0 ] || status=1
  return "$rc"
}

{ nvidia-smi; nvcc --version; cmake --version; python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)"; } \
  >"$out/machine.txt" 2>&1
prefix=()
if ls .whl/cmeel_eigen-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/fastoptim-eigen .whl/cmeel_eigen-*.whl &&
    prefix=(-DCMAKE_PREFIX_PATH=/tmp/fastoptim-eigen/cmeel.prefix)
fi
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
step configure cmake -S . -B build/gpu "${generator[@]}" -DFASTOPTIM_WITH_TORCH=OFF -DCMAKE_CUDA_ARCHITECTURES=90 "${prefix[@]}" &&
  step build cmake --build build/gpu --parallel "$(nproc)" &&
  step ctest ctest --test-dir build/gpu --output-on-failure --timeout 400
grep -q "cuda .*Passed" "$out/ctest.log" 2>/dev/null || { echo "the CUDA test did not pass (skipped or failed)" | tee -a "$out/summary.txt"; status=1; }
exit "$status"
