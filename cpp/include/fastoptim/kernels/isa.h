// The boundary between per-ISA kernel code and everything else. Each per-ISA translation unit is
// compiled with its own target flags and with the `fastoptim` namespace renamed (see CMakeLists),
// so its inline functions can never be merged with another ISA's by the linker; what crosses the
// boundary is only the plain data and function pointers declared here, in a namespace of its own.
#pragma once
#include <cstdint>

#include "fastoptim/rules/registry.h"

namespace fastoptim_isa {

enum class Dtype : int { f32 = 0, f64 = 1, bf16 = 2, f16 = 3 };

constexpr int kMaxStateSlots = 5;

// One tensor of a call: raw pointers into contiguous memory of one storage dtype. A state slot
// the configuration does not use is nullptr. A rule's per-tensor scalar state (its last
// kScalarSlots slots) points at one value of the compute type. `rows` is the size of dim 0 for
// tensors of ndim > 1 and 1 otherwise; only rules with per-row sums read it. `first_index` is the
// index of element 0 within the whole tensor (nonzero for a row of it), for rules keyed by index.
// With `stochastic_rounding`, a bf16 parameter is stored rounded up or down at random, its bits
// keyed by (rounding_seed, rounding_stream, rounding_step, element index) (parts/philox.h); other
// dtypes ignore it. With `bf16_state` (float32 parameters only, every tensor of a call alike) the
// element state slots hold bf16, each value rounded to nearest even when stored. With
// `eight_bit_state` (float32 and bf16 parameters; every tensor of a call alike) the rule's 8-bit
// slots (rules::eight_bit_slots) whose `state_scale` is set hold core::code8 bytes, one scale per
// block of core::kCodeBlock elements at state_scale (core/codes8.h; blocks restart at each row for
// a per-row rule: rules::code_grid); the others the parameter's dtype.
struct TensorSlots {
  void* param;
  const void* grad;
  void* state[kMaxStateSlots];
  std::int64_t numel;
  std::int64_t rows = 1;
  std::int64_t first_index = 0;
  bool stochastic_rounding = false;
  std::uint64_t rounding_seed = 0;
  std::uint32_t rounding_stream = 0, rounding_step = 0;
  bool bf16_state = false;
  bool eight_bit_state = false;
  float* state_scale[kMaxStateSlots] = {};
};

// A step of a rule with per-tensor sums split at its sums, so that the caller can add up the sums of
// a tensor's shards between the halves (a sharded tensor's sums are the sums of its shards): `first`
// runs pass 1 and writes each tensor's sums into `sums` (kSums values per tensor of the call, in its
// order) and steps in full the tensors whose step needs no sums; `second` takes `sums` (added up) and
// runs finish and pass 2 of the others. A per-row rule with a row summary (rules::row_summary_of,
// for shards of whole rows) writes each tensor's summary of its rows instead, which the caller
// combines; its `second` sums the rows again (pass 1 stores no state in either half) and finishes
// them with the combined summary.
enum class SumsPass : std::uint8_t { first, second };
struct SumsExchange {
  SumsPass pass;
  double* sums;
};

// Runs one element-wise rule over `count` tensors of storage dtype `dtype`. `coeffs` points at
// `count` Rule::Coeffs<T> (T = double for f64 storage, float otherwise), one per tensor.
// `exchange`: null for a whole step, else the half of a split step (a two-pass rule's only).
using ElementwiseKernel = void (*)(const TensorSlots* tensors, std::int64_t count, const void* coeffs, Dtype dtype,
                                   const SumsExchange* exchange);

// One factored tensor of a call (Adafactor's matrices): the parameter and gradient seen as
// `batches` slices of rows x columns (the last two dims, row-major), and per slice a factor per row
// and one per column, all contiguous and of one storage dtype.
struct FactoredSlots {
  void* param;
  const void* grad;
  void* row_factor;     // batches x rows
  void* column_factor;  // batches x columns
  std::int64_t batches, rows, columns;
  bool stochastic_rounding = false;  // (as TensorSlots')
  std::uint64_t rounding_seed = 0;
  std::uint32_t rounding_stream = 0, rounding_step = 0;
  std::int64_t first_index = 0;  // the index of element 0 in the whole tensor (a shard's; keys the rounding)
  // A sharded tensor (a DTensor's local shard) steps in three calls, its front end adding up across
  // the shards between them what each call leaves in `factor_sums` and `update_sums`; phase 0 is the
  // whole step in one call. `split` says what the shards cut: 0 whole slices (or nothing), 1 rows
  // (the column factors' sums and the row factors' total cross shards), 2 columns (the rows' sums).
  //   phase 1: rows  -> the row factors moved; factor_sums per slice {sum of R, each column's sum of g^2}
  //            columns -> the column factors moved; factor_sums per slice {each row's sum of g^2}
  //            slices -> the factors moved; update_sums {sum of u^2, sum of theta^2}
  //   phase 2: rows, columns -> the other factors moved from the added-up factor_sums; update_sums
  //   phase 3: the update, from the added-up update_sums (and, for rows, factor_sums' sum of R)
  // The means divide by the whole tensor's rows and columns.
  int phase = 0, split = 0;
  std::int64_t whole_rows = 0, whole_columns = 0;
  double* factor_sums = nullptr;
  double* update_sums = nullptr;
};
// Runs a factored rule's step over `count` tensors; `coeffs` as for ElementwiseKernel.
using FactoredKernel = void (*)(const FactoredSlots* tensors, std::int64_t count, const void* coeffs, Dtype dtype);

// The solvers' vector algebra (kernels/vector_passes.h). A vector of the solver's space is one
// piece per parameter, all vectors cut alike: piece t has sizes[t] elements of `dtype` (f32 or f64)
// at pieces[t]. Sums are taken in the storage type over fixed blocks (the same bits for any thread
// count and ISA), then added piece by piece in double.
struct Segments {
  const std::int64_t* sizes;
  std::int64_t count;
  Dtype dtype;
};
struct VectorKernels {
  // out = {a.b, a.a}
  void (*dots)(const Segments& s, const void* const* a, const void* const* b, double* out);
  // x += alpha p (unless x is null); r -= alpha (hp + shift p); returns r.r
  double (*cg_update)(const Segments& s, void* const* x, void* const* r, const void* const* p, const void* const* hp,
                      double alpha, double shift);
  // y = a y + b u (u may be null: y = a y); returns w.y (0 when w is null)
  double (*axpby_dot)(const Segments& s, void* const* y, double a, const void* const* u, double b,
                      const void* const* w);
  // Solves M x = rhs for the n x n symmetric positive definite M (row-major, float64; only its
  // lower triangle is read) by Cholesky, adding jitter * mean|diag M| to the diagonal when the
  // factorisation fails, for jitter in 0, 1e-12, 1e-10, 1e-8. Returns the jitter used, or -1 when
  // every factorisation failed (x is then untouched).
  double (*cholesky_solve)(const double* matrix, std::int64_t n, const double* rhs, double* x);
};

struct KernelTable {
  const char* isa;
#define FASTOPTIM_TABLE_ENTRY(Type, name) ElementwiseKernel name;
  FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_TABLE_ENTRY)
#undef FASTOPTIM_TABLE_ENTRY
  VectorKernels vector;
  FactoredKernel adafactor_factored;
};

// The tables this build has, best last; "scalar" (one lane, the reference path) is always there.
int table_count();
const KernelTable& table(int index);
// The table the ops use: the best one this CPU supports, unless FASTOPTIM_ISA or set_active() chose.
const KernelTable& active();
// Chooses a table by name; false (and nothing changed) when the name is unknown or the CPU lacks it.
bool set_active(const char* isa);
bool cpu_supports(const char* isa);
// FASTOPTIM_ISA when it named a table this build lacks or this CPU cannot run (and so was
// ignored), else nullptr: the front ends warn with it.
const char* requested_isa();
// Threads the kernels' OpenMP loops use (1 without OpenMP); torch.set_num_threads bounds it.
int max_threads();

}  // namespace fastoptim_isa

namespace fastoptim::kernels {

// KernelEntry<Rule>::member: the rule's entry in a fastoptim_isa::KernelTable.
template <class Rule>
struct KernelEntry;
#define FASTOPTIM_KERNEL_ENTRY(Type, name)                                  \
  template <>                                                               \
  struct KernelEntry<rules::Type> {                                         \
    static constexpr auto member = &fastoptim_isa::KernelTable::name;       \
  };
FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_KERNEL_ENTRY)
#undef FASTOPTIM_KERNEL_ENTRY

}  // namespace fastoptim::kernels
