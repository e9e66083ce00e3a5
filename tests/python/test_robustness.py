"""Nothing a user can pass crashes the process or half-applies a step, and a checkpoint is checked
when it is loaded (issue 16): tensor subclasses, the edge test entry, bf16/fp16 resume of scalar
state, state-dict fuzzing, overlapping params, copies and pickles, wrappers, warnings."""

import copy
import io
import os
import pickle
import re
import subprocess
import sys
import warnings

import pytest
import torch

import fastoptim
from reference import (
    OPTIMIZERS,
    GivenHessian,
    assert_resumes_bit_identically,
    assert_same_snapshot,
    given_hessian_if_needed,
    make_params,
    make_rich,
    rule_optimizer,
    set_grads,
    snapshot,
)

SMALL = [(5,), (3, 4), ()]


def stepped(name, steps=2, shapes=SMALL, dtype=torch.float32, **kwargs):
    params = make_params(shapes, dtype)
    opt = make_rich(name, params, **kwargs)
    for step in range(steps):
        set_grads([params], step, dtype)
        opt.step()
    return opt, params


# ---- tensor subclasses: the ops refuse a DTensor with a message, not a segfault (the classes step
# their local shards: test_dtensor.py) ----------------------------------------------------------
@pytest.fixture(scope="module")
def cpu_mesh(tmp_path_factory):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    store = tmp_path_factory.mktemp("dist") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield init_device_mesh("cpu", (1,))
    dist.destroy_process_group()


def test_the_op_refuses_a_tensor_subclass_in_any_list(cpu_mesh):
    from torch.distributed.tensor import Replicate, distribute_tensor

    def hyper(cls):
        opt = cls([torch.nn.Parameter(torch.zeros(1))])
        return opt._hyper(opt.param_groups[0])

    p, g = torch.randn(4), torch.randn(4)
    dgrad = distribute_tensor(torch.randn(4), cpu_mesh, [Replicate()])
    with pytest.raises(TypeError, match=r"grads\[0\] is a tensor subclass"):
        fastoptim._C.sgd_step_([p], [dgrad], [], [], [], hyper(fastoptim.SGD))
    step = distribute_tensor(torch.zeros(()), cpu_mesh, [Replicate()])
    with pytest.raises(TypeError, match=r"steps\[0\] is a tensor subclass"):
        fastoptim._C.adam_step_([p], [g], [torch.zeros(4), torch.zeros(4)], [step], [], hyper(fastoptim.Adam))


# ---- resume is bit-exact in every dtype, scalar state included ---------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_resume_is_bit_exact(name, dtype):
    assert_resumes_bit_identically(lambda params: make_rich(name, params), SMALL + [(17,)], save_at=3, until=7, dtype=dtype)


def test_amac_noise_keys_survive_a_bf16_load():
    params = make_params([(2,)] * 300, torch.bfloat16)
    opt = fastoptim.AMaC(params, seed=1, warmup_steps=2)
    set_grads([params], 0, torch.bfloat16)
    opt.step()
    other = fastoptim.AMaC([p.detach().clone().requires_grad_() for p in params], seed=1, warmup_steps=2)
    other.load_state_dict(copy.deepcopy(opt.state_dict()))
    inner = rule_optimizer(other)
    keys = [inner.state[p]["noise_stream"] for group in inner.param_groups for p in group["params"]]
    assert [float(k) for k in keys] == list(range(300)) and all(k.dtype == torch.float32 for k in keys)


def test_tadam_weight_keeps_its_float32_value_through_a_bf16_load():
    opt, params = stepped("TAdam", steps=5, dtype=torch.bfloat16)
    saved = copy.deepcopy(opt.state_dict())
    other = fastoptim.TAdam([p.detach().clone().requires_grad_() for p in params])
    other.load_state_dict(saved)
    for key, entry in saved["state"].items():
        loaded = other.state[other.param_groups[0]["params"][key]]["W_t"]
        assert loaded.dtype == torch.float32 and torch.equal(loaded, entry["W_t"])


# ---- load_state_dict checks everything before anything changes ---------------------------------
def corrupt_missing(sd, key):
    entry = sd["state"][key]
    entry.pop(next(k for k in entry if k != "step"))


def corrupt_list(sd, key):
    sd["state"][key] = list(sd["state"][key].values())


def corrupt_shape(sd, key):
    entry = sd["state"][key]
    name = next(k for k, v in entry.items() if k != "step" and v.numel() > 1)
    entry[name] = torch.zeros(7)


def corrupt_type(sd, key):
    entry = sd["state"][key]
    name = next(k for k in entry if k != "step")
    entry[name] = "zeros"


def corrupt_lr(sd, key):
    sd["param_groups"][0]["lr"] = "0.001"


def corrupt_inf(sd, key):
    sd["param_groups"][0]["lr"] = float("inf")


# (each corrupts the state of the (3, 4) parameter, `{param}` in the messages: "parameter #1 ... of
# param_groups\[0\]", or where its class puts it in another group, Muon, there; `{index}` its index)
CORRUPTIONS = {
    "missing-key": (corrupt_missing, ValueError, r"state of {param} lacks"),
    "list": (corrupt_list, TypeError, r"state of parameter #{index}\b.*must be a dict of tensors, got list"),
    "shape": (corrupt_shape, ValueError, r"must have shape {shape}, got \(7,\)"),
    "type": (corrupt_type, TypeError, r"must be a tensor, got str"),
    "string-lr": (corrupt_lr, TypeError, r"param_groups\[0\]: lr must be a number, got '0.001'"),
    "inf-lr": (corrupt_inf, ValueError, r"param_groups\[0\]: Invalid learning rate: inf"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_bad_state_dict_is_refused_at_load_and_changes_nothing(name, corruption):
    corrupt, error, message = CORRUPTIONS[corruption]
    source, _ = stepped(name)
    saved = copy.deepcopy(source.state_dict())
    target, params = stepped(name, steps=1)
    # the state dict's key of the (3, 4) parameter, and how a message names it
    groups = rule_optimizer(target).param_groups
    in_order = [(g, i, p) for g, group in enumerate(groups) for i, p in enumerate(group["params"])]
    key, (group_index, index, _) = next((k, (g, i, p)) for k, (g, i, p) in enumerate(in_order) if p is params[1])
    # (the corrupted tensor's shape: the parameter's, or as the class keeps it, Adafactor's row factor)
    shaped = next(k for k, v in saved["state"][key].items() if k != "step" and v.numel() > 1)
    shape = re.escape(str(tuple(rule_optimizer(target)._state_shape(shaped, params[1]))))
    message = message.format(index=index, param=rf"parameter #{index} \(shape \(3, 4\)\) of param_groups\[{group_index}\]",
                             shape=shape)
    only_key = corruption == "missing-key" and len(saved["state"][key]) == 1  # SGD's, LARS's momentum_buffer
    corrupt(saved, key)
    if only_key:
        # an entry left empty is no state, which the next step creates (torch's SGD: a new momentum_buffer)
        target.load_state_dict(saved)
        assert len(rule_optimizer(target).state[params[1]]) == 0
        return
    before = snapshot(target, params)
    with pytest.raises(error, match=message):
        target.load_state_dict(saved)
    assert_same_snapshot(before, snapshot(target, params))


def test_another_optimizers_state_dict_is_refused_naming_what_is_missing():
    sgd, params = stepped("SGD")
    adam = fastoptim.Adam(params)
    with pytest.raises(ValueError, match=r"param_groups\[0\]: betas\[0\] is missing"):
        adam.load_state_dict(sgd.state_dict())
    saved = copy.deepcopy(sgd.state_dict())
    saved["param_groups"][0].update(betas=(0.9, 0.999), eps=1e-8, amsgrad=False, decoupled_weight_decay=False)
    with pytest.raises(ValueError, match=r"lacks \['exp_avg', 'exp_avg_sq', 'step'\] \(it has \['momentum_buffer'\]\)"):
        adam.load_state_dict(saved)
    plain, params = stepped("Adam")
    with pytest.raises(ValueError, match=r"lacks \['max_exp_avg_sq'\]"):
        fastoptim.Adam(params, amsgrad=True).load_state_dict({**plain.state_dict(), "param_groups": [
            {**plain.state_dict()["param_groups"][0], "amsgrad": True}]})
    assert len(adam.state) == 0


def test_integer_steps_of_old_torch_checkpoints_are_converted():
    """torch < 1.12 stored `step` as an int; torch.optim converts it on load, and so does fastoptim."""
    params = make_params(SMALL, torch.float32)
    reference = torch.optim.Adam(params, lr=0.01)
    for step in range(3):
        set_grads([params], step, torch.float32)
        reference.step()
    saved = copy.deepcopy(reference.state_dict())
    for entry in saved["state"].values():
        entry["step"] = int(entry["step"])
    ours = fastoptim.Adam([p.detach().clone().requires_grad_() for p in params], lr=0.01)
    ours.load_state_dict(saved)
    assert all(s["step"].dtype == torch.float32 and float(s["step"]) == 3.0 for s in ours.state.values())
    torch_again = torch.optim.Adam([p.detach().clone().requires_grad_() for p in params], lr=0.01)
    torch_again.load_state_dict(copy.deepcopy(reference.state_dict()))
    a, b = ours.param_groups[0]["params"], torch_again.param_groups[0]["params"]
    for step in range(3, 6):
        set_grads([a, b], step, torch.float32)
        ours.step()
        torch_again.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=0)


def test_extra_state_keys_are_kept_as_torch_keeps_them():
    opt, params = stepped("Adam")
    saved = copy.deepcopy(opt.state_dict())
    saved["state"][0]["max_exp_avg_sq"] = torch.zeros(5)  # from an amsgrad run
    opt.load_state_dict(saved)
    set_grads([params], 5, torch.float32)
    opt.step()


# ---- parameters: duplicates and overlapping memory --------------------------------------------
def test_overlapping_parameters_are_refused():
    base = torch.zeros(10)
    a, b = base[:6].requires_grad_(), base[4:].requires_grad_()
    with pytest.raises(ValueError, match=r"parameter #1 of the new param group \(shape \(6,\)\) overlaps parameter #0"):
        fastoptim.AdamW([a, b])
    opt = fastoptim.AdamW([a])
    with pytest.raises(ValueError, match=r"overlaps parameter #0 of param group 0"):
        opt.add_param_group({"params": [b]})
    assert len(opt.param_groups) == 1
    fastoptim.AdamW([base[:5].requires_grad_(), base[5:].requires_grad_()])  # adjacent, not overlapping


def test_a_parameter_twice_in_a_group_is_refused():
    p = torch.nn.Parameter(torch.zeros(3))
    # (torch itself only warns)
    with pytest.warns(UserWarning, match="duplicate parameters"), pytest.raises(ValueError, match=r"parameter #1 \(shape \(3,\)\) is parameter #0 again"):
        fastoptim.SGD([p, p])


def test_a_group_with_bad_hyperparameters_is_not_added():
    opt = fastoptim.Adam([torch.nn.Parameter(torch.zeros(3))])
    for group, error, message in [
        ({"lr": float("inf")}, ValueError, r"param group 1: Invalid learning rate: inf"),
        ({"amsgrad": None}, TypeError, r"param group 1: amsgrad must be a bool, got None"),
        ({"amsgrad": "yes"}, TypeError, r"amsgrad must be a bool, got 'yes'"),
        ({"betas": (0.9, 0.99, 0.999)}, ValueError, r"Invalid betas: \(0.9, 0.99, 0.999\) \(expected 2 values\)"),
        ({"weight_decay": float("nan")}, ValueError, r"Invalid weight_decay value: nan"),
    ]:
        with pytest.raises(error, match=message):
            opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], **group})
        assert len(opt.param_groups) == 1


@pytest.mark.parametrize(
    "make",
    [
        lambda p: fastoptim.SGD(p, lr=float("inf")),
        lambda p: fastoptim.SGD(p, momentum=float("inf")),
        lambda p: fastoptim.SGD(p, dampening=float("inf")),
        lambda p: fastoptim.AdamW(p, weight_decay=float("inf")),
        lambda p: fastoptim.RaLars(p, sma_threshold=float("inf")),
        lambda p: fastoptim.Adam(p, betas=(0.9,)),
        lambda p: fastoptim.AMaC(p, gradient_centralization="no"),
    ],
    ids=["lr", "momentum", "dampening", "weight_decay", "sma_threshold", "betas", "flag"],
)
def test_construction_refuses_infinities_wrong_betas_and_strings_for_flags(make):
    with pytest.raises((ValueError, TypeError)):
        make([torch.nn.Parameter(torch.zeros(3))])


def test_an_error_names_the_parameter_by_its_index_in_the_group():
    params = make_params([(3,), (4,)], torch.float32)
    opt = fastoptim.Adam(params)
    params[1].grad_dtype = None  # (torch refuses a gradient of another dtype unless told)
    params[1].grad = torch.zeros(4, dtype=torch.float64)  # params[0] has no gradient
    with pytest.raises(TypeError, match=r"the gradient of parameter #1 \(shape \(4,\)\) of param group 0 has dtype Double"):
        opt.step()


# ---- copies and pickles step like the original -------------------------------------------------
def copy_by(how, opt):
    if how == "deepcopy":
        return copy.deepcopy(opt)
    if how == "pickle":
        return pickle.loads(pickle.dumps(opt))
    buffer = io.BytesIO()
    torch.save(opt, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


WRAPPED = {
    "Lookahead(AdamW)": lambda p: fastoptim.Lookahead(fastoptim.AdamW(p), sync_period=2),
    "EMA(SGD)": lambda p: fastoptim.EMA(fastoptim.SGD(p, lr=0.1, momentum=0.9)),
    "SWA(Adam)": lambda p: fastoptim.SWA(fastoptim.Adam(p)),
    "Scout(LAMB)": lambda p: fastoptim.Scout(fastoptim.LAMB(p), sync_period=2),
}


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
@pytest.mark.parametrize("name", OPTIMIZERS + sorted(WRAPPED))
def test_a_copied_optimizer_steps_like_the_original(name, how):
    params = make_params(SMALL, torch.float32)
    opt = WRAPPED[name](params) if name in WRAPPED else make_rich(name, params)
    for step in range(2):
        set_grads([params], step, torch.float32)
        opt.step()
    # (a Hessian-diagonal optimizer runs inside the tests' GivenHessian, which is not the thing copied)
    inner = opt.optimizer if isinstance(opt, GivenHessian) else opt
    copied_params, copied = copy_by(how, (params, inner))
    copied = given_hessian_if_needed(copied)
    for step in range(2, 5):
        set_grads([params, copied_params], step, torch.float32)
        opt.step()
        copied.step()
    for p, q in zip(params, copied_params):
        assert torch.equal(p, q)


# ---- wrappers check everything before their base steps ---------------------------------------
def test_a_plain_torch_checkpoint_loads_into_a_wrapper_and_steps():
    params = make_params(SMALL, torch.float32)
    plain = torch.optim.AdamW(params)
    set_grads([params], 0, torch.float32)
    plain.step()
    wrapped = fastoptim.Lookahead(fastoptim.AdamW([p.detach().clone().requires_grad_() for p in params]), sync_period=2)
    wrapped.load_state_dict(copy.deepcopy(plain.state_dict()))
    mine = wrapped.param_groups[0]["params"]
    for step in range(1, 4):
        set_grads([mine], step, torch.float32)
        wrapped.step()
    assert wrapped.param_groups[0]["lookahead_step"] == 3


@pytest.mark.parametrize(
    "key,value,message",
    [("sync_rate", 2, r"Invalid sync_rate value: 2"), ("sync_period", 0, r"Invalid sync_period value: 0"),
     ("lookahead_step", -1, r"Invalid lookahead_step value: -1")],
)
def test_a_bad_wrapper_value_in_a_group_raises_before_the_base_steps(key, value, message):
    params = make_params(SMALL, torch.float32)
    opt = fastoptim.Lookahead(fastoptim.AdamW(params))
    set_grads([params], 0, torch.float32)
    opt.step()
    opt.param_groups[0][key] = value
    before = snapshot(opt, params)
    with pytest.raises(ValueError, match=message):
        opt.step()
    assert_same_snapshot(before, snapshot(opt, params))


def test_a_group_added_to_the_base_around_the_wrapper_steps():
    params = make_params(SMALL, torch.float32)
    opt = fastoptim.Lookahead(fastoptim.AdamW(params), sync_period=2)
    late = make_params([(6,)], torch.float32, seed=3)
    opt.base_optimizer.add_param_group({"params": late})
    for step in range(2):
        set_grads([params + late], step, torch.float32)
        opt.step()
    assert opt.param_groups[1]["lookahead_step"] == 2 and "slow_param" in opt.state[late[0]]


@pytest.mark.parametrize("damage", ["missing", "misshapen"])
def test_a_wrapper_checkpoint_with_a_bad_buffer_is_refused_at_load(damage):
    params = make_params(SMALL, torch.float32)
    opt = fastoptim.Lookahead(fastoptim.AdamW(params))
    set_grads([params], 0, torch.float32)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    if damage == "missing":
        del saved["state"][1]["slow_param"]
    else:
        saved["state"][1]["slow_param"] = torch.zeros(2)
    target_params = make_params(SMALL, torch.float32, seed=4)
    target = fastoptim.Lookahead(fastoptim.AdamW(target_params))
    before = snapshot(target, target_params)
    with pytest.raises(ValueError, match=r"param_groups\[0\]: parameter #1 \(shape \(3, 4\)\) needs its 'slow_param'"):
        target.load_state_dict(saved)
    assert_same_snapshot(before, snapshot(target, target_params))


def test_the_wrapper_base_class_is_not_offered_as_an_optimizer():
    assert "OptimizerWrapper" not in fastoptim.__all__
    with pytest.raises(TypeError, match="construct one of those"):
        fastoptim.OptimizerWrapper(fastoptim.SGD([torch.nn.Parameter(torch.zeros(2))]), {})


# ---- what a user is told -----------------------------------------------------------------------
def test_sophiag_without_estimates_warns_once():
    model = torch.nn.Linear(4, 2)
    opt = fastoptim.SophiaG(model.parameters(), hessian_update_interval=2)
    x = torch.randn(8, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(6):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    assert len([w for w in caught if "without a Hessian estimate" in str(w.message)]) == 1


def test_sophiag_with_update_hessian_does_not_warn():
    model = torch.nn.Linear(4, 2)
    opt = fastoptim.SophiaG(model.parameters(), hessian_update_interval=2)
    x = torch.randn(8, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for step in range(6):  # the official loop: step, then update_hessian() every k steps
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
            if step % 2 == 1:
                opt.zero_grad()
                model(x).square().mean().backward()
                opt.update_hessian()


def test_an_unknown_fastoptim_isa_is_warned_about():
    env = {**os.environ, "FASTOPTIM_ISA": "avx9000"}
    result = subprocess.run([sys.executable, "-c", "import fastoptim"], env=env, capture_output=True, text=True, check=True)
    assert "FASTOPTIM_ISA='avx9000' is not one of this machine's kernel ISAs" in result.stderr


def test_max_threads_reports_the_kernels_thread_count():
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert fastoptim._C.max_threads() == n
    finally:
        torch.set_num_threads(threads)


# ---- non-finite gradients: the documented policy ------------------------------------------------
PER_TENSOR = {"LAMB", "LARS", "RaLars", "TAdam"}  # rules whose step reads per-tensor sums


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_non_finite_gradient_reaches_no_other_tensor(name, bad):
    """A NaN or inf in one gradient element spoils at most that element (element-wise rules) or that
    tensor (rules with per-tensor sums); every other tensor steps as it would have."""
    params, clean = make_params([(5,), (3, 4), (6,)], torch.float32), make_params([(5,), (3, 4), (6,)], torch.float32)
    opt, reference = make_rich(name, params), make_rich(name, clean)
    for step in range(2):
        set_grads([params, clean], step, torch.float32)
        if step == 1:
            params[0].grad[2] = bad
        opt.step()
        reference.step()
    assert torch.equal(params[1], clean[1]) and torch.equal(params[2], clean[2])
    spoiled = (~torch.isfinite(params[0])).sum().item()
    assert spoiled <= (params[0].numel() if name in PER_TENSOR else 1)


def test_a_non_finite_gradient_under_a_global_norm_clip_spoils_the_step_as_torch_clip_does():
    """With max_grad_norm the clip factor depends on every gradient: one NaN makes it NaN for all
    tensors, as torch.nn.utils.clip_grad_norm_ (error_if_nonfinite=False, its default) does.
    GradScaler's step skips such steps before they reach the optimizer."""
    params = make_params([(5,), (6,)], torch.float32)
    opt = fastoptim.Adan(params, max_grad_norm=1.0)
    set_grads([params], 0, torch.float32)
    params[0].grad[0] = float("nan")
    opt.step()
    assert all(torch.isnan(p).all() for p in params)


def test_named_parameters_are_checked_too():
    base = torch.zeros(10)
    named = [("a", base[:6].requires_grad_()), ("b", base[4:].requires_grad_())]
    with pytest.raises(ValueError, match=r"overlaps"):
        fastoptim.AdamW(named)
    model = torch.nn.Linear(3, 2)
    opt = fastoptim.AdamW(model.named_parameters())
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
