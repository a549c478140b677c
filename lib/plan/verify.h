#pragma once
// verify: the checks of validation.md, in order, each with its own result.
//  1 structure   every shard parses strictly; index and manifest agree with the shards; each
//                kernel-ready tensor has the dtype and shape its role requires
//  2 integrity   XXH3-128 of every tensor, shard header, the index and copied files
//  3 flags       is_shuffled / layout in shard metadata <-> manifest; recorded steps are the
//                ones the layout id stands for
//  4 round trip  (needs the source) undo every recorded step, compare bytes with the source
//  5 numerics    (needs the source) fused MoE on the kernel-ready tensors vs a reference
//                computed from the source, per layer and token count
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plan/progress.h"
#include "reference/moe.h"

namespace moeprep::plan {

enum class StageStatus { Passed, Failed, Skipped };
const char* stage_status_name(StageStatus s);

struct StageReport {
  std::string name;
  StageStatus status = StageStatus::Skipped;
  uint64_t checked = 0;
  uint64_t failed = 0;
  std::vector<std::string> failures;  // one line each, naming the tensor and the check (first 50)
  std::string note;                   // why skipped, or what was compared

  void fail(const std::string& message);  // counts and records (keeps the first 50 lines)
};

struct NumericsRow {
  int64_t layer = 0;
  int64_t tokens = 0;
  double rel_err = 0;          // against the reference from the MXFP4 weights convert made
  double rel_err_source = -1;  // against the unquantized source, when moeprep quantized (else -1)
  int64_t routing_mismatches = 0;  // tokens whose expert sets differ from the reference
  int64_t nan_tokens = 0;
  bool passed = false;
};

// A fused MoE implementation that reads the kernel-ready layout (CPU or GPU).
using MoeBackend = std::function<reference::MoeOutput(
    const reference::KernelReadyLayer&, const reference::RouterWeights&, const reference::RouterConfig&,
    const reference::ActivationParams&, const uint16_t* x, int64_t tokens, int64_t valid_tokens)>;

// Stage 5 compares with a reference computed from the MXFP4 weights convert made (for
// quantized sources: a fresh quantization of the source, dequantized exactly): relative error
// at most kDefaultThreshold. When moeprep quantized the experts it also compares with the
// unquantized source, whose error includes MXFP4's own rounding (about 0.1 per tensor, 0.2 to
// 0.3 end to end on random weights): at most kSourceThreshold.
inline constexpr double kDefaultThreshold = 2e-2;
inline constexpr double kSourceThreshold = 0.4;

struct VerifyOptions {
  std::optional<std::filesystem::path> source;
  std::vector<int64_t> layers;  // empty: all
  std::vector<int64_t> token_counts = {1, 7, 64, 512};
  double threshold = kDefaultThreshold;
  double source_threshold = kSourceThreshold;
  uint64_t seed = 0;
  int reference_threads = 2;    // CPU workers of the reference computation
  MoeBackend backend;           // null: the CPU kernel-layout implementation
  std::string backend_name = "cpu";
};

struct VerifyReport {
  std::filesystem::path destination;
  std::optional<std::filesystem::path> source;
  std::vector<StageReport> stages;
  std::vector<NumericsRow> numerics;
  std::string device;
  double threshold = 0;
  double source_threshold = 0;
  bool passed() const;
  nlohmann::ordered_json to_json() const;
};

// Runs every stage it can. Throws only when `destination` (or the source) cannot be opened as
// a directory at all; every finding about their contents is a stage failure in the report.
VerifyReport verify_checkpoint(const std::filesystem::path& destination, const VerifyOptions& options,
                               ProgressSink& progress);

// Parses "0,5-7" into layer numbers; throws Usage.
std::vector<int64_t> parse_layer_list(const std::string& text);

}  // namespace moeprep::plan
