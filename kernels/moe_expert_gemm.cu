// The expert GEMMs of the fused MoE: gate_up (+ bias + activation, bf16 out) and down (+ bias,
// fp32 out), over token tiles of expert-sorted picks, reading the shuffled MXFP4 weights and
// E8M0 scales through layout/addressing.h.
//
// Fast path (CUDA, sm_80+): tensor cores, mma.sync m16n8k16 bf16 with fp32 accumulation, in a
// "swapped" orientation: the weight rows are the M side (16 rows per fragment) and the tokens
// the N side (8 per fragment), so a batch of one token wastes 7/8 of the tensor-core work but
// reads every weight byte once, which is what small batches are bound by. One warp owns 16
// gate + 16 up rows (gate_up) or 32 rows (down) and walks K in rounds of 128 elements: lane
// (g = lane/4, q = lane%4) loads the 16-byte run of K bytes [16q, 16q+16) of its rows g and
// g+8. In both gate modes such a run is contiguous (16 bytes of one row inside a 16x16-byte
// unit) and the warp's 32 loads cover whole 128-byte lines. Each run is exactly one E8M0 group.
// The 4 bytes of a word are dequantized with shifts and masks into 4 bf16x2 registers holding
// elements (3,7), (2,6), (1,5), (0,4) of the word, scaled by the group's power of two; the B
// operand is stored K-permuted to the same order (moe_internal.h), so the pairs line up.
//
// Simple path (CUDA and HIP): one thread per output row and token, fp32 FMAs over dequantized
// elements; the correctness baseline and the portable fallback (AMD has no mma.sync; an MFMA
// path would replace the fast one there).
#include "kernels/portability.h"  // first: defines what MOEPREP_HD needs under HIP
#include <string>

#include "core/error.h"
#include "formats/bf16.h"
#include "formats/e2m1.h"
#include "formats/e8m0.h"
#include "kernels/moe_device_math.h"
#include "kernels/moe_internal.h"

namespace moeprep::gpu::detail {
namespace {

using layout::ScaleLayout;
using layout::WeightTileLayout;

struct GemmParams {
  const uint8_t* w;
  const uint8_t* scale;
  const float* bias;
  WeightTileLayout wl;
  ScaleLayout sl;
  int64_t K;               // padded K in elements (H' for gate_up, I' for down)
  const uint16_t* b;       // B rows of K bf16, K-permuted
  const int32_t* sorted_pairs;
  int top_k;
  bool gather;             // gate_up: B row = token of the pick; down: B row = slot
  const Tile* tiles;
  const int32_t* num_tiles;
  RowTable rows_table;     // the fast path's offsets (derived from addressing.h at upload)
  bool large_scales;       // some scale code > 128 (or 255): dequantization needs two multiplies
  int64_t row_groups;      // warp row groups
  int64_t up_offset;       // gate_up: I' (up rows follow the gate rows); down: 16
  int64_t rows_pad;        // rows per expert
  int64_t out_rows;        // gate_up: I' (act columns); down: H (logical output rows)
  uint16_t* act;           // gate_up output [P, I']
  float* y;                // down output [P, H]
  int act_kind;            // 0 GPT-OSS clamped SwiGLU, 1 SiLU-, 2 GELU-tanh-, 3 GELU(erf)-gated, 4 relu^2
  // Non-gated experts' up projection (relu^2), simple kernel: w13 holds the I' up rows alone and
  // the activation reads that one projection. (The fast kernels take it as their UP_ONLY
  // template flag: the down kernels' row pairs, B gathered, act(u) stored instead of y.)
  bool up_only;
  float alpha, limit;
  // Small-batch kernel only (ExpertGemmArgs says what each is for).
  bool inline_group, fuse_combine;
  const int32_t* topk_ids;
  int32_t pairs, experts;
  int32_t* counts_out;
  int32_t* sorted_pairs_out;
  int32_t* slot_of_pair;
  Tile* tiles_out;
  int32_t* num_tiles_out;
  const float* topk_weights;
  int64_t tokens, valid;
  float* out;
  int32_t* counters;
};

__device__ __forceinline__ float activation(const GemmParams& p, float g, float u) {
  return gated_activation(p.act_kind, p.alpha, p.limit, g, u);
}

__device__ __forceinline__ int64_t b_row(const GemmParams& p, int64_t slot) {
  return p.gather ? p.sorted_pairs[slot] / p.top_k : slot;
}

__device__ __forceinline__ float b_element(const GemmParams& p, int64_t row, int64_t k) {
  return __uint_as_float(static_cast<uint32_t>(p.b[row * p.K + permuted_index(k)]) << 16);
}

// ---- simple path ---------------------------------------------------------------------------

__device__ float dot_row(const GemmParams& p, int32_t e, int64_t n, int64_t brow) {
  float acc = 0.0f;
  for (int64_t g = 0; g < p.K / 32; ++g) {
    const uint8_t s = p.scale[p.sl.offset(e, n, g)];
    const float sv = e8m0_is_nan(s) ? __int_as_float(0x7fc00000) : e8m0_to_float(s);
    for (int64_t i = 0; i < 16; ++i) {
      const int64_t kb = g * 16 + i;
      const uint8_t byte = p.w[p.wl.offset(e, n, kb)];
      acc += e2m1_to_float(e2m1_low(byte)) * sv * b_element(p, brow, 2 * kb);
      acc += e2m1_to_float(e2m1_high(byte)) * sv * b_element(p, brow, 2 * kb + 1);
    }
  }
  return acc;
}

// blockIdx.x: tile; threads over output units (intermediate j or output row r).
__global__ void gate_up_simple_kernel(GemmParams p) {
  if (static_cast<int32_t>(blockIdx.x) >= *p.num_tiles) return;
  const Tile tile = p.tiles[blockIdx.x];
  const int64_t j = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (j >= p.out_rows) return;
  for (int32_t i = 0; i < tile.count; ++i) {
    const int64_t slot = tile.start + i;
    const int64_t brow = b_row(p, slot);
    if (p.up_only) {
      const float u = dot_row(p, tile.expert, j, brow) + p.bias[tile.expert * p.rows_pad + j];
      p.act[slot * p.out_rows + permuted_index(j)] = float_to_bf16(activation(p, 0.0f, u));
      continue;
    }
    const float g = dot_row(p, tile.expert, j, brow) + p.bias[tile.expert * p.rows_pad + j];
    const float u = dot_row(p, tile.expert, p.up_offset + j, brow) + p.bias[tile.expert * p.rows_pad + p.up_offset + j];
    p.act[slot * p.out_rows + permuted_index(j)] = float_to_bf16(activation(p, g, u));
  }
}

__global__ void down_simple_kernel(GemmParams p) {
  if (static_cast<int32_t>(blockIdx.x) >= *p.num_tiles) return;
  const Tile tile = p.tiles[blockIdx.x];
  const int64_t r = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (r >= p.out_rows) return;
  for (int32_t i = 0; i < tile.count; ++i) {
    const int64_t slot = tile.start + i;
    p.y[slot * p.out_rows + r] = dot_row(p, tile.expert, r, slot) + p.bias[tile.expert * p.rows_pad + r];
  }
}

// ---- fast path (CUDA tensor cores) ---------------------------------------------------------
#if !defined(__HIPCC__)

constexpr int kWarps = 4;
__device__ __forceinline__ uint32_t word_of(const uint4& v, int w) {
  return w == 0 ? v.x : w == 1 ? v.y : w == 2 ? v.z : v.w;
}

__device__ __forceinline__ uint4 load_nc(const void* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

// The rows one warp owns and where their bytes are. Fragment A = 16 rows at row_a, fragment
// B = 16 rows at row_b (gate and up rows of the same units, or the two halves of a 32-row group
// of w2). Offsets come from the layer's row table (DeviceRowAddressing: addressing.h's offsets
// of expert 0's first runs, plus constant expert and K strides, checked at upload).
struct WarpRows {
  int64_t row_a, row_b;
  bool b_rows_valid;
  const uint8_t* wexp;
  const uint8_t* sexp;
  int32_t woff[4], wstep;
  int32_t soff0[4], soff1[4], sstep;
};

template <bool GATE_UP>
__device__ __forceinline__ WarpRows warp_rows(const GemmParams& p, int32_t e, int64_t rg, int g, int q) {
  WarpRows w;
  w.row_a = GATE_UP ? rg * 16 : rg * 32;
  w.row_b = w.row_a + p.up_offset;
  w.b_rows_valid = w.row_b < p.rows_pad;
  int64_t rows[4] = {w.row_a + g, w.row_a + g + 8, w.row_b + g, w.row_b + g + 8};
  if (!w.b_rows_valid) rows[2] = rows[3] = rows[0];  // loaded but never stored
  const RowTable& t = p.rows_table;
  w.wexp = p.w + e * t.weight_expert_stride;
  w.sexp = p.scale + e * t.scale_expert_stride;
  w.wstep = t.weight_k_step;
  w.sstep = t.scale_k_step;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int32_t* row = t.table + rows[i] * 12;
    w.woff[i] = __ldg(row + q);       // K bytes [16q, 16q + 16)
    w.soff0[i] = __ldg(row + 4 + q);  // even rounds: group 8m + q
    w.soff1[i] = __ldg(row + 8 + q);  // odd rounds: group 8m + 4 + q
  }
  return w;
}

// Round r covers K elements [128r, 128r + 128); lane q's run is [128r + 32q, +32), one group.
__device__ __forceinline__ bool lane_k_valid(const GemmParams& p, int64_t r, int q) { return r * 128 + 32 * q < p.K; }

__device__ __forceinline__ const uint8_t* weight_run(const WarpRows& w, int i, int64_t r) {
  return w.wexp + (w.woff[i] + static_cast<int32_t>(r) * w.wstep);
}

__device__ __forceinline__ void load_scales(const WarpRows& w, const GemmParams& p, int64_t r, int q, uint32_t* sv) {
  const bool kvalid = lane_k_valid(p, r, q);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    // Past K the lane reads its first scale (always in bounds) and discards it: no branch.
    const int32_t off = kvalid ? ((r & 1) ? w.soff1[i] : w.soff0[i]) + static_cast<int32_t>(r >> 1) * w.sstep : 0;
    const uint32_t v = __ldg(w.sexp + w.soff0[i] + (off - w.soff0[i]));
    sv[i] = kvalid ? v : 127u;
  }
}

// One round of tensor-core work: wv = the lane's 4 weight runs (rows g, g+8 of fragments A and
// B), sv their scales; bfetch(j, w) = the lane's 16 bytes of B for sub-tile j, word w.
template <int NT, bool TWO_MUL, typename BFetch>
__device__ __forceinline__ void mma_round_impl(float (&acc)[2][NT][4], const uint4* wv, const uint32_t* sv,
                                               const BFetch& bfetch) {
  ScaleFactor f[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) f[i] = scale_factor(sv[i]);
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    uint4 bv[NT];
#pragma unroll
    for (int j = 0; j < NT; ++j) bv[j] = bfetch(j, w);
    uint32_t d[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) dequant_word<TWO_MUL>(word_of(wv[i], w), f[i], d[i]);
    // Empty sub-tiles and invalid rows (zero B, duplicated A rows) are computed and never
    // stored: no branches inside the MMA loop.
#pragma unroll
    for (int u = 0; u < 2; ++u) {
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const uint32_t b0 = word_of(bv[j], 2 * u), b1 = word_of(bv[j], 2 * u + 1);
        mma_bf16_16816(acc[0][j], d[0][2 * u], d[1][2 * u], d[0][2 * u + 1], d[1][2 * u + 1], b0, b1);
        mma_bf16_16816(acc[1][j], d[2][2 * u], d[3][2 * u], d[2][2 * u + 1], d[3][2 * u + 1], b0, b1);
      }
    }
  }
}

template <int NT, typename BFetch>
__device__ __forceinline__ void mma_round(bool large_scales, float (&acc)[2][NT][4], const uint4* wv,
                                          const uint32_t* sv, const BFetch& bfetch) {
  if (large_scales) {
    mma_round_impl<NT, true>(acc, wv, sv, bfetch);
  } else {
    mma_round_impl<NT, false>(acc, wv, sv, bfetch);
  }
}

// Accumulator c of sub-tile j: row (c < 2 ? g : g + 8), token column 8j + 2q + (c & 1).
// The K loop of one warp (the direct and the small-batch kernels): rounds [r_begin, r_end) of
// 128 K, the next round's weights and scales loaded into registers while this one multiplies.
template <int NT>
__device__ __forceinline__ void mma_k_rounds(const GemmParams& p, const WarpRows& wr, int q, const bool (&bvalid)[NT],
                                             const uint32_t (&brow)[NT], int64_t r_begin, int64_t r_end,
                                             float (&acc)[2][NT][4]) {
  uint4 wcur[4], wnext[4];
  uint32_t scur[4], snext[4];
  auto load_round = [&](int64_t r, uint4* wv, uint32_t* sv) {
    const bool kvalid = lane_k_valid(p, r, q);  // K % 128 == 64 leaves half a round
#pragma unroll
    for (int i = 0; i < 4; ++i) wv[i] = kvalid ? load_nc(weight_run(wr, i, r)) : make_uint4(0, 0, 0, 0);
    load_scales(wr, p, r, q, sv);
  };
  if (r_begin < r_end) load_round(r_begin, wcur, scur);
  for (int64_t r = r_begin; r < r_end; ++r) {
    if (r + 1 < r_end) load_round(r + 1, wnext, snext);
    const bool kvalid = lane_k_valid(p, r, q);
    const uint32_t koff = static_cast<uint32_t>(r) * 128;
    auto bfetch = [&](int j, int w) {
      return (bvalid[j] && kvalid) ? load_nc(p.b + brow[j] + koff + 8 * w) : make_uint4(0, 0, 0, 0);
    };
    mma_round<NT>(p.large_scales, acc, wcur, scur, bfetch);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      wcur[i] = wnext[i];
      scur[i] = snext[i];
    }
  }
}

template <int NT, bool GATE_UP, bool UP_ONLY = false>
__device__ __forceinline__ void epilogue(const GemmParams& p, const Tile& tile, const WarpRows& w,
                                         const float (&acc)[2][NT][4], int g, int q) {
  const float* bias = p.bias + static_cast<int64_t>(tile.expert) * p.rows_pad;
#pragma unroll
  for (int j = 0; j < NT; ++j) {
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int32_t col = 8 * j + 2 * q + (c & 1);
      if (col >= tile.count) continue;
      const int64_t slot = tile.start + col;
      const int64_t rr = (c < 2) ? g : g + 8;
      if constexpr (GATE_UP) {
        const int64_t unit = w.row_a + rr;
        const float gate = acc[0][j][c] + bias[unit];
        const float up = acc[1][j][c] + bias[w.row_b + rr];
        p.act[slot * p.out_rows + permuted_index(unit)] = float_to_bf16(activation(p, gate, up));
      } else {
        const int64_t ra = w.row_a + rr, rb = w.row_b + rr;
        if constexpr (UP_ONLY) {  // non-gated: both row fragments are units of act
          uint16_t* a = p.act + slot * p.out_rows;
          if (ra < p.out_rows) a[permuted_index(ra)] = float_to_bf16(activation(p, 0.0f, acc[0][j][c] + bias[ra]));
          if (w.b_rows_valid && rb < p.out_rows) {
            a[permuted_index(rb)] = float_to_bf16(activation(p, 0.0f, acc[1][j][c] + bias[rb]));
          }
        } else {
          if (ra < p.out_rows) p.y[slot * p.out_rows + ra] = acc[0][j][c] + bias[ra];
          if (w.b_rows_valid && rb < p.out_rows) p.y[slot * p.out_rows + rb] = acc[1][j][c] + bias[rb];
        }
      }
    }
  }
}

template <int NT>
__device__ __forceinline__ void zero_acc(float (&acc)[2][NT][4]) {
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[h][j][c] = 0.0f;
}

// The K-split reduction: partial sums of warps 1..KSPLIT-1 through shared memory, added into
// warp 0's (kpart 0) accumulators in warp order, so the sum order is fixed. Every warp of the
// block must call it (a barrier).
template <int NT, int KSPLIT>
__device__ __forceinline__ void reduce_k_parts(float (&acc)[2][NT][4], int kpart, int lane) {
  __shared__ float red[KSPLIT - 1][2 * NT * 4][32];
  if (kpart > 0) {
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int c = 0; c < 4; ++c) red[kpart - 1][(h * NT + j) * 4 + c][lane] = acc[h][j][c];
  }
  __syncthreads();
  if (kpart > 0) return;
#pragma unroll
  for (int s2 = 0; s2 < KSPLIT - 1; ++s2)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[h][j][c] += red[s2][(h * NT + j) * 4 + c][lane];
}

// 1-D grids, row blocks fastest: the blocks running together share one token tile (its B rows
// stay in L2) and walk one expert's weights, which the expert's next tile then finds in L2.
struct BlockWork {
  int32_t tile_index, row_block;
};
__device__ __forceinline__ BlockWork block_work(int32_t row_blocks) {
  return {static_cast<int32_t>(blockIdx.x / row_blocks), static_cast<int32_t>(blockIdx.x % row_blocks)};
}

// ---- small batches: grouping and combine inside the GEMM kernels ---------------------------------
// A handful of tokens (T*k picks over as many experts) costs mostly launches and their memory
// latencies, so the small-batch kernels (expert_gemm_small_kernel below) fold two stages into
// the GEMMs: gate_up groups the picks itself in every block (inline_group, up to 32 picks),
// and down does the combine (fuse_combine): the last block to finish a row block sums that
// block's rows over the picks of every token in pick order, so the result does not depend on
// which block came last.
constexpr int kSmallTile = 8;

struct SmallGroup {
  Tile tiles[kInlineGroupMaxPairs];
  int32_t sorted[kInlineGroupMaxPairs];  // pick index per slot
  int32_t id[kInlineGroupMaxPairs], below[kInlineGroupMaxPairs], count[kInlineGroupMaxPairs];  // per slot
  int32_t num_tiles;
};

// launch_group's result (stable in pick order, tiles of kSmallTile slots) for pairs <= 32, by
// warp 0: lane p ranks pick p against the others. `write_global`: block 0 also stores it.
__device__ void group_inline(const GemmParams& p, SmallGroup& sg, bool write_global) {
  const int lane = threadIdx.x;
  const int32_t id = lane < p.pairs ? p.topk_ids[lane] : -1;
  const bool picked = id >= 0 && id < p.experts;
  int32_t below = 0, same = 0, before = 0;
  for (int q = 0; q < p.pairs; ++q) {
    const int32_t iq = __shfl_sync(0xffffffffu, id, q);
    const bool vq = iq >= 0 && iq < p.experts;
    below += vq && iq < id;
    same += vq && iq == id;
    before += vq && iq == id && q < lane;
  }
  const int32_t npicked = __popc(__ballot_sync(0xffffffffu, picked));
  if (picked) {
    const int32_t slot = below + before;
    sg.sorted[slot] = lane;
    sg.id[slot] = id;
    sg.below[slot] = below;
    sg.count[slot] = same;
    if (write_global) p.slot_of_pair[lane] = slot;
  }
  __syncwarp();
  const bool has = lane < npicked;
  const int32_t pos = has ? lane - sg.below[lane] : 0;
  const bool start = has && pos % kSmallTile == 0;
  const unsigned starts = __ballot_sync(0xffffffffu, start);
  if (start) {
    Tile t;
    t.expert = sg.id[lane];
    t.start = lane;
    t.count = min(kSmallTile, sg.count[lane] - pos);
    t.unused = 0;
    const int idx = __popc(starts & ((1u << lane) - 1u));
    sg.tiles[idx] = t;
    if (write_global) p.tiles_out[idx] = t;
  }
  if (lane == 0) sg.num_tiles = __popc(starts);
  if (write_global) {
    if (has) p.sorted_pairs_out[lane] = sg.sorted[lane];
    if (lane == 0) *p.num_tiles_out = __popc(starts);
    for (int32_t e = lane; e < p.experts; e += 32) {
      int32_t c = 0;
      for (int32_t s2 = 0; s2 < npicked; ++s2) c += sg.id[s2] == e;
      p.counts_out[e] = c;
    }
  }
  __syncwarp();
}

// Down with fuse_combine, after the block's y rows are stored: arrival on the row block's
// counter; the last block (or, with no picks at all, every block of tile 0) writes out[t, r]
// for every token and the block's rows, and resets the counter for the next call.
template <int ROWS>
__device__ void combine_if_last(const GemmParams& p, int32_t row_block, int32_t ntiles, bool work) {
  __shared__ int32_t last_block;
  __threadfence();  // this block's y before its arrival
  __syncthreads();
  if (threadIdx.x == 0) last_block = !work || atomicAdd(p.counters + row_block, 1) == ntiles - 1;
  __syncthreads();
  if (!last_block) return;
  __threadfence();
  const int64_t r0 = static_cast<int64_t>(row_block) * ROWS;
  const int64_t H = p.out_rows;
  for (int64_t idx = threadIdx.x; idx < p.tokens * ROWS; idx += blockDim.x) {
    const int64_t t = idx / ROWS, r = r0 + idx % ROWS;
    if (r >= H) continue;
    float sum = 0.0f;
    if (t < p.valid) {
      for (int j = 0; j < p.top_k; ++j) {
        const int64_t pick = t * p.top_k + j;
        if (p.topk_ids[pick] >= 0) {
          // Through L2: other blocks wrote these rows.
          sum += p.topk_weights[pick] * __ldcg(p.y + static_cast<int64_t>(p.slot_of_pair[pick]) * H + r);
        }
      }
    }
    p.out[t * H + r] = sum;
  }
  if (threadIdx.x == 0 && work) p.counters[row_block] = 0;
}

// ---- direct kernel: weights and B straight from global memory into registers ------------------
// For small batches (memory-bound): each weight byte is read once, one round is prefetched into
// registers. NT: token sub-tiles of 8 per warp (the token tile is 8*NT). KSPLIT: warps of the
// block that share one row group and split K (reduced through shared memory in warp order).
template <int NT, int KSPLIT, bool GATE_UP, bool UP_ONLY = false>
__global__ void __launch_bounds__(kWarps * 32) expert_gemm_direct_kernel(GemmParams p, int32_t row_blocks) {
  const BlockWork bw = block_work(row_blocks);
  if (bw.tile_index >= *p.num_tiles) return;
  const Tile tile = p.tiles[bw.tile_index];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, q = lane % 4;
  constexpr int kGroupsPerBlock = kWarps / KSPLIT;
  const int64_t rg = static_cast<int64_t>(bw.row_block) * kGroupsPerBlock + warp / KSPLIT;
  const int kpart = warp % KSPLIT;
  // With KSPLIT > 1 the whole block shares rg, so this exit is uniform per block.
  if (rg >= p.row_groups) return;
  const WarpRows wr = warp_rows<GATE_UP>(p, tile.expert, rg, g, q);

  // B rows of this lane's token column g in each sub-tile (element offsets, 32 bits).
  uint32_t brow[NT];
  bool bvalid[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int32_t col = 8 * j + g;
    bvalid[j] = col < tile.count;
    brow[j] = static_cast<uint32_t>((bvalid[j] ? b_row(p, tile.start + col) : 0) * p.K) + 32 * q;
  }

  float acc[2][NT][4];
  zero_acc<NT>(acc);
  const int64_t rounds = (p.K + 127) / 128;
  const int64_t per_part = (rounds + KSPLIT - 1) / KSPLIT;
  const int64_t r_begin = kpart * per_part;
  const int64_t r_end = r_begin + per_part < rounds ? r_begin + per_part : rounds;

  mma_k_rounds<NT>(p, wr, q, bvalid, brow, r_begin, r_end, acc);

  if constexpr (KSPLIT > 1) {
    reduce_k_parts<NT, KSPLIT>(acc, kpart, lane);
    if (kpart > 0) return;
  }
  epilogue<NT, GATE_UP, UP_ONLY>(p, tile, wr, acc, g, q);
}

// The small-batch kernels (p.inline_group / p.fuse_combine, see above; launched with NT = 1,
// KSPLIT = 4): the direct kernel above with the grouping before its K loop (gate_up) or the
// combine after its epilogue (down), and no early exit past the tile check, since the K-split
// reduction and the combine need every warp at their barriers. Kept apart from the direct
// kernel so that the latter's code (and speed: 96 instead of 102 registers at NT = 1) stays as
// it was measured.
template <int NT, int KSPLIT, bool GATE_UP, bool UP_ONLY = false>
__global__ void __launch_bounds__(kWarps * 32) expert_gemm_small_kernel(GemmParams p, int32_t row_blocks) {
  __shared__ SmallGroup sg;
  const BlockWork bw = block_work(row_blocks);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, q = lane % 4;
  int32_t ntiles;
  if (p.inline_group) {
    if (warp == 0) group_inline(p, sg, blockIdx.x == 0);
    __syncthreads();
    ntiles = sg.num_tiles;
  } else {
    ntiles = *p.num_tiles;
  }
  // With the folded combine and no picks at all (every token padding or NaN), the blocks of
  // tile 0 still run, to write the zero output.
  if (bw.tile_index >= (p.fuse_combine && ntiles == 0 ? 1 : ntiles)) return;  // uniform per block
  const bool work = ntiles > 0;
  Tile tile = {0, 0, 0, 0};
  if (work) tile = p.inline_group ? sg.tiles[bw.tile_index] : p.tiles[bw.tile_index];
  constexpr int kGroupsPerBlock = kWarps / KSPLIT;
  const int64_t rg = static_cast<int64_t>(bw.row_block) * kGroupsPerBlock + warp / KSPLIT;
  const int kpart = warp % KSPLIT;
  // No early exit: the K-split reduction and the folded combine need every warp at barriers.
  const bool active = work && rg < p.row_groups;
  const WarpRows wr = warp_rows<GATE_UP>(p, tile.expert, active ? rg : 0, g, q);

  // B rows of this lane's token column g in each sub-tile (element offsets, 32 bits).
  uint32_t brow[NT];
  bool bvalid[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int32_t col = 8 * j + g;
    bvalid[j] = col < tile.count;
    int64_t row = 0;
    if (bvalid[j]) {
      const int64_t slot = tile.start + col;
      // Gathered: the pick's token row of x_perm (gate_up, and the non-gated up projection).
      row = (GATE_UP || UP_ONLY) ? (p.inline_group ? sg.sorted[slot] : p.sorted_pairs[slot]) / p.top_k : slot;
    }
    brow[j] = static_cast<uint32_t>(row * p.K) + 32 * q;
  }

  float acc[2][NT][4];
  zero_acc<NT>(acc);
  const int64_t rounds = (p.K + 127) / 128;
  const int64_t per_part = (rounds + KSPLIT - 1) / KSPLIT;
  const int64_t r_begin = kpart * per_part;
  const int64_t r_end = !active ? r_begin : r_begin + per_part < rounds ? r_begin + per_part : rounds;

  mma_k_rounds<NT>(p, wr, q, bvalid, brow, r_begin, r_end, acc);

  if constexpr (KSPLIT > 1) reduce_k_parts<NT, KSPLIT>(acc, kpart, lane);
  if (active && kpart == 0) epilogue<NT, GATE_UP, UP_ONLY>(p, tile, wr, acc, g, q);
  if constexpr (!GATE_UP) {
    if (p.fuse_combine) combine_if_last<kGroupsPerBlock * 32>(p, bw.row_block, ntiles, work);
  }
}

// ---- staged kernel: a 3-stage cp.async pipeline through shared memory --------------------------
// For larger token tiles (compute-bound): the block's B tile of each round (8*NT tokens x 128 K
// bf16) is loaded once for its 4 warps, and every lane's weight runs are staged too, kStages - 1
// rounds ahead, so neither waits on memory latency in the MMA loop. B is stored with its 16-byte
// chunks XOR-swizzled so that the fragment reads (8 lanes: 2 rows x chunks w, w+4, w+8, w+12)
// and the cp.async writes (consecutive chunks of a row) are both free of bank conflicts.
constexpr int kStages = 3;

template <int NT>
struct StagedLayout {
  static constexpr int kA = kWarps * 4 * 32;  // uint4 per stage: [warp][run i][lane]
  static constexpr int kB = 8 * NT * 16;      // uint4 per stage: [token row][chunk (swizzled)]
  static constexpr int kStage = kA + kB;
  static constexpr size_t kBytes = static_cast<size_t>(kStage) * kStages * 16;
};

__device__ __forceinline__ int b_swizzle(int row, int chunk) { return chunk ^ (((chunk >> 3) & 1) << 1) ^ (row & 1); }

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  // src-size 0 zero-fills the 16 bytes (rows past the tile, K past the padded size).
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// MINB: blocks per SM the register allocation must allow (2: no spills at NT = 8; 3: more warps
// to hide latency, a few spilled registers).
template <int NT, bool GATE_UP, int MINB, bool UP_ONLY = false>
__global__ void __launch_bounds__(kWarps * 32, MINB) expert_gemm_staged_kernel(GemmParams p, int32_t row_blocks) {
  extern __shared__ uint4 smem[];
  using Layout = StagedLayout<NT>;
  const BlockWork bw = block_work(row_blocks);
  if (bw.tile_index >= *p.num_tiles) return;  // uniform per block
  const Tile tile = p.tiles[bw.tile_index];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, q = lane % 4;
  const int64_t rg = static_cast<int64_t>(bw.row_block) * kWarps + warp;
  // A warp past the last row group still loads B and meets every barrier.
  const bool active = rg < p.row_groups;
  const WarpRows wr = warp_rows<GATE_UP>(p, tile.expert, active ? rg : 0, g, q);

  // This thread's B chunks: chunk column c = tid % 16 of rows tid / 16 + 8i.
  const int bchunk = tid % 16;
  uint32_t bsrc[NT];
  bool bvalid[NT];
#pragma unroll
  for (int i = 0; i < NT; ++i) {
    const int32_t row = tid / 16 + 8 * i;
    bvalid[i] = row < tile.count;
    bsrc[i] = static_cast<uint32_t>((bvalid[i] ? b_row(p, tile.start + row) : 0) * p.K) + 8 * bchunk;
  }
  const int64_t rounds = (p.K + 127) / 128;

  auto issue = [&](int64_t r) {
    uint4* stage = smem + (r % kStages) * Layout::kStage;
    const bool kvalid_a = active && lane_k_valid(p, r, q);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      cp_async16(stage + (warp * 4 + i) * 32 + lane, kvalid_a ? weight_run(wr, i, r) : p.w, kvalid_a);
    }
    const bool kvalid_b = r * 128 + 8 * bchunk < p.K;
    uint4* bstage = stage + Layout::kA;
#pragma unroll
    for (int i = 0; i < NT; ++i) {
      const int row = tid / 16 + 8 * i;
      const bool ok = bvalid[i] && kvalid_b;
      cp_async16(bstage + row * 16 + b_swizzle(row, bchunk), ok ? p.b + bsrc[i] + static_cast<uint32_t>(r) * 128 : p.b,
                 ok);
    }
  };

#pragma unroll
  for (int s2 = 0; s2 < kStages - 1; ++s2) {
    if (s2 < rounds) issue(s2);
    cp_async_commit();  // empty groups keep the wait counts uniform
  }

  float acc[2][NT][4];
  zero_acc<NT>(acc);
  uint32_t scur[4], snext[4];
  if (active) load_scales(wr, p, 0, q, scur);
  for (int64_t r = 0; r < rounds; ++r) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // round r is in shared memory; everyone is done with round r - 1's stage
    if (r + kStages - 1 < rounds) issue(r + kStages - 1);
    cp_async_commit();
    if (active) {
      if (r + 1 < rounds) load_scales(wr, p, r + 1, q, snext);
      const uint4* stage = smem + (r % kStages) * Layout::kStage;
      uint4 wv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) wv[i] = stage[(warp * 4 + i) * 32 + lane];
      const uint4* bstage = stage + Layout::kA;
      auto bfetch = [&](int j, int w) {
        const int row = 8 * j + g;
        return bstage[row * 16 + b_swizzle(row, 4 * q + w)];
      };
      mma_round<NT>(p.large_scales, acc, wv, scur, bfetch);
#pragma unroll
      for (int i = 0; i < 4; ++i) scur[i] = snext[i];
    }
  }
  cp_async_wait<0>();
  if (active) epilogue<NT, GATE_UP, UP_ONLY>(p, tile, wr, acc, g, q);
}

template <int NT, int KSPLIT, bool GATE_UP, bool UP_ONLY>
void launch_direct(const GemmParams& p, int64_t max_tiles, gpuStream_t stream) {
  const int64_t groups_per_block = kWarps / KSPLIT;
  const int64_t row_blocks = (p.row_groups + groups_per_block - 1) / groups_per_block;
  expert_gemm_direct_kernel<NT, KSPLIT, GATE_UP, UP_ONLY>
      <<<static_cast<unsigned>(max_tiles * row_blocks), kWarps * 32, 0, stream>>>(p, static_cast<int32_t>(row_blocks));
}

template <int NT, bool GATE_UP, int MINB, bool UP_ONLY>
void launch_staged(const GemmParams& p, int64_t max_tiles, gpuStream_t stream) {
  const size_t bytes = StagedLayout<NT>::kBytes;
  static bool configured = false;  // before any graph capture: the first call is eager
  if (!configured) {
    const cudaError_t err = cudaFuncSetAttribute(expert_gemm_staged_kernel<NT, GATE_UP, MINB, UP_ONLY>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (err != cudaSuccess) throw_internal(std::string("fused_moe: shared memory attribute: ") + cudaGetErrorString(err));
    configured = true;
  }
  const int64_t row_blocks = (p.row_groups + kWarps - 1) / kWarps;
  expert_gemm_staged_kernel<NT, GATE_UP, MINB, UP_ONLY>
      <<<static_cast<unsigned>(max_tiles * row_blocks), kWarps * 32, bytes, stream>>>(p,
                                                                                     static_cast<int32_t>(row_blocks));
}

template <bool GATE_UP, bool UP_ONLY>
void dispatch_fast(const GemmParams& p, const ExpertGemmArgs& a, gpuStream_t stream) {
  const int nt = a.token_tile / 8;
  if (a.small) {
    if (a.token_tile != kSmallTile) throw_bad_input("fused_moe: the small-batch kernels take token tile 8");
    const int64_t row_blocks = p.row_groups;  // one row group per block (K split 4)
    expert_gemm_small_kernel<1, 4, GATE_UP, UP_ONLY>
        <<<static_cast<unsigned>(a.max_tiles * row_blocks), kWarps * 32, 0, stream>>>(p, static_cast<int32_t>(row_blocks));
    return;
  }
  if (a.k_split == 4) {
    if (nt == 1) return launch_direct<1, 4, GATE_UP, UP_ONLY>(p, a.max_tiles, stream);
    if (nt == 2) return launch_direct<2, 4, GATE_UP, UP_ONLY>(p, a.max_tiles, stream);
    throw_bad_input("fused_moe: k_split 4 supports token tiles of 8 and 16, not " + std::to_string(a.token_tile));
  }
  if (a.staged == 2 && nt == 8) return launch_staged<8, GATE_UP, 3, UP_ONLY>(p, a.max_tiles, stream);
  if (a.staged) {
    switch (nt) {
      case 1: return launch_staged<1, GATE_UP, 3, UP_ONLY>(p, a.max_tiles, stream);
      case 2: return launch_staged<2, GATE_UP, 3, UP_ONLY>(p, a.max_tiles, stream);
      case 4: return launch_staged<4, GATE_UP, 3, UP_ONLY>(p, a.max_tiles, stream);
      case 8: return launch_staged<8, GATE_UP, 2, UP_ONLY>(p, a.max_tiles, stream);
    }
  } else {
    switch (nt) {
      case 1: return launch_direct<1, 1, GATE_UP, UP_ONLY>(p, a.max_tiles, stream);
      case 2: return launch_direct<2, 1, GATE_UP, UP_ONLY>(p, a.max_tiles, stream);
      case 4: return launch_direct<4, 1, GATE_UP, UP_ONLY>(p, a.max_tiles, stream);
      case 8: return launch_direct<8, 1, GATE_UP, UP_ONLY>(p, a.max_tiles, stream);
    }
  }
  throw_bad_input("fused_moe: token tile " + std::to_string(a.token_tile) + " is not 8, 16, 32 or 64");
}

#endif  // !__HIPCC__

GemmParams common_params(const ExpertGemmArgs& a) {
  GemmParams p{};
  p.sorted_pairs = a.sorted_pairs;
  p.top_k = a.top_k;
  p.tiles = a.tiles;
  p.num_tiles = a.num_tiles;
  p.act_kind = activation_code(a.act.kind);
  p.large_scales = true;  // set per tensor by the launchers
  p.inline_group = a.small && a.inline_group;
  p.fuse_combine = a.small && a.fuse_combine;
  p.topk_ids = a.topk_ids;
  p.pairs = static_cast<int32_t>(a.pairs);
  p.experts = static_cast<int32_t>(a.experts);
  p.counts_out = a.counts_out;
  p.sorted_pairs_out = a.sorted_pairs_out;
  p.slot_of_pair = a.slot_of_pair;
  p.tiles_out = a.tiles_out;
  p.num_tiles_out = a.num_tiles_out;
  p.topk_weights = a.topk_weights;
  p.tokens = a.tokens;
  p.valid = a.valid;
  p.out = a.out;
  p.counters = a.counters;
  p.alpha = static_cast<float>(a.act.alpha);
  p.limit = static_cast<float>(a.act.limit);
  return p;
}

// The w13 projection (K = H', B gathered by token, act written): its [gate; up] rows, or for
// non-gated experts the up rows alone.
GemmParams w13_params(const ExpertGemmArgs& a, const uint16_t* x_perm, uint16_t* act) {
  const reference::KernelReadyLayer& L = *a.layer;
  const auto rows = L.gated ? 2 * L.intermediate_pad : L.intermediate_pad;
  GemmParams p = common_params(a);
  p.w = L.w13_weight;
  p.scale = L.w13_scale;
  p.rows_table = a.w13_rows;
  p.large_scales = a.w13_large_scales;
  p.bias = L.w13_bias;
  p.wl = WeightTileLayout{L.mode, L.gated, rows, L.hidden_pad / 2};
  p.sl = ScaleLayout{L.mode, L.gated, rows, L.w13_scale_cols};
  p.K = L.hidden_pad;
  p.b = x_perm;
  p.gather = true;
  p.rows_pad = rows;
  p.out_rows = L.intermediate_pad;
  p.act = act;
  return p;
}

// Non-gated experts (relu^2): the up rows [E, I', H'/2], tiled like w2 with K = H', through the
// down kernels' row pairs (32 rows per warp) with the gathered B of gate_up and an epilogue that
// writes act(u) as bf16; every act column below I' is written (padding units: act(0) = 0).
void launch_up_only(const ExpertGemmArgs& a, const uint16_t* x_perm, uint16_t* act, gpuStream_t s) {
  const reference::KernelReadyLayer& L = *a.layer;
  GemmParams p = w13_params(a, x_perm, act);
  p.up_only = true;
  p.fuse_combine = false;  // down combines
  p.up_offset = 16;
  p.row_groups = (L.intermediate_pad + 31) / 32;
#if !defined(__HIPCC__)
  if (!a.simple) {
    dispatch_fast<false, true>(p, a, s);
    check_launch("up GEMM kernel (non-gated experts)");
    return;
  }
#endif
  const dim3 grid(static_cast<unsigned>(a.max_tiles), static_cast<unsigned>((p.out_rows + 127) / 128));
  gate_up_simple_kernel<<<grid, 128, 0, s>>>(p);
  check_launch("up simple kernel (non-gated experts)");
}

}  // namespace

void launch_gate_up(const ExpertGemmArgs& a, const uint16_t* x_perm, uint16_t* act, void* stream) {
  const reference::KernelReadyLayer& L = *a.layer;
  if (!L.gated) return launch_up_only(a, x_perm, act, static_cast<gpuStream_t>(stream));
  GemmParams p = w13_params(a, x_perm, act);
  p.up_offset = L.intermediate_pad;
  p.row_groups = L.intermediate_pad / 16;
  const gpuStream_t s = static_cast<gpuStream_t>(stream);
#if !defined(__HIPCC__)
  if (!a.simple) {
    dispatch_fast<true, false>(p, a, s);
    check_launch("gate_up GEMM kernel");
    return;
  }
#endif
  const dim3 grid(static_cast<unsigned>(a.max_tiles), static_cast<unsigned>((p.out_rows + 127) / 128));
  gate_up_simple_kernel<<<grid, 128, 0, s>>>(p);
  check_launch("gate_up simple kernel");
}

void launch_down(const ExpertGemmArgs& a, const uint16_t* act, float* y, void* stream) {
  const reference::KernelReadyLayer& L = *a.layer;
  GemmParams p = common_params(a);
  p.w = L.w2_weight;
  p.scale = L.w2_scale;
  p.rows_table = a.w2_rows;
  p.large_scales = a.w2_large_scales;
  p.bias = L.w2_bias;
  p.wl = WeightTileLayout{L.mode, false, L.hidden_pad, L.intermediate_pad / 2};
  p.sl = ScaleLayout{L.mode, false, L.hidden_pad, L.w2_scale_cols};
  p.K = L.intermediate_pad;
  p.b = act;
  p.gather = false;
  p.rows_pad = L.hidden_pad;
  p.up_offset = 16;
  p.out_rows = L.hidden;
  p.row_groups = (L.hidden + 31) / 32;  // rows past H are padding and never stored
  p.y = y;
  p.inline_group = false;  // gate_up stored the grouping
  const gpuStream_t s = static_cast<gpuStream_t>(stream);
#if !defined(__HIPCC__)
  if (!a.simple) {
    dispatch_fast<false, false>(p, a, s);
    check_launch("down GEMM kernel");
    return;
  }
#endif
  const dim3 grid(static_cast<unsigned>(a.max_tiles), static_cast<unsigned>((p.out_rows + 127) / 128));
  down_simple_kernel<<<grid, 128, 0, s>>>(p);
  check_launch("down simple kernel");
}

}  // namespace moeprep::gpu::detail
