#include "models/gpt_oss_synth.h"

#include <algorithm>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/hash.h"
#include "core/random.h"
#include "formats/bf16.h"
#include "io/atomic_dir.h"
#include "io/checkpoint.h"
#include "io/safetensors_writer.h"
#include "models/gpt_oss.h"

namespace moeprep::models::gpt_oss {
namespace {

enum class Content { Mxfp4Codes, E8m0Scales, Bf16Normal, Bf16NearOne };

struct SynthTensor {
  io::PlannedTensor planned;
  Content content;
  double stddev = 0.02;
};

// Each tensor's stream depends only on the seed and its name, so shard boundaries and chunking
// never change the bytes.
uint64_t tensor_seed(uint64_t seed, const std::string& name) {
  std::string key = std::to_string(seed) + ":" + name;
  std::string h = xxh3_128_hex(key.data(), key.size());
  return std::stoull(h.substr(0, 16), nullptr, 16);
}

void check_options(const SynthOptions& o) {
  auto positive = [](int64_t v, const char* what) {
    if (v <= 0) throw_usage(std::string("synthetic checkpoint: ") + what + " must be positive");
  };
  positive(o.layers, "layers");
  positive(o.experts, "experts");
  positive(o.hidden, "hidden");
  positive(o.intermediate, "intermediate");
  positive(o.top_k, "top_k");
  positive(o.vocab, "vocab");
  if (o.hidden % 32 || o.intermediate % 32)
    throw_usage("synthetic checkpoint: hidden and intermediate must be multiples of 32 (MXFP4 blocks)");
  if (o.top_k > o.experts) throw_usage("synthetic checkpoint: top_k exceeds the number of experts");
  if (o.scale_min < 0 || o.scale_max > 254 || o.scale_min > o.scale_max)
    throw_usage("synthetic checkpoint: E8M0 scale range must lie within 0..254");
}

std::vector<SynthTensor> tensor_list(const SynthOptions& o) {
  using D = Dtype;
  std::vector<SynthTensor> t;
  auto add = [&](std::string name, D dtype, Shape shape, Content c, double sd = 0.02) {
    t.push_back({{std::move(name), dtype, std::move(shape)}, c, sd});
  };
  const int64_t E = o.experts, H = o.hidden, I = o.intermediate;
  const int64_t q = o.heads * o.head_dim, kv = o.kv_heads * o.head_dim;
  add("model.embed_tokens.weight", D::BF16, {o.vocab, H}, Content::Bf16Normal);
  add("lm_head.weight", D::BF16, {o.vocab, H}, Content::Bf16Normal);
  add("model.norm.weight", D::BF16, {H}, Content::Bf16NearOne);
  for (int64_t l = 0; l < o.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", D::BF16, {H}, Content::Bf16NearOne);
    add(p + "post_attention_layernorm.weight", D::BF16, {H}, Content::Bf16NearOne);
    add(p + "self_attn.q_proj.weight", D::BF16, {q, H}, Content::Bf16Normal);
    add(p + "self_attn.q_proj.bias", D::BF16, {q}, Content::Bf16Normal);
    add(p + "self_attn.k_proj.weight", D::BF16, {kv, H}, Content::Bf16Normal);
    add(p + "self_attn.k_proj.bias", D::BF16, {kv}, Content::Bf16Normal);
    add(p + "self_attn.v_proj.weight", D::BF16, {kv, H}, Content::Bf16Normal);
    add(p + "self_attn.v_proj.bias", D::BF16, {kv}, Content::Bf16Normal);
    add(p + "self_attn.o_proj.weight", D::BF16, {H, q}, Content::Bf16Normal);
    add(p + "self_attn.o_proj.bias", D::BF16, {H}, Content::Bf16Normal);
    add(p + "self_attn.sinks", D::BF16, {o.heads}, Content::Bf16Normal, 1.0);
    const SourceNames s = source_names(l);
    // Router logits of spread ~2 over the experts, so that routing is decided, not noise.
    add(s.router_weight, D::BF16, {E, H}, Content::Bf16Normal, 2.0 / std::sqrt(static_cast<double>(H)));
    add(s.router_bias, D::BF16, {E}, Content::Bf16Normal, 0.5);
    add(s.gate_up_blocks, D::U8, {E, 2 * I, H / 32, 16}, Content::Mxfp4Codes);
    add(s.gate_up_scales, D::U8, {E, 2 * I, H / 32}, Content::E8m0Scales);
    add(s.gate_up_bias, D::BF16, {E, 2 * I}, Content::Bf16Normal, 0.5);
    add(s.down_blocks, D::U8, {E, H, I / 32, 16}, Content::Mxfp4Codes);
    add(s.down_scales, D::U8, {E, H, I / 32}, Content::E8m0Scales);
    add(s.down_bias, D::BF16, {E, H}, Content::Bf16Normal, 0.5);
  }
  std::sort(t.begin(), t.end(), [](const SynthTensor& a, const SynthTensor& b) { return a.planned.name < b.planned.name; });
  return t;
}

void stream_tensor(const SynthTensor& t, const SynthOptions& o, io::ShardWriter& writer) {
  SplitMix64 rng(tensor_seed(o.seed, t.planned.name));
  const uint64_t total = t.planned.byte_length();
  std::vector<uint8_t> buf(std::min<uint64_t>(total, 1 << 22));
  uint64_t done = 0;
  const int span = o.scale_max - o.scale_min + 1;
  while (done < total) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), total - done));
    switch (t.content) {
      case Content::Mxfp4Codes:
        for (size_t i = 0; i < n; i += 8) {
          uint64_t r = rng.next();
          for (size_t j = 0; j < 8 && i + j < n; ++j) buf[i + j] = static_cast<uint8_t>(r >> (8 * j));
        }
        break;
      case Content::E8m0Scales:
        for (size_t i = 0; i < n; ++i) buf[i] = static_cast<uint8_t>(o.scale_min + rng.below(span));
        break;
      case Content::Bf16Normal:
      case Content::Bf16NearOne:
        for (size_t i = 0; i + 1 < n; i += 2) {
          double v = rng.normal() * t.stddev + (t.content == Content::Bf16NearOne ? 1.0 : 0.0);
          uint16_t b = float_to_bf16(static_cast<float>(v));
          buf[i] = static_cast<uint8_t>(b & 0xff);
          buf[i + 1] = static_cast<uint8_t>(b >> 8);
        }
        break;
    }
    writer.write(buf.data(), n);
    done += n;
  }
}

nlohmann::ordered_json config_json(const SynthOptions& o) {
  nlohmann::ordered_json c;
  c["architectures"] = {"GptOssForCausalLM"};
  c["model_type"] = kModelType;
  c["hidden_size"] = o.hidden;
  c["intermediate_size"] = o.intermediate;
  c["num_hidden_layers"] = o.layers;
  c["num_local_experts"] = o.experts;
  c["num_experts_per_tok"] = o.top_k;
  c["experts_per_token"] = o.top_k;
  c["num_attention_heads"] = o.heads;
  c["num_key_value_heads"] = o.kv_heads;
  c["head_dim"] = o.head_dim;
  c["vocab_size"] = o.vocab;
  c["swiglu_limit"] = 7.0;
  c["rope_theta"] = 150000;
  c["torch_dtype"] = "bfloat16";
  c["quantization_config"] = {{"quant_method", "mxfp4"},
                              {"modules_to_not_convert",
                               {"model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens",
                                "lm_head"}}};
  c["moeprep_synthetic"] = {{"seed", o.seed}, {"generator", "moeprep generate"}};
  return c;
}

}  // namespace

uint64_t write_synthetic_checkpoint(const std::filesystem::path& destination, const SynthOptions& options,
                                    bool replace_existing) {
  check_options(options);
  const std::vector<SynthTensor> tensors = tensor_list(options);
  std::vector<io::PlannedTensor> planned;
  uint64_t total = 0;
  for (const auto& t : tensors) {
    planned.push_back(t.planned);
    total += t.planned.byte_length();
  }
  // Default: two shards (the greedy split of a bound of 60% leaves the rest for a second one).
  const uint64_t bound = options.max_shard_size ? options.max_shard_size : total / 10 * 6 + 1;
  std::vector<io::ShardPlan> shards = io::plan_shards(planned, bound);
  for (auto& s : shards) s.metadata["format"] = "pt";

  io::remove_stale_staging(destination);
  io::AtomicOutputDir out(destination, replace_existing);
  std::map<std::string, std::string> weight_map;
  size_t next = 0;
  for (const auto& shard : shards) {
    io::ShardWriter writer(out.staging() / shard.file_name, shard);
    for (const auto& pt : shard.tensors) {
      const SynthTensor& t = tensors[next++];
      writer.begin_tensor(pt.name);
      stream_tensor(t, options, writer);
      writer.end_tensor();
      weight_map[pt.name] = shard.file_name;
    }
    writer.finish();
  }
  io::write_index_file(out.staging() / io::kIndexFileName, weight_map, total);
  out.write_file(io::kConfigFileName, config_json(options).dump(2) + "\n");
  out.commit();
  return total;
}

}  // namespace moeprep::models::gpt_oss
