#pragma once
// Dropping pages of a memory-mapped input once they have been consumed, so that streaming a
// checkpoint larger than memory keeps the process's resident set small (the kernel's page
// cache still holds them; nothing is re-read unless asked for).
#include "io/safetensors.h"

namespace moeprep::io {

// Advises the kernel that the whole pages inside [data, data + size) of a read-only mapping
// are no longer needed. Pages only partly inside the range are kept. Never fails: it is advice.
void release_mapped_pages(ByteView range);

// Maps the pages of [data, data + size) of a read-only file mapping in one call
// (MADV_POPULATE_READ) instead of one page fault per few pages as they are first read. Advice
// too: on kernels without it, or on a file truncated meanwhile, it does nothing and the reads
// fault as usual (where the SIGBUS guard reports a truncation).
void populate_mapped_pages(ByteView range);

}  // namespace moeprep::io
