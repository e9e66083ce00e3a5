// Trains a small torch::nn model with fastoptim::optim::AdamW in a libtorch program: y = sin(3x) + x^2
// on 256 points, one hidden layer of 32 tanh units, full-batch steps; saves and reloads the
// optimizer halfway with torch::save / torch::load. Exits 0 when the loss fell tenfold.
#include <torch/torch.h>

#include <cstdio>

#include <fastoptim/optim/optimizer.h>

int main() {
  torch::manual_seed(0);
  torch::nn::Sequential model(torch::nn::Linear(1, 32), torch::nn::Tanh(), torch::nn::Linear(32, 1));
  const torch::Tensor x = torch::linspace(-1, 1, 256).unsqueeze(1);
  const torch::Tensor y = torch::sin(3 * x) + x * x;
  fastoptim::optim::AdamW optimizer(model->parameters(), fastoptim::optim::AdamWOptions(1e-2).weight_decay(1e-4));
  float first = 0, last = 0;
  for (int step = 0; step < 1000; ++step) {
    optimizer.zero_grad();
    torch::Tensor loss = torch::mse_loss(model->forward(x), y);
    loss.backward();
    optimizer.step();
    last = loss.item<float>();
    if (step == 0) first = last;
    if (step == 500) {  // a checkpoint round trip mid-run
      torch::save(optimizer, "train_example_optimizer.pt");
      torch::load(optimizer, "train_example_optimizer.pt");
    }
  }
  std::printf("loss %.5f -> %.5f\n", first, last);
  return last < first / 10 ? 0 : 1;
}
