#pragma once
// Dropping pages of a memory-mapped input once they have been consumed, so that streaming a
// checkpoint larger than memory keeps the process's resident set small (the kernel's page
// cache still holds them; nothing is re-read unless asked for).
#include "io/safetensors.h"

namespace moeprep::io {

// Advises the kernel that the whole pages inside [data, data + size) of a read-only mapping
// are no longer needed. Pages only partly inside the range are kept. Never fails: it is advice.
void release_mapped_pages(ByteView range);

// The same for a range read once, widened to the 2 MiB-aligned pages around it, within
// `mapping` (the whole mapped file that holds it): where the kernel maps the file's page cache
// with huge pages, releasing part of one splits it (a TLB flush of every CPU running the
// process, ~5% of a quantizing convert's CPU on 2 cores), releasing all of it does not. Bytes
// of the neighbours that go too are read back from the page cache if they are read again; for
// expert tensors released as each expert is done, that is a neighbour not read yet, at worst
// one fault per 2 MiB.
void release_mapped_pages_around(ByteView range, ByteView mapping);

// Maps the pages of [data, data + size) of a read-only file mapping in one call
// (MADV_POPULATE_READ) instead of one page fault per few pages as they are first read. Advice
// too: on kernels without it, or on a file truncated meanwhile, it does nothing and the reads
// fault as usual (where the SIGBUS guard reports a truncation).
void populate_mapped_pages(ByteView range);

}  // namespace moeprep::io
