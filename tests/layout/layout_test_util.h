#pragma once
// Helpers shared by the layout tests.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "core/byte_tensor.h"
#include "core/error.h"
#include "layout/addressing.h"

namespace moeprep::layout::testing {

inline std::vector<uint8_t> random_bytes(size_t n, std::mt19937_64& rng) {
  std::vector<uint8_t> b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

inline ByteTensor random_tensor(Dtype dtype, Shape shape, std::mt19937_64& rng) {
  const int64_t numel = checked_numel(shape, "test");
  return ByteTensor{dtype, std::move(shape), random_bytes(static_cast<size_t>(numel * dtype_bits(dtype) / 8), rng)};
}

inline int64_t random_int(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

inline const char* mode_name(GateMode mode) { return mode == GateMode::Separated ? "separated" : "interleave"; }

// Runs fn, expects a moeprep::Error of `kind` whose message contains every fragment.
inline void expect_error(const std::function<void()>& fn, std::initializer_list<std::string> fragments,
                         ErrorKind kind = ErrorKind::BadInput) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one mentioning \"" << *fragments.begin() << "\"";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    for (const auto& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos)
        << "message \"" << e.what() << "\" lacks \"" << f << "\"";
  }
}

}  // namespace moeprep::layout::testing
