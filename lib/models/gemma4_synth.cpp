// Synthetic Gemma4 MoE checkpoints (models/gemma4_adapter.h), as
// Gemma4ForConditionalGeneration stores its text stack: model.language_model.layers.{i} with
// the dense mlp beside the expert block, the router's input scale and per-expert scales.
#include "models/gemma4_adapter.h"
#include "models/synth_families.h"

namespace moeprep::models {

synth::Checkpoint gemma4_synthetic(const synth::Options& o) {
  using synth::add;
  synth::Checkpoint ck;
  auto& t = ck.tensors;
  const int64_t E = o.experts, H = o.hidden, I = o.intermediate, dense_i = I;
  const synth::AttentionShape att{2, 1, 16, false, true};
  const std::string root = "model.language_model.";
  add(t, root + "embed_tokens.weight", {o.vocab, H});
  synth::add_norm(t, root + "norm.weight", H);
  for (int64_t l = 0; l < o.layers; ++l) {
    const std::string p = root + "layers." + std::to_string(l) + ".";
    for (const char* norm : {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                             "post_feedforward_layernorm", "pre_feedforward_layernorm_2", "post_feedforward_layernorm_1",
                             "post_feedforward_layernorm_2"})
      synth::add_norm(t, p + norm + ".weight", H);
    add(t, p + "layer_scalar", {1}, 0.0, 1.0);
    synth::add_attention(t, p + "self_attn.", H, att);
    add(t, p + "mlp.gate_proj.weight", {dense_i, H}, 0.05);
    add(t, p + "mlp.up_proj.weight", {dense_i, H}, 0.05);
    add(t, p + "mlp.down_proj.weight", {H, dense_i}, 0.05);
    // The router input is RMS-normalized and divided by sqrt(H): weights of ~1.5 give logits
    // of spread ~1.5.
    add(t, p + "router.proj.weight", {E, H}, 1.5);
    add(t, p + "router.scale", {H}, 0.1, 1.0);
    add(t, p + "router.per_expert_scale", {E}, 0.2, 1.0);
    add(t, p + "experts.gate_up_proj", {E, 2 * I, H}, 0.05);
    add(t, p + "experts.down_proj", {E, H, I}, 0.05);
  }
  nlohmann::ordered_json text;
  text["model_type"] = kGemma4TextModelType;
  text["hidden_size"] = H;
  text["intermediate_size"] = dense_i;
  text["moe_intermediate_size"] = I;
  text["num_hidden_layers"] = o.layers;
  text["enable_moe_block"] = true;
  text["num_experts"] = E;
  text["top_k_experts"] = o.top_k;
  text["num_attention_heads"] = att.heads;
  text["num_key_value_heads"] = att.kv_heads;
  text["head_dim"] = att.head_dim;
  text["hidden_activation"] = "gelu_pytorch_tanh";
  text["vocab_size"] = o.vocab;
  text["rms_norm_eps"] = 1e-6;
  text["tie_word_embeddings"] = true;
  auto& c = ck.config;
  c["architectures"] = {"Gemma4ForConditionalGeneration"};
  c["model_type"] = kGemma4ModelType;
  c["text_config"] = text;
  c["tie_word_embeddings"] = true;
  c["torch_dtype"] = "bfloat16";
  c["moeprep_synthetic"] = synth::provenance(o);
  return ck;
}

}  // namespace moeprep::models
