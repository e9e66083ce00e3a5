"""Schedule-Free AdamW and SGD against the schedulefree package 1.4.1 (both of its paths, per
parameter and foreach) over 50 steps at the sizes of every SIMD tail, with warmup, weight decay and
the averaging options; train()/eval() switching the parameters as the package does, and the mode
carried by state dicts."""

import copy

import pytest
import schedulefree
import torch

import fastoptim
from reference import PARITY_DTYPES, TOLERANCE, assert_all_close_rel, make_params, run_pair, set_grads

CASES = {
    "AdamWScheduleFree": [
        dict(),
        dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6),
        dict(weight_decay=0.1),
        dict(warmup_steps=10),
        dict(lr=1e-2, warmup_steps=5, r=0.5, weight_lr_power=1.0, weight_decay=0.01),
    ],
    "SGDScheduleFree": [
        dict(lr=0.1),
        dict(lr=0.1, momentum=0.5),
        dict(lr=0.1, weight_decay=0.1),
        dict(lr=0.1, warmup_steps=10),
        dict(lr=0.05, warmup_steps=5, r=1.0, weight_lr_power=0.5, weight_decay=0.01),
    ],
}
CASE_LIST = [(name, cfg) for name, cfgs in CASES.items() for cfg in cfgs]


def package_optimizer(name, params, **cfg):
    opt = getattr(schedulefree, name)(params, **cfg)
    opt.train()  # (it starts in eval mode, where it refuses to step)
    return opt


@PARITY_DTYPES
@pytest.mark.parametrize("foreach", [False, True], ids=["per_param", "foreach"])
@pytest.mark.parametrize("case", CASE_LIST, ids=str)
def test_matches_the_schedulefree_package(case, foreach, dtype):
    name, cfg = case
    pair = run_pair(
        lambda ps: getattr(fastoptim, name)(ps, **cfg),
        lambda ps: package_optimizer(name, ps, **cfg, foreach=foreach),
        dtype,
    )
    assert_all_close_rel(pair.params, pair.ref_params, TOLERANCE[dtype])
    for p, q in zip(pair.params, pair.ref_params):
        for key in pair.ref.state[q]:
            assert_all_close_rel([pair.ours.state[p][key]], [pair.ref.state[q][key]], TOLERANCE[dtype])
    group, ref_group = pair.ours.param_groups[0], pair.ref.param_groups[0]
    for p in pair.params:  # the package's per-group schedule values are each parameter's here
        state = pair.ours.state[p]
        assert state["step"].item() == ref_group["k"]
        assert state["lr_max"].item() == pytest.approx(ref_group["lr_max"], rel=TOLERANCE[dtype])
        assert state["weight_sum"].item() == pytest.approx(ref_group["weight_sum"], rel=TOLERANCE[dtype])
    # eval() puts the average x in the parameters, as the package's eval() does
    pair.ours.eval()
    pair.ref.eval()
    assert_all_close_rel(pair.params, pair.ref_params, 10 * TOLERANCE[dtype])
    assert group["train_mode"] is False


@pytest.mark.parametrize("name", sorted(CASES))
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


@pytest.mark.parametrize("name", sorted(CASES))
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
