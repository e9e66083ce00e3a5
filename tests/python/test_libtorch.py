"""The libtorch front end (cpp/include/fastoptim/optim) and the CMake package, as a libtorch user
meets them: programs built with find_package(fastoptim) against this installation.

- tests/libtorch/parity.cpp steps each fastoptim::optim class 20 times, through a torch::save /
  torch::load round trip into a new optimizer halfway; its parameters must equal, bit for bit, those
  of the Python class stepped with the same tensors (C++ and Python draw them from the same seeds).
  Every run the tests compare is made by one call of the harness (libtorch loads once).
- examples/cpp/train.cpp trains a torch::nn model with fastoptim::optim::AdamW.
(examples/edge, against fastoptim::core alone, is built and run by the C++ tests: tests/cpp.)
"""

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import fastoptim
from fastoptim.records import RECORDS
from reference import ROOT, cmake_build, given_hessian_if_needed, rule_optimizer, zero_estimates

SHAPES = [(1,), (17,), (1023,), (33, 65), (6, 3, 3, 3), ()]
STEPS = 20


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """The parity harness and the libtorch example, built side by side (each is one translation unit
    that includes torch/torch.h: two builds at once keep both cores busy)."""
    prefixes = (fastoptim.cmake_prefix_path, torch.utils.cmake_prefix_path)
    with ThreadPoolExecutor(2) as pool:
        parity = pool.submit(cmake_build, ROOT / "tests" / "libtorch", tmp_path_factory.mktemp("libtorch"), *prefixes)
        example = pool.submit(cmake_build, ROOT / "examples" / "cpp", tmp_path_factory.mktemp("example"), *prefixes)
        return {"parity": parity.result() / "parity", "example": example.result() / "train"}


@pytest.fixture(scope="module")
def parity(programs):
    return programs["parity"]


def make_params(dtype=torch.float32):
    torch.manual_seed(0)
    return [torch.randn(s, dtype=torch.float64).to(dtype).requires_grad_() for s in SHAPES]


CASES = {r.name: r.front_end for r in RECORDS if r.front_end is not None and "libtorch" in r.front_ends}
ROUNDING_SEED = 12345
# The variants of a run, the Python options and the harness's name for each: bf16 parameters with
# stochastic_rounding(true).rounding_seed(seed), the group's seed in Python (the keys, seed and
# count, go through torch::save / torch::load halfway); bf16_state(true), state_dtype=torch.bfloat16;
# eight_bit_state(true), state_bits=8 (codes and scales go through torch::save / torch::load).
VARIANTS = {
    "plain": dict(),
    f"rounding:{ROUNDING_SEED}": dict(stochastic_rounding=True),
    "bf16-state": dict(state_dtype=torch.bfloat16),
    "eight-bit": dict(state_bits=8),
}
RUNS = (
    [(name, "plain") for name in sorted(CASES)]
    + [(name, f"rounding:{ROUNDING_SEED}") for name in ("AdamW", "LAMB", "Adafactor")]
    + [(name, "bf16-state") for name in ("AdamW", "LAMB", "Adan")]
    + [(name, "eight-bit") for name in ("AdamW", "Adan", "LAMB", "AdamP", "Adagrad", "AMaC")]
)


def python_optimizer(name, variant):
    """`name`'s Python class over make_params() as the harness's `variant` makes it: (params, optimizer)."""
    if variant.startswith("rounding:"):
        params = make_params(torch.bfloat16)
        return params, getattr(fastoptim, name)([{"params": params, "rounding_seed": ROUNDING_SEED}], **CASES[name],
                                                **VARIANTS[variant])
    params = make_params()
    return params, getattr(fastoptim, name)(params, **CASES[name], **VARIANTS[variant])


def rule_and_hyper(optimizer):
    """The rule a Python optimizer steps with and its first group's hyperparameters, as the harness takes them."""
    rule_opt = rule_optimizer(optimizer)
    return rule_opt.rule, rule_opt._hyper(optimizer.param_groups[0])


@pytest.fixture(scope="module")
def harness_runs(parity, tmp_path_factory):
    """Every run of the libtorch classes the tests compare, made by one call of the harness:
    {(name, variant): its parameters' file} for RUNS, {rule: file} for every optimizer rule at its
    defaults (two steps; no file where the rule has no libtorch class)."""
    folder = tmp_path_factory.mktemp("libtorch-runs")
    files, jobs = {}, []
    for name, variant in RUNS:
        rule, hyper = rule_and_hyper(python_optimizer(name, variant)[1])
        files[name, variant] = folder / f"{name}-{variant.replace(':', '-')}.pt"
        jobs.append([rule, str(STEPS), str(files[name, variant]), variant, *map(repr, hyper)])
    for rule, meta in fastoptim._C.rules.items():
        if meta["optimizer"]:
            files[rule] = folder / f"defaults-{rule}.pt"
            jobs.append([rule, "2", str(files[rule]), "plain", *(repr(default) for _, default, _ in meta["fields"])])
    (folder / "jobs").write_text("".join(" ".join(job) + "\n" for job in jobs))
    subprocess.run([str(parity), str(folder / "jobs")], check=True)
    return files


@pytest.mark.parametrize("run", RUNS, ids="-".join)
def test_libtorch_class_steps_as_the_python_class_does(harness_runs, run):
    name, variant = run
    params, opt = python_optimizer(name, variant)
    # the libtorch classes have no Hessian estimator yet: both sides keep a zero Hessian EMA
    stepper = given_hessian_if_needed(opt, zero_estimates)
    for step in range(STEPS):
        torch.manual_seed(100 + step)
        for p in params:
            p.grad = torch.randn_like(p)
        stepper.step()
    for a, b in zip(torch.load(harness_runs[run]), params):
        assert a.dtype == b.dtype and torch.equal(a, b.detach()), (name, tuple(b.shape))


def test_adamw_options_start_where_the_python_adamw_starts(parity):
    done = subprocess.run([str(parity), "adamw-options"], capture_output=True, text=True, check=True)
    opt = fastoptim.AdamW(make_params())
    assert [float(v) for v in done.stdout.split()] == opt._hyper(opt.param_groups[0])


def test_every_optimizer_rule_has_its_libtorch_class(harness_runs):
    optimizer_rules = [name for name, meta in fastoptim._C.rules.items() if meta["optimizer"]]
    # (and classes of their own over helper rules: Adafactor's)
    assert {rule_optimizer(getattr(fastoptim, n)(make_params(), **CASES[n])).rule for n in CASES} >= set(optimizer_rules)
    for rule in optimizer_rules:
        assert harness_runs[rule].exists(), f"no fastoptim::optim class for the rule {rule}"


def test_the_libtorch_example_trains(programs, tmp_path):
    done = subprocess.run([str(programs["example"])], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
