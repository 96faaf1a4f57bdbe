#include "coordinator/fleet_service.h"

#include <google/protobuf/util/time_util.h>

#include <deque>
#include <optional>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "core/grpc_status.h"
#include "core/version.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;

void set_time(TimePoint t, google::protobuf::Timestamp* out) {
  *out = TimeUtil::MillisecondsToTimestamp(to_unix_millis(t));
}

tern::v1::HostState to_proto(HostState s) {
  switch (s) {
    case HostState::kConnected: return tern::v1::HOST_STATE_CONNECTED;
    case HostState::kDisconnected: return tern::v1::HOST_STATE_DISCONNECTED;
    case HostState::kUnreachable: return tern::v1::HOST_STATE_UNREACHABLE;
  }
  return tern::v1::HOST_STATE_UNSPECIFIED;
}

}  // namespace

void to_proto(const HostRegistry::Entry& entry, tern::v1::Host* out) {
  const HostRecord& r = entry.record;
  out->set_host_id(r.host_id);
  out->mutable_labels()->insert(r.labels.begin(), r.labels.end());
  out->set_agent_version(r.agent_version);
  out->set_state(to_proto(r.state));
  set_time(r.first_seen, out->mutable_first_seen());
  set_time(r.last_seen, out->mutable_last_seen());
  set_time(r.state_since, out->mutable_state_since());
  out->set_connect_count(r.connect_count);
  out->set_peer(r.peer);
}

grpc::ServerUnaryReactor* FleetServiceImpl::ListHosts(grpc::CallbackServerContext* ctx,
                                                      const tern::v1::ListHostsRequest* req,
                                                      tern::v1::ListHostsResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto selector = LabelSelector::parse(req->selector());
  if (!selector.ok()) {
    reactor->Finish(to_grpc(selector.status()));
    return reactor;
  }
  loop_.post([this, reactor, resp, sel = *std::move(selector)] {
    for (const auto* entry : registry_.list(sel)) {
      auto* h = resp->add_hosts();
      to_proto(*entry, h);
      for (auto& svc : plane_.host_services(entry->record.host_id)) *h->add_services() = std::move(svc);
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* FleetServiceImpl::GetHost(grpc::CallbackServerContext* ctx,
                                                    const tern::v1::GetHostRequest* req, tern::v1::Host* resp) {
  auto* reactor = ctx->DefaultReactor();
  loop_.post([this, reactor, req, resp] {
    const auto* entry = registry_.find(req->host_id());
    if (entry == nullptr) {
      reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                   absl::StrCat("no host \"", req->host_id(), "\" in the registry; ",
                                                "`ternctl hosts` lists the known ones")));
      return;
    }
    to_proto(*entry, resp);
    for (auto& svc : plane_.host_services(req->host_id())) *resp->add_services() = std::move(svc);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* FleetServiceImpl::GetHostHistory(grpc::CallbackServerContext* ctx,
                                                           const tern::v1::GetHostHistoryRequest* req,
                                                           tern::v1::GetHostHistoryResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  loop_.post([this, reactor, req, resp] {
    if (registry_.find(req->host_id()) == nullptr) {
      reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                   absl::StrCat("no host \"", req->host_id(), "\" in the registry")));
      return;
    }
    auto events = store_.history(req->host_id(), req->limit());
    if (!events.ok()) {
      reactor->Finish(to_grpc(events.status()));
      return;
    }
    for (const auto& e : *events) {
      auto* ev = resp->add_events();
      ev->set_host_id(e.host_id);
      set_time(e.time, ev->mutable_time());
      ev->set_kind(e.kind);
      ev->set_detail(e.detail);
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* FleetServiceImpl::GetVersion(grpc::CallbackServerContext* ctx,
                                                       const tern::v1::GetVersionRequest*,
                                                       tern::v1::VersionInfo* resp) {
  auto* reactor = ctx->DefaultReactor();
  resp->set_version(kVersion);
  resp->set_epoch(epoch_);
  set_time(started_, resp->mutable_started());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

namespace {

// Streams one host operation's progress to the caller. The operation itself
// belongs to the coordinator: if the caller goes away, the reactor ends and
// later updates are dropped, but the agent carries on. Updates arrive from
// the event loop; one write is in flight at a time.
class OperationStream final : public grpc::ServerWriteReactor<tern::v1::HostOperationUpdate> {
 public:
  // The event loop's handle; outlives the reactor.
  struct Sink {
    std::mutex mu;
    OperationStream* stream = nullptr;
    void push(tern::v1::HostOperationUpdate u) {
      std::lock_guard lock(mu);
      if (stream != nullptr) stream->enqueue(std::move(u));
    }
    void fail(const absl::Status& st) {
      std::lock_guard lock(mu);
      if (stream != nullptr) stream->finish_now(to_grpc(st));
    }
  };

  OperationStream() : sink_(std::make_shared<Sink>()) { sink_->stream = this; }
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
  void enqueue(tern::v1::HostOperationUpdate u) {
    std::lock_guard lock(mu_);
    if (finish_with_) return;
    if (u.done()) finish_with_ = grpc::Status::OK;  // finish once this last update is out
    queue_.push_back(std::move(u));
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
        Finish(*finish_with_);
      }
      return;
    }
    in_flight_ = true;
    StartWrite(&queue_.front());
  }

  std::shared_ptr<Sink> sink_;
  std::mutex mu_;
  std::deque<tern::v1::HostOperationUpdate> queue_;
  bool in_flight_ = false;
  std::optional<grpc::Status> finish_with_;
  bool finished_ = false;
};

ControlPlane::CommandObserver observer_for(const std::shared_ptr<OperationStream::Sink>& sink) {
  ControlPlane::CommandObserver obs;
  obs.progress = [sink](const tern::v1::AgentEvent& e) {
    tern::v1::HostOperationUpdate u;
    *u.mutable_time() = TimeUtil::GetCurrentTime();
    u.set_message(e.message());
    if (e.has_status()) *u.mutable_status() = e.status();
    sink->push(std::move(u));
  };
  obs.done = [sink](const tern::v1::CommandResult& r) {
    tern::v1::HostOperationUpdate u;
    *u.mutable_time() = TimeUtil::GetCurrentTime();
    u.set_message(r.message());
    u.set_done(true);
    *u.mutable_result() = r;
    if (r.has_service()) *u.mutable_status() = r.service();
    sink->push(std::move(u));
  };
  return obs;
}

}  // namespace

grpc::ServerWriteReactor<tern::v1::HostOperationUpdate>* FleetServiceImpl::DeployHost(
    grpc::CallbackServerContext*, const tern::v1::DeployHostRequest* req) {
  auto* stream = new OperationStream();
  auto sink = stream->sink();
  loop_.post([this, sink, r = *req] {
    if (auto st = plane_.deploy_host(r, observer_for(sink)); !st.ok()) sink->fail(st);
  });
  return stream;
}

grpc::ServerWriteReactor<tern::v1::HostOperationUpdate>* FleetServiceImpl::RollbackHost(
    grpc::CallbackServerContext*, const tern::v1::RollbackHostRequest* req) {
  auto* stream = new OperationStream();
  auto sink = stream->sink();
  loop_.post([this, sink, r = *req] {
    if (auto st = plane_.rollback_host(r, observer_for(sink)); !st.ok()) sink->fail(st);
  });
  return stream;
}

}  // namespace tern
