#include "kernels/engine.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <shared_mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/formats.h"
#include "kernels/status_macros.h"
#ifdef HISA_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace hisa {

struct Engine::Request {
  Request(std::string id_in, const RequestConfig& config_in,
          std::unique_ptr<RequestStore> store_in)
      : id(std::move(id_in)), config(config_in), store(std::move(store_in)) {}

  const std::string id;
  const RequestConfig config;
  // Writer: Append. Readers: Select, Matches, GetRequestInfo.
  mutable std::shared_mutex mu;
  const std::unique_ptr<RequestStore> store;
  // Lease: clock() of the last Append/Select, in Unix nanoseconds.
  std::atomic<int64_t> last_used_ns{0};
  // Set once under Engine::mu_ when released or expired; a call that found
  // the request before that sees it under `mu` and answers NOT_FOUND.
  std::atomic<bool> removed{false};
  // Bytes charged to the budget for this request (Engine::mu_).
  int64_t accounted_bytes = 0;
};

namespace {

// Rows per chunk of Select's checks (64 x 8 KB of fp8 queries at 64 heads,
// ~100 us on an H200 host): a batch of up to 64 rows stays on its thread.
// The checks are a batch's first parallel loop, when the executor's
// helpers may still sleep: with 32 rows per chunk a 64-row decode batch
// waited for a helper's wake-up (validate 98-112 -> 119-125 us, H200 host),
// while 1024-row prefill batches gain either way (1.06-1.19 ms -> 0.46).
constexpr int64_t kRowsPerValidateChunk = 64;

bool IsPowerOfTwo(int v) { return v > 0 && (v & (v - 1)) == 0; }

absl::Status NotFound(absl::string_view id) {
  return absl::NotFoundError(absl::StrCat(
      "request '", id, "' does not exist (never created, released, or expired)"));
}

// The part of `chunk` covering [first, first + n) of its positions.
KeyChunk SubChunk(const KeyChunk& chunk, int64_t first, int64_t n,
                  int head_dim) {
  const int64_t offset = first - chunk.first_position;
  const int64_t row_bytes = int64_t{head_dim} * BytesPerValue(chunk.format);
  KeyChunk sub = chunk;
  sub.first_position = first;
  sub.num_tokens = n;
  sub.keys = chunk.keys.subspan(offset * row_bytes, n * row_bytes);
  if (!chunk.scales.empty()) sub.scales = chunk.scales.subspan(offset, n);
  return sub;
}

}  // namespace

absl::Status ValidateRequestConfig(const RequestConfig& config,
                                   int max_layers) {
  if (config.num_layers < 1 || config.num_layers > max_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_layers must be in [1, ", max_layers, "], got ", config.num_layers));
  }
  if (config.head_dim < 16 || config.head_dim > 256 || config.head_dim % 16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "head_dim must be a multiple of 16 in [16, 256], got ", config.head_dim));
  }
  if (!IsPowerOfTwo(config.block_size) || config.block_size < kMinBlockSize ||
      config.block_size > kMaxBlockSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block_size must be a power of two in [", kMinBlockSize, ", ",
        kMaxBlockSize, "], got ", config.block_size));
  }
  if (!IsValidFormat(config.key_format)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown key format ", FormatName(config.key_format)));
  }
  if (config.pooling != BlockPooling::kMean &&
      config.pooling != BlockPooling::kMax) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown block pooling ", static_cast<int>(config.pooling)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(EngineOptions options) {
  std::unique_ptr<Backend> backend;
  const std::string& name = options.backend;
  if (name == "cpu") {
    backend = MakeCpuBackend(options.num_threads);
  } else if (name == "cuda" || name == "auto") {
#ifdef HISA_WITH_CUDA
    if (name == "cuda" || CudaDeviceAvailable()) {
      ASSIGN_OR_RETURN(backend, MakeCudaBackend(options.cuda_device,
                                                options.memory_budget_bytes));
    } else {
      backend = MakeCpuBackend(options.num_threads);
    }
#else
    if (name == "cuda") {
      return absl::FailedPreconditionError(
          "backend 'cuda' requested but this build has no CUDA support "
          "(configure with -DHISA_ENABLE_CUDA=ON)");
    }
    backend = MakeCpuBackend(options.num_threads);
#endif
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown backend '", name, "' (expected cpu, cuda or auto)"));
  }
  if (options.memory_budget_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "memory budget must be positive, got ", options.memory_budget_bytes));
  }
  return std::make_unique<Engine>(std::move(options), std::move(backend));
}

Engine::Engine(EngineOptions options, std::unique_ptr<Backend> backend)
    : options_(std::move(options)), backend_(std::move(backend)) {}

Engine::~Engine() = default;

int64_t Engine::NowNs() const { return absl::ToUnixNanos(options_.clock()); }

absl::StatusOr<std::shared_ptr<Engine::Request>> Engine::Find(
    absl::string_view id, int64_t now_ns) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = requests_.find(id);
  if (it == requests_.end()) return NotFound(id);
  if (IdleLocked(*it->second, now_ns)) {
    RemoveLocked(id);
    ++expired_total_;
    return absl::NotFoundError(absl::StrCat(
        "request '", id, "' expired: idle for longer than the TTL of ",
        absl::FormatDuration(options_.idle_ttl)));
  }
  return it->second;
}

bool Engine::IdleLocked(const Request& request, int64_t now_ns) const {
  if (options_.idle_ttl == absl::InfiniteDuration()) return false;
  return now_ns - request.last_used_ns.load() >
         absl::ToInt64Nanoseconds(options_.idle_ttl);
}

absl::Status Engine::CreateRequest(absl::string_view id,
                                   const RequestConfig& config) {
  if (id.empty() || id.size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request id must be 1..", kMaxRequestIdBytes, " bytes, got ",
        id.size()));
  }
  RETURN_IF_ERROR(ValidateRequestConfig(config, options_.max_layers));
  const int64_t now_ns = NowNs();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = requests_.find(id);
    if (it != requests_.end() && IdleLocked(*it->second, now_ns)) {
      // An expired request is gone even if no sweep has run yet: never
      // revive its old keys.
      RemoveLocked(id);
      ++expired_total_;
      it = requests_.end();
    }
    if (it != requests_.end()) {
      if (it->second->config != config) {
        return absl::AlreadyExistsError(absl::StrCat(
            "request '", id, "' already exists with a different config"));
      }
      it->second->last_used_ns.store(now_ns);
      return absl::OkStatus();
    }
    if (static_cast<int64_t>(requests_.size()) >= options_.max_requests) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "max_requests (", options_.max_requests, ") live requests reached"));
    }
  }
  ASSIGN_OR_RETURN(std::unique_ptr<RequestStore> store,
                   backend_->CreateStore(config));
  auto request =
      std::make_shared<Request>(std::string(id), config, std::move(store));
  request->last_used_ns.store(now_ns);
  const int64_t bytes = request->store->bytes_reserved();

  std::lock_guard<std::mutex> lock(mu_);
  // Another thread may have created the same id meanwhile.
  auto it = requests_.find(id);
  if (it != requests_.end()) {
    return it->second->config == config
               ? absl::OkStatus()
               : absl::AlreadyExistsError(absl::StrCat(
                     "request '", id, "' already exists with a different config"));
  }
  if (bytes_in_use_ + bytes > options_.memory_budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "creating request '", id, "' needs ", bytes, " bytes; ",
        bytes_in_use_, " of ", options_.memory_budget_bytes,
        " budget bytes in use"));
  }
  request->accounted_bytes = bytes;
  bytes_in_use_ += bytes;
  requests_.emplace(std::string(id), std::move(request));
  return absl::OkStatus();
}

absl::Status Engine::ValidateChunk(const Request& request,
                                   const KeyChunk& chunk) const {
  const RequestConfig& config = request.config;
  if (chunk.layer < 0 || chunk.layer >= config.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer ", chunk.layer, " out of range [0, ", config.num_layers, ")"));
  }
  if (!IsValidFormat(chunk.format)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown key format ", FormatName(chunk.format)));
  }
  if (chunk.format != config.key_format) {
    return absl::InvalidArgumentError(absl::StrCat(
        "key format ", FormatName(chunk.format), " differs from request '",
        request.id, "' format ", FormatName(config.key_format)));
  }
  if (chunk.num_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "append needs at least one token, got num_tokens = ", chunk.num_tokens));
  }
  if (chunk.first_position < 0 ||
      chunk.first_position > kMaxLayerLength - chunk.num_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "positions [", chunk.first_position, ", +", chunk.num_tokens,
        ") out of range [0, ", kMaxLayerLength, ")"));
  }
  const int64_t want_bytes =
      chunk.num_tokens * config.head_dim * BytesPerValue(chunk.format);
  if (static_cast<int64_t>(chunk.keys.size()) != want_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "keys: expected ", chunk.num_tokens, " tokens x head_dim ",
        config.head_dim, " x ", BytesPerValue(chunk.format), " B = ",
        want_bytes, " bytes, got ", chunk.keys.size()));
  }
  const int64_t want_scales =
      chunk.format == KeyFormat::kFp8E4M3 ? chunk.num_tokens : 0;
  if (static_cast<int64_t>(chunk.scales.size()) != want_scales) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scales: expected ", want_scales, " per-token scales for ",
        FormatName(chunk.format), ", got ", chunk.scales.size()));
  }
  RETURN_IF_ERROR(CheckFinite(chunk.format, chunk.keys, "keys"));
  RETURN_IF_ERROR(CheckFinite(chunk.scales, "scales"));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Engine::Append(const KeyChunk& chunk) {
  ASSIGN_OR_RETURN(std::shared_ptr<Request> request,
                   Find(chunk.request_id, NowNs()));
  RETURN_IF_ERROR(ValidateChunk(*request, chunk));
  const int head_dim = request->config.head_dim;

  std::lock_guard<std::shared_mutex> request_lock(request->mu);
  if (request->removed.load()) return NotFound(chunk.request_id);
  RequestStore& store = *request->store;
  const int64_t length = store.length(chunk.layer);
  const int64_t end = chunk.first_position + chunk.num_tokens;
  if (chunk.first_position > length) {
    return absl::FailedPreconditionError(absl::StrCat(
        "append at position ", chunk.first_position, " of request '",
        chunk.request_id, "' layer ", chunk.layer,
        " leaves a gap: the layer holds ", length, " tokens"));
  }
  const int64_t overlap = std::min(end, length) - chunk.first_position;
  if (overlap > 0) {
    ASSIGN_OR_RETURN(bool same, store.Matches(SubChunk(
                                    chunk, chunk.first_position, overlap, head_dim)));
    if (!same) {
      return absl::FailedPreconditionError(absl::StrCat(
          "append of positions [", chunk.first_position, ", ", end,
          ") of request '", chunk.request_id, "' layer ", chunk.layer,
          " conflicts with the stored bytes of [", chunk.first_position, ", ",
          chunk.first_position + overlap, ")"));
    }
  }
  const int64_t now_ns = NowNs();
  if (end <= length) {  // a retry of stored data: acknowledge, change nothing
    request->last_used_ns.store(now_ns);
    return length;
  }
  const int64_t tail = end - length;
  const int64_t delta =
      store.BytesAfterAppend(chunk.layer, tail) - store.bytes_reserved();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (request->removed.load()) return NotFound(chunk.request_id);
    if (bytes_in_use_ + delta > options_.memory_budget_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "append of ", tail, " tokens to request '", chunk.request_id,
          "' layer ", chunk.layer, " needs ", delta, " more bytes; ",
          bytes_in_use_, " of ", options_.memory_budget_bytes,
          " budget bytes in use"));
    }
    bytes_in_use_ += delta;
    request->accounted_bytes += delta;
  }
  absl::Status appended = store.Append(SubChunk(chunk, length, tail, head_dim));
  if (!appended.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    request->accounted_bytes -= delta;
    if (!request->removed.load()) bytes_in_use_ -= delta;
    return appended;
  }
  request->last_used_ns.store(now_ns);
  return end;
}

absl::Status Engine::ValidateRow(const Request& request,
                                 const QueryRow& row) const {
  const RequestConfig& config = request.config;
  if (row.layer < 0 || row.layer >= config.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer ", row.layer, " out of range [0, ", config.num_layers, ")"));
  }
  if (row.position < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("position must be >= 0, got ", row.position));
  }
  if (row.num_heads < 1 || row.num_heads > options_.max_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_heads must be in [1, ", options_.max_heads, "], got ",
        row.num_heads));
  }
  if (!IsValidFormat(row.q_format)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown query format ", FormatName(row.q_format)));
  }
  const int64_t want_q = int64_t{row.num_heads} * config.head_dim *
                         BytesPerValue(row.q_format);
  if (static_cast<int64_t>(row.q.size()) != want_q) {
    return absl::InvalidArgumentError(absl::StrCat(
        "q: expected num_heads ", row.num_heads, " x head_dim ",
        config.head_dim, " x ", BytesPerValue(row.q_format), " B = ", want_q,
        " bytes, got ", row.q.size()));
  }
  const size_t want_scales =
      row.q_format == KeyFormat::kFp8E4M3 ? row.num_heads : 0;
  if (row.q_scales.size() != want_scales) {
    return absl::InvalidArgumentError(absl::StrCat(
        "q_scales: expected ", want_scales, " per-head scales for ",
        FormatName(row.q_format), " queries, got ", row.q_scales.size()));
  }
  if (row.weights.size() != static_cast<size_t>(row.num_heads)) {
    return absl::InvalidArgumentError(
        absl::StrCat("weights: expected ", row.num_heads, " head weights, got ",
                     row.weights.size()));
  }
  if (row.mode != SelectMode::kDense && row.mode != SelectMode::kHisa &&
      row.mode != SelectMode::kAuto) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown select mode ", ModeName(row.mode)));
  }
  if (row.k < 1 || row.k > kMaxK) {
    return absl::InvalidArgumentError(
        absl::StrCat("k must be in [1, ", kMaxK, "], got ", row.k));
  }
  if (row.mode != SelectMode::kDense) {
    if (row.m < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("m must be >= 1, got ", row.m));
    }
    if (int64_t{row.m} * config.block_size < row.k) {
      return absl::InvalidArgumentError(absl::StrCat(
          "m * B must be >= k: m = ", row.m, ", B = ", config.block_size,
          ", k = ", row.k));
    }
  }
  RETURN_IF_ERROR(CheckFinite(row.q_format, row.q, "q"));
  RETURN_IF_ERROR(CheckFinite(row.q_scales, "q_scales"));
  RETURN_IF_ERROR(CheckFinite(row.weights, "weights"));
  return absl::OkStatus();
}

void Engine::Select(absl::Span<const QueryRow> rows,
                    absl::Span<RowResult> results, SelectStageTimes* times,
                    HostParallel* parallel) {
  // Real time (not options_.clock), read only when stage times are asked.
  const absl::Time validate_start =
      times != nullptr ? absl::Now() : absl::InfinitePast();
  const size_t n = std::min(rows.size(), results.size());
  for (size_t i = n; i < results.size(); ++i) {
    results[i].status = absl::InvalidArgumentError("result without a row");
  }
  // Resolve and validate every row on its own, in chunks that may run on
  // several threads (the checks read every query byte); a chunk looks its
  // request up once per run of rows of one request.
  std::vector<std::shared_ptr<Request>> row_request(n);
  const int64_t start_ns = NowNs();  // one lease check time for the batch
  ParallelFor(
      parallel, static_cast<int64_t>(n), kRowsPerValidateChunk,
      [&](int64_t begin, int64_t end) {
        absl::StatusOr<std::shared_ptr<Request>> found =
            absl::UnknownError("no row looked up yet");
        for (int64_t i = begin; i < end; ++i) {
          RowResult& result = results[i];
          result.positions.clear();
          result.scores.clear();
          if (i == begin || rows[i].request_id != rows[i - 1].request_id) {
            found = Find(rows[i].request_id, start_ns);
          }
          if (!found.ok()) {
            result.status = found.status();
            continue;
          }
          result.status = ValidateRow(**found, rows[i]);
          if (result.status.ok()) row_request[i] = *found;
        }
      });
  // The requests to lock.
  std::vector<Request*> to_lock;
  to_lock.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (row_request[i] != nullptr) to_lock.push_back(row_request[i].get());
  }
  // Reader locks in address order: concurrent batches never wait in a cycle.
  std::sort(to_lock.begin(), to_lock.end());
  to_lock.erase(std::unique(to_lock.begin(), to_lock.end()), to_lock.end());
  for (Request* request : to_lock) request->mu.lock_shared();

  std::vector<SelectTask> tasks;
  tasks.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    Request* request = row_request[i].get();
    if (request == nullptr) continue;
    const QueryRow& row = rows[i];
    RowResult& result = results[i];
    if (request->removed.load()) {
      result.status = NotFound(row.request_id);
      continue;
    }
    const int64_t length = request->store->length(row.layer);
    if (row.position >= length) {
      result.status = absl::FailedPreconditionError(absl::StrCat(
          "position ", row.position, " not yet appended: request '",
          row.request_id, "' layer ", row.layer, " holds ", length,
          " tokens (append the row's own key first)"));
      continue;
    }
    SelectMode mode = row.mode;
    if (mode == SelectMode::kAuto) {
      // t < m * B means every eligible block is chosen: HISA == DENSE.
      mode = row.position < int64_t{row.m} * request->config.block_size
                 ? SelectMode::kDense
                 : SelectMode::kHisa;
    }
    tasks.push_back(SelectTask{request->store.get(), &request->config, &row,
                               mode, &result});
  }
  if (times != nullptr) {
    times->validate += absl::ToDoubleSeconds(absl::Now() - validate_start);
  }
  if (!tasks.empty()) backend_->Select(tasks, times, parallel);
  for (Request* request : to_lock) request->mu.unlock_shared();

  const int64_t now_ns = NowNs();
  for (Request* request : to_lock) request->last_used_ns.store(now_ns);
}

void Engine::RemoveLocked(absl::string_view id) const {
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  Request& request = *it->second;
  request.removed.store(true);
  bytes_in_use_ -= request.accounted_bytes;
  requests_.erase(it);
}

bool Engine::Release(absl::string_view id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!requests_.contains(id)) return false;
  RemoveLocked(id);
  ++released_total_;
  return true;
}

std::vector<std::string> Engine::ExpireIdle() {
  std::vector<std::string> expired;
  const int64_t now_ns = NowNs();
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, request] : requests_) {
    if (IdleLocked(*request, now_ns)) expired.push_back(id);
  }
  for (const std::string& id : expired) RemoveLocked(id);
  expired_total_ += static_cast<int64_t>(expired.size());
  return expired;
}

absl::StatusOr<RequestInfo> Engine::GetRequestInfo(absl::string_view id) const {
  ASSIGN_OR_RETURN(std::shared_ptr<Request> request, Find(id, NowNs()));
  RequestInfo info;
  info.id = request->id;
  info.config = request->config;
  info.last_used = absl::FromUnixNanos(request->last_used_ns.load());
  {
    std::shared_lock<std::shared_mutex> lock(request->mu);
    if (request->removed.load()) return NotFound(id);
    info.layer_lengths.resize(request->config.num_layers);
    for (int l = 0; l < request->config.num_layers; ++l) {
      info.layer_lengths[l] = request->store->length(l);
    }
    info.bytes_reserved = request->store->bytes_reserved();
  }
  return info;
}

std::vector<RequestInfo> Engine::ListRequests() const {
  std::vector<std::string> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ids.reserve(requests_.size());
    for (const auto& entry : requests_) ids.push_back(entry.first);
  }
  std::sort(ids.begin(), ids.end());
  std::vector<RequestInfo> infos;
  infos.reserve(ids.size());
  for (const std::string& id : ids) {
    absl::StatusOr<RequestInfo> info = GetRequestInfo(id);
    if (info.ok()) infos.push_back(*std::move(info));
  }
  return infos;
}

EngineStats Engine::Stats() const {
  EngineStats stats;
  stats.backend = std::string(backend_->name());
  stats.memory_budget_bytes = options_.memory_budget_bytes;
  std::lock_guard<std::mutex> lock(mu_);
  stats.bytes_in_use = bytes_in_use_;
  stats.live_requests = static_cast<int64_t>(requests_.size());
  stats.expired_total = expired_total_;
  stats.released_total = released_total_;
  return stats;
}

}  // namespace hisa
