#pragma once
// One kernel source for CUDA and HIP: the few names that differ, mapped here. No hipify step.
#if defined(__HIPCC__)
#include <hip/hip_runtime.h>
#define MOEPREP_GPU_API "HIP"
using gpuStream_t = hipStream_t;
using gpuError_t = hipError_t;
#define gpuSuccess hipSuccess
#define gpuGetLastError hipGetLastError
#define gpuGetErrorString hipGetErrorString
#define gpuMalloc hipMalloc
#define gpuFree hipFree
#define gpuMemcpy hipMemcpy
#define gpuMemcpyAsync hipMemcpyAsync
#define gpuMemset hipMemset
#define gpuMemsetAsync hipMemsetAsync
#define gpuMemcpyHostToDevice hipMemcpyHostToDevice
#define gpuMemcpyDeviceToHost hipMemcpyDeviceToHost
#define gpuMemcpyDeviceToDevice hipMemcpyDeviceToDevice
#define gpuDeviceSynchronize hipDeviceSynchronize
#define gpuStreamSynchronize hipStreamSynchronize
#define gpuGetDeviceCount hipGetDeviceCount
#define gpuEvent_t hipEvent_t
#define gpuEventCreate hipEventCreate
#define gpuEventRecord hipEventRecord
#define gpuEventSynchronize hipEventSynchronize
#define gpuEventElapsedTime hipEventElapsedTime
#define gpuEventDestroy hipEventDestroy
#define MOEPREP_WARP_SIZE 64
#define MOEPREP_SHFL_XOR(v, m) __shfl_xor((v), (m))
#define MOEPREP_SHFL(v, src) __shfl((v), (src))
#define MOEPREP_FULL_MASK 0
// Ballot of a predicate over the whole wavefront, widened to 64 bits on both platforms.
#define MOEPREP_BALLOT(p) static_cast<unsigned long long>(__ballot(p))
// Orders shared-memory accesses among the lanes of one wavefront (CUDA's __syncwarp).
#define MOEPREP_SYNCWARP()                               \
  do {                                                   \
    __builtin_amdgcn_fence(__ATOMIC_RELEASE, "wavefront"); \
    __builtin_amdgcn_wave_barrier();                     \
    __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "wavefront"); \
  } while (0)
#else
#include <cuda_runtime.h>
#define MOEPREP_GPU_API "CUDA"
using gpuStream_t = cudaStream_t;
using gpuError_t = cudaError_t;
#define gpuSuccess cudaSuccess
#define gpuGetLastError cudaGetLastError
#define gpuGetErrorString cudaGetErrorString
#define gpuMalloc cudaMalloc
#define gpuFree cudaFree
#define gpuMemcpy cudaMemcpy
#define gpuMemcpyAsync cudaMemcpyAsync
#define gpuMemset cudaMemset
#define gpuMemsetAsync cudaMemsetAsync
#define gpuMemcpyHostToDevice cudaMemcpyHostToDevice
#define gpuMemcpyDeviceToHost cudaMemcpyDeviceToHost
#define gpuMemcpyDeviceToDevice cudaMemcpyDeviceToDevice
#define gpuDeviceSynchronize cudaDeviceSynchronize
#define gpuStreamSynchronize cudaStreamSynchronize
#define gpuGetDeviceCount cudaGetDeviceCount
#define gpuEvent_t cudaEvent_t
#define gpuEventCreate cudaEventCreate
#define gpuEventRecord cudaEventRecord
#define gpuEventSynchronize cudaEventSynchronize
#define gpuEventElapsedTime cudaEventElapsedTime
#define gpuEventDestroy cudaEventDestroy
#define MOEPREP_WARP_SIZE 32
#define MOEPREP_SHFL_XOR(v, m) __shfl_xor_sync(0xffffffffu, (v), (m))
#define MOEPREP_SHFL(v, src) __shfl_sync(0xffffffffu, (v), (src))
#define MOEPREP_FULL_MASK 0xffffffffu
#define MOEPREP_BALLOT(p) static_cast<unsigned long long>(__ballot_sync(0xffffffffu, (p)))
#define MOEPREP_SYNCWARP() __syncwarp()
#endif
