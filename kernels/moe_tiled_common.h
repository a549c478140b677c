#pragma once
// What the tiled expert GEMMs (moe_expert_gemm_tiled.cu: A dequantized into shared memory;
// moe_expert_gemm_tiled_rs.cu: A dequantized into wgmma's registers) share: the block shape
// constants, the kernel parameters, the shared-memory swizzle, cp.async and the wgmma
// synchronization. CUDA only; included by .cu files after kernels/portability.h.
#include <cstddef>
#include <cstdint>

#include "kernels/moe_internal.h"

#if !defined(__HIPCC__)

namespace moeprep::gpu::detail::tiled {

constexpr int kTokens = 64;  // token slots per block (the token tile)
constexpr int kChunk = 64;   // K elements per pipeline step
constexpr int kStages = 4;   // cp.async ring depth (chunks in flight)

struct TiledParams {
  const uint8_t* w;
  const uint8_t* scale;
  const float* bias;
  RowTable rows;
  int32_t K;                 // padded K in elements (a multiple of 64)
  const uint16_t* b;         // B rows of K bf16, K-permuted
  const int32_t* sorted_pairs;
  int32_t top_k;
  bool gather;               // gate_up: B row = token of the pick; down: B row = slot
  const Tile* tiles;
  const int32_t* num_tiles;
  int32_t row_blocks;        // set by the launcher
  int32_t loadable_rows;     // gate_up: I' units; down: H' rows
  int32_t up_offset;         // gate_up: I' (up rows follow the gate rows)
  int32_t out_rows;          // gate_up: I' (act columns); down: H (y columns)
  int64_t rows_pad;          // rows per expert (bias stride)
  uint16_t* act;
  float* y;
  int act_kind;
  float alpha, limit;
};

// 16-byte chunk `chunk` of row `row` in a [rows][8 chunks] tile: XOR-swizzled by the row, so
// that 8 consecutive rows at one logical chunk (ldmatrix) and 8 chunks of one row (cp.async,
// the dequant stores) each hit 8 distinct bank groups.
__device__ __forceinline__ int swz(int row, int chunk) { return row * 8 + (chunk ^ (row & 7)); }

// The weight row whose runs A row `ar` of row block `row_block` copies, and whether that row
// exists (rows past the tensor read row 0's address and zero-fill instead). gate_up: a 16-row
// group holds 8 units, rows 0-7 their gate rows and rows 8-15 their up rows, so the activation
// pairs g and g + 8 sit in one lane's fragment.
template <bool GATE_UP, int ROWS>
__device__ __forceinline__ int32_t tiled_weight_row(const TiledParams& p, int32_t row_block, int ar, bool& row_ok) {
  int32_t n;
  if constexpr (GATE_UP) {
    const int32_t unit = row_block * (ROWS / 2) + (ar >> 4) * 8 + (ar & 7);
    row_ok = unit < p.loadable_rows;
    n = unit + ((ar >> 3) & 1) * p.up_offset;
  } else {
    n = row_block * ROWS + ar;
    row_ok = n < p.loadable_rows;
  }
  return row_ok ? n : 0;
}

// wgmma's swizzle is on address bits: the tiles start 1024-aligned (kSmemBytes has the slack).
__device__ __forceinline__ uint4* align_smem_1024(uint4* smem_raw) {
  return reinterpret_cast<uint4*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
}

// The token tile and row block of this block (blocks run tile-major); false for blocks past the
// routed tiles, whose count is known on the device only (uniform per block).
__device__ __forceinline__ bool locate_block(const TiledParams& p, Tile& tile, int32_t& row_block) {
  const int32_t tile_index = static_cast<int32_t>(blockIdx.x) / p.row_blocks;
  row_block = static_cast<int32_t>(blockIdx.x) % p.row_blocks;
  if (tile_index >= *p.num_tiles) return false;
  tile = p.tiles[tile_index];
  return true;
}

// B's source offset (in elements) of 16-byte chunk `bc` of the tile's token row `row`, and
// whether that row exists (rows past the tile copy row 0's address and zero-fill). gate_up
// gathers the pick's token row; down reads the sorted slot's row.
__device__ __forceinline__ uint32_t b_copy_source(const TiledParams& p, const Tile& tile, int row, int bc, bool& ok) {
  ok = row < tile.count;
  int64_t brow = 0;
  if (ok) {
    const int64_t slot = tile.start + row;
    brow = p.gather ? p.sorted_pairs[slot] / p.top_k : slot;
  }
  return static_cast<uint32_t>(brow * p.K) + 8 * bc;
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  // src-size 0 zero-fills the 16 bytes (tokens past the tile, rows past the tensor).
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(smem_addr(smem)), "l"(gmem));
}
// The same, zero-filled where !valid.
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Shared-memory matrix descriptor of a K-major tile of 128-byte rows in the 128-byte swizzle
// (16-byte chunk ^ (row & 7), tile base 1024-aligned): 8-row groups 1024 bytes apart. A k16 step
// inside the 64-element rows advances the start address by 32 bytes (the descriptor by 2).
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFFu) >> 4) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) |
         (uint64_t{1} << 62);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// The compiler must not move reads or writes of the accumulators across an issued wgmma and
// its wait: mark them as changed at both points.
__device__ __forceinline__ void fence_operands(float (&d)[32]) {
#pragma unroll
  for (int i = 0; i < 32; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
#else
__device__ __forceinline__ void fence_operands(float (&)[32]) {}
__device__ __forceinline__ void wgmma_fence() {}
__device__ __forceinline__ void wgmma_commit() {}
__device__ __forceinline__ void wgmma_wait_all() {}
#endif

// The register-A kernel's launcher (moe_expert_gemm_tiled_rs.cu): wgmma on sm_90a only; the
// caller checks the device (use_wgmma in moe_expert_gemm_tiled.cu).
template <bool GATE_UP, bool TWO_MUL, int ROWS>
void launch_tiled_rs(TiledParams p, int64_t max_tiles, gpuStream_t stream);

}  // namespace moeprep::gpu::detail::tiled

#endif  // !__HIPCC__
