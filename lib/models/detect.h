#pragma once
// Which model family a checkpoint is, from its config.json, and whether moeprep can convert it.
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "models/model_info.h"

namespace moeprep::models {

// Families with an adapter (convert supports them).
std::vector<std::string> supported_families();

// Reads config.json of `checkpoint` and returns the model description. Throws BadInput: no
// config.json; a dense (non-MoE) model ("nothing to convert", never a silent copy); an MoE
// model_type without an adapter (listing the supported ones).
ModelInfo detect_model(const io::Checkpoint& checkpoint);

// True when config.json describes a mixture-of-experts model at all (any family).
bool looks_like_moe(const nlohmann::json& config);

}  // namespace moeprep::models
