#pragma once
// DeepSeek-V3-style MoE (model_type deepseek_v3; Kimi-K2 and other exports that keep these
// keys and names convert the same way under that model_type), experts in FP8 with 128x128
// block scales or in BF16, quantized to MXFP4.
//   model.layers.{i}.mlp.experts.{j}.gate_proj.weight  F8_E4M3 [I, H] (+ .weight_scale_inv F32
//        [ceil(I/128), ceil(H/128)]), up_proj likewise, down_proj [H, I]; or all BF16
//   model.layers.{i}.mlp.gate.weight                    BF16 [E, H]     router (copied through)
//   model.layers.{i}.mlp.gate.e_score_correction_bias   F32 [E]         steers the choice only
//   model.layers.{i}.mlp.shared_experts.*               not routed: copied through
// config: n_routed_experts, num_experts_per_tok, moe_intermediate_size, n_group, topk_group,
// routed_scaling_factor, norm_topk_prob, first_k_dense_replace, moe_layer_freq (layer i is MoE
// when i >= first_k_dense_replace and i % moe_layer_freq == 0), scoring_func "sigmoid",
// quantization_config {quant_method "fp8", weight_block_size [bn, bk]}. Router
// sigmoid_grouped_biased. The multi-token-prediction layers that follow the last layer
// (num_nextn_predict_layers) are MoE layers too and are converted when present.
//
// NVIDIA Nemotron-3-Nano (model_type nemotron_h) shares the router (sigmoid, groups, correction
// bias) but has non-gated experts under backbone.layers.{i}.mixer.experts: its own adapter,
// models/nemotron_h_adapter.h. DeepSeek-V2 (softmax scoring) is refused.
#include <memory>
#include <string>

#include "models/adapter.h"

namespace moeprep::models {

inline constexpr const char* kDeepseekV3ModelType = "deepseek_v3";

std::unique_ptr<ModelAdapter> make_deepseek_v3_adapter(const io::Checkpoint& checkpoint,
                                                       const std::string& config_path);

}  // namespace moeprep::models
