"""LAMB: the documented equations (bias-corrected) by default; holocron's code (pylocron 0.3.0) with
bias_correction=False is its record's package check; trust ratio, clipping and the two-pass C++ step."""

import math

import pytest
import torch

import fastoptim
from fastoptim.records import record
from reference import (
    PARITY_DTYPES,
    SHAPES,
    TOLERANCE,
    assert_all_close_rel,
    assert_close_rel,
    assert_every_isa_gives_the_same_bits,
    assert_resumes_bit_identically,
    clone_params,
    load_holocron_optim,
    make_params,
    run_pair,
    set_grads,
)
# The documented equations in holocron's cases (its record's package check), and in the options
# holocron lacks: trust_clip (with a ratio above 1 on the small tensors, whose norms are below the
# clip), grad_averaging, max_grad_norm (the noise's global norm is about 330).
HOLOCRON_CASES = [ours for ours, _ in record("LAMB").package_checks[0].cases]
OPTION_CASES = [
    dict(lr=1e-2, trust_clip=True),
    dict(grad_averaging=False, weight_decay=0.1),
    dict(max_grad_norm=1.0, weight_decay=0.1),
    dict(max_grad_norm=1e6),  # above the norm: no clipping
    dict(lr=1e-2, trust_clip=True, grad_averaging=False, max_grad_norm=5.0, scale_clip=(0.5, 20.0)),
]


def documented_lamb(params, grads_per_step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                    scale_clip=(0.0, 10.0), trust_clip=False, grad_averaging=True, max_grad_norm=None):
    """The documented equations (and the reference codes' options) in plain PyTorch."""
    (b1, b2), (low, high) = betas, scale_clip
    params = [p.detach().clone() for p in params]
    m, v = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    for step, grads in enumerate(grads_per_step, start=1):
        if max_grad_norm:
            total = math.sqrt(sum(g.double().norm().item() ** 2 for g in grads))
            grads = [g * min(max_grad_norm / (total + eps), 1.0) for g in grads]
        for i, (p, g) in enumerate(zip(params, grads)):
            m[i] = b1 * m[i] + ((1 - b1) if grad_averaging else 1.0) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            u = (m[i] / (1 - b1**step)) / ((v[i] / (1 - b2**step)).sqrt() + eps) + weight_decay * p
            phi, u_norm = min(max(p.norm().item(), low), high), u.norm().item()
            ratio = 1.0 if phi == 0 or u_norm == 0 else phi / u_norm
            if trust_clip:
                ratio = min(ratio, 1.0)
            params[i] = p - lr * ratio * u
    return params


@PARITY_DTYPES
@pytest.mark.parametrize("cfg", HOLOCRON_CASES + OPTION_CASES, ids=str)
def test_default_follows_the_documented_equations(cfg, dtype):
    params = make_params(SHAPES, dtype)
    opt = fastoptim.LAMB(params, **cfg)
    grads_per_step = []
    for step in range(1, 41):
        set_grads([params], step, dtype)
        grads_per_step.append([p.grad.clone() for p in params])
        opt.step()
    start = make_params(SHAPES, dtype)
    assert_all_close_rel(params, documented_lamb(start, grads_per_step, **cfg), TOLERANCE[dtype])


@pytest.mark.parametrize("option", [dict(trust_clip=True), dict(grad_averaging=False), dict(max_grad_norm=1.0)], ids=str)
def test_each_option_changes_the_step(option):
    """The option cases above can fail: each option moves the parameters differently."""
    results = []
    for cfg in (dict(), option):
        params = make_params(SHAPES, torch.float64)
        opt = fastoptim.LAMB(params, lr=1e-2, weight_decay=0.1, **cfg)
        for step in range(5):
            set_grads([params], step, torch.float64)
            opt.step()
        results.append(params)
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(*results) if a.numel())


def test_max_grad_norm_takes_the_norm_over_every_group():
    """Two groups step as one: the clip factor comes from the gradients of both."""
    split, whole, _, _ = run_pair(
        lambda ps: fastoptim.LAMB([{"params": ps[:5]}, {"params": ps[5:]}], max_grad_norm=1.0),
        lambda ps: fastoptim.LAMB(ps, max_grad_norm=1.0),
        torch.float64,
        steps=5,
    )
    for a, b in zip(split, whole):
        assert torch.equal(a, b)


def test_bias_correction_is_the_intended_difference_from_holocron():
    holocron = load_holocron_optim()
    params = make_params(SHAPES, torch.float64)
    ref_params = clone_params(params)
    ours, ref = fastoptim.LAMB(params, weight_decay=0.1), holocron.LAMB(ref_params, weight_decay=0.1)
    for step in range(10):
        set_grads([params, ref_params], step, torch.float64)
        ours.step()
        ref.step()
    big = SHAPES.index((100003,))
    assert (params[big] - ref_params[big]).abs().max() > 1e-6


def test_zero_initialised_tensors_move_with_a_trust_ratio_of_one():
    bias = torch.nn.Parameter(torch.zeros(7, dtype=torch.float64))
    opt = fastoptim.LAMB([bias], lr=0.1)
    bias.grad = torch.ones(7, dtype=torch.float64)
    opt.step()
    # ||theta|| = 0 -> r = 1: theta = -lr * m_hat / (sqrt(v_hat) + eps) = -0.1 / (1 + 1e-8)
    assert torch.allclose(bias.detach(), torch.full((7,), -0.1 / (1 + 1e-8), dtype=torch.float64), rtol=1e-14, atol=0)


def test_scale_clip_bounds_the_weight_norm_used_in_the_ratio():
    results = []
    for clip in [(0.0, 10.0), (0.0, 1.0)]:
        params = make_params([(100003,)], torch.float64)  # ||theta|| ~ 316: clipped either way
        before = params[0].detach().clone()
        opt = fastoptim.LAMB(params, lr=1e-2, scale_clip=clip)
        set_grads([params], 0, torch.float64)
        opt.step()
        results.append((params[0].detach() - before).norm().item())
    assert math.isclose(results[0], 1e-2 * 10.0, rel_tol=1e-9) and math.isclose(results[1], 1e-2 * 1.0, rel_tol=1e-9)


def test_the_two_passes_agree_for_every_kernel_isa():
    assert_every_isa_gives_the_same_bits(lambda ps: fastoptim.LAMB(ps, weight_decay=0.01))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_update_is_float32_math_on_the_stored_moments_rounded_once(dtype):
    """Two passes: the moments are stored (rounded to the parameter's dtype, as holocron's and
    pytorch_optimizer's in-place updates leave them) and the update is computed from them in
    float32, then rounded once when the parameter is stored."""
    lr, wd = 1e-2, 0.01
    params = make_params(SHAPES, dtype)
    opt = fastoptim.LAMB(params, lr=lr, weight_decay=wd)
    ulp = 2.0**-7 if dtype == torch.bfloat16 else 2.0**-10
    for step in range(1, 4):
        set_grads([params], step, dtype)
        before = [p.detach().float() for p in params]
        opt.step()
        for p, p0 in zip(params, before):
            if p.numel() == 0:
                continue
            m, v = (opt.state[p][k].float() for k in ("exp_avg", "exp_avg_sq"))
            u = (m / (1 - 0.9**step)) / ((v / (1 - 0.999**step)).sqrt() + 1e-8) + wd * p0
            phi, u_norm = min(max(p0.norm().item(), 0.0), 10.0), u.norm().item()
            ratio = 1.0 if phi == 0 or u_norm == 0 else phi / u_norm
            expected = (p0 - lr * ratio * u).to(dtype).float()
            assert_close_rel(p.float(), expected, ulp, f"step {step} shape {tuple(p.shape)}")


def test_state_dict_round_trip_is_bit_identical():
    assert_resumes_bit_identically(lambda ps: fastoptim.LAMB(ps, weight_decay=0.01, scale_clip=(0.0, 5.0)), SHAPES, save_at=7, until=25)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0"),
        (dict(scale_clip=(5.0, 1.0)), r"scale_clip must be \(low, high\) with low <= high"),
        (dict(scale_clip=(-1.0, 1.0)), r"Invalid scale_clip\[0\] value: -1.0"),
        (dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
        (dict(max_grad_norm=-1.0), "Invalid max_grad_norm value: -1.0"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fastoptim.LAMB(make_params(SHAPES, torch.float32), **kwargs)
