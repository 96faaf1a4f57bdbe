// ternctl rollout ...: plan, start, status, watch, list, history and the
// operator commands.
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <memory>
#include <cmath>
#include <optional>
#include <thread>
#include <utility>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/words.h"
#include "core/backoff.h"
#include "core/duration.h"
#include "core/rollout_spec.h"
#include "absl/strings/str_format.h"
#include "ctl/ctl_internal.h"
#include "ctl/rollout_view.h"
#include "ctl/table.h"
#include "tern/v1/fleet.grpc.pb.h"
#include "tern/v1/rollout.grpc.pb.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;
using RolloutStub = tern::v1::RolloutService::Stub;
using RolloutMethod = grpc::Status (RolloutStub::*)(grpc::ClientContext*, const tern::v1::RolloutCommandRequest&,
                                                    tern::v1::Rollout*);

// The flags of every rollout subcommand; each reads the ones it has.
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
  bool plain = false;
  bool yes = false;
  std::string wait = "1h";
  std::string id, reason;
  std::string extend_by;
  bool replay = false;
  std::string host;
  uint64_t generation = 0;
  bool active_only = false;
};

// Exit code for a rollout's phase, as `watch` and `start --watch` report it.
int outcome_code(tern::v1::RolloutPhase p) {
  switch (p) {
    case tern::v1::ROLLOUT_PHASE_SUCCEEDED: return kExitOk;
    case tern::v1::ROLLOUT_PHASE_PAUSED: return kExitNeedsOperator;
    default: return kExitFailed;
  }
}

void print_metric_verdicts(const google::protobuf::RepeatedPtrField<tern::v1::MetricVerdict>& metrics,
                           std::ostream& out);

// A wave's canary analysis: the verdict, then per metric green's and blue's
// counts, the ratio of their rates with its interval, and the judge's words.
void print_analysis(const tern::v1::WaveAnalysis& a, std::ostream& out) {
  out << "analysis of wave " << a.wave() + 1 << ": " << a.verdict() << " (" << a.hosts_counted() << " host(s) counted";
  if (a.hosts_failed() > 0) out << ", " << a.hosts_failed() << " failed on their own counts";
  out << "; " << a.intervals() << " interval(s)";
  if (a.has_until() && (a.verdict() == "RUNNING" || a.verdict() == "INCONCLUSIVE")) {
    out << "; horizon " << when(a.until());
  }
  out << ")\n";
  if (!a.message().empty()) out << "  " << a.message() << "\n";
  if (a.expected_share() > 0 && (a.connections() > 0 || a.canary_share() > 0)) {
    out << "  split: weight " << absl::StrFormat("%.0f%%", 100 * a.expected_share()) << " of new connections;";
    if (a.connections() > 0) {
      out << " green got " << absl::StrFormat("%.1f%%", 100 * a.connection_share()) << " of " << a.connections()
          << " (counted by the hosts' NAT)";
    }
    if (a.canary_share() > 0) {
      out << (a.connections() > 0 ? "," : "") << " " << absl::StrFormat("%.1f%%", 100 * a.canary_share())
          << " of the requests";
    }
    out << "\n";
    if (!a.split_warning().empty()) {
      out << "  warning: " << a.split_warning()
          << " (is something else rewriting this port's NAT rules, or is the split not applied?)\n";
    }
  }
  print_metric_verdicts(a.metrics(), out);
}

void print_metric_verdicts(const google::protobuf::RepeatedPtrField<tern::v1::MetricVerdict>& metrics,
                           std::ostream& out) {
  if (metrics.empty()) return;
  Table t({"METRIC", "VERDICT", "GREEN/BLUE", "INTERVAL", "GREEN BAD/TOTAL", "BLUE BAD/TOTAL", "THRESHOLD"});
  for (const auto& m : metrics) {
    t.add({m.name(), m.verdict(), absl::StrFormat("%.2fx", m.ratio()),
           absl::StrFormat("%.2f-%.2f", m.ratio_low(), m.ratio_high()),
           absl::StrCat(m.canary_bad(), "/", m.canary_total()), absl::StrCat(m.baseline_bad(), "/", m.baseline_total()),
           m.threshold() > 0 ? absl::StrFormat("%gs", m.threshold()) : std::string("-")});
  }
  t.print(out);
}

void print_rollout(const tern::v1::Rollout& r, std::ostream& out) {
  out << "rollout " << r.id() << ": " << r.spec().service() << " -> " << r.spec().release().version() << ", "
      << shown(r.phase());
  if (r.phase() == tern::v1::ROLLOUT_PHASE_RUNNING) {
    out << ", wave " << r.current_wave() + 1 << "/" << r.spec().waves_size() << " " << shown(r.wave_step());
  }
  out << " (generation " << r.generation() << ", " << r.failed_hosts() << " failed of " << r.total_hosts() << ")\n";
  if (!r.message().empty()) out << "  " << r.message() << "\n";
  if (r.has_analysis()) print_analysis(r.analysis(), out);
  Table t({"WAVE", "HOST", "STATE", "FROM", "MESSAGE"});
  for (const auto& h : r.hosts()) {
    t.add({std::to_string(h.wave() + 1), h.host_id(), shown(h.state()),
           h.previous_version().empty() ? "-" : h.previous_version(), h.message()});
  }
  t.print(out);
}

// --waves and --bake: every wave bakes for the same time.
absl::Status parse_waves(const std::string& text, const std::string& bake, tern::v1::RolloutSpec& spec) {
  Millis bake_ms{0};
  if (!bake.empty()) {
    auto d = parse_duration(bake);
    if (!d.ok()) return absl::InvalidArgumentError(absl::StrCat("--bake: ", d.status().message()));
    bake_ms = *d;
  }
  auto waves = parse_wave_list(text);
  if (!waves.ok()) return absl::InvalidArgumentError(absl::StrCat("--waves: ", waves.status().message()));
  for (auto& w : *waves) {
    *w.mutable_bake() = TimeUtil::MillisecondsToDuration(bake_ms.count());
    *spec.add_waves() = std::move(w);
  }
  return absl::OkStatus();
}

absl::StatusOr<tern::v1::RolloutSpec> spec_from(const RolloutFlags& f) {
  if (!f.file.empty()) {
    auto s = load_rollout_spec_file(f.file);
    if (!s.ok()) return s.status();
    return s;
  }
  if (f.service.empty() || f.version.empty()) {
    return absl::InvalidArgumentError("give -f SPEC.yaml, or SERVICE and --version");
  }
  tern::v1::RolloutSpec spec;
  spec.set_service(f.service);
  spec.mutable_release()->set_version(f.version);
  spec.set_selector(f.selector);
  if (auto st = parse_waves(f.waves, f.bake, spec); !st.ok()) return st;
  spec.set_max_parallel(f.max_parallel);
  spec.mutable_failure_budget()->set_max_failed_hosts(f.max_failed);
  if (f.on_failure == "pause") spec.set_on_failure(tern::v1::ON_FAILURE_PAUSE);
  spec.set_spread_label(f.spread);
  apply_rollout_defaults(spec);
  if (auto st = validate_rollout_spec(spec); !st.ok()) return st;
  return spec;
}

int cmd_rollout_plan(const CtlContext& c, const RolloutFlags& f) {
  auto spec = spec_from(f);
  if (!spec.ok()) return c.usage_error("rollout plan", spec.status().message());
  tern::v1::StartRolloutRequest req;
  *req.mutable_spec() = *spec;
  auto print = [&](const tern::v1::RolloutPlan& plan) {
    c.out << "plan for " << spec->service() << " -> " << spec->release().version() << " (nothing is changed)\n";
    Table t({"WAVE", "SIZE", "BAKE", "GATE", "WEIGHT", "HOSTS"});
    for (const auto& w : plan.waves()) {
      const auto& sw = spec->waves(static_cast<int>(w.index()));
      t.add({std::to_string(w.index() + 1),
             sw.size_case() == tern::v1::Wave::kHosts ? absl::StrCat(sw.hosts(), " host(s)")
                                                      : absl::StrCat(sw.percent(), "%"),
             format_duration(Millis(TimeUtil::DurationToMilliseconds(sw.bake()))),
             sw.gate() == tern::v1::WAVE_GATE_MANUAL ? "manual" : "auto", absl::StrCat(sw.weight(), "%"),
             w.host_ids().empty() ? "-" : absl::StrJoin(w.host_ids(), ",")});
    }
    t.print(c.out);
    for (const auto& w : plan.warnings()) c.err << "warning: " << w << "\n";
  };
  return c.show(absl::StrCat("rollout plan ", spec->service()), &RolloutStub::PlanRollout, req, print);
}

// The live view of `rollout watch` on a terminal: redrawn in place every
// second (the bake countdown) and on every event, from the rollout itself
// and, every few seconds, the hosts that are not connected.
class LiveView {
 public:
  LiveView(const CtlContext& c, std::string id) : c_(c), id_(std::move(id)) {
    const char* no_color = std::getenv("NO_COLOR");
    color_ = no_color == nullptr || *no_color == '\0';
    winsize ws{};
    if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) width_ = ws.ws_col;
    thread_ = std::thread([this] { run(); });
  }
  ~LiveView() { stop(); }

  void on_event(const tern::v1::RolloutEvent& e) {
    std::lock_guard lock(mu_);
    if (e.kind() != tern::v1::ROLLOUT_EVENT_KIND_END) {
      for (auto& line : log_.add(e)) push_recent(std::move(line));
    }
    refresh_ = true;
    cv_.notify_all();
  }

  // The last draw, from the rollout as it ends.
  void stop() {
    {
      std::lock_guard lock(mu_);
      if (stopped_) return;
      stopped_ = true;
      for (auto& line : log_.flush()) push_recent(std::move(line));
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    fetch();
    std::lock_guard lock(mu_);
    draw();
  }

 private:
  static constexpr size_t kRecent = 5;

  void push_recent(std::string line) {
    recent_.push_back(std::move(line));
    if (recent_.size() > kRecent) recent_.erase(recent_.begin());
  }

  void fetch() {
    tern::v1::GetRolloutRequest g;
    g.set_id(id_);
    tern::v1::Rollout r;
    if (c_.unary(&RolloutStub::GetRollout, g, r).ok()) {
      std::lock_guard lock(mu_);
      rollout_ = std::move(r);
      have_ = true;
    }
    if (++fetches_ % 5 != 1) return;  // hosts every 5 s
    tern::v1::ListHostsRequest req;
    tern::v1::ListHostsResponse resp;
    if (!c_.unary(&tern::v1::FleetService::Stub::ListHosts, req, resp).ok()) return;
    std::map<std::string, AwayHost> away;
    for (const auto& h : resp.hosts()) {
      if (h.state() == tern::v1::HOST_STATE_CONNECTED) continue;
      away[h.host_id()] = AwayHost{shown(h.state()), TimeUtil::TimestampToMilliseconds(h.state_since())};
    }
    std::lock_guard lock(mu_);
    away_ = std::move(away);
  }

  // Under mu_.
  void draw() {
    if (!have_) return;
    std::string text;
    if (drawn_ > 0) text = absl::StrCat("\x1b[", drawn_, "F\x1b[J");  // back to the view's start, cleared
    auto lines = rollout_view(rollout_, to_unix_millis(SystemClock::instance().now()), recent_, away_, color_);
    for (const auto& line : lines) absl::StrAppend(&text, fit(line), "\n");
    c_.out << text << std::flush;
    drawn_ = lines.size();
  }

  // Cut to the terminal's width (escape sequences take none), so that no
  // line wraps and the next redraw goes back exactly over this one.
  std::string fit(const std::string& line) const {
    std::string out;
    size_t visible = 0;
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '\x1b') {
        const size_t end = line.find('m', i);
        if (end == std::string::npos) break;
        out += line.substr(i, end - i + 1);
        i = end;
        continue;
      }
      if ((static_cast<unsigned char>(line[i]) & 0xC0) != 0x80 && ++visible >= width_) continue;
      out += line[i];
    }
    if (color_) out += "\x1b[0m";
    return out;
  }

  void run() {
    for (;;) {
      fetch();
      std::unique_lock lock(mu_);
      draw();
      cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopped_ || refresh_; });
      refresh_ = false;
      if (stopped_) return;
    }
  }

  const CtlContext& c_;
  const std::string id_;
  bool color_ = true;
  size_t width_ = 100;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopped_ = false, refresh_ = false, have_ = false;
  tern::v1::Rollout rollout_;
  std::vector<std::string> recent_;
  std::map<std::string, AwayHost> away_;
  EventLog log_;
  size_t drawn_ = 0;
  uint64_t fetches_ = 0;
  std::thread thread_;
};

int cmd_rollout_watch(const CtlContext& c, const std::string& id, Millis wait, bool plain) {
  std::unique_ptr<LiveView> live;
  if (!c.json && !plain && c.tty) live = std::make_unique<LiveView>(c, id);
  EventLog log;
  auto stub = tern::v1::RolloutService::NewStub(c.channel);
  const auto deadline = std::chrono::system_clock::now() + wait;
  tern::v1::Rollout last;
  uint64_t after = 0;
  bool any = false;
  bool done = false;
  // Is the rollout still where this (possibly replayed) event left it? The
  // stream replays the journal first, and a pause there may be long over.
  auto still_current = [&](const tern::v1::Rollout& r) {
    grpc::ClientContext gctx;
    gctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    tern::v1::GetRolloutRequest g;
    g.set_id(id);
    tern::v1::Rollout now;
    return !stub->GetRollout(&gctx, g, &now).ok() || now.generation() == r.generation();
  };
  Backoff backoff(BackoffPolicy{.initial = Millis(200), .max = Millis(5'000)});
  grpc::Status st;
  while (!done) {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline);
    tern::v1::WatchRolloutRequest req;
    req.set_id(id);
    req.set_after_sequence(after);
    auto reader = stub->WatchRollout(&ctx, req);
    tern::v1::RolloutEvent e;
    while (reader->Read(&e)) {
      any = true;
      backoff.reset();
      last = e.rollout();
      if (e.sequence() > 0) after = e.sequence();
      if (c.json) {
        std::string line = to_json(e, /*compact=*/true);
        c.out << line << "\n" << std::flush;
      } else if (live) {
        live->on_event(e);
      } else if (e.kind() != tern::v1::ROLLOUT_EVENT_KIND_END) {
        for (const auto& line : log.add(e)) c.out << line << "\n";
        c.out << std::flush;
      }
      // Stop and hand back to a person when it needs one.
      const bool needs_person = e.kind() == tern::v1::ROLLOUT_EVENT_KIND_PAUSED ||
                                e.kind() == tern::v1::ROLLOUT_EVENT_KIND_AWAITING_APPROVAL;
      if (needs_person && (last.phase() == tern::v1::ROLLOUT_PHASE_PAUSED ||
                           last.wave_step() == tern::v1::WAVE_STEP_AWAITING_APPROVAL) &&
          still_current(last)) {
        ctx.TryCancel();
        done = true;
        break;
      }
    }
    st = reader->Finish();
    if (done || st.ok()) break;
    // The coordinator restarted or the network dropped: pick up after the
    // last event seen, until the --wait deadline.
    const Millis delay = backoff.next_delay();
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE ||
        std::chrono::system_clock::now() + delay >= deadline) {
      break;
    }
    if (!c.json && !live) c.err << "ternctl: lost the coordinator (" << st.error_message() << "); reconnecting\n";
    std::this_thread::sleep_for(delay);
  }
  if (live) {
    live->stop();
  } else if (!c.json) {
    for (const auto& line : log.flush()) c.out << line << "\n";
  }
  if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && any) {
    c.err << "ternctl: rollout watch " << id << ": still " << word(last.phase()) << " after --wait "
          << format_duration(wait) << "; it goes on: `ternctl rollout watch " << id << "` follows it again\n";
    return kExitTimeout;
  }
  if (!st.ok() && st.error_code() != grpc::StatusCode::CANCELLED) {
    return c.rpc_error(absl::StrCat("rollout watch ", id), st);
  }
  if (!any) {
    c.err << "ternctl: rollout watch " << id << ": no events\n";
    return kExitFailed;
  }
  if (!c.json && !live) {
    // Events carry the rollout's summary; the per-host table comes from the
    // rollout itself.
    tern::v1::GetRolloutRequest g;
    g.set_id(id);
    tern::v1::Rollout full;
    print_rollout(c.unary(&RolloutStub::GetRollout, g, full).ok() ? full : last, c.out);
  }
  if (last.phase() == tern::v1::ROLLOUT_PHASE_RUNNING &&
      last.wave_step() == tern::v1::WAVE_STEP_AWAITING_APPROVAL) {
    c.err << "rollout " << id << " waits for approval: ternctl rollout promote " << id << "\n";
    return kExitNeedsOperator;
  }
  return outcome_code(last.phase());
}

// Why a plan deserves a second look before it starts, or "" when it does not.
std::string bold(const tern::v1::RolloutSpec& spec, const tern::v1::RolloutPlan& plan) {
  int total = 0;
  for (const auto& w : plan.waves()) total += w.host_ids_size();
  if (plan.waves_size() > 0 && plan.waves(0).host_ids_size() * 2 > total) {
    return absl::StrCat("the first wave already takes ", plan.waves(0).host_ids_size(), " of ", total, " hosts");
  }
  bool bakes = false;
  for (const auto& w : spec.waves()) bakes = bakes || TimeUtil::DurationToMilliseconds(w.bake()) > 0;
  if (!bakes) return "no wave bakes (--bake), so nothing is watched before the next wave starts";
  return "";
}

int cmd_rollout_start(const CtlContext& c, const RolloutFlags& f) {
  const auto wait = duration_flag(c, "--wait", f.wait);
  if (!wait) return kExitUsage;
  auto spec = spec_from(f);
  if (!spec.ok()) return c.usage_error("rollout start", spec.status().message());
  tern::v1::StartRolloutRequest req;
  *req.mutable_spec() = *spec;
  // The plan first: its warnings come before anything starts, and a person
  // at a terminal confirms a plan that would reach most hosts at once. A
  // plan that fails is left to StartRollout, whose refusal is the one that
  // counts (and is audited).
  tern::v1::RolloutPlan plan;
  const bool planned = c.unary(&RolloutStub::PlanRollout, req, plan).ok();
  for (const auto& w : plan.warnings()) c.err << "warning: " << w << "\n";
  if (const std::string why = planned ? bold(*spec, plan) : ""; !why.empty() && !f.yes && c.in != nullptr) {
    c.err << why << ". Start rolling " << spec->service() << " out to " << spec->release().version()
          << "? [y/N] " << std::flush;
    std::string answer;
    std::getline(*c.in, answer);
    if (answer != "y" && answer != "yes") {
      c.err << "ternctl: rollout start " << spec->service() << ": not started (`ternctl rollout plan` shows "
            << "the waves; --yes starts without asking)\n";
      return kExitFailed;
    }
  }
  tern::v1::Rollout r;
  const int rc = c.call(absl::StrCat("rollout start ", spec->service()), &RolloutStub::StartRollout, req, r);
  if (rc != kExitOk) return rc;
  if (!f.watch) {
    if (c.json) c.out << to_json(r);
    else c.out << "started rollout " << r.id() << " (" << r.total_hosts() << " hosts in " << r.spec().waves_size()
               << " waves); follow it with: ternctl rollout watch " << r.id() << "\n";
    return kExitOk;
  }
  if (!c.json) c.out << "started rollout " << r.id() << "\n";
  return cmd_rollout_watch(c, r.id(), *wait, f.plain);
}

int cmd_rollout_status(const CtlContext& c, const std::string& id) {
  tern::v1::GetRolloutRequest req;
  req.set_id(id);
  auto print = [&](const tern::v1::Rollout& r) { print_rollout(r, c.out); };
  return c.show(absl::StrCat("rollout status ", id), &RolloutStub::GetRollout, req, print);
}

int cmd_rollout_list(const CtlContext& c, const std::string& service, bool active) {
  tern::v1::ListRolloutsRequest req;
  req.set_service(service);
  req.set_active_only(active);
  auto print = [&](const tern::v1::ListRolloutsResponse& resp) {
    Table t({"ROLLOUT", "SERVICE", "RELEASE", "PHASE", "WAVE", "FAILED", "HOSTS", "MESSAGE"});
    for (const auto& r : resp.rollouts()) {
      t.add({r.id(), r.spec().service(), r.spec().release().version(), shown(r.phase()),
             absl::StrCat(r.current_wave() + 1, "/", r.spec().waves_size()), std::to_string(r.failed_hosts()),
             std::to_string(r.total_hosts()), r.message()});
    }
    t.print(c.out);
  };
  return c.show("rollout list", &RolloutStub::ListRollouts, req, print);
}

int cmd_rollout_history(const CtlContext& c, const std::string& id) {
  tern::v1::GetRolloutRequest req;
  req.set_id(id);
  auto print = [&](const tern::v1::RolloutHistory& resp) {
    for (const auto& e : resp.events()) {
      c.out << when(e.time()) << "  " << word(e.kind()) << ": " << e.message() << "\n";
    }
  };
  return c.show(absl::StrCat("rollout history ", id), &RolloutStub::GetRolloutHistory, req, print);
}

// A command on rollout `id`, fenced on `generation` (0: on what the rollout
// is now), with `extend_by` for extend; prints the rollout it leaves.
int send_rollout_command(const CtlContext& c, const std::string& what, const std::string& id, uint64_t generation,
                         const std::string& reason, RolloutMethod method, std::optional<Millis> extend_by = {}) {
  if (generation == 0) {
    tern::v1::GetRolloutRequest g;
    g.set_id(id);
    tern::v1::Rollout cur;
    const int rc = c.call(what, &RolloutStub::GetRollout, g, cur);
    if (rc != kExitOk) return rc;
    generation = cur.generation();
  }
  tern::v1::RolloutCommandRequest req;
  req.set_id(id);
  req.set_generation(generation);
  req.set_reason(reason);
  if (extend_by) *req.mutable_extend_by() = TimeUtil::MillisecondsToDuration(extend_by->count());
  auto print = [&](const tern::v1::Rollout& r) { print_rollout(r, c.out); };
  return c.show(what, method, req, print);
}

int cmd_rollout_command(const CtlContext& c, const std::string& verb, const std::string& id, uint64_t generation,
                        const std::string& reason) {
  const RolloutMethod method = verb == "pause"     ? &RolloutStub::PauseRollout
                               : verb == "resume"  ? &RolloutStub::ResumeRollout
                               : verb == "promote" ? &RolloutStub::PromoteRollout
                               : verb == "abort"   ? &RolloutStub::AbortRollout
                                                   : &RolloutStub::RollbackRollout;
  return send_rollout_command(c, absl::StrCat("rollout ", verb, " ", id), id, generation, reason, method);
}

int cmd_rollout_extend(const CtlContext& c, const std::string& id, const std::string& by, uint64_t generation,
                       const std::string& reason) {
  const std::string what = absl::StrCat("rollout extend ", id, " ", by);
  auto d = parse_duration(by);
  if (!d.ok()) {
    c.err << "ternctl: " << what << ": " << d.status().message() << " (e.g. 15m)\n";
    return kExitUsage;
  }
  return send_rollout_command(c, what, id, generation, reason, &RolloutStub::ExtendRollout, *d);
}

int cmd_rollout_analysis(const CtlContext& c, const std::string& id, bool replay, const std::string& host) {
  const std::string what = absl::StrCat("rollout analysis ", id);
  if (!host.empty() && !replay) {
    tern::v1::GetRolloutAnalysisRequest req;
    req.set_id(id);
    req.set_host(host);
    auto print = [&](const tern::v1::RolloutAnalysisReport& rep) {
      c.out << host << " in the analysis of wave " << rep.current().wave() + 1 << ", on its own counts:\n";
      print_metric_verdicts(rep.host_metrics(), c.out);
      for (const auto& m : rep.host_metrics()) c.out << "  " << m.name() << ": " << m.reason() << "\n";
    };
    return c.show(what, &RolloutStub::GetRolloutAnalysis, req, print);
  }
  if (replay) {
    tern::v1::GetRolloutAnalysisRequest req;
    req.set_id(id);
    req.set_replay(true);
    auto print = [&](const tern::v1::RolloutAnalysisReport& rep) {
      c.out << "replayed " << rep.samples() << " stored sample(s)\n";
      if (rep.replayed_size() == 0) c.out << "  no analyzed wave has stored counts\n";
      for (const auto& v : rep.replayed()) {
        c.out << when(v.time()) << "  wave " << v.wave() + 1 << "  "
              << (v.host().empty() ? v.verdict() : absl::StrCat(v.host(), " ", v.verdict())) << ": " << v.message()
              << "\n";
      }
    };
    return c.show(what, &RolloutStub::GetRolloutAnalysis, req, print);
  }
  tern::v1::GetRolloutRequest req;
  req.set_id(id);
  tern::v1::Rollout r;
  const int rc = c.call(what, &RolloutStub::GetRollout, req, r);
  if (rc != kExitOk) return rc;
  if (!r.has_analysis()) {
    c.err << "ternctl: rollout " << id << " has no canary analysis (no wave of its spec has analyze: or the wave "
          << "being analyzed has not finished deploying)\n";
    return kExitFailed;
  }
  if (c.json) {
    c.out << to_json(r.analysis());
  } else {
    print_analysis(r.analysis(), c.out);
    for (const auto& m : r.analysis().metrics()) c.out << "  " << m.name() << ": " << m.reason() << "\n";
  }
  return kExitOk;
}

}  // namespace

void add_rollout_commands(CLI::App& app, CtlCommands& cmds) {
  auto f = std::make_shared<RolloutFlags>();
  auto* rollout = app.add_subcommand("rollout", "fleet-wide rollouts in waves");
  rollout->require_subcommand(1);
  auto add_spec_flags = [&f](CLI::App* cmd) {
    cmd->add_option("-f,--file", f->file, "rollout spec YAML (see examples/rollout.yaml)");
    cmd->add_option("service", f->service, "service (without -f)");
    cmd->add_option("--version", f->version, "release to roll out (without -f)");
    cmd->add_option("--waves", f->waves, "wave sizes, cumulative: hosts or percent (default 1,10%,50%,100%)");
    cmd->add_option("--bake", f->bake, "bake time after each wave (e.g. 2m)");
    cmd->add_option("-l,--selector", f->selector, "only hosts matching this label selector");
    cmd->add_option("--max-parallel", f->max_parallel, "hosts deploying at once in a wave (0: all)");
    cmd->add_option("--max-failed", f->max_failed, "hosts that may fail before on-failure applies (default 0)");
    cmd->add_option("--on-failure", f->on_failure, "rollback (default) or pause")
        ->check(CLI::IsMember({"rollback", "pause"}));
    cmd->add_option("--spread", f->spread, "label whose values early waves spread across (e.g. zone)");
  };
  auto* plan = rollout->add_subcommand("plan", "dry run: which hosts go in which wave");
  add_spec_flags(plan);
  auto* start = rollout->add_subcommand("start", "start a rollout");
  add_spec_flags(start);
  start->add_flag("--watch", f->watch, "follow it until it ends (exit code = outcome)");
  start->add_flag("-y,--yes", f->yes,
                  "start without asking, on a terminal, when the first wave takes most hosts or no wave bakes");
  start->add_option("--wait", f->wait, "with --watch: give up after this long (default 1h)");
  start->add_flag("--plain", f->plain, "with --watch: the event log, not the live view (the default off a terminal)");
  auto* watch = rollout->add_subcommand("watch", "follow a rollout; exits with its outcome");
  watch->add_option("id", f->id, "rollout id")->required();
  watch->add_option("--wait", f->wait, "give up after this long (default 1h)");
  watch->add_flag("--plain", f->plain, "the event log, not the live view (the default off a terminal)");
  auto* status = rollout->add_subcommand("status", "a rollout and its hosts");
  status->add_option("id", f->id, "rollout id")->required();
  auto* list = rollout->add_subcommand("list", "rollouts, newest first");
  list->add_option("--service", f->service, "only this service's");
  list->add_flag("--active", f->active_only, "only those not finished");
  auto* history = rollout->add_subcommand("history", "every event of a rollout");
  history->add_option("id", f->id, "rollout id")->required();
  auto* analysis = rollout->add_subcommand("analysis", "the current wave's canary analysis: verdicts and counts");
  analysis->add_option("id", f->id, "rollout id")->required();
  analysis->add_flag("--replay", f->replay, "recompute every verdict of every analyzed wave from the stored counts");
  analysis->add_option("--host", f->host, "one host's own counts and verdicts in the current wave");
  auto* extend = rollout->add_subcommand("extend", "judge the current wave's canary longer (the same test)");
  extend->add_option("id", f->id, "rollout id")->required();
  extend->add_option("duration", f->extend_by, "how much longer, e.g. 15m")->required();
  extend->add_option("--generation", f->generation, "refuse unless the rollout is at this generation (default: current)");
  extend->add_option("--reason", f->reason, "recorded in the history");
  cmds.push_back({analysis, [f](const CtlContext& c) { return cmd_rollout_analysis(c, f->id, f->replay, f->host); }});
  cmds.push_back({extend, [f](const CtlContext& c) {
                    return cmd_rollout_extend(c, f->id, f->extend_by, f->generation, f->reason);
                  }});
  cmds.push_back({plan, [f](const CtlContext& c) { return cmd_rollout_plan(c, *f); }});
  cmds.push_back({start, [f](const CtlContext& c) { return cmd_rollout_start(c, *f); }});
  cmds.push_back({watch, [f](const CtlContext& c) {
                    const auto wait = duration_flag(c, "--wait", f->wait);
                    return wait ? cmd_rollout_watch(c, f->id, *wait, f->plain) : kExitUsage;
                  }});
  cmds.push_back({status, [f](const CtlContext& c) { return cmd_rollout_status(c, f->id); }});
  cmds.push_back({list, [f](const CtlContext& c) { return cmd_rollout_list(c, f->service, f->active_only); }});
  cmds.push_back({history, [f](const CtlContext& c) { return cmd_rollout_history(c, f->id); }});
  const std::pair<const char*, const char*> verbs[] = {
      {"pause", "stop starting new deploys"},
      {"resume", "continue a paused rollout"},
      {"promote", "pass the current wave's gate, cut its bake short, or accept its canary analysis"},
      {"abort", "stop where it is; hosts keep what they run"},
      {"rollback", "flip every host that got the new release back"}};
  for (const auto& [verb, help] : verbs) {
    auto* cmd = rollout->add_subcommand(verb, help);
    cmd->add_option("id", f->id, "rollout id")->required();
    cmd->add_option("--generation", f->generation,
                    "refuse unless the rollout is at this generation (default: current)");
    cmd->add_option("--reason", f->reason, "recorded in the history");
    cmds.push_back({cmd, [f, verb = std::string(verb)](const CtlContext& c) {
                      return cmd_rollout_command(c, verb, f->id, f->generation, f->reason);
                    }});
  }
}

}  // namespace tern
