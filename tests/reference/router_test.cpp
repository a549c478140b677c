#include "reference/router.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>

#include "core/error.h"
#include "reference/topk_key.h"

namespace moeprep::reference {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// The logit whose sigmoid is s, so that sigmoid cases can be written in probabilities.
float logit_of(double s) { return static_cast<float>(std::log(s / (1.0 - s))); }

RouterConfig config(RouterVariant v, int k) {
  RouterConfig c;
  c.variant = v;
  c.top_k = k;
  return c;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// ---- hand-computed cases, one per variant --------------------------------------------------

TEST(Router, SoftmaxAfterTopkPicksLargestLogitsAndSoftmaxesThem) {
  const float logits[] = {1, 3, 2, 0};
  Routing r = route(logits, 1, 4, config(RouterVariant::SoftmaxAfterTopk, 2));
  ASSERT_EQ(r.ids, (std::vector<int32_t>{1, 2}));
  const double e = std::exp(1.0);  // softmax(3, 2) = (e, 1) / (e + 1)
  EXPECT_NEAR(r.weights[0], e / (e + 1), 1e-7);
  EXPECT_NEAR(r.weights[1], 1 / (e + 1), 1e-7);
  EXPECT_TRUE(r.nan_tokens.empty());
}

TEST(Router, SoftmaxThenTopkKeepsFullSoftmaxProbabilitiesUnlessRenormalized) {
  // p = softmax(log 1, log 2, log 3, log 4) = (0.1, 0.2, 0.3, 0.4).
  const float logits[] = {0.0f, std::log(2.0f), std::log(3.0f), std::log(4.0f)};
  RouterConfig c = config(RouterVariant::SoftmaxThenTopk, 2);
  Routing r = route(logits, 1, 4, c);
  ASSERT_EQ(r.ids, (std::vector<int32_t>{3, 2}));
  EXPECT_NEAR(r.weights[0], 0.4, 1e-7);
  EXPECT_NEAR(r.weights[1], 0.3, 1e-7);
  c.renormalize = true;
  r = route(logits, 1, 4, c);
  ASSERT_EQ(r.ids, (std::vector<int32_t>{3, 2}));
  EXPECT_NEAR(r.weights[0], 4.0 / 7.0, 1e-7);
  EXPECT_NEAR(r.weights[1], 3.0 / 7.0, 1e-7);
}

TEST(Router, SigmoidGroupedDropsLosingGroupsEvenWithTheBestExpert) {
  // Sigmoid scores (groups of 2): g0 = {0.9, 0.1} sum 1.0, g1 = {0.6, 0.6} 1.2,
  // g2 = {0.8, 0.7} 1.5, g3 = {0.2, 0.3} 0.5. Keep g2, g1: expert 0 (0.9) is out.
  const double s[] = {0.9, 0.1, 0.6, 0.6, 0.8, 0.7, 0.2, 0.3};
  std::vector<float> logits;
  for (double x : s) logits.push_back(logit_of(x));
  RouterConfig c = config(RouterVariant::SigmoidGroupedBiased, 2);
  c.n_group = 4;
  c.topk_group = 2;
  Routing r = route(logits.data(), 1, 8, c);
  ASSERT_EQ(r.ids, (std::vector<int32_t>{4, 5}));
  EXPECT_NEAR(r.weights[0], 0.8, 1e-6);
  EXPECT_NEAR(r.weights[1], 0.7, 1e-6);

  // Renormalized (sum + 1e-20) and the routed scaling factor folded in.
  c.renormalize = true;
  c.routed_scaling_factor = 2.5;
  r = route(logits.data(), 1, 8, c);
  ASSERT_EQ(r.ids, (std::vector<int32_t>{4, 5}));
  EXPECT_NEAR(r.weights[0], 2.5 * 0.8 / 1.5, 1e-6);
  EXPECT_NEAR(r.weights[1], 2.5 * 0.7 / 1.5, 1e-6);
}

TEST(Router, SigmoidGroupedBiasSteersTheChoiceButNotTheWeight) {
  const double s[] = {0.9, 0.1, 0.6, 0.6, 0.8, 0.7, 0.2, 0.3};
  std::vector<float> logits;
  for (double x : s) logits.push_back(logit_of(x));
  RouterConfig c = config(RouterVariant::SigmoidGroupedBiased, 2);
  c.n_group = 4;
  c.topk_group = 1;
  // +0.25 on expert 5: choice 0.95 beats expert 4's 0.8, and g2 (1.75) is the only kept group.
  c.correction_bias.assign(8, 0.0f);
  c.correction_bias[5] = 0.25f;
  Routing r = route(logits.data(), 1, 8, c);
  ASSERT_EQ(r.ids, (std::vector<int32_t>{5, 4}));
  EXPECT_NEAR(r.weights[0], 0.7, 1e-6);  // unbiased sigmoid
  EXPECT_NEAR(r.weights[1], 0.8, 1e-6);
}

TEST(Router, Gemma4ScalesTheSoftmaxOfTheTopkByPerExpertScale) {
  const float logits[] = {2, 0, 1, -1};
  RouterConfig c = config(RouterVariant::Gemma4, 2);
  c.per_expert_scale = {0.5f, 1.0f, 2.0f, 1.0f};
  Routing r = route(logits, 1, 4, c);
  ASSERT_EQ(r.ids, (std::vector<int32_t>{0, 2}));
  const double e = std::exp(1.0);
  EXPECT_NEAR(r.weights[0], 0.5 * e / (e + 1), 1e-7);
  EXPECT_NEAR(r.weights[1], 2.0 * 1 / (e + 1), 1e-7);
}

// ---- ties, signed zeros, infinities, NaN ---------------------------------------------------

RouterConfig any_variant(RouterVariant v, int k) {
  RouterConfig c = config(v, k);
  if (v == RouterVariant::SigmoidGroupedBiased) {
    c.n_group = 4;
    c.topk_group = 2;
    c.renormalize = true;
  }
  if (v == RouterVariant::Gemma4) c.per_expert_scale.assign(8, 1.0f);
  return c;
}

const RouterVariant kVariants[] = {RouterVariant::SoftmaxAfterTopk, RouterVariant::SoftmaxThenTopk,
                                   RouterVariant::SigmoidGroupedBiased, RouterVariant::Gemma4};

TEST(Router, AllEqualRowPicksTheLowestIndicesInEveryVariant) {
  std::vector<float> logits(8, 0.25f);
  for (RouterVariant v : kVariants) {
    Routing r = route(logits.data(), 1, 8, any_variant(v, 3));
    EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1, 2})) << router_variant_name(v);
  }
}

TEST(Router, SignedZerosAreEqualScoresSoTheLowerIndexWins) {
  // -0.0 and +0.0 compare equal: the tie rule decides, not the sign bit.
  const float minus_first[] = {-0.0f, 0.0f, -0.0f, 0.0f, -1.0f, -2.0f, -3.0f, -4.0f};
  const float plus_first[] = {0.0f, -0.0f, 0.0f, -0.0f, -1.0f, -2.0f, -3.0f, -4.0f};
  for (RouterVariant v : kVariants) {
    if (v == RouterVariant::SigmoidGroupedBiased) continue;  // groups would reorder; covered below
    EXPECT_EQ(route(minus_first, 1, 8, any_variant(v, 2)).ids, (std::vector<int32_t>{0, 1})) << router_variant_name(v);
    EXPECT_EQ(route(plus_first, 1, 8, any_variant(v, 2)).ids, (std::vector<int32_t>{0, 1})) << router_variant_name(v);
  }
  RouterConfig flat = config(RouterVariant::SigmoidGroupedBiased, 3);
  EXPECT_EQ(route(minus_first, 1, 8, flat).ids, (std::vector<int32_t>{0, 1, 2}));
  // The selection key sees the two zeros as one value; the strict order map does not.
  EXPECT_EQ(selection_value_key(-0.0f), selection_value_key(0.0f));
  EXPECT_LT(monotone_float_key(-0.0f), monotone_float_key(0.0f));
}

TEST(Router, InfiniteLogitsShareTheWeightInsteadOfMakingNaN) {
  const float logits[] = {kInf, 1.0f, kInf, 0.0f};
  Routing r = route(logits, 1, 4, config(RouterVariant::SoftmaxAfterTopk, 3));
  ASSERT_EQ(r.ids, (std::vector<int32_t>{0, 2, 1}));
  EXPECT_FLOAT_EQ(r.weights[0], 0.5f);
  EXPECT_FLOAT_EQ(r.weights[1], 0.5f);
  EXPECT_FLOAT_EQ(r.weights[2], 0.0f);
}

TEST(Router, RenormalizationEpsilonKeepsAllZeroSigmoidWeightsFinite) {
  std::vector<float> logits(8, -kInf);  // every sigmoid is 0: the weight sum is 0
  RouterConfig c = config(RouterVariant::SigmoidGroupedBiased, 2);
  c.renormalize = true;
  Routing r = route(logits.data(), 1, 8, c);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(r.weights, (std::vector<float>{0.0f, 0.0f}));
}

TEST(Router, NaNTokensAreReportedWithNoPicks) {
  std::vector<float> logits(4 * 8);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>((i * 7) % 11) - 5.0f;
  logits[1 * 8 + 6] = kNaN;
  logits[3 * 8 + 0] = kNaN;
  for (RouterVariant v : kVariants) {
    Routing r = route(logits.data(), 4, 8, any_variant(v, 2));
    EXPECT_EQ(r.nan_tokens, (std::vector<int64_t>{1, 3})) << router_variant_name(v);
    for (int64_t t : {1, 3}) {
      EXPECT_EQ(r.ids[t * 2], -1);
      EXPECT_EQ(r.ids[t * 2 + 1], -1);
      EXPECT_EQ(r.weights[t * 2], 0.0f);
      EXPECT_EQ(r.weights[t * 2 + 1], 0.0f);
    }
    for (int64_t t : {0, 2}) {
      EXPECT_GE(r.ids[t * 2], 0) << router_variant_name(v);
      EXPECT_FALSE(std::isnan(r.weights[t * 2]));
    }
  }
}

// ---- negative choice scores and the key packing --------------------------------------------

// Top-k by packed 64-bit keys, the way a max-reduction or a sort on the GPU picks.
std::vector<int32_t> top_k_by_keys(const std::vector<float>& scores, int k, uint32_t (*value_key)(float)) {
  std::vector<uint64_t> keys;
  for (size_t e = 0; e < scores.size(); ++e) keys.push_back(pack_topk_key(value_key(scores[e]), static_cast<uint32_t>(e)));
  std::sort(keys.rbegin(), keys.rend());
  std::vector<int32_t> ids;
  for (int i = 0; i < k; ++i) ids.push_back(static_cast<int32_t>(topk_key_index(keys[i])));
  return ids;
}

uint32_t naive_bits_key(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return bits;
}

// The biased choice scores of sigmoid_grouped_biased, as the router ranks them.
std::vector<float> choice_scores(const std::vector<float>& logits, const std::vector<float>& bias) {
  std::vector<float> c;
  for (size_t e = 0; e < logits.size(); ++e) c.push_back(static_cast<float>(1.0 / (1.0 + std::exp(-double(logits[e])))) + bias[e]);
  return c;
}

TEST(Router, AllNegativeChoiceScoresStillPickTheLargest) {
  const std::vector<float> logits = {-1.0f, 2.0f, 0.5f, -3.0f, 1.5f, 0.0f, -0.5f, 3.0f};
  RouterConfig c = config(RouterVariant::SigmoidGroupedBiased, 3);
  c.correction_bias.assign(8, -2.0f);  // every choice score lies in (-2, -1)
  Routing r = route(logits.data(), 1, 8, c);
  ASSERT_EQ(r.ids, (std::vector<int32_t>{7, 1, 4}));  // the three largest logits
  EXPECT_NEAR(r.weights[0], 1 / (1 + std::exp(-3.0)), 1e-6);

  // The regression is real: ranking float bits as unsigned picks the most negative scores.
  std::vector<float> choice = choice_scores(logits, c.correction_bias);
  EXPECT_EQ(top_k_by_keys(choice, 3, monotone_float_key), r.ids);
  EXPECT_EQ(top_k_by_keys(choice, 3, naive_bits_key), (std::vector<int32_t>{3, 0, 6}));
}

TEST(Router, MixedSignChoiceScoresRankAcrossZero) {
  const std::vector<float> logits = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};  // s = 0.5
  RouterConfig c = config(RouterVariant::SigmoidGroupedBiased, 3);
  c.correction_bias = {-2.0f, 0.25f, -0.75f, 1.0f, -0.5f, -1.0f, 0.5f, -0.25f};
  // choice = 0.5 + bias: 1.5 (e3), 1.0 (e6), 0.75 (e1), 0.25 (e7), 0 (e4), -0.25 (e2), ...
  Routing r = route(logits.data(), 1, 8, c);
  ASSERT_EQ(r.ids, (std::vector<int32_t>{3, 6, 1}));
  for (float w : r.weights) EXPECT_NEAR(w, 0.5, 1e-7);

  std::vector<float> choice = choice_scores(logits, c.correction_bias);
  EXPECT_EQ(top_k_by_keys(choice, 3, monotone_float_key), r.ids);
  // Bits as unsigned rank negatives above positives: -1.5 (e0) first.
  EXPECT_NE(top_k_by_keys(choice, 3, naive_bits_key), r.ids);
  EXPECT_EQ(top_k_by_keys(choice, 1, naive_bits_key), (std::vector<int32_t>{0}));
}

TEST(Router, MonotoneKeyOrderEqualsFloatOrderOverTheWholeRange) {
  const float lo = std::numeric_limits<float>::denorm_min();
  std::vector<float> ascending = {-kInf, -std::numeric_limits<float>::max(), -1e30f, -2.0f, -1.0f,
                                  -std::numeric_limits<float>::min(), -lo, -0.0f, 0.0f, lo,
                                  std::numeric_limits<float>::min(), 1.0f, 2.0f, 1e30f,
                                  std::numeric_limits<float>::max(), kInf};
  for (size_t i = 1; i < ascending.size(); ++i) {
    EXPECT_LT(monotone_float_key(ascending[i - 1]), monotone_float_key(ascending[i])) << ascending[i - 1] << " vs " << ascending[i];
  }
  // A random sweep over bit patterns (NaNs skipped): the key order equals the float order, and
  // the key decodes back to the same bits.
  std::mt19937 rng(12345);
  std::vector<float> sweep;
  while (sweep.size() < 4000) {
    uint32_t bits = rng();
    float f;
    std::memcpy(&f, &bits, 4);
    if (!std::isnan(f)) sweep.push_back(f);
  }
  std::sort(sweep.begin(), sweep.end());
  for (size_t i = 1; i < sweep.size(); ++i) {
    if (sweep[i - 1] < sweep[i]) {
      ASSERT_LT(monotone_float_key(sweep[i - 1]), monotone_float_key(sweep[i]));
    }
  }
  for (float f : sweep) {
    float back = float_from_order_key(monotone_float_key(f));
    ASSERT_EQ(std::memcmp(&back, &f, 4), 0);
  }
  // No real score packs to the "no candidate" key.
  EXPECT_GT(selection_value_key(-kInf), kNoCandidate);
}

TEST(Router, PackedKeysBreakTiesTowardTheLowerIndex) {
  uint32_t v = selection_value_key(1.5f);
  EXPECT_GT(pack_topk_key(v, 3), pack_topk_key(v, 4));
  EXPECT_GT(pack_topk_key(selection_value_key(1.6f), 500), pack_topk_key(v, 0));
  EXPECT_EQ(topk_key_index(pack_topk_key(v, 511)), 511u);
  EXPECT_EQ(top_k_by_keys({1, 1, 1, 1}, 2, monotone_float_key), (std::vector<int32_t>{0, 1}));
}

// ---- dense form, names, JSON, validation ---------------------------------------------------

TEST(Router, RoutingToDenseScattersWeightsAndSkipsEmptyPicks) {
  Routing r;
  r.tokens = 2;
  r.top_k = 2;
  r.ids = {2, 0, -1, -1};
  r.weights = {0.75f, 0.25f, 0.0f, 0.0f};
  EXPECT_EQ(routing_to_dense(r, 3), (std::vector<float>{0.25f, 0.0f, 0.75f, 0, 0, 0}));
  r.ids = {2, 2, -1, -1};  // a duplicate pick shows up as a summed weight
  EXPECT_EQ(routing_to_dense(r, 3)[2], 1.0f);
  r.ids = {3, 0, -1, -1};
  EXPECT_NE(error_of([&] { routing_to_dense(r, 3); }).find("picks expert 3 of 3"), std::string::npos);
}

TEST(Router, VariantNamesRoundTripAndUnknownNamesAreRejected) {
  for (RouterVariant v : kVariants) EXPECT_EQ(router_variant_from_name(router_variant_name(v)), v);
  EXPECT_STREQ(router_variant_name(RouterVariant::SigmoidGroupedBiased), "sigmoid_grouped_biased");
  std::string msg = error_of([] { router_variant_from_name("softmax_topk"); });
  EXPECT_NE(msg.find("'softmax_topk' is unknown"), std::string::npos) << msg;
}

TEST(Router, ConfigJsonRoundTripsAndOmitsEmptyVectors) {
  RouterConfig c = config(RouterVariant::SigmoidGroupedBiased, 8);
  c.renormalize = true;
  c.n_group = 8;
  c.topk_group = 4;
  c.routed_scaling_factor = 2.5;
  c.correction_bias = {-2.0f, 0.125f, 1e-7f, -3.5f};
  nlohmann::ordered_json j = c.to_json();
  EXPECT_EQ(j.dump(),
            R"({"variant":"sigmoid_grouped_biased","top_k":8,"renormalize":true,"n_group":8,"topk_group":4,)"
            R"("routed_scaling_factor":2.5,"correction_bias":[-2.0,0.125,1.0000000116860974e-07,-3.5]})");
  RouterConfig back = RouterConfig::from_json(nlohmann::json::parse(j.dump()));
  EXPECT_EQ(back.variant, c.variant);
  EXPECT_EQ(back.top_k, 8);
  EXPECT_TRUE(back.renormalize);
  EXPECT_EQ(back.n_group, 8);
  EXPECT_EQ(back.topk_group, 4);
  EXPECT_EQ(back.routed_scaling_factor, 2.5);
  EXPECT_EQ(back.correction_bias, c.correction_bias);  // exact float round trip
  EXPECT_TRUE(back.per_expert_scale.empty());

  RouterConfig g = config(RouterVariant::Gemma4, 2);
  g.per_expert_scale = {0.5f, 2.0f};
  nlohmann::ordered_json gj = g.to_json();
  EXPECT_FALSE(gj.contains("correction_bias"));
  EXPECT_EQ(RouterConfig::from_json(gj).per_expert_scale, g.per_expert_scale);
}

TEST(Router, ConfigJsonErrorsNameTheKey) {
  auto from = [](const char* text) { return error_of([&] { RouterConfig::from_json(nlohmann::json::parse(text)); }); };
  EXPECT_NE(from(R"({"top_k":2})").find("missing key 'variant'"), std::string::npos);
  EXPECT_NE(from(R"({"variant":"gemma4"})").find("missing key 'top_k'"), std::string::npos);
  EXPECT_NE(from(R"({"variant":"gemma4","top_k":"2"})").find("'top_k' must be an integer"), std::string::npos);
  EXPECT_NE(from(R"({"variant":"gemma4","top_k":2,"topk":3})").find("unknown key 'topk'"), std::string::npos);
  EXPECT_NE(from(R"({"variant":"gemma4","top_k":2,"per_expert_scale":[1,"x"]})").find("'per_expert_scale' holds"),
            std::string::npos);
  EXPECT_NE(from(R"({"variant":"topk","top_k":2})").find("'topk' is unknown"), std::string::npos);
}

TEST(Router, InvalidConfigsAreRejectedNamingTheParameter) {
  const float logits[8] = {};
  auto msg = [&](RouterConfig c) { return error_of([&] { route(logits, 1, 8, c); }); };
  EXPECT_NE(msg(config(RouterVariant::SoftmaxAfterTopk, 9)).find("top_k 9 is outside [1, 8]"), std::string::npos);
  EXPECT_NE(msg(config(RouterVariant::SoftmaxAfterTopk, 0)).find("top_k 0"), std::string::npos);
  RouterConfig g = config(RouterVariant::SigmoidGroupedBiased, 2);
  g.n_group = 3;
  EXPECT_NE(msg(g).find("n_group 3 does not divide"), std::string::npos);
  g.n_group = 4;
  g.topk_group = 5;
  EXPECT_NE(msg(g).find("topk_group 5 is outside [1, n_group = 4]"), std::string::npos);
  g.topk_group = 1;
  g.top_k = 3;  // one kept group of 2 experts
  EXPECT_NE(msg(g).find("top_k 3 exceeds the 2 experts"), std::string::npos);
  g.top_k = 2;
  g.correction_bias = {1.0f};
  EXPECT_NE(msg(g).find("correction_bias has 1 entries"), std::string::npos);
  RouterConfig s = config(RouterVariant::Gemma4, 2);
  s.per_expert_scale = {1, 2, 3};
  EXPECT_NE(msg(s).find("per_expert_scale has 3 entries"), std::string::npos);
}

}  // namespace
}  // namespace moeprep::reference
