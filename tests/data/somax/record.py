"""Records Somax's own trajectories for fastoptim's parity tests (tests/python/test_somax_parity.py).

Runs python-somax 0.0.1 (all five solvers) in float64 on fixed small problems and saves, per
(problem, solver), the data, the initial parameters and the parameters after every step to
tests/data/somax/<problem>-<solver>.npz. It needs an environment of its own (Somax 0.0.1 needs an
old jax):

    python3.11 -m venv /tmp/somax-env
    /tmp/somax-env/bin/pip install jax==0.4.30 jaxlib==0.4.30 jaxopt==0.8.3 "numpy<2" "scipy<1.14" \
        python-somax==0.0.1 scikit-learn
    /tmp/somax-env/bin/python tests/data/somax/record.py

Each configuration is one where Somax and fastoptim compute the same thing: constant damping, no
line search (Somax's search keeps and grows its step size between steps, fastoptim's starts at lr),
and problems where Somax's bugs (spec section 8) do not show: CG meets no negative curvature, SQN no
pair with s'y <= 0. The parameters are a list [W1, b1, W2, b2, ...] with x @ W + b layers (tanh between).
"""

import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_diabetes, load_digits  # noqa: E402
from somax.gn.egn import EGN  # noqa: E402
from somax.gn.sgn import SGN  # noqa: E402
from somax.hf.newton_cg import NewtonCG  # noqa: E402
from somax.ng.swm_ng import SWMNG  # noqa: E402
from somax.qn.sqn import SQN  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 12


def problems():
    """name -> (x, y, layer sizes, loss): diabetes (MSE) and digits (CE), standardised, fixed batches."""
    diabetes = load_diabetes()
    x = diabetes.data[:64]
    y = diabetes.target[:64]
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    digits = load_digits()
    xd = digits.data[:40] / 16.0
    yd = digits.target[:40]
    return {
        "linear-diabetes": (x, y, [10, 1], "mse"),
        "mlp-diabetes": (x, y, [10, 8, 1], "mse"),
        "softmax-digits": (xd, yd, [64, 10], "ce"),
        "mlp-digits": (xd, yd, [64, 8, 10], "ce"),
    }


def initial_params(sizes, seed=0):
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params.append(rng.normal(0.0, 1.0 / np.sqrt(fan_in), (fan_in, fan_out)))
        params.append(rng.normal(0.0, 0.1, (fan_out,)))
    return params


def forward(params, x):
    h = x
    for i in range(0, len(params), 2):
        h = h @ params[i] + params[i + 1]
        if i + 2 < len(params):
            h = jnp.tanh(h)
    return h


def solvers(loss, batch, classes):
    """name -> (solver, targets transform): the configurations fastoptim's test mirrors."""
    if loss == "mse":
        predict = lambda params, x: forward(params, x)[..., 0]  # noqa: E731  (a scalar per example)
        batch_loss = lambda params, x, y: 0.5 * jnp.mean(jnp.square(y - predict(params, x)))  # noqa: E731
        example_loss = lambda params, x, y: 0.5 * jnp.square(y - forward(params, x[None])[0, 0])  # noqa: E731
        targets = lambda y: y  # noqa: E731
        common = dict(loss_type="mse", batch_size=batch)
    else:
        predict = forward
        batch_loss = lambda params, x, y: -jnp.mean(jnp.sum(y * jax.nn.log_softmax(forward(params, x)), -1))  # noqa: E731
        example_loss = lambda params, x, y: -jnp.sum(y * jax.nn.log_softmax(forward(params, x[None])[0]))  # noqa: E731
        targets = lambda y: np.eye(classes)[y]  # noqa: E731  (Somax takes one-hot labels)
        common = dict(loss_type="ce", batch_size=batch, n_classes=classes)
    return {
        "EGN": (EGN(predict_fun=predict, learning_rate=0.5, regularizer=1.0, **common), targets),
        "SGN": (SGN(predict_fun=predict, learning_rate=1.0, regularizer=0.1, maxcg=10, **common), targets),
        "NewtonCG": (NewtonCG(loss_fun=batch_loss, learning_rate=1.0, regularizer=1.0, maxcg=10, adaptive_lambda=False,
                              line_search=False), targets),
        "SWMNG": (SWMNG(loss_fun=example_loss, learning_rate=0.5, regularizer=1.0, **common), targets),
        "SQN": (SQN(loss_fun=batch_loss, learning_rate=0.5, history_size=5), targets),
    }


def main():
    for name, (x, y, sizes, loss) in problems().items():
        classes = sizes[-1]
        for solver_name, (solver, targets) in solvers(loss, len(x), classes).items():
            params = [jnp.asarray(p) for p in initial_params(sizes)]
            state = solver.init_state(params)
            record = {"x": x, "y": y, "loss": loss}
            for i, p in enumerate(params):
                record[f"init_{i}"] = np.asarray(p)
            for step in range(STEPS):
                params, state = solver.update(params, state, jnp.asarray(x), jnp.asarray(targets(y)))
                for i, p in enumerate(params):
                    record[f"step{step}_{i}"] = np.asarray(p)
            np.savez_compressed(os.path.join(HERE, f"{name}-{solver_name}.npz"), **record)
            print(name, solver_name, "recorded", file=sys.stderr)


if __name__ == "__main__":
    main()
