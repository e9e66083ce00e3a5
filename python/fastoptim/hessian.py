"""Hessian-diagonal estimators shared by SophiaH, SophiaG, AdaHessian and SophiaOptim.

- ``hutchinson``: D = mean over n probes z of z * (H z), with H z from one extra backward through
  the gradient's graph per probe; E[D] = diag(H). Probes are Rademacher (+-1, the default: lower
  variance) or Gaussian, drawn in float32.
- ``gauss_newton_bartlett``: g_hat, the gradient of the mean cross-entropy against labels sampled
  from the model's own logits (Sophia-G); B * E[g_hat^2] is the diagonal of the Gauss-Newton matrix
  for B examples.
- ``spatial_average``: AdaHessian's averaging of |D| over blocks of a tensor.

Random numbers are keyed, not streamed: every probe is a counter-based stream (splitmix64 of the
element index) keyed by (seed, parameter position, refresh index, sample), so a resumed run, another
iteration order or another data-parallel rank draws the same probes for the same key, and a DTensor's
shard draws the elements of the whole tensor's probe that it holds. They are tensor operations (no
torch.Generator is made), so a refresh step traces under torch.compile.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._base import is_dtensor, shard_extent

DISTRIBUTIONS = ("rademacher", "gaussian")
# the "parameter position" of the label draws of Sophia-G (probes use positions 0, 1, ...)
_LABELS = -1  # (all 64 bits set)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # splitmix64's increment and multipliers, as signed int64
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 bits (torch's >> keeps the sign)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _as_int64(value: int) -> int:
    """The low 64 bits of an integer, as the signed int64 with those bits."""
    return ((value & ((1 << 64) - 1)) ^ (1 << 63)) - (1 << 63)


def _splitmix64_(x: Tensor) -> Tensor:
    """splitmix64 of an int64 tensor, in place (wrapping arithmetic: the unsigned original's bits)."""
    x.add_(_GOLDEN)
    x.bitwise_xor_(_shift_right(x, 30)).mul_(_MIX1)
    x.bitwise_xor_(_shift_right(x, 27)).mul_(_MIX2)
    return x.bitwise_xor_(_shift_right(x, 31))


def key_bits(seed: int, position: int, refresh: int, sample: int = 0, device=None) -> Tensor:
    """The 64-bit key of one draw (an int64 scalar tensor): splitmix64 folded over its four parts.
    Tensor operations, not a torch.Generator, so that a step that draws traces under torch.compile."""
    x = _splitmix64_(torch.full((), _as_int64(seed), dtype=torch.int64, device=device))
    for part in (position, refresh, sample):  # (counts: well inside int64)
        x = _splitmix64_(x.bitwise_xor_(part))
    return x


def random_bits_at(key: Tensor, indices: Tensor) -> Tensor:
    """The words of a counter-based stream at int64 `indices`: splitmix64 of key + i * golden for
    element i (in place of `indices`: two int64 words per element at the peak)."""
    return _splitmix64_(indices.mul_(_GOLDEN).add_(key))


def random_bits(key: Tensor, count: int) -> Tensor:
    """The stream's first `count` words."""
    return random_bits_at(key, torch.arange(count, dtype=torch.int64, device=key.device))


def _shard_indices(like: Tensor) -> Tensor:
    """The positions, in the whole tensor's row-major order, of the elements a DTensor's local shard
    holds (int64, shaped like the shard), from where DTensor places the shard in the whole tensor."""
    local_shape, offset = shard_extent(like)
    local = like.to_local()
    indices = torch.zeros(local_shape, dtype=torch.int64, device=local.device)
    stride = 1
    for dim in reversed(range(len(local_shape))):
        along = torch.arange(local_shape[dim], dtype=torch.int64, device=local.device) + offset[dim]
        indices += along.view([-1 if d == dim else 1 for d in range(len(local_shape))]) * stride
        stride *= like.shape[dim]
    return indices


def _unit_interval(bits: Tensor) -> Tensor:
    """float64 uniforms in (0, 1) from the high 32 bits of each word."""
    return (_shift_right(bits, 32).double() + 0.5) * 2.0**-32


def compute_dtype(param: Tensor) -> torch.dtype:
    """Estimates are computed in float32, or float64 for float64 parameters."""
    return torch.float64 if param.dtype == torch.float64 else torch.float32


def placed_like(t: Tensor, param: Tensor) -> Tensor:
    """`t` (a gradient or a Hessian-vector product of `param`) in `param`'s placements: DTensor's
    autograd may hand a sharded parameter's products back sharded otherwise (a Shard(1) weight's
    along dim 0)."""
    if is_dtensor(t) and is_dtensor(param) and t.placements != param.placements:
        return t.redistribute(param.device_mesh, param.placements)
    return t


def probe(like: Tensor, distribution: str, seed: int, position: int, refresh: int, sample: int = 0) -> Tensor:
    """A float32 probe shaped like `like`: +-1 with equal odds, or standard normal. For a DTensor,
    a DTensor of its placements whose shards hold the whole tensor's probe."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"Invalid distribution value: {distribution!r} (expected one of {DISTRIBUTIONS})")
    sharded = is_dtensor(like)
    device = like.to_local().device if sharded else like.device
    key = key_bits(seed, position, refresh, sample, device)
    bits = random_bits_at(key, _shard_indices(like)) if sharded else random_bits(key, like.numel()).view(like.shape)
    if distribution == "rademacher":  # the sign of each word
        values = torch.where(bits < 0, -1.0, 1.0).to(torch.float32)
    else:  # Box-Muller from the two halves of each word
        radius = torch.sqrt(-2.0 * torch.log(_unit_interval(bits)))
        angle = _unit_interval(bits << 32) * (2.0 * torch.pi)
        values = (radius * torch.cos(angle)).to(torch.float32)
    if not sharded:
        return values
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(values, like.device_mesh, like.placements, run_check=False, shape=like.shape,
                              stride=like.stride())


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
    estimates = [torch.zeros_like(p, dtype=compute_dtype(p)) for p in params]  # (a DTensor's: a DTensor)
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
                estimates[i].addcmul_(z, placed_like(hz, params[i]).to(estimates[i].dtype), value=1.0 / n_samples)
    return estimates


# FSDP2's fully_shard keeps each sharded parameter out of the loss's graph (the forward runs on
# gathered copies, whose gradients its hooks reduce-scatter into .grad without a graph), and it does
# not support a double backward: no estimate here can reach such parameters.
OUT_OF_THE_GRAPH = (
    " A DTensor parameter outside the loss's graph is what FSDP2's fully_shard makes (its forward runs on gathered "
    "copies, and it does not support a double backward): under fully_shard, give the estimates with "
    "step(hessian=[...]) (DTensors of the parameters' placements), or use an optimizer without Hessian estimates. "
    "DTensor parameters the model's ops use directly (tensor parallelism) are estimated as plain ones."
)


def gauss_newton_bartlett(logits: Tensor, params: Sequence[Tensor], *, seed: int, refresh: int) -> list[Tensor]:
    """Sophia-G's g_hat for `params` (in compute_dtype): the gradient of the mean cross-entropy of
    `logits` (shape (..., classes)) against labels drawn from softmax(logits). It reads the
    logits' graph once and frees it."""
    flat = logits.reshape(-1, logits.shape[-1])
    with torch.no_grad():
        probabilities = torch.softmax(flat.detach().float(), dim=-1)
        # inverse CDF: the first class whose cumulative probability passes the row's uniform
        uniforms = _unit_interval(random_bits(key_bits(seed, _LABELS, refresh, device=flat.device), flat.shape[0]))
        cumulative = probabilities.double().cumsum(dim=-1)
        below = cumulative < (uniforms * cumulative[:, -1]).unsqueeze(-1)
        labels = below.sum(dim=-1).clamp_(max=flat.shape[-1] - 1)
    sampled_loss = F.cross_entropy(flat, labels)
    grads = torch.autograd.grad(sampled_loss, list(params), allow_unused=True)
    for p, g in zip(params, grads):
        if g is None and is_dtensor(p):
            raise RuntimeError(f"the Gauss-Newton-Bartlett estimate's sampled loss does not reach a DTensor parameter of "
                               f"shape {tuple(p.shape)}." + OUT_OF_THE_GRAPH)
    return [torch.zeros_like(p, dtype=compute_dtype(p)) if g is None else placed_like(g, p).to(compute_dtype(p))
            for p, g in zip(params, grads)]


def spatial_average(estimate: Tensor, block_sizes: Sequence[int]) -> Tensor:
    """AdaHessian's |D| averaged over blocks and spread back over them (the official instruction
    version's rule), for tensors of 0 to 4 dims; block_sizes[ndim - 1] picks the blocks:
    -1: none for 1-D, whole rows for 2-D, the last dim for 3-D, the last two for 4-D;
    b > 0: consecutive runs of b elements (the tensor's size must be a multiple of b).
    A DTensor's blocks may cross its shards: it is averaged whole (gathered once per refresh), and
    each rank keeps its shard of the result."""
    if is_dtensor(estimate):
        from torch.distributed.tensor import distribute_tensor

        whole = spatial_average(estimate.full_tensor(), block_sizes)
        return distribute_tensor(whole, estimate.device_mesh, estimate.placements, src_data_rank=None)
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
