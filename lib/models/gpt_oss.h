#pragma once
// The Hugging Face GPT-OSS checkpoint with MXFP4 experts (../shared/spec/gpt-oss-format.md):
// config keys, expert tensor names and the MoE rules (router softmax over the top-k, clamped
// SwiGLU with alpha 1.702 and limit swiglu_limit, gate/up rows interleaved in pairs).
#include <string>

#include <nlohmann/json.hpp>

#include "models/model_info.h"

namespace moeprep::models::gpt_oss {

inline constexpr const char* kModelType = "gpt_oss";

// Parses and checks config.json; throws BadInput naming `config_path` and the key.
ModelInfo read_config(const nlohmann::json& config, const std::string& config_path);

// Source tensor names of layer i.
struct SourceNames {
  std::string gate_up_blocks, gate_up_scales, gate_up_bias;
  std::string down_blocks, down_scales, down_bias;
  std::string router_weight, router_bias;
};
SourceNames source_names(int64_t layer);

// Kernel-ready output names of layer i (layouts.md section 8).
struct OutputNames {
  std::string w13_weight, w13_weight_scale, w13_weight_bias;
  std::string w2_weight, w2_weight_scale, w2_weight_bias;
};
OutputNames output_names(int64_t layer);

// "model.layers.{i}.mlp.experts." prefix.
std::string experts_prefix(int64_t layer);

}  // namespace moeprep::models::gpt_oss
