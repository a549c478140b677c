// Each family routes as its model does: the router variant and parameters come from
// config.json, the per-layer tensors (DeepSeek's correction bias, Gemma4's expert scales and
// input scale) from the checkpoint, and they change the routing the way the model means.
#include <cmath>
#include <numeric>
#include <set>

#include <gtest/gtest.h>

#include "core/random.h"
#include "formats/bf16.h"
#include "models/adapter.h"
#include "models/adapter_support.h"
#include "models_test_util.h"

namespace moeprep::models::testing {
namespace {

using reference::RouterVariant;

std::vector<uint16_t> activations(int64_t tokens, int64_t hidden, uint64_t seed) {
  SplitMix64 rng(seed);
  std::vector<uint16_t> x(static_cast<size_t>(tokens * hidden));
  for (auto& v : x) v = float_to_bf16(static_cast<float>(rng.normal()));
  return x;
}

struct Routed {
  reference::Routing routing;
  LayerReference ref;
};

Routed route_layer(const ModelAdapter& a, int64_t layer, int64_t tokens) {
  Routed r;
  r.ref = a.layer_router(layer);
  const auto& info = a.info();
  const auto x = activations(tokens, info.hidden, 7);
  const reference::RouterWeights w{r.ref.router_weight.data(),
                                   r.ref.router_bias.empty() ? nullptr : r.ref.router_bias.data()};
  const auto logits = reference::router_logits(w, x.data(), tokens, info.experts, info.hidden);
  r.routing = reference::route(logits.data(), tokens, info.experts, r.ref.router);
  return r;
}

double weight_sum(const reference::Routing& r, int64_t t) {
  return std::accumulate(r.weights.begin() + t * r.top_k, r.weights.begin() + (t + 1) * r.top_k, 0.0);
}

TEST(FamilyRouting, Qwen3RenormalizesAndQwen2DoesNot) {
  for (const bool qwen2 : {false, true}) {
    const auto c = io::Checkpoint::open(shipped_tiny(qwen2 ? "qwen2_moe" : "qwen3_moe"));
    const auto a = make_adapter(c);
    EXPECT_EQ(a->info().router.variant, RouterVariant::SoftmaxThenTopk);
    EXPECT_EQ(a->info().router.renormalize, !qwen2);
    EXPECT_EQ(a->info().activation.kind, reference::Activation::SiluGated);
    const Routed r = route_layer(*a, qwen2 ? 1 : 2, 64);
    std::set<int32_t> used(r.routing.ids.begin(), r.routing.ids.end());
    EXPECT_GE(used.size(), 3u);  // routing is spread, not stuck on two experts
    for (int64_t t = 0; t < 64; ++t) {
      if (qwen2)
        EXPECT_LT(weight_sum(r.routing, t), 0.999) << t;  // softmax over all experts, not renormalized
      else
        EXPECT_NEAR(weight_sum(r.routing, t), 1.0, 1e-6) << t;
    }
  }
}

TEST(FamilyRouting, Qwen3DenseLayerIsNotConverted) {
  const auto c = io::Checkpoint::open(shipped_tiny("qwen3_moe"));
  const auto a = make_adapter(c);
  std::vector<int64_t> layers;
  for (const auto& l : a->moe_layers()) layers.push_back(l.layer);
  EXPECT_EQ(layers, (std::vector<int64_t>{0, 2}));
  EXPECT_NE(c.try_find("model.layers.1.mlp.gate_proj.weight"), nullptr);
}

TEST(FamilyRouting, MixtralSoftmaxesTheTopK) {
  const auto c = io::Checkpoint::open(shipped_tiny("mixtral"));
  const auto a = make_adapter(c);
  EXPECT_EQ(a->info().router.variant, RouterVariant::SoftmaxAfterTopk);
  const Routed r = route_layer(*a, 1, 32);
  for (int64_t t = 0; t < 32; ++t) EXPECT_NEAR(weight_sum(r.routing, t), 1.0, 1e-6);
}

TEST(FamilyRouting, DeepSeekGroupsAndCorrectionBiasDecideThePicks) {
  const auto c = io::Checkpoint::open(shipped_tiny("deepseek_v3"));
  const auto a = make_adapter(c);
  const auto& rc = a->info().router;
  EXPECT_EQ(rc.variant, RouterVariant::SigmoidGroupedBiased);
  EXPECT_EQ(rc.n_group, 2);
  EXPECT_EQ(rc.topk_group, 1);
  EXPECT_DOUBLE_EQ(rc.routed_scaling_factor, 2.5);
  EXPECT_TRUE(rc.renormalize);
  std::vector<int64_t> layers;
  for (const auto& l : a->moe_layers()) layers.push_back(l.layer);
  EXPECT_EQ(layers, (std::vector<int64_t>{1, 2}));  // first_k_dense_replace = 1

  const int64_t T = 256, E = a->info().experts;
  const Routed r = route_layer(*a, 1, T);
  ASSERT_EQ(r.ref.router.correction_bias.size(), static_cast<size_t>(E));
  EXPECT_EQ(r.ref.router.correction_bias, copy_tensor<float>(c, "model.layers.1.mlp.gate.e_score_correction_bias"));
  for (int64_t t = 0; t < T; ++t) {
    // topk_group = 1: every pick of a token lies in one group of E/2 experts.
    std::set<int32_t> groups;
    for (int j = 0; j < r.routing.top_k; ++j) groups.insert(r.routing.ids[t * r.routing.top_k + j] / (E / 2));
    EXPECT_EQ(groups.size(), 1u) << t;
    // Weights: renormalized sigmoid scores times routed_scaling_factor.
    EXPECT_NEAR(weight_sum(r.routing, t), 2.5, 1e-5) << t;
  }
  // Without the correction bias some tokens pick other experts.
  reference::RouterConfig unbiased = r.ref.router;
  unbiased.correction_bias.clear();
  const auto x = activations(T, a->info().hidden, 7);
  const reference::RouterWeights w{r.ref.router_weight.data(), nullptr};
  const auto logits = reference::router_logits(w, x.data(), T, E, a->info().hidden);
  const auto plain = reference::route(logits.data(), T, E, unbiased);
  int64_t changed = 0;
  for (int64_t t = 0; t < T; ++t) {
    std::set<int32_t> s1(r.routing.ids.begin() + t * 2, r.routing.ids.begin() + t * 2 + 2);
    std::set<int32_t> s2(plain.ids.begin() + t * 2, plain.ids.begin() + t * 2 + 2);
    changed += s1 != s2;
  }
  EXPECT_GT(changed, T / 20) << "the correction bias should steer a share of the tokens";
  EXPECT_LT(changed, T) << "but not every one";
}

TEST(FamilyRouting, Gemma4ScalesPickedWeightsPerExpertAndFoldsTheInputScale) {
  const auto c = io::Checkpoint::open(shipped_tiny("gemma4"));
  const auto a = make_adapter(c);
  EXPECT_EQ(a->info().router.variant, RouterVariant::Gemma4);
  const std::string p = "model.language_model.layers.1.router.";
  const Routed r = route_layer(*a, 1, 64);
  const auto& scale = r.ref.router.per_expert_scale;
  ASSERT_EQ(scale.size(), 4u);
  const auto stored = copy_tensor<uint16_t>(c, p + "per_expert_scale");
  for (size_t e = 0; e < 4; ++e) EXPECT_EQ(scale[e], bf16_to_float(stored[e]));
  for (int64_t t = 0; t < 64; ++t) {
    // Softmax over the top-k sums to one once each weight is divided by its expert's scale.
    double sum = 0;
    for (int j = 0; j < 2; ++j) sum += r.routing.weights[t * 2 + j] / scale[r.routing.ids[t * 2 + j]];
    EXPECT_NEAR(sum, 1.0, 1e-5) << t;
  }
  // Router weights: proj[e][h] * scale[h] / sqrt(H), rounded to bf16.
  const auto proj = copy_tensor<uint16_t>(c, p + "proj.weight");
  const auto in_scale = copy_tensor<uint16_t>(c, p + "scale");
  for (int64_t i : {0, 77, 255}) {
    const float expect = bf16_to_float(proj[i]) * bf16_to_float(in_scale[i % 64]) / 8.0f;
    EXPECT_EQ(r.ref.router_weight[i], float_to_bf16(expect)) << i;
  }
}

TEST(FamilyRouting, GptOssBf16KeepsTheGptOssRouterAndActivation) {
  const auto c = io::Checkpoint::open(shipped_tiny("gpt_oss_bf16"));
  const auto a = make_adapter(c);
  EXPECT_EQ(a->info().router.variant, RouterVariant::SoftmaxAfterTopk);
  EXPECT_EQ(a->info().activation.kind, reference::Activation::GptOssClampedSwiglu);
  const Routed r = route_layer(*a, 0, 8);
  EXPECT_EQ(r.ref.router_bias.size(), 4u);  // the router's bias is part of GPT-OSS routing
  const auto layers = a->moe_layers();
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_TRUE(layers[0].gate_up_interleaved);
  EXPECT_TRUE(layers[0].sources.count(Role::W13Bias));
  EXPECT_TRUE(layers[0].sources.at(Role::W13Bias).transform.empty());
}

}  // namespace
}  // namespace moeprep::models::testing
