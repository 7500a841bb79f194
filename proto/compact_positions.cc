#include "proto/compact_positions.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace hisa {
namespace {

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
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

std::string EncodeDelta(absl::Span<const int32_t> pos) {
  std::string out;
  out.reserve(pos.size() + 4);
  int64_t prev = -1;
  for (int32_t p : pos) {
    PutVarint(static_cast<uint64_t>(p - prev - 1), &out);
    prev = p;
  }
  return out;
}

std::string EncodeBitmask(absl::Span<const int32_t> pos, int block_size) {
  const int mask_bytes = block_size / 8;
  std::string out;
  int64_t prev_block = -1;
  size_t mask_at = 0;
  for (int32_t p : pos) {
    const int64_t block = p / block_size;
    if (block != prev_block) {
      PutVarint(static_cast<uint64_t>(block - prev_block - 1), &out);
      mask_at = out.size();
      out.append(mask_bytes, '\0');
      prev_block = block;
    }
    const int in_block = static_cast<int>(p % block_size);
    out[mask_at + in_block / 8] |= static_cast<char>(1 << (in_block % 8));
  }
  return out;
}

}  // namespace

void EncodePositions(absl::Span<const int32_t> positions, int block_size,
                     v1::CompactPositions* out) {
  size_t count = 0;
  while (count < positions.size() && positions[count] >= 0) ++count;
  const absl::Span<const int32_t> pos = positions.subspan(0, count);
  out->Clear();
  out->set_count(static_cast<uint32_t>(count));
  std::string delta = EncodeDelta(pos);
  if (block_size >= 8 && block_size % 8 == 0) {
    std::string bitmask = EncodeBitmask(pos, block_size);
    if (bitmask.size() < delta.size()) {
      out->set_block_size(static_cast<uint32_t>(block_size));
      out->set_block_bitmask(std::move(bitmask));
      return;
    }
  }
  out->set_delta_varint(std::move(delta));
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
        const uint8_t bits = static_cast<uint8_t>(data[at + j]);
        for (int i = 0; i < 8; ++i) {
          if ((bits >> i) & 1) {
            const int64_t p = block * block_size + static_cast<int64_t>(8 * j) + i;
            if (p > kMaxPosition || out.size() >= in.count()) {
              return absl::InvalidArgumentError(
                  "compact positions: more positions than count or out of range");
            }
            out.push_back(static_cast<int32_t>(p));
          }
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
