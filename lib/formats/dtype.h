#pragma once
#include <cstdint>
#include <optional>
#include <string_view>

namespace moeprep {

// The safetensors dtype vocabulary (huggingface/safetensors `Dtype`, current release).
enum class Dtype {
  BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ,
  I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64,
};

std::optional<Dtype> dtype_from_name(std::string_view name);
const char* dtype_name(Dtype dtype);

// Bits per element. Sub-byte dtypes pack densely: F4 two elements per byte (first element in
// the low nibble), F6_* four elements in three bytes; a tensor of them must hold a whole
// number of bytes (the reference's "misaligned slice" rule).
int dtype_bits(Dtype dtype);

// Byte length of `numel` elements; nullopt when the bit count does not end on a byte
// boundary or overflows.
std::optional<int64_t> dtype_byte_length(Dtype dtype, int64_t numel);

}  // namespace moeprep
