#include "formats/bf16_transpose.h"

#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace moeprep {
namespace {

void transpose_scalar(const uint8_t* src, int64_t src_stride, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                      uint16_t* dst, int64_t dst_stride) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = c0; c < c1; ++c) {
      uint16_t v;
      std::memcpy(&v, src + (r * src_stride + c) * 2, 2);
      dst[c * dst_stride + r] = v;
    }
}

#if defined(__SSE2__)
// One 8 x 8 tile by three rounds of interleaving (16-, 32-, then 64-bit pairs): 24 unpacks for
// 128 bytes, where the element loop it replaced took a load and a store per 2 bytes.
void transpose_8x8(const uint8_t* src, int64_t src_stride_bytes, uint16_t* dst, int64_t dst_stride) {
  __m128i r[8];
  for (int i = 0; i < 8; ++i)
    r[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * src_stride_bytes));
  const __m128i a0 = _mm_unpacklo_epi16(r[0], r[1]), a1 = _mm_unpackhi_epi16(r[0], r[1]);
  const __m128i a2 = _mm_unpacklo_epi16(r[2], r[3]), a3 = _mm_unpackhi_epi16(r[2], r[3]);
  const __m128i a4 = _mm_unpacklo_epi16(r[4], r[5]), a5 = _mm_unpackhi_epi16(r[4], r[5]);
  const __m128i a6 = _mm_unpacklo_epi16(r[6], r[7]), a7 = _mm_unpackhi_epi16(r[6], r[7]);
  const __m128i b0 = _mm_unpacklo_epi32(a0, a2), b1 = _mm_unpackhi_epi32(a0, a2);
  const __m128i b2 = _mm_unpacklo_epi32(a1, a3), b3 = _mm_unpackhi_epi32(a1, a3);
  const __m128i b4 = _mm_unpacklo_epi32(a4, a6), b5 = _mm_unpackhi_epi32(a4, a6);
  const __m128i b6 = _mm_unpacklo_epi32(a5, a7), b7 = _mm_unpackhi_epi32(a5, a7);
  const __m128i out[8] = {_mm_unpacklo_epi64(b0, b4), _mm_unpackhi_epi64(b0, b4), _mm_unpacklo_epi64(b1, b5),
                          _mm_unpackhi_epi64(b1, b5), _mm_unpacklo_epi64(b2, b6), _mm_unpackhi_epi64(b2, b6),
                          _mm_unpacklo_epi64(b3, b7), _mm_unpackhi_epi64(b3, b7)};
  for (int i = 0; i < 8; ++i) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i * dst_stride), out[i]);
}
#endif

}  // namespace

void transpose_bf16(const uint8_t* src, int64_t src_stride, int64_t rows, int64_t cols, uint16_t* dst,
                    int64_t dst_stride) {
  int64_t r8 = 0, c8 = 0;
#if defined(__SSE2__)
  r8 = rows - rows % 8;
  c8 = cols - cols % 8;
  // Eight destination rows at a time, each written left to right, so that a written line is
  // whole before it leaves L1 (rows 4 KiB long all fall in one L1 set). In convert this order
  // measured the same as source rows outer, and a software prefetch of the source rows further
  // down gained nothing: from memory the pieces, a source row apart, run at ~4 GB/s either way.
  for (int64_t c = 0; c < c8; c += 8)
    for (int64_t r = 0; r < r8; r += 8)
      transpose_8x8(src + (r * src_stride + c) * 2, src_stride * 2, dst + c * dst_stride + r, dst_stride);
#endif
  transpose_scalar(src, src_stride, 0, r8, c8, cols, dst, dst_stride);  // right edge
  transpose_scalar(src, src_stride, r8, rows, 0, cols, dst, dst_stride);  // bottom edge
}

}  // namespace moeprep
