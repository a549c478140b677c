#pragma once
// A layout step that is a pure permutation of a byte tensor: tile_view() reshapes the input
// (checking the step's constraints on the way) and order() permutes that view. Shape, dtype,
// apply and undo follow from those two; the weight tile shuffles and the interleaved scale
// shuffle are such steps.
#include <string>

#include "layout/permute.h"
#include "layout/step.h"

namespace moeprep::layout::detail {

class BytePermutationStep : public LayoutStep {
 public:
  Shape output_shape(const Shape& in) const override;  // the input shape, once tile_view accepts it
  Dtype output_dtype(Dtype in) const override;          // byte dtypes only
  ByteTensor apply(const ByteTensor& in) const override;
  ByteTensor undo(const ByteTensor& out, const Shape& in_shape, Dtype in_dtype) const override;

 protected:
  // The step as errors name it, e.g. "aiter_shuffle_weight(separated)".
  virtual std::string label() const = 0;
  virtual Shape tile_view(const Shape& in) const = 0;
  virtual Permutation order() const = 0;
  [[noreturn]] void reject(const std::string& why) const;
};

}  // namespace moeprep::layout::detail
