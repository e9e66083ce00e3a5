"""The rest of torch.optim's element-wise optimizers: NAdam, RAdam, Adamax, Adadelta, ASGD and
Rprop, each with torch 2.13's signature, defaults, group keys and state names, on fastoptim's fused
kernels (one C++ rule each). The hyperparameters are checked by the rule's field list (the same
checks the libtorch and edge front ends run), with torch's messages ("Invalid learning rate: -1.0").

As for the classic five: ``foreach``, ``capturable`` and ``differentiable=False`` are accepted and
kept in the param group (state dicts move between fastoptim and torch.optim both ways) and do not
change what runs; bf16/fp16 params keep state in their dtype and each update is computed in float32
and rounded once. Per-parameter scalar state (NAdam's ``mu_product``, ASGD's ``eta`` and ``mu``)
holds the float32 numbers torch's float32 scalar tensors hold, so the steps agree with torch's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import FusedOptimizer, arguments_as_defaults


class NAdam(FusedOptimizer):
    r"""torch.optim.NAdam (Dozat, 2016): Adam with Nesterov momentum and momentum decay.

    .. math::
        \mu_t = \beta_1(1 - \tfrac12 0.96^{t\psi}),\quad
        \theta \leftarrow \theta - \mathrm{lr}\Big(\frac{1-\mu_t}{1-\prod_{i\le t}\mu_i}\,g
        + \frac{\mu_{t+1}}{1-\prod_{i\le t+1}\mu_i}\,m\Big) \Big/ \Big(\sqrt{v/(1-\beta_2^t)}+\epsilon\Big)

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the decays of the first and second moments.
        eps: added to the denominator.
        weight_decay: L2 penalty, or decoupled decay with ``decoupled_weight_decay``.
        momentum_decay: psi, the decay of the momentum coefficient mu_t.
        decoupled_weight_decay: AdamW-style decay (NAdamW).
        foreach, capturable, differentiable: torch's flags, kept in the group (fastoptim always runs its fused step).
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the moments in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).

    State: ``step``, ``mu_product``, ``exp_avg``, ``exp_avg_sq``.
    """

    rule = "nadam"
    scalar_state_shape = ()

    def __init__(
        self,
        params,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        super().__init__(params, arguments_as_defaults(locals()))

    setstate_defaults = dict(
        maximize=False, foreach=None, capturable=False, differentiable=False, decoupled_weight_decay=False
    )


class RAdam(FusedOptimizer):
    r"""torch.optim.RAdam (Liu et al., 2019): Adam whose adaptive step is rectified by
    :math:`r_t` once the SMA length :math:`\rho_t > 5`, and plain bias-corrected momentum before.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the decays of the first and second moments.
        eps: added to the denominator.
        weight_decay: L2 penalty, or decoupled decay with ``decoupled_weight_decay``.
        decoupled_weight_decay: AdamW-style decay.
        foreach, capturable, differentiable: torch's flags, kept in the group.
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the moments in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).

    State: ``step``, ``exp_avg``, ``exp_avg_sq``.
    """

    rule = "radam"

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        super().__init__(params, arguments_as_defaults(locals()))

    setstate_defaults = dict(
        foreach=None, maximize=False, differentiable=False, decoupled_weight_decay=False, capturable=False
    )


class Adamax(FusedOptimizer):
    r"""torch.optim.Adamax (Kingma & Ba, 2015): Adam with the infinity norm,
    :math:`u \leftarrow \max(\beta_2 u, |g| + \epsilon)`,
    :math:`\theta \leftarrow \theta - \frac{\mathrm{lr}}{1-\beta_1^t} m / u`.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the decays of the first moment and of the infinity norm.
        eps: added to |g| inside the maximum.
        weight_decay: L2 penalty.
        foreach, capturable, differentiable: torch's flags, kept in the group.
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the moments in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).

    State: ``step``, ``exp_avg``, ``exp_inf``.
    """

    rule = "adamax"

    def __init__(
        self,
        params,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        super().__init__(params, arguments_as_defaults(locals()))

    setstate_defaults = dict(foreach=None, maximize=False, differentiable=False, capturable=False)


class Adadelta(FusedOptimizer):
    r"""torch.optim.Adadelta (Zeiler, 2012):
    :math:`v \leftarrow \rho v + (1-\rho) g^2`,
    :math:`d = \sqrt{a+\epsilon}/\sqrt{v+\epsilon}\; g`,
    :math:`a \leftarrow \rho a + (1-\rho) d^2`, :math:`\theta \leftarrow \theta - \mathrm{lr}\, d`.

    Args:
        params: the parameters or param groups.
        lr: scales the update (torch's; 1.0 is Zeiler's method).
        rho: the decay of both running averages, in [0, 1].
        eps: added inside both square roots.
        weight_decay: L2 penalty.
        foreach, capturable, differentiable: torch's flags, kept in the group.
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps its two averages in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).

    State: ``step``, ``square_avg``, ``acc_delta``.
    """

    rule = "adadelta"

    def __init__(
        self,
        params,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        super().__init__(params, arguments_as_defaults(locals()))

    setstate_defaults = dict(foreach=None, maximize=False, differentiable=False, capturable=False)


class ASGD(FusedOptimizer):
    r"""torch.optim.ASGD (Polyak & Juditsky, 1992): SGD with a decaying step
    :math:`\eta_t = \mathrm{lr}/(1+\lambda\,\mathrm{lr}\,t)^\alpha`, weight decay by :math:`\lambda\eta`,
    and the running average ``ax`` of the iterates from step ``t0`` on.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        lambd: the decay term.
        alpha: the power of the step's decay.
        t0: the step at which averaging starts.
        weight_decay: L2 penalty.
        foreach, capturable, differentiable: torch's flags, kept in the group.
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).

    State: ``step``, ``eta``, ``mu`` (one float32 value each, as torch's; ``eta`` is the step size the
    next step uses, computed from this step's lr), ``ax``.
    """

    rule = "asgd"
    scalar_state_shape = ()

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-2,
        lambd: float = 1e-4,
        alpha: float = 0.75,
        t0: float = 1e6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        *,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(params, arguments_as_defaults(locals()))

    setstate_defaults = dict(foreach=None, maximize=False, differentiable=False, capturable=False)


class Rprop(FusedOptimizer):
    r"""torch.optim.Rprop (Riedmiller & Braun, 1993): a step size per element, multiplied by
    ``etas[1]`` while the gradient keeps its sign and by ``etas[0]`` when it flips (then the
    gradient counts as zero), clamped to ``step_sizes``; :math:`\theta \leftarrow \theta - \mathrm{sign}(g)\,s`.

    Args:
        params: the parameters or param groups.
        lr: the initial step size (a float or a 1-element tensor).
        etas: (etaminus, etaplus), with 0 < etaminus < 1 < etaplus.
        step_sizes: (min, max) of the step sizes.
        foreach, capturable, differentiable: torch's flags, kept in the group.
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).

    State: ``step``, ``prev``, ``step_size``.
    """

    rule = "rprop"
    public_names = {"etaminus": "etas[0]", "etaplus": "etas[1]", "step_size_min": "step_sizes[0]",
                    "step_size_max": "step_sizes[1]"}
    _GROUP_KEYS = {"etaminus": ("etas", 0), "etaplus": ("etas", 1), "step_size_min": ("step_sizes", 0),
                   "step_size_max": ("step_sizes", 1)}

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-2,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50),
        *,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(params, arguments_as_defaults(locals()))

    def _field_value(self, group: dict[str, Any], name: str) -> Any:
        if name in self._GROUP_KEYS:
            key, index = self._GROUP_KEYS[name]
            return group[key][index]
        return super()._field_value(group, name)

    setstate_defaults = dict(foreach=None, maximize=False, differentiable=False, capturable=False)
