// Synthetic Nemotron-H checkpoints (models/nemotron_h_adapter.h) in its Hugging Face names:
// layers follow the pattern "ME*E" repeated ('M' Mamba-2 mixer, 'E' MoE, '*' attention), so
// the Mamba and attention tensors show that non-expert layers are copied through. MoE layers
// have non-gated experts (up_proj, down_proj), a router with a correction bias over two expert
// groups of which one is kept (so grouping decides the picks), and a shared expert.
#include "models/nemotron_h_adapter.h"
#include "models/synth_families.h"

#include "core/error.h"

namespace moeprep::models {

synth::Checkpoint nemotron_h_synthetic(const synth::Options& o) {
  using synth::add;
  if (o.experts % 2 != 0) throw_usage("synthetic nemotron_h: experts must be even (two expert groups)");
  synth::Checkpoint ck;
  auto& t = ck.tensors;
  const int64_t E = o.experts, H = o.hidden, I = o.intermediate, shared_i = 2 * I;
  // Mamba-2 sizes (tiny): heads x head_dim inner channels, one group, state 16, conv width 4.
  const int64_t m_heads = 2, m_head_dim = 16, m_groups = 1, m_state = 16, conv = 4;
  const int64_t m_inner = m_heads * m_head_dim, conv_dim = m_inner + 2 * m_groups * m_state;
  const synth::AttentionShape att{2, 1, 16, false, false};
  std::string pattern;
  for (int64_t l = 0; l < o.layers; ++l) pattern += "ME*E"[l % 4];

  add(t, "backbone.embeddings.weight", {o.vocab, H});
  add(t, "lm_head.weight", {o.vocab, H});
  synth::add_norm(t, "backbone.norm_f.weight", H);
  for (int64_t l = 0; l < o.layers; ++l) {
    const std::string p = "backbone.layers." + std::to_string(l) + ".";
    synth::add_norm(t, p + "norm.weight", H);
    const std::string m = p + "mixer.";
    switch (pattern[static_cast<size_t>(l)]) {
      case 'M':
        add(t, m + "in_proj.weight", {2 * m_inner + 2 * m_groups * m_state + m_heads, H});
        add(t, m + "conv1d.weight", {conv_dim, 1, conv});
        add(t, m + "conv1d.bias", {conv_dim});
        add(t, m + "A_log", {m_heads}, 0.5, 1.0, Dtype::F32);
        add(t, m + "D", {m_heads}, 0.1, 1.0, Dtype::F32);
        add(t, m + "dt_bias", {m_heads}, 0.1, 0.0, Dtype::F32);
        synth::add_norm(t, m + "norm.weight", m_inner);
        add(t, m + "out_proj.weight", {H, m_inner});
        break;
      case '*':
        add(t, m + "q_proj.weight", {att.heads * att.head_dim, H});
        add(t, m + "k_proj.weight", {att.kv_heads * att.head_dim, H});
        add(t, m + "v_proj.weight", {att.kv_heads * att.head_dim, H});
        add(t, m + "o_proj.weight", {H, att.heads * att.head_dim});
        break;
      default:  // 'E'
        add(t, m + "gate.weight", {E, H}, synth::router_stddev(H));
        add(t, m + "gate.e_score_correction_bias", {E}, 0.15, 0.0, Dtype::F32);
        for (int64_t e = 0; e < E; ++e) {
          const std::string x = m + "experts." + std::to_string(e) + ".";
          add(t, x + "up_proj.weight", {I, H}, 0.05);
          add(t, x + "down_proj.weight", {H, I}, 0.05);
        }
        add(t, m + "shared_experts.up_proj.weight", {shared_i, H}, 0.05);
        add(t, m + "shared_experts.down_proj.weight", {H, shared_i}, 0.05);
        break;
    }
  }
  auto& c = ck.config;
  c["architectures"] = {"NemotronHForCausalLM"};
  c["model_type"] = kNemotronHModelType;
  c["hidden_size"] = H;
  c["intermediate_size"] = I;
  c["num_hidden_layers"] = o.layers;
  c["hybrid_override_pattern"] = pattern;
  c["n_routed_experts"] = E;
  c["n_shared_experts"] = 1;
  c["num_experts_per_tok"] = o.top_k;
  c["moe_intermediate_size"] = I;
  c["moe_shared_expert_intermediate_size"] = shared_i;
  c["n_group"] = 2;
  c["topk_group"] = 1;
  c["routed_scaling_factor"] = 2.5;
  c["norm_topk_prob"] = true;
  c["mlp_hidden_act"] = "relu2";
  c["mlp_bias"] = false;
  c["num_attention_heads"] = att.heads;
  c["num_key_value_heads"] = att.kv_heads;
  c["head_dim"] = att.head_dim;
  c["attention_bias"] = false;
  c["mamba_num_heads"] = m_heads;
  c["mamba_head_dim"] = m_head_dim;
  c["n_groups"] = m_groups;
  c["ssm_state_size"] = m_state;
  c["conv_kernel"] = conv;
  c["mamba_hidden_act"] = "silu";
  c["use_conv_bias"] = true;
  c["use_bias"] = false;
  c["vocab_size"] = o.vocab;
  c["layer_norm_epsilon"] = 1e-5;
  c["tie_word_embeddings"] = false;
  c["torch_dtype"] = "bfloat16";
  c["moeprep_synthetic"] = synth::provenance(o);
  return ck;
}

}  // namespace moeprep::models
