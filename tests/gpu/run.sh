#!/usr/bin/env bash
# The GPU check (issue 18), one prepared script for a machine with an NVIDIA GPU, nvcc and cmake
# (the lent H200: torch 2.11+cu130, nvcc 13, no network). From the repository root:
#
#     bash tests/gpu/run.sh [OUT]        # logs and results go to OUT (default: $OUT, else build/gpu-out)
#
# What the machine may lack (no network there) comes from wheels carried in .whl/ (git-ignored
# through .git/info/exclude; here: pip download --no-deps -d .whl cmeel cmeel-eigen scikit-build-core
# pathspec packaging pybind11 pytest pluggy iniconfig). It builds the torch-free core with the CUDA
# kernels for sm_90 and runs every ctest (the CUDA kernels against the CPU kernels for every rule and
# dtype over 20 steps, CUDA-graph replays against eager steps); then installs fastoptim against the
# torch installed there (with its CUDA: the steps of CUDA tensors) and runs tests/python/test_cuda.py
# (every optimizer's GPU step against its CPU step, torch's fused CUDA steps, GPU/CPU resume, a step
# captured in a CUDA graph; stochastic rounding, 8-bit state and sharded split steps on the GPU), a short
# GPU bench (bench.log) and the low-precision variants on the GPU (low_precision.log). Ends well inside
# 8 minutes on 16 cores.
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
if ls .whl/*.whl >/dev/null 2>&1; then
  step wheels python3 -m pip install --no-index --find-links .whl cmeel-eigen scikit-build-core pybind11 pytest
fi
prefix=(-DCMAKE_PREFIX_PATH="$(python3 -m cmeel cmake 2>/dev/null)")
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
step configure cmake -S . -B build/gpu "${generator[@]}" -DFASTOPTIM_WITH_TORCH=OFF -DCMAKE_CUDA_ARCHITECTURES=90 "${prefix[@]}" &&
  step build cmake --build build/gpu --parallel "$(nproc)" &&
  step ctest ctest --test-dir build/gpu --output-on-failure --timeout 400
grep -q "cuda .*Passed" "$out/ctest.log" 2>/dev/null || { echo "the CUDA kernels test did not pass (skipped or failed)" | tee -a "$out/summary.txt"; status=1; }
step install python3 -m pip install --no-build-isolation --no-deps --no-index -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90 . &&
  step cuda_ops python3 -c "import fastoptim; print('cuda_ops', fastoptim._C.cuda_ops); assert fastoptim._C.cuda_ops" &&
  step pytest python3 -m pytest -q -p no:cacheprovider tests/python/test_cuda.py
# the GPU bench (a short one: the full table is `python3 bench/bench.py --device cuda`), and issue 21's
# fewer-bytes variants (bf16 + stochastic rounding, 8-bit state) against fp32 and torch fused on the GPU
step bench python3 bench/bench.py --device cuda --optimizers AdamW Adam SGD LAMB Adan Lion AdEMAMix --rounds 3 --seconds 0.1
step low_precision python3 bench/low_precision.py --device cuda --workloads A C --rounds 3 --seconds 0.1
exit "$status"
