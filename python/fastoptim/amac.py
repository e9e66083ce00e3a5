"""AMaC (godsonj64/AMaC-Optimizer) as a composition: one fused C++ pass (rule ``amac``: gradient
centralization, clipping, Adam moments, noise, dynamic weight decay, heavy-ball momentum under a
warm-up + cosine schedule) inside fastoptim's Lookahead and SWA wrappers."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import FusedOptimizer
from .wrappers import SWA, with_lookahead


class AMaCUpdate(FusedOptimizer):
    """AMaC's per-step update alone (no Lookahead, no SWA): see :class:`AMaC` for the formulas.
    Its group keys are AMaC's own; ``noise_stream`` (per-parameter state) is the parameter's
    position among all parameters, the key its noise is drawn with."""

    rule = "amac"
    public_names = {"centralize": "gradient_centralization", "centralize_conv_only": "gc_conv_only",
                    "clip_update": "clip_mode", "schedule_steps": "total_steps", "noise_steps": "noise_decay_steps"}

    def _field_value(self, group: dict[str, Any], name: str) -> Any:
        warmup = group["warmup_steps"]
        if name == "clip_value":
            return group["clip_value"] or 0.0  # None: off
        if name == "clip_update":
            if group["clip_mode"] not in ("grad", "update"):  # (a group added later is checked here only)
                raise ValueError(f"Invalid clip_mode value: {group['clip_mode']!r} (expected 'grad' or 'update')")
            return group["clip_mode"] == "update"
        if name == "schedule_steps":  # the seed's horizon 3W when total_steps is None
            return 3 * warmup if group["total_steps"] is None else group["total_steps"]
        if name == "noise_steps":  # the seed's noise reaches 0 at 2W
            return 2 * warmup if group["noise_decay_steps"] is None else group["noise_decay_steps"]
        if name == "centralize":
            return group["gradient_centralization"]
        if name == "centralize_conv_only":
            return group["gc_conv_only"]
        return super()._field_value(group, name)


class AMaC(SWA):
    r"""AMaC: Adam with momentum, gradient centralization, clipping, noise and a scheduled weight
    decay, under Lookahead and SWA, as the AMaC seed's README describes it. Per parameter at step t
    (from 1), with W = ``warmup_steps`` and T = ``total_steps`` (3W when None, the seed's horizon):

    .. math::
        \mathrm{lr}_t = \mathrm{lr}\,t/W\ (t < W),\quad
        \mathrm{lr}_t = \mathrm{min\_lr} + (\mathrm{lr} - \mathrm{min\_lr})\tfrac12(1 + \cos(\pi\min(1, \tfrac{t-W}{T-W})))

        g \leftarrow g - \operatorname{mean}_{\text{dims} \ne 0}(g)\ (\text{ndim} > 1),\qquad
        g \leftarrow \operatorname{clamp}(g, -c, c)

        m \leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2,\quad
        \delta = \frac{m/(1-\beta_1^t)}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon} + \sigma_t n,\quad
        \sigma_t = \text{noise\_factor}\max(0, 1 - t/T_n)

        \theta \leftarrow \theta\,(1 - \mathrm{lr}_t\lambda_t),\quad \lambda_t = \lambda\max(0, 1 - t/(2W)),\qquad
        u \leftarrow \mu u - \mathrm{lr}_t\delta,\quad \theta \leftarrow \theta + u

    then every ``lookahead_k`` steps Lookahead's ``slow <- slow + lookahead_alpha (θ - slow)``,
    ``θ <- slow`` (:class:`fastoptim.Lookahead`), and from ``swa_start`` on, every ``swa_freq``
    steps, the equal-weight running mean of θ (:class:`fastoptim.SWA`; ``swapped_in()`` evaluates
    on it, ``copy_averaged_to(model)`` exports it). The first four lines are one fused C++ pass
    (two over a tensor: the row sums of g for the centralization, then the update).

    n is standard normal noise drawn from a counter-based generator (Philox4x32-10, Box-Muller)
    keyed by (``seed``, the parameter's position, t, element index): reproducible, identical
    after a resume, independent of threads. T_n = ``noise_decay_steps``, or 2W. With W = 0 there
    is no warm-up and the weight decay is constant.

    Every technique can be switched off: ``gradient_centralization=False`` (or ``gc_conv_only=True``:
    only ndim > 3), ``clip_value=None``, ``noise_factor=0``, ``weight_decay=0``, ``momentum=0``,
    ``warmup_steps=0`` with ``total_steps=None`` (constant lr), ``lookahead_k=None``,
    ``swa_start=None``. All off, it is Adam.

    Differences from the seed's code (each a bug there): the cosine is clamped at ``min_lr``
    (v1 oscillates with period 4W forever, v2 rises again after T); the noise amplitude and the
    weight decay stop at 0 (the seed's turn negative after 2W, so its noise grows without bound
    and its weights grow exponentially); the gradient is clipped, as the README says
    (``clip_mode="update"`` clips δ after the noise, as the seed's code does); centralization is
    over all dims but 0 for ndim > 1 (the seed subtracts the whole-tensor mean of every tensor,
    zeroing 1-element gradients) and never writes ``p.grad``; Lookahead's α weights the fast
    weights (the paper's convention; the seed's weights the slow ones: the same at 0.5); SWA
    averages once per SWA step from ``swa_start`` (the seed updates it once per parameter tensor
    from ``warmup_steps`` and does not checkpoint it); the learning rate is read from the param
    group each step, so schedulers act during warm-up too. Memory: ``exp_avg``, ``exp_avg_sq``,
    ``momentum_buffer``, ``slow_param`` and ``swa_param`` are five parameter-sized buffers.

    Args:
        params: the parameters or param groups.
        lr: the peak learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): Adam's decays.
        momentum: mu, the momentum on the Adam step.
        eps: added to the denominator.
        weight_decay: the decoupled decay, scheduled to 0 at 2W.
        lookahead_alpha: Lookahead's sync rate.
        lookahead_k: Lookahead's sync period (None: no Lookahead).
        clip_value: the clipping bound c (None: no clipping).
        warmup_steps: W, the linear warm-up's length.
        total_steps: T, the cosine's horizon (None: 3W).
        swa_start: the step SWA starts averaging at (None: no SWA).
        noise_factor: the scale of the Gaussian noise on the step.
        seed: the noise's key (None: drawn from torch's generator).
        clip_mode: "grad" (clip the gradient) or "update" (clip the step, after the noise).
        min_lr: where the cosine ends.
        swa_freq: SWA's averaging period (None: every step).
        noise_decay_steps: the step the noise reaches 0 at (None: 2W).
        gradient_centralization: subtract the gradient's mean over all dims but the first (ndim > 1).
        gc_conv_only: centralize conv kernels (ndim > 3) only.
        maximize: maximize the objective.
        stochastic_rounding: the inner step stores bfloat16 parameters rounded up or down at random (see
            FusedOptimizer); Lookahead's syncs and SWA's swaps round to nearest.
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the moments and the momentum buffer in 8 bits, block-scaled, the blocks restarting at
            each row of dim 0 as the centralization's rows do (None: as state_dtype says; see FusedOptimizer).
            Lookahead's ``slow_param`` and SWA's ``swa_param``, copies of the weights, stay full precision.
    """

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        momentum: float = 0.9,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        lookahead_alpha: float = 0.5,
        lookahead_k: int | None = 5,
        clip_value: float | None = 1.0,
        warmup_steps: int = 1000,
        total_steps: int | None = None,
        swa_start: int | None = None,
        noise_factor: float = 0.01,
        seed: int | None = None,
        *,
        clip_mode: str = "grad",
        min_lr: float = 0.0,
        swa_freq: int | None = None,
        noise_decay_steps: int | None = None,
        gradient_centralization: bool = True,
        gc_conv_only: bool = False,
        maximize: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        # (lr, betas, eps, momentum, weight_decay, noise_factor, min_lr: the rule's field checks)
        if clip_value is not None and not clip_value > 0.0:
            raise ValueError(f"Invalid clip_value value: {clip_value} (expected a number > 0, or None)")
        for name, steps in (("warmup_steps", warmup_steps), ("total_steps", total_steps),
                            ("noise_decay_steps", noise_decay_steps)):
            if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
                raise ValueError(f"Invalid {name} value: {steps!r} (expected an integer >= 0)")
        if total_steps is not None and total_steps < warmup_steps:
            raise ValueError(f"Invalid total_steps value: {total_steps} (expected >= warmup_steps = {warmup_steps})")
        if seed is None:  # drawn from torch's generator, so torch.manual_seed fixes it
            seed = int(torch.randint(0, 2**52, ()))
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**53:
            raise ValueError(f"Invalid seed value: {seed!r} (expected an integer in [0, 2**53))")
        defaults = dict(
            lr=lr, betas=tuple(betas), momentum=momentum, eps=eps, weight_decay=weight_decay, clip_value=clip_value,
            clip_mode=clip_mode, warmup_steps=warmup_steps, total_steps=total_steps, min_lr=min_lr,
            noise_factor=noise_factor, noise_decay_steps=noise_decay_steps,
            gradient_centralization=gradient_centralization, gc_conv_only=gc_conv_only, seed=seed, maximize=maximize,
            stochastic_rounding=stochastic_rounding, state_dtype=state_dtype, state_bits=state_bits,
        )
        inner = with_lookahead(AMaCUpdate(params, defaults), lookahead_alpha, lookahead_k)
        super().__init__(inner, swa_start=swa_start, swa_freq=swa_freq or lookahead_k or 1)
