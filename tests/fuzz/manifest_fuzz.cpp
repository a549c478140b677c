// libFuzzer target: plan::Manifest::from_json and the manifest readers verify relies on, with a serialize round trip.
// Seeds: testdata/fuzz-corpus (see scripts/fuzz-check); what one input does: fuzz_inputs.h.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moeprep::fuzz::manifest_input(data, size);
  return 0;
}
