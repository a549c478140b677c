// The fused MoE's small stages: activation preparation, router logits, per-expert grouping and
// the final combine. Portable (CUDA and HIP): no vendor intrinsics beyond portability.h.
#include "kernels/portability.h"  // first: defines what MOEPREP_HD needs under HIP
#include <string>

#include "core/error.h"
#include "kernels/moe_internal.h"

namespace moeprep::gpu::detail {

void check_launch(const char* what) {
  const gpuError_t err = gpuGetLastError();
  if (err != gpuSuccess) throw_internal(std::string("fused_moe: ") + what + ": " + gpuGetErrorString(err));
}

namespace {

__device__ __forceinline__ float bf16_bits_to_float(uint32_t bits) { return __uint_as_float(bits << 16); }

__global__ void prep_x_kernel(const uint16_t* __restrict__ x, int64_t valid, int64_t H, int64_t Hp,
                              uint16_t* __restrict__ x_perm) {
  const int64_t t = blockIdx.x;
  for (int64_t p = threadIdx.x; p < Hp; p += blockDim.x) {
    const int64_t k = (p & ~int64_t{7}) | permuted_element(static_cast<int>(p & 7));
    x_perm[t * Hp + p] = (t < valid && k < H) ? x[t * H + k] : uint16_t{0};
  }
}

// One warp per expert, 8 tokens per block: each W row is read once per 8 tokens.
constexpr int kLogitTokens = 8;
constexpr int kLogitThreads = 256;

__global__ void router_logits_kernel(const uint16_t* __restrict__ x, const uint16_t* __restrict__ w,
                                     const uint16_t* __restrict__ bias, int64_t tokens, int64_t valid, int64_t E,
                                     int64_t H, float* __restrict__ logits) {
  const int warps = blockDim.x / MOEPREP_WARP_SIZE;
  const int lane = threadIdx.x % MOEPREP_WARP_SIZE;
  const int64_t e = static_cast<int64_t>(blockIdx.y) * warps + threadIdx.x / MOEPREP_WARP_SIZE;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kLogitTokens;
  if (e >= E) return;
  float acc[kLogitTokens];
#pragma unroll
  for (int i = 0; i < kLogitTokens; ++i) acc[i] = 0.0f;
  const uint16_t* we = w + e * H;
  if (H % 8 == 0) {
    // 16-byte loads: 8 bf16 of W and of each token per step.
    for (int64_t k = static_cast<int64_t>(lane) * 8; k < H; k += MOEPREP_WARP_SIZE * 8) {
      const uint4 wv = *reinterpret_cast<const uint4*>(we + k);
      const uint32_t ww[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
      for (int i = 0; i < kLogitTokens; ++i) {
        const int64_t t = t0 + i;
        if (t >= valid) break;
        const uint4 xv = *reinterpret_cast<const uint4*>(x + t * H + k);
        const uint32_t xx[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          acc[i] += bf16_bits_to_float(ww[j] & 0xffffu) * bf16_bits_to_float(xx[j] & 0xffffu);
          acc[i] += bf16_bits_to_float(ww[j] >> 16) * bf16_bits_to_float(xx[j] >> 16);
        }
      }
    }
  } else {
    for (int64_t k = lane; k < H; k += MOEPREP_WARP_SIZE) {
      const float wk = bf16_bits_to_float(we[k]);
      for (int i = 0; i < kLogitTokens; ++i) {
        if (t0 + i >= valid) break;
        acc[i] += wk * bf16_bits_to_float(x[(t0 + i) * H + k]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kLogitTokens; ++i) {
    // Every lane takes part in every shuffle.
    for (int m = MOEPREP_WARP_SIZE / 2; m > 0; m /= 2) acc[i] += MOEPREP_SHFL_XOR(acc[i], m);
  }
  if (lane == 0) {
    const float b = bias ? bf16_bits_to_float(bias[e]) : 0.0f;
    for (int i = 0; i < kLogitTokens; ++i) {
      const int64_t t = t0 + i;
      if (t < tokens) logits[t * E + e] = t < valid ? acc[i] + b : 0.0f;
    }
  }
}

// One block per expert. Every block builds the full histogram (shared-memory integer atomics:
// the counts do not depend on the order), from which it knows its offset and its first tile;
// its own picks are then compacted in pick order: each thread owns a contiguous range of
// picks, and one exclusive scan of the per-thread counts places them. No float atomics, no
// order that depends on timing.
constexpr int kGroupThreads = 256;

__global__ void group_kernel(const int32_t* __restrict__ ids, int64_t pairs, int64_t E, int token_tile,
                             int32_t* __restrict__ counts, int32_t* __restrict__ sorted_pairs,
                             int32_t* __restrict__ slot_of_pair, Tile* __restrict__ tiles,
                             int32_t* __restrict__ num_tiles) {
  extern __shared__ int32_t smem[];
  int32_t* hist = smem;              // [E]
  int32_t* scan = smem + E;          // [kGroupThreads]
  __shared__ int32_t expert_offset;
  const int tid = threadIdx.x;
  const int32_t e = blockIdx.x;
  for (int64_t i = tid; i < E; i += blockDim.x) hist[i] = 0;
  __syncthreads();
  for (int64_t p = tid; p < pairs; p += blockDim.x) {
    const int32_t id = ids[p];
    if (id >= 0 && id < E) atomicAdd(&hist[id], 1);
  }
  __syncthreads();
  const int32_t c = hist[e];
  if (tid == 0) {
    int32_t offset = 0, tile_base = 0;
    for (int32_t i = 0; i < e; ++i) {
      offset += hist[i];
      tile_base += (hist[i] + token_tile - 1) / token_tile;
    }
    expert_offset = offset;
    counts[e] = c;
    for (int32_t i = 0; i * token_tile < c; ++i) {
      Tile t;
      t.expert = e;
      t.start = offset + i * token_tile;
      t.count = min(token_tile, c - i * token_tile);
      t.unused = 0;
      tiles[tile_base + i] = t;
    }
    if (e == 0) {
      int32_t total = 0;
      for (int64_t i = 0; i < E; ++i) total += (hist[i] + token_tile - 1) / token_tile;
      *num_tiles = total;
    }
  }
  __syncthreads();
  if (c == 0) return;  // uniform across the block
  const int64_t per_thread = (pairs + blockDim.x - 1) / blockDim.x;
  const int64_t lo = tid * per_thread;
  const int64_t hi = lo + per_thread < pairs ? lo + per_thread : pairs;
  int32_t mine = 0;
  for (int64_t p = lo; p < hi; ++p) mine += ids[p] == e;
  scan[tid] = mine;
  __syncthreads();
  // Inclusive Hillis-Steele scan over the block.
  for (int d = 1; d < static_cast<int>(blockDim.x); d *= 2) {
    const int32_t v = tid >= d ? scan[tid - d] : 0;
    __syncthreads();
    scan[tid] += v;
    __syncthreads();
  }
  int32_t pos = expert_offset + scan[tid] - mine;
  for (int64_t p = lo; p < hi; ++p) {
    if (ids[p] == e) {
      sorted_pairs[pos] = static_cast<int32_t>(p);
      slot_of_pair[p] = pos;
      ++pos;
    }
  }
}

__global__ void combine_kernel(const float* __restrict__ y, const int32_t* __restrict__ ids,
                               const float* __restrict__ weights, const int32_t* __restrict__ slot_of_pair,
                               int64_t valid, int top_k, int64_t H, float* __restrict__ out) {
  const int64_t t = blockIdx.x;
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
    float acc = 0.0f;
    if (t < valid) {
      for (int j = 0; j < top_k; ++j) {
        const int64_t p = t * top_k + j;
        if (ids[p] >= 0) acc += weights[p] * y[static_cast<int64_t>(slot_of_pair[p]) * H + h];
      }
    }
    out[t * H + h] = acc;
  }
}

gpuStream_t as_stream(void* s) { return static_cast<gpuStream_t>(s); }

}  // namespace

void launch_prep_x(const uint16_t* x, int64_t tokens, int64_t valid, int64_t H, int64_t Hp, uint16_t* x_perm,
                   void* stream) {
  if (tokens == 0) return;
  prep_x_kernel<<<static_cast<unsigned>(tokens), 256, 0, as_stream(stream)>>>(x, valid, H, Hp, x_perm);
  check_launch("prep_x kernel");
}

void launch_router_logits(const uint16_t* x, const uint16_t* w, const uint16_t* bias, int64_t tokens, int64_t valid,
                          int64_t E, int64_t H, float* logits, void* stream) {
  if (tokens == 0) return;
  const int warps = kLogitThreads / MOEPREP_WARP_SIZE;
  const dim3 grid(static_cast<unsigned>((tokens + kLogitTokens - 1) / kLogitTokens),
                  static_cast<unsigned>((E + warps - 1) / warps));
  router_logits_kernel<<<grid, kLogitThreads, 0, as_stream(stream)>>>(x, w, bias, tokens, valid, E, H, logits);
  check_launch("router logits kernel");
}

void launch_group(const int32_t* topk_ids, int64_t pairs, int64_t E, int token_tile, int32_t* counts,
                  int32_t* sorted_pairs, int32_t* slot_of_pair, Tile* tiles, int32_t* num_tiles, void* stream) {
  const size_t smem = static_cast<size_t>(E + kGroupThreads) * sizeof(int32_t);
  if (smem > 48 * 1024) throw_bad_input("fused_moe: " + std::to_string(E) + " experts exceed the grouping kernel's limit");
  group_kernel<<<static_cast<unsigned>(E), kGroupThreads, smem, as_stream(stream)>>>(
      topk_ids, pairs, E, token_tile, counts, sorted_pairs, slot_of_pair, tiles, num_tiles);
  check_launch("grouping kernel");
}

void launch_combine(const float* y, const int32_t* topk_ids, const float* topk_weights, const int32_t* slot_of_pair,
                    int64_t tokens, int64_t valid, int top_k, int64_t H, float* out, void* stream) {
  if (tokens == 0) return;
  combine_kernel<<<static_cast<unsigned>(tokens), 256, 0, as_stream(stream)>>>(y, topk_ids, topk_weights,
                                                                              slot_of_pair, valid, top_k, H, out);
  check_launch("combine kernel");
}

}  // namespace moeprep::gpu::detail
