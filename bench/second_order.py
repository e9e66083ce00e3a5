"""Training quality of the second-order solvers beside AdamW (issue 17), and their step time.

Problems (float32, the data standardised): the diabetes MLP 10 -> 32 -> 1 (tanh, MSE) on its 442
examples, and the digits MLP 64 -> 32 -> 10 (tanh, CE) on its 1797, each full batch and with
batches of 64 (drawn by a fixed generator, the same for every optimizer). The loss reported is the
loss on the whole data set, evaluated after each step outside the timing.

AdamW runs an lr grid and its best loss after 100, 300 and 1000 steps gives the three targets; for
each solver the table gives the first step (and the wall time of the steps, evaluations excluded)
at which its loss reaches each target, or ">N" when N steps did not. Each solver runs one
configuration per setting (full batch or batches), chosen once for both problems, not per target,
and printed with the tables.

    python bench/second_order.py                         # everything (about ten minutes on 2 cores)
    python bench/second_order.py --problems diabetes --steps 200
    python bench/second_order.py --share      # the share of a step outside model evaluations, 1M params
    python bench/second_order.py --speed --somax-python /tmp/somax-env/bin/python
        # ms per step on the digits MLP with batches of 64, fastoptim and Somax 0.0.1's jitted update
        # (Somax in its own environment: tests/data/somax/record.py says how to make it)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

import fastoptim

HERE = Path(__file__).resolve().parent
HORIZONS = (100, 300, 1000)
ADAMW_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


def data(problem: str):
    from sklearn.datasets import load_diabetes, load_digits

    if problem == "diabetes":
        d = load_diabetes()
        x = torch.tensor(d.data, dtype=torch.float32)
        y = torch.tensor(d.target, dtype=torch.float32).unsqueeze(1)
        y = (y - y.mean()) / y.std()
        sizes, loss = (10, 32, 1), "mse"
    else:
        d = load_digits()
        x = torch.tensor(d.data, dtype=torch.float32)
        y = torch.tensor(d.target)
        sizes, loss = (64, 32, 10), "ce"
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    return x, y, sizes, loss


def model_for(sizes, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(sizes[0], sizes[1]), torch.nn.Tanh(), torch.nn.Linear(sizes[1], sizes[2]))


def mean_loss(kind, f, y):
    return 0.5 * (y - f).square().sum(1).mean() if kind == "mse" else torch.nn.functional.cross_entropy(f, y)


# one configuration per solver and setting (full batch, or batches of 64), chosen once for both
# problems, not per target: full batch with little damping and an Armijo search (without it EGN and
# SGN overshoot on the first digits steps), minibatches with more damping (their curvature is noisier)
SOLVERS = {
    "NewtonCG": (lambda p, loss, full: fastoptim.NewtonCG(p, damping=1e-2 if full else 1.0, cg_max_iter=20,
                                                          damping_policy="lm", line_search="armijo"), "loss"),
    "SQN": (lambda p, loss, full: fastoptim.SQN(p, lr=1.0, history_size=20, line_search="armijo"), "loss"),
    "EGN": (lambda p, loss, full: fastoptim.EGN(p, lr=1.0, damping=1e-2 if full else 0.1, loss=loss, solver="cg",
                                                cg_max_iter=50, cg_tol=1e-6, line_search="armijo" if full else None),
            "outputs"),
    "SGN": (lambda p, loss, full: fastoptim.SGN(p, lr=1.0, damping=1e-2 if full else 0.1, loss=loss, cg_max_iter=20,
                                                line_search="armijo" if full else None), "outputs"),
    "SWMNG": (lambda p, loss, full: fastoptim.SWMNG(p, lr=0.5 if full else 0.1, damping=0.1, loss=loss), "outputs"),
}


# the configurations bench/somax_speed.py times Somax's solvers in (the same work per step: no line
# search, constant damping, EGN forming the Jacobian)
SPEED = {
    "NewtonCG": (lambda p, loss: fastoptim.NewtonCG(p, damping=1.0, cg_max_iter=20, warm_start=0.1), "loss"),
    "SQN": (lambda p, loss: fastoptim.SQN(p, lr=0.1, history_size=20), "loss"),
    "EGN": (lambda p, loss: fastoptim.EGN(p, damping=0.1, loss=loss), "outputs"),
    "SGN": (lambda p, loss: fastoptim.SGN(p, damping=0.1, loss=loss, cg_max_iter=20), "outputs"),
    "SWMNG": (lambda p, loss: fastoptim.SWMNG(p, lr=0.1, damping=0.1, loss=loss), "outputs"),
}


def batches(n, batch, steps, seed=1):
    """Index tensors, one per step: the whole set, or batches of `batch` from a fixed generator."""
    gen = torch.Generator().manual_seed(seed)
    if batch is None:
        return [None] * steps
    return [torch.randint(0, n, (batch,), generator=gen) for _ in range(steps)]


def run(problem, batch, steps, make, kind, stop_below=None):
    """(losses on the whole set after each step, cumulative step seconds); the run ends early once
    the loss is at most `stop_below` (the last target: nothing more to measure)."""
    x, y, sizes, loss = data(problem)
    model = model_for(sizes)
    opt = make(model.parameters(), loss, batch is None)
    losses, seconds, elapsed = [], [], 0.0
    for index in batches(len(x), batch, steps):
        xb, yb = (x, y) if index is None else (x[index], y[index])
        if kind == "adamw":
            def closure():
                opt.zero_grad()
                value = mean_loss(loss, model(xb), yb)
                value.backward()
                return value
        elif kind == "loss":
            def closure():
                return mean_loss(loss, model(xb), yb)
        else:
            def closure():
                return model(xb), yb
        start = time.perf_counter()
        opt.step(closure)
        elapsed += time.perf_counter() - start
        with torch.no_grad():
            losses.append(float(mean_loss(loss, model(x), y)))
        seconds.append(elapsed)
        if not torch.isfinite(torch.tensor(losses[-1])) or (stop_below is not None and losses[-1] <= stop_below):
            break
    return losses, seconds


def first_reaching(losses, seconds, target):
    for step, value in enumerate(losses):
        if value <= target:
            return step + 1, seconds[step]
    return None, None


def quality(problems, steps):
    rows = []
    for problem in problems:
        for batch in (None, 64):
            setting = f"{problem}, {'full batch' if batch is None else 'batches of 64'}"
            best = {h: (float("inf"), None) for h in HORIZONS}
            adamw_time = {}
            for lr in ADAMW_LRS:
                losses, seconds = run(problem, batch, max(HORIZONS),
                                      lambda p, loss, full, lr=lr: torch.optim.AdamW(p, lr=lr), "adamw")
                for h in HORIZONS:
                    if len(losses) >= h and losses[h - 1] < best[h][0]:
                        best[h] = (losses[h - 1], lr)
                        adamw_time[h] = seconds[h - 1]
            rows.append(f"\n### {setting}\n")
            rows.append("| optimizer | " + " | ".join(f"to AdamW's loss after {h} steps ({best[h][0]:.4g}, lr {best[h][1]})"
                                                     for h in HORIZONS) + " |")
            rows.append("|---|" + "---|" * len(HORIZONS))
            rows.append("| AdamW | " + " | ".join(f"{h} steps, {adamw_time[h]:.2f} s" for h in HORIZONS) + " |")
            for name, (make, kind) in SOLVERS.items():
                losses, seconds = run(problem, batch, steps, make, kind, stop_below=min(b[0] for b in best.values()))
                cells = []
                for h in HORIZONS:
                    step, sec = first_reaching(losses, seconds, best[h][0])
                    cells.append(f">{len(losses)} (last {losses[-1]:.4g})" if step is None else
                                 f"{step} steps ({h / step:.1f}x fewer), {sec:.2f} s")
                rows.append(f"| {name} | " + " | ".join(cells) + " |")
            print("\n".join(rows[-(len(SOLVERS) + 4):]), flush=True)
    return rows


def speed(somax_python, rounds=5, steps=20):
    """Median ms per step on the digits MLP with batches of 64, fastoptim's solvers and Somax's."""
    x, y, sizes, loss = data("digits")
    lines = ["| solver | fastoptim ms/step | Somax 0.0.1 (jit) ms/step | ratio |", "|---|---|---|---|"]
    somax = {}
    if somax_python:
        out = subprocess.run([somax_python, str(HERE / "somax_speed.py"), str(steps), str(rounds)],
                             capture_output=True, text=True, check=True)
        somax = json.loads(out.stdout.strip().splitlines()[-1])
    for name, (make, kind) in SPEED.items():
        times = []
        for _ in range(rounds):
            model = model_for(sizes)
            opt = make(model.parameters(), loss)
            index = batches(len(x), 64, steps + 2)
            for k, i in enumerate(index):
                xb, yb = x[i], y[i]
                closure = (lambda: mean_loss(loss, model(xb), yb)) if kind == "loss" else (lambda: (model(xb), yb))
                if k == 2:  # two warm-up steps
                    start = time.perf_counter()
                opt.step(closure)
            times.append((time.perf_counter() - start) / steps * 1e3)
        ours = statistics.median(times)
        theirs = somax.get(name)
        ratio = f"{ours / theirs:.2f}" if theirs else "-"
        lines.append(f"| {name} | {ours:.2f} | {theirs:.2f} | {ratio} |" if theirs else f"| {name} | {ours:.2f} | - | - |")
    print("\n".join(lines), flush=True)
    return lines


def share(steps=5, rounds=3):
    """The share of a step spent outside model evaluations (closure calls, and autograd's backward
    passes and Hessian- or Jacobian-vector products), on a 1M-parameter MLP (784 -> 1024 -> 256 -> 10,
    tanh, CE) with a batch of 64: the solvers' own vector algebra and small solves. Each solver first
    takes 11 steps (SQN's history full), then `rounds` rounds of `steps` steps: the medians."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.Tanh(), torch.nn.Linear(1024, 256), torch.nn.Tanh(),
                                torch.nn.Linear(256, 10))
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    spent = {"model": 0.0}
    grad = torch.autograd.grad

    def timed_grad(*args, **kwargs):
        start = time.perf_counter()
        try:
            return grad(*args, **kwargs)
        finally:
            spent["model"] += time.perf_counter() - start

    lines = ["| solver (1M params, batch 64) | ms/step | outside model evaluations |", "|---|---|---|"]
    torch.autograd.grad = timed_grad
    try:
        for name, (make, kind) in SPEED.items():
            if name == "EGN":  # (its Jacobian is 640 x 1M: the matrix-free solve)
                make = lambda p, loss: fastoptim.EGN(p, damping=0.1, loss=loss, solver="cg", cg_max_iter=20)  # noqa: E731
            opt = make(model.parameters(), "ce")

            def closure():
                start = time.perf_counter()
                out = model(x)
                result = torch.nn.functional.cross_entropy(out, y) if kind == "loss" else (out, y)
                spent["model"] += time.perf_counter() - start
                return result

            for _ in range(11):
                opt.step(closure)
            per_step, outside = [], []
            for _ in range(rounds):
                spent["model"] = 0.0
                start = time.perf_counter()
                for _ in range(steps):
                    opt.step(closure)
                total = time.perf_counter() - start
                per_step.append(total / steps)
                outside.append((total - spent["model"]) / total)
            lines.append(f"| {name} | {statistics.median(per_step) * 1e3:.1f} | {statistics.median(outside):.0%} |")
    finally:
        torch.autograd.grad = grad
    print("\n".join(lines), flush=True)
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=["diabetes", "digits"], choices=["diabetes", "digits"])
    parser.add_argument("--steps", type=int, default=300, help="steps per solver run (AdamW runs 1000)")
    parser.add_argument("--speed", action="store_true", help="time steps instead (digits MLP, batches of 64)")
    parser.add_argument("--somax-python", help="python of an environment with python-somax 0.0.1, for --speed")
    parser.add_argument("--share", action="store_true", help="the share of a step outside model evaluations (1M params)")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, fastoptim {fastoptim.__version__}")
    for name, (make, _) in SOLVERS.items():
        for full in (True, False):
            options = make([torch.nn.Parameter(torch.zeros(1))], "mse", full).defaults
            print(f"  {name} ({'full batch' if full else 'batches'}): {options}")
    if args.share:
        share()
    elif args.speed:
        speed(args.somax_python)
    else:
        quality(args.problems, args.steps)


if __name__ == "__main__":
    main()
