// A blocking wrapper of a gRPC client bidirectional stream with a timeout on
// every wait, shared by the HISA client's Append and Select streams and by the
// load generator's echo baseline (so the baseline runs the same client path).
//
//   auto stream = hisa::BidiStream<Req, Resp>::Open(
//       [&](grpc::ClientContext* ctx, grpc::CompletionQueue* cq) {
//         return stub->PrepareAsyncSelect(ctx, cq);
//       },
//       /*lifetime=*/absl::Hours(1), /*op_timeout=*/absl::Seconds(10));
//   RETURN_IF_ERROR((*stream)->Write(request));
//   RETURN_IF_ERROR((*stream)->Read(&response));
//   RETURN_IF_ERROR((*stream)->Close());
//
// Why not the synchronous ClientReaderWriter: its Read cannot time out, so a
// stalled server would hang the caller until the whole stream's deadline. This
// class drives the asynchronous stream on its own completion queue from the
// calling thread (what the synchronous API does internally), and bounds every
// wait by `op_timeout`.
//
// Contract:
//   Open:  starts the call; the stream's deadline is now + lifetime. Fails
//          with the mapped gRPC status when the call cannot start.
//   Write: returns once the message is handed to gRPC (serialized); it first
//          waits for the previous write to complete, so at most one write is
//          in flight. Writes may run ahead of reads (pipelining).
//   Read:  waits for the next message. When the server ends the stream it
//          returns the call's final status (an OK end becomes UNAVAILABLE
//          "stream closed by the server"). A wait longer than op_timeout
//          returns DEADLINE_EXCEEDED and cancels the stream.
//   Close: half-closes, drains unread messages, and returns the final status.
//   After any error the stream is broken: every later call returns the first
//   error. The destructor cancels a stream that was not closed.
// Thread safety: none; one thread at a time (use one stream per thread).
#ifndef HISA_CLIENT_BIDI_STREAM_H_
#define HISA_CLIENT_BIDI_STREAM_H_

#include <cstdint>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "proto/status_codes.h"
#include "grpcpp/grpcpp.h"

namespace hisa {

template <typename Request, typename Response>
class BidiStream {
 public:
  using AsyncStream = grpc::ClientAsyncReaderWriter<Request, Response>;

  // `prepare(ctx, cq)` returns the not-yet-started stream, e.g.
  // stub->PrepareAsyncSelect(ctx, cq).
  template <typename PrepareFn>
  static absl::StatusOr<std::unique_ptr<BidiStream>> Open(
      PrepareFn prepare, absl::Duration lifetime, absl::Duration op_timeout) {
    std::unique_ptr<BidiStream> s(new BidiStream(op_timeout));
    s->context_.set_deadline(absl::ToChronoTime(absl::Now() + lifetime));
    s->stream_ = prepare(&s->context_, &s->cq_);
    if (s->stream_ == nullptr) {
      return absl::InternalError("gRPC returned no stream");
    }
    s->stream_->StartCall(Tag(kStart));
    s->pending_[kStart] = true;
    bool ok = false;
    absl::Status waited = s->WaitFor(kStart, &ok);
    if (!waited.ok()) return waited;
    if (!ok) return s->FinishWithError();
    return s;
  }

  ~BidiStream() { Shutdown(); }

  BidiStream(const BidiStream&) = delete;
  BidiStream& operator=(const BidiStream&) = delete;

  absl::Status Write(const Request& request) {
    if (!error_.ok()) return error_;
    if (half_closed_) {
      return absl::FailedPreconditionError("Write after Close");
    }
    if (pending_[kWrite]) {
      bool ok = false;
      absl::Status waited = WaitFor(kWrite, &ok);
      if (!waited.ok()) return waited;
      if (!ok) return FinishWithError();
    }
    // gRPC serializes `request` before Write returns; the caller may reuse it.
    stream_->Write(request, Tag(kWrite));
    pending_[kWrite] = true;
    return absl::OkStatus();
  }

  absl::Status Read(Response* response) {
    if (!error_.ok()) return error_;
    if (!pending_[kRead]) {
      stream_->Read(&read_buffer_, Tag(kRead));
      pending_[kRead] = true;
    }
    bool ok = false;
    absl::Status waited = WaitFor(kRead, &ok);
    if (!waited.ok()) return waited;
    if (!ok) return FinishWithError();
    response->Swap(&read_buffer_);
    return absl::OkStatus();
  }

  absl::Status Close() {
    if (!error_.ok()) return error_;
    bool ok = false;
    if (pending_[kWrite]) {
      absl::Status waited = WaitFor(kWrite, &ok);
      if (!waited.ok()) return waited;
    }
    half_closed_ = true;
    stream_->WritesDone(Tag(kWritesDone));
    pending_[kWritesDone] = true;
    absl::Status waited = WaitFor(kWritesDone, &ok);
    if (!waited.ok()) return waited;
    // Drain what the server still sends until it ends the stream.
    while (true) {
      if (!pending_[kRead]) {
        stream_->Read(&read_buffer_, Tag(kRead));
        pending_[kRead] = true;
      }
      waited = WaitFor(kRead, &ok);
      if (!waited.ok()) return waited;
      if (!ok) break;
    }
    grpc::Status final_status;
    stream_->Finish(&final_status, Tag(kFinish));
    pending_[kFinish] = true;
    finish_called_ = true;
    waited = WaitFor(kFinish, &ok);
    if (!waited.ok()) return waited;
    error_ = final_status.ok()
                 ? absl::FailedPreconditionError("stream already closed")
                 : StatusFromGrpc(final_status);
    return StatusFromGrpc(final_status);
  }

  // True until the first error or Close.
  bool healthy() const { return error_.ok(); }

 private:
  enum Op { kStart = 0, kWrite, kRead, kWritesDone, kFinish, kNumOps };

  explicit BidiStream(absl::Duration op_timeout) : op_timeout_(op_timeout) {}

  static void* Tag(Op op) {
    return reinterpret_cast<void*>(static_cast<intptr_t>(op) + 1);
  }

  // Waits until `want` completes (other completions are recorded on the way).
  absl::Status WaitFor(Op want, bool* ok) {
    const absl::Time deadline = absl::Now() + op_timeout_;
    while (pending_[want]) {
      void* tag = nullptr;
      bool op_ok = false;
      const grpc::CompletionQueue::NextStatus next =
          cq_.AsyncNext(&tag, &op_ok, absl::ToChronoTime(deadline));
      if (next == grpc::CompletionQueue::TIMEOUT) {
        return Fail(absl::DeadlineExceededError(absl::StrCat(
            "no reply from the server within ", absl::FormatDuration(op_timeout_))));
      }
      if (next == grpc::CompletionQueue::SHUTDOWN) {
        return Fail(absl::InternalError("completion queue shut down"));
      }
      const int op = static_cast<int>(reinterpret_cast<intptr_t>(tag) - 1);
      pending_[op] = false;
      ok_[op] = op_ok;
    }
    *ok = ok_[want];
    return absl::OkStatus();
  }

  // The call ended (an op returned !ok): fetch and keep its final status.
  absl::Status FinishWithError() {
    if (!finish_called_) {
      grpc::Status final_status;
      stream_->Finish(&final_status, Tag(kFinish));
      pending_[kFinish] = true;
      finish_called_ = true;
      bool ok = false;
      absl::Status waited = WaitFor(kFinish, &ok);
      if (!waited.ok()) return waited;
      error_ = final_status.ok()
                   ? absl::UnavailableError("stream closed by the server")
                   : StatusFromGrpc(final_status);
    }
    if (error_.ok()) error_ = absl::UnavailableError("stream closed");
    return error_;
  }

  absl::Status Fail(absl::Status status) {
    if (error_.ok()) error_ = status;
    context_.TryCancel();
    return error_;
  }

  // Cancels the call if still open and waits for every outstanding op, so no
  // completion refers to this object after it is gone.
  void Shutdown() {
    if (stream_ != nullptr) {
      if (!finish_called_) {
        context_.TryCancel();
        stream_->Finish(&shutdown_status_, Tag(kFinish));
        pending_[kFinish] = true;
        finish_called_ = true;
      }
      void* tag = nullptr;
      bool op_ok = false;
      while (AnyPending() && cq_.Next(&tag, &op_ok)) {
        pending_[reinterpret_cast<intptr_t>(tag) - 1] = false;
      }
    }
    cq_.Shutdown();
    void* tag = nullptr;
    bool op_ok = false;
    while (cq_.Next(&tag, &op_ok)) {
    }
  }

  bool AnyPending() const {
    for (bool p : pending_) {
      if (p) return true;
    }
    return false;
  }

  const absl::Duration op_timeout_;
  grpc::ClientContext context_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<AsyncStream> stream_;
  Response read_buffer_;
  grpc::Status shutdown_status_;
  bool pending_[kNumOps] = {};
  bool ok_[kNumOps] = {};
  bool finish_called_ = false;
  bool half_closed_ = false;
  absl::Status error_;
};

}  // namespace hisa

#endif  // HISA_CLIENT_BIDI_STREAM_H_
