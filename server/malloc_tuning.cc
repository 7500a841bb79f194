#include "server/malloc_tuning.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cstdint>

namespace hisa {

bool RetainFreedMemory(int64_t bytes) {
#if defined(__GLIBC__)
  if (bytes <= 0) return false;
  const int64_t most = int64_t{1} << 30;  // mallopt takes an int
  // glibc's largest mmap threshold; fixed, so no longer dynamic.
  const bool mmap_set = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
  const bool trim_set =
      mallopt(M_TRIM_THRESHOLD, static_cast<int>(std::min(bytes, most))) == 1;
  return mmap_set && trim_set;
#else
  (void)bytes;
  return false;
#endif
}

}  // namespace hisa
