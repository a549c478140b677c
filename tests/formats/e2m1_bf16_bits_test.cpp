// The integer half of the GPU kernels' MXFP4 -> bf16 dequantization (formats/e2m1_bf16_bits.h),
// checked on the CPU against the formats' own decoding, and the decode kernels' shorter form
// against the one the other kernels use.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "formats/bf16.h"
#include "formats/e2m1.h"
#include "formats/e2m1_bf16_bits.h"

using namespace moeprep;

namespace {

uint16_t low_half(uint32_t v) { return static_cast<uint16_t>(v & 0xFFFFu); }
uint16_t high_half(uint32_t v) { return static_cast<uint16_t>(v >> 16); }

// Every code in every nibble: the placed bits read as bf16 are code_value * 2^-126, in the
// half and pair the K permutation expects (low half element 3 - t, high half element 7 - t),
// and the other elements of the word do not leak into them.
TEST(E2m1Bf16Bits, PlacedCodesAreTheCodeValuesTimesTwoToTheMinus126InPermutedOrder) {
  const float two_126 = std::ldexp(1.0f, 126);
  for (int element = 0; element < 8; ++element) {
    for (uint32_t code = 0; code < 16; ++code) {
      for (uint32_t others : {0x00000000u, 0xFFFFFFFFu, 0x7A3C5E91u}) {
        const uint32_t mask = 0xFu << (4 * element);
        const uint32_t q = (others & ~mask) | (code << (4 * element));
        const int t = element < 4 ? 3 - element : 7 - element;
        const uint32_t v = e2m1_bits::pair(q, t);
        const uint16_t half = element < 4 ? low_half(v) : high_half(v);
        const float got = bf16_to_float(half) * two_126;
        const float want = e2m1_to_float(static_cast<uint8_t>(code));
        ASSERT_EQ(got, want) << "element " << element << " code " << code << " others " << std::hex << others;
        ASSERT_EQ(std::signbit(got), std::signbit(want)) << "element " << element << " code " << code;
      }
    }
  }
}

// The decode kernels' four pairs equal pair(q, t). The masks keep each half's bits apart (no
// carry crosses bit 16), so every 16-bit pattern in each half, against a set of patterns in
// the other, covers what the full 2^32 words would.
TEST(E2m1Bf16Bits, LeanPairsEqualThePairsForEveryHalfPattern) {
  const uint32_t partners[] = {0x0000u, 0xFFFFu, 0x8888u, 0x7777u, 0x1234u, 0xFEDCu, 0x0F0Fu, 0xA5A5u};
  int64_t words = 0;
  for (uint32_t h = 0; h <= 0xFFFFu; ++h) {
    for (uint32_t p : partners) {
      for (const uint32_t q : {h | (p << 16), p | (h << 16), h | (h << 16)}) {
        uint32_t lean[4];
        e2m1_bits::pairs_lean(q, lean);
        for (int t = 0; t < 4; ++t) ASSERT_EQ(lean[t], e2m1_bits::pair(q, t)) << std::hex << "word " << q << " pair " << t;
        ++words;
      }
    }
  }
  EXPECT_EQ(words, 65536 * 8 * 3);
}

// low_scale(s) is bf16 2^(s - 1) in both halves for every scale code the one-multiply path
// takes (s <= 128); 2^(s - 127) * code_value then comes from one multiply of the placed bits.
TEST(E2m1Bf16Bits, LowScaleIsTwoToTheSMinusOneInBothHalves) {
  for (uint32_t s = 0; s <= 128; ++s) {
    const uint32_t f = e2m1_bits::low_scale(s);
    EXPECT_EQ(low_half(f), high_half(f)) << "s " << s;
    EXPECT_EQ(bf16_to_float(low_half(f)), std::ldexp(1.0f, static_cast<int>(s) - 1)) << "s " << s;
    EXPECT_EQ(f, ((s + 126u) << 7) * 0x10001u) << "s " << s;
  }
}

}  // namespace
