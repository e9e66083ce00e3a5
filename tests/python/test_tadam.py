"""TAdam: holocron's code (pylocron 0.3.0) element by element (its record's package check, W_t
compared too: tests/python/test_package_parity.py); W kept in float32 (float64) for
every parameter dtype; the optional Adam-like first step; the two-pass C++ step."""

import copy

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
    make_params,
    set_grads,
)


def test_the_first_step_is_suppressed_as_in_the_paper_and_adam_like_on_request():
    """v = 0 on the first step makes w about 2 d eps / sum(g^2): the update is ~1e-9 of Adam's.
    first_step_weight="adam" uses w = 1, and the first step is then Adam's."""
    params = make_params([(1023,)], torch.float64)
    adam_like, adam_params = clone_params(params), clone_params(params)
    before = params[0].detach().clone()
    set_grads([params, adam_like, adam_params], 0, torch.float64)
    fastoptim.TAdam(params, lr=0.1).step()
    fastoptim.TAdam(adam_like, lr=0.1, first_step_weight="adam").step()
    torch.optim.Adam(adam_params, lr=0.1, foreach=False).step()
    assert (params[0] - before).abs().max() < 1e-7
    assert_close_rel(adam_like[0], adam_params[0], 1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_W_stays_float32_for_low_precision_params_across_a_state_dict_round_trip(dtype):
    params = make_params(SHAPES, dtype)
    opt = fastoptim.TAdam(params)
    set_grads([params], 0, dtype)
    opt.step()
    assert all(s["W_t"].dtype == torch.float32 for s in opt.state.values())
    other = fastoptim.TAdam(clone_params(params))
    other.load_state_dict(copy.deepcopy(opt.state_dict()))  # torch casts floating state to the param dtype
    assert all(s["W_t"].dtype == torch.float32 for s in other.state.values())
    set_grads([list(other.state)], 1, dtype)
    other.step()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_steps_round_once(dtype):
    assert_low_precision_steps_round_once(lambda ps: fastoptim.TAdam(ps, lr=1e-2, weight_decay=0.01), dtype)


def test_the_two_passes_agree_for_every_kernel_isa():
    assert_every_isa_gives_the_same_bits(lambda ps: fastoptim.TAdam(ps, lr=1e-2, amsgrad=True, weight_decay=0.01))


def test_state_dict_round_trip_is_bit_identical():
    assert_resumes_bit_identically(lambda ps: fastoptim.TAdam(ps, lr=1e-2, amsgrad=True), SHAPES, save_at=7, until=25)


def test_wrong_dtype_of_W_is_rejected_before_anything_changes():
    params = make_params([(17,)], torch.float32)
    opt = fastoptim.TAdam(params)
    set_grads([params], 0, torch.float32)
    opt.step()
    opt.state[params[0]]["W_t"] = opt.state[params[0]]["W_t"].double()
    before = params[0].detach().clone()
    with pytest.raises(TypeError, match=r"W_t of parameter #0 \(shape \(17,\)\) of param group 0 has dtype Double but must be Float"):
        opt.step()
    assert torch.equal(params[0], before)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(betas=(0.0, 0.999)), r"TAdam needs beta1 > 0"),
        (dict(dof=0.0), r"Invalid dof value: 0.0"),
        (dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
        (dict(first_step_weight="gauss"), "Invalid first_step_weight: 'gauss'"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fastoptim.TAdam(make_params(SHAPES, torch.float32), **kwargs)
