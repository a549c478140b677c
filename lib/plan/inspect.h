#pragma once
// inspect: what a single safetensors file, a checkpoint directory or a converted directory
// holds, as a stable JSON document (the CLI renders it as a table too).
#include <filesystem>

#include <nlohmann/json.hpp>

namespace moeprep::plan {

// Keys, in order: path, kind ("file" | "checkpoint" | "converted"), model (or null), shards
// [{file, bytes, tensors, metadata}], tensors [{name, dtype, shape, bytes, shard, layout}],
// totals. `layout` for MoE expert tensors: {"state": "hf-original"} or {"state":
// "kernel-ready", "layout": id, "is_shuffled": bool}; null for other tensors.
nlohmann::ordered_json inspect_path(const std::filesystem::path& path);

}  // namespace moeprep::plan
