// Hyperparameters of a rule, declared once as a field list. The list generates the struct the
// math reads, the defaults, the validation, and the metadata the Python and libtorch front ends
// read (names, defaults, order of the flat vector the ops take).
#pragma once
#include <cmath>
#include <cstddef>
#include <string>

#include "fastoptim/core/device.h"

namespace fastoptim::core {

// What a field accepts. Flags are stored as 0/1 in the flat vector. Every check but `bound`
// rejects NaN and infinities.
enum class Check : int {
  any,           // any finite value
  non_negative,  // 0 <= x < inf
  unit_interval, // 0 <= x < 1 (betas, decay rates)
  unit_closed,   // 0 <= x <= 1 (interpolation weights)
  flag,          // 0 or 1
  bound,         // 0 <= x, inf allowed (an upper clamp that inf switches off)
  whole,         // a whole number in [0, 2**53), exact in a double (seeds)
  non_positive,  // -inf < x <= 0 (a decay exponent)
  at_least_one,  // 1 <= x < inf (a clipping threshold)
  unset_or_non_negative,  // -1 (unset: the rule chooses, e.g. the parameter dtype's epsilon) or 0 <= x < inf
};

struct Field {
  const char* name;
  double default_value;
  Check check;
};

inline bool field_accepts(Check c, double x) {
  switch (c) {
    case Check::any: return std::isfinite(x);
    case Check::non_negative: return x >= 0.0 && std::isfinite(x);  // false for NaN
    case Check::unit_interval: return x >= 0.0 && x < 1.0;
    case Check::unit_closed: return x >= 0.0 && x <= 1.0;
    case Check::flag: return x == 0.0 || x == 1.0;
    case Check::bound: return x >= 0.0;
    case Check::whole: return x >= 0.0 && x < 9007199254740992.0 && std::floor(x) == x;
    case Check::non_positive: return x <= 0.0 && std::isfinite(x);
    case Check::at_least_one: return x >= 1.0 && std::isfinite(x);
    case Check::unset_or_non_negative: return x == -1.0 || (x >= 0.0 && std::isfinite(x));
  }
  return false;
}

inline const char* check_text(Check c) {
  switch (c) {
    case Check::any: return "a finite number";
    case Check::non_negative: return "finite and >= 0";
    case Check::unit_interval: return "in [0, 1)";
    case Check::unit_closed: return "in [0, 1]";
    case Check::flag: return "0 or 1 (a bool)";
    case Check::bound: return ">= 0 (inf: no bound)";
    case Check::whole: return "a whole number in [0, 2**53)";
    case Check::non_positive: return "finite and <= 0";
    case Check::at_least_one: return "finite and >= 1";
    case Check::unset_or_non_negative: return "None (-1) or finite and >= 0";
  }
  return "";
}

// A state tensor of a rule, under torch.optim's name. It exists when `needs_field` is nullptr or
// that field is nonzero (amsgrad, momentum, centered): a plain condition that the C++ layers and
// the Python front end evaluate alike.
struct StateSlot {
  const char* name;
  const char* needs_field;
};

template <class Hyper>
inline int field_index(const char* name) {
  for (std::size_t i = 0; i < Hyper::kFieldCount; ++i)
    if (std::string(Hyper::kFields[i].name) == name) return int(i);
  return -1;
}

// Whether state slot `slot` of Rule exists for the flat hyperparameter vector `values`.
template <class Rule>
inline bool uses_state(const double* values, int slot) {
  const char* needs = Rule::kState[slot].needs_field;
  return needs == nullptr || values[field_index<typename Rule::Hyper>(needs)] != 0;
}

// Index of the first field of `values` that its check rejects, or -1 when all are valid.
template <class Hyper>
inline int first_invalid_field(const double* values) {
  for (std::size_t i = 0; i < Hyper::kFieldCount; ++i)
    if (!field_accepts(Hyper::kFields[i].check, values[i])) return int(i);
  return -1;
}

}  // namespace fastoptim::core

// FASTOPTIM_HYPER(LIST) defines `struct Hyper` from an X-macro list of
// F(name, default, check) entries: one double member per field, the field table, and
// `from(values)` / `write(values)` which read / write the flat vector in declaration order.
#define FASTOPTIM_HYPER_MEMBER(name, def, check) double name = def;
#define FASTOPTIM_HYPER_ENTRY(name, def, check) ::fastoptim::core::Field{#name, def, ::fastoptim::core::Check::check},
#define FASTOPTIM_HYPER_READ(name, def, check) h.name = values[i++];
#define FASTOPTIM_HYPER_WRITE(name, def, check) values[i++] = name;
#define FASTOPTIM_HYPER(LIST)                                                         \
  struct Hyper {                                                                      \
    LIST(FASTOPTIM_HYPER_MEMBER)                                                      \
    static constexpr ::fastoptim::core::Field kFields[] = {LIST(FASTOPTIM_HYPER_ENTRY)}; \
    static constexpr std::size_t kFieldCount = sizeof(kFields) / sizeof(kFields[0]);  \
    FASTOPTIM_HD static Hyper from(const double* values) {                            \
      Hyper h;                                                                        \
      std::size_t i = 0;                                                              \
      LIST(FASTOPTIM_HYPER_READ)                                                      \
      return h;                                                                       \
    }                                                                                 \
    FASTOPTIM_HD void write(double* values) const {                                   \
      std::size_t i = 0;                                                              \
      LIST(FASTOPTIM_HYPER_WRITE)                                                     \
    }                                                                                 \
  };
