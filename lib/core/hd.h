#pragma once
// Lets small pure functions (layout addressing, number formats) be compiled into both the
// CPU library and the CUDA/HIP kernels from one definition, so that the kernels address
// memory with exactly the description the CPU tests check.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define MOEPREP_HD __host__ __device__ __forceinline__
#else
#define MOEPREP_HD inline
#endif
