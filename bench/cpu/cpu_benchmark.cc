// hisa_cpu_benchmark: DENSE vs HISA selection and append throughput of the
// CPU backend, measured through hisa::Engine, against this machine's FP32
// FMA peak measured in the same run.
//
//   hisa_cpu_benchmark                       # full table, L = 8K..128K
//   hisa_cpu_benchmark --quick               # L = 8K, 16K; fewer repeats
//   hisa_cpu_benchmark --lengths=65536 --shapes=decode --repeats=9
//
// Workload (SPEC 8 anchors): fp8 e4m3 keys with per-token scales (132 B per
// token at D = 128), fp8 queries with per-head scales, H = 64, D = 128,
// B = 128, m = 64, k = 2048, one layer per request. Keys are i.i.d. normal
// values quantized to fp8 (timing does not depend on their structure: the
// same number of blocks and tokens is scored whatever the data).
//   decode:  one query row at t = L - 1.
//   prefill: --prefill_rows rows at the end of the prefix (t = L - rows ..
//            L - 1), one Select call.
// Each cell is the median of --repeats timed runs after --warmup runs.
// Columns:
//   dense_ms / hisa_ms  wall time of Engine::Select for the whole batch;
//   speedup             dense_ms / hisa_ms;
//   dense_GF/s          2 * H * D * (scored tokens) / dense_ms, end to end
//                       (includes top-k and all overheads);
//   %peak               dense_GF/s over the measured FMA peak;
//   cpuGF/s, %/core     the same FLOPs per CPU-second of this process,
//                       aggregated over DENSE runs totalling >= 0.5 s (the
//                       timed runs plus extra ones when those are shorter:
//                       Linux refreshes another running thread's CPU time
//                       only at ticks, so short runs undercount it), and its
//                       share of peak / threads. Unlike wall time it is not
//                       inflated when other processes share the cores, so it
//                       shows the kernels' efficiency on a busy machine; the
//                       load average is printed at the start and the end.
//   hisa stages         HISA's SelectStageTimes (median run): block scoring,
//                       block choice, token scoring, top-k, in ms.
// Append: GB/s of fp8 keys + scales (132 B/token) appended in chunks of
// --append_chunk tokens, summaries included, through the engine (validation
// included) and straight into the backend's store.
// Peak: a register-only FMA loop on all threads (AVX2 and, if the CPU has
// it, AVX-512; the larger is the peak), best of a few trials.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/engine.h"
#include "kernels/formats.h"
#include "kernels/types.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

ABSL_FLAG(std::string, lengths, "8192,16384,32768,65536,131072",
          "comma-separated cache lengths L");
ABSL_FLAG(std::string, shapes, "decode,prefill", "decode and/or prefill");
ABSL_FLAG(int, prefill_rows, 256, "query rows of the prefill shape");
ABSL_FLAG(int, repeats, 7, "timed runs per decode cell (median reported)");
ABSL_FLAG(int, prefill_repeats, 3, "timed runs per prefill cell");
ABSL_FLAG(int, warmup, 1, "untimed runs before each cell");
ABSL_FLAG(int, threads, 0, "backend threads (0 = hardware concurrency)");
ABSL_FLAG(std::string, isa, "auto", "kernels: auto, avx512, avx2 or scalar");
ABSL_FLAG(int, heads, 64, "query heads H");
ABSL_FLAG(int, head_dim, 128, "head dim D");
ABSL_FLAG(int, block_size, 128, "block size B");
ABSL_FLAG(int, m, 64, "HISA blocks m");
ABSL_FLAG(int, k, 2048, "top-k");
ABSL_FLAG(int, append_chunk, 4096, "tokens per Append chunk");
ABSL_FLAG(bool, quick, false,
          "quick run: L = 8K,16K, 3 repeats, 32 prefill rows");
ABSL_FLAG(uint64_t, seed, 0, "random seed (0 = from the clock)");
ABSL_FLAG(int, peak_trials, 5,
          "trials of the FMA peak loop (best kept); 0 skips it (%peak n/a)");

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// CPU seconds used by this process (all threads) so far.
double ProcessCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

std::string LoadAverage() {
  FILE* f = std::fopen("/proc/loadavg", "r");
  if (f == nullptr) return "n/a";
  char buf[128] = {};
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  std::string s(buf, n);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// ---- FMA peak --------------------------------------------------------------

#if defined(__x86_64__)
// 12 independent chains of 8-wide FMAs: covers 4-cycle latency x 2 ports
// with room to spare. Values stay bounded (x * 0.99999 + 1e-6).
__attribute__((target("avx2,fma"), noinline)) float FmaLoopAvx2(int64_t iters) {
  __m256 a0 = _mm256_set1_ps(0.1f), a1 = _mm256_set1_ps(0.2f),
         a2 = _mm256_set1_ps(0.3f), a3 = _mm256_set1_ps(0.4f),
         a4 = _mm256_set1_ps(0.5f), a5 = _mm256_set1_ps(0.6f),
         a6 = _mm256_set1_ps(0.7f), a7 = _mm256_set1_ps(0.8f),
         a8 = _mm256_set1_ps(0.9f), a9 = _mm256_set1_ps(1.0f),
         a10 = _mm256_set1_ps(1.1f), a11 = _mm256_set1_ps(1.2f);
  const __m256 b = _mm256_set1_ps(0.99999f), c = _mm256_set1_ps(1e-6f);
  for (int64_t i = 0; i < iters; ++i) {
    a0 = _mm256_fmadd_ps(a0, b, c);
    a1 = _mm256_fmadd_ps(a1, b, c);
    a2 = _mm256_fmadd_ps(a2, b, c);
    a3 = _mm256_fmadd_ps(a3, b, c);
    a4 = _mm256_fmadd_ps(a4, b, c);
    a5 = _mm256_fmadd_ps(a5, b, c);
    a6 = _mm256_fmadd_ps(a6, b, c);
    a7 = _mm256_fmadd_ps(a7, b, c);
    a8 = _mm256_fmadd_ps(a8, b, c);
    a9 = _mm256_fmadd_ps(a9, b, c);
    a10 = _mm256_fmadd_ps(a10, b, c);
    a11 = _mm256_fmadd_ps(a11, b, c);
  }
  __m256 s = _mm256_add_ps(
      _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
      _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
  s = _mm256_add_ps(
      s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0];
}
constexpr double kFlopsPerIterAvx2 = 12 * 8 * 2;

__attribute__((target("avx512f"), noinline)) float FmaLoopAvx512(
    int64_t iters) {
  __m512 a[16];
  for (int j = 0; j < 16; ++j) a[j] = _mm512_set1_ps(0.1f * (j + 1));
  const __m512 b = _mm512_set1_ps(0.99999f), c = _mm512_set1_ps(1e-6f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) a[j] = _mm512_fmadd_ps(a[j], b, c);
  }
  __m512 s = a[0];
  for (int j = 1; j < 16; ++j) s = _mm512_add_ps(s, a[j]);
  float out[16];
  _mm512_storeu_ps(out, s);
  return out[0];
}
constexpr double kFlopsPerIterAvx512 = 16 * 16 * 2;
#endif

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct Peak {
  double wall_gflops = 0;      // all threads, by wall time
  double per_core_gflops = 0;  // per thread, by that thread's CPU time
};

// `loop` on `threads` threads, best of `trials`. The per-core figure divides
// each thread's FLOPs by its own CPU time, so time slices lost to other
// processes do not lower it.
template <typename Loop>
Peak MeasurePeak(Loop loop, double flops_per_iter, int threads, int trials) {
  const int64_t iters = 40'000'000;  // ~0.1-0.2 s per thread
  Peak best;
  for (int trial = 0; trial < trials; ++trial) {
    std::vector<std::thread> pool;
    std::vector<float> sink(threads);
    std::vector<double> cpu(threads);
    const Clock::time_point start = Clock::now();
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        const double c0 = ThreadCpuSeconds();
        sink[t] = loop(iters);
        cpu[t] = ThreadCpuSeconds() - c0;
      });
    }
    for (std::thread& th : pool) th.join();
    const double secs = Seconds(start, Clock::now());
    best.wall_gflops = std::max(best.wall_gflops,
                                flops_per_iter * iters * threads / secs * 1e-9);
    double per_core = 0;
    for (int t = 0; t < threads; ++t) {
      per_core += flops_per_iter * iters / cpu[t] * 1e-9 / threads;
    }
    best.per_core_gflops = std::max(best.per_core_gflops, per_core);
    if (sink[0] == 12345.0f) std::printf(" ");  // keep the result live
  }
  return best;
}

// ---- Workload --------------------------------------------------------------

struct Workload {
  int heads, head_dim, block_size, m, k;
};

// fp8 codes of N(0, 1) samples, drawn from a pre-quantized table (fast).
class Fp8Source {
 public:
  explicit Fp8Source(uint64_t seed) : rng_(seed) {
    std::normal_distribution<float> normal;
    for (uint8_t& code : table_) code = hisa::FloatToFp8E4M3(normal(rng_));
  }
  void Fill(uint8_t* out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = table_[rng_() & 4095];
  }
  float Uniform(float lo, float hi) {
    return std::uniform_real_distribution<float>(lo, hi)(rng_);
  }

 private:
  std::mt19937_64 rng_;
  uint8_t table_[4096];
};

struct Query {
  std::vector<uint8_t> q;
  std::vector<float> q_scales;
  std::vector<float> weights;
};

Query MakeQuery(const Workload& w, Fp8Source& src) {
  Query query;
  query.q.resize(int64_t{w.heads} * w.head_dim);
  src.Fill(query.q.data(), query.q.size());
  query.q_scales.resize(w.heads);
  query.weights.resize(w.heads);
  for (int h = 0; h < w.heads; ++h) {
    query.q_scales[h] = src.Uniform(0.5f, 2.0f);
    query.weights[h] = src.Uniform(-0.5f, 1.0f);  // some heads negative
  }
  return query;
}

hisa::RequestConfig ConfigFor(const Workload& w) {
  hisa::RequestConfig config;
  config.num_layers = 1;
  config.head_dim = w.head_dim;
  config.block_size = w.block_size;
  config.key_format = hisa::KeyFormat::kFp8E4M3;
  config.pooling = hisa::BlockPooling::kMean;
  return config;
}

hisa::CpuBackendOptions BackendOptions() {
  hisa::CpuBackendOptions options;
  options.num_threads = absl::GetFlag(FLAGS_threads);
  const std::string isa = absl::GetFlag(FLAGS_isa);
  options.isa = isa == "scalar"   ? hisa::cpu::CpuIsa::kScalar
                : isa == "avx2"   ? hisa::cpu::CpuIsa::kAvx2
                : isa == "avx512" ? hisa::cpu::CpuIsa::kAvx512
                                  : hisa::cpu::CpuIsa::kAuto;
  return options;
}

struct AppendResult {
  double engine_gbps = 0;
  double store_gbps = 0;
};

// Keys of L tokens: fp8 codes and per-token scales.
struct Keys {
  std::vector<uint8_t> bytes;
  std::vector<float> scales;
};

Keys MakeKeys(const Workload& w, int64_t length, Fp8Source& src) {
  Keys keys;
  keys.bytes.resize(length * w.head_dim);
  src.Fill(keys.bytes.data(), keys.bytes.size());
  keys.scales.resize(length);
  for (float& s : keys.scales) s = src.Uniform(0.01f, 0.02f);
  return keys;
}

hisa::KeyChunk Chunk(const Workload& w, const Keys& keys, const char* id,
                     int64_t first, int64_t n) {
  hisa::KeyChunk chunk;
  chunk.request_id = id;
  chunk.layer = 0;
  chunk.first_position = first;
  chunk.num_tokens = n;
  chunk.format = hisa::KeyFormat::kFp8E4M3;
  chunk.keys = absl::MakeConstSpan(keys.bytes.data() + first * w.head_dim,
                                   n * w.head_dim);
  chunk.scales = absl::MakeConstSpan(keys.scales.data() + first, n);
  return chunk;
}

// Appends `keys` to request `id` in chunks; returns GB/s (keys + scales).
double AppendAll(hisa::Engine& engine, const Workload& w, const Keys& keys,
                 const char* id) {
  const int64_t length = static_cast<int64_t>(keys.scales.size());
  const int64_t chunk = absl::GetFlag(FLAGS_append_chunk);
  const Clock::time_point start = Clock::now();
  for (int64_t first = 0; first < length; first += chunk) {
    const int64_t n = std::min(chunk, length - first);
    absl::StatusOr<int64_t> len = engine.Append(Chunk(w, keys, id, first, n));
    if (!len.ok()) {
      std::fprintf(stderr, "append failed: %s\n",
                   len.status().ToString().c_str());
      std::exit(1);
    }
  }
  const double secs = Seconds(start, Clock::now());
  return length * (w.head_dim + 4.0) / secs * 1e-9;
}

// Appends straight into a backend store (no engine validation).
double AppendStore(const Workload& w, const Keys& keys) {
  std::unique_ptr<hisa::Backend> backend =
      hisa::MakeCpuBackend(BackendOptions());
  absl::StatusOr<std::unique_ptr<hisa::RequestStore>> store =
      backend->CreateStore(ConfigFor(w));
  const int64_t length = static_cast<int64_t>(keys.scales.size());
  const int64_t chunk = absl::GetFlag(FLAGS_append_chunk);
  const Clock::time_point start = Clock::now();
  for (int64_t first = 0; first < length; first += chunk) {
    const int64_t n = std::min(chunk, length - first);
    absl::Status status = (*store)->Append(Chunk(w, keys, "store", first, n));
    if (!status.ok()) {
      std::fprintf(stderr, "store append failed: %s\n",
                   status.ToString().c_str());
      std::exit(1);
    }
  }
  const double secs = Seconds(start, Clock::now());
  return length * (w.head_dim + 4.0) / secs * 1e-9;
}

struct Cell {
  double dense_ms = 0;
  double dense_cpu_s = 0;  // process CPU seconds per DENSE run (aggregate)
  double hisa_ms = 0;
  double scored_tokens = 0;  // DENSE tokens per batch
  hisa::SelectStageTimes hisa_stages;
};

struct Run {
  double wall_s;
  hisa::SelectStageTimes stages;
};

struct Timing {
  Run median;                // by wall time, over the timed runs
  double cpu_s_per_run = 0;  // process CPU seconds per run, aggregated
};

// Minimum total wall time over which CPU time is aggregated.
constexpr double kMinCpuWindow = 0.5;

// `repeats` timed Selects over `rows` in `mode` after `warmup` untimed ones;
// more runs follow (for the CPU aggregate only) until the runs since the
// warm-up total kMinCpuWindow seconds.
Timing TimeSelect(hisa::Engine& engine, std::vector<hisa::QueryRow> rows,
                  hisa::SelectMode mode, int warmup, int repeats) {
  for (hisa::QueryRow& row : rows) row.mode = mode;
  std::vector<hisa::RowResult> results(rows.size());
  std::vector<Run> runs;
  double cpu_start = 0, window = 0;
  int counted = 0;
  for (int i = 0; i < warmup + repeats || window < kMinCpuWindow; ++i) {
    if (i == warmup) cpu_start = ProcessCpuSeconds();
    hisa::SelectStageTimes times;
    const Clock::time_point start = Clock::now();
    engine.Select(rows, absl::MakeSpan(results), &times);
    const double secs = Seconds(start, Clock::now());
    for (const hisa::RowResult& r : results) {
      if (!r.status.ok()) {
        std::fprintf(stderr, "select failed: %s\n",
                     r.status.ToString().c_str());
        std::exit(1);
      }
    }
    if (i >= warmup) {
      if (i < warmup + repeats) runs.push_back({secs, times});
      window += secs;
      ++counted;
    }
  }
  Timing timing;
  timing.cpu_s_per_run = (ProcessCpuSeconds() - cpu_start) / counted;
  std::sort(runs.begin(), runs.end(),
            [](const Run& a, const Run& b) { return a.wall_s < b.wall_s; });
  timing.median = runs[runs.size() / 2];
  return timing;
}

void PrintRow(const char* shape, int64_t length, int rows, const Cell& cell,
              double peak, int threads, const AppendResult* append) {
  const double flops = 2.0 * absl::GetFlag(FLAGS_heads) *
                       absl::GetFlag(FLAGS_head_dim) * cell.scored_tokens;
  const double gflops = flops / (cell.dense_ms * 1e-3) * 1e-9;
  const double cpu_gflops = flops / cell.dense_cpu_s * 1e-9;
  const hisa::SelectStageTimes& st = cell.hisa_stages;
  std::printf(
      "%-7s %4lldK %5d %10.3f %9.3f %7.2fx %9.1f %6.1f%% %8.1f %6.1f%%   "
      "%6.3f %6.3f %7.3f %6.3f",
      shape, static_cast<long long>(length / 1024), rows, cell.dense_ms,
      cell.hisa_ms, cell.dense_ms / cell.hisa_ms, gflops,
      peak > 0 ? 100 * gflops / peak : std::nan(""), cpu_gflops,
      peak > 0 ? 100 * cpu_gflops / (peak / threads) : std::nan(""),
      st.block_scoring * 1e3, st.block_choice * 1e3, st.token_scoring * 1e3,
      st.topk * 1e3);
  if (append != nullptr) {
    std::printf("   %5.2f / %5.2f", append->engine_gbps, append->store_gbps);
  }
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const bool quick = absl::GetFlag(FLAGS_quick);
  std::vector<int64_t> lengths;
  for (absl::string_view s : absl::StrSplit(
           quick ? std::string("8192,16384") : absl::GetFlag(FLAGS_lengths),
           ',', absl::SkipEmpty())) {
    int64_t v;
    if (!absl::SimpleAtoi(s, &v) || v < 1) {
      std::fprintf(stderr, "bad --lengths entry '%s'\n",
                   std::string(s).c_str());
      return 2;
    }
    lengths.push_back(v);
  }
  const std::string shapes = absl::GetFlag(FLAGS_shapes);
  const bool do_decode = shapes.find("decode") != std::string::npos;
  const bool do_prefill = shapes.find("prefill") != std::string::npos;
  const int repeats = quick ? 3 : std::max(1, absl::GetFlag(FLAGS_repeats));
  const int prefill_repeats =
      quick ? 1 : std::max(1, absl::GetFlag(FLAGS_prefill_repeats));
  const int warmup = std::max(0, absl::GetFlag(FLAGS_warmup));
  const int prefill_rows =
      quick ? 32 : std::max(1, absl::GetFlag(FLAGS_prefill_rows));
  uint64_t seed = absl::GetFlag(FLAGS_seed);
  if (seed == 0) seed = Clock::now().time_since_epoch().count();
  const Workload w{absl::GetFlag(FLAGS_heads), absl::GetFlag(FLAGS_head_dim),
                   absl::GetFlag(FLAGS_block_size), absl::GetFlag(FLAGS_m),
                   absl::GetFlag(FLAGS_k)};

  int threads = absl::GetFlag(FLAGS_threads);
  if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());
  const hisa::cpu::CpuIsa isa = hisa::cpu::ResolveCpuIsa(BackendOptions().isa);

  // Machine ceiling, measured now.
  Peak peak_avx2, peak_avx512;
  const int peak_trials = absl::GetFlag(FLAGS_peak_trials);
#if defined(__x86_64__)
  if (peak_trials > 0 && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma")) {
    peak_avx2 =
        MeasurePeak(FmaLoopAvx2, kFlopsPerIterAvx2, threads, peak_trials);
  }
  if (peak_trials > 0 && __builtin_cpu_supports("avx512f")) {
    peak_avx512 =
        MeasurePeak(FmaLoopAvx512, kFlopsPerIterAvx512, threads, peak_trials);
  }
#endif
  // The machine's ceiling: the best per-core rate (by CPU time) times the
  // threads, which a quiet machine reaches in wall time too. 0: not measured.
  const double per_core_peak =
      std::max(peak_avx2.per_core_gflops, peak_avx512.per_core_gflops);
  const double peak = per_core_peak * threads;

  std::printf(
      "hisa_cpu_benchmark: fp8 keys, H=%d D=%d B=%d m=%d k=%d, threads=%d, "
      "kernels=%s, seed=%llu\n",
      w.heads, w.head_dim, w.block_size, w.m, w.k, threads,
      hisa::cpu::CpuIsaName(isa), static_cast<unsigned long long>(seed));
  std::printf(
      "FP32 FMA peak, register-only loop on %d threads: per core (CPU time) "
      "AVX2 %.1f, AVX-512 %.1f GFLOP/s; all threads (wall) AVX2 %.1f, "
      "AVX-512 %.1f GFLOP/s -> peak = %d x %.1f = %.1f GFLOP/s\n",
      threads, peak_avx2.per_core_gflops, peak_avx512.per_core_gflops,
      peak_avx2.wall_gflops, peak_avx512.wall_gflops, threads, per_core_peak,
      peak);
  std::printf(
      "decode: %d timed runs (median) after %d warm-up; prefill: %d rows, %d "
      "timed runs; load average at start: %s\n\n",
      repeats, warmup, prefill_rows, prefill_repeats, LoadAverage().c_str());
  std::printf("%-7s %5s %5s %10s %9s %8s %9s %7s %8s %7s   %-29s   %s\n",
              "shape", "L", "rows", "dense_ms", "hisa_ms", "speedup",
              "dense_GF/s", "%peak", "cpuGF/s", "%/core",
              "hisa stages ms: blk  choice  tok  topk",
              "append GB/s engine / store");

  Fp8Source src(seed);
  for (int64_t length : lengths) {
    const Keys keys = MakeKeys(w, length, src);
    hisa::EngineOptions options;
    options.backend = "cpu";
    options.memory_budget_bytes = int64_t{64} << 30;
    options.num_threads = threads;
    hisa::Engine engine(options, hisa::MakeCpuBackend(BackendOptions()));
    const std::string id = absl::StrCat("bench-", length);
    absl::Status created = engine.CreateRequest(id, ConfigFor(w));
    if (!created.ok()) {
      std::fprintf(stderr, "create failed: %s\n", created.ToString().c_str());
      return 1;
    }
    AppendResult append;
    append.engine_gbps = AppendAll(engine, w, keys, id.c_str());
    append.store_gbps = AppendStore(w, keys);

    std::vector<Query> queries;
    auto rows_at_end = [&](int count) {
      count = static_cast<int>(std::min<int64_t>(count, length));
      while (static_cast<int>(queries.size()) < count) {
        queries.push_back(MakeQuery(w, src));
      }
      std::vector<hisa::QueryRow> rows(count);
      for (int i = 0; i < count; ++i) {
        hisa::QueryRow& row = rows[i];
        row.request_id = id;
        row.layer = 0;
        row.position = length - count + i;
        row.num_heads = w.heads;
        row.q_format = hisa::KeyFormat::kFp8E4M3;
        row.q = queries[i].q;
        row.q_scales = queries[i].q_scales;
        row.weights = queries[i].weights;
        row.k = w.k;
        row.m = w.m;
      }
      return rows;
    };
    auto run_shape = [&](const char* shape, int count, int reps,
                         const AppendResult* app) {
      const std::vector<hisa::QueryRow> rows = rows_at_end(count);
      Cell cell;
      for (const hisa::QueryRow& row : rows)
        cell.scored_tokens += row.position + 1;
      const Timing dense =
          TimeSelect(engine, rows, hisa::SelectMode::kDense, warmup, reps);
      const Timing hisa =
          TimeSelect(engine, rows, hisa::SelectMode::kHisa, warmup, reps);
      cell.dense_ms = 1e3 * dense.median.wall_s;
      cell.dense_cpu_s = dense.cpu_s_per_run;
      cell.hisa_ms = 1e3 * hisa.median.wall_s;
      cell.hisa_stages = hisa.median.stages;
      PrintRow(shape, length, static_cast<int>(rows.size()), cell, peak,
               threads, app);
    };
    if (do_decode) run_shape("decode", 1, repeats, &append);
    if (do_prefill) {
      run_shape("prefill", prefill_rows, prefill_repeats,
                do_decode ? nullptr : &append);
    }
    engine.Release(id);
  }
  std::printf("\nload average at end: %s\n", LoadAverage().c_str());
  return 0;
}
