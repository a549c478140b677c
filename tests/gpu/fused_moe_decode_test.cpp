// The fused MoE's decode kernels (kernels/moe_decode_gemv.cu: GEMV-style gate_up and down with
// the combine inside) against the CPU kernel-layout MoE and the dense reference: both gate
// modes, T = 1..8, padding tokens, every activation kind, top_k 1, 4 and 8, scale codes above
// 128, K and row padding that the kernels skip (H and I not multiples of 128; NaN scales in
// the padding leave the output unchanged), a forced batch past the automatic limit, and
// repeated calls on one workspace bitwise identical.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
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
using reference::Activation;
using reference::ActivationParams;
using reference::MoeOutput;

using testing::kKernelLayoutTolerance;
using testing::kThreshold;

class FusedMoeDecode : public testing::GpuTest {};

struct Shape {
  int64_t E, H, I;
  int64_t Hp_sep, Ip_sep, Hp_int, Ip_int;
};
// H = 608: K ends 32 elements past the last whole round (H' 640 / 768 padding skipped);
// I = 288: 18 row units, K of down 2.25 rounds. H = 96, I = 64: one partial round each.
constexpr Shape kWide{16, 608, 288, 640, 320, 768, 512};
constexpr Shape kSmall{4, 96, 64, 256, 128, 256, 256};

const char* mode_name(GateMode m) { return m == GateMode::Separated ? "separated" : "interleave"; }

struct Layer {
  moe_testing::GptOssSource src;
  reference::DenseMoeLayer dense;
  moe_testing::KernelReadyTensors kr;
};

Layer make_layer(const Shape& s, GateMode mode, uint64_t seed, int scale_lo = 122, int scale_hi = 125) {
  Layer l;
  l.src = moe_testing::random_gpt_oss_source(s.E, s.H, s.I, seed, scale_lo, scale_hi);
  l.dense = l.src.dense();
  const bool sep = mode == GateMode::Separated;
  l.kr = moe_testing::build_kernel_ready(l.src, mode, sep ? s.Hp_sep : s.Hp_int, sep ? s.Ip_sep : s.Ip_int);
  return l;
}

FusedMoeOptions decode_on() {
  FusedMoeOptions o;
  o.decode = 1;
  return o;
}

// `calls` forwards on one workspace with act poisoned once and the output poisoned before
// each call; every call's output.
std::vector<std::vector<float>> run_calls(const Layer& l, const reference::RouterConfig& rc,
                                          const ActivationParams& act, const std::vector<uint16_t>& x, int64_t T,
                                          int64_t valid, const FusedMoeOptions& opt, int calls) {
  const reference::KernelReadyLayer view = l.kr.view();
  const DeviceMoeLayer layer = upload_layer(view);
  const DeviceRouter router = upload_router(l.src.router(), rc, view.experts, view.hidden);
  MoeWorkspace ws(view, rc.top_k, T);
  DeviceBuffer xd(x.size() * 2), out(static_cast<size_t>(T * view.hidden * 4));
  xd.upload(x.data(), xd.size());
  ws.act.fill_bytes(0xFF);
  std::vector<std::vector<float>> outs;
  for (int i = 0; i < calls; ++i) {
    out.fill_bytes(0xFF);  // NaN everywhere: every element must be written
    enqueue_fused_moe(layer, router, act, xd.as<uint16_t>(), T, valid, ws, out.as<float>(), nullptr, opt);
    outs.emplace_back(static_cast<size_t>(T * view.hidden));
    out.download(outs.back().data(), out.size());
  }
  return outs;
}

size_t not_finite(const std::vector<float>& v) {
  size_t bad = 0;
  for (float f : v) bad += !std::isfinite(f);
  return bad;
}

void expect_matches(const std::vector<float>& gpu, const Layer& l, const reference::RouterConfig& rc,
                    const ActivationParams& act, const std::vector<uint16_t>& x, int64_t T, int64_t valid,
                    const std::string& what) {
  const MoeOutput cpu =
      reference::moe_forward_kernel_layout_cpu(l.kr.view(), l.src.router(), rc, act, x.data(), T, valid);
  const MoeOutput ref = reference::moe_forward_reference(l.dense, l.src.router(), rc, act, x.data(), T, valid);
  EXPECT_EQ(not_finite(gpu), 0u) << what << ": elements not written (poison left) or not finite";
  const double err_cpu = moe_testing::rel_err(gpu, cpu.out), err_ref = moe_testing::rel_err(gpu, ref.out);
  std::printf("GPU decode %s: rel err vs kernel-layout CPU %.3e, vs reference %.3e\n", what.c_str(), err_cpu,
              err_ref);
  if (valid > 0) {
    EXPECT_LT(err_cpu, kKernelLayoutTolerance) << what;
    EXPECT_LT(err_ref, kThreshold) << what;
  }
  const int64_t H = l.kr.view().hidden;
  for (int64_t t = valid; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) ASSERT_EQ(gpu[t * H + h], 0.0f) << what << ": padding token " << t;
  }
}

TEST_F(FusedMoeDecode, MatchesTheReferencesForOneToEightTokensInBothModes) {
  for (GateMode mode : {GateMode::Separated, GateMode::Interleave}) {
    const Layer l = make_layer(kWide, mode, 120);
    reference::RouterConfig rc;
    rc.top_k = 4;
    for (int64_t T = 1; T <= 8; ++T) {
      const int64_t valid = T == 6 ? 4 : T == 8 ? 7 : T;  // padding tokens at the end
      const auto x = moe_testing::random_activations(T, kWide.H, 130 + T);
      const auto outs = run_calls(l, rc, ActivationParams{}, x, T, valid, decode_on(), 2);
      const std::string what = std::string(mode_name(mode)) + " T=" + std::to_string(T) + " valid=" +
                               std::to_string(valid);
      expect_matches(outs[0], l, rc, ActivationParams{}, x, T, valid, what);
      EXPECT_EQ(std::memcmp(outs[1].data(), outs[0].data(), outs[0].size() * 4), 0) << what << ": second call differs";
    }
  }
}

// NaN scale codes (255) on every padded group of w13 and w2: the decode kernels never read them,
// the small-batch kernels do (and turn NaN), which tells the two paths apart.
void poison_padding(Layer& l, GateMode mode) {
  moe_testing::KernelReadyTensors& kr = l.kr;
  const layout::ScaleLayout s13{mode, true, 2 * kr.Ip, kr.s13}, s2{mode, false, kr.Hp, kr.s2};
  for (int64_t e = 0; e < kr.E; ++e) {
    for (int64_t n = 0; n < 2 * kr.Ip; ++n) {
      for (int64_t g = 0; g < kr.s13; ++g) {
        if (n % kr.Ip >= kr.I || g >= kr.H / 32) kr.w13_scale[s13.offset(e, n, g)] = 255;
      }
    }
    for (int64_t n = 0; n < kr.Hp; ++n) {
      for (int64_t g = 0; g < kr.s2; ++g) {
        if (n >= kr.H || g >= kr.I / 32) kr.w2_scale[s2.offset(e, n, g)] = 255;
      }
    }
  }
}

// The automatic choice takes the decode kernels up to 4 picks (T = 1 at top-4: same bits as
// forcing them) and the small-batch kernels from 5 on (T = 2: their bits). The two paths can
// give the same bits on this shape (the per-pick decode down and the small-batch GEMMs sum in
// the same order), so the layer's padding carries NaN scales, which only the small-batch
// kernels read: the decode path's output is finite, the small-batch path's is not.
TEST_F(FusedMoeDecode, IsTheAutomaticChoiceUpToFourPicks) {
  Layer l = make_layer(kWide, GateMode::Separated, 140);
  poison_padding(l, GateMode::Separated);
  reference::RouterConfig rc;
  rc.top_k = 4;
  FusedMoeOptions folded;
  folded.small_batch = 1;
  for (int64_t T : {1, 2}) {
    const auto x = moe_testing::random_activations(T, kWide.H, 141 + T);
    const auto automatic = run_calls(l, rc, ActivationParams{}, x, T, T, FusedMoeOptions{}, 1);
    const auto forced = run_calls(l, rc, ActivationParams{}, x, T, T, decode_on(), 1);
    const auto other = run_calls(l, rc, ActivationParams{}, x, T, T, folded, 1);
    const size_t bytes = forced[0].size() * 4;
    ASSERT_EQ(not_finite(forced[0]), 0u) << "T=" << T << ": the decode path read the NaN padding";
    ASSERT_GT(not_finite(other[0]), 0u) << "T=" << T << ": the small-batch path did not meet the NaN padding";
    EXPECT_EQ(not_finite(automatic[0]) == 0, T == 1) << "T=" << T;
    const auto& want = T == 1 ? forced[0] : other[0];
    EXPECT_EQ(std::memcmp(automatic[0].data(), want.data(), bytes), 0)
        << "T=" << T << ": the automatic choice is not the " << (T == 1 ? "decode" : "small-batch") << " path";
  }
}

TEST_F(FusedMoeDecode, EveryActivationKind) {
  const Activation kinds[] = {Activation::GptOssClampedSwiglu, Activation::SiluGated, Activation::GeluTanhGated,
                              Activation::GeluGated};
  for (GateMode mode : {GateMode::Separated, GateMode::Interleave}) {
    const Layer l = make_layer(kWide, mode, 150);
    reference::RouterConfig rc;
    rc.top_k = 4;
    const int64_t T = 3;
    const auto x = moe_testing::random_activations(T, kWide.H, 151);
    std::vector<std::vector<float>> by_kind;
    for (Activation kind : kinds) {
      ActivationParams act;
      act.kind = kind;
      const auto outs = run_calls(l, rc, act, x, T, T, decode_on(), 1);
      expect_matches(outs[0], l, rc, act, x, T, T,
                     std::string(mode_name(mode)) + " activation " + std::to_string(static_cast<int>(kind)));
      by_kind.push_back(outs[0]);
    }
    for (size_t i = 1; i < by_kind.size(); ++i) EXPECT_NE(by_kind[i], by_kind[0]) << "kind " << i << " ran as kind 0";
  }
}

// top_k 1 (8 K parts per pick in down), 8 (one part per pick), a small layer (one partial K
// round), large scale codes (the two-multiply dequantization), and 64 picks (past the
// automatic limit, forced).
TEST_F(FusedMoeDecode, OtherTopKShapesScalesAndBatches) {
  struct Case {
    Shape shape;
    int top_k;
    int64_t T, valid;
    int scale_lo, scale_hi;
  };
  const Case cases[] = {{kWide, 1, 5, 5, 122, 125},  {kWide, 8, 4, 3, 122, 125}, {kSmall, 2, 7, 7, 122, 125},
                        {kWide, 4, 2, 2, 120, 131},  {kWide, 4, 16, 13, 122, 125}};
  for (GateMode mode : {GateMode::Separated, GateMode::Interleave}) {
    for (const Case& c : cases) {
      const Layer l = make_layer(c.shape, mode, 160 + c.top_k + c.T, c.scale_lo, c.scale_hi);
      reference::RouterConfig rc;
      rc.top_k = c.top_k;
      auto x = moe_testing::random_activations(c.T, c.shape.H, 170 + c.T);
      if (c.scale_hi > 128) {
        for (auto& v : x) v = float_to_bf16(bf16_to_float(v) * 0.01f);  // keep products in range
      }
      const auto outs = run_calls(l, rc, ActivationParams{}, x, c.T, c.valid, decode_on(), 1);
      expect_matches(outs[0], l, rc, ActivationParams{}, x, c.T, c.valid,
                     std::string(mode_name(mode)) + " E=" + std::to_string(c.shape.E) + " top_k=" +
                         std::to_string(c.top_k) + " T=" + std::to_string(c.T) + " valid=" + std::to_string(c.valid) +
                         " scales " + std::to_string(c.scale_lo) + ".." + std::to_string(c.scale_hi));
    }
  }
}

// The gate_up with 4-warp blocks (decode_warps 4): K 608 is 5 rounds, so warps 0 and 1 take two,
// warp 2 one and warp 3 none; 1, 2 and 3 rounds per batch, the two-multiply scales, a padding
// token. The same per-lane sums in the same order for every batch: the same bits.
TEST_F(FusedMoeDecode, FourWarpGateUpMatchesTheReferencesInEveryBatch) {
  for (GateMode mode : {GateMode::Separated, GateMode::Interleave}) {
    for (int scale_hi : {125, 131}) {
      const Layer l = make_layer(kWide, mode, 190 + scale_hi, scale_hi > 128 ? 120 : 122, scale_hi);
      reference::RouterConfig rc;
      rc.top_k = 4;
      auto x = moe_testing::random_activations(2, kWide.H, 191);
      if (scale_hi > 128) {
        for (auto& v : x) v = float_to_bf16(bf16_to_float(v) * 0.01f);  // keep products in range
      }
      FusedMoeOptions o = decode_on();
      o.decode_warps = 4;
      std::vector<float> first;
      for (int batch : {1, 2, 3}) {
        o.decode_batch = batch;
        const auto outs = run_calls(l, rc, ActivationParams{}, x, 2, 1, o, 2);
        const std::string what = std::string(mode_name(mode)) + " decode_warps 4 batch " + std::to_string(batch) +
                                 " scales .." + std::to_string(scale_hi);
        expect_matches(outs[0], l, rc, ActivationParams{}, x, 2, 1, what);
        EXPECT_EQ(std::memcmp(outs[1].data(), outs[0].data(), outs[0].size() * 4), 0) << what << ": repeated call";
        if (first.empty()) first = outs[0];
        EXPECT_EQ(std::memcmp(outs[0].data(), first.data(), first.size() * 4), 0) << what << " vs batch 1";
      }
    }
  }
}

// The decode kernels skip the padding (K past H and I, rows past I and H): with NaN scale codes
// (255) on every padded group the output keeps its bits, while the small-batch kernels, which
// read the padding, come out NaN (so the poison is where a reader of the padding meets it).
TEST_F(FusedMoeDecode, DoesNotReadThePadding) {
  for (GateMode mode : {GateMode::Separated, GateMode::Interleave}) {
    const Layer clean = make_layer(kWide, mode, 190);
    Layer poisoned = make_layer(kWide, mode, 190);
    poison_padding(poisoned, mode);
    reference::RouterConfig rc;
    rc.top_k = 4;
    const int64_t T = 5;
    const auto x = moe_testing::random_activations(T, kWide.H, 191);
    const auto want = run_calls(clean, rc, ActivationParams{}, x, T, T, decode_on(), 1);
    const auto got = run_calls(poisoned, rc, ActivationParams{}, x, T, T, decode_on(), 1);
    EXPECT_EQ(not_finite(want[0]), 0u) << mode_name(mode);
    EXPECT_EQ(std::memcmp(got[0].data(), want[0].data(), want[0].size() * 4), 0)
        << mode_name(mode) << ": NaN scales in the padding changed the decode output";
    FusedMoeOptions folded;
    folded.small_batch = 1;
    const auto reader = run_calls(poisoned, rc, ActivationParams{}, x, T, T, folded, 1);
    EXPECT_GT(not_finite(reader[0]), 0u) << mode_name(mode) << ": the poison sits where no kernel reads";
  }
}

TEST_F(FusedMoeDecode, NanTokenAndAllPaddingComeOutZero) {
  const Layer l = make_layer(kWide, GateMode::Separated, 180);
  reference::RouterConfig rc;
  rc.top_k = 4;
  auto x = moe_testing::random_activations(3, kWide.H, 181);
  x[1 * kWide.H + 17] = 0x7FC0;  // bf16 NaN in token 1
  const auto outs = run_calls(l, rc, ActivationParams{}, x, 3, 3, decode_on(), 1);
  for (int64_t h = 0; h < kWide.H; ++h) ASSERT_EQ(outs[0][kWide.H + h], 0.0f) << "NaN token, row " << h;
  const MoeOutput ref = reference::moe_forward_reference(l.dense, l.src.router(), rc, ActivationParams{}, x.data(), 3, 3);
  EXPECT_LT(moe_testing::rel_err(outs[0], ref.out), kThreshold);
  const auto none = run_calls(l, rc, ActivationParams{}, x, 3, 0, decode_on(), 1);
  for (float v : none[0]) ASSERT_EQ(v, 0.0f) << "valid_tokens 0";
}

}  // namespace
}  // namespace moeprep::gpu
