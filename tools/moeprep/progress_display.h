#pragma once
#include <chrono>
#include <string>

#include "plan/progress.h"

namespace moeprep::cli {

// A bar with bytes, rate and ETA when stderr is a terminal; a plain line every few seconds
// otherwise (logs of pipelines); nothing when quiet.
class ProgressDisplay : public plan::ProgressSink {
 public:
  ProgressDisplay(bool quiet, bool units_are_bytes);
  void start(const std::string& phase, uint64_t total_units) override;
  void advance(uint64_t units_done, const std::string& current_item) override;
  void finish() override;

 private:
  void draw(bool final_line);
  bool quiet_, bytes_, tty_;
  std::string phase_, item_;
  uint64_t total_ = 0, done_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

std::string human_bytes(double bytes);

}  // namespace moeprep::cli
