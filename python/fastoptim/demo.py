"""Trains a small MLP on scikit-learn's digits with fastoptim.AdamW and torch.optim.AdamW side by side.

    python -m fastoptim.demo [--epochs 15] [--batch-size 32]

Both runs start from the same weights and see the same batches. Per epoch it prints the training
loss, the test accuracy and the median time of one optimizer step for each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import fastoptim


def load_digits_split(seed: int):
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - a message for a missing optional dependency
        raise SystemExit("the demo needs scikit-learn: pip install scikit-learn tqdm") from error
    digits = load_digits()  # 1797 8x8 images of handwritten digits, shipped with scikit-learn
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    return (x[:split], y[:split]), (x[split:], y[split:])


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        from tqdm import tqdm
    except ImportError as error:  # pragma: no cover
        raise SystemExit("the demo needs tqdm: pip install scikit-learn tqdm") from error

    (x_train, y_train), (x_test, y_test) = load_digits_split(args.seed)
    torch.manual_seed(args.seed)
    base = make_model()
    runs = {}
    for name, cls in [("fastoptim.AdamW", fastoptim.AdamW), ("torch.optim.AdamW", torch.optim.AdamW)]:
        model = make_model()
        model.load_state_dict(base.state_dict())
        runs[name] = (model, cls(model.parameters(), lr=args.lr, weight_decay=1e-2))
    loss_fn = nn.CrossEntropyLoss()
    print(f"digits: {len(x_train)} train / {len(x_test)} test images; MLP 64-256-256-10; "
          f"fastoptim kernels: {fastoptim._C.isa()}")
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(args.seed + epoch))
        batches = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
        losses = {name: [] for name in runs}
        step_ms = {name: [] for name in runs}
        for batch in tqdm(batches, desc=f"epoch {epoch:2d}", leave=False):
            for name, (model, opt) in runs.items():
                opt.zero_grad()
                loss = loss_fn(model(x_train[batch]), y_train[batch])
                loss.backward()
                start = time.perf_counter()
                opt.step()
                step_ms[name].append((time.perf_counter() - start) * 1e3)
                losses[name].append(loss.item())
        for name, (model, _) in runs.items():
            with torch.no_grad():
                accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
            print(f"epoch {epoch:2d}  {name:18s} loss {statistics.fmean(losses[name]):.4f}  "
                  f"test accuracy {accuracy:6.2%}  step {statistics.median(step_ms[name]):.3f} ms")


if __name__ == "__main__":
    main()
