#include "core/hash.h"

// Header-only use of libxxhash: no library to link, identical on the device machine.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstdio>

namespace moeprep {

Xxh3Hasher::Xxh3Hasher() : state_(XXH3_createState()) { XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_)); }
Xxh3Hasher::~Xxh3Hasher() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void Xxh3Hasher::update(const void* data, size_t size) {
  XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), data, size);
}

static std::string to_hex(XXH128_hash_t h) {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return buf;
}

std::string Xxh3Hasher::hex_digest() const {
  return to_hex(XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_)));
}

std::string xxh3_128_hex(const void* data, size_t size) { return to_hex(XXH3_128bits(data, size)); }

}  // namespace moeprep
