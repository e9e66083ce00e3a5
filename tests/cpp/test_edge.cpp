// Torch-free tests of the edge front end (cpp/include/fastoptim/edge): every rule of the catalogue
// has its class and steps without a single heap allocation (rules with per-tensor sums too: their
// work buffers are sized by the constructor); checkpoints continue bit
// for bit and refuse what is not theirs; caller-owned state; bad hyperparameters are refused
// before anything moves. (Its float32 results equal the Python classes': tests/python/test_edge.py.)
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <vector>
#if defined(__unix__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "fastoptim/edge/optimizer.h"

#include "expect.h"

// Every operator new of this program is counted (the test replaces the global one).
static long g_allocations = 0;
void* operator new(std::size_t size) {
  ++g_allocations;
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

using namespace fastoptim;


// Parameters of sizes that exercise the SIMD tails, and matching gradients.
struct Problem {
  std::vector<std::vector<float>> values, grads;
  explicit Problem(unsigned seed) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> normal;
    for (std::size_t n : {std::size_t(1), std::size_t(15), std::size_t(17), std::size_t(1000), std::size_t(40009)}) {
      values.emplace_back(n);
      grads.emplace_back(n);
      for (float& x : values.back()) x = normal(gen);
    }
  }
  // the largest is a 1 x 40009 matrix, so per-row rules (AdamP) see a row
  std::vector<edge::Param> params() {
    std::vector<edge::Param> out;
    for (auto& v : values) out.push_back({v.data(), std::int64_t(v.size()), 1, v.size() > 1000 ? 2 : 1});
    return out;
  }
  void fill_grads(unsigned step) {
    std::mt19937 gen(1000 + step);
    std::normal_distribution<float> normal;
    for (auto& g : grads)
      for (float& x : g) x = normal(gen);
  }
  std::vector<const float*> grad_pointers() const {
    std::vector<const float*> out;
    for (const auto& g : grads) out.push_back(g.data());
    return out;
  }
};

// Steps `first` on problem a and `second` on problem b with the gradients of steps [from, to).
template <class First, class Second>
static void step_side_by_side(Problem& a, First& first, Problem& b, Second& second, unsigned from, unsigned to) {
  const auto grads_a = a.grad_pointers(), grads_b = b.grad_pointers();
  for (unsigned step = from; step < to; ++step) {
    a.fill_grads(step);
    b.fill_grads(step);
    first.step(grads_a.data());
    second.step(grads_b.data());
  }
}

template <class Rule>
static void test_rule(const char* name, edge::StateFormat format = edge::StateFormat::float32) {
  Problem problem(7);
  typename Rule::Hyper hyper;
  const long at_construction = g_allocations;
  edge::Optimizer<Rule> opt(problem.params(), hyper, format);
  expect(g_allocations > at_construction, std::string(name) + ": the counter sees the constructor's allocations");
  const auto grads = problem.grad_pointers();
  const auto before = problem.values;
  bool all_ok = true;
  long allocations = 0;
  for (unsigned step = 0; step < 5; ++step) {
    problem.fill_grads(step);
    const long start = g_allocations;
    all_ok = all_ok && opt.step(grads.data()) == edge::Status::ok;
    allocations += g_allocations - start;
  }
  expect(all_ok, std::string(name) + ": five steps succeed");
  expect(allocations == 0, std::string(name) + ": step() allocates nothing (" + std::to_string(allocations) + " allocations)");
  bool finite = true;
  for (const auto& v : problem.values)
    for (float x : v) finite = finite && std::isfinite(x);
  expect(finite, std::string(name) + ": parameters stay finite");
  if (rules::writes_param<Rule>(Rule::template prepare<float>(hyper, rules::StepInfo{1.0, true})))
    expect(problem.values != before, std::string(name) + ": parameters move");
}

// Every rule has fastoptim::edge::<Type>: a missing one fails to compile here.
#define FASTOPTIM_CHECK_CLASS(Type, name) \
  static_assert(std::is_same_v<edge::Type, edge::Optimizer<rules::Type>>, "edge class of " #name);
FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_CHECK_CLASS)
#undef FASTOPTIM_CHECK_CLASS

static void test_checkpoints() {
  Problem a(3), b(3);
  rules::Adam::Hyper hyper;
  hyper.amsgrad = 1;
  edge::Optimizer<rules::Adam> first(a.params(), hyper);
  const auto grads_a = a.grad_pointers();
  for (unsigned step = 0; step < 4; ++step) {
    a.fill_grads(step);
    first.step(grads_a.data());
  }
  std::vector<unsigned char> saved(first.state_bytes());
  expect(first.save_state(saved.data(), saved.size()) == edge::Status::ok, "save_state writes the checkpoint");
  expect(first.save_state(saved.data(), saved.size() - 1) == edge::Status::buffer_too_small, "save_state refuses a short buffer");
  b.values = a.values;
  edge::Optimizer<rules::Adam> resumed(b.params(), hyper);
  expect(resumed.load_state(saved.data(), saved.size()) == edge::Status::ok, "load_state reads it back");
  expect(resumed.step_count() == 4.0f, "the step count comes back");
  step_side_by_side(a, first, b, resumed, 4, 9);
  expect(a.values == b.values, "a resumed run continues bit for bit");

  edge::Optimizer<rules::AdaBelief> other_rule(b.params(), rules::AdaBelief::Hyper{});
  expect(other_rule.load_state(saved.data(), saved.size()) == edge::Status::bad_state, "another rule's state is refused");
  rules::Adam::Hyper plain;  // amsgrad off: one state slot fewer
  edge::Optimizer<rules::Adam> other_slots(b.params(), plain);
  expect(other_slots.load_state(saved.data(), saved.size()) == edge::Status::bad_state, "a state of other slots is refused");
  std::vector<unsigned char> corrupt = saved;
  corrupt[8] ^= 1;  // the format version
  expect(resumed.load_state(corrupt.data(), corrupt.size()) == edge::Status::bad_state, "another format version is refused");
}

// What every state format promises, for edge class Opt (two moment slots) in `format`: state_floats
// counts each moment of n elements as `floats_of_moment(n)` floats; state in the caller's memory
// (`storage`, `capacity` floats) laid out as `stored_as` says and stepping as owned state does; a
// checkpoint written, read back and continued bit for bit; the float32 format's checkpoints refused
// and this format's refused by a float32 optimizer.
template <class Opt, class FloatsOfMoment, class StoredAs>
static void test_state_format(edge::StateFormat format, const std::string& label, const typename Opt::Hyper& hyper,
                              FloatsOfMoment&& floats_of_moment, float* storage, std::size_t capacity, StoredAs&& stored_as) {
  Problem a(11), b(11);
  const std::size_t needed = Opt::state_floats(a.params(), hyper, format);
  std::size_t elements = 0, expected = 0;
  for (const auto& v : a.values) {
    elements += v.size();
    expected += floats_of_moment(v.size());
  }
  expect(Opt::state_floats(a.params(), hyper) == 2 * elements && needed == 2 * expected,
         label + ": state_floats counts two moments in the format (whole floats per parameter)");
  expect(needed <= capacity, label + ": the state fits the static buffer");
  Opt in_place(a.params(), hyper, storage, needed, format);
  Opt owning(b.params(), hyper, format);
  expect(in_place.status() == edge::Status::ok && owning.status() == edge::Status::ok, label + ": both build");
  expect(stored_as(in_place), label + ": the slots are stored in the format, not as floats");
  step_side_by_side(a, in_place, b, owning, 0, 3);
  expect(a.values == b.values, label + ": caller-owned state steps as owned state does");

  std::vector<unsigned char> saved(owning.state_bytes());
  expect(owning.save_state(saved.data(), saved.size()) == edge::Status::ok, label + ": a checkpoint is written");
  Problem c(11);
  c.values = b.values;
  Opt resumed(c.params(), hyper, format);
  expect(resumed.load_state(saved.data(), saved.size()) == edge::Status::ok, label + ": and read back");
  step_side_by_side(b, owning, c, resumed, 3, 6);
  expect(b.values == c.values, label + ": a resumed run continues bit for bit");
  Opt other_format(c.params(), hyper);
  std::vector<unsigned char> full_saved(other_format.state_bytes());
  other_format.save_state(full_saved.data(), full_saved.size());
  expect(other_format.load_state(saved.data(), saved.size()) == edge::Status::bad_state &&
             resumed.load_state(full_saved.data(), full_saved.size()) == edge::Status::bad_state,
         label + ": a checkpoint of the other state format is refused");
}

// StateFormat::eight_bit: a quarter of the state, in the caller's memory too; codes and scales
// where the float slots were; checkpoints that say their format.
static void test_eight_bit_state() {
  test_rule<rules::Adam>("adam, 8-bit state", edge::StateFormat::eight_bit);
  test_rule<rules::LAMB>("lamb, 8-bit state", edge::StateFormat::eight_bit);
  static float storage[30000];
  const auto codes_and_scales = [](std::size_t n) { return (n + 3) / 4 + (n + 255) / 256; };
  test_state_format<edge::LAMB>(edge::StateFormat::eight_bit, "lamb, 8-bit state", rules::LAMB::Hyper{}, codes_and_scales,
                                storage, 30000, [](const edge::LAMB& o) {
                                  return o.state(0, 0) == nullptr && o.codes(0, 0) == reinterpret_cast<std::uint8_t*>(storage) &&
                                         o.block_scales(1, 4) != nullptr && o.codes(1, 5) == nullptr;
                                });
  Problem a(11);
  edge::Rprop no_moments(a.params(), rules::Rprop::Hyper{}, edge::StateFormat::eight_bit);
  expect(no_moments.status() == edge::Status::unsupported_format, "8-bit state for a rule without 8-bit slots is refused");
}

// StateFormat::bfloat16: half the state (two bytes per element, whole floats per parameter), the
// per-tensor scalars in float32; bfloat16 values where the float slots were; checkpoints that say
// their format; Adafactor refused.
static void test_bfloat16_state() {
  test_rule<rules::Adam>("adam, bfloat16 state", edge::StateFormat::bfloat16);
  test_rule<rules::LAMB>("lamb, bfloat16 state", edge::StateFormat::bfloat16);
  test_rule<rules::Adagrad>("adagrad, bfloat16 state (a nonzero start value)", edge::StateFormat::bfloat16);
  static float storage[42000];
  const auto halves = [](std::size_t n) { return (n + 1) / 2; };
  test_state_format<edge::Adam>(edge::StateFormat::bfloat16, "adam, bfloat16 state", rules::Adam::Hyper{}, halves, storage,
                                42000, [](const edge::Adam& o) {
                                  return o.state(0, 0) == nullptr && o.bf16_state(0, 0) == reinterpret_cast<std::uint16_t*>(storage) &&
                                         o.bf16_state(1, 4) != nullptr && o.codes(0, 0) == nullptr;
                                });
  Problem a(13);
  edge::Adafactor factored(a.params(), rules::Adafactor::Hyper{}, edge::StateFormat::bfloat16);
  expect(factored.status() == edge::Status::unsupported_format, "bfloat16 state for Adafactor is refused");
}

// Adafactor factors a parameter of ndim > 1 over its last two dims: its state is a factor per row
// and per column of each slice, and a parameter of ndim > 2 needs its shape.
static void test_adafactor_factors_matrices() {
  std::vector<float> matrix(6 * 4 * 5, 1.0f), vector(7, 1.0f);
  const std::int64_t shape[3] = {6, 4, 5};
  const std::vector<edge::Param> params = {{matrix.data(), 120, 6, 3, shape}, {vector.data(), 7}};
  expect(edge::Adafactor::state_floats(params, rules::Adafactor::Hyper{}) == 6 * (4 + 5) + 7,
         "Adafactor's state: 6 slices of 4 row and 5 column factors, and the vector's second moment");
  edge::Adafactor opt(params);
  expect(opt.status() == edge::Status::ok, "a parameter of ndim 3 with its shape is stepped");
  edge::Adafactor no_shape({{matrix.data(), 120, 6, 3}});
  expect(no_shape.status() == edge::Status::bad_param, "a parameter of ndim 3 without its shape is refused");
  const std::int64_t wrong[3] = {6, 4, 4};
  edge::Adafactor wrong_shape({{matrix.data(), 120, 6, 3, wrong}});
  expect(wrong_shape.status() == edge::Status::bad_param, "a shape that does not multiply to numel is refused");
}

static void test_caller_owned_state() {
  Problem a(5), b(5);
  rules::SGD::Hyper hyper;
  hyper.momentum = 0.9;
  hyper.lr = 0.01;
  static float storage[50000];  // static memory, as on a microcontroller
  const std::size_t needed = edge::SGD::state_floats(a.params(), hyper);
  expect(needed == 1 + 15 + 17 + 1000 + 40009, "state_floats counts one momentum buffer per parameter");
  edge::SGD in_place(a.params(), hyper, storage, needed);
  edge::SGD owning(b.params(), hyper);
  step_side_by_side(a, in_place, b, owning, 0, 3);
  expect(a.values == b.values, "caller-owned state steps as owned state does");
  expect(in_place.state(0, 0) == storage, "the state lives in the caller's buffer");
  edge::SGD too_small(a.params(), hyper, storage, needed - 1);
  expect(too_small.status() == edge::Status::state_too_small && too_small.step(a.grad_pointers().data()) == edge::Status::state_too_small,
         "a state buffer too small is reported, and stepping it does nothing");
}

// A slot the step only reads (Sophia's Hessian EMA, rules::read_only_slots) is never written: with
// its whole pages made read-only (caller-owned state, page-aligned), a step that stored it back, or
// encoded its 8-bit codes again, would fault.
static void test_read_only_slots_are_not_written() {
#if defined(__unix__)
  const std::size_t page = std::size_t(sysconf(_SC_PAGESIZE));
  for (const edge::StateFormat format : {edge::StateFormat::float32, edge::StateFormat::eight_bit}) {
    Problem a(13);
    rules::Sophia::Hyper hyper;
    hyper.lr = 0.01;
    const std::size_t needed = edge::Sophia::state_floats(a.params(), hyper, format);
    const std::size_t bytes = (needed * sizeof(float) + page - 1) / page * page;
    auto* storage = static_cast<float*>(std::aligned_alloc(page, bytes));
    edge::Sophia opt(a.params(), hyper, storage, needed, format);
    const bool coded = format == edge::StateFormat::eight_bit;
    // the largest parameter's Hessian EMA (40009 elements) and its block scales
    const auto* first = coded ? static_cast<const void*>(opt.codes(rules::Sophia::kHessian, 4))
                              : static_cast<const void*>(opt.state(rules::Sophia::kHessian, 4));
    const std::size_t length = 40009 * (coded ? 1 : sizeof(float));
    const auto begin = (reinterpret_cast<std::uintptr_t>(first) + page - 1) / page * page;
    const auto end = (reinterpret_cast<std::uintptr_t>(first) + length) / page * page;
    expect(end > begin, "the Hessian EMA spans whole pages");
    expect(mprotect(reinterpret_cast<void*>(begin), end - begin, PROT_READ) == 0, "the Hessian EMA's pages made read-only");
    const std::vector<float> before = a.values.back();
    bool stepped = true;
    for (unsigned step = 0; step < 3; ++step) {
      a.fill_grads(step);
      stepped = stepped && opt.step(a.grad_pointers().data()) == edge::Status::ok;
    }
    expect(stepped && a.values.back() != before, "Sophia steps with its Hessian EMA's pages read-only");
    mprotect(reinterpret_cast<void*>(begin), end - begin, PROT_READ | PROT_WRITE);
    std::free(storage);
  }
#endif
}

static void test_invalid_hyperparameters() {
  Problem a(9);
  const auto before = a.values;
  edge::AdamW opt(a.params());
  auto hyper = opt.hyper();
  hyper.lr = -1;
  expect(opt.set_hyper(hyper) == edge::Status::invalid_hyperparameter && opt.hyper().lr == 1e-3,
         "a negative lr is refused and the old one kept");
  hyper.lr = 1e-3;
  hyper.beta1 = 1.0;
  expect(opt.set_hyper(hyper) == edge::Status::invalid_hyperparameter, "beta1 = 1 is refused");
  hyper.beta1 = 0.9;
  hyper.weight_decay = INFINITY;
  expect(opt.set_hyper(hyper) == edge::Status::invalid_hyperparameter, "an infinite weight decay is refused");
  hyper.weight_decay = 0.01;
  hyper.amsgrad = 1;
  expect(opt.set_hyper(hyper) == edge::Status::state_layout_changed, "turning amsgrad on after construction is refused");
  hyper.amsgrad = 0;
  hyper.lr = 2e-3;
  expect(opt.set_hyper(hyper) == edge::Status::ok && opt.hyper().lr == 2e-3, "a new lr is taken");
  expect(a.values == before && opt.step_count() == 0.0f, "nothing moved");

  rules::SGD::Hyper sgd;
  edge::SGD plain(a.params(), sgd);
  sgd.momentum = 0.9;
  expect(plain.set_hyper(sgd) == edge::Status::state_layout_changed, "SGD's momentum cannot be switched on later");
  rules::Adam::Hyper bad;
  bad.lr = NAN;
  edge::Optimizer<rules::Adam> from_bad(a.params(), bad);
  expect(from_bad.status() == edge::Status::invalid_hyperparameter && from_bad.step(a.grad_pointers().data()) == from_bad.status(),
         "an optimizer built with a NaN lr reports it, and stepping it does nothing");
  rules::AMaC::Hyper amac;
  amac.seed = 18446744073709551616.0;  // 2**64: no uint64 holds it
  expect(edge::AMaC(a.params(), amac).status() == edge::Status::invalid_hyperparameter, "a seed >= 2**53 is refused");
  amac.seed = 3.5;
  expect(edge::AMaC(a.params(), amac).status() == edge::Status::invalid_hyperparameter, "a fractional seed is refused");
  expect(a.values == before, "no refused construction moved a parameter");

  // A damaged noise key (NaN, negative, >= 2**32) is drawn with as key 0, not converted with undefined behaviour
  // (tests/sanitize.sh runs this under UBSan).
  edge::AMaC noisy(a.params(), rules::AMaC::Hyper{});
  const auto grads = a.grad_pointers();
  bool finite = true;
  for (float key : {NAN, -1.0f, 1e10f}) {
    *noisy.state(rules::AMaC::kStateSlots, 0) = key;
    finite = finite && noisy.step(grads.data()) == edge::Status::ok && std::isfinite(a.values[0][0]);
  }
  expect(finite, "AMaC steps with a damaged noise key");
}

// Every call on an optimizer that could not be built answers with its status.
static void test_unusable_optimizer() {
  Problem a(11);
  rules::SGD::Hyper hyper;
  hyper.momentum = 0.9;
  float storage[4];
  edge::SGD opt(a.params(), hyper, storage, 4);
  std::vector<unsigned char> buffer(1 << 20);
  expect(opt.status() == edge::Status::state_too_small, "the short state buffer is reported");
  expect(opt.save_state(buffer.data(), buffer.size()) == edge::Status::state_too_small, "save_state reports it");
  expect(opt.load_state(buffer.data(), opt.state_bytes()) == edge::Status::state_too_small, "load_state reports it");
  expect(opt.state(0, 0) == nullptr, "state() has nothing to give");
  expect(opt.set_hyper(hyper) == edge::Status::state_too_small, "set_hyper reports it");
  edge::SGD null_state(a.params(), hyper, nullptr, 1 << 20);
  expect(null_state.status() == edge::Status::null_pointer, "a null state buffer is refused");
  rules::SGD::Hyper stateless;
  edge::SGD no_state(a.params(), stateless, nullptr, 0);
  expect(no_state.status() == edge::Status::ok, "a rule configuration without state needs no buffer");
  std::vector<unsigned char> checkpoint(no_state.state_bytes());
  expect(no_state.save_state(checkpoint.data(), checkpoint.size()) == edge::Status::ok &&
             no_state.load_state(checkpoint.data(), checkpoint.size()) == edge::Status::ok,
         "a checkpoint without state floats saves and loads");
}

static void test_bad_params_and_pointers() {
  std::vector<float> w(12, 1.0f), g(12, 0.5f);
  auto build = [&](edge::Param p) { return edge::Adam({p}).status(); };
  expect(build({w.data(), 12, 0, 2}) == edge::Status::bad_param, "rows = 0 of a matrix is refused");
  expect(build({w.data(), 12, 5, 2}) == edge::Status::bad_param, "rows that do not divide numel are refused");
  expect(build({w.data(), 12, 24, 2}) == edge::Status::bad_param, "rows > numel are refused");
  expect(build({w.data(), -1, 1, 1}) == edge::Status::bad_param, "a negative numel is refused");
  expect(build({w.data(), 12, 1, -1}) == edge::Status::bad_param, "a negative ndim is refused");
  expect(build({nullptr, 12, 1, 1}) == edge::Status::null_pointer, "a null parameter is refused");
  expect(build({nullptr, 0, 1, 1}) == edge::Status::ok, "an empty parameter needs no memory");
  expect(build({w.data(), 12, 3, 2}) == edge::Status::ok, "a 3 x 4 matrix is fine");
  expect(build({w.data(), 12, 0, 1}) == edge::Status::ok, "a vector's rows are not read");

  edge::AdamP adamp({{w.data(), 12, 3, 2}});
  const float* grads[] = {g.data()};
  expect(adamp.step(grads) == edge::Status::ok, "a valid 3 x 4 matrix steps");
  const std::vector<float> before = w;
  const float* null_grad[] = {nullptr};
  expect(adamp.step(null_grad) == edge::Status::null_pointer && adamp.step(nullptr) == edge::Status::null_pointer,
         "a null gradient, or a null gradient array, is refused");
  expect(w == before && adamp.step_count() == 1.0f, "and nothing moved");
  std::vector<unsigned char> buffer(adamp.state_bytes());
  expect(adamp.save_state(nullptr, buffer.size()) == edge::Status::null_pointer, "save_state refuses a null buffer");
  expect(adamp.load_state(nullptr, buffer.size()) == edge::Status::null_pointer, "load_state refuses a null pointer");
  edge::Average average({{w.data(), 12}});  // weight averaging reads no gradient
  expect(average.step(nullptr) == edge::Status::ok, "a rule that reads no gradient takes a null array");
}

// A checkpoint is refused unless every header word and the checksum are right: truncations,
// single bit flips anywhere, and random payloads behind a valid header.
static void test_checkpoint_fuzz() {
  Problem a(13);
  rules::Adam::Hyper hyper;
  edge::Adam opt(a.params(), hyper);
  const auto grads = a.grad_pointers();
  for (unsigned step = 0; step < 3; ++step) {
    a.fill_grads(step);
    opt.step(grads.data());
  }
  std::vector<unsigned char> saved(opt.state_bytes());
  opt.save_state(saved.data(), saved.size());
  std::vector<unsigned char> reference(opt.state_bytes());
  auto unchanged = [&] {
    opt.save_state(reference.data(), reference.size());
    return reference == saved && opt.step_count() == 3.0f;
  };
  bool truncations = true;
  for (std::size_t size : {std::size_t(0), std::size_t(7), std::size_t(64), saved.size() / 2, saved.size() - 8, saved.size() - 1})
    truncations = truncations && opt.load_state(saved.data(), size) == edge::Status::bad_state;
  expect(truncations && unchanged(), "truncated checkpoints are refused");
  std::vector<unsigned char> longer = saved;
  longer.push_back(0);
  expect(opt.load_state(longer.data(), longer.size()) == edge::Status::bad_state, "a checkpoint with trailing bytes is refused");
  std::mt19937 gen(17);
  bool flips = true;
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<unsigned char> flipped = saved;
    const std::size_t bit = std::uniform_int_distribution<std::size_t>(0, saved.size() * 8 - 1)(gen);
    flipped[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
    flips = flips && opt.load_state(flipped.data(), flipped.size()) == edge::Status::bad_state;
  }
  expect(flips && unchanged(), "500 single bit flips are all refused");
  const std::size_t header = saved.size() - edge::Adam::state_floats(a.params(), hyper) * sizeof(float) - 8;
  bool payloads = true;
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<unsigned char> forged = saved;
    for (std::size_t k = header; k < forged.size(); ++k) forged[k] = static_cast<unsigned char>(gen());
    payloads = payloads && opt.load_state(forged.data(), forged.size()) == edge::Status::bad_state;
  }
  expect(payloads && unchanged(), "500 random payloads behind a valid header are refused");
  std::vector<unsigned char> high_step = saved;
  high_step[3 * 8 + 5] = 1;  // an upper byte of the step word
  expect(opt.load_state(high_step.data(), high_step.size()) == edge::Status::bad_state, "the step word's upper bytes are checked");
  expect(opt.load_state(saved.data(), saved.size()) == edge::Status::ok && unchanged(), "the untouched checkpoint loads");
}

int main() {
#define FASTOPTIM_TEST_RULE(Type, name) test_rule<rules::Type>(#name);
  FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_TEST_RULE)
#undef FASTOPTIM_TEST_RULE
  test_checkpoints();
  test_caller_owned_state();
  test_read_only_slots_are_not_written();
  test_eight_bit_state();
  test_bfloat16_state();
  test_adafactor_factors_matrices();
  test_invalid_hyperparameters();
  test_unusable_optimizer();
  test_bad_params_and_pointers();
  test_checkpoint_fuzz();
  return test::summary();
}
