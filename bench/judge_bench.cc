// tern-bench-judge: what the canary judge costs the coordinator's event loop
// at fleet scale. No network and no engine: the two calls the rollout engine
// makes into WaveAnalysis, timed on this thread with a steady clock.
//
// One wave of --hosts hosts, every host on the canary, --metrics metrics per
// host (two ratio metrics and one latency metric, repeating; to the judge all
// three are counts). Every --interval-s of simulated time each host sends one
// AnalysisSample, as its agent does: --rate requests a second, --weight % of
// them to green; blue's bad rates are 0.5% (errors), 0.2% (the second ratio)
// and 1% (requests slower than the latency threshold), green's the same
// (a healthy canary) or --worse-ratio times that on the first --worse-hosts
// hosts. Counts are binomial draws from a seeded RNG; the samples are built
// before the clock starts, so their making is not measured.
//
// Per interval it times what RolloutEngine::on_sample runs for each sample,
// WaveAnalysis::add and WaveAnalysis::host_failure (a host that fails is
// dropped, as the engine does), then --ticks verdicts,
// WaveAnalysis::decide over the hosts still on the canary, as the engine's
// 500 ms tick does (20 per 10 s interval). Warm-up and the minimum duration
// follow the defaults (60 s, 2 min): before 60 s samples are only recorded,
// from 3 min on decide may pass.
//
//   tern-bench-judge [--hosts 10000] [--metrics 3] [--intervals 360] [--seed 1]
#include <malloc.h>
#include <unistd.h>

#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "coordinator/wave_analysis.h"
#include "core/runtime_init.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;
using Clock = std::chrono::steady_clock;

struct Options {
  int hosts = 10'000;
  int metrics = 3;
  int intervals = 360;
  int interval_s = 10;
  int ticks = 20;  // verdicts per interval: the engine's 500 ms tick
  double rate = 100;
  int weight = 10;
  int worse_hosts = 0;
  double worse_ratio = 5;
  uint64_t seed = 1;
};

struct MetricModel {
  const char* name;
  const char* kind;
  double blue_bad;  // blue's bad share
};

// Two ratio metrics and a latency metric (bad = slower than blue's p99 bound).
constexpr MetricModel kModels[] = {{"errors", "ratio", 0.005}, {"unavailable", "ratio", 0.002},
                                   {"latency", "latency", 0.01}};

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// Heap bytes in use (glibc's count of allocated chunks, their headers included).
std::size_t heap_in_use() { return mallinfo2().uordblks; }

// Resident set size in bytes, from /proc/self/statm.
std::size_t rss() {
  std::ifstream f("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

int run(const Options& opt) {
  tern::v1::ServiceAnalysis spec;
  for (int i = 0; i < opt.metrics; ++i) {
    const MetricModel& m = kModels[i % 3];
    auto* a = spec.add_metrics();
    a->set_name(i < 3 ? std::string(m.name) : std::string(m.name) + "-" + std::to_string(i / 3));
    a->set_kind(m.kind);
    a->set_max_ratio(1.5);
    a->set_min_excess(0.001);
  }
  tern::v1::AnalysisPolicy policy;  // the spec's defaults, as rollout_spec fills them in
  *policy.mutable_interval() = TimeUtil::SecondsToDuration(opt.interval_s);
  *policy.mutable_warmup() = TimeUtil::SecondsToDuration(60);
  *policy.mutable_min_duration() = TimeUtil::SecondsToDuration(120);
  *policy.mutable_max_duration() = TimeUtil::SecondsToDuration(1800);
  policy.set_confidence(0.99);
  const int64_t warmup_ms = 60'000, may_pass_ms = 180'000;

  std::vector<std::string> ids;
  for (int i = 0; i < opt.hosts; ++i) {
    char id[32];
    std::snprintf(id, sizeof id, "sim-%05d", i);
    ids.emplace_back(id);
  }
  // One sample per host, rewritten in place every interval.
  std::vector<tern::v1::AnalysisSample> samples(static_cast<std::size_t>(opt.hosts));
  for (auto& s : samples) {
    s.set_service("web");
    s.set_canary_version("2");
    s.set_baseline_version("1");
    s.set_weight(static_cast<uint32_t>(opt.weight));
    s.set_split_id(42);
    for (const auto& m : spec.metrics()) {
      auto* c = s.add_metrics();
      c->set_name(m.name());
      if (m.kind() == "latency") c->set_threshold(0.25);
    }
  }
  std::mt19937_64 rng(opt.seed);
  const auto requests = static_cast<uint64_t>(opt.rate * opt.interval_s);
  auto fill = [&](int interval) {
    std::binomial_distribution<uint64_t> canary_share(requests, opt.weight / 100.0);
    for (std::size_t h = 0; h < samples.size(); ++h) {
      auto& s = samples[h];
      s.set_sequence(static_cast<uint64_t>(interval) + 1);
      *s.mutable_since_split() = TimeUtil::MillisecondsToDuration(int64_t{interval + 1} * opt.interval_s * 1000);
      const bool worse = static_cast<int>(h) < opt.worse_hosts;
      for (int i = 0; i < s.metrics_size(); ++i) {
        auto* c = s.mutable_metrics(i);
        const double p = kModels[i % 3].blue_bad;
        const uint64_t green = canary_share(rng);
        c->set_canary_total(green);
        c->set_baseline_total(requests - green);
        c->set_canary_bad(std::binomial_distribution<uint64_t>(green, std::min(1.0, worse ? p * opt.worse_ratio : p))(rng));
        c->set_baseline_bad(std::binomial_distribution<uint64_t>(requests - green, p)(rng));
      }
    }
  };

  std::vector<std::string> on_canary = ids;  // the engine's list: hosts still ON_NEW
  std::vector<char> failed(ids.size(), 0);
  for (auto& s : samples) s.mutable_since_split();  // allocated now, so the heap below is the analysis's own
  const std::size_t heap0 = heap_in_use(), rss0 = rss();
  WaveAnalysis analysis(spec, policy, static_cast<uint32_t>(opt.hosts));

  std::vector<double> sample_total_ms, add_us, fail_us, sample_us, decide_ms, busy_share;
  std::size_t heap_hosts = 0, rss_hosts = 0;
  int hosts_failed = 0;
  std::string verdict = "RUNNING";
  double judged_ms = 0;
  const double cpu0 = thread_cpu_s();
  const auto wall0 = Clock::now();
  for (int interval = 0; interval < opt.intervals; ++interval) {
    fill(interval);
    const int64_t now_ms = int64_t{interval + 1} * opt.interval_s * 1000;
    const bool counted = now_ms >= warmup_ms;
    // 1. One interval from every host: what on_sample runs per sample.
    double a_ms = 0, f_ms = 0;
    int taken_samples = 0;
    for (std::size_t h = 0; h < ids.size(); ++h) {
      if (failed[h]) continue;  // flipped back: its agent sends no more canary samples
      const auto t0 = Clock::now();
      const auto taken = analysis.add(ids[h], samples[h]);
      const auto t1 = Clock::now();
      a_ms += std::chrono::duration<double, std::milli>(t1 - t0).count();
      ++taken_samples;
      if (taken != WaveAnalysis::Taken::kCounted) continue;
      const auto why = analysis.host_failure(ids[h]);
      if (why) {
        analysis.drop(ids[h]);
        failed[h] = 1;
        ++hosts_failed;
      }
      f_ms += ms_since(t1);
    }
    if (hosts_failed > 0) {
      on_canary.clear();
      for (std::size_t h = 0; h < ids.size(); ++h) {
        if (!failed[h]) on_canary.push_back(ids[h]);
      }
    }
    if (interval == 0) {
      // Every host's tests now exist; later intervals only add to them.
      heap_hosts = heap_in_use() - heap0;
      rss_hosts = rss() - rss0;
    }
    if (counted && taken_samples > 0) {
      const double per = 1000.0 / taken_samples;
      sample_total_ms.push_back(a_ms + f_ms);
      sample_us.push_back((a_ms + f_ms) * per);
      add_us.push_back(a_ms * per);
      fail_us.push_back(f_ms * per);
    }
    // 2. The verdicts of the interval's ticks.
    double d_ms = 0;
    for (int t = 0; t < opt.ticks; ++t) {
      const int64_t tick_ms = now_ms - opt.interval_s * 1000 + (t + 1) * opt.interval_s * 1000 / opt.ticks;
      const auto t0 = Clock::now();
      const auto v = analysis.decide(on_canary, tick_ms >= may_pass_ms, /*at_horizon=*/false);
      const double ms = ms_since(t0);
      d_ms += ms;
      if (counted) decide_ms.push_back(ms);
      verdict = std::string(canary_verdict_name(v.verdict));
    }
    const double busy = a_ms + f_ms + d_ms;
    judged_ms += busy;
    busy_share.push_back(100 * busy / (opt.interval_s * 1000.0));
  }
  const double wall_s = ms_since(wall0) / 1000, cpu_s = thread_cpu_s() - cpu0;

  const double n = static_cast<double>(opt.hosts);
  const double per_sec = 1000.0 / (opt.interval_s * 1000.0 / opt.ticks);  // verdicts a second
  std::printf("tern-bench-judge: %d hosts x %d metrics, %d intervals of %d s (%.0f s simulated), %d verdicts per "
              "interval\n",
              opt.hosts, opt.metrics, opt.intervals, opt.interval_s, double(opt.intervals) * opt.interval_s,
              opt.ticks);
  std::printf("  %llu requests per host per interval, %d%% to green; %d host(s) failed on their own; last verdict %s\n",
              static_cast<unsigned long long>(requests), opt.weight, hosts_failed, verdict.c_str());
  std::printf("\n%-52s %10s %10s %10s\n", "measure (counted intervals)", "median", "p90", "max");
  auto row = [](const char* what, const std::vector<double>& v, double scale, const char* unit) {
    std::printf("%-52s %7.3g %-2s %7.3g %-2s %7.3g %-2s\n", what, percentile(v, 0.5) * scale, unit,
                percentile(v, 0.9) * scale, unit, percentile(v, 1.0) * scale, unit);
  };
  row("1. interval: every host's add + host_failure", sample_total_ms, 1, "ms");
  row("   per sample", sample_us, 1, "us");
  row("   of which add, per sample", add_us, 1, "us");
  row("   of which host_failure, per sample", fail_us, 1, "us");
  row("2. one verdict: decide over every host", decide_ms, 1, "ms");
  std::vector<double> decide_per_s;
  for (double d : decide_ms) decide_per_s.push_back(d * per_sec);
  row("   per second of loop at 2 ticks/s (ms/s)", decide_per_s, 1, "ms");
  row("4. busy share of each interval (%)", busy_share, 1, "%");
  std::printf("\n3. memory per host (%d metrics): %.0f B of heap in use (glibc mallinfo2, chunk headers included), "
              "%.0f B of RSS growth; sizeof(CountTest) %zu B\n",
              opt.metrics, static_cast<double>(heap_hosts) / n, static_cast<double>(rss_hosts) / n, sizeof(CountTest));
  std::printf("4. whole run: judging took %.2f s of %.0f s simulated (%.2f%% of the loop); wall %.2f s, thread CPU "
              "%.2f s (bench loop included)\n",
              judged_ms / 1000, double(opt.intervals) * opt.interval_s,
              100 * judged_ms / (double(opt.intervals) * opt.interval_s * 1000), wall_s, cpu_s);
  return 0;
}

}  // namespace
}  // namespace tern

int main(int argc, char** argv) {
  tern::init_runtime();
  tern::Options opt;
  CLI::App app{"tern-bench-judge: the canary judge's cost on the coordinator's loop"};
  app.add_option("--hosts", opt.hosts, "hosts in the wave")->check(CLI::PositiveNumber);
  app.add_option("--metrics", opt.metrics, "metrics per host (ratio, ratio, latency, repeating)")
      ->check(CLI::PositiveNumber);
  app.add_option("--intervals", opt.intervals, "analysis intervals to simulate (360 = an hour)")
      ->check(CLI::PositiveNumber);
  app.add_option("--interval-s", opt.interval_s, "seconds per interval")->check(CLI::PositiveNumber);
  app.add_option("--ticks", opt.ticks, "verdicts per interval (the engine ticks every 500 ms)")
      ->check(CLI::PositiveNumber);
  app.add_option("--rate", opt.rate, "requests a second per host")->check(CLI::PositiveNumber);
  app.add_option("--weight", opt.weight, "green's share of requests, in %")->check(CLI::Range(1, 99));
  app.add_option("--worse-hosts", opt.worse_hosts, "hosts whose canary is --worse-ratio times worse");
  app.add_option("--worse-ratio", opt.worse_ratio, "how much worse those canaries are");
  app.add_option("--seed", opt.seed, "RNG seed");
  CLI11_PARSE(app, argc, argv);
  return tern::run(opt);
}
