"""Schedule-Free AdamW and SGD: against the schedulefree package 1.4.1 (both of its paths, per
parameter and foreach) with warmup, weight decay and the averaging options, parameters and state, by
their records' package checks (tests/python/test_package_parity.py); here the schedule values and
eval() against the package, train()/eval() switching the parameters, and the mode carried by state
dicts."""

import copy

import pytest
import schedulefree
import torch

import fastoptim
from fastoptim.records import record
from reference import PARITY_DTYPES, TOLERANCE, assert_all_close_rel, make_params, run_pair, set_grads

NAMES = ["AdamWScheduleFree", "SGDScheduleFree"]


@PARITY_DTYPES
@pytest.mark.parametrize("name", NAMES)
def test_the_schedule_and_eval_match_the_package(name, dtype):
    """The package keeps its schedule values (k, lr_max, weight_sum) per group, fastoptim per
    parameter; eval() puts the average x in the parameters, as the package's eval() does. On the
    richest case of the record's package check (warmup, r, weight_lr_power, decay)."""
    check = record(name).package_checks[0]
    cfg = check.cases[-1][0]

    def package_optimizer(params):
        opt = getattr(schedulefree, name)(params, **cfg, foreach=False)
        opt.train()  # (it starts in eval mode, where it refuses to step)
        return opt

    pair = run_pair(lambda ps: getattr(fastoptim, name)(ps, **cfg), package_optimizer, dtype)
    group, ref_group = pair.ours.param_groups[0], pair.ref.param_groups[0]
    for p in pair.params:
        state = pair.ours.state[p]
        assert state["step"].item() == ref_group["k"]
        assert state["lr_max"].item() == pytest.approx(ref_group["lr_max"], rel=TOLERANCE[dtype])
        assert state["weight_sum"].item() == pytest.approx(ref_group["weight_sum"], rel=TOLERANCE[dtype])
    pair.ours.eval()
    pair.ref.eval()
    assert_all_close_rel(pair.params, pair.ref_params, 10 * TOLERANCE[dtype])
    assert group["train_mode"] is False


@pytest.mark.parametrize("name", NAMES)
def test_eval_then_train_returns_the_parameters_and_eval_refuses_a_step(name):
    params = make_params([(17,), (5, 3)], torch.float64)
    opt = getattr(fastoptim, name)(params, lr=0.05)
    for step in range(3):
        set_grads([params], step, torch.float64)
        opt.step()
    y = [p.detach().clone() for p in params]
    opt.eval()
    opt.eval()  # (twice changes nothing more)
    assert not any(torch.equal(p, q) for p, q in zip(params, y))
    with pytest.raises(RuntimeError, match="not in train mode"):
        opt.step()
    opt.train()
    assert_all_close_rel(params, y, 1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_a_state_dict_saved_in_eval_mode_resumes_bit_identically(name):
    params = make_params([(17,), (5, 3)], torch.float32)
    opt = getattr(fastoptim, name)(params, lr=0.05, warmup_steps=3)
    for step in range(4):
        set_grads([params], step, torch.float32)
        opt.step()
    opt.eval()
    checkpoint = copy.deepcopy({"params": [p.detach() for p in params], "optimizer": opt.state_dict()})
    resumed_params = [p.clone().requires_grad_() for p in checkpoint["params"]]
    resumed = getattr(fastoptim, name)(resumed_params, lr=0.05, warmup_steps=3)
    resumed.load_state_dict(checkpoint["optimizer"])
    assert resumed.param_groups[0]["train_mode"] is False
    for o, ps in ((opt, params), (resumed, resumed_params)):
        o.train()
        for step in range(4, 8):
            set_grads([ps], step, torch.float32)
            o.step()
    for p, q in zip(params, resumed_params):
        assert torch.equal(p, q)


def test_a_zero_beta_is_refused_as_eval_would_divide_by_it():
    p = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(ValueError, match="Momentum must be between 0 and 1 exclusive"):
        fastoptim.SGDScheduleFree(p, momentum=0.0)
    with pytest.raises(ValueError, match=r"betas\[0\] must be > 0"):
        fastoptim.AdamWScheduleFree(p, betas=(0.0, 0.999))
