"""The AMaC seed's claim (97.33 % MNIST test accuracy after 10 epochs) on data that ships here:
scikit-learn's digits, the demo's MLP, 10 epochs, AMaC and AdamW side by side, test accuracy per
epoch (mean over --seeds runs; each run gives both optimizers the same weights and batches).

    python bench/amac_digits.py [--seeds 3] [--epochs 10]

AMaC runs with its defaults except the schedule, which must fit the run: warmup_steps = one
epoch and total_steps = the whole run (the seed's default of 1000 warm-up steps is longer than
these 450 steps). AdamW: lr 1e-3, weight_decay 1e-2, as in the demo.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import fastoptim
from fastoptim.demo import load_digits_split, make_model


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item() * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    results = {"AMaC": [[] for _ in range(args.epochs)], "AdamW": [[] for _ in range(args.epochs)]}
    for seed in range(args.seeds):
        (x_train, y_train), (x_test, y_test) = load_digits_split(seed)
        steps_per_epoch = (len(x_train) + args.batch_size - 1) // args.batch_size
        torch.manual_seed(seed)
        base = make_model()
        runs = {}
        for name in results:
            model = make_model()
            model.load_state_dict(base.state_dict())
            if name == "AMaC":
                opt = fastoptim.AMaC(model.parameters(), lr=1e-3, warmup_steps=steps_per_epoch,
                                     total_steps=steps_per_epoch * args.epochs, seed=seed)
            else:
                opt = fastoptim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
            runs[name] = (model, opt)
        generator = torch.Generator().manual_seed(seed)
        for epoch in range(args.epochs):
            order = torch.randperm(len(x_train), generator=generator)
            for start in range(0, len(x_train), args.batch_size):
                batch = order[start:start + args.batch_size]
                for model, opt in runs.values():
                    opt.zero_grad()
                    nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
                    opt.step()
            for name, (model, _) in runs.items():
                results[name][epoch].append(accuracy(model, x_test, y_test))
    print(f"digits, MLP 64-256-256-10, batch {args.batch_size}, mean test accuracy over {args.seeds} seeds (%)")
    print("| epoch | " + " | ".join(results) + " |")
    print("|---:|" + "---:|" * len(results))
    for epoch in range(args.epochs):
        cells = " | ".join(f"{sum(v[epoch]) / len(v[epoch]):.2f}" for v in results.values())
        print(f"| {epoch + 1} | {cells} |")


if __name__ == "__main__":
    main()
