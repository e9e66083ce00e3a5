"""DTensor parameters (issue 20): every element-wise optimizer steps their local shards, with state
as DTensors of the same placements; optimizers whose step needs each tensor whole refuse shards."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastoptim
from reference import make_params

HERE = Path(__file__).resolve().parent


def test_two_ranks_step_their_shards_as_one_process_steps_the_whole_and_fsdp2_trains(tmp_path):
    report = tmp_path / "report"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, str(HERE / "dtensor_worker.py"), str(rank), "2", str(tmp_path / "store"),
                               str(report)], env=env) for rank in range(2)]
    assert [rank.wait(timeout=600) for rank in ranks] == [0, 0]
    runs, *failures = report.read_text().splitlines()
    assert not failures
    assert int(runs.split()[0]) >= 60, runs  # (26 optimizers, most in three placements)
    assert "AdamW S(1)" in runs and "LAMB R" in runs and "Muon S(1)" in runs and "FSDP2 Muon" in runs


@pytest.fixture(scope="module")
def one_rank_mesh(tmp_path_factory):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"file://{tmp_path_factory.mktemp('dist') / 'store'}", rank=0, world_size=1)
    yield init_device_mesh("cpu", (1,))
    dist.destroy_process_group()


@pytest.mark.parametrize("name", ["LAMB", "LARS", "TAdam", "AdamP", "AMaC"])
def test_a_rule_that_needs_whole_tensors_refuses_shards_before_anything_changes(one_rank_mesh, name):
    from torch.distributed.tensor import Shard, distribute_tensor

    p = torch.nn.Parameter(distribute_tensor(torch.randn(8, 4), one_rank_mesh, [Shard(0)]))
    p.grad = distribute_tensor(torch.randn(8, 4), one_rank_mesh, [Shard(0)])
    before = p.full_tensor().clone()
    opt = getattr(fastoptim, name)([p])
    with pytest.raises(ValueError, match=r"steps a DTensor parameter only when it is replicated; parameter #0 "
                                         r"\(shape \(8, 4\)\) of param group 0 has placements \(Shard\(dim=0\),\)"):
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


def test_eight_bit_state_refuses_dtensors_by_name(one_rank_mesh):
    from torch.distributed.tensor import Shard, distribute_tensor

    p = torch.nn.Parameter(distribute_tensor(torch.randn(8, 4), one_rank_mesh, [Shard(0)]))
    p.grad = distribute_tensor(torch.randn(8, 4), one_rank_mesh, [Shard(0)])
    before = p.full_tensor().clone()
    opt = fastoptim.AdamW([p], state_bits=8)
    with pytest.raises(ValueError, match=r"state_bits=8 does not step DTensor parameters yet; parameter #0 "
                                         r"\(shape \(8, 4\)\) of param group 0 is one"):
        opt.step()
    assert torch.equal(p.full_tensor(), before) and len(opt.state) == 0
