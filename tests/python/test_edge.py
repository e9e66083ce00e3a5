"""The edge front end (cpp/include/fastoptim/edge, driven here through fastoptim._C.edge) gives the
Python classes' float32 results bit for bit, for every optimizer of the catalogue (the
Hessian-diagonal ones with a zero estimate: the edge front end has no autograd to estimate with). Its
own tests (no heap allocation in step(), checkpoints, caller-owned state) are tests/cpp/test_edge.cpp."""

import pytest
import torch

import fastoptim
from fastoptim.records import RECORDS
from reference import SHAPES, given_hessian_if_needed, make_params, noise_grads, rule_optimizer, zero_estimates

CASES = [(r.name, r.front_end) for r in RECORDS if r.front_end is not None and "edge" in r.front_ends]


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
    optimizer_rules = {name for name, meta in fastoptim._C.rules.items() if meta["optimizer"]}
    assert covered == optimizer_rules
    assert {n for n in dir(fastoptim._C.edge) if not n.startswith("_")} == set(fastoptim._C.rules)
