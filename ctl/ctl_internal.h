#pragma once

// Shared by ternctl's command files; not an API.

#include <grpcpp/grpcpp.h>
#include <google/protobuf/message.h>

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "core/clock.h"
#include "ctl/ctl.h"

namespace tern {

// The protobuf JSON mapping with proto field names; `compact`: one line.
std::string to_json(const google::protobuf::Message& msg, bool compact = false);

struct CtlContext {
  std::ostream& out;
  std::ostream& err;
  bool json = false;
  std::shared_ptr<grpc::Channel> channel;
  std::function<void(grpc::ClientContext&)> deadline;
  // Prints one line for a failed call and returns the exit code.
  std::function<int(const std::string& what, const grpc::Status& st)> rpc_error;
};

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
