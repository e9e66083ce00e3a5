"""SophiaG and SophiaH: parity with pytorch_optimizer 4.1.0's SophiaH given the same Hessian
estimates, with the official SophiaG's equations (written here), the refresh schedule and its
three drivers (closure, create_graph gradients, given estimates), the deviations, resume, ISAs,
memory and validation."""

import copy
import gc
import resource

import pytest
import torch
from pytorch_optimizer import SophiaH as ReferenceSophiaH

import fastoptim
from fastoptim.hessian import gauss_newton_bartlett, hutchinson
from reference import (
    PARITY_DTYPES,
    SHAPES,
    TOLERANCE,
    GivenHessian,
    assert_all_close_rel,
    assert_close_rel,
    assert_every_isa_gives_the_same_bits,
    assert_low_precision_steps_round_once,
    assert_resumes_bit_identically,
    exact_estimates,
    gradient_estimates,
    make_params,
    noise_grads,
)


def run_with_estimates(ours, ref, params, ref_params, steps, interval):
    """Steps both with the same gradients, and the same estimates on steps 1, interval + 1, ..."""
    for step in range(steps):
        for p, q, g in zip(params, ref_params, noise_grads(params, step)):
            p.grad, q.grad = g.clone(), g.clone()
        refresh = step % interval == 0
        ours.step(hessian=gradient_estimates(params) if refresh else None)
        ref.step(hessian=gradient_estimates(ref_params) if refresh else None)


SOPHIA_H_CASES = [
    dict(),
    dict(weight_decay=0.1),
    dict(betas=(0.9, 0.95), p=0.05, maximize=True),
]


@PARITY_DTYPES
@pytest.mark.parametrize("case", SOPHIA_H_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_sophia_h_matches_pytorch_optimizer_given_the_same_estimates(case, dtype):
    clip = case.get("p", 1e-2)
    kwargs = {"weight_decay": 0.0, "betas": (0.965, 0.99), **{k: v for k, v in case.items() if k != "p"}}
    params = make_params(SHAPES, dtype)
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    # pytorch_optimizer's lr * clamp(m / max(h, eps), -p, p) is Sophia with rho = 1, c = p, eps = 0
    ours = fastoptim.SophiaH(params, lr=0.05, rho=1.0, clip_threshold=clip, eps=0.0, **kwargs)
    ref = ReferenceSophiaH(ref_params, lr=0.05, p=clip, update_period=10, **kwargs)
    run_with_estimates(ours, ref, params, ref_params, steps=30, interval=10)
    assert_all_close_rel(params, ref_params, TOLERANCE[dtype])


def official_sophia_g(params, estimates_at, steps, lr, betas, rho, weight_decay, bs, interval, grads_at):
    """The official SophiaG's equations (Liuhong99/Sophia): decay, m, clipped step; the caller's
    update_hessian() h <- b2 h + (1 - b2) g_hat^2 every `interval` steps from the first."""
    params = [p.detach().clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    h = [torch.zeros_like(p) for p in params]
    for step in range(steps):
        if step % interval == 0:
            for hh, e in zip(h, estimates_at(step)):
                hh.mul_(betas[1]).addcmul_(e, e, value=1 - betas[1])
        for p, mm, hh, g in zip(params, m, h, grads_at(step)):
            p.mul_(1 - lr * weight_decay)
            mm.mul_(betas[0]).add_(g, alpha=1 - betas[0])
            ratio = (mm.abs() / (rho * bs * hh + 1e-15)).clamp(None, 1)
            p.addcmul_(mm.sign(), ratio, value=-lr)
    return params


def test_sophia_g_matches_the_official_equations_with_update_hessian():
    # float64 only: the official m is mul_ then add_ (two roundings), ours torch's lerp, and where
    # h is still 0 the step is lr sign(m): in float32 an m within rounding of 0 flips its sign.
    dtype = torch.float64
    params = make_params(SHAPES, dtype)
    start = [p.detach().clone() for p in params]
    hyper = dict(lr=0.01, betas=(0.965, 0.99), rho=0.04, weight_decay=0.1)
    opt = fastoptim.SophiaG(params, **hyper)

    def sampled_gradients(step):  # a stand-in for the gradient at sampled labels
        return [0.1 * g for g in noise_grads(params, 500 + step)]

    for step in range(30):
        if step % 10 == 0:  # the official script's pattern: .grad <- g_hat, update_hessian()
            for p, e in zip(params, sampled_gradients(step)):
                p.grad = e
            opt.update_hessian()
        for p, g in zip(params, noise_grads(params, step)):
            p.grad = g
        opt.step(bs=480)
    expected = official_sophia_g(start, sampled_gradients, 30, bs=480, interval=10, grads_at=lambda s: noise_grads(params, s), **hyper)
    assert_all_close_rel(params, expected, TOLERANCE[dtype])


def test_before_any_estimate_every_coordinate_moves_by_lr_times_the_sign_of_m():
    (p,) = make_params([(1000,)], torch.float64)
    start = p.detach().clone()
    opt = fastoptim.SophiaG([p], lr=0.01, weight_decay=0.0)
    p.grad = noise_grads([p], 0)[0]
    opt.step()  # the closure-less SophiaG does not refresh by itself: h = 0
    assert torch.allclose(start - p, 0.01 * torch.sign(p.grad), rtol=0, atol=1e-15)


def test_a_negative_estimate_gives_the_clipped_sign_step_not_a_step_against_the_momentum():
    (p,) = make_params([(1000,)], torch.float64)
    start = p.detach().clone()
    opt = fastoptim.SophiaH([p], lr=0.01, weight_decay=0.0, clip_threshold=0.5, betas=(0.9, 0.0))
    p.grad = noise_grads([p], 0)[0]
    opt.step(hessian=[torch.full_like(p, -2.0)])  # beta2 = 0: h is the estimate
    # the official code would divide |m| by rho h + eps < 0 and step along +sign(m), unbounded
    assert torch.allclose(start - p, 0.01 * 0.5 * torch.sign(p.grad), rtol=0, atol=1e-15)


def test_bias_correction_divides_the_momentum():
    params = make_params([(500,)], torch.float64)
    results = []
    for corrected in (False, True):
        (p,) = [q.detach().clone().requires_grad_() for q in params]
        opt = fastoptim.SophiaH([p], lr=0.01, rho=1.0, weight_decay=0.0, bias_correction=corrected)
        p.grad = noise_grads([p], 0)[0]
        opt.step(hessian=[torch.full_like(p, 1000.0)])  # large h: no coordinate clipped
        results.append(params[0].detach() - p.detach())
    plain, corrected = results
    nonzero = plain != 0
    assert torch.allclose(corrected[nonzero] / plain[nonzero], torch.tensor(1 / (1 - 0.965), dtype=torch.float64))


def test_step_bs_is_the_group_bs_for_one_step():
    a, b = make_params([(300,)], torch.float32), make_params([(300,)], torch.float32)
    opt_a, opt_b = fastoptim.SophiaG(a, lr=0.01), fastoptim.SophiaG(b, lr=0.01, bs=64)
    for step in range(4):
        for p, q, g in zip(a, b, noise_grads(a, step)):
            p.grad, q.grad = g.clone(), g.clone()
        est = [torch.full_like(a[0], 0.01)] if step == 0 else None
        opt_a.step(hessian=est, bs=64)
        opt_b.step(hessian=[e.clone() for e in est] if est else None)
    assert torch.equal(a[0], b[0])
    assert opt_a.param_groups[0]["bs"] == 5120


# ---- the refresh and its drivers ----------------------------------------------------------------
def tiny_problem(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(dtype)
    x, y = torch.randn(32, 6, dtype=dtype), torch.randint(0, 3, (32,))
    return model, x, y


def test_the_closure_refresh_equals_create_graph_gradients_and_equals_given_estimates():
    """Three drivers of the same refreshes (steps 1, 4, 7 with interval 3) give the same bits."""
    runs = []
    for driver in ("closure", "create_graph", "given"):
        model, x, y = tiny_problem()
        params = list(model.parameters())
        opt = fastoptim.SophiaH(params, lr=0.01, hessian_update_interval=3, seed=7, n_samples=2)
        for step in range(8):
            opt.zero_grad()
            refresh = step % 3 == 0
            if driver == "closure":
                opt.step(lambda: torch.nn.functional.cross_entropy(model(x), y))
            elif driver == "create_graph":
                torch.nn.functional.cross_entropy(model(x), y).backward(create_graph=refresh)
                opt.step()
            else:
                loss = torch.nn.functional.cross_entropy(model(x), y)
                grads = torch.autograd.grad(loss, params, create_graph=refresh)
                estimates = hutchinson(grads, params, list(range(len(params))), seed=7, refresh=step, n_samples=2) if refresh else None
                for p, g in zip(params, grads):
                    p.grad = g.detach()
                opt.step(hessian=estimates)
            assert all(not p.grad.requires_grad for p in params)  # no graph kept alive by .grad
        runs.append([p.detach().clone() for p in params])
        assert opt.state[params[0]]["hessian"].abs().sum() > 0
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other))


def test_sophia_g_refreshes_from_sampled_labels_when_the_closure_returns_logits():
    runs = []
    for driver in ("closure", "update_hessian"):
        model, x, y = tiny_problem()
        params = list(model.parameters())
        opt = fastoptim.SophiaG(params, lr=0.01, bs=32, hessian_update_interval=2, seed=3)
        for step in range(5):
            opt.zero_grad()
            if driver == "closure":
                def closure():
                    logits = model(x)
                    return torch.nn.functional.cross_entropy(logits, y), logits
                opt.step(closure)
            else:
                logits = model(x)
                torch.nn.functional.cross_entropy(logits, y).backward(retain_graph=True)
                if step % 2 == 0:
                    opt.update_hessian(gauss_newton_bartlett(logits, params, seed=3, refresh=step))
                opt.step()
        runs.append([p.detach().clone() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    assert opt.state[params[0]]["hessian"].abs().sum() > 0


@pytest.mark.parametrize("name, state_bits", [("SophiaH", None), ("SophiaG", None), ("SophiaH", 8)],
                         ids=["SophiaH", "SophiaG", "SophiaH-8-bit"])  # (AdaHessian refreshes as SophiaH does)
def test_refresh_steps_trace_under_torch_compile_with_fullgraph(name, state_bits):
    """A step that refreshes (the closure, the Hessian-vector products or sampled labels, the probes,
    the fold: with 8-bit state, on the codes and their scales) traces whole: with dynamo's
    trace_autograd_ops, the compiled step(closure) over refresh and plain steps gives the eager bits."""
    runs = []
    for compiled in (False, True):
        model, x, y = tiny_problem()
        opt = getattr(fastoptim, name)(model.parameters(), lr=0.01, hessian_update_interval=2, seed=5, state_bits=state_bits)

        def closure():
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            return (loss, logits) if name == "SophiaG" else loss

        torch._dynamo.reset()  # (the compiles of the other cases count against one recompile limit)
        step = torch.compile(opt.step, backend="aot_eager", fullgraph=True) if compiled else opt.step
        with torch._dynamo.config.patch(trace_autograd_ops=True):
            for _ in range(3):  # refresh, plain, refresh
                opt.zero_grad()
                step(closure)
        runs.append([p.detach().clone() for p in model.parameters()])
        assert opt.state[next(model.parameters())][opt.hessian_key].float().abs().sum() > 0
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_win_rate_is_the_fraction_of_unclipped_coordinates():
    (p,) = make_params([(1000,)], torch.float32)
    opt = fastoptim.SophiaH([p], lr=0.01, rho=1.0, weight_decay=0.0, betas=(0.0, 0.0))
    p.grad = torch.linspace(-1, 1, 1000)
    opt.step(hessian=[torch.full_like(p, 2.0)])  # m = g, h = 2: unclipped where |g| < 2 * 1 ... all
    assert opt.win_rate().item() == 1.0
    p.grad = torch.linspace(-1, 1, 1000)
    opt.step(hessian=[torch.full_like(p, 0.5)])  # unclipped where |g| < 0.5
    assert opt.win_rate().item() == pytest.approx((p.grad.abs() < 0.5).float().mean().item())


def test_a_refresh_without_a_graph_is_an_error_that_says_what_to_do():
    model, x, y = tiny_problem()
    opt = fastoptim.SophiaH(model.parameters())
    torch.nn.functional.cross_entropy(model(x), y).backward()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=r"loss.backward\(create_graph=opt.hessian_refresh_due\) before each step"):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert not opt.state


def test_a_closure_that_calls_backward_is_an_error_that_says_what_to_do():
    model, x, y = tiny_problem()
    opt = fastoptim.SophiaH(model.parameters())

    def closure():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match=r"without calling backward"):
        opt.step(closure)


def test_a_closure_that_fills_grad_itself_and_returns_a_detached_loss_is_used_as_is():
    model, x, y = tiny_problem()
    opt = fastoptim.SophiaG(model.parameters(), lr=0.01)

    def closure():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach()

    before = [p.detach().clone() for p in model.parameters()]
    loss = opt.step(closure)
    assert loss.item() > 0 and any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))


# ---- training loops that call backward themselves (HF Trainer, Lightning, accelerate) ------------
HUTCHINSON_OPTIMIZERS = {
    "SophiaH": lambda params: fastoptim.SophiaH(params, lr=0.01, hessian_update_interval=3, seed=7),
    "AdaHessian": lambda params: fastoptim.AdaHessian(params, lr=0.01, update_period=3, seed=7),
    "SophiaOptim": lambda params: fastoptim.SophiaOptim(params, lr=0.01, hessian_update_interval=3, seed=7, lookahead_k=2),
}


@pytest.mark.parametrize("name", sorted(HUTCHINSON_OPTIMIZERS))
def test_loops_that_call_backward_themselves_refresh_through_hessian_refresh_due(name):
    """The call patterns of the frameworks, without them: a Trainer / accelerate loop
    (``backward(create_graph=opt.hessian_refresh_due)``, then ``step()``) and Lightning's automatic
    optimization (a closure that runs that backward and returns a detached loss) step as the closure
    that returns the loss does, bit for bit; hessian_refresh_due is true on steps 1, 4, 7."""
    runs = []
    for loop in ("closure", "trainer", "lightning"):
        model, x, y = tiny_problem()
        opt = HUTCHINSON_OPTIMIZERS[name](model.parameters())
        due = []
        for _ in range(8):
            opt.zero_grad()
            due.append(opt.hessian_refresh_due)
            loss_of = lambda: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
            if loop == "closure":
                opt.step(loss_of)
            elif loop == "trainer":
                loss_of().backward(create_graph=opt.hessian_refresh_due)
                opt.step()
            else:
                def closure():
                    loss = loss_of()
                    loss.backward(create_graph=opt.hessian_refresh_due)
                    return loss.detach()
                opt.step(closure)
            assert all(not p.grad.requires_grad for p in model.parameters())  # no graph left in .grad
        assert due == [step % 3 == 0 for step in range(8)], due
        runs.append([p.detach().clone() for p in model.parameters()])
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other)), name


def test_gradient_accumulation_refreshes_from_the_accumulated_graph():
    """accelerate's gradient accumulation: two micro-batches, each ``backward(create_graph=
    opt.hessian_refresh_due)`` of half its loss, then one step: the step of the whole batch's loss
    (the same Hessian-vector products, summed in another order: within 1e-6)."""
    runs = []
    for loop in ("whole batch", "two micro-batches"):
        model, x, y = tiny_problem()
        opt = fastoptim.SophiaH(model.parameters(), lr=0.01, hessian_update_interval=2, seed=5)
        halves = [(x[:16], y[:16]), (x[16:], y[16:])]
        for _ in range(5):
            opt.zero_grad()
            if loop == "whole batch":
                opt.step(lambda: sum(torch.nn.functional.cross_entropy(model(a), b) for a, b in halves) / 2)
            else:
                for a, b in halves:
                    (torch.nn.functional.cross_entropy(model(a), b) / 2).backward(create_graph=opt.hessian_refresh_due)
                opt.step()
        runs.append([p.detach().clone() for p in model.parameters()])
        assert opt.state[next(iter(model.parameters()))]["hessian"].abs().sum() > 0
    for a, b in zip(*runs):
        assert_close_rel(a, b, 1e-6)


# ---- resume, ISAs, memory, validation ------------------------------------------------------------
@pytest.mark.parametrize("name", ["SophiaG", "SophiaH"])
def test_resume_mid_run_is_bit_identical(name):
    def make(params):
        return GivenHessian(getattr(fastoptim, name)(params, lr=0.01, hessian_update_interval=4, seed=1))

    opt, resumed = assert_resumes_bit_identically(make, SHAPES, save_at=6, until=14)
    assert opt.param_groups[0]["hessian_clock"] == resumed.param_groups[0]["hessian_clock"] == 14


def test_resume_with_closure_refreshes_draws_the_same_probes():
    model, x, y = tiny_problem()

    def closure_of(m):
        return lambda: torch.nn.functional.cross_entropy(m(x), y)

    opt = fastoptim.SophiaH(model.parameters(), lr=0.01, hessian_update_interval=3, seed=11)
    for _ in range(4):
        opt.zero_grad()
        opt.step(closure_of(model))
    copy_model, _, _ = tiny_problem(seed=1)
    copy_model.load_state_dict(model.state_dict())
    resumed = fastoptim.SophiaH(copy_model.parameters(), lr=0.01, hessian_update_interval=3, seed=99)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))  # the seed and the clock come with the groups
    for _ in range(5):  # refreshes at steps 7 and 10
        for o, m in ((opt, model), (resumed, copy_model)):
            o.zero_grad()
            o.step(closure_of(m))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), copy_model.parameters()))


@pytest.mark.parametrize("name", ["SophiaG", "SophiaH"])
def test_every_isa_gives_the_same_bits(name):
    assert_every_isa_gives_the_same_bits(lambda ps: GivenHessian(getattr(fastoptim, name)(ps, lr=0.01, hessian_update_interval=2)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", ["SophiaG", "SophiaH"])
def test_low_precision_steps_round_once(name, dtype):
    # a refresh every step: the helper's float32 reference is a new optimizer each step
    assert_low_precision_steps_round_once(
        lambda ps: GivenHessian(getattr(fastoptim, name)(ps, lr=1e-2, hessian_update_interval=1), exact_estimates), dtype
    )


def _live_tensors():
    gc.collect()
    return sum(1 for o in gc.get_objects() if torch.is_tensor(o))


def test_two_hundred_steps_with_refreshes_keep_no_graph_alive():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 10))
    x, y = torch.randn(128, 64), torch.randint(0, 10, (128,))
    opt = fastoptim.SophiaH(model.parameters(), lr=1e-3, hessian_update_interval=2, seed=0)

    def closure():
        return torch.nn.functional.cross_entropy(model(x), y)

    counts, rss = [], []
    for step in range(200):
        opt.zero_grad()
        opt.step(closure)
        if step in (20, 199):
            counts.append(_live_tensors())
            rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    assert counts[1] <= counts[0], counts
    assert rss[1] - rss[0] < 20_000, rss  # KiB: no growth beyond allocator noise


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(rho=-0.1), "Invalid rho value: -0.1"),
        (dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0"),
        (dict(eps=-1.0), "Invalid epsilon value: -1.0"),
        (dict(clip_threshold=-1.0), "Invalid clip_threshold value: -1.0"),
        (dict(hessian_update_interval=0), "Invalid hessian_update_interval value: 0"),
        (dict(seed=-3), "Invalid seed value: -3"),
    ],
)
@pytest.mark.parametrize("name", ["SophiaG", "SophiaH"])
def test_invalid_arguments_are_rejected_by_name(name, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        getattr(fastoptim, name)(make_params([(3,)], torch.float32), **kwargs)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("SophiaG", dict(bs=0), "Invalid bs value: 0"),
        ("SophiaH", dict(n_samples=0), "Invalid n_samples value: 0"),
        ("SophiaH", dict(distribution="uniform"), "Invalid distribution value: 'uniform'"),
    ],
)
def test_invalid_estimator_arguments_are_rejected_by_name(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        getattr(fastoptim, name)(make_params([(3,)], torch.float32), **kwargs)


def test_given_estimates_are_checked_before_anything_changes():
    params = make_params([(3,), (4, 2)], torch.float32)
    opt = fastoptim.SophiaH(params)
    for p, g in zip(params, noise_grads(params, 0)):
        p.grad = g
    with pytest.raises(ValueError, match=r"hessian\[1\] must be a tensor of shape \(4, 2\), got \(8,\)"):
        opt.step(hessian=[torch.ones(3), torch.ones(8)])
    with pytest.raises(ValueError, match=r"one tensor per parameter with a gradient \(2\), got 1"):
        opt.step(hessian=[torch.ones(3)])
    assert not opt.state and opt.param_groups[0]["hessian_clock"] == 0
