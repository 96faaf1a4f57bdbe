#include "coordinator/fleet_service.h"

#include <google/protobuf/util/time_util.h>

#include <utility>

#include "core/grpc_status.h"
#include "coordinator/serve.h"
#include "coordinator/update_stream.h"

namespace tern {

using google::protobuf::util::TimeUtil;

grpc::ServerUnaryReactor* FleetServiceImpl::ListHosts(grpc::CallbackServerContext* ctx,
                                                      const tern::v1::ListHostsRequest* req,
                                                      tern::v1::ListHostsResponse* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kListHosts, [this, req, resp]() -> absl::Status {
    auto hosts = fleet_.list_hosts(req->selector());
    if (!hosts.ok()) return hosts.status();
    for (auto& h : *hosts) *resp->add_hosts() = std::move(h);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* FleetServiceImpl::GetHost(grpc::CallbackServerContext* ctx,
                                                    const tern::v1::GetHostRequest* req, tern::v1::Host* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kGetHost,
                     [this, req, resp] { return reply(fleet_.get_host(req->host_id()), resp); });
}

grpc::ServerUnaryReactor* FleetServiceImpl::GetHostHistory(grpc::CallbackServerContext* ctx,
                                                           const tern::v1::GetHostHistoryRequest* req,
                                                           tern::v1::GetHostHistoryResponse* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kGetHostHistory, [this, req, resp]() -> absl::Status {
    auto events = fleet_.host_history(req->host_id(), req->limit());
    if (!events.ok()) return events.status();
    for (auto& e : *events) *resp->add_events() = std::move(e);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* FleetServiceImpl::CordonHost(grpc::CallbackServerContext* ctx,
                                                       const tern::v1::CordonHostRequest* req, tern::v1::Host* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kCordonHost, [this, req, resp](const tern::v1::Principal& who) {
    return reply(fleet_.cordon_host(req->host_id(), req->cordoned(), req->reason(), who.name()), resp);
  });
}

grpc::ServerUnaryReactor* FleetServiceImpl::GetVersion(grpc::CallbackServerContext* ctx,
                                                       const tern::v1::GetVersionRequest*,
                                                       tern::v1::VersionInfo* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kGetVersion, [this, resp] {
    *resp = fleet_.version();
    return absl::OkStatus();
  });
}

namespace {

// One host operation's progress, streamed to the caller; the operation
// itself belongs to the coordinator and goes on if the caller goes away.
using OperationStream = UpdateStream<tern::v1::HostOperationUpdate>;

CommandObserver observer_for(const std::shared_ptr<OperationStream::Sink>& sink) {
  CommandObserver obs;
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

grpc::ServerWriteReactor<tern::v1::HostOperationUpdate>* FleetServiceImpl::operate(
    grpc::CallbackServerContext* ctx, Rpc rpc, std::function<absl::Status(CommandObserver)> op) {
  if (auto p = auth_.authorize(*ctx, rpc); !p.ok()) {
    return new RefusedWriter<tern::v1::HostOperationUpdate>(to_grpc(p.status()));
  }
  auto* stream = new OperationStream();
  loop_.post([sink = stream->sink(), op = std::move(op)] {
    if (auto st = op(observer_for(sink)); !st.ok()) sink->fail(st);
  });
  return stream;
}

grpc::ServerWriteReactor<tern::v1::HostOperationUpdate>* FleetServiceImpl::DeployHost(
    grpc::CallbackServerContext* ctx, const tern::v1::DeployHostRequest* req) {
  return operate(ctx, Rpc::kDeployHost,
                 [this, r = *req](CommandObserver obs) { return fleet_.deploy_host(r, std::move(obs)); });
}

grpc::ServerWriteReactor<tern::v1::HostOperationUpdate>* FleetServiceImpl::RollbackHost(
    grpc::CallbackServerContext* ctx, const tern::v1::RollbackHostRequest* req) {
  return operate(ctx, Rpc::kRollbackHost,
                 [this, r = *req](CommandObserver obs) { return fleet_.rollback_host(r, std::move(obs)); });
}

}  // namespace tern
