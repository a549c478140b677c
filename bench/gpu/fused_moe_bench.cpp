// Fused MXFP4 MoE on a gpt-oss-120b-shaped layer (E = 128, H = I = 2880, top-4; padded to
// H' = 3072, I' = 2944 in the separated mode, I' = 3072 interleaved), timed with device events
// over CUDA-graph replays of the whole forward (router logits to combined output).
//
// Before timing, the GPU output is checked against the CPU kernel-layout MoE on the same
// tensors (T = 2; the CPU path is too slow for more at this size) and the fast kernels at
// T = 512 against the other token-tile size; a failed check exits non-zero.
//
// Counters: median_ms (per layer), layers36_s (36 layers at that time), bytes (what the GEMMs
// must read: every selected expert's w13 rows and the w2 rows below H, with their scales and
// biases, plus activations and output), TBps and copy_frac (against the device-to-device copy
// rate measured by BM_DeviceCopy), TFLOPs (logical 2*T*k*(2IH + HI)).
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "formats/bf16.h"
#include "kernels/fused_moe.h"
#include "reference/moe.h"

namespace {

using namespace moeprep;

constexpr int64_t kE = 128, kH = 2880, kI = 2880, kTopK = 4, kHp = 3072;
constexpr int kInputSets = 8;  // rotated so that successive calls route to different experts

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "fused_moe_bench: %s: %s\n", what, cudaGetErrorString(e));
    std::exit(2);
  }
}

struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double normal() {
    double u1 = (next() >> 11) * 0x1.0p-53, u2 = (next() >> 11) * 0x1.0p-53;
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

void fill_bytes(std::vector<uint8_t>& v, uint64_t seed) {
  Rng r{seed};
  size_t i = 0;
  for (; i + 8 <= v.size(); i += 8) {
    const uint64_t w = r.next();
    std::memcpy(v.data() + i, &w, 8);
  }
  for (; i < v.size(); ++i) v[i] = static_cast<uint8_t>(r.next());
}

// The converter's padding (spec/layouts.md, section 2): weight codes 0 in the padded K bytes
// and padded rows, bias 0 there. The decode kernels do not read it, so the random layer must
// hold it as a converted one does, or the CPU check would count random padding they skip.
// Row n is padding when n % half_rows >= logical_rows (w13: each of gate and up padded to I').
void zero_padding(std::vector<uint8_t>& w, std::vector<float>& bias, const layout::WeightTileLayout& wl,
                  int64_t experts, int64_t half_rows, int64_t logical_rows, int64_t logical_kbytes) {
  for (int64_t e = 0; e < experts; ++e) {
    for (int64_t n = 0; n < wl.rows; ++n) {
      const bool row_pad = n % half_rows >= logical_rows;
      if (row_pad) bias[e * wl.rows + n] = 0.0f;
      // 16-byte runs are contiguous in both gate modes; logical_kbytes is a multiple of 16 here.
      for (int64_t kb = row_pad ? 0 : logical_kbytes; kb < wl.kbytes; kb += 16) {
        std::memset(w.data() + wl.offset(e, n, kb), 0, 16);
      }
    }
  }
}

// Random kernel-ready tensors of one layer. Their content is random bytes in the shuffled
// layout (a random tensor shuffled is a random tensor), the padding zero (zero_padding above);
// scales in [118, 122] keep activations away from GPT-OSS's clamp, so that the correctness
// check means something.
struct HostLayer {
  reference::KernelReadyLayer view;
  std::vector<uint8_t> w13, s13, w2, s2;
  std::vector<float> b13, b2;
  std::vector<uint16_t> router_w, router_b;
};

std::unique_ptr<HostLayer> make_host_layer(layout::GateMode mode) {
  auto h = std::make_unique<HostLayer>();
  reference::KernelReadyLayer& v = h->view;
  v.mode = mode;
  v.experts = kE;
  v.hidden = kH;
  v.intermediate = kI;
  v.hidden_pad = kHp;
  v.intermediate_pad = mode == layout::GateMode::Separated ? 2944 : 3072;
  const int64_t Ip = v.intermediate_pad;
  v.w13_scale_cols = mode == layout::GateMode::Separated ? (kHp / 32 + 7) / 8 * 8 : kHp / 32;
  v.w2_scale_cols = mode == layout::GateMode::Separated ? (Ip / 32 + 7) / 8 * 8 : Ip / 32;
  // Sizes from the library's own check, so the buffers match what upload_layer copies.
  v.w13_weight = v.w13_scale = v.w2_weight = v.w2_scale = nullptr;
  const reference::KernelReadySizes z = reference::check_kernel_ready_layer(v);
  h->w13.resize(z.w13_weight);
  h->w2.resize(z.w2_weight);
  h->s13.resize(z.w13_scale);
  h->s2.resize(z.w2_scale);
  fill_bytes(h->w13, 1);
  fill_bytes(h->w2, 2);
  Rng r{3};
  for (auto& s : h->s13) s = static_cast<uint8_t>(118 + r.next() % 5);
  for (auto& s : h->s2) s = static_cast<uint8_t>(118 + r.next() % 5);
  h->b13.resize(z.w13_bias / 4);
  h->b2.resize(z.w2_bias / 4);
  for (auto& b : h->b13) b = static_cast<float>(0.1 * r.normal());
  for (auto& b : h->b2) b = static_cast<float>(0.1 * r.normal());
  h->router_w.resize(kE * kH);
  h->router_b.resize(kE);
  for (auto& w : h->router_w) w = float_to_bf16(static_cast<float>(0.02 * r.normal()));
  for (auto& b : h->router_b) b = float_to_bf16(static_cast<float>(0.1 * r.normal()));
  static_assert(kH % 32 == 0 && kI % 32 == 0, "zero_padding clears whole 16-byte runs");
  zero_padding(h->w13, h->b13, {mode, true, 2 * Ip, kHp / 2}, kE, Ip, kI, kH / 2);
  zero_padding(h->w2, h->b2, {mode, false, kHp, Ip / 2}, kE, kHp, kH, kI / 2);
  v.w13_weight = h->w13.data();
  v.w13_scale = h->s13.data();
  v.w13_bias = h->b13.data();
  v.w2_weight = h->w2.data();
  v.w2_scale = h->s2.data();
  v.w2_bias = h->b2.data();
  return h;
}

std::vector<uint16_t> random_x(int64_t T, uint64_t seed) {
  Rng r{seed};
  std::vector<uint16_t> x(static_cast<size_t>(T * kH));
  for (auto& v : x) v = float_to_bf16(static_cast<float>(r.normal()));
  return x;
}

double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// One layer on the device plus the router, shared by all benchmarks of a gate mode.
struct DeviceSetup {
  HostLayer* host = nullptr;
  gpu::DeviceMoeLayer layer;
  gpu::DeviceRouter router;
  reference::RouterConfig rc;
};

DeviceSetup& setup(layout::GateMode mode) {
  static std::unique_ptr<DeviceSetup> sep, inter;
  std::unique_ptr<DeviceSetup>& s = mode == layout::GateMode::Separated ? sep : inter;
  if (!s) {
    // One layer on the device at a time (1.7 GB each).
    sep.reset();
    inter.reset();
    static std::unique_ptr<HostLayer> host_sep, host_inter;  // generated once, re-uploaded
    std::unique_ptr<HostLayer>& h = mode == layout::GateMode::Separated ? host_sep : host_inter;
    if (!h) h = make_host_layer(mode);
    s = std::make_unique<DeviceSetup>();
    s->host = h.get();
    s->rc.top_k = kTopK;
    s->layer = gpu::upload_layer(s->host->view);
    s->router = gpu::upload_router({s->host->router_w.data(), s->host->router_b.data()}, s->rc, kE, kH);
  }
  return *s;
}

double g_copy_tbps = 0;  // set by BM_DeviceCopy, which runs first

// Graph of one forward per input set, replayed in rotation.
struct Runner {
  int64_t T;
  gpu::MoeWorkspace ws;
  std::vector<gpu::DeviceBuffer> x;
  gpu::DeviceBuffer out;
  cudaStream_t stream = nullptr;
  std::vector<cudaGraphExec_t> graphs;
  std::vector<int64_t> distinct_experts;

  Runner(DeviceSetup& s, int64_t tokens, const gpu::FusedMoeOptions& opt)
      : T(tokens), ws(s.layer.view, kTopK, tokens), out(static_cast<size_t>(tokens * kH * 4)) {
    cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
    for (int i = 0; i < kInputSets; ++i) {
      const auto xh = random_x(T, 100 + i);
      x.emplace_back(xh.size() * 2);
      x.back().upload(xh.data(), xh.size() * 2);
      // Run once eagerly (warms up, and gives the routing for the byte count).
      gpu::enqueue_fused_moe(s.layer, s.router, {}, x.back().as<uint16_t>(), T, T, ws, out.as<float>(), stream, opt);
      cuda_check(cudaStreamSynchronize(stream), "warm-up");
      const reference::Routing r = ws.download_routing(T);
      distinct_experts.push_back(static_cast<int64_t>(std::set<int32_t>(r.ids.begin(), r.ids.end()).size()));
      cudaGraph_t g;
      cuda_check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "begin capture");
      gpu::enqueue_fused_moe(s.layer, s.router, {}, x.back().as<uint16_t>(), T, T, ws, out.as<float>(), stream, opt);
      cuda_check(cudaStreamEndCapture(stream, &g), "end capture");
      cudaGraphExec_t e;
      cuda_check(cudaGraphInstantiate(&e, g, 0), "instantiate");
      cuda_check(cudaGraphDestroy(g), "graph destroy");
      graphs.push_back(e);
    }
  }
  ~Runner() {
    for (auto g : graphs) cudaGraphExecDestroy(g);
    cudaStreamDestroy(stream);
  }
};

// Bytes the GEMMs must read for one expert: all 2I' rows of w13 (K' = H' bytes/2 each) with
// their scales, the w2 rows below H with theirs, and the biases.
double expert_bytes(const reference::KernelReadyLayer& v) {
  const double w13 = 2.0 * v.intermediate_pad * (v.hidden_pad / 2 + v.hidden_pad / 32 + 4);
  const double w2 = static_cast<double>(v.hidden) * (v.intermediate_pad / 2 + v.intermediate_pad / 32 + 4);
  return w13 + w2;
}

void BM_DeviceCopy(benchmark::State& state) {
  const size_t bytes = size_t{1} << 30;
  gpu::DeviceBuffer a(bytes), b(bytes);
  a.fill_bytes(1);
  cudaEvent_t e0, e1;
  cuda_check(cudaEventCreate(&e0), "event");
  cuda_check(cudaEventCreate(&e1), "event");
  std::vector<float> times;
  for (auto _ : state) {
    cuda_check(cudaEventRecord(e0), "record");
    cuda_check(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice), "copy");
    cuda_check(cudaEventRecord(e1), "record");
    cuda_check(cudaEventSynchronize(e1), "sync");
    float ms = 0;
    cuda_check(cudaEventElapsedTime(&ms, e0, e1), "elapsed");
    state.SetIterationTime(ms / 1e3);
    times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  const double med = times[times.size() / 2];
  g_copy_tbps = 2.0 * bytes / (med / 1e3) / 1e12;  // read + write
  state.counters["median_ms"] = med;
  state.counters["TBps"] = g_copy_tbps;
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
}
BENCHMARK(BM_DeviceCopy)->UseManualTime()->Iterations(20)->Unit(benchmark::kMillisecond);

void run_moe(benchmark::State& state, layout::GateMode mode, const gpu::FusedMoeOptions& opt = {}) {
  const int64_t T = state.range(0);
  DeviceSetup& s = setup(mode);
  Runner run(s, T, opt);
  cudaEvent_t e0, e1;
  cuda_check(cudaEventCreate(&e0), "event");
  cuda_check(cudaEventCreate(&e1), "event");
  std::vector<float> times;
  int i = 0;
  for (auto _ : state) {
    const int set = i++ % kInputSets;
    cuda_check(cudaEventRecord(e0, run.stream), "record");
    cuda_check(cudaGraphLaunch(run.graphs[set], run.stream), "graph launch");
    cuda_check(cudaEventRecord(e1, run.stream), "record");
    cuda_check(cudaEventSynchronize(e1), "sync");
    float ms = 0;
    cuda_check(cudaEventElapsedTime(&ms, e0, e1), "elapsed");
    state.SetIterationTime(ms / 1e3);
    times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  const double med = times[times.size() / 2];
  double experts = 0;
  for (int64_t d : run.distinct_experts) experts += d;
  experts /= run.distinct_experts.size();
  const double bytes = experts * expert_bytes(s.layer.view) + T * kH * (2.0 + 4.0) + kE * kH * 2.0;
  const double flops = 2.0 * T * kTopK * (2.0 * kI * kH + kH * kI);
  state.counters["median_ms"] = med;
  state.counters["layers36_s"] = 36 * med / 1e3;
  state.counters["experts"] = experts;
  state.counters["bytes"] = bytes;
  state.counters["TBps"] = bytes / (med / 1e3) / 1e12;
  if (g_copy_tbps > 0) state.counters["copy_frac"] = bytes / (med / 1e3) / 1e12 / g_copy_tbps;
  state.counters["TFLOPs"] = flops / (med / 1e3) / 1e12;

  // Stream time: the same forward enqueued eagerly (no graph), median of 30 calls; graph replay
  // (median_ms) saves the host's launch work, stream_ms is what a caller without graphs sees.
  {
    std::vector<float> st;
    for (int j = 0; j < 30; ++j) {
      cuda_check(cudaEventRecord(e0, run.stream), "record");
      gpu::enqueue_fused_moe(s.layer, s.router, {}, run.x[j % kInputSets].as<uint16_t>(), T, T, run.ws,
                             run.out.as<float>(), run.stream, opt);
      cuda_check(cudaEventRecord(e1, run.stream), "record");
      cuda_check(cudaEventSynchronize(e1), "sync");
      float ms = 0;
      cuda_check(cudaEventElapsedTime(&ms, e0, e1), "elapsed");
      st.push_back(ms);
    }
    std::sort(st.begin(), st.end());
    state.counters["stream_ms"] = st[st.size() / 2];
  }

  // Stage breakdown of one eager call (not graph-replayed, so launch gaps are included).
  gpu::StageEvents ev;
  gpu::enqueue_fused_moe(s.layer, s.router, {}, run.x[0].as<uint16_t>(), T, T, run.ws, run.out.as<float>(),
                         run.stream, opt, &ev);
  const gpu::StageTimes st = ev.elapsed();
  state.counters["gate_up_ms"] = st.gate_up_ms;
  state.counters["down_ms"] = st.down_ms;
  state.counters["route_group_ms"] = st.logits_ms + st.route_ms + st.group_ms;
  state.counters["combine_ms"] = st.combine_ms;
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
}

// The timed configurations, registered in this order under these names (gpu-check's summary and
// bench/NOTES-fused-moe.md refer to them). Each sets the options it forces; the rest stay
// automatic, so BM_FusedMoeSeparated is what a caller gets. Where a row has a second argument,
// `second` names it and `set` receives it.
struct TimedConfig {
  const char* name;
  layout::GateMode mode;
  std::function<void(gpu::FusedMoeOptions& opt, int64_t second)> set;
  std::vector<std::vector<int64_t>> args;  // {T} or {T, second}
  const char* second = nullptr;
};

constexpr auto kSeparated = layout::GateMode::Separated;
constexpr auto kInterleave = layout::GateMode::Interleave;
void automatic(gpu::FusedMoeOptions&, int64_t) {}
// The GEMM kernel choice forced: `staged` (fused_moe.h), and the tiled kernels' rows per block
// (0: their default, 128).
std::function<void(gpu::FusedMoeOptions&, int64_t)> gemm(int staged, int tiled_rows = 0) {
  return [=](gpu::FusedMoeOptions& o, int64_t) {
    o.staged = staged;
    o.tiled_rows = tiled_rows;
  };
}

const std::vector<TimedConfig>& timed_configs() {
  using O = gpu::FusedMoeOptions;
  static const std::vector<TimedConfig> configs = {
      {"BM_FusedMoeSeparated", kSeparated, automatic, {{1}, {16}, {64}, {512}, {2048}, {4096}}},
      {"BM_FusedMoeSeparatedStaged3", kSeparated, gemm(2), {{4096}}},
      // The pipelined kernel (staged 1), the automatic choice for tile 64, forced.
      {"BM_FusedMoeSeparatedPipelined", kSeparated, gemm(1), {{2048}, {4096}}},
      // The tiled GEMMs: wgmma on Hopper with 128 rows per block (staged 3), wgmma reading A from
      // registers (staged 5; v11-big in the notes), 256 rows per block (1 block of 16 warps per
      // SM), and mma.sync (staged 4), on the same card.
      {"BM_FusedMoeSeparatedTiled", kSeparated, gemm(3), {{2048}, {4096}}},
      {"BM_FusedMoeSeparatedTiledRegs", kSeparated, gemm(5), {{2048}, {4096}}},
      {"BM_FusedMoeSeparatedTiledRegs256", kSeparated, gemm(5, 256), {{4096}}},
      {"BM_FusedMoeInterleaveTiledRegs", kInterleave, gemm(5), {{4096}}},
      {"BM_FusedMoeSeparatedTiledMma", kSeparated, gemm(4), {{4096}}},
      {"BM_FusedMoeSeparatedTiled256", kSeparated, gemm(3, 256), {{4096}}},
      // The GEMMs forced onto the direct-load kernels (the shared-memory pipeline's gain).
      {"BM_FusedMoeSeparatedDirect", kSeparated, gemm(0), {{512}, {4096}}},
      // Small batches without the folded stages (separate grouping and combine launches).
      {"BM_FusedMoeSeparatedUnfolded", kSeparated, [](O& o, int64_t) { o.small_batch = 0; }, {{1}, {16}}},
      // The decode kernels (automatic up to 4 picks) against the small-batch kernels (decode = 0:
      // the v9 path).
      {"BM_FusedMoeSeparatedDecode", kSeparated, [](O& o, int64_t) { o.decode = 1; }, {{2}, {4}, {8}}},
      {"BM_FusedMoeSeparatedNoDecode", kSeparated, [](O& o, int64_t) { o.decode = 0; }, {{1}, {8}}},
      // The decode path's route stage and launches (v11, v12): the automatic choice is a fused
      // route with PDL; these turn one or both off.
      {"BM_FusedMoeSeparatedTwoLaunchRoute", kSeparated, [](O& o, int64_t) { o.fused_route = 0; }, {{1}, {2}}},
      {"BM_FusedMoeSeparatedNoPdl", kSeparated, [](O& o, int64_t) { o.pdl = 0; }, {{1}}},
      {"BM_FusedMoeSeparatedNoPdlTwoLaunchRoute", kSeparated,
       [](O& o, int64_t) {
         o.pdl = 0;
         o.fused_route = 0;
       },
       {{1}}},
      // The decode gate_up with 8-warp blocks (v19's automatic choice with 1 round per batch: 4
      // blocks per SM), 3, 2 or 1 K rounds per load batch (2, 3 or 4 blocks per SM).
      {"BM_FusedMoeSeparatedDecodeBatch", kSeparated,
       [](O& o, int64_t batch) {
         o.decode_warps = 8;
         o.decode_batch = static_cast<int>(batch);
       },
       {{1, 3}, {1, 2}, {1, 1}}, "batch"},
      // The decode down with a block per (16 rows, token) (v10-decode's) instead of per pick.
      {"BM_FusedMoeSeparatedDecodeDownPerToken", kSeparated, [](O& o, int64_t) { o.decode_down = 1; }, {{1}, {2}}},
      // The decode gate_up with 12-warp blocks, 2 rounds per batch.
      {"BM_FusedMoeSeparatedDecodeGateUp12Warps", kSeparated, [](O& o, int64_t) { o.decode_warps = 12; }, {{1}}},
      // The decode gate_up with 4-warp blocks, 1 or 3 rounds per batch (8 or 4 blocks per SM; 2,
      // the automatic choice, is BM_FusedMoeSeparated).
      {"BM_FusedMoeSeparatedDecodeGateUp4Warps", kSeparated,
       [](O& o, int64_t batch) {
         o.decode_warps = 4;
         o.decode_batch = static_cast<int>(batch);
       },
       {{1, 1}, {1, 3}}, "batch"},
      // The per-pick decode down with 4-warp blocks (8 per SM: one wave at T = 1).
      {"BM_FusedMoeSeparatedDecodeDown4Warps", kSeparated, [](O& o, int64_t) { o.decode_down = 3; }, {{1}}},
      // The route stage in one thread-block cluster of 16 or 8 CTAs (v16-decode) instead of E
      // blocks (H100, 2026-11-26, same run, x staged in shared memory: 42.9 / 44.2 us vs 42.0
      // automatic).
      {"BM_FusedMoeSeparatedRouteCluster", kSeparated,
       [](O& o, int64_t ctas) { o.route_cluster = static_cast<int>(ctas); }, {{1, 16}, {1, 8}}, "ctas"},
      // The per-pick decode down with the picks combined in a thread-block cluster (v17-decode),
      // alone and with the 16-CTA cluster route (H100, 2026-11-26: 42.4 us vs 41.7 automatic, same
      // run; with the staged-x cluster route 44.0 vs 42.0, same run).
      {"BM_FusedMoeSeparatedDecodeDownCluster", kSeparated,
       [](O& o, int64_t route) {
         o.decode_down = 4;
         o.route_cluster = static_cast<int>(route);
       },
       {{1, 0}, {1, 16}}, "route"},
      // v10-decode's configuration (two-launch route, plain launches, 3 rounds per batch, down per
      // token): the baseline in the same run.
      {"BM_FusedMoeSeparatedDecodeV10", kSeparated,
       [](O& o, int64_t) {
         o.fused_route = 0;
         o.pdl = 0;
         o.decode_warps = 8;
         o.decode_batch = 3;
         o.decode_down = 1;
       },
       {{1}}},
      {"BM_FusedMoeInterleave", kInterleave, automatic, {{1}, {64}, {4096}}},
  };
  return configs;
}

void register_timed_configs() {
  for (const TimedConfig& c : timed_configs()) {
    auto* b = benchmark::RegisterBenchmark(c.name, [&c](benchmark::State& state) {
      gpu::FusedMoeOptions opt;
      c.set(opt, c.second ? state.range(1) : 0);
      run_moe(state, c.mode, opt);
    });
    if (c.second) {
      b->ArgNames({"T", c.second});
    } else {
      b->ArgName("T");
    }
    for (const auto& a : c.args) b->Args(a);
    b->UseManualTime()->MinTime(0.3)->Unit(benchmark::kMillisecond);
  }
}

// GPU vs CPU kernel-layout MoE on the benchmark's own layer; fast tiles against each other.
bool check_correctness(layout::GateMode mode) {
  DeviceSetup& s = setup(mode);
  bool ok = true;
  {
    const int64_t T = 2;
    const auto x = random_x(T, 7);
    const reference::MoeOutput gpu = gpu::run_fused_moe(s.layer, s.router, {}, x.data(), T, T);
    const reference::MoeOutput cpu = reference::moe_forward_kernel_layout_cpu(
        s.host->view, {s.host->router_w.data(), s.host->router_b.data()}, s.rc, {}, x.data(), T, T);
    const double err = rel_err(gpu.out, cpu.out);
    const bool same_routing = gpu.routing.ids == cpu.routing.ids;
    std::printf("check %s T=%lld: GPU vs CPU kernel-layout rel err %.3e, routing %s\n",
                mode == layout::GateMode::Separated ? "separated" : "interleave", static_cast<long long>(T), err,
                same_routing ? "identical" : "DIFFERENT");
    ok = ok && err < 1e-3 && same_routing;
  }
  if (mode == layout::GateMode::Separated) {  // the route in one cluster (v16-decode) at this layer's shape
    const auto x = random_x(1, 9);
    gpu::FusedMoeOptions cl;
    cl.route_cluster = 16;
    try {
      const auto g0 = gpu::run_fused_moe(s.layer, s.router, {}, x.data(), 1, 1);
      const auto g1 = gpu::run_fused_moe(s.layer, s.router, {}, x.data(), 1, 1, cl);
      const double err = rel_err(g1.out, g0.out);
      const bool same = g1.routing.ids == g0.routing.ids;
      std::printf("check T=1: route cluster 16 vs E blocks rel err %.3e, routing %s\n", err,
                  same ? "identical" : "DIFFERENT");
      ok = ok && err < 1e-5 && same;
      gpu::FusedMoeOptions dc;
      dc.decode_down = 4;
      const auto g2 = gpu::run_fused_moe(s.layer, s.router, {}, x.data(), 1, 1, dc);
      const bool bits = g2.out == g0.out;
      std::printf("check T=1: down cluster combine vs counter %s\n", bits ? "bitwise equal" : "DIFFERENT");
      ok = ok && bits;
    } catch (const std::exception& e) {
      std::printf("check T=1: route cluster 16 / down cluster not run: %s\n", e.what());
    }
  }
  {
    const int64_t T = 512;
    const auto x = random_x(T, 8);
    gpu::FusedMoeOptions a, b, c;
    a.token_tile = 8;
    b.token_tile = 64;
    b.staged = 1;  // the pipelined kernel: the same per-lane sums as tile 8
    c.token_tile = 64;
    c.staged = 3;  // the tiled GEMMs: other fp32 sum orders, so act's bf16 rounding can differ
    const auto ga = gpu::run_fused_moe(s.layer, s.router, {}, x.data(), T, T, a);
    const auto gb = gpu::run_fused_moe(s.layer, s.router, {}, x.data(), T, T, b);
    const auto gc = gpu::run_fused_moe(s.layer, s.router, {}, x.data(), T, T, c);
    const double err = rel_err(ga.out, gb.out), err_tiled = rel_err(ga.out, gc.out);
    std::printf("check T=512: token tile 8 vs 64 rel err %.3e, vs 64 tiled %.3e\n", err, err_tiled);
    ok = ok && err < 1e-5 && err_tiled < 1e-3;
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  std::string why;
  if (!gpu::gpu_available(&why)) {
    std::printf("fused_moe_bench: skipped: %s\n", why.c_str());
    return 0;
  }
  cudaDeviceProp prop{};
  cuda_check(cudaGetDeviceProperties(&prop, 0), "device properties");
  std::printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  benchmark::Initialize(&argc, argv);
  register_timed_configs();
  // MOEPREP_BENCH_SKIP_CHECK=1 (profiling runs of a build whose checks already ran): no checks.
  const bool skip_check = std::getenv("MOEPREP_BENCH_SKIP_CHECK") != nullptr;
  bool ok = skip_check || check_correctness(layout::GateMode::Separated);
  ok = skip_check || (check_correctness(layout::GateMode::Interleave) && ok);
  // MOEPREP_BENCH_TIME_ANYWAY=1 times a failing kernel too (still exits non-zero).
  const char* anyway = std::getenv("MOEPREP_BENCH_TIME_ANYWAY");
  if (!ok) {
    std::printf("fused_moe_bench: correctness check FAILED%s\n", anyway ? "; timing anyway" : "; not timing");
    if (!anyway) return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return ok ? 0 : 1;
}
