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

from ._base import FusedOptimizer, check_betas, check_non_negative, check_tensor_lr, to_float


class SGD(FusedOptimizer):
    """torch.optim.SGD (momentum, dampening, Nesterov, weight decay, maximize) on fastoptim's kernels.

    State: ``momentum_buffer`` when momentum != 0, started as a copy of the first gradient as torch does.
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
    ) -> None:
        check_tensor_lr(lr)
        check_non_negative(lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
            maximize=maximize, foreach=foreach, differentiable=differentiable, fused=fused,
        )
        super().__init__(params, defaults)

    # Group keys an older state dict may lack, filled in on load as torch.optim does.
    setstate_defaults = dict(nesterov=False, maximize=False, foreach=None, differentiable=False, fused=False)


class Adagrad(FusedOptimizer):
    """torch.optim.Adagrad (lr_decay, weight decay, initial accumulator, maximize) on fastoptim's kernels.

    State: ``step`` and ``sum``, created for every parameter at construction as torch does.
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
    ) -> None:
        check_tensor_lr(lr)
        check_non_negative(
            lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, initial_accumulator_value=initial_accumulator_value, eps=eps
        )
        defaults = dict(
            lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value, foreach=foreach, maximize=maximize,
            differentiable=differentiable, fused=fused,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["sum"] = self._initial_state("sum", p, group)

    def _initial_state(self, name: str, param: Tensor, group: dict[str, Any]) -> Tensor:
        return torch.full_like(param, group["initial_accumulator_value"], memory_format=torch.preserve_format)

    # Group keys an older state dict may lack, filled in on load as torch.optim does.
    setstate_defaults = dict(foreach=None, maximize=False, differentiable=False, fused=None)


class RMSprop(FusedOptimizer):
    """torch.optim.RMSprop (alpha, momentum, centered, weight decay, maximize) on fastoptim's kernels.

    State: ``step``, ``square_avg``, ``momentum_buffer`` when momentum > 0, ``grad_avg`` when centered.
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
    ) -> None:
        check_tensor_lr(lr)
        check_non_negative(lr=lr, eps=eps, momentum=momentum, weight_decay=weight_decay, alpha=alpha)
        defaults = dict(
            lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered, weight_decay=weight_decay,
            capturable=capturable, foreach=foreach, maximize=maximize, differentiable=differentiable,
        )
        super().__init__(params, defaults)

    # Group keys an older state dict may lack, filled in on load as torch.optim does.
    setstate_defaults = dict(
        momentum=0, centered=False, foreach=None, maximize=False, differentiable=False, capturable=False
    )


class Adam(FusedOptimizer):
    """torch.optim.Adam (betas, eps, weight decay, amsgrad, maximize, decoupled_weight_decay) on
    fastoptim's kernels. AdamW is this class with decoupled weight decay: one rule, one flag.

    State: ``step``, ``exp_avg``, ``exp_avg_sq``, and ``max_exp_avg_sq`` when amsgrad.
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
    ) -> None:
        check_tensor_lr(lr)
        check_non_negative(lr=lr, eps=eps)
        check_betas(betas)
        check_non_negative(weight_decay=weight_decay)
        for index, beta in enumerate(betas):
            if isinstance(beta, Tensor) and beta.numel() != 1:
                raise ValueError(f"Tensor betas[{index}] must be 1-element")
        defaults = dict(
            lr=lr, betas=tuple(to_float(b) for b in betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            maximize=maximize, foreach=foreach, capturable=capturable, differentiable=differentiable,
            fused=fused, decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    # Group keys an older state dict may lack, filled in on load as torch.optim does.
    setstate_defaults = dict(
        amsgrad=False, maximize=False, foreach=None, capturable=False, differentiable=False,
        decoupled_weight_decay=False, fused=None,
    )


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (default 1e-2), on fastoptim's kernels."""

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
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
            capturable=capturable, differentiable=differentiable, fused=fused, decoupled_weight_decay=True,
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
    ) -> None:
        check_tensor_lr(lr)
        check_non_negative(lr=lr, eps=eps)
        if len(betas) != 3:
            raise ValueError(f"Invalid betas: {betas} (expected three values)")
        check_betas(betas)
        check_non_negative(alpha=alpha, weight_decay=weight_decay)
        for name, steps in (("t_alpha", t_alpha), ("t_beta3", t_beta3)):
            if steps is not None and not steps > 0:
                raise ValueError(f"Invalid {name} value: {steps} (expected a number of steps > 0, or None)")
        defaults = dict(
            lr=lr, betas=tuple(betas), alpha=alpha, eps=eps, weight_decay=weight_decay, t_alpha=t_alpha,
            t_beta3=t_beta3, weight_decouple=weight_decouple, maximize=maximize,
        )
        super().__init__(params, defaults)

    def _field_value(self, group: dict[str, Any], name: str) -> Any:
        if name in ("t_alpha", "t_beta3"):
            return group[name] or 0  # None (off) is 0 for the kernel
        return super()._field_value(group, name)


class AdaBelief(FusedOptimizer):
    r"""AdaBelief (Zhuang et al., 2020) with holocron.optim's signature and defaults:

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\qquad
        s \leftarrow \beta_2 s + (1-\beta_2)(g - m)^2 + \epsilon

        \theta \leftarrow \theta - \frac{\mathrm{lr}}{1-\beta_1^t}\,
            \frac{m}{\sqrt{s}/\sqrt{1-\beta_2^t} + \epsilon}

    with the new m in the residual; amsgrad keeps the running maximum of s.

    Differences from holocron's code: the epsilon inside s is there, as holocron's docs and the paper
    write it and the official package (adabelief-pytorch) computes it; ``eps_inside=False`` gives
    holocron's code. ``weight_decouple=True`` decouples the weight decay as the official package does
    by default (the default here keeps holocron's L2); ``maximize`` is offered. The official package's
    rectification (``rectify``) is not offered yet. State: ``step``, ``exp_avg``, ``exp_avg_sq`` (holds
    s, under holocron's and torch's name), ``max_exp_avg_sq`` with amsgrad.
    """

    rule = "adabelief"

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
        maximize: bool = False,
    ) -> None:
        check_tensor_lr(lr)
        check_non_negative(lr=lr, eps=eps)
        check_betas(betas)
        check_non_negative(weight_decay=weight_decay)
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, eps_inside=eps_inside,
            weight_decouple=weight_decouple, maximize=maximize,
        )
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
    the proximal decay alone, as the paper and the official code do. ``maximize`` is offered;
    the official ``max_grad_norm`` (a global reduction) is not offered yet.
    State: ``step``, ``exp_avg``, ``exp_avg_diff``, ``exp_avg_sq``, ``prev_grad``, ``max_exp_avg_sq`` (amsgrad).
    """

    rule = "adan"

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
        maximize: bool = False,
    ) -> None:
        check_tensor_lr(lr)
        check_non_negative(lr=lr, eps=eps)
        if len(betas) != 3:
            raise ValueError(f"Invalid betas: {betas} (expected three values)")
        check_betas(betas)
        check_non_negative(weight_decay=weight_decay)
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, no_prox=no_prox,
            maximize=maximize,
        )
        super().__init__(params, defaults)


class LAMB(FusedOptimizer):
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

    Differences from holocron's code: the moments are bias-corrected, as its docstring writes them
    (``bias_correction=False`` gives holocron's code); ``scale_clip`` is a param-group
    hyperparameter (holocron keeps it on the instance, outside the state dict); the trust ratio
    is not stored in the state (holocron's ``local_lr``); ``maximize`` is offered.
    State: ``step``, ``exp_avg``, ``exp_avg_sq``.
    """

    rule = "lamb"

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
        maximize: bool = False,
    ) -> None:
        check_tensor_lr(lr)
        check_non_negative(lr=lr, eps=eps)
        check_betas(betas)
        check_non_negative(weight_decay=weight_decay)
        scale_clip = (0.0, 10.0) if scale_clip is None else tuple(scale_clip)
        if len(scale_clip) != 2 or not 0.0 <= scale_clip[0] <= scale_clip[1]:
            raise ValueError(f"Invalid scale_clip value: {scale_clip} (expected (low, high) with 0 <= low <= high)")
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, scale_clip=scale_clip,
            bias_correction=bias_correction, maximize=maximize,
        )
        super().__init__(params, defaults)

    def _field_value(self, group: dict[str, Any], name: str) -> Any:
        if name in ("clip_min", "clip_max"):
            return group["scale_clip"][name == "clip_max"]
        return super()._field_value(group, name)
