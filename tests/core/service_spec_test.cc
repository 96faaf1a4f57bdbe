#include "core/service_spec.h"

#include <optional>
#include <utility>

#include <gtest/gtest.h>
#include <signal.h>

#include "absl/strings/str_cat.h"

namespace tern {
namespace {

constexpr const char* kGood = R"(
name: web
selector: role=web
ports: [{name: http, protocol: tcp, public: 8080, blue: 9001, green: 9002}]
argv: ["{release_dir}/app", "--port", "{port}"]
user: nobody
env: {LOG_LEVEL: info}
health: {http: {path: /healthz}, interval: 500ms, timeout: 1s, success_threshold: 2, healthy_deadline: 30s}
drain: 5s
keep_warm: true
restart: {policy: on-failure, max_restarts: 5, delay: 2s}
)";

TEST(ServiceSpecTest, ParsesAFullSpecAndFillsDefaults) {
  auto spec = parse_service_spec(kGood, "web.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name(), "web");
  EXPECT_EQ(spec->ports(0).green_port(), 9002u);
  EXPECT_EQ(spec->health().http().path(), "/healthz");
  EXPECT_EQ(spec->health().success_threshold(), 2u);
  EXPECT_EQ(spec->health().interval().nanos(), 500'000'000);
  EXPECT_EQ(spec->drain().seconds(), 5);
  EXPECT_EQ(spec->grace().seconds(), 10) << "grace defaults to 10s";
  EXPECT_TRUE(spec->keep_warm());
  EXPECT_EQ(spec->restart().max_restarts(), 5u);
  EXPECT_EQ(spec->env().at("LOG_LEVEL"), "info");
}

TEST(ServiceSpecTest, StopAndDrainSignalsAreReadByName) {
  auto spec = parse_service_spec(
      "name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [nginx]\nstop_signal: SIGQUIT\n"
      "drain_command: [\"{release_dir}/drain\", \"{port}\"]\n",
      "web.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(stop_signal(*spec), SIGQUIT);
  EXPECT_EQ(spec->drain_command_size(), 2);
  spec->clear_stop_signal();
  EXPECT_EQ(stop_signal(*spec), SIGTERM) << "the default";
  EXPECT_EQ(parse_signal_name("usr1"), SIGUSR1);
  EXPECT_EQ(parse_signal_name("TERM"), SIGTERM);
  EXPECT_EQ(parse_signal_name("SIGWINCH"), SIGWINCH);
  EXPECT_EQ(parse_signal_name("SIGSEGV"), std::nullopt);
  EXPECT_EQ(parse_signal_name(""), std::nullopt);
}

TEST(ServiceSpecTest, ResourceLimitsAreReadAndCheckedForForm) {
  auto spec = parse_service_spec(absl::StrCat(kGood, "memory_max: 512MiB\ncpu_max: 1.5\ntasks_max: 256\n"), "web.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(parse_byte_size(spec->memory_max()), 512ull << 20);
  EXPECT_EQ(parse_cpu_quota_us(spec->cpu_max()), 150'000u);
  EXPECT_EQ(spec->tasks_max(), 256u);
  auto bad_mem = parse_service_spec(absl::StrCat(kGood, "memory_max: lots\n"), "web.yaml");
  ASSERT_FALSE(bad_mem.ok());
  EXPECT_NE(bad_mem.status().message().find("memory_max"), std::string::npos) << bad_mem.status();
  EXPECT_NE(bad_mem.status().message().find("512MiB"), std::string::npos) << "the error shows the form";
  auto bad_cpu = parse_service_spec(absl::StrCat(kGood, "cpu_max: 0\n"), "web.yaml");
  ASSERT_FALSE(bad_cpu.ok());
  EXPECT_NE(bad_cpu.status().message().find("cpu_max"), std::string::npos) << bad_cpu.status();
}

TEST(ServiceSpecTest, ByteSizesAndCpuQuotas) {
  EXPECT_EQ(parse_byte_size("1048576"), 1048576u);
  EXPECT_EQ(parse_byte_size("2G"), 2ull << 30);
  EXPECT_EQ(parse_byte_size("2 GiB"), 2ull << 30);
  EXPECT_EQ(parse_byte_size("64kb"), 64ull << 10);
  EXPECT_EQ(parse_byte_size("1T"), 1ull << 40);
  for (const char* bad : {"", "0", "-1", "1.5G", "12X", "G", "99999999999999999999", "9000000T"}) {
    EXPECT_FALSE(parse_byte_size(bad).has_value()) << bad;
  }
  EXPECT_EQ(parse_cpu_quota_us("1"), 100'000u);
  EXPECT_EQ(parse_cpu_quota_us("0.25"), 25'000u);
  EXPECT_EQ(parse_cpu_quota_us("0.01"), 1'000u);
  for (const char* bad : {"", "0", "0.001", "-1", "two", "2000", "nan"}) {
    EXPECT_FALSE(parse_cpu_quota_us(bad).has_value()) << bad;
  }
}

TEST(ServiceSpecTest, MinimalSpecGetsATcpProbe) {
  auto spec = parse_service_spec("name: api\nports: [{public: 80, blue: 8001, green: 8002}]\nargv: [app]\n", "api.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(spec->health().has_tcp());
  EXPECT_EQ(spec->ports(0).protocol(), "tcp");
  EXPECT_EQ(spec->restart().policy(), "on-failure");
}

TEST(ServiceSpecTest, TheShippedExampleIsValid) {
  auto spec = load_service_spec_file(TERN_SOURCE_DIR "/examples/web.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name(), "web");
  EXPECT_TRUE(spec->keep_warm());
}

// How a canary weight divides the public port: per connection unless the
// spec asks for the client's address to decide.
TEST(ServiceSpecTest, SplitIsReadAndDefaultsToPerConnection) {
  auto spec = parse_service_spec(kGood, "web.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->split(), "") << "left empty: the word is not filled in";
  EXPECT_EQ(traffic_split(*spec), TrafficSplit::kConnection);

  for (const auto& [word, split] : {std::pair{"connection", TrafficSplit::kConnection},
                                    std::pair{"client", TrafficSplit::kClient}}) {
    spec = parse_service_spec(absl::StrCat(kGood, "split: ", word, "\n"), "web.yaml");
    ASSERT_TRUE(spec.ok()) << spec.status();
    EXPECT_EQ(spec->split(), word);
    EXPECT_EQ(traffic_split(*spec), split) << word;
  }
  EXPECT_EQ(parse_traffic_split(""), TrafficSplit::kConnection);
  EXPECT_EQ(parse_traffic_split("Client"), std::nullopt) << "words are lower-case, like every other word of a spec";
}

TEST(ServiceSpecTest, AnUnknownSplitIsRefusedByEveryCopyOfTheSpec) {
  // The coordinator and the agent validate specs that never were YAML.
  auto spec = parse_service_spec(kGood, "web.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  spec->set_split("sticky");
  auto st = validate_service_spec(*spec);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("field split: \"sticky\" must be connection"), std::string::npos) << st;
  EXPECT_NE(std::string(st.message()).find("or client"), std::string::npos) << st;
}

// What a canary is judged by: the metrics endpoint and the analysis metrics,
// with the defaults a careful operator would pick.
TEST(ServiceSpecTest, AnalysisMetricsAreReadWithTheirDefaults) {
  auto spec = parse_service_spec(std::string(kGood) + R"(
analysis:
  metrics:
    - {name: errors, kind: ratio, bad: 'http_requests_total{code=~"5.."}', total: http_requests_total,
       min_excess: 0.2%, pass_below: 0.5%}
    - {name: latency, kind: latency, histogram: http_request_duration_seconds}
    - {name: slo, kind: latency, histogram: http_request_duration_seconds, threshold: 0.25, max_ratio: 2}
)", "web.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->metrics_endpoint().port(), "http") << "the first port";
  EXPECT_EQ(spec->metrics_endpoint().path(), "/metrics");
  ASSERT_EQ(spec->analysis().metrics_size(), 3);
  const auto& errors = spec->analysis().metrics(0);
  EXPECT_EQ(errors.bad(), "http_requests_total{code=~\"5..\"}");
  EXPECT_DOUBLE_EQ(errors.max_ratio(), 1.5);
  EXPECT_DOUBLE_EQ(errors.min_excess(), 0.002);
  EXPECT_DOUBLE_EQ(errors.pass_below(), 0.005);
  EXPECT_DOUBLE_EQ(spec->analysis().metrics(1).quantile(), 0.99) << "blue's p99 by default";
  EXPECT_DOUBLE_EQ(spec->analysis().metrics(1).min_excess(), 0.001);
  EXPECT_DOUBLE_EQ(spec->analysis().metrics(2).quantile(), 0) << "an explicit threshold instead";
  EXPECT_DOUBLE_EQ(spec->analysis().metrics(2).threshold(), 0.25);
  EXPECT_DOUBLE_EQ(spec->analysis().metrics(2).max_ratio(), 2);

  auto queried = parse_service_spec(std::string(kGood) + R"(
analysis:
  metrics:
    - {name: errors, kind: ratio, bad_query: 'sum(increase(x{instance="{address}:{port}",code="500"}[{interval}]))',
       total_query: 'sum(increase(x{instance="{address}:{port}"}[{interval}]))'}
)", "web.yaml");
  ASSERT_TRUE(queried.ok()) << queried.status() << ": a Prometheus-only ratio needs no selectors";
  EXPECT_NE(queried->analysis().metrics(0).bad_query().find("{port}"), std::string::npos);

  auto plain = parse_service_spec(kGood, "web.yaml");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->has_metrics_endpoint()) << "no analysis, nothing filled in";
}

TEST(ServiceSpecTest, TemplatesAreReadWithTheirModes) {
  auto spec = parse_service_spec(std::string(kGood) + R"(
templates:
  - {source: conf/nginx.conf.tmpl, dest: nginx.conf, mode: "0600"}
  - source: conf/site.tmpl
    dest: sites/site.conf
)", "web.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->templates_size(), 2);
  EXPECT_EQ(spec->templates(0).source(), "conf/nginx.conf.tmpl");
  EXPECT_EQ(spec->templates(0).dest(), "nginx.conf");
  EXPECT_EQ(spec->templates(0).mode(), "0600");
  EXPECT_EQ(spec->templates(1).dest(), "sites/site.conf");
  EXPECT_EQ(parse_template_mode(spec->templates(1).mode()).value_or(0), 0640u) << "the default";
  EXPECT_EQ(parse_template_mode("755").value_or(0), 0755u);
}

TEST(ServiceSpecTest, HooksAreReadWithTheirDefaults) {
  auto spec = parse_service_spec(
      "name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [app]\n"
      "hooks:\n"
      "  pre_start: {argv: [\"{release_dir}/bin/migrate-check\"], timeout: 90s}\n"
      "  pre_traffic: {argv: [\"{release_dir}/bin/smoke\", \"http://127.0.0.1:{port}/\"]}\n"
      "  post_switch: {argv: [announce]}\n"
      "  pre_stop: {argv: [deregister], on_failure: fail}\n"
      "  post_rollback: {argv: [announce, rollback], idempotent: true}\n",
      "web.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  const auto& h = spec->hooks();
  EXPECT_EQ(h.pre_start().argv(0), "{release_dir}/bin/migrate-check");
  EXPECT_EQ(h.pre_start().timeout().seconds(), 90);
  EXPECT_EQ(h.pre_traffic().timeout().seconds(), 60) << "the default timeout";
  EXPECT_EQ(h.pre_traffic().argv(1), "http://127.0.0.1:{port}/");
  // Hooks that guard a step fail it by default; those after one warn.
  EXPECT_EQ(h.pre_start().on_failure(), "fail");
  EXPECT_EQ(h.pre_traffic().on_failure(), "fail");
  EXPECT_EQ(h.post_switch().on_failure(), "warn");
  EXPECT_EQ(h.pre_stop().on_failure(), "fail") << "as written";
  EXPECT_EQ(h.post_rollback().on_failure(), "warn");
  EXPECT_TRUE(h.post_rollback().idempotent());
  EXPECT_FALSE(h.post_switch().idempotent());
  // A spec from the API, defaults never applied, means the same.
  tern::v1::Hook bare;
  bare.add_argv("x");
  EXPECT_EQ(hook_failure("pre_traffic", bare), HookFailure::kFail);
  EXPECT_EQ(hook_failure("post_rollback", bare), HookFailure::kWarn);
  EXPECT_EQ(hook_timeout(bare), kDefaultHookTimeout);
  EXPECT_EQ(find_hook(h, "post_deploy"), nullptr);
  // No hooks: nothing is filled in.
  auto none = parse_service_spec("name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [app]\n", "web.yaml");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_hooks());
}

TEST(ServiceSpecTest, TheNginxExampleIsValid) {
  auto spec = load_service_spec_file(TERN_SOURCE_DIR "/examples/nginx.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->templates_size(), 1);
}

TEST(ServiceSpecTest, TooManyTemplatesAreRefused) {
  tern::v1::ServiceSpec spec = *parse_service_spec(kGood, "web.yaml");
  for (int i = 0; i <= kMaxTemplates; ++i) {
    auto* t = spec.add_templates();
    t->set_source("conf/a.tmpl");
    t->set_dest("a" + std::to_string(i));
  }
  auto st = validate_service_spec(spec);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("field templates: 65 templates; at most 64"), std::string::npos) << st;
  spec.mutable_templates()->RemoveLast();
  EXPECT_TRUE(validate_service_spec(spec).ok());
}

struct Bad {
  const char* yaml;
  const char* expect;  // in the message
};

class BadSpecTest : public ::testing::TestWithParam<Bad> {};

TEST_P(BadSpecTest, IsRefusedNamingTheFieldAndTheReason) {
  auto spec = parse_service_spec(GetParam().yaml, "bad.yaml");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(spec.status().message()).find(GetParam().expect), std::string::npos) << spec.status();
  EXPECT_NE(std::string(spec.status().message()).find("bad.yaml"), std::string::npos) << spec.status();
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadSpecTest,
    ::testing::Values(
        Bad{"name: Web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n", "field name"},
        Bad{"name: web\nports: []\nargv: [a]\n", "field ports: at least one"},
        Bad{"name: web\nports: [{public: 80, blue: 80, green: 82}]\nargv: [a]\n", "ports[0].blue: 80 is already used"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 70000}]\nargv: [a]\n", "ports[0].green"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82, protocol: sctp}]\nargv: [a]\n", "tcp or udp"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\n", "field argv"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\nhealth: {http: {path: x}}\n",
            "health.http.path"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\nhealth: {tcp: {}, http: {path: /}}\n",
            "exactly one"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\ndrain: 5\n", "drain"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\nsurprise: 1\n", "unknown key"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\nstop_signal: SIGSTOP\n",
            "field stop_signal: \"SIGSTOP\" is not one of SIGTERM"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\ndrain_signal: KILL\n",
            "field drain_signal"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\ndrain_signal: USR1\n"
            "drain_command: [x]\n",
            "give drain_signal or drain_command, not both"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\nselector: \"a=b=c\"\n", "selector"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\nrestart: {policy: always}\n",
            "restart.policy"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\nsplit: source-ip\n",
            "field split: \"source-ip\" must be connection"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\nsplit: [client]\n", "split"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "analysis: {metrics: [{name: errors, kind: ratio, bad: 'x{code=\"500\"}'}]}\n",
            "analysis.metrics[0].total: a ratio metric needs the selector of all its requests"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "analysis: {metrics: [{name: errors, kind: ratio, bad: b, total: t, max_ratio: 0.9}]}\n",
            "analysis.metrics[0].max_ratio: 0.9 is below 1"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "analysis: {metrics: [{name: errors, kind: ratio, bad: b, total: t, min_excess: 2}]}\n",
            "analysis.metrics[0].min_excess"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "analysis: {metrics: [{name: p99, kind: latency}]}\n",
            "analysis.metrics[0].histogram"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "analysis: {metrics: [{name: p99, kind: latency, histogram: h, quantile: 99}]}\n",
            "analysis.metrics[0].quantile"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "analysis: {metrics: [{name: e, kind: gauge}]}\n",
            "must be ratio or latency"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "analysis: {metrics: [{name: e, kind: ratio, bad: b, total: t}, {name: e, kind: ratio, bad: b, total: t}]}\n",
            "used twice"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "analysis: {metrics: [{name: e, kind: ratio, bad: b, total: t, pass_below: lots}]}\n",
            "expected a number"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "analysis: {metrics: [{name: e, kind: ratio, bad_query: 'sum(x{port=\"{port}\"})'}]}\n",
            "analysis.metrics[0].total_query: bad_query and total_query go together"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "analysis: {metrics: [{name: e, kind: latency, histogram: h, bad_query: a, total_query: b}]}\n",
            "give kind: ratio"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\nmetrics_endpoint: {port: admin}\n",
            "metrics_endpoint.port: \"admin\" is not the name"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "templates: [{source: ../etc/passwd, dest: a}]\n",
            "field templates[0].source: \"../etc/passwd\" contains \"..\""},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "templates: [{source: /etc/passwd, dest: a}]\n",
            "field templates[0].source: \"/etc/passwd\" is absolute"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "templates: [{source: '', dest: a}]\n",
            "field templates[0].source: \"\" is empty"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "templates: [{source: a, dest: x/../../b}]\n",
            "field templates[0].dest: \"x/../../b\" contains \"..\""},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "templates: [{source: a, dest: /etc/cron.d/x}]\n",
            "field templates[0].dest: \"/etc/cron.d/x\" is absolute"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "templates: [{source: a, dest: 'conf//x'}]\n",
            "field templates[0].dest: \"conf//x\" has an empty or \".\" component"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "templates: [{source: a, dest: ./x}]\n",
            "templates[0].dest: \"./x\" has an empty or"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "templates: [{source: a, dest: b, mode: rw-r}]\n",
            "field templates[0].mode: \"rw-r\" is not an octal mode"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "templates: [{source: a, dest: b, mode: \"4755\"}]\n",
            "field templates[0].mode: \"4755\" sets setuid"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "templates: [{source: a, dest: b, mode: \"0044\"}]\n",
            "field templates[0].mode: \"0044\" does not let the file's owner"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "templates: [{source: a, dest: b}, {source: c, dest: b}]\n",
            "field templates[1].dest: \"b\" is also templates[0].dest"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "templates: [{source: a, dest: conf}, {source: c, dest: conf/x}]\n",
            "field templates[1].dest: \"conf/x\" lies inside \"conf\""},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "templates: [{source: a, dest: b, owner: root}]\n",
            "unknown key"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "hooks: {pre_traffic: {timeout: 10s}}\n",
            "field hooks.pre_traffic.argv: the command to run is required"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "hooks: {pre_start: {argv: [\"\"]}}\n",
            "field hooks.pre_start.argv: the command to run is required"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "hooks: {post_switch: {argv: [x], timeout: 500ms}}\n",
            "field hooks.post_switch.timeout: 500ms is below 1s"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "hooks: {pre_stop: {argv: [x], timeout: 2h}}\n",
            "field hooks.pre_stop.timeout:"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "hooks: {post_rollback: {argv: [x], on_failure: ignore}}\n",
            "field hooks.post_rollback.on_failure: \"ignore\" must be fail"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "hooks: {post_rollback: {argv: [x], on_failure: fail}}\n",
            "field hooks.post_rollback.on_failure: must be warn"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "hooks: {post_deploy: {argv: [x]}}\n",
            "unknown key"},
        Bad{"name: web\nports: [{public: 80, blue: 81, green: 82}]\nargv: [a]\n"
            "hooks: {pre_start: {argv: [x], shell: true}}\n",
            "unknown key"}));

}  // namespace
}  // namespace tern
