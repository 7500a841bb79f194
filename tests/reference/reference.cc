#include "tests/reference/reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>

#include "absl/strings/str_cat.h"

namespace hisa::ref {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

int ValueBytes(KeyFormat format) {
  switch (format) {
    case KeyFormat::kFp8E4M3: return 1;
    case KeyFormat::kBf16: return 2;
    case KeyFormat::kFp32: return 4;
  }
  return 0;
}

double DecodeOne(KeyFormat format, const uint8_t* p) {
  switch (format) {
    case KeyFormat::kFp8E4M3:
      return DecodeFp8E4M3(p[0]);
    case KeyFormat::kBf16:
      return DecodeBf16(static_cast<uint16_t>(p[0] | (p[1] << 8)));
    case KeyFormat::kFp32:
      return DecodeFp32(static_cast<uint32_t>(p[0]) |
                        (static_cast<uint32_t>(p[1]) << 8) |
                        (static_cast<uint32_t>(p[2]) << 16) |
                        (static_cast<uint32_t>(p[3]) << 24));
  }
  return kNaN;
}

double Relu(double x) { return x > 0 ? x : 0; }

}  // namespace

double DecodeFp8E4M3(uint8_t byte) {
  const int sign = byte >> 7;
  const int exponent = (byte >> 3) & 0xF;
  const int mantissa = byte & 0x7;
  if (exponent == 0xF && mantissa == 0x7) return kNaN;
  // Normal: (1 + mantissa / 8) * 2^(exponent - 7); subnormal: (mantissa / 8)
  // * 2^(1 - 7).
  const double magnitude =
      exponent == 0 ? std::ldexp(mantissa, -9)
                    : std::ldexp(8 + mantissa, exponent - 7 - 3);
  return sign ? -magnitude : magnitude;
}

double DecodeFp32(uint32_t bits) {
  const int sign = bits >> 31;
  const int exponent = (bits >> 23) & 0xFF;
  const uint32_t mantissa = bits & 0x7FFFFF;
  double magnitude;
  if (exponent == 0xFF) {
    magnitude = mantissa == 0 ? std::numeric_limits<double>::infinity() : kNaN;
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<double>(mantissa), -149);
  } else {
    magnitude = std::ldexp(static_cast<double>(mantissa + (1u << 23)),
                           exponent - 127 - 23);
  }
  return sign ? -magnitude : magnitude;
}

double DecodeBf16(uint16_t bits) {
  return DecodeFp32(static_cast<uint32_t>(bits) << 16);
}

absl::StatusOr<std::vector<double>> Dequantize(KeyFormat format,
                                               absl::Span<const uint8_t> bytes,
                                               absl::Span<const float> scales,
                                               int64_t groups, int group_size) {
  const int value_bytes = ValueBytes(format);
  if (value_bytes == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown format ", static_cast<int>(format)));
  }
  const int64_t n = groups * group_size;
  if (static_cast<int64_t>(bytes.size()) != n * value_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected ", n * value_bytes, " bytes, got ", bytes.size()));
  }
  const int64_t want_scales = format == KeyFormat::kFp8E4M3 ? groups : 0;
  if (static_cast<int64_t>(scales.size()) != want_scales) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected ", want_scales, " scales, got ", scales.size()));
  }
  std::vector<double> out(n);
  for (int64_t g = 0; g < groups; ++g) {
    const double scale =
        format == KeyFormat::kFp8E4M3 ? static_cast<double>(scales[g]) : 1.0;
    for (int i = 0; i < group_size; ++i) {
      const int64_t idx = g * group_size + i;
      out[idx] = DecodeOne(format, bytes.data() + idx * value_bytes) * scale;
    }
  }
  return out;
}

std::vector<int32_t> TopK(absl::Span<const double> token_scores,
                          absl::Span<const int64_t> candidates, int k) {
  std::vector<int64_t> order(candidates.begin(), candidates.end());
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (token_scores[a] != token_scores[b]) {
      return token_scores[a] > token_scores[b];
    }
    return a < b;
  });
  if (static_cast<int64_t>(order.size()) > k) order.resize(k);
  std::sort(order.begin(), order.end());
  return std::vector<int32_t>(order.begin(), order.end());
}

std::vector<int64_t> ChooseBlocks(absl::Span<const double> block_scores,
                                  int m) {
  const int64_t num_blocks = static_cast<int64_t>(block_scores.size());
  const int64_t c = num_blocks - 1;
  std::vector<int64_t> chosen;
  if (num_blocks <= m) {
    chosen.resize(num_blocks);
    std::iota(chosen.begin(), chosen.end(), 0);
    return chosen;
  }
  // Here c >= m >= 1, so blocks 0 and c are distinct.
  std::vector<int64_t> others(c - 1);
  std::iota(others.begin(), others.end(), 1);
  std::sort(others.begin(), others.end(), [&](int64_t a, int64_t b) {
    if (block_scores[a] != block_scores[b]) {
      return block_scores[a] > block_scores[b];
    }
    return a < b;
  });
  const int64_t free_places = std::max(0, m - 2);
  chosen.assign(others.begin(), others.begin() + free_places);
  chosen.push_back(0);
  chosen.push_back(c);
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

LayerOracle::LayerOracle(int head_dim, int block_size, BlockPooling pooling)
    : head_dim_(head_dim), block_size_(block_size), pooling_(pooling) {}

absl::Status LayerOracle::Append(const KeyChunk& chunk) {
  if (chunk.first_position != length()) {
    return absl::InvalidArgumentError(
        absl::StrCat("oracle append at ", chunk.first_position,
                     " but the oracle holds ", length(), " tokens"));
  }
  absl::StatusOr<std::vector<double>> keys = Dequantize(
      chunk.format, chunk.keys, chunk.scales, chunk.num_tokens, head_dim_);
  if (!keys.ok()) return keys.status();
  keys_.insert(keys_.end(), keys->begin(), keys->end());
  return absl::OkStatus();
}

std::vector<double> LayerOracle::Representative(int64_t b) const {
  const int64_t first = b * block_size_;
  const int64_t end = std::min(first + block_size_, length());
  std::vector<double> r(head_dim_, 0.0);
  if (pooling_ == BlockPooling::kMax) {
    std::fill(r.begin(), r.end(), -std::numeric_limits<double>::infinity());
    for (int64_t s = first; s < end; ++s) {
      for (int d = 0; d < head_dim_; ++d) r[d] = std::max(r[d], key(s)[d]);
    }
    return r;
  }
  for (int64_t s = first; s < end; ++s) {
    for (int d = 0; d < head_dim_; ++d) r[d] += key(s)[d];
  }
  for (int d = 0; d < head_dim_; ++d) r[d] /= static_cast<double>(end - first);
  return r;
}

std::vector<double> LayerOracle::AbsPooled(int64_t b) const {
  const int64_t first = b * block_size_;
  const int64_t end = std::min(first + block_size_, length());
  std::vector<double> a(head_dim_, 0.0);
  for (int64_t s = first; s < end; ++s) {
    for (int d = 0; d < head_dim_; ++d) {
      const double v = std::fabs(key(s)[d]);
      a[d] = pooling_ == BlockPooling::kMax ? std::max(a[d], v) : a[d] + v;
    }
  }
  if (pooling_ == BlockPooling::kMean) {
    for (int d = 0; d < head_dim_; ++d) a[d] /= static_cast<double>(end - first);
  }
  return a;
}

absl::StatusOr<RowOracle> LayerOracle::Select(const QueryRow& row) const {
  const int64_t t = row.position;
  if (t < 0 || t >= length()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "position ", t, " outside the oracle's [0, ", length(), ")"));
  }
  if (row.k < 1) return absl::InvalidArgumentError("k < 1");
  if (row.mode != SelectMode::kDense && row.mode != SelectMode::kHisa &&
      row.mode != SelectMode::kAuto) {
    return absl::InvalidArgumentError("unknown mode");
  }
  const SelectMode mode =
      row.mode == SelectMode::kDense ? SelectMode::kDense : SelectMode::kHisa;
  if (mode == SelectMode::kHisa && row.m < 1) {
    return absl::InvalidArgumentError("m < 1");
  }
  const int heads = row.num_heads;
  if (heads < 1 || static_cast<int64_t>(row.weights.size()) != heads) {
    return absl::InvalidArgumentError("num_heads / weights mismatch");
  }
  absl::StatusOr<std::vector<double>> q =
      Dequantize(row.q_format, row.q, row.q_scales, heads, head_dim_);
  if (!q.ok()) return q.status();
  const std::vector<double> w(row.weights.begin(), row.weights.end());

  // sum_h w_h ReLU(q_h . v) and sum_h |w_h| sum_d |q_hd| |v_d|.
  auto score = [&](const double* v) {
    double total = 0;
    for (int h = 0; h < heads; ++h) {
      double dot = 0;
      for (int d = 0; d < head_dim_; ++d) dot += (*q)[h * head_dim_ + d] * v[d];
      total += w[h] * Relu(dot);
    }
    return total;
  };
  auto magnitude = [&](const double* a) {
    double total = 0;
    for (int h = 0; h < heads; ++h) {
      double dot = 0;
      for (int d = 0; d < head_dim_; ++d) {
        dot += std::fabs((*q)[h * head_dim_ + d]) * std::fabs(a[d]);
      }
      total += std::fabs(w[h]) * dot;
    }
    return total;
  };

  RowOracle out;
  out.mode = mode;
  out.position = t;
  out.k = row.k;
  out.m = row.m;
  out.block_size = block_size_;
  out.token_scores.resize(t + 1);
  out.token_magnitudes.resize(t + 1);
  for (int64_t s = 0; s <= t; ++s) {
    out.token_scores[s] = score(key(s));
    out.token_magnitudes[s] = magnitude(key(s));
  }
  const int64_t c = t / block_size_;
  if (mode == SelectMode::kDense) {
    out.chosen_blocks.resize(c + 1);
    std::iota(out.chosen_blocks.begin(), out.chosen_blocks.end(), 0);
  } else {
    out.block_scores.resize(c + 1);
    out.block_magnitudes.resize(c + 1);
    out.block_copy_magnitudes.resize(c + 1);
    for (int64_t b = 0; b <= c; ++b) {
      const std::vector<double> r = Representative(b);
      out.block_scores[b] = score(r.data());
      out.block_magnitudes[b] = magnitude(AbsPooled(b).data());
      out.block_copy_magnitudes[b] = magnitude(r.data());
    }
    out.chosen_blocks = ChooseBlocks(out.block_scores, row.m);
  }
  std::vector<int64_t> candidates;
  for (int64_t b : out.chosen_blocks) {
    for (int64_t s = b * block_size_; s < (b + 1) * block_size_ && s <= t; ++s) {
      candidates.push_back(s);
    }
  }
  out.positions = TopK(out.token_scores, candidates, row.k);
  out.scores.reserve(row.k);
  for (int32_t p : out.positions) out.scores.push_back(out.token_scores[p]);
  out.positions.resize(row.k, -1);
  out.scores.resize(row.k, kNaN);
  return out;
}

}  // namespace hisa::ref
