#include <cstdio>
#include <iostream>

#include "commands.h"
#include "core/error.h"
#include "exit_codes.h"
#include "models/gpt_oss_synth.h"
#include "models/synth_families.h"
#include "plan/options.h"
#include "progress_display.h"

namespace moeprep::cli {

CommandRunner add_generate_command(CLI::App& app, const GlobalOptions& global) {
  struct Args {
    std::string destination, model = "gpt_oss", max_shard_size;
    models::gpt_oss::SynthOptions o;
    bool force = false;
    bool gpt_oss_20b = false, gpt_oss_120b = false;
    // Options given on the command line override the family's tiny shape (other families).
    std::vector<std::pair<CLI::Option*, int64_t models::synth::Options::*>> sizes;
    CLI::Option* seed = nullptr;
    CLI::Option* vocab = nullptr;
  };
  auto a = std::make_shared<Args>();
  std::vector<std::string> families = {"gpt_oss"};
  for (const auto& f : models::synthetic_families()) families.push_back(f);
  app.add_option("DST", a->destination, "Directory to create")->required();
  app.add_option("--model", a->model, "Model family")->check(CLI::IsMember(families))->capture_default_str();
  const char* shape_note = " (default: the family's tiny shape; shown: gpt_oss's)";
  auto size = [&](const char* name, int64_t& gpt_oss_field, int64_t models::synth::Options::*field,
                  const std::string& help) {
    a->sizes.push_back({app.add_option(name, gpt_oss_field, help + shape_note)->capture_default_str(), field});
  };
  size("--layers", a->o.layers, &models::synth::Options::layers, "Layers");
  size("--experts", a->o.experts, &models::synth::Options::experts, "Experts per layer");
  size("--hidden", a->o.hidden, &models::synth::Options::hidden, "Hidden size (multiple of 32)");
  size("--intermediate", a->o.intermediate, &models::synth::Options::intermediate,
       "Expert intermediate size (multiple of 32)");
  size("--top-k", a->o.top_k, &models::synth::Options::top_k, "Experts per token");
  a->vocab = app.add_option("--vocab", a->o.vocab, "Vocabulary size")->capture_default_str();
  a->seed = app.add_option("--seed", a->o.seed, "Seed")->capture_default_str();
  app.add_option("--max-shard-size", a->max_shard_size, "Largest shard (default: two shards)");
  app.add_flag("--gpt-oss-20b-shape", a->gpt_oss_20b,
               "hidden = intermediate = 2880, 32 experts, top-4 (layers as given; gpt_oss, gpt_oss_bf16)");
  app.add_flag("--gpt-oss-120b-shape", a->gpt_oss_120b,
               "hidden = intermediate = 2880, 128 experts, top-4 (layers as given; gpt_oss, gpt_oss_bf16)");
  app.add_flag("--force", a->force, "Replace an existing destination");
  return [a, &global]() -> int {
    const bool gpt_oss_shape = a->gpt_oss_20b || a->gpt_oss_120b;
    if (gpt_oss_shape && a->model != "gpt_oss" && a->model != "gpt_oss_bf16")
      throw_usage("--gpt-oss-20b-shape and --gpt-oss-120b-shape apply to --model gpt_oss and gpt_oss_bf16");
    if (gpt_oss_shape) {
      a->o.hidden = a->o.intermediate = 2880;
      a->o.experts = a->gpt_oss_120b ? 128 : 32;
      a->o.top_k = 4;
      a->o.heads = 64;
      a->o.kv_heads = 8;
      a->o.head_dim = 64;
      a->o.vocab = 2048;  // keeps the non-expert part small; the experts are what moeprep moves
    }
    const uint64_t max_shard = a->max_shard_size.empty() ? 0 : plan::parse_byte_size(a->max_shard_size);
    uint64_t bytes = 0;
    if (a->model == "gpt_oss") {
      a->o.max_shard_size = max_shard;
      bytes = models::gpt_oss::write_synthetic_checkpoint(a->destination, a->o, a->force);
    } else {
      models::synth::Options o = models::default_synth_options(a->model);
      const models::gpt_oss::SynthOptions& given = a->o;
      const int64_t models::gpt_oss::SynthOptions::*from[] = {
          &models::gpt_oss::SynthOptions::layers, &models::gpt_oss::SynthOptions::experts,
          &models::gpt_oss::SynthOptions::hidden, &models::gpt_oss::SynthOptions::intermediate,
          &models::gpt_oss::SynthOptions::top_k};
      for (size_t i = 0; i < a->sizes.size(); ++i)
        if (a->sizes[i].first->count() || gpt_oss_shape) o.*(a->sizes[i].second) = given.*from[i];
      if (a->vocab->count() || gpt_oss_shape) o.vocab = given.vocab;
      if (a->seed->count()) o.seed = given.seed;
      o.max_shard_size = max_shard;
      bytes = models::write_synthetic_family(a->model, a->destination, o, a->force);
    }
    if (global.json) {
      std::cout << nlohmann::ordered_json{{"destination", a->destination}, {"bytes", bytes}}.dump(2) << "\n";
    } else if (!global.quiet) {
      std::printf("wrote %s: %s of tensors\n", a->destination.c_str(), human_bytes(static_cast<double>(bytes)).c_str());
    }
    return kExitOk;
  };
}

}  // namespace moeprep::cli
