// Every family's expert activation comes from its config.json and is honoured: the shipped tiny
// checkpoints record theirs in the manifest; the names transformers uses map onto the gated
// activations moeprep implements, a missing key takes the family's default, and anything else
// (relu2, made-up names, a non-SiLU GPT-OSS) is refused naming the key and the value. Gemma4's
// GELU-tanh is checked end to end: convert + verify pass, and a manifest that names SiLU
// instead fails the numerics stage.
#include <gtest/gtest.h>

#include "models/activation_config.h"
#include "models/adapter.h"
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
using reference::Activation;

Activation activation_of(const fs::path& src) {
  const auto c = io::Checkpoint::open(src);
  return make_adapter(c)->info().activation.kind;
}

// A writable copy of a shipped tiny checkpoint (the MXFP4 GPT-OSS one has no family generator).
fs::path copy_of_shipped(const TempDir& dir, const std::string& family) {
  const fs::path p = dir / "src";
  fs::copy(shipped_tiny(family), p, fs::copy_options::recursive);
  return p;
}

std::string adapter_error(const fs::path& src) {
  return bad_input_message([&] {
    const auto c = io::Checkpoint::open(src);
    make_adapter(c);
  });
}

TEST(FamilyActivation, EachTinyCheckpointsActivationLandsInTheManifest) {
  const struct {
    const char* family;
    const char* kind;
  } cases[] = {
      {"gpt_oss", "gpt_oss_clamped_swiglu"}, {"gpt_oss_bf16", "gpt_oss_clamped_swiglu"},
      {"qwen2_moe", "silu_gated"},           {"qwen3_moe", "silu_gated"},
      {"mixtral", "silu_gated"},             {"deepseek_v3", "silu_gated"},
      {"gemma4", "gelu_tanh_gated"},
  };
  for (const auto& c : cases) {
    TempDir dir;
    convert(shipped_tiny(c.family), dir / "dst");
    const plan::Manifest m = plan::Manifest::read(dir / "dst" / plan::kManifestFileName);
    ASSERT_TRUE(m.model.contains("activation")) << c.family;
    EXPECT_EQ(m.model["activation"]["kind"], c.kind) << c.family;
    // Read back, it is the activation the adapter took from config.json.
    const ModelInfo back = plan::model_from_manifest(m, c.family);
    EXPECT_EQ(back.activation.kind, activation_of(shipped_tiny(c.family))) << c.family;
    EXPECT_STREQ(activation_kind_name(back.activation.kind), c.kind) << c.family;
  }
}

TEST(FamilyActivation, TransformersNamesMapOntoTheGatedActivations) {
  TempDir dir;
  const fs::path src = make_family(dir, "qwen3_moe");
  const struct {
    const char* name;
    Activation kind;
  } names[] = {
      {"silu", Activation::SiluGated},           {"swish", Activation::SiluGated},
      {"gelu_pytorch_tanh", Activation::GeluTanhGated}, {"gelu_new", Activation::GeluTanhGated},
      {"gelu_fast", Activation::GeluTanhGated},  {"gelu_accurate", Activation::GeluTanhGated},
      {"gelu", Activation::GeluGated},           {"gelu_python", Activation::GeluGated},
  };
  for (const auto& n : names) {
    edit_config(src, [&](auto& j) { j["hidden_act"] = n.name; });
    EXPECT_EQ(activation_of(src), n.kind) << n.name;
  }
  // Absent or null: Qwen's default, silu.
  edit_config(src, [](auto& j) { j.erase("hidden_act"); });
  EXPECT_EQ(activation_of(src), Activation::SiluGated);
  edit_config(src, [](auto& j) { j["hidden_act"] = nullptr; });
  EXPECT_EQ(activation_of(src), Activation::SiluGated);
  // Not ACT2FN's tanh or erf GELU: quick_gelu is x sigmoid(1.702 x), gelu_10 is clipped.
  for (const char* other : {"quick_gelu", "gelu_10", "relu", "SiLU"}) EXPECT_FALSE(gated_activation_for(other)) << other;
}

TEST(FamilyActivation, MissingKeyTakesTheFamilyDefault) {
  const struct {
    const char* family;
    Activation kind;
  } cases[] = {
      {"qwen2_moe", Activation::SiluGated}, {"mixtral", Activation::SiluGated},
      {"deepseek_v3", Activation::SiluGated}, {"gemma4", Activation::GeluTanhGated},
      {"gpt_oss_bf16", Activation::GptOssClampedSwiglu},
  };
  for (const auto& c : cases) {
    TempDir dir;
    const fs::path src = make_family(dir, c.family);
    edit_config(src, [](auto& j) {
      j.erase("hidden_act");
      if (j.contains("text_config")) j["text_config"].erase("hidden_activation");
    });
    EXPECT_EQ(activation_of(src), c.kind) << c.family;
  }
  // Gemma4's key does change what runs.
  TempDir dir;
  const fs::path src = make_family(dir, "gemma4");
  edit_config(src, [](auto& j) { j["text_config"]["hidden_activation"] = "silu"; });
  EXPECT_EQ(activation_of(src), Activation::SiluGated);
}

TEST(FamilyActivation, Relu2AndUnknownNamesAreRefusedNamingKeyAndValue) {
  const struct {
    const char* family;
    const char* key;  // as the message spells it
  } cases[] = {
      {"qwen3_moe", "hidden_act"}, {"qwen2_moe", "hidden_act"},  {"mixtral", "hidden_act"},
      {"deepseek_v3", "hidden_act"}, {"gemma4", "text_config.hidden_activation"},
  };
  for (const auto& c : cases) {
    TempDir dir;
    const fs::path src = make_family(dir, c.family);
    for (const char* value : {"relu2", "swirly_glu"}) {
      edit_config(src, [&](auto& j) {
        if (j.contains("text_config")) j["text_config"]["hidden_activation"] = value;
        else j["hidden_act"] = value;
      });
      const std::string msg = adapter_error(src);
      EXPECT_NE(msg.find("config.json: \"" + std::string(c.key) + "\" is '" + value + "'"), std::string::npos)
          << c.family << ": " << msg;
      EXPECT_NE(msg.find("(supported: silu, swish, gelu_pytorch_tanh,"), std::string::npos) << msg;
      const char* why = std::string(value) == "relu2" ? "non-gated relu^2 experts (Nemotron-H) are not supported"
                                                      : "not an expert activation moeprep implements for ";
      EXPECT_NE(msg.find(why), std::string::npos) << c.family << ": " << msg;
    }
  }
  // The text-only Gemma4 config keeps the key at the top level.
  TempDir dir;
  const fs::path src = make_family(dir, "gemma4");
  edit_config(src, [](auto& j) {
    auto text = j["text_config"];
    text["hidden_activation"] = "relu2";
    j = text;
  });
  const std::string msg = adapter_error(src);
  EXPECT_NE(msg.find("config.json: \"hidden_activation\" is 'relu2': non-gated relu^2"), std::string::npos) << msg;
}

TEST(FamilyActivation, GptOssAcceptsOnlySiluOrNoHiddenAct) {
  for (const char* family : {"gpt_oss", "gpt_oss_bf16"}) {
    TempDir dir;
    const fs::path src = copy_of_shipped(dir, family);
    edit_config(src, [](auto& j) { j["hidden_act"] = "silu"; });
    EXPECT_EQ(activation_of(src), Activation::GptOssClampedSwiglu) << family;
    for (const char* value : {"relu2", "gelu_pytorch_tanh"}) {
      edit_config(src, [&](auto& j) { j["hidden_act"] = value; });
      const std::string msg = adapter_error(src);
      EXPECT_NE(msg.find("config.json: \"hidden_act\" is '" + std::string(value) +
                         "': GPT-OSS experts use their fixed clamped SwiGLU"),
                std::string::npos)
          << family << ": " << msg;
    }
  }
}

TEST(FamilyActivation, Gemma4VerifiesWithGeluTanhAndFailsWhenTheManifestSaysSilu) {
  TempDir dir;
  const fs::path src = shipped_tiny("gemma4");
  const fs::path dst = dir / "dst";
  convert(src, dst);
  const fs::path manifest_path = dst / plan::kManifestFileName;
  plan::Manifest m = plan::Manifest::read(manifest_path);
  ASSERT_EQ(m.model["activation"]["kind"], "gelu_tanh_gated");
  const plan::VerifyReport good = verify(dst, &src, {1, 7, 64});
  for (const auto& st : good.stages) EXPECT_EQ(st.status, StageStatus::Passed) << st.name << ":\n" << failures_text(st);
  ASSERT_FALSE(good.numerics.empty());
  for (const auto& row : good.numerics) EXPECT_LT(row.rel_err, 1e-2) << "layer " << row.layer << " T=" << row.tokens;

  // The manifest rewritten consistently (its checksum recomputed), so only the numerics can tell.
  m.model["activation"]["kind"] = "silu_gated";
  plan::testing::write_file(manifest_path, m.serialize());
  const plan::VerifyReport bad = verify(dst, &src, {1, 7, 64});
  EXPECT_EQ(stage(bad, "structure").status, StageStatus::Passed) << failures_text(stage(bad, "structure"));
  const auto& n = stage(bad, "numerics");
  EXPECT_EQ(n.status, StageStatus::Failed);
  EXPECT_NE(failures_text(n).find("exceeds 2.0e-02"), std::string::npos) << failures_text(n);
  ASSERT_EQ(bad.numerics.size(), good.numerics.size());
  for (const auto& row : bad.numerics) {
    EXPECT_GT(row.rel_err, 0.05) << "layer " << row.layer << " T=" << row.tokens;
    EXPECT_FALSE(row.passed);
    EXPECT_EQ(row.routing_mismatches, 0);  // the routing is right; only the activation is not
  }

  // An activation the manifest reader does not know stays an error, named.
  m.model["activation"]["kind"] = "relu2_gated";
  plan::testing::write_file(manifest_path, m.serialize());
  const plan::VerifyReport unknown = verify(dst, &src, {7});
  EXPECT_FALSE(unknown.passed());
  EXPECT_NE(failures_text(stage(unknown, "numerics")).find("unknown activation kind 'relu2_gated'"), std::string::npos)
      << failures_text(stage(unknown, "numerics"));
}

}  // namespace
}  // namespace moeprep::models::testing
