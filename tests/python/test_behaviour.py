"""fastoptim's optimizers behave as torch.optim optimizers: state dicts interchange with torch,
schedulers, hooks, closures, tensor lr, skipped params; bad input is rejected before anything changes."""

import copy

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import fastoptim
from reference import (
    CONFIG_CASES,
    assert_close_rel,
    assert_resumes_bit_identically,
    assert_same_snapshot,
    case_id,
    clone_params,
    make_params,
    set_grads,
    snapshot,
)

SHAPES = [(17,), (33, 65), ()]


# ---- state dicts move between fastoptim and torch.optim, both ways --------------------------
@pytest.mark.parametrize("direction", ["torch_to_fastoptim", "fastoptim_to_torch"])
@pytest.mark.parametrize("case", CONFIG_CASES, ids=case_id)
def test_state_dict_interchange_with_torch(case, direction):
    name, cfg = case
    dtype = torch.float64
    first_cls = getattr(torch.optim, name) if direction == "torch_to_fastoptim" else getattr(fastoptim, name)
    second_cls = getattr(fastoptim, name) if direction == "torch_to_fastoptim" else getattr(torch.optim, name)
    params = make_params(SHAPES, dtype)
    first = first_cls(params, **cfg)
    for step in range(10):
        set_grads([params], step, dtype)
        first.step()
    # Continue once in the original optimizer and once in the other kind, from the same state.
    resumed_params = clone_params(params)
    second = second_cls(resumed_params, **cfg)
    second.load_state_dict(copy.deepcopy(first.state_dict()))  # as if saved and loaded: no shared tensors
    for step in range(10, 30):
        set_grads([params, resumed_params], step, dtype)
        first.step()
        second.step()
    for p, q in zip(resumed_params, params):
        assert_close_rel(p, q, 1e-12, "continued parameters")


@pytest.mark.parametrize("case", CONFIG_CASES, ids=case_id)
def test_state_dict_round_trip_mid_training_is_bit_identical(case):
    name, cfg = case
    assert_resumes_bit_identically(lambda params: getattr(fastoptim, name)(params, **cfg), SHAPES, save_at=7, until=20)


def test_state_names_and_step_dtype_match_torch():
    params = make_params(SHAPES, torch.float32)
    opt = fastoptim.Adam(params, amsgrad=True)
    set_grads([params], 0, torch.float32)
    opt.step()
    state = opt.state[params[0]]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert state["step"].dtype == torch.float32 and state["step"].device.type == "cpu" and state["step"].item() == 1


# ---- schedulers ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make_scheduler",
    [lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.5),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20)],
    ids=["StepLR", "CosineAnnealingLR"],
)
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_lr_schedulers_follow_torch_trajectory(name, make_scheduler):
    cfg = dict(lr=0.05, momentum=0.9) if name == "SGD" else dict(lr=0.05)
    params = make_params(SHAPES, torch.float64)
    ref_params = clone_params(params)
    ours = getattr(fastoptim, name)(params, **cfg)
    ref = getattr(torch.optim, name)(ref_params, **cfg, foreach=False)
    ours_sched, ref_sched = make_scheduler(ours), make_scheduler(ref)
    for step in range(25):
        set_grads([params, ref_params], step, torch.float64)
        ours.step()
        ref.step()
        ours_sched.step()
        ref_sched.step()
        assert ours.param_groups[0]["lr"] == ref.param_groups[0]["lr"]
    for p, q in zip(params, ref_params):
        assert_close_rel(p, q, 1e-12, "scheduled params")


# ---- the Optimizer protocol ---------------------------------------------------------------
def test_closure_is_called_with_grad_enabled_and_its_loss_returned():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = fastoptim.SGD([w], lr=0.1)

    def closure():
        opt.zero_grad()
        assert torch.is_grad_enabled()
        loss = (w**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 5.0
    assert torch.equal(w.detach(), torch.tensor([0.8, -1.6]))


def test_step_hooks_run():
    params = make_params(SHAPES, torch.float32)
    opt = fastoptim.AdamW(params)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    handle = register_optimizer_step_pre_hook(lambda o, a, k: calls.append("global-pre"))
    try:
        set_grads([params], 0, torch.float32)
        opt.step()
    finally:
        handle.remove()
    assert calls == ["global-pre", "pre", "post"]


def test_params_without_grad_are_skipped_and_grads_unchanged():
    params = make_params(SHAPES, torch.float32)
    before = [p.detach().clone() for p in params]
    opt = fastoptim.Adam(params, weight_decay=0.1, maximize=True)
    set_grads([params], 0, torch.float32)
    params[1].grad = None
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    opt.step()
    assert torch.equal(params[1], before[1]) and params[1] not in opt.state
    assert not torch.equal(params[0], before[0])
    for p, g in zip(params, grads):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


def test_non_contiguous_grad_is_read_not_modified():
    p = torch.nn.Parameter(torch.randn(8, 8))
    q = torch.nn.Parameter(p.detach().clone())
    grad = torch.randn(8, 8).t()
    p.grad, q.grad = grad, grad.contiguous()
    fastoptim.SGD([p], lr=0.1).step()
    torch.optim.SGD([q], lr=0.1, foreach=False).step()
    assert torch.equal(p, q) and not p.grad.is_contiguous()


def test_zero_grad_and_add_param_group():
    a, b = make_params([(4,)], torch.float32), make_params([(3,)], torch.float32, seed=3)
    opt = fastoptim.AdamW(a, lr=1e-2)
    opt.add_param_group({"params": b, "lr": 0.5})
    assert opt.param_groups[1]["betas"] == (0.9, 0.999) and opt.param_groups[1]["weight_decay"] == 1e-2
    set_grads([a + b], 0, torch.float32)
    opt.step()
    opt.zero_grad()
    assert all(p.grad is None for p in a + b)


def test_named_parameters_are_supported():
    model = torch.nn.Linear(3, 2)
    opt = fastoptim.Adam(model.named_parameters())
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]


@pytest.mark.parametrize("options", [{}, {"state_bits": 8}], ids=["fp32-state", "8-bit-state"])
def test_step_is_traced_by_torch_compile(options):
    """The whole step, the first one that creates the state included, traces as one graph."""
    params = make_params([(17,), (4, 4)], torch.float32)
    ref_params = clone_params(params)
    opt, ref = fastoptim.AdamW(params, **options), fastoptim.AdamW(ref_params, **options)
    compiled_step = torch.compile(opt.step, backend="aot_eager", fullgraph=True)
    for step in range(3):
        set_grads([params, ref_params], step, torch.float32)
        compiled_step()
        ref.step()
    for p, q in zip(params, ref_params):
        assert torch.equal(p, q)


# ---- bad input ------------------------------------------------------------------------------
INVALID = [
    ("SGD", dict(lr=-0.1), "Invalid learning rate: -0.1"),
    ("SGD", dict(momentum=-0.5), "Invalid momentum value: -0.5"),
    ("SGD", dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
    ("SGD", dict(nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    ("SGD", dict(momentum=0.9, dampening=0.1, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    ("Adagrad", dict(lr=-1.0), "Invalid learning rate: -1.0"),
    ("Adagrad", dict(lr_decay=-0.1), "Invalid lr_decay value: -0.1"),
    ("Adagrad", dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
    ("Adagrad", dict(initial_accumulator_value=-0.1), "Invalid initial_accumulator_value value: -0.1"),
    ("Adagrad", dict(eps=-1e-10), "Invalid epsilon value: -1e-10"),
    ("RMSprop", dict(lr=-1.0), "Invalid learning rate: -1.0"),
    ("RMSprop", dict(eps=-1.0), "Invalid epsilon value: -1.0"),
    ("RMSprop", dict(momentum=-1.0), "Invalid momentum value: -1.0"),
    ("RMSprop", dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
    ("RMSprop", dict(alpha=-1.0), "Invalid alpha value: -1.0"),
    ("Adam", dict(lr=-1.0), "Invalid learning rate: -1.0"),
    ("Adam", dict(eps=-1.0), "Invalid epsilon value: -1.0"),
    ("Adam", dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
    ("Adam", dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
    ("Adam", dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
    ("AdamW", dict(betas=(0.9, 1.5)), "Invalid beta parameter at index 1: 1.5"),
    ("AdamW", dict(lr=torch.tensor([0.1, 0.2])), "Tensor lr must be 1-element"),
    ("AdamW", dict(differentiable=True), "differentiable=True is not supported"),
]


@pytest.mark.parametrize("name,kwargs,message", INVALID, ids=[f"{n}-{m}" for n, _, m in INVALID])
def test_invalid_hyperparameters_raise_value_error_naming_them(name, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        getattr(fastoptim, name)(make_params(SHAPES, torch.float32), **kwargs)


def trained(name="Adam", **cfg):
    params = make_params(SHAPES, torch.float32)
    opt = getattr(fastoptim, name)(params, **cfg)
    set_grads([params], 0, torch.float32)
    opt.step()
    set_grads([params], 1, torch.float32)
    return opt, params


def test_grad_dtype_mismatch_raises_type_error_and_changes_nothing():
    opt, params = trained()
    before = snapshot(opt, params)
    params[1].grad_dtype = None  # torch 2.13 refuses a grad of another dtype unless told to allow it
    params[1].grad = params[1].grad.double()
    with pytest.raises(TypeError, match=r"the gradient of parameter #1 \(shape \(33, 65\)\) of param group 0 has dtype Double but parameter #1 .* has dtype Float"):
        opt.step()
    assert_same_snapshot(before, snapshot(opt, params))


def adam_lists(n=3):
    params = [torch.randn(17) for _ in range(n)]
    grads = [torch.randn(17) for _ in range(n)]
    state = [torch.rand(17) for _ in range(2 * n)]
    steps = [torch.tensor(4.0) for _ in range(n)]
    return params, grads, state, steps


ADAM_HYPER = [1e-3, 0.9, 0.999, 1e-8, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "corrupt,error,message",
    [
        (lambda g: g.__setitem__(2, torch.randn(16)), ValueError, r"grads\[2\] has shape \[16\] but params\[2\] has shape \[17\]"),
        (lambda g: g.__setitem__(2, torch.randn(34)[::2]), ValueError, r"grads\[2\] has strides \[2\] but params\[2\] has strides \[1\]"),
        (lambda g: g.__setitem__(2, torch.randn(17, device="meta")), ValueError,
         r"grads\[2\] is on meta but params\[2\] is on cpu|params\[0\] is on cpu while other tensors"),
        (lambda g: g.__setitem__(2, torch.randn(17).to_sparse()), TypeError, r"grads\[2\] has layout Sparse"),
        (lambda g: g.__setitem__(2, torch.randn(17, dtype=torch.float16)), TypeError, r"grads\[2\] has dtype Half"),
    ],
    ids=["shape", "contiguity", "device", "layout", "dtype"],
)
@pytest.mark.parametrize("entry", ["op", "direct"])
def test_op_rejects_bad_grads_before_touching_anything(corrupt, error, message, entry):
    step = torch.ops.fastoptim.adam_step_ if entry == "op" else fastoptim._C.adam_step_
    params, grads, state, steps = adam_lists()
    corrupt(grads)
    before = [t.clone() for t in params + state + steps]
    with pytest.raises(error, match=message):
        step(params, grads, state, steps, [], ADAM_HYPER, None)
    for x, y in zip(before, params + state + steps):
        assert torch.equal(x, y)


def test_unsupported_param_dtype_raises_type_error():
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.complex64))
    p.grad = torch.ones(4, dtype=torch.complex64)
    opt = fastoptim.Adam([p])
    with pytest.raises(TypeError, match=r"parameter #0 \(shape \(4,\)\) of param group 0 has dtype ComplexFloat; supported: float32, float64, bfloat16, float16"):
        opt.step()
    assert torch.equal(p, torch.zeros(4, dtype=torch.complex64)) and p not in opt.state


def test_sparse_grad_raises_naming_the_parameter():
    model = torch.nn.Embedding(10, 3, sparse=True)
    opt = fastoptim.SGD(model.named_parameters(), lr=0.1)
    model(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(TypeError, match=r"SGD got a sparse gradient \(torch.sparse_coo\) for parameter 'weight' \(shape \(10, 3\)\) of param group 0"):
        opt.step()


def test_sparse_grad_in_a_second_group_names_that_group():
    dense = torch.nn.Parameter(torch.zeros(3))
    embedding = torch.nn.Embedding(4, 2, sparse=True)
    opt = fastoptim.Adagrad([{"params": [dense]}, {"params": embedding.parameters(), "lr": 0.1}])
    dense.grad = torch.ones(3)
    embedding(torch.tensor([1, 3])).sum().backward()
    with pytest.raises(TypeError, match=r"sparse gradient \(torch.sparse_coo\) for parameter #0 \(shape \(4, 2\)\) of param group 1"):
        opt.step()
    assert torch.equal(dense, torch.zeros(3)) and len(opt.state[dense]) == 2  # group 0 untouched too


def test_invalid_second_group_leaves_the_first_unchanged():
    opt, params = trained("AdamW")
    extra = torch.nn.Parameter(torch.randn(5))
    opt.add_param_group({"params": [extra], "lr": 1e-2})
    extra.grad = torch.randn(5)
    set_grads([params], 2, torch.float32)
    opt.param_groups[1]["betas"] = (0.9, 1.0)
    before = snapshot(opt, params)
    with pytest.raises(ValueError, match=r"invalid beta2 value: 1"):
        opt.step()
    assert_same_snapshot(before, snapshot(opt, params))
    assert extra not in opt.state


def test_hyperparameter_made_invalid_after_construction_raises_and_changes_nothing():
    opt, params = trained("AdamW")
    before = snapshot(opt, params)
    opt.param_groups[0]["betas"] = (1.5, 0.999)
    with pytest.raises(ValueError, match=r"invalid beta1 value: 1.5 \(must be in \[0, 1\)\)"):
        opt.step()
    opt.param_groups[0]["betas"] = (0.9, 0.999)
    assert_same_snapshot(before, snapshot(opt, params))


def test_negative_tensor_lr_raises_and_changes_nothing():
    opt, params = trained("SGD", lr=torch.tensor(0.1), momentum=0.9)
    before = snapshot(opt, params)
    opt.param_groups[0]["lr"] = torch.tensor(-1.0)
    with pytest.raises(ValueError, match="invalid learning rate: -1"):
        opt.step()
    opt.param_groups[0]["lr"] = torch.tensor(0.1)
    after = snapshot(opt, params)
    before[1]["param_groups"][0]["lr"] = after[1]["param_groups"][0]["lr"]
    assert_same_snapshot(before, after)


def test_first_step_failure_leaves_no_state_behind():
    # A rejected first step must not leave a momentum buffer that the next step would take as used.
    params = make_params(SHAPES, torch.float32)
    ref_params = clone_params(params)
    opt = fastoptim.SGD(params, lr=0.1, momentum=0.9, dampening=0.5)
    set_grads([params, ref_params], 0, torch.float32)
    good = params[0].grad
    params[0].grad_dtype = None
    params[0].grad = good.double()
    with pytest.raises(TypeError):
        opt.step()
    assert len(opt.state) == 0
    params[0].grad = good
    opt.step()
    torch.optim.SGD(ref_params, lr=0.1, momentum=0.9, dampening=0.5, foreach=False).step()
    for p, q in zip(params, ref_params):
        assert torch.equal(p, q)


def test_op_and_direct_entry_step_identically():
    a, b = adam_lists(), adam_lists()
    with torch.no_grad():
        for x, y in zip(sum(b, []), sum(a, [])):
            x.copy_(y)
    hyper = [1e-2, 0.8, 0.99, 1e-6, 0.1, 0.0, 0.0, 1.0]
    torch.ops.fastoptim.adam_step_(*a, [], hyper, None)
    fastoptim._C.adam_step_(*b, [], hyper, None)
    for x, y in zip(sum(a, []), sum(b, [])):
        assert torch.equal(x, y)


def test_op_rejects_mismatched_lists_directly():
    p = torch.zeros(3)
    with pytest.raises(ValueError, match="expected 1 grads for 1 params, got 0"):
        torch.ops.fastoptim.sgd_step_([p], [], [], [], [], [0.1, 0.0, 0.0, 0.0, 0.0, 0.0], None)
    with pytest.raises(ValueError, match=r"hyper has 2 values, expected 6 \(lr, momentum, dampening, weight_decay, nesterov, maximize\)"):
        torch.ops.fastoptim.sgd_step_([p], [p], [], [], [], [0.1, 0.0], None)
    with pytest.raises(ValueError, match=r"expected 2 state tensors per param \(2 in all\) but got 0"):
        torch.ops.fastoptim.adam_step_([p], [p], [], [torch.tensor(0.0)], [], [1e-3, 0.9, 0.999, 1e-8, 0, 0, 0, 0], None)
    with pytest.raises(ValueError, match="sgd_step_: this rule takes no grad_scale, but one was given"):
        torch.ops.fastoptim.sgd_step_([p], [p], [], [], [], [0.1, 0.0, 0.0, 0.0, 0.0, 0.0], None, torch.tensor(0.5))
    with pytest.raises(ValueError, match="grad_scale must be a 1-element tensor"):
        torch.ops.fastoptim.adan_step_([p], [p], [p] * 4, [torch.tensor(0.0)], [], [1e-3, 0.98, 0.92, 0.99, 1e-8, 0, 0, 0, 0],
                                       None, torch.ones(2))


@pytest.mark.parametrize("rule", sorted(fastoptim._C.rules))
def test_every_op_passes_torch_library_opcheck(rule):
    """Schema, fake-tensor, autograd-registration and AOT-dispatch checks of each custom op, with
    every state slot of the rule switched on."""
    meta = fastoptim._C.rules[rule]
    hyper = [1.0 if is_flag else default for _, default, is_flag in meta["fields"]]
    # momentum on, so that its buffer exists (SGD's Nesterov flag also needs it, with zero dampening)
    hyper = [0.9 if name == "momentum" else value for (name, _, _), value in zip(meta["fields"], hyper)]
    shapes = [(17,), (4, 4)]
    params = [torch.randn(s) for s in shapes]
    grads = [torch.randn(s) for s in shapes] if meta["reads_grad"] else []
    state = [torch.rand(1 if scalar else s) for _, _, scalar in meta["state"] for s in shapes]
    steps = [torch.tensor(2.0) for _ in shapes] if meta["counts_steps"] else []
    op = getattr(torch.ops.fastoptim, f"{rule}_step_").default
    grad_scale = torch.tensor(0.5, dtype=torch.float64) if meta["scales_grad"] else None  # max_grad_norm's factor
    result = torch.library.opcheck(op, (params, grads, state, steps, [], hyper, None, grad_scale))
    assert all(v == "SUCCESS" for v in result.values()), result
