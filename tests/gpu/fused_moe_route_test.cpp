// The fused MoE's one-launch route stage (kernels/moe_decode_route.cu: logits by E blocks, the
// last block to arrive routes; or one thread-block cluster of 8 or 16 CTAs on sm_90, CTA 0
// routing from the cluster's shared memory) and the decode kernels' programmatic dependent
// launch, every check for each route layout the device runs: routing
// sets and weights against the CPU router reference for every softmax variant, T = 1..8 with
// padding tokens, exact ties (lower index wins), NaN tokens; repeated calls and CUDA graph
// replays with new inputs (the arrival counter must be back at zero after each); and the PDL
// launches bitwise equal to plain launches, eagerly and under graph replay.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/bf16.h"
#include "kernels/fused_moe.h"
#include "kernels/moe_internal.h"
#include "gpu_test_support.h"
#include "reference/moe.h"
#include "reference/moe_test_support.h"
#include "reference/router.h"

namespace moeprep::gpu {
namespace {

using layout::GateMode;
using reference::ActivationParams;
using reference::RouterConfig;
using reference::RouterVariant;
using reference::Routing;

// E = 128 as gpt-oss-120b; H = 96 (one partial round), I = 64, separated mode.
constexpr int64_t kE = 128, kH = 96, kI = 64, kHp = 256, kIp = 128;

void cuda_ok(cudaError_t err, const char* what) { ASSERT_EQ(err, cudaSuccess) << what << ": " << cudaGetErrorString(err); }

struct Layer {
  moe_testing::GptOssSource src;
  moe_testing::KernelReadyTensors kr;
};

Layer make_layer(uint64_t seed) {
  Layer l;
  l.src = moe_testing::random_gpt_oss_source(kE, kH, kI, seed);
  l.kr = moe_testing::build_kernel_ready(l.src, GateMode::Separated, kHp, kIp);
  return l;
}

// Most tests start from one layer, its device copy and a top-4 softmax_after_topk router: set
// up by make(seed) into the fixture's members.
class FusedMoeRoute : public testing::GpuTest {
 protected:
  void make(uint64_t seed) {
    l = make_layer(seed);
    layer = upload_layer(l.kr.view());
    rc.top_k = 4;
    router = upload_router(l.src.router(), rc, kE, kH);
  }
  Layer l;
  DeviceMoeLayer layer;
  RouterConfig rc;
  DeviceRouter router;
};

FusedMoeOptions options(int fused_route, int pdl, int decode = -1, int route_cluster = 0) {
  FusedMoeOptions o;
  o.fused_route = fused_route;
  o.pdl = pdl;
  o.decode = decode;
  o.route_cluster = route_cluster;
  return o;
}

// The fused route's layouts this device runs: E blocks always, clusters of 8 and 16 CTAs on
// sm_90 (every H100 and H200 does; a note where they are not tested).
std::vector<int> route_layouts() {
  std::vector<int> l{1};
  for (int ctas : {8, 16}) {
    if (detail::decode_route_cluster_supported(ctas)) {
      l.push_back(ctas);
    } else {
      std::printf("note: no thread-block cluster of %d CTAs on this device; that route layout is not tested\n", ctas);
    }
  }
  return l;
}
std::string layout_name(int route_cluster) {
  return route_cluster == 1 ? std::string("E blocks") : "cluster of " + std::to_string(route_cluster);
}

// One forward on a fresh workspace; output and routing (and the arrival counter after it).
struct Result {
  std::vector<float> out;
  Routing routing;
  int32_t counter = -1;
};
Result run(const DeviceMoeLayer& layer, const DeviceRouter& router, const std::vector<uint16_t>& x, int64_t T,
           int64_t valid, const FusedMoeOptions& opt, int calls = 1) {
  MoeWorkspace ws(layer.view, router.params.top_k, T);
  DeviceBuffer xd(x.size() * 2), out(static_cast<size_t>(T * kH * 4));
  xd.upload(x.data(), xd.size());
  Result r;
  for (int i = 0; i < calls; ++i) {
    ws.topk_ids.fill_bytes(0x7F);  // stale ids must be overwritten
    out.fill_bytes(0xFF);
    enqueue_fused_moe(layer, router, ActivationParams{}, xd.as<uint16_t>(), T, valid, ws, out.as<float>(), nullptr,
                      opt);
  }
  r.out.resize(static_cast<size_t>(T * kH));
  out.download(r.out.data(), out.size());
  r.routing = ws.download_routing(T);
  ws.route_counter.download(&r.counter, 4);
  return r;
}

// The GPU routing against reference::route on the CPU's logits: per token the same set of ids
// and, id by id, weights within 1e-5; NaN tokens flagged; padding tokens route nowhere.
void expect_routing(const Routing& gpu, const reference::RouterWeights& rw, const RouterConfig& rc,
                    const std::vector<uint16_t>& x, int64_t T, int64_t valid, const std::string& what) {
  const std::vector<float> logits = reference::router_logits(rw, x.data(), valid, kE, kH);
  const Routing cpu = reference::route(logits.data(), valid, kE, rc);
  const int k = rc.top_k;
  for (int64_t t = 0; t < T; ++t) {
    const bool nan = std::find(cpu.nan_tokens.begin(), cpu.nan_tokens.end(), t) != cpu.nan_tokens.end();
    const bool gpu_nan = std::find(gpu.nan_tokens.begin(), gpu.nan_tokens.end(), t) != gpu.nan_tokens.end();
    EXPECT_EQ(gpu_nan, t < valid && nan) << what << ": NaN flag of token " << t;
    if (t >= valid || nan) {
      for (int j = 0; j < k; ++j) {
        EXPECT_EQ(gpu.ids[t * k + j], -1) << what << ": token " << t << " (padding or NaN) routed";
        EXPECT_EQ(gpu.weights[t * k + j], 0.0f) << what << ": token " << t;
      }
      continue;
    }
    std::vector<std::pair<int32_t, float>> g, c;
    for (int j = 0; j < k; ++j) {
      g.emplace_back(gpu.ids[t * k + j], gpu.weights[t * k + j]);
      c.emplace_back(cpu.ids[t * k + j], cpu.weights[t * k + j]);
    }
    std::sort(g.begin(), g.end());
    std::sort(c.begin(), c.end());
    for (int j = 0; j < k; ++j) {
      EXPECT_EQ(g[j].first, c[j].first) << what << ": token " << t << " picks differ from the CPU router";
      EXPECT_NEAR(g[j].second, c[j].second, 1e-5) << what << ": token " << t << " weight of expert " << c[j].first;
    }
  }
}

TEST_F(FusedMoeRoute, MatchesTheCpuRouterForEverySoftmaxVariantAndOneToEightTokens) {
  const Layer l = make_layer(501);
  const DeviceMoeLayer layer = upload_layer(l.kr.view());
  std::vector<float> scale(kE);
  for (int64_t e = 0; e < kE; ++e) scale[e] = 0.5f + 0.01f * static_cast<float>(e);
  struct Case {
    RouterVariant variant;
    bool renormalize;
    int top_k;
  };
  const Case cases[] = {{RouterVariant::SoftmaxAfterTopk, false, 4},
                        {RouterVariant::SoftmaxAfterTopk, false, 1},
                        {RouterVariant::SoftmaxThenTopk, false, 8},
                        {RouterVariant::SoftmaxThenTopk, true, 4},
                        {RouterVariant::Gemma4, false, 4}};
  for (const Case& c : cases) {
    RouterConfig rc;
    rc.variant = c.variant;
    rc.renormalize = c.renormalize;
    rc.top_k = c.top_k;
    if (c.variant == RouterVariant::Gemma4) rc.per_expert_scale = scale;
    const DeviceRouter router = upload_router(l.src.router(), rc, kE, kH);
    for (int64_t T : {1, 2, 3, 5, 8}) {
      const int64_t valid = T == 5 ? 3 : T == 8 ? 7 : T;
      const auto x = moe_testing::random_activations(T, kH, 600 + T);
      const std::string what = std::string(reference::router_variant_name(c.variant)) + " top_k " +
                               std::to_string(c.top_k) + " T=" + std::to_string(T);
      // The two-launch route: same routing sets, output within rounding.
      const Result plain = run(layer, router, x, T, valid, options(0, -1));
      expect_routing(plain.routing, l.src.router(), rc, x, T, valid, what + " (two launches)");
      for (int rl : route_layouts()) {
        const std::string w = what + ", " + layout_name(rl);
        const Result fused = run(layer, router, x, T, valid, options(1, -1, -1, rl), 3);
        EXPECT_EQ(fused.counter, 0) << w << ": arrival counter not reset";
        expect_routing(fused.routing, l.src.router(), rc, x, T, valid, w);
        EXPECT_LT(moe_testing::rel_err(fused.out, plain.out), 1e-5) << w;
      }
    }
  }
}

TEST_F(FusedMoeRoute, ExactTiesGoToTheLowerIndex) {
  Layer l = make_layer(502);
  // Experts 4, 9 and 20 share weights and bias, far above the rest: top-2 must be {4, 9}. The
  // second router has no bias, and token 1 is all zeros: 128 equal logits, picks 0..k-1.
  for (int64_t h = 0; h < kH; ++h) {
    l.src.router_w[9 * kH + h] = l.src.router_w[4 * kH + h];
    l.src.router_w[20 * kH + h] = l.src.router_w[4 * kH + h];
  }
  for (int64_t e = 0; e < kE; ++e) l.src.router_b[e] = moe_testing::bf16_of(0.0f);
  for (int64_t e : {4, 9, 20}) l.src.router_b[e] = moe_testing::bf16_of(500.0f);
  const DeviceMoeLayer layer = upload_layer(l.kr.view());
  auto x = moe_testing::random_activations(2, kH, 700);
  std::fill(x.begin() + kH, x.end(), uint16_t{0});
  for (const auto& [rl, top_k] : {std::pair{1, 2}, std::pair{1, 4}, std::pair{8, 4}, std::pair{16, 2},
                                 std::pair{16, 4}}) {
    const std::vector<int> layouts = route_layouts();
    if (std::find(layouts.begin(), layouts.end(), rl) == layouts.end()) continue;
    SCOPED_TRACE(layout_name(rl));
    RouterConfig rc;
    rc.top_k = top_k;
    const DeviceRouter biased = upload_router(l.src.router(), rc, kE, kH);
    const Result r = run(layer, biased, x, 2, 2, options(1, -1, -1, rl));
    EXPECT_EQ(r.routing.ids[0], 4);
    EXPECT_EQ(r.routing.ids[1], 9);
    if (top_k == 4) {
      EXPECT_EQ(r.routing.ids[2], 20);
    }
    expect_routing(r.routing, l.src.router(), rc, x, 2, 2, "tie, biased, top_k " + std::to_string(top_k));
    const DeviceRouter unbiased = upload_router({l.src.router_w.data(), nullptr}, rc, kE, kH);
    const Result z = run(layer, unbiased, x, 2, 2, options(1, -1, -1, rl));
    for (int j = 0; j < top_k; ++j) {
      EXPECT_EQ(z.routing.ids[top_k + j], j) << "all-equal logits: pick " << j;
      EXPECT_NEAR(z.routing.weights[top_k + j], 1.0f / top_k, 1e-6f);
    }
    expect_routing(z.routing, {l.src.router_w.data(), nullptr}, rc, x, 2, 2,
                   "tie, no bias, top_k " + std::to_string(top_k));
  }
}

TEST_F(FusedMoeRoute, NanTokenRoutesNowhereAndIsFlagged) {
  make(503);
  auto x = moe_testing::random_activations(3, kH, 800);
  x[kH + 17] = 0x7FC0;  // token 1: a NaN activation makes every logit NaN
  for (int rl : route_layouts()) {
    const Result r = run(layer, router, x, 3, 3, options(1, -1, -1, rl));
    ASSERT_EQ(r.routing.nan_tokens, std::vector<int64_t>{1}) << layout_name(rl);
    expect_routing(r.routing, l.src.router(), rc, x, 3, 3, "NaN token, " + layout_name(rl));
  }
}

TEST_F(FusedMoeRoute, UnsupportedShapesAreRefusedWhenForced) {
  make(504);
  const auto x = moe_testing::random_activations(9, kH, 900);
  try {
    run(layer, router, x, 9, 9, options(1, -1));
    FAIL() << "9 tokens with fused_route = 1 were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fused route takes 1..8 tokens"), std::string::npos) << e.what();
  }
  try {
    run(layer, router, x, 1, 1, options(1, -1, -1, 5));
    FAIL() << "route_cluster 5 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("route_cluster 5 is not 0, 1, 8 or 16"), std::string::npos) << e.what();
  }
  // Automatic: 9 tokens take the two launches and still route right.
  const Result r = run(layer, router, x, 9, 9, FusedMoeOptions{});
  expect_routing(r.routing, l.src.router(), rc, x, 9, 9, "T=9 automatic");
}

// Graph replays of one captured forward with new inputs between them: every replay routes its
// own input (the arrival counter is reset inside the graph), PDL and plain launches give the
// same bits, eager and replayed alike; for each route layout against its own plain forward.
TEST_F(FusedMoeRoute, GraphReplaysAndProgrammaticLaunchesAreBitwiseThePlainForward) {
  make(505);
  for (int rl : route_layouts()) for (int64_t T : {1, 4}) {
    SCOPED_TRACE(layout_name(rl));
    const int64_t valid = T == 4 ? 3 : T;
    // Eager references: plain launches and the two-launch route, fresh workspaces.
    std::vector<std::vector<uint16_t>> xs;
    std::vector<Result> plain;
    for (int i = 0; i < 4; ++i) {
      xs.push_back(moe_testing::random_activations(T, kH, 1000 + 10 * T + i));
      plain.push_back(run(layer, router, xs[i], T, valid, options(1, 0, 1, rl)));
      const Result pdl = run(layer, router, xs[i], T, valid, options(1, 1, 1, rl), 2);
      EXPECT_EQ(std::memcmp(pdl.out.data(), plain[i].out.data(), plain[i].out.size() * 4), 0)
          << "T=" << T << " input " << i << ": PDL launches differ from plain launches";
      EXPECT_EQ(pdl.routing.ids, plain[i].routing.ids);
      expect_routing(plain[i].routing, l.src.router(), rc, xs[i], T, valid, "eager T=" + std::to_string(T));
      const reference::MoeOutput cpu = reference::moe_forward_kernel_layout_cpu(
          l.kr.view(), l.src.router(), rc, ActivationParams{}, xs[i].data(), T, valid);
      EXPECT_LT(moe_testing::rel_err(plain[i].out, cpu.out), testing::kKernelLayoutTolerance) << "T=" << T;
    }
    for (int pdl : {0, 1}) {
      MoeWorkspace ws(layer.view, rc.top_k, T);
      DeviceBuffer xd(xs[0].size() * 2), out(static_cast<size_t>(T * kH * 4));
      cudaStream_t stream;
      cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
      cudaGraph_t graph;
      cudaGraphExec_t exec;
      cuda_ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "begin capture");
      enqueue_fused_moe(layer, router, ActivationParams{}, xd.as<uint16_t>(), T, valid, ws, out.as<float>(), stream,
                        options(1, pdl, 1, rl));
      cuda_ok(cudaStreamEndCapture(stream, &graph), "end capture");
      cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
      for (int rep = 0; rep < 8; ++rep) {
        const int i = rep % 4;
        xd.upload(xs[i].data(), xd.size());
        out.fill_bytes(0xFF);
        cuda_ok(cudaGraphLaunch(exec, stream), "graph launch");
        cuda_ok(cudaStreamSynchronize(stream), "graph sync");
        std::vector<float> got(static_cast<size_t>(T * kH));
        out.download(got.data(), out.size());
        const Routing routing = ws.download_routing(T);
        int32_t counter = -1;
        ws.route_counter.download(&counter, 4);
        std::vector<int32_t> down_counters(ws.decode_counters.size() / 4, -1);
        ws.decode_counters.download(down_counters.data(), ws.decode_counters.size());
        EXPECT_EQ(std::count(down_counters.begin(), down_counters.end(), 0),
                  static_cast<std::ptrdiff_t>(down_counters.size()))
            << "per-pick down arrival counters not reset";
        const std::string what = "graph T=" + std::to_string(T) + " pdl " + std::to_string(pdl) + " replay " +
                                 std::to_string(rep);
        EXPECT_EQ(counter, 0) << what << ": arrival counter not reset";
        EXPECT_EQ(routing.ids, plain[i].routing.ids) << what;
        EXPECT_EQ(std::memcmp(got.data(), plain[i].out.data(), got.size() * 4), 0) << what << ": output differs";
      }
      cuda_ok(cudaGraphExecDestroy(exec), "destroy exec");
      cuda_ok(cudaGraphDestroy(graph), "destroy graph");
      cuda_ok(cudaStreamDestroy(stream), "destroy stream");
    }
  }
}

// The decode gate_up with 1, 2 or 3 K rounds per load batch: the same per-lane sums in the same
// order, so the same bits, and the CPU kernel-layout MoE's result, with 4 (automatic) and 8
// warps (K is one round here, so warp 0 alone sums: the same bits for both; the K split of 4
// warps is FusedMoeDecode.FourWarpGateUpMatchesTheReferencesInEveryBatch's); with 12 warps,
// that result.
TEST_F(FusedMoeRoute, DecodeGateUpBatchesGiveTheSameBits) {
  make(506);
  const auto x = moe_testing::random_activations(1, kH, 1100);
  FusedMoeOptions o = options(-1, -1, 1);
  const Result automatic = run(layer, router, x, 1, 1, o);
  const reference::MoeOutput cpu =
      reference::moe_forward_kernel_layout_cpu(l.kr.view(), l.src.router(), rc, ActivationParams{}, x.data(), 1, 1);
  EXPECT_LT(moe_testing::rel_err(automatic.out, cpu.out), testing::kKernelLayoutTolerance);
  for (int warps : {0, 4, 8}) {
    o.decode_warps = warps;
    for (int batch : {1, 2, 3}) {
      o.decode_batch = batch;
      const Result r = run(layer, router, x, 1, 1, o);
      EXPECT_EQ(std::memcmp(r.out.data(), automatic.out.data(), r.out.size() * 4), 0)
          << "decode_warps " << warps << ", decode_batch " << batch;
    }
  }
  o.decode_warps = 0;
  // 12 K parts: other fp32 sums, the CPU's result; repeated calls bitwise.
  FusedMoeOptions twelve = options(-1, -1, 1);
  twelve.decode_warps = 12;
  const Result r12 = run(layer, router, x, 1, 1, twelve, 2);
  EXPECT_LT(moe_testing::rel_err(r12.out, cpu.out), testing::kKernelLayoutTolerance) << "decode_warps 12";
  const Result r12b = run(layer, router, x, 1, 1, twelve, 1);
  EXPECT_EQ(std::memcmp(r12.out.data(), r12b.out.data(), r12.out.size() * 4), 0) << "decode_warps 12 repeated";
  twelve.decode_warps = 10;
  EXPECT_THROW(run(layer, router, x, 1, 1, twelve), Error);
  o.decode_batch = 4;
  try {
    run(layer, router, x, 1, 1, o);
    FAIL() << "decode_batch 4 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("decode_batch 4"), std::string::npos) << e.what();
  }
}

// The decode down per pick (the last of a row unit's picks combines; 8- or 4-warp blocks; or
// the picks' cluster, bitwise the counter path) and per token (a block sums its token's picks): each against the CPU kernel-layout MoE, padding rows zero, a NaN token's
// row zero, repeated calls bitwise identical; an unknown choice refused.
TEST_F(FusedMoeRoute, DecodeDownPerPickAndPerTokenMatchTheCpu) {
  make(507);
  for (int64_t T : {1, 3, 4}) {
    const int64_t valid = T == 4 ? 3 : T;
    auto x = moe_testing::random_activations(T, kH, 1200 + T);
    if (T == 3) x[2 * kH + 5] = 0x7FC0;  // token 2 NaN: routes nowhere, row zero
    const reference::MoeOutput cpu =
        reference::moe_forward_kernel_layout_cpu(l.kr.view(), l.src.router(), rc, ActivationParams{}, x.data(), T,
                                                 valid);
    std::vector<float> per_pick;
    for (int down : {1, 2, 3, 4}) {
      if (down == 4 && !detail::decode_route_cluster_supported(8)) {
        std::printf("note: no thread-block clusters on this device; decode_down 4 not tested\n");
        continue;
      }
      FusedMoeOptions o = options(-1, -1, 1);
      o.decode_down = down;
      const Result a = run(layer, router, x, T, valid, o, 1);
      const Result b = run(layer, router, x, T, valid, o, 3);
      const std::string what = "T=" + std::to_string(T) + " decode_down " + std::to_string(down);
      EXPECT_LT(moe_testing::rel_err(a.out, cpu.out), testing::kKernelLayoutTolerance) << what;
      EXPECT_EQ(std::memcmp(a.out.data(), b.out.data(), a.out.size() * 4), 0) << what << ": third call differs";
      if (down == 2) per_pick = a.out;
      if (down == 4) {  // the cluster combine: the counter path's arithmetic, so its bits
        EXPECT_EQ(std::memcmp(a.out.data(), per_pick.data(), a.out.size() * 4), 0) << what << ": differs from 2";
      }
      for (int64_t t = 0; t < T; ++t) {
        if (t < valid && !(T == 3 && t == 2)) continue;
        for (int64_t h = 0; h < kH; ++h) ASSERT_EQ(a.out[t * kH + h], 0.0f) << what << ": token " << t;
      }
    }
  }
  FusedMoeOptions o = options(-1, -1, 1);
  o.decode_down = 5;
  const auto x = moe_testing::random_activations(1, kH, 1300);
  try {
    run(layer, router, x, 1, 1, o);
    FAIL() << "decode_down 5 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("decode_down 5"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moeprep::gpu
