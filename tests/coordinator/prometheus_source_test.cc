// PrometheusSource without a Prometheus: templates, the answer's JSON, the
// config's checks, and the HTTP side against a fake server (what is sent:
// the form, the time, the bearer token; what comes back: errors, hangs).
// tests/integration/prometheus_source_test.cc asks a real Prometheus.

#include "coordinator/prometheus_source.h"

#include <sys/stat.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>

#include "tests/support/http_server.h"
#include "tests/support/temp_dir.h"

namespace tern {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::FakeHttpServer;
using testing::form_value;
using testing::http_body;

std::string vector_answer(const std::vector<std::string>& values) {
  std::string result;
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) result += ",";
    result += R"({"metric":{"instance":"h)" + std::to_string(i) + R"("},"value":[1700000000.5,")" + values[i] + R"("]})";
  }
  return R"({"status":"success","data":{"resultType":"vector","result":[)" + result + "]}}";
}

std::string scalar_answer(const std::string& value) {
  return R"({"status":"success","data":{"resultType":"scalar","result":[1700000000.5,")" + value + R"("]}})";
}

std::string error_answer(const std::string& type, const std::string& error) {
  return R"({"status":"error","errorType":")" + type + R"(","error":")" + error + R"("})";
}

PrometheusSourceConfig config(std::string address, std::string token_file = "", std::string ca_file = "",
                              Millis timeout = Millis(5000)) {
  PrometheusSourceConfig c;
  c.address = std::move(address);
  c.bearer_token_file = std::move(token_file);
  c.ca_file = std::move(ca_file);
  c.timeout = timeout;
  return c;
}

// ---- templates ----

TEST(QueryTemplateTest, PlaceholdersAreReplacedAndPromQLBracesAreLeftAlone) {
  const std::string tmpl =
      R"(sum(increase(http_requests_total{instance="{address}:{port}",code=~"5.."}[{interval}])))";
  EXPECT_EQ(expand_query(tmpl, {{"address", "10.0.0.5"}, {"port", "9002"}, {"interval", "10s"}}),
            R"(sum(increase(http_requests_total{instance="10.0.0.5:9002",code=~"5.."}[10s])))");
}

TEST(QueryTemplateTest, UnknownPlaceholdersStayAndValuesAreNotExpandedAgain) {
  EXPECT_EQ(expand_query("a{host}b{nope}c", {{"host", "{nope}"}}), "a{nope}b{nope}c");
  EXPECT_EQ(expand_query("{{port}}", {{"port", "1"}}), "{1}");
  // Not placeholders: empty, starting with a digit, unclosed, with an operator.
  for (const std::string t : {"{}", "{1a}", "{port", "x{port=\"1\"}", "{ port}", "}{"}) {
    EXPECT_EQ(expand_query(t, {{"port", "9"}, {"1a", "no"}}), t);
  }
  EXPECT_EQ(expand_query("", {{"port", "9"}}), "");
}

TEST(QueryTemplateTest, ValidationNamesAnUnknownPlaceholderAndTheKnownOnes) {
  EXPECT_TRUE(check_query_template(R"(sum(x{code=~"5..",instance="{address}:{port}"}))", canary_query_vars()).ok());
  auto st = check_query_template("sum(x{instance=\"{adress}:{port}\"})", canary_query_vars());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("unknown placeholder {adress}"));
  EXPECT_THAT(st.message(), HasSubstr("{address} {host} {interval} {port} {service} {slot}"));
  EXPECT_EQ(check_query_template("  ", canary_query_vars()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(check_query_template("up{x}", {}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(QueryTemplateTest, ACanaryQueryMustTellTheSlotsApart) {
  EXPECT_TRUE(check_canary_query("sum(x{instance=\"{address}:{port}\"})").ok());
  EXPECT_TRUE(check_canary_query("sum(x{slot=\"{slot}\",service=\"{service}\"})").ok());
  auto st = check_canary_query("sum(x{host=\"{host}\"})");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("neither {port} nor {slot}"));
  EXPECT_EQ(check_canary_query("sum(x{p=\"{prot}\"})").code(), absl::StatusCode::kInvalidArgument);
}

// ---- the answer's JSON ----

TEST(QueryAnswerTest, AVectorIsSummedAndAScalarIsItsValue) {
  EXPECT_EQ(*parse_query_answer(vector_answer({"12.5", "7.5", "1e+03"})), 1020);
  EXPECT_EQ(*parse_query_answer(vector_answer({"0"})), 0) << "a zero is a value, not no data";
  EXPECT_EQ(*parse_query_answer(scalar_answer("3")), 3);
  EXPECT_EQ(*parse_query_answer(scalar_answer("-2.25")), -2.25);
}

TEST(QueryAnswerTest, EmptyNaNAndInfinityAreNoDataNeverZero) {
  for (const std::string& answer :
       {vector_answer({}), vector_answer({"NaN"}), vector_answer({"1", "NaN"}), vector_answer({"+Inf"}),
        vector_answer({"-Inf"}), scalar_answer("NaN"), scalar_answer("+Inf"), vector_answer({"1e308", "1e308"})}) {
    auto v = parse_query_answer(answer);
    EXPECT_EQ(v.status().code(), absl::StatusCode::kNotFound) << answer << " -> " << v.status();
    EXPECT_THAT(v.status().message(), HasSubstr("no data")) << answer;
  }
  EXPECT_THAT(parse_query_answer(vector_answer({})).status().message(), HasSubstr("empty vector"));
  EXPECT_THAT(parse_query_answer(scalar_answer("NaN")).status().message(), HasSubstr("NaN"));
}

TEST(QueryAnswerTest, AnErrorStatusGivesItsTypeAndText) {
  auto bad = parse_query_answer(error_answer("bad_data", "1:5: parse error: unclosed left parenthesis"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("bad_data: 1:5: parse error: unclosed left parenthesis"));
  auto slow = parse_query_answer(error_answer("timeout", "query timed out in expression evaluation"));
  EXPECT_EQ(slow.status().code(), absl::StatusCode::kDeadlineExceeded);
  auto exec = parse_query_answer(error_answer("execution", "query processing would load too many samples"));
  EXPECT_EQ(exec.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(exec.status().message(), HasSubstr("execution: query processing would load too many samples"));
}

TEST(QueryAnswerTest, OtherShapesAreRefusedWithAReason) {
  auto matrix = parse_query_answer(
      R"({"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}})");
  EXPECT_EQ(matrix.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(matrix.status().message(), HasSubstr("range vector"));
  auto str = parse_query_answer(R"({"status":"success","data":{"resultType":"string","result":[1,"hi"]}})");
  EXPECT_EQ(str.status().code(), absl::StatusCode::kInvalidArgument);
  auto hist = parse_query_answer(
      R"({"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{}]}]}})");
  EXPECT_EQ(hist.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(hist.status().message(), HasSubstr("native histogram"));
  for (const std::string answer :
       {"<html>502 Bad Gateway</html>", "", "[1,2]", R"({"status":"success"})",
        R"({"status":"success","data":{"resultType":"vector","result":[{"value":[1,2]}]}})",
        R"({"status":"success","data":{"resultType":"scalar","result":[1,"twelve"]}})"}) {
    auto v = parse_query_answer(answer);
    EXPECT_EQ(v.status().code(), absl::StatusCode::kUnavailable) << answer;
    EXPECT_THAT(v.status().message(), HasSubstr("not a Prometheus answer")) << answer;
  }
}

// ---- config ----

class PrometheusConfigTest : public ::testing::Test {
 protected:
  absl::Status create(PrometheusSourceConfig c) { return PrometheusSource::create(std::move(c)).status(); }
  std::string token_file(const std::string& text, mode_t mode) {
    const std::string p = dir_.write("token-" + std::to_string(++files_), text);
    ::chmod(p.c_str(), mode);
    return p;
  }
  testing::TempDir dir_;
  int files_ = 0;
};

TEST_F(PrometheusConfigTest, TheAddressNeedsASchemeAHostAndAPortInRange) {
  EXPECT_TRUE(create(config("http://127.0.0.1:9090")).ok());
  EXPECT_TRUE(create(config("https://prom.example.org")).ok());
  EXPECT_TRUE(create(config("http://[::1]:9090/prometheus/")).ok());
  struct Case {
    std::string address, says;
  };
  for (const Case& c : std::vector<Case>{{"", "empty"},
                                         {"127.0.0.1:9090", "must start with http:// or https://"},
                                         {"localhost:9090", "must start with http:// or https://"},
                                         {"ftp://127.0.0.1", "must start with http:// or https://"},
                                         {"http://", "http://"},
                                         {"http://127.0.0.1:0", "port"},
                                         {"http://127.0.0.1:70000", "127.0.0.1:70000"},
                                         {"http://user:pw@127.0.0.1:9090", "bearer_token_file"},
                                         {"http://127.0.0.1:9090/?x=1", "query or fragment"}}) {
    auto st = create(config(c.address));
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.address << ": " << st;
    EXPECT_THAT(st.message(), HasSubstr(c.says)) << c.address;
  }
  EXPECT_EQ(create(config("http://127.0.0.1:9090", "", "", Millis(0))).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(PrometheusConfigTest, TheTokenFileMustBeReadableNotByEveryoneAndNotEmpty) {
  EXPECT_TRUE(create(config("http://127.0.0.1:9090", token_file("abc\n", 0600))).ok());
  EXPECT_TRUE(create(config("http://127.0.0.1:9090", token_file("abc", 0640))).ok());

  const std::string open = token_file("abc\n", 0644);
  auto st = create(config("http://127.0.0.1:9090", open));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(st.message(), HasSubstr("readable by everyone (mode 0644)"));
  EXPECT_THAT(st.message(), HasSubstr("chmod o-rwx " + open));

  st = create(config("http://127.0.0.1:9090", dir_.file("missing")));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(st.message(), HasSubstr("bearer_token_file " + dir_.file("missing")));
  EXPECT_EQ(create(config("http://127.0.0.1:9090", token_file(" \n", 0600))).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create(config("http://127.0.0.1:9090", token_file("a b", 0600))).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(PrometheusConfigTest, TheCaFileIsReadablePemAndOnlyForHttps) {
  const std::string ca = dir_.write("ca.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
  EXPECT_TRUE(create(config("https://127.0.0.1:9090", "", ca)).ok());
  auto st = create(config("http://127.0.0.1:9090", "", ca));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("ca_file is for https"));
  EXPECT_EQ(create(config("https://127.0.0.1:9090", "", dir_.file("none.crt"))).code(),
            absl::StatusCode::kFailedPrecondition);
  st = create(config("https://127.0.0.1:9090", "", dir_.write("junk.crt", "not a certificate")));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("holds no PEM certificate"));
}

// ---- HTTP, against a fake server ----

uint16_t closed_port() {
  // A server that is gone: its port is free and nothing listens on it.
  uint16_t port = 0;
  {
    FakeHttpServer s([](const std::string&) { return std::string(); });
    port = s.port();
  }
  return port;
}

class PrometheusHttpTest : public ::testing::Test {
 protected:
  PrometheusSource source(const std::string& address, const std::string& token_file = "",
                          Millis timeout = Millis(5000)) {
    auto s = PrometheusSource::create(config(address, token_file, "", timeout), clock_);
    EXPECT_TRUE(s.ok()) << s.status();
    return *std::move(s);
  }
  testing::TempDir dir_;
  FakeClock clock_{TimePoint(Millis(1'700'000'000'123))};
};

TEST_F(PrometheusHttpTest, SendsTheQueryAsAFormPostWithTheTimeAndTheToken) {
  FakeHttpServer server([](const std::string&) { return FakeHttpServer::response(200, vector_answer({"42"})); });
  const std::string token = dir_.write("token", "s3cr3t-t0ken\n");
  ::chmod(token.c_str(), 0600);
  const std::string promql = R"(sum(increase(x{a="b c&d=e",code=~"5.."}[10s])) + 0 * up{x="%2F;+"})";
  auto v = source(server.url() + "/prom/", token).query(promql, clock_.now());
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, 42);
  ASSERT_EQ(server.requests().size(), 1u);
  const std::string req = server.requests()[0];
  EXPECT_EQ(req.rfind("POST /prom/api/v1/query HTTP/1.1\r\n", 0), 0u) << req;
  EXPECT_THAT(req, HasSubstr("\r\nAuthorization: Bearer s3cr3t-t0ken\r\n"));
  EXPECT_THAT(req, HasSubstr("\r\nContent-Type: application/x-www-form-urlencoded\r\n"));
  EXPECT_THAT(req, Not(HasSubstr("Expect:")));
  EXPECT_EQ(form_value(http_body(req), "query"), promql);
  EXPECT_EQ(form_value(http_body(req), "time"), "1700000000.123");
  EXPECT_EQ(form_value(http_body(req), "timeout"), "5000ms");
}

TEST_F(PrometheusHttpTest, NoTokenNoHeaderAndARotatedTokenIsUsedAtOnce) {
  FakeHttpServer server([](const std::string&) { return FakeHttpServer::response(200, scalar_answer("1")); });
  ASSERT_TRUE(source(server.url()).query("up").ok());
  EXPECT_THAT(server.requests().at(0), Not(HasSubstr("Authorization")));
  EXPECT_EQ(form_value(http_body(server.requests().at(0)), "time"), "") << "no time: Prometheus' now";

  const std::string token = dir_.write("token", "first");
  ::chmod(token.c_str(), 0600);
  PrometheusSource s = source(server.url(), token);
  ASSERT_TRUE(s.query("up").ok());
  dir_.write("token", "second");
  ASSERT_TRUE(s.query("up").ok());
  EXPECT_THAT(server.requests().at(1), HasSubstr("Authorization: Bearer first\r\n"));
  EXPECT_THAT(server.requests().at(2), HasSubstr("Authorization: Bearer second\r\n"));

  ::chmod(token.c_str(), 0604);
  auto v = s.query("up");
  EXPECT_EQ(v.status().code(), absl::StatusCode::kFailedPrecondition) << v.status();
  EXPECT_THAT(v.status().message(), HasSubstr("chmod o-rwx"));
  EXPECT_EQ(server.requests().size(), 3u) << "the token is not sent once others can read it";
}

TEST_F(PrometheusHttpTest, ErrorsNameTheAddressAndTheQuery) {
  std::string next;
  FakeHttpServer server([&](const std::string&) { return next; });
  PrometheusSource s = source(server.url(), "", Millis(300));
  const std::string where = "Prometheus " + server.url() + ": `sum(up)`: ";

  next = FakeHttpServer::response(400, error_answer("bad_data", "1:5: parse error"));
  auto v = s.query("sum(up)");
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument) << v.status();
  EXPECT_EQ(v.status().message(), where + "Prometheus says bad_data: 1:5: parse error");

  next = FakeHttpServer::response(502, "<html>bad gateway</html>", "text/html");
  v = s.query("sum(up)");
  EXPECT_EQ(v.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(v.status().message(), where + "HTTP 502");

  next = FakeHttpServer::response(401, "Unauthorized\n", "text/plain");
  v = s.query("sum(up)");
  EXPECT_EQ(v.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(v.status().message(), HasSubstr("set bearer_token_file"));

  next = FakeHttpServer::response(200, "<html>a login page</html>", "text/html");
  v = s.query("sum(up)");
  EXPECT_EQ(v.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(v.status().message(), HasSubstr(where + "not a Prometheus answer"));

  next = "";  // no answer at all
  v = s.query("sum(up)");
  EXPECT_EQ(v.status().code(), absl::StatusCode::kDeadlineExceeded) << v.status();
  EXPECT_THAT(v.status().message(), HasSubstr(where + "no answer within 300ms"));

  const std::string gone = "http://127.0.0.1:" + std::to_string(closed_port());
  v = source(gone).query("sum(up)");
  EXPECT_EQ(v.status().code(), absl::StatusCode::kUnavailable) << v.status();
  EXPECT_THAT(v.status().message(), HasSubstr("Prometheus " + gone + ": `sum(up)`: "));
}

TEST_F(PrometheusHttpTest, NeverGoesThroughAProxyFromTheEnvironment) {
  FakeHttpServer server([](const std::string&) { return FakeHttpServer::response(200, scalar_answer("5")); });
  const std::string proxy = "http://127.0.0.1:" + std::to_string(closed_port());
  ::setenv("http_proxy", proxy.c_str(), 1);
  ::setenv("HTTP_PROXY", proxy.c_str(), 1);
  auto v = source(server.url()).query("vector(5)");
  ::unsetenv("http_proxy");
  ::unsetenv("HTTP_PROXY");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, 5);
}

// ---- counts ----

// Answers each query from `answers` (by the query's text), an empty vector
// for any other.
class CountsTest : public PrometheusHttpTest {
 protected:
  CountsTest()
      : server_([this](const std::string& req) {
          const std::string q = form_value(http_body(req), "query");
          std::lock_guard<std::mutex> lock(mu_);
          auto it = answers_.find(q);
          return FakeHttpServer::response(200, it == answers_.end() ? vector_answer({}) : it->second);
        }) {}

  void answer(const std::string& query, const std::string& json) {
    std::lock_guard<std::mutex> lock(mu_);
    answers_[query] = json;
  }

  const std::map<std::string, std::string> canary_{{"port", "9002"}, {"slot", "canary"}};
  const std::map<std::string, std::string> baseline_{{"port", "9001"}, {"slot", "baseline"}};
  std::mutex mu_;
  std::map<std::string, std::string> answers_;
  FakeHttpServer server_;
};

TEST_F(CountsTest, FourQueriesAtOneInstantRoundedToCounts) {
  answer("bad{p=\"9002\"}", vector_answer({"12.4"}));
  answer("total{p=\"9002\"}", vector_answer({"100.5", "0.2"}));  // 100.7
  answer("bad{p=\"9001\"}", scalar_answer("0.49"));
  answer("total{p=\"9001\"}", vector_answer({"1e6"}));
  auto c = source(server_.url()).counts("errors", "bad{p=\"{port}\"}", "total{p=\"{port}\"}", canary_, baseline_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name(), "errors");
  EXPECT_EQ(c->no_data(), "");
  EXPECT_EQ(c->canary_bad(), 12u);
  EXPECT_EQ(c->canary_total(), 101u);
  EXPECT_EQ(c->baseline_bad(), 0u);
  EXPECT_EQ(c->baseline_total(), 1000000u);
  const auto reqs = server_.requests();
  ASSERT_EQ(reqs.size(), 4u);
  for (const auto& r : reqs) EXPECT_EQ(form_value(http_body(r), "time"), "1700000000.123") << "one instant for all";
}

TEST_F(CountsTest, AnyNoDataMakesTheMetricNoDataWithTheReasonNotAnError) {
  answer("bad{p=\"9002\"}", vector_answer({"1"}));
  answer("total{p=\"9002\"}", vector_answer({"10"}));
  answer("bad{p=\"9001\"}", vector_answer({"0"}));
  // baseline total: nothing answered, an empty vector
  auto c = source(server_.url()).counts("errors", "bad{p=\"{port}\"}", "total{p=\"{port}\"}", canary_, baseline_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->no_data(), HasSubstr("baseline total: Prometheus " + server_.url() + ": `total{p=\"9001\"}`: "));
  EXPECT_THAT(c->no_data(), HasSubstr("no data: no series matched (an empty vector)"));
  EXPECT_EQ(c->canary_bad() + c->canary_total() + c->baseline_bad() + c->baseline_total(), 0u);

  answer("total{p=\"9001\"}", scalar_answer("NaN"));
  answer("bad{p=\"9002\"}", vector_answer({"-3"}));
  c = source(server_.url()).counts("errors", "bad{p=\"{port}\"}", "total{p=\"{port}\"}", canary_, baseline_);
  ASSERT_TRUE(c.ok());
  EXPECT_THAT(c->no_data(), HasSubstr("canary bad: "));
  EXPECT_THAT(c->no_data(), HasSubstr("a count cannot be negative (-3)"));
  EXPECT_EQ(server_.requests().size(), 5u) << "the first failure stops the rest";

  const std::string gone = "http://127.0.0.1:" + std::to_string(closed_port());
  c = source(gone).counts("errors", "bad{p=\"{port}\"}", "total{p=\"{port}\"}", canary_, baseline_);
  ASSERT_TRUE(c.ok()) << "a provider error is no data, never a failure";
  EXPECT_THAT(c->no_data(), HasSubstr("canary bad: Prometheus " + gone));
}

TEST_F(CountsTest, TheCallersMistakesAreErrorsAndNothingIsAsked) {
  auto c = source(server_.url()).counts("errors", "bad{h=\"{host}\"}", "total{p=\"{port}\"}", canary_, baseline_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("errors bad (canary): unknown placeholder {host}"));

  c = source(server_.url()).counts("errors", "bad", "total{p=\"{port}\"}", canary_, baseline_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("the canary and the baseline get the same query `bad`"));

  auto quoted = canary_;
  quoted["port"] = "9002\",code=\"200";
  c = source(server_.url()).counts("errors", "bad{p=\"{port}\"}", "total{p=\"{port}\"}", quoted, baseline_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("{port} holds a quote"));
  EXPECT_TRUE(server_.requests().empty());
}

}  // namespace
}  // namespace tern
