#include "models/gpt_oss.h"

#include "core/error.h"
#include "models/config_reader.h"

namespace moeprep::models::gpt_oss {
namespace {

int64_t positive_int(const nlohmann::json& config, const std::string& path, std::initializer_list<const char*> keys) {
  for (const char* key : keys) {
    auto it = config.find(key);
    if (it == config.end()) continue;
    if (!it->is_number_integer() || it->get<int64_t>() <= 0)
      throw_bad_input(path + ": \"" + key + "\" must be a positive integer");
    return it->get<int64_t>();
  }
  throw_bad_input(path + ": missing \"" + *keys.begin() + "\"");
}

}  // namespace

ModelInfo read_config(const nlohmann::json& config, const std::string& path) {
  if (!config.is_object()) throw_bad_input(path + ": not a JSON object");
  ModelInfo info;
  info.model_type = ConfigReader(config, path).string_or("model_type", "");
  info.family = kModelType;
  info.layers = positive_int(config, path, {"num_hidden_layers"});
  info.experts = positive_int(config, path, {"num_local_experts", "num_experts"});
  info.hidden = positive_int(config, path, {"hidden_size"});
  info.intermediate = positive_int(config, path, {"intermediate_size"});
  int64_t top_k = positive_int(config, path, {"num_experts_per_tok", "experts_per_token"});
  if (top_k > info.experts) throw_bad_input(path + ": num_experts_per_tok exceeds the number of experts");
  if (top_k > 16) throw_bad_input(path + ": num_experts_per_tok above 16 is not supported");
  if (info.hidden % 32 != 0) throw_bad_input(path + ": hidden_size must be a multiple of 32 (MXFP4 blocks)");
  if (info.intermediate % 32 != 0)
    throw_bad_input(path + ": intermediate_size must be a multiple of 32 (MXFP4 blocks)");
  info.router.variant = reference::RouterVariant::SoftmaxAfterTopk;
  info.router.top_k = static_cast<int>(top_k);
  // GPT-OSS's experts always run their clamped SwiGLU; its config says hidden_act "silu" (the
  // sigmoid in it) or nothing. Anything else would be a different model, not a variant.
  const ConfigReader cfg(config, path);
  const std::string hidden_act = cfg.string_or("hidden_act", "silu");
  if (hidden_act != "silu")
    cfg.fail("hidden_act", "is '" + hidden_act +
                               "': GPT-OSS experts use their fixed clamped SwiGLU (hidden_act \"silu\" or absent)");
  info.activation.kind = reference::Activation::GptOssClampedSwiglu;
  info.activation.alpha = 1.702;
  info.activation.limit = 7.0;
  if (auto it = config.find("swiglu_limit"); it != config.end()) {
    if (!it->is_number() || it->get<double>() <= 0) throw_bad_input(path + ": \"swiglu_limit\" must be a positive number");
    info.activation.limit = it->get<double>();
  }
  return info;
}

std::string experts_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + ".mlp.experts."; }

SourceNames source_names(int64_t layer) {
  const std::string p = experts_prefix(layer);
  const std::string r = "model.layers." + std::to_string(layer) + ".mlp.router.";
  return {p + "gate_up_proj_blocks", p + "gate_up_proj_scales", p + "gate_up_proj_bias",
          p + "down_proj_blocks",    p + "down_proj_scales",    p + "down_proj_bias",
          r + "weight",              r + "bias"};
}

OutputNames output_names(int64_t layer) {
  const std::string p = experts_prefix(layer);
  return {p + "w13_weight", p + "w13_weight_scale", p + "w13_weight_bias",
          p + "w2_weight",  p + "w2_weight_scale",  p + "w2_weight_bias"};
}

}  // namespace moeprep::models::gpt_oss
