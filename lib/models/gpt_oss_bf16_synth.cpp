// Synthetic GPT-OSS with BF16 experts, in transformers' dequantized layout
// (models/gpt_oss_bf16_adapter.h).
#include "models/gpt_oss.h"
#include "models/synth_families.h"

namespace moeprep::models {

synth::Checkpoint gpt_oss_bf16_synthetic(const synth::Options& o) {
  using synth::add;
  synth::Checkpoint ck;
  auto& t = ck.tensors;
  const int64_t E = o.experts, H = o.hidden, I = o.intermediate;
  const synth::AttentionShape att{2, 1, 16, true, false};
  synth::add_decoder_ends(t, o.vocab, H);
  for (int64_t l = 0; l < o.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    synth::add_layer_norms(t, p, H);
    synth::add_attention(t, p + "self_attn.", H, att);
    add(t, p + "self_attn.o_proj.bias", {H});
    add(t, p + "self_attn.sinks", {att.heads}, 1.0);
    const gpt_oss::SourceNames s = gpt_oss::source_names(l);
    add(t, s.router_weight, {E, H}, synth::router_stddev(H));
    add(t, s.router_bias, {E}, 0.5);
    const std::string x = gpt_oss::experts_prefix(l);
    add(t, x + "gate_up_proj", {E, H, 2 * I}, 0.05);
    add(t, x + "gate_up_proj_bias", {E, 2 * I}, 0.1);
    add(t, x + "down_proj", {E, I, H}, 0.05);
    add(t, x + "down_proj_bias", {E, H}, 0.1);
  }
  auto& c = ck.config;
  c["architectures"] = {"GptOssForCausalLM"};
  c["model_type"] = gpt_oss::kModelType;
  c["hidden_size"] = H;
  c["intermediate_size"] = I;
  c["num_hidden_layers"] = o.layers;
  c["num_local_experts"] = E;
  c["num_experts_per_tok"] = o.top_k;
  c["experts_per_token"] = o.top_k;
  c["num_attention_heads"] = att.heads;
  c["num_key_value_heads"] = att.kv_heads;
  c["head_dim"] = att.head_dim;
  c["vocab_size"] = o.vocab;
  c["swiglu_limit"] = 7.0;
  c["rope_theta"] = 150000;
  c["torch_dtype"] = "bfloat16";
  c["moeprep_synthetic"] = synth::provenance(o);
  return ck;
}

}  // namespace moeprep::models
