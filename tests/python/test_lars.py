"""LARS: the documented form (ratio inside the momentum); holocron's code (pylocron 0.3.0) where both
compute the same thing (its record's package check: momentum 0, the weight norm unclipped) and where
they differ by design; trust ratio, scale_clip and the two-pass C++ step."""

import math

import pytest
import torch

import fastoptim
from reference import (
    PARITY_DTYPES,
    SHAPES,
    TOLERANCE,
    assert_all_close_rel,
    assert_close_rel,
    assert_every_isa_gives_the_same_bits,
    assert_low_precision_steps_round_once,
    assert_resumes_bit_identically,
    clone_params,
    load_holocron_optim,
    make_params,
    set_grads,
)

UNCLIPPED = (0.0, math.inf)  # holocron's code ignores scale_clip


def documented_lars(params, grads_per_step, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                    scale_clip=(0.0, 10.0), trust_coefficient=1.0, eps=0.0, trust_clip=False):
    """The documented equations in plain PyTorch: ratio on g + wd theta, then SGD momentum."""
    params = [p.detach().clone() for p in params]
    buffers = [None] * len(params)
    for grads in grads_per_step:
        for i, (p, g) in enumerate(zip(params, grads)):
            w_norm, g_norm = p.norm().item(), g.norm().item()
            ratio = 1.0 if w_norm == 0 or g_norm == 0 else (
                trust_coefficient * min(max(w_norm, scale_clip[0]), scale_clip[1]) / (g_norm + weight_decay * w_norm + eps))
            if trust_clip:
                ratio = min(ratio, 1.0)
            d = ratio * (g + weight_decay * p)
            if momentum:
                buffers[i] = d if buffers[i] is None else momentum * buffers[i] + (1 - dampening) * d
                d = d + momentum * buffers[i] if nesterov else buffers[i]
            params[i] = p - lr * d
    return params


DOCUMENTED = [
    dict(lr=0.01, momentum=0.9),
    dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.01),
    dict(lr=0.02, momentum=0.5, dampening=0.3, weight_decay=0.1, scale_clip=(0.5, 2.0)),
    dict(lr=0.1, momentum=0.9, trust_coefficient=0.001, eps=1e-8, weight_decay=5e-4),
    dict(lr=0.01, momentum=0.9, weight_decay=0.01, trust_clip=True),  # ratios above and below 1
]


@PARITY_DTYPES
@pytest.mark.parametrize("cfg", DOCUMENTED, ids=str)
def test_momentum_follows_the_documented_equations(cfg, dtype):
    params = make_params(SHAPES, dtype)
    start = clone_params(params)
    opt = fastoptim.LARS(params, **cfg)
    grads_per_step = []
    for step in range(30):
        set_grads([params], step, dtype)
        grads_per_step.append([p.grad.clone() for p in params])
        opt.step()
    assert_all_close_rel(params, documented_lars(start, grads_per_step, **cfg), TOLERANCE[dtype])


def test_trust_clip_caps_the_ratio_at_one():
    results = []
    for trust_clip in (False, True):
        params = make_params([(17,)], torch.float64)  # ||theta|| ~ 4 > ||g|| ~ 4 * 0.1: ratio ~ 10
        before = params[0].detach().clone()
        opt = fastoptim.LARS(params, lr=0.1, trust_clip=trust_clip)
        params[0].grad = 0.1 * torch.randn(17, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        opt.step()
        results.append((before - params[0].detach()) / (0.1 * params[0].grad))
    assert results[0].min() > 5.0  # unclipped, the ratio is far above 1
    assert_close_rel(results[1], torch.ones(17, dtype=torch.float64), 1e-12, "clipped ratio")


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_exclude_1d_gives_tensors_of_ndim_up_to_1_plain_sgd_steps(momentum):
    """With exclude_1d, vectors and scalars step as torch.optim.SGD without weight decay;
    matrices and conv weights as LARS without the option."""
    cfg = dict(lr=0.05, momentum=momentum, weight_decay=0.1)
    params = make_params(SHAPES, torch.float64)
    sgd_params, lars_params = clone_params(params), clone_params(params)
    excluded = [i for i, p in enumerate(params) if p.dim() <= 1]
    ours = fastoptim.LARS(params, **cfg, exclude_1d=True)
    sgd = torch.optim.SGD([sgd_params[i] for i in excluded], lr=0.05, momentum=momentum, foreach=False)
    lars = fastoptim.LARS(lars_params, **cfg)
    for step in range(10):
        set_grads([params, sgd_params, lars_params], step, torch.float64)
        for opt in (ours, sgd, lars):
            opt.step()
    for i, (p, q, r) in enumerate(zip(params, sgd_params, lars_params)):
        if i in excluded:
            assert_close_rel(p.detach(), q.detach(), 1e-12, f"shape {tuple(p.shape)}")
        else:
            assert torch.equal(p, r)
    assert len(excluded) < len(params)


def test_ratio_inside_the_momentum_is_the_intended_difference_from_holocron():
    """holocron's code multiplies the whole buffer by the current ratio; the docs (and fastoptim)
    scale each step's g + wd theta before it enters the buffer. Same first step, then apart."""
    holocron = load_holocron_optim()
    params = make_params([(1023,)], torch.float64)
    ref_params = clone_params(params)
    ours = fastoptim.LARS(params, lr=0.01, momentum=0.9, scale_clip=UNCLIPPED)
    ref = holocron.LARS(ref_params, lr=0.01, momentum=0.9)
    for step in range(5):
        set_grads([params, ref_params], step, torch.float64)
        ours.step()
        ref.step()
        if step == 0:
            assert_close_rel(params[0], ref_params[0], 1e-12, "first step")
    assert (params[0] - ref_params[0]).abs().max() > 1e-6


def test_scale_clip_bounds_the_weight_norm_in_the_ratio():
    params = make_params([(100003,)], torch.float64)  # ||theta|| ~ 316
    before = params[0].detach().clone()
    opt = fastoptim.LARS(params, lr=1e-2)  # scale_clip=None: (0, 10)
    set_grads([params], 0, torch.float64)
    g = params[0].grad.clone()
    opt.step()
    assert math.isclose((before - params[0].detach()).norm().item(), 1e-2 * 10.0, rel_tol=1e-9)
    assert torch.equal(params[0].grad, g)


def test_zero_initialised_tensors_and_zero_gradients_get_a_ratio_of_one():
    bias = torch.nn.Parameter(torch.zeros(7, dtype=torch.float64))
    still = torch.nn.Parameter(torch.ones(5, dtype=torch.float64))
    opt = fastoptim.LARS([bias, still], lr=0.1, weight_decay=0.5)
    bias.grad, still.grad = torch.ones(7, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    opt.step()
    assert torch.equal(bias.detach(), torch.full((7,), -0.1, dtype=torch.float64))
    assert torch.equal(still.detach(), torch.full((5,), 1 - 0.1 * 0.5, dtype=torch.float64))  # the decay alone


def test_polynomial_lr_schedule_gives_the_documented_decay():
    params = make_params([(17,)], torch.float64)
    opt = fastoptim.LARS(params, lr=0.1)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=10, power=2.0)
    for t in range(1, 6):
        set_grads([params], t, torch.float64)
        opt.step()
        sched.step()
        assert math.isclose(opt.param_groups[0]["lr"], 0.1 * (1 - t / 10) ** 2, rel_tol=1e-12)


def test_the_two_passes_agree_for_every_kernel_isa():
    assert_every_isa_gives_the_same_bits(lambda ps: fastoptim.LARS(ps, lr=0.01, momentum=0.9, weight_decay=0.01))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_steps_round_once(dtype):
    assert_low_precision_steps_round_once(lambda ps: fastoptim.LARS(ps, lr=0.01, momentum=0.9, weight_decay=0.01), dtype)


def test_state_dict_round_trip_is_bit_identical():
    assert_resumes_bit_identically(lambda ps: fastoptim.LARS(ps, lr=0.01, momentum=0.9, nesterov=True), SHAPES, save_at=7, until=25)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(momentum=-0.5), "Invalid momentum value: -0.5"),
        (dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
        (dict(nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
        (dict(scale_clip=(2.0, 1.0)), r"scale_clip must be \(low, high\) with low <= high"),
        (dict(trust_coefficient=-1.0), "Invalid trust_coefficient value: -1.0"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fastoptim.LARS(make_params(SHAPES, torch.float32), **kwargs)
