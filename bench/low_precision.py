"""AdamW with fewer bytes: fastoptim's fp32 AdamW against its bf16 variants, interleaved, on the
bench's workloads (A) one 16M-element tensor, (B) 2000 tensors of 4096, (C) GPT-2-small-like.

Variants (byte model per element: every array the step reads plus every array it writes; AdamW
reads p, g, m, v and writes p, m, v, all in the parameter's dtype):
  torch fused fp32         torch.optim.AdamW(fused=True), fp32 params   28 B
  fastoptim fp32           fastoptim.AdamW, fp32 params                 28 B
  fastoptim bf16           bf16 params (state in bf16), round to nearest 14 B
  fastoptim bf16 + SR      the same with stochastic_rounding=True        14 B
  fastoptim fp32, bf16 state  fp32 params, state_dtype=torch.bfloat16    20 B (p, g 4 B; m, v 2 B)
  fastoptim fp32, 8-bit state fp32 params, state_bits=8                  16 B (p, g 4 B; m, v 1 B; scales ~0.06 B)
  fastoptim bf16 + SR, 8-bit  bf16 params, stochastic rounding, 8-bit    10 B (p, g 2 B; m, v 1 B)
and LAMB's two passes (pass 1 reads p, g, m, v and writes m, v; pass 2 reads p, m, v and writes p;
with 8-bit state pass 1 only reads p, g and the codes, and pass 2 reads p, g, m, v and writes p, m, v):
  fastoptim LAMB fp32           fastoptim.LAMB, fp32 params               40 B
  fastoptim LAMB fp32, 8-bit    fp32 params, state_bits=8                 26 B (10 + 16)
and AdamP's, the same two passes for its matrices (a vector takes one pass, 28 and 16 B: the byte model
below holds for (C)'s matrices, most of its elements, not for (A)'s one vector):
  fastoptim AdamP fp32          fastoptim.AdamP, fp32 params              40 B
  fastoptim AdamP fp32, 8-bit   fp32 params, state_bits=8                 26 B (10 + 16)
and SophiaG's step between refreshes (given one estimate, then no refresh in the run; the Hessian EMA only read):
  fastoptim SophiaG fp32        fastoptim.SophiaG, fp32 params            24 B (read p, g, m, h; write p, m)
  fastoptim SophiaG fp32, 8-bit fp32 params, state_bits=8                 15 B (p, g 4 B; m 1 B both ways; h 1 B read)
each compared with its own optimizer's fastoptim fp32 run.

Peers, where torchao is installed (it is not a requirement: `pip install --no-deps torchao`; its low-bit
optimizers are PyTorch code under torch.compile and run on the CPU):
  torchao _AdamW bf16 + SR   torchao.optim._AdamW(bf16_stochastic_round=True), bf16 params    14 B
  torchao AdamW8bit fp32     torchao.optim.AdamW8bit, fp32 params, 8-bit block-quantised state
bitsandbytes' 8-bit optimizers need a GPU and are not run.

Each round times every variant once, in an order rotated each round (the machine's bandwidth
drifts; a variant must not gain by its place). Reported: the median ms/step over rounds, GB/s under
the byte model, optimizer state bytes per parameter, and the ratios the issue targets: each variant
against fastoptim fp32 and against torch fused fp32, each a median of per-round ratios.

    python bench/low_precision.py                          # (A), (B), (C), 7 rounds
    python bench/low_precision.py --workloads A --rounds 5
    python bench/low_precision.py --device cuda            # on the GPU (a fastoptim built with its CUDA ops),
                                                           # with the device's copy bandwidth beside the GB/s
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

import fastoptim

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import WORKLOADS, device_copy_bandwidth, gpu_line, machine_line, time_steps  # noqa: E402

# label -> (param dtype, the optimizer over params, bytes moved per element, state bytes per parameter)
VARIANTS = {
    "torch fused fp32": (torch.float32, lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True), 28, 8),
    "fastoptim fp32": (torch.float32, lambda ps: fastoptim.AdamW(ps, lr=1e-3), 28, 8),
    "fastoptim bf16": (torch.bfloat16, lambda ps: fastoptim.AdamW(ps, lr=1e-3), 14, 4),
    "fastoptim bf16 + SR": (torch.bfloat16, lambda ps: fastoptim.AdamW(ps, lr=1e-3, stochastic_rounding=True), 14, 4),
    "fastoptim fp32, bf16 state": (torch.float32, lambda ps: fastoptim.AdamW(ps, lr=1e-3, state_dtype=torch.bfloat16), 20, 4),
    # (8-bit state: m and v one byte each, read and written, and a float32 scale per 256 elements of each)
    "fastoptim fp32, 8-bit state": (torch.float32, lambda ps: fastoptim.AdamW(ps, lr=1e-3, state_bits=8), 16, 2),
    "fastoptim bf16 + SR, 8-bit state": (
        torch.bfloat16, lambda ps: fastoptim.AdamW(ps, lr=1e-3, stochastic_rounding=True, state_bits=8), 10, 2),
    "fastoptim LAMB fp32": (torch.float32, lambda ps: fastoptim.LAMB(ps, lr=1e-3), 40, 8),
    "fastoptim LAMB fp32, 8-bit state": (torch.float32, lambda ps: fastoptim.LAMB(ps, lr=1e-3, state_bits=8), 26, 2),
    "fastoptim AdamP fp32": (torch.float32, lambda ps: fastoptim.AdamP(ps, lr=1e-3), 40, 8),
    "fastoptim AdamP fp32, 8-bit state": (torch.float32, lambda ps: fastoptim.AdamP(ps, lr=1e-3, state_bits=8), 26, 2),
    "fastoptim SophiaG fp32": (torch.float32, lambda ps: between_refreshes(fastoptim.SophiaG(ps, lr=1e-4)), 24, 8),
    "fastoptim SophiaG fp32, 8-bit state": (
        torch.float32, lambda ps: between_refreshes(fastoptim.SophiaG(ps, lr=1e-4, state_bits=8)), 15, 2),
}
try:
    from torchao.optim import AdamW8bit, _AdamW

    VARIANTS["torchao _AdamW bf16 + SR"] = (torch.bfloat16, lambda ps: _AdamW(ps, lr=1e-3, bf16_stochastic_round=True), 14, 4)
    # (reads p, g; writes p; m and v 1 B each read and written; plus a float32 scale per block of 256)
    VARIANTS["torchao AdamW8bit fp32"] = (torch.float32, lambda ps: AdamW8bit(ps, lr=1e-3), 8 + 4 + 2 * 2, 2)
except ImportError:
    pass


def between_refreshes(opt):
    """A Hessian-diagonal optimizer given one estimate (uniform in [0, 1)), whose steps then refresh nothing."""
    opt.update_hessian([torch.rand_like(p) for group in opt.param_groups for p in group["params"]])
    for group in opt.param_groups:
        group["hessian_clock"], group["hessian_update_interval"] = 1, 10**9
    return opt


def fp32_run_of(label: str) -> str:
    """The fastoptim fp32 variant of the same optimizer (the yardstick of 'vs fastoptim fp32')."""
    return next((f"fastoptim {name} fp32" for name in ("LAMB", "AdamP", "SophiaG") if f" {name} " in label), "fastoptim fp32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.5, help="time per variant per round")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device
    if device == "cuda":
        args.variants = [label for label in args.variants if "torchao" not in label]  # (their CPU runs are the peers')
        print(f"machine: {gpu_line()}; copy bandwidth {device_copy_bandwidth():.0f} GB/s", flush=True)
    else:
        print(f"machine: {machine_line(args.threads)}", flush=True)
    print("| workload | variant | ms/step | GB/s | state B/param | vs fastoptim fp32 | vs torch fused fp32 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for wl in args.workloads:
        _, shapes = WORKLOADS[wl]
        elements = sum(torch.Size(s).numel() for s in shapes)
        optimizers, steps = {}, {}
        for label in args.variants:
            dtype, make, _, _ = VARIANTS[label]
            params = [torch.nn.Parameter(torch.randn(s, dtype=dtype, device=device)) for s in shapes]
            for p in params:
                p.grad = torch.randn_like(p) * 1e-3
            optimizers[label] = opt = make(params)
            opt.step()  # (creates the state)
            steps[label] = max(2, min(50, round(args.seconds / max(time_steps(opt, 1, device), 1e-6))))
        times = {label: [] for label in optimizers}
        labels = list(optimizers)
        for round_index in range(args.rounds):
            shift = round_index % len(labels)
            for label in labels[shift:] + labels[:shift]:
                times[label].append(time_steps(optimizers[label], steps[label], device))

        def ratio(label, yardstick):
            if yardstick not in times:
                return ""
            return f"{statistics.median(y / t for y, t in zip(times[yardstick], times[label])):.2f}x"

        for label, per_round in times.items():
            ms = statistics.median(per_round) * 1e3
            _, _, moved, state_bytes = VARIANTS[label]
            print(f"| {wl} | {label} | {ms:.2f} | {moved * elements / ms / 1e6:.1f} | {state_bytes} | "
                  f"{ratio(label, fp32_run_of(label))} | {ratio(label, 'torch fused fp32')} |", flush=True)
        del optimizers


if __name__ == "__main__":
    main()
