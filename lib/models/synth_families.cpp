#include "models/synth_families.h"

#include <functional>
#include <map>

#include "core/error.h"

namespace moeprep::models {
namespace {

struct Family {
  synth::Options tiny;
  std::function<synth::Checkpoint(const synth::Options&)> make;
};

synth::Options shape(int64_t layers, int64_t experts, int64_t hidden, int64_t intermediate, int64_t vocab = 64) {
  synth::Options o;
  o.vocab = vocab;
  o.layers = layers;
  o.experts = experts;
  o.hidden = hidden;
  o.intermediate = intermediate;
  return o;
}

// The tiny shapes keep every shipped checkpoint under ~400 KB while H and I stay multiples of
// 32 and not of 256 (so padding is exercised) and K spans more than one MXFP4 block somewhere.
const std::map<std::string, Family>& families() {
  static const std::map<std::string, Family> f = {
      {"gpt_oss_bf16", {shape(2, 4, 64, 64), gpt_oss_bf16_synthetic}},
      // Three layers: layer 1 is dense (mlp_only_layers).
      {"qwen3_moe", {shape(3, 4, 64, 64), [](const synth::Options& o) { return qwen_moe_synthetic(o, false); }}},
      {"qwen2_moe", {shape(2, 4, 96, 32), [](const synth::Options& o) { return qwen_moe_synthetic(o, true); }}},
      {"mixtral", {shape(2, 8, 64, 32), mixtral_synthetic}},
      // Three layers: layer 0 is dense (first_k_dense_replace); H = 160 makes 128-wide FP8
      // blocks ragged.
      {"deepseek_v3", {shape(3, 8, 160, 32, 16), [](const synth::Options& o) { return deepseek_v3_synthetic(o, true); }}},
      {"deepseek_v3_bf16",
       {shape(3, 8, 160, 32, 16), [](const synth::Options& o) { return deepseek_v3_synthetic(o, false); }}},
      {"gemma4", {shape(2, 4, 64, 64), gemma4_synthetic}},
      // Four layers "ME*E": Mamba, MoE, attention, MoE; two expert groups of four.
      {"nemotron_h", {shape(4, 8, 96, 32, 16), nemotron_h_synthetic}},
  };
  return f;
}

const Family& find(const std::string& family) {
  auto it = families().find(family);
  if (it == families().end()) {
    std::string known;
    for (const auto& n : synthetic_families()) known += (known.empty() ? "" : ", ") + n;
    throw_usage("no synthetic generator for model '" + family + "' (known: gpt_oss, " + known + ")");
  }
  return it->second;
}

}  // namespace

std::vector<std::string> synthetic_families() {
  std::vector<std::string> names;
  for (const auto& [name, f] : families()) names.push_back(name);
  return names;
}

synth::Options default_synth_options(const std::string& family) { return find(family).tiny; }

uint64_t write_synthetic_family(const std::string& family, const std::filesystem::path& destination,
                                const synth::Options& options, bool replace_existing) {
  const Family& f = find(family);
  synth::check_options(options);
  return synth::write(destination, f.make(options), options, replace_existing);
}

}  // namespace moeprep::models
