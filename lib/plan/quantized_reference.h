#pragma once
// Dense float weights of one expert from a layer's *canonical* sources (models/adapter.h):
// the MXFP4 codes and scales exactly as convert quantized them, dequantized exactly. For a
// source that moeprep quantized this is "a fresh quantization of the source"; the kernel must
// compute the same function on it up to arithmetic, so a tight threshold separates layout
// errors from MXFP4's own rounding. For MXFP4 sources it equals the source itself.
#include "io/checkpoint.h"
#include "models/adapter.h"
#include "reference/moe.h"

namespace moeprep::plan {

reference::DenseMoeLayer dense_expert_from_canonical(const io::Checkpoint& source, const models::MoeLayer& layer,
                                                     int64_t experts, int64_t hidden, int64_t intermediate, int32_t e);

}  // namespace moeprep::plan
