#include "client/hisa_client.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "proto/status_codes.h"
#include "kernels/status_macros.h"
#include "proto/compact_positions.h"

namespace hisa {
namespace {

// Serialized bytes of an AppendChunk beyond its keys and scales: tags and
// length prefixes of every field (at most ~40 B) plus the request id, with
// room to spare.
constexpr int64_t kAppendOverheadBytes = 64;

std::string Describe(const KeyChunk& c) {
  return absl::StrCat("append of request '", c.request_id, "' layer ", c.layer,
                      " positions [", c.first_position, ", ",
                      c.first_position + c.num_tokens, ")");
}

absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

void FillChunk(const KeyChunk& piece, uint64_t chunk_id, v1::AppendChunk* msg) {
  msg->set_request_id(piece.request_id.data(), piece.request_id.size());
  msg->set_layer(static_cast<uint32_t>(piece.layer));
  msg->set_first_position(piece.first_position);
  msg->set_num_tokens(static_cast<uint32_t>(piece.num_tokens));
  msg->set_format(static_cast<v1::KeyFormat>(piece.format));
  msg->set_keys(piece.keys.data(), piece.keys.size());
  auto* scales = msg->mutable_scales();
  scales->Resize(static_cast<int>(piece.scales.size()), 0.0f);
  if (!piece.scales.empty()) {
    std::memcpy(scales->mutable_data(), piece.scales.data(),
                piece.scales.size() * sizeof(float));
  }
  msg->set_chunk_id(chunk_id);
}

SelectMode ModeFromProto(v1::SelectMode mode) {
  return mode == v1::DENSE ? SelectMode::kDense : SelectMode::kHisa;
}

}  // namespace

// ---------------------------------------------------------------------------
// Conversions.

void ToProto(const RequestConfig& config, v1::RequestConfig* out) {
  out->set_num_layers(static_cast<uint32_t>(config.num_layers));
  out->set_head_dim(static_cast<uint32_t>(config.head_dim));
  out->set_block_size(static_cast<uint32_t>(config.block_size));
  out->set_key_format(static_cast<v1::KeyFormat>(config.key_format));
  out->set_pooling(config.pooling == BlockPooling::kMax ? v1::MAX : v1::MEAN);
}

void ToProto(const QueryRow& row, v1::QueryRow* out) {
  out->set_request_id(row.request_id.data(), row.request_id.size());
  out->set_layer(static_cast<uint32_t>(row.layer));
  out->set_position(row.position);
  out->set_num_heads(static_cast<uint32_t>(row.num_heads));
  out->set_q_format(static_cast<v1::KeyFormat>(row.q_format));
  out->set_q(row.q.data(), row.q.size());
  out->mutable_q_scales()->Resize(static_cast<int>(row.q_scales.size()), 0.0f);
  if (!row.q_scales.empty()) {
    std::memcpy(out->mutable_q_scales()->mutable_data(), row.q_scales.data(),
                row.q_scales.size() * sizeof(float));
  }
  out->mutable_weights()->Resize(static_cast<int>(row.weights.size()), 0.0f);
  if (!row.weights.empty()) {
    std::memcpy(out->mutable_weights()->mutable_data(), row.weights.data(),
                row.weights.size() * sizeof(float));
  }
  switch (row.mode) {
    case SelectMode::kDense: out->set_mode(v1::DENSE); break;
    case SelectMode::kHisa: out->set_mode(v1::HISA); break;
    case SelectMode::kAuto: out->set_mode(v1::AUTO); break;
  }
  out->set_k(static_cast<uint32_t>(row.k));
  out->set_m(static_cast<uint32_t>(row.m));
  out->set_return_scores(row.return_scores);
}

RowResult DecodeRowResult(const v1::RowResult& wire, int expected_k) {
  RowResult out;
  out.status = StatusFromCode(wire.code(), wire.message());
  if (!out.status.ok()) return out;
  out.mode_used = ModeFromProto(wire.mode_used());
  const int want_k = expected_k == 0 ? kMaxK : expected_k;
  if (static_cast<int64_t>(wire.k()) != want_k) {
    out.status = absl::InternalError(absl::StrCat(
        "server answered k = ", wire.k(), " for a row that asked k = ", want_k));
    return out;
  }
  absl::StatusOr<std::vector<int32_t>> positions =
      DecodePositions(wire.positions(), want_k);
  if (!positions.ok()) {
    out.status = absl::InternalError(absl::StrCat(
        "malformed positions from the server: ", positions.status().message()));
    return out;
  }
  out.positions = *std::move(positions);
  if (wire.scores_size() > 0) {
    if (static_cast<uint32_t>(wire.scores_size()) != wire.positions().count()) {
      out.status = absl::InternalError(absl::StrCat(
          "server sent ", wire.scores_size(), " scores for ",
          wire.positions().count(), " positions"));
      out.positions.clear();
      return out;
    }
    out.scores.assign(wire.scores().begin(), wire.scores().end());
    out.scores.resize(static_cast<size_t>(want_k),
                      std::numeric_limits<float>::quiet_NaN());
  }
  return out;
}

absl::StatusOr<std::vector<KeyChunk>> SplitChunk(const KeyChunk& chunk,
                                                 int64_t max_message_bytes) {
  if (chunk.num_tokens <= 0) {
    // Nothing to split; the server judges an empty chunk.
    return std::vector<KeyChunk>{chunk};
  }
  const int64_t n = chunk.num_tokens;
  if (static_cast<int64_t>(chunk.keys.size()) % n != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        Describe(chunk), ": ", chunk.keys.size(),
        " key bytes do not divide into ", n, " tokens"));
  }
  const bool has_scales = !chunk.scales.empty();
  if (has_scales && static_cast<int64_t>(chunk.scales.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        Describe(chunk), ": ", chunk.scales.size(), " scales for ", n, " tokens"));
  }
  if (chunk.format == KeyFormat::kFp8E4M3 && !has_scales) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(chunk), ": FP8_E4M3 keys need one scale per token"));
  }
  const int64_t key_bytes = static_cast<int64_t>(chunk.keys.size()) / n;
  const int64_t token_bytes = key_bytes + (has_scales ? 4 : 0);
  const int64_t room = max_message_bytes - kAppendOverheadBytes -
                       static_cast<int64_t>(chunk.request_id.size());
  int64_t per_piece = room > 0 ? room / token_bytes : 0;
  if (per_piece < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        Describe(chunk), ": one token (", token_bytes,
        " B) does not fit a message of ", max_message_bytes, " B"));
  }
  per_piece = std::min<int64_t>(per_piece, std::numeric_limits<int32_t>::max());
  std::vector<KeyChunk> pieces;
  pieces.reserve(static_cast<size_t>((n + per_piece - 1) / per_piece));
  for (int64_t done = 0; done < n; done += per_piece) {
    const int64_t count = std::min(per_piece, n - done);
    KeyChunk piece = chunk;
    piece.first_position = chunk.first_position + done;
    piece.num_tokens = count;
    piece.keys = chunk.keys.subspan(static_cast<size_t>(done * key_bytes),
                                    static_cast<size_t>(count * key_bytes));
    if (has_scales) {
      piece.scales = chunk.scales.subspan(static_cast<size_t>(done),
                                          static_cast<size_t>(count));
    }
    pieces.push_back(piece);
  }
  return pieces;
}

// ---------------------------------------------------------------------------
// SelectStream.

absl::Status SelectStream::Send(absl::Span<const QueryRow> rows) {
  scratch_.Clear();
  for (const QueryRow& row : rows) ToProto(row, scratch_.add_rows());
  return Send(&scratch_);
}

absl::Status SelectStream::Send(v1::SelectRequest* request) {
  Pending pending;
  pending.message_id = next_message_id_++;
  pending.ks.reserve(static_cast<size_t>(request->rows_size()));
  for (const v1::QueryRow& row : request->rows()) {
    pending.ks.push_back(row.k() == 0 ? kMaxK : static_cast<int>(row.k()));
  }
  request->set_message_id(pending.message_id);
  RETURN_IF_ERROR(stream_->Write(*request));
  pending_.push_back(std::move(pending));
  return absl::OkStatus();
}

absl::StatusOr<SelectResult> SelectStream::Receive() {
  if (pending_.empty()) {
    return absl::FailedPreconditionError("Receive with no message in flight");
  }
  RETURN_IF_ERROR(stream_->Read(&response_));
  Pending pending = std::move(pending_.front());
  pending_.pop_front();
  if (response_.message_id() != pending.message_id) {
    return absl::InternalError(absl::StrCat(
        "server answered message ", response_.message_id(), " where ",
        pending.message_id, " was next"));
  }
  if (static_cast<size_t>(response_.results_size()) != pending.ks.size()) {
    return absl::InternalError(absl::StrCat(
        "server sent ", response_.results_size(), " row results for message ",
        pending.message_id, " of ", pending.ks.size(), " rows"));
  }
  SelectResult out;
  out.message_id = response_.message_id();
  out.server_seconds = response_.server_seconds();
  out.response_bytes = static_cast<int64_t>(response_.ByteSizeLong());
  out.rows.reserve(pending.ks.size());
  for (int i = 0; i < response_.results_size(); ++i) {
    const v1::RowResult& wire = response_.results(i);
    if (wire.has_positions()) {
      out.compact_position_bytes +=
          static_cast<int64_t>(wire.positions().ByteSizeLong());
    }
    out.rows.push_back(DecodeRowResult(wire, pending.ks[static_cast<size_t>(i)]));
  }
  return out;
}

absl::StatusOr<SelectResult> SelectStream::Select(
    absl::Span<const QueryRow> rows) {
  RETURN_IF_ERROR(Send(rows));
  return Receive();
}

absl::Status SelectStream::Close() {
  absl::Status status = stream_->Close();
  pending_.clear();
  return status;
}

// ---------------------------------------------------------------------------
// AppendStream.

absl::StatusOr<int64_t> AppendStream::Append(const KeyChunk& chunk) {
  ASSIGN_OR_RETURN(std::vector<int64_t> lengths,
                   Append(absl::MakeConstSpan(&chunk, 1)));
  return lengths[0];
}

absl::StatusOr<std::vector<int64_t>> AppendStream::Append(
    absl::Span<const KeyChunk> chunks) {
  struct InFlight {
    size_t chunk_index;
    uint64_t chunk_id;
    bool last_piece;
    KeyChunk piece;
  };
  std::vector<int64_t> lengths(chunks.size(), 0);
  std::deque<InFlight> in_flight;
  absl::Status failure;

  // Reads one ack; a transport error breaks the stream, an in-band error
  // fails only its piece.
  auto read_ack = [&]() -> absl::Status {
    v1::AppendAck ack;
    RETURN_IF_ERROR(stream_->Read(&ack));
    const InFlight sent = std::move(in_flight.front());
    in_flight.pop_front();
    if (ack.chunk_id() != sent.chunk_id) {
      return absl::InternalError(absl::StrCat(
          "server acked chunk ", ack.chunk_id(), " where ", sent.chunk_id,
          " was next"));
    }
    if (ack.code() != 0) {
      return Annotate(StatusFromCode(ack.code(), ack.message()),
                      Describe(sent.piece));
    }
    if (sent.last_piece) lengths[sent.chunk_index] = ack.layer_length();
    return absl::OkStatus();
  };

  v1::AppendChunk message;
  for (size_t i = 0; i < chunks.size() && failure.ok(); ++i) {
    absl::StatusOr<std::vector<KeyChunk>> pieces =
        SplitChunk(chunks[i], max_message_bytes_);
    if (!pieces.ok()) {
      failure = pieces.status();
      break;
    }
    for (size_t p = 0; p < pieces->size(); ++p) {
      const KeyChunk& piece = (*pieces)[p];
      const uint64_t id = next_chunk_id_++;
      FillChunk(piece, id, &message);
      absl::Status written = stream_->Write(message);
      if (!written.ok()) return Annotate(written, Describe(piece));
      in_flight.push_back({i, id, p + 1 == pieces->size(), piece});
      if (static_cast<int>(in_flight.size()) >= window_) {
        failure = read_ack();
        if (!failure.ok()) break;
      }
    }
  }
  while (failure.ok() && !in_flight.empty()) failure = read_ack();
  if (failure.ok()) return lengths;
  // Keep the stream usable after an in-band error: collect the acks of the
  // pieces still in flight (they fail too, as gaps, and change nothing).
  while (stream_->healthy() && !in_flight.empty()) {
    v1::AppendAck ack;
    if (!stream_->Read(&ack).ok()) break;
    in_flight.pop_front();
  }
  return failure;
}

absl::Status AppendStream::Close() { return stream_->Close(); }

// ---------------------------------------------------------------------------
// HisaClient.

absl::StatusOr<std::unique_ptr<HisaClient>> HisaClient::Create(
    absl::string_view target, ClientOptions options) {
  if (target.empty()) return absl::InvalidArgumentError("empty target");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  args.SetMaxSendMessageSize(-1);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
      std::string(target), grpc::InsecureChannelCredentials(), args);
  return std::make_unique<HisaClient>(std::move(channel), options);
}

HisaClient::HisaClient(std::shared_ptr<grpc::Channel> channel,
                       ClientOptions options)
    : options_(options),
      channel_(std::move(channel)),
      stub_(v1::HisaIndex::NewStub(channel_)) {}

void HisaClient::PrepareContext(grpc::ClientContext* context) const {
  context->set_deadline(absl::ToChronoTime(absl::Now() + options_.deadline));
  context->set_wait_for_ready(options_.wait_for_ready);
}

absl::Status HisaClient::CreateRequest(absl::string_view request_id,
                                       const RequestConfig& config) {
  v1::CreateRequestRequest request;
  request.set_request_id(request_id.data(), request_id.size());
  ToProto(config, request.mutable_config());
  v1::CreateRequestResponse response;
  grpc::ClientContext context;
  PrepareContext(&context);
  const grpc::Status status = stub_->CreateRequest(&context, request, &response);
  if (!status.ok()) {
    return Annotate(StatusFromGrpc(status),
                    absl::StrCat("CreateRequest '", request_id, "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> HisaClient::MaxChunkBytes() {
  absl::MutexLock lock(&mu_);
  if (max_chunk_bytes_ > 0) return max_chunk_bytes_;
  int64_t limit = options_.max_chunk_bytes;
  if (options_.use_server_message_limit) {
    absl::StatusOr<v1::GetInfoResponse> info = GetInfo();
    if (!info.ok()) return info.status();
    const int64_t server_limit = info->server().max_message_bytes();
    if (server_limit > 0) limit = std::min(limit, server_limit);
  }
  max_chunk_bytes_ = limit;
  return limit;
}

absl::StatusOr<std::unique_ptr<AppendStream>> HisaClient::OpenAppendStream() {
  ASSIGN_OR_RETURN(const int64_t limit, MaxChunkBytes());
  ASSIGN_OR_RETURN(
      std::unique_ptr<AppendStream::Stream> stream,
      AppendStream::Stream::Open(
          [this](grpc::ClientContext* context, grpc::CompletionQueue* cq) {
            context->set_wait_for_ready(options_.wait_for_ready);
            return stub_->PrepareAsyncAppend(context, cq);
          },
          options_.stream_lifetime, options_.deadline));
  return std::unique_ptr<AppendStream>(new AppendStream(
      std::move(stream), limit, std::max(1, options_.append_window)));
}

absl::StatusOr<int64_t> HisaClient::Append(const KeyChunk& chunk) {
  ASSIGN_OR_RETURN(std::vector<int64_t> lengths,
                   Append(absl::MakeConstSpan(&chunk, 1)));
  return lengths[0];
}

absl::StatusOr<std::vector<int64_t>> HisaClient::Append(
    absl::Span<const KeyChunk> chunks) {
  ASSIGN_OR_RETURN(std::unique_ptr<AppendStream> stream, OpenAppendStream());
  ASSIGN_OR_RETURN(std::vector<int64_t> lengths, stream->Append(chunks));
  RETURN_IF_ERROR(stream->Close());
  return lengths;
}

absl::StatusOr<std::unique_ptr<SelectStream>> HisaClient::OpenSelectStream() {
  ASSIGN_OR_RETURN(
      std::unique_ptr<SelectStream::Stream> stream,
      SelectStream::Stream::Open(
          [this](grpc::ClientContext* context, grpc::CompletionQueue* cq) {
            context->set_wait_for_ready(options_.wait_for_ready);
            return stub_->PrepareAsyncSelect(context, cq);
          },
          options_.stream_lifetime, options_.deadline));
  return std::unique_ptr<SelectStream>(new SelectStream(std::move(stream)));
}

absl::StatusOr<bool> HisaClient::Release(absl::string_view request_id) {
  v1::ReleaseRequest request;
  request.set_request_id(request_id.data(), request_id.size());
  v1::ReleaseResponse response;
  grpc::ClientContext context;
  PrepareContext(&context);
  const grpc::Status status = stub_->Release(&context, request, &response);
  if (!status.ok()) {
    return Annotate(StatusFromGrpc(status),
                    absl::StrCat("Release '", request_id, "'"));
  }
  return response.existed();
}

absl::StatusOr<v1::GetInfoResponse> HisaClient::GetInfo(
    absl::Span<const std::string> request_ids, bool all_requests) {
  v1::GetInfoRequest request;
  for (const std::string& id : request_ids) request.add_request_ids(id);
  request.set_all_requests(all_requests);
  v1::GetInfoResponse response;
  grpc::ClientContext context;
  PrepareContext(&context);
  const grpc::Status status = stub_->GetInfo(&context, request, &response);
  if (!status.ok()) return Annotate(StatusFromGrpc(status), "GetInfo");
  return response;
}

}  // namespace hisa
