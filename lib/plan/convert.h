#pragma once
// convert: plan, then stream every tensor through its recipe into shards in a staging
// directory, write the index and the manifest, and rename into place only when complete.
#include <atomic>
#include <filesystem>

#include "plan/manifest.h"
#include "plan/options.h"
#include "plan/plan.h"
#include "plan/progress.h"

namespace moeprep::plan {

struct ConvertRequest {
  std::filesystem::path source;
  std::filesystem::path destination;
  ConvertOptions options;
  bool replace_existing = false;  // --force
  // Set (e.g. from a SIGINT handler) to stop between chunks; the run then fails cleanly.
  const std::atomic<bool>* cancel = nullptr;
};

struct ConvertSummary {
  Manifest manifest;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  size_t shards = 0;
  size_t transformed = 0;
  size_t copied = 0;
};

// Throws Error (BadInput, Io, Usage) with context; on any failure the destination is left
// absent or as it was.
ConvertSummary convert_checkpoint(const ConvertRequest& request, ProgressSink& progress);

// Executes an already built plan into an (uncommitted) staging directory; exposed for tests.
Manifest execute_plan(const ConvertPlan& plan, const io::Checkpoint& source, const std::filesystem::path& staging,
                      ProgressSink& progress, const std::atomic<bool>* cancel = nullptr);

// Source identity recorded in the manifest (path, hashes of config and index, totals).
nlohmann::ordered_json source_identity(const io::Checkpoint& source);

}  // namespace moeprep::plan
