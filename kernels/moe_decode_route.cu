// The decode path's route stage in one launch (CUDA): router logits spread over one block per
// expert, the activations' GEMM copy (x_perm), and the top-k routing of the T * E logits by the
// last block to finish. It replaces launch_router_logits + launch_fused_router for a few tokens
// (bench/NOTES-fused-moe.md, v11).
//
// Why: at T = 1 those two launches took ~16 us (eager) for 737 KB of router weights and a top-4
// of 128 logits: latency and a launch gap, not bytes. One block alone cannot pull the weights
// fast, so the logits stay spread over E blocks (8 warps split H), and the block that finds
// itself last on an arrival counter (every block's logit stores fenced before it arrives) routes
// all tokens while the others have exited. The counter is reset by that block, so the next call
// and every graph replay start from zero.
//
// Routing semantics are the CPU reference's (lib/reference/router.h) for the softmax variants:
// ties to the lower expert index (reference/topk_key.h's packed keys, -0 read as +0), a token
// with a NaN logit routes nowhere (ids -1, weights 0, nan flag), padding tokens likewise without
// the flag. The weights use the fused router's arithmetic (kernels/router.cu: exp(x - max) with
// x == max exactly 1, the fast exp and division), summed by a butterfly over the warp.
#include "kernels/portability.h"  // first: defines what MOEPREP_HD needs under HIP
#include <atomic>
#include <string>

#include "core/error.h"
#include "kernels/moe_internal.h"
#include "reference/topk_key.h"

#if !defined(__HIPCC__)
#include <cooperative_groups.h>
#endif

namespace moeprep::gpu::detail {

#if !defined(__HIPCC__)
namespace {

using reference::float_from_order_key;
using reference::pack_topk_key;
using reference::selection_value_key;
using reference::topk_key_index;
using reference::topk_key_value_key;

constexpr int kWarps = 8;  // K parts of one expert's dot products
constexpr int kThreads = kWarps * 32;

__device__ __forceinline__ float shifted_exp(float x, float max) {
  const float e = __expf(x - max);
  return x == max ? 1.0f : e;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int m = 16; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

// The warp's largest 64-bit key by two 32-bit redux.sync reductions (sm_80 and up): the
// largest high half, then the largest low half among the lanes holding it, which is the
// lexicographic, i.e. 64-bit, maximum. Five 64-bit shuffle steps were ~10 dependent shuffles
// per pick on the route stage's last-block chain.
__device__ __forceinline__ uint64_t warp_max(uint64_t v) {
  const uint32_t hi = static_cast<uint32_t>(v >> 32);
  const uint32_t top = __reduce_max_sync(0xffffffffu, hi);
  const uint32_t lo = __reduce_max_sync(0xffffffffu, hi == top ? static_cast<uint32_t>(v) : 0u);
  return (static_cast<uint64_t>(top) << 32) | lo;
}

// One token's routing by one warp: lane r ends up holding pick r (r < top_k). kSlots logits per
// lane (E <= 32 kSlots): the k rounds of a max-reduction scan only those. The logits come from
// `logits` ([T, E]): global memory written by other blocks (L2 loads) or, kShared, this block's
// shared memory.
template <int kSlots, bool kShared>
__device__ __forceinline__ void route_token(const DecodeRouteArgs& a, const float* logits, int t) {
  const int lane = threadIdx.x % 32;
  const int E = a.experts, k = a.top_k;
  const float* row = logits + static_cast<int64_t>(t) * E;
  float v[kSlots];
  uint64_t key[kSlots];
  bool nan = false;
#pragma unroll
  for (int j = 0; j < kSlots; ++j) {
    const int e = lane + 32 * j;
    // L2 loads: the other blocks' logits are not in this SM's L1.
    v[j] = e < E ? (kShared ? row[e] : __ldcg(row + e)) : 0.0f;
    nan = nan || (e < E && v[j] != v[j]);
    key[j] = e < E ? pack_topk_key(selection_value_key(v[j]), static_cast<uint32_t>(e)) : 0;
  }
  const bool real = t < a.valid;
  const bool has_nan = __any_sync(0xffffffffu, nan);
  uint64_t mine = 0;  // lane r: pick r's key
  for (int r = 0; r < k; ++r) {
    uint64_t best = 0;
#pragma unroll
    for (int j = 0; j < kSlots; ++j) best = key[j] > best ? key[j] : best;
    best = warp_max(best);
#pragma unroll
    for (int j = 0; j < kSlots; ++j) key[j] = key[j] == best ? 0 : key[j];  // keys are unique
    if (lane == r) mine = best;
  }
  const float top = float_from_order_key(topk_key_value_key(__shfl_sync(0xffffffffu, mine, 0)));
  const bool picked = lane < k;
  const int32_t id = static_cast<int32_t>(topk_key_index(mine));
  const float value = float_from_order_key(topk_key_value_key(mine));  // -0 comes back as +0: same exp
  float row_sum = 0.0f;
  if (a.variant == reference::RouterVariant::SoftmaxThenTopk) {  // uniform
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < kSlots; ++j) s += (lane + 32 * j < E) ? shifted_exp(v[j], top) : 0.0f;
    row_sum = warp_sum(s);
  }
  float w = 0.0f;
  if (picked) {
    const float e = shifted_exp(value, top);
    w = a.variant == reference::RouterVariant::SoftmaxThenTopk ? __fdividef(e, row_sum) : e;
  }
  const float sum = warp_sum(w);
  if (a.variant != reference::RouterVariant::SoftmaxThenTopk || a.renormalize) w = __fdividef(w, sum);
  if (a.per_expert_scale && picked) w *= a.per_expert_scale[id];  // gemma4
  const bool empty = !real || has_nan;
  if (picked) {
    a.topk_weights[t * k + lane] = empty ? 0.0f : w;
    a.topk_ids[t * k + lane] = empty ? -1 : id;
  }
  if (lane == 0 && a.nan_flags) a.nan_flags[t] = (real && has_nan) ? 1 : 0;
}

// x_perm: the GEMM copy of x, one 16-byte group per thread of the grid (`first`, `stride`).
// x's 16 bytes of group g (zero past the valid tokens and H).
__device__ __forceinline__ uint4 load_x_group(const DecodeRouteArgs& a, int64_t g) {
  const int64_t groups = static_cast<int64_t>(a.tokens) * (a.hidden_pad / 8);
  const int64_t t = g / (a.hidden_pad / 8), k0 = (g % (a.hidden_pad / 8)) * 8;
  if (g >= groups || t >= a.valid || k0 >= a.hidden) return make_uint4(0, 0, 0, 0);
  return __ldg(reinterpret_cast<const uint4*>(a.x + t * a.hidden + k0));
}
// Stores every group from `first` on; the first one's x is `v_first`, loaded at the kernel's
// start (load_x_group) so that its latency overlaps the router rows' loads instead of adding one
// more to the chain of the blocks that copy x (at T = 1 only the first two).
__device__ __forceinline__ void store_x_perm(const DecodeRouteArgs& a, int64_t first, int64_t stride, uint4 v_first) {
  const int64_t groups = static_cast<int64_t>(a.tokens) * (a.hidden_pad / 8);
  for (int64_t g = first; g < groups; g += stride) {
    const int64_t t = g / (a.hidden_pad / 8), k0 = (g % (a.hidden_pad / 8)) * 8;
    const uint4 v = g == first ? v_first : load_x_group(a, g);
    // Positions (3, 7), (2, 6), (1, 5), (0, 4) of permuted_element, as bf16 pairs.
    uint4 out;
    out.x = __byte_perm(v.y, v.w, 0x7632);
    out.y = __byte_perm(v.y, v.w, 0x5410);
    out.z = __byte_perm(v.x, v.z, 0x7632);
    out.w = __byte_perm(v.x, v.z, 0x5410);
    *reinterpret_cast<uint4*>(a.x_perm + t * a.hidden_pad + k0) = out;
  }
}

// Block e: logits[t, e] for every token (its 8 warps split H, parts added in warp order), then
// its share of x_perm; the last block to arrive routes every token (warp t: token t).
template <int kSlots>
__global__ void __launch_bounds__(kThreads) decode_route_kernel(DecodeRouteArgs a) {
  // Dependents (the decode gate_up, launched programmatically) may start their prologue now;
  // they wait for this grid's completion before reading anything it writes.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
  __shared__ float partial[kWarps][kDecodeRouteMaxTokens];
  __shared__ int last;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int e = blockIdx.x;
  const int T = a.tokens, H = a.hidden;
  const int chunk = (H + kWarps * 8 - 1) / (kWarps * 8) * 8;
  const int k_begin = warp * chunk, k_end = min(k_begin + chunk, H);
  float acc[kDecodeRouteMaxTokens];
#pragma unroll
  for (int i = 0; i < kDecodeRouteMaxTokens; ++i) acc[i] = 0.0f;
  const uint16_t* we = a.w + static_cast<int64_t>(e) * H;
  // Loaded now, used after the dot products: each was one more memory latency on every
  // block's chain (the bias) or on the x-copying blocks' (x's group).
  const int64_t x_first = static_cast<int64_t>(e) * kThreads + threadIdx.x;
  const uint4 x_group = load_x_group(a, x_first);
  const float b = a.bias && threadIdx.x < T ? __uint_as_float(static_cast<uint32_t>(a.bias[e]) << 16) : 0.0f;
#pragma unroll 2
  for (int k = k_begin + lane * 8; k < k_end; k += 32 * 8) {
    const uint4 wv = __ldg(reinterpret_cast<const uint4*>(we + k));
    const uint32_t ww[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int i = 0; i < kDecodeRouteMaxTokens; ++i) {
      if (i >= a.valid) break;
      const uint4 xv = __ldg(reinterpret_cast<const uint4*>(a.x + static_cast<int64_t>(i) * H + k));
      const uint32_t xx[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        acc[i] += __uint_as_float(ww[j] << 16) * __uint_as_float(xx[j] << 16);
        acc[i] += __uint_as_float(ww[j] & 0xffff0000u) * __uint_as_float(xx[j] & 0xffff0000u);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kDecodeRouteMaxTokens; ++i) {
    if (i < a.valid) acc[i] = warp_sum(acc[i]);  // uniform; the others stay 0
  }
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < kDecodeRouteMaxTokens; ++i) partial[warp][i] = acc[i];
  }
  store_x_perm(a, x_first, static_cast<int64_t>(gridDim.x) * kThreads, x_group);
  __syncthreads();
  if (threadIdx.x < T) {
    const int t = threadIdx.x;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += partial[w][t];
    a.logits[static_cast<int64_t>(t) * a.experts + e] = t < a.valid ? sum + b : 0.0f;
    __threadfence();  // the stores are visible device-wide before this block arrives
  }
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(a.counter, 1) == static_cast<int>(gridDim.x) - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();  // the other blocks' logits, fenced before they arrived, are read after this
  if (threadIdx.x == 0) *a.counter = 0;  // ready for the next call; nothing else reads it now
  if (warp < T) route_token<kSlots, false>(a, a.logits, warp);
}


// The same stage in one thread-block cluster (sm_90; v16-decode): CTA r of the cluster computes
// the logits of experts [r * per, (r + 1) * per) into its shared memory, a cluster barrier, then
// CTA 0 gathers all T * E logits through distributed shared memory and routes. Why: the E-block
// kernel's last block reads the logits back from L2 after a fence and an atomic, two dependent
// chains; here the hand-over is one barrier and DSMEM loads, no counter. Each CTA pulls
// E / cluster router rows (16 CTAs at gpt-oss: 46 KB each), kBatch 16-byte loads per lane in
// flight before the multiplies.
// Measured (H100, 2026-11-26; not the automatic choice). First version, x read from global in
// the batch loop: T = 1 forward 44.0 us graph with 16 CTAs, 46.5 with 8, against 41.7 for the
// E-block kernel in the same run; ncu (cold, alone) 9.5 us against 6.8. With x staged in shared
// memory while the first weight batch is in flight (this code), next run: 42.9 / 44.2 us against
// 42.0; ncu 8.3 us, the 16 SMs busy ~10.9k cycles (~5.5 us) each of 16.4k elapsed. One SM pulls
// its 46 KB of router rows at under 10 GB/s, so the pull by 16 SMs, not the hand-over, sets
// the time; a 16-CTA cluster cannot spread the 737 KB wider.
constexpr int kClusterWarps = 16;
constexpr int kClusterThreads = kClusterWarps * 32;
constexpr int kClusterMinCtas = 8;
constexpr int kClusterMaxPer = kDecodeRouteMaxExperts / kClusterMinCtas;  // experts per CTA
constexpr int kClusterMaxItems = kClusterMaxPer > kClusterWarps ? kClusterMaxPer : kClusterWarps;
constexpr int kClusterStaticBytes = 20480 + 1024;  // partial, mine, all; a margin
constexpr int kBatch = 6;  // gpt-oss, 16 CTAs: each lane's share of a K part in one batch

template <int kSlots>
__global__ void __launch_bounds__(kClusterThreads) decode_route_cluster_kernel(DecodeRouteArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  __shared__ float partial[kClusterMaxItems][kDecodeRouteMaxTokens];
  __shared__ float mine[kClusterMaxPer][kDecodeRouteMaxTokens];  // this CTA's logits [j][t]
  __shared__ float all[kDecodeRouteMaxTokens * kDecodeRouteMaxExperts];  // CTA 0: [t][e]
  extern __shared__ uint4 xsm[];  // [valid][H / 8]: x staged
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int ctas = static_cast<int>(cluster.num_blocks()), rank = static_cast<int>(cluster.block_rank());
  const int T = a.tokens, H = a.hidden, E = a.experts;
  const int per = (E + ctas - 1) / ctas, e0 = rank * per;
  const int n = max(0, min(per, E - e0));
  // Work items (expert j, K part p): every warp busy when n < 16; parts added in p order.
  const int parts = n > 0 ? max(1, kClusterWarps / n) : 1;
  const int chunk = (H + parts * 8 - 1) / (parts * 8) * 8;
  // The warp's first weight batch is in flight while the block stages x (its valid tokens' rows)
  // in shared memory: the multiplies then read x there instead of one dependent L2 load per
  // 16-byte group (v16b: the first cluster kernel read x from global inside the batch loop).
  auto load_w = [&](const uint16_t* we, int base, int k_end, uint4 (&wv)[kBatch]) {
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int k = base + u * 32 * 8;
      wv[u] = k < k_end ? __ldg(reinterpret_cast<const uint4*>(we + k)) : make_uint4(0, 0, 0, 0);
    }
  };
  uint4 wv[kBatch];
  if (warp < n * parts) {
    const int j = warp / parts, p = warp % parts;
    load_w(a.w + static_cast<int64_t>(e0 + j) * H, p * chunk + lane * 8, min(p * chunk + chunk, H), wv);
  }
  const int row_groups = H / 8;
#pragma unroll 4
  for (int g = threadIdx.x; g < a.valid * row_groups; g += kClusterThreads) {
    xsm[g] = __ldg(reinterpret_cast<const uint4*>(a.x) + g);
  }
  __syncthreads();
  for (int item = warp; item < n * parts; item += kClusterWarps) {
    const int j = item / parts, p = item % parts;
    const int k_begin = p * chunk, k_end = min(k_begin + chunk, H);
    float acc[kDecodeRouteMaxTokens];
#pragma unroll
    for (int i = 0; i < kDecodeRouteMaxTokens; ++i) acc[i] = 0.0f;
    const uint16_t* we = a.w + static_cast<int64_t>(e0 + j) * H;
    for (int base = k_begin + lane * 8; base < k_end; base += kBatch * 32 * 8) {
      if (item != warp || base != k_begin + lane * 8) load_w(we, base, k_end, wv);
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int k = base + u * 32 * 8;
        if (k >= k_end) break;
        const uint32_t ww[4] = {wv[u].x, wv[u].y, wv[u].z, wv[u].w};
#pragma unroll
        for (int i = 0; i < kDecodeRouteMaxTokens; ++i) {
          if (i >= a.valid) break;
          const uint4 xv = xsm[i * row_groups + k / 8];
          const uint32_t xx[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            acc[i] += __uint_as_float(ww[q] << 16) * __uint_as_float(xx[q] << 16);
            acc[i] += __uint_as_float(ww[q] & 0xffff0000u) * __uint_as_float(xx[q] & 0xffff0000u);
          }
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kDecodeRouteMaxTokens; ++i) {
      if (i < a.valid) acc[i] = warp_sum(acc[i]);  // uniform; the others stay 0
    }
    if (lane == 0) {
#pragma unroll
      for (int i = 0; i < kDecodeRouteMaxTokens; ++i) partial[item][i] = acc[i];
    }
  }
  const int64_t x_first = static_cast<int64_t>(rank) * kClusterThreads + threadIdx.x;
  store_x_perm(a, x_first, static_cast<int64_t>(ctas) * kClusterThreads, load_x_group(a, x_first));
  __syncthreads();
  if (threadIdx.x < n * T) {
    const int j = threadIdx.x / T, t = threadIdx.x % T;
    float sum = 0.0f;
    for (int p = 0; p < parts; ++p) sum += partial[j * parts + p][t];
    const float b = a.bias ? __uint_as_float(static_cast<uint32_t>(a.bias[e0 + j]) << 16) : 0.0f;
    const float value = t < a.valid ? sum + b : 0.0f;
    mine[j][t] = value;
    a.logits[static_cast<int64_t>(t) * E + e0 + j] = value;
  }
  // Every CTA's logits are in its shared memory and visible to the cluster after this.
  asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
  asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
  if (rank == 0) {
    for (int i = threadIdx.x; i < T * E; i += kClusterThreads) {
      const int t = i / E, e = i % E;
      const float* src = cluster.map_shared_rank(&mine[0][0], e / per);
      all[i] = src[(e % per) * kDecodeRouteMaxTokens + t];
    }
  }
  // The others keep their shared memory until CTA 0 has read it; CTA 0 does not wait.
  asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
  if (rank != 0) {
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
    return;
  }
  __syncthreads();
  if (warp < T) route_token<kSlots, true>(a, all, warp);
#else
  (void)a;
  __trap();  // launched only where the device reports compute capability 9.0 or later
#endif
}

}  // namespace
#endif  // !__HIPCC__

bool decode_route_supported(reference::RouterVariant variant, int top_k, int64_t experts, int64_t tokens,
                            int64_t hidden, int64_t hidden_pad, const void* x) {
#if defined(__HIPCC__)
  (void)variant, (void)top_k, (void)experts, (void)tokens, (void)hidden, (void)hidden_pad, (void)x;
  return false;  // warp code written for 32 lanes
#else
  return variant != reference::RouterVariant::SigmoidGroupedBiased && top_k >= 1 && top_k <= 32 &&
         experts >= top_k && experts <= kDecodeRouteMaxExperts && tokens >= 1 && tokens <= kDecodeRouteMaxTokens &&
         hidden % 8 == 0 && hidden_pad % 8 == 0 && hidden_pad >= hidden && hidden < (int64_t{1} << 30) &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0;
#endif
}

#if !defined(__HIPCC__)
namespace {

cudaLaunchConfig_t cluster_config(int ctas, gpuStream_t s, cudaLaunchAttribute* attr) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(ctas));
  cfg.blockDim = dim3(kClusterThreads);
  cfg.stream = s;
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(ctas);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}

template <typename Kernel>
void launch_cluster(Kernel kernel, const DecodeRouteArgs& a, gpuStream_t s) {
  if (a.cluster > kClusterMinCtas) {  // 16 CTAs: beyond the portable 8
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    if (err != cudaSuccess) throw_internal(std::string("fused_moe: decode route cluster: ") + cudaGetErrorString(err));
  }
  const size_t x_bytes = decode_route_cluster_x_bytes(a.valid, a.hidden);
  if (x_bytes > 48 * 1024 - kClusterStaticBytes) {  // staged x past the default limit: opt in
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(x_bytes));
    if (err != cudaSuccess) throw_internal(std::string("fused_moe: decode route cluster: ") + cudaGetErrorString(err));
  }
  cudaLaunchAttribute attr[1];
  cudaLaunchConfig_t cfg = cluster_config(a.cluster, s, attr);
  cfg.dynamicSmemBytes = x_bytes;
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, a);
  if (err != cudaSuccess) throw_internal(std::string("fused_moe: decode route cluster kernel: ") + cudaGetErrorString(err));
}

}  // namespace
#endif  // !__HIPCC__

bool decode_route_cluster_supported(int ctas) {
#if defined(__HIPCC__)
  (void)ctas;
  return false;  // no thread-block clusters
#else
  if (ctas != 8 && ctas != 16) return false;
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  if (major < 9) return false;
  // Whether a cluster of that size fits the device (a GPC; MIG slices may be smaller): asked
  // once per device and size, since the query costs more than a launch.
  constexpr int kDevices = 64;
  static std::atomic<int8_t> known[kDevices][2] = {};  // 0 unknown, 1 yes, -1 no
  const int slot = ctas == 16 ? 1 : 0;
  if (device < kDevices && known[device][slot].load() != 0) return known[device][slot].load() > 0;
  auto kernel = decode_route_cluster_kernel<4>;
  bool ok = ctas <= kClusterMinCtas ||
            cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess;
  int clusters = 0;
  cudaLaunchAttribute attr[1];
  const cudaLaunchConfig_t cfg = cluster_config(ctas, nullptr, attr);
  ok = ok && cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) == cudaSuccess && clusters > 0;
  (void)cudaGetLastError();
  if (device < kDevices) known[device][slot].store(ok ? 1 : -1);
  return ok;
#endif
}

void launch_decode_route(const DecodeRouteArgs& a, void* stream) {
#if defined(__HIPCC__)
  (void)a, (void)stream;
  throw_internal("fused_moe: the decode route kernel is CUDA only");
#else
  const gpuStream_t s = static_cast<gpuStream_t>(stream);
  if (a.cluster != 0) {
    if (a.experts <= 128) {
      launch_cluster(decode_route_cluster_kernel<4>, a, s);
    } else if (a.experts <= 256) {
      launch_cluster(decode_route_cluster_kernel<8>, a, s);
    } else {
      launch_cluster(decode_route_cluster_kernel<16>, a, s);
    }
    check_launch("decode route cluster kernel");
    return;
  }
  const unsigned blocks = static_cast<unsigned>(a.experts);
  if (a.experts <= 128) {
    decode_route_kernel<4><<<blocks, kThreads, 0, s>>>(a);
  } else if (a.experts <= 256) {
    decode_route_kernel<8><<<blocks, kThreads, 0, s>>>(a);
  } else {
    decode_route_kernel<16><<<blocks, kThreads, 0, s>>>(a);
  }
  check_launch("decode route kernel");
#endif
}

}  // namespace moeprep::gpu::detail
