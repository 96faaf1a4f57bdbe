#include "coordinator/agent_stream.h"

namespace tern {

bool AgentSession::send(tern::v1::CoordinatorMessage msg) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stream_ == nullptr) return false;
  stream_->enqueue(std::move(msg));
  return true;
}

void AgentSession::close(grpc::Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stream_ != nullptr) stream_->finish(std::move(status));
}

AgentStream::AgentStream(grpc::CallbackServerContext* ctx, uint64_t session_id, AgentStreamListener& listener,
                         std::atomic<int64_t>* sent_counter)
    : ctx_(ctx),
      session_(std::make_shared<AgentSession>(session_id)),
      listener_(listener),
      sent_counter_(sent_counter),
      peer_(ctx->peer()) {
  session_->stream_ = this;
  listener_.on_agent_stream_open(session_);
  StartRead(&incoming_);
}

void AgentStream::OnReadDone(bool ok) {
  if (!ok) {
    // The agent half-closed or the call broke: end our side too.
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_reason_ = ctx_->IsCancelled() ? "stream broken" : "agent closed the stream";
    }
    finish(grpc::Status::OK);
    return;
  }
  listener_.on_agent_message(session_, peer_, std::move(incoming_));
  incoming_.Clear();
  StartRead(&incoming_);
}

void AgentStream::enqueue(tern::v1::CoordinatorMessage msg) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finish_requested_) return;
  outbox_.push_back(std::move(msg));
  if (!write_in_flight_) {
    write_in_flight_ = true;
    StartWrite(&outbox_.front());
  }
}

void AgentStream::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  write_in_flight_ = false;
  if (!ok) {
    // The peer is gone; reads will fail too and finish the call.
    outbox_.clear();
  } else {
    if (sent_counter_) sent_counter_->fetch_add(1, std::memory_order_relaxed);
    outbox_.pop_front();
  }
  if (!outbox_.empty()) {
    write_in_flight_ = true;
    StartWrite(&outbox_.front());
    return;
  }
  if (finish_requested_ && !finished_) {
    finished_ = true;
    Finish(finish_status_);
  }
}

void AgentStream::finish(grpc::Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  finish_locked(std::move(status));
}

void AgentStream::finish_locked(grpc::Status status) {
  if (finish_requested_) return;
  finish_requested_ = true;
  finish_status_ = std::move(status);
  if (!finish_status_.ok()) done_reason_ = finish_status_.error_message();
  // Never Finish with a write outstanding; OnWriteDone finishes instead.
  if (!write_in_flight_) {
    finished_ = true;
    Finish(finish_status_);
  }
}

void AgentStream::OnDone() {
  {
    std::lock_guard<std::mutex> lock(session_->mu_);
    session_->stream_ = nullptr;
  }
  std::string reason;
  {
    std::lock_guard<std::mutex> lock(mu_);
    reason = done_reason_;
  }
  listener_.on_agent_stream_done(session_, reason);
  delete this;
}

grpc::ServerBidiReactor<tern::v1::AgentMessage, tern::v1::CoordinatorMessage>* AgentServiceImpl::Connect(
    grpc::CallbackServerContext* ctx) {
  return new AgentStream(ctx, next_session_.fetch_add(1), listener_, sent_counter_);
}

}  // namespace tern
