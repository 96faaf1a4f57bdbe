#pragma once

#include <grpcpp/grpcpp.h>

#include <deque>
#include <memory>
#include <mutex>
#include <optional>

#include "absl/status/status.h"
#include "core/grpc_status.h"

namespace tern {

// A server-streaming reactor fed from elsewhere (the event loop). The feeder
// holds a Sink, which outlives the reactor: once the caller has gone, pushes
// are dropped and the work behind them goes on. One write is in flight at a
// time; the stream finishes after the message pushed with `last`, or at once
// on fail(). The reactor deletes itself in OnDone.
template <typename Msg>
class UpdateStream final : public grpc::ServerWriteReactor<Msg> {
 public:
  struct Sink {
    std::mutex mu;
    UpdateStream* stream = nullptr;
    void push(Msg m, bool last = false) {
      std::lock_guard lock(mu);
      if (stream != nullptr) stream->enqueue(std::move(m), last);
    }
    void fail(const absl::Status& st) {
      std::lock_guard lock(mu);
      if (stream != nullptr) stream->finish_now(to_grpc(st));
    }
    bool alive() {
      std::lock_guard lock(mu);
      return stream != nullptr;
    }
  };

  UpdateStream() : sink_(std::make_shared<Sink>()) { sink_->stream = this; }
  std::shared_ptr<Sink> sink() { return sink_; }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    in_flight_ = false;
    queue_.pop_front();
    if (!ok) {
      queue_.clear();
      if (!finish_with_) finish_with_ = grpc::Status(grpc::StatusCode::CANCELLED, "caller went away");
    }
    pump();
  }

  void OnDone() override {
    {
      std::lock_guard lock(sink_->mu);
      sink_->stream = nullptr;
    }
    delete this;
  }

 private:
  // Called with sink_->mu held, so the reactor cannot be deleted meanwhile.
  void enqueue(Msg m, bool last) {
    std::lock_guard lock(mu_);
    if (finish_with_) return;
    if (last) finish_with_ = grpc::Status::OK;  // finish once this one is out
    queue_.push_back(std::move(m));
    if (!in_flight_) pump();
  }
  void finish_now(grpc::Status st) {
    std::lock_guard lock(mu_);
    if (finish_with_) return;
    finish_with_ = std::move(st);
    // The message being written must stay alive until OnWriteDone.
    while (queue_.size() > (in_flight_ ? 1u : 0u)) queue_.pop_back();
    if (!in_flight_) pump();
  }
  // mu_ held.
  void pump() {
    if (queue_.empty()) {
      if (finish_with_ && !finished_) {
        finished_ = true;
        this->Finish(*finish_with_);
      }
      return;
    }
    in_flight_ = true;
    this->StartWrite(&queue_.front());
  }

  std::shared_ptr<Sink> sink_;
  std::mutex mu_;
  std::deque<Msg> queue_;
  bool in_flight_ = false;
  std::optional<grpc::Status> finish_with_;
  bool finished_ = false;
};

}  // namespace tern
