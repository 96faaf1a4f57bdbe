#include "coordinator/prometheus_source.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <system_error>

#include "absl/cleanup/cleanup.h"
#include "core/bounded_body.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace tern {
namespace {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;

// An answer larger than this is refused: a count query sums to one number,
// so a body this big means a query that returns every series.
constexpr size_t kMaxAnswerBytes = size_t{8} << 20;
constexpr size_t kMaxTokenBytes = 64 << 10;
constexpr size_t kMaxCaBytes = size_t{4} << 20;
// Queries quoted in messages are cut to this many characters.
constexpr size_t kQuotedQueryChars = 300;

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] { ::curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0 || c == '_'; }
bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; }

// Calls `on_text` for each stretch of literal text and `on_placeholder` for
// each "{name}", in order.
void scan_template(const std::string& tmpl, const std::function<void(size_t pos, size_t len)>& on_text,
                   const std::function<void(const std::string& name)>& on_placeholder) {
  size_t text_start = 0;
  size_t i = 0;
  while (i < tmpl.size()) {
    if (tmpl[i] == '{' && i + 1 < tmpl.size() && is_name_start(tmpl[i + 1])) {
      size_t j = i + 1;
      while (j < tmpl.size() && is_name_char(tmpl[j])) ++j;
      if (j < tmpl.size() && tmpl[j] == '}') {
        if (i > text_start) on_text(text_start, i - text_start);
        on_placeholder(tmpl.substr(i + 1, j - i - 1));
        i = j + 1;
        text_start = i;
        continue;
      }
    }
    ++i;
  }
  if (text_start < tmpl.size()) on_text(text_start, tmpl.size() - text_start);
}

std::vector<std::string> placeholders(const std::string& tmpl) {
  std::vector<std::string> out;
  scan_template(tmpl, [](size_t, size_t) {}, [&](const std::string& name) { out.push_back(name); });
  return out;
}

std::string quoted_query(const std::string& q) {
  if (q.size() <= kQuotedQueryChars) return absl::StrCat("`", q, "`");
  return absl::StrCat("`", q.substr(0, kQuotedQueryChars), "...`");
}

std::string field_string(const Struct& s, const std::string& key) {
  auto it = s.fields().find(key);
  if (it == s.fields().end() || it->second.kind_case() != Value::kStringValue) return "";
  return it->second.string_value();
}

// A sample value as Prometheus writes it: "12.5", "1e+06", "NaN", "+Inf", "-Inf".
absl::StatusOr<double> sample_number(const Value& pair) {
  if (pair.kind_case() != Value::kListValue || pair.list_value().values_size() != 2 ||
      pair.list_value().values(1).kind_case() != Value::kStringValue) {
    return absl::UnavailableError("not a Prometheus answer: a sample is not [time, \"value\"]");
  }
  const std::string& text = pair.list_value().values(1).string_value();
  if (text == "NaN") return std::numeric_limits<double>::quiet_NaN();
  if (text == "+Inf") return std::numeric_limits<double>::infinity();
  if (text == "-Inf") return -std::numeric_limits<double>::infinity();
  double v = 0;
  if (!absl::SimpleAtod(text, &v)) {
    return absl::UnavailableError(absl::StrCat("not a Prometheus answer: the sample value \"", text,
                                               "\" is not a number"));
  }
  return v;
}

absl::StatusOr<double> no_data_unless_finite(double v) {
  if (std::isnan(v)) return absl::NotFoundError("no data: the value is NaN (such as 0/0 over a window with no requests)");
  if (std::isinf(v)) return absl::NotFoundError(absl::StrCat("no data: the value is ", v > 0 ? "+Inf" : "-Inf"));
  return v;
}

absl::Status error_answer(const std::string& type, const std::string& text) {
  const std::string msg = absl::StrCat("Prometheus says ", type.empty() ? "error" : type, ": ",
                                       text.empty() ? "(no reason given)" : text);
  if (type == "bad_data") return absl::InvalidArgumentError(msg);
  if (type == "timeout") return absl::DeadlineExceededError(msg);
  return absl::UnavailableError(msg);
}

// "http://host:port[/prefix]": the scheme, a host, a port when given, no
// credentials, query or fragment. The message names the field.
absl::Status check_address(const std::string& address) {
  const std::string example = "such as http://127.0.0.1:9090";
  if (address.empty()) return absl::InvalidArgumentError(absl::StrCat("address is empty: give the server's URL, ", example));
  const std::string lower = absl::AsciiStrToLower(address);
  if (!absl::StartsWith(lower, "http://") && !absl::StartsWith(lower, "https://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("address \"", address, "\" must start with http:// or https://, ", example));
  }
  std::unique_ptr<CURLU, void (*)(CURLU*)> url(::curl_url(), ::curl_url_cleanup);
  if (url == nullptr) return absl::ResourceExhaustedError("cannot create a libcurl URL handle");
  if (CURLUcode rc = ::curl_url_set(url.get(), CURLUPART_URL, address.c_str(), 0); rc != CURLUE_OK) {
    return absl::InvalidArgumentError(
        absl::StrCat("address \"", address, "\" is not a URL (", ::curl_url_strerror(rc), "), ", example));
  }
  auto part = [&](CURLUPart which) -> std::optional<std::string> {
    char* text = nullptr;
    if (::curl_url_get(url.get(), which, &text, 0) != CURLUE_OK || text == nullptr) return std::nullopt;
    std::string out(text);
    ::curl_free(text);
    return out;
  };
  const auto host = part(CURLUPART_HOST);
  if (!host || host->empty()) {
    return absl::InvalidArgumentError(absl::StrCat("address \"", address, "\" has no host, ", example));
  }
  if (const auto port = part(CURLUPART_PORT)) {
    int p = 0;
    if (!absl::SimpleAtoi(*port, &p) || p < 1 || p > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("address \"", address, "\": the port must be 1-65535, not ", *port));
    }
  }
  if (part(CURLUPART_USER) || part(CURLUPART_PASSWORD)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "address \"", address, "\" holds credentials; put a token in a file and name it in bearer_token_file"));
  }
  if (part(CURLUPART_QUERY) || part(CURLUPART_FRAGMENT)) {
    return absl::InvalidArgumentError(absl::StrCat("address \"", address,
                                                   "\" has a query or fragment; give only the server's URL, ", example));
  }
  return absl::OkStatus();
}

// A small file read whole through one descriptor (so its mode and its
// content are of the same file). `field` names it in errors.
struct SmallFile {
  std::string content;
  mode_t mode = 0;
};
absl::StatusOr<SmallFile> read_small_file(const std::string& field, const std::string& path, size_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    const int err = errno;
    return absl::FailedPreconditionError(absl::StrCat(field, " ", path, " cannot be read: ", errno_text(err)));
  }
  absl::Cleanup closer = [fd] { ::close(fd); };
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(field, " ", path, " is not a regular file"));
  }
  SmallFile out;
  out.mode = st.st_mode;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      return absl::FailedPreconditionError(absl::StrCat(field, " ", path, " cannot be read: ", errno_text(err)));
    }
    if (n == 0) break;
    out.content.append(buf, static_cast<size_t>(n));
    if (out.content.size() > max_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(field, " ", path, " is over ", max_bytes >> 10, " KiB"));
    }
  }
  return out;
}

absl::StatusOr<std::string> read_token(const std::string& path) {
  auto file = read_small_file("bearer_token_file", path, kMaxTokenBytes);
  if (!file.ok()) return file.status();
  if ((file->mode & S_IROTH) != 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("bearer_token_file %s is readable by everyone (mode %04o); run: chmod o-rwx %s", path,
                        file->mode & 07777, path));
  }
  const std::string token(absl::StripAsciiWhitespace(file->content));
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat("bearer_token_file ", path, " is empty"));
  for (char c : token) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bearer_token_file ", path, " holds a space or control character: a bearer token is one word"));
    }
  }
  return token;
}

absl::Status check_ca_file(const std::string& path) {
  auto file = read_small_file("ca_file", path, kMaxCaBytes);
  if (!file.ok()) return file.status();
  if (file->content.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("ca_file ", path, " holds no PEM certificate"));
  }
  return absl::OkStatus();
}

std::string url_escape(CURL* curl, const std::string& text) {
  char* escaped = ::curl_easy_escape(curl, text.data(), static_cast<int>(text.size()));
  if (escaped == nullptr) return "";
  std::string out(escaped);
  ::curl_free(escaped);
  return out;
}

struct HttpReply {
  long status = 0;
  std::string body;
};

// POSTs `form` (already encoded) to `url`. Errors are one phrase without
// the address (the caller adds it).
absl::StatusOr<HttpReply> post_form(const PrometheusSourceConfig& config, const std::string& url, CURL* curl,
                                    const std::string& form, const std::string& token) {
  const bool https = absl::StartsWith(absl::AsciiStrToLower(url), "https://");
  BoundedBody body(kMaxAnswerBytes);
  char error[CURL_ERROR_SIZE] = {0};
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> headers(nullptr, ::curl_slist_free_all);
  auto add_header = [&](const std::string& h) {
    if (curl_slist* next = ::curl_slist_append(headers.get(), h.c_str())) {
      (void)headers.release();
      headers.reset(next);
    }
  };
  add_header("Accept: application/json");
  add_header("Expect:");  // no 100-continue round trip for a long query
  if (!token.empty()) add_header("Authorization: Bearer " + token);

  ::curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  ::curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, https ? "https" : "http");
  ::curl_easy_setopt(curl, CURLOPT_PROXY, "");  // never through a proxy from the environment
  ::curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  ::curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  ::curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(config.timeout.count()));
  ::curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config.timeout.count()));
  ::curl_easy_setopt(curl, CURLOPT_USERAGENT, "tern-coordinator-analysis");
  ::curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
  ::curl_easy_setopt(curl, CURLOPT_POSTFIELDS, form.c_str());
  ::curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(form.size()));
  ::curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, append_bounded);
  ::curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  ::curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
  ::curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
  ::curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!config.ca_file.empty()) {
    // Only this CA: without clearing CAPATH libcurl would trust the system's too.
    ::curl_easy_setopt(curl, CURLOPT_CAINFO, config.ca_file.c_str());
    ::curl_easy_setopt(curl, CURLOPT_CAPATH, nullptr);
  }
  const CURLcode rc = ::curl_easy_perform(curl);
  if (body.too_big) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the answer is over ", kMaxAnswerBytes >> 20, " MiB; a count query should sum() to one number"));
  }
  const std::string why = error[0] != 0 ? error : ::curl_easy_strerror(rc);
  switch (rc) {
    case CURLE_OK:
      break;
    case CURLE_OPERATION_TIMEDOUT:
      return absl::DeadlineExceededError(absl::StrCat("no answer within ", config.timeout.count(), "ms (", why, ")"));
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
      return absl::FailedPreconditionError(absl::StrCat(
          why, config.ca_file.empty() ? " (set ca_file to the CA that signed the server's certificate)"
                                      : absl::StrCat(" (is ca_file ", config.ca_file, " the CA that signed it?)")));
    default:
      return absl::UnavailableError(why);
  }
  HttpReply reply;
  ::curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply.status);
  reply.body = std::move(body.text);
  return reply;
}

// A value that would end the template's string literal (or smuggle a
// matcher into it) is the caller's mistake.
absl::Status check_var_value(const std::string& name, const std::string& value) {
  for (char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\'' || c == '`' || c == '\\' || u < 0x20 || u == 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the value of {", name, "} holds a quote, a backslash or a control character; it cannot go into a query"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

const std::set<std::string>& canary_query_vars() {
  static const std::set<std::string> vars = {"host", "address", "port", "slot", "interval", "service"};
  return vars;
}

std::string expand_query(const std::string& tmpl, const std::map<std::string, std::string>& vars) {
  std::string out;
  out.reserve(tmpl.size());
  scan_template(
      tmpl, [&](size_t pos, size_t len) { out.append(tmpl, pos, len); },
      [&](const std::string& name) {
        auto it = vars.find(name);
        if (it != vars.end()) {
          out += it->second;
        } else {
          absl::StrAppend(&out, "{", name, "}");
        }
      });
  return out;
}

absl::Status check_query_template(const std::string& tmpl, const std::set<std::string>& known) {
  if (absl::StripAsciiWhitespace(tmpl).empty()) return absl::InvalidArgumentError("the query is empty");
  for (const std::string& name : placeholders(tmpl)) {
    if (known.count(name) == 0) {
      std::vector<std::string> names;
      for (const auto& k : known) names.push_back(absl::StrCat("{", k, "}"));
      return absl::InvalidArgumentError(absl::StrCat("unknown placeholder {", name, "} in ", quoted_query(tmpl),
                                                     names.empty() ? "; none are known"
                                                                   : absl::StrCat("; known: ", absl::StrJoin(names, " "))));
    }
  }
  return absl::OkStatus();
}

absl::Status check_canary_query(const std::string& tmpl) {
  if (auto st = check_query_template(tmpl, canary_query_vars()); !st.ok()) return st;
  for (const std::string& name : placeholders(tmpl)) {
    if (name == "port" || name == "slot") return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(quoted_query(tmpl), " uses neither {port} nor {slot}, so the canary and the baseline would get the "
                                       "same query; select the slot, e.g. instance=\"{address}:{port}\""));
}

namespace {

// parse_query_answer(); `prometheus_error` is set when the answer is
// Prometheus' own "status": "error" (so an HTTP error status has a reason).
absl::StatusOr<double> parse_answer(const std::string& json, bool* prometheus_error) {
  Struct root;
  if (auto st = google::protobuf::util::JsonStringToMessage(json, &root); !st.ok()) {
    std::string start = json.substr(0, 80);
    for (char& c : start) {
      if (static_cast<unsigned char>(c) < 0x20) c = ' ';
    }
    return absl::UnavailableError(absl::StrCat("not a Prometheus answer (not a JSON object: \"", start,
                                               json.size() > 80 ? "...\")" : "\")"));
  }
  const std::string status = field_string(root, "status");
  if (status == "error") {
    *prometheus_error = true;
    return error_answer(field_string(root, "errorType"), field_string(root, "error"));
  }
  auto data_it = root.fields().find("data");
  if (status != "success" || data_it == root.fields().end() || data_it->second.kind_case() != Value::kStructValue) {
    return absl::UnavailableError("not a Prometheus answer (no \"status\": \"success\" with \"data\")");
  }
  const Struct& data = data_it->second.struct_value();
  const std::string type = field_string(data, "resultType");
  auto result_it = data.fields().find("result");
  if (result_it == data.fields().end()) return absl::UnavailableError("not a Prometheus answer (no data.result)");
  const Value& result = result_it->second;
  if (type == "scalar") {
    auto v = sample_number(result);
    if (!v.ok()) return v.status();
    return no_data_unless_finite(*v);
  }
  if (type == "vector") {
    if (result.kind_case() != Value::kListValue) {
      return absl::UnavailableError("not a Prometheus answer (data.result of a vector is not a list)");
    }
    if (result.list_value().values_size() == 0) {
      return absl::NotFoundError("no data: no series matched (an empty vector)");
    }
    double sum = 0;
    for (const Value& series : result.list_value().values()) {
      if (series.kind_case() != Value::kStructValue) {
        return absl::UnavailableError("not a Prometheus answer (a vector element is not an object)");
      }
      const auto& fields = series.struct_value().fields();
      auto value_it = fields.find("value");
      if (value_it == fields.end()) {
        if (fields.count("histogram") != 0) {
          return absl::InvalidArgumentError("the query returns a native histogram; count with a counter instead");
        }
        return absl::UnavailableError("not a Prometheus answer (a vector element has no value)");
      }
      auto v = sample_number(value_it->second);
      if (!v.ok()) return v.status();
      if (auto finite = no_data_unless_finite(*v); !finite.ok()) return finite.status();
      sum += *v;
    }
    return no_data_unless_finite(sum);
  }
  if (type == "matrix") {
    return absl::InvalidArgumentError(
        "the query returns a range vector; make it one number, e.g. sum(increase(...[{interval}]))");
  }
  if (type == "string") return absl::InvalidArgumentError("the query returns a string, not a number");
  return absl::UnavailableError(absl::StrCat("not a Prometheus answer (resultType \"", type, "\")"));
}

}  // namespace

absl::StatusOr<double> parse_query_answer(const std::string& json) {
  bool prometheus_error = false;
  return parse_answer(json, &prometheus_error);
}

absl::StatusOr<PrometheusSource> PrometheusSource::create(PrometheusSourceConfig config, const Clock& clock) {
  init_curl_once();
  if (auto st = check_address(config.address); !st.ok()) return st;
  while (absl::EndsWith(config.address, "/")) config.address.pop_back();
  if (config.timeout <= Millis(0)) {
    return absl::InvalidArgumentError(absl::StrCat("timeout must be above 0, not ", config.timeout.count(), "ms"));
  }
  if (!config.bearer_token_file.empty()) {
    if (auto token = read_token(config.bearer_token_file); !token.ok()) return token.status();
  }
  if (!config.ca_file.empty()) {
    if (!absl::StartsWith(absl::AsciiStrToLower(config.address), "https://")) {
      return absl::InvalidArgumentError(
          absl::StrCat("ca_file is for https, but the address is ", config.address, "; use https:// or drop ca_file"));
    }
    if (auto st = check_ca_file(config.ca_file); !st.ok()) return st;
  }
  return PrometheusSource(std::move(config), clock);
}

absl::StatusOr<double> PrometheusSource::query(const std::string& promql, std::optional<TimePoint> at) const {
  const std::string what = absl::StrCat("Prometheus ", config_.address, ": ", quoted_query(promql), ": ");
  auto fail = [&](const absl::Status& st) { return absl::Status(st.code(), absl::StrCat(what, st.message())); };
  std::string token;
  if (!config_.bearer_token_file.empty()) {
    auto t = read_token(config_.bearer_token_file);
    if (!t.ok()) return fail(t.status());
    token = std::move(*t);
  }
  std::unique_ptr<CURL, void (*)(CURL*)> curl(::curl_easy_init(), ::curl_easy_cleanup);
  if (curl == nullptr) return fail(absl::ResourceExhaustedError("cannot create a libcurl handle"));
  std::string form = absl::StrCat("query=", url_escape(curl.get(), promql), "&timeout=", config_.timeout.count(), "ms");
  if (at) {
    const int64_t ms = to_unix_millis(*at);
    absl::StrAppendFormat(&form, "&time=%d.%03d", ms / 1000, ms % 1000);
  }
  auto reply = post_form(config_, config_.address + "/api/v1/query", curl.get(), form, token);
  if (!reply.ok()) return fail(reply.status());
  bool prometheus_error = false;
  auto value = parse_answer(reply->body, &prometheus_error);
  if (reply->status == 200) return value.ok() ? value : fail(value.status());
  // Prometheus answers its own errors with 400, 422 or 503 and a JSON body
  // that says what went wrong; anything else is the HTTP status alone.
  if (prometheus_error) return fail(value.status());
  const std::string status = absl::StrCat("HTTP ", reply->status);
  if (reply->status == 401) {
    return fail(absl::UnauthenticatedError(absl::StrCat(
        status, ": the server wants credentials", config_.bearer_token_file.empty()
                                                      ? "; set bearer_token_file"
                                                      : absl::StrCat("; check the token in ", config_.bearer_token_file))));
  }
  if (reply->status == 403) {
    return fail(absl::PermissionDeniedError(absl::StrCat(status, ": the token is not allowed to query")));
  }
  return fail(absl::UnavailableError(status));
}

absl::StatusOr<tern::v1::MetricCounts> PrometheusSource::counts(
    const std::string& name, const std::string& bad_query, const std::string& total_query,
    const std::map<std::string, std::string>& canary_vars,
    const std::map<std::string, std::string>& baseline_vars) const {
  struct Ask {
    std::string what;  // "canary bad", ...
    std::string query;
    uint64_t count = 0;
  };
  std::vector<Ask> asks;
  for (const auto* slot : {&canary_vars, &baseline_vars}) {
    const char* slot_name = slot == &canary_vars ? "canary" : "baseline";
    std::set<std::string> given;
    for (const auto& [k, v] : *slot) given.insert(k);
    for (const auto* tmpl : {&bad_query, &total_query}) {
      const char* which = tmpl == &bad_query ? "bad" : "total";
      if (auto st = check_query_template(*tmpl, given); !st.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(name, " ", which, " (", slot_name, "): ", st.message()));
      }
      for (const std::string& p : placeholders(*tmpl)) {
        if (auto st = check_var_value(p, slot->at(p)); !st.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(name, " ", which, " (", slot_name, "): ", st.message()));
        }
      }
      asks.push_back({absl::StrCat(slot_name, " ", which), expand_query(*tmpl, *slot)});
    }
  }
  // asks: canary bad, canary total, baseline bad, baseline total.
  for (size_t i = 0; i < 2; ++i) {
    if (asks[i].query == asks[i + 2].query) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, " ", i == 0 ? "bad" : "total", ": the canary and the baseline get the same query ",
          quoted_query(asks[i].query), "; select the slot with {port} or {slot}"));
    }
  }

  tern::v1::MetricCounts out;
  out.set_name(name);
  const TimePoint at = clock_->now();
  for (Ask& ask : asks) {
    auto v = query(ask.query, at);
    if (!v.ok()) {
      out.set_no_data(absl::StrCat(ask.what, ": ", v.status().message()));
      return out;
    }
    if (*v < 0) {
      out.set_no_data(absl::StrCat(ask.what, ": Prometheus ", config_.address, ": ", quoted_query(ask.query),
                                   ": a count cannot be negative (", *v,
                                   "); count with increase(), not delta() or a raw difference"));
      return out;
    }
    const double rounded = std::round(*v);
    ask.count = rounded >= static_cast<double>(std::numeric_limits<uint64_t>::max())
                    ? std::numeric_limits<uint64_t>::max()
                    : static_cast<uint64_t>(rounded);
  }
  out.set_canary_bad(asks[0].count);
  out.set_canary_total(asks[1].count);
  out.set_baseline_bad(asks[2].count);
  out.set_baseline_total(asks[3].count);
  return out;
}

}  // namespace tern
