#pragma once
// The aiter weight recipes (view, [deinterleave_gate_up_rows], [pad], aiter_shuffle_weight) in
// one pass: each 16-byte run of a source row is copied straight to where the shuffled tile
// layout keeps it (layout/addressing.h), padding written as zero. Weights are ~94% of a
// checkpoint's bytes; the step-by-step recipe moves them four times. The recipe stays the
// specification: tests require identical bytes, and verify undoes the recorded steps.
#include <cstddef>
#include <cstdint>
#include <functional>

#include "plan/aiter_recipes.h"
#include "plan/options.h"

namespace moeprep::plan {

// Whether this role/options combination has a fused path (else apply the recipe).
bool has_fused_weight_recipe(ExpertRole role, const ExpertDims& dims, const ConvertOptions& options);

// Writes the recipe's output for `in` (the canonical source of experts [0, dims.experts)) into
// `out`, every byte of it (padding included), so `out` may hold stale bytes from earlier use.
// `out_size` must be the recipe's output size. Requires has_fused_weight_recipe().
void write_weight_recipe_fused(ExpertRole role, const ExpertDims& dims, const ConvertOptions& options,
                               bool gate_up_interleaved, const uint8_t* in, size_t in_size, uint8_t* out,
                               size_t out_size);

// The same output for a source that makes its MXFP4 codes itself (a quantizing source's
// CanonicalSource::assemble_codes): writes the padding, then calls `produce` with a
// destination that puts each source row's 16-byte runs straight where the shuffled layout
// keeps them, so the codes are written once, in place. `produce` must fill every row of every
// one of dims.experts experts.
void write_weight_recipe_fused_from_codes(ExpertRole role, const ExpertDims& dims, const ConvertOptions& options,
                                          bool gate_up_interleaved, uint8_t* out, size_t out_size,
                                          const std::function<void(const models::CodeRowDestination&)>& produce);

}  // namespace moeprep::plan
