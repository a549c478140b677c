#pragma once
#include <string>

#include "plan/verify.h"

namespace moeprep::cli {

// The fused-MoE backend for verify's numerics stage: "cpu", or a GPU when this build has one
// and a device is present, for gated and non-gated (relu^2) experts alike. `requested` is
// auto|cuda|hip|cpu. Throws Usage when the requested device cannot be used, saying why.
plan::MoeBackend select_backend(const std::string& requested, std::string* chosen_name);

}  // namespace moeprep::cli
