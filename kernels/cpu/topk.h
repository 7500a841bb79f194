// Top-k selection for the CPU backend: (score, position) pairs packed into
// one uint64 whose unsigned order is the selection order, partial selection
// (MSD radix select on 11-bit digits, nth_element for small inputs; never a
// full sort of the candidates), and the output contract of SPEC 4.3 (the k
// winners sorted by position with LSD radix passes).
//
//   std::vector<uint64_t> keys;
//   keys.push_back(PackScore(score, position));          // per candidate
//   int64_t kept = SelectTopK(keys.data(), keys.size(), k);
//   WriteSelection(keys.data(), kept, k, /*with_scores=*/true, &result);
//
// Order: a larger packed key ranks higher. Scores compare as floats with
// -0 == +0 (both pack as +0), and among equal scores the LOWER position
// ranks higher (SPEC 4.3 ties). Every packed key is distinct (positions
// are), so the top-k set is unique and independent of how candidates were
// split and merged. A NaN score (only possible when fp32 overflow produced
// inf - inf; inputs are finite) ranks below every number, and unpacks as NaN.
//
// Thread safety: pure functions on caller-owned memory.
#ifndef HISA_KERNELS_CPU_TOPK_H_
#define HISA_KERNELS_CPU_TOPK_H_

#include <cstdint>
#include <cstring>

#include "kernels/types.h"

namespace hisa::cpu {

// position in [0, 2^31).
inline uint64_t PackScore(float score, int64_t position) {
  uint32_t ordered;
  if (score != score) {
    ordered = 0;  // NaN: below -inf (which packs as 0x007FFFFF)
  } else {
    const float canonical = score + 0.0f;  // -0 -> +0
    uint32_t bits;
    std::memcpy(&bits, &canonical, sizeof(bits));
    ordered = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  }
  return (uint64_t{ordered} << 32) |
         static_cast<uint32_t>(~static_cast<uint32_t>(position));
}

inline int64_t UnpackPosition(uint64_t key) {
  return static_cast<uint32_t>(~static_cast<uint32_t>(key));
}

inline float UnpackScore(uint64_t key) {
  const uint32_t ordered = static_cast<uint32_t>(key >> 32);
  const uint32_t bits =
      (ordered & 0x80000000u) ? (ordered & 0x7FFFFFFFu) : ~ordered;
  float score;
  std::memcpy(&score, &bits, sizeof(score));
  return score;
}

// Moves the min(n, k) highest-ranked keys of keys[0, n) (distinct, as
// PackScore makes them) to keys[0, min(n, k)) in no particular order and
// returns min(n, k); keys[min(n, k), n) are left unspecified. k >= 0;
// n >= 0. O(n).
int64_t SelectTopK(uint64_t* keys, int64_t n, int64_t k);

// Fills `result` from the selected keys[0, count) (count <= k, any order):
// positions ascending, then -1 up to k entries; scores (NaN padding) when
// with_scores, else cleared. Sorts keys[0, count) in place by position.
// Uses a thread_local scratch buffer of count keys.
void WriteSelection(uint64_t* keys, int64_t count, int k, bool with_scores,
                    RowResult* result);

}  // namespace hisa::cpu

#endif  // HISA_KERNELS_CPU_TOPK_H_
