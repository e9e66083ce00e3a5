"""AMaC against a plain-PyTorch reference of the spec's equations (its own Philox noise included),
each technique alone against the optimizer it reduces to, bounded weights under zero gradients,
and bit-identical resume."""

import math

import pytest
import torch

import fastoptim
from reference import (
    PARITY_DTYPES,
    SHAPES,
    TOLERANCE,
    assert_all_close_rel,
    assert_every_isa_gives_the_same_bits,
    assert_resumes_bit_identically,
    clone_params,
    make_params,
    noise_grads,
    run_pair,
)

MASK = 0xFFFFFFFF


def _mul_hi_lo(a: int, b: torch.Tensor):
    """The 64-bit product of the 32-bit constant a and the 32-bit values b (int64), as 32-bit
    (hi, lo), computed in 16-bit halves so no int64 product overflows."""
    low, high = a * (b & 0xFFFF), a * (b >> 16)
    return ((high + (low >> 16)) >> 16) & MASK, (low + ((high & 0xFFFF) << 16)) & MASK


def philox4x32_10(c0, c1, c2, c3, k0: int, k1: int):
    for _ in range(10):
        hi0, lo0 = _mul_hi_lo(0xD2511F53, c0)
        hi1, lo1 = _mul_hi_lo(0xCD9E8D57, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + 0x9E3779B9) & MASK, (k1 + 0xBB67AE85) & MASK
    return c0, c1, c2, c3


def normals(seed: int, stream: int, step: int, numel: int) -> torch.Tensor:
    """The spec's draws for elements 0..numel-1: Philox4x32-10 on counter (index, 0, stream, step),
    key (seed mod 2^32, seed / 2^32), then Box-Muller on the first two words, in float64."""
    index = torch.arange(numel, dtype=torch.int64)
    full = lambda v: torch.full_like(index, v)  # noqa: E731
    x0, x1, _, _ = philox4x32_10(index & MASK, index >> 32, full(stream), full(step), seed & MASK, seed >> 32)
    u1 = (x0.double() + 1.0) / 2.0**32
    u2 = x1.double() / 2.0**32
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * math.pi * u2)


def test_the_reference_philox_gives_random123s_known_answers():
    one = lambda v: torch.tensor([v], dtype=torch.int64)  # noqa: E731
    cases = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((MASK,) * 4, (MASK, MASK), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for counter, key, expected in cases:
        assert tuple(int(x) for x in philox4x32_10(*map(one, counter), *key)) == expected


def test_the_draws_are_standard_normal():
    n = normals(seed=12345, stream=3, step=7, numel=200_000)
    assert abs(n.mean().item()) < 0.01 and abs(n.std().item() - 1.0) < 0.01
    assert not torch.equal(n, normals(seed=12345, stream=3, step=8, numel=200_000))


def reference_amac(params, grads_per_step, lr=1e-3, betas=(0.9, 0.999), momentum=0.9, eps=1e-8, weight_decay=0.01,
                   lookahead_alpha=0.5, lookahead_k=5, clip_value=1.0, warmup_steps=1000, total_steps=None,
                   swa_start=None, noise_factor=0.01, seed=0, clip_mode="grad", min_lr=0.0, swa_freq=None,
                   noise_decay_steps=None, gradient_centralization=True, gc_conv_only=False, maximize=False):
    """The spec's equations (algorithms.md section 6) in plain PyTorch; returns the parameters and
    the SWA average (None before its first update)."""
    (b1, b2), w = betas, warmup_steps
    horizon = 3 * w if total_steps is None else total_steps
    noise_horizon = 2 * w if noise_decay_steps is None else noise_decay_steps
    params = [p.detach().clone() for p in params]
    m, v, u = ([torch.zeros_like(p) for p in params] for _ in range(3))
    slow = [p.clone() for p in params]
    swa, swa_n = None, 0
    for t, grads in enumerate(grads_per_step, start=1):
        if t < w:
            lr_t = lr * t / w
        elif horizon <= w:
            lr_t = lr
        else:
            lr_t = min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min((t - w) / (horizon - w), 1.0)))
        wd_t = weight_decay * max(0.0, 1 - t / (2 * w)) if w > 0 else weight_decay
        sigma = noise_factor * max(0.0, 1 - t / noise_horizon) if noise_horizon > 0 else 0.0
        for i, (p, g) in enumerate(zip(params, grads)):
            g = -g if maximize else g
            if gradient_centralization and g.dim() > (3 if gc_conv_only else 1):
                g = g - g.mean(dim=tuple(range(1, g.dim())), keepdim=True)
            if clip_value and clip_mode == "grad":
                g = g.clamp(-clip_value, clip_value)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            delta = (m[i] / (1 - b1**t)) / (v[i].sqrt() / math.sqrt(1 - b2**t) + eps)
            if sigma > 0:
                delta = delta + sigma * normals(seed, i, t, p.numel()).reshape(p.shape).to(p.dtype)
            if clip_value and clip_mode == "update":
                delta = delta.clamp(-clip_value, clip_value)
            p = p * (1 - lr_t * wd_t)
            if momentum:
                u[i] = momentum * u[i] - lr_t * delta
                params[i] = p + u[i]
            else:
                params[i] = p - lr_t * delta
        if lookahead_k and t % lookahead_k == 0:
            slow = [s + lookahead_alpha * (p - s) for s, p in zip(slow, params)]
            params = [s.clone() for s in slow]
        freq = swa_freq or lookahead_k or 1
        if swa_start is not None and t >= swa_start and (t - swa_start) % freq == 0:
            swa = [p.clone() for p in params] if swa is None else [a + (p - a) / (swa_n + 1) for a, p in zip(swa, params)]
            swa_n += 1
    return params, swa


W = 10  # warm-up steps: the runs below take 3W steps (noise on for the first 2W)
CASES = [
    dict(),
    dict(noise_factor=0.0),
    dict(clip_mode="update", swa_start=10, swa_freq=5, noise_factor=0.05),
    dict(gc_conv_only=True, min_lr=1e-4, total_steps=25, noise_decay_steps=15, maximize=True, lr=1e-2),
    dict(momentum=0.0, lookahead_k=None, weight_decay=0.1, clip_value=0.5, swa_start=20, swa_freq=1),
]


@PARITY_DTYPES
@pytest.mark.parametrize("cfg", CASES, ids=str)
def test_matches_the_reference_of_the_spec_over_three_warmups(cfg, dtype):
    cfg = dict(dict(warmup_steps=W, seed=2024, lr=5e-3), **cfg)
    params = make_params(SHAPES, dtype)
    start = clone_params(params)
    opt = fastoptim.AMaC(params, **cfg)
    grads_per_step = []
    for step in range(3 * W):
        grads = noise_grads(params, step)
        for p, g in zip(params, grads):
            p.grad = g
        grads_per_step.append(grads)
        opt.step()
    expected, swa = reference_amac(start, grads_per_step, **cfg)
    assert_all_close_rel(params, expected, TOLERANCE[dtype])
    if cfg.get("swa_start") is not None:
        assert_all_close_rel(opt.averaged_parameters(), swa, TOLERANCE[dtype])


ALL_OFF = dict(momentum=0.0, weight_decay=0.0, lookahead_k=None, clip_value=None, warmup_steps=0, noise_factor=0.0,
               gradient_centralization=False)


def centralized(grads):
    return [g - g.mean(dim=tuple(range(1, g.dim())), keepdim=True) if g.dim() > 1 else g for g in grads]


def warmup_cosine(t):  # AMaC's schedule factor at step t for warmup_steps=W, total_steps=3W
    return t / W if t < W else 0.5 * (1 + math.cos(math.pi * min((t - W) / (2 * W), 1.0)))


class Scheduled:
    """A torch optimizer whose group values are set before each step t (from 1), the way an LR
    scheduler would: the reference for the schedules AMaC computes inside its step."""

    def __init__(self, optimizer, values_at):
        self.optimizer, self.values_at, self.t = optimizer, values_at, 0

    def step(self):
        self.t += 1
        for group in self.optimizer.param_groups:
            group.update(self.values_at(self.t))
        self.optimizer.step()


def adam_with_lr_schedule(ps):
    return Scheduled(torch.optim.Adam(ps, lr=1e-2, foreach=False), lambda t: dict(lr=1e-2 * warmup_cosine(t)))


def adamw_with_decay_schedule(ps):  # AdamW decays by lr * weight_decay: AMaC's lr_t and wd_t
    return Scheduled(torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, foreach=False),
                     lambda t: dict(lr=1e-2 * warmup_cosine(t), weight_decay=0.1 * max(0.0, 1 - t / (2 * W))))


PARTS = {  # name: (AMaC options on top of ALL_OFF, the optimizer it reduces to, gradient transform)
    "all off: Adam": (dict(), lambda ps: torch.optim.Adam(ps, lr=1e-2, foreach=False), None),
    "centralization: Adam on centralized gradients": (
        dict(gradient_centralization=True), lambda ps: torch.optim.Adam(ps, lr=1e-2, foreach=False), centralized),
    "clipping: Adam on clamped gradients": (
        dict(clip_value=0.5), lambda ps: torch.optim.Adam(ps, lr=1e-2, foreach=False),
        lambda grads: [g.clamp(-0.5, 0.5) for g in grads]),
    "schedule: Adam with the warm-up + cosine LR": (dict(warmup_steps=W), adam_with_lr_schedule, None),
    "dynamic decay: AdamW with the decay schedule": (dict(warmup_steps=W, weight_decay=0.1), adamw_with_decay_schedule, None),
    "lookahead: Lookahead(Adam)": (
        dict(lookahead_k=4, lookahead_alpha=0.3),
        lambda ps: fastoptim.Lookahead(torch.optim.Adam(ps, lr=1e-2, foreach=False), sync_rate=0.3, sync_period=4), None),
    "swa: SWA(Adam)": (
        dict(swa_start=5, swa_freq=3),
        lambda ps: fastoptim.SWA(torch.optim.Adam(ps, lr=1e-2, foreach=False), swa_start=5, swa_freq=3), None),
}


@pytest.mark.parametrize("part", list(PARTS))
def test_each_part_alone_reduces_to_a_known_optimizer(part):
    options, make_reference, transform = PARTS[part]
    dtype = torch.float64
    ours_params = make_params(SHAPES, dtype)
    ref_params = clone_params(ours_params)
    ours = fastoptim.AMaC(ours_params, **{**ALL_OFF, "lr": 1e-2, **options})
    ref = make_reference(ref_params)
    for step in range(3 * W):
        step_grads = noise_grads(ours_params, step)
        for p, q, g in zip(ours_params, ref_params, step_grads):
            p.grad = g.clone()
        for q, g in zip(ref_params, transform(step_grads) if transform else step_grads):
            q.grad = g.clone()
        ours.step()
        ref.step()
    assert_all_close_rel(ours_params, ref_params, 1e-10)
    if "swa" in part:
        assert_all_close_rel(ours.averaged_parameters(), ref.averaged_parameters(), 1e-10)


def test_momentum_is_heavy_ball_on_adams_direction():
    """momentum on, all else off: theta - u after each step is the Adam step of that step."""
    params, ref, _, _ = run_pair(
        lambda ps: fastoptim.AMaC(ps, **{**ALL_OFF, "lr": 1e-2, "momentum": 0.9}),
        lambda ps: fastoptim.AMaC(ps, **{**ALL_OFF, "lr": 1e-2}),
        torch.float64, steps=1,
    )
    assert_all_close_rel(params, ref, 1e-12)  # the first step: u = -lr delta, as Adam
    start = make_params(SHAPES, torch.float64)
    grads_per_step = [noise_grads(start, step) for step in range(20)]
    expected, _ = reference_amac(start, grads_per_step, **{**ALL_OFF, "lr": 1e-2, "momentum": 0.9})
    params = clone_params(start)
    opt = fastoptim.AMaC(params, **{**ALL_OFF, "lr": 1e-2, "momentum": 0.9})
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
    assert_all_close_rel(params, expected, 1e-12)


def test_zero_gradients_keep_the_weights_bounded_for_ten_warmups():
    """The seed's weight decay and noise amplitude turn negative after 2W: its weights grow by 67 %
    in 30k steps. Here both stop at zero, so the weights only shrink (and jitter while the noise is on)."""
    warmup = 50
    params = [torch.nn.Parameter(torch.ones(1000)), torch.nn.Parameter(torch.ones(20, 30))]
    opt = fastoptim.AMaC(params, warmup_steps=warmup, seed=1)
    for _ in range(10 * warmup):
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
    for p in params:
        assert torch.isfinite(p).all()
        assert p.abs().max().item() <= 1.0 + 1e-3  # the noise's jitter, no growth
        assert p.mean().item() < 1.0  # the decay acted


def test_noise_follows_the_seed_and_stops_after_its_horizon():
    def run(seed, steps):
        params = make_params([(257,)], torch.float64)
        opt = fastoptim.AMaC(params, **{**ALL_OFF, "noise_factor": 0.1, "warmup_steps": 5, "seed": seed, "lr": 1.0})
        moves = []
        for _ in range(steps):
            before = params[0].detach().clone()
            params[0].grad = torch.zeros(257, dtype=torch.float64)
            opt.step()
            moves.append((params[0] - before).abs().max().item())
        return params[0].detach(), moves

    a, moves = run(1, 12)
    b, _ = run(1, 12)
    c, _ = run(2, 12)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert all(m > 0 for m in moves[:9]) and all(m == 0 for m in moves[10:])  # sigma_t = 0 from t = 2W = 10


def test_every_isa_draws_and_steps_the_same_bits():
    assert_every_isa_gives_the_same_bits(lambda ps: fastoptim.AMaC(ps, warmup_steps=3, seed=5, lr=1e-2))


def test_state_dict_round_trip_is_bit_identical():
    """Schedule position, noise counter, momentum, slow and SWA weights all come back."""
    opt, resumed = assert_resumes_bit_identically(
        lambda ps: fastoptim.AMaC(ps, warmup_steps=10, swa_start=8, swa_freq=2, lr=1e-2, seed=3), SHAPES, save_at=7, until=25
    )
    for a, b in zip(opt.averaged_parameters(), resumed.averaged_parameters()):
        assert torch.equal(a, b)


def test_seed_none_draws_a_seed_from_torchs_generator():
    torch.manual_seed(0)
    first = fastoptim.AMaC(make_params([(3,)], torch.float32)).param_groups[0]["seed"]
    torch.manual_seed(0)
    assert fastoptim.AMaC(make_params([(3,)], torch.float32)).param_groups[0]["seed"] == first


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0"),
        (dict(momentum=1.0), r"Invalid momentum value: 1.0"),
        (dict(clip_value=0.0), "Invalid clip_value value: 0.0"),
        (dict(clip_mode="value"), "Invalid clip_mode value: 'value'"),
        (dict(warmup_steps=-1), "Invalid warmup_steps value: -1"),
        (dict(warmup_steps=10, total_steps=5), r"Invalid total_steps value: 5 \(expected >= warmup_steps = 10\)"),
        (dict(lookahead_k=0), "Invalid lookahead_k value: 0"),
        (dict(lookahead_alpha=1.5), "Invalid lookahead_alpha value: 1.5"),
        (dict(seed=-1), "Invalid seed value: -1"),
        (dict(noise_factor=-0.1), "Invalid noise_factor value: -0.1"),
        (dict(min_lr=0.1), "min_lr must not exceed lr"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        opt = fastoptim.AMaC(make_params(SHAPES, torch.float32), **kwargs)
        set_grads_and_step(opt)


def set_grads_and_step(opt):
    for group in opt.param_groups:
        for p in group["params"]:
            p.grad = torch.ones_like(p)
    opt.step()
