"""One record per optimizer (the idea of torch's ``OptimizerInfo``/``optim_db``): what each class is
tested against and with which options, the options that make its step heaviest, its options in the
libtorch and edge parity tests, its byte pattern and options in the benchmark, and its line in the
README's table. The generic tests, ``bench/bench.py`` and the README's catalogue read these records,
so adding an optimizer is its rule, its class and one record here.

    python -m fastoptim.records        # prints the README's catalogue table
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from .recent import StepPower

#: the options every step-reading-and-writing test adds unless a record says otherwise
_DECAY_AND_MAXIMIZE = dict(weight_decay=0.1, maximize=True)


@dataclass(frozen=True)
class PackageCheck:
    """A reference outside torch.optim that a class is checked against element by element: the
    tests' shared shapes, 50 steps, float32 and float64 (tests/python/test_package_parity.py)."""

    #: "module.Class": "holocron.optim.LAMB", "pytorch_optimizer.Adan", "adamp.AdamP", ...
    reference: str
    #: (fastoptim's options, the reference's options) that compute the same thing
    cases: tuple[tuple[dict[str, Any], dict[str, Any]], ...]
    #: options under every case's (a case's own win), on fastoptim's side and on the reference's
    ours: dict[str, Any] = field(default_factory=dict)
    theirs: dict[str, Any] = field(default_factory=dict)
    #: each case runs once per variant of each side (the reference's code paths: foreach=False, True)
    ours_variants: tuple[dict[str, Any], ...] = ({},)
    theirs_variants: tuple[dict[str, Any], ...] = ({},)
    #: the gradients, by name (tests/python/reference.py's GRADIENTS); each case runs with each
    grads: tuple[str, ...] = ("noise",)
    #: shapes of the shared set that the reference cannot step
    reference_fails_on: tuple[tuple[int, ...], ...] = ()
    #: the dtype whose tolerance every dtype is held to, where the reference computes in a narrower one
    tolerance_of: str | None = None
    #: state tensors compared too, named alike on both sides ("*": every one the reference keeps)
    state: tuple[str, ...] = ()
    #: methods called on the reference once it is made (schedulefree's optimizers start in eval mode)
    start: tuple[str, ...] = ()


def same(*options: dict[str, Any]) -> tuple[tuple[dict[str, Any], dict[str, Any]], ...]:
    """Cases where fastoptim and the reference take the same options."""
    return tuple((o, o) for o in options)


#: foreach=False and True: the two code paths of pytorch_optimizer's and schedulefree's classes
_BOTH_PATHS = (dict(foreach=False), dict(foreach=True))
#: holocron's LARS has no clip on the weight norm: fastoptim's scale_clip opened up
_UNCLIPPED = (0.0, math.inf)


@dataclass(frozen=True)
class OptimizerRecord:
    #: the class, as ``fastoptim.<name>``
    name: str
    #: one line for the README's table
    summary: str
    #: what the class is checked against, element by element: ``torch.optim.<Class>`` (the generic
    #: parity tests of tests/python/test_parity.py run every config against it) or the package and
    #: test file that do it
    reference: str
    #: options that change the math, alone and combined: each runs against a torch.optim reference
    configs: tuple[dict[str, Any], ...] = ()
    #: shapes of the tests' shared set that the reference cannot step (the parity tests leave them
    #: out; the class steps them, as its own tests show)
    reference_fails_on: tuple[tuple[int, ...], ...] = ()
    #: the option (and its index, for a tuple) whose None stands for the machine epsilon of each
    #: parameter's dtype (Adafactor's eps[0]): a float32 step stands for a bf16/fp16 one with it set
    dtype_epsilon_option: tuple[str, int] | None = None
    #: options that make a step read and write as much as it can (decay, momentum, maximize)
    rich: dict[str, Any] = field(default_factory=lambda: dict(_DECAY_AND_MAXIMIZE))
    #: options of the libtorch and edge parity runs (None: no class of its own in those front ends)
    front_end: dict[str, Any] | None = None
    #: the front ends with a class for it
    front_ends: tuple[str, ...] = ("libtorch", "edge")
    #: the bench: the passes over a tensor, "R/W" each (R arrays read, W written), joined by "+"
    pattern: str | None = None
    #: the passes over a vector (ndim <= 1) where they differ from `pattern` (AdamP's vectors take one
    #: pass; Adafactor keeps a vector's second moment whole)
    vector_pattern: str | None = None
    #: the bench's options
    bench: dict[str, Any] | None = None
    #: where the class's defaults differ from its rule's field list (AdamW is Adam's rule with
    #: decoupled decay and 1e-2; for a class whose groups step with several rules, Muon, where any
    #: group's do): a test holds every class to its rules' defaults plus this
    preset: dict[str, float] = field(default_factory=dict)
    #: whose signature and defaults the class takes: "torch.optim", "holocron.optim", "pytorch_optimizer",
    #: or the paper's or seed's name (set by the sections of RECORDS below)
    family: str = ""
    #: the references outside torch.optim it is checked against, element by element
    package_checks: tuple[PackageCheck, ...] = ()

    @property
    def torch_reference(self) -> str | None:
        """The torch.optim class name this record is tested against, or None."""
        prefix = "torch.optim."
        return self.reference[len(prefix):] if self.reference.startswith(prefix) else None


def _torch(name: str) -> str:
    return f"torch.optim.{name}"


def _family(family: str, *records: OptimizerRecord) -> tuple[OptimizerRecord, ...]:
    return tuple(replace(r, family=family) for r in records)


RECORDS: tuple[OptimizerRecord, ...] = (
    *_family(
        "torch.optim",
        OptimizerRecord(
            "SGD", "SGD with momentum, dampening, Nesterov", _torch("SGD"),
            configs=(
                dict(lr=0.05),
                dict(lr=0.05, momentum=0.9),
                dict(lr=0.05, momentum=0.9, dampening=0.3),
                dict(lr=0.05, momentum=0.9, nesterov=True),
                dict(lr=0.05, momentum=0.5, weight_decay=0.1),
                dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True),
            ),
            rich=dict(momentum=0.9, weight_decay=0.1, maximize=True),
            front_end=dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True),
            pattern="3/2", bench=dict(lr=1e-3, momentum=0.9, nesterov=True),
        ),
        OptimizerRecord(
            "Adagrad", "Adagrad with lr decay", _torch("Adagrad"),
            configs=(
                dict(),
                dict(lr_decay=0.01),
                dict(weight_decay=0.1),
                dict(initial_accumulator_value=0.5),
                dict(lr=0.05, eps=1e-6, maximize=True, lr_decay=0.001, weight_decay=0.01),
            ),
            front_end=dict(lr=0.01, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5),
            pattern="3/2", bench=dict(lr=1e-2),
        ),
        OptimizerRecord(
            "RMSprop", "RMSprop, centered, with momentum", _torch("RMSprop"),
            configs=(
                dict(),
                dict(momentum=0.9),
                dict(centered=True),
                dict(weight_decay=0.1),
                dict(alpha=0.9, eps=1e-6, centered=True, momentum=0.8, weight_decay=0.01, maximize=True),
            ),
            rich=dict(momentum=0.9, centered=True, weight_decay=0.1, maximize=True),
            front_end=dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1),
            pattern="3/2", bench=dict(lr=1e-2),
        ),
        OptimizerRecord(
            "Adam", "Adam, amsgrad, decoupled decay", _torch("Adam"),
            configs=(
                dict(),
                dict(amsgrad=True),
                dict(weight_decay=0.1),
                dict(maximize=True),
                dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, amsgrad=True, weight_decay=0.05, maximize=True),
            ),
            front_end=dict(lr=0.01, amsgrad=True, weight_decay=0.1),
            pattern="4/3", bench=dict(lr=1e-3),
        ),
        OptimizerRecord(
            "AdamW", "Adam with decoupled weight decay (Adam's rule, one flag)", _torch("AdamW"),
            configs=(dict(), dict(amsgrad=True), dict(lr=1e-2, weight_decay=0.1, maximize=True)),
            front_end=dict(lr=0.01),
            pattern="4/3", bench=dict(lr=1e-3), preset=dict(weight_decay=1e-2, decoupled_weight_decay=1),
        ),
        OptimizerRecord(
            "NAdam", "Adam with Nesterov momentum and momentum decay; NAdamW", _torch("NAdam"),
            configs=(
                dict(),
                dict(weight_decay=0.1),
                dict(weight_decay=0.1, decoupled_weight_decay=True),
                dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, momentum_decay=0.01, maximize=True),
            ),
            front_end=dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
            pattern="4/3", bench=dict(lr=2e-3),
        ),
        OptimizerRecord(
            "RAdam", "Adam with variance rectification", _torch("RAdam"),
            configs=(
                dict(),
                dict(weight_decay=0.1),
                dict(weight_decay=0.1, decoupled_weight_decay=True),
                dict(lr=1e-2, betas=(0.8, 0.9), eps=1e-6, maximize=True),
            ),
            front_end=dict(lr=0.01, weight_decay=0.1),
            pattern="4/3", bench=dict(lr=1e-3),
        ),
        OptimizerRecord(
            "Adamax", "Adam with the infinity norm", _torch("Adamax"),
            configs=(dict(), dict(weight_decay=0.1), dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-4, maximize=True)),
            front_end=dict(lr=0.01, weight_decay=0.1),
            pattern="4/3", bench=dict(lr=2e-3),
        ),
        OptimizerRecord(
            "Adadelta", "Adadelta", _torch("Adadelta"),
            configs=(dict(), dict(weight_decay=0.1), dict(lr=0.5, rho=0.5, eps=1e-4, maximize=True)),
            front_end=dict(lr=0.5, weight_decay=0.1),
            pattern="4/3", bench=dict(lr=1.0),
        ),
        OptimizerRecord(
            "ASGD", "averaged SGD", _torch("ASGD"),
            configs=(dict(), dict(t0=5), dict(lr=0.05, lambd=0.01, alpha=0.5, t0=3, weight_decay=0.1, maximize=True)),
            rich=dict(t0=1, weight_decay=0.1, maximize=True),
            front_end=dict(lr=0.05, lambd=0.01, t0=4, weight_decay=0.1),
            pattern="3/2", bench=dict(lr=1e-2, t0=0),
        ),
        OptimizerRecord(
            "Rprop", "resilient backpropagation", _torch("Rprop"),
            configs=(dict(), dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2), maximize=True)),
            rich=dict(maximize=True),
            front_end=dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2)),
            pattern="4/3", bench=dict(lr=1e-2),
        ),
        OptimizerRecord(
            "Adafactor", "second moments factored into rows and columns; relative step sizes", _torch("Adafactor"),
            configs=(
                dict(),
                dict(weight_decay=0.1),
                dict(eps=(1e-2, 1e-2)),
                # (an eps1 of 1e-3 at least: below it, V stored in fp16 is subnormal, and its rounding moves u by
                # more than the low-precision test's ulp)
                dict(lr=0.05, beta2_decay=-0.5, eps=(1e-3, 1e-4), d=2.0, weight_decay=0.05, maximize=True),
            ),
            reference_fails_on=((0,),), dtype_epsilon_option=("eps", 0),  # (torch divides by the numel: ZeroDivisionError on an empty tensor)
            # (a matrix's passes: the g^2 sums, the u^2 and theta^2 sums, the update)
            front_end=dict(lr=0.02, weight_decay=0.1),
            pattern="1/0+2/0+2/1", vector_pattern="3/1+3/1", bench=dict(lr=1e-2),
        ),
        OptimizerRecord(
            "Muon", "momentum orthogonalised by Newton-Schulz for matrices; AdamW for the rest",
            "torch.optim's Muon, and AdamW for the rest (tests/python/test_muon.py)",
            rich=dict(weight_decay=0.1), preset=dict(weight_decay=0.1, decoupled_weight_decay=1),
        ),
    ),
    *_family(
        "holocron.optim",
        OptimizerRecord(
            "AdaBelief", "Adam with the belief in the gradient; rectify, amsgrad",
            "holocron.optim and adabelief-pytorch (tests/python/test_adabelief.py)",
            front_end=dict(lr=0.01, weight_decay=0.1, rectify=True), pattern="4/3", bench=dict(lr=1e-3),
            package_checks=(
                # holocron leaves the epsilon out of s: either option of fastoptim's does too
                PackageCheck(
                    "holocron.optim.AdaBelief",
                    same(dict(), dict(amsgrad=True), dict(weight_decay=0.1),
                         dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, amsgrad=True, weight_decay=0.01)),
                    ours_variants=(dict(eps_inside=False), dict(holocron_compat=True)),
                ),
                # the official package's defaults are eps=1e-16, weight_decouple=True, rectify=True
                PackageCheck(
                    "adabelief_pytorch.AdaBelief",
                    same(dict(), dict(amsgrad=True), dict(weight_decay=0.1, weight_decouple=True),
                         dict(weight_decay=0.1, weight_decouple=False),
                         dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-12, amsgrad=True, weight_decay=0.01, weight_decouple=True)),
                    theirs=dict(eps=1e-8, weight_decouple=False, rectify=False, print_change_log=False),
                ),
                # 50 steps cover both phases: rho_t passes 5 at step 6 (beta2 = 0.999 and 0.95)
                PackageCheck(
                    "adabelief_pytorch.AdaBelief",
                    same(dict(), dict(degenerated_to_sgd=False), dict(amsgrad=True, weight_decay=0.1, weight_decouple=True),
                         dict(weight_decay=0.1, weight_decouple=False, degenerated_to_sgd=False),
                         dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-12, weight_decay=0.01, weight_decouple=True)),
                    ours=dict(rectify=True), theirs=dict(eps=1e-8, weight_decouple=False, rectify=True, print_change_log=False),
                ),
            ),
        ),
        OptimizerRecord(
            "AdEMAMix", "Adam with a mix of two EMAs", "holocron.optim, pytorch_optimizer and the official equations (tests/python/test_ademamix.py)",
            front_end=dict(lr=0.01, t_alpha=5, t_beta3=5), pattern="5/4", bench=dict(lr=1e-3),
            package_checks=(
                # holocron has no schedulers, and its weight decay is L2's
                PackageCheck(
                    "holocron.optim.AdEMAMix",
                    same(dict(), dict(lr=1e-2, betas=(0.8, 0.99, 0.999), alpha=2.0, eps=1e-6))
                    + ((dict(weight_decay=0.1, weight_decouple=False), dict(weight_decay=0.1)),),
                ),
                # pytorch_optimizer's decoupled decay is fastoptim's default one (its schedulers off)
                PackageCheck(
                    "pytorch_optimizer.AdEMAMix",
                    ((dict(weight_decay=0.1), dict(weight_decay=0.1, weight_decouple=True)),), theirs=dict(foreach=False),
                ),
            ),
        ),
        OptimizerRecord(
            "Adan", "adaptive Nesterov momentum", "holocron.optim and pytorch_optimizer (tests/python/test_adan.py)",
            front_end=dict(lr=0.01, weight_decay=0.1), pattern="6/5", bench=dict(lr=1e-3),
            package_checks=(
                # (holocron's Adan never updates its previous gradient: the official algorithm is pytorch_optimizer's)
                PackageCheck(
                    "pytorch_optimizer.Adan",
                    same(dict(), dict(weight_decay=0.05), dict(lr=1e-3, betas=(0.9, 0.8, 0.999), eps=1e-6))
                    + ((dict(weight_decay=0.05, no_prox=True), dict(weight_decay=0.05, weight_decouple=True)),),
                    ours=dict(lr=1e-2), theirs=dict(lr=1e-2, foreach=False),
                ),
                # the global gradient-norm clip (the noise's norm is about 330: 1.0 clips every step);
                # pytorch_optimizer's fails on a 0-d parameter (it scales a 0-d gradient by a 1-element
                # tensor in place) and reduces the norm in float32 whatever the dtype
                PackageCheck(
                    "pytorch_optimizer.Adan",
                    same(dict(max_grad_norm=1.0))
                    + ((dict(max_grad_norm=10.0, weight_decay=0.05, no_prox=True),
                        dict(max_grad_norm=10.0, weight_decay=0.05, weight_decouple=True)),),
                    ours=dict(lr=1e-2), theirs=dict(lr=1e-2, foreach=False), reference_fails_on=((),), tolerance_of="float32",
                ),
            ),
        ),
        OptimizerRecord(
            "LAMB", "layer-wise trust ratio over Adam", "holocron.optim and the documented equations (tests/python/test_lamb.py)",
            front_end=dict(lr=0.01, weight_decay=0.1), pattern="4/2+3/1", bench=dict(lr=1e-3),
            package_checks=(
                # holocron's LAMB has no bias correction
                PackageCheck(
                    "holocron.optim.LAMB",
                    same(dict(), dict(weight_decay=0.1), dict(lr=1e-2, scale_clip=(0.0, 1.0)),
                         dict(betas=(0.8, 0.99), eps=1e-6, scale_clip=(0.5, 20.0))),
                    ours=dict(bias_correction=False),
                ),
            ),
        ),
        OptimizerRecord(
            "LARS", "layer-wise trust ratio over SGD", "holocron.optim and the paper (tests/python/test_lars.py)",
            rich=dict(momentum=0.9, weight_decay=0.1, maximize=True),
            front_end=dict(lr=0.01, momentum=0.9, weight_decay=0.1, exclude_1d=True),
            pattern="2/0+3/2", bench=dict(lr=1e-3, momentum=0.9),
            package_checks=(
                # where holocron's code and the documented form agree: no momentum (holocron scales the
                # whole buffer by each step's ratio), no clip on the weight norm (holocron has none), no
                # all-zero gradient (there the ratios differ by design)
                PackageCheck(
                    "holocron.optim.LARS", same(dict(), dict(lr=0.01, weight_decay=0.1), dict(lr=0.05, weight_decay=1e-4)),
                    ours=dict(scale_clip=_UNCLIPPED), grads=("nonzero",),
                ),
            ),
        ),
        OptimizerRecord(
            "RaLars", "LAMB with RAdam's rectification", "holocron.optim (tests/python/test_ralars.py)",
            front_end=dict(lr=0.01), pattern="4/2+3/1", bench=dict(lr=1e-3), preset=dict(rectify=1),
            package_checks=(
                # through both phases of the rectification (SGD-like while rho_t <= 4, rectified after)
                PackageCheck(
                    "holocron.optim.RaLars",
                    same(dict(), dict(weight_decay=0.1), dict(force_adaptive_momentum=True, lr=1e-2),
                         dict(betas=(0.8, 0.99), eps=1e-6, scale_clip=(0.5, 20.0), weight_decay=0.01)),
                ),
            ),
        ),
        OptimizerRecord(
            "TAdam", "Adam with Student-t weighting", "holocron.optim and the paper (tests/python/test_tadam.py)",
            front_end=dict(lr=0.01), pattern="3/0+4/3", bench=dict(lr=1e-3),
            package_checks=(
                # (holocron's TAdam fails on 0-d parameters: its W_t has shape [1])
                PackageCheck(
                    "holocron.optim.TAdam",
                    same(dict(), dict(lr=1e-2, weight_decay=0.1), dict(amsgrad=True), dict(dof=3.0),
                         dict(betas=(0.8, 0.99), eps=1e-6, amsgrad=True, dof=100.0, weight_decay=0.01)),
                    reference_fails_on=((),), state=("W_t",),
                ),
            ),
        ),
        OptimizerRecord(
            "AdamP", "Adam with radial projection", "adamp, the official code (tests/python/test_adamp.py)",
            front_end=dict(lr=0.01, weight_decay=0.1), pattern="4/2+3/1", vector_pattern="4/3", bench=dict(lr=1e-3),
            package_checks=(
                # through each branch: random gradients, gradients orthogonal to each channel (the channel
                # view projects), to the whole tensor only (the layer view projects)
                PackageCheck(
                    "adamp.AdamP",
                    same(dict(), dict(lr=1e-2, weight_decay=0.1), dict(nesterov=True, weight_decay=0.01),
                         dict(delta=0.5, wd_ratio=0.5, weight_decay=0.1, eps=1e-6)),
                    grads=("noise", "channel-orthogonal", "layer-orthogonal"),
                ),
                # holocron's where neither projects (gradients aligned with theta; holocron projects
                # vectors too, and fails on 0-d and empty tensors)
                PackageCheck("holocron.optim.AdamP", same(dict()), grads=("aligned",), reference_fails_on=((), (0,))),
            ),
        ),
    ),
    *_family(
        "AMaC",
        OptimizerRecord(
            "AMaC", "the AMaC seed's composition (Adam, momentum, clipping, noise, Lookahead, SWA)",
            "its parts' references (tests/python/test_amac.py)",
            rich=dict(seed=0, warmup_steps=2, weight_decay=0.1, maximize=True),  # a fixed seed: two instances draw the same noise
            front_end=dict(lr=0.01, warmup_steps=4, lookahead_k=None, swa_start=None, seed=3),
        ),
    ),
    *_family(
        "pytorch_optimizer",
        OptimizerRecord(
            "Lion", "sign of an interpolated momentum", "pytorch_optimizer (tests/python/test_lion.py)",
            front_end=dict(lr=0.01, weight_decay=0.1), pattern="3/2", bench=dict(lr=1e-4, weight_decay=1e-2),
            package_checks=(
                PackageCheck(
                    "pytorch_optimizer.Lion",
                    same(dict(), dict(lr=1e-3, betas=(0.95, 0.98)), dict(weight_decay=0.1), dict(weight_decay=0.1, fixed_decay=True),
                         dict(weight_decay=0.1, weight_decouple=False), dict(weight_decay=0.1, maximize=True)),
                    ours=dict(lr=1e-2), theirs=dict(lr=1e-2), theirs_variants=_BOTH_PATHS,
                ),
            ),
        ),
        OptimizerRecord(
            "ADOPT", "Adam normalised by the earlier steps' second moment, clipped", "pytorch_optimizer (tests/python/test_adopt.py)",
            front_end=dict(lr=0.01, weight_decay=0.1), pattern="4/3", bench=dict(lr=1e-3),
            package_checks=(
                PackageCheck(
                    "pytorch_optimizer.ADOPT",
                    same(dict(), dict(lr=1e-3, betas=(0.8, 0.99), eps=1e-4), dict(clip_lambda=None),
                         dict(clip_lambda=StepPower(0.5)), dict(weight_decay=0.1), dict(weight_decay=0.1, weight_decouple=True),
                         dict(weight_decay=0.1, weight_decouple=True, fixed_decay=True), dict(weight_decay=0.1, maximize=True)),
                    ours=dict(lr=1e-2), theirs=dict(lr=1e-2), theirs_variants=_BOTH_PATHS, state=("exp_avg", "exp_avg_sq"),
                ),
            ),
        ),
    ),
    *_family(
        "schedulefree",
        OptimizerRecord(
            "AdamWScheduleFree", "AdamW without a schedule: an average of the iterates, train()/eval()",
            "the schedulefree package (tests/python/test_schedule_free.py)",
            rich=dict(weight_decay=0.1, warmup_steps=2), front_end=dict(lr=0.01, weight_decay=0.1, warmup_steps=3),
            pattern="4/3", bench=dict(lr=2.5e-3),
            package_checks=(
                PackageCheck(
                    "schedulefree.AdamWScheduleFree",
                    same(dict(), dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6), dict(weight_decay=0.1), dict(warmup_steps=10),
                         dict(lr=1e-2, warmup_steps=5, r=0.5, weight_lr_power=1.0, weight_decay=0.01)),
                    theirs_variants=_BOTH_PATHS, state=("*",), start=("train",),
                ),
            ),
        ),
        OptimizerRecord(
            "SGDScheduleFree", "SGD without a schedule: an average of the iterates, train()/eval()",
            "the schedulefree package (tests/python/test_schedule_free.py)",
            rich=dict(weight_decay=0.1, warmup_steps=2), front_end=dict(lr=0.01, weight_decay=0.1, warmup_steps=3),
            pattern="3/2", bench=dict(lr=1.0),
            package_checks=(
                PackageCheck(
                    "schedulefree.SGDScheduleFree",
                    same(dict(lr=0.1), dict(lr=0.1, momentum=0.5), dict(lr=0.1, weight_decay=0.1), dict(lr=0.1, warmup_steps=10),
                         dict(lr=0.05, warmup_steps=5, r=1.0, weight_lr_power=0.5, weight_decay=0.01)),
                    theirs_variants=_BOTH_PATHS, state=("*",), start=("train",),
                ),
            ),
        ),
    ),
    *_family(
        "Sophia",
        OptimizerRecord(
            "SophiaG", "clipped Newton step with a Gauss-Newton-Bartlett Hessian EMA",
            "the official Sophia code (tests/python/test_sophia.py)",
            front_end=dict(lr=0.01), pattern="4/2", bench=dict(lr=1e-3),
            preset=dict(bs=5120),  # the official SophiaG's batch size; SophiaH estimates per sample
        ),
        OptimizerRecord(
            "SophiaH", "Sophia with Hutchinson's Hessian estimate", "pytorch_optimizer (tests/python/test_sophia.py)",
            front_end=dict(lr=0.01),
        ),
        OptimizerRecord(
            "AdaHessian", "Adam over a spatially averaged Hessian diagonal", "pytorch_optimizer (tests/python/test_adahessian.py)",
            front_end=dict(lr=0.01),
        ),
        OptimizerRecord(
            "SophiaOptim", "Sophia with Lookahead (the Sophia seed's composition)", "its parts (tests/python/test_sophia_optim.py)",
            preset=dict(lr=1e-3, beta1=0.9, rho=0.1, weight_decay=1e-2, eps=1e-8),  # the Sophia seed's defaults
        ),
    ),
)

BY_NAME: dict[str, OptimizerRecord] = {r.name: r for r in RECORDS}


def record(name: str) -> OptimizerRecord:
    return BY_NAME[name]


def readme_table() -> str:
    """The README's catalogue table, one row per record."""
    rows = ["| Optimizer | Signature of | What it is | Exact against |", "|---|---|---|---|"]
    rows += [f"| `{r.name}` | {r.family} | {r.summary} | {r.reference} |" for r in RECORDS]
    return "\n".join(rows)


if __name__ == "__main__":
    print(readme_table())
