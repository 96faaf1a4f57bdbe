#include "agent/service_supervisor.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/duration.h"
#include "core/grpc_status.h"
#include "core/status_fmt.h"
#include <google/protobuf/util/time_util.h>

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;
using tern::v1::SlotColor;
using tern::v1::SlotPhase;

Millis millis(const google::protobuf::Duration& d) { return Millis(TimeUtil::DurationToMilliseconds(d)); }

// Last lines of a slot's log, for an error message about why it died.
std::string log_tail(const std::string& path, std::size_t max_lines = 3) {
  std::ifstream in(path);
  std::deque<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    lines.push_back(line.size() > 200 ? line.substr(0, 200) : line);
    if (lines.size() > max_lines) lines.pop_front();
  }
  std::string out;
  for (const auto& l : lines) absl::StrAppend(&out, out.empty() ? "" : " | ", l);
  return out;
}

}  // namespace

SlotColor other(SlotColor c) {
  return c == tern::v1::SLOT_COLOR_BLUE ? tern::v1::SLOT_COLOR_GREEN : tern::v1::SLOT_COLOR_BLUE;
}

const char* color_name(SlotColor c) {
  switch (c) {
    case tern::v1::SLOT_COLOR_BLUE: return "blue";
    case tern::v1::SLOT_COLOR_GREEN: return "green";
    default: return "none";
  }
}

ServiceSupervisor::ServiceSupervisor(tern::v1::ServiceState state, SupervisorDeps deps)
    : deps_(std::move(deps)), name_(state.spec().name()), state_(std::move(state)) {
  state_.mutable_blue()->set_color(tern::v1::SLOT_COLOR_BLUE);
  state_.mutable_green()->set_color(tern::v1::SLOT_COLOR_GREEN);
}

ServiceSupervisor::~ServiceSupervisor() { shutdown(); }

tern::v1::SlotState& ServiceSupervisor::slot(SlotColor color) {
  return color == tern::v1::SLOT_COLOR_GREEN ? *state_.mutable_green() : *state_.mutable_blue();
}

uint16_t ServiceSupervisor::slot_port(SlotColor color) const {
  if (state_.spec().ports_size() == 0) return 0;
  const auto& p = state_.spec().ports(0);
  return static_cast<uint16_t>(color == tern::v1::SLOT_COLOR_GREEN ? p.green_port() : p.blue_port());
}

bool ServiceSupervisor::running(const tern::v1::SlotState& s) const {
  return s.pid() > 0 && s.phase() != tern::v1::SLOT_PHASE_STOPPED && s.phase() != tern::v1::SLOT_PHASE_CRASHED;
}

void ServiceSupervisor::save(const std::string& operation) {
  {
    std::lock_guard lock(mu_);
    state_.set_operation(operation);
  }
  if (deps_.persist) {
    if (auto st = deps_.persist(); !st.ok()) spdlog::error("{}: cannot persist agent state: {}", name_, st.message());
  }
}

void ServiceSupervisor::event(const std::string& kind, const std::string& message) {
  spdlog::info("{}: {}", name_, message);
  if (!deps_.emit) return;
  tern::v1::AgentEvent e;
  e.set_service(name_);
  e.set_kind(kind);
  e.set_message(message);
  *e.mutable_status() = status();
  deps_.emit(e);
}

tern::v1::ServiceState ServiceSupervisor::snapshot() const {
  std::lock_guard lock(mu_);
  return state_;
}

bool ServiceSupervisor::removed() const {
  std::lock_guard lock(mu_);
  return removed_;
}

tern::v1::ServiceStatus ServiceSupervisor::status() const {
  std::lock_guard lock(mu_);
  tern::v1::ServiceStatus out;
  out.set_service(name_);
  out.set_spec_generation(state_.spec_generation());
  const uint32_t w = state_.active_weight() == 0 ? 100 : state_.active_weight();
  for (const auto* s : {&state_.blue(), &state_.green()}) {
    auto* o = out.add_slots();
    o->set_color(s->color());
    o->set_phase(s->phase() == tern::v1::SLOT_PHASE_UNSPECIFIED ? tern::v1::SLOT_PHASE_EMPTY : s->phase());
    *o->mutable_release() = s->release();
    o->set_port(slot_port(s->color()));
    o->set_pid(s->pid());
    const bool active = state_.active() == s->color();
    o->set_active(active);
    o->set_weight(state_.active() == tern::v1::SLOT_COLOR_UNSPECIFIED ? 0 : (active ? w : 100 - w));
    o->set_message(s->message());
  }
  return out;
}

absl::Status ServiceSupervisor::set_mapping(SlotColor active, uint32_t weight) {
  tern::v1::ServiceState next;
  {
    std::lock_guard lock(mu_);
    next = state_;
  }
  next.set_active(active);
  next.set_active_weight(weight);
  auto st = deps_.traffic->set_routes(name_, routes_for(next));
  if (!st.ok()) return st;
  {
    std::lock_guard lock(mu_);
    state_.set_active(active);
    state_.set_active_weight(weight);
  }
  return absl::OkStatus();
}

absl::Status ServiceSupervisor::recover() {
  for (SlotColor c : {tern::v1::SLOT_COLOR_BLUE, tern::v1::SLOT_COLOR_GREEN}) {
    std::lock_guard lock(mu_);
    auto& s = slot(c);
    if (s.pid() <= 0) continue;
    if (deps_.launcher->recover(handle(s))) {
      spdlog::info("{}: adopted {} slot (pid {}, release {}) without restarting it", name_, color_name(c), s.pid(),
                   s.release().version());
      if (s.phase() == tern::v1::SLOT_PHASE_DRAINING) s.set_phase(tern::v1::SLOT_PHASE_HEALTHY);
    } else {
      spdlog::warn("{}: {} slot (pid {}) is gone after the agent restart", name_, color_name(c), s.pid());
      s.set_pid(0);
      s.set_start_time(0);
      if (s.phase() != tern::v1::SLOT_PHASE_STOPPED) {
        s.set_phase(tern::v1::SLOT_PHASE_CRASHED);
        s.set_message("exited while the agent was down");
      }
    }
  }
  std::string interrupted;
  {
    std::lock_guard lock(mu_);
    interrupted = state_.operation();
  }
  if (!interrupted.empty()) {
    spdlog::warn("{}: the agent restarted during \"{}\"; continuing from the recorded state", name_, interrupted);
  }
  // Whatever was recorded is what the host must serve: exactly one mapping.
  tern::v1::ServiceState snap = snapshot();
  auto st = deps_.traffic->set_routes(name_, routes_for(snap));
  save("");
  if (!interrupted.empty()) event("operation_interrupted", absl::StrCat("\"", interrupted, "\" was interrupted by an agent restart"));
  return st;
}

void ServiceSupervisor::start() { thread_ = std::thread([this] { run(); }); }

void ServiceSupervisor::shutdown() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::deque<Op> left;
  {
    std::lock_guard lock(mu_);
    left.swap(queue_);
  }
  for (auto& op : left) {
    tern::v1::CommandResult r;
    r.set_command_id(op.cmd.command_id());
    r.set_outcome(tern::v1::COMMAND_OUTCOME_FAILED);
    r.set_code(static_cast<int>(absl::StatusCode::kUnavailable));
    r.set_message("the agent is shutting down; the command was not started");
    op.done(r);
  }
}

void ServiceSupervisor::submit(tern::v1::Command cmd, Progress progress, Done done) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      queue_.push_back(Op{std::move(cmd), std::move(progress), std::move(done)});
      cv_.notify_all();
      return;
    }
  }
  tern::v1::CommandResult r;
  r.set_command_id(cmd.command_id());
  r.set_outcome(tern::v1::COMMAND_OUTCOME_FAILED);
  r.set_code(static_cast<int>(absl::StatusCode::kUnavailable));
  r.set_message("the agent is shutting down");
  done(r);
}

void ServiceSupervisor::run() {
  for (;;) {
    std::optional<Op> op;
    {
      std::unique_lock lock(mu_);
      deps_.os->wait_for(lock, cv_, deps_.monitor_interval, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      if (!queue_.empty()) {
        op = std::move(queue_.front());
        queue_.pop_front();
      }
    }
    if (op) {
      auto result = execute(*op);
      op->done(result);
    } else {
      monitor();
    }
  }
}

tern::v1::CommandResult ServiceSupervisor::execute(const Op& op) {
  const auto& cmd = op.cmd;
  absl::Status st;
  switch (cmd.action_case()) {
    case tern::v1::Command::kApplyService: st = apply_spec(cmd.apply_service(), op.progress); break;
    case tern::v1::Command::kDeploy: st = deploy(cmd.deploy(), op.progress); break;
    case tern::v1::Command::kSwitchTraffic:
      st = switch_traffic(cmd.switch_traffic().to(), cmd.switch_traffic().weight(), op.progress);
      break;
    case tern::v1::Command::kRollback: st = rollback(cmd.rollback().to_version(), op.progress); break;
    case tern::v1::Command::kStopSlot: st = stop_slot_op(cmd.stop_slot().slot(), op.progress); break;
    case tern::v1::Command::kRemoveService: st = remove(op.progress); break;
    default: st = absl::UnimplementedError("unknown command"); break;
  }
  save("");
  tern::v1::CommandResult r;
  r.set_command_id(cmd.command_id());
  r.set_outcome(st.ok() ? tern::v1::COMMAND_OUTCOME_SUCCEEDED : tern::v1::COMMAND_OUTCOME_FAILED);
  r.set_code(static_cast<int>(st.code()));
  r.set_message(st.ok() ? "done" : std::string(st.message()));
  *r.mutable_service() = status();
  if (!st.ok()) spdlog::warn("{}: command {} failed: {}", name_, cmd.command_id(), st.message());
  return r;
}

absl::Status ServiceSupervisor::apply_spec(const tern::v1::ApplyServiceSpec& a, const Progress& p) {
  std::lock_guard lock(mu_);
  if (a.spec_generation() != 0 && a.spec_generation() < state_.spec_generation()) {
    return absl::OkStatus();  // an older spec arriving late: keep the newer one
  }
  const bool slots_up = running(state_.blue()) || running(state_.green());
  if (slots_up && state_.spec().ports_size() > 0) {
    const auto& old_ports = state_.spec().ports();
    const auto& new_ports = a.spec().ports();
    bool same = old_ports.size() == new_ports.size();
    for (int i = 0; same && i < old_ports.size(); ++i) {
      same = old_ports[i].blue_port() == new_ports[i].blue_port() &&
             old_ports[i].green_port() == new_ports[i].green_port() &&
             old_ports[i].public_port() == new_ports[i].public_port() &&
             old_ports[i].protocol() == new_ports[i].protocol();
    }
    if (!same) {
      return absl::FailedPreconditionError(absl::StrCat(
          "service ", name_, " is running on this host and its ports changed; remove it from the host first "
          "(or keep the ports) — slots are never moved to other ports underneath their clients"));
    }
  }
  *state_.mutable_spec() = a.spec();
  state_.set_spec_generation(a.spec_generation());
  p(absl::StrCat("spec generation ", a.spec_generation(), " applied"));
  return absl::OkStatus();
}

absl::Status ServiceSupervisor::start_slot(SlotColor color, const tern::v1::ReleaseRef& release,
                                           const std::string& dir, const Progress& p) {
  tern::v1::ServiceSpec spec;
  {
    std::lock_guard lock(mu_);
    spec = state_.spec();
  }
  const uint16_t port = slot_port(color);
  for (const auto& pm : spec.ports()) {
    const auto sp = static_cast<uint16_t>(color == tern::v1::SLOT_COLOR_GREEN ? pm.green_port() : pm.blue_port());
    if (deps_.os->port_in_use(sp, pm.protocol())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot start ", color_name(color), " (", release.version(), "): its port ", sp,
          " is already in use by another process on this host; stop that process or change the ", color_name(color),
          " port in the spec"));
    }
  }
  auto subst = [&](const std::string& in) {
    std::vector<std::pair<std::string, std::string>> repl = {
        {"{port}", std::to_string(port)},
        {"{release_dir}", dir},
        {"{version}", release.version()},
        {"{slot}", color_name(color)},
        {"{service}", spec.name()}};
    for (const auto& pm : spec.ports()) {
      repl.emplace_back(absl::StrCat("{port:", pm.name(), "}"),
                        std::to_string(color == tern::v1::SLOT_COLOR_GREEN ? pm.green_port() : pm.blue_port()));
    }
    return absl::StrReplaceAll(in, repl);
  };
  LaunchSpec ls;
  for (const auto& a : spec.argv()) ls.argv.push_back(subst(a));
  if (!ls.argv.empty() && ls.argv[0].find('/') == std::string::npos && std::ifstream(dir + "/" + ls.argv[0])) {
    ls.argv[0] = dir + "/" + ls.argv[0];
  }
  ls.env = {{"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
            {"TERN_SERVICE", spec.name()},
            {"TERN_SLOT", color_name(color)},
            {"TERN_VERSION", release.version()},
            {"TERN_PORT", std::to_string(port)},
            {"TERN_RELEASE_DIR", dir}};
  for (const auto& [k, v] : spec.env()) ls.env[k] = subst(v);
  ls.working_dir = spec.working_dir().empty() ? dir : subst(spec.working_dir());
  ls.user = spec.user();
  ls.log_path = absl::StrCat(deps_.log_dir, "/", spec.name(), "-", color_name(color), ".log");
  {
    std::lock_guard lock(mu_);
    auto& s = slot(color);
    *s.mutable_release() = release;
    s.set_release_dir(dir);
    s.set_phase(tern::v1::SLOT_PHASE_STARTING);
    s.set_pid(0);
    s.set_start_time(0);
    s.set_message("");
  }
  save(absl::StrCat("starting ", color_name(color), " ", release.version()));
  auto h = deps_.launcher->start(ls);
  if (!h.ok()) {
    std::lock_guard lock(mu_);
    slot(color).set_phase(tern::v1::SLOT_PHASE_CRASHED);
    slot(color).set_message(std::string(h.status().message()));
    return h.status();
  }
  {
    std::lock_guard lock(mu_);
    slot(color).set_pid(h->pid);
    slot(color).set_start_time(h->start_time);
  }
  trackers_.erase(color);
  save(absl::StrCat("probing ", color_name(color), " ", release.version()));
  p(absl::StrCat("started ", color_name(color), " ", release.version(), " on port ", port, " (pid ", h->pid,
                 "), log ", ls.log_path));
  return absl::OkStatus();
}

absl::Status ServiceSupervisor::wait_healthy(SlotColor color, const Progress& p) {
  tern::v1::HealthCheck check;
  tern::v1::SlotState s;
  {
    std::lock_guard lock(mu_);
    check = state_.spec().health();
    s = slot(color);
  }
  const HealthParams params = health_params(check);
  HealthTracker tracker(params, clock().now());
  const std::string log = absl::StrCat(deps_.log_dir, "/", name_, "-", color_name(color), ".log");
  auto fail = [&](const std::string& why) {
    stop_slot(color, tern::v1::SLOT_PHASE_CRASHED, why);
    return absl::FailedPreconditionError(why);
  };
  for (;;) {
    if (auto exited = deps_.launcher->poll(handle(s))) {
      std::string tail = log_tail(log);
      return fail(absl::StrCat(color_name(color), " (", s.release().version(), ") ", exited->description,
                               " before turning healthy", tail.empty() ? "" : absl::StrCat("; last output: ", tail),
                               "; the active slot was not touched"));
    }
    auto r = deps_.prober->probe(check, slot_port(color), params.timeout);
    auto verdict = tracker.observe(r, clock().now());
    if (verdict == HealthTracker::State::kHealthy) {
      std::lock_guard lock(mu_);
      slot(color).set_phase(tern::v1::SLOT_PHASE_HEALTHY);
      slot(color).set_message("");
      break;
    }
    if (verdict == HealthTracker::State::kFailed) {
      return fail(absl::StrCat(color_name(color), " (", s.release().version(), ") did not turn healthy within ",
                               format_duration(params.healthy_deadline), ": ", r.detail,
                               "; it was stopped and the active slot was not touched"));
    }
    if (pause(params.interval)) return absl::AbortedError("the agent is shutting down");
  }
  p(absl::StrCat(color_name(color), " is healthy"));
  return absl::OkStatus();
}

void ServiceSupervisor::stop_slot(SlotColor color, SlotPhase final_phase, const std::string& why) {
  tern::v1::SlotState s;
  Millis grace;
  {
    std::lock_guard lock(mu_);
    s = slot(color);
    grace = millis(state_.spec().grace());
  }
  if (s.pid() > 0) {
    const ProcessHandle h = handle(s);
    deps_.launcher->signal_group(h, SIGTERM);
    const TimePoint deadline = clock().now() + grace;
    bool gone = false;
    while (!(gone = deps_.launcher->poll(h).has_value()) && clock().now() < deadline) {
      deps_.os->sleep_for(Millis(20));
    }
    if (!gone) {
      spdlog::warn("{}: {} (pid {}) outlived its {} grace; killing its process group", name_, color_name(color),
                   s.pid(), format_duration(grace));
      deps_.launcher->signal_group(h, SIGKILL);
      const TimePoint kill_deadline = clock().now() + Millis(5'000);
      while (!deps_.launcher->poll(h) && clock().now() < kill_deadline) deps_.os->sleep_for(Millis(10));
    }
  }
  {
    std::lock_guard lock(mu_);
    auto& m = slot(color);
    m.set_pid(0);
    m.set_start_time(0);
    m.set_phase(final_phase);
    m.set_message(why);
  }
  trackers_.erase(color);
  restart_at_.erase(color);
  save("");
}

void ServiceSupervisor::drain(SlotColor color, const Progress& p) {
  Millis drain_time;
  {
    std::lock_guard lock(mu_);
    drain_time = millis(state_.spec().drain());
    slot(color).set_phase(tern::v1::SLOT_PHASE_DRAINING);
  }
  save(absl::StrCat("draining ", color_name(color)));
  p(absl::StrCat("draining ", color_name(color), " (up to ", format_duration(drain_time), ")"));
  const TimePoint deadline = clock().now() + drain_time;
  const uint16_t port = slot_port(color);
  PortSockets ps;
  for (;;) {
    ps = deps_.os->port_sockets(port);
    if (ps.accept_queue == 0 && ps.established == 0) break;
    if (clock().now() >= deadline) break;
    if (pause(Millis(100))) return;
  }
  if (ps.established > 0) {
    p(absl::StrCat("drain time passed with ", ps.established, " connection(s) still open on ", color_name(color)));
  } else {
    p(absl::StrCat(color_name(color), " drained"));
  }
}

absl::Status ServiceSupervisor::deploy(const tern::v1::DeployRelease& d, const Progress& p) {
  const uint32_t weight = d.weight() == 0 ? 100 : d.weight();
  if (weight > 100) return absl::InvalidArgumentError(absl::StrCat("weight ", weight, " is not 1-100"));
  SlotColor active, target;
  tern::v1::SlotState target_state;
  bool already_active = false;
  {
    std::lock_guard lock(mu_);
    if (state_.spec().name().empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("service ", name_, " has no spec on this host; apply it first (ternctl service apply)"));
    }
    active = state_.active();
    if (active == tern::v1::SLOT_COLOR_UNSPECIFIED) {
      target = running(state_.blue()) && !running(state_.green()) ? tern::v1::SLOT_COLOR_GREEN
                                                                    : tern::v1::SLOT_COLOR_BLUE;
    } else {
      target = other(active);
    }
    target_state = slot(target);
    if (active != tern::v1::SLOT_COLOR_UNSPECIFIED && slot(active).release().version() == d.release().version() &&
        slot(active).release().sha256() == d.release().sha256() && running(slot(active))) {
      already_active = true;
    }
  }
  if (already_active) {
    // The release already takes traffic: a deploy only sets its share (the
    // promotion of a weighted canary to 100 is such a deploy).
    p(absl::StrCat(d.release().version(), " is already active on ", color_name(active)));
    if (!d.switch_on_healthy()) return absl::OkStatus();
    return switch_traffic(active, weight, p);
  }
  const bool reuse = running(target_state) && target_state.phase() == tern::v1::SLOT_PHASE_HEALTHY &&
                     target_state.release().version() == d.release().version() &&
                     target_state.release().sha256() == d.release().sha256();
  if (reuse) {
    p(absl::StrCat(color_name(target), " already runs ", d.release().version(), " (warm); reusing it"));
  } else {
    // A share of the traffic on the target slot is taken back first: that
    // slot is about to be replaced.
    if (active != tern::v1::SLOT_COLOR_UNSPECIFIED && state_.active_weight() < 100 && state_.active_weight() != 0) {
      if (auto st = set_mapping(active, 100); !st.ok()) return st;
      p(absl::StrCat("moved all traffic back to ", color_name(active)));
    }
    if (running(target_state)) {
      p(absl::StrCat("stopping idle ", color_name(target), " (", target_state.release().version(), ")"));
      stop_slot(target, tern::v1::SLOT_PHASE_STOPPED, "replaced by a new release");
    }
    save(absl::StrCat("staging ", d.release().version()));
    p(absl::StrCat("staging ", d.release().version()));
    auto dir = deps_.stager->stage(name_, d.release(), p);
    if (!dir.ok()) return dir.status();
    {
      std::lock_guard lock(mu_);
      slot(target).set_restarts(0);
    }
    restart_at_.erase(target);
    if (auto st = start_slot(target, d.release(), *dir, p); !st.ok()) return st;
    if (auto st = wait_healthy(target, p); !st.ok()) return st;
    save("");
  }
  if (!d.switch_on_healthy()) {
    p(absl::StrCat(color_name(target), " is ready; traffic left on ", color_name(active)));
    return absl::OkStatus();
  }
  return switch_traffic(target, weight, p);
}

absl::Status ServiceSupervisor::switch_traffic(SlotColor to, uint32_t weight, const Progress& p) {
  if (to != tern::v1::SLOT_COLOR_BLUE && to != tern::v1::SLOT_COLOR_GREEN) {
    return absl::InvalidArgumentError("switch: the target slot must be blue or green");
  }
  if (weight == 0) weight = 100;
  if (weight > 100) return absl::InvalidArgumentError(absl::StrCat("weight ", weight, " is not 1-100"));
  const SlotColor previous = other(to);
  bool previous_had_traffic;
  {
    std::lock_guard lock(mu_);
    if (!running(slot(to))) {
      return absl::FailedPreconditionError(absl::StrCat("cannot switch to ", color_name(to), ": it is not running"));
    }
    if (weight < 100 && !running(slot(previous))) {
      return absl::FailedPreconditionError(absl::StrCat("cannot split traffic: ", color_name(previous),
                                                        " is not running"));
    }
    // The other slot had traffic if it was active, or shared it with `to`.
    const uint32_t w = state_.active_weight() == 0 ? 100 : state_.active_weight();
    previous_had_traffic = running(slot(previous)) &&
                           (state_.active() == previous || (state_.active() == to && w < 100));
  }
  // Nothing is written before the kernel change: the state on disk still
  // names the old mapping, whose slots both run, so a crash right here
  // re-applies a working mapping (one, never none). The new mapping is
  // recorded durably as soon as the kernel has it, before anything is
  // stopped. That keeps disk writes off the swap's critical path.
  if (auto st = set_mapping(to, weight); !st.ok()) {
    return absl::InternalError(absl::StrCat("switching traffic to ", color_name(to), " failed: ", st.message(),
                                            "; the previous mapping stays in force"));
  }
  save("");
  p(weight == 100 ? absl::StrCat("switched traffic to ", color_name(to))
                  : absl::StrCat("split traffic: ", color_name(to), " ", weight, "%, ", color_name(other(to)), " ",
                                 100 - weight, "%"));
  event("switched", absl::StrCat("traffic now on ", color_name(to), weight < 100 ? absl::StrCat(" (", weight, "%)") : ""));
  if (weight == 100 && previous_had_traffic) {
    bool keep_warm;
    {
      std::lock_guard lock(mu_);
      keep_warm = state_.spec().keep_warm();
    }
    if (keep_warm) {
      // Nothing to drain: the old slot keeps running, and its open
      // connections finish there whenever their clients close them.
      p(absl::StrCat(color_name(previous), " kept warm for rollback"));
    } else {
      drain(previous, p);
      {
        std::lock_guard lock(mu_);
        if (stopping_) return absl::OkStatus();
      }
      stop_slot(previous, tern::v1::SLOT_PHASE_STOPPED, "drained and stopped after a switch");
      p(absl::StrCat("stopped ", color_name(previous)));
    }
  }
  return absl::OkStatus();
}

absl::Status ServiceSupervisor::rollback(const std::string& to_version, const Progress& p) {
  SlotColor active;
  tern::v1::SlotState prev;
  enum { kFlip, kAlreadyThere, kTakeBackShare } what = kFlip;
  {
    std::lock_guard lock(mu_);
    active = state_.active();
    if (active == tern::v1::SLOT_COLOR_UNSPECIFIED) {
      return absl::FailedPreconditionError(absl::StrCat("service ", name_, " has no active release on this host"));
    }
    prev = slot(other(active));
    const bool active_is_target =
        !to_version.empty() && slot(active).release().version() == to_version && running(slot(active));
    const bool split = state_.active_weight() != 0 && state_.active_weight() < 100;
    if (active_is_target) {
      what = split ? kTakeBackShare : kAlreadyThere;
    } else if (!to_version.empty() && prev.release().version() != to_version) {
      return absl::FailedPreconditionError(absl::StrCat("cannot roll ", name_, " back to ", to_version,
                                                        ": neither slot holds it (blue ",
                                                        state_.blue().release().version(), ", green ",
                                                        state_.green().release().version(), ")"));
    }
  }
  if (what == kAlreadyThere) {
    p(absl::StrCat(to_version, " is already active on ", color_name(active)));
    return absl::OkStatus();
  }
  // Active but sharing new connections with the other slot: take them all back.
  if (what == kTakeBackShare) return switch_traffic(active, 100, p);
  const SlotColor target = other(active);
  if (prev.release().version().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("service ", name_, " has no previous release on this host to roll back to"));
  }
  if (!running(prev)) {
    p(absl::StrCat(color_name(target), " (", prev.release().version(), ") is stopped; starting it again"));
    if (auto st = start_slot(target, prev.release(), prev.release_dir(), p); !st.ok()) return st;
    if (auto st = wait_healthy(target, p); !st.ok()) return st;
  }
  p(absl::StrCat("rolling back to ", prev.release().version(), " on ", color_name(target)));
  return switch_traffic(target, 100, p);
}

absl::Status ServiceSupervisor::stop_slot_op(SlotColor color, const Progress& p) {
  {
    std::lock_guard lock(mu_);
    if (state_.active() == color) {
      return absl::FailedPreconditionError(
          absl::StrCat(color_name(color), " is the active slot; switch traffic away from it first"));
    }
    if (state_.active() == other(color) && state_.active_weight() < 100 && state_.active_weight() != 0) {
      return absl::FailedPreconditionError(absl::StrCat(color_name(color), " receives a share of the traffic"));
    }
  }
  stop_slot(color, tern::v1::SLOT_PHASE_STOPPED, "stopped by command");
  p(absl::StrCat("stopped ", color_name(color)));
  return absl::OkStatus();
}

absl::Status ServiceSupervisor::remove(const Progress& p) {
  if (auto st = deps_.traffic->set_routes(name_, {}); !st.ok()) return st;
  {
    std::lock_guard lock(mu_);
    state_.set_active(tern::v1::SLOT_COLOR_UNSPECIFIED);
  }
  stop_slot(tern::v1::SLOT_COLOR_BLUE, tern::v1::SLOT_PHASE_STOPPED, "service removed");
  stop_slot(tern::v1::SLOT_COLOR_GREEN, tern::v1::SLOT_PHASE_STOPPED, "service removed");
  {
    std::lock_guard lock(mu_);
    removed_ = true;
  }
  p(absl::StrCat("removed ", name_));
  return absl::OkStatus();
}

bool ServiceSupervisor::pause(Millis d) {
  std::unique_lock lock(mu_);
  return deps_.os->wait_for(lock, cv_, d, [&] { return stopping_; });
}

void ServiceSupervisor::monitor() {
  const TimePoint now = clock().now();
  for (SlotColor c : {tern::v1::SLOT_COLOR_BLUE, tern::v1::SLOT_COLOR_GREEN}) {
    tern::v1::SlotState s;
    tern::v1::ServiceSpec spec;
    {
      std::lock_guard lock(mu_);
      s = slot(c);
      spec = state_.spec();
    }
    // A crashed slot waiting for its restart.
    if (auto it = restart_at_.find(c); it != restart_at_.end()) {
      if (now < it->second) continue;
      restart_at_.erase(it);
      const uint32_t restarts = s.restarts() + 1;
      auto st = start_slot(c, s.release(), s.release_dir(), [](const std::string&) {});
      {
        std::lock_guard lock(mu_);
        slot(c).set_restarts(restarts);
      }
      event("slot_restarted", st.ok() ? absl::StrCat("restarted ", color_name(c), " (", s.release().version(),
                                                     "), restart ", restarts, " of ", spec.restart().max_restarts())
                                      : absl::StrCat("restarting ", color_name(c), " failed: ", st.message()));
      save("");
      continue;
    }
    if (!running(s)) continue;
    if (auto exited = deps_.launcher->poll(handle(s))) {
      const std::string log = absl::StrCat(deps_.log_dir, "/", name_, "-", color_name(c), ".log");
      std::string why = absl::StrCat(color_name(c), " (", s.release().version(), ", pid ", s.pid(), ") ",
                                     exited->description);
      std::string tail = log_tail(log);
      {
        std::lock_guard lock(mu_);
        auto& m = slot(c);
        m.set_pid(0);
        m.set_start_time(0);
        m.set_phase(tern::v1::SLOT_PHASE_CRASHED);
        m.set_message(tail.empty() ? why : absl::StrCat(why, "; last output: ", tail));
      }
      trackers_.erase(c);
      const bool restart = spec.restart().policy() == "on-failure" && s.restarts() < spec.restart().max_restarts();
      if (restart) restart_at_[c] = now + millis(spec.restart().delay());
      save("");
      event("slot_crashed", absl::StrCat(why, restart ? "; restarting" : "; not restarting (restart policy)"));
      continue;
    }
    // Steady-state health of a running slot.
    auto& tracker = trackers_[c];
    if (!tracker) {
      tracker = std::make_unique<HealthTracker>(health_params(spec.health()), now);
      next_probe_[c] = now;
      // A slot that was healthy before (adopted after an agent restart, or
      // just verified by a deploy) keeps its verdict until the probes say otherwise.
      if (s.phase() == tern::v1::SLOT_PHASE_HEALTHY) {
        tracker->observe(ProbeResult{true, "previously healthy"}, now - tracker->params().min_healthy_time);
        for (uint32_t i = 0; i < tracker->params().success_threshold; ++i) {
          tracker->observe(ProbeResult{true, "previously healthy"}, now);
        }
      }
    }
    if (now < next_probe_[c]) continue;
    next_probe_[c] = now + tracker->params().interval;
    auto before = tracker->state();
    auto r = deps_.prober->probe(spec.health(), slot_port(c), tracker->params().timeout);
    auto after = tracker->observe(r, clock().now());
    if (after == before) continue;
    SlotPhase phase = s.phase();
    if (after == HealthTracker::State::kHealthy) phase = tern::v1::SLOT_PHASE_HEALTHY;
    if (after == HealthTracker::State::kUnhealthy) phase = tern::v1::SLOT_PHASE_UNHEALTHY;
    if (after == HealthTracker::State::kFailed) {
      stop_slot(c, tern::v1::SLOT_PHASE_CRASHED,
                absl::StrCat("did not turn healthy after a restart: ", tracker->last_detail()));
      event("health_changed", absl::StrCat(color_name(c), " never turned healthy after a restart; stopped"));
      continue;
    }
    {
      std::lock_guard lock(mu_);
      slot(c).set_phase(phase);
      slot(c).set_message(after == HealthTracker::State::kUnhealthy ? r.detail : "");
    }
    save("");
    event("health_changed", absl::StrCat(color_name(c), " is now ", to_string(after),
                                         after == HealthTracker::State::kUnhealthy ? absl::StrCat(": ", r.detail) : ""));
  }
}

}  // namespace tern
