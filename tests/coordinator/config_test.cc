#include "coordinator/config.h"

#include "tests/support/temp_dir.h"

#include <gtest/gtest.h>

namespace tern {
namespace {

TEST(CoordinatorConfigTest, DefaultsNeedNoFile) {
  CoordinatorConfig cfg;
  EXPECT_TRUE(validate(cfg).ok());
  EXPECT_EQ(cfg.listen, "127.0.0.1:7400");
}

TEST(CoordinatorConfigTest, ReadsAFile) {
  testing::TempDir dir;
  auto path = dir.write("coordinator.yaml", "listen: 0.0.0.0:7500\ndatabase: /tmp/x.db\nunreachable_after: 1m\n");
  auto cfg = load_coordinator_config(path);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->listen, "0.0.0.0:7500");
  EXPECT_EQ(cfg->unreachable_after, Millis(60'000));
  EXPECT_EQ(cfg->metrics_listen, "127.0.0.1:9400");
}

TEST(CoordinatorConfigTest, RetentionOfTheAuditTrailAndHostHistories) {
  testing::TempDir dir;
  auto path = dir.write("coordinator.yaml",
                        "audit_max_age: 720h\naudit_max_rows: 5000\nhost_history_max_age: 0s\n"
                        "host_history_max_rows: 0\n");
  auto cfg = load_coordinator_config(path);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->audit_max_age, Millis(30LL * 24 * 3'600'000));
  EXPECT_EQ(cfg->audit_max_rows, 5000);
  EXPECT_EQ(cfg->host_history_max_age, Millis(0)) << "0 turns a limit off";
  EXPECT_EQ(cfg->host_history_max_rows, 0);
  path = dir.write("bad.yaml", "audit_max_rows: -1\n");
  auto bad = load_coordinator_config(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("audit_max_rows"), absl::string_view::npos) << bad.status();
}

TEST(CoordinatorConfigTest, AnalysisSamplesRetentionAndThePrometheusServer) {
  testing::TempDir dir;
  auto cfg = load_coordinator_config(dir.write(
      "c.yaml", "analysis_samples_max_age: 48h\nanalysis_samples_max_rows: 10\n"
                "prometheus: {address: 'http://127.0.0.1:9090', bearer_token_file: /t, timeout: 2s}\n"));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->analysis_samples_max_age, Millis(48LL * 3'600'000));
  EXPECT_EQ(cfg->analysis_samples_max_rows, 10);
  EXPECT_EQ(cfg->prometheus.address, "http://127.0.0.1:9090");
  EXPECT_EQ(cfg->prometheus.bearer_token_file, "/t");
  EXPECT_EQ(cfg->prometheus.timeout, Millis(2'000));
  EXPECT_TRUE(load_coordinator_config(dir.write("d.yaml", "")).value().prometheus.address.empty()) << "none by default";
  auto bad = load_coordinator_config(dir.write("b.yaml", "prometheus: {adress: x}\n"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("adress"), absl::string_view::npos) << bad.status();
}

TEST(CoordinatorConfigTest, BadInputNamesFileAndKey) {
  struct Case {
    const char* yaml;
    const char* expect;
  };
  for (const Case& c : {Case{"listne: x:1\n", "unknown key \"listne\""},
                        Case{"unreachable_after: soon\n", "key \"unreachable_after\""},
                        Case{"listen: nowhere\n", "key \"listen\""},
                        Case{"heartbeat_interval: 10s\nunreachable_after: 5s\n", "key \"unreachable_after\""}}) {
    testing::TempDir dir;
    auto path = dir.write("coordinator.yaml", c.yaml);
    auto cfg = load_coordinator_config(path);
    ASSERT_FALSE(cfg.ok()) << c.yaml;
    EXPECT_NE(cfg.status().message().find(path), absl::string_view::npos) << cfg.status().message();
    EXPECT_NE(cfg.status().message().find(c.expect), absl::string_view::npos) << cfg.status().message();
  }
}

TEST(CoordinatorConfigTest, TheShippedExampleIsValidAndMatchesTheDefaults) {
  auto cfg = load_coordinator_config(TERN_SOURCE_DIR "/examples/coordinator.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  CoordinatorConfig defaults;
  EXPECT_EQ(cfg->listen, defaults.listen);
  EXPECT_EQ(cfg->database, defaults.database);
  EXPECT_EQ(cfg->unreachable_after, defaults.unreachable_after);
  EXPECT_EQ(cfg->audit_max_age, defaults.audit_max_age);
  EXPECT_EQ(cfg->audit_max_rows, defaults.audit_max_rows);
  EXPECT_EQ(cfg->host_history_max_age, defaults.host_history_max_age);
  EXPECT_EQ(cfg->host_history_max_rows, defaults.host_history_max_rows);
}

TEST(CoordinatorConfigTest, MissingFileIsNamed) {
  auto cfg = load_coordinator_config("/nonexistent/coordinator.yaml");
  ASSERT_FALSE(cfg.ok());
  EXPECT_NE(cfg.status().message().find("/nonexistent/coordinator.yaml"), absl::string_view::npos);
}

}  // namespace
}  // namespace tern
