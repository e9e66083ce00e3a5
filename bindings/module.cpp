// fastoptim._C: the pybind11 module. The optimizer steps are torch custom ops (torch.ops.fastoptim.*,
// registered from cpp/src/aten when this module loads); what is not an op lives here: the rules'
// metadata the Python classes read, and the choice of kernel ISA.
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>  // pybind11 with torch's Tensor caster
#include <pybind11/functional.h>

#include <memory>

#include <string>
#include <vector>

#include "fastoptim/aten/elementwise_ops.h"
#include "fastoptim/aten/solver_ops.h"
#include "fastoptim/aten/layout.h"
#include "fastoptim/kernels/isa.h"
#include "fastoptim/rules/registry.h"

namespace py = pybind11;
using namespace fastoptim;

namespace {

template <class Rule>
py::dict describe() {
  using Hyper = typename Rule::Hyper;
  py::list fields;
  for (const auto& f : Hyper::kFields)
    fields.append(py::make_tuple(f.name, f.default_value, f.check == core::Check::flag));
  // (name, field it needs or None, per-tensor scalar in the compute type rather than shaped like the param)
  py::list state;
  for (int index = 0; index < Rule::kStateSlots + rules::scalar_slots_of<Rule>::value; ++index) {
    const core::StateSlot& slot = Rule::kState[index];
    state.append(py::make_tuple(slot.name, slot.needs_field ? py::object(py::str(slot.needs_field)) : py::object(py::none()),
                                index >= Rule::kStateSlots));
  }
  py::dict d;
  d["fields"] = fields;
  d["state"] = state;
  d["counts_steps"] = Rule::kCountsSteps;
  d["reads_grad"] = rules::reads_grad<Rule>::value;
  d["row_major"] = aten::needs_row_major<Rule>();
  // what a sharded tensor's split step combines across its shards, per tensor: its sums, or a per-row
  // rule's summary of its rows (0: none, or the step does not split); the first shard_sums_max of them
  // by their maximum, the others added up
  d["shard_sums"] = rules::splits_at_sums<Rule>() ? rules::split_sums_of<Rule>() : 0;
  d["shard_sums_max"] = rules::row_summary_max_of<Rule>::value;
  d["per_row"] = rules::sums_per_row<Rule>::value;        // its sums (or centralization) per row of dim 0
  d["keyed_by_index"] = rules::uses_index<Rule>::value;   // its noise keyed by element index
  d["scales_grad"] = rules::scales_grad<Rule>::value;
  // the state slots state_bits=8 keeps in 8 bits (rules::eight_bit_slots)
  py::list eight_bit;
  for (int index = 0; index < Rule::kStateSlots; ++index)
    if (rules::eight_bit_slots<Rule>::value >> index & 1u) eight_bit.append(Rule::kState[index].name);
  d["eight_bit_state"] = eight_bit;
  // What a state slot starts at (rules::initial_value), for the rules whose start is not zero: the
  // Python classes create their state from it, as the libtorch and edge front ends do.
  // The rule's own validation of a flat hyper vector: None, (index of the first field out of its
  // range, what the field accepts), or the message of a combination the rule refuses. The Python
  // classes check param groups with it when they are added or loaded, under their public names.
  d["check"] = py::cpp_function(
      [](const std::vector<double>& hyper) -> py::object {
        if (hyper.size() != Hyper::kFieldCount) throw py::value_error("check: wrong number of hyper values");
        const int bad = core::first_invalid_field<Hyper>(hyper.data());
        if (bad >= 0) return py::make_tuple(bad, core::check_text(Hyper::kFields[bad].check));
        const char* conflict = Rule::invalid_combination(Hyper::from(hyper.data()));
        return conflict ? py::object(py::str(conflict)) : py::object(py::none());
      },
      py::arg("hyper"));
  if (rules::has_initial_value<Rule>::value)
    d["initial_value"] = py::cpp_function(
        [](const std::vector<double>& hyper, int slot, std::int64_t position) {
          if (hyper.size() != Rule::Hyper::kFieldCount) throw py::value_error("initial_value: wrong number of hyper values");
          return rules::initial_value<Rule>(Rule::Hyper::from(hyper.data()), slot, position);
        },
        py::arg("hyper"), py::arg("slot"), py::arg("position"));
  else
    d["initial_value"] = py::none();
  return d;
}

// Runs f, raising c10's typed errors as the Python exceptions torch.ops raises for them.
template <class F>
auto translating_errors(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::TypeError& e) {
    throw py::type_error(e.what_without_backtrace());
  } catch (const c10::ValueError& e) {
    throw py::value_error(e.what_without_backtrace());
  } catch (const c10::Error& e) {
    throw std::runtime_error(e.what_without_backtrace());
  }
}

// A param group's step arguments gathered in C++ (see gather_group): the lists the direct entry
// takes, kept as C++ vectors so they never become Python lists.
struct Gathered {
  std::vector<at::Tensor> params, grads, state, steps, rounding;
};

// The steady-state gather of FusedOptimizer._gather: every param of `params` with a gradient, its
// gradient (in the parameter's memory layout) and its state tensors under `keys` (the used state slots, then "step"
// for rules that count steps, then "rounding_key" when `rounding`), state slot-major as the step takes them. None whenever the Python
// gather has more to do: a param without its state (it creates it), a sparse gradient (it raises),
// anything that is not a tensor where one is expected, a non-contiguous param of a `row_major` rule.
py::object gather_group(const py::list& params, const py::dict& state, const std::vector<py::str>& keys,
                        std::size_t slot_keys, bool row_major, bool rounding) {
  auto gathered = std::make_unique<Gathered>();
  std::vector<std::vector<at::Tensor>> slots(slot_keys);
  for (const py::handle item : params) {
    if (!THPVariable_Check(item.ptr())) return py::none();
    const at::Tensor& p = THPVariable_Unpack(item.ptr());
    const at::Tensor& grad = p.grad();
    if (!grad.defined()) continue;
    if (grad.layout() != at::kStrided) return py::none();
    if (row_major && !p.is_contiguous()) return py::none();  // (stepped as a contiguous copy)
    // A plain dict lookup: the state is a defaultdict, whose __missing__ must not run here.
    PyObject* param_state = PyDict_GetItemWithError(state.ptr(), item.ptr());
    if (param_state == nullptr) {
      if (PyErr_Occurred()) throw py::error_already_set();
      return py::none();
    }
    if (!PyDict_Check(param_state)) return py::none();
    for (std::size_t j = 0; j < keys.size(); ++j) {
      PyObject* value = PyDict_GetItemWithError(param_state, keys[j].ptr());
      if (value == nullptr || !THPVariable_Check(value)) {
        if (PyErr_Occurred()) throw py::error_already_set();
        return py::none();
      }
      const bool is_rounding_key = rounding && j + 1 == keys.size();
      (j < slot_keys ? slots[j] : is_rounding_key ? gathered->rounding : gathered->steps)
          .push_back(THPVariable_Unpack(value));
    }
    gathered->params.push_back(p);
    gathered->grads.push_back(aten::same_layout(grad, p) ? grad : at::empty_like(p).copy_(grad));
  }
  for (auto& slot : slots)
    for (auto& tensor : slot) gathered->state.push_back(std::move(tensor));
  return py::cast(std::move(gathered));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastoptim's compiled core: rule metadata and kernel selection; steps are torch.ops.fastoptim.*";

  py::dict rules_dict;
#define FASTOPTIM_DESCRIBE(Type, name) rules_dict[#name] = describe<rules::Type>();
  FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_DESCRIBE)
  // an optimizer of its own in every front end, or a step the front ends compose (registry.h)
#define FASTOPTIM_MARK_OPTIMIZER(Type, name) rules_dict[#name]["optimizer"] = true;
#define FASTOPTIM_MARK_HELPER(Type, name) rules_dict[#name]["optimizer"] = false;
  FASTOPTIM_OPTIMIZER_RULES(FASTOPTIM_MARK_OPTIMIZER)
  FASTOPTIM_HELPER_RULES(FASTOPTIM_MARK_HELPER)
#undef FASTOPTIM_DESCRIBE
  m.attr("rules") = rules_dict;

  // Direct entries to the same C++ step as torch.ops.fastoptim.<name>_step_: the Python classes
  // call these in eager mode, where they cost half a custom-op call, and the ops under torch.compile.
#define FASTOPTIM_DIRECT(Type, name)                                                                         \
  m.def(                                                                                                     \
      #name "_step_",                                                                                        \
      [](const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,                         \
         const std::vector<at::Tensor>& state, const std::vector<at::Tensor>& steps, const std::vector<bool>& fresh, \
         const std::vector<double>& hyper, const std::optional<at::Tensor>& lr,                               \
         const std::optional<at::Tensor>& grad_scale, const std::vector<at::Tensor>& rounding, bool check_only, \
         const std::optional<at::Tensor>& shard_sums, std::int64_t sums_pass,                                \
         const std::vector<std::int64_t>& whole_numels, const std::vector<std::int64_t>& first_indices) {      \
        std::unique_ptr<bool[]> flags(new bool[fresh.size()]);                                               \
        std::copy(fresh.begin(), fresh.end(), flags.get());                                                  \
        translating_errors([&] {                                                                             \
          aten::elementwise_step<rules::Type>(params, grads, state, steps,                                   \
                                              c10::ArrayRef<bool>(flags.get(), fresh.size()), hyper, lr,     \
                                              grad_scale, check_only, rounding, shard_sums, sums_pass,       \
                                              whole_numels, first_indices);                                  \
        });                                                                                                  \
      },                                                                                                     \
      py::arg("params"), py::arg("grads"), py::arg("state"), py::arg("steps"), py::arg("fresh"),              \
      py::arg("hyper"), py::arg("lr") = py::none(), py::arg("grad_scale") = py::none(),                     \
      py::arg("rounding") = std::vector<at::Tensor>(), py::arg("check_only") = false,                         \
      py::arg("shard_sums") = py::none(), py::arg("sums_pass") = 0,                                           \
      py::arg("whole_numels") = std::vector<std::int64_t>(), py::arg("first_indices") = std::vector<std::int64_t>());
  FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_DIRECT)
#undef FASTOPTIM_DIRECT

  py::class_<Gathered>(m, "Gathered", "A param group's step arguments, gathered by gather_group.")
      .def("__len__", [](const Gathered& g) { return g.params.size(); });
  m.def(
      "encode_eight_bit",
      [](const at::Tensor& values, std::int64_t rows) { return translating_errors([&] { return aten::encode_eight_bit(values, rows); }); },
      py::arg("values"), py::arg("rows") = 1,
      "(codes, block scales) of a dense float tensor as 8-bit state (cpp/include/fastoptim/core/codes8.h), its blocks "
      "restarting at each of `rows` equal rows (a per-row rule's rows of dim 0).");
  m.def(
      "constant_codes",
      [](double value) {
        const core::ConstantCodes c = core::constant_codes(float(value));
        return std::make_pair(int(c.code), double(c.scale));
      },
      py::arg("value"),
      "(the code of every element, the scale of every block) of a tensor filled with `value` (float32) as 8-bit "
      "state: what encode_eight_bit gives it, without the tensor (a state's start value).");
  m.def(
      "decode_eight_bit",
      [](const at::Tensor& codes, const at::Tensor& scales, std::int64_t rows) {
        return translating_errors([&] { return aten::decode_eight_bit(codes, scales, rows); });
      },
      py::arg("codes"), py::arg("scales"), py::arg("rows") = 1,
      "The float32 values of 8-bit state (codes and block scales, in blocks restarting at each of `rows` rows).");
  m.def("gather_group", &gather_group, py::arg("params"), py::arg("state"), py::arg("keys"), py::arg("slot_keys"),
        py::arg("row_major"), py::arg("rounding") = false,
        "The steady-state gather of a param group (every state tensor already there), or None.");
  // The direct entries again, for arguments gather_group collected.
#define FASTOPTIM_GATHERED(Type, name)                                                                      \
  m.def(                                                                                                    \
      #name "_step_gathered",                                                                              \
      [](const Gathered& g, const std::vector<double>& hyper, const std::optional<at::Tensor>& lr,           \
         bool check_only) {                                                                                 \
        translating_errors([&] {                                                                            \
          aten::elementwise_step<rules::Type>(g.params, g.grads, g.state, g.steps, {}, hyper, lr, std::nullopt, \
                                              check_only, g.rounding);                                      \
        });                                                                                                 \
      },                                                                                                    \
      py::arg("gathered"), py::arg("hyper"), py::arg("lr") = py::none(), py::arg("check_only") = false);
  FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_GATHERED)
#undef FASTOPTIM_GATHERED

  py::module_ solvers = m.def_submodule("solvers", "The second-order solvers' vector algebra and dense solves.");
  solvers.def(
      "conjugate_gradient",
      [](const aten::TensorApply& apply, const std::vector<at::Tensor>& rhs, const std::vector<at::Tensor>& x,
         bool warm, double shift, std::int64_t max_iter, double tol) {
        return translating_errors([&] { return aten::conjugate_gradient(apply, rhs, x, warm, shift, max_iter, tol); });
      },
      py::arg("apply"), py::arg("rhs"), py::arg("x"), py::arg("warm"), py::arg("shift"), py::arg("max_iter"),
      py::arg("tol"),
      "Solves (H + shift I) x = rhs into x by CG, H p = apply(p) piece by piece; returns (iterations, "
      "stopped on non-positive curvature).");
  solvers.def(
      "two_loop",
      [](const std::vector<at::Tensor>& q, const at::Tensor& s, const at::Tensor& y, const std::vector<double>& rho,
         const std::vector<std::int64_t>& order) {
        translating_errors([&] { aten::two_loop(q, s, y, rho, order); });
      },
      py::arg("q"), py::arg("s_history"), py::arg("y_history"), py::arg("rho"), py::arg("order"),
      "q <- H q (q's pieces) by the L-BFGS two-loop over the flat history rows in order (oldest first).");
  solvers.def(
      "dots",
      [](const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
        return translating_errors([&] { return aten::dots(a, b); });
      },
      py::arg("a"), py::arg("b"), "(a.b, a.a) over the pieces.");
  solvers.def(
      "cholesky_solve",
      [](const at::Tensor& matrix, const at::Tensor& rhs) {
        return translating_errors([&] { return aten::cholesky_solve(matrix, rhs); });
      },
      py::arg("matrix"), py::arg("rhs"), "matrix^-1 rhs in float64 by Cholesky (jitter <= 1e-8 relative on failure).");

  m.def("isa", [] { return std::string(fastoptim_isa::active().isa); }, "The kernel ISA the ops run.");
  // Whether the steps run CUDA tensors (a build with the CUDA kernels against a torch with CUDA).
#if defined(FASTOPTIM_CUDA_OPS)
  m.attr("cuda_ops") = true;
#else
  m.attr("cuda_ops") = false;
#endif
  m.def(
      "available_isas",
      [] {
        std::vector<std::string> names;
        for (int i = 0; i < fastoptim_isa::table_count(); ++i)
          if (fastoptim_isa::cpu_supports(fastoptim_isa::table(i).isa)) names.push_back(fastoptim_isa::table(i).isa);
        return names;
      },
      "Kernel ISAs this build has and this CPU runs, scalar first.");
  m.def(
      "set_isa",
      [](const std::string& isa) {
        if (!fastoptim_isa::set_active(isa.c_str()))
          throw py::value_error("ISA '" + isa + "' is not built in or not supported by this CPU");
      },
      py::arg("isa"), "Chooses the kernel ISA (also settable with the FASTOPTIM_ISA environment variable).");
  // (asked of the kernel library, built with OpenMP; this file is not, so core::max_threads here would say 1)
  m.def("max_threads", &fastoptim_isa::max_threads, "Threads the kernels use (torch.set_num_threads bounds it).");
  m.def(
      "isa_request",
      [] {
        const char* forced = fastoptim_isa::requested_isa();
        return forced ? py::object(py::str(forced)) : py::object(py::none());
      },
      "The FASTOPTIM_ISA the kernels were asked for, if it was ignored (unknown or not supported here), else None.");
}
