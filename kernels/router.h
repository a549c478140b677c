#pragma once
// The fused router: one launch per call; a token takes a power-of-two group of lanes of one warp
// (up to the whole warp for E = 512; see kernels/router.cu). Host-callable API; pointers are
// device pointers. Semantics as the CPU reference (lib/reference/router.h).
#include <cstdint>

#include "reference/router.h"

namespace moeprep::gpu {

enum class IndexDtype { Int16, Int32, Int64 };
enum class LogitsDtype { F32, BF16 };

// Device-side copy of the router parameters (correction bias, per-expert scale).
struct DeviceRouterParams {
  reference::RouterVariant variant = reference::RouterVariant::SoftmaxAfterTopk;
  int top_k = 1;
  bool renormalize = false;
  int n_group = 1;
  int topk_group = 1;
  float routed_scaling_factor = 1.0f;
  const float* correction_bias = nullptr;   // [E] device, or null
  const float* per_expert_scale = nullptr;  // [E] device, or null
};

// logits [T, E] (fp32 or bf16 bits); writes topk_weights [T, k] fp32, topk_ids [T, k] in
// `index_dtype`, optionally routing_map [T, E] bytes (1 where picked), and for each token with a
// NaN logit sets nan_flags[t] = 1 (ids -1, weights 0). Rows t in [valid_tokens, tokens) are
// padding: ids -1, weights 0. Returns an error string, empty on success (launch errors checked).
const char* launch_fused_router(const void* logits, LogitsDtype logits_dtype, int64_t tokens, int64_t valid_tokens,
                                int64_t experts, const DeviceRouterParams& params, float* topk_weights,
                                void* topk_ids, IndexDtype index_dtype, uint8_t* routing_map, uint8_t* nan_flags,
                                void* stream);

// How a call is launched; none of it changes what the call computes or writes.
struct RouterLaunchOptions {
  // Programmatic dependent launch (CUDA on sm_90 and later; a plain launch under HIP and on older
  // devices): the launch may begin while the kernel before it in the stream is still running, and
  // every block waits for that kernel to complete, its writes visible, before it touches global
  // memory, so reads and writes stay ordered as with a plain launch. What it hides is the launch
  // gap between consecutive kernels: on the H100 0.3 us a call in a graph at T <= 4096, nothing at
  // T = 16384, where the grid fills the SMs (bench/NOTES-router.md, v10). The router also lets a
  // kernel launched after it this way start early.
  bool programmatic_dependent_launch = false;
};

const char* launch_fused_router(const void* logits, LogitsDtype logits_dtype, int64_t tokens, int64_t valid_tokens,
                                int64_t experts, const DeviceRouterParams& params, float* topk_weights,
                                void* topk_ids, IndexDtype index_dtype, uint8_t* routing_map, uint8_t* nan_flags,
                                void* stream, const RouterLaunchOptions& options);

// A reference point for the benchmark, not a router: the fused router's grid, lanes and loads
// for fp32 logits [T, E], with the selection left out. Every slot of token t gets
// topk_weights[t * k + r] = max of the row (NaN logits skipped) and topk_ids[t * k + r] = r, and
// nan_flags[t] = 0 when nan_flags is not null. The bytes it moves are the router's, so its time
// is what reading the rows this way costs. Returns an error string, empty on success.
const char* launch_router_read_probe(const float* logits, int64_t tokens, int64_t experts, int top_k,
                                     float* topk_weights, int32_t* topk_ids, uint8_t* nan_flags, void* stream,
                                     const RouterLaunchOptions& options);

}  // namespace moeprep::gpu
