"""Adan: the official algorithm as pytorch_optimizer 4.1.0 computes it (its record's package checks,
tests/python/test_package_parity.py); holocron's Adan (pylocron 0.3.0) never updates its previous
gradient, shown here as the intended difference; the clip on a 0-d parameter in float64."""

import pytest
import torch

import fastoptim
from reference import (
    SHAPES,
    assert_close_rel,
    assert_low_precision_steps_round_once,
    assert_resumes_bit_identically,
    clone_params,
    load_holocron_optim,
    make_params,
    set_grads,
)


def test_the_previous_gradient_is_kept_where_holocron_leaves_it_at_zero():
    holocron = load_holocron_optim()
    params = make_params([(17,)], torch.float64)
    ref_params = clone_params(params)
    ours, ref = fastoptim.Adan(params), holocron.Adan(ref_params)
    for step in range(3):
        set_grads([params, ref_params], step, torch.float64)
        ours.step()
        ref.step()
    assert torch.equal(ours.state[params[0]]["prev_grad"], params[0].grad)
    holocron_prev = next(v for k, v in ref.state[ref_params[0]].items() if "prev" in k)
    assert torch.count_nonzero(holocron_prev) == 0  # holocron's bug: never updated
    assert not torch.allclose(params[0], ref_params[0])


def test_first_step_uses_a_zero_difference():
    params = make_params([(33,)], torch.float64)
    opt = fastoptim.Adan(params, lr=0.1)
    set_grads([params], 0, torch.float64)
    g = params[0].grad.clone()
    p0 = params[0].detach().clone()
    opt.step()
    b1, b3 = 0.98, 0.99
    m, n = (1 - b1) * g, (1 - b3) * g * g  # d stays 0
    expected = p0 - 0.1 * (m / (1 - b1)) / (n.sqrt() / (1 - b3) ** 0.5 + 1e-8)
    assert_close_rel(params[0].detach(), expected, 1e-12, "first step")
    assert torch.count_nonzero(opt.state[params[0]]["exp_avg_diff"]) == 0


def test_max_grad_norm_clips_the_gradient_and_the_previous_gradient_kept():
    params = make_params(SHAPES, torch.float64)
    opt = fastoptim.Adan(params, max_grad_norm=1.0)
    set_grads([params], 0, torch.float64)
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    scale = 1.0 / (total + 1e-8)
    assert scale < 0.01
    grads = [p.grad.clone() for p in params]
    opt.step()
    for p, g in zip(params, grads):
        assert torch.equal(p.grad, g)  # p.grad is left alone (the official code scales it in place)
        assert_close_rel(opt.state[p]["prev_grad"], g * scale, 1e-15, "prev_grad")


def test_amsgrad_keeps_the_running_maximum_of_n():
    params = make_params(SHAPES, torch.float32)
    opt = fastoptim.Adan(params, amsgrad=True)
    for step in range(6):
        set_grads([params], step, torch.float32)
        if step >= 3:
            for p in params:
                p.grad.mul_(0.01)  # smaller gradients: n falls, its maximum must not
        opt.step()
    for p in params:
        state = opt.state[p]
        assert torch.all(state["max_exp_avg_sq"] >= state["exp_avg_sq"])
    big = SHAPES.index((100003,))
    assert torch.any(opt.state[params[big]]["max_exp_avg_sq"] > opt.state[params[big]]["exp_avg_sq"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_step_is_the_float32_step_rounded_once(dtype):
    assert_low_precision_steps_round_once(lambda ps: fastoptim.Adan(ps, lr=1e-2, weight_decay=0.01, amsgrad=True), dtype)


def test_state_dict_round_trip_is_bit_identical():
    assert_resumes_bit_identically(lambda ps: fastoptim.Adan(ps, lr=1e-2, weight_decay=0.01), SHAPES, save_at=7, until=25)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(betas=(0.98, 0.92, 1.5)), "Invalid beta parameter at index 2: 1.5"),
        (dict(betas=(0.98, 0.92)), r"Invalid betas: \(0.98, 0.92\) \(expected 3 values\)"),
        (dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
        (dict(max_grad_norm=-2.0), "Invalid max_grad_norm value: -2.0"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fastoptim.Adan(make_params(SHAPES, torch.float32), **kwargs)
