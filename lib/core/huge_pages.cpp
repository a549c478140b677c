#include "core/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>

namespace moeprep {

void prefer_huge_pages(void* data, size_t size) {
#ifdef MADV_HUGEPAGE
  const auto first = reinterpret_cast<uintptr_t>(data);
  const uintptr_t begin = huge_page_ceil(first), end = huge_page_floor(first + size);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)size;
#endif
}

}  // namespace moeprep
