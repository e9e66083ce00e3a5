"""The edge front end (cpp/include/fastoptim/edge, driven here through the test-only harness
tests/edge: a shared library built against this installation's fastoptim::core, called by ctypes) gives the
Python classes' float32 results bit for bit, for every optimizer of the catalogue (the
Hessian-diagonal ones with a zero estimate: the edge front end has no autograd to estimate with). Its
own tests (no heap allocation in step(), checkpoints, caller-owned state) are tests/cpp/test_edge.cpp."""

import ctypes
import inspect
import subprocess

import pytest
import torch

import fastoptim
from fastoptim.records import RECORDS
from reference import ROOT, SHAPES, cmake_build, given_hessian_if_needed, make_params, noise_grads, rule_optimizer, takes_state_bits, zero_estimates

CASES = [(r.name, r.front_end) for r in RECORDS if r.front_end is not None and "edge" in r.front_ends]


# the cases whose Python class takes state_bits=8 (the edge's StateFormat::eight_bit)
EIGHT_BIT_CASES = [(n, k) for n, k in CASES if takes_state_bits(n)]
# the cases whose Python class takes state_dtype=torch.bfloat16 (the edge's StateFormat::bfloat16)
BF16_STATE_CASES = [(n, k) for n, k in CASES if "state_dtype" in inspect.signature(getattr(fastoptim, n)).parameters]
# edge::StateFormat's values
FLOAT32, EIGHT_BIT, BFLOAT16 = 0, 1, 2


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    """The edge harness, built as an embedded user builds against fastoptim::core."""
    eigen = subprocess.run(["python", "-m", "cmeel", "cmake"], capture_output=True, text=True, check=True).stdout.strip()
    built = cmake_build(ROOT / "tests" / "edge", tmp_path_factory.mktemp("edge"), fastoptim.cmake_prefix_path, eigen)
    library = ctypes.CDLL(str(built / "libedge_harness.so"))
    library.fastoptim_edge_rules.restype = ctypes.c_char_p
    return library


def pointers(c_type, values):
    return (c_type * max(len(values), 1))(*values)


def edge_run(edge, rule, params, grads_per_step, hyper, state_format=FLOAT32):
    """A new edge optimizer of `rule` over `params` (float32 tensors, updated in place), its state in
    `state_format`, stepped once per list of gradients; its error as a ValueError."""
    for t in [*params, *(g for grads in grads_per_step for g in grads)]:
        assert t.dtype == torch.float32 and t.is_contiguous() and not t.requires_grad, "plain float32 buffers only"
    float_pointer = ctypes.POINTER(ctypes.c_float)
    as_float_pointer = lambda t: ctypes.cast(t.data_ptr(), float_pointer)
    shapes = [pointers(ctypes.c_int64, list(p.shape)) for p in params]
    error = ctypes.create_string_buffer(512)
    status = edge.fastoptim_edge_run(
        rule.encode(), len(params), pointers(float_pointer, [as_float_pointer(p) for p in params]),
        pointers(ctypes.c_int64, [p.numel() for p in params]), pointers(ctypes.c_int, [p.dim() for p in params]),
        pointers(ctypes.POINTER(ctypes.c_int64), [ctypes.cast(s, ctypes.POINTER(ctypes.c_int64)) for s in shapes]),
        len(grads_per_step), pointers(float_pointer, [as_float_pointer(g) for grads in grads_per_step for g in grads]),
        pointers(ctypes.c_double, list(hyper)), len(hyper), state_format, error, len(error))
    if status != 0:
        raise ValueError(error.value.decode())


def assert_edge_steps_as_the_python_class(edge, name, kwargs, shapes, state_format=FLOAT32):
    params = make_params(shapes, torch.float32)
    edge_params = [p.detach().clone() for p in params]
    precision = {FLOAT32: {}, EIGHT_BIT: {"state_bits": 8}, BFLOAT16: {"state_dtype": torch.bfloat16}}[state_format]
    opt = getattr(fastoptim, name)(params, **kwargs, **precision)
    inner = rule_optimizer(opt)
    stepper = given_hessian_if_needed(opt, zero_estimates)  # no estimator at the edge: a zero Hessian EMA
    steps = [noise_grads(params, step) for step in range(12)]
    for grads in steps:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        stepper.step()
    edge_run(edge, inner.rule, edge_params, steps, inner._hyper(opt.param_groups[0]), state_format)
    for p, q in zip(params, edge_params):
        assert torch.equal(p.detach(), q), (name, tuple(p.shape))


@pytest.mark.parametrize("name, kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_edge_steps_as_the_python_class_does(edge, name, kwargs):
    assert_edge_steps_as_the_python_class(edge, name, kwargs, SHAPES)


@pytest.mark.parametrize("name, kwargs", EIGHT_BIT_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(EIGHT_BIT_CASES)])
def test_edge_eight_bit_state_steps_as_state_bits_8_does(edge, name, kwargs):
    """StateFormat::eight_bit: the same codes, scales and so parameters as state_bits=8, at the
    SIMD tails and at block edges (255, 256, 257 elements)."""
    assert_edge_steps_as_the_python_class(edge, name, kwargs, SHAPES + [(255,), (256,), (257,), (3, 300)], EIGHT_BIT)


@pytest.mark.parametrize("name, kwargs", BF16_STATE_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BF16_STATE_CASES)])
def test_edge_bfloat16_state_steps_as_state_dtype_bfloat16_does(edge, name, kwargs):
    """StateFormat::bfloat16: the parameters state_dtype=torch.bfloat16 gives, bit for bit, 12 steps
    running (the state rounded to nearest even as it is stored, from start values rounded alike)."""
    assert_edge_steps_as_the_python_class(edge, name, kwargs, SHAPES, BFLOAT16)


def test_every_rule_but_adafactor_takes_bfloat16_state_at_the_edge(edge):
    covered = {rule_optimizer(getattr(fastoptim, n)(make_params([(2,)], torch.float32), **k)).rule for n, k in BF16_STATE_CASES}
    assert covered == {name for name, meta in fastoptim._C.rules.items() if meta["optimizer"]}
    adafactor = fastoptim.Adafactor(make_params([(2, 3)], torch.float32))
    with pytest.raises(ValueError, match="Adafactor keeps its factors in float32"):
        edge_run(edge, "adafactor", [torch.zeros(2, 3)], [], adafactor._hyper(adafactor.param_groups[0]), BFLOAT16)


def test_every_eight_bit_rule_is_covered_at_the_edge(edge):
    eight_bit_rules = {name for name, meta in fastoptim._C.rules.items() if meta["optimizer"] and meta["eight_bit_state"]}
    assert {rule_optimizer(getattr(fastoptim, n)(make_params([(2,)], torch.float32), **k)).rule
            for n, k in EIGHT_BIT_CASES} == eight_bit_rules
    with pytest.raises(ValueError, match="keeps no state in 8 bits"):
        edge_run(edge, "rprop", [torch.zeros(3)], [], [v for _, v, _ in fastoptim._C.rules["rprop"]["fields"]], EIGHT_BIT)


def test_every_optimizer_rule_is_covered(edge):
    covered = {rule_optimizer(getattr(fastoptim, name)(make_params([(2,)], torch.float32), **kwargs)).rule
               for name, kwargs in CASES}
    optimizer_rules = {name for name, meta in fastoptim._C.rules.items() if meta["optimizer"]}
    assert covered == optimizer_rules | {"adafactor"}  # (Adafactor's class steps on its helper rule, factored)
    assert set(edge.fastoptim_edge_rules().decode().strip(",").split(",")) == set(fastoptim._C.rules)
