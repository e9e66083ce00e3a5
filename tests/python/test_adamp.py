"""AdamP: the official algorithm (adamp 0.3.0, clovaai) element by element through each of its
branches, and holocron's code where both compute the same thing, are its record's package checks
(tests/python/test_package_parity.py); here: that the branches are taken, amsgrad, the vectors
holocron projects, the per-row two-pass C++ step."""

import pytest
import torch

import fastoptim
from reference import (
    GRADIENTS,
    SHAPES,
    assert_close_rel,
    assert_every_isa_gives_the_same_bits,
    assert_low_precision_steps_round_once,
    assert_resumes_bit_identically,
    clone_params,
    load_holocron_optim,
    make_params,
    run_pair,
    without_radial_part,
)


GRADS = {name: GRADIENTS[name] for name in ("channel-orthogonal", "layer-orthogonal")}


@pytest.mark.parametrize("grads", sorted(GRADS))
def test_the_projection_changes_the_step(grads):
    """The orthogonal gradients do take the projection branches (AdamW gives another result)."""
    params, adamw_params, _, _ = run_pair(lambda ps: fastoptim.AdamP(ps, weight_decay=0.1),
                                          lambda ps: torch.optim.AdamW(ps, weight_decay=0.1, foreach=False), torch.float64,
                                          steps=5, grads=GRADS[grads])
    conv = SHAPES.index((6, 3, 3, 3))
    assert (params[conv] - adamw_params[conv]).abs().max() > 1e-6


def test_amsgrad_uses_the_running_maximum_of_v():
    """The official code has no amsgrad; holocron's option, checked against the official
    equations with the maximum of v in the denominator (no projection: aligned gradients)."""
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    params = make_params([(1023,), (33, 65)], torch.float64)
    ref = [p.detach().clone() for p in params]
    m, v, vmax = ([torch.zeros_like(p) for p in ref] for _ in range(3))
    opt = fastoptim.AdamP(params, lr=lr, amsgrad=True)
    for step in range(1, 31):
        grads = [p.detach() * (1 + 0.5 * torch.rand(p.shape, generator=torch.Generator().manual_seed(step), dtype=p.dtype)) for p in ref]
        if step % 2:
            grads = [g * 3 for g in grads]  # v rises and falls: the maximum matters
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            vmax[i] = torch.maximum(vmax[i], v[i])
            ref[i] = ref[i] - lr / (1 - b1**step) * m[i] / (vmax[i].sqrt() / (1 - b2**step) ** 0.5 + eps)
    for p, q in zip(params, ref):
        assert_close_rel(p.detach(), q, 1e-12)


def test_vectors_are_not_projected_where_holocron_projects_them():
    """holocron projects 1-D tensors too; the official AdamP (and fastoptim) leaves them to Adam."""
    holocron = load_holocron_optim()
    params = make_params([(1023,)], torch.float64)
    ref_params, adam_params = clone_params(params), clone_params(params)
    opts = [fastoptim.AdamP(params), holocron.AdamP(ref_params), torch.optim.Adam(adam_params, foreach=False)]
    for step in range(5):
        g = without_radial_part([p.detach().reshape(1, -1) for p in params], step, rows=True)[0].reshape(-1)
        for ps in (params, ref_params, adam_params):
            ps[0].grad = g.clone()
        for opt in opts:
            opt.step()
    assert_close_rel(params[0], adam_params[0], 1e-12)
    assert (params[0] - ref_params[0]).abs().max() > 1e-6


def test_the_two_passes_agree_for_every_kernel_isa():
    assert_every_isa_gives_the_same_bits(lambda ps: fastoptim.AdamP(ps, weight_decay=0.1, nesterov=True))


def test_bf16_steps_round_once():
    """bf16 only: the update reads the moments as stored (pass 1 stores them, pass 2 reads them,
    as for LAMB), and in fp16 (1 - b2) g^2 underflows for small g, where the float32 reference
    keeps it; bf16 has float32's range, so its result is the float32 step rounded once."""
    assert_low_precision_steps_round_once(lambda ps: fastoptim.AdamP(ps, lr=1e-2, weight_decay=0.1), torch.bfloat16)


def test_state_dict_round_trip_is_bit_identical():
    assert_resumes_bit_identically(lambda ps: fastoptim.AdamP(ps, weight_decay=0.1, amsgrad=True), SHAPES, save_at=7, until=25)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(betas=(0.9, 1.5)), "Invalid beta parameter at index 1: 1.5"),
        (dict(delta=-0.1), "Invalid delta value: -0.1"),
        (dict(wd_ratio=-1.0), "Invalid wd_ratio value: -1.0"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fastoptim.AdamP(make_params(SHAPES, torch.float32), **kwargs)
