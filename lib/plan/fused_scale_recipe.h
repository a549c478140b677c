#pragma once
// The aiter scale recipes ([deinterleave_gate_up_rows], pad with 127, view, aiter_shuffle_scale)
// in one pass, like fused_weight_recipe.h does for the weights: each E8M0 byte goes straight
// to where the shuffled scale layout keeps it (layout/addressing.h ScaleLayout), padding written
// as 127 (2^0). The step-by-step recipe stays the specification; tests require equal bytes.
#include <cstddef>
#include <cstdint>

#include "plan/aiter_recipes.h"
#include "plan/options.h"

namespace moeprep::plan {

// Whether this role/options combination has a fused path (else apply the recipe).
bool has_fused_scale_recipe(ExpertRole role, const ExpertDims& dims, const ConvertOptions& options,
                            bool gate_up_interleaved);

// Writes the recipe's output for `in` (the canonical scales of experts [0, dims.experts)) into
// `out`, every byte of it. Requires has_fused_scale_recipe().
void write_scale_recipe_fused(ExpertRole role, const ExpertDims& dims, const ConvertOptions& options,
                              bool gate_up_interleaved, const uint8_t* in, size_t in_size, uint8_t* out,
                              size_t out_size);

}  // namespace moeprep::plan
