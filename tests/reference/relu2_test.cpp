// The non-gated relu^2 activation (Nemotron-H): max(u, 0)^2 on hand-computed values, ignoring
// the gate argument; and the dense references (whole layer and expert by expert) on a layer of
// up-only experts small enough to work out by hand.
#include <gtest/gtest.h>

#include "core/error.h"
#include "formats/bf16.h"
#include "reference/moe.h"
#include "reference/moe_reference_by_expert.h"

namespace moeprep::reference {
namespace {

ActivationParams relu2() {
  ActivationParams a;
  a.kind = Activation::Relu2;
  return a;
}

TEST(Relu2, SquaresThePositivePartOfUp) {
  const ActivationParams a = relu2();
  EXPECT_FALSE(is_gated(Activation::Relu2));
  EXPECT_TRUE(is_gated(Activation::SiluGated));
  EXPECT_TRUE(is_gated(Activation::GptOssClampedSwiglu));
  const struct {
    double up, expect;
  } cases[] = {{3.0, 9.0}, {0.5, 0.25}, {1.0, 1.0}, {0.0, 0.0}, {-1.5, 0.0}, {-1e30, 0.0}, {12.0, 144.0}};
  for (const auto& c : cases) {
    EXPECT_DOUBLE_EQ(moe_activation<double>(a, 0.0, c.up), c.expect) << c.up;
    EXPECT_FLOAT_EQ(moe_activation<float>(a, 0.0f, static_cast<float>(c.up)), static_cast<float>(c.expect)) << c.up;
    // No gate: whatever the caller passes there changes nothing (no clamp either).
    EXPECT_DOUBLE_EQ(moe_activation<double>(a, -7.0, c.up), c.expect) << c.up;
    EXPECT_DOUBLE_EQ(moe_activation<double>(a, 100.0, c.up), c.expect) << c.up;
  }
}

// E = 2, H = 2, I = 2, top-1 routing. x = (2, 1): the router rows (1, 0) and (0, 1) give logits
// (2, 1), so expert 0 is picked with weight 1. Its up rows (1, -1) and (0.5, 0.5) with biases
// (0, -2) give u = (1, -0.5), relu^2 = (1, 0); down rows (3, 5) and (-1, 2) with biases
// (0.25, 0) give out = (3 * 1 + 0.25, -1 * 1) = (3.25, -1).
struct HandLayer {
  DenseMoeLayer dense;
  std::vector<uint16_t> router;
  std::vector<uint16_t> x;
};

HandLayer hand_layer() {
  HandLayer h;
  h.dense.experts = 2;
  h.dense.hidden = 2;
  h.dense.intermediate = 2;
  h.dense.w13 = {1, -1, 0.5f, 0.5f, /* expert 1 */ 9, 9, 9, 9};
  h.dense.b13 = {0, -2, /* expert 1 */ 9, 9};
  h.dense.w2 = {3, 5, -1, 2, /* expert 1 */ 9, 9, 9, 9};
  h.dense.b2 = {0.25f, 0, /* expert 1 */ 9, 9};
  for (float v : {1.0f, 0.0f, 0.0f, 1.0f}) h.router.push_back(float_to_bf16(v));
  for (float v : {2.0f, 1.0f}) h.x.push_back(float_to_bf16(v));
  return h;
}

TEST(Relu2, DenseReferenceOnAHandComputedLayer) {
  const HandLayer h = hand_layer();
  RouterConfig rc;
  rc.top_k = 1;
  const MoeOutput out = moe_forward_reference(h.dense, {h.router.data(), nullptr}, rc, relu2(), h.x.data(), 1, 1);
  ASSERT_EQ(out.routing.ids.size(), 1u);
  EXPECT_EQ(out.routing.ids[0], 0);
  EXPECT_FLOAT_EQ(out.routing.weights[0], 1.0f);
  ASSERT_EQ(out.out.size(), 2u);
  EXPECT_DOUBLE_EQ(out.out[0], 3.25);
  EXPECT_DOUBLE_EQ(out.out[1], -1.0);

  // Expert by expert, the same numbers.
  const ExpertwiseShape shape{2, 2, 2};
  const MoeOutput by = moe_forward_reference_by_expert(shape, [&](int32_t) { return h.dense; }, {h.router.data(), nullptr},
                                                       rc, relu2(), h.x.data(), 1, 1);
  EXPECT_DOUBLE_EQ(by.out[0], 3.25);
  EXPECT_DOUBLE_EQ(by.out[1], -1.0);
}

TEST(Relu2, DenseReferenceRefusesGatedSizedWeights) {
  HandLayer h = hand_layer();
  // [E, 2I, H]: the shape of gated experts, which relu^2 has no use for.
  h.dense.w13.resize(2 * 4 * 2, 0.0f);
  h.dense.b13.resize(2 * 4, 0.0f);
  RouterConfig rc;
  rc.top_k = 1;
  try {
    moe_forward_reference(h.dense, {h.router.data(), nullptr}, rc, relu2(), h.x.data(), 1, 1);
    FAIL() << "gated-sized weights were accepted for relu2";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("do not match E=2 H=2 I=2 (non-gated)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moeprep::reference
