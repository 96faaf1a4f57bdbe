#include "coordinator/fleet_service.h"

#include "coordinator/update_stream.h"

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
  if (auto p = auth_.authorize(*ctx, Permission::kRead); !p.ok()) return refuse_unary(ctx, p.status());
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
  if (auto p = auth_.authorize(*ctx, Permission::kRead); !p.ok()) return refuse_unary(ctx, p.status());
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
  if (auto p = auth_.authorize(*ctx, Permission::kRead); !p.ok()) return refuse_unary(ctx, p.status());
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
  if (auto p = auth_.authorize(*ctx, Permission::kRead); !p.ok()) return refuse_unary(ctx, p.status());
  auto* reactor = ctx->DefaultReactor();
  resp->set_version(kVersion);
  resp->set_epoch(epoch_);
  set_time(started_, resp->mutable_started());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

namespace {

// One host operation's progress, streamed to the caller; the operation
// itself belongs to the coordinator and goes on if the caller goes away.
using OperationStream = UpdateStream<tern::v1::HostOperationUpdate>;

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
    sink->push(std::move(u), /*last=*/true);
  };
  return obs;
}

}  // namespace

grpc::ServerWriteReactor<tern::v1::HostOperationUpdate>* FleetServiceImpl::DeployHost(
    grpc::CallbackServerContext* ctx, const tern::v1::DeployHostRequest* req) {
  if (auto p = auth_.authorize(*ctx, Permission::kOperate); !p.ok()) return new RefusedWriter<tern::v1::HostOperationUpdate>(to_grpc(p.status()));
  auto* stream = new OperationStream();
  auto sink = stream->sink();
  loop_.post([this, sink, r = *req] {
    if (auto st = plane_.deploy_host(r, observer_for(sink)); !st.ok()) sink->fail(st);
  });
  return stream;
}

grpc::ServerWriteReactor<tern::v1::HostOperationUpdate>* FleetServiceImpl::RollbackHost(
    grpc::CallbackServerContext* ctx, const tern::v1::RollbackHostRequest* req) {
  if (auto p = auth_.authorize(*ctx, Permission::kOperate); !p.ok()) return new RefusedWriter<tern::v1::HostOperationUpdate>(to_grpc(p.status()));
  auto* stream = new OperationStream();
  auto sink = stream->sink();
  loop_.post([this, sink, r = *req] {
    if (auto st = plane_.rollback_host(r, observer_for(sink)); !st.ok()) sink->fail(st);
  });
  return stream;
}

}  // namespace tern
