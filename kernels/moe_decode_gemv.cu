// The decode path of the fused MoE (a few tokens: T * top_k small): two GEMV-style kernels that
// stream the selected experts' MXFP4 rows with every SM busy and many loads in flight, instead
// of the token-tiled GEMMs of moe_expert_gemm.cu (bench/NOTES-fused-moe.md, v10-decode).
//
// Why not the tiled kernels at T = 1: their blocks are short (6 K rounds per warp, one round in
// flight), start with a dependent chain (tile, row table, grouping) and run in about two waves,
// so the GEMMs moved 53 MB at 1.1 TB/s. Here each warp owns 16 (down) or 16 + 16 (gate_up) rows
// of one pick and a slice of K, and issues the loads of up to 6 rounds (12 x 16 bytes per lane)
// before it multiplies any of them. No grouping is needed: a block works for one pick (gate_up,
// and down by default) or one token (down, decode_down 1), reading its expert id from the
// router's output. Measured (H100, v10): 1% faster than the small-batch kernels at 4 picks, 2%
// slower at 32, where each pick dequantizes its expert again; so the automatic choice takes it
// up to 4 picks (kDecodeAutoMaxPairs).
//
// T = 1 after v10 (NOTES, v11-v15-decode; H100 graph replay 51.0 -> 41.9 us): gate_up loads one
// K round per batch so that 4 blocks fit an SM (63 registers) and some load while others
// multiply; down takes a block per (16 rows, token, pick) (720 blocks instead of 180) with the
// combine done by the last of a row unit's picks to arrive; both are launched programmatically
// (PDL), so down's first weight loads overlap gate_up's last wave. v19 (H100, 2026-11-26): the
// loop's dequantization, scale factors and load addresses in fewer instructions (gate_up SASS
// 1472 -> 1336), separated T = 1 41.6 us against 42.4 in the same runs, interleaved 43.3
// against 42.6; gate_up now waits on memory, not issue slots. Asking L2 for the picks' w2
// while gate_up runs (cp.async.bulk.prefetch, v18-decode) was slower: gate_up lost more to
// the extra HBM traffic than down gained (NOTES, v18-v19-decode). v20 (H100, 2026-11-27, same
// run): gate_up in 4-warp blocks with 2 rounds per batch (6 blocks per SM: T = 1's 720 blocks in
// one wave instead of 1.4), and the bias and routing weights staged by cp.async with the first
// loads instead of read after the multiplies: T = 1 37.7-38.1 us against 40.5 (NOTES, v20-decode).
//
// The multiplies still use mma.sync m16n8k16 with the token as one of the 8 columns: the MXFP4
// -> bf16 dequantization (moe_device_math.h) produces A fragments directly, 2.5 instructions per
// element, against about 4.5 for dequantizing to fp32 and FMA; at T = 1 the issue rate is close
// enough to the memory rate that this matters (NOTES, v10-decode).
//
// The K padding (H' past H, I' past I, rounded up to a 32-element scale group) and the padded
// rows (I' past I) are not read: their weights are zero and so are the activations they meet.
// down applies bias and routing weights and sums a token's picks in pick order (in the block,
// or per pick through y and an arrival counter): deterministic, no float atomics.
#include "kernels/portability.h"  // first: defines what MOEPREP_HD needs under HIP
#include <algorithm>
#include <string>
#include <type_traits>

#include "core/error.h"
#include "core/shape.h"
#include "formats/bf16.h"
#include "kernels/moe_device_math.h"
#include "kernels/moe_internal.h"

namespace moeprep::gpu::detail {

#if !defined(__HIPCC__)
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
// Rounds (128 K elements) loaded before any is used: x 2 rows x fragments x 16 bytes per lane.
// gate_up: up to 3 rounds x 2 fragments (gate, up) = 12 x 16 bytes per lane in one batch.
// gate_up with fewer rounds per load batch fits more blocks per SM (registers: 3 rounds 118,
// 2 rounds 80, 1 round 63 at one multiply), so that some blocks load while others multiply.
// With 4-warp blocks (each warp 6 of gpt-oss's 23 rounds), 1 or 2 rounds per batch fit 8 or 6
// blocks per SM: the 720 blocks of T = 1 in one wave instead of 8-warp blocks' 1.4.
constexpr int gate_up_blocks_per_sm(int warps, int batch) {
  if (warps == 12) return 2;
  if (warps == 4) return batch >= 3 ? 4 : batch == 2 ? 6 : 8;
  return batch >= 3 ? 2 : batch == 2 ? 3 : 4;
}
constexpr int kDownBatch = 6;    // 1 fragment: 12 x 16 bytes
constexpr int kMaxDownItems = 64;  // (pick, K part) pairs of one down block

struct DecodeParams {
  const uint8_t* w;
  const uint8_t* scale;
  const float* bias;
  RowTable rows;
  int32_t rows_pad;   // rows per expert (bias stride)
  int32_t k_eff;      // logical K rounded up to 32: runs past it are zero padding, not read
  int32_t k_pad;      // K as stored (row stride of B)
  int32_t rounds;     // ceil(k_eff / 128)
  int32_t out_rows;   // gate_up: I rounded up to 32 (act columns written); down: H
  int32_t up_offset;  // gate_up: I' (up rows follow the gate rows)
  int32_t act_stride; // gate_up: I'
  int32_t k_parts;    // down: K parts per pick
  float* y;           // down per pick: [P, H] fp32, each pick's rows before the combine
  int32_t* counters;  // down per pick: [T, units] arrivals, zero between calls
  const int32_t* topk_ids;
  const float* topk_weights;
  int32_t top_k, experts, tokens, valid;
  const uint16_t* b;  // gate_up: x_perm [T, H']; down: act [P, I'] (both K-permuted)
  uint16_t* act;
  float* out;
  int act_kind;
  float alpha, limit;
};

// Where a lane's rows are: weight run q and the scale groups of rounds r (even, odd), from the
// layer's row table (addressing.h's offsets, checked at upload; see DeviceRowAddressing). The
// table is expert 0's, so a block loads it before it knows its expert: one dependent memory
// latency less on the way to the first weight load.
template <int R>
struct LaneRows {
  const uint8_t* wexp;
  const uint8_t* sexp;
  int32_t woff[R], soff0[R], soff1[R];
};

template <int R>
__device__ __forceinline__ LaneRows<R> lane_rows(const DecodeParams& p, const int32_t (&row)[R], int q) {
  LaneRows<R> lr;
  lr.wexp = p.w;
  lr.sexp = p.scale;
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int32_t* t = p.rows.table + static_cast<int64_t>(row[i]) * 12;
    lr.woff[i] = __ldg(t + q);
    lr.soff0[i] = __ldg(t + 4 + q);
    lr.soff1[i] = __ldg(t + 8 + q);
  }
  return lr;
}

template <int R>
__device__ __forceinline__ void set_expert(const DecodeParams& p, int32_t e, LaneRows<R>& lr) {
  lr.wexp = p.w + e * p.rows.weight_expert_stride;
  lr.sexp = p.scale + e * p.rows.scale_expert_stride;
}

// Rounds [r0, r0 + B) of the lane's R rows of the expert whose weights and scales start at
// wexp and sexp; past r_end or k_eff: zero weights, scale 2^0. The rows' offsets within the
// expert are 32-bit sums added to the one 64-bit base.
template <int R, int B>
__device__ __forceinline__ void load_batch(const DecodeParams& p, const LaneRows<R>& lr, const uint8_t* wexp,
                                           const uint8_t* sexp, int r0, int r_end, int q, uint4 (&wv)[B][R],
                                           uint32_t (&sv)[B][R]) {
#pragma unroll
  for (int b = 0; b < B; ++b) {
    const int r = r0 + b;
    const bool ok = r < r_end && r * 128 + 32 * q < p.k_eff;
    const int32_t wstep = r * p.rows.weight_k_step, sstep = (r >> 1) * p.rows.scale_k_step;
#pragma unroll
    for (int i = 0; i < R; ++i) {
      wv[b][i] = ok ? __ldg(reinterpret_cast<const uint4*>(wexp + (lr.woff[i] + wstep))) : make_uint4(0, 0, 0, 0);
      sv[b][i] = ok ? __ldg(sexp + (((r & 1) ? lr.soff1[i] : lr.soff0[i]) + sstep)) : 127u;
    }
  }
}
template <int R, int B>
__device__ __forceinline__ void load_batch(const DecodeParams& p, const LaneRows<R>& lr, int r0, int r_end, int q,
                                           uint4 (&wv)[B][R], uint32_t (&sv)[B][R]) {
  load_batch<R, B>(p, lr, lr.wexp, lr.sexp, r0, r_end, q, wv, sv);
}

// The MXFP4 -> bf16 dequantization of the decode kernels: the values of moe_device_math.h's
// dequant_word and scale_factor in fewer instructions (v19-decode; the bits are the same,
// tests/formats/e2m1_bf16_bits_test.cpp): 3 integer instructions per pair (t = 1: 4) instead
// of 3-4 plus shifts, and without TWO_MUL (every scale code <= 128) the scale factor is one
// multiply-add instead of two branches. Measured with the shared-memory bases below: issue
// slots 58 -> 49% busy in gate_up.
template <bool TWO_MUL>
__device__ __forceinline__ ScaleFactor lean_scale_factor(uint32_t s) {
  if constexpr (TWO_MUL) {
    return scale_factor(s);
  } else {
    return {e2m1_bits::low_scale(s), kOneX2};
  }
}
template <bool TWO_MUL>
__device__ __forceinline__ void dequant_word_lean(uint32_t q, ScaleFactor f, uint32_t* out) {
  uint32_t v[4];
  e2m1_bits::pairs_lean(q, v);
#pragma unroll
  for (int t = 0; t < 4; ++t) out[t] = TWO_MUL ? bf16x2_mul(bf16x2_mul(v[t], f.f1), f.f2) : bf16x2_mul(v[t], f.f1);
}

// Programmatic dependent launch (sm_90): wait until the previous grid has completed and its
// stores are visible; let the next grid start its prologue. Without a programmatic launch (or
// below sm_90) the wait returns at once and the trigger does nothing.
__device__ __forceinline__ void wait_previous_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void start_next_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ uint32_t word_of(const uint4& v, int w) {
  return w == 0 ? v.x : w == 1 ? v.y : w == 2 ? v.z : v.w;
}

// acc[f] += fragment f (rows 2f: g, 2f+1: g+8) x B for the batch's rounds; bsm = the B row in
// shared memory (uint4 index 16 r + 4 q + w = K elements 128 r + 32 q + 8 w, K-permuted). Every
// lane reads the token's B, so all 8 columns hold it; column 0 is the one kept.
template <int F, int B, bool TWO_MUL>
__device__ __forceinline__ void mma_batch(float (&acc)[F][4], const uint4 (&wv)[B][2 * F],
                                          const uint32_t (&sv)[B][2 * F], const uint4* bsm, int r0, int r_end,
                                          int q) {
#pragma unroll
  for (int b = 0; b < B; ++b) {
    const int r = r0 + b;
    if (r >= r_end) break;  // uniform per warp
    ScaleFactor f[2 * F];
#pragma unroll
    for (int i = 0; i < 2 * F; ++i) f[i] = lean_scale_factor<TWO_MUL>(sv[b][i]);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint4 bv = bsm[16 * r + 4 * q + w];
      uint32_t d[2 * F][4];
#pragma unroll
      for (int i = 0; i < 2 * F; ++i) dequant_word_lean<TWO_MUL>(word_of(wv[b][i], w), f[i], d[i]);
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        const uint32_t b0 = word_of(bv, 2 * u), b1 = word_of(bv, 2 * u + 1);
#pragma unroll
        for (int h = 0; h < F; ++h) {
          mma_bf16_16816(acc[h], d[2 * h][2 * u], d[2 * h + 1][2 * u], d[2 * h][2 * u + 1], d[2 * h + 1][2 * u + 1],
                         b0, b1);
        }
      }
    }
  }
}

// Closes the cp.async group of the copies this thread issued and waits for them.
__device__ __forceinline__ void wait_staged() {
  asm volatile("cp.async.commit_group;\n" ::);
  asm volatile("cp.async.wait_group 0;\n" ::);
}

// Copies `rows` rows of B (`row16` uint4 each, global row stride `stride` elements) into
// shared `dst`, zero from element k_eff of a row on, by cp.async: every copy of the block is in
// flight at once and holds no registers. (A load-then-store loop waits one memory latency per
// trip: eight in down at top-4 -- found in its PTX after run 2 of v10-decode.) Rows of picks that
// route nowhere are copied too (their act rows hold stale data) and never read.
__device__ __forceinline__ void stage_rows(uint4* dst, const uint16_t* src, int64_t stride, int rows, int row16,
                                           int k_eff) {
  const int n = rows * row16;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int j = i / row16, c = i - j * row16;
    const bool ok = c * 8 < k_eff;
    const void* from = ok ? static_cast<const void*>(src + j * stride + c * 8) : static_cast<const void*>(src);
    const uint32_t to = static_cast<uint32_t>(__cvta_generic_to_shared(dst + i));
    // src-size 0 zero-fills the 16 bytes without reading.
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(to), "l"(from), "r"(ok ? 16 : 0));
  }
  wait_staged();
}

// One 4-byte word into shared memory by cp.async, in the group the next wait_staged (or the
// stage_rows that ends with it) closes. For the operands a block needs only after its
// multiplies (bias, routing weights): loaded at the block's end they were one more memory
// latency on every block's chain; staged early they arrive with the weights and hold no
// registers.
__device__ __forceinline__ void stage_word(void* dst, const void* src) {
  const uint32_t to = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(to), "l"(src));
}

// gate_up: block = (16-row unit, pick), pick fastest (picks of one expert meet in L2); warp =
// K part. act[pick, permuted(n)] = activation(gate_n, up_n) for the unit's 16 rows n. W warps:
// 4 (the automatic choice, with B = 2: 6 blocks per SM), 8, or 12 (2 blocks per SM, with B = 2
// each warp's 2 rounds of gpt-oss's 23 in one batch).
template <bool TWO_MUL, int B, int W>
__global__ void __launch_bounds__(W * 32, gate_up_blocks_per_sm(W, B)) decode_gate_up_kernel(DecodeParams p) {
  extern __shared__ uint4 bsm[];
  __shared__ float red[W][32];
  __shared__ float bias_sm[32];  // the unit's 16 gate then 16 up biases
  // The pick's weight and scale bases, read back by the loop's loads: in registers the compiler
  // rebuilt them from the expert id and the parameters for every load (SASS of v18-decode: ~100
  // of the loop's ~485 instructions per round went to the 8 loads' addresses).
  __shared__ const uint8_t* expert_base[2];
  const int P = p.tokens * p.top_k;
  const int pick = blockIdx.x % P, unit = blockIdx.x / P;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const int32_t n0 = unit * 16 + g;
  const int32_t rows[4] = {n0, n0 + 8, p.up_offset + n0, p.up_offset + n0 + 8};
  LaneRows<4> lr = lane_rows<4>(p, rows, q);
  // The router's ids and x_perm come from the previous grid. Once every block has passed here,
  // down may start: its weight prefetch then overlaps this grid's last wave.
  wait_previous_grid();
  start_next_grid();
  const int32_t e = p.topk_ids[pick];
  if (e < 0 || e >= p.experts) return;  // padding or NaN token: down skips the pick; uniform
  set_expert(p, e, lr);
  if (threadIdx.x == 0) {
    expert_base[0] = lr.wexp;
    expert_base[1] = lr.sexp;
  }
  const int per = (p.rounds + W - 1) / W;
  const int r_begin = warp * per, r_end = min(r_begin + per, p.rounds);
  float acc[2][4] = {};
  uint4 wv[B][4];
  uint32_t sv[B][4];
  // The first batch's loads are in flight while the block stages the token's B row.
  if (r_begin < r_end) load_batch<4, B>(p, lr, r_begin, r_end, q, wv, sv);
  if (threadIdx.x < 32) {
    const int32_t i = threadIdx.x;
    stage_word(&bias_sm[i], p.bias + static_cast<int64_t>(e) * p.rows_pad + (i < 16 ? 0 : p.up_offset) + unit * 16 +
                                 i % 16);
  }
  stage_rows(bsm, p.b + static_cast<int64_t>(pick / p.top_k) * p.k_pad, p.k_pad, 1, p.rounds * 16, p.k_eff);
  __syncthreads();
  for (int r0 = r_begin; r0 < r_end; r0 += B) {
    if (r0 != r_begin) load_batch<4, B>(p, lr, expert_base[0], expert_base[1], r0, r_end, q, wv, sv);
    mma_batch<2, B, TWO_MUL>(acc, wv, sv, bsm, r0, r_end, q);
  }
  // Column 0 (q == 0): c = 0 row g, c = 2 row g + 8. K parts added in warp order.
  if (q == 0) {
    red[warp][g] = acc[0][0];
    red[warp][g + 8] = acc[0][2];
    red[warp][16 + g] = acc[1][0];
    red[warp][24 + g] = acc[1][2];
  }
  __syncthreads();
  if (threadIdx.x < 16) {
    const int32_t n = unit * 16 + threadIdx.x;
    float gate = 0.0f, up = 0.0f;
#pragma unroll
    for (int w = 0; w < W; ++w) {
      gate += red[w][threadIdx.x];
      up += red[w][16 + threadIdx.x];
    }
    gate += bias_sm[threadIdx.x];
    up += bias_sm[16 + threadIdx.x];
    p.act[static_cast<int64_t>(pick) * p.act_stride + permuted_index(n)] =
        float_to_bf16(gated_activation(p.act_kind, p.alpha, p.limit, gate, up));
  }
}

// down + combine: block = (16-row unit, token), token fastest; warp = (pick j, K part s) items.
// out[t, n] = sum over picks j in pick order of w_j * (sum over parts s in order + bias).
template <bool TWO_MUL>
__global__ void __launch_bounds__(kThreads) decode_down_kernel(DecodeParams p) {
  extern __shared__ uint4 bsm[];  // [top_k][rounds * 16]
  __shared__ float red[kMaxDownItems][16];
  const int t = blockIdx.x % p.tokens, unit = blockIdx.x / p.tokens;
  const int32_t n_out = unit * 16 + static_cast<int32_t>(threadIdx.x);
  if (t >= p.valid) {  // padding token: zero rows; uniform
    wait_previous_grid();  // no global store before the previous grid is done
    if (threadIdx.x < 16 && n_out < p.out_rows) p.out[static_cast<int64_t>(t) * p.out_rows + n_out] = 0.0f;
    return;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const int k = p.top_k, S = p.k_parts, items = k * S;
  const int per = (p.rounds + S - 1) / S;
  const int row16 = p.rounds * 16;
  const int32_t rows[2] = {unit * 16 + g, unit * 16 + g + 8};
  auto expert_of = [&](int j) {
    const int32_t e = p.topk_ids[t * k + j];
    return (e >= 0 && e < p.experts) ? e : -1;
  };
  uint4 wv[kDownBatch][2];
  uint32_t sv[kDownBatch][2];
  LaneRows<2> lr = lane_rows<2>(p, rows, q);  // the same rows for every pick
  // The first item's first batch is in flight while the block stages the picks' act rows.
  int32_t e_first = -1;
  if (warp < items) {
    e_first = expert_of(warp / S);
    const int rb = (warp % S) * per, re = min(rb + per, p.rounds);
    if (e_first >= 0) {
      set_expert(p, e_first, lr);
      if (rb < re) load_batch<2, kDownBatch>(p, lr, rb, re, q, wv, sv);
    }
  }
  // The ids and weights were written two grids back (the router), complete before gate_up's
  // blocks passed their wait and so before this grid started; act is gate_up's: wait for it.
  wait_previous_grid();
  stage_rows(bsm, p.b + static_cast<int64_t>(t) * k * p.k_pad, p.k_pad, k, row16, p.k_eff);
  __syncthreads();
  for (int item = warp; item < items; item += kWarps) {
    const int j = item / S;
    const int rb = (item % S) * per, re = min(rb + per, p.rounds);
    const int32_t e = item == warp ? e_first : expert_of(j);
    float acc[1][4] = {};
    if (e >= 0) {
      if (item != warp) set_expert(p, e, lr);
      for (int r0 = rb; r0 < re; r0 += kDownBatch) {
        if (item != warp || r0 != rb) load_batch<2, kDownBatch>(p, lr, r0, re, q, wv, sv);
        mma_batch<1, kDownBatch, TWO_MUL>(acc, wv, sv, bsm + j * row16, r0, re, q);
      }
    }
    if (q == 0) {
      red[item][g] = acc[0][0];
      red[item][g + 8] = acc[0][2];
    }
  }
  __syncthreads();
  if (threadIdx.x < 16 && n_out < p.out_rows) {
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) {
      const int32_t e = expert_of(j);
      if (e < 0) continue;
      float y = 0.0f;
      for (int s = 0; s < S; ++s) y += red[j * S + s][threadIdx.x];
      y += p.bias[static_cast<int64_t>(e) * p.rows_pad + n_out];
      sum += p.topk_weights[t * k + j] * y;
    }
    p.out[static_cast<int64_t>(t) * p.out_rows + n_out] = sum;
  }
}

// down per pick (more blocks: 720 instead of 180 at T = 1, so every SM streams): block = (16-row
// unit, token, pick), pick fastest; its 8 warps split K. y[pick, n] = sum over parts in warp
// order + bias. The last of a (unit, token)'s top_k blocks to arrive (counter, reset by it) sums
// out[t, n] = sum over picks j in pick order of w_j * y[j, n]: deterministic, no float atomics.
// W warps per block: 8 (4 blocks per SM, 1.4 waves at T = 1) or 4 (8 blocks per SM: one wave,
// each warp two batches of B rounds).
// CLUSTER (sm_90, v17-decode): a (unit, token)'s top_k blocks form one thread-block cluster;
// each keeps its y row in shared memory and, after a cluster barrier, the pick-0 block sums them
// through distributed shared memory in pick order: the same arithmetic (same bits) without the
// y store, fence, arrival atomic and L2 read-back at the end of every block's chain. Measured
// (H100, 2026-11-26, same run): T = 1 42.4 us graph vs 41.7 with the counter; ncu down 17.5 vs
// 17.0 us: the blocks of a cluster wait for the slowest pick, and the co-scheduling costs more
// than the tail it removes. Kept as decode_down 4, not automatic.
template <bool TWO_MUL, int B, int W, bool CLUSTER = false>
__global__ void __launch_bounds__(W * 32, W == 4 ? 8 : 4) decode_down_pick_kernel(DecodeParams p) {
  extern __shared__ uint4 bsm[];  // [rounds * 16]
  __shared__ float red[W][16];
  __shared__ float ysm[16];  // CLUSTER: this pick's y row
  __shared__ float bias_sm[16];
  __shared__ float weight_sm[kMaxDownItems];  // the token's routing weights and ids, for the combine
  __shared__ int32_t id_sm[kMaxDownItems];
  __shared__ int last;
  const int k = p.top_k;
  const int j = blockIdx.x % k, t = (blockIdx.x / k) % p.tokens, unit = blockIdx.x / (k * p.tokens);
  const int32_t n_out = unit * 16 + static_cast<int32_t>(threadIdx.x);
  if (t >= p.valid) {  // padding token: pick 0's block writes the zero rows; no arrival; uniform
    wait_previous_grid();
    if (j == 0 && threadIdx.x < 16 && n_out < p.out_rows) p.out[static_cast<int64_t>(t) * p.out_rows + n_out] = 0.0f;
    return;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const int32_t rows[2] = {unit * 16 + g, unit * 16 + g + 8};
  LaneRows<2> lr = lane_rows<2>(p, rows, q);
  const int pick = t * k + j;
  const int32_t e0 = p.topk_ids[pick];  // the router's: complete before gate_up's blocks waited
  const int32_t e = (e0 >= 0 && e0 < p.experts) ? e0 : -1;
  const int per = (p.rounds + W - 1) / W;
  const int r_begin = warp * per, r_end = min(r_begin + per, p.rounds);
  uint4 wv[B][2];
  uint32_t sv[B][2];
  if (e >= 0) {
    set_expert(p, e, lr);
    if (r_begin < r_end) load_batch<2, B>(p, lr, r_begin, r_end, q, wv, sv);
    if (threadIdx.x < 16 && n_out < p.out_rows) {
      stage_word(&bias_sm[threadIdx.x], p.bias + static_cast<int64_t>(e) * p.rows_pad + n_out);
    }
  }
  if (threadIdx.x < k) {  // the router's, like e0
    stage_word(&weight_sm[threadIdx.x], p.topk_weights + t * k + threadIdx.x);
    stage_word(&id_sm[threadIdx.x], p.topk_ids + t * k + threadIdx.x);
  }
  wait_previous_grid();  // act is gate_up's
  float acc[1][4] = {};
  if (e >= 0) {  // uniform
    stage_rows(bsm, p.b + static_cast<int64_t>(pick) * p.k_pad, p.k_pad, 1, p.rounds * 16, p.k_eff);
    __syncthreads();
    for (int r0 = r_begin; r0 < r_end; r0 += B) {
      if (r0 != r_begin) load_batch<2, B>(p, lr, r0, r_end, q, wv, sv);
      mma_batch<1, B, TWO_MUL>(acc, wv, sv, bsm, r0, r_end, q);
    }
  } else {
    wait_staged();
  }
  if (q == 0) {
    red[warp][g] = acc[0][0];
    red[warp][g + 8] = acc[0][2];
  }
  __syncthreads();
  const int64_t y_row = static_cast<int64_t>(pick) * p.out_rows;
  if (threadIdx.x < 16 && n_out < p.out_rows && e >= 0) {
    float y = 0.0f;
#pragma unroll
    for (int w = 0; w < W; ++w) y += red[w][threadIdx.x];
    y += bias_sm[threadIdx.x];
    if (CLUSTER) {
      ysm[threadIdx.x] = y;
    } else {
      p.y[y_row + n_out] = y;
      __threadfence();  // visible device-wide before this block arrives
    }
  }
  if constexpr (CLUSTER) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    // The cluster is the top_k blocks of (unit, t), rank j (grid pick-fastest, cluster dim k).
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
    if (j == 0 && threadIdx.x < 16 && n_out < p.out_rows) {
      float sum = 0.0f;
      for (int i = 0; i < k; ++i) {
        const int32_t ei = id_sm[i];
        if (ei < 0 || ei >= p.experts) continue;
        uint32_t local = static_cast<uint32_t>(__cvta_generic_to_shared(&ysm[threadIdx.x])), remote;
        asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(i));
        float yi;
        asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(yi) : "r"(remote) : "memory");
        sum += weight_sm[i] * yi;
      }
      p.out[static_cast<int64_t>(t) * p.out_rows + n_out] = sum;
    }
    // The other picks keep their shared memory until pick 0 has read it.
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
    if (j != 0) asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
#else
    __trap();  // launched only on compute capability 9.0 and later
#endif
    return;
  }
  __syncthreads();
  int32_t* counter = p.counters + static_cast<int64_t>(t) * gridDim.x / (k * p.tokens) + unit;
  if (threadIdx.x == 0) last = atomicAdd(counter, 1) == k - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  if (threadIdx.x == 0) *counter = 0;  // ready for the next call and graph replay
  if (threadIdx.x < 16 && n_out < p.out_rows) {
    float sum = 0.0f;
    for (int i = 0; i < k; ++i) {
      const int32_t ei = id_sm[i];
      if (ei < 0 || ei >= p.experts) continue;
      sum += weight_sm[i] * __ldcg(p.y + static_cast<int64_t>(t * k + i) * p.out_rows + n_out);
    }
    p.out[static_cast<int64_t>(t) * p.out_rows + n_out] = sum;
  }
}

// A logical K (or row count) rounded up to whole runs of 32, within its padded size.
int32_t k_in_runs_of_32(int64_t logical, int64_t padded) {
  return static_cast<int32_t>(std::min(round_up(logical, 32), padded));
}

// Dynamic shared memory above the default 48 KB needs the kernel's opt-in (large top_k * I');
// set once per kernel before any graph capture (the first call is eager).
template <typename Kernel>
void allow_shared(Kernel kernel, size_t bytes, int& allowed) {
  if (bytes <= 48 * 1024 || static_cast<int>(bytes) <= allowed) return;
  const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(bytes));
  if (err != cudaSuccess) {
    throw_internal(std::string("fused_moe: decode kernel shared memory of ") + std::to_string(bytes) +
                   " bytes: " + cudaGetErrorString(err));
  }
  allowed = static_cast<int>(bytes);
}

// Launches `kernel` with or without the programmatic-serialization attribute (PDL).
template <typename Kernel>
void launch(Kernel kernel, unsigned blocks, size_t smem, gpuStream_t s, bool pdl, const DecodeParams& p,
            const char* what, int threads = kThreads, int cluster = 0) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(blocks);
  cfg.blockDim = dim3(threads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[2];
  int n = 0;
  if (pdl) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster > 0) {  // thread-block clusters of `cluster` consecutive blocks
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = static_cast<unsigned>(cluster);
    attr[n].val.clusterDim.y = 1;
    attr[n++].val.clusterDim.z = 1;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, p);
  if (err != cudaSuccess) throw_internal(std::string("fused_moe: ") + what + ": " + cudaGetErrorString(err));
  check_launch(what);
}

DecodeParams common_params(const DecodeArgs& a) {
  DecodeParams p{};
  p.topk_ids = a.topk_ids;
  p.topk_weights = a.topk_weights;
  p.top_k = a.top_k;
  p.experts = static_cast<int32_t>(a.layer->experts);
  p.tokens = static_cast<int32_t>(a.tokens);
  p.valid = static_cast<int32_t>(a.valid);
  p.act_kind = activation_code(a.act.kind);
  p.alpha = static_cast<float>(a.act.alpha);
  p.limit = static_cast<float>(a.act.limit);
  return p;
}

}  // namespace
#endif  // !__HIPCC__

bool decode_supported(const reference::KernelReadyLayer& L, int top_k, int64_t tokens) {
#if defined(__HIPCC__)
  (void)L, (void)top_k, (void)tokens;
  return false;  // mma.sync: CUDA only
#else
  // 32-bit offsets and grid sizes; scale groups whole in the padded K; the gated [gate; up] w13.
  return L.gated && top_k >= 1 && top_k <= kMaxDownItems && tokens >= 1 && tokens * top_k <= (1 << 20) &&
         L.hidden_pad % 32 == 0 && L.intermediate_pad % 32 == 0 && L.hidden_pad % 16 == 0 &&
         tokens * top_k * std::max(L.hidden_pad, L.intermediate_pad) < (int64_t{1} << 31);
#endif
}

void launch_decode_gate_up(const DecodeArgs& a, const uint16_t* x_perm, uint16_t* act, void* stream) {
#if defined(__HIPCC__)
  (void)a, (void)x_perm, (void)act, (void)stream;
  throw_internal("fused_moe: the decode kernels are CUDA only");
#else
  const reference::KernelReadyLayer& L = *a.layer;
  DecodeParams p = common_params(a);
  p.w = L.w13_weight;
  p.scale = L.w13_scale;
  p.bias = L.w13_bias;
  p.rows = a.w13_rows;
  p.rows_pad = static_cast<int32_t>(2 * L.intermediate_pad);
  p.k_eff = k_in_runs_of_32(L.hidden, L.hidden_pad);
  p.k_pad = static_cast<int32_t>(L.hidden_pad);
  p.rounds = (p.k_eff + 127) / 128;
  p.out_rows = k_in_runs_of_32(L.intermediate, L.intermediate_pad);
  p.up_offset = static_cast<int32_t>(L.intermediate_pad);
  p.act_stride = static_cast<int32_t>(L.intermediate_pad);
  p.b = x_perm;
  p.act = act;
  const int64_t units = p.out_rows / 16;  // out_rows is a multiple of 32
  const size_t smem = static_cast<size_t>(p.rounds) * 16 * sizeof(uint4);
  const unsigned blocks = static_cast<unsigned>(units * a.tokens * a.top_k);
  const gpuStream_t s = static_cast<gpuStream_t>(stream);
  // Shared-memory opt-ins already made, per instance (large scales, rounds per batch - 1).
  static int allowed8[2][3] = {}, allowed4[2][3] = {}, allowed12[2] = {};
  auto go = [&](auto kernel, int& allowed_bytes, int threads) {
    allow_shared(kernel, smem, allowed_bytes);
    launch(kernel, blocks, smem, s, a.pdl, p, "decode gate_up kernel", threads);
  };
  // The instance of W warps for the scale mode and the batch (1, 2 or 3 rounds).
  auto go_warps = [&](auto warps, int (&allowed)[2][3]) {
    constexpr int W = decltype(warps)::value;
    const int b = a.gate_up_batch <= 0 || a.gate_up_batch >= 3 ? 3 : a.gate_up_batch;
    const int l = a.w13_large_scales ? 1 : 0;
    if (l == 1 && b == 3) go(decode_gate_up_kernel<true, 3, W>, allowed[l][2], W * 32);
    if (l == 1 && b == 2) go(decode_gate_up_kernel<true, 2, W>, allowed[l][1], W * 32);
    if (l == 1 && b == 1) go(decode_gate_up_kernel<true, 1, W>, allowed[l][0], W * 32);
    if (l == 0 && b == 3) go(decode_gate_up_kernel<false, 3, W>, allowed[l][2], W * 32);
    if (l == 0 && b == 2) go(decode_gate_up_kernel<false, 2, W>, allowed[l][1], W * 32);
    if (l == 0 && b == 1) go(decode_gate_up_kernel<false, 1, W>, allowed[l][0], W * 32);
  };
  if (a.gate_up_warps == 12) {  // 2 rounds per batch
    if (a.w13_large_scales) go(decode_gate_up_kernel<true, 2, 12>, allowed12[1], 384);
    if (!a.w13_large_scales) go(decode_gate_up_kernel<false, 2, 12>, allowed12[0], 384);
  } else if (a.gate_up_warps == 4) {
    go_warps(std::integral_constant<int, 4>{}, allowed4);
  } else {
    go_warps(std::integral_constant<int, 8>{}, allowed8);
  }
#endif
}

void launch_decode_down(const DecodeArgs& a, const uint16_t* act, float* out, void* stream) {
#if defined(__HIPCC__)
  (void)a, (void)act, (void)out, (void)stream;
  throw_internal("fused_moe: the decode kernels are CUDA only");
#else
  const reference::KernelReadyLayer& L = *a.layer;
  DecodeParams p = common_params(a);
  p.w = L.w2_weight;
  p.scale = L.w2_scale;
  p.bias = L.w2_bias;
  p.rows = a.w2_rows;
  p.rows_pad = static_cast<int32_t>(L.hidden_pad);
  p.k_eff = k_in_runs_of_32(L.intermediate, L.intermediate_pad);
  p.k_pad = static_cast<int32_t>(L.intermediate_pad);
  p.rounds = (p.k_eff + 127) / 128;
  p.out_rows = static_cast<int32_t>(L.hidden);
  // As many K parts as fill the block's warps with (pick, part) items, at most one per round.
  p.k_parts = std::max(1, std::min(kWarps / std::max(1, a.top_k), static_cast<int>(p.rounds)));
  p.b = act;
  p.out = out;
  const int64_t units = (L.hidden + 15) / 16;
  const gpuStream_t s = static_cast<gpuStream_t>(stream);
  if (a.down_per_pick) {
    p.y = a.y;
    p.counters = a.counters;
    const size_t smem = static_cast<size_t>(p.rounds) * 16 * sizeof(uint4);
    const unsigned blocks = static_cast<unsigned>(units * a.tokens * a.top_k);
    static int allowed_pick[2][2] = {};
    const char* what = "decode down kernel (per pick)";
    auto go = [&](auto kernel, int& allowed_bytes, int threads) {
      allow_shared(kernel, smem, allowed_bytes);
      launch(kernel, blocks, smem, s, a.pdl, p, what, threads, a.down_cluster ? a.top_k : 0);
    };
    const bool four = a.down_warps == 4;
    static int allowed_cluster[2] = {};
    if (a.down_cluster) {
      if (a.w2_large_scales) go(decode_down_pick_kernel<true, 3, 8, true>, allowed_cluster[1], 256);
      if (!a.w2_large_scales) go(decode_down_pick_kernel<false, 3, 8, true>, allowed_cluster[0], 256);
      return;
    }
    if (a.w2_large_scales) {
      if (four) go(decode_down_pick_kernel<true, 3, 4>, allowed_pick[1][1], 128);
      if (!four) go(decode_down_pick_kernel<true, 3, 8>, allowed_pick[1][0], 256);
    } else {
      if (four) go(decode_down_pick_kernel<false, 3, 4>, allowed_pick[0][1], 128);
      if (!four) go(decode_down_pick_kernel<false, 3, 8>, allowed_pick[0][0], 256);
    }
    return;
  }
  const size_t smem = static_cast<size_t>(a.top_k) * p.rounds * 16 * sizeof(uint4);
  const unsigned blocks = static_cast<unsigned>(units * a.tokens);
  static int allowed[2] = {0, 0};
  if (a.w2_large_scales) {
    allow_shared(decode_down_kernel<true>, smem, allowed[1]);
    launch(decode_down_kernel<true>, blocks, smem, s, a.pdl, p, "decode down kernel");
  } else {
    allow_shared(decode_down_kernel<false>, smem, allowed[0]);
    launch(decode_down_kernel<false>, blocks, smem, s, a.pdl, p, "decode down kernel");
  }
#endif
}

}  // namespace moeprep::gpu::detail
