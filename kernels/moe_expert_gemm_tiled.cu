// Expert GEMMs for token tiles of 64 (CUDA; FusedMoeOptions::staged 3 = wgmma on sm_90a, else
// mma.sync; 4 = mma.sync; 5 = moe_expert_gemm_tiled_rs.cu on sm_90a, these kernels elsewhere):
// a block computes ROWS = 128 (or 256) weight rows x 64 tokens with 2 * ROWS threads. Staged 3
// and 4 run no faster than the pipelined kernel of moe_expert_gemm.cu at T = 4096 on the H100
// (bench/NOTES-fused-moe.md, v10-big, which also says why); staged 5, which keeps A out of
// shared memory, is the automatic choice for tiles of 64 on Hopper (v11-big).
//
// Per 64-K chunk, thread t copies one 16-byte MXFP4 run (row t/2, run t%2 = one E8M0 group) and
// the aligned word holding its scale by cp.async, a few chunks ahead, and writes the 32 bf16
// values into a swizzled [ROWS][64] A tile in the K-permuted order that x_perm and act already
// use (moe_internal.h), so every weight element is dequantized once per token tile. B (64 tokens
// x 64 K) arrives by cp.async into the same swizzle. A is double-buffered, so the dequantization
// of chunk c+1 overlaps the MMAs of chunk c with one barrier per chunk; each thread dequantizes
// only the run it copied itself, so it waits on its own cp.async groups.
//
// MMAs: mma.sync m16n8k16 (bf16, fp32 accumulation) with ldmatrix.x4, warps as (ROWS/32) rows x
// 2 tokens, warp tiles of 32 x 32; or on sm_90a wgmma m64n64k16, one warpgroup per 64 rows, both
// operands read through descriptors from the same tiles (the XOR swizzle is wgmma's 128-byte
// swizzle).
//
// gate_up: every 16-row group of the A tile holds the gate rows of 8 units, then their up rows,
// so each thread's accumulators for rows g and g + 8 (both MMA kinds) are one unit's gate and
// up, and the activation is computed from registers. Rows past the tensor (gate_up units >= I',
// down rows >= H') are loaded as zeros and never stored; like the other kernels, every stored
// value is a fixed-order sum, so results are bitwise repeatable.
#include "kernels/portability.h"  // first: defines what MOEPREP_HD needs under HIP
#include <string>

#include "core/error.h"
#include "formats/bf16.h"
#include "kernels/moe_device_math.h"
#include "kernels/moe_internal.h"
#include "kernels/moe_tiled_common.h"

#if !defined(__HIPCC__)

namespace moeprep::gpu::detail {
namespace {

using namespace tiled;

constexpr int kAutoTiledRows = 128;  // rows per block when ExpertGemmArgs::tiled_rows is 0 (256: slower)

// ROWS weight rows per block (128 or 256), two threads per row. Shared memory, in 16-byte units:
// A [2][ROWS][8 chunks], B [stage][64 tokens][8 chunks], raw MXFP4 runs [stage][thread], scale
// words [stage][thread] (4 bytes each).
template <int ROWS>
struct TiledShape {
  static constexpr int kThreads = 2 * ROWS;
  static constexpr int kAUnits = 2 * ROWS * 8;
  static constexpr int kBUnits = kStages * kTokens * 8;
  static constexpr int kRawUnits = kStages * kThreads;
  static constexpr size_t kSmemBytes = (kAUnits + kBUnits + kRawUnits) * 16 + kStages * kThreads * 4 + 1024;
  // 128 rows: 2 blocks per SM (86 KB each); 256: 1 block of 16 warps (138 KB).
  static constexpr int kMinBlocks = ROWS == 128 ? 2 : 1;
  static constexpr int kBCopies = kTokens * 8 / kThreads;  // 16-byte B copies per thread and chunk
};

__device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ uint32_t word_of(const uint4& v, int w) {
  return w == 0 ? v.x : w == 1 ? v.y : w == 2 ? v.z : v.w;
}

// ---- wgmma (sm_90a only) ----
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// D[64 rows x 64 tokens] += A[64 x 16] . B[64 x 16]^T, both K-major in shared memory.
__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[32], uint64_t da, uint64_t db) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, 1, 1, 1, 0, 0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db));
}
#else
__device__ __forceinline__ void wgmma_m64n64k16(float (&)[32], uint64_t, uint64_t) { __trap(); }
#endif

// WGMMA: the MMAs as wgmma (sm_90a; elsewhere the kernel traps), else mma.sync.
template <bool GATE_UP, bool TWO_MUL, bool WGMMA, int ROWS>
__global__ void __launch_bounds__(2 * ROWS, TiledShape<ROWS>::kMinBlocks) expert_gemm_tiled_kernel(TiledParams p) {
  using Shape = TiledShape<ROWS>;
  constexpr int kRows = ROWS, kThreads = Shape::kThreads;
  extern __shared__ uint4 smem_raw[];
  uint4* smem = align_smem_1024(smem_raw);
  uint4* a_tiles = smem;
  uint4* b_tiles = a_tiles + Shape::kAUnits;
  uint4* raw = b_tiles + Shape::kBUnits;
  uint32_t* scale_words = reinterpret_cast<uint32_t*>(raw + Shape::kRawUnits);

  Tile tile;
  int32_t row_block;
  if (!locate_block(p, tile, row_block)) return;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  // ---- this thread's weight run: A row ar = tid/2, run half s = tid%2 of each 64-K chunk ----
  const int ar = tid >> 1, s = tid & 1;
  bool row_ok;
  const int32_t n = tiled_weight_row<GATE_UP, ROWS>(p, row_block, ar, row_ok);
  // Chunk c covers runs 2c + s, i.e. K bytes [32c + 16s, +16): run q = 2(c & 1) + s of round
  // c/2 (the row table's 64-byte K steps), scale group 2c + s (table columns f = (c/2) & 1).
  const int32_t* trow = p.rows.table + static_cast<int64_t>(n) * 12;
  // (Selected by ternaries, not array indexing: a run-time index would put them in local memory.)
  const int32_t woff0 = __ldg(trow + s), woff1 = __ldg(trow + 2 + s);
  const int32_t soff00 = __ldg(trow + 4 + s), soff01 = __ldg(trow + 6 + s);
  const int32_t soff10 = __ldg(trow + 8 + s), soff11 = __ldg(trow + 10 + s);
  const uint8_t* wexp = p.w + tile.expert * p.rows.weight_expert_stride;
  const uint8_t* sexp = p.scale + tile.expert * p.rows.scale_expert_stride;
  const int32_t wstep = p.rows.weight_k_step, sstep = p.rows.scale_k_step;
  auto weight_src = [&](int c) { return wexp + (((c & 1) ? woff1 : woff0) + (c >> 1) * wstep); };
  auto scale_src = [&](int c) {
    const int32_t o = ((c >> 1) & 1) ? ((c & 1) ? soff11 : soff10) : ((c & 1) ? soff01 : soff00);
    return sexp + (o + (c >> 2) * sstep);
  };

  // ---- this thread's B copies: 16-byte chunk bc of token rows tid/8 + (threads/8) i ----
  const int bc = tid & 7;
  uint32_t bsrc[Shape::kBCopies];
  bool bok[Shape::kBCopies];
#pragma unroll
  for (int i = 0; i < Shape::kBCopies; ++i) {
    const int row = (tid >> 3) + (kThreads / 8) * i;
    bsrc[i] = b_copy_source(p, tile, row, bc, bok[i]);
  }

  const int chunks = p.K / kChunk;
  auto issue = [&](int c) {
    const int st = c % kStages;
    cp_async16(raw + st * kThreads + tid, row_ok ? weight_src(c) : p.w, row_ok);
    // The aligned word holding the scale byte (inside the tensor: cudaMalloc bases are aligned).
    const uintptr_t sa = reinterpret_cast<uintptr_t>(row_ok ? scale_src(c) : p.scale);
    cp_async4(scale_words + st * kThreads + tid, reinterpret_cast<const void*>(sa & ~uintptr_t{3}));
#pragma unroll
    for (int i = 0; i < Shape::kBCopies; ++i) {
      const int row = (tid >> 3) + (kThreads / 8) * i;
      cp_async16(b_tiles + st * kTokens * 8 + swz(row, bc), bok[i] ? p.b + bsrc[i] + c * kChunk : p.b, bok[i]);
    }
  };
  auto dequant = [&](int c) {
    const int st = c % kStages;
    const uint4 v = raw[st * kThreads + tid];
    const uint32_t word = scale_words[st * kThreads + tid];
    const uint32_t shift = 8u * static_cast<uint32_t>(reinterpret_cast<uintptr_t>(scale_src(c)) & 3u);
    // Rows past the tensor: zero codes, scale 2^0.
    const ScaleFactor f = scale_factor(row_ok ? (word >> shift) & 0xFFu : 127u);
    uint4* arow = a_tiles + (c & 1) * kRows * 8;
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      uint32_t d[4];
      dequant_word<TWO_MUL>(word_of(v, w), f, d);
      arow[swz(ar, 4 * s + w)] = make_uint4(d[0], d[1], d[2], d[3]);
    }
  };

  // ---- mma.sync: warp (wm, wn) = rows 32 wm.. (row groups 2 wm, 2 wm + 1), tokens 32 wn..
  // ldmatrix addresses (bytes): A rows 32 wm + 16 mt + lane%16, chunk 2ks + lane/16; B tokens
  // 32 wn + 16 np + lane%8 + 8 (lane/16), chunk 2ks + (lane/8)%2. Rows are multiples of 8 plus
  // lane%8, so the swizzled chunk is (2ks) ^ x with x fixed per lane.
  // ---- wgmma: warpgroup wg = rows 64 wg.., all 64 tokens; warp w of it holds row group 4 wg + w,
  // which is `warp`. Accumulator d[4j + c] is row g (+8 for c >= 2), token 8j + 2q + (c & 1).
  const int wm = warp % (kRows / 32), wn = warp / (kRows / 32);
  const uint32_t a_base = smem_addr(a_tiles) + (wm * 32 + (lane & 15)) * 128;
  const uint32_t a_x = static_cast<uint32_t>((lane >> 4) ^ (lane & 7));
  const uint32_t b_base = smem_addr(b_tiles) + (wn * 32 + (lane & 7) + ((lane >> 4) << 3)) * 128;
  const uint32_t b_x = static_cast<uint32_t>(((lane >> 3) & 1) ^ (lane & 7));

  float acc[32];  // mma.sync: acc[16 mt + 4 nt + c]; wgmma: d[4j + c]
#pragma unroll
  for (int i = 0; i < 32; ++i) acc[i] = 0.0f;

  auto mma_chunk = [&](int c) {
    if constexpr (WGMMA) {
      const uint32_t a_tile = smem_addr(a_tiles) + (c & 1) * (kRows * 128) + (warp >> 2) * (64 * 128);
      const uint32_t b_tile = smem_addr(b_tiles) + (c % kStages) * (kTokens * 128);
      const uint64_t da = sw128_desc(a_tile), db = sw128_desc(b_tile);
      fence_operands(acc);
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) wgmma_m64n64k16(acc, da + 2 * ks, db + 2 * ks);
      wgmma_commit();
      fence_operands(acc);
    } else {
      const uint32_t a_buf = a_base + (c & 1) * (kRows * 128);
      const uint32_t b_buf = b_base + (c % kStages) * (kTokens * 128);
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        uint32_t a[2][4], b[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) ldmatrix_x4(a_buf + mt * 16 * 128 + (((2 * ks) ^ a_x) << 4), a[mt]);
#pragma unroll
        for (int np = 0; np < 2; ++np) ldmatrix_x4(b_buf + np * 16 * 128 + (((2 * ks) ^ b_x) << 4), b[np]);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int nt = 0; nt < 4; ++nt)
            mma_bf16_16816(acc + 16 * mt + 4 * nt, a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[nt >> 1][2 * (nt & 1)],
                           b[nt >> 1][2 * (nt & 1) + 1]);
      }
    }
  };

  // ---- pipeline: chunks 0..kStages-2 in flight, then one barrier per chunk ----
#pragma unroll
  for (int c = 0; c < kStages - 1; ++c) {
    if (c < chunks) issue(c);
    cp_async_commit();  // empty groups keep the wait counts uniform
  }
  cp_async_wait<kStages - 2>();  // this thread's copies of chunk 0
  dequant(0);
  for (int c = 0; c < chunks; ++c) {
    cp_async_wait<kStages - 3>();  // this thread's copies of chunk c + 1
    // wgmma reads shared memory through the async proxy: order this thread's stores (dequant)
    // and landed copies before it.
    if constexpr (WGMMA) asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    // A[c & 1] and B of chunk c complete for everyone; everyone is done with chunk c - 1, whose
    // A buffer and ring slot are refilled below.
    __syncthreads();
    if (c + kStages - 1 < chunks) issue(c + kStages - 1);
    cp_async_commit();
    mma_chunk(c);  // wgmma: runs on while this thread dequantizes the next chunk
    if (c + 1 < chunks) dequant(c + 1);
    if constexpr (WGMMA) {
      wgmma_wait_all();
      fence_operands(acc);
    }
  }
  cp_async_wait<0>();

  // ---- epilogue: row group G (16 A rows), its row rr = g or g + 8, token column col ----
  const int g = lane >> 2, q = lane & 3;
  const float* bias = p.bias + static_cast<int64_t>(tile.expert) * p.rows_pad;
  constexpr int kGroups = WGMMA ? 1 : 2;   // row groups per warp
  constexpr int kColumns = WGMMA ? 8 : 4;  // 8-token blocks per warp
#pragma unroll
  for (int mt = 0; mt < kGroups; ++mt) {
    const int G = WGMMA ? warp : 2 * wm + mt;
#pragma unroll
    for (int nt = 0; nt < kColumns; ++nt) {
      const float* d = acc + 16 * mt + 4 * nt;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int col = (WGMMA ? 0 : wn * 32) + 8 * nt + 2 * q + (c & 1);
        if (col >= tile.count) continue;
        const int64_t slot = tile.start + col;
        if constexpr (GATE_UP) {
          if (c >= 2) continue;  // d[c + 2] is the up row of d[c]'s unit
          const int32_t unit = row_block * (kRows / 2) + 8 * G + g;
          if (unit >= p.out_rows) continue;
          const float gate = d[c] + bias[unit];
          const float up = d[c + 2] + bias[p.up_offset + unit];
          p.act[slot * p.out_rows + permuted_index(unit)] =
              float_to_bf16(gated_activation(p.act_kind, p.alpha, p.limit, gate, up));
        } else {
          const int32_t r = row_block * kRows + 16 * G + ((c < 2) ? g : g + 8);
          if (r < p.out_rows) p.y[slot * p.out_rows + r] = d[c] + bias[r];
        }
      }
    }
  }
}

template <bool GATE_UP, bool TWO_MUL, bool WGMMA, int ROWS>
void launch_tiled(TiledParams p, int64_t max_tiles, gpuStream_t stream) {
  constexpr size_t kSmemBytes = TiledShape<ROWS>::kSmemBytes;
  // gate_up: ROWS / 2 units (gate and up rows) per block; down: ROWS rows, those past H unstored.
  const int32_t per_block = GATE_UP ? ROWS / 2 : ROWS;
  p.row_blocks = (p.out_rows + per_block - 1) / per_block;
  static bool configured = false;  // before any graph capture: the first call is eager
  if (!configured) {
    const cudaError_t err = cudaFuncSetAttribute(expert_gemm_tiled_kernel<GATE_UP, TWO_MUL, WGMMA, ROWS>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(kSmemBytes));
    if (err != cudaSuccess) {
      throw_internal(std::string("fused_moe: tiled GEMM shared memory attribute: ") + cudaGetErrorString(err));
    }
    configured = true;
  }
  expert_gemm_tiled_kernel<GATE_UP, TWO_MUL, WGMMA, ROWS>
      <<<static_cast<unsigned>(max_tiles * p.row_blocks), TiledShape<ROWS>::kThreads, kSmemBytes, stream>>>(p);
}

// The current device is a Hopper (compute 9.0) and the build has sm_90a code, so wgmma runs
// (MOEPREP_CUDA_SM90A from MOEPREP_CUDA_ARCHS with 90a, the default; a Hopper running code
// JIT-compiled from plain compute_90 would reach the wgmma stubs' trap).
bool wgmma_available() {
#if !defined(MOEPREP_CUDA_SM90A)
  return false;
#endif
  int device = 0, major = 0, minor = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  if (err != cudaSuccess) throw_internal(std::string("fused_moe: tiled GEMM device query: ") + cudaGetErrorString(err));
  return major == 9 && minor == 0;
}

// wgmma for staged 3 and 5 where it runs; mma.sync for staged 4 and elsewhere.
bool use_wgmma(const ExpertGemmArgs& a) { return (a.staged == 3 || a.staged == 5) && wgmma_available(); }

template <bool GATE_UP, int ROWS>
void launch_tiled_rows(const ExpertGemmArgs& a, const TiledParams& p, bool large_scales, gpuStream_t s) {
  const bool wg = use_wgmma(a);
  if (wg && a.staged == 5) {  // A from registers (moe_expert_gemm_tiled_rs.cu)
    return large_scales ? launch_tiled_rs<GATE_UP, true, ROWS>(p, a.max_tiles, s)
                        : launch_tiled_rs<GATE_UP, false, ROWS>(p, a.max_tiles, s);
  }
  if (large_scales) {
    wg ? launch_tiled<GATE_UP, true, true, ROWS>(p, a.max_tiles, s)
       : launch_tiled<GATE_UP, true, false, ROWS>(p, a.max_tiles, s);
  } else {
    wg ? launch_tiled<GATE_UP, false, true, ROWS>(p, a.max_tiles, s)
       : launch_tiled<GATE_UP, false, false, ROWS>(p, a.max_tiles, s);
  }
}

template <bool GATE_UP>
void launch_tiled_kind(const ExpertGemmArgs& a, const TiledParams& p, bool large_scales, gpuStream_t s) {
  const int rows = a.tiled_rows == 0 ? kAutoTiledRows : a.tiled_rows;
  if (rows == 128) return launch_tiled_rows<GATE_UP, 128>(a, p, large_scales, s);
  if (rows == 256) return launch_tiled_rows<GATE_UP, 256>(a, p, large_scales, s);
  throw_bad_input("fused_moe: the tiled GEMM takes 128 or 256 rows per block, not " + std::to_string(rows));
}

TiledParams common(const ExpertGemmArgs& a) {
  if (a.token_tile != kTokens) {
    throw_bad_input("fused_moe: the tiled GEMM takes token tile 64, not " + std::to_string(a.token_tile));
  }
  TiledParams p{};
  p.sorted_pairs = a.sorted_pairs;
  p.top_k = a.top_k;
  p.tiles = a.tiles;
  p.num_tiles = a.num_tiles;
  p.act_kind = activation_code(a.act.kind);
  p.alpha = static_cast<float>(a.act.alpha);
  p.limit = static_cast<float>(a.act.limit);
  return p;
}

void check_k(int64_t K, const char* what) {
  // check_kernel_ready_layer guarantees multiples of 64 in both gate modes.
  if (K % kChunk != 0) {
    throw_bad_input(std::string("fused_moe: the tiled GEMM needs ") + what + " to be a multiple of 64, got " +
                    std::to_string(K));
  }
}

}  // namespace

bool tiled_registers_automatic() { return wgmma_available(); }

void launch_gate_up_tiled(const ExpertGemmArgs& a, const uint16_t* x_perm, uint16_t* act, void* stream) {
  const reference::KernelReadyLayer& L = *a.layer;
  if (!L.gated) throw_bad_input("fused_moe: the tiled gate_up GEMM reads [gate; up] rows; this layer's w13 is up-only");
  check_k(L.hidden_pad, "hidden_pad");
  TiledParams p = common(a);
  p.w = L.w13_weight;
  p.scale = L.w13_scale;
  p.bias = L.w13_bias;
  p.rows = a.w13_rows;
  p.K = static_cast<int32_t>(L.hidden_pad);
  p.b = x_perm;
  p.gather = true;
  p.loadable_rows = static_cast<int32_t>(L.intermediate_pad);
  p.up_offset = static_cast<int32_t>(L.intermediate_pad);
  p.out_rows = static_cast<int32_t>(L.intermediate_pad);
  p.rows_pad = 2 * L.intermediate_pad;
  p.act = act;
  launch_tiled_kind<true>(a, p, a.w13_large_scales, static_cast<gpuStream_t>(stream));
  check_launch("gate_up tiled GEMM kernel");
}

void launch_down_tiled(const ExpertGemmArgs& a, const uint16_t* act, float* y, void* stream) {
  const reference::KernelReadyLayer& L = *a.layer;
  check_k(L.intermediate_pad, "intermediate_pad");
  TiledParams p = common(a);
  p.w = L.w2_weight;
  p.scale = L.w2_scale;
  p.bias = L.w2_bias;
  p.rows = a.w2_rows;
  p.K = static_cast<int32_t>(L.intermediate_pad);
  p.b = act;
  p.gather = false;
  p.loadable_rows = static_cast<int32_t>(L.hidden_pad);
  p.up_offset = 0;
  p.out_rows = static_cast<int32_t>(L.hidden);
  p.rows_pad = L.hidden_pad;
  p.y = y;
  launch_tiled_kind<false>(a, p, a.w2_large_scales, static_cast<gpuStream_t>(stream));
  check_launch("down tiled GEMM kernel");
}

}  // namespace moeprep::gpu::detail

#endif  // !__HIPCC__
