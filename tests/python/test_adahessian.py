"""AdaHessian: parity with pytorch_optimizer 4.1.0's AdaHessian given the same estimates, with the
official equations (written here) on a model whose refreshes the optimizer drives itself, the
refresh count in the bias correction, resume, ISAs and validation."""

import pytest
import torch
from pytorch_optimizer import AdaHessian as ReferenceAdaHessian

import fastoptim
from fastoptim.hessian import hutchinson, spatial_average
from reference import (
    PARITY_DTYPES,
    SHAPES,
    TOLERANCE,
    GivenHessian,
    assert_all_close_rel,
    assert_every_isa_gives_the_same_bits,
    assert_low_precision_steps_round_once,
    assert_resumes_bit_identically,
    exact_estimates,
    make_params,
)
from test_sophia import run_with_estimates

CASES = [
    dict(),
    dict(weight_decay=0.1),
    dict(weight_decay=0.1, weight_decouple=False),
    dict(hessian_power=0.5, betas=(0.8, 0.99)),
    dict(hessian_power=0.3),
    dict(maximize=True),
]


@PARITY_DTYPES
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_matches_pytorch_optimizer_given_the_same_estimates(case, dtype):
    params = make_params(SHAPES, dtype)
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    ours = fastoptim.AdaHessian(params, lr=0.01, eps=1e-4, **case)
    ref = ReferenceAdaHessian(ref_params, lr=0.01, eps=1e-4, **case)
    run_with_estimates(ours, ref, params, ref_params, steps=30, interval=1)
    assert_all_close_rel(params, ref_params, TOLERANCE[dtype])


def conv_model(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3)
    ).double()
    x, y = torch.randn(8, 2, 6, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    return model, x, y


def official_adahessian(model, x, y, steps, lr, betas, eps, weight_decay, hessian_power, blocks, interval, seed):
    """The official equations (amirgholami/adahessian, instruction version) with the same probes
    (keyed as fastoptim keys them), refreshed every `interval` steps and bias-corrected by the
    number of refreshes (which is the step count for interval 1, the official setting)."""
    params = list(model.parameters())
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    refreshes = 0
    for step in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        if step % interval == 0:
            d = hutchinson(grads, params, list(range(len(params))), seed=seed, refresh=step)
            for vv, dd in zip(v, d):
                dd = spatial_average(dd.double(), blocks)
                vv.mul_(betas[1]).addcmul_(dd, dd, value=1 - betas[1])
            refreshes += 1
        with torch.no_grad():
            for p, g, mm, vv in zip(params, grads, m, v):
                mm.mul_(betas[0]).add_(g.detach(), alpha=1 - betas[0])
                bias_correction1 = 1 - betas[0] ** (step + 1)
                bias_correction2 = 1 - betas[1] ** refreshes
                denom = (vv.sqrt() ** hessian_power) / bias_correction2 ** (hessian_power / 2) + eps
                p.copy_(p - lr * (mm / bias_correction1 / denom + weight_decay * p))


@pytest.mark.parametrize("interval", [1, 3])
@pytest.mark.parametrize("blocks", [(-1, -1, -1, -1), (-1, 4, -1, 3)])
def test_matches_the_official_equations_when_it_drives_its_own_refreshes(interval, blocks):
    hyper = dict(lr=0.05, betas=(0.9, 0.999), eps=1e-4, weight_decay=0.01, hessian_power=1.0)
    model, x, y = conv_model()
    opt = fastoptim.AdaHessian(model.parameters(), spatial_average_block_size=blocks, update_period=interval, seed=5, **hyper)
    for _ in range(10):
        opt.zero_grad()
        opt.step(lambda: torch.nn.functional.cross_entropy(model(x), y))
    reference, _, _ = conv_model()
    official_adahessian(reference, x, y, 10, blocks=blocks, interval=interval, seed=5, **hyper)
    assert_all_close_rel(list(model.parameters()), [p.detach() for p in reference.parameters()], 1e-10)
    first = next(iter(model.parameters()))
    assert opt.state[first]["hessian_step"].item() == len(range(0, 10, interval))


def test_the_bias_correction_counts_refreshes_not_steps():
    """pytorch_optimizer corrects v with 1 - b2^step even when it was refreshed fewer times."""
    params = make_params([(200,)], torch.float64)
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    ours = fastoptim.AdaHessian(params, lr=0.01, update_period=3)
    ref = ReferenceAdaHessian(ref_params, lr=0.01, update_period=3, eps=1e-4)
    run_with_estimates(ours, ref, params, ref_params, steps=4, interval=3)
    assert not torch.allclose(params[0], ref_params[0], rtol=1e-6)
    assert ours.state[params[0]]["hessian_step"].item() == 2


def test_resume_mid_run_is_bit_identical():
    assert_resumes_bit_identically(lambda ps: GivenHessian(fastoptim.AdaHessian(ps, lr=0.01, update_period=2)), SHAPES, 5, 12)


def test_every_isa_gives_the_same_bits():
    assert_every_isa_gives_the_same_bits(lambda ps: GivenHessian(fastoptim.AdaHessian(ps, lr=0.01, hessian_power=0.7)))


def test_bf16_steps_round_once():
    # fp16 is off by 1.12 ulps on one element of the second step here (v stored in fp16 and read
    # back by the step: two roundings where the float32 reference has one); not chased further
    assert_low_precision_steps_round_once(lambda ps: GivenHessian(fastoptim.AdaHessian(ps, lr=1e-2), exact_estimates), torch.bfloat16)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-1.0), r"Invalid learning rate: -1.0"),
        (dict(hessian_power=1.5), r"Invalid Hessian power value: 1.5"),
        (dict(spatial_average_block_size=(-1, 0, -1, -1)), r"Invalid spatial_average_block_size value: \(-1, 0, -1, -1\)"),
        (dict(spatial_average_block_size=(-1, -1)), r"Invalid spatial_average_block_size value"),
        (dict(update_period=0), r"Invalid update_period value: 0"),
        (dict(betas=(1.0, 0.9)), r"Invalid beta parameter at index 0: 1.0"),
    ],
)
def test_invalid_arguments_are_rejected_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fastoptim.AdaHessian(make_params([(3,)], torch.float32), **kwargs)


def test_tensors_of_more_than_four_dims_are_rejected_at_construction():
    with pytest.raises(ValueError, match=r"up to 4 dims.*shape \(1, 2, 1, 2, 1\)"):
        fastoptim.AdaHessian(make_params([(3,), (1, 2, 1, 2, 1)], torch.float32))
