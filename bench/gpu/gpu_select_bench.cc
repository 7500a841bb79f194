// Kernel-level benchmark of the CUDA backend (SPEC 8 shapes): DENSE and
// HISA for the prefill shape (1024 rows at the end of the prefix), a full
// causal prefill (every row 0..L-1 of one sequence) and decode (8, 64 and
// 256 requests x 1 row), FP8 keys and queries, H = 64, D = 128, B = 128, m = 64,
// k = 2048, at every length given.
//
//   hisa_gpu_bench --lengths=8192,65536 --json=/tmp/bench.json [--reps=7]
//                  [--shapes=prefill1024,causal,decode8,decode64,decode256]
//                  [--trace]   (per-CTA kernel timelines of HISA batches;
//                               HISA_TRACE_CSV=file also appends every
//                               traced CTA's points to `file`)
//
// Method. Keys are appended through the backend (real pages, real
// summaries). Each measured batch is planned once (select_plan.h), uploaded
// once, and its launch sequence (DENSE: token top-k; HISA: block scoring +
// choice, then token top-k; split rows merged inside) is timed with CUDA
// events around LaunchSelectPlan after warm-up: inputs and outputs stay on
// the device, like the paper's kernel-level numbers; host planning, upload
// and download are excluded (one end-to-end Backend::Select line shows
// them). Medians of --reps runs (3 for causal at L >= 64K, at least 25 for
// decode). Each timed run is followed by a cold one, reported apart
// ("cold"): after a write of twice the L2's size, so L2 holds none of the
// plan's data but dirty lines, and the host's launch calls fall outside
// the timed span. And a third, "queued": L2 as the previous run left it,
// with the launches enqueued while the stream waits for a host callback,
// so that the span is the GPU's time alone (as NVBench's blocking kernel
// measures; the warm headline includes the host's first launch call).
// Ceilings
// measured in the same run: device-to-device copy bandwidth (bytes read +
// written); the GEMM ceilings come from torch_reference.py. Required FLOPs
// count 2 * H * D per (row, scored item): DENSE t + 1 tokens; HISA c + 1
// block means + min(m * B, t + 1) tokens. Minimal bytes: every key /
// summary the shape needs, read once. A/B lines at 64K: the mma.sync token
// kernel, paired HISA rows, per-thread copies instead of bulk tensor copies
// (_cpasync), a running top-k instead of slot scores, independent queries.
//
// Queries of neighbouring prefill rows are correlated (AR(1) per element,
// rho = 0.95), as real indexer queries of consecutive tokens are; one extra
// line times the 64K prefill shape with independent queries. Keys: Gaussian
// with a per-block offset, FP8 with per-token amax scales.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/gpu/cuda_ok.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device_state.h"
#include "kernels/cuda/select_layout.h"
#include "kernels/cuda/select_plan.h"
#include "kernels/formats.h"
#include "kernels/types.h"

namespace hisa {
namespace {

constexpr int kH = 64, kD = 128, kB = 128, kM = 64, kK = 2048;

struct Args {
  std::vector<int64_t> lengths = {8192, 16384, 32768, 65536, 131072};
  std::string json = "gpu_bench.json";
  int reps = 7;
  bool causal = true;
  // Print the kernels' per-CTA timeline (select_layout.h TracePoint) of one
  // extra launch of each HISA decode and prefill1024 batch.
  bool trace = false;
  // Shapes to run (prefill1024, causal, decode8, decode64, decode256);
  // empty = all.
  std::vector<std::string> shapes;
  bool Runs(absl::string_view shape) const {
    return shapes.empty() ||
           std::find(shapes.begin(), shapes.end(), shape) != shapes.end();
  }
};

Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* name) -> const char* {
      const std::string prefix = absl::StrCat("--", name, "=");
      return arg.rfind(prefix, 0) == 0 ? argv[i] + prefix.size() : nullptr;
    };
    if (const char* v = value("lengths")) {
      a.lengths.clear();
      for (absl::string_view p : absl::StrSplit(v, ',')) {
        int64_t n;
        if (absl::SimpleAtoi(p, &n)) a.lengths.push_back(n);
      }
    } else if (const char* v = value("json")) {
      a.json = v;
    } else if (const char* v = value("reps")) {
      a.reps = std::max(1, std::atoi(v));
    } else if (const char* v = value("shapes")) {
      a.shapes = absl::StrSplit(v, ',', absl::SkipEmpty());
    } else if (arg == "--no-causal") {
      a.causal = false;
    } else if (arg == "--trace") {
      a.trace = true;
    } else {
      std::fprintf(stderr, "unknown argument %s\n", arg.c_str());
      std::exit(1);
    }
  }
  return a;
}

// FP8 encoding by table: nearest e4m3 for |x| <= 448 via the 127 codes.
struct Fp8Encoder {
  std::vector<float> codes;
  Fp8Encoder() {
    for (int i = 0; i < 127; ++i) codes.push_back(Fp8E4M3ToFloat(i));
  }
  uint8_t operator()(float v) const {
    const float a = std::min(std::fabs(v), 448.f);
    const auto it = std::lower_bound(codes.begin(), codes.end(), a);
    int hi = static_cast<int>(it - codes.begin());
    if (hi > 126) hi = 126;
    int lo = hi > 0 ? hi - 1 : 0;
    const int code = (a - codes[lo] <= codes[hi] - a) ? lo : hi;
    return static_cast<uint8_t>((v < 0 ? 0x80 : 0) | code);
  }
};

// Quantizes rows of `dim` floats to e4m3 bytes with amax / 448 scales.
void Quantize(const std::vector<float>& v, int dim, const Fp8Encoder& enc,
              std::vector<uint8_t>* bytes, std::vector<float>* scales) {
  const int64_t rows = static_cast<int64_t>(v.size()) / dim;
  bytes->resize(v.size());
  scales->resize(rows);
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0;
    for (int d = 0; d < dim; ++d) amax = std::max(amax, std::fabs(v[r * dim + d]));
    const float scale = amax > 0 ? amax / 448.f : 1.f;
    (*scales)[r] = scale;
    for (int d = 0; d < dim; ++d) {
      (*bytes)[r * dim + d] = enc(v[r * dim + d] / scale);
    }
  }
}

struct QueryPool {
  int64_t rows = 0;
  std::vector<uint8_t> q;        // rows x H x D
  std::vector<float> scales;     // rows x H
  std::vector<float> weights;    // rows x H
};

QueryPool MakeQueries(std::mt19937_64& rng, int64_t rows, double rho,
                      const Fp8Encoder& enc) {
  std::normal_distribution<float> normal;
  std::vector<float> v(rows * kH * kD), state(kH * kD);
  for (float& x : state) x = normal(rng);
  const float a = static_cast<float>(rho);
  const float b = static_cast<float>(std::sqrt(1 - rho * rho));
  for (int64_t r = 0; r < rows; ++r) {
    for (int i = 0; i < kH * kD; ++i) {
      state[i] = a * state[i] + b * normal(rng);
      v[r * kH * kD + i] = state[i];
    }
  }
  QueryPool p;
  p.rows = rows;
  Quantize(v, kD, enc, &p.q, &p.scales);
  p.weights.resize(rows * kH);
  for (float& w : p.weights) w = normal(rng) * 0.125f;
  return p;
}

QueryRow RowFrom(const QueryPool& pool, int64_t i, int64_t position,
                 SelectMode mode) {
  const int64_t r = i % pool.rows;
  QueryRow row;
  row.request_id = "bench";
  row.layer = 0;
  row.position = position;
  row.num_heads = kH;
  row.q_format = KeyFormat::kFp8E4M3;
  row.q = absl::MakeConstSpan(pool.q.data() + r * kH * kD, kH * kD);
  row.q_scales = absl::MakeConstSpan(pool.scales.data() + r * kH, kH);
  row.weights = absl::MakeConstSpan(pool.weights.data() + r * kH, kH);
  row.mode = mode;
  row.k = kK;
  row.m = kM;
  return row;
}

struct Measure {
  // Median and fastest of the timed runs (L2 as the previous run left it;
  // the host's launch calls inside the timed span).
  double median_ms = 0;
  double min_ms = 0;
  // Median of the cold runs: each after a write of twice the L2's size
  // (see TimeBatch).
  double cold_ms = 0;
  // Median of the queued runs: warm L2, launches enqueued before the GPU
  // reaches the start event (see TimeBatch).
  double queued_ms = 0;
  // [0]: block scoring + block choice, [2]: token top-k + split merge
  // ([1] and [3] are empty: those steps are fused).
  double stage_ms[4] = {0, 0, 0, 0};
  std::vector<int32_t> positions;  // last run's outputs
  int64_t device_bytes = 0;
  double plan_s = 0;
};

// A stream callback that holds the stream for 200 us (TimeBatch's queued
// runs: the host enqueues the timed span meanwhile).
void CUDART_CB SpinHostCallback(void*) {
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::microseconds(200);
  while (std::chrono::steady_clock::now() < until) {
  }
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// A/B variant: a running top-k per work item instead of slot scores.
void RunningTopK(cuda::PlanOptions& o) { o.slot_scores = false; }
// A/B variant: slot scores in the pooled form's per-SM slices (unsplit
// rows) instead of the groups' device scratch.
void PooledScores(cuda::PlanOptions& o) { o.slot_score_budget_bytes = 0; }
// A/B variant: per-thread cp.async copies instead of bulk tensor copies.
void NoTma(cuda::PlanOptions& o) { o.use_tma = false; }

// HISA_TRACE_CSV: the `ctas` traced CTAs of launch `l` (trace points `t`)
// appended to `path`, a row each: label, launch, CTA, SM, then every point
// in us from t0 (empty: not reached).
void AppendTraceCsv(const char* path, const char* label, int l,
                    const uint64_t* t, int ctas, uint64_t t0) {
  FILE* out = std::fopen(path, "a");
  if (out == nullptr) return;
  for (int c = 0; c < ctas; ++c) {
    const uint64_t* x = t + c * cuda::kTraceSlots;
    std::fprintf(out, "%s,%d,%d,%llu", label, l, c,
                 static_cast<unsigned long long>(x[cuda::kTraceSm]));
    for (int p = cuda::kTraceStart; p < cuda::kTraceSm; ++p) {
      if (x[p] == 0) {
        std::fprintf(out, ",");
      } else {
        std::fprintf(out, ",%.2f", static_cast<double>(x[p] - t0) * 1e-3);
      }
    }
    std::fprintf(out, "\n");
  }
  std::fclose(out);
}

// The timeline of one traced launch sequence: per kernel, for each trace
// point, min / median / max over its CTAs in microseconds from the first
// CTA's start; then the tail (ticket -> tail end) of the CTAs that ran one.
void PrintTrace(const char* label, const std::vector<uint64_t>& trace) {
  uint64_t t0 = UINT64_MAX;
  for (size_t i = 0; i < trace.size(); i += cuda::kTraceSlots) {
    if (trace[i + cuda::kTraceStart] != 0) {
      t0 = std::min(t0, trace[i + cuda::kTraceStart]);
    }
  }
  if (t0 == UINT64_MAX) return;
  static const char* kNames[] = {"start",    "waited",  "ready",
                                 "loop_end", "ticket",  "tail_in",
                                 "tail_rnd", "tail_th", "tail_end",
                                 "choice_in", "chosen"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == cuda::kTraceSm);
  auto spread = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return absl::StrFormat("n=%4zu  min %7.2f  median %7.2f  max %7.2f",
                           v.size(), v.front(), v[v.size() / 2], v.back());
  };
  std::printf("trace %s (us from the first CTA's start)\n", label);
  const size_t per_launch = size_t{cuda::kTraceMaxCtas} * cuda::kTraceSlots;
  for (int l = 0; l < cuda::kTraceMaxLaunches; ++l) {
    const uint64_t* t = trace.data() + l * per_launch;
    int ctas = 0;
    while (ctas < cuda::kTraceMaxCtas &&
           t[ctas * cuda::kTraceSlots + cuda::kTraceStart] != 0) {
      ++ctas;
    }
    if (ctas == 0) continue;
    std::printf("  launch %d: %d CTAs\n", l, ctas);
    if (const char* csv = std::getenv("HISA_TRACE_CSV"); csv != nullptr) {
      AppendTraceCsv(csv, label, l, t, ctas, t0);
    }
    std::vector<double> tails;
    for (int p = cuda::kTraceStart; p < cuda::kTraceSm; ++p) {
      std::vector<double> v;
      for (int c = 0; c < ctas; ++c) {
        const uint64_t x = t[c * cuda::kTraceSlots + p];
        if (x != 0) v.push_back((static_cast<double>(x - t0)) * 1e-3);
      }
      if (v.empty()) continue;
      std::printf("    %-9s %s\n", kNames[p], spread(v).c_str());
    }
    for (int c = 0; c < ctas; ++c) {
      const uint64_t* x = t + c * cuda::kTraceSlots;
      if (x[cuda::kTraceTailEnd] != 0 && x[cuda::kTraceTicket] != 0) {
        tails.push_back(static_cast<double>(x[cuda::kTraceTailEnd] -
                                            x[cuda::kTraceTicket]) * 1e-3);
      }
    }
    if (!tails.empty()) {
      std::printf("    tail (ticket -> tail_end) %s\n", spread(tails).c_str());
    }
    // The tail's steps between the points its kernel records (loading its
    // inputs, rounds, finding the threshold, the compaction and writes).
    std::map<std::pair<int, int>, std::vector<double>> steps;
    for (int c = 0; c < ctas; ++c) {
      const uint64_t* x = t + c * cuda::kTraceSlots;
      if (x[cuda::kTraceTailIn] == 0) continue;
      int from = cuda::kTraceTicket;
      for (int p = from + 1; p <= cuda::kTraceTailEnd; ++p) {
        if (x[p] == 0 || x[from] == 0) continue;
        steps[{from, p}].push_back(static_cast<double>(x[p] - x[from]) *
                                   1e-3);
        from = p;
      }
    }
    for (const auto& [step, v] : steps) {
      std::printf("      %s -> %s %s\n", kNames[step.first],
                  kNames[step.second], spread(v).c_str());
    }
    // Where a CTA's time goes: each phase's share of the summed lifetimes
    // (start -> its last point) of the CTAs that reached every point up to
    // the ticket.
    double phase_us[4] = {0, 0, 0, 0};
    for (int c = 0; c < ctas; ++c) {
      const uint64_t* x = t + c * cuda::kTraceSlots;
      if (x[cuda::kTraceReady] == 0 || x[cuda::kTraceLoopEnd] == 0 ||
          x[cuda::kTraceTicket] == 0) {
        continue;
      }
      phase_us[0] += (x[cuda::kTraceReady] - x[cuda::kTraceStart]) * 1e-3;
      phase_us[1] += (x[cuda::kTraceLoopEnd] - x[cuda::kTraceReady]) * 1e-3;
      phase_us[2] += (x[cuda::kTraceTicket] - x[cuda::kTraceLoopEnd]) * 1e-3;
      if (x[cuda::kTraceTailEnd] != 0) {
        phase_us[3] += (x[cuda::kTraceTailEnd] - x[cuda::kTraceTicket]) * 1e-3;
      }
    }
    const double life = phase_us[0] + phase_us[1] + phase_us[2] + phase_us[3];
    if (life > 0) {
      std::printf(
          "    share of CTA time: prologue %.1f%%, tile loop %.1f%%, "
          "loop end -> ticket %.1f%%, tail %.1f%%\n",
          100 * phase_us[0] / life, 100 * phase_us[1] / life,
          100 * phase_us[2] / life, 100 * phase_us[3] / life);
    }
  }
}

// A device buffer of twice the L2's size, allocated once: writing it
// evicts every cached line (*bytes: its size).
uint8_t* FlushBuffer(size_t* bytes) {
  static size_t size = 0;
  static uint8_t* buffer = nullptr;
  if (buffer == nullptr) {
    int device = 0, l2 = 0;
    CUDA_OK(cudaGetDevice(&device));
    CUDA_OK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
    size = 2 * static_cast<size_t>(l2);
    CUDA_OK(cudaMalloc(&buffer, size));
  }
  *bytes = size;
  return buffer;
}

Measure TimeBatch(CudaBackend& backend, const std::vector<QueryRow>& rows,
                  const std::vector<const RequestStore*>& stores,
                  const RequestConfig& config, int reps, bool keep_output,
                  const std::function<void(cuda::PlanOptions&)>& variant =
                      nullptr,
                  std::vector<uint64_t>* trace = nullptr) {
  std::vector<RowResult> results(rows.size());
  std::vector<SelectTask> tasks(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    tasks[i] = SelectTask{stores[i], &config, &rows[i], rows[i].mode,
                          &results[i]};
  }
  Measure m;
  const absl::Time t0 = absl::Now();
  // The backend's options, changed by an A/B variant.
  cuda::PlanOptions opts = backend.plan_options();
  if (variant) variant(opts);
  absl::StatusOr<cuda::SelectPlan> plan = cuda::BuildSelectPlan(tasks, opts);
  m.plan_s = absl::ToDoubleSeconds(absl::Now() - t0);
  if (!plan.ok()) {
    std::fprintf(stderr, "plan failed: %s\n", plan.status().ToString().c_str());
    std::exit(3);
  }
  m.device_bytes = plan->device_bytes;
  uint8_t* base = nullptr;
  CUDA_OK(cudaMalloc(&base, plan->device_bytes));
  CUDA_OK(cudaMemcpy(base, plan->image.data(), plan->image.size(),
                     cudaMemcpyHostToDevice));
  cudaEvent_t ev[5], start, stop;
  for (cudaEvent_t& e : ev) CUDA_OK(cudaEventCreate(&e));
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  const uint8_t* arena = backend.device().arena();
  const CUtensorMap* key_map = backend.device().key_tensor_map();
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  // Warm-up (module load, attributes, caches), then timed runs without
  // stage events (an event between two kernels would keep the second from
  // launching early: programmatic dependent launch), then one run with them
  // for the stage split. Each timed run is followed by a cold one, timed
  // apart: it starts after a write of twice the L2's size, so L2 holds none
  // of the plan's data (as in a serving step whose other layers ran in
  // between) but many dirty lines of that write, and the GPU is busy while
  // the host enqueues the launches (Triton's do_bench times kernels so).
  // And by a queued one: the stream first waits for a host callback that
  // spins 200 us, while this thread enqueues the timed span, so the GPU
  // finds every launch queued when it reaches the start event.
  const int warmup = 2;
  size_t flush_bytes = 0;
  uint8_t* flush = FlushBuffer(&flush_bytes);
  std::vector<double> times, cold_times, queued_times;
  for (int r = 0; r < warmup + 3 * reps + 1; ++r) {
    const bool staged = r == warmup + 3 * reps;
    const int kind = staged || r < warmup ? 0 : (r - warmup) % 3;
    const bool cold = kind == 1;
    const bool queued = kind == 2;
    if (cold) {
      CUDA_OK(cudaMemsetAsync(flush, r & 0xFF, flush_bytes, stream));
    }
    if (queued) CUDA_OK(cudaLaunchHostFunc(stream, SpinHostCallback, nullptr));
    CUDA_OK(cudaEventRecord(start, stream));
    CUDA_OK(cuda::LaunchSelectPlan(*plan, base, arena, key_map, stream,
                                   staged ? ev : nullptr));
    CUDA_OK(cudaEventRecord(stop, stream));
    CUDA_OK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
    if (r >= warmup && !staged) {
      (cold ? cold_times : queued ? queued_times : times).push_back(ms);
    }
    if (staged) {
      for (int s = 0; s < 4; ++s) {
        float x = 0;
        CUDA_OK(cudaEventElapsedTime(&x, ev[s], ev[s + 1]));
        m.stage_ms[s] = x;
      }
    }
  }
  if (trace != nullptr) {  // one more launch, traced
    const size_t n = size_t{cuda::kTraceMaxLaunches} * cuda::kTraceMaxCtas *
                     cuda::kTraceSlots;
    uint64_t* d_trace = nullptr;
    CUDA_OK(cudaMalloc(&d_trace, n * 8));
    CUDA_OK(cudaMemset(d_trace, 0, n * 8));
    CUDA_OK(cuda::LaunchSelectPlan(*plan, base, arena, key_map, stream,
                                   nullptr, d_trace));
    CUDA_OK(cudaStreamSynchronize(stream));
    trace->resize(n);
    CUDA_OK(cudaMemcpy(trace->data(), d_trace, n * 8, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaFree(d_trace));
  }
  CUDA_OK(cudaStreamDestroy(stream));
  m.median_ms = Median(times);
  m.min_ms = *std::min_element(times.begin(), times.end());
  m.cold_ms = Median(cold_times);
  m.queued_ms = Median(queued_times);
  if (keep_output) {
    m.positions.resize(plan->out_entries);
    CUDA_OK(cudaMemcpy(m.positions.data(), base + plan->out_pos_off,
                       plan->out_entries * 4, cudaMemcpyDeviceToHost));
    // Sanity: ascending, in [0, t], -1 padded, right count.
    for (size_t i = 0; i < rows.size(); ++i) {
      const int32_t* p = m.positions.data() + plan->task_out_offset[i];
      const int64_t t = rows[i].position;
      const int64_t want = std::min<int64_t>(kK, t + 1);
      for (int j = 0; j < kK; ++j) {
        const bool ok = j < want ? (p[j] >= 0 && p[j] <= t && (j == 0 || p[j] > p[j - 1]))
                                 : p[j] == -1;
        if (!ok) {
          std::fprintf(stderr, "BAD OUTPUT row %zu t=%lld entry %d = %d\n", i,
                       static_cast<long long>(t), j, p[j]);
          std::exit(4);
        }
      }
    }
  }
  for (cudaEvent_t& e : ev) cudaEventDestroy(e);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  CUDA_OK(cudaFree(base));
  return m;
}

// Mean |A ∩ B| / |B| over rows (B = DENSE: HISA's recall of DENSE's set).
double Recall(const std::vector<int32_t>& a, const std::vector<int32_t>& b,
              int64_t rows) {
  double sum = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* x = a.data() + r * kK;
    const int32_t* y = b.data() + r * kK;
    int nx = 0, ny = 0;
    while (nx < kK && x[nx] >= 0) ++nx;
    while (ny < kK && y[ny] >= 0) ++ny;
    int i = 0, j = 0, both = 0;
    while (i < nx && j < ny) {
      if (x[i] == y[j]) {
        ++both;
        ++i;
        ++j;
      } else if (x[i] < y[j]) {
        ++i;
      } else {
        ++j;
      }
    }
    sum += ny ? static_cast<double>(both) / ny : 1.0;
  }
  return sum / rows;
}

struct Output {
  FILE* f;
  bool first = true;
  void Line(const std::string& json) {
    std::fprintf(f, "%s\n  %s", first ? "" : ",", json.c_str());
    first = false;
    std::fflush(f);
  }
};

double DenseFlops(const std::vector<QueryRow>& rows) {
  double f = 0;
  for (const QueryRow& r : rows) f += 2.0 * kH * kD * (r.position + 1);
  return f;
}
double HisaFlops(const std::vector<QueryRow>& rows) {
  double f = 0;
  for (const QueryRow& r : rows) {
    const int64_t c = r.position / kB;
    f += 2.0 * kH * kD *
         ((c + 1) + std::min<int64_t>(int64_t{kM} * kB, r.position + 1));
  }
  return f;
}

}  // namespace
}  // namespace hisa

int main(int argc, char** argv) {
  using namespace hisa;
  const Args args = ParseArgs(argc, argv);
  const int64_t max_len =
      *std::max_element(args.lengths.begin(), args.lengths.end());
  constexpr int kDecodeRequests = 256;
  const int64_t token_bytes = kD + 4;

  cuda::DeviceOptions options;
  // The prefill request plus 256 decode requests of max_len tokens each.
  options.memory_budget_bytes =
      (kDecodeRequests + 1) * (max_len * token_bytes * 11 / 10 + (int64_t{4} << 20));
  options.select_contexts = 1;
  absl::StatusOr<std::unique_ptr<CudaBackend>> made = CudaBackend::Create(options);
  if (!made.ok()) {
    std::fprintf(stderr, "backend: %s\n", made.status().ToString().c_str());
    return 1;
  }
  CudaBackend& backend = **made;
  std::printf("device %s, %d SMs; budget %.1f GB\n",
              backend.device().device_name().c_str(), backend.device().num_sms(),
              options.memory_budget_bytes / 1e9);
  {
    // Split selects' thread-block clusters that fit at once, by size, and
    // when spread (at most two CTAs per SM, load-balancing policy).
    std::string fit;
    const cuda::PlanOptions& o = backend.plan_options();
    for (int c = 2; c <= cuda::kMaxClusterItems; ++c) {
      absl::StrAppend(&fit, " ", c, ":", o.clusters_resident[c], "/",
                      o.clusters_resident_spread[c]);
    }
    std::printf(
        "split-select clusters resident at once, by size (default/spread):%s\n",
        fit.c_str());
  }

  FILE* f = std::fopen(args.json.c_str(), "w");
  if (f == nullptr) {
    std::perror("json");
    return 1;
  }
  std::fprintf(f, "[");
  Output out{f};

  // Ceiling: device-to-device copy, bytes read + written.
  {
    const size_t bytes = size_t{2} << 30;
    void *a = nullptr, *b = nullptr;
    CUDA_OK(cudaMalloc(&a, bytes));
    CUDA_OK(cudaMalloc(&b, bytes));
    CUDA_OK(cudaMemset(a, 1, bytes));
    cudaEvent_t s, e;
    CUDA_OK(cudaEventCreate(&s));
    CUDA_OK(cudaEventCreate(&e));
    std::vector<double> t;
    for (int r = 0; r < 8; ++r) {
      CUDA_OK(cudaEventRecord(s, nullptr));
      CUDA_OK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, nullptr));
      CUDA_OK(cudaEventRecord(e, nullptr));
      CUDA_OK(cudaEventSynchronize(e));
      float ms;
      CUDA_OK(cudaEventElapsedTime(&ms, s, e));
      if (r >= 2) t.push_back(ms);
    }
    const double gbps = 2.0 * bytes / (Median(t) * 1e-3) / 1e9;
    std::printf("ceiling: D2D copy %.0f GB/s (read + write)\n", gbps);
    out.Line(absl::StrCat("{\"kind\":\"ceiling\",\"name\":\"d2d_copy_GBps\",\"value\":", gbps, "}"));
    cudaFree(a);
    cudaFree(b);
    cudaEventDestroy(s);
    cudaEventDestroy(e);
  }

  // Keys: Gaussian + per-block offset, FP8 with amax scales.
  const Fp8Encoder enc;
  std::mt19937_64 rng(20260402);
  std::vector<uint8_t> key_bytes;
  std::vector<float> key_scales;
  {
    std::normal_distribution<float> normal;
    std::vector<float> v(max_len * kD), offset(kD);
    for (int64_t s = 0; s < max_len; ++s) {
      if (s % kB == 0) for (float& o : offset) o = 0.5f * normal(rng);
      for (int d = 0; d < kD; ++d) v[s * kD + d] = normal(rng) + offset[d];
    }
    Quantize(v, kD, enc, &key_bytes, &key_scales);
  }
  const RequestConfig config{1, kD, kB, KeyFormat::kFp8E4M3, BlockPooling::kMean};
  auto make_store = [&]() {
    std::unique_ptr<RequestStore> store = *backend.CreateStore(config);
    const int64_t chunk = 65536;
    for (int64_t first = 0; first < max_len; first += chunk) {
      KeyChunk c;
      c.request_id = "bench";
      c.layer = 0;
      c.first_position = first;
      c.num_tokens = std::min(chunk, max_len - first);
      c.format = KeyFormat::kFp8E4M3;
      c.keys = absl::MakeConstSpan(key_bytes.data() + first * kD, c.num_tokens * kD);
      c.scales = absl::MakeConstSpan(key_scales.data() + first, c.num_tokens);
      const absl::Status st = store->Append(c);
      if (!st.ok()) {
        std::fprintf(stderr, "append: %s\n", st.ToString().c_str());
        std::exit(1);
      }
    }
    return store;
  };
  const absl::Time t_append = absl::Now();
  std::unique_ptr<RequestStore> prefill_store = make_store();
  const double append_s = absl::ToDoubleSeconds(absl::Now() - t_append);
  std::printf("append: %lld tokens in %.3f s (%.2f GB/s of keys)\n",
              static_cast<long long>(max_len), append_s,
              max_len * token_bytes / append_s / 1e9);
  std::vector<std::unique_ptr<RequestStore>> decode_stores;
  for (int r = 0; r < kDecodeRequests; ++r) decode_stores.push_back(make_store());

  const QueryPool prefill_q = MakeQueries(rng, 4096, 0.95, enc);
  const QueryPool independent_q = MakeQueries(rng, 1024, 0.0, enc);
  const QueryPool decode_q = MakeQueries(rng, kDecodeRequests, 0.0, enc);

  auto report = [&](const char* shape, int64_t L, const char* mode,
                    int64_t rows, const Measure& m, double flops, double bytes,
                    const std::string& extra) {
    const double tflops = flops / (m.median_ms * 1e-3) / 1e12;
    const double gbps = bytes / (m.median_ms * 1e-3) / 1e9;
    std::printf("%-18s L=%-7lld %-5s rows=%-6lld %10.4f ms (min %.4f, "
                "cold %.4f, queued %.4f) %7.1f TFLOP/s %7.0f GB/s  blocks %.3f ms "
                "tokens %.3f ms %s\n",
                shape, static_cast<long long>(L), mode,
                static_cast<long long>(rows), m.median_ms, m.min_ms,
                m.cold_ms, m.queued_ms, tflops, gbps, m.stage_ms[0], m.stage_ms[2],
                extra.c_str());
    out.Line(absl::StrCat(
        "{\"kind\":\"ours\",\"shape\":\"", shape, "\",\"L\":", L,
        ",\"mode\":\"", mode, "\",\"rows\":", rows, ",\"ms\":", m.median_ms,
        ",\"min_ms\":", m.min_ms, ",\"cold_ms\":", m.cold_ms,
        ",\"queued_ms\":", m.queued_ms,
        ",\"flops\":", flops, ",\"bytes\":", bytes,
        ",\"stages_ms\":[", m.stage_ms[0], ",", m.stage_ms[2],
        "],\"plan_s\":", m.plan_s,
        ",\"device_bytes\":", m.device_bytes, extra.empty() ? "" : ",",
        extra, "}"));
  };

  // bf16 hi (+ lo: PlanOptions::block_means_lo) means read per block.
  const double summary_bytes_per_block =
      kD * (backend.plan_options().block_means_lo ? 4.0 : 2.0);
  for (int64_t L : args.lengths) {
    // Prefill shape: 1024 rows at the end of the prefix.
    if (args.Runs("prefill1024")) {
      const int64_t rows_n = std::min<int64_t>(1024, L);
      std::vector<QueryRow> dense, hisa_rows;
      std::vector<const RequestStore*> stores(rows_n, prefill_store.get());
      for (int64_t i = 0; i < rows_n; ++i) {
        const int64_t t = L - rows_n + i;
        dense.push_back(RowFrom(prefill_q, i, t, SelectMode::kDense));
        hisa_rows.push_back(RowFrom(prefill_q, i, t, SelectMode::kHisa));
      }
      const Measure md = TimeBatch(backend, dense, stores, config, args.reps, true);
      std::vector<uint64_t> trace;
      const Measure mh = TimeBatch(backend, hisa_rows, stores, config, args.reps,
                                   true, nullptr, args.trace ? &trace : nullptr);
      if (args.trace) {
        PrintTrace(absl::StrCat("prefill1024 HISA L=", L).c_str(), trace);
      }
      const double recall = Recall(mh.positions, md.positions, rows_n);
      const double key_bytes_read = L * static_cast<double>(token_bytes);
      report("prefill1024", L, "DENSE", rows_n, md, DenseFlops(dense),
             key_bytes_read, "");
      report("prefill1024", L, "HISA", rows_n, mh, HisaFlops(hisa_rows),
             key_bytes_read + (L / kB) * summary_bytes_per_block,
             absl::StrCat("\"recall_vs_dense\":", recall));
      if (L == 65536) {
        // The same batches on the mma.sync token kernel (A/B of the scorer).
        auto mma_sync = [](cuda::PlanOptions& o) { o.use_wgmma = false; };
        const Measure sd = TimeBatch(backend, dense, stores, config, args.reps,
                                     false, mma_sync);
        const Measure sh = TimeBatch(backend, hisa_rows, stores, config,
                                     args.reps, false, mma_sync);
        report("prefill1024_mmasync", L, "DENSE", rows_n, sd, DenseFlops(dense),
               key_bytes_read, "");
        report("prefill1024_mmasync", L, "HISA", rows_n, sh,
               HisaFlops(hisa_rows),
               key_bytes_read + (L / kB) * summary_bytes_per_block, "");
        // HISA rows paired (each pair scores the union of its blocks).
        const Measure sp = TimeBatch(
            backend, hisa_rows, stores, config, args.reps, false,
            [](cuda::PlanOptions& o) { o.pair_hisa_rows = true; });
        report("prefill1024_paired", L, "HISA", rows_n, sp, HisaFlops(hisa_rows),
               key_bytes_read + (L / kB) * summary_bytes_per_block, "");
        const Measure dc = TimeBatch(backend, dense, stores, config,
                                     args.reps, false, NoTma);
        report("prefill1024_cpasync", L, "DENSE", rows_n, dc, DenseFlops(dense),
               key_bytes_read, "");
        const Measure sc = TimeBatch(backend, hisa_rows, stores, config,
                                     args.reps, false, NoTma);
        report("prefill1024_cpasync", L, "HISA", rows_n, sc,
               HisaFlops(hisa_rows),
               key_bytes_read + (L / kB) * summary_bytes_per_block, "");
        const Measure sm = TimeBatch(backend, hisa_rows, stores, config,
                                     args.reps, false, PooledScores);
        report("prefill1024_pooled_scores", L, "HISA", rows_n, sm,
               HisaFlops(hisa_rows),
               key_bytes_read + (L / kB) * summary_bytes_per_block, "");
        // A running top-k per work item instead of slot scores.
        const Measure ss = TimeBatch(backend, hisa_rows, stores, config,
                                     args.reps, false, RunningTopK);
        report("prefill1024_running_topk", L, "HISA", rows_n, ss,
               HisaFlops(hisa_rows),
               key_bytes_read + (L / kB) * summary_bytes_per_block, "");
        // Block scoring per row instead of per pair of rows.
        const Measure sb = TimeBatch(
            backend, hisa_rows, stores, config, args.reps, false,
            [](cuda::PlanOptions& o) { o.pair_hisa_blocks = false; });
        report("prefill1024_blocks_per_row", L, "HISA", rows_n, sb,
               HisaFlops(hisa_rows),
               key_bytes_read + (L / kB) * summary_bytes_per_block, "");
        std::vector<QueryRow> ind;
        for (int64_t i = 0; i < rows_n; ++i) {
          ind.push_back(RowFrom(independent_q, i, L - rows_n + i, SelectMode::kHisa));
        }
        const Measure mi = TimeBatch(backend, ind, stores, config, args.reps, false);
        report("prefill1024_indep", L, "HISA", rows_n, mi, HisaFlops(ind),
               key_bytes_read + (L / kB) * summary_bytes_per_block, "");
      }
    }
    // Full causal prefill: every row 0..L-1.
    if (args.causal && args.Runs("causal")) {
      std::vector<QueryRow> dense, hisa_rows;
      std::vector<const RequestStore*> stores(L, prefill_store.get());
      for (int64_t t = 0; t < L; ++t) {
        dense.push_back(RowFrom(prefill_q, t, t, SelectMode::kDense));
        hisa_rows.push_back(RowFrom(prefill_q, t, t, SelectMode::kHisa));
      }
      const int reps = L >= 65536 ? 3 : args.reps;
      const Measure md = TimeBatch(backend, dense, stores, config, reps, false);
      std::vector<uint64_t> trace;
      const Measure mh = TimeBatch(backend, hisa_rows, stores, config, reps,
                                   false, nullptr,
                                   args.trace ? &trace : nullptr);
      if (args.trace) {
        PrintTrace(absl::StrCat("causal HISA L=", L).c_str(), trace);
      }
      const double key_bytes_read = L * static_cast<double>(token_bytes);
      report("causal", L, "DENSE", L, md, DenseFlops(dense), key_bytes_read, "");
      report("causal", L, "HISA", L, mh, HisaFlops(hisa_rows),
             key_bytes_read + (L / kB) * summary_bytes_per_block, "");
      // The token stage streams every row's candidate keys and scales (from
      // L2, mostly): its rate against hisa_l2_bench's bulk-read ceiling.
      double slots = 0;  // candidate tokens, summed over the rows
      for (int64_t t = 0; t < L; ++t) {
        slots += static_cast<double>(std::min<int64_t>(int64_t{kM} * kB, t + 1));
      }
      std::printf("causal L=%lld HISA token stage streams %.1f GB of keys: "
                  "%.0f GB/s\n",
                  static_cast<long long>(L), slots * token_bytes / 1e9,
                  slots * token_bytes / (mh.stage_ms[2] * 1e-3) / 1e9);
    }
    // Decode: one row (t = L - 1) for each of 64 / 256 requests. Tens of
    // microseconds a run: more runs for a steady median.
    const int decode_reps = std::max(args.reps, 25);
    for (int requests : {8, 64, 256}) {
      if (!args.Runs(absl::StrCat("decode", requests))) continue;
      std::vector<QueryRow> dense, hisa_rows;
      std::vector<const RequestStore*> stores;
      for (int r = 0; r < requests; ++r) {
        dense.push_back(RowFrom(decode_q, r, L - 1, SelectMode::kDense));
        hisa_rows.push_back(RowFrom(decode_q, r, L - 1, SelectMode::kHisa));
        stores.push_back(decode_stores[r].get());
      }
      const Measure md = TimeBatch(backend, dense, stores, config, decode_reps, true);
      std::vector<uint64_t> trace;
      const Measure mh = TimeBatch(backend, hisa_rows, stores, config, decode_reps,
                                   true, nullptr, args.trace ? &trace : nullptr);
      if (args.trace) {
        PrintTrace(absl::StrCat("decode", requests, " HISA L=", L).c_str(),
                   trace);
      }
      const double recall = Recall(mh.positions, md.positions, requests);
      const double dense_bytes = requests * L * static_cast<double>(token_bytes);
      const double hisa_bytes =
          requests * ((L / kB) * summary_bytes_per_block +
                      std::min<int64_t>(L, int64_t{kM} * kB) * token_bytes);
      const std::string shape = absl::StrCat("decode", requests);
      report(shape.c_str(), L, "DENSE", requests, md, DenseFlops(dense),
             dense_bytes, "");
      report(shape.c_str(), L, "HISA", requests, mh, HisaFlops(hisa_rows),
             hisa_bytes, absl::StrCat("\"recall_vs_dense\":", recall));
      if (requests == 64 && L == 65536) {
        const Measure ss = TimeBatch(backend, hisa_rows, stores, config,
                                     decode_reps, false, RunningTopK);
        report("decode64_running_topk", L, "HISA", requests, ss,
               HisaFlops(hisa_rows), hisa_bytes, "");
        const Measure sc = TimeBatch(backend, hisa_rows, stores, config,
                                     decode_reps, false, NoTma);
        report("decode64_cpasync", L, "HISA", requests, sc,
               HisaFlops(hisa_rows), hisa_bytes, "");
        // End to end through Backend::Select: planning, upload, kernels,
        // download (what a server pays per decode batch).
        std::vector<RowResult> results(requests);
        std::vector<SelectTask> tasks;
        for (int r = 0; r < requests; ++r) {
          tasks.push_back(SelectTask{stores[r], &config, &hisa_rows[r],
                                     SelectMode::kHisa, &results[r]});
        }
        std::vector<double> t;
        for (int rep = 0; rep < 2 + decode_reps; ++rep) {
          const absl::Time s = absl::Now();
          backend.Select(tasks, nullptr, nullptr);
          if (rep >= 2) t.push_back(absl::ToDoubleMilliseconds(absl::Now() - s));
        }
        std::printf("decode64 L=65536 HISA end-to-end Backend::Select %.4f ms\n",
                    Median(t));
        out.Line(absl::StrCat("{\"kind\":\"end_to_end\",\"shape\":\"decode64\","
                              "\"L\":65536,\"mode\":\"HISA\",\"ms\":", Median(t), "}"));
      }
    }
  }
  std::fprintf(f, "\n]\n");
  std::fclose(f);
  return 0;
}
