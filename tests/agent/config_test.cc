#include "agent/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace tern {
namespace {

std::string write_temp(const std::string& text) {
  static int n = 0;
  auto path = std::filesystem::temp_directory_path() /
              ("tern-agent-" + std::to_string(getpid()) + "-" + std::to_string(n++) + ".yaml");
  std::ofstream(path) << text;
  return path.string();
}

TEST(AgentConfigTest, ReadsEverySetting) {
  auto path = write_temp(R"(coordinator: coord.example:7400
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
)");
  auto cfg = load_agent_config(path);
  std::filesystem::remove(path);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->coordinator, "coord.example:7400");
  EXPECT_EQ(cfg->host_id, "web-1");
  EXPECT_EQ(cfg->labels.at("rack"), "r12");
  EXPECT_EQ(cfg->heartbeat_interval, Millis(2000));
  EXPECT_EQ(cfg->reconnect.initial, Millis(100));
  EXPECT_EQ(cfg->reconnect.max, Millis(10'000));
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
       }) {
    auto path = write_temp(c.yaml);
    auto cfg = load_agent_config(path);
    std::filesystem::remove(path);
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
}

TEST(AgentConfigTest, MissingFileIsNotFoundAndNamed) {
  auto cfg = load_agent_config("/nonexistent/tern/agent.yaml");
  ASSERT_EQ(cfg.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(cfg.status().message().find("/nonexistent/tern/agent.yaml"), absl::string_view::npos);
}

TEST(AgentConfigTest, HostIdFallsBackToMachineId) {
  AgentConfig cfg;
  auto path = write_temp("0123456789abcdef0123456789abcdef\n");
  auto id = resolve_host_id(cfg, path);
  std::filesystem::remove(path);
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
