"""Muon's step time: fastoptim.Muon against torch.optim.Muon on the matrices plus torch.optim.AdamW on
the rest (the pairing torch's documentation recommends, which fastoptim's Muon does in one optimizer),
on the parameters of GPT-2-small's transformer blocks (bench.py's workload (C) without the two
embedding tables, whose 50257 x 768 Newton-Schulz products alone take seconds on a CPU).

Muon's step is its Newton-Schulz iteration: 5 steps of three bf16 matrix products per matrix, the same
ATen calls in both (so the same bits); fastoptim fuses the element-wise work around them (the momentum,
the update, and AdamW for the vectors). Median ms/step over interleaved rounds.

    python bench/muon.py [--blocks 2] [--rounds 5] [--steps 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import fastoptim

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import gpt2_small_shapes, machine_line  # noqa: E402


class TorchMuonAndAdamW:
    def __init__(self, params) -> None:
        self.muon = torch.optim.Muon([p for p in params if p.ndim == 2], lr=0.02)
        self.adamw = torch.optim.AdamW([p for p in params if p.ndim != 2], lr=0.02, weight_decay=0.1, fused=True)

    def step(self) -> None:
        self.muon.step()
        self.adamw.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=2, help="transformer blocks of GPT-2 small (12 in all)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    shapes = gpt2_small_shapes()[2:2 + 12 * args.blocks]  # (each block is 12 tensors)
    params = [torch.randn(s).requires_grad_() for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p)
    impls = {"fastoptim Muon": fastoptim.Muon(params, lr=0.02), "torch Muon + AdamW(fused)": TorchMuonAndAdamW(params)}
    for opt in impls.values():
        opt.step()  # (state)
    times: dict[str, list[float]] = {name: [] for name in impls}
    for round_index in range(args.rounds):
        for name in list(impls)[round_index % 2:] + list(impls)[:round_index % 2]:
            start = time.perf_counter()
            for _ in range(args.steps):
                impls[name].step()
            times[name].append((time.perf_counter() - start) / args.steps * 1e3)
    elements = sum(p.numel() for p in params)
    matrices = sum(1 for p in params if p.ndim == 2)
    print(machine_line(torch.get_num_threads()))
    print(f"{args.blocks} blocks of GPT-2 small: {len(params)} tensors ({matrices} matrices), {elements / 1e6:.1f}M elements; "
          f"median of {args.rounds} interleaved rounds of {args.steps} steps\n")
    print("| implementation | ms/step | ratio |")
    print("|---|---:|---:|")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, ms in medians.items():
        print(f"| {name} | {ms:.1f} | {medians['torch Muon + AdamW(fused)'] / ms:.2f}x |")


if __name__ == "__main__":
    main()
