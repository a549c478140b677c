// `cast_bf16_to_f32`: AITER's kernels take fp32 bias. Widening is exact (the BF16 bits become
// the high half of the float); the inverse refuses, rather than rounds, a float that BF16
// cannot hold, so a round trip can never hide a changed value.
#include <cstring>
#include <sstream>

#include "core/error.h"
#include "layout/step_support.h"
#include "layout/steps.h"

namespace moeprep::layout {
namespace {

constexpr const char* kId = "cast_bf16_to_f32";

class CastBf16ToF32 final : public LayoutStep {
 public:
  std::string id() const override { return kId; }
  nlohmann::ordered_json params() const override { return nlohmann::ordered_json::object(); }

  Shape output_shape(const Shape& in) const override {
    checked_numel(in, kId);
    return in;
  }
  Dtype output_dtype(Dtype in) const override {
    if (in != Dtype::BF16) throw_bad_input(std::string(kId) + ": input dtype is " + dtype_name(in) + ", not BF16");
    return Dtype::F32;
  }

  ByteTensor apply(const ByteTensor& in) const override {
    output_dtype(in.dtype);
    detail::check_tensor_bytes(in, kId);
    const size_t n = in.bytes.size() / 2;
    ByteTensor out{Dtype::F32, in.shape, std::vector<uint8_t>(n * 4)};
    const uint8_t* src = in.bytes.data();
    uint8_t* dst = out.bytes.data();
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      const uint32_t f = static_cast<uint32_t>(h) << 16;
      std::memcpy(dst + 4 * i, &f, 4);
    }
    return out;
  }

  ByteTensor undo(const ByteTensor& out, const Shape& in_shape, Dtype in_dtype) const override {
    detail::check_undo_input(*this, kId, out, in_shape, in_dtype);
    const size_t n = out.bytes.size() / 4;
    ByteTensor in{Dtype::BF16, in_shape, std::vector<uint8_t>(n * 2)};
    const uint8_t* src = out.bytes.data();
    uint8_t* dst = in.bytes.data();
    for (size_t i = 0; i < n; ++i) {
      uint32_t f;
      std::memcpy(&f, src + 4 * i, 4);
      if (f & 0xffffu) {
        float v;
        std::memcpy(&v, &f, 4);
        std::ostringstream msg;
        msg.precision(9);
        msg << kId << ": cannot undo: F32 element " << i << " = " << v << " (bits 0x" << std::hex << f
            << ") is not exactly representable in BF16";
        throw_bad_input(msg.str());
      }
      const uint16_t h = static_cast<uint16_t>(f >> 16);
      std::memcpy(dst + 2 * i, &h, 2);
    }
    return in;
  }
};

}  // namespace

StepPtr make_cast_bf16_to_f32_step() { return std::make_shared<CastBf16ToF32>(); }

StepPtr cast_bf16_to_f32_step_from_params(const nlohmann::ordered_json& params) {
  detail::ParamReader p(kId, params, {});
  return make_cast_bf16_to_f32_step();
}

}  // namespace moeprep::layout
