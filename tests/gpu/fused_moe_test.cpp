// The fused MXFP4 MoE on the GPU against the CPU reference (dense, from the source tensors) and
// the CPU kernel-layout MoE, on layers built with the converter's layout steps: both gate modes,
// T in {1, 7, 64, 512}, every kernel configuration, poisoned outputs, padding tokens, NaN
// tokens, determinism, and the corruptions verify must catch.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/bf16.h"
#include "kernels/fused_moe.h"
#include "gpu_test_support.h"
#include "reference/moe.h"
#include "reference/moe_test_support.h"

namespace moeprep::gpu {
namespace {

using layout::GateMode;
using moe_testing::Corruption;
using reference::ActivationParams;
using reference::MoeOutput;
using reference::RouterConfig;

using testing::kKernelLayoutTolerance;
using testing::kThreshold;

class FusedMoeGpu : public testing::GpuTest {};

struct Shape {
  int64_t E, H, I, top_k;
  int64_t Hp_sep, Ip_sep, Hp_int, Ip_int;
};
// The CPU tests' layer, and a wider one with several row groups, 5 and 6 K rounds and a K of
// 320 (half a final round) in the separated mode.
constexpr Shape kSmall{4, 96, 64, 2, 256, 128, 256, 256};
constexpr Shape kWide{16, 608, 288, 4, 640, 320, 768, 512};

RouterConfig router_config(int64_t k) {
  RouterConfig rc;
  rc.top_k = static_cast<int>(k);
  return rc;
}

struct Layer {
  moe_testing::GptOssSource src;
  reference::DenseMoeLayer dense;
  moe_testing::KernelReadyTensors kr;
};

Layer make_layer(const Shape& s, GateMode mode, uint64_t seed, Corruption c = Corruption::None) {
  Layer l;
  l.src = moe_testing::random_gpt_oss_source(s.E, s.H, s.I, seed);
  l.dense = l.src.dense();
  const bool sep = mode == GateMode::Separated;
  l.kr = moe_testing::build_kernel_ready(l.src, mode, sep ? s.Hp_sep : s.Hp_int, sep ? s.Ip_sep : s.Ip_int, c);
  return l;
}

// Runs the GPU forward into a NaN-poisoned output buffer; every element must be overwritten.
MoeOutput run_poisoned(const reference::KernelReadyLayer& view, const moe_testing::GptOssSource& src,
                       const RouterConfig& rc, const std::vector<uint16_t>& x, int64_t T, int64_t valid,
                       const FusedMoeOptions& opt = {}) {
  const DeviceMoeLayer layer = upload_layer(view);
  const DeviceRouter router = upload_router(src.router(), rc, view.experts, view.hidden);
  MoeWorkspace ws(view, rc.top_k, T);
  DeviceBuffer xd(x.size() * 2), out(static_cast<size_t>(T * view.hidden * 4));
  xd.upload(x.data(), xd.size());
  out.fill_bytes(0xFF);  // NaN everywhere
  ws.act.fill_bytes(0xFF);
  ws.y.fill_bytes(0xFF);
  enqueue_fused_moe(layer, router, ActivationParams{}, xd.as<uint16_t>(), T, valid, ws, out.as<float>(), nullptr, opt);
  MoeOutput o;
  o.out.resize(static_cast<size_t>(T * view.hidden));
  out.download(o.out.data(), out.size());
  o.routing = ws.download_routing(T);
  return o;
}

void expect_all_finite(const std::vector<float>& v, const char* what) {
  size_t bad = 0;
  for (float f : v) bad += !std::isfinite(f);
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " elements not written (poison left) or not finite";
}

void expect_same_routing(const reference::Routing& got, const reference::Routing& want, int64_t E) {
  const std::vector<float> a = reference::routing_to_dense(got, E), b = reference::routing_to_dense(want, E);
  ASSERT_EQ(a.size(), b.size());
  size_t differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ += std::abs(a[i] - b[i]) > 1e-5f;
  EXPECT_EQ(differ, 0u) << "routing differs from the CPU router in " << differ << " (token, expert) entries";
}

const char* mode_name(GateMode m) { return m == GateMode::Separated ? "separated" : "interleave"; }

TEST_F(FusedMoeGpu, MatchesTheReferenceInBothModes) {
  for (const Shape& s : {kSmall, kWide}) {
    for (GateMode mode : {GateMode::Separated, GateMode::Interleave}) {
      const Layer l = make_layer(s, mode, 40 + s.E);
      const RouterConfig rc = router_config(s.top_k);
      for (int64_t T : {1, 7, 64, 512}) {
        if (s.E == kWide.E && T == 7) continue;  // the wide layer's CPU reference is the slow part
        const auto x = moe_testing::random_activations(T, s.H, 1000 + T);
        const MoeOutput gpu = run_poisoned(l.kr.view(), l.src, rc, x, T, T);
        const MoeOutput ref = reference::moe_forward_reference(l.dense, l.src.router(), rc, ActivationParams{},
                                                               x.data(), T, T);
        const MoeOutput cpu = reference::moe_forward_kernel_layout_cpu(l.kr.view(), l.src.router(), rc,
                                                                       ActivationParams{}, x.data(), T, T);
        expect_all_finite(gpu.out, "output");
        expect_same_routing(gpu.routing, ref.routing, s.E);
        const double err_ref = moe_testing::rel_err(gpu.out, ref.out);
        const double err_cpu = moe_testing::rel_err(gpu.out, cpu.out);
        std::printf("GPU fused MoE E=%lld H=%lld I=%lld %s T=%lld: rel err vs reference %.3e, vs kernel-layout CPU %.3e\n",
                    static_cast<long long>(s.E), static_cast<long long>(s.H), static_cast<long long>(s.I),
                    mode_name(mode), static_cast<long long>(T), err_ref, err_cpu);
        EXPECT_LT(err_ref, kThreshold) << mode_name(mode) << " T=" << T;
        EXPECT_LT(err_cpu, kKernelLayoutTolerance) << mode_name(mode) << " T=" << T;
      }
    }
  }
}

// Every tile size and K split, and the simple kernels, compute the same function.
TEST_F(FusedMoeGpu, EveryKernelConfigurationAgrees) {
  for (GateMode mode : {GateMode::Separated, GateMode::Interleave}) {
    const Layer l = make_layer(kWide, mode, 77);
    const RouterConfig rc = router_config(kWide.top_k);
    const int64_t T = 96;
    const auto x = moe_testing::random_activations(T, kWide.H, 5);
    const MoeOutput cpu = reference::moe_forward_kernel_layout_cpu(l.kr.view(), l.src.router(), rc,
                                                                   ActivationParams{}, x.data(), T, T);
    std::vector<FusedMoeOptions> configs;
    for (int tile : {8, 16, 32, 64}) {
      configs.push_back({tile, 1, 0, false});  // direct loads
      configs.push_back({tile, 1, 1, false});  // shared-memory pipeline
    }
    configs.push_back({64, 1, 2, false});  // pipeline, 3-blocks-per-SM register budget
    configs.push_back({8, 4, 0, false});
    configs.push_back({16, 4, 0, false});
    configs.push_back({8, 1, 0, true});
    configs.push_back({64, 1, 0, true});
    for (const FusedMoeOptions& opt : configs) {
      const MoeOutput gpu = run_poisoned(l.kr.view(), l.src, rc, x, T, T, opt);
      expect_all_finite(gpu.out, "output");
      const double err = moe_testing::rel_err(gpu.out, cpu.out);
      EXPECT_LT(err, kKernelLayoutTolerance) << mode_name(mode) << " token_tile " << opt.token_tile << " k_split "
                                             << opt.k_split << " staged " << opt.staged
                                             << (opt.simple ? " simple" : "");
    }
  }
}

// Runs the forward `calls` times on one workspace (poisoned once before the first call) and
// returns every call's output: the small-batch path's combine counters must be left at zero.
std::vector<std::vector<float>> run_repeatedly(const reference::KernelReadyLayer& view,
                                               const moe_testing::GptOssSource& src, const RouterConfig& rc,
                                               const std::vector<uint16_t>& x, int64_t T, int64_t valid,
                                               const FusedMoeOptions& opt, int calls) {
  const DeviceMoeLayer layer = upload_layer(view);
  const DeviceRouter router = upload_router(src.router(), rc, view.experts, view.hidden);
  MoeWorkspace ws(view, rc.top_k, T);
  DeviceBuffer xd(x.size() * 2), out(static_cast<size_t>(T * view.hidden * 4));
  xd.upload(x.data(), xd.size());
  ws.act.fill_bytes(0xFF);
  ws.y.fill_bytes(0xFF);
  std::vector<std::vector<float>> outs;
  for (int i = 0; i < calls; ++i) {
    out.fill_bytes(0xFF);  // NaN everywhere
    enqueue_fused_moe(layer, router, ActivationParams{}, xd.as<uint16_t>(), T, valid, ws, out.as<float>(), nullptr,
                      opt);
    outs.emplace_back(static_cast<size_t>(T * view.hidden));
    out.download(outs.back().data(), out.size());
  }
  return outs;
}

// The small-batch kernels (streaming GEMMs, grouping inside gate_up up to 32 picks, combine
// inside down) against the CPU kernel-layout MoE: one pick per expert, several tiles of 8 for
// one expert, 32 picks (the inline grouping's limit) and more (the grouping kernel), padding
// tokens, an all-padding call, and repeated calls on one workspace bitwise identical.
TEST_F(FusedMoeGpu, SmallBatchKernelsAgree) {
  struct Case {
    Shape shape;
    int64_t T, valid;
  };
  const Case cases[] = {{kWide, 1, 1},  {kWide, 3, 3},   {kWide, 8, 8},  {kWide, 9, 9},   {kWide, 40, 37},
                        {kSmall, 16, 16}, {kSmall, 20, 20}, {kSmall, 5, 0}, {kSmall, 64, 60}};
  for (GateMode mode : {GateMode::Separated, GateMode::Interleave}) {
    for (const Case& c : cases) {
      const Layer l = make_layer(c.shape, mode, 90 + c.T);
      const RouterConfig rc = router_config(c.shape.top_k);
      const auto x = moe_testing::random_activations(c.T, c.shape.H, 300 + c.T);
      const MoeOutput cpu = reference::moe_forward_kernel_layout_cpu(l.kr.view(), l.src.router(), rc,
                                                                     ActivationParams{}, x.data(), c.T, c.valid);
      FusedMoeOptions opt;
      opt.small_batch = 1;
      const auto outs = run_repeatedly(l.kr.view(), l.src, rc, x, c.T, c.valid, opt, 3);
      const std::string what = std::string(mode_name(mode)) + " E=" + std::to_string(c.shape.E) +
                               " T=" + std::to_string(c.T) + " valid=" + std::to_string(c.valid);
      expect_all_finite(outs[0], what.c_str());
      const double err = moe_testing::rel_err(outs[0], cpu.out);
      std::printf("GPU fused MoE small-batch kernels %s: rel err vs kernel-layout CPU %.3e\n", what.c_str(), err);
      if (c.valid > 0) {
        EXPECT_LT(err, kKernelLayoutTolerance) << what;
      }
      for (int64_t t = c.valid; t < c.T; ++t) {
        for (int64_t h = 0; h < c.shape.H; ++h) ASSERT_EQ(outs[0][t * c.shape.H + h], 0.0f) << what << " token " << t;
      }
      for (size_t i = 1; i < outs.size(); ++i) {
        EXPECT_EQ(std::memcmp(outs[i].data(), outs[0].data(), outs[0].size() * 4), 0)
            << what << ": call " << i << " differs from the first";
      }
    }
  }
}

// Scale codes above 128 (values past 12) take the kernels' exact two-multiply dequantization.
TEST_F(FusedMoeGpu, LargeScaleCodesDequantizeExactly) {
  for (GateMode mode : {GateMode::Separated, GateMode::Interleave}) {
    Layer l;
    l.src = moe_testing::random_gpt_oss_source(kWide.E, kWide.H, kWide.I, 55, 120, 131);
    l.dense = l.src.dense();
    const bool sep = mode == GateMode::Separated;
    l.kr = moe_testing::build_kernel_ready(l.src, mode, sep ? kWide.Hp_sep : kWide.Hp_int,
                                           sep ? kWide.Ip_sep : kWide.Ip_int);
    const RouterConfig rc = router_config(kWide.top_k);
    const int64_t T = 64;
    auto x = moe_testing::random_activations(T, kWide.H, 56);
    for (auto& v : x) v = float_to_bf16(bf16_to_float(v) * 0.01f);  // keep products in range
    const MoeOutput cpu = reference::moe_forward_kernel_layout_cpu(l.kr.view(), l.src.router(), rc,
                                                                   ActivationParams{}, x.data(), T, T);
    const MoeOutput ref =
        reference::moe_forward_reference(l.dense, l.src.router(), rc, ActivationParams{}, x.data(), T, T);
    for (int staged : {0, 1, 2}) {
      FusedMoeOptions opt;
      opt.staged = staged == 2 ? -1 : staged;
      opt.small_batch = staged == 2 ? 1 : 0;  // 2: the small-batch kernels
      const MoeOutput gpu = run_poisoned(l.kr.view(), l.src, rc, x, T, T, opt);
      expect_all_finite(gpu.out, "output");
      EXPECT_LT(moe_testing::rel_err(gpu.out, cpu.out), kKernelLayoutTolerance) << mode_name(mode);
      EXPECT_LT(moe_testing::rel_err(gpu.out, ref.out), kThreshold) << mode_name(mode);
    }
  }
}

TEST_F(FusedMoeGpu, PaddingTokensAreZeroAndRouteNowhere) {
  const Layer l = make_layer(kSmall, GateMode::Separated, 9);
  const RouterConfig rc = router_config(kSmall.top_k);
  const int64_t T = 64, valid = 50;
  const auto x = moe_testing::random_activations(T, kSmall.H, 8);
  const MoeOutput gpu = run_poisoned(l.kr.view(), l.src, rc, x, T, valid);
  const MoeOutput ref =
      reference::moe_forward_reference(l.dense, l.src.router(), rc, ActivationParams{}, x.data(), T, valid);
  EXPECT_LT(moe_testing::rel_err(gpu.out, ref.out), kThreshold);
  for (int64_t t = valid; t < T; ++t) {
    for (int64_t h = 0; h < kSmall.H; ++h) ASSERT_EQ(gpu.out[t * kSmall.H + h], 0.0f) << "token " << t;
    for (int j = 0; j < rc.top_k; ++j) {
      EXPECT_EQ(gpu.routing.ids[t * rc.top_k + j], -1);
      EXPECT_EQ(gpu.routing.weights[t * rc.top_k + j], 0.0f);
    }
  }
}

TEST_F(FusedMoeGpu, NanTokenIsReportedAndComesOutZero) {
  const Layer l = make_layer(kSmall, GateMode::Separated, 10);
  const RouterConfig rc = router_config(kSmall.top_k);
  const int64_t T = 7;
  auto x = moe_testing::random_activations(T, kSmall.H, 12);
  x[3 * kSmall.H + 5] = 0x7FC0;  // bf16 NaN in token 3
  const MoeOutput gpu = run_poisoned(l.kr.view(), l.src, rc, x, T, T);
  const MoeOutput ref = reference::moe_forward_reference(l.dense, l.src.router(), rc, ActivationParams{}, x.data(), T, T);
  ASSERT_EQ(gpu.routing.nan_tokens, std::vector<int64_t>{3});
  EXPECT_EQ(ref.routing.nan_tokens, std::vector<int64_t>{3});
  for (int64_t h = 0; h < kSmall.H; ++h) EXPECT_EQ(gpu.out[3 * kSmall.H + h], 0.0f);
  EXPECT_LT(moe_testing::rel_err(gpu.out, ref.out), kThreshold);
}

TEST_F(FusedMoeGpu, RepeatedRunsAreBitwiseIdentical) {
  const Layer l = make_layer(kWide, GateMode::Interleave, 21);
  const RouterConfig rc = router_config(kWide.top_k);
  const int64_t T = 512;
  const auto x = moe_testing::random_activations(T, kWide.H, 22);
  const MoeOutput a = run_poisoned(l.kr.view(), l.src, rc, x, T, T);
  const MoeOutput b = run_poisoned(l.kr.view(), l.src, rc, x, T, T);
  ASSERT_EQ(a.out.size(), b.out.size());
  EXPECT_EQ(std::memcmp(a.out.data(), b.out.data(), a.out.size() * 4), 0);
}

TEST_F(FusedMoeGpu, CorruptionsFail) {
  const RouterConfig rc = router_config(kSmall.top_k);
  for (GateMode mode : {GateMode::Separated, GateMode::Interleave}) {
    const moe_testing::GptOssSource src = moe_testing::random_gpt_oss_source(kSmall.E, kSmall.H, kSmall.I, 31);
    const reference::DenseMoeLayer dense = src.dense();
    const int64_t Hp = 256, Ip = mode == GateMode::Separated ? 128 : 256;
    for (int64_t T : {1, 7, 64}) {
      const auto x = moe_testing::random_activations(T, kSmall.H, 600 + T);
      const MoeOutput ref = reference::moe_forward_reference(dense, src.router(), rc, ActivationParams{}, x.data(), T, T);
      for (Corruption c : {Corruption::GateUpLeftInterleaved, Corruption::ScalesNotDeinterleaved,
                           Corruption::ScaleShuffleSkipped}) {
        const auto kr = moe_testing::build_kernel_ready(src, mode, Hp, Ip, c);
        const double err = moe_testing::rel_err(run_poisoned(kr.view(), src, rc, x, T, T).out, ref.out);
        EXPECT_GT(err, kThreshold) << mode_name(mode) << " corruption " << static_cast<int>(c) << " T=" << T;
      }
      // Tiles of one mode read as the other (I' = 256 is valid in both).
      const auto kr = moe_testing::build_kernel_ready(src, mode, 256, 256);
      reference::KernelReadyLayer wrong = kr.view();
      wrong.mode = mode == GateMode::Separated ? GateMode::Interleave : GateMode::Separated;
      EXPECT_LT(moe_testing::rel_err(run_poisoned(kr.view(), src, rc, x, T, T).out, ref.out), kThreshold);
      const double err = moe_testing::rel_err(run_poisoned(wrong, src, rc, x, T, T).out, ref.out);
      EXPECT_GT(err, kThreshold) << mode_name(mode) << " mislabelled, T=" << T;
    }
  }
}

TEST_F(FusedMoeGpu, OneCallConvenienceAndBadShapes) {
  const Layer l = make_layer(kSmall, GateMode::Interleave, 13);
  const RouterConfig rc = router_config(kSmall.top_k);
  const auto x = moe_testing::random_activations(7, kSmall.H, 14);
  const MoeOutput gpu = moe_forward_gpu(l.kr.view(), l.src.router(), rc, ActivationParams{}, x.data(), 7, 6);
  const MoeOutput ref = reference::moe_forward_reference(l.dense, l.src.router(), rc, ActivationParams{}, x.data(), 7, 6);
  EXPECT_LT(moe_testing::rel_err(gpu.out, ref.out), kThreshold);
  for (int64_t h = 0; h < kSmall.H; ++h) EXPECT_EQ(gpu.out[6 * kSmall.H + h], 0.0f);
  try {
    moe_forward_gpu(l.kr.view(), l.src.router(), rc, ActivationParams{}, x.data(), 7, 8);
    FAIL() << "valid_tokens > tokens accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("valid_tokens 8"), std::string::npos) << e.what();
  }
  reference::KernelReadyLayer bad = l.kr.view();
  bad.w2_scale_cols = 3;
  try {
    upload_layer(bad);
    FAIL() << "bad scale columns accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("w2_scale_cols 3"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moeprep::gpu
