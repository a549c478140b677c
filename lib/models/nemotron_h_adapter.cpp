#include "models/nemotron_h_adapter.h"

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "models/activation_config.h"
#include "models/adapter_support.h"
#include "models/config_reader.h"
#include "models/gated_moe_adapter.h"
#include "models/grouped_router_config.h"

namespace moeprep::models {
namespace {

constexpr const char* kLayersPrefix = "backbone.layers.";

// Which layers are MoE: hybrid_override_pattern ("MEM*E...") or, in newer exports, the list
// layers_block_type. Returns one flag per layer.
std::vector<bool> moe_flags(const ConfigReader& cfg) {
  std::vector<bool> moe;
  if (cfg.has("hybrid_override_pattern")) {
    const std::string pattern = cfg.string_or("hybrid_override_pattern", "");
    for (char ch : pattern) {
      if (ch != 'M' && ch != '*' && ch != '-' && ch != 'E')
        cfg.fail("hybrid_override_pattern", "has '" + std::string(1, ch) +
                                                "': layers are 'M' (Mamba), '*' (attention), '-' (MLP) or 'E' (MoE)");
      moe.push_back(ch == 'E');
    }
  } else if (cfg.has("layers_block_type")) {
    const auto& list = cfg.json().at("layers_block_type");
    if (!list.is_array()) cfg.fail("layers_block_type", "must be a list of layer types");
    for (const auto& v : list) {
      const std::string type = v.is_string() ? v.get<std::string>() : "";
      if (type != "mamba" && type != "linear_attention" && type != "attention" && type != "full_attention" &&
          type != "mlp" && type != "moe")
        cfg.fail("layers_block_type", "has '" + (v.is_string() ? type : v.dump()) +
                                          "': layers are mamba, linear_attention, attention, full_attention, mlp or moe");
      moe.push_back(type == "moe");
    }
  } else {
    cfg.fail("hybrid_override_pattern", "is missing (nor is there a layers_block_type): it says which layers are MoE");
  }
  if (moe.empty()) cfg.fail("hybrid_override_pattern", "names no layers");
  if (cfg.has("num_hidden_layers") && cfg.positive_int({"num_hidden_layers"}) != static_cast<int64_t>(moe.size()))
    cfg.fail("num_hidden_layers", "is " + std::to_string(cfg.positive_int({"num_hidden_layers"})) + ", but the layer pattern has " +
                                      std::to_string(moe.size()) + " layers");
  return moe;
}

// Routed experts anywhere but backbone.layers (multi-token-prediction layers under "mtp.")
// would be copied through unconverted, which an engine expecting kernel-ready experts reads as
// garbage.
void refuse_experts_outside_backbone(const io::Checkpoint& c) {
  const std::string prefix = kLayersPrefix;
  for (const auto& name : c.tensor_names()) {
    if (name.find(".experts.") == std::string::npos || name.compare(0, prefix.size(), prefix) == 0) continue;
    throw_bad_input(c.find(name).file->path().string() + ": tensor '" + name +
                    "' holds routed experts outside backbone.layers (e.g. a multi-token-prediction layer), "
                    "which moeprep does not convert for Nemotron-H");
  }
}

}  // namespace

std::unique_ptr<ModelAdapter> make_nemotron_h_adapter(const io::Checkpoint& c, const std::string& config_path) {
  const ConfigReader cfg(c.config(), config_path);
  const std::vector<bool> moe = moe_flags(cfg);
  GatedFamily f =
      gated_family_from_config(cfg, kNemotronHModelType, "Nemotron-H", "n_routed_experts", "moe_intermediate_size");
  f.info.layers = static_cast<int64_t>(moe.size());
  if (cfg.bool_or("mlp_bias", false))
    cfg.fail("mlp_bias", "is true: Nemotron-H experts with biases are not supported");
  if (cfg.has("moe_latent_size"))
    cfg.fail("moe_latent_size", "is set: latent MoE (experts between fc1_latent_proj and fc2_latent_proj) is not supported");
  f.info.router = read_sigmoid_grouped_router(cfg);  // NemotronHConfig's defaults match
  f.info.activation.kind = read_non_gated_activation(cfg, "mlp_hidden_act", "relu2", f.label);
  check_moe_info(f.info, config_path);
  check_counts_fit_checkpoint(c, f.info, 0, true, config_path);
  refuse_experts_outside_backbone(c);
  for (int64_t l = 0; l < f.info.layers; ++l)
    if (moe[static_cast<size_t>(l)]) f.moe_layers.push_back(l);

  f.layers_prefix = kLayersPrefix;
  f.experts_infix = "mixer.experts.";
  const int64_t E = f.info.experts, H = f.info.hidden, I = f.info.intermediate;
  const std::string why = "the Nemotron-H layout";
  f.layer = [&c, E, H, I, why](int64_t l) {
    const std::string p = kLayersPrefix + std::to_string(l) + ".mixer.";
    std::vector<std::vector<std::string>> w13(E), w2(E);
    for (int64_t e = 0; e < E; ++e) {
      const std::string x = p + "experts." + std::to_string(e) + ".";
      w13[e] = {x + "up_proj.weight"};
      w2[e] = {x + "down_proj.weight"};
    }
    GatedLayer g;
    g.output_prefix = g.expert_block_prefix = p + "experts.";
    g.w13 = stacked_bf16_rows(c, w13, {I}, H, why);
    g.w2 = stacked_bf16_rows(c, w2, {H}, I, why);
    g.router_weight = p + "gate.weight";
    g.correction_bias = p + "gate.e_score_correction_bias";
    // The MoE mixer holds the router, the experts and the shared expert; anything else there
    // (a latent projection, a gate_proj of gated experts) is a layout moeprep would misread.
    std::vector<std::string> known = g.w13->tensors;
    known.insert(known.end(), g.w2->tensors.begin(), g.w2->tensors.end());
    for (const char* n : {"gate.weight", "gate.e_score_correction_bias", "shared_experts.up_proj.weight",
                          "shared_experts.down_proj.weight"})
      known.push_back(p + n);
    refuse_unknown_expert_tensors(c, p, known, "Nemotron-H");
    return g;
  };
  return make_gated_moe_adapter(c, std::move(f));
}

}  // namespace moeprep::models
