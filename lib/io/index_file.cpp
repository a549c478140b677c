#include "io/index_file.h"

#include "core/error.h"
#include "io/json_file.h"
#include "io/names.h"
#include "io/posix_file.h"
#include "io/safetensors_writer.h"

namespace moeprep::io {

IndexFile read_index_file(const std::filesystem::path& path) {
  const std::string name = path.string();
  IndexFile index;
  index.json = read_json_file(path);
  if (!index.json.is_object()) throw_bad_input(name + ": not a JSON object");

  auto map_it = index.json.find("weight_map");
  if (map_it == index.json.end()) throw_bad_input(name + ": no weight_map");
  if (!map_it->is_object()) throw_bad_input(name + ": weight_map is not an object");
  for (const auto& [tensor, shard] : map_it->items()) {
    check_tensor_name(tensor, name + ": weight_map");
    if (!shard.is_string())
      throw_bad_input(name + ": weight_map entry for tensor '" + printable(tensor) + "' is not a string");
    const std::string& shard_name = shard.get_ref<const std::string&>();
    check_plain_file_name(shard_name, "shard for tensor '" + printable(tensor) + "'", name);
    index.weight_map.emplace(tensor, shard_name);
  }

  auto meta_it = index.json.find("metadata");
  if (meta_it != index.json.end() && !meta_it->is_null()) {
    if (!meta_it->is_object()) throw_bad_input(name + ": metadata is not an object");
    auto total_it = meta_it->find("total_size");
    if (total_it != meta_it->end()) {
      // transformers writes an integer; an integral float (from Python arithmetic) means the same.
      const auto& total = *total_it;
      if (total.is_number_unsigned()) {
        index.total_size = total.get<uint64_t>();
      } else if (total.is_number_float() && total.get<double>() >= 0 && total.get<double>() <= 9007199254740992.0 &&
                 total.get<double>() == static_cast<double>(static_cast<uint64_t>(total.get<double>()))) {
        index.total_size = static_cast<uint64_t>(total.get<double>());
      } else {
        throw_bad_input(name + ": metadata.total_size is not a non-negative integer (" + printable(total.dump()) +
                        ")");
      }
    }
  }
  return index;
}

void write_index_file(const std::filesystem::path& path, const std::map<std::string, std::string>& weight_map,
                      uint64_t total_size) {
  // nlohmann objects are std::maps: keys come out sorted, so the file is deterministic.
  nlohmann::json doc;
  doc["metadata"]["total_size"] = total_size;
  doc["weight_map"] = nlohmann::json::object();
  for (const auto& [tensor, shard] : weight_map) doc["weight_map"][tensor] = shard;
  std::string text;
  try {
    text = doc.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {
    throw_bad_input(path.string() + ": cannot encode the index: " + e.what());
  }
  write_file_durably(path, text);
}

}  // namespace moeprep::io
