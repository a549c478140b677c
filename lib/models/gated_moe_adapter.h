#pragma once
// The adapter shared by every family whose experts must be quantized to MXFP4 (Qwen2/3-MoE,
// Mixtral, DeepSeek-V3, Gemma4, GPT-OSS BF16, and Nemotron-H, whose experts are not gated). A family describes each MoE layer (which
// tensors hold its expert rows, biases and router) and this class turns that into canonical
// sources, the router configuration and verify's float reference.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/adapter.h"
#include "models/config_reader.h"
#include "models/expert_rows.h"

namespace moeprep::models {

// One MoE layer as a family sees it.
struct GatedLayer {
  std::string output_prefix;  // kernel-ready names: output_prefix + "w13_weight", ...
  // Every checkpoint tensor under this prefix must be consumed (refuse_unknown_expert_tensors).
  std::string expert_block_prefix;
  // rows [gate; up] (or (gate, up) pairs when gate_up_interleaved), K = H; for a non-gated
  // activation (info.activation, Nemotron-H's relu^2) the I up rows alone.
  ExpertRowsPtr w13;
  ExpertRowsPtr w2;   // rows = H outputs, K = I
  bool gate_up_interleaved = false;
  std::string w13_bias, w2_bias;  // BF16 [E, 2I] ([E, I] non-gated) / [E, H]; empty when none
  std::string router_weight;      // BF16 [E, H]
  std::string router_bias;        // BF16 [E], or empty
  std::string correction_bias;    // [E] F32 or BF16 (sigmoid_grouped_biased), or empty
  std::string per_expert_scale;   // [E] F32 or BF16 (gemma4), or empty
  // [H] F32 or BF16, or empty: a per-channel scale of the router's input that verify folds,
  // with 1/sqrt(H), into the router weights (Gemma4's router.scale; see gemma4_adapter.h).
  std::string router_input_scale;
};

struct GatedFamily {
  std::string family;  // adapter name, e.g. "qwen3_moe"
  std::string label;   // for messages, e.g. "Qwen3-MoE"
  ModelInfo info;
  std::vector<int64_t> moe_layers;  // in order
  std::function<GatedLayer(int64_t layer)> layer;  // validates tensors; throws BadInput
  // Expert tensors of a layer the config makes dense are an error: names are
  // layers_prefix + "<i>." + experts_infix + ...
  std::string layers_prefix;   // e.g. "model.layers."
  std::string experts_infix;   // e.g. "mlp.experts."
};

std::unique_ptr<ModelAdapter> make_gated_moe_adapter(const io::Checkpoint& checkpoint, GatedFamily family);

// Starts a family from its config: names, model_type, and the expert count, hidden size and
// expert intermediate size under the keys this family uses for them. Layers, router and
// activation differ too much between families to read here.
GatedFamily gated_family_from_config(const ConfigReader& cfg, std::string family, std::string label,
                                     const char* experts_key, const char* intermediate_key);

// Reads a 1-D [n] tensor of F32 or BF16 as floats; throws BadInput naming it otherwise.
std::vector<float> read_float_vector(const io::Checkpoint& c, const std::string& name, int64_t n,
                                     const std::string& why);

}  // namespace moeprep::models
