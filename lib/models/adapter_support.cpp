#include "models/adapter_support.h"

#include <algorithm>

#include "core/error.h"

namespace moeprep::models {

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
