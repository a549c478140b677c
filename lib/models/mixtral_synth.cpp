// Synthetic Mixtral checkpoints (models/mixtral_adapter.h).
#include "models/mixtral_adapter.h"
#include "models/synth_families.h"

namespace moeprep::models {

synth::Checkpoint mixtral_synthetic(const synth::Options& o) {
  using synth::add;
  synth::Checkpoint ck;
  auto& t = ck.tensors;
  const int64_t E = o.experts, H = o.hidden, I = o.intermediate;
  const synth::AttentionShape att{2, 1, 16, false, false};
  synth::add_decoder_ends(t, o.vocab, H);
  for (int64_t l = 0; l < o.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    synth::add_layer_norms(t, p, H);
    synth::add_attention(t, p + "self_attn.", H, att);
    const std::string m = p + "block_sparse_moe.";
    add(t, m + "gate.weight", {E, H}, synth::router_stddev(H));
    for (int64_t e = 0; e < E; ++e) {
      const std::string x = m + "experts." + std::to_string(e) + ".";
      add(t, x + "w1.weight", {I, H}, 0.05);
      add(t, x + "w3.weight", {I, H}, 0.05);
      add(t, x + "w2.weight", {H, I}, 0.05);
    }
  }
  auto& c = ck.config;
  c["architectures"] = {"MixtralForCausalLM"};
  c["model_type"] = kMixtralModelType;
  c["hidden_size"] = H;
  c["intermediate_size"] = I;
  c["num_hidden_layers"] = o.layers;
  c["num_local_experts"] = E;
  c["num_experts_per_tok"] = o.top_k;
  c["num_attention_heads"] = att.heads;
  c["num_key_value_heads"] = att.kv_heads;
  c["head_dim"] = att.head_dim;
  c["hidden_act"] = "silu";
  c["vocab_size"] = o.vocab;
  c["rms_norm_eps"] = 1e-5;
  c["rope_theta"] = 1000000.0;
  c["tie_word_embeddings"] = false;
  c["torch_dtype"] = "bfloat16";
  c["moeprep_synthetic"] = synth::provenance(o);
  return ck;
}

}  // namespace moeprep::models
