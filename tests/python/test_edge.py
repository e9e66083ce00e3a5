"""The edge front end (cpp/include/fastoptim/edge, driven here through fastoptim._C.edge) gives the
Python classes' float32 results bit for bit, for every optimizer of the catalogue (the
Hessian-diagonal ones with a zero estimate: the edge front end has no autograd to estimate with). Its
own tests (no heap allocation in step(), checkpoints, caller-owned state) are tests/cpp/test_edge.cpp."""

import pytest
import torch

import fastoptim
from reference import SHAPES, given_hessian_if_needed, make_params, noise_grads, rule_optimizer, zero_estimates

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
    ("LAMB", dict(lr=0.01, weight_decay=0.1)),
    ("RaLars", dict(lr=0.01)),
    ("LARS", dict(lr=0.01, momentum=0.9, weight_decay=0.1, exclude_1d=True)),
    ("TAdam", dict(lr=0.01)),
    ("AdamP", dict(lr=0.01, weight_decay=0.1)),
    ("AMaC", dict(lr=0.01, warmup_steps=4, lookahead_k=None, swa_start=None, seed=3)),
    ("AdaHessian", dict(lr=0.01)),
    ("SophiaH", dict(lr=0.01)),
    ("Lion", dict(lr=0.01, weight_decay=0.1)),
]


@pytest.mark.parametrize("name, kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_edge_steps_as_the_python_class_does(name, kwargs):
    params = make_params(SHAPES, torch.float32)
    edge_params = [p.detach().clone() for p in params]
    opt = getattr(fastoptim, name)(params, **kwargs)
    inner = rule_optimizer(opt)
    stepper = given_hessian_if_needed(opt, zero_estimates)  # no estimator at the edge: a zero Hessian EMA
    steps = [noise_grads(params, step) for step in range(12)]
    for grads in steps:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        stepper.step()
    getattr(fastoptim._C.edge, inner.rule)(edge_params, steps, inner._hyper(opt.param_groups[0]))
    for p, q in zip(params, edge_params):
        assert torch.equal(p.detach(), q), (name, tuple(p.shape))


def test_every_optimizer_rule_is_covered():
    covered = {rule_optimizer(getattr(fastoptim, name)(make_params([(2,)], torch.float32), **kwargs)).rule
               for name, kwargs in CASES}
    optimizer_rules = {name for name, meta in fastoptim._C.rules.items() if meta["fields"][0][0] == "lr"}
    assert covered == optimizer_rules
    assert {n for n in dir(fastoptim._C.edge) if not n.startswith("_")} == set(fastoptim._C.rules)
