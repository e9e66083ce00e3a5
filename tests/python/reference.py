"""What the Python tests share: the optimizer configurations that change the math, the tensor
shapes that exercise SIMD tails, and a runner that steps fastoptim and torch.optim side by side."""

from __future__ import annotations

import copy
import importlib
import inspect
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

import fastoptim
from fastoptim.records import RECORDS, record

# Each option that changes the math, alone and combined, for each optimizer tested against
# torch.optim: the records' configs.
CONFIGS: dict[str, list[dict]] = {r.name: list(r.configs) for r in RECORDS if r.torch_reference}

# Sizes around every SIMD width (4, 8, 16 floats), a large odd size, 2-D, 4-D (a conv weight) and 0-d.
SHAPES = [(0,), (1,), (15,), (16,), (17,), (1023,), (100003,), (33, 65), (6, 3, 3, 3), ()]

# Parity with a reference: torch's CPU sqrt is 1 ulp off (not correctly rounded), so float32 agrees
# within 1e-6 relative and float64 within 1e-12, not bit for bit.
TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-12}
PARITY_DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])

#: the repository's root
ROOT = Path(__file__).resolve().parents[2]


def cmake_build(source: Path, build_dir: Path, *prefixes: str) -> Path:
    """Configures and builds the CMake project at `source` in `build_dir` against `prefixes` (a
    user's find_package path), unoptimised; returns `build_dir`."""
    generator = ["-G", "Ninja"] if subprocess.run(["which", "ninja"], capture_output=True).returncode == 0 else []
    # (-O0: each program is one translation unit driving the installed, optimised libraries, so it
    # computes the same bits unoptimised, and compiles in about 60% of the time)
    subprocess.run(["cmake", "-S", str(source), "-B", str(build_dir), *generator, "-DCMAKE_BUILD_TYPE=Debug",
                    "-DCMAKE_CXX_FLAGS_DEBUG=-O0", "-DCMAKE_PREFIX_PATH=" + ";".join(prefixes)], check=True,
                   capture_output=True)
    done = subprocess.run(["cmake", "--build", str(build_dir), "--parallel", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return build_dir


CONFIG_CASES = [(name, cfg) for name, cfgs in CONFIGS.items() for cfg in cfgs]


def case_id(case) -> str:
    name, cfg = case
    return name + "-" + ("-".join(f"{k}={v}" for k, v in cfg.items()) or "defaults")


def make_params(shapes, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]


def clone_params(params):
    return [p.detach().clone().requires_grad_() for p in params]


def noise_grads(params, step, dtype=None):
    """Gradients for `params` at `step`: noise in `dtype` (by default theirs), with a few exact zeros."""
    gen = torch.Generator().manual_seed(1000 + step)
    grads = []
    for p in params:
        g = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        g[torch.rand(p.shape, generator=gen) < 0.05] = 0.0
        grads.append(g.to(dtype or p.dtype))
    return grads


def without_radial_part(params, step, rows):
    """Noise with its component along theta removed per row of dim 0 (rows=True: every channel's
    cosine is ~0, AdamP's channel view projects) or for the whole tensor (rows=False: the channel
    cosines stay large, the layer view projects)."""
    grads = noise_grads(params, step)
    out = []
    for p, g in zip(params, grads):
        if p.dim() > 1:
            w = p.detach().reshape(p.shape[0] if rows else 1, -1)
            v = g.reshape(w.shape).clone()
            v -= (v * w).sum(1, keepdim=True) / (w * w).sum(1, keepdim=True) * w
            if not rows:  # keep channel cosines large: add +theta to half the rows and -theta to the rest
                sign = torch.ones(p.shape[0], 1, dtype=p.dtype)
                sign[p.shape[0] // 2 :] = -1
                w_rows = p.detach().reshape(p.shape[0], -1)
                v = v.reshape(w_rows.shape) + sign * w_rows
                v -= (v * w_rows).sum() / (w_rows * w_rows).sum() * w_rows  # whole-tensor cosine back to ~0
            g = v.reshape(p.shape)
        out.append(g)
    return out


def aligned_grads(params, step):
    """Gradients along theta (each element theta times 1 to 2): AdamP's projections never fire."""
    gen = torch.Generator().manual_seed(step)
    return [p * (1 + torch.rand(p.shape, generator=gen, dtype=p.dtype)) for p in params]


#: the gradients a package check (fastoptim/records.py's PackageCheck.grads) names: grads(params, step)
GRADIENTS = {
    "noise": noise_grads,
    # (no exact zero: LARS's ratio of an all-zero gradient differs from holocron's by design)
    "nonzero": lambda params, step: [g.masked_fill(g == 0, 1e-3) for g in noise_grads(params, step)],
    "channel-orthogonal": lambda params, step: without_radial_part(params, step, rows=True),
    "layer-orthogonal": lambda params, step: without_radial_part(params, step, rows=False),
    "aligned": aligned_grads,
}


def set_grads(param_lists, step, dtype):
    """The same gradients for every list of parameters: noise_grads of the first list."""
    grads = noise_grads(param_lists[0], step, dtype)
    for params in param_lists:
        for p, g in zip(params, grads):
            p.grad = g.clone()


def assert_close_rel(actual, expected, rtol, what=""):
    """Element-wise |actual - expected| <= rtol * (|expected| + scale), where scale is the tensor's
    largest magnitude: relative agreement, with elements that pass near zero (where a relative
    error means nothing) held to the same fraction of the tensor's scale. NaNs must sit in the
    same places (fp16 RMSprop makes them where torch does)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
    nan = expected.isnan()
    assert torch.equal(actual.isnan(), nan), f"{what}: NaNs in different places"
    a, e = actual[~nan].double(), expected[~nan].double()
    if e.numel() == 0:
        return
    scale = e.abs().max()
    err = (a - e).abs()
    bound = rtol * (e.abs() + scale)
    worst = (err / bound.clamp_min(torch.finfo(torch.float64).tiny)).max().item()
    assert bool((err <= bound).all()), f"{what}: worst error is {worst:.3g}x the bound (rtol={rtol})"


class Pair(NamedTuple):
    params: list
    ref_params: list
    ours: torch.optim.Optimizer
    ref: torch.optim.Optimizer


def run_pair(make_ours, make_ref, dtype, steps=50, shapes=SHAPES, grads=None, seed=0) -> Pair:
    """Steps make_ours(params) and make_ref(a copy of them) on identical parameters and, each
    step, identical gradients: noise_grads, or grads(params, step) computed from ours' parameters."""
    params = make_params(shapes, dtype, seed)
    ref_params = clone_params(params)
    ours, ref = make_ours(params), make_ref(ref_params)
    for step in range(steps):
        step_grads = noise_grads(params, step) if grads is None else grads([p.detach() for p in params], step)
        for p, q, g in zip(params, ref_params, step_grads):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    return Pair(params, ref_params, ours, ref)


def assert_all_close_rel(params, expected, rtol):
    """assert_close_rel for each pair of tensors, naming the shape that fails."""
    for p, q in zip(params, expected):
        assert_close_rel(p.detach(), q.detach(), rtol, f"shape {tuple(q.shape)}")


def reference_shapes(name, shapes=SHAPES):
    """`shapes` less those the record of `name` says its reference cannot step."""
    return [s for s in shapes if tuple(s) not in record(name).reference_fails_on]


def with_dtype_epsilon(name, cfg, dtype):
    """`cfg` with the option of `name` whose None means "the parameter dtype's epsilon" (its record's
    dtype_epsilon_option) set to `dtype`'s: the options of a float32 step standing for a `dtype` step."""
    option = record(name).dtype_epsilon_option
    if option is None:
        return cfg
    key, index = option
    values = list(cfg.get(key, inspect.signature(getattr(fastoptim, name)).parameters[key].default))
    if values[index] is None:
        values[index] = torch.finfo(dtype).eps
    return {**cfg, key: tuple(values)}


def run_side_by_side(name, cfg, shapes, dtype, steps, torch_kwargs=None, seed=0):
    """Steps fastoptim.<name> and torch.optim.<name> on identical parameters and gradients (of
    `shapes`, less those the record says its reference cannot step)."""
    shapes = reference_shapes(name, shapes)
    params, ref_params, ours, ref = run_pair(
        lambda ps: getattr(fastoptim, name)(ps, **cfg),
        lambda ps: getattr(torch.optim, record(name).torch_reference)(ps, **cfg, **(torch_kwargs or dict(foreach=False))),
        dtype, steps, shapes, seed=seed,
    )
    return ours, ref, params, ref_params


def assert_resumes_bit_identically(make_optimizer, shapes, save_at, until, dtype=torch.float32):
    """Steps make_optimizer(params) from 0 to `until`; and again, saving parameters and optimizer
    at `save_at` and loading them into fresh ones; both runs must agree bit for bit. Returns the
    uninterrupted and the resumed optimizer."""
    params = make_params(shapes, dtype)
    opt = make_optimizer(params)
    for step in range(save_at):
        set_grads([params], step, dtype)
        opt.step()
    checkpoint = copy.deepcopy({"params": [p.detach() for p in params], "optimizer": opt.state_dict()})
    resumed_params = [p.clone().requires_grad_() for p in checkpoint["params"]]
    resumed = make_optimizer(resumed_params)
    resumed.load_state_dict(checkpoint["optimizer"])
    for step in range(save_at, until):
        set_grads([params, resumed_params], step, dtype)
        opt.step()
        resumed.step()
    for p, q in zip(params, resumed_params):
        assert torch.equal(p, q)
    return opt, resumed


def assert_same_steps(step_a, step_b, params_a, params_b, steps, dtype=torch.float32, first=0):
    """Calls step_a() and step_b() (two optimizers' steps, or one compiled) for steps first, first + 1, ...,
    after giving both parameter lists the same gradients; the parameters must agree bit for bit."""
    for step in range(first, first + steps):
        set_grads([params_a, params_b], step, dtype)
        step_a()
        step_b()
    for p, q in zip(params_a, params_b):
        assert torch.equal(p, q)


def assert_low_precision_steps_round_once(make_optimizer, dtype, steps=4, make_reference=None, shapes=SHAPES):
    """Each step of make_optimizer on bf16/fp16 params equals the float32 step of make_reference
    (by default the same optimizer) from the same state widened, rounded to the storage dtype:
    within one of its ulps."""
    make_reference = make_reference or make_optimizer
    params = make_params(shapes, dtype)
    ours = make_optimizer(params)
    ulp = 2.0**-7 if dtype == torch.bfloat16 else 2.0**-10
    for step in range(steps):
        wide = [p.detach().float().requires_grad_() for p in params]
        ref = make_reference(wide)
        for p, q in zip(params, wide):
            for key, value in ours.state[p].items():
                # (a copy: a float32 per-parameter scalar, NAdam's mu_product, must not be shared)
                ref.state[q][key] = value.clone() if key == "step" else value.to(torch.float32, copy=True)
        set_grads([params], step, dtype)
        for p, q in zip(params, wide):
            q.grad = p.grad.float()
        ours.step()
        ref.step()
        for p, q in zip(params, wide):
            assert_close_rel(p.float(), q.to(dtype).float(), ulp, f"step {step} shape {tuple(q.shape)}")


def assert_every_isa_gives_the_same_bits(make_optimizer, steps=5, dtype=torch.float32):
    """Runs make_optimizer(params) for `steps` steps under every kernel ISA this CPU has; all must
    give the parameters the one-lane scalar path gives, bit for bit. The active ISA is restored."""
    import fastoptim

    results = {}
    active = fastoptim._C.isa()
    try:
        for isa in fastoptim._C.available_isas():
            fastoptim._C.set_isa(isa)
            params = make_params(SHAPES, dtype)
            opt = make_optimizer(params)
            for step in range(steps):
                set_grads([params], step, dtype)
                opt.step()
            results[isa] = params
    finally:
        fastoptim._C.set_isa(active)
    assert "scalar" in results and len(results) >= 2
    for isa, params in results.items():
        for p, q in zip(params, results["scalar"]):
            assert torch.equal(p, q), isa


def load_holocron_optim():
    """holocron.optim from pylocron 0.3.0 without running holocron/__init__.py, which imports
    torchvision (no CPU build of it is installable here; holocron.optim itself needs only torch)."""
    import importlib.util
    import sys
    import types

    if "holocron.optim" not in sys.modules:
        spec = importlib.util.find_spec("holocron")
        package = types.ModuleType("holocron")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["holocron"] = package
    return importlib.import_module("holocron.optim")


def package_reference(path):
    """The class a package check names, "module.Class" (holocron.optim through load_holocron_optim)."""
    module, name = path.rsplit(".", 1)
    return getattr(load_holocron_optim() if module == "holocron.optim" else importlib.import_module(module), name)


def gradient_estimates(params):
    """Stand-in Hessian-diagonal estimates, a function of each gradient (so two optimizers stepped
    with the same gradients get the same estimates): mostly positive, some negative, as
    Hutchinson's are."""
    return [torch.cos(3 * p.grad) - 0.3 for p in params if p.grad is not None]


class GivenHessian:
    """A Hessian-diagonal optimizer whose refresh steps fold in gradient_estimates, so that the
    helpers above, which call step() after setting plain gradients, can drive it. Everything
    else is the optimizer's own."""

    def __init__(self, optimizer, estimates=gradient_estimates):
        self.optimizer = optimizer
        self.estimates = estimates

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def step(self):
        due = any(g["hessian_clock"] % g["hessian_update_interval"] == 0 for g in self.optimizer.param_groups)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        return self.optimizer.step(hessian=self.estimates(params) if due else None)


def zero_estimates(params):
    """Estimates of zero: a Hessian EMA that stays zero, as in a front end with no estimator."""
    return [torch.zeros_like(p) for p in params if p.grad is not None]


def given_hessian_if_needed(optimizer, estimates=gradient_estimates):
    """The optimizer itself, or for a Hessian-diagonal one (whose refresh steps need a graph or an
    estimate) GivenHessian(optimizer, estimates), so a plain step() drives either."""
    return GivenHessian(optimizer, estimates) if "hessian_clock" in optimizer.param_groups[0] else optimizer


def rule_optimizer(optimizer):
    """The FusedOptimizer inside wrappers (AMaC is SWA(Lookahead(AMaCUpdate))) and GivenHessian."""
    while not isinstance(optimizer, fastoptim._base.FusedOptimizer):
        optimizer = optimizer.optimizer if isinstance(optimizer, GivenHessian) else optimizer.base_optimizer
    return optimizer


def folds_apart(opt):
    """opt; a Hessian-diagonal one set so that no step of it refreshes from here on (its folds then
    come from update_hessian calls alone)."""
    for group in rule_optimizer(opt).param_groups:
        if "hessian_clock" in group:
            group["hessian_clock"], group["hessian_update_interval"] = 1, 10**6
    return opt


def rule_class(name):
    """The class whose rule steps optimizer `name`'s parameters (AMaC's AMaCUpdate, inside its wrappers)."""
    return type(rule_optimizer(make_rich(name, [torch.zeros(1, requires_grad=True)])))


def own_rule_steppers(names):
    """Those of `names` whose rule no other one of them steps: SophiaOptim passes its keywords to the
    SophiaH it wraps (tested as itself), while AMaC's rule, inside Lookahead and SWA, is its own."""
    classes = {name: rule_class(name) for name in names}
    return [name for name in names if classes[name] not in {getattr(fastoptim, other) for other in names if other != name}]


def exact_estimates(params):
    """Estimates every dtype holds exactly (1 or 1.25, by the gradient's sign): for comparing a
    low-precision step with its float32 reference, whose estimates must be the same numbers."""
    return [1 + 0.25 * (p.grad > 0).to(p.dtype) for p in params if p.grad is not None]


# every optimizer of the catalogue: the classes that take parameters (not a base optimizer)
OPTIMIZERS = sorted(
    name for name in fastoptim.__all__
    if isinstance(getattr(fastoptim, name), type) and issubclass(getattr(fastoptim, name), torch.optim.Optimizer)
    and "base_optimizer" not in inspect.signature(getattr(fastoptim, name)).parameters
    # (the second-order solvers step with closures of their own kind: tests/python/test_second_order.py)
    and not issubclass(getattr(fastoptim, name), fastoptim.second_order.SecondOrderOptimizer)
)
def takes_state_bits(name: str) -> bool:
    """Whether fastoptim's class `name` takes state_bits=8 (8-bit moments) in its signature."""
    return "state_bits" in inspect.signature(getattr(fastoptim, name)).parameters


def make_rich(name, params, **kwargs):
    """Optimizer `name` over params with its record's rich options (the heaviest step);
    Hessian-diagonal ones fold in stand-in estimates."""
    opt = getattr(fastoptim, name)(params, **{**record(name).rich, **kwargs})
    return given_hessian_if_needed(opt)


def snapshot(opt, params):
    """The parameters and a deep copy of the optimizer's state dict, to compare before and after."""
    return [p.detach().clone() for p in params], copy.deepcopy(opt.state_dict())


def assert_same_snapshot(a, b):
    """Two snapshots hold the same parameters and state, bit for bit (non-tensor state equal)."""
    (pa, sa), (pb, sb) = a, b
    for x, y in zip(pa, pb):
        assert torch.equal(x, y)
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for k in sa["state"]:
        assert sa["state"][k].keys() == sb["state"][k].keys()
        for name, value in sa["state"][k].items():
            other = sb["state"][k][name]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, name
