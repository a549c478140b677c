#pragma once
// The experts' activation as config.json names it (transformers' ACT2FN keys), mapped onto the
// gated activations act(gate) * up that the reference and the kernels implement, and the names
// the manifest records them by. One table, so that the adapters, convert and verify agree.
#include <optional>
#include <string>

#include "models/config_reader.h"
#include "reference/moe.h"

namespace moeprep::models {

// The gated activation for a transformers activation name, or nullopt when moeprep has none.
std::optional<reference::Activation> gated_activation_for(const std::string& hf_name);

// Reads the string `key` of `cfg` (`fallback`, the family's documented default, when absent or
// null) and maps it. Throws BadInput naming the file, the key and the value, and listing the
// supported names; relu2 (Nemotron-H's non-gated relu^2 experts) is called out as unsupported.
reference::Activation read_gated_activation(const ConfigReader& cfg, const char* key, const std::string& fallback,
                                            const std::string& family_label);

// The same for families whose experts are not gated (Nemotron-H: up_proj and down_proj only):
// "relu2" (transformers' ReLUSquaredActivation, max(x, 0)^2) maps to Activation::Relu2;
// anything else is refused naming the file, the key and the value.
reference::Activation read_non_gated_activation(const ConfigReader& cfg, const char* key, const std::string& fallback,
                                                const std::string& family_label);

// The manifest's "activation": {"kind": ...}: "gpt_oss_clamped_swiglu", "silu_gated",
// "gelu_tanh_gated", "gelu_gated", "relu2" (non-gated).
const char* activation_kind_name(reference::Activation kind);
std::optional<reference::Activation> activation_from_kind_name(const std::string& name);

}  // namespace moeprep::models
