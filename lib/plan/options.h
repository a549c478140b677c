#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "layout/addressing.h"

namespace moeprep::plan {

// Faults a test can ask the planner to make on purpose, so that verify can be shown to catch
// each layout bug class of validation.md. Never reachable from the CLI.
enum class InjectedFault {
  None,
  SkipGateUpDeinterleave,       // w13 weights, scales and bias left in HF pair order
  SkipScaleDeinterleave,        // weights de-interleaved, scales not
  OtherGateModeTiles,           // weight tiles shuffled in the other gate mode
  SkipScaleShuffle,             // scales padded but not shuffled
  BiasLeftBf16,                 // bias not cast to fp32
};

struct ConvertOptions {
  std::string target = "aiter";
  layout::GateMode gate_mode = layout::GateMode::Separated;
  int64_t pad_hidden = 0;        // 0: the target's default
  int64_t pad_intermediate = 0;  // 0: the target's default
  uint64_t max_shard_size = 5ull << 30;
  int threads = 1;
  InjectedFault fault = InjectedFault::None;

  // Defaults of the aiter target (layouts.md section 2): hidden 256; intermediate 128 in the
  // separated mode, 256 in the interleaved mode.
  int64_t effective_pad_hidden() const { return pad_hidden ? pad_hidden : 256; }
  int64_t effective_pad_intermediate() const {
    return pad_intermediate ? pad_intermediate : (gate_mode == layout::GateMode::Separated ? 128 : 256);
  }
  // What the manifest records (threads are not part of the result).
  nlohmann::ordered_json to_json() const;
};

const char* gate_mode_name(layout::GateMode mode);           // "separated" / "interleave"
layout::GateMode gate_mode_from_name(const std::string& s);  // throws BadInput

// Parses "5GB", "500MB", "1.5GiB", "123" (bytes); throws Usage naming the text.
uint64_t parse_byte_size(const std::string& text);

}  // namespace moeprep::plan
