#include <cstdio>
#include <iostream>

#include "commands.h"
#include "exit_codes.h"
#include "plan/inspect.h"
#include "progress_display.h"

namespace moeprep::cli {
namespace {

std::string shape_text(const nlohmann::ordered_json& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + shape[i].dump();
  return s + "]";
}

void print_table(const nlohmann::ordered_json& j) {
  std::printf("%s: %s\n", j["path"].get<std::string>().c_str(), j["kind"].get<std::string>().c_str());
  if (!j["model"].is_null()) {
    const auto& m = j["model"];
    std::printf("model: %s%s", m.value("model_type", "").c_str(), m.value("moe", false) ? " (MoE)" : "");
    for (const char* key : {"num_hidden_layers", "num_local_experts", "num_experts", "num_experts_per_tok", "hidden_size",
                            "intermediate_size"})
      if (m.contains(key)) std::printf(", %s %s", key, m[key].dump().c_str());
    std::printf("\n");
    if (m.contains("adapter_note")) std::printf("note: %s\n", m["adapter_note"].get<std::string>().c_str());
  }
  if (j.contains("conversion")) std::printf("conversion: %s\n", j["conversion"].dump().c_str());
  std::printf("\n%-64s %-6s %-22s %12s %-34s %s\n", "tensor", "dtype", "shape", "bytes", "shard", "layout");
  for (const auto& t : j["tensors"]) {
    std::string layout = "-";
    if (!t["layout"].is_null()) {
      layout = t["layout"]["state"].get<std::string>();
      if (t["layout"].contains("layout") && !t["layout"]["layout"].is_null())
        layout += " " + t["layout"]["layout"].get<std::string>() +
                  (t["layout"]["is_shuffled"].get<bool>() ? " is_shuffled" : "");
    }
    std::printf("%-64s %-6s %-22s %12s %-34s %s\n", t["name"].get<std::string>().c_str(),
                t["dtype"].get<std::string>().c_str(), shape_text(t["shape"]).c_str(), t["bytes"].dump().c_str(),
                t["shard"].get<std::string>().c_str(), layout.c_str());
  }
  std::printf("\nshards:\n");
  for (const auto& s : j["shards"]) {
    std::printf("  %s: %s, %s tensors\n", s["file"].get<std::string>().c_str(),
                human_bytes(s["bytes"].get<double>()).c_str(), s["tensors"].dump().c_str());
    for (const auto& [k, v] : s["metadata"].items())
      if (k.find(".is_shuffled") == std::string::npos && k.find(".layout") == std::string::npos)
        std::printf("    %s = %s\n", k.c_str(), v.get<std::string>().c_str());
  }
  const auto& tot = j["totals"];
  std::printf("total: %s tensors, %s; expert tensors: %s original, %s kernel-ready\n", tot["tensors"].dump().c_str(),
              human_bytes(tot["bytes"].get<double>()).c_str(), tot["expert_tensors_original"].dump().c_str(),
              tot["expert_tensors_kernel_ready"].dump().c_str());
}

}  // namespace

CommandRunner add_inspect_command(CLI::App& app, const GlobalOptions& global) {
  auto path = std::make_shared<std::string>();
  app.add_option("PATH", *path, "A .safetensors file, a checkpoint directory or a converted directory")->required();
  return [path, &global]() -> int {
    const auto j = plan::inspect_path(*path);
    if (global.json) std::cout << j.dump(2) << "\n";
    else print_table(j);
    return kExitOk;
  };
}

}  // namespace moeprep::cli
