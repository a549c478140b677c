#pragma once
// GPT-OSS with BF16 experts, as transformers writes a dequantized GPT-OSS:
//   model.layers.{i}.mlp.experts.gate_up_proj       BF16 [E, H, 2I]  inputs first; columns in
//                                                    (gate, up) pairs: 2j gate, 2j + 1 up
//   model.layers.{i}.mlp.experts.gate_up_proj_bias  BF16 [E, 2I]     pairs likewise
//   model.layers.{i}.mlp.experts.down_proj          BF16 [E, I, H]
//   model.layers.{i}.mlp.experts.down_proj_bias     BF16 [E, H]
// The experts are transposed to rows = outputs and quantized to MXFP4; the rows stay in pairs
// (gate_up_interleaved), so the GPT-OSS recipes de-interleave them as for the MXFP4 release.
// Config, router and activation are GPT-OSS's (models/gpt_oss.h).
#include <memory>
#include <string>

#include "models/adapter.h"

namespace moeprep::models {

// True when layer 0 of `checkpoint` holds BF16 GPT-OSS experts rather than MXFP4 blocks.
bool has_gpt_oss_bf16_experts(const io::Checkpoint& checkpoint);

std::unique_ptr<ModelAdapter> make_gpt_oss_bf16_adapter(const io::Checkpoint& checkpoint,
                                                        const std::string& config_path);

}  // namespace moeprep::models
