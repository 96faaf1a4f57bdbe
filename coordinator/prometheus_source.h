#pragma once

// Canary counts from a Prometheus server, for teams that run one
// (docs/ARCHITECTURE.md, "Canary analysis"). The
// coordinator asks /api/v1/query with query templates that return COUNTS
// (not ratios), once with the canary's variables and once with the
// baseline's, so the pair on each host is kept; every interval it turns the
// four answers (bad and total, canary and baseline) into one MetricCounts,
// just as an agent's scrape would.
//
// No data is never zero: an empty vector, NaN or an infinity is "no data",
// and so is every failure to ask (connection, timeout, HTTP status, a
// Prometheus error, an unreadable answer). counts() reports all of them in
// MetricCounts.no_data with the reason; it never fails the canary (unlike
// Argo Rollouts, where a provider error aborts the rollout, argo#1466).
//
// A template's bad query must say what "zero" looks like: a selector that
// matches nothing is an empty vector, and a healthy release has no 5xx
// series at all until its first error. Write the zero explicitly, tied to
// the total so that a typo still reads as no data:
//
//   bad:   sum(increase(http_requests_total{instance="{address}:{port}",code=~"5.."}[{interval}]))
//            or 0 * sum(increase(http_requests_total{instance="{address}:{port}"}[{interval}]))
//   total: sum(increase(http_requests_total{instance="{address}:{port}"}[{interval}]))
//
// increase() extrapolates to the window's edges and ignores the first value
// of a series born inside the window (the release's first 5xx), so its
// answers are not whole numbers and a new series' first errors are missed;
// counts() rounds each answer to the nearest integer (see counts()).

#include <map>
#include <optional>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/clock.h"
#include "tern/v1/agent.pb.h"

namespace tern {

struct PrometheusSourceConfig {
  // "http://host:port" or "https://host:port", optionally with a path prefix
  // (a server behind a proxy, or run with --web.route-prefix); the API is
  // <address>/api/v1/query. No credentials, query or fragment in it.
  std::string address;
  // A file whose content (surrounding whitespace trimmed) is sent as
  // "Authorization: Bearer <token>". Empty: no header. It must not be
  // readable by everyone. Read at create() and again on every query, so a
  // rotated token is used at once.
  std::string bearer_token_file;
  // PEM CA certificates that verify an https server, instead of the
  // system's. Only with an https address.
  std::string ca_file;
  // Per query, all of it: connecting, TLS, sending and the answer. Also sent
  // to Prometheus as the query's own timeout.
  Millis timeout{5000};
};

// The placeholders the coordinator fills in a query template:
//   {host}      the host id
//   {address}   the host's address as the coordinator sees it (may be empty)
//   {port}      the slot's port (the canary's or the baseline's)
//   {slot}      "canary" or "baseline"
//   {interval}  the analysis interval, in Prometheus' syntax ("10s")
//   {service}   the service's name
const std::set<std::string>& canary_query_vars();

// A placeholder is "{" name "}" with a name of letters, digits and '_' (not
// starting with a digit), so PromQL's own braces (`{code=~"5.."}`) are left
// alone. Each placeholder that `vars` names is replaced by its value,
// verbatim (no quoting: values go inside the template's own quotes, so a
// value must not hold a quote or a backslash; counts() checks); others are
// left as they are. One pass: a value is not expanded again.
std::string expand_query(const std::string& tmpl, const std::map<std::string, std::string>& vars);

// INVALID_ARGUMENT when `tmpl` is empty or uses a placeholder not in `known`
// (naming it and the known ones).
absl::Status check_query_template(const std::string& tmpl, const std::set<std::string>& known);

// check_query_template against canary_query_vars(), and the template must
// tell the slots apart ({port} or {slot}): otherwise the canary and the
// baseline get the same query and the release is compared with itself.
absl::Status check_canary_query(const std::string& tmpl);

// The number in the JSON body of an /api/v1/query answer: a vector's sample
// values summed, a scalar's value.
//   NOT_FOUND          no data: an empty vector, NaN, +Inf or -Inf (the sum
//                      too); the message says which
//   INVALID_ARGUMENT   status "error" with errorType "bad_data" (the query is
//                      wrong), or a range vector or string result
//   DEADLINE_EXCEEDED  errorType "timeout"
//   UNAVAILABLE        any other errorType, or not a Prometheus answer
// Error messages carry errorType and error as Prometheus gave them.
absl::StatusOr<double> parse_query_answer(const std::string& json);

// One Prometheus server, asked over HTTP(S) with libcurl: a POST form to
// <address>/api/v1/query (so long queries fit), TLS verified (with ca_file
// when given), never through a proxy, no redirects followed.
//
// Synchronous: a call blocks for up to the timeout per query (counts() asks
// four times), so run it off the event loop. Thread-safe: query() and
// counts() keep no state between calls (each opens its own connection and
// reads the token file afresh), so any number of threads may call them at
// once. The clock given to create() must outlive the source.
class PrometheusSource {
 public:
  // Checks the address (scheme http or https, a host, a port in 1-65535 when
  // given), the timeout (> 0), the token file (readable, not by everyone:
  // the error says what to chmod; not empty) and the CA file (readable PEM,
  // https only). INVALID_ARGUMENT or FAILED_PRECONDITION naming the field.
  static absl::StatusOr<PrometheusSource> create(PrometheusSourceConfig config,
                                                 const Clock& clock = SystemClock::instance());

  // Evaluates `promql` at `at` (Prometheus' "now" when unset): the number
  // parse_query_answer() finds, or its error; UNAVAILABLE when the server
  // cannot be reached or answers an HTTP error without a Prometheus error
  // in it, DEADLINE_EXCEEDED after the timeout, UNAUTHENTICATED on HTTP 401
  // and PERMISSION_DENIED on 403 (fix the token), FAILED_PRECONDITION when
  // the token file cannot be used any more. Every message names the address
  // and the query.
  absl::StatusOr<double> query(const std::string& promql, std::optional<TimePoint> at = std::nullopt) const;

  // One interval of metric `name`: bad and total, each expanded with the
  // canary's and with the baseline's variables, all four evaluated at the
  // same instant (the clock's now) so the pair covers the same window. (A
  // clock ahead of Prometheus' asks about moments not scraped yet: both
  // sides alike, but keep the clocks in sync.) Prometheus isolates one
  // query from a scrape being written, not four: a scrape that commits
  // between them, with a timestamp at or before that instant, counts in
  // the later queries only. Rare (a scrape takes milliseconds of an
  // interval of seconds), and it only moves counts between intervals.
  //
  // Each answer is rounded to the nearest integer (half away from zero).
  // increase() is not an exact count: it takes the change between the
  // first and the last sample inside the window (missing what happened
  // between the last one before it and the first inside) and stretches it
  // towards the window's edges by up to 1.1 average scrape intervals on
  // each side; a 10s window scraped every 1s can read up to ~25% high, or a
  // scrape's worth low. Both slots are scraped alike, which keeps their
  // ratio; bad may come out above total (the judge cuts it to the total).
  // A negative answer is no data (a count never falls: delta(), or a reset
  // the query did not handle).
  //
  // The first query with no data or an error stops the rest: the result
  // has `no_data` set to which one and why, and zero counts. A status error
  // only for the caller's mistake: INVALID_ARGUMENT when a template uses a
  // placeholder the variables do not give, a value holds a quote, a
  // backslash or a control character, or the canary's and the baseline's
  // variables expand a template to the same query.
  absl::StatusOr<tern::v1::MetricCounts> counts(const std::string& name, const std::string& bad_query,
                                                const std::string& total_query,
                                                const std::map<std::string, std::string>& canary_vars,
                                                const std::map<std::string, std::string>& baseline_vars) const;

  const PrometheusSourceConfig& config() const { return config_; }

 private:
  PrometheusSource(PrometheusSourceConfig config, const Clock& clock) : config_(std::move(config)), clock_(&clock) {}

  PrometheusSourceConfig config_;
  const Clock* clock_;
};

}  // namespace tern
