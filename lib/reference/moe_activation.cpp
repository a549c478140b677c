#include <algorithm>
#include <cmath>

#include "reference/moe.h"

namespace moeprep::reference {

template <typename Real>
Real moe_activation(const ActivationParams& act, Real gate, Real up) {
  switch (act.kind) {
    case Activation::SiluGated:
      return gate / (Real(1) + std::exp(-gate)) * up;
    case Activation::GeluTanhGated: {
      // PyTorch's gelu(approximate='tanh'); the constant is sqrt(2/pi).
      const Real c = static_cast<Real>(0.79788456080286535588);
      return Real(0.5) * gate * (Real(1) + std::tanh(c * (gate + Real(0.044715) * gate * gate * gate))) * up;
    }
    case Activation::GeluGated:
      return Real(0.5) * gate * (Real(1) + std::erf(gate * static_cast<Real>(0.70710678118654752440))) * up;
    case Activation::Relu2: {
      const Real r = std::max(up, Real(0));
      return r * r;
    }
    case Activation::GptOssClampedSwiglu:
      break;
  }
  const Real limit = static_cast<Real>(act.limit), alpha = static_cast<Real>(act.alpha);
  gate = std::min(gate, limit);
  up = std::max(std::min(up, limit), -limit);
  return gate / (Real(1) + std::exp(-alpha * gate)) * (up + Real(1));
}

template float moe_activation<float>(const ActivationParams&, float, float);
template double moe_activation<double>(const ActivationParams&, double, double);

}  // namespace moeprep::reference
