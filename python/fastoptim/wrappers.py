"""Weight-averaging wrappers around any optimizer (fastoptim's or torch's): Lookahead, Scout, EMA, SWA.

Each wrapper is a real torch.optim.Optimizer:
- its ``param_groups`` is the base optimizer's own list, so an lr scheduler attached to the wrapper
  drives the base, and ``add_param_group`` adds to the base;
- its hyperparameters and step counters live in those param groups (``sync_rate``,
  ``lookahead_step``, ``ema_decay``, ...), as Python numbers, so they are per group and saved exactly;
- its buffers (slow or averaged weights) live in its own per-parameter ``state`` under its own key
  (``slow_param``, ``ema_param``, ``swa_param``); ``state_dict()`` is the base's state dict with those
  buffers added to each parameter's entry, and ``load_state_dict()`` hands the rest back to the base;
- wrappers nest (``Lookahead(EMA(AdamW(...)))``); two of the same kind cannot (a ValueError says so).

The averaging itself is fastoptim's C++ rule ``average`` (a lerp, as torch's AveragedModel does it),
run over all tensors of a group in one call. DTensor parameters (FSDP2, tensor parallelism) average
by their local shards, their buffers being DTensors of the same placements.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from . import _C
from ._base import check_positive_int, is_dtensor, local_of


class OptimizerWrapper(torch.optim.Optimizer):
    """Base of the wrappers: shares the base optimizer's param groups and merges state dicts.

    A subclass sets ``buffer_key`` (the per-parameter state key of its averaged weights) and, if it
    keeps more, ``own_keys``; puts its hyperparameters and counters in ``defaults`` (they go into
    every param group); and implements ``_after_base_step``.
    """

    buffer_key: str
    own_keys: tuple[str, ...] = ()

    @classmethod
    def _owned(cls) -> tuple[str, ...]:
        return cls.own_keys or (cls.buffer_key,)

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        """Raises a ValueError naming the first of the wrapper's group values that is invalid
        (under the constructor's argument name)."""
        raise NotImplementedError

    def _needs_buffers(self, group: dict[str, Any]) -> bool:
        """Whether every parameter of `group` must have its buffers now (Lookahead: always; an
        average: once it has started)."""
        return True

    def __init__(self, base_optimizer: torch.optim.Optimizer, defaults: dict[str, Any]) -> None:
        if type(self) is OptimizerWrapper:
            raise TypeError("OptimizerWrapper is the base of Lookahead, Scout, EMA and SWA: construct one of those")
        self._check_group(defaults, type(self).__name__)
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise TypeError(f"base_optimizer must be a torch.optim.Optimizer, got {type(base_optimizer).__name__}")
        clash = next((key for key in defaults for group in base_optimizer.param_groups if key in group), None)
        if clash is not None:
            raise ValueError(
                f"{type(self).__name__} cannot wrap an optimizer whose param groups already have {clash!r}: "
                "two wrappers of the same kind would share their hyperparameters and counters"
            )
        self.base_optimizer = base_optimizer
        self._shares_groups = False
        # Optimizer.__init__ sets up hooks and state, and writes `defaults` into each of the base's
        # group dicts; the wrapper then takes the base's list itself, so the two never diverge.
        super().__init__(base_optimizer.param_groups, defaults)
        self.param_groups = base_optimizer.param_groups
        self._shares_groups = True
        self._add_buffers()

    # copy.deepcopy, pickle and torch.save(opt) keep what torch's __getstate__ keeps (defaults,
    # state, param_groups); the wrapper also needs its base, whose groups it shares.
    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "base_optimizer": self.base_optimizer}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.param_groups = self.base_optimizer.param_groups
        self._shares_groups = True

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not self._shares_groups:  # during __init__: torch's bookkeeping over the base's groups
            super().add_param_group(param_group)
            return
        self.base_optimizer.add_param_group(param_group)
        for key, value in self.defaults.items():
            self.param_groups[-1].setdefault(key, value)
        self._add_buffers()

    def _new_buffers(self, p: Tensor) -> dict[str, Tensor]:
        """Buffers a parameter gets as soon as the wrapper sees it; none by default (an average
        starts at its first update)."""
        return {}

    @torch.no_grad()
    def _add_buffers(self) -> None:
        for p in self._params():
            if self.buffer_key not in self.state.get(p, {}):
                new = self._new_buffers(p)
                if new:
                    self.state[p].update(new)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        """The base optimizer's step (keyword arguments go to it, e.g. SophiaH's ``hessian``),
        then the wrapper's own update. Everything the wrapper's update needs is checked first, so a
        wrapper never raises after its base has moved the parameters."""
        self._check_ready()
        loss = self.base_optimizer.step(closure, **kwargs)
        with torch.no_grad():
            for group in self.param_groups:
                self._after_base_step(group)
        return loss

    def _after_base_step(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _check_ready(self) -> None:
        """Before the base steps: groups that reached the base around the wrapper (base.add_param_group,
        or a base-only checkpoint loaded) get the wrapper's defaults and buffers, as at construction;
        every group's wrapper values are valid; every buffer the update reads is there, shaped
        like its parameter."""
        for index, group in enumerate(self.param_groups):
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            self._check_group(group, f"{type(self).__name__}: param group {index}")
        layout = tuple((id(g["params"]), len(g["params"])) for g in self.param_groups)
        if layout != getattr(self, "_checked_layout", None):
            self._add_buffers()
            for index, group in enumerate(self.param_groups):
                self._check_buffers(group, self.state, f"{type(self).__name__}: param group {index}")
            self._checked_layout = layout

    def _check_buffers(self, group: dict[str, Any], state: dict, where: str, keys=None) -> None:
        """Every parameter of `group` has the wrapper's buffers in `state` (looked up by `keys[i]`,
        or by the parameter itself), tensors of its shape, when the group needs them."""
        if not self._needs_buffers(group):
            return
        for i, p in enumerate(group["params"]):
            entry = state.get(p if keys is None else keys[i], {})
            if not isinstance(entry, dict):
                raise TypeError(f"{where}: the state of parameter #{i} (shape {tuple(p.shape)}) must be a dict of "
                                f"tensors, got {type(entry).__name__}")
            for key in self._owned():
                value = entry.get(key)
                if not isinstance(value, Tensor) or value.shape != p.shape or not value.is_floating_point():
                    got = f"shape {tuple(value.shape)}, {value.dtype}" if isinstance(value, Tensor) else repr(value)
                    raise ValueError(f"{where}: parameter #{i} (shape {tuple(p.shape)}) needs its {key!r}, a floating "
                                     f"tensor of its shape, got {got}")
                if is_dtensor(p) and (not is_dtensor(value) or value.placements != p.placements):
                    got = f"placements {value.placements}" if is_dtensor(value) else type(value).__name__
                    raise TypeError(f"{where}: parameter #{i} (shape {tuple(p.shape)}) is a DTensor, so its {key!r} must "
                                    f"be one of its placements {p.placements}, got {got}")

    # ---- averaged weights ---------------------------------------------------------------------
    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _buffers(self, params: list[Tensor]) -> list[Tensor]:
        return [self.state[p][self.buffer_key] for p in params]

    def _average_into_buffers(self, params: list[Tensor], weight: float = 0.0, count: int = 0, copy_back: bool = False) -> None:
        """For every param, in one C++ call: buffer <- lerp(buffer, param, weight), or with count > 0
        the running mean buffer <- buffer + (param - buffer) / count; then param <- buffer if copy_back."""
        if params:
            hyper = [float(weight), float(count), float(copy_back)]
            _C.average_step_(_locals(params), [], _locals(self._buffers(params)), [], [], hyper, None)

    def averaged_parameters(self) -> list[Tensor]:
        """The averaged (or slow) weights, in the order of the param groups' parameters. Parameters
        that have none yet (before the first average) are left out."""
        return [self.state[p][self.buffer_key] for p in self._averaged()]

    def _averaged(self) -> list[Tensor]:
        """The parameters that have averaged weights (self.state is a defaultdict: look, don't create)."""
        return [p for p in self._params() if self.buffer_key in self.state.get(p, {})]

    @contextlib.contextmanager
    def swapped_in(self):
        """Within the block the parameters hold the averaged weights (e.g. to evaluate); on exit
        they get their own weights back."""
        params = self._averaged()
        with torch.no_grad():
            for p in params:
                _swap(p, self.state[p][self.buffer_key])
        try:
            yield self
        finally:
            with torch.no_grad():
                for p in params:
                    _swap(p, self.state[p][self.buffer_key])

    @torch.no_grad()
    def copy_averaged_to(self, target: torch.nn.Module | Iterable[Tensor]) -> None:
        """Copies the averaged weights into another model with the same parameters (for instance a
        deepcopy to run torch.optim.swa_utils.update_bn on)."""
        targets = list(target.parameters()) if isinstance(target, torch.nn.Module) else list(target)
        params = self._params()
        if len(targets) != len(params):
            raise ValueError(f"target has {len(targets)} parameters, the optimizer has {len(params)}")
        for dst, p in zip(targets, params):
            dst.copy_(self.state.get(p, {}).get(self.buffer_key, p))

    # ---- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        merged = self.base_optimizer.state_dict()
        own = super().state_dict()  # the same groups, so the same parameter indices
        state = dict(merged["state"])
        for index, entries in own["state"].items():
            state[index] = {**state.get(index, {}), **entries}
        merged["state"] = state
        return merged

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads the base's state and the wrapper's buffers, after checking the wrapper's part (its
        group values and the buffers they call for) so that nothing changes when it is wrong. A
        checkpoint of the base alone (a plain AdamW's, say) loads too: the wrapper starts afresh
        from it, with its defaults and, where it keeps them from the start, buffers from the
        current parameters."""
        if isinstance(state_dict, dict) and isinstance(state_dict.get("param_groups"), list):
            groups = state_dict["param_groups"]
            if len(groups) == len(self.param_groups):
                filled = []
                for index, (group, saved) in enumerate(zip(self.param_groups, groups)):
                    saved = {**self.defaults, **saved}
                    where = f"{type(self).__name__}.load_state_dict: param_groups[{index}]"
                    self._check_group(saved, where)
                    if any(key in groups[index] for key in self.defaults) and len(saved["params"]) == len(group["params"]):
                        self._check_buffers({**saved, "params": group["params"]}, state_dict["state"], where, saved["params"])
                    filled.append(saved)
                state_dict = {**state_dict, "param_groups": filled}
        base_state, own_state = {}, {}
        for index, entries in state_dict["state"].items():
            if not isinstance(entries, dict):
                raise TypeError(f"{type(self).__name__}.load_state_dict: the state of parameter #{index} must be a dict "
                                f"of tensors, got {type(entries).__name__}")
            owned = self._owned()
            mine = {k: v for k, v in entries.items() if k in owned}
            rest = {k: v for k, v in entries.items() if k not in owned}
            if mine:
                own_state[index] = mine
            if rest:
                base_state[index] = rest
        self.base_optimizer.load_state_dict({"state": base_state, "param_groups": state_dict["param_groups"]})
        super().load_state_dict({"state": own_state, "param_groups": state_dict["param_groups"]})
        self.param_groups = self.base_optimizer.param_groups  # load_state_dict made new group dicts
        self._add_buffers()  # a base-only checkpoint: the buffers kept from the start
        self._checked_layout = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_optimizer!r})"


def _locals(tensors: list[Tensor]) -> list[Tensor]:
    """Tensors as the element-wise C++ steps take them: DTensors (parameters, and their buffers of the
    same placements: _check_buffers) by their local shards, as an element-wise step of each shard is
    the step of the whole."""
    return [local_of(t) for t in tensors]


def _swap(a: Tensor, b: Tensor) -> None:
    tmp = a.clone()
    a.copy_(b)
    b.copy_(tmp)


def _check_sync(sync_rate: float, sync_period: int, where: str) -> None:
    if isinstance(sync_rate, bool) or not isinstance(sync_rate, numbers.Real) or not 0.0 <= sync_rate <= 1.0:
        raise ValueError(f"{where}: Invalid sync_rate value: {sync_rate!r} (expected a float in [0, 1])")
    check_positive_int(sync_period=sync_period)


def with_lookahead(inner: torch.optim.Optimizer, lookahead_alpha: float, lookahead_k: int | None) -> torch.optim.Optimizer:
    """Lookahead(inner) with sync rate `lookahead_alpha` every `lookahead_k` steps, or `inner` when
    lookahead_k is None: for the optimizers composed of the wrappers (AMaC, SophiaOptim), whose
    messages name their own arguments."""
    if lookahead_k is None:
        return inner
    if isinstance(lookahead_k, bool) or not isinstance(lookahead_k, int) or lookahead_k < 1:
        raise ValueError(f"Invalid lookahead_k value: {lookahead_k!r} (expected an integer >= 1, or None)")
    if isinstance(lookahead_alpha, bool) or not isinstance(lookahead_alpha, numbers.Real) or not 0.0 <= lookahead_alpha <= 1.0:
        raise ValueError(f"Invalid lookahead_alpha value: {lookahead_alpha!r} (expected a float in [0, 1])")
    return Lookahead(inner, sync_rate=lookahead_alpha, sync_period=lookahead_k)


def _check_count(where: str, **counters: Any) -> None:
    """A counter the wrapper keeps in the group: an integer >= 0."""
    for name, value in counters.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{where}: Invalid {name} value: {value!r} (expected an integer >= 0)")


class Lookahead(OptimizerWrapper):
    """Lookahead (Zhang et al., 2019) around any optimizer, with holocron.optim's signature.

    Every ``sync_period`` base steps: ``slow <- slow + sync_rate * (fast - slow)``, then ``fast <- slow``.
    The slow weights start as the parameters at construction (the paper's phi_0 = theta_0) and are
    saved in the state dict under ``slow_param`` (holocron's wrapper never saved them, and raised
    on ``state_dict()`` with torch >= 2.1). Every parameter of a group is synced, with or without a grad.

    Args:
        base_optimizer: the optimizer whose steps are the fast weights' (fastoptim's or torch's).
        sync_rate: alpha, the slow weights' step toward the fast ones.
        sync_period: k, base steps between syncs.
    """

    buffer_key = "slow_param"

    def __init__(self, base_optimizer: torch.optim.Optimizer, sync_rate: float = 0.5, sync_period: int = 6) -> None:
        super().__init__(base_optimizer, dict(sync_rate=sync_rate, sync_period=sync_period, lookahead_step=0))

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        _check_sync(group["sync_rate"], group["sync_period"], where)
        _check_count(where, lookahead_step=group["lookahead_step"])

    def _new_buffers(self, p: Tensor) -> dict[str, Tensor]:
        return {self.buffer_key: p.detach().clone()}

    def _after_base_step(self, group: dict[str, Any]) -> None:
        group["lookahead_step"] += 1
        if group["lookahead_step"] % group["sync_period"] == 0:
            self._average_into_buffers(list(group["params"]), weight=group["sync_rate"], copy_back=True)


class Scout(Lookahead):
    """holocron.optim's Scout: Lookahead whose sync rate adapts to how coherent the last
    ``sync_period`` updates were, with holocron's signature.

    At a sync, for each element, over the k = sync_period updates d_1..d_k since the last sync:
    ``ratio = std(d) / max_i |d_i - mean(d)|`` (std with Bessel's correction, as torch.std);
    a tensor's coherence is the mean ratio over its elements, the group's the mean over its tensors,
    and the sync uses ``max(1 - coherence, sync_rate)`` as Lookahead's rate.

    Differences from holocron's code, all deliberate:
    - elements (and tensors) that did not move are left out of the means, where holocron gets 0/0 =
      NaN, which makes ``max`` return NaN and its sync reset the weights without moving them: a
      frozen or unused parameter stalls all of training there;
    - constant memory: running statistics (sum of squared updates, smallest and largest update,
      previous weights) instead of all k + 1 snapshots; the mean update is (fast - slow) / k, so
      the statistics are exact, not approximated;
    - the coherence and the rate are computed per param group (holocron: over all groups at once)
      and stay tensors: no ``.item()`` per tensor; with sync_period = 1 (no spread to measure)
      the rate is ``sync_rate``.

    Known limit: the running statistics are stored in the parameter's dtype (the C++ driver keeps
    state in the parameter's dtype), so for bf16/fp16 parameters they accumulate in that precision;
    the coherence itself is computed in fp32.

    Args:
        base_optimizer: the optimizer whose steps are the fast weights' (fastoptim's or torch's).
        sync_rate: the lowest sync rate (the rate is max(1 - coherence, sync_rate)).
        sync_period: k, base steps between syncs (the updates whose coherence is measured).
    """

    own_keys = ("slow_param", "scout_previous", "scout_sum_sq", "scout_min_delta", "scout_max_delta")
    _tracked = own_keys[1:]

    def _new_buffers(self, p: Tensor) -> dict[str, Tensor]:
        zeros = {key: torch.zeros_like(p) for key in self._tracked[1:]}
        return {self.buffer_key: p.detach().clone(), "scout_previous": p.detach().clone(), **zeros}

    def _after_base_step(self, group: dict[str, Any]) -> None:
        params = list(group["params"])
        k = group["sync_period"]
        window_start = group["lookahead_step"] % k == 0
        tracked = [self.state[p][key] for key in self._tracked for p in params]
        local_params = _locals(params)
        _C.scout_track_step_(local_params, [], _locals(tracked), [], [], [float(window_start)], None)
        group["lookahead_step"] += 1
        if group["lookahead_step"] % k == 0:
            rate = self._sync_rate(group, params)
            if local_params and local_params[0].is_cuda:  # (the CUDA kernels read a float32 rate on the device)
                rate = rate.to(device=local_params[0].device, dtype=torch.float32)
            _C.average_step_(local_params, [], _locals(self._buffers(params)), [], [], [0.0, 0.0, 1.0], rate)
            torch._foreach_copy_(_locals([self.state[p]["scout_previous"] for p in params]), local_params)

    def _sync_rate(self, group: dict[str, Any], params: list[Tensor]) -> Tensor:
        """max(1 - coherence, sync_rate) as a 0-d CPU tensor."""
        k = group["sync_period"]
        floor = torch.tensor(float(group["sync_rate"]), dtype=torch.float64)
        if k < 2:
            return floor
        coherence_sum = torch.zeros((), dtype=torch.float64)
        moving_tensors = torch.zeros((), dtype=torch.float64)
        for p in params:
            state = self.state[p]
            wide = torch.promote_types(p.dtype, torch.float32)  # statistics in fp32 at least
            mean = (p.to(wide) - state[self.buffer_key].to(wide)) / k
            variance = (state["scout_sum_sq"].to(wide) - k * mean * mean) / (k - 1)
            std = variance.clamp_min(0).sqrt()
            deviation = torch.maximum(state["scout_max_delta"].to(wide) - mean, mean - state["scout_min_delta"].to(wide))
            moving = deviation > 0
            count = moving.sum()
            ratio_sum = torch.where(moving, std / torch.where(moving, deviation, 1), 0).sum()
            if is_dtensor(count):  # (a DTensor's sums: of every shard)
                count, ratio_sum = count.full_tensor(), ratio_sum.full_tensor()
            coherence_sum += torch.where(count > 0, ratio_sum / count.clamp_min(1), 0).double()
            moving_tensors += (count > 0).double()
        coherence = coherence_sum / moving_tensors.clamp_min(1)
        return torch.maximum(1 - coherence, floor)


class EMA(OptimizerWrapper):
    """An exponential moving average of the weights, updated after the base optimizer's steps.

    Every ``update_every`` steps: the first time ``ema <- theta``, then ``ema <- ema + (1 - d)(theta - ema)``,
    which is torch.optim.swa_utils.AveragedModel with ``get_ema_multi_avg_fn(decay)`` called after
    those steps. ``d`` is ``decay``, or with ``warmup_power`` set, ``min(decay, 1 - (1 + n / warmup_gamma)
    ** -warmup_power)`` for the n-th update (the warm-up of timm's ModelEmaV3), so early averages
    are not dominated by the random initialisation. Use ``swapped_in()`` to evaluate the averaged
    weights and ``copy_averaged_to(model)`` to copy them out.

    Args:
        base_optimizer: the optimizer whose weights are averaged (fastoptim's or torch's).
        decay: d, the average's decay.
        update_every: base steps between updates of the average.
        warmup_power: the power of timm's warm-up of d (None: no warm-up).
        warmup_gamma: the scale of that warm-up's step count.
    """

    buffer_key = "ema_param"

    def __init__(
        self,
        base_optimizer: torch.optim.Optimizer,
        decay: float = 0.999,
        update_every: int = 1,
        warmup_power: float | None = None,
        warmup_gamma: float = 1.0,
    ) -> None:
        defaults = dict(ema_decay=decay, ema_update_every=update_every, ema_warmup_power=warmup_power,
                        ema_warmup_gamma=warmup_gamma, ema_step=0, ema_updates=0)
        super().__init__(base_optimizer, defaults)

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        # (messages name the constructor's arguments: decay is the group's ema_decay, ...)
        decay, power, gamma = group["ema_decay"], group["ema_warmup_power"], group["ema_warmup_gamma"]
        if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0.0 <= decay < 1.0:
            raise ValueError(f"{where}: Invalid decay value: {decay!r} (expected a float in [0, 1))")
        check_positive_int(update_every=group["ema_update_every"])
        if power is not None and (not isinstance(power, numbers.Real) or not 0 < power < math.inf):
            raise ValueError(f"{where}: Invalid warmup_power value: {power!r} (expected a float > 0 or None)")
        if not isinstance(gamma, numbers.Real) or not 0 < gamma < math.inf:
            raise ValueError(f"{where}: Invalid warmup_gamma value: {gamma!r} (expected a float > 0)")
        _check_count(where, ema_step=group["ema_step"], ema_updates=group["ema_updates"])

    def _needs_buffers(self, group: dict[str, Any]) -> bool:
        return group["ema_updates"] > 0

    @staticmethod
    def decay_at(group: dict[str, Any], updates: int) -> float:
        """The decay of the update after `updates` earlier ones."""
        decay = group["ema_decay"]
        if group["ema_warmup_power"] is None:
            return decay
        return min(decay, 1.0 - (1.0 + updates / group["ema_warmup_gamma"]) ** -group["ema_warmup_power"])

    def _after_base_step(self, group: dict[str, Any]) -> None:
        group["ema_step"] += 1
        if group["ema_step"] % group["ema_update_every"] != 0:
            return
        params = list(group["params"])
        if group["ema_updates"] == 0:
            for p in params:
                self.state[p][self.buffer_key] = p.detach().clone()
        else:
            self._average_into_buffers(params, weight=1.0 - self.decay_at(group, group["ema_updates"]))
        group["ema_updates"] += 1


class SWA(OptimizerWrapper):
    """Stochastic weight averaging (Izmailov et al., 2018): an equal-weight running mean of the
    weights after every ``swa_freq``-th step from step ``swa_start`` on (steps count from 1;
    ``swa_start=None``: never, e.g. to keep the option off in a composed optimizer such as AMaC):
    ``avg <- avg + (theta - avg) / (n + 1)``, the first time ``avg <- theta`` - AveragedModel's default
    average on the CPU (its get_swa_avg_fn; bit for bit). Pair it with torch.optim.swa_utils.SWALR for the SWA learning rate, and run
    ``torch.optim.swa_utils.update_bn`` on a model that ``copy_averaged_to`` filled.

    Args:
        base_optimizer: the optimizer whose weights are averaged (fastoptim's or torch's).
        swa_start: the step averaging starts at (None: never).
        swa_freq: steps between the averaged ones.
    """

    buffer_key = "swa_param"

    def __init__(self, base_optimizer: torch.optim.Optimizer, swa_start: int | None = 0, swa_freq: int = 1) -> None:
        super().__init__(base_optimizer, dict(swa_start=swa_start, swa_freq=swa_freq, swa_step=0, swa_n_averaged=0))

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        swa_start = group["swa_start"]
        if swa_start is not None and (isinstance(swa_start, bool) or not isinstance(swa_start, int) or swa_start < 0):
            raise ValueError(f"{where}: Invalid swa_start value: {swa_start!r} (expected an integer >= 0, or None: never)")
        check_positive_int(swa_freq=group["swa_freq"])
        _check_count(where, swa_step=group["swa_step"], swa_n_averaged=group["swa_n_averaged"])

    def _needs_buffers(self, group: dict[str, Any]) -> bool:
        return group["swa_n_averaged"] > 0

    def _after_base_step(self, group: dict[str, Any]) -> None:
        group["swa_step"] += 1
        step = group["swa_step"]
        if group["swa_start"] is None or step < group["swa_start"] or (step - group["swa_start"]) % group["swa_freq"] != 0:
            return
        params = list(group["params"])
        n = group["swa_n_averaged"]
        if n == 0:
            for p in params:
                self.state[p][self.buffer_key] = p.detach().clone()
        else:
            self._average_into_buffers(params, count=n + 1)
        group["swa_n_averaged"] = n + 1
