"""The edge front end (cpp/include/fastoptim/edge, driven here through fastoptim._C.edge) gives the
Python classes' float32 results bit for bit, for every optimizer of the catalogue (the
Hessian-diagonal ones with a zero estimate: the edge front end has no autograd to estimate with). Its
own tests (no heap allocation in step(), checkpoints, caller-owned state) are tests/cpp/test_edge.cpp."""

import pytest
import torch

import fastoptim
from fastoptim.records import RECORDS
from reference import SHAPES, given_hessian_if_needed, make_params, noise_grads, rule_optimizer, takes_state_bits, zero_estimates

CASES = [(r.name, r.front_end) for r in RECORDS if r.front_end is not None and "edge" in r.front_ends]


# the cases whose Python class takes state_bits=8 (the edge's StateFormat::eight_bit)
EIGHT_BIT_CASES = [(n, k) for n, k in CASES if takes_state_bits(n)]


def assert_edge_steps_as_the_python_class(name, kwargs, shapes, state_bits=None):
    params = make_params(shapes, torch.float32)
    edge_params = [p.detach().clone() for p in params]
    opt = getattr(fastoptim, name)(params, **kwargs, **({"state_bits": state_bits} if state_bits else {}))
    inner = rule_optimizer(opt)
    stepper = given_hessian_if_needed(opt, zero_estimates)  # no estimator at the edge: a zero Hessian EMA
    steps = [noise_grads(params, step) for step in range(12)]
    for grads in steps:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        stepper.step()
    getattr(fastoptim._C.edge, inner.rule)(edge_params, steps, inner._hyper(opt.param_groups[0]),
                                           eight_bit_state=state_bits == 8)
    for p, q in zip(params, edge_params):
        assert torch.equal(p.detach(), q), (name, tuple(p.shape))


@pytest.mark.parametrize("name, kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_edge_steps_as_the_python_class_does(name, kwargs):
    assert_edge_steps_as_the_python_class(name, kwargs, SHAPES)


@pytest.mark.parametrize("name, kwargs", EIGHT_BIT_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(EIGHT_BIT_CASES)])
def test_edge_eight_bit_state_steps_as_state_bits_8_does(name, kwargs):
    """StateFormat::eight_bit: the same codes, scales and so parameters as state_bits=8, at the
    SIMD tails and at block edges (255, 256, 257 elements)."""
    assert_edge_steps_as_the_python_class(name, kwargs, SHAPES + [(255,), (256,), (257,)], state_bits=8)


def test_every_eight_bit_rule_is_covered_at_the_edge():
    eight_bit_rules = {name for name, meta in fastoptim._C.rules.items() if meta["optimizer"] and meta["eight_bit_state"]}
    assert {rule_optimizer(getattr(fastoptim, n)(make_params([(2,)], torch.float32), **k)).rule
            for n, k in EIGHT_BIT_CASES} == eight_bit_rules
    with pytest.raises(ValueError, match="keeps no state in 8 bits"):
        fastoptim._C.edge.sgd([torch.zeros(3)], [], [v for _, v, _ in fastoptim._C.rules["sgd"]["fields"]],
                              eight_bit_state=True)


def test_every_optimizer_rule_is_covered():
    covered = {rule_optimizer(getattr(fastoptim, name)(make_params([(2,)], torch.float32), **kwargs)).rule
               for name, kwargs in CASES}
    optimizer_rules = {name for name, meta in fastoptim._C.rules.items() if meta["optimizer"]}
    assert covered == optimizer_rules | {"adafactor"}  # (Adafactor's class steps on its helper rule, factored)
    assert {n for n in dir(fastoptim._C.edge) if not n.startswith("_")} == set(fastoptim._C.rules)
