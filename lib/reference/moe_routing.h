#pragma once
// Routing shared by the two CPU MoE paths: the valid tokens go through reference::route, the
// padding rows get ids -1 and weights 0 (what the GPU router writes for them).
#include <cstdint>
#include <vector>

#include "reference/router.h"

namespace moeprep::reference {

// Throws BadInput unless 0 <= valid_tokens <= tokens.
void check_token_counts(int64_t tokens, int64_t valid_tokens);

Routing route_with_padding(const std::vector<float>& logits, int64_t tokens, int64_t valid_tokens, int64_t experts,
                           const RouterConfig& config);

}  // namespace moeprep::reference
