// Trains a small MLP in plain C++ (Eigen, no torch) with fastoptim's edge AdamW: y = sin(3x) + x^2
// on 256 points the program generates, one hidden layer of 32 tanh units, full-batch steps.
// The weights live in float buffers the program owns; the optimizer gets views of them and keeps
// its state in one allocation made at construction. Exits 0 when the loss fell tenfold.
#include <Eigen/Dense>

#include <cmath>
#include <cstdio>
#include <vector>

#include "fastoptim/edge/optimizer.h"

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixView = Eigen::Map<Matrix>;
using Vector = Eigen::VectorXf;
using VectorView = Eigen::Map<Vector>;

int main() {
  constexpr int kPoints = 256, kHidden = 32;
  Vector x = Vector::LinSpaced(kPoints, -1.0f, 1.0f);
  Vector y = (3.0f * x.array()).sin() + x.array().square();

  // Parameters and their gradients as flat buffers: W1 (32x1), b1 (32), W2 (1x32), b2 (1).
  std::vector<float> w1(kHidden), b1(kHidden), w2(kHidden), b2(1);
  std::vector<float> gw1(kHidden), gb1(kHidden), gw2(kHidden), gb2(1);
  unsigned state = 12345;  // a small LCG: the example needs no <random> state to be portable
  auto uniform = [&state] {
    state = state * 1664525u + 1013904223u;
    return float(state >> 8) / float(1 << 24) * 2.0f - 1.0f;
  };
  for (float& w : w1) w = uniform();
  for (float& w : w2) w = uniform() / std::sqrt(float(kHidden));

  fastoptim::rules::Adam::Hyper hyper = fastoptim::edge::adamw_defaults();
  hyper.lr = 1e-2;
  fastoptim::edge::AdamW opt({{w1.data(), kHidden}, {b1.data(), kHidden}, {w2.data(), kHidden}, {b2.data(), 1}}, hyper);
  const float* grads[] = {gw1.data(), gb1.data(), gw2.data(), gb2.data()};

  float first_loss = 0, loss = 0;
  for (int step = 0; step < 2000; ++step) {
    VectorView W1(w1.data(), kHidden), B1(b1.data(), kHidden), W2(w2.data(), kHidden);
    // forward: h = tanh(x W1^T + b1), prediction = h W2 + b2
    Matrix pre = x * W1.transpose();
    pre.rowwise() += B1.transpose();
    Matrix h = pre.array().tanh();
    Vector prediction = (h * W2).array() + b2[0];
    Vector residual = prediction - y;
    loss = residual.squaredNorm() / kPoints;
    if (step == 0) first_loss = loss;
    // backward of the mean squared error
    Vector d_prediction = 2.0f * residual / float(kPoints);
    VectorView(gw2.data(), kHidden) = h.transpose() * d_prediction;
    gb2[0] = d_prediction.sum();
    Matrix d_pre = (d_prediction * W2.transpose()).array() * (1.0f - h.array().square());
    VectorView(gw1.data(), kHidden) = d_pre.transpose() * x;
    VectorView(gb1.data(), kHidden) = d_pre.colwise().sum().transpose();
    if (opt.step(grads) != fastoptim::edge::Status::ok) {
      std::printf("step failed: %s\n", opt.error());
      return 2;
    }
    if (step % 500 == 0) std::printf("step %4d  loss %.5f\n", step, loss);
  }
  std::printf("loss %.5f -> %.5f\n", first_loss, loss);
  return loss < first_loss / 10 ? 0 : 1;
}
