#include "plan/inspect.h"

#include "core/error.h"
#include "io/checkpoint.h"
#include "models/detect.h"
#include "plan/manifest.h"

namespace moeprep::plan {
namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

ordered_json expert_layout(const std::string& name, const std::map<std::string, std::string>& meta) {
  if (name.find(".experts.") == std::string::npos) return nullptr;  // mlp.experts, block_sparse_moe.experts, ...
  const std::string leaf = name.substr(name.rfind('.') + 1);
  if (leaf.rfind("w13_", 0) == 0 || leaf.rfind("w2_", 0) == 0) {
    ordered_json j;
    j["state"] = "kernel-ready";
    auto layout = meta.find(name + ".layout");
    auto flag = meta.find(name + ".is_shuffled");
    j["layout"] = layout == meta.end() ? ordered_json(nullptr) : ordered_json(layout->second);
    j["is_shuffled"] = flag != meta.end() && flag->second == "true";
    return j;
  }
  return ordered_json{{"state", "hf-original"}};
}

}  // namespace

ordered_json inspect_path(const fs::path& path) {
  const io::Checkpoint ckpt = io::Checkpoint::open(path);
  ordered_json j;
  j["path"] = path.string();
  const bool converted = ckpt.is_directory() && fs::exists(ckpt.root() / kManifestFileName);
  j["kind"] = !ckpt.is_directory() ? "file" : converted ? "converted" : "checkpoint";
  if (ckpt.has_config()) {
    const auto& c = ckpt.config();
    ordered_json m;
    // Shown as written; one that is not a string is refused by detect_model below, with a note.
    const auto type = c.find("model_type");
    m["model_type"] = type == c.end() ? std::string() : type->is_string() ? type->get<std::string>() : type->dump();
    m["moe"] = models::looks_like_moe(c);
    for (const char* key : {"num_hidden_layers", "num_local_experts", "num_experts", "num_experts_per_tok",
                            "hidden_size", "intermediate_size"})
      if (c.is_object() && c.contains(key)) m[key] = c[key];
    try {
      auto info = models::detect_model(ckpt);
      m["adapter"] = info.family;
    } catch (const Error& e) {
      m["adapter"] = nullptr;
      m["adapter_note"] = e.what();
    }
    j["model"] = std::move(m);
  } else {
    j["model"] = nullptr;
  }
  if (converted) {
    try {
      const Manifest manifest = Manifest::read(ckpt.root() / kManifestFileName);
      j["conversion"] = {{"tool_version", manifest.tool_version}, {"options", manifest.options},
                         {"source", manifest.source}};
    } catch (const Error& e) {
      j["conversion"] = {{"error", e.what()}};
    }
  }
  uint64_t total = 0;
  size_t count = 0, shuffled = 0, original = 0;
  // Built apart and moved in: references into an ordered_json object do not survive inserts.
  ordered_json shards = ordered_json::array();
  ordered_json tensors = ordered_json::array();
  for (const auto& name : ckpt.tensor_names()) {
    const auto& t = ckpt.find(name);
    ordered_json e;
    e["name"] = name;
    e["dtype"] = dtype_name(t.info->dtype);
    e["shape"] = t.info->shape;
    e["bytes"] = t.info->byte_length();
    e["shard"] = t.file->path().filename().string();
    e["layout"] = expert_layout(name, t.file->metadata());
    if (!e["layout"].is_null()) (e["layout"]["state"] == "kernel-ready" ? shuffled : original)++;
    total += t.info->byte_length();
    ++count;
    tensors.push_back(std::move(e));
  }
  for (const auto& s : ckpt.shards()) {
    ordered_json e;
    e["file"] = s->path().filename().string();
    e["bytes"] = s->file_size();
    e["tensors"] = s->tensors().size();
    e["metadata"] = s->metadata();
    shards.push_back(std::move(e));
  }
  j["shards"] = std::move(shards);
  j["tensors"] = std::move(tensors);
  j["totals"] = {{"tensors", count},
                 {"bytes", total},
                 {"expert_tensors_original", original},
                 {"expert_tensors_kernel_ready", shuffled}};
  return j;
}

}  // namespace moeprep::plan
