#pragma once
// Large buffers backed by transparent huge pages where the system leaves that to the program
// (THP "madvise", a common default): the first write to a fresh 8 MiB buffer then takes four
// page faults instead of 2048. Convert's unit buffers and scale hand-offs are such buffers
// (core/uninitialized_bytes.h).
#include <cstddef>
#include <cstdint>

namespace moeprep {

// The size of a transparent huge page on x86-64 (one PMD mapping): what prefer_huge_pages
// advises and what io/page_release.h releases whole so as not to split one.
constexpr uintptr_t kHugePageBytes = uintptr_t{2} << 20;

// x rounded down / up to a multiple of kHugePageBytes (an address or a size).
constexpr uintptr_t huge_page_floor(uintptr_t x) { return x / kHugePageBytes * kHugePageBytes; }
constexpr uintptr_t huge_page_ceil(uintptr_t x) { return huge_page_floor(x + kHugePageBytes - 1); }

// Advises the kernel to use huge pages for the 2 MiB-aligned pages inside [data, data + size),
// best before they are first written. Never fails: it is advice, and nothing where the system
// has no such pages.
void prefer_huge_pages(void* data, size_t size);

}  // namespace moeprep
