#pragma once
// Selection keys for top-k: (score, expert index) packed into one unsigned integer whose integer
// order is "larger score first, then lower index". One definition for the CPU side and the GPU
// router kernel, so the CPU tests of the key order cover the kernel's packing too.
#include <cstdint>
#include <cstring>

#include "core/hd.h"

namespace moeprep::reference {

// Monotone float -> unsigned map: a negative float has all bits flipped, a non-negative one only
// its sign bit. Reading the raw bits as unsigned would rank every negative score above every
// positive one and reverse the order among negatives (routers.md: negative choice scores).
MOEPREP_HD uint32_t float_order_key(float v) {
  uint32_t bits;
  memcpy(&bits, &v, 4);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Inverse of float_order_key (exact: the map is a bijection on bit patterns).
MOEPREP_HD float float_from_order_key(uint32_t key) {
  uint32_t bits = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  float v;
  memcpy(&v, &bits, 4);
  return v;
}

// The key a router ranks by. -0.0 is read as +0.0 first: the two are equal scores, so the tie
// rule (lower index) must decide between them, not their sign bits. Never 0 for a real score
// (the smallest, -inf, maps to 0x007fffff), so 0 can mark "no candidate".
MOEPREP_HD uint32_t selection_value_key(float v) {
  uint32_t bits;
  memcpy(&bits, &v, 4);
  if (bits == 0x80000000u) bits = 0;
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

constexpr uint32_t kNoCandidate = 0;
constexpr uint32_t kMaxKeyIndex = 0xFFFFu;

// 64-bit key: the value key above, the index below, stored as 0xFFFF - index so that, on equal
// values, the larger key is the lower index. A max-reduction over these keys is a top-1 pick
// with the routers' tie rule.
MOEPREP_HD uint64_t pack_topk_key(uint32_t value_key, uint32_t index) {
  return (static_cast<uint64_t>(value_key) << 32) | (kMaxKeyIndex - index);
}
MOEPREP_HD uint32_t topk_key_index(uint64_t key) { return kMaxKeyIndex - static_cast<uint32_t>(key & kMaxKeyIndex); }
MOEPREP_HD uint32_t topk_key_value_key(uint64_t key) { return static_cast<uint32_t>(key >> 32); }

}  // namespace moeprep::reference
