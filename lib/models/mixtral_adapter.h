#pragma once
// Mixtral (model_type mixtral), BF16 experts quantized to MXFP4.
//   model.layers.{i}.block_sparse_moe.experts.{j}.w1.weight [I, H] (gate)  w3 [I, H] (up)
//   model.layers.{i}.block_sparse_moe.experts.{j}.w2.weight [H, I] (down)
//   model.layers.{i}.block_sparse_moe.gate.weight            [E, H] router (copied through)
// config: num_local_experts, num_experts_per_tok, intermediate_size. Every layer is MoE; the
// router takes the top-k logits and softmaxes them (softmax_after_topk, the same as Mixtral's
// softmax-then-top-k-then-renormalize). Kernel-ready tensors go to
// model.layers.{i}.block_sparse_moe.experts.w13_weight, ...
#include <memory>
#include <string>

#include "models/adapter.h"

namespace moeprep::models {

inline constexpr const char* kMixtralModelType = "mixtral";

std::unique_ptr<ModelAdapter> make_mixtral_adapter(const io::Checkpoint& checkpoint, const std::string& config_path);

}  // namespace moeprep::models
