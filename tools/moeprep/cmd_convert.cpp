#include <atomic>
#include <csignal>
#include <thread>
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "exit_codes.h"
#include "io/checkpoint.h"
#include "plan/convert.h"
#include "progress_display.h"

namespace moeprep::cli {
namespace {

std::atomic<bool> g_interrupted{false};

extern "C" void on_interrupt(int) {
  g_interrupted.store(true);
  // A second Ctrl-C ends the process at once; the staging directory is then removed by the
  // next run for the same destination.
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
}

struct ConvertArgs {
  std::string source, destination, target = "aiter", gate_mode = "separated", max_shard_size = "5GB";
  int64_t pad_multiple = 0, pad_hidden = 0, pad_intermediate = 0;
  int threads = 0;
  bool dry_run = false, force = false;
};

void print_plan(const plan::ConvertPlan& p) {
  const auto j = p.to_json();
  std::printf("model %s: %lld layers, %lld experts, hidden %lld -> %lld, intermediate %lld -> %lld, gate mode %s\n",
              p.model.family.c_str(), static_cast<long long>(p.model.layers), static_cast<long long>(p.model.experts),
              static_cast<long long>(p.dims.hidden), static_cast<long long>(p.dims.hidden_pad),
              static_cast<long long>(p.dims.intermediate), static_cast<long long>(p.dims.intermediate_pad),
              plan::gate_mode_name(p.options.gate_mode));
  for (const auto& shard : j["shards"]) {
    std::printf("%s\n", shard["file"].get<std::string>().c_str());
    for (const auto& t : shard["tensors"]) {
      std::printf("  %-9s %s\n", t["action"].get<std::string>().c_str(), t["name"].get<std::string>().c_str());
      if (t["action"] == "transform") {
        std::string from;
        for (const auto& name : t["sources"]) from += (from.empty() ? "" : ", ") + name.get<std::string>();
        if (from.size() > 100) from = from.substr(0, 97) + "...";
        std::printf("            from %s%s  %s\n", from.c_str(),
                    t.contains("source_transform") ? (" via " + t["source_transform"].get<std::string>()).c_str() : "",
                    t["in"].get<std::string>().c_str());
        for (const auto& s : t["steps"]) std::printf("            - %s %s\n", s["id"].get<std::string>().c_str(), s["params"].dump().c_str());
      }
      std::printf("            -> %s (%s bytes)\n", t["out"].get<std::string>().c_str(), t["bytes"].dump().c_str());
    }
  }
  std::printf("total: %llu bytes in, %llu bytes out, %zu shards; copied files: %zu\n",
              static_cast<unsigned long long>(p.total_in_bytes), static_cast<unsigned long long>(p.total_out_bytes),
              p.shards.size(), p.extra_files.size());
}

}  // namespace

CommandRunner add_convert_command(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<ConvertArgs>();
  app.add_option("SRC", args->source, "Hugging Face checkpoint directory (config.json + safetensors)")->required();
  app.add_option("-o,--output", args->destination, "Destination directory (must not exist unless --force)")->required();
  app.add_option("--target", args->target, "Kernel family to prepare for")->check(CLI::IsMember({"aiter"}))->capture_default_str();
  app.add_option("--gate-mode", args->gate_mode, "Gate/up layout: separated (AITER fused MoE) or interleave (a16w4)")
      ->check(CLI::IsMember({"separated", "interleave"}))
      ->capture_default_str();
  app.add_option("--pad-multiple", args->pad_multiple, "Pad hidden and intermediate sizes to a multiple of N");
  app.add_option("--pad-hidden", args->pad_hidden, "Pad the hidden size to a multiple of N (default 256)");
  app.add_option("--pad-intermediate", args->pad_intermediate,
                 "Pad the intermediate size to a multiple of N (default 128 separated, 256 interleave)");
  app.add_option("--max-shard-size", args->max_shard_size, "Largest shard, e.g. 5GB, 500MB")->capture_default_str();
  app.add_option("--threads", args->threads, "Worker threads (default: all cores)");
  app.add_flag("--dry-run", args->dry_run, "Print the plan and write nothing");
  app.add_flag("--force", args->force, "Replace an existing destination (atomically, only once complete)");
  return [args, &global]() -> int {
    plan::ConvertRequest req;
    req.source = args->source;
    req.destination = args->destination;
    req.replace_existing = args->force;
    auto& o = req.options;
    o.target = args->target;
    o.gate_mode = plan::gate_mode_from_name(args->gate_mode);
    o.pad_hidden = args->pad_hidden ? args->pad_hidden : args->pad_multiple;
    o.pad_intermediate = args->pad_intermediate ? args->pad_intermediate : args->pad_multiple;
    o.max_shard_size = plan::parse_byte_size(args->max_shard_size);
    const unsigned cores = std::thread::hardware_concurrency();
    o.threads = args->threads > 0 ? args->threads : static_cast<int>(cores ? cores : 1);
    if (args->dry_run) {
      const io::Checkpoint source = io::Checkpoint::open(req.source);
      const plan::ConvertPlan p = plan::build_plan(source, o);
      if (global.json) std::cout << p.to_json().dump(2) << "\n";
      else print_plan(p);
      return kExitOk;
    }
    std::signal(SIGINT, on_interrupt);
    std::signal(SIGTERM, on_interrupt);
    req.cancel = &g_interrupted;
    ProgressDisplay progress(global.quiet || global.json, true);
    const plan::ConvertSummary s = plan::convert_checkpoint(req, progress);
    if (global.json) {
      nlohmann::ordered_json j;
      j["destination"] = req.destination.string();
      j["bytes_in"] = s.bytes_in;
      j["bytes_out"] = s.bytes_out;
      j["shards"] = s.shards;
      j["transformed_tensors"] = s.transformed;
      j["copied_tensors"] = s.copied;
      j["options"] = s.manifest.options;
      std::cout << j.dump(2) << "\n";
    } else if (!global.quiet) {
      std::printf("converted %s -> %s: %zu tensors transformed, %zu copied, %zu shards, %s written\n",
                  req.source.string().c_str(), req.destination.string().c_str(), s.transformed, s.copied, s.shards,
                  human_bytes(static_cast<double>(s.bytes_out)).c_str());
    }
    return kExitOk;
  };
}

}  // namespace moeprep::cli
