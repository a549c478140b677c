// The CPU kernel-layout MoE against the dense reference: layers built with the converter's
// layout steps agree; each corruption that validation.md lists makes them disagree.
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "reference/moe.h"
#include "reference/moe_test_support.h"

namespace moeprep::reference {
namespace {

using layout::GateMode;
using moe_testing::Corruption;

constexpr double kThreshold = 2e-2;  // validation.md's default for bf16 activations

// E = 4, H = 96, I = 64, top-2; padded to H' = 256 and I' = 128 (separated) or 256 (interleave).
struct Case {
  GateMode mode;
  int64_t Hp, Ip;
};
constexpr int64_t kE = 4, kH = 96, kI = 64;

RouterConfig top2() {
  RouterConfig rc;
  rc.top_k = 2;
  return rc;
}

const moe_testing::GptOssSource& source() {
  static const auto src = moe_testing::random_gpt_oss_source(kE, kH, kI, 2026);
  return src;
}
const DenseMoeLayer& dense() {
  static const DenseMoeLayer d = source().dense();
  return d;
}

// rel err of the kernel-layout path on `layer` against the reference, for T tokens.
double kernel_vs_reference(const KernelReadyLayer& layer, int64_t T, int64_t valid, uint64_t seed,
                           MoeOutput* kernel_out = nullptr) {
  const auto x = moe_testing::random_activations(T, kH, seed);
  const MoeOutput ref = moe_forward_reference(dense(), source().router(), top2(), ActivationParams{}, x.data(), T, valid);
  MoeOutput got = moe_forward_kernel_layout_cpu(layer, source().router(), top2(), ActivationParams{}, x.data(), T, valid);
  EXPECT_EQ(got.routing.ids, ref.routing.ids);
  EXPECT_EQ(got.routing.weights, ref.routing.weights);
  const double err = moe_testing::rel_err(got.out, ref.out);
  if (kernel_out) *kernel_out = std::move(got);
  return err;
}

class MoeKernelLayout : public ::testing::TestWithParam<Case> {};

TEST_P(MoeKernelLayout, AgreesWithTheReference) {
  const Case c = GetParam();
  const auto kr = moe_testing::build_kernel_ready(source(), c.mode, c.Hp, c.Ip);
  for (int64_t T : {1, 7, 64}) {
    const double err = kernel_vs_reference(kr.view(), T, T, 100 + T);
    std::printf("kernel-layout CPU vs reference (%s, T=%lld): rel err %.3e\n",
                c.mode == GateMode::Separated ? "separated" : "interleave", static_cast<long long>(T), err);
    EXPECT_LT(err, kThreshold) << "T=" << T;
    // bf16 rounding of the intermediate activation is the only deliberate difference.
    EXPECT_GT(err, 0.0);
    EXPECT_LT(err, 5e-3) << "T=" << T;
  }
}

TEST_P(MoeKernelLayout, PaddingTokensComeOutZero) {
  const Case c = GetParam();
  const auto kr = moe_testing::build_kernel_ready(source(), c.mode, c.Hp, c.Ip);
  MoeOutput out;
  const double err = kernel_vs_reference(kr.view(), 7, 4, 7, &out);
  EXPECT_LT(err, kThreshold);
  for (int64_t t = 0; t < 7; ++t) {
    double sum = 0;
    for (int64_t h = 0; h < kH; ++h) sum += std::abs(out.out[t * kH + h]);
    if (t < 4) {
      EXPECT_GT(sum, 0.0) << "token " << t;
    } else {
      EXPECT_EQ(sum, 0.0) << "padding token " << t;
      EXPECT_EQ(out.routing.ids[t * 2], -1);
      EXPECT_EQ(out.routing.weights[t * 2 + 1], 0.0f);
    }
  }
}

TEST_P(MoeKernelLayout, CorruptionsFail) {
  const Case c = GetParam();
  for (Corruption k : {Corruption::GateUpLeftInterleaved, Corruption::ScalesNotDeinterleaved,
                       Corruption::ScaleShuffleSkipped}) {
    const auto kr = moe_testing::build_kernel_ready(source(), c.mode, c.Hp, c.Ip, k);
    for (int64_t T : {1, 7, 64}) {
      const double err = kernel_vs_reference(kr.view(), T, T, 300 + T);
      if (T == 64) std::printf("corruption %d: rel err %.3f\n", static_cast<int>(k), err);
      EXPECT_GT(err, kThreshold) << "corruption " << static_cast<int>(k) << " T=" << T;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, MoeKernelLayout,
                         ::testing::Values(Case{GateMode::Separated, 256, 128}, Case{GateMode::Interleave, 256, 256}),
                         [](const auto& info) {
                           return std::string(info.param.mode == GateMode::Separated ? "Separated" : "Interleave");
                         });

// Tiles of one mode read as the other: needs sizes valid in both modes (I' = 256).
TEST(MoeKernelLayoutModes, MislabelledGateModeFails) {
  for (GateMode built : {GateMode::Separated, GateMode::Interleave}) {
    const auto kr = moe_testing::build_kernel_ready(source(), built, 256, 256);
    KernelReadyLayer good = kr.view();
    EXPECT_LT(kernel_vs_reference(good, 7, 7, 55), kThreshold);
    KernelReadyLayer wrong = good;
    wrong.mode = built == GateMode::Separated ? GateMode::Interleave : GateMode::Separated;
    for (int64_t T : {1, 7, 64}) {
      EXPECT_GT(kernel_vs_reference(wrong, T, T, 500 + T), kThreshold)
          << "built " << static_cast<int>(built) << " T=" << T;
    }
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(MoeKernelLayoutShapes, ConstraintViolationsNameTheConstraint) {
  const auto kr = moe_testing::build_kernel_ready(source(), GateMode::Separated, 256, 128);
  KernelReadyLayer l = kr.view();
  const KernelReadySizes z = check_kernel_ready_layer(l);
  EXPECT_EQ(z.w13_weight, static_cast<int64_t>(kr.w13.size()));
  EXPECT_EQ(z.w13_scale, static_cast<int64_t>(kr.w13_scale.size()));
  EXPECT_EQ(z.w2_weight, static_cast<int64_t>(kr.w2.size()));
  EXPECT_EQ(z.w2_scale, static_cast<int64_t>(kr.w2_scale.size()));
  EXPECT_EQ(z.w13_bias, static_cast<int64_t>(kr.b13.size() * 4));
  EXPECT_EQ(z.w2_bias, static_cast<int64_t>(kr.b2.size() * 4));
  const auto ki = moe_testing::build_kernel_ready(source(), GateMode::Interleave, 256, 256);
  const KernelReadySizes zi = check_kernel_ready_layer(ki.view());
  EXPECT_EQ(zi.w13_scale, static_cast<int64_t>(ki.w13_scale.size()));
  EXPECT_EQ(zi.w2_scale, static_cast<int64_t>(ki.w2_scale.size()));

  KernelReadyLayer bad = l;
  bad.mode = GateMode::Interleave;  // I' = 128 is too small for the interleaved scale layout
  EXPECT_NE(error_of([&] { check_kernel_ready_layer(bad); }).find("intermediate_pad must be a multiple of 256"),
            std::string::npos);
  bad = l;
  bad.w13_scale_cols = 9;
  EXPECT_NE(error_of([&] { check_kernel_ready_layer(bad); }).find("w13_scale_cols 9"), std::string::npos);
  bad = l;
  bad.hidden_pad = 64;
  EXPECT_NE(error_of([&] { check_kernel_ready_layer(bad); }).find("padded sizes must be >= the logical ones"),
            std::string::npos);
  bad = l;
  bad.intermediate_pad = 72;
  bad.intermediate = 72;
  EXPECT_NE(error_of([&] { check_kernel_ready_layer(bad); }).find("multiple of 16"), std::string::npos);
}

}  // namespace
}  // namespace moeprep::reference
