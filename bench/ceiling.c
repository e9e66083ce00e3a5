/* Memory-bandwidth ceilings for the optimizer benchmark, measured with the same threads.
 *   triad:    a[i] = b[i] + s * c[i]                 (STREAM; 3 arrays, 12 B/element counted)
 *   in-place: an Adam-shaped step with FMAs only:     (read p, g, m, v; write p, m, v: 28 B/element)
 *             m = b1*m + c1*g; v = b2*v + c2*g*g; p = p - lr*m*v
 * Usage: ceiling ELEMENTS REPS  ->  prints "triad_GBps inplace_GBps", the best of REPS runs each
 * (a ceiling is what the machine can do; bench.py takes the median of these over its rounds).
 * bench.py uses 16M elements per array, the size of its workload (A). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

/* Each array starts at a different offset within a 4 KiB page: arrays at equal offsets make the
   CPU see false store-to-load dependences (4K aliasing) and measure below what the bus can do. */
static float* array_at_offset(long n, int k) {
  void* p = 0;
  if (posix_memalign(&p, 4096, n * sizeof(float) + 4096)) abort();
  return (float*)((char*)p + 1024 * k);
}

int main(int argc, char** argv) {
  const long n = argc > 1 ? atol(argv[1]) : 1L << 24;
  const int reps = argc > 2 ? atoi(argv[2]) : 20;
  float* restrict a = array_at_offset(n, 0);
  float* restrict b = array_at_offset(n, 1);
  float* restrict c = array_at_offset(n, 2);
  float* restrict d = array_at_offset(n, 3);
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) a[i] = 1.0f, b[i] = 2.0f, c[i] = 0.5f, d[i] = 0.25f;
  double best_triad = 0, best_inplace = 0;
  for (int r = 0; r < reps; ++r) {
    double t0 = omp_get_wtime();
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; ++i) a[i] = b[i] + 0.5f * c[i];
    double t1 = omp_get_wtime();
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; ++i) {
      float g = b[i];
      float m = 0.9f * c[i] + 0.1f * g;
      float v = 0.999f * d[i] + 0.001f * g * g;
      c[i] = m;
      d[i] = v;
      a[i] = a[i] - 1e-3f * m * v;
    }
    double t2 = omp_get_wtime();
    if (12.0 * n / (t1 - t0) / 1e9 > best_triad) best_triad = 12.0 * n / (t1 - t0) / 1e9;
    if (28.0 * n / (t2 - t1) / 1e9 > best_inplace) best_inplace = 28.0 * n / (t2 - t1) / 1e9;
  }
  printf("%.2f %.2f\n", best_triad, best_inplace);
  if (a[n / 2] == 42.0f) puts("");  /* keep the stores observable */
  return 0;
}
