#include "io/page_release.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>

namespace moeprep::io {

void release_mapped_pages(ByteView range) {
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(range.data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(range.data) + range.size) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
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
