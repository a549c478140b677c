#pragma once
// Which vector instruction set the CPU-heavy kernels (MXFP4 quantization, XXH3) use. The
// build targets plain x86-64 (SSE2); wider variants are compiled in separate files with their
// own flags and chosen once at run time. Every variant gives the same bytes and the same
// sums, bit for bit: the choice changes speed only.
#include <string>
#include <vector>

namespace moeprep {

enum class SimdLevel {
  Baseline,  // what the default target compiles to (SSE2 on x86-64)
  Avx2,
  Avx512,    // AVX-512 F + BW
};

const char* simd_level_name(SimdLevel level);

// The widest level both this build and this CPU (with its operating system) support.
SimdLevel cpu_simd_level();

// The level in use: cpu_simd_level(), lowered by the environment variable MOEPREP_SIMD
// (baseline, avx2 or avx512; a level the CPU lacks, or another word, is ignored) or by
// cap_simd_level.
SimdLevel simd_level();

// Uses at most `level` from now on, process-wide (tests and benchmarks run each variant this
// way); returns the level in use before. Not meant to be called while kernels run.
SimdLevel cap_simd_level(SimdLevel level);

// Every level this build and CPU can run, narrowest first.
std::vector<SimdLevel> supported_simd_levels();

}  // namespace moeprep
