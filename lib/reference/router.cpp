#include "reference/router.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "reference/topk_key.h"

namespace moeprep::reference {
namespace {

struct VariantName {
  RouterVariant variant;
  const char* name;
};
constexpr VariantName kVariantNames[] = {
    {RouterVariant::SoftmaxAfterTopk, "softmax_after_topk"},
    {RouterVariant::SoftmaxThenTopk, "softmax_then_topk"},
    {RouterVariant::SigmoidGroupedBiased, "sigmoid_grouped_biased"},
    {RouterVariant::Gemma4, "gemma4"},
};

// Indices of the k largest scores among the eligible experts, largest first; equal scores go to
// the lower index. Plain double comparisons, deliberately not the packed keys the GPU uses, so
// that the reference checks the kernel's key packing rather than sharing it.
std::vector<int64_t> top_k_indices(const std::vector<double>& scores, const std::vector<char>& eligible, int k) {
  std::vector<int64_t> candidates;
  for (int64_t e = 0; e < static_cast<int64_t>(scores.size()); ++e) {
    if (eligible.empty() || eligible[e]) candidates.push_back(e);
  }
  auto better = [&](int64_t a, int64_t b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a < b); };
  std::partial_sort(candidates.begin(), candidates.begin() + k, candidates.end(), better);
  candidates.resize(k);
  return candidates;
}

// exp(x - max), where x == max gives exactly 1: a row whose maximum is +inf then shares the
// weight among its +inf entries instead of producing inf - inf = NaN. The GPU kernel keeps the
// same rule.
double shifted_exp(double x, double max) { return x == max ? 1.0 : std::exp(x - max); }

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Weights of the picked experts, in the order of `ids`; `row` holds one token's logits.
std::vector<double> softmax_after_topk(const std::vector<double>& row, const std::vector<int64_t>& ids) {
  double max = row[ids[0]];  // ids come largest first
  std::vector<double> w(ids.size());
  double sum = 0;
  for (size_t i = 0; i < ids.size(); ++i) sum += (w[i] = shifted_exp(row[ids[i]], max));
  for (double& x : w) x /= sum;
  return w;
}

// Kept groups of sigmoid_grouped_biased as an eligibility mask over the experts: each group is
// scored by the sum of its two largest choice scores, and the topk_group best groups survive
// (equal group scores: lower group index).
std::vector<char> kept_group_experts(const std::vector<double>& choice, const RouterConfig& c) {
  const int64_t experts = static_cast<int64_t>(choice.size());
  const int64_t group_size = experts / c.n_group;
  const int64_t summed = std::min<int64_t>(2, group_size);
  std::vector<double> group_score(c.n_group);
  for (int g = 0; g < c.n_group; ++g) {
    std::vector<double> members(choice.begin() + g * group_size, choice.begin() + (g + 1) * group_size);
    std::partial_sort(members.begin(), members.begin() + summed, members.end(), std::greater<double>());
    group_score[g] = std::accumulate(members.begin(), members.begin() + summed, 0.0);
  }
  std::vector<int64_t> groups = top_k_indices(group_score, {}, c.topk_group);
  std::vector<char> eligible(experts, 0);
  for (int64_t g : groups) std::fill(eligible.begin() + g * group_size, eligible.begin() + (g + 1) * group_size, 1);
  return eligible;
}

void route_token(const std::vector<double>& row, const RouterConfig& c, int32_t* ids_out, float* weights_out) {
  const int64_t experts = static_cast<int64_t>(row.size());
  std::vector<int64_t> ids;
  std::vector<double> w;
  switch (c.variant) {
    case RouterVariant::SoftmaxAfterTopk:
    case RouterVariant::Gemma4:
      ids = top_k_indices(row, {}, c.top_k);
      w = softmax_after_topk(row, ids);
      if (c.variant == RouterVariant::Gemma4 && !c.per_expert_scale.empty()) {
        for (size_t i = 0; i < ids.size(); ++i) w[i] *= c.per_expert_scale[ids[i]];
      }
      break;
    case RouterVariant::SoftmaxThenTopk: {
      // softmax is monotone, so the top-k of p are the top-k of the logits; ranking the logits
      // keeps the tie rule exact where exp() would round distinct logits to equal p.
      double max = *std::max_element(row.begin(), row.end());
      double z = 0;
      for (double x : row) z += shifted_exp(x, max);
      ids = top_k_indices(row, {}, c.top_k);
      for (int64_t id : ids) w.push_back(shifted_exp(row[id], max) / z);
      if (c.renormalize) {
        double sum = std::accumulate(w.begin(), w.end(), 0.0);
        for (double& x : w) x /= sum;
      }
      break;
    }
    case RouterVariant::SigmoidGroupedBiased: {
      std::vector<double> s(experts), choice(experts);
      for (int64_t e = 0; e < experts; ++e) {
        s[e] = sigmoid(row[e]);
        choice[e] = s[e] + (c.correction_bias.empty() ? 0.0 : static_cast<double>(c.correction_bias[e]));
      }
      std::vector<char> eligible;
      if (c.n_group > 1) eligible = kept_group_experts(choice, c);
      ids = top_k_indices(choice, eligible, c.top_k);
      for (int64_t id : ids) w.push_back(s[id]);  // the bias steers the choice only
      if (c.renormalize) {
        double sum = std::accumulate(w.begin(), w.end(), 0.0);
        for (double& x : w) x /= sum + 1e-20;
      }
      for (double& x : w) x *= c.routed_scaling_factor;
      break;
    }
  }
  for (int i = 0; i < c.top_k; ++i) {
    ids_out[i] = static_cast<int32_t>(ids[i]);
    weights_out[i] = static_cast<float>(w[i]);
  }
}

}  // namespace

const char* router_variant_name(RouterVariant v) {
  for (const auto& entry : kVariantNames) {
    if (entry.variant == v) return entry.name;
  }
  return "unknown";
}

RouterVariant router_variant_from_name(const std::string& name) {
  for (const auto& entry : kVariantNames) {
    if (name == entry.name) return entry.variant;
  }
  throw_bad_input("router variant '" + name +
                  "' is unknown (expected softmax_after_topk, softmax_then_topk, sigmoid_grouped_biased or gemma4)");
}

nlohmann::ordered_json RouterConfig::to_json() const {
  nlohmann::ordered_json j;
  j["variant"] = router_variant_name(variant);
  j["top_k"] = top_k;
  j["renormalize"] = renormalize;
  j["n_group"] = n_group;
  j["topk_group"] = topk_group;
  j["routed_scaling_factor"] = routed_scaling_factor;
  if (!correction_bias.empty()) j["correction_bias"] = correction_bias;
  if (!per_expert_scale.empty()) j["per_expert_scale"] = per_expert_scale;
  return j;
}

namespace {

template <typename T>
T json_field(const nlohmann::json& j, const char* key, bool (nlohmann::json::*is_type)() const, const char* type_name) {
  const auto& v = j.at(key);
  if (!(v.*is_type)()) {
    throw_bad_input(std::string("router config: '") + key + "' must be " + type_name + ", got " + v.dump());
  }
  return v.get<T>();
}

std::vector<float> json_float_vector(const nlohmann::json& j, const char* key) {
  const auto& v = j.at(key);
  if (!v.is_array()) throw_bad_input(std::string("router config: '") + key + "' must be an array of numbers");
  std::vector<float> out;
  for (const auto& x : v) {
    if (!x.is_number()) {
      throw_bad_input(std::string("router config: '") + key + "' holds a non-number element " + x.dump());
    }
    out.push_back(x.get<float>());
  }
  return out;
}

}  // namespace

RouterConfig RouterConfig::from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw_bad_input("router config: expected a JSON object, got " + j.dump());
  static const char* const known[] = {"variant",    "top_k",    "renormalize", "n_group", "topk_group",
                                      "routed_scaling_factor", "correction_bias", "per_expert_scale"};
  for (const auto& item : j.items()) {
    if (std::find_if(std::begin(known), std::end(known), [&](const char* k) { return item.key() == k; }) ==
        std::end(known)) {
      throw_bad_input("router config: unknown key '" + item.key() + "'");
    }
  }
  for (const char* required : {"variant", "top_k"}) {
    if (!j.contains(required)) throw_bad_input(std::string("router config: missing key '") + required + "'");
  }
  RouterConfig c;
  c.variant = router_variant_from_name(json_field<std::string>(j, "variant", &nlohmann::json::is_string, "a string"));
  c.top_k = json_field<int>(j, "top_k", &nlohmann::json::is_number_integer, "an integer");
  if (j.contains("renormalize")) {
    c.renormalize = json_field<bool>(j, "renormalize", &nlohmann::json::is_boolean, "a boolean");
  }
  if (j.contains("n_group")) c.n_group = json_field<int>(j, "n_group", &nlohmann::json::is_number_integer, "an integer");
  if (j.contains("topk_group")) {
    c.topk_group = json_field<int>(j, "topk_group", &nlohmann::json::is_number_integer, "an integer");
  }
  if (j.contains("routed_scaling_factor")) {
    c.routed_scaling_factor =
        json_field<double>(j, "routed_scaling_factor", &nlohmann::json::is_number, "a number");
  }
  if (j.contains("correction_bias")) c.correction_bias = json_float_vector(j, "correction_bias");
  if (j.contains("per_expert_scale")) c.per_expert_scale = json_float_vector(j, "per_expert_scale");
  return c;
}

void validate_router_config(const RouterConfig& c, int64_t experts) {
  const std::string where = std::string("router config (") + router_variant_name(c.variant) + ", " +
                            std::to_string(experts) + " experts): ";
  if (experts < 1) throw_bad_input(where + "the number of experts must be at least 1");
  if (c.top_k < 1 || c.top_k > experts) {
    throw_bad_input(where + "top_k " + std::to_string(c.top_k) + " is outside [1, " + std::to_string(experts) + "]");
  }
  if (!c.correction_bias.empty() && static_cast<int64_t>(c.correction_bias.size()) != experts) {
    throw_bad_input(where + "correction_bias has " + std::to_string(c.correction_bias.size()) +
                    " entries, expected one per expert");
  }
  if (!c.per_expert_scale.empty() && static_cast<int64_t>(c.per_expert_scale.size()) != experts) {
    throw_bad_input(where + "per_expert_scale has " + std::to_string(c.per_expert_scale.size()) +
                    " entries, expected one per expert");
  }
  if (!std::isfinite(c.routed_scaling_factor)) {
    throw_bad_input(where + "routed_scaling_factor must be finite");
  }
  if (c.variant != RouterVariant::SigmoidGroupedBiased) return;
  if (c.n_group < 1 || experts % c.n_group != 0) {
    throw_bad_input(where + "n_group " + std::to_string(c.n_group) + " does not divide the experts into equal groups");
  }
  if (c.topk_group < 1 || c.topk_group > c.n_group) {
    throw_bad_input(where + "topk_group " + std::to_string(c.topk_group) + " is outside [1, n_group = " +
                    std::to_string(c.n_group) + "]");
  }
  const int64_t reachable = static_cast<int64_t>(c.topk_group) * (experts / c.n_group);
  if (c.top_k > reachable) {
    throw_bad_input(where + "top_k " + std::to_string(c.top_k) + " exceeds the " + std::to_string(reachable) +
                    " experts in the topk_group kept groups");
  }
}

Routing route(const float* logits, int64_t tokens, int64_t experts, const RouterConfig& config) {
  validate_router_config(config, experts);
  if (tokens < 0) throw_bad_input("router: negative token count " + std::to_string(tokens));
  if (tokens > 0 && logits == nullptr) throw_bad_input("router: logits pointer is null");
  Routing r;
  r.tokens = tokens;
  r.top_k = config.top_k;
  r.ids.assign(static_cast<size_t>(tokens * config.top_k), -1);
  r.weights.assign(r.ids.size(), 0.0f);
  std::vector<double> row(experts);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* in = logits + t * experts;
    bool has_nan = false;
    for (int64_t e = 0; e < experts; ++e) {
      has_nan |= std::isnan(in[e]);
      row[e] = in[e];
    }
    if (has_nan) {
      r.nan_tokens.push_back(t);  // ids stay -1, weights 0
      continue;
    }
    route_token(row, config, &r.ids[t * config.top_k], &r.weights[t * config.top_k]);
  }
  return r;
}

std::vector<float> routing_to_dense(const Routing& r, int64_t experts) {
  std::vector<float> dense(static_cast<size_t>(r.tokens * experts), 0.0f);
  for (int64_t t = 0; t < r.tokens; ++t) {
    for (int i = 0; i < r.top_k; ++i) {
      int32_t id = r.ids[t * r.top_k + i];
      if (id < 0) continue;  // a NaN or padded token: no pick
      if (id >= experts) {
        throw_bad_input("routing: token " + std::to_string(t) + " picks expert " + std::to_string(id) + " of " +
                        std::to_string(experts));
      }
      // Summed, not assigned: an id picked twice shows up as a wrong weight.
      dense[t * experts + id] += r.weights[t * r.top_k + i];
    }
  }
  return dense;
}

uint32_t monotone_float_key(float v) { return float_order_key(v); }

}  // namespace moeprep::reference
