// Adafactor (Shazeer & Stern, 2018) as torch.optim.Adafactor (torch 2.13) computes it:
//   g <- -g when maximizing;  w_t = t^beta2_decay (the weight of the new mean square, 1 at t = 1)
//   rho_t = min(lr, 1/sqrt(t));  alpha = max(eps2, RMS(theta)) rho_t      (RMS of theta before the decay)
//   theta <- theta (1 - lr wd)
//   a matrix (ndim > 1; over its last two dims, per slice of the leading ones), factored:
//     R <- lerp(R, mean of g^2 over each row, w_t);  C <- lerp(C, mean of g^2 over each column, w_t)
//     V = R C^T / max(mean(R), eps1)
//   a vector (ndim <= 1):  V <- lerp(V, g^2, w_t)
//   u = g / sqrt(max(V, eps1^2));  theta <- theta - alpha / max(1, RMS(u) / d) u
// eps1 unset (-1, torch's None) is the machine epsilon of the parameter's dtype.
// This rule is the vector step (a two-pass rule: V first, then the sums of u^2 and theta^2, then
// the update); kernels/factored.h runs the matrix step with the same functions (gradient, moment,
// finish, descend) and the factored ones below, its R and C kept beside each matrix.
#pragma once
#include <algorithm>
#include <cmath>

#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct Adafactor {
  static constexpr const char* kName = "adafactor";
#define FASTOPTIM_FIELDS_adafactor(F)                                                                      \
  F(lr, 1e-2, non_negative) F(beta2_decay, -0.8, non_positive) F(eps1, -1.0, unset_or_non_negative)      \
  F(eps2, 1e-3, non_negative) F(d, 1.0, at_least_one) F(weight_decay, 0.0, non_negative) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_adafactor)

  enum Slot { kVariance };
  static constexpr core::StateSlot kState[] = {{"variance", nullptr}};
  static constexpr int kStateSlots = 1;
  static constexpr bool kCountsSteps = true;
  static constexpr int kSums = 2;                  // sum of u^2, sum of theta^2
  static constexpr bool kStateInFirstPass = true;  // u needs the new V
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  template <class T>
  struct Coeffs {
    T weight;          // w_t
    T eps1_squared;
    T decay;           // 1 - lr wd
    T eps1, inv_eps1, eps2, d;
    double rho, inv_sqrt_numel;  // (the step size is computed in double on the host, as torch does)
    bool maximize, has_decay;
    T neg_step;        // -alpha / max(1, RMS(u) / d), set by finish()
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    const double eps1 = h.eps1 < 0 ? s.dtype_eps : h.eps1;
    return {T(std::pow(s.step, h.beta2_decay)),
            T(eps1 * eps1),
            T(1 - h.lr * h.weight_decay),
            T(eps1),
            T(1 / eps1),
            T(h.eps2),
            T(h.d),
            std::min(h.lr, 1 / std::sqrt(s.step)),
            s.numel > 0 ? 1 / std::sqrt(double(s.numel)) : 0.0,
            h.maximize != 0,
            h.weight_decay != 0,
            T(0)};
  }

  template <class T, int W>
  FASTOPTIM_HD static Vec<T, W> gradient(const Vec<T, W>& g, const Coeffs<T>& k) {
    return k.maximize ? -g : g;
  }

  // A second-moment estimate (V, or a row's or column's factor) moved toward a new mean square.
  template <class T, int W>
  FASTOPTIM_HD static Vec<T, W> moment(const Vec<T, W>& estimate, const Vec<T, W>& mean_square, const Coeffs<T>& k) {
    return core::lerp(estimate, mean_square, k.weight);
  }

  // The factored V of an element is R_r C_c / max(mean(R), eps1): its row's factor times its
  // column's over the rows' mean, floored at eps1 as torch clamps it. Its u takes the roots once per
  // row and per column instead of a root and two divisions per element:
  //   u = g rsqrt(R_r / mean) rsqrt(C_c),  or g / eps1 where V < eps1^2
  // (the same value as g / sqrt(max(V, eps1^2)) within an ulp or two).
  template <class T>
  FASTOPTIM_HD static T floored_row_mean(T row_sum, std::int64_t rows, const Coeffs<T>& k) {
    return std::max(row_sum / T(rows), k.eps1);
  }
  template <class T>
  struct FactoredRow {
    T scale;  // R_r / mean
    T rsqrt;  // rsqrt(R_r / mean)
  };
  template <class T>
  FASTOPTIM_HD static FactoredRow<T> factored_row(T row_factor, T floored_row_mean) {
    const double scale = double(row_factor) / double(floored_row_mean);
    return {T(scale), T(1 / std::sqrt(scale))};
  }
  template <class T>
  FASTOPTIM_HD static T column_rsqrt(T column_factor) {
    return T(1 / std::sqrt(double(column_factor)));
  }
  template <class T, int W>
  FASTOPTIM_HD static Vec<T, W> factored_scaled(const Vec<T, W>& g, const FactoredRow<T>& row, const Vec<T, W>& column,
                                                const Vec<T, W>& column_rsqrt, const Coeffs<T>& k) {
    const auto floored = core::less(column * row.scale, Vec<T, W>::broadcast(k.eps1_squared));
    return core::select(floored, g * k.inv_eps1, g * row.rsqrt * column_rsqrt);
  }

  // u = g / sqrt(max(V, eps1^2)), as torch's rsqrt then multiply.
  template <class T, int W>
  FASTOPTIM_HD static Vec<T, W> scaled(const Vec<T, W>& g, const Vec<T, W>& variance, const Coeffs<T>& k) {
    return g * (Vec<T, W>::broadcast(T(1)) / sqrt(core::maximum(variance, Vec<T, W>::broadcast(k.eps1_squared))));
  }

  // The step size from the tensor's sums of u^2 and theta^2.
  template <class T>
  FASTOPTIM_HD static void finish(Coeffs<T>& k, const T* sums) {
    const double alpha = std::max(double(k.eps2), std::sqrt(double(sums[1])) * k.inv_sqrt_numel) * k.rho;
    const double denom = std::max(1.0, std::sqrt(double(sums[0])) * k.inv_sqrt_numel / double(k.d));
    k.neg_step = T(-alpha / denom);
  }

  template <class T, int W>
  FASTOPTIM_HD static void descend(Vec<T, W>& p, const Vec<T, W>& u, const Coeffs<T>& k) {
    p = core::mul_add(u, k.neg_step, k.has_decay ? p * k.decay : p);
  }

  // ---- the vector step (two passes) ----
  template <class T, int W>
  FASTOPTIM_HD static void advance(const Vec<T, W>&, const Vec<T, W>& g, Vec<T, W>* state, const Coeffs<T>& k) {
    const Vec<T, W> signed_g = gradient(g, k);
    state[kVariance] = moment(state[kVariance], signed_g * signed_g, k);
  }

  template <class T, int W>
  FASTOPTIM_HD static void contribute(const Vec<T, W>& p, const Vec<T, W>& g, const Vec<T, W>* state, const Coeffs<T>& k,
                                      Vec<T, W>* out) {
    const Vec<T, W> u = scaled(gradient(g, k), state[kVariance], k);
    out[0] = u * u;
    out[1] = p * p;
  }

  template <class T>
  FASTOPTIM_HD static bool apply_reads_grad(const Coeffs<T>&) { return true; }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, const Vec<T, W>& g, const Vec<T, W>* state, const Coeffs<T>& k) {
    descend(p, scaled(gradient(g, k), state[kVariance], k), k);
  }
};

}  // namespace fastoptim::rules
