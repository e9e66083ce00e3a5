"""Somax 0.0.1's jitted step time on the digits MLP (64 -> 32 -> 10, tanh, CE) with batches of 64,
for bench/second_order.py --speed. Runs in an environment with python-somax 0.0.1 (see
tests/data/somax/record.py); prints one JSON line {solver: median ms per step}.

    /tmp/somax-env/bin/python bench/somax_speed.py [steps] [rounds]
"""

import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits
from somax.gn.egn import EGN
from somax.gn.sgn import SGN
from somax.hf.newton_cg import NewtonCG
from somax.ng.swm_ng import SWMNG
from somax.qn.sqn import SQN


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    digits = load_digits()
    x = digits.data.astype(np.float32)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    y = np.eye(10, dtype=np.float32)[digits.target]
    rng = np.random.default_rng(0)
    sizes = (64, 32, 10)
    params0 = [rng.normal(0, 1 / np.sqrt(sizes[0]), (sizes[0], sizes[1])).astype(np.float32),
               np.zeros(sizes[1], np.float32),
               rng.normal(0, 1 / np.sqrt(sizes[1]), (sizes[1], sizes[2])).astype(np.float32),
               np.zeros(sizes[2], np.float32)]

    def forward(params, inputs):
        return jnp.tanh(inputs @ params[0] + params[1]) @ params[2] + params[3]

    def batch_loss(params, inputs, targets):
        return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(forward(params, inputs)), -1))

    def example_loss(params, inputs, targets):
        return -jnp.sum(targets * jax.nn.log_softmax(forward(params, inputs[None])[0]))

    common = dict(loss_type="ce", batch_size=64, n_classes=10)
    solvers = {
        "NewtonCG": NewtonCG(loss_fun=batch_loss, learning_rate=1.0, regularizer=1.0, maxcg=20, adaptive_lambda=False,
                             line_search=False),
        "SQN": SQN(loss_fun=batch_loss, learning_rate=0.1, history_size=20),
        "EGN": EGN(predict_fun=forward, learning_rate=1.0, regularizer=0.1, **common),
        "SGN": SGN(predict_fun=forward, learning_rate=1.0, regularizer=0.1, maxcg=20, **common),
        "SWMNG": SWMNG(loss_fun=example_loss, learning_rate=0.1, regularizer=0.1, **common),
    }
    indices = [rng.integers(0, len(x), 64) for _ in range(steps + 2)]
    result = {}
    for name, solver in solvers.items():
        times = []
        for _ in range(rounds):
            params = [jnp.asarray(p) for p in params0]
            state = solver.init_state(params)
            for k, index in enumerate(indices):
                if k == 2:  # after compilation and a warm-up step
                    jax.block_until_ready(params)
                    start = time.perf_counter()
                params, state = solver.update(params, state, jnp.asarray(x[index]), jnp.asarray(y[index]))
            jax.block_until_ready(params)
            times.append((time.perf_counter() - start) / steps * 1e3)
        result[name] = statistics.median(times)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
