#pragma once
// What the fused MoE's kernel files share: the token-tile record, the K permutation of the
// GEMM operands, and the launchers (host functions; pointers are device pointers; each checks
// its launch and throws moeprep::Error naming the kernel). Plain C++: no CUDA types.
#include <cstdint>

#include "layout/addressing.h"
#include "reference/moe.h"

namespace moeprep::gpu::detail {

// One GEMM work item: `count` (<= the token tile) consecutive expert-sorted slots starting at
// `start`, all routed to `expert`.
struct Tile {
  int32_t expert, start, count, unused;
};

// The B operand (activations) of the expert GEMMs is stored K-permuted inside each aligned
// group of 8 elements, so that one 16-byte load per lane matches the A fragments that the MXFP4
// dequantization produces (kernels/moe_expert_gemm.cu): position p of a group holds element
// (3, 7, 2, 6, 1, 5, 0, 4)[p]. A sum over K does not care about the order.
MOEPREP_HD int permuted_element(int p) { return ((p & 1) ? 7 : 3) - (p >> 1); }
MOEPREP_HD int permuted_position(int i) { return i < 4 ? 6 - 2 * i : 15 - 2 * i; }
MOEPREP_HD int64_t permuted_index(int64_t k) { return (k & ~int64_t{7}) | permuted_position(static_cast<int>(k & 7)); }

// x_perm [T, Hp] bf16: x K-permuted, zero past H and for tokens >= valid (the gate_up GEMM's
// B); then logits [T, E] fp32 = x . W^T + b for t < valid (0 for padding rows). Two launches.
void launch_router_logits(const uint16_t* x, const uint16_t* w, const uint16_t* bias, int64_t tokens, int64_t valid,
                          int64_t E, int64_t H, int64_t Hp, float* logits, uint16_t* x_perm, void* stream);

// Groups the T*k picks by expert, stable in pick order: sorted_pairs (pick index per slot),
// slot_of_pair, counts [E], tiles of `token_tile` slots and their number.
void launch_group(const int32_t* topk_ids, int64_t pairs, int64_t E, int token_tile, int32_t* counts,
                  int32_t* sorted_pairs, int32_t* slot_of_pair, Tile* tiles, int32_t* num_tiles, void* stream);

// out[t, h] = sum over picks j in order of w[t, j] * y[slot(t, j), h]; zero rows for padding.
void launch_combine(const float* y, const int32_t* topk_ids, const float* topk_weights, const int32_t* slot_of_pair,
                    int64_t tokens, int64_t valid, int top_k, int64_t H, float* out, void* stream);

// A DeviceRowAddressing (fused_moe.h) as the kernels take it.
struct RowTable {
  const int32_t* table = nullptr;  // [rows][12]
  int64_t weight_expert_stride = 0, scale_expert_stride = 0;
  int32_t weight_k_step = 0, scale_k_step = 0;
};

// The expert GEMMs. Common arguments of both.
struct ExpertGemmArgs {
  const reference::KernelReadyLayer* layer = nullptr;  // device pointers
  RowTable w13_rows, w2_rows;
  bool w13_large_scales = true, w2_large_scales = true;  // a scale code > 128 somewhere
  const int32_t* sorted_pairs = nullptr;
  int top_k = 0;
  const Tile* tiles = nullptr;
  const int32_t* num_tiles = nullptr;
  int64_t max_tiles = 0;
  int token_tile = 8;  // 8, 16, 32, 64
  int k_split = 1;     // 1 or 4
  int staged = 0;       // 0 direct loads; 1 shared-memory pipeline; 2 the same, 3 blocks/SM at NT 8;
                        // 3 the tiled GEMMs (launch_*_tiled; the caller dispatches), wgmma on
                        // Hopper; 4 the same with mma.sync
  int tiled_rows = 0;   // the tiled GEMMs' weight rows per block: 128, 256; 0: 128
  bool simple = false;
  reference::ActivationParams act;

  // Small batches (CUDA): the direct kernels, token tile 8, K split 4, with the two stages below
  // folded in (moe_expert_gemm.cu).
  bool small = false;
  // gate_up with `small`: every block groups the picks itself (pairs <= kInlineGroupMaxPairs)
  // instead of reading launch_group's tiles; block 0 writes the grouping outputs (counts,
  // sorted_pairs, slot_of_pair, tiles, num_tiles) for the later stages.
  bool inline_group = false;
  const int32_t* topk_ids = nullptr;
  int64_t pairs = 0, experts = 0;
  int32_t* counts_out = nullptr;
  int32_t* sorted_pairs_out = nullptr;
  int32_t* slot_of_pair = nullptr;
  Tile* tiles_out = nullptr;
  int32_t* num_tiles_out = nullptr;
  // down with `small`: the combine folded in. The last block to finish a row block (counted in
  // `counters`, which it resets) sums that block's rows over every token's picks in pick order.
  bool fuse_combine = false;
  const float* topk_weights = nullptr;
  int64_t tokens = 0, valid = 0;
  float* out = nullptr;
  int32_t* counters = nullptr;  // [combine_counter_count(H)] zero between calls
};

// Picks up to which gate_up can group inline (one warp, one pick per lane).
constexpr int64_t kInlineGroupMaxPairs = 32;
// Row blocks of the down GEMM's small kernel, for sizing MoeWorkspace::combine_counters.
inline int64_t combine_counter_count(int64_t hidden) { return (hidden + 31) / 32; }

// gate_up: act [P, Ip] bf16 (K-permuted) from x_perm [T, Hp]. Non-gated layers (layer->gated
// false, relu^2): the up projection alone, its rows tiled like w2's, on the down kernels.
void launch_gate_up(const ExpertGemmArgs& a, const uint16_t* x_perm, uint16_t* act, void* stream);
// down: y [P, H] fp32 from act.
void launch_down(const ExpertGemmArgs& a, const uint16_t* act, float* y, void* stream);

// The same two GEMMs for large batches (CUDA only; token tile 64; moe_expert_gemm_tiled.cu):
// 128-row x 64-token blocks that dequantize each weight chunk once into shared memory.
void launch_gate_up_tiled(const ExpertGemmArgs& a, const uint16_t* x_perm, uint16_t* act, void* stream);
void launch_down_tiled(const ExpertGemmArgs& a, const uint16_t* act, float* y, void* stream);
// Whether the tiled GEMMs with A from registers (staged 5) are the automatic choice for token
// tiles of 64: on a Hopper device (compute 9.0) in a build with sm_90a code, where they ran
// 1.5x the pipelined kernel at T = 4096 (bench/NOTES-fused-moe.md, v11-big). CUDA only.
bool tiled_registers_automatic();

// The decode path (kernels/moe_decode_gemv.cu; CUDA): GEMV-style expert kernels for a few
// tokens, reading the router's topk_ids / topk_weights directly (no grouping), skipping the K
// and row padding; down applies bias and routing weights and sums each token's picks in pick
// order (no y buffer, no combine launch).
struct DecodeArgs {
  const reference::KernelReadyLayer* layer = nullptr;  // device pointers
  RowTable w13_rows, w2_rows;
  bool w13_large_scales = true, w2_large_scales = true;
  const int32_t* topk_ids = nullptr;      // [T, top_k], -1 for no pick
  const float* topk_weights = nullptr;    // [T, top_k]
  int top_k = 0;
  int64_t tokens = 0, valid = 0;
  reference::ActivationParams act;
  // Programmatic dependent launch (CUDA, sm_90+): gate_up and down are launched so that their
  // prologue (row tables; down: its first weight batch) overlaps the previous kernel's tail; each
  // waits (griddepcontrol.wait) before reading what that kernel writes. Same results either way.
  bool pdl = false;
  // gate_up's rounds per load batch: 3, 2 or 1 (8-warp blocks: 2, 3 or 4 per SM; 4-warp: 4, 6, 8).
  int gate_up_batch = 3;
  int gate_up_warps = 8;  // K parts of a gate_up block: 4, 8, or 12 (then 2 rounds per batch)
  // down with a block per (16 rows, token, pick) instead of per (16 rows, token): top_k times
  // the blocks; each pick's rows go to y [P, H] fp32 and the last of a row unit's picks to
  // arrive on counters [T, ceil(H / 16)] (zero between calls; it resets its counter) combines.
  bool down_per_pick = false;
  int down_warps = 8;  // per-pick blocks: 8 warps (4 blocks per SM) or 4 (8 per SM)
  // per-pick blocks combined in a thread-block cluster of top_k blocks (sm_90, top_k <= 8)
  // instead of through y and the arrival counters
  bool down_cluster = false;
  float* y = nullptr;
  int32_t* counters = nullptr;
};
// Arrival counters the per-pick decode down needs: [T, ceil(H / 16)].
inline int64_t decode_down_counter_count(int64_t tokens, int64_t hidden) { return tokens * ((hidden + 15) / 16); }
// Picks up to which the decode kernels are the automatic choice: at 4 (T = 1, top-4) they were
// 1% faster than the small-batch kernels, at 32 2% slower (each pick dequantizes its expert's
// weights again, where a token tile shares it; bench/NOTES-fused-moe.md, v10-decode).
constexpr int64_t kDecodeAutoMaxPairs = 4;
// Whether the decode kernels take this layer, top_k and batch (false under HIP).
bool decode_supported(const reference::KernelReadyLayer& layer, int top_k, int64_t tokens);
// act [P, I'] bf16 (K-permuted, the down GEMM's B) from x_perm; columns past I rounded up to 32
// are not written (down does not read them); rows of picks that route nowhere neither.
void launch_decode_gate_up(const DecodeArgs& a, const uint16_t* x_perm, uint16_t* act, void* stream);
// out [T, H] fp32: every element written, padding tokens' rows zero.
void launch_decode_down(const DecodeArgs& a, const uint16_t* act, float* out, void* stream);

// The decode route (kernels/moe_decode_route.cu; CUDA): launch_router_logits + launch_fused_router
// in one launch for a few tokens and the softmax router variants. Block e computes logits[:, e]
// and a share of x_perm; the last block to arrive (on `counter`, zero between calls, reset by that
// block) routes every token. Outputs as the two launches': logits, x_perm, topk_ids (int32),
// topk_weights, nan_flags.
constexpr int kDecodeRouteMaxTokens = 8;
constexpr int kDecodeRouteMaxExperts = 512;
struct DecodeRouteArgs {
  const uint16_t* x = nullptr;     // [T, H] bf16, 16-byte aligned
  const uint16_t* w = nullptr;     // [E, H] bf16
  const uint16_t* bias = nullptr;  // [E] bf16 or null
  int32_t tokens = 0, valid = 0, experts = 0, hidden = 0, hidden_pad = 0, top_k = 0;
  reference::RouterVariant variant = reference::RouterVariant::SoftmaxAfterTopk;
  bool renormalize = false;                 // softmax_then_topk
  const float* per_expert_scale = nullptr;  // gemma4, or null
  float* logits = nullptr;                  // [T, E]
  uint16_t* x_perm = nullptr;               // [T, H']
  int32_t* topk_ids = nullptr;
  float* topk_weights = nullptr;
  uint8_t* nan_flags = nullptr;
  int32_t* counter = nullptr;
  // 0: one block per expert, the last to arrive on `counter` routes; 8 or 16: one thread-block
  // cluster of that many CTAs (sm_90; decode_route_cluster_supported), CTA 0 routes from the
  // cluster's shared memory and `counter` is not used.
  int32_t cluster = 0;
};
bool decode_route_cluster_supported(int ctas);
// The cluster route stages x ([valid, H] bf16) in each CTA's shared memory: at most
// kDecodeRouteClusterMaxXBytes (BadInput past it).
inline size_t decode_route_cluster_x_bytes(int64_t valid, int64_t hidden) {
  return static_cast<size_t>(valid * hidden * 2);
}
constexpr size_t kDecodeRouteClusterMaxXBytes = 192 * 1024;
bool decode_route_supported(reference::RouterVariant variant, int top_k, int64_t experts, int64_t tokens,
                            int64_t hidden, int64_t hidden_pad, const void* x);
void launch_decode_route(const DecodeRouteArgs& a, void* stream);

// Throws Internal naming `what` when the last launch or call failed.
void check_launch(const char* what);

}  // namespace moeprep::gpu::detail
