"""Optimizers preconditioned by a Hessian-diagonal estimate: SophiaG, SophiaH, AdaHessian, and the
SOPHIA seed's SophiaOptim.

Each keeps an EMA of the estimate in its state and refreshes it every ``hessian_update_interval``
steps, on the first step and then every k-th (steps 1, k + 1, 2k + 1, ...), inside ``step``. Three
ways to drive a refresh:

- ``step(closure)`` with a closure that returns the loss *without* calling ``backward`` (for
  SophiaG: ``(loss, logits)``). On a refresh step the optimizer takes the gradients itself with
  ``torch.autograd.grad(create_graph=True)``, computes the estimate (one Hessian-vector product per
  probe; SophiaG: one more backward at labels sampled from the logits), frees the graph, and puts
  the gradients in ``.grad`` as ``loss.backward()`` would; on other steps it runs
  ``loss.backward()``. A closure that calls ``backward`` itself and returns a loss that needs no
  grad is taken to have filled ``.grad``.
- no closure, after ``loss.backward(create_graph=True)`` on refresh steps (a plain ``backward``
  elsewhere). After reading the gradients the optimizer replaces each ``.grad`` by its detached
  self, which breaks the parameter <-> gradient cycle that leaks memory in other implementations.
- ``step(hessian=[...])``: an estimate per parameter with a gradient (in param-group order), folded
  in this step as given; or, as the official SophiaG, ``update_hessian()`` after filling ``.grad``
  with the gradient at sampled labels.

The update between refreshes is one fused C++ pass (rules ``sophia``, ``adahessian``); a refresh
folds the estimate into the EMA with the rule ``hessian_ema``, after every group's step has been
validated.
"""

from __future__ import annotations

import numbers
import warnings

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from . import _C
from ._base import FusedOptimizer, check_positive_int, decode_eight_bit, in_layout_of, is_dtensor, local_of, scale_key, to_float
from .hessian import DISTRIBUTIONS, OUT_OF_THE_GRAPH, gauss_newton_bartlett, hutchinson, spatial_average
from .wrappers import EMA, with_lookahead

# The fold of a new estimate into the EMA: the custom op under torch.compile (which traces it), the
# direct entry otherwise (half the call overhead).
_HESSIAN_EMA_OP = torch.ops.fastoptim.hessian_ema_step_
_HESSIAN_EMA_DIRECT = _C.hessian_ema_step_

_BACKWARD_TWICE = (
    "{name}.step(closure): the closure must return the loss without calling backward(); fastoptim "
    "takes the gradients itself (with the graph on Hessian refresh steps). If the closure fills .grad "
    "itself, return loss.detach()."
)


def _check_distribution(distribution: Any) -> None:
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"Invalid distribution value: {distribution!r} (expected one of {DISTRIBUTIONS})")


def _check_seed(seed: Any) -> int:
    """A given seed, or one drawn from torch's generator (so torch.manual_seed fixes it)."""
    if seed is None:
        return int(torch.randint(0, 2**62, (1,)).item())
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Invalid seed value: {seed!r} (expected an integer >= 0 or None)")
    return seed


class HessianDiagonalOptimizer(FusedOptimizer):
    """The refresh schedule and the estimate folding every Hessian-diagonal optimizer shares.

    A subclass sets ``hessian_key`` (the state name of the EMA), ``square_estimate`` (EMA of D^2 or
    of D), ``estimator`` ("hutchinson" or "gnb") and, to count refreshes per parameter,
    ``refresh_counter`` (a scalar state name its rule reads).
    """

    hessian_key: str
    square_estimate: bool
    estimator: str
    refresh_counter: str | None = None
    # whether update_hessian() folded an estimate since the last refresh step, and whether the
    # warning about refresh steps without an estimate was given (class defaults: they survive pickling)
    _folded_since_refresh = False
    _warned_no_estimate = False

    # ---- the schedule ---------------------------------------------------------------------------
    @staticmethod
    def _refresh_due(group: dict[str, Any]) -> bool:
        return group["hessian_clock"] % group["hessian_update_interval"] == 0

    @property
    def hessian_refresh_due(self) -> bool:
        """Whether the next ``step()`` refreshes the Hessian estimate (of some param group). For
        loops that call ``backward`` themselves (HF Trainer, Lightning, accelerate): call
        ``loss.backward(create_graph=opt.hessian_refresh_due)`` (with gradient accumulation, on
        every micro-batch of the step), so only refresh steps pay for the graph; SophiaG then
        wants ``update_hessian()`` (its estimate comes from sampled labels, not from the graph)."""
        return any(self._refresh_due(group) for group in self.param_groups)

    @staticmethod
    def _trainable(group: dict[str, Any]) -> list[Tensor]:
        return [p for p in group["params"] if p.requires_grad]

    # ---- estimates ------------------------------------------------------------------------------
    def _postprocess(self, estimate: Tensor, group: dict[str, Any]) -> Tensor:
        """What the optimizer does to an estimate it computed itself (AdaHessian: spatial average)."""
        return estimate

    def _hutchinson(self, groups, grads_of: dict[int, Tensor]) -> dict[int, Tensor]:
        """Hutchinson estimates for the params of `groups`, from their gradients with graph."""
        estimates: dict[int, Tensor] = {}
        for index, group in enumerate(groups):
            params = [p for p in self._trainable(group) if id(p) in grads_of]
            found = hutchinson(
                [grads_of[id(p)] for p in params], params, [self._position(p) for p in params],  # the probes' key
                seed=group["seed"], refresh=group["hessian_clock"], n_samples=group["n_samples"],
                distribution=group["distribution"], keep_graph=index < len(groups) - 1,
            )
            estimates.update({id(p): self._postprocess(d, group) for p, d in zip(params, found)})
        return estimates

    def _backward(self, loss: Tensor, logits: Tensor | None, refreshing) -> dict[int, Tensor]:
        """Gradients into .grad from the closure's loss, and the estimates a refresh needs."""
        try:
            params = [p for group in self.param_groups for p in self._trainable(group)]
            if refreshing and self.estimator == "hutchinson":
                grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
                self._check_in_the_graph(params, grads)
                grads_of = {id(p): g for p, g in zip(params, grads) if g is not None}
                estimates = self._hutchinson(refreshing, grads_of)
                self._accumulate(params, grads)
                return estimates
            if refreshing and self.estimator == "gnb" and logits is not None:
                self._backward_into_grad(loss, params, retain_graph=True)
                estimates = {}
                for group in refreshing:
                    params = self._trainable(group)
                    found = gauss_newton_bartlett(logits, params, seed=group["seed"], refresh=group["hessian_clock"])
                    estimates.update({id(p): d for p, d in zip(params, found)})
                return estimates
            self._backward_into_grad(loss, params)
            return {}
        except RuntimeError as error:
            if "backward through the graph a second time" in str(error):
                raise RuntimeError(_BACKWARD_TWICE.format(name=type(self).__name__)) from error
            raise

    def _backward_into_grad(self, loss: Tensor, params: Sequence[Tensor], retain_graph: bool = False) -> None:
        """loss.backward(); under torch.compile, which does not see the .grad a traced backward()
        fills, the parameters' gradients are taken and added to .grad instead."""
        if torch.compiler.is_compiling():
            self._accumulate(params, torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True))
        else:
            loss.backward(retain_graph=retain_graph)

    def _check_in_the_graph(self, params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
        """A DTensor parameter the loss's graph does not reach raises a RuntimeError naming it: a Hessian
        refresh would leave it without estimate and without gradient (a plain parameter may be unused)."""
        for p, g in zip(params, grads):
            if g is None and is_dtensor(p):
                group, index = next((group, i) for group in self.param_groups for i, q in enumerate(group["params"]) if q is p)
                raise RuntimeError(f"{type(self).__name__} refreshes its Hessian estimate on this step and the loss's "
                                   f"graph does not reach {self._param_label(group, index, p)}, a DTensor." + OUT_OF_THE_GRAPH)

    @staticmethod
    def _accumulate(params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
        """Adds `grads` (without their graph) into the params' .grad, as backward() would."""
        for p, g in zip(params, grads):
            if g is not None:
                p.grad = g.detach() if p.grad is None else p.grad + g.detach()

    def _from_grad_graphs(self, refreshing) -> dict[int, Tensor]:
        """Hutchinson estimates from .grad filled by backward(create_graph=True)."""
        grads_of = {id(p): p.grad for group in refreshing for p in self._trainable(group) if p.grad is not None}
        # A gradient may lack a graph because its parameter enters the loss linearly (a zero
        # Hessian block), but not all of them: then backward ran without create_graph.
        if grads_of and not any(g.requires_grad for g in grads_of.values()):
            group = refreshing[0]
            raise RuntimeError(
                f"{type(self).__name__} refreshes its Hessian estimate on this step (step {group['hessian_clock'] + 1}; "
                f"every {group['hessian_update_interval']} from the first) and no gradient has a graph: pass "
                "step(closure) with a closure that returns the loss without calling backward, call "
                "loss.backward(create_graph=opt.hessian_refresh_due) before each step, or pass step(hessian=[...])."
                + (OUT_OF_THE_GRAPH if any(is_dtensor(p) for group in refreshing for p in self._trainable(group)) else "")
            )
        return self._hutchinson(refreshing, grads_of)

    def _given(self, hessian: Sequence[Tensor]) -> dict[int, Tensor]:
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not isinstance(hessian, (list, tuple)) or len(hessian) != len(params):
            count = len(hessian) if isinstance(hessian, (list, tuple)) else type(hessian).__name__
            raise ValueError(f"hessian must be a list of one tensor per parameter with a gradient ({len(params)}), got {count}")
        for index, (p, d) in enumerate(zip(params, hessian)):
            if not isinstance(d, Tensor) or d.shape != p.shape:
                got = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
                raise ValueError(f"hessian[{index}] must be a tensor of shape {tuple(p.shape)}, got {got}")
            if is_dtensor(p) and not (is_dtensor(d) and d.placements == p.placements):
                got = f"a DTensor with placements {d.placements}" if is_dtensor(d) else type(d).__name__
                raise TypeError(f"hessian[{index}] must be a DTensor with its parameter's placements {p.placements}, "
                                f"as its gradient is; got {got}")
        return {id(p): d for p, d in zip(params, hessian)}

    # ---- the step -------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, hessian: Sequence[Tensor] | None = None) -> Any:
        """One step; on refresh steps (or with `hessian`) the estimate is folded in first.

        Args:
            closure (Callable, optional): returns the loss without calling backward (SophiaG:
                ``(loss, logits)`` to refresh from sampled labels).
            hessian (list of Tensor, optional): estimates to fold in this step, one per parameter
                with a gradient, in param-group order; no estimate is computed then.
        """
        estimates = self._given(hessian) if hessian is not None else {}
        refreshing = [] if hessian is not None else [g for g in self.param_groups if self._refresh_due(g)]
        loss = None
        took_gradients = False
        if closure is not None:
            with torch.enable_grad():
                output = closure()
                loss, logits = output if isinstance(output, tuple) else (output, None)
                if isinstance(loss, Tensor) and loss.requires_grad:
                    estimates = self._backward(loss, logits, refreshing) or estimates
                    took_gradients = True
                    # its graph is spent (backward ran here): returned detached, as the same value
                    loss = loss.detach()
        if refreshing and self.estimator == "hutchinson" and not took_gradients:
            with torch.enable_grad():
                estimates = self._from_grad_graphs(refreshing)
        for group in self.param_groups:  # no grad keeps a graph (or a parameter) alive past this step
            for p in group["params"]:
                if p.grad is not None and p.grad.requires_grad:
                    p.grad = p.grad.detach()
        self._warn_if_never_refreshed(refreshing, estimates)
        # Without estimates the step is a plain one (and may gather its arguments in C++).
        self._update(before_update=(lambda work: self._fold(work, estimates)) if estimates else None)
        for group in self.param_groups:
            group["hessian_clock"] += 1
        return loss

    def _warn_if_never_refreshed(self, refreshing, estimates) -> None:
        """SophiaG refreshes from step(closure) returning (loss, logits), or from update_hessian():
        in a plain backward(); step() loop (HF Trainer, Lightning) it gets neither, and its estimate
        stays 0 (the update degenerates to lr sign(m)). Warned once, at a refresh step after the
        first with no estimate since the previous one."""
        if not refreshing:
            return
        starved = not estimates and not self._folded_since_refresh and refreshing[0]["hessian_clock"] > 0
        self._folded_since_refresh = False
        if starved and self.estimator == "gnb" and not self._warned_no_estimate:
            self._warned_no_estimate = True
            warnings.warn(
                f"{type(self).__name__}: refresh step {refreshing[0]['hessian_clock'] + 1} passed without a Hessian "
                "estimate (none since the previous refresh): step(closure) with a closure returning (loss, logits), "
                "or update_hessian() every hessian_update_interval steps, refreshes it; without one the estimate "
                "stays 0 and the update is lr * sign(exp_avg) clipped",
                RuntimeWarning,
                stacklevel=3,
            )

    def _fold(self, work, estimates: dict[int, Tensor]) -> None:
        """EMA of the new estimates into each group's state, one C++ call per group."""
        for group, args, _ in work:
            # (the step's arguments hold what it steps, a DTensor's local shard or a contiguous copy;
            # the estimates are keyed by the parameters, listed in the same order)
            stepped = [p for _, p, _ in self._with_grads(group)]
            chosen = [i for i, p in enumerate(stepped) if id(p) in estimates]
            if not chosen:
                continue
            ema = self._state_column(group, args, self.hessian_key)
            targets = [ema[i] for i in chosen]
            # (the op's "params": in the EMA's dtype, or for 8-bit codes the parameter's as stepped)
            dtypes = [args[0][i].dtype if t.dtype == torch.uint8 else t.dtype for i, t in zip(chosen, targets)]
            values = [in_layout_of(local_of(estimates[id(stepped[i])]).to(dtype), t)
                      for i, t, dtype in zip(chosen, targets, dtypes)]
            if group.get("state_bits") == 8:  # (8-bit codes: the op takes their block scales after them)
                scales = self._state_column(group, args, scale_key(self.hessian_key))
                targets += [scales[i] for i in chosen]
            hyper = [float(group["betas"][1]), float(self.square_estimate)]
            ema_step = _HESSIAN_EMA_OP if torch.compiler.is_compiling() else _HESSIAN_EMA_DIRECT
            ema_step(values, [], targets, [], [], hyper, None)
            if self.refresh_counter is not None:
                counters = self._state_column(group, args, self.refresh_counter)
                torch._foreach_add_([counters[i] for i in chosen], 1.0)

    @torch.no_grad()
    def update_hessian(self, estimates: Sequence[Tensor] | None = None) -> None:
        """Folds an estimate into the EMA now (the official SophiaG's call, after filling .grad with
        the gradient at sampled labels): `estimates`, or every parameter's .grad when None."""
        given = self._given(estimates) if estimates is not None else {
            id(p): p.grad for group in self.param_groups for p in group["params"] if p.grad is not None
        }
        work = [(group, *w) for group in self.param_groups if (w := self._gather(group)) is not None]
        for group, args, _ in work:
            self._step_listed(group, *args, check_only=True)
        for _, _, created in work:
            self._commit(created)
        self._fold(work, given)
        self._folded_since_refresh = True


class Sophia(HessianDiagonalOptimizer):
    """What SophiaG and SophiaH share: the rule ``sophia`` and the win rate."""

    rule = "sophia"
    hessian_key = "hessian"

    def __init__(self, params, lr, betas, rho, weight_decay, maximize, capturable, eps, clip_threshold,
                 hessian_update_interval, bias_correction, seed, **extra) -> None:
        check_positive_int(hessian_update_interval=hessian_update_interval)
        defaults = dict(
            lr=lr, betas=betas, rho=rho, weight_decay=weight_decay, maximize=maximize, capturable=capturable, eps=eps,
            clip_threshold=clip_threshold, hessian_update_interval=hessian_update_interval,
            bias_correction=bias_correction, seed=_check_seed(seed), hessian_clock=0, **extra,
        )
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        super()._check_group(group, where)
        beta2 = to_float(group["betas"][1])  # the Hessian EMA's decay: the fold's field, not the step rule's
        if not 0.0 <= beta2 < 1.0:
            raise ValueError(f"{where}: Invalid beta parameter at index 1: {beta2} (must be in [0, 1))")

    @torch.no_grad()
    def win_rate(self) -> Tensor:
        """The fraction of coordinates whose last step was not clipped, |m| < c (rho bs h + eps),
        over every parameter with state, as a 0-d tensor (8-bit state is decoded first, by the
        codec on the CPU)."""
        unclipped, total = torch.zeros((), dtype=torch.float64), 0
        for group in self.param_groups:
            scale = group["rho"] * self._field_value(group, "bs")
            for p in group["params"]:
                state = self.state.get(p, {})
                if "exp_avg" not in state:
                    continue
                m, h = (self._decoded(state, name, group) for name in ("exp_avg", "hessian"))
                if group["bias_correction"]:
                    m = m / (1 - group["betas"][0] ** state["step"].double())
                denom = h * scale + group["eps"]
                won = (denom > 0) & (m.abs() < group["clip_threshold"] * denom)
                unclipped = unclipped + won.sum().to(torch.float64).cpu()
                total += m.numel()
        return unclipped / max(total, 1)

    def _decoded(self, state: dict[str, Any], name: str, group: dict[str, Any]) -> Tensor:
        """State `name` in float32 (8-bit codes decoded, on the CPU)."""
        value = state[name]
        if value.dtype == torch.uint8:
            return decode_eight_bit(value, state[scale_key(name)], self._rule_of(group).per_row)
        return value.float()


class SophiaG(Sophia):
    """Sophia-G (Liu et al., 2023) with the official SophiaG's signature and math.

    ::

        theta <- theta (1 - lr wd)
        m <- b1 m + (1 - b1) g                     (m / (1 - b1^t) with bias_correction=True)
        theta <- theta - lr sign(m) min(|m| / (rho bs h + eps), clip_threshold)
        refresh:  h <- b2 h + (1 - b2) g_hat^2      (g_hat: gradient at labels sampled from the logits)

    ``bs`` is the number of examples (tokens) behind g_hat, as the official ``step(bs=5120)``; it
    is a group hyperparameter here, and ``step(bs=...)`` overrides it for one step. The Hessian is
    refreshed from ``step(closure)`` when the closure returns ``(loss, logits)``, every
    ``hessian_update_interval`` steps from the first, with labels drawn from a random stream keyed by
    (seed, refresh); or by the caller, as officially, with ``update_hessian()``.

    Differences from the official code: where rho bs h + eps <= 0 (only a negative estimate can do
    it), the step is the clipped sign step, not a division by a negative number; the momentum is
    torch's lerp (the same value up to rounding); the refresh comes before the update of its step
    (the official script refreshes after it, on a new forward pass).
    State: ``step``, ``exp_avg``, ``hessian``. ``win_rate()`` gives the fraction of coordinates not
    clipped (0.1-0.5 is healthy, the authors say).

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the momentum's and the Hessian EMA's decays.
        rho: the scale of the Hessian in the denominator.
        weight_decay: decoupled decay.
        maximize: maximize the objective.
        capturable: torch's flag, kept in the group.
        eps: added to the denominator.
        clip_threshold: the bound of the clipped ratio.
        hessian_update_interval: steps between refreshes of the Hessian estimate.
        bias_correction: bias-correct the momentum.
        bs: the examples (tokens) behind an estimate (the official step's bs).
        seed: the key of the labels an estimate samples from the logits (None: drawn from torch's generator).
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the momentum ``exp_avg`` and the Hessian EMA in 8 bits, block-scaled (each refresh
            decodes the EMA, folds the estimate in and encodes it; see FusedOptimizer).
    """

    square_estimate = True
    estimator = "gnb"
    _step_bs: float | None = None  # step(bs=...)'s value during that step

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.965, 0.99),
        rho: float = 0.04,
        weight_decay: float = 1e-1,
        *,
        maximize: bool = False,
        capturable: bool = False,
        eps: float = 1e-15,
        clip_threshold: float = 1.0,
        hessian_update_interval: int = 10,
        bias_correction: bool = False,
        bs: float = 5120,
        seed: int | None = None,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        if not bs > 0:
            raise ValueError(f"Invalid bs value: {bs} (expected a number > 0)")
        self._step_bs = None
        super().__init__(params, lr, betas, rho, weight_decay, maximize, capturable, eps, clip_threshold,
                         hessian_update_interval, bias_correction, seed, bs=bs, stochastic_rounding=stochastic_rounding,
                         state_dtype=state_dtype, state_bits=state_bits)

    def _field_value(self, group: dict[str, Any], name: str) -> Any:
        if name == "bs" and self._step_bs is not None:
            return self._step_bs
        return super()._field_value(group, name)

    def step(self, closure: Callable[[], Any] | None = None, hessian: Sequence[Tensor] | None = None,
             bs: float | None = None) -> Any:
        """As ``HessianDiagonalOptimizer.step``; ``bs`` replaces every group's ``bs`` for this step
        (the official ``step(bs=...)``)."""
        if bs is not None and not bs > 0:
            raise ValueError(f"Invalid bs value: {bs} (expected a number > 0)")
        self._step_bs = bs
        try:
            return super().step(closure, hessian)
        finally:
            self._step_bs = None


class SophiaH(Sophia):
    """Sophia-H: Sophia with Hutchinson's estimate of the Hessian diagonal (Rademacher probes by
    default), the official SophiaG's signature and update, and the EMA of the estimate itself::

        refresh:  h <- lerp(h, mean_n z * Hz, 1 - b2)

    h estimates the diagonal directly, so there is no ``bs`` (it is 1). Probes come from
    random streams keyed by (seed, parameter position, step of the refresh, sample): a resumed run
    draws the same ones. ``n_samples`` probes are averaged per refresh; the graph is kept only
    between them.

    pytorch_optimizer's SophiaH(p=c) is this optimizer with rho=1, clip_threshold=c, eps=0 (it
    differs only where 0 < h < its eps, or h <= 0 and |m| < c eps).

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the momentum's and the Hessian EMA's decays.
        rho: the scale of the Hessian in the denominator.
        weight_decay: decoupled decay.
        maximize: maximize the objective.
        capturable: torch's flag, kept in the group.
        eps: added to the denominator.
        clip_threshold: the bound of the clipped ratio.
        hessian_update_interval: steps between refreshes of the Hessian estimate.
        bias_correction: bias-correct the momentum.
        n_samples: Hutchinson probes averaged per refresh.
        distribution: the probes' distribution, "rademacher" or "gaussian".
        seed: the probes' key (None: drawn from torch's generator).
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the momentum ``exp_avg`` and the Hessian EMA in 8 bits, block-scaled (each refresh
            decodes the EMA, folds the estimate in and encodes it; see FusedOptimizer).
    """

    square_estimate = False
    estimator = "hutchinson"
    fixed_fields = {"bs": 1.0}

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.965, 0.99),
        rho: float = 0.04,
        weight_decay: float = 1e-1,
        *,
        maximize: bool = False,
        capturable: bool = False,
        eps: float = 1e-15,
        clip_threshold: float = 1.0,
        hessian_update_interval: int = 10,
        bias_correction: bool = False,
        n_samples: int = 1,
        distribution: str = "rademacher",
        seed: int | None = None,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        check_positive_int(n_samples=n_samples)
        _check_distribution(distribution)
        super().__init__(params, lr, betas, rho, weight_decay, maximize, capturable, eps, clip_threshold,
                         hessian_update_interval, bias_correction, seed, n_samples=n_samples, distribution=distribution,
                         stochastic_rounding=stochastic_rounding, state_dtype=state_dtype, state_bits=state_bits)


class AdaHessian(HessianDiagonalOptimizer):
    """AdaHessian (Yao et al., 2021) with the official semantics::

        D = spatial average of |z * Hz|          (Rademacher z; n_samples probes averaged)
        refresh:  v <- b2 v + (1 - b2) D^2;  r <- r + 1
        theta <- theta (1 - lr wd)                (weight_decouple; else g <- g + wd theta)
        m <- lerp(m, g, 1 - b1)
        theta <- theta - lr / (1 - b1^t) m / ((v / (1 - b2^r))^(k/2) + eps)

    refreshed every ``update_period`` steps from the first (the official: every step). Spatial
    averaging follows the official instruction version: ``spatial_average_block_size`` gives per
    ndim 1..4 either -1 (1-D: none; 2-D: whole rows; 3-D: the last dim; 4-D: the last two) or a
    block length; tensors of more than 4 dims are rejected at construction.

    Differences: the official image-classification version leaves 3-D tensors unhandled and its
    multi-GPU path is broken; decay here is torch's decoupled form (the official applies the
    same decay inside its update; they agree up to rounding); v's bias correction counts refreshes
    (pytorch_optimizer counts steps, which differs when update_period > 1). pytorch_optimizer's
    AdaHessian also folds the signed estimate without averaging; ``step(hessian=...)`` estimates
    are used as given, so with the same estimates the two agree.
    State: ``step``, ``exp_avg``, ``exp_hessian_diag_sq``, ``hessian_step`` (refreshes).

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the momentum's and the Hessian EMA's decays.
        eps: added to the denominator.
        weight_decay: decoupled decay (L2 with ``weight_decouple=False``).
        hessian_power: k, the power of the Hessian in the denominator.
        spatial_average_block_size: per ndim 1..4, the block length of the spatial average, or -1 (the official: 1-D none, 2-D rows, 3-D the last dim, 4-D the last two).
        n_samples: Hutchinson probes averaged per refresh.
        update_period: steps between refreshes (the official: every step).
        weight_decouple: decoupled decay.
        distribution: the probes' distribution, "rademacher" or "gaussian".
        seed: the probes' key (None: drawn from torch's generator).
        maximize: maximize the objective.
        stochastic_rounding: store bfloat16 parameters rounded up or down at random, in proportion (see FusedOptimizer).
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the momentum ``exp_avg`` and the Hessian EMA in 8 bits, block-scaled (each refresh
            decodes the EMA, folds the estimate in and encodes it; see FusedOptimizer).
    """

    rule = "adahessian"
    hessian_key = "exp_hessian_diag_sq"
    square_estimate = True
    estimator = "hutchinson"
    refresh_counter = "hessian_step"

    def __init__(
        self,
        params,
        lr: float | Tensor = 0.15,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-4,
        weight_decay: float = 0,
        hessian_power: float = 1.0,
        spatial_average_block_size: tuple[int, int, int, int] = (-1, -1, -1, -1),
        *,
        n_samples: int = 1,
        update_period: int = 1,
        weight_decouple: bool = True,
        distribution: str = "rademacher",
        seed: int | None = None,
        maximize: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        if not 0.0 <= hessian_power <= 1.0:
            raise ValueError(f"Invalid Hessian power value: {hessian_power} (expected a float in [0, 1])")
        blocks = tuple(spatial_average_block_size)
        if len(blocks) != 4 or any(isinstance(b, bool) or not isinstance(b, int) or (b != -1 and b < 1) for b in blocks):
            raise ValueError(
                f"Invalid spatial_average_block_size value: {spatial_average_block_size!r} (expected 4 integers, each -1 or >= 1)"
            )
        check_positive_int(n_samples=n_samples, update_period=update_period)
        _check_distribution(distribution)
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, hessian_power=hessian_power,
            spatial_average_block_size=blocks, n_samples=n_samples, hessian_update_interval=update_period,
            weight_decouple=weight_decouple, distribution=distribution, seed=_check_seed(seed), maximize=maximize,
            hessian_clock=0, stochastic_rounding=stochastic_rounding, state_dtype=state_dtype, state_bits=state_bits,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for index, p in enumerate(group["params"]):
                if p.dim() > 4:
                    raise ValueError(
                        "AdaHessian: spatial averaging is defined for tensors of up to 4 dims, got "
                        f"{self._param_label(group, index, p)}"
                    )

    def _postprocess(self, estimate: Tensor, group: dict[str, Any]) -> Tensor:
        return spatial_average(estimate, group["spatial_average_block_size"])


class SophiaOptim(EMA):
    """The SOPHIA seed's optimizer as its README describes it, with the README's signature:
    Sophia-H (``rho`` is Sophia's gamma, the scale of the Hessian in the denominator, not the
    seed's clamp bound; ``betas[1]`` the Hessian EMA's rate), an EMA of the weights
    (``ema_decay``, in the state dict as ``ema_param``) and, with ``lookahead_k``, Lookahead.

    It is ``EMA(SophiaH)`` or ``EMA(Lookahead(SophiaH))`` built from the library's wrappers. Refresh
    steps need ``step(closure)`` with a closure that returns the loss without calling backward
    (see the module docstring). ``swap_ema()`` swaps the averaged weights in for a ``with`` block
    (to evaluate), ``ema_state()`` returns them.

    The seed's code crashes on its own README call; its intent is what is built here (its decay
    applied twice, square root of a signed estimate, +-rho clamp and second update are not).

    Args:
        params: the parameters or param groups.
        lr: the learning rate (a float or a 1-element tensor).
        betas: (beta1, beta2): the momentum's and the Hessian EMA's decays.
        eps: added to the denominator.
        rho: Sophia's gamma, the scale of the Hessian in the denominator.
        weight_decay: decoupled decay.
        ema_decay: the decay of the weights' EMA.
        hessian_update_interval: steps between refreshes of the Hessian estimate.
        n_samples: Hutchinson probes averaged per refresh.
        clip_threshold: the bound of the clipped ratio.
        lookahead_k: Lookahead's sync period (None: no Lookahead).
        lookahead_alpha: Lookahead's sync rate.
        distribution: the probes' distribution, "rademacher" or "gaussian".
        seed: the probes' key (None: drawn from torch's generator).
        maximize: maximize the objective.
        stochastic_rounding: the inner step stores bfloat16 parameters rounded up or down at random (see
            FusedOptimizer); Lookahead's syncs and the EMA's swaps round to nearest.
        state_dtype: torch.bfloat16 keeps a float32 parameter's state in bf16 (None: the parameter's dtype; see FusedOptimizer).
        state_bits: 8 keeps the momentum ``exp_avg`` and the Hessian EMA in 8 bits, block-scaled (each refresh
            decodes the EMA, folds the estimate in and encodes it; see FusedOptimizer).
    """

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        rho: float = 0.1,
        weight_decay: float = 0.01,
        ema_decay: float = 0.999,
        *,
        hessian_update_interval: int = 10,
        n_samples: int = 1,
        clip_threshold: float = 1.0,
        lookahead_k: int | None = None,
        lookahead_alpha: float = 0.5,
        distribution: str = "rademacher",
        seed: int | None = None,
        maximize: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
        state_bits: int | None = None,
    ) -> None:
        if isinstance(ema_decay, bool) or not isinstance(ema_decay, numbers.Real) or not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"Invalid ema_decay value: {ema_decay!r} (expected a float in [0, 1))")
        inner: torch.optim.Optimizer = SophiaH(
            params, lr, betas, rho, weight_decay, maximize=maximize, eps=eps, clip_threshold=clip_threshold,
            hessian_update_interval=hessian_update_interval, n_samples=n_samples, distribution=distribution, seed=seed,
            stochastic_rounding=stochastic_rounding, state_dtype=state_dtype, state_bits=state_bits,
        )
        super().__init__(with_lookahead(inner, lookahead_alpha, lookahead_k), decay=ema_decay)

    def swap_ema(self):
        """Context manager: the parameters hold the EMA weights inside the block."""
        return self.swapped_in()

    def ema_state(self) -> list[Tensor]:
        """The EMA weights, in the order of the param groups' parameters."""
        return self.averaged_parameters()

    def _sophia(self) -> SophiaH:
        optimizer = self.base_optimizer
        while not isinstance(optimizer, SophiaH):
            optimizer = optimizer.base_optimizer
        return optimizer

    def win_rate(self) -> Tensor:
        return self._sophia().win_rate()

    @property
    def hessian_refresh_due(self) -> bool:
        """Whether the next ``step()`` refreshes the Hessian estimate (see SophiaH's)."""
        return self._sophia().hessian_refresh_due
