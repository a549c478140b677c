// plan_shards: which tensors go in which output file. Greedy in the caller's order, so a
// model's tensors stay in the order the caller chose (layer by layer) across shards.
#include <cstdio>
#include <set>

#include "core/error.h"
#include "io/names.h"
#include "io/safetensors_writer.h"

namespace moeprep::io {

uint64_t PlannedTensor::byte_length() const {
  const std::string what = "tensor '" + printable(name) + "'";
  int64_t numel = checked_numel(shape, what);
  auto bytes = dtype_byte_length(dtype, numel);
  if (!bytes)
    throw_bad_input(what + ": " + dtype_name(dtype) + " " + shape_to_string(shape) +
                    " is not a whole number of bytes or overflows");
  return static_cast<uint64_t>(*bytes);
}

std::string shard_file_name(size_t index, size_t count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return buf;
}

std::vector<ShardPlan> plan_shards(const std::vector<PlannedTensor>& tensors, uint64_t max_shard_bytes) {
  if (max_shard_bytes == 0) throw_usage("plan_shards: max_shard_bytes must be positive");
  std::set<std::string> seen;
  std::vector<ShardPlan> shards(1);
  uint64_t in_current = 0;
  for (const PlannedTensor& t : tensors) {
    check_tensor_name(t.name, "shard plan");
    if (t.name == "__metadata__") throw_bad_input("shard plan: '__metadata__' cannot be a tensor name");
    if (!seen.insert(t.name).second) throw_bad_input("shard plan: tensor '" + printable(t.name) + "' planned twice");
    uint64_t bytes = t.byte_length();
    // A tensor over the bound cannot be split; it gets a shard of its own.
    bool fits = bytes <= max_shard_bytes && in_current <= max_shard_bytes - bytes;
    if (!shards.back().tensors.empty() && !fits) {
      shards.emplace_back();
      in_current = 0;
    }
    shards.back().tensors.push_back(t);
    in_current += bytes;
  }
  for (size_t i = 0; i < shards.size(); ++i) shards[i].file_name = shard_file_name(i, shards.size());
  return shards;
}

}  // namespace moeprep::io
