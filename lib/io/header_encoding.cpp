// encode_header: the bytes before a shard's data area. Written by hand rather than through a
// JSON object so that the key order (__metadata__ first, tensors in plan order, then dtype,
// shape, data_offsets) is fixed and the output is byte-identical run to run.
#include "core/error.h"
#include "io/names.h"
#include "io/safetensors_writer.h"

#include <set>

#include <nlohmann/json.hpp>

namespace moeprep::io {
namespace {

std::string json_string(const std::string& s, const std::string& context) {
  try {
    return nlohmann::json(s).dump();
  } catch (const nlohmann::json::exception&) {
    throw_bad_input(context + ": '" + printable(s) + "' is not valid UTF-8");
  }
}

}  // namespace

std::vector<uint64_t> planned_data_offsets(const ShardPlan& plan) {
  // One entry more than there are tensors: tensor i spans offsets[i] .. offsets[i + 1].
  std::vector<uint64_t> offsets;
  uint64_t offset = 0;
  for (const PlannedTensor& t : plan.tensors) {
    offsets.push_back(offset);
    offset += t.byte_length();
  }
  offsets.push_back(offset);
  return offsets;
}

std::string encode_header(const ShardPlan& plan) {
  const std::string context = plan.file_name;
  std::string json = "{";
  bool need_comma = false;
  if (!plan.metadata.empty()) {
    json += "\"__metadata__\":{";
    for (const auto& [key, value] : plan.metadata) {
      if (need_comma) json += ',';
      need_comma = true;
      json += json_string(key, context + ": __metadata__ key") + ":" + json_string(value, context + ": __metadata__ value");
    }
    json += "}";
    need_comma = true;
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const PlannedTensor& t : plan.tensors) {
    check_tensor_name(t.name, context);
    if (t.name == "__metadata__") throw_bad_input(context + ": '__metadata__' cannot be a tensor name");
    if (!seen.insert(t.name).second) throw_bad_input(context + ": tensor '" + printable(t.name) + "' planned twice");
    uint64_t bytes = t.byte_length();
    if (offset > UINT64_MAX - bytes) throw_bad_input(context + ": total tensor size overflows");
    if (need_comma) json += ',';
    need_comma = true;
    json += json_string(t.name, context + ": tensor name") + ":{\"dtype\":\"" + dtype_name(t.dtype) + "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) {
      if (i) json += ',';
      json += std::to_string(t.shape[i]);
    }
    json += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  json += "}";
  // Spaces after the object keep it valid JSON and put the data area on an 8-byte boundary.
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + json;
}

}  // namespace moeprep::io
