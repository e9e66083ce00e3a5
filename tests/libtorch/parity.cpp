// The libtorch classes driven the way tests/python/test_libtorch.py drives the Python ones, every
// run of the tests in one process (libtorch loads once):
//   parity <jobs file>          one run per line: <rule> <steps> <out.pt> <variant> <hyper values...>
//   parity adamw-options        (prints AdamWOptions()'s hyperparameters)
// A run builds parameters of several shapes from torch::manual_seed(0), steps the rule's
// fastoptim::optim class `steps` times with gradients from torch::manual_seed(100 + step) (the same
// tensors Python draws), saving and reloading the optimizer through torch::save / torch::load
// halfway into a new optimizer, and writes the parameters to out.pt (torch.load reads it). The
// variant: "plain"; "rounding:<seed>", bf16 parameters stored by stochastic rounding with that seed;
// "bf16-state", float32 parameters with bf16 state; "eight-bit", the rule's moments in 8 bits. A rule
// with no fastoptim::optim class writes no out.pt and is named on stderr; the other runs go on.
// (the headers it uses, not <torch/torch.h>: a quarter less to compile while the tests wait)
#include <torch/serialize.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fastoptim/optim/optimizer.h>

namespace {

// One line of the jobs file.
struct Run {
  std::string rule, out, variant;
  int steps = 0;
  std::vector<double> values;

  std::optional<long long> rounding_seed() const {
    const std::string prefix = "rounding:";
    if (variant.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
    return std::stoll(variant.substr(prefix.size()));
  }
};

std::vector<torch::Tensor> make_params(const Run& run) {
  torch::manual_seed(0);
  std::vector<torch::Tensor> params;
  const auto dtype = run.rounding_seed() ? torch::kBFloat16 : torch::kFloat32;
  for (const auto& shape : std::vector<std::vector<int64_t>>{{1}, {17}, {1023}, {33, 65}, {6, 3, 3, 3}, {}})
    params.push_back(torch::randn(shape, torch::kFloat64).to(dtype).requires_grad_());
  return params;
}

template <class Optimizer, class Options>
void step(const Run& run) {
  auto params = make_params(run);
  auto options = Options::from_values(run.values);
  if (const auto seed = run.rounding_seed()) options.stochastic_rounding(true).rounding_seed(*seed);
  if (run.variant == "bf16-state") options.bf16_state(true);
  if (run.variant == "eight-bit") options.eight_bit_state(true);
  auto optimizer = std::make_unique<Optimizer>(params, options);
  for (int k = 0; k < run.steps; ++k) {
    torch::manual_seed(100 + k);
    for (auto& p : params) p.mutable_grad() = torch::randn_like(p);
    optimizer->step();
    if (k == run.steps / 2) {
      torch::save(*optimizer, run.out + ".optimizer");
      optimizer = std::make_unique<Optimizer>(params, Options());
      torch::load(*optimizer, run.out + ".optimizer");
    }
  }
  std::vector<c10::IValue> detached;  // a tuple of tensors: what torch.load(weights_only=True) reads
  for (auto& p : params) detached.emplace_back(p.detach());
  const std::vector<char> bytes = torch::pickle_save(c10::ivalue::Tuple::create(std::move(detached)));
  std::ofstream(run.out, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

// Steps the run's rule; false if the rule has no fastoptim::optim class.
bool step_rule(const Run& run) {
#define FASTOPTIM_RUN(Type, name) \
  if (run.rule == #name) return step<fastoptim::optim::Type, fastoptim::optim::Type##Options>(run), true;
  FASTOPTIM_OPTIMIZER_RULES(FASTOPTIM_RUN)
  FASTOPTIM_RUN(Adafactor, adafactor)  // (a helper rule with a class of its own)
#undef FASTOPTIM_RUN
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "adamw-options") {  // the hyperparameters AdamWOptions() starts from
    for (double value : fastoptim::optim::AdamWOptions().values()) std::printf("%.17g ", value);
    return 0;
  }
  if (argc != 2) return 2;
  std::ifstream jobs(argv[1]);
  for (std::string line; std::getline(jobs, line);) {
    std::istringstream fields(line);
    Run run;
    fields >> run.rule >> run.steps >> run.out >> run.variant;
    for (std::string value; fields >> value;) run.values.push_back(std::stod(value));  // (stod reads inf and nan)
    if (!step_rule(run)) std::fprintf(stderr, "parity: no fastoptim::optim class for the rule %s\n", run.rule.c_str());
  }
  return 0;
}
