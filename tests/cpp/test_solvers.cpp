// Torch-free tests of the solvers layer (solvers/ over kernels/vector_passes.h and dense_solve.h):
// CG over pieces of the sizes that exercise the SIMD tails equals Eigen's dense solve and gives the
// same bits on every kernel table; it stops on non-positive curvature; the two-loop equals the dense
// BFGS inverse; the Cholesky solve, its jitter and its failure. Closes with "N passed, N failed".
#include <Eigen/Dense>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "fastoptim/kernels/isa.h"
#include "fastoptim/solvers/conjugate_gradient.h"
#include "fastoptim/solvers/dense.h"
#include "fastoptim/solvers/space.h"
#include "fastoptim/solvers/two_loop.h"

#include "expect.h"

using namespace fastoptim;
using fastoptim_isa::Dtype;


// A vector of the space as one buffer cut into pieces (so a dense matrix can act on it).
template <class T>
struct PieceVector {
  std::vector<T> data;
  std::vector<void*> pieces;
  PieceVector(const std::vector<std::int64_t>& sizes) {
    std::int64_t n = 0;
    for (auto s : sizes) n += s;
    data.assign(std::size_t(n), T(0));
    std::int64_t offset = 0;
    for (auto s : sizes) {
      pieces.push_back(s ? data.data() + offset : nullptr);
      offset += s;
    }
  }
  solvers::Vector vector() { return pieces.data(); }
  Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>> map() { return {data.data(), Eigen::Index(data.size())}; }
};

template <class T>
static Dtype dtype_of() {
  return std::is_same_v<T, double> ? Dtype::f64 : Dtype::f32;
}

static Eigen::MatrixXd random_spd(int n, std::mt19937& gen) {
  std::normal_distribution<double> normal;
  Eigen::MatrixXd a(n, n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) a(i, j) = normal(gen);
  return a * a.transpose() / n + Eigen::MatrixXd::Identity(n, n);
}

template <class T>
static void test_cg_over_pieces() {
  const std::vector<std::int64_t> sizes = {0, 1, 15, 16, 17, 31, 33, 1001};
  std::int64_t n = 0;
  for (auto s : sizes) n += s;
  std::mt19937 gen(5);
  std::normal_distribution<double> normal;
  // I + B B' / k with B n x k: positive definite, and cheap to form at n = 1114 (under qemu too)
  const int k = 24;
  Eigen::MatrixXd b(n, k);
  for (Eigen::Index i = 0; i < b.size(); ++i) b.data()[i] = normal(gen);
  const Eigen::MatrixXd a_double = b * b.transpose() / k + Eigen::MatrixXd::Identity(n, n);
  const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> a = a_double.cast<T>();
  PieceVector<T> rhs(sizes), start(sizes);
  for (auto& v : rhs.data) v = T(normal(gen));
  for (auto& v : start.data) v = T(normal(gen));
  const double shift = 0.5;
  const Eigen::VectorXd rhs_double = rhs.map().template cast<double>();
  const std::string label = std::is_same_v<T, double> ? "f64" : "f32";
  std::vector<std::vector<T>> reference(2);
  const char* active = fastoptim_isa::active().isa;
  for (int table = 0; table < fastoptim_isa::table_count(); ++table) {
    const char* isa = fastoptim_isa::table(table).isa;
    if (!fastoptim_isa::set_active(isa)) continue;
    for (int warm = 0; warm < 2; ++warm) {
      const solvers::PieceSpace space(sizes.data(), std::int64_t(sizes.size()), dtype_of<T>());
      PieceVector<T> x(sizes), r(sizes), p(sizes), product(sizes);
      if (warm) x.data = start.data;
      auto apply = [&](solvers::Vector v) -> solvers::Vector {  // (CG multiplies its start x, then p)
        product.map() = a * (v == x.vector() ? x : p).map();
        return product.vector();
      };
      const double tol = std::is_same_v<T, double> ? 1e-12 : 1e-6;
      const auto result = solvers::conjugate_gradient(space, apply, shift, rhs.vector(), x.vector(), bool(warm),
                                                      r.vector(), p.vector(), 400, tol);
      const std::string what = label + " " + isa + (warm ? " warm" : " cold");
      expect(!result.stopped_on_curvature && result.iterations > 0 && result.iterations < 400, "CG converges: " + what);
      const Eigen::VectorXd solution = x.map().template cast<double>();
      const double residual = (a_double * solution + shift * solution - rhs_double).norm() / rhs_double.norm();
      expect(residual < (std::is_same_v<T, double> ? 1e-11 : 1e-5), "CG solves the system: " + what + " (residual " +
                                                                       std::to_string(residual) + ")");
      if (table == 0) reference[warm] = x.data;
      else expect(x.data == reference[warm], "CG gives the scalar table's bits: " + what);
    }
  }
  fastoptim_isa::set_active(active);
}

static void test_cg_stops_on_negative_curvature() {
  const std::vector<std::int64_t> sizes = {3};
  const solvers::PieceSpace space(sizes.data(), 1, Dtype::f64);
  PieceVector<double> rhs(sizes), x(sizes), r(sizes), p(sizes), product(sizes);
  rhs.data = {1.0, 1.0, 1.0};
  const Eigen::Vector3d diagonal(2.0, -1.0, 3.0);
  auto apply = [&](solvers::Vector v) -> solvers::Vector {
    product.map() = diagonal.cwiseProduct(Eigen::Map<const Eigen::Vector3d>(static_cast<const double*>(v[0])));
    return product.vector();
  };
  auto result = solvers::conjugate_gradient(space, apply, 0.0, rhs.vector(), x.vector(), false, r.vector(), p.vector(),
                                            10, 0.0);
  expect(result.stopped_on_curvature && result.iterations >= 1, "CG stops on an indefinite system");
  // a first direction of negative curvature: the right-hand side itself
  auto negative = [&](solvers::Vector v) -> solvers::Vector {
    product.map() = -Eigen::Map<const Eigen::Vector3d>(static_cast<const double*>(v[0]));
    return product.vector();
  };
  result = solvers::conjugate_gradient(space, negative, 0.0, rhs.vector(), x.vector(), false, r.vector(), p.vector(),
                                       10, 0.0);
  expect(result.stopped_on_curvature && result.iterations == 0 && x.data == rhs.data,
         "CG returns the right-hand side on negative curvature at once");
  // the shift counts in the curvature: -I + 2I is the identity
  result = solvers::conjugate_gradient(space, negative, 2.0, rhs.vector(), x.vector(), false, r.vector(), p.vector(),
                                       10, 1e-12);
  expect(!result.stopped_on_curvature && x.data == rhs.data, "CG's shift enters the curvature");
}

static void test_two_loop_equals_dense_bfgs() {
  const std::vector<std::int64_t> sizes = {2, 0, 5};
  const int d = 7, m = 4;
  std::mt19937 gen(3);
  std::normal_distribution<double> normal;
  const Eigen::MatrixXd a = random_spd(d, gen);
  std::vector<PieceVector<double>> s, y;
  std::vector<double> rho(m);
  for (int i = 0; i < m; ++i) {
    s.emplace_back(sizes);
    y.emplace_back(sizes);
    for (auto& v : s[i].data) v = normal(gen);
    y[i].map() = a * s[i].map();
    rho[i] = 1.0 / s[i].map().dot(y[i].map());
  }
  PieceVector<double> q(sizes);
  for (auto& v : q.data) v = normal(gen);
  const Eigen::VectorXd g = q.map();
  const std::vector<std::int64_t> order = {2, 3, 0, 1};  // a ring whose oldest pair is in slot 2
  const int newest = int(order.back());
  Eigen::MatrixXd h = s[newest].map().dot(y[newest].map()) / y[newest].map().squaredNorm() * Eigen::MatrixXd::Identity(d, d);
  for (auto i : order) {
    const Eigen::MatrixXd left = Eigen::MatrixXd::Identity(d, d) - rho[i] * s[i].map() * y[i].map().transpose();
    h = left * h * left.transpose() + rho[i] * s[i].map() * s[i].map().transpose();
  }
  std::vector<solvers::Vector> s_vectors, y_vectors;
  for (int i = 0; i < m; ++i) s_vectors.push_back(s[i].vector()), y_vectors.push_back(y[i].vector());
  const solvers::PieceSpace space(sizes.data(), std::int64_t(sizes.size()), Dtype::f64);
  solvers::two_loop(space, q.vector(), s_vectors.data(), y_vectors.data(), rho.data(), order.data(), m);
  expect((q.map() - h * g).cwiseAbs().maxCoeff() < 1e-10, "the two-loop equals the dense BFGS inverse");
  PieceVector<double> unchanged(sizes);
  unchanged.data = q.data;
  solvers::two_loop(space, unchanged.vector(), s_vectors.data(), y_vectors.data(), rho.data(), order.data(), 0);
  expect(unchanged.data == q.data, "the two-loop with no pair leaves q as it is");
}

static void test_cholesky_solve() {
  std::mt19937 gen(6);
  std::normal_distribution<double> normal;
  for (int n : {1, 7, 64}) {
    Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> m = random_spd(n, gen);
    Eigen::VectorXd rhs(n), x(n);
    for (int i = 0; i < n; ++i) rhs(i) = normal(gen);
    const double jitter = solvers::cholesky_solve(m.data(), n, rhs.data(), x.data());
    expect(jitter == 0.0 && (m * x - rhs).cwiseAbs().maxCoeff() < 1e-10, "Cholesky solves n = " + std::to_string(n));
  }
  // positive semi-definite (rank one): a small jitter; indefinite: -1 and x untouched
  Eigen::Vector4d v(1.0, -2.0, 0.5, 3.0);
  Eigen::Matrix<double, 4, 4, Eigen::RowMajor> semi = v * v.transpose();
  Eigen::Vector4d x = Eigen::Vector4d::Zero();
  const double jitter = solvers::cholesky_solve(semi.data(), 4, v.data(), x.data());
  expect(jitter > 0 && jitter <= 1e-8 && x.allFinite(), "a semi-definite system is solved with a jitter <= 1e-8");
  Eigen::Matrix<double, 3, 3, Eigen::RowMajor> negative = -Eigen::Matrix3d::Identity();
  Eigen::Vector3d ones = Eigen::Vector3d::Ones(), out = Eigen::Vector3d::Constant(7.0);
  expect(solvers::cholesky_solve(negative.data(), 3, ones.data(), out.data()) < 0 && out == Eigen::Vector3d::Constant(7.0),
         "an indefinite system is refused");
}

int main() {
  test_cg_over_pieces<float>();
  test_cg_over_pieces<double>();
  test_cg_stops_on_negative_curvature();
  test_two_loop_equals_dense_bfgs();
  test_cholesky_solve();
  return test::summary();
}
