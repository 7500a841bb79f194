// --malloc_retain's heap policy (server/malloc_tuning.h), observed through
// glibc's own accounting (mallinfo2). Each check runs in a child process
// of its own (a death test), so the policy it sets does not leak into
// another test.
#include "server/malloc_tuning.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "gtest/gtest.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HISA_SANITIZED_HEAP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define HISA_SANITIZED_HEAP 1
#endif
#endif

namespace hisa {
namespace {

#if defined(__GLIBC__) && !defined(HISA_SANITIZED_HEAP)

constexpr size_t kBlock = size_t{16} << 20;  // under the 32 MiB threshold

// A block, touched so that its pages are really in use.
char* TouchedBlock() {
  char* p = static_cast<char*>(std::malloc(kBlock));
  if (p != nullptr) std::memset(p, 1, kBlock);
  return p;
}

// Exits 0 when `ok`, else prints `what` and exits 1: the checks run in a
// child process (EXPECT_EXIT), since the heap policy is process-wide.
void ExitWith(bool ok, const char* what) {
  if (!ok) std::fprintf(stderr, "%s\n", what);
  std::exit(ok ? 0 : 1);
}

// With the policy: a 16 MiB block comes from the heap, stays there once
// freed, and the next one reuses it.
void FreedBlockIsKeptAndReused() {
  if (!RetainFreedMemory(int64_t{1} << 30)) ExitWith(false, "not applied");
  char* p = TouchedBlock();
  if (p == nullptr) ExitWith(false, "malloc failed");
  // glibc's default threshold (128 KiB until a large mmapped block is
  // freed) would have mapped it.
  if (mallinfo2().arena < kBlock) ExitWith(false, "block not in the heap");
  std::free(p);
  const struct mallinfo2 freed = mallinfo2();
  if (freed.arena < kBlock || freed.fordblks < kBlock) {
    ExitWith(false, "freed block trimmed from the heap");
  }
  char* q = TouchedBlock();
  const bool reused = mallinfo2().arena <= freed.arena;
  std::free(q);
  ExitWith(reused, "heap grew for the next block");
}

// Without it (0): the same block is mmapped, and freeing it unmaps it.
void ZeroKeepsTheDefaults() {
  if (RetainFreedMemory(0) || RetainFreedMemory(-1)) {
    ExitWith(false, "0 or -1 applied a policy");
  }
  const size_t arena_before = mallinfo2().arena;
  char* p = TouchedBlock();
  if (p == nullptr) ExitWith(false, "malloc failed");
  const struct mallinfo2 held = mallinfo2();
  if (held.hblkhd < kBlock || held.arena >= arena_before + kBlock) {
    ExitWith(false, "block not mmapped");
  }
  std::free(p);
  ExitWith(mallinfo2().hblkhd < kBlock, "freed block still mapped");
}

TEST(MallocTuningTest, FreedBlocksStayInTheHeapForReuse) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(FreedBlockIsKeptAndReused(), testing::ExitedWithCode(0), "");
}

TEST(MallocTuningTest, ZeroLeavesGlibcsDefaults) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(ZeroKeepsTheDefaults(), testing::ExitedWithCode(0), "");
}

#else

TEST(MallocTuningTest, SkippedWithoutGlibcsOwnHeap) {
  GTEST_SKIP() << "glibc's allocator is replaced (sanitizer) or absent";
}

#endif

}  // namespace
}  // namespace hisa
