#pragma once
// The stages of verify, one function each (verify.cpp runs them in order).
#include <optional>

#include "io/checkpoint.h"
#include "plan/manifest.h"
#include "plan/verify.h"

namespace moeprep::plan {

// Stage 1. Opens the destination and reads the manifest; on failure returns nullopt after
// recording why (later stages cannot run).
struct OpenedDestination {
  io::Checkpoint checkpoint;
  Manifest manifest;
};
std::optional<OpenedDestination> check_structure(const std::filesystem::path& destination, StageReport& report);

void check_integrity(const OpenedDestination& dst, StageReport& report, ProgressSink& progress);
void check_flags(const OpenedDestination& dst, StageReport& report);
void check_round_trip(const OpenedDestination& dst, const io::Checkpoint& source, StageReport& report,
                      ProgressSink& progress);
void check_numerics(const OpenedDestination& dst, const io::Checkpoint& source, const VerifyOptions& options,
                    StageReport& report, std::vector<NumericsRow>& rows, ProgressSink& progress);

}  // namespace moeprep::plan
