"""The optimizers on a CUDA device (issue 18): every optimizer's step on the GPU (the CUDA kernels,
through the same entries as on the CPU) equals its step on the CPU over 20 steps (fp32 within 1e-6 relative, fp64 within
1e-12); the classic ones equal torch's fused CUDA steps; a state dict saved on the GPU resumes on the
CPU and back; a step captured in a CUDA graph and replayed equals eager steps. These run where
torch sees a GPU and fastoptim was built with its CUDA ops (tests/gpu/run.sh); elsewhere they are
skipped, and what runs here is what needs no GPU: a param group mixing devices is refused, and the
CUDA steps' ATen glue compiles against this torch's headers."""

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import fastoptim
from reference import OPTIMIZERS, SHAPES, TOLERANCE, make_params, make_rich, noise_grads, rule_optimizer
from test_dtensor import assert_adafactor_split_steps_are_the_whole_step

STEPS = 20
on_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and fastoptim._C.cuda_ops),
                            reason="needs a CUDA device and a fastoptim built with its CUDA kernels (tests/gpu/run.sh)")

# Muon's Newton-Schulz products run through ATen in bfloat16, as torch's do: the GPU adds them up in
# another order than the CPU, so its steps agree to bfloat16's precision, not float32's.
RTOL = {"Muon": 2e-2}


def test_a_param_group_mixing_devices_is_refused():
    params = [torch.zeros(3, requires_grad=True), torch.zeros(3, device="meta", requires_grad=True)]
    with pytest.raises(ValueError, match=r"mixes devices \(cpu, meta\)"):
        fastoptim.AdamW(params)


@pytest.mark.skipif(not torch.cuda.is_available() or fastoptim._C.cuda_ops, reason="needs a GPU and a CPU-only build")
def test_without_the_cuda_ops_cuda_params_are_refused_by_name():
    p = torch.zeros(3, device="cuda", requires_grad=True)
    p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="runs on the CPU only"):
        fastoptim.AdamW([p]).step()


def test_the_cuda_aten_glue_compiles_against_this_torch():
    """cpp/src/aten/cuda_ops.cpp (the CUDA steps' ATen glue) is built only against a torch with CUDA,
    which this machine and CI lack: its syntax and templates are checked here against this torch's
    headers (it includes no CUDA header), so a mistake in it shows before a GPU machine builds it."""
    from torch.utils.cpp_extension import include_paths

    compiler = shutil.which("g++") or shutil.which("c++")
    assert compiler, "a C++ compiler (the build needs one)"
    root = Path(__file__).resolve().parents[2]
    includes = [f"-I{path}" for path in [*include_paths(), root / "cpp" / "include", root / "cpp" / "src" / "aten"]]
    result = subprocess.run([compiler, "-std=c++20", "-fsyntax-only", "-w", "-DFASTOPTIM_CUDA_OPS", *includes,
                             str(root / "cpp" / "src" / "aten" / "cuda_ops.cpp")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def on(device, params):
    return [p.detach().to(device).requires_grad_() for p in params]


def assert_close(actual, expected, rtol, what):
    actual, expected = actual.detach().cpu().double(), expected.detach().cpu().double()
    bound = rtol * expected.abs() + rtol * 1e-3
    bad = (actual - expected).abs() > bound
    bad &= ~(actual.isnan() & expected.isnan())
    assert not bad.any(), f"{what}: {int(bad.sum())} elements apart, max {float((actual - expected).abs().max())}"


def assert_same_state(gpu, cpu, rtol, what):
    for index, (a, b) in enumerate(zip(gpu.state_dict()["state"].values(), cpu.state_dict()["state"].values())):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, torch.Tensor):
                assert_close(value, b[key], rtol, f"{what}: state {key!r} of param {index}")


def assert_all_close(params, expected, rtol, what):
    for index, (p, q) in enumerate(zip(params, expected)):
        assert_close(p, q, rtol, f"{what} param {index} {tuple(q.shape)}")


def step_alike(runs, steps, dtype=torch.float32):
    """Steps each (params, optimizer) of `runs` at each step of `steps`, all given the same noise
    gradients, each on its params' device."""
    for step in steps:
        grads = noise_grads(runs[0][0], step, dtype)
        for params, optimizer in runs:
            for p, g in zip(params, grads):
                p.grad = g.to(p.device)
            optimizer.step()


@on_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_the_gpu_step_is_the_cpu_step(name, dtype):
    start = make_params(SHAPES, dtype)
    cpu_params, gpu_params = on("cpu", start), on("cuda", start)
    cpu, gpu = make_rich(name, cpu_params), make_rich(name, gpu_params)
    rtol = RTOL.get(name, TOLERANCE[dtype])
    step_alike([(cpu_params, cpu), (gpu_params, gpu)], range(STEPS), dtype)
    assert_all_close(gpu_params, cpu_params, rtol, name)
    assert_same_state(rule_optimizer(gpu), rule_optimizer(cpu), rtol, name)


@on_gpu
@pytest.mark.parametrize("name", ["AdamW", "LAMB", "Adan"])
def test_bf16_state_on_the_gpu_is_the_cpu_step(name):
    """state_dtype=torch.bfloat16 for float32 params: the GPU's state rounds as the CPU's (a value
    one float32 ulp apart may round to the neighbouring bf16 value: one bf16 ulp, 2^-8 relative)."""
    start = make_params(SHAPES, torch.float32)
    cpu_params, gpu_params = on("cpu", start), on("cuda", start)
    cpu, gpu = (make_rich(name, params, state_dtype=torch.bfloat16) for params in (cpu_params, gpu_params))
    step_alike([(cpu_params, cpu), (gpu_params, gpu)], range(STEPS))
    assert_all_close(gpu_params, cpu_params, 1e-4, name)
    assert_same_state(rule_optimizer(gpu), rule_optimizer(cpu), 2 ** -7, name)
    assert all(s["exp_avg"].dtype == torch.bfloat16 and s["exp_avg"].is_cuda for s in rule_optimizer(gpu).state.values())


@on_gpu
@pytest.mark.parametrize("name", ["LAMB", "LARS", "TAdam", "RaLars", "AdamP"])
def test_a_split_step_on_the_gpu_is_the_whole_step(name):
    """A step split at its sums (sharded DTensors: pass 1 writes each tensor's sums, or AdamP's summary
    of its rows, to a device tensor, which the front end combines across the shards; pass 2 takes
    them), with the sums as they are: bit for bit the whole step on the GPU, three steps running."""
    start = make_params(SHAPES, torch.float32)
    params, copies = on("cuda", start), on("cuda", start)
    whole, split = make_rich(name, params), make_rich(name, copies)
    rule = split._rule_of(split.param_groups[0])
    for step in range(3):
        grads = noise_grads(start, step)
        for p, q, g in zip(params, copies, grads):
            p.grad, q.grad = g.to("cuda"), g.to("cuda")
        whole.step()
        args, created = split._gather(split.param_groups[0])
        sums = torch.zeros(len(args[0]), rule.shard_sums, dtype=torch.float64, device="cuda")
        rule.op(*args, shard_sums=sums, sums_pass=1, whole_numels=[q.numel() for q in copies])
        rule.op(*args, shard_sums=sums, sums_pass=2, whole_numels=[q.numel() for q in copies])
        split._commit(created)
    for index, (p, q) in enumerate(zip(params, copies)):
        assert torch.equal(p, q), f"{name} param {index}"


@on_gpu
def test_adafactor_on_the_gpu_is_the_cpu_step():
    """Adafactor's factored matrices on the GPU (cpp/src/cuda/factored.cu), 3-d ones and bf16 with
    stochastic rounding too, against the CPU's (the sums in another order: within 1e-6; bf16 within
    an ulp)."""
    for dtype, options, rtol in [(torch.float32, {}, 1e-6), (torch.bfloat16, dict(stochastic_rounding=True), 2 ** -7)]:
        start = make_params([(33, 65), (3, 4, 5), (1, 300), (7,)], dtype)
        cpu_params, gpu_params = on("cpu", start), on("cuda", start)
        cpu, gpu = (make_rich("Adafactor", [{"params": params, "rounding_seed": 7}], **options)
                    for params in (cpu_params, gpu_params))
        step_alike([(cpu_params, cpu), (gpu_params, gpu)], range(STEPS), dtype)
        assert_all_close(gpu_params, cpu_params, rtol, f"Adafactor {dtype}")
        assert_same_state(gpu, cpu, rtol, f"Adafactor {dtype}")


@on_gpu
@pytest.mark.parametrize("cut", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_adafactor_split_steps_on_the_gpu_are_its_whole_step(cut, dtype):
    """A sharded Adafactor matrix's three phases on the GPU (the sums on the device), with the sums as
    they are: bit for bit the GPU's whole step, for shards of slices, rows and columns (the CPU test's
    body, test_dtensor.py, on the GPU)."""
    assert_adafactor_split_steps_are_the_whole_step(cut, dtype, "cuda")


@on_gpu
@pytest.mark.parametrize("name", ["AdamW", "AMaC"])
def test_first_indices_key_a_shard_as_part_of_the_whole_on_the_gpu(name):
    """A sharded tensor's elements draw their bits (stochastic rounding; AMaC's noise) by their index
    in the whole tensor (first_indices): the second half of a tensor stepped on its own with its offset
    steps as the whole tensor's second half does, bit for bit, on the GPU."""
    start = make_params([(40, 33)], torch.bfloat16 if name == "AdamW" else torch.float32)[0]
    whole = [start.detach().to("cuda").requires_grad_()]
    half = [start.detach()[20:].to("cuda").requires_grad_()]
    options = dict(stochastic_rounding=True) if name == "AdamW" else {}
    # (AMaC's rule step, without the averaging wrappers around it)
    ours, theirs = (rule_optimizer(make_rich(name, [{"params": ps, "rounding_seed": 7}], **options)) for ps in (whole, half))
    for step in range(3):
        grad = noise_grads([start], step)[0].to("cuda")
        whole[0].grad, half[0].grad = grad, grad[20:].clone()
        ours.step()
        args, created = theirs._gather(theirs.param_groups[0])
        theirs._rule_of(theirs.param_groups[0]).op(*args, first_indices=[20 * 33])
        theirs._commit(created)
    assert torch.equal(whole[0][20:], half[0])


@on_gpu
@pytest.mark.parametrize("name, dtype, options", [("AdamW", torch.float32, {}), ("Adan", torch.float32, {}),
                                                  ("LAMB", torch.float32, {}), ("TAdam", torch.float32, {}),
                                                  ("Lion", torch.float32, {}), ("AdamP", torch.float32, {}),
                                                  ("SGD", torch.float32, {}),
                                                  ("Adagrad", torch.float32, dict(initial_accumulator_value=0.5)),
                                                  ("AMaC", torch.float32, {}), ("SophiaH", torch.float32, {}),
                                                  ("AdamW", torch.bfloat16, dict(stochastic_rounding=True))],
                         ids=["AdamW", "Adan", "LAMB", "TAdam", "Lion", "AdamP", "SGD", "Adagrad-nonzero-start", "AMaC",
                              "SophiaH-hessian-folds", "AdamW-bf16-stochastic_rounding"])
def test_eight_bit_state_on_the_gpu_is_the_cpu_step(name, dtype, options):
    """state_bits=8 on the GPU: a CUDA block codes a block of 256 elements as the CPU does (the same
    block edges, largest magnitudes and nearest codes; AdamP's restarting at each row), so the codes are
    the CPU's but where a value's float32 result is an ulp apart on the two devices and straddles a
    code's edge (rarely: one code apart); the parameters follow within 1e-3."""
    start = make_params(SHAPES + [(4099,), (3, 300)], dtype)
    cpu_params, gpu_params = on("cpu", start), on("cuda", start)
    cpu, gpu = (make_rich(name, [{"params": params, "rounding_seed": 7}], state_bits=8, **options)
                for params in (cpu_params, gpu_params))
    step_alike([(cpu_params, cpu), (gpu_params, gpu)], range(STEPS), dtype)
    assert_all_close(gpu_params, cpu_params, 1e-3, name)
    same = total = 0
    for p, q in zip(gpu_params, cpu_params):  # (AMaC's state: its rule's, inside Lookahead and SWA)
        for key, value in rule_optimizer(cpu).state[q].items():
            mine = rule_optimizer(gpu).state[p][key]
            assert mine.is_cuda and mine.dtype == value.dtype and mine.shape == value.shape, key
            if value.dtype == torch.uint8:
                same, total = same + int(torch.eq(mine.cpu(), value).sum()), total + value.numel()
    assert total and same >= 0.99 * total, (name, same, total)


@on_gpu
@pytest.mark.parametrize("name", ["AdamW", "Lion", "LAMB", "Adan"])
def test_stochastic_rounding_on_the_gpu_draws_the_cpus_bits(name):
    """bf16 parameters stored by stochastic rounding on the GPU: each element's bits are the CPU's
    (Philox keyed by the element and the key's count, which advances on the device), so the GPU's
    parameters are the CPU's, up to the elements whose float32 value before the rounding is an ulp
    apart on the two devices (one bf16 ulp at most, rarely); the keys' counts agree."""
    start = make_params(SHAPES + [(4099,)], torch.bfloat16)
    cpu_params, gpu_params = on("cpu", start), on("cuda", start)
    cpu, gpu = (make_rich(name, [{"params": params, "rounding_seed": 7}], stochastic_rounding=True)
                for params in (cpu_params, gpu_params))
    step_alike([(cpu_params, cpu), (gpu_params, gpu)], range(STEPS), torch.bfloat16)
    assert_all_close(gpu_params, cpu_params, 2 ** -7, name)
    same = sum(int(torch.eq(p.cpu(), q).sum()) for p, q in zip(gpu_params, cpu_params))
    assert same >= 0.99 * sum(q.numel() for q in cpu_params), (name, same)
    for p, q in zip(gpu_params, cpu_params):
        key, expected = gpu.state[p]["rounding_key"], cpu.state[q]["rounding_key"]
        assert key.is_cuda and torch.equal(key.cpu(), expected) and int(expected[2]) == STEPS


@on_gpu
@pytest.mark.parametrize("name, torch_kwargs", [("Adam", dict(fused=True)), ("AdamW", dict(fused=True)),
                                                 ("SGD", dict(fused=True, momentum=0.9)),
                                                 ("Adagrad", dict(foreach=True)), ("RMSprop", dict(foreach=True))])
def test_the_classic_optimizers_equal_torchs_cuda_steps(name, torch_kwargs):
    start = make_params(SHAPES, torch.float32)
    ours_params, torch_params = on("cuda", start), on("cuda", start)
    options = dict(lr=1e-2, weight_decay=0.1, maximize=True, **({"momentum": 0.9} if name == "SGD" else {}))
    ours = getattr(fastoptim, name)(ours_params, **options)
    reference = getattr(torch.optim, name)(torch_params, **{**options, **torch_kwargs})
    step_alike([(ours_params, ours), (torch_params, reference)], range(STEPS))
    assert_all_close(ours_params, torch_params, TOLERANCE[torch.float32], name)


@on_gpu
@pytest.mark.parametrize("name", ["AdamW", "LAMB", "TAdam"])
def test_a_state_dict_saved_on_the_gpu_resumes_on_the_cpu_and_back(name):
    start = make_params(SHAPES, torch.float32)
    gpu_params = on("cuda", start)
    gpu = make_rich(name, gpu_params)
    step_alike([(gpu_params, gpu)], range(5))
    cpu_params = on("cpu", gpu_params)
    cpu = make_rich(name, cpu_params)
    cpu.load_state_dict(copy.deepcopy(gpu.state_dict()))
    assert all(s.device.type == "cpu" for state in cpu.state.values() for s in state.values() if torch.is_tensor(s))
    step_alike([(gpu_params, gpu), (cpu_params, cpu)], range(5, 10))
    back_params = on("cuda", cpu_params)
    back = make_rich(name, back_params)
    back.load_state_dict(copy.deepcopy(cpu.state_dict()))
    step_alike([(gpu_params, gpu), (back_params, back)], range(10, 15))
    assert_all_close(back_params, gpu_params, TOLERANCE[torch.float32], name)


@on_gpu
@pytest.mark.parametrize("name, dtype, options", [("AdamW", torch.float32, {}), ("LAMB", torch.float32, {}),
                                                  ("Adan", torch.float32, {}),
                                                  ("AdamW", torch.bfloat16, dict(stochastic_rounding=True))],
                         ids=["AdamW", "LAMB", "Adan", "AdamW-bf16-stochastic_rounding"])
def test_a_step_captured_in_a_cuda_graph_equals_eager_steps(name, dtype, options):
    """torch's whole-step capture recipe: warm up on a side stream (the state is created there),
    capture one step, replay it; the replays equal eager steps bit for bit (stochastic rounding's
    key advances on the device: each replay draws the next step's bits)."""
    start = make_params([(1,), (4099,), (100003,), (33, 65)], dtype)
    eager_params, graph_params = on("cuda", start), on("cuda", start)
    eager, captured = (make_rich(name, [{"params": params, "rounding_seed": 7}], **options)
                       for params in (eager_params, graph_params))
    grads = [[g.to("cuda") for g in noise_grads(start, step, dtype)] for step in range(6)]
    for p, g in zip(graph_params, grads[0]):
        p.grad = g.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        captured.step()  # (step 0, eager: creates the state)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured.step()
    for step in range(6):
        for p, g in zip(eager_params, grads[step]):
            p.grad = g.clone()
        eager.step()
    for step in range(1, 6):
        for p, g in zip(graph_params, grads[step]):
            p.grad.copy_(g)
        graph.replay()
    torch.cuda.synchronize()
    for index, (p, q) in enumerate(zip(graph_params, eager_params)):
        assert torch.equal(p, q), f"{name} param {index}"
