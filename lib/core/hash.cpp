#include "core/hash.h"

#include <cstdio>
#include <new>

#include "core/simd_level.h"
#include "core/hash_variant.h"

// The default target's XXH3 (SSE2 on x86-64); the wider ones are in hash_avx*.cpp.
#define MOEPREP_XXH3_VARIANT baseline
#include "core/hash_variant.inc"

namespace moeprep {
namespace {

const xxh3_variant::Functions& functions() {
  switch (simd_level()) {
#if defined(MOEPREP_X86_SIMD)
    case SimdLevel::Avx512: return xxh3_variant::avx512();
    case SimdLevel::Avx2: return xxh3_variant::avx2();
#endif
    default: return xxh3_variant::baseline();
  }
}

std::string to_hex(xxh3_variant::Digest h) {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high),
                static_cast<unsigned long long>(h.low));
  return buf;
}

}  // namespace

// A hasher keeps the variant it was made with: its XXH3 state belongs to that variant's code.
struct HasherState {
  const xxh3_variant::Functions* functions;
  void* xxh3;
};

Xxh3Hasher::Xxh3Hasher() {
  const xxh3_variant::Functions& f = functions();
  void* xxh3 = f.create();
  if (!xxh3) throw std::bad_alloc();
  state_ = new HasherState{&f, xxh3};
}

Xxh3Hasher::~Xxh3Hasher() {
  auto* s = static_cast<HasherState*>(state_);
  s->functions->destroy(s->xxh3);
  delete s;
}

void Xxh3Hasher::update(const void* data, size_t size) {
  auto* s = static_cast<HasherState*>(state_);
  s->functions->update(s->xxh3, data, size);
}

std::string Xxh3Hasher::hex_digest() const {
  const auto* s = static_cast<const HasherState*>(state_);
  return to_hex(s->functions->digest(s->xxh3));
}

std::string xxh3_128_hex(const void* data, size_t size) { return to_hex(functions().oneshot(data, size)); }

}  // namespace moeprep
