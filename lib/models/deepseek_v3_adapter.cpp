#include "models/deepseek_v3_adapter.h"

#include <optional>

#include "core/error.h"
#include "models/activation_config.h"
#include "models/adapter_support.h"
#include "models/config_reader.h"
#include "models/gated_moe_adapter.h"
#include "models/grouped_router_config.h"

namespace moeprep::models {
namespace {

struct Fp8Blocks {
  int64_t n = 128, k = 128;
};

// Whether the experts are FP8 (and with which blocks) is decided by config.json; the tensors
// are then checked against it, so a mismatch is reported instead of guessed around.
std::optional<Fp8Blocks> fp8_blocks(const ConfigReader& cfg) {
  if (!cfg.has("quantization_config")) return std::nullopt;
  const ConfigReader q = cfg.object("quantization_config");
  const std::string method = q.string_or("quant_method", "");
  if (method != "fp8")
    q.fail("quant_method", "is '" + method + "': deepseek_v3 experts are converted from FP8 block scaling or BF16");
  const std::string fmt = q.string_or("fmt", "e4m3");
  if (fmt != "e4m3") q.fail("fmt", "is '" + fmt + "': only e4m3 FP8 is supported");
  Fp8Blocks b;
  const std::vector<int64_t> size = q.int_list("weight_block_size");
  if (size.empty()) q.fail("weight_block_size", "is missing: block-scaled FP8 needs it");
  if (size.size() != 2 || size[0] <= 0 || size[1] <= 0) q.fail("weight_block_size", "must be two positive integers");
  b.n = size[0];
  b.k = size[1];
  return b;
}

}  // namespace

std::unique_ptr<ModelAdapter> make_deepseek_v3_adapter(const io::Checkpoint& c, const std::string& config_path) {
  const ConfigReader cfg(c.config(), config_path);
  GatedFamily f =
      gated_family_from_config(cfg, kDeepseekV3ModelType, "DeepSeek-V3", "n_routed_experts", "moe_intermediate_size");
  f.info.layers = cfg.positive_int({"num_hidden_layers"});
  const std::string scoring = cfg.string_or("scoring_func", "sigmoid");
  if (scoring != "sigmoid")
    cfg.fail("scoring_func", "is '" + scoring + "': the deepseek_v3 router scores experts with a sigmoid");
  f.info.router = read_sigmoid_grouped_router(cfg);
  // DeepseekV3Config defaults hidden_act to "silu".
  f.info.activation.kind = read_gated_activation(cfg, "hidden_act", "silu", f.label);
  check_moe_info(f.info, config_path);
  const std::optional<Fp8Blocks> fp8 = fp8_blocks(cfg);
  // noaux_tc routing needs the correction bias; other exports may simply not have one.
  const bool needs_bias = cfg.string_or("topk_method", "noaux_tc") == "noaux_tc";

  const int64_t first_moe = cfg.int_or("first_k_dense_replace", 0);
  const int64_t freq = cfg.has("moe_layer_freq") ? cfg.positive_int({"moe_layer_freq"}) : 1;
  const int64_t nextn = cfg.int_or("num_nextn_predict_layers", 0);
  check_counts_fit_checkpoint(c, f.info, nextn, true, config_path);
  for (int64_t l = 0; l < f.info.layers + nextn; ++l) {
    if (l < first_moe || l % freq != 0) continue;
    // Exports often drop the prediction layers; only those present are converted.
    if (l >= f.info.layers && !c.try_find("model.layers." + std::to_string(l) + ".mlp.experts.0.gate_proj.weight"))
      continue;
    f.moe_layers.push_back(l);
  }

  f.layers_prefix = "model.layers.";
  f.experts_infix = "mlp.experts.";
  const int64_t E = f.info.experts, H = f.info.hidden, I = f.info.intermediate;
  f.layer = [&c, E, H, I, fp8, needs_bias](int64_t l) {
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.";
    const std::string why = fp8 ? "the DeepSeek-V3 FP8 layout (config.json quantization_config)"
                                : "the DeepSeek-V3 BF16 layout (config.json has no quantization_config)";
    std::vector<std::vector<std::string>> w13(E), w2(E), s13(E), s2(E);
    for (int64_t e = 0; e < E; ++e) {
      const std::string x = p + "experts." + std::to_string(e) + ".";
      w13[e] = {x + "gate_proj.weight", x + "up_proj.weight"};
      w2[e] = {x + "down_proj.weight"};
      s13[e] = {x + "gate_proj.weight_scale_inv", x + "up_proj.weight_scale_inv"};
      s2[e] = {x + "down_proj.weight_scale_inv"};
    }
    GatedLayer g;
    g.output_prefix = g.expert_block_prefix = p + "experts.";
    if (fp8) {
      g.w13 = stacked_fp8_rows(c, w13, s13, {I, I}, H, fp8->n, fp8->k, why);
      g.w2 = stacked_fp8_rows(c, w2, s2, {H}, I, fp8->n, fp8->k, why);
    } else {
      g.w13 = stacked_bf16_rows(c, w13, {I, I}, H, why);
      g.w2 = stacked_bf16_rows(c, w2, {H}, I, why);
    }
    g.router_weight = p + "gate.weight";
    const std::string bias = p + "gate.e_score_correction_bias";
    if (needs_bias || c.try_find(bias)) g.correction_bias = bias;
    return g;
  };
  return make_gated_moe_adapter(c, std::move(f));
}

}  // namespace moeprep::models
