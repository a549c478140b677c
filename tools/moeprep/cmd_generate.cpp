#include <cstdio>
#include <iostream>

#include "commands.h"
#include "exit_codes.h"
#include "models/gpt_oss_synth.h"
#include "plan/options.h"
#include "progress_display.h"

namespace moeprep::cli {

CommandRunner add_generate_command(CLI::App& app, const GlobalOptions& global) {
  struct Args {
    std::string destination, model = "gpt_oss", max_shard_size;
    models::gpt_oss::SynthOptions o;
    bool force = false;
    bool gpt_oss_20b = false, gpt_oss_120b = false;
  };
  auto a = std::make_shared<Args>();
  app.add_option("DST", a->destination, "Directory to create")->required();
  app.add_option("--model", a->model, "Model family")->check(CLI::IsMember({"gpt_oss"}))->capture_default_str();
  app.add_option("--layers", a->o.layers, "Layers")->capture_default_str();
  app.add_option("--experts", a->o.experts, "Experts per layer")->capture_default_str();
  app.add_option("--hidden", a->o.hidden, "Hidden size (multiple of 32)")->capture_default_str();
  app.add_option("--intermediate", a->o.intermediate, "Intermediate size (multiple of 32)")->capture_default_str();
  app.add_option("--top-k", a->o.top_k, "Experts per token")->capture_default_str();
  app.add_option("--vocab", a->o.vocab, "Vocabulary size")->capture_default_str();
  app.add_option("--seed", a->o.seed, "Seed")->capture_default_str();
  app.add_option("--max-shard-size", a->max_shard_size, "Largest shard (default: two shards)");
  app.add_flag("--gpt-oss-20b-shape", a->gpt_oss_20b, "hidden = intermediate = 2880, 32 experts, top-4 (layers as given)");
  app.add_flag("--gpt-oss-120b-shape", a->gpt_oss_120b, "hidden = intermediate = 2880, 128 experts, top-4 (layers as given)");
  app.add_flag("--force", a->force, "Replace an existing destination");
  return [a, &global]() -> int {
    if (a->gpt_oss_20b || a->gpt_oss_120b) {
      a->o.hidden = a->o.intermediate = 2880;
      a->o.experts = a->gpt_oss_120b ? 128 : 32;
      a->o.top_k = 4;
      a->o.heads = 64;
      a->o.kv_heads = 8;
      a->o.head_dim = 64;
      a->o.vocab = 2048;  // keeps the non-expert part small; the experts are what moeprep moves
    }
    if (!a->max_shard_size.empty()) a->o.max_shard_size = plan::parse_byte_size(a->max_shard_size);
    const uint64_t bytes = models::gpt_oss::write_synthetic_checkpoint(a->destination, a->o, a->force);
    if (global.json) {
      std::cout << nlohmann::ordered_json{{"destination", a->destination}, {"bytes", bytes}}.dump(2) << "\n";
    } else if (!global.quiet) {
      std::printf("wrote %s: %s of tensors\n", a->destination.c_str(), human_bytes(static_cast<double>(bytes)).c_str());
    }
    return kExitOk;
  };
}

}  // namespace moeprep::cli
