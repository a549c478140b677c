#include "core/uninitialized_bytes.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <new>

#include "core/huge_pages.h"

namespace moeprep {

void UninitializedBytes::Unmap::operator()(uint8_t* p) const {
  if (p != nullptr) munmap(p, bytes);
}

void UninitializedBytes::resize_discarding(size_t size) {
  if (size > capacity_) {
    // Whole huge pages, aligned to one, so that the advice covers every byte of the buffer. Mapped
    // here rather than taken from malloc: once a large block has been freed, glibc serves blocks
    // of that size from its heap, whose pages may have been touched already, as small pages, and
    // advice does not change a page already there (the huge-page tests failed so in one process).
    const size_t bytes = huge_page_ceil(size);
    data_.reset();  // the old storage goes first: the bytes are not kept, so there is no copy
    capacity_ = 0;
    void* map = mmap(nullptr, bytes + kHugePageBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) throw std::bad_alloc();
    // The slack before the first aligned address and after the buffer goes back at once.
    const auto first = reinterpret_cast<uintptr_t>(map), aligned = huge_page_ceil(first);
    const uintptr_t end = first + bytes + kHugePageBytes;
    if (aligned > first) munmap(map, aligned - first);
    if (end > aligned + bytes) munmap(reinterpret_cast<void*>(aligned + bytes), end - (aligned + bytes));
    auto* p = reinterpret_cast<uint8_t*>(aligned);
    data_ = std::unique_ptr<uint8_t, Unmap>(p, Unmap{bytes});
    capacity_ = bytes;
    prefer_huge_pages(p, bytes);
#ifdef MOEPREP_POISON_UNINITIALIZED
    std::memset(p, 0xA5, bytes);
#endif
  }
  size_ = size;
}

}  // namespace moeprep
