#include "ctl/ctl.h"

#include <google/protobuf/util/time_util.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include "ctl/ctl_internal.h"
#include "ctl/rollout_view.h"
#include "ctl/table.h"
#include "core/version.h"
#include "tests/support/command.h"
#include "tests/support/temp_dir.h"

namespace tern {
namespace {

struct CtlRun {
  int code;
  std::string out;
  std::string err;
};

CtlRun ctl(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  int code = run_ctl(args, out, err);
  return {code, out.str(), err.str()};
}

TEST(CtlTest, UnreachableCoordinatorIsOneLineAndExitCode3) {
  // Port 1 on loopback: nothing listens there on a sane machine.
  CtlRun r = ctl({"--insecure", "--coordinator", "127.0.0.1:1", "--timeout", "2s", "hosts"});
  EXPECT_EQ(r.code, kExitUnavailable);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("127.0.0.1:1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tern-coordinator"), std::string::npos) << "says what to do next";
  EXPECT_TRUE(r.out.empty());
}

TEST(CtlTest, NoCredentialsIsAUsageErrorThatSaysWhatToGive) {
  CtlRun r = ctl({"--coordinator", "127.0.0.1:1", "hosts"});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_NE(r.err.find("--ca"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--insecure"), std::string::npos) << r.err;
  CtlRun both = ctl({"--insecure", "--token", "x", "hosts"});
  EXPECT_EQ(both.code, kExitUsage) << "plaintext and a token do not go together";
}

// A token given with --token is in ternctl's argv, which every local user
// can read in `ps`; --token-file and TERN_TOKEN keep it out of there.
TEST(CtlTest, TheTokenCanComeFromAFileAndTokenSaysItIsVisibleInPs) {
  CtlRun help = ctl({"--help"});
  ASSERT_EQ(help.code, kExitOk);
  EXPECT_NE(help.out.find("--token-file"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("visible"), std::string::npos) << "--token says it shows in ps: " << help.out;

  testing::TempDir dir;
  const std::string missing = dir.file("nope");
  CtlRun gone = ctl({"--coordinator", "127.0.0.1:1", "--ca", dir.file("ca.crt"), "--token-file", missing, "hosts"});
  EXPECT_EQ(gone.code, kExitUsage) << gone.err;
  EXPECT_NE(gone.err.find(missing), std::string::npos) << gone.err;
  EXPECT_EQ(std::count(gone.err.begin(), gone.err.end(), '\n'), 1) << gone.err;

  std::ofstream(dir.file("empty")) << "\n";
  CtlRun empty = ctl({"--coordinator", "127.0.0.1:1", "--ca", dir.file("ca.crt"), "--token-file", dir.file("empty"),
                      "hosts"});
  EXPECT_EQ(empty.code, kExitUsage) << empty.err;
  EXPECT_NE(empty.err.find("empty"), std::string::npos) << empty.err;

  std::ofstream(dir.file("token")) << "tern_secret\n";
  CtlRun both = ctl({"--token", "x", "--token-file", dir.file("token"), "hosts"});
  EXPECT_EQ(both.code, kExitUsage) << "one token at a time: " << both.err;
  CtlRun plain = ctl({"--insecure", "--token-file", dir.file("token"), "hosts"});
  EXPECT_EQ(plain.code, kExitUsage) << "plaintext and a token do not go together: " << plain.err;
}

TEST(CtlTest, UsageErrorsExit2) {
  EXPECT_EQ(ctl({}).code, kExitUsage);
  EXPECT_EQ(ctl({"frobnicate"}).code, kExitUsage);
  EXPECT_EQ(ctl({"hosts", "-o", "yaml"}).code, kExitUsage);
  CtlRun bad_sel = ctl({"--insecure", "hosts", "-l", "zone=a b"});
  EXPECT_EQ(bad_sel.code, kExitUsage);
  EXPECT_NE(bad_sel.err.find("label selector"), std::string::npos);
  EXPECT_EQ(ctl({"--insecure", "--timeout", "soon", "hosts"}).code, kExitUsage);
}

TEST(CtlTest, ClientVersionNeedsNoCoordinator) {
  CtlRun r = ctl({"version", "--client"});
  EXPECT_EQ(r.code, kExitOk);
  EXPECT_NE(r.out.find(kVersion), std::string::npos);
  CtlRun j = ctl({"version", "--client", "-o", "json"});
  EXPECT_EQ(j.code, kExitOk);
  EXPECT_NE(j.out.find("\"coordinator\": null"), std::string::npos) << j.out;
}

TEST(CtlTest, VersionFlagNeedsNoCredentials) {
  CtlRun r = ctl({"--version"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.out, std::string("ternctl ") + kVersion + "\n");
}

// A typo gets the nearest real command or flag, and the help to read.
TEST(CtlTest, UnknownCommandsAndFlagsSayWhatWasMeant) {
  CtlRun hots = ctl({"hots"});
  EXPECT_EQ(hots.code, kExitUsage);
  EXPECT_EQ(hots.err, "ternctl: unknown command \"hots\" for `ternctl`; did you mean `ternctl hosts`? (see "
                      "`ternctl --help`)\n");
  CtlRun stat = ctl({"--insecure", "rollout", "stat", "web-1"});
  EXPECT_EQ(stat.code, kExitUsage);
  EXPECT_NE(stat.err.find("did you mean `ternctl rollout status`?"), std::string::npos) << stat.err;
  EXPECT_NE(stat.err.find("(see `ternctl rollout --help`)"), std::string::npos) << stat.err;
  CtlRun flag = ctl({"hosts", "--verison"});
  EXPECT_EQ(flag.code, kExitUsage);
  EXPECT_NE(flag.err.find("unknown flag --verison for `ternctl hosts`; did you mean --version?"), std::string::npos)
      << flag.err;
  CtlRun valued = ctl({"--coordinator", "x:1", "host", "deploy", "h1", "web", "--versoin", "2"});
  EXPECT_NE(valued.err.find("did you mean --version?"), std::string::npos)
      << "a flag's value is not taken for a command: " << valued.err;
  CtlRun far = ctl({"zzzzzz"});
  EXPECT_NE(far.err.find("unknown command \"zzzzzz\" for `ternctl`; it has "), std::string::npos) << far.err;
}

// The completion script comes from the same tree that parses: it offers
// the subcommands and flags of where the words typed so far lead.
TEST(CtlTest, BashCompletionOffersTheCommandsAndFlagsOfEachLevel) {
  CtlRun r = ctl({"completion", "bash"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("complete -F _ternctl ternctl"), std::string::npos);
  testing::TempDir dir;
  std::ofstream(dir.file("c.sh")) << r.out;
  auto offer = [&](const std::string& words, int cword) {
    return testing::run_cmd({"bash", "-c",
                             "source \"$0\"; COMP_WORDS=(" + words + "); COMP_CWORD=" + std::to_string(cword) +
                                 "; _ternctl; echo \"${COMPREPLY[*]}\"",
                             dir.file("c.sh")})
        .out;
  };
  EXPECT_EQ(offer("ternctl rollout st", 2), "start status\n");
  EXPECT_EQ(offer("ternctl --insecure service d", 3), "diff delete\n");
  EXPECT_NE(offer("ternctl host deploy h1 web --w", 5).find("--wait"), std::string::npos);
  EXPECT_EQ(ctl({"completion", "fish"}).code, kExitUsage);
}

TEST(CtlTest, HelpExitsZero) {
  CtlRun r = ctl({"--help"});
  EXPECT_EQ(r.code, kExitOk);
  EXPECT_NE(r.out.find("hosts"), std::string::npos);
}

TEST(CtlTest, EveryCommandHasHelp) {
  for (std::vector<std::string> cmd : std::vector<std::vector<std::string>>{
           {"hosts"}, {"version"}, {"service", "apply"}, {"service", "list"}, {"artifact", "push"},
           {"artifact", "list"}, {"whoami"}, {"token", "create"}, {"token", "list"}, {"token", "revoke"},
           {"audit"}, {"host", "deploy"}, {"host", "rollback"}, {"host", "status"}, {"host", "history"},
           {"rollout", "plan"}, {"rollout", "start"}, {"rollout", "watch"}, {"rollout", "status"},
           {"rollout", "list"}, {"rollout", "history"}, {"rollout", "pause"}, {"rollout", "resume"},
           {"rollout", "promote"}, {"rollout", "abort"}, {"rollout", "rollback"}}) {
    const std::string name = cmd.back();
    cmd.push_back("--help");
    CtlRun r = ctl(cmd);
    EXPECT_EQ(r.code, kExitOk) << name << ": " << r.err;
    EXPECT_NE(r.out.find(name), std::string::npos) << r.out;
  }
}

// Flags are checked before anything is sent: port 1 would answer with exit
// code 3, so exit code 2 says the command never called.
TEST(CtlTest, BadFlagsAreUsageErrorsBeforeAnyCall) {
  const std::vector<std::string> global{"--insecure", "--coordinator", "127.0.0.1:1", "--timeout", "2s"};
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), global.begin(), global.end());
    return ctl(args);
  };
  CtlRun waves = run({"rollout", "start", "web", "--version", "2", "--waves", "1,ten%"});
  EXPECT_EQ(waves.code, kExitUsage);
  EXPECT_NE(waves.err.find("--waves: \"ten%\""), std::string::npos) << waves.err;
  CtlRun range = run({"rollout", "plan", "web", "--version", "2", "--waves", "150%"});
  EXPECT_EQ(range.code, kExitUsage);
  EXPECT_NE(range.err.find("waves[0].percent"), std::string::npos) << range.err;
  EXPECT_EQ(run({"rollout", "plan", "web", "--version", "2", "--bake", "soon"}).code, kExitUsage);
  EXPECT_EQ(run({"rollout", "watch", "r1", "--wait", "soon"}).code, kExitUsage);
  EXPECT_EQ(run({"host", "deploy", "h1", "web", "--version", "2", "--weight", "0"}).code, kExitUsage);
  EXPECT_EQ(run({"host", "rollback", "h1", "web", "--wait", "soon"}).code, kExitUsage);
  EXPECT_EQ(run({"service", "apply", "-f", "/nonexistent/spec.yaml"}).code, kExitUsage);
  EXPECT_EQ(run({"artifact", "push", "/nonexistent/file", "--service", "web", "--version", "2"}).code, kExitUsage);
  // And with good flags the same commands do call: unreachable is exit code 3.
  EXPECT_EQ(run({"rollout", "plan", "web", "--version", "2", "--waves", "1,50%"}).code, kExitUnavailable);
  EXPECT_EQ(run({"rollout", "status", "r1"}).code, kExitUnavailable);
  EXPECT_EQ(run({"token", "list"}).code, kExitUnavailable);
}

TEST(TableTest, AlignsColumns) {
  Table t({"HOST", "STATE"});
  t.add({"web-1", "connected"});
  t.add({"a", "b"});
  std::ostringstream out;
  t.print(out);
  EXPECT_EQ(out.str(), "HOST   STATE\nweb-1  connected\na      b\n");
}

tern::v1::Rollout view_rollout() {
  tern::v1::Rollout r;
  r.set_id("web-7");
  r.mutable_spec()->set_service("web");
  r.mutable_spec()->mutable_release()->set_version("2.1");
  r.mutable_previous_release()->set_version("2.0");
  r.mutable_spec()->add_waves()->set_hosts(1);
  r.mutable_spec()->add_waves()->set_percent(50);
  r.mutable_spec()->add_waves()->set_percent(100);
  r.set_phase(tern::v1::ROLLOUT_PHASE_RUNNING);
  r.set_current_wave(1);
  r.set_wave_step(tern::v1::WAVE_STEP_BAKING);
  *r.mutable_created() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(1'000'000);
  *r.mutable_bake_until() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(1'000'000 + 200'000);
  auto host = [&](const std::string& id, uint32_t wave, tern::v1::HostRolloutState s) {
    auto* h = r.add_hosts();
    h->set_host_id(id);
    h->set_wave(wave);
    h->set_state(s);
  };
  host("h0", 0, tern::v1::HOST_ROLLOUT_STATE_ON_NEW);
  for (int i = 1; i <= 4; ++i) host("h" + std::to_string(i), 1, tern::v1::HOST_ROLLOUT_STATE_ON_NEW);
  host("h5", 1, tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE);
  for (int i = 6; i <= 9; ++i) host("h" + std::to_string(i), 2, tern::v1::HOST_ROLLOUT_STATE_WAITING);
  return r;
}

TEST(RolloutViewTest, EachWaveIsABarWithItsCountsAndTheCurrentStepCountsDown) {
  auto lines = rollout_view(view_rollout(), 1'000'000 + 80'000, {"  12:00:01  wave_started: wave 2"}, {}, false);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[0], "rollout web-7: web 2.0 -> 2.1, running, started 1m20s ago");
  EXPECT_EQ(lines[1], "  wave 1/3  1 host   [####################] 1/1 on 2.1  done");
  EXPECT_EQ(lines[2], "  wave 2/3  50%      [################xxxx] 4/5 on 2.1, 1 failed  baking, 2m left");
  EXPECT_EQ(lines[3], "  wave 3/3  100%     [....................] 0/4 on 2.1, 4 waiting  next");
  EXPECT_EQ(lines[4], "  12:00:01  wave_started: wave 2");
}

TEST(RolloutViewTest, WhatAWaveWaitsForIsNamedWithTheHostsThatAreAway) {
  auto r = view_rollout();
  r.set_current_wave(2);
  r.set_wave_step(tern::v1::WAVE_STEP_DEPLOYING);
  r.mutable_hosts(6)->set_state(tern::v1::HOST_ROLLOUT_STATE_DEPLOYING);
  std::map<std::string, AwayHost> away{{"h6", {"disconnected", 1'000'000}}, {"h7", {"unreachable", 1'030'000}}};
  auto lines = rollout_view(r, 1'000'000 + 90'000, {}, away, false);
  ASSERT_GE(lines.size(), 5u);
  EXPECT_EQ(lines.back(),
            "  waiting on 2 host(s) not connected: h6 (disconnected 1m30s ago), h7 (unreachable 1m ago); the "
            "progress deadline counts them as failed");
  r.set_wave_step(tern::v1::WAVE_STEP_AWAITING_GATE);
  r.mutable_spec()->mutable_waves(2)->set_gate_webhook("cab");
  EXPECT_NE(rollout_view(r, 1'090'000, {}, {}, false)[3].find("waits for webhook cab"), std::string::npos);
  auto colored = rollout_view(r, 1'090'000, {}, {}, true);
  EXPECT_NE(colored[0].find("\x1b["), std::string::npos);
}

TEST(EventLogTest, PerHostEventsOfALargeWaveFoldIntoOneLine) {
  EventLog log;
  std::vector<std::string> lines;
  auto add = [&](tern::v1::RolloutEventKind kind, const std::string& message) {
    tern::v1::RolloutEvent e;
    e.set_kind(kind);
    e.set_message(message);
    for (auto& l : log.add(e)) lines.push_back(l);
  };
  add(tern::v1::ROLLOUT_EVENT_KIND_WAVE_STARTED, "wave 1 of 1: 1000 host(s)");
  for (int i = 0; i < 1000; ++i) add(tern::v1::ROLLOUT_EVENT_KIND_HOST_ON_NEW, "h" + std::to_string(i) + " on 2");
  add(tern::v1::ROLLOUT_EVENT_KIND_SUCCEEDED, "web 2 is on all 1000 hosts");
  ASSERT_EQ(lines.size(), 1u + EventLog::kFirstHostLines + 2u) << "never a line per host";
  EXPECT_NE(lines[3].find("host_on_new: h2 on 2"), std::string::npos) << lines[3];
  EXPECT_NE(lines[4].find("host_on_new: 997 more host(s) (the last: h999 on 2)"), std::string::npos) << lines[4];
  EXPECT_NE(lines[5].find("succeeded: web 2 is on all 1000 hosts"), std::string::npos) << lines[5];
  EXPECT_TRUE(log.flush().empty());
}

// One format for every recorded time ternctl prints, local and with its
// date; "-" for none.
TEST(CtlTimeTest, RecordedTimesAreLocalWithTheirDate) {
  google::protobuf::Timestamp t;
  EXPECT_EQ(when(t), "-");
  t.set_seconds(1'795'822'446);
  const std::string w = when(t);
  ASSERT_EQ(w.size(), 19u) << w;
  EXPECT_EQ(w[4], '-');
  EXPECT_EQ(w[10], ' ');
  EXPECT_EQ(w.substr(11), clock_time(t)) << "the same clock as live progress lines";
}

}  // namespace
}  // namespace tern
