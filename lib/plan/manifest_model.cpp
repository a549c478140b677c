#include "plan/manifest_model.h"

#include "core/error.h"

namespace moeprep::plan {
namespace {

int64_t positive(const nlohmann::ordered_json& j, const char* key, const std::string& context) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer() || it->get<int64_t>() <= 0)
    throw_bad_input(context + ": \"" + key + "\" must be a positive integer");
  return it->get<int64_t>();
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
  return d;
}

models::ModelInfo model_from_manifest(const Manifest& m, const std::string& context) {
  models::ModelInfo info;
  const std::string c = context + ": model";
  info.family = m.model.value("family", "");
  info.model_type = m.model.value("model_type", "");
  info.layers = positive(m.model, "layers", c);
  info.experts = positive(m.model, "experts", c);
  info.hidden = positive(m.model, "hidden", c);
  info.intermediate = positive(m.model, "intermediate", c);
  if (!m.model.contains("router")) throw_bad_input(c + ": \"router\" is missing");
  info.router = reference::RouterConfig::from_json(m.model["router"]);
  const auto& a = m.model.value("activation", nlohmann::ordered_json::object());
  const std::string kind = a.value("kind", "");
  if (kind == "gpt_oss_clamped_swiglu") info.activation.kind = reference::Activation::GptOssClampedSwiglu;
  else if (kind == "silu_gated") info.activation.kind = reference::Activation::SiluGated;
  else throw_bad_input(c + ": unknown activation kind '" + kind + "'");
  info.activation.alpha = a.value("alpha", 1.702);
  info.activation.limit = a.value("limit", 7.0);
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
