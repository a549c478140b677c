#pragma once
// Router configurations and the CPU reference router (double precision). Semantics:
// ../shared/spec/routers.md. Ties go to the lower expert index; NaN logits make a token an
// error (counted and reported), never a pick.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moeprep::reference {

enum class RouterVariant { SoftmaxAfterTopk, SoftmaxThenTopk, SigmoidGroupedBiased, Gemma4 };

const char* router_variant_name(RouterVariant v);  // "softmax_after_topk", ...
RouterVariant router_variant_from_name(const std::string& name);  // throws BadInput

struct RouterConfig {
  RouterVariant variant = RouterVariant::SoftmaxAfterTopk;
  int top_k = 1;
  bool renormalize = false;              // softmax_then_topk, sigmoid_grouped_biased
  int n_group = 1;                       // sigmoid_grouped_biased
  int topk_group = 1;                    // sigmoid_grouped_biased
  double routed_scaling_factor = 1.0;    // sigmoid_grouped_biased: folded into the weights
  std::vector<float> correction_bias;    // sigmoid_grouped_biased, [E] (choice only)
  std::vector<float> per_expert_scale;   // gemma4, [E]

  nlohmann::ordered_json to_json() const;   // recorded in the manifest
  static RouterConfig from_json(const nlohmann::json& j);
};

struct Routing {
  int64_t tokens = 0;
  int top_k = 0;
  std::vector<int32_t> ids;       // [T, k]; -1 for a token with NaN logits
  std::vector<float> weights;     // [T, k]; 0 for such a token
  std::vector<int64_t> nan_tokens;  // tokens whose logits held a NaN
};

// Throws BadInput naming the parameter when `config` cannot route E = `experts` experts
// (top_k outside [1, E], groups that do not divide E, bias/scale vectors of the wrong length, ...).
void validate_router_config(const RouterConfig& config, int64_t experts);

// logits: [T, E] row-major fp32.
Routing route(const float* logits, int64_t tokens, int64_t experts, const RouterConfig& config);

// Scatter (id, weight) pairs into a dense [T, E] matrix: the order-insensitive comparison form.
std::vector<float> routing_to_dense(const Routing& r, int64_t experts);

// The monotone float -> unsigned map used to pack (value, index) keys: flips all bits of a
// negative float and only the sign bit of a non-negative one, so that unsigned order equals
// float order over the whole range.
uint32_t monotone_float_key(float v);

}  // namespace moeprep::reference
