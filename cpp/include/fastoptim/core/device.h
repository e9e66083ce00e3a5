// What lets the rules' math compile for a CUDA device from the same headers: under nvcc,
// FASTOPTIM_HD marks a function for the host and the device; elsewhere it is empty.
// FASTOPTIM_DEVICE_CODE is 1 in nvcc's device pass, where the host ISA intrinsics are not taken.
#pragma once

#if defined(__CUDACC__)
#define FASTOPTIM_HD __host__ __device__
#else
#define FASTOPTIM_HD
#endif

#if defined(__CUDA_ARCH__)
#define FASTOPTIM_DEVICE_CODE 1
#else
#define FASTOPTIM_DEVICE_CODE 0
#endif

// A function that must be inlined into its loop (a per-W-elements step: as a call, GCC declines
// for the larger rules, it reloads every coefficient and spills the lanes each 16 elements).
#if defined(__GNUC__)
#define FASTOPTIM_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define FASTOPTIM_ALWAYS_INLINE inline
#endif
