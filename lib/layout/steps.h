#pragma once
// The layout steps moeprep knows (spec/layouts.md), built directly by the planner or from a
// manifest's (id, params) through make_step (step.h). Each is implemented in its own file.
//
// expert_separable() here means: experts (dim 0) map independently, each expert's output bytes
// coming from that expert's input bytes alone, so a slice of experts can be converted on its
// own. Params that name the expert count (view and pad shapes, the interleaved scale shuffle's
// `experts`) must then be rebuilt with the slice's count, as the planner does; shapes in view
// and pad params may instead start with -1, the leading dim inferred from the input's element
// count, and such a step applies to any slice unchanged.
#include <cstdint>
#include <string>

#include "layout/addressing.h"
#include "layout/step.h"

namespace moeprep::layout {

// `view` {"shape": [...]}: a reshape, same bytes; the element count must match. Always
// expert-separable (the bytes do not move).
StepPtr make_view_step(Shape shape);

// `deinterleave_gate_up_rows` {}: [E, 2I, ...] rows (g0,u0,g1,u1,...) -> (g0..g_{I-1}, u0..u_{I-1})
// per expert; any trailing dims, any whole-byte element size.
StepPtr make_deinterleave_gate_up_rows_step();

// `pad` {"view": [...], "padded": [...], "value": v, "out_shape": [...]}: the input viewed as
// `view` is placed at the origin of a `padded` array filled with v, then viewed as `out_shape`
// (same element count as `padded`). v is the stored byte for 8-bit dtypes (scales: 127), the
// integer for wider integer dtypes, the number for BF16/F32/F64 (it must be exactly
// representable); F16 supports only 0. The inverse crops and rejects a tensor whose padding is
// not v. out_shape defaults to padded when built from params without it. Expert-separable when
// dim 0 is not padded.
StepPtr make_pad_step(Shape view, Shape padded, double value, Shape out_shape);

// `aiter_shuffle_weight` {"gate_mode": ..., "gate_up": bool}: MXFP4 weights [E, N, Kb] U8
// (layouts.md sections 3 and 4). In the separated mode gate_up is ignored and not recorded.
StepPtr make_aiter_shuffle_weight_step(GateMode mode, bool gate_up);

// `aiter_shuffle_scale` {"gate_mode": "separated", "pad_value": 127}: 2-D E8M0 scales [M, S]
// -> [M', S'] (section 5); not expert-separable (M is padded as a whole).
StepPtr make_aiter_shuffle_scale_separated_step(int pad_value = 127);
// `aiter_shuffle_scale` {"gate_mode": "interleave", "gate_up": bool, "experts": E}: [E*n, S]
// (section 6). Expert-separable (each expert's n rows are shuffled on their own), but a slice
// of experts needs the step rebuilt with its own count: with the whole tensor's E, a slice
// could pass the constraints and be split into the wrong rows per expert.
StepPtr make_aiter_shuffle_scale_interleave_step(bool gate_up, int64_t experts);

// `cast_bf16_to_f32` {}: exact widening; the inverse rejects floats that BF16 cannot hold.
StepPtr make_cast_bf16_to_f32_step();

// The same steps rebuilt from manifest params (strict: unknown or missing keys are errors).
StepPtr view_step_from_params(const nlohmann::ordered_json& params);
StepPtr deinterleave_gate_up_rows_step_from_params(const nlohmann::ordered_json& params);
StepPtr pad_step_from_params(const nlohmann::ordered_json& params);
StepPtr aiter_shuffle_weight_step_from_params(const nlohmann::ordered_json& params);
StepPtr aiter_shuffle_scale_step_from_params(const nlohmann::ordered_json& params);
StepPtr cast_bf16_to_f32_step_from_params(const nlohmann::ordered_json& params);

}  // namespace moeprep::layout
