#pragma once
// How long work reports its progress. The library only counts; the CLI decides how to show
// it (a bar on a terminal, periodic lines otherwise, nothing with --quiet).
#include <cstdint>
#include <string>

namespace moeprep::plan {

class ProgressSink {
 public:
  virtual ~ProgressSink() = default;
  virtual void start(const std::string& phase, uint64_t total_units) = 0;
  virtual void advance(uint64_t units_done, const std::string& current_item) = 0;
  virtual void finish() = 0;
};

// Discards everything.
class NullProgress : public ProgressSink {
 public:
  void start(const std::string&, uint64_t) override {}
  void advance(uint64_t, const std::string&) override {}
  void finish() override {}
};

}  // namespace moeprep::plan
