// Stage 5: run the MoE of each layer on the kernel-ready tensors and compare with a reference
// computed from the source tensors.
#include <cmath>
#include <cstring>
#include <set>

#include "core/error.h"
#include "core/random.h"
#include "formats/bf16.h"
#include "models/gpt_oss.h"
#include "plan/manifest_model.h"
#include "plan/verify_stages.h"

namespace moeprep::plan {
namespace {

// Tensor bytes copied out of the memory map: mapped tensors need not be aligned for their
// element type (safetensors packs tensors without gaps).
template <typename T>
std::vector<T> copy_as(const io::Checkpoint& c, const std::string& name, Dtype expected) {
  const io::LocatedTensor& t = c.find(name);
  if (t.info->dtype != expected)
    throw_bad_input(t.file->path().filename().string() + ": tensor '" + name + "' is " + dtype_name(t.info->dtype) +
                    ", the kernel reads " + dtype_name(expected));
  const io::ByteView b = c.data(t);
  std::vector<T> v(b.size / sizeof(T));
  std::memcpy(v.data(), b.data, v.size() * sizeof(T));
  return v;
}

struct LayerTensors {
  std::vector<uint8_t> w13, w13_scale, w2, w2_scale;
  std::vector<float> w13_bias, w2_bias;
  reference::KernelReadyLayer view;
};

// The kernel-ready layer; checks that every tensor is at least as large as the addressing of
// the layout will reach, so that a mislabelled tensor fails the check instead of being read
// out of bounds.
LayerTensors load_kernel_ready(const io::Checkpoint& c, const Manifest& m, int64_t layer, const std::string& context) {
  const auto names = models::gpt_oss::output_names(layer);
  const ExpertDims d = dims_from_manifest(m, context);
  const ConvertOptions o = options_from_manifest(m, context);
  LayerTensors t;
  t.w13 = copy_as<uint8_t>(c, names.w13_weight, Dtype::U8);
  t.w13_scale = copy_as<uint8_t>(c, names.w13_weight_scale, Dtype::U8);
  t.w13_bias = copy_as<float>(c, names.w13_weight_bias, Dtype::F32);
  t.w2 = copy_as<uint8_t>(c, names.w2_weight, Dtype::U8);
  t.w2_scale = copy_as<uint8_t>(c, names.w2_weight_scale, Dtype::U8);
  t.w2_bias = copy_as<float>(c, names.w2_weight_bias, Dtype::F32);
  auto& v = t.view;
  v.mode = o.gate_mode;
  v.experts = d.experts;
  v.hidden = d.hidden;
  v.intermediate = d.intermediate;
  v.hidden_pad = d.hidden_pad;
  v.intermediate_pad = d.intermediate_pad;
  const auto& s13 = c.find(names.w13_weight_scale).info->shape;
  const auto& s2 = c.find(names.w2_weight_scale).info->shape;
  if (s13.size() != 2 || s2.size() != 2) throw_bad_input(names.w13_weight_scale + ": scales must be 2-D");
  v.w13_scale_cols = s13[1];
  v.w2_scale_cols = s2[1];
  const int64_t E = d.experts, Hp = d.hidden_pad, Ip = d.intermediate_pad;
  auto need = [&](const std::string& name, size_t have, int64_t want) {
    if (static_cast<int64_t>(have) < want)
      throw_bad_input(name + ": " + std::to_string(have) + " elements, the kernel-ready layout needs " +
                      std::to_string(want));
  };
  need(names.w13_weight, t.w13.size(), E * 2 * Ip * Hp / 2);
  need(names.w2_weight, t.w2.size(), E * Hp * Ip / 2);
  need(names.w13_weight_bias, t.w13_bias.size(), E * 2 * Ip);
  need(names.w2_weight_bias, t.w2_bias.size(), E * Hp);
  const layout::ScaleLayout l13{o.gate_mode, true, 2 * Ip, v.w13_scale_cols};
  const layout::ScaleLayout l2{o.gate_mode, false, Hp, v.w2_scale_cols};
  need(names.w13_weight_scale, t.w13_scale.size(), l13.offset(E - 1, 2 * Ip - 1, Hp / 32 - 1) + 1);
  need(names.w2_weight_scale, t.w2_scale.size(), l2.offset(E - 1, Hp - 1, Ip / 32 - 1) + 1);
  if (v.w13_scale_cols < Hp / 32 || v.w2_scale_cols < Ip / 32)
    throw_bad_input(names.w13_weight_scale + ": fewer scale columns than K/32");
  v.w13_weight = t.w13.data();
  v.w13_scale = t.w13_scale.data();
  v.w13_bias = t.w13_bias.data();
  v.w2_weight = t.w2.data();
  v.w2_scale = t.w2_scale.data();
  v.w2_bias = t.w2_bias.data();
  return t;
}

reference::DenseMoeLayer load_source_dense(const io::Checkpoint& src, int64_t layer, const ExpertDims& d) {
  const auto n = models::gpt_oss::source_names(layer);
  auto gu_blocks = copy_as<uint8_t>(src, n.gate_up_blocks, Dtype::U8);
  auto gu_scales = copy_as<uint8_t>(src, n.gate_up_scales, Dtype::U8);
  auto gu_bias = copy_as<uint16_t>(src, n.gate_up_bias, Dtype::BF16);
  auto dn_blocks = copy_as<uint8_t>(src, n.down_blocks, Dtype::U8);
  auto dn_scales = copy_as<uint8_t>(src, n.down_scales, Dtype::U8);
  auto dn_bias = copy_as<uint16_t>(src, n.down_bias, Dtype::BF16);
  return reference::dense_from_gpt_oss_source(gu_blocks.data(), gu_scales.data(), gu_bias.data(), dn_blocks.data(),
                                              dn_scales.data(), dn_bias.data(), d.experts, d.hidden, d.intermediate);
}

std::vector<uint16_t> random_activations(uint64_t seed, int64_t layer, int64_t tokens, int64_t hidden) {
  SplitMix64 rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(layer) * 1000003ull + static_cast<uint64_t>(tokens));
  std::vector<uint16_t> x(static_cast<size_t>(tokens * hidden));
  for (auto& v : x) v = float_to_bf16(static_cast<float>(rng.normal()));
  return x;
}

int64_t routing_mismatches(const reference::Routing& a, const reference::Routing& b) {
  int64_t bad = 0;
  for (int64_t t = 0; t < a.tokens && t < b.tokens; ++t) {
    std::set<int32_t> sa(a.ids.begin() + t * a.top_k, a.ids.begin() + (t + 1) * a.top_k);
    std::set<int32_t> sb(b.ids.begin() + t * b.top_k, b.ids.begin() + (t + 1) * b.top_k);
    if (sa != sb) ++bad;
  }
  return bad;
}

}  // namespace

void check_numerics(const OpenedDestination& dst, const io::Checkpoint& source, const VerifyOptions& options,
                    StageReport& r, std::vector<NumericsRow>& rows, ProgressSink& progress) {
  const Manifest& m = dst.manifest;
  const std::string context = (dst.checkpoint.root() / kManifestFileName).string();
  models::ModelInfo info;
  ExpertDims dims;
  try {
    info = model_from_manifest(m, context);
    dims = dims_from_manifest(m, context);
  } catch (const Error& e) {
    r.fail(e.what());
    r.status = StageStatus::Failed;
    return;
  }
  std::vector<int64_t> layers = options.layers;
  if (layers.empty())
    for (int64_t l = 0; l < info.layers; ++l) layers.push_back(l);
  MoeBackend backend = options.backend ? options.backend : MoeBackend(reference::moe_forward_kernel_layout_cpu);
  progress.start("numerics", layers.size() * options.token_counts.size());
  uint64_t done = 0;
  for (int64_t layer : layers) {
    if (layer < 0 || layer >= info.layers) {
      r.fail("layer " + std::to_string(layer) + " does not exist (the model has " + std::to_string(info.layers) + ")");
      continue;
    }
    const std::string layer_name = models::gpt_oss::experts_prefix(layer) + "* (layer " + std::to_string(layer) + ")";
    try {
      LayerTensors kr = load_kernel_ready(dst.checkpoint, m, layer, context);
      const reference::DenseMoeLayer dense = load_source_dense(source, layer, dims);
      const auto names = models::gpt_oss::source_names(layer);
      const auto router_w = copy_as<uint16_t>(source, names.router_weight, Dtype::BF16);
      std::vector<uint16_t> router_b;
      if (source.try_find(names.router_bias)) router_b = copy_as<uint16_t>(source, names.router_bias, Dtype::BF16);
      const reference::RouterWeights router{router_w.data(), router_b.empty() ? nullptr : router_b.data()};
      for (int64_t tokens : options.token_counts) {
        ++r.checked;
        const auto x = random_activations(options.seed, layer, tokens, dims.hidden);
        const auto ref = reference::moe_forward_reference(dense, router, info.router, info.activation, x.data(), tokens, tokens);
        const auto got = backend(kr.view, router, info.router, info.activation, x.data(), tokens, tokens);
        NumericsRow row;
        row.layer = layer;
        row.tokens = tokens;
        double num = 0, den = 0;
        bool finite = got.out.size() == ref.out.size();
        for (size_t i = 0; finite && i < ref.out.size(); ++i) {
          const double d = static_cast<double>(got.out[i]) - ref.out[i];
          if (!std::isfinite(got.out[i])) finite = false;
          num += d * d;
          den += static_cast<double>(ref.out[i]) * ref.out[i];
        }
        row.rel_err = !finite ? INFINITY : den > 0 ? std::sqrt(num / den) : std::sqrt(num);
        row.routing_mismatches = routing_mismatches(got.routing, ref.routing);
        row.nan_tokens = static_cast<int64_t>(got.routing.nan_tokens.size());
        row.passed = finite && row.rel_err <= options.threshold;
        if (!row.passed) {
          char buf[160];
          std::snprintf(buf, sizeof buf, ": T=%lld relative error %.3e exceeds %.1e (%lld of %lld tokens routed differently)",
                        static_cast<long long>(tokens), row.rel_err, options.threshold,
                        static_cast<long long>(row.routing_mismatches), static_cast<long long>(tokens));
          r.fail(layer_name + buf);
        }
        rows.push_back(row);
        progress.advance(++done, layer_name);
      }
    } catch (const Error& e) {
      r.fail(layer_name + ": " + e.what());
    }
  }
  progress.finish();
  r.status = r.failed ? StageStatus::Failed : StageStatus::Passed;
}

}  // namespace moeprep::plan
