#pragma once
// The fused MXFP4 MoE forward on the GPU (kernels/fused_moe.cu; CUDA, and HIP from the same
// source). It reads the kernel-ready tensors where convert put them, addressing shuffled tiles
// and scales through layout/addressing.h; nothing is un-shuffled first. Pipeline per call:
//   x -> router logits (+ a K-permuted, padded copy of x) -> launch_fused_router -> per-expert grouping
//   (counts, offsets, stable permutation, token tiles) -> gate_up GEMM + bias + activation
//   (bf16 out) -> down GEMM + bias (fp32 per pick) -> combine over the k picks in pick order.
// Small batches fold the grouping into gate_up and the combine into down (FusedMoeOptions); a
// few picks (decode) take GEMV-style kernels with no grouping and the combine inside down.
// Deterministic: no float atomics; every sum has a fixed order. Rows of padding tokens are zero.
//
// This header is plain C++ (no CUDA types), so the CLI and the tests include it directly.
// Errors are moeprep::Error: BadInput for shapes, Internal for a failed device call (the
// message names the call and the runtime's error string).
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/router.h"
#include "reference/moe.h"

namespace moeprep::gpu {

// True when a device is usable; otherwise `why` (if given) says "no GPU device present: ...".
bool gpu_available(std::string* why);

// An owned device allocation (move-only).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t size() const { return size_; }
  void upload(const void* host, size_t bytes);           // synchronous, bytes <= size()
  void download(void* host, size_t bytes) const;         // synchronous
  void fill_bytes(uint8_t value);                        // synchronous memset (poisoning in tests)

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

// Where each row of a shuffled tensor starts, derived from layout/addressing.h at upload: per
// row n of expert 0, int32 [n][12] = weight offsets of K bytes 16q (q = 0..3), then scale
// offsets of groups q and 4 + q; other experts and later K add constant strides. upload_layer
// checks the derivation against addressing.h (experts 0, 1 and E-1, every row, K byte run and
// scale group), so the GEMM kernels look offsets up instead of evaluating the formulas (64-bit
// divisions) in every block.
struct DeviceRowAddressing {
  DeviceBuffer table;
  int64_t weight_expert_stride = 0, scale_expert_stride = 0;
  int32_t weight_k_step = 0;  // per 64 K bytes
  int32_t scale_k_step = 0;   // per 8 scale groups
  // Some scale code above 128 (values past 12 need a second multiply when dequantizing to
  // bf16) or 255 (NaN): found by scanning the scales at upload.
  bool large_scales = true;
};

// Device copies of one layer's six kernel-ready tensors; `view` holds the device pointers.
struct DeviceMoeLayer {
  reference::KernelReadyLayer view;
  DeviceBuffer w13, w13_scale, w13_bias, w2, w2_scale, w2_bias;
  DeviceRowAddressing w13_rows, w2_rows;
};
// Checks the sizes (reference::check_kernel_ready_layer), copies the tensors and builds the row
// addressing tables.
DeviceMoeLayer upload_layer(const reference::KernelReadyLayer& host);

// The router's weights [E, H] bf16, bias [E] bf16 (optional) and configuration on the device.
struct DeviceRouter {
  int64_t experts = 0, hidden = 0;
  DeviceBuffer weight, bias, correction_bias, per_expert_scale;
  DeviceRouterParams params;  // points into the buffers above
};
DeviceRouter upload_router(const reference::RouterWeights& w, const reference::RouterConfig& rc, int64_t experts,
                           int64_t hidden);

// Scratch for calls of up to `max_tokens` tokens on one layer shape and top_k.
class MoeWorkspace {
 public:
  MoeWorkspace(const reference::KernelReadyLayer& layer, int top_k, int64_t max_tokens);
  int64_t max_tokens() const { return max_tokens_; }
  int top_k() const { return top_k_; }

  // Routing of the last call (synchronous copy): ids -1 / weights 0 for padding and NaN tokens.
  reference::Routing download_routing(int64_t tokens) const;

  // Buffers (device), public for the launcher.
  DeviceBuffer x_perm, logits, topk_weights, topk_ids, nan_flags, expert_counts, sorted_pairs, slot_of_pair,
      tiles, num_tiles, act, y;
  // Arrival counters of the small-batch down kernel's folded combine; zero between calls.
  DeviceBuffer combine_counters;
  // Arrival counter of the decode route kernel (one int32); zero between calls.
  DeviceBuffer route_counter;
  // Arrival counters of the per-pick decode down kernel; zero between calls.
  DeviceBuffer decode_counters;

 private:
  int64_t max_tokens_ = 0;
  int top_k_ = 0;
};

// How the expert GEMMs run. 0 = chosen from the shape (tokens * top_k / experts).
struct FusedMoeOptions {
  int token_tile = 0;   // tokens per GEMM tile: 8, 16, 32 or 64
  int k_split = 0;      // warps of a block that split K (small batches): 1 or 4
  int staged = -1;      // 1: shared-memory pipelined GEMM, 0: direct loads; -1: by tile size
                        // (2: pipelined, register budget for 3 blocks per SM at tile 64;
                        // 3: the tiled GEMMs, CUDA, tile 64, wgmma on Hopper; 4: the same with
                        // mma.sync everywhere; 5: the tiled GEMMs with wgmma reading A from
                        // registers on Hopper (3 elsewhere), the automatic choice for tile 64 there)
  int tiled_rows = 0;   // the tiled GEMMs' weight rows per block: 128 or 256; 0: 128
  bool simple = false;  // the plain one-thread-per-output kernels (the portable, slow path)
  // Small batches (CUDA): the grouping (up to 32 picks) folded into the gate_up kernel, the
  // combine into the down kernel and the activation copy into the router logits, so a call is
  // 4 launches (token tile 8, K split 4). 1: on, 0: off, -1: when tokens * top_k <= 32 and the
  // fields above are left automatic.
  int small_batch = -1;
  // Decode (CUDA): the GEMV-style expert kernels of kernels/moe_decode_gemv.cu, no grouping,
  // the combine inside down: 4 launches (logits, router, gate_up, down). 1: on (BadInput where
  // the layer or batch does not fit them), 0: off, -1: when tokens * top_k <= 4 and the fields
  // above are left automatic (small_batch included).
  int decode = -1;
  // The route stage in one launch (CUDA, kernels/moe_decode_route.cu): logits, x_perm and the
  // routing of up to 8 tokens with a softmax router variant (not sigmoid_grouped_biased). 1: on
  // (BadInput where it does not apply), 0: off (logits and router launches), -1: when it applies.
  int fused_route = -1;
  // The fused route's layout: 1 one block per expert (the last to arrive routes, from L2), 8 or
  // 16 one thread-block cluster of that many CTAs (CUDA, compute capability 9.0; CTA 0 routes
  // from the cluster's shared memory; BadInput where the device cannot run it); 0: automatic, 1
  // (H100, T = 1 graph, same run: 42.0 us E blocks, 42.9 with 16 CTAs, 44.2 with 8: 16 SMs
  // pull the 737 KB of router weights too slowly; moe_decode_route.cu).
  int route_cluster = 0;
  // Programmatic dependent launch of the decode kernels (CUDA, compute capability 9.0 and up;
  // elsewhere plain launches): their prologue overlaps the previous kernel. 1 or -1: on where
  // supported, 0: off. Results are bitwise the same either way.
  int pdl = -1;
  // The decode gate_up's K rounds loaded per batch: 3 (116-118 registers), 2 (80) or 1 (64);
  // with 8-warp blocks that is 2, 3 or 4 blocks per SM, with 4-warp blocks 4, 6 or 8. 0:
  // automatic, 2 with 4 warps and 1 with 8 (H100, 8 warps: T = 1 43.8 us with 1 vs 47.8 with 3;
  // bench/NOTES-fused-moe.md, v13 and v20-decode).
  int decode_batch = 0;
  // The decode gate_up's warps (K parts) per block: 4, 8, or 12 with 2 rounds per batch (2
  // blocks per SM, each warp's rounds loaded at once at gpt-oss's H). 0: automatic, 4: with 2
  // rounds per batch, 6 blocks per SM hold T = 1's 720 blocks in one wave instead of 8-warp
  // blocks' 1.4 (H100, T = 1, same run: 37.7 us vs 39.3 with 8 warps x 1 round; NOTES,
  // v20-decode).
  int decode_warps = 0;
  // The decode down kernel: 1 a block per (16 rows, token) summing the picks itself (180 blocks
  // at gpt-oss T = 1), 2 a block per (16 rows, token, pick), the last of a row unit's picks to
  // finish combining them (top_k times the blocks); 3 the same with 4-warp blocks (8 per SM: one
  // wave at T = 1); 0: automatic, 2 (H100, T = 1: 42.2 us vs 43.7 per token; 3: 42.4 vs 41.9;
  // NOTES, v14-decode, v15-decode); 4 per pick with the picks combined in a thread-block cluster
  // of top_k blocks through distributed shared memory (compute capability 9.0, top_k <= 8; the
  // same bits as 2; H100, T = 1: 42.4 us vs 41.7 with 2, same run: not the automatic choice).
  int decode_down = 0;
};

// Timing hook: events recorded between the stages of one enqueue_fused_moe call.
struct StageTimes {
  float logits_ms = 0;  // router logits and the activations' GEMM copy
  float route_ms = 0, group_ms = 0, gate_up_ms = 0, down_ms = 0, combine_ms = 0;
  float total_ms() const { return logits_ms + route_ms + group_ms + gate_up_ms + down_ms + combine_ms; }
};
class StageEvents {
 public:
  static constexpr int kCount = 7;
  StageEvents();
  ~StageEvents();
  StageEvents(const StageEvents&) = delete;
  StageEvents& operator=(const StageEvents&) = delete;
  void record(int i, void* stream);
  StageTimes elapsed() const;  // synchronizes on the last event

 private:
  void* events_[kCount] = {};
};

// Enqueues the whole forward on `stream` (nullptr = default stream) without synchronizing, so
// it can be captured in a graph. x: device bf16 [tokens, H]; out: device fp32 [tokens, H], every
// element written (padding rows zero).
void enqueue_fused_moe(const DeviceMoeLayer& layer, const DeviceRouter& router, const reference::ActivationParams& act,
                       const uint16_t* x, int64_t tokens, int64_t valid_tokens, MoeWorkspace& ws, float* out,
                       void* stream, const FusedMoeOptions& options = {}, StageEvents* events = nullptr);

// One call from host memory to host memory: upload, run, copy back output and routing. What
// verify calls.
reference::MoeOutput moe_forward_gpu(const reference::KernelReadyLayer& host_layer,
                                     const reference::RouterWeights& router, const reference::RouterConfig& rc,
                                     const reference::ActivationParams& act, const uint16_t* x, int64_t tokens,
                                     int64_t valid_tokens);

// The same with the layer and router already on the device.
reference::MoeOutput run_fused_moe(const DeviceMoeLayer& layer, const DeviceRouter& router,
                                   const reference::ActivationParams& act, const uint16_t* x_host, int64_t tokens,
                                   int64_t valid_tokens, const FusedMoeOptions& options = {});

}  // namespace moeprep::gpu
