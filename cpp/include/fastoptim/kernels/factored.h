// The driver of factored rules (Adafactor's matrices): a tensor is `batches` slices of rows x
// columns, and its second moment is a factor per row and one per column of each slice. A step:
//   pass 1  (parallel over units)  each row's sum of g^2, and each unit's sums of g^2 per column
//   host    (parallel over slices) the factors moved toward those means (Rule::moment), the
//                                  floored mean of the row factors
//   pass 2  (parallel over units)  the sums of u^2 and theta^2 (u from the factored estimate);
//                                  Rule::finish per tensor
//   pass 3  (parallel over units)  the update (Rule::descend)
// A sharded tensor's step splits around the sums its shards add up (FactoredSlots' phase).
// A unit is a run of rows of one slice; how many rows is a function of the shape alone, and every
// sum is taken in a fixed order (rows by core/reduce.h's fixed lanes, units in order), so a step is
// the same bits for any thread count and any ISA. Included only by the per-ISA kernel translation unit.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "fastoptim/core/dtypes.h"
#include "fastoptim/core/lanes.h"
#include "fastoptim/core/parallel.h"
#include "fastoptim/core/reduce.h"
#include "fastoptim/kernels/driver.h"  // (FASTOPTIM_ALWAYS_INLINE)
#include "fastoptim/kernels/factored_split.h"
#include "fastoptim/kernels/isa.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::kernels {

using fastoptim_isa::FactoredSlots;

// A unit aims at this many elements, and a slice has at most kMaxUnitsPerSlice of them (each
// unit's column sums are a row of scratch: this bounds the scratch to 1/64 of a wide slice).
constexpr std::int64_t kFactoredUnitElements = 1 << 16;
constexpr std::int64_t kMaxUnitsPerSlice = 64;

inline std::int64_t rows_per_unit(std::int64_t rows, std::int64_t columns) {
  const std::int64_t by_size = (kFactoredUnitElements + columns - 1) / std::max<std::int64_t>(columns, 1);
  const std::int64_t by_count = (rows + kMaxUnitsPerSlice - 1) / kMaxUnitsPerSlice;
  return std::max<std::int64_t>(1, std::max(by_size, by_count));
}

struct FactoredUnit {
  std::int64_t tensor, slice;  // slice: the index among all slices of the call
  std::int64_t row_begin, row_end;
};

// body(lanes, i) for i in steps of W = kLanes<T> over [0, n), then one lane at a time (lanes is a
// std::integral_constant of the width): the SIMD body and the tail run the same code.
template <class T, class Body>
FASTOPTIM_ALWAYS_INLINE void over_lanes(std::int64_t n, Body&& body) {
  constexpr int W = core::kLanes<T>;
  std::int64_t i = 0;
  for (; i + W <= n; i += W) body(std::integral_constant<int, W>{}, i);
  for (; i < n; ++i) body(std::integral_constant<int, 1>{}, i);
}

template <class Body>
void parallel_units(std::int64_t count, std::int64_t elements, Body&& body) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) if (count > 1 && elements >= core::kParallelMinElements && core::max_threads() > 1)
#endif
  for (std::int64_t u = 0; u < count; ++u) body(u);
}

template <class Rule, class S>
struct FactoredStep {
  using T = core::compute_t<S>;
  using Coeffs = typename Rule::template Coeffs<T>;

  // Per-thread buffers that keep their capacity: a steady-state step allocates nothing.
  struct Buffers {
    std::vector<FactoredUnit> units;
    std::vector<std::int64_t> first_unit;      // tensor t's units: [first_unit[t], first_unit[t + 1])
    std::vector<std::int64_t> first_slice;     // tensor t's slices among all slices
    std::vector<std::int64_t> first_row;       // slice s's rows in row_sums
    std::vector<std::int64_t> slice_units;     // slice s's units: [slice_units[s], slice_units[s + 1])
    std::vector<T> row_sums;                   // per row of every slice: its sum of g^2
    std::vector<T> column_sums;                // per unit, `columns` values: its rows' sums of g^2
    std::vector<std::int64_t> first_column_sum;
    std::vector<T> floored_row_mean;           // per slice
    std::vector<T> column_totals;              // per column of every slice: its sum of g^2
    std::vector<T> column_rsqrt;               // per column of every slice: Rule::column_rsqrt of its factor
    std::vector<std::int64_t> first_column;    // slice s's columns in column_rsqrt
    std::vector<std::array<T, 2>> unit_sums;   // per unit: sums of u^2 and theta^2
    std::vector<Coeffs> coeffs;
  };

  const FactoredSlots* tensors;
  std::int64_t count;
  Buffers& b;

  static Buffers& buffers_of_this_thread() {
    static thread_local Buffers buffers;
    return buffers;
  }

  std::int64_t elements() const {
    std::int64_t n = 0;
    for (std::int64_t t = 0; t < count; ++t) n += tensors[t].batches * tensors[t].rows * tensors[t].columns;
    return n;
  }

  void plan(const Coeffs* given) {
    b.coeffs.assign(given, given + count);
    b.units.clear();
    b.first_unit.assign(std::size_t(count) + 1, 0);
    b.first_slice.assign(std::size_t(count) + 1, 0);
    b.first_row.clear();
    b.slice_units.clear();
    b.first_column.clear();
    b.first_column_sum.clear();
    std::int64_t rows_total = 0, columns_total = 0, column_sums_total = 0;
    for (std::int64_t t = 0; t < count; ++t) {
      const FactoredSlots& x = tensors[t];
      const std::int64_t step = rows_per_unit(x.rows, x.columns);
      for (std::int64_t batch = 0; batch < x.batches; ++batch) {
        const std::int64_t slice = std::int64_t(b.first_row.size());
        b.first_row.push_back(rows_total);
        b.slice_units.push_back(std::int64_t(b.units.size()));
        b.first_column.push_back(columns_total);
        rows_total += x.rows;
        columns_total += x.columns;
        for (std::int64_t r = 0; r < x.rows; r += step) {
          b.units.push_back({t, slice, r, std::min(r + step, x.rows)});
          b.first_column_sum.push_back(column_sums_total);
          column_sums_total += x.columns;
        }
      }
      b.first_unit[std::size_t(t) + 1] = std::int64_t(b.units.size());
      b.first_slice[std::size_t(t) + 1] = std::int64_t(b.first_row.size());
    }
    b.slice_units.push_back(std::int64_t(b.units.size()));
    b.row_sums.resize(std::size_t(rows_total));
    b.column_sums.resize(std::size_t(column_sums_total));
    b.floored_row_mean.resize(b.first_row.size());
    b.column_totals.resize(std::size_t(columns_total));
    b.column_rsqrt.resize(std::size_t(columns_total));
    b.unit_sums.resize(b.units.size());
  }

  // Element (row r, column 0) of slice `slice` of tensor x, for an array laid out like the parameter.
  static std::int64_t row_start(const FactoredSlots& x, std::int64_t slice_in_tensor, std::int64_t r) {
    return (slice_in_tensor * x.rows + r) * x.columns;
  }

  // Pass 1's term: g^2, added to the unit's column sums as it goes.
  struct SquaresTerm {
    const S* g;
    T* columns;
    template <int W>
    FASTOPTIM_ALWAYS_INLINE void at(std::int64_t i, Vec<T, W>* out) const {
      const Vec<T, W> gv = core::load<W>(g + i);
      out[0] = gv * gv;
      core::store<W>(columns + i, core::load<W>(columns + i) + out[0]);
    }
  };

  // Pass 1 of one unit: each row's sum of g^2 (fixed lanes), and the unit's per-column sums.
  void square_sums(std::int64_t u) {
    const FactoredUnit& unit = b.units[std::size_t(u)];
    const FactoredSlots& x = tensors[unit.tensor];
    const std::int64_t local_slice = unit.slice - b.first_slice[std::size_t(unit.tensor)];
    T* columns = b.column_sums.data() + b.first_column_sum[std::size_t(u)];
    std::fill(columns, columns + x.columns, T(0));
    for (std::int64_t r = unit.row_begin; r < unit.row_end; ++r) {
      SquaresTerm term{static_cast<const S*>(x.grad) + row_start(x, local_slice, r), columns};
      b.row_sums[std::size_t(b.first_row[std::size_t(unit.slice)] + r)] =
          core::block_sums<T, core::kLanes<T>, 1>(0, x.columns, term)[0];
    }
  }

  // The slice's units' column sums of g^2, added in unit order.
  void total_columns(std::int64_t slice, std::int64_t columns, T* totals) const {
    const std::int64_t first = b.slice_units[std::size_t(slice)], last = b.slice_units[std::size_t(slice) + 1];
    over_lanes<T>(columns, [&](auto lanes, std::int64_t c) {
      constexpr int W = decltype(lanes)::value;
      Vec<T, W> sum = Vec<T, W>::broadcast(T(0));
      for (std::int64_t u = first; u < last; ++u) sum = sum + core::load<W>(b.column_sums.data() + b.first_column_sum[std::size_t(u)] + c);
      core::store<W>(totals + c, sum);
    });
  }

  static T row_factor_total(const S* rows, std::int64_t count) {
    T total = 0;
    for (std::int64_t r = 0; r < count; ++r) total += core::load<1>(rows + r).v[0];  // (the factors as stored)
    return total;
  }

  // One slice's factors moved toward this step's mean squares (in a split step, those this call has
  // whole), then its floored row mean and its columns' rsqrt; or, in phase 1 of a split step, what
  // the shards add up.
  void prepare_slice(std::int64_t tensor, std::int64_t slice) {
    const FactoredSlots& x = tensors[tensor];
    const Coeffs& k = b.coeffs[std::size_t(tensor)];
    const std::int64_t local_slice = slice - b.first_slice[std::size_t(tensor)];
    S* rows = static_cast<S*>(x.row_factor) + local_slice * x.rows;
    S* columns = static_cast<S*>(x.column_factor) + local_slice * x.columns;
    T* row_sums = b.row_sums.data() + b.first_row[std::size_t(slice)];
    T* column_totals = b.column_totals.data() + b.first_column[std::size_t(slice)];
    const int split = cut_of(x);
    double* exchange = exchanged(x, local_slice);
    if (sums_squares(x)) total_columns(slice, x.columns, column_totals);
    if (x.phase == 2 && split == 1) std::copy(exchange + 1, exchange + 1 + x.columns, column_totals);
    if (x.phase == 2 && split == 2) std::copy(exchange, exchange + x.rows, row_sums);
    if (moves_rows(x)) {
      for (std::int64_t r = 0; r < x.rows; ++r) {
        const Vec<T, 1> mean_square = Vec<T, 1>::broadcast(row_sums[r] / T(whole_columns(x)));
        core::store<1>(rows + r, Rule::moment(core::load<1>(rows + r), mean_square, k));
      }
    }
    if (moves_columns(x)) {
      over_lanes<T>(x.columns, [&](auto lanes, std::int64_t c) {
        constexpr int W = decltype(lanes)::value;
        const Vec<T, W> mean_square = core::load<W>(column_totals + c) / T(whole_rows(x));
        core::store<W>(columns + c, Rule::moment(core::load<W>(columns + c), mean_square, k));
      });
    }
    if (x.phase == 1 && split == 1) {
      exchange[0] = double(row_factor_total(rows, x.rows));
      std::copy(column_totals, column_totals + x.columns, exchange + 1);
      return;
    }
    if (x.phase == 1 && split == 2) {
      std::copy(row_sums, row_sums + x.rows, exchange);
      return;
    }
    const T row_total = split == 1 ? T(exchange[0]) : row_factor_total(rows, x.rows);
    b.floored_row_mean[std::size_t(slice)] = Rule::floored_row_mean(row_total, whole_rows(x), k);
    T* rsqrt = b.column_rsqrt.data() + b.first_column[std::size_t(slice)];
    for (std::int64_t c = 0; c < x.columns; ++c) rsqrt[c] = Rule::column_rsqrt(core::load<1>(columns + c).v[0]);
  }

  // What passes 2 and 3 read for one row of a slice.
  struct RowView {
    const S* g;
    S* p;
    std::int64_t first_index;  // the index in its tensor of the row's element 0
    const S* columns;         // the slice's column factors
    const T* columns_rsqrt;   // and their Rule::column_rsqrt
    typename Rule::template FactoredRow<T> row;

    // u of W elements from column c.
    template <int W>
    FASTOPTIM_ALWAYS_INLINE Vec<T, W> update_at(std::int64_t c, const Coeffs& k) const {
      return Rule::factored_scaled(Rule::gradient(core::load<W>(g + c), k), row, core::load<W>(columns + c),
                                   core::load<W>(columns_rsqrt + c), k);
    }
  };
  RowView row_view(const FactoredUnit& unit, std::int64_t r) const {
    const FactoredSlots& x = tensors[unit.tensor];
    const std::int64_t local_slice = unit.slice - b.first_slice[std::size_t(unit.tensor)];
    const std::int64_t start = row_start(x, local_slice, r);
    const S* rows = static_cast<const S*>(x.row_factor) + local_slice * x.rows;
    return {static_cast<const S*>(x.grad) + start, static_cast<S*>(x.param) + start, start,
            static_cast<const S*>(x.column_factor) + local_slice * x.columns,
            b.column_rsqrt.data() + b.first_column[std::size_t(unit.slice)],
            Rule::factored_row(core::load<1>(rows + r).v[0], b.floored_row_mean[std::size_t(unit.slice)])};
  }

  // Pass 2's term: u^2 and theta^2.
  struct UpdateSumsTerm {
    RowView row;
    const Coeffs* k;
    template <int W>
    FASTOPTIM_ALWAYS_INLINE void at(std::int64_t c, Vec<T, W>* out) const {
      const Vec<T, W> update = row.template update_at<W>(c, *k);
      const Vec<T, W> p = core::load<W>(row.p + c);
      out[0] = update * update;
      out[1] = p * p;
    }
  };

  // Pass 2 of one unit: its sums of u^2 and theta^2, row by row in order.
  void update_sums(std::int64_t u) {
    const FactoredUnit& unit = b.units[std::size_t(u)];
    const Coeffs& k = b.coeffs[std::size_t(unit.tensor)];
    std::array<T, 2> sums{};
    for (std::int64_t r = unit.row_begin; r < unit.row_end; ++r) {
      UpdateSumsTerm term{row_view(unit, r), &k};
      const auto row_sums = core::block_sums<T, core::kLanes<T>, 2>(0, tensors[unit.tensor].columns, term);
      sums[0] += row_sums[0];
      sums[1] += row_sums[1];
    }
    b.unit_sums[std::size_t(u)] = sums;
  }

  // Pass 3 of one unit.
  void descend(std::int64_t u) {
    const FactoredUnit& unit = b.units[std::size_t(u)];
    const Coeffs& k = b.coeffs[std::size_t(unit.tensor)];
    const FactoredSlots& x = tensors[unit.tensor];
    for (std::int64_t r = unit.row_begin; r < unit.row_end; ++r) {
      const RowView row = row_view(unit, r);
      auto descended = [&](auto lanes, std::int64_t c) {
        Vec<T, decltype(lanes)::value> p = core::load<decltype(lanes)::value>(row.p + c);
        Rule::descend(p, row.template update_at<decltype(lanes)::value>(c, k), k);
        return p;
      };
      if constexpr (std::is_same_v<S, core::bf16>) {
        if (x.stochastic_rounding) {
          over_rounding_groups({x.rounding_seed, x.rounding_stream, x.rounding_step}, x.first_index + row.first_index, 0, x.columns,
                               [&](auto lanes, std::int64_t c, const std::uint16_t* bits) {
                                 core::store_rounded<decltype(lanes)::value>(row.p + c, descended(lanes, c), bits);
                               });
          continue;
        }
      }
      over_lanes<T>(x.columns, [&](auto lanes, std::int64_t c) { core::store<decltype(lanes)::value>(row.p + c, descended(lanes, c)); });
    }
  }

  void run(const Coeffs* given) {
    plan(given);
    const std::int64_t n = elements();
    const auto unit_count = std::int64_t(b.units.size());
    auto tensor_of = [&](std::int64_t u) -> const FactoredSlots& { return tensors[b.units[std::size_t(u)].tensor]; };
    parallel_units(unit_count, n, [&](std::int64_t u) {
      if (sums_squares(tensor_of(u))) square_sums(u);
    });
    const auto slice_count = std::int64_t(b.first_row.size());
    parallel_units(slice_count, n, [&](std::int64_t s) {
      const auto tensor = std::int64_t(std::upper_bound(b.first_slice.begin(), b.first_slice.end(), s) - b.first_slice.begin()) - 1;
      prepare_slice(tensor, s);
    });
    parallel_units(unit_count, n, [&](std::int64_t u) {
      if (sums_due(tensor_of(u))) update_sums(u);
    });
    for (std::int64_t t = 0; t < count; ++t) {
      const FactoredSlots& x = tensors[t];
      std::array<T, 2> sums{};
      if (sums_due(x)) {
        for (std::int64_t u = b.first_unit[std::size_t(t)]; u < b.first_unit[std::size_t(t) + 1]; ++u) {
          sums[0] += b.unit_sums[std::size_t(u)][0];
          sums[1] += b.unit_sums[std::size_t(u)][1];
        }
        if (x.phase) std::copy(sums.begin(), sums.end(), x.update_sums);
      }
      if (x.phase == 3) sums = {T(x.update_sums[0]), T(x.update_sums[1])};
      if (update_due(x)) Rule::finish(b.coeffs[std::size_t(t)], sums.data());
    }
    parallel_units(unit_count, n, [&](std::int64_t u) {
      if (update_due(tensor_of(u))) descend(u);
    });
  }
};

template <class Rule, class S>
void run_factored(const FactoredSlots* tensors, std::int64_t count, const void* coeffs) {
  using Step = FactoredStep<Rule, S>;
  Step step{tensors, count, Step::buffers_of_this_thread()};
  step.run(static_cast<const typename Step::Coeffs*>(coeffs));
}

template <class Rule>
void factored_kernel(const FactoredSlots* tensors, std::int64_t count, const void* coeffs, fastoptim_isa::Dtype dtype) {
  switch (dtype) {
    case fastoptim_isa::Dtype::f32: return run_factored<Rule, float>(tensors, count, coeffs);
    case fastoptim_isa::Dtype::f64: return run_factored<Rule, double>(tensors, count, coeffs);
    case fastoptim_isa::Dtype::bf16: return run_factored<Rule, core::bf16>(tensors, count, coeffs);
    case fastoptim_isa::Dtype::f16: return run_factored<Rule, core::f16>(tensors, count, coeffs);
  }
}

}  // namespace fastoptim::kernels
