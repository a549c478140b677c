#pragma once
// The sigmoid grouped, biased router (routers.md) as DeepSeek-V3 and Nemotron-H configs state it:
// num_experts_per_tok, n_group and topk_group (1 when absent, both configs' defaults),
// routed_scaling_factor (1.0) and norm_topk_prob (true).
#include "models/config_reader.h"

namespace moeprep::models {

reference::RouterConfig read_sigmoid_grouped_router(const ConfigReader& cfg);

}  // namespace moeprep::models
