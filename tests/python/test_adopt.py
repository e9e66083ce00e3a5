"""ADOPT: against pytorch_optimizer 4.1.0's ADOPT (both of its paths, per parameter and foreach) in
every decay mode, with and without clipping, by its record's package check
(tests/python/test_package_parity.py); here its first step, its clip_lambda as fastoptim takes it,
and a pytorch_optimizer checkpoint resumed."""

import copy
import math

import pytest
import torch
from pytorch_optimizer import ADOPT as KozistrADOPT

import fastoptim
from fastoptim import StepPower
from reference import TOLERANCE, assert_all_close_rel, make_params, noise_grads


def test_the_first_step_only_measures_the_gradient():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = fastoptim.ADOPT([p], lr=1.0)
    p.grad = torch.tensor([0.5, -1.0, 0.0])
    opt.step()
    assert torch.equal(p.detach(), torch.tensor([1.0, -2.0, 3.0]))
    assert torch.equal(opt.state[p]["exp_avg"], torch.zeros(3))
    assert torch.equal(opt.state[p]["exp_avg_sq"], torch.tensor([0.25, 1.0, 0.0]))


def test_the_clip_bound_is_step_to_the_exponent():
    # v = 1e-12 after step 1, so g / max(sqrt(v), eps) = 1e6 at step 2: clipped to 2 ** 0.25 (or 2 ** 0.5)
    for clip_lambda, bound in ((StepPower(0.25), 2 ** 0.25), (StepPower(0.5), 2 ** 0.5), (None, 1e6)):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = fastoptim.ADOPT([p], lr=1.0, betas=(0.0, 0.5), eps=1e-6, clip_lambda=clip_lambda)
        p.grad = torch.tensor([1e-6])
        opt.step()
        p.grad = torch.tensor([1.0])
        opt.step()
        assert math.isclose(-p.item(), bound, rel_tol=1e-6)


def test_clip_lambda_other_than_a_step_power_is_refused_and_none_is_kept_as_inf():
    p = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(TypeError, match=r"clip_lambda must be fastoptim.StepPower"):
        fastoptim.ADOPT(p, clip_lambda=lambda step: step ** 0.25)
    assert fastoptim.ADOPT(p, clip_lambda=None).param_groups[0]["clip_exponent"] == math.inf
    assert fastoptim.ADOPT(p, clip_lambda=None).clip_lambda is None
    assert fastoptim.ADOPT(p, clip_lambda=StepPower(0.5)).clip_lambda(16) == 4.0
    assert StepPower(0.25)(16) == 2.0 and KozistrADOPT(p, clip_lambda=StepPower(0.25)).clip_lambda(16) == 2.0


def test_a_pytorch_optimizer_checkpoint_resumes_here():
    """pytorch_optimizer counts ADOPT's steps per group (group["step"]); loaded here, each parameter
    takes that count, and the run continues as pytorch_optimizer's own would."""
    params = make_params([(17,), (33, 65)], torch.float64)
    mine = [p.detach().clone().requires_grad_() for p in params]
    theirs = KozistrADOPT(params, lr=1e-2, weight_decay=0.1, foreach=False)
    for step in range(10):
        if step == 5:
            ours = fastoptim.ADOPT(mine, lr=1e-2, weight_decay=0.1)
            ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
            for p, q in zip(mine, params):
                p.data.copy_(q.detach())
        for p, q, g in zip(params, mine, noise_grads(params, step)):
            p.grad, q.grad = g.clone(), g.clone()
        theirs.step()
        if step >= 5:
            ours.step()
    assert ours.state[mine[0]]["step"].item() == 10
    assert_all_close_rel(mine, params, TOLERANCE[torch.float64])
