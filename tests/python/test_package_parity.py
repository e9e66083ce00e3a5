"""Element-wise parity with the references outside torch.optim (holocron.optim, pytorch_optimizer,
adamp, adabelief-pytorch, schedulefree) over 50 steps, on tensors sized to hit every SIMD tail: every
case of every record's package checks (fastoptim/records.py), in float32 and float64. What differs
from a reference by design is shown in the optimizer's own test file."""

import pytest
import torch

import fastoptim
from fastoptim.records import RECORDS
from reference import GRADIENTS, PARITY_DTYPES, SHAPES, TOLERANCE, assert_all_close_rel, package_reference, run_pair


def _options_id(options):
    return ",".join(f"{k}={v}" for k, v in options.items())


CASES = [
    pytest.param(
        r.name, check, ours, theirs, ours_variant, theirs_variant, grads,
        id="-".join(filter(None, [r.name, check.reference, _options_id({**check.ours, **ours, **ours_variant}) or "defaults",
                                  _options_id(theirs_variant), grads if len(check.grads) > 1 else ""])),
    )
    for r in RECORDS
    for check in r.package_checks
    for ours, theirs in check.cases
    for ours_variant in check.ours_variants
    for theirs_variant in check.theirs_variants
    for grads in check.grads
]


@PARITY_DTYPES
@pytest.mark.parametrize("name,check,ours,theirs,ours_variant,theirs_variant,grads", CASES)
def test_matches_its_package_reference(name, check, ours, theirs, ours_variant, theirs_variant, grads, dtype):
    def make_reference(params):
        optimizer = package_reference(check.reference)(params, **{**check.theirs, **theirs, **theirs_variant})
        for method in check.start:
            getattr(optimizer, method)()
        return optimizer

    pair = run_pair(
        lambda params: getattr(fastoptim, name)(params, **{**check.ours, **ours, **ours_variant}),
        make_reference,
        dtype,
        shapes=[s for s in SHAPES if s not in check.reference_fails_on],
        grads=GRADIENTS[grads],
    )
    rtol = TOLERANCE[getattr(torch, check.tolerance_of) if check.tolerance_of else dtype]
    assert_all_close_rel(pair.params, pair.ref_params, rtol)
    # (not an empty parameter's: its per-tensor scalars, TAdam's W_t, are 0/0 in holocron's code)
    for p, q in [(p, q) for p, q in zip(pair.params, pair.ref_params) if q.numel()]:
        keys = list(pair.ref.state[q]) if check.state == ("*",) else check.state
        for key in keys:
            assert_all_close_rel([pair.ours.state[p][key]], [pair.ref.state[q][key]], rtol)


def test_every_record_outside_torch_optim_with_a_package_reference_has_checks():
    """A record whose reference names one of the packages is checked against it here."""
    packages = ("holocron", "pytorch_optimizer", "adamp", "adabelief", "schedulefree")
    unchecked = [
        r.name for r in RECORDS
        if not r.torch_reference and any(p in r.reference for p in packages) and not r.package_checks
        # (the Hessian-diagonal optimizers are checked with given estimates: tests/python/test_sophia.py, test_adahessian.py)
        and r.family != "Sophia"
    ]
    assert not unchecked
