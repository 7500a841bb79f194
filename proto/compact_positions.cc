#include "proto/compact_positions.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace hisa {
namespace {

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// Writes one varint at `out` and returns the byte after it.
char* PutVarint(uint64_t v, char* out) {
  while (v >= 0x80) {
    *out++ = static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  *out++ = static_cast<char>(v);
  return out;
}

// Reads one varint at *pos; false when truncated or longer than 5 bytes.
bool GetVarint(const std::string& in, size_t* pos, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift <= 28; shift += 7) {
    if (*pos >= in.size()) return false;
    const uint8_t byte = static_cast<uint8_t>(in[(*pos)++]);
    *v |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// Both encoders write into a string already sized exactly (zero-filled).
void EncodeDelta(absl::Span<const int32_t> pos, std::string* out) {
  char* at = out->data();
  int64_t prev = -1;
  for (int32_t p : pos) {
    at = PutVarint(static_cast<uint64_t>(p - prev - 1), at);
    prev = p;
  }
}

void EncodeBitmask(absl::Span<const int32_t> pos, int block_size,
                   std::string* out) {
  const int mask_bytes = block_size / 8;
  const int shift = __builtin_ctz(static_cast<unsigned>(block_size));
  char* at = out->data();
  char* mask = nullptr;
  int64_t prev_block = -1;
  for (int32_t p : pos) {
    const int64_t block = p >> shift;
    if (block != prev_block) {
      mask = PutVarint(static_cast<uint64_t>(block - prev_block - 1), at);
      at = mask + mask_bytes;
      prev_block = block;
    }
    const int in_block = p & (block_size - 1);
    mask[in_block >> 3] |= static_cast<char>(1 << (in_block & 7));
  }
}

}  // namespace

void EncodePositions(absl::Span<const int32_t> positions, int block_size,
                     v1::CompactPositions* out) {
  size_t count = 0;
  while (count < positions.size() && positions[count] >= 0) ++count;
  const absl::Span<const int32_t> pos = positions.subspan(0, count);
  out->Clear();
  out->set_count(static_cast<uint32_t>(count));
  // Size both encodings in one pass; write only the smaller one.
  // The bitmask form needs a power-of-two block of at least 8 positions.
  const bool bitmask_ok =
      block_size >= 8 && (block_size & (block_size - 1)) == 0;
  const int shift =
      bitmask_ok ? __builtin_ctz(static_cast<unsigned>(block_size)) : 0;
  size_t delta_bytes = 0;
  size_t bitmask_bytes = 0;
  int64_t prev = -1;
  int64_t prev_block = -1;
  for (int32_t p : pos) {
    delta_bytes += VarintSize(static_cast<uint64_t>(p - prev - 1));
    prev = p;
    if (bitmask_ok && (p >> shift) != prev_block) {
      const int64_t block = p >> shift;
      bitmask_bytes += VarintSize(static_cast<uint64_t>(block - prev_block - 1)) +
                       static_cast<size_t>(block_size / 8);
      prev_block = block;
    }
  }
  if (bitmask_ok && bitmask_bytes < delta_bytes) {
    out->set_block_size(static_cast<uint32_t>(block_size));
    std::string* bitmask = out->mutable_block_bitmask();
    bitmask->assign(bitmask_bytes, '\0');
    EncodeBitmask(pos, block_size, bitmask);
    return;
  }
  std::string* delta = out->mutable_delta_varint();
  delta->assign(delta_bytes, '\0');
  EncodeDelta(pos, delta);
}

absl::StatusOr<std::vector<int32_t>> DecodePositions(
    const v1::CompactPositions& in, int k) {
  if (k < 0 || in.count() > static_cast<uint32_t>(k)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "compact positions: count ", in.count(), " exceeds k ", k));
  }
  std::vector<int32_t> out;
  out.reserve(k);
  constexpr int64_t kMaxPosition = (int64_t{1} << 31) - 1;
  if (in.has_block_bitmask()) {
    const int block_size = static_cast<int>(in.block_size());
    if (block_size < 8 || block_size % 8 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "compact positions: bad block_size ", in.block_size()));
    }
    const std::string& data = in.block_bitmask();
    const size_t mask_bytes = static_cast<size_t>(block_size / 8);
    size_t at = 0;
    int64_t block = -1;
    while (at < data.size()) {
      uint64_t gap;
      if (!GetVarint(data, &at, &gap) || at + mask_bytes > data.size()) {
        return absl::InvalidArgumentError("compact positions: truncated bitmask");
      }
      block += static_cast<int64_t>(gap) + 1;
      for (size_t j = 0; j < mask_bytes; ++j) {
        // Visit set bits only (ascending).
        for (unsigned bits = static_cast<uint8_t>(data[at + j]); bits != 0;
             bits &= bits - 1) {
          const int64_t p = block * block_size + static_cast<int64_t>(8 * j) +
                            __builtin_ctz(bits);
          if (p > kMaxPosition || out.size() >= in.count()) {
            return absl::InvalidArgumentError(
                "compact positions: more positions than count or out of range");
          }
          out.push_back(static_cast<int32_t>(p));
        }
      }
      at += mask_bytes;
    }
  } else {
    const std::string& data = in.delta_varint();
    size_t at = 0;
    int64_t prev = -1;
    while (at < data.size()) {
      uint64_t gap;
      if (!GetVarint(data, &at, &gap)) {
        return absl::InvalidArgumentError("compact positions: truncated varint");
      }
      const int64_t p = prev + static_cast<int64_t>(gap) + 1;
      if (p > kMaxPosition || out.size() >= in.count()) {
        return absl::InvalidArgumentError(
            "compact positions: more positions than count or out of range");
      }
      out.push_back(static_cast<int32_t>(p));
      prev = p;
    }
  }
  if (out.size() != in.count()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "compact positions: decoded ", out.size(), " positions, count says ",
        in.count()));
  }
  out.resize(static_cast<size_t>(k), -1);
  return out;
}

}  // namespace hisa
