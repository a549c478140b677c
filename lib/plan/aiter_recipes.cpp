#include "plan/aiter_recipes.h"

#include "core/error.h"

namespace moeprep::plan {
namespace {

using nlohmann::ordered_json;
using layout::GateMode;

layout::StepPtr step(const std::string& id, ordered_json params = ordered_json::object()) {
  return layout::make_step(id, params);
}

ordered_json to_json(const Shape& s) { return ordered_json(s); }

// Embeds `view` at the origin of `padded` (same rank), then presents the result as `out`.
// Omitted when nothing grows: a recipe lists only steps that change bytes.
void add_pad(layout::Recipe& r, const Shape& view, const Shape& padded, const Shape& out, int value) {
  if (view == padded) return;
  ordered_json p;
  p["view"] = to_json(view);
  p["padded"] = to_json(padded);
  p["value"] = value;
  p["out_shape"] = to_json(out);
  r.steps.push_back(step("pad", p));
}

void add_view(layout::Recipe& r, const Shape& shape) {
  ordered_json p;
  p["shape"] = to_json(shape);
  r.steps.push_back(step("view", p));
}

void add_weight_shuffle(layout::Recipe& r, GateMode mode, bool gate_up) {
  ordered_json p;
  p["gate_mode"] = gate_mode_name(mode);
  p["gate_up"] = gate_up;
  r.steps.push_back(step("aiter_shuffle_weight", p));
}

void add_scale_shuffle(layout::Recipe& r, GateMode mode, bool gate_up, int64_t experts) {
  ordered_json p;
  p["gate_mode"] = gate_mode_name(mode);
  if (mode == GateMode::Separated) {
    p["pad_value"] = 127;
  } else {
    p["gate_up"] = gate_up;
    p["experts"] = experts;
  }
  r.steps.push_back(step("aiter_shuffle_scale", p));
}

GateMode other(GateMode m) { return m == GateMode::Separated ? GateMode::Interleave : GateMode::Separated; }

}  // namespace

const char* role_name(ExpertRole role) {
  switch (role) {
    case ExpertRole::W13Weight: return "w13_weight";
    case ExpertRole::W13Scale: return "w13_weight_scale";
    case ExpertRole::W13Bias: return "w13_weight_bias";
    case ExpertRole::W2Weight: return "w2_weight";
    case ExpertRole::W2Scale: return "w2_weight_scale";
    case ExpertRole::W2Bias: return "w2_weight_bias";
  }
  return "?";
}

ExpertDims padded_dims(int64_t experts, int64_t hidden, int64_t intermediate, const ConvertOptions& o, bool gated) {
  const int64_t ph = o.effective_pad_hidden(), pi = o.effective_pad_intermediate();
  // Both sizes are a K of some GEMM (hidden for w13, intermediate for w2): the weight tile
  // shuffle needs K/2 bytes in whole 32-byte (separated) or 64-byte (interleaved) tiles, and the
  // interleaved scale shuffle needs K/32 groups in whole 8s.
  const int64_t need = o.gate_mode == GateMode::Separated ? 64 : 256;
  const char* why = o.gate_mode == GateMode::Separated
                        ? "the separated weight shuffle needs K/2 in whole 32-byte tiles (K % 64 == 0)"
                        : "the interleaved layout needs K/2 in whole 64-byte tiles and K/32 in whole groups of 8 "
                          "(K % 256 == 0)";
  if (ph <= 0 || ph % need != 0)
    throw_bad_input("--pad-hidden " + std::to_string(ph) + " is not a multiple of " + std::to_string(need) + ": " +
                    why);
  if (pi <= 0 || pi % need != 0)
    throw_bad_input("--pad-intermediate " + std::to_string(pi) + " is not a multiple of " + std::to_string(need) +
                    ": " + why);
  ExpertDims d;
  d.experts = experts;
  d.hidden = hidden;
  d.intermediate = intermediate;
  d.hidden_pad = round_up(hidden, ph);
  d.intermediate_pad = round_up(intermediate, pi);
  d.gated = gated;
  return d;
}

Shape logical_shape(ExpertRole role, const ExpertDims& d) {
  const int64_t E = d.experts, H = d.hidden, R = d.w13_rows(), I = d.intermediate;
  switch (role) {
    case ExpertRole::W13Weight: return {E, R, H / 2};
    case ExpertRole::W13Scale: return {E * R, H / 32};
    case ExpertRole::W13Bias: return {E, R};
    case ExpertRole::W2Weight: return {E, H, I / 2};
    case ExpertRole::W2Scale: return {E * H, I / 32};
    case ExpertRole::W2Bias: return {E, H};
  }
  return {};
}

RecipeSpec aiter_recipe(ExpertRole role, const ExpertDims& d, const ConvertOptions& o, bool gate_up_interleaved) {
  const int64_t E = d.experts, H = d.hidden, I = d.intermediate, Hp = d.hidden_pad, Ip = d.intermediate_pad;
  const GateMode mode = o.gate_mode;
  const InjectedFault fault = o.fault;
  const bool deinterleave_w13 = gate_up_interleaved && fault != InjectedFault::SkipGateUpDeinterleave;
  const bool deinterleave_scales = deinterleave_w13 && fault != InjectedFault::SkipScaleDeinterleave;
  const GateMode tile_mode = fault == InjectedFault::OtherGateModeTiles ? other(mode) : mode;

  RecipeSpec s;
  layout::Recipe& r = s.recipe;
  if (!d.gated && (role == ExpertRole::W13Weight || role == ExpertRole::W13Scale || role == ExpertRole::W13Bias)) {
    // Non-gated w13: the up rows [E, I, H] alone, padded and shuffled like w2 with K = H.
    switch (role) {
      case ExpertRole::W13Weight:
        s.in_shape = {E, I, H / 32, 16};
        add_view(r, {E, I, H / 2});
        add_pad(r, {E, I, H / 2}, {E, Ip, Hp / 2}, {E, Ip, Hp / 2}, 0);
        add_weight_shuffle(r, tile_mode, false);
        s.shuffled = true;
        break;
      case ExpertRole::W13Scale:
        s.in_shape = {E, I, H / 32};
        add_pad(r, {E, I, H / 32}, {E, Ip, Hp / 32}, {E, Ip, Hp / 32}, 127);
        add_view(r, {E * Ip, Hp / 32});
        if (fault != InjectedFault::SkipScaleShuffle) add_scale_shuffle(r, mode, false, E);
        s.shuffled = fault != InjectedFault::SkipScaleShuffle;
        break;
      default:
        s.in_dtype = Dtype::BF16;
        s.in_shape = {E, I};
        if (fault != InjectedFault::BiasLeftBf16) r.steps.push_back(step("cast_bf16_to_f32"));
        add_pad(r, {E, I}, {E, Ip}, {E, Ip}, 0);
        break;
    }
    s.out_shape = r.output_shape(s.in_shape);
    s.out_dtype = r.output_dtype(s.in_dtype);
    // Its own layout id: a runtime that knows only gated w13 must not take these rows for
    // [gate; up] halves.
    s.layout_id = std::string(o.target) + "/" + gate_mode_name(mode) + "/" + role_name(role) + "/non_gated";
    return s;
  }
  switch (role) {
    case ExpertRole::W13Weight:
      s.in_dtype = Dtype::U8;
      s.in_shape = {E, 2 * I, H / 32, 16};
      add_view(r, {E, 2 * I, H / 2});
      if (deinterleave_w13) r.steps.push_back(step("deinterleave_gate_up_rows"));
      add_pad(r, {E, 2, I, H / 2}, {E, 2, Ip, Hp / 2}, {E, 2 * Ip, Hp / 2}, 0);
      add_weight_shuffle(r, tile_mode, true);
      s.shuffled = true;
      break;
    case ExpertRole::W13Scale:
      s.in_dtype = Dtype::U8;
      s.in_shape = {E, 2 * I, H / 32};
      if (deinterleave_scales) r.steps.push_back(step("deinterleave_gate_up_rows"));
      add_pad(r, {E, 2, I, H / 32}, {E, 2, Ip, Hp / 32}, {E, 2 * Ip, Hp / 32}, 127);
      add_view(r, {E * 2 * Ip, Hp / 32});
      if (fault != InjectedFault::SkipScaleShuffle) add_scale_shuffle(r, mode, true, E);
      s.shuffled = fault != InjectedFault::SkipScaleShuffle;
      break;
    case ExpertRole::W13Bias:
      s.in_dtype = Dtype::BF16;
      s.in_shape = {E, 2 * I};
      if (deinterleave_w13) r.steps.push_back(step("deinterleave_gate_up_rows"));
      if (fault != InjectedFault::BiasLeftBf16) r.steps.push_back(step("cast_bf16_to_f32"));
      add_pad(r, {E, 2, I}, {E, 2, Ip}, {E, 2 * Ip}, 0);
      break;
    case ExpertRole::W2Weight:
      s.in_dtype = Dtype::U8;
      s.in_shape = {E, H, I / 32, 16};
      add_view(r, {E, H, I / 2});
      add_pad(r, {E, H, I / 2}, {E, Hp, Ip / 2}, {E, Hp, Ip / 2}, 0);
      add_weight_shuffle(r, tile_mode, false);
      s.shuffled = true;
      break;
    case ExpertRole::W2Scale:
      s.in_dtype = Dtype::U8;
      s.in_shape = {E, H, I / 32};
      add_pad(r, {E, H, I / 32}, {E, Hp, Ip / 32}, {E, Hp, Ip / 32}, 127);
      add_view(r, {E * Hp, Ip / 32});
      if (fault != InjectedFault::SkipScaleShuffle) add_scale_shuffle(r, mode, false, E);
      s.shuffled = fault != InjectedFault::SkipScaleShuffle;
      break;
    case ExpertRole::W2Bias:
      s.in_dtype = Dtype::BF16;
      s.in_shape = {E, H};
      if (fault != InjectedFault::BiasLeftBf16) r.steps.push_back(step("cast_bf16_to_f32"));
      add_pad(r, {E, H}, {E, Hp}, {E, Hp}, 0);
      break;
  }
  s.out_shape = r.output_shape(s.in_shape);
  s.out_dtype = r.output_dtype(s.in_dtype);
  s.layout_id = std::string(o.target) + "/" + gate_mode_name(mode) + "/" + role_name(role);
  return s;
}

}  // namespace moeprep::plan
