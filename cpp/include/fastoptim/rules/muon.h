// Muon (Jordan et al., 2024), torch.optim.Muon's math, in its two element-wise halves; the
// Newton-Schulz orthogonalisation between them is matrix products, which the front end runs
// through ATen as torch does:
//   muon         B <- lerp(B, g, 1 - mu);  U = nesterov ? lerp(g, B, mu) : B
//                (U, the update to orthogonalise, is written in the "param" slot: a scratch tensor)
//   muon_update  theta <- theta (1 - lr wd) - lr' O   for the orthogonalised O of an A x B matrix (or a shard of it),
//                lr' = lr sqrt(max(1, A / B)) ("original") or 0.2 lr sqrt(max(A, B)) ("match_rms_adamw")
// `muon`'s field list is Muon's hyperparameters, all of them (the orthogonalisation's too), so
// a param group is checked by it as any other rule's.
#pragma once
#include <cmath>

#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

// torch's adjust_lr_fn, as the number the field lists hold
enum class MuonLrAdjust : int { kOriginal = 0, kMatchRmsAdamW = 1 };

struct Muon {
  static constexpr const char* kName = "muon";
#define FASTOPTIM_FIELDS_muon(F)                                                                      \
  F(lr, 1e-3, non_negative) F(weight_decay, 0.1, non_negative) F(momentum, 0.95, non_negative)       \
  F(nesterov, 1, flag) F(ns_a, 3.4445, any) F(ns_b, -4.7750, any) F(ns_c, 2.0315, any) F(eps, 1e-7, non_negative) \
  F(ns_steps, 5, whole) F(adjust_lr_fn, 0, whole)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_muon)

  static constexpr core::StateSlot kState[] = {{"momentum_buffer", nullptr}};
  static constexpr int kStateSlots = 1;
  static constexpr unsigned kEightBitSlots = 1;  // (its momentum)
  static constexpr bool kCountsSteps = false;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper& h) {
    if (h.ns_steps >= 100) return "Number of steps must be less than 100 for computational efficiency";
    if (h.adjust_lr_fn > 1) return "adjust_lr_fn must be None, 'original' or 'match_rms_adamw'";
    return nullptr;
  }

  template <class T>
  struct Coeffs {
    T momentum, one_minus_momentum;
    bool nesterov;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo&) {
    return {T(h.momentum), T(1 - h.momentum), h.nesterov != 0};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& update, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    Vec<T, W>& buffer = state[0];
    buffer = core::lerp(buffer, g, k.one_minus_momentum);
    update = k.nesterov ? core::lerp(g, buffer, k.momentum) : buffer;
  }
};

struct MuonUpdate {
  static constexpr const char* kName = "muon_update";
// rows and columns: the shape the lr is adjusted for, 0 for the tensor's own (a front end stepping
// the shard of a matrix gives the whole matrix's)
#define FASTOPTIM_FIELDS_muon_update(F)                                                              \
  F(lr, 1e-3, non_negative) F(weight_decay, 0.1, non_negative) F(adjust_lr_fn, 0, whole) F(rows, 0, whole) \
  F(columns, 0, whole)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_muon_update)

  static constexpr core::StateSlot kState[] = {{nullptr, nullptr}};  // (none: C++ has no empty arrays)
  static constexpr int kStateSlots = 0;
  static constexpr bool kCountsSteps = false;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper& h) {
    return h.adjust_lr_fn > 1 ? "adjust_lr_fn must be None, 'original' or 'match_rms_adamw'" : nullptr;
  }

  // torch's _adjust_lr for a matrix of `rows` x `columns`
  FASTOPTIM_HD static double adjusted_lr(const Hyper& h, double rows, double columns) {
    if (h.adjust_lr_fn == double(MuonLrAdjust::kMatchRmsAdamW)) return h.lr * (0.2 * std::sqrt(rows > columns ? rows : columns));
    return h.lr * std::sqrt(rows > columns ? rows / columns : 1.0);
  }

  template <class T>
  struct Coeffs {
    T decay_factor, neg_lr;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    const double rows = h.rows > 0 ? h.rows : double(s.rows);
    const double columns = h.columns > 0 ? h.columns : s.rows > 0 ? double(s.numel) / double(s.rows) : 0.0;
    return {T(1 - h.lr * h.weight_decay), T(-adjusted_lr(h, rows, columns))};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> orthogonalised, Vec<T, W>*, const Coeffs<T>& k) {
    p = core::mul_add(orthogonalised, k.neg_lr, p * k.decay_factor);
  }
};

}  // namespace fastoptim::rules
