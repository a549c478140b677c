// `aiter_shuffle_scale`: the E8M0 scale shuffles of ROCm/aiter (layouts.md sections 5 and 6).
// ScaleLayout in addressing.h is the same map written as logical -> physical offsets.
#include "core/error.h"
#include "core/shape.h"
#include "layout/pad_copy.h"
#include "layout/byte_permutation_step.h"
#include "layout/step_support.h"
#include "layout/steps.h"

namespace moeprep::layout {
namespace {

constexpr const char* kId = "aiter_shuffle_scale";

class ScaleShuffleBase : public detail::BytePermutationStep {
 public:
  std::string id() const override { return kId; }

 protected:
  void check_2d(const Shape& in) const {
    checked_numel(in, label());
    if (in.size() != 2) reject("input " + shape_to_string(in) + " is not a 2-D [rows, S] scale matrix");
  }
};

// Section 5: pad [M, S] to [M', S'] with pad_value, then view (M'/32, 2, 16, S'/8, 2, 4) ->
// permute (0, 3, 5, 2, 4, 1).
class SeparatedScaleShuffle final : public ScaleShuffleBase {
 public:
  explicit SeparatedScaleShuffle(int pad_value) : pad_value_(pad_value) {
    if (pad_value < 0 || pad_value > 255)
      reject("pad_value " + std::to_string(pad_value) + " is not a byte (0..255)");
  }
  nlohmann::ordered_json params() const override { return {{"gate_mode", "separated"}, {"pad_value", pad_value_}}; }
  // The rows of all experts are padded to a multiple of 256 as one matrix: a slice would get
  // its own padding in the middle of the tensor.
  bool expert_separable() const override { return false; }

  Shape output_shape(const Shape& in) const override {
    check_2d(in);
    return {round_up(in[0], 256), round_up(in[1], 8)};
  }

  ByteTensor apply(const ByteTensor& in) const override {
    output_dtype(in.dtype);
    detail::check_tensor_bytes(in, label());
    const Shape padded = output_shape(in.shape);
    std::vector<uint8_t> staged(static_cast<size_t>(padded[0] * padded[1]));
    embed_padded(in.bytes.data(), in.shape, staged.data(), padded, {static_cast<uint8_t>(pad_value_)});
    ByteTensor out{in.dtype, padded, std::vector<uint8_t>(staged.size())};
    permute_bytes(staged.data(), out.bytes.data(), tile_view(padded), order(), 1);
    return out;
  }

  ByteTensor undo(const ByteTensor& out, const Shape& in_shape, Dtype in_dtype) const override {
    detail::check_undo_input(*this, label(), out, in_shape, in_dtype);
    std::vector<uint8_t> staged(out.bytes.size());
    unpermute_bytes(out.bytes.data(), staged.data(), tile_view(out.shape), order(), 1);
    ByteTensor in{in_dtype, in_shape, std::vector<uint8_t>(static_cast<size_t>(in_shape[0] * in_shape[1]))};
    if (auto bad = crop_padded(staged.data(), out.shape, in.bytes.data(), in_shape,
                               {static_cast<uint8_t>(pad_value_)}))
      reject("cannot undo: padding scale at (" + std::to_string(*bad / out.shape[1]) + ", " +
             std::to_string(*bad % out.shape[1]) + ") of the unshuffled [M', S'] is not pad_value " +
             std::to_string(pad_value_));
    return in;
  }

 private:
  std::string label() const override { return std::string(kId) + "(separated)"; }
  // Of the padded [M', S'] matrix.
  Shape tile_view(const Shape& padded) const override { return {padded[0] / 32, 2, 16, padded[1] / 8, 2, 4}; }
  Permutation order() const override { return {0, 3, 5, 2, 4, 1}; }
  int pad_value_;
};

// Section 6: [E * n, S], n % 32 == 0, S % 8 == 0 (and 32 * S >= 256).
class InterleaveScaleShuffle final : public ScaleShuffleBase {
 public:
  InterleaveScaleShuffle(bool gate_up, int64_t experts) : gate_up_(gate_up), experts_(experts) {
    if (experts < 1) reject("experts=" + std::to_string(experts) + " must be at least 1");
  }
  nlohmann::ordered_json params() const override {
    return {{"gate_mode", "interleave"}, {"gate_up", gate_up_}, {"experts", experts_}};
  }
  // Each expert's rows are shuffled on their own (rebuild with the slice's expert count).
  bool expert_separable() const override { return true; }

 private:
  std::string label() const override {
    return std::string(kId) + (gate_up_ ? "(interleave, gate_up)" : "(interleave, down)");
  }

  Shape tile_view(const Shape& in) const override {
    check_2d(in);
    const int64_t m = in[0], s = in[1];
    if (m % experts_ != 0)
      reject("rows=" + std::to_string(m) + " is not a multiple of experts=" + std::to_string(experts_));
    const int64_t n = m / experts_;
    if (n % 32 != 0) reject("rows per expert n=" + std::to_string(n) + " is not a multiple of 32");
    if (s % 8 != 0) reject("S=" + std::to_string(s) + " is not a multiple of 8");
    if (32 * s < 256) reject("32*S=" + std::to_string(32 * s) + " is less than 256");
    if (gate_up_) return {experts_, 2, n / 32, 16, s / 8, 2, 4};
    return {experts_, n / 32, 2, 16, s / 8, 2, 4};
  }

  Permutation order() const override {
    if (gate_up_) return {0, 2, 4, 6, 3, 5, 1};
    return {0, 1, 4, 6, 3, 5, 2};
  }

  bool gate_up_;
  int64_t experts_;
};

}  // namespace

StepPtr make_aiter_shuffle_scale_separated_step(int pad_value) {
  return std::make_shared<SeparatedScaleShuffle>(pad_value);
}

StepPtr make_aiter_shuffle_scale_interleave_step(bool gate_up, int64_t experts) {
  return std::make_shared<InterleaveScaleShuffle>(gate_up, experts);
}

StepPtr aiter_shuffle_scale_step_from_params(const nlohmann::ordered_json& params) {
  detail::ParamReader p(kId, params, {"gate_mode", "pad_value", "gate_up", "experts"});
  if (detail::gate_mode_from_name(p.string("gate_mode"), kId) == GateMode::Separated) {
    if (p.has("gate_up") || p.has("experts"))
      throw_bad_input(std::string(kId) + "(separated): params gate_up and experts belong to the interleave mode");
    const int64_t pad = p.has("pad_value") ? p.integer("pad_value") : 127;
    if (pad < 0 || pad > 255)
      throw_bad_input(std::string(kId) + "(separated): pad_value " + std::to_string(pad) + " is not a byte (0..255)");
    return make_aiter_shuffle_scale_separated_step(static_cast<int>(pad));
  }
  if (p.has("pad_value"))
    throw_bad_input(std::string(kId) + "(interleave): param pad_value belongs to the separated mode (no padding here)");
  return make_aiter_shuffle_scale_interleave_step(p.boolean("gate_up"), p.integer("experts"));
}

}  // namespace moeprep::layout
