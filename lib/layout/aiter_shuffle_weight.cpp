// `aiter_shuffle_weight`: the MXFP4 weight tile shuffle of ROCm/aiter's shuffle_weight
// (layouts.md sections 3 and 4). WeightTileLayout in addressing.h is the same map written as
// logical -> physical offsets; the tests hold the two together.
#include "core/error.h"
#include "layout/byte_permutation_step.h"
#include "layout/step_support.h"
#include "layout/steps.h"

namespace moeprep::layout {
namespace {

constexpr const char* kId = "aiter_shuffle_weight";

class AiterShuffleWeight final : public detail::BytePermutationStep {
 public:
  AiterShuffleWeight(GateMode mode, bool gate_up) : mode_(mode), gate_up_(mode == GateMode::Interleave && gate_up) {}

  std::string id() const override { return kId; }
  nlohmann::ordered_json params() const override {
    nlohmann::ordered_json p = {{"gate_mode", detail::gate_mode_name(mode_)}};
    if (mode_ == GateMode::Interleave) p["gate_up"] = gate_up_;
    return p;
  }

 private:
  std::string label() const override {
    if (mode_ == GateMode::Separated) return std::string(kId) + "(separated)";
    return std::string(kId) + (gate_up_ ? "(interleave, gate_up)" : "(interleave, down)");
  }

  // The view of [E, N, Kb] that order() permutes; checks the constraints on the way.
  Shape tile_view(const Shape& in) const override {
    checked_numel(in, label());
    if (in.size() != 3) reject("input " + shape_to_string(in) + " is not [E, N, Kb]");
    const int64_t e = in[0], n = in[1], kb = in[2];
    if (mode_ == GateMode::Separated) {
      if (n % 16 != 0) reject("N=" + std::to_string(n) + " is not a multiple of 16");
      if (kb % 32 != 0) reject("Kb=" + std::to_string(kb) + " is not a multiple of 32");
      return {e, n / 16, 16, kb / 32, 2, 16};
    }
    if (gate_up_ && n % 32 != 0)
      reject("N=" + std::to_string(n) + " is not a multiple of 32 (gate and up halves of 16-row tiles)");
    if (n % 16 != 0) reject("N=" + std::to_string(n) + " is not a multiple of 16");
    if (kb % 64 != 0) reject("Kb=" + std::to_string(kb) + " is not a multiple of 64");
    if (gate_up_) return {e, 2, n / 32, 16, kb / 64, 4, 16};
    return {e, n / 16, 16, kb / 64, 4, 16};
  }

  Permutation order() const override {
    if (mode_ == GateMode::Separated) return {0, 1, 3, 4, 2, 5};
    if (gate_up_) return {0, 2, 1, 4, 5, 3, 6};
    return {0, 1, 3, 4, 2, 5};
  }

  GateMode mode_;
  bool gate_up_;
};

}  // namespace

StepPtr make_aiter_shuffle_weight_step(GateMode mode, bool gate_up) {
  return std::make_shared<AiterShuffleWeight>(mode, gate_up);
}

StepPtr aiter_shuffle_weight_step_from_params(const nlohmann::ordered_json& params) {
  detail::ParamReader p(kId, params, {"gate_mode", "gate_up"});
  const GateMode mode = detail::gate_mode_from_name(p.string("gate_mode"), kId);
  // The separated mode ignores gate_up (AITER does too), so it may be absent there.
  const bool gate_up = mode == GateMode::Interleave || p.has("gate_up") ? p.boolean("gate_up") : false;
  return make_aiter_shuffle_weight_step(mode, gate_up);
}

}  // namespace moeprep::layout
