"""What every fastoptim optimizer owes a torch.optim user, checked for each class in fastoptim.__all__:
the gradients are read and never written, a tensor lr steps like the float it holds, and a
rejected step leaves parameters and state as they were."""

import re
from pathlib import Path

import pytest
import torch

import fastoptim
from fastoptim.records import BY_NAME, RECORDS, readme_table
from reference import (
    OPTIMIZERS,
    SHAPES,
    assert_low_precision_steps_round_once,
    assert_same_steps,
    clone_params,
    make_params,
    make_rich,
    rule_optimizer,
    set_grads,
    with_dtype_epsilon,
)

make = make_rich


def test_every_optimizer_has_one_record_and_every_record_an_optimizer():
    assert sorted(r.name for r in RECORDS) == OPTIMIZERS
    assert len(BY_NAME) == len(RECORDS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_class_defaults_are_its_rules_defaults_and_its_records_preset(name):
    """The rule's field list is where defaults live: a class differs from it only by its record's
    preset (AMaC's seed, drawn at random when not given, aside)."""
    inner = rule_optimizer(getattr(fastoptim, name)(make_params([(3,), (2, 3)], torch.float32)))
    differences = {}
    for group in inner.param_groups:  # (Muon's groups step with two rules)
        fields = fastoptim._C.rules[inner._rule_name(group)]["fields"]
        differences.update({field: value for (field, default, _), value in zip(fields, inner._hyper(group))
                            if value != default and not (name == "AMaC" and field == "seed")})
    assert differences == BY_NAME[name].preset


def test_the_readme_table_is_the_records_table():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert readme_table() in readme, "regenerate it: python -m fastoptim.records"


def bad_group_value(group: dict, public_name: str):
    """A copy of `group` with the hyperparameter `public_name` ("lr", or an element of a tuple:
    "betas[1]", "etas[0]") set to NaN."""
    group = {key: value for key, value in group.items() if key != "params"}
    key, _, index = public_name.partition("[")
    if index:
        values = list(group[key])
        values[int(index[:-1])] = float("nan")
        group[key] = tuple(values)
    else:
        group[key] = float("nan")
    return group


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_hyperparameter_is_checked_and_named(name):
    """Each field of the rule that a param group holds, set to NaN, is refused when the group is
    added, by a message naming it as the user wrote it; the group is not added. (Every group:
    Muon's step with two rules.)"""
    inner = rule_optimizer(make(name, make_params([(3,), (2, 3)], torch.float32)))
    groups = list(inner.param_groups)
    for group in groups:
        public = [inner._public_name(field, group) for field in inner._rule_of(group).fields if field not in inner.fixed_fields]
        checked = [label for label in public if label.partition("[")[0] in group]
        assert "lr" in checked and len(checked) >= len(public) - 2  # (a class may derive a field or two from its own keys)
        for label in checked:
            bad = bad_group_value(group, label)
            # (torch's wording for lr, eps and betas)
            named = {"lr": "learning rate", "eps": "epsilon value"}.get(label) or re.sub(
                r"^betas\[(\d+)\]$", r"beta parameter at index \1", label)
            with pytest.raises((ValueError, TypeError), match=re.escape(named)):
                inner.add_param_group({**bad, "params": [p.detach().clone().requires_grad_() for p in group["params"]]})
            assert inner.param_groups == groups


# the optimizers whose step is the rule's alone (no wrapper, no Hessian estimate to fold in)
PLAIN = [name for name in OPTIMIZERS if isinstance(make(name, make_params([(1,)], torch.float32)), fastoptim._base.FusedOptimizer)]


# LAMB and AdamP take their per-tensor sums over the new moments as stored: in fp16 the rounded
# moments move the trust ratio (or projection) by more than an ulp of the result, which their own
# tests bound; bf16's coarser ulp holds it.
SUMS_OF_STORED_STATE = {"LAMB", "AdamP"}


@pytest.mark.parametrize(
    "name,dtype",
    [(name, dtype) for name in PLAIN for dtype in (torch.bfloat16, torch.float16)
     if not (dtype == torch.float16 and name in SUMS_OF_STORED_STATE)],
    ids=str,
)
def test_low_precision_steps_are_the_float32_step_rounded_once(name, dtype):
    assert_low_precision_steps_round_once(lambda params: make(name, params, lr=1e-2), dtype,
                                          make_reference=lambda params: make(name, params, **with_dtype_epsilon(name, dict(lr=1e-2), dtype)))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_reads_the_gradients_and_never_writes_them(name):
    params = make_params(SHAPES, torch.float32)
    before = [p.detach().clone() for p in params]
    opt = make(name, params)
    for step in range(3):
        set_grads([params], step, torch.float32)
        grads = [p.grad.clone() for p in params]
        opt.step()
        for p, g in zip(params, grads):
            assert torch.equal(p.grad, g)
    assert any(not torch.equal(p, b) for p, b in zip(params, before))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_tensor_lr_steps_like_the_float_it_holds(name):
    params = make_params(SHAPES, torch.float32)
    other = clone_params(params)
    a, b = make(name, params, lr=torch.tensor(0.01)), make(name, other, lr=torch.tensor(0.01).item())
    assert_same_steps(a.step, b.step, params, other, 4)


@pytest.mark.parametrize("steady", [False, True], ids=["new-state", "steady"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_rejected_step_changes_nothing(name, steady):
    # steady: both groups already have their state, so the step takes the C++ gather
    good = make_params(SHAPES, torch.float32)
    bad = make_params([(4, 4)], torch.float32, seed=5)
    opt = make(name, good)
    opt.add_param_group({"params": bad})
    set_grads([good + bad] if steady else [good], 0, torch.float32)
    opt.step()
    snapshot = ([p.detach().clone() for p in good], {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()})
    set_grads([good + bad], 1, torch.float32)
    opt.param_groups[1]["lr"] = -1.0  # the second group is invalid: the first must not move either
    with pytest.raises(ValueError, match=r"invalid lr value: -1"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(good, snapshot[0]))
    for p, s in opt.state.items():
        assert s.keys() == snapshot[1][id(p)].keys()
        assert all(torch.equal(v, snapshot[1][id(p)][k]) for k, v in s.items())


def count_calls(opt, attribute):
    """Wraps the bound entry `attribute` of `opt` with a counter; returns the counter (a list)."""
    calls, entry = [], getattr(opt, attribute)
    setattr(opt, attribute, lambda *args, **kwargs: (calls.append(1), entry(*args, **kwargs))[1])
    return calls


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_steady_steps_gather_in_cpp_with_the_same_bits(name):
    """Once every state tensor exists, a step gathers its arguments in C++ (no Python loop over the
    params); it must give exactly what the Python gather gives."""
    params = make_params(SHAPES + [(3, 5)], torch.float32)
    other = clone_params(params)
    fast, python = make(name, params), make(name, other)
    rule_optimizer(python)._gather_steady = lambda: None  # always the Python gather
    set_grads([params, other], 0, torch.float32)
    fast.step()
    python.step()
    gathered = count_calls(rule_optimizer(fast), "_step_gathered")
    plain_steps = 0  # steps that fold in no Hessian estimate
    for step in range(1, 6):
        groups = rule_optimizer(fast).param_groups
        plain_steps += not any("hessian_clock" in g and g["hessian_clock"] % g["hessian_update_interval"] == 0 for g in groups)
        set_grads([params, other], step, torch.float32)
        params[1].grad = None  # a param without a gradient this step is skipped, as by the Python gather
        params[-1].grad = params[-1].grad.t().contiguous().t()  # a non-contiguous gradient
        other[1].grad = None
        fast.step()
        python.step()
    for p, q in zip(params, other):
        assert torch.equal(p, q)
    for p, q in zip(params, other):
        a, b = fast.state[p], python.state[q]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
    # a step that folds in an estimate keeps the Python gather (its hook reads the gathered lists)
    assert len(gathered) == (plain_steps if rule_optimizer(fast).gathers_in_cpp else 0)


def test_the_python_gather_takes_over_where_there_is_more_to_do():
    """New state to create, a sparse gradient to refuse, a group clipping the global norm: those
    steps go through the Python gather, and the next steady step is back in C++."""
    params = make_params([(5,), (2, 3)], torch.float32)
    opt = fastoptim.AdamW(params)
    set_grads([params], 0, torch.float32)
    opt.step()
    gathered, python = count_calls(opt, "_step_gathered"), count_calls(opt, "_step_listed")
    opt.step()
    assert (len(gathered), len(python)) == (1, 0)
    late = make_params([(4,)], torch.float32, seed=3)
    opt.add_param_group({"params": late})
    set_grads([params + late], 1, torch.float32)
    opt.step()  # late has no state yet
    # (a step of several groups checks the others before it steps the first: 3 calls)
    assert (len(gathered), len(python)) == (1, 3) and "exp_avg" in opt.state[late[0]]
    opt.step()
    assert (len(gathered), len(python)) == (4, 3)
    params[0].grad = params[0].grad.to_sparse()
    with pytest.raises(TypeError, match=r"sparse gradient .* parameter #0 \(shape \(5,\)\) of param group 0"):
        opt.step()
    assert len(gathered) == 4


def test_the_steady_gather_leaves_a_global_norm_to_the_python_gather():
    params = make_params([(7,)], torch.float32)
    opt = fastoptim.Adan(params, max_grad_norm=0.5)
    set_grads([params], 0, torch.float32)
    opt.step()
    gathered, python = count_calls(opt, "_step_gathered"), count_calls(opt, "_step_listed")
    opt.step()
    assert (len(gathered), len(python)) == (0, 1)
