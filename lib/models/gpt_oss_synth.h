#pragma once
// Deterministic synthetic GPT-OSS checkpoints in the exact HF format: config.json, shards and
// index, MXFP4 expert codes and E8M0 scales drawn from a seeded generator. The shipped tiny
// test checkpoint and the large benchmark inputs both come from here.
#include <cstdint>
#include <filesystem>

namespace moeprep::models::gpt_oss {

struct SynthOptions {
  int64_t layers = 2;
  int64_t experts = 4;
  int64_t hidden = 160;        // multiple of 32
  int64_t intermediate = 96;   // multiple of 32
  int64_t top_k = 2;
  int64_t vocab = 256;
  int64_t heads = 4;
  int64_t kv_heads = 2;
  int64_t head_dim = 32;
  uint64_t seed = 1;
  int scale_min = 120;         // E8M0 codes drawn uniformly from [scale_min, scale_max]
  int scale_max = 130;
  uint64_t max_shard_size = 0;  // 0: split into two shards of about equal size
};

// Writes the checkpoint into `destination` atomically (refuses an existing one unless
// `replace_existing`). Returns the total tensor bytes written.
uint64_t write_synthetic_checkpoint(const std::filesystem::path& destination, const SynthOptions& options,
                                    bool replace_existing);

}  // namespace moeprep::models::gpt_oss
