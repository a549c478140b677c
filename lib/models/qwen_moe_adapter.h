#pragma once
// Qwen3-MoE and Qwen2-MoE (model_type qwen3_moe, qwen2_moe), BF16 experts quantized to MXFP4.
//   model.layers.{i}.mlp.experts.{j}.gate_proj.weight  [I, H]   up_proj [I, H]   down_proj [H, I]
//   model.layers.{i}.mlp.gate.weight                    [E, H]   router (copied through)
// config: num_experts, num_experts_per_tok, moe_intermediate_size, norm_topk_prob (softmax over
// all experts, top-k, renormalized when true), decoder_sparse_step and mlp_only_layers (layer i
// is MoE when i is not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0). Qwen2-MoE's
// shared expert (mlp.shared_expert.*, mlp.shared_expert_gate.weight) is not routed and is
// copied through. No expert biases; activation silu(gate) * up.
#include <memory>
#include <string>

#include "models/adapter.h"

namespace moeprep::models {

inline constexpr const char* kQwen3MoeModelType = "qwen3_moe";
inline constexpr const char* kQwen2MoeModelType = "qwen2_moe";

std::unique_ptr<ModelAdapter> make_qwen_moe_adapter(const io::Checkpoint& checkpoint, const std::string& config_path);

}  // namespace moeprep::models
