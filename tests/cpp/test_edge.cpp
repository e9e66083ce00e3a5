// Torch-free tests of the edge front end (cpp/include/fastoptim/edge): every rule of the catalogue
// has its class and steps without a single heap allocation (rules with per-tensor sums too: their
// work buffers are sized by the constructor); checkpoints continue bit
// for bit and refuse what is not theirs; caller-owned state; bad hyperparameters are refused
// before anything moves. (Its float32 results equal the Python classes': tests/python/test_edge.py.)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "fastoptim/edge/optimizer.h"

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

static int failures = 0, passes = 0;
static void expect(bool ok, const std::string& what) {
  if (ok) {
    ++passes;
  } else {
    ++failures;
    std::printf("FAILED: %s\n", what.c_str());
  }
}

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

template <class Rule>
static void test_rule(const char* name) {
  Problem problem(7);
  typename Rule::Hyper hyper;
  const long at_construction = g_allocations;
  edge::Optimizer<Rule> opt(problem.params(), hyper);
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
  const auto grads_b = b.grad_pointers();
  for (unsigned step = 4; step < 9; ++step) {
    a.fill_grads(step);
    b.fill_grads(step);
    first.step(grads_a.data());
    resumed.step(grads_b.data());
  }
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
  const auto grads_a = a.grad_pointers(), grads_b = b.grad_pointers();
  for (unsigned step = 0; step < 3; ++step) {
    a.fill_grads(step);
    b.fill_grads(step);
    in_place.step(grads_a.data());
    owning.step(grads_b.data());
  }
  expect(a.values == b.values, "caller-owned state steps as owned state does");
  expect(in_place.state(0, 0) == storage, "the state lives in the caller's buffer");
  edge::SGD too_small(a.params(), hyper, storage, needed - 1);
  expect(too_small.status() == edge::Status::state_too_small && too_small.step(grads_a.data()) == edge::Status::state_too_small,
         "a state buffer too small is reported, and stepping it does nothing");
}

static void test_invalid_hyperparameters() {
  Problem a(9);
  const auto before = a.values;
  edge::AdamW opt(a.params());
  opt.hyper().lr = -1;
  const auto grads = a.grad_pointers();
  expect(opt.step(grads.data()) == edge::Status::invalid_hyperparameter && a.values == before && opt.step_count() == 0.0f,
         "a negative lr is refused before anything moves");
  opt.hyper().lr = 1e-3;
  opt.hyper().beta1 = 1.0;
  expect(opt.step(grads.data()) == edge::Status::invalid_hyperparameter, "beta1 = 1 is refused");
}

int main() {
#define FASTOPTIM_TEST_RULE(Type, name) test_rule<rules::Type>(#name);
  FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_TEST_RULE)
#undef FASTOPTIM_TEST_RULE
  test_checkpoints();
  test_caller_owned_state();
  test_invalid_hyperparameters();
  std::printf("%d passed, %d failed\n", passes, failures);
  return failures == 0 ? 0 : 1;
}
