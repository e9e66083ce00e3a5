"""The second-order solvers (issue 17) against dense references of their equations, in float64:
EGN's batch-space solve equals the d x d Gauss-Newton solve, SGN's and Newton-CG's CG reach it too,
SWM-NG equals (F + lambda I)^-1 g, SQN's two-loop equals the dense BFGS inverse, CG stops on
negative curvature; then validation, resume and a real training problem."""

import copy
import math

import pytest
import torch

import fastoptim
from fastoptim.second_order import SQN, cholesky_solve, conjugate_gradient


@pytest.fixture(autouse=True)
def float64_default():
    """These tests compare with dense solves in float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def problem(loss, batch=12, features=5, classes=3, seed=0):
    """A linear model and a batch: (weight, bias, x, y), float64."""
    gen = torch.Generator().manual_seed(seed)
    outputs = {"mse": 2, "ce": classes, "bce": 1}[loss]
    x = torch.randn(batch, features, generator=gen, dtype=torch.float64)
    weight = torch.nn.Parameter(0.3 * torch.randn(outputs, features, generator=gen, dtype=torch.float64))
    bias = torch.nn.Parameter(0.1 * torch.randn(outputs, generator=gen, dtype=torch.float64))
    if loss == "mse":
        y = torch.randn(batch, outputs, generator=gen, dtype=torch.float64)
    elif loss == "ce":
        y = torch.randint(0, classes, (batch,), generator=gen)
    else:
        y = torch.randint(0, 2, (batch, 1), generator=gen).double()
    return weight, bias, x, y


def mean_loss(kind, f, y):
    if kind == "mse":
        return 0.5 * (y - f).square().sum() / len(f)
    if kind == "ce":
        return torch.nn.functional.cross_entropy(f, y)
    return torch.nn.functional.binary_cross_entropy_with_logits(f, y, reduction="sum") / len(f)


def dense_gauss_newton_step(kind, weight, bias, x, y, damping):
    """-(J'QJ + lambda I)^-1 g with J, Q and g formed densely by autograd."""
    theta = torch.cat([weight.detach().reshape(-1), bias.detach()])

    def outputs(t):
        w = t[: weight.numel()].view_as(weight)
        return x @ w.T + t[weight.numel():]

    jac = torch.autograd.functional.jacobian(outputs, theta).reshape(-1, theta.numel())
    f = outputs(theta).detach().requires_grad_()
    q = torch.autograd.functional.hessian(lambda g: mean_loss(kind, g.view_as(f), y), f.detach().reshape(-1))
    g = torch.autograd.grad(mean_loss(kind, f, y), f)[0].reshape(-1)
    curvature = jac.T @ q @ jac + damping * torch.eye(theta.numel())
    return -torch.linalg.solve(curvature, jac.T @ g)


def flat(*tensors):
    return torch.cat([t.detach().reshape(-1) for t in tensors])


@pytest.mark.parametrize("kind", ["mse", "ce", "bce"])
@pytest.mark.parametrize("solver", ["EGN", "SGN"])
def test_a_gauss_newton_step_equals_the_dense_solve(solver, kind):
    weight, bias, x, y = problem(kind)
    expected = flat(weight, bias) + 0.7 * dense_gauss_newton_step(kind, weight, bias, x, y, damping=0.3)
    options = dict(cg_max_iter=100, cg_tol=0.0) if solver == "SGN" else {}
    opt = getattr(fastoptim, solver)([weight, bias], lr=0.7, damping=0.3, loss=kind, **options)
    loss = opt.step(lambda: (x @ weight.T + bias, y))
    torch.testing.assert_close(flat(weight, bias), expected, rtol=1e-9, atol=1e-12)
    weight0, bias0, _, _ = problem(kind)
    torch.testing.assert_close(loss, mean_loss(kind, x @ weight0.T + bias0, y).detach())


def test_newton_cg_with_enough_iterations_takes_the_damped_newton_step():
    weight, bias, x, y = problem("ce")
    theta = flat(weight, bias)

    def loss_of(t):
        return mean_loss("ce", x @ t[: weight.numel()].view_as(weight).T + t[weight.numel():], y)

    hessian = torch.autograd.functional.hessian(loss_of, theta)
    gradient = torch.autograd.functional.jacobian(loss_of, theta)
    expected = theta - torch.linalg.solve(hessian + 0.5 * torch.eye(len(theta)), gradient)
    opt = fastoptim.NewtonCG([weight, bias], lr=1.0, damping=0.5, cg_max_iter=100, cg_tol=0.0, warm_start=0.0)
    opt.step(lambda: mean_loss("ce", x @ weight.T + bias, y))
    torch.testing.assert_close(flat(weight, bias), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["mse", "ce"])
def test_swmng_equals_the_dense_damped_empirical_fisher_step(kind):
    weight, bias, x, y = problem(kind)
    theta = flat(weight, bias)

    def example_loss(t, xi, yi):
        return mean_loss(kind, (xi @ t[: weight.numel()].view_as(weight).T + t[weight.numel():]).unsqueeze(0),
                         yi.unsqueeze(0))

    grads = torch.stack([torch.autograd.functional.jacobian(lambda t: example_loss(t, xi, yi), theta)
                         for xi, yi in zip(x, y)])
    fisher = grads.T @ grads / len(x)
    expected = theta - 0.5 * torch.linalg.solve(fisher + 0.2 * torch.eye(len(theta)), grads.mean(0))
    opt = fastoptim.SWMNG([weight, bias], lr=0.5, damping=0.2, loss=kind)
    opt.step(lambda: (x @ weight.T + bias, y))
    torch.testing.assert_close(flat(weight, bias), expected, rtol=1e-9, atol=1e-12)


def test_sqn_two_loop_equals_the_dense_bfgs_inverse():
    gen = torch.Generator().manual_seed(3)
    d, m = 7, 4
    a = torch.randn(d, d, generator=gen)
    a = a @ a.T + torch.eye(d)  # pairs from an SPD quadratic: s'y > 0
    s = torch.randn(m, d, generator=gen)
    y = s @ a
    rho = 1 / (s * y).sum(1)
    g = torch.randn(d, generator=gen)
    order = [2, 3, 0, 1]  # a ring buffer whose oldest pair sits at slot 2
    newest = order[-1]
    h = (s[newest] @ y[newest]) / (y[newest] @ y[newest]) * torch.eye(d)
    for i in order:  # H <- (I - rho s y') H (I - rho y s') + rho s s'
        left = torch.eye(d) - rho[i] * torch.outer(s[i], y[i])
        h = left @ h @ left.T + rho[i] * torch.outer(s[i], s[i])
    torch.testing.assert_close(SQN.two_loop([g], s, y, rho, order)[0], h @ g, rtol=1e-10, atol=1e-12)
    # the same over pieces (a row of the history is the pieces end to end), on every kernel ISA
    pieces = [g[:2].reshape(1, 2), g[2:2], g[2:]]
    previous = fastoptim._C.isa()
    try:
        for isa in fastoptim._C.available_isas():
            fastoptim._C.set_isa(isa)
            torch.testing.assert_close(flat(*SQN.two_loop(pieces, s, y, rho, order)), h @ g, rtol=1e-10, atol=1e-12)
    finally:
        fastoptim._C.set_isa(previous)


def test_cg_stops_on_negative_curvature():
    a = torch.diag(torch.tensor([2.0, -1.0, 3.0]))
    rhs = torch.tensor([1.0, 1.0, 1.0])
    x, iterations, stopped = conjugate_gradient(lambda v: [a @ v[0]], [rhs], None, 10, 0.0)
    assert stopped and iterations >= 1 and torch.isfinite(x[0]).all()
    # a first direction of negative curvature: the right-hand side itself (steepest descent)
    x, iterations, stopped = conjugate_gradient(lambda v: [-v[0]], [rhs], None, 10, 0.0)
    assert stopped and iterations == 0 and torch.equal(x[0], rhs)
    # the shift counts in the curvature: -I + 2I is positive definite
    x, _, stopped = conjugate_gradient(lambda v: [-v[0]], [rhs], None, 10, 1e-12, shift=2.0)
    assert not stopped and torch.equal(x[0], rhs)
    # a positive definite system is solved
    spd = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
    x, _, stopped = conjugate_gradient(lambda v: [spd @ v[0]], [torch.tensor([1.0, 2.0])], None, 10, 1e-12)
    torch.testing.assert_close(spd @ x[0], torch.tensor([1.0, 2.0]))
    assert not stopped


def random_spd(n, gen, dtype):
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    return (a @ a.T / n + torch.eye(n, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cg_over_pieces_equals_the_dense_solve_on_every_isa(dtype):
    """The core's fused CG passes over pieces of the sizes that exercise the SIMD tails (0, 1, a
    vector width +- 1, a large odd size), with a shift and a warm start: the dense solution, and the
    same bits on every kernel ISA (the passes' sums are fixed-block sums)."""
    gen = torch.Generator().manual_seed(5)
    shapes = [(0,), (1,), (15,), (2, 8), (17,), (3, 3, 3), (1001,)]
    sizes = [math.prod(shape) for shape in shapes]
    n = sum(sizes)
    a = random_spd(n, gen, dtype)
    rhs = [torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) for shape in shapes]
    start = [torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) for shape in shapes]

    def apply(v):
        product = a @ torch.cat([piece.reshape(-1) for piece in v])
        return [piece.view(shape) for piece, shape in zip(product.split(sizes), shapes)]

    expected = torch.linalg.solve(a.double() + 0.5 * torch.eye(n, dtype=torch.float64), flat(*rhs).double())
    solutions = {}
    previous = fastoptim._C.isa()
    try:
        for isa in fastoptim._C.available_isas():
            fastoptim._C.set_isa(isa)
            for x0 in (None, start):
                x, iterations, stopped = conjugate_gradient(apply, rhs, x0, 400, 1e-12 if dtype == torch.float64 else 1e-6,
                                                            shift=0.5)
                assert not stopped and 0 < iterations < 400
                assert [piece.shape for piece in x] == [torch.Size(shape) for shape in shapes]
                tol = dict(rtol=1e-9, atol=1e-11) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(flat(*x).double(), expected, **tol)
                solutions[isa, x0 is None] = flat(*x)
    finally:
        fastoptim._C.set_isa(previous)
    for (isa, cold), x in solutions.items():
        assert torch.equal(x, solutions["scalar", cold]), f"{isa} differs from the scalar path"


def test_core_dense_solve_and_its_jitter():
    gen = torch.Generator().manual_seed(6)
    for n in (1, 7, 64):
        m = random_spd(n, gen, torch.float64)
        rhs = torch.randn(n, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(cholesky_solve(m, rhs), torch.linalg.solve(m, rhs), rtol=1e-12, atol=1e-13)
    # only the lower triangle is read
    m = random_spd(5, gen, torch.float64)
    rhs = torch.randn(5, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(cholesky_solve(torch.tril(m), rhs), torch.linalg.solve(m, rhs), rtol=1e-12, atol=1e-13)
    # positive semi-definite (rank one): solved with a small jitter; indefinite: a clear error
    v = torch.randn(4, generator=gen, dtype=torch.float64)
    semi = torch.outer(v, v)
    x = cholesky_solve(semi, v)
    assert torch.isfinite(x).all()
    with pytest.raises(ValueError, match="not positive definite.*raise damping"):
        cholesky_solve(-torch.eye(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="n x n matrix"):
        cholesky_solve(torch.eye(3, dtype=torch.float64), torch.ones(2, dtype=torch.float64))


def test_core_passes_refuse_mismatched_pieces():
    with pytest.raises(ValueError, match=r"b\[1\] has 3 elements, expected 2"):
        fastoptim._C.solvers.dots([torch.ones(1), torch.ones(2)], [torch.ones(1), torch.ones(3)])
    with pytest.raises(TypeError, match="one dtype per vector"):
        fastoptim._C.solvers.dots([torch.ones(2, dtype=torch.float32)], [torch.ones(2, dtype=torch.float64)])
    with pytest.raises(ValueError, match="contiguous"):
        fastoptim._C.solvers.dots([torch.ones(2, 2)], [torch.ones(2, 2).t()])
    with pytest.raises(ValueError, match="2 pieces, expected 1"):
        conjugate_gradient(lambda v: [v[0], v[0]], [torch.ones(2)], None, 5, 0.0)


# ---- a real problem: a tanh MLP on scikit-learn's diabetes data ------------------------------------
def diabetes_mlp(seed=0):
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x = torch.tensor(data.data, dtype=torch.float64)
    y = torch.tensor(data.target, dtype=torch.float64).unsqueeze(1)
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)).double()
    return model, x, y


SOLVERS = {
    "NewtonCG": (lambda p: fastoptim.NewtonCG(p, damping=0.1, damping_policy="lm", line_search="armijo"), "loss"),
    "SQN": (lambda p: fastoptim.SQN(p, lr=1.0, line_search="armijo"), "loss"),
    "EGN": (lambda p: fastoptim.EGN(p, damping=0.1), "outputs"),
    "SGN": (lambda p: fastoptim.SGN(p, damping=0.1), "outputs"),
    "SWMNG": (lambda p: fastoptim.SWMNG(p, lr=0.5, damping=1.0), "outputs"),
}


def closure_for(kind, model, x, y):
    if kind == "loss":
        return lambda: 0.5 * (model(x) - y).square().mean()
    return lambda: (model(x), y)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_each_solver_trains_the_diabetes_mlp(name):
    make, kind = SOLVERS[name]
    model, x, y = diabetes_mlp()
    x, y = x[:128], y[:128]  # (EGN's system is batch x batch)
    opt = make(model.parameters())
    closure = closure_for(kind, model, x, y)
    first = opt.step(closure)
    for _ in range(14):
        last = opt.step(closure)
    assert torch.isfinite(last) and last < 0.8 * first


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_resume_from_a_state_dict_continues_bit_for_bit(name):
    make, kind = SOLVERS[name]
    model, x, y = diabetes_mlp()
    x, y = x[:64], y[:64]
    opt = make(model.parameters())
    for _ in range(3):
        opt.step(closure_for(kind, model, x, y))
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    other, _, _ = diabetes_mlp(seed=1)
    other.load_state_dict(saved_model)
    resumed = make(other.parameters())
    resumed.load_state_dict(saved_opt)
    for _ in range(3):
        opt.step(closure_for(kind, model, x, y))
        resumed.step(closure_for(kind, other, x, y))
    for p, q in zip(model.parameters(), other.parameters()):
        assert torch.equal(p, q)


# ---- what a user gets wrong is refused before anything changes ------------------------------------
@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: fastoptim.NewtonCG(p, damping=0.0), r"Invalid damping value: 0.0"),
        (lambda p: fastoptim.NewtonCG(p, cg_max_iter=0), r"Invalid cg_max_iter value: 0"),
        (lambda p: fastoptim.NewtonCG(p, damping_policy="trust"), r"Invalid damping_policy value: 'trust'"),
        (lambda p: fastoptim.SQN(p, history_size=0), r"Invalid history_size value: 0"),
        (lambda p: fastoptim.SQN(p, line_search="wolfe"), r"Invalid line_search value: 'wolfe'"),
        (lambda p: fastoptim.EGN(p, loss="hinge"), r"Invalid loss value: 'hinge'"),
        (lambda p: fastoptim.EGN(p, momentum=1.0), r"Invalid momentum value: 1.0"),
        (lambda p: fastoptim.SGN(p, lr=float("inf")), r"Invalid lr value: inf"),
        (lambda p: fastoptim.SWMNG(p, damping=-1), r"Invalid damping value: -1"),
    ],
)
def test_bad_hyperparameters_raise_value_errors_naming_them(make, message):
    with pytest.raises(ValueError, match=message):
        make([torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))])


def test_low_precision_parameters_are_refused():
    with pytest.raises(TypeError, match=r"bfloat16; the second-order solvers take float32 or float64"):
        fastoptim.EGN([torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))])
    # a group's curvature system has one dtype; parameters of another go in a group of their own
    mixed = [torch.nn.Parameter(torch.zeros(3, dtype=torch.float64)), torch.nn.Parameter(torch.zeros(3, dtype=torch.float32))]
    with pytest.raises(TypeError, match=r"mixes torch.float64 and torch.float32 \(parameter #1\)"):
        fastoptim.SGN(mixed)
    opt = fastoptim.SGN([mixed[0]])
    opt.add_param_group({"params": [mixed[1]]})
    assert len(opt.param_groups) == 2


@pytest.mark.parametrize(
    "name,closure,error,message",
    [
        ("EGN", lambda model, x, y: 0.5 * (model(x) - y).square().mean(), TypeError, r"must return \(outputs, targets\)"),
        ("NewtonCG", lambda model, x, y: (model(x), y), TypeError, r"must return the scalar loss"),
        ("SGN", lambda model, x, y: (model(x), y[:-1]), ValueError, r"outputs and targets of one shape"),
        ("SWMNG", lambda model, x, y: (model(x), y.squeeze(1)), ValueError, r"outputs and targets of one shape"),
    ],
)
def test_a_closure_of_the_wrong_kind_raises_before_any_parameter_changes(name, closure, error, message):
    model, x, y = diabetes_mlp()
    before = copy.deepcopy(model.state_dict())
    opt = SOLVERS[name][0](model.parameters())
    with pytest.raises(error, match=message):
        opt.step(lambda: closure(model, x[:16], y[:16]))
    assert all(torch.equal(p, before[k]) for k, p in model.state_dict().items())


def test_ce_takes_integer_labels():
    weight, bias, x, y = problem("ce")
    opt = fastoptim.EGN([weight, bias], loss="ce")
    with pytest.raises(ValueError, match=r"loss='ce' takes logits \(b, C\) and integer labels \(b,\)"):
        opt.step(lambda: (x @ weight.T + bias, y.double()))


def test_egn_refuses_a_budget_that_cannot_hold_two_rows_of_the_jacobian():
    model, x, y = diabetes_mlp()
    opt = fastoptim.EGN(model.parameters(), max_jacobian_bytes=1000)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"one row of the Jacobian \(385 parameters\) takes 3080 bytes and two must "
                                         r"fit in max_jacobian_bytes=1000: raise it, or use solver='cg'"):
        opt.step(lambda: (model(x[:16]), y[:16]))
    assert all(torch.equal(p, before[k]) for k, p in model.state_dict().items())


@pytest.mark.parametrize("variant", ["chunked", "cg"])
@pytest.mark.parametrize("kind", ["mse", "ce"])
def test_egn_chunked_and_matrix_free_solves_equal_the_whole_one(kind, variant):
    weight, bias, x, y = problem(kind, batch=20)
    other = [weight.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()]
    whole = fastoptim.EGN([weight, bias], lr=0.7, damping=0.3, loss=kind)
    d = weight.numel() + bias.numel()
    # chunked: room for two chunks of 3 rows; cg: never forms J
    options = dict(max_jacobian_bytes=2 * 3 * d * 8) if variant == "chunked" else dict(solver="cg", cg_tol=1e-14)
    split = fastoptim.EGN(other, lr=0.7, damping=0.3, loss=kind, **options)
    for _ in range(3):
        whole.step(lambda: (x @ weight.T + bias, y))
        split.step(lambda: (x @ other[0].T + other[1], y))
    torch.testing.assert_close(flat(*other), flat(weight, bias), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver", ["EGN", "SGN", "SWMNG"])
def test_a_curvature_batch_gives_the_dense_solve_with_that_batchs_curvature(solver):
    """d = -(C + lambda I)^-1 g with C the curvature of the curvature closure's batch (Gauss-Newton
    for EGN and SGN, the empirical Fisher for SWM-NG) and g the gradient of the closure's batch."""
    weight, bias, x, y = problem("ce", batch=16)
    xc, yc = x[:6], y[:6]
    theta = flat(weight, bias)

    def logits(t, inputs):
        return inputs @ t[: weight.numel()].view_as(weight).T + t[weight.numel():]

    gradient = torch.autograd.functional.jacobian(lambda t: mean_loss("ce", logits(t, x), y), theta)
    if solver == "SWMNG":
        per_example = torch.stack([torch.autograd.functional.jacobian(
            lambda t: mean_loss("ce", logits(t, xi[None]), yi[None]), theta) for xi, yi in zip(xc, yc)])
        curvature = per_example.T @ per_example / len(xc)
    else:
        jac = torch.autograd.functional.jacobian(lambda t: logits(t, xc).reshape(-1), theta)
        q = torch.autograd.functional.hessian(lambda f: mean_loss("ce", f.view(len(xc), -1), yc),
                                              logits(theta, xc).reshape(-1))
        curvature = jac.T @ q @ jac
    expected = theta - 0.5 * torch.linalg.solve(curvature + 0.2 * torch.eye(len(theta)), gradient)
    options = dict(cg_max_iter=200, cg_tol=0.0) if solver == "SGN" else {}
    opt = getattr(fastoptim, solver)([weight, bias], lr=0.5, damping=0.2, loss="ce", **options)
    opt.step(lambda: (x @ weight.T + bias, y), curvature_closure=lambda: (xc @ weight.T + bias, yc))
    torch.testing.assert_close(flat(weight, bias), expected, rtol=1e-9, atol=1e-12)


def test_newton_cg_with_a_curvature_batch_uses_its_hessian():
    weight, bias, x, y = problem("ce", batch=16)
    xc, yc = x[:5], y[:5]
    theta = flat(weight, bias)

    def loss_of(t, inputs, labels):
        return mean_loss("ce", inputs @ t[: weight.numel()].view_as(weight).T + t[weight.numel():], labels)

    hessian = torch.autograd.functional.hessian(lambda t: loss_of(t, xc, yc), theta)
    gradient = torch.autograd.functional.jacobian(lambda t: loss_of(t, x, y), theta)
    expected = theta - torch.linalg.solve(hessian + 0.5 * torch.eye(len(theta)), gradient)
    opt = fastoptim.NewtonCG([weight, bias], damping=0.5, cg_max_iter=100, cg_tol=0.0, warm_start=0.0)
    opt.step(lambda: mean_loss("ce", x @ weight.T + bias, y), curvature_closure=lambda: mean_loss("ce", xc @ weight.T + bias, yc))
    torch.testing.assert_close(flat(weight, bias), expected, rtol=1e-9, atol=1e-12)


def test_sqn_skips_a_pair_of_negative_curvature():
    """Somax stores every pair; a pair with s'y <= 0 (a concave stretch) would make H indefinite."""
    p = torch.nn.Parameter(torch.tensor([0.5, -0.3]))
    opt = fastoptim.SQN([p], lr=0.1)
    opt.step(lambda: -(p.square().sum()) + 0.1 * p.sum())  # concave: y = -2 s, s'y < 0
    assert int(opt.state[p]["history_length"]) == 0
    opt.step(lambda: p.square().sum())  # convex: stored
    assert int(opt.state[p]["history_length"]) == 1


def test_newton_cg_lm_damping_follows_the_ratio_of_the_step_taken():
    """rho = (f(theta + a d) - f(theta)) / (a g'd + a^2 d'Hd / 2); on a quadratic the model is exact
    (rho = 1 > 3/4): lambda halves; where the model overestimates the decrease (sqrt(1 + q^2), whose
    curvature fades), it grows by 1.5."""
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = fastoptim.NewtonCG([p], damping=0.4, damping_policy="lm", warm_start=0.0)
    opt.step(lambda: (p - 3).square().sum())
    assert float(opt.state[p]["damping"]) == pytest.approx(0.2)
    q = torch.nn.Parameter(torch.tensor([1.0]))
    opt = fastoptim.NewtonCG([q], lr=1.0, damping=1e-3, damping_policy="lm", warm_start=0.0)
    opt.step(lambda: (1 + q.square()).sqrt().sum())  # the step lands at about -1: rho < 1/4
    assert float(opt.state[q]["damping"]) == pytest.approx(1.5e-3)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_egn_steps_a_confident_classifier_whose_probabilities_underflow(solver):
    """float32 softmax probabilities of e^-200 are 0: the step must stay finite (it was 0/0)."""
    weight = torch.nn.Parameter(torch.tensor([[200.0, 0.0], [0.0, 0.0], [0.0, 200.0]], dtype=torch.float32))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]], dtype=torch.float32)
    y = torch.tensor([0, 2, 0])
    assert (torch.softmax(x @ weight.T, 1) == 0).any()
    opt = fastoptim.EGN([weight], damping=1e-2, loss="ce", solver=solver)
    opt.step(lambda: (x @ weight.T, y))
    assert torch.isfinite(weight).all()


def test_param_groups_are_solved_one_after_the_other_each_with_its_own_state():
    """Two groups step as two optimizers would, one after the other on the same closure (the
    curvature between groups is left out), each with its own damping and lr."""
    model, x, y = diabetes_mlp()
    twin, _, _ = diabetes_mlp()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    opt = fastoptim.EGN([{"params": first, "damping": 0.5}, {"params": second, "lr": 0.5}], damping=0.1)
    opt_a = fastoptim.EGN(list(twin[0].parameters()), damping=0.5)
    opt_b = fastoptim.EGN(list(twin[2].parameters()), lr=0.5, damping=0.1)
    for _ in range(2):
        opt.step(lambda: (model(x[:32]), y[:32]))
        opt_a.step(lambda: (twin(x[:32]), y[:32]))
        opt_b.step(lambda: (twin(x[:32]), y[:32]))
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    assert float(opt.state[first[0]]["damping"]) == 0.5 and float(opt.state[second[0]]["damping"]) == 0.1


def test_an_lr_scheduler_drives_the_step_size():
    """SGN (cold CG starts, constant damping) keeps nothing that changes its next direction, so each
    step with the scheduler's lr equals a step of a new SGN built with that lr."""
    weight, bias, x, y = problem("mse")
    twin = [weight.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()]
    opt = fastoptim.SGN([weight, bias], lr=1.0, damping=0.3)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for lr in (1.0, 0.5, 0.25):
        opt.step(lambda: (x @ weight.T + bias, y))
        scheduler.step()
        fastoptim.SGN(twin, lr=lr, damping=0.3).step(lambda: (x @ twin[0].T + twin[1], y))
        assert torch.equal(flat(weight, bias), flat(*twin))


def test_sgn_line_search_backtracks_to_a_decrease():
    """Armijo from lr: a step too long for the loss is shortened until the loss decreases enough."""
    weight, bias, x, y = problem("ce")
    opt = fastoptim.SGN([weight, bias], lr=50.0, damping=1e-3, loss="ce", line_search="armijo")
    with torch.no_grad():
        before = float(mean_loss("ce", x @ weight.T + bias, y))
    loss = opt.step(lambda: (x @ weight.T + bias, y))
    with torch.no_grad():
        assert float(loss) == pytest.approx(before) and float(mean_loss("ce", x @ weight.T + bias, y)) < before
