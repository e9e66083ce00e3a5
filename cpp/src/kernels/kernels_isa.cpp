// Compiled once per ISA (scalar, sse2, avx2, avx512, neon) with FASTOPTIM_ISA_TABLE naming the
// table function, FASTOPTIM_ISA_NAME its name and FASTOPTIM_VECTOR_BYTES the register width.
#include "fastoptim/kernels/driver.h"
#include "fastoptim/kernels/dense_solve.h"
#include "fastoptim/kernels/vector_passes.h"
#include "fastoptim/rules/registry.h"

namespace fastoptim_isa {

KernelTable FASTOPTIM_ISA_TABLE() {
#define FASTOPTIM_TABLE_KERNEL(Type, name) &fastoptim::kernels::elementwise_kernel<fastoptim::rules::Type>,
  namespace kernels = fastoptim::kernels;
  return KernelTable{FASTOPTIM_ISA_NAME, FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_TABLE_KERNEL)
                     VectorKernels{&kernels::dots_entry, &kernels::cg_update_entry, &kernels::axpby_dot_entry,
                                   &kernels::cholesky_solve}};
#undef FASTOPTIM_TABLE_KERNEL
}

}  // namespace fastoptim_isa
