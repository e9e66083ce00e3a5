"""AdEMAMix: against holocron's (pylocron 0.3.0) and pytorch_optimizer 4.1.0's by its record's
package checks (tests/python/test_package_parity.py); here against the official equations with their
schedulers, and each documented difference from holocron shown to be the intended one."""

import math

import pytest
import torch
from pytorch_optimizer import AdEMAMix as KozistrAdEMAMix

import fastoptim
from reference import (
    PARITY_DTYPES,
    SHAPES,
    TOLERANCE,
    assert_all_close_rel,
    assert_low_precision_steps_round_once,
    assert_resumes_bit_identically,
    load_holocron_optim,
    make_params,
    run_pair,
    set_grads,
)


def run_classes(ours_cls, ref_cls, ours_kwargs, ref_kwargs, dtype):
    """run_pair for two classes and their arguments: (params, ref_params)."""
    return run_pair(lambda ps: ours_cls(ps, **ours_kwargs), lambda ps: ref_cls(ps, **ref_kwargs), dtype)[:2]


def test_decoupled_weight_decay_is_the_intended_difference_from_holocron():
    holocron = load_holocron_optim()
    params, ref_params = run_classes(fastoptim.AdEMAMix, holocron.AdEMAMix, dict(weight_decay=0.1), dict(weight_decay=0.1), torch.float64)
    big = SHAPES.index((100003,))
    assert (params[big] - ref_params[big]).abs().max() > 1e-6  # L2 and decoupled decay really differ
    # (the decoupled one is pytorch_optimizer's weight_decouple=True: a package check of the record)


def official_alpha(step, alpha, t_alpha):
    return alpha if t_alpha is None or step >= t_alpha else (step / t_alpha) * alpha


def official_beta3(step, beta1, beta3, t_beta3, eps=1e-8):
    """The half-life warm-up of apple/ml-ademamix: half-life = ln(0.5)/ln(beta + eps) - 1, interpolated linearly."""
    if t_beta3 is None or step >= t_beta3:
        return beta3
    half_life = lambda beta: math.log(0.5) / math.log(beta + eps) - 1  # noqa: E731
    a = step / t_beta3
    return 0.5 ** (1 / ((1 - a) * half_life(beta1) + a * half_life(beta3) + 1))


@PARITY_DTYPES
def test_schedulers_follow_the_official_equations(dtype):
    lr, (b1, b2, b3), alpha, eps, wd, t_alpha, t_beta3 = 1e-2, (0.9, 0.999, 0.9999), 5.0, 1e-8, 0.05, 30, 40
    params = make_params(SHAPES, dtype)
    ref = [p.detach().clone() for p in params]
    m1, m2, v = ([torch.zeros_like(p) for p in ref] for _ in range(3))
    opt = fastoptim.AdEMAMix(params, lr=lr, betas=(b1, b2, b3), alpha=alpha, eps=eps, weight_decay=wd, t_alpha=t_alpha, t_beta3=t_beta3)
    for step in range(1, 51):
        set_grads([params], step, dtype)
        opt.step()
        a_t, b3_t = official_alpha(step, alpha, t_alpha), official_beta3(step, b1, b3, t_beta3)
        for i, p in enumerate(ref):
            g = params[i].grad
            m1[i] = b1 * m1[i] + (1 - b1) * g
            m2[i] = b3_t * m2[i] + (1 - b3_t) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            u = (m1[i] / (1 - b1**step) + a_t * m2[i]) / (v[i].sqrt() / math.sqrt(1 - b2**step) + eps)
            ref[i] = p - lr * (u + wd * p)
    assert_all_close_rel(params, ref, TOLERANCE[dtype])


def test_schedulers_agree_with_pytorch_optimizer_up_to_its_missing_eps():
    # pytorch_optimizer's closed form of the beta3 warm-up leaves out the official eps=1e-8 in
    # log(beta + eps), which moves the half-life of beta3 = 0.9999 by about 1e-4: close, not equal.
    params, ref_params = run_classes(
        fastoptim.AdEMAMix, KozistrAdEMAMix, dict(lr=1e-2, t_alpha=20, t_beta3=20),
        dict(lr=1e-2, t_alpha_beta3=20, foreach=False), torch.float64,
    )
    assert_all_close_rel(params, ref_params, 1e-5)


def test_beta1_zero_keeps_no_fast_average():
    params = make_params(SHAPES, torch.float32)
    opt = fastoptim.AdEMAMix(params, betas=(0.0, 0.999, 0.9999))
    set_grads([params], 0, torch.float32)
    opt.step()
    assert set(opt.state[params[0]]) == {"step", "exp_avg_slow", "exp_avg_sq"}


def test_state_dict_round_trip_is_bit_identical():
    assert_resumes_bit_identically(
        lambda ps: fastoptim.AdEMAMix(ps, lr=1e-2, weight_decay=0.01, t_alpha=10, t_beta3=10), SHAPES, save_at=7, until=25
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(betas=(0.9, 0.999, 1.0)), "Invalid beta parameter at index 2: 1.0"),
        (dict(betas=(0.9, 0.999)), r"Invalid betas: \(0.9, 0.999\) \(expected 3 values\)"),
        (dict(alpha=-1.0), "Invalid alpha value: -1.0"),
        (dict(eps=-1.0), "Invalid epsilon value: -1.0"),
        (dict(t_alpha=0), "Invalid t_alpha value: 0"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fastoptim.AdEMAMix(make_params(SHAPES, torch.float32), **kwargs)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_step_is_the_float32_step_rounded_once(dtype):
    assert_low_precision_steps_round_once(lambda ps: fastoptim.AdEMAMix(ps, lr=1e-2, weight_decay=0.01, t_alpha=5, t_beta3=5), dtype)
