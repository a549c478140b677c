#include "models/grouped_router_config.h"

namespace moeprep::models {

reference::RouterConfig read_sigmoid_grouped_router(const ConfigReader& cfg) {
  reference::RouterConfig r;
  r.variant = reference::RouterVariant::SigmoidGroupedBiased;
  r.top_k = static_cast<int>(cfg.positive_int({"num_experts_per_tok"}));
  r.n_group = static_cast<int>(cfg.has("n_group") ? cfg.positive_int({"n_group"}) : 1);
  r.topk_group = static_cast<int>(cfg.has("topk_group") ? cfg.positive_int({"topk_group"}) : 1);
  r.routed_scaling_factor = cfg.number_or("routed_scaling_factor", 1.0);
  r.renormalize = cfg.bool_or("norm_topk_prob", true);
  return r;
}

}  // namespace moeprep::models
