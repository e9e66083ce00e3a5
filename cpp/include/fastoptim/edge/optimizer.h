// fastoptim's edge front end: the same rules over float buffers the caller owns, without torch.
//
//   std::vector<fastoptim::edge::Param> params = {{w.data(), w.size()}, {b.data(), b.size()}};
//   fastoptim::edge::AdamW opt(params, [] { fastoptim::rules::Adam::Hyper h; h.lr = 1e-3; return h; }());
//   ...fill the gradients...
//   if (opt.step(grads) != fastoptim::edge::Status::ok) { /* opt.error() says why */ }
//
// - State (the rule's buffers, under torch.optim's names) is allocated once at construction, or
//   lives in memory the caller hands over (static memory on a microcontroller): state_floats()
//   says how much. step() allocates nothing and throws nothing; it returns a Status.
// - The math is the rule's own (cpp/include/fastoptim/rules), run by the same kernels as the
//   Python and libtorch front ends (SIMD chosen at run time, OpenMP when built with it), so a
//   float32 run gives the bits fastoptim's Python class gives.
// - save_state()/load_state() write and read a byte buffer: a versioned header (magic, format
//   version, rule name, hyperparameter count, step, parameter sizes, a checksum) and the state.
// - Every public call either works or returns a Status that names the problem (error() says
//   more): bad parameters, null pointers, a state buffer too small and invalid hyperparameters
//   are found at construction or by the call, and an optimizer that could not be built answers
//   every call with the status of its construction. Hyperparameters change only through
//   set_hyper(), which refuses a change of the state layout (amsgrad, momentum: slots that exist
//   or not) and values out of range.
// - StateFormat::eight_bit keeps the rule's moments in 8 bits (those rules::eight_bit_slots lists),
//   the format of the Python classes' state_bits=8: one byte of code per element and one float
//   scale per block of 256 (of each row for AdamP: rules::code_grid); about a quarter of the state
//   memory.
// - StateFormat::bfloat16 keeps the rule's element state (moments, buffers) in bfloat16, the format of
//   the Python classes' state_dtype=torch.bfloat16: half the state memory; each step computes in
//   float32 from the stored values and rounds the new state to nearest even (every rule but Adafactor).
// - Adafactor, as torch.optim.Adafactor, factors the second moment of a parameter of ndim > 1 over
//   its last two dims (its state slot holds the row factors, then the column factors, of each
//   slice), through the kernels' factored step; give Param::shape for ndim > 2.
// - Every rule is offered. Rules with per-tensor sums (LAMB, LARS, TAdam, AdamP, AMaC) keep work
//   buffers per thread; the constructor runs one step on scratch copies so that they are sized
//   then, and step() from the constructing thread allocates nothing either.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "fastoptim/core/codes8.h"
#include "fastoptim/core/dtypes.h"
#include "fastoptim/kernels/isa.h"
#include "fastoptim/rules/registry.h"

namespace fastoptim::edge {

// One parameter: `numel` floats at `data`, owned by the caller. `rows` (the size of dim 0) and `ndim`
// matter to rules that look at a tensor's shape: AdamP's per-channel view, LARS's exclude_1d, AMaC's
// gradient centralization; a vector (the default) has rows = 1, ndim = 1. With ndim > 1, rows must
// be >= 1 and divide numel; with ndim <= 1 it is not read. `shape` (optional, ndim sizes the caller
// owns, whose product is numel) is read by Adafactor, which factors over the last two dims: it
// needs it for ndim > 2 (a matrix without it is rows x numel / rows).
struct Param {
  float* data;
  std::int64_t numel;
  std::int64_t rows = 1;
  int ndim = 1;
  const std::int64_t* shape = nullptr;
};

// Whether a rule steps its parameters of ndim > 1 by the kernels' factored step
// (KernelTable::adafactor_factored): Adafactor's, whose state slot then holds the factors.
template <class Rule>
constexpr bool factors_matrices() {
  return std::is_same_v<Rule, rules::Adafactor>;
}

enum class Status {
  ok,
  invalid_hyperparameter,  // a value out of its field's range, or a combination the rule refuses
  state_too_small,         // the caller's state buffer holds fewer than state_floats() floats
  buffer_too_small,        // save_state's buffer holds fewer than state_bytes() bytes
  bad_state,               // load_state: not a checkpoint of this optimizer, or a damaged one
  bad_param,               // a Param with numel < 0, ndim < 0, or (ndim > 1) rows that do not divide numel
  null_pointer,            // a null parameter, gradient, state or checkpoint pointer where memory is needed
  state_layout_changed,    // set_hyper would add or remove a state slot (amsgrad, momentum)
  unsupported_format,      // StateFormat::eight_bit for a rule that keeps no state in 8 bits, bfloat16 for Adafactor
};

// How the state is kept: every slot in float32; the rule's 8-bit slots (its moments) as codes,
// one byte per element (rounded up to whole floats per parameter), each followed, after all the
// slots, by its block scales: one float per core::kCodeBlock elements (core/codes8.h); or every
// element slot in bfloat16, two bytes per element (rounded up to whole floats per parameter).
// Per-tensor scalars stay float32 in every format.
enum class StateFormat { float32, eight_bit, bfloat16 };

constexpr std::uint32_t kStateMagic = 0x54504f46;  // "FOPT" little-endian
// Version 2 added the checksum; a version-1 checkpoint is refused as another format version.
constexpr std::uint32_t kStateVersion = 2;

template <class Rule>
class Optimizer {
 public:
  using Hyper = typename Rule::Hyper;
  using Coeffs = typename Rule::template Coeffs<float>;
  static constexpr int kScalarSlots = rules::scalar_slots_of<Rule>::value;
  static constexpr int kAllSlots = Rule::kStateSlots + kScalarSlots;

  // The optimizer owns its state (one allocation, here).
  explicit Optimizer(std::vector<Param> params, const Hyper& hyper = Hyper{}, StateFormat format = StateFormat::float32)
      : params_(std::move(params)), hyper_(hyper), format_(format) {
    if (!checked_construction()) return;
    owned_.resize(state_floats(params_, hyper_, format_));
    attach(owned_.data());
    size_work_buffers();
  }

  // Buffers point into the state: copying would share it; moving keeps it.
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;
  Optimizer(Optimizer&&) = default;
  Optimizer& operator=(Optimizer&&) = default;

  // The state lives in `state`, `capacity` floats the caller owns (at least state_floats()).
  // Check status(): state_too_small when it does not fit.
  Optimizer(std::vector<Param> params, const Hyper& hyper, float* state, std::size_t capacity,
            StateFormat format = StateFormat::float32)
      : params_(std::move(params)), hyper_(hyper), format_(format) {
    if (!checked_construction()) return;
    const std::size_t needed = state_floats(params_, hyper_, format_);
    if (capacity < needed) {
      status_ = fail(Status::state_too_small, "the state buffer is smaller than state_floats()");
      return;
    }
    if (state == nullptr && needed > 0) {
      status_ = fail(Status::null_pointer, "the state buffer is null");
      return;
    }
    attach(state);
    size_work_buffers();
  }

  // Floats of state `params` need under `hyper` in `format` (slots the hyperparameters leave unused
  // take none).
  static std::size_t state_floats(const std::vector<Param>& params, const Hyper& hyper,
                                  StateFormat format = StateFormat::float32) {
    std::size_t total = 0;
    for (int slot = 0; slot < kAllSlots; ++slot)
      if (uses_slot(hyper, slot))
        for (const Param& p : params) total += slot_floats(format, slot, p) + scale_floats(format, slot, p);
    return total;
  }

  const Hyper& hyper() const { return hyper_; }
  // New hyperparameters between steps (a learning-rate schedule). Refused, with nothing changed,
  // when a value is out of range or when they would add or remove a state slot: which slots exist
  // (amsgrad, momentum, centered) was fixed at construction.
  Status set_hyper(const Hyper& hyper) {
    if (status_ != Status::ok) return status_;
    if (const char* message = invalid(hyper)) return fail(Status::invalid_hyperparameter, message);
    for (int slot = 0; slot < kAllSlots; ++slot)
      if (uses_slot(hyper, slot) != uses_slot(hyper_, slot))
        return fail(Status::state_layout_changed,
                    "these hyperparameters add or remove a state slot (amsgrad, momentum, centered, ...); "
                    "build a new optimizer for them");
    hyper_ = hyper;
    return Status::ok;
  }
  // ok, or why the optimizer could not be built (then every call returns it).
  Status status() const { return status_; }
  const char* error() const { return error_; }
  float step_count() const { return step_; }

  // One step. grads[i] holds params[i].numel floats (rules that read no gradient accept nullptr).
  Status step(const float* const* grads) {
    if (status_ != Status::ok) return status_;
    if (rules::reads_grad<Rule>::value) {
      if (grads == nullptr && !params_.empty()) return fail(Status::null_pointer, "the gradient array is null");
      for (std::size_t i = 0; i < params_.size(); ++i)
        if (grads[i] == nullptr && params_[i].numel > 0) return fail(Status::null_pointer, "a gradient pointer is null");
    }
    step_ += 1.0f;  // a float counter, as torch.optim keeps it, so bias corrections match bit for bit
    run(slots_, step_, grads);
    return Status::ok;
  }

  // State slot `slot` (in Rule::kState order) of parameter i, or nullptr when the slot is unused,
  // out of range, kept in 8 bits (see codes()) or in bfloat16 (see bf16_state()), or the optimizer
  // could not be built.
  float* state(int slot, std::size_t i) const {
    if (!has_slot(slot, i) || coded(format_, slot) || narrowed(format_, slot)) return nullptr;
    return static_cast<float*>(slots_[i].state[slot]);
  }
  // A bfloat16 slot's values (the top 16 bits of each float32, one per element), or nullptr for a
  // slot that is not one.
  const std::uint16_t* bf16_state(int slot, std::size_t i) const {
    return has_slot(slot, i) && narrowed(format_, slot) ? static_cast<const std::uint16_t*>(slots_[i].state[slot]) : nullptr;
  }
  // An 8-bit slot's codes (one byte per element) and block scales (one float per core::kCodeBlock
  // elements, restarting at each row for a per-row rule: rules::code_grid; core::decode_block decodes
  // a block), or nullptr for a slot that is not one.
  const std::uint8_t* codes(int slot, std::size_t i) const {
    return has_slot(slot, i) && coded(format_, slot) ? static_cast<const std::uint8_t*>(slots_[i].state[slot]) : nullptr;
  }
  const float* block_scales(int slot, std::size_t i) const {
    return has_slot(slot, i) && coded(format_, slot) ? slots_[i].state_scale[slot] : nullptr;
  }

  // ---- checkpoints ----------------------------------------------------------------------------
  std::size_t state_bytes() const { return header_bytes() + payload_bytes() + sizeof(std::uint64_t); }

  // Writes the checkpoint: the header words, the state floats, then the checksum word.
  Status save_state(void* out, std::size_t capacity) const {
    if (status_ != Status::ok) return status_;
    if (out == nullptr) return fail(Status::null_pointer, "the checkpoint buffer is null");
    if (capacity < state_bytes()) return fail(Status::buffer_too_small, "the checkpoint buffer is smaller than state_bytes()");
    auto* bytes = static_cast<unsigned char*>(out);
    const std::vector<std::uint64_t> header = header_words();
    const std::size_t header_size = header.size() * sizeof(std::uint64_t), payload = payload_bytes();
    std::memcpy(bytes, header.data(), header_size);
    if (payload > 0) std::memcpy(bytes + header_size, state_begin_, payload);  // (no state: state_begin_ may be null)
    const std::uint64_t sum = checksum(bytes, header_size + payload);
    std::memcpy(bytes + header_size + payload, &sum, sizeof(sum));
    return Status::ok;
  }

  // Restores what save_state wrote for the same rule, parameter sizes and state slots. Every
  // header word and the checksum are checked before anything changes.
  Status load_state(const void* in, std::size_t size) {
    if (status_ != Status::ok) return status_;
    if (in == nullptr) return fail(Status::null_pointer, "the checkpoint pointer is null");
    const std::vector<std::uint64_t> expected = header_words();
    const std::size_t words = expected.size(), header_size = words * sizeof(std::uint64_t), payload = payload_bytes();
    if (size != state_bytes()) return fail(Status::bad_state, "the state's size does not match these parameters");
    const auto* bytes = static_cast<const unsigned char*>(in);
    std::vector<std::uint64_t> found(words);
    std::memcpy(found.data(), bytes, header_size);
    if (found[0] != expected[0]) return fail(Status::bad_state, "not a fastoptim state (magic)");
    if (found[1] != expected[1]) return fail(Status::bad_state, "a state of another format version");
    if (found[2] != expected[2]) return fail(Status::bad_state, "the state of another rule");
    for (std::size_t w = 4; w < words; ++w)  // word 3 is the step, checked below
      if (found[w] != expected[w]) return fail(Status::bad_state, "the state of other parameters, state slots or state format");
    std::uint64_t stored_sum = 0;
    std::memcpy(&stored_sum, bytes + header_size + payload, sizeof(stored_sum));
    if (stored_sum != checksum(bytes, header_size + payload)) return fail(Status::bad_state, "the checksum does not match: a damaged checkpoint");
    float step = 0;
    std::memcpy(&step, &found[3], sizeof(float));
    if ((found[3] >> 32) != 0 || !(step >= 0.0f) || step != std::floor(step) || !std::isfinite(step))
      return fail(Status::bad_state, "the step count is not a whole number >= 0");
    if (payload > 0) std::memcpy(state_begin_, bytes + header_size, payload);
    step_ = step;
    return Status::ok;
  }

 private:
  bool has_slot(int slot, std::size_t i) const {
    return status_ == Status::ok && slot >= 0 && slot < kAllSlots && i < slots_.size() && slots_[i].state[slot];
  }

  // Whether slot `slot` is kept in 8 bits in `format`; in bfloat16.
  static bool coded(StateFormat format, int slot) {
    return format == StateFormat::eight_bit && slot < Rule::kStateSlots && (rules::eight_bit_slots<Rule>::value >> slot & 1u);
  }
  static bool narrowed(StateFormat format, int slot) { return format == StateFormat::bfloat16 && slot < Rule::kStateSlots; }
  // Whether parameter p takes the factored step, and its slices of rows x columns (its last two dims).
  static bool factored(const Param& p) { return factors_matrices<Rule>() && p.ndim > 1; }
  static fastoptim_isa::FactoredSlots matrix_view(const Param& p) {
    fastoptim_isa::FactoredSlots view{};
    view.rows = p.shape ? p.shape[p.ndim - 2] : p.rows;
    view.columns = p.shape ? p.shape[p.ndim - 1] : (p.rows > 0 ? p.numel / p.rows : 0);
    view.batches = view.rows * view.columns > 0 ? p.numel / (view.rows * view.columns) : 0;
    return view;
  }

  // The floats slot `slot` of parameter p takes (its codes or bfloat16 values rounded up to whole
  // floats, for an 8-bit or bfloat16 slot; its row and column factors, for a factored one), and
  // those of its block scales.
  static std::size_t slot_floats(StateFormat format, int slot, const Param& p) {
    if (slot >= Rule::kStateSlots) return 1;
    if (factored(p)) {
      const auto view = matrix_view(p);
      return std::size_t(view.batches * (view.rows + view.columns));
    }
    const std::size_t bytes = std::size_t(p.numel) * (coded(format, slot) ? 1 : narrowed(format, slot) ? 2 : sizeof(float));
    return (bytes + sizeof(float) - 1) / sizeof(float);
  }
  static std::size_t scale_floats(StateFormat format, int slot, const Param& p) {
    return coded(format, slot) ? std::size_t(rules::code_grid<Rule>(p.numel, p.ndim > 1 ? p.rows : 1).blocks()) : 0;
  }

  static bool uses_slot(const Hyper& hyper, int slot) {
    if (slot >= Rule::kStateSlots) return true;  // per-tensor scalars always exist
    double values[Hyper::kFieldCount];
    hyper.write(values);
    return core::uses_state<Rule>(values, slot);
  }

  static const char* invalid(const Hyper& hyper) {
    double values[Hyper::kFieldCount];
    hyper.write(values);
    if (core::first_invalid_field<Hyper>(values) >= 0) return "a hyperparameter is out of its range (see the rule's field list)";
    return Rule::invalid_combination(hyper);
  }

  // The parameters and hyperparameters given to a constructor; false (status() says why) when
  // the optimizer cannot be built from them.
  bool checked_construction() {
    for (const Param& p : params_) {
      if (p.numel < 0 || p.ndim < 0 || (p.ndim > 1 && (p.rows < 1 || p.numel % p.rows != 0))) {
        status_ = fail(Status::bad_param, "a parameter has numel < 0, ndim < 0, or rows that do not divide its numel");
        return false;
      }
      if (p.data == nullptr && p.numel > 0) {
        status_ = fail(Status::null_pointer, "a parameter's data pointer is null");
        return false;
      }
      if (!shape_fits(p)) {
        status_ = fail(Status::bad_param, "a parameter's shape does not multiply to its numel, or Adafactor is given a "
                                          "parameter of ndim > 2 without its shape");
        return false;
      }
    }
    if (const char* message = invalid(hyper_)) {
      status_ = fail(Status::invalid_hyperparameter, message);
      return false;
    }
    if (format_ == StateFormat::eight_bit && rules::eight_bit_slots<Rule>::value == 0) {
      status_ = fail(Status::unsupported_format, "this rule keeps no state in 8 bits (StateFormat::eight_bit serves the "
                                                 "moments and momentum buffers of the rules that list them in "
                                                 "rules::eight_bit_slots)");
      return false;
    }
    if (format_ == StateFormat::bfloat16 && factors_matrices<Rule>()) {
      status_ = fail(Status::unsupported_format, "Adafactor keeps its factors in float32 (StateFormat::bfloat16 serves "
                                                 "every other rule)");
      return false;
    }
    return true;
  }

  static bool shape_fits(const Param& p) {
    if (p.shape == nullptr) return !(factored(p) && p.ndim > 2);
    std::int64_t product = 1;
    for (int d = 0; d < p.ndim; ++d) product *= p.shape[d] >= 0 ? p.shape[d] : -1;
    return product == p.numel;
  }

  // Prepares every tensor's coefficients for step `step` and runs the rule's kernel over `slots`.
  void run(std::vector<fastoptim_isa::TensorSlots>& slots, float step, const float* const* grads) {
    for (std::size_t i = 0; i < params_.size(); ++i) {
      rules::StepInfo info{};
      info.step = step;
      info.fresh = step == 1.0f;
      info.numel = params_[i].numel;
      info.matrix = params_[i].ndim > 1;
      info.rows = params_[i].ndim > 1 ? params_[i].rows : 1;
      info.ndim = params_[i].ndim;
      for (int s = 0; s < kScalarSlots; ++s)
        info.scalar_state[s] = slots[i].state[Rule::kStateSlots + s] ? *static_cast<float*>(slots[i].state[Rule::kStateSlots + s]) : 0.0;
      if (rules::advance_scalars<Rule>(hyper_, info))
        for (int s = 0; s < kScalarSlots; ++s)
          if (slots[i].state[Rule::kStateSlots + s]) *static_cast<float*>(slots[i].state[Rule::kStateSlots + s]) = float(info.scalar_next[s]);
      coeffs_[i] = Rule::template prepare<float>(hyper_, info);
      slots[i].grad = rules::reads_grad<Rule>::value ? grads[i] : nullptr;
    }
    if constexpr (factors_matrices<Rule>()) return run_factored(slots);
    (fastoptim_isa::active().*kernels::KernelEntry<Rule>::member)(slots.data(), std::int64_t(slots.size()), coeffs_.data(),
                                                                 fastoptim_isa::Dtype::f32, nullptr);
  }

  // Adafactor's step: the matrices (with elements) by the factored kernel, the others by the
  // rule's, each with its coefficients (into buffers reserved by attach: nothing allocated).
  void run_factored(const std::vector<fastoptim_isa::TensorSlots>& slots) {
    vector_slots_.clear();
    vector_coeffs_.clear();
    matrices_.clear();
    matrix_coeffs_.clear();
    for (std::size_t i = 0; i < params_.size(); ++i) {
      if (!factored(params_[i])) {
        vector_slots_.push_back(slots[i]);
        vector_coeffs_.push_back(coeffs_[i]);
      } else if (params_[i].numel > 0) {
        fastoptim_isa::FactoredSlots matrix = matrix_view(params_[i]);
        matrix.param = slots[i].param;
        matrix.grad = slots[i].grad;
        matrix.row_factor = slots[i].state[Rule::kVariance];  // (the factors, in the variance's slot)
        matrix.column_factor = static_cast<float*>(slots[i].state[Rule::kVariance]) + matrix.batches * matrix.rows;
        matrices_.push_back(matrix);
        matrix_coeffs_.push_back(coeffs_[i]);
      }
    }
    const auto& table = fastoptim_isa::active();
    (table.*kernels::KernelEntry<Rule>::member)(vector_slots_.data(), std::int64_t(vector_slots_.size()),
                                               vector_coeffs_.data(), fastoptim_isa::Dtype::f32, nullptr);
    table.adafactor_factored(matrices_.data(), std::int64_t(matrices_.size()), matrix_coeffs_.data(), fastoptim_isa::Dtype::f32);
  }

  // A rule with per-tensor sums sizes its per-thread work buffers on its first call: make that
  // call here, one step on scratch copies of everything (freed on return), so step() allocates nothing.
  void size_work_buffers() {
    if constexpr (rules::sums_of<Rule>::value > 0) {
      std::vector<std::vector<float>> scratch;
      std::vector<fastoptim_isa::TensorSlots> slots = slots_;
      std::vector<const float*> grads(params_.size());
      for (std::size_t i = 0; i < slots.size(); ++i) {
        const std::size_t n = std::size_t(params_[i].numel);
        scratch.emplace_back(params_[i].data, params_[i].data + n);
        slots[i].param = scratch.back().data();
        scratch.emplace_back(n, 0.0f);
        grads[i] = scratch.back().data();
        auto copy = [&](const void* state, std::size_t floats) {
          const float* from = static_cast<const float*>(state);
          return scratch.emplace_back(from, from + floats).data();
        };
        for (int s = 0; s < kAllSlots; ++s) {
          if (!slots[i].state[s]) continue;
          slots[i].state[s] = copy(slots[i].state[s], slot_floats(format_, s, params_[i]));
          if (coded(format_, s)) slots[i].state_scale[s] = copy(slots[i].state_scale[s], scale_floats(format_, s, params_[i]));
        }
      }
      run(slots, 1.0f, grads.data());
    }
  }

  Status fail(Status status, const char* message) const {
    error_ = message;
    return status;
  }

  void attach(float* state) {
    state_begin_ = state;
    slots_.assign(params_.size(), fastoptim_isa::TensorSlots{});
    coeffs_.resize(params_.size());
    float* next = state;
    // (8-bit slots start at the start value encoded, core::constant_codes; bfloat16 ones at the start
    // value rounded to nearest even, as torch.full_like rounds it)
    auto take = [&next](std::size_t floats, float start) {
      float* taken = next;
      for (std::size_t k = 0; k < floats; ++k) taken[k] = start;
      next += floats;
      return taken;
    };
    const auto start_of = [this](int slot, std::size_t i) { return float(rules::initial_value<Rule>(hyper_, slot, std::int64_t(i))); };
    for (int slot = 0; slot < kAllSlots; ++slot) {
      const bool used = uses_slot(hyper_, slot);
      for (std::size_t i = 0; i < params_.size(); ++i) {
        const float start = start_of(slot, i);
        if (!used) {
          slots_[i].state[slot] = nullptr;
        } else if (coded(format_, slot)) {
          auto* codes = reinterpret_cast<std::uint8_t*>(take(slot_floats(format_, slot, params_[i]), 0.0f));
          std::memset(codes, core::constant_codes(start).code, std::size_t(params_[i].numel));
          slots_[i].state[slot] = codes;
        } else if (narrowed(format_, slot)) {
          auto* values = reinterpret_cast<core::bf16*>(take(slot_floats(format_, slot, params_[i]), 0.0f));
          for (std::int64_t k = 0; k < params_[i].numel; ++k) values[k] = core::float_to_bf16(start);
          slots_[i].state[slot] = values;
        } else {
          slots_[i].state[slot] = take(slot_floats(format_, slot, params_[i]), start);
        }
      }
    }
    for (int slot = 0; slot < kAllSlots; ++slot)
      for (std::size_t i = 0; i < params_.size(); ++i)
        if (slots_[i].state[slot] && coded(format_, slot))
          slots_[i].state_scale[slot] = take(scale_floats(format_, slot, params_[i]), core::constant_codes(start_of(slot, i)).scale);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      slots_[i].param = params_[i].data;
      slots_[i].numel = params_[i].numel;
      slots_[i].rows = params_[i].ndim > 1 ? params_[i].rows : 1;
      slots_[i].eight_bit_state = format_ == StateFormat::eight_bit;
      slots_[i].bf16_state = format_ == StateFormat::bfloat16;
    }
    if constexpr (factors_matrices<Rule>()) {
      vector_slots_.reserve(params_.size());
      vector_coeffs_.reserve(params_.size());
      matrices_.reserve(params_.size());
      matrix_coeffs_.reserve(params_.size());
    }
    fastoptim_isa::active();  // chooses the kernel table now, not inside the first step
  }

  std::size_t header_bytes() const { return header_words().size() * sizeof(std::uint64_t); }
  std::size_t payload_bytes() const { return state_floats(params_, hyper_, format_) * sizeof(float); }

  // FNV-1a over the header and the state, so a damaged or forged payload is refused.
  static std::uint64_t checksum(const unsigned char* bytes, std::size_t size) {
    std::uint64_t hash = 1469598103934665603ull;
    for (std::size_t k = 0; k < size; ++k) hash = (hash ^ bytes[k]) * 1099511628211ull;
    return hash;
  }

  // magic, version, rule name (FNV-1a), step, hyperparameter count, slot mask (its top bit: 8-bit
  // state; the one below: bfloat16 state), parameter count, sizes (the checksum word follows the state)
  std::vector<std::uint64_t> header_words() const {
    const std::uint64_t name_hash = checksum(reinterpret_cast<const unsigned char*>(Rule::kName), std::strlen(Rule::kName));
    std::uint64_t step_bits = 0;
    std::memcpy(&step_bits, &step_, sizeof(float));
    std::uint64_t slot_mask = 0;
    for (int slot = 0; slot < kAllSlots; ++slot)
      if (uses_slot(hyper_, slot)) slot_mask |= std::uint64_t(1) << slot;
    if (format_ == StateFormat::eight_bit) slot_mask |= std::uint64_t(1) << 63;
    if (format_ == StateFormat::bfloat16) slot_mask |= std::uint64_t(1) << 62;
    std::vector<std::uint64_t> words = {kStateMagic, kStateVersion, name_hash, step_bits, Hyper::kFieldCount, slot_mask,
                                        params_.size()};
    for (const Param& p : params_) {
      words.push_back(std::uint64_t(p.numel));
      if (factored(p)) words.push_back(std::uint64_t(matrix_view(p).columns));  // (the factors' split)
    }
    return words;
  }

  std::vector<Param> params_;
  Hyper hyper_;
  StateFormat format_ = StateFormat::float32;
  std::vector<float> owned_;
  float* state_begin_ = nullptr;
  std::vector<fastoptim_isa::TensorSlots> slots_;
  std::vector<Coeffs> coeffs_;
  // (Adafactor's: the call's vectors and matrices, refilled each step)
  std::vector<fastoptim_isa::TensorSlots> vector_slots_;
  std::vector<Coeffs> vector_coeffs_, matrix_coeffs_;
  std::vector<fastoptim_isa::FactoredSlots> matrices_;
  float step_ = 0.0f;
  Status status_ = Status::ok;
  mutable const char* error_ = "";  // the last call's problem (const calls report theirs too)
};

// fastoptim::edge::<Rule type> for every rule of the catalogue (rules/registry.h).
#define FASTOPTIM_EDGE_ALIAS(Type, name) using Type = Optimizer<rules::Type>;
FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_EDGE_ALIAS)
#undef FASTOPTIM_EDGE_ALIAS

// AdamW: the Adam rule with its AdamW preset (decoupled weight decay, 1e-2).
inline rules::Adam::Hyper adamw_defaults() { return rules::Adam::adamw_preset(); }
class AdamW : public Optimizer<rules::Adam> {
 public:
  explicit AdamW(std::vector<Param> params, const Hyper& hyper = adamw_defaults(), StateFormat format = StateFormat::float32)
      : Optimizer(std::move(params), hyper, format) {}
  AdamW(std::vector<Param> params, const Hyper& hyper, float* state, std::size_t capacity,
        StateFormat format = StateFormat::float32)
      : Optimizer(std::move(params), hyper, state, capacity, format) {}
};

}  // namespace fastoptim::edge
