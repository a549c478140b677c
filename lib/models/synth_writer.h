#pragma once
// Writes a deterministic synthetic checkpoint from a list of tensors and a config: seeded
// values per tensor (each tensor's stream depends only on the seed and its name, so shard
// boundaries never change the bytes), shards, index and config.json, atomically. The family
// generators (<family>_synth.cpp) say which tensors a model has; this file makes the bytes.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/shape.h"
#include "formats/dtype.h"

namespace moeprep::models::synth {

enum class Fill {
  Normal,      // mean + stddev * N(0, 1)
  LogNormal,   // mean * exp(stddev * N(0, 1)): positive (FP8 block scales)
  RandomBytes, // U8: uniform bytes (MXFP4 codes, two per byte)
  ByteRange,   // U8: uniform in [byte_min, byte_max] (E8M0 scale codes)
};

// dtype BF16, F32 or F8_E4M3 (values rounded to the nearest E4M3, saturating at 448) for the
// value fills; U8 for the byte fills.
struct Tensor {
  std::string name;
  Dtype dtype = Dtype::BF16;
  Shape shape;
  Fill fill = Fill::Normal;
  double mean = 0.0;
  double stddev = 0.02;
  int byte_min = 0, byte_max = 255;  // ByteRange
};

struct Checkpoint {
  std::vector<Tensor> tensors;
  nlohmann::ordered_json config;
};

// The options the family generators share (a family may ignore some).
struct Options {
  int64_t layers = 2;
  int64_t experts = 4;
  int64_t hidden = 64;        // multiple of 32
  int64_t intermediate = 64;  // expert intermediate size, multiple of 32
  int64_t top_k = 2;
  int64_t vocab = 64;
  uint64_t seed = 1;
  uint64_t max_shard_size = 0;  // 0: two shards of about equal size
};

// Throws Usage naming the option that is out of range.
void check_options(const Options& o);

// Writes `checkpoint` into `destination` (refusing an existing one unless replace_existing).
// Returns the total tensor bytes.
uint64_t write(const std::filesystem::path& destination, const Checkpoint& checkpoint, const Options& options,
               bool replace_existing);

// The nearest E4M3 code to `value` (ties to the even code), saturating at +-448.
uint8_t float_to_fp8_e4m3(float value);

// Building blocks of the family generators.
void add(std::vector<Tensor>& out, std::string name, Shape shape, double stddev = 0.02, double mean = 0.0,
         Dtype dtype = Dtype::BF16);
void add_norm(std::vector<Tensor>& out, const std::string& name, int64_t size);  // ~1.0
// What every decoder generated here has outside its layers, in HF naming:
// model.embed_tokens.weight, lm_head.weight, model.norm.weight.
void add_decoder_ends(std::vector<Tensor>& out, int64_t vocab, int64_t hidden);
// A decoder layer's input_layernorm and post_attention_layernorm under `prefix` ("model.layers.L.").
void add_layer_norms(std::vector<Tensor>& out, const std::string& prefix, int64_t hidden);
struct AttentionShape {
  int64_t heads = 2, kv_heads = 1, head_dim = 16;
  bool bias = false;     // q/k/v biases (Qwen2)
  bool qk_norm = false;  // q_norm/k_norm (Qwen3, Gemma4)
};
// q_proj, k_proj, v_proj, o_proj (+ biases, norms) under `prefix` (ending in "self_attn.").
void add_attention(std::vector<Tensor>& out, const std::string& prefix, int64_t hidden, const AttentionShape& a);
// Router weights with logits of spread about 2 for unit activations, so that routing is
// decided, not noise.
double router_stddev(int64_t hidden);
// The "moeprep_synthetic" entry of a generated config.json.
nlohmann::ordered_json provenance(const Options& o);

}  // namespace moeprep::models::synth
