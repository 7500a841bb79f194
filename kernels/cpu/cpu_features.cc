#include "kernels/cpu/cpu_features.h"

namespace hisa::cpu {

CpuIsa DetectCpuIsa() {
#if HISA_CPU_HAVE_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    return CpuIsa::kAvx2;
  }
#endif
  return CpuIsa::kScalar;
}

CpuIsa ResolveCpuIsa(CpuIsa requested) {
  const CpuIsa best = DetectCpuIsa();
  switch (requested) {
    case CpuIsa::kAuto: return best;
    case CpuIsa::kScalar: return CpuIsa::kScalar;
    case CpuIsa::kAvx2: return best;
  }
  return CpuIsa::kScalar;
}

const char* CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAuto: return "auto";
    case CpuIsa::kScalar: return "scalar";
    case CpuIsa::kAvx2: return "avx2";
  }
  return "unknown";
}

}  // namespace hisa::cpu
