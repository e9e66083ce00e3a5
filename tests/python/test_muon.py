"""Muon against torch.optim.Muon (its matrices) and torch.optim.AdamW (the other parameters, which
fastoptim's Muon steps itself) over 30 steps, at matrix shapes that are tall, wide, square and of
SIMD-tail sizes, with every option; how param groups are split between the two."""

import pytest
import torch

import fastoptim
from reference import PARITY_DTYPES, TOLERANCE, assert_all_close_rel, make_params, run_pair

MATRICES = [(33, 65), (65, 33), (16, 16), (1, 17), (17, 1), (3, 1023)]
OTHERS = [(17,), (), (4, 3, 3, 3), (0,)]
CASES = [
    dict(lr=0.02),
    dict(lr=0.02, nesterov=False),
    dict(lr=0.02, momentum=0.9, weight_decay=0.0),
    dict(lr=0.05, adjust_lr_fn="match_rms_adamw"),
    dict(lr=0.02, adjust_lr_fn="original", ns_steps=3, ns_coefficients=(2.0, -1.5, 0.5), eps=1e-5),
]


class TorchMuonAndAdamW(torch.optim.Optimizer):
    """torch.optim.Muon on the matrices and torch.optim.AdamW on the rest, as torch's documentation
    pairs them (AdamW with Muon's lr and weight decay, as fastoptim's Muon steps them)."""

    def __init__(self, params, adamw_betas=(0.9, 0.999), adamw_eps=1e-8, **muon):
        params = list(params)
        matrices, others = [p for p in params if p.ndim == 2], [p for p in params if p.ndim != 2]
        self.muon = torch.optim.Muon(matrices, **muon)
        group = self.muon.param_groups[0]
        self.adamw = torch.optim.AdamW(others, lr=group["lr"], betas=adamw_betas, eps=adamw_eps,
                                       weight_decay=group["weight_decay"], foreach=False)
        super().__init__(params, {})

    def step(self, closure=None):
        self.muon.step()
        self.adamw.step()


@PARITY_DTYPES
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_torch_muon_and_adamw(case, dtype):
    pair = run_pair(
        lambda ps: fastoptim.Muon(ps, **case), lambda ps: TorchMuonAndAdamW(ps, **case), dtype, steps=30,
        shapes=MATRICES + OTHERS,
    )
    # the matrices: torch's own sequence of ATen calls on the same bits gives the same bits
    for p, q in zip(pair.params[: len(MATRICES)], pair.ref_params):
        assert torch.equal(p, q), f"shape {tuple(q.shape)}"
        assert torch.equal(pair.ours.state[p]["momentum_buffer"], pair.ref.muon.state[q]["momentum_buffer"])
    # the rest: AdamW's step, whose sqrt is torch's CPU one (1 ulp off)
    assert_all_close_rel(pair.params[len(MATRICES):], pair.ref_params[len(MATRICES):], TOLERANCE[dtype])


def test_adamw_options_and_a_tensor_lr():
    case = dict(lr=torch.tensor(0.01), weight_decay=0.05, adamw_betas=(0.8, 0.99), adamw_eps=1e-6)
    pair = run_pair(
        lambda ps: fastoptim.Muon(ps, **case), lambda ps: TorchMuonAndAdamW(ps, **{**case, "lr": case["lr"].item()}), torch.float64,
        steps=20, shapes=MATRICES[:2] + OTHERS[:2],
    )
    assert all(torch.equal(p, q) for p, q in zip(pair.params[:2], pair.ref_params))
    assert_all_close_rel(pair.params[2:], pair.ref_params[2:], TOLERANCE[torch.float64])


def test_each_group_is_split_into_its_matrices_and_the_rest():
    matrix, vector, kernel = make_params([(4, 5), (5,), (2, 3, 3, 3)], torch.float32)
    opt = fastoptim.Muon([{"params": [vector, matrix, kernel], "lr": 0.02}, {"params": [matrix.new_zeros(3, 3)]}])
    assert [(g["use_muon"], [tuple(p.shape) for p in g["params"]], g["lr"]) for g in opt.param_groups] == [
        (True, [(4, 5)], 0.02), (False, [(5,), (2, 3, 3, 3)], 0.02), (True, [(3, 3)], 1e-3)]
    named = fastoptim.Muon([("w", matrix), ("b", vector)])
    assert [g["param_names"] for g in named.param_groups] == [["w"], ["b"]]
    # a group that says what it is is kept whole; a Muon group takes matrices only, as torch's Muon
    kept = fastoptim.Muon([{"params": [vector, kernel], "use_muon": False, "lr": 3e-4}])
    assert len(kept.param_groups) == 1 and kept._rule_name(kept.param_groups[0]) == "adam"
    with pytest.raises(ValueError, match=r"Muon only supports 2D parameters .* torch.Size\(\[5\]\)"):
        fastoptim.Muon([{"params": [matrix, vector], "use_muon": True}])


def test_bad_options_are_refused_by_name():
    p = make_params([(3, 4)], torch.float32)
    with pytest.raises(ValueError, match="Adjust learning rate function 'rms' is not supported"):
        fastoptim.Muon(p, adjust_lr_fn="rms")
    with pytest.raises(ValueError, match="Number of steps must be less than 100"):
        fastoptim.Muon(p, ns_steps=100)
    with pytest.raises(ValueError, match=r"ns_coefficients\[1\]"):
        fastoptim.Muon(p, ns_coefficients=(1.0, float("inf"), 1.0))
    with pytest.raises(ValueError, match=r"adamw_betas\[0\]"):
        fastoptim.Muon(make_params([(3,)], torch.float32), adamw_betas=(1.0, 0.9))
