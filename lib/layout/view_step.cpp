// `view`: a reshape. The bytes do not move; the step exists so that a recipe records every
// shape change it relies on.
#include "core/error.h"
#include "layout/step_support.h"
#include "layout/steps.h"

namespace moeprep::layout {
namespace {

class ViewStep final : public LayoutStep {
 public:
  explicit ViewStep(Shape shape) : shape_(std::move(shape)) {
    for (size_t i = 0; i < shape_.size(); ++i)
      if (shape_[i] < (i == 0 ? -1 : 0))
        throw_bad_input("view: shape " + shape_to_string(shape_) + " has a negative dim (only a leading -1 is allowed)");
    checked_numel(Shape(shape_.begin() + (shape_.empty() ? 0 : 1), shape_.end()), "view");
  }

  std::string id() const override { return "view"; }
  nlohmann::ordered_json params() const override { return {{"shape", shape_}}; }
  bool expert_separable() const override { return true; }

  Shape output_shape(const Shape& in) const override {
    const int64_t numel = checked_numel(in, "view");
    const Shape out = detail::resolve_leading(shape_, numel, "view");
    if (checked_numel(out, "view") != numel)
      throw_bad_input("view: input " + shape_to_string(in) + " has " + std::to_string(numel) +
                      " elements, target shape " + shape_to_string(shape_) + " has " +
                      std::to_string(checked_numel(out, "view")));
    return out;
  }

  ByteTensor apply(const ByteTensor& in) const override {
    detail::check_tensor_bytes(in, "view");
    return ByteTensor{in.dtype, output_shape(in.shape), in.bytes};
  }

  ByteTensor undo(const ByteTensor& out, const Shape& in_shape, Dtype in_dtype) const override {
    detail::check_undo_input(*this, "view", out, in_shape, in_dtype);
    return ByteTensor{in_dtype, in_shape, out.bytes};
  }

 private:
  Shape shape_;
};

}  // namespace

StepPtr make_view_step(Shape shape) { return std::make_shared<ViewStep>(std::move(shape)); }

StepPtr view_step_from_params(const nlohmann::ordered_json& params) {
  detail::ParamReader p("view", params, {"shape"});
  return make_view_step(p.shape("shape", true));
}

}  // namespace moeprep::layout
