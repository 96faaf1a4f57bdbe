#pragma once

// Shared by ternctl's command files; not an API.
//
// Layout: ctl.cc parses the global flags, builds one CtlContext and runs the
// command the user picked; each noun adds its subcommands from its own file
// (host_cmds.cc, service_cmds.cc, admin_cmds.cc, rollout_cmds.cc).

#include <grpcpp/grpcpp.h>
#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>

#include <functional>
#include <memory>
#include <optional>
#include <istream>
#include <ostream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/clock.h"
#include "core/words.h"
#include "ctl/ctl.h"

namespace CLI {
class App;
}

namespace tern {

// The protobuf JSON mapping with proto field names; `compact`: one line.
std::string to_json(const google::protobuf::Message& msg, bool compact = false);

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
  // A person's answers (stdin), when ternctl runs on a terminal and writes to
  // it; null for scripts, pipes and tests, which are never asked anything.
  std::istream* in = nullptr;
  // --insecure: plaintext (a coordinator that closes it wants TLS).
  bool insecure = false;
  // `out` is a terminal: live views and colour (NO_COLOR turns colour off).
  bool tty = false;

  // Sets the --timeout deadline, counted from now.
  void set_deadline(grpc::ClientContext& ctx) const;

  // Prints one line for a failed call ("ternctl: <what>: ...", with what to
  // do next) and returns the exit code it maps to.
  int rpc_error(const std::string& what, const grpc::Status& st) const;

  // Prints "ternctl: <what>: <why>" and returns kExitUsage: the request is
  // wrong before anything is sent.
  int usage_error(absl::string_view what, absl::string_view why) const;

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

  // call(), then the response: as JSON with -o json, else as `print` writes
  // it for a person (print(const Response&) writes to out, and may to err).
  // Returns the exit code for the command.
  template <typename Stub, typename Request, typename Response, typename Print>
  int show(const std::string& what, grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
           const std::type_identity_t<Request>& req, Print&& print) const {
    Response resp;
    const int rc = call(what, method, req, resp);
    if (rc != kExitOk) return rc;
    if (json) out << to_json(resp);
    else print(resp);
    return kExitOk;
  }
};

// A leaf subcommand and what runs it. Each noun file adds its own; run_ctl
// runs the one the user picked, once flags are parsed and the context built.
struct CtlCommand {
  using Run = std::function<int(const CtlContext&)>;
  CtlCommand(CLI::App* cmd_in, Run run_in, std::function<bool()> offline_in = {})
      : cmd(cmd_in), run(std::move(run_in)), offline(std::move(offline_in)) {}

  CLI::App* cmd;
  Run run;
  // Empty, or true when the command as parsed calls no coordinator
  // (`version --client`): then no channel is made and no credentials needed.
  std::function<bool()> offline;
};
using CtlCommands = std::vector<CtlCommand>;

// In the order `ternctl --help` lists them.
void add_hosts_command(CLI::App& app, CtlCommands& cmds);     // host_cmds.cc: hosts
void add_version_command(CLI::App& app, CtlCommands& cmds);   // admin_cmds.cc: version
void add_service_commands(CLI::App& app, CtlCommands& cmds);  // service_cmds.cc: service, artifact
void add_admin_commands(CLI::App& app, CtlCommands& cmds);    // admin_cmds.cc: whoami, token, audit
void add_host_commands(CLI::App& app, CtlCommands& cmds);     // host_cmds.cc: host
void add_rollout_commands(CLI::App& app, CtlCommands& cmds);  // rollout_cmds.cc: rollout

// A duration flag such as --wait; nullopt, after usage_error(what, why), when
// `text` is not a duration.
std::optional<Millis> duration_flag(const CtlContext& c, absl::string_view what, const std::string& text);

// ---- formatting shared by the command files ----

// "3m ago", "now", or "-" for an unset time; `now_ms` is Unix milliseconds.
std::string ago(const google::protobuf::Timestamp& t, int64_t now_ms);
// 1536 -> "1.5 KiB".
std::string human_bytes(uint64_t n);

// Local wall-clock time of day, "14:03:27", for progress lines.
std::string clock_time(const google::protobuf::Timestamp& t);
// Every other time ternctl prints (histories, tables, expiries): local time
// "2026-11-27 23:47:07", or "-" for an unset one. Live progress lines use
// clock_time(); -o json has the API's RFC 3339 UTC.
std::string when(const google::protobuf::Timestamp& t);

// An enum's word (core/words.h) for a table cell: "-" where it is not set.
template <class Enum>
const char* shown(Enum value) {
  return static_cast<int>(value) == 0 ? "-" : word(value);
}

}  // namespace tern
