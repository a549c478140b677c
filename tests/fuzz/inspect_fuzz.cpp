// libFuzzer target: plan::inspect_path on the input written as a .safetensors file (open, mmap, header, inspect JSON).
// Seeds: testdata/fuzz-corpus (see scripts/fuzz-check); what one input does: fuzz_inputs.h.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moeprep::fuzz::inspect_input(data, size);
  return 0;
}
