#include "models/gpt_oss_bf16_adapter.h"

#include "models/adapter_support.h"
#include "models/gated_moe_adapter.h"
#include "models/gpt_oss.h"

namespace moeprep::models {

bool has_gpt_oss_bf16_experts(const io::Checkpoint& c) {
  return !c.try_find(gpt_oss::source_names(0).gate_up_blocks) &&
         c.try_find(gpt_oss::experts_prefix(0) + "gate_up_proj") != nullptr;
}

std::unique_ptr<ModelAdapter> make_gpt_oss_bf16_adapter(const io::Checkpoint& c, const std::string& config_path) {
  GatedFamily f;
  f.family = gpt_oss::kModelType;
  f.label = "GPT-OSS BF16";
  f.info = gpt_oss::read_config(c.config(), config_path);
  check_counts_fit_checkpoint(c, f.info, 0, false, config_path);
  for (int64_t l = 0; l < f.info.layers; ++l) f.moe_layers.push_back(l);
  f.layers_prefix = "model.layers.";
  f.experts_infix = "mlp.experts.";
  const int64_t E = f.info.experts, H = f.info.hidden, I = f.info.intermediate;
  f.layer = [&c, E, H, I](int64_t l) {
    const std::string p = gpt_oss::experts_prefix(l);
    const gpt_oss::SourceNames s = gpt_oss::source_names(l);
    GatedLayer g;
    g.output_prefix = g.expert_block_prefix = p;
    g.gate_up_interleaved = true;
    g.w13 = transposed_bf16_rows(c, p + "gate_up_proj", E, 2 * I, H, "the GPT-OSS BF16 layout");
    g.w2 = transposed_bf16_rows(c, p + "down_proj", E, H, I, "the GPT-OSS BF16 layout");
    g.w13_bias = p + "gate_up_proj_bias";
    g.w2_bias = p + "down_proj_bias";
    g.router_weight = s.router_weight;
    if (c.try_find(s.router_bias)) g.router_bias = s.router_bias;
    return g;
  };
  return make_gated_moe_adapter(c, std::move(f));
}

}  // namespace moeprep::models
