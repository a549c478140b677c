#pragma once
// A recipe: the ordered layout steps that turn one source tensor into one kernel-ready
// tensor. The manifest records it (to_json) and verify rebuilds it (from_json) to undo it.
#include <vector>

#include "core/byte_tensor.h"
#include "layout/step.h"

namespace moeprep::layout {

struct Recipe {
  std::vector<StepPtr> steps;

  // Shape and dtype after all steps; throw BadInput naming the step whose constraint fails.
  Shape output_shape(Shape in) const;
  Dtype output_dtype(Dtype in) const;
  // True when every step is: then the recipe may run on slices of experts.
  bool expert_separable() const;

  ByteTensor apply(ByteTensor in) const;
  // Walks the steps backwards; the intermediate shapes and dtypes are recomputed from the
  // recipe's input (in_shape, in_dtype).
  ByteTensor undo(ByteTensor out, Shape in_shape, Dtype in_dtype) const;

  // [{"id": ..., "params": {...}}, ...]
  nlohmann::ordered_json to_json() const;
  // Throws BadInput naming the entry index for a malformed entry or unknown step.
  static Recipe from_json(const nlohmann::ordered_json& json);
};

}  // namespace moeprep::layout
