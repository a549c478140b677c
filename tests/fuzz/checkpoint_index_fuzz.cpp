// libFuzzer target: Checkpoint::open (shard names, symlinks, cross-checks), inspect and planning with the input as model.safetensors.index.json.
// Seeds: testdata/fuzz-corpus (see scripts/fuzz-check); what one input does: fuzz_inputs.h.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moeprep::fuzz::index_input(data, size);
  return 0;
}
