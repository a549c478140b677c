#include "io/page_release.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>

#include "core/huge_pages.h"

namespace moeprep::io {

void release_mapped_pages(ByteView range) {
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(range.data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(range.data) + range.size) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

void release_mapped_pages_around(ByteView range, ByteView mapping) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(mapping.data);
  const uintptr_t last = first + mapping.size;
  const uintptr_t begin = std::max(first, huge_page_floor(reinterpret_cast<uintptr_t>(range.data)));
  const uintptr_t end = std::min(last, huge_page_ceil(reinterpret_cast<uintptr_t>(range.data) + range.size));
  if (range.size > 0 && end > begin) release_mapped_pages({reinterpret_cast<const uint8_t*>(begin), end - begin});
}

void populate_mapped_pages(ByteView range) {
#ifdef MADV_POPULATE_READ
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(range.data) / page * page;
  const uintptr_t end = reinterpret_cast<uintptr_t>(range.data) + range.size;
  if (range.size > 0) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_READ);
#else
  (void)range;
#endif
}

}  // namespace moeprep::io
