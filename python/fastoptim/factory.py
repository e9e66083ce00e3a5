"""Optimizers by name, and param groups the way timm users build them.

    opt = fastoptim.create_optimizer(model, "lamb", lr=1e-3, weight_decay=0.05)
    opt = fastoptim.create_optimizer(model, "lookahead_adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    fastoptim.list_optimizers()            # ['adabelief', 'adagrad', 'adahessian', 'adam', ...]
    groups = fastoptim.param_groups(model, weight_decay=0.05)   # no decay on biases and norms

Names are the class names in lower case (``adamw``, ``sophiag``, ``newtoncg``); ``lookahead_<name>``
wraps the optimizer in ``fastoptim.Lookahead``, as timm's prefix does.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, Sequence

import torch

from . import second_order, wrappers


def _catalogue() -> dict[str, type]:
    """Every optimizer class of fastoptim that takes parameters, by lower-case name."""
    import fastoptim

    classes = {}
    for name in fastoptim.__all__:
        cls = getattr(fastoptim, name)
        if (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)
                and next(iter(inspect.signature(cls).parameters)) == "params"):  # (not a wrapper of an optimizer)
            classes[name.lower()] = cls
    return classes


def list_optimizers(filter: str = "") -> list[str]:  # noqa: A002  (timm's argument name)
    """The names `create_optimizer` takes, sorted; `filter` keeps those containing it.

    Args:
        filter: a substring the names must contain ("" : all).
    """
    return sorted(name for name in _catalogue() if filter.lower() in name)


def param_groups(model: torch.nn.Module, weight_decay: float = 0.0, no_decay: Sequence[str] = ("bias", "norm"),
                 layer_decay: float | None = None, lr: float | None = None,
                 layer_of: Callable[[str], int] | None = None) -> list[dict[str, Any]]:
    """Param groups of a model's trainable parameters, as timm builds them.

    Args:
        model: the module whose ``named_parameters()`` are grouped (frozen ones are left out).
        weight_decay: the decay of the parameters that decay.
        no_decay: name fragments (case-insensitive) of parameters that take no weight decay; every
            parameter of one dimension or less (biases, norm scales) takes none either, as in timm.
        layer_decay: layer-wise lr decay (timm's ``layer_decay``): layer i of n gets the lr scale
            ``layer_decay ** (n - i)``, so the last layer keeps the lr and earlier ones learn slower.
            Layers are the model's top-level children in order (a Sequential's modules; a
            transformer's embedding, blocks container, head), unless `layer_of` says otherwise.
        lr: when given, each group's ``lr`` is ``lr`` times its scale (else only ``lr_scale`` is set).
        layer_of: maps a parameter's name to its layer index (0 first), for finer grouping (e.g.
            one layer per transformer block).

    Returns:
        A list of groups ``{"params", "weight_decay", "lr_scale"[, "lr"]}``, one per (layer, decays),
        in the model's order; a torch.optim or fastoptim optimizer takes it as its params.
    """
    if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"param_groups: Invalid layer_decay value: {layer_decay!r} (expected a number in (0, 1])")
    if weight_decay < 0.0:
        raise ValueError(f"param_groups: Invalid weight_decay value: {weight_decay!r}")
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    children = [name for name, _ in model.named_children()]
    if layer_of is None:
        def layer_of(name: str) -> int:
            first = name.split(".", 1)[0]
            return children.index(first) if first in children else 0
    layers = max((layer_of(name) for name, _ in named), default=0) + 1
    fragments = [fragment.lower() for fragment in no_decay]
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in named:
        decays = p.ndim > 1 and not any(fragment in name.lower() for fragment in fragments)
        layer = layer_of(name) if layer_decay is not None else layers - 1
        key = (layer, decays)
        if key not in groups:
            scale = 1.0 if layer_decay is None else layer_decay ** (layers - 1 - layer)
            groups[key] = {"params": [], "weight_decay": weight_decay if decays else 0.0, "lr_scale": scale}
            if lr is not None:
                groups[key]["lr"] = lr * scale
        groups[key]["params"].append(p)
    return list(groups.values())


def create_optimizer(model_or_params: torch.nn.Module | Iterable[Any], name: str = "adamw", lr: float | None = None,
                     weight_decay: float = 0.0, *, no_decay: Sequence[str] = ("bias", "norm"),
                     layer_decay: float | None = None, **kwargs: Any) -> torch.optim.Optimizer:
    """An optimizer by name, timm's ``create_optimizer_v2`` for fastoptim.

    Args:
        model_or_params: a module (its parameters are grouped by `param_groups`: no weight decay on
            biases, norms and other 1-d parameters, and the optional layer-wise lr decay), or
            parameters / param groups as any optimizer takes them (then `weight_decay` is passed as is).
        name: a name from `list_optimizers()`, optionally prefixed ``lookahead_``.
        lr: the learning rate (the class's default when None).
        weight_decay: the weight decay of the parameters that decay.
        no_decay, layer_decay: see `param_groups` (with a module only).
        **kwargs: the class's other arguments (``betas``, ``momentum``, ...).
    """
    catalogue = _catalogue()
    key = name.lower()
    lookahead = key.startswith("lookahead_")
    if lookahead:
        key = key[len("lookahead_"):]
    if key not in catalogue:
        raise ValueError(f"create_optimizer: unknown optimizer {name!r}; choose one of {list_optimizers()} "
                         "(or lookahead_<name>)")
    cls = catalogue[key]
    accepts = inspect.signature(cls).parameters
    if weight_decay and "weight_decay" not in accepts:
        raise ValueError(f"create_optimizer: {cls.__name__} takes no weight_decay, got {weight_decay!r}")
    if isinstance(model_or_params, torch.nn.Module):
        params: Any = param_groups(model_or_params, weight_decay, no_decay, layer_decay,
                                   lr if lr is not None else accepts["lr"].default)
        for group in params:
            del group["lr_scale"]  # (the lr carries it: torch.optim keeps unknown keys, state dicts would too)
            if "weight_decay" not in accepts:
                del group["weight_decay"]
    else:
        if layer_decay is not None:
            raise ValueError("create_optimizer: layer_decay needs a module (its parameters' names), not parameters")
        params = model_or_params
        if "weight_decay" in accepts:
            kwargs["weight_decay"] = weight_decay
    if lr is not None:
        kwargs["lr"] = lr
    optimizer = cls(params, **kwargs)
    if lookahead:
        if issubclass(cls, second_order.SecondOrderOptimizer):
            raise ValueError(f"create_optimizer: {name!r}: Lookahead wraps first-order optimizers only")
        optimizer = wrappers.Lookahead(optimizer)
    return optimizer
