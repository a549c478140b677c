// Stage 5: run the MoE of each layer on the kernel-ready tensors and compare with a reference
// computed from the source tensors.
#include <cmath>
#include <cstring>
#include <algorithm>
#include <map>
#include <set>

#include "core/error.h"
#include "core/random.h"
#include "formats/bf16.h"
#include "models/adapter.h"
#include "plan/manifest_model.h"
#include "plan/quantized_reference.h"
#include "plan/verify_stages.h"
#include "reference/moe_reference_by_expert.h"

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

io::ByteView bytes_of(const io::Checkpoint& c, const std::string& name) {
  const io::LocatedTensor& t = c.find(name);
  if (t.info->dtype != Dtype::U8)
    throw_bad_input(t.file->path().filename().string() + ": tensor '" + name + "' is " + dtype_name(t.info->dtype) +
                    ", the kernel reads U8");
  return c.data(t);
}

struct LayerTensors {
  // Byte tensors are read in place from the memory map; floats are copied (alignment).
  io::ByteView w13, w13_scale, w2, w2_scale;
  std::vector<float> w13_bias, w2_bias;
  reference::KernelReadyLayer view;
};

// The output names of one layer's kernel-ready tensors, from the manifest: role -> name.
std::map<std::string, std::string> layer_tensor_names(const Manifest& m, int64_t layer) {
  std::map<std::string, std::string> names;
  for (const auto& t : m.tensors)
    if (t.transformed && t.layer == layer) names[t.role] = t.name;
  return names;
}

// The kernel-ready layer; checks that every tensor is at least as large as the addressing of
// the layout will reach, so that a mislabelled tensor fails the check instead of being read
// out of bounds. Models without expert biases get zero biases.
LayerTensors load_kernel_ready(const io::Checkpoint& c, const Manifest& m, int64_t layer, const std::string& context) {
  const auto names = layer_tensor_names(m, layer);
  auto name_of = [&](ExpertRole role) -> std::string {
    auto it = names.find(role_name(role));
    return it == names.end() ? std::string() : it->second;
  };
  for (ExpertRole role : {ExpertRole::W13Weight, ExpertRole::W13Scale, ExpertRole::W2Weight, ExpertRole::W2Scale})
    if (name_of(role).empty())
      throw_bad_input(std::string("the manifest lists no ") + role_name(role) + " for layer " + std::to_string(layer));
  const ExpertDims d = dims_from_manifest(m, context);
  const ConvertOptions o = options_from_manifest(m, context);
  const int64_t E = d.experts, Hp = d.hidden_pad, Ip = d.intermediate_pad;
  const int64_t R = d.w13_rows_pad();  // [gate; up], or the up rows alone (non-gated)
  LayerTensors t;
  t.w13 = bytes_of(c, name_of(ExpertRole::W13Weight));
  t.w13_scale = bytes_of(c, name_of(ExpertRole::W13Scale));
  t.w2 = bytes_of(c, name_of(ExpertRole::W2Weight));
  t.w2_scale = bytes_of(c, name_of(ExpertRole::W2Scale));
  t.w13_bias = name_of(ExpertRole::W13Bias).empty() ? std::vector<float>(static_cast<size_t>(E * R), 0.0f)
                                                    : copy_as<float>(c, name_of(ExpertRole::W13Bias), Dtype::F32);
  t.w2_bias = name_of(ExpertRole::W2Bias).empty() ? std::vector<float>(static_cast<size_t>(E * Hp), 0.0f)
                                                  : copy_as<float>(c, name_of(ExpertRole::W2Bias), Dtype::F32);
  auto& v = t.view;
  v.mode = o.gate_mode;
  v.experts = E;
  v.hidden = d.hidden;
  v.intermediate = d.intermediate;
  v.hidden_pad = Hp;
  v.intermediate_pad = Ip;
  v.gated = d.gated;
  const auto& s13 = c.find(name_of(ExpertRole::W13Scale)).info->shape;
  const auto& s2 = c.find(name_of(ExpertRole::W2Scale)).info->shape;
  if (s13.size() != 2 || s2.size() != 2) throw_bad_input(name_of(ExpertRole::W13Scale) + ": scales must be 2-D");
  v.w13_scale_cols = s13[1];
  v.w2_scale_cols = s2[1];
  auto need = [&](const std::string& name, size_t have, int64_t want) {
    if (static_cast<int64_t>(have) < want)
      throw_bad_input(name + ": " + std::to_string(have) + " elements, the kernel-ready layout needs " +
                      std::to_string(want));
  };
  need(name_of(ExpertRole::W13Weight), t.w13.size, E * R * Hp / 2);
  need(name_of(ExpertRole::W2Weight), t.w2.size, E * Hp * Ip / 2);
  need(name_of(ExpertRole::W13Bias), t.w13_bias.size(), E * R);
  need(name_of(ExpertRole::W2Bias), t.w2_bias.size(), E * Hp);
  if (v.w13_scale_cols < Hp / 32 || v.w2_scale_cols < Ip / 32)
    throw_bad_input(name_of(ExpertRole::W13Scale) + ": fewer scale columns than K/32");
  const layout::ScaleLayout l13{o.gate_mode, d.gated, R, v.w13_scale_cols};
  const layout::ScaleLayout l2{o.gate_mode, false, Hp, v.w2_scale_cols};
  need(name_of(ExpertRole::W13Scale), t.w13_scale.size, l13.offset(E - 1, R - 1, Hp / 32 - 1) + 1);
  need(name_of(ExpertRole::W2Scale), t.w2_scale.size, l2.offset(E - 1, Hp - 1, Ip / 32 - 1) + 1);
  v.w13_weight = t.w13.data;
  v.w13_scale = t.w13_scale.data;
  v.w13_bias = t.w13_bias.data();
  v.w2_weight = t.w2.data;
  v.w2_scale = t.w2_scale.data;
  v.w2_bias = t.w2_bias.data();
  return t;
}

std::vector<uint16_t> random_activations(uint64_t seed, int64_t layer, int64_t tokens, int64_t hidden) {
  SplitMix64 rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(layer) * 1000003ull + static_cast<uint64_t>(tokens));
  std::vector<uint16_t> x(static_cast<size_t>(tokens * hidden));
  for (auto& v : x) v = float_to_bf16(static_cast<float>(rng.normal()));
  return x;
}

// ||got - ref[offset, offset + n)|| / ||ref[...]||, accumulated in double.
double relative_error(const std::vector<float>& got, const std::vector<float>& ref, int64_t offset) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double r = ref[offset + i];
    num += (got[i] - r) * (got[i] - r);
    den += r * r;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
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
  ExpertDims dims;
  int64_t layer_count = 0;
  reference::ActivationParams manifest_act;
  std::unique_ptr<models::ModelAdapter> adapter;
  try {
    dims = dims_from_manifest(m, context);
    const models::ModelInfo recorded = model_from_manifest(m, context);
    layer_count = recorded.layers;
    manifest_act = recorded.activation;
    adapter = models::make_adapter(source);
  } catch (const Error& e) {
    r.fail(e.what());
    r.status = StageStatus::Failed;
    return;
  }
  std::vector<int64_t> layers = options.layers;
  if (layers.empty())
    for (const auto& t : m.tensors)
      if (t.transformed && t.role == "w13_weight") layers.push_back(t.layer);
  std::sort(layers.begin(), layers.end());
  const MoeBackend backend = options.backend ? options.backend : MoeBackend(reference::moe_forward_kernel_layout_cpu);
  // The references run the source's activation (its config.json); the kernel side runs the one
  // the manifest tells a runtime to use, so a manifest naming the wrong activation fails here.
  const reference::ActivationParams act = adapter->info().activation;
  std::vector<models::MoeLayer> source_layers;
  try {
    source_layers = adapter->moe_layers();
  } catch (const Error& e) {
    r.fail(std::string("source: ") + e.what());
    r.status = StageStatus::Failed;
    return;
  }
  progress.start("numerics", layers.size() * options.token_counts.size());
  uint64_t done = 0;
  for (int64_t layer : layers) {
    const auto names = layer_tensor_names(m, layer);
    if (names.empty()) {
      r.fail("layer " + std::to_string(layer) + " has no MoE tensors (the model has " + std::to_string(layer_count) +
             " layers)");
      continue;
    }
    const std::string w13 = names.count("w13_weight") ? names.at("w13_weight") : names.begin()->second;
    const std::string layer_name = w13.substr(0, w13.rfind('.') + 1) + "* (layer " + std::to_string(layer) + ")";
    try {
      LayerTensors kr = load_kernel_ready(dst.checkpoint, m, layer, context);
      // The router (weights and per-layer parameters) from the source.
      const models::LayerReference routing_only = adapter->layer_router(layer);
      const reference::RouterWeights router{routing_only.router_weight.data(),
                                            routing_only.router_bias.empty() ? nullptr : routing_only.router_bias.data()};
      // One reference pass over all token counts together (tokens are independent), computed
      // expert by expert so that only a few experts' dense weights are in memory at once.
      std::vector<uint16_t> x_all;
      std::vector<int64_t> first_token;
      for (int64_t tokens : options.token_counts) {
        first_token.push_back(static_cast<int64_t>(x_all.size()) / dims.hidden);
        const auto x = random_activations(options.seed, layer, tokens, dims.hidden);
        x_all.insert(x_all.end(), x.begin(), x.end());
      }
      const int64_t total_tokens = static_cast<int64_t>(x_all.size()) / dims.hidden;
      const reference::ExpertwiseShape shape{dims.experts, dims.hidden, dims.intermediate};
      const models::MoeLayer* source_layer = nullptr;
      for (const auto& l : source_layers)
        if (l.layer == layer) source_layer = &l;
      if (!source_layer) throw_bad_input("the source's adapter has no MoE layer " + std::to_string(layer));
      bool quantized = false;
      for (const auto& [role, cs] : source_layer->sources) quantized = quantized || !cs.transform.empty();
      // Primary reference: the MXFP4 weights as convert made them, dequantized exactly.
      const auto load_canonical = [&](int32_t e) {
        return dense_expert_from_canonical(source, *source_layer, dims.experts, dims.hidden, dims.intermediate, e);
      };
      const auto ref_all = reference::moe_forward_reference_by_expert(shape, load_canonical, router, routing_only.router,
                                                                      act, x_all.data(), total_tokens, total_tokens,
                                                                      options.reference_threads);
      // Second reference for quantized sources: the unquantized source weights.
      reference::MoeOutput source_all;
      if (quantized) {
        const auto load_source = [&](int32_t e) { return adapter->layer_reference(layer, {e}).dense; };
        source_all = reference::moe_forward_reference_by_expert(shape, load_source, router, routing_only.router, act,
                                                                x_all.data(), total_tokens, total_tokens,
                                                                options.reference_threads);
      }
      for (size_t ti = 0; ti < options.token_counts.size(); ++ti) {
        const int64_t tokens = options.token_counts[ti];
        const int64_t first = first_token[ti];
        const uint16_t* x = x_all.data() + first * dims.hidden;
        ++r.checked;
        const auto got = backend(kr.view, router, routing_only.router, manifest_act, x, tokens, tokens);
        NumericsRow row;
        row.layer = layer;
        row.tokens = tokens;
        bool finite = got.out.size() == static_cast<size_t>(tokens * dims.hidden);
        for (size_t i = 0; finite && i < got.out.size(); ++i) finite = std::isfinite(got.out[i]);
        row.rel_err = finite ? relative_error(got.out, ref_all.out, first * dims.hidden) : INFINITY;
        if (quantized) row.rel_err_source = finite ? relative_error(got.out, source_all.out, first * dims.hidden) : INFINITY;
        reference::Routing ref_routing;
        ref_routing.tokens = tokens;
        ref_routing.top_k = ref_all.routing.top_k;
        ref_routing.ids.assign(ref_all.routing.ids.begin() + first * ref_all.routing.top_k,
                               ref_all.routing.ids.begin() + (first + tokens) * ref_all.routing.top_k);
        row.routing_mismatches = routing_mismatches(got.routing, ref_routing);
        row.nan_tokens = static_cast<int64_t>(got.routing.nan_tokens.size());
        const bool kernel_ok = finite && row.rel_err <= options.threshold;
        const bool source_ok = !quantized || row.rel_err_source <= options.source_threshold;
        row.passed = kernel_ok && source_ok;
        char buf[200];
        if (!kernel_ok) {
          std::snprintf(buf, sizeof buf, ": T=%lld relative error %.3e exceeds %.1e (%lld of %lld tokens routed differently)",
                        static_cast<long long>(tokens), row.rel_err, options.threshold,
                        static_cast<long long>(row.routing_mismatches), static_cast<long long>(tokens));
          r.fail(layer_name + buf);
        } else if (!source_ok) {
          std::snprintf(buf, sizeof buf, ": T=%lld relative error against the unquantized source %.3e exceeds %.2f",
                        static_cast<long long>(tokens), row.rel_err_source, options.source_threshold);
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
