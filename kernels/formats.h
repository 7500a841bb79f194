// Element formats: decoding FP8_E4M3 / BF16 / FP32 values to float, encoding
// (for tests, clients and benchmarks), and finiteness checks used by the
// engine's validation.
//
//   float v = hisa::Fp8E4M3ToFloat(byte) * scale;
//   hisa::DecodeToFloat(KeyFormat::kBf16, bytes, n, out);
//
// FP8_E4M3 is the OCP "e4m3fn" variant that DeepSeek's stacks use: exponent
// bias 7, no infinities, 0x7F and 0xFF are NaN, max finite 448.
#ifndef HISA_KERNELS_FORMATS_H_
#define HISA_KERNELS_FORMATS_H_

#include <cstdint>
#include <cstring>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/types.h"

namespace hisa {

// Exact value of an e4m3fn byte (NaN for 0x7F / 0xFF).
float Fp8E4M3ToFloat(uint8_t b);
// Nearest e4m3fn byte (round to nearest even, saturating to +-448).
uint8_t FloatToFp8E4M3(float v);
inline bool Fp8IsNan(uint8_t b) { return (b & 0x7F) == 0x7F; }

inline float Bf16ToFloat(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
// Round to nearest even.
uint16_t FloatToBf16(float v);

// Decodes n values of `format` from `src` (unaligned bytes) into `dst`,
// without any fp8 scale applied.
void DecodeToFloat(KeyFormat format, const uint8_t* src, int64_t n,
                   float* dst);

// OK when every value (and every scale) is finite; otherwise
// INVALID_ARGUMENT naming `what`, the element index and the value.
absl::Status CheckFinite(KeyFormat format, absl::Span<const uint8_t> values,
                         const char* what);
absl::Status CheckFinite(absl::Span<const float> values, const char* what);

}  // namespace hisa

#endif  // HISA_KERNELS_FORMATS_H_
