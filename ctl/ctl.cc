#include "ctl/ctl.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/clock.h"
#include "core/duration.h"
#include "core/label_selector.h"
#include "core/version.h"
#include "ctl/table.h"
#include "tern/v1/fleet.grpc.pb.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;

struct Globals {
  std::string coordinator;
  std::string output = "table";
  std::string timeout = "10s";
};

std::string to_json(const google::protobuf::Message& msg) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(msg, &out, opts);
  return out;
}

// One line: what was asked, what failed, what to do.
int report_rpc_error(const std::string& what, const Globals& g, const grpc::Status& st, std::ostream& err) {
  switch (st.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      err << "ternctl: " << what << ": cannot reach the coordinator at " << g.coordinator << " ("
          << st.error_message() << "); is tern-coordinator running there? Set --coordinator or TERN_COORDINATOR.\n";
      return kExitUnavailable;
    case grpc::StatusCode::NOT_FOUND:
      err << "ternctl: " << what << ": " << st.error_message() << "\n";
      return kExitNotFound;
    case grpc::StatusCode::UNIMPLEMENTED:
      err << "ternctl: " << what << ": the coordinator at " << g.coordinator
          << " does not support this call; upgrade tern-coordinator\n";
      return kExitFailed;
    default:
      err << "ternctl: " << what << ": " << st.error_message() << "\n";
      return kExitFailed;
  }
}

std::string ago(const google::protobuf::Timestamp& t, int64_t now_ms) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  int64_t d = now_ms - TimeUtil::TimestampToMilliseconds(t);
  if (d < 0) d = 0;
  d -= d % 1000;  // whole seconds are enough for a table
  return d == 0 ? "now" : format_duration(Millis(d)) + " ago";
}

const char* state_word(tern::v1::HostState s) {
  switch (s) {
    case tern::v1::HOST_STATE_CONNECTED: return "connected";
    case tern::v1::HOST_STATE_DISCONNECTED: return "disconnected";
    case tern::v1::HOST_STATE_UNREACHABLE: return "unreachable";
    default: return "unknown";
  }
}

class Session {
 public:
  explicit Session(const Globals& g) : g_(g) {
    channel_ = grpc::CreateChannel(g.coordinator, grpc::InsecureChannelCredentials());
  }
  void deadline(grpc::ClientContext& ctx) const {
    auto d = parse_duration(g_.timeout);
    ctx.set_deadline(std::chrono::system_clock::now() + (d.ok() ? *d : Millis(10'000)));
  }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }

 private:
  const Globals& g_;
  std::shared_ptr<grpc::Channel> channel_;
};

int cmd_hosts(const Globals& g, const std::string& selector, std::ostream& out, std::ostream& err) {
  if (auto sel = LabelSelector::parse(selector); !sel.ok()) {
    err << "ternctl: hosts: " << sel.status().message() << "\n";
    return kExitUsage;
  }
  Session s(g);
  auto stub = tern::v1::FleetService::NewStub(s.channel());
  grpc::ClientContext ctx;
  s.deadline(ctx);
  tern::v1::ListHostsRequest req;
  req.set_selector(selector);
  tern::v1::ListHostsResponse resp;
  grpc::Status st = stub->ListHosts(&ctx, req, &resp);
  if (!st.ok()) return report_rpc_error("list hosts", g, st, err);
  if (g.output == "json") {
    out << to_json(resp);
    return kExitOk;
  }
  const int64_t now = to_unix_millis(SystemClock::instance().now());
  Table t({"HOST", "STATE", "SINCE", "LAST SEEN", "VERSION", "CONNECTS", "LABELS"});
  for (const auto& h : resp.hosts()) {
    Labels labels(h.labels().begin(), h.labels().end());
    t.add({h.host_id(), state_word(h.state()), ago(h.state_since(), now), ago(h.last_seen(), now),
           h.agent_version().empty() ? "-" : h.agent_version(), std::to_string(h.connect_count()),
           labels.empty() ? "-" : format_labels(labels)});
  }
  t.print(out);
  if (resp.hosts().empty()) {
    err << (selector.empty() ? "no hosts have registered yet\n"
                             : absl::StrCat("no hosts match \"", selector, "\"\n"));
  }
  return kExitOk;
}

int cmd_version(const Globals& g, bool client_only, std::ostream& out, std::ostream& err) {
  tern::v1::VersionInfo server;
  grpc::Status st;
  if (!client_only) {
    Session s(g);
    auto stub = tern::v1::FleetService::NewStub(s.channel());
    grpc::ClientContext ctx;
    s.deadline(ctx);
    st = stub->GetVersion(&ctx, tern::v1::GetVersionRequest(), &server);
  }
  if (g.output == "json") {
    std::string coordinator = !client_only && st.ok() ? to_json(server) : "null";
    while (!coordinator.empty() && coordinator.back() == '\n') coordinator.pop_back();
    out << "{\n  \"client\": \"" << kVersion << "\",\n  \"coordinator\": " << coordinator << "\n}\n";
  } else {
    out << "ternctl " << kVersion << "\n";
    if (!client_only && st.ok()) {
      out << "tern-coordinator " << server.version() << " at " << g.coordinator << " (epoch " << server.epoch()
          << ", up since " << TimeUtil::ToString(server.started()) << ")\n";
    }
  }
  if (!client_only && !st.ok()) return report_rpc_error("coordinator version", g, st, err);
  return kExitOk;
}

}  // namespace

int run_ctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Globals g;
  const char* env = std::getenv("TERN_COORDINATOR");
  g.coordinator = env && *env ? env : "127.0.0.1:7400";

  CLI::App app{"ternctl: drive tern blue/green and canary rollouts"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags may follow the subcommand: `ternctl hosts -o json`
  app.add_option("--coordinator", g.coordinator, "coordinator address (env TERN_COORDINATOR; default 127.0.0.1:7400)");
  app.add_option("-o,--output", g.output, "output format")->check(CLI::IsMember({"table", "json"}));
  app.add_option("--timeout", g.timeout, "deadline for each call (e.g. 10s)");

  std::string selector;
  auto* hosts = app.add_subcommand("hosts", "list the fleet's hosts and their state");
  hosts->add_option("-l,--selector", selector, "label selector, e.g. role=web,zone!=c");

  bool client_only = false;
  auto* version = app.add_subcommand("version", "print ternctl's and the coordinator's versions");
  version->add_flag("--client", client_only, "only ternctl's own version; do not call the coordinator");

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return kExitOk;
  } catch (const CLI::CallForAllHelp&) {
    out << app.help("", CLI::AppFormatMode::All);
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    // Help for a subcommand arrives as CallForHelp too, so only real errors get here.
    err << "ternctl: " << e.what() << " (see ternctl --help)\n";
    return kExitUsage;
  }
  if (auto d = parse_duration(g.timeout); !d.ok()) {
    err << "ternctl: --timeout: " << d.status().message() << "\n";
    return kExitUsage;
  }
  if (*hosts) return cmd_hosts(g, selector, out, err);
  if (*version) return cmd_version(g, client_only, out, err);
  err << "ternctl: no command given (see ternctl --help)\n";
  return kExitUsage;
}

}  // namespace tern
