// What the family adapters refuse, each with a message that names the problem: an unknown
// tensor inside an expert block, experts in a layer the config makes dense, FP8 experts
// without their scales, an unsupported quantization, non-gated or dense look-alikes.
#include <gtest/gtest.h>

#include "models/adapter.h"
#include "models/detect.h"
#include "plan/plan.h"
#include "models_test_util.h"

namespace moeprep::models::testing {
namespace {

std::string plan_error(const fs::path& src) {
  return bad_input_message([&] {
    const auto c = io::Checkpoint::open(src);
    plan::build_plan(c, plan::ConvertOptions{});
  });
}

TEST(FamilyRefusals, UnknownTensorInsideAnExpertBlockIsRejected) {
  const struct {
    const char* family;
    const char* extra;
  } cases[] = {
      {"qwen3_moe", "model.layers.0.mlp.experts.1.gate_proj.bias"},
      {"mixtral", "model.layers.1.block_sparse_moe.experts.3.w4.weight"},
      {"deepseek_v3", "model.layers.2.mlp.experts.0.gate_proj.input_scale"},
      {"gemma4", "model.language_model.layers.1.experts.gate_up_proj_scales"},
      {"gpt_oss_bf16", "model.layers.0.mlp.experts.gate_up_proj_blocks_extra"},
  };
  for (const auto& c : cases) {
    TempDir dir;
    const fs::path src = make_family(dir, c.family);
    add_tensor(src, c.extra, Dtype::BF16, {4});
    const std::string msg = plan_error(src);
    EXPECT_NE(msg.find(std::string("tensor '") + c.extra + "' inside an MoE expert block is not part of the"),
              std::string::npos)
        << c.family << ": " << msg;
  }
}

TEST(FamilyRefusals, CountsNoCheckpointOfItsSizeHoldsAreRefusedBeforeAnythingIsAllocated) {
  // A fuzzed config.json's 2^53 + 1 layers ran convert out of memory: every layer (and, for
  // per-expert tensors, every expert) has tensors of its own, so larger counts are refused.
  const int64_t huge = (int64_t{1} << 53) + 1;
  const struct {
    const char* family;
    const char* key;
    const char* what;
  } cases[] = {
      {"qwen3_moe", "num_hidden_layers", "layers"},      {"mixtral", "num_hidden_layers", "layers"},
      {"deepseek_v3", "num_hidden_layers", "layers"},    {"deepseek_v3", "num_nextn_predict_layers", "layers"},
      {"gpt_oss_bf16", "num_hidden_layers", "layers"},   {"qwen3_moe", "num_experts", "experts"},
      {"mixtral", "num_local_experts", "experts"},       {"deepseek_v3", "n_routed_experts", "experts"},
      {"nemotron_h", "n_routed_experts", "experts"},
  };
  for (const auto& c : cases) {
    TempDir dir;
    const fs::path src = make_family(dir, c.family);
    const int64_t value = std::string(c.key) == "n_routed_experts" ? int64_t{1} << 53 : huge;  // grouped: whole groups
    edit_config(src, [&](auto& j) { j[c.key] = value; });
    const std::string msg = plan_error(src);
    EXPECT_NE(msg.find(std::string(" ") + c.what + ", more than the "), std::string::npos)
        << c.family << " " << c.key << ": " << msg;
    EXPECT_NE(msg.find("tensors the checkpoint holds"), std::string::npos) << c.family << " " << c.key << ": " << msg;
    EXPECT_NE(msg.find("config.json"), std::string::npos) << c.family << " " << c.key << ": " << msg;
  }
  {
    // Gemma4's counts sit in text_config.
    TempDir dir;
    const fs::path src = make_family(dir, "gemma4");
    edit_config(src, [&](auto& j) {
      (j.contains("text_config") ? j["text_config"] : j)["num_hidden_layers"] = huge;
    });
    EXPECT_NE(plan_error(src).find(" layers, more than the "), std::string::npos) << plan_error(src);
  }
}

TEST(FamilyRefusals, ExpertsInALayerTheConfigMakesDenseAreRejected) {
  TempDir dir;
  const fs::path src = make_family(dir, "qwen3_moe");
  edit_config(src, [](auto& j) { j["mlp_only_layers"] = {1, 2}; });
  const std::string msg = plan_error(src);
  EXPECT_NE(msg.find("'model.layers.2.mlp.experts."), std::string::npos) << msg;
  EXPECT_NE(msg.find("config.json makes layer 2 a dense layer"), std::string::npos) << msg;
}

TEST(FamilyRefusals, DeepSeekFp8NeedsItsBlockScalesAndBlockSize) {
  TempDir dir;
  const fs::path src = make_family(dir, "deepseek_v3");
  edit_config(src, [](auto& j) { j["quantization_config"].erase("weight_block_size"); });
  EXPECT_NE(plan_error(src).find("\"quantization_config.weight_block_size\" is missing"), std::string::npos)
      << plan_error(src);
  edit_config(src, [](auto& j) { j["quantization_config"]["weight_block_size"] = {64, 64}; });
  // 64-wide blocks need a finer scale grid than the checkpoint has.
  EXPECT_NE(plan_error(src).find("gate_proj.weight_scale_inv' is F32 [1, 2], expected F32 [1, 3]"), std::string::npos)
      << plan_error(src);
  edit_config(src, [](auto& j) { j["quantization_config"] = {{"quant_method", "compressed-tensors"}}; });
  EXPECT_NE(plan_error(src).find("\"quantization_config.quant_method\" is 'compressed-tensors'"), std::string::npos)
      << plan_error(src);
  // Without quantization_config the experts must be BF16: the FP8 ones are reported.
  edit_config(src, [](auto& j) { j.erase("quantization_config"); });
  EXPECT_NE(plan_error(src).find("gate_proj.weight' is F8_E4M3 [32, 160], expected BF16 [32, 160]"), std::string::npos)
      << plan_error(src);
}

TEST(FamilyRefusals, DeepSeekMissingScaleTensorIsNamed) {
  TempDir dir;
  const fs::path src = make_family(dir, "deepseek_v3");
  const std::string gone = "model.layers.2.mlp.experts.6.up_proj.weight_scale_inv";
  remove_tensor(src, gone);
  const std::string msg = plan_error(src);
  EXPECT_NE(msg.find("tensor '" + gone + "' is missing (the block scales of FP8"), std::string::npos) << msg;
}

TEST(FamilyRefusals, LookAlikesAreRefusedNotMisread) {
  TempDir dir;
  // A DeepSeek-V3 checkpoint labelled nemotron_h (sigmoid grouped routing like Nemotron-3-Nano,
  // but gated experts under model.layers): its config has no Nemotron-H layer pattern.
  const fs::path nemo = make_family(dir, "deepseek_v3_bf16", "nemo");
  edit_config(nemo, [](auto& j) { j["model_type"] = "nemotron_h"; });
  EXPECT_NE(plan_error(nemo).find("\"hybrid_override_pattern\" is missing"), std::string::npos) << plan_error(nemo);
  // DeepSeek-V2 style softmax scoring under the V3 model_type.
  const fs::path v2 = make_family(dir, "deepseek_v3_bf16", "v2");
  edit_config(v2, [](auto& j) { j["scoring_func"] = "softmax"; });
  EXPECT_NE(plan_error(v2).find("\"scoring_func\" is 'softmax'"), std::string::npos) << plan_error(v2);
  // Gemma4 without the expert block is a dense model.
  const fs::path dense = make_family(dir, "gemma4", "dense");
  edit_config(dense, [](auto& j) { j["text_config"]["enable_moe_block"] = false; });
  EXPECT_NE(plan_error(dense).find("is a dense model: there is nothing to convert"), std::string::npos)
      << plan_error(dense);
  // Groups that do not divide the experts.
  const fs::path groups = make_family(dir, "deepseek_v3", "groups");
  edit_config(groups, [](auto& j) { j["n_group"] = 3; });
  EXPECT_NE(plan_error(groups).find("config.json"), std::string::npos) << plan_error(groups);
  EXPECT_NE(plan_error(groups).find("n_group"), std::string::npos) << plan_error(groups);
}

TEST(FamilyRefusals, MisShapedExpertTensorIsNamedWithBothShapes) {
  TempDir dir;
  const fs::path src = make_family(dir, "mixtral");
  edit_config(src, [](auto& j) { j["intermediate_size"] = 64; });
  const std::string msg = plan_error(src);
  EXPECT_NE(msg.find("tensor 'model.layers.0.block_sparse_moe.experts.0.w1.weight' is BF16 [32, 64], expected BF16 "
                     "[64, 64]"),
            std::string::npos)
      << msg;
}

// Found by checkpoint_config_fuzz: a config value quoted in an error (here model_type with a
// JSON-escaped line break) made the message two lines.
TEST(FamilyRefusals, ControlCharactersInAQuotedConfigValueKeepTheMessageOneLine) {
  TempDir dir;
  const fs::path src = make_family(dir, "qwen3_moe");
  edit_config(src, [](auto& j) { j["model_type"] = "fro\nicate_moe\t"; });
  const std::string msg = plan_error(src);
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\t'), std::string::npos) << msg;
  EXPECT_NE(msg.find("model_type 'fro\\x0aicate_moe\\x09'"), std::string::npos) << msg;
}

}  // namespace
}  // namespace moeprep::models::testing
