// fastoptim's libtorch front end: for every optimizer rule, a torch::optim::Optimizer with a
// torch-style options class, all from one template over the rule.
//
//   #include <fastoptim/optim/optimizer.h>
//   fastoptim::optim::AdamW opt(model->parameters(), fastoptim::optim::AdamWOptions(1e-3).weight_decay(1e-2));
//   loss.backward(); opt.step();
//   torch::save(opt, "opt.pt"); torch::load(opt, "opt.pt");
//
// - <Type>Options has one chainable setter per field of the rule (the field list of
//   cpp/include/fastoptim/rules/<name>.h, under the same names: beta1(), beta2(), amsgrad(1), ...),
//   and is per param group as torch's options are (OptimizerParamGroup).
// - The state of each parameter is <Type>ParamState: the rule's state tensors under torch.optim's
//   names and a float32 `step`, saved and loaded by torch::save / torch::load.
// - step() calls the ATen-layer entry the Python classes call (fastoptim::aten::elementwise_step),
//   so both give the same bits. Every group is checked before any tensor changes. CUDA parameters
//   step on their device where fastoptim was built with its CUDA kernels (their `step` lives there).
// AdamW is Adam's options from the rule's AdamW preset (decoupled weight decay, 1e-2).
#pragma once
#include <torch/optim/optimizer.h>
#include <torch/optim/serialize.h>
#include <torch/serialize/archive.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "fastoptim/aten/elementwise_ops.h"
#include "fastoptim/core/codes8.h"
#include "fastoptim/rules/registry.h"

namespace fastoptim::optim {

// The state of one parameter: the rule's state slots (undefined where unused), its step, with
// stochastic rounding its rounding key (int64 seed, position, count: the Python classes' `rounding_key`),
// and with 8-bit state the block scales of its 8-bit slots (the Python classes' `<name>_scale`).
template <class Rule>
struct RuleParamState : torch::optim::OptimizerParamState {
  static constexpr int kAllSlots = Rule::kStateSlots + rules::scalar_slots_of<Rule>::value;
  std::vector<at::Tensor> slots = std::vector<at::Tensor>(kAllSlots);
  std::vector<at::Tensor> scales = std::vector<at::Tensor>(Rule::kStateSlots);
  at::Tensor step, rounding_key;

  std::unique_ptr<torch::optim::OptimizerParamState> clone() const override {
    return std::make_unique<RuleParamState>(*this);
  }
  void serialize(torch::serialize::OutputArchive& archive) const override {
    if (step.defined()) archive.write("step", step);
    if (rounding_key.defined()) archive.write("rounding_key", rounding_key);
    for (int s = 0; s < kAllSlots; ++s)
      if (slots[s].defined()) archive.write(Rule::kState[s].name, slots[s]);
    for (int s = 0; s < Rule::kStateSlots; ++s)
      if (scales[s].defined()) archive.write(std::string(Rule::kState[s].name) + "_scale", scales[s]);
  }
  void serialize(torch::serialize::InputArchive& archive) override {
    at::Tensor value;
    if (archive.try_read("step", value)) step = value;
    at::Tensor key;
    if (archive.try_read("rounding_key", key)) rounding_key = key;
    for (int s = 0; s < kAllSlots; ++s) {
      at::Tensor slot;
      if (archive.try_read(Rule::kState[s].name, slot)) slots[s] = slot;
    }
    for (int s = 0; s < Rule::kStateSlots; ++s) {
      at::Tensor scale;
      if (archive.try_read(std::string(Rule::kState[s].name) + "_scale", scale)) scales[s] = scale;
    }
  }
};

// Where a parameter's step counter and rounding key live: on the CPU, or on its CUDA device (where
// the kernels read and advance them).
inline at::Device counter_device(const at::Tensor& p) { return p.is_cuda() ? p.device() : at::Device(torch::kCPU); }

// A new rounding key for `p`: (seed, its position among all parameters, count 0).
inline at::Tensor new_rounding_key(std::int64_t seed, std::int64_t position, const at::Tensor& p) {
  return torch::tensor({seed, position, std::int64_t(0)}, torch::kInt64).to(counter_device(p));
}

// The machinery every options class shares; Derived holds the rule's fields (generated below).
// Beside them, every class's stochastic_rounding(true) (bf16 parameters stored rounded up or down
// at random, as the Python classes' stochastic_rounding=True) with rounding_seed(seed) (0 unless set;
// the Python classes draw theirs from torch's generator).
template <class Derived, class Rule>
struct RuleOptions : torch::optim::OptimizerOptions {
  using rule = Rule;
  std::unique_ptr<torch::optim::OptimizerOptions> clone() const override {
    return std::make_unique<Derived>(static_cast<const Derived&>(*this));
  }
  double get_lr() const override { return static_cast<const Derived&>(*this).lr(); }
  void set_lr(const double lr) override { static_cast<Derived&>(*this).lr(lr); }

  Derived& stochastic_rounding(bool on) {
    stochastic_rounding_ = on;
    return static_cast<Derived&>(*this);
  }
  bool stochastic_rounding() const { return stochastic_rounding_; }
  Derived& rounding_seed(std::int64_t seed) {
    rounding_seed_ = seed;
    return static_cast<Derived&>(*this);
  }
  std::int64_t rounding_seed() const { return rounding_seed_; }
  // bf16_state(true): float32 parameters keep their element state in bf16 (the Python classes'
  // state_dtype=torch.bfloat16); other parameters keep theirs in their own dtype.
  Derived& bf16_state(bool on) {
    bf16_state_ = on;
    return static_cast<Derived&>(*this);
  }
  bool bf16_state() const { return bf16_state_; }
  // eight_bit_state(true): the rule's moments kept in 8 bits with a scale per block of 256 (the
  // Python classes' state_bits=8: the rules whose rules::eight_bit_slots lists slots; float32 and bf16
  // parameters; a per-row rule's (AdamP's, AMaC's) blocks restart at each row of dim 0: rules::code_grid).
  Derived& eight_bit_state(bool on) {
    eight_bit_state_ = on;
    return static_cast<Derived&>(*this);
  }
  bool eight_bit_state() const { return eight_bit_state_; }
  // The dtype of a new element state tensor of a parameter of dtype `param`.
  at::ScalarType state_dtype_for(at::ScalarType param) const {
    return bf16_state_ && param == at::kFloat ? at::kBFloat16 : param;
  }

 protected:
  void save_precision(torch::serialize::OutputArchive& archive) const {
    archive.write("stochastic_rounding", c10::IValue(stochastic_rounding_));
    archive.write("rounding_seed", c10::IValue(rounding_seed_));
    archive.write("bf16_state", c10::IValue(bf16_state_));
    archive.write("eight_bit_state", c10::IValue(eight_bit_state_));
  }
  void load_precision(torch::serialize::InputArchive& archive) {
    c10::IValue value;
    if (archive.try_read("stochastic_rounding", value)) stochastic_rounding_ = value.toBool();
    if (archive.try_read("rounding_seed", value)) rounding_seed_ = value.toInt();
    if (archive.try_read("bf16_state", value)) bf16_state_ = value.toBool();
    if (archive.try_read("eight_bit_state", value)) eight_bit_state_ = value.toBool();
  }

 private:
  bool stochastic_rounding_ = false, bf16_state_ = false, eight_bit_state_ = false;
  std::int64_t rounding_seed_ = 0;
};

#define FASTOPTIM_OPTION(field, default_value, check) TORCH_ARG(double, field) = default_value;
#define FASTOPTIM_OPTION_VALUE(field, default_value, check) out.push_back(field##_);
#define FASTOPTIM_OPTION_FROM(field, default_value, check) options.field##_ = values.at(i++);
#define FASTOPTIM_OPTION_SAVE(field, default_value, check) archive.write(#field, c10::IValue(field##_));
#define FASTOPTIM_OPTION_LOAD(field, default_value, check)  \
  {                                                         \
    c10::IValue value;                                      \
    if (archive.try_read(#field, value)) field##_ = value.toDouble(); \
  }
#define FASTOPTIM_OPTIONS_CLASS(Type, name)                                                      \
  struct Type##Options : RuleOptions<Type##Options, rules::Type> {                              \
    Type##Options() = default;                                                                  \
    explicit Type##Options(double learning_rate) { lr(learning_rate); }                         \
    /* options holding hyperparameters of the rule (a preset: rules::Adam::adamw_preset()) */   \
    explicit Type##Options(const rules::Type::Hyper& hyper) {                                   \
      std::vector<double> values(rules::Type::Hyper::kFieldCount);                              \
      hyper.write(values.data());                                                               \
      *this = from_values(values);                                                              \
    }                                                                                           \
    FASTOPTIM_FIELDS_##name(FASTOPTIM_OPTION)                                                    \
                                                                                                \
   public: /* (TORCH_ARG leaves its member private) */                                         \
    /* the flat hyperparameter vector the ATen layer takes, in field order */                   \
    std::vector<double> values() const {                                                        \
      std::vector<double> out;                                                                  \
      FASTOPTIM_FIELDS_##name(FASTOPTIM_OPTION_VALUE) return out;                                \
    }                                                                                           \
    /* options from that vector (what a Python class of this rule hands its step) */           \
    static Type##Options from_values(const std::vector<double>& values) {                      \
      Type##Options options;                                                                    \
      std::size_t i = 0;                                                                        \
      FASTOPTIM_FIELDS_##name(FASTOPTIM_OPTION_FROM) return options;                             \
    }                                                                                           \
    void serialize(torch::serialize::OutputArchive& archive) const override {                   \
      FASTOPTIM_FIELDS_##name(FASTOPTIM_OPTION_SAVE) save_precision(archive);                     \
    }                                                                                           \
    void serialize(torch::serialize::InputArchive& archive) override {                          \
      FASTOPTIM_FIELDS_##name(FASTOPTIM_OPTION_LOAD) load_precision(archive);                     \
    }                                                                                           \
  };
FASTOPTIM_OPTIMIZER_RULES(FASTOPTIM_OPTIONS_CLASS)
FASTOPTIM_OPTIONS_CLASS(Adafactor, adafactor)  // (a helper rule: Adafactor's class is its own, below)
#undef FASTOPTIM_OPTIONS_CLASS

// What the classes here share: the closure, each group's step gathered (Derived::gather(group) gives
// a Work with the state it creates in `created`), every group checked before any tensor changes
// (Derived::run(work, check_only)), the created state committed after its step, and torch::save/load.
template <class Derived, class ParamState, class Options>
class CheckedStepOptimizer : public torch::optim::Optimizer {
 public:
  explicit CheckedStepOptimizer(const std::vector<torch::optim::OptimizerParamGroup>& groups, const Options& defaults = {})
      : Optimizer(groups, std::make_unique<Options>(defaults)) {}
  explicit CheckedStepOptimizer(std::vector<at::Tensor> params, const Options& defaults = {})
      : Optimizer(std::move(params), std::make_unique<Options>(defaults)) {}

  torch::Tensor step(LossClosure closure = nullptr) override {
    at::NoGradGuard no_grad;
    torch::Tensor loss;
    if (closure) {
      at::AutoGradMode enable_grad(true);
      loss = closure();
    }
    auto& self = static_cast<Derived&>(*this);
    std::vector<typename Derived::Work> work;
    for (auto& group : param_groups()) work.push_back(self.gather(group));
    for (const auto& w : work) Derived::run(w, /*check_only=*/true);  // every group first: a bad one changes nothing
    for (auto& w : work) {
      Derived::run(w, /*check_only=*/false);
      for (auto& [key, created] : w.created) state()[key] = std::move(created);
    }
    return loss;
  }

  void save(torch::serialize::OutputArchive& archive) const override {
    torch::optim::serialize<ParamState, Options>(archive, *this);
  }
  void load(torch::serialize::InputArchive& archive) override { torch::optim::serialize<ParamState, Options>(archive, *this); }

 protected:
  // The position among all parameters of all groups of `group`'s first parameter (the key of its
  // start values and rounding bits, as the Python classes count it).
  std::int64_t first_position(const torch::optim::OptimizerParamGroup& group) const {
    std::int64_t position = 0;
    for (const auto& g : param_groups()) {
      if (&g == &group) break;
      position += std::int64_t(g.params().size());
    }
    return position;
  }
};

// One torch::optim::Optimizer for any rule.
template <class Rule, class Options>
class RuleOptimizer : public CheckedStepOptimizer<RuleOptimizer<Rule, Options>, RuleParamState<Rule>, Options> {
  using Base = CheckedStepOptimizer<RuleOptimizer<Rule, Options>, RuleParamState<Rule>, Options>;
  friend Base;

 public:
  using ParamState = RuleParamState<Rule>;
  using Base::Base;

 private:
  struct Work {
    std::vector<at::Tensor> params, grads, state, steps, rounding;
    std::vector<char> fresh;  // (std::vector<bool> has no data())
    std::vector<double> hyper;
    std::vector<std::pair<void*, std::unique_ptr<ParamState>>> created;
  };

  Work gather(torch::optim::OptimizerParamGroup& group) {
    Work w;
    const auto& options = static_cast<const Options&>(group.options());
    w.hyper = options.values();
    const auto h = Rule::Hyper::from(w.hyper.data());
    std::vector<int> used;
    for (int s = 0; s < ParamState::kAllSlots; ++s)
      if (s >= Rule::kStateSlots || core::uses_state<Rule>(w.hyper.data(), s)) used.push_back(s);
    // With 8-bit state, the rule's 8-bit slots hold codes, and their scales follow the slots.
    const bool eight_bit = options.eight_bit_state();
    constexpr unsigned kEightBit = rules::eight_bit_slots<Rule>::value;
    TORCH_CHECK_VALUE(!eight_bit || kEightBit != 0, Rule::kName, " keeps no state in 8 bits (eight_bit_state serves the "
                      "moments and momentum buffers of the rules that list them in rules::eight_bit_slots)");
    TORCH_CHECK_VALUE(!eight_bit || !options.bf16_state(), "eight_bit_state and bf16_state cannot be combined");
    std::vector<int> coded;  // indices into `used`
    for (std::size_t u = 0; u < used.size() && eight_bit; ++u)
      if (used[u] < Rule::kStateSlots && (kEightBit >> used[u] & 1u)) coded.push_back(int(u));
    std::vector<std::vector<at::Tensor>> columns(used.size() + coded.size());
    std::int64_t position = this->first_position(group) - 1;  // (advanced before each parameter)
    for (const at::Tensor& p : group.params()) {
      ++position;
      if (!p.grad().defined()) continue;
      void* key = p.unsafeGetTensorImpl();
      auto found = this->state().find(key);
      ParamState* st = found == this->state().end() ? nullptr : static_cast<ParamState*>(found->second.get());
      bool fresh = false;
      if (st == nullptr) {
        auto created = std::make_unique<ParamState>();
        // (on a CUDA parameter's device, where the CUDA kernels read and advance it)
        created->step = torch::zeros({}, torch::dtype(torch::kFloat32).device(counter_device(p)));
        st = created.get();
        w.created.emplace_back(key, std::move(created));
      }
      for (std::size_t u = 0; u < used.size(); ++u) {
        const int s = used[u];
        if (!st->slots[s].defined()) {
          const double start = rules::initial_value<Rule>(h, s, position);
          const bool in_codes = std::find(coded.begin(), coded.end(), int(u)) != coded.end();
          if (in_codes) {  // (8-bit slots start at their start value encoded: zero is code 0, scale 0)
            const core::ConstantCodes filled = core::constant_codes(float(start));
            st->slots[s] = at::full_like(p, filled.code, p.options().dtype(at::kByte), at::MemoryFormat::Preserve);
            const std::int64_t blocks = rules::code_grid<Rule>(p.numel(), p.dim() > 1 ? p.size(0) : 1).blocks();
            st->scales[s] = torch::full({blocks}, filled.scale, p.options().dtype(at::kFloat));
          } else {
            st->slots[s] = s < Rule::kStateSlots
                               ? at::full_like(p, start, p.options().dtype(options.state_dtype_for(p.scalar_type())),
                                               at::MemoryFormat::Preserve)
                               : torch::full({1}, start, p.options().dtype(p.scalar_type() == at::kDouble ? at::kDouble : at::kFloat));
          }
          fresh = fresh || s < Rule::kStateSlots;
        }
        columns[u].push_back(st->slots[s]);
      }
      for (std::size_t c = 0; c < coded.size(); ++c) columns[used.size() + c].push_back(st->scales[used[size_t(coded[c])]]);
      if (options.stochastic_rounding()) {
        if (!st->rounding_key.defined()) st->rounding_key = new_rounding_key(options.rounding_seed(), position, p);
        w.rounding.push_back(st->rounding_key);
      }
      w.params.push_back(p);
      w.grads.push_back(p.grad().contiguous());
      if (Rule::kCountsSteps) w.steps.push_back(st->step);
      w.fresh.push_back(fresh);
    }
    for (auto& column : columns) w.state.insert(w.state.end(), column.begin(), column.end());
    return w;
  }

  static void run(const Work& w, bool check_only) {
    std::unique_ptr<bool[]> fresh(new bool[w.fresh.size()]);
    for (std::size_t i = 0; i < w.fresh.size(); ++i) fresh[i] = w.fresh[i];
    aten::elementwise_step<Rule>(w.params, w.grads, w.state, w.steps, c10::ArrayRef<bool>(fresh.get(), w.fresh.size()), w.hyper,
                                 std::nullopt, std::nullopt, check_only, w.rounding);
  }
};

#define FASTOPTIM_OPTIMIZER_CLASS(Type, name)                       \
  using Type##ParamState = RuleParamState<rules::Type>;             \
  using Type = RuleOptimizer<rules::Type, Type##Options>;
FASTOPTIM_OPTIMIZER_RULES(FASTOPTIM_OPTIMIZER_CLASS)
#undef FASTOPTIM_OPTIMIZER_CLASS

// AdamW: Adam's rule and options, started from the rule's AdamW preset.
struct AdamWOptions : AdamOptions {
  AdamWOptions() : AdamOptions(rules::Adam::adamw_preset()) {}
  explicit AdamWOptions(double learning_rate) : AdamWOptions() { lr(learning_rate); }
};
// (The setters return AdamOptions&, so AdamW takes AdamOptions; start them from AdamWOptions.)
class AdamW : public RuleOptimizer<rules::Adam, AdamOptions> {
 public:
  explicit AdamW(std::vector<at::Tensor> params, const AdamOptions& defaults = AdamWOptions())
      : RuleOptimizer(std::move(params), defaults) {}
  explicit AdamW(const std::vector<torch::optim::OptimizerParamGroup>& groups, const AdamOptions& defaults = AdamWOptions())
      : RuleOptimizer(groups, defaults) {}
};

// Adafactor: torch.optim.Adafactor's state (`row_var` and `col_var` of each tensor of two or more
// dims, factored over its last two; `variance` of each vector; `step`), stepped by the ATen layer's
// two entries the Python class calls (the rule's vector step, and the factored step of matrices).
// eps1 = -1 is torch's None (the dtype's epsilon). Parameters must be contiguous.
struct AdafactorParamState : torch::optim::OptimizerParamState {
  at::Tensor step, variance, row_var, col_var, rounding_key;

  std::unique_ptr<torch::optim::OptimizerParamState> clone() const override {
    return std::make_unique<AdafactorParamState>(*this);
  }
  void serialize(torch::serialize::OutputArchive& archive) const override {
    for (const auto& [name, tensor] : named())
      if (tensor->defined()) archive.write(name, *tensor);
  }
  void serialize(torch::serialize::InputArchive& archive) override {
    for (const auto& [name, tensor] : named()) archive.try_read(name, *tensor);
  }

 private:
  std::vector<std::pair<const char*, at::Tensor*>> named() const {
    auto* self = const_cast<AdafactorParamState*>(this);
    return {{"step", &self->step}, {"variance", &self->variance}, {"row_var", &self->row_var}, {"col_var", &self->col_var},
            {"rounding_key", &self->rounding_key}};
  }
};

class Adafactor : public CheckedStepOptimizer<Adafactor, AdafactorParamState, AdafactorOptions> {
  using Base = CheckedStepOptimizer<Adafactor, AdafactorParamState, AdafactorOptions>;
  friend Base;

 public:
  using Base::Base;

 private:
  struct Work {
    std::vector<double> hyper;
    std::vector<at::Tensor> vectors, vector_grads, variances, vector_steps, vector_rounding;
    std::vector<at::Tensor> matrices, matrix_grads, row_vars, col_vars, matrix_steps, matrix_rounding;
    std::vector<std::pair<void*, std::unique_ptr<AdafactorParamState>>> created;
  };

  Work gather(torch::optim::OptimizerParamGroup& group) {
    Work w;
    const auto& options = static_cast<const AdafactorOptions&>(group.options());
    w.hyper = options.values();
    std::int64_t position = first_position(group) - 1;  // (advanced before each parameter)
    for (const at::Tensor& p : group.params()) {
      ++position;
      if (!p.grad().defined()) continue;
      void* key = p.unsafeGetTensorImpl();
      auto found = state().find(key);
      auto* st = found == state().end() ? nullptr : static_cast<AdafactorParamState*>(found->second.get());
      if (st == nullptr) {
        auto created = std::make_unique<AdafactorParamState>();
        created->step = torch::zeros({}, torch::kFloat32);
        st = created.get();
        w.created.emplace_back(key, std::move(created));
      }
      if (p.dim() > 1) {
        if (!st->row_var.defined()) st->row_var = at::zeros(factor_shape(p, 1), p.options());
        if (!st->col_var.defined()) st->col_var = at::zeros(factor_shape(p, 2), p.options());
        w.matrices.push_back(p);
        w.matrix_grads.push_back(p.grad().contiguous());
        w.row_vars.push_back(st->row_var);
        w.col_vars.push_back(st->col_var);
        w.matrix_steps.push_back(st->step);
        if (options.stochastic_rounding()) w.matrix_rounding.push_back(rounding_key_of(*st, options, position, p));
      } else {
        if (!st->variance.defined()) st->variance = at::zeros_like(p);
        w.vectors.push_back(p);
        w.vector_grads.push_back(p.grad().contiguous());
        w.variances.push_back(st->variance);
        w.vector_steps.push_back(st->step);
        if (options.stochastic_rounding()) w.vector_rounding.push_back(rounding_key_of(*st, options, position, p));
      }
    }
    return w;
  }

  static const at::Tensor& rounding_key_of(AdafactorParamState& st, const AdafactorOptions& options, std::int64_t position,
                                          const at::Tensor& p) {
    if (!st.rounding_key.defined()) st.rounding_key = new_rounding_key(options.rounding_seed(), position, p);
    return st.rounding_key;
  }

  // The parameter's shape with dim -from_end (1: the last) set to 1: torch's row_var, col_var.
  static std::vector<std::int64_t> factor_shape(const at::Tensor& p, int from_end) {
    std::vector<std::int64_t> shape(p.sizes().begin(), p.sizes().end());
    shape[shape.size() - std::size_t(from_end)] = 1;
    return shape;
  }

  static void run(const Work& w, bool check_only) {
    aten::elementwise_step<rules::Adafactor>(w.vectors, w.vector_grads, w.variances, w.vector_steps, {}, w.hyper,
                                             std::nullopt, std::nullopt, check_only, w.vector_rounding);
    aten::adafactor_factored_step(w.matrices, w.matrix_grads, w.row_vars, w.col_vars, w.matrix_steps, w.hyper,
                                  std::nullopt, check_only, w.matrix_rounding);
  }
};

}  // namespace fastoptim::optim
