// libFuzzer target: io::parse_header on a whole safetensors file held in memory (length prefix, header JSON, data area).
// Seeds: testdata/fuzz-corpus (see scripts/fuzz-check); what one input does: fuzz_inputs.h.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moeprep::fuzz::header_input(data, size);
  return 0;
}
