#include "agent/service_supervisor.h"

#include <algorithm>
#include <filesystem>
#include <set>
#include <utility>

#include "core/words.h"
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/failpoint.h"
#include "core/duration.h"
#include "core/grpc_status.h"
#include "core/service_spec.h"
#include "core/status_fmt.h"
#include "core/words.h"
#include <google/protobuf/util/time_util.h>

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;
using tern::v1::SlotColor;
using tern::v1::SlotPhase;

Millis millis(const google::protobuf::Duration& d) { return Millis(TimeUtil::DurationToMilliseconds(d)); }

// The same release: the same version and, where both say, the same bytes.
bool same_release(const tern::v1::ReleaseRef& a, const tern::v1::ReleaseRef& b) {
  return !a.version().empty() && a.version() == b.version() &&
         (a.sha256().empty() || b.sha256().empty() || a.sha256() == b.sha256());
}

bool healthy(const tern::v1::SlotState& s) { return s.pid() > 0 && s.phase() == tern::v1::SLOT_PHASE_HEALTHY; }

// "green (3.0, unhealthy: HTTP 503)": a slot as an error message names it.
std::string describe(const tern::v1::SlotState& s) {
  const SlotPhase phase = s.phase() == tern::v1::SLOT_PHASE_UNSPECIFIED ? tern::v1::SLOT_PHASE_EMPTY : s.phase();
  return absl::StrCat(word(s.color()), " (", s.release().version().empty() ? "no release" : s.release().version(),
                      ", ", word(phase), s.message().empty() ? "" : absl::StrCat(": ", s.message()), ")");
}

}  // namespace

ServiceSupervisor::ServiceSupervisor(tern::v1::ServiceState state, SupervisorDeps deps)
    : deps_(std::move(deps)),
      name_(state.spec().name()),
      state_(std::move(state)),
      blue_(name_, tern::v1::SLOT_COLOR_BLUE, slot_deps()),
      green_(name_, tern::v1::SLOT_COLOR_GREEN, slot_deps()) {
  state_.mutable_blue()->set_color(tern::v1::SLOT_COLOR_BLUE);
  state_.mutable_green()->set_color(tern::v1::SLOT_COLOR_GREEN);
}

ServiceSupervisor::~ServiceSupervisor() { shutdown(); }

Slot::Deps ServiceSupervisor::slot_deps() {
  return Slot::Deps{deps_.launcher, deps_.prober, deps_.os, deps_.log_dir, deps_.state_dir,
                    [this](Millis d) { return pause(d); }, deps_.default_user};
}

Slot& ServiceSupervisor::slot(SlotColor color) { return color == tern::v1::SLOT_COLOR_GREEN ? green_ : blue_; }

tern::v1::SlotState& ServiceSupervisor::recorded(SlotColor color) {
  return color == tern::v1::SLOT_COLOR_GREEN ? *state_.mutable_green() : *state_.mutable_blue();
}

uint16_t ServiceSupervisor::slot_port(SlotColor color) const { return tern::slot_port(state_.spec(), color); }

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

void ServiceSupervisor::event(tern::v1::AgentEventKind kind, const std::string& message) {
  spdlog::info("{}: {}", name_, message);
  if (!deps_.emit) return;
  auto e = agent_event(kind, name_, message);
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
  const uint32_t w = effective_weight(state_.active_weight());
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
  if (!state_.last_good().version().empty()) *out.mutable_last_good() = state_.last_good();
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
  if (deploy_split_) next.set_split(*deploy_split_);
  auto st = deps_.traffic->set_routes(name_, routes_for(next));
  if (!st.ok()) return st;
  {
    std::lock_guard lock(mu_);
    state_.set_active(active);
    state_.set_active_weight(weight);
    state_.set_split(next.split());
  }
  return absl::OkStatus();
}

absl::Status ServiceSupervisor::recover() {
  for (SlotColor c : {tern::v1::SLOT_COLOR_BLUE, tern::v1::SLOT_COLOR_GREEN}) {
    std::lock_guard lock(mu_);
    auto& s = recorded(c);
    if (s.pid() <= 0) continue;
    if (deps_.launcher->recover(handle(s))) {
      spdlog::info("{}: adopted {} slot (pid {}, release {}) without restarting it", name_, word(c), s.pid(),
                   s.release().version());
      // Found by its cgroup too: limits set again, and a slot started before
      // the host used cgroups is moved into its own.
      auto moved = deps_.launcher->adopt(handle(s), slot(c).cgroup(), Slot::limits(state_.spec()));
      if (!moved.ok()) {
        spdlog::warn("{}: {} runs on, but {}", name_, word(c), moved.status().message());
      } else if (*moved > 0) {
        spdlog::info("{}: moved {} process(es) of {} into its cgroup", name_, *moved, word(c));
      }
      if (s.phase() == tern::v1::SLOT_PHASE_DRAINING) {
        if (state_.spec().keep_warm() || state_.active() == c) {
          s.set_phase(tern::v1::SLOT_PHASE_HEALTHY);  // its drain would have ended with it kept
        } else {
          unfinished_drain_ = c;
        }
      }
    } else {
      spdlog::warn("{}: {} slot (pid {}) is gone after the agent restart", name_, word(c), s.pid());
      s.set_pid(0);
      s.set_start_time(0);
      if (s.phase() != tern::v1::SLOT_PHASE_STOPPED) {
        s.set_phase(tern::v1::SLOT_PHASE_CRASHED);
        s.set_message("exited while the agent was down");
      }
    }
  }
  stop_orphans();
  std::string interrupted;
  {
    std::lock_guard lock(mu_);
    interrupted = state_.operation();
  }
  // Whatever was recorded is what the host must serve: exactly one mapping.
  tern::v1::ServiceState snap = snapshot();
  auto st = deps_.traffic->set_routes(name_, routes_for(snap));
  std::string undone = recover_hook();
  if (std::string start = undo_interrupted_start(); !start.empty()) {
    absl::StrAppend(&undone, undone.empty() ? "" : "; ", start);
  }
  SlotColor draining;
  tern::v1::SlotState drained;
  {
    std::lock_guard lock(mu_);
    draining = unfinished_drain_;
    if (draining != tern::v1::SLOT_COLOR_UNSPECIFIED) drained = recorded(draining);
  }
  if (draining != tern::v1::SLOT_COLOR_UNSPECIFIED) {
    absl::StrAppend(&undone, undone.empty() ? "" : "; ", word(draining), " (", drained.release().version(),
                    ") finishes its drain and is then stopped, as keep_warm is off");
  }
  save("");
  if (!interrupted.empty() || !undone.empty()) {
    const std::string message =
        absl::StrCat("\"", interrupted.empty() ? "a deploy" : interrupted, "\" was interrupted by an agent restart",
                     undone.empty() ? "; the recorded mapping is in force" : absl::StrCat("; ", undone));
    event(tern::v1::AGENT_EVENT_KIND_OPERATION_INTERRUPTED, message);
  }
  return st;
}

std::string ServiceSupervisor::undo_interrupted_start() {
  SlotColor c;
  tern::v1::SlotState s;
  bool keep_warm, is_good, is_active;
  {
    std::lock_guard lock(mu_);
    c = state_.starting_slot();
    state_.clear_starting_slot();
    if (c == tern::v1::SLOT_COLOR_UNSPECIFIED) return "";
    s = recorded(c);
    keep_warm = state_.spec().keep_warm();
    is_good = same_release(state_.last_good(), s.release());
    is_active = state_.active() == c;
  }
  const std::string slot = absl::StrCat(word(c), " (", s.release().version(), ")");
  if (is_active) return absl::StrCat(slot, " had already taken the traffic; it stays active");
  if (!running(s)) return absl::StrCat(slot, " was not running any more; nothing else to undo");
  if (is_good) {
    return absl::StrCat("kept ", slot, ": it is the last known-good release; its health checks go on");
  }
  if (keep_warm && healthy(s)) {
    return absl::StrCat("kept ", slot, " warm: it had turned healthy and keep_warm is set; traffic was not moved");
  }
  stop_slot(c, tern::v1::SLOT_PHASE_STOPPED, "stopped after an agent restart interrupted its start");
  return absl::StrCat("stopped ", slot, ", which it was starting: an interrupted start is undone; traffic was not "
                      "moved");
}

std::string ServiceSupervisor::recover_hook() {
  tern::v1::RunningHook h;
  {
    std::lock_guard lock(mu_);
    h = state_.hook();
    state_.clear_hook();
  }
  if (h.name().empty()) return "";
  // stop_orphans() stopped it when it was named; an unnamed one (no state
  // dir) is found by its recorded pid. Either way it never outlives this.
  const ProcessHandle ph{h.pid(), h.start_time()};
  if (ph.pid > 0 && deps_.launcher->recover(ph)) deps_.launcher->signal_group(ph, SIGKILL);
  const std::string what = absl::StrCat("the agent restarted while hook ", h.name(), " ran (command ", h.command_id(),
                                        ", ", word(h.slot()), ", release ", h.release().version(), ")");
  std::string message;
  if (h.name() == "pre_start" || h.name() == "pre_traffic") {
    // The step it guards is never resumed: the command's stream is gone, and
    // only the coordinator decides to deploy again.
    message = absl::StrCat(what, "; the deploy failed and is not resumed; deploy again");
  } else if (h.idempotent()) {
    // pre_stop runs again where it belongs, in finish_drain(), if the slot
    // still waits for its stop.
    if (h.name() != "pre_stop") rerun_ = h;
    return absl::StrCat(what, "; it is idempotent and runs again");
  } else {
    if (h.name() == "pre_stop") skip_pre_stop_ = true;
    message = absl::StrCat(what, "; it was not run again, as it is not marked idempotent; ",
                           h.name() == "pre_stop"      ? "the slot it was about is stopped without it"
                           : h.name() == "post_switch" ? "the switch stands"
                                                       : "the rollback stands");
  }
  event(tern::v1::AGENT_EVENT_KIND_HOOK_FAILED, message);
  return message;
}

void ServiceSupervisor::rerun_hook(const tern::v1::RunningHook& h) {
  const Progress log = [this](const std::string& m) { spdlog::info("{}: {}", name_, m); };
  hook_context_ = HookContext{h.command_id(), h.rollout_id(), h.wave(), h.name() == "post_rollback"};
  {
    std::lock_guard lock(mu_);
    // The slot it was about may have changed meanwhile (crashed, stopped):
    // a hook about a release that no longer runs there is not run.
    const auto& s = recorded(h.slot());
    if (!running(s) || !same_release(s.release(), h.release())) {
      spdlog::warn("{}: hook {} is not run again: {} no longer runs {}", name_, h.name(), word(h.slot()),
                   h.release().version());
      return;
    }
  }
  (void)run_hook(h.name(), h.slot(), h.release(), h.release_dir(), h.previous_release(), log);
  hook_context_ = HookContext{};
}

absl::Status ServiceSupervisor::run_hook(const std::string& name, SlotColor about, const tern::v1::ReleaseRef& release,
                                         const std::string& dir, const std::string& previous, const Progress& p) {
  tern::v1::ServiceSpec spec;
  {
    std::lock_guard lock(mu_);
    spec = state_.spec();
  }
  const tern::v1::Hook* hook = find_hook(spec.hooks(), name);
  if (hook == nullptr || hook->argv_size() == 0) return absl::OkStatus();
  const bool rolling_back = hook_context_.rolling_back;
  const bool fail = !rolling_back && hook_failure(name, *hook) == HookFailure::kFail;
  const Millis limit = rolling_back ? std::min(hook_timeout(*hook), kRollbackHookWait) : hook_timeout(*hook);
  const HookCall call{name, *hook, release, dir, previous, hook_context_.rollout_id, hook_context_.wave};
  const std::string operation = absl::StrCat("running hook ", name, " for ", word(about), " ", release.version());
  {
    std::lock_guard lock(mu_);
    auto* r = state_.mutable_hook();
    r->Clear();
    r->set_name(name);
    r->set_command_id(hook_context_.command_id);
    r->set_idempotent(hook->idempotent());
    r->set_slot(about);
    *r->mutable_release() = release;
    r->set_release_dir(dir);
    r->set_previous_release(previous);
    r->set_rollout_id(hook_context_.rollout_id);
    r->set_wave(hook_context_.wave);
  }
  // Recorded before it starts, so that an agent killed while it runs knows
  // which hook of which command it was in.
  save(operation);
  p(absl::StrCat("running hook ", name, " for ", word(about), " (", release.version(), ", up to ",
                 format_duration(limit), ")"));
  HookRun run = slot(about).run_hook(spec, call, limit, [&](const ProcessHandle& h) {
    {
      std::lock_guard lock(mu_);
      state_.mutable_hook()->set_pid(h.pid);
      state_.mutable_hook()->set_start_time(h.start_time);
    }
    save(operation);
  });
  if (run.interrupted) return absl::AbortedError("the agent is shutting down");
  {
    std::lock_guard lock(mu_);
    state_.clear_hook();
  }
  save("");
  const std::string what = absl::StrCat("hook ", name, " (", release.version(), ", ", word(about), ")");
  if (run.passed) {
    p(absl::StrCat(what, " passed", run.output.empty() ? "" : absl::StrCat("; its output: ", run.output)));
    return absl::OkStatus();
  }
  const std::string failed =
      absl::StrCat(what, " failed: it ", run.outcome,
                   run.output.empty() ? "; it printed nothing" : absl::StrCat("; its output: ", run.output));
  event(tern::v1::AGENT_EVENT_KIND_HOOK_FAILED,
        fail ? failed
             : absl::StrCat(failed, rolling_back ? "; a rollback goes on whatever its hooks say"
                                                 : "; on_failure is warn, so the step went on"));
  if (!fail) {
    p(absl::StrCat(failed, rolling_back ? " (the rollback goes on)" : " (warn: going on)"));
    return absl::OkStatus();
  }
  p(failed);
  return absl::FailedPreconditionError(failed);
}

void ServiceSupervisor::stop_orphans() {
  std::vector<ProcessHandle> known;
  Millis grace;
  {
    std::lock_guard lock(mu_);
    for (const auto* s : {&state_.blue(), &state_.green()}) {
      if (s->pid() > 0) known.push_back(handle(*s));
    }
    grace = millis(state_.spec().grace());
  }
  for (SlotColor c : {tern::v1::SLOT_COLOR_BLUE, tern::v1::SLOT_COLOR_GREEN}) {
    Slot& sl = slot(c);
    if (!sl.slot_id().empty()) {
      for (const Orphan& o : deps_.launcher->find_orphans(sl.slot_id(), known)) {
        spdlog::warn("{}: {} process {} runs but was never recorded (the agent stopped between its start and the "
                     "state write); stopping it",
                     name_, word(c), o.handle.pid);
        sl.stop(o.handle, grace);
      }
    }
    bool recorded_running;
    {
      std::lock_guard lock(mu_);
      recorded_running = recorded(c).pid() > 0;
    }
    // A slot with no process of record has nothing that may run in its
    // cgroup (what a slot that died while the agent was down left behind).
    if (!recorded_running) sl.stop(ProcessHandle{}, grace);
  }
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
  if (auto h = std::exchange(rerun_, std::nullopt)) rerun_hook(*h);
  SlotColor draining;
  {
    std::lock_guard lock(mu_);
    draining = std::exchange(unfinished_drain_, tern::v1::SLOT_COLOR_UNSPECIFIED);
  }
  if (draining != tern::v1::SLOT_COLOR_UNSPECIFIED) finish_drain(draining);
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
  hook_context_ = HookContext{cmd.command_id(), cmd.has_deploy() ? cmd.deploy().rollout_id() : cmd.rollout_id(),
                              cmd.has_deploy() ? cmd.deploy().wave() : 0, cmd.has_rollback()};
  if (cmd.action_case() != tern::v1::Command::kApplyService) {
    // Whatever this command does to the slots, the split that was sampled
    // is over; a deploy below starts a new one.
    std::lock_guard lock(mu_);
    state_.clear_analysis();
  }
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
  {
    // The command is over: whatever it started is switched to, left idle by
    // intent, or already stopped.
    std::lock_guard lock(mu_);
    state_.clear_starting_slot();
  }
  if (st.ok() && cmd.action_case() == tern::v1::Command::kDeploy && cmd.deploy().has_analysis_interval()) {
    std::lock_guard lock(mu_);
    const uint32_t w = state_.active_weight();
    if (w > 0 && w < 100 && state_.spec().analysis().metrics_size() > 0) {
      auto* a = state_.mutable_analysis();
      a->set_split_id(cmd.command_id());
      *a->mutable_interval() = cmd.deploy().analysis_interval();
      *a->mutable_since() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(to_unix_millis(clock().now()));
      a->set_sequence(0);
    }
  }
  hook_context_ = HookContext{};
  save("");
  if (st.ok() && cmd.action_case() == tern::v1::Command::kDeploy) prune_releases(op.progress);
  tern::v1::CommandResult r;
  r.set_command_id(cmd.command_id());
  r.set_outcome(st.ok() ? tern::v1::COMMAND_OUTCOME_SUCCEEDED : tern::v1::COMMAND_OUTCOME_FAILED);
  r.set_code(static_cast<int>(st.code()));
  r.set_message(st.ok() ? "done" : std::string(st.message()));
  *r.mutable_service() = status();
  if (!st.ok()) spdlog::warn("{}: command {} failed: {}", name_, cmd.command_id(), st.message());
  return r;
}

void ServiceSupervisor::prune_releases(const Progress& p) {
  if (deps_.keep_releases == 0) return;
  std::set<std::string> in_use;
  {
    std::lock_guard lock(mu_);
    for (const auto* r : {&state_.blue().release(), &state_.green().release(), &state_.last_good(),
                          &state_.previous_good()}) {
      if (!r->version().empty()) in_use.insert(r->version());
    }
  }
  auto removed = deps_.stager->prune(name_, in_use, deps_.keep_releases);
  if (removed.empty()) return;
  const std::string what = absl::StrCat("removed ", removed.size(), " old release(s) of ", name_, " (",
                                        absl::StrJoin(removed, ", "), "); kept the newest ", deps_.keep_releases,
                                        " and those in use");
  spdlog::info("{}", what);
  p(what);
}

absl::Status ServiceSupervisor::apply_spec(const tern::v1::ApplyServiceSpec& a, const Progress& p) {
  std::unique_lock lock(mu_);
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
  const TrafficSplit split = traffic_split(a.spec());
  if (state_.active() != tern::v1::SLOT_COLOR_UNSPECIFIED && split != traffic_split(state_.spec())) {
    // The mapping in force follows the new split now, not at the next switch.
    // Only this thread changes state_, so it can be read again after the
    // kernel is done without the lock held meanwhile.
    tern::v1::ServiceState next = state_;
    *next.mutable_spec() = a.spec();
    lock.unlock();
    if (auto st = deps_.traffic->set_routes(name_, routes_for(next)); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("service ", name_, ": cannot split its traffic by ",
                                                  split == TrafficSplit::kClient ? "client" : "connection",
                                                  " as the new spec asks, so the spec was not applied: ",
                                                  st.message()));
    }
    lock.lock();
    p(split == TrafficSplit::kClient ? "traffic now split by client address"
                                     : "traffic now split by connection");
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
  Slot& sl = slot(color);
  if (auto st = sl.check_ports(spec, release.version()); !st.ok()) return st;
  const LaunchSpec ls = sl.launch(spec, release, dir);
  {
    std::lock_guard lock(mu_);
    auto& s = recorded(color);
    *s.mutable_release() = release;
    s.set_release_dir(dir);
    s.set_phase(tern::v1::SLOT_PHASE_STARTING);
    s.set_pid(0);
    s.set_start_time(0);
    s.set_message("");
  }
  save(absl::StrCat("starting ", word(color), " ", release.version()));
  // Rendered before every start, restarts included: the files follow the
  // release and the spec the slot starts with, and a slot never runs on
  // files another start left.
  if (auto st = sl.render(spec, release, dir, ls); !st.ok()) {
    std::lock_guard lock(mu_);
    recorded(color).set_phase(tern::v1::SLOT_PHASE_CRASHED);
    recorded(color).set_message(std::string(st.message()));
    return st;
  }
  auto h = sl.start(ls);
  if (!h.ok()) {
    std::lock_guard lock(mu_);
    recorded(color).set_phase(tern::v1::SLOT_PHASE_CRASHED);
    recorded(color).set_message(std::string(h.status().message()));
    return h.status();
  }
  failpoint("after_slot_start");  // the process runs; nothing names it on disk yet
  {
    std::lock_guard lock(mu_);
    recorded(color).set_pid(h->pid);
    recorded(color).set_start_time(h->start_time);
  }
  save(absl::StrCat("probing ", word(color), " ", release.version()));
  p(absl::StrCat("started ", word(color), " ", release.version(), " on port ", slot_port(color), " (pid ",
                 h->pid, "), log ", ls.log_path));
  return absl::OkStatus();
}

absl::Status ServiceSupervisor::wait_healthy(SlotColor color, const Progress& p) {
  tern::v1::HealthCheck check;
  tern::v1::SlotState s;
  LaunchSpec as;
  {
    std::lock_guard lock(mu_);
    check = state_.spec().health();
    s = recorded(color);
    as = slot(color).launch(state_.spec(), s.release(), s.release_dir());
  }
  auto st = slot(color).wait_healthy(check, slot_port(color), handle(s), s.release().version(), as, p);
  if (st.code() == absl::StatusCode::kAborted) return st;
  if (!st.ok()) {
    stop_slot(color, tern::v1::SLOT_PHASE_CRASHED, std::string(st.message()));
    return st;
  }
  {
    std::lock_guard lock(mu_);
    recorded(color).set_phase(tern::v1::SLOT_PHASE_HEALTHY);
    recorded(color).set_message("");
  }
  p(absl::StrCat(word(color), " is healthy"));
  return absl::OkStatus();
}

void ServiceSupervisor::stop_slot(SlotColor color, SlotPhase final_phase, const std::string& why) {
  tern::v1::SlotState s;
  Millis grace;
  int signal;
  {
    std::lock_guard lock(mu_);
    s = recorded(color);
    grace = millis(state_.spec().grace());
    signal = stop_signal(state_.spec());
  }
  slot(color).stop(handle(s), grace, signal);
  {
    std::lock_guard lock(mu_);
    auto& m = recorded(color);
    m.set_pid(0);
    m.set_start_time(0);
    m.set_phase(final_phase);
    m.set_message(why);
  }
  slot(color).runtime() = SlotRuntime{};
  save("");
}

void ServiceSupervisor::keep_after_failed_pre_stop(SlotColor color) {
  {
    std::lock_guard lock(mu_);
    auto& s = recorded(color);
    // Drained and idle: it takes no traffic, and its health checks go on.
    s.set_phase(tern::v1::SLOT_PHASE_HEALTHY);
    s.set_message("kept running, idle: its pre_stop hook failed");
  }
  save("");
}

void ServiceSupervisor::finish_drain(SlotColor color) {
  const Progress log = [this](const std::string& m) { spdlog::info("{}: {}", name_, m); };
  drain(color, log);
  {
    std::lock_guard lock(mu_);
    if (stopping_ || state_.active() == color || recorded(color).phase() != tern::v1::SLOT_PHASE_DRAINING) return;
  }
  if (!std::exchange(skip_pre_stop_, false)) {
    tern::v1::SlotState active, drained;
    {
      std::lock_guard lock(mu_);
      active = recorded(other(color));
      drained = recorded(color);
    }
    auto st = run_hook("pre_stop", color, active.release(), active.release_dir(), drained.release().version(), log);
    if (st.code() == absl::StatusCode::kAborted) return;
    if (!st.ok()) {
      keep_after_failed_pre_stop(color);
      return;
    }
  }
  stop_slot(color, tern::v1::SLOT_PHASE_STOPPED, "drained and stopped after an agent restart interrupted its drain");
  log(absl::StrCat("stopped ", word(color)));
}

void ServiceSupervisor::drain(SlotColor color, const Progress& p) {
  Millis drain_time;
  tern::v1::ServiceSpec spec;
  tern::v1::SlotState s;
  bool told;
  {
    std::lock_guard lock(mu_);
    drain_time = millis(state_.spec().drain());
    spec = state_.spec();
    s = recorded(color);
    // After an agent restart in the middle of a drain the app was told
    // already: a second signal could read as "stop now" to some apps.
    told = s.phase() == tern::v1::SLOT_PHASE_DRAINING;
    recorded(color).set_phase(tern::v1::SLOT_PHASE_DRAINING);
  }
  save(absl::StrCat("draining ", word(color)));
  p(absl::StrCat("draining ", word(color), " (up to ", format_duration(drain_time), ")"));
  const TimePoint start = deps_.os->clock().now();
  if (!told) {
    if (std::string what = slot(color).begin_drain(spec, s.release(), s.release_dir(), handle(s), drain_time);
        !what.empty()) {
      p(what);
    }
  }
  // Every port of the slot, not just the first: a connection to any of them
  // is one the app is still serving.
  std::vector<uint16_t> ports;
  for (const auto& pm : spec.ports()) {
    ports.push_back(static_cast<uint16_t>(color == tern::v1::SLOT_COLOR_GREEN ? pm.green_port() : pm.blue_port()));
  }
  const Millis spent = std::chrono::duration_cast<Millis>(deps_.os->clock().now() - start);
  auto ps = slot(color).drain(ports, std::max(Millis(0), drain_time - spent));
  if (!ps) return;
  if (ps->established > 0) {
    p(absl::StrCat("drain time passed with ", ps->established, " connection(s) still open on ", word(color)));
  } else {
    p(absl::StrCat(word(color), " drained"));
  }
}

absl::Status ServiceSupervisor::deploy(const tern::v1::DeployRelease& d, const Progress& p) {
  if (!parse_traffic_split(d.split())) {
    return absl::InvalidArgumentError(absl::StrCat("split \"", d.split(), "\" is not connection or client"));
  }
  // The deploy's switch maps its weight with the split it names.
  deploy_split_ = d.split();
  struct Reset {
    std::optional<std::string>& split;
    ~Reset() { split.reset(); }
  } reset{deploy_split_};
  const uint32_t weight = effective_weight(d.weight());
  if (weight > 100) return absl::InvalidArgumentError(absl::StrCat("weight ", weight, " is not 1-100"));
  SlotColor active, target;
  tern::v1::SlotState target_state;
  tern::v1::ReleaseRef last_good;
  std::string previous;
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
    target_state = recorded(target);
    last_good = state_.last_good();
    if (active != tern::v1::SLOT_COLOR_UNSPECIFIED) previous = recorded(active).release().version();
    if (active != tern::v1::SLOT_COLOR_UNSPECIFIED && recorded(active).release().version() == d.release().version() &&
        recorded(active).release().sha256() == d.release().sha256() && running(recorded(active))) {
      already_active = true;
    }
  }
  if (already_active) {
    // The release already takes traffic: a deploy only sets its share (the
    // promotion of a weighted canary to 100 is such a deploy).
    p(absl::StrCat(d.release().version(), " is already active on ", word(active)));
    if (!d.switch_on_healthy()) return absl::OkStatus();
    return switch_traffic(active, weight, p);
  }
  const bool reuse = running(target_state) && target_state.phase() == tern::v1::SLOT_PHASE_HEALTHY &&
                     target_state.release().version() == d.release().version() &&
                     target_state.release().sha256() == d.release().sha256();
  if (reuse) {
    p(absl::StrCat(word(target), " already runs ", d.release().version(), " (warm); reusing it"));
  } else {
    // The last known-good release is never stopped to make room: if the new
    // one failed, nothing good would be left to return to.
    if (running(target_state) && same_release(last_good, target_state.release()) &&
        !same_release(last_good, d.release())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot deploy ", d.release().version(), " of ", name_, ": the only free slot, ", word(target),
          ", holds ", target_state.release().version(), ", the last known-good release, and it is not stopped to "
          "make room; roll back to it first (ternctl host rollback), or stop ", word(target), " explicitly, then "
          "deploy again"));
    }
    // A share of the traffic on the target slot is taken back first: that
    // slot is about to be replaced.
    if (active != tern::v1::SLOT_COLOR_UNSPECIFIED && state_.active_weight() < 100 && state_.active_weight() != 0) {
      if (auto st = check_healthy_targets(active, 100); !st.ok()) return st;
      if (auto st = set_mapping(active, 100); !st.ok()) return st;
      p(absl::StrCat("moved all traffic back to ", word(active)));
    }
    if (running(target_state)) {
      p(absl::StrCat("stopping idle ", word(target), " (", target_state.release().version(),
                     same_release(last_good, target_state.release()) ? "" : ", not the last known-good release",
                     ") to make room"));
      if (auto st = pre_stop_idle(target, p); !st.ok()) {
        if (st.code() == absl::StatusCode::kAborted) return st;
        return absl::Status(st.code(), absl::StrCat(st.message(), "; ", word(target),
                                                    " was left running, idle, and nothing was deployed"));
      }
      stop_slot(target, tern::v1::SLOT_PHASE_STOPPED, "replaced by a new release");
    }
    save(absl::StrCat("staging ", d.release().version()));
    p(absl::StrCat("staging ", d.release().version()));
    if (auto st = bring_up(target, d.release(), "", p); !st.ok()) return st;
    save("");
  }
  // The new release is healthy and has no traffic yet: the last moment to
  // judge it at no cost to anyone.
  tern::v1::SlotState ready;
  {
    std::lock_guard lock(mu_);
    ready = recorded(target);
  }
  if (auto st = run_hook("pre_traffic", target, ready.release(), ready.release_dir(), previous, p); !st.ok()) {
    if (st.code() == absl::StatusCode::kAborted) return st;
    const bool keep = same_release(last_good, ready.release());
    if (!keep) stop_slot(target, tern::v1::SLOT_PHASE_STOPPED, "stopped: its pre_traffic hook failed");
    return absl::FailedPreconditionError(absl::StrCat(
        "deploy of ", d.release().version(), " stopped before any traffic moved: ", st.message(), "; ",
        word(target), keep ? " keeps running idle (it is the last known-good release)" : " was stopped",
        active == tern::v1::SLOT_COLOR_UNSPECIFIED ? "" : absl::StrCat(" and traffic stays on ", word(active))));
  }
  if (!d.switch_on_healthy()) {
    p(absl::StrCat(word(target), " is ready; traffic left on ", word(active)));
    return absl::OkStatus();
  }
  return switch_traffic(target, weight, p);
}

absl::Status ServiceSupervisor::switch_traffic(SlotColor to, uint32_t weight, const Progress& p) {
  if (to != tern::v1::SLOT_COLOR_BLUE && to != tern::v1::SLOT_COLOR_GREEN) {
    return absl::InvalidArgumentError("switch: the target slot must be blue or green");
  }
  weight = effective_weight(weight);
  if (weight > 100) return absl::InvalidArgumentError(absl::StrCat("weight ", weight, " is not 1-100"));
  const SlotColor previous = other(to);
  bool previous_had_traffic;
  bool changed;
  if (auto st = check_healthy_targets(to, weight); !st.ok()) return st;
  {
    std::lock_guard lock(mu_);
    if (!running(recorded(to))) {
      return absl::FailedPreconditionError(absl::StrCat("cannot switch to ", word(to), ": it is not running"));
    }
    if (weight < 100 && !running(recorded(previous))) {
      return absl::FailedPreconditionError(absl::StrCat("cannot split traffic: ", word(previous),
                                                        " is not running"));
    }
    // The other slot had traffic if it was active, or shared it with `to`.
    const uint32_t w = effective_weight(state_.active_weight());
    previous_had_traffic = running(recorded(previous)) &&
                           (state_.active() == previous || (state_.active() == to && w < 100));
    changed = state_.active() != to || w != weight;
  }
  // Nothing is written before the kernel change: the state on disk still
  // names the old mapping, whose slots both run, so a crash right here
  // re-applies a working mapping (one, never none). The new mapping is
  // recorded durably as soon as the kernel has it, before anything is
  // stopped. That keeps disk writes off the swap's critical path.
  if (auto st = set_mapping(to, weight); !st.ok()) {
    return absl::InternalError(absl::StrCat("switching traffic to ", word(to), " failed: ", st.message(),
                                            "; the previous mapping stays in force"));
  }
  track_known_good();
  save("");
  p(weight == 100 ? absl::StrCat("switched traffic to ", word(to))
                  : absl::StrCat("split traffic: ", word(to), " ", weight, "%, ", word(other(to)), " ",
                                 100 - weight, "%"));
  event(tern::v1::AGENT_EVENT_KIND_SWITCHED, absl::StrCat("traffic now on ", word(to), weight < 100 ? absl::StrCat(" (", weight, "%)") : ""));
  tern::v1::SlotState now_active, old;
  {
    std::lock_guard lock(mu_);
    now_active = recorded(to);
    old = recorded(previous);
  }
  // The switch has happened and stays whatever this hook says: a failure
  // with on_failure fail fails the command once the old slot is dealt with.
  // A rollback's announcement is its post_rollback hook.
  absl::Status announced;
  if (changed && !hook_context_.rolling_back) {
    announced = run_hook("post_switch", to, now_active.release(), now_active.release_dir(), old.release().version(), p);
    if (announced.code() == absl::StatusCode::kAborted) return absl::OkStatus();
  }
  const auto stands = [&](const absl::Status& hook) {
    return absl::FailedPreconditionError(absl::StrCat("traffic switched to ", word(to), " (",
                                                      now_active.release().version(), ") and stays there, but ",
                                                      hook.message()));
  };
  if (weight == 100 && previous_had_traffic) {
    bool keep_warm;
    {
      std::lock_guard lock(mu_);
      keep_warm = state_.spec().keep_warm();
    }
    if (keep_warm) {
      // Nothing to drain: the old slot keeps running, and its open
      // connections finish there whenever their clients close them.
      p(absl::StrCat(word(previous), " kept warm for rollback"));
    } else {
      drain(previous, p);
      {
        std::lock_guard lock(mu_);
        if (stopping_) return absl::OkStatus();
      }
      auto pre_stop = run_hook("pre_stop", previous, now_active.release(), now_active.release_dir(),
                               old.release().version(), p);
      if (pre_stop.code() == absl::StatusCode::kAborted) return absl::OkStatus();
      if (!pre_stop.ok()) {
        keep_after_failed_pre_stop(previous);
        return stands(absl::Status(pre_stop.code(), absl::StrCat(pre_stop.message(), "; ", word(previous),
                                                                 " was left running, drained and idle (the next "
                                                                 "deploy replaces it)")));
      }
      stop_slot(previous, tern::v1::SLOT_PHASE_STOPPED, "drained and stopped after a switch");
      p(absl::StrCat("stopped ", word(previous)));
    }
  }
  if (!announced.ok()) return stands(announced);
  return absl::OkStatus();
}

absl::Status ServiceSupervisor::check_healthy_targets(SlotColor to, uint32_t weight) {
  std::lock_guard lock(mu_);
  const SlotColor active = state_.active();
  const uint32_t w = effective_weight(state_.active_weight());
  for (SlotColor c : {tern::v1::SLOT_COLOR_BLUE, tern::v1::SLOT_COLOR_GREEN}) {
    const uint32_t now = active == tern::v1::SLOT_COLOR_UNSPECIFIED ? 0 : (active == c ? w : 100 - w);
    const uint32_t next = c == to ? weight : 100 - weight;
    const auto& s = recorded(c);
    if (next > now && running(s) && !healthy(s)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot move traffic to ", describe(s), ": it is not healthy, and traffic only ever moves to a healthy "
          "slot; the mapping was not changed (wait for it to turn healthy, or deploy a release that does)"));
    }
  }
  return absl::OkStatus();
}

bool ServiceSupervisor::track_known_good() {
  const TimePoint now = clock().now();
  std::lock_guard lock(mu_);
  const SlotColor a = state_.active();
  if (a == tern::v1::SLOT_COLOR_UNSPECIFIED || effective_weight(state_.active_weight()) != 100 ||
      !healthy(recorded(a))) {
    good_since_.reset();
    return false;
  }
  const auto& s = recorded(a);
  if (!good_since_ || good_pid_ != s.pid()) {
    good_since_ = now;
    good_pid_ = s.pid();
  }
  if (same_release(state_.last_good(), s.release())) return false;
  if (now - *good_since_ < health_params(state_.spec().health()).min_healthy_time) return false;
  if (!state_.last_good().version().empty()) *state_.mutable_previous_good() = state_.last_good();
  *state_.mutable_last_good() = s.release();
  spdlog::info("{}: {} is the last known-good release (active on {} at 100%, healthy)", name_, s.release().version(),
               word(a));
  return true;
}

void ServiceSupervisor::demote_known_good(SlotColor c) {
  if (state_.active() != c || !same_release(state_.last_good(), recorded(c).release())) return;
  spdlog::warn("{}: {} is no longer the last known-good release: it turned {} while active", name_,
               recorded(c).release().version(), word(recorded(c).phase()));
  *state_.mutable_last_good() = state_.previous_good();
  state_.clear_previous_good();
  if (state_.last_good().version().empty()) state_.clear_last_good();
  good_since_.reset();
}

tern::v1::ReleaseRef ServiceSupervisor::known_release(const std::string& version) {
  for (const auto* r : {&state_.last_good(), &state_.previous_good(), &state_.blue().release(),
                        &state_.green().release()}) {
    if (r->version() == version) return *r;
  }
  tern::v1::ReleaseRef bare;
  bare.set_version(version);
  return bare;
}

absl::Status ServiceSupervisor::bring_up(SlotColor color, const tern::v1::ReleaseRef& release, std::string dir,
                                         const Progress& p) {
  if (dir.empty()) {
    auto staged = deps_.stager->stage(name_, release, p);
    if (!staged.ok()) return staged.status();
    dir = *staged;
  }
  // A rollback returns to a release that ran here before: it is never held
  // up by a check meant for new ones.
  if (!hook_context_.rolling_back) {
    std::string previous;
    {
      std::lock_guard lock(mu_);
      if (state_.active() != tern::v1::SLOT_COLOR_UNSPECIFIED) previous = recorded(state_.active()).release().version();
    }
    if (auto st = run_hook("pre_start", color, release, dir, previous, p); !st.ok()) {
      if (st.code() == absl::StatusCode::kAborted) return st;
      return absl::FailedPreconditionError(absl::StrCat("cannot start ", word(color), " (", release.version(), "): ",
                                                        st.message(), "; nothing was started",
                                                        previous.empty() ? "" : "; the active slot was not touched"));
    }
  }
  {
    std::lock_guard lock(mu_);
    recorded(color).set_restarts(0);
    state_.set_starting_slot(color);
  }
  slot(color).runtime().restart_at.reset();
  if (auto st = start_slot(color, release, dir, p); !st.ok()) return st;
  return wait_healthy(color, p);
}

absl::Status ServiceSupervisor::rollback(const std::string& to_version, const Progress& p) {
  tern::v1::ReleaseRef from;
  {
    std::lock_guard lock(mu_);
    if (state_.active() != tern::v1::SLOT_COLOR_UNSPECIFIED) from = recorded(state_.active()).release();
  }
  SlotColor before_active;
  uint32_t before_weight;
  {
    std::lock_guard lock(mu_);
    before_active = state_.active();
    before_weight = effective_weight(state_.active_weight());
  }
  auto st = return_to(to_version, p);
  if (st.ok() && !to_version.empty()) trust_returned_release(from);
  if (!st.ok()) return st;
  tern::v1::SlotState now;
  bool moved;
  {
    std::lock_guard lock(mu_);
    moved = state_.active() != before_active || effective_weight(state_.active_weight()) != before_weight;
    now = recorded(state_.active());
  }
  // Warn only and waited for briefly (run_hook): the rollback stands.
  if (moved) (void)run_hook("post_rollback", now.color(), now.release(), now.release_dir(), from.version(), p);
  return st;
}

void ServiceSupervisor::trust_returned_release(const tern::v1::ReleaseRef& from) {
  {
    std::lock_guard lock(mu_);
    if (state_.active() == tern::v1::SLOT_COLOR_UNSPECIFIED) return;
    const tern::v1::ReleaseRef now = recorded(state_.active()).release();
    if (same_release(state_.last_good(), now)) return;
    // Whoever named this release (a fleet rollback) judged the one before
    // it bad, however healthy it looked here: a later rollback must not
    // return to it.
    if (!same_release(state_.last_good(), from) && !state_.last_good().version().empty()) {
      *state_.mutable_previous_good() = state_.last_good();
    }
    *state_.mutable_last_good() = now;
    spdlog::info("{}: {} is the last known-good release (rolled back to by name, from {})", name_, now.version(),
                 from.version().empty() ? "nothing" : from.version());
  }
  save("");
}

absl::Status ServiceSupervisor::return_to(const std::string& to_version, const Progress& p) {
  SlotColor active;
  tern::v1::ReleaseRef target;
  tern::v1::SlotState current, idle;
  bool split;
  {
    std::lock_guard lock(mu_);
    active = state_.active();
    if (active == tern::v1::SLOT_COLOR_UNSPECIFIED) {
      return absl::FailedPreconditionError(absl::StrCat("service ", name_, " has no active release on this host"));
    }
    if (!to_version.empty() && !is_valid_version(to_version)) {
      return absl::InvalidArgumentError(absl::StrCat("cannot roll ", name_, " back to \"", to_version,
                                                     "\": a version is 1-64 of letters, digits, '.', '_', '+', '-'"));
    }
    if (to_version.empty() && state_.last_good().version().empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot roll ", name_, " back: no release has been known-good on this host yet (active at 100% and "
          "healthy for the minimum healthy time, ", format_duration(health_params(state_.spec().health()).min_healthy_time),
          "), so there is nothing known to return to; deploy a release that works, or name the version to "
          "return to"));
    }
    target = to_version.empty() ? state_.last_good() : known_release(to_version);
    current = recorded(active);
    idle = recorded(other(active));
    split = state_.active_weight() != 0 && state_.active_weight() < 100;
  }
  const std::string& version = target.version();
  const std::string what = to_version.empty() ? absl::StrCat(version, ", the last known-good release,") : version;
  if (running(current) && current.release().version() == version) {
    // Active but sharing new connections with the other slot: take them all back.
    if (split) return switch_traffic(active, 100, p);
    p(absl::StrCat(what, " is already active on ", word(active), " at 100%; nothing to roll back"));
    return absl::OkStatus();
  }
  const SlotColor target_slot = other(active);
  if (running(idle) && idle.release().version() == version && healthy(idle)) {
    p(absl::StrCat("rolling back to ", version, " on ", word(target_slot)));
    return switch_traffic(target_slot, 100, p);
  }
  // The idle slot is stopped, or runs something else, or runs the release
  // unhealthy: the release starts there afresh, and only once it is healthy
  // does traffic move.
  // Checked before anything is stopped: a rollback that cannot happen leaves
  // the host as it was.
  std::string dir;
  if (target.sha256().empty()) {
    // Known by its version only: it can run from disk, but not be fetched again.
    dir = deps_.stager->release_dir(name_, version);
    std::error_code ec;
    if (!std::filesystem::exists(dir, ec)) {
      return absl::FailedPreconditionError(absl::StrCat("cannot roll ", name_, " back to ", version,
                                                        ": this host has no record of that release and it is not "
                                                        "staged in ", dir, "; deploy it instead (`ternctl host "
                                                        "deploy <host> ", name_, " --version ", version, "`)"));
    }
  }
  if (split && running(idle)) {
    if (auto st = switch_traffic(active, 100, p); !st.ok()) return st;
  }
  {
    std::lock_guard lock(mu_);
    idle = recorded(target_slot);
  }
  if (running(idle)) {
    p(absl::StrCat("stopping idle ", describe(idle), " to start ", what, " there"));
    // A rollback goes on whatever its hooks say (run_hook knows it rolls back).
    if (auto st = pre_stop_idle(target_slot, p); st.code() == absl::StatusCode::kAborted) return st;
    stop_slot(target_slot, tern::v1::SLOT_PHASE_STOPPED, absl::StrCat("replaced by ", version, " for a rollback"));
  } else {
    p(absl::StrCat(word(target_slot), " (", idle.release().version().empty() ? "empty" : idle.release().version(),
                   ") is stopped; starting ", what, " there"));
  }
  if (auto st = bring_up(target_slot, target, dir, p); !st.ok()) return st;
  p(absl::StrCat("rolling back to ", version, " on ", word(target_slot)));
  return switch_traffic(target_slot, 100, p);
}

absl::Status ServiceSupervisor::stop_slot_op(SlotColor color, const Progress& p) {
  {
    std::lock_guard lock(mu_);
    if (state_.active() == color) {
      return absl::FailedPreconditionError(
          absl::StrCat(word(color), " is the active slot; switch traffic away from it first"));
    }
    if (state_.active() == other(color) && state_.active_weight() < 100 && state_.active_weight() != 0) {
      return absl::FailedPreconditionError(absl::StrCat(word(color), " receives a share of the traffic"));
    }
  }
  if (auto st = pre_stop_idle(color, p); !st.ok()) {
    if (st.code() == absl::StatusCode::kAborted) return st;
    return absl::Status(st.code(), absl::StrCat(st.message(), "; ", word(color), " was left running, idle"));
  }
  stop_slot(color, tern::v1::SLOT_PHASE_STOPPED, "stopped by command");
  p(absl::StrCat("stopped ", word(color)));
  return absl::OkStatus();
}

absl::Status ServiceSupervisor::pre_stop_idle(SlotColor color, const Progress& p) {
  tern::v1::SlotState s;
  std::string serving;
  {
    std::lock_guard lock(mu_);
    s = recorded(color);
    if (state_.active() != tern::v1::SLOT_COLOR_UNSPECIFIED) serving = recorded(state_.active()).release().version();
  }
  // Only a slot that runs healthy may have registered anywhere: a crashed,
  // unhealthy or never-healthy one is stopped without it.
  if (!running(s) || s.phase() != tern::v1::SLOT_PHASE_HEALTHY) return absl::OkStatus();
  // From the slot's own release, which is on disk while it runs.
  return run_hook("pre_stop", color, s.release(), s.release_dir(), serving, p);
}

absl::Status ServiceSupervisor::remove(const Progress& p) {
  if (auto st = deps_.traffic->set_routes(name_, {}); !st.ok()) return st;
  {
    std::lock_guard lock(mu_);
    state_.set_active(tern::v1::SLOT_COLOR_UNSPECIFIED);
  }
  // The service is going whatever its pre_stop hooks say: they run, and a
  // failure is reported, not obeyed.
  for (SlotColor c : {tern::v1::SLOT_COLOR_BLUE, tern::v1::SLOT_COLOR_GREEN}) {
    if (pre_stop_idle(c, p).code() == absl::StatusCode::kAborted) return absl::AbortedError("the agent is shutting down");
    stop_slot(c, tern::v1::SLOT_PHASE_STOPPED, "service removed");
  }
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

void ServiceSupervisor::sample_canary(TimePoint now) {
  tern::v1::AnalysisSplit split;
  tern::v1::ServiceSpec spec;
  tern::v1::SlotState canary, baseline;
  uint32_t weight = 0;
  {
    std::lock_guard lock(mu_);
    if (!state_.has_analysis()) {
      sampling_ = Sampling();
      return;
    }
    split = state_.analysis();
    spec = state_.spec();
    weight = state_.active_weight();
    canary = recorded(state_.active());
    baseline = recorded(other(state_.active()));
  }
  // A split that no longer holds sends nothing; the next command ends it.
  if (!running(canary) || !running(baseline) || weight == 0 || weight >= 100) return;
  if (!sampling_.sampler || sampling_.split_id != split.split_id()) {
    const auto& endpoint = spec.metrics_endpoint();
    uint16_t ports[2] = {slot_port(canary.color()), slot_port(baseline.color())};
    for (const auto& pm : spec.ports()) {
      if (pm.name() != endpoint.port()) continue;
      ports[0] = static_cast<uint16_t>(canary.color() == tern::v1::SLOT_COLOR_GREEN ? pm.green_port() : pm.blue_port());
      ports[1] = static_cast<uint16_t>(baseline.color() == tern::v1::SLOT_COLOR_GREEN ? pm.green_port() : pm.blue_port());
    }
    auto scrape = deps_.scrape ? deps_.scrape : [](uint16_t port, const std::string& path) {
      return scrape_loopback(port, path, Millis(2'000));
    };
    auto sampler = CanarySampler::create(spec, ports[0], ports[1], std::move(scrape));
    if (!sampler.ok()) {
      spdlog::warn("{}: cannot sample the canary: {}", name_, sampler.status().message());
      std::lock_guard lock(mu_);
      state_.clear_analysis();
      return;
    }
    sampling_ = Sampling();
    sampling_.split_id = split.split_id();
    sampling_.sampler.emplace(*std::move(sampler));
    sampling_.next = now;
  }
  if (now < sampling_.next) return;
  const Millis interval = std::max(Millis(100), millis(split.interval()));
  sampling_.next = now + interval;
  // The kernel's connection counts, read with the scrape so both cover one
  // interval.
  auto connections = slot_connections(spec, canary.color());
  auto previous = std::exchange(sampling_.connections_seen, connections);
  auto counts = sampling_.sampler->sample();
  if (!counts) return;  // the baseline scrape
  accumulate_counts(sampling_.pending, *counts);
  if (connections && previous) {
    auto& p = sampling_.connections_pending;
    if (!p) p.emplace(0, 0);
    p->first += connections->first - std::min(connections->first, previous->first);
    p->second += connections->second - std::min(connections->second, previous->second);
  }
  tern::v1::AnalysisSample s;
  s.set_service(name_);
  s.set_canary_version(canary.release().version());
  s.set_baseline_version(baseline.release().version());
  s.set_weight(weight);
  s.set_split_id(split.split_id());
  s.set_sequence(split.sequence() + 1);
  const int64_t since = to_unix_millis(clock().now()) - google::protobuf::util::TimeUtil::TimestampToMilliseconds(split.since());
  *s.mutable_since_split() = google::protobuf::util::TimeUtil::MillisecondsToDuration(std::max<int64_t>(0, since));
  for (const auto& c : sampling_.pending) *s.add_metrics() = c;
  s.set_canary_exits(sampling_.canary_exits);
  if (sampling_.connections_pending) {
    s.mutable_connections()->set_canary(sampling_.connections_pending->first);
    s.mutable_connections()->set_baseline(sampling_.connections_pending->second);
  }
  if (!deps_.send_sample || !deps_.send_sample(s)) return;  // kept for the next interval
  sampling_.pending.clear();
  sampling_.canary_exits = 0;
  sampling_.connections_pending.reset();
  {
    std::lock_guard lock(mu_);
    if (state_.has_analysis() && state_.analysis().split_id() == split.split_id()) {
      state_.mutable_analysis()->set_sequence(s.sequence());
    }
  }
  save("");
}

std::optional<std::pair<uint64_t, uint64_t>> ServiceSupervisor::slot_connections(const tern::v1::ServiceSpec& spec,
                                                                                   SlotColor canary) {
  auto counts = deps_.traffic->connection_counts(name_);
  if (!counts.ok()) {
    spdlog::debug("{}: no connection counts this interval: {}", name_, counts.status().message());
    return std::nullopt;
  }
  const SlotConnections by_slot = tern::slot_connections(spec, *counts);
  if (!by_slot.counted) return std::nullopt;
  return std::make_pair(by_slot.of(canary), by_slot.of(other(canary)));
}

void ServiceSupervisor::monitor() {
  const TimePoint now = clock().now();
  sample_canary(now);
  for (SlotColor c : {tern::v1::SLOT_COLOR_BLUE, tern::v1::SLOT_COLOR_GREEN}) {
    tern::v1::SlotState s;
    tern::v1::ServiceSpec spec;
    {
      std::lock_guard lock(mu_);
      s = recorded(c);
      spec = state_.spec();
    }
    SlotRuntime& rt = slot(c).runtime();
    // A crashed slot waiting for its restart.
    if (rt.restart_at) {
      if (now < *rt.restart_at) continue;
      rt.restart_at.reset();
      const uint32_t restarts = s.restarts() + 1;
      auto st = start_slot(c, s.release(), s.release_dir(), [](const std::string&) {});
      {
        std::lock_guard lock(mu_);
        recorded(c).set_restarts(restarts);
      }
      event(tern::v1::AGENT_EVENT_KIND_SLOT_RESTARTED, st.ok() ? absl::StrCat("restarted ", word(c), " (", s.release().version(),
                                                     "), restart ", restarts, " of ", spec.restart().max_restarts())
                                      : absl::StrCat("restarting ", word(c), " failed: ", st.message()));
      save("");
      continue;
    }
    if (!running(s)) continue;
    if (auto exited = deps_.launcher->poll(handle(s))) {
      std::string why = absl::StrCat(word(c), " (", s.release().version(), ", pid ", s.pid(), ") ",
                                     exited->description);
      std::string tail = slot(c).log_tail();
      {
        std::lock_guard lock(mu_);
        auto& m = recorded(c);
        m.set_pid(0);
        m.set_start_time(0);
        m.set_phase(tern::v1::SLOT_PHASE_CRASHED);
        m.set_message(tail.empty() ? why : absl::StrCat(why, "; last output: ", tail));
        demote_known_good(c);
        if (state_.has_analysis() && c == state_.active()) ++sampling_.canary_exits;
      }
      rt.tracker.reset();
      const bool restart = restart_policy(spec.restart()) == RestartPolicy::kOnFailure &&
                           s.restarts() < spec.restart().max_restarts();
      if (restart) rt.restart_at = now + millis(spec.restart().delay());
      save("");
      event(tern::v1::AGENT_EVENT_KIND_SLOT_CRASHED, absl::StrCat(why, restart ? "; restarting" : "; not restarting (restart policy)"));
      continue;
    }
    // Steady-state health of a running slot. One that was healthy before
    // (adopted after an agent restart, or just verified by a deploy) keeps
    // its verdict until the probes say otherwise.
    if (!rt.tracker) {
      rt.tracker = std::make_unique<HealthTracker>(
          health_params(spec.health()), now,
          s.phase() == tern::v1::SLOT_PHASE_HEALTHY ? HealthTracker::State::kHealthy : HealthTracker::State::kStarting);
      rt.next_probe = now;
    }
    auto& tracker = rt.tracker;
    if (now < rt.next_probe) continue;
    rt.next_probe = now + tracker->params().interval;
    auto before = tracker->state();
    // An exec probe runs as the slot's process does, never as the agent.
    const LaunchSpec as = slot(c).launch(spec, s.release(), s.release_dir());
    auto r = deps_.prober->probe(spec.health(), slot_port(c), tracker->params().timeout, as);
    auto after = tracker->observe(r, clock().now());
    if (after == before) continue;
    SlotPhase phase = s.phase();
    if (after == HealthTracker::State::kHealthy) phase = tern::v1::SLOT_PHASE_HEALTHY;
    if (after == HealthTracker::State::kUnhealthy) phase = tern::v1::SLOT_PHASE_UNHEALTHY;
    if (after == HealthTracker::State::kFailed) {
      stop_slot(c, tern::v1::SLOT_PHASE_CRASHED,
                absl::StrCat("did not turn healthy after a restart: ", tracker->last_detail()));
      event(tern::v1::AGENT_EVENT_KIND_HEALTH_CHANGED, absl::StrCat(word(c), " never turned healthy after a restart; stopped"));
      continue;
    }
    {
      std::lock_guard lock(mu_);
      recorded(c).set_phase(phase);
      recorded(c).set_message(after == HealthTracker::State::kUnhealthy ? r.detail : "");
      if (after == HealthTracker::State::kUnhealthy) demote_known_good(c);
    }
    save("");
    event(tern::v1::AGENT_EVENT_KIND_HEALTH_CHANGED, absl::StrCat(word(c), " is now ", to_string(after),
                                         after == HealthTracker::State::kUnhealthy ? absl::StrCat(": ", r.detail) : ""));
  }
  if (track_known_good()) save("");
}

}  // namespace tern
