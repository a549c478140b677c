// The dense CPU reference: source dequantization, router logits, the activation variants and
// the forward pass on hand-built layers.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/bf16.h"
#include "reference/moe.h"
#include "reference/moe_test_support.h"

namespace moeprep::reference {
namespace {

using moe_testing::bf16_of;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

TEST(MoeDenseFromSource, DequantizesExactlyWithLowNibbleFirst) {
  const int64_t E = 1, H = 32, I = 32;
  std::vector<uint8_t> gu_blocks(E * 2 * I * H / 2, 0), gu_scales(E * 2 * I * H / 32, 127);
  std::vector<uint8_t> dn_blocks(E * H * I / 2, 0), dn_scales(E * H * I / 32, 127);
  std::vector<uint16_t> gu_bias(E * 2 * I, bf16_of(0.25)), dn_bias(E * H, bf16_of(-1.5));
  gu_blocks[3 * 16 + 5] = 0xB7;  // row 3, elements 10 (low: 7 = +6) and 11 (high: 0xB = -1.5)
  gu_scales[3] = 130;            // row 3's block: 2^3
  dn_blocks[7 * 16 + 0] = 0x19;  // row 7, element 0 (0x9 = -0.5), element 1 (0x1 = +0.5)
  dn_scales[7] = 1;              // 2^-126
  const DenseMoeLayer d =
      dense_from_gpt_oss_source(gu_blocks.data(), gu_scales.data(), gu_bias.data(), dn_blocks.data(),
                                dn_scales.data(), dn_bias.data(), E, H, I);
  EXPECT_TRUE(d.gate_up_interleaved);
  EXPECT_EQ(d.w13[3 * H + 10], 48.0f);
  EXPECT_EQ(d.w13[3 * H + 11], -12.0f);
  EXPECT_EQ(d.w13[3 * H + 12], 0.0f);
  EXPECT_EQ(d.w2[7 * I + 0], -std::ldexp(1.0f, -127));
  EXPECT_EQ(d.w2[7 * I + 1], std::ldexp(1.0f, -127));
  EXPECT_EQ(d.b13[5], 0.25f);
  EXPECT_EQ(d.b2[31], -1.5f);
}

TEST(MoeDenseFromSource, NanScaleNamesTheTensor) {
  const int64_t E = 2, H = 32, I = 32;
  std::vector<uint8_t> gu_blocks(E * 2 * I * H / 2, 0), gu_scales(E * 2 * I, 127);
  std::vector<uint8_t> dn_blocks(E * H * I / 2, 0), dn_scales(E * H, 127);
  std::vector<uint16_t> gu_bias(E * 2 * I, 0), dn_bias(E * H, 0);
  dn_scales[H + 4] = 255;
  const std::string msg = error_of([&] {
    dense_from_gpt_oss_source(gu_blocks.data(), gu_scales.data(), gu_bias.data(), dn_blocks.data(), dn_scales.data(),
                              dn_bias.data(), E, H, I);
  });
  EXPECT_NE(msg.find("down_proj_scales"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expert 1, row 4"), std::string::npos) << msg;
  dn_scales[H + 4] = 127;
  gu_scales[0] = 255;
  EXPECT_NE(error_of([&] {
              dense_from_gpt_oss_source(gu_blocks.data(), gu_scales.data(), gu_bias.data(), dn_blocks.data(),
                                        dn_scales.data(), dn_bias.data(), E, H, I);
            }).find("gate_up_proj_scales"),
            std::string::npos);
}

TEST(MoeRouterLogits, DotPlusBias) {
  const std::vector<uint16_t> w = {bf16_of(1), bf16_of(2), bf16_of(-1), bf16_of(0.5), bf16_of(0), bf16_of(3)};
  const std::vector<uint16_t> b = {bf16_of(0.25), bf16_of(-2)};
  const std::vector<uint16_t> x = {bf16_of(1), bf16_of(-1), bf16_of(2), bf16_of(0.5), bf16_of(4), bf16_of(-2)};
  const std::vector<float> l = router_logits({w.data(), b.data()}, x.data(), 2, 2, 3);
  ASSERT_EQ(l.size(), 4u);
  EXPECT_FLOAT_EQ(l[0], 1 - 2 - 2 + 0.25f);        // token 0, expert 0
  EXPECT_FLOAT_EQ(l[1], 0.5f + 0 + 6 - 2);          // token 0, expert 1
  EXPECT_FLOAT_EQ(l[2], 0.5f + 8 + 2 + 0.25f);      // token 1, expert 0
  EXPECT_FLOAT_EQ(l[3], 0.25f + 0 - 6 - 2);         // token 1, expert 1
  const std::vector<float> nb = router_logits({w.data(), nullptr}, x.data(), 1, 2, 3);
  EXPECT_FLOAT_EQ(nb[0], -3.0f);
}

TEST(MoeActivation, GptOssClampsGateAboveAndUpBothWays) {
  ActivationParams a;  // GPT-OSS defaults: alpha 1.702, limit 7
  EXPECT_NEAR(moe_activation<double>(a, 1.0, 0.0), sigmoid(1.702), 1e-15);
  EXPECT_NEAR(moe_activation<double>(a, 2.0, 3.0), 2.0 * sigmoid(3.404) * 4.0, 1e-14);
  // gate clamps at +7 only; up clamps to [-7, 7].
  EXPECT_NEAR(moe_activation<double>(a, 9.0, 0.0), 7.0 * sigmoid(7 * 1.702), 1e-14);
  EXPECT_NEAR(moe_activation<double>(a, -9.0, 0.0), -9.0 * sigmoid(-9 * 1.702), 1e-15);
  EXPECT_NEAR(moe_activation<double>(a, 1.0, 20.0), sigmoid(1.702) * 8.0, 1e-14);
  EXPECT_NEAR(moe_activation<double>(a, 1.0, -20.0), sigmoid(1.702) * -6.0, 1e-14);
  EXPECT_NEAR(moe_activation<float>(a, 1.0f, 0.5f), static_cast<float>(sigmoid(1.702) * 1.5), 1e-6);
  ActivationParams s;
  s.kind = Activation::SiluGated;
  EXPECT_NEAR(moe_activation<double>(s, 2.0, 3.0), 2.0 * sigmoid(2.0) * 3.0, 1e-14);
  EXPECT_NEAR(moe_activation<double>(s, 20.0, 1.0), 20.0 * sigmoid(20.0), 1e-12);  // no clamp
}

// One expert of E = 2 chosen by the router bias; every weight hand-placed so the output can
// be written down from the GPT-OSS formula.
TEST(MoeReference, HandBuiltLayerFollowsTheGptOssFormula) {
  const int64_t E = 2, H = 32, I = 32;
  DenseMoeLayer d;
  d.experts = E;
  d.hidden = H;
  d.intermediate = I;
  d.gate_up_interleaved = true;
  d.w13.assign(E * 2 * I * H, 0.0f);
  d.b13.assign(E * 2 * I, 0.0f);
  d.w2.assign(E * H * I, 0.0f);
  d.b2.assign(E * H, 0.0f);
  // Expert 1: gate unit j (row 2j) = x[j] * 0.5; up unit j (row 2j+1) = x[0] + 1; down row r =
  // act[r] + 0.125.
  for (int64_t j = 0; j < I; ++j) {
    d.w13[(1 * 2 * I + 2 * j) * H + j] = 0.5f;
    d.w13[(1 * 2 * I + 2 * j + 1) * H + 0] = 1.0f;
    d.b13[1 * 2 * I + 2 * j + 1] = 1.0f;
    d.w2[(1 * H + j) * I + j] = 1.0f;
    d.b2[1 * H + j] = 0.125f;
  }
  std::vector<uint16_t> rw(E * H, 0), rb = {bf16_of(-4), bf16_of(4)};
  RouterConfig rc;
  rc.top_k = 1;
  std::vector<uint16_t> x(2 * H);
  for (int64_t c = 0; c < H; ++c) x[c] = bf16_of(0.25 * (c % 9) - 1.0);
  for (int64_t c = 0; c < H; ++c) x[H + c] = bf16_of(9.0);  // padding row: must stay zero
  const MoeOutput out = moe_forward_reference(d, {rw.data(), rb.data()}, rc, ActivationParams{}, x.data(), 2, 1);
  ASSERT_EQ(out.out.size(), static_cast<size_t>(2 * H));
  EXPECT_EQ(out.routing.ids[0], 1);
  EXPECT_FLOAT_EQ(out.routing.weights[0], 1.0f);
  EXPECT_EQ(out.routing.ids[1], -1);  // the padding row routes nowhere
  const double x0 = bf16_to_float(x[0]);
  for (int64_t r = 0; r < H; ++r) {
    double gate = 0.5 * bf16_to_float(x[r]);
    double up = x0 + 1.0;
    gate = std::min(gate, 7.0);
    up = std::max(std::min(up, 7.0), -7.0);
    const double want = gate * sigmoid(1.702 * gate) * (up + 1.0) + 0.125;
    EXPECT_NEAR(out.out[r], want, 1e-6) << "column " << r;
    EXPECT_EQ(out.out[H + r], 0.0f) << "padding column " << r;
  }
}

// The same weights with rows de-interleaved and gate_up_interleaved = false must give the same
// output: the flag selects the gate/up rule.
TEST(MoeReference, GateUpRuleFollowsTheFlag) {
  const auto src = moe_testing::random_gpt_oss_source(4, 64, 32, 11);
  const DenseMoeLayer inter = src.dense();
  DenseMoeLayer sep = inter;
  sep.gate_up_interleaved = false;
  const int64_t E = 4, H = 64, I = 32;
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t j = 0; j < I; ++j) {
      for (int half = 0; half < 2; ++half) {
        const int64_t from = e * 2 * I + 2 * j + half, to = e * 2 * I + half * I + j;
        std::copy(inter.w13.begin() + from * H, inter.w13.begin() + (from + 1) * H, sep.w13.begin() + to * H);
        sep.b13[to] = inter.b13[from];
      }
    }
  }
  RouterConfig rc;
  rc.top_k = 2;
  const auto x = moe_testing::random_activations(5, H, 3);
  const MoeOutput a = moe_forward_reference(inter, src.router(), rc, ActivationParams{}, x.data(), 5, 5);
  const MoeOutput b = moe_forward_reference(sep, src.router(), rc, ActivationParams{}, x.data(), 5, 5);
  EXPECT_EQ(a.out, b.out);
  DenseMoeLayer wrong = sep;
  wrong.gate_up_interleaved = true;  // de-interleaved rows read with the pair rule
  const MoeOutput c = moe_forward_reference(wrong, src.router(), rc, ActivationParams{}, x.data(), 5, 5);
  EXPECT_GT(moe_testing::rel_err(c.out, a.out), 0.1);
}

TEST(MoeReference, RejectsMismatchedTensorsAndBadValidTokens) {
  const auto src = moe_testing::random_gpt_oss_source(2, 32, 32, 5);
  DenseMoeLayer d = src.dense();
  RouterConfig rc;
  rc.top_k = 1;
  const auto x = moe_testing::random_activations(2, 32, 1);
  EXPECT_NE(error_of([&] { moe_forward_reference(d, src.router(), rc, {}, x.data(), 2, 3); }).find("valid_tokens 3"),
            std::string::npos);
  d.b2.pop_back();
  EXPECT_NE(error_of([&] { moe_forward_reference(d, src.router(), rc, {}, x.data(), 2, 2); })
                .find("dense layer tensors do not match"),
            std::string::npos);
}

}  // namespace
}  // namespace moeprep::reference
