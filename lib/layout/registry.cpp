// The step registry: every id a manifest may name, and how to rebuild it. A new layout (e.g.
// AITER's KLane-contiguous one) is one more row here and one more file.
#include <utility>

#include "core/error.h"
#include "layout/steps.h"

namespace moeprep::layout {
namespace {

using Factory = StepPtr (*)(const nlohmann::ordered_json&);

const std::pair<const char*, Factory> kRegistry[] = {
    {"view", view_step_from_params},
    {"deinterleave_gate_up_rows", deinterleave_gate_up_rows_step_from_params},
    {"pad", pad_step_from_params},
    {"aiter_shuffle_weight", aiter_shuffle_weight_step_from_params},
    {"aiter_shuffle_scale", aiter_shuffle_scale_step_from_params},
    {"cast_bf16_to_f32", cast_bf16_to_f32_step_from_params},
};

}  // namespace

StepPtr make_step(const std::string& id, const nlohmann::ordered_json& params) {
  for (const auto& [name, factory] : kRegistry)
    if (id == name) return factory(params);
  std::string known;
  for (const auto& entry : kRegistry) known += std::string(known.empty() ? "" : ", ") + entry.first;
  throw_bad_input("unknown layout step \"" + id + "\" (known: " + known + ")");
}

std::vector<std::string> registered_step_ids() {
  std::vector<std::string> ids;
  for (const auto& entry : kRegistry) ids.push_back(entry.first);
  return ids;
}

}  // namespace moeprep::layout
