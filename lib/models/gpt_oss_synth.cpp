#include "models/gpt_oss_synth.h"

#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "models/gpt_oss.h"
#include "models/synth_writer.h"

namespace moeprep::models::gpt_oss {
namespace {

enum class Content { Mxfp4Codes, E8m0Scales, Bf16Normal, Bf16NearOne };

void check_options(const SynthOptions& o) {
  synth::Options common;
  common.layers = o.layers;
  common.experts = o.experts;
  common.hidden = o.hidden;
  common.intermediate = o.intermediate;
  common.top_k = o.top_k;
  common.vocab = o.vocab;
  synth::check_options(common);
  if (o.scale_min < 0 || o.scale_max > 254 || o.scale_min > o.scale_max)
    throw_usage("synthetic checkpoint: E8M0 scale range must lie within 0..254");
}

std::vector<synth::Tensor> tensor_list(const SynthOptions& o) {
  using D = Dtype;
  std::vector<synth::Tensor> t;
  auto add = [&](std::string name, D dtype, Shape shape, Content c, double sd = 0.02) {
    synth::Tensor x;
    x.name = std::move(name);
    x.dtype = dtype;
    x.shape = std::move(shape);
    x.stddev = sd;
    switch (c) {
      case Content::Mxfp4Codes: x.fill = synth::Fill::RandomBytes; break;
      case Content::E8m0Scales:
        x.fill = synth::Fill::ByteRange;
        x.byte_min = o.scale_min;
        x.byte_max = o.scale_max;
        break;
      case Content::Bf16NearOne: x.mean = 1.0; break;
      case Content::Bf16Normal: break;
    }
    t.push_back(std::move(x));
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
  return t;  // synth::write orders them by name
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
  synth::Checkpoint checkpoint;
  checkpoint.tensors = tensor_list(options);
  checkpoint.config = config_json(options);
  synth::Options written;
  written.seed = options.seed;
  written.max_shard_size = options.max_shard_size;
  return synth::write(destination, checkpoint, written, replace_existing);
}

}  // namespace moeprep::models::gpt_oss
