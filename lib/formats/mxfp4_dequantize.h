#pragma once
#include <cstdint>
#include <string>

namespace moeprep {

// Exact MXFP4 dequantization: element = e2m1(code) * 2^(scale - 127), codes packed as in
// quantize_mxfp4_rows (rows x k/2 bytes, element 2b in the low nibble of byte b), scales
// rows x k/32 E8M0 bytes, out rows x k floats. Every such product is a float exactly
// (two significant bits times a power of two in [2^-127, 2^127]) unless it exceeds the float
// range, which only scale codes 253 and 254 with large codes can do.
// Throws BadInput, naming `context`, the row and the block, for the NaN scale code 255 and
// for a product that overflows float32; and for K not a multiple of 32.
void dequantize_mxfp4_rows(const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t k,
                           float* out, const std::string& context = "MXFP4 tensor");

}  // namespace moeprep
