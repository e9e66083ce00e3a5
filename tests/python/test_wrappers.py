"""The weight-averaging wrappers: parity with the paper's Lookahead, pytorch_optimizer's Lookahead
and torch's AveragedModel; checkpoints that resume bit for bit; schedulers, hooks, nesting, bad input."""

import pytest
import torch
from pytorch_optimizer import Lookahead as ReferenceLookahead
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import fastoptim
from reference import (
    assert_close_rel,
    assert_resumes_bit_identically,
    clone_params,
    load_holocron_optim,
    make_params,
    set_grads,
)

SHAPES = [(17,), (33, 65), (), (1023,)]

BASES = {
    "fastoptim.SGD": lambda ps: fastoptim.SGD(ps, lr=0.05, momentum=0.9),
    "fastoptim.AdamW": lambda ps: fastoptim.AdamW(ps, lr=1e-2),
    "torch.SGD": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, foreach=False),
    "torch.AdamW": lambda ps: torch.optim.AdamW(ps, lr=1e-2, foreach=False),
}


@pytest.mark.parametrize("base", ["fastoptim.SGD", "fastoptim.AdamW"])
def test_lookahead_matches_the_paper_update_over_30_steps(base):
    sync_rate, sync_period = 0.7, 5
    params = make_params(SHAPES, torch.float32)
    ref_params = clone_params(params)
    wrapped = fastoptim.Lookahead(BASES[base](params), sync_rate=sync_rate, sync_period=sync_period)
    ref_base = BASES[base](ref_params)
    slow = [p.detach().clone() for p in ref_params]
    for step in range(1, 31):
        set_grads([params, ref_params], step, torch.float32)
        wrapped.step()
        ref_base.step()
        if step % sync_period == 0:  # slow <- slow + alpha (fast - slow); fast <- slow
            with torch.no_grad():
                for p, s in zip(ref_params, slow):
                    s.add_(sync_rate * (p - s))
                    p.copy_(s)
    for p, q in zip(params, ref_params):
        assert_close_rel(p, q, 1e-6, "fast weights")
    for a, s in zip(wrapped.averaged_parameters(), slow):
        assert_close_rel(a, s, 1e-6, "slow weights")


@pytest.mark.parametrize("base", ["fastoptim.SGD", "fastoptim.AdamW"])
def test_lookahead_matches_pytorch_optimizer_lookahead(base):
    params = make_params(SHAPES, torch.float32)
    ref_params = clone_params(params)
    ours = fastoptim.Lookahead(BASES[base](params), sync_rate=0.5, sync_period=5)
    ref = ReferenceLookahead(BASES[base](ref_params), k=5, alpha=0.5)
    for step in range(30):
        set_grads([params, ref_params], step, torch.float32)
        ours.step()
        ref.step()
    for p, q in zip(params, ref_params):
        assert_close_rel(p, q, 1e-6, "params")


def averaged_model_of(params, **kwargs):
    module = torch.nn.ParameterList(params)
    return module, AveragedModel(module, **kwargs)


@pytest.mark.parametrize("update_every", [1, 3])
@pytest.mark.parametrize("base", list(BASES))
def test_ema_matches_averaged_model(base, update_every):
    decay = 0.9
    params = make_params(SHAPES, torch.float32)
    wrapped = fastoptim.EMA(BASES[base](params), decay=decay, update_every=update_every)
    module, averaged = averaged_model_of(params, multi_avg_fn=get_ema_multi_avg_fn(decay))
    for step in range(1, 21):
        set_grads([params], step, torch.float32)
        wrapped.step()
        if step % update_every == 0:
            averaged.update_parameters(module)
    for ours, ref in zip(wrapped.averaged_parameters(), averaged.module.parameters()):
        assert torch.equal(ours, ref.detach())


def test_ema_warmup_follows_its_formula():
    params = make_params([(7,)], torch.float64)
    wrapped = fastoptim.EMA(fastoptim.SGD(params, lr=0.1), decay=0.999, warmup_power=2 / 3)
    expected = None
    for step in range(1, 6):
        set_grads([params], step, torch.float64)
        wrapped.step()
        p = params[0].detach()
        if expected is None:
            expected = p.clone()
        else:
            d = min(0.999, 1 - (1 + (step - 1)) ** (-2 / 3))
            expected = expected + (1 - d) * (p - expected)
        assert_close_rel(wrapped.averaged_parameters()[0], expected, 1e-12, f"step {step}")


@pytest.mark.parametrize("swa_start,swa_freq", [(0, 1), (5, 3)])
@pytest.mark.parametrize("base", ["fastoptim.AdamW", "torch.SGD"])
def test_swa_matches_averaged_model(base, swa_start, swa_freq):
    params = make_params(SHAPES, torch.float32)
    wrapped = fastoptim.SWA(BASES[base](params), swa_start=swa_start, swa_freq=swa_freq)
    module, averaged = averaged_model_of(params)
    for step in range(1, 25):
        set_grads([params], step, torch.float32)
        wrapped.step()
        if step >= swa_start and (step - swa_start) % swa_freq == 0:
            averaged.update_parameters(module)
    assert wrapped.param_groups[0]["swa_n_averaged"] == int(averaged.n_averaged)
    for ours, ref in zip(wrapped.averaged_parameters(), averaged.module.parameters()):
        assert torch.equal(ours, ref.detach())


@pytest.mark.parametrize("sync_rate", [0.2, 0.5])
def test_scout_matches_holocron_scout_when_every_element_moves(sync_rate):
    holocron = load_holocron_optim()
    params = make_params(SHAPES, torch.float64)
    ref_params = clone_params(params)
    ours = fastoptim.Scout(torch.optim.AdamW(params, lr=1e-2, foreach=False), sync_rate=sync_rate, sync_period=5)
    ref = holocron.Scout(torch.optim.AdamW(ref_params, lr=1e-2, foreach=False), sync_rate=sync_rate, sync_period=5)
    for step in range(30):
        set_grads([params, ref_params], step, torch.float64)
        ours.step()
        ref.step()
    moved = [not torch.equal(p, q) for p, q in zip(params, make_params(SHAPES, torch.float64))]
    assert all(moved)
    for p, q in zip(params, ref_params):
        assert_close_rel(p, q, 1e-10, "params")


def test_scout_keeps_training_with_a_frozen_tensor_where_holocron_stalls():
    holocron = load_holocron_optim()
    initial = make_params([(17,), (5,)], torch.float32)
    outcomes = {}
    for name, wrap in [("fastoptim", fastoptim.Scout), ("holocron", holocron.Scout)]:
        params = clone_params(initial)
        opt = wrap(torch.optim.SGD(params, lr=0.1), sync_period=6)
        for step in range(12):
            params[0].grad = torch.randn(17, generator=torch.Generator().manual_seed(step))
            params[1].grad = None  # frozen: never gets a gradient, never moves
            opt.step()
        outcomes[name] = params[0].detach().clone()
    assert torch.equal(holocron_result := outcomes["holocron"], initial[0].detach())  # holocron: NaN rate, stalled
    assert not torch.equal(outcomes["fastoptim"], initial[0].detach()) and not torch.equal(outcomes["fastoptim"], holocron_result)
    assert torch.isfinite(outcomes["fastoptim"]).all()


WRAPPERS = {
    "Lookahead": lambda base: fastoptim.Lookahead(base, sync_rate=0.6, sync_period=4),
    "Scout": lambda base: fastoptim.Scout(base, sync_rate=0.3, sync_period=4),
    "EMA": lambda base: fastoptim.EMA(base, decay=0.8, update_every=2),
    "SWA": lambda base: fastoptim.SWA(base, swa_start=5, swa_freq=2),
    "Lookahead(EMA)": lambda base: fastoptim.Lookahead(fastoptim.EMA(base, decay=0.8), sync_period=3),
}


@pytest.mark.parametrize("base", ["fastoptim.AdamW", "torch.AdamW"])
@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_save_at_step_13_and_resume_is_bit_identical(wrapper, base):
    make = lambda params: WRAPPERS[wrapper](BASES[base](params))  # noqa: E731
    opt, resumed = assert_resumes_bit_identically(make, SHAPES, save_at=13, until=30)
    for a, b in zip(opt.averaged_parameters(), resumed.averaged_parameters()):
        assert torch.equal(a, b)
    assert opt.state_dict()["param_groups"] == resumed.state_dict()["param_groups"]


def test_state_dict_holds_the_base_state_and_the_wrapper_buffers_under_torch_indices():
    params = make_params(SHAPES, torch.float32)
    opt = fastoptim.Lookahead(fastoptim.EMA(torch.optim.AdamW(params, foreach=False)))
    set_grads([params], 0, torch.float32)
    opt.step()
    state = opt.state_dict()["state"]
    assert sorted(state) == list(range(len(params)))
    assert set(state[0]) == {"step", "exp_avg", "exp_avg_sq", "ema_param", "slow_param"}


def test_lr_scheduler_on_the_wrapper_drives_the_base():
    params = make_params(SHAPES, torch.float32)
    base = fastoptim.AdamW(params, lr=0.1)
    wrapped = fastoptim.Lookahead(base)
    scheduler = torch.optim.lr_scheduler.StepLR(wrapped, step_size=1, gamma=0.5)
    set_grads([params], 0, torch.float32)
    wrapped.step()
    scheduler.step()
    assert base.param_groups[0]["lr"] == 0.05 and wrapped.param_groups is base.param_groups


def test_hooks_and_add_param_group_go_through_the_wrapper():
    params = make_params(SHAPES, torch.float32)
    base = fastoptim.SGD(params, lr=0.1)
    wrapped = fastoptim.Lookahead(base, sync_period=2)
    calls = []
    wrapped.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    wrapped.register_step_post_hook(lambda o, a, k: calls.append("post"))
    extra = torch.nn.Parameter(torch.randn(3))
    wrapped.add_param_group({"params": [extra], "lr": 0.2})
    assert base.param_groups[1]["sync_period"] == 2 and "slow_param" in wrapped.state[extra]
    extra.grad = torch.ones(3)
    set_grads([params], 0, torch.float32)
    wrapped.step()
    assert calls == ["pre", "post"]


def test_swapped_in_evaluates_the_averaged_weights_and_restores():
    params = make_params(SHAPES, torch.float32)
    wrapped = fastoptim.SWA(fastoptim.SGD(params, lr=0.1))
    for step in range(4):
        set_grads([params], step, torch.float32)
        wrapped.step()
    own = [p.detach().clone() for p in params]
    averages = [a.clone() for a in wrapped.averaged_parameters()]
    assert not all(torch.equal(o, a) for o, a in zip(own, averages))  # there is something to swap
    with wrapped.swapped_in():
        for p, a in zip(params, averages):
            assert torch.equal(p, a)
    for p, o in zip(params, own):
        assert torch.equal(p, o)
    for a, b in zip(wrapped.averaged_parameters(), averages):
        assert torch.equal(a, b)
    model = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros_like(p)) for p in params])
    wrapped.copy_averaged_to(model)
    for m, a in zip(model, averages):
        assert torch.equal(m.detach(), a)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda b: fastoptim.Lookahead(b, sync_rate=-0.1), "Invalid sync_rate value: -0.1"),
        (lambda b: fastoptim.Lookahead(b, sync_rate=1.5), "Invalid sync_rate value: 1.5"),
        (lambda b: fastoptim.Lookahead(b, sync_period=0), "Invalid sync_period value: 0"),
        (lambda b: fastoptim.Lookahead(b, sync_period=2.5), "Invalid sync_period value: 2.5"),
        (lambda b: fastoptim.Scout(b, sync_rate=2.0), "Invalid sync_rate value: 2.0"),
        (lambda b: fastoptim.Scout(b, sync_period=True), "Invalid sync_period value: True"),
        (lambda b: fastoptim.EMA(b, decay=1.0), "Invalid decay value: 1.0"),
        (lambda b: fastoptim.EMA(b, decay=-0.5), "Invalid decay value: -0.5"),
        (lambda b: fastoptim.EMA(b, update_every=0), "Invalid update_every value: 0"),
        (lambda b: fastoptim.SWA(b, swa_freq=0), "Invalid swa_freq value: 0"),
        (lambda b: fastoptim.SWA(b, swa_start=-1), "Invalid swa_start value: -1"),
    ],
)
def test_bad_wrapper_arguments_raise_value_error_naming_them(make, message):
    with pytest.raises(ValueError, match=message):
        make(fastoptim.SGD(make_params(SHAPES, torch.float32), lr=0.1))


def test_asking_for_averages_before_there_are_any_creates_no_state():
    params = make_params(SHAPES, torch.float32)
    wrapped = fastoptim.EMA(fastoptim.SGD(params, lr=0.1))
    assert wrapped.averaged_parameters() == []
    with wrapped.swapped_in():
        pass
    model = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros_like(p)) for p in params])
    wrapped.copy_averaged_to(model)  # no averages yet: the parameters themselves
    assert all(torch.equal(m, p) for m, p in zip(model, params))
    assert len(wrapped.state) == 0 and wrapped.state_dict()["state"] == {}


def test_two_wrappers_of_the_same_kind_cannot_nest():
    base = fastoptim.SGD(make_params(SHAPES, torch.float32), lr=0.1)
    with pytest.raises(ValueError, match="Scout cannot wrap an optimizer whose param groups already have 'sync_rate'"):
        fastoptim.Scout(fastoptim.Lookahead(base))


def test_wrapping_something_else_raises_type_error():
    with pytest.raises(TypeError, match="base_optimizer must be a torch.optim.Optimizer"):
        fastoptim.Lookahead([torch.zeros(2)])
