"""RaLars, on LAMB's two-pass rule: checked against holocron's code (pylocron 0.3.0) element by
element by its record's package check (tests/python/test_package_parity.py); here where it differs
from holocron by design, and what one rule serving LAMB and RaLars implies."""

import pytest
import torch

import fastoptim
from reference import (
    SHAPES,
    assert_close_rel,
    assert_every_isa_gives_the_same_bits,
    assert_low_precision_steps_round_once,
    assert_resumes_bit_identically,
    clone_params,
    load_holocron_optim,
    make_params,
    run_pair,
    set_grads,
)


def test_a_new_beta2_takes_effect_where_holocron_keeps_a_stale_rho_inf():
    """holocron caches rho_inf in the group on its first step; fastoptim recomputes it, so after
    changing beta2 it matches a fresh holocron optimizer's formula, not the stale one."""
    holocron = load_holocron_optim()
    params = make_params([(1023,)], torch.float64)
    ref_params, stale_params = clone_params(params), clone_params(params)
    wd = dict(weight_decay=0.1)  # without decay r_t scales u uniformly and cancels in the trust ratio
    ours, ref, stale = fastoptim.RaLars(params, **wd), holocron.RaLars(ref_params, **wd), holocron.RaLars(stale_params, **wd)
    for step in range(20):
        if step == 10:
            for opt in (ours, ref, stale):
                opt.param_groups[0]["betas"] = (0.9, 0.99)
            del ref.param_groups[0]["sma_inf"]  # what holocron would need to follow the change
        set_grads([params, ref_params, stale_params], step, torch.float64)
        for opt in (ours, ref, stale):
            opt.step()
    assert_close_rel(params[0], ref_params[0], 1e-12)
    assert (params[0] - stale_params[0]).abs().max() > 1e-6


def test_lamb_is_ralars_without_the_rectification():
    """One rule serves both: with rho_t never above the threshold and force_adaptive_momentum,
    RaLars's update is LAMB's bias-corrected one."""
    params, other, _, _ = run_pair(
        lambda ps: fastoptim.RaLars(ps, weight_decay=0.1, force_adaptive_momentum=True, sma_threshold=1e9),
        lambda ps: fastoptim.LAMB(ps, weight_decay=0.1),
        torch.float64,
        steps=10,
    )
    for p, q in zip(params, other):
        assert torch.equal(p, q)


def test_the_two_passes_agree_for_every_kernel_isa():
    assert_every_isa_gives_the_same_bits(lambda ps: fastoptim.RaLars(ps, weight_decay=0.01), steps=8)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_steps_round_once(dtype):
    assert_low_precision_steps_round_once(lambda ps: fastoptim.RaLars(ps, lr=1e-2, weight_decay=0.01), dtype, steps=8)


def test_state_dict_round_trip_is_bit_identical():
    assert_resumes_bit_identically(lambda ps: fastoptim.RaLars(ps, weight_decay=0.01), SHAPES, save_at=7, until=25)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(eps=-1.0), "Invalid epsilon value: -1.0"),
        (dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
        (dict(scale_clip=(5.0, 1.0)), r"scale_clip must be \(low, high\) with low <= high"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fastoptim.RaLars(make_params(SHAPES, torch.float32), **kwargs)
