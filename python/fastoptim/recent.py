"""Optimizers from 2024 on that users ask for, with the signatures of the packages they come from:
``ADOPT`` (pytorch_optimizer's), ``AdamWScheduleFree`` and ``SGDScheduleFree`` (the schedulefree
package's).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from ._base import FusedOptimizer, arguments_as_defaults, to_float


class StepPower:
    """``clip(step) = step ** exponent``, a clip schedule ADOPT's kernel computes itself (per parameter,
    from its own step count): the kind of ``clip_lambda`` fastoptim's ADOPT takes. Called, it gives
    pytorch_optimizer's value, so it also works as that package's ``clip_lambda``.

    Args:
        exponent: e in step ** e (0.25 is the paper's; inf: no clipping after step 1).
    """

    def __init__(self, exponent: float) -> None:
        self.exponent = float(exponent)

    def __call__(self, step: float) -> float:
        return math.pow(step, self.exponent)

    def __repr__(self) -> str:
        return f"StepPower({self.exponent})"


class ADOPT(FusedOptimizer):
    r"""ADOPT (Taniguchi et al., 2024) with pytorch_optimizer's signature and defaults: Adam whose
    gradient is normalised by the second moment of the *earlier* steps, then clipped, then averaged,
    which converges for any :math:`\beta_2`:

    .. math::
        n = \operatorname{clip}\big(g / \max(\sqrt{v}, \epsilon),\ c_t\big),\quad
        m \leftarrow \beta_1 m + (1-\beta_1) n,\quad
        \theta \leftarrow \theta - \mathrm{lr}\, m,\quad
        v \leftarrow \beta_2 v + (1-\beta_2) g^2

    The first step only sets :math:`v = g^2`. One fused pass; state ``exp_avg``, ``exp_avg_sq`` and a
    per-parameter ``step`` (pytorch_optimizer counts steps per group; the two agree whenever every
    parameter has a gradient at every step).

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the decays of the first and second moments.
        clip_lambda: the clip bound :math:`c_t` as a function of the step: ``StepPower(e)`` (``t ** e``;
            the default is the paper's ``StepPower(0.25)``) or None for no clipping. The kernel computes
            it, so other callables are refused with a TypeError; the group keeps its exponent as
            ``clip_exponent`` (``inf`` for None).
        weight_decay: the decay coefficient.
        weight_decouple: decoupled (AdamW-style) decay instead of L2 on the gradient.
        fixed_decay: decoupled decay not scaled by lr.
        foreach: accepted for pytorch_optimizer's signature; fastoptim always runs its fused pass.
        eps: the floor of the denominator.
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the moments in 8 bits, block-scaled (None: as state_dtype says; see FusedOptimizer).
    """

    rule = "adopt"
    setstate_defaults = dict(maximize=False, clip_exponent=0.25)

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        clip_lambda: Callable[[float], float] | None = StepPower(0.25),
        weight_decay: float = 0.0,
        weight_decouple: bool = False,
        fixed_decay: bool = False,
        foreach: bool | None = None,
        eps: float = 1e-6,
        maximize: bool = False,
        *,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        defaults = arguments_as_defaults(locals())
        clip = defaults.pop("clip_lambda")
        if clip is None:
            defaults["clip_exponent"] = math.inf
        elif isinstance(clip, StepPower):
            defaults["clip_exponent"] = clip.exponent
        else:
            raise TypeError(
                f"ADOPT: clip_lambda must be fastoptim.StepPower(exponent) (clip = step ** exponent, computed in "
                f"the kernel) or None (no clipping), got {clip!r}"
            )
        super().__init__(params, defaults)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """FusedOptimizer's load, taking pytorch_optimizer's ADOPT checkpoints too: their step count
        is the param group's (``group["step"]``), which becomes each parameter's ``step``."""
        groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        if isinstance(groups, list) and isinstance(state_dict.get("state"), dict):
            state = dict(state_dict["state"])
            for group in groups:
                if not isinstance(group, dict) or isinstance(group.get("step"), (bool, type(None))):
                    continue
                for key in group.get("params", []):
                    entry = state.get(key)
                    if isinstance(entry, dict) and entry and "step" not in entry:
                        state[key] = {**entry, "step": torch.tensor(float(group["step"]), dtype=torch.float32)}
            state_dict = {**state_dict, "state": state}
        super().load_state_dict(state_dict)

    @property
    def clip_lambda(self) -> StepPower | None:
        """The first param group's clip schedule, as pytorch_optimizer's attribute of that name."""
        exponent = self.param_groups[0]["clip_exponent"]
        return None if math.isinf(exponent) else StepPower(exponent)


class _ScheduleFree(FusedOptimizer):
    """What Schedule-Free AdamW and SGD share: the parameters hold y while training and the average
    x while evaluating; ``train()`` and ``eval()`` switch them, as the schedulefree package does, and
    each param group records its mode in ``train_mode`` (so a state dict carries it).

    Unlike the package, a new optimizer starts in train mode (the package starts in eval mode and
    raises at the first step unless ``train()`` was called; on a new optimizer ``train()`` changes no
    tensor, so starting in train mode only spares that call). The schedule's running values (the
    package's group keys ``k``, ``lr_max`` and ``weight_sum``) are per-parameter state here
    (``step``, ``lr_max``, ``weight_sum``): the same numbers whenever every parameter has a gradient
    at every step."""

    scalar_state_shape = ()
    setstate_defaults = dict(train_mode=True, foreach=True)

    def _beta(self, group) -> float:
        raise NotImplementedError

    @torch.no_grad()
    def _move_to(self, train_mode: bool) -> None:
        """y = lerp(x, z, 1 - beta) for training, x = lerp(y, z, 1 - 1/beta) for evaluation."""
        for group in self.param_groups:
            if group["train_mode"] == train_mode:
                continue
            beta = to_float(self._beta(group))
            weight = 1 - beta if train_mode else 1 - 1 / beta
            for p in group["params"]:
                z = self.state[p].get("z") if p in self.state else None
                if z is not None:
                    p.lerp_(end=z.to(device=p.device, dtype=p.dtype), weight=weight)  # (z in bf16 with state_dtype)
            group["train_mode"] = train_mode

    def train(self) -> None:
        """Puts y in the parameters (where the gradients of training steps are taken)."""
        self._move_to(True)

    def eval(self) -> None:
        """Puts the average x in the parameters (what to evaluate and to save)."""
        self._move_to(False)

    def _update(self, before_update=None) -> None:
        if not all(group["train_mode"] for group in self.param_groups):
            raise RuntimeError(
                f"{type(self).__name__} was not in train mode when step was called: call optimizer.train() "
                "before training steps and optimizer.eval() before evaluation"
            )
        super()._update(before_update)


class AdamWScheduleFree(_ScheduleFree):
    r"""Schedule-Free AdamW (Defazio et al., 2024) with the schedulefree package's signature and
    defaults: no learning-rate schedule, an average of the iterates instead, and a linear warmup.

    .. math::
        v \leftarrow \beta_2 v + (1-\beta_2) g^2,\quad u = \frac{g}{\sqrt{v/(1-\beta_2^t)}+\epsilon} + \lambda y,\quad
        y \leftarrow (1-c_t) y + c_t z + \mathrm{lr}_t(\beta_1(1-c_t) - 1) u,\quad z \leftarrow z - \mathrm{lr}_t u

    with :math:`c_t = w_t / \sum_{i \le t} w_i`, :math:`w_t = t^r\,\mathrm{lr}_{\max}^{p}`. One fused pass;
    state ``z``, ``exp_avg_sq``, ``step``, ``lr_max``, ``weight_sum``. Call ``eval()`` before evaluating
    or saving and ``train()`` before training again (see the base class for what differs from the package).

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the interpolation of y between x and z, and the second moment's decay.
        eps: added to the denominator.
        weight_decay: L2 decay, taken at y.
        warmup_steps: steps of linear warmup of lr.
        r: the power of t in the averaging weights.
        weight_lr_power: the power of the largest lr so far in the averaging weights.
        foreach: accepted for the package's signature; fastoptim always runs its fused pass.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the second moment ``exp_avg_sq`` in 8 bits, block-scaled (None: as state_dtype says; see
            FusedOptimizer); ``z``, a copy of the weights whose 8-bit error would not average out, stays full precision.
    """

    rule = "adamw_schedulefree"

    def __init__(
        self,
        params,
        lr: float | Tensor = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = True,
        *,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        super().__init__(params, {**arguments_as_defaults(locals()), "train_mode": True})

    def _beta(self, group):
        return group["betas"][0]


class SGDScheduleFree(_ScheduleFree):
    r"""Schedule-Free SGD (Defazio et al., 2024) with the schedulefree package's signature and
    defaults: the interpolation of :class:`AdamWScheduleFree` along :math:`u = g + \lambda y`, with
    ``momentum`` as its beta. State ``z``, ``step``, ``lr_max``, ``weight_sum``.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        momentum: the interpolation of y between x and z, in (0, 1).
        weight_decay: L2 decay, taken at y.
        warmup_steps: steps of linear warmup of lr.
        r: the power of t in the averaging weights.
        weight_lr_power: the power of the largest lr so far in the averaging weights.
        foreach: accepted for the package's signature; fastoptim always runs its fused pass.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
    """

    rule = "sgd_schedulefree"

    def __init__(
        self,
        params,
        lr: float | Tensor = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2,
        foreach: bool | None = True,
        *,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(params, {**arguments_as_defaults(locals()), "train_mode": True})

    def _beta(self, group):
        return group["momentum"]
