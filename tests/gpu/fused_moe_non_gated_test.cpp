// Non-gated experts (relu^2, Nemotron-H) in the GPU fused MoE: w13 holds the I' up rows alone,
// tiled like w2, made by convert's own recipes (plan/aiter_recipes.h). The GPU against the CPU
// kernel-layout MoE and the dense reference in both gate modes, T = 1, 7, 64, 200 with padding
// tokens, padded H and I, on every kernel path that takes such a layer; the paths that read
// [gate; up] pairs refused; a gating that disagrees with the activation refused; and the
// corruptions stage 5 must catch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "formats/bf16.h"
#include "formats/mxfp4_dequantize.h"
#include "gpu_test_support.h"
#include "kernels/fused_moe.h"
#include "layout/recipe.h"
#include "layout/steps.h"
#include "plan/aiter_recipes.h"
#include "reference/moe.h"
#include "reference/moe_test_support.h"

namespace moeprep::gpu {
namespace {

using layout::GateMode;
using reference::Activation;
using reference::ActivationParams;
using reference::MoeOutput;
using testing::kKernelLayoutTolerance;
using testing::kThreshold;

class NonGatedFusedMoeGpu : public testing::GpuTest {};

ActivationParams relu2() {
  ActivationParams a;
  a.kind = Activation::Relu2;
  return a;
}

const char* mode_name(GateMode m) { return m == GateMode::Separated ? "separated" : "interleave"; }

// Several row groups, H' and I' padded (separated: 608 -> 640 with a K of 320 for down, half a
// final round; interleave: 608 -> 768, 288 -> 512).
constexpr int64_t kE = 16, kH = 608, kI = 288, kTopK = 4;

plan::ConvertOptions options_for(GateMode mode, plan::InjectedFault fault = plan::InjectedFault::None) {
  plan::ConvertOptions o;
  o.gate_mode = mode;
  o.fault = fault;
  if (mode == GateMode::Separated) {
    o.pad_hidden = 64;
    o.pad_intermediate = 64;
  }
  return o;
}

// The source tensors of one layer of up-only experts, and its dense reference.
struct Source {
  std::vector<uint8_t> up, up_s, down, down_s;  // MXFP4 codes [E, N, K/2] and E8M0 scales
  reference::DenseMoeLayer dense;
  std::vector<uint16_t> router;  // bf16 [E, H]
};

Source make_source(uint64_t seed) {
  moe_testing::TestRng rng(seed);
  auto codes = [&](int64_t n) {
    std::vector<uint8_t> v(static_cast<size_t>(n));
    for (auto& b : v) b = static_cast<uint8_t>(rng.next());
    return v;
  };
  auto scales = [&](int64_t n) {  // 2^-5 .. 2^-3
    std::vector<uint8_t> v(static_cast<size_t>(n));
    for (auto& b : v) b = static_cast<uint8_t>(122 + rng.next() % 3);
    return v;
  };
  Source s;
  s.up = codes(kE * kI * kH / 2);
  s.up_s = scales(kE * kI * kH / 32);
  s.down = codes(kE * kH * kI / 2);
  s.down_s = scales(kE * kH * kI / 32);
  s.dense.experts = kE;
  s.dense.hidden = kH;
  s.dense.intermediate = kI;
  s.dense.w13.resize(static_cast<size_t>(kE * kI * kH));
  s.dense.w2.resize(static_cast<size_t>(kE * kH * kI));
  dequantize_mxfp4_rows(s.up.data(), s.up_s.data(), kE * kI, kH, s.dense.w13.data(), "up");
  dequantize_mxfp4_rows(s.down.data(), s.down_s.data(), kE * kH, kI, s.dense.w2.data(), "down");
  auto bias = [&](int64_t n) {  // bf16 values, as the checkpoint stores them
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& f : v) f = bf16_to_float(float_to_bf16(static_cast<float>(0.3 * rng.normal())));
    return v;
  };
  s.dense.b13 = bias(kE * kI);
  s.dense.b2 = bias(kE * kH);
  for (int64_t i = 0; i < kE * kH; ++i) s.router.push_back(float_to_bf16(static_cast<float>(0.2 * rng.normal())));
  return s;
}

// The kernel-ready tensors convert writes for `mode` (weights and scales by its recipes).
struct Ready {
  plan::ExpertDims d;
  GateMode mode = GateMode::Separated;
  std::vector<uint8_t> w13, w13_scale, w2, w2_scale;
  int64_t s13 = 0, s2 = 0;
  std::vector<float> b13, b2;

  reference::KernelReadyLayer view() const {
    reference::KernelReadyLayer v;
    v.mode = mode;
    v.experts = d.experts;
    v.hidden = d.hidden;
    v.intermediate = d.intermediate;
    v.hidden_pad = d.hidden_pad;
    v.intermediate_pad = d.intermediate_pad;
    v.gated = false;
    v.w13_scale_cols = s13;
    v.w2_scale_cols = s2;
    v.w13_weight = w13.data();
    v.w13_scale = w13_scale.data();
    v.w13_bias = b13.data();
    v.w2_weight = w2.data();
    v.w2_scale = w2_scale.data();
    v.w2_bias = b2.data();
    return v;
  }
};

Ready make_ready(const Source& s, GateMode mode, plan::InjectedFault fault = plan::InjectedFault::None) {
  const plan::ConvertOptions o = options_for(mode, fault);
  Ready r;
  r.mode = mode;
  r.d = plan::padded_dims(kE, kH, kI, o, /*gated=*/false);
  auto apply = [&](plan::ExpertRole role, const std::vector<uint8_t>& bytes, int64_t* cols) {
    const plan::RecipeSpec spec = plan::aiter_recipe(role, r.d, o, false);
    ByteTensor out = spec.recipe.apply(ByteTensor{spec.in_dtype, spec.in_shape, bytes});
    if (cols) *cols = out.shape[1];
    return std::move(out.bytes);
  };
  r.w13 = apply(plan::ExpertRole::W13Weight, s.up, nullptr);
  r.w13_scale = apply(plan::ExpertRole::W13Scale, s.up_s, &r.s13);
  r.w2 = apply(plan::ExpertRole::W2Weight, s.down, nullptr);
  r.w2_scale = apply(plan::ExpertRole::W2Scale, s.down_s, &r.s2);
  const int64_t Ip = r.d.intermediate_pad, Hp = r.d.hidden_pad;
  r.b13.assign(static_cast<size_t>(kE * Ip), 0.0f);
  r.b2.assign(static_cast<size_t>(kE * Hp), 0.0f);
  for (int64_t e = 0; e < kE; ++e) {
    for (int64_t n = 0; n < kI; ++n) r.b13[e * Ip + n] = s.dense.b13[e * kI + n];
    for (int64_t n = 0; n < kH; ++n) r.b2[e * Hp + n] = s.dense.b2[e * kH + n];
  }
  return r;
}

reference::RouterConfig router_config() {
  reference::RouterConfig rc;
  rc.top_k = static_cast<int>(kTopK);
  return rc;
}

// The GPU forward into NaN-poisoned output and intermediate buffers: every output element must
// be overwritten, and the up-only GEMM must write every act column that down reads.
MoeOutput run_poisoned(const reference::KernelReadyLayer& view, const Source& s, const ActivationParams& act,
                       const std::vector<uint16_t>& x, int64_t T, int64_t valid, const FusedMoeOptions& opt = {}) {
  const reference::RouterConfig rc = router_config();
  const DeviceMoeLayer layer = upload_layer(view);
  const DeviceRouter router = upload_router({s.router.data(), nullptr}, rc, kE, kH);
  MoeWorkspace ws(view, rc.top_k, T);
  DeviceBuffer xd(x.size() * 2), out(static_cast<size_t>(T * kH * 4));
  xd.upload(x.data(), xd.size());
  out.fill_bytes(0xFF);
  ws.act.fill_bytes(0xFF);
  ws.y.fill_bytes(0xFF);
  enqueue_fused_moe(layer, router, act, xd.as<uint16_t>(), T, valid, ws, out.as<float>(), nullptr, opt);
  MoeOutput o;
  o.out.resize(static_cast<size_t>(T * kH));
  out.download(o.out.data(), out.size());
  o.routing = ws.download_routing(T);
  return o;
}

size_t non_finite(const std::vector<float>& v) {
  size_t bad = 0;
  for (float f : v) bad += !std::isfinite(f);
  return bad;
}

// (token, expert) routing weights that differ by more than fp32 rounding between the GPU and the
// CPU router (their logits are summed in different orders).
size_t routing_differences(const reference::Routing& got, const reference::Routing& want) {
  const std::vector<float> a = reference::routing_to_dense(got, kE), b = reference::routing_to_dense(want, kE);
  if (a.size() != b.size()) return a.size() + b.size();
  size_t differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ += std::abs(a[i] - b[i]) > 1e-5f;
  return differ;
}

std::vector<std::pair<std::string, FusedMoeOptions>> kernel_paths() {
  std::vector<std::pair<std::string, FusedMoeOptions>> paths;
  paths.push_back({"default", FusedMoeOptions{}});
  FusedMoeOptions small;
  small.small_batch = 1;
  paths.push_back({"small-batch", small});
  FusedMoeOptions split{8, 4, 0, false};
  paths.push_back({"tile 8, K split 4", split});
  for (int staged : {0, 1}) {
    paths.push_back({"tile 32, staged " + std::to_string(staged), FusedMoeOptions{32, 1, staged, false}});
    paths.push_back({"tile 64, staged " + std::to_string(staged), FusedMoeOptions{64, 1, staged, false}});
  }
  paths.push_back({"tile 64, staged 2", FusedMoeOptions{64, 1, 2, false}});
  FusedMoeOptions simple;
  simple.simple = true;
  paths.push_back({"simple", simple});
  return paths;
}

TEST_F(NonGatedFusedMoeGpu, MatchesTheCpuKernelLayoutAndTheReferenceInBothModes) {
  const Source s = make_source(61);
  const reference::RouterConfig rc = router_config();
  for (GateMode mode : {GateMode::Separated, GateMode::Interleave}) {
    const Ready r = make_ready(s, mode);
    ASSERT_GT(r.d.hidden_pad, kH);
    ASSERT_GT(r.d.intermediate_pad, kI);
    const struct {
      int64_t T, valid;
    } cases[] = {{1, 1}, {7, 7}, {64, 60}, {200, 193}};
    for (const auto& c : cases) {
      const auto x = moe_testing::random_activations(c.T, kH, 900 + c.T);
      const MoeOutput ref =
          reference::moe_forward_reference(s.dense, {s.router.data(), nullptr}, rc, relu2(), x.data(), c.T, c.valid);
      const MoeOutput cpu = reference::moe_forward_kernel_layout_cpu(r.view(), {s.router.data(), nullptr}, rc, relu2(),
                                                                     x.data(), c.T, c.valid);
      double norm = 0;
      for (float v : ref.out) norm += static_cast<double>(v) * v;
      ASSERT_GT(norm, 0.0);
      for (const auto& [name, opt] : kernel_paths()) {
        // The default path everywhere; the others at one small and one large batch.
        if (name != "default" && c.T != 7 && c.T != 200) continue;
        if (name == "small-batch" && c.T * kTopK > 32) continue;
        const std::string what = std::string(mode_name(mode)) + " T=" + std::to_string(c.T) + " valid=" +
                                 std::to_string(c.valid) + " " + name;
        const MoeOutput gpu = run_poisoned(r.view(), s, relu2(), x, c.T, c.valid, opt);
        EXPECT_EQ(non_finite(gpu.out), 0u) << what << ": output left unwritten or not finite";
        EXPECT_EQ(routing_differences(gpu.routing, ref.routing), 0u) << what;
        const double err_cpu = moe_testing::rel_err(gpu.out, cpu.out);
        const double err_ref = moe_testing::rel_err(gpu.out, ref.out);
        std::printf("GPU fused MoE relu2 (non-gated) %s: rel err vs kernel-layout CPU %.3e, vs reference %.3e\n",
                    what.c_str(), err_cpu, err_ref);
        EXPECT_LT(err_cpu, kKernelLayoutTolerance) << what;
        EXPECT_LT(err_ref, kThreshold) << what;
        for (int64_t t = c.valid; t < c.T; ++t) {
          for (int64_t h = 0; h < kH; ++h) ASSERT_EQ(gpu.out[t * kH + h], 0.0f) << what << " padding token " << t;
        }
      }
    }
  }
}

// The GEMMs that read w13 as [gate; up] pairs (the tiled GEMMs, the decode kernels) do not take
// an up-only layer when asked for explicitly; automatically they are never chosen (the test
// above runs T = 1 and 200, where they would be).
TEST_F(NonGatedFusedMoeGpu, PairReadingKernelsAreRefusedNamingTheReason) {
  const Source s = make_source(62);
  const Ready r = make_ready(s, GateMode::Interleave);
  const auto x = moe_testing::random_activations(200, kH, 5);
  for (int staged : {3, 4, 5}) {
    try {
      run_poisoned(r.view(), s, relu2(), x, 200, 200, FusedMoeOptions{64, 1, staged, false});
      FAIL() << "the tiled GEMM (staged " << staged << ") ran an up-only layer";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::BadInput);
      EXPECT_NE(std::string(e.what()).find("takes gated experts only"), std::string::npos) << e.what();
    }
  }
  FusedMoeOptions decode;
  decode.decode = 1;
  try {
    run_poisoned(r.view(), s, relu2(), x, 1, 1, decode);
    FAIL() << "the decode kernels ran an up-only layer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-gated experts"), std::string::npos) << e.what();
  }
}

// The layer's gating and the activation's must agree: either disagreement would read w13's rows
// as what they are not.
TEST_F(NonGatedFusedMoeGpu, GatingThatDisagreesWithTheActivationIsRefused) {
  const Source s = make_source(63);
  const Ready r = make_ready(s, GateMode::Separated);
  const auto x = moe_testing::random_activations(7, kH, 6);
  ActivationParams silu;
  silu.kind = Activation::SiluGated;
  try {
    run_poisoned(r.view(), s, silu, x, 7, 7);
    FAIL() << "silu ran on an up-only layer";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput);
    EXPECT_NE(std::string(e.what()).find("the activation is gated but w13 holds up rows only"), std::string::npos)
        << e.what();
  }
  // A gated layer (GPT-OSS shapes of the other GPU tests) with relu^2.
  const auto src = moe_testing::random_gpt_oss_source(4, 96, 64, 64);
  const auto kr = moe_testing::build_kernel_ready(src, GateMode::Separated, 256, 128);
  reference::RouterConfig rc;
  rc.top_k = 2;
  const DeviceMoeLayer layer = upload_layer(kr.view());
  const DeviceRouter router = upload_router(src.router(), rc, 4, 96);
  const auto x2 = moe_testing::random_activations(1, 96, 9);
  try {
    run_fused_moe(layer, router, relu2(), x2.data(), 1, 1);
    FAIL() << "relu^2 ran on [gate; up] rows";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput);
    EXPECT_NE(std::string(e.what()).find("the activation is non-gated but w13 holds [gate; up] rows"),
              std::string::npos)
        << e.what();
  }
}

// Stage 5's corruptions of an up-only w13, on the GPU. The w2-style tile order is the same in
// both gate modes (so are the scale shuffles, once the separated mode's padding of the scale
// groups to 8 is not needed: always in the interleaved mode), so "tiles of the other gate mode"
// leaves the bytes as they were and has nothing to catch: checked here. What does differ must
// fail: the gated (gate_up) tile order of the interleaved mode applied to the up rows, which a
// converter unaware of non-gated experts would write, and scales left unshuffled.
TEST_F(NonGatedFusedMoeGpu, CorruptedUpRowsFailStageFive) {
  const Source s = make_source(64);
  const reference::RouterConfig rc = router_config();
  for (GateMode mode : {GateMode::Separated, GateMode::Interleave}) {
    const Ready good = make_ready(s, mode);
    if (mode == GateMode::Interleave) {  // the separated layer's K' of 640 has no interleaved tiling
      const Ready other_tiles = make_ready(s, mode, plan::InjectedFault::OtherGateModeTiles);
      EXPECT_TRUE(other_tiles.w13 == good.w13) << "the up-only tile order differs between the modes";
    }
    for (int64_t T : {1, 7, 64}) {
      const auto x = moe_testing::random_activations(T, kH, 700 + T);
      const MoeOutput ref =
          reference::moe_forward_reference(s.dense, {s.router.data(), nullptr}, rc, relu2(), x.data(), T, T);
      EXPECT_LT(moe_testing::rel_err(run_poisoned(good.view(), s, relu2(), x, T, T).out, ref.out), kThreshold)
          << mode_name(mode) << " T=" << T;

      // Scales padded but not shuffled, kept at the shuffled tensor's size ([M', S'] separated).
      Ready unshuffled = good;
      std::fill(unshuffled.w13_scale.begin(), unshuffled.w13_scale.end(), uint8_t{127});
      const int64_t S = kH / 32;
      for (int64_t e = 0; e < kE; ++e)
        for (int64_t n = 0; n < kI; ++n)
          std::memcpy(&unshuffled.w13_scale[(e * good.d.intermediate_pad + n) * good.s13], &s.up_s[(e * kI + n) * S], S);
      const double err_scales = moe_testing::rel_err(run_poisoned(unshuffled.view(), s, relu2(), x, T, T).out, ref.out);
      EXPECT_GT(err_scales, kThreshold) << mode_name(mode) << " scales not shuffled, T=" << T;

      if (mode == GateMode::Interleave) {
        // The same padded up rows shuffled as [gate; up] halves of the interleaved mode.
        Ready gated_order = good;
        const int64_t Ip = good.d.intermediate_pad, Hp = good.d.hidden_pad;
        layout::Recipe rec;
        rec.steps.push_back(layout::make_view_step({kE, kI, kH / 2}));
        rec.steps.push_back(layout::make_pad_step({kE, kI, kH / 2}, {kE, Ip, Hp / 2}, 0, {kE, Ip, Hp / 2}));
        rec.steps.push_back(layout::make_aiter_shuffle_weight_step(GateMode::Interleave, true));
        gated_order.w13 = rec.apply(ByteTensor{Dtype::U8, {kE, kI, kH / 32, 16}, s.up}).bytes;
        ASSERT_EQ(gated_order.w13.size(), good.w13.size());
        ASSERT_FALSE(gated_order.w13 == good.w13);
        const double err = moe_testing::rel_err(run_poisoned(gated_order.view(), s, relu2(), x, T, T).out, ref.out);
        EXPECT_GT(err, kThreshold) << "gate_up tile order, T=" << T;
      }
    }
  }
}

}  // namespace
}  // namespace moeprep::gpu
