// Chooses the kernel table at run time from what the CPU supports, so one binary runs on any
// x86-64 (or aarch64) machine and still uses its widest vectors. (Each ISA's table is constant data
// in its own translation unit: listing them runs no code of an ISA the CPU may lack.)
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fastoptim/kernels/isa.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace fastoptim_isa {

const KernelTable& kernels_scalar();
#if defined(__x86_64__)
#if defined(FASTOPTIM_SSE2_TABLE)
const KernelTable& kernels_sse2();
#endif
const KernelTable& kernels_avx2();
const KernelTable& kernels_avx512();
#elif defined(__aarch64__)
const KernelTable& kernels_neon();
#endif

namespace {

const std::vector<KernelTable>& tables() {
  static const std::vector<KernelTable> all = {
      kernels_scalar(),
#if defined(__x86_64__)
#if defined(FASTOPTIM_SSE2_TABLE)  // (CMake's FASTOPTIM_SSE2_TABLE: off by default)
      kernels_sse2(),
#endif
      kernels_avx2(), kernels_avx512(),
#elif defined(__aarch64__)
      kernels_neon(),
#endif
  };
  return all;
}

int find(const char* isa) {
  for (int i = 0; i < table_count(); ++i)
    if (std::strcmp(tables()[i].isa, isa) == 0) return i;
  return -1;
}

int best_supported() {
  int best = 0;
  for (int i = 0; i < table_count(); ++i)
    if (cpu_supports(tables()[i].isa)) best = i;
  return best;
}

std::atomic<int>& active_index() {
  static std::atomic<int> index = [] {
    const char* forced = std::getenv("FASTOPTIM_ISA");
    const int chosen = forced ? find(forced) : -1;
    return chosen >= 0 && cpu_supports(forced) ? chosen : best_supported();
  }();
  return index;
}

}  // namespace

bool cpu_supports(const char* isa) {
  if (std::strcmp(isa, "scalar") == 0) return true;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (std::strcmp(isa, "sse2") == 0) return true;
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2") &&
                  __builtin_cpu_supports("f16c") && __builtin_cpu_supports("movbe");
  if (std::strcmp(isa, "avx2") == 0) return v3;
  if (std::strcmp(isa, "avx512") == 0)
    return v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#elif defined(__aarch64__)
  if (std::strcmp(isa, "neon") == 0) return true;
#endif
  return false;
}

const char* requested_isa() {
  const char* forced = std::getenv("FASTOPTIM_ISA");
  return forced && (find(forced) < 0 || !cpu_supports(forced)) ? forced : nullptr;
}

// (not core::max_threads: that inline function is also compiled in files built without OpenMP,
// and the linker may keep either copy)
int max_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

int table_count() { return int(tables().size()); }
const KernelTable& table(int index) { return tables()[index]; }
const KernelTable& active() { return tables()[active_index().load(std::memory_order_relaxed)]; }

bool set_active(const char* isa) {
  const int index = find(isa);
  if (index < 0 || !cpu_supports(isa)) return false;
  active_index().store(index);
  return true;
}

}  // namespace fastoptim_isa
