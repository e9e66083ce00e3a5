"""Adan against the official algorithm as pytorch_optimizer 4.1.0 computes it; holocron's Adan
(pylocron 0.3.0) never updates its previous gradient, shown here as the intended difference."""

import pytest
import torch
from pytorch_optimizer import Adan as KozistrAdan

import fastoptim
from reference import (
    PARITY_DTYPES,
    SHAPES,
    TOLERANCE,
    assert_all_close_rel,
    assert_close_rel,
    assert_low_precision_steps_round_once,
    assert_resumes_bit_identically,
    clone_params,
    load_holocron_optim,
    make_params,
    run_pair,
    set_grads,
)


CASES = [  # (fastoptim, pytorch_optimizer) arguments computing the same thing
    (dict(), dict()),
    (dict(weight_decay=0.05), dict(weight_decay=0.05)),  # proximal decay, the official default
    (dict(weight_decay=0.05, no_prox=True), dict(weight_decay=0.05, weight_decouple=True)),
    (dict(lr=1e-3, betas=(0.9, 0.8, 0.999), eps=1e-6), dict(lr=1e-3, betas=(0.9, 0.8, 0.999), eps=1e-6)),
    # the global gradient-norm clip: the noise's norm is about 330, so 1.0 clips every step
    (dict(max_grad_norm=1.0), dict(max_grad_norm=1.0)),
    (dict(max_grad_norm=10.0, weight_decay=0.05, no_prox=True), dict(max_grad_norm=10.0, weight_decay=0.05, weight_decouple=True)),
]


@PARITY_DTYPES
@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c[0]))
def test_matches_the_official_algorithm_of_pytorch_optimizer(case, dtype):
    ours_cfg, ref_cfg = case
    # pytorch_optimizer's clipping fails on a 0-d parameter (it scales a 0-d gradient by a
    # 1-element tensor in place), and it reduces the global norm in float32 even for float64
    # gradients (fastoptim: float64), so float64 agrees to float32's resolution there.
    # fastoptim's clipping is checked in float64, on a 0-d parameter too, in the test below.
    clips = "max_grad_norm" in ours_cfg
    shapes = [s for s in SHAPES if s != ()] if clips else SHAPES
    rtol = TOLERANCE[torch.float32] if clips else TOLERANCE[dtype]
    params, ref_params, _, _ = run_pair(
        lambda ps: fastoptim.Adan(ps, **{"lr": 1e-2, **ours_cfg}),
        lambda ps: KozistrAdan(ps, **{"lr": 1e-2, **ref_cfg}, foreach=False),
        dtype,
        shapes=shapes,
    )
    assert_all_close_rel(params, ref_params, rtol)


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
