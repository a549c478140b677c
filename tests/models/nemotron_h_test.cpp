// Nemotron-H (model_type nemotron_h): non-gated relu^2 experts end to end on the CPU. The shipped
// tiny checkpoint is what the generator makes; the adapter maps the HF names (experts' up_proj
// and down_proj, the router and its correction bias) and refuses what it would misread; convert
// + verify pass every stage in both gate modes with w13 holding the up rows only; Mamba,
// attention, shared-expert and router tensors are copied unchanged; a manifest that calls the
// experts gated fails verify.
#include <cstring>
#include <functional>

#include <gtest/gtest.h>

#include "models/activation_config.h"
#include "models/adapter.h"
#include "models/detect.h"
#include "plan/manifest.h"
#include "plan/manifest_model.h"
#include "models_test_util.h"

namespace moeprep::models::testing {
namespace {

using plan::StageStatus;
using plan::testing::convert;
using plan::testing::failures_text;
using plan::testing::stage;
using plan::testing::verify;

const char* const kFamily = "nemotron_h";

std::map<std::string, std::string> all_files(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out[e.path().filename().string()] = plan::testing::read_file(e.path());
  return out;
}

std::string plan_error(const fs::path& src) {
  return bad_input_message([&] {
    const auto c = io::Checkpoint::open(src);
    plan::build_plan(c, plan::ConvertOptions{});
  });
}

TEST(NemotronH, ShippedTinyCheckpointIsWhatTheGeneratorMakes) {
  TempDir dir;
  const auto fresh = all_files(make_family(dir, kFamily));
  const auto shipped = all_files(shipped_tiny(kFamily));
  ASSERT_EQ(fresh.size(), shipped.size()) << shipped_tiny(kFamily);
  uint64_t total = 0;
  for (const auto& [name, bytes] : fresh) {
    ASSERT_TRUE(shipped.count(name)) << name;
    EXPECT_TRUE(shipped.at(name) == bytes) << name << " differs from the generator's";
    total += bytes.size();
  }
  EXPECT_LT(total, 420u * 1000);
}

TEST(NemotronH, AdapterMapsTheHfNamesAndConfig) {
  const auto c = io::Checkpoint::open(shipped_tiny(kFamily));
  const auto adapter = make_adapter(c);
  const ModelInfo& info = adapter->info();
  EXPECT_EQ(info.family, "nemotron_h");
  EXPECT_EQ(info.layers, 4);
  EXPECT_EQ(info.experts, 8);
  EXPECT_EQ(info.hidden, 96);
  EXPECT_EQ(info.intermediate, 32);
  EXPECT_EQ(info.activation.kind, reference::Activation::Relu2);
  EXPECT_FALSE(reference::is_gated(info.activation.kind));
  EXPECT_EQ(info.router.variant, reference::RouterVariant::SigmoidGroupedBiased);
  EXPECT_EQ(info.router.top_k, 2);
  EXPECT_EQ(info.router.n_group, 2);
  EXPECT_EQ(info.router.topk_group, 1);
  EXPECT_DOUBLE_EQ(info.router.routed_scaling_factor, 2.5);
  EXPECT_TRUE(info.router.renormalize);

  const std::vector<MoeLayer> layers = adapter->moe_layers();
  ASSERT_EQ(layers.size(), 2u);  // "ME*E": layers 1 and 3
  EXPECT_EQ(layers[0].layer, 1);
  EXPECT_EQ(layers[1].layer, 3);
  const MoeLayer& l = layers[0];
  EXPECT_EQ(l.output_prefix, "backbone.layers.1.mixer.experts.");
  EXPECT_FALSE(l.gate_up_interleaved);
  EXPECT_EQ(l.sources.count(Role::W13Bias), 0u);
  const CanonicalSource& w13 = l.sources.at(Role::W13Weight);
  EXPECT_EQ(w13.shape, (Shape{8, 32, 96 / 32, 16}));  // the up rows only: I, not 2I
  EXPECT_EQ(w13.transform, "quantize_mxfp4");
  ASSERT_EQ(w13.tensors.size(), 8u);
  EXPECT_EQ(w13.tensors[0], "backbone.layers.1.mixer.experts.0.up_proj.weight");
  EXPECT_EQ(w13.tensors[7], "backbone.layers.1.mixer.experts.7.up_proj.weight");
  EXPECT_EQ(l.sources.at(Role::W2Weight).shape, (Shape{8, 96, 32 / 32, 16}));
  EXPECT_EQ(l.sources.at(Role::W2Weight).tensors[3], "backbone.layers.1.mixer.experts.3.down_proj.weight");
  EXPECT_EQ(l.consumed.size(), 16u);  // the experts only; router and shared expert are copied

  const LayerReference r = adapter->layer_router(3);
  EXPECT_EQ(r.router_weight.size(), 8u * 96u);
  EXPECT_EQ(r.router.correction_bias.size(), 8u);
  const LayerReference d = adapter->layer_reference(1, {0, 5});
  EXPECT_EQ(d.dense.w13.size(), 2u * 32u * 96u);  // two experts, I x H each
  EXPECT_EQ(d.dense.b13.size(), 2u * 32u);
}

TEST(NemotronH, RefusesWhatItWouldMisread) {
  TempDir dir;
  // A gate projection inside the expert block (a gated layout under this model_type).
  {
    const fs::path src = make_family(dir, kFamily, "gate_proj");
    const std::string extra = "backbone.layers.3.mixer.experts.2.gate_proj.weight";
    add_tensor(src, extra, Dtype::BF16, {32, 96});
    const std::string msg = plan_error(src);
    EXPECT_NE(msg.find("tensor '" + extra + "' inside an MoE expert block is not part of the Nemotron-H layout"),
              std::string::npos)
        << msg;
  }
  // A latent projection in the MoE mixer.
  {
    const fs::path src = make_family(dir, kFamily, "latent");
    const std::string extra = "backbone.layers.1.mixer.fc1_latent_proj.weight";
    add_tensor(src, extra, Dtype::BF16, {32, 96});
    const std::string msg = plan_error(src);
    EXPECT_NE(msg.find("tensor '" + extra + "' inside an MoE expert block"), std::string::npos) << msg;
  }
  // Routed experts in a layer the pattern makes Mamba.
  {
    const fs::path src = make_family(dir, kFamily, "dense");
    const std::string extra = "backbone.layers.0.mixer.experts.0.up_proj.weight";
    add_tensor(src, extra, Dtype::BF16, {32, 96});
    const std::string msg = plan_error(src);
    EXPECT_NE(msg.find("tensor '" + extra + "' holds routed experts, but config.json makes layer 0 a dense layer"),
              std::string::npos)
        << msg;
  }
  // Experts of a multi-token-prediction layer would be copied through unconverted.
  {
    const fs::path src = make_family(dir, kFamily, "mtp");
    const std::string extra = "mtp.layers.0.mixer.experts.0.up_proj.weight";
    add_tensor(src, extra, Dtype::BF16, {32, 96});
    const std::string msg = plan_error(src);
    EXPECT_NE(msg.find("tensor '" + extra + "' holds routed experts outside backbone.layers"), std::string::npos)
        << msg;
  }
  // A missing expert tensor is named.
  {
    const fs::path src = make_family(dir, kFamily, "missing");
    remove_tensor(src, "backbone.layers.3.mixer.experts.6.down_proj.weight");
    const std::string msg = plan_error(src);
    EXPECT_NE(msg.find("backbone.layers.3.mixer.experts.6.down_proj.weight"), std::string::npos) << msg;
  }
  // Config values moeprep cannot honour, each named with its key.
  const struct {
    const char* name;
    std::function<void(nlohmann::ordered_json&)> edit;
    const char* expect;
  } configs[] = {
      {"silu", [](auto& j) { j["mlp_hidden_act"] = "silu"; },
       "\"mlp_hidden_act\" is 'silu': a gated activation, but Nemotron-H experts have no gate projection"},
      {"made_up", [](auto& j) { j["mlp_hidden_act"] = "swirly"; }, "\"mlp_hidden_act\" is 'swirly': not an expert activation"},
      {"bias", [](auto& j) { j["mlp_bias"] = true; }, "\"mlp_bias\" is true: Nemotron-H experts with biases are not supported"},
      {"latent", [](auto& j) { j["moe_latent_size"] = 64; }, "\"moe_latent_size\" is set: latent MoE"},
      {"pattern", [](auto& j) { j["hybrid_override_pattern"] = "ME*X"; }, "\"hybrid_override_pattern\" has 'X'"},
      {"count", [](auto& j) { j["num_hidden_layers"] = 5; },
       "\"num_hidden_layers\" is 5, but the layer pattern has 4 layers"},
      {"no_pattern", [](auto& j) { j.erase("hybrid_override_pattern"); }, "\"hybrid_override_pattern\" is missing"},
  };
  for (const auto& cfg : configs) {
    const fs::path src = make_family(dir, kFamily, std::string("cfg_") + cfg.name);
    edit_config(src, cfg.edit);
    const std::string msg = plan_error(src);
    EXPECT_NE(msg.find(cfg.expect), std::string::npos) << cfg.name << ": " << msg;
    EXPECT_NE(msg.find("config.json"), std::string::npos) << cfg.name << ": " << msg;
  }
}

TEST(NemotronH, LayersBlockTypeListWorksLikeThePattern) {
  TempDir dir;
  const fs::path src = make_family(dir, kFamily);
  edit_config(src, [](auto& j) {
    j.erase("hybrid_override_pattern");
    j["layers_block_type"] = {"mamba", "moe", "attention", "moe"};
  });
  const auto c = io::Checkpoint::open(src);
  const auto layers = make_adapter(c)->moe_layers();
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(layers[0].layer, 1);
  EXPECT_EQ(layers[1].layer, 3);
}

TEST(NemotronH, ConvertThenVerifyPassesEveryStageInBothGateModes) {
  const fs::path src = shipped_tiny(kFamily);
  for (auto mode : {layout::GateMode::Separated, layout::GateMode::Interleave}) {
    TempDir dir;
    plan::ConvertOptions o;
    o.gate_mode = mode;
    o.threads = 2;
    const plan::ConvertSummary s = convert(src, dir / "dst", o);
    EXPECT_EQ(s.transformed, 2u * 4u);  // w13/w2 weights and scales of two layers, no biases
    const plan::VerifyReport r = verify(dir / "dst", &src, {1, 7, 64, 512});
    for (const auto& st : r.stages)
      EXPECT_EQ(st.status, StageStatus::Passed) << plan::gate_mode_name(mode) << " " << st.name << ":\n"
                                                << failures_text(st);
    ASSERT_EQ(r.numerics.size(), 8u);
    for (const auto& row : r.numerics) {
      EXPECT_LT(row.rel_err, 1e-2) << "layer " << row.layer << " T=" << row.tokens;
      EXPECT_GT(row.rel_err_source, 0.05) << "layer " << row.layer << " T=" << row.tokens;
      EXPECT_LT(row.rel_err_source, plan::kSourceThreshold) << "layer " << row.layer << " T=" << row.tokens;
      EXPECT_EQ(row.routing_mismatches, 0);
    }

    const plan::Manifest m = plan::Manifest::read(dir / "dst" / plan::kManifestFileName);
    EXPECT_EQ(m.model["activation"]["kind"], "relu2");
    EXPECT_EQ(m.model["gated"], false);
    EXPECT_FALSE(plan::dims_from_manifest(m, "t").gated);
    EXPECT_EQ(plan::model_from_manifest(m, "t").activation.kind, reference::Activation::Relu2);
    const plan::ExpertDims d = plan::dims_from_manifest(m, "t");
    const plan::ManifestTensor* w13 = m.find("backbone.layers.3.mixer.experts.w13_weight");
    ASSERT_NE(w13, nullptr);
    EXPECT_EQ(w13->shape, (Shape{8, d.intermediate_pad, d.hidden_pad / 2}));  // I' rows, not 2I'
    EXPECT_EQ(w13->logical_shape, (Shape{8, 32, 96 / 2}));
    EXPECT_EQ(w13->layout, std::string("aiter/") + plan::gate_mode_name(mode) + "/w13_weight/non_gated");
    EXPECT_EQ(w13->sources.size(), 8u);
    EXPECT_EQ(w13->sources[0].name, "backbone.layers.3.mixer.experts.0.up_proj.weight");
    EXPECT_GT(w13->quantization_rel_error, 0.05);
    EXPECT_LT(w13->quantization_rel_error, 0.2);

    // Non-expert tensors (Mamba, attention, router, shared expert, norms) are copied unchanged.
    const auto out = io::Checkpoint::open(dir / "dst");
    const auto in = io::Checkpoint::open(src);
    for (const char* name :
         {"backbone.layers.0.mixer.A_log", "backbone.layers.0.mixer.in_proj.weight", "backbone.layers.2.mixer.q_proj.weight",
          "backbone.layers.1.mixer.gate.weight", "backbone.layers.1.mixer.gate.e_score_correction_bias",
          "backbone.layers.3.mixer.shared_experts.up_proj.weight", "backbone.norm_f.weight", "backbone.embeddings.weight"}) {
      const plan::ManifestTensor* t = m.find(name);
      ASSERT_NE(t, nullptr) << name;
      EXPECT_FALSE(t->transformed) << name;
      const auto a = in.data(in.find(name)), b = out.data(out.find(name));
      ASSERT_EQ(a.size, b.size) << name;
      EXPECT_EQ(0, std::memcmp(a.data, b.data, a.size)) << name;
    }
    for (const auto& t : m.tensors) {
      if (!t.transformed) {
        EXPECT_EQ(t.name.find(".experts.0."), std::string::npos) << t.name;
      }
    }
  }
}

// Converted output fed back to convert is refused, even stripped of its manifest and of the
// is_shuffled flags: the kernel-ready tensor names give it away.
TEST(NemotronH, ConvertedOutputIsNotConvertedAgain) {
  TempDir dir;
  const fs::path dst = dir / "dst";
  convert(shipped_tiny(kFamily), dst);
  fs::remove(dst / plan::kManifestFileName);
  for (const auto& e : fs::directory_iterator(dst))
    if (e.path().extension() == ".safetensors")
      plan::testing::rewrite_shard(e.path(), "", [](std::map<std::string, std::string>& meta) {
        for (auto it = meta.begin(); it != meta.end();)
          it = it->first.find(".is_shuffled") != std::string::npos ? meta.erase(it) : std::next(it);
      });
  const std::string msg = plan_error(dst);
  EXPECT_NE(msg.find("already kernel-ready (tensor 'backbone.layers."), std::string::npos) << msg;
  EXPECT_NE(msg.find(".mixer.experts.w"), std::string::npos) << msg;
}

TEST(NemotronH, AManifestThatCallsTheExpertsGatedFailsVerify) {
  TempDir dir;
  const fs::path src = shipped_tiny(kFamily);
  const fs::path dst = dir / "dst";
  convert(src, dst);
  const fs::path manifest_path = dst / plan::kManifestFileName;
  const plan::Manifest good = plan::Manifest::read(manifest_path);

  // Rewritten consistently (kind and gated agree, checksum recomputed): the tensors are I' rows,
  // the gated layout needs 2I', so the structure stage and the numerics stage both fail.
  plan::Manifest m = good;
  m.model["activation"]["kind"] = "silu_gated";
  m.model["gated"] = true;
  plan::testing::write_file(manifest_path, m.serialize());
  const plan::VerifyReport gated = verify(dst, &src, {1, 7});
  EXPECT_FALSE(gated.passed());
  const std::string structure = failures_text(stage(gated, "structure"));
  EXPECT_NE(structure.find("backbone.layers.1.mixer.experts.w13_weight"), std::string::npos) << structure;
  EXPECT_NE(structure.find("layout 'aiter/separated/w13_weight' requires"), std::string::npos) << structure;
  EXPECT_EQ(stage(gated, "numerics").status, StageStatus::Failed);

  // Only the kind changed: the manifest contradicts itself, which verify names.
  m = good;
  m.model["activation"]["kind"] = "silu_gated";
  plan::testing::write_file(manifest_path, m.serialize());
  const plan::VerifyReport kind_only = verify(dst, &src, {7});
  EXPECT_FALSE(kind_only.passed());
  const std::string numerics = failures_text(stage(kind_only, "numerics"));
  EXPECT_NE(numerics.find("\"gated\" is false but activation kind 'silu_gated' is gated"), std::string::npos)
      << numerics;

  // A manifest without "gated" (as written before non-gated experts existed) reads as gated,
  // which contradicts relu2.
  m = good;
  m.model.erase("gated");
  plan::testing::write_file(manifest_path, m.serialize());
  const plan::VerifyReport absent = verify(dst, &src, {7});
  EXPECT_FALSE(absent.passed());
  const std::string text = failures_text(stage(absent, "structure"));
  EXPECT_NE(text.find("\"gated\" is true but activation kind 'relu2' is non-gated"), std::string::npos) << text;
}

TEST(NemotronH, ALayoutErrorFailsTheNumericsStage) {
  TempDir dir;
  const fs::path src = shipped_tiny(kFamily);
  plan::ConvertOptions o;
  // Interleaved scales keep their shape unshuffled, so the kernel reads them, misplaced.
  o.gate_mode = layout::GateMode::Interleave;
  o.fault = plan::InjectedFault::SkipScaleShuffle;
  convert(src, dir / "dst", o);
  const plan::VerifyReport r = verify(dir / "dst", &src, {1, 7, 64});
  const auto& n = stage(r, "numerics");
  EXPECT_EQ(n.status, StageStatus::Failed);
  EXPECT_NE(failures_text(n).find("exceeds 2.0e-02"), std::string::npos) << failures_text(n);
  ASSERT_FALSE(r.numerics.empty());
  for (const auto& row : r.numerics) {
    EXPECT_GT(row.rel_err, 0.05) << "layer " << row.layer << " T=" << row.tokens;
    EXPECT_FALSE(row.passed);
  }
}

// Without gate/up pairs the two gate modes' weight tiles coincide: 16 rows x 16-byte runs,
// run after run, whether the separated mode groups them by 32 bytes or the interleaved one by
// 64 (addressing.h). So the other mode's tiles are the same bytes here, which is why the
// layout-error test above breaks the scales instead.
TEST(NemotronH, UpOnlyWeightTilesAreTheSameInBothGateModes) {
  TempDir dir;
  const fs::path src = shipped_tiny(kFamily);
  plan::ConvertOptions good, other;
  other.fault = plan::InjectedFault::OtherGateModeTiles;
  convert(src, dir / "good", good);
  convert(src, dir / "other", other);
  const auto a = io::Checkpoint::open(dir / "good"), b = io::Checkpoint::open(dir / "other");
  for (const char* name : {"backbone.layers.1.mixer.experts.w13_weight", "backbone.layers.3.mixer.experts.w2_weight"}) {
    const auto x = a.data(a.find(name)), y = b.data(b.find(name));
    ASSERT_EQ(x.size, y.size) << name;
    EXPECT_EQ(0, std::memcmp(x.data, y.data, x.size)) << name;
  }
}

TEST(NemotronH, Relu2IsAManifestKindAndRefusedForGatedFamilies) {
  EXPECT_STREQ(activation_kind_name(reference::Activation::Relu2), "relu2");
  EXPECT_EQ(activation_from_kind_name("relu2"), reference::Activation::Relu2);
  EXPECT_FALSE(gated_activation_for("relu2").has_value());
  TempDir dir;
  const fs::path src = make_family(dir, "qwen3_moe");
  edit_config(src, [](auto& j) { j["hidden_act"] = "relu2"; });
  const std::string msg = plan_error(src);
  EXPECT_NE(msg.find("\"hidden_act\" is 'relu2': non-gated relu^2 experts (Nemotron-H) are not supported for "
                     "Qwen3-MoE's gated experts"),
            std::string::npos)
      << msg;
}

}  // namespace
}  // namespace moeprep::models::testing
