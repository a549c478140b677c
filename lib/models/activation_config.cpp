#include "models/activation_config.h"

namespace moeprep::models {
namespace {

using reference::Activation;

struct NamedActivation {
  const char* name;
  Activation kind;
};

// transformers' ACT2FN names whose formula is the one moeprep computes (activations.py):
//  silu, swish: x sigmoid(x);
//  gelu_pytorch_tanh (F.gelu approximate='tanh'), gelu_new, gelu_accurate: the tanh form with
//  sqrt(2/pi); gelu_fast writes it as tanh(x 0.7978845608 (1 + 0.044715 x^2)), the same
//  polynomial with sqrt(2/pi) rounded to 10 digits (a 4e-12 relative difference, far below
//  float precision);
//  gelu (F.gelu), gelu_python: the exact erf form.
// Deliberately absent: quick_gelu (x sigmoid(1.702 x)), gelu_10 (clipped), relu2 and others.
constexpr NamedActivation kHfNames[] = {
    {"silu", Activation::SiluGated},
    {"swish", Activation::SiluGated},
    {"gelu_pytorch_tanh", Activation::GeluTanhGated},
    {"gelu_new", Activation::GeluTanhGated},
    {"gelu_fast", Activation::GeluTanhGated},
    {"gelu_accurate", Activation::GeluTanhGated},
    {"gelu", Activation::GeluGated},
    {"gelu_python", Activation::GeluGated},
};

constexpr NamedActivation kKindNames[] = {
    {"gpt_oss_clamped_swiglu", Activation::GptOssClampedSwiglu},
    {"silu_gated", Activation::SiluGated},
    {"gelu_tanh_gated", Activation::GeluTanhGated},
    {"gelu_gated", Activation::GeluGated},
    {"relu2", Activation::Relu2},
};

std::string supported_names() {
  std::string out;
  for (const auto& n : kHfNames) out += (out.empty() ? "" : ", ") + std::string(n.name);
  return out;
}

}  // namespace

std::optional<Activation> gated_activation_for(const std::string& hf_name) {
  for (const auto& n : kHfNames)
    if (hf_name == n.name) return n.kind;
  return std::nullopt;
}

Activation read_gated_activation(const ConfigReader& cfg, const char* key, const std::string& fallback,
                                 const std::string& family_label) {
  const std::string name = cfg.string_or(key, fallback);
  if (auto kind = gated_activation_for(name)) return *kind;
  // relu2 is moeprep's only non-gated activation: its experts have no gate rows, so a gated
  // family's gate_proj/up_proj layout cannot carry it.
  const std::string why = name == "relu2"
                              ? "non-gated relu^2 experts (Nemotron-H) are not supported for " + family_label +
                                    "'s gated experts"
                              : "not an expert activation moeprep implements for " + family_label;
  cfg.fail(key, "is '" + name + "': " + why + " (supported: " + supported_names() + ")");
}

Activation read_non_gated_activation(const ConfigReader& cfg, const char* key, const std::string& fallback,
                                    const std::string& family_label) {
  const std::string name = cfg.string_or(key, fallback);
  if (name == "relu2") return Activation::Relu2;
  const std::string why = gated_activation_for(name)
                              ? "a gated activation, but " + family_label + " experts have no gate projection"
                              : "not an expert activation moeprep implements for " + family_label;
  cfg.fail(key, "is '" + name + "': " + why + " (supported: relu2)");
}

const char* activation_kind_name(Activation kind) {
  for (const auto& n : kKindNames)
    if (kind == n.kind) return n.name;
  return "unknown";
}

std::optional<Activation> activation_from_kind_name(const std::string& name) {
  for (const auto& n : kKindNames)
    if (name == n.name) return n.kind;
  return std::nullopt;
}

}  // namespace moeprep::models
