#pragma once
// Synthetic checkpoints of every family moeprep quantizes, in each family's exact Hugging Face
// tensor names and config keys, from a seed. testdata/tiny-<family>/ is what
// write_synthetic_family(family, dst, default_synth_options(family)) writes; the benchmarks
// use larger shapes. (The GPT-OSS MXFP4 generator is models/gpt_oss_synth.h.)
#include <filesystem>
#include <string>
#include <vector>

#include "models/synth_writer.h"

namespace moeprep::models {

// "deepseek_v3", "deepseek_v3_bf16", "gemma4", "gpt_oss_bf16", "mixtral", "nemotron_h",
// "qwen2_moe", "qwen3_moe".
std::vector<std::string> synthetic_families();

// The shipped tiny shape of `family`; throws Usage for an unknown family.
synth::Options default_synth_options(const std::string& family);

// Checks the options against the family's constraints, writes the checkpoint atomically and
// returns its tensor bytes. Throws Usage for an unknown family or bad options.
uint64_t write_synthetic_family(const std::string& family, const std::filesystem::path& destination,
                                const synth::Options& options, bool replace_existing);

// The tensors and config of each family (one file each).
synth::Checkpoint gpt_oss_bf16_synthetic(const synth::Options& o);
synth::Checkpoint qwen_moe_synthetic(const synth::Options& o, bool qwen2);
synth::Checkpoint mixtral_synthetic(const synth::Options& o);
synth::Checkpoint deepseek_v3_synthetic(const synth::Options& o, bool fp8);
synth::Checkpoint gemma4_synthetic(const synth::Options& o);
synth::Checkpoint nemotron_h_synthetic(const synth::Options& o);

}  // namespace moeprep::models
