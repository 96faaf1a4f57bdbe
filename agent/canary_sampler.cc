#include "agent/canary_sampler.h"

#include <curl/curl.h>

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/bounded_body.h"
#include "core/canary_judge.h"
#include "core/duration.h"

namespace tern {
namespace {

uint64_t as_count(double v) {
  if (!(v > 0)) return 0;
  if (v >= static_cast<double>(std::numeric_limits<uint64_t>::max())) return std::numeric_limits<uint64_t>::max();
  return static_cast<uint64_t>(std::llround(v));
}

}  // namespace

absl::StatusOr<std::string> scrape_loopback(uint16_t port, const std::string& path, Millis timeout) {
  const std::string what = absl::StrCat("GET ", path, " on 127.0.0.1:", port);
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return absl::ResourceExhaustedError(absl::StrCat(what, ": cannot create a libcurl handle"));
  BoundedBody body(kMaxPromTextBytes);
  char error[CURL_ERROR_SIZE] = {0};
  const std::string url = absl::StrCat("http://127.0.0.1:", port, path);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http");
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "tern-agent-analysis");
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, append_bounded);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
  const CURLcode rc = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(curl);
  if (body.too_big) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": the answer is over ", kMaxPromTextBytes >> 20, " MiB; export fewer series"));
  }
  if (rc != CURLE_OK) {
    return absl::UnavailableError(absl::StrCat(what, ": ", error[0] != 0 ? error : curl_easy_strerror(rc)));
  }
  if (status != 200) return absl::UnavailableError(absl::StrCat(what, ": HTTP ", status));
  return std::move(body.text);
}

absl::StatusOr<CanarySampler> CanarySampler::create(const tern::v1::ServiceSpec& spec, uint16_t canary_port,
                                                    uint16_t baseline_port, Fetch fetch) {
  std::vector<Metric> metrics;
  CounterDelta::Options track;
  for (const auto& am : spec.analysis().metrics()) {
    Metric m;
    m.spec = am;
    if (am.kind() == "latency") {
      auto sel = parse_prom_selector(am.histogram());
      if (!sel.ok()) return absl::InvalidArgumentError(absl::StrCat(am.name(), ".histogram: ", sel.status().message()));
      m.histogram = sel->name;
      m.histogram_matchers = sel->matchers;
      if (am.threshold() > 0) m.threshold = am.threshold();
      PromSelector buckets{sel->name + "_bucket", sel->matchers};
      track.track.push_back(std::move(buckets));
    } else {
      auto bad = parse_prom_selector(am.bad());
      if (!bad.ok()) return absl::InvalidArgumentError(absl::StrCat(am.name(), ".bad: ", bad.status().message()));
      auto total = parse_prom_selector(am.total());
      if (!total.ok()) return absl::InvalidArgumentError(absl::StrCat(am.name(), ".total: ", total.status().message()));
      track.track.push_back(*bad);
      track.track.push_back(*total);
      m.bad = *std::move(bad);
      m.total = *std::move(total);
    }
    metrics.push_back(std::move(m));
  }
  const std::string path = spec.metrics_endpoint().path().empty() ? "/metrics" : spec.metrics_endpoint().path();
  return CanarySampler(std::move(metrics), canary_port, baseline_port, path, std::move(fetch), std::move(track));
}

CanarySampler::CanarySampler(std::vector<Metric> metrics, uint16_t canary_port, uint16_t baseline_port,
                             std::string path, Fetch fetch, CounterDelta::Options track)
    : metrics_(std::move(metrics)),
      canary_port_(canary_port),
      baseline_port_(baseline_port),
      path_(std::move(path)),
      fetch_(std::move(fetch)),
      canary_(track),
      baseline_(track) {}

std::optional<std::vector<tern::v1::MetricCounts>> CanarySampler::sample() {
  std::string failure;
  std::vector<PromSample> scrapes[2];
  const std::pair<uint16_t, const char*> sides[2] = {{canary_port_, "canary"}, {baseline_port_, "baseline"}};
  for (int i = 0; i < 2 && failure.empty(); ++i) {
    auto text = fetch_(sides[i].first, path_);
    if (!text.ok()) {
      failure = absl::StrCat(sides[i].second, ": ", text.status().message());
      break;
    }
    auto parsed = parse_prom_text(*text);
    if (!parsed.ok()) {
      failure = absl::StrCat(sides[i].second, ": ", path_, " on port ", sides[i].first, ": ", parsed.status().message());
      break;
    }
    scrapes[i] = *std::move(parsed);
  }
  if (failure.empty()) {
    if (auto st = canary_.observe(scrapes[0]); !st.ok()) failure = absl::StrCat("canary: ", st.message());
  }
  if (failure.empty()) {
    if (auto st = baseline_.observe(scrapes[1]); !st.ok()) failure = absl::StrCat("baseline: ", st.message());
  }
  if (!failure.empty()) {
    // The sides must cover the same interval: both start again.
    canary_.restart();
    baseline_.restart();
    std::vector<tern::v1::MetricCounts> out;
    for (const auto& m : metrics_) {
      auto& c = out.emplace_back();
      c.set_name(m.spec.name());
      c.set_no_data(failure);
    }
    return out;
  }
  if (!canary_.has_delta() || !baseline_.has_delta()) {
    if (canary_.has_delta() != baseline_.has_delta()) {
      canary_.restart();
      baseline_.restart();
    }
    return std::nullopt;
  }
  std::vector<tern::v1::MetricCounts> out;
  for (auto& m : metrics_) {
    // Latency thresholds are fixed from the baseline's history and the bounds
    // both releases share, once the baseline has served requests.
    if (m.spec.kind() == "latency" && !m.threshold) {
      auto blue = histogram_buckets(scrapes[1], m.histogram, m.histogram_matchers);
      auto green = histogram_buckets(scrapes[0], m.histogram, m.histogram_matchers);
      if (blue.ok() && green.ok()) {
        std::vector<double> bounds;
        for (const auto& [le, n] : *green) bounds.push_back(le);
        const double tau = latency_threshold(*blue, bounds, m.spec.quantile());
        if (std::isfinite(tau)) m.threshold = tau;
      }
    }
    out.push_back(count(m));
  }
  return out;
}

tern::v1::MetricCounts CanarySampler::count(const Metric& m) const {
  tern::v1::MetricCounts c;
  c.set_name(m.spec.name());
  if (m.spec.kind() == "latency") {
    if (!m.threshold) {
      c.set_no_data(absl::StrCat("no latency threshold yet: the baseline has not served requests into ",
                                 m.histogram, " buckets that both releases share"));
      return c;
    }
    c.set_threshold(*m.threshold);
    const CounterDelta* sides[2] = {&canary_, &baseline_};
    uint64_t bad[2] = {0, 0}, total[2] = {0, 0};
    for (int i = 0; i < 2; ++i) {
      auto buckets = sides[i]->increase_buckets(m.histogram, m.histogram_matchers);
      if (!buckets.ok()) {
        c.set_no_data(absl::StrCat(i == 0 ? "canary: " : "baseline: ", buckets.status().message()));
        return c;
      }
      if (buckets->empty() || !std::isinf(buckets->back().first)) {
        c.set_no_data(absl::StrCat(i == 0 ? "canary" : "baseline", " exports no ", m.histogram, "_bucket{le=\"+Inf\"}"));
        return c;
      }
      total[i] = buckets->back().second;
      bad[i] = count_above(*buckets, *m.threshold);
    }
    c.set_canary_bad(bad[0]);
    c.set_canary_total(total[0]);
    c.set_baseline_bad(bad[1]);
    c.set_baseline_total(total[1]);
    return c;
  }
  const double values[4] = {canary_.increase(*m.bad), canary_.increase(*m.total), baseline_.increase(*m.bad),
                            baseline_.increase(*m.total)};
  for (double v : values) {
    if (std::isnan(v)) {
      c.set_no_data("a counter is not a finite number >= 0");
      return c;
    }
  }
  c.set_canary_bad(as_count(values[0]));
  c.set_canary_total(as_count(values[1]));
  c.set_baseline_bad(as_count(values[2]));
  c.set_baseline_total(as_count(values[3]));
  return c;
}

void accumulate_counts(std::vector<tern::v1::MetricCounts>& into, const std::vector<tern::v1::MetricCounts>& next) {
  if (into.empty()) {
    into = next;
    return;
  }
  for (std::size_t i = 0; i < into.size() && i < next.size(); ++i) {
    auto& a = into[i];
    const auto& b = next[i];
    if (!b.no_data().empty()) continue;
    if (!a.no_data().empty()) {
      a = b;
      continue;
    }
    a.set_canary_bad(a.canary_bad() + b.canary_bad());
    a.set_canary_total(a.canary_total() + b.canary_total());
    a.set_baseline_bad(a.baseline_bad() + b.baseline_bad());
    a.set_baseline_total(a.baseline_total() + b.baseline_total());
  }
}

}  // namespace tern
