"""Lion against pytorch_optimizer 4.1.0's Lion (both of its paths, per parameter and foreach) over
50 steps at the sizes of every SIMD tail, in every decay mode; torch.sign's 0 for 0 and NaN."""

import pytest
import torch
from pytorch_optimizer import Lion as KozistrLion

import fastoptim
from reference import (
    PARITY_DTYPES,
    TOLERANCE,
    assert_all_close_rel,
    run_pair,
)

CASES = [  # (fastoptim and pytorch_optimizer take the same arguments)
    dict(),
    dict(lr=1e-3, betas=(0.95, 0.98)),
    dict(weight_decay=0.1),
    dict(weight_decay=0.1, fixed_decay=True),
    dict(weight_decay=0.1, weight_decouple=False),
    dict(weight_decay=0.1, maximize=True),
]


@PARITY_DTYPES
@pytest.mark.parametrize("foreach", [False, True], ids=["per_param", "foreach"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_pytorch_optimizer(case, foreach, dtype):
    params, ref_params, _, _ = run_pair(
        lambda ps: fastoptim.Lion(ps, **{"lr": 1e-2, **case}),
        lambda ps: KozistrLion(ps, **{"lr": 1e-2, **case}, foreach=foreach),
        dtype,
    )
    assert_all_close_rel(params, ref_params, TOLERANCE[dtype])


def test_sign_of_zero_and_nan_is_zero_as_in_torch():
    p = torch.nn.Parameter(torch.zeros(5))
    opt = fastoptim.Lion([p], lr=1.0, betas=(0.5, 0.5))
    p.grad = torch.tensor([0.0, -0.0, float("nan"), 2.0, -3.0])
    opt.step()
    assert torch.equal(p.detach(), torch.tensor([0.0, 0.0, 0.0, -1.0, 1.0]))
