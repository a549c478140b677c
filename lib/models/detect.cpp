#include "models/detect.h"

#include "core/error.h"
#include "models/gpt_oss.h"

namespace moeprep::models {

std::vector<std::string> supported_families() { return {gpt_oss::kModelType}; }

bool looks_like_moe(const nlohmann::json& config) {
  if (!config.is_object()) return false;
  for (const char* key : {"num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"}) {
    auto it = config.find(key);
    if (it != config.end() && it->is_number_integer() && it->get<int64_t>() > 1) return true;
  }
  return false;
}

ModelInfo detect_model(const io::Checkpoint& checkpoint) {
  const std::string where = checkpoint.root().string();
  if (!checkpoint.has_config())
    throw_bad_input(where + ": no config.json: convert needs the model's config to find its experts");
  const std::string config_path = (checkpoint.root() / io::kConfigFileName).string();
  const nlohmann::json& config = checkpoint.config();
  std::string model_type = config.is_object() ? config.value("model_type", "") : "";
  std::string supported;
  for (const auto& f : supported_families()) supported += (supported.empty() ? "" : ", ") + f;
  if (model_type == gpt_oss::kModelType) return gpt_oss::read_config(config, config_path);
  if (!looks_like_moe(config))
    throw_bad_input(config_path + ": model_type '" + model_type +
                    "' is not a mixture-of-experts model: there is nothing to convert (supported: " + supported + ")");
  throw_bad_input(config_path + ": unsupported MoE model_type '" + model_type + "' (supported: " + supported + ")");
}

}  // namespace moeprep::models
