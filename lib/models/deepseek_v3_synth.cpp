// Synthetic DeepSeek-V3 checkpoints (models/deepseek_v3_adapter.h): multi-head latent
// attention, layer 0 dense (first_k_dense_replace = 1), shared experts, routed experts with a
// correction bias and two expert groups of which one is kept (so grouping decides picks).
// FP8: every linear layer is F8_E4M3 with 128x128 F32 block scales (weight_scale_inv), the
// router stays BF16, as DeepSeek publishes it; otherwise all BF16.
#include "models/deepseek_v3_adapter.h"
#include "models/synth_families.h"

#include "core/error.h"

namespace moeprep::models {
namespace {

constexpr int64_t kBlock = 128;

// A linear layer's weight [rows, cols] (+ block scales): values about N(0, 0.05) either way.
void add_linear(std::vector<synth::Tensor>& t, const std::string& name, int64_t rows, int64_t cols, bool fp8) {
  if (!fp8) {
    synth::add(t, name, {rows, cols}, 0.05);
    return;
  }
  // Codes spread over the E4M3 range (about 100 of 448), scales 0.05 / 100 varying per block.
  synth::add(t, name, {rows, cols}, 100.0, 0.0, Dtype::F8_E4M3);
  synth::Tensor s;
  s.name = name + "_scale_inv";
  s.dtype = Dtype::F32;
  s.shape = {(rows + kBlock - 1) / kBlock, (cols + kBlock - 1) / kBlock};
  s.fill = synth::Fill::LogNormal;
  s.mean = 0.05 / 100.0;
  s.stddev = 0.3;
  t.push_back(s);
}

}  // namespace

synth::Checkpoint deepseek_v3_synthetic(const synth::Options& o, bool fp8) {
  using synth::add;
  if (o.experts % 2 != 0) throw_usage("synthetic deepseek_v3: experts must be even (two expert groups)");
  synth::Checkpoint ck;
  auto& t = ck.tensors;
  const int64_t E = o.experts, H = o.hidden, I = o.intermediate, dense_i = I;
  const int64_t heads = 2, q_rank = 16, kv_rank = 16, nope = 16, rope = 16, v_dim = 16;
  synth::add_decoder_ends(t, o.vocab, H);
  for (int64_t l = 0; l < o.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    synth::add_layer_norms(t, p, H);
    const std::string a = p + "self_attn.";
    add_linear(t, a + "q_a_proj.weight", q_rank, H, fp8);
    synth::add_norm(t, a + "q_a_layernorm.weight", q_rank);
    add_linear(t, a + "q_b_proj.weight", heads * (nope + rope), q_rank, fp8);
    add_linear(t, a + "kv_a_proj_with_mqa.weight", kv_rank + rope, H, fp8);
    synth::add_norm(t, a + "kv_a_layernorm.weight", kv_rank);
    add_linear(t, a + "kv_b_proj.weight", heads * (nope + v_dim), kv_rank, fp8);
    add_linear(t, a + "o_proj.weight", H, heads * v_dim, fp8);
    const std::string m = p + "mlp.";
    if (l == 0) {
      add_linear(t, m + "gate_proj.weight", dense_i, H, fp8);
      add_linear(t, m + "up_proj.weight", dense_i, H, fp8);
      add_linear(t, m + "down_proj.weight", H, dense_i, fp8);
      continue;
    }
    add(t, m + "gate.weight", {E, H}, synth::router_stddev(H));
    add(t, m + "gate.e_score_correction_bias", {E}, 0.15, 0.0, Dtype::F32);
    for (int64_t e = 0; e < E; ++e) {
      const std::string x = m + "experts." + std::to_string(e) + ".";
      add_linear(t, x + "gate_proj.weight", I, H, fp8);
      add_linear(t, x + "up_proj.weight", I, H, fp8);
      add_linear(t, x + "down_proj.weight", H, I, fp8);
    }
    add_linear(t, m + "shared_experts.gate_proj.weight", I, H, fp8);
    add_linear(t, m + "shared_experts.up_proj.weight", I, H, fp8);
    add_linear(t, m + "shared_experts.down_proj.weight", H, I, fp8);
  }
  auto& c = ck.config;
  c["architectures"] = {"DeepseekV3ForCausalLM"};
  c["model_type"] = kDeepseekV3ModelType;
  c["hidden_size"] = H;
  c["intermediate_size"] = dense_i;
  c["moe_intermediate_size"] = I;
  c["num_hidden_layers"] = o.layers;
  c["n_routed_experts"] = E;
  c["n_shared_experts"] = 1;
  c["num_experts_per_tok"] = o.top_k;
  c["n_group"] = 2;
  c["topk_group"] = 1;
  c["routed_scaling_factor"] = 2.5;
  c["norm_topk_prob"] = true;
  c["scoring_func"] = "sigmoid";
  c["topk_method"] = "noaux_tc";
  c["first_k_dense_replace"] = 1;
  c["moe_layer_freq"] = 1;
  c["num_nextn_predict_layers"] = 0;
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = heads;
  c["q_lora_rank"] = q_rank;
  c["kv_lora_rank"] = kv_rank;
  c["qk_nope_head_dim"] = nope;
  c["qk_rope_head_dim"] = rope;
  c["v_head_dim"] = v_dim;
  c["hidden_act"] = "silu";
  c["vocab_size"] = o.vocab;
  c["rms_norm_eps"] = 1e-6;
  c["tie_word_embeddings"] = false;
  c["torch_dtype"] = "bfloat16";
  if (fp8)
    c["quantization_config"] = {{"activation_scheme", "dynamic"},
                                {"fmt", "e4m3"},
                                {"quant_method", "fp8"},
                                {"weight_block_size", {kBlock, kBlock}}};
  c["moeprep_synthetic"] = synth::provenance(o);
  return ck;
}

}  // namespace moeprep::models
