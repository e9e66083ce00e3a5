"""A B A B comparison of two versions of fastoptim's second-order solvers on the 1M-parameter MLP of
`bench/second_order.py --share` (784 -> 1024 -> 256 -> 10, tanh, CE, batch 64): ms per step, median
over interleaved rounds. Version A is a copy of python/fastoptim/second_order.py from another
commit (it must run against the installed fastoptim), version B the installed one:

    git show <commit>:python/fastoptim/second_order.py > /tmp/a.py
    python bench/second_order_ab.py /tmp/a.py --rounds 5
"""

import argparse
import importlib.util
import statistics
import time

import torch

import fastoptim
import fastoptim.second_order


def load(path):
    spec = importlib.util.spec_from_file_location("fastoptim.second_order_a", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONFIGS = {  # the --share configurations
    "NewtonCG": (dict(damping=1.0, cg_max_iter=20, warm_start=0.1), "loss"),
    "SQN": (dict(lr=0.1, history_size=20), "loss"),
    "EGN": (dict(damping=0.1, loss="ce", solver="cg", cg_max_iter=20), "outputs"),
    "SGN": (dict(damping=0.1, loss="ce", cg_max_iter=20), "outputs"),
    "SWMNG": (dict(lr=0.1, damping=0.1, loss="ce"), "outputs"),
}


def time_steps(module, name, steps):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.Tanh(), torch.nn.Linear(1024, 256),
                                torch.nn.Tanh(), torch.nn.Linear(256, 10))
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    kwargs, kind = CONFIGS[name]
    opt = getattr(module, name)(model.parameters(), **kwargs)

    def closure():
        out = model(x)
        return torch.nn.functional.cross_entropy(out, y) if kind == "loss" else (out, y)

    for _ in range(11 if name == "SQN" else 2):  # (SQN: a history of 10 pairs or more)
        opt.step(closure)
    start = time.perf_counter()
    for _ in range(steps):
        opt.step(closure)
    return (time.perf_counter() - start) / steps * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="the other version's second_order.py")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    versions = {"A": load(args.a), "B": fastoptim.second_order}
    print("| solver | A ms/step | B ms/step | A / B |\n|---|---|---|---|")
    for name in CONFIGS:
        times = {"A": [], "B": []}
        for _ in range(args.rounds):
            for label, module in versions.items():
                times[label].append(time_steps(module, name, args.steps if name != "SWMNG" else 2))
        a, b = statistics.median(times["A"]), statistics.median(times["B"])
        print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} |", flush=True)


if __name__ == "__main__":
    main()
