#pragma once
// Test helper of every area: run a check at every SIMD level this CPU has.
#include <gtest/gtest.h>

#include <type_traits>

#include "core/simd_level.h"

namespace moeprep::testing {

// Runs `body` (taking the level, or nothing) once per supported level, named in failures, and
// restores the level in use afterwards.
template <class Body>
void for_each_simd_level(Body body) {
  const SimdLevel before = simd_level();
  for (SimdLevel level : supported_simd_levels()) {
    cap_simd_level(level);
    SCOPED_TRACE(simd_level_name(level));
    if constexpr (std::is_invocable_v<Body, SimdLevel>) {
      body(level);
    } else {
      body();
    }
  }
  cap_simd_level(before);
}

}  // namespace moeprep::testing
