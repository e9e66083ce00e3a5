"""One rank of tests/python/test_dtensor.py's two-process run (gloo on the CPU):

    python dtensor_worker.py <rank> <world size> <store file> <report file>

Every optimizer of the catalogue that steps without a closure of its own steps DTensor parameters
(Shard(0), Shard(1) with uneven shards, Replicate) beside the same parameters unsharded; the full
tensors of the parameters and of every state tensor must equal the unsharded run's bit for bit, also
after a state-dict round trip. Optimizers whose step needs each tensor whole take Replicate only
(their refusal of shards is tested in one process). Then a model under FSDP2's fully_shard trains as
the unsharded one does, and its optimizer state goes through torch.distributed.checkpoint's
get/set_optimizer_state_dict. Rank 0 writes the runs on the report's first
line and the failures, one per line, after it."""

import copy
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import OPTIMIZERS, make_params, make_rich, noise_grads  # noqa: E402

import fastoptim  # noqa: E402

SHAPES = [(8, 6), (7, 5), (16,), (5,)]


def placements_of(shape, placement):
    return [Shard(0)] if isinstance(placement, Shard) and len(shape) == 1 else [placement]


def run(name, placement, mesh):
    params = make_params(SHAPES, torch.float32)
    plain = [p.detach().clone().requires_grad_() for p in params]
    dparams = [torch.nn.Parameter(distribute_tensor(p.detach().clone(), mesh, placements_of(p.shape, placement)))
               for p in params]
    opt, ref = make_rich(name, dparams), make_rich(name, plain)
    for step in range(6):
        grads = noise_grads(plain, step)
        for p, q, g in zip(dparams, plain, grads):
            p.grad = distribute_tensor(g.clone(), mesh, list(p.placements))
            q.grad = g.clone()
        opt.step()
        ref.step()
        if step == 2:  # a state-dict round trip, as a checkpoint of the sharded run
            saved = copy.deepcopy(opt.state_dict())
            opt = make_rich(name, dparams)
            opt.load_state_dict(saved)
    failures = []
    for i, (p, q) in enumerate(zip(dparams, plain)):
        if not torch.equal(p.full_tensor(), q.detach()):
            failures.append(f"{name} {placement}: parameter {i} {tuple(q.shape)}")
        for key, value in ref.state[q].items():
            mine = opt.state[p][key]
            mine = mine.full_tensor() if isinstance(mine, torch.distributed.tensor.DTensor) else mine
            if not torch.equal(mine, value):
                failures.append(f"{name} {placement}: state {key!r} of parameter {i}")
    return failures


def fsdp2(name, mesh):
    """A small MLP under FSDP2's fully_shard (every Linear and the model), trained 5 steps on the same
    batches on every rank, beside the same MLP unsharded; then the optimizer's sharded state dict
    through torch.distributed.checkpoint's get/set_optimizer_state_dict into a new optimizer."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    plain = copy.deepcopy(model)
    for layer in (model[0], model[2], model):
        fully_shard(layer, mesh=mesh)
    opt, ref = getattr(fastoptim, name)(model.parameters(), lr=1e-2), getattr(fastoptim, name)(plain.parameters(), lr=1e-2)
    for step in range(5):
        generator = torch.Generator().manual_seed(100 + step)
        x, y = torch.randn(4, 8, generator=generator), torch.randn(4, 3, generator=generator)
        for m, o in ((model, opt), (plain, ref)):
            torch.nn.functional.mse_loss(m(x), y).backward()
            o.step()
            o.zero_grad()
    failures = [f"FSDP2 {name}: {key}" for key, value in plain.state_dict().items()
                if not torch.equal(model.state_dict()[key].full_tensor(), value)]
    reloaded = getattr(fastoptim, name)(model.parameters(), lr=1e-2)
    set_optimizer_state_dict(model, reloaded, get_optimizer_state_dict(model, opt))
    for p in model.parameters():
        if any(not torch.equal(local_of(v), local_of(reloaded.state[p][k])) for k, v in opt.state[p].items()):
            failures.append(f"FSDP2 {name}: the state of {tuple(p.shape)} after get/set_optimizer_state_dict")
    return failures


def local_of(t):
    return t.to_local() if isinstance(t, torch.distributed.tensor.DTensor) else t


def main():
    rank, world, store, report = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    failures, runs = [], []
    for name in OPTIMIZERS:
        opt = make_rich(name, make_params([(2, 2)], torch.float32))
        if not isinstance(opt, fastoptim._base.FusedOptimizer):
            continue  # (wrappers and the Hessian-diagonal optimizers: not yet)
        whole = any(opt._steps_whole_tensors(group) for group in opt.param_groups)
        for placement in [Replicate()] if whole else [Shard(0), Shard(1), Replicate()]:
            failures += run(name, placement, mesh)
            runs.append(f"{name} {placement}")
    for name in ("AdamW", "Lion", "ADOPT", "NAdam", "Muon"):
        failures += fsdp2(name, mesh)
        runs.append(f"FSDP2 {name}")
    if rank == 0:
        Path(report).write_text("\n".join([f"{len(runs)} runs: {', '.join(runs)}", *failures]))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
