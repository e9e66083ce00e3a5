"""Adafactor against torch.optim.Adafactor beyond the generic tests (test_parity.py runs every config of
its record on the shared shapes): matrices cut into several units of the factored driver, batched
slices, every ISA and thread count giving the same bits, state dicts both ways, layouts and bad input."""

import copy

import pytest
import torch

import fastoptim
from reference import (
    PARITY_DTYPES,
    TOLERANCE,
    assert_close_rel,
    assert_same_steps,
    make_params,
    run_side_by_side,
    set_grads,
)

# Shapes at the factored driver's edges: one row, one column, a slice of several units (rows per
# unit: 65536 / columns, at least rows / 64), wide rows (one unit per row), batched slices, SIMD tails
# in the columns, and an empty matrix.
FACTORED_SHAPES = [(1, 1), (1, 33), (17, 1), (300, 257), (2000, 40), (3, 70001), (2, 5, 16, 17), (4, 0), (0, 3), (7,)]


@PARITY_DTYPES
def test_matrices_of_many_units_match_torch(dtype):
    shapes = [s for s in FACTORED_SHAPES if 0 not in s]  # (torch's fails on empty tensors: the test after this)
    ours, ref, params, ref_params = run_side_by_side("Adafactor", dict(weight_decay=0.1), shapes, dtype, steps=25)
    for i, (p, q) in enumerate(zip(params, ref_params)):
        assert_close_rel(p, q, TOLERANCE[dtype], f"param {i} shape {tuple(q.shape)}")
        assert set(ours.state[p]) == set(ref.state[q])
        for key, value in ref.state[q].items():
            assert ours.state[p][key].shape == value.shape and ours.state[p][key].dtype == value.dtype, key
            assert_close_rel(ours.state[p][key], value, TOLERANCE[dtype], f"{key} of param {i}")


def test_an_empty_tensor_counts_its_step_and_changes_nothing():
    # (torch's Adafactor raises ZeroDivisionError here: it divides by the tensor's numel)
    params = make_params([(0,), (0, 3), (4, 0)], torch.float32)
    opt = fastoptim.Adafactor(params)
    for step in range(2):
        set_grads([params], step, torch.float32)
        opt.step()
    for p in params:
        assert opt.state[p]["step"].item() == 2.0
    assert opt.state[params[1]]["col_var"].shape == (1, 3) and opt.state[params[2]]["row_var"].shape == (4, 1)


def run(shapes, steps, make=lambda ps: fastoptim.Adafactor(ps, weight_decay=0.1)):
    params = make_params(shapes, torch.float32)
    opt = make(params)
    for step in range(steps):
        set_grads([params], step, torch.float32)
        opt.step()
    return params


def test_every_isa_and_thread_count_give_the_same_bits():
    active, threads = fastoptim._C.isa(), torch.get_num_threads()
    results = {}
    try:
        for isa in fastoptim._C.available_isas():
            for n in (1, 2):
                fastoptim._C.set_isa(isa)
                torch.set_num_threads(n)
                results[isa, n] = run(FACTORED_SHAPES, 4)
    finally:
        fastoptim._C.set_isa(active)
        torch.set_num_threads(threads)
    expected = results["scalar", 1]
    for key, params in results.items():
        for p, q in zip(params, expected):
            assert torch.equal(p, q), key


@pytest.mark.parametrize("direction", ["torch to fastoptim", "fastoptim to torch"])
def test_state_dicts_move_between_torch_and_fastoptim(direction):
    shapes = [(33, 65), (2, 5, 16, 17), (17,), ()]
    make_ours = lambda ps: fastoptim.Adafactor(ps, lr=0.02, weight_decay=0.1)  # noqa: E731
    make_torch = lambda ps: torch.optim.Adafactor(ps, lr=0.02, weight_decay=0.1, foreach=False)  # noqa: E731
    first, second = (make_torch, make_ours) if direction == "torch to fastoptim" else (make_ours, make_torch)
    params = make_params(shapes, torch.float32)
    opt = first(params)
    for step in range(5):
        set_grads([params], step, torch.float32)
        opt.step()
    moved = [p.detach().clone().requires_grad_() for p in params]
    continued = second(moved)
    continued.load_state_dict(copy.deepcopy(opt.state_dict()))  # (a state dict shares the optimizer's tensors)
    for step in range(5, 15):
        set_grads([params, moved], step, torch.float32)
        opt.step()
        continued.step()
    for p, q in zip(params, moved):
        assert_close_rel(q, p, 1e-6, f"shape {tuple(p.shape)}")


def test_a_state_dict_of_other_shapes_is_refused_naming_the_key():
    params = make_params([(4, 6), (5,)], torch.float32)
    opt = fastoptim.Adafactor(params)
    set_grads([params], 0, torch.float32)
    opt.step()
    saved = opt.state_dict()
    saved["state"][0]["col_var"] = torch.zeros(4, 1)
    with pytest.raises(ValueError, match=r"'col_var' must have shape \(1, 6\), got \(4, 1\)"):
        fastoptim.Adafactor(make_params([(4, 6), (5,)], torch.float32)).load_state_dict(saved)
    saved = opt.state_dict()
    del saved["state"][0]["row_var"]
    with pytest.raises(ValueError, match=r"lacks \['row_var'\]"):
        fastoptim.Adafactor(make_params([(4, 6), (5,)], torch.float32)).load_state_dict(saved)


def test_a_channels_last_weight_steps_as_the_contiguous_one():
    weight = torch.randn(8, 3, 5, 5, dtype=torch.float64).float()
    dense = weight.clone().requires_grad_()
    channels_last = weight.clone().to(memory_format=torch.channels_last).requires_grad_()
    opts = [fastoptim.Adafactor([dense]), fastoptim.Adafactor([channels_last])]
    for step in range(5):
        grad = torch.randn(weight.shape, generator=torch.Generator().manual_seed(step))
        dense.grad, channels_last.grad = grad.clone(), grad.to(memory_format=torch.channels_last)
        for opt in opts:
            opt.step()
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(dense, channels_last)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(eps=(-1e-3, 1e-3)), r"eps\[0\]"),
        (dict(eps=(None, -1.0)), r"eps\[1\]"),
        (dict(beta2_decay=0.5), "beta2_decay"),
        (dict(d=0.5), r"\bd value"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(lr=-1.0), "learning rate"),
    ],
)
def test_bad_hyperparameters_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fastoptim.Adafactor([torch.zeros(3, 3, requires_grad=True)], **kwargs)


def test_a_bad_factor_is_refused_before_any_tensor_changes():
    matrix, vector = torch.ones(4, 6, requires_grad=True), torch.ones(5, requires_grad=True)
    opt = fastoptim.Adafactor([vector, matrix])
    matrix.grad, vector.grad = torch.ones(4, 6), torch.ones(5)
    opt.step()
    opt.state[matrix]["row_var"] = torch.zeros(4, 1, dtype=torch.float64)
    before = [t.clone() for t in (matrix, vector, opt.state[vector]["variance"], opt.state[vector]["step"])]
    with pytest.raises(TypeError, match=r"row_var of parameter #1 \(shape \(4, 6\)\) of param group 0 has dtype Double"):
        opt.step()
    after = (matrix, vector, opt.state[vector]["variance"], opt.state[vector]["step"])
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_compiled_step_matches_eager():
    shapes = [(33, 65), (17,)]
    eager_params, compiled_params = make_params(shapes, torch.float32), make_params(shapes, torch.float32)
    eager, compiled = fastoptim.Adafactor(eager_params), fastoptim.Adafactor(compiled_params)
    assert_same_steps(eager.step, torch.compile(compiled.step, fullgraph=True), eager_params, compiled_params, 3)
