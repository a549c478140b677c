#include "plan/manifest_model.h"

#include "core/error.h"
#include "models/activation_config.h"

namespace moeprep::plan {
namespace {

int64_t positive(const nlohmann::ordered_json& j, const char* key, const std::string& context) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer() || it->get<int64_t>() <= 0)
    throw_bad_input(context + ": \"" + key + "\" must be a positive integer");
  return it->get<int64_t>();
}

// Optional fields: absent gives the fallback, a value of another type is refused (json::value()
// would throw a type_error, an internal error, instead).
std::string string_or(const nlohmann::ordered_json& j, const char* key, const std::string& fallback,
                      const std::string& context) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (!it->is_string()) throw_bad_input(context + ": \"" + key + "\" must be a string");
  return it->get<std::string>();
}

double number_or(const nlohmann::ordered_json& j, const char* key, double fallback, const std::string& context) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (!it->is_number()) throw_bad_input(context + ": \"" + key + "\" must be a number");
  return it->get<double>();
}

}  // namespace

ConvertOptions options_from_manifest(const Manifest& m, const std::string& context) {
  ConvertOptions o;
  const auto& j = m.options;
  if (!j.contains("target") || !j["target"].is_string()) throw_bad_input(context + ": options.target is missing");
  o.target = j["target"].get<std::string>();
  if (!j.contains("gate_mode") || !j["gate_mode"].is_string())
    throw_bad_input(context + ": options.gate_mode is missing");
  o.gate_mode = gate_mode_from_name(j["gate_mode"].get<std::string>());
  o.pad_hidden = positive(j, "pad_hidden", context + ": options");
  o.pad_intermediate = positive(j, "pad_intermediate", context + ": options");
  return o;
}

ExpertDims dims_from_manifest(const Manifest& m, const std::string& context) {
  ExpertDims d;
  const std::string c = context + ": model";
  d.experts = positive(m.model, "experts", c);
  d.hidden = positive(m.model, "hidden", c);
  d.intermediate = positive(m.model, "intermediate", c);
  d.hidden_pad = positive(m.model, "hidden_pad", c);
  d.intermediate_pad = positive(m.model, "intermediate_pad", c);
  // Absent in manifests written before moeprep had non-gated experts: those are all gated.
  auto gated = m.model.find("gated");
  if (gated != m.model.end() && !gated->is_boolean()) throw_bad_input(c + ": \"gated\" must be true or false");
  d.gated = gated == m.model.end() || gated->get<bool>();
  // The row count of w13 follows from both; a manifest where they disagree describes no kernel.
  auto activation = m.model.find("activation");
  if (activation != m.model.end() && activation->is_object()) {
    const auto kind = models::activation_from_kind_name(string_or(*activation, "kind", "", c + ": activation"));
    if (kind && reference::is_gated(*kind) != d.gated)
      throw_bad_input(c + ": \"gated\" is " + (d.gated ? "true" : "false") + " but activation kind '" +
                      models::activation_kind_name(*kind) + "' is " + (reference::is_gated(*kind) ? "gated" : "non-gated"));
  }
  return d;
}

models::ModelInfo model_from_manifest(const Manifest& m, const std::string& context) {
  models::ModelInfo info;
  const std::string c = context + ": model";
  info.family = string_or(m.model, "family", "", c);
  info.model_type = string_or(m.model, "model_type", "", c);
  info.layers = positive(m.model, "layers", c);
  info.experts = positive(m.model, "experts", c);
  info.hidden = positive(m.model, "hidden", c);
  info.intermediate = positive(m.model, "intermediate", c);
  if (!m.model.contains("router")) throw_bad_input(c + ": \"router\" is missing");
  info.router = reference::RouterConfig::from_json(m.model["router"]);
  const auto activation = m.model.find("activation");
  if (activation != m.model.end() && !activation->is_object())
    throw_bad_input(c + ": \"activation\" must be an object");
  const nlohmann::ordered_json a = activation == m.model.end() ? nlohmann::ordered_json::object() : *activation;
  const std::string kind = string_or(a, "kind", "", c + ": activation");
  const auto known = models::activation_from_kind_name(kind);
  if (!known) throw_bad_input(c + ": unknown activation kind '" + kind + "'");
  info.activation.kind = *known;
  info.activation.alpha = number_or(a, "alpha", 1.702, c + ": activation");
  info.activation.limit = number_or(a, "limit", 7.0, c + ": activation");
  return info;
}

std::optional<ExpertRole> role_from_name(const std::string& name) {
  for (ExpertRole r : kAllRoles)
    if (name == role_name(r)) return r;
  return std::nullopt;
}

bool gate_up_interleaved_from_manifest(const Manifest& m, const std::string& context) {
  auto it = m.model.find("source_gate_up_interleaved");
  if (it == m.model.end() || !it->is_boolean())
    throw_bad_input(context + ": model: \"source_gate_up_interleaved\" must be true or false");
  return it->get<bool>();
}

RecipeSpec manifest_recipe(const Manifest& m, ExpertRole role, const std::string& context,
                           std::optional<int64_t> experts) {
  ExpertDims d = dims_from_manifest(m, context);
  if (experts) d.experts = *experts;
  return aiter_recipe(role, d, options_from_manifest(m, context), gate_up_interleaved_from_manifest(m, context));
}

}  // namespace moeprep::plan
