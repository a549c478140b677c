#include "models/gemma4_adapter.h"

#include "core/error.h"
#include "models/activation_config.h"
#include "models/adapter_support.h"
#include "models/config_reader.h"
#include "models/gated_moe_adapter.h"

namespace moeprep::models {

std::unique_ptr<ModelAdapter> make_gemma4_adapter(const io::Checkpoint& c, const std::string& config_path) {
  const ConfigReader top(c.config(), config_path);
  const std::string model_type = top.string_or("model_type", "");
  const ConfigReader cfg = model_type == kGemma4ModelType ? top.object("text_config") : top;
  if (!cfg.bool_or("enable_moe_block", false))
    throw_bad_input(config_path + ": model_type '" + model_type +
                    "' without enable_moe_block is a dense model: there is nothing to convert");
  GatedFamily f = gated_family_from_config(cfg, kGemma4ModelType, "Gemma4", "num_experts", "moe_intermediate_size");
  f.info.model_type = model_type;  // the top level's: text_config may name its own
  f.info.layers = cfg.positive_int({"num_hidden_layers"});
  f.info.router.variant = reference::RouterVariant::Gemma4;
  f.info.router.top_k = static_cast<int>(cfg.positive_int({"top_k_experts", "num_experts_per_tok"}));
  // Gemma4TextConfig names it hidden_activation, default "gelu_pytorch_tanh".
  f.info.activation.kind = read_gated_activation(cfg, "hidden_activation", "gelu_pytorch_tanh", f.label);
  check_moe_info(f.info, config_path);
  check_counts_fit_checkpoint(c, f.info, 0, false, config_path);
  for (int64_t l = 0; l < f.info.layers; ++l) f.moe_layers.push_back(l);

  // The multimodal model keeps its text stack under model.language_model.
  f.layers_prefix = c.try_find("model.language_model.layers.0.experts.gate_up_proj") ? "model.language_model.layers."
                                                                                     : "model.layers.";
  f.experts_infix = "experts.";
  const int64_t E = f.info.experts, H = f.info.hidden, I = f.info.intermediate;
  const std::string layers = f.layers_prefix;
  f.layer = [&c, E, H, I, layers](int64_t l) {
    const std::string p = layers + std::to_string(l) + ".";
    GatedLayer g;
    g.output_prefix = g.expert_block_prefix = p + "experts.";
    g.w13 = sliced_bf16_rows(c, p + "experts.gate_up_proj", E, 2 * I, H, "the Gemma4 layout");
    g.w2 = sliced_bf16_rows(c, p + "experts.down_proj", E, H, I, "the Gemma4 layout");
    g.router_weight = p + "router.proj.weight";
    g.per_expert_scale = p + "router.per_expert_scale";
    g.router_input_scale = p + "router.scale";
    return g;
  };
  return make_gated_moe_adapter(c, std::move(f));
}

}  // namespace moeprep::models
