// libFuzzer target: Checkpoint::open, model detection, planning and inspect of the tiny GPT-OSS checkpoint with the input as config.json.
// Seeds: testdata/fuzz-corpus (see scripts/fuzz-check); what one input does: fuzz_inputs.h.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moeprep::fuzz::config_input(data, size);
  return 0;
}
