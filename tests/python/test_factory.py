"""The conveniences of timm and pytorch_optimizer (issue 20): optimizers by name, the list of
names, param groups without decay on biases and norms and with layer-wise lr decay, and
`python -m fastoptim`."""

import subprocess
import sys

import pytest
import torch

import fastoptim
from reference import OPTIMIZERS


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_every_optimizer_is_listed_and_created_by_name():
    names = fastoptim.list_optimizers()
    assert names == sorted(names)
    # every optimizer of the generic tests, and the second-order solvers
    assert {name.lower() for name in OPTIMIZERS} | {"newtoncg", "sqn", "egn", "sgn", "swmng"} == set(names)
    assert fastoptim.list_optimizers("adam") == ["adam", "adamax", "adamp", "adamw", "adamwschedulefree", "nadam", "radam", "tadam"]
    for name in names:
        opt = fastoptim.create_optimizer(model(), name, lr=0.01)
        assert type(opt).__name__.lower() == name
        assert all(group["lr"] == 0.01 for group in opt.param_groups)


def test_create_optimizer_groups_a_model_as_timm_does():
    m = model()
    opt = fastoptim.create_optimizer(m, "AdamW", lr=1e-2, weight_decay=0.05, betas=(0.8, 0.9))
    decay = {id(p): group["weight_decay"] for group in opt.param_groups for p in group["params"]}
    assert decay == {id(m[0].weight): 0.05, id(m[0].bias): 0.0, id(m[1].weight): 0.0, id(m[1].bias): 0.0,
                     id(m[3].weight): 0.05, id(m[3].bias): 0.0}
    assert all(group["betas"] == (0.8, 0.9) and "lr_scale" not in group for group in opt.param_groups)
    # the same steps as the optimizer built by hand with those groups
    m2 = model()
    by_hand = fastoptim.AdamW([{"params": [m2[0].weight, m2[3].weight], "weight_decay": 0.05},
                               {"params": [m2[0].bias, m2[1].weight, m2[1].bias, m2[3].bias], "weight_decay": 0.0}],
                              lr=1e-2, betas=(0.8, 0.9))
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    for module, optimizer in ((m, opt), (m2, by_hand)):
        for _ in range(5):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(module(x), y).backward()
            optimizer.step()
    for p, q in zip(m.parameters(), m2.parameters()):
        assert torch.equal(p, q)


def test_layer_decay_scales_the_lr_of_earlier_layers():
    m = model()
    groups = fastoptim.param_groups(m, weight_decay=0.1, layer_decay=0.5, lr=1.0)
    lr_of = {id(p): group["lr"] for group in groups for p in group["params"]}
    # children 0..3 (Linear, LayerNorm, ReLU, Linear): scale 0.5 ** (3 - index)
    assert lr_of[id(m[0].weight)] == 0.125 and lr_of[id(m[1].weight)] == 0.25 and lr_of[id(m[3].weight)] == 1.0
    opt = fastoptim.create_optimizer(m, "lamb", lr=0.1, layer_decay=0.5)
    assert sorted(group["lr"] for group in opt.param_groups) == [0.0125, 0.0125, 0.025, 0.1, 0.1]
    frozen = model()
    frozen[0].weight.requires_grad_(False)
    assert all(p is not frozen[0].weight for group in fastoptim.param_groups(frozen) for p in group["params"])


def test_lookahead_prefix_and_plain_parameters():
    m = model()
    opt = fastoptim.create_optimizer(m, "lookahead_adamw", lr=1e-3)
    assert isinstance(opt, fastoptim.Lookahead) and isinstance(opt.base_optimizer, fastoptim.AdamW)
    opt = fastoptim.create_optimizer(m.parameters(), "sgd", lr=0.1, weight_decay=1e-4, momentum=0.9)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 1e-4


@pytest.mark.parametrize("call,message", [
    (lambda: fastoptim.create_optimizer(model(), "adamx"), r"unknown optimizer 'adamx'; choose one of \['adabelief'"),
    (lambda: fastoptim.create_optimizer(model(), "sgn", weight_decay=0.1), "SGN takes no weight_decay"),
    (lambda: fastoptim.create_optimizer(model().parameters(), "adamw", layer_decay=0.5), "layer_decay needs a module"),
    (lambda: fastoptim.param_groups(model(), layer_decay=1.5), "Invalid layer_decay value: 1.5"),
    (lambda: fastoptim.create_optimizer(model(), "adamw", lr=-1.0), "Invalid learning rate"),
])
def test_bad_arguments_raise_naming_them(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_python_dash_m_fastoptim_describes_the_installation():
    out = subprocess.run([sys.executable, "-m", "fastoptim"], capture_output=True, text=True, check=True).stdout
    assert f"fastoptim {fastoptim.__version__} (torch {torch.__version__})" in out
    assert f"kernels: {fastoptim._C.isa()}" in out and "threads:" in out
    assert " ".join(fastoptim.list_optimizers()) in out
