"""torch.optim.Adafactor on fastoptim's kernels: the second moment of each matrix factored into a
row and a column factor (kernels/factored.h), of each vector kept whole (the rule's two passes)."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

from ._base import (FusedOptimizer, _WriteBack, add_up_across_shards, add_up_tensors_across_shards, arguments_as_defaults,
                    is_dtensor, local_of, lr_tensor, step_device)

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
    in a group mixing dtypes). A sharded DTensor matrix (its rows or its columns cut, as FSDP2's
    ``Shard(0)`` cuts rows) steps in three calls, its shards' sums added up across the mesh between them.

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
        self._factored: list[tuple[dict[str, Any], tuple, list[int], list, list[Tensor]]] = []
        self._vectors_listed: dict[int, list[int]] = {}
        self._vector_params: dict[int, list[Tensor]] = {}
        super().__init__(params, arguments_as_defaults(locals()))

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        if group.get("state_dtype") is not None:
            raise ValueError(f"{where}: Invalid state_dtype value: {group['state_dtype']} (Adafactor keeps its "
                             "factored second moments in the parameter's dtype; state_dtype must be None)")
        super()._check_group(group, where)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._factored, self._vectors_listed, self._vector_params = [], {}, {}

    # ---- sharded DTensors: a matrix's shards add up what its factors and its step size need ----------
    @staticmethod
    def _cut(param: Tensor) -> int | None:
        """What the shards of a DTensor matrix cut, for the factored step: 0 whole slices of its last
        two dims (or nothing), 1 its rows, 2 its columns; None for rows and columns at once, or a
        strided shard (FSDP2 beside tensor parallelism), which it does not step."""
        from torch.distributed.tensor import Shard

        rows, columns = param.dim() - 2, param.dim() - 1
        cuts = set()
        for placement in param.placements:
            if type(placement) is not Shard and placement.is_shard():
                return None
            if placement.is_shard(rows) or placement.is_shard(columns):
                cuts.add(1 if placement.is_shard(rows) else 2)
        return None if len(cuts) > 1 else max(cuts, default=0)

    def _steps_shard(self, group: dict[str, Any], param: Tensor) -> bool:
        return param.dim() < 2 or self._cut(param) is not None

    def _shard_refusal(self, group: dict[str, Any], label: str, param: Tensor) -> str:
        return (f"Adafactor factors the second moment of a matrix over its last two dims, and steps a sharded "
                f"DTensor matrix whose shards cut its rows or its columns (or the dims before), not both at once "
                f"nor in strided shards; {label} has placements {param.placements} (redistribute it, or keep it "
                f"whole along one of its last two dims)")

    def _stepped_params(self, group: dict[str, Any]) -> list[Tensor]:
        return self._vector_params[id(group)]

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
        """Zeros in the factor's shape; a DTensor matrix's factor is a DTensor of its placements, but
        replicated along the dim the factor collapses (every shard of a row keeps that row's factor)."""
        shape = self._state_shape(name, param)
        if name not in _FACTORS or not is_dtensor(param):
            return param.new_zeros(shape)
        from torch.distributed.tensor import Replicate, zeros

        collapsed = param.dim() - 1 - _FACTORS.index(name)
        placements = [Replicate() if placement.is_shard(collapsed) else placement for placement in param.placements]
        return zeros(shape, device_mesh=param.device_mesh, placements=placements, dtype=param.dtype)

    # ---- the step ------------------------------------------------------------------------------
    def _gather(self, group: dict[str, Any]):
        """The vector step's arguments (as the base class's gather gives them), and the state the group's
        step creates; the matrices' arguments wait in `_factored` (their step follows the vectors')."""
        rule = self._rule_of(group)
        hyper = self._hyper(group)
        used, keys = rule.state_keys(hyper)
        vectors: tuple[list, ...] = ([], [], [], [], [], [])  # params, grads, variances, steps, indices, as given
        matrices: tuple[list, ...] = ([], [], [], [], [], [], [])  # params, grads, row_vars, col_vars, steps, indices, as given
        fresh: list[bool] = []
        created: list[tuple[Tensor, Any]] = []
        write_backs: list[tuple[Tensor, _WriteBack]] = []  # (the matrices', committed after their step)
        rounding: dict[int, list[Tensor]] = {id(vectors): [], id(matrices): []}  # (each step's rounding keys)
        rounds = "rounding_key" in self._state_keys(group, rule, hyper)[1]
        for index, p, grad in self._with_grads(group):
            given = p
            state = self.state.get(p) or {}
            param_used, param_keys = self._keys_of(p, used, keys)
            new = {name: self._initial_state(name, p, group) for name in param_used if name not in state}
            if "step" not in state:
                new["step"] = torch.tensor(0.0, dtype=torch.float32, device=step_device(p))
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
            for column, value in zip(lists, (p, grad.contiguous(), *row, index, given)):
                column.append(value)
            if rounds:
                rounding[id(lists)].append(new.get("rounding_key", state.get("rounding_key")))
            if lists is vectors:
                fresh.append("variance" in new)
        if not vectors[0] and not matrices[0]:
            return None
        if matrices[0]:
            self._factored.append((group, (*matrices[:5], hyper, lr_tensor(group), rounding[id(matrices)]), matrices[5],
                                   write_backs, matrices[6]))
        self._vectors_listed[id(group)] = vectors[4]
        self._vector_params[id(group)] = vectors[5]
        args = (vectors[0], vectors[1], vectors[2], vectors[3], fresh if any(fresh) else [], hyper, lr_tensor(group),
                None, rounding[id(vectors)])
        return args, created

    def _step_listed(self, group: dict[str, Any], *args, **kwargs) -> None:
        self._call(self._rule_of(group).direct, group, *args, listed=self._vectors_listed[id(group)], **kwargs)

    def _update(self, before_update=None) -> None:
        """The base class's step (every check first, then the vectors' steps), then the matrices'."""
        self._factored, self._vectors_listed, self._vector_params = [], {}, {}
        factored_step = torch.ops.fastoptim.adafactor_factored_step_

        def check_then(work) -> None:
            for group, args, listed, _, _ in self._factored:
                self._call(factored_step, group, *args, listed=listed, check_only=True)
            if before_update is not None:
                before_update(work)

        super()._update(check_then)
        for group, args, listed, write_backs, params in self._factored:
            self._factored_step(functools.partial(self._call, factored_step, group, *args, listed=listed), group, params)
            self._commit(write_backs)
        self._factored, self._vectors_listed, self._vector_params = [], {}, {}

    def _factored_step(self, entry, group: dict[str, Any], params: list[Tensor]) -> None:
        """entry(**keywords): the matrices' step of `group`. With sharded DTensors among `params`, it
        runs in three calls (the op's phases): the first leaves each shard's sums of g^2 along the cut
        dim (and, cutting rows, its row factors' total), the second, once they are added up over the
        mesh, moves the other factors and leaves each shard's sums of u^2 and theta^2, the third, once
        those are added up, updates: the sharded step is the unsharded one (up to the order of the
        additions)."""
        keys = self._first_indices(group, params)
        shards = self._sharded_positions(params)
        if not shards:
            entry(**keys)
            return
        cuts = [self._cut(p) if is_dtensor(p) else 0 for p in params]
        factor_sums, across = [], {}
        for p, cut in zip(params, cuts):
            local = local_of(p)
            # (per slice of the last two dims: the row factors' total and the columns' sums, or the rows' sums)
            width = 1 + local.shape[-1] if cut == 1 else local.shape[-2]
            sums = torch.zeros((math.prod(local.shape[:-2]), width) if cut else (0,), dtype=torch.float64, device=local.device)
            factor_sums.append(sums)
            if cut:  # (added up over the mesh dims that shard the cut dim)
                dims = tuple(i for i, placement in enumerate(p.placements) if placement.is_shard(p.dim() - 3 + cut))
                across.setdefault((p.device_mesh, dims), []).append(sums)
        update_sums = torch.zeros(len(params), 2, dtype=torch.float64, device=local_of(params[0]).device)
        split = dict(cuts=cuts, whole_sizes=[n for p in params for n in (p.shape[-2], p.shape[-1], p.numel())],
                     factor_sums=factor_sums, update_sums=update_sums, **keys)
        entry(phase=1, **split)
        add_up_tensors_across_shards(across)
        entry(phase=2, **split)
        add_up_across_shards(update_sums, shards)
        entry(phase=3, **split)
