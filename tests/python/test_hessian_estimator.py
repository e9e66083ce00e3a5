"""The Hessian-diagonal estimators (fastoptim.hessian) against exact Hessians: Hutchinson's mean
approaches diag(H) of a quadratic and of a tiny MLP (torch.func.hessian), the Gauss-Newton-Bartlett
estimate approaches the Gauss-Newton diagonal of softmax regression, probes are keyed, and
AdaHessian's spatial averaging follows the official rule for every ndim."""

import pytest
import torch
from torch.func import functional_call, hessian

from fastoptim.hessian import _splitmix64_, gauss_newton_bartlett, hutchinson, key_bits, probe, spatial_average


def test_rademacher_probes_are_plus_minus_one_with_both_signs():
    z = probe(torch.empty(10001), "rademacher", seed=3, position=0, refresh=0)
    assert z.dtype == torch.float32
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    assert 0.47 < (z > 0).float().mean().item() < 0.53


def test_gaussian_probes_are_standard_normal():
    z = probe(torch.empty(100001, dtype=torch.float64), "gaussian", seed=3, position=0, refresh=0)
    assert z.dtype == torch.float32
    assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1) < 0.02


def test_probes_depend_on_every_part_of_their_key_and_on_nothing_else():
    like = torch.empty(64)
    base = probe(like, "rademacher", seed=1, position=2, refresh=3, sample=4)
    assert torch.equal(base, probe(like, "rademacher", seed=1, position=2, refresh=3, sample=4))
    for changed in (dict(seed=9), dict(position=9), dict(refresh=9), dict(sample=9)):
        key = dict(seed=1, position=2, refresh=3, sample=4, **{})
        key.update(changed)
        assert not torch.equal(base, probe(like, "rademacher", **key)), changed
    assert len({int(key_bits(1, p, r)) for p in range(50) for r in range(50)}) == 2500
    # a seed of more than 63 bits keys by its low 64 bits
    assert int(key_bits(2**64 + 5, 0, 0)) == int(key_bits(5, 0, 0))


def test_the_tensor_splitmix64_is_the_unsigned_one():
    """int64 tensor arithmetic wraps: it gives splitmix64's bits, written here over Python's integers."""
    mask = (1 << 64) - 1

    def unsigned(x):
        x = (x + 0x9E3779B97F4A7C15) & mask
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    for x in (0, 1, 12345, 2**62, 2**63 + 5, mask):
        as_int64 = x - (1 << 64) if x >= 1 << 63 else x
        assert int(_splitmix64_(torch.tensor(as_int64))) & mask == unsigned(x)


def _mean_estimate(loss_fn, params, samples, distribution="rademacher"):
    loss = loss_fn(params)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    return hutchinson(grads, params, list(range(len(params))), seed=0, refresh=0, n_samples=samples,
                      distribution=distribution)


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_mean_approaches_the_diagonal_of_a_quadratic(distribution):
    gen = torch.Generator().manual_seed(0)
    root = torch.randn(12, 12, generator=gen, dtype=torch.float64)
    a = root @ root.T / 12 + torch.eye(12, dtype=torch.float64)
    x = torch.randn(12, dtype=torch.float64, generator=gen).requires_grad_()
    samples = 4000
    (estimate,) = _mean_estimate(lambda ps: 0.5 * ps[0] @ a @ ps[0], [x], samples, distribution)
    exact = torch.diagonal(a)
    # one Rademacher sample errs by sum_{j != i} z_j a_ij (variance: the off-diagonal row norm);
    # a Gaussian one also by (z_i^2 - 1) a_ii
    variance = (a * a).sum(1) - exact**2 + (2 * exact**2 if distribution == "gaussian" else 0)
    error = (estimate.double() - exact).abs()
    assert (error < 5 * (variance / samples).sqrt()).all(), (error, variance)
    assert not torch.allclose(estimate.double(), exact, atol=1e-6)  # an estimate, not the exact value


def test_hutchinson_mean_approaches_the_hessian_diagonal_of_a_tiny_mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]

    def loss_of(values):
        return torch.nn.functional.mse_loss(functional_call(model, dict(zip(names, values)), (x,)), y)

    exact = hessian(lambda *values: loss_of(values), argnums=tuple(range(len(params))))(*[p.detach() for p in params])
    samples = 3000
    estimates = _mean_estimate(loss_of, params, samples)
    for i, (p, estimate) in enumerate(zip(params, estimates)):
        block = exact[i][i].reshape(p.numel(), p.numel())
        diagonal = torch.diagonal(block).reshape(p.shape)
        off_diagonal = (block * block).sum(1).reshape(p.shape) - diagonal**2  # the diagonal block's share
        full_rows = sum((exact[i][j].reshape(p.numel(), -1) ** 2).sum(1) for j in range(len(params))).reshape(p.shape)
        bound = 5 * ((full_rows - diagonal**2) / samples).sqrt() + 1e-6
        assert ((estimate.double() - diagonal).abs() <= bound).all(), names[i]
        assert off_diagonal.abs().sum() > 0 or names[i].endswith("bias")


def test_gauss_newton_bartlett_approaches_the_gauss_newton_diagonal_of_softmax_regression():
    torch.manual_seed(0)
    batch, features, classes = 32, 5, 4
    x = torch.randn(batch, features, dtype=torch.float64)
    weight = (0.5 * torch.randn(classes, features, dtype=torch.float64)).requires_grad_()
    p = torch.softmax(x @ weight.detach().T, dim=1)
    # for the mean cross-entropy, E[B g_hat^2] = (1/B) sum_i p_ic (1 - p_ic) x_id^2
    exact = (p * (1 - p)).T @ (x * x) / batch
    draws = 3000
    total = torch.zeros(classes, features, dtype=torch.float64)
    gradient_sum = torch.zeros(classes, features, dtype=torch.float64)
    for refresh in range(draws):
        (g,) = gauss_newton_bartlett(x @ weight.T, [weight], seed=0, refresh=refresh)
        total += batch * g.double() ** 2
        gradient_sum += g.double()
    mean = total / draws
    assert torch.allclose(mean, exact, rtol=0.15), (mean, exact)
    assert (gradient_sum / draws).abs().max() < 0.05 * exact.sqrt().max()  # sampled-label gradients have mean 0


def test_spatial_average_follows_the_official_rule_per_ndim():
    d = torch.randn(6, 4, 3, 2, dtype=torch.float64)
    blocks = (-1, -1, -1, -1)
    assert torch.equal(spatial_average(d[0, 0, 0], blocks), d[0, 0, 0].abs())  # 1-D: none
    assert torch.equal(spatial_average(d[0, 0, 0, 0], blocks), d[0, 0, 0, 0].abs())  # 0-d: none
    two = d.reshape(6, 24)
    assert torch.equal(spatial_average(two, blocks), two.abs().mean(1, keepdim=True).expand(6, 24))
    three = d.reshape(6, 4, 6)
    assert torch.equal(spatial_average(three, blocks), three.abs().mean(2, keepdim=True).expand(6, 4, 6))
    assert torch.equal(spatial_average(d, blocks), d.abs().mean((2, 3), keepdim=True).expand(6, 4, 3, 2))
    runs = spatial_average(two, (-1, 8, -1, -1))
    assert torch.equal(runs, two.abs().reshape(-1, 8).mean(1, keepdim=True).expand(-1, 8).reshape(6, 24))


def test_spatial_average_rejects_what_it_cannot_average():
    with pytest.raises(ValueError, match="does not divide the 24 elements"):
        spatial_average(torch.ones(4, 6), (-1, 5, -1, -1))
    with pytest.raises(ValueError, match="up to 4 dims"):
        spatial_average(torch.ones(1, 1, 1, 1, 1), (-1, -1, -1, -1))
