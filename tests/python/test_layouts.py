"""Parameters in other memory layouts (issue 20): a channels_last CNN steps exactly as the same CNN
in contiguous layout, for every optimizer, given the same gradients; element-wise rules step such
parameters in place, in memory order, with their state in the parameter's layout; rules that sum
over a tensor or its rows (LAMB, LARS, TAdam, AdamP, AMaC) step a contiguous copy and write it back;
state dicts move between the layouts; a strided view that is not dense is refused with a message."""

import pytest
import torch

import fastoptim
from reference import OPTIMIZERS, make_rich

STEPS = 8


def cnn(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 5, 1), torch.nn.Flatten(),
                               torch.nn.Linear(5 * 4 * 4, 3))


def given_gradients(model, step):
    """The same gradient values for both models, each in its parameter's layout."""
    gen = torch.Generator().manual_seed(100 + step)
    for p in model.parameters():
        g = torch.randn(p.shape, generator=gen)
        p.grad = torch.empty_like(p).copy_(g)


def train(model, name, steps=STEPS):
    opt = make_rich(name, list(model.parameters()))
    for step in range(steps):
        given_gradients(model, step)
        opt.step()
    return opt


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_channels_last_steps_as_the_contiguous_model(name):
    contiguous = cnn()
    channels_last = cnn().to(memory_format=torch.channels_last)
    conv = channels_last[0].weight
    assert not conv.is_contiguous() and conv.is_contiguous(memory_format=torch.channels_last)
    conv_storage = conv.data_ptr()
    a = train(contiguous, name)
    b = train(channels_last, name)
    for p, q in zip(contiguous.parameters(), channels_last.parameters()):
        assert torch.equal(p, q), name
    # the parameter is still the channels_last tensor it was (stepped in place, or written back)
    assert conv.data_ptr() == conv_storage and conv.is_contiguous(memory_format=torch.channels_last)
    row_major = fastoptim._C.rules[a.rule]["row_major"] if hasattr(a, "rule") else False
    for name_, value in b.state[conv].items():
        if isinstance(value, torch.Tensor) and value.shape == conv.shape:
            # element-wise rules keep their state in the parameter's layout; row-major rules contiguous
            assert value.is_contiguous() if row_major else value.stride() == conv.stride(), name_
    for p, q in zip(contiguous.parameters(), channels_last.parameters()):
        for key, value in a.state[p].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, b.state[q][key]), (name, key)


@pytest.mark.parametrize("name", ["AdamW", "LAMB"])
def test_state_dicts_move_between_layouts(name):
    """Saved from a channels_last model, loaded into a contiguous one (and back): the runs go on
    as one run would."""
    reference = cnn()
    ref_opt = train(reference, name, steps=2 * STEPS)
    for first, second in ((torch.channels_last, torch.contiguous_format), (torch.contiguous_format, torch.channels_last)):
        model = cnn().to(memory_format=first)
        opt = train(model, name)
        resumed = cnn().to(memory_format=second)
        with torch.no_grad():
            for p, q in zip(resumed.parameters(), model.parameters()):
                p.copy_(q)
        resumed_opt = make_rich(name, list(resumed.parameters()))
        resumed_opt.load_state_dict(opt.state_dict())
        for step in range(STEPS, 2 * STEPS):
            given_gradients(resumed, step)
            resumed_opt.step()
        for p, q in zip(reference.parameters(), resumed.parameters()):
            assert torch.equal(p, q), (name, first, second)
    assert ref_opt is not None


def test_a_permuted_parameter_steps_in_place():
    weight = torch.nn.Parameter(torch.randn(7, 33).t())  # dense, not contiguous
    expected = torch.nn.Parameter(weight.detach().contiguous())
    ours = fastoptim.AdamW([weight], lr=0.1, weight_decay=0.1)
    theirs = torch.optim.AdamW([expected], lr=0.1, weight_decay=0.1)
    for step in range(5):
        g = torch.randn(33, 7, generator=torch.Generator().manual_seed(step))
        weight.grad, expected.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    torch.testing.assert_close(weight, expected, rtol=1e-6, atol=1e-7)
    assert weight.stride() == (1, 33) and ours.state[weight]["exp_avg"].stride() == (1, 33)


def test_a_strided_view_that_is_not_dense_is_refused():
    base = torch.randn(10, 8)
    view = torch.nn.Parameter(base[:, ::2])  # every other column: gaps in memory
    assert not view.is_contiguous()
    opt = fastoptim.AdamW([view])
    view.grad = torch.ones_like(view)
    before = view.detach().clone()
    with pytest.raises(ValueError, match="do not cover its memory densely"):
        opt.step()
    assert torch.equal(view, before)


@pytest.mark.parametrize("wrap", [
    lambda params: fastoptim.Lookahead(fastoptim.AdamW(params, lr=0.1), sync_period=3),
    lambda params: fastoptim.EMA(fastoptim.AdamW(params, lr=0.1), decay=0.9),
    lambda params: fastoptim.SWA(fastoptim.AdamW(params, lr=0.1), swa_start=2, swa_freq=2),
    lambda params: fastoptim.Scout(fastoptim.AdamW(params, lr=0.1)),
], ids=["Lookahead", "EMA", "SWA", "Scout"])
def test_wrappers_step_channels_last_parameters_as_contiguous_ones(wrap):
    contiguous, channels_last = cnn(), cnn().to(memory_format=torch.channels_last)
    a, b = wrap(list(contiguous.parameters())), wrap(list(channels_last.parameters()))
    for step in range(STEPS):
        for model, opt in ((contiguous, a), (channels_last, b)):
            given_gradients(model, step)
            opt.step()
    for p, q in zip(contiguous.parameters(), channels_last.parameters()):
        assert torch.equal(p, q)
