"""fastoptim against torch.optim (foreach=False, foreach=True, fused=True) on three workloads.

  (A) one 16M-element tensor   (B) 2000 tensors of 4096   (C) GPT-2-small-like: 148 tensors, 124.4M elements

Reports per optimizer and implementation: ms/step (median over interleaved rounds), GB/s under the
byte model below, the fraction of two ceilings measured in the same rounds by ceiling.c (a STREAM
triad and the in-place 7-stream pattern an optimizer step has; each round takes the best of 20
runs), and fastoptim's speed-up over the best torch peer. A fraction is taken per round, against
that round's ceiling, and the table gives its median over rounds: the machine's bandwidth drifts
between rounds, and a time and a ceiling from different phases of it would not compare.
Patterns with fewer write streams (SGD, Adagrad, RMSprop: 5 streams) can exceed the 7-stream ceiling.
"of own pattern" is a third ceiling: ceiling.c running the optimizer's own passes (PATTERNS below:
the arrays each pass reads and writes, with its sums) as plain FMA loops. It tells how much of a
gap to the in-place ceiling is the access pattern's (two passes, fewer streams a pass) and how much
is the kernel's. The issue targets stay stated against the in-place ceiling.

Byte model (per element, fp32 params; bf16 params and state halve it): every array the step reads
plus every array it writes. AdamW/Adam/AdaBelief: read p, g, m, v; write p, m, v = 28 B. SGD
(momentum, Nesterov), Adagrad, RMSprop: read p, g, one state; write p, state = 20 B. AdEMAMix: read
p, g, m1, m2, v; write p, m1, m2, v = 36 B. Adan: read p, g, m, d, n, g_prev; write all but g = 44 B.
LAMB and RaLars, two passes: read p, g, m, v and write m, v; then read p, m, v and write p = 40 B.
AdamP likewise on matrices (pass 1 also takes the per-channel sums) = 40 B; its vectors, which it
never projects, take one pass, as AdamW = 28 B (so (A) and (B) are 28 B, (C) 28 or 40 per tensor). LARS (momentum 0.9), two passes:
read p, g; then read p, g, b and write p, b = 28 B. TAdam, two passes: read g, m, v; then read p, g,
m, v and write p, m, v = 40 B. SophiaG between refreshes: read p, g, m, h; write p, m = 24 B (its
"fastoptim AdamW" row, the same tensors stepped by AdamW, is counted at AdamW's 28 B). Lion: read p, g,
m; write p, m = 20 B. NAdam, RAdam, Adamax, Adadelta (two state arrays) and Rprop (prev, step_size):
28 B, as AdamW; so are ADOPT and AdamWScheduleFree (read p, g, z, v; write p, z, v). SGDScheduleFree: read p, g, z;
write p, z = 20 B. ASGD (t0=0, so it averages from the second step): read p, g, ax; write p, ax = 20 B.

Peers: torch.optim's implementations for torch.optim's optimizers; for Lion, pytorch_optimizer's and timm's,
each with and without foreach; for ADOPT, pytorch_optimizer's with and without foreach; for
the Schedule-Free pair, the schedulefree package's with and without foreach; for holocron's set, holocron.optim
(pylocron), pytorch_optimizer with and without foreach, timm with and without foreach (LAMB, LARS,
AdaBelief, Adan; its AdamP has no foreach), and the official package where there is one
(adabelief-pytorch, adamp), each in its closest configuration to fastoptim's (RaLars:
pytorch_optimizer's Lamb with rectify=True; TAdam has no pytorch_optimizer peer; RaLars, TAdam and
AdEMAMix have no timm peer).

Each round runs the ceiling program, then every implementation (in an order rotated each round), so
a drift in the machine's bandwidth hits all of them alike.

    python bench/bench.py                      # everything (tens of minutes on 2 cores)
    python bench/bench.py --workloads A B --optimizers AdamW --dtypes fp32 --rounds 5
    python bench/bench.py --device cuda        # on the GPU (a fastoptim built with its CUDA ops)

On a GPU (--device cuda) the ceiling is the device's copy bandwidth, measured in each round (a copy of
a 256M-element float32 tensor: 2 x 1 GiB moved, the best of 20, timed with CUDA events), and a step
is timed between two synchronisations; the peers are torch's (fused=True where torch has a fused
CUDA step) and, where installed, the packages' (a peer whose package is missing is left out and
named).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import inspect
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import fastoptim
from fastoptim.records import RECORDS

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

# Each optimizer's passes over a tensor, "R/W" each (read R arrays, write W of them in place), joined
# by "+": the byte model above, in the form ceiling.c runs it (the records' patterns). AdamP's
# vectors take "4/3" (pattern()).
PATTERNS = {r.name: r.pattern for r in RECORDS if r.pattern}
VECTOR_PATTERNS = {r.name: r.vector_pattern for r in RECORDS if r.vector_pattern}


def pattern_streams(pattern: str) -> int:
    return sum(int(reads) + int(writes) for reads, writes in (p.split("/") for p in pattern.split("+")))


STREAMS = {name: pattern_streams(pattern) for name, pattern in PATTERNS.items()}
CONFIG = {r.name: r.bench for r in RECORDS if r.bench is not None}
HOLOCRON_SET = {r.name for r in RECORDS if r.family == "holocron.optim"}
# optimizers torch.optim and holocron lack: their peers are pytorch_optimizer's and timm's
OTHER_PEERS_SET = {r.name for r in RECORDS if r.family == "pytorch_optimizer"}
# the schedulefree package's optimizers: their peers are that package's classes
SCHEDULEFREE_SET = {r.name for r in RECORDS if r.family == "schedulefree"}
# pytorch_optimizer's class and extra options where they differ from fastoptim's name (None: no peer there)
KOZISTR = {"LAMB": ("Lamb", {}), "RaLars": ("Lamb", dict(rectify=True)), "TAdam": None}
# torch.optim classes with a fused CPU path
HAS_FUSED = {r.name for r in RECORDS if r.torch_reference
             and "fused" in inspect.signature(getattr(torch.optim, r.torch_reference)).parameters}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def pattern(name: str, param) -> str:
    """`name`'s passes over `param` (AdamP's vectors take one pass, its matrices two)."""
    if param.dim() <= 1 and name in VECTOR_PATTERNS:
        return VECTOR_PATTERNS[name]
    return PATTERNS[name]


def gpt2_small_shapes():
    d, vocab, ctx, layers = 768, 50257, 1024, 12
    shapes = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


WORKLOADS = {
    "A": ("one 16M-element tensor", [(16 * 1024 * 1024,)]),
    "B": ("2000 tensors of 4096", [(4096,)] * 2000),
    "C": ("GPT-2-small-like, 148 tensors", gpt2_small_shapes()),
}


def build_ceiling() -> Path:
    OUT.mkdir(exist_ok=True)
    exe = OUT / "ceiling"
    if not exe.exists() or exe.stat().st_mtime < (HERE / "ceiling.c").stat().st_mtime:
        subprocess.run(["cc", "-O3", "-march=native", "-fopenmp", "-o", str(exe), str(HERE / "ceiling.c")], check=True)
    return exe


def measure_ceiling(exe: Path, threads: int, element_patterns: dict[str, int]) -> tuple[float, float, float]:
    """The triad, in-place and own-pattern ceilings in GB/s. With several patterns (AdamP's vectors
    and matrices), the own-pattern ceiling is the rate at which each pattern's bytes, run at its own
    ceiling, add up: total bytes over the sum of bytes / ceiling."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    # 16M elements per array, the size of workload (A); larger arrays measured lower here (44 vs 51 GB/s).
    triad = inplace = None
    seconds_per_element = 0.0
    for pattern_name, elements in element_patterns.items():
        out = subprocess.run([str(exe), str(1 << 24), "20", pattern_name], capture_output=True, text=True, check=True,
                             env=env).stdout
        round_triad, round_inplace, own = map(float, out.split()[:3])
        triad, inplace = triad or round_triad, inplace or round_inplace
        seconds_per_element += elements * pattern_streams(pattern_name) / own
    total = sum(elements * pattern_streams(p) for p, elements in element_patterns.items())
    return triad, inplace, total / seconds_per_element


def import_past_inits(module: str, *packages: str):
    """Imports `module` with the __init__.py of each of `packages` (outermost first) left unrun: each
    is replaced by an empty package on its directory. holocron's and timm's __init__ import
    torchvision (and timm's PIL), which cannot be installed beside this torch; their optimizers need
    only torch."""
    import importlib
    import importlib.util
    import types

    for package in packages:
        if package in sys.modules:
            continue
        parent, _, leaf = package.rpartition(".")
        if parent:
            path = [os.path.join(sys.modules[parent].__path__[0], leaf)]
        else:
            path = list(importlib.util.find_spec(package).submodule_search_locations)
        stub = types.ModuleType(package)
        stub.__path__ = path
        sys.modules[package] = stub
    return importlib.import_module(module)


def holocron_optim():
    return import_past_inits("holocron.optim", "holocron")


def timm_optim(module: str):
    return import_past_inits(f"timm.optim.{module}", "timm", "timm.optim")


# timm's module, class and options that make it do the same work as fastoptim's step, and whether it
# has a foreach implementation. timm's Lamb and Lars skip the trust ratio where weight_decay is 0
# unless always_adapt; its Lamb clips by the global gradient norm unless max_grad_norm is None.
TIMM = {
    "LAMB": ("lamb", "Lamb", dict(eps=1e-8, weight_decay=0.0, max_grad_norm=None, always_adapt=True), True),
    "LARS": ("lars", "Lars", dict(always_adapt=True), True),
    "AdamP": ("adamp", "AdamP", {}, False),
    "AdaBelief": ("adabelief", "AdaBelief", dict(eps=1e-8, decoupled_decay=False, rectify=False), True),
    "Adan": ("adan", "Adan", {}, True),
    "Lion": ("lion", "Lion", {}, True),
}


def peer_implementations(name: str, params):
    import pytorch_optimizer

    cfg = CONFIG[name]
    peers = {"holocron": getattr(holocron_optim(), name)(params, **cfg)} if name in HOLOCRON_SET else {}
    kozistr = KOZISTR.get(name, (name, {}))
    if kozistr is not None:
        cls, extra = getattr(pytorch_optimizer, kozistr[0]), kozistr[1]
        peers["pytorch_optimizer foreach=False"] = cls(params, **cfg, **extra, foreach=False)
        peers["pytorch_optimizer foreach=True"] = cls(params, **cfg, **extra, foreach=True)
    if name == "AdamP":
        import adamp

        peers["adamp (official)"] = adamp.AdamP(params, **cfg)
    if name == "AdaBelief":
        from adabelief_pytorch import AdaBelief

        peers["adabelief-pytorch"] = AdaBelief(params, **cfg, eps=1e-8, weight_decouple=False, rectify=False, print_change_log=False)
    if name in TIMM:
        module, cls, extra, has_foreach = TIMM[name]
        cls = getattr(timm_optim(module), cls)
        for foreach in (False, True) if has_foreach else (None,):
            label = "timm" if foreach is None else f"timm foreach={foreach}"
            peers[label] = cls(params, **cfg, **extra, **({} if foreach is None else dict(foreach=foreach)))
    return peers


def sophia_implementations(params):
    """Sophia's step between refreshes: fastoptim's SophiaG (its closure-less step never refreshes),
    fastoptim's AdamW on the same tensors (the issue's yardstick), and pytorch_optimizer's SophiaH
    given one estimate on its first step and no refresh after (update_period beyond the run)."""
    import pytorch_optimizer

    impls = {"fastoptim": fastoptim.SophiaG(params, **CONFIG["SophiaG"]), "fastoptim AdamW": fastoptim.AdamW(params, lr=1e-3)}
    for foreach in (False, True):
        peer = pytorch_optimizer.SophiaH(params, lr=1e-3, update_period=10**9, foreach=foreach)
        peer.step(hessian=[torch.ones_like(p) for p in params])
        impls[f"pytorch_optimizer SophiaH foreach={foreach}"] = peer
    return impls


def implementations(name: str, params, peers: bool = True):
    if name == "SophiaG" and peers:
        return sophia_implementations(params)
    impls = {"fastoptim": getattr(fastoptim, name)(params, **CONFIG[name])}
    if not peers:
        return impls
    if name in HOLOCRON_SET or name in OTHER_PEERS_SET:
        return {**impls, **peer_implementations(name, params)}
    if name in SCHEDULEFREE_SET:
        import schedulefree

        for foreach in (False, True):
            impls[f"schedulefree foreach={foreach}"] = peer = getattr(schedulefree, name)(params, **CONFIG[name], foreach=foreach)
            peer.train()  # (it refuses to step in its initial eval mode)
        return impls
    cls = getattr(torch.optim, name)
    impls["torch foreach=False"] = cls(params, **CONFIG[name], foreach=False)
    impls["torch foreach=True"] = cls(params, **CONFIG[name], foreach=True)
    if name in HAS_FUSED:
        try:
            impls["torch fused=True"] = cls(params, **CONFIG[name], fused=True)
        except RuntimeError as error:  # (torch's fused Adagrad is CPU-only)
            print(f"  ({name}: torch fused=True left out: {error})", flush=True)
    return impls


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(opt, steps: int, device: str = "cpu") -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def device_copy_bandwidth() -> float:
    """The GPU's copy bandwidth in GB/s (bytes read plus bytes written): the best of 20 copies of a
    256M-element float32 tensor, timed with CUDA events."""
    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda").fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(20):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        best = min(best, begin.elapsed_time(end) / 1e3)
    return 2 * src.numel() * src.element_size() / best / 1e9


def gpu_line() -> str:
    props = torch.cuda.get_device_properties(0)
    return (f"{props.name}, {props.total_memory / 2**30:.0f} GiB; torch {torch.__version__} (CUDA {torch.version.cuda}); "
            f"fastoptim CUDA ops: {fastoptim._C.cuda_ops}; {datetime.date.today()}")


def run_on_gpu(args) -> None:
    """The bench on the GPU: ms/step, GB/s under the byte model, the fraction of the copy bandwidth
    measured in each round, and fastoptim's speed-up over the fastest peer."""
    print(f"machine: {gpu_line()}", flush=True)
    print("| workload | dtype | optimizer | implementation | ms/step | GB/s | of copy bandwidth | fastoptim speed-up |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for wl in args.workloads:
        _, shapes = WORKLOADS[wl]
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            params = [torch.nn.Parameter(torch.randn(s, dtype=dtype, device="cuda")) for s in shapes]
            for p in params:
                p.grad = torch.randn_like(p) * 1e-3
            itemsize = params[0].element_size()
            for name in args.optimizers:
                streams = sum(pattern_streams(pattern(name, p)) * p.numel() for p in params)
                try:
                    impls = implementations(name, params, peers=not args.no_peers)
                except ImportError as error:
                    print(f"  ({name}: peers left out, {error}; fastoptim alone)", flush=True)
                    impls = implementations(name, params, peers=False)
                steps = {}
                for label, opt in impls.items():  # warm-up: creates state, sizes each round
                    opt.step()
                    steps[label] = max(5, min(200, round(args.seconds / max(time_steps(opt, 1, "cuda"), 1e-6))))
                times = {label: [] for label in impls}
                ceilings = []
                labels = list(impls)
                for round_index in range(args.rounds):
                    ceilings.append(device_copy_bandwidth())
                    shift = round_index % len(labels)
                    for label in labels[shift:] + labels[:shift]:
                        times[label].append(time_steps(impls[label], steps[label], "cuda"))
                nbytes = {label: (STREAMS["AdamW"] * sum(p.numel() for p in params) if label == "fastoptim AdamW" else streams)
                          * itemsize for label in impls}
                ms = {label: statistics.median(t) * 1e3 for label, t in times.items()}
                best_peer = min((v for k, v in ms.items() if not k.startswith("fastoptim")), default=None)
                for label, value in ms.items():
                    fraction = statistics.median(nbytes[label] / t / 1e9 / c for t, c in zip(times[label], ceilings))
                    ratio = f"{best_peer / value:.2f}x" if label == "fastoptim" and best_peer else ""
                    print(f"| {wl} | {dtype_name} | {name} | {label} | {value:.3f} | {nbytes[label] / value / 1e6:.0f} | "
                          f"{fraction:.2f} | {ratio} |", flush=True)
                print(f"| {wl} | {dtype_name} | {name} | copy bandwidth (median) | | {statistics.median(ceilings):.0f} | | |",
                      flush=True)
                del impls
            del params


def machine_line(threads: int) -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {threads} threads; torch {torch.__version__}; "
            f"fastoptim kernels: {fastoptim._C.isa()}; {datetime.date.today()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    ap.add_argument("--optimizers", nargs="+", default=[n for n in STREAMS if n not in HOLOCRON_SET], choices=list(STREAMS),
                    help="default: the classic five; holocron's set needs requirements-references.txt installed")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.4, help="time per implementation per round")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-peers", action="store_true",
                    help="time fastoptim alone (to compare two builds of it, run A B A B ... with each installed in turn)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = ap.parse_args()
    if args.device == "cuda":
        return run_on_gpu(args)
    torch.set_num_threads(args.threads)
    exe = build_ceiling()
    print(f"machine: {machine_line(args.threads)}", flush=True)
    print("| workload | dtype | optimizer | implementation | ms/step | GB/s | of triad | of in-place | of own pattern "
          "| fastoptim speed-up |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for wl in args.workloads:
        _, shapes = WORKLOADS[wl]
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            params = [torch.nn.Parameter(torch.randn(s, dtype=dtype)) for s in shapes]
            for p in params:
                p.grad = torch.randn_like(p) * 1e-3
            elements = sum(p.numel() for p in params)
            itemsize = params[0].element_size()
            for name in args.optimizers:
                element_patterns = collections.Counter()  # elements per pattern
                for p in params:
                    element_patterns[pattern(name, p)] += p.numel()
                element_streams = sum(pattern_streams(p) * elements for p, elements in element_patterns.items())
                impls = implementations(name, params, peers=not args.no_peers)
                steps = {}
                for label, opt in impls.items():  # warm-up: creates state, sizes each round
                    opt.step()
                    steps[label] = max(2, min(50, round(args.seconds / max(time_steps(opt, 1), 1e-6))))
                times = {label: [] for label in impls}
                ceilings = []
                labels = list(impls)
                for round_index in range(args.rounds):
                    ceilings.append(measure_ceiling(exe, args.threads, element_patterns))
                    # Rotate who goes first: the first runner after the ceiling program measured
                    # slower here (the kernel reclaiming its pages), and that must not favour anyone.
                    shift = round_index % len(labels)
                    for label in labels[shift:] + labels[:shift]:
                        times[label].append(time_steps(impls[label], steps[label]))
                triad = statistics.median(c[0] for c in ceilings)
                inplace = statistics.median(c[1] for c in ceilings)
                own = statistics.median(c[2] for c in ceilings)
                def nbytes(label):
                    if label == "fastoptim AdamW":
                        return STREAMS["AdamW"] * elements * itemsize
                    return element_streams * itemsize

                ms = {label: statistics.median(t) * 1e3 for label, t in times.items()}
                best_peer = min((v for k, v in ms.items() if not k.startswith("fastoptim")), default=None)

                def fraction(label, ceiling):  # median over rounds of GB/s against that round's ceiling
                    return statistics.median(nbytes(label) / t / 1e9 / c[ceiling] for t, c in zip(times[label], ceilings))

                for label, value in ms.items():
                    gbs = nbytes(label) / value / 1e6
                    ratio = f"{best_peer / value:.2f}x" if label == "fastoptim" and best_peer else ""
                    # The own-pattern ceiling is fastoptim's step's pattern; the AdamW yardstick's is the in-place one.
                    own_fraction = fraction(label, 1 if label == "fastoptim AdamW" else 2)
                    print(f"| {wl} | {dtype_name} | {name} | {label} | {value:.2f} | {gbs:.1f} | "
                          f"{fraction(label, 0):.2f} | {fraction(label, 1):.2f} | {own_fraction:.2f} | {ratio} |", flush=True)
                print(f"| {wl} | {dtype_name} | {name} | ceilings (median) | | triad {triad:.1f}, in-place {inplace:.1f}, "
                      f"own pattern ({'; '.join(element_patterns)}) {own:.1f} | | | | |", flush=True)
                del impls
            del params


if __name__ == "__main__":
    sys.exit(main())
