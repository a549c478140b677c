#pragma once
// The recipes of the `aiter` target: for each kernel-ready expert tensor, the ordered layout
// steps that turn the source tensor into it (layouts.md sections 1-7).
#include <string>

#include "core/shape.h"
#include "layout/recipe.h"
#include "models/adapter.h"
#include "plan/options.h"

namespace moeprep::plan {

using ExpertRole = models::Role;
const char* role_name(ExpertRole role);  // "w13_weight", "w13_weight_scale", ...
inline constexpr ExpertRole kAllRoles[] = {ExpertRole::W13Weight, ExpertRole::W13Scale, ExpertRole::W13Bias,
                                           ExpertRole::W2Weight,  ExpertRole::W2Scale,  ExpertRole::W2Bias};

struct ExpertDims {
  int64_t experts = 0, hidden = 0, intermediate = 0;
  int64_t hidden_pad = 0, intermediate_pad = 0;  // physical sizes
  // false: non-gated experts (relu^2, Nemotron-H): w13 holds the I up rows, not [gate; up].
  bool gated = true;
  // Rows of w13 per expert, logical and padded.
  int64_t w13_rows() const { return gated ? 2 * intermediate : intermediate; }
  int64_t w13_rows_pad() const { return gated ? 2 * intermediate_pad : intermediate_pad; }
};

// Physical sizes for the options; throws BadInput naming the constraint a pad value breaks.
ExpertDims padded_dims(int64_t experts, int64_t hidden, int64_t intermediate, const ConvertOptions& options,
                       bool gated = true);

struct RecipeSpec {
  layout::Recipe recipe;
  Dtype in_dtype = Dtype::U8;
  Shape in_shape;  // the source tensor's shape
  Dtype out_dtype = Dtype::U8;
  Shape out_shape;
  bool shuffled = false;
  std::string layout_id;  // e.g. "aiter/separated/w13_weight"
};

// The tensor's shape before padding and shuffling: what the kernel computes with.
Shape logical_shape(ExpertRole role, const ExpertDims& dims);

// The recipe for one role, from a canonical source (models/adapter.h: MXFP4 blocks, E8M0
// scales, BF16 bias), whose w13 rows are gate/up pairs when `gate_up_interleaved` (GPT-OSS)
// or already [gate; up]; for `dims.experts` experts (the executor asks for smaller expert
// counts to stream). Non-gated experts (!dims.gated): w13 is the up projection alone, [E, I,
// ...], padded to I' rows and shuffled in the non-gate_up tile order, like w2 (there is no
// pair to keep together).
RecipeSpec aiter_recipe(ExpertRole role, const ExpertDims& dims, const ConvertOptions& options,
                        bool gate_up_interleaved);

}  // namespace moeprep::plan
