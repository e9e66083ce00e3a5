"""The classic optimizers: torch.optim's signatures, defaults, validation messages, state names
and math, with the update running in fastoptim's fused C++ kernels.

All five accept torch's keyword arguments. ``foreach``, ``fused`` and ``capturable`` are accepted
and recorded in the param group (so state dicts move between fastoptim and torch.optim both ways)
but do not change what runs: fastoptim always runs its fused kernel. ``differentiable=True`` is
rejected. Sparse gradients raise a TypeError naming the parameter (torch supports them in SGD and
Adagrad; fastoptim does not yet). Complex parameters are not supported yet.

Low precision: bfloat16 and float16 parameters keep their state in the parameter's dtype, as
torch.optim does (so memory, state dicts and interchange with torch match); every update is
computed in float32 and rounded once, to nearest even, when stored - like torch's ``fused=True``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import FusedOptimizer, arguments_as_defaults, scale_key, step_device, to_float


class SGD(FusedOptimizer):
    """torch.optim.SGD (momentum, dampening, Nesterov, weight decay, maximize) on fastoptim's kernels.

    State: ``momentum_buffer`` when momentum != 0, started as a copy of the first gradient as torch does.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        momentum: the momentum factor (0: none).
        dampening: the dampening of the momentum.
        weight_decay: L2 penalty added to the gradient.
        nesterov: Nesterov momentum (needs a momentum and no dampening).
        maximize: maximize the objective.
        foreach, fused, differentiable: torch's flags, kept in the group (fastoptim always runs its fused step; differentiable=True is refused).
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the momentum buffer in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).
    """

    rule = "sgd"

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        super().__init__(params, arguments_as_defaults(locals()))

    # Group keys an older state dict may lack, filled in on load as torch.optim does.
    setstate_defaults = dict(nesterov=False, maximize=False, foreach=None, differentiable=False, fused=False)


class Adagrad(FusedOptimizer):
    """torch.optim.Adagrad (lr_decay, weight decay, initial accumulator, maximize) on fastoptim's kernels.

    State: ``step`` and ``sum``, created for every parameter at construction as torch does.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        lr_decay: lr / (1 + (t - 1) lr_decay) at step t.
        weight_decay: L2 penalty added to the gradient.
        initial_accumulator_value: what the sum of squares starts at.
        eps: added to the denominator.
        foreach, fused, differentiable: torch's flags, kept in the group.
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the sum of squared gradients (from initial_accumulator_value, encoded) in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).
    """

    rule = "adagrad"

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        super().__init__(params, arguments_as_defaults(locals()))
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = torch.tensor(0.0, dtype=torch.float32, device=step_device(p))
                # (in 8 bits, the sum's block scales too: a state dict saved before the first step loads)
                for name in ["sum"] + ([scale_key("sum")] if group.get("state_bits") == 8 else []):
                    state[name] = self._initial_state(name, p, group)

    # Group keys an older state dict may lack, filled in on load as torch.optim does.
    setstate_defaults = dict(foreach=None, maximize=False, differentiable=False, fused=None)


class RMSprop(FusedOptimizer):
    """torch.optim.RMSprop (alpha, momentum, centered, weight decay, maximize) on fastoptim's kernels.

    State: ``step``, ``square_avg``, ``momentum_buffer`` when momentum > 0, ``grad_avg`` when centered.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        alpha: the smoothing constant of the squared-gradient average.
        eps: added to the denominator.
        weight_decay: L2 penalty added to the gradient.
        momentum: the momentum factor (0: none).
        centered: normalise by the estimated variance (keeps an average of the gradient too).
        capturable, foreach, differentiable: torch's flags, kept in the group.
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps its averages and momentum buffer in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).
    """

    rule = "rmsprop"

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        super().__init__(params, arguments_as_defaults(locals()))

    # Group keys an older state dict may lack, filled in on load as torch.optim does.
    setstate_defaults = dict(
        momentum=0, centered=False, foreach=None, maximize=False, differentiable=False, capturable=False
    )


class Adam(FusedOptimizer):
    """torch.optim.Adam (betas, eps, weight decay, amsgrad, maximize, decoupled_weight_decay) on
    fastoptim's kernels. AdamW is this class with decoupled weight decay: one rule, one flag.

    State: ``step``, ``exp_avg``, ``exp_avg_sq``, and ``max_exp_avg_sq`` when amsgrad.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the decays of the first and second moments.
        eps: added to the denominator.
        weight_decay: L2 penalty, or decoupled decay with ``decoupled_weight_decay``.
        amsgrad: divide by the running maximum of the second moment.
        decoupled_weight_decay: AdamW-style decay.
        foreach, capturable, fused, differentiable: torch's flags, kept in the group.
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the moments in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).
    """

    rule = "adam"

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        # 1-element tensor betas become floats once, here: the step reads every group's betas as
        # numbers (a tensor's value would be copied to the host each step). Others fail the group check.
        betas = tuple(to_float(b) if isinstance(b, Tensor) and b.numel() == 1 else b for b in betas)
        super().__init__(params, arguments_as_defaults(locals()))

    # Group keys an older state dict may lack, filled in on load as torch.optim does.
    setstate_defaults = dict(
        amsgrad=False, maximize=False, foreach=None, capturable=False, differentiable=False,
        decoupled_weight_decay=False, fused=None,
    )


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (default 1e-2), on fastoptim's kernels.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the decays of the first and second moments.
        eps: added to the denominator.
        weight_decay: the decoupled decay coefficient.
        amsgrad: divide by the running maximum of the second moment.
        foreach, capturable, fused, differentiable: torch's flags, kept in the group.
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the moments in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).
    """

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
            capturable=capturable, differentiable=differentiable, fused=fused, decoupled_weight_decay=True,
            stochastic_rounding=stochastic_rounding, state_dtype=state_dtype, state_bits=state_bits,
        )

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


class AdEMAMix(FusedOptimizer):
    r"""AdEMAMix (Pagliardini et al., 2024) with holocron.optim's signature and defaults:

    .. math::
        m_1 \leftarrow \beta_1 m_1 + (1-\beta_1) g,\quad
        m_2 \leftarrow \beta_3(t) m_2 + (1-\beta_3(t)) g,\quad
        v \leftarrow \beta_2 v + (1-\beta_2) g^2

        u = \frac{m_1/(1-\beta_1^t) + \alpha(t)\, m_2}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon},\qquad
        \theta \leftarrow \theta - \mathrm{lr}\,(u + \lambda\theta)

    ``m_2`` is not bias-corrected (as the paper). ``t_alpha`` / ``t_beta3`` switch on the official
    warm-up schedulers: alpha(t) rises linearly from 0 to ``alpha`` over ``t_alpha`` steps, and the
    half-life of beta3(t) rises linearly from beta1's to beta3's over ``t_beta3`` steps (paper and
    apple/ml-ademamix use one T for both; pass the same value twice for that). ``betas[0] = 0``
    keeps no ``exp_avg`` and uses the gradient itself.

    Differences from holocron's code: weight decay is decoupled as in the paper
    (``weight_decouple=False`` gives holocron's L2 ``g + wd*theta``); the schedulers exist; ``alpha``
    is validated; ``maximize`` is offered. With ``weight_decay=0`` and the schedulers off it computes
    what holocron computes. State: ``step``, ``exp_avg``, ``exp_avg_slow``, ``exp_avg_sq``.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2, beta3): the fast EMA's, the second moment's and the slow EMA's decays.
        alpha: the weight of the slow EMA.
        eps: added to the denominator.
        weight_decay: decoupled decay (L2 with ``weight_decouple=False``).
        t_alpha: steps of alpha's linear warm-up (None: none).
        t_beta3: steps of beta3's warm-up (None: none).
        weight_decouple: decoupled decay, as the paper (False: holocron's L2).
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the moments in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).
    """

    rule = "ademamix"

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        alpha: float = 5.0,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        t_alpha: int | None = None,
        t_beta3: int | None = None,
        weight_decouple: bool = True,
        maximize: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        super().__init__(params, arguments_as_defaults(locals()))

    def _field_value(self, group: dict[str, Any], name: str) -> Any:
        if name in ("t_alpha", "t_beta3"):
            steps = group[name]
            if steps is not None and not steps > 0:
                raise ValueError(f"Invalid {name} value: {steps} (expected a number of steps > 0, or None)")
            return steps or 0  # None (off) is 0 for the kernel
        return super()._field_value(group, name)


class AdaBelief(FusedOptimizer):
    r"""AdaBelief (Zhuang et al., 2020) with holocron.optim's signature and defaults:

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\qquad
        s \leftarrow \beta_2 s + (1-\beta_2)(g - m)^2 + \epsilon

        \theta \leftarrow \theta - \frac{\mathrm{lr}}{1-\beta_1^t}\,
            \frac{m}{\sqrt{s}/\sqrt{1-\beta_2^t} + \epsilon}

    with the new m in the residual; amsgrad keeps the running maximum of s.

    ``rectify=True`` is the official package's RAdam rectification: with
    :math:`\rho_\infty = 2/(1-\beta_2) - 1` and :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)`,

    .. math::
        \rho_t \ge 5:\quad \theta \leftarrow \theta - \mathrm{lr}\,\frac{r_t\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,
            \frac{m}{\sqrt{s} + \epsilon},\qquad
        r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}

    and otherwise :math:`\theta \leftarrow \theta - \mathrm{lr}\, m/(1-\beta_1^t)` (``degenerated_to_sgd=True``,
    the official default) or no move; as in the official code, the rectified step divides by s,
    not by its amsgrad maximum.

    Differences from holocron's code: the epsilon inside s is there, as holocron's docs and the paper
    write it and the official package (adabelief-pytorch) computes it; ``eps_inside=False`` gives
    holocron's code, and ``holocron_compat=True`` is that preset (eps outside only, L2 decay).
    ``weight_decouple=True`` decouples the weight decay as the official package does by default
    (the default here keeps holocron's L2); ``rectify`` and ``maximize`` are offered. State:
    ``step``, ``exp_avg``, ``exp_avg_sq`` (holds s, under holocron's and torch's name),
    ``max_exp_avg_sq`` with amsgrad.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the decays of the first moment and of the belief s.
        eps: added inside s (``eps_inside``) and to the denominator.
        weight_decay: L2 penalty, or decoupled decay with ``weight_decouple``.
        amsgrad: divide by the running maximum of s.
        eps_inside: add eps inside s, as the paper and the official package do (False: holocron's code).
        weight_decouple: AdamW-style decay.
        rectify: the official package's RAdam rectification.
        degenerated_to_sgd: with ``rectify``, take momentum steps while the variance is intractable.
        holocron_compat: holocron's code exactly (eps outside only, L2 decay).
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the moments in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).
    """

    rule = "adabelief"
    setstate_defaults = dict(rectify=False, degenerated_to_sgd=True)

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        eps_inside: bool = True,
        weight_decouple: bool = False,
        rectify: bool = False,
        degenerated_to_sgd: bool = True,
        holocron_compat: bool = False,
        maximize: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        if holocron_compat:
            if weight_decouple or rectify:
                raise ValueError(
                    f"holocron_compat=True is holocron's code (L2 decay, no rectification), but weight_decouple="
                    f"{weight_decouple} and rectify={rectify} were given"
                )
            eps_inside = False
        defaults = arguments_as_defaults(locals())
        del defaults["holocron_compat"]  # a preset of the other flags, not a group key
        super().__init__(params, defaults)


class Adan(FusedOptimizer):
    r"""Adan (Xie et al., 2022) with holocron.optim's signature and defaults, computing the official
    algorithm (sail-sg) with the betas in its code convention:

    .. math::
        \Delta = g_t - g_{t-1}\ (0\text{ at the first step}),\quad
        m \leftarrow \beta_1 m + (1-\beta_1) g,\quad
        d \leftarrow \beta_2 d + (1-\beta_2)\Delta,\quad
        n \leftarrow \beta_3 n + (1-\beta_3)(g + \beta_2\Delta)^2

        u = \frac{m/(1-\beta_1^t) + \beta_2\, d/(1-\beta_2^t)}{\sqrt{n}/\sqrt{1-\beta_3^t} + \epsilon},\qquad
        \theta \leftarrow \frac{\theta - \mathrm{lr}\,u}{1 + \mathrm{lr}\,\lambda}

    (``no_prox=True``: :math:`\theta \leftarrow \theta(1 - \mathrm{lr}\lambda) - \mathrm{lr}\,u`).
    ``amsgrad`` keeps the running maximum of n, as holocron documents it.

    Differences from holocron's code: holocron never updates its previous gradient (it stays 0, so
    its "difference" is the gradient itself and d is a second average of g) and applies L2 decay on
    top of the proximal step; fastoptim keeps the previous gradient (state ``prev_grad``) and uses
    the proximal decay alone, as the paper and the official code do. ``maximize`` is offered.

    ``max_grad_norm`` (official; None or 0: off) first scales every gradient by
    :math:`\min(\text{max\_grad\_norm} / (\lVert g\rVert + \epsilon), 1)`, where
    :math:`\lVert g\rVert` is the norm of all gradients of all groups together; the previous
    gradient kept is the scaled one, as in the official code. The norm is computed with tensor
    ops and reaches the C++ step as a tensor: nothing is copied to the host.
    State: ``step``, ``exp_avg``, ``exp_avg_diff``, ``exp_avg_sq``, ``prev_grad``, ``max_exp_avg_sq`` (amsgrad).

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2, beta3) in the official code's convention.
        eps: added to the denominator.
        weight_decay: the proximal decay coefficient.
        amsgrad: divide by the running maximum of n.
        no_prox: decoupled decay before the update instead of the proximal step.
        max_grad_norm: clip every gradient by the norm of all of them first (None or 0: off).
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the moments in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).
    """

    rule = "adan"
    setstate_defaults = dict(max_grad_norm=None)

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        no_prox: bool = False,
        max_grad_norm: float | None = None,
        maximize: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        super().__init__(params, arguments_as_defaults(locals()))


def scale_clip_or_default(scale_clip: Any) -> Any:
    """holocron's scale_clip: None is (0, 10), the bounds of the weight norm in the trust ratio."""
    return (0.0, 10.0) if scale_clip is None else scale_clip


class _ScaleClipOptimizer(FusedOptimizer):
    """A rule with clip_min / clip_max fields, read from the group's ``scale_clip`` pair."""

    public_names = {"clip_min": "scale_clip[0]", "clip_max": "scale_clip[1]"}

    def _field_value(self, group: dict[str, Any], name: str) -> Any:
        if name in ("clip_min", "clip_max"):
            scale_clip = scale_clip_or_default(group["scale_clip"])
            if not isinstance(scale_clip, (tuple, list)) or len(scale_clip) != 2:
                raise ValueError(f"Invalid scale_clip value: {scale_clip!r} (expected (low, high) with 0 <= low <= high)")
            return scale_clip[name == "clip_max"]
        return super()._field_value(group, name)


class LAMB(_ScaleClipOptimizer):
    r"""LAMB (You et al., 2019) with holocron.optim's signature, computing what its docs write:

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2,\qquad
        u = \frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon} + \lambda\theta

        \phi = \mathrm{clamp}(\lVert\theta\rVert, \text{scale\_clip}),\qquad
        r = \phi / \lVert u\rVert\ (1 \text{ when either norm is } 0),\qquad
        \theta \leftarrow \theta - \mathrm{lr}\, r\, u

    ``scale_clip=None`` is holocron's (0, 10). The norms are reduced per tensor in fp32 (fp64 for
    fp64 parameters) inside the C++ step, in two passes over the tensor (moments and sums, then the
    update), with nothing copied to the host.

    Options from the LAMB paper's reference code and NVIDIA's: ``trust_clip=True`` caps the ratio
    at 1 (LARC's clipping); ``grad_averaging=False`` accumulates :math:`m \leftarrow \beta_1 m + g`;
    ``max_grad_norm`` (None or 0: off) first scales every gradient by
    :math:`\min(\text{max\_grad\_norm} / (\lVert g\rVert + \epsilon), 1)`, the norm taken over
    all gradients of all groups (pytorch_optimizer's ``pre_norm``), computed with tensor ops.

    Differences from holocron's code: the moments are bias-corrected, as its docstring writes them
    (``bias_correction=False`` gives holocron's code); ``scale_clip`` is a param-group
    hyperparameter (holocron keeps it on the instance, outside the state dict); the trust ratio
    is not stored in the state (holocron's ``local_lr``); ``maximize`` is offered.
    State: ``step``, ``exp_avg``, ``exp_avg_sq``.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the decays of the first and second moments.
        eps: added to the denominator.
        weight_decay: the decay added to the update before the trust ratio.
        scale_clip: (low, high) bounds of the parameter norm in the ratio (None: (0, 10)).
        bias_correction: bias-correct the moments, as holocron's docs write (False: holocron's code).
        trust_clip: cap the ratio at 1.
        grad_averaging: m <- beta1 m + (1 - beta1) g (False: m <- beta1 m + g).
        max_grad_norm: clip every gradient by the norm of all of them first (None or 0: off).
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the moments in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).
    """

    rule = "lamb"
    fixed_fields = dict(rectify=0.0, sma_threshold=4.0, force_adaptive_momentum=0.0)  # RaLars' options
    setstate_defaults = dict(trust_clip=False, grad_averaging=True, max_grad_norm=None)

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        scale_clip: tuple[float, float] | None = None,
        *,
        bias_correction: bool = True,
        trust_clip: bool = False,
        grad_averaging: bool = True,
        max_grad_norm: float | None = None,
        maximize: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        scale_clip = scale_clip_or_default(scale_clip)
        super().__init__(params, arguments_as_defaults(locals()))


class RaLars(_ScaleClipOptimizer):
    r"""RaLars (holocron.optim): RAdam's rectified update with LAMB's layer-wise trust ratio.

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2,\qquad
        \hat m = m/(1-\beta_1^t),\quad \hat v = v/(1-\beta_2^t)

        \rho_\infty = \frac{2}{1-\beta_2} - 1,\qquad \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t}

        u = \begin{cases} r_t\, \hat m / (\sqrt{\hat v} + \epsilon) & \rho_t > \text{sma\_threshold},\quad
        r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}} \\
        \hat m / (\sqrt{\hat v} + \epsilon) & \text{otherwise, with force\_adaptive\_momentum} \\
        \hat m & \text{otherwise} \end{cases}

        u \leftarrow u + \lambda\theta,\qquad \phi = \mathrm{clamp}(\lVert\theta\rVert, \text{scale\_clip}),\qquad
        \theta \leftarrow \theta - \mathrm{lr}\,\frac{\phi}{\lVert u\rVert}\, u \quad(\text{ratio } 1 \text{ when a norm is } 0)

    It runs on LAMB's rule (the same two passes, the same trust ratio). ``scale_clip=None`` is (0, 10).

    Differences from holocron's code: ``force_adaptive_momentum`` and ``scale_clip`` are param-group
    hyperparameters (holocron keeps them on the instance, outside the state dict); ρ∞ is recomputed
    from the group's current β2 every step (holocron caches it in the group on the first step, so a
    later change of β2 leaves it stale); the threshold 4 is holocron's and is exposed as
    ``sma_threshold`` (torch.optim.RAdam uses 5); the trust ratio is not stored in the state
    (holocron's ``local_lr``); ``maximize`` is offered. State: ``step``, ``exp_avg``, ``exp_avg_sq``.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the decays of the first and second moments.
        eps: added to the denominator.
        weight_decay: the decay added to the update before the trust ratio.
        force_adaptive_momentum: take the adaptive step also while the variance is intractable.
        scale_clip: (low, high) bounds of the parameter norm in the ratio (None: (0, 10)).
        sma_threshold: the SMA length above which the step is rectified (holocron's 4).
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the moments in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).
    """

    rule = "lamb"
    fixed_fields = dict(rectify=1.0, bias_correction=1.0, trust_clip=0.0, grad_averaging=1.0)

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        force_adaptive_momentum: bool = False,
        scale_clip: tuple[float, float] | None = None,
        *,
        sma_threshold: float = 4.0,
        maximize: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        scale_clip = scale_clip_or_default(scale_clip)
        super().__init__(params, arguments_as_defaults(locals()))


class LARS(_ScaleClipOptimizer):
    r"""LARS (You et al., 2017) with holocron.optim's signature, computing what its docs write:

    .. math::
        r = \eta\,\frac{\mathrm{clamp}(\lVert\theta\rVert, \text{scale\_clip})}
            {\lVert g\rVert + \lambda\lVert\theta\rVert + \epsilon}\quad
            (1 \text{ when } \lVert\theta\rVert \text{ or } \lVert g\rVert \text{ is } 0),\qquad
        d = r\,(g + \lambda\theta)

        b \leftarrow \mu b + (1-\tau) d \ (b = d \text{ on the first step}),\qquad
        \theta \leftarrow \theta - \mathrm{lr}\,(d + \mu b \text{ if nesterov else } b)

    (with ``momentum=0``, :math:`\theta \leftarrow \theta - \mathrm{lr}\, d`). η is
    ``trust_coefficient`` (1.0: holocron's ratio; the paper's value is 0.001), ``eps`` is 0 by
    default. The norms are reduced per tensor in fp32 (fp64 for fp64 parameters) inside the C++
    step, in two passes over the tensor, with nothing copied to the host.

    holocron documents the polynomial decay :math:`\alpha_t = \alpha(1 - t/T)^2`; it is a learning
    rate schedule here, as in holocron's code: ``torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=T, power=2)``.

    Differences from holocron's code: the ratio is applied to :math:`g + \lambda\theta` before the
    momentum, as holocron's docs (and the paper) write it, where holocron's code multiplies the
    whole momentum buffer by the current ratio (the same when ``momentum=0``); the learning rate
    stays outside the buffer, as in torch.optim.SGD, so the buffer is ``lr``-free and schedules act
    as in SGD; ``scale_clip`` bounds the weight norm as documented (holocron stores it and never
    uses it); the ratio is 1 when the gradient norm is 0 (holocron: when ‖g‖ + λ‖θ‖ is 0);
    ``p.grad`` is not modified (holocron adds the decay into it); ``lr`` may be an int or a tensor.
    State: ``momentum_buffer`` when momentum != 0.

    Options of common LARS implementations: ``trust_clip=True`` caps the ratio at 1 (LARC's
    clipping mode); ``exclude_1d=True`` leaves tensors of ndim <= 1 (biases, norm scales) out of
    both the adaptation and the weight decay (ratio 1, λ = 0), as the SimCLR/BYOL/Barlow Twins
    recipes do, so they take plain SGD steps.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        momentum: the momentum factor (0: none).
        dampening: the dampening of the momentum.
        weight_decay: the decay added to the gradient inside the ratio.
        nesterov: Nesterov momentum.
        scale_clip: (low, high) bounds of the parameter norm in the ratio (None: (0, 10)).
        trust_coefficient: eta, the ratio's scale.
        eps: added to the ratio's denominator.
        trust_clip: cap the ratio at 1.
        exclude_1d: tensors of ndim <= 1 (biases, norm scales) take plain SGD steps: ratio 1, no decay.
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the momentum buffer in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).
    """

    rule = "lars"
    setstate_defaults = dict(trust_clip=False, exclude_1d=False)

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        scale_clip: tuple[float, float] | None = None,
        *,
        trust_coefficient: float = 1.0,
        eps: float = 0.0,
        trust_clip: bool = False,
        exclude_1d: bool = False,
        maximize: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        scale_clip = scale_clip_or_default(scale_clip)
        super().__init__(params, arguments_as_defaults(locals()))


class TAdam(FusedOptimizer):
    r"""TAdam (Ilboudo et al., 2020) with holocron.optim's signature and math. Per tensor of
    :math:`d` elements, with the moments of the previous step:

    .. math::
        g \leftarrow g + \lambda\theta,\qquad
        w = \frac{\nu + d}{\nu + \sum_j (g_j - m_j)^2 / (v_j + \epsilon)}\quad(\nu = \text{dof}, \text{ or } d \text{ when None})

        m \leftarrow \frac{W}{W + w} m + \frac{w}{W + w} g,\qquad W \leftarrow \frac{2\beta_1 - 1}{\beta_1} W + w
        \quad(W_0 = \beta_1/(1-\beta_1)),\qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2

        \theta \leftarrow \theta - \frac{\mathrm{lr}}{1-\beta_1^t}\,\frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}

    (``amsgrad``: the running maximum of v in the denominator.) The sum is reduced per tensor in
    fp32 (fp64 for fp64 parameters) before the moments change, in the same C++ call; W (state
    ``W_t``) is kept in fp32 (fp64) whatever the parameter dtype.

    On the first step v = 0, so w is about :math:`2d\epsilon/\sum g^2` and the first update is about
    1e-9 of Adam's: that is holocron's (and the paper's) algorithm, kept. ``first_step_weight="adam"``
    uses w = 1 on the first step instead (an Adam-like first step), a documented deviation.

    Differences from holocron's code: W is fp32/fp64 rather than the parameter dtype (a bf16 W
    loses the ratio); ``dof`` must be > 0 when given; β1 must be > 0 (holocron divides by it);
    holocron's docstring writes v with :math:`g_t - g_{t-1}`, its code (and this class) with
    :math:`g_t^2`; ``maximize`` is offered. State: ``step``, ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq`` (amsgrad), ``W_t``.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the decays of the first and second moments (beta1 > 0).
        eps: added to the denominator.
        weight_decay: L2 penalty added to the gradient.
        amsgrad: divide by the running maximum of v.
        dof: the Student-t degrees of freedom nu (None: the tensor's element count).
        first_step_weight: "student_t" (holocron's) or "adam" (w = 1 on the first step).
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the moments in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).
    """

    rule = "tadam"

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        dof: float | None = None,
        *,
        first_step_weight: str = "student_t",
        maximize: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        super().__init__(params, arguments_as_defaults(locals()))

    def _field_value(self, group: dict[str, Any], name: str) -> Any:
        if name == "dof":
            dof = group["dof"]
            if dof is not None and not dof > 0:
                raise ValueError(f"Invalid dof value: {dof} (must be > 0, or None for the tensor's numel)")
            return 0.0 if dof is None else dof  # 0: the tensor's numel
        if name == "adam_first_step":
            if group["first_step_weight"] not in ("student_t", "adam"):
                raise ValueError(f"Invalid first_step_weight: {group['first_step_weight']!r} (expected 'student_t' or 'adam')")
            return group["first_step_weight"] == "adam"
        return super()._field_value(group, name)


class AdamP(FusedOptimizer):
    r"""AdamP (Heo et al., 2021) with holocron.optim's signature, computing the official algorithm
    (clovaai/AdamP):

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2,\qquad
        q = \frac{m \ (\text{nesterov: } \beta_1 m + (1-\beta_1) g)}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}

    For a parameter of ndim > 1, first per output channel (the rows of dim 0), then for the whole
    tensor: if :math:`\max |\cos(g, \theta)| < \delta/\sqrt{n}` (n the elements of a channel, or of
    the tensor), the radial part is removed, :math:`q \leftarrow q - \hat\theta(\hat\theta\cdot q)`
    with :math:`\hat\theta = \theta/(\lVert\theta\rVert + \epsilon)` per channel (or for the tensor),
    and the weight decay is scaled by ``wd_ratio``:

    .. math::
        \theta \leftarrow \theta(1 - \mathrm{lr}\,\lambda\,\rho),\qquad
        \theta \leftarrow \theta - \frac{\mathrm{lr}}{1-\beta_1^t}\, q
        \qquad(\rho = \text{wd\_ratio if projected, else } 1)

    The cosines and the projections come from per-channel sums reduced in fp32 (fp64) inside the
    C++ step, in two passes (moments and sums, then the update), with nothing copied to the host.

    Differences from holocron's code: holocron projects with the layer view only, tests the
    signed cosine of θ with the decayed gradient, projects every tensor (1-D biases and norms
    too), uses L2 weight decay and has no ``wd_ratio`` or ``nesterov``; this class follows the
    paper and the official code on all of these. ``delta`` is a param-group hyperparameter
    (holocron keeps it on the instance); ``amsgrad`` (holocron's option) uses the running
    maximum of v; ``maximize`` is offered. State: ``step``, ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq`` (amsgrad).

    No holocron-compatible preset is offered: holocron's code differs from the official algorithm
    in the five behaviours above, each a different kernel path, and a user migrating from holocron
    gets the algorithm holocron documents (the spec's rule for presets: only where cheap).

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the decays of the first and second moments.
        eps: added to the denominator.
        weight_decay: decoupled decay (scaled by ``wd_ratio`` where projected).
        amsgrad: divide by the running maximum of v.
        delta: the cosine threshold of the projection.
        wd_ratio: the decay's scale on projected tensors.
        nesterov: Nesterov momentum in the update.
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the moments in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer); the blocks
            of a parameter of ndim > 1 restart at each channel (row of dim 0), whose update is its own.
    """

    rule = "adamp"

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        delta: float = 0.1,
        *,
        wd_ratio: float = 0.1,
        nesterov: bool = False,
        maximize: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        super().__init__(params, arguments_as_defaults(locals()))


class Lion(FusedOptimizer):
    r"""Lion (Chen et al., 2023) with pytorch_optimizer's signature and defaults:

    .. math::
        u = \operatorname{sign}(\beta_1 m + (1-\beta_1) g),\quad
        m \leftarrow \beta_2 m + (1-\beta_2) g,\quad
        \theta \leftarrow \theta - \mathrm{lr}\,u

    with decoupled weight decay :math:`\theta \leftarrow \theta(1 - \mathrm{lr}\,\lambda)` (``fixed_decay``:
    :math:`1 - \lambda`), or L2 decay on the gradient with ``weight_decouple=False``. ``sign`` is
    torch's (0 for 0 and NaN). One fused pass; state ``exp_avg``, as pytorch_optimizer names it.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the interpolation of the update's sign, and the momentum's decay.
        weight_decay: the decay coefficient lambda.
        weight_decouple: decoupled decay (AdamW-style, the default) or L2 on the gradient.
        fixed_decay: decoupled decay not scaled by lr.
        foreach: accepted for pytorch_optimizer's signature; fastoptim always runs its fused pass.
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the moments in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).
    """

    rule = "lion"

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        *,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        super().__init__(params, arguments_as_defaults(locals()))
