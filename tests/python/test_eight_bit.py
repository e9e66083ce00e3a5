"""8-bit optimizer state (``state_bits=8``): the moments of float32 and bfloat16 parameters kept as one
byte per element and one float32 scale per block of 256 (restarting at each row of dim 0 for AdamP and AMaC,
whose rows step as tensors of their own), decoded, updated and encoded in the step's one pass (LAMB's and
AdamP's two: the sums from the decoded moments advanced, then the update that encodes them). The codes are
checked against a reference written here from the format's definition (every code's value, nearest-code
search), independent of the kernels' integer arithmetic."""

import copy
import inspect

import pytest
import torch

import fastoptim
from reference import (OPTIMIZERS, SHAPES, assert_every_isa_gives_the_same_bits, assert_resumes_bit_identically, exact_estimates,
                       folds_apart, given_hessian_if_needed, make_params, make_rich, noise_grads, own_rule_steppers, rule_class,
                       rule_optimizer, takes_state_bits)

TAKES_IT = sorted(name for name in OPTIMIZERS if takes_state_bits(name))

# (SophiaOptim passes the keyword to its SophiaH; AMaC's rule is its own, inside Lookahead and SWA)
STEP_THEIR_RULE = own_rule_steppers(TAKES_IT)
# block edges (255, 256, 257) and a block-and-a-tail size, beside the SIMD tails of SHAPES; matrices whose
# rows (AdamP's code rows) end inside a block
EIGHT_BIT_SHAPES = SHAPES + [(255,), (256,), (257,), (4099,), (3, 300), (2, 513)]
BLOCK = 256


# ---- the format, from its definition -------------------------------------------------------------

def code_values(signed: bool) -> torch.Tensor:
    """The value (relative to the block's largest magnitude) of each of the 256 codes, float64; NaN
    for the codes above 1.0, which are never written. Signed: sign bit, 4-bit exponent, 3-bit mantissa,
    2^(e-15) (1 + m/8); unsigned: 5-bit exponent, 2^(e-31) (1 + m/8). A magnitude of 0 is zero."""
    values = []
    for code in range(256):
        magnitude = code & 0x7F if signed else code
        exponent, mantissa = magnitude >> 3, magnitude & 7
        value = 0.0 if magnitude == 0 else 2.0 ** (exponent - (15 if signed else 31)) * (1 + mantissa / 8)
        value = float("nan") if value > 1 else value
        values.append(-value if signed and code & 0x80 else value)
    return torch.tensor(values, dtype=torch.float64)


def in_blocks(values: torch.Tensor, rows: int = 1) -> torch.Tensor:
    """The row-major elements of `values` as rows of 256, the blocks restarting at each of `rows` equal
    rows (each row's last block padded with zeros)."""
    by_row = values.reshape(rows, -1)
    return torch.nn.functional.pad(by_row, (0, -by_row.shape[1] % BLOCK)).reshape(-1, BLOCK)


def out_of_blocks(blocks: torch.Tensor, like: torch.Tensor, rows: int = 1) -> torch.Tensor:
    """in_blocks undone: the padding dropped, in the shape of `like`."""
    return blocks.reshape(rows, -1)[:, : like.numel() // rows].reshape(like.shape)


def rule_of(opt, p):
    """The rule that steps `p` in `opt` (its group's: Muon steps its non-matrices with AdamW's)."""
    return next(opt._rule_of(group) for group in opt.param_groups if any(q is p for q in group["params"]))


def code_rows(shape, rule) -> int:
    """The rows the blocks of `rule`'s state restart at: a per-row rule's (AdamP's) rows of dim 0
    (ndim > 1), else 1."""
    return shape[0] if rule.per_row and len(shape) > 1 and shape[0] > 0 else 1


def nearest_magnitudes(y: torch.Tensor, signed: bool) -> torch.Tensor:
    """The nearest code magnitude to each |y| (float64), ties to the larger; 1.0 above 1."""
    table = code_values(signed)
    magnitudes = torch.sort(table[~table.isnan() & (table >= 0)]).values
    y = y.abs()
    above = torch.searchsorted(magnitudes, y).clamp(max=len(magnitudes) - 1)
    low, high = magnitudes[(above - 1).clamp(min=0)], magnitudes[above]
    nearest = torch.where((y - low >= high - y) | (y <= low), high, low)
    return torch.where(y >= 1, torch.ones_like(y), nearest)


def reference_encode(values: torch.Tensor, rows: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(the values the nearest codes decode to, float32; the blocks' stored scales) for a float32
    tensor, in blocks of 256 of its row-major order (of each of `rows` rows): each block scaled by the reciprocal of its largest
    magnitude M (float32 arithmetic, as the step does), the nearest code taken (ties away from zero),
    and decoded as code value * M. The scale is -M for a block with a value whose sign bit is set."""
    blocks = in_blocks(values.float(), rows)
    top = blocks.abs().amax(dim=1, keepdim=True)
    signed = torch.signbit(blocks).any(dim=1, keepdim=True)
    scaled = (blocks * torch.where(top > 0, torch.reciprocal(top), torch.zeros_like(top))).double()
    nearest = torch.where(signed, nearest_magnitudes(scaled, True), nearest_magnitudes(scaled, False))
    decoded = (nearest * scaled.sign()).float() * top
    scales = torch.where(signed, -top, top).reshape(-1)
    return out_of_blocks(decoded, values, rows), scales


def decode_by_table(codes: torch.Tensor, scales: torch.Tensor, rows: int = 1) -> torch.Tensor:
    """The float32 values of codes under the blocks' scales (blocks restarting at each of `rows` rows),
    read off code_values."""
    index = in_blocks(codes.long(), rows)
    signed = (scales < 0).reshape(-1, 1)
    values = torch.where(signed, code_values(True)[index], code_values(False)[index])
    assert not values.isnan().any(), "a code above 1.0 was written"
    out = values.float() * scales.abs().reshape(-1, 1)
    return out_of_blocks(out, codes, rows)


def wide_range_values(numel: int, seed: int = 0) -> torch.Tensor:
    """Values spanning 12 decades, with all-positive blocks, an all-zero block and exact zeros."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(numel, generator=gen) * 10.0 ** (-12 * torch.rand(numel, generator=gen))
    x[BLOCK:2 * BLOCK] = x[BLOCK:2 * BLOCK].abs()  # a second moment's block: unsigned codes
    x[2 * BLOCK:3 * BLOCK] = 0.0
    x[torch.rand(numel, generator=gen) < 0.05] = 0.0
    return x


# ---- the codes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("numel", [0, 1, 17, 255, 256, 257, 5 * BLOCK + 77])
def test_codes_are_the_nearest_and_decode_by_the_table(numel):
    x = wide_range_values(max(numel, 3 * BLOCK))[:numel]
    codes, scales = fastoptim._C.encode_eight_bit(x)
    assert codes.dtype == torch.uint8 and codes.shape == x.shape and scales.shape == (-(-numel // BLOCK),)
    expected, expected_scales = reference_encode(x)
    assert torch.equal(scales, expected_scales)
    decoded = fastoptim._C.decode_eight_bit(codes, scales)
    assert torch.equal(decoded, decode_by_table(codes, scales))
    signed = torch.repeat_interleave(scales < 0, BLOCK)[:numel]
    assert not (signed & (codes == 0x80)).any()  # (zero has one code: encoding decoded codes gives them back)
    assert torch.equal(decoded, expected)
    # each value within 1/16 of itself, or below the smallest code of its block
    floor = torch.repeat_interleave(scales.abs(), BLOCK)[:numel] * torch.where(
        torch.repeat_interleave(scales < 0, BLOCK)[:numel], 2.0 ** -15, 2.0 ** -31)
    assert ((decoded - x).abs() <= x.abs() / 16 + floor).all()


@pytest.mark.parametrize("value", [0.0, 0.5, 3.0, -2.5, 1e-30, 3e38, -1e-45])
def test_a_constant_has_the_codes_of_the_filled_tensor(value):
    """constant_codes (a start value's codes, made without the tensor) gives what encoding a tensor
    filled with the value gives, in every block and a short last one."""
    codes, scales = fastoptim._C.encode_eight_bit(torch.full((3 * BLOCK + 5,), value))
    code, scale = fastoptim._C.constant_codes(value)
    assert torch.equal(codes, torch.full_like(codes, code)) and torch.equal(scales, torch.full_like(scales, scale))


@pytest.mark.parametrize("rows, length", [(1, 300), (3, 300), (4, 256), (2, 513), (5, 17), (3, 0)])
def test_codes_of_rows_restart_at_each_row(rows, length):
    """A per-row rule's grid (AdamP's): each row's blocks from its own first element, a short last one
    per row; the same codes as each row encoded alone."""
    x = wide_range_values(max(rows * length, 3 * BLOCK))[: rows * length].reshape(rows, length)
    codes, scales = fastoptim._C.encode_eight_bit(x, rows)
    assert codes.shape == x.shape and scales.shape == (rows * -(-length // BLOCK),)
    expected, expected_scales = reference_encode(x, rows)
    assert torch.equal(scales, expected_scales)
    decoded = fastoptim._C.decode_eight_bit(codes, scales, rows)
    assert torch.equal(decoded, decode_by_table(codes, scales, rows)) and torch.equal(decoded, expected)
    for r in range(rows):
        alone, alone_scales = fastoptim._C.encode_eight_bit(x[r].clone())
        assert torch.equal(codes[r], alone) and torch.equal(scales.reshape(rows, -1)[r], alone_scales)
    with pytest.raises(ValueError, match=f"encode_eight_bit: rows must be a positive divisor of the {rows * length} "
                                         r"elements, got 0"):
        fastoptim._C.encode_eight_bit(x, 0)
    with pytest.raises(ValueError, match=r"decode_eight_bit: \d+ codes in 1 rows need \d+ block scales"):
        fastoptim._C.decode_eight_bit(codes, torch.zeros(scales.numel() + 1), 1)


def test_encoding_decoded_codes_gives_them_back():
    codes, scales = fastoptim._C.encode_eight_bit(wide_range_values(4 * BLOCK + 9))
    again, again_scales = fastoptim._C.encode_eight_bit(fastoptim._C.decode_eight_bit(codes, scales))
    assert torch.equal(again_scales, scales)
    assert torch.equal(fastoptim._C.decode_eight_bit(again, again_scales), fastoptim._C.decode_eight_bit(codes, scales))


# ---- the step ---------------------------------------------------------------------------------------

def test_the_adam_family_lamb_lion_and_adopt_take_it():
    assert TAKES_IT == sorted(["Adam", "AdamW", "AdEMAMix", "AdaBelief", "Adan", "NAdam", "RAdam", "Adamax", "ADOPT", "Lion",
                               "LAMB", "RaLars", "TAdam", "AdamP", "AdamWScheduleFree", "Muon", "SGD", "RMSprop", "LARS",
                               "Adagrad", "Adadelta", "SophiaG", "SophiaH", "AdaHessian", "SophiaOptim", "AMaC"])
    assert "AMaC" in STEP_THEIR_RULE and "SophiaOptim" not in STEP_THEIR_RULE
    for name in STEP_THEIR_RULE:
        assert fastoptim._base.rule_named(rule_class(name).rule).eight_bit_state


def make_exact(name, params, **kwargs):
    """make_rich's optimizer, a Hessian-diagonal one given estimates every dtype holds exactly (so a
    bf16 step's Hessian EMA is its float32 reference's rounded once)."""
    return given_hessian_if_needed(rule_optimizer(make_rich(name, params, **kwargs)), exact_estimates)


def test_a_wrapper_passes_it_on():
    """SophiaOptim (EMA over SophiaH) gives state_bits=8 to its SophiaH: the momentum and the Hessian
    EMA in codes, and the steps SophiaH(state_bits=8) takes."""
    params = make_params([(33, 65), (257,)], torch.float32)
    alone = [p.detach().clone().requires_grad_() for p in params]
    wrapped = make_rich("SophiaOptim", params, state_bits=8)
    kwargs = {k: v for k, v in rule_optimizer(wrapped).defaults.items()
              if k in inspect.signature(fastoptim.SophiaH).parameters and k not in ("params", "state_bits")}
    inner = given_hessian_if_needed(fastoptim.SophiaH(alone, **kwargs, state_bits=8))
    for step in range(3):
        for p, q, g in zip(params, alone, noise_grads(params, step)):
            p.grad, q.grad = g, g.clone()
        wrapped.step()
        inner.step()
    sophia = rule_optimizer(wrapped)
    state = sophia.state[params[0]]
    assert state["exp_avg"].dtype == torch.uint8 and state["hessian"].dtype == torch.uint8
    assert all(torch.equal(p, q) for p, q in zip(params, alone))
    # win_rate reads the state decoded: a full-precision SophiaH loaded with the decoded state agrees
    decoded = fastoptim.SophiaH([p.detach().clone() for p in params], **kwargs)
    decoded.load_state_dict(sophia.state_dict())
    assert decoded.state[next(iter(decoded.state))]["exp_avg"].dtype == torch.float32
    assert torch.equal(sophia.win_rate(), decoded.win_rate()) and 0 < float(decoded.win_rate()) <= 1


STEP_CASES = [(name, dtype) for name in STEP_THEIR_RULE for dtype in (torch.float32, torch.bfloat16)]
HESSIAN_DIAGONAL = [name for name in STEP_THEIR_RULE
                    if issubclass(rule_class(name), fastoptim.hessian_diagonal.HessianDiagonalOptimizer)]


def decoded_into(ours, ref, params, wide):
    """ref's state: ours' (of params) with its 8-bit slots decoded by the table, in float32 (of wide)."""
    for p, q in zip(params, wide):
        rule = rule_of(ours, p)
        for key, value in ours.state[p].items():
            if key.endswith("_scale"):
                continue
            if key in rule.eight_bit_state:
                value = decode_by_table(value, ours.state[p][f"{key}_scale"], code_rows(p.shape, rule))
            ref.state[q][key] = value.to(torch.float32, copy=True) if value.is_floating_point() else value.clone()


def assert_encoded_as(ours, ref, params, wide, keys=None):
    """Each 8-bit slot of ours (of params; those in `keys` when given) is ref's (of wide) encoded as
    reference_encode encodes it: the same scales and decoded values."""
    for p, q in zip(params, wide):
        rule = rule_of(ours, p)
        for key in rule.eight_bit_state if keys is None else keys:
            if key not in ref.state[q]:
                continue
            rows = code_rows(p.shape, rule)
            expected, expected_scales = reference_encode(ref.state[q][key], rows)
            assert torch.equal(ours.state[p][f"{key}_scale"], expected_scales), (key, p.shape)
            assert torch.equal(decode_by_table(ours.state[p][key], expected_scales, rows), expected), (key, p.shape)


@pytest.mark.parametrize("name, dtype", STEP_CASES, ids=[f"{n}-{'fp32' if d == torch.float32 else 'bf16'}" for n, d in STEP_CASES])
def test_each_step_is_the_full_precision_step_between_decoding_and_encoding(name, dtype):
    """From the same parameters and state (ours in 8 bits, the reference's those codes decoded by the
    table, in float32 with float32 copies of the parameters), one step of ours stores the parameters
    the reference stores (rounded to the parameters' dtype) and the reference's new moments encoded
    as reference_encode encodes them, bit for bit, three steps running (AdamP's and AMaC's in blocks of
    each row). A Hessian-diagonal optimizer refreshes on the first step only (its folds: the next test),
    so the three steps read the Hessian EMA's codes as that refresh left them."""
    params = make_params(EIGHT_BIT_SHAPES, dtype)
    ours = make_exact(name, params, state_bits=8)
    for p, g in zip(params, noise_grads(params, 0, dtype)):
        p.grad = g
    ours.step()  # (creates the state)
    folds_apart(ours)
    for step in range(1, 4):
        wide = [p.detach().to(torch.float32, copy=True).requires_grad_() for p in params]
        ref = folds_apart(make_exact(name, wide))
        decoded_into(ours, ref, params, wide)
        for p, q, g in zip(params, wide, noise_grads(params, step, dtype)):
            p.grad, q.grad = g, g.float()
        ours.step()
        ref.step()
        for p, q in zip(params, wide):
            assert torch.equal(p, q.to(dtype)), (name, p.shape)
            for key, value in ref.state[q].items():  # (Adan's previous gradient, in full precision)
                mine = ours.state[p][key]
                if key not in rule_of(ours, p).eight_bit_state and value.is_floating_point() and value.shape == p.shape:
                    assert torch.equal(mine, value.to(mine.dtype)), (key, p.shape)
        assert_encoded_as(ours, ref, params, wide)


@pytest.mark.parametrize("name", HESSIAN_DIAGONAL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_a_refresh_folds_the_estimate_into_the_decoded_hessian_ema_and_encodes_it(name, dtype):
    """update_hessian with 8-bit state (the hessian_ema op on codes): the Hessian EMA becomes the
    full-precision fold of the estimate into the decoded EMA, encoded as reference_encode encodes it,
    three folds running, and the momentum's codes are left as they were."""
    params = make_params(EIGHT_BIT_SHAPES, dtype)
    ours = make_exact(name, params, state_bits=8)
    for p, g in zip(params, noise_grads(params, 0, dtype)):
        p.grad = g
    ours.step()  # (creates the state, folding in a first estimate)
    key = rule_optimizer(ours).hessian_key
    for fold in range(1, 4):
        wide = [p.detach().to(torch.float32, copy=True).requires_grad_() for p in params]
        ref = rule_optimizer(make_exact(name, wide))
        decoded_into(ours, ref, params, wide)
        estimates = noise_grads(params, 10 + fold, dtype)  # (signed: Sophia-H's EMA of estimates goes negative too)
        for p, q in zip(params, wide):
            p.grad, q.grad = torch.zeros_like(p), torch.zeros_like(q)
        codes_before = [ours.state[p]["exp_avg"].clone() for p in params]
        rule_optimizer(ours).update_hessian(estimates)
        ref.update_hessian([e.float() for e in estimates])
        assert_encoded_as(ours, ref, params, wide, keys=[key])
        assert all(torch.equal(ours.state[p]["exp_avg"], before) for p, before in zip(params, codes_before))


@pytest.mark.parametrize("start", [0.5, 0.1, 3.0])
def test_a_nonzero_start_value_is_encoded(start):
    """Adagrad's sum starts at initial_accumulator_value: its 8-bit codes start as that value encoded
    (every code 1.0's under a scale of the value, as the codec encodes the filled tensor), and the
    first step is the full-precision first step from it."""
    params = make_params(EIGHT_BIT_SHAPES, torch.float32)
    wide = [p.detach().clone().requires_grad_() for p in params]
    ours = fastoptim.Adagrad(params, lr=0.1, initial_accumulator_value=start, state_bits=8)
    ref = fastoptim.Adagrad(wide, lr=0.1, initial_accumulator_value=start)
    for p, q, g in zip(params, wide, noise_grads(params, 0)):
        p.grad, q.grad = g, g.clone()
    filled = {p: ours._initial_state(name, p, ours.param_groups[0]) for p in params for name in ("sum",)}
    for p in params:
        codes, scales = fastoptim._C.encode_eight_bit(torch.full_like(p, start))
        assert torch.equal(filled[p], codes) and torch.equal(decode_by_table(codes, scales), torch.full_like(p, start))
    ours.step()
    ref.step()
    for p, q in zip(params, wide):
        assert torch.equal(p, q), p.shape
        expected, expected_scales = reference_encode(ref.state[q]["sum"])
        assert torch.equal(ours.state[p]["sum_scale"], expected_scales)
        assert torch.equal(decode_by_table(ours.state[p]["sum"], expected_scales), expected)


def test_a_state_dict_saved_before_the_first_step_loads():
    """Adagrad makes its state at construction (as torch's does): in 8 bits, the sum's codes and their
    scales, so its state dict loads before any step into a full-precision optimizer and back."""
    params = make_params(EIGHT_BIT_SHAPES, torch.float32)
    eight = fastoptim.Adagrad(params, initial_accumulator_value=0.5, state_bits=8)
    full = fastoptim.Adagrad(params, initial_accumulator_value=0.5)
    full.load_state_dict(eight.state_dict())
    assert all(torch.equal(full.state[p]["sum"], torch.full_like(p, 0.5)) for p in params)
    again = fastoptim.Adagrad(params, initial_accumulator_value=0.5, state_bits=8)
    again.load_state_dict(full.state_dict())
    for p in params:
        assert torch.equal(again.state[p]["sum"], eight.state[p]["sum"])
        assert torch.equal(again.state[p]["sum_scale"], eight.state[p]["sum_scale"])


@pytest.mark.parametrize("name", ["AdamW", "Adan", "LAMB", "AdamP"])
def test_every_isa_and_thread_count_gives_the_same_bits(name):
    for dtype, rounding in [(torch.float32, False), (torch.bfloat16, True)]:
        def make(params):
            return make_rich(name, [{"params": params, "rounding_seed": 5}], state_bits=8, stochastic_rounding=rounding)
        assert_every_isa_gives_the_same_bits(make, dtype=dtype)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            params = make_params([(70001,), (300, 301)], torch.float32)
            opt = make_rich(name, params, state_bits=8)
            for step in range(3):
                for p, g in zip(params, noise_grads(params, step)):
                    p.grad = g
                opt.step()
            results.append((params, copy.deepcopy(opt.state_dict())))
    finally:
        torch.set_num_threads(threads)
    (a, state_a), (b, state_b) = results
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    for key, entry in state_a["state"].items():
        for name_, value in entry.items():
            assert torch.equal(value, state_b["state"][key][name_]), name_


@pytest.mark.parametrize("name", ["AdamW", "Adan", "Lion", "LAMB", "AdamP"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_a_resumed_run_continues_bit_for_bit(name, dtype):
    opt, resumed = assert_resumes_bit_identically(lambda params: make_rich(name, params, state_bits=8),
                                                  EIGHT_BIT_SHAPES, save_at=3, until=6, dtype=dtype)
    assert all(state["exp_avg"].dtype == torch.uint8 for state in resumed.state.values() if state)


@pytest.mark.parametrize("name", ["AdamW", "AdamP"])
def test_state_dicts_decode_into_a_full_precision_optimizer_and_encode_back(name):
    params = make_params(EIGHT_BIT_SHAPES, torch.float32)
    kind = getattr(fastoptim, name)
    eight = kind(params, lr=1e-2, amsgrad=True, state_bits=8)
    for step in range(3):
        for p, g in zip(params, noise_grads(params, step)):
            p.grad = g
        eight.step()
    saved = copy.deepcopy(eight.state_dict())
    assert {"exp_avg_scale", "exp_avg_sq_scale", "max_exp_avg_sq_scale"} <= set(saved["state"][6])

    full = kind(params, lr=1e-2, amsgrad=True)
    full.load_state_dict(saved)
    for index, p in enumerate(params):
        state = full.state[p]
        assert not any(key.endswith("_scale") for key in state)
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            codes, scales = saved["state"][index][key], saved["state"][index][f"{key}_scale"]
            decoded = decode_by_table(codes, scales, code_rows(p.shape, rule_of(eight, p)))
            assert state[key].dtype == torch.float32 and torch.equal(state[key], decoded)

    back = kind(params, lr=1e-2, amsgrad=True, state_bits=8)
    back.load_state_dict(full.state_dict())
    for index, p in enumerate(params):
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            rows = code_rows(p.shape, rule_of(back, p))
            expected, expected_scales = reference_encode(full.state[p][key], rows)
            assert torch.equal(back.state[p][f"{key}_scale"], expected_scales)
            assert torch.equal(decode_by_table(back.state[p][key], expected_scales, rows), expected)
            # (decoded codes encode to themselves: the round trip gives the checkpoint's codes back)
            assert torch.equal(back.state[p][key], saved["state"][index][key])


def test_a_quarter_of_the_state_memory():
    p = torch.zeros(1 << 16, requires_grad=True)
    p.grad = torch.randn_like(p)
    sizes = {}
    for bits in (None, 8):
        opt = fastoptim.AdamW([p], state_bits=bits)
        opt.step()
        sizes[bits] = sum(t.numel() * t.element_size() for key, t in opt.state[p].items() if key != "step")
    assert sizes[None] == 8 * p.numel()
    assert sizes[8] == 2 * p.numel() + 2 * 4 * p.numel() // BLOCK  # codes, and a float32 scale per 256


def test_bad_input_is_refused_by_name():
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="Rprop keeps no state in 8 bits"):
        fastoptim.Rprop([{"params": [p], "state_bits": 8}])
    with pytest.raises(ValueError, match="Invalid state_bits value: 4"):
        fastoptim.AdamW([p], state_bits=4)
    with pytest.raises(ValueError, match="state_bits=8 and state_dtype=torch.bfloat16 cannot be combined"):
        fastoptim.AdamW([p], state_bits=8, state_dtype=torch.bfloat16)
    wide = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    wide.grad = torch.ones_like(wide)
    p.grad = torch.ones_like(p)
    opt = fastoptim.AdamW([p, wide], state_bits=8)
    with pytest.raises(ValueError, match=r"parameter #1 \(shape \(3,\)\) of param group 0 is torch.float64"):
        opt.step()
    assert torch.equal(p, torch.zeros(3)) and not opt.state
    # a checkpoint whose 8-bit moment lacks its scales
    ok = fastoptim.AdamW([p], state_bits=8)
    ok.step()
    saved = copy.deepcopy(ok.state_dict())
    del saved["state"][0]["exp_avg_scale"]
    with pytest.raises(TypeError, match=r"8-bit 'exp_avg' needs 'exp_avg_scale', float32, a tensor of block scales of shape \(1,\); got NoneType"):
        fastoptim.AdamW([p], state_bits=8).load_state_dict(saved)
    # the op itself names a wrong scale tensor
    state = ok.state[p]
    with pytest.raises(ValueError, match="block scales of params\\[0\\] must be a contiguous tensor of 1 block scales"):
        torch.ops.fastoptim.adam_step_([p], [p.grad], [state["exp_avg"], state["exp_avg_sq"], torch.zeros(2), state["exp_avg_sq_scale"]],
                                       [state["step"]], [], [1e-3, 0.9, 0.999, 1e-8, 0.0, 0, 0, 0])
