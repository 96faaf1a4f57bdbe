// ternctl hosts, and ternctl host ...: the fleet's hosts, and one host's
// deploy, rollback, status and history.
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/clock.h"
#include "core/duration.h"
#include "core/label_selector.h"
#include "ctl/ctl_internal.h"
#include "ctl/table.h"
#include "tern/v1/fleet.grpc.pb.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;
using FleetStub = tern::v1::FleetService::Stub;

int cmd_host_cordon(const CtlContext& c, const std::string& host, bool cordoned, const std::string& reason) {
  tern::v1::CordonHostRequest req;
  req.set_host_id(host);
  req.set_cordoned(cordoned);
  req.set_reason(reason);
  auto print = [&](const tern::v1::Host& h) {
    c.out << "host " << h.host_id() << (h.cordoned() ? " cordoned: rollouts started from now on leave it out"
                                                     : " uncordoned: rollouts may take it again")
          << "; what it runs is not touched\n";
  };
  return c.show(absl::StrCat(cordoned ? "host cordon " : "host uncordon ", host), &FleetStub::CordonHost, req, print);
}

int cmd_hosts(const CtlContext& c, const std::string& selector) {
  if (auto sel = LabelSelector::parse(selector); !sel.ok()) return c.usage_error("hosts", sel.status().message());
  tern::v1::ListHostsRequest req;
  req.set_selector(selector);
  auto print = [&](const tern::v1::ListHostsResponse& resp) {
    const int64_t now = to_unix_millis(SystemClock::instance().now());
    Table t({"HOST", "STATE", "SINCE", "LAST SEEN", "VERSION", "CONNECTS", "LABELS", "DRIFT"});
    for (const auto& h : resp.hosts()) {
      Labels labels(h.labels().begin(), h.labels().end());
      // Where the host does not serve what Tern last ordered there.
      std::vector<std::string> drifts;
      for (const auto& s : h.services()) {
        if (!s.drift().empty()) drifts.push_back(absl::StrCat(s.service(), ": ", s.drift()));
      }
      t.add({h.host_id(), h.cordoned() ? absl::StrCat(word(h.state()), ", cordoned") : std::string(word(h.state())),
             ago(h.state_since(), now), ago(h.last_seen(), now),
             h.agent_version().empty() ? "-" : h.agent_version(), std::to_string(h.connect_count()),
             labels.empty() ? "-" : format_labels(labels), drifts.empty() ? "-" : absl::StrJoin(drifts, "; ")});
    }
    t.print(c.out);
    if (resp.hosts().empty()) {
      c.err << (selector.empty() ? "no hosts have registered yet\n"
                                 : absl::StrCat("no hosts match \"", selector, "\"\n"));
    }
  };
  return c.show("list hosts", &FleetStub::ListHosts, req, print);
}

// ---- one host ----

// With `usage` (host status), each running slot's CPU and memory too.
void print_slots(const std::vector<const tern::v1::ServiceStatus*>& services, std::ostream& out,
                 const google::protobuf::RepeatedPtrField<tern::v1::SlotUsage>* usage = nullptr) {
  std::vector<std::string> head{"SERVICE", "SLOT", "RELEASE", "PORT", "PID", "HEALTH", "ACTIVE", "WEIGHT"};
  if (usage) head.insert(head.end(), {"CPU", "MEMORY", "PROCS"});
  head.push_back("MESSAGE");
  Table t(head);
  for (const auto* svc : services) {
    for (const auto& sl : svc->slots()) {
      std::vector<std::string> row{svc->service(),
                                   shown(sl.color()),
                                   sl.release().version().empty() ? "-" : sl.release().version(),
                                   std::to_string(sl.port()),
                                   sl.pid() > 0 ? std::to_string(sl.pid()) : "-",
                                   shown(sl.phase()),
                                   sl.active() ? "yes" : "-",
                                   sl.weight() > 0 ? absl::StrCat(sl.weight(), "%") : "-"};
      if (usage) {
        const tern::v1::SlotUsage* u = nullptr;
        for (const auto& x : *usage) {
          if (x.service() == svc->service() && x.color() == sl.color()) u = &x;
        }
        if (u != nullptr && sl.pid() > 0) {
          row.insert(row.end(), {absl::StrFormat("%.1f%%", u->cpu_percent()), human_bytes(u->memory_bytes()),
                                 std::to_string(u->processes())});
        } else {
          row.insert(row.end(), {"-", "-", "-"});
        }
      }
      row.push_back(sl.message());
      t.add(row);
    }
  }
  t.print(out);
}

int cmd_host_history(const CtlContext& c, const std::string& host) {
  tern::v1::GetHostHistoryRequest req;
  req.set_host_id(host);
  req.set_limit(100);
  auto print = [&](const tern::v1::GetHostHistoryResponse& resp) {
    Table t({"TIME", "EVENT", "DETAIL"});
    for (const auto& e : resp.events()) t.add({when(e.time()), e.kind(), e.detail()});
    t.print(c.out);
  };
  return c.show(absl::StrCat("host history ", host), &FleetStub::GetHostHistory, req, print);
}

int cmd_host_status(const CtlContext& c, const std::string& host) {
  tern::v1::GetHostRequest req;
  req.set_host_id(host);
  auto print = [&](const tern::v1::Host& resp) {
    const int64_t now = to_unix_millis(SystemClock::instance().now());
    c.out << "host " << resp.host_id() << ": " << word(resp.state()) << " since " << ago(resp.state_since(), now)
        << ", agent " << (resp.agent_version().empty() ? "-" : resp.agent_version()) << "\n";
    if (!resp.slot_placement().empty()) c.out << "slots run in " << resp.slot_placement() << "\n";
    if (resp.cordoned()) {
      c.out << "cordoned: left out of new rollouts" << (resp.cordon_reason().empty() ? "" : " (")
            << resp.cordon_reason() << (resp.cordon_reason().empty() ? "" : ")") << "; `ternctl host uncordon "
            << resp.host_id() << "` lets it back in\n";
    }
    if (resp.services().empty()) {
      c.out << "no services on this host\n";
      return;
    }
    std::vector<const tern::v1::ServiceStatus*> svcs;
    for (const auto& sv : resp.services()) svcs.push_back(&sv);
    print_slots(svcs, c.out, &resp.usage());
    // What `host rollback` returns each service to, and any drift from
    // what Tern last ordered there.
    for (const auto& sv : resp.services()) {
      c.out << sv.service() << ": last known-good release "
            << (sv.last_good().version().empty() ? "none yet" : sv.last_good().version()) << "\n";
      if (!sv.drift().empty()) {
        c.out << sv.service() << ": drifted: " << sv.drift() << " (Tern wants " << sv.desired_version() << " at "
              << sv.desired_weight() << "%)\n";
      }
    }
  };
  return c.show(absl::StrCat("host status ", host), &FleetStub::GetHost, req, print);
}

// Starts a host operation (deploy, rollback) with --wait as its deadline and
// follows its stream: one line per step, then the outcome.
template <typename Request>
int follow_operation(const CtlContext& c, const std::string& what, Millis wait,
                     std::unique_ptr<grpc::ClientReader<tern::v1::HostOperationUpdate>> (FleetStub::*start)(
                         grpc::ClientContext*, const Request&),
                     const Request& req) {
  FleetStub stub(c.channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + wait);
  auto reader = (stub.*start)(&ctx, req);
  tern::v1::HostOperationUpdate u, last;
  bool done = false;
  while (reader->Read(&u)) {
    if (!c.json) c.out << "  " << clock_time(u.time()) << "  " << u.message() << "\n" << std::flush;
    if (u.done()) {
      done = true;
      last = u;
    }
  }
  grpc::Status st = reader->Finish();
  if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && !done) {
    c.err << "ternctl: " << what << ": still running after --wait " << format_duration(wait)
          << "; the host goes on with it: see where it is with `ternctl host status` and `ternctl host history`\n";
    return kExitTimeout;
  }
  if (!st.ok()) return c.rpc_error(what, st);
  if (!done) {
    c.err << "ternctl: " << what
          << ": the coordinator ended the stream without an outcome; check `ternctl host status`\n";
    return kExitFailed;
  }
  if (c.json) c.out << to_json(last);
  if (last.result().outcome() != tern::v1::COMMAND_OUTCOME_SUCCEEDED) {
    c.err << "ternctl: " << what << " failed: " << last.result().message() << "\n";
    return kExitFailed;
  }
  if (!c.json) {
    std::vector<const tern::v1::ServiceStatus*> svcs{&last.status()};
    print_slots(svcs, c.out);
  }
  return kExitOk;
}

struct DeployFlags {
  std::string version, wait = "15m";
  uint32_t weight = 100;
  bool no_switch = false;
  bool force = false;
};

int cmd_host_deploy(const CtlContext& c, const std::string& host, const std::string& service,
                    const DeployFlags& f) {
  if (f.version.empty()) return c.usage_error("host deploy", "--version is required");
  if (f.weight == 0 || f.weight > 100) return c.usage_error("host deploy", "--weight must be 1-100");
  const auto wait = duration_flag(c, "host deploy: --wait", f.wait);
  if (!wait) return kExitUsage;
  tern::v1::DeployHostRequest req;
  req.set_host_id(host);
  req.set_service(service);
  req.set_version(f.version);
  req.set_weight(f.weight);
  req.set_no_switch(f.no_switch);
  req.set_force(f.force);
  if (!c.json) c.out << "deploying " << service << " " << f.version << " to " << host << "\n";
  return follow_operation(c, absl::StrCat("deploy ", service, " ", f.version, " to ", host), *wait,
                          &FleetStub::DeployHost, req);
}

int cmd_host_rollback(const CtlContext& c, const std::string& host, const std::string& service,
                      const std::string& to_version, const std::string& wait, bool force) {
  const auto w = duration_flag(c, "host rollback: --wait", wait);
  if (!w) return kExitUsage;
  tern::v1::RollbackHostRequest req;
  req.set_host_id(host);
  req.set_service(service);
  req.set_force(force);
  req.set_to_version(to_version);
  if (!c.json) {
    c.out << "rolling back " << service << " on " << host
          << (to_version.empty() ? std::string(" to its last known-good release") : " to " + to_version) << "\n";
  }
  return follow_operation(c, absl::StrCat("rollback ", service, " on ", host), *w, &FleetStub::RollbackHost, req);
}

}  // namespace

void add_hosts_command(CLI::App& app, CtlCommands& cmds) {
  auto selector = std::make_shared<std::string>();
  auto* hosts = app.add_subcommand("hosts", "list the fleet's hosts and their state");
  hosts->add_option("-l,--selector", *selector, "label selector, e.g. role=web,zone!=c");
  cmds.push_back({hosts, [selector](const CtlContext& c) { return cmd_hosts(c, *selector); }});
}

constexpr const char* kForceHelp =
    "even if the host is in an active rollout of the service (the rollout records it and marks the host drifted)";

void add_host_commands(CLI::App& app, CtlCommands& cmds) {
  struct Args {
    std::string host_id, service, to_version, wait = "15m";
    DeployFlags deploy;
    bool force_rollback = false;
    std::string reason;
  };
  auto a = std::make_shared<Args>();
  auto* host = app.add_subcommand("host", "one host: deploy, roll back, status, cordon");
  host->require_subcommand(1);
  auto* deploy = host->add_subcommand("deploy", "deploy a release on one host (stage, start, probe, switch, drain)");
  deploy->add_option("host", a->host_id, "host id")->required();
  deploy->add_option("service", a->service, "service name")->required();
  deploy->add_option("--version", a->deploy.version, "version to deploy")->required();
  deploy->add_option("--weight", a->deploy.weight, "share of new connections for the new release (1-100)");
  deploy->add_flag("--no-switch", a->deploy.no_switch, "start and probe only; leave traffic where it is");
  deploy->add_option("--wait", a->deploy.wait, "give up waiting after this long (default 15m)");
  deploy->add_flag("--force", a->deploy.force, kForceHelp);
  auto* rollback =
      host->add_subcommand("rollback", "return a host to its last known-good release (a flip when it is warm)");
  rollback->add_option("host", a->host_id, "host id")->required();
  rollback->add_option("service", a->service, "service name")->required();
  rollback->add_option("--to-version", a->to_version,
                       "return to this release instead (one the host still has in a slot or on disk)");
  rollback->add_option("--wait", a->wait, "give up waiting after this long (default 15m)");
  rollback->add_flag("--force", a->force_rollback, kForceHelp);
  auto* status = host->add_subcommand("status", "slots of every service on a host");
  status->add_option("host", a->host_id, "host id")->required();
  auto* history = host->add_subcommand("history", "a host's events: connects, losses, refusals, failed hooks");
  history->add_option("host", a->host_id, "host id")->required();
  cmds.push_back({deploy, [a](const CtlContext& c) { return cmd_host_deploy(c, a->host_id, a->service, a->deploy); }});
  cmds.push_back(
      {rollback,
       [a](const CtlContext& c) { return cmd_host_rollback(c, a->host_id, a->service, a->to_version, a->wait, a->force_rollback);
       }});
  cmds.push_back({status, [a](const CtlContext& c) { return cmd_host_status(c, a->host_id); }});
  cmds.push_back({history, [a](const CtlContext& c) { return cmd_host_history(c, a->host_id); }});
  auto* cordon = host->add_subcommand("cordon", "leave a host out of rollouts started from now on (a dead or "
                                                "failing host); what it runs is not touched");
  cordon->add_option("host", a->host_id, "host id")->required();
  cordon->add_option("--reason", a->reason, "why, for its history and `hosts`");
  auto* uncordon = host->add_subcommand("uncordon", "let a cordoned host back into rollouts");
  uncordon->add_option("host", a->host_id, "host id")->required();
  cmds.push_back({cordon, [a](const CtlContext& c) { return cmd_host_cordon(c, a->host_id, true, a->reason); }});
  cmds.push_back({uncordon, [a](const CtlContext& c) { return cmd_host_cordon(c, a->host_id, false, ""); }});
}

}  // namespace tern
