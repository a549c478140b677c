#include "layout/byte_permutation_step.h"

#include "core/error.h"
#include "layout/step_support.h"

namespace moeprep::layout::detail {

Shape BytePermutationStep::output_shape(const Shape& in) const {
  tile_view(in);
  return in;
}

Dtype BytePermutationStep::output_dtype(Dtype in) const {
  if (dtype_bits(in) != 8) throw_bad_input(label() + ": dtype " + dtype_name(in) + " is not a byte dtype (U8)");
  return in;
}

ByteTensor BytePermutationStep::apply(const ByteTensor& in) const {
  output_dtype(in.dtype);
  check_tensor_bytes(in, label());
  ByteTensor out{in.dtype, in.shape, std::vector<uint8_t>(in.bytes.size())};
  permute_bytes(in.bytes.data(), out.bytes.data(), tile_view(in.shape), order(), 1);
  return out;
}

ByteTensor BytePermutationStep::undo(const ByteTensor& out, const Shape& in_shape, Dtype in_dtype) const {
  check_undo_input(*this, label(), out, in_shape, in_dtype);
  ByteTensor in{in_dtype, in_shape, std::vector<uint8_t>(out.bytes.size())};
  unpermute_bytes(out.bytes.data(), in.bytes.data(), tile_view(in_shape), order(), 1);
  return in;
}

void BytePermutationStep::reject(const std::string& why) const { throw_bad_input(label() + ": " + why); }

}  // namespace moeprep::layout::detail
