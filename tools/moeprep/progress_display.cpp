#include "progress_display.h"

#include <unistd.h>

#include <cstdio>

namespace moeprep::cli {

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000 && u < 4) {
    bytes /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

ProgressDisplay::ProgressDisplay(bool quiet, bool units_are_bytes)
    : quiet_(quiet), bytes_(units_are_bytes), tty_(isatty(STDERR_FILENO) == 1) {}

void ProgressDisplay::start(const std::string& phase, uint64_t total_units) {
  phase_ = phase;
  total_ = total_units;
  done_ = 0;
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

void ProgressDisplay::advance(uint64_t units_done, const std::string& current_item) {
  done_ = units_done;
  item_ = current_item;
  if (quiet_) return;
  const auto now = std::chrono::steady_clock::now();
  const auto interval = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(5000);
  if (now - last_draw_ < interval) return;
  last_draw_ = now;
  draw(false);
}

void ProgressDisplay::finish() {
  if (quiet_) return;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (tty_) {
    draw(true);
  } else if (secs >= 5.0) {
    std::fprintf(stderr, "moeprep: %s: done in %.1f s\n", phase_.c_str(), secs);
  }
}

void ProgressDisplay::draw(bool final_line) {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double frac = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  const double rate = secs > 0 ? static_cast<double>(done_) / secs : 0;
  const double eta = rate > 0 ? (static_cast<double>(total_) - static_cast<double>(done_)) / rate : 0;
  std::string amount = bytes_ ? human_bytes(static_cast<double>(done_)) + " / " + human_bytes(static_cast<double>(total_)) +
                                    ", " + human_bytes(rate) + "/s"
                              : std::to_string(done_) + " / " + std::to_string(total_);
  if (tty_) {
    const int width = 28;
    const int filled = static_cast<int>(frac * width);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.append(static_cast<size_t>(width - filled), '.');
    std::fprintf(stderr, "\r\033[K%s [%s] %3.0f%% %s ETA %.0fs %s", phase_.c_str(), bar.c_str(), frac * 100,
                 amount.c_str(), eta, item_.substr(0, 60).c_str());
    if (final_line) std::fprintf(stderr, "\n");
  } else {
    std::fprintf(stderr, "moeprep: %s: %.0f%% (%s), ETA %.0f s\n", phase_.c_str(), frac * 100, amount.c_str(), eta);
  }
  std::fflush(stderr);
}

}  // namespace moeprep::cli
