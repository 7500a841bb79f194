// Synthetic indexer keys and queries with the structure of real attention
// (SPEC 7: attention sinks, keys that cluster by topic over spans of hundreds
// of tokens, anisotropic key distributions, queries that look back at earlier
// topics), plus the wire encodings (FP8_E4M3 with per-row scales, BF16, FP32)
// that the CLI, the demo and the load generator send.
//
//   hisa::SyntheticLayer layer(hisa::WorkloadShape{}, /*seed=*/42);
//   std::vector<float> keys = layer.Keys(/*first=*/0, /*n=*/4096);
//   hisa::EncodedRows enc = hisa::EncodeRows(hisa::KeyFormat::kFp8E4M3, keys,
//                                            /*row_len=*/128);
//   std::vector<float> q, w;
//   layer.Query(/*t=*/4095, &q, &w);
//
// Keys(first, n) is a pure function of (shape, seed, position): asking for a
// range in one call or token by token gives the same values, so a prefill and
// later decode appends continue one sequence. Query(t, ...) is a pure
// function of (shape, seed, t). Not thread-safe (topic spans are extended
// lazily); use one SyntheticLayer per thread.
#ifndef HISA_CLIENT_SYNTHETIC_WORKLOAD_H_
#define HISA_CLIENT_SYNTHETIC_WORKLOAD_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "kernels/types.h"

namespace hisa {

struct WorkloadShape {
  int head_dim = 128;
  int num_heads = 64;
  // Topic directions shared by keys and queries.
  int num_topics = 32;
  // A topic span lasts a uniform number of tokens in [min_span, max_span].
  int min_span = 128;
  int max_span = 768;
  // Probability that a new span returns to a topic seen before (so relevant
  // tokens sit far back in the context).
  double revisit_probability = 0.4;
  // The first num_sinks tokens share a strong "sink" direction.
  int num_sinks = 4;
};

class SyntheticLayer {
 public:
  SyntheticLayer(const WorkloadShape& shape, uint64_t seed);

  // Keys of positions [first, first + n): n * head_dim floats, token-major.
  std::vector<float> Keys(int64_t first, int64_t n);

  // The query of position t: q gets num_heads * head_dim floats (head-major),
  // weights gets num_heads head weights (softmax scale and H^-0.5 folded in;
  // a few heads are negative, as in trained indexers).
  void Query(int64_t t, std::vector<float>* q, std::vector<float>* weights);

  // The topic of position t (for tests and demos).
  int TopicAt(int64_t t);

  const WorkloadShape& shape() const { return shape_; }

 private:
  struct Span {
    int64_t start;
    int topic;
  };
  int NextTopic();
  void ExtendSpans(int64_t position);
  int64_t SpanIndex(int64_t position);

  const WorkloadShape shape_;
  const uint64_t seed_;
  std::vector<float> topic_dirs_;  // num_topics * head_dim, unit vectors
  std::vector<float> sink_dir_;    // head_dim
  std::vector<float> mean_;        // head_dim: the shared anisotropic offset
  std::vector<float> dim_scale_;   // head_dim: per-dimension spread
  std::vector<Span> spans_;
  uint64_t span_rng_state_;
};

// Values encoded for the wire.
struct EncodedRows {
  KeyFormat format = KeyFormat::kFp32;
  std::vector<uint8_t> bytes;  // rows * row_len values, little endian
  std::vector<float> scales;   // FP8_E4M3: one per row; empty otherwise
};

// Encodes `values` (rows of row_len floats). FP8_E4M3 uses one scale per row,
// max|x| / 448 (1 for an all-zero row), and rounds to nearest even; BF16
// rounds to nearest even; FP32 copies. values.size() must be a multiple of
// row_len.
EncodedRows EncodeRows(KeyFormat format, absl::Span<const float> values,
                       int row_len);

// A QueryRow pointing into `q` (the encoded query, one row per head) and
// `weights`; the caller keeps both alive while the row is used.
QueryRow MakeQueryRow(absl::string_view request_id, int layer, int64_t position,
                      int num_heads, const EncodedRows& q,
                      absl::Span<const float> weights, SelectMode mode, int k,
                      int m);

}  // namespace hisa

#endif  // HISA_CLIENT_SYNTHETIC_WORKLOAD_H_
