#include "kernels/cpu/cpu_request_store.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/key_decode.h"
#include "kernels/formats.h"

namespace hisa::cpu {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

CpuRequestStore::CpuRequestStore(const RequestConfig& config, CpuIsa isa)
    : config_(config),
      isa_(isa),
      page_tokens_(std::max<int64_t>(config.block_size, kMinPageTokens)),
      key_row_bytes_(int64_t{config.head_dim} *
                     BytesPerValue(config.key_format)),
      scales_offset_(RoundUp(page_tokens_ * key_row_bytes_, kBufferAlignment)),
      key_page_bytes_(scales_offset_ +
                      (config.key_format == KeyFormat::kFp8E4M3
                           ? RoundUp(page_tokens_ * int64_t{sizeof(float)},
                                     kBufferAlignment)
                           : 0)),
      summary_page_bytes_(RoundUp(int64_t{kSummaryPageBlocks} *
                                      config.head_dim * int64_t{sizeof(float)},
                                  kBufferAlignment)),
      layers_(config.num_layers) {}

int64_t CpuRequestStore::KeyPagesFor(int64_t length) const {
  return CeilDiv(length, page_tokens_);
}

int64_t CpuRequestStore::SummaryPagesFor(int64_t length) const {
  return CeilDiv(CeilDiv(length, config_.block_size), kSummaryPageBlocks);
}

int64_t CpuRequestStore::BytesAfterAppend(int layer, int64_t num_tokens) const {
  const int64_t old_len = layers_[layer].length;
  const int64_t new_len = old_len + std::max<int64_t>(num_tokens, 0);
  return bytes_reserved_ +
         (KeyPagesFor(new_len) - KeyPagesFor(old_len)) * key_page_bytes_ +
         (SummaryPagesFor(new_len) - SummaryPagesFor(old_len)) *
             summary_page_bytes_;
}

absl::StatusOr<bool> CpuRequestStore::Matches(const KeyChunk& chunk) const {
  const Layer& layer = layers_[chunk.layer];
  const int64_t begin = chunk.first_position;
  const int64_t end = begin + chunk.num_tokens;
  if (begin < 0 || end > layer.length) {
    return absl::InternalError(
        absl::StrCat("CPU store: Matches on positions [", begin, ", ", end,
                     ") outside the stored range [0, ", layer.length,
                     ") of layer ", chunk.layer));
  }
  const bool fp8 = config_.key_format == KeyFormat::kFp8E4M3;
  for (int64_t s = begin; s < end;) {
    const int64_t n = std::min(end - s, TokensToPageEnd(s));
    const int64_t i = s - begin;
    if (std::memcmp(KeyBytes(chunk.layer, s),
                    chunk.keys.data() + i * key_row_bytes_,
                    static_cast<size_t>(n * key_row_bytes_)) != 0) {
      return false;
    }
    if (fp8 && std::memcmp(KeyScales(chunk.layer, s), chunk.scales.data() + i,
                           static_cast<size_t>(n) * sizeof(float)) != 0) {
      return false;
    }
    s += n;
  }
  return true;
}

absl::Status CpuRequestStore::Append(const KeyChunk& chunk) {
  Layer& layer = layers_[chunk.layer];
  const int64_t old_len = layer.length;
  const int64_t n = chunk.num_tokens;
  if (n <= 0) return absl::OkStatus();
  if (chunk.first_position != old_len) {
    return absl::InternalError(absl::StrCat(
        "CPU store: append at position ", chunk.first_position, " but layer ",
        chunk.layer, " holds ", old_len, " tokens"));
  }
  const int64_t new_len = old_len + n;
  const bool fp8 = config_.key_format == KeyFormat::kFp8E4M3;

  // 1. Allocate everything first: all or nothing.
  const int64_t new_key_pages = KeyPagesFor(new_len) - KeyPagesFor(old_len);
  const int64_t new_summary_pages =
      SummaryPagesFor(new_len) - SummaryPagesFor(old_len);
  std::vector<AlignedBuffer<uint8_t>> key_pages(new_key_pages);
  std::vector<AlignedBuffer<float>> summary_pages(new_summary_pages);
  // Pages are not zeroed: every slot is written before anything reads it
  // (readers stay below length(), summaries start from their first token).
  for (AlignedBuffer<uint8_t>& page : key_pages) {
    if (!page.Allocate(key_page_bytes_, /*zero=*/false)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "CPU store: out of host memory allocating ", new_key_pages,
          " key pages of ", key_page_bytes_, " bytes for layer ", chunk.layer));
    }
  }
  for (AlignedBuffer<float>& page : summary_pages) {
    if (!page.Allocate(summary_page_bytes_ / int64_t{sizeof(float)},
                       /*zero=*/false)) {
      return absl::ResourceExhaustedError(
          absl::StrCat("CPU store: out of host memory allocating ",
                       new_summary_pages, " summary pages of ",
                       summary_page_bytes_, " bytes for layer ", chunk.layer));
    }
  }
  for (AlignedBuffer<uint8_t>& page : key_pages) {
    layer.key_pages.push_back(std::move(page));
  }
  for (AlignedBuffer<float>& page : summary_pages) {
    layer.summary_pages.push_back(std::move(page));
  }
  bytes_reserved_ +=
      new_key_pages * key_page_bytes_ + new_summary_pages * summary_page_bytes_;

  // 2. Copy the keys (and scales) page by page.
  for (int64_t s = old_len; s < new_len;) {
    const int64_t count = std::min(new_len - s, TokensToPageEnd(s));
    const int64_t i = s - old_len;
    AlignedBuffer<uint8_t>& page = layer.key_pages[s / page_tokens_];
    const int64_t slot = s % page_tokens_;
    std::memcpy(page.data() + slot * key_row_bytes_,
                chunk.keys.data() + i * key_row_bytes_,
                static_cast<size_t>(count * key_row_bytes_));
    if (fp8) {
      std::memcpy(page.data() + scales_offset_ + slot * int64_t{sizeof(float)},
                  chunk.scales.data() + i,
                  static_cast<size_t>(count) * sizeof(float));
    }
    s += count;
  }

  // 3. Fold the new tokens into the summaries of the blocks they land in.
  const int64_t block = config_.block_size;
  for (int64_t s = old_len; s < new_len;) {
    const int64_t b = s / block;
    const int64_t count = std::min(new_len, (b + 1) * block) - s;
    const int64_t i = s - old_len;
    PoolRows(isa_, config_.key_format, config_.pooling,
             chunk.keys.data() + i * key_row_bytes_,
             fp8 ? chunk.scales.data() + i : nullptr, count, config_.head_dim,
             /*init=*/s == b * block, MutableSummary(chunk.layer, b));
    s += count;
  }
  layer.length = new_len;
  return absl::OkStatus();
}

}  // namespace hisa::cpu
