#include "models/gpt_oss_adapter.h"

#include "core/error.h"
#include "models/adapter_support.h"
#include "models/gpt_oss_bf16_adapter.h"
#include "models/gpt_oss.h"

namespace moeprep::models {
namespace {

class GptOssAdapter : public ModelAdapter {
 public:
  GptOssAdapter(const io::Checkpoint& c, ModelInfo info) : c_(c), info_(std::move(info)) {}
  std::string family() const override { return gpt_oss::kModelType; }
  const ModelInfo& info() const override { return info_; }

  std::vector<MoeLayer> moe_layers() const override {
    const int64_t E = info_.experts, H = info_.hidden, I = info_.intermediate;
    std::vector<MoeLayer> layers;
    for (int64_t l = 0; l < info_.layers; ++l) {
      const auto s = gpt_oss::source_names(l);
      const std::string why = "the GPT-OSS MXFP4 layout";
      expect_tensor(c_, s.router_weight, Dtype::BF16, {E, H}, why);
      MoeLayer layer;
      layer.layer = l;
      layer.output_prefix = gpt_oss::experts_prefix(l);
      layer.gate_up_interleaved = true;
      const std::pair<Role, std::pair<std::string, std::pair<Dtype, Shape>>> roles[] = {
          {Role::W13Weight, {s.gate_up_blocks, {Dtype::U8, {E, 2 * I, H / 32, 16}}}},
          {Role::W13Scale, {s.gate_up_scales, {Dtype::U8, {E, 2 * I, H / 32}}}},
          {Role::W13Bias, {s.gate_up_bias, {Dtype::BF16, {E, 2 * I}}}},
          {Role::W2Weight, {s.down_blocks, {Dtype::U8, {E, H, I / 32, 16}}}},
          {Role::W2Scale, {s.down_scales, {Dtype::U8, {E, H, I / 32}}}},
          {Role::W2Bias, {s.down_bias, {Dtype::BF16, {E, H}}}},
      };
      for (const auto& [role, named] : roles) {
        const auto& [name, ds] = named;
        expect_tensor(c_, name, ds.first, ds.second, why);
        CanonicalSource src;
        src.dtype = ds.first;
        src.shape = ds.second;
        src.tensors = {name};
        layer.sources[role] = std::move(src);
        layer.consumed.push_back(name);
      }
      refuse_unknown_expert_tensors(c_, layer.output_prefix, layer.consumed, "GPT-OSS");
      layers.push_back(std::move(layer));
    }
    return layers;
  }

  LayerReference layer_router(int64_t layer) const override {
    const auto s = gpt_oss::source_names(layer);
    LayerReference r;
    r.router_weight = copy_tensor<uint16_t>(c_, s.router_weight);
    if (c_.try_find(s.router_bias)) r.router_bias = copy_tensor<uint16_t>(c_, s.router_bias);
    r.router = info_.router;
    return r;
  }

  LayerReference layer_reference(int64_t layer, const std::vector<int32_t>& needed) const override {
    LayerReference r = layer_router(layer);
    const auto s = gpt_oss::source_names(layer);
    const int64_t E = info_.experts, H = info_.hidden, I = info_.intermediate;
    auto bytes = [&](const std::string& name) { return c_.data(c_.find(name)).data; };
    const uint8_t* gu_blocks = bytes(s.gate_up_blocks);
    const uint8_t* gu_scales = bytes(s.gate_up_scales);
    const uint8_t* dn_blocks = bytes(s.down_blocks);
    const uint8_t* dn_scales = bytes(s.down_scales);
    const auto gu_bias = copy_tensor<uint16_t>(c_, s.gate_up_bias);
    const auto dn_bias = copy_tensor<uint16_t>(c_, s.down_bias);
    auto& d = r.dense;
    d.experts = E;
    d.hidden = H;
    d.intermediate = I;
    d.gate_up_interleaved = true;
    d.slot.assign(static_cast<size_t>(E), -1);
    int32_t next = 0;
    for (int32_t e : needed) {
      if (e < 0 || e >= E || d.slot[e] >= 0) continue;
      // One expert at a time through the exact dequantizer, appended to the held set.
      const auto one = reference::dense_from_gpt_oss_source(
          gu_blocks + e * 2 * I * H / 2, gu_scales + e * 2 * I * H / 32, gu_bias.data() + e * 2 * I,
          dn_blocks + e * H * I / 2, dn_scales + e * H * I / 32, dn_bias.data() + e * H, 1, H, I);
      d.w13.insert(d.w13.end(), one.w13.begin(), one.w13.end());
      d.b13.insert(d.b13.end(), one.b13.begin(), one.b13.end());
      d.w2.insert(d.w2.end(), one.w2.begin(), one.w2.end());
      d.b2.insert(d.b2.end(), one.b2.begin(), one.b2.end());
      d.slot[e] = next++;
    }
    return r;
  }

 private:
  const io::Checkpoint& c_;
  ModelInfo info_;
};

}  // namespace

std::unique_ptr<ModelAdapter> make_gpt_oss_adapter(const io::Checkpoint& checkpoint, const std::string& config_path) {
  if (has_gpt_oss_bf16_experts(checkpoint)) return make_gpt_oss_bf16_adapter(checkpoint, config_path);
  return std::make_unique<GptOssAdapter>(checkpoint, gpt_oss::read_config(checkpoint.config(), config_path));
}

}  // namespace moeprep::models
