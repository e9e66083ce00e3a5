"""Lion: against pytorch_optimizer 4.1.0's Lion (both of its paths, per parameter and foreach) in
every decay mode by its record's package check (tests/python/test_package_parity.py); here
torch.sign's 0 for 0 and NaN."""

import torch

import fastoptim


def test_sign_of_zero_and_nan_is_zero_as_in_torch():
    p = torch.nn.Parameter(torch.zeros(5))
    opt = fastoptim.Lion([p], lr=1.0, betas=(0.5, 0.5))
    p.grad = torch.tensor([0.0, -0.0, float("nan"), 2.0, -3.0])
    opt.step()
    assert torch.equal(p.detach(), torch.tensor([0.0, 0.0, 0.0, -1.0, 1.0]))
