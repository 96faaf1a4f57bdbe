#include "core/metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace tern {

Metrics::Value& Metrics::cell(const std::string& name, const std::string& type, const std::string& help,
                              const std::string& labels, double unit) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& fam = families_[name];
  if (fam.type.empty()) {
    fam.type = type;
    fam.help = help;
    fam.unit = unit;
  }
  auto& slot = fam.cells[labels];
  if (!slot) slot = std::make_unique<Value>(0);
  return *slot;
}

Metrics::Value& Metrics::counter(const std::string& name, const std::string& help, const std::string& labels,
                                 double unit) {
  return cell(name, "counter", help, labels, unit);
}

Metrics::Value& Metrics::gauge(const std::string& name, const std::string& help, const std::string& labels,
                               double unit) {
  return cell(name, "gauge", help, labels, unit);
}

Metrics::Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size()]) {
  for (size_t i = 0; i < bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Metrics::Histogram::observe(double seconds) {
  if (!(seconds >= 0)) seconds = 0;
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), seconds);
  if (it != bounds_.end()) buckets_[static_cast<size_t>(it - bounds_.begin())].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_micros_.fetch_add(static_cast<uint64_t>(seconds * 1e6 + 0.5), std::memory_order_relaxed);
}

const std::vector<double>& Metrics::slow_buckets() {
  static const std::vector<double> b{1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600};
  return b;
}

const std::vector<double>& Metrics::fast_buckets() {
  static const std::vector<double> b{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
  return b;
}

Metrics::Histogram& Metrics::histogram(const std::string& name, const std::string& help, const std::string& labels,
                                       const std::vector<double>& bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& fam = families_[name];
  if (fam.type.empty()) {
    fam.type = "histogram";
    fam.help = help;
  }
  auto& slot = fam.histograms[labels];
  if (!slot) slot = std::make_unique<Histogram>(bounds);
  return *slot;
}

namespace {

// A sample value: integers as integers, the rest as the shortest exact text.
std::string number(double v) {
  if (v == static_cast<double>(static_cast<int64_t>(v)) && std::abs(v) < 9e15) {
    return std::to_string(static_cast<int64_t>(v));
  }
  char buf[32];
  double back = 0;
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (absl::SimpleAtod(buf, &back) && back == v) break;
  }
  return buf;
}

std::string with(const std::string& labels, const std::string& more) {
  if (labels.empty()) return more;
  if (more.empty()) return labels;
  return absl::StrCat(labels, ",", more);
}

}  // namespace

std::string Metrics::render() const {
  for (const auto& collect : collectors_) collect();
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, fam] : families_) {
    absl::StrAppend(&out, "# HELP ", name, " ", fam.help, "\n# TYPE ", name, " ", fam.type, "\n");
    for (const auto& [labels, value] : fam.cells) {
      const int64_t raw = value->load(std::memory_order_relaxed);
      const std::string v = fam.unit == 1 ? std::to_string(raw) : number(static_cast<double>(raw) * fam.unit);
      if (labels.empty()) {
        absl::StrAppend(&out, name, " ", v, "\n");
      } else {
        absl::StrAppend(&out, name, "{", labels, "} ", v, "\n");
      }
    }
    for (const auto& [labels, h] : fam.histograms) {
      uint64_t cumulative = 0;
      for (size_t i = 0; i < h->bounds_.size(); ++i) {
        cumulative += h->buckets_[i].load(std::memory_order_relaxed);
        absl::StrAppend(&out, name, "_bucket{", with(labels, absl::StrCat("le=\"", number(h->bounds_[i]), "\"")), "} ",
                        cumulative, "\n");
      }
      const uint64_t count = h->count_.load(std::memory_order_relaxed);
      absl::StrAppend(&out, name, "_bucket{", with(labels, "le=\"+Inf\""), "} ", count, "\n");
      const std::string braces = labels.empty() ? "" : absl::StrCat("{", labels, "}");
      absl::StrAppend(&out, name, "_sum", braces, " ",
                      number(static_cast<double>(h->sum_micros_.load(std::memory_order_relaxed)) / 1e6), "\n");
      absl::StrAppend(&out, name, "_count", braces, " ", count, "\n");
    }
  }
  return out;
}

void add_process_metrics(Metrics& metrics, const std::string& daemon) {
  metrics.gauge("tern_build_info", "Always 1; its labels say which build of which daemon runs.",
                absl::StrCat("version=\"", TERN_VERSION, "\",daemon=\"", daemon, "\""))
      .store(1, std::memory_order_relaxed);
  auto& cpu = metrics.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "",
                              1e-6);
  auto& rss = metrics.gauge("process_resident_memory_bytes", "Resident memory size in bytes.");
  auto& vsz = metrics.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.");
  auto& fds = metrics.gauge("process_open_fds", "Number of open file descriptors.");
  auto& max_fds = metrics.gauge("process_max_fds", "Maximum number of open file descriptors.");
  auto& start = metrics.gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.");
  const int64_t ticks = ::sysconf(_SC_CLK_TCK);
  const int64_t page = ::sysconf(_SC_PAGESIZE);
  // Boot time, for the start time (stat field 22 counts ticks since boot).
  int64_t boot = 0;
  {
    std::ifstream in("/proc/stat");
    for (std::string key; in >> key;) {
      if (key == "btime") {
        in >> boot;
        break;
      }
    }
  }
  metrics.add_collector([&cpu, &rss, &vsz, &fds, &max_fds, &start, ticks, page, boot] {
    std::ifstream in("/proc/self/stat");
    std::string line;
    std::getline(in, line);
    const auto close = line.rfind(')');
    if (close != std::string::npos) {
      std::vector<std::string> f = absl::StrSplit(line.substr(close + 2), ' ', absl::SkipEmpty());
      // f[0] is field 3 (state): field n is f[n - 3].
      int64_t utime = 0, stime = 0, starttime = 0, vsize = 0, pages = 0;
      if (f.size() > 21 && absl::SimpleAtoi(f[11], &utime) && absl::SimpleAtoi(f[12], &stime) &&
          absl::SimpleAtoi(f[19], &starttime) && absl::SimpleAtoi(f[20], &vsize) && absl::SimpleAtoi(f[21], &pages)) {
        cpu.store((utime + stime) * 1'000'000 / ticks, std::memory_order_relaxed);
        start.store(boot + starttime / ticks, std::memory_order_relaxed);
        vsz.store(vsize, std::memory_order_relaxed);
        rss.store(pages * page, std::memory_order_relaxed);
      }
    }
    std::error_code ec;
    int64_t n = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec); !ec && it != std::filesystem::directory_iterator();
         it.increment(ec)) {
      ++n;
    }
    fds.store(n, std::memory_order_relaxed);
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) max_fds.store(static_cast<int64_t>(lim.rlim_cur), std::memory_order_relaxed);
  });
}

absl::StatusOr<std::pair<std::string, uint16_t>> split_host_port(const std::string& address) {
  std::string host;
  std::string port;
  if (!address.empty() && address.front() == '[') {
    auto close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("invalid address \"", address, "\": expected [ipv6]:port"));
    }
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    auto colon = address.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("invalid address \"", address, "\": expected host:port"));
    }
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  uint32_t p;
  if (!absl::SimpleAtoi(port, &p) || p > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("invalid address \"", address, "\": port must be 0-65535"));
  }
  return std::make_pair(host.empty() ? std::string("0.0.0.0") : host, static_cast<uint16_t>(p));
}

}  // namespace tern
