#pragma once
#include <string>

#include "plan/verify.h"

namespace moeprep::cli {

// The fused-MoE backend for verify's numerics stage: "cpu", or a GPU when this build has one
// and a device is present. `requested` is auto|cuda|hip|cpu. `experts_gated` is false for
// models with non-gated experts (reference::is_gated), which the GPU kernels do not run yet:
// auto then picks the CPU and says so in `chosen_name`. Throws Usage when the requested device
// cannot be used, saying why.
plan::MoeBackend select_backend(const std::string& requested, bool experts_gated, std::string* chosen_name);

}  // namespace moeprep::cli
