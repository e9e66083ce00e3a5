"""The base class every fastoptim optimizer shares.

A subclass names its C++ rule and maps a param group to the rule's hyperparameters; the base class
does the rest the way torch.optim does it: lazy state under torch's names, a per-parameter `step`
tensor, closures, step hooks (inherited from torch.optim.Optimizer), and one call into C++ per
param group per step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _C


def check_tensor_lr(lr: Any) -> None:
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")


def to_float(value: Any) -> float:
    """A hyperparameter as a float; 1-element tensors (as torch allows for betas) too."""
    return float(value.detach().cpu()) if isinstance(value, Tensor) else float(value)


class FusedOptimizer(torch.optim.Optimizer):
    """A torch.optim.Optimizer whose update runs in fastoptim's C++ kernels."""

    #: name of the C++ rule (the op is torch.ops.fastoptim.<rule>_step_)
    rule: str

    def __init__(self, params, defaults: dict[str, Any]) -> None:
        if defaults.get("differentiable"):
            raise ValueError(
                f"{type(self).__name__}: differentiable=True is not supported; fastoptim's kernels "
                "update tensors in place outside autograd (use torch.optim for differentiable steps)"
            )
        super().__init__(params, defaults)
        meta = _C.rules[self.rule]
        self._fields = [name for name, _, _ in meta["fields"]]
        # (state name, field that must be nonzero for it to exist, or None)
        self._state_slots = [(name, needs) for name, needs in meta["state"]]
        self._counts_steps = bool(meta["counts_steps"])
        self._op = getattr(torch.ops.fastoptim, f"{self.rule}_step_")

    # ---- what a subclass may override -------------------------------------------------------
    def _field_value(self, group: dict[str, Any], name: str) -> Any:
        """The value of rule field `name` in `group`; torch's group keys by default."""
        return group[name]

    def _initial_state(self, name: str, param: Tensor, group: dict[str, Any]) -> Tensor:
        """A new state tensor: zeros shaped like the parameter, in its dtype, as torch.optim does."""
        return torch.zeros_like(param, memory_format=torch.preserve_format)

    # ---- the step -----------------------------------------------------------------------------
    def _hyper(self, group: dict[str, Any]) -> list[float]:
        values = []
        for name in self._fields:
            value = self._field_value(group, name)
            # A tensor lr goes to the op as a tensor; its slot here is a placeholder.
            values.append(0.0 if name == "lr" and isinstance(value, Tensor) else to_float(value))
        return values

    def _used_state(self, hyper: list[float]) -> list[str]:
        values = dict(zip(self._fields, hyper))
        return [name for name, needs in self._state_slots if needs is None or values[needs] != 0]

    def _param_label(self, group: dict[str, Any], index: int, param: Tensor) -> str:
        names = group.get("param_names")
        name = f"'{names[index]}'" if names else f"#{index}"
        return f"parameter {name} (shape {tuple(param.shape)}) of param group {self.param_groups.index(group)}"

    def _step_group(self, group: dict[str, Any]) -> None:
        hyper = self._hyper(group)
        used = self._used_state(hyper)
        params: list[Tensor] = []
        grads: list[Tensor] = []
        state_lists: list[list[Tensor]] = [[] for _ in used]
        steps: list[Tensor] = []
        fresh: list[bool] = []
        created: dict[Tensor, dict[str, Tensor]] = {}
        for index, p in enumerate(group["params"]):
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise TypeError(
                    f"{type(self).__name__} got a sparse gradient for {self._param_label(group, index, p)}; "
                    "fastoptim does not support sparse gradients yet"
                )
            state = self.state.get(p, {})
            new: dict[str, Tensor] = {}
            if self._counts_steps and "step" not in state:
                new["step"] = torch.tensor(0.0, dtype=torch.float32)
            for name in used:
                if name not in state:
                    new[name] = self._initial_state(name, p, group)
            if new:
                created[p] = new
            params.append(p)
            grads.append(grad if grad.is_contiguous() else grad.contiguous())
            for slot, name in zip(state_lists, used):
                slot.append(new[name] if name in new else state[name])
            if self._counts_steps:
                steps.append(new["step"] if "step" in new else state["step"])
            fresh.append(any(name in new for name in used))
        if not params:
            return
        lr = group["lr"]
        flat_state = [t for slot in state_lists for t in slot]
        self._op(params, grads, flat_state, steps, fresh, hyper, lr if isinstance(lr, Tensor) else None)
        # State created for this step joins the optimizer only once the step has succeeded, so a
        # rejected step leaves the optimizer exactly as it was.
        for p, new in created.items():
            self.state[p].update(new)

    @torch.no_grad()
    def step(self, closure=None):
        """Performs a single optimization step.

        Args:
            closure (Callable, optional): A closure that reevaluates the model and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss
