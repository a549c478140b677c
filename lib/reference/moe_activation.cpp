#include <algorithm>
#include <cmath>

#include "reference/moe.h"

namespace moeprep::reference {

template <typename Real>
Real moe_activation(const ActivationParams& act, Real gate, Real up) {
  if (act.kind == Activation::SiluGated) return gate / (Real(1) + std::exp(-gate)) * up;
  const Real limit = static_cast<Real>(act.limit), alpha = static_cast<Real>(act.alpha);
  gate = std::min(gate, limit);
  up = std::max(std::min(up, limit), -limit);
  return gate / (Real(1) + std::exp(-alpha * gate)) * (up + Real(1));
}

template float moe_activation<float>(const ActivationParams&, float, float);
template double moe_activation<double>(const ActivationParams&, double, double);

}  // namespace moeprep::reference
