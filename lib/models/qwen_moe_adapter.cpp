#include "models/qwen_moe_adapter.h"

#include <algorithm>

#include "core/error.h"
#include "models/activation_config.h"
#include "models/adapter_support.h"
#include "models/config_reader.h"
#include "models/gated_moe_adapter.h"

namespace moeprep::models {

std::unique_ptr<ModelAdapter> make_qwen_moe_adapter(const io::Checkpoint& c, const std::string& config_path) {
  const ConfigReader cfg(c.config(), config_path);
  // The adapter serves both model types and names itself after the one it reads.
  const std::string model_type = cfg.string_or("model_type", "");
  GatedFamily f = gated_family_from_config(cfg, model_type, model_type == kQwen2MoeModelType ? "Qwen2-MoE" : "Qwen3-MoE",
                                           "num_experts", "moe_intermediate_size");
  f.info.layers = cfg.positive_int({"num_hidden_layers"});
  f.info.router.variant = reference::RouterVariant::SoftmaxThenTopk;
  f.info.router.top_k = static_cast<int>(cfg.positive_int({"num_experts_per_tok"}));
  f.info.router.renormalize = cfg.bool_or("norm_topk_prob", false);
  // Qwen2MoeConfig and Qwen3MoeConfig default hidden_act to "silu".
  f.info.activation.kind = read_gated_activation(cfg, "hidden_act", "silu", f.label);
  check_moe_info(f.info, config_path);
  check_counts_fit_checkpoint(c, f.info, 0, true, config_path);

  const int64_t step = cfg.has("decoder_sparse_step") ? cfg.positive_int({"decoder_sparse_step"}) : 1;
  const std::vector<int64_t> dense = cfg.int_list("mlp_only_layers");
  for (int64_t l = 0; l < f.info.layers; ++l)
    if (std::find(dense.begin(), dense.end(), l) == dense.end() && (l + 1) % step == 0) f.moe_layers.push_back(l);

  f.layers_prefix = "model.layers.";
  f.experts_infix = "mlp.experts.";
  const int64_t E = f.info.experts, H = f.info.hidden, I = f.info.intermediate;
  const std::string why = "the " + f.label + " layout";
  f.layer = [&c, E, H, I, why](int64_t l) {
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.";
    std::vector<std::vector<std::string>> w13(E), w2(E);
    for (int64_t e = 0; e < E; ++e) {
      const std::string x = p + "experts." + std::to_string(e) + ".";
      w13[e] = {x + "gate_proj.weight", x + "up_proj.weight"};
      w2[e] = {x + "down_proj.weight"};
    }
    GatedLayer g;
    g.output_prefix = g.expert_block_prefix = p + "experts.";
    g.w13 = stacked_bf16_rows(c, w13, {I, I}, H, why);
    g.w2 = stacked_bf16_rows(c, w2, {H}, I, why);
    g.router_weight = p + "gate.weight";
    return g;
  };
  return make_gated_moe_adapter(c, std::move(f));
}

}  // namespace moeprep::models
