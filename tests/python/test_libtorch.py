"""The libtorch front end (cpp/include/fastoptim/optim) and the CMake package, as a libtorch user
meets them: programs built with find_package(fastoptim) against this installation.

- tests/libtorch/parity.cpp steps each fastoptim::optim class 20 times, through a torch::save /
  torch::load round trip into a new optimizer halfway; its parameters must equal, bit for bit, those
  of the Python class stepped with the same tensors (C++ and Python draw them from the same seeds).
- examples/cpp/train.cpp trains a torch::nn model with fastoptim::optim::AdamW.
(examples/edge, against fastoptim::core alone, is built and run by the C++ tests: tests/cpp.)
"""

import os
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


def python_run(name, rounding_seed=None, **options):
    """`name`'s Python class over make_params() for STEPS steps (with `options`); with rounding_seed,
    over bf16 params stored by stochastic rounding with that seed."""
    if rounding_seed is None:
        params = make_params()
        opt = getattr(fastoptim, name)(params, **CASES[name], **options)
    else:
        params = make_params(torch.bfloat16)
        opt = getattr(fastoptim, name)([{"params": params, "rounding_seed": rounding_seed}], **CASES[name],
                                       stochastic_rounding=True)
    hyper = rule_optimizer(opt)._hyper(opt.param_groups[0])
    # the libtorch classes have no Hessian estimator yet: both sides keep a zero Hessian EMA
    stepper = given_hessian_if_needed(opt, zero_estimates)
    for step in range(STEPS):
        torch.manual_seed(100 + step)
        for p in params:
            p.grad = torch.randn_like(p)
        stepper.step()
    return [p.detach() for p in params], rule_optimizer(opt).rule, hyper


@pytest.mark.parametrize("name", sorted(CASES))
def test_libtorch_class_steps_as_the_python_class_does(parity, tmp_path, name):
    expected, rule, hyper = python_run(name)
    out = tmp_path / "params.pt"
    subprocess.run([str(parity), rule, str(STEPS), str(out), *map(repr, hyper)], check=True)
    got = torch.load(out)
    for a, b in zip(got, expected):
        assert torch.equal(a, b), (name, tuple(b.shape))


@pytest.mark.parametrize("name", ["AdamW", "LAMB", "Adafactor"])
def test_libtorch_stochastic_rounding_rounds_as_the_python_class_does(parity, tmp_path, name):
    """bf16 parameters with stochastic_rounding(true).rounding_seed(seed): the same bits as the Python
    class with that group seed (the keys, seed and count, go through torch::save / torch::load halfway)."""
    expected, rule, hyper = python_run(name, rounding_seed=12345)
    out = tmp_path / "params.pt"
    env = {**os.environ, "FASTOPTIM_PARITY_ROUNDING_SEED": "12345"}
    subprocess.run([str(parity), rule, str(STEPS), str(out), *map(repr, hyper)], check=True, env=env)
    got = torch.load(out)
    for a, b in zip(got, expected):
        assert a.dtype == torch.bfloat16 and torch.equal(a, b), (name, tuple(b.shape))


@pytest.mark.parametrize("name", ["AdamW", "LAMB", "Adan"])
def test_libtorch_bf16_state_steps_as_the_python_class_does(parity, tmp_path, name):
    """Options bf16_state(true): float32 parameters with bf16 state, as state_dtype=torch.bfloat16."""
    expected, rule, hyper = python_run(name, state_dtype=torch.bfloat16)
    out = tmp_path / "params.pt"
    env = {**os.environ, "FASTOPTIM_PARITY_BF16_STATE": "1"}
    subprocess.run([str(parity), rule, str(STEPS), str(out), *map(repr, hyper)], check=True, env=env)
    for a, b in zip(torch.load(out), expected):
        assert torch.equal(a, b), (name, tuple(b.shape))


@pytest.mark.parametrize("name", ["AdamW", "Adan", "LAMB"])
def test_libtorch_eight_bit_state_steps_as_the_python_class_does(parity, tmp_path, name):
    """Options eight_bit_state(true): the moments in 8 bits, as state_bits=8 (codes and scales go
    through torch::save / torch::load halfway)."""
    expected, rule, hyper = python_run(name, state_bits=8)
    out = tmp_path / "params.pt"
    env = {**os.environ, "FASTOPTIM_PARITY_EIGHT_BIT_STATE": "1"}
    subprocess.run([str(parity), rule, str(STEPS), str(out), *map(repr, hyper)], check=True, env=env)
    for a, b in zip(torch.load(out), expected):
        assert torch.equal(a, b), (name, tuple(b.shape))


def test_adamw_options_start_where_the_python_adamw_starts(parity):
    done = subprocess.run([str(parity), "adamw-options"], capture_output=True, text=True, check=True)
    opt = fastoptim.AdamW(make_params())
    assert [float(v) for v in done.stdout.split()] == opt._hyper(opt.param_groups[0])


def test_every_optimizer_rule_has_its_libtorch_class(parity, tmp_path):
    optimizer_rules = [name for name, meta in fastoptim._C.rules.items() if meta["optimizer"]]
    # (and classes of their own over helper rules: Adafactor's)
    assert {rule_optimizer(getattr(fastoptim, n)(make_params(), **CASES[n])).rule for n in CASES} >= set(optimizer_rules)
    for rule in optimizer_rules:
        defaults = [default for _, default, _ in fastoptim._C.rules[rule]["fields"]]
        done = subprocess.run([str(parity), rule, "2", str(tmp_path / f"{rule}.pt"), *map(repr, defaults)])
        assert done.returncode == 0, rule  # 3: no fastoptim::optim class for this rule


def test_the_libtorch_example_trains(programs, tmp_path):
    done = subprocess.run([str(programs["example"])], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
