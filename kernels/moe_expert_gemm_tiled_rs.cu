// Expert GEMMs for token tiles of 64 with wgmma reading the weights from registers
// (FusedMoeOptions::staged 5; sm_90a): the tiled GEMM of moe_expert_gemm_tiled.cu without its
// round trip of the dequantized A through shared memory, which capped it at about half of
// wgmma's rate (bench/NOTES-fused-moe.md, v10-big and v11-big).
//
// A block computes ROWS = 128 (or 256) weight rows x 64 tokens with 2 * ROWS threads, one
// warpgroup per 64 rows. Per 64-K chunk, thread t copies one 16-byte MXFP4 run (row t/2, run
// t%2 = one E8M0 group) and the aligned word holding its scale by cp.async into a ring of 4
// stages, and 16-byte pieces of B (64 tokens x 64 K, x_perm / act order, 128-byte swizzle); B is
// read by wgmma through a descriptor as in the tiled kernel. A is dequantized straight into
// wgmma's register fragment: lane (g, q) of warp w holds rows 16w + g and 16w + g + 8 and, per
// k16 step, K-permuted positions 2q, 2q + 1 (a0, a1) and 8 + 2q, 9 + 2q (a2, a3), which are
// pair q of words 2ks and 2ks + 1 of the row's chunk (the same matrix the tiled kernel stores).
// The lanes read the runs their warp copied (4-way broadcast) and take the scale factor from the
// copying lane by shuffle, so every element is still dequantized once per token tile and the
// scale once per (row, group). Two register sets: the dequantization of chunk c + 1 overlaps
// chunk c's wgmma. The chunk loop is unrolled by the ring depth, so ring slot, register set,
// table column, scale group and the scale byte's position are compile-time per step.
//
// gate_up: every 16-row group holds the gate rows of 8 units, then their up rows (as in the
// tiled kernel), so the activation is computed from the accumulators. Every stored value is a
// fixed-order sum: results are bitwise repeatable.
#include "kernels/portability.h"  // first: defines what MOEPREP_HD needs under HIP
#include <string>
#include <type_traits>

#include "core/error.h"
#include "formats/bf16.h"
#include "kernels/moe_device_math.h"
#include "kernels/moe_internal.h"
#include "kernels/moe_tiled_common.h"

#if !defined(__HIPCC__)

namespace moeprep::gpu::detail::tiled {
namespace {

// Shared memory, in 16-byte units: B [stage][64 tokens][8 chunks], raw MXFP4 runs
// [stage][run half][row], scale words [stage][run half][row] (4 bytes each). Runs are stored
// half-major so that a warp's 8 broadcast reads of one half hit 8 consecutive 16-byte units.
template <int ROWS>
struct RsShape {
  static constexpr int kThreads = 2 * ROWS;
  static constexpr int kBUnits = kStages * kTokens * 8;
  static constexpr int kRawUnits = kStages * kThreads;
  static constexpr size_t kSmemBytes = (kBUnits + kRawUnits) * 16 + kStages * kThreads * 4 + 1024;
  // 128 rows: 2 blocks per SM (registers: two 16-register A sets + 32 accumulators per lane).
  static constexpr int kMinBlocks = ROWS == 128 ? 2 : 1;
  static constexpr int kBCopies = kTokens * 8 / kThreads;  // 16-byte B copies per thread and chunk
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// D[64 rows x 64 tokens] += A[64 x 16] (registers) . B[64 x 16]^T (K-major, shared memory).
__device__ __forceinline__ void wgmma_rs_m64n64k16(float (&d)[32], uint32_t a0, uint32_t a1, uint32_t a2,
                                                   uint32_t a3, uint64_t db) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, 1, 1, 1, 0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(db));
}
// The A registers, like the accumulators, must not be moved across the wgmma that reads them.
__device__ __forceinline__ void fence_a(uint32_t (&a)[16]) {
#pragma unroll
  for (int i = 0; i < 16; ++i) asm volatile("" : "+r"(a[i])::"memory");
}
#else
__device__ __forceinline__ void wgmma_rs_m64n64k16(float (&)[32], uint32_t, uint32_t, uint32_t, uint32_t, uint64_t) {
  __trap();
}
__device__ __forceinline__ void fence_a(uint32_t (&)[16]) {}
#endif

template <bool TWO_MUL>
__device__ __forceinline__ uint32_t scaled(uint32_t v, uint32_t f1, uint32_t f2) {
  return TWO_MUL ? bf16x2_mul(bf16x2_mul(v, f1), f2) : bf16x2_mul(v, f1);
}

__device__ __forceinline__ uint32_t word_at(const uint4& v, int w) {
  return w == 0 ? v.x : w == 1 ? v.y : w == 2 ? v.z : v.w;
}

template <bool GATE_UP, bool TWO_MUL, int ROWS>
__global__ void __launch_bounds__(2 * ROWS, RsShape<ROWS>::kMinBlocks) expert_gemm_tiled_rs_kernel(TiledParams p) {
  using Shape = RsShape<ROWS>;
  constexpr int kRows = ROWS, kThreads = Shape::kThreads;
  extern __shared__ uint4 smem_raw[];
  uint4* smem = align_smem_1024(smem_raw);
  uint4* b_tiles = smem;
  uint4* raw = b_tiles + Shape::kBUnits;
  uint32_t* scale_words = reinterpret_cast<uint32_t*>(raw + Shape::kRawUnits);

  Tile tile;
  int32_t row_block;
  if (!locate_block(p, tile, row_block)) return;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  // ---- this thread's copies: weight run of A row ar = tid/2, half s = tid%2 of each chunk ----
  const int ar = tid >> 1, s = tid & 1;
  bool row_ok;
  const int32_t n = tiled_weight_row<GATE_UP, ROWS>(p, row_block, ar, row_ok);
  // Chunk c covers K bytes [32c + 16s, +16) of the row: run q = 2(c & 1) + s of the row table's
  // 64-byte K step c/2, scale group 2(c % 4) + s of its 8-group step c/4.
  const int32_t* trow = p.rows.table + static_cast<int64_t>(n) * 12;
  const uint8_t* wexp = p.w + tile.expert * p.rows.weight_expert_stride;
  const uint8_t* sexp = p.scale + tile.expert * p.rows.scale_expert_stride;
  const uint8_t* wsrc[2] = {wexp + __ldg(trow + s), wexp + __ldg(trow + 2 + s)};
  // The aligned word holding the scale byte (scale_k_step is a multiple of 4, so the byte's
  // position in the word depends on c % 4 only) and the byte_perm selector that extracts it.
  const uint8_t* ssrc[4];
  uint32_t ssel[4];
#pragma unroll
  for (int ph = 0; ph < 4; ++ph) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(sexp + __ldg(trow + 4 + 2 * ph + s));
    ssrc[ph] = reinterpret_cast<const uint8_t*>(a & ~uintptr_t{3});
    ssel[ph] = 0x4440u | static_cast<uint32_t>(a & 3u);
  }
  const int32_t wstep = p.rows.weight_k_step, sstep = p.rows.scale_k_step;
  const int own = s * kRows + ar;  // this thread's slot in a ring stage of runs / scale words

  // ---- B copies: 16-byte chunk bc of token rows tid/8 + (threads/8) i ----
  const int bc = tid & 7;
  uint32_t bsrc[Shape::kBCopies];
  int bdst[Shape::kBCopies];
  bool bok[Shape::kBCopies];
#pragma unroll
  for (int i = 0; i < Shape::kBCopies; ++i) {
    const int row = (tid >> 3) + (kThreads / 8) * i;
    bsrc[i] = b_copy_source(p, tile, row, bc, bok[i]);
    bdst[i] = swz(row, bc);
  }

  const int chunks = p.K / kChunk;
  // PH = c % 4 (the ring slot), known at compile time at every call.
  auto issue = [&](int c, auto ph_tag) {
    constexpr int PH = decltype(ph_tag)::value;
    cp_async16(raw + PH * kThreads + own, wsrc[PH & 1] + (c >> 1) * wstep, row_ok);
    cp_async4(scale_words + PH * kThreads + own, ssrc[PH] + (c >> 2) * sstep, row_ok);  // rows past: code 0
#pragma unroll
    for (int i = 0; i < Shape::kBCopies; ++i) {
      cp_async16(b_tiles + PH * kTokens * 8 + bdst[i], p.b + bsrc[i] + c * kChunk, bok[i]);
    }
  };

  // ---- the lane's fragment rows: r0 = 16 warp + g and r0 + 8; K pair q ----
  const int g = lane >> 2, q = lane & 3;
  const int r0 = 16 * warp + g;
  const uint32_t shift4q = 4u * static_cast<uint32_t>(q);
  auto dequant = [&](auto ph_tag, uint32_t(&a)[16]) {
    constexpr int PH = decltype(ph_tag)::value;
    const uint4* st = raw + PH * kThreads;
    const uint4 v00 = st[r0], v01 = st[kRows + r0], v10 = st[r0 + 8], v11 = st[kRows + r0 + 8];
    // This thread's own scale (its copy has landed: waited before the barrier), then the four
    // the lane needs from the lanes that copied them: (row rr, half h) is lane 2 rr + h.
    const uint32_t code = __byte_perm(scale_words[PH * kThreads + own], 0u, ssel[PH]);
    uint32_t f1;
    [[maybe_unused]] uint32_t f2 = kOneX2;  // the second multiply (TWO_MUL)
    if constexpr (TWO_MUL) {
      const ScaleFactor f = scale_factor(code);
      f1 = f.f1;
      f2 = f.f2;
    } else {
      f1 = code * 0x00800080u + 0x3F003F00u;  // bf16x2 2^(code-1), code <= 128 (see scale_factor)
    }
    const uint32_t f00 = __shfl_sync(0xffffffffu, f1, 2 * g), f01 = __shfl_sync(0xffffffffu, f1, 2 * g + 1);
    const uint32_t f10 = __shfl_sync(0xffffffffu, f1, 2 * g + 16), f11 = __shfl_sync(0xffffffffu, f1, 2 * g + 17);
    uint32_t e00 = kOneX2, e01 = kOneX2, e10 = kOneX2, e11 = kOneX2;
    if constexpr (TWO_MUL) {
      e00 = __shfl_sync(0xffffffffu, f2, 2 * g);
      e01 = __shfl_sync(0xffffffffu, f2, 2 * g + 1);
      e10 = __shfl_sync(0xffffffffu, f2, 2 * g + 16);
      e11 = __shfl_sync(0xffffffffu, f2, 2 * g + 17);
    }
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      const uint4& va = ks < 2 ? v00 : v01;  // row r0, half ks/2
      const uint4& vb = ks < 2 ? v10 : v11;  // row r0 + 8
      const uint32_t fa = ks < 2 ? f00 : f01, fb = ks < 2 ? f10 : f11;
      const uint32_t ea = ks < 2 ? e00 : e01, eb = ks < 2 ? e10 : e11;
      const int w = 2 * (ks & 1);
      a[4 * ks + 0] = scaled<TWO_MUL>(e2m1_bits::pair_at_shift(word_at(va, w), shift4q), fa, ea);
      a[4 * ks + 1] = scaled<TWO_MUL>(e2m1_bits::pair_at_shift(word_at(vb, w), shift4q), fb, eb);
      a[4 * ks + 2] = scaled<TWO_MUL>(e2m1_bits::pair_at_shift(word_at(va, w + 1), shift4q), fa, ea);
      a[4 * ks + 3] = scaled<TWO_MUL>(e2m1_bits::pair_at_shift(word_at(vb, w + 1), shift4q), fb, eb);
    }
  };

  const uint64_t db0 = sw128_desc(smem_addr(b_tiles));
  float acc[32];  // d[4j + c]: row r0 (+8 for c >= 2), token 8j + 2q + (c & 1)
#pragma unroll
  for (int i = 0; i < 32; ++i) acc[i] = 0.0f;
  auto mma = [&](auto ph_tag, uint32_t(&a)[16]) {
    constexpr int PH = decltype(ph_tag)::value;
    const uint64_t db = db0 + PH * (kTokens * 128 / 16);
    fence_operands(acc);
    fence_a(a);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) wgmma_rs_m64n64k16(acc, a[4 * ks], a[4 * ks + 1], a[4 * ks + 2], a[4 * ks + 3], db + 2 * ks);
    wgmma_commit();
    fence_operands(acc);
    fence_a(a);
  };

  using P0 = std::integral_constant<int, 0>;
  using P1 = std::integral_constant<int, 1>;
  using P2 = std::integral_constant<int, 2>;
  using P3 = std::integral_constant<int, 3>;
  uint32_t a_even[16], a_odd[16];  // the fragments of even and odd chunks

  // One chunk: the barrier, the copies of chunk c + 3, chunk c's wgmma (registers of set
  // PH & 1), chunk c + 1's dequantization into the other set while it runs, the wait.
  auto step = [&](int c, auto ph_tag) {
    constexpr int PH = decltype(ph_tag)::value;
    cp_async_wait<kStages - 3>();  // this thread's copies of chunk c + 1
    // wgmma reads shared memory through the async proxy: order the landed copies before it.
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    // Chunk c + 1's runs and chunk c's B complete for everyone; everyone is done with chunk
    // c - 1, whose ring slot is refilled below.
    __syncthreads();
    if (c + kStages - 1 < chunks) issue(c + kStages - 1, std::integral_constant<int, (PH + 3) % 4>{});
    cp_async_commit();  // empty groups keep the wait counts uniform
    if constexpr ((PH & 1) == 0) {
      mma(ph_tag, a_even);
      if (c + 1 < chunks) dequant(std::integral_constant<int, (PH + 1) % 4>{}, a_odd);
    } else {
      mma(ph_tag, a_odd);
      if (c + 1 < chunks) dequant(std::integral_constant<int, (PH + 1) % 4>{}, a_even);
    }
    wgmma_wait_all();
    fence_operands(acc);
  };

  issue(0, P0{});
  cp_async_commit();
  if (1 < chunks) issue(1, P1{});
  cp_async_commit();
  if (2 < chunks) issue(2, P2{});
  cp_async_commit();
  cp_async_wait<kStages - 2>();  // this thread's copies of chunk 0
  __syncthreads();               // and everyone's: the lanes read their warp's runs
  dequant(P0{}, a_even);
  for (int c = 0; c < chunks; c += 4) {
    step(c, P0{});
    if (c + 1 < chunks) step(c + 1, P1{});
    if (c + 2 < chunks) step(c + 2, P2{});
    if (c + 3 < chunks) step(c + 3, P3{});
  }
  cp_async_wait<0>();

  // ---- epilogue: row group `warp` (16 A rows), its row g or g + 8, token column col ----
  const float* bias = p.bias + static_cast<int64_t>(tile.expert) * p.rows_pad;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    const float* d = acc + 4 * nt;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int col = 8 * nt + 2 * q + (c & 1);
      if (col >= tile.count) continue;
      const int64_t slot = tile.start + col;
      if constexpr (GATE_UP) {
        if (c >= 2) continue;  // d[c + 2] is the up row of d[c]'s unit
        const int32_t unit = row_block * (kRows / 2) + 8 * warp + g;
        if (unit >= p.out_rows) continue;
        const float gate = d[c] + bias[unit];
        const float up = d[c + 2] + bias[p.up_offset + unit];
        p.act[slot * p.out_rows + permuted_index(unit)] =
            float_to_bf16(gated_activation(p.act_kind, p.alpha, p.limit, gate, up));
      } else {
        const int32_t r = row_block * kRows + 16 * warp + ((c < 2) ? g : g + 8);
        if (r < p.out_rows) p.y[slot * p.out_rows + r] = d[c] + bias[r];
      }
    }
  }
}

}  // namespace

template <bool GATE_UP, bool TWO_MUL, int ROWS>
void launch_tiled_rs(TiledParams p, int64_t max_tiles, gpuStream_t stream) {
  constexpr size_t kSmemBytes = RsShape<ROWS>::kSmemBytes;
  // gate_up: ROWS / 2 units (gate and up rows) per block; down: ROWS rows, those past H unstored.
  const int32_t per_block = GATE_UP ? ROWS / 2 : ROWS;
  p.row_blocks = (p.out_rows + per_block - 1) / per_block;
  static bool configured = false;  // before any graph capture: the first call is eager
  if (!configured) {
    const cudaError_t err = cudaFuncSetAttribute(expert_gemm_tiled_rs_kernel<GATE_UP, TWO_MUL, ROWS>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(kSmemBytes));
    if (err != cudaSuccess) {
      throw_internal(std::string("fused_moe: tiled register-A GEMM shared memory attribute: ") +
                     cudaGetErrorString(err));
    }
    configured = true;
  }
  expert_gemm_tiled_rs_kernel<GATE_UP, TWO_MUL, ROWS>
      <<<static_cast<unsigned>(max_tiles * p.row_blocks), RsShape<ROWS>::kThreads, kSmemBytes, stream>>>(p);
}

template void launch_tiled_rs<true, true, 128>(TiledParams, int64_t, gpuStream_t);
template void launch_tiled_rs<true, false, 128>(TiledParams, int64_t, gpuStream_t);
template void launch_tiled_rs<false, true, 128>(TiledParams, int64_t, gpuStream_t);
template void launch_tiled_rs<false, false, 128>(TiledParams, int64_t, gpuStream_t);
template void launch_tiled_rs<true, true, 256>(TiledParams, int64_t, gpuStream_t);
template void launch_tiled_rs<true, false, 256>(TiledParams, int64_t, gpuStream_t);
template void launch_tiled_rs<false, true, 256>(TiledParams, int64_t, gpuStream_t);
template void launch_tiled_rs<false, false, 256>(TiledParams, int64_t, gpuStream_t);

}  // namespace moeprep::gpu::detail::tiled

#endif  // !__HIPCC__
