"""The second-order solvers against Somax itself: python-somax 0.0.1's trajectories, recorded in
float64 by tests/data/somax/record.py (which says how to run it), are followed step by step."""

import glob
import os

import numpy as np
import pytest
import torch

import fastoptim

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "somax")
RECORDS = sorted(os.path.basename(path)[:-4] for path in glob.glob(os.path.join(DATA, "*.npz")))

# fastoptim's configuration of each solver as record.py configures Somax's
SOLVERS = {
    "EGN": lambda params, loss: fastoptim.EGN(params, lr=0.5, damping=1.0, loss=loss),
    "SGN": lambda params, loss: fastoptim.SGN(params, lr=1.0, damping=0.1, loss=loss, cg_max_iter=10, cg_tol=1e-5),
    "NewtonCG": lambda params, loss: fastoptim.NewtonCG(params, lr=1.0, damping=1.0, cg_max_iter=10, cg_tol=1e-5,
                                                        warm_start=0.1),
    "SWMNG": lambda params, loss: fastoptim.SWMNG(params, lr=0.5, damping=1.0, loss=loss),
    "SQN": lambda params, loss: fastoptim.SQN(params, lr=0.5, history_size=5),
}


def forward(params, x):
    h = x
    for i in range(0, len(params), 2):
        h = h @ params[i] + params[i + 1]
        if i + 2 < len(params):
            h = torch.tanh(h)
    return h


def test_every_solver_has_records():
    assert {name.split("-")[-1] for name in RECORDS} == set(SOLVERS) and len(RECORDS) == 20


@pytest.mark.parametrize("record", RECORDS)
def test_each_step_follows_somax(record):
    data = np.load(os.path.join(DATA, record + ".npz"))
    solver = record.split("-")[-1]
    loss = str(data["loss"])
    count = len([k for k in data.files if k.startswith("init_")])
    params = [torch.nn.Parameter(torch.tensor(data[f"init_{i}"])) for i in range(count)]
    x = torch.tensor(data["x"])
    y = torch.tensor(data["y"]).unsqueeze(1) if loss == "mse" else torch.tensor(data["y"])
    opt = SOLVERS[solver](params, loss)
    if solver in ("NewtonCG", "SQN"):
        def closure():
            f = forward(params, x)
            return 0.5 * (y - f).square().mean() if loss == "mse" else torch.nn.functional.cross_entropy(f, y)
    else:
        def closure():
            return forward(params, x), y
    steps = len([k for k in data.files if k.startswith("step") and k.endswith("_0")])
    for step in range(steps):
        opt.step(closure)
        for i, p in enumerate(params):
            np.testing.assert_allclose(p.detach().numpy(), data[f"step{step}_{i}"], rtol=1e-8, atol=1e-10,
                                       err_msg=f"{record}: step {step}, parameter {i}")
