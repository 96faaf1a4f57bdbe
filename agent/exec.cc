#include "agent/exec.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/unique_fd.h"

extern char** environ;

namespace tern {
namespace {

using SteadyClock = std::chrono::steady_clock;

absl::Status errno_status(int err, const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(err)));
}

// Moves an fd to 3 or above: fds 0-2 are the child's stdio, and a pipe end
// sitting there (when the caller has closed its own stdin, say) would be
// overwritten by the dup2 calls that set up the child.
absl::Status lift_above_stdio(unique_fd& fd) {
  if (fd.get() > 2) return absl::OkStatus();
  int moved = fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  if (moved < 0) return errno_status(errno, "fcntl(F_DUPFD_CLOEXEC)");
  fd = unique_fd(moved);
  return absl::OkStatus();
}

struct Pipe {
  unique_fd read;
  unique_fd write;
};

absl::StatusOr<Pipe> make_pipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return errno_status(errno, "pipe2");
  Pipe p{unique_fd(fds[0]), unique_fd(fds[1])};
  if (auto st = lift_above_stdio(p.read); !st.ok()) return st;
  if (auto st = lift_above_stdio(p.write); !st.ok()) return st;
  return p;
}

absl::Status set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return errno_status(errno, "fcntl(O_NONBLOCK)");
  return absl::OkStatus();
}

// Blocks SIGPIPE on this thread for its lifetime and swallows one raised while
// it was blocked (writing to a pipe whose reader exited), unless SIGPIPE was
// already pending before: that one belongs to someone else.
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    was_pending_ = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~ScopedSigpipeBlock() {
    if (!was_pending_) {
      timespec zero{};
      while (sigtimedwait(&set_, nullptr, &zero) >= 0 || errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  ScopedSigpipeBlock(const ScopedSigpipeBlock&) = delete;
  ScopedSigpipeBlock& operator=(const ScopedSigpipeBlock&) = delete;

 private:
  sigset_t set_;
  sigset_t old_;
  bool was_pending_ = false;
};

class SpawnSetup {
 public:
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions_);
    posix_spawnattr_init(&attr_);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions_);
    posix_spawnattr_destroy(&attr_);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;

  posix_spawn_file_actions_t actions_;
  posix_spawnattr_t attr_;
};

// Reads what is available from `fd` into `sink` (up to the cap). Returns false
// once the fd reached EOF or failed; true while it may deliver more.
bool drain(int fd, std::string& sink, bool& truncated) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      size_t room = kMaxCommandOutput - std::min(kMaxCommandOutput, sink.size());
      size_t take = std::min(room, static_cast<size_t>(n));
      sink.append(buf, take);
      if (take < static_cast<size_t>(n)) truncated = true;
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }
}

int wait_blocking(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

void fill_exit(int status, ExecResult& result) {
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
    result.signal = 0;
  } else if (WIFSIGNALED(status)) {
    result.exit_code = -1;
    result.signal = WTERMSIG(status);
  }
}

// Folds a program's output into one line for an error message, capped so a
// chatty program cannot flood the log.
std::string one_line(const std::string& text) {
  constexpr size_t kMax = 2000;
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipWhitespace());
  std::string joined = absl::StrJoin(lines, "; ");
  if (joined.size() > kMax) joined = absl::StrCat(joined.substr(0, kMax), "...");
  return joined;
}

}  // namespace

absl::StatusOr<ExecResult> run_command(const std::vector<std::string>& argv, const std::string& stdin_data,
                                          Millis timeout) {
  if (argv.empty() || argv[0].empty()) return absl::InvalidArgumentError("run_command: empty argv");
  const auto deadline = SteadyClock::now() + timeout;

  auto in = make_pipe();
  if (!in.ok()) return in.status();
  auto out = make_pipe();
  if (!out.ok()) return out.status();
  auto err = make_pipe();
  if (!err.ok()) return err.status();

  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);

  SpawnSetup setup;
  posix_spawn_file_actions_adddup2(&setup.actions_, in->read.get(), 0);
  posix_spawn_file_actions_adddup2(&setup.actions_, out->write.get(), 1);
  posix_spawn_file_actions_adddup2(&setup.actions_, err->write.get(), 2);
  // Whatever else the caller has open (fds inherited without O_CLOEXEC, say)
  // stays out of the child.
  posix_spawn_file_actions_addclosefrom_np(&setup.actions_, 3);
  sigset_t none;
  sigemptyset(&none);
  sigset_t all;
  sigfillset(&all);
  posix_spawnattr_setsigmask(&setup.attr_, &none);
  posix_spawnattr_setsigdefault(&setup.attr_, &all);
  posix_spawnattr_setpgroup(&setup.attr_, 0);
  posix_spawnattr_setflags(&setup.attr_, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);

  // Looked up here rather than by posix_spawnp(), so that a program missing
  // from every directory reads as ENOENT even when some PATH entry is
  // unreadable (execvp reports EACCES then), and the sbin directories count.
  std::string program = argv[0];
  if (program.find('/') == std::string::npos) {
    auto found = find_executable(program);
    if (!found) {
      return absl::NotFoundError(
          absl::StrCat("cannot run ", program, ": not found in PATH, /usr/local/sbin, /usr/sbin or /sbin"));
    }
    program = *found;
  }

  ScopedSigpipeBlock sigpipe_block;
  pid_t pid = -1;
  int rc = posix_spawn(&pid, program.c_str(), &setup.actions_, &setup.attr_, cargv.data(), environ);
  if (rc != 0) {
    std::string msg = absl::StrCat("cannot run ", argv[0], ": ", std::strerror(rc));
    if (rc == ENOENT) return absl::NotFoundError(msg);
    if (rc == EACCES || rc == EPERM) return absl::PermissionDeniedError(msg);
    return absl::InternalError(msg);
  }
  // The child holds its own copies now.
  in->read.reset();
  out->write.reset();
  err->write.reset();

  // A pidfd tells poll() when the child exits, so a grandchild that keeps our
  // pipes open cannot keep us waiting. Without one (kernel < 5.3) we wait for
  // EOF on both pipes instead.
  // (Called through syscall(): glibc 2.36's <sys/pidfd.h> lacks extern "C".)
  unique_fd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));

  ExecResult result;
  unique_fd& in_w = in->write;
  unique_fd& out_r = out->read;
  unique_fd& err_r = err->read;
  size_t written = 0;
  if (stdin_data.empty()) in_w.reset();
  for (unique_fd* fd : {&in_w, &out_r, &err_r}) {
    if (fd->valid()) {
      if (auto st = set_nonblocking(fd->get()); !st.ok()) {
        kill(-pid, SIGKILL);
        wait_blocking(pid);
        return st;
      }
    }
  }

  bool exited = false;
  int status = 0;
  for (;;) {
    if (!exited && !pidfd.valid() && !out_r.valid() && !err_r.valid()) {
      // No pidfd: both pipes are closed, so the child is (about to be) gone.
      pid_t r = waitpid(pid, &status, WNOHANG);
      if (r == pid) {
        exited = true;
      } else if (r < 0 && errno != EINTR) {
        return errno_status(errno, "waitpid");
      }
    }
    if (exited) break;

    auto now = SteadyClock::now();
    if (now >= deadline) {
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      wait_blocking(pid);
      if (err_r.valid()) drain(err_r.get(), result.err, result.truncated);
      std::string said = one_line(result.err);
      return absl::DeadlineExceededError(absl::StrCat(argv[0], " did not finish within ", timeout.count(),
                                                      " ms and was killed", said.empty() ? "" : ": ", said));
    }
    int wait_ms = static_cast<int>(
        std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count());

    pollfd fds[4];
    int nfds = 0;
    int in_idx = -1, out_idx = -1, err_idx = -1, pid_idx = -1;
    if (in_w.valid()) {
      in_idx = nfds;
      fds[nfds++] = {in_w.get(), POLLOUT, 0};
    }
    if (out_r.valid()) {
      out_idx = nfds;
      fds[nfds++] = {out_r.get(), POLLIN, 0};
    }
    if (err_r.valid()) {
      err_idx = nfds;
      fds[nfds++] = {err_r.get(), POLLIN, 0};
    }
    if (pidfd.valid()) {
      pid_idx = nfds;
      fds[nfds++] = {pidfd.get(), POLLIN, 0};
    }
    if (!pidfd.valid() && !out_r.valid() && !err_r.valid()) {
      // Waiting for the exit status without a pidfd: check again shortly.
      wait_ms = std::min(wait_ms, 5);
    }
    int n = poll(fds, static_cast<nfds_t>(nfds), wait_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      kill(-pid, SIGKILL);
      wait_blocking(pid);
      return errno_status(e, "poll");
    }
    if (in_idx >= 0 && fds[in_idx].revents != 0) {
      while (written < stdin_data.size()) {
        ssize_t w = ::write(in_w.get(), stdin_data.data() + written, stdin_data.size() - written);
        if (w > 0) {
          written += static_cast<size_t>(w);
        } else if (w < 0 && errno == EINTR) {
          continue;
        } else {
          // EAGAIN: the pipe is full, poll again. EPIPE or anything else: the
          // program does not read its stdin; stop feeding it.
          if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
          written = stdin_data.size();
        }
      }
      if (written >= stdin_data.size()) in_w.reset();
    }
    if (out_idx >= 0 && fds[out_idx].revents != 0 && !drain(out_r.get(), result.out, result.truncated)) {
      out_r.reset();
    }
    if (err_idx >= 0 && fds[err_idx].revents != 0 && !drain(err_r.get(), result.err, result.truncated)) {
      err_r.reset();
    }
    if (pid_idx >= 0 && fds[pid_idx].revents != 0) {
      status = wait_blocking(pid);
      exited = true;
    }
  }
  // The child is gone; whatever it wrote is in the pipes. Anything still held
  // open by a grandchild is not waited for.
  if (out_r.valid()) drain(out_r.get(), result.out, result.truncated);
  if (err_r.valid()) drain(err_r.get(), result.err, result.truncated);
  fill_exit(status, result);
  return result;
}

std::optional<std::string> find_executable(const std::string& name) {
  auto is_executable = [](const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
  };
  if (name.empty()) return std::nullopt;
  if (name.find('/') != std::string::npos) {
    if (is_executable(name)) return name;
    return std::nullopt;
  }
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    dirs = absl::StrSplit(path, ':', absl::SkipEmpty());
  }
  for (const char* d : {"/usr/local/sbin", "/usr/sbin", "/sbin"}) dirs.emplace_back(d);
  for (const auto& dir : dirs) {
    std::string candidate = absl::StrCat(dir, "/", name);
    if (is_executable(candidate)) return candidate;
  }
  return std::nullopt;
}

std::string describe_failure(const std::vector<std::string>& argv, const ExecResult& result) {
  std::string cmd = absl::StrJoin(argv, " ");
  std::string how = result.signal != 0 ? absl::StrCat("was killed by signal ", result.signal)
                                       : absl::StrCat("exited with status ", result.exit_code);
  std::string said = one_line(result.err.empty() ? result.out : result.err);
  return absl::StrCat("`", cmd, "` ", how, said.empty() ? "" : ": ", said);
}

}  // namespace tern
