// The SIGBUS guard of mapped inputs (see mapped_input_guard.h). The handler touches only
// atomics and calls mmap/sigaction (plain system calls on Linux); file names and sizes, used for
// the error message, are kept apart under a mutex the handler never takes.
#include "io/mapped_input_guard.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "core/error.h"

namespace moeprep::io {
namespace {

constexpr int kSlots = 4096;  // mappings open at once (a checkpoint has at most a few hundred shards)

struct Slot {
  std::atomic<uintptr_t> begin{0};  // 0: free
  std::atomic<uintptr_t> end{0};
  std::atomic<bool> changed{false};
};

Slot g_slots[kSlots];
std::mutex g_mutex;  // registration, and the two arrays below
std::string g_paths[kSlots];
uint64_t g_sizes[kSlots];
std::atomic<int> g_changed{0};  // registered slots marked changed
uintptr_t g_page = 4096;
struct sigaction g_previous {};
std::once_flag g_installed;

void pass_on(int sig, siginfo_t* info, void* context) {
  if (g_previous.sa_flags & SA_SIGINFO) {
    g_previous.sa_sigaction(sig, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
    return;
  }
  // Default action: restore it and return; the access faults again and the process ends as it
  // would have without the guard.
  ::sigaction(SIGBUS, &g_previous, nullptr);
}

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (Slot& s : g_slots) {
    const uintptr_t begin = s.begin.load(std::memory_order_acquire);
    if (begin == 0 || addr < begin || addr >= s.end.load(std::memory_order_acquire)) continue;
    const uintptr_t page = addr & ~(g_page - 1);
    const uintptr_t end = s.end.load(std::memory_order_acquire);
    // Zeros from the faulting page to the end of the mapping: the interrupted read completes,
    // and the rest of the vanished part costs no further signals.
    void* p = ::mmap(reinterpret_cast<void*>(page), end - page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                     -1, 0);
    if (p == MAP_FAILED) break;
    if (!s.changed.exchange(true)) g_changed.fetch_add(1);
    return;
  }
  pass_on(sig, info, context);
}

void install() {
  g_page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  struct sigaction action {};
  action.sa_sigaction = on_sigbus;
  action.sa_flags = SA_SIGINFO;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGBUS, &action, &g_previous);
}

[[noreturn]] void throw_changed(int i) {
  struct stat st {};
  const std::string now = ::stat(g_paths[i].c_str(), &st) == 0 ? std::to_string(st.st_size) + " bytes" : "gone";
  throw Error(ErrorKind::Io, g_paths[i] + ": changed while being read (" + std::to_string(g_sizes[i]) +
                                 " bytes when opened, now " + now +
                                 "): another process truncated or rewrote it; the run was stopped");
}

}  // namespace

int register_mapped_input(const void* begin, size_t size, const std::filesystem::path& path) {
  if (!begin || size == 0) return -1;
  std::call_once(g_installed, install);
  std::lock_guard<std::mutex> lock(g_mutex);
  for (int i = 0; i < kSlots; ++i) {
    if (g_slots[i].begin.load(std::memory_order_relaxed) != 0) continue;
    g_paths[i] = path.string();
    g_sizes[i] = size;
    g_slots[i].changed.store(false);
    g_slots[i].end.store(reinterpret_cast<uintptr_t>(begin) + size, std::memory_order_release);
    g_slots[i].begin.store(reinterpret_cast<uintptr_t>(begin), std::memory_order_release);
    return i;
  }
  return -1;
}

void unregister_mapped_input(int slot) {
  if (slot < 0 || slot >= kSlots) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  g_slots[slot].begin.store(0, std::memory_order_release);
  if (g_slots[slot].changed.exchange(false)) g_changed.fetch_sub(1);
}

void throw_if_mapped_input_changed() {
  if (g_changed.load(std::memory_order_acquire) == 0) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  for (int i = 0; i < kSlots; ++i)
    if (g_slots[i].begin.load(std::memory_order_acquire) != 0 && g_slots[i].changed.load()) throw_changed(i);
}

void throw_if_mapped_range_shrank(const void* data, size_t size) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(data);
  std::lock_guard<std::mutex> lock(g_mutex);
  for (int i = 0; i < kSlots; ++i) {
    const uintptr_t begin = g_slots[i].begin.load(std::memory_order_acquire);
    if (begin == 0 || addr < begin || addr >= g_slots[i].end.load()) continue;
    struct stat st {};
    const uint64_t needed = addr - begin + size;
    if (::stat(g_paths[i].c_str(), &st) != 0 || static_cast<uint64_t>(st.st_size) < needed) throw_changed(i);
  }
}

}  // namespace moeprep::io
