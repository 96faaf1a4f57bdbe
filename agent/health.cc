#include "agent/health.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <linux/close_range.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <map>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "agent/confine.h"
#include "agent/unique_fd.h"
#include "core/duration.h"
#include "core/runtime_init.h"
#include "grpc/health/v1/health.grpc.pb.h"


namespace tern {

// ---------------------------------------------------------------------------
// Parameters

namespace {

Millis positive_or(bool has, const google::protobuf::Duration& d, Millis fallback) {
  if (!has) return fallback;
  const int64_t ms = google::protobuf::util::TimeUtil::DurationToMilliseconds(d);
  return ms > 0 ? Millis(ms) : fallback;
}

}  // namespace

HealthParams health_params(const tern::v1::HealthCheck& check) {
  const HealthParams defaults;
  HealthParams p;
  p.interval = positive_or(check.has_interval(), check.interval(), defaults.interval);
  p.timeout = positive_or(check.has_timeout(), check.timeout(), defaults.timeout);
  p.success_threshold = check.success_threshold() > 0 ? check.success_threshold() : defaults.success_threshold;
  p.failure_threshold = check.failure_threshold() > 0 ? check.failure_threshold() : defaults.failure_threshold;
  p.min_healthy_time = positive_or(check.has_min_healthy_time(), check.min_healthy_time(), defaults.min_healthy_time);
  p.healthy_deadline = positive_or(check.has_healthy_deadline(), check.healthy_deadline(), defaults.healthy_deadline);
  return p;
}

// ---------------------------------------------------------------------------
// HealthTracker
//
// The deadline instant itself still counts: a probe observed at exactly
// `started + healthy_deadline` may make the slot healthy; one observed after
// it cannot. tick() only notices the deadline; becoming healthy always takes a
// probe, so the verdict rests on evidence, not on the passage of time.

HealthTracker::HealthTracker(HealthParams params, TimePoint started, State initial)
    : params_(std::move(params)), started_(started), state_(initial == State::kHealthy ? initial : State::kStarting) {
  // Hand-built params may carry zeros; a threshold of 0 would mean "no evidence needed".
  params_.success_threshold = std::max<uint32_t>(params_.success_threshold, 1);
  params_.failure_threshold = std::max<uint32_t>(params_.failure_threshold, 1);
}

HealthTracker::State HealthTracker::observe(const ProbeResult& result, TimePoint now) {
  last_detail_ = result.detail;
  const TimePoint deadline = started_ + params_.healthy_deadline;
  switch (state_) {
    case State::kFailed:
      break;

    case State::kStarting:
      if (now > deadline) {
        state_ = State::kFailed;
        break;
      }
      if (!result.ok) {
        successes_ = 0;
      } else {
        if (successes_ == 0) run_started_ = now;
        if (successes_ < params_.success_threshold) ++successes_;
        if (successes_ >= params_.success_threshold && now - run_started_ >= params_.min_healthy_time) {
          state_ = State::kHealthy;
          successes_ = 0;
          failures_ = 0;
          break;
        }
      }
      if (now >= deadline) state_ = State::kFailed;
      break;

    case State::kHealthy:
      if (result.ok) {
        failures_ = 0;
      } else if (++failures_ >= params_.failure_threshold) {
        state_ = State::kUnhealthy;
        failures_ = 0;
        successes_ = 0;
      }
      break;

    case State::kUnhealthy:
      if (!result.ok) {
        successes_ = 0;
      } else if (++successes_ >= params_.success_threshold) {
        state_ = State::kHealthy;
        successes_ = 0;
        failures_ = 0;
      }
      break;
  }
  return state_;
}

HealthTracker::State HealthTracker::tick(TimePoint now) {
  if (state_ == State::kStarting && now >= started_ + params_.healthy_deadline) state_ = State::kFailed;
  return state_;
}

const char* to_string(HealthTracker::State s) {
  switch (s) {
    case HealthTracker::State::kStarting:
      return "starting";
    case HealthTracker::State::kHealthy:
      return "healthy";
    case HealthTracker::State::kUnhealthy:
      return "unhealthy";
    case HealthTracker::State::kFailed:
      return "failed";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------
// The system prober

namespace {

using SteadyClock = std::chrono::steady_clock;
using SteadyTime = SteadyClock::time_point;

std::string errno_text(int err) { return std::system_category().message(err); }

// Milliseconds left until `deadline`, rounded up so a wait never ends early
// and spins; 0 once it has passed.
int remaining_ms(SteadyTime deadline) {
  const int64_t left = std::chrono::ceil<Millis>(deadline - SteadyClock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, INT_MAX));
}

// Keeps one status line one line, and bounded.
std::string one_line(absl::string_view text, size_t max = 200) {
  std::string out;
  for (char c : text) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    const auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? ' ' : c;
  }
  return std::string(absl::StripAsciiWhitespace(out));
}

// Waits for `events` on `fd` until `deadline`. Returns true when the fd is
// ready (or in error: the next syscall reports it), false on timeout.
bool wait_fd(int fd, short events, SteadyTime deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, remaining_ms(deadline));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return true;  // let the caller's syscall report it
    if (n == 0 && SteadyClock::now() >= deadline) return false;
  }
}

std::string loopback(uint16_t port) { return absl::StrCat("127.0.0.1:", port); }

// Connects to 127.0.0.1:<port>. The error message is a complete phrase:
// "connect 127.0.0.1:9001: Connection refused".
absl::StatusOr<unique_fd> connect_loopback(uint16_t port, Millis timeout, SteadyTime deadline) {
  const std::string what = absl::StrCat("connect ", loopback(port));
  unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return absl::ResourceExhaustedError(absl::StrCat(what, ": socket: ", errno_text(errno)));

  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int rc;
  do {
    rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0 && errno != EINPROGRESS) return absl::UnavailableError(absl::StrCat(what, ": ", errno_text(errno)));
  if (rc < 0) {
    if (!wait_fd(fd.get(), POLLOUT, deadline)) {
      return absl::DeadlineExceededError(absl::StrCat(what, ": timed out after ", format_duration(timeout)));
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err != 0) return absl::UnavailableError(absl::StrCat(what, ": ", errno_text(err)));
  }

  // On loopback a connect to a closed port in the ephemeral range can pick
  // that same port as its source and "succeed" by connecting to itself
  // (TCP simultaneous open). Nothing is listening, so report it as refused.
  sockaddr_in local{}, peer{};
  socklen_t local_len = sizeof local, peer_len = sizeof peer;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &local_len) == 0 &&
      ::getpeername(fd.get(), reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0 &&
      local.sin_port == peer.sin_port && local.sin_addr.s_addr == peer.sin_addr.s_addr) {
    return absl::UnavailableError(absl::StrCat(what, ": ", errno_text(ECONNREFUSED)));
  }
  return fd;
}

ProbeResult failed(std::string detail) { return ProbeResult{false, std::move(detail)}; }

// ---- tcp

ProbeResult probe_tcp(uint16_t port, Millis timeout, SteadyTime deadline) {
  auto fd = connect_loopback(port, timeout, deadline);
  if (!fd.ok()) return failed(std::string(fd.status().message()));
  return ProbeResult{true, absl::StrCat("connect ", loopback(port), ": ok")};
}

// ---- http

// The status code of an HTTP/1.x status line ("HTTP/1.1 503 Service Unavailable").
std::optional<int> parse_status_line(absl::string_view line) {
  if (!absl::StartsWith(line, "HTTP/")) return std::nullopt;
  const size_t sp = line.find(' ');
  if (sp == absl::string_view::npos || line.size() < sp + 4) return std::nullopt;
  const absl::string_view code = line.substr(sp + 1, 3);
  if (line.size() > sp + 4 && line[sp + 4] != ' ') return std::nullopt;
  int status = 0;
  for (char c : code) {
    if (c < '0' || c > '9') return std::nullopt;
    status = status * 10 + (c - '0');
  }
  return status;
}

// Content-Length from a header block, if present and well-formed.
std::optional<size_t> content_length(absl::string_view headers) {
  for (absl::string_view line : absl::StrSplit(headers, "\r\n")) {
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    if (!absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(line.substr(0, colon)), "content-length")) continue;
    uint64_t n = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(colon + 1)), &n)) return std::nullopt;
    return static_cast<size_t>(n);
  }
  return std::nullopt;
}

ProbeResult probe_http(std::string path, uint16_t port, Millis timeout, SteadyTime deadline) {
  if (path.empty()) path = "/";
  if (path.front() != '/') path.insert(0, "/");
  for (char c : path) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return failed("http probe path contains spaces or control characters");
  }
  const std::string what = absl::StrCat("GET ", path);

  auto conn = connect_loopback(port, timeout, deadline);
  if (!conn.ok()) return failed(absl::StrCat(what, ": ", conn.status().message()));
  const int fd = conn->get();

  const std::string request = absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: ", loopback(port),
                                           "\r\nUser-Agent: tern-health\r\nAccept: */*\r\nConnection: close\r\n\r\n");
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n >= 0) {
      sent += static_cast<size_t>(n);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_fd(fd, POLLOUT, deadline)) {
        return failed(absl::StrCat(what, ": timed out after ", format_duration(timeout), " sending the request"));
      }
    } else if (errno != EINTR) {
      return failed(absl::StrCat(what, ": send: ", errno_text(errno)));
    }
  }

  // The verdict is the status line. After it we read on to the end of the
  // response (bounded, and never past the deadline) so the server sees an
  // orderly close rather than a reset for unread data.
  constexpr size_t kMaxResponse = 64 * 1024;
  std::string buf;
  std::optional<int> status;
  std::optional<size_t> response_size;  // headers + body, once known
  char chunk[4096];
  for (;;) {
    if (response_size && buf.size() >= *response_size) break;
    if (buf.size() >= kMaxResponse) break;
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (wait_fd(fd, POLLIN, deadline)) continue;
        if (status) break;
        return failed(absl::StrCat(what, ": timed out after ", format_duration(timeout), " waiting for a response"));
      }
      if (status) break;
      return failed(absl::StrCat(what, ": read: ", errno_text(errno)));
    }
    buf.append(chunk, static_cast<size_t>(n));
    if (!status) {
      const size_t eol = buf.find("\r\n");
      if (eol == std::string::npos) {
        if (buf.size() > 8 * 1024) return failed(absl::StrCat(what, ": no HTTP status line in the response"));
        continue;
      }
      status = parse_status_line(absl::string_view(buf).substr(0, eol));
      if (!status) {
        return failed(absl::StrCat(what, ": malformed status line \"", one_line(buf.substr(0, eol), 80), "\""));
      }
    }
    if (!response_size) {
      const size_t end = buf.find("\r\n\r\n");
      if (end != std::string::npos) {
        if (auto len = content_length(absl::string_view(buf).substr(0, end))) response_size = end + 4 + *len;
      }
    }
  }
  if (!status) return failed(absl::StrCat(what, ": connection closed before a response"));
  return ProbeResult{*status >= 200 && *status < 300, absl::StrCat(what, ": HTTP ", *status)};
}

// ---- exec
//
// Spawned here rather than through a general command runner: a probe needs
// only the exit status and one line of output, must never keep more than a
// few KiB, and must not wait for EOF (a helper the probe left running may hold
// the pipe open for good).

// Ends the child's whole process group (the probe may have started helpers)
// and reaps the child.
void kill_and_reap(pid_t pid) {
  ::kill(-pid, SIGKILL);
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

// Reads what is available from a non-blocking pipe into `out` (keeping at most
// `max` bytes, discarding the rest so the child never blocks on a full pipe).
// Returns false at end of file or on error.
bool drain(int fd, std::string& out, size_t max) {
  char chunk[4096];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n > 0) {
      out.append(chunk, std::min(static_cast<size_t>(n), max - std::min(max, out.size())));
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }
}

// The first non-blank line of `text`, made safe for a status line.
std::string first_line(const std::string& text) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::string l = one_line(line);
    if (!l.empty()) return l;
  }
  return "";
}

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev != nullptr ? absl::StrCat("SIG", abbrev) : absl::StrCat("signal ", sig);
}

// An fd at 3 or above: 0-2 become the child's stdio, and a pipe end sitting
// there (when the agent runs with a closed stdin, say) would be overwritten
// by the file actions that set them up.
bool lift_above_stdio(unique_fd& fd) {
  if (fd.get() > 2) return true;
  unique_fd moved(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3));
  if (moved.get() < 0) return false;
  fd = std::move(moved);
  return true;
}

// The program's path: argv0 itself when it holds a '/', else the first
// executable match on `path` (the probe's own PATH, not the agent's).
std::optional<std::string> find_on_path(const std::string& argv0, const std::string& path) {
  if (argv0.find('/') != std::string::npos) return argv0;
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", argv0);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

ProbeResult probe_exec(const tern::v1::ExecProbe& exec, uint16_t port, Millis timeout, SteadyTime deadline,
                       const LaunchSpec& as) {
  if (exec.argv().empty() || exec.argv(0).empty()) return failed("exec probe has an empty argv");
  const std::string port_text = absl::StrCat(port);
  std::vector<std::string> args;
  args.reserve(static_cast<size_t>(exec.argv_size()));
  for (const std::string& a : exec.argv()) args.push_back(absl::StrReplaceAll(a, {{"{port}", port_text}}));
  const std::string what = absl::StrCat("exec ", args[0]);

  // Everything the child needs is built before fork(): after it, only
  // async-signal-safe calls (the agent has many threads).
  auto run_as = resolve_run_as(as.user);
  if (!run_as.ok()) return failed(absl::StrCat(what, ": ", run_as.status().message()));
  std::map<std::string, std::string> env = as.env;
  env.try_emplace("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  env["HOME"] = run_as->home;
  env["USER"] = run_as->user;
  env["TERN_PORT"] = port_text;
  const auto program = find_on_path(args[0], env["PATH"]);
  if (!program) return failed(absl::StrCat(what, ": not found on the probe's PATH"));
  std::vector<std::string> env_lines;
  for (const auto& [k, v] : env) env_lines.push_back(absl::StrCat(k, "=", v));
  std::vector<char*> argv, envp;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (std::string& e : env_lines) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string dir = as.working_dir.empty() ? "/" : as.working_dir;

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) < 0) return failed(absl::StrCat(what, ": pipe: ", errno_text(errno)));
  unique_fd out_r(fds[0]), out_w(fds[1]);
  // The child reports a failed exec (or confinement) as an errno here; a
  // successful exec closes it.
  if (::pipe2(fds, O_CLOEXEC) < 0) return failed(absl::StrCat(what, ": pipe: ", errno_text(errno)));
  unique_fd err_r(fds[0]), err_w(fds[1]);
  if (!lift_above_stdio(out_r) || !lift_above_stdio(out_w) || !lift_above_stdio(err_w) ||
      ::fcntl(out_r.get(), F_SETFL, ::fcntl(out_r.get(), F_GETFL) | O_NONBLOCK) < 0) {
    return failed(absl::StrCat(what, ": fcntl: ", errno_text(errno)));
  }

  const pid_t pid = ::fork();
  if (pid < 0) return failed(absl::StrCat(what, ": fork: ", errno_text(errno)));
  if (pid == 0) {
    // Its own process group, so a timeout kills everything it started; a
    // clean signal state, since the agent blocks SIGTERM/SIGINT in its threads.
    ::setpgid(0, 0);
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    const int null_fd = ::open("/dev/null", O_RDONLY);
    int err = 0;
    if (null_fd < 0 || ::dup2(null_fd, 0) < 0 || ::dup2(out_w.get(), 1) < 0 || ::dup2(out_w.get(), 2) < 0 ||
        ::chdir(dir.c_str()) != 0 || !confine_child(*run_as)) {
      err = errno;
    } else {
      // Nothing the agent holds open reaches the probe.
      ::syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
      ::execve(program->c_str(), argv.data(), envp.data());
      err = errno;
    }
    (void)!::write(err_w.get(), &err, sizeof err);
    ::_exit(127);
  }
  out_w.reset();
  err_w.reset();
  int exec_errno = 0;
  ssize_t got;
  while ((got = ::read(err_r.get(), &exec_errno, sizeof exec_errno)) < 0 && errno == EINTR) {
  }
  if (got == static_cast<ssize_t>(sizeof exec_errno)) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return failed(absl::StrCat(what, ": cannot run it as ", run_as->user, ": ", errno_text(exec_errno)));
  }

  // A pidfd makes the child's exit pollable. glibc 2.36 declares
  // pidfd_open() without C linkage, so it is called through syscall().
  unique_fd exited(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  std::string output;
  constexpr size_t kMaxOutput = 4096;
  bool reading = true;
  int status = 0;
  for (;;) {
    const pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) {
      // ECHILD: someone else reaped it, and its exit status is lost.
      return failed(absl::StrCat(what, ": waitpid: ", errno_text(errno)));
    }
    const int left = remaining_ms(deadline);
    if (left == 0) {
      kill_and_reap(pid);
      return failed(absl::StrCat(what, ": timed out after ", format_duration(timeout), " (killed)"));
    }
    pollfd p[2] = {{reading ? out_r.get() : -1, POLLIN, 0}, {exited.get(), POLLIN, 0}};
    // Without a pidfd (kernels before 5.3) the child is looked at every 10 ms.
    const int wait = exited.get() >= 0 ? left : std::min(left, 10);
    if (::poll(p, 2, wait) > 0 && reading && p[0].revents != 0) reading = drain(out_r.get(), output, kMaxOutput);
  }
  if (reading) drain(out_r.get(), output, kMaxOutput);

  std::string detail;
  bool ok = false;
  if (WIFEXITED(status)) {
    ok = WEXITSTATUS(status) == 0;
    detail = absl::StrCat(what, ": exit ", WEXITSTATUS(status));
  } else if (WIFSIGNALED(status)) {
    detail = absl::StrCat(what, ": killed by ", signal_name(WTERMSIG(status)));
  } else {
    detail = absl::StrCat(what, ": wait status ", status);
  }
  if (std::string line = first_line(output); !line.empty()) absl::StrAppend(&detail, ": ", line);
  return ProbeResult{ok, std::move(detail)};
}

// ---- grpc

ProbeResult probe_grpc(const tern::v1::GrpcProbe& probe, uint16_t port, Millis timeout, SteadyTime deadline) {
  const std::string what =
      probe.service().empty() ? "grpc health" : absl::StrCat("grpc health \"", one_line(probe.service(), 80), "\"");
  grpc::ChannelArguments args;
  // A fresh subchannel per probe: the answer must not depend on a connection,
  // or a reconnect backoff, left over from an earlier probe.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  auto channel = grpc::CreateCustomChannel(absl::StrCat("ipv4:", loopback(port)), grpc::InsecureChannelCredentials(),
                                           args);
  auto stub = grpc::health::v1::Health::NewStub(channel);

  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + Millis(remaining_ms(deadline)));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(probe.service());
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status st = stub->Check(&ctx, request, &response);
  if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return failed(absl::StrCat(what, ": timed out after ", format_duration(timeout)));
  }
  if (!st.ok()) {
    return failed(absl::StrCat(what, ": ", absl::StatusCodeToString(static_cast<absl::StatusCode>(st.error_code())),
                               ": ", one_line(st.error_message())));
  }
  const auto serving = response.status();
  return ProbeResult{serving == grpc::health::v1::HealthCheckResponse::SERVING,
                     absl::StrCat(what, ": ", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(serving))};
}

class SystemProber final : public Prober {
 public:
  ProbeResult probe(const tern::v1::HealthCheck& check, uint16_t port, Millis timeout,
                    const LaunchSpec& as) override {
    timeout = std::max(timeout, Millis(1));
    const SteadyTime deadline = SteadyClock::now() + timeout;
    using Kind = tern::v1::HealthCheck::KindCase;
    const Kind kind = check.kind_case();
    if (kind != Kind::kExec && kind != Kind::KIND_NOT_SET && port == 0) {
      return failed("no port to probe (the slot has no port)");
    }
    switch (kind) {
      case Kind::kHttp:
        return probe_http(check.http().path(), port, timeout, deadline);
      case Kind::kTcp:
        return probe_tcp(port, timeout, deadline);
      case Kind::kExec:
        return probe_exec(check.exec(), port, timeout, deadline, as);
      case Kind::kGrpc:
        return probe_grpc(check.grpc(), port, timeout, deadline);
      case Kind::KIND_NOT_SET:
        break;
    }
    return failed("health check names no probe (http, tcp, exec or grpc)");
  }
};

}  // namespace

std::unique_ptr<Prober> make_system_prober() {
  init_runtime();  // before any probe thread dials gRPC: see core/runtime_init.h
  return std::make_unique<SystemProber>();
}

}  // namespace tern
