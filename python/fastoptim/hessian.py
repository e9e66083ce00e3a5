"""Hessian-diagonal estimators shared by SophiaH, SophiaG, AdaHessian and SophiaOptim.

- ``hutchinson``: D = mean over n probes z of z * (H z), with H z from one extra backward through
  the gradient's graph per probe; E[D] = diag(H). Probes are Rademacher (+-1, the default: lower
  variance) or Gaussian, drawn in float32.
- ``gauss_newton_bartlett``: g_hat, the gradient of the mean cross-entropy against labels sampled
  from the model's own logits (Sophia-G); B * E[g_hat^2] is the diagonal of the Gauss-Newton matrix
  for B examples.
- ``spatial_average``: AdaHessian's averaging of |D| over blocks of a tensor.

Random numbers are keyed, not streamed: every probe comes from its own generator seeded by
(seed, parameter position, refresh index, sample), so a resumed run, another iteration order or
another data-parallel rank draws the same probes for the same key.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

DISTRIBUTIONS = ("rademacher", "gaussian")
_MASK64 = (1 << 64) - 1
# the "parameter position" of the label draws of Sophia-G (probes use positions 0, 1, ...)
_LABELS = _MASK64


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def key_seed(seed: int, position: int, refresh: int, sample: int = 0) -> int:
    """The 64-bit generator seed of one draw: splitmix64 folded over the key's four parts."""
    x = _splitmix64(seed & _MASK64)
    for part in (position, refresh, sample):
        x = _splitmix64(x ^ (part & _MASK64))
    return x


def _generator(device: torch.device, seed: int) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def compute_dtype(param: Tensor) -> torch.dtype:
    """Estimates are computed in float32, or float64 for float64 parameters."""
    return torch.float64 if param.dtype == torch.float64 else torch.float32


def probe(like: Tensor, distribution: str, seed: int, position: int, refresh: int, sample: int = 0) -> Tensor:
    """A float32 probe shaped like `like`: +-1 with equal odds, or standard normal."""
    generator = _generator(like.device, key_seed(seed, position, refresh, sample))
    if distribution == "rademacher":
        bits = torch.randint(0, 2, like.shape, generator=generator, device=like.device, dtype=torch.float32)
        return bits.mul_(2).sub_(1)
    if distribution == "gaussian":
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=torch.float32)
    raise ValueError(f"Invalid distribution value: {distribution!r} (expected one of {DISTRIBUTIONS})")


def hutchinson(
    grads: Sequence[Tensor],
    params: Sequence[Tensor],
    positions: Sequence[int],
    *,
    seed: int,
    refresh: int,
    n_samples: int = 1,
    distribution: str = "rademacher",
    keep_graph: bool = False,
) -> list[Tensor]:
    """Hutchinson estimates of diag(H) for `params` (in compute_dtype): mean over samples of z * Hz.

    `grads` are the gradients of the loss with their graph (``create_graph=True``); `positions` the
    parameters' keys for the probes. The graph is kept only while more samples remain (or with
    `keep_graph`, for a caller with more parameters to probe), so it is free once this returns. A gradient without a graph (its parameter enters the loss linearly)
    has a zero Hessian block: its estimate is zero.
    """
    estimates = [torch.zeros(p.shape, dtype=compute_dtype(p), device=p.device) for p in params]
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    if not live:
        return estimates
    for sample in range(n_samples):
        probes = [probe(params[i], distribution, seed, positions[i], refresh, sample) for i in live]
        products = torch.autograd.grad(
            [grads[i] for i in live],
            [params[i] for i in live],
            grad_outputs=[z.to(grads[i].dtype) for z, i in zip(probes, live)],
            retain_graph=keep_graph or sample < n_samples - 1,
            allow_unused=True,
        )
        for i, z, hz in zip(live, probes, products):
            if hz is not None:
                estimates[i].addcmul_(z, hz.to(estimates[i].dtype), value=1.0 / n_samples)
    return estimates


def gauss_newton_bartlett(logits: Tensor, params: Sequence[Tensor], *, seed: int, refresh: int) -> list[Tensor]:
    """Sophia-G's g_hat for `params` (in compute_dtype): the gradient of the mean cross-entropy of
    `logits` (shape (..., classes)) against labels drawn from softmax(logits). It reads the
    logits' graph once and frees it."""
    flat = logits.reshape(-1, logits.shape[-1])
    with torch.no_grad():
        probabilities = torch.softmax(flat.detach().float(), dim=-1)
        generator = _generator(flat.device, key_seed(seed, _LABELS, refresh))
        labels = torch.multinomial(probabilities, 1, generator=generator).view(-1)
    sampled_loss = F.cross_entropy(flat, labels)
    grads = torch.autograd.grad(sampled_loss, list(params), allow_unused=True)
    return [torch.zeros(p.shape, dtype=compute_dtype(p), device=p.device) if g is None else g.to(compute_dtype(p))
            for p, g in zip(params, grads)]


def spatial_average(estimate: Tensor, block_sizes: Sequence[int]) -> Tensor:
    """AdaHessian's |D| averaged over blocks and spread back over them (the official instruction
    version's rule), for tensors of 0 to 4 dims; block_sizes[ndim - 1] picks the blocks:
    -1: none for 1-D, whole rows for 2-D, the last dim for 3-D, the last two for 4-D;
    b > 0: consecutive runs of b elements (the tensor's size must be a multiple of b)."""
    magnitude = estimate.abs()
    ndim = max(estimate.dim(), 1)
    if ndim > 4:
        raise ValueError(f"spatial averaging is defined for tensors of up to 4 dims, got shape {tuple(estimate.shape)}")
    block = block_sizes[ndim - 1]
    if block == -1:
        if ndim == 1:
            return magnitude
        dims = {2: (1,), 3: (2,), 4: (2, 3)}[ndim]
        return magnitude.mean(dim=dims, keepdim=True).expand_as(magnitude).contiguous()
    if magnitude.numel() % block:
        raise ValueError(
            f"spatial_average_block_size {block} does not divide the {magnitude.numel()} elements of a tensor of shape "
            f"{tuple(estimate.shape)}"
        )
    means = magnitude.reshape(-1, block).mean(dim=1, keepdim=True)
    return means.expand(-1, block).reshape(estimate.shape).contiguous()
