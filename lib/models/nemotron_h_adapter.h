#pragma once
// NVIDIA Nemotron-H hybrid models with MoE layers (model_type nemotron_h; Nemotron-3-Nano):
// Mamba-2, attention, dense MLP and MoE layers in the order config.json's
// hybrid_override_pattern gives ('M' Mamba, '*' attention, '-' MLP, 'E' MoE; newer exports
// write the same as the list layers_block_type: "mamba"/"linear_attention",
// "attention"/"full_attention", "mlp", "moe"). The experts are NOT gated: each is
// down_proj(relu(up_proj(x))^2), so the kernel-ready w13 holds the up rows alone ([E, I', ...]).
//   backbone.layers.{i}.mixer.experts.{j}.up_proj.weight    BF16 [I, H]
//   backbone.layers.{i}.mixer.experts.{j}.down_proj.weight  BF16 [H, I]
//   backbone.layers.{i}.mixer.gate.weight                   BF16 [E, H]  router (copied through)
//   backbone.layers.{i}.mixer.gate.e_score_correction_bias  F32 [E]      steers the choice only
//   backbone.layers.{i}.mixer.shared_experts.{up,down}_proj.weight       copied through
// Every other tensor (backbone.embeddings, norms, Mamba A_log/D/conv1d/in_proj/out_proj,
// attention q/k/v/o_proj, dense MLP layers, lm_head) is copied unchanged.
// config: n_routed_experts, num_experts_per_tok, moe_intermediate_size, n_group, topk_group,
// routed_scaling_factor, norm_topk_prob, mlp_hidden_act ("relu2", the default),
// hidden_size. Router sigmoid_grouped_biased.
//
// Confirmed against public code (2026-11):
//  - transformers src/transformers/models/nemotron_h/configuration_nemotron_h.py: model_type
//    "nemotron_h", the keys above with defaults n_group 1, topk_group 1, routed_scaling_factor
//    1.0, norm_topk_prob true, mlp_hidden_act "relu2", mlp_bias false, moe_latent_size None; the
//    pattern characters and the layers_block_type names;
//  - transformers modeling_nemotron_h.py: experts down_proj(act(up_proj(x))) with no gate,
//    NemotronHTopkRouter (weight [E, H] in the model dtype, e_score_correction_bias kept in fp32),
//    route_tokens_to_experts (sigmoid; group score = sum of the top 2 biased scores; topk_group
//    groups kept; top-k of the biased scores; weights = unbiased sigmoid, divided by their sum +
//    1e-20 when norm_topk_prob, times routed_scaling_factor), "mtp.*" layers ignored on load;
//  - transformers conversion_mapping.py ("nemotron_h"): checkpoints name the model "backbone."
//    and the experts "mixer.experts.*.up_proj.weight" / "mixer.experts.*.down_proj.weight"
//    (merged into 3-D tensors only in memory);
//  - vLLM vllm/model_executor/models/nemotron_h.py: mixer.gate with gate.e_score_correction_bias,
//    mixer.shared_experts.up_proj/down_proj, ckpt_names ("up_proj", "down_proj", ""),
//    is_non_gated_moe, grouped sigmoid top-k with the correction bias and scaling factor.
// Not checked against a downloaded checkpoint: the dtypes (BF16 weights and router, F32 or BF16
// correction bias are what the code above implies).
//
// Refused, naming the reason: expert biases (mlp_bias true), latent MoE (moe_latent_size set:
// the experts run in a narrower space between fc1/fc2_latent_proj), an activation other than
// relu2, experts outside the MoE layers the pattern names (e.g. multi-token-prediction layers).
#include <memory>
#include <string>

#include "models/adapter.h"

namespace moeprep::models {

inline constexpr const char* kNemotronHModelType = "nemotron_h";

std::unique_ptr<ModelAdapter> make_nemotron_h_adapter(const io::Checkpoint& checkpoint,
                                                      const std::string& config_path);

}  // namespace moeprep::models
