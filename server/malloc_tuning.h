// The server's heap policy (--malloc_retain).
//
// A server's messages allocate and free the same sizes over and over (a
// 1024-row message: ~2000 vectors of 8 KB, the request's query bytes and
// the response). glibc returns the freed top of the heap to the OS once it
// passes M_TRIM_THRESHOLD (128 KiB by default, raised only as large mmap
// chunks are freed), and serves blocks of 128 KiB or more with mmap, so each
// such message faulted in its pages afresh (bench/RESULTS.md section 20:
// 1.6 ms of a 1024-row message's 7.6 ms went to copying its positions into
// fresh vectors).
//
//   RetainFreedMemory(int64_t{1} << 30);   // keep up to 1 GiB of freed heap
#ifndef HISA_SERVER_MALLOC_TUNING_H_
#define HISA_SERVER_MALLOC_TUNING_H_

#include <cstdint>

namespace hisa {

// Keeps up to `bytes` (at most 1 GiB) of freed heap memory for reuse
// instead of returning it to the OS, and serves blocks below 32 MiB from the
// heap (a fixed mmap threshold). Call once, at start, before the threads.
// bytes <= 0, or a C library other than glibc: nothing changes. Returns
// whether the policy was applied.
bool RetainFreedMemory(int64_t bytes);

}  // namespace hisa

#endif  // HISA_SERVER_MALLOC_TUNING_H_
