#include <cstdio>
#include <iostream>
#include <thread>

#include "commands.h"
#include "core/error.h"
#include "exit_codes.h"
#include "gpu_backend.h"
#include "plan/verify.h"
#include "progress_display.h"

namespace moeprep::cli {
namespace {

struct VerifyArgs {
  std::string destination, source, layers, device = "auto";
  std::vector<int64_t> tokens = {1, 7, 64, 512};
  double threshold = plan::kDefaultThreshold;
  double source_threshold = plan::kSourceThreshold;
  uint64_t seed = 0;
  int threads = 0;
};

void print_report(const plan::VerifyReport& r) {
  for (const auto& s : r.stages) {
    std::printf("%-11s %-7s %6llu checked %6llu failed%s%s\n", s.name.c_str(), plan::stage_status_name(s.status),
                static_cast<unsigned long long>(s.checked), static_cast<unsigned long long>(s.failed),
                s.note.empty() ? "" : "  ", s.note.c_str());
    for (const auto& f : s.failures) std::printf("  - %s\n", f.c_str());
    if (s.failed > s.failures.size())
      std::printf("  ... and %llu more\n", static_cast<unsigned long long>(s.failed - s.failures.size()));
  }
  if (!r.numerics.empty()) {
    std::printf("\nnumerics on %s: relative error ||out-ref||/||ref|| per layer (threshold %.1e; against the\n"
                "unquantized source %.2f, where moeprep quantized)\n",
                r.device.c_str(), r.threshold, r.source_threshold);
    std::printf("%6s %7s %12s %14s %14s %s\n", "layer", "tokens", "rel_err", "vs_source", "routing_diff", "");
    for (const auto& n : r.numerics) {
      char src[32] = "-";
      if (n.rel_err_source >= 0) std::snprintf(src, sizeof src, "%.3e", n.rel_err_source);
      std::printf("%6lld %7lld %12.3e %14s %14lld %s\n", static_cast<long long>(n.layer), static_cast<long long>(n.tokens),
                  n.rel_err, src, static_cast<long long>(n.routing_mismatches), n.passed ? "ok" : "FAIL");
    }
  }
  std::printf("\n%s\n", r.passed() ? "verify: passed" : "verify: FAILED");
}

}  // namespace

CommandRunner add_verify_command(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<VerifyArgs>();
  app.add_option("DST", args->destination, "Directory written by 'moeprep convert'")->required();
  app.add_option("--source", args->source, "The original checkpoint: enables the round trip and numerics stages");
  app.add_option("--layers", args->layers, "MoE layers for the numerics stage, e.g. 0,5-7 (default: all)");
  app.add_option("--tokens", args->tokens, "Token counts for the numerics stage")->capture_default_str()->delimiter(',');
  app.add_option("--threshold", args->threshold,
                 "Largest relative error against the reference from the converted MXFP4 weights")
      ->capture_default_str();
  app.add_option("--source-threshold", args->source_threshold,
                 "When moeprep quantized the experts: largest relative error against the unquantized source")
      ->capture_default_str();
  app.add_option("--seed", args->seed, "Seed of the random activations")->capture_default_str();
  app.add_option("--threads", args->threads, "CPU workers for the reference computation (default: all cores)");
  app.add_option("--device", args->device, "Where the fused MoE runs: auto, cuda, hip or cpu")
      ->check(CLI::IsMember({"auto", "cuda", "hip", "cpu"}))
      ->capture_default_str();
  return [args, &global]() -> int {
    plan::VerifyOptions o;
    if (!args->source.empty()) o.source = args->source;
    if (!args->layers.empty()) o.layers = plan::parse_layer_list(args->layers);
    for (int64_t t : args->tokens)
      if (t < 1 || t > (1 << 20)) throw_usage("--tokens values must lie in 1..1048576");
    o.token_counts = args->tokens;
    if (!(args->threshold > 0) || !(args->source_threshold > 0)) throw_usage("thresholds must be positive");
    o.threshold = args->threshold;
    o.source_threshold = args->source_threshold;
    o.seed = args->seed;
    const unsigned cores = std::thread::hardware_concurrency();
    o.reference_threads = args->threads > 0 ? args->threads : static_cast<int>(cores ? cores : 1);
    o.backend = select_backend(args->device, &o.backend_name);
    ProgressDisplay progress(global.quiet || global.json, false);
    const plan::VerifyReport report = plan::verify_checkpoint(args->destination, o, progress);
    if (global.json) std::cout << report.to_json().dump(2) << "\n";
    else print_report(report);
    return report.passed() ? kExitOk : kExitVerificationFailed;
  };
}

}  // namespace moeprep::cli
