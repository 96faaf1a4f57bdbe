#include "agent/exec.h"

#include "agent/process_launcher.h"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include "tests/support/eventually.h"
#include "tests/support/temp_dir.h"

namespace tern {
namespace {

using ::testing::HasSubstr;

int open_fds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n;
}

TEST(RunCommandTest, CapturesOutputAndExitStatus) {
  auto r = run_command({"sh", "-c", "echo out; echo err >&2; exit 3"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->signal, 0);
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
  EXPECT_FALSE(r->success());
  EXPECT_EQ(describe_failure({"sh", "-c", "x"}, *r), "`sh -c x` exited with status 3: err");
}

TEST(RunCommandTest, FeedsStdin) {
  std::string big(3 * 1024 * 1024 + 7, 'x');  // far more than a pipe buffer
  auto r = run_command({"cat"}, big);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->success());
  EXPECT_EQ(r->out.size(), big.size());
  EXPECT_EQ(r->out, big);

  r = run_command({"cat"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->out, "") << "stdin is closed at once when there is nothing to feed";
}

TEST(RunCommandTest, ProgramThatIgnoresStdinDoesNotHurtTheCaller) {
  auto r = run_command({"true"}, std::string(8 * 1024 * 1024, 'x'));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->success());
}

TEST(RunCommandTest, ReportsMissingProgramAndEmptyArgv) {
  auto r = run_command({"no-such-program-for-tern-tests"});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("no-such-program-for-tern-tests"));
  r = run_command({"/nonexistent/dir/prog"});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  r = run_command({});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RunCommandTest, ReportsDeathBySignal) {
  auto r = run_command({"sh", "-c", "kill -9 $$"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->signal, SIGKILL);
  EXPECT_EQ(r->exit_code, -1);
  EXPECT_FALSE(r->success());
}

// Whether `pid` is a live process (not gone, not a zombie awaiting its reaper).
bool alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  auto close_paren = line.rfind(')');
  return close_paren != std::string::npos && close_paren + 2 < line.size() && line[close_paren + 2] != 'Z';
}

using testing::eventually;

TEST(RunCommandTest, KillsTheProcessGroupOfProgramsThatOverrunTheTimeout) {
  // The shell prints the pid of its own child, then waits for it.
  auto r = run_command({"sh", "-c", "sleep 60 & echo pid=$!. >&2; wait"}, {}, Millis(300));
  ASSERT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  std::string message(r.status().message());
  auto at = message.find("pid=");
  ASSERT_NE(at, std::string::npos) << message;
  pid_t sleeper = std::stoi(message.substr(at + 4));
  EXPECT_TRUE(eventually([&] { return !alive(sleeper); }, std::chrono::seconds(10)))
      << "the grandchild in the same process group was killed too";
}

TEST(RunCommandTest, DoesNotWaitForGrandchildrenHoldingThePipes) {
  auto r = run_command({"sh", "-c", "sleep 60 & echo $!"}, {}, Millis(60'000));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->success());
  pid_t sleeper = std::stoi(r->out);
  EXPECT_TRUE(alive(sleeper)) << "returned while the grandchild still holds stdout";
  kill(sleeper, SIGKILL);
}

TEST(RunCommandTest, ChildSeesOnlyStdioAndDefaultSignals) {
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  int leaked = dup(1);  // not O_CLOEXEC
  auto fds = run_command({"ls", "/proc/self/fd"});
  auto status = run_command({"grep", "SigBlk", "/proc/self/status"});
  close(leaked);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ASSERT_TRUE(fds.ok()) << fds.status();
  // ls's own fds: 0, 1, 2 and the one for the directory it lists.
  EXPECT_EQ(fds->out, "0\n1\n2\n3\n");
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->out, "SigBlk:\t0000000000000000\n");
}

// A slot gets stdin, its log and nothing else of the agent's: an inherited
// socket (the agent's /metrics listener, a client connection) would stay
// open as long as the slot runs, and keep the agent from binding it again
// after a restart.
TEST(SystemLauncherTest, ASlotInheritsNoDescriptorOfTheAgent) {
  testing::TempDir dir;
  int leaked = dup(1);  // not O_CLOEXEC, as an Asio socket is
  auto launcher = make_system_process_launcher();
  LaunchSpec spec;
  spec.argv = {"/bin/sh", "-c", "ls /proc/$$/fd"};
  spec.log_path = dir.file("slot.log");
  auto h = launcher->start(spec);
  close(leaked);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_TRUE(eventually([&] { return launcher->poll(*h).has_value(); }));
  std::ifstream in(spec.log_path);
  std::string listed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(listed, "0\n1\n2\n") << "fd " << leaked << " leaked into the slot";
}

TEST(RunCommandTest, LeaksNoFds) {
  int before = open_fds();
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(run_command({"true"}).ok());
    ASSERT_FALSE(run_command({"no-such-program-for-tern-tests"}).ok());
    ASSERT_FALSE(run_command({"sleep", "5"}, {}, Millis(10)).ok());
  }
  EXPECT_EQ(open_fds(), before);
}

TEST(FindExecutableTest, SearchesPathAndSbin) {
  auto sh = find_executable("sh");
  ASSERT_TRUE(sh.has_value());
  EXPECT_EQ(sh->front(), '/');
  EXPECT_EQ(find_executable("/bin/sh"), "/bin/sh");
  EXPECT_FALSE(find_executable("no-such-program-for-tern-tests").has_value());
  EXPECT_FALSE(find_executable("/nonexistent/sh").has_value());
  EXPECT_FALSE(find_executable("").has_value());
}

}  // namespace
}  // namespace tern
