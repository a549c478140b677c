// `deinterleave_gate_up_rows`: GPT-OSS stores gate and up rows as pairs (g0,u0,g1,u1,...);
// the kernels want [gate; up]. Weights, scales and bias all take this step together.
#include "core/error.h"
#include "layout/permute.h"
#include "layout/step_support.h"
#include "layout/steps.h"

namespace moeprep::layout {
namespace {

constexpr const char* kId = "deinterleave_gate_up_rows";

class DeinterleaveGateUpRows final : public LayoutStep {
 public:
  std::string id() const override { return kId; }
  nlohmann::ordered_json params() const override { return nlohmann::ordered_json::object(); }

  Shape output_shape(const Shape& in) const override {
    checked_numel(in, kId);
    if (in.size() < 2)
      throw_bad_input(std::string(kId) + ": input " + shape_to_string(in) + " needs at least 2 dims [E, 2I, ...]");
    if (in[1] % 2 != 0)
      throw_bad_input(std::string(kId) + ": dim 1 = " + std::to_string(in[1]) +
                      " is odd; gate/up rows come in pairs");
    return in;
  }

  ByteTensor apply(const ByteTensor& in) const override {
    detail::check_tensor_bytes(in, kId);
    ByteTensor out{in.dtype, output_shape(in.shape), std::vector<uint8_t>(in.bytes.size())};
    // (E, I, 2, row) -> (E, 2, I, row): each row of trailing dims moves as one run.
    permute_bytes(in.bytes.data(), out.bytes.data(), pair_view(in.shape), {0, 2, 1}, row_bytes(in));
    return out;
  }

  ByteTensor undo(const ByteTensor& out, const Shape& in_shape, Dtype in_dtype) const override {
    detail::check_undo_input(*this, kId, out, in_shape, in_dtype);
    ByteTensor in{in_dtype, in_shape, std::vector<uint8_t>(out.bytes.size())};
    unpermute_bytes(out.bytes.data(), in.bytes.data(), pair_view(in_shape), {0, 2, 1}, row_bytes(in));
    return in;
  }

 private:
  static Shape pair_view(const Shape& s) { return {s[0], s[1] / 2, 2}; }
  static size_t row_bytes(const ByteTensor& t) {
    size_t n = detail::element_bytes(t.dtype, kId);
    for (size_t d = 2; d < t.shape.size(); ++d) n *= static_cast<size_t>(t.shape[d]);
    return n;
  }
};

}  // namespace

StepPtr make_deinterleave_gate_up_rows_step() { return std::make_shared<DeinterleaveGateUpRows>(); }

StepPtr deinterleave_gate_up_rows_step_from_params(const nlohmann::ordered_json& params) {
  detail::ParamReader p(kId, params, {});
  return make_deinterleave_gate_up_rows_step();
}

}  // namespace moeprep::layout
