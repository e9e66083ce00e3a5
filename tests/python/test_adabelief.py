"""AdaBelief: against holocron's code (pylocron 0.3.0) and the official package (adabelief-pytorch
0.2.1), with and without rectification, by its record's package checks (tests/python/test_package_parity.py);
here that rectify changes the step, and the epsilon inside s, which holocron's code leaves out,
shown to be the intended difference."""

import pytest
import torch

import fastoptim
from reference import (
    SHAPES,
    assert_low_precision_steps_round_once,
    assert_resumes_bit_identically,
    load_holocron_optim,
    make_params,
    run_pair,
)


def test_rectify_changes_the_step_in_both_phases():
    """The rectify cases can fail: before rho_t reaches 5 (step 1) and after (step 10), the
    rectified parameters differ from the plain ones."""
    for steps in (1, 10):
        plain, rectified, _, _ = run_pair(
            lambda ps: fastoptim.AdaBelief(ps), lambda ps: fastoptim.AdaBelief(ps, rectify=True), torch.float64, steps=steps
        )
        big = SHAPES.index((100003,))
        assert (plain[big] - rectified[big]).abs().max() > 1e-6


def test_eps_inside_is_the_intended_difference_from_holocron():
    holocron = load_holocron_optim()
    params, ref, _, _ = run_pair(lambda ps: fastoptim.AdaBelief(ps, eps=1e-4), lambda ps: holocron.AdaBelief(ps, eps=1e-4), torch.float64)
    big = SHAPES.index((100003,))
    assert (params[big] - ref[big]).abs().max() > 1e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_step_is_the_float32_step_rounded_once(dtype):
    assert_low_precision_steps_round_once(lambda ps: fastoptim.AdaBelief(ps, lr=1e-2, amsgrad=True, weight_decay=0.01), dtype)


def test_state_dict_round_trip_is_bit_identical():
    assert_resumes_bit_identically(lambda ps: fastoptim.AdaBelief(ps, amsgrad=True, weight_decay=0.01), SHAPES, save_at=7, until=25)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
        (dict(eps=-1.0), "Invalid epsilon value: -1.0"),
        (dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
        (dict(holocron_compat=True, weight_decouple=True), "holocron_compat=True .* weight_decouple=True"),
        (dict(holocron_compat=True, rectify=True), "holocron_compat=True .* rectify=True"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fastoptim.AdaBelief(make_params(SHAPES, torch.float32), **kwargs)
