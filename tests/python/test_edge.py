"""The edge front end (cpp/include/fastoptim/edge, driven here through fastoptim._C.edge) gives the
Python classes' float32 results bit for bit, for every optimizer whose rule is single-pass. Its
own tests (no heap allocation in step(), checkpoints, caller-owned state) are tests/cpp/test_edge.cpp."""

import pytest
import torch

import fastoptim
from reference import SHAPES, make_params, noise_grads

CASES = [
    ("SGD", dict(lr=0.01)),
    ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True)),
    ("SGD", dict(lr=0.01, momentum=0.9, dampening=0.3)),
    ("Adagrad", dict(lr=0.01, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01)),
    ("AdaBelief", dict(lr=0.01, weight_decay=0.1, rectify=True)),
    ("AdEMAMix", dict(lr=0.01, t_alpha=5, t_beta3=5)),
    ("Adan", dict(lr=0.01, weight_decay=0.1)),
    ("SophiaG", dict(lr=0.01)),
]


@pytest.mark.parametrize("name, kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_edge_steps_as_the_python_class_does(name, kwargs):
    params = make_params(SHAPES, torch.float32)
    edge_params = [p.detach().clone() for p in params]
    opt = getattr(fastoptim, name)(params, **kwargs)
    steps = [noise_grads(params, step) for step in range(12)]
    for grads in steps:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
    assert fastoptim._C.rules[opt.rule]["fields"]  # the rule the edge run below takes
    getattr(fastoptim._C.edge, opt.rule)(edge_params, steps, opt._hyper(opt.param_groups[0]))
    for p, q in zip(params, edge_params):
        assert torch.equal(p.detach(), q), (name, tuple(p.shape))


def test_every_single_pass_rule_of_a_python_optimizer_is_covered():
    covered = {getattr(fastoptim, name).rule for name, _ in CASES}
    # the other single-pass rules: AdaHessian's and the Hessian EMA (their estimate comes from
    # autograd, which the edge front end has not), the wrappers' averaging and Scout's statistics
    others = {"adahessian", "hessian_ema", "average", "scout_track"}
    assert set(dir(fastoptim._C.edge)) >= covered | others
    assert {n for n in dir(fastoptim._C.edge) if not n.startswith("_")} == covered | others
