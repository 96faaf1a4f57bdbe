#include "agent/config.h"

#include "tests/support/command.h"
#include "tests/support/temp_dir.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace tern {
namespace {

TEST(AgentConfigTest, ReadsEverySetting) {
  testing::TempDir dir;
  auto path = dir.write("agent.yaml", R"(coordinator: coord.example:7400
host_id: web-1
labels:
  zone: a
  rack: r12
state_dir: /tmp/tern-state
log_level: debug
heartbeat_interval: 2s
reconnect:
  initial: 100ms
  max: 10s
downloads: {max_mib: 512, allow_loopback: true}
releases: {keep: 3, min_free_mib: 128}
metrics_listen: 127.0.0.1:9401
)");
  auto cfg = load_agent_config(path);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->coordinator, "coord.example:7400");
  EXPECT_EQ(cfg->host_id, "web-1");
  EXPECT_EQ(cfg->labels.at("rack"), "r12");
  EXPECT_EQ(cfg->heartbeat_interval, Millis(2000));
  EXPECT_EQ(cfg->reconnect.initial, Millis(100));
  EXPECT_EQ(cfg->reconnect.max, Millis(10'000));
  EXPECT_EQ(cfg->downloads.max_mib, 512u);
  EXPECT_TRUE(cfg->downloads.allow_loopback);
  EXPECT_EQ(cfg->releases.keep, 3u);
  EXPECT_EQ(cfg->releases.min_free_mib, 128u);
  EXPECT_EQ(cfg->metrics_listen, "127.0.0.1:9401");
}

TEST(AgentConfigTest, DownloadsAndReleasesHaveSafeDefaults) {
  AgentConfig cfg;
  EXPECT_EQ(cfg.downloads.max_mib, 2048u);
  EXPECT_FALSE(cfg.downloads.allow_loopback);
  EXPECT_EQ(cfg.releases.keep, 5u);
  EXPECT_EQ(cfg.metrics_listen, "") << "no listener unless the config asks for one";
}

TEST(AgentConfigTest, BadInputIsOneClearErrorNamingFileAndKey) {
  struct Case {
    const char* yaml;
    const char* expect;
  };
  for (const Case& c : {
           Case{"coordinater: x:1\n", "unknown key \"coordinater\""},
           Case{"labels: zone=a\n", "key \"labels\""},
           Case{"heartbeat_interval: 5\n", "key \"heartbeat_interval\""},
           Case{"reconnect: {initial: 1s, maximum: 2s}\n", "unknown key \"reconnect.maximum\""},
           Case{"reconnect: {initial: 5s, max: 1s}\n", "key \"reconnect\""},
           Case{"coordinator: nohostport\n", "key \"coordinator\""},
           Case{"host_id: 'bad id'\n", "key \"host_id\""},
           Case{"labels: {zone: 'a b'}\n", "key \"labels\""},
           Case{"downloads: {max_mib: 0}\n", "key \"downloads.max_mib\""},
           Case{"downloads: {allow_localhost: true}\n", "unknown key \"downloads.allow_localhost\""},
           Case{"releases: {keep: 0}\n", "key \"releases.keep\""},
           Case{"metrics_listen: 9401\n", "key \"metrics_listen\""},
           Case{"metrics_listen: 127.0.0.1:99999\n", "key \"metrics_listen\""},
       }) {
    testing::TempDir dir;
    auto path = dir.write("agent.yaml", c.yaml);
    auto cfg = load_agent_config(path);
    ASSERT_FALSE(cfg.ok()) << c.yaml;
    EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(cfg.status().message().find(path), absl::string_view::npos) << cfg.status().message();
    EXPECT_NE(cfg.status().message().find(c.expect), absl::string_view::npos) << cfg.status().message();
  }
}

TEST(AgentConfigTest, TheShippedExampleIsValid) {
  auto cfg = load_agent_config(TERN_SOURCE_DIR "/examples/agent.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->labels.at("zone"), "a");
  EXPECT_EQ(cfg->reconnect.max, Millis(30'000));
  EXPECT_EQ(cfg->metrics_listen, "127.0.0.1:9401");
  EXPECT_EQ(cfg->tls.cert, "/etc/tern/tls/agent.crt") << "the agent refuses to start without TLS or insecure";
  EXPECT_FALSE(cfg->insecure);
  EXPECT_TRUE(validate(*cfg).ok()) << validate(*cfg);
}

TEST(AgentConfigTest, MissingFileIsNotFoundAndNamed) {
  auto cfg = load_agent_config("/nonexistent/tern/agent.yaml");
  ASSERT_EQ(cfg.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(cfg.status().message().find("/nonexistent/tern/agent.yaml"), absl::string_view::npos);
}

TEST(AgentConfigTest, HostIdFallsBackToMachineId) {
  AgentConfig cfg;
  testing::TempDir dir;
  auto path = dir.write("machine-id", "0123456789abcdef0123456789abcdef\n");
  auto id = resolve_host_id(cfg, path);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "0123456789abcdef0123456789abcdef");
  cfg.host_id = "web-1";
  EXPECT_EQ(*resolve_host_id(cfg, "/nonexistent"), "web-1");
  cfg.host_id.clear();
  auto missing = resolve_host_id(cfg, "/nonexistent/machine-id");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("host_id"), absl::string_view::npos);
}

}  // namespace
}  // namespace tern

namespace tern {
namespace {

tern::v1::ServiceSpec policy_spec(const std::string& name, const std::string& user, uint32_t pub) {
  tern::v1::ServiceSpec s;
  s.set_name(name);
  s.set_user(user);
  auto* p = s.add_ports();
  p->set_public_port(pub);
  p->set_blue_port(9001);
  p->set_green_port(9002);
  return s;
}

TEST(AgentPolicyTest, AnEmptyPolicyAllowsEverythingButPrivilegedPorts) {
  EXPECT_TRUE(check_policy({}, policy_spec("web", "", 8080)).ok());
}

// A port below 1024 is the host's own business (ssh, dns, a web server the
// host already runs): a coordinator may not map or take one unless the
// host's policy names it.
TEST(AgentPolicyTest, APortBelow1024NeedsThePolicysPermission) {
  auto refused = check_policy({}, policy_spec("web", "", 80));
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied) << refused;
  EXPECT_NE(std::string(refused.message()).find("port 80"), std::string::npos) << refused.message();
  EXPECT_NE(std::string(refused.message()).find("privileged_ports"), std::string::npos) << refused.message();

  AgentPolicy allows;
  allows.privileged_ports = {"80", "440-443"};
  EXPECT_TRUE(check_policy(allows, policy_spec("web", "", 80)).ok());
  EXPECT_TRUE(check_policy(allows, policy_spec("web", "", 443)).ok());
  EXPECT_EQ(check_policy(allows, policy_spec("web", "", 22)).code(), absl::StatusCode::kPermissionDenied)
      << "only the ports it names";
  auto slot = policy_spec("web", "", 80);
  slot.mutable_ports(0)->set_green_port(53);
  auto slot_refused = check_policy(allows, slot);
  EXPECT_EQ(slot_refused.code(), absl::StatusCode::kPermissionDenied) << "slot ports too";
  EXPECT_NE(std::string(slot_refused.message()).find("port 53"), std::string::npos) << slot_refused.message();
}

TEST(AgentPolicyTest, ServicesUsersAndPortsAreEachChecked) {
  AgentPolicy p{{"web", "api"}, {"nobody", "www-data"}, {"8000-9999", "443"}, {"443"}};
  EXPECT_TRUE(check_policy(p, policy_spec("web", "nobody", 8080)).ok());
  EXPECT_TRUE(check_policy(p, policy_spec("api", "www-data", 443)).ok());
  auto service = check_policy(p, policy_spec("db", "nobody", 8080));
  EXPECT_EQ(service.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(std::string(service.message()).find("service \"db\""), std::string::npos) << service.message();
  if (::geteuid() == 0) {
    auto unlisted = check_policy(p, policy_spec("web", "", 8080));
    EXPECT_NE(std::string(unlisted.message()).find("\"tern-app\" (no user in the spec: the policy's default_user)"),
              std::string::npos)
        << "no user means the policy's default user: " << unlisted.message();
  }
  auto port = check_policy(p, policy_spec("web", "nobody", 80));
  EXPECT_NE(std::string(port.message()).find("port 80"), std::string::npos) << port.message();
}

// A spec that says nothing about its user does not get the agent's root: it
// runs as the unprivileged user the package creates.
TEST(AgentPolicyTest, ASpecWithoutAUserRunsAsTheUnprivilegedDefaultUser) {
  const AgentPolicy defaults;
  EXPECT_EQ(defaults.default_user, "tern-app");
  EXPECT_FALSE(defaults.allow_root);
  EXPECT_EQ(run_as_user(defaults, policy_spec("web", "", 8080)), ::geteuid() == 0 ? "tern-app" : "")
      << "an agent that is not root can only run things as itself";
  EXPECT_EQ(run_as_user(defaults, policy_spec("web", "www-data", 8080)), "www-data");
  AgentPolicy nobody;
  nobody.default_user = "nobody";
  if (::geteuid() == 0) {
    EXPECT_EQ(run_as_user(nobody, policy_spec("web", "", 8080)), "nobody");
  }
}

// Root is something a host's own config grants, never something a spec can
// ask for: `user: root`, or a default user that is root, is refused unless
// policy.allow_root is set.
TEST(AgentPolicyTest, RootIsRefusedUnlessTheHostsPolicyAllowsIt) {
  AgentPolicy p;
  auto refused = check_policy(p, policy_spec("web", "root", 8080));
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied) << refused;
  EXPECT_NE(std::string(refused.message()).find("uid 0"), std::string::npos) << refused.message();
  EXPECT_NE(std::string(refused.message()).find("policy.allow_root"), std::string::npos) << refused.message();
  EXPECT_TRUE(check_policy(p, policy_spec("web", "nobody", 8080)).ok());
  if (::geteuid() == 0) {
    AgentPolicy root_default;
    root_default.default_user = "root";
    auto by_default = check_policy(root_default, policy_spec("web", "", 8080));
    EXPECT_EQ(by_default.code(), absl::StatusCode::kPermissionDenied) << by_default;
    EXPECT_NE(std::string(by_default.message()).find("default_user"), std::string::npos) << by_default.message();
    root_default.default_user.clear();  // empty: the agent's own user, root here
    EXPECT_EQ(check_policy(root_default, policy_spec("web", "", 8080)).code(), absl::StatusCode::kPermissionDenied);
  }
  p.allow_root = true;
  EXPECT_TRUE(check_policy(p, policy_spec("web", "root", 8080)).ok());
  p.users = {"nobody"};
  EXPECT_EQ(check_policy(p, policy_spec("web", "root", 8080)).code(), absl::StatusCode::kPermissionDenied)
      << "allow_root does not widen policy.users";
}

TEST(AgentPolicyTest, PolicyAndTlsAreReadFromTheConfigAndBadRangesRefused) {
  testing::TempDir dir;
  auto cfg = load_agent_config(dir.write("a.yaml",
                                          "policy: {services: [web], users: [nobody], ports: [\"9000-9999\"]}\n"
                                          "tls: {ca: /c, cert: /x, key: /y, server_name: coord}\n"
                                          "trusted_keys: [/k1.pub]\n"));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->policy.ports, std::vector<std::string>{"9000-9999"});
  EXPECT_EQ(cfg->policy.default_user, "tern-app");
  auto run_as = load_agent_config(dir.write("u.yaml", "policy: {default_user: nobody, allow_root: true}\n"));
  ASSERT_TRUE(run_as.ok()) << run_as.status();
  EXPECT_EQ(run_as->policy.default_user, "nobody");
  EXPECT_TRUE(run_as->policy.allow_root);
  EXPECT_EQ(cfg->tls.server_name, "coord");
  EXPECT_EQ(cfg->trusted_keys, std::vector<std::string>{"/k1.pub"});
  auto bad = load_agent_config(dir.write("b.yaml", "policy: {ports: [\"9999-9000\"]}\n"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("policy.ports"), std::string::npos) << bad.status();
  auto privileged = load_agent_config(dir.write("p.yaml", "policy: {privileged_ports: [80, 443]}\n"));
  ASSERT_TRUE(privileged.ok()) << privileged.status();
  EXPECT_EQ(privileged->policy.privileged_ports, (std::vector<std::string>{"80", "443"}));
  auto high = load_agent_config(dir.write("h.yaml", "policy: {privileged_ports: [80, 8080]}\n"));
  ASSERT_FALSE(high.ok());
  EXPECT_NE(std::string(high.status().message()).find("policy.privileged_ports"), std::string::npos) << high.status();
  EXPECT_FALSE(load_agent_config(dir.write("c.yaml", "insecure: true\ntls: {ca: /c}\n")).ok()) << "insecure and tls do not go together";
}

}  // namespace
}  // namespace tern

namespace tern {
namespace {

TEST(AgentIdentityTest, TheCertificateNamesTheHostAndAConflictingHostIdIsRefused) {
  testing::TempDir dir;
  const std::string pki = dir.file("pki");
  for (std::vector<std::string> args : {std::vector<std::string>{"init", pki}, {"agent", pki, "web-7"}}) {
    args.insert(args.begin(), std::string(TERN_SOURCE_DIR) + "/scripts/tern-pki.sh");
    ASSERT_EQ(testing::run_cmd(args).code, 0);
  }
  AgentConfig cfg;
  cfg.tls = {pki + "/ca.crt", pki + "/agent-web-7.crt", pki + "/agent-web-7.key", ""};
  auto id = resolve_identity(cfg, dir.file("no-machine-id"));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->host_id, "web-7");
  EXPECT_NE(id->credentials, nullptr);
  cfg.host_id = "web-8";
  auto liar = resolve_identity(cfg, dir.file("no-machine-id"));
  ASSERT_FALSE(liar.ok());
  EXPECT_NE(std::string(liar.status().message()).find("differs from the certificate"), std::string::npos);
  AgentConfig none;
  auto refused = resolve_identity(none, dir.file("no-machine-id"));
  EXPECT_NE(std::string(refused.status().message()).find("--insecure"), std::string::npos) << refused.status();
  none.insecure = true;
  none.host_id = "lab-1";
  auto plain = resolve_identity(none, dir.file("no-machine-id"));
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->host_id, "lab-1");
  EXPECT_EQ(plain->credentials, nullptr);
}

}  // namespace
}  // namespace tern
