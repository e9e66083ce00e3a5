"""What every fastoptim optimizer owes a torch.optim user, checked for each class in fastoptim.__all__:
the gradients are read and never written, a tensor lr steps like the float it holds, and a
rejected step leaves parameters and state as they were."""

import inspect

import pytest
import torch

import fastoptim
from reference import SHAPES, clone_params, given_hessian_if_needed, make_params, set_grads

# every optimizer of the catalogue: the classes that take parameters (not a base optimizer)
OPTIMIZERS = sorted(
    name for name in fastoptim.__all__
    if isinstance(getattr(fastoptim, name), type) and issubclass(getattr(fastoptim, name), torch.optim.Optimizer)
    and "base_optimizer" not in inspect.signature(getattr(fastoptim, name)).parameters
)
# options that make each step read and write as much as it can (decay, momentum, maximize)
RICH = {
    "SGD": dict(momentum=0.9, weight_decay=0.1, maximize=True),
    "Adagrad": dict(weight_decay=0.1, maximize=True),
    "RMSprop": dict(momentum=0.9, centered=True, weight_decay=0.1, maximize=True),
    "LARS": dict(momentum=0.9, weight_decay=0.1, maximize=True),
    "AMaC": dict(seed=0, warmup_steps=2),  # a fixed seed: two instances must draw the same noise
}


def make(name, params, **kwargs):
    opt = getattr(fastoptim, name)(params, **{"weight_decay": 0.1, "maximize": True, **RICH.get(name, {}), **kwargs})
    # Hessian-diagonal optimizers refresh from a graph; here they fold in stand-in estimates
    return given_hessian_if_needed(opt)


def test_the_list_covers_the_catalogue_so_far():
    assert {"SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "LARS", "LAMB", "RaLars", "TAdam", "AdaBelief", "AdamP",
            "Adan", "AdEMAMix", "AMaC", "SophiaG", "SophiaH", "AdaHessian", "SophiaOptim"} <= set(OPTIMIZERS)


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
    for step in range(4):
        set_grads([params, other], step, torch.float32)
        a.step()
        b.step()
    for p, q in zip(params, other):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_rejected_step_changes_nothing(name):
    good = make_params(SHAPES, torch.float32)
    bad = make_params([(4, 4)], torch.float32, seed=5)
    opt = make(name, good)
    opt.add_param_group({"params": bad})
    set_grads([good], 0, torch.float32)
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
