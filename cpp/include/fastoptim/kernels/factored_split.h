// A factored tensor's part of a split step (FactoredSlots' phase, kernels/isa.h): which factors a
// call moves, which sums it gives or takes, and the whole tensor's sizes its means divide by. Read
// by the CPU driver (kernels/factored.h) and the CUDA one (cpp/src/cuda/factored.cu) alike, so the
// phases mean the same on both.
#pragma once
#include <cstdint>

#include "fastoptim/core/device.h"
#include "fastoptim/kernels/isa.h"

namespace fastoptim::kernels {

using fastoptim_isa::FactoredSlots;

// What the shards cut (0 in a whole step: nothing to add up).
FASTOPTIM_HD inline int cut_of(const FactoredSlots& x) { return x.phase ? x.split : 0; }
// This call sums the squares of g (a whole step, or phase 1).
FASTOPTIM_HD inline bool sums_squares(const FactoredSlots& x) { return x.phase <= 1; }
// The row factors, the column factors move in this call: those the shard has whole in the call that
// sums the squares, the others in phase 2 from the added-up sums.
FASTOPTIM_HD inline bool moves_rows(const FactoredSlots& x) {
  return (sums_squares(x) && cut_of(x) != 2) || (x.phase == 2 && cut_of(x) == 2);
}
FASTOPTIM_HD inline bool moves_columns(const FactoredSlots& x) {
  return (sums_squares(x) && cut_of(x) != 1) || (x.phase == 2 && cut_of(x) == 1);
}
// This call gives the sums of u^2 and theta^2 (or, in a whole step, finishes with them), and updates.
FASTOPTIM_HD inline bool sums_due(const FactoredSlots& x) {
  return x.phase == 0 || (x.phase == 1 && cut_of(x) == 0) || (x.phase == 2 && cut_of(x) != 0);
}
FASTOPTIM_HD inline bool update_due(const FactoredSlots& x) { return x.phase == 0 || x.phase == 3; }
// The means divide by the whole tensor's rows and columns.
FASTOPTIM_HD inline std::int64_t whole_rows(const FactoredSlots& x) { return x.phase ? x.whole_rows : x.rows; }
FASTOPTIM_HD inline std::int64_t whole_columns(const FactoredSlots& x) { return x.phase ? x.whole_columns : x.columns; }
// What the shards add up for slice `slice` (cutting rows: the row factors' total, then each column's
// sum of g^2; cutting columns: each row's sum of g^2); null where nothing is.
FASTOPTIM_HD inline double* exchanged(const FactoredSlots& x, std::int64_t slice) {
  const int cut = cut_of(x);
  return cut ? x.factor_sums + slice * (cut == 1 ? 1 + x.columns : x.rows) : nullptr;
}

}  // namespace fastoptim::kernels
