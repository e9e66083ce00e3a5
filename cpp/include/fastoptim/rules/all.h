// Every element-wise rule. Adding a rule: write its header, include it here, add it to the list.
#pragma once
#include "fastoptim/rules/adabelief.h"
#include "fastoptim/rules/adahessian.h"
#include "fastoptim/rules/amac.h"
#include "fastoptim/rules/adagrad.h"
#include "fastoptim/rules/adam.h"
#include "fastoptim/rules/adamp.h"
#include "fastoptim/rules/ademamix.h"
#include "fastoptim/rules/adan.h"
#include "fastoptim/rules/average.h"
#include "fastoptim/rules/hessian_ema.h"
#include "fastoptim/rules/lamb.h"
#include "fastoptim/rules/lars.h"
#include "fastoptim/rules/list.h"
#include "fastoptim/rules/rmsprop.h"
#include "fastoptim/rules/scout_track.h"
#include "fastoptim/rules/sgd.h"
#include "fastoptim/rules/sophia.h"
#include "fastoptim/rules/tadam.h"

#include "fastoptim/core/isa.h"

namespace fastoptim::rules {

// KernelEntry<Rule>::member: the rule's entry in a fastoptim_isa::KernelTable.
template <class Rule>
struct KernelEntry;
#define FASTOPTIM_KERNEL_ENTRY(Type, name)                                  \
  template <>                                                               \
  struct KernelEntry<Type> {                                                \
    static constexpr auto member = &fastoptim_isa::KernelTable::name;       \
  };
FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_KERNEL_ENTRY)
#undef FASTOPTIM_KERNEL_ENTRY

}  // namespace fastoptim::rules
