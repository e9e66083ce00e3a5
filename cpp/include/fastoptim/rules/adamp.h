// AdamP (Heo et al., 2021), the official algorithm (clovaai/AdamP):
//   m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2  (amsgrad, holocron's option: vmax <- max(vmax, v))
//   q = m / (sqrt(v) / sqrt(1-b2^t) + eps)          nesterov: q = (b1 m + (1-b1) g) / (...)
//   for tensors of ndim > 1, first per row of dim 0 (channel view), then whole (layer view):
//     if max over rows of |cos(g, theta)| < delta / sqrt(row length):
//       q <- q - theta_hat (theta_hat . q) per row, theta_hat = theta / (||theta|| + eps);  ratio = wd_ratio
//   theta <- theta (1 - lr wd ratio)   (decoupled; ratio = 1 when not projected)
//   theta <- theta - lr / (1-b1^t) q
// cos(x, y) = x.y / (max(||x||, eps) max(||y||, eps)), as torch.nn.functional.cosine_similarity.
// Two passes: the moments with the per-row sums g.theta, g.g, theta.theta, theta.q; then the update.
// 1 / sqrt(1-b2^t) is a reciprocal computed in double on the host, so q costs one division per element
// and pass, not two (the same values as the references within their tolerance, not bit for bit).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "fastoptim/parts/moments.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct AdamP {
  static constexpr const char* kName = "adamp";
#define FASTOPTIM_FIELDS_adamp(F)                                                                  \
  F(lr, 1e-3, non_negative) F(beta1, 0.9, unit_interval) F(beta2, 0.999, unit_interval)          \
  F(eps, 1e-8, non_negative) F(weight_decay, 0.0, non_negative) F(amsgrad, 0, flag)              \
  F(delta, 0.1, non_negative) F(wd_ratio, 0.1, non_negative) F(nesterov, 0, flag) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_adamp)

  enum Slot { kExpAvg, kExpAvgSq, kMaxExpAvgSq };
  static constexpr core::StateSlot kState[] = {
      {"exp_avg", nullptr}, {"exp_avg_sq", nullptr}, {"max_exp_avg_sq", "amsgrad"}};
  static constexpr int kStateSlots = 3;
  static constexpr bool kCountsSteps = true;
  static constexpr int kSums = 4;  // g.theta, g.g, theta.theta, theta.q
  static constexpr bool kStateInFirstPass = true;
  static constexpr bool kSumsPerRow = true;
  static constexpr unsigned kEightBitSlots = (1u << kStateSlots) - 1;  // (its moments: every slot)
  // A split step's summary of a tensor's rows (shards of whole rows): the largest row |cos(g, theta)|,
  // combined across shards by its maximum, and the four totals, added up.
  static constexpr int kRowSummary = 5;
  static constexpr int kRowSummaryMax = 1;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  template <class T>
  struct Coeffs {
    T beta1, one_minus_beta1, beta2, one_minus_beta2, inv_bias_correction2_sqrt, neg_step_size, eps;
    T row_threshold, layer_threshold;  // delta / sqrt(row length), delta / sqrt(numel)
    T lr_weight_decay, wd_ratio;
    bool amsgrad, nesterov, maximize, matrix, has_weight_decay;
    T projection;    // q <- q - projection theta; set by finish_rows()
    T decay_factor;  // 1 - lr wd ratio; set by finish_rows()
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    return {T(h.beta1),
            T(1 - h.beta1),
            T(h.beta2),
            T(1 - h.beta2),
            T(1 / std::sqrt(1 - std::pow(h.beta2, s.step))),
            T(-h.lr / (1 - std::pow(h.beta1, s.step))),
            T(h.eps),
            T(h.delta / std::sqrt(double(s.numel) / double(s.rows))),
            T(h.delta / std::sqrt(double(s.numel))),
            T(h.lr * h.weight_decay),
            T(h.wd_ratio),
            h.amsgrad != 0,
            h.nesterov != 0,
            h.maximize != 0,
            s.matrix,
            h.weight_decay != 0,
            T(0),
            T(1)};
  }

  template <class T>
  FASTOPTIM_HD static bool apply_reads_grad(const Coeffs<T>& k) { return k.nesterov; }
  // Vectors are never projected (official: ndim > 1 only), so their step needs no sums.
  template <class T>
  FASTOPTIM_HD static bool needs_sums(const Coeffs<T>& k) { return k.matrix; }

  // q from the updated moments (and, for Nesterov, the gradient); both passes compute it alike.
  template <class T, int W>
  FASTOPTIM_HD static Vec<T, W> direction(Vec<T, W> g, const Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    const Vec<T, W> denom =
        core::mul_add(sqrt(state[k.amsgrad ? kMaxExpAvgSq : kExpAvgSq]), k.inv_bias_correction2_sqrt, Vec<T, W>::broadcast(k.eps));
    const Vec<T, W> numer = k.nesterov ? state[kExpAvg] * k.beta1 + g * k.one_minus_beta1 : state[kExpAvg];
    return numer / denom;
  }

  template <class T, int W>
  FASTOPTIM_HD static void advance(const Vec<T, W>&, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    state[kExpAvg] = core::mul_add(g, k.one_minus_beta1, state[kExpAvg] * k.beta1);
    parts::ema_of_square(state[kExpAvgSq], g, k.beta2, k.one_minus_beta2);
    if (k.amsgrad) state[kMaxExpAvgSq] = core::maximum(state[kMaxExpAvgSq], state[kExpAvgSq]);
  }

  template <class T, int W>
  FASTOPTIM_HD static void contribute(const Vec<T, W>& p, const Vec<T, W>& g, const Vec<T, W>* state, const Coeffs<T>& k,
                         Vec<T, W>* out) {
    out[0] = g * p;
    out[1] = g * g;
    out[2] = p * p;
    out[3] = p * direction(g, state, k);
  }

  // |cos(g, theta)| from the sums g.theta, g.g, theta.theta.
  template <class T>
  FASTOPTIM_HD static T abs_cosine(T dot, T grad_sq, T weight_sq, T eps) {
    return std::abs(dot) / (std::max(std::sqrt(grad_sq), eps) * std::max(std::sqrt(weight_sq), eps));
  }

  // The largest row cosine and the totals of a tensor's rows (out: kRowSummary values).
  template <class T, class Sums>
  FASTOPTIM_HD static void summarize_rows(const Coeffs<T>* rows, const Sums* sums, std::int64_t row_count, double* out) {
    T max_row_cosine = 0;
    T total[4] = {0, 0, 0, 0};
    for (std::int64_t r = 0; r < row_count; ++r) {
      max_row_cosine = std::max(max_row_cosine, abs_cosine(sums[r][0], sums[r][1], sums[r][2], rows[0].eps));
      for (int n = 0; n < 4; ++n) total[n] += sums[r][n];
    }
    out[0] = double(max_row_cosine);
    for (int n = 0; n < 4; ++n) out[1 + n] = double(total[n]);
  }

  // Chooses the channel view, the layer view or no projection for one tensor from its rows' sums
  // (and `whole`, the whole tensor's summary of a split step, when the rows are a shard's).
  template <class T, class Sums>
  FASTOPTIM_HD static void finish_rows(Coeffs<T>* rows, const Sums* sums, std::int64_t row_count,
                                       const double* whole = nullptr) {
    const Coeffs<T>& k = rows[0];
    bool projected = false;
    if (k.matrix) {
      double summary[kRowSummary];
      if (!whole) summarize_rows(rows, sums, row_count, summary);
      const double* s = whole ? whole : summary;
      const T max_row_cosine = T(s[0]);
      const T total[4] = {T(s[1]), T(s[2]), T(s[3]), T(s[4])};
      if (max_row_cosine < k.row_threshold) {
        for (std::int64_t r = 0; r < row_count; ++r) rows[r].projection = projection(sums[r][3], sums[r][2], k.eps);
        projected = true;
      } else if (abs_cosine(total[0], total[1], total[2], k.eps) < k.layer_threshold) {
        const T layer = projection(total[3], total[2], k.eps);
        for (std::int64_t r = 0; r < row_count; ++r) rows[r].projection = layer;
        projected = true;
      }
    }
    const T decay_factor = T(1) - k.lr_weight_decay * (projected ? k.wd_ratio : T(1));
    for (std::int64_t r = 0; r < row_count; ++r) rows[r].decay_factor = decay_factor;
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, const Vec<T, W>& g, const Vec<T, W>* state, const Coeffs<T>& k) {
    Vec<T, W> q = direction(g, state, k);
    if (k.projection != T(0)) q = q - p * k.projection;
    if (k.has_weight_decay) p = p * k.decay_factor;
    p = core::mul_add(q, k.neg_step_size, p);
  }

 private:
  // theta_hat (theta_hat . q) = theta * (theta . q) / (||theta|| + eps)^2
  template <class T>
  FASTOPTIM_HD static T projection(T weight_dot_q, T weight_sq, T eps) {
    const T scale = std::sqrt(weight_sq) + eps;
    return weight_dot_q / (scale * scale);
  }
};

}  // namespace fastoptim::rules
