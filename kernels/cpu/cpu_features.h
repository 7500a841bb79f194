// Run-time choice of the CPU kernels' instruction set.
//
//   hisa::cpu::CpuIsa isa = hisa::cpu::DetectCpuIsa();  // best this CPU runs
//   hisa::cpu::DecodeFp8(isa, bytes, n, scale, out);
//
// The vector kernels are compiled per function with
// __attribute__((target(...))) so the library itself stays portable x86-64
// (no -march=native); they run only where __builtin_cpu_supports reports the
// features. Tiers:
//   kAvx512: AVX-512F score kernel for full 32-head groups (the H = 32, 64,
//            128 of real models), AVX2 for everything else. On Xeons with two
//            512-bit FMA units (this project's dev machine, the hosts of
//            H100/H200 servers) the FP32 FMA peak is twice AVX2's.
//   kAvx2:   AVX2 + FMA + F16C for scoring, decode and pooling.
//   kScalar: portable C++, used where nothing else runs and by the tests as
//            a cross-check.
#ifndef HISA_KERNELS_CPU_CPU_FEATURES_H_
#define HISA_KERNELS_CPU_CPU_FEATURES_H_

namespace hisa::cpu {

enum class CpuIsa : int {
  kAuto = 0,    // resolve with DetectCpuIsa()
  kScalar = 1,  // portable C++
  kAvx2 = 2,    // AVX2 + FMA + F16C
  kAvx512 = 3,  // kAvx2 + AVX-512F
};

// The best tier this CPU (and an x86 build) runs: kAvx512 with AVX-512F,
// AVX2, FMA and F16C; kAvx2 with the last three; else kScalar.
CpuIsa DetectCpuIsa();

// `requested`, downgraded to what this CPU runs: kAuto -> DetectCpuIsa();
// a tier the CPU lacks -> the best one below it that it has.
CpuIsa ResolveCpuIsa(CpuIsa requested);

// True for the tiers that may run the AVX2 kernels (kAvx2, kAvx512).
inline bool HasAvx2(CpuIsa isa) {
  return isa == CpuIsa::kAvx2 || isa == CpuIsa::kAvx512;
}

// "scalar", "avx2", "avx512" or "auto".
const char* CpuIsaName(CpuIsa isa);

}  // namespace hisa::cpu

#if defined(__x86_64__) || defined(__i386__)
#define HISA_CPU_HAVE_X86 1
// Applied to every vector kernel function (and the helpers they inline).
#define HISA_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define HISA_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))
#else
#define HISA_CPU_HAVE_X86 0
#define HISA_TARGET_AVX2
#define HISA_TARGET_AVX512
#endif

#endif  // HISA_KERNELS_CPU_CPU_FEATURES_H_
