#pragma once
// Small checks and copies every adapter needs.
#include <cstring>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "models/model_info.h"

namespace moeprep::models {

// Refuses counts from config.json that no checkpoint of this one's size holds, before anything
// is walked or allocated by them (a fuzzed config's 2^53 layers ran convert out of memory):
// every layer, `extra_layers` included (DeepSeek's prediction layers), has tensors of its own,
// and so has every expert where `per_expert_tensors`.
void check_counts_fit_checkpoint(const io::Checkpoint& c, const ModelInfo& info, int64_t extra_layers,
                                 bool per_expert_tensors, const std::string& config_path);

// Throws BadInput naming the file and tensor unless `name` exists with this dtype and shape.
void expect_tensor(const io::Checkpoint& c, const std::string& name, Dtype dtype, const Shape& shape,
                   const std::string& why);

// A tensor's bytes copied out of the map (mapped tensors need not be aligned for their type).
template <typename T>
std::vector<T> copy_tensor(const io::Checkpoint& c, const std::string& name) {
  const io::LocatedTensor& t = c.find(name);
  const io::ByteView b = c.data(t);
  std::vector<T> v(b.size / sizeof(T));
  std::memcpy(v.data(), b.data, v.size() * sizeof(T));
  return v;
}

// Every tensor whose name starts with `prefix` must be in `known`; throws BadInput naming the
// first unknown one ("inside an MoE expert block ... is not part of the <family> layout").
void refuse_unknown_expert_tensors(const io::Checkpoint& c, const std::string& prefix,
                                   const std::vector<std::string>& known, const std::string& family);

}  // namespace moeprep::models
