// Host side of the fused MoE: device buffers, uploads, the workspace, the stage sequence and
// the one-call convenience used by verify. The kernels live in moe_routing_prep.cu and
// moe_expert_gemm.cu.
#include "kernels/portability.h"  // first: defines what MOEPREP_HD needs under HIP
#include "kernels/fused_moe.h"

#include <algorithm>
#include <climits>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "kernels/moe_internal.h"

namespace moeprep::gpu {
namespace {

void check(gpuError_t err, const std::string& what) {
  if (err != gpuSuccess) throw_internal("fused_moe: " + what + ": " + gpuGetErrorString(err));
}

gpuStream_t as_stream(void* s) { return static_cast<gpuStream_t>(s); }

int64_t max_tiles_for(int64_t pairs, int64_t experts, int token_tile) {
  return std::min(experts, pairs) + (pairs + token_tile - 1) / token_tile;
}

// The row tables of DeviceRowAddressing, from addressing.h, and their check: the derivation
// (expert and K strides constant, per-row offsets of the first runs) holds for both gate modes'
// formulas; a future layout that breaks it fails here, loudly, instead of computing garbage.
struct HostRowTable {
  std::vector<int32_t> table;
  int64_t wes = 0, ses = 0;
  int32_t wstep = 0, sstep = 0;
};

HostRowTable build_row_table(const layout::WeightTileLayout& wl, const layout::ScaleLayout& sl, int64_t experts,
                             const char* name) {
  HostRowTable t;
  const int64_t rows = wl.rows, groups = wl.kbytes / 16;
  t.wes = wl.offset(1, 0, 0) - wl.offset(0, 0, 0);
  t.ses = sl.offset(1, 0, 0) - sl.offset(0, 0, 0);
  t.wstep = static_cast<int32_t>(wl.offset(0, 0, 64) - wl.offset(0, 0, 0));
  t.sstep = static_cast<int32_t>(sl.offset(0, 0, 8) - sl.offset(0, 0, 0));
  t.table.resize(static_cast<size_t>(rows * 12));
  auto narrow = [&](int64_t v) {
    if (v < 0 || v > INT32_MAX) throw_bad_input(std::string("fused_moe: ") + name + " offsets exceed 32 bits");
    return static_cast<int32_t>(v);
  };
  for (int64_t n = 0; n < rows; ++n) {
    for (int q = 0; q < 4; ++q) {
      t.table[n * 12 + q] = narrow(wl.offset(0, n, 16 * q));
      t.table[n * 12 + 4 + q] = narrow(sl.offset(0, n, q));
      t.table[n * 12 + 8 + q] = narrow(sl.offset(0, n, 4 + q));
    }
  }
  for (int64_t e : {int64_t{0}, std::min<int64_t>(1, experts - 1), experts - 1}) {
    for (int64_t n = 0; n < rows; ++n) {
      for (int64_t run = 0; run < groups; ++run) {  // 16-byte run = scale group
        const int64_t r = run / 4, q = run % 4;
        if (wl.offset(e, n, 16 * run) != e * t.wes + t.table[n * 12 + q] + r * t.wstep) {
          throw_internal(std::string("fused_moe: ") + name + " weight offsets do not follow the row table at expert " +
                         std::to_string(e) + ", row " + std::to_string(n) + ", K byte " + std::to_string(16 * run));
        }
        const int64_t m = run / 8, f = (run / 4) % 2;
        if (sl.offset(e, n, run) != e * t.ses + t.table[n * 12 + 4 + 4 * f + q] + m * t.sstep) {
          throw_internal(std::string("fused_moe: ") + name + " scale offsets do not follow the row table at expert " +
                         std::to_string(e) + ", row " + std::to_string(n) + ", group " + std::to_string(run));
        }
      }
    }
  }
  return t;
}

DeviceRowAddressing upload_row_table(const HostRowTable& h) {
  DeviceRowAddressing d;
  d.table = DeviceBuffer(h.table.size() * sizeof(int32_t));
  d.table.upload(h.table.data(), d.table.size());
  d.weight_expert_stride = h.wes;
  d.scale_expert_stride = h.ses;
  d.weight_k_step = h.wstep;
  d.scale_k_step = h.sstep;
  return d;
}

// Programmatic dependent launch needs compute capability 9.0 (griddepcontrol) and CUDA.
bool pdl_supported() {
#if defined(__HIPCC__)
  return false;
#else
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor,
                                                                        device) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return major >= 9;
#endif
}

detail::RowTable as_row_table(const DeviceRowAddressing& d) {
  detail::RowTable t;
  t.table = d.table.as<int32_t>();
  t.weight_expert_stride = d.weight_expert_stride;
  t.scale_expert_stride = d.scale_expert_stride;
  t.weight_k_step = d.weight_k_step;
  t.scale_k_step = d.scale_k_step;
  return t;
}

}  // namespace

bool gpu_available(std::string* why) {
  int count = 0;
  const gpuError_t err = gpuGetDeviceCount(&count);
  if (err != gpuSuccess) {
    (void)gpuGetLastError();  // clear the sticky error for later callers
    if (why) *why = std::string("no GPU device present: ") + gpuGetErrorString(err);
    return false;
  }
  if (count == 0) {
    if (why) *why = "no GPU device present: the " MOEPREP_GPU_API " runtime reports 0 devices";
    return false;
  }
  return true;
}

// ---- DeviceBuffer ----------------------------------------------------------------------------

DeviceBuffer::DeviceBuffer(size_t bytes) : size_(bytes) {
  if (bytes > 0) check(gpuMalloc(&ptr_, bytes), "allocating " + std::to_string(bytes) + " bytes");
}
DeviceBuffer::~DeviceBuffer() {
  if (ptr_) (void)gpuFree(ptr_);
}
DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), size_(o.size_) {
  o.ptr_ = nullptr;
  o.size_ = 0;
}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) (void)gpuFree(ptr_);
    ptr_ = o.ptr_;
    size_ = o.size_;
    o.ptr_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}
void DeviceBuffer::upload(const void* host, size_t bytes) {
  if (bytes > size_) throw_internal("fused_moe: upload of " + std::to_string(bytes) + " bytes into a smaller buffer");
  if (bytes) check(gpuMemcpy(ptr_, host, bytes, gpuMemcpyHostToDevice), "copy to device");
}
void DeviceBuffer::download(void* host, size_t bytes) const {
  if (bytes > size_) throw_internal("fused_moe: download of " + std::to_string(bytes) + " bytes from a smaller buffer");
  if (bytes) check(gpuMemcpy(host, ptr_, bytes, gpuMemcpyDeviceToHost), "copy to host");
}
void DeviceBuffer::fill_bytes(uint8_t value) {
  if (size_) check(gpuMemset(ptr_, value, size_), "memset");
  check(gpuDeviceSynchronize(), "memset");
}

// ---- uploads ---------------------------------------------------------------------------------

DeviceMoeLayer upload_layer(const reference::KernelReadyLayer& host) {
  const reference::KernelReadySizes z = reference::check_kernel_ready_layer(host);
  const reference::KernelReadyLayer& L = host;
  // w13: [gate; up] rows, or (non-gated) the up rows alone, tiled like w2.
  const int64_t w13_rows_per_expert = L.gated ? 2 * L.intermediate_pad : L.intermediate_pad;
  const HostRowTable w13_rows =
      build_row_table({L.mode, L.gated, w13_rows_per_expert, L.hidden_pad / 2},
                      {L.mode, L.gated, w13_rows_per_expert, L.w13_scale_cols}, L.experts, "w13");
  const HostRowTable w2_rows = build_row_table({L.mode, false, L.hidden_pad, L.intermediate_pad / 2},
                                               {L.mode, false, L.hidden_pad, L.w2_scale_cols}, L.experts, "w2");
  DeviceMoeLayer d;
  d.w13_rows = upload_row_table(w13_rows);
  d.w2_rows = upload_row_table(w2_rows);
  auto any_large = [](const uint8_t* s, int64_t n) {
    return s != nullptr && std::any_of(s, s + n, [](uint8_t v) { return v > 128; });
  };
  d.w13_rows.large_scales = any_large(host.w13_scale, z.w13_scale);
  d.w2_rows.large_scales = any_large(host.w2_scale, z.w2_scale);
  auto copy = [](DeviceBuffer& b, const void* src, int64_t bytes, const char* name) {
    if (!src) throw_bad_input(std::string("fused_moe: kernel-ready tensor ") + name + " is missing");
    b = DeviceBuffer(static_cast<size_t>(bytes));
    b.upload(src, static_cast<size_t>(bytes));
  };
  copy(d.w13, host.w13_weight, z.w13_weight, "w13_weight");
  copy(d.w13_scale, host.w13_scale, z.w13_scale, "w13_weight_scale");
  copy(d.w13_bias, host.w13_bias, z.w13_bias, "w13_weight_bias");
  copy(d.w2, host.w2_weight, z.w2_weight, "w2_weight");
  copy(d.w2_scale, host.w2_scale, z.w2_scale, "w2_weight_scale");
  copy(d.w2_bias, host.w2_bias, z.w2_bias, "w2_weight_bias");
  d.view = host;
  d.view.w13_weight = d.w13.as<uint8_t>();
  d.view.w13_scale = d.w13_scale.as<uint8_t>();
  d.view.w13_bias = d.w13_bias.as<float>();
  d.view.w2_weight = d.w2.as<uint8_t>();
  d.view.w2_scale = d.w2_scale.as<uint8_t>();
  d.view.w2_bias = d.w2_bias.as<float>();
  return d;
}

DeviceRouter upload_router(const reference::RouterWeights& w, const reference::RouterConfig& rc, int64_t experts,
                           int64_t hidden) {
  if (!w.weight) throw_bad_input("fused_moe: router weight is missing");
  reference::validate_router_config(rc, experts);
  DeviceRouter d;
  d.experts = experts;
  d.hidden = hidden;
  d.weight = DeviceBuffer(static_cast<size_t>(experts * hidden * 2));
  d.weight.upload(w.weight, d.weight.size());
  if (w.bias) {
    d.bias = DeviceBuffer(static_cast<size_t>(experts * 2));
    d.bias.upload(w.bias, d.bias.size());
  }
  d.params.variant = rc.variant;
  d.params.top_k = rc.top_k;
  d.params.renormalize = rc.renormalize;
  d.params.n_group = rc.n_group;
  d.params.topk_group = rc.topk_group;
  d.params.routed_scaling_factor = static_cast<float>(rc.routed_scaling_factor);
  if (!rc.correction_bias.empty()) {
    d.correction_bias = DeviceBuffer(rc.correction_bias.size() * sizeof(float));
    d.correction_bias.upload(rc.correction_bias.data(), d.correction_bias.size());
    d.params.correction_bias = d.correction_bias.as<float>();
  }
  if (!rc.per_expert_scale.empty()) {
    d.per_expert_scale = DeviceBuffer(rc.per_expert_scale.size() * sizeof(float));
    d.per_expert_scale.upload(rc.per_expert_scale.data(), d.per_expert_scale.size());
    d.params.per_expert_scale = d.per_expert_scale.as<float>();
  }
  return d;
}

// ---- workspace -------------------------------------------------------------------------------

MoeWorkspace::MoeWorkspace(const reference::KernelReadyLayer& L, int top_k, int64_t max_tokens)
    : max_tokens_(max_tokens), top_k_(top_k) {
  if (max_tokens < 1 || top_k < 1) throw_bad_input("fused_moe: workspace needs max_tokens >= 1 and top_k >= 1");
  const int64_t T = max_tokens, P = T * top_k, E = L.experts;
  x_perm = DeviceBuffer(static_cast<size_t>(T * L.hidden_pad * 2));
  logits = DeviceBuffer(static_cast<size_t>(T * E * 4));
  topk_weights = DeviceBuffer(static_cast<size_t>(P * 4));
  topk_ids = DeviceBuffer(static_cast<size_t>(P * 4));
  nan_flags = DeviceBuffer(static_cast<size_t>(T));
  expert_counts = DeviceBuffer(static_cast<size_t>(E * 4));
  sorted_pairs = DeviceBuffer(static_cast<size_t>(P * 4));
  slot_of_pair = DeviceBuffer(static_cast<size_t>(P * 4));
  tiles = DeviceBuffer(static_cast<size_t>(max_tiles_for(P, E, 8)) * sizeof(detail::Tile));
  num_tiles = DeviceBuffer(4);
  act = DeviceBuffer(static_cast<size_t>(P * L.intermediate_pad * 2));
  y = DeviceBuffer(static_cast<size_t>(P * L.hidden * 4));
  combine_counters = DeviceBuffer(static_cast<size_t>(detail::combine_counter_count(L.hidden) * 4));
  combine_counters.fill_bytes(0);
  route_counter = DeviceBuffer(4);
  route_counter.fill_bytes(0);
  decode_counters = DeviceBuffer(static_cast<size_t>(detail::decode_down_counter_count(T, L.hidden) * 4));
  decode_counters.fill_bytes(0);
}

reference::Routing MoeWorkspace::download_routing(int64_t tokens) const {
  reference::Routing r;
  r.tokens = tokens;
  r.top_k = top_k_;
  r.ids.resize(static_cast<size_t>(tokens * top_k_));
  r.weights.resize(r.ids.size());
  std::vector<uint8_t> nan(static_cast<size_t>(tokens));
  topk_ids.download(r.ids.data(), r.ids.size() * 4);
  topk_weights.download(r.weights.data(), r.weights.size() * 4);
  nan_flags.download(nan.data(), nan.size());
  for (int64_t t = 0; t < tokens; ++t) {
    if (nan[t]) r.nan_tokens.push_back(t);
  }
  return r;
}

// ---- stage timing ------------------------------------------------------------------------------

StageEvents::StageEvents() {
  for (auto& e : events_) {
    gpuEvent_t ev;
    check(gpuEventCreate(&ev), "creating an event");
    e = ev;
  }
}
StageEvents::~StageEvents() {
  for (auto e : events_) {
    if (e) (void)gpuEventDestroy(static_cast<gpuEvent_t>(e));
  }
}
void StageEvents::record(int i, void* stream) {
  check(gpuEventRecord(static_cast<gpuEvent_t>(events_[i]), as_stream(stream)), "recording an event");
}
StageTimes StageEvents::elapsed() const {
  check(gpuEventSynchronize(static_cast<gpuEvent_t>(events_[kCount - 1])), "waiting for the last event");
  float ms[kCount - 1];
  for (int i = 0; i + 1 < kCount; ++i) {
    check(gpuEventElapsedTime(&ms[i], static_cast<gpuEvent_t>(events_[i]), static_cast<gpuEvent_t>(events_[i + 1])),
          "reading an event");
  }
  return {ms[0], ms[1], ms[2], ms[3], ms[4], ms[5]};
}

// ---- the forward ---------------------------------------------------------------------------------

void enqueue_fused_moe(const DeviceMoeLayer& layer, const DeviceRouter& router, const reference::ActivationParams& act,
                       const uint16_t* x, int64_t tokens, int64_t valid_tokens, MoeWorkspace& ws, float* out,
                       void* stream, const FusedMoeOptions& options, StageEvents* events) {
  const reference::KernelReadyLayer& L = layer.view;
  const int k = router.params.top_k;
  // The layer's w13 rows decide how gate_up reads them ([gate; up] pairs or up rows alone); an
  // activation of the other kind would be computed on misread rows, silently.
  if (L.gated != reference::is_gated(act.kind)) {
    throw_bad_input(std::string("fused_moe: the activation is ") + (reference::is_gated(act.kind) ? "gated" : "non-gated") +
                    " but w13 holds " + (L.gated ? "[gate; up] rows" : "up rows only (non-gated experts)"));
  }
  if (tokens < 0 || tokens > ws.max_tokens()) {
    throw_bad_input("fused_moe: " + std::to_string(tokens) + " tokens outside the workspace's [0, " +
                    std::to_string(ws.max_tokens()) + "]");
  }
  if (valid_tokens < 0 || valid_tokens > tokens) {
    throw_bad_input("fused_moe: valid_tokens " + std::to_string(valid_tokens) + " outside [0, tokens=" +
                    std::to_string(tokens) + "]");
  }
  if (k != ws.top_k()) throw_bad_input("fused_moe: router top_k differs from the workspace's");
  if (router.experts != L.experts || router.hidden != L.hidden) {
    throw_bad_input("fused_moe: router shape [" + std::to_string(router.experts) + ", " +
                    std::to_string(router.hidden) + "] does not match the layer's experts and hidden size");
  }
  if (tokens == 0) return;
  const int64_t P = tokens * k, E = L.experts;
  // Token tile from the mean picks per expert; K split for batches too small to fill the GPU.
  int tile = options.token_tile;
  if (tile == 0) {
    const int64_t mean = (P + E - 1) / E;
    tile = mean <= 8 ? 8 : mean <= 16 ? 16 : mean <= 32 ? 32 : 64;
  }
  int ksplit = options.k_split;
  if (ksplit == 0) ksplit = (P <= 64 && tile <= 16) ? 4 : 1;
#if defined(__HIPCC__)
  const bool small = false;  // mma.sync and warp shuffles: CUDA only
#else
  const bool automatic = options.token_tile == 0 && options.k_split == 0 && options.staged < 0;
  // Automatic up to 32 picks: at 64 (T = 16, top-4) the folded combine's serial tail cost more
  // than the launch it saves (bench/NOTES-fused-moe.md, v9).
  const bool small = !options.simple && (options.small_batch == 1 ||
                                         (options.small_batch < 0 && automatic && P <= detail::kInlineGroupMaxPairs));
  if (small) tile = 8;
#endif
  const bool inline_group = small && P <= detail::kInlineGroupMaxPairs;
  // The decode kernels: automatic up to kDecodeAutoMaxPairs picks (moe_internal.h says why).
#if defined(__HIPCC__)
  const bool decode = false;
  if (options.decode == 1) throw_bad_input("fused_moe: the decode kernels are CUDA only");
#else
  const bool decode =
      !options.simple &&
      (options.decode == 1 || (options.decode < 0 && automatic && options.small_batch < 0 &&
                               P <= detail::kDecodeAutoMaxPairs && detail::decode_supported(L, k, tokens)));
  if (decode && !detail::decode_supported(L, k, tokens)) {
    throw_bad_input("fused_moe: the decode kernels do not take this layer or batch (non-gated experts, top_k " +
                    std::to_string(k) + ", " + std::to_string(tokens) + " tokens)");
  }
#endif
  if (tile != 8 && tile != 16 && tile != 32 && tile != 64) {
    throw_bad_input("fused_moe: token_tile " + std::to_string(tile) + " is not 8, 16, 32 or 64");
  }
  if (ksplit != 1 && ksplit != 4) throw_bad_input("fused_moe: k_split " + std::to_string(ksplit) + " is not 1 or 4");
  // The GEMMs index B rows with 32-bit element offsets.
  if (P * std::max(L.hidden_pad, L.intermediate_pad) >= (int64_t{1} << 32)) {
    throw_bad_input("fused_moe: " + std::to_string(tokens) + " tokens x top_k " + std::to_string(k) +
                    " is too large a batch for one call; split it");
  }

  auto mark = [&](int i) {
    if (events) events->record(i, stream);
  };
  // The route stage in one launch for a few tokens (moe_internal.h, decode route).
  const bool route_fits =
      !options.simple && detail::decode_route_supported(router.params.variant, k, E, tokens, L.hidden, L.hidden_pad, x);
  if (options.fused_route == 1 && !route_fits) {
    throw_bad_input("fused_moe: the fused route takes 1..8 tokens, a softmax router variant, top_k <= 32, E <= 512 "
                    "and H a multiple of 8 under CUDA; not " + std::to_string(tokens) + " tokens, E " +
                    std::to_string(E) + ", top_k " + std::to_string(k));
  }
  const bool fused_route = route_fits && options.fused_route != 0;
  const int route_cluster = options.route_cluster == 0 ? 1 : options.route_cluster;
  if (route_cluster != 1 && (route_cluster != 8 && route_cluster != 16)) {
    throw_bad_input("fused_moe: route_cluster " + std::to_string(options.route_cluster) + " is not 0, 1, 8 or 16");
  }
  if (fused_route && route_cluster != 1 &&
      detail::decode_route_cluster_x_bytes(valid_tokens, L.hidden) > detail::kDecodeRouteClusterMaxXBytes) {
    throw_bad_input("fused_moe: the cluster route stages x in shared memory: " + std::to_string(valid_tokens) +
                    " tokens x H " + std::to_string(L.hidden) + " is too large for it");
  }
  if (fused_route && route_cluster != 1 && !detail::decode_route_cluster_supported(route_cluster)) {
    throw_bad_input("fused_moe: a route cluster of " + std::to_string(route_cluster) +
                    " CTAs needs CUDA on compute capability 9.0 with clusters of that size; this device has none");
  }
  mark(0);
  if (fused_route) {
    detail::DecodeRouteArgs ra;
    ra.x = x;
    ra.w = router.weight.as<uint16_t>();
    ra.bias = router.bias.as<uint16_t>();
    ra.tokens = static_cast<int32_t>(tokens);
    ra.valid = static_cast<int32_t>(valid_tokens);
    ra.experts = static_cast<int32_t>(E);
    ra.hidden = static_cast<int32_t>(L.hidden);
    ra.hidden_pad = static_cast<int32_t>(L.hidden_pad);
    ra.top_k = k;
    ra.variant = router.params.variant;
    ra.renormalize = router.params.renormalize;
    ra.per_expert_scale =
        router.params.variant == reference::RouterVariant::Gemma4 ? router.params.per_expert_scale : nullptr;
    ra.logits = ws.logits.as<float>();
    ra.x_perm = ws.x_perm.as<uint16_t>();
    ra.topk_ids = ws.topk_ids.as<int32_t>();
    ra.topk_weights = ws.topk_weights.as<float>();
    ra.nan_flags = ws.nan_flags.as<uint8_t>();
    ra.counter = ws.route_counter.as<int32_t>();
    ra.cluster = route_cluster == 1 ? 0 : route_cluster;
    detail::launch_decode_route(ra, stream);
    mark(1);
  } else {
    detail::launch_router_logits(x, router.weight.as<uint16_t>(), router.bias.as<uint16_t>(), tokens, valid_tokens,
                                 E, L.hidden, L.hidden_pad, ws.logits.as<float>(), ws.x_perm.as<uint16_t>(), stream);
    mark(1);
    const char* err = launch_fused_router(ws.logits.get(), LogitsDtype::F32, tokens, valid_tokens, E, router.params,
                                          ws.topk_weights.as<float>(), ws.topk_ids.get(), IndexDtype::Int32, nullptr,
                                          ws.nan_flags.as<uint8_t>(), stream);
    if (err && *err) throw_internal(std::string("fused_moe: router: ") + err);
  }
  mark(2);
  if (decode) {
    mark(3);
    detail::DecodeArgs d;
    d.layer = &L;
    d.w13_rows = as_row_table(layer.w13_rows);
    d.w2_rows = as_row_table(layer.w2_rows);
    d.w13_large_scales = layer.w13_rows.large_scales;
    d.w2_large_scales = layer.w2_rows.large_scales;
    d.topk_ids = ws.topk_ids.as<int32_t>();
    d.topk_weights = ws.topk_weights.as<float>();
    d.top_k = k;
    d.tokens = tokens;
    d.valid = valid_tokens;
    d.act = act;
    d.pdl = options.pdl != 0 && pdl_supported();
    if (options.decode_batch < 0 || options.decode_batch > 3) {
      throw_bad_input("fused_moe: decode_batch " + std::to_string(options.decode_batch) + " is not 0, 1, 2 or 3");
    }
    if (options.decode_warps != 0 && options.decode_warps != 4 && options.decode_warps != 8 &&
        options.decode_warps != 12) {
      throw_bad_input("fused_moe: decode_warps " + std::to_string(options.decode_warps) + " is not 0, 4, 8 or 12");
    }
    d.gate_up_warps = options.decode_warps == 0 ? 4 : options.decode_warps;
    // Automatic rounds per batch: 2 with 4 warps (6 blocks per SM), 1 with 8 (4 per SM).
    d.gate_up_batch = options.decode_batch != 0 ? options.decode_batch : d.gate_up_warps == 4 ? 2 : 1;
    if (options.decode_down < 0 || options.decode_down > 4) {
      throw_bad_input("fused_moe: decode_down " + std::to_string(options.decode_down) + " is not 0, 1, 2, 3 or 4");
    }
    if (options.decode_down == 4 && (k > 8 || !pdl_supported())) {
      throw_bad_input("fused_moe: decode_down 4 (the picks combined in a thread-block cluster) needs CUDA on compute "
                      "capability 9.0 and top_k <= 8; not top_k " + std::to_string(k) + " on this device");
    }
    d.down_per_pick = options.decode_down != 1;
    d.down_warps = options.decode_down == 3 ? 4 : 8;
    d.down_cluster = options.decode_down == 4;
    d.y = ws.y.as<float>();
    d.counters = ws.decode_counters.as<int32_t>();
    detail::launch_decode_gate_up(d, ws.x_perm.as<uint16_t>(), ws.act.as<uint16_t>(), stream);
    mark(4);
    detail::launch_decode_down(d, ws.act.as<uint16_t>(), out, stream);
    mark(5);
    mark(6);
    return;
  }
  if (!inline_group) {
    detail::launch_group(ws.topk_ids.as<int32_t>(), P, E, tile, ws.expert_counts.as<int32_t>(),
                         ws.sorted_pairs.as<int32_t>(), ws.slot_of_pair.as<int32_t>(), ws.tiles.as<detail::Tile>(),
                         ws.num_tiles.as<int32_t>(), stream);
  }
  mark(3);
  detail::ExpertGemmArgs g;
  g.layer = &L;
  g.w13_rows = as_row_table(layer.w13_rows);
  g.w2_rows = as_row_table(layer.w2_rows);
  g.w13_large_scales = layer.w13_rows.large_scales;
  g.w2_large_scales = layer.w2_rows.large_scales;
  g.sorted_pairs = ws.sorted_pairs.as<int32_t>();
  g.top_k = k;
  g.tiles = ws.tiles.as<detail::Tile>();
  g.num_tiles = ws.num_tiles.as<int32_t>();
  g.max_tiles = max_tiles_for(P, E, tile);
  g.token_tile = tile;
  g.k_split = ksplit;
  g.simple = options.simple;
  // Direct loads up to tiles of 32 (memory-bound batches), the pipelined GEMM for 64, except on
  // Hopper, where the tiled GEMMs with A from registers (staged 5) ran 1.5x faster at T = 4096
  // (bench/NOTES-fused-moe.md, v11-big). The other tiled GEMMs (staged 3, 4) were no faster
  // than the pipelined one (v10-big), so only an explicit choice takes them.
  int large_tile_gemm = 1;
#if !defined(__HIPCC__)
  // The tiled GEMMs read w13 as [gate; up] pairs: non-gated layers keep the pipelined kernel.
  if (tile >= 64 && options.staged < 0 && !options.simple && L.gated && detail::tiled_registers_automatic()) {
    large_tile_gemm = 5;
  }
#endif
  g.staged = ksplit != 1 ? 0 : options.staged < 0 ? (tile >= 64 ? large_tile_gemm : 0) : options.staged;
  const bool tiled = (g.staged == 3 || g.staged == 4 || g.staged == 5) && !options.simple && !small;
#if defined(__HIPCC__)
  constexpr bool kTiledBuilt = false;
#else
  constexpr bool kTiledBuilt = true;
#endif
  if (tiled && !L.gated) {
    throw_bad_input("fused_moe: the tiled GEMM (staged " + std::to_string(g.staged) +
                    ") takes gated experts only; non-gated (up-only w13) layers run on staged 0, 1 or 2");
  }
  if (tiled && (tile != 64 || !kTiledBuilt)) {
    throw_bad_input("fused_moe: the tiled GEMM (staged 3, 4, 5) takes token tile 64 and k_split 1 under CUDA, not tile " +
                    std::to_string(tile) + " k_split " + std::to_string(ksplit) + " under " MOEPREP_GPU_API);
  }
  g.tiled_rows = options.tiled_rows;
  g.act = act;
  g.small = small;
  g.inline_group = inline_group;
  g.topk_ids = ws.topk_ids.as<int32_t>();
  g.pairs = P;
  g.experts = E;
  g.counts_out = ws.expert_counts.as<int32_t>();
  g.sorted_pairs_out = ws.sorted_pairs.as<int32_t>();
  g.slot_of_pair = ws.slot_of_pair.as<int32_t>();
  g.tiles_out = ws.tiles.as<detail::Tile>();
  g.num_tiles_out = ws.num_tiles.as<int32_t>();
  g.fuse_combine = small;
  g.topk_weights = ws.topk_weights.as<float>();
  g.tokens = tokens;
  g.valid = valid_tokens;
  g.out = out;
  g.counters = ws.combine_counters.as<int32_t>();
#if !defined(__HIPCC__)
  if (tiled) {
    detail::launch_gate_up_tiled(g, ws.x_perm.as<uint16_t>(), ws.act.as<uint16_t>(), stream);
    mark(4);
    detail::launch_down_tiled(g, ws.act.as<uint16_t>(), ws.y.as<float>(), stream);
  } else
#endif
  {
    detail::launch_gate_up(g, ws.x_perm.as<uint16_t>(), ws.act.as<uint16_t>(), stream);
    mark(4);
    detail::launch_down(g, ws.act.as<uint16_t>(), ws.y.as<float>(), stream);
  }
  mark(5);
  if (!small) {
    detail::launch_combine(ws.y.as<float>(), ws.topk_ids.as<int32_t>(), ws.topk_weights.as<float>(),
                           ws.slot_of_pair.as<int32_t>(), tokens, valid_tokens, k, L.hidden, out, stream);
  }
  mark(6);
}

reference::MoeOutput run_fused_moe(const DeviceMoeLayer& layer, const DeviceRouter& router,
                                   const reference::ActivationParams& act, const uint16_t* x_host, int64_t tokens,
                                   int64_t valid_tokens, const FusedMoeOptions& options) {
  reference::MoeOutput result;
  const int64_t H = layer.view.hidden;
  result.out.assign(static_cast<size_t>(tokens * H), 0.0f);
  if (tokens == 0) {
    result.routing.top_k = router.params.top_k;
    return result;
  }
  MoeWorkspace ws(layer.view, router.params.top_k, tokens);
  DeviceBuffer x(static_cast<size_t>(tokens * H * 2)), out(static_cast<size_t>(tokens * H * 4));
  x.upload(x_host, x.size());
  enqueue_fused_moe(layer, router, act, x.as<uint16_t>(), tokens, valid_tokens, ws, out.as<float>(), nullptr, options);
  check(gpuDeviceSynchronize(), "running the fused MoE");
  out.download(result.out.data(), out.size());
  result.routing = ws.download_routing(tokens);
  return result;
}

reference::MoeOutput moe_forward_gpu(const reference::KernelReadyLayer& host_layer,
                                     const reference::RouterWeights& router, const reference::RouterConfig& rc,
                                     const reference::ActivationParams& act, const uint16_t* x, int64_t tokens,
                                     int64_t valid_tokens) {
  const DeviceMoeLayer layer = upload_layer(host_layer);
  const DeviceRouter r = upload_router(router, rc, host_layer.experts, host_layer.hidden);
  return run_fused_moe(layer, r, act, x, tokens, valid_tokens);
}

}  // namespace moeprep::gpu
