// The fused MoE's small stages: router logits (with the activations' GEMM copy), per-expert grouping and
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

// The activations' GEMM copy: x [T, H] -> x_perm [T, Hp], K-permuted, zero past H and for
// tokens >= valid. One thread per 8-element group: a 16-byte load, a register permute, a
// 16-byte store, so the copy costs one memory latency whatever T is.
__device__ __forceinline__ void prep_x_group(const uint16_t* __restrict__ x, int64_t i, int64_t valid, int64_t H,
                                             int64_t Hp, uint16_t* __restrict__ x_perm) {
  const int64_t groups = Hp / 8;
  const int64_t t = i / groups, k0 = (i % groups) * 8;
  uint4 out = make_uint4(0, 0, 0, 0);
  if (t < valid && H % 8 == 0 && k0 < H && (reinterpret_cast<uintptr_t>(x) & 15) == 0) {
    const uint4 v = *reinterpret_cast<const uint4*>(x + t * H + k0);
    // Positions (3, 7), (2, 6), (1, 5), (0, 4) of permuted_element, as bf16 pairs.
    out.x = __byte_perm(v.y, v.w, 0x7632);
    out.y = __byte_perm(v.y, v.w, 0x5410);
    out.z = __byte_perm(v.x, v.z, 0x7632);
    out.w = __byte_perm(v.x, v.z, 0x5410);
  } else if (t < valid && k0 < H) {
    uint16_t e[8];
    for (int p = 0; p < 8; ++p) {
      const int64_t k = k0 + permuted_element(p);
      e[p] = k < H ? x[t * H + k] : uint16_t{0};
    }
    out = make_uint4(e[0] | (uint32_t{e[1]} << 16), e[2] | (uint32_t{e[3]} << 16), e[4] | (uint32_t{e[5]} << 16),
                     e[6] | (uint32_t{e[7]} << 16));
  }
  *reinterpret_cast<uint4*>(x_perm + t * Hp + k0) = out;
}

__global__ void prep_x_kernel(const uint16_t* __restrict__ x, int64_t tokens, int64_t valid, int64_t H, int64_t Hp,
                              uint16_t* __restrict__ x_perm) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < tokens * (Hp / 8)) prep_x_group(x, i, valid, H, Hp, x_perm);
}

// Each expert's dot products are split over kLogitParts warps of a block (a quarter of H
// each, so that small batches use many SMs), 8 tokens per block (each W row is read once per 8
// tokens); the parts are added in part order (deterministic).
constexpr int kLogitTokens = 8;
constexpr int kLogitThreads = 256;
constexpr int kLogitParts = 4;
constexpr int kLogitWarps = kLogitThreads / MOEPREP_WARP_SIZE;
static_assert(kLogitWarps % kLogitParts == 0, "whole experts per block");

__global__ void router_logits_kernel(const uint16_t* __restrict__ x, const uint16_t* __restrict__ w,
                                     const uint16_t* __restrict__ bias, int64_t tokens, int64_t valid, int64_t E,
                                     int64_t H, float* __restrict__ logits, int64_t Hp,
                                     uint16_t* __restrict__ x_perm) {
  __shared__ float partial[kLogitWarps][kLogitTokens];
  // The activations' GEMM copy rides along (x_perm non-null): one launch less per call.
  if (x_perm) {
    const int64_t nthreads = static_cast<int64_t>(gridDim.x) * gridDim.y * blockDim.x;
    const int64_t first = (static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x;
    for (int64_t i = first; i < tokens * (Hp / 8); i += nthreads) prep_x_group(x, i, valid, H, Hp, x_perm);
  }
  const int wid = threadIdx.x / MOEPREP_WARP_SIZE;
  const int lane = threadIdx.x % MOEPREP_WARP_SIZE;
  const int part = wid % kLogitParts;
  const int64_t e = static_cast<int64_t>(blockIdx.y) * (kLogitWarps / kLogitParts) + wid / kLogitParts;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kLogitTokens;
  const int64_t ntok = valid - t0 < kLogitTokens ? valid - t0 : kLogitTokens;  // uniform; may be <= 0
  const int64_t chunk = (H + kLogitParts * 8 - 1) / (kLogitParts * 8) * 8;  // multiple of 8
  const int64_t k_begin = part * chunk;
  const int64_t k_end = k_begin + chunk < H ? k_begin + chunk : H;
  float acc[kLogitTokens];
#pragma unroll
  for (int i = 0; i < kLogitTokens; ++i) acc[i] = 0.0f;
  if (e < E) {
    const uint16_t* we = w + e * H;
    if (H % 8 == 0) {
      // 16-byte loads: 8 bf16 of W and of each token per step.
#pragma unroll 2
      for (int64_t k = k_begin + static_cast<int64_t>(lane) * 8; k < k_end; k += MOEPREP_WARP_SIZE * 8) {
        const uint4 wv = *reinterpret_cast<const uint4*>(we + k);
        const uint32_t ww[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
        for (int i = 0; i < kLogitTokens; ++i) {
          if (i >= ntok) break;
          const uint4 xv = *reinterpret_cast<const uint4*>(x + (t0 + i) * H + k);
          const uint32_t xx[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            acc[i] += __uint_as_float(ww[j] << 16) * __uint_as_float(xx[j] << 16);
            acc[i] += __uint_as_float(ww[j] & 0xffff0000u) * __uint_as_float(xx[j] & 0xffff0000u);
          }
        }
      }
    } else {
      for (int64_t k = k_begin + lane; k < k_end; k += MOEPREP_WARP_SIZE) {
        const float wk = bf16_bits_to_float(we[k]);
        for (int i = 0; i < kLogitTokens; ++i) {
          if (i >= ntok) break;
          acc[i] += wk * bf16_bits_to_float(x[(t0 + i) * H + k]);
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kLogitTokens; ++i) {
    // Every lane takes part in every shuffle.
    for (int m = MOEPREP_WARP_SIZE / 2; m > 0; m /= 2) acc[i] += MOEPREP_SHFL_XOR(acc[i], m);
  }
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < kLogitTokens; ++i) partial[wid][i] = acc[i];
  }
  __syncthreads();
  if (lane == 0 && part == 0 && e < E) {
    const float b = bias ? bf16_bits_to_float(bias[e]) : 0.0f;
    for (int i = 0; i < kLogitTokens; ++i) {
      const int64_t t = t0 + i;
      if (t >= tokens) break;
      float sum = 0.0f;
      for (int pp = 0; pp < kLogitParts; ++pp) sum += partial[wid + pp][i];
      logits[t * E + e] = t < valid ? sum + b : 0.0f;
    }
  }
}

#if !defined(__HIPCC__)
// Larger batches (CUDA): logits on tensor cores, mma.sync m16n8k16 bf16 with fp32 accumulation.
// A = 16 router rows (experts; K contiguous), B = 8 tokens (x rows; K contiguous), natural K
// order; a warp owns 16 experts x 32 tokens, a block 4 warps = 64 experts. Needs E and H
// multiples of 16.
constexpr int kMmaLogitTokens = 32;
constexpr int kMmaLogitWarps = 4;

__global__ void __launch_bounds__(kMmaLogitWarps * 32)
    router_logits_mma_kernel(const uint16_t* __restrict__ x, const uint16_t* __restrict__ w,
                             const uint16_t* __restrict__ bias, int64_t tokens, int64_t valid, int64_t E, int64_t H,
                             float* __restrict__ logits) {
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kMmaLogitTokens;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, q = lane % 4;
  const int64_t e0 = (static_cast<int64_t>(blockIdx.y) * kMmaLogitWarps + warp) * 16;
  if (e0 >= E) return;  // no barrier follows
  float acc[4][4];
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[j][c] = 0.0f;
  if (valid > t0) {
    // 32-bit words (two bf16, lower k in the low half) at k = 2q and 2q + 8 of each 16-wide step.
    const uint32_t* wa0 = reinterpret_cast<const uint32_t*>(w + (e0 + g) * H) + q;
    const uint32_t* wa1 = reinterpret_cast<const uint32_t*>(w + (e0 + g + 8) * H) + q;
    const uint32_t* xb[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t t = t0 + 8 * j + g;
      xb[j] = reinterpret_cast<const uint32_t*>(x + (t < valid ? t : valid - 1) * H) + q;  // rows past valid: discarded
    }
#pragma unroll 4
    for (int64_t kw = 0; kw < H / 2; kw += 8) {
      const uint32_t a0 = __ldg(wa0 + kw), a1 = __ldg(wa1 + kw), a2 = __ldg(wa0 + kw + 4), a3 = __ldg(wa1 + kw + 4);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t b0 = __ldg(xb[j] + kw), b1 = __ldg(xb[j] + kw + 4);
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};"
            : "+f"(acc[j][0]), "+f"(acc[j][1]), "+f"(acc[j][2]), "+f"(acc[j][3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
      }
    }
  }
  // Accumulator c: expert e0 + g (+8 for c >= 2), token t0 + 8j + 2q + (c & 1).
#pragma unroll
  for (int j = 0; j < 4; ++j) {
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t e = e0 + g + (c >= 2 ? 8 : 0);
      const int64_t t = t0 + 8 * j + 2 * q + (c & 1);
      if (t < tokens) {
        const float b = bias ? bf16_bits_to_float(bias[e]) : 0.0f;
        logits[t * E + e] = t < valid ? acc[j][c] + b : 0.0f;
      }
    }
  }
}
#endif

// One block per expert. Every block builds the full histogram (shared-memory integer atomics:
// the counts do not depend on the order), from which it knows its offset and its first tile;
// its own picks are then compacted in pick order: each thread owns a contiguous range of
// picks, and one exclusive scan of the per-thread counts places them. No float atomics, no
// order that depends on timing.
constexpr int kGroupThreads = 256;

// Sum of v over the block (integers: exact in any order); `scratch` holds blockDim.x ints.
__device__ int32_t block_sum(int32_t v, int32_t* scratch) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s) scratch[threadIdx.x] += scratch[threadIdx.x + s];
    __syncthreads();
  }
  const int32_t total = scratch[0];
  __syncthreads();
  return total;
}

__global__ void group_kernel(const int32_t* __restrict__ ids, int64_t pairs, int64_t E, int token_tile,
                             int32_t* __restrict__ counts, int32_t* __restrict__ sorted_pairs,
                             int32_t* __restrict__ slot_of_pair, Tile* __restrict__ tiles,
                             int32_t* __restrict__ num_tiles) {
  extern __shared__ int32_t smem[];
  int32_t* hist = smem;              // [E]
  int32_t* scan = smem + E;          // [kGroupThreads]
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
  // Picks and tiles of the experts below e (and, for block 0, of all experts): block sums.
  int32_t below = 0, tiles_below = 0, tiles_all = 0;
  for (int64_t i = tid; i < E; i += blockDim.x) {
    const int32_t t = (hist[i] + token_tile - 1) / token_tile;
    if (i < e) {
      below += hist[i];
      tiles_below += t;
    }
    tiles_all += t;
  }
  below = block_sum(below, scan);
  tiles_below = block_sum(tiles_below, scan);
  tiles_all = block_sum(tiles_all, scan);
  if (tid == 0) {
    counts[e] = c;
    if (e == 0) *num_tiles = tiles_all;
  }
  for (int32_t i = tid; i * token_tile < c; i += blockDim.x) {
    Tile t;
    t.expert = e;
    t.start = below + i * token_tile;
    t.count = min(token_tile, c - i * token_tile);
    t.unused = 0;
    tiles[tiles_below + i] = t;
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
  int32_t pos = below + scan[tid] - mine;
  for (int64_t p = lo; p < hi; ++p) {
    if (ids[p] == e) {
      sorted_pairs[pos] = static_cast<int32_t>(p);
      slot_of_pair[p] = pos;
      ++pos;
    }
  }
}

// Block (t, h chunk): the token's picks go to shared memory once, then each thread sums its
// columns over the picks in pick order (the fixed order that makes the result deterministic).
constexpr int kMaxTopK = 64;

__global__ void combine_kernel(const float* __restrict__ y, const int32_t* __restrict__ ids,
                               const float* __restrict__ weights, const int32_t* __restrict__ slot_of_pair,
                               int64_t valid, int top_k, int64_t H, float* __restrict__ out) {
  __shared__ int32_t pick_slot[kMaxTopK];
  __shared__ float pick_weight[kMaxTopK];
  const int64_t t = blockIdx.x;
  if (static_cast<int>(threadIdx.x) < top_k) {
    const int64_t p = t * top_k + threadIdx.x;
    const bool picked = t < valid && ids[p] >= 0;
    pick_slot[threadIdx.x] = picked ? slot_of_pair[p] : -1;
    pick_weight[threadIdx.x] = picked ? weights[p] : 0.0f;
  }
  __syncthreads();
  const int64_t h = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (h >= H) return;
  float acc = 0.0f;
  for (int j = 0; j < top_k; ++j) {
    if (pick_slot[j] >= 0) acc += pick_weight[j] * y[static_cast<int64_t>(pick_slot[j]) * H + h];
  }
  out[t * H + h] = acc;
}

gpuStream_t as_stream(void* s) { return static_cast<gpuStream_t>(s); }

}  // namespace

void launch_router_logits(const uint16_t* x, const uint16_t* w, const uint16_t* bias, int64_t tokens, int64_t valid,
                          int64_t E, int64_t H, int64_t Hp, float* logits, uint16_t* x_perm, void* stream) {
  if (tokens == 0) return;
#if !defined(__HIPCC__)
  if (tokens >= 1024 && E % 16 == 0 && H % 16 == 0) {
    const int64_t groups = tokens * (Hp / 8);
    prep_x_kernel<<<static_cast<unsigned>((groups + 255) / 256), 256, 0, as_stream(stream)>>>(x, tokens, valid, H,
                                                                                             Hp, x_perm);
    check_launch("activation copy kernel");
    const dim3 grid(static_cast<unsigned>((tokens + kMmaLogitTokens - 1) / kMmaLogitTokens),
                    static_cast<unsigned>((E + kMmaLogitWarps * 16 - 1) / (kMmaLogitWarps * 16)));
    router_logits_mma_kernel<<<grid, kMmaLogitWarps * 32, 0, as_stream(stream)>>>(x, w, bias, tokens, valid, E, H,
                                                                                 logits);
    check_launch("router logits kernel (tensor cores)");
    return;
  }
#endif
  const int experts_per_block = kLogitWarps / kLogitParts;
  const dim3 grid(static_cast<unsigned>((tokens + kLogitTokens - 1) / kLogitTokens),
                  static_cast<unsigned>((E + experts_per_block - 1) / experts_per_block));
  router_logits_kernel<<<grid, kLogitThreads, 0, as_stream(stream)>>>(x, w, bias, tokens, valid, E, H, logits, Hp,
                                                                      x_perm);
  check_launch("router logits kernel (with the activation copy)");
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
  if (top_k > kMaxTopK) throw_bad_input("fused_moe: top_k " + std::to_string(top_k) + " exceeds " + std::to_string(kMaxTopK));
  const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>((H + 255) / 256));
  combine_kernel<<<grid, 256, 0, as_stream(stream)>>>(y, topk_ids, topk_weights, slot_of_pair, valid, top_k, H, out);
  check_launch("combine kernel");
}

}  // namespace moeprep::gpu::detail
