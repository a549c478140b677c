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
  int64_t row_groups;      // warp row groups
  int64_t up_offset;       // gate_up: I' (up rows follow the gate rows); down: 16
  int64_t rows_pad;        // rows per expert
  int64_t out_rows;        // gate_up: I' (act columns); down: H (logical output rows)
  uint16_t* act;           // gate_up output [P, I']
  float* y;                // down output [P, H]
  int act_kind;            // 0 GPT-OSS clamped SwiGLU, 1 SiLU-gated
  float alpha, limit;
};

__device__ __forceinline__ float activation(const GemmParams& p, float g, float u) {
  if (p.act_kind == 1) return g / (1.0f + expf(-g)) * u;
  // The CPU reference's std::min / std::max, NaN included.
  g = (p.limit < g) ? p.limit : g;
  u = (p.limit < u) ? p.limit : u;
  u = (u < -p.limit) ? -p.limit : u;
  return g / (1.0f + expf(-p.alpha * g)) * (u + 1.0f);
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
constexpr uint32_t kOneX2 = 0x3F803F80u;  // bf16x2 (1, 1)

__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  uint32_t d;
  // fma with -0 rather than mul: available from sm_80; keeps the sign of zero products.
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(0x80008000u));
  return d;
}

__device__ __forceinline__ void mma_bf16_16816(float* c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The bits (sign, exponent, mantissa) of an E2M1 code placed at bf16's sign and lowest exponent
// and mantissa bits give code_value * 2^-126 (code 1 becomes the bf16 subnormal 2^-127, so no
// special case). Multiplying by 2^(s-1) restores the value times the group's 2^(s-127); bf16
// holds 2^(s-1) only for s <= 128, so larger scales take a second, exact multiply.
struct ScaleFactor {
  uint32_t f1, f2;
};
__device__ __forceinline__ ScaleFactor scale_factor(uint32_t s) {
  if (s == 255u) return {0x7FC07FC0u, kOneX2};  // E8M0 NaN: the group computes NaN
  if (s <= 128u) {
    const uint32_t b = (s + 126u) << 7;
    return {b | (b << 16), kOneX2};
  }
  const uint32_t b = s << 7;  // 2^(s-127)
  return {0x7E807E80u /* 2^126 */, b | (b << 16)};
}

// Word q (elements 0..7, element i in nibble i) -> out[t] = bf16x2(element 3-t, element 7-t).
__device__ __forceinline__ void dequant_word(uint32_t q, ScaleFactor f, uint32_t* out) {
#pragma unroll
  for (int t = 0; t < 4; ++t) {
    const uint32_t qt = q << (4 * t);
    uint32_t v = (qt & 0x80008000u) | ((qt & 0x70007000u) >> 6);
    v = bf16x2_mul(v, f.f1);
    if (f.f2 != kOneX2) v = bf16x2_mul(v, f.f2);
    out[t] = v;
  }
}

__device__ __forceinline__ uint32_t word_of(const uint4& v, int w) {
  return w == 0 ? v.x : w == 1 ? v.y : w == 2 ? v.z : v.w;
}

__device__ __forceinline__ uint4 load_nc(const void* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

// NT: token sub-tiles of 8 per warp (the token tile is 8*NT). KSPLIT: warps of the block that
// share one row group and split K (reduced through shared memory in warp order).
template <int NT, int KSPLIT, bool GATE_UP>
__global__ void __launch_bounds__(kWarps * 32) expert_gemm_kernel(GemmParams p) {
  if (static_cast<int32_t>(blockIdx.x) >= *p.num_tiles) return;
  const Tile tile = p.tiles[blockIdx.x];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, q = lane % 4;
  constexpr int kGroupsPerBlock = kWarps / KSPLIT;
  const int64_t rg = static_cast<int64_t>(blockIdx.y) * kGroupsPerBlock + warp / KSPLIT;
  const int kpart = warp % KSPLIT;
  // With KSPLIT > 1 the whole block shares rg, so this exit is uniform per block.
  if (rg >= p.row_groups) return;
  const int32_t e = tile.expert;

  // Rows: fragment A = 16 rows at row_a, fragment B = 16 rows at row_b (gate/up, or the two
  // halves of a 32-row group of w2).
  const int64_t row_a = GATE_UP ? rg * 16 : rg * 32;
  const int64_t row_b = row_a + p.up_offset;
  const bool b_rows_valid = row_b < p.rows_pad;
  int64_t rows[4] = {row_a + g, row_a + g + 8, row_b + g, row_b + g + 8};
  if (!b_rows_valid) rows[2] = rows[3] = rows[0];  // loaded but never stored

  // Weight runs and scale bytes: addressing.h gives the first round's offsets; both modes
  // advance by a constant per 64 K bytes (checked on the host at upload).
  const int64_t kb0 = 16 * q;
  int64_t woff[4], soff0[4], soff1[4];
  const int64_t wstep = p.wl.offset(e, rows[0], kb0 + 64) - p.wl.offset(e, rows[0], kb0);
  const int64_t sstep = p.sl.offset(e, rows[0], q + 8) - p.sl.offset(e, rows[0], q);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    woff[i] = p.wl.offset(e, rows[i], kb0);
    soff0[i] = p.sl.offset(e, rows[i], q);      // even rounds: group 8m + q
    soff1[i] = p.sl.offset(e, rows[i], q + 4);  // odd rounds: group 8m + 4 + q
  }

  // B rows of this lane's token column g in each sub-tile.
  const uint16_t* brow[NT];
  bool bvalid[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int32_t col = 8 * j + g;
    bvalid[j] = col < tile.count;
    brow[j] = p.b + (bvalid[j] ? b_row(p, tile.start + col) : 0) * p.K;
  }

  float acc[2][NT][4];
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[h][j][c] = 0.0f;

  const int64_t rounds = (p.K + 127) / 128;
  const int64_t per_part = (rounds + KSPLIT - 1) / KSPLIT;
  const int64_t r_begin = kpart * per_part;
  const int64_t r_end = r_begin + per_part < rounds ? r_begin + per_part : rounds;

  uint4 wcur[4], wnext[4];
  uint32_t scur[4], snext[4];
  auto load_round = [&](int64_t r, uint4* wv, uint32_t* sv) {
    const bool kvalid = r * 128 + 32 * q < p.K;  // K % 128 == 64 leaves half a round
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (kvalid) {
        wv[i] = load_nc(p.w + woff[i] + r * wstep);
        sv[i] = p.scale[((r & 1) ? soff1[i] : soff0[i]) + (r >> 1) * sstep];
      } else {
        wv[i] = make_uint4(0, 0, 0, 0);
        sv[i] = 127;
      }
    }
  };
  if (r_begin < r_end) load_round(r_begin, wcur, scur);
  for (int64_t r = r_begin; r < r_end; ++r) {
    if (r + 1 < r_end) load_round(r + 1, wnext, snext);
    const bool kvalid = r * 128 + 32 * q < p.K;
    ScaleFactor f[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) f[i] = scale_factor(scur[i]);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      uint4 bv[NT];
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        bv[j] = (bvalid[j] && kvalid) ? load_nc(brow[j] + r * 128 + 32 * q + 8 * w) : make_uint4(0, 0, 0, 0);
      }
      uint32_t d[4][4];
#pragma unroll
      for (int i = 0; i < 4; ++i) dequant_word(word_of(wcur[i], w), f[i], d[i]);
#pragma unroll
      for (int u = 0; u < 2; ++u) {
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          if (8 * j >= tile.count) continue;  // uniform: an empty sub-tile
          const uint32_t b0 = word_of(bv[j], 2 * u), b1 = word_of(bv[j], 2 * u + 1);
          mma_bf16_16816(acc[0][j], d[0][2 * u], d[1][2 * u], d[0][2 * u + 1], d[1][2 * u + 1], b0, b1);
          if (b_rows_valid || GATE_UP) {
            mma_bf16_16816(acc[1][j], d[2][2 * u], d[3][2 * u], d[2][2 * u + 1], d[3][2 * u + 1], b0, b1);
          }
        }
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      wcur[i] = wnext[i];
      scur[i] = snext[i];
    }
  }

  if constexpr (KSPLIT > 1) {
    // Partial sums of warps 1..KSPLIT-1 through shared memory, added by warp 0 in warp order.
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
    for (int s = 0; s < KSPLIT - 1; ++s)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
          for (int c = 0; c < 4; ++c) acc[h][j][c] += red[s][(h * NT + j) * 4 + c][lane];
  }

  // Epilogue. Accumulator c of sub-tile j: row (c < 2 ? g : g + 8), token column 8j + 2q + (c & 1).
  const float* bias = p.bias + static_cast<int64_t>(e) * p.rows_pad;
#pragma unroll
  for (int j = 0; j < NT; ++j) {
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int32_t col = 8 * j + 2 * q + (c & 1);
      if (col >= tile.count) continue;
      const int64_t slot = tile.start + col;
      const int64_t rr = (c < 2) ? g : g + 8;
      if constexpr (GATE_UP) {
        const int64_t unit = row_a + rr;
        const float gate = acc[0][j][c] + bias[unit];
        const float up = acc[1][j][c] + bias[row_b + rr];
        p.act[slot * p.out_rows + permuted_index(unit)] = float_to_bf16(activation(p, gate, up));
      } else {
        const int64_t ra = row_a + rr, rb = row_b + rr;
        if (ra < p.out_rows) p.y[slot * p.out_rows + ra] = acc[0][j][c] + bias[ra];
        if (b_rows_valid && rb < p.out_rows) p.y[slot * p.out_rows + rb] = acc[1][j][c] + bias[rb];
      }
    }
  }
}

template <int NT, int KSPLIT, bool GATE_UP>
void launch_fast(const GemmParams& p, int64_t max_tiles, gpuStream_t stream) {
  const int64_t groups_per_block = kWarps / KSPLIT;
  const dim3 grid(static_cast<unsigned>(max_tiles),
                  static_cast<unsigned>((p.row_groups + groups_per_block - 1) / groups_per_block));
  expert_gemm_kernel<NT, KSPLIT, GATE_UP><<<grid, kWarps * 32, 0, stream>>>(p);
}

template <bool GATE_UP>
void dispatch_fast(const GemmParams& p, const ExpertGemmArgs& a, gpuStream_t stream) {
  const int nt = a.token_tile / 8;
  if (a.k_split == 4) {
    if (nt == 1) return launch_fast<1, 4, GATE_UP>(p, a.max_tiles, stream);
    if (nt == 2) return launch_fast<2, 4, GATE_UP>(p, a.max_tiles, stream);
    throw_bad_input("fused_moe: k_split 4 supports token tiles of 8 and 16, not " + std::to_string(a.token_tile));
  }
  switch (nt) {
    case 1: return launch_fast<1, 1, GATE_UP>(p, a.max_tiles, stream);
    case 2: return launch_fast<2, 1, GATE_UP>(p, a.max_tiles, stream);
    case 4: return launch_fast<4, 1, GATE_UP>(p, a.max_tiles, stream);
    case 8: return launch_fast<8, 1, GATE_UP>(p, a.max_tiles, stream);
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
  p.act_kind = a.act.kind == reference::Activation::SiluGated ? 1 : 0;
  p.alpha = static_cast<float>(a.act.alpha);
  p.limit = static_cast<float>(a.act.limit);
  return p;
}

}  // namespace

void launch_gate_up(const ExpertGemmArgs& a, const uint16_t* x_perm, uint16_t* act, void* stream) {
  const reference::KernelReadyLayer& L = *a.layer;
  GemmParams p = common_params(a);
  p.w = L.w13_weight;
  p.scale = L.w13_scale;
  p.bias = L.w13_bias;
  p.wl = WeightTileLayout{L.mode, true, 2 * L.intermediate_pad, L.hidden_pad / 2};
  p.sl = ScaleLayout{L.mode, true, 2 * L.intermediate_pad, L.w13_scale_cols};
  p.K = L.hidden_pad;
  p.b = x_perm;
  p.gather = true;
  p.rows_pad = 2 * L.intermediate_pad;
  p.up_offset = L.intermediate_pad;
  p.out_rows = L.intermediate_pad;
  p.row_groups = L.intermediate_pad / 16;
  p.act = act;
  const gpuStream_t s = static_cast<gpuStream_t>(stream);
#if !defined(__HIPCC__)
  if (!a.simple) {
    dispatch_fast<true>(p, a, s);
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
  const gpuStream_t s = static_cast<gpuStream_t>(stream);
#if !defined(__HIPCC__)
  if (!a.simple) {
    dispatch_fast<false>(p, a, s);
    check_launch("down GEMM kernel");
    return;
  }
#endif
  const dim3 grid(static_cast<unsigned>(a.max_tiles), static_cast<unsigned>((p.out_rows + 127) / 128));
  down_simple_kernel<<<grid, 128, 0, s>>>(p);
  check_launch("down simple kernel");
}

}  // namespace moeprep::gpu::detail
