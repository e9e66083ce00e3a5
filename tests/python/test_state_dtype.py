"""Optimizer state in bf16 for float32 parameters (``state_dtype=torch.bfloat16``): each step
computes in float32 from the stored state and rounds the new state to nearest even; half the state
memory; state dicts widen into full-precision optimizers and narrow back."""

import copy
import inspect

import pytest
import torch

import fastoptim
from reference import (
    OPTIMIZERS,
    SHAPES,
    assert_close_rel,
    assert_resumes_bit_identically,
    make_params,
    make_rich,
    rule_optimizer,
    set_grads,
)

TAKES_IT = sorted(name for name in OPTIMIZERS if "state_dtype" in inspect.signature(getattr(fastoptim, name)).parameters)
# optimizers whose step is one fused call of their own class (no wrapper, no Hessian schedule): a
# fresh optimizer given another's state steps as that one does
PLAIN = [name for name in TAKES_IT
         if name not in ("AMaC", "SophiaOptim") and not hasattr(getattr(fastoptim, name), "update_hessian")]
# the rules whose first pass stores the state that their second pass reads: there the second pass
# reads the state rounded to bf16, the float32 reference its unrounded value
STATE_IN_FIRST_PASS = {"LAMB", "RaLars", "TAdam", "AdamP"}


def test_every_optimizer_but_adafactor_takes_it():
    assert set(OPTIMIZERS) - set(TAKES_IT) == {"Adafactor"}  # (its factored state is not shaped like the parameter)
    with pytest.raises(ValueError, match="Invalid state_dtype value: torch.bfloat16 \\(Adafactor keeps"):
        fastoptim.Adafactor([{"params": [torch.zeros(2, 3, requires_grad=True)], "state_dtype": torch.bfloat16}])


@pytest.mark.parametrize("name", PLAIN)
def test_each_step_is_the_float32_state_step_with_the_new_state_rounded(name):
    """From the same parameters and the same state (ours in bf16, the reference's that state widened
    to float32), one step of ours stores the parameters the float32-state step stores (bit for bit;
    within 1e-5 relative for the rules whose second pass reads the state the first stored) and the
    reference's new state rounded to bf16, three steps running. (Where the second pass reads the
    state rounded to bf16, the update moves by up to half a bf16 step, 2**-9 of itself: with updates
    about lr = 1e-3 of the parameters, within 1e-5 relative of the parameters.)"""
    params = make_params(SHAPES, torch.float32)
    ours = make_rich(name, params, state_dtype=torch.bfloat16)
    set_grads([params], 0, torch.float32)
    ours.step()  # (creates the state: a start value in bf16, Rprop's lr, is not the float32 one)
    for step in range(1, 4):
        wide = [p.detach().clone().requires_grad_() for p in params]
        ref = make_rich(name, wide)
        for p, q in zip(params, wide):
            for key, value in ours.state[p].items():
                ref.state[q][key] = value.float() if value.dtype == torch.bfloat16 else value.clone()
        set_grads([params, wide], step, torch.float32)
        ours.step()
        ref.step()
        for p, q in zip(params, wide):
            if name in STATE_IN_FIRST_PASS:
                assert_close_rel(p, q, 1e-5, f"{name} step {step}")
            else:
                assert torch.equal(p, q), (name, step, tuple(p.shape))
            for key, value in ours.state[p].items():
                if key in rule_optimizer(ours)._rule_of(ours.param_groups[0]).element_state:
                    assert value.dtype == torch.bfloat16, (name, key)
                    assert torch.equal(value, ref.state[q][key].to(torch.bfloat16)), (name, key, step)


@pytest.mark.parametrize("name", ["AdamW", "LAMB", "SophiaH", "AMaC", "AdamWScheduleFree"])
def test_a_resumed_run_continues_bit_for_bit(name):
    def make(params):
        torch.manual_seed(3)
        return make_rich(name, params, state_dtype=torch.bfloat16)

    _, resumed = assert_resumes_bit_identically(make, SHAPES, save_at=3, until=6)
    for state in rule_optimizer(resumed).state.values():
        for key in ("exp_avg", "exp_avg_sq", "z"):
            if key in state:
                assert state[key].dtype == torch.bfloat16, (name, key)


def test_state_dicts_widen_into_a_float32_state_optimizer_and_narrow_back():
    params = make_params([(17,), (33, 65)], torch.float32)
    half = fastoptim.AdamW(params, state_dtype=torch.bfloat16)
    set_grads([params], 0, torch.float32)
    half.step()
    saved = copy.deepcopy(half.state_dict())
    full = fastoptim.AdamW([p.detach().clone().requires_grad_() for p in params])
    full.load_state_dict(saved)
    for p, q in zip(params, full.param_groups[0]["params"]):
        assert full.state[q]["exp_avg"].dtype == torch.float32
        assert torch.equal(full.state[q]["exp_avg"], half.state[p]["exp_avg"].float())
    back = fastoptim.AdamW([p.detach().clone().requires_grad_() for p in params], state_dtype=torch.bfloat16)
    back.load_state_dict(full.state_dict())
    for p, q in zip(params, back.param_groups[0]["params"]):
        assert back.state[q]["exp_avg_sq"].dtype == torch.bfloat16
        assert torch.equal(back.state[q]["exp_avg_sq"], half.state[p]["exp_avg_sq"])


def test_half_the_state_memory():
    params = make_params([(1000,), (100, 10)], torch.float32)
    for dtype, size in ((None, 4), (torch.bfloat16, 2)):
        opt = fastoptim.AdamW([p.detach().clone().requires_grad_() for p in params], state_dtype=dtype)
        set_grads([opt.param_groups[0]["params"]], 0, torch.float32)
        opt.step()
        state_bytes = sum(v.nbytes for s in opt.state.values() for k, v in s.items() if k != "step")
        assert state_bytes == 2 * size * 2000


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match=r"Invalid state_dtype value: torch.float16 \(expected None or torch.bfloat16\)"):
        fastoptim.AdamW([torch.zeros(2, requires_grad=True)], state_dtype=torch.float16)
    p = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = fastoptim.AdamW([p], state_dtype=torch.bfloat16)
    p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match=r"state_dtype=torch.bfloat16 keeps the state of float32 parameters; "
                                         r"parameter #0 \(shape \(3,\)\) of param group 0 is torch.float64"):
        opt.step()
    assert torch.equal(p, torch.ones_like(p)) and not opt.state[p]
    q = torch.ones(3, requires_grad=True)
    q.grad = torch.ones_like(q)
    with pytest.raises(TypeError, match="exp_avg_sq of params\\[0\\] has dtype BFloat16 but another state tensor"):
        torch.ops.fastoptim.adam_step_([q], [q.grad], [torch.zeros(3), torch.zeros(3, dtype=torch.bfloat16)],
                                       [torch.tensor(0.0)], [], [1e-3, 0.9, 0.999, 1e-8, 0, 0, 0, 0], None)
