#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/cpu_request_store.h"
#include "kernels/cpu/key_decode.h"
#include "kernels/cpu/score_kernels.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cpu/topk.h"
#include "kernels/types.h"

namespace hisa {
namespace {

using cpu::AlignedBuffer;
using cpu::CpuIsa;
using cpu::CpuRequestStore;
using Clock = std::chrono::steady_clock;

// Work units per thread per stage: enough for dynamic load balancing across
// rows of very different lengths, few enough that per-unit overhead (an
// atomic fetch, a local top-k of <= k entries) stays negligible.
constexpr int64_t kUnitsPerThread = 8;
// Token scoring segment bounds: a segment of 512 tokens at H = 64, D = 128
// is ~8 MFLOP (~0.1 ms on one core); 32K tokens bounds the per-thread buffer
// and the serial top-k merge at 16 segments per 512K tokens.
constexpr int64_t kMinSegmentTokens = 512;
constexpr int64_t kMaxSegmentTokens = 32768;
// Block scoring unit bounds, in blocks (multiples of a summary page).
constexpr int64_t kMinBlockUnit = 64;
constexpr int64_t kMaxBlockUnit = 4096;
// Largest head_dim (types.h): sizes the per-thread decode tile.
constexpr int kMaxHeadDim = 256;
// Packed queries a thread keeps between calls: a batch of the server's
// default --batch_max_rows (1024 rows of H = 64, D = 128: 32 MiB). Past
// it, a batch's buffer is released when its call ends, so host memory
// outside the byte budget stays bounded (this much per calling thread).
// Released after every call, a 1024-row prefill's buffer was mapped and
// faulted in afresh each time: its `prepare` took 62-68 ms instead of 18
// on a 2-core VM (bench/RESULTS.md section 20).
constexpr int64_t kRetainedPackedBytes = int64_t{33} << 20;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

int64_t Clamp(int64_t v, int64_t lo, int64_t hi) {
  return std::min(std::max(v, lo), hi);
}

struct TokenRange {
  int64_t begin;
  int64_t end;
};

// Everything stage 1..5 need about one row.
struct RowPlan {
  const SelectTask* task = nullptr;
  const CpuRequestStore* store = nullptr;
  int layer = 0;
  int num_heads = 0;
  int head_dim = 0;
  int64_t block_size = 0;
  int k = 0;
  int m = 0;
  int64_t t = 0;
  // HISA with c + 1 > m: needs block scoring and choice.
  bool block_stage = false;
  int64_t num_blocks = 0;  // c + 1
  float* packed = nullptr;
  float* block_scores = nullptr;   // [num_blocks] when block_stage
  std::vector<TokenRange> ranges;  // candidate tokens, ascending, disjoint
  int64_t slot_begin = 0;
  int64_t slot_end = 0;
  int64_t segment_begin = 0;  // the row's segments: [segment_begin, end)
  int64_t segment_end = 0;
};

// Blocks [begin, end) of one row.
struct BlockUnit {
  int64_t row;
  int64_t begin;
  int64_t end;
};

// `tokens` candidate tokens of one row, starting `offset` tokens into
// ranges[range]; its top-k goes to slots [slot_begin, slot_begin + kept),
// kept <= min(k, tokens).
struct Segment {
  int64_t row;
  int64_t range;
  int64_t offset;
  int64_t tokens;
  int64_t slot_begin;
  int64_t kept;
};

// Per-thread scratch reused across calls: a decoded key tile, a decoded
// query, a buffer of packed candidates, and (on the thread that calls
// Select) the packed queries of a batch.
struct ThreadScratch {
  AlignedBuffer<float> tile;
  std::vector<float> query;
  std::vector<uint64_t> keys;
  AlignedBuffer<float> packed;

  float* Tile() {
    if (tile.empty()) tile.Allocate(int64_t{cpu::kScoreTileKeys} * kMaxHeadDim);
    return tile.data();
  }
  // At least `floats` floats, grown and not zeroed (PackQuery writes every
  // float), so that steady-state batches allocate nothing and touch no
  // fresh pages. Null when the allocation fails.
  float* Packed(int64_t floats) {
    if (packed.size_bytes() < floats * static_cast<int64_t>(sizeof(float)) &&
        !packed.Allocate(floats, /*zero=*/false)) {
      return nullptr;
    }
    return packed.data();
  }
  // Called when a Select ends: drops a buffer past kRetainedPackedBytes.
  void TrimPacked() {
    if (packed.size_bytes() > kRetainedPackedBytes) packed.Allocate(0);
  }
};

ThreadScratch& Scratch() {
  thread_local ThreadScratch scratch;
  return scratch;
}

// Splits every block-stage row's blocks 0..c into units of whole summary
// pages, sized so that the batch has about kUnitsPerThread units per thread.
std::vector<BlockUnit> BuildBlockUnits(const std::vector<RowPlan>& rows,
                                       int64_t total_blocks, int64_t threads) {
  std::vector<BlockUnit> units;
  if (total_blocks == 0) return units;
  const int64_t unit =
      cpu::RoundUp(Clamp(total_blocks / (threads * kUnitsPerThread),
                         kMinBlockUnit, kMaxBlockUnit),
                   CpuRequestStore::kSummaryPageBlocks);
  for (int64_t i = 0; i < static_cast<int64_t>(rows.size()); ++i) {
    if (!rows[i].block_stage) continue;
    for (int64_t b = 0; b < rows[i].num_blocks; b += unit) {
      units.push_back({i, b, std::min(b + unit, rows[i].num_blocks)});
    }
  }
  return units;
}

// Cuts every row's candidate ranges into segments of at most seg_tokens
// tokens (a multiple of the score tile, about kUnitsPerThread segments per
// thread over the batch), in row order, and assigns each segment min(k,
// tokens) winner slots; fills the rows' segment and slot ranges. Returns the
// number of slots.
int64_t BuildSegments(std::vector<RowPlan>& rows, int64_t threads,
                      std::vector<Segment>* segments) {
  int64_t total_tokens = 0;
  for (const RowPlan& row : rows) {
    for (const TokenRange& r : row.ranges) total_tokens += r.end - r.begin;
  }
  const int64_t seg_tokens =
      cpu::RoundUp(Clamp(total_tokens / (threads * kUnitsPerThread),
                         kMinSegmentTokens, kMaxSegmentTokens),
                   cpu::kScoreTileKeys);
  int64_t num_slots = 0;
  for (int64_t i = 0; i < static_cast<int64_t>(rows.size()); ++i) {
    RowPlan& row = rows[i];
    const size_t first = segments->size();
    for (int64_t r = 0; r < static_cast<int64_t>(row.ranges.size()); ++r) {
      for (int64_t s = row.ranges[r].begin; s < row.ranges[r].end;) {
        if (segments->size() == first ||
            segments->back().tokens == seg_tokens) {
          segments->push_back({i, r, s - row.ranges[r].begin, 0, 0, 0});
        }
        const int64_t take = std::min(row.ranges[r].end - s,
                                      seg_tokens - segments->back().tokens);
        segments->back().tokens += take;
        s += take;
      }
    }
    row.segment_begin = static_cast<int64_t>(first);
    row.segment_end = static_cast<int64_t>(segments->size());
    row.slot_begin = num_slots;
    for (size_t j = first; j < segments->size(); ++j) {
      (*segments)[j].slot_begin = num_slots;
      num_slots += std::min<int64_t>((*segments)[j].tokens, row.k);
    }
    row.slot_end = num_slots;
  }
  return num_slots;
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(int num_threads, CpuIsa isa) : isa_(isa), pool_(num_threads) {}

  absl::string_view name() const override { return "cpu"; }
  std::string device_description() const override;

  absl::StatusOr<std::unique_ptr<RequestStore>> CreateStore(
      const RequestConfig& config) override {
    return std::unique_ptr<RequestStore>(
        std::make_unique<CpuRequestStore>(config, isa_));
  }

  // `parallel` goes unused: the backend's own pool runs its loops.
  void Select(absl::Span<const SelectTask> tasks, SelectStageTimes* times,
              HostParallel* parallel) override;

 private:
  void PrepareRow(RowPlan& row) const;
  void ScoreBlocks(const RowPlan& row, int64_t begin, int64_t end) const;
  void ChooseBlocks(RowPlan& row) const;
  // Scores a segment's tokens and writes its local top-k to its slots (and
  // seg.kept); returns the seconds spent in the local top-k. `threshold` is
  // the row's shared lower bound on the final k-th packed key.
  double ScoreSegment(const RowPlan& row, Segment& seg,
                      std::atomic<uint64_t>& threshold, uint64_t* slots) const;
  void WriteRow(const RowPlan& row, const Segment* segments,
                uint64_t* slots) const;

  const CpuIsa isa_;
  cpu::ThreadPool pool_;
};

void CpuBackend::PrepareRow(RowPlan& row) const {
  const QueryRow& q = *row.task->row;
  const int64_t values = int64_t{row.num_heads} * row.head_dim;
  std::vector<float>& query = Scratch().query;
  query.resize(values);
  switch (q.q_format) {
    case KeyFormat::kFp8E4M3:
      for (int h = 0; h < row.num_heads; ++h) {
        cpu::DecodeFp8(isa_, q.q.data() + int64_t{h} * row.head_dim,
                       row.head_dim, q.q_scales[h],
                       query.data() + int64_t{h} * row.head_dim);
      }
      break;
    case KeyFormat::kBf16:
      cpu::DecodeBf16(isa_, q.q.data(), values, query.data());
      break;
    case KeyFormat::kFp32:
      std::memcpy(query.data(), q.q.data(), values * sizeof(float));
      break;
  }
  cpu::PackQuery(isa_, query.data(), q.weights.data(), row.num_heads,
                 row.head_dim, row.packed);
}

void CpuBackend::ScoreBlocks(const RowPlan& row, int64_t begin,
                             int64_t end) const {
  const CpuRequestStore& store = *row.store;
  const bool mean = store.config().pooling == BlockPooling::kMean;
  for (int64_t b = begin; b < end;) {
    // Summaries are contiguous within a summary page.
    const int64_t page_left = CpuRequestStore::kSummaryPageBlocks -
                              b % CpuRequestStore::kSummaryPageBlocks;
    const int64_t n = std::min(end - b, page_left);
    float* out = row.block_scores + b;
    cpu::ScoreKeys(isa_, row.packed, row.num_heads, row.head_dim,
                   store.Summary(row.layer, b), row.head_dim, n, out);
    if (mean) {
      // J over the mean r_b = sum_b / count_b: ReLU commutes with a positive
      // scale, so score the sum and divide once.
      for (int64_t i = 0; i < n; ++i) {
        out[i] /= static_cast<float>(store.BlockCount(row.layer, b + i));
      }
    }
    b += n;
  }
}

void CpuBackend::ChooseBlocks(RowPlan& row) const {
  row.ranges.clear();
  if (!row.block_stage) {
    row.ranges.push_back({0, row.t + 1});
    return;
  }
  const int64_t c = row.num_blocks - 1;
  // Blocks 0 and c are forced (c >= m >= 1 here, so they differ); the
  // max(0, m - 2) other places go to the largest J among 1..c-1.
  std::vector<uint64_t>& keys = Scratch().keys;
  keys.resize(c - 1);
  for (int64_t b = 1; b < c; ++b) {
    keys[b - 1] = cpu::PackScore(row.block_scores[b], b);
  }
  const int64_t others =
      cpu::SelectTopK(keys.data(), c - 1, std::max(0, row.m - 2));
  std::vector<int64_t> chosen;
  chosen.reserve(others + 2);
  chosen.push_back(0);
  for (int64_t i = 0; i < others; ++i) {
    chosen.push_back(cpu::UnpackPosition(keys[i]));
  }
  chosen.push_back(c);
  std::sort(chosen.begin() + 1, chosen.end() - 1);
  // Consecutive blocks merge into one token range; block c ends at t.
  for (int64_t b : chosen) {
    const int64_t begin = b * row.block_size;
    const int64_t end = std::min((b + 1) * row.block_size, row.t + 1);
    if (!row.ranges.empty() && row.ranges.back().end == begin) {
      row.ranges.back().end = end;
    } else {
      row.ranges.push_back({begin, end});
    }
  }
}

double CpuBackend::ScoreSegment(const RowPlan& row, Segment& seg,
                                std::atomic<uint64_t>& threshold,
                                uint64_t* slots) const {
  const CpuRequestStore& store = *row.store;
  const KeyFormat format = store.config().key_format;
  ThreadScratch& scratch = Scratch();
  float* tile = scratch.Tile();
  std::vector<uint64_t>& keys = scratch.keys;
  keys.resize(seg.tokens);
  alignas(64) float scores[cpu::kScoreTileKeys];

  // Once any segment of the row has kept k keys, its k-th key bounds the
  // row's final k-th key from below: a key under it has k better keys and
  // cannot be selected, so it is dropped here. The answer stays exact and
  // independent of timing; only the amount of selection work changes.
  uint64_t floor = threshold.load(std::memory_order_relaxed);
  int64_t count = 0;
  int64_t left = seg.tokens;
  int64_t offset = seg.offset;
  for (int64_t r = seg.range; left > 0; ++r, offset = 0) {
    const int64_t begin = row.ranges[r].begin + offset;
    const int64_t end = std::min(row.ranges[r].end, begin + left);
    left -= end - begin;
    for (int64_t s = begin; s < end;) {
      // Tiles never straddle a page, so each tile's keys are contiguous.
      const int64_t span = std::min(end - s, store.TokensToPageEnd(s));
      for (int64_t x = s; x < s + span; x += cpu::kScoreTileKeys) {
        const int64_t n = std::min<int64_t>(cpu::kScoreTileKeys, s + span - x);
        const uint8_t* bytes = store.KeyBytes(row.layer, x);
        const float* rows;
        if (format == KeyFormat::kFp32) {
          rows = reinterpret_cast<const float*>(bytes);
        } else {
          cpu::DecodeRows(isa_, format, bytes,
                          format == KeyFormat::kFp8E4M3
                              ? store.KeyScales(row.layer, x)
                              : nullptr,
                          n, row.head_dim, tile);
          rows = tile;
        }
        cpu::ScoreKeys(isa_, row.packed, row.num_heads, row.head_dim, rows,
                       row.head_dim, n, scores);
        for (int64_t j = 0; j < n; ++j) {
          const uint64_t key = cpu::PackScore(scores[j], x + j);
          keys[count] = key;
          count += key >= floor;
        }
        floor = threshold.load(std::memory_order_relaxed);
      }
      s += span;
    }
  }
  const Clock::time_point select_start = Clock::now();
  const int64_t kept = cpu::SelectTopK(keys.data(), count, row.k);
  if (kept == row.k) {
    // The smallest kept key is the segment's k-th: raise the row's floor.
    const uint64_t kth = *std::min_element(keys.data(), keys.data() + kept);
    uint64_t old = threshold.load(std::memory_order_relaxed);
    while (kth > old && !threshold.compare_exchange_weak(
                            old, kth, std::memory_order_relaxed)) {
    }
  }
  std::memcpy(slots + seg.slot_begin, keys.data(), kept * sizeof(uint64_t));
  seg.kept = kept;
  return Seconds(select_start, Clock::now());
}

void CpuBackend::WriteRow(const RowPlan& row, const Segment* segments,
                          uint64_t* slots) const {
  // Compact the segments' winners to the front of the row's slots.
  uint64_t* mine = slots + row.slot_begin;
  int64_t n = 0;
  for (int64_t s = row.segment_begin; s < row.segment_end; ++s) {
    const Segment& seg = segments[s];
    std::memmove(mine + n, slots + seg.slot_begin, seg.kept * sizeof(uint64_t));
    n += seg.kept;
  }
  const int64_t kept = cpu::SelectTopK(mine, n, row.k);
  RowResult* result = row.task->result;
  cpu::WriteSelection(mine, kept, row.k, row.task->row->return_scores, result);
  result->mode_used = row.task->mode;
  result->status = absl::OkStatus();
}

void CpuBackend::Select(absl::Span<const SelectTask> tasks,
                        SelectStageTimes* times, HostParallel* /*parallel*/) {
  if (tasks.empty()) return;
  const Clock::time_point t0 = Clock::now();
  const int64_t threads = pool_.num_threads();
  const int64_t num_rows = static_cast<int64_t>(tasks.size());

  // Plan rows and carve the per-call arenas.
  std::vector<RowPlan> rows(num_rows);
  int64_t packed_floats = 0;
  int64_t total_blocks = 0;
  for (int64_t i = 0; i < num_rows; ++i) {
    const SelectTask& task = tasks[i];
    RowPlan& row = rows[i];
    row.task = &task;
    row.store = static_cast<const CpuRequestStore*>(task.store);
    row.layer = task.row->layer;
    row.num_heads = task.row->num_heads;
    row.head_dim = task.config->head_dim;
    row.block_size = task.config->block_size;
    row.k = task.row->k;
    row.m = task.row->m;
    row.t = task.row->position;
    row.num_blocks = row.t / row.block_size + 1;
    row.block_stage =
        task.mode == SelectMode::kHisa && row.num_blocks > int64_t{row.m};
    packed_floats +=
        cpu::RoundUp(cpu::PackedQueryFloats(row.num_heads, row.head_dim), 16);
    if (row.block_stage) total_blocks += row.num_blocks;
  }
  float* const packed = Scratch().Packed(packed_floats);
  std::vector<float> block_scores(total_blocks);
  if (packed == nullptr) {
    for (const SelectTask& task : tasks) {
      task.result->status = absl::ResourceExhaustedError(
          "CPU backend: out of host memory for query scratch");
    }
    return;
  }
  {
    int64_t q_off = 0;
    int64_t b_off = 0;
    for (RowPlan& row : rows) {
      row.packed = packed + q_off;
      q_off +=
          cpu::RoundUp(cpu::PackedQueryFloats(row.num_heads, row.head_dim), 16);
      if (row.block_stage) {
        row.block_scores = block_scores.data() + b_off;
        b_off += row.num_blocks;
      }
    }
  }

  // 1. Prepare.
  pool_.ParallelFor(num_rows, [&](int64_t i) { PrepareRow(rows[i]); });
  const Clock::time_point t1 = Clock::now();

  // 2. Block scoring, in units of whole summary pages.
  const std::vector<BlockUnit> block_units =
      BuildBlockUnits(rows, total_blocks, threads);
  pool_.ParallelFor(static_cast<int64_t>(block_units.size()), [&](int64_t u) {
    const BlockUnit& unit = block_units[u];
    ScoreBlocks(rows[unit.row], unit.begin, unit.end);
  });
  const Clock::time_point t2 = Clock::now();

  // 3. Block choice -> candidate token ranges. Without block-stage rows it
  // is one range per row: no hand-off to the pool for that.
  if (total_blocks == 0) {
    for (RowPlan& row : rows) ChooseBlocks(row);
  } else {
    pool_.ParallelFor(num_rows, [&](int64_t i) { ChooseBlocks(rows[i]); });
  }
  const Clock::time_point t3 = Clock::now();

  // 4. Token scoring in segments, each keeping its own top-k.
  std::vector<Segment> segments;
  const int64_t num_slots = BuildSegments(rows, threads, &segments);
  // Uninitialized: every slot a row reads back was written by a segment.
  std::unique_ptr<uint64_t[]> slots(
      new uint64_t[std::max<int64_t>(num_slots, 1)]);
  std::vector<std::atomic<uint64_t>> thresholds(num_rows);
  for (std::atomic<uint64_t>& t : thresholds) t.store(0);  // 0: keep all
  std::atomic<int64_t> select_ns{0};
  pool_.ParallelFor(static_cast<int64_t>(segments.size()), [&](int64_t s) {
    Segment& seg = segments[s];
    const double secs =
        ScoreSegment(rows[seg.row], seg, thresholds[seg.row], slots.get());
    select_ns.fetch_add(static_cast<int64_t>(secs * 1e9),
                        std::memory_order_relaxed);
  });
  const Clock::time_point t4 = Clock::now();

  // 5. Per-row top-k over the segments' winners, output.
  pool_.ParallelFor(num_rows, [&](int64_t i) {
    WriteRow(rows[i], segments.data(), slots.get());
  });
  const Clock::time_point t5 = Clock::now();
  Scratch().TrimPacked();

  if (times != nullptr) {
    const double stage4 = Seconds(t3, t4);
    // Share of stage 4's thread time (wall x busy threads) spent in the
    // segments' local top-ks.
    const int64_t busy =
        std::min<int64_t>(threads, static_cast<int64_t>(segments.size()));
    const double thread_time = stage4 * static_cast<double>(busy);
    const double select_share =
        thread_time > 0 ? std::min(1.0, select_ns.load() * 1e-9 / thread_time)
                        : 0.0;
    times->prepare += Seconds(t0, t1);
    times->block_scoring += Seconds(t1, t2);
    times->block_choice += Seconds(t2, t3);
    times->token_scoring += stage4 * (1.0 - select_share);
    times->topk += stage4 * select_share + Seconds(t4, t5);
  }
}

}  // namespace

std::string CpuBackend::device_description() const {
  std::string model = "unknown CPU";
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (absl::StartsWith(line, "model name")) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        model = std::string(absl::StripLeadingAsciiWhitespace(
            absl::string_view(line).substr(colon + 1)));
      }
      break;
    }
  }
  return absl::StrCat("CPU: ", model, ", ", pool_.num_threads(),
                      " worker threads, ", CpuIsaName(isa_), " kernels");
}

std::unique_ptr<Backend> MakeCpuBackend(const CpuBackendOptions& options) {
  int threads = options.num_threads;
  if (threads <= 0) {
    threads = static_cast<int>(std::thread::hardware_concurrency());
    if (threads <= 0) threads = 1;
  }
  return std::make_unique<CpuBackend>(threads, cpu::ResolveCpuIsa(options.isa));
}

std::unique_ptr<Backend> MakeCpuBackend(int num_threads) {
  CpuBackendOptions options;
  options.num_threads = num_threads;
  return MakeCpuBackend(options);
}

}  // namespace hisa
