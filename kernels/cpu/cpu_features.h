// Run-time choice of the CPU kernels' instruction set.
//
//   hisa::cpu::CpuIsa isa = hisa::cpu::DetectCpuIsa();   // kAvx2 or kScalar
//   hisa::cpu::DecodeFp8(isa, bytes, n, scale, out);
//
// The AVX2 kernels are compiled per function with
// __attribute__((target("avx2,fma,f16c"))) so the library itself stays
// portable x86-64 (no -march=native); they run only where
// __builtin_cpu_supports reports all three features. Every kernel has a
// portable scalar twin used elsewhere and by the tests as a cross-check.
#ifndef HISA_KERNELS_CPU_CPU_FEATURES_H_
#define HISA_KERNELS_CPU_CPU_FEATURES_H_

namespace hisa::cpu {

enum class CpuIsa : int {
  kAuto = 0,    // resolve with DetectCpuIsa()
  kScalar = 1,  // portable C++
  kAvx2 = 2,    // AVX2 + FMA + F16C
};

// kAvx2 when this CPU has AVX2, FMA and F16C (and the build targets x86);
// kScalar otherwise.
CpuIsa DetectCpuIsa();

// `requested`, downgraded to what this CPU runs: kAuto -> DetectCpuIsa(),
// kAvx2 on a CPU without it -> kScalar.
CpuIsa ResolveCpuIsa(CpuIsa requested);

// "scalar", "avx2" or "auto".
const char* CpuIsaName(CpuIsa isa);

}  // namespace hisa::cpu

#if defined(__x86_64__) || defined(__i386__)
#define HISA_CPU_HAVE_X86 1
// Applied to every AVX2 kernel function (and the helpers they inline).
#define HISA_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define HISA_CPU_HAVE_X86 0
#define HISA_TARGET_AVX2
#endif

#endif  // HISA_KERNELS_CPU_CPU_FEATURES_H_
