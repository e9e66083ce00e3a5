// Compiled once per ISA (scalar, sse2, avx2, avx512, neon) with FASTOPTIM_ISA_TABLE naming the
// table function, FASTOPTIM_ISA_NAME its name and FASTOPTIM_VECTOR_BYTES the register width.
#include "fastoptim/kernels/driver.h"
#include "fastoptim/kernels/factored.h"
#include "fastoptim/kernels/dense_solve.h"
#include "fastoptim/kernels/vector_passes.h"
#include "fastoptim/rules/registry.h"

namespace fastoptim_isa {

// The table is constant data, initialised at load time with no code: building it in a function
// compiled for this ISA would let the compiler assemble it in this ISA's registers, and then merely
// listing the tables would fault on a CPU without it (an AVX2 machine building the AVX-512 table).
namespace {
namespace kernels = fastoptim::kernels;
#define FASTOPTIM_TABLE_KERNEL(Type, name) &kernels::elementwise_kernel<fastoptim::rules::Type>,
constexpr KernelTable kTable{FASTOPTIM_ISA_NAME, FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_TABLE_KERNEL)
                             VectorKernels{&kernels::dots_entry, &kernels::cg_update_entry, &kernels::axpby_dot_entry,
                                           &kernels::cholesky_solve},
                             &kernels::factored_kernel<fastoptim::rules::Adafactor>};
#undef FASTOPTIM_TABLE_KERNEL
}  // namespace

const KernelTable& FASTOPTIM_ISA_TABLE() { return kTable; }

}  // namespace fastoptim_isa
