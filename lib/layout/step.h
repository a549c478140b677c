#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "core/byte_tensor.h"

namespace moeprep::layout {

// A layout step is a named, parameterised, invertible transform of one tensor: a byte
// permutation, a padding, a view or a cast. Steps are values: the planner composes them into
// a recipe, the manifest records each by id() and params(), and a recipe is rebuilt from the
// manifest with make_step() to undo it.
class LayoutStep {
 public:
  virtual ~LayoutStep() = default;
  virtual std::string id() const = 0;
  // Parameters that, with id(), rebuild this step exactly (make_step). Key order is fixed.
  virtual nlohmann::ordered_json params() const = 0;

  // Shape and dtype after the step; throws BadInput naming the violated constraint when the
  // input shape does not satisfy this step's requirements.
  virtual Shape output_shape(const Shape& in) const = 0;
  virtual Dtype output_dtype(Dtype in) const { return in; }

  // Whether the step maps experts (dim 0) independently, so that it may be applied to a
  // slice of experts [e0, e1) with the same result as slicing the whole output.
  virtual bool expert_separable() const { return true; }

  virtual ByteTensor apply(const ByteTensor& in) const = 0;
  // The exact inverse: undo(apply(x), x.shape, x.dtype) == x for every valid x.
  virtual ByteTensor undo(const ByteTensor& out, const Shape& in_shape, Dtype in_dtype) const = 0;
};

using StepPtr = std::shared_ptr<const LayoutStep>;

// The registry: rebuild a step from its id and params (as recorded in a manifest). Throws
// BadInput for an unknown id or bad params, listing the known ids.
StepPtr make_step(const std::string& id, const nlohmann::ordered_json& params);
std::vector<std::string> registered_step_ids();

}  // namespace moeprep::layout
