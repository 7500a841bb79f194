#include "kernels/formats.h"

#include <array>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"

namespace hisa {

int BytesPerValue(KeyFormat format) {
  switch (format) {
    case KeyFormat::kFp8E4M3: return 1;
    case KeyFormat::kBf16: return 2;
    case KeyFormat::kFp32: return 4;
  }
  return 0;
}

bool IsValidFormat(KeyFormat format) { return BytesPerValue(format) != 0; }

std::string FormatName(KeyFormat format) {
  switch (format) {
    case KeyFormat::kFp8E4M3: return "FP8_E4M3";
    case KeyFormat::kBf16: return "BF16";
    case KeyFormat::kFp32: return "FP32";
  }
  return absl::StrCat("UNKNOWN(", static_cast<int>(format), ")");
}

std::string ModeName(SelectMode mode) {
  switch (mode) {
    case SelectMode::kDense: return "DENSE";
    case SelectMode::kHisa: return "HISA";
    case SelectMode::kAuto: return "AUTO";
  }
  return absl::StrCat("UNKNOWN(", static_cast<int>(mode), ")");
}

float Fp8E4M3ToFloat(uint8_t b) {
  if (Fp8IsNan(b)) return std::nanf("");
  const int sign = b >> 7;
  const int exp = (b >> 3) & 0xF;
  const int mant = b & 0x7;
  // Subnormals (exp == 0) have no implicit one and exponent 1 - bias.
  const float mag = exp == 0 ? std::ldexp(static_cast<float>(mant), -9)
                             : std::ldexp(1.0f + mant / 8.0f, exp - 7);
  return sign ? -mag : mag;
}

uint8_t FloatToFp8E4M3(float v) {
  // Exhaustive nearest search over the 127 non-negative finite codes keeps
  // this obviously right; it is only used by clients, tests and benchmarks.
  static const std::array<float, 127> kPositive = [] {
    std::array<float, 127> t{};
    for (int i = 0; i < 127; ++i) t[i] = Fp8E4M3ToFloat(static_cast<uint8_t>(i));
    return t;
  }();
  if (std::isnan(v)) return 0x7F;
  const uint8_t sign = std::signbit(v) ? 0x80 : 0;
  const float a = std::fabs(v);
  if (a >= kPositive[126]) return sign | 126;
  // Codes are monotonic in value: binary search for the bracketing pair.
  int lo = 0, hi = 126;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    (kPositive[mid] <= a ? lo : hi) = mid;
  }
  const float dl = a - kPositive[lo], dh = kPositive[hi] - a;
  int code = dl < dh ? lo : dh < dl ? hi : (lo % 2 == 0 ? lo : hi);
  return sign | static_cast<uint8_t>(code);
}

uint16_t FloatToBf16(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  if (std::isnan(v)) return static_cast<uint16_t>((u >> 16) | 0x40);
  const uint32_t rounding = 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

void DecodeToFloat(KeyFormat format, const uint8_t* src, int64_t n,
                   float* dst) {
  switch (format) {
    case KeyFormat::kFp8E4M3: {
      static const std::array<float, 256> kTable = [] {
        std::array<float, 256> t{};
        for (int i = 0; i < 256; ++i) t[i] = Fp8E4M3ToFloat(static_cast<uint8_t>(i));
        return t;
      }();
      for (int64_t i = 0; i < n; ++i) dst[i] = kTable[src[i]];
      return;
    }
    case KeyFormat::kBf16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, sizeof(h));
        dst[i] = Bf16ToFloat(h);
      }
      return;
    case KeyFormat::kFp32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
  }
}

namespace {

// Branch-free scans: true when some value is NaN/inf. They run at memory
// speed on prefill-sized appends; the slow loop below runs only to name the
// first bad element.
bool AnyNonFinite(KeyFormat format, absl::Span<const uint8_t> values) {
  const uint8_t* p = values.data();
  const size_t n = values.size();
  switch (format) {
    case KeyFormat::kFp8E4M3: {
      uint8_t bad = 0;
      for (size_t i = 0; i < n; ++i) bad |= ((p[i] & 0x7F) == 0x7F);
      return bad != 0;
    }
    case KeyFormat::kBf16: {
      uint8_t bad = 0;
      for (size_t i = 0; i + 1 < n; i += 2) {
        uint16_t h;
        std::memcpy(&h, p + i, sizeof(h));
        bad |= ((h & 0x7F80) == 0x7F80);
      }
      return bad != 0;
    }
    case KeyFormat::kFp32: {
      uint8_t bad = 0;
      for (size_t i = 0; i + 3 < n; i += 4) {
        uint32_t u;
        std::memcpy(&u, p + i, sizeof(u));
        bad |= ((u & 0x7F800000u) == 0x7F800000u);
      }
      return bad != 0;
    }
  }
  return false;
}

}  // namespace

absl::Status CheckFinite(KeyFormat format, absl::Span<const uint8_t> values,
                         const char* what) {
  if (!AnyNonFinite(format, values)) return absl::OkStatus();
  const int bpv = BytesPerValue(format);
  const int64_t n = static_cast<int64_t>(values.size()) / bpv;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = values.data() + i * bpv;
    switch (format) {
      case KeyFormat::kFp8E4M3:
        if (Fp8IsNan(*p)) {
          return absl::InvalidArgumentError(absl::StrCat(
              what, ": element ", i, " is an FP8_E4M3 NaN (byte 0x",
              absl::Hex(*p), ")"));
        }
        break;
      case KeyFormat::kBf16: {
        uint16_t h;
        std::memcpy(&h, p, sizeof(h));
        if ((h & 0x7F80) == 0x7F80) {
          return absl::InvalidArgumentError(absl::StrCat(
              what, ": element ", i, " is not finite (", Bf16ToFloat(h), ")"));
        }
        break;
      }
      case KeyFormat::kFp32: {
        float f;
        std::memcpy(&f, p, sizeof(f));
        if (!std::isfinite(f)) {
          return absl::InvalidArgumentError(
              absl::StrCat(what, ": element ", i, " is not finite (", f, ")"));
        }
        break;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CheckFinite(absl::Span<const float> values, const char* what) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": element ", i, " is not finite (", values[i], ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace hisa
