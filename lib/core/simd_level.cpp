#include "core/simd_level.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace moeprep {
namespace {

SimdLevel detect() {
#if defined(MOEPREP_X86_SIMD) && (defined(__GNUC__) || defined(__clang__))
  // __builtin_cpu_supports also checks that the OS saves the wider registers (XGETBV).
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return SimdLevel::Avx512;
  // The AVX2 loops use FMA (formats/mxfp4_quantize_avx2.cpp), as Intel's and AMD's AVX2 CPUs have.
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SimdLevel::Avx2;
#endif
  return SimdLevel::Baseline;
}

SimdLevel from_environment(SimdLevel cpu) {
  const char* v = std::getenv("MOEPREP_SIMD");
  if (!v) return cpu;
  for (SimdLevel l : {SimdLevel::Baseline, SimdLevel::Avx2, SimdLevel::Avx512})
    if (std::strcmp(v, simd_level_name(l)) == 0 && l <= cpu) return l;
  return cpu;
}

std::atomic<int>& level_in_use() {
  static std::atomic<int> level{static_cast<int>(from_environment(cpu_simd_level()))};
  return level;
}

}  // namespace

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::Baseline: return "baseline";
    case SimdLevel::Avx2: return "avx2";
    case SimdLevel::Avx512: return "avx512";
  }
  return "?";
}

SimdLevel cpu_simd_level() {
  static const SimdLevel level = detect();
  return level;
}

SimdLevel simd_level() { return static_cast<SimdLevel>(level_in_use().load(std::memory_order_relaxed)); }

SimdLevel cap_simd_level(SimdLevel level) {
  const SimdLevel capped = level < cpu_simd_level() ? level : cpu_simd_level();
  return static_cast<SimdLevel>(level_in_use().exchange(static_cast<int>(capped)));
}

std::vector<SimdLevel> supported_simd_levels() {
  std::vector<SimdLevel> out;
  for (SimdLevel l : {SimdLevel::Baseline, SimdLevel::Avx2, SimdLevel::Avx512})
    if (l <= cpu_simd_level()) out.push_back(l);
  return out;
}

}  // namespace moeprep
