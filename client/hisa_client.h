// C++ client library of the HISA indexing service (proto/hisa.proto).
//
//   ASSIGN_OR_RETURN(auto client, hisa::HisaClient::Create("127.0.0.1:50051"));
//   RETURN_IF_ERROR(client->CreateRequest("req-1", config));
//   ASSIGN_OR_RETURN(int64_t len, client->Append(prefill_chunk));  // chunked
//   ASSIGN_OR_RETURN(auto select, client->OpenSelectStream());
//   ASSIGN_OR_RETURN(hisa::SelectResult out, select->Select(rows));
//   // out.rows[i].positions: exactly k entries, ascending, then -1 (SPEC 4.3)
//   ASSIGN_OR_RETURN(bool existed, client->Release("req-1"));
//
// Inputs and outputs are the engine's plain types (kernels/types.h:
// RequestConfig, KeyChunk, QueryRow, RowResult), so callers never touch
// protobuf; the raw-proto entry points exist for load generators that reuse
// one prebuilt message.
//
// Deadlines: every unary call has deadline = now + ClientOptions::deadline.
// A stream lives at most ClientOptions::stream_lifetime and every wait on it
// (an AppendAck, a SelectResponse) is bounded by ClientOptions::deadline; a
// wait that times out is DEADLINE_EXCEEDED and cancels that stream.
//
// Errors: RPC statuses and in-band codes map to absl::Status in one function
// (proto/status_codes.h); the code is kept, messages name the request, layer
// and positions involved. A malformed reply from the server is INTERNAL.
//
// Thread safety: HisaClient is thread-safe; it holds one channel that every
// call and stream shares (one HTTP/2 connection). AppendStream and
// SelectStream are NOT thread-safe: use one per thread (they are cheap: one
// stream on the shared channel).
#ifndef HISA_CLIENT_HISA_CLIENT_H_
#define HISA_CLIENT_HISA_CLIENT_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/bidi_stream.h"
#include "grpcpp/grpcpp.h"
#include "kernels/types.h"
#include "proto/hisa.grpc.pb.h"
#include "proto/hisa.pb.h"

namespace hisa {

struct ClientOptions {
  // Deadline of unary calls, and the longest wait for any one reply on a
  // stream.
  absl::Duration deadline = absl::Seconds(30);
  // Deadline of a whole Append or Select stream, from when it is opened.
  absl::Duration stream_lifetime = absl::Hours(24);
  // Largest serialized AppendChunk the client sends. The bound used is the
  // smaller of this and the server's max_message_bytes (GetInfo, fetched
  // once on the first Append) when use_server_message_limit.
  int64_t max_chunk_bytes = int64_t{4} << 20;
  bool use_server_message_limit = true;
  // Append pieces in flight on one stream before the client waits for acks.
  int append_window = 8;
  // Largest message the client accepts (a SelectResponse with many scored
  // rows can be large).
  int max_receive_message_bytes = 256 << 20;
  // Calls wait for the channel to connect (up to their deadline) instead of
  // failing fast with UNAVAILABLE while the server is not reachable.
  bool wait_for_ready = false;
};

// The decoded answer to one SelectRequest.
struct SelectResult {
  uint64_t message_id = 0;
  // Server-side time for the message (SelectResponse.server_seconds).
  double server_seconds = 0;
  // One per row, in row order. On success: exactly k positions (ascending,
  // then -1) and, when the row asked for scores, k scores (NaN for padding).
  std::vector<RowResult> rows;
  // Serialized size of the SelectResponse, and of its CompactPositions
  // fields summed over rows (the compact form's wire cost).
  int64_t response_bytes = 0;
  int64_t compact_position_bytes = 0;
};

// A persistent Select stream: one SelectRequest per Send, answered by one
// SelectResult per Receive, in order. Sends may run ahead of receives.
class SelectStream {
 public:
  // Sends one message with these rows (copied into the message).
  absl::Status Send(absl::Span<const QueryRow> rows);
  // Sends a prebuilt message; sets request->message_id to this stream's next
  // id (so one message may be sent repeatedly).
  absl::Status Send(v1::SelectRequest* request);
  // Waits for the answer to the oldest unanswered message and decodes it.
  // FAILED_PRECONDITION when nothing is in flight; INTERNAL when the reply
  // does not match the message (id, row count, k) or positions are malformed
  // (the row's status says which). Per-row server errors are in the rows.
  absl::StatusOr<SelectResult> Receive();
  // Send + Receive.
  absl::StatusOr<SelectResult> Select(absl::Span<const QueryRow> rows);
  // Ends the stream; OK when the server ended it cleanly.
  absl::Status Close();
  // Messages sent and not yet received.
  int in_flight() const { return static_cast<int>(pending_.size()); }

 private:
  friend class HisaClient;
  using Stream = BidiStream<v1::SelectRequest, v1::SelectResponse>;
  struct Pending {
    uint64_t message_id;
    std::vector<int> ks;  // each row's k (0 already resolved to kMaxK)
  };
  explicit SelectStream(std::unique_ptr<Stream> stream)
      : stream_(std::move(stream)) {}

  std::unique_ptr<Stream> stream_;
  std::deque<Pending> pending_;
  uint64_t next_message_id_ = 1;
  v1::SelectRequest scratch_;
  v1::SelectResponse response_;
};

// A persistent Append stream. Each chunk is split into pieces that fit the
// message limit (whole tokens per piece), pieces are pipelined up to
// ClientOptions::append_window, and every AppendAck is checked.
class AppendStream {
 public:
  // Appends one chunk; returns the layer's length after it. On a failed
  // piece: the server's code, with the request, layer and position range in
  // the message. Pieces before it are stored; appends are idempotent, so the
  // whole chunk may be retried.
  absl::StatusOr<int64_t> Append(const KeyChunk& chunk);
  // Appends several chunks (e.g. every layer of a prefill) in one pipeline;
  // returns each chunk's resulting layer length. Stops at the first failure.
  absl::StatusOr<std::vector<int64_t>> Append(absl::Span<const KeyChunk> chunks);
  // Ends the stream; OK when the server ended it cleanly.
  absl::Status Close();
  // The byte bound every piece is kept under.
  int64_t max_message_bytes() const { return max_message_bytes_; }

 private:
  friend class HisaClient;
  using Stream = BidiStream<v1::AppendChunk, v1::AppendAck>;
  AppendStream(std::unique_ptr<Stream> stream, int64_t max_message_bytes,
               int window)
      : stream_(std::move(stream)),
        max_message_bytes_(max_message_bytes),
        window_(window) {}

  std::unique_ptr<Stream> stream_;
  const int64_t max_message_bytes_;
  const int window_;
  uint64_t next_chunk_id_ = 1;
};

class HisaClient {
 public:
  // Makes the channel to `target` ("host:port", "unix:/path", any gRPC
  // target). Does not connect yet: the first call does. INVALID_ARGUMENT
  // for an empty target.
  static absl::StatusOr<std::unique_ptr<HisaClient>> Create(
      absl::string_view target, ClientOptions options = {});
  // Uses an existing channel (tests, in-process servers).
  HisaClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options);

  // Creates a request. Idempotent with the same config; ALREADY_EXISTS with
  // a different one.
  absl::Status CreateRequest(absl::string_view request_id,
                             const RequestConfig& config);

  absl::StatusOr<std::unique_ptr<AppendStream>> OpenAppendStream();
  // One-shot helpers: open an Append stream, append, close it.
  absl::StatusOr<int64_t> Append(const KeyChunk& chunk);
  absl::StatusOr<std::vector<int64_t>> Append(absl::Span<const KeyChunk> chunks);

  absl::StatusOr<std::unique_ptr<SelectStream>> OpenSelectStream();

  // Frees a request; returns whether it existed. Idempotent.
  absl::StatusOr<bool> Release(absl::string_view request_id);

  // Server configuration and budget, plus the listed requests (or all).
  absl::StatusOr<v1::GetInfoResponse> GetInfo(
      absl::Span<const std::string> request_ids = {}, bool all_requests = false);

  // The bound Append pieces are kept under (see ClientOptions).
  absl::StatusOr<int64_t> MaxChunkBytes();

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const ClientOptions& options() const { return options_; }

 private:
  void PrepareContext(grpc::ClientContext* context) const;

  const ClientOptions options_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::HisaIndex::Stub> stub_;
  absl::Mutex mu_;
  int64_t max_chunk_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // 0: not fetched yet
};

// --- Conversions, public for tests and load generators. ---

void ToProto(const RequestConfig& config, v1::RequestConfig* out);
// Copies the row's bytes into `out`.
void ToProto(const QueryRow& row, v1::QueryRow* out);

// Decodes one wire RowResult to the SPEC 4.3 contract. `expected_k` is the
// row's k as sent (0 means kMaxK); a reply with another k is INTERNAL.
RowResult DecodeRowResult(const v1::RowResult& wire, int expected_k);

// Splits `chunk` into consecutive pieces of whole tokens whose serialized
// AppendChunk is at most `max_message_bytes`. INVALID_ARGUMENT when the
// chunk's byte counts do not divide into tokens (keys not a multiple of
// num_tokens, fp8 without one scale per token) or one token cannot fit.
absl::StatusOr<std::vector<KeyChunk>> SplitChunk(const KeyChunk& chunk,
                                                 int64_t max_message_bytes);

}  // namespace hisa

#endif  // HISA_CLIENT_HISA_CLIENT_H_
