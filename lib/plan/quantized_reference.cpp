#include "plan/quantized_reference.h"

#include "core/error.h"
#include "formats/bf16.h"
#include "formats/mxfp4_dequantize.h"

namespace moeprep::plan {
namespace {

// Expert e of a canonical source: assembled, or sliced from the one tensor it is.
ByteTensor expert_slice(const io::Checkpoint& source, const models::CanonicalSource& cs, int64_t experts, int32_t e) {
  if (!cs.transform.empty()) return cs.assemble(e, 1);
  const io::LocatedTensor& loc = source.find(cs.tensors.front());
  const io::ByteView b = source.data(loc);
  const uint64_t per = b.size / static_cast<uint64_t>(experts);
  Shape shape = cs.shape;
  shape[0] = 1;
  return ByteTensor{cs.dtype, shape, std::vector<uint8_t>(b.data + per * e, b.data + per * (e + 1))};
}

std::vector<float> dequantized(const io::Checkpoint& source, const models::MoeLayer& layer, models::Role weight,
                               models::Role scale, int64_t experts, int32_t e, int64_t rows, int64_t k) {
  const ByteTensor codes = expert_slice(source, layer.sources.at(weight), experts, e);
  const ByteTensor scales = expert_slice(source, layer.sources.at(scale), experts, e);
  std::vector<float> out(static_cast<size_t>(rows * k));
  dequantize_mxfp4_rows(codes.bytes.data(), scales.bytes.data(), rows, k, out.data(),
                        layer.output_prefix + " expert " + std::to_string(e));
  return out;
}

std::vector<float> bias(const io::Checkpoint& source, const models::MoeLayer& layer, models::Role role,
                        int64_t experts, int32_t e, int64_t n) {
  auto it = layer.sources.find(role);
  if (it == layer.sources.end()) return std::vector<float>(static_cast<size_t>(n), 0.0f);
  const ByteTensor b = expert_slice(source, it->second, experts, e);
  if (b.dtype != Dtype::BF16 || static_cast<int64_t>(b.bytes.size()) != 2 * n)
    throw_internal(layer.output_prefix + ": canonical bias is not BF16 [" + std::to_string(n) + "]");
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(static_cast<uint16_t>(b.bytes[2 * i] | (b.bytes[2 * i + 1] << 8)));
  return out;
}

}  // namespace

reference::DenseMoeLayer dense_expert_from_canonical(const io::Checkpoint& source, const models::MoeLayer& layer,
                                                     int64_t experts, int64_t hidden, int64_t intermediate, int32_t e) {
  using models::Role;
  reference::DenseMoeLayer d;
  d.experts = experts;
  d.hidden = hidden;
  d.intermediate = intermediate;
  d.gate_up_interleaved = layer.gate_up_interleaved;
  // w13's rows as the canonical source has them: [gate; up] (2I), or up only (I, non-gated).
  const int64_t rows13 = layer.sources.at(Role::W13Weight).shape.at(1);
  d.w13 = dequantized(source, layer, Role::W13Weight, Role::W13Scale, experts, e, rows13, hidden);
  d.w2 = dequantized(source, layer, Role::W2Weight, Role::W2Scale, experts, e, hidden, intermediate);
  d.b13 = bias(source, layer, Role::W13Bias, experts, e, rows13);
  d.b2 = bias(source, layer, Role::W2Bias, experts, e, hidden);
  d.slot.assign(static_cast<size_t>(experts), -1);
  d.slot[e] = 0;
  return d;
}

}  // namespace moeprep::plan
