#include "reference/moe_routing.h"

#include <string>

#include "core/error.h"

namespace moeprep::reference {

void check_token_counts(int64_t tokens, int64_t valid_tokens) {
  if (valid_tokens < 0 || valid_tokens > tokens) {
    throw_bad_input("moe: valid_tokens " + std::to_string(valid_tokens) + " outside [0, tokens=" +
                    std::to_string(tokens) + "]");
  }
}

Routing route_with_padding(const std::vector<float>& logits, int64_t tokens, int64_t valid_tokens, int64_t experts,
                           const RouterConfig& config) {
  check_token_counts(tokens, valid_tokens);
  if (config.top_k < 1 || config.top_k > experts) {
    throw_bad_input("moe: top_k " + std::to_string(config.top_k) + " outside [1, experts=" +
                    std::to_string(experts) + "]");
  }
  Routing r = route(logits.data(), valid_tokens, experts, config);
  r.tokens = tokens;
  r.top_k = config.top_k;
  r.ids.resize(static_cast<size_t>(tokens * config.top_k), -1);
  r.weights.resize(static_cast<size_t>(tokens * config.top_k), 0.0f);
  return r;
}

}  // namespace moeprep::reference
