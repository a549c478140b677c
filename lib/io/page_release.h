#pragma once
// Dropping pages of a memory-mapped input once they have been consumed, so that streaming a
// checkpoint larger than memory keeps the process's resident set small (the kernel's page
// cache still holds them; nothing is re-read unless asked for).
#include "io/safetensors.h"

namespace moeprep::io {

// Advises the kernel that the whole pages inside [data, data + size) of a read-only mapping
// are no longer needed. Pages only partly inside the range are kept. Never fails: it is advice.
void release_mapped_pages(ByteView range);

}  // namespace moeprep::io
