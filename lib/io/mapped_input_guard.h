#pragma once
// Inputs are memory-mapped, and another process may truncate a file while it is being read:
// touching a mapped page past the new end of the file raises SIGBUS, which would kill the
// process mid-run with no message. This guard turns that into an ordinary error.
//
// Every mapping of an input file is registered here. A SIGBUS handler (installed once) checks
// whether the faulting address lies in a registered mapping; if so it maps zero-filled pages
// over the rest of that mapping, so the read in progress completes (reading zeros) instead of
// faulting again, and marks the mapping as changed. Writers call throw_if_mapped_input_changed()
// before writing each piece and before committing, so output made from those zeros is never
// written out under its final name. A SIGBUS anywhere else keeps its default action.
#include <cstddef>
#include <filesystem>

namespace moeprep::io {

// Registers a read-only mapping of `path` of `size` bytes at `begin`. Returns a slot id to
// unregister with, or -1 when the table is full (the mapping is then unguarded).
int register_mapped_input(const void* begin, size_t size, const std::filesystem::path& path);

// Forgets a mapping; call before munmap.
void unregister_mapped_input(int slot);

// Throws Error(Io) "<file>: changed while being read ..." when a registered (still open) input
// was truncated under a read. Cheap when nothing happened: one atomic load.
void throw_if_mapped_input_changed();

// For a failed write(2) from mapped memory (the kernel reports EFAULT, not SIGBUS, when the
// pages it copies from vanished): throws the same error when [data, data + size) lies in a
// registered mapping whose file no longer reaches that far; returns otherwise.
void throw_if_mapped_range_shrank(const void* data, size_t size);

}  // namespace moeprep::io
