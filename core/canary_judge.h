#pragma once

// The canary judge: is green worse than blue, on the same host at the same
// time, by more than a margin? Pure math on counts (no I/O, no clock, no
// randomness), so every verdict can be replayed from the stored counts. The
// method (docs/ARCHITECTURE.md, "Canary analysis") is a sequential
// likelihood-ratio test on counts (Lindon & Malek, arXiv 2011.03567) whose
// e-values are nonnegative supermartingales under the null, so a caller may
// look after every interval, stop early either way and extend past the
// planned end without raising the false-alarm rate above alpha (Ville's
// inequality).
//
// The count test. In one interval green served n_g requests of which x_g were
// bad, blue n_b and x_b. Given x = x_g + x_b bad requests in all, x_g is
// Binomial(x, theta(r)) with rho = n_g / (n_g + n_b), green's measured share,
// theta(r) = r rho / (r rho + 1 - rho) and r = p_green / p_blue. The test keeps
// the log-likelihood of r on a fixed grid of kRatioGridSize log-spaced points
// in [1/kRatioGridMax, kRatioGridMax], plus the margin m itself so LL(m) is
// exact. With K metrics judged together:
//   FAIL: the mean over grid points r > m of exp(LL(r) - LL(m)) reaches K/alpha
//         and green's observed rate exceeds blue's by at least min_excess.
//         Allowed at any look.
//   PASS: (only when the caller allows it) the mean over grid points r < m of
//         exp(LL(r) - LL(m)) reaches 1/alpha; or, with pass_below set, either
//         that mean or the floor e-value below reaches 2/alpha (alpha split
//         between the two pass paths).
//   Floor e-value (pass_below > 0): x_g ~ Binomial(n_g, p) over all intervals;
//         the mean over p_k = pass_below * r_j for the grid points r_j < 1 of
//         the likelihood ratio of p_k against p = pass_below. It needs only
//         green's counts, so it serves quiet services whose few errors leave
//         the ratio unknown.
// Everything is summed in log space, so hours of data cannot overflow.
//
// Thread safety: a CountTest is a value with no shared mutable state; one
// owner serialises calls on it, different tests may be used on different
// threads. The free functions are thread-safe.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tern {

// One host, one metric, one interval: bad and total requests per slot.
struct CanaryCounts {
  uint64_t green_bad = 0, green_total = 0, blue_bad = 0, blue_total = 0;
};

// How one metric is judged. Nonsense values are clamped by CountTest:
// max_ratio to [1, kMaxMargin], alpha to [1e-9, 0.5], metrics to >= 1,
// min_excess below 0 (or NaN) to 0, and pass_below outside (0, 1) turns the
// floor path off.
struct JudgePolicy {
  double max_ratio = 1.5;    // margin m: green may be up to m times worse than blue
  double min_excess = 0.001; // FAIL also needs green's rate - blue's rate >= this
  double pass_below = 0;     // 0 = off: the absolute floor path for quiet services
  double alpha = 0.01;       // 1 - confidence
  int metrics = 1;           // K metrics judged together: FAIL needs K/alpha (Bonferroni)
};

enum class CanaryVerdict { kRunning, kPass, kFail, kInconclusive };

// "RUNNING", "PASS", "FAIL", "INCONCLUSIVE": the one place a verdict becomes text.
std::string_view canary_verdict_name(CanaryVerdict verdict);

struct CanaryDecision {
  CanaryVerdict verdict = CanaryVerdict::kRunning;
  // The maximum-likelihood r: the vertex of the parabola (in log r) through
  // the grid's maximum and its two neighbours. With no interval that informs
  // the ratio: the observed ratio of the totals' rates if it exists, else 1.
  double ratio = 1;
  // A (1 - alpha) profile-likelihood interval for display: the r whose LL is
  // within chi2_{1,1-alpha}/2 of the peak. An end in a grid cell next to the
  // peak comes from that parabola (so a pooled wave's interval can be
  // narrower than a grid step); an end further out from linear interpolation
  // of LL (in log r) between the grid points around the cut; an end that
  // reaches the grid's edge is the edge (1/50 or 50). Not the test: it is
  // computed as if the data had been looked at once.
  double ratio_low = 1.0 / 50, ratio_high = 50;
  // The e-values (capped at 1e300 so they stay finite). pass_evidence is the
  // larger of the ratio path and the floor path.
  double fail_evidence = 1, pass_evidence = 1;
  uint64_t green_bad = 0, green_total = 0, blue_bad = 0, blue_total = 0;
  // One sentence for a person: counts, ratio, interval and margin; for
  // INCONCLUSIVE why ("312 green requests; a rise under 2.6x would not have
  // shown ...").
  std::string reason;
};

inline constexpr int kRatioGridSize = 64;
inline constexpr double kRatioGridMax = 50;  // the grid spans [1/50, 50]
inline constexpr double kMaxMargin = 40;     // so at least two grid points lie above it

// The j-th grid ratio, j in [0, kRatioGridSize): kRatioGridMax^((2j - 63) / 63).
double ratio_grid_point(int j);

// theta(r): the chance that a bad request is green's when green's rate is r
// times blue's and green served `green_share` (rho) of the requests.
double green_share_of_bad(double ratio, double green_share);

// One metric's count test, for one host or for a whole wave (pooled by
// merge(), or by adding every host's intervals: each interval keeps its own
// rho, so hosts with different splits and baselines share one ratio).
class CountTest {
 public:
  explicit CountTest(const JudgePolicy& policy = {});

  // One interval. Costs one log1p per grid point and no allocation; an
  // interval with no requests on either side or no bad request at all adds
  // only to the totals. A bad count above its total is cut to the total.
  void add(const CanaryCounts& interval);
  // Adds everything `other` has seen, as if its intervals had been added
  // here; this test's policy goes on deciding. Both must use the same margin
  // (it is a point of the grid): with another one nothing changes and the
  // result is false.
  bool merge(const CountTest& other);

  // The verdict now. FAIL is allowed at any look; PASS only when `may_pass`
  // (past min_duration); at the horizon anything else is INCONCLUSIVE.
  CanaryDecision decide(bool may_pass, bool at_horizon) const;
  // Whether decide() would say FAIL, without building its numbers and
  // sentence: the per-sample check of every host on the canary.
  bool fails() const;

  // The smallest grid ratio above the margin whose FAIL would probably have
  // shown with these totals: the counts expected at that ratio (green's total
  // at r times blue's rate, blue's total at its observed rate, or half a bad
  // request when blue had none) pooled into one interval with the overall
  // rho, judged like real data. About even odds of detection, not a promise.
  // +Inf when no ratio up to kRatioGridMax would have shown.
  double detectable_rise() const;

  // ln of the e-values: fail (above the margin), ratio pass (below it) and
  // the floor (0 when pass_below is off).
  double log_fail_evidence() const;
  double log_pass_evidence() const;
  double log_floor_evidence() const;

  // The log-likelihood (with its binomial coefficients, so it is the
  // probability of the data) at grid point j and at the margin.
  double log_likelihood(int j) const { return ll_[static_cast<size_t>(j)] + ll_constant_; }
  double log_likelihood_at_margin() const { return ll_margin_ + ll_constant_; }

  const JudgePolicy& policy() const { return policy_; }
  const CanaryCounts& totals() const { return totals_; }
  // Every interval added, and those that informed the ratio.
  uint64_t intervals() const { return intervals_; }
  uint64_t ratio_intervals() const { return ratio_intervals_; }

 private:
  struct Estimate {
    double ratio, low, high;
  };
  Estimate estimate() const;
  std::string describe_counts() const;

  JudgePolicy policy_;
  double log_margin_;
  double half_chi2_;    // chi2_{1,1-alpha} / 2: the display interval's cut
  int first_above_;     // first grid index with r > margin
  int below_count_;     // grid points with r < margin
  // LL without the terms that do not depend on r (ll_constant_), so the
  // differences the decision needs keep their precision.
  std::array<double, kRatioGridSize> ll_{};
  double ll_margin_ = 0;
  double ll_constant_ = 0;
  CanaryCounts totals_;
  uint64_t intervals_ = 0;
  uint64_t ratio_intervals_ = 0;
};

// Latency, judged as a count: "bad" = requests slower than tau. Buckets are
// classic cumulative Prometheus buckets: (le upper bound, cumulative count),
// ascending, with +Inf last (its count is the total).
//
// tau is the smallest bound present in both releases' bounds that is at or
// above blue's `quantile` (blue's quantile lies in the first bucket whose
// cumulative count reaches quantile * total, so above that bucket's lower
// bound and at or below its upper one). +Inf when there is none, when blue
// has no requests, or when blue's buckets are not classic (empty, or +Inf not
// last): then latency is not judged. Bounds match exactly, as parsed.
double latency_threshold(const std::vector<std::pair<double, uint64_t>>& blue_cumulative_buckets,
                         const std::vector<double>& green_bounds, double quantile);

// Requests slower than tau: the total minus the cumulative count at the
// smallest bound >= tau (exact when tau is a bound, as latency_threshold's
// is; otherwise those surely slower). 0 for tau = +Inf.
uint64_t count_above(const std::vector<std::pair<double, uint64_t>>& cumulative_buckets, double tau);

}  // namespace tern
