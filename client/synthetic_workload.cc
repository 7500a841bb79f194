#include "client/synthetic_workload.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/formats.h"

namespace hisa {
namespace {

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// A small deterministic generator: cheap to seed per token, so values depend
// only on (seed, position).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() { return SplitMix64(&state_); }
  // Uniform in [0, 1).
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  float Normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = Uniform();
    const double u2 = Uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = static_cast<float>(r * std::sin(2.0 * M_PI * u2));
    has_spare_ = true;
    return static_cast<float>(r * std::cos(2.0 * M_PI * u2));
  }

 private:
  uint64_t state_;
  bool has_spare_ = false;
  float spare_ = 0;
};

uint64_t Mix(uint64_t seed, uint64_t a, uint64_t b) {
  uint64_t s = seed ^ (a * 0xD6E8FEB86659FD93ull) ^ (b * 0xA0761D6478BD642Full);
  return SplitMix64(&s);
}

void Normalize(float* v, int n) {
  double norm = 0;
  for (int i = 0; i < n; ++i) norm += static_cast<double>(v[i]) * v[i];
  const float inv = norm > 0 ? static_cast<float>(1.0 / std::sqrt(norm)) : 0.0f;
  for (int i = 0; i < n; ++i) v[i] *= inv;
}

}  // namespace

SyntheticLayer::SyntheticLayer(const WorkloadShape& shape, uint64_t seed)
    : shape_(shape), seed_(seed), span_rng_state_(Mix(seed, 7, 7)) {
  const int d = shape_.head_dim;
  Rng rng(Mix(seed_, 1, 0));
  topic_dirs_.resize(static_cast<size_t>(shape_.num_topics) * d);
  for (float& v : topic_dirs_) v = rng.Normal();
  for (int t = 0; t < shape_.num_topics; ++t) Normalize(&topic_dirs_[t * d], d);
  sink_dir_.resize(d);
  for (float& v : sink_dir_) v = rng.Normal();
  Normalize(sink_dir_.data(), d);
  mean_.resize(d);
  dim_scale_.resize(d);
  for (int j = 0; j < d; ++j) {
    // Anisotropy: a few dimensions carry most of the variance and a shared
    // offset, as in trained key projections.
    dim_scale_[j] = 0.25f + 1.5f * std::exp(-static_cast<float>(j) / 16.0f);
    mean_[j] = 0.3f * rng.Normal() * dim_scale_[j];
  }
}

int SyntheticLayer::NextTopic() {
  const double u =
      static_cast<double>(SplitMix64(&span_rng_state_) >> 11) * 0x1.0p-53;
  if (!spans_.empty() && u < shape_.revisit_probability) {
    return spans_[SplitMix64(&span_rng_state_) % spans_.size()].topic;
  }
  return static_cast<int>(SplitMix64(&span_rng_state_) %
                          static_cast<uint64_t>(shape_.num_topics));
}

// Keeps a span starting after `position`, so the span holding it is final.
void SyntheticLayer::ExtendSpans(int64_t position) {
  if (spans_.empty()) spans_.push_back({0, NextTopic()});
  const uint64_t width =
      static_cast<uint64_t>(std::max(1, shape_.max_span - shape_.min_span + 1));
  while (spans_.back().start <= position) {
    const int64_t start = spans_.back().start + std::max(1, shape_.min_span) +
                          static_cast<int64_t>(SplitMix64(&span_rng_state_) % width);
    spans_.push_back({start, NextTopic()});
  }
}

int64_t SyntheticLayer::SpanIndex(int64_t position) {
  ExtendSpans(position);
  // The last span whose start <= position.
  auto it = std::upper_bound(
      spans_.begin(), spans_.end(), position,
      [](int64_t p, const Span& s) { return p < s.start; });
  return static_cast<int64_t>(it - spans_.begin()) - 1;
}

int SyntheticLayer::TopicAt(int64_t t) {
  return spans_[static_cast<size_t>(SpanIndex(t))].topic;
}

std::vector<float> SyntheticLayer::Keys(int64_t first, int64_t n) {
  const int d = shape_.head_dim;
  std::vector<float> out(static_cast<size_t>(n) * d);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = first + i;
    Rng rng(Mix(seed_, 2, static_cast<uint64_t>(s)));
    float* k = &out[static_cast<size_t>(i) * d];
    const float* topic = &topic_dirs_[static_cast<size_t>(TopicAt(s)) * d];
    // Topic strength varies per token, so some tokens of a span matter more.
    const float strength = 2.0f + 1.5f * rng.Normal();
    for (int j = 0; j < d; ++j) {
      k[j] = mean_[j] + strength * topic[j] * std::sqrt(static_cast<float>(d)) * 0.35f +
             0.6f * dim_scale_[j] * rng.Normal();
    }
    if (s < shape_.num_sinks) {
      for (int j = 0; j < d; ++j) {
        k[j] += 4.0f * sink_dir_[j] * std::sqrt(static_cast<float>(d)) * 0.35f;
      }
    }
  }
  return out;
}

void SyntheticLayer::Query(int64_t t, std::vector<float>* q,
                           std::vector<float>* weights) {
  const int d = shape_.head_dim;
  const int h_count = shape_.num_heads;
  q->assign(static_cast<size_t>(h_count) * d, 0.0f);
  weights->assign(static_cast<size_t>(h_count), 0.0f);
  Rng rng(Mix(seed_, 3, static_cast<uint64_t>(t)));
  const int64_t own_span = SpanIndex(t);
  const float scale = 1.0f / std::sqrt(static_cast<float>(h_count * d));
  for (int h = 0; h < h_count; ++h) {
    float* qh = &(*q)[static_cast<size_t>(h) * d];
    // Heads split between the local topic, an earlier span's topic (looking
    // back), and the sink.
    const int kind = static_cast<int>(rng.Next() % 4);
    int topic = spans_[static_cast<size_t>(own_span)].topic;
    if (kind == 1 && own_span > 0) {
      topic = spans_[rng.Next() % static_cast<uint64_t>(own_span)].topic;
    }
    const float* dir = kind == 3 ? sink_dir_.data()
                                 : &topic_dirs_[static_cast<size_t>(topic) * d];
    for (int j = 0; j < d; ++j) {
      qh[j] = 1.5f * dir[j] * std::sqrt(static_cast<float>(d)) +
              0.5f * rng.Normal();
    }
    const float w = std::fabs(1.0f + 0.4f * rng.Normal()) * scale;
    (*weights)[h] = (rng.Next() % 8 == 0) ? -0.3f * w : w;
  }
}

EncodedRows EncodeRows(KeyFormat format, absl::Span<const float> values,
                       int row_len) {
  EncodedRows out;
  out.format = format;
  const size_t rows = row_len > 0 ? values.size() / static_cast<size_t>(row_len) : 0;
  switch (format) {
    case KeyFormat::kFp8E4M3: {
      out.bytes.resize(values.size());
      out.scales.resize(rows);
      for (size_t r = 0; r < rows; ++r) {
        const float* x = values.data() + r * row_len;
        float amax = 0;
        for (int j = 0; j < row_len; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float scale = amax > 0 ? amax / 448.0f : 1.0f;
        out.scales[r] = scale;
        const float inv = 1.0f / scale;
        for (int j = 0; j < row_len; ++j) {
          out.bytes[r * row_len + j] = FloatToFp8E4M3(x[j] * inv);
        }
      }
      break;
    }
    case KeyFormat::kBf16: {
      out.bytes.resize(values.size() * 2);
      for (size_t i = 0; i < values.size(); ++i) {
        const uint16_t h = FloatToBf16(values[i]);
        out.bytes[2 * i] = static_cast<uint8_t>(h & 0xFF);
        out.bytes[2 * i + 1] = static_cast<uint8_t>(h >> 8);
      }
      break;
    }
    case KeyFormat::kFp32: {
      out.bytes.resize(values.size() * 4);
      for (size_t i = 0; i < values.size(); ++i) {
        uint32_t u;
        std::memcpy(&u, &values[i], 4);
        for (int b = 0; b < 4; ++b) {
          out.bytes[4 * i + b] = static_cast<uint8_t>(u >> (8 * b));
        }
      }
      break;
    }
  }
  return out;
}

QueryRow MakeQueryRow(absl::string_view request_id, int layer, int64_t position,
                      int num_heads, const EncodedRows& q,
                      absl::Span<const float> weights, SelectMode mode, int k,
                      int m) {
  QueryRow row;
  row.request_id = request_id;
  row.layer = layer;
  row.position = position;
  row.num_heads = num_heads;
  row.q_format = q.format;
  row.q = absl::MakeConstSpan(q.bytes);
  row.q_scales = absl::MakeConstSpan(q.scales);
  row.weights = weights;
  row.mode = mode;
  row.k = k;
  row.m = m;
  return row;
}

}  // namespace hisa
