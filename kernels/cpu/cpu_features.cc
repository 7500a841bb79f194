#include "kernels/cpu/cpu_features.h"

namespace hisa::cpu {

CpuIsa DetectCpuIsa() {
#if HISA_CPU_HAVE_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    return __builtin_cpu_supports("avx512f") ? CpuIsa::kAvx512 : CpuIsa::kAvx2;
  }
#endif
  return CpuIsa::kScalar;
}

CpuIsa ResolveCpuIsa(CpuIsa requested) {
  const CpuIsa best = DetectCpuIsa();
  if (requested == CpuIsa::kAuto) return best;
  // Tiers are ordered by their enum value.
  return static_cast<int>(requested) <= static_cast<int>(best) ? requested
                                                               : best;
}

const char* CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAuto:
      return "auto";
    case CpuIsa::kScalar:
      return "scalar";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

}  // namespace hisa::cpu
