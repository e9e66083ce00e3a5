"""DTensor parameters (issue 20): every element-wise optimizer steps their local shards, with state
as DTensors of the same placements; those with per-tensor sums add up their shards' sums between the
halves of a split step; those whose step needs rows of each tensor whole refuse shards; the
Hessian-diagonal ones fold in estimates of each shard (their probes: the whole tensor's, shard by shard)."""

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastoptim
from reference import make_params

HERE = Path(__file__).resolve().parent


def test_two_ranks_step_their_shards_as_one_process_steps_the_whole_and_fsdp2_trains_and_resumes(tmp_path):
    report = tmp_path / "report"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, str(HERE / "dtensor_worker.py"), str(rank), "2", str(tmp_path / "store"),
                               str(report)], env=env) for rank in range(2)]
    assert [rank.wait(timeout=600) for rank in ranks] == [0, 0]
    runs, *failures = report.read_text().splitlines()
    assert not failures
    assert int(runs.split()[0]) >= 70, runs  # (26 optimizers, most in three placements)
    assert "AdamW S(1)" in runs and "Muon S(1)" in runs and "FSDP2 Muon" in runs
    assert all(f"{name} S(1)" in runs for name in ("LAMB", "LARS", "RaLars", "TAdam")), runs
    assert "LAMB max_grad_norm S(0)" in runs and "Adan max_grad_norm S(0)" in runs and "AdamP R" in runs
    assert "FSDP2 transformer AdamW = torch.optim.AdamW" in runs and "DCP resume LAMB" in runs
    assert all(f"{name}(AdamW) S(1)" in runs for name in ("Lookahead", "Scout", "EMA", "SWA")), runs
    assert all(f"{name} S(1)" in runs for name in ("SophiaG", "SophiaH", "AdaHessian", "SophiaOptim")), runs
    assert all(f"{name} own estimates" in runs for name in ("SophiaH", "AdaHessian", "SophiaG")), runs
    assert "AdamW stochastic_rounding S(0)" in runs and "Lion stochastic_rounding S(0)" in runs and "AMaC S(0)" in runs
    assert "AdamP S(0)" in runs and "AdamP channel view S(0)" in runs and "AdamP layer view S(0)" in runs
    assert all(f"Adafactor {placement}" in runs for placement in ("S(0)", "S(1)", "3-d S(0)", "3-d S(1)", "3-d S(2)")), runs
    assert all(f"FSDP2 {name} refresh refused" in runs for name in ("SophiaH", "AdaHessian", "SophiaG")), runs
    assert "FSDP2 Adafactor" in runs and "DCP resume Adafactor" in runs and "DCP resume AdamW state_bits=8" in runs
    assert all(f"{name} state_bits=8 {placement}" in runs for name in ("AdamW", "LAMB", "Adan", "TAdam", "Lion")
               for placement in ("S(0)", "S(1)")), runs
    assert all(f"{name} state_bits=8 {placement}" in runs for name in ("AdamP", "AMaC") for placement in ("S(0)", "R")), runs
    assert all(f"{name} state_bits=8 S(1)" in runs for name in ("SophiaG", "SophiaH", "AdaHessian")), runs  # (folds too)


@pytest.fixture(scope="module")
def one_rank_mesh(tmp_path_factory):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"file://{tmp_path_factory.mktemp('dist') / 'store'}", rank=0, world_size=1)
    yield init_device_mesh("cpu", (1,))
    dist.destroy_process_group()


@pytest.mark.parametrize("name,dim,takes", [("AMaC", 1, " or sharded along dim 0"), ("AdamP", 1, " or sharded along dim 0")])
def test_a_rule_that_needs_whole_rows_refuses_shards_before_anything_changes(one_rank_mesh, name, dim, takes):
    """AMaC and AdamP work row by row (Shard(0) too: the two-rank test), so they refuse a Shard(1) shard."""
    from torch.distributed.tensor import Shard, distribute_tensor

    p = torch.nn.Parameter(distribute_tensor(torch.randn(8, 4), one_rank_mesh, [Shard(dim)]))
    p.grad = distribute_tensor(torch.randn(8, 4), one_rank_mesh, [Shard(dim)])
    before = p.full_tensor().clone()
    opt = getattr(fastoptim, name)([p])
    with pytest.raises(ValueError, match=r"reduces over rows of each whole tensor .* so it steps a DTensor parameter only "
                                         rf"when it is replicated{takes}; parameter #0 "
                                         rf"\(shape \(8, 4\)\) of param group 0 has placements \(Shard\(dim={dim}\),\)"):
        opt.step()
    assert torch.equal(p.full_tensor(), before) and len(opt.state) == 0


def test_adafactor_refuses_a_matrix_cut_in_rows_and_columns_at_once(one_rank_mesh):
    """Its factored step adds up across shards either its rows' or its columns' sums, not both: a
    matrix sharded along both of its last two dims (a 2-d mesh) is refused by name before anything
    changes; one sharded along a dim before them steps (its slices whole: the two-rank test)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (1, 1))
    p = torch.nn.Parameter(distribute_tensor(torch.randn(8, 4), mesh, [Shard(0), Shard(1)]))
    p.grad = distribute_tensor(torch.randn(8, 4), mesh, [Shard(0), Shard(1)])
    before = p.full_tensor().clone()
    opt = fastoptim.Adafactor([p])
    with pytest.raises(ValueError, match=r"Adafactor factors the second moment of a matrix over its last two dims, and "
                                         r"steps a sharded DTensor matrix whose shards cut its rows or its columns .*; "
                                         r"parameter #0 \(shape \(8, 4\)\) of param group 0 has placements "
                                         r"\(Shard\(dim=0\), Shard\(dim=1\)\)"):
        opt.step()
    assert torch.equal(p.full_tensor(), before) and len(opt.state) == 0


def test_a_gradient_of_other_placements_is_refused(one_rank_mesh):
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    p = torch.nn.Parameter(distribute_tensor(torch.randn(8, 4), one_rank_mesh, [Shard(0)]))
    p.grad = distribute_tensor(torch.randn(8, 4), one_rank_mesh, [Replicate()])
    with pytest.raises(TypeError, match=r"gradient of parameter #0 .* must be a DTensor with the parameter's mesh and "
                                        r"placements \(Shard\(dim=0\),\), got DTensor with placements \(Replicate\(\),\)"):
        fastoptim.AdamW([p]).step()
    p.grad = torch.randn(8, 4)
    with pytest.raises(TypeError, match=r"got Tensor"):
        fastoptim.AdamW([p]).step()
    plain = make_params([(3,)], torch.float32)[0]
    assert not fastoptim.AdamW([plain])._holds_dtensors and fastoptim.AdamW([p])._holds_dtensors


def test_eight_bit_state_of_another_sharding_is_refused_by_name(one_rank_mesh):
    """8-bit state of a DTensor is quantized shard by shard (the two-rank test steps it), so its scales
    are a row per shard: a checkpoint saved from another sharding (other rows) is refused by name, with
    the way round it, before anything changes."""
    from torch.distributed.tensor import Shard, distribute_tensor

    p = torch.nn.Parameter(distribute_tensor(torch.randn(8, 40), one_rank_mesh, [Shard(0)]))
    p.grad = distribute_tensor(torch.randn(8, 40), one_rank_mesh, [Shard(0)])
    opt = fastoptim.AdamW([p], state_bits=8)
    opt.step()
    assert opt.state[p]["exp_avg_scale"].shape == (1, 2) and opt.state[p]["exp_avg"].placements == (Shard(0),)
    saved = copy.deepcopy(opt.state_dict())
    saved["state"][0]["exp_avg_scale"] = distribute_tensor(torch.ones(2, 1), one_rank_mesh, [Shard(0)])  # (two shards')
    fresh = fastoptim.AdamW([p], state_bits=8)
    with pytest.raises(TypeError, match=r"8-bit 'exp_avg' needs 'exp_avg_scale', float32, a DTensor of its shards' block "
                                        r"scales of shape \(1, 2\); got DTensor torch.float32 of shape \(2, 1\) \(8-bit "
                                        r"state is quantized shard by shard, so it loads only into the sharding it was saved "
                                        r"from: load it there into a state_bits=None optimizer"):
        fresh.load_state_dict(saved)
    assert len(fresh.state) == 0


def same_gradients(params, copies):
    for p, q in zip(params, copies):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()


def step_in_halves(opt):
    """One step of `opt`'s (one) group as its op's two halves: sums_pass 1, then 2 with the sums as
    they are (as an unsharded tensor's would be added up)."""
    rule = opt._rule_of(opt.param_groups[0])
    args, created = opt._gather(opt.param_groups[0])
    sums = torch.zeros(len(args[0]), rule.shard_sums, dtype=torch.float64, device=args[0][0].device)
    rule.op(*args, shard_sums=sums, sums_pass=1)
    rule.op(*args, shard_sums=sums, sums_pass=2)
    opt._commit(created)


def assert_same_runs(whole, split, params, copies, name):
    for p, q in zip(params, copies):
        assert torch.equal(p, q), (name, p.shape)
        assert whole.state[p].keys() == split.state[q].keys(), name
        for key, value in whole.state[p].items():
            assert torch.equal(value, split.state[q][key]), (name, p.shape, key)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_a_split_step_is_the_whole_step_and_its_arguments_are_checked(dtype):
    """The op's halves (sums_pass 1, then 2 with the sums as they are) step as the whole op does, bit
    for bit; a rule without per-tensor sums, or sums of the wrong shape or dtype, are refused by name
    before anything changes."""
    from reference import OPTIMIZERS, make_rich

    tested = []
    for name in OPTIMIZERS:
        opt = make_rich(name, make_params([(3,)], torch.float32))
        group = opt.param_groups[0]
        if (not isinstance(opt, fastoptim._base.FusedOptimizer) or opt._steps_whole_tensors(group)
                or not opt._rule_of(group).shard_sums or name == "Adafactor"):
            continue  # (not a rule whose step splits; Adafactor's matrices split apart: the next test)
        tested.append(name)
        params = make_params([(0,), (1,), (17,), (33, 65), (40009,)], dtype)
        copies = [p.detach().clone().requires_grad_() for p in params]
        whole, split = make_rich(name, params), make_rich(name, copies)
        for step in range(3):
            same_gradients(params, copies)
            whole.step()
            step_in_halves(split)
        assert_same_runs(whole, split, params, copies, name)
    assert sorted(tested) == ["AdamP", "LAMB", "LARS", "RaLars", "TAdam"], tested

    p = make_params([(5,)], torch.float32)[0]
    p.grad = torch.randn_like(p)
    adamw, lamb = fastoptim.AdamW([p]), fastoptim.LAMB([p])
    with pytest.raises(ValueError, match=r"adam_step_: adam has no per-tensor sums to add up across shards"):
        adamw._rule_of(adamw.param_groups[0]).op(*adamw._gather(adamw.param_groups[0])[0],
                                                   shard_sums=torch.zeros(1, 2, dtype=torch.float64), sums_pass=1)
    args = lamb._gather(lamb.param_groups[0])[0]
    before = p.detach().clone()
    for sums, pattern in [(None, r"sums_pass 1 needs shard_sums"),
                          (torch.zeros(1, 3, dtype=torch.float64), r"shard_sums must be a contiguous CPU tensor of shape \[1, 2\]"),
                          (torch.zeros(1, 2), r"shard_sums must be float64")]:
        with pytest.raises((ValueError, TypeError), match=pattern):
            lamb._rule_of(lamb.param_groups[0]).op(*args, shard_sums=sums, sums_pass=1)
    with pytest.raises(ValueError, match=r"sums_pass must be 0 \(the whole step\), 1 or 2, got 3"):
        lamb._rule_of(lamb.param_groups[0]).op(*args, shard_sums=torch.zeros(1, 2, dtype=torch.float64), sums_pass=3)
    assert torch.equal(p, before) and all(t.count_nonzero() == 0 for t in args[2])


@pytest.mark.parametrize("cut", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_adafactor_split_steps_are_the_whole_step_whatever_they_cut(cut, dtype):
    assert_adafactor_split_steps_are_the_whole_step(cut, dtype)


def assert_adafactor_split_steps_are_the_whole_step(cut, dtype, device="cpu"):
    """Adafactor's split step (its vectors' halves, its matrices' three phases with the sums as they
    are, as one shard of each tensor would leave them) steps as the whole step does, bit for bit: the
    matrices' phases for shards of slices (cut 0), of rows (1) and of columns (2), empty tensors too
    (on `device`: the GPU's phases too, test_cuda.py)."""
    shapes = [(0,), (1,), (17,), (33, 65), (3, 4, 5), (1, 7), (0, 3), (2, 0, 4)]
    params = [p.detach().to(device).requires_grad_() for p in make_params(shapes, dtype)]
    copies = [p.detach().clone().requires_grad_() for p in params]
    whole, split = (fastoptim.Adafactor(ps, lr=1e-2, weight_decay=0.1, maximize=True) for ps in (params, copies))
    for _ in range(4):
        same_gradients(params, copies)
        whole.step()
        split._factored = []
        step_in_halves(split)  # (the vectors'; the matrices' arguments wait in _factored)
        (_, factored_args, _, _, _), = split._factored
        matrices = factored_args[0]
        width = {0: lambda m: 0, 1: lambda m: 1 + m.shape[-1], 2: lambda m: m.shape[-2]}[cut]
        keywords = dict(cuts=[cut] * len(matrices),
                        whole_sizes=[n for m in matrices for n in (m.shape[-2], m.shape[-1], m.numel())],
                        factor_sums=[torch.zeros((math.prod(m.shape[:-2]), width(m)) if cut else (0,), dtype=torch.float64,
                                                 device=device) for m in matrices],
                        update_sums=torch.zeros(len(matrices), 2, dtype=torch.float64, device=device))
        for phase in (1, 2, 3):
            torch.ops.fastoptim.adafactor_factored_step_(*factored_args, phase=phase, **keywords)
    assert_same_runs(whole, split, params, copies, "Adafactor")
    assert not torch.equal(params[3].cpu(), make_params(shapes, dtype)[3])


def test_adafactor_split_step_arguments_are_checked_before_anything_changes():
    p = make_params([(4, 3)], torch.float32)[0]
    p.grad = torch.randn_like(p)
    opt = fastoptim.Adafactor([p])
    opt._factored = []
    opt._gather(opt.param_groups[0])
    (_, args, _, _, _), = opt._factored
    before = p.detach().clone()
    good = dict(phase=1, cuts=[1], whole_sizes=[4, 3, 12], factor_sums=[torch.zeros(1, 4, dtype=torch.float64)],
                update_sums=torch.zeros(1, 2, dtype=torch.float64))
    for change, pattern in [(dict(phase=4), r"phase must be 0 \(the whole step\), 1, 2 or 3, got 4"),
                            (dict(phase=0), r"cuts, whole_sizes, factor_sums and update_sums are for a split step"),
                            (dict(cuts=[3]), r"cuts\[0\] is 3; it must be 0, 1 \(rows\) or 2 \(columns\)"),
                            (dict(whole_sizes=[4, 5, 20]), r"whole_sizes of params\[0\] \(4, 5, 20\) do not hold its shape"),
                            (dict(factor_sums=[torch.zeros(1, 3, dtype=torch.float64)]),
                             r"factor_sums must be a contiguous CPU tensor of shape \[1, 4\]"),
                            (dict(update_sums=torch.zeros(1, 2)), r"update_sums must be float64"),
                            (dict(cuts=[]), r"a split step takes one cut, three whole sizes and one factor_sums per param")]:
        with pytest.raises((ValueError, TypeError), match=pattern):
            torch.ops.fastoptim.adafactor_factored_step_(*args, **{**good, **change})
    assert torch.equal(p, before) and all(t.count_nonzero() == 0 for t in (*args[2], *args[3]))


def test_a_wrapper_buffer_of_other_placements_is_refused_when_loaded(one_rank_mesh):
    from torch.distributed.tensor import Shard, distribute_tensor

    p = torch.nn.Parameter(distribute_tensor(torch.randn(8, 4), one_rank_mesh, [Shard(0)]))
    p.grad = distribute_tensor(torch.randn(8, 4), one_rank_mesh, [Shard(0)])
    opt = fastoptim.Lookahead(fastoptim.AdamW([p]), sync_period=1)
    opt.step()
    saved = opt.state_dict()
    saved["state"][0]["slow_param"] = saved["state"][0]["slow_param"].full_tensor()  # a plain tensor
    before = opt.state[p]["slow_param"]
    with pytest.raises(TypeError, match=r"parameter #0 \(shape \(8, 4\)\) is a DTensor, so its 'slow_param' must be one "
                                        r"of its placements \(Shard\(dim=0\),\), got Tensor"):
        opt.load_state_dict(saved)
    assert opt.state[p]["slow_param"] is before


def test_an_estimate_for_a_dtensor_parameter_must_be_one_of_its_placements(one_rank_mesh):
    """A Hessian-diagonal optimizer folds each shard's part of an estimate: a plain tensor (or other
    placements) for a DTensor parameter is refused by name before anything changes."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    p = torch.nn.Parameter(distribute_tensor(torch.randn(8, 4), one_rank_mesh, [Shard(0)]))
    p.grad = distribute_tensor(torch.randn(8, 4), one_rank_mesh, [Shard(0)])
    before = p.full_tensor().clone()
    opt = fastoptim.SophiaH([p])
    for estimate, got in [(torch.ones(8, 4), "got Tensor"),
                          (distribute_tensor(torch.ones(8, 4), one_rank_mesh, [Replicate()]), r"got a DTensor with placements \(Replicate\(\),\)")]:
        with pytest.raises(TypeError, match=r"hessian\[0\] must be a DTensor with its parameter's placements "
                                            r"\(Shard\(dim=0\),\), as its gradient is; " + got):
            opt.step(hessian=[estimate])
    assert torch.equal(p.full_tensor(), before) and len(opt.state) == 0
    opt.step(hessian=[distribute_tensor(torch.ones(8, 4), one_rank_mesh, [Shard(0)])])
    assert torch.equal(opt.state[p]["hessian"].full_tensor(), torch.full((8, 4), 1 - 0.99))  # (1 - beta2) * 1


def test_stochastic_rounding_refuses_a_shard_that_is_not_one_run_of_the_whole_tensor(one_rank_mesh):
    """Its bits are keyed by the element's index in the whole tensor, which a Shard(1) shard's
    elements are not one run of: refused by name before anything changes (Shard(0) is stepped: the
    two-rank test)."""
    from torch.distributed.tensor import Shard, distribute_tensor

    p = torch.nn.Parameter(distribute_tensor(torch.randn(8, 4).bfloat16(), one_rank_mesh, [Shard(1)]))
    p.grad = distribute_tensor(torch.randn(8, 4).bfloat16(), one_rank_mesh, [Shard(1)])
    before = p.full_tensor().clone()
    opt = fastoptim.AdamW([p], stochastic_rounding=True)
    with pytest.raises(ValueError, match=r"stochastic rounding keys its random bits by element position, so it rounds a "
                                         r"sharded bfloat16 parameter only when each shard is one run of the whole tensor "
                                         r".*; parameter #0 \(shape \(8, 4\)\) of param group 0 has placements \(Shard\(dim=1\),\)"):
        opt.step()
    assert torch.equal(p.full_tensor(), before) and len(opt.state) == 0
