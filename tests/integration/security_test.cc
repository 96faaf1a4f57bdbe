// Refusals, end to end: a coordinator with mutual TLS, agents and ternctl
// with certificates from a test CA (scripts/tern-pki.sh), and every way in
// that must stay shut. Each test asserts the clear error and that nothing
// changed on the host.
#include <signal.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/tls.h"
#include "core/version.h"
#include "tern/v1/admin.grpc.pb.h"
#include "tern/v1/agent.grpc.pb.h"
#include "tern/v1/fleet.grpc.pb.h"
#include "tern/v1/service.grpc.pb.h"
#include "tests/integration/harness.h"

namespace tern::testing {
namespace {

namespace fs = std::filesystem;

class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (the agent owns nftables state; CI runs as root)";
    pki_ = dir_.file("pki");
    pki({"init", pki_});
    pki({"coordinator", pki_, "coordinator"});
    pki({"agent", pki_, "web-1", "role=web"});
    pki({"agent", pki_, "web-2", "role=web"});
    pki({"operator", pki_, "alice", "admin"});
    pki({"operator", pki_, "olga", "operator"});
    pki({"operator", pki_, "victor", "viewer"});
    ASSERT_EQ(run_cmd({"env", "TERN_PKI_DAYS=-1", TERN_PKI_SCRIPT, "agent", pki_, "web-3", "role=web"}).code, 0);
    rogue_ = dir_.file("rogue");
    pki({"init", rogue_});
    pki({"agent", rogue_, "web-4", "role=web"});
    table_ = "ternsec" + std::to_string(::getpid() % 100000);

    coordinator_ = std::make_unique<Process>(
        TERN_COORDINATOR_BIN,
        std::vector<std::string>{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--database",
                                 dir_.file("c.db"),
                                 "--ready-file", dir_.file("ready.json"), "--tls-ca", pki_ + "/ca.crt", "--tls-cert",
                                 pki_ + "/coordinator.crt", "--tls-key", pki_ + "/coordinator.key",
                                 "--heartbeat-interval", "200ms", "--unreachable-after", "2s"},
        dir_.file("coordinator.log"));
    ASSERT_TRUE(eventually([&] { return read_file(dir_.file("ready.json")).find("grpc") != std::string::npos; }))
        << coordinator_->log();
    address_ = ready_address(read_file(dir_.file("ready.json")), "grpc");
    metrics_ = ready_address(read_file(dir_.file("ready.json")), "metrics");
  }

  void TearDown() override {
    for (auto& [id, a] : agents_) a->signal(SIGKILL);
    // Slots live in their own process groups and outlive a killed agent:
    // stop those this test's agents started (named by their state dirs).
    for (const auto& e : fs::directory_iterator("/proc")) {
      const std::string pid = e.path().filename().string();
      if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
      const std::string env = read_file(e.path().string() + "/environ");
      if (env.find("TERN_SLOT_ID=" + dir_.path().string()) != std::string::npos) ::kill(std::stoi(pid), SIGKILL);
    }
    if (coordinator_) coordinator_->signal(SIGKILL);
    run_cmd({"nft", "delete", "table", "inet", table_});
  }

  void pki(std::vector<std::string> args) {
    args.insert(args.begin(), TERN_PKI_SCRIPT);
    auto r = run_cmd(args);
    ASSERT_EQ(r.code, 0) << r.err;
  }

  // ternctl as one of the operators (by certificate), or with a token.
  CommandResult ctl(const std::string& who, std::vector<std::string> args) const {
    std::vector<std::string> argv{TERN_CTL_BIN, "--coordinator", address_, "--ca", pki_ + "/ca.crt"};
    if (who.rfind("token:", 0) == 0) {
      argv.insert(argv.end(), {"--token", who.substr(6)});
    } else {
      argv.insert(argv.end(), {"--cert", pki_ + "/operator-" + who + ".crt", "--key", pki_ + "/operator-" + who + ".key"});
    }
    argv.insert(argv.end(), args.begin(), args.end());
    return run_cmd(argv);
  }

  // An agent with the given certificate (from `ca_dir`) and extra config.
  Process& start_agent(const std::string& cert_host, const std::string& ca_dir, const std::string& extra = "") {
    const std::string yaml = dir_.file("agent-" + cert_host + ".yaml");
    std::ofstream(yaml) << "coordinator: " << address_ << "\n"
                        << (extra.find("labels:") == std::string::npos ? "labels: {role: web}\n" : "") << "state_dir: "
                        << dir_.file("state-" + cert_host) << "\nheartbeat_interval: 200ms\n"
                        << "reconnect: {initial: 100ms, max: 300ms}\nport_mapper: {table: " << table_ << "}\n"
                        << "tls: {ca: " << pki_ << "/ca.crt, cert: " << ca_dir << "/agent-" << cert_host
                        << ".crt, key: " << ca_dir << "/agent-" << cert_host << ".key}\n"
                        // The package's tern-app is not on a test machine.
                        << (extra.find("policy:") == std::string::npos ? "policy: {default_user: nobody}\n" : "")
                        << extra;
    auto& p = agents_[cert_host];
    p = std::make_unique<Process>(TERN_AGENT_BIN, std::vector<std::string>{"-c", yaml},
                                  dir_.file("agent-" + cert_host + ".log"));
    return *p;
  }

  bool connected(const std::string& host) const {
    auto r = ctl("alice", {"hosts", "-o", "json"});
    auto at = r.out.find("\"" + host + "\"");
    return at != std::string::npos && r.out.find("HOST_STATE_CONNECTED", at) != std::string::npos;
  }

  // A gRPC channel to the coordinator presenting `cert` (a path prefix
  // without .crt/.key), or none.
  std::shared_ptr<grpc::Channel> channel(const std::string& cert_prefix) const {
    TlsFiles f{pki_ + "/ca.crt", cert_prefix.empty() ? "" : cert_prefix + ".crt",
               cert_prefix.empty() ? "" : cert_prefix + ".key", ""};
    auto tls = load_tls(f, false, "test");
    EXPECT_TRUE(tls.ok()) << tls.status();
    return grpc::CreateChannel(address_, tls_channel_credentials(*tls));
  }

  // A hand-made agent stream presenting `cert` (a path prefix) that says
  // hello as `host_id`. It keeps its side open.
  std::unique_ptr<grpc::ClientReaderWriter<tern::v1::AgentMessage, tern::v1::CoordinatorMessage>> hand_made_agent(
      grpc::ClientContext& ctx, const std::string& cert, const std::string& host_id) const {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    auto stream = tern::v1::AgentService::NewStub(channel(cert))->Connect(&ctx);
    tern::v1::AgentMessage hello;
    hello.mutable_hello()->set_host_id(host_id);
    hello.mutable_hello()->set_protocol(kProtocolRevision);
    stream->Write(hello);
    return stream;
  }

  void push_service(const std::string& extra_spec = "") {
    std::ofstream(dir_.file("web.yaml"))
        << "name: web\nselector: role=web\nports: [{public: 8080, blue: 9001, green: 9002}]\n"
        << "argv: [\"{release_dir}/app\", \"--port\", \"{port}\", \"--version\", \"{version}\"]\n"
        << "health: {tcp: {}, healthy_deadline: 5s}\n"
        << extra_spec;
    auto r = ctl("alice", {"service", "apply", "-f", dir_.file("web.yaml")});
    ASSERT_EQ(r.code, 0) << r.err;
  }

  // Nothing of `service` was staged or started on the agent's host.
  void expect_untouched(const std::string& host) {
    const fs::path releases = fs::path(dir_.file("state-" + host)) / "web" / "releases";
    if (fs::exists(releases)) {
      for (const auto& e : fs::directory_iterator(releases)) ADD_FAILURE() << "staged: " << e.path();
    }
    auto status = ctl("alice", {"host", "status", host, "-o", "json"});
    EXPECT_EQ(status.out.find("SLOT_PHASE_RUNNING"), std::string::npos) << status.out;
    EXPECT_EQ(status.out.find("SLOT_PHASE_HEALTHY"), std::string::npos) << status.out;
  }

  TempDir dir_;
  std::string pki_, rogue_, table_, address_;
  std::string metrics_;  // /metrics and the dashboard
  std::unique_ptr<Process> coordinator_;
  std::map<std::string, std::unique_ptr<Process>> agents_;
};

TEST_F(SecurityTest, CertificatesFromAnotherCaExpiredOrAbsentAreRefused) {
  start_agent("web-1", pki_);
  start_agent("web-4", rogue_);  // signed by a CA the coordinator does not trust
  start_agent("web-3", pki_);    // expired
  ASSERT_TRUE(eventually([&] { return connected("web-1"); })) << agents_["web-1"]->log();

  // The same handshakes, made directly: refused before any call.
  tern::v1::Principal who;
  for (const std::string& cert : {rogue_ + "/agent-web-4", pki_ + "/agent-web-3"}) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    auto st = tern::v1::AdminService::NewStub(channel(cert))->WhoAmI(&ctx, {}, &who);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << cert << ": " << st.error_message();
  }
  // TLS without a certificate or a token: who are you?
  grpc::ClientContext ctx;
  tern::v1::ListHostsResponse hosts;
  auto st = tern::v1::FleetService::NewStub(channel(""))->ListHosts(&ctx, {}, &hosts);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(st.error_message().find("--cert"), std::string::npos) << st.error_message();
  // Plaintext is not spoken at all; ternctl says so (exit 6), not "cannot reach".
  auto plain = run_cmd({TERN_CTL_BIN, "--insecure", "--coordinator", address_, "--timeout", "2s", "hosts"});
  EXPECT_EQ(plain.code, 6) << plain.err;

  auto r = ctl("victor", {"hosts", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.find("web-4"), std::string::npos) << "nothing registered for the rogue CA's agent";
  EXPECT_EQ(r.out.find("web-3"), std::string::npos) << "nothing registered for the expired certificate";
  EXPECT_TRUE(agents_["web-4"]->running()) << "it keeps serving what it has and keeps trying";
}

// Credentials that will be refused are reported as such, exit 6, in one
// line that says what to change: never as an outage (exit 3), never with
// gRPC's own log lines.
TEST_F(SecurityTest, TernctlSaysWhyItsCredentialsAreRefused) {
  ASSERT_EQ(run_cmd({"env", "TERN_PKI_DAYS=-1", TERN_PKI_SCRIPT, "operator", pki_, "eve", "operator"}).code, 0);
  pki({"operator", rogue_, "mallory", "admin"});
  auto as = [&](const std::string& cert, const std::string& key, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{TERN_CTL_BIN, "--coordinator", address_, "--timeout", "5s"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (std::find(extra.begin(), extra.end(), "--ca") == extra.end()) argv.insert(argv.end(), {"--ca", pki_ + "/ca.crt"});
    argv.insert(argv.end(), {"--cert", cert, "--key", key, "hosts"});
    return run_cmd(argv);
  };
  auto one_line = [](const CommandResult& r) { return std::count(r.err.begin(), r.err.end(), '\n') == 1; };

  auto expired = as(pki_ + "/operator-eve.crt", pki_ + "/operator-eve.key");
  EXPECT_EQ(expired.code, 6) << expired.err;
  EXPECT_NE(expired.err.find("operator-eve.crt (CN=eve) expired on "), std::string::npos) << expired.err;
  EXPECT_TRUE(one_line(expired)) << expired.err;

  auto rogue = as(rogue_ + "/operator-mallory.crt", rogue_ + "/operator-mallory.key");
  EXPECT_EQ(rogue.code, 6) << rogue.err;
  EXPECT_NE(rogue.err.find("is not signed by the CA in " + pki_ + "/ca.crt"), std::string::npos) << rogue.err;

  auto mismatch = as(pki_ + "/operator-alice.crt", pki_ + "/operator-olga.key");
  EXPECT_EQ(mismatch.code, 6) << mismatch.err;
  EXPECT_NE(mismatch.err.find("operator-olga.key is not the private key of "), std::string::npos) << mismatch.err;
  EXPECT_TRUE(one_line(mismatch)) << "no raw gRPC log lines: " << mismatch.err;

  // Our certificate is fine, but the CA we give does not vouch for the
  // coordinator's.
  auto wrong_ca = as(rogue_ + "/operator-mallory.crt", rogue_ + "/operator-mallory.key", {"--ca", rogue_ + "/ca.crt"});
  EXPECT_EQ(wrong_ca.code, 6) << wrong_ca.err;
  EXPECT_NE(wrong_ca.err.find("presented a certificate that the CA in --ca did not sign"), std::string::npos)
      << wrong_ca.err;
  EXPECT_TRUE(one_line(wrong_ca)) << wrong_ca.err;

  auto plain = run_cmd({TERN_CTL_BIN, "--insecure", "--coordinator", address_, "--timeout", "5s", "hosts"});
  EXPECT_EQ(plain.code, 6) << plain.err;
  EXPECT_NE(plain.err.find("it requires TLS; drop --insecure"), std::string::npos) << plain.err;

  // TLS against a coordinator that runs without it.
  Process insecure(TERN_COORDINATOR_BIN,
                   std::vector<std::string>{"--insecure", "--listen", "127.0.0.1:0", "--metrics-listen", "",
                                            "--database", dir_.file("plain.db"), "--ready-file",
                                            dir_.file("plain.json")},
                   dir_.file("plain.log"));
  ASSERT_TRUE(eventually([&] { return read_file(dir_.file("plain.json")).find("grpc") != std::string::npos; }));
  const std::string plain_address = ready_address(read_file(dir_.file("plain.json")), "grpc");
  auto tls_to_plain = run_cmd({TERN_CTL_BIN, "--coordinator", plain_address, "--timeout", "5s", "--ca",
                               pki_ + "/ca.crt", "--cert", pki_ + "/operator-alice.crt", "--key",
                               pki_ + "/operator-alice.key", "hosts"});
  EXPECT_EQ(tls_to_plain.code, 6) << tls_to_plain.err;
  EXPECT_NE(tls_to_plain.err.find("does not speak TLS"), std::string::npos) << tls_to_plain.err;

  // And an outage is still an outage.
  insecure.signal(SIGKILL);
  insecure.wait();
  auto gone = run_cmd({TERN_CTL_BIN, "--insecure", "--coordinator", plain_address, "--timeout", "2s", "hosts"});
  EXPECT_EQ(gone.code, 3) << gone.err;
  EXPECT_NE(gone.err.find("cannot reach the coordinator"), std::string::npos) << gone.err;
}

// The dashboard's API needs a live token (a viewer's is enough); the page
// itself is only markup and script.
TEST_F(SecurityTest, TheDashboardsApiNeedsAToken) {
  auto get = [&](const std::string& path, const std::string& token) {
    std::vector<std::string> argv{"curl", "-s", "-w", "\n%{http_code}", "http://" + metrics_ + path};
    if (!token.empty()) argv.insert(argv.end(), {"-H", "Authorization: Bearer " + token});
    return run_cmd(argv).out;
  };
  const std::string none = get("/api/v1/hosts", "");
  EXPECT_NE(none.find("\n401"), std::string::npos) << none;
  EXPECT_NE(none.find("ternctl token create NAME --role viewer"), std::string::npos) << none;
  EXPECT_NE(get("/api/v1/rollouts", "tern_not_a_real_token").find("\n401"), std::string::npos);
  auto created = ctl("alice", {"token", "create", "wallboard", "--role", "viewer"});
  ASSERT_EQ(created.code, 0) << created.err;
  const std::string secret = created.out.substr(0, created.out.find('\n'));
  const std::string hosts = get("/api/v1/hosts", secret);
  EXPECT_NE(hosts.find("\n200"), std::string::npos) << hosts;
  EXPECT_NE(get("/api/v1/rollouts/nope", secret).find("\n404"), std::string::npos);
  const std::string page = get("/dashboard", "");
  EXPECT_NE(page.find("\n200"), std::string::npos);
  EXPECT_NE(page.find("<title>Tern</title>"), std::string::npos);
}

TEST_F(SecurityTest, AnAgentCanOnlySpeakForTheHostItsCertificateNames) {
  // Configured to claim another host: it refuses to start.
  auto& liar = start_agent("web-1", pki_, "host_id: web-2\n");
  EXPECT_EQ(liar.wait(), 2);
  EXPECT_NE(liar.log().find("differs from the certificate"), std::string::npos) << liar.log();

  // A hand-made client with web-1's certificate saying hello as web-2. It
  // keeps its side open: the coordinator must be the one to end the stream.
  grpc::ClientContext ctx;
  auto stream = hand_made_agent(ctx, pki_ + "/agent-web-1", "web-2");
  tern::v1::CoordinatorMessage msg;
  while (stream->Read(&msg)) {
  }
  auto st = stream->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_NE(st.error_message().find("web-1"), std::string::npos) << st.error_message();

  // An operator's certificate is not an agent's.
  grpc::ClientContext ctx2;
  auto op = hand_made_agent(ctx2, pki_ + "/operator-alice", "web-2");
  while (op->Read(&msg)) {
  }
  EXPECT_EQ(op->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);

  auto hosts = ctl("alice", {"hosts", "-o", "json"});
  EXPECT_EQ(hosts.out.find("web-2"), std::string::npos) << hosts.out;
}

// With one stolen agent key (web-2's), guessing command ids (epoch << 32 | n)
// and answering "succeeded" must not end a command sent to another host.
TEST_F(SecurityTest, AForgedResultFromAnotherAgentsCertificateChangesNothing) {
  start_agent("web-1", pki_);
  ASSERT_TRUE(eventually([&] { return connected("web-1"); })) << agents_["web-1"]->log();
  // A release that never listens: its deploy waits for the health deadline.
  push_service();
  std::ofstream(dir_.file("app")) << "#!/bin/sh\nexec sleep 60\n";
  fs::permissions(dir_.file("app"), fs::perms::owner_all | fs::perms::others_read | fs::perms::others_exec);
  ASSERT_EQ(ctl("alice", {"artifact", "push", dir_.file("app"), "--service", "web", "--version", "mute"}).code, 0);
  Process deploy(TERN_CTL_BIN,
                 {"--coordinator", address_, "--ca", pki_ + "/ca.crt", "--cert", pki_ + "/operator-olga.crt", "--key",
                  pki_ + "/operator-olga.key", "host", "deploy", "web-1", "web", "--version", "mute"},
                 dir_.file("deploy.log"));
  // Staged: the deploy has reached the agent and waits for the health deadline.
  ASSERT_TRUE(eventually([&] { return fs::exists(dir_.file("state-web-1") + "/web/releases/mute"); })) << deploy.log();

  auto version = ctl("alice", {"version", "-o", "json"});
  const auto at = version.out.find("\"epoch\": \"");
  ASSERT_NE(at, std::string::npos) << version.out;
  const uint64_t epoch = std::stoull(version.out.substr(at + 10));
  // A stolen key of a host no service selects (no labels in its
  // certificate), so no command of its own is among the forged ids.
  pki({"agent", pki_, "web-5"});
  grpc::ClientContext ctx;
  auto forger = hand_made_agent(ctx, pki_ + "/agent-web-5", "web-5");
  // The spec push and the deploy are the first commands of this epoch.
  for (uint64_t n = 1; n <= 3; ++n) {
    tern::v1::AgentMessage forged;
    forged.mutable_result()->set_command_id((epoch << 32) | n);
    forged.mutable_result()->set_outcome(tern::v1::COMMAND_OUTCOME_SUCCEEDED);
    forged.mutable_result()->set_message("done (forged)");
    forger->Write(forged);
  }
  tern::v1::CoordinatorMessage msg;
  while (forger->Read(&msg)) {
  }
  const grpc::Status st = forger->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();

  // The operator's deploy ends as the real agent says: never healthy.
  EXPECT_EQ(deploy.wait(), 1) << deploy.log();
  EXPECT_EQ(deploy.log().find("forged"), std::string::npos) << deploy.log();
}

// One stolen agent key cannot flood the coordinator, forge its log lines
// or reach an operator's terminal with escape sequences.
TEST_F(SecurityTest, AnAgentStreamHasSizeAndRateLimitsAndItsTextIsEscaped) {
  grpc::ClientContext ctx;
  auto agent = hand_made_agent(ctx, pki_ + "/agent-web-1", "web-1");
  tern::v1::CoordinatorMessage ack;
  ASSERT_TRUE(agent->Read(&ack) && ack.has_hello_ack());
  auto refused = [](const std::string& text) {
    tern::v1::AgentMessage m;
    m.mutable_event()->set_service("web");
    m.mutable_event()->set_kind(tern::v1::AGENT_EVENT_KIND_REFUSED);
    m.mutable_event()->set_message(text);
    return m;
  };
  ASSERT_TRUE(agent->Write(refused("policy\n[2026-11-27 00:00:00.000] [info] FORGED \x1b[2J")));
  ASSERT_TRUE(eventually([&] {
    return ctl("alice", {"host", "history", "web-1"}).out.find("FORGED") != std::string::npos;
  })) << coordinator_->log();
  auto history = ctl("victor", {"host", "history", "web-1", "-o", "json"});
  EXPECT_NE(history.out.find("policy\\\\n[2026"), std::string::npos) << history.out;
  auto table = ctl("victor", {"host", "history", "web-1"});
  EXPECT_EQ(table.out.find('\x1b'), std::string::npos) << "no escape sequence reaches the terminal";
  const std::string log = coordinator_->log();
  EXPECT_EQ(log.find("\n[2026-11-27 00:00:00.000] [info] FORGED"), std::string::npos) << "a forged log line";
  // Far more events than any agent sends: stored only up to the rate limit.
  for (int i = 0; i < 1500; ++i) {
    if (!agent->Write(refused("flood " + std::to_string(i)))) break;
  }
  ASSERT_TRUE(eventually([&] { return coordinator_->log().find("sends events faster than") != std::string::npos; }))
      << coordinator_->log();
  // A message larger than any agent sends ends the stream.
  tern::v1::AgentMessage huge = refused(std::string(1 << 20, 'x'));
  agent->Write(huge);
  tern::v1::CoordinatorMessage msg;
  while (agent->Read(&msg)) {
  }
  const grpc::Status st = agent->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  // What was stored stayed small: the flood was dropped, the big one never read into a row.
  grpc::ClientContext hctx;
  tern::v1::GetHostHistoryRequest req;
  req.set_host_id("web-1");
  req.set_limit(5000);
  tern::v1::GetHostHistoryResponse resp;
  ASSERT_TRUE(tern::v1::FleetService::NewStub(channel(pki_ + "/operator-alice"))->GetHostHistory(&hctx, req, &resp).ok());
  int floods = 0;
  for (const auto& e : resp.events()) {
    floods += e.detail().find("flood ") != std::string::npos;
    EXPECT_LT(e.detail().size(), 4096u);
    // As stored, not as JSON shows it: no newline, no escape character.
    EXPECT_EQ(e.detail().find_first_of("\n\x1b"), std::string::npos) << e.detail();
  }
  EXPECT_GT(floods, 0);
  EXPECT_LT(floods, 1000) << "the rate limit let the whole flood through";
}

// A leaked key is revoked without replacing the CA or restarting anything;
// tokens expire and say when they were last used.
TEST_F(SecurityTest, CertificatesCanBeRevokedAndTokensExpire) {
  start_agent("web-1", pki_);
  ASSERT_TRUE(eventually([&] { return connected("web-1"); })) << agents_["web-1"]->log();
  ASSERT_EQ(ctl("olga", {"whoami"}).code, 0);
  auto denied = ctl("alice", {"cert", "deny", "--cn", "olga", "--reason", "left the team"});
  ASSERT_EQ(denied.code, 0) << denied.out << denied.err;
  auto refused = ctl("olga", {"whoami"});
  EXPECT_EQ(refused.code, 6) << refused.out << refused.err;
  EXPECT_NE(refused.err.find("revoked by an admin: left the team"), std::string::npos) << refused.err;
  ASSERT_EQ(ctl("alice", {"cert", "allow", "--cn", "olga"}).code, 0);
  EXPECT_EQ(ctl("olga", {"whoami"}).code, 0);

  // An agent certificate by serial: its open stream is closed and it cannot come back.
  auto serial = run_cmd({"openssl", "x509", "-noout", "-serial", "-in", pki_ + "/agent-web-1.crt"});
  ASSERT_EQ(serial.code, 0);
  const std::string hex = serial.out.substr(serial.out.find('=') + 1, serial.out.find('\n') - serial.out.find('=') - 1);
  ASSERT_EQ(ctl("alice", {"cert", "deny", "--serial", hex, "--reason", "host stolen"}).code, 0);
  EXPECT_TRUE(eventually([&] { return !connected("web-1"); })) << agents_["web-1"]->log();
  EXPECT_TRUE(eventually([&] { return agents_["web-1"]->log().find("revoked") != std::string::npos; }))
      << agents_["web-1"]->log();
  auto list = ctl("alice", {"cert", "denied"});
  EXPECT_NE(list.out.find("host stolen"), std::string::npos) << list.out;

  // A token stops working when it expires, and says so.
  auto created = ctl("alice", {"token", "create", "short", "--role", "viewer", "--ttl", "1s"});
  ASSERT_EQ(created.code, 0) << created.err;
  const std::string secret = created.out.substr(0, created.out.find('\n'));
  ASSERT_TRUE(eventually([&] {
    return ctl("token:" + secret, {"hosts"}).err.find("expired") != std::string::npos;
  })) << ctl("token:" + secret, {"hosts"}).err;
  // A token in use says when it was last used.
  created = ctl("alice", {"token", "create", "ci", "--role", "viewer"});
  ASSERT_EQ(created.code, 0) << created.err;
  ASSERT_EQ(ctl("token:" + created.out.substr(0, created.out.find('\n')), {"hosts"}).code, 0);
  auto tokens = ctl("alice", {"token", "list", "-o", "json"});
  const auto ci = tokens.out.find("\"ci\"");
  ASSERT_NE(ci, std::string::npos) << tokens.out;
  const auto next = tokens.out.find("\"name\"", ci);
  const std::string row = tokens.out.substr(ci, next == std::string::npos ? std::string::npos : next - ci);
  EXPECT_NE(row.find("\"expires\""), std::string::npos) << row;
  EXPECT_NE(row.find("\"last_used\""), std::string::npos) << row;
}

// One agent key holding many unread downloads cannot use up the
// coordinator's descriptors (and with them its listener).
TEST_F(SecurityTest, ArtifactDownloadsAreCappedPerHost) {
  start_agent("web-1", pki_);
  ASSERT_TRUE(eventually([&] { return connected("web-1"); })) << agents_["web-1"]->log();
  push_service();
  // Larger than any flow-control window, so an unread download stays open.
  {
    std::ofstream big(dir_.file("big"));
    big << "#!/bin/sh\nexec sleep 60\n#" << std::string(48 << 20, 'x') << "\n";
  }
  fs::permissions(dir_.file("big"), fs::perms::owner_all);
  ASSERT_EQ(ctl("alice", {"artifact", "push", dir_.file("big"), "--service", "web", "--version", "big"}).code, 0);
  // Sending web-1 the deploy lets it fetch the artifact; the deploy's own outcome does not matter here.
  ctl("alice", {"host", "deploy", "web-1", "web", "--version", "big", "--wait", "1s"});
  auto listed = ctl("alice", {"artifact", "list", "-o", "json"});
  const auto at = listed.out.find("\"sha256\": \"");
  ASSERT_NE(at, std::string::npos) << listed.out;
  tern::v1::FetchArtifactRequest req;
  req.set_sha256(listed.out.substr(at + 11, 64));
  auto stub = tern::v1::AgentService::NewStub(channel(pki_ + "/agent-web-1"));
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<tern::v1::ArtifactChunk>>> held;
  grpc::StatusCode last = grpc::StatusCode::OK;
  for (int i = 0; i < 8 && last == grpc::StatusCode::OK; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    held.push_back(stub->FetchArtifact(contexts.back().get(), req));
    tern::v1::ArtifactChunk chunk;
    if (!held.back()->Read(&chunk)) last = held.back()->Finish().error_code();  // open, then left unread
  }
  EXPECT_EQ(last, grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_LE(held.size(), 5u) << "more downloads were held open than the cap";
  for (auto& c : contexts) c->TryCancel();
  // Once they are closed, the host can download again.
  ASSERT_TRUE(eventually([&] {
    grpc::ClientContext ctx;
    auto reader = stub->FetchArtifact(&ctx, req);
    tern::v1::ArtifactChunk chunk;
    const bool got = reader->Read(&chunk);
    ctx.TryCancel();
    return got;
  }));
}

TEST_F(SecurityTest, RolesAreEnforcedTokensWorkAndEveryMutatingCallIsAudited) {
  push_service();
  // A viewer reads, and may not start a rollout or change a service.
  EXPECT_EQ(ctl("victor", {"hosts"}).code, 0);
  auto start = ctl("victor", {"rollout", "start", "web", "--version", "1.0", "--waves", "100%"});
  EXPECT_EQ(start.code, 6) << start.err;
  EXPECT_NE(start.err.find("victor (viewer"), std::string::npos) << start.err;
  EXPECT_NE(start.err.find("operator or admin role"), std::string::npos) << start.err;
  EXPECT_EQ(ctl("victor", {"service", "apply", "-f", dir_.file("web.yaml")}).code, 6);
  EXPECT_EQ(ctl("olga", {"service", "apply", "-f", dir_.file("web.yaml")}).code, 6) << "services are admin's";
  // Streaming calls are refused the same way (a host deploy, an upload).
  auto deploy = ctl("victor", {"host", "deploy", "web-1", "web", "--version", "1.0"});
  EXPECT_EQ(deploy.code, 6) << deploy.out << deploy.err;
  std::filesystem::copy_file(TERN_DEMO_APP_BIN, dir_.file("app"));
  auto upload = ctl("olga", {"artifact", "push", dir_.file("app"), "--service", "web", "--version", "1.0"});
  EXPECT_EQ(upload.code, 6) << upload.err;
  EXPECT_NE(upload.err.find("admin role"), std::string::npos) << upload.err;
  auto list = ctl("alice", {"rollout", "list", "-o", "json"});
  EXPECT_EQ(list.out.find("web-"), std::string::npos) << "the refused start left nothing: " << list.out;

  // A token for a CI job: operator, then revoked.
  auto created = ctl("alice", {"token", "create", "ci", "--role", "operator"});
  ASSERT_EQ(created.code, 0) << created.err;
  const std::string secret = created.out.substr(0, created.out.find('\n'));
  ASSERT_EQ(secret.rfind("tern_", 0), 0u) << created.out;
  auto me = ctl("token:" + secret, {"whoami"});
  EXPECT_EQ(me.code, 0) << me.err;
  EXPECT_NE(me.out.find("ci (operator, by token)"), std::string::npos) << me.out;
  EXPECT_EQ(ctl("token:" + secret, {"token", "list"}).code, 6) << "tokens are admin's";
  EXPECT_EQ(ctl("token:tern_0000", {"hosts"}).code, 6) << "an unknown token";
  ASSERT_EQ(ctl("alice", {"token", "revoke", "ci"}).code, 0);
  auto revoked = ctl("token:" + secret, {"hosts"});
  EXPECT_EQ(revoked.code, 6);
  EXPECT_NE(revoked.err.find("revoked"), std::string::npos) << revoked.err;

  // The audit trail: who, what, result, for allowed and refused calls alike.
  auto audit = ctl("alice", {"audit", "-o", "json"});
  ASSERT_EQ(audit.code, 0) << audit.err;
  for (const char* want : {"StartRollout", "PERMISSION_DENIED", "victor", "ApplyService", "CreateToken", "RevokeToken"}) {
    EXPECT_NE(audit.out.find(want), std::string::npos) << want << " missing from " << audit.out;
  }
  EXPECT_EQ(ctl("olga", {"audit"}).code, 6) << "the audit trail is admin's";
}

TEST_F(SecurityTest, UnsignedOrWronglySignedReleasesAreNeverStaged) {
  for (const char* k : {"trusted", "other"}) {
    ASSERT_EQ(run_cmd({"openssl", "genpkey", "-algorithm", "ed25519", "-out", dir_.file(std::string(k) + ".pem")}).code, 0);
  }
  ASSERT_EQ(run_cmd({"openssl", "pkey", "-in", dir_.file("trusted.pem"), "-pubout", "-out", dir_.file("trusted.pub")}).code,
            0);
  start_agent("web-1", pki_, "trusted_keys: [" + dir_.file("trusted.pub") + "]\n");
  ASSERT_TRUE(eventually([&] { return connected("web-1"); })) << agents_["web-1"]->log();
  push_service();
  std::filesystem::copy_file(TERN_DEMO_APP_BIN, dir_.file("app"));
  ASSERT_EQ(ctl("alice", {"artifact", "push", dir_.file("app"), "--service", "web", "--version", "wrong-key",
                          "--sign-key", dir_.file("other.pem")})
                .code,
            0);
  ASSERT_EQ(ctl("alice", {"artifact", "push", dir_.file("app"), "--service", "web", "--version", "unsigned"}).code, 0);

  auto wrong = ctl("alice", {"host", "deploy", "web-1", "web", "--version", "wrong-key"});
  EXPECT_EQ(wrong.code, 1);
  EXPECT_NE((wrong.out + wrong.err).find("not made by any of the 1 key(s) this agent trusts"), std::string::npos)
      << wrong.out << wrong.err;
  auto unsigned_ = ctl("alice", {"host", "deploy", "web-1", "web", "--version", "unsigned"});
  EXPECT_EQ(unsigned_.code, 1);
  EXPECT_NE((unsigned_.out + unsigned_.err).find("not signed"), std::string::npos) << unsigned_.out << unsigned_.err;
  expect_untouched("web-1");
  auto history = ctl("alice", {"host", "history", "web-1"});
  EXPECT_NE(history.out.find("refused"), std::string::npos) << "reported in the host's history: " << history.out;
}

// A token on ternctl's command line is in its argv, which `ps` shows every
// local user: a file or the environment keeps it out of there.
TEST_F(SecurityTest, ATokenFromAFileOrTheEnvironmentAuthenticates) {
  auto created = ctl("alice", {"token", "create", "ci", "--role", "operator"});
  ASSERT_EQ(created.code, 0) << created.err;
  const std::string secret = created.out.substr(0, created.out.find('\n'));
  ASSERT_EQ(secret.rfind("tern_", 0), 0u) << created.out;
  const std::string file = dir_.file("ci.token");
  std::ofstream(file) << secret << "\n";

  auto by_file = run_cmd({TERN_CTL_BIN, "--coordinator", address_, "--ca", pki_ + "/ca.crt", "--token-file", file,
                          "whoami"});
  EXPECT_EQ(by_file.code, 0) << by_file.err;
  EXPECT_NE(by_file.out.find("ci (operator, by token)"), std::string::npos) << by_file.out;

  auto by_env = run_cmd({"env", "TERN_TOKEN=" + secret, TERN_CTL_BIN, "--coordinator", address_, "--ca",
                         pki_ + "/ca.crt", "whoami"});
  EXPECT_EQ(by_env.code, 0) << by_env.err;
  EXPECT_NE(by_env.out.find("ci (operator, by token)"), std::string::npos) << by_env.out;

  ASSERT_EQ(ctl("alice", {"token", "revoke", "ci"}).code, 0);
  auto revoked = run_cmd({TERN_CTL_BIN, "--coordinator", address_, "--ca", pki_ + "/ca.crt", "--token-file", file,
                          "whoami"});
  EXPECT_EQ(revoked.code, 6) << revoked.out << revoked.err;
}

TEST_F(SecurityTest, TheAgentsOwnPolicyRefusesWhatItDoesNotAllow) {
  start_agent("web-2", pki_, "policy: {services: [web], users: [nobody], ports: [9000-9999]}\n");
  ASSERT_TRUE(eventually([&] { return connected("web-2"); })) << agents_["web-2"]->log();
  // Runs as the default user (no user), not in `users`, on public port 8080:
  // twice outside the policy.
  push_service();
  ASSERT_TRUE(eventually([&] {
    return ctl("alice", {"host", "history", "web-2"}).out.find("refused") != std::string::npos;
  })) << agents_["web-2"]->log();
  auto history = ctl("alice", {"host", "history", "web-2"});
  EXPECT_NE(history.out.find("not allowed by this host's agent policy"), std::string::npos) << history.out;
  std::filesystem::copy_file(TERN_DEMO_APP_BIN, dir_.file("app"));
  ASSERT_EQ(ctl("alice", {"artifact", "push", dir_.file("app"), "--service", "web", "--version", "1.0"}).code, 0);
  auto deploy = ctl("alice", {"host", "deploy", "web-2", "web", "--version", "1.0"});
  EXPECT_EQ(deploy.code, 1) << deploy.out;
  expect_untouched("web-2");
}

// The uids of the processes running a release of `host`'s web service.
std::vector<uid_t> slot_uids(const std::string& state_dir) {
  std::vector<uid_t> uids;
  const std::string releases = state_dir + "/web/releases/";
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string cmdline = read_file(e.path().string() + "/cmdline");
    if (cmdline.rfind(releases, 0) != 0) continue;
    std::istringstream status(read_file(e.path().string() + "/status"));
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("Uid:", 0) == 0) uids.push_back(static_cast<uid_t>(std::stoul(line.substr(4))));
    }
  }
  return uids;
}

// A spec that names no user runs as the host's unprivileged default user,
// never as the agent's root; a spec that asks for root is refused unless the
// host's own config allows it, and nothing of it is started.
TEST_F(SecurityTest, ASpecWithoutAUserRunsUnprivilegedAndRootNeedsTheHostsConsent) {
  start_agent("web-1", pki_);  // policy: {default_user: nobody}, allow_root unset
  ASSERT_TRUE(eventually([&] { return connected("web-1"); })) << agents_["web-1"]->log();
  push_service();
  fs::copy_file(TERN_DEMO_APP_BIN, dir_.file("app"));
  for (const std::string v : {"1.0", "2.0"}) {
    ASSERT_EQ(ctl("alice", {"artifact", "push", dir_.file("app"), "--service", "web", "--version", v}).code, 0);
  }
  auto deploy = ctl("alice", {"host", "deploy", "web-1", "web", "--version", "1.0"});
  ASSERT_EQ(deploy.code, 0) << deploy.out << deploy.err << agents_["web-1"]->log();
  EXPECT_EQ(slot_uids(dir_.file("state-web-1")), std::vector<uid_t>{65534}) << "nobody, the default user";

  // user: root is refused while the host's policy does not allow root.
  push_service("user: root\n");
  ASSERT_TRUE(eventually([&] {
    return ctl("alice", {"host", "history", "web-1"}).out.find("policy.allow_root") != std::string::npos;
  })) << ctl("alice", {"host", "history", "web-1"}).out;
  auto refused = ctl("alice", {"host", "deploy", "web-1", "web", "--version", "2.0"});
  EXPECT_EQ(refused.code, 1) << refused.out << refused.err;
  EXPECT_NE((refused.out + refused.err).find("uid 0"), std::string::npos) << refused.out << refused.err;
  EXPECT_NE((refused.out + refused.err).find("refused it"), std::string::npos)
      << "not run under the older spec the host kept: " << refused.out << refused.err;
  EXPECT_EQ(slot_uids(dir_.file("state-web-1")), std::vector<uid_t>{65534}) << "the running release is untouched";

  // The host's own config allows it: the same spec runs as root.
  agents_["web-1"]->signal(SIGTERM);
  ASSERT_EQ(agents_["web-1"]->wait(), 0) << agents_["web-1"]->log();
  start_agent("web-1", pki_, "policy: {default_user: nobody, allow_root: true}\n");
  ASSERT_TRUE(eventually([&] { return connected("web-1"); })) << agents_["web-1"]->log();
  auto allowed = ctl("alice", {"host", "deploy", "web-1", "web", "--version", "2.0"});
  ASSERT_EQ(allowed.code, 0) << allowed.out << allowed.err << agents_["web-1"]->log();
  auto uids = slot_uids(dir_.file("state-web-1"));
  EXPECT_NE(std::find(uids.begin(), uids.end(), 0u), uids.end())
      << "2.0 runs as root; uids: " << ::testing::PrintToString(uids) << agents_["web-1"]->log();
}

// Whoever can reach the port cannot fill the coordinator's disk: calls no
// one authenticated are counted and logged at a bounded rate, not stored;
// what is stored is short and has no secrets.
TEST_F(SecurityTest, UnauthenticatedCallsAreCountedNotStoredAndStoredRequestsAreShortAndRedacted) {
  auto anonymous = tern::v1::ServiceService::NewStub(channel(""));
  tern::v1::ApplyServiceRequest big;
  big.mutable_spec()->set_name("web");
  (*big.mutable_spec()->mutable_env())["PAD"] = std::string(16 << 10, 'x');
  for (int i = 0; i < 300; ++i) {
    grpc::ClientContext ctx;
    tern::v1::ApplyServiceResponse resp;
    ASSERT_EQ(anonymous->ApplyService(&ctx, big, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  // Turned away on its headers, before the message is read: a request over
  // any size limit is still just UNAUTHENTICATED (reading it first would
  // make it RESOURCE_EXHAUSTED).
  tern::v1::ApplyServiceRequest huge;
  huge.mutable_spec()->set_name("web");
  (*huge.mutable_spec()->mutable_env())["PAD"] = std::string(17 << 20, 'x');
  {
    grpc::ClientContext ctx;
    tern::v1::ApplyServiceResponse resp;
    const grpc::Status st = anonymous->ApplyService(&ctx, huge, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
  }
  // Whoever is authenticated still cannot send the coordinator a large request.
  {
    grpc::ClientContext ctx;
    tern::v1::ApplyServiceResponse resp;
    (*big.mutable_spec()->mutable_env())["PAD"] = std::string(2 << 20, 'x');
    auto alice = tern::v1::ServiceService::NewStub(channel(pki_ + "/operator-alice"));
    EXPECT_EQ(alice->ApplyService(&ctx, big, &resp).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  // An operator (authenticated, not allowed) is recorded, without the secret.
  tern::v1::ApplyServiceRequest secret;
  secret.mutable_spec()->set_name("db");
  (*secret.mutable_spec()->mutable_env())["DB_PASSWORD"] = "hunter2";
  for (int i = 0; i < 50; ++i) secret.mutable_spec()->add_argv(std::string(100, 'a'));
  {
    grpc::ClientContext ctx;
    tern::v1::ApplyServiceResponse resp;
    auto olga = tern::v1::ServiceService::NewStub(channel(pki_ + "/operator-olga"));
    ASSERT_EQ(olga->ApplyService(&ctx, secret, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  auto audit = ctl("alice", {"audit", "--limit", "1000", "-o", "json"});
  ASSERT_EQ(audit.code, 0) << audit.err;
  EXPECT_EQ(audit.out.find("unauthenticated"), std::string::npos) << "refusals of nobody are not stored";
  EXPECT_EQ(audit.out.find("xxxxxxxx"), std::string::npos);
  EXPECT_NE(audit.out.find("olga"), std::string::npos) << audit.out;
  EXPECT_EQ(audit.out.find("hunter2"), std::string::npos) << audit.out;
  EXPECT_LT(audit.out.size(), 4096u) << "the stored request is short: " << audit.out;
  // Counted, and said in the log, once per interval rather than once per call.
  const std::string log = coordinator_->log();
  EXPECT_NE(log.find("unauthenticated call(s)"), std::string::npos) << log;
  std::size_t lines = 0;
  for (std::size_t p = 0; (p = log.find("unauthenticated call(s)", p)) != std::string::npos; ++p) ++lines;
  EXPECT_LT(lines, 10u) << log;
}

// A host's labels (which services and their secrets reach it) come from
// its certificate; an agent that claims others is not given them. Its
// artifact downloads are limited to what it was told to run, and a viewer
// never sees a service's environment values.
TEST_F(SecurityTest, AnAgentCannotClaimLabelsOrFetchArtifactsItWasNotGiven) {
  start_agent("web-1", pki_, "labels: {role: db}\n");  // its certificate says role=web
  ASSERT_TRUE(eventually([&] { return connected("web-1"); })) << agents_["web-1"]->log();
  std::ofstream(dir_.file("db.yaml")) << "name: db\nselector: role=db\nports: [{public: 5432, blue: 9101, green: "
                                         "9102}]\nargv: [\"{release_dir}/app\"]\nenv: {DB_PASSWORD: hunter2}\n";
  ASSERT_EQ(ctl("alice", {"service", "apply", "-f", dir_.file("db.yaml")}).code, 0);
  EXPECT_EQ(ctl("alice", {"hosts", "-l", "role=db", "-o", "json"}).out.find("web-1"), std::string::npos);
  auto web = ctl("alice", {"hosts", "-l", "role=web", "-o", "json"});
  EXPECT_NE(web.out.find("web-1"), std::string::npos) << web.out;
  ASSERT_TRUE(eventually([&] {
    return ctl("alice", {"host", "history", "web-1"}).out.find("labels_ignored") != std::string::npos;
  }));
  // The db spec never reached web-1.
  const std::string state = read_file(dir_.file("state-web-1") + "/agent-state.json");
  EXPECT_EQ(state.find("hunter2"), std::string::npos) << state;

  // An artifact of db, never named in a command to web-1.
  fs::copy_file(TERN_DEMO_APP_BIN, dir_.file("app"));
  ASSERT_EQ(ctl("alice", {"artifact", "push", dir_.file("app"), "--service", "db", "--version", "1.0"}).code, 0);
  auto listed = ctl("alice", {"artifact", "list", "-o", "json"});
  const auto at = listed.out.find("\"sha256\": \"");
  ASSERT_NE(at, std::string::npos) << listed.out;
  tern::v1::FetchArtifactRequest fetch;
  fetch.set_sha256(listed.out.substr(at + 11, 64));
  grpc::ClientContext fctx;
  auto reader = tern::v1::AgentService::NewStub(channel(pki_ + "/agent-web-1"))->FetchArtifact(&fctx, fetch);
  tern::v1::ArtifactChunk chunk;
  EXPECT_FALSE(reader->Read(&chunk)) << "a byte of an artifact it was never sent";
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);

  // A viewer sees which variables db sets, not their values; an admin sees them.
  tern::v1::GetServiceRequest get;
  get.set_name("db");
  for (const auto& [who, see] : {std::pair{"victor", false}, std::pair{"alice", true}}) {
    grpc::ClientContext gctx;
    tern::v1::ServiceRecord rec;
    ASSERT_TRUE(tern::v1::ServiceService::NewStub(channel(pki_ + "/operator-" + who))->GetService(&gctx, get, &rec).ok());
    EXPECT_EQ(rec.spec().env().at("DB_PASSWORD") == "hunter2", see) << who;
  }
}

// What runs on a host is what an admin put in the artifact store: an
// operator can neither deploy a release by URL nor register one.
TEST_F(SecurityTest, AnOperatorCannotDeployOrRegisterAReleaseByUrl) {
  start_agent("web-1", pki_);
  ASSERT_TRUE(eventually([&] { return connected("web-1"); })) << agents_["web-1"]->log();
  push_service();
  // The API call an older ternctl (or any client) can still make.
  grpc::ClientContext ctx;
  tern::v1::DeployHostRequest req;
  req.set_host_id("web-1");
  req.set_service("web");
  req.set_version("evil");
  req.mutable_release()->set_version("evil");
  req.mutable_release()->set_url("http://127.0.0.1:1/evil");
  req.mutable_release()->set_sha256(std::string(64, 'a'));
  auto stream = tern::v1::FleetService::NewStub(channel(pki_ + "/operator-olga"))->DeployHost(&ctx, req);
  tern::v1::HostOperationUpdate update;
  while (stream->Read(&update)) {
  }
  const grpc::Status st = stream->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_NE(st.error_message().find("ternctl artifact register"), std::string::npos) << st.error_message();
  // Registering is an admin's.
  auto reg = ctl("olga", {"artifact", "register", "--url", "http://127.0.0.1:1/evil", "--sha256",
                          std::string(64, 'a'), "--service", "web", "--version", "evil"});
  EXPECT_EQ(reg.code, 6) << reg.out << reg.err;
  EXPECT_EQ(ctl("alice", {"artifact", "list"}).out.find("evil"), std::string::npos);
  // The refusal is in the audit trail.
  auto audit = ctl("alice", {"audit", "-o", "json"});
  EXPECT_NE(audit.out.find("RegisterArtifact"), std::string::npos) << audit.out;
  expect_untouched("web-1");
}

// An exec health probe runs as the spec's user, with no capabilities: on a
// host whose policy allows only `nobody`, it cannot read a root-only file,
// and what it prints (which viewers see in host status) is nobody's view.
TEST_F(SecurityTest, AnExecProbeRunsAsTheSpecsUserNeverWithTheAgentsRights) {
  fs::permissions(dir_.path(), fs::perms::owner_all | fs::perms::others_read | fs::perms::others_exec);
  const std::string secret = dir_.file("root-only");
  std::ofstream(secret) << "TOPSECRET\n";
  fs::permissions(secret, fs::perms::owner_read | fs::perms::owner_write);
  start_agent("web-2", pki_, "policy: {users: [nobody]}\n");
  ASSERT_TRUE(eventually([&] { return connected("web-2"); })) << agents_["web-2"]->log();
  std::ofstream(dir_.file("web.yaml"))
      << "name: web\nselector: role=web\nuser: nobody\nports: [{public: 8080, blue: 9001, green: 9002}]\n"
      << "argv: [\"{release_dir}/app\", \"--port\", \"{port}\"]\n"
      << "health: {exec: {argv: [/bin/sh, -c, \"id -u; grep CapEff /proc/self/status; cat " << secret
      << "; exit 1\"]}, interval: 100ms, healthy_deadline: 2s}\n";
  auto applied = ctl("alice", {"service", "apply", "-f", dir_.file("web.yaml")});
  ASSERT_EQ(applied.code, 0) << applied.err;
  fs::copy_file(TERN_DEMO_APP_BIN, dir_.file("app"));
  ASSERT_EQ(ctl("alice", {"artifact", "push", dir_.file("app"), "--service", "web", "--version", "1.0"}).code, 0);
  auto deploy = ctl("alice", {"host", "deploy", "web-2", "web", "--version", "1.0"});
  EXPECT_EQ(deploy.code, 1) << deploy.out << deploy.err;
  // The probe's first line of output is in the error: nobody's uid.
  EXPECT_NE((deploy.out + deploy.err).find("exit 1: 65534"), std::string::npos) << deploy.out << deploy.err;
  for (const auto& what : {std::vector<std::string>{"host", "status", "web-2", "-o", "json"},
                           std::vector<std::string>{"host", "history", "web-2"}}) {
    auto seen = ctl("victor", what);
    EXPECT_EQ(seen.out.find("TOPSECRET"), std::string::npos) << seen.out;
  }
  EXPECT_EQ((deploy.out + deploy.err).find("TOPSECRET"), std::string::npos);
}

// A spec the host took while its policy allowed it is checked again when
// the agent restarts with a tighter policy: its deploys are refused.
TEST_F(SecurityTest, AnAgentRestartedWithATighterPolicyRefusesDeploysOfItsStoredSpecs) {
  start_agent("web-1", pki_);
  ASSERT_TRUE(eventually([&] { return connected("web-1"); })) << agents_["web-1"]->log();
  push_service();
  std::filesystem::copy_file(TERN_DEMO_APP_BIN, dir_.file("app"));
  ASSERT_EQ(ctl("alice", {"artifact", "push", dir_.file("app"), "--service", "web", "--version", "1.0"}).code, 0);
  ASSERT_EQ(ctl("alice", {"artifact", "push", dir_.file("app"), "--service", "web", "--version", "1.1"}).code, 0);
  auto first = ctl("alice", {"host", "deploy", "web-1", "web", "--version", "1.0"});
  ASSERT_EQ(first.code, 0) << first.out << first.err;

  agents_["web-1"]->signal(SIGTERM);
  ASSERT_EQ(agents_["web-1"]->wait(), 0) << agents_["web-1"]->log();
  start_agent("web-1", pki_, "policy: {services: [billing]}\n");
  ASSERT_TRUE(eventually([&] { return connected("web-1"); })) << agents_["web-1"]->log();
  auto again = ctl("alice", {"host", "deploy", "web-1", "web", "--version", "1.1"});
  EXPECT_EQ(again.code, 1) << again.out << again.err;
  EXPECT_NE((again.out + again.err).find("no longer allowed"), std::string::npos) << again.out << again.err;
  ASSERT_TRUE(eventually([&] {
    return ctl("alice", {"host", "history", "web-1"}).out.find("no longer allowed") != std::string::npos;
  })) << ctl("alice", {"host", "history", "web-1"}).out;
  auto status = ctl("alice", {"host", "status", "web-1"});
  EXPECT_EQ(status.out.find("1.1"), std::string::npos) << "nothing of 1.1 was started: " << status.out;
  // And the host still serves 1.0, as a client sees it.
  const std::string served = http_get("127.0.0.1:8080", "/");
  EXPECT_NE(served.find("X-Tern-Version: 1.0\r\n"), std::string::npos) << served;
}

TEST_F(SecurityTest, ABundleThatReachesOutOfItsReleaseDirIsRefused) {
  start_agent("web-1", pki_);
  ASSERT_TRUE(eventually([&] { return connected("web-1"); })) << agents_["web-1"]->log();
  push_service();
  const std::string evil = "tern-evil-" + std::to_string(::getpid());
  // A bundle whose second member climbs out of the release directory.
  auto made = run_cmd({"/usr/bin/python3", "-c",
                       "import io,sys,tarfile\n"
                       "t=tarfile.open(sys.argv[1],'w:gz')\n"
                       "for n in ['app','../../" + evil + "']:\n"
                       "  d=b'#!/bin/sh\\n'; i=tarfile.TarInfo(n); i.size=len(d); i.mode=0o755\n"
                       "  t.addfile(i,io.BytesIO(d))\n"
                       "t.close()\n",
                       dir_.file("evil.tar.gz")});
  ASSERT_EQ(made.code, 0) << made.err;
  ASSERT_EQ(ctl("alice", {"artifact", "push", dir_.file("evil.tar.gz"), "--service", "web", "--version", "evil"}).code,
            0);
  auto deploy = ctl("alice", {"host", "deploy", "web-1", "web", "--version", "evil"});
  EXPECT_EQ(deploy.code, 1);
  EXPECT_NE((deploy.out + deploy.err).find(".."), std::string::npos) << deploy.out << deploy.err;
  expect_untouched("web-1");
  for (const auto& e : fs::recursive_directory_iterator(dir_.path())) {
    EXPECT_EQ(e.path().filename().string().find(evil), std::string::npos) << "written: " << e.path();
  }
}

}  // namespace
}  // namespace tern::testing
