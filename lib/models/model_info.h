#pragma once
#include <string>

#include "reference/moe.h"
#include "reference/router.h"

namespace moeprep::models {

// What a model adapter reads off a checkpoint's config.json: enough to plan the conversion
// and to run the model's MoE layers in verify.
struct ModelInfo {
  std::string model_type;  // config.json "model_type"
  std::string family;      // adapter name, e.g. "gpt_oss"
  int64_t layers = 0;
  int64_t experts = 0;
  int64_t hidden = 0;
  int64_t intermediate = 0;
  reference::RouterConfig router;
  reference::ActivationParams activation;
};

}  // namespace moeprep::models
