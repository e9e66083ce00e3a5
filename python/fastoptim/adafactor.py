"""torch.optim.Adafactor on fastoptim's kernels: the second moment of each matrix factored into a
row and a column factor (kernels/factored.h), of each vector kept whole (the rule's two passes)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import FusedOptimizer, _WriteBack, arguments_as_defaults, is_dtensor, local_of, lr_tensor

_FACTORS = ("row_var", "col_var")


class Adafactor(FusedOptimizer):
    r"""torch.optim.Adafactor (Shazeer & Stern, 2018), torch 2.13's signature, defaults and state:

    .. math::
        \hat\beta_{2,t} = 1 - t^{\tau},\quad \rho_t = \min(\mathrm{lr}, 1/\sqrt t),\quad
        \alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta))\,\rho_t,\quad
        \theta \leftarrow \theta(1 - \mathrm{lr}\,\lambda)

    A parameter of two or more dims keeps, per slice of its last two, a row factor :math:`R` and a column
    factor :math:`C` of its second moment (``row_var``, ``col_var``, shaped as torch's); a vector keeps
    it whole (``variance``):

    .. math::
        R \leftarrow \mathrm{lerp}(R, \overline{G^2}^{\,\text{cols}}, t^{\tau}),\
        C \leftarrow \mathrm{lerp}(C, \overline{G^2}^{\,\text{rows}}, t^{\tau}),\
        V = \frac{R C^\top}{\max(\bar R, \epsilon_1)},\quad
        U = G / \sqrt{\max(V, \epsilon_1^2)},\quad
        \theta \leftarrow \theta - \frac{\alpha_t}{\max(1, \mathrm{RMS}(U)/d)}\,U

    A matrix's step is three fused passes (the sums of :math:`G^2` per row and per column; those of
    :math:`U^2` and :math:`\theta^2`; the update), a vector's two. ``eps[0]=None`` is the machine epsilon
    of each parameter's dtype (torch takes the first parameter's for the whole group; the two differ only
    in a group mixing dtypes).

    Args:
        params: the parameters or param groups.
        lr: the learning rate, the cap of the relative step size :math:`\rho_t` (a float or a 1-element tensor).
        beta2_decay: :math:`\tau` (<= 0), the decay exponent of the second moment's weight.
        eps: (eps1, eps2): the floor of the second moment (None: the dtype's epsilon), and of RMS(theta).
        d: the clipping threshold of RMS(U) (>= 1).
        weight_decay: decoupled decay, scaled by lr.
        foreach: torch's flag, kept in the group (fastoptim always runs its fused passes).
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).

    State: ``step``; ``row_var`` and ``col_var`` of each matrix, ``variance`` of each vector.
    """

    rule = "adafactor"
    gathers_in_cpp = False  # (its own gather: matrices and vectors take two steps)
    setstate_defaults = dict(foreach=None, maximize=False)

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        stochastic_rounding: bool = False,
    ) -> None:
        self._factored: list[tuple[dict[str, Any], tuple, list[int], list]] = []
        self._vectors_listed: dict[int, list[int]] = {}
        super().__init__(params, arguments_as_defaults(locals()))

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        if group.get("state_dtype") is not None:
            raise ValueError(f"{where}: Invalid state_dtype value: {group['state_dtype']} (Adafactor keeps its "
                             "factored second moments in the parameter's dtype; state_dtype must be None)")
        super()._check_group(group, where)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._factored, self._vectors_listed = [], {}

    def _steps_whole_tensors(self, group: dict[str, Any]) -> bool:
        """A matrix's factors take its whole rows and columns: sharded DTensors are refused (its
        vectors' rule could add up their shards' sums, but one refusal serves the class)."""
        return True

    def _field_value(self, group: dict[str, Any], name: str) -> Any:
        if name in ("eps1", "eps2"):
            value = group["eps"][int(name[-1]) - 1]
            if name == "eps1" and value is None:
                return -1.0  # (the rule's "unset": the dtype's epsilon)
            if name == "eps1" and isinstance(value, (int, float)) and value < 0:
                raise ValueError(f"Invalid eps[0] value: {value} (must be None or finite and >= 0)")
            return value
        return super()._field_value(group, name)

    def _public_name(self, name: str, group: dict[str, Any] | None = None) -> str:
        if name in ("eps1", "eps2"):
            return f"eps[{int(name[-1]) - 1}]"
        return super()._public_name(name, group)

    # ---- state: two factors for a matrix, one tensor for a vector --------------------------------
    def _keys_of(self, param: Tensor, used: list[str], keys: list[str]) -> tuple[list[str], list[str]]:
        return (list(_FACTORS), [*_FACTORS, "step"]) if param.dim() > 1 else (used, keys)

    def _state_shape(self, name: str, param: Tensor) -> torch.Size:
        shape = list(param.shape)
        if name in _FACTORS:
            shape[-1 - _FACTORS.index(name)] = 1
        return torch.Size(shape)

    def _initial_state(self, name: str, param: Tensor, group: dict[str, Any]) -> Tensor:
        return param.new_zeros(self._state_shape(name, param))

    # ---- the step ------------------------------------------------------------------------------
    def _gather(self, group: dict[str, Any]):
        """The vector step's arguments (as the base class's gather gives them), and the state the group's
        step creates; the matrices' arguments wait in `_factored` (their step follows the vectors')."""
        rule = self._rule_of(group)
        hyper = self._hyper(group)
        used, keys = rule.state_keys(hyper)
        vectors: tuple[list, ...] = ([], [], [], [], [])  # params, grads, variances, steps, indices
        matrices: tuple[list, ...] = ([], [], [], [], [], [])  # params, grads, row_vars, col_vars, steps, indices
        fresh: list[bool] = []
        created: list[tuple[Tensor, Any]] = []
        write_backs: list[tuple[Tensor, _WriteBack]] = []  # (the matrices', committed after their step)
        rounding: dict[int, list[Tensor]] = {id(vectors): [], id(matrices): []}  # (each step's rounding keys)
        rounds = "rounding_key" in self._state_keys(group, rule, hyper)[1]
        for index, p, grad in self._with_grads(group):
            state = self.state.get(p) or {}
            param_used, param_keys = self._keys_of(p, used, keys)
            new = {name: self._initial_state(name, p, group) for name in param_used if name not in state}
            if "step" not in state:
                new["step"] = torch.tensor(0.0, dtype=torch.float32)
            if rounds and "rounding_key" not in state:
                new["rounding_key"] = self._rounding_key(group, p)
            if new:
                created.append((p, new))
            row = [new[k] if k in new else state[k] for k in param_keys]
            if self._holds_dtensors and is_dtensor(p):
                p, grad = self._local_shards(group, index, p, grad)
                row = [local_of(t) for t in row]
            lists = matrices if len(row) == 3 else vectors
            if not p.is_contiguous():  # (both steps walk rows: a contiguous copy, written back after its step)
                contiguous = p.contiguous()
                (write_backs if lists is matrices else created).append((p, _WriteBack(contiguous)))
                p = contiguous
            for column, value in zip(lists, (p, grad.contiguous(), *row, index)):
                column.append(value)
            if rounds:
                rounding[id(lists)].append(new.get("rounding_key", state.get("rounding_key")))
            if lists is vectors:
                fresh.append("variance" in new)
        if not vectors[0] and not matrices[0]:
            return None
        if matrices[0]:
            self._factored.append((group, (*matrices[:5], hyper, lr_tensor(group), rounding[id(matrices)]), matrices[5],
                                   write_backs))
        self._vectors_listed[id(group)] = vectors[4]
        args = (vectors[0], vectors[1], vectors[2], vectors[3], fresh if any(fresh) else [], hyper, lr_tensor(group),
                None, rounding[id(vectors)])
        return args, created

    def _step_listed(self, group: dict[str, Any], *args, **kwargs) -> None:
        self._call(self._rule_of(group).direct, group, *args, listed=self._vectors_listed[id(group)], **kwargs)

    def _update(self, before_update=None) -> None:
        """The base class's step (every check first, then the vectors' steps), then the matrices'."""
        self._factored, self._vectors_listed = [], {}
        factored_step = torch.ops.fastoptim.adafactor_factored_step_

        def check_then(work) -> None:
            for group, args, listed, _ in self._factored:
                self._call(factored_step, group, *args, listed=listed, check_only=True)
            if before_update is not None:
                before_update(work)

        super()._update(check_then)
        for group, args, listed, write_backs in self._factored:
            self._call(factored_step, group, *args, listed=listed)
            self._commit(write_backs)
        self._factored, self._vectors_listed = [], {}
