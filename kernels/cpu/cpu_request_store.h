// Host-memory storage of one request for the CPU backend: per layer, the
// keys exactly as the client sent them (fp8 bytes + fp32 per-token scales,
// bf16 or fp32) in fixed-size pages that never move, and the HISA block
// summaries (SPEC 4.2 step 2), maintained incrementally on append.
//
//   CpuRequestStore store(config, CpuIsa::kAvx2);
//   RETURN_IF_ERROR(store.Append(chunk));      // engine-validated chunk
//   const uint8_t* k = store.KeyBytes(layer, s);
//   const float* r = store.Summary(layer, b);  // sum (kMean) or max (kMax)
//
// Layout and memory:
// - Key page: page_tokens() tokens (max(B, 256), a multiple of B and of 16)
//   as [page_tokens][D] values in the stored format, then (fp8 only)
//   [page_tokens] fp32 scales: 132 B/token for fp8 at D = 128, exactly the
//   wire size. Pages are allocated when the first token lands in them, so a
//   layer holds at most one partially filled page.
// - Summary page: kSummaryPageBlocks blocks x D fp32 values. For kMean a
//   block's value is the running fp32 sum of its dequantized keys (the mean
//   is sum / count, count = tokens of the block in the cache, derived from
//   length()); for kMax the running element-wise max. Summaries cost
//   4 * D / B bytes per token (3% of fp8 keys at D = B = 128).
// - bytes_reserved() = sum over layers of allocated key pages and summary
//   pages at their full size; the small page tables are not counted.
//
// Contract of the RequestStore methods: see kernels/backend.h. Append
// allocates every page it needs before writing anything, so a failed
// allocation (RESOURCE_EXHAUSTED) leaves the store unchanged, and its cost is
// proportional to the tokens appended: it copies the chunk and folds each new
// token into its own block's summary only.
//
// Accessors for the kernels (valid while no Append runs; the engine's
// reader/writer lock guarantees that):
// - KeyBytes(layer, s): pointer to token s's key; the tokens up to the end of
//   s's page follow contiguously (TokensToPageEnd(s) of them).
// - KeyScales(layer, s): fp8 only; same contiguity.
// - Summary(layer, b): D floats of block b; blocks up to the end of b's
//   summary page follow contiguously (stride D).
// - BlockCount(layer, b): tokens of block b in the cache.
#ifndef HISA_KERNELS_CPU_CPU_REQUEST_STORE_H_
#define HISA_KERNELS_CPU_CPU_REQUEST_STORE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/types.h"

namespace hisa::cpu {

class CpuRequestStore final : public RequestStore {
 public:
  static constexpr int kMinPageTokens = 256;
  // 24 blocks: a multiple of the score kernels' key blocks (3, 4, 8), so
  // block scoring runs whole kernel blocks; 12 KiB at D = 128.
  static constexpr int kSummaryPageBlocks = 24;

  // `config` must be valid (engine.h ValidateRequestConfig); `isa` resolved.
  CpuRequestStore(const RequestConfig& config, CpuIsa isa);

  // RequestStore.
  int64_t length(int layer) const override { return layers_[layer].length; }
  int64_t bytes_reserved() const override { return bytes_reserved_; }
  int64_t BytesAfterAppend(int layer, int64_t num_tokens) const override;
  absl::StatusOr<bool> Matches(const KeyChunk& chunk) const override;
  absl::Status Append(const KeyChunk& chunk) override;

  // Kernel access.
  const RequestConfig& config() const { return config_; }
  int64_t page_tokens() const { return page_tokens_; }
  int64_t TokensToPageEnd(int64_t s) const {
    return page_tokens_ - s % page_tokens_;
  }
  const uint8_t* KeyBytes(int layer, int64_t s) const {
    return layers_[layer].key_pages[s / page_tokens_].data() +
           (s % page_tokens_) * key_row_bytes_;
  }
  const float* KeyScales(int layer, int64_t s) const {
    return reinterpret_cast<const float*>(
               layers_[layer].key_pages[s / page_tokens_].data() +
               scales_offset_) +
           s % page_tokens_;
  }
  const float* Summary(int layer, int64_t b) const {
    return layers_[layer].summary_pages[b / kSummaryPageBlocks].data() +
           (b % kSummaryPageBlocks) * config_.head_dim;
  }
  int64_t BlockCount(int layer, int64_t b) const {
    const int64_t left = layers_[layer].length - b * config_.block_size;
    return left < config_.block_size ? left : config_.block_size;
  }
  // Bytes of one key page and one summary page.
  int64_t key_page_bytes() const { return key_page_bytes_; }
  int64_t summary_page_bytes() const { return summary_page_bytes_; }

 private:
  float* MutableSummary(int layer, int64_t b) {
    return layers_[layer].summary_pages[b / kSummaryPageBlocks].data() +
           (b % kSummaryPageBlocks) * config_.head_dim;
  }
  // Pages a layer of `length` tokens holds.
  int64_t KeyPagesFor(int64_t length) const;
  int64_t SummaryPagesFor(int64_t length) const;

  struct Layer {
    int64_t length = 0;
    std::vector<AlignedBuffer<uint8_t>> key_pages;
    std::vector<AlignedBuffer<float>> summary_pages;
  };

  const RequestConfig config_;
  const CpuIsa isa_;
  const int64_t page_tokens_;
  const int64_t key_row_bytes_;  // D * bytes per value
  const int64_t scales_offset_;  // byte offset of the scales in a key page
  const int64_t key_page_bytes_;
  const int64_t summary_page_bytes_;
  std::vector<Layer> layers_;
  int64_t bytes_reserved_ = 0;
};

}  // namespace hisa::cpu

#endif  // HISA_KERNELS_CPU_CPU_REQUEST_STORE_H_
