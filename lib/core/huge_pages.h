#pragma once
// Large buffers backed by transparent huge pages where the system leaves that to the program
// (THP "madvise", a common default): the first write to a fresh 8 MiB buffer then takes four
// page faults instead of 2048. Convert's unit buffers and scale hand-offs are such buffers.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace moeprep {

// The size of a transparent huge page on x86-64 (one PMD mapping): what prefer_huge_pages
// advises and what io/page_release.h releases whole so as not to split one.
constexpr uintptr_t kHugePageBytes = uintptr_t{2} << 20;

// Advises the kernel to use huge pages for the 2 MiB-aligned pages inside [data, data + size),
// best before they are first written. Never fails: it is advice, and nothing where the system
// has no such pages.
void prefer_huge_pages(void* data, size_t size);

// v.resize(size), with storage it has to grow into advised first, so that the zero fill that
// first writes it faults huge pages (growing keeps the old bytes, as resize does).
template <class T>
void resize_on_huge_pages(std::vector<T>& v, size_t size) {
  if (v.capacity() < size) {
    v.reserve(size);
    prefer_huge_pages(v.data(), v.capacity() * sizeof(T));
  }
  v.resize(size);
}

}  // namespace moeprep
