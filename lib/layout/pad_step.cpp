// `pad`: one generic step for every padding the aiter target needs: w13 viewed as
// [E, 2, I, Kb] -> [E, 2, I', Kb'] (gate and up halves padded separately), w2, scales (value
// 127 = 2^0) and bias (0). The output shape is recorded explicitly (out_shape) so that the
// padded view and the stored shape can differ.
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "formats/bf16.h"
#include "layout/pad_copy.h"
#include "layout/step_support.h"
#include "layout/steps.h"

namespace moeprep::layout {
namespace {

// The value as the manifest records it: an integer when it is one, else a float.
nlohmann::ordered_json value_json(double v) {
  if (std::nearbyint(v) == v && std::fabs(v) < 9007199254740992.0) return static_cast<int64_t>(v);
  return v;
}
std::string number_text(double v) { return value_json(v).dump(); }

template <typename T>
std::vector<uint8_t> bytes_of(T v) {
  std::vector<uint8_t> b(sizeof(T));
  std::memcpy(b.data(), &v, sizeof(T));
  return b;
}

// One element holding `value`, as stored (little-endian, like safetensors).
std::vector<uint8_t> fill_element(double value, Dtype dtype) {
  const std::string where = std::string("pad: value ") + number_text(value) + " for dtype " + dtype_name(dtype);
  const bool integral = std::nearbyint(value) == value;
  auto check_int_range = [&](double lo, double hi) {
    if (!integral || value < lo || value > hi)
      throw_bad_input(where + " is not an integer in [" + number_text(lo) + ", " + number_text(hi) + "]");
  };
  switch (dtype) {
    case Dtype::F32:
      if (static_cast<double>(static_cast<float>(value)) != value) throw_bad_input(where + " is not exact in F32");
      return bytes_of(static_cast<float>(value));
    case Dtype::F64: return bytes_of(value);
    case Dtype::BF16: {
      const uint16_t bits = float_to_bf16(static_cast<float>(value));
      if (static_cast<double>(bf16_to_float(bits)) != value) throw_bad_input(where + " is not exact in BF16");
      return bytes_of(bits);
    }
    case Dtype::I16: check_int_range(-32768, 32767); return bytes_of(static_cast<int16_t>(value));
    case Dtype::U16: check_int_range(0, 65535); return bytes_of(static_cast<uint16_t>(value));
    case Dtype::I32: check_int_range(-2147483648.0, 2147483647.0); return bytes_of(static_cast<int32_t>(value));
    case Dtype::U32: check_int_range(0, 4294967295.0); return bytes_of(static_cast<uint32_t>(value));
    case Dtype::I64: check_int_range(-9007199254740992.0, 9007199254740992.0); return bytes_of(static_cast<int64_t>(value));
    case Dtype::U64: check_int_range(0, 9007199254740992.0); return bytes_of(static_cast<uint64_t>(value));
    default: break;
  }
  const size_t elem = detail::element_bytes(dtype, "pad");
  if (elem == 1) {
    // 8-bit dtypes (U8, E8M0 and FP8 codes, ...): the value is the stored byte.
    check_int_range(0, 255);
    return {static_cast<uint8_t>(value)};
  }
  if (value != 0) throw_bad_input(where + ": only 0 is supported for this dtype");
  return std::vector<uint8_t>(elem, 0);
}

class PadStep final : public LayoutStep {
 public:
  PadStep(Shape view, Shape padded, double value, Shape out_shape)
      : view_(std::move(view)), padded_(std::move(padded)), out_shape_(std::move(out_shape)), value_(value) {
    const std::string what = " (view " + shape_to_string(view_) + ", padded " + shape_to_string(padded_) +
                             ", out_shape " + shape_to_string(out_shape_) + ")";
    if (view_.size() != padded_.size()) throw_bad_input("pad: view and padded differ in rank" + what);
    if (!std::isfinite(value_)) throw_bad_input("pad: value must be finite" + what);
    infer_ = !view_.empty() && view_[0] == -1;
    if (infer_ != (!padded_.empty() && padded_[0] == -1) || infer_ != (!out_shape_.empty() && out_shape_[0] == -1))
      throw_bad_input("pad: a leading -1 (inferred expert dim) must appear in view, padded and out_shape alike" +
                      what);
    for (size_t d = infer_ ? 1 : 0; d < view_.size(); ++d) {
      if (view_[d] < 0 || padded_[d] < 0) throw_bad_input("pad: negative dim" + what);
      if (padded_[d] < view_[d])
        throw_bad_input("pad: padded dim " + std::to_string(d) + " = " + std::to_string(padded_[d]) +
                        " is smaller than the view's " + std::to_string(view_[d]) + what);
    }
    for (size_t d = infer_ ? 1 : 0; d < out_shape_.size(); ++d)
      if (out_shape_[d] < 0) throw_bad_input("pad: negative dim" + what);
    if (tail_numel(padded_) != tail_numel(out_shape_))
      throw_bad_input("pad: out_shape does not hold the padded array's elements" + what);
    if (infer_ && tail_numel(view_) == 0)
      throw_bad_input("pad: the leading dim cannot be inferred from an empty view" + what);
  }

  std::string id() const override { return "pad"; }
  nlohmann::ordered_json params() const override {
    return {{"view", view_}, {"padded", padded_}, {"value", value_json(value_)}, {"out_shape", out_shape_}};
  }
  // Padding dim 0 would append whole fake experts: only the last slice would get them.
  bool expert_separable() const override { return !view_.empty() && view_[0] == padded_[0]; }

  Shape output_shape(const Shape& in) const override { return with_experts(out_shape_, resolved_view(in)); }
  Dtype output_dtype(Dtype in) const override {
    fill_element(value_, in);  // rejects a dtype that cannot hold the pad value
    return in;
  }

  ByteTensor apply(const ByteTensor& in) const override {
    detail::check_tensor_bytes(in, "pad");
    const Shape view = resolved_view(in.shape);
    const Shape padded = with_experts(padded_, view);
    const std::vector<uint8_t> fill = fill_element(value_, in.dtype);
    ByteTensor out{in.dtype, output_shape(in.shape),
                   std::vector<uint8_t>(static_cast<size_t>(checked_numel(padded, "pad")) * fill.size())};
    embed_padded(in.bytes.data(), view, out.bytes.data(), padded, fill);
    return out;
  }

  ByteTensor undo(const ByteTensor& out, const Shape& in_shape, Dtype in_dtype) const override {
    detail::check_undo_input(*this, "pad", out, in_shape, in_dtype);
    const Shape view = resolved_view(in_shape);
    const Shape padded = with_experts(padded_, view);
    const std::vector<uint8_t> fill = fill_element(value_, in_dtype);
    ByteTensor in{in_dtype, in_shape,
                  std::vector<uint8_t>(static_cast<size_t>(checked_numel(view, "pad")) * fill.size())};
    if (auto bad = crop_padded(out.bytes.data(), padded, in.bytes.data(), view, fill))
      throw_bad_input("pad: cannot undo: padding element at byte " + std::to_string(*bad) + " is not the pad value " +
                      number_text(value_));
    return in;
  }

 private:
  static int64_t tail_numel(const Shape& s) {
    if (s.empty()) return 1;
    return checked_numel(s[0] == -1 ? Shape(s.begin() + 1, s.end()) : s, "pad");
  }
  // `s` with its inferred leading dim taken from the resolved view.
  static Shape with_experts(Shape s, const Shape& view) {
    if (!s.empty() && s[0] == -1) s[0] = view[0];
    return s;
  }
  Shape resolved_view(const Shape& in) const {
    const int64_t numel = checked_numel(in, "pad");
    const Shape view = detail::resolve_leading(view_, numel, "pad");
    if (checked_numel(view, "pad") != numel)
      throw_bad_input("pad: input " + shape_to_string(in) + " has " + std::to_string(numel) +
                      " elements, the view " + shape_to_string(view_) + " has " +
                      std::to_string(checked_numel(view, "pad")));
    return view;
  }

  Shape view_, padded_, out_shape_;
  double value_;
  bool infer_ = false;
};

}  // namespace

StepPtr make_pad_step(Shape view, Shape padded, double value, Shape out_shape) {
  return std::make_shared<PadStep>(std::move(view), std::move(padded), value, std::move(out_shape));
}

StepPtr pad_step_from_params(const nlohmann::ordered_json& params) {
  detail::ParamReader p("pad", params, {"view", "padded", "value", "out_shape"});
  Shape padded = p.shape("padded", true);
  Shape out_shape = p.has("out_shape") ? p.shape("out_shape", true) : padded;
  return make_pad_step(p.shape("view", true), std::move(padded), p.number("value"), std::move(out_shape));
}

}  // namespace moeprep::layout
