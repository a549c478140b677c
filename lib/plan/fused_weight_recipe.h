#pragma once
// The aiter weight recipes (view, [deinterleave_gate_up_rows], [pad], aiter_shuffle_weight) in
// one pass: each 16-byte run of a source row is copied straight to where the shuffled tile
// layout keeps it (layout/addressing.h), padding left zero. Weights are ~94% of a
// checkpoint's bytes; the step-by-step recipe moves them four times. The recipe stays the
// specification: tests require identical bytes, and verify undoes the recorded steps.
#include <optional>

#include "core/byte_tensor.h"
#include "plan/aiter_recipes.h"
#include "plan/options.h"

namespace moeprep::plan {

// The recipe's output for `in` (the canonical source of experts [0, dims.experts)), or nullopt
// when this role/options combination has no fused path (then apply the recipe).
std::optional<ByteTensor> apply_weight_recipe_fused(ExpertRole role, const ExpertDims& dims,
                                                    const ConvertOptions& options, bool gate_up_interleaved,
                                                    const uint8_t* in, size_t in_size);

}  // namespace moeprep::plan
