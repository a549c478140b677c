// Non-gated experts (relu^2, Nemotron-H): w13 is the up projection alone. Its recipes have the
// up-only shapes, carry no de-interleave and the non-gate_up tile order, undo exactly, and the
// one-pass paths give the recipe's bytes; the CPU kernel-layout MoE reading the result agrees
// with the dense reference, and refuses a layer whose gating disagrees with the activation.
#include <algorithm>
#include <cmath>

#include <gtest/gtest.h>

#include "core/error.h"
#include "core/random.h"
#include "formats/bf16.h"
#include "formats/mxfp4_dequantize.h"
#include "plan/aiter_recipes.h"
#include "plan/fused_scale_recipe.h"
#include "plan/fused_weight_recipe.h"
#include "reference/moe.h"

namespace moeprep::plan {
namespace {

using layout::GateMode;

constexpr GateMode kModes[] = {GateMode::Separated, GateMode::Interleave};

ExpertDims non_gated_dims(int64_t E, int64_t H, int64_t I, const ConvertOptions& o) {
  return padded_dims(E, H, I, o, /*gated=*/false);
}

ByteTensor random_input(const RecipeSpec& spec, SplitMix64& rng) {
  ByteTensor in{spec.in_dtype, spec.in_shape, {}};
  in.bytes.resize(static_cast<size_t>(checked_numel(spec.in_shape, "t") * dtype_bits(spec.in_dtype) / 8));
  for (auto& b : in.bytes) b = static_cast<uint8_t>(rng.next());
  if (spec.in_dtype == Dtype::BF16)  // finite bf16 values: clear the top exponent bit
    for (size_t i = 1; i < in.bytes.size(); i += 2) in.bytes[i] &= 0xBF;
  return in;
}

std::vector<std::string> step_ids(const RecipeSpec& spec) {
  std::vector<std::string> ids;
  for (const auto& s : spec.recipe.to_json()) ids.push_back(s["id"].get<std::string>());
  return ids;
}

TEST(NonGatedRecipes, W13HasTheUpOnlyShapesAndItsOwnLayoutId) {
  for (GateMode mode : kModes) {
    ConvertOptions o;
    o.gate_mode = mode;
    const ExpertDims d = non_gated_dims(3, 160, 96, o);
    const int64_t E = 3, H = 160, I = 96, Hp = d.hidden_pad, Ip = d.intermediate_pad;
    EXPECT_FALSE(d.gated);
    EXPECT_EQ(d.w13_rows(), I);
    EXPECT_EQ(d.w13_rows_pad(), Ip);
    EXPECT_EQ(logical_shape(ExpertRole::W13Weight, d), (Shape{E, I, H / 2}));
    EXPECT_EQ(logical_shape(ExpertRole::W13Scale, d), (Shape{E * I, H / 32}));
    EXPECT_EQ(logical_shape(ExpertRole::W13Bias, d), (Shape{E, I}));
    EXPECT_EQ(logical_shape(ExpertRole::W2Weight, d), (Shape{E, H, I / 2}));  // w2 is unchanged
    // Even a source marked gate/up-interleaved gets no de-interleave: there are no pairs.
    for (bool interleaved : {false, true}) {
      const RecipeSpec w = aiter_recipe(ExpertRole::W13Weight, d, o, interleaved);
      EXPECT_EQ(w.in_shape, (Shape{E, I, H / 32, 16}));
      EXPECT_EQ(w.out_shape, (Shape{E, Ip, Hp / 2}));
      EXPECT_EQ(w.layout_id, std::string("aiter/") + gate_mode_name(mode) + "/w13_weight/non_gated");
      const auto ids = step_ids(w);
      EXPECT_EQ(std::count(ids.begin(), ids.end(), "deinterleave_gate_up_rows"), 0);
      for (const auto& s : w.recipe.to_json()) {
        if (s["id"] == "aiter_shuffle_weight" && mode == GateMode::Interleave) {
          EXPECT_EQ(s["params"]["gate_up"], false);
        }
      }
      const RecipeSpec sc = aiter_recipe(ExpertRole::W13Scale, d, o, interleaved);
      EXPECT_EQ(sc.in_shape, (Shape{E, I, H / 32}));
      for (const auto& s : sc.recipe.to_json()) {
        if (s["id"] == "aiter_shuffle_scale" && mode == GateMode::Interleave) {
          EXPECT_EQ(s["params"]["gate_up"], false);
        }
      }
      const RecipeSpec b = aiter_recipe(ExpertRole::W13Bias, d, o, interleaved);
      EXPECT_EQ(b.in_shape, (Shape{E, I}));
      EXPECT_EQ(b.out_shape, (Shape{E, Ip}));
      EXPECT_EQ(b.out_dtype, Dtype::F32);
    }
    // The gated recipe of the same sizes keeps its 2I rows and its old id.
    const RecipeSpec gated = aiter_recipe(ExpertRole::W13Weight, padded_dims(3, 160, 96, o), o, false);
    EXPECT_EQ(gated.out_shape, (Shape{E, 2 * Ip, Hp / 2}));
    EXPECT_EQ(gated.layout_id, std::string("aiter/") + gate_mode_name(mode) + "/w13_weight");
  }
}

TEST(NonGatedRecipes, EveryRoleUndoesToItsInput) {
  SplitMix64 rng(3);
  for (GateMode mode : kModes)
    for (int64_t E : {1, 2}) {
      ConvertOptions o;
      o.gate_mode = mode;
      const ExpertDims d = non_gated_dims(E, 160, 96, o);
      for (ExpertRole role : kAllRoles) {
        const RecipeSpec spec = aiter_recipe(role, d, o, false);
        const ByteTensor in = random_input(spec, rng);
        const ByteTensor out = spec.recipe.apply(in);
        EXPECT_EQ(out.shape, spec.out_shape) << role_name(role);
        const ByteTensor back = spec.recipe.undo(out, spec.in_shape, spec.in_dtype);
        EXPECT_TRUE(back.bytes == in.bytes) << gate_mode_name(mode) << " E=" << E << " " << role_name(role);
      }
    }
}

TEST(NonGatedRecipes, OnePassPathsGiveTheRecipesBytes) {
  SplitMix64 rng(5);
  for (GateMode mode : kModes)
    for (int64_t E : {1, 2}) {
      ConvertOptions o;
      o.gate_mode = mode;
      const ExpertDims d = non_gated_dims(E, 160, 96, o);
      for (ExpertRole role : {ExpertRole::W13Weight, ExpertRole::W13Scale, ExpertRole::W2Weight, ExpertRole::W2Scale}) {
        const RecipeSpec spec = aiter_recipe(role, d, o, false);
        const ByteTensor in = random_input(spec, rng);
        const ByteTensor expect = spec.recipe.apply(in);
        const bool weight = role == ExpertRole::W13Weight || role == ExpertRole::W2Weight;
        if (!weight && !has_fused_scale_recipe(role, d, o, false)) {
          // Separated scales pad E * I' rows to 256 in the shuffle: only whole multiples are fused.
          EXPECT_NE(spec.out_shape[0], E * d.intermediate_pad) << role_name(role);
          continue;
        }
        std::vector<uint8_t> got(expect.bytes.size(), 0xA5);
        if (weight)
          write_weight_recipe_fused(role, d, o, false, in.bytes.data(), in.bytes.size(), got.data(), got.size());
        else
          write_scale_recipe_fused(role, d, o, false, in.bytes.data(), in.bytes.size(), got.data(), got.size());
        EXPECT_TRUE(got == expect.bytes) << gate_mode_name(mode) << " E=" << E << " " << role_name(role);
      }
    }
}

// One layer of random MXFP4 experts in the canonical layout, made kernel-ready by the recipes.
struct NonGatedLayer {
  ExpertDims d;
  reference::DenseMoeLayer dense;
  std::vector<ByteTensor> ready;  // by role order of kAllRoles minus biases
  std::vector<float> b13, b2;
  std::vector<uint16_t> router;
};

NonGatedLayer make_layer(GateMode mode, uint64_t seed) {
  const int64_t E = 4, H = 96, I = 64;
  ConvertOptions o;
  o.gate_mode = mode;
  NonGatedLayer L;
  L.d = non_gated_dims(E, H, I, o);
  SplitMix64 rng(seed);
  auto codes = [&](int64_t rows, int64_t k) {
    std::vector<uint8_t> v(static_cast<size_t>(E * rows * k / 2));
    for (auto& b : v) b = static_cast<uint8_t>(rng.next());
    return v;
  };
  auto scales = [&](int64_t rows, int64_t k) {
    std::vector<uint8_t> v(static_cast<size_t>(E * rows * k / 32));
    for (auto& b : v) b = static_cast<uint8_t>(122 + rng.next() % 4);  // 2^-5 .. 2^-2
    return v;
  };
  const auto up = codes(I, H), up_s = scales(I, H), down = codes(H, I), down_s = scales(H, I);
  L.dense.experts = E;
  L.dense.hidden = H;
  L.dense.intermediate = I;
  L.dense.w13.resize(static_cast<size_t>(E * I * H));
  L.dense.w2.resize(static_cast<size_t>(E * H * I));
  dequantize_mxfp4_rows(up.data(), up_s.data(), E * I, H, L.dense.w13.data(), "up");
  dequantize_mxfp4_rows(down.data(), down_s.data(), E * H, I, L.dense.w2.data(), "down");
  for (int64_t n = 0; n < E * I; ++n) L.dense.b13.push_back(bf16_to_float(float_to_bf16(static_cast<float>(0.1 * rng.normal()))));
  for (int64_t n = 0; n < E * H; ++n) L.dense.b2.push_back(bf16_to_float(float_to_bf16(static_cast<float>(0.1 * rng.normal()))));
  const std::pair<ExpertRole, const std::vector<uint8_t>*> sources[] = {
      {ExpertRole::W13Weight, &up}, {ExpertRole::W13Scale, &up_s}, {ExpertRole::W2Weight, &down}, {ExpertRole::W2Scale, &down_s}};
  for (const auto& [role, bytes] : sources) {
    const RecipeSpec spec = aiter_recipe(role, L.d, o, false);
    L.ready.push_back(spec.recipe.apply(ByteTensor{spec.in_dtype, spec.in_shape, *bytes}));
  }
  L.b13.assign(static_cast<size_t>(E * L.d.intermediate_pad), 0.0f);
  L.b2.assign(static_cast<size_t>(E * L.d.hidden_pad), 0.0f);
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t n = 0; n < I; ++n) L.b13[e * L.d.intermediate_pad + n] = L.dense.b13[e * I + n];
    for (int64_t n = 0; n < H; ++n) L.b2[e * L.d.hidden_pad + n] = L.dense.b2[e * H + n];
  }
  for (int64_t i = 0; i < E * H; ++i) L.router.push_back(float_to_bf16(static_cast<float>(0.3 * rng.normal())));
  return L;
}

reference::KernelReadyLayer view_of(const NonGatedLayer& L, GateMode mode) {
  reference::KernelReadyLayer v;
  v.mode = mode;
  v.experts = L.d.experts;
  v.hidden = L.d.hidden;
  v.intermediate = L.d.intermediate;
  v.hidden_pad = L.d.hidden_pad;
  v.intermediate_pad = L.d.intermediate_pad;
  v.gated = false;
  v.w13_weight = L.ready[0].bytes.data();
  v.w13_scale = L.ready[1].bytes.data();
  v.w2_weight = L.ready[2].bytes.data();
  v.w2_scale = L.ready[3].bytes.data();
  v.w13_scale_cols = L.ready[1].shape[1];
  v.w2_scale_cols = L.ready[3].shape[1];
  v.w13_bias = L.b13.data();
  v.w2_bias = L.b2.data();
  return v;
}

double rel_err(const std::vector<float>& got, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (got[i] - ref[i]) * static_cast<double>(got[i] - ref[i]);
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

TEST(NonGatedKernelLayout, CpuKernelLayoutMatchesTheDenseReference) {
  for (GateMode mode : kModes) {
    const NonGatedLayer L = make_layer(mode, 17);
    reference::RouterConfig rc;
    rc.top_k = 2;
    reference::ActivationParams act;
    act.kind = reference::Activation::Relu2;
    const int64_t T = 33, H = L.d.hidden;
    SplitMix64 rng(29);
    std::vector<uint16_t> x;
    for (int64_t i = 0; i < T * H; ++i) x.push_back(float_to_bf16(static_cast<float>(rng.normal())));
    const reference::RouterWeights router{L.router.data(), nullptr};
    const auto ref = reference::moe_forward_reference(L.dense, router, rc, act, x.data(), T, T);
    const auto got = reference::moe_forward_kernel_layout_cpu(view_of(L, mode), router, rc, act, x.data(), T, T);
    double norm = 0;
    for (float v : ref.out) norm += v * v;
    ASSERT_GT(norm, 0.0);
    // Same weights both sides: only fp32 sums and the bf16 rounding of relu^2 differ.
    EXPECT_LT(rel_err(got.out, ref.out), 5e-3) << gate_mode_name(mode);
    EXPECT_EQ(got.routing.ids, ref.routing.ids);

    // A gated view of the up-only layer (which would read its rows as [gate; up] halves in the
    // gate_up tile order) is refused outright, naming the disagreement.
    {
      reference::KernelReadyLayer v = view_of(L, mode);
      v.gated = true;
      try {
        reference::moe_forward_kernel_layout_cpu(v, router, rc, act, x.data(), T, T);
        FAIL() << "a gated view with relu2 was accepted";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("the activation is non-gated but w13 holds [gate; up] rows"),
                  std::string::npos)
            << e.what();
      }
    }
    // And a gated activation on the up-only layer likewise.
    reference::ActivationParams silu;
    silu.kind = reference::Activation::SiluGated;
    try {
      reference::moe_forward_kernel_layout_cpu(view_of(L, mode), router, rc, silu, x.data(), T, T);
      FAIL() << "silu on an up-only layer was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("the activation is gated but w13 holds up rows only"), std::string::npos)
          << e.what();
    }
  }
}

TEST(NonGatedKernelLayout, SizesOfTheUpOnlyLayer) {
  for (GateMode mode : kModes) {
    const NonGatedLayer L = make_layer(mode, 3);
    const reference::KernelReadySizes z = reference::check_kernel_ready_layer(view_of(L, mode));
    EXPECT_EQ(z.w13_weight, static_cast<int64_t>(L.ready[0].bytes.size()));
    EXPECT_EQ(z.w13_scale, static_cast<int64_t>(L.ready[1].bytes.size()));
    EXPECT_EQ(z.w13_bias, static_cast<int64_t>(L.b13.size() * 4));
    EXPECT_EQ(z.w2_weight, static_cast<int64_t>(L.ready[2].bytes.size()));
  }
}

}  // namespace
}  // namespace moeprep::plan
