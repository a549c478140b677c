#pragma once
// What a manifest says about the conversion, read back into the planner's terms, so that
// verify can recompute what each kernel-ready tensor must be.
#include <optional>
#include <string>

#include "models/model_info.h"
#include "plan/aiter_recipes.h"
#include "plan/manifest.h"
#include "plan/options.h"

namespace moeprep::plan {

ConvertOptions options_from_manifest(const Manifest& m, const std::string& context);
// Sizes, and whether the experts are gated ("gated", true when absent; it must agree with the
// activation kind).
ExpertDims dims_from_manifest(const Manifest& m, const std::string& context);
models::ModelInfo model_from_manifest(const Manifest& m, const std::string& context);
std::optional<ExpertRole> role_from_name(const std::string& name);
bool gate_up_interleaved_from_manifest(const Manifest& m, const std::string& context);
// The canonical recipe of `role` under the manifest's options, for all experts or `experts`.
RecipeSpec manifest_recipe(const Manifest& m, ExpertRole role, const std::string& context,
                           std::optional<int64_t> experts = std::nullopt);

}  // namespace moeprep::plan
