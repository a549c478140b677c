#pragma once
// The reference MoE forward computed expert by expert: route every token, then for each expert
// that was picked, load its dense weights (one expert at a time, through a callback), run its
// tokens, and add the weighted results. Same math as moe_forward_reference (double
// accumulation); memory is one expert per worker instead of a whole layer, which is what lets
// verify check a 128-expert layer at T = 512 on a 24 GiB machine.
#include <functional>

#include "reference/moe.h"

namespace moeprep::reference {

// Loads expert `e` into a DenseMoeLayer holding that one expert (experts = E with slot[e] = 0,
// or experts = 1). Called from `threads` workers at once.
using ExpertLoader = std::function<DenseMoeLayer(int32_t e)>;

// The gate/up row rule comes with each loaded expert (DenseMoeLayer::gate_up_interleaved).
struct ExpertwiseShape {
  int64_t experts = 0, hidden = 0, intermediate = 0;
};

MoeOutput moe_forward_reference_by_expert(const ExpertwiseShape& shape, const ExpertLoader& load,
                                          const RouterWeights& router, const RouterConfig& rc,
                                          const ActivationParams& act, const uint16_t* x, int64_t tokens,
                                          int64_t valid_tokens, int threads = 1);

}  // namespace moeprep::reference
