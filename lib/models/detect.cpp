#include "models/detect.h"

#include <functional>
#include <map>

#include "core/error.h"
#include "models/adapter.h"
#include "models/config_reader.h"
#include "models/deepseek_v3_adapter.h"
#include "models/gemma4_adapter.h"
#include "models/gpt_oss.h"
#include "models/gpt_oss_adapter.h"
#include "models/mixtral_adapter.h"
#include "models/nemotron_h_adapter.h"
#include "models/qwen_moe_adapter.h"

namespace moeprep::models {
namespace {

using Factory = std::function<std::unique_ptr<ModelAdapter>(const io::Checkpoint&, const std::string&)>;

// model_type (config.json) -> adapter. One line per family.
const std::map<std::string, Factory>& registry() {
  static const std::map<std::string, Factory> r = {
      {gpt_oss::kModelType, make_gpt_oss_adapter},
      {kQwen3MoeModelType, make_qwen_moe_adapter},
      {kQwen2MoeModelType, make_qwen_moe_adapter},
      {kMixtralModelType, make_mixtral_adapter},
      {kDeepseekV3ModelType, make_deepseek_v3_adapter},
      {kGemma4ModelType, make_gemma4_adapter},
      {kGemma4TextModelType, make_gemma4_adapter},
      {kNemotronHModelType, make_nemotron_h_adapter},
  };
  return r;
}

}  // namespace

std::vector<std::string> supported_families() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : registry()) names.push_back(name);
  return names;
}

bool looks_like_moe(const nlohmann::json& config) {
  if (!config.is_object()) return false;
  for (const char* key : {"num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"}) {
    auto it = config.find(key);
    if (it != config.end() && it->is_number_integer() && it->get<int64_t>() > 1) return true;
  }
  return false;
}

std::unique_ptr<ModelAdapter> make_adapter(const io::Checkpoint& checkpoint) {
  const std::string where = checkpoint.root().string();
  if (!checkpoint.has_config())
    throw_bad_input(where + ": no config.json: convert needs the model's config to find its experts");
  const std::string config_path = (checkpoint.root() / io::kConfigFileName).string();
  const nlohmann::json& config = checkpoint.config();
  // Typed read: json::value() would throw a type_error (an internal error) for "model_type": 5.
  const std::string model_type =
      config.is_object() ? ConfigReader(config, config_path).string_or("model_type", "") : "";
  std::string supported;
  for (const auto& f : supported_families()) supported += (supported.empty() ? "" : ", ") + f;
  auto it = registry().find(model_type);
  if (it != registry().end()) return it->second(checkpoint, config_path);
  if (!looks_like_moe(config))
    throw_bad_input(config_path + ": model_type '" + model_type +
                    "' is not a mixture-of-experts model: there is nothing to convert (supported: " + supported + ")");
  throw_bad_input(config_path + ": unsupported MoE model_type '" + model_type + "' (supported: " + supported + ")");
}

ModelInfo detect_model(const io::Checkpoint& checkpoint) { return make_adapter(checkpoint)->info(); }

}  // namespace moeprep::models
