#include "core/canary_judge.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <boost/math/distributions/chi_squared.hpp>
#include <boost/math/policies/policy.hpp>
#include <boost/math/special_functions/gamma.hpp>

#include "absl/strings/str_format.h"

namespace tern {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// e-values are reported up to this, so a decision never holds an Inf.
constexpr double kMaxEvidence = 1e300;

// Plain double arithmetic: Boost's default promotes to long double, which is
// slower and buys nothing here.
using NoPromote = boost::math::policies::policy<boost::math::policies::promote_double<false>>;

// The fixed grid and its logs, computed once per process (a function-local
// static: thread-safe initialisation). log r is exactly antisymmetric about
// r = 1, so the grid is too, up to exp()'s rounding.
struct RatioGrid {
  std::array<double, kRatioGridSize> r;
  std::array<double, kRatioGridSize> log_r;
};

const RatioGrid& ratio_grid() {
  static const RatioGrid grid = [] {
    RatioGrid g;
    const double top = std::log(kRatioGridMax);
    for (int j = 0; j < kRatioGridSize; ++j) {
      const double step = static_cast<double>(2 * j - (kRatioGridSize - 1));
      g.log_r[static_cast<size_t>(j)] = top * step / static_cast<double>(kRatioGridSize - 1);
      g.r[static_cast<size_t>(j)] = std::exp(g.log_r[static_cast<size_t>(j)]);
    }
    return g;
  }();
  return grid;
}

// The floor path's grid: p_k = pass_below * r_j for the grid points below 1.
constexpr int kFloorGridSize = kRatioGridSize / 2;

// ln of the mean of exp(v[i]) without overflow (log-sum-exp).
double log_mean_exp(const double* v, int n) {
  if (n <= 0) return 0;
  const double top = *std::max_element(v, v + n);
  if (!std::isfinite(top)) return top;
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(v[i] - top);
  return top + std::log(sum) - std::log(static_cast<double>(n));
}

double capped_exp(double log_value) { return std::exp(std::min(log_value, std::log(kMaxEvidence))); }

uint64_t saturating_add(uint64_t a, uint64_t b) {
  return a > std::numeric_limits<uint64_t>::max() - b ? std::numeric_limits<uint64_t>::max() : a + b;
}

double log_binomial_coefficient(double n, double k) {
  return boost::math::lgamma(n + 1, NoPromote()) - boost::math::lgamma(k + 1, NoPromote()) -
         boost::math::lgamma(n - k + 1, NoPromote());
}

double clamp_or(double v, double lo, double hi, double fallback) {
  return std::isnan(v) ? fallback : std::clamp(v, lo, hi);
}

JudgePolicy sanitized(JudgePolicy p) {
  const JudgePolicy defaults;
  p.max_ratio = clamp_or(p.max_ratio, 1, kMaxMargin, defaults.max_ratio);
  if (!(p.min_excess >= 0)) p.min_excess = 0;
  if (!(p.pass_below > 0 && p.pass_below < 1)) p.pass_below = 0;
  p.alpha = clamp_or(p.alpha, 1e-9, 0.5, defaults.alpha);
  p.metrics = std::max(p.metrics, 1);
  return p;
}

double rate(uint64_t bad, uint64_t total) {
  return total == 0 ? 0 : static_cast<double>(bad) / static_cast<double>(total);
}

// (x_g/n_g) / (x_b/n_b) of the totals; NaN when it does not exist.
double observed_ratio(const CanaryCounts& c) {
  if (c.green_total == 0 || c.blue_total == 0 || c.blue_bad == 0) return std::numeric_limits<double>::quiet_NaN();
  return rate(c.green_bad, c.green_total) / rate(c.blue_bad, c.blue_total);
}

std::string percent(double fraction) { return absl::StrFormat("%.2g%%", 100 * fraction); }

}  // namespace

std::string_view canary_verdict_name(CanaryVerdict verdict) {
  switch (verdict) {
    case CanaryVerdict::kRunning:
      return "RUNNING";
    case CanaryVerdict::kPass:
      return "PASS";
    case CanaryVerdict::kFail:
      return "FAIL";
    case CanaryVerdict::kInconclusive:
      return "INCONCLUSIVE";
  }
  return "UNKNOWN";
}

double ratio_grid_point(int j) { return ratio_grid().r[static_cast<size_t>(j)]; }

double green_share_of_bad(double ratio, double green_share) {
  return ratio * green_share / (ratio * green_share + 1 - green_share);
}

CountTest::CountTest(const JudgePolicy& policy) : policy_(sanitized(policy)) {
  log_margin_ = std::log(policy_.max_ratio);
  const boost::math::chi_squared_distribution<double, NoPromote> chi2(1);
  half_chi2_ = boost::math::quantile(chi2, 1 - policy_.alpha) / 2;
  const RatioGrid& g = ratio_grid();
  first_above_ = static_cast<int>(std::upper_bound(g.r.begin(), g.r.end(), policy_.max_ratio) - g.r.begin());
  below_count_ = static_cast<int>(std::lower_bound(g.r.begin(), g.r.end(), policy_.max_ratio) - g.r.begin());
}

void CountTest::add(const CanaryCounts& interval) {
  CanaryCounts c = interval;
  c.green_bad = std::min(c.green_bad, c.green_total);
  c.blue_bad = std::min(c.blue_bad, c.blue_total);
  totals_.green_bad = saturating_add(totals_.green_bad, c.green_bad);
  totals_.green_total = saturating_add(totals_.green_total, c.green_total);
  totals_.blue_bad = saturating_add(totals_.blue_bad, c.blue_bad);
  totals_.blue_total = saturating_add(totals_.blue_total, c.blue_total);
  ++intervals_;
  if (c.green_total == 0 || c.blue_total == 0 || (c.green_bad == 0 && c.blue_bad == 0)) return;

  const double n_g = static_cast<double>(c.green_total);
  const double n_b = static_cast<double>(c.blue_total);
  const double x_g = static_cast<double>(c.green_bad);
  const double x_b = static_cast<double>(c.blue_bad);
  const double x = x_g + x_b;
  const double rho = n_g / (n_g + n_b);
  // log theta(r) = log r + log rho - log(1 + rho (r - 1)) and
  // log(1 - theta(r)) = log(1 - rho) - log(1 + rho (r - 1)): the grid's log r
  // is cached, so each point costs one log1p; the terms without r go to
  // ll_constant_ once per interval.
  const RatioGrid& g = ratio_grid();
  for (size_t j = 0; j < ll_.size(); ++j) ll_[j] += x_g * g.log_r[j] - x * std::log1p(rho * (g.r[j] - 1));
  ll_margin_ += x_g * log_margin_ - x * std::log1p(rho * (policy_.max_ratio - 1));
  const double log_total = std::log(n_g + n_b);
  ll_constant_ += log_binomial_coefficient(x, x_g) + x_g * (std::log(n_g) - log_total) +
                  x_b * (std::log(n_b) - log_total);
  ++ratio_intervals_;
}

bool CountTest::merge(const CountTest& other) {
  if (other.policy_.max_ratio != policy_.max_ratio) return false;
  for (size_t j = 0; j < ll_.size(); ++j) ll_[j] += other.ll_[j];
  ll_margin_ += other.ll_margin_;
  ll_constant_ += other.ll_constant_;
  totals_.green_bad = saturating_add(totals_.green_bad, other.totals_.green_bad);
  totals_.green_total = saturating_add(totals_.green_total, other.totals_.green_total);
  totals_.blue_bad = saturating_add(totals_.blue_bad, other.totals_.blue_bad);
  totals_.blue_total = saturating_add(totals_.blue_total, other.totals_.blue_total);
  intervals_ = saturating_add(intervals_, other.intervals_);
  ratio_intervals_ = saturating_add(ratio_intervals_, other.ratio_intervals_);
  return true;
}

bool CountTest::fails() const {
  if (totals_.green_total == 0 || totals_.blue_total == 0) return false;
  const double excess = rate(totals_.green_bad, totals_.green_total) - rate(totals_.blue_bad, totals_.blue_total);
  if (excess < policy_.min_excess) return false;
  return log_fail_evidence() >= std::log(static_cast<double>(policy_.metrics) / policy_.alpha);
}

double CountTest::log_fail_evidence() const {
  std::array<double, kRatioGridSize> v;
  const int n = kRatioGridSize - first_above_;
  for (int i = 0; i < n; ++i) v[static_cast<size_t>(i)] = ll_[static_cast<size_t>(first_above_ + i)] - ll_margin_;
  return log_mean_exp(v.data(), n);
}

double CountTest::log_pass_evidence() const {
  std::array<double, kRatioGridSize> v;
  for (int i = 0; i < below_count_; ++i) v[static_cast<size_t>(i)] = ll_[static_cast<size_t>(i)] - ll_margin_;
  return log_mean_exp(v.data(), below_count_);
}

double CountTest::log_floor_evidence() const {
  if (policy_.pass_below <= 0 || totals_.green_total == 0) return 0;
  const double n_g = static_cast<double>(totals_.green_total);
  const double x_g = static_cast<double>(totals_.green_bad);
  const double p0 = policy_.pass_below;
  const double log1m_p0 = std::log1p(-p0);
  const RatioGrid& g = ratio_grid();
  // The likelihood ratio of Binomial(n_g, p_k) against Binomial(n_g, p0) for
  // the totals equals the product of the per-interval ones.
  std::array<double, kFloorGridSize> v;
  for (size_t k = 0; k < v.size(); ++k) {
    v[k] = x_g * g.log_r[k] + (n_g - x_g) * (std::log1p(-p0 * g.r[k]) - log1m_p0);
  }
  return log_mean_exp(v.data(), kFloorGridSize);
}

CountTest::Estimate CountTest::estimate() const {
  const RatioGrid& g = ratio_grid();
  if (ratio_intervals_ == 0) {
    // A flat likelihood: nothing is known about r.
    const double observed = observed_ratio(totals_);
    return {std::isfinite(observed) && observed > 0 ? std::clamp(observed, g.r.front(), g.r.back()) : 1, g.r.front(),
            g.r.back()};
  }
  // The grid with the margin in its place (unless it is a grid point).
  std::array<double, kRatioGridSize + 1> lr, ll;
  int n = 0;
  for (int j = 0; j < kRatioGridSize; ++j) {
    if (j == first_above_ && below_count_ == first_above_) {
      lr[static_cast<size_t>(n)] = log_margin_;
      ll[static_cast<size_t>(n++)] = ll_margin_;
    }
    lr[static_cast<size_t>(n)] = g.log_r[static_cast<size_t>(j)];
    ll[static_cast<size_t>(n++)] = ll_[static_cast<size_t>(j)];
  }
  const auto at = [](const std::array<double, kRatioGridSize + 1>& a, int i) { return a[static_cast<size_t>(i)]; };
  const int best = static_cast<int>(std::max_element(ll.begin(), ll.begin() + n) - ll.begin());

  // The peak: the parabola through the grid maximum and its neighbours (in
  // log r). Its vertex is the ratio shown; its height sets the cut, so with
  // much data (a pooled wave) the interval can be narrower than a grid step.
  double peak = at(lr, best), peak_ll = at(ll, best), curvature = 0;
  if (best > 0 && best < n - 1) {
    const double x0 = at(lr, best - 1), x1 = at(lr, best), x2 = at(lr, best + 1);
    const double y0 = at(ll, best - 1), y1 = at(ll, best), y2 = at(ll, best + 1);
    const double slope = (y1 - y0) / (x1 - x0);
    const double c2 = ((y2 - y1) / (x2 - x1) - slope) / (x2 - x0);  // y = y0 + slope (s - x0) + c2 (s - x0)(s - x1)
    if (c2 < 0 && std::isfinite(c2)) {
      curvature = -c2;
      peak = std::clamp((x0 + x1) / 2 - slope / (2 * c2), x0, x2);
      peak_ll = std::max(y1, y0 + slope * (peak - x0) + c2 * (peak - x0) * (peak - x1));
    }
  }
  // The likelihood is concave in log r (a sum of binomial log-likelihoods in
  // their natural parameter), so the set above the cut is one run of points.
  // An end in a cell next to the maximum comes from the parabola; one further
  // out from linear interpolation of LL between the two grid points around it.
  const double cut = peak_ll - half_chi2_;
  int lo = best;
  while (lo > 0 && at(ll, lo - 1) >= cut) --lo;
  int hi = best;
  while (hi < n - 1 && at(ll, hi + 1) >= cut) ++hi;
  const double half_width = curvature > 0 ? std::sqrt(half_chi2_ / curvature) : 0;
  const auto crossing = [&](int in, int out) {
    if (in == best && curvature > 0) {
      return std::clamp(peak + (out < in ? -half_width : half_width), std::min(at(lr, out), peak),
                        std::max(at(lr, out), peak));
    }
    const double t = (at(ll, in) - cut) / (at(ll, in) - at(ll, out));
    return at(lr, in) + t * (at(lr, out) - at(lr, in));
  };
  const double log_low = lo == 0 ? at(lr, 0) : crossing(lo, lo - 1);
  const double log_high = hi == n - 1 ? at(lr, n - 1) : crossing(hi, hi + 1);
  return {std::exp(std::clamp(peak, log_low, log_high)), std::exp(log_low), std::exp(log_high)};
}

double CountTest::detectable_rise() const {
  if (totals_.green_total == 0 || totals_.blue_total == 0) return kInf;
  const double n_g = static_cast<double>(totals_.green_total);
  const double n_b = static_cast<double>(totals_.blue_total);
  const double rho = n_g / (n_g + n_b);
  const double p_b = std::max(static_cast<double>(totals_.blue_bad), 0.5) / n_b;
  const double needed = std::log(static_cast<double>(policy_.metrics) / policy_.alpha);
  const RatioGrid& g = ratio_grid();
  std::array<double, kRatioGridSize> v;
  for (int c = first_above_; c < kRatioGridSize; ++c) {
    const double p_g = std::min(1.0, g.r[static_cast<size_t>(c)] * p_b);
    if (p_g - p_b < policy_.min_excess) continue;
    const double x_g = n_g * p_g;
    const double x = x_g + n_b * p_b;
    const double ll_margin = x_g * log_margin_ - x * std::log1p(rho * (policy_.max_ratio - 1));
    const int n = kRatioGridSize - first_above_;
    for (int i = 0; i < n; ++i) {
      const size_t j = static_cast<size_t>(first_above_ + i);
      v[static_cast<size_t>(i)] = x_g * g.log_r[j] - x * std::log1p(rho * (g.r[j] - 1)) - ll_margin;
    }
    if (log_mean_exp(v.data(), n) >= needed) return g.r[static_cast<size_t>(c)];
  }
  return kInf;
}

std::string CountTest::describe_counts() const {
  const CanaryCounts& t = totals_;
  return absl::StrFormat("green %d of %d bad (%s), blue %d of %d (%s)", t.green_bad, t.green_total,
                         percent(rate(t.green_bad, t.green_total)), t.blue_bad, t.blue_total,
                         percent(rate(t.blue_bad, t.blue_total)));
}

CanaryDecision CountTest::decide(bool may_pass, bool at_horizon) const {
  CanaryDecision d;
  d.green_bad = totals_.green_bad;
  d.green_total = totals_.green_total;
  d.blue_bad = totals_.blue_bad;
  d.blue_total = totals_.blue_total;
  const Estimate e = estimate();
  d.ratio = e.ratio;
  d.ratio_low = e.low;
  d.ratio_high = e.high;

  const bool floor_on = policy_.pass_below > 0;
  const double log_fail = log_fail_evidence();
  const double log_ratio_pass = log_pass_evidence();
  const double log_floor = log_floor_evidence();
  d.fail_evidence = capped_exp(log_fail);
  d.pass_evidence = capped_exp(floor_on ? std::max(log_ratio_pass, log_floor) : log_ratio_pass);

  const double fail_needed = static_cast<double>(policy_.metrics) / policy_.alpha;
  const double pass_needed = (floor_on ? 2 : 1) / policy_.alpha;
  const bool both_served = totals_.green_total > 0 && totals_.blue_total > 0;
  const double excess = rate(totals_.green_bad, totals_.green_total) - rate(totals_.blue_bad, totals_.blue_total);

  const std::string summary =
      absl::StrFormat("%s: ratio %.3g (%g%% interval %.3g to %.3g), margin %g", describe_counts(), e.ratio,
                      100 * (1 - policy_.alpha), e.low, e.high, policy_.max_ratio);
  if (both_served && log_fail >= std::log(fail_needed) && excess >= policy_.min_excess) {
    d.verdict = CanaryVerdict::kFail;
    d.reason = absl::StrFormat("%s; green is worse beyond the margin (evidence %.3g, needs %g) by %s", summary,
                               d.fail_evidence, fail_needed, percent(excess));
  } else if (may_pass && log_ratio_pass >= std::log(pass_needed)) {
    d.verdict = CanaryVerdict::kPass;
    d.reason = absl::StrFormat("%s; green is within the margin (evidence %.3g, needs %g)", summary,
                               capped_exp(log_ratio_pass), pass_needed);
  } else if (may_pass && floor_on && log_floor >= std::log(pass_needed)) {
    d.verdict = CanaryVerdict::kPass;
    d.reason = absl::StrFormat("%s; green's rate is below the floor %s (evidence %.3g, needs %g)", summary,
                               percent(policy_.pass_below), capped_exp(log_floor), pass_needed);
  } else if (at_horizon) {
    d.verdict = CanaryVerdict::kInconclusive;
    const double rise = detectable_rise();
    if (totals_.green_total == 0) {
      d.reason = absl::StrFormat("no green requests, so no rise could have shown (%s)", summary);
    } else if (totals_.blue_total == 0) {
      d.reason = absl::StrFormat("%d green requests but no blue ones to compare with (%s)", totals_.green_total,
                                 summary);
    } else if (std::isinf(rise)) {
      d.reason = absl::StrFormat("%d green requests; no rise up to %gx would have shown (%s)", totals_.green_total,
                                 kRatioGridMax, summary);
    } else {
      d.reason = absl::StrFormat("%d green requests; a rise under %.2gx would not have shown (%s)",
                                 totals_.green_total, rise, summary);
    }
  } else {
    d.verdict = CanaryVerdict::kRunning;
    d.reason = absl::StrFormat("%s; no verdict yet (evidence of a rise %.3g, of none %.3g)", summary,
                               d.fail_evidence, d.pass_evidence);
  }
  return d;
}

double latency_threshold(const std::vector<std::pair<double, uint64_t>>& blue_cumulative_buckets,
                         const std::vector<double>& green_bounds, double quantile) {
  const auto& blue = blue_cumulative_buckets;
  if (blue.empty() || blue.back().first != kInf || blue.back().second == 0) return kInf;
  if (!(quantile > 0 && quantile <= 1)) return kInf;
  const double rank = quantile * static_cast<double>(blue.back().second);
  size_t i = 0;
  while (i < blue.size() && static_cast<double>(blue[i].second) < rank) ++i;
  for (; i < blue.size(); ++i) {
    const double bound = blue[i].first;
    if (std::isinf(bound)) break;
    if (std::find(green_bounds.begin(), green_bounds.end(), bound) != green_bounds.end()) return bound;
  }
  return kInf;
}

uint64_t count_above(const std::vector<std::pair<double, uint64_t>>& cumulative_buckets, double tau) {
  if (cumulative_buckets.empty() || !(tau < kInf)) return 0;
  const uint64_t total = cumulative_buckets.back().second;
  for (const auto& [bound, cumulative] : cumulative_buckets) {
    if (bound >= tau) return total > cumulative ? total - cumulative : 0;
  }
  return 0;
}

}  // namespace tern
