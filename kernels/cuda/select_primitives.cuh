// Device building blocks of the selection kernels: PTX wrappers (cp.async,
// ldmatrix, mma.sync), the order-preserving score key, and CTA-wide ordered
// top-k (radix select + stable compaction). Every CTA-wide function is called
// by all kSelectThreads threads of the block with block-uniform arguments.
//
//   Threshold th = RadixSelect(n, k, [&](int i) { return Composite(...); }, rs);
//   n = CompactBuffer<16>(keys, pos, n, th, rs);   // keeps exactly k, in order
//
// Composite keys. An entry (score, position) is ranked by the 64-bit value
// (OrderedKey(score) << 32) | (0xFFFFFFFF - position): larger is better, so
// higher scores win and, among equal scores, the lower position wins
// (SPEC 4.3). Composites of distinct positions are distinct, so "the k
// largest composites" is a unique set. NaN ranks below every number; -0.0
// ranks equal to +0.0.
#ifndef HISA_KERNELS_CUDA_SELECT_PRIMITIVES_CUH_
#define HISA_KERNELS_CUDA_SELECT_PRIMITIVES_CUH_

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/select_layout.h"

namespace hisa::cuda {

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy global -> shared; zero-fills when !valid (src is then
// not read but must still be a valid address).
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem,
                                          bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
                   SmemAddr(smem)),
               "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void CpAsync4(void* smem, const void* gmem,
                                         bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(
                   SmemAddr(smem)),
               "l"(gmem), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void LdMatrixX2(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(SmemAddr(p)));
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* p) {
  asm volatile(
      "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
      : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
      : "r"(SmemAddr(p)));
}

// D += A * B, A 16x32 e4m3 (row), B 32x8 e4m3 (col), fp32 accumulate. The
// k order inside a fragment only has to agree between A and B, which it does
// because both are loaded with the same byte-to-register convention.
__device__ __forceinline__ void MmaFp8(float (&d)[4], const uint32_t (&a)[4],
                                       uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// D += A * B, A 16x16 bf16 (row), B 16x8 bf16 (col), fp32 accumulate.
__device__ __forceinline__ void MmaBf16(float (&d)[4], const uint32_t (&a)[4],
                                        uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---- Hopper warpgroup MMA (sm_90a). Operands in shared memory, K-major,
// 128-byte swizzle: row r of a tile (128 bytes of K) at r * 128, its 16-byte
// chunk c at chunk position c ^ (r % 8); tiles 1024-byte aligned.
// An operand descriptor is two 32-bit words: the low word (start address in
// 16-byte units, leading byte offset), which WgmmaDescSw128Lo returns and
// the MMAs below take, and the high word, the same for every such tile
// (stride 8 rows x 128 B, 128-byte swizzle), which they add themselves. A
// k-step of 32 fp8 values is +2 on the low word (its address field stays
// inside shared memory). Keeping only the low word in the caller's loops
// lets them step descriptors with 32-bit adds: with 64-bit descriptors the
// token loop spent ~40 of its ~200 instructions per warp and tile moving
// them into uniform registers (H200 SASS, session 17).
__device__ __forceinline__ uint32_t WgmmaDescSw128Lo(const void* smem_tile) {
  const uint32_t addr = SmemAddr(smem_tile);
  return ((addr & 0x3FFFFu) >> 4)      // start address
         | (uint32_t{16 >> 4} << 16);  // leading byte offset
}
inline constexpr uint32_t kWgmmaDescSw128Hi =
    (1024 >> 4)     // stride: 8 rows x 128 B
    | (1u << 30);   // 128-byte swizzle
__device__ __forceinline__ void WgmmaFence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void WgmmaCommit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void WgmmaWaitAll() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
// Generic-proxy shared-memory writes (st.shared, cp.async) become visible to
// the async proxy (wgmma operand reads) after this fence and a barrier.
__device__ __forceinline__ void FenceProxyAsync() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Pins accumulator registers in place between wgmma asm statements: without
// it the compiler may read them before wgmma.wait_group (CUTLASS's
// warpgroup_fence_operand).
template <int N>
__device__ __forceinline__ void WgmmaFenceOperands(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
#define HISA_WGMMA_ACC8(i)                                                 \
  "+f"(d[i + 0]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]),          \
      "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])

// D (64 x 64 fp32, 32 per thread) = A (64 x 128 e4m3) * B (64 x 128
// e4m3)^T: four k-steps of 32 (+2 on each descriptor low word, see
// WgmmaDescSw128Lo) in one statement (d is overwritten; the first step runs
// with scale-d = 0), so that the descriptors' constant high word is moved
// into place once, not per step.
__device__ __forceinline__ void WgmmaM64N64K128(float (&d)[32], uint32_t a,
                                                uint32_t b) {
  asm volatile(
      "{\n.reg .b64 da, db;\n.reg .b32 a1, b1;\n"
      "mov.b64 da, {%32, %34};\nmov.b64 db, {%33, %34};\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31},"
      " da, db, 0, 1, 1;\n"
      "add.u32 a1, %32, 2;\nadd.u32 b1, %33, 2;\n"
      "mov.b64 da, {a1, %34};\nmov.b64 db, {b1, %34};\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31},"
      " da, db, 1, 1, 1;\n"
      "add.u32 a1, %32, 4;\nadd.u32 b1, %33, 4;\n"
      "mov.b64 da, {a1, %34};\nmov.b64 db, {b1, %34};\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31},"
      " da, db, 1, 1, 1;\n"
      "add.u32 a1, %32, 6;\nadd.u32 b1, %33, 6;\n"
      "mov.b64 da, {a1, %34};\nmov.b64 db, {b1, %34};\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31},"
      " da, db, 1, 1, 1;\n}\n"
      : HISA_WGMMA_ACC8(0), HISA_WGMMA_ACC8(8), HISA_WGMMA_ACC8(16),
        HISA_WGMMA_ACC8(24)
      : "r"(a), "r"(b), "r"(kWgmmaDescSw128Hi));
}
// D (64 x 128 fp32, 64 per thread) (+)= A (64 x 32 e4m3) * B (128 x 32)^T;
// a, b: the operands' descriptor low words (WgmmaDescSw128Lo).
__device__ __forceinline__ void WgmmaM64N128K32(float (&d)[64], uint32_t a,
                                                uint32_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\n.reg .b64 da, db;\nsetp.ne.b32 p, %67, 0;\n"
      "mov.b64 da, {%64, %66};\nmov.b64 db, {%65, %66};\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63},"
      " da, db, p, 1, 1;\n}\n"
      : HISA_WGMMA_ACC8(0), HISA_WGMMA_ACC8(8), HISA_WGMMA_ACC8(16),
        HISA_WGMMA_ACC8(24), HISA_WGMMA_ACC8(32), HISA_WGMMA_ACC8(40),
        HISA_WGMMA_ACC8(48), HISA_WGMMA_ACC8(56)
      : "r"(a), "r"(b), "r"(kWgmmaDescSw128Hi), "r"(accumulate));
}
#undef HISA_WGMMA_ACC8

// ---- Programmatic dependent launch (sm_90). A kernel launched with the
// programmatic stream serialization attribute may start while the previous
// kernel of its stream still runs, once every CTA of that kernel has called
// AllowDependentLaunch (or exited); GridDependencyWait then blocks until the
// previous kernel has completed and its memory is visible. A kernel launched
// without the attribute returns from the wait at once.
__device__ __forceinline__ void AllowDependentLaunch() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}
__device__ __forceinline__ void GridDependencyWait() {
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
}

// ---- Timeline (SelectBuffers::trace; a null pointer costs one branch).
// Launches of more than kTraceMaxCtas CTAs record every stride-th CTA.
__device__ __forceinline__ void Trace(uint64_t* trace, TracePoint point) {
  if (trace == nullptr || threadIdx.x != 0) return;
  const uint32_t stride = (gridDim.x + kTraceMaxCtas - 1) / kTraceMaxCtas;
  if (blockIdx.x % stride != 0) return;
  uint64_t now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  uint64_t* cta =
      trace + static_cast<int64_t>(blockIdx.x / stride) * kTraceSlots;
  cta[point] = now;
  if (point == kTraceStart) {
    uint32_t sm;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
    cta[kTraceSm] = sm;
  }
}

// ---- Transaction barriers and the bulk copy engine (sm_90). A CTA is its
// own cluster here, so the .shared::cluster forms address this CTA's shared
// memory.
__device__ __forceinline__ void MbarInit(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(SmemAddr(bar)),
               "r"(count)
               : "memory");
}
// Makes mbarrier.init visible to the async proxy (bulk copies complete on
// the barriers); follow with __syncthreads.
__device__ __forceinline__ void MbarFenceInit() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// Ends `bar` as a barrier (one thread, once no thread waits on it any more)
// so that its memory may hold other data.
__device__ __forceinline__ void MbarInval(uint64_t* bar) {
  asm volatile("mbarrier.inval.shared::cta.b64 [%0];\n" ::"r"(SmemAddr(bar))
               : "memory");
}
__device__ __forceinline__ void MbarArrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(SmemAddr(bar))
               : "memory");
}
// One arrival that also announces `bytes` of bulk copies completing on bar.
__device__ __forceinline__ void MbarArriveExpectTx(uint64_t* bar,
                                                   uint32_t bytes) {
  asm volatile(
      "mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(
          SmemAddr(bar)),
      "r"(bytes)
      : "memory");
}
// Blocks until the phase with parity `parity` of bar has completed.
__device__ __forceinline__ void MbarWait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "HISA_MBAR_WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra HISA_MBAR_WAIT_%=;\n}\n" ::"r"(SmemAddr(bar)),
      "r"(parity)
      : "memory");
}
// 2-D tensor copy global -> shared of the box at (x, y) of the tensor map
// (a kernel parameter: __grid_constant__), completing on bar.
__device__ __forceinline__ void TmaLoad2d(void* smem, const void* tensor_map,
                                          int32_t x, int32_t y,
                                          uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::"
      "bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(SmemAddr(smem)),
      "l"(reinterpret_cast<uint64_t>(tensor_map)), "r"(x), "r"(y),
      "r"(SmemAddr(bar))
      : "memory");
}
// Fetches the tensor map's descriptor ahead of its first copy, so that the
// first TmaLoad2d does not wait for it.
__device__ __forceinline__ void PrefetchTensorMap(const void* tensor_map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(
                   reinterpret_cast<uint64_t>(tensor_map))
               : "memory");
}
// Contiguous bulk copy global -> shared (16-byte aligned, bytes % 16 == 0),
// completing on bar.
__device__ __forceinline__ void BulkLoad(void* smem, const void* gmem,
                                         uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes "
      "[%0], [%1], %2, [%3];\n" ::"r"(SmemAddr(smem)),
      "l"(gmem), "r"(bytes), "r"(SmemAddr(bar))
      : "memory");
}

__device__ __forceinline__ float Fp8ToFloat(uint8_t byte) {
  __nv_fp8_e4m3 v;
  v.__x = byte;
  return static_cast<float>(v);
}
// bf16 bits of an e4m3 byte (exact: e4m3 values are bf16 values); NaN -> 0.
__device__ __forceinline__ uint32_t Fp8ToBf16Bits(uint8_t byte) {
  const float f = Fp8ToFloat(byte);
  return f != f ? 0u : __float_as_uint(f) >> 16;
}
__device__ __forceinline__ float Bf16BitsToFloat(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

__device__ __forceinline__ uint32_t OrderedKey(float f) {
  uint32_t u = __float_as_uint(f);
  if (f != f) return 0;            // NaN: below everything
  if (u == 0x80000000u) u = 0;     // -0.0 == +0.0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
// A candidate slot's key in the token loops, branch-free: OrderedKey(x),
// except that NaN maps to 1 (the lowest candidate key; 0 marks a slot that
// is no candidate) and -0.0 is not folded into +0.0. A loop's head sum is
// never -0.0 (its first FMA adds +0.0), so only a product that underflows
// to -0.0 ranks one key below +0.0: a difference of 0, inside SPEC 4.4's
// tolerance. Non-NaN keys are never 0.
__device__ __forceinline__ uint32_t CandidateKey(float x) {
  const uint32_t u = __float_as_uint(x);
  const uint32_t key =
      u ^ (static_cast<uint32_t>(static_cast<int32_t>(u) >> 31) | 0x80000000u);
  return x != x ? 1u : key;
}
// *p += 1 (shared memory) when `pred`, as one predicated instruction
// instead of a branch around it.
__device__ __forceinline__ void SharedIncrementIf(bool pred, uint32_t* p) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %1, 0;\n"
      "@p red.shared.add.u32 [%0], 1;\n}\n" ::"r"(SmemAddr(p)),
      "r"(static_cast<int>(pred))
      : "memory");
}
// *p = v (global memory) when `pred`, as one predicated instruction.
__device__ __forceinline__ void StoreGlobalIf(bool pred, uint32_t* p,
                                              uint32_t v) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %2, 0;\n"
      "@p st.global.u32 [%0], %1;\n}\n" ::"l"(p),
      "r"(v), "r"(static_cast<int>(pred))
      : "memory");
}
__device__ __forceinline__ float KeyToFloat(uint32_t key) {
  const uint32_t u = (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key;
  return __uint_as_float(u);
}
__device__ __forceinline__ uint64_t Composite(uint32_t key, uint32_t index) {
  return (static_cast<uint64_t>(key) << 32) | (0xFFFFFFFFu - index);
}

// Fast floor division by a per-layer constant (select_layout.h DivMagic).
__device__ __forceinline__ uint32_t DivFast(uint32_t n, uint64_t magic) {
  return static_cast<uint32_t>(__umul64hi(static_cast<uint64_t>(n), magic));
}

struct RadixShared {
  uint32_t hist[256];
  int32_t digit;
  int32_t need;
  int32_t bucket;
  int32_t ticket;
  int32_t total;
  int32_t count;
  int32_t warp_total[kSelectThreads / 32];
  int32_t tie_total[kSelectThreads / 32];
};

// One counting pass of a radix select over 32- or 64-bit keys (get's
// type): zeroes hist[0, bins), then adds 1 at hist[(key >> next) &
// digit_mask] for every key of get(0..n-1) with (key >> shift) == prefix
// (every key when shift is the key's width). Barriers before the counts and
// after them.
template <class Get>
__device__ __forceinline__ void CountDigits(int n, Get get, uint64_t prefix,
                                            int shift, int next,
                                            uint32_t digit_mask,
                                            uint32_t* hist, int bins) {
  using Key = std::decay_t<decltype(get(0))>;
  constexpr int kKeyBits = static_cast<int>(sizeof(Key)) * 8;
  for (int i = threadIdx.x; i < bins; i += kSelectThreads) hist[i] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += kSelectThreads) {
    const Key key = get(i);
    if (shift == kKeyBits || (key >> shift) == prefix) {
      atomicAdd(&hist[static_cast<uint32_t>(key >> next) & digit_mask], 1u);
    }
  }
  __syncthreads();
}

// One radix pass's decision, by warp 0 over the 256-bin histogram: the bin
// (rs.digit) that holds the need-th largest entry, how many entries of that
// bin are still needed (rs.need) and how many it holds (rs.bucket).
__device__ __forceinline__ void FindThresholdBin(int need, RadixShared& rs) {
  const int tid = threadIdx.x;
  if (tid >= 32) return;
  uint32_t h[8];
  uint32_t total = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    h[j] = rs.hist[tid * 8 + j];
    total += h[j];
  }
  uint32_t suffix = total;  // entries in this lane's bins and above
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const uint32_t v = __shfl_down_sync(0xFFFFFFFFu, suffix, off);
    if (tid + off < 32) suffix += v;
  }
  uint32_t cum = suffix - total;
  const uint32_t want = static_cast<uint32_t>(need);
#pragma unroll
  for (int j = 7; j >= 0; --j) {
    if (cum < want && cum + h[j] >= want) {
      rs.digit = tid * 8 + j;
      rs.need = static_cast<int32_t>(want - cum);
      rs.bucket = static_cast<int32_t>(h[j]);
    }
    cum += h[j];
  }
}

// Entries kept by a selection: composite c is kept iff (c >> shift) >= prefix.
struct Threshold {
  uint64_t prefix = 0;
  int32_t shift = 0;
};

// The threshold keeping exactly `need` of the `n` (> need >= 1) distinct
// composites get(0..n-1). MSB-first radix select with 8-bit digits that stops
// as soon as the remaining entries of the current bucket are all kept.
template <class Get>
__device__ Threshold RadixSelect(int n, int need, Get get, RadixShared& rs) {
  uint64_t prefix = 0;
  int shift = 64;
#pragma unroll 1
  for (int pass = 0; pass < 8; ++pass) {
    shift -= 8;
    CountDigits(n, get, prefix, shift + 8, shift, 255u, rs.hist, 256);
    FindThresholdBin(need, rs);
    __syncthreads();
    const int digit = rs.digit;
    const int bucket = rs.bucket;
    need = rs.need;
    prefix = (prefix << 8) | static_cast<uint64_t>(digit);
    __syncthreads();
    if (bucket == need) break;
  }
  Threshold th;
  th.prefix = prefix;
  th.shift = shift;
  return th;
}

__device__ __forceinline__ bool Keeps(const Threshold& th, uint64_t c) {
  return (c >> th.shift) >= th.prefix;
}

// Stable in-place compaction of keys/pos[0, n) (n <= kSelectThreads * ITEMS)
// to the entries `th` keeps; returns their number. Order is preserved, so a
// buffer sorted by position stays sorted.
template <int ITEMS>
__device__ int CompactBuffer(uint32_t* keys, int32_t* pos, int n,
                             const Threshold& th, RadixShared& rs) {
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int base = warp * 32 * ITEMS;
  uint32_t kk[ITEMS];
  int32_t pp[ITEMS];
  uint32_t ballot[ITEMS];
  int count = 0;
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    const int idx = base + j * 32 + lane;
    bool keep = false;
    kk[j] = 0;
    pp[j] = 0;
    if (idx < n) {
      kk[j] = keys[idx];
      pp[j] = pos[idx];
      keep = Keeps(th, Composite(kk[j], static_cast<uint32_t>(pp[j])));
    }
    ballot[j] = __ballot_sync(0xFFFFFFFFu, keep);
    count += __popc(ballot[j]);
  }
  if (lane == 0) rs.warp_total[warp] = count;
  __syncthreads();
  int offset = 0;
  int total = 0;
#pragma unroll
  for (int w = 0; w < kSelectThreads / 32; ++w) {
    const int t = rs.warp_total[w];
    offset += w < warp ? t : 0;
    total += t;
  }
  const uint32_t lower = (1u << lane) - 1u;
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    if ((ballot[j] >> lane) & 1u) {
      const int dst = offset + __popc(ballot[j] & lower);
      keys[dst] = kk[j];
      pos[dst] = pp[j];
    }
    offset += __popc(ballot[j]);
  }
  __syncthreads();
  return total;
}

// Selection on 32-bit keys alone, for entries already in position order:
// keeps every entry with (key >> shift) > prefix and, of the entries with
// (key >> shift) == prefix, the first `ties` in index order. Equal keys
// therefore go to the lower index, as composites would order them, without
// carrying positions through the radix passes.
struct KeyThreshold {
  uint32_t prefix = 0;
  int32_t shift = 0;
  int32_t ties = 0;  // default: keeps every key > 0
};

// The threshold keeping exactly `need` (1 <= need <= n) of the n keys
// get(0..n-1): MSB-first radix select, 8-bit digits (the last may be
// shorter), stopping early when the threshold bucket is kept whole. By
// default from scratch; given (prefix, shift), only among the keys with
// (key >> shift) == prefix, `need` being the rank inside that bucket.
template <class Get>
__device__ KeyThreshold RadixSelectKey(int n, int need, Get get,
                                       RadixShared& rs, uint32_t prefix = 0,
                                       int shift = 32) {
  KeyThreshold th;
  th.prefix = prefix;
  th.shift = shift;
#pragma unroll 1
  while (th.shift > 0) {
    const int next = th.shift > 8 ? th.shift - 8 : 0;
    const int bits = th.shift - next;
    CountDigits(n, get, th.prefix, th.shift, next, (1u << bits) - 1u,
                rs.hist, 256);
    FindThresholdBin(need, rs);
    __syncthreads();
    th.prefix = (th.shift == 32 ? 0u : th.prefix << bits) |
                static_cast<uint32_t>(rs.digit);
    th.shift = next;
    need = rs.need;
    const int bucket = rs.bucket;
    __syncthreads();
    if (bucket == need) break;
  }
  th.ties = need;
  return th;
}

// The bin of a kKeyHistBins-bin histogram that holds the need-th largest
// counted key: rs.digit, rs.need (how many of that bin are kept), rs.bucket
// (its count), and rs.total (every counted key; when rs.total < need,
// rs.digit is not set). The histogram is in registers: thread t holds bins
// [kHistBinsPerThread t, kHistBinsPerThread (t + 1)) in h.
inline constexpr int kHistBinsPerThread = kKeyHistBins / kSelectThreads;
static_assert(kHistBinsPerThread == 8, "two 16-byte loads per thread");
__device__ __forceinline__ void FindThresholdBinWideRegs(
    const uint32_t (&h)[kHistBinsPerThread], int need, RadixShared& rs) {
  constexpr int kPer = kHistBinsPerThread;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  uint32_t total = 0;
#pragma unroll
  for (int j = 0; j < kPer; ++j) total += h[j];
  uint32_t suffix = total;  // this lane's bins and the warp's higher ones
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const uint32_t v = __shfl_down_sync(0xFFFFFFFFu, suffix, off);
    if (lane + off < 32) suffix += v;
  }
  if (lane == 0) rs.warp_total[warp] = static_cast<int32_t>(suffix);
  __syncthreads();
  uint32_t cum = suffix - total;  // counted keys in higher bins
  uint32_t all = 0;
#pragma unroll
  for (int w = 0; w < kSelectThreads / 32; ++w) {
    const uint32_t t = static_cast<uint32_t>(rs.warp_total[w]);
    cum += w > warp ? t : 0u;
    all += t;
  }
  if (tid == 0) rs.total = static_cast<int32_t>(all);
  const uint32_t want = static_cast<uint32_t>(need);
#pragma unroll
  for (int j = kPer - 1; j >= 0; --j) {
    if (cum < want && cum + h[j] >= want) {
      rs.digit = tid * kPer + j;
      rs.need = static_cast<int32_t>(want - cum);
      rs.bucket = static_cast<int32_t>(h[j]);
    }
    cum += h[j];
  }
  __syncthreads();
}

// The same from the histogram in shared memory (16-byte aligned).
__device__ __forceinline__ void FindThresholdBinWide(const uint32_t* hist,
                                                     int need,
                                                     RadixShared& rs) {
  const uint4 lo = reinterpret_cast<const uint4*>(hist)[2 * threadIdx.x];
  const uint4 hi = reinterpret_cast<const uint4*>(hist)[2 * threadIdx.x + 1];
  const uint32_t h[kHistBinsPerThread] = {lo.x, lo.y, lo.z, lo.w,
                                          hi.x, hi.y, hi.z, hi.w};
  FindThresholdBinWideRegs(h, need, rs);
}

// The threshold keeping the k largest nonzero keys of keys[0, n) (shared
// memory; 0 = no candidate), given `hist`, the kKeyHistBins histogram of
// those nonzero keys' top bits (shared memory, 16-byte aligned; may be
// overwritten): the bin holding the k-th largest comes from the histogram;
// a bin of more than list_cap keys is split once more by the next
// kKeyHistBits bits (one pass over the keys into `hist`); then the keys of
// the (sub-)bin are gathered into `list` (shared memory, room for list_cap)
// and radix-selected there. Every nonzero key is kept when there are at
// most k.
__device__ __forceinline__ KeyThreshold HistSelectKey(const uint32_t* keys,
                                                      int n, int k,
                                                      uint32_t* hist,
                                                      uint32_t* list,
                                                      int list_cap,
                                                      RadixShared& rs) {
  FindThresholdBinWide(hist, k, rs);
  KeyThreshold th;  // keeps every key > 0
  if (rs.total <= k) return th;
  uint32_t prefix = static_cast<uint32_t>(rs.digit);
  int shift = kKeyHistShift;
  int need = rs.need;
  int bucket = rs.bucket;
  auto all_keys = [&](int i) { return keys[i]; };
  // Bin 0 may also hold zeros (no candidates), which the histogram does
  // not count: its entries are always ranked by radix passes over all n,
  // which see the zeros (ranked last).
  if (prefix == 0) return RadixSelectKey(n, need, all_keys, rs, 0, shift);
  if (bucket > list_cap && bucket > need) {
    // Too many to gather: split the bin by the next bits.
    const int next = shift - kKeyHistBits;
    CountDigits(n, all_keys, prefix, shift, next, kKeyHistBins - 1u, hist,
                kKeyHistBins);
    FindThresholdBinWide(hist, need, rs);
    prefix = (prefix << kKeyHistBits) | static_cast<uint32_t>(rs.digit);
    shift = next;
    need = rs.need;
    bucket = rs.bucket;
  }
  if (bucket == need) {  // the whole (sub-)bin is kept
    th.prefix = prefix;
    th.shift = shift;
    th.ties = need;
    return th;
  }
  if (bucket > list_cap) {  // a crowd of equal keys
    return RadixSelectKey(n, need, all_keys, rs, prefix, shift);
  }
  // Gather the (sub-)bin's keys (in any order: only the threshold comes
  // out).
  constexpr int kUnroll = 8;
  const int lane = threadIdx.x & 31;
  const uint32_t lower = (1u << lane) - 1u;
  if (threadIdx.x == 0) rs.count = 0;  // the list's length
  __syncthreads();
  for (int i0 = (threadIdx.x >> 5) * 32 * kUnroll; i0 < n;
       i0 += kSelectThreads * kUnroll) {
    uint32_t key[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = i0 + u * 32 + lane;
      key[u] = i < n ? keys[i] : 0u;
    }
    uint32_t ballot[kUnroll];
    int count = 0;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      ballot[u] = __ballot_sync(0xFFFFFFFFu, (key[u] >> shift) == prefix);
      count += __popc(ballot[u]);
    }
    int base = 0;
    if (lane == 0 && count > 0) base = atomicAdd(&rs.count, count);
    base = __shfl_sync(0xFFFFFFFFu, base, 0);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int at = base + __popc(ballot[u] & lower);
      if (((ballot[u] >> lane) & 1u) && at < list_cap) list[at] = key[u];
      base += __popc(ballot[u]);
    }
  }
  __syncthreads();
  return RadixSelectKey(
      min(rs.count, list_cap), need, [&](int i) { return list[i]; }, rs,
      prefix, shift);
}

// Stable compaction of the entries `th` keeps among key_of(0..n-1): calls
// emit(dst, i) for each, dst = 0, 1, ... in index order; returns the count.
// Key 0 (no candidate) is never one of the threshold bin's ties.
template <class KeyFn, class EmitFn>
__device__ int CompactByKey(int n, KeyFn key_of, const KeyThreshold& th,
                            EmitFn emit, RadixShared& rs) {
  constexpr int kItems = 4;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const uint32_t lower = (1u << lane) - 1u;
  int above = 0;  // kept entries above the threshold bucket so far
  int ties = 0;   // threshold-bucket entries so far
#pragma unroll 1
  for (int chunk = 0; chunk < n; chunk += kSelectThreads * kItems) {
    uint32_t hi[kItems], eq[kItems];
    int n_hi = 0, n_eq = 0;
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const int i = chunk + warp * 32 * kItems + j * 32 + lane;
      const uint32_t key = i < n ? key_of(i) : 0u;
      const uint32_t top = key >> th.shift;
      hi[j] = __ballot_sync(0xFFFFFFFFu, i < n && top > th.prefix);
      eq[j] = __ballot_sync(0xFFFFFFFFu,
                            i < n && top == th.prefix && key != 0);
      n_hi += __popc(hi[j]);
      n_eq += __popc(eq[j]);
    }
    if (lane == 0) {
      rs.warp_total[warp] = n_hi;
      rs.tie_total[warp] = n_eq;
    }
    __syncthreads();
    int hi_before = above, eq_before = ties, hi_all = 0, eq_all = 0;
#pragma unroll
    for (int w = 0; w < kSelectThreads / 32; ++w) {
      const int h = rs.warp_total[w], e = rs.tie_total[w];
      hi_before += w < warp ? h : 0;
      eq_before += w < warp ? e : 0;
      hi_all += h;
      eq_all += e;
    }
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const int h = hi_before + __popc(hi[j] & lower);
      const int e = eq_before + __popc(eq[j] & lower);
      const bool is_hi = (hi[j] >> lane) & 1u;
      const bool is_eq = (eq[j] >> lane) & 1u;
      if (is_hi || (is_eq && e < th.ties)) {
        emit(h + min(e, th.ties), chunk + warp * 32 * kItems + j * 32 + lane);
      }
      hi_before += __popc(hi[j]);
      eq_before += __popc(eq[j]);
    }
    above += hi_all;
    ties += eq_all;
    __syncthreads();
  }
  return above + min(ties, th.ties);
}

// Ordered compaction of a stream of n flags: for every i in [0, n) with
// mask(i) != 0, in increasing i, calls emit(dst, i, mask) with dst = 0, 1,
// ...; returns the number emitted.
template <class MaskFn, class EmitFn>
__device__ int64_t CompactStream(int64_t n, MaskFn mask_fn, EmitFn emit,
                                 RadixShared& rs) {
  constexpr int kItems = 4;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const uint32_t lower = (1u << lane) - 1u;
  int64_t emitted = 0;
#pragma unroll 1
  for (int64_t chunk = 0; chunk < n; chunk += kSelectThreads * kItems) {
    uint32_t masks[kItems];
    uint32_t ballot[kItems];
    int count = 0;
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const int64_t idx = chunk + warp * 32 * kItems + j * 32 + lane;
      masks[j] = idx < n ? mask_fn(idx) : 0u;
      ballot[j] = __ballot_sync(0xFFFFFFFFu, masks[j] != 0);
      count += __popc(ballot[j]);
    }
    if (lane == 0) rs.warp_total[warp] = count;
    __syncthreads();
    int offset = 0;
    int total = 0;
#pragma unroll
    for (int w = 0; w < kSelectThreads / 32; ++w) {
      const int t = rs.warp_total[w];
      offset += w < warp ? t : 0;
      total += t;
    }
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      if (masks[j] != 0) {
        const int64_t idx = chunk + warp * 32 * kItems + j * 32 + lane;
        emit(emitted + offset + __popc(ballot[j] & lower), idx, masks[j]);
      }
      offset += __popc(ballot[j]);
    }
    emitted += total;
    __syncthreads();
  }
  return emitted;
}

// Sum over the 8 lanes of a quad group (lanes with equal lane % 4) of NV
// per-lane partial column sums, scattered so that each lane ends with one
// column: returns the total of value index j = JOfLane<NV>(lane).
//   NV = 8: j = (lane >> 2) & 7, every lane distinct.
//   NV = 4: j = (lane >> 3) & 3, lanes with bit 2 set duplicate bit 2 clear.
template <int NV>
__device__ __forceinline__ float ReduceScatter(const float (&v)[NV], int lane);

template <>
__device__ __forceinline__ float ReduceScatter<8>(const float (&v)[8],
                                                  int lane) {
  const bool b16 = lane & 16, b8 = lane & 8, b4 = lane & 4;
  float w4[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float send = b16 ? v[i] : v[i + 4];
    const float keep = b16 ? v[i + 4] : v[i];
    w4[i] = keep + __shfl_xor_sync(0xFFFFFFFFu, send, 16);
  }
  float w2[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float send = b8 ? w4[i] : w4[i + 2];
    const float keep = b8 ? w4[i + 2] : w4[i];
    w2[i] = keep + __shfl_xor_sync(0xFFFFFFFFu, send, 8);
  }
  const float send = b4 ? w2[0] : w2[1];
  const float keep = b4 ? w2[1] : w2[0];
  return keep + __shfl_xor_sync(0xFFFFFFFFu, send, 4);
}

template <>
__device__ __forceinline__ float ReduceScatter<4>(const float (&v)[4],
                                                  int lane) {
  const bool b16 = lane & 16, b8 = lane & 8;
  float w2[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float send = b16 ? v[i] : v[i + 2];
    const float keep = b16 ? v[i + 2] : v[i];
    w2[i] = keep + __shfl_xor_sync(0xFFFFFFFFu, send, 16);
  }
  const float send = b8 ? w2[0] : w2[1];
  const float keep = b8 ? w2[1] : w2[0];
  float r = keep + __shfl_xor_sync(0xFFFFFFFFu, send, 8);
  return r + __shfl_xor_sync(0xFFFFFFFFu, r, 4);
}

// Value index a lane holds after ReduceScatter<NV>, and whether it is the
// lane that should publish it.
template <int NV>
__device__ __forceinline__ int JOfLane(int lane) {
  return NV == 8 ? ((lane >> 2) & 7) : ((lane >> 3) & 3);
}
template <int NV>
__device__ __forceinline__ bool PublishesLane(int lane) {
  return NV == 8 ? true : ((lane & 4) == 0);
}

}  // namespace hisa::cuda

#endif  // HISA_KERNELS_CUDA_SELECT_PRIMITIVES_CUH_
