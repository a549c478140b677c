// Throughput of single 512-bit instructions the quantizer loops use, and of pairs of them, in
// instructions per core clock: which execution ports a CPU runs them on, without hardware
// counters (the device host's VM exposes none). One instruction class per benchmark, eight
// independent registers so that latency does not bound it (vpermw's, ~6 cycles on Intel, still
// does in the pairs, which have four chains of it). The clock is a dependent imul chain's rate
// (latency 3 on every x86 core this project meets): a dependent add chain is no clock on Golden
// Cove and later, which rename some of them away. Result on the device host's Xeon (Emerald
// Rapids) and the dev VM's EPYC (Zen 4) in bench/RESULTS.md, "Fifteenth session".
#include <benchmark/benchmark.h>

#include <chrono>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
namespace {

double clock_ghz() {
  static const double ghz = [] {
    const long n = 50'000'000;
    long a = 3;
    const auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < n; ++i) asm volatile("imul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0" : "+r"(a));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return 12.0 * n / s / 1e9;
  }();
  return ghz;
}

#define MOEPREP_CLOBBERS                                                                                            \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm14", "xmm15", "k1", "k2"
#define MOEPREP_ZERO(r) "vpxord %%zmm" #r ",%%zmm" #r ",%%zmm" #r "\n\t"
// Registers 1..8 are the independent destinations; 14 and 15 hold constants.
#define SRLW(r) "vpsrlw $1,%%zmm" #r ",%%zmm" #r "\n\t"
#define SLLD(r) "vpslld $16,%%zmm" #r ",%%zmm" #r "\n\t"
#define SUBUSW(r) "vpsubusw %%zmm15,%%zmm" #r ",%%zmm" #r "\n\t"
#define MAXUW(r) "vpmaxuw %%zmm15,%%zmm" #r ",%%zmm" #r "\n\t"
#define PERMW(r) "vpermw %%zmm15,%%zmm" #r ",%%zmm" #r "\n\t"
#define PSHUFB(r) "vpshufb %%zmm15,%%zmm" #r ",%%zmm" #r "\n\t"
#define UNPCKW(r) "vpunpcklwd %%zmm15,%%zmm" #r ",%%zmm" #r "\n\t"
#define TESTMW(r) "vptestmw %%zmm15,%%zmm" #r ",%%k1\n\t"
#define ANDD(r) "vpandd %%zmm15,%%zmm" #r ",%%zmm" #r "\n\t"
#define ADDW(r) "vpaddw %%zmm15,%%zmm" #r ",%%zmm" #r "\n\t"
#define ADDW_MASKZ(r) "vpaddw %%zmm15,%%zmm" #r ",%%zmm" #r "%{%%k2%}%{z%}\n\t"
#define TERNLOG(r) "vpternlogd $0xf8,%%zmm15,%%zmm14,%%zmm" #r "\n\t"
#define FMA(r) "vfmadd231ps %%zmm15,%%zmm14,%%zmm" #r "\n\t"
#define SUBPS(r) "vsubps %%zmm15,%%zmm" #r ",%%zmm" #r "\n\t"
#define EIGHT(A, B) A(1) B(2) A(3) B(4) A(5) B(6) A(7) B(8)

// 16 instructions an iteration: eight of A and eight of B interleaved (A == B for one class).
#define MOEPREP_PORT_BENCH(name, A, B)                                                                     \
  __attribute__((target("avx512f,avx512bw"))) void BM_Ports_##name(benchmark::State& state) {               \
    if (!__builtin_cpu_supports("avx512bw")) return state.SkipWithError("no AVX-512 BW on this CPU");       \
    const double ghz = clock_ghz();                                                                         \
    asm volatile(MOEPREP_ZERO(1) MOEPREP_ZERO(2) MOEPREP_ZERO(3) MOEPREP_ZERO(4) MOEPREP_ZERO(5)           \
                     MOEPREP_ZERO(6) MOEPREP_ZERO(7) MOEPREP_ZERO(8) MOEPREP_ZERO(14) MOEPREP_ZERO(15)     \
                         "kxnord %%k2,%%k2,%%k2" ::: MOEPREP_CLOBBERS);                                     \
    const long n = 1'000'000;                                                                               \
    const auto start = std::chrono::steady_clock::now();                                                    \
    for (auto _ : state)                                                                                    \
      for (long i = 0; i < n; ++i) asm volatile(EIGHT(A, B) EIGHT(A, B) ::: MOEPREP_CLOBBERS);              \
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();      \
    state.counters["per_cycle"] = 16.0 * n * static_cast<double>(state.iterations()) / (s * ghz * 1e9);     \
    state.counters["clock_GHz"] = ghz;                                                                      \
  }                                                                                                         \
  BENCHMARK(BM_Ports_##name)->Unit(benchmark::kMillisecond)->UseRealTime();

MOEPREP_PORT_BENCH(vpsrlw, SRLW, SRLW)
MOEPREP_PORT_BENCH(vpslld, SLLD, SLLD)
MOEPREP_PORT_BENCH(vpsubusw, SUBUSW, SUBUSW)
MOEPREP_PORT_BENCH(vpmaxuw, MAXUW, MAXUW)
MOEPREP_PORT_BENCH(vpermw, PERMW, PERMW)
MOEPREP_PORT_BENCH(vpshufb, PSHUFB, PSHUFB)
MOEPREP_PORT_BENCH(vpunpcklwd, UNPCKW, UNPCKW)
MOEPREP_PORT_BENCH(vptestmw, TESTMW, TESTMW)
MOEPREP_PORT_BENCH(vpandd, ANDD, ANDD)
MOEPREP_PORT_BENCH(vpaddw, ADDW, ADDW)
MOEPREP_PORT_BENCH(vpaddw_maskz, ADDW_MASKZ, ADDW_MASKZ)
MOEPREP_PORT_BENCH(vpternlogd, TERNLOG, TERNLOG)
MOEPREP_PORT_BENCH(vfmadd231ps, FMA, FMA)
MOEPREP_PORT_BENCH(vsubps, SUBPS, SUBPS)
// Pairs: two classes that share a port run together no faster than one alone.
MOEPREP_PORT_BENCH(vpsrlw_and_vpsubusw, SRLW, SUBUSW)
MOEPREP_PORT_BENCH(vpsrlw_and_vpmaxuw, SRLW, MAXUW)
MOEPREP_PORT_BENCH(vpsrlw_and_vpslld, SRLW, SLLD)
MOEPREP_PORT_BENCH(vpsrlw_and_vptestmw, SRLW, TESTMW)
MOEPREP_PORT_BENCH(vpsrlw_and_vpshufb, SRLW, PSHUFB)
MOEPREP_PORT_BENCH(vptestmw_and_vpermw, TESTMW, PERMW)
MOEPREP_PORT_BENCH(vpsrlw_and_vfmadd231ps, SRLW, FMA)
MOEPREP_PORT_BENCH(vpsrlw_and_vpternlogd, SRLW, TERNLOG)

}  // namespace
#endif

BENCHMARK_MAIN();
