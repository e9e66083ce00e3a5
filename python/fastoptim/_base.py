"""The base class every fastoptim optimizer shares.

A subclass names its C++ rule and maps a param group to the rule's hyperparameters; the base class
does the rest the way torch.optim does it: lazy state under torch's names, a per-parameter `step`
tensor, closures, step hooks (inherited from torch.optim.Optimizer), and one call into C++ per
param group per step.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import operator
import re
from collections.abc import Sequence
from typing import Any, Callable

import torch
from torch import Tensor

from . import _C


#: group keys every class has, filled in where a group (or an older state dict's) lacks them
_GROUP_DEFAULTS: dict[str, Any] = {"stochastic_rounding": False, "state_dtype": None, "state_bits": None}

def scale_key(name: str) -> str:
    """The state key of the block scales of 8-bit state `name`."""
    return f"{name}_scale"


def code_rows(shape: Sequence[int], per_row: bool) -> int:
    """The rows an 8-bit state tensor of `shape` is quantized in (its blocks restart at each, see
    core::CodeGrid): a per-row rule's rows of dim 0 (its rows are units of their own: AdamP's
    channels), else 1, the whole tensor."""
    return shape[0] if per_row and len(shape) > 1 and shape[0] > 0 else 1


def _code_blocks(shape: Sequence[int], per_row: bool) -> int:
    """The blocks of 256 of a tensor of `shape` on its code grid (code_rows)."""
    rows = code_rows(shape, per_row)
    return rows * -(-(math.prod(shape) // rows) // 256)


def eight_bit_blocks(param: Tensor, per_row: bool) -> int:
    """How many block scales one 8-bit state tensor of `param` has (one per 256 elements, of each row
    for a per-row rule); of a DTensor, its local shard's."""
    return _code_blocks(local_of(param).shape, per_row)


def eight_bit_scales_layout(param: Tensor, per_row: bool) -> tuple[tuple[int, ...], list[Any] | None]:
    """The shape of the block scales of one 8-bit state tensor of `param`, and their placements (None
    for a plain tensor: (blocks,)). A DTensor's shards are quantized each on its own, in blocks from
    the shard's first element (as torchao's 8-bit optimizers quantize under FSDP2), so its scales are
    a DTensor with a row per shard, (shards along each mesh dim, ..., the largest shard's blocks),
    sharded along the mesh dims that shard the parameter: a shard reads the first blocks of its row."""
    if not is_dtensor(param):
        return (eight_bit_blocks(param, per_row),), None
    from torch.distributed.tensor import Replicate, Shard

    largest = list(param.shape)  # (DTensor's shards: chunks, the first the largest)
    for mesh_dim, placement in enumerate(param.placements):
        if placement.is_shard():
            largest[placement.dim] = -(-largest[placement.dim] // param.device_mesh.size(mesh_dim))
    mesh_dims = range(param.device_mesh.ndim)
    rows = tuple(param.device_mesh.size(i) if param.placements[i].is_shard() else 1 for i in mesh_dims)
    placements = [Shard(i) if param.placements[i].is_shard() else Replicate() for i in mesh_dims]
    return (*rows, _code_blocks(largest, per_row)), placements


def eight_bit_scales(param: Tensor, per_row: bool) -> Tensor:
    """Zero block scales for one 8-bit state tensor of `param` (eight_bit_scales_layout)."""
    shape, placements = eight_bit_scales_layout(param, per_row)
    if placements is None:
        return torch.zeros(shape, dtype=torch.float32, device=param.device)
    from torch.distributed.tensor import zeros

    return zeros(shape, device_mesh=param.device_mesh, placements=placements, dtype=torch.float32)


def local_scales(scales: Tensor, codes: Tensor, per_row: bool) -> Tensor:
    """The block scales a step or a decoding of `codes` (a DTensor's: its local shard) reads: a
    DTensor's row of scales, as many as the shard has blocks; a plain tensor's, as they are."""
    return local_of(scales).view(-1)[: eight_bit_blocks(codes, per_row)] if is_dtensor(scales) else scales


def decode_eight_bit(codes: Tensor, scales: Tensor, per_row: bool) -> Tensor:
    """8-bit state decoded to float32 on the codes' device (decoded on the CPU; a DTensor's shard by
    shard, into a DTensor of its placements); `per_row`: the rule's blocks restart at each row."""
    local = local_of(codes)
    values = _C.decode_eight_bit(local.cpu(), local_scales(scales, codes, per_row).cpu(),
                                 code_rows(local.shape, per_row)).to(local.device)
    if not is_dtensor(codes):
        return values
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(values, codes.device_mesh, codes.placements, shape=codes.shape, stride=codes.stride())


def encode_eight_bit(values: Tensor, param: Tensor, per_row: bool) -> tuple[Tensor, Tensor]:
    """State values of `param` encoded in 8 bits on its device: (codes, scales), encoded on the CPU (a
    DTensor's shard by shard); `per_row`: the rule's blocks restart at each row."""
    local = local_of(param)
    codes, scales = (t.to(local.device) for t in _C.encode_eight_bit(local_of(values).cpu(), code_rows(local.shape, per_row)))
    if not is_dtensor(values):
        return codes, scales
    from torch.distributed.tensor import DTensor

    whole_scales = eight_bit_scales(param, per_row)
    local_scales(whole_scales, values, per_row).copy_(scales)
    return DTensor.from_local(codes, values.device_mesh, values.placements, shape=values.shape, stride=values.stride()), whole_scales


def check_positive_int(**values: Any) -> None:
    """A ValueError naming the first value that is not an integer >= 1 (bools are not integers here)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Invalid {name} value: {value!r} (expected an integer >= 1)")


def arguments_as_defaults(arguments: dict[str, Any]) -> dict[str, Any]:
    """A constructor's arguments (its ``locals()`` before anything else is assigned) as its param
    group defaults, under the signature's names, as torch.optim stores them."""
    return {name: value for name, value in arguments.items() if name not in ("self", "params", "__class__")}


def memory_span(t: Tensor) -> tuple[Any, int, int] | None:
    """(device, first byte, byte after the last) of the memory a dense tensor covers, or None when
    it covers none here (empty, meta, or a tensor subclass such as DTensor, which the step refuses)."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if t.numel() == 0 or t.is_meta or is_traceable_wrapper_subclass(t) or t.layout != torch.strided:
        return None
    start = t.data_ptr()
    extent = 1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))
    return t.device, start, start + extent * t.element_size()


@functools.cache
def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # (a torch built without distributed)
        return None
    return DTensor


def is_dtensor(t: Any) -> bool:
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(t, dtensor)


def local_of(t: Tensor) -> Tensor:
    """A DTensor's local shard (the tensor itself, under no_grad: updates in place land in the
    DTensor), or a plain tensor as it is."""
    return t.to_local() if is_dtensor(t) else t


def shard_extent(param: Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A DTensor's local shard: its shape, and the index in the whole tensor of its first element
    along each dim (as DTensor itself places shards)."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    return compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)


def first_index_of_shard(param: Tensor) -> int | None:
    """Where a DTensor's local shard starts in the whole tensor's row-major order, for a shard that
    is one run of the whole tensor's elements (every Shard placement on dim 0, FSDP2's); None for one
    that is not (a Shard(1) shard is a piece of every row; a strided shard, FSDP2's beside tensor
    parallelism, interleaves)."""
    from torch.distributed.tensor import Shard

    if any(placement.is_shard() and (type(placement) is not Shard or placement.dim != 0) for placement in param.placements):
        return None
    _, offset = shard_extent(param)
    return offset[0] * math.prod(param.shape[1:]) if offset else 0


def add_up_across_shards(values: Tensor, shards: dict[tuple[Any, tuple[int, ...]], list[int]], max_columns: int = 0) -> None:
    """Adds up, in place, each listed row of `values` across the ranks of its mesh dimensions (its
    first `max_columns` values: their maximum instead): `shards` maps (mesh, mesh dimensions) to row
    positions (as _sharded_positions gives them); one all-reduce per mesh dimension for all the rows
    it lists (and one more for the maxima)."""
    import torch.distributed as dist

    for (mesh, dims), positions in shards.items():
        index = torch.tensor(positions, device=values.device)
        rows = values.index_select(0, index)
        maxima, sums = (rows[:, :max_columns].contiguous(), rows[:, max_columns:].contiguous()) if max_columns else (None, rows)
        for dim in dims:
            dist.all_reduce(sums, group=mesh.get_group(dim))
            if maxima is not None:
                dist.all_reduce(maxima, op=dist.ReduceOp.MAX, group=mesh.get_group(dim))
        values.index_copy_(0, index, sums if maxima is None else torch.cat([maxima, sums], dim=1))


def add_up_tensors_across_shards(tensors: dict[tuple[Any, tuple[int, ...]], list[Tensor]]) -> None:
    """Adds up, in place, the contiguous tensors listed under (mesh, mesh dimensions) across the ranks
    of those dimensions: one all-reduce per mesh dimension for all the tensors it lists."""
    import torch.distributed as dist

    for (mesh, dims), listed in tensors.items():
        flat = torch.cat([t.reshape(-1) for t in listed])
        for dim in dims:
            dist.all_reduce(flat, group=mesh.get_group(dim))
        for t, part in zip(listed, flat.split([t.numel() for t in listed])):
            t.copy_(part.view_as(t))


def in_layout_of(tensor: Tensor, like: Tensor) -> Tensor:
    """`tensor`'s values in the memory layout of `like` (itself when it already has it): what an
    element-wise step that walks `like` in memory order must read beside it."""
    return tensor if tensor.stride() == like.stride() else torch.empty_like(like).copy_(tensor)


def step_device(param: Tensor) -> torch.device:
    """Where a parameter's step counter lives: on its CUDA device (as torch.optim's capturable and
    fused state), where the CUDA kernels read and advance it; on the CPU otherwise."""
    return param.device if param.is_cuda else torch.device("cpu")


def lr_tensor(group: dict[str, Any]) -> Tensor | None:
    """A group's lr when it is a tensor (the ops take it as one), else None (its value is in the hyper vector)."""
    return group["lr"] if isinstance(group["lr"], Tensor) else None


def to_float(value: Any) -> float:
    """A hyperparameter as a float; 1-element tensors (as torch allows for betas) too."""
    return float(value.detach().cpu()) if isinstance(value, Tensor) else float(value)


class Rule:
    """What a front end reads from one C++ rule's metadata: field and state names, checks, start
    values, and its two entries."""

    def __init__(self, name: str) -> None:
        meta = _C.rules[name]
        self.name = name
        self.fields = [field for field, _, _ in meta["fields"]]
        self.flag_fields = {field for field, _, is_flag in meta["fields"] if is_flag}
        self.check = meta["check"]
        # (state name, field that must be nonzero for it to exist, or None)
        self.state_slots = [(state, needs) for state, needs, _ in meta["state"]]
        # The rule's start values where a slot does not start at zero (Adagrad's sum, TAdam's W,
        # AMaC's noise key): (hyper, slot index, parameter position) -> value; None: all zero.
        self.initial_value = meta["initial_value"]
        # per-tensor scalar state, kept in the compute type: float32, or float64 for float64 params
        self.scalar_state = [state for state, _, scalar in meta["state"] if scalar]
        self.element_state = [state for state, _ in self.state_slots if state not in self.scalar_state]
        self.counts_steps = bool(meta["counts_steps"])
        # Rules that sum over a tensor (or its rows) or key noise by element index step in row-major
        # order: their state is contiguous, and a parameter of another layout (channels_last) is
        # stepped as a contiguous copy, written back after the step. The others step any dense
        # layout in place, in memory order, with state in the parameter's layout.
        self.row_major = bool(meta["row_major"])
        # Sums over each tensor (or a summary of its rows' sums) whose step splits around them (pass 1,
        # then finish and pass 2): for a sharded DTensor the front end combines its shards' values in
        # between, the first shard_sums_max by their maximum, the others added up (0: no such sums).
        self.shard_sums = int(meta["shard_sums"])
        self.shard_sums_max = int(meta["shard_sums_max"])
        # sums (or centralization) per row of dim 0: a shard must hold whole rows (Shard(0))
        self.per_row = bool(meta["per_row"])
        # noise keyed by element index (AMaC's): a shard's elements keyed by their index in the whole tensor
        self.keyed_by_index = bool(meta["keyed_by_index"])
        # the slots state_bits=8 keeps as 8-bit codes and block scales (the rule's moments)
        self.eight_bit_state = list(meta["eight_bit_state"])
        # The same C++ step two ways: the custom op (traceable by torch.compile) and a direct
        # pybind11 entry with half the call overhead for eager steps (and one taking the lists
        # gathered in C++).
        self.op = getattr(torch.ops.fastoptim, f"{name}_step_")
        self.direct = getattr(_C, f"{name}_step_")
        self.direct_gathered = getattr(_C, f"{name}_step_gathered")

    def used_state(self, hyper: list[float]) -> list[str]:
        """The state slots a step with these hyperparameters keeps."""
        values = dict(zip(self.fields, hyper))
        return [state for state, needs in self.state_slots if needs is None or values[needs] != 0]

    def state_keys(self, hyper: list[float]) -> tuple[list[str], list[str]]:
        """The state slots this step uses, and the per-parameter state keys it reads: those slots,
        then "step" for rules that count steps."""
        used = self.used_state(hyper)
        return used, used + ["step"] if self.counts_steps else used

    def in_step_layout(self, tensor: Tensor, param: Tensor) -> Tensor:
        """`tensor` (a gradient or state of `param`) in the layout the step walks: row-major for the
        row-major rules, else the parameter's own (itself when it already is)."""
        return tensor.contiguous() if self.row_major else in_layout_of(tensor, param)


@functools.cache
def rule_named(name: str) -> Rule:
    return Rule(name)


@functools.cache
def betas_in_signature(cls: type) -> int | None:
    """How many betas `cls`'s constructor takes by default (None: it names no betas)."""
    parameter = inspect.signature(cls.__init__).parameters.get("betas")
    return len(parameter.default) if parameter is not None and isinstance(parameter.default, tuple) else None


class FusedOptimizer(torch.optim.Optimizer):
    """A torch.optim.Optimizer whose update runs in fastoptim's C++ kernels.

    ``stochastic_rounding=True`` (a keyword of every optimizer; a param group key) stores
    each bfloat16 parameter rounded up or down at random instead of to nearest: up with probability
    equal to the fraction of the bf16 step the float32 result lies past the value below it, so the
    stored weight is the float32 one on average and updates smaller than half a bf16 step are not
    lost. The random bits are Philox4x32-10's, keyed by (the group's ``rounding_seed``, the
    parameter's position, its step count, the element): the same for every thread count and ISA,
    and a resumed run continues bit for bit (each parameter's state holds ``rounding_key``, an int64
    tensor (seed, position, count)). ``rounding_seed`` is drawn from torch's generator when the group
    is added unless the group gives one. float32/float64 parameters are stored as computed (nothing
    to round); float16 ones are refused. The optimizer state stays in the parameter's dtype, rounded
    to nearest.

    ``state_dtype=torch.bfloat16`` (also a keyword of every optimizer but Adafactor, and a group key)
    keeps each float32 parameter's element state (moments, buffers) in bf16: half the state memory
    and 20 instead of 28 bytes moved per element of an AdamW step. The step computes in float32 from
    the stored values and rounds the new state to nearest even when it stores it. A state dict holds
    the bf16 tensors; the loading optimizer's state_dtype decides (unlike its other group values,
    which the state dict's replace as in torch.optim): a bf16-state checkpoint loads into an optimizer
    without the option widened, and back narrowed. None: the parameter's dtype, as torch.optim.

    ``state_bits=8`` (a keyword of the Adam family with AdamP and Schedule-Free AdamW, LAMB, RaLars, TAdam, Lion,
    ADOPT, Muon, SGD, RMSprop, LARS, Adagrad, Adadelta, SophiaG, SophiaH, AdaHessian, SophiaOptim and AMaC; a group key)
    keeps the moments and momentum buffers of float32 and bfloat16 parameters in 8 bits: per state tensor
    ``<name>`` a uint8 tensor of codes of the parameter's shape and ``<name>_scale``, a float32 scale per block
    of 256 elements (in memory order; AdamP's and AMaC's blocks restart at each row of dim 0, which they step
    row by row, so ``rows x ceil(row / 256)`` scales), starting at the slot's start value encoded. Each code is a small float
    relative to its block's largest magnitude (3 mantissa bits; 4 exponent bits and a sign for blocks with
    negative values, 5 exponent bits for blocks without: second moments keep their range down to 2^-31 of the
    block's largest), rounded to nearest (cpp/include/fastoptim/core/codes8.h). The step decodes, updates and
    encodes in registers in its one pass: about 2 bytes of state per parameter instead of 8 for AdamW.
    (LAMB's and RaLars' first pass decodes the moments to advance them for the norms, storing
    nothing; the second advances them again, updates and encodes.)
    Other state (Adan's previous gradient) stays in the parameter's dtype. A DTensor parameter's local
    shards are quantized each on its own (its scales: a DTensor with a row per shard, see
    eight_bit_scales_layout), so its 8-bit checkpoint loads only into the sharding it was saved from. As with state_dtype, the
    loading optimizer decides: an 8-bit checkpoint loads into a full-precision optimizer decoded,
    and a full-precision one into an 8-bit optimizer encoded; 8-bit into 8-bit is kept bit for bit.
    """

    #: name of the C++ rule (the op is torch.ops.fastoptim.<rule>_step_); a class whose groups
    #: step with different rules (Muon: AdamW for its non-matrix groups) overrides _rule_name
    rule: str
    #: group keys an older state dict may lack, filled in on load (torch.optim's __setstate__ does the same)
    setstate_defaults: dict[str, Any] = {}
    #: rule fields this class pins instead of reading them from the param group (e.g. LAMB's rule
    #: also serves RaLars, whose rectification LAMB switches off)
    fixed_fields: dict[str, float] = {}

    #: the shape of per-tensor scalar state: (1,) as holocron keeps TAdam's W_t; () for the
    #: torch.optim classes, as torch keeps NAdam's mu_product and ASGD's eta and mu
    scalar_state_shape: tuple[int, ...] = (1,)

    #: whether a steady step (every state tensor made) gathers its lists in C++; a class that
    #: rewrites the lists of the Python gather (Muon) says False
    gathers_in_cpp: bool = True
    #: whether a group holds DTensor parameters (their steps take the Python gather, which steps
    #: their local shards)
    _holds_dtensors: bool = False

    #: public names of rule fields that a group does not hold under the field's own name (beyond
    #: beta<k>, which is betas[k-1]), for messages
    public_names: dict[str, str] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # (also what copy.deepcopy and pickle call: torch's __getstate__ keeps only defaults, state
        # and param_groups, so what the class derives from its rule is derived again)
        super().__setstate__(state)
        self._holds_dtensors = any(is_dtensor(p) for group in self.param_groups for p in group["params"])
        for group in self.param_groups:
            for key, value in {**_GROUP_DEFAULTS, **self.setstate_defaults}.items():
                group.setdefault(key, value)

    def __init__(self, params, defaults: dict[str, Any]) -> None:
        if defaults.get("differentiable"):
            raise ValueError(
                f"{type(self).__name__}: differentiable=True is not supported; fastoptim's kernels "
                "update tensors in place outside autograd (use torch.optim for differentiable steps)"
            )
        super().__init__(params, defaults)

    # ---- what a subclass may override -------------------------------------------------------
    def _rule_name(self, group: dict[str, Any]) -> str:
        """The C++ rule `group` steps with: the class's."""
        return self.rule

    def _rule_of(self, group: dict[str, Any]) -> Rule:
        return rule_named(self._rule_name(group))

    def _field_value(self, group: dict[str, Any], name: str) -> Any:
        """The value of rule field `name` in `group`: torch's group keys, with the rules' beta1,
        beta2, ... read from the group's `betas` tuple."""
        if name in self.fixed_fields:
            return self.fixed_fields[name]
        if name.startswith("beta") and name[4:].isdigit():
            return group["betas"][int(name[4:]) - 1]
        return group[name]

    def _initial_state(self, name: str, param: Tensor, group: dict[str, Any]) -> Tensor:
        """A new state tensor, filled with the rule's start value for it (zero unless the rule
        says otherwise): shaped like the parameter, in its dtype, as torch.optim does; a per-tensor
        scalar is one value in the compute type. An 8-bit slot's codes and block scales are those of
        its start value."""
        rule = self._rule_of(group)
        layout = torch.contiguous_format if rule.row_major else torch.preserve_format
        if group.get("state_bits") == 8:
            self._check_eight_bit_param(group, param)
            coded = name[: -len("_scale")] if name.endswith("_scale") else name
            if coded in rule.eight_bit_state:
                # (a constant encodes as 1.0's code under a scale of the constant in every block, as
                # core::constant_codes gives it: Adagrad's initial_accumulator_value, made at construction;
                # zero, the others' start, is code 0 and scale 0 without the call, which torch.compile
                # could not trace in a compiled first step)
                value = self._start_value(coded, param, group, rule)
                code, scale = _C.constant_codes(value) if value != 0 else (0, 0.0)
                if name != coded:
                    scales = eight_bit_scales(param, rule.per_row)
                    local_scales(scales, param, rule.per_row).fill_(scale)  # (a DTensor's: its shard's blocks)
                    return scales
                return torch.full_like(param, code, dtype=torch.uint8, memory_format=layout)
        value = self._start_value(name, param, group, rule)
        if name in rule.scalar_state:
            return torch.full(self.scalar_state_shape, value, dtype=self._compute_dtype(param), device=param.device)
        return torch.full_like(param, value, memory_format=layout, dtype=self._state_dtype(group, param))

    def _start_value(self, name: str, param: Tensor, group: dict[str, Any], rule: Rule) -> float:
        """The rule's start value of state slot `name` of `param` (zero unless the rule says otherwise)."""
        if rule.initial_value is None:
            return 0.0
        slot = next(i for i, (slot_name, _) in enumerate(rule.state_slots) if slot_name == name)
        hyper = self._hyper(group)
        if isinstance(group.get("lr"), Tensor):
            # a start value may be the lr (Rprop's step size, ASGD's eta): the tensor's value,
            # read on the step that creates the state only, as torch does
            hyper[rule.fields.index("lr")] = to_float(group["lr"])
        return rule.initial_value(hyper, slot, self._position(param))

    def _state_dtype(self, group: dict[str, Any], param: Tensor) -> torch.dtype:
        """The dtype of `param`'s element state: the group's state_dtype (bf16) for a float32 parameter,
        else the parameter's. A float64/float16 parameter with state_dtype=bf16 raises a ValueError."""
        wanted = group.get("state_dtype")
        if wanted is None or param.dtype in (wanted, torch.float32):
            return wanted or param.dtype
        index = next(i for i, q in enumerate(group["params"]) if q is param)
        raise ValueError(f"{type(self).__name__}: state_dtype={wanted} keeps the state of float32 parameters; "
                         f"{self._param_label(group, index, param)} is {param.dtype}")

    def _check_eight_bit_param(self, group: dict[str, Any], param: Tensor) -> None:
        """8-bit state serves float32 and bfloat16 parameters; others raise a ValueError naming them."""
        index = next(i for i, q in enumerate(group["params"]) if q is param)
        if param.dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"{type(self).__name__}: state_bits=8 keeps the state of float32 and bfloat16 parameters; "
                             f"{self._param_label(group, index, param)} is {param.dtype}")

    def _keys_of(self, param: Tensor, used: list[str], keys: list[str]) -> tuple[list[str], list[str]]:
        """The state slots and state keys of `param`, given its group's (Rule.state_keys): the same
        for every parameter, unless a class keeps other state for some (Adafactor's matrices)."""
        return used, keys

    def _state_shape(self, name: str, param: Tensor) -> torch.Size:
        """The shape of element state `name` of `param`: the parameter's."""
        return param.shape

    def _position(self, param: Tensor) -> int:
        """The parameter's position among all parameters, from a map rebuilt only when a parameter
        is new to it (a first step creates all states: one pass, not one per parameter)."""
        positions = getattr(self, "_positions_by_id", None)
        if positions is None or id(param) not in positions:
            params = (q for g in self.param_groups for q in g["params"])
            positions = self._positions_by_id = {id(q): i for i, q in enumerate(params)}
        return positions[id(param)]

    @staticmethod
    def _compute_dtype(param: Tensor) -> torch.dtype:
        return torch.float64 if param.dtype == torch.float64 else torch.float32

    # ---- param groups: checked when added or loaded ---------------------------------------------
    def _public_name(self, name: str, group: dict[str, Any] | None = None) -> str:
        """What the user calls rule field `name` (of `group`'s rule), for messages."""
        if name in self.public_names:
            return self.public_names[name]
        if name.startswith("beta") and name[4:].isdigit():
            return f"betas[{int(name[4:]) - 1}]"
        return name

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        """Raises a ValueError or TypeError naming the group's first bad hyperparameter by its public
        name: missing, of the wrong type (a string, None for a flag), non-finite or out of the rule's
        range, or a combination the rule refuses. Changes nothing."""
        betas = betas_in_signature(type(self)) or (len(self.defaults["betas"]) if "betas" in self.defaults else None)
        if betas and "betas" in group and (not isinstance(group["betas"], (tuple, list)) or len(group["betas"]) != betas):
            raise ValueError(f"{where}: Invalid betas: {group['betas']!r} (expected {betas} values)")
        rule = self._rule_of(group)
        values = []
        for name in rule.fields:
            label = self._public_name(name, group)
            try:
                value = self._field_value(group, name)
            except (KeyError, IndexError) as error:
                raise ValueError(f"{where}: {label} is missing ({type(error).__name__}: {error})") from None
            except TypeError as error:
                raise TypeError(f"{where}: {label} has the wrong type ({error})") from None
            if isinstance(value, Tensor):
                if value.numel() != 1 or not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
                    raise ValueError(f"{where}: Tensor {label} must be 1-element and real, got shape "
                                     f"{tuple(value.shape)} and dtype {value.dtype}")
                value = float(value.detach().cpu())  # once, here: a step never calls .item()
            elif name in rule.flag_fields:
                if not isinstance(value, numbers.Real) or value not in (0, 1):
                    raise TypeError(f"{where}: {label} must be a bool, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{where}: {label} must be a number, got {value!r}")
            values.append(float(value))
        state_dtype = group.get("state_dtype")
        if state_dtype is not None and state_dtype != torch.bfloat16:
            raise ValueError(f"{where}: Invalid state_dtype value: {state_dtype!r} (expected None or torch.bfloat16)")
        state_bits = group.get("state_bits")
        if state_bits is not None:
            if isinstance(state_bits, bool) or state_bits != 8:
                raise ValueError(f"{where}: Invalid state_bits value: {state_bits!r} (expected None or 8)")
            if not rule.eight_bit_state:
                raise ValueError(f"{where}: {type(self).__name__} keeps no state in 8 bits (state_bits=8 serves the "
                                 "moments and momentum buffers of the optimizers that take it as a keyword); use state_bits=None")
            if state_dtype is not None:
                raise ValueError(f"{where}: state_bits=8 and state_dtype={state_dtype} cannot be combined "
                                 "(8-bit state replaces the moments' dtype); give one of them")
        rounding = group.get("stochastic_rounding", False)
        if not isinstance(rounding, bool):
            raise TypeError(f"{where}: stochastic_rounding must be a bool, got {rounding!r}")
        seed = group.get("rounding_seed")
        if rounding and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
            raise ValueError(f"{where}: Invalid rounding_seed value: {seed!r} (expected an integer in [0, 2**63))")
        max_grad_norm = group.get("max_grad_norm")  # (the global-norm clip's, outside the rules)
        if max_grad_norm is not None and (isinstance(max_grad_norm, bool) or not isinstance(max_grad_norm, numbers.Real)
                                          or not 0.0 <= max_grad_norm < math.inf):
            raise ValueError(f"{where}: Invalid max_grad_norm value: {max_grad_norm!r} (expected a number >= 0, or None)")
        problem = rule.check(values)
        if isinstance(problem, tuple):
            index, accepts = problem
            raise ValueError(f"{where}: Invalid {self._invalid_label(rule.fields[index], group)}: {values[index]} "
                             f"(must be {accepts})")
        if problem is not None:
            raise ValueError(f"{where}: {problem}")

    def _invalid_label(self, name: str, group: dict[str, Any]) -> str:
        """How torch.optim's messages name a bad value of rule field `name`: "learning rate",
        "epsilon value", "beta parameter at index 0", else "<public name> value"."""
        if name == "lr":
            return "learning rate"
        public = self._public_name(name, group)
        if public == "eps":
            return "epsilon value"
        beta = re.fullmatch(r"betas\[(\d+)\]", public)
        return f"beta parameter at index {beta[1]}" if beta else f"{public} value"

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch.optim's add_param_group, refusing what would make a step wrong or racy: a parameter
        twice in the group (its step would count twice), parameters whose memory overlaps (threads
        would race on it), and hyperparameters the rule cannot run with. Nothing is added then."""
        super().add_param_group(param_group)  # (its own checks first: types, leaves, groups sharing a parameter)
        group = self.param_groups[-1]
        if group.get("stochastic_rounding") is True and "rounding_seed" not in group:
            # drawn from torch's generator, so torch.manual_seed before the constructor fixes it
            group["rounding_seed"] = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        try:
            self._check_new_params(self.param_groups[-1]["params"], self.param_groups[:-1])
            self._check_group(self.param_groups[-1], f"{type(self).__name__}: param group {len(self.param_groups) - 1}")
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise
        self._holds_dtensors = self._holds_dtensors or any(is_dtensor(p) for p in self.param_groups[-1]["params"])

    def _steps_whole_tensors(self, group: dict[str, Any]) -> bool:
        """Whether `group`'s step needs each tensor whole: its rule sums over a tensor in row-major
        order with no sums to combine across shards, and not row by row. Such a group steps DTensors
        only when they are replicated."""
        rule = self._rule_of(group)
        return rule.row_major and not rule.shard_sums and not rule.per_row

    def _steps_shard(self, group: dict[str, Any], param: Tensor) -> bool:
        """Whether `group`'s step takes this DTensor parameter's local shard as its part of the whole:
        always for a replicated one; for a rule working row by row (AMaC's centralization, AdamP's row
        sums), a shard of whole rows that is one run of the whole tensor (Shard(0), FSDP2's)."""
        if all(placement.is_replicate() for placement in param.placements):
            return True
        if self._steps_whole_tensors(group):
            return False
        return not self._rule_of(group).per_row or first_index_of_shard(param) is not None

    def _shard_refusal(self, group: dict[str, Any], label: str, param: Tensor) -> str:
        """Why `group`'s step does not take this sharded DTensor parameter (_steps_shard said so)."""
        also = " or sharded along dim 0" if self._rule_of(group).per_row and not self._steps_whole_tensors(group) else ""
        return (f"{type(self).__name__} reduces over rows of each whole tensor (or keys noise by element position), so "
                f"it steps a DTensor parameter only when it is replicated{also}; {label} has placements {param.placements} "
                "(sums across shards are added up for per-tensor sums only, as LAMB's and LARS's: use such an "
                "optimizer, or an element-wise one such as AdamW, for sharded parameters)")

    def _local_shards(self, group: dict[str, Any], index: int, param: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
        """The local shards of a DTensor parameter and its gradient, which the step updates in place
        (an element-wise step of each shard is the step of the whole tensor), or a clear error where
        that does not hold: a gradient of other placements, a pending reduction, or a rule that needs
        the whole tensor and a parameter that is sharded."""
        label = self._param_label(group, index, param)
        if not is_dtensor(grad) or grad.device_mesh != param.device_mesh or grad.placements != param.placements:
            raise TypeError(
                f"{type(self).__name__}: the gradient of {label} must be a DTensor with the parameter's mesh and "
                f"placements {param.placements}, got {type(grad).__name__}"
                f"{' with placements ' + str(grad.placements) if is_dtensor(grad) else ''}"
            )
        if any(placement.is_partial() for placement in grad.placements):
            raise TypeError(f"{type(self).__name__}: the gradient of {label} has a pending reduction "
                            f"({grad.placements}); reduce it (redistribute) before the step")
        if not self._steps_shard(group, param):
            raise ValueError(self._shard_refusal(group, label, param))
        if group.get("stochastic_rounding") and param.dtype == torch.bfloat16 and first_index_of_shard(param) is None:
            raise ValueError(
                f"{type(self).__name__}: stochastic rounding keys its random bits by element position, so it rounds a "
                f"sharded bfloat16 parameter only when each shard is one run of the whole tensor (sharded along dim 0, "
                f"as FSDP2 shards); {label} has placements {param.placements}"
            )
        return param.to_local(), grad.to_local()

    def _check_new_params(self, params: list[Tensor], groups: list[dict[str, Any]]) -> None:
        """Refuses a parameter twice in `params`, or one whose memory overlaps another's (of `params`
        or of the existing `groups`)."""
        devices = {p.device for p in params}
        if len(devices) > 1:
            listed = ", ".join(sorted(str(d) for d in devices))
            raise ValueError(f"{type(self).__name__}: the new param group mixes devices ({listed}); one step runs "
                             "on one device: put the params of each device in a param group of their own")
        seen: dict[int, int] = {}
        for index, p in enumerate(params):
            if id(p) in seen:
                raise ValueError(
                    f"{type(self).__name__}: parameter #{index} (shape {tuple(p.shape)}) is parameter "
                    f"#{seen[id(p)]} again in the same param group; each parameter may appear once "
                    "(twice, its step would be counted twice)"
                )
            seen[id(p)] = index
        labelled = [(f"parameter #{i} of param group {g_index}", q) for g_index, g in enumerate(groups)
                    for i, q in enumerate(g["params"])]
        labelled += [(f"parameter #{i} of the new param group", p) for i, p in enumerate(params)]
        spans = []  # (device, first byte, end byte, label, tensor)
        for label, q in labelled:
            span = memory_span(q)
            if span is not None:
                spans.append((str(span[0]), span[1], span[2], label, q))
        spans.sort(key=lambda span: span[:3])
        reach = None  # the span reaching furthest so far on the current device
        for span in spans:
            if reach is not None and reach[0] == span[0] and span[1] < reach[2]:
                (_, _, _, label_a, p_a), (_, _, _, label_b, p_b) = reach, span
                raise ValueError(
                    f"{type(self).__name__}: {label_b} (shape {tuple(p_b.shape)}) overlaps {label_a} (shape "
                    f"{tuple(p_a.shape)}) in memory; parameters must not share memory (their updates would race "
                    "between threads): pass the tensor they share once, or separate copies"
                )
            if reach is None or reach[0] != span[0] or span[2] > reach[2]:
                reach = span

    # ---- checkpoints ----------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch.optim's load_state_dict, with the state dict checked first: every group's
        hyperparameters (as when added), and every parameter's state (a dict holding each tensor
        this configuration steps with, of the parameter's shape; a 1-element ``step``). A bad entry
        raises, naming the param group, the parameter and the key, and nothing changes. What
        torch.optim converts is converted: a ``step`` stored as a number (torch < 1.12) becomes a
        float32 tensor. Per-tensor scalar state (TAdam's W, AMaC's noise key, AdaHessian's refresh
        count) keeps its float32 value, where torch's load would cast it to a bf16/fp16 parameter's dtype."""
        state_dict = self._checked_state_dict(state_dict)
        # The state's precision is this optimizer's, not the checkpoint's: a bf16-state checkpoint
        # loads into a float32-state optimizer widened, and back narrowed.
        precisions = [(group.get("state_dtype"), group.get("state_bits")) for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, (state_dtype, state_bits) in zip(self.param_groups, precisions):
            group["state_dtype"], group["state_bits"] = state_dtype, state_bits
        for group in self.param_groups:
            rule = self._rule_of(group)
            for p in group["params"]:
                state = self.state.get(p)
                if not state:
                    continue
                for name in rule.scalar_state:
                    if isinstance(state.get(name), _Uncast):
                        state[name] = state[name].tensor.to(dtype=self._compute_dtype(p), device=p.device)
                if isinstance(state.get("rounding_key"), _Uncast):
                    state["rounding_key"] = state["rounding_key"].tensor.to(step_device(p)).contiguous()
                # element-shaped state in the layout the step walks (a state dict saved from a
                # contiguous model loads into a channels_last one, and back)
                for name in rule.element_state:
                    self._load_element_state(state, name, p, group, rule)

    def _load_element_state(self, state: dict[str, Any], name: str, p: Tensor, group: dict[str, Any], rule: Rule) -> None:
        """Element state `name` of `p`, as loaded, in the precision and layout this optimizer steps
        with: 8-bit codes (shielded from torch's cast) kept as they are where this group keeps them
        in 8 bits in the same layout, else decoded; full-precision values encoded where it does,
        else cast to the state dtype."""
        value = state.get(name)
        eight_bit = group.get("state_bits") == 8 and name in rule.eight_bit_state
        if isinstance(value, _Uncast):  # 8-bit codes, with their scales
            codes, scales = value.tensor, state.pop(scale_key(name)).tensor
            if eight_bit and rule.in_step_layout(codes, p) is codes:  # (moved where the parameter is, as torch's load moves state)
                state[name], state[scale_key(name)] = codes.to(p.device), scales.to(p.device).contiguous()
                return
            value = decode_eight_bit(codes, scales, rule.per_row)
        if not isinstance(value, Tensor):
            return
        value = rule.in_step_layout(value, p)
        if eight_bit:
            state[name], state[scale_key(name)] = encode_eight_bit(value, p, rule.per_row)
        else:
            state[name] = value.to(device=p.device, dtype=self._state_dtype(group, p))

    def _checked_state_dict(self, state_dict: Any) -> dict[str, Any]:
        """A copy of `state_dict` ready for torch's load (steps converted, scalar state shielded from
        its cast), or an error naming what is wrong. Group and parameter counts are left to torch's
        own checks, which raise before anything changes."""
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= state_dict.keys():
            raise ValueError(f"{where}: expected a dict with 'state' and 'param_groups', got "
                             f"{sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__}")
        saved_groups, saved_state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(saved_state, dict):
            raise ValueError(f"{where}: 'state' must be a dict, got {type(saved_state).__name__}")
        state = dict(saved_state)
        if len(saved_groups) != len(self.param_groups) or any(
            len(g["params"]) != len(s["params"]) for g, s in zip(self.param_groups, saved_groups)
        ):
            return {**state_dict, "state": state}  # torch's load raises its own ValueError
        for group_index, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            merged = {**_GROUP_DEFAULTS, **self.setstate_defaults, **saved, "params": group["params"]}
            self._check_group(merged, f"{where}: param_groups[{group_index}]")
            rule = self._rule_of(merged)
            used, keys = rule.state_keys(self._hyper(merged))
            for index, (p, key) in enumerate(zip(group["params"], saved["params"])):
                entry = state.get(key)
                if entry is None:
                    continue
                label = f"{where}: state of parameter #{index} (shape {tuple(p.shape)}) of param_groups[{group_index}]"
                if not isinstance(entry, dict):
                    raise TypeError(f"{label} must be a dict of tensors, got {type(entry).__name__}")
                state[key] = self._checked_param_state(dict(entry), p, rule, *self._keys_of(p, used, keys), label)
        return {**state_dict, "state": state}

    def _checked_param_state(self, entry: dict[str, Any], p: Tensor, rule: Rule, used: list[str], keys: list[str],
                             label: str):
        step = entry.get("step")
        if step is not None and not isinstance(step, Tensor):
            if isinstance(step, bool) or not isinstance(step, numbers.Real):
                raise TypeError(f"{label}: 'step' must be a number or a tensor, got {step!r}")
            entry["step"] = torch.tensor(float(step), dtype=torch.float32)  # as torch.optim's __setstate__
        if isinstance(entry.get("step"), Tensor):
            entry["step"] = entry["step"].to(dtype=torch.float32, device=step_device(p))
        if not entry:
            return entry  # no state yet: created by the next step, as for a new parameter
        missing = [k for k in keys if k not in entry]
        if missing:
            raise ValueError(f"{label} lacks {missing} (it has {sorted(entry)}); {type(self).__name__} with these "
                             f"hyperparameters keeps {keys}: a state dict of another optimizer or configuration?")
        for name in keys:
            value = entry[name]
            if not isinstance(value, Tensor):
                raise TypeError(f"{label}: {name!r} must be a tensor, got {type(value).__name__}")
            if value.dtype == torch.uint8 and name in rule.eight_bit_state:  # 8-bit codes and their scales
                scales = entry.get(scale_key(name))
                shape, placements = eight_bit_scales_layout(p, rule.per_row)
                if (not isinstance(scales, Tensor) or scales.dtype != torch.float32 or scales.shape != shape
                        or is_dtensor(scales) != is_dtensor(p)):
                    kind = "a DTensor of its shards' block scales" if placements else "a tensor of block scales"
                    got = (f"{type(scales).__name__} {scales.dtype} of shape {tuple(scales.shape)}"
                           if isinstance(scales, Tensor) else type(scales).__name__)
                    hint = (" (8-bit state is quantized shard by shard, so it loads only into the sharding it was saved "
                            "from: load it there into a state_bits=None optimizer, whose state dict loads anywhere)"
                            if placements else "")
                    raise TypeError(f"{label}: 8-bit {name!r} needs {scale_key(name)!r}, float32, {kind} of shape "
                                    f"{shape}; got {got}{hint}")
                if value.shape != p.shape:
                    raise ValueError(f"{label}: {name!r} must have shape {tuple(p.shape)}, got {tuple(value.shape)}")
                entry[name], entry[scale_key(name)] = _Uncast(value), _Uncast(scales)  # (torch's load would cast them)
                continue
            if not value.is_floating_point():
                raise TypeError(f"{label}: {name!r} must be a floating-point tensor, got {value.dtype}")
            if name in used and name not in rule.scalar_state:  # shaped like the parameter (or as the class says)
                shape = self._state_shape(name, p)
                if value.shape != shape:
                    raise ValueError(f"{label}: {name!r} must have shape {tuple(shape)}, got {tuple(value.shape)}")
            elif value.numel() != 1:
                raise ValueError(f"{label}: {name!r} must have one element, got shape {tuple(value.shape)}")
        for name in rule.scalar_state:
            if name in entry:
                entry[name] = _Uncast(entry[name])
        key = entry.get("rounding_key")
        if key is not None:
            if not isinstance(key, Tensor) or key.dtype != torch.int64 or key.numel() != 3:
                raise TypeError(f"{label}: 'rounding_key' must be an int64 tensor of 3 values (seed, stream, count), got "
                                f"{key.dtype if isinstance(key, Tensor) else type(key).__name__}"
                                f"{' of shape ' + str(tuple(key.shape)) if isinstance(key, Tensor) else ''}")
            entry["rounding_key"] = _Uncast(key.cpu())  # (torch's load would cast it to a bf16 parameter's dtype)
        return entry

    # ---- the step -----------------------------------------------------------------------------
    def _hyper(self, group: dict[str, Any], rule: Rule | None = None) -> list[float]:
        """`group`'s hyperparameters as the flat vector its rule's op takes (or `rule`'s: a class
        that composes a helper rule into its step)."""
        values = []
        for name in (rule or self._rule_of(group)).fields:
            value = self._field_value(group, name)
            # A tensor lr goes to the op as a tensor; its slot here is a placeholder.
            values.append(0.0 if name == "lr" and isinstance(value, Tensor) else to_float(value))
        return values

    def _param_label(self, group: dict[str, Any], index: int, param: Tensor) -> str:
        names = group.get("param_names")
        name = f"'{names[index]}'" if names else f"#{index}"
        group_index = next(i for i, g in enumerate(self.param_groups) if g is group)  # by identity: == compares tensors
        return f"parameter {name} (shape {tuple(param.shape)}) of param group {group_index}"

    def _gather(self, group: dict[str, Any]):
        """The arguments of this group's C++ step, and the state it would create: (args, created),
        or None when no parameter of the group has a gradient. Changes nothing."""
        rule = self._rule_of(group)
        hyper = self._hyper(group)
        used, keys = self._state_keys(group, rule, hyper)
        if not keys:  # e.g. SGD without momentum: no state at all
            rows_of = None
        elif len(keys) == 1:
            only = keys[0]
            rows_of = lambda state: (state[only],)  # noqa: E731
        else:
            rows_of = operator.itemgetter(*keys)
        all_state = self.state
        get_state = all_state.get
        params: list[Tensor] = []
        grads: list[Tensor] = []
        rows: list[tuple[Tensor, ...]] = []  # per parameter: its state tensors in `keys` order
        fresh_indices: list[int] = []
        created: list[tuple[Tensor, dict[str, Tensor]]] = []
        # This loop runs once per parameter per step: plain lookups and appends only; the state
        # lists are built from `rows` afterwards.
        for index, p, grad in self._with_grads(group):
            if rows_of is not None:
                state = get_state(p)  # one lookup: hashing a tensor is a Python-level call
                try:
                    row = rows_of(state)
                except (KeyError, TypeError):  # TypeError: no state yet (None)
                    row = None
                if row is None:
                    row, is_fresh = self._state_with_missing(p, group, rule, state or {}, used, keys, created)
                    if is_fresh:
                        fresh_indices.append(len(params))
                rows.append(row)
            if self._holds_dtensors and is_dtensor(p):
                p, grad = self._local_shards(group, index, p, grad)
            grads.append(rule.in_step_layout(grad, p))
            if rule.row_major and not p.is_contiguous():
                contiguous = p.contiguous()
                created.append((p, _WriteBack(contiguous)))
                p = contiguous
            params.append(p)
        if not params:
            return None
        columns = list(zip(*rows)) if rows else []
        state_lists = columns[: len(used)]
        steps = list(columns[len(used)]) if rule.counts_steps else []
        rounding = list(columns[-1]) if group.get("stochastic_rounding") else []
        flat_state = [t for column in state_lists for t in column]
        if self._holds_dtensors:
            flat_state = [local_of(t) for t in flat_state]
            for column, name in enumerate(used):  # (each shard's own row of block scales)
                if group.get("state_bits") == 8 and name.endswith("_scale") and name[: -len("_scale")] in rule.eight_bit_state:
                    first = column * len(params)
                    flat_state[first:first + len(params)] = [scales.view(-1)[: eight_bit_blocks(p, rule.per_row)] for p, scales
                                                             in zip(params, flat_state[first:first + len(params)])]
        fresh = [False] * len(params)
        for i in fresh_indices:
            fresh[i] = True
        # (the op's arguments in its order; _update puts the grad scale in the None's place)
        args = (params, grads, flat_state, steps, fresh if fresh_indices else [], hyper, lr_tensor(group), None, rounding)
        return args, created

    def _rounding_key(self, group: dict[str, Any], param: Tensor) -> Tensor:
        """A new rounding key for `param`: (the group's seed, the parameter's position, count 0), where its
        step counter lives (the CUDA kernels read and advance it on the device)."""
        return torch.tensor([group["rounding_seed"], self._position(param), 0], dtype=torch.int64, device=step_device(param))

    def _state_keys(self, group: dict[str, Any], rule: Rule, hyper: list[float]) -> tuple[list[str], list[str]]:
        """rule.state_keys, with the block scales of 8-bit slots after the slots (the op takes them
        as state columns after the slots), and last "rounding_key" when the group rounds stochastically."""
        used, keys = rule.state_keys(hyper)
        if group.get("state_bits") == 8:
            scales = [scale_key(name) for name in used if name in rule.eight_bit_state]
            used, keys = used + scales, used + scales + keys[len(used):]
        if not group.get("stochastic_rounding"):
            return used, keys
        if "rounding_seed" not in group:
            raise ValueError(f"{type(self).__name__}: a param group turned stochastic_rounding on after it was added "
                             "has no rounding_seed: set the group's rounding_seed (an integer) too")
        return used, keys + ["rounding_key"]

    def _with_grads(self, group: dict[str, Any]):
        """(index, parameter, gradient) of each parameter of `group` that has a gradient; a sparse
        gradient raises a TypeError naming its parameter."""
        for index, p in enumerate(group["params"]):
            grad = p.grad
            if grad is None:
                continue
            if grad.layout != torch.strided:
                raise TypeError(f"{type(self).__name__} got a sparse gradient ({grad.layout}) for "
                                f"{self._param_label(group, index, p)}; fastoptim does not support sparse gradients yet")
            yield index, p, grad

    def _gather_steady(self):
        """The steady-state step's arguments of every group, gathered in C++ (no Python loop over
        the params): per group with a gradient, (group, gathered, hyper, lr tensor or None). None when the
        Python gather is needed: some state is still to be created, a gradient is sparse, or a
        group clips the global gradient norm."""
        work = []
        for group in self.param_groups:
            if group.get("max_grad_norm"):
                return None
            rule = self._rule_of(group)
            hyper = self._hyper(group)
            used, keys = self._state_keys(group, rule, hyper)
            gathered = _C.gather_group(group["params"], self.state, keys, len(used), rule.row_major,
                                       bool(group.get("stochastic_rounding")))
            if gathered is None:
                return None
            if len(gathered):
                work.append((group, gathered, hyper, lr_tensor(group)))
        return work

    def _global_grad_norm(self, gathered) -> Tensor | None:
        """The L2 norm of every gradient of this step, all groups together, when a group clips it
        (its ``max_grad_norm``); else None. Tensor ops only (in float64): no value leaves the
        device. It reads the gradients once more, as the official Adan and pytorch_optimizer do.
        A sharded gradient's norm is that of the whole tensor (its shards' squares added up)."""
        if not any(group.get("max_grad_norm") for group, _ in gathered):
            return None
        grads = [g for _, (args, _) in gathered for g in args[1]]
        norms = torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float64))
        if self._holds_dtensors:
            shards: dict[tuple[Any, tuple[int, ...]], list[int]] = {}
            offset = 0
            for group, (args, _) in gathered:
                for key, positions in self._sharded_positions(self._stepped_params(group)).items():
                    shards.setdefault(key, []).extend(offset + position for position in positions)
                offset += len(args[1])
            if shards:
                squares = norms.square()
                add_up_across_shards(squares, shards)
                norms = squares.sqrt()
        return torch.linalg.vector_norm(norms)

    def _stepped_params(self, group: dict[str, Any]) -> list[Tensor]:
        """The parameters `group`'s step takes, in the order of its lists (as given, DTensors whole):
        those with a gradient, unless a class steps some apart (Adafactor's matrices)."""
        return [p for _, p, _ in self._with_grads(group)]

    def _sharded_positions(self, params: list[Tensor]) -> dict[tuple[Any, tuple[int, ...]], list[int]]:
        """The sharded DTensors among a step's `params`, by their positions in the step's lists, under
        (mesh, the mesh dimensions that shard them): what their per-tensor sums are added up over."""
        shards: dict[tuple[Any, tuple[int, ...]], list[int]] = {}
        if self._holds_dtensors:
            for position, p in enumerate(params):
                dims = tuple(i for i, placement in enumerate(p.placements) if placement.is_shard()) if is_dtensor(p) else ()
                if dims:
                    shards.setdefault((p.device_mesh, dims), []).append(position)
        return shards

    def _first_indices(self, group: dict[str, Any], params: list[Tensor]) -> dict[str, list[int]]:
        """The step's `first_indices` keyword for a group that keys its bits by element (stochastic
        rounding, AMaC's noise): each sharded parameter's element 0's index in the whole tensor, so
        sharded and unsharded runs draw alike (_local_shards refused the shards that are not one run
        of it); none when nothing is sharded."""
        if not self._holds_dtensors or not (group.get("stochastic_rounding") or self._rule_of(group).keyed_by_index):
            return {}
        firsts = [(first_index_of_shard(p) or 0) if is_dtensor(p) else 0 for p in params]
        return dict(first_indices=firsts) if any(firsts) else {}

    def _run_step(self, entry, group: dict[str, Any], args) -> None:
        """entry(*args): the C++ step of `group`. When its rule sums over each tensor and some
        parameters are sharded, the step runs in two halves: pass 1 gives each parameter's sums over
        its local shard, which are added up over the mesh dimensions that shard it (one all-reduce
        per dimension for all of them), then finish and pass 2 run on the whole tensors' sums, so
        the sharded step is the unsharded one (up to the order of the additions)."""
        rule = self._rule_of(group)
        params = self._stepped_params(group)
        shards = self._sharded_positions(params) if rule.shard_sums else {}
        keys = self._first_indices(group, params)
        if not shards:
            entry(*args, **keys)
            return
        # (on the step's device: the CUDA kernels write and read them there, and the all-reduce takes them)
        sums = torch.zeros(len(args[0]), rule.shard_sums, dtype=torch.float64, device=args[0][0].device)
        whole_numels = [p.numel() for p in params]  # (a DTensor's: the whole tensor's)
        entry(*args, shard_sums=sums, sums_pass=1, whole_numels=whole_numels, **keys)
        add_up_across_shards(sums, shards, rule.shard_sums_max)
        entry(*args, shard_sums=sums, sums_pass=2, whole_numels=whole_numels, **keys)

    @staticmethod
    def _grad_scale(group: dict[str, Any], grad_norm: Tensor | None) -> Tensor | None:
        """The factor on this group's gradients: min(max_grad_norm / (norm + eps), 1), or None."""
        max_norm = group.get("max_grad_norm")
        if not max_norm or grad_norm is None:
            return None
        scale = torch.clamp(max_norm / (grad_norm + group["eps"]), max=1.0)
        return scale.to(torch.float32) if scale.is_cuda else scale  # (the CUDA kernels read a float32 scale)

    def _state_with_missing(self, p, group, rule, state, used, keys, created):
        """The row of state tensors (in `keys` order) for `p`, with new tensors for what `state`
        lacks; the new ones are recorded in `created`. Also returns whether any of them is new."""
        new: dict[str, Tensor] = {}
        if rule.counts_steps and "step" not in state:
            new["step"] = torch.tensor(0.0, dtype=torch.float32, device=step_device(p))
        if "rounding_key" in keys and "rounding_key" not in state:
            new["rounding_key"] = self._rounding_key(group, p)
        for name in used:
            if name not in state:
                new[name] = self._initial_state(name, p, group)
        created.append((p, new))
        return tuple(new[k] if k in new else state[k] for k in keys), any(name in new for name in used)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Performs a single optimization step.

        Args:
            closure (Callable, optional): A closure that reevaluates the model and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._update()
        return loss

    def _update(self, before_update=None) -> None:
        """One C++ step per param group. Every group is checked before any tensor changes; then
        ``before_update(work)`` (if given) may write state tensors, e.g. fold in a new estimate,
        knowing the step will not be rejected. ``work`` holds per group (group, args, created)."""
        if before_update is None and self.gathers_in_cpp and not self._holds_dtensors and not torch.compiler.is_compiling():
            steady = self._gather_steady()
            if steady is not None:
                for group, gathered, hyper, lr in steady[1:]:  # the first group is checked inside its own step
                    self._step_gathered(group, gathered, hyper, lr, check_only=True)
                for group, gathered, hyper, lr in steady:
                    self._step_gathered(group, gathered, hyper, lr)
                return
        gathered = [(group, w) for group in self.param_groups if (w := self._gather(group)) is not None]
        grad_norm = self._global_grad_norm(gathered)
        work = [(group, (*args[:7], self._grad_scale(group, grad_norm), *args[8:]), created)
                for group, (args, created) in gathered]
        if torch.compiler.is_compiling():
            if before_update is not None:
                before_update(work)
            for group, args, created in work:
                self._run_step(self._rule_of(group).op, group, args)
                self._commit(created)
            return
        # The first group is checked inside its own step, unless something runs before it.
        for group, args, _ in work if before_update is not None else work[1:]:
            self._step_listed(group, *args, check_only=True)
        if before_update is not None:
            before_update(work)
        for group, args, created in work:
            self._run_step(functools.partial(self._step_listed, group), group, args)
            self._commit(created)

    def _step_listed(self, group: dict[str, Any], *args, **kwargs) -> None:
        """The C++ step of `group` on the lists the Python gather made."""
        self._call(self._rule_of(group).direct, group, *args, **kwargs)

    def _step_gathered(self, group: dict[str, Any], *args, **kwargs) -> None:
        """The C++ step of `group` on the lists gathered in C++."""
        self._call(self._rule_of(group).direct_gathered, group, *args, **kwargs)

    def _call(self, entry, group: dict[str, Any], *args, listed: list[int] | None = None, **kwargs) -> None:
        """entry(*args, **kwargs), a C++ step of `group`; its errors name parameters as the group does
        (`listed`: the indices in the group of the params the step takes, when not all with a gradient)."""
        try:
            entry(*args, **kwargs)
        except (TypeError, ValueError) as error:
            raise self._relabeled(error, group, listed) from None

    def _relabeled(self, error: Exception, group: dict[str, Any], listed: list[int] | None = None) -> Exception:
        """The C++ step's error with "params[i]" (i counts the params the step takes: `listed`, by default
        the group's params that have a gradient) replaced by the parameter's label in its group."""
        text = str(error)
        match = re.search(r"\b(?:params|grads|steps)\[(\d+)\]", text)
        if match is None:
            return error
        position = int(match.group(1))
        if listed is None:
            listed = [i for i, p in enumerate(group["params"]) if p.grad is not None]
        if position >= len(listed):
            return error
        index = listed[position]
        p = group["params"][index]
        label = self._param_label(group, index, p)
        text = re.sub(rf"\bparams\[{position}\]", label, text)
        text = re.sub(rf"\bgrads\[{position}\]", f"the gradient of {label}", text)
        text = re.sub(rf"\bsteps\[{position}\]", f"the step of {label}", text)
        return type(error)(text)

    def _state_column(self, group: dict[str, Any], args, name: str) -> list[Tensor]:
        """From a group's step arguments: the state tensors `name` of its params (an 8-bit slot's
        `<name>_scale` too), in their order."""
        params, hyper, flat_state = args[0], args[5], args[2]
        index = self._state_keys(group, self._rule_of(group), hyper)[0].index(name)
        return list(flat_state[index * len(params):(index + 1) * len(params)])

    def _commit(self, created) -> None:
        # State created for a step joins the optimizer only once the step has succeeded, so a
        # rejected step leaves the optimizer exactly as it was; so do the results of parameters
        # stepped as contiguous copies.
        for p, new in created:
            if isinstance(new, _WriteBack):
                p.copy_(new.tensor)
            else:
                self.state[p].update(new)


class _WriteBack:
    """In a step's `created` list: the contiguous copy a row-major rule stepped in place of a
    parameter of another layout, copied back into the parameter once the step has succeeded."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor


class _Uncast:
    """A per-tensor scalar state value carried through torch's load_state_dict, whose cast to the
    parameter's dtype would round it (a bf16 parameter's float32 W, or noise key 257): torch casts
    tensors, dicts and iterables, and passes anything else through as it is."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor
