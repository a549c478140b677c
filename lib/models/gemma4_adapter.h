#pragma once
// Gemma4 MoE (model_type gemma4 with its text_config, or gemma4_text), BF16 experts quantized
// to MXFP4. Names and rules from transformers' models/gemma4 (Gemma4TextExperts,
// Gemma4TextRouter) and vLLM's gemma4.py (the fused routing of vllm-project/vllm#39083):
//   <L>.experts.gate_up_proj       BF16 [E, 2I, H]  rows [gate; up] (split by chunk(2), not pairs)
//   <L>.experts.down_proj          BF16 [E, H, I]
//   <L>.router.proj.weight         BF16 [E, H]      router logits (copied through)
//   <L>.router.scale               [H]              per-channel scale of the router input
//   <L>.router.per_expert_scale    [E]              multiplies each picked expert's weight
// with <L> = model.language_model.layers.{i} (Gemma4ForConditionalGeneration) or
// model.layers.{i} (text-only). config (text_config for gemma4): num_experts, top_k_experts,
// moe_intermediate_size, enable_moe_block (every decoder layer then has the expert block, beside
// its dense mlp, which is copied through). Router gemma4: top-k of the logits, softmax over the
// k, times per_expert_scale[id].
//
// What verify models, and what it does not: the model routes RMSNorm(x) * scale / sqrt(H);
// RMSNorm is a positive per-token factor (about 1 for verify's unit-variance activations), so
// verify folds scale / sqrt(H) into the router weights (rounded to bf16) and routes x with
// them. The experts' activation is read from hidden_activation (gelu_pytorch_tanh: GELU-tanh
// gated, gelu_tanh(gate) * up), and both sides of stage 5 run with it.
#include <memory>
#include <string>

#include "models/adapter.h"

namespace moeprep::models {

inline constexpr const char* kGemma4ModelType = "gemma4";
inline constexpr const char* kGemma4TextModelType = "gemma4_text";

std::unique_ptr<ModelAdapter> make_gemma4_adapter(const io::Checkpoint& checkpoint, const std::string& config_path);

}  // namespace moeprep::models
