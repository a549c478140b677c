#include <string>
#include <vector>

#include "core/error.h"
#include "formats/bf16.h"
#include "reference/moe.h"

namespace moeprep::reference {

std::vector<float> router_logits(const RouterWeights& router, const uint16_t* x, int64_t tokens, int64_t experts,
                                 int64_t hidden) {
  if (tokens < 0 || experts <= 0 || hidden <= 0) {
    throw_bad_input("router_logits: bad sizes tokens=" + std::to_string(tokens) + " experts=" +
                    std::to_string(experts) + " hidden=" + std::to_string(hidden));
  }
  if (router.weight == nullptr) throw_bad_input("router_logits: router weight is missing");
  std::vector<float> logits(static_cast<size_t>(tokens * experts));
  // x and W as doubles once, so the T*E dot products are plain double loops.
  std::vector<double> w(static_cast<size_t>(experts * hidden));
  for (size_t i = 0; i < w.size(); ++i) w[i] = bf16_to_float(router.weight[i]);
  std::vector<double> row(static_cast<size_t>(hidden));
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < hidden; ++h) row[h] = bf16_to_float(x[t * hidden + h]);
    for (int64_t e = 0; e < experts; ++e) {
      const double* we = w.data() + e * hidden;
      double acc = router.bias ? bf16_to_float(router.bias[e]) : 0.0;
      for (int64_t h = 0; h < hidden; ++h) acc += row[h] * we[h];
      logits[t * experts + e] = static_cast<float>(acc);
    }
  }
  return logits;
}

}  // namespace moeprep::reference
