#include "gpu_backend.h"

#include "core/error.h"
#include "reference/moe.h"
#if defined(MOEPREP_WITH_CUDA)
#include "kernels/fused_moe.h"
#endif

namespace moeprep::cli {

plan::MoeBackend select_backend(const std::string& requested, std::string* chosen_name) {
  if (requested == "cpu") {
    *chosen_name = "cpu";
    return reference::moe_forward_kernel_layout_cpu;
  }
  if (requested == "hip")
    throw_usage("--device hip: this build has no HIP runtime (the kernels are compile-checked for gfx90a/gfx940 only)");
#if defined(MOEPREP_WITH_CUDA)
  std::string why;
  if (gpu::gpu_available(&why)) {
    *chosen_name = "cuda";
    return gpu::moe_forward_gpu;
  }
  if (requested == "cuda") throw_usage("--device cuda: " + why);
#else
  if (requested == "cuda") throw_usage("--device cuda: this build of moeprep has no CUDA kernels (nvcc was not found)");
#endif
  *chosen_name = "cpu";
  return reference::moe_forward_kernel_layout_cpu;
}

}  // namespace moeprep::cli
