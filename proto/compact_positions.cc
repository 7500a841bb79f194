#include "proto/compact_positions.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace hisa {
namespace {

constexpr int64_t kMaxPosition = (int64_t{1} << 31) - 1;

// Bytes of the LEB128 varint of v (v < 2^32), without a loop.
inline size_t VarintSize(uint32_t v) {
  return 1 + static_cast<size_t>(31 - __builtin_clz(v | 1)) / 7;
}

// Writes one varint at `out` and returns the byte after it.
inline char* PutVarint(uint32_t v, char* out) {
  while (v >= 0x80) {
    *out++ = static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  *out++ = static_cast<char>(v);
  return out;
}

// Reads one varint of at most 5 bytes at data[*pos]; false when truncated
// or longer. One-byte values (most gaps) take the first branch only.
inline bool GetVarint(const uint8_t* data, size_t size, size_t* pos,
                      uint64_t* v) {
  if (*pos < size && data[*pos] < 0x80) {
    *v = data[(*pos)++];
    return true;
  }
  *v = 0;
  for (int shift = 0; shift <= 28; shift += 7) {
    if (*pos >= size) return false;
    const uint8_t byte = data[(*pos)++];
    *v |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

constexpr bool kLittleEndian = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;

// Up to 8 mask bytes as a little-endian word: bit 8 j + i = bit i of byte j.
inline uint64_t MaskWord(const uint8_t* bytes, size_t n) {
  uint64_t w = 0;
  if (n == 8 && kLittleEndian) {
    std::memcpy(&w, bytes, 8);
    return w;
  }
  for (size_t j = 0; j < n; ++j) w |= static_cast<uint64_t>(bytes[j]) << (8 * j);
  return w;
}

// Writes first + i for every set bit i of w, ascending, at dst and returns
// how many (first + 63 fits an int32: the caller checked).
size_t ExpandScalar(uint64_t w, int64_t first, int32_t* dst) {
  size_t n = 0;
  for (; w != 0; w &= w - 1) {
    dst[n++] = static_cast<int32_t>(first + __builtin_ctzll(w));
  }
  return n;
}

#if defined(__x86_64__)
// The same, 16 bits at a time: one compress of the 16 lanes' positions
// and one masked store (no write past the last position) per 16 bits,
// instead of a ctz and a store per set bit.
__attribute__((target("avx512f"))) size_t ExpandAvx512(uint64_t w,
                                                      int64_t first,
                                                      int32_t* dst) {
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                          11, 12, 13, 14, 15);
  size_t n = 0;
  for (int q = 0; q < 4; ++q) {
    const __mmask16 m = static_cast<__mmask16>(w >> (16 * q));
    if (m == 0) continue;
    const __m512i at = _mm512_add_epi32(
        lanes, _mm512_set1_epi32(static_cast<int32_t>(first + 16 * q)));
    const int bits = __builtin_popcount(m);
    _mm512_mask_storeu_epi32(dst + n,
                             static_cast<__mmask16>((1u << bits) - 1u),
                             _mm512_maskz_compress_epi32(m, at));
    n += static_cast<size_t>(bits);
  }
  return n;
}
#endif

using ExpandWordFn = size_t (*)(uint64_t, int64_t, int32_t*);

// AVX-512 where the CPU has it and it agrees with the scalar form on a
// pattern of every 16-bit chunk shape (checked once), else scalar.
ExpandWordFn Expander() {
  static const ExpandWordFn fn = [] {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f")) {
      int32_t a[64], b[64];
      for (uint64_t w : {~uint64_t{0}, uint64_t{0x8000000000000001},
                         uint64_t{0x00F0FF000A0B0C0D}, uint64_t{1} << 17}) {
        const size_t na = ExpandAvx512(w, 1000, a);
        const size_t nb = ExpandScalar(w, 1000, b);
        if (na != nb || std::memcmp(a, b, na * sizeof(int32_t)) != 0) {
          return &ExpandScalar;
        }
      }
      return &ExpandAvx512;
    }
#endif
    return &ExpandScalar;
  }();
  return fn;
}

// Writes the delta_varint form of `pos` to `out` (at least 5 bytes per
// position) and returns its size. Most gaps take one byte: that branch
// first.
size_t EncodeDelta(absl::Span<const int32_t> pos, char* out) {
  char* at = out;
  int64_t prev = -1;
  for (int32_t p : pos) {
    const uint32_t gap = static_cast<uint32_t>(p - prev - 1);
    if (gap < 0x80) {
      *at++ = static_cast<char>(gap);
    } else {
      at = PutVarint(gap, at);
    }
    prev = p;
  }
  return static_cast<size_t>(at - out);
}

// Writes the block_bitmask form of `pos` to `out` (at least
// pos.size() * (5 + block_size / 8) bytes, any contents) and returns its
// size, or kTooBig as soon as it has grown past `limit` bytes (a sparse row,
// whose delta form is smaller: no need to finish). Positions go in runs:
// a block's header and zeroed mask, then for each 64-position word of it
// the run of positions inside the word ORed into a register and stored
// once (one load, shift, OR and predictable compare per position; a
// byte-wise |= would chain every position through store-to-load
// forwarding).
constexpr size_t kTooBig = ~size_t{0};
size_t EncodeBitmask(absl::Span<const int32_t> pos, int block_size,
                     size_t limit, char* out) {
  const int mask_bytes = block_size / 8;
  const int shift = __builtin_ctz(static_cast<unsigned>(block_size));
  const size_t n = pos.size();
  char* at = out;
  int64_t prev_block = -1;
  size_t i = 0;
  while (i < n) {
    if (static_cast<size_t>(at - out) > limit) return kTooBig;
    const int64_t block = pos[i] >> shift;
    const int64_t block_base = block << shift;
    const int64_t block_end = block_base + block_size;
    char* mask = PutVarint(static_cast<uint32_t>(block - prev_block - 1), at);
    std::memset(mask, 0, static_cast<size_t>(mask_bytes));
    at = mask + mask_bytes;
    prev_block = block;
    while (i < n && pos[i] < block_end) {
      const int w = static_cast<int>((pos[i] - block_base) >> 6);
      const int64_t word_base = block_base + 64 * int64_t{w};
      const int64_t word_end = std::min(block_end, word_base + 64);
      uint64_t word = 0;
      do {
        word |= uint64_t{1} << (pos[i] - word_base);
        ++i;
      } while (i < n && pos[i] < word_end);
      const int bytes = std::min(8, mask_bytes - 8 * w);
      if (bytes == 8 && kLittleEndian) {
        std::memcpy(mask + 8 * w, &word, 8);
      } else {
        for (int j = 0; j < bytes; ++j) {
          mask[8 * w + j] = static_cast<char>(word >> (8 * j));
        }
      }
    }
  }
  const size_t size = static_cast<size_t>(at - out);
  return size > limit ? kTooBig : size;
}

}  // namespace

void EncodePositions(absl::Span<const int32_t> positions, int block_size,
                     v1::CompactPositions* out) {
  // Ascending positions, then -1s: the count is a partition point.
  const size_t count = static_cast<size_t>(
      std::partition_point(positions.begin(), positions.end(),
                           [](int32_t p) { return p >= 0; }) -
      positions.begin());
  const absl::Span<const int32_t> pos = positions.subspan(0, count);
  out->Clear();
  out->set_count(static_cast<uint32_t>(count));
  // The bitmask form needs a power-of-two block of at least 8 positions.
  // Each form is written in one pass to a per-thread scratch and the smaller
  // one is copied out (ties: delta). delta_varint takes at least one byte
  // per position, so a bitmask under `count` bytes wins without writing the
  // delta form. Every delta is at most the last position, so the delta form
  // is at most count varints of that size: a bitmask past it stops early.
  const bool bitmask_ok =
      block_size >= 8 && (block_size & (block_size - 1)) == 0;
  thread_local std::vector<char> scratch;
  size_t bitmask_bytes = kTooBig;
  if (bitmask_ok && count > 0) {
    scratch.resize(std::max(scratch.size(),
                            count * (5 + static_cast<size_t>(block_size / 8))));
    const size_t delta_bound =
        count * VarintSize(static_cast<uint32_t>(pos[count - 1]));
    bitmask_bytes =
        EncodeBitmask(pos, block_size, delta_bound, scratch.data());
  }
  if (bitmask_bytes >= count) {
    thread_local std::vector<char> delta;
    delta.resize(std::max(delta.size(), count * 5));
    const size_t delta_bytes = EncodeDelta(pos, delta.data());
    if (bitmask_bytes >= delta_bytes) {
      std::string* d = out->mutable_delta_varint();  // set even when empty
      if (delta_bytes > 0) d->assign(delta.data(), delta_bytes);
      return;
    }
  }
  out->set_block_size(static_cast<uint32_t>(block_size));
  out->mutable_block_bitmask()->assign(scratch.data(), bitmask_bytes);
}

absl::StatusOr<std::vector<int32_t>> DecodePositions(
    const v1::CompactPositions& in, int k) {
  if (k < 0 || in.count() > static_cast<uint32_t>(k)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "compact positions: count ", in.count(), " exceeds k ", k));
  }
  const size_t count = in.count();
  std::vector<int32_t> out(static_cast<size_t>(k), -1);
  int32_t* dst = out.data();
  size_t n = 0;
  const auto too_many = [] {
    return absl::InvalidArgumentError(
        "compact positions: more positions than count or out of range");
  };
  if (in.has_block_bitmask()) {
    const int block_size = static_cast<int>(in.block_size());
    if (block_size < 8 || block_size % 8 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "compact positions: bad block_size ", in.block_size()));
    }
    const std::string& str = in.block_bitmask();
    const uint8_t* data = reinterpret_cast<const uint8_t*>(str.data());
    const size_t size = str.size();
    const size_t mask_bytes = static_cast<size_t>(block_size / 8);
    const ExpandWordFn expand = Expander();
    size_t at = 0;
    int64_t block = -1;
    while (at < size) {
      uint64_t gap;
      if (!GetVarint(data, size, &at, &gap) || mask_bytes > size - at) {
        return absl::InvalidArgumentError("compact positions: truncated bitmask");
      }
      block += static_cast<int64_t>(gap) + 1;
      // Past the last block of int32 positions (also keeps block * block_size
      // far from overflow on hostile input).
      if (block > kMaxPosition / block_size) return too_many();
      const int64_t base = block * block_size;
      // Set bits of the block, 8 mask bytes (64 positions) at a time.
      for (size_t j = 0; j < mask_bytes; j += 8) {
        uint64_t w = MaskWord(data + at + j, std::min<size_t>(8, mask_bytes - j));
        if (w == 0) continue;
        const size_t bits = static_cast<size_t>(__builtin_popcountll(w));
        const int64_t first = base + static_cast<int64_t>(8 * j);
        if (bits > count - n || first + 63 - __builtin_clzll(w) > kMaxPosition) {
          return too_many();
        }
        n += expand(w, first, dst + n);
      }
      at += mask_bytes;
    }
  } else {
    const std::string& str = in.delta_varint();
    const uint8_t* data = reinterpret_cast<const uint8_t*>(str.data());
    const size_t size = str.size();
    size_t at = 0;
    int64_t prev = -1;
    while (at < size) {
      uint64_t gap;
      if (!GetVarint(data, size, &at, &gap)) {
        return absl::InvalidArgumentError("compact positions: truncated varint");
      }
      const int64_t p = prev + static_cast<int64_t>(gap) + 1;
      if (p > kMaxPosition || n >= count) return too_many();
      dst[n++] = static_cast<int32_t>(p);
      prev = p;
    }
  }
  if (n != count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "compact positions: decoded ", n, " positions, count says ", count));
  }
  return out;
}

namespace compact_internal {

size_t ExpandWordScalar(uint64_t w, int64_t first, int32_t* dst) {
  return ExpandScalar(w, first, dst);
}
size_t ExpandWordFast(uint64_t w, int64_t first, int32_t* dst) {
  return Expander()(w, first, dst);
}
bool FastIsVectorized() { return Expander() != &ExpandScalar; }

}  // namespace compact_internal

}  // namespace hisa
