// hisa_cli: a command-line client of the HISA indexing service.
//
//   hisa_cli --target=127.0.0.1:50051 info
//   hisa_cli create  --request_id=r1 --num_layers=4 --key_format=fp8
//   hisa_cli append  --request_id=r1 --layer=-1 --num_tokens=16384   # synthetic
//   hisa_cli append  --request_id=r1 --layer=0 --keys_file=k.bin --scales_file=s.bin
//   hisa_cli select  --request_id=r1 --layer=0 --mode=hisa --repeat=100
//   hisa_cli select  --request_id=r1 --queries_file=q.bin --weights_file=w.bin
//   hisa_cli release --request_id=r1
//
// append and select read the request's head_dim and key format from the
// server (GetInfo), so only the data flags are needed. Without a file they
// use synthetic topic-structured data (client/synthetic_workload.h) whose
// seed is --seed and the layer, so queries match the keys appended with the
// same seed. Files hold raw little-endian values: keys token-major
// (num_tokens x head_dim in the request's format), fp8 scales as fp32 (one
// per token / per head), queries rows x heads x head_dim in --q_format,
// weights rows x heads fp32. Exit code 0 on success, 1 on any error (the
// status is printed).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/hisa_client.h"
#include "client/latency_summary.h"
#include "client/synthetic_workload.h"
#include "kernels/status_macros.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051",
          "Server address: host:port or unix:/path.");
ABSL_FLAG(absl::Duration, deadline, absl::Seconds(30),
          "Deadline of each call (and of each reply on a stream).");
ABSL_FLAG(std::string, request_id, "", "Request id (create/append/select/release).");
// create
ABSL_FLAG(int, num_layers, 1, "create: number of layers.");
ABSL_FLAG(int, head_dim, 128, "create: head dimension D.");
ABSL_FLAG(int, block_size, 128, "create: HISA block size B.");
ABSL_FLAG(std::string, key_format, "fp8", "create: fp8 | bf16 | fp32.");
ABSL_FLAG(std::string, pooling, "mean", "create: block pooling, mean | max.");
// append
ABSL_FLAG(int, layer, 0, "Layer; for append, -1 appends to every layer.");
ABSL_FLAG(int64_t, first_position, -1,
          "append: first position; -1 = the layer's current length.");
ABSL_FLAG(int64_t, num_tokens, 0,
          "append: tokens to append; 0 = as many as --keys_file holds.");
ABSL_FLAG(std::string, keys_file, "",
          "append: raw keys (num_tokens x head_dim values); empty = synthetic.");
ABSL_FLAG(std::string, scales_file, "",
          "append: fp32 per-token scales for fp8 keys; empty = --scale.");
ABSL_FLAG(double, scale, 1.0, "append: fp8 scale of every token without --scales_file.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of synthetic keys and queries.");
// select
ABSL_FLAG(int64_t, position, -1, "select: query position; -1 = the layer's last.");
ABSL_FLAG(int, rows, 1,
          "select: rows in the message, positions position-rows+1 .. position.");
ABSL_FLAG(int, num_heads, 64, "select: query heads H.");
ABSL_FLAG(std::string, q_format, "fp8", "select: query format, fp8 | bf16 | fp32.");
ABSL_FLAG(std::string, mode, "hisa", "select: hisa | dense | auto.");
ABSL_FLAG(int, k, 2048, "select: top-k size.");
ABSL_FLAG(int, m, 64, "select: HISA block budget.");
ABSL_FLAG(std::string, queries_file, "",
          "select: raw queries (rows x heads x head_dim in --q_format); "
          "empty = synthetic.");
ABSL_FLAG(std::string, q_scales_file, "",
          "select: fp32 per-head scales for fp8 queries; empty = 1.0.");
ABSL_FLAG(std::string, weights_file, "",
          "select: fp32 head weights (rows x heads); empty = 1/sqrt(H).");
ABSL_FLAG(bool, scores, false, "select: ask for and print scores.");
ABSL_FLAG(int, repeat, 1, "select: send the message this many times.");
ABSL_FLAG(int, show, 12, "select: positions printed per row.");
// info
ABSL_FLAG(bool, all_requests, false, "info: describe every request.");
ABSL_FLAG(std::vector<std::string>, request_ids, {},
          "info: comma-separated request ids to describe.");

namespace hisa {
namespace {

absl::StatusOr<KeyFormat> ParseFormat(std::string name) {
  name = absl::AsciiStrToLower(name);
  if (name == "fp8" || name == "fp8_e4m3") return KeyFormat::kFp8E4M3;
  if (name == "bf16") return KeyFormat::kBf16;
  if (name == "fp32") return KeyFormat::kFp32;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown format '", name, "' (fp8, bf16 or fp32)"));
}

absl::StatusOr<SelectMode> ParseMode(std::string name) {
  name = absl::AsciiStrToLower(name);
  if (name == "hisa") return SelectMode::kHisa;
  if (name == "dense") return SelectMode::kDense;
  if (name == "auto") return SelectMode::kAuto;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown mode '", name, "' (hisa, dense or auto)"));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::vector<float>> ReadFloats(const std::string& path,
                                              size_t expected) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  if (bytes.size() != expected * sizeof(float)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path, "' holds ", bytes.size(), " bytes; expected ", expected,
        " fp32 values (", expected * sizeof(float), " bytes)"));
  }
  std::vector<float> out(expected);
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

std::string RequestId() { return absl::GetFlag(FLAGS_request_id); }

absl::Status NeedRequestId() {
  if (RequestId().empty()) {
    return absl::InvalidArgumentError("--request_id is required");
  }
  return absl::OkStatus();
}

// The request's configuration and layer lengths, from the server.
absl::StatusOr<v1::RequestInfo> FetchRequest(HisaClient& client) {
  RETURN_IF_ERROR(NeedRequestId());
  const std::vector<std::string> ids = {RequestId()};
  ASSIGN_OR_RETURN(v1::GetInfoResponse info, client.GetInfo(ids));
  if (info.requests_size() != 1) {
    return absl::NotFoundError(absl::StrCat(
        "request '", RequestId(), "' does not exist on the server"));
  }
  return info.requests(0);
}

WorkloadShape ShapeFor(int head_dim, int num_heads) {
  WorkloadShape shape;
  shape.head_dim = head_dim;
  shape.num_heads = num_heads;
  return shape;
}

uint64_t LayerSeed(int layer) {
  return absl::GetFlag(FLAGS_seed) * 1000003ull + static_cast<uint64_t>(layer);
}

absl::Status RunInfo(HisaClient& client) {
  ASSIGN_OR_RETURN(v1::GetInfoResponse info,
                   client.GetInfo(absl::GetFlag(FLAGS_request_ids),
                                  absl::GetFlag(FLAGS_all_requests)));
  const v1::ServerInfo& s = info.server();
  std::cout << absl::StrFormat(
      "server %s  backend %s  device %s\n"
      "  memory  %.1f MiB in use of %.1f MiB budget, %d live requests, idle TTL "
      "%.0f s\n"
      "  limits  message %d B, rows/message %u, requests %u, layers %u, heads "
      "%u, k %u\n",
      s.version(), s.backend(), s.device(), s.bytes_in_use() / 1048576.0,
      s.memory_budget_bytes() / 1048576.0, s.live_requests(),
      s.idle_ttl_seconds(), s.max_message_bytes(), s.max_rows_per_message(),
      s.max_requests(), s.max_layers(), s.max_heads(), s.max_k());
  for (const v1::RequestInfo& r : info.requests()) {
    std::vector<int64_t> lengths(r.layer_lengths().begin(),
                                 r.layer_lengths().end());
    std::string shown = absl::StrJoin(
        lengths.begin(), lengths.begin() + std::min<size_t>(lengths.size(), 8), " ");
    if (lengths.size() > 8) absl::StrAppend(&shown, " ...");
    std::cout << absl::StrFormat(
        "request '%s'  layers %u  D %u  B %u  format %s  %.2f MiB  idle %.1f s\n"
        "  layer lengths: %s\n",
        r.request_id(), r.config().num_layers(), r.config().head_dim(),
        r.config().block_size(), v1::KeyFormat_Name(r.config().key_format()),
        r.bytes_reserved() / 1048576.0, r.idle_seconds(), shown);
  }
  for (const std::string& id : info.missing_request_ids()) {
    std::cout << "request '" << id << "': not found\n";
  }
  return absl::OkStatus();
}

absl::Status RunCreate(HisaClient& client) {
  RETURN_IF_ERROR(NeedRequestId());
  RequestConfig config;
  config.num_layers = absl::GetFlag(FLAGS_num_layers);
  config.head_dim = absl::GetFlag(FLAGS_head_dim);
  config.block_size = absl::GetFlag(FLAGS_block_size);
  ASSIGN_OR_RETURN(config.key_format, ParseFormat(absl::GetFlag(FLAGS_key_format)));
  const std::string pooling = absl::AsciiStrToLower(absl::GetFlag(FLAGS_pooling));
  if (pooling != "mean" && pooling != "max") {
    return absl::InvalidArgumentError("--pooling must be mean or max");
  }
  config.pooling = pooling == "max" ? BlockPooling::kMax : BlockPooling::kMean;
  RETURN_IF_ERROR(client.CreateRequest(RequestId(), config));
  std::cout << absl::StrFormat("created '%s': %d layers, D %d, B %d, %s\n",
                               RequestId(), config.num_layers, config.head_dim,
                               config.block_size, FormatName(config.key_format));
  return absl::OkStatus();
}

absl::Status RunAppend(HisaClient& client) {
  ASSIGN_OR_RETURN(v1::RequestInfo request, FetchRequest(client));
  const int head_dim = static_cast<int>(request.config().head_dim());
  const KeyFormat format = static_cast<KeyFormat>(request.config().key_format());
  const int64_t token_bytes = int64_t{head_dim} * BytesPerValue(format);

  std::vector<int> layers;
  if (absl::GetFlag(FLAGS_layer) < 0) {
    for (int l = 0; l < static_cast<int>(request.config().num_layers()); ++l) {
      layers.push_back(l);
    }
  } else {
    layers.push_back(absl::GetFlag(FLAGS_layer));
  }
  for (int l : layers) {
    if (l >= request.layer_lengths_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer ", l, " out of range: the request has ",
          request.layer_lengths_size(), " layers"));
    }
  }

  // Key bytes: one buffer per layer (synthetic keys differ per layer).
  int64_t num_tokens = absl::GetFlag(FLAGS_num_tokens);
  std::string file_keys;
  std::vector<float> file_scales;
  if (!absl::GetFlag(FLAGS_keys_file).empty()) {
    ASSIGN_OR_RETURN(file_keys, ReadFile(absl::GetFlag(FLAGS_keys_file)));
    if (file_keys.size() % static_cast<size_t>(token_bytes) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--keys_file holds ", file_keys.size(), " bytes, not a multiple of ",
          token_bytes, " B per token (D ", head_dim, ", ", FormatName(format), ")"));
    }
    const int64_t in_file = static_cast<int64_t>(file_keys.size()) / token_bytes;
    if (num_tokens == 0) num_tokens = in_file;
    if (num_tokens > in_file) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--num_tokens ", num_tokens, " but --keys_file holds ", in_file));
    }
    if (format == KeyFormat::kFp8E4M3) {
      if (!absl::GetFlag(FLAGS_scales_file).empty()) {
        ASSIGN_OR_RETURN(file_scales,
                         ReadFloats(absl::GetFlag(FLAGS_scales_file),
                                    static_cast<size_t>(in_file)));
        file_scales.resize(static_cast<size_t>(num_tokens));
      } else {
        file_scales.assign(static_cast<size_t>(num_tokens),
                           static_cast<float>(absl::GetFlag(FLAGS_scale)));
      }
    }
  }
  if (num_tokens <= 0) {
    return absl::InvalidArgumentError(
        "--num_tokens must be positive (or give --keys_file)");
  }

  std::vector<EncodedRows> synthetic(layers.size());
  std::vector<KeyChunk> chunks;
  const std::string id = RequestId();
  for (size_t i = 0; i < layers.size(); ++i) {
    const int l = layers[i];
    int64_t first = absl::GetFlag(FLAGS_first_position);
    if (first < 0) first = request.layer_lengths(l);
    KeyChunk chunk;
    chunk.request_id = id;
    chunk.layer = l;
    chunk.first_position = first;
    chunk.num_tokens = num_tokens;
    chunk.format = format;
    if (!file_keys.empty()) {
      chunk.keys = absl::MakeConstSpan(
          reinterpret_cast<const uint8_t*>(file_keys.data()),
          static_cast<size_t>(num_tokens * token_bytes));
      chunk.scales = absl::MakeConstSpan(file_scales);
    } else {
      SyntheticLayer workload(ShapeFor(head_dim, 1), LayerSeed(l));
      synthetic[i] = EncodeRows(format, workload.Keys(first, num_tokens), head_dim);
      chunk.keys = absl::MakeConstSpan(synthetic[i].bytes);
      chunk.scales = absl::MakeConstSpan(synthetic[i].scales);
    }
    chunks.push_back(chunk);
  }

  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(std::vector<int64_t> lengths, client.Append(chunks));
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const double bytes = static_cast<double>(num_tokens) *
                       static_cast<double>(layers.size()) *
                       static_cast<double>(token_bytes +
                                           (format == KeyFormat::kFp8E4M3 ? 4 : 0));
  ASSIGN_OR_RETURN(const int64_t chunk_limit, client.MaxChunkBytes());
  std::cout << absl::StrFormat(
      "appended %d tokens x %d layers (%s keys) to '%s' in %s: %.1f MiB/s, "
      "messages <= %d B\n",
      num_tokens, layers.size(),
      absl::GetFlag(FLAGS_keys_file).empty() ? "synthetic" : "file", id,
      FormatSeconds(seconds), bytes / 1048576.0 / seconds, chunk_limit);
  for (size_t i = 0; i < layers.size(); ++i) {
    std::cout << "  layer " << layers[i] << " length " << lengths[i] << "\n";
  }
  return absl::OkStatus();
}

void PrintRow(const QueryRow& row, const RowResult& r, int block_size,
              int show) {
  if (!r.status.ok()) {
    std::cout << absl::StrFormat("  t=%d: error %s\n", row.position,
                                 r.status.ToString());
    return;
  }
  int count = 0;
  int64_t blocks = 0;
  int64_t last_block = -1;
  for (int32_t p : r.positions) {
    if (p < 0) break;
    ++count;
    if (p / block_size != last_block) {
      ++blocks;
      last_block = p / block_size;
    }
  }
  std::vector<std::string> shown;
  for (int i = 0; i < count && i < show; ++i) {
    shown.push_back(r.scores.empty()
                        ? absl::StrCat(r.positions[i])
                        : absl::StrFormat("%d(%.3g)", r.positions[i], r.scores[i]));
  }
  std::cout << absl::StrFormat(
      "  t=%d mode %s: %d positions (k %d, %d padding), first..last %d..%d, "
      "%d blocks of %d touched\n    %s%s\n",
      row.position, ModeName(r.mode_used), count, r.positions.size(),
      r.positions.size() - count, count > 0 ? r.positions[0] : -1,
      count > 0 ? r.positions[count - 1] : -1, blocks, block_size,
      absl::StrJoin(shown, " "),
      count > show ? " ..." : "");
}

absl::Status RunSelect(HisaClient& client) {
  ASSIGN_OR_RETURN(v1::RequestInfo request, FetchRequest(client));
  const int head_dim = static_cast<int>(request.config().head_dim());
  const int block_size = static_cast<int>(request.config().block_size());
  const int layer = absl::GetFlag(FLAGS_layer);
  if (layer < 0 || layer >= request.layer_lengths_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--layer ", layer, " out of range: the request has ",
        request.layer_lengths_size(), " layers"));
  }
  const int64_t length = request.layer_lengths(layer);
  int64_t position = absl::GetFlag(FLAGS_position);
  if (position < 0) position = length - 1;
  if (position < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("layer ", layer, " is empty; append keys first"));
  }
  const int num_rows = std::max(1, absl::GetFlag(FLAGS_rows));
  const int heads = absl::GetFlag(FLAGS_num_heads);
  ASSIGN_OR_RETURN(const KeyFormat q_format,
                   ParseFormat(absl::GetFlag(FLAGS_q_format)));
  ASSIGN_OR_RETURN(const SelectMode mode, ParseMode(absl::GetFlag(FLAGS_mode)));
  const size_t values_per_row = static_cast<size_t>(heads) * head_dim;

  std::vector<EncodedRows> queries(num_rows);
  std::vector<std::vector<float>> weights(num_rows);
  std::string file_q;
  std::vector<float> file_q_scales, file_weights;
  if (!absl::GetFlag(FLAGS_queries_file).empty()) {
    ASSIGN_OR_RETURN(file_q, ReadFile(absl::GetFlag(FLAGS_queries_file)));
    const size_t row_bytes = values_per_row * BytesPerValue(q_format);
    if (file_q.size() != row_bytes * num_rows) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--queries_file holds ", file_q.size(), " bytes; ", num_rows,
          " rows x ", heads, " heads x D ", head_dim, " in ",
          FormatName(q_format), " need ", row_bytes * num_rows));
    }
    if (q_format == KeyFormat::kFp8E4M3) {
      if (!absl::GetFlag(FLAGS_q_scales_file).empty()) {
        ASSIGN_OR_RETURN(file_q_scales,
                         ReadFloats(absl::GetFlag(FLAGS_q_scales_file),
                                    static_cast<size_t>(num_rows) * heads));
      } else {
        file_q_scales.assign(static_cast<size_t>(num_rows) * heads, 1.0f);
      }
    }
    if (!absl::GetFlag(FLAGS_weights_file).empty()) {
      ASSIGN_OR_RETURN(file_weights,
                       ReadFloats(absl::GetFlag(FLAGS_weights_file),
                                  static_cast<size_t>(num_rows) * heads));
    } else {
      file_weights.assign(static_cast<size_t>(num_rows) * heads,
                          1.0f / std::sqrt(static_cast<float>(heads)));
    }
    for (int r = 0; r < num_rows; ++r) {
      queries[r].format = q_format;
      queries[r].bytes.assign(file_q.begin() + static_cast<long>(r * row_bytes),
                              file_q.begin() + static_cast<long>((r + 1) * row_bytes));
      if (!file_q_scales.empty()) {
        queries[r].scales.assign(file_q_scales.begin() + r * heads,
                                 file_q_scales.begin() + (r + 1) * heads);
      }
      weights[r].assign(file_weights.begin() + r * heads,
                        file_weights.begin() + (r + 1) * heads);
    }
  } else {
    SyntheticLayer workload(ShapeFor(head_dim, heads), LayerSeed(layer));
    for (int r = 0; r < num_rows; ++r) {
      std::vector<float> q;
      workload.Query(position - (num_rows - 1) + r, &q, &weights[r]);
      queries[r] = EncodeRows(q_format, q, head_dim);
    }
  }

  const std::string id = RequestId();
  std::vector<QueryRow> rows;
  for (int r = 0; r < num_rows; ++r) {
    QueryRow row = MakeQueryRow(id, layer, position - (num_rows - 1) + r, heads,
                                queries[r], weights[r], mode,
                                absl::GetFlag(FLAGS_k), absl::GetFlag(FLAGS_m));
    row.return_scores = absl::GetFlag(FLAGS_scores);
    rows.push_back(row);
  }

  ASSIGN_OR_RETURN(std::unique_ptr<SelectStream> stream, client.OpenSelectStream());
  const int repeat = std::max(1, absl::GetFlag(FLAGS_repeat));
  std::vector<double> latencies, server_seconds;
  SelectResult last;
  for (int i = 0; i < repeat; ++i) {
    const absl::Time start = absl::Now();
    ASSIGN_OR_RETURN(last, stream->Select(rows));
    latencies.push_back(absl::ToDoubleSeconds(absl::Now() - start));
    server_seconds.push_back(last.server_seconds);
  }
  RETURN_IF_ERROR(stream->Close());

  std::cout << absl::StrFormat(
      "select '%s' layer %d (length %d): %d row(s), H %d, %s queries, mode %s, "
      "k %d, m %d\n",
      id, layer, length, num_rows, heads, FormatName(q_format), ModeName(mode),
      absl::GetFlag(FLAGS_k), absl::GetFlag(FLAGS_m));
  const int shown_rows = std::min(num_rows, 4);
  for (int r = num_rows - shown_rows; r < num_rows; ++r) {
    PrintRow(rows[r], last.rows[r], block_size, absl::GetFlag(FLAGS_show));
  }
  if (num_rows > shown_rows) {
    std::cout << "  (" << num_rows - shown_rows << " earlier rows not shown)\n";
  }
  const double raw_bytes = 4.0 * absl::GetFlag(FLAGS_k) * num_rows;
  v1::SelectRequest wire_request;
  for (const QueryRow& row : rows) ToProto(row, wire_request.add_rows());
  std::cout << absl::StrFormat(
      "  wire: request %d B, response %d B, compact positions %d B (%.3f of "
      "raw int32)\n",
      wire_request.ByteSizeLong(), last.response_bytes, last.compact_position_bytes,
      last.compact_position_bytes / raw_bytes);
  const LatencySummary lat = Summarize(latencies);
  const LatencySummary srv = Summarize(server_seconds);
  std::cout << absl::StrFormat(
      "  latency over %d message(s): p50 %s  p99 %s  max %s  (server p50 %s)\n",
      lat.count, FormatSeconds(lat.p50), FormatSeconds(lat.p99),
      FormatSeconds(lat.max), FormatSeconds(srv.p50));
  return absl::OkStatus();
}

absl::Status RunRelease(HisaClient& client) {
  RETURN_IF_ERROR(NeedRequestId());
  ASSIGN_OR_RETURN(const bool existed, client.Release(RequestId()));
  std::cout << "released '" << RequestId() << "'"
            << (existed ? "" : " (it did not exist)") << "\n";
  return absl::OkStatus();
}

absl::Status Run(const std::string& command) {
  ClientOptions options;
  options.deadline = absl::GetFlag(FLAGS_deadline);
  ASSIGN_OR_RETURN(std::unique_ptr<HisaClient> client,
                   HisaClient::Create(absl::GetFlag(FLAGS_target), options));
  if (command == "info") return RunInfo(*client);
  if (command == "create") return RunCreate(*client);
  if (command == "append") return RunAppend(*client);
  if (command == "select") return RunSelect(*client);
  if (command == "release") return RunRelease(*client);
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown command '", command,
      "' (info, create, append, select, release)"));
}

}  // namespace
}  // namespace hisa

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "hisa_cli [flags] <info|create|append|select|release>\n"
      "A client of the HISA indexing service; see --helpfull.");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::cerr << absl::ProgramUsageMessage() << "\n";
    return 1;
  }
  const absl::Status status = hisa::Run(args[1]);
  if (!status.ok()) {
    std::cerr << "error: " << status << "\n";
    return 1;
  }
  return 0;
}
