// The libtorch classes driven the way tests/python/test_libtorch.py drives the Python ones:
//   parity <rule> <steps> <out.pt> <hyper values...>
//   parity adamw-options        (prints AdamWOptions()'s hyperparameters)
// builds parameters of several shapes from torch::manual_seed(0), steps the rule's
// fastoptim::optim class `steps` times with gradients from torch::manual_seed(100 + step) (the same
// tensors Python draws), saving and reloading the optimizer through torch::save / torch::load
// halfway into a new optimizer, and writes the parameters to out.pt (torch.load reads it). With
// FASTOPTIM_PARITY_ROUNDING_SEED set, the parameters are bf16 and stored by stochastic rounding
// with that seed; with FASTOPTIM_PARITY_BF16_STATE set, float32 parameters keep bf16 state; with
// FASTOPTIM_PARITY_EIGHT_BIT_STATE set, the rule's moments are kept in 8 bits.
// (the headers it uses, not <torch/torch.h>: a quarter less to compile while the tests wait)
#include <torch/serialize.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <fastoptim/optim/optimizer.h>

namespace {

const char* rounding_seed() { return std::getenv("FASTOPTIM_PARITY_ROUNDING_SEED"); }

std::vector<torch::Tensor> make_params() {
  torch::manual_seed(0);
  std::vector<torch::Tensor> params;
  const auto dtype = rounding_seed() ? torch::kBFloat16 : torch::kFloat32;
  for (const auto& shape : std::vector<std::vector<int64_t>>{{1}, {17}, {1023}, {33, 65}, {6, 3, 3, 3}, {}})
    params.push_back(torch::randn(shape, torch::kFloat64).to(dtype).requires_grad_());
  return params;
}

template <class Optimizer, class Options>
void run(const std::vector<double>& values, int steps, const std::string& out) {
  auto params = make_params();
  auto options = Options::from_values(values);
  if (rounding_seed()) options.stochastic_rounding(true).rounding_seed(std::stoll(rounding_seed()));
  if (std::getenv("FASTOPTIM_PARITY_BF16_STATE")) options.bf16_state(true);
  if (std::getenv("FASTOPTIM_PARITY_EIGHT_BIT_STATE")) options.eight_bit_state(true);
  auto optimizer = std::make_unique<Optimizer>(params, options);
  for (int step = 0; step < steps; ++step) {
    torch::manual_seed(100 + step);
    for (auto& p : params) p.mutable_grad() = torch::randn_like(p);
    optimizer->step();
    if (step == steps / 2) {
      torch::save(*optimizer, out + ".optimizer");
      optimizer = std::make_unique<Optimizer>(params, Options());
      torch::load(*optimizer, out + ".optimizer");
    }
  }
  std::vector<c10::IValue> detached;  // a tuple of tensors: what torch.load(weights_only=True) reads
  for (auto& p : params) detached.emplace_back(p.detach());
  const std::vector<char> bytes = torch::pickle_save(c10::ivalue::Tuple::create(std::move(detached)));
  std::ofstream(out, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "adamw-options") {  // the hyperparameters AdamWOptions() starts from
    for (double value : fastoptim::optim::AdamWOptions().values()) std::printf("%.17g ", value);
    return 0;
  }
  if (argc < 4) return 2;
  const std::string rule = argv[1];
  const int steps = std::stoi(argv[2]);
  std::vector<double> values;
  for (int i = 4; i < argc; ++i) values.push_back(std::stod(argv[i]));
#define FASTOPTIM_RUN(Type, name) \
  if (rule == #name) return run<fastoptim::optim::Type, fastoptim::optim::Type##Options>(values, steps, argv[3]), 0;
  FASTOPTIM_OPTIMIZER_RULES(FASTOPTIM_RUN)
  FASTOPTIM_RUN(Adafactor, adafactor)  // (a helper rule with a class of its own)
#undef FASTOPTIM_RUN
  return 3;
}
