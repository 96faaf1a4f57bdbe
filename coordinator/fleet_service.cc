#include "coordinator/fleet_service.h"

#include "coordinator/update_stream.h"

#include <google/protobuf/util/time_util.h>

#include <deque>
#include <optional>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "core/grpc_status.h"

namespace tern {
using google::protobuf::util::TimeUtil;

grpc::ServerUnaryReactor* FleetServiceImpl::ListHosts(grpc::CallbackServerContext* ctx,
                                                      const tern::v1::ListHostsRequest* req,
                                                      tern::v1::ListHostsResponse* resp) {
  if (auto p = auth_.authorize(*ctx, Permission::kRead); !p.ok()) return refuse_unary(ctx, p.status());
  auto* reactor = ctx->DefaultReactor();
  loop_.post([this, reactor, req, resp] {
    auto hosts = fleet_.list_hosts(req->selector());
    if (!hosts.ok()) return reactor->Finish(to_grpc(hosts.status()));
    for (auto& h : *hosts) *resp->add_hosts() = std::move(h);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* FleetServiceImpl::GetHost(grpc::CallbackServerContext* ctx,
                                                    const tern::v1::GetHostRequest* req, tern::v1::Host* resp) {
  if (auto p = auth_.authorize(*ctx, Permission::kRead); !p.ok()) return refuse_unary(ctx, p.status());
  auto* reactor = ctx->DefaultReactor();
  loop_.post([this, reactor, req, resp] {
    auto host = fleet_.get_host(req->host_id());
    if (!host.ok()) return reactor->Finish(to_grpc(host.status()));
    *resp = *std::move(host);
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
    auto events = fleet_.host_history(req->host_id(), req->limit());
    if (!events.ok()) return reactor->Finish(to_grpc(events.status()));
    for (auto& e : *events) *resp->add_events() = std::move(e);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* FleetServiceImpl::GetVersion(grpc::CallbackServerContext* ctx,
                                                       const tern::v1::GetVersionRequest*,
                                                       tern::v1::VersionInfo* resp) {
  if (auto p = auth_.authorize(*ctx, Permission::kRead); !p.ok()) return refuse_unary(ctx, p.status());
  auto* reactor = ctx->DefaultReactor();
  loop_.post([this, reactor, resp] {
    *resp = fleet_.version();
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
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

grpc::ServerWriteReactor<tern::v1::HostOperationUpdate>* FleetServiceImpl::DeployHost(
    grpc::CallbackServerContext* ctx, const tern::v1::DeployHostRequest* req) {
  if (auto p = auth_.authorize(*ctx, Permission::kOperate); !p.ok()) return new RefusedWriter<tern::v1::HostOperationUpdate>(to_grpc(p.status()));
  auto* stream = new OperationStream();
  auto sink = stream->sink();
  loop_.post([this, sink, r = *req] {
    if (auto st = fleet_.deploy_host(r, observer_for(sink)); !st.ok()) sink->fail(st);
  });
  return stream;
}

grpc::ServerWriteReactor<tern::v1::HostOperationUpdate>* FleetServiceImpl::RollbackHost(
    grpc::CallbackServerContext* ctx, const tern::v1::RollbackHostRequest* req) {
  if (auto p = auth_.authorize(*ctx, Permission::kOperate); !p.ok()) return new RefusedWriter<tern::v1::HostOperationUpdate>(to_grpc(p.status()));
  auto* stream = new OperationStream();
  auto sink = stream->sink();
  loop_.post([this, sink, r = *req] {
    if (auto st = fleet_.rollback_host(r, observer_for(sink)); !st.ok()) sink->fail(st);
  });
  return stream;
}

}  // namespace tern
