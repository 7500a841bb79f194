#include "kernels/cpu/topk.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

namespace hisa::cpu {
namespace {

// Radix digits of 11 bits: 2048 counters (8 KiB) stay in L1.
constexpr int kDigitBits = 11;
constexpr int kBuckets = 1 << kDigitBits;
// Below this many keys std::nth_element / std::sort beat the histogram
// passes.
constexpr int64_t kRadixMin = 512;

int Digit(uint64_t key, int shift) {
  return static_cast<int>((key >> shift) & (kBuckets - 1));
}

// MSD radix selection of the `need` largest keys of keys[0, n) (all
// distinct, n > need > 0) into keys[0, need). Each pass histograms one digit
// of the undecided range, compacts the keys of higher digits to the front
// (they are in), keeps the boundary digit's keys as the new undecided range
// right after them and drops the rest. Distinct keys resolve within 64 bits;
// in practice the boundary bucket is small after one or two passes and
// finishes with nth_element. The partition is branch-free: which keys pass
// is data-dependent and would mispredict half the time.
void RadixSelect(uint64_t* keys, int64_t n, int64_t need) {
  thread_local std::vector<uint64_t> ties;
  uint32_t counts[kBuckets];
  int64_t begin = 0;  // keys[0, begin) are selected
  int64_t end = n;    // keys[begin, end) are undecided
  for (int shift = 64 - kDigitBits; need > 0; shift -= kDigitBits) {
    const int64_t m = end - begin;
    if (m == need) return;
    if (m < kRadixMin || shift < 0) {
      std::nth_element(keys + begin, keys + begin + need - 1, keys + end,
                       std::greater<uint64_t>());
      return;
    }
    std::memset(counts, 0, sizeof(counts));
    for (int64_t i = begin; i < end; ++i) ++counts[Digit(keys[i], shift)];
    int boundary = kBuckets - 1;
    int64_t above = 0;  // keys with a digit above `boundary`
    while (above + counts[boundary] < need) above += counts[boundary--];
    // One spare slot: every key is written to ties[t], kept or not.
    ties.resize(counts[boundary] + 1);
    // keys[w] = key may overwrite only keys already read (w <= i).
    int64_t w = begin, t = 0;
    for (int64_t i = begin; i < end; ++i) {
      const uint64_t key = keys[i];
      const int d = Digit(key, shift);
      keys[w] = key;
      w += d > boundary;
      ties[t] = key;
      t += d == boundary;
    }
    std::memcpy(keys + w, ties.data(), t * sizeof(uint64_t));
    need -= above;
    begin = w;
    end = w + t;
  }
}

// Sorts keys[0, n) by position ascending (low 32 bits = ~position,
// descending) with LSD radix passes over the position's 31 bits, skipping
// passes in which every key has the same digit.
void RadixSortByPosition(uint64_t* keys, int64_t n) {
  thread_local std::vector<uint64_t> scratch;
  scratch.resize(n);
  uint64_t* src = keys;
  uint64_t* dst = scratch.data();
  uint32_t counts[kBuckets];
  for (int shift = 0; shift < 31; shift += kDigitBits) {
    std::memset(counts, 0, sizeof(counts));
    for (int64_t i = 0; i < n; ++i) {
      ++counts[(UnpackPosition(src[i]) >> shift) & (kBuckets - 1)];
    }
    if (counts[(UnpackPosition(src[0]) >> shift) & (kBuckets - 1)] == n) {
      continue;  // one digit value: the pass would not move anything
    }
    uint32_t sum = 0;
    for (int d = 0; d < kBuckets; ++d) {
      const uint32_t c = counts[d];
      counts[d] = sum;
      sum += c;
    }
    for (int64_t i = 0; i < n; ++i) {
      dst[counts[(UnpackPosition(src[i]) >> shift) & (kBuckets - 1)]++] =
          src[i];
    }
    std::swap(src, dst);
  }
  if (src != keys) std::memcpy(keys, src, n * sizeof(uint64_t));
}

}  // namespace

int64_t SelectTopK(uint64_t* keys, int64_t n, int64_t k) {
  if (n <= k) return n;
  if (k <= 0) return 0;
  if (n < kRadixMin) {
    std::nth_element(keys, keys + (k - 1), keys + n, std::greater<uint64_t>());
  } else {
    RadixSelect(keys, n, k);
  }
  return k;
}

void WriteSelection(uint64_t* keys, int64_t count, int k, bool with_scores,
                    RowResult* result) {
  if (count < kRadixMin) {
    // The low 32 bits hold ~position: descending low half = ascending
    // position.
    std::sort(keys, keys + count, [](uint64_t a, uint64_t b) {
      return static_cast<uint32_t>(a) > static_cast<uint32_t>(b);
    });
  } else {
    RadixSortByPosition(keys, count);
  }
  result->positions.resize(k);
  for (int64_t i = 0; i < count; ++i) {
    result->positions[i] = static_cast<int32_t>(UnpackPosition(keys[i]));
  }
  std::fill(result->positions.begin() + count, result->positions.end(), -1);
  if (with_scores) {
    result->scores.resize(k);
    for (int64_t i = 0; i < count; ++i)
      result->scores[i] = UnpackScore(keys[i]);
    std::fill(result->scores.begin() + count, result->scores.end(),
              std::nanf(""));
  } else {
    result->scores.clear();
  }
}

}  // namespace hisa::cpu
