/* Memory-bandwidth ceilings for the optimizer benchmark, measured with the same threads.
 *   triad:    a[i] = b[i] + s * c[i]                 (STREAM; 3 arrays, 12 B/element counted)
 *   in-place: an Adam-shaped step with FMAs only:     (read p, g, m, v; write p, m, v: 28 B/element)
 *             m = b1*m + c1*g; v = b2*v + c2*g*g; p = p - lr*m*v
 * Usage: ceiling ELEMENTS REPS (bench.py uses 16M elements per array)  ->  prints "triad_GBps inplace_GBps" (medians over REPS). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp(const void* x, const void* y) {
  double a = *(const double*)x, b = *(const double*)y;
  return (a > b) - (a < b);
}

int main(int argc, char** argv) {
  const long n = argc > 1 ? atol(argv[1]) : 1L << 25;
  const int reps = argc > 2 ? atoi(argv[2]) : 7;
  float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float)), *c = malloc(n * sizeof(float)),
        *d = malloc(n * sizeof(float));
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) a[i] = 1.0f, b[i] = 2.0f, c[i] = 0.5f, d[i] = 0.25f;
  double* triad = malloc(reps * sizeof(double));
  double* inplace = malloc(reps * sizeof(double));
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
    triad[r] = 12.0 * n / (t1 - t0) / 1e9;
    inplace[r] = 28.0 * n / (t2 - t1) / 1e9;
  }
  qsort(triad, reps, sizeof(double), cmp);
  qsort(inplace, reps, sizeof(double), cmp);
  printf("%.2f %.2f\n", triad[reps / 2], inplace[reps / 2]);
  if (a[n / 2] == 42.0f) puts("");  /* keep the stores observable */
  return 0;
}
