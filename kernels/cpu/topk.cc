#include "kernels/cpu/topk.h"

#include <algorithm>
#include <cmath>
#include <functional>

namespace hisa::cpu {

int64_t SelectTopK(uint64_t* keys, int64_t n, int64_t k) {
  if (n <= k) return n;
  if (k <= 0) return 0;
  std::nth_element(keys, keys + (k - 1), keys + n, std::greater<uint64_t>());
  return k;
}

void WriteSelection(uint64_t* keys, int64_t count, int k, bool with_scores,
                    RowResult* result) {
  // The low 32 bits hold ~position: descending low half = ascending position.
  std::sort(keys, keys + count, [](uint64_t a, uint64_t b) {
    return static_cast<uint32_t>(a) > static_cast<uint32_t>(b);
  });
  result->positions.resize(k);
  for (int64_t i = 0; i < count; ++i) {
    result->positions[i] = static_cast<int32_t>(UnpackPosition(keys[i]));
  }
  std::fill(result->positions.begin() + count, result->positions.end(), -1);
  if (with_scores) {
    result->scores.resize(k);
    for (int64_t i = 0; i < count; ++i) result->scores[i] = UnpackScore(keys[i]);
    std::fill(result->scores.begin() + count, result->scores.end(),
              std::nanf(""));
  } else {
    result->scores.clear();
  }
}

}  // namespace hisa::cpu
