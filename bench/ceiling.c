/* Memory-bandwidth ceilings for the optimizer benchmark, measured with the same threads.
 *   triad:    a[i] = b[i] + s * c[i]                 (STREAM; 3 arrays, 12 B/element counted)
 *   in-place: an Adam-shaped step with FMAs only:     (read p, g, m, v; write p, m, v: 28 B/element)
 *             m = b1*m + c1*g; v = b2*v + c2*g*g; p = p - lr*m*v
 *   pattern:  an optimizer's own access pattern, passes separated by '+', each "R/W": read R arrays and
 *             write W of them in place, with a dot product per pass (the per-tensor sums) and FMAs
 *             only; e.g. "4/2+3/1" is LAMB's two passes (read p, g, m, v, write m, v; then read p, m, v,
 *             write p), "4/3" the in-place pattern. (R+W) * 4 B per element and pass are counted.
 * Usage: ceiling ELEMENTS REPS [PATTERN]  ->  prints "triad_GBps inplace_GBps [pattern_GBps]", the best
 * of REPS runs each (a ceiling is what the machine can do; bench.py takes the median over its rounds).
 * bench.py uses 16M elements per array, the size of its workload (A). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { kMaxArrays = 6 };

/* One pass of a pattern: a function per R/W with the counts as literals, so the element loop
   vectorizes (OpenMP's outlined loop body would not see constant arguments); `omp simd` lets it
   reorder the dot product's sum. */
#define DEFINE_PASS(R, W)                                                                          \
  static float pass_##R##_##W(float** a, long n, float scale) {                                   \
    float* restrict x0 = a[0]; float* restrict x1 = a[1]; float* restrict x2 = a[2];               \
    float* restrict x3 = a[3]; float* restrict x4 = a[4]; float* restrict x5 = a[5];               \
    float dot = 0;                                                                                 \
    _Pragma("omp parallel for simd schedule(static) reduction(+ : dot)")                           \
    for (long i = 0; i < n; ++i) {                                                                 \
      const float v0 = x0[i], v1 = R > 1 ? x1[i] : 0, v2 = R > 2 ? x2[i] : 0;                      \
      const float v3 = R > 3 ? x3[i] : 0, v4 = R > 4 ? x4[i] : 0, v5 = R > 5 ? x5[i] : 0;          \
      const float mixed = 0.125f * (v0 + v1 + v2 + v3 + v4 + v5);                                  \
      dot += v0 * mixed; /* every array read feeds the sum, so no load is dead code */               \
      if (W > 0) x0[i] = 0.9f * v0 + scale * mixed;                                                \
      if (W > 1) x1[i] = 0.9f * v1 + scale * mixed;                                                \
      if (W > 2) x2[i] = 0.9f * v2 + scale * mixed;                                                \
      if (W > 3) x3[i] = 0.9f * v3 + scale * mixed;                                                \
      if (W > 4) x4[i] = 0.9f * v4 + scale * mixed;                                                \
      if (W > 5) x5[i] = 0.9f * v5 + scale * mixed;                                                \
    }                                                                                              \
    return dot;                                                                                    \
  }
#define EVERY_PASS(X)                                                                              \
  X(1, 0) X(1, 1) X(2, 0) X(2, 1) X(2, 2) X(3, 0) X(3, 1) X(3, 2) X(3, 3) X(4, 0) X(4, 1) X(4, 2)  \
  X(4, 3) X(4, 4) X(5, 0) X(5, 1) X(5, 2) X(5, 3) X(5, 4) X(5, 5) X(6, 0) X(6, 1) X(6, 2) X(6, 3)  \
  X(6, 4) X(6, 5) X(6, 6)
EVERY_PASS(DEFINE_PASS)

static float run_pass(float** a, long n, int R, int W, float scale) {
  switch (R * 8 + W) {
#define PASS_CASE(r, w) case r * 8 + w: return pass_##r##_##w(a, n, scale);
    EVERY_PASS(PASS_CASE)
#undef PASS_CASE
  }
  fprintf(stderr, "ceiling: a pass must read 1-%d arrays and write at most those (got %d/%d)\n", kMaxArrays, R, W);
  exit(2);
}

/* Each array starts at a different offset within a 4 KiB page: arrays at equal offsets make the
   CPU see false store-to-load dependences (4K aliasing) and measure below what the bus can do. */
static float* array_at_offset(long n, int k) {
  void* p = 0;
  if (posix_memalign(&p, 4096, n * sizeof(float) + 4096)) abort();
  return (float*)((char*)p + 1024 * (k % 4) + 512 * (k / 4));  /* arrays 4 and 5 between those of 0-3 */
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
  int passes = 0, reads[8], writes[8];
  float* arrays[kMaxArrays] = {a, b, c, d, a, a};  /* 4 and 5 made below when a pattern needs them */
  if (argc > 3) {
    for (const char* at = argv[3]; *at && passes < 8; ++passes) {
      if (sscanf(at, "%d/%d", &reads[passes], &writes[passes]) != 2) { fprintf(stderr, "ceiling: bad pattern %s\n", argv[3]); return 2; }
      at = strchr(at, '+') ? strchr(at, '+') + 1 : at + strlen(at);
    }
    for (int j = 4; j < kMaxArrays; ++j) {
      arrays[j] = array_at_offset(n, j);
#pragma omp parallel for schedule(static)
      for (long i = 0; i < n; ++i) arrays[j][i] = 0.125f;
    }
  }
  double best_pattern = 0;
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
    if (passes == 0) continue;
    double bytes = 0, t3 = omp_get_wtime();
    float scale = 1e-3f;
    for (int k = 0; k < passes; ++k) {
      scale = 1e-3f / (1.0f + 1e-12f * run_pass(arrays, n, reads[k], writes[k], scale));  /* the sums feed the next pass */
      bytes += 4.0 * (reads[k] + writes[k]) * n;
    }
    double t4 = omp_get_wtime();
    if (bytes / (t4 - t3) / 1e9 > best_pattern) best_pattern = bytes / (t4 - t3) / 1e9;
  }
  if (passes) printf("%.2f %.2f %.2f\n", best_triad, best_inplace, best_pattern);
  else printf("%.2f %.2f\n", best_triad, best_inplace);
  if (a[n / 2] == 42.0f) puts("");  /* keep the stores observable */
  return 0;
}
