// Times the fused router (one launch per call) with CUDA events, and measures the device-to-device
// copy rate that sets the memory floor at large T. A plain timing program rather than a Google
// Benchmark one: per-launch medians over stream and graph replays are what is compared with the
// PyTorch chain (bench/router_torch_baseline.py), which is timed the same way.
//
// Every case is timed twice more with programmatic dependent launch (RouterLaunchOptions): the
// "_pdl" columns. The calls of a case are independent (inputs rotate, outputs are overwritten),
// and a PDL launch still waits for the call before it to complete before it reads or writes, so
// the "_pdl" figures are what consecutive calls cost when their launch gaps overlap. The
// "read_probe" rows time launch_router_read_probe: the router's grid and loads, no selection.
// "single_us" is one launch between two events, queued behind a 256 MiB memset, so that the
// clocks are up and the launch is already waiting when the first event fires; median of 51. It
// overstates the kernel alone: the events' own handling (about 2.5 us at T = 1 on the H100), and
// at large T the memset's dirty L2 lines written back while the kernel reads
// (bench/NOTES-router.md, v11).
//
// Usage: router_bench [--csv FILE] [--quick] [--variant NAME] [--tokens T] [--k K]
// (the last three keep only matching cases: one case under a profiler)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/router.h"

namespace {

using moeprep::gpu::DeviceRouterParams;
using moeprep::gpu::IndexDtype;
using moeprep::gpu::LogitsDtype;
using moeprep::gpu::RouterLaunchOptions;
using moeprep::reference::RouterVariant;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median time per call, in microseconds, of `calls` back-to-back launches between two events.
template <typename Launch>
double time_stream_us(Launch launch, int calls, int reps, cudaStream_t s) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  for (int i = 0; i < calls; ++i) launch(i);  // warm-up
  check(cudaStreamSynchronize(s), "warm-up");
  std::vector<double> us;
  for (int r = 0; r < reps; ++r) {
    check(cudaEventRecord(a, s), "record");
    for (int i = 0; i < calls; ++i) launch(i);
    check(cudaEventRecord(b, s), "record");
    check(cudaEventSynchronize(b), "sync");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "elapsed");
    us.push_back(1000.0 * ms / calls);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return median(us);
}

// The same, with the `calls` launches captured once into a CUDA graph and the graph replayed.
template <typename Launch>
double time_graph_us(Launch launch, int calls, int reps, cudaStream_t s) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  check(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), "begin capture");
  for (int i = 0; i < calls; ++i) launch(i);
  check(cudaStreamEndCapture(s, &graph), "end capture");
  check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  auto replay = [&](int) { check(cudaGraphLaunch(exec, s), "graph launch"); };
  double us = time_stream_us(replay, 1, reps, s) / calls;
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return us;
}

// One launch between two events, queued behind a memset of `blocker` long enough (tens of us)
// that the host has queued the events and the launch before the first event fires; median, us.
template <typename Launch>
double time_single_us(Launch launch, int reps, void* blocker, size_t blocker_bytes, cudaStream_t s) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  std::vector<double> us;
  for (int r = 0; r < reps; ++r) {
    check(cudaMemsetAsync(blocker, r & 0xff, blocker_bytes, s), "blocker memset");
    check(cudaEventRecord(a, s), "record");
    launch(r);
    check(cudaEventRecord(b, s), "record");
    check(cudaEventSynchronize(b), "sync");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "elapsed");
    us.push_back(1000.0 * ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return median(us);
}

// Device-to-device copy rate in GB/s, counting bytes read plus bytes written.
double copy_rate_gbs(cudaStream_t s) {
  const size_t bytes = size_t(512) << 20;
  void *src, *dst;
  check(cudaMalloc(&src, bytes), "malloc copy src");
  check(cudaMalloc(&dst, bytes), "malloc copy dst");
  check(cudaMemset(src, 0x5A, bytes), "memset");
  auto copy = [&](int) { check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "copy"); };
  double us = time_stream_us(copy, 5, 11, s);
  cudaFree(src);
  cudaFree(dst);
  return 2.0 * bytes / (us * 1e-6) / 1e9;
}

struct Row {
  const char* variant;
  int64_t tokens;
  int k;
  double stream_us, graph_us, stream_pdl_us, graph_pdl_us, single_us, bytes, floor_us;
};

}  // namespace

int main(int argc, char** argv) try {
  const char* csv_path = nullptr;
  const char* only_variant = nullptr;
  long long only_tokens = -1, only_k = -1;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--csv") && i + 1 < argc) {
      csv_path = argv[++i];
    } else if (!std::strcmp(argv[i], "--variant") && i + 1 < argc) {
      only_variant = argv[++i];
    } else if (!std::strcmp(argv[i], "--tokens") && i + 1 < argc) {
      only_tokens = std::atoll(argv[++i]);
    } else if (!std::strcmp(argv[i], "--k") && i + 1 < argc) {
      only_k = std::atoll(argv[++i]);
    } else if (!std::strcmp(argv[i], "--quick")) {
      quick = true;

    } else {
      std::fprintf(stderr, "usage: router_bench [--csv FILE] [--quick] [--variant NAME] [--tokens T] [--k K]\n");
      return 2;
    }
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::fprintf(stderr, "router_bench: no GPU device present\n");
    return 1;
  }
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, 0), "device properties");
  cudaStream_t s;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
  const double copy_gbs = copy_rate_gbs(s);
  std::printf("device: %s, %d SMs; device-to-device copy %.0f GB/s (read + write)\n", prop.name,
              prop.multiProcessorCount, copy_gbs);

  const int64_t E = 128;
  const int64_t token_counts[] = {1, 64, 4096, 16384};
  const int ks[] = {4, 6, 8};
  const RouterVariant variants[] = {RouterVariant::SoftmaxAfterTopk, RouterVariant::Gemma4,
                                    RouterVariant::SigmoidGroupedBiased};
  const size_t max_logits = size_t(16384) * E;
  // Enough input sets that the largest case cycles through ~200 MB: past the L2, so large-T
  // times are DRAM times, not cache times.
  const int sets = 25;
  std::vector<float> host(max_logits * sets);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  for (float& x : host) x = dist(rng);
  float *logits, *weights, *bias, *scale;
  int32_t* ids;
  uint8_t* nan_flags;
  check(cudaMalloc(&logits, host.size() * 4), "malloc logits");
  check(cudaMemcpy(logits, host.data(), host.size() * 4, cudaMemcpyHostToDevice), "upload logits");
  check(cudaMalloc(&weights, 16384 * 16 * 4), "malloc weights");
  check(cudaMalloc(&ids, 16384 * 16 * 4), "malloc ids");
  check(cudaMalloc(&nan_flags, 16384), "malloc nan flags");
  std::vector<float> host_bias(E), host_scale(E);
  for (int64_t e = 0; e < E; ++e) {
    host_bias[e] = 0.01f * static_cast<float>(e % 7) - 0.03f;
    host_scale[e] = 0.5f + static_cast<float>(e) / E;
  }
  check(cudaMalloc(&bias, E * 4), "malloc bias");
  check(cudaMalloc(&scale, E * 4), "malloc scale");
  check(cudaMemcpy(bias, host_bias.data(), E * 4, cudaMemcpyHostToDevice), "upload bias");
  check(cudaMemcpy(scale, host_scale.data(), E * 4, cudaMemcpyHostToDevice), "upload scale");

  const size_t blocker_bytes = size_t(256) << 20;
  void* blocker;
  check(cudaMalloc(&blocker, blocker_bytes), "malloc blocker");
  std::vector<Row> rows;
  // Times one case four ways: stream and graph, each without and with PDL.
  auto time_case = [&](Row& r, auto launch_with) {
    const int rotate = r.tokens >= 4096 ? sets : 1;
    const int calls = r.tokens >= 4096 ? 50 : 200;
    RouterLaunchOptions plain, pdl;
    pdl.programmatic_dependent_launch = true;
    for (int with_pdl = 0; with_pdl < 2; ++with_pdl) {
      const RouterLaunchOptions& o = with_pdl ? pdl : plain;
      auto launch = [&](int i) { launch_with(logits + size_t(i % rotate) * max_logits, o); };
      (with_pdl ? r.stream_pdl_us : r.stream_us) = time_stream_us(launch, calls, 21, s);
      (with_pdl ? r.graph_pdl_us : r.graph_us) = time_graph_us(launch, calls, 21, s);
      if (!with_pdl) r.single_us = time_single_us(launch, 51, blocker, blocker_bytes, s);
    }
    r.bytes = double(r.tokens) * E * 4 + double(r.tokens) * r.k * (4 + 4) + double(r.tokens);
    r.floor_us = r.bytes / (copy_gbs * 1e9) * 1e6;
    rows.push_back(r);
  };
  for (RouterVariant v : variants) {
    for (int64_t T : token_counts) {
      for (int k : ks) {
        if (quick && k != 8) continue;
        if (only_variant && std::strcmp(only_variant, moeprep::reference::router_variant_name(v))) continue;
        if ((only_tokens >= 0 && only_tokens != T) || (only_k >= 0 && only_k != k)) continue;
        DeviceRouterParams p;
        p.variant = v;
        p.top_k = k;
        if (v == RouterVariant::SigmoidGroupedBiased) {
          p.n_group = 8;
          p.topk_group = 4;
          p.renormalize = true;
          p.routed_scaling_factor = 2.5f;
          p.correction_bias = bias;
        }
        if (v == RouterVariant::Gemma4) p.per_expert_scale = scale;
        Row r{moeprep::reference::router_variant_name(v), T, k, 0, 0, 0, 0, 0, 0, 0};
        time_case(r, [&](const float* in, const RouterLaunchOptions& o) {
          const char* err = moeprep::gpu::launch_fused_router(in, LogitsDtype::F32, T, T, E, p, weights, ids,
                                                               IndexDtype::Int32, nullptr, nan_flags, s, o);
          if (*err) throw std::runtime_error(err);
        });
      }
    }
  }
  // The read probe at the sizes where the bytes dominate.
  for (int64_t T : {int64_t{4096}, int64_t{16384}}) {
    for (int k : ks) {
      if (quick && k != 8) continue;
      if (only_variant && std::strcmp(only_variant, "read_probe")) continue;
      if ((only_tokens >= 0 && only_tokens != T) || (only_k >= 0 && only_k != k)) continue;
      Row r{"read_probe", T, k, 0, 0, 0, 0, 0, 0, 0};
      time_case(r, [&](const float* in, const RouterLaunchOptions& o) {
        const char* err = moeprep::gpu::launch_router_read_probe(in, T, E, k, weights, ids, nan_flags, s, o);
        if (*err) throw std::runtime_error(err);
      });
    }
  }
  check(cudaGetLastError(), "after timing");

  std::printf("%-22s %6s %2s %10s %10s %10s %10s %10s %10s %8s %8s\n", "variant", "T", "k", "stream_us", "graph_us",
              "stream_pdl", "graph_pdl", "single_us", "floor_us", "xfloor", "xfl_pdl");
  for (const Row& r : rows) {
    std::printf("%-22s %6lld %2d %10.2f %10.2f %10.2f %10.2f %10.2f %10.2f %8.2f %8.2f\n", r.variant,
                static_cast<long long>(r.tokens), r.k, r.stream_us, r.graph_us, r.stream_pdl_us, r.graph_pdl_us,
                r.single_us, r.floor_us, std::min(r.stream_us, r.graph_us) / r.floor_us,
                std::min(r.stream_pdl_us, r.graph_pdl_us) / r.floor_us);
  }
  if (csv_path) {
    FILE* f = std::fopen(csv_path, "w");
    if (!f) throw std::runtime_error(std::string("cannot write ") + csv_path);
    std::fprintf(f, "device,copy_gbs,variant,T,E,k,stream_us,graph_us,bytes,floor_us,stream_pdl_us,graph_pdl_us,single_us\n");
    for (const Row& r : rows) {
      std::fprintf(f, "%s,%.1f,%s,%lld,%lld,%d,%.3f,%.3f,%.0f,%.6f,%.3f,%.3f,%.3f\n", prop.name, copy_gbs, r.variant,
                   static_cast<long long>(r.tokens), static_cast<long long>(E), r.k, r.stream_us, r.graph_us,
                   r.bytes, r.floor_us, r.stream_pdl_us, r.graph_pdl_us, r.single_us);
    }
    std::fclose(f);
  }
  cudaFree(blocker);
  cudaFree(logits);
  cudaFree(weights);
  cudaFree(ids);
  cudaFree(nan_flags);
  cudaFree(bias);
  cudaFree(scale);
  cudaStreamDestroy(s);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "router_bench: %s\n", e.what());
  return 1;
}
