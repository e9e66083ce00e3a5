"""torch.optim.Muon on fastoptim's kernels, with AdamW for the parameters Muon does not take, in one
optimizer (as torch's documentation recommends pairing them)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import FusedOptimizer, arguments_as_defaults, in_layout_of, is_dtensor, lr_tensor, rule_named

DEFAULT_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
# torch's adjust_lr_fn values, as the number the rules' field lists hold (rules/muon.h)
_LR_ADJUSTMENTS = {None: 0, "original": 0, "match_rms_adamw": 1}


def orthogonalise(update: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float) -> Tensor:
    """torch.optim.Muon's quintic Newton-Schulz iteration in bfloat16, the same ATen calls in the same
    order (so the same bits): X = U / |U| (on the wide side), then X <- aX + (bA + cA^2)X, A = XX^T."""
    a, b, c = coefficients
    x = update.bfloat16()
    tall = update.size(0) > update.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def is_sharded(param: Tensor) -> bool:
    """A DTensor whose ranks hold different parts of it."""
    return is_dtensor(param) and not all(placement.is_replicate() for placement in param.placements)


def whole_matrix_step(param: Tensor, update: Tensor, step) -> Tensor:
    """step(update), where `update` is `param`'s (or, for a DTensor sharded across ranks, its local
    shard's): the shards are gathered into the whole matrix, every rank runs the step on the same
    bits, and each keeps the slice of the result that is its shard (FSDP2's Shard(0), tensor
    parallelism's Shard(1)), so a sharded step is the unsharded one."""
    if not is_sharded(param):
        return step(update)
    from torch.distributed.tensor import DTensor, distribute_tensor

    whole = DTensor.from_local(update, param.device_mesh, param.placements, shape=param.shape,
                               stride=param.stride()).full_tensor()
    return distribute_tensor(step(whole), param.device_mesh, param.placements, src_data_rank=None).to_local()


class Muon(FusedOptimizer):
    r"""torch.optim.Muon (Jordan et al., 2024): momentum, then the update of each 2-D parameter
    orthogonalised by a Newton-Schulz iteration, with decoupled weight decay:

    .. math::
        B \leftarrow \mu B + (1-\mu) g,\quad U = \text{nesterov}\ ?\ (1-\mu) g + \mu B : B,\quad
        \theta \leftarrow \theta(1 - \mathrm{lr}\,\lambda) - \mathrm{lr}'\,\mathrm{NS}_k^{(a,b,c)}(U)

    with :math:`\mathrm{lr}' = \mathrm{lr}\sqrt{\max(1, A/B)}` for an :math:`A \times B` matrix
    (``adjust_lr_fn="match_rms_adamw"``: :math:`0.2\,\mathrm{lr}\sqrt{\max(A, B)}`). The momentum and the
    update are fused passes; the iteration's matrix products run through ATen in bfloat16, as torch's do.

    Parameters that are not matrices (biases, norms' weights, conv kernels) step with AdamW, in the
    same optimizer, as torch's documentation recommends: each param group given is split into its
    matrices (``use_muon=True``) and the rest (``use_muon=False``, AdamW with the group's ``lr`` and
    ``weight_decay``, and ``adamw_betas``, ``adamw_eps``), so one optimizer, one lr scheduler and one state dict
    serve the model. A group given with ``use_muon`` is taken as it is (a non-matrix in a
    ``use_muon=True`` group raises torch's ValueError); put the non-matrix parameters in a group of
    their own to give AdamW another lr.

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        weight_decay: decoupled weight decay.
        momentum: mu.
        nesterov: Nesterov momentum (the default).
        ns_coefficients: (a, b, c), the iteration's polynomial.
        eps: the floor of the norm the update is divided by before the iteration.
        ns_steps: the iteration's steps (fewer than 100).
        adjust_lr_fn: None or "original" (Keller Jordan's), or "match_rms_adamw" (Moonshot's).
        adamw_betas, adamw_eps: AdamW's for the parameters that are not matrices (torch.optim.AdamW's defaults).
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the matrices' momentum and the others' AdamW moments in 8 bits, block-scaled (None: as
            state_dtype says; see FusedOptimizer).

    State: ``momentum_buffer`` of each matrix; ``step``, ``exp_avg``, ``exp_avg_sq`` of the others.
    """

    rule = "muon"
    gathers_in_cpp = False  # (the Python gather, which _gather extends; Muon's time is its matrix products)
    fixed_fields = dict(amsgrad=0.0, maximize=0.0, decoupled_weight_decay=1.0)  # AdamW, for the non-matrices

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = DEFAULT_NS_COEFFICIENTS,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        *,
        adamw_betas: tuple[float, float] = (0.9, 0.999),
        adamw_eps: float = 1e-8,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        super().__init__(params, arguments_as_defaults(locals()))

    def _rule_name(self, group: dict[str, Any]) -> str:
        return "muon" if group["use_muon"] else "adam"

    def _field_value(self, group: dict[str, Any], name: str) -> Any:
        if name in ("ns_a", "ns_b", "ns_c"):
            return group["ns_coefficients"]["abc".index(name[-1])]
        if name == "adjust_lr_fn":
            value = group["adjust_lr_fn"]
            if not isinstance(value, (str, type(None))) or value not in _LR_ADJUSTMENTS:
                raise ValueError(f"Adjust learning rate function {value!r} is not supported (adjust_lr_fn must be None, "
                                 "'original' or 'match_rms_adamw')")
            return _LR_ADJUSTMENTS[value]
        if name in ("rows", "columns"):  # (muon_update's: the tensor's own shape; see _update for shards)
            return 0
        if not group["use_muon"] and name in ("beta1", "beta2", "eps"):
            return group["adamw_eps"] if name == "eps" else group["adamw_betas"][int(name[-1]) - 1]
        return super()._field_value(group, name)

    def _public_name(self, name: str, group: dict[str, Any] | None = None) -> str:
        if name in ("ns_a", "ns_b", "ns_c"):
            return f"ns_coefficients[{'abc'.index(name[-1])}]"
        if group is not None and not group["use_muon"] and name in ("beta1", "beta2", "eps"):
            return "adamw_eps" if name == "eps" else f"adamw_betas[{int(name[-1]) - 1}]"
        return super()._public_name(name, group)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds `param_group` split into its matrices (Muon) and the rest (AdamW), or as it is when
        it says which it is (``use_muon``)."""
        if "use_muon" in param_group:
            if param_group["use_muon"]:
                params = param_group["params"]
                for p in [params] if isinstance(params, Tensor) else list(params):
                    p = p[1] if isinstance(p, tuple) else p  # (named parameters)
                    if isinstance(p, Tensor) and p.ndim != 2:
                        raise ValueError(f"Muon only supports 2D parameters whereas we found a parameter with size: {p.size()}")
            super().add_param_group(param_group)
            return
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        is_matrix = [(p[1] if isinstance(p, tuple) else p).ndim == 2 for p in params]
        for use_muon in (True, False):
            chosen = [p for p, matrix in zip(params, is_matrix) if matrix == use_muon]
            if chosen or (not params and use_muon):
                self.add_param_group({**param_group, "params": chosen, "use_muon": use_muon})

    def _gather(self, group: dict[str, Any]):
        """A matrix group's momentum step writes the update to orthogonalise into scratch tensors,
        which take the parameters' place in its arguments; the parameters wait in `_matrices`."""
        gathered = super()._gather(group)
        if gathered is None or not group["use_muon"]:
            return gathered
        args, created = gathered
        updates = [torch.empty_like(g) for g in args[1]]
        stepped = [p for p in group["params"] if p.grad is not None]  # (args[0] holds them, or their local shards)
        # (stochastic rounding belongs to the parameters' store, in the update step, not to the scratch)
        self._matrices.append((group, stepped, args[0], updates, args[8]))
        return (updates, *args[1:8], []), created

    def _update(self, before_update=None) -> None:
        """The base class's step (checks; the matrices' momentum and the AdamW groups' steps), then
        each matrix's orthogonalised update."""
        self._matrices: list[tuple[dict[str, Any], list[Tensor], list[Tensor], list[Tensor], list[Tensor]]] = []
        update_rule = rule_named("muon_update")

        def check_then(work) -> None:
            for group, _, params, _, rounding in self._matrices:  # the parameters are not in the momentum step's lists
                self._call(update_rule.direct, group, params, params, [], [], [], self._hyper(group, update_rule),
                           lr_tensor(group), None, rounding, check_only=True)
            if before_update is not None:
                before_update(work)

        super()._update(check_then)
        for group, stepped, params, updates, rounding in self._matrices:
            coefficients, steps, eps = group["ns_coefficients"], group["ns_steps"], group["eps"]
            # (in the parameter's dtype and memory layout, which the update rule walks)
            orthogonalised = [
                in_layout_of(whole_matrix_step(param, u, lambda m: orthogonalise(m, coefficients, steps, eps)).to(p.dtype), p)
                for param, p, u in zip(stepped, params, updates)
            ]
            entry = update_rule.op if torch.compiler.is_compiling() else update_rule.direct
            hyper = self._hyper(group, update_rule)
            whole = [i for i, param in enumerate(stepped) if not is_sharded(param)]
            keys = (lambda chosen: [rounding[i] for i in chosen]) if rounding else (lambda chosen: [])
            entry([params[i] for i in whole], [orthogonalised[i] for i in whole], [], [], [], hyper, lr_tensor(group),
                  None, keys(whole))
            for i, param in enumerate(stepped):
                if is_sharded(param):  # (its lr is adjusted for the whole matrix's shape, not its shard's)
                    entry([params[i]], [orthogonalised[i]], [], [], [], [*hyper[:-2], *param.shape], lr_tensor(group),
                          None, keys([i]))
        self._matrices = []
