"""The base class every fastoptim optimizer shares.

A subclass names its C++ rule and maps a param group to the rule's hyperparameters; the base class
does the rest the way torch.optim does it: lazy state under torch's names, a per-parameter `step`
tensor, closures, step hooks (inherited from torch.optim.Optimizer), and one call into C++ per
param group per step.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor

from . import _C


def check_tensor_lr(lr: Any) -> None:
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")


def check_non_negative(**values: Any) -> None:
    """Raises torch.optim's ValueError for the first negative (or NaN) value, in the order given:
    "Invalid learning rate: -1", "Invalid epsilon value: ...", "Invalid <name> value: ..."."""
    for name, value in values.items():
        if not 0.0 <= value:
            label = {"lr": "learning rate", "eps": "epsilon value"}.get(name, f"{name} value")
            raise ValueError(f"Invalid {label}: {value}")


def check_betas(betas) -> None:
    """torch.optim's message for a beta outside [0, 1)."""
    for index, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {index}: {beta}")


def check_max_grad_norm(max_grad_norm: Any) -> None:
    """None (or 0, as pytorch_optimizer and sail-sg write "off") or a positive threshold."""
    if max_grad_norm is not None and not max_grad_norm >= 0.0:
        raise ValueError(f"Invalid max_grad_norm value: {max_grad_norm} (expected a number >= 0, or None)")


def check_positive_int(**values: Any) -> None:
    """A ValueError naming the first value that is not an integer >= 1 (bools are not integers here)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Invalid {name} value: {value!r} (expected an integer >= 1)")


def to_float(value: Any) -> float:
    """A hyperparameter as a float; 1-element tensors (as torch allows for betas) too."""
    return float(value.detach().cpu()) if isinstance(value, Tensor) else float(value)


class FusedOptimizer(torch.optim.Optimizer):
    """A torch.optim.Optimizer whose update runs in fastoptim's C++ kernels."""

    #: name of the C++ rule (the op is torch.ops.fastoptim.<rule>_step_)
    rule: str
    #: group keys an older state dict may lack, filled in on load (torch.optim's __setstate__ does the same)
    setstate_defaults: dict[str, Any] = {}
    #: rule fields this class pins instead of reading them from the param group (e.g. LAMB's rule
    #: also serves RaLars, whose rectification LAMB switches off)
    fixed_fields: dict[str, float] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.setstate_defaults.items():
                group.setdefault(key, value)

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
        self._state_slots = [(name, needs) for name, needs, _ in meta["state"]]
        # The rule's start values where a slot does not start at zero (Adagrad's sum, TAdam's W,
        # AMaC's noise key): (hyper, slot index, parameter position) -> value; None: all zero.
        self._rule_initial_value = meta["initial_value"]
        # per-tensor scalar state, kept in the compute type: float32, or float64 for float64 params
        self._scalar_state = [name for name, _, scalar in meta["state"] if scalar]
        if self._scalar_state:
            self.register_load_state_dict_post_hook(FusedOptimizer._scalar_state_to_compute_dtype)
        self._counts_steps = bool(meta["counts_steps"])
        # The same C++ step two ways: the custom op (traceable by torch.compile) and a direct
        # pybind11 entry with half the call overhead for eager steps.
        self._op = getattr(torch.ops.fastoptim, f"{self.rule}_step_")
        self._direct = getattr(_C, f"{self.rule}_step_")
        self._direct_gathered = getattr(_C, f"{self.rule}_step_gathered")

    # ---- what a subclass may override -------------------------------------------------------
    def _field_value(self, group: dict[str, Any], name: str) -> Any:
        """The value of rule field `name` in `group`: torch's group keys, with the rules' beta1,
        beta2, ... read from the group's `betas` tuple."""
        if name in self.fixed_fields:
            return self.fixed_fields[name]
        if name.startswith("beta") and name[4:].isdigit():
            return group["betas"][int(name[4:]) - 1]
        return group[name]

    def _initial_state(self, name: str, param: Tensor, group: dict[str, Any]) -> Tensor:
        """A new state tensor, filled with the rule's start value for it (zero unless the rule
        says otherwise): shaped like the parameter, in its dtype, as torch.optim does; a per-tensor
        scalar is one value in the compute type."""
        value = 0.0
        if self._rule_initial_value is not None:
            slot = next(i for i, (slot_name, _) in enumerate(self._state_slots) if slot_name == name)
            value = self._rule_initial_value(self._hyper(group), slot, self._position(param))
        if name in self._scalar_state:
            return torch.full((1,), value, dtype=self._compute_dtype(param), device=param.device)
        return torch.full_like(param, value, memory_format=torch.preserve_format)

    def _position(self, param: Tensor) -> int:
        """The parameter's position among all parameters, from a map rebuilt only when a parameter
        is new to it (a first step creates all states: one pass, not one per parameter)."""
        positions = getattr(self, "_positions_by_id", None)
        if positions is None or id(param) not in positions:
            params = (q for g in self.param_groups for q in g["params"])
            positions = self._positions_by_id = {id(q): i for i, q in enumerate(params)}
        return positions[id(param)]

    @staticmethod
    def _compute_dtype(param: Tensor) -> torch.dtype:
        return torch.float64 if param.dtype == torch.float64 else torch.float32

    @staticmethod
    def _scalar_state_to_compute_dtype(optimizer: "FusedOptimizer") -> None:
        # torch.optim's load_state_dict casts floating state to the parameter's dtype; per-tensor
        # scalars stay in the compute type, so bf16 parameters keep a float32 scalar.
        for p, state in optimizer.state.items():
            for name in optimizer._scalar_state:
                if name in state:
                    state[name] = state[name].to(FusedOptimizer._compute_dtype(p))

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

    def _state_keys(self, hyper: list[float]) -> tuple[list[str], list[str]]:
        """The state slots this step uses, and the per-parameter state keys it reads: those slots,
        then "step" for rules that count steps."""
        used = self._used_state(hyper)
        return used, used + ["step"] if self._counts_steps else used

    def _param_label(self, group: dict[str, Any], index: int, param: Tensor) -> str:
        names = group.get("param_names")
        name = f"'{names[index]}'" if names else f"#{index}"
        group_index = next(i for i, g in enumerate(self.param_groups) if g is group)  # by identity: == compares tensors
        return f"parameter {name} (shape {tuple(param.shape)}) of param group {group_index}"

    def _gather(self, group: dict[str, Any]):
        """The arguments of this group's C++ step, and the state it would create: (args, created),
        or None when no parameter of the group has a gradient. Changes nothing."""
        hyper = self._hyper(group)
        used, keys = self._state_keys(hyper)
        if not keys:  # e.g. SGD without momentum: no state at all
            rows_of = None
        elif len(keys) == 1:
            only = keys[0]
            rows_of = lambda state: (state[only],)  # noqa: E731
        else:
            rows_of = operator.itemgetter(*keys)
        all_state = self.state
        get_state = all_state.get
        params: list[Tensor] = []
        grads: list[Tensor] = []
        rows: list[tuple[Tensor, ...]] = []  # per parameter: its state tensors in `keys` order
        fresh_indices: list[int] = []
        created: list[tuple[Tensor, dict[str, Tensor]]] = []
        # This loop runs once per parameter per step: plain lookups and appends only; the state
        # lists are built from `rows` afterwards.
        for index, p in enumerate(group["params"]):
            grad = p.grad
            if grad is None:
                continue
            if grad.layout != torch.strided:
                raise TypeError(
                    f"{type(self).__name__} got a sparse gradient ({grad.layout}) for "
                    f"{self._param_label(group, index, p)}; fastoptim does not support sparse gradients yet"
                )
            if rows_of is not None:
                state = get_state(p)  # one lookup: hashing a tensor is a Python-level call
                try:
                    row = rows_of(state)
                except (KeyError, TypeError):  # TypeError: no state yet (None)
                    row = None
                if row is None:
                    row, is_fresh = self._state_with_missing(p, group, state or {}, used, keys, created)
                    if is_fresh:
                        fresh_indices.append(len(params))
                rows.append(row)
            params.append(p)
            grads.append(grad if grad.is_contiguous() else grad.contiguous())
        if not params:
            return None
        columns = list(zip(*rows)) if rows else []
        state_lists = columns[: len(used)]
        steps = list(columns[len(used)]) if self._counts_steps else []
        flat_state = [t for column in state_lists for t in column]
        fresh = [False] * len(params)
        for i in fresh_indices:
            fresh[i] = True
        lr = group["lr"]
        args = (params, grads, flat_state, steps, fresh if fresh_indices else [], hyper, lr if isinstance(lr, Tensor) else None)
        return args, created

    def _gather_steady(self):
        """The steady-state step's arguments of every group, gathered in C++ (no Python loop over
        the params): per group with a gradient, (gathered, hyper, lr tensor or None). None when the
        Python gather is needed: some state is still to be created, a gradient is sparse, or a
        group clips the global gradient norm."""
        work = []
        for group in self.param_groups:
            if group.get("max_grad_norm"):
                return None
            hyper = self._hyper(group)
            used, keys = self._state_keys(hyper)
            gathered = _C.gather_group(group["params"], self.state, keys, len(used))
            if gathered is None:
                return None
            if len(gathered):
                lr = group["lr"]
                work.append((gathered, hyper, lr if isinstance(lr, Tensor) else None))
        return work

    @staticmethod
    def _global_grad_norm(gathered) -> Tensor | None:
        """The L2 norm of every gradient of this step, all groups together, when a group clips it
        (its ``max_grad_norm``); else None. Tensor ops only (in float64): no value leaves the
        device. It reads the gradients once more, as the official Adan and pytorch_optimizer do."""
        if not any(group.get("max_grad_norm") for group, _ in gathered):
            return None
        grads = [g for _, (args, _) in gathered for g in args[1]]
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float64)))

    @staticmethod
    def _grad_scale(group: dict[str, Any], grad_norm: Tensor | None) -> Tensor | None:
        """The factor on this group's gradients: min(max_grad_norm / (norm + eps), 1), or None."""
        max_norm = group.get("max_grad_norm")
        if not max_norm or grad_norm is None:
            return None
        return torch.clamp(max_norm / (grad_norm + group["eps"]), max=1.0)

    def _state_with_missing(self, p, group, state, used, keys, created):
        """The row of state tensors (in `keys` order) for `p`, with new tensors for what `state`
        lacks; the new ones are recorded in `created`. Also returns whether any of them is new."""
        new: dict[str, Tensor] = {}
        if self._counts_steps and "step" not in state:
            new["step"] = torch.tensor(0.0, dtype=torch.float32)
        for name in used:
            if name not in state:
                new[name] = self._initial_state(name, p, group)
        created.append((p, new))
        return tuple(new[k] if k in new else state[k] for k in keys), any(name in new for name in used)

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
        self._update()
        return loss

    def _update(self, before_update=None) -> None:
        """One C++ step per param group. Every group is checked before any tensor changes; then
        ``before_update(work)`` (if given) may write state tensors, e.g. fold in a new estimate,
        knowing the step will not be rejected. ``work`` holds per group (group, args, created)."""
        if before_update is None and not torch.compiler.is_compiling():
            steady = self._gather_steady()
            if steady is not None:
                for gathered, hyper, lr in steady[1:]:  # the first group is checked inside its own step
                    self._direct_gathered(gathered, hyper, lr, check_only=True)
                for gathered, hyper, lr in steady:
                    self._direct_gathered(gathered, hyper, lr)
                return
        gathered = [(group, w) for group in self.param_groups if (w := self._gather(group)) is not None]
        grad_norm = self._global_grad_norm(gathered)
        work = [(group, (*args, self._grad_scale(group, grad_norm)), created) for group, (args, created) in gathered]
        if torch.compiler.is_compiling():
            if before_update is not None:
                before_update(work)
            for _, args, created in work:
                self._op(*args)
                self._commit(created)
            return
        # The first group is checked inside its own step, unless something runs before it.
        for _, args, _ in work if before_update is not None else work[1:]:
            self._direct(*args, check_only=True)
        if before_update is not None:
            before_update(work)
        for _, args, created in work:
            self._direct(*args)
            self._commit(created)

    def _state_column(self, args, name: str) -> list[Tensor]:
        """From a group's step arguments: the state tensors `name` of its params, in their order."""
        params, hyper, flat_state = args[0], args[5], args[2]
        index = self._used_state(hyper).index(name)
        return list(flat_state[index * len(params):(index + 1) * len(params)])

    def _commit(self, created) -> None:
        # State created for a step joins the optimizer only once the step has succeeded, so a
        # rejected step leaves the optimizer exactly as it was.
        for p, new in created:
            self.state[p].update(new)
