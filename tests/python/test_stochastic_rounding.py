"""Stochastic rounding of bf16 parameters (``stochastic_rounding=True``): each stored value is the
float32 result rounded down or up toward the neighbouring bf16 values, up with probability equal to
the distance, so small updates survive on average; the bits are keyed, not streamed, so threads, ISAs
and resumes give the same parameters."""

import copy
import inspect

import pytest
import torch

import fastoptim
from reference import (
    OPTIMIZERS,
    SHAPES,
    assert_every_isa_gives_the_same_bits,
    assert_resumes_bit_identically,
    assert_same_steps,
    make_params,
    make_rich,
    rule_optimizer,
    set_grads,
)

ROUNDING = sorted(name for name in OPTIMIZERS if "stochastic_rounding" in inspect.signature(getattr(fastoptim, name)).parameters)
BF16_ULP_AT_ONE = 2.0**-7


def test_every_optimizer_takes_it():
    assert ROUNDING == OPTIMIZERS


def bits_of(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.int16).to(torch.int32) & 0xFFFF


@pytest.mark.parametrize("name", ROUNDING)
def test_each_value_is_a_bf16_neighbour_of_the_nearest_one_and_the_state_is_unchanged(name):
    """From the same bf16 start, one step with stochastic rounding stores, element by element, the
    value round-to-nearest stores or the bf16 value next to it (so at most one bf16 step away), it
    differs from it somewhere (it rounds), and the optimizer state is the same."""
    params = make_params(SHAPES, torch.bfloat16)
    nearest = [p.detach().clone().requires_grad_() for p in params]
    ours, plain = make_rich(name, params, stochastic_rounding=True), make_rich(name, nearest)
    for step in range(4):  # (until they differ: ADOPT's first step leaves the parameters, TAdam's first moves them little)
        set_grads([params, nearest], step, torch.bfloat16)
        ours.step()
        plain.step()
        if not all(torch.equal(p, q) for p, q in zip(params, nearest)):
            break
    differ = 0
    for p, q in zip(params, nearest):
        distance = (bits_of(p) - bits_of(q)).abs()  # (bf16 bit patterns of one sign are ordered by magnitude)
        assert p.numel() == 0 or int(distance.max()) <= 1, name
        differ += int((distance != 0).sum())
        state_ours, state_plain = rule_optimizer(ours).state[p], rule_optimizer(plain).state[q]
        for key, value in state_plain.items():
            assert torch.equal(state_ours[key], value), (name, key)
    assert differ > 0, f"{name}: stochastic rounding changed nothing"


def test_small_updates_survive_on_average_where_nearest_rounding_loses_them():
    """SGD with updates a tenth of a bf16 step: round-to-nearest never moves the weights; stochastic
    rounding moves their mean as float32 does (within 0.05 of a bf16 step over 2**17 weights)."""
    n, steps = 2**17, 50
    start = torch.ones(n, dtype=torch.bfloat16)
    update = BF16_ULP_AT_ONE / 10
    results = {}
    for rounding in (False, True):
        p = start.clone().requires_grad_()
        opt = fastoptim.SGD([p], lr=1.0, stochastic_rounding=rounding)
        for _ in range(steps):
            p.grad = torch.full_like(p, -update)
            opt.step()
        results[rounding] = p.detach().double()
    assert torch.equal(results[False], start.double())
    mean = float(results[True].mean())
    assert abs(mean - (1 + steps * update)) < 0.05 * BF16_ULP_AT_ONE
    assert set(results[True].unique().tolist()) <= {1 + k * BF16_ULP_AT_ONE for k in range(0, 20)}


def test_one_rounding_is_unbiased_at_every_fraction():
    """One step from values whose float32 update lands at fractions 0.1 ... 0.9 of a bf16 step: the
    share of weights rounded up is that fraction (within 0.01, 2**16 weights each)."""
    n = 2**16
    for fraction in (0.1, 0.25, 0.5, 0.75, 0.9):
        p = torch.ones(n, dtype=torch.bfloat16, requires_grad=True)
        opt = fastoptim.SGD([p], lr=1.0, stochastic_rounding=True)
        p.grad = torch.full((n,), -fraction * BF16_ULP_AT_ONE, dtype=torch.bfloat16)
        opt.step()
        up = float((p.detach() > 1).double().mean())
        assert abs(up - fraction) < 0.01, (fraction, up)


@pytest.mark.parametrize("name", ["AdamW", "LAMB", "Lion", "Adafactor"])
def test_every_isa_and_thread_count_gives_the_same_bits(name):
    """The bits are keyed by (seed, parameter, step, element), not drawn in order: every kernel ISA,
    and one thread or two, store the same parameters (at every tail size of the shared shapes)."""
    def make(params):
        torch.manual_seed(0)  # (the same rounding seed for every run)
        return make_rich(name, params, stochastic_rounding=True)

    assert_every_isa_gives_the_same_bits(make, dtype=torch.bfloat16)
    threads = torch.get_num_threads()
    runs = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            params = make_params(SHAPES, torch.bfloat16)
            opt = make(params)
            for step in range(3):
                set_grads([params], step, torch.bfloat16)
                opt.step()
            runs.append(params)
    finally:
        torch.set_num_threads(threads)
    for p, q in zip(*runs):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", ["AdamW", "SGD", "Muon", "Adafactor", "SophiaH", "AMaC"])
def test_a_resumed_run_continues_bit_for_bit(name):
    """The rounding keys (and the group's seed) travel in the state dict: stepping on from a saved
    state rounds as the uninterrupted run does; the keys stay int64 through torch's load, which
    casts floating state to the parameter's dtype."""
    def make(params):
        torch.manual_seed(3)  # (the seed is drawn when the group is added)
        return make_rich(name, params, stochastic_rounding=True)

    opt, resumed = assert_resumes_bit_identically(make, SHAPES, save_at=4, until=8, dtype=torch.bfloat16)
    for state in rule_optimizer(resumed).state.values():
        assert state["rounding_key"].dtype == torch.int64 and int(state["rounding_key"][2]) == 8


def test_the_seed_is_drawn_from_torchs_generator_or_given():
    torch.manual_seed(5)
    a = fastoptim.AdamW([torch.zeros(3, requires_grad=True)], stochastic_rounding=True)
    torch.manual_seed(5)
    b = fastoptim.AdamW([torch.zeros(3, requires_grad=True)], stochastic_rounding=True)
    assert a.param_groups[0]["rounding_seed"] == b.param_groups[0]["rounding_seed"]
    given = fastoptim.AdamW([{"params": [torch.zeros(3, requires_grad=True)], "rounding_seed": 7}], stochastic_rounding=True)
    assert given.param_groups[0]["rounding_seed"] == 7
    plain = fastoptim.AdamW([torch.zeros(3, requires_grad=True)])
    assert plain.param_groups[0]["stochastic_rounding"] is False and "rounding_seed" not in plain.param_groups[0]


def test_float32_parameters_are_stored_as_computed():
    """Nothing to round: float32 parameters step exactly as without the option (bf16 ones beside them round)."""
    params = make_params([(17,), (100003,)], torch.float32)
    twins = [p.detach().clone().requires_grad_() for p in params]
    ours, plain = fastoptim.AdamW(params, stochastic_rounding=True), fastoptim.AdamW(twins)
    assert_same_steps(ours.step, plain.step, params, twins, 3)


def test_bad_input_is_refused_by_name_before_anything_changes():
    p = torch.ones(5, dtype=torch.float16, requires_grad=True)
    opt = fastoptim.AdamW([p], stochastic_rounding=True)
    p.grad = torch.ones_like(p)
    with pytest.raises(TypeError, match=r"parameter #0 \(shape \(5,\)\) of param group 0 is float16; stochastic rounding"):
        opt.step()
    assert torch.equal(p, torch.ones_like(p)) and not opt.state[p]
    with pytest.raises(TypeError, match="stochastic_rounding must be a bool, got 'yes'"):
        fastoptim.AdamW([torch.zeros(2, requires_grad=True)], stochastic_rounding="yes")
    with pytest.raises(ValueError, match="Invalid rounding_seed value: -1"):
        fastoptim.AdamW([{"params": [torch.zeros(2, requires_grad=True)], "rounding_seed": -1}], stochastic_rounding=True)
    q = torch.ones(5, dtype=torch.bfloat16, requires_grad=True)
    opt = fastoptim.AdamW([q], stochastic_rounding=True)
    q.grad = torch.ones_like(q)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    saved["state"][0]["rounding_key"] = saved["state"][0]["rounding_key"].float()
    with pytest.raises(TypeError, match="'rounding_key' must be an int64 tensor of 3 values"):
        opt.load_state_dict(saved)


def test_a_compiled_step_rounds_as_the_eager_one():
    params = make_params([(17,), (33, 65)], torch.bfloat16)
    twins = [p.detach().clone().requires_grad_() for p in params]
    torch.manual_seed(1)
    eager = fastoptim.AdamW(params, stochastic_rounding=True)
    torch.manual_seed(1)
    compiled = fastoptim.AdamW(twins, stochastic_rounding=True)
    assert_same_steps(eager.step, torch.compile(compiled.step, fullgraph=True), params, twins, 3, torch.bfloat16)
