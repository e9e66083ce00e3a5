"""Second-order solvers ported from Somax (JAX) to PyTorch: Newton-CG, SQN, EGN, SGN, SWM-NG.

Each is a torch.optim.Optimizer whose ``step`` takes a closure and returns the loss at the
parameters it started from:

- loss closures (NewtonCG, SQN) return the scalar loss and do not call ``backward()``: the solver
  takes gradients and Hessian-vector products itself;
- output closures (EGN, SGN, SWMNG) return ``(outputs, targets)``; the solver forms the loss named by
  ``loss`` and the Jacobian products itself. Conventions (Somax's): ``"mse"`` is 1/2 mean over the
  batch of ||y - f||^2 (outputs and targets of one shape, the batch first); ``"ce"`` the mean softmax
  cross-entropy of logits (b, C) with integer labels (b,); ``"bce"`` the mean sigmoid BCE of logits
  with targets in [0, 1] of the same shape.

``damping`` (lambda) is added to the curvature matrix of that mean loss. Param groups are solved
independently (block-diagonal curvature between groups), each with its own damping, history and
lr; one group is the whole method. Parameters must be float32 or float64 (bf16/fp16: a TypeError;
the small dense solves run in float64). Everything a solver keeps is in ``state_dict``: per
parameter ``direction`` (the previous direction, Newton-CG/SGN warm starts and EGN momentum) and
``previous_param`` (SWM-NG momentum); per group, under its first parameter, ``damping`` (the current
lambda), ``step`` and SQN's ``s_history``/``y_history`` (history_size x the group's elements, flat),
``rho_history``, ``history_start``, ``history_length``.

What is fixed from Somax's code (spec section 8): CG stops on non-positive curvature; SQN skips
pairs with s'y <= eps ||y||^2 and runs its documented Armijo search; EGN's cross-entropy system is
made symmetric positive definite with the factor on the correct side (J~ = L'J with LL' = Q) and
factorised exactly; SWM-NG uses its current damping in both places; the LM ratio uses the step
actually taken.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import torch
from torch import Tensor

from . import _C

LOSSES = ("mse", "ce", "bce")

# ---- vectors over a group's parameters ----------------------------------------------------------
# A vector of a group's parameter space is a list of contiguous tensors shaped like its parameters
# (what autograd.grad returns); the vector algebra runs in fused C++ passes over all pieces at once
# (fastoptim._C.solvers). SQN's history alone is kept flat.


def _flat(tensors) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _pieces(vector: Tensor, params: list[Tensor]) -> list[Tensor]:
    return [piece.view(p.shape) for piece, p in zip(vector.split([p.numel() for p in params]), params)]


def _vector(tensors) -> list[Tensor]:
    """Detached contiguous pieces (copies only where a piece is not contiguous)."""
    return [t.detach().contiguous() for t in tensors]


def _dot(a: list[Tensor], b: list[Tensor]) -> float:
    return _C.solvers.dots(a, b)[0]


def _add_(params: list[Tensor], vector: list[Tensor], alpha: float = 1.0) -> None:
    torch._foreach_add_(params, vector, alpha=alpha)


def _descent(gradient: list[Tensor], direction: list[Tensor]) -> list[Tensor]:
    """`direction`, or -gradient where it is not a descent direction (g'd >= 0)."""
    return direction if _dot(gradient, direction) < 0 else torch._foreach_neg(gradient)


def conjugate_gradient(apply: Callable[[list[Tensor]], list[Tensor]], rhs: list[Tensor], x0: list[Tensor] | None,
                       max_iter: int, tol: float, shift: float = 0.0):
    """Solves (H + shift I) x = rhs for a symmetric H, given by its products apply(p) = H p, by CG from
    x0 (or 0), in the core's fused passes (each iteration: one product, three passes). Stops when
    ||r|| <= tol ||rhs|| (the right-hand side, as Somax's CG measures it), after max_iter iterations,
    or on non-positive curvature p'(H + shift I)p <= 0: then the current iterate is returned, or rhs
    itself (the steepest-descent direction of the quadratic) when that happens on the first
    iteration from zero. Vectors are lists of pieces; returns (x, iterations, stopped_on_curvature)."""
    rhs = _vector(rhs)
    x = [t.clone(memory_format=torch.contiguous_format) for t in x0] if x0 is not None else [torch.empty_like(t) for t in rhs]
    iterations, stopped = _C.solvers.conjugate_gradient(apply, rhs, x, x0 is not None, float(shift), max_iter, float(tol))
    return x, iterations, stopped


def cholesky_solve(matrix: Tensor, rhs: Tensor) -> Tensor:
    """matrix^-1 rhs for a symmetric positive definite matrix (its lower triangle is read), in float64
    by Cholesky in the core (Eigen). Only when the factorisation fails (a matrix positive definite in
    exact arithmetic, not in floating point) is a jitter added to the diagonal: 1e-12, then 1e-10,
    then 1e-8 times its mean diagonal, at most; beyond that a ValueError asks for more damping."""
    return _C.solvers.cholesky_solve(matrix, rhs)


# ---- the output-space side of each loss -------------------------------------------------------
class OutputLoss:
    """For outputs f (batch first) and targets y of one loss convention: the mean loss, its gradient
    e = dloss/df, and a factor L of its Hessian Q = L L' (block-diagonal per example) with a u
    such that L u = e, all flattened to n = b*C rows. The Gauss-Newton curvature J'QJ is then
    J~'J~ with J~ = L'J, and the gradient J'e = J~'u."""

    def __init__(self, kind: str, outputs: Tensor, targets: Tensor) -> None:
        self.kind, self.outputs, self.targets = kind, outputs, targets
        self.batch = outputs.shape[0] if outputs.dim() > 0 else 1
        self._p = None

    @staticmethod
    def check(kind: str, outputs: Any, targets: Any, where: str) -> None:
        if not isinstance(outputs, Tensor) or not isinstance(targets, Tensor):
            raise TypeError(f"{where}: the closure must return (outputs, targets), two tensors; got "
                            f"({type(outputs).__name__}, {type(targets).__name__})")
        if outputs.dim() == 0 or outputs.shape[0] == 0:
            raise ValueError(f"{where}: outputs must have a batch dimension with at least one example, got shape "
                             f"{tuple(outputs.shape)}")
        if kind == "ce":
            if outputs.dim() != 2 or targets.shape != outputs.shape[:1] or targets.is_floating_point():
                raise ValueError(f"{where}: loss='ce' takes logits (b, C) and integer labels (b,), got outputs "
                                 f"{tuple(outputs.shape)} and targets {tuple(targets.shape)} of {targets.dtype}")
        elif targets.shape != outputs.shape:
            raise ValueError(f"{where}: loss={kind!r} takes outputs and targets of one shape, got "
                             f"{tuple(outputs.shape)} and {tuple(targets.shape)}")

    def per_example(self) -> Tensor:
        """The loss of each example (its mean is the loss)."""
        f, y = self.outputs, self.targets
        if self.kind == "mse":
            return 0.5 * (y - f).reshape(self.batch, -1).square().sum(1)
        if self.kind == "ce":
            return torch.nn.functional.cross_entropy(f, y, reduction="none")
        return torch.nn.functional.binary_cross_entropy_with_logits(f, y.to(f.dtype), reduction="none").reshape(
            self.batch, -1).sum(1)

    def value(self) -> Tensor:
        return self.per_example().mean()

    def factor_apply(self, v: Tensor) -> Tensor:
        """L v for the flattened output vector v."""
        return self._apply(v, transpose=False)

    def factor_transpose_apply(self, v: Tensor) -> Tensor:
        """L' v."""
        return self._apply(v, transpose=True)

    def _probabilities(self) -> Tensor:
        """softmax (CE) or sigmoid (BCE) of the outputs, computed once (CG applies Q many times)."""
        if self._p is None:
            f = self.outputs.detach()
            self._p = torch.softmax(f, dim=1) if self.kind == "ce" else torch.sigmoid(f)
        return self._p

    def _apply(self, v: Tensor, transpose: bool) -> Tensor:
        """L v or L' v along the last dimension of v (n, or k x n for k vectors at once)."""
        b = self.batch
        if self.kind == "mse":
            return v / math.sqrt(b)
        p = self._probabilities().reshape(-1)
        if self.kind == "bce":
            return v * (p * (1 - p) / b).clamp_min(torch.finfo(p.dtype).tiny).sqrt()
        # CE: L = (diag(sqrt p) - p sqrt(p)') / sqrt(b) per example, so L L' = (diag(p) - p p') / b = Q.
        p = p.reshape(b, -1)
        root = p.sqrt()
        shape = v.shape
        v = v.reshape(*shape[:-1], b, -1)
        if transpose:  # L' v = sqrt(p) * v - sqrt(p) (p' v)
            out = root * v - root * (p * v).sum(-1, keepdim=True)
        else:  # L v = sqrt(p) * v - p (sqrt(p)' v)
            out = root * v - p * (root * v).sum(-1, keepdim=True)
        return out.reshape(shape) / math.sqrt(b)

    def gradient_and_u(self) -> tuple[Tensor, Tensor]:
        """e = dloss/df (flattened), and u with L u = e."""
        f, y, b = self.outputs.detach(), self.targets, self.batch
        if self.kind == "mse":
            e = (f - y).reshape(-1) / b
            return e, e * math.sqrt(b)
        p = self._probabilities()
        if self.kind == "ce":
            e = (p - torch.nn.functional.one_hot(y, p.shape[1]).to(p.dtype)).reshape(-1) / b
            # L u = e with u = e / sqrt(p) (e sums to 0 per example, so the rank-one part vanishes); a
            # probability that underflowed to 0 has e = 0 there (unless it is the label's), so it is
            # floored at the smallest normal number instead of dividing 0 by 0
            root = p.reshape(-1).clamp_min(torch.finfo(p.dtype).tiny).sqrt()
            return e, e / root * math.sqrt(b)
        e = (p - y.to(p.dtype)).reshape(-1) / b
        return e, e / self._apply(torch.ones_like(e), transpose=False)

    def hessian_apply(self, v: Tensor) -> Tensor:
        """Q v (= L (L' v), formed directly)."""
        b = self.batch
        if self.kind == "mse":
            return v / b
        p = self._probabilities().reshape(-1)
        if self.kind == "bce":
            return v * (p * (1 - p)) / b
        # CE, per example: (diag(p) - p p') v / b = p * (v - p'v) / b
        p = p.reshape(b, -1)
        v = v.reshape(b, -1)
        return (p * (v - (p * v).sum(-1, keepdim=True))).reshape(-1) / b


# ---- the base ---------------------------------------------------------------------------------
def _check_number(where: str, name: str, value: Any, low: float, *, low_open: bool = False, high: float = math.inf,
                  high_open: bool = True) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{where}: Invalid {name} value: {value!r} (expected a finite number in {lo}{low}, {high}{hi})")


def _check_choice(where: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{where}: Invalid {name} value: {value!r} (expected one of {', '.join(map(repr, choices))})")


def _check_int(where: str, name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where}: Invalid {name} value: {value!r} (expected an integer >= {low})")


class SecondOrderOptimizer(torch.optim.Optimizer):
    """What the five solvers share: closure handling, parameter checks, per-group state, Armijo."""

    #: "loss" (the closure returns the scalar loss) or "outputs" (it returns (outputs, targets))
    closure_kind: str

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._check_group(group, f"{type(self).__name__}: param group {len(self.param_groups) - 1}")
            for index, p in enumerate(group["params"]):
                if p.dtype not in (torch.float32, torch.float64):
                    raise TypeError(f"{type(self).__name__}: parameter #{index} of param group "
                                    f"{len(self.param_groups) - 1} has dtype {p.dtype}; the second-order solvers take "
                                    "float32 or float64 parameters (keep bf16/fp16 models in float32 for them)")
                if p.dtype != group["params"][0].dtype:
                    raise TypeError(f"{type(self).__name__}: param group {len(self.param_groups) - 1} mixes "
                                    f"{group['params'][0].dtype} and {p.dtype} (parameter #{index}); a group's "
                                    "curvature system has one dtype: put parameters of another dtype in a group of "
                                    "their own")
                if p.device.type != "cpu":
                    raise TypeError(f"{type(self).__name__}: parameter #{index} of param group "
                                    f"{len(self.param_groups) - 1} is on {p.device}; the second-order solvers run on "
                                    "the CPU")
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        _check_number(where, "lr", group["lr"], 0.0, low_open=True)
        if "damping" in group:
            _check_number(where, "damping", group["damping"], 0.0, low_open=True)
        if "loss" in group:
            _check_choice(where, "loss", group["loss"], LOSSES)
        if "line_search" in group:
            _check_choice(where, "line_search", group["line_search"], (None, "armijo"))
        if "momentum" in group:
            _check_number(where, "momentum", group["momentum"], 0.0, high=1.0)
        for name in ("cg_max_iter", "history_size", "max_ls"):
            if name in group:
                _check_int(where, name, group[name], 1)
        if "cg_tol" in group:
            _check_number(where, "cg_tol", group["cg_tol"], 0.0)
        if "warm_start" in group:
            _check_number(where, "warm_start", group["warm_start"], 0.0)
        for name in ("c1", "ls_decrease"):  # the Armijo search's constants
            if name in group:
                _check_number(where, name, group[name], 0.0, low_open=True, high=1.0)

    @staticmethod
    def _trainable(group: dict[str, Any]) -> list[Tensor]:
        return [p for p in group["params"] if p.requires_grad]

    def _group_state(self, params: list[Tensor], group: dict[str, Any]) -> dict[str, Any]:
        """The group's own state, kept under its first parameter (so it is in state_dict)."""
        state = self.state[params[0]]
        if "damping" not in state:
            # (in the parameters' dtype: torch's load_state_dict casts state tensors to it)
            state["damping"] = torch.tensor(float(group.get("damping", 0.0)), dtype=params[0].dtype)
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
        return state

    def _evaluate(self, closure) -> Any:
        with torch.enable_grad():
            result = closure()
        where = f"{type(self).__name__}.step"
        if self.closure_kind == "loss":
            if isinstance(result, tuple) or not isinstance(result, Tensor) or result.numel() != 1:
                raise TypeError(f"{where}: the closure must return the scalar loss (without calling backward), got "
                                f"{type(result).__name__}")
        else:
            if not isinstance(result, tuple) or len(result) != 2:
                raise TypeError(f"{where}: the closure must return (outputs, targets), got {type(result).__name__}")
        return result

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, curvature_closure: Callable[[], Any] | None = None) -> Any:
        """One step; returns the loss at the parameters it started from.

        Args:
            closure: the loss closure or the output closure (see the class docstring).
            curvature_closure (optional): a closure of the same kind on another batch (a subsample,
                say) from which the curvature is taken; the gradient still comes from ``closure``.
        """
        if closure is None:
            raise TypeError(f"{type(self).__name__}.step needs a closure (see the class docstring)")
        where = f"{type(self).__name__}.step"
        result = self._evaluate(closure)
        curvature = self._evaluate(curvature_closure) if curvature_closure is not None else None
        if self.closure_kind == "outputs":
            for group in self.param_groups:
                OutputLoss.check(group["loss"], *result, where)
                if curvature is not None:
                    OutputLoss.check(group["loss"], *curvature, f"{where} (curvature_closure)")
        loss = None
        for index, group in enumerate(self.param_groups):
            params = self._trainable(group)
            if not params:
                continue
            if index > 0:  # each group solves at the parameters the previous groups moved
                result = self._evaluate(closure)
                curvature = self._evaluate(curvature_closure) if curvature_closure is not None else None
            value = self._step_group(group, params, result, closure, curvature, curvature_closure)
            loss = value if loss is None else loss
        return loss

    def _step_group(self, group, params, result, closure, curvature, curvature_closure) -> Tensor:
        """One step of `group`: `result` is the closure's value (with its graph), `curvature` the
        curvature closure's value or None (then the curvature comes from `result`)."""
        raise NotImplementedError

    def _previous_direction(self, params: list[Tensor]) -> list[Tensor] | None:
        """The direction the last step kept, or None before the first."""
        previous = [self.state[p].get("direction") for p in params]
        return _vector(previous) if all(d is not None for d in previous) else None

    def _keep_direction(self, params: list[Tensor], direction: list[Tensor]) -> None:
        """Keeps `direction` (the state holds its pieces: they must not be changed afterwards)."""
        for p, piece in zip(params, direction):
            self.state[p]["direction"] = piece

    def _warm_start(self, group, params) -> list[Tensor] | None:
        """CG's start: warm_start times the previous direction, or None (zero)."""
        previous = self._previous_direction(params) if group["warm_start"] > 0 else None
        return None if previous is None else torch._foreach_mul(previous, float(group["warm_start"]))

    def _move(self, group, params, closure, loss: Tensor, gradient: list[Tensor], direction: list[Tensor]) -> None:
        """theta <- theta + lr d, or Armijo from lr along d when the group asks for the line search."""
        if group["line_search"] == "armijo":
            self._armijo(group, params, closure, loss, gradient, direction, group["c1"])
        else:
            _add_(params, direction, float(group["lr"]))

    def _loss_at(self, closure, group) -> Tensor:
        """The closure's loss at the current parameters, without a graph."""
        with torch.no_grad():
            result = closure()
        if self.closure_kind == "outputs":
            return OutputLoss(group["loss"], *result).value()
        return result

    def _armijo(self, group, params, closure, loss: Tensor, gradient: list[Tensor], direction: list[Tensor],
                c1: float) -> tuple[Tensor, float]:
        """Moves params by alpha * direction, alpha from lr down by ls_decrease until
        f(theta + alpha d) <= f(theta) + c1 alpha g'd (at most max_ls tries; the last one is kept, as
        Somax does). A direction that is not a descent direction is replaced by -g. Returns (the loss
        there, alpha)."""
        direction = _descent(gradient, direction)
        slope = _dot(gradient, direction)
        alpha, moved = float(group["lr"]), 0.0
        for _ in range(group["max_ls"]):
            _add_(params, direction, alpha - moved)
            moved = alpha
            trial = self._loss_at(closure, group)
            if trial <= loss + c1 * alpha * slope:
                break
            alpha *= group["ls_decrease"]
        return trial, moved


# ---- Newton-CG ----------------------------------------------------------------------------------
class NewtonCG(SecondOrderOptimizer):
    r"""Newton-CG: solve (H + lambda I) d = -g by conjugate gradient with Hessian-vector products
    (double backward through the closure's graph), then theta <- theta + lr d.

    ``warm_start`` c starts CG at c * d_prev (0: cold). CG stops when ||r|| <= ``cg_tol`` ||g||, after
    ``cg_max_iter`` iterations, or on non-positive curvature (the current iterate, or -g on the first
    iteration). ``damping_policy="lm"`` adapts lambda from the ratio rho of the actual to the predicted
    decrease of the step taken (rho < 1/4: lambda * 1.5; rho > 3/4: lambda * 0.5; clamped to
    [1e-12, 1e6]; non-finite rho skipped); it costs one more closure call and one more HVP.
    ``line_search="armijo"`` backtracks from lr (c1 = 0.1 as Somax, factor 0.8, at most 15 tries).

    Args:
        params: the parameters.
        lr: the step's scale (Armijo's first trial with a line search).
        damping: lambda, added to the Hessian.
        cg_max_iter: CG iterations at most.
        cg_tol: CG stops when ||r|| <= cg_tol ||g||.
        warm_start: c, CG starts at c * d_prev (0: cold).
        damping_policy: "const" or "lm" (adapted from the step's actual to predicted decrease).
        line_search: None or "armijo".
        max_ls: backtracking steps at most.
        c1: Armijo's sufficient-decrease constant.
        ls_decrease: the backtracking factor.
    """

    closure_kind = "loss"

    def __init__(self, params, lr: float = 1.0, damping: float = 1.0, cg_max_iter: int = 10, cg_tol: float = 1e-5,
                 warm_start: float = 0.1, damping_policy: str = "const", line_search: str | None = None, *,
                 max_ls: int = 15, c1: float = 0.1, ls_decrease: float = 0.8) -> None:
        defaults = dict(lr=lr, damping=damping, cg_max_iter=cg_max_iter, cg_tol=cg_tol, warm_start=warm_start,
                        damping_policy=damping_policy, line_search=line_search, max_ls=max_ls, c1=c1,
                        ls_decrease=ls_decrease)
        super().__init__(params, defaults)

    def _check_group(self, group, where) -> None:
        super()._check_group(group, where)
        _check_choice(where, "damping_policy", group["damping_policy"], ("const", "lm"))

    def _step_group(self, group, params, loss, closure, curvature, curvature_closure) -> Tensor:
        state = self._group_state(params, group)
        state["step"] += 1
        with torch.enable_grad():
            grads = torch.autograd.grad(curvature if curvature is not None else loss, params, create_graph=True)
            gradient = _vector(grads if curvature is None else torch.autograd.grad(loss, params, retain_graph=True))
        damping = float(state["damping"])

        def hessian_apply(v: list[Tensor]) -> list[Tensor]:
            with torch.enable_grad():
                return list(torch.autograd.grad(grads, params, v, retain_graph=True))

        direction, _, _ = conjugate_gradient(hessian_apply, torch._foreach_neg(gradient), self._warm_start(group, params),
                                             group["cg_max_iter"], group["cg_tol"], shift=damping)
        self._keep_direction(params, direction)
        lm = group["damping_policy"] == "lm"
        if group["line_search"] == "armijo":
            direction = _descent(gradient, direction)
        # d'Hd before the parameters move (the graph is the one at the start): the model's decrease
        # for the step alpha d actually taken is alpha g'd + alpha^2 d'Hd / 2
        curvature = _dot(direction, _vector(hessian_apply(direction))) if lm else None
        if group["line_search"] == "armijo":
            new_loss, alpha = self._armijo(group, params, closure, loss.detach(), gradient, direction, group["c1"])
        else:
            alpha = float(group["lr"])
            _add_(params, direction, alpha)
            new_loss = self._loss_at(closure, group) if lm else None
        if lm:
            predicted = alpha * _dot(gradient, direction) + 0.5 * alpha**2 * curvature
            rho = float((new_loss - loss.detach()) / predicted)
            if math.isfinite(rho):
                factor = 1.5 if rho < 0.25 else 0.5 if rho > 0.75 else 1.0
                state["damping"].fill_(min(max(damping * factor, 1e-12), 1e6))
        return loss.detach()


# ---- SQN ------------------------------------------------------------------------------------------
class SQN(SecondOrderOptimizer):
    r"""Stochastic quasi-Newton (online L-BFGS, as Somax's SQN): d = -H_k g by the two-loop recursion
    over the last ``history_size`` pairs (s, y) with H_0 = gamma I, gamma = s'y / y'y of the newest
    pair (1 before any); theta <- theta + lr d (or Armijo from lr, c1 = 1e-4); then a second gradient
    on the same batch at the new parameters gives y = g_new - g, s = theta_new - theta. Pairs with
    s'y <= ``curvature_eps`` ||y||^2 are skipped (Somax stores them). The closure is called twice a
    step (three or more with the line search). Memory: 2 * history_size parameter-sized buffers.

    Args:
        params: the parameters.
        lr: the step's scale (Armijo's first trial with a line search).
        history_size: the (s, y) pairs kept.
        line_search: None or "armijo".
        curvature_eps: pairs with s'y <= curvature_eps ||y||^2 are skipped.
        max_ls: backtracking steps at most.
        c1: Armijo's sufficient-decrease constant.
        ls_decrease: the backtracking factor.
    """

    closure_kind = "loss"

    def __init__(self, params, lr: float = 1.0, history_size: int = 10, line_search: str | None = None, *,
                 curvature_eps: float = 1e-10, max_ls: int = 15, c1: float = 1e-4, ls_decrease: float = 0.8) -> None:
        defaults = dict(lr=lr, history_size=history_size, line_search=line_search, curvature_eps=curvature_eps,
                        max_ls=max_ls, c1=c1, ls_decrease=ls_decrease)
        super().__init__(params, defaults)

    def _check_group(self, group, where) -> None:
        super()._check_group(group, where)
        _check_number(where, "curvature_eps", group["curvature_eps"], 0.0)

    def _history(self, params, group, state) -> None:
        """The group's ring buffer of pairs, kept flat (history_size x the group's elements) under its
        first parameter, so the two-loop reads it without gathering the parameters' pieces."""
        m, d = group["history_size"], sum(p.numel() for p in params)
        if "rho_history" not in state or state["rho_history"].numel() != m or state["s_history"].shape != (m, d):
            # (in the parameters' dtype, as every state tensor comes back from torch's load_state_dict)
            dtype = params[0].dtype
            state["s_history"] = torch.zeros((m, d), dtype=dtype)
            state["y_history"] = torch.zeros((m, d), dtype=dtype)
            state["rho_history"] = torch.zeros(m, dtype=dtype)
            state["history_start"] = torch.tensor(0, dtype=dtype)
            state["history_length"] = torch.tensor(0, dtype=dtype)

    @staticmethod
    def two_loop(gradient: list[Tensor], s: Tensor, y: Tensor, rho: Tensor, order: list[int]) -> list[Tensor]:
        """H g by the L-BFGS two-loop recursion over the flat rows s[i], y[i] (the pieces of g end to
        end), rho[i] = 1/s'y, oldest first in `order`; H_0 = gamma I with gamma = s'y/y'y of the
        newest pair (1 with none). Runs in the core: each axpy fused with the next dot, 2m + 1
        passes for m pairs."""
        q = [t.detach().clone(memory_format=torch.contiguous_format) for t in gradient]
        _C.solvers.two_loop(q, s, y, rho.tolist(), order)
        return q

    def _step_group(self, group, params, loss, closure, curvature, curvature_closure) -> Tensor:
        state = self._group_state(params, group)
        state["step"] += 1
        self._history(params, group, state)
        with torch.enable_grad():
            gradient = _vector(torch.autograd.grad(loss, params))
            # the curvature pair's y is a difference of gradients of one batch: the closure's, or the curvature closure's
            curvature_gradient = gradient if curvature is None else _vector(torch.autograd.grad(curvature, params))
        m, start, length = group["history_size"], int(state["history_start"]), int(state["history_length"])
        order = [(start + k) % m for k in range(length)]
        direction = self.two_loop(gradient, state["s_history"], state["y_history"], state["rho_history"], order)
        torch._foreach_neg_(direction)
        before = [p.detach().clone() for p in params]
        self._move(group, params, closure, loss.detach(), gradient, direction)
        with torch.enable_grad():
            new_loss = self._evaluate(curvature_closure or closure)
            y = _vector(torch.autograd.grad(new_loss, params))
        torch._foreach_sub_(y, curvature_gradient)
        s = _vector(torch._foreach_sub([p.detach() for p in params], before))
        sy, yy = _C.solvers.dots(y, s)
        if sy > group["curvature_eps"] * yy:
            slot = (start + length) % m if length < m else start
            torch._foreach_copy_(_pieces(state["s_history"][slot], params), s)
            torch._foreach_copy_(_pieces(state["y_history"][slot], params), y)
            state["rho_history"][slot] = 1.0 / float(sy)
            if length < m:
                state["history_length"].fill_(length + 1)
            else:
                state["history_start"].fill_((start + 1) % m)
        return loss.detach()


# ---- Gauss-Newton family: EGN, SGN, SWM-NG ------------------------------------------------------
class ModelOutputs:
    """The n model outputs of a closure as a function of a group's d parameters, through their
    graph: J'u (a vector-Jacobian product), J v (the derivative of J'u in u: a double backward
    through a dummy u, created on first use) and rows R J (batched vector-Jacobian products)."""

    def __init__(self, outputs: Tensor, params: list[Tensor]) -> None:
        self.outputs, self.params = outputs, params
        self._dummy = self._jt_dummy = None

    def vjp(self, u: Tensor) -> list[Tensor]:
        """J'u for the flattened output vector u, a vector of the parameters' space."""
        with torch.enable_grad():
            pieces = torch.autograd.grad(self.outputs.reshape(-1), self.params, u.to(self.outputs.dtype), retain_graph=True)
        return _vector(pieces)

    def jvp(self, v: list[Tensor]) -> Tensor:
        """J v (flattened outputs) for a vector v of the parameters' space."""
        with torch.enable_grad():
            if self._dummy is None:
                self._dummy = torch.zeros_like(self.outputs, requires_grad=True)
                self._jt_dummy = torch.autograd.grad(self.outputs, self.params, self._dummy, create_graph=True)
            jv = torch.autograd.grad(self._jt_dummy, self._dummy, v, retain_graph=True)[0]
        return jv.reshape(-1)

    def rows(self, rows: Tensor) -> Tensor:
        """rows @ J, (k x d) for k output-space row vectors."""
        with torch.enable_grad():
            pieces = torch.autograd.grad(self.outputs.reshape(-1), self.params, rows.to(self.outputs.dtype),
                                         retain_graph=True, is_grads_batched=True)
        return torch.cat([piece.reshape(len(rows), -1) for piece in pieces], dim=1)


class EGN(SecondOrderOptimizer):
    r"""Exact Gauss-Newton (Korbit et al., 2024): the Gauss-Newton system solved in the batch space.
    With J the Jacobian of the n = b*C outputs, Q = L L' the Hessian of the mean loss in the outputs,
    J~ = L'J and L u = e = dloss/df:

        d = -(J'QJ + lambda I)^-1 J'e = -J~' (J~ J~' + lambda I)^-1 u        (an n x n solve, not d x d)

    (MSE: d = J'(JJ' + b lambda I)^-1 r with r = y - f). The n x n system is symmetric positive
    definite. ``solver="cholesky"`` forms it (J~ J~', by batched vector-Jacobian products, in chunks
    of rows within ``max_jacobian_bytes``; a chunk pair that cannot fit raises) and solves it by
    Cholesky in float64 (a jitter only if the factorisation fails, at most 1e-8 relative);
    ``solver="cg"`` never forms J: CG on the n x n system (``cg_max_iter``, ``cg_tol``) with products
    L'J(J'(Lv)). ``momentum`` mu: v <- mu v + (1 - mu) d, used d = v / (1 - mu^t);
    ``line_search="armijo"`` backtracks from lr (c1 = 0.1). With a curvature closure (another batch),
    d = -(g - J~'(lambda I + J~ J~')^-1 J~ g) / lambda, J~ from that batch, g from the closure's.

    Args:
        params: the parameters.
        lr: the step's scale (Armijo's first trial with a line search).
        damping: lambda, added to the Gauss-Newton matrix.
        loss: "mse", "ce" (softmax cross-entropy) or "bce": the loss whose Hessian in the outputs is Q.
        momentum: heavy-ball momentum on the step.
        line_search: None or "armijo".
        solver: "cholesky" (forms the n x n system) or "cg" (matrix-free).
        max_jacobian_bytes: the memory a chunk of Jacobian rows may take.
        cg_max_iter: CG iterations at most (solver="cg").
        cg_tol: CG's relative tolerance (solver="cg").
        max_ls: backtracking steps at most.
        c1: Armijo's sufficient-decrease constant.
        ls_decrease: the backtracking factor.
    """

    closure_kind = "outputs"

    def __init__(self, params, lr: float = 1.0, damping: float = 1.0, loss: str = "mse", momentum: float = 0.0,
                 line_search: str | None = None, *, solver: str = "cholesky", max_jacobian_bytes: int = 2**30,
                 cg_max_iter: int = 100, cg_tol: float = 1e-10, max_ls: int = 15, c1: float = 0.1,
                 ls_decrease: float = 0.8) -> None:
        defaults = dict(lr=lr, damping=damping, loss=loss, momentum=momentum, line_search=line_search, solver=solver,
                        max_jacobian_bytes=max_jacobian_bytes, cg_max_iter=cg_max_iter, cg_tol=cg_tol, max_ls=max_ls,
                        c1=c1, ls_decrease=ls_decrease)
        super().__init__(params, defaults)

    def _check_group(self, group, where) -> None:
        super()._check_group(group, where)
        _check_choice(where, "solver", group["solver"], ("cholesky", "cg"))
        _check_int(where, "max_jacobian_bytes", group["max_jacobian_bytes"], 1)

    @staticmethod
    def gram(model: ModelOutputs, loss: OutputLoss, budget: int) -> Tensor:
        """J~ J~' (n x n, products in the parameters' dtype as the model's own matmuls are, returned in
        float64 for the factorisation), from rows of J~ computed a chunk at a time: two chunks of k rows
        are held at once, k as large as `budget` bytes allow (a chunk is computed again for each
        later chunk it meets; one chunk when everything fits)."""
        outputs = model.outputs
        n, d = outputs.numel(), sum(p.numel() for p in model.params)
        row_bytes = d * outputs.element_size()
        k = n if n * row_bytes <= budget else budget // (2 * row_bytes)
        if k < 1:
            raise ValueError(f"EGN.step: one row of the Jacobian ({d} parameters) takes {row_bytes} bytes and two must "
                             f"fit in max_jacobian_bytes={budget}: raise it, or use solver='cg' (never forms J)")
        eye = torch.eye(n, dtype=outputs.dtype, device=outputs.device)
        # (row i of J~ = L'J is (L e_i)'J: the vector-Jacobian product of column i of L)
        def j_tilde(lo, hi):
            return model.rows(loss.factor_apply(eye[lo:hi]))

        chunks = [(lo, min(lo + k, n)) for lo in range(0, n, k)]
        gram = torch.empty(n, n, dtype=torch.float64)
        for a, (lo, hi) in enumerate(chunks):
            rows = j_tilde(lo, hi)
            gram[lo:hi, lo:hi] = rows @ rows.T
            for lo2, hi2 in chunks[a + 1:]:
                block = rows @ j_tilde(lo2, hi2).T
                gram[lo:hi, lo2:hi2] = block
                gram[lo2:hi2, lo:hi] = block.T
        return gram

    def _step_group(self, group, params, result, closure, curvature, curvature_closure) -> Tensor:
        state = self._group_state(params, group)
        state["step"] += 1
        loss = OutputLoss(group["loss"], *result)
        model = ModelOutputs(result[0], params)
        e, u = loss.gradient_and_u()
        same_batch = curvature is None
        c_loss = loss if same_batch else OutputLoss(group["loss"], *curvature)
        c_model = model if same_batch else ModelOutputs(curvature[0], params)
        gradient = model.vjp(e) if not same_batch or group["line_search"] == "armijo" else None
        rhs = u if same_batch else c_loss.factor_transpose_apply(c_model.jvp(gradient))  # J~ g
        damping = float(state["damping"])
        if group["solver"] == "cholesky":
            gram = self.gram(c_model, c_loss, group["max_jacobian_bytes"])
            gram.diagonal().add_(damping)
            w = cholesky_solve(gram, rhs)
        else:
            def system(v: list[Tensor]) -> list[Tensor]:  # J~ J~' v, in the output space (one piece)
                return [c_loss.factor_transpose_apply(c_model.jvp(c_model.vjp(c_loss.factor_apply(v[0]))))]
            (w,), _, _ = conjugate_gradient(system, [rhs], None, group["cg_max_iter"], group["cg_tol"], shift=damping)
        back = c_model.vjp(c_loss.factor_apply(w.to(rhs.dtype)))  # J~'w
        if same_batch:
            direction = torch._foreach_neg(back)
        else:
            direction = torch._foreach_sub(back, gradient)
            torch._foreach_div_(direction, damping)
        mu = float(group["momentum"])
        if mu > 0:
            # (new tensors: the kept direction is the state's, and changes only once this step has one)
            previous = self._previous_direction(params)
            velocity = torch._foreach_mul(direction, 1 - mu)
            if previous is not None:
                torch._foreach_add_(velocity, previous, alpha=mu)
            self._keep_direction(params, velocity)
            direction = torch._foreach_div(velocity, 1 - mu ** float(state["step"]))
        value = loss.value().detach()
        self._move(group, params, closure, value, gradient, direction)
        return value


class SGN(SecondOrderOptimizer):
    r"""Stochastic Gauss-Newton (Gargiani et al., 2020): solve (J'QJ + lambda I) d = -J'e by CG with
    matrix-free products J'Q(Jv) (Q the exact Hessian of the mean loss in the outputs; J v by a
    double vector-Jacobian product), then theta <- theta + lr d (or Armijo from lr with
    ``line_search="armijo"``, c1 = 0.1, beyond Somax's SGN). ``warm_start`` c starts CG at c * d_prev
    (0: cold, Somax's behaviour). With a curvature closure the products come from its batch.
    Memory O(parameters).

    Args:
        params: the parameters.
        lr: the step's scale (Armijo's first trial with a line search).
        damping: lambda, added to the Gauss-Newton matrix.
        loss: "mse", "ce" (softmax cross-entropy) or "bce": the loss whose Hessian in the outputs is Q.
        cg_max_iter: CG iterations at most.
        cg_tol: CG stops when ||r|| <= cg_tol ||g||.
        warm_start: c, CG starts at c * d_prev (0: cold).
        line_search: None or "armijo".
        max_ls: backtracking steps at most.
        c1: Armijo's sufficient-decrease constant.
        ls_decrease: the backtracking factor.
    """

    closure_kind = "outputs"

    def __init__(self, params, lr: float = 1.0, damping: float = 1e-3, loss: str = "mse", cg_max_iter: int = 10,
                 cg_tol: float = 1e-5, *, warm_start: float = 0.0, line_search: str | None = None, max_ls: int = 15,
                 c1: float = 0.1, ls_decrease: float = 0.8) -> None:
        defaults = dict(lr=lr, damping=damping, loss=loss, cg_max_iter=cg_max_iter, cg_tol=cg_tol,
                        warm_start=warm_start, line_search=line_search, max_ls=max_ls, c1=c1, ls_decrease=ls_decrease)
        super().__init__(params, defaults)

    def _step_group(self, group, params, result, closure, curvature, curvature_closure) -> Tensor:
        state = self._group_state(params, group)
        state["step"] += 1
        loss = OutputLoss(group["loss"], *result)
        e, _ = loss.gradient_and_u()
        gradient = ModelOutputs(result[0], params).vjp(e)
        c_loss = loss if curvature is None else OutputLoss(group["loss"], *curvature)
        c_model = ModelOutputs((result if curvature is None else curvature)[0], params)
        damping = float(state["damping"])

        def curvature_apply(v: list[Tensor]) -> list[Tensor]:  # J'QJ v
            return c_model.vjp(c_loss.hessian_apply(c_model.jvp(v)))

        direction, _, _ = conjugate_gradient(curvature_apply, torch._foreach_neg(gradient), self._warm_start(group, params),
                                             group["cg_max_iter"], group["cg_tol"], shift=damping)
        self._keep_direction(params, direction)
        value = loss.value().detach()
        self._move(group, params, closure, value, gradient, direction)
        return value


class SWMNG(SecondOrderOptimizer):
    r"""Natural gradient with the empirical Fisher and the Sherman-Morrison-Woodbury identity (Ren &
    Goldfarb, 2019). With G the b x d per-example gradients of the per-example losses, g = mean G and
    F = G'G / b:

        d = -(F + lambda I)^-1 g = (G' (G G' + b lambda I)^-1 G g - g) / lambda

    (the b x d products in the parameters' dtype, the b x b Cholesky solve in float64),
    theta <- theta + lr d + mu (theta - theta_prev) with ``momentum`` mu (heavy ball). The damping used is the current one, in both places (Somax's
    adaptive damping never reached its step).

    Args:
        params: the parameters.
        lr: the step's scale.
        damping: lambda, added to the empirical Fisher.
        loss: "mse", "ce" (softmax cross-entropy) or "bce": the per-example loss.
        momentum: heavy-ball momentum mu.
    """

    closure_kind = "outputs"

    def __init__(self, params, lr: float = 1.0, damping: float = 1.0, loss: str = "mse", momentum: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, damping=damping, loss=loss, momentum=momentum))

    def _step_group(self, group, params, result, closure, curvature, curvature_closure) -> Tensor:
        state = self._group_state(params, group)
        state["step"] += 1
        loss = OutputLoss(group["loss"], *result)
        c_loss = loss if curvature is None else OutputLoss(group["loss"], *curvature)
        with torch.enable_grad():
            per_example = c_loss.per_example()
            b = per_example.numel()
            pieces = torch.autograd.grad(per_example, params, torch.eye(b, dtype=per_example.dtype), retain_graph=True,
                                         is_grads_batched=True)
            grads = torch.cat([piece.reshape(b, -1) for piece in pieces], dim=1)
            gradient = grads.mean(0) if curvature is None else _flat(torch.autograd.grad(loss.value(), params))
        damping = float(state["damping"])
        # (the b x d products in the parameters' dtype, the b x b solve in float64)
        gram = (grads @ grads.T).double()
        gram.diagonal().add_(b * damping)
        w = cholesky_solve(gram, grads @ gradient).to(grads.dtype)
        direction = _pieces((grads.T @ w - gradient) / damping, params)
        current = [p.detach().clone() for p in params]
        mu = float(group["momentum"])
        previous = [self.state[p].get("previous_param") for p in params]
        _add_(params, direction, float(group["lr"]))
        if mu > 0 and all(q is not None for q in previous):
            _add_(params, torch._foreach_sub(current, previous), mu)
        for p, piece in zip(params, current):
            self.state[p]["previous_param"] = piece
        return loss.value().detach()
