// XXH3 with AVX-512 accumulation: compiled with -mavx512f -mavx512bw (lib/CMakeLists.txt),
// used only where core/simd_level.h found them.
#if defined(MOEPREP_X86_SIMD)
// GCC 12's avx512fintrin.h trips its own uninitialized-value warnings (_mm512_undefined_*,
// GCC bug 105593) inside xxhash's AVX-512 loop.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define XXH_VECTOR XXH_AVX512
#define MOEPREP_XXH3_VARIANT avx512
#include "core/hash_variant.h"
#include "core/hash_variant.inc"
#endif
