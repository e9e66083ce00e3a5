"""SophiaOptim, the SOPHIA seed's optimizer: its README call verbatim trains a model; it is the
library's EMA(SophiaH) (and EMA(Lookahead(SophiaH))) bit for bit; a checkpoint mid-run carries the
Hessian EMA, the refresh clock and the EMA weights; the EMA weights swap in for evaluation."""

import copy

import torch

import fastoptim


def problem(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    x = torch.randn(256, 10)
    y = (x[:, :4] * 2).argmax(1)
    return model, x, y


def closure_for(model, x, y):
    return lambda: torch.nn.functional.cross_entropy(model(x), y)


def test_the_readme_call_works_verbatim_and_trains():
    model, x, y = problem()
    optimizer = fastoptim.SophiaOptim(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, rho=0.1, weight_decay=0.01, ema_decay=0.999)
    first = closure_for(model, x, y)().item()
    for _ in range(300):
        optimizer.zero_grad()
        loss = optimizer.step(closure_for(model, x, y))
    assert loss.item() < 0.6 * first
    with optimizer.swap_ema():
        ema_loss = closure_for(model, x, y)().item()
    assert ema_loss < first  # the averaged weights, with ema_decay 0.999, lag but have moved
    assert closure_for(model, x, y)().item() < ema_loss


def run(make, steps=12, seed=0):
    model, x, y = problem(seed)
    opt = make(model.parameters())
    for _ in range(steps):
        opt.zero_grad()
        opt.step(closure_for(model, x, y))
    return model, opt


def test_it_is_ema_of_sophia_h_built_from_the_library_wrappers():
    settings = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, rho=0.1, weight_decay=0.01)
    for lookahead in (None, 3):
        ours, opt = run(lambda ps: fastoptim.SophiaOptim(ps, ema_decay=0.9, lookahead_k=lookahead, seed=4, **settings))

        def composed(ps):
            inner = fastoptim.SophiaH(ps, seed=4, **settings)
            return fastoptim.EMA(inner if lookahead is None else fastoptim.Lookahead(inner, sync_period=3), decay=0.9)

        theirs, other = run(composed)
        assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), theirs.parameters()))
        assert all(torch.equal(a, b) for a, b in zip(opt.ema_state(), other.averaged_parameters()))


def test_a_checkpoint_mid_run_continues_bit_identically():
    def make(ps):
        return fastoptim.SophiaOptim(ps, lr=1e-2, ema_decay=0.9, lookahead_k=4, hessian_update_interval=5, seed=2)

    model, opt = run(make, steps=7)
    saved = copy.deepcopy({"model": model.state_dict(), "optimizer": opt.state_dict()})
    entry = saved["optimizer"]["state"][0]
    assert {"step", "exp_avg", "hessian", "slow_param", "ema_param"} <= entry.keys()
    assert saved["optimizer"]["param_groups"][0]["hessian_clock"] == 7

    resumed_model, x, y = problem(seed=1)
    resumed_model.load_state_dict(saved["model"])
    resumed = fastoptim.SophiaOptim(resumed_model.parameters(), lr=1e-2, ema_decay=0.9, lookahead_k=4, hessian_update_interval=5, seed=999)
    resumed.load_state_dict(saved["optimizer"])
    _, x, y = problem()
    for _ in range(9):  # refreshes at steps 11 and 16, Lookahead syncs at 8, 12, 16
        for o, m in ((opt, model), (resumed, resumed_model)):
            o.zero_grad()
            o.step(closure_for(m, x, y))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), resumed_model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(opt.ema_state(), resumed.ema_state()))
    assert 0 < opt.win_rate().item() <= 1


def test_swap_ema_puts_the_averaged_weights_in_and_takes_them_out():
    model, opt = run(lambda ps: fastoptim.SophiaOptim(ps, lr=1e-2, ema_decay=0.5), steps=3)
    own = [p.detach().clone() for p in model.parameters()]
    averaged = [e.clone() for e in opt.ema_state()]
    assert not all(torch.equal(o, a) for o, a in zip(own, averaged))
    with opt.swap_ema():
        assert all(torch.equal(p, a) for p, a in zip(model.parameters(), averaged))
    assert all(torch.equal(p, o) for p, o in zip(model.parameters(), own))
