// What the CUDA kernels share: a block's sums over its threads, added in a fixed tree (the same bits
// run to run), left in values[j][0].
#pragma once

namespace fastoptim_cuda {

template <class T, int N, int Threads>
__device__ void add_up_block(T (&values)[N][Threads]) {
  for (int half = Threads / 2; half > 0; half /= 2) {
    __syncthreads();
    if (int(threadIdx.x) < half)
      for (int j = 0; j < N; ++j) values[j][threadIdx.x] += values[j][threadIdx.x + half];
  }
  __syncthreads();
}

}  // namespace fastoptim_cuda
