"""Training quality of every optimizer of the catalogue, beside AdamW, on three small tasks whose data
ships with scikit-learn and Python (the records name the optimizers: fastoptim/records.py).

  digits      the demo's MLP (64 -> 256 -> 256 -> 10) on scikit-learn's digits, batches of 32, 5 epochs;
              test accuracy (%)
  regression  an MLP (10 -> 64 -> 1, tanh) on scikit-learn's diabetes (standardised), batches of 32,
              40 epochs; test MSE (of the standardised target)
  charlm      a character-level MLP language model (8 characters of context, embeddings of 16,
              a hidden layer of 256) on the source of Python's own argparse, email and textwrap
              modules, batches of 128, 400 steps; validation loss (bits per character)

Each optimizer runs at its best of a small lr grid: its record's bench lr (or its class's default)
times 0.1, 0.3, 1, 3 and 10, one seed each, the best chosen by the task's metric; then --seeds seeds
at that lr give the mean and the spread (min to max) in the table. Every run of a seed starts from
the same weights and sees the same batches, whatever the optimizer. Options other than lr: the
record's bench options (SGD: momentum 0.9, Nesterov). The Hessian-diagonal optimizers take their
closure step (the loss, without backward; SophiaG: (loss, logits), on the classification tasks only:
its Gauss-Newton-Bartlett estimate samples labels from the logits).

--precisions trains in bf16 too: "bf16" (the model's weights, activations and optimizer state in
bfloat16, every store rounded to nearest), "bf16-sr" (the same with the optimizer's
stochastic_rounding=True), and with the optimizer's moments in 8 bits (state_bits=8) "fp32-8bit" and
"bf16-sr-8bit"; the metric is taken with the trained weights widened to float32.

    python bench/quality.py                        # every optimizer, every task (about 10 minutes on 2 cores)
    python bench/quality.py --optimizers AdamW ADOPT --tasks digits --seeds 3
    python bench/quality.py --optimizers AdamW --tasks digits charlm --precisions fp32 bf16 bf16-sr --seeds 5
    python bench/quality.py --optimizers AdamW --tasks digits charlm --precisions fp32 fp32-8bit bf16-sr-8bit --seeds 5
"""

from __future__ import annotations

import argparse
import inspect
import math
import statistics
import time

import torch
from torch import nn

import fastoptim
from fastoptim.records import RECORDS

GRID = (0.1, 0.3, 1.0, 3.0, 10.0)
# precision -> (the weights' dtype, the optimizer's extra options)
PRECISIONS = {
    "fp32": (torch.float32, {}), "bf16": (torch.bfloat16, {}), "bf16-sr": (torch.bfloat16, {"stochastic_rounding": True}),
    "fp32-8bit": (torch.float32, {"state_bits": 8}),  # float32 weights, 8-bit moments
    "bf16-sr-8bit": (torch.bfloat16, {"stochastic_rounding": True, "state_bits": 8}),
}
HESSIAN = {r.name for r in RECORDS if r.family == "Sophia"}


# ---- the tasks: data, model, loss, metric (lower is better unless higher_is_better) -------------
class Task:
    name: str
    higher_is_better = False
    classification = True
    batch_size = 32

    def data(self, seed: int):
        """((x_train, y_train), (x_test, y_test))"""
        raise NotImplementedError

    def model(self) -> nn.Module:
        raise NotImplementedError

    def loss(self, output, target):
        return nn.functional.cross_entropy(output, target)

    def metric(self, model, x, y) -> float:
        raise NotImplementedError

    def steps(self, n_train: int) -> int:
        raise NotImplementedError


class Digits(Task):
    name = "digits"
    higher_is_better = True

    def data(self, seed):
        from fastoptim.demo import load_digits_split

        return load_digits_split(seed)

    def model(self):
        from fastoptim.demo import make_model

        return make_model()

    def metric(self, model, x, y):
        with torch.no_grad():
            return (model(x).argmax(dim=1) == y).float().mean().item() * 100

    def steps(self, n_train):
        return 5 * math.ceil(n_train / self.batch_size)


class Regression(Task):
    name = "regression"
    classification = False

    def data(self, seed):
        from sklearn.datasets import load_diabetes

        x, y = load_diabetes(return_X_y=True)
        x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)[:, None]
        x, y = (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        x, y = x[order], y[order]
        split = int(0.8 * len(x))
        return (x[:split], y[:split]), (x[split:], y[split:])

    def model(self):
        return nn.Sequential(nn.Linear(10, 64), nn.Tanh(), nn.Linear(64, 1))

    def loss(self, output, target):
        return nn.functional.mse_loss(output, target)

    def metric(self, model, x, y):
        with torch.no_grad():
            return nn.functional.mse_loss(model(x), y).item()

    def steps(self, n_train):
        return 40 * math.ceil(n_train / self.batch_size)


class CharLM(Task):
    name = "charlm"
    batch_size = 128
    context, embedding, hidden = 8, 16, 256

    def __init__(self) -> None:
        import argparse as argparse_module
        import email.message
        import textwrap

        text = "".join(open(m.__file__, encoding="utf-8").read() for m in (argparse_module, email.message, textwrap))
        self.vocab = sorted(set(text))
        codes = torch.tensor([self.vocab.index(c) for c in text], dtype=torch.long)
        windows = codes.unfold(0, self.context + 1, 1)
        self.x, self.y = windows[:, :-1], windows[:, -1]

    def data(self, seed):
        split = int(0.9 * len(self.x))  # the last tenth of the text is the validation text
        order = torch.randperm(split, generator=torch.Generator().manual_seed(seed))
        return (self.x[:split][order], self.y[:split][order]), (self.x[split:], self.y[split:])

    def model(self):
        return nn.Sequential(nn.Embedding(len(self.vocab), self.embedding), nn.Flatten(),
                             nn.Linear(self.context * self.embedding, self.hidden), nn.Tanh(),
                             nn.Linear(self.hidden, len(self.vocab)))

    def metric(self, model, x, y):
        with torch.no_grad():
            return nn.functional.cross_entropy(model(x), y).item() / math.log(2)

    def steps(self, n_train):
        return 400


TASKS = {task.name: task for task in (Digits, Regression, CharLM)}


# ---- one run --------------------------------------------------------------------------------
def make_optimizer(name: str, params, lr: float, precision: str = "fp32"):
    record = next(r for r in RECORDS if r.name == name)
    options = {k: v for k, v in (record.bench or {}).items() if k != "lr"}
    return getattr(fastoptim, name)(params, lr=lr, **options, **PRECISIONS[precision][1])


def center_lr(name: str) -> float:
    record = next(r for r in RECORDS if r.name == name)
    if record.bench and "lr" in record.bench:
        return record.bench["lr"]
    return inspect.signature(getattr(fastoptim, name)).parameters["lr"].default


def train(task: Task, name: str, lr: float, seed: int, data, precision: str = "fp32") -> float:
    (x_train, y_train), (x_test, y_test) = data
    dtype = PRECISIONS[precision][0]
    if x_train.is_floating_point():
        x_train = x_train.to(dtype)
    torch.manual_seed(seed)
    model = task.model().to(dtype)  # (initialised in float32, then rounded: the same start for every precision)
    opt = make_optimizer(name, model.parameters(), lr, precision)
    order = torch.Generator().manual_seed(seed)
    batches = []
    steps = task.steps(len(x_train))
    while len(batches) < steps:
        permutation = torch.randperm(len(x_train), generator=order)
        batches += [permutation[i:i + task.batch_size] for i in range(0, len(x_train), task.batch_size)]
    for batch in batches[:steps]:
        x, y = x_train[batch], y_train[batch]
        opt.zero_grad()
        if name in HESSIAN:
            if name == "SophiaG":
                def closure():
                    logits = model(x)
                    return task.loss(logits, y), logits
            else:
                def closure():
                    return task.loss(model(x), y)
            opt.step(closure)
        else:
            task.loss(model(x), y).backward()
            opt.step()
    if hasattr(opt, "eval"):  # Schedule-Free: evaluate the average
        opt.eval()
    value = task.metric(model.float(), x_test, y_test)
    return value if math.isfinite(value) else (-math.inf if task.higher_is_better else math.inf)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--optimizers", nargs="+", default=[r.name for r in RECORDS])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--precisions", nargs="+", default=["fp32"], choices=list(PRECISIONS))
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.time()
    print(f"torch {torch.__version__}, fastoptim ISA {fastoptim._C.isa()}, {torch.get_num_threads()} threads; "
          f"lr grid: the record's lr x {GRID}; {args.seeds} seeds at the best lr")
    for task_name in args.tasks:
        task = TASKS[task_name]()
        datasets = [task.data(seed) for seed in range(args.seeds)]
        better = max if task.higher_is_better else min
        unit = {"digits": "test accuracy %", "regression": "test MSE", "charlm": "validation bits/char"}[task_name]
        print(f"\n#### {task_name} ({unit}; mean over {args.seeds} seeds, [min, max])\n")
        print("| Optimizer | best lr | mean | spread |")
        print("|---|---|---|---|")
        for name in args.optimizers:
            for precision in args.precisions:
                label = name if args.precisions == ["fp32"] else f"{name} ({precision})"
                if name == "SophiaG" and not task.classification:
                    print(f"| {label} | | | (classification only) |")
                    continue
                center = center_lr(name)
                sweep = {center * factor: train(task, name, center * factor, 0, datasets[0], precision) for factor in GRID}
                best_lr = better(sweep, key=sweep.get)
                values = [sweep[best_lr]] + [train(task, name, best_lr, seed, datasets[seed], precision)
                                             for seed in range(1, args.seeds)]
                mean = statistics.fmean(values)
                print(f"| {label} | {best_lr:.3g} | {mean:.4g} | [{min(values):.4g}, {max(values):.4g}] |", flush=True)
    print(f"\n({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
