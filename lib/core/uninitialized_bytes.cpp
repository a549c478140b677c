#include "core/uninitialized_bytes.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "core/huge_pages.h"

namespace moeprep {

void UninitializedBytes::Free::operator()(uint8_t* p) const { std::free(p); }

void UninitializedBytes::resize_discarding(size_t size) {
  if (size > capacity_) {
    // Whole huge pages, aligned to one, so that the advice covers every byte of the buffer.
    const size_t bytes = huge_page_ceil(size);
    data_.reset();  // the old storage goes first: the bytes are not kept, so there is no copy
    capacity_ = 0;
    auto* p = static_cast<uint8_t*>(std::aligned_alloc(kHugePageBytes, bytes));
    if (p == nullptr) throw std::bad_alloc();
    data_.reset(p);
    capacity_ = bytes;
    prefer_huge_pages(p, bytes);
#ifdef MOEPREP_POISON_UNINITIALIZED
    std::memset(p, 0xA5, bytes);
#endif
  }
  size_ = size;
}

}  // namespace moeprep
