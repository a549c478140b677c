#pragma once
#include <memory>

#include "models/adapter.h"

namespace moeprep::models {

// GPT-OSS with MXFP4 experts, as published (gpt-oss-format.md): the canonical sources are the
// checkpoint's own tensors, rows of gate_up_* interleaved in (gate, up) pairs. A checkpoint
// whose experts are BF16 (transformers' dequantized layout) gets the quantizing adapter of
// models/gpt_oss_bf16_adapter.h instead.
std::unique_ptr<ModelAdapter> make_gpt_oss_adapter(const io::Checkpoint& checkpoint, const std::string& config_path);

}  // namespace moeprep::models
