#pragma once

// Shared by ternctl's command files; not an API.

#include <grpcpp/grpcpp.h>
#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>

#include <memory>
#include <ostream>
#include <string>
#include <type_traits>

#include "core/clock.h"
#include "ctl/ctl.h"

namespace tern {

// What every ternctl command runs with: the streams to write to, the global
// flags as parsed, and the channel to the coordinator (with the caller's
// credentials; null for a command that calls no coordinator). Built once by
// run_ctl; commands take it by const reference.
struct CtlContext {
  std::ostream& out;
  std::ostream& err;
  std::string coordinator;  // --coordinator, as given: named in errors
  bool json = false;        // -o json
  Millis timeout{10'000};   // --timeout: the deadline of every unary call
  std::shared_ptr<grpc::Channel> channel;

  // Sets the --timeout deadline, counted from now.
  void set_deadline(grpc::ClientContext& ctx) const;

  // Prints one line for a failed call ("ternctl: <what>: ...", with what to
  // do next) and returns the exit code it maps to.
  int rpc_error(const std::string& what, const grpc::Status& st) const;

  // One unary call to the coordinator with the --timeout deadline, e.g.
  //   c.unary(&tern::v1::FleetService::Stub::GetHost, req, resp)
  template <typename Stub, typename Request, typename Response>
  grpc::Status unary(grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
                     const std::type_identity_t<Request>& req, std::type_identity_t<Response>& resp) const {
    Stub stub(channel);
    grpc::ClientContext ctx;
    set_deadline(ctx);
    return (stub.*method)(&ctx, req, &resp);
  }

  // unary(), and when it fails rpc_error(what, status). Returns kExitOk if
  // the call succeeded, else the exit code the command should return.
  template <typename Stub, typename Request, typename Response>
  int call(const std::string& what, grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
           const std::type_identity_t<Request>& req, std::type_identity_t<Response>& resp) const {
    const grpc::Status st = unary(method, req, resp);
    return st.ok() ? kExitOk : rpc_error(what, st);
  }
};

// ---- formatting shared by the command files ----

// The protobuf JSON mapping with proto field names; `compact`: one line.
std::string to_json(const google::protobuf::Message& msg, bool compact = false);

// "3m ago", "now", or "-" for an unset time; `now_ms` is Unix milliseconds.
std::string ago(const google::protobuf::Timestamp& t, int64_t now_ms);

// Local wall-clock time of day, "14:03:27", for progress lines.
std::string clock_time(const google::protobuf::Timestamp& t);

struct RolloutFlags {
  std::string file;
  std::string service, version, selector;
  std::string waves = "1,10%,50%,100%";
  std::string bake;
  uint32_t max_parallel = 0;
  uint32_t max_failed = 0;
  std::string on_failure = "rollback";
  std::string spread;
  bool watch = false;
  Millis wait{3'600'000};
};

int cmd_rollout_plan(const CtlContext& c, const RolloutFlags& f);
int cmd_rollout_start(const CtlContext& c, const RolloutFlags& f);
int cmd_rollout_watch(const CtlContext& c, const std::string& id, Millis wait);
int cmd_rollout_status(const CtlContext& c, const std::string& id);
int cmd_rollout_list(const CtlContext& c, const std::string& service, bool active);
int cmd_rollout_history(const CtlContext& c, const std::string& id);
int cmd_rollout_command(const CtlContext& c, const std::string& verb, const std::string& id, uint64_t generation,
                        const std::string& reason);

}  // namespace tern
