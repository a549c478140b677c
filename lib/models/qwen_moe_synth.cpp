// Synthetic Qwen3-MoE / Qwen2-MoE checkpoints (models/qwen_moe_adapter.h). Qwen3: layer 1 is
// dense (mlp_only_layers) when there are three layers or more; q_norm/k_norm; top-k weights
// renormalized. Qwen2: attention biases, a shared expert with its sigmoid gate, no
// renormalization.
#include <algorithm>

#include "models/qwen_moe_adapter.h"
#include "models/synth_families.h"

namespace moeprep::models {

synth::Checkpoint qwen_moe_synthetic(const synth::Options& o, bool qwen2) {
  using synth::add;
  synth::Checkpoint ck;
  auto& t = ck.tensors;
  const int64_t E = o.experts, H = o.hidden, I = o.intermediate, dense_i = 2 * I, shared_i = 2 * I;
  const synth::AttentionShape att{2, 1, 16, qwen2, !qwen2};
  std::vector<int64_t> dense_layers;
  if (!qwen2 && o.layers >= 3) dense_layers.push_back(1);
  synth::add_decoder_ends(t, o.vocab, H);
  for (int64_t l = 0; l < o.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    synth::add_layer_norms(t, p, H);
    synth::add_attention(t, p + "self_attn.", H, att);
    const std::string m = p + "mlp.";
    if (std::find(dense_layers.begin(), dense_layers.end(), l) != dense_layers.end()) {
      add(t, m + "gate_proj.weight", {dense_i, H}, 0.05);
      add(t, m + "up_proj.weight", {dense_i, H}, 0.05);
      add(t, m + "down_proj.weight", {H, dense_i}, 0.05);
      continue;
    }
    add(t, m + "gate.weight", {E, H}, synth::router_stddev(H));
    for (int64_t e = 0; e < E; ++e) {
      const std::string x = m + "experts." + std::to_string(e) + ".";
      add(t, x + "gate_proj.weight", {I, H}, 0.05);
      add(t, x + "up_proj.weight", {I, H}, 0.05);
      add(t, x + "down_proj.weight", {H, I}, 0.05);
    }
    if (qwen2) {
      add(t, m + "shared_expert.gate_proj.weight", {shared_i, H}, 0.05);
      add(t, m + "shared_expert.up_proj.weight", {shared_i, H}, 0.05);
      add(t, m + "shared_expert.down_proj.weight", {H, shared_i}, 0.05);
      add(t, m + "shared_expert_gate.weight", {1, H}, 0.05);
    }
  }
  auto& c = ck.config;
  c["architectures"] = {qwen2 ? "Qwen2MoeForCausalLM" : "Qwen3MoeForCausalLM"};
  c["model_type"] = qwen2 ? kQwen2MoeModelType : kQwen3MoeModelType;
  c["hidden_size"] = H;
  c["intermediate_size"] = dense_i;
  c["moe_intermediate_size"] = I;
  if (qwen2) c["shared_expert_intermediate_size"] = shared_i;
  c["num_hidden_layers"] = o.layers;
  c["num_experts"] = E;
  c["num_experts_per_tok"] = o.top_k;
  c["norm_topk_prob"] = !qwen2;
  c["decoder_sparse_step"] = 1;
  c["mlp_only_layers"] = dense_layers;
  c["num_attention_heads"] = att.heads;
  c["num_key_value_heads"] = att.kv_heads;
  if (!qwen2) c["head_dim"] = att.head_dim;
  c["hidden_act"] = "silu";
  c["vocab_size"] = o.vocab;
  c["rms_norm_eps"] = 1e-6;
  c["rope_theta"] = 1000000.0;
  c["tie_word_embeddings"] = false;
  c["torch_dtype"] = "bfloat16";
  c["moeprep_synthetic"] = synth::provenance(o);
  return ck;
}

}  // namespace moeprep::models
