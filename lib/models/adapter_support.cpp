#include "models/adapter_support.h"

#include <algorithm>

#include "core/error.h"

namespace moeprep::models {

void check_counts_fit_checkpoint(const io::Checkpoint& c, const ModelInfo& info, int64_t extra_layers,
                                 bool per_expert_tensors, const std::string& config_path) {
  uint64_t tensors = 0;
  for (const auto& shard : c.shards()) tensors += shard->tensors().size();
  const auto more_than = [&](uint64_t n, const char* what) {
    throw_bad_input(config_path + ": " + std::to_string(n) + " " + what + ", more than the " + std::to_string(tensors) +
                    " tensors the checkpoint holds (every one has tensors of its own)");
  };
  const uint64_t layers = static_cast<uint64_t>(std::max<int64_t>(info.layers, 0));
  const uint64_t extra = static_cast<uint64_t>(std::max<int64_t>(extra_layers, 0));
  if (layers > tensors || extra > tensors - layers) more_than(layers + extra, "layers");
  if (per_expert_tensors && static_cast<uint64_t>(std::max<int64_t>(info.experts, 0)) > tensors)
    more_than(static_cast<uint64_t>(info.experts), "experts");
}

void expect_tensor(const io::Checkpoint& c, const std::string& name, Dtype dtype, const Shape& shape,
                   const std::string& why) {
  const io::LocatedTensor* t = c.try_find(name);
  if (!t) throw_bad_input(c.root().string() + ": tensor '" + name + "' is missing (expected by " + why + ")");
  if (t->info->dtype != dtype || t->info->shape != shape)
    throw_bad_input(t->file->path().string() + ": tensor '" + name + "' is " + dtype_name(t->info->dtype) + " " +
                    shape_to_string(t->info->shape) + ", expected " + dtype_name(dtype) + " " + shape_to_string(shape) +
                    " from config.json");
}

void refuse_unknown_expert_tensors(const io::Checkpoint& c, const std::string& prefix,
                                   const std::vector<std::string>& known, const std::string& family) {
  for (const auto& name : c.tensor_names()) {
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    if (std::find(known.begin(), known.end(), name) != known.end()) continue;
    // Dropping or copying an unknown tensor of an expert block would hand the engine a
    // checkpoint it cannot load correctly.
    throw_bad_input(c.find(name).file->path().string() + ": tensor '" + name +
                    "' inside an MoE expert block is not part of the " + family + " layout");
  }
}

}  // namespace moeprep::models
