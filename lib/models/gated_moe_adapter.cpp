#include "models/gated_moe_adapter.h"

#include <cctype>
#include <cmath>
#include <cstring>
#include <set>

#include "core/error.h"
#include "formats/bf16.h"
#include "models/adapter_support.h"
#include "models/mxfp4_sources.h"

namespace moeprep::models {
namespace {

CanonicalSource direct_bf16_source(const io::Checkpoint& c, const std::string& name, const Shape& shape,
                                   const std::string& why) {
  expect_tensor(c, name, Dtype::BF16, shape, why);
  CanonicalSource s;
  s.dtype = Dtype::BF16;
  s.shape = shape;
  s.tensors = {name};
  return s;
}

class GatedMoeAdapter : public ModelAdapter {
 public:
  GatedMoeAdapter(const io::Checkpoint& c, GatedFamily f) : c_(c), f_(std::move(f)) {}
  std::string family() const override { return f_.family; }
  const ModelInfo& info() const override { return f_.info; }

  std::vector<MoeLayer> moe_layers() const override {
    refuse_experts_in_dense_layers();
    std::vector<MoeLayer> out;
    for (int64_t l : f_.moe_layers) {
      const GatedLayer g = checked_layer(l);
      MoeLayer layer;
      layer.layer = l;
      layer.output_prefix = g.output_prefix;
      layer.gate_up_interleaved = g.gate_up_interleaved;
      layer.sources[Role::W13Weight] = mxfp4_blocks_source(g.w13);
      layer.sources[Role::W13Scale] = mxfp4_scales_source(g.w13);
      layer.sources[Role::W2Weight] = mxfp4_blocks_source(g.w2);
      layer.sources[Role::W2Scale] = mxfp4_scales_source(g.w2);
      const int64_t E = f_.info.experts, H = f_.info.hidden;
      if (!g.w13_bias.empty()) layer.sources[Role::W13Bias] = direct_bf16_source(c_, g.w13_bias, {E, w13_rows()}, why());
      if (!g.w2_bias.empty()) layer.sources[Role::W2Bias] = direct_bf16_source(c_, g.w2_bias, {E, H}, why());
      layer.consumed = g.w13->tensors;
      layer.consumed.insert(layer.consumed.end(), g.w2->tensors.begin(), g.w2->tensors.end());
      for (const auto* bias : {&g.w13_bias, &g.w2_bias})
        if (!bias->empty()) layer.consumed.push_back(*bias);
      refuse_unknown_expert_tensors(c_, g.expert_block_prefix, layer.consumed, f_.label);
      out.push_back(std::move(layer));
    }
    return out;
  }

  LayerReference layer_router(int64_t layer) const override {
    const GatedLayer g = checked_layer(layer);
    const int64_t E = f_.info.experts, H = f_.info.hidden;
    LayerReference r;
    r.router = f_.info.router;
    r.router_weight = copy_tensor<uint16_t>(c_, g.router_weight);
    if (!g.router_bias.empty()) r.router_bias = copy_tensor<uint16_t>(c_, g.router_bias);
    if (!g.correction_bias.empty()) r.router.correction_bias = read_float_vector(c_, g.correction_bias, E, why());
    if (!g.per_expert_scale.empty()) r.router.per_expert_scale = read_float_vector(c_, g.per_expert_scale, E, why());
    if (!g.router_input_scale.empty()) {
      const std::vector<float> scale = read_float_vector(c_, g.router_input_scale, H, why());
      const double root = 1.0 / std::sqrt(static_cast<double>(H));
      for (int64_t e = 0; e < E; ++e)
        for (int64_t h = 0; h < H; ++h) {
          uint16_t& w = r.router_weight[static_cast<size_t>(e * H + h)];
          w = float_to_bf16(static_cast<float>(bf16_to_float(w) * scale[static_cast<size_t>(h)] * root));
        }
    }
    return r;
  }

  LayerReference layer_reference(int64_t layer, const std::vector<int32_t>& needed) const override {
    LayerReference r = layer_router(layer);
    const GatedLayer g = checked_layer(layer);
    const int64_t E = f_.info.experts, H = f_.info.hidden, I = f_.info.intermediate, R = w13_rows();
    std::vector<uint16_t> b13, b2;
    if (!g.w13_bias.empty()) b13 = copy_tensor<uint16_t>(c_, g.w13_bias);
    if (!g.w2_bias.empty()) b2 = copy_tensor<uint16_t>(c_, g.w2_bias);
    auto& d = r.dense;
    d.experts = E;
    d.hidden = H;
    d.intermediate = I;
    d.gate_up_interleaved = g.gate_up_interleaved;
    d.slot.assign(static_cast<size_t>(E), -1);
    int32_t held = 0;
    for (int32_t e : needed) {
      if (e < 0 || e >= E || d.slot[static_cast<size_t>(e)] >= 0) continue;
      d.slot[static_cast<size_t>(e)] = held++;
    }
    d.w13.resize(static_cast<size_t>(held * R * H));
    d.w2.resize(static_cast<size_t>(held * H * I));
    d.b13.assign(static_cast<size_t>(held * R), 0.0f);
    d.b2.assign(static_cast<size_t>(held * H), 0.0f);
    for (int64_t e = 0; e < E; ++e) {
      const int32_t s = d.slot[static_cast<size_t>(e)];
      if (s < 0) continue;
      // The unquantized source: what the model means, so that stage 5 measures the MXFP4
      // rounding along with any layout error.
      g.w13->read_float(e, d.w13.data() + s * R * H);
      g.w2->read_float(e, d.w2.data() + s * H * I);
      for (int64_t n = 0; n < R && !b13.empty(); ++n) d.b13[s * R + n] = bf16_to_float(b13[e * R + n]);
      for (int64_t n = 0; n < H && !b2.empty(); ++n) d.b2[s * H + n] = bf16_to_float(b2[e * H + n]);
    }
    return r;
  }

 private:
  std::string why() const { return "the " + f_.label + " layout"; }
  // Rows of w13 per expert: [gate; up], or the up rows alone for a non-gated activation
  // (Nemotron-H's relu^2).
  int64_t w13_rows() const {
    return reference::is_gated(f_.info.activation.kind) ? 2 * f_.info.intermediate : f_.info.intermediate;
  }

  GatedLayer checked_layer(int64_t l) const {
    GatedLayer g = f_.layer(l);
    const int64_t E = f_.info.experts, H = f_.info.hidden, I = f_.info.intermediate;
    if (g.w13->experts != E || g.w13->rows != w13_rows() || g.w13->cols != H || g.w2->experts != E || g.w2->rows != H ||
        g.w2->cols != I)
      throw_internal(f_.family + " adapter: expert rows of layer " + std::to_string(l) + " do not match the config");
    expect_tensor(c_, g.router_weight, Dtype::BF16, {E, H}, why() + " (router)");
    if (!g.router_bias.empty()) expect_tensor(c_, g.router_bias, Dtype::BF16, {E}, why() + " (router)");
    return g;
  }

  // A layer that config.json makes dense must not hold routed experts: they would be copied
  // through unconverted, which an engine expecting kernel-ready experts reads as garbage.
  void refuse_experts_in_dense_layers() const {
    const std::set<int64_t> moe(f_.moe_layers.begin(), f_.moe_layers.end());
    const std::string& p = f_.layers_prefix;
    for (const auto& name : c_.tensor_names()) {
      if (name.compare(0, p.size(), p) != 0) continue;
      size_t end = p.size();
      while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
      if (end == p.size() || end >= name.size() || name[end] != '.' || end - p.size() > 9) continue;
      const int64_t layer = std::stoll(name.substr(p.size(), end - p.size()));
      if (name.compare(end + 1, f_.experts_infix.size(), f_.experts_infix) != 0 || moe.count(layer)) continue;
      throw_bad_input(c_.find(name).file->path().string() + ": tensor '" + name + "' holds routed experts, but " +
                      "config.json makes layer " + std::to_string(layer) + " a dense layer");
    }
  }

  const io::Checkpoint& c_;
  GatedFamily f_;
};

}  // namespace

std::vector<float> read_float_vector(const io::Checkpoint& c, const std::string& name, int64_t n,
                                     const std::string& why) {
  const io::LocatedTensor* t = c.try_find(name);
  if (!t) throw_bad_input(c.root().string() + ": tensor '" + name + "' is missing (expected by " + why + ")");
  if (t->info->dtype == Dtype::BF16) {
    expect_tensor(c, name, Dtype::BF16, {n}, why);
    std::vector<float> out;
    for (uint16_t b : copy_tensor<uint16_t>(c, name)) out.push_back(bf16_to_float(b));
    return out;
  }
  expect_tensor(c, name, Dtype::F32, {n}, why);
  return copy_tensor<float>(c, name);
}

GatedFamily gated_family_from_config(const ConfigReader& cfg, std::string family, std::string label,
                                     const char* experts_key, const char* intermediate_key) {
  GatedFamily f;
  f.family = std::move(family);
  f.label = std::move(label);
  f.info.model_type = cfg.string_or("model_type", "");
  f.info.family = f.family;
  f.info.experts = cfg.positive_int({experts_key});
  f.info.hidden = cfg.positive_int({"hidden_size"});
  f.info.intermediate = cfg.positive_int({intermediate_key});
  return f;
}

std::unique_ptr<ModelAdapter> make_gated_moe_adapter(const io::Checkpoint& checkpoint, GatedFamily family) {
  return std::make_unique<GatedMoeAdapter>(checkpoint, std::move(family));
}

}  // namespace moeprep::models
