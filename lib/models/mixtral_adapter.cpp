#include "models/mixtral_adapter.h"

#include "models/activation_config.h"
#include "models/adapter_support.h"
#include "models/config_reader.h"
#include "models/gated_moe_adapter.h"

namespace moeprep::models {

std::unique_ptr<ModelAdapter> make_mixtral_adapter(const io::Checkpoint& c, const std::string& config_path) {
  const ConfigReader cfg(c.config(), config_path);
  GatedFamily f = gated_family_from_config(cfg, kMixtralModelType, "Mixtral", "num_local_experts", "intermediate_size");
  f.info.layers = cfg.positive_int({"num_hidden_layers"});
  f.info.router.variant = reference::RouterVariant::SoftmaxAfterTopk;
  f.info.router.top_k = static_cast<int>(cfg.positive_int({"num_experts_per_tok"}));
  // MixtralConfig defaults hidden_act to "silu".
  f.info.activation.kind = read_gated_activation(cfg, "hidden_act", "silu", f.label);
  check_moe_info(f.info, config_path);
  check_counts_fit_checkpoint(c, f.info, 0, true, config_path);
  for (int64_t l = 0; l < f.info.layers; ++l) f.moe_layers.push_back(l);

  f.layers_prefix = "model.layers.";
  f.experts_infix = "block_sparse_moe.experts.";
  const int64_t E = f.info.experts, H = f.info.hidden, I = f.info.intermediate;
  f.layer = [&c, E, H, I](int64_t l) {
    const std::string p = "model.layers." + std::to_string(l) + ".block_sparse_moe.";
    std::vector<std::vector<std::string>> w13(E), w2(E);
    for (int64_t e = 0; e < E; ++e) {
      const std::string x = p + "experts." + std::to_string(e) + ".";
      w13[e] = {x + "w1.weight", x + "w3.weight"};
      w2[e] = {x + "w2.weight"};
    }
    GatedLayer g;
    g.output_prefix = g.expert_block_prefix = p + "experts.";
    g.w13 = stacked_bf16_rows(c, w13, {I, I}, H, "the Mixtral layout");
    g.w2 = stacked_bf16_rows(c, w2, {H}, I, "the Mixtral layout");
    g.router_weight = p + "gate.weight";
    return g;
  };
  return make_gated_moe_adapter(c, std::move(f));
}

}  // namespace moeprep::models
