"""One rank of tests/python/test_dtensor.py's two-process run (gloo on the CPU):

    python dtensor_worker.py <rank> <world size> <store file> <report file>

Every optimizer of the catalogue that steps without a closure of its own steps DTensor parameters
(Shard(0), Shard(1) with uneven shards, Replicate) beside the same parameters unsharded, 20 steps (the
Hessian-diagonal ones folding in stand-in estimates; and refreshing their own estimates on a
column-parallel layer); the
full tensors of the parameters and of every state tensor must equal the unsharded run's bit for bit,
also after a state-dict round trip, or within 1e-6 relative where the step adds up per-tensor sums
across the shards (LAMB, LARS, RaLars, TAdam: the same sums, added in another order), as must a
global gradient-norm clip (max_grad_norm) of sharded gradients; so do the wrappers around AdamW
(Scout within 1e-6: its coherence sums over each tensor). Optimizers whose step needs rows of
each tensor whole take Replicate only (none now), those that work row by row Shard(0) too (AMaC, and
AdamP, which combines its rows' summary across shards: within 1e-6); their refusal of other shards is
tested in one process. Adafactor's matrices add up across shards what their factors need (3-d ones
too: shards of slices, of rows, of columns, some empty), within 1e-6. Then a model under FSDP2's fully_shard trains as
the unsharded one does, and its optimizer state goes through torch.distributed.checkpoint's
get/set_optimizer_state_dict; a transformer block under FSDP2 trains with fastoptim.AdamW as with
torch.optim.AdamW; and a run saved by torch.distributed.checkpoint at step 10 resumes bit for bit. Rank 0 writes the runs on the report's first
line and the failures, one per line, after it."""

import copy
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import (OPTIMIZERS, folds_apart, make_params, make_rich, noise_grads, own_rule_steppers, rule_class,  # noqa: E402
                       rule_optimizer, takes_state_bits, without_radial_part)

import fastoptim  # noqa: E402

SHAPES = [(8, 6), (7, 5), (16,), (5,)]


def placements_of(shape, placement):
    return [Shard(0)] if isinstance(placement, Shard) and len(shape) == 1 else [placement]


# The wrappers, around AdamW, each with a period short enough to act several times in 20 steps.
WRAPPERS = {
    "Lookahead": lambda ps: fastoptim.Lookahead(fastoptim.AdamW(ps, lr=1e-2), sync_period=3),
    "Scout": lambda ps: fastoptim.Scout(fastoptim.AdamW(ps, lr=1e-2), sync_period=3),
    "EMA": lambda ps: fastoptim.EMA(fastoptim.AdamW(ps, lr=1e-2), decay=0.9),
    "SWA": lambda ps: fastoptim.SWA(fastoptim.AdamW(ps, lr=1e-2), swa_start=4, swa_freq=2),
}


def run(name, placement, mesh, exact=True, make=None, dtype=torch.float32, grads_of=noise_grads, shapes=SHAPES, **options):
    """20 steps of `name` (built by `make`, or with its record's rich options and `options`) on
    DTensors of `placement` and `dtype` and `shapes` beside the same unsharded, with the gradients
    grads_of(unsharded params, step); `exact`: bit for bit, else within 1e-6."""
    make = make or (lambda ps: make_rich(name, ps, **options))
    params = make_params(shapes, dtype)
    plain = [p.detach().clone().requires_grad_() for p in params]
    dparams = [torch.nn.Parameter(distribute_tensor(p.detach().clone(), mesh, placements_of(p.shape, placement)))
               for p in params]
    opt, ref = make(dparams), make(plain)
    for step in range(20):
        grads = grads_of([q.detach() for q in plain], step)
        for p, q, g in zip(dparams, plain, grads):
            p.grad = distribute_tensor(g.clone(), mesh, list(p.placements))
            q.grad = g.clone()
        opt.step()
        ref.step()
        if step == 9:  # a state-dict round trip, as a checkpoint of the sharded run
            saved = copy.deepcopy(opt.state_dict())
            opt = make(dparams)
            opt.load_state_dict(saved)
    same = torch.equal if exact else close
    label = (f"{name}{' ' + str(options) if options else ''} {placement}{'' if dtype == torch.float32 else ' ' + str(dtype)}"
             f"{'' if shapes is SHAPES else ' ' + str(shapes)}")
    failures = []
    for i, (p, q) in enumerate(zip(dparams, plain)):
        if not same(p.full_tensor(), q.detach()):
            failures.append(f"{label}: parameter {i} {tuple(q.shape)}")
        for key, value in ref.state[q].items():
            mine = opt.state[p][key]
            mine = mine.full_tensor() if isinstance(mine, torch.distributed.tensor.DTensor) else mine
            if not same(mine, value):
                failures.append(f"{label}: state {key!r} of parameter {i}")
    return failures


def close(a, b):
    """Equal within 1e-6 of b's largest magnitude (a step count: exactly)."""
    a, b = a.double().flatten(), b.double().flatten()
    return a.shape == b.shape and bool(torch.all((a - b).abs() <= 1e-6 * b.abs().max())) if b.numel() else a.shape == b.shape


def eight_bit(name, placement, mesh, steps=6):
    """`name` with state_bits=8 on DTensors of `placement` (each shard quantized on its own, in blocks
    from its first element): each step is the full-precision sharded step from the same state decoded
    (a state_bits=None optimizer loaded from the 8-bit one's state dict), whose new state, encoded
    shard by shard (an 8-bit optimizer loaded from its state dict), is the 8-bit state: bit for bit.
    Shards of several blocks and a partial one, beside SHAPES' one-block shards. A Hessian-diagonal
    optimizer's folds (of the gradients, update_hessian: the hessian_ema op on codes) are actions of their
    own before each step, checked as the steps are; its steps then refresh nothing."""
    params = make_params(SHAPES + [(300, 7), (513,)], torch.float32)
    dparams = [torch.nn.Parameter(distribute_tensor(p.detach().clone(), mesh, placements_of(p.shape, placement)))
               for p in params]
    opt = folds_apart(make_rich(name, dparams, state_bits=8))
    actions = [("step", lambda o: o.step())]
    if "hessian_clock" in rule_optimizer(opt).param_groups[0]:
        actions.insert(0, ("fold", lambda o: rule_optimizer(o).update_hessian()))
    failures = []
    for step in range(steps):
        copies = [torch.nn.Parameter(p.detach().clone()) for p in dparams]
        for p, q, g in zip(dparams, copies, noise_grads(params, step)):
            p.grad = distribute_tensor(g, mesh, list(p.placements))
            q.grad = p.grad.clone()
        for action, act in actions:
            wide = folds_apart(make_rich(name, copies))
            if rule_optimizer(opt).state:
                wide.load_state_dict(copy.deepcopy(opt.state_dict()))  # (decoded shard by shard)
            act(opt)
            act(wide)
            encoded = make_rich(name, copies, state_bits=8)
            encoded.load_state_dict(copy.deepcopy(wide.state_dict()))  # (encoded shard by shard)
            for i, (p, q) in enumerate(zip(dparams, copies)):
                if not torch.equal(p.full_tensor(), q.full_tensor()):
                    failures.append(f"{name} state_bits=8 {placement} {action} {step}: parameter {i}")
                for key, value in rule_optimizer(opt).state[p].items():
                    if not torch.equal(local_of(value), local_of(rule_optimizer(encoded).state[q][key])):
                        failures.append(f"{name} state_bits=8 {placement} {action} {step}: state {key!r} of parameter {i}")
    return failures


def own_estimates(name, mesh):
    """`name` refreshing its own estimates (step(closure), every other step: Hutchinson's, or for
    SophiaG the gradient at labels sampled from the logits) on a column-parallel layer, x W + b with
    W Shard(1) and b Shard(0), beside the same layer unsharded, 6 steps: bit for bit (each shard's
    probe is its part of the whole tensor's)."""
    torch.manual_seed(0)
    w, b, x = torch.randn(6, 8, dtype=torch.float64), torch.randn(8, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    plain = [w.clone().requires_grad_(), b.clone().requires_grad_()]
    sharded = [torch.nn.Parameter(distribute_tensor(w.clone(), mesh, [Shard(1)])),
               torch.nn.Parameter(distribute_tensor(b.clone(), mesh, [Shard(0)]))]
    period = "update_period" if name == "AdaHessian" else "hessian_update_interval"
    opt, ref = (getattr(fastoptim, name)(ps, lr=1e-2, seed=3, **{period: 2}) for ps in (sharded, plain))

    def closure(o, ps, inputs):
        o.zero_grad()
        logits = inputs @ ps[0] + ps[1]
        logits = logits.full_tensor() if isinstance(logits, torch.distributed.tensor.DTensor) else logits
        loss = (torch.tanh(logits) ** 2).sum()
        return (loss, logits) if name == "SophiaG" else loss

    x_replicated = distribute_tensor(x, mesh, [Replicate()])
    for _ in range(6):
        opt.step(lambda: closure(opt, sharded, x_replicated))
        ref.step(lambda: closure(ref, plain, x))
    failures = [f"{name} own estimates: parameter {i}" for i, (p, q) in enumerate(zip(sharded, plain))
                if not torch.equal(p.full_tensor(), q.detach())]
    key = opt.hessian_key
    if not torch.equal(opt.state[sharded[0]][key].full_tensor(), ref.state[plain[0]][key]):
        failures.append(f"{name} own estimates: state {key!r}")
    if torch.equal(plain[0].detach(), w) or not ref.state[plain[0]][key].count_nonzero():
        failures.append(f"{name} own estimates: the steps did not move the weights or estimate anything")
    return failures


def fsdp2(name, mesh, exact=True):
    """A small MLP under FSDP2's fully_shard (every Linear and the model), trained 5 steps on the same
    batches on every rank, beside the same MLP unsharded (bit for bit, or within 1e-6 for a step that
    adds up sums across shards); then the optimizer's sharded state dict through
    torch.distributed.checkpoint's get/set_optimizer_state_dict into a new optimizer."""
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
    same = torch.equal if exact else close
    failures = [f"FSDP2 {name}: {key}" for key, value in plain.state_dict().items()
                if not same(model.state_dict()[key].full_tensor(), value)]
    reloaded = getattr(fastoptim, name)(model.parameters(), lr=1e-2)
    set_optimizer_state_dict(model, reloaded, get_optimizer_state_dict(model, opt))
    for p in model.parameters():
        if any(not torch.equal(local_of(v), local_of(reloaded.state[p][k])) for k, v in opt.state[p].items()):
            failures.append(f"FSDP2 {name}: the state of {tuple(p.shape)} after get/set_optimizer_state_dict")
    return failures


def fsdp2_hessian_is_refused(name, mesh):
    """A Hessian refresh cannot reach parameters under FSDP2's fully_shard (its forward runs on
    gathered copies; it does not support a double backward): Hutchinson's by step(closure) or after
    backward(create_graph=True), and SophiaG's sampled-label gradient, raise, naming the way round,
    before the parameters or the state change."""
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    for layer in (model[0], model[2], model):
        fully_shard(layer, mesh=mesh)
    before = [p.full_tensor() for p in model.parameters()]
    x, y = torch.randn(4, 8), torch.randn(4, 3)
    failures = []
    for driver in ("closure",) if name == "SophiaG" else ("closure", "create_graph"):
        opt = getattr(fastoptim, name)(model.parameters(), lr=1e-2)
        try:
            if name == "SophiaG":  # (its Gauss-Newton-Bartlett estimate: the gradient of a sampled loss)
                opt.step(lambda: (torch.nn.functional.cross_entropy(model(x), y.argmax(dim=1)), model(x)))
            elif driver == "closure":
                opt.step(lambda: torch.nn.functional.mse_loss(model(x), y))
            else:
                torch.nn.functional.mse_loss(model(x), y).backward(create_graph=True)
                opt.step()
            failures.append(f"FSDP2 {name} refresh ({driver}): no error")
        except RuntimeError as error:
            if "outside the loss's graph is what FSDP2's fully_shard makes" not in str(error):
                failures.append(f"FSDP2 {name} refresh ({driver}): {error}")
        model.zero_grad()
        if opt.state or any(not torch.equal(p.full_tensor(), b) for p, b in zip(model.parameters(), before)):
            failures.append(f"FSDP2 {name} refresh ({driver}): the refused step changed something")
    return failures


def transformer_block(seed):
    """A small transformer block (attention, MLP, layer norms; no dropout; no biases, as LLaMA-style
    blocks: the key projection's bias has a zero gradient up to rounding, which Adam turns into
    updates of the size of lr, so two implementations part there by rounding alone)."""
    torch.manual_seed(seed)
    return torch.nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True, bias=False)


def batches(count, first=0):
    for step in range(first, count):
        generator = torch.Generator().manual_seed(1000 + step)
        yield torch.randn(3, 5, 16, generator=generator), torch.randn(3, 5, 16, generator=generator)


def train(model, opt, steps, first=0):
    for x, y in batches(steps, first):
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()


def fsdp2_transformer_against_torch(mesh):
    """A transformer block under FSDP2 trained 20 steps with fastoptim.AdamW beside the same block
    under FSDP2 with torch.optim.AdamW: the same weights within 1e-6 of their largest magnitude (torch's
    AdamW is not bit-identical to a fused one; measured: 1.2e-7 at most)."""
    from torch.distributed.fsdp import fully_shard

    failures = []
    ours, theirs = transformer_block(0), transformer_block(0)
    for model in (ours, theirs):
        fully_shard(model, mesh=mesh)
    train(ours, fastoptim.AdamW(ours.parameters(), lr=1e-2, weight_decay=0.1), 20)
    train(theirs, torch.optim.AdamW(theirs.parameters(), lr=1e-2, weight_decay=0.1), 20)
    moved = False
    for (key, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        a, b = a.full_tensor(), b.full_tensor()
        moved = moved or not torch.equal(a, transformer_block(0).state_dict()[key])
        if not torch.allclose(a, b, rtol=0, atol=1e-6 * float(b.abs().max())):
            failures.append(f"FSDP2 transformer AdamW against torch.optim.AdamW: {key} differs by "
                            f"{float((a - b).abs().max()):.3g}")
    return failures if moved else ["FSDP2 transformer: training did not move the weights"]


def checkpoint_resume(name, mesh, folder, **options):
    """A transformer block under FSDP2 trained with `name`: saved with torch.distributed.checkpoint at
    step 10 (model and optimizer, get_state_dict), loaded into a new model and optimizer
    (set_state_dict), trained on to step 20: bit for bit the run that never stopped."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.fsdp import fully_shard

    def fresh():
        model = transformer_block(0)
        fully_shard(model, mesh=mesh)
        return model, getattr(fastoptim, name)(model.parameters(), lr=1e-2, weight_decay=0.1, **options)

    model, opt = fresh()
    train(model, opt, 10)
    model_state, opt_state = get_state_dict(model, opt)
    dcp.save({"model": model_state, "optim": opt_state}, checkpoint_id=str(folder))
    train(model, opt, 20, first=10)

    resumed, resumed_opt = fresh()
    model_state, opt_state = get_state_dict(resumed, resumed_opt)
    state = {"model": model_state, "optim": opt_state}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(resumed, resumed_opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    train(resumed, resumed_opt, 20, first=10)
    return [f"DCP resume {name}: {key}" for (key, a), b in zip(model.state_dict().items(), resumed.state_dict().values())
            if not torch.equal(a.to_local(), b.to_local())]


def local_of(t):
    return t.to_local() if isinstance(t, torch.distributed.tensor.DTensor) else t


def main():
    rank, world, store, report = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    failures, runs = [], []
    for name in OPTIMIZERS:  # (the Hessian-diagonal ones fold in stand-in estimates of the gradients: make_rich)
        opt = rule_optimizer(make_rich(name, make_params([(2, 2)], torch.float32)))
        whole = any(opt._steps_whole_tensors(group) for group in opt.param_groups)
        adds_up = opt._rule_of(opt.param_groups[0]).shard_sums  # (the same sums, added in another order)
        placements = [Shard(0), Shard(1), Replicate()]
        if whole:
            placements = [Replicate()]
        elif opt._rule_of(opt.param_groups[0]).per_row:  # (row by row, AMaC and AdamP: shards of whole rows)
            placements = [Shard(0), Replicate()]
        for placement in placements:
            failures += run(name, placement, mesh, exact=not (adds_up and isinstance(placement, Shard)))
            runs.append(f"{name} {placement}")
    for name in ("AdamW", "Lion"):  # bf16 stored by stochastic rounding: bits keyed by the whole tensor's elements
        for placement in (Shard(0), Replicate()):
            make = lambda ps, name=name: make_rich(name, [{"params": ps, "rounding_seed": 5}], stochastic_rounding=True)  # noqa: E731
            failures += run(f"{name} stochastic_rounding", placement, mesh, make=make, dtype=torch.bfloat16)
            runs.append(f"{name} stochastic_rounding {placement}")
    for placement in (Shard(0), Shard(1), Shard(2)):  # Adafactor's factors of slices cut, rows cut, columns cut
        # (and shards with no slices or no rows: (1, 6, 7) on Shard(0), (2, 1, 3) on Shard(1))
        failures += run("Adafactor", placement, mesh, exact=False, shapes=[(3, 4, 5), (1, 6, 7), (2, 1, 3)])
        runs.append(f"Adafactor 3-d {placement}")
    # (those stepping on a rule of their own: a wrapper, SophiaOptim, passes state_bits to the one it wraps)
    for name in own_rule_steppers([name for name in OPTIMIZERS if takes_state_bits(name)]):
        # (a per-row rule, AdamP or AMaC, steps shards of whole rows only: its blocks restart at each row)
        per_row = fastoptim._base.rule_named(rule_class(name).rule).per_row
        for placement in (Shard(0), Replicate() if per_row else Shard(1)):
            failures += eight_bit(name, placement, mesh)
            runs.append(f"{name} state_bits=8 {placement}")
    for view in ("channel", "layer"):  # AdamP's projections, which need the rows' summary of every shard
        grads_of = lambda ps, step, rows=view == "channel": without_radial_part(ps, step, rows)  # noqa: E731
        failures += run("AdamP", Shard(0), mesh, exact=False, grads_of=grads_of)
        runs.append(f"AdamP {view} view {Shard(0)}")
    for name in ("LAMB", "Adan"):  # a global gradient-norm clip: the norm of the whole gradients
        failures += run(name, Shard(0), mesh, exact=False, max_grad_norm=0.5)
        runs.append(f"{name} max_grad_norm {Shard(0)}")
    for name, make in WRAPPERS.items():  # (Scout's coherence: sums over each tensor)
        for placement in (Shard(0), Shard(1)):
            failures += run(name, placement, mesh, exact=name != "Scout", make=make)
            runs.append(f"{name}(AdamW) {placement}")
    for name in ("SophiaH", "AdaHessian", "SophiaG"):
        failures += own_estimates(name, mesh)
        runs.append(f"{name} own estimates")
    for name in ("AdamW", "Lion", "ADOPT", "NAdam", "Muon", "Adafactor"):
        failures += fsdp2(name, mesh, exact=name != "Adafactor")
        runs.append(f"FSDP2 {name}")
    for name in ("SophiaH", "AdaHessian", "SophiaG"):
        failures += fsdp2_hessian_is_refused(name, mesh)
        runs.append(f"FSDP2 {name} refresh refused")
    failures += fsdp2_transformer_against_torch(mesh)
    runs.append("FSDP2 transformer AdamW = torch.optim.AdamW")
    for name, options in [("AdamW", {}), ("LAMB", {}), ("Adafactor", {}), ("AdamW", {"state_bits": 8})]:
        # (Adafactor: factors replicated along the dim they collapse; 8-bit: a row of block scales per shard)
        failures += checkpoint_resume(name, mesh, Path(report).parent / f"checkpoint-{name}{len(options)}", **options)
        runs.append(f"DCP resume {name}{''.join(f' {k}={v}' for k, v in options.items())}")
    if rank == 0:
        Path(report).write_text("\n".join([f"{len(runs)} runs: {', '.join(runs)}", *failures]))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
