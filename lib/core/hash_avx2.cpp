// XXH3 with AVX2 accumulation: compiled with -mavx2 (lib/CMakeLists.txt), used only where
// core/simd_level.h found AVX2.
#if defined(MOEPREP_X86_SIMD)
#define XXH_VECTOR XXH_AVX2
#define MOEPREP_XXH3_VARIANT avx2
#include "core/hash_variant.h"
#include "core/hash_variant.inc"
#endif
